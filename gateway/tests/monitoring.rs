//! The shipped Grafana dashboard and Prometheus alert rules (`docs/monitoring/`) name only
//! metrics the gateway registers, with the suffix their type produces and labels their series
//! carry, and the dashboard has a panel for every registered metric: renaming or adding a
//! metric without updating them fails here.

#[path = "monitoring/promql.rs"]
mod promql;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use imgate::backend::{OfflineQueueMetrics, WebhookMetrics};
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

/// A registered metric family: its type, and the labels and values its series carry.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeMap<String, BTreeSet<String>>,
}

type Registered = BTreeMap<String, Family>;

/// Families from an exposition: `# TYPE` lines, then each sample's labels.
fn families(text: &str, into: &mut Registered) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                into.entry(name.to_owned()).or_default().kind = kind.to_owned();
            }
        } else if !line.starts_with('#') {
            for selector in promql::selectors(line.split(' ').next().unwrap_or_default()) {
                let family = base_name(&selector.metric, into);
                if let Some(family) = into.get_mut(&family) {
                    for (label, _, value) in selector.matchers {
                        family.labels.entry(label).or_default().insert(value);
                    }
                }
            }
        }
    }
}

/// The family a sample name belongs to (strips the type suffix if that family exists).
fn base_name(sample: &str, registered: &Registered) -> String {
    for suffix in ["_total", "_bucket", "_sum", "_count", "_created"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && registered.contains_key(base)
        {
            return base.to_owned();
        }
    }
    sample.to_owned()
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}

/// Every family the gateway and the push service register, each with at least one series
/// (empty families are not exposed, so each is touched once).
async fn registered() -> Registered {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let push_service = PushServiceMetrics::new(&mut registry);
    let webhook = WebhookMetrics::new(&mut registry);
    webhook.notice_count("undelivered", "dropped");
    let offline = OfflineQueueMetrics::new(&mut registry);
    let _ = offline.get("queued");
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
    metrics
        .cluster_requests
        .get_or_create(&imgate::metrics::ClusterRequestLabel {
            verb: "deliver",
            outcome: "ok",
        })
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
    push.resent_after_restart.inc();
    families(&encode(&push_registry), &mut found);
    found
}

/// The family a series name belongs to, checked against its type's suffixes.
fn family_of<'a>(
    series: &str,
    registered: &'a Registered,
) -> Result<(&'a str, &'a Family), String> {
    let candidates: [(&str, &[&str]); 4] = [
        ("_total", &["counter"]),
        ("_bucket", &["histogram"]),
        ("_sum", &["histogram"]),
        ("_count", &["histogram"]),
    ];
    for (suffix, kinds) in candidates {
        if let Some(base) = series.strip_suffix(suffix)
            && let Some((name, family)) = registered.get_key_value(base)
        {
            return if kinds.contains(&family.kind.as_str()) {
                Ok((name, family))
            } else {
                Err(format!(
                    "{series}: {base} is a {}, not {kinds:?}",
                    family.kind
                ))
            };
        }
    }
    match registered.get_key_value(series) {
        Some((name, family)) if family.kind == "gauge" => Ok((name, family)),
        Some((_, family)) => Err(format!("{series}: a {} needs its suffix", family.kind)),
        None => Err(format!("{series}: no such metric")),
    }
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(DASHBOARD).expect("dashboard JSON")
}

/// Every string under `key` anywhere in `value`.
fn strings_under(value: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(text) if k == key => out.push(text.clone()),
                    _ => strings_under(v, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, out)),
        _ => {}
    }
}

fn dashboard_exprs() -> Vec<String> {
    let mut exprs = Vec::new();
    strings_under(&dashboard(), "expr", &mut exprs);
    exprs
}

/// The dashboard's variable queries, `label_values(selector, label)`.
fn dashboard_label_values() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    strings_under(&dashboard()["templating"], "query", &mut queries);
    strings_under(&dashboard()["templating"], "definition", &mut queries);
    queries
        .iter()
        .map(|q| {
            let args = q
                .trim()
                .strip_prefix("label_values(")
                .and_then(|rest| rest.strip_suffix(')'))
                .unwrap_or_else(|| panic!("unsupported variable query {q}"));
            let (selector, label) = args
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            (selector.trim().to_owned(), label.trim().to_owned())
        })
        .collect()
}

fn alert_exprs() -> Vec<String> {
    ALERTS
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("expr:"))
        .map(|expr| expr.trim().to_owned())
        .collect()
}

/// Labels every series has once Prometheus scrapes it.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// Labels whose values are a closed set the gateway exports in full: a value not among them
/// is a typo.
const CLOSED_LABELS: &[(&str, &str)] = &[("imgate_transport_events", "event")];

/// Checks one selector; records its family as shown if `shown` is given.
fn check_selector(
    selector: &promql::Selector,
    registered: &Registered,
    shown: Option<&mut BTreeSet<String>>,
) -> Result<(), String> {
    if BUILTIN.contains(&selector.metric.as_str()) {
        return Ok(());
    }
    let (name, family) = family_of(&selector.metric, registered)?;
    for (label, op, value) in &selector.matchers {
        let histogram_le = label == "le" && selector.metric.ends_with("_bucket");
        if !family.labels.contains_key(label)
            && !TARGET_LABELS.contains(&label.as_str())
            && !histogram_le
        {
            return Err(format!(
                "{}: no label {label:?} (has {:?})",
                selector.metric,
                family.labels.keys()
            ));
        }
        if op == "="
            && CLOSED_LABELS.contains(&(name, label.as_str()))
            && !family.labels[label].contains(value)
        {
            return Err(format!(
                "{}: {label}={value:?} never occurs",
                selector.metric
            ));
        }
    }
    if let Some(shown) = shown {
        shown.insert(name.to_owned());
    }
    Ok(())
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_registered_metrics() {
    let registered = registered().await;
    assert!(registered.len() >= 20, "{registered:?}");
    let events = &registered["imgate_transport_events"].labels["event"];
    assert!(
        events.contains("handshake_resumed") && events.len() >= 15,
        "{events:?}"
    );
    let mut errors = Vec::new();
    let mut on_dashboard = BTreeSet::new();
    let dashboard = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(dashboard.len() >= 20 && alerts.len() >= 10);
    for (source, exprs) in [("dashboard", &dashboard), ("alerts.yml", &alerts)] {
        for expr in exprs {
            let selectors = promql::selectors(expr);
            if selectors.is_empty() {
                errors.push(format!("{source}: no metric in {expr}"));
            }
            for selector in &selectors {
                let shown = (source == "dashboard").then_some(&mut on_dashboard);
                if let Err(e) = check_selector(selector, &registered, shown) {
                    errors.push(format!("{source}: {e} in {expr}"));
                }
            }
        }
    }
    for (selector, label) in dashboard_label_values() {
        for found in promql::selectors(&selector) {
            match check_selector(&found, &registered, None) {
                Ok(())
                    if registered.get(&found.metric).is_some_and(|f| {
                        f.labels.contains_key(&label) || TARGET_LABELS.contains(&label.as_str())
                    }) => {}
                Ok(()) => errors.push(format!("variable: {} has no label {label}", found.metric)),
                Err(e) => errors.push(format!("variable: {e}")),
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
/// `.ci/run` fetches promtool and sets `IMGATE_REQUIRE_PROMTOOL`; elsewhere the check is
/// skipped when promtool is missing.
#[test]
fn promql_parses() {
    let alerts =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/monitoring/alerts.yml");
    let Some(output) = promtool_check(&alerts) else {
        assert!(
            std::env::var_os("IMGATE_REQUIRE_PROMTOOL").is_none(),
            "promtool is required: .ci/run takes it from Debian's `prometheus` package"
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
