//! Logs fit their destination: JSON mode makes every stdout line JSON (startup lines and
//! the drain report included), text into a pipe carries no ANSI colours, and an unknown
//! format is refused.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const CONFIG: &str = r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
transport = "tcp"
bind = "127.0.0.1:0"

[[app]]
id = "default"
[app.auth]
kind = "jwt"
secret = "a-secret-of-at-least-thirty-two-bytes"
"#;

/// Runs `imgate serve` with `format` until it announced its admin address, drains it with
/// SIGTERM, and returns every stdout line.
fn serve_and_drain(format: &str) -> Vec<String> {
    serve_and_drain_after(format, |_| {})
}

/// [`serve_and_drain`], running `clients` against the TCP listener before the drain.
fn serve_and_drain_after(format: &str, clients: impl FnOnce(std::net::SocketAddr)) -> Vec<String> {
    // One directory per run: parallel tests must not share a session store.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("imgate-logs-{format}-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("imgate.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["--log-format", format, "serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn imgate");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let mut tcp = None;
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.expect("line");
        let admin = line.contains("imgate admin: http://");
        if let Some((_, addr)) = line.split_once("imgate listening: tcp on ") {
            let addr: String = addr
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            tcp = addr.parse().ok();
        }
        lines.push(line);
        if admin {
            break;
        }
    }
    clients(tcp.expect("a tcp listener"));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    lines.extend(reader.map(|l| l.expect("line")));
    assert!(child.wait().expect("wait").success());
    std::fs::remove_dir_all(dir).ok();
    lines
}

#[test]
fn json_mode_makes_every_line_json() {
    let lines = serve_and_drain("json");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_owned();
    assert!(
        parsed
            .iter()
            .any(|v| message(v).starts_with("imgate listening: tcp on 127.0.0.1:"))
    );
    assert!(
        parsed
            .iter()
            .any(|v| message(v).starts_with("imgate admin: http://"))
    );
    let drained = parsed
        .iter()
        .find(|v| message(v) == "drained")
        .expect("a drain report");
    // The report's fields, not a Debug string.
    assert_eq!(drained["fields"]["sessions"], 0);
    assert_eq!(drained["fields"]["clean"], true);
}

#[test]
fn text_into_a_pipe_has_no_colours() {
    let lines = serve_and_drain("text");
    assert!(lines.iter().any(|l| l.contains("drained")), "{lines:?}");
    assert!(
        lines.iter().all(|l| !l.contains('\u{1b}')),
        "ANSI escapes: {lines:?}"
    );
}

#[test]
fn an_unknown_format_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_imgate"))
        .args(["--log-format", "yaml", "check-config", "/nonexistent"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("yaml"));
}

/// What an operator sees at `info`: refused tokens (and new sessions), sampled (ten lines a
/// second, bursts of twenty) so that a flood of bad tokens cannot flood the log.
#[test]
fn refused_tokens_are_logged_at_info_sampled() {
    const ATTEMPTS: usize = 60;
    let lines = serve_and_drain_after("json", |addr| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let connector =
                imgate_transports::Connector::new(imgate_transports::ConnectorConfig::new(
                    imgate_transports::TransportKind::Tcp,
                    rustls::RootCertStore::empty(),
                ))
                .expect("connector");
            for attempt in 0..ATTEMPTS {
                let mut conn = connector.connect(addr).await.expect("connect");
                let hello = imgate_codec::Hello {
                    version: 1,
                    token: format!("not-a-token-{attempt}"),
                    app_id: "default".into(),
                    device_id: "phone".into(),
                    ..Default::default()
                };
                conn.send(&hello.into()).await.expect("hello");
                // The refusal, then the close: the attempt is over before the next one.
                while let Ok(Some(_)) = conn.recv().await {}
            }
        });
    });
    let refused = lines
        .iter()
        .filter(|l| l.contains("token refused") && l.contains("\"level\":\"INFO\""))
        .count();
    assert!(refused >= 1, "no refusal at info: {lines:?}");
    assert!(
        refused <= 25,
        "{refused} info lines for {ATTEMPTS} refusals: not sampled"
    );
}
