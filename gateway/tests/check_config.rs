//! `imgate check-config` refuses what `serve` would refuse, with exit 64 and the key named,
//! and touches nothing: no file or directory is created.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory of its own per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imgate-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn imgate(args: &[&str], config: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imgate"));
    command
        .args(args)
        .arg(config)
        .env("IMGATE_DEV_DIR", config.with_extension("dev"));
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run imgate")
}

/// Runs `check-config` on `text` and returns (exit code, stderr).
fn check(dir: &Path, text: &str) -> (i32, String) {
    let config = dir.join("imgate.toml");
    std::fs::write(&config, text).expect("write config");
    let out = imgate(&["check-config"], &config, &[]);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const APP: &str = r#"
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

fn refused(dir: &Path, text: &str, key: &str) {
    let (code, stderr) = check(dir, text);
    assert_eq!(code, 64, "exit 64 for {key}: {stderr}");
    assert!(stderr.contains(key), "names {key}: {stderr}");
}

fn write_pair(dir: &Path, name: &str) -> rcgen::CertifiedKey {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    std::fs::write(dir.join(format!("{name}.pem")), certified.cert.pem()).expect("write");
    std::fs::write(
        dir.join(format!("{name}.key")),
        certified.key_pair.serialize_pem(),
    )
    .expect("write");
    certified
}

#[test]
fn a_certificate_with_another_key_is_refused_by_check_config_and_serve() {
    let dir = scratch("mismatch");
    write_pair(&dir, "a");
    write_pair(&dir, "b");
    // Relative paths: relative to the config file, wherever imgate runs.
    let tls = "[tls]\ncert = \"a.pem\"\nkey = \"b.key\"\n[[listener]]\ntransport = \"tls\"\nbind = \"127.0.0.1:0\"\n";
    let text = format!("{tls}{APP}");
    refused(&dir, &text, "tls.cert");
    let out = imgate(&["serve", "--config"], &dir.join("imgate.toml"), &[]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = text.replace("b.key", "a.key");
    assert_eq!(
        check(&dir, &good).0,
        0,
        "the matching key, found relative to the file"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn what_serve_would_refuse_is_refused_with_the_key_named() {
    let dir = scratch("refused");
    refused(
        &dir,
        &APP.replace(
            "bind = \"127.0.0.1:0\"\n\n[[listener]]",
            "bind = \"0.0.0.0:7999\"\n\n[[listener]]",
        ),
        "admin.bind",
    );
    let two_on_one_port = "[[listener]]\ntransport = \"tcp\"\nbind = \"127.0.0.1:47123\"\n\
                           [[listener]]\ntransport = \"ws\"\nbind = \"0.0.0.0:47123\"\n\n[[app]]";
    let clash = APP.replacen("[[app]]", two_on_one_port, 1);
    refused(&dir, &clash, "listener[2].bind");
    // QUIC is UDP: it may share a TCP listener's port.
    let udp = clash.replace("transport = \"ws\"", "transport = \"quic\"");
    assert_eq!(check(&dir, &udp).0, 0, "{}", check(&dir, &udp).1);
    refused(
        &dir,
        &format!("[server]\nshards = 63\n{APP}"),
        "server.shards",
    );
    // Kind-specific keys: a webhook key on a gRPC backend, an unknown kind, a missing key.
    let grpc =
        "[app.backend]\nkind = \"grpc\"\nendpoint = \"http://127.0.0.1:9\"\nurl = \"http://x\"\n";
    refused(&dir, &format!("{APP}{grpc}"), "url");
    let unknown = "[app.backend]\nkind = \"carrier-pigeon\"\n";
    refused(&dir, &format!("{APP}{unknown}"), "carrier-pigeon");
    let missing = "[app.backend]\nkind = \"webhook\"\nsecret = \"0123456789abcdef0123\"\n";
    refused(&dir, &format!("{APP}{missing}"), "url");
    refused(
        &dir,
        &APP.replace("kind = \"jwt\"", "kind = \"jwt\"\nsecrte = \"x\""),
        "secrte",
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn secrets_come_from_the_environment_or_a_file() {
    let dir = scratch("secrets");
    let from_env = APP.replace(
        "secret = \"a-secret-of-at-least-thirty-two-bytes\"",
        "secret_env = \"IMGATE_TEST_AUTH_SECRET\"",
    );
    let config = dir.join("env.toml");
    std::fs::write(&config, &from_env).expect("write");
    let secret = (
        "IMGATE_TEST_AUTH_SECRET",
        "a-secret-of-at-least-thirty-two-bytes",
    );
    assert!(
        imgate(&["check-config"], &config, &[secret])
            .status
            .success()
    );
    let out = imgate(&["check-config"], &config, &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("secret_env"));
    // A token minted from the file's secret (trailing newline ignored).
    std::fs::write(
        dir.join("secret"),
        "a-secret-of-at-least-thirty-two-bytes\n",
    )
    .expect("write");
    let from_file = from_env.replace(
        "secret_env = \"IMGATE_TEST_AUTH_SECRET\"",
        "secret_file = \"secret\"",
    );
    assert_eq!(check(&dir, &from_file).0, 0);
    let both = from_file.replace("secret_file", "secret = \"x\"\nsecret_file");
    refused(&dir, &both, "secret_file");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn no_client_listener_is_a_warning() {
    let dir = scratch("warning");
    let text = APP.replace(
        "[[listener]]\ntransport = \"tcp\"\nbind = \"127.0.0.1:0\"\n",
        "",
    );
    let (code, stderr) = check(&dir, &text);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning: no [[listener]]"), "{stderr}");
    let (code, stderr) = check(&dir, APP);
    assert_eq!((code, stderr.contains("warning")), (0, false), "{stderr}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn check_config_creates_no_files() {
    let dir = scratch("no-files");
    let key = imgate_push::mock::ApnsTestKey::generate().expect("key");
    std::fs::write(dir.join("AuthKey.p8"), &key.key_pem).expect("write key");
    // Push with a data_dir that does not exist yet, and TLS on the development certificate.
    let text = format!(
        "{APP}\n[app.push]\ndata_dir = \"data\"\n[app.push.apns]\nkey = \"AuthKey.p8\"\n\
         key_id = \"ABC123DEFG\"\nteam_id = \"DEF123GHIJ\"\ntopic = \"com.example.chat\"\n"
    )
    .replace(
        "[[app]]",
        "[[listener]]\ntransport = \"tls\"\nbind = \"127.0.0.1:0\"\n\n[[app]]",
    );
    let config = dir.join("imgate.toml");
    std::fs::write(&config, &text).expect("write config");
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(&dir);
    let out = imgate(&["check-config"], &config, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(listing(&dir), before, "check-config created nothing");
    assert!(
        !config.with_extension("dev").exists(),
        "no development certificate written"
    );
    std::fs::remove_dir_all(dir).ok();
}
