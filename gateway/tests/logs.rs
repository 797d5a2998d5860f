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
    let dir = std::env::temp_dir().join(format!("imgate-logs-{format}-{}", std::process::id()));
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
    let mut reader = BufReader::new(stdout).lines();
    for line in reader.by_ref() {
        let line = line.expect("line");
        let admin = line.contains("imgate admin: http://");
        lines.push(line);
        if admin {
            break;
        }
    }
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
