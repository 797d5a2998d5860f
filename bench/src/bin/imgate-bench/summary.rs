//! `imgate-bench summary FILE...`: the median of every figure over repeated runs.
//!
//! Runs are grouped by scenario and parameters (a 5,000-connection idle run is not averaged
//! with a 15,000 one), rows by target. Each table cell lists the value of every run that
//! reported the figure (in file order; a run without it, e.g. a failed one, is left out) and
//! the median in bold; with an even number of runs the median is the mean of the middle
//! two. The push bench's JSON (an array of per-provider results) is accepted as scenario
//! `push`. A PNG of the medians is written per group next to the Markdown.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::Value;

use crate::report::{Row, fmt, plot};

#[derive(Debug, Args)]
pub(crate) struct SummaryArgs {
    /// Result files (`<scenario>-<unix time>.json`, `push-<unix time>.json`).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write the Markdown here (and `<stem>-<scenario>-<n>.png` plots beside it) instead of
    /// printing it.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// A row's figures: name → one value per run that reported it, in first-seen order.
type Figures = Vec<(String, Vec<f64>)>;

/// The runs of one scenario with one set of parameters.
#[derive(Debug, Default, PartialEq)]
struct Group {
    scenario: String,
    params: String,
    files: Vec<String>,
    loads: Vec<String>,
    /// One entry per target, in first-seen order.
    rows: Vec<(String, Figures)>,
}

impl Group {
    fn add_row(&mut self, label: &str, row: &serde_json::Map<String, Value>) {
        let index = match self.rows.iter().position(|(l, _)| l == label) {
            Some(i) => i,
            None => {
                self.rows.push((label.to_owned(), Vec::new()));
                self.rows.len() - 1
            }
        };
        let figures = &mut self.rows[index].1;
        for (name, value) in row {
            let Some(value) = value.as_f64() else {
                continue;
            };
            match figures.iter_mut().find(|(n, _)| n == name) {
                Some((_, values)) => values.push(value),
                None => figures.push((name.clone(), vec![value])),
            }
        }
    }

    /// Every figure name over all rows, in first-seen order.
    fn figure_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for (_, figures) in &self.rows {
            for (name, _) in figures {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        names
    }
}

/// The middle value (mean of the middle two for an even count); `None` when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Adds one result file's runs to the groups.
fn add_file(groups: &mut Vec<Group>, name: &str, json: &Value) -> Result<(), String> {
    let (scenario, params, load, rows, label_key) = match json {
        Value::Object(o) => (
            o.get("scenario").and_then(Value::as_str).unwrap_or(""),
            o.get("params").map_or_else(String::new, Value::to_string),
            o.get("host")
                .and_then(|h| h.get("loadavg"))
                .and_then(Value::as_str)
                .unwrap_or(""),
            o.get("rows").and_then(Value::as_array),
            "target",
        ),
        Value::Array(_) => ("push", String::new(), "", json.as_array(), "provider"),
        _ => ("", String::new(), "", None, ""),
    };
    let (false, Some(rows)) = (scenario.is_empty(), rows) else {
        return Err(format!("{name}: not an imgate-bench result"));
    };
    let group = match groups
        .iter()
        .position(|g| g.scenario == scenario && g.params == params)
    {
        Some(i) => &mut groups[i],
        None => {
            groups.push(Group {
                scenario: scenario.to_owned(),
                params,
                ..Group::default()
            });
            groups.last_mut().ok_or("empty groups")?
        }
    };
    group.files.push(name.to_owned());
    group.loads.push(
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    );
    for row in rows {
        if let (Some(label), Value::Object(o)) = (row.get(label_key).and_then(Value::as_str), row) {
            group.add_row(label, o);
        }
    }
    Ok(())
}

/// One Markdown section per group: rows are figures, columns are targets.
fn markdown(groups: &[Group]) -> String {
    let mut out = String::new();
    for g in groups {
        let runs = g.files.len();
        let _ = writeln!(out, "### {} — {runs} run(s)\n", g.scenario);
        if !g.params.is_empty() {
            let _ = writeln!(out, "Parameters: `{}`  ", g.params);
        }
        let _ = write!(out, "Files: {}", g.files.join(", "));
        if g.loads.iter().any(|l| !l.is_empty()) {
            let _ = write!(
                out,
                " (load average at the end of each: {})",
                g.loads.join("; ")
            );
        }
        out.push_str("\n\n");
        let _ = write!(out, "| figure |");
        for (label, _) in &g.rows {
            let _ = write!(out, " {label} |");
        }
        let _ = write!(out, "\n|---|");
        for _ in &g.rows {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for name in g.figure_names() {
            let _ = write!(out, "| {name} |");
            for (_, figures) in &g.rows {
                let cell = figures
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or_else(String::new, |(_, values)| cell(values));
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn cell(values: &[f64]) -> String {
    let runs: Vec<String> = values.iter().map(|v| fmt(*v)).collect();
    match median(values) {
        Some(m) if values.len() > 1 => format!("{} → **{}**", runs.join("; "), fmt(m)),
        Some(m) => format!("**{}**", fmt(m)),
        None => "-".to_owned(),
    }
}

/// The medians of a group as plot rows.
fn median_rows(group: &Group) -> Vec<Row> {
    group
        .rows
        .iter()
        .map(|(label, figures)| {
            let mut row = Row::new(label.clone());
            for (name, values) in figures {
                if let Some(m) = median(values) {
                    row.fig(name.clone(), m);
                }
            }
            row
        })
        .collect()
}

/// Reads the files, prints or writes the Markdown, plots the medians.
pub(crate) fn run(args: &SummaryArgs) -> Result<(), String> {
    let mut groups = Vec::new();
    for path in &args.files {
        // One broken file (a run that died mid-write, an empty push result) must not cost the
        // summary of all the others: skip it, loudly.
        let name = path
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        let added = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()))
            .and_then(|json| add_file(&mut groups, &name, &json));
        if let Err(e) = added {
            eprintln!("summary: skipping {}: {e}", path.display());
        }
    }
    if groups.is_empty() {
        return Err("no readable result file".into());
    }
    let text = markdown(&groups);
    let Some(md_path) = &args.markdown else {
        print!("{text}");
        return Ok(());
    };
    std::fs::write(md_path, &text).map_err(|e| format!("{}: {e}", md_path.display()))?;
    println!("-> {}", md_path.display());
    for (i, group) in groups.iter().enumerate() {
        let png = plot_path(md_path, &group.scenario, i);
        let title = format!(
            "imgate-bench: {}, median of {} run(s)",
            group.scenario,
            group.files.len()
        );
        plot(&png, &group.scenario, &title, &median_rows(group))?;
        println!("-> {}", png.display());
    }
    Ok(())
}

fn plot_path(markdown: &Path, scenario: &str, index: usize) -> PathBuf {
    let stem = markdown
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    markdown.with_file_name(format!("{stem}-{scenario}-{index}.png"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[9.0, 1.0, 5.0]), Some(5.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 10.0]), Some(3.0));
        assert_eq!(median(&[f64::NAN, 2.0]), Some(2.0));
    }

    #[test]
    fn runs_group_by_scenario_and_parameters_and_rows_by_target() -> Result<(), String> {
        let run = |msgs: f64, lost: u64, n: u64| {
            json!({"scenario": "routed", "params": {"messages": n},
                   "host": {"loadavg": "0.50 0.40 0.30 1/80 123"},
                   "rows": [{"target": "imgate", "delivered_msgs_per_s": msgs, "lost": lost,
                             "error": "text is skipped"},
                            {"target": "nats", "delivered_msgs_per_s": msgs * 3.0}]})
        };
        let mut groups = Vec::new();
        add_file(&mut groups, "routed-1", &run(100.0, 0, 1000))?;
        add_file(&mut groups, "routed-2", &run(300.0, 0, 1000))?;
        add_file(&mut groups, "routed-3", &run(999.0, 1, 50))?;
        assert_eq!(groups.len(), 2, "different parameters are not mixed");
        let md = markdown(&groups[..1]);
        assert!(md.contains("routed-1, routed-2"), "{md}");
        assert!(md.contains("0.50 0.40 0.30; 0.50 0.40 0.30"), "{md}");
        assert!(
            md.contains("| delivered_msgs_per_s | 100; 300 → **200** | 300; 900 → **600** |"),
            "{md}"
        );
        assert!(md.contains("| lost | 0; 0 → **0** |  |"), "{md}");
        assert!(!md.contains("text is skipped"));
        let rows = median_rows(&groups[1]);
        assert_eq!(rows[0].get("lost"), Some(1.0));
        Ok(())
    }

    #[test]
    fn push_results_are_rows_per_provider_and_other_json_is_refused() -> Result<(), String> {
        let push = json!([{"provider": "apns", "pushes_per_sec": 10.0, "p99_us": 5},
                          {"provider": "fcm", "pushes_per_sec": 20.0, "p99_us": 7}]);
        let mut groups = Vec::new();
        add_file(&mut groups, "push-1", &push)?;
        add_file(&mut groups, "push-2", &push)?;
        assert_eq!(groups[0].scenario, "push");
        assert_eq!(groups[0].rows.len(), 2);
        assert!(markdown(&groups).contains("| p99_us | 5; 5 → **5** | 7; 7 → **7** |"));
        assert!(add_file(&mut groups, "x", &json!({"hello": 1})).is_err());
        assert!(add_file(&mut groups, "y", &json!(3)).is_err());
        Ok(())
    }
}
