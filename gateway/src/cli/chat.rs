//! `imgate chat`: a terminal chat client on the SDK, for trying a gateway by hand.
//!
//! Lines typed: `@user text` (direct), `#room text` (room), `/join room`, `/leave room`,
//! `/to @user` or `/to #room` (where plain lines go), `/logout`, `/quit`. Printed: incoming
//! messages, each request's receipt, connection events. Every line printed is one event, so
//! scripts (and the integration test) can read it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use imgate::config::Config;
use imgate_client::{
    Client, ClientConfig, ClientError, Endpoint, Event, Receipt, RootCertStore, Target,
    TransportKind,
};
use tokio::io::AsyncBufReadExt as _;

/// What `imgate chat` was asked for.
#[derive(Debug, clap::Args)]
pub(crate) struct ChatArgs {
    /// Log in as this user (a token is minted from the config's app, or taken from its
    /// static tokens).
    #[arg(long)]
    user: String,
    /// TOML configuration file of the gateway (default: the embedded one `imgate serve` uses).
    #[arg(long)]
    config: Option<PathBuf>,
    /// App id.
    #[arg(long, default_value = "default")]
    app: String,
    /// Transport: tcp, tls, ws, wss, quic, http or https.
    #[arg(long, default_value = "tcp")]
    transport: TransportKind,
    /// Address to connect to (default: the config's listener for the transport).
    #[arg(long)]
    connect: Option<SocketAddr>,
    /// Device id (one session per device).
    #[arg(long, default_value = "terminal")]
    device: String,
    /// Trust this PEM certificate or CA for tls, wss, quic and https (default: the development
    /// certificate `imgate serve` writes).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Use this token instead of minting one.
    #[arg(long)]
    token: Option<String>,
}

/// Runs the chat until stdin closes, `/quit` or `/logout`; the error is for the user.
pub(crate) async fn run(args: ChatArgs) -> Result<(), String> {
    let config = match &args.config {
        Some(path) => Config::load(path),
        None => Config::parse(imgate::config::DEFAULT_CONFIG),
    }
    .map_err(|e| format!("configuration: {e}"))?;
    let token = match args.token.clone() {
        Some(token) => token,
        None => config
            .dev_token(&args.app, &args.user, Duration::from_secs(86_400))
            .map_err(|e| e.to_string())?,
    };
    let listener = config.listeners.iter().find(|l| l.kind == args.transport);
    let addr = match (args.connect, listener) {
        (Some(addr), _) => addr,
        (None, Some(listener)) => listener.bind,
        (None, None) => {
            return Err(format!(
                "the config has no {} listener: pass --connect ADDR",
                args.transport
            ));
        }
    };
    let endpoint = Endpoint::new(args.transport, addr);
    let mut client_config = ClientConfig::new(
        endpoint,
        RootCertStore::empty(),
        token,
        &args.app,
        &args.device,
    );
    if let Some(path) = listener.and_then(|l| l.kind.is_websocket().then(|| l.ws.path.clone())) {
        client_config.ws_path = path;
    }
    if let Some(path) = listener.and_then(|l| l.kind.is_http().then(|| l.http.path.clone())) {
        client_config.http_path = path;
    }
    if args.transport.uses_tls() || args.transport == TransportKind::Quic {
        client_config = match &args.ca {
            Some(ca) => client_config.trust_pem_file(ca),
            None => client_config.trust_dev_certificate(),
        }
        .map_err(|e| e.to_string())?;
    }
    let (client, mut incoming) = Client::connect(client_config)
        .await
        .map_err(|e| e.to_string())?;
    let mut events = client.events();
    say(format_args!(
        "connected to {} as {} (app {}); type @user text, #room text, /join room, /help",
        Endpoint::new(args.transport, addr),
        args.user,
        args.app
    ));
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut target: Option<Target> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => match command(&line, &mut target) {
                    Some(Line::Request(label, request)) => {
                        let pending = request.send(&client);
                        tokio::spawn(async move { receipt(&label, pending.await) });
                    }
                    Some(Line::Logout) => {
                        return match client.logout().await {
                            Ok(()) => { say(format_args!("logged out")); Ok(()) }
                            Err(e) => Err(format!("logout: {e}")),
                        };
                    }
                    Some(Line::Quit) => break,
                    Some(Line::Say(text)) => say(format_args!("{text}")),
                    None => {}
                },
                Ok(None) | Err(_) => break,
            },
            message = incoming.recv() => match message {
                Some(m) => {
                    let text = String::from_utf8_lossy(&m.payload);
                    match (m.room.is_empty(), m.from.is_empty()) {
                        (true, true) => say(format_args!("(backend): {text}")),
                        (true, false) => say(format_args!("{}: {text}", m.from)),
                        (false, _) => say(format_args!("[#{}] {}: {text}", m.room, m.from)),
                    }
                }
                None => break,
            },
            event = events.recv() => match event {
                Ok(Event::Disconnected { reason }) => say(format_args!("disconnected: {reason}")),
                Ok(Event::Connected { resumed, .. }) => say(format_args!(
                    "reconnected ({})", if resumed { "resumed" } else { "fresh session" })),
                Ok(Event::Stopped { reason }) => return Err(format!("stopped: {reason}")),
                _ => {}
            },
        }
    }
    client.close().await;
    Ok(())
}

/// One typed line, understood.
enum Line {
    Request(String, Request),
    Logout,
    Quit,
    Say(String),
}

enum Request {
    Send(Target, String),
    Join(String),
    Leave(String),
}

impl Request {
    fn send(
        self,
        client: &Client,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<Receipt, ClientError>> + Send>> {
        match self {
            Self::Send(to, text) => Box::pin(client.send(to, text)),
            Self::Join(room) => Box::pin(client.join_room(room)),
            Self::Leave(room) => Box::pin(client.leave_room(room)),
        }
    }
}

const HELP: &str = "@user text: to a user · #room text: to a room · /join room · /leave room · \
                    /to @user|#room: where plain lines go · /logout · /quit";

fn command(line: &str, target: &mut Option<Target>) -> Option<Line> {
    let line = line.trim();
    let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let addressed = |head: &str| match head.split_at_checked(1) {
        Some(("@", user)) if !user.is_empty() => Some(Target::user(user)),
        Some(("#", room)) if !room.is_empty() => Some(Target::room(room)),
        _ => None,
    };
    Some(match head {
        "" => return None,
        "/help" => Line::Say(HELP.to_owned()),
        "/quit" => Line::Quit,
        "/logout" => Line::Logout,
        "/join" | "/leave" if rest.is_empty() => Line::Say(format!("usage: {head} room")),
        "/join" => {
            let room = rest.trim_start_matches('#').to_owned();
            *target = Some(Target::room(room.as_str()));
            Line::Request(format!("join #{room}"), Request::Join(room))
        }
        "/leave" => {
            let room = rest.trim_start_matches('#').to_owned();
            Line::Request(format!("leave #{room}"), Request::Leave(room))
        }
        "/to" => match addressed(rest) {
            Some(to) => {
                let text = format!("plain lines now go to {rest}");
                *target = Some(to);
                Line::Say(text)
            }
            None => Line::Say("usage: /to @user or /to #room".to_owned()),
        },
        _ if head.starts_with('/') => Line::Say(format!("unknown command {head}; {HELP}")),
        _ => match (addressed(head), target.as_ref()) {
            (Some(to), _) => {
                Line::Request(format!("to {head}"), Request::Send(to, rest.to_owned()))
            }
            (None, Some(to)) => Line::Request(
                format!("to {}", describe(to)),
                Request::Send(to.clone(), line.to_owned()),
            ),
            (None, None) => Line::Say(format!("to whom? start with @user or #room; {HELP}")),
        },
    })
}

fn describe(target: &Target) -> String {
    match target {
        Target::User(user) => format!("@{user}"),
        Target::Room(room) => format!("#{room}"),
        Target::Backend => "the backend".to_owned(),
    }
}

fn receipt(label: &str, result: Result<Receipt, ClientError>) {
    match result {
        Ok(receipt) => say(format_args!(
            "receipt {label}: {} (message {})",
            receipt
                .status()
                .as_str_name()
                .trim_start_matches("RECEIPT_STATUS_"),
            receipt.message_id
        )),
        Err(e) => say(format_args!("receipt {label}: {e}")),
    }
}

/// One line on stdout, flushed (a pipe reader sees it at once); a closed stdout is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}
