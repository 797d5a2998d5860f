//! Generates the gRPC backend's types and client from `proto/backend.proto` with protox, so
//! building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    git_commit();
    #[cfg(feature = "grpc")]
    grpc()?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn grpc() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["backend.proto"], ["proto"])?;
    tonic_prost_build::configure()
        // The rpc is named `Connect`: no transport `connect` constructor to clash with it.
        .build_transport(false)
        // Payload fields become `bytes::Bytes`: handed to deliveries without copying.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}

/// `IMGATE_GIT_COMMIT` for `imgate --version`: the environment's value if set (e.g. a Docker
/// build without `.git`), else `git rev-parse`, else `unknown` (a source tarball).
fn git_commit() {
    println!("cargo:rerun-if-env-changed=IMGATE_GIT_COMMIT");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .map(|text| text.trim().to_owned())
            .filter(|text| !text.is_empty())
    };
    let commit = std::env::var("IMGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Rebuild when HEAD moves (a worktree's .git is a file: ask git where HEAD is).
            for path in ["HEAD", "refs/heads"] {
                if let Some(path) = git(&["rev-parse", "--git-path", path]) {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|changes| !changes.is_empty());
            Some(if dirty {
                format!("{commit}-dirty")
            } else {
                commit
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=IMGATE_GIT_COMMIT={commit}");
}
