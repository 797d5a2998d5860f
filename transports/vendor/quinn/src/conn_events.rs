//! The endpoint driver's per-connection event queue
//!
//! This replaces a `tokio::sync::mpsc::unbounded_channel` per connection. Tokio's channel
//! allocates its first block of 32 slots when it is created, i.e. 32 × `ConnectionEvent` (~7 KB)
//! for every connection, even one that never receives another packet after its handshake. This
//! queue is a `VecDeque` behind a mutex that holds memory only while events are pending.

use std::{
    collections::VecDeque,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use crate::{ConnectionEvent, mutex::Mutex};

/// Creates the two ends of a connection's event queue
pub(crate) fn conn_event_queue() -> (ConnEventSender, ConnEventReceiver) {
    let queue = Arc::new(Mutex::new(Queue {
        events: VecDeque::new(),
        waker: None,
        sender_dropped: false,
        receiver_dropped: false,
    }));
    (ConnEventSender(queue.clone()), ConnEventReceiver(queue))
}

#[derive(Debug)]
struct Queue {
    events: VecDeque<ConnectionEvent>,
    /// The connection driver, woken when an event arrives or the sender is dropped
    waker: Option<Waker>,
    sender_dropped: bool,
    receiver_dropped: bool,
}

/// The endpoint's end of a connection's event queue
#[derive(Debug)]
pub(crate) struct ConnEventSender(Arc<Mutex<Queue>>);

impl ConnEventSender {
    /// Queues `event`, or hands it back if the connection is gone
    pub(crate) fn send(&self, event: ConnectionEvent) -> Result<(), ConnectionEvent> {
        let mut queue = self.0.lock("ConnEventSender::send");
        if queue.receiver_dropped {
            return Err(event);
        }
        queue.events.push_back(event);
        let waker = queue.waker.take();
        // Wake outside the lock: the woken driver may be polled on another thread at once
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl Drop for ConnEventSender {
    fn drop(&mut self) {
        let mut queue = self.0.lock("ConnEventSender::drop");
        queue.sender_dropped = true;
        let waker = queue.waker.take();
        drop(queue);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The connection driver's end of its event queue
#[derive(Debug)]
pub(crate) struct ConnEventReceiver(Arc<Mutex<Queue>>);

impl ConnEventReceiver {
    /// The next event; `Ready(None)` once the queue is empty and the endpoint has dropped its end
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ConnectionEvent>> {
        let mut queue = self.0.lock("ConnEventReceiver::poll_recv");
        if let Some(event) = queue.events.pop_front() {
            if queue.events.is_empty() {
                // Give the buffer back: most connections are idle most of the time
                queue.events = VecDeque::new();
            }
            return Poll::Ready(Some(event));
        }
        if queue.sender_dropped {
            return Poll::Ready(None);
        }
        match &mut queue.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => queue.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for ConnEventReceiver {
    fn drop(&mut self) {
        let mut queue = self.0.lock("ConnEventReceiver::drop");
        queue.receiver_dropped = true;
        // Events still queued (e.g. a socket from `Rebind`) are released now, not when the
        // endpoint forgets the connection; dropped outside the lock
        let events = std::mem::take(&mut queue.events);
        drop(queue);
        drop(events);
    }
}
