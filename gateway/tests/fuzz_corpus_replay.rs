//! Replays every file under `fuzz/corpus/<target>/` of the gateway's fuzz targets (`session`,
//! `driver`, `handshake`, `jwt`) through their harness, so plain `cargo test` re-checks the corpus (and
//! any crash input added to it) without nightly or libFuzzer.
//!
//! The harness is `fuzz/src/gateway.rs` itself, compiled in here: the targets and this test
//! cannot drift apart. `write_seed_corpus` (ignored) writes the hand-made seeds:
//! `cargo test -p imgate --test fuzz_corpus_replay -- --ignored write_seed_corpus`.
#![allow(clippy::unwrap_used)] // reason: test helpers; a panic is a test failure

#[allow(unreachable_pub, dead_code, missing_docs)] // reason: `pub` for the fuzz targets
#[path = "../../fuzz/src/gateway.rs"]
mod harness;

#[allow(unreachable_pub, missing_docs)] // reason: `pub` for the fuzz target
#[path = "../../fuzz/src/driver.rs"]
mod driver_harness;

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use imgate_codec::{Frame, FrameEncoder, Hello, Ping, Resume};

const TARGETS: [&str; 4] = ["session", "driver", "handshake", "jwt"];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus")
}

fn run(target: &str, data: &[u8]) {
    match target {
        "session" => {
            // libFuzzer's `fuzz_target!(|input: T|)` builds T with `arbitrary_take_rest`.
            let input = arbitrary::Unstructured::new(data);
            if let Ok(input) =
                <harness::SessionInput as arbitrary::Arbitrary>::arbitrary_take_rest(input)
            {
                harness::session(input);
            }
        }
        "driver" => {
            let input = arbitrary::Unstructured::new(data);
            if let Ok(input) =
                <driver_harness::DriverInput as arbitrary::Arbitrary>::arbitrary_take_rest(input)
            {
                let _ = driver_harness::driver(input);
            }
        }
        "handshake" => harness::handshake(data),
        "jwt" => harness::jwt(data),
        other => panic!("fuzz/corpus/{other}: no such fuzz target"),
    }
}

#[test]
fn replay_fuzz_corpus() {
    for target in TARGETS {
        let dir = corpus_root().join(target);
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut count = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let data = fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(target, &data));
            assert!(result.is_ok(), "fuzz input {} fails", path.display());
            count += 1;
        }
        assert!(count > 0, "{} holds no seeds", dir.display());
    }
}

/// The `jwt` harness accepts a well-formed, signed token (so its checks of an accepted
/// token are reached) and refuses one for another app.
#[test]
fn jwt_harness_reaches_an_accepted_token() {
    let claims = valid_claims();
    let auth = imgate::auth::JwtAuthenticator::new({
        let mut config = imgate::auth::JwtConfig::hs256(harness::JWT_SECRET);
        config.audience = Some("imgate".into());
        config.issuer = Some("https://id.example".into());
        config
    })
    .unwrap();
    let token = signed_token(claims.as_bytes());
    let request = |app: &str| imgate::auth::AuthRequest {
        app: imgate::ids::AppId::new(app),
        device: imgate::ids::DeviceId::new("ios-1"),
        token: token.clone(),
        peer: None,
    };
    assert!(auth.verify(&request("chat"), harness::JWT_NOW).is_ok());
    assert!(auth.verify(&request("other"), harness::JWT_NOW).is_err());
    let mut data = vec![1];
    data.extend_from_slice(claims.as_bytes());
    harness::jwt(&data);
}

/// The `driver` harness through a scripted life: a session fed, acknowledged, left, resumed,
/// kicked; a silent connection; garbage after a login; a drain. Its oracles hold, and they
/// are reached (each scenario ends the way the script expects).
#[test]
fn driver_harness_runs_a_scripted_life() {
    use driver_harness::{DriverInput, DriverLimits, DriverOp as Op, HelloArg, SeqArg};
    let hello = |resume| HelloArg {
        resume,
        wrong_secret: false,
        bad: 0,
        features: 3,
        max_frame: 1,
    };
    let ops = vec![
        Op::Connect(hello(false)),
        Op::Deliver(100),
        Op::Deliver(2000),
        Op::Deliver(10),
        Op::Read,
        Op::Ack(SeqArg::Received(1)),
        Op::Step(3_000),
        Op::Close,
        Op::Deliver(5),
        Op::Step(2_000),
        Op::Connect(hello(true)),
        Op::Read,
        Op::Ping(SeqArg::Received(0)),
        Op::Deliver(7),
        Op::Kick,
        Op::Read,
        Op::Silent,
        Op::Step(11_000),
        Op::Connect(hello(false)),
        Op::Raw(vec![0, 0, 0, 3, 0, 0xff, 0xff]),
        Op::Read,
        Op::Connect(hello(false)),
        Op::Deliver(1),
        Op::Send(1, 10),
        Op::Read,
    ];
    let limits = DriverLimits {
        heartbeat_s: 59,
        ack_timeout_s: 1,
        push_grace_s: 0,
        resume_window_s: 119,
        max_unacked: 7,
        max_unacked_kb: 63,
        pipe_kb: 3,
    };
    let summary = driver_harness::driver(DriverInput { limits, ops });
    // Fresh logins: the first, after the handshake time-out, the two last; one resume.
    assert_eq!(summary.welcomes, (3, 1), "{summary:?}");
    // seq 1 and 2 (the 2,000-byte message is over the client's 513-byte limit), 3 replayed
    // on the resume, 4 before the kick, and the last session's first.
    assert_eq!(summary.delivers, 5, "{summary:?}");
    // The kick, the silent connection, the garbage, the drain.
    assert_eq!(summary.closes, ["GoAway", "Error", "Error", "GoAway"]);
    // Acked: 1 (Ack), 2 and 3 (the Ping's ack). Offline: the too-large one, 4 at the kick,
    // the last one at the drain.
    assert_eq!(summary.settled, (3, 3), "{summary:?}");
}

fn valid_claims() -> String {
    format!(
        r#"{{"exp":{},"nbf":{},"sub":"alice","app_id":"chat","iss":"https://id.example","aud":["imgate"],"device_id":"ios-1"}}"#,
        harness::JWT_NOW + 3600,
        harness::JWT_NOW - 60
    )
}

fn signed_token(claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = jsonwebtoken::EncodingKey::from_secret(harness::JWT_SECRET);
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{input}.{signature}")
}

/// Writes the hand-made seeds (the fuzzer's own finds are added with `cargo fuzz cmin`).
#[test]
#[ignore = "writes fuzz/corpus; run by hand after changing a harness's input format"]
fn write_seed_corpus() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus_root().join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    let hello = Hello {
        version: 1,
        token: "eyJhbGciOiJIUzI1NiJ9.e30.sig".into(),
        app_id: "chat".into(),
        device_id: "ios-1".into(),
        platform: 1,
        features: vec!["lz4".into()],
        max_frame: 4096,
        ..Default::default()
    };
    let resume = Hello {
        resume: Some(Resume {
            session_id: 7,
            resume_secret: vec![1; 16].into(),
            last_seq: 3,
        }),
        ..hello.clone()
    };
    let bad_version = Hello {
        version: 2,
        ..hello.clone()
    };
    let small_frame = Hello {
        max_frame: 100,
        ..hello.clone()
    };
    let frames: [(&str, Frame); 5] = [
        ("hello", hello.into()),
        ("resume", resume.into()),
        ("version", bad_version.into()),
        ("max-frame", small_frame.into()),
        ("ping", Ping::default().into()),
    ];
    for (name, frame) in frames {
        let message = FrameEncoder::default().encode_message(&frame).unwrap();
        write("handshake", name, &message);
    }
    let mut accepted = vec![1];
    accepted.extend_from_slice(valid_claims().as_bytes());
    write("jwt", "accepted", &accepted);
    let mut raw = vec![0];
    raw.extend_from_slice(signed_token(valid_claims().as_bytes()).as_bytes());
    write("jwt", "raw", &raw);
    write(
        "jwt",
        "header",
        b"\x02{\"alg\":\"none\"}\n{\"sub\":\"alice\"}",
    );
    write("jwt", "text", b"\x03eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0");
    // session: `Arbitrary` reads any bytes; varied seeds give it a start.
    for (i, seed) in [
        &[0x00; 64][..],
        &[0x07; 128][..],
        &(0..=255u8).collect::<Vec<_>>()[..],
        &(0..=255u8).rev().cycle().take(512).collect::<Vec<_>>()[..],
    ]
    .iter()
    .enumerate()
    {
        write("session", &i.to_string(), seed);
    }
}
