//! Running an npm package's scripts from `cargo test`: `npm ci` when its lock changed since
//! the last install, then a script, with this build's `imgate` binary in `IMGATE_BIN`.

use std::path::Path;
use std::process::Command;

/// Runs `program args` in `dir`; panics (naming what is missing) if it cannot start or fails.
pub(crate) fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("IMGATE_BIN", env!("CARGO_BIN_EXE_imgate"))
        .envs(env.iter().copied())
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}): these tests need Node.js >= 20 and npm on the \
                 PATH (or set IMGATE_SKIP_NODE=1 to skip them)"
            )
        });
    assert!(
        status.success(),
        "`{program} {}` in {} failed: {status}",
        args.join(" "),
        dir.display()
    );
}

/// `npm ci` in `dir`, which is exact and repeatable (package-lock.json) but deletes and
/// re-installs node_modules: only when the lock changed since the last install.
pub(crate) fn install(dir: &Path) {
    let installed = dir.join("node_modules/.package-lock.json");
    let stale = match (
        std::fs::metadata(dir.join("package-lock.json")).and_then(|m| m.modified()),
        std::fs::metadata(&installed).and_then(|m| m.modified()),
    ) {
        (Ok(lock), Ok(install)) => lock > install,
        _ => true,
    };
    if stale {
        run(dir, "npm", &["ci", "--no-audit", "--no-fund"], &[]);
    }
}
