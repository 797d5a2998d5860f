//! `imgate chat` as two processes against `imgate serve`: log in with tokens minted from the
//! same config, join a room, send directly and to the room, see receipts, log out.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::process::{Server, spawn_with_output};

/// How long one expected line may take.
const STEP: Duration = Duration::from_secs(20);

/// One `imgate chat` process: its stdin, and its stdout lines as they come.
struct Chat {
    process: Server,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Chat {
    fn start(config: &std::path::Path, user: &str, transport: &str, addr: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_imgate"))
            .args([
                "chat",
                "--user",
                user,
                "--transport",
                transport,
                "--connect",
                addr,
            ])
            .arg("--config")
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn imgate chat");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            process: Server(child),
            stdin,
            lines,
        }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("type");
    }

    /// The next line containing `needle` (earlier lines are skipped).
    fn expect(&self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(STEP) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with {needle:?}: {e}"),
            }
        }
    }
}

#[test]
fn two_chat_processes_talk_directly_and_in_a_room() {
    let dir = std::env::temp_dir().join(format!("imgate-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("imgate.toml");
    std::fs::write(
        &config,
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
transport = "tcp"
bind = "127.0.0.1:0"

[[listener]]
transport = "ws"
bind = "127.0.0.1:0"
path = "/chat"

[[app]]
id = "default"
[app.auth]
kind = "jwt"
secret = "a-test-secret-for-the-chat-test-of-imgate"
"#,
    )
    .expect("write config");
    let (_server, listeners, _admin, _output) = spawn_with_output(&config);
    let addr = |kind: &str| {
        listeners
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, a)| a.to_string())
            .expect("listener")
    };
    // Alice over TCP, Bob over WebSocket on the config's path.
    let mut alice = Chat::start(&config, "alice", "tcp", &addr("tcp"));
    let mut bob = Chat::start(&config, "bob", "ws", &addr("ws"));
    alice.expect("connected to tcp://");
    bob.expect("connected to ws://");

    alice.type_line("@bob hello bob");
    assert!(alice.expect("receipt to @bob").contains(": DELIVERED ("));
    assert_eq!(bob.expect("alice:"), "alice: hello bob");

    bob.type_line("/join lobby");
    bob.expect("receipt join #lobby");
    alice.type_line("/join lobby");
    alice.expect("receipt join #lobby");
    // After /join, plain lines go to the room.
    alice.type_line("hi room");
    alice.expect("receipt to #lobby");
    assert_eq!(bob.expect("[#lobby]"), "[#lobby] alice: hi room");

    bob.type_line("@alice bye");
    assert_eq!(alice.expect("bob:"), "bob: bye");
    bob.type_line("/logout");
    bob.expect("logged out");
    let status = bob.process.0.wait().expect("wait");
    assert!(status.success(), "{status}");
    // Bob's session is gone: a message to him is stored offline, not delivered.
    alice.type_line("@bob are you there?");
    assert!(!alice.expect("receipt to @bob").contains("DELIVERED"));
    alice.type_line("/quit");
    assert!(alice.process.0.wait().expect("wait").success());
    std::fs::remove_dir_all(dir).ok();
}
