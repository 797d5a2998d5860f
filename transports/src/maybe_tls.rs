//! A plain or TLS byte stream over TCP: what WebSocket (WS, WSS) and the HTTP fallback
//! (HTTP, HTTPS) run on.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Plain TCP (WS, HTTP) or TLS (WSS, HTTPS). The TLS stream is boxed: inline it would make
/// every plain connection 1.2 KB larger.
pub(crate) enum MaybeTls {
    /// WS, HTTP.
    Plain(TcpStream),
    /// WSS, HTTPS.
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// Calls `$method` on whichever stream `$io` holds.
macro_rules! delegate {
    ($io:expr, $method:ident($($arg:expr),*)) => {
        match $io.get_mut() {
            MaybeTls::Plain(stream) => Pin::new(stream).$method($($arg),*),
            #[cfg(feature = "tls")]
            MaybeTls::Tls(stream) => Pin::new(&mut **stream).$method($($arg),*),
        }
    };
}

impl AsyncRead for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            #[cfg(feature = "tls")]
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_shutdown(cx))
    }
}
