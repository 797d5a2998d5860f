//! A TCP proxy that cuts connections on demand: both of its sockets are dropped at once,
//! so the gateway sees its side of the connection die (a server-side kill) while the
//! client sees the network fail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

type Pipes = Arc<Mutex<HashMap<u64, AbortHandle>>>;

pub struct ChaosProxy {
    addr: SocketAddr,
    pipes: Pipes,
    accept: JoinHandle<()>,
}

impl ChaosProxy {
    /// Listens on 127.0.0.1 and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let pipes: Pipes = Arc::default();
        let accept = tokio::spawn({
            let pipes = Arc::clone(&pipes);
            async move {
                let mut next_id = 0u64;
                while let Ok((client, _)) = listener.accept().await {
                    next_id += 1;
                    let id = next_id;
                    let registry = Arc::clone(&pipes);
                    let mut guard = pipes.lock().expect("pipes");
                    let task = tokio::spawn(async move {
                        pipe(client, upstream).await;
                        registry.lock().expect("pipes").remove(&id);
                    });
                    guard.insert(id, task.abort_handle());
                }
            }
        });
        Self {
            addr,
            pipes,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts one live connection chosen by `pick` (an index below the count); false if none.
    pub fn cut(&self, pick: impl FnOnce(usize) -> usize) -> bool {
        let mut pipes = self.pipes.lock().expect("pipes");
        pipes.retain(|_, handle| !handle.is_finished());
        if pipes.is_empty() {
            return false;
        }
        let mut ids: Vec<u64> = pipes.keys().copied().collect();
        ids.sort_unstable();
        let id = ids[pick(ids.len())];
        if let Some(handle) = pipes.remove(&id) {
            handle.abort();
        }
        true
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for (_, handle) in self.pipes.lock().expect("pipes").drain() {
            handle.abort();
        }
    }
}

async fn pipe(mut client: TcpStream, upstream: SocketAddr) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
