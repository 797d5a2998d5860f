//! Smoke mode cannot rot: every imgate scenario (idle over all five transports), tiny counts,
//! against the gateway library run as a child process (`imgate-bench serve-imgate`, so the
//! separately built `imgate` binary is not needed). Peers (mosquitto, nats-server) are added with `IMGATE_BENCH_SMOKE_TARGETS`
//! (e.g. `imgate,mosquitto-qos1,nats`) and skipped when not installed.

use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

#[test]
fn every_scenario_runs_in_smoke_mode_without_loss() {
    let out = std::env::temp_dir().join(format!("imgate-bench-smoke-{}", std::process::id()));
    let targets =
        std::env::var("IMGATE_BENCH_SMOKE_TARGETS").unwrap_or_else(|_| "imgate".to_owned());
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_imgate-bench"))
        .args(["--smoke", "--embedded", "--targets", &targets, "--out"])
        .arg(&out)
        .arg("all")
        .output()
        .expect("run imgate-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "imgate-bench --smoke all failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for scenario in ["idle", "routed", "latency", "fanout", "resume"] {
        assert!(
            stdout.contains(&format!("== {scenario} ==")),
            "no {scenario} table:\n{stdout}"
        );
    }
    // Smoke idle covers every imgate transport (TLS, WSS and QUIC with the bench's own
    // self-signed certificate); an error row would have failed the run above.
    for transport in ["tcp", "tls", "ws", "wss", "quic"] {
        assert!(
            stdout.contains(&format!("imgate-{transport}@")),
            "no idle row for imgate over {transport}:\n{stdout}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(&out)
        .expect("results dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".json")).count(),
        5,
        "{files:?}"
    );
    assert_eq!(
        files.iter().filter(|f| f.ends_with(".png")).count(),
        5,
        "{files:?}"
    );
    // The summary reads every result back: one section per scenario, the median plots beside.
    let jsons = files
        .iter()
        .filter(|f| f.ends_with(".json"))
        .map(|f| out.join(f));
    let summary_md = out.join("summary.md");
    let summary = Command::new(env!("CARGO_BIN_EXE_imgate-bench"))
        .arg("summary")
        .arg("--markdown")
        .arg(&summary_md)
        .args(jsons)
        .output()
        .expect("run imgate-bench summary");
    assert!(
        summary.status.success(),
        "{}",
        String::from_utf8_lossy(&summary.stderr)
    );
    let markdown = std::fs::read_to_string(&summary_md).expect("summary.md");
    for scenario in ["idle", "routed", "latency", "fanout", "resume"] {
        assert!(
            markdown.contains(&format!("### {scenario} — 1 run(s)")),
            "{markdown}"
        );
    }
    assert!(
        markdown.contains("| lost | **0** |"),
        "routed/latency/fanout/resume report their losses:\n{markdown}"
    );
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "smoke mode took {:?}",
        started.elapsed()
    );
}
