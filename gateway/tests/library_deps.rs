//! `imgate` with `default-features = false` is only a library: no command line, TOML, log
//! subscriber, terminal client or gRPC crates, and no push mock servers (`rsa`). Read from
//! `cargo tree`, so a dependency that slips back in fails here and in `.ci/run`.

use std::collections::BTreeSet;
use std::process::Command;

/// What only the binary (or a test) needs.
const BINARY_ONLY: &[&str] = &[
    "clap",
    "toml",
    "tracing-subscriber",
    "imgate-client",
    "tonic",
    "protox",
    "rsa",
];

/// The normal (non-dev, non-build) dependencies of `imgate` with `features`.
fn dependencies(features: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "imgate",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .args(features)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_library_alone_has_no_binary_only_dependencies() {
    let library = dependencies(&["--no-default-features"]);
    assert!(
        library.contains("imgate-push") && library.contains("tokio"),
        "cargo tree output not understood: {library:?}"
    );
    let dragged: Vec<_> = BINARY_ONLY
        .iter()
        .filter(|name| library.contains(**name))
        .collect();
    assert!(
        dragged.is_empty(),
        "`imgate` without default features depends on {dragged:?}"
    );
}

#[test]
fn the_binary_features_bring_them() {
    let binary = dependencies(&[]);
    for name in [
        "clap",
        "toml",
        "tracing-subscriber",
        "imgate-client",
        "tonic",
    ] {
        assert!(binary.contains(name), "the `cli` feature lost {name}");
    }
    let grpc = dependencies(&["--no-default-features", "--features", "grpc"]);
    assert!(grpc.contains("tonic") && !grpc.contains("clap"));
}
