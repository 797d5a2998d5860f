//! The long response: the server's frames as they are written, until the connection ends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;

use super::Channel;
use super::server::Table;

/// The body of an opening response. Dropping it (the response finished, or its socket
/// died) ends the connection for the server's reader, as a closed socket would, and forgets
/// the connection's id.
pub(crate) struct StreamBody {
    pub(super) channel: Arc<Channel>,
    pub(super) table: Arc<Table>,
    pub(super) id: u128,
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, io::Error>>> {
        let chunk = ready!(self.channel.lock().down.poll_pop(cx));
        Poll::Ready(
            chunk
                .transpose()
                .map(|chunk| chunk.map(http_body::Frame::data)),
        )
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        {
            let mut state = self.channel.lock();
            state.down.close_reader();
            state.up.finish(None);
        }
        self.table.remove(self.id);
    }
}
