//! What TLS session resumption saves per reconnect, per transport.
//!
//! ```text
//! cargo run --release -p imgate-bench --bin tls_resumption -- [tls|wss|quic] [N]
//! ```
//!
//! One process, one thread: a listener that answers each connection's first frame, and a
//! client that connects N times with a fresh connector (empty session cache: full handshakes),
//! then N times with one connector that keeps its tickets (resumed handshakes). Each
//! connection sends one frame, reads the answer (which also delivers the session ticket) and
//! closes; both loops create a connector per connection, so only the handshake differs. The
//! figure is this process's CPU (client and server together, from `/proc/self/stat`, 10 ms
//! ticks) and wall time per connection, printed as JSON. `resumed` counts the server's
//! resumed handshakes in the second loop (it should equal N).
#![forbid(unsafe_code)]

use tokio::time::Instant;

use imgate_codec::{Frame, Ping};
use imgate_transports::{
    Connector, ConnectorConfig, Identity, Listener, ListenerConfig, TransportKind,
};

/// utime + stime of this process, seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the ")" closing the command name: state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn connector(kind: TransportKind, identity: &Identity) -> Result<Connector, String> {
    let mut config = ConnectorConfig::new(kind, identity.root_store());
    config.quic_bind = ([127, 0, 0, 1], 0).into();
    Connector::new(config).map_err(|e| e.to_string())
}

/// One connection: connect, one frame each way, close.
async fn visit(connector: &Connector, addr: std::net::SocketAddr) -> Result<(), String> {
    let mut conn = connector.connect(addr).await.map_err(|e| e.to_string())?;
    conn.send(&Frame::from(Ping::default()))
        .await
        .map_err(|e| e.to_string())?;
    conn.recv().await.map_err(|e| e.to_string())?;
    Ok(())
}

async fn run(kind: TransportKind, n: usize) -> Result<String, String> {
    let identity = Identity::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
    let mut config =
        ListenerConfig::new(kind, ([127, 0, 0, 1], 0).into()).with_identity(identity.clone());
    config.max_connections = n * 4;
    let mut listener = Listener::bind(config).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr();
    let stats = listener.stats().clone();
    let server = tokio::spawn(async move {
        while let Some(mut conn) = listener.accept().await {
            tokio::spawn(async move {
                while let Ok(Some(frame)) = conn.recv().await {
                    if conn.send(&frame).await.is_err() {
                        break;
                    }
                }
            });
        }
    });

    let (cpu, wall) = (cpu_seconds(), Instant::now());
    for _ in 0..n {
        visit(&connector(kind, &identity)?, addr).await?;
    }
    let full = (
        (cpu_seconds() - cpu) / n as f64,
        wall.elapsed().as_secs_f64() / n as f64,
    );

    let keeper = connector(kind, &identity)?;
    visit(&keeper, addr).await?; // the first ticket
    let before = stats.snapshot().handshake_resumed;
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    for _ in 0..n {
        let _same_setup_cost = connector(kind, &identity)?;
        visit(&keeper, addr).await?;
    }
    let resumed = (
        (cpu_seconds() - cpu) / n as f64,
        wall.elapsed().as_secs_f64() / n as f64,
    );
    let resumed_count = stats.snapshot().handshake_resumed - before;
    server.abort();
    Ok(format!(
        "{{\"transport\":\"{}\",\"connections\":{n},\
         \"full_cpu_us\":{:.0},\"full_wall_us\":{:.0},\
         \"resumed_cpu_us\":{:.0},\"resumed_wall_us\":{:.0},\"resumed\":{resumed_count}}}",
        kind.as_str(),
        full.0 * 1e6,
        full.1 * 1e6,
        resumed.0 * 1e6,
        resumed.1 * 1e6,
    ))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args
        .next()
        .unwrap_or_else(|| "tls".into())
        .parse::<TransportKind>();
    let n = args.next().map_or(Ok(2000), |n| n.parse::<usize>());
    let (Ok(kind), Ok(n)) = (kind, n) else {
        eprintln!("usage: tls_resumption [tls|wss|quic] [connections]");
        std::process::exit(64);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(run(kind, n)));
    match result {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("tls_resumption: {e}");
            std::process::exit(1);
        }
    }
}
