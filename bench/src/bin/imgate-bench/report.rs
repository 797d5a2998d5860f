//! Output of a run: a table on the terminal, a JSON file and a PNG plot under the results dir.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

/// The font for the plots, embedded so no system font (fontconfig) is needed.
const FONT: &[u8] = include_bytes!("../../../assets/DejaVuSansMono.ttf");

/// One row: a target (and case), and named figures.
pub(crate) struct Row {
    pub label: String,
    pub figures: Vec<(Cow<'static, str>, f64)>,
    /// Anything else worth keeping in the JSON (errors, notes, raw values).
    pub extra: serde_json::Map<String, Value>,
}

impl Row {
    pub(crate) fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            figures: Vec::new(),
            extra: serde_json::Map::new(),
        }
    }

    pub(crate) fn fig(&mut self, name: impl Into<Cow<'static, str>>, value: f64) -> &mut Self {
        self.figures.push((name.into(), value));
        self
    }

    /// `server_cpu_s_per_million` and `client_cpu_s_per_million`: CPU seconds per million of
    /// `count` (messages or deliveries).
    pub(crate) fn cpu_per_million(
        &mut self,
        server_s: f64,
        client_s: f64,
        count: u64,
    ) -> &mut Self {
        let millions = count.max(1) as f64 / 1e6;
        self.fig("server_cpu_s_per_million", server_s / millions)
            .fig("client_cpu_s_per_million", client_s / millions)
    }

    pub(crate) fn note(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }
}

/// The figures a scenario's plot shows, one panel each (the JSON keeps every figure).
pub(crate) fn headline_figures(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "idle" => &[
            "server_bytes_per_conn",
            "connect_all_ms",
            "hb_cpu_ms_per_min_at_30s",
        ],
        "routed" => &[
            "delivered_msgs_per_s",
            "server_cpu_s_per_million",
            "client_cpu_s_per_million",
        ],
        "latency" => &["p50_us", "p99_us", "p999_us"],
        "fanout" => &[
            "deliveries_per_s",
            "pub_to_last_p50_ms",
            "pub_to_last_p99_ms",
            "server_cpu_s_per_million",
            "client_cpu_s_per_million",
        ],
        "resume" => &["all_resumed_ms", "all_delivered_ms"],
        "push" => &["pushes_per_sec", "p99_us"],
        _ => &[],
    }
}

/// A figure as the tables print it: 3 significant-ish digits, no exponent.
pub(crate) fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 1000.0 || (v.fract() == 0.0 && v.abs() < 1e15) {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Prints the table, writes `<dir>/<scenario>-<stamp>.json` and `.png`; returns their paths.
pub(crate) fn emit(
    dir: &Path,
    scenario: &str,
    params: Value,
    rows: &[Row],
) -> Result<(PathBuf, PathBuf), String> {
    // Columns: every figure name, in first-seen order.
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        for (name, _) in &row.figures {
            if !columns.contains(&name.as_ref()) {
                columns.push(name);
            }
        }
    }
    let label_width = rows.iter().map(|r| r.label.len()).max().unwrap_or(6).max(6);
    println!("\n== {scenario} ==  {params}");
    let mut header = format!("{:<label_width$}", "target");
    for c in &columns {
        header.push_str(&format!(" | {c:>w$}", w = c.len().max(10)));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for row in rows {
        let mut line = format!("{:<label_width$}", row.label);
        for c in &columns {
            let v = row.get(c).map_or_else(|| "-".to_owned(), fmt);
            line.push_str(&format!(" | {v:>w$}", w = c.len().max(10)));
        }
        println!("{line}");
        for (k, v) in &row.extra {
            if k == "error" {
                println!("    {k}: {v}");
            }
        }
    }

    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = dir.join(format!("{scenario}-{stamp}"));
    let json_path = base.with_extension("json");
    let png_path = base.with_extension("png");
    let json = serde_json::json!({
        "scenario": scenario,
        "unix_time": stamp,
        "host": host_info(),
        "params": params,
        "rows": rows.iter().map(|r| {
            let mut o = serde_json::Map::new();
            o.insert("target".into(), r.label.clone().into());
            for (k, v) in &r.figures {
                o.insert(k.to_string(), if v.is_finite() { (*v).into() } else { Value::Null });
            }
            for (k, v) in &r.extra {
                o.insert(k.clone(), v.clone());
            }
            Value::Object(o)
        }).collect::<Vec<_>>(),
    });
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("{}: {e}", json_path.display()))?;
    plot(
        &png_path,
        scenario,
        &format!("imgate-bench: {scenario}"),
        rows,
    )?;
    println!("-> {}\n-> {}", json_path.display(), png_path.display());
    Ok((json_path, png_path))
}

fn host_info() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    serde_json::json!({ "cpus": cpus, "loadavg": load.trim() })
}

/// One panel per headline figure of `scenario`, one bar per row, value printed on the bar.
pub(crate) fn plot(path: &Path, scenario: &str, title: &str, rows: &[Row]) -> Result<(), String> {
    static FONT_ONCE: std::sync::Once = std::sync::Once::new();
    FONT_ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
    let panels: Vec<&str> = headline_figures(scenario)
        .iter()
        .copied()
        .filter(|p| rows.iter().any(|r| r.get(p).is_some_and(f64::is_finite)))
        .collect();
    let height = 60 + 260 * panels.len().max(1) as u32;
    let width = 240 + 150 * rows.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width.max(700), height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title_area, body) = root.split_vertically(50);
    title_area
        .draw(&Text::new(title, (10, 12), ("sans-serif", 26).into_font()))
        .map_err(|e| e.to_string())?;
    let areas = body.split_evenly((panels.len().max(1), 1));
    let palette = [
        RGBColor(0x1f, 0x77, 0xb4),
        RGBColor(0xff, 0x7f, 0x0e),
        RGBColor(0x2c, 0xa0, 0x2c),
        RGBColor(0xd6, 0x27, 0x28),
        RGBColor(0x94, 0x67, 0xbd),
        RGBColor(0x8c, 0x56, 0x4b),
    ];
    for (panel, area) in panels.iter().zip(areas.iter()) {
        let values: Vec<f64> = rows
            .iter()
            .map(|r| r.get(panel).filter(|v| v.is_finite()).unwrap_or(0.0))
            .collect();
        let max = values.iter().copied().fold(0.0_f64, f64::max).max(1e-9) * 1.2;
        let labels: Vec<String> = rows.iter().map(|r| r.label.clone()).collect();
        let n = rows.len().max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(*panel, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(80)
            .build_cartesian_2d((0..n).into_segmented(), 0.0..max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| fmt(*y))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                let color = palette[i % palette.len()];
                let mut bar = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), *v),
                    ],
                    color.filled(),
                );
                bar.set_margin(0, 0, 12, 12);
                bar
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, v)| {
                Text::new(
                    fmt(*v),
                    (SegmentValue::CenterOf(i), *v + max * 0.02),
                    ("sans-serif", 13).into_font(),
                )
            }))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
