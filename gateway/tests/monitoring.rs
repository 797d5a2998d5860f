//! The shipped Grafana dashboard and Prometheus alert rules (`docs/monitoring/`) name only
//! metrics the gateway registers, with the suffix their type produces, and the dashboard has a
//! panel for every registered metric: renaming or adding a metric without updating them fails
//! here.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use imgate::ids::AppId;
use imgate::metrics::{DirectionLabel, Metrics, OutcomeLabel, TransportLabel};
use imgate::push_policy::PushServiceMetrics;
use imgate_push::metrics::{ProviderLabels, PushMetrics, RequestLabels};
use prometheus_client::registry::Registry;
use support::*;

const DASHBOARD: &str = include_str!("../../docs/monitoring/grafana-dashboard.json");
const ALERTS: &str = include_str!("../../docs/monitoring/alerts.yml");

/// Prometheus' own series the rules may use.
const BUILTIN: &[&str] = &["up"];

/// Metric family name → type, from the `# TYPE` lines of an exposition.
fn families(text: &str, into: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                into.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}

/// Every family the gateway and the push service register, each with at least one series
/// (empty families are not exposed, so each is touched once).
async fn registered() -> BTreeMap<String, String> {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let push_service = PushServiceMetrics::new(&mut registry);
    push_service.event_count(&AppId::new("chat"), "delivered");
    let transport = TransportLabel { transport: "tcp" };
    let outcome = OutcomeLabel { outcome: "ok" };
    metrics.connections.get_or_create(&transport).inc();
    for family in [
        &metrics.handshakes,
        &metrics.resumes,
        &metrics.deliveries,
        &metrics.closes,
        &metrics.limited,
    ] {
        family.get_or_create(&outcome).inc();
    }
    metrics
        .frames
        .get_or_create(&DirectionLabel { direction: "in" })
        .inc();
    // A running gateway: its listener's transport counters are exported too.
    let gw = start_with_metrics(metrics).await;
    let mut found = BTreeMap::new();
    families(&encode(&registry), &mut found);
    gw.shutdown().await;

    // The push crate's own metrics: the service above registers them, but its series are
    // private to it, so the same registration is touched in a registry of its own.
    let mut push_registry = Registry::default();
    let push = PushMetrics::new(&mut push_registry);
    let provider = ProviderLabels {
        provider: "apns".into(),
        app: "chat".into(),
    };
    push.requests
        .get_or_create(&RequestLabels {
            provider: "apns".into(),
            app: "chat".into(),
            status: "200".into(),
            reason: "Success".into(),
        })
        .inc();
    push.latency.get_or_create(&provider).observe(0.01);
    push.in_flight.get_or_create(&provider).inc();
    for family in [
        &push.retries,
        &push.pruned,
        &push.bad_device_token,
        &push.token_refreshes,
    ] {
        family.get_or_create(&provider).inc();
    }
    push.shed.inc();
    families(&encode(&push_registry), &mut found);
    found
}

/// The metric names in a PromQL expression: identifiers outside `{…}` label matchers and
/// quotes, in our namespaces (`imgate_`, `push_`) or Prometheus' own.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut word = String::new();
    let flush = |word: &mut String, names: &mut Vec<String>| {
        if word.starts_with("imgate_") || word.starts_with("push_") || BUILTIN.contains(&&**word) {
            names.push(std::mem::take(word));
        }
        word.clear();
    };
    for c in expr.chars() {
        match c {
            '"' => quoted = !quoted,
            '{' if !quoted => depth += 1,
            '}' if !quoted => depth = depth.saturating_sub(1),
            c if !quoted && depth == 0 && (c.is_ascii_alphanumeric() || c == '_' || c == ':') => {
                word.push(c);
                continue;
            }
            _ => {}
        }
        flush(&mut word, &mut names);
    }
    flush(&mut word, &mut names);
    names
}

/// The family a series name belongs to, checked against its type's suffixes.
fn family_of<'a>(
    series: &str,
    registered: &'a BTreeMap<String, String>,
) -> Result<&'a str, String> {
    let candidates: [(&str, &[&str]); 4] = [
        ("_total", &["counter"]),
        ("_bucket", &["histogram"]),
        ("_sum", &["histogram"]),
        ("_count", &["histogram"]),
    ];
    for (suffix, kinds) in candidates {
        if let Some(base) = series.strip_suffix(suffix) {
            if let Some((name, kind)) = registered.get_key_value(base) {
                return if kinds.contains(&kind.as_str()) {
                    Ok(name)
                } else {
                    Err(format!("{series}: {base} is a {kind}, not {kinds:?}"))
                };
            }
        }
    }
    match registered.get_key_value(series) {
        Some((name, kind)) if kind == "gauge" => Ok(name),
        Some((_, kind)) => Err(format!("{series}: a {kind} needs its suffix")),
        None => Err(format!("{series}: no such metric")),
    }
}

fn dashboard_exprs() -> Vec<String> {
    fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("dashboard JSON");
    let mut exprs = Vec::new();
    walk(&dashboard, &mut exprs);
    exprs
}

fn alert_exprs() -> Vec<String> {
    ALERTS
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_owned())
        .collect()
}

#[test]
fn promql_names_are_found_outside_matchers() {
    assert_eq!(
        metric_names(
            r#"sum by (le) (rate(imgate_x_bucket{event="push_y", a=~"imgate_z"}[5m])) / up"#
        ),
        ["imgate_x_bucket", "up"]
    );
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_registered_metrics() {
    let registered = registered().await;
    assert!(registered.len() >= 20, "{registered:?}");
    let mut errors = Vec::new();
    let mut on_dashboard = BTreeSet::new();
    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(dashboard.len() >= 20 && alerts.len() >= 10);
    for (source, exprs) in [("dashboard", &dashboard), ("alerts.yml", &alerts)] {
        for expr in exprs {
            let names = metric_names(expr);
            if names.is_empty() {
                errors.push(format!("{source}: no metric in {expr}"));
            }
            for name in names.iter().filter(|n| !BUILTIN.contains(&n.as_str())) {
                match family_of(name, &registered) {
                    Ok(family) if source == "dashboard" => {
                        on_dashboard.insert(family.to_owned());
                    }
                    Ok(_) => {}
                    Err(e) => errors.push(format!("{source}: {e} in {expr}")),
                }
            }
        }
    }
    for family in registered.keys() {
        if !on_dashboard.contains(family) {
            errors.push(format!("dashboard: no panel shows {family}"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Runs `promtool check rules` on `path`; `None` when promtool is not installed.
fn promtool_check(path: &std::path::Path) -> Option<std::process::Output> {
    match std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(path)
        .output()
    {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("promtool: {e}"),
    }
}

/// The PromQL itself parses: the rules as they are, the dashboard's queries as recording
/// rules (Grafana's `$__rate_interval` and `$instance` replaced by what they expand to).
/// `.ci/run` installs promtool and sets `IMGATE_REQUIRE_PROMTOOL`; elsewhere the check is
/// skipped when promtool is missing.
#[test]
fn promql_parses() {
    let alerts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring/alerts.yml");
    let Some(output) = promtool_check(&alerts) else {
        assert!(
            std::env::var_os("IMGATE_REQUIRE_PROMTOOL").is_none(),
            "promtool is required (Debian package `prometheus`)"
        );
        eprintln!("promtool not installed: PromQL syntax not checked");
        return;
    };
    assert!(output.status.success(), "alerts.yml: {output:?}");

    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*");
        let quoted = serde_json::to_string(&expr).expect("quote");
        rules.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {quoted}\n"
        ));
    }
    let path =
        std::env::temp_dir().join(format!("imgate-dashboard-rules-{}.yml", std::process::id()));
    std::fs::write(&path, rules).expect("write");
    let output = promtool_check(&path).expect("promtool");
    std::fs::remove_file(&path).ok();
    assert!(output.status.success(), "dashboard queries: {output:?}");
}
