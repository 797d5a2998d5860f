//! `Client`: the application's handle to the connection driver.

use std::future::Future;

use bytes::Bytes;
use imgate_codec::Receipt;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::driver::{Command, Control, Driver, FirstAttempt};
use crate::state::Request;
use crate::{ClientConfig, ClientError, ConnectionState, Event, Incoming, StopReason, Target};

/// Events kept for a slow [`Client::events`] subscriber before it lags.
const EVENTS_CAPACITY: usize = 256;

/// A handle to one client connection (cheap to clone). A background task, the connection
/// driver, owns the socket: it connects, resumes after every drop, re-sends requests
/// without receipts, acks what arrives and keeps the connection alive.
///
/// Dropping every handle closes the client, as [`Client::close`] does.
#[derive(Clone, Debug)]
pub struct Client {
    requests: mpsc::UnboundedSender<Command>,
    control: mpsc::UnboundedSender<Control>,
    state: watch::Receiver<ConnectionState>,
    events: broadcast::Sender<Event>,
}

impl Client {
    /// Starts the connection driver and opens the first connection, failing fast: one
    /// attempt, within the connect time-out
    /// ([`ClientConfig::handshake_timeout`](crate::ClientConfig::handshake_timeout)). A
    /// failure is [`ClientError::Connect`], naming the endpoint and the cause (refused, TLS,
    /// HTTP status, time-out, the server's refusal). Once connected, the client reconnects
    /// and resumes after drops if [`ReconnectPolicy::automatic`](crate::ReconnectPolicy) is
    /// on (the default). Must be called inside a tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<(Self, Incoming), ClientError> {
        let (first, outcome) = oneshot::channel();
        let (client, incoming) = Self::spawn(config, Some(first))?;
        match outcome.await {
            Ok(Ok(())) => Ok((client, incoming)),
            Ok(Err(failure)) => Err(ClientError::Connect(failure)),
            Err(_) => Err(stopped(&client.state)),
        }
    }

    /// Starts the connection driver and returns at once; requests made before the
    /// connection is up wait for it. Connection failures, the first one included, are
    /// retried with back-off (unless [`ReconnectPolicy::automatic`](crate::ReconnectPolicy)
    /// is off) and reported as [`Event::Disconnected`]. Must be called inside a tokio
    /// runtime.
    pub fn start(config: ClientConfig) -> Result<(Self, Incoming), ClientError> {
        Self::spawn(config, None)
    }

    fn spawn(
        config: ClientConfig,
        first: Option<FirstAttempt>,
    ) -> Result<(Self, Incoming), ClientError> {
        if config.endpoints.is_empty() {
            return Err(ClientError::Config("no endpoint".to_owned()));
        }
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (control, control_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::channel(config.incoming_capacity.max(1));
        let first_endpoint = config.endpoints[0].clone();
        let (status, state) = watch::channel(ConnectionState::Connecting {
            endpoint: first_endpoint,
            attempt: 0,
        });
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let driver = Driver::new(
            config,
            requests_rx,
            control_rx,
            incoming_tx,
            status,
            events.clone(),
            first,
        );
        tokio::spawn(driver.run());
        let client = Self {
            requests,
            control,
            state,
            events,
        };
        Ok((client, Incoming::new(incoming_rx)))
    }

    /// Sends `payload` to `to`. The future resolves with the server's receipt for it, even
    /// if that takes reconnects (the message is re-sent with the same `msg_id` after each;
    /// the server de-duplicates within the session). A `rejected` receipt is
    /// [`ClientError::Rejected`].
    ///
    /// The request is queued when `send` is called, not when the future is first polled,
    /// so requests go out in call order and the future may be awaited later (or dropped:
    /// the message is still sent). At most
    /// [`RequestPolicy::max_in_flight`](crate::RequestPolicy) requests are on the wire at
    /// once; the rest wait in the client's queue, which is unbounded: bound what you queue
    /// by awaiting receipts.
    pub fn send(
        &self,
        to: Target,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send + 'static {
        self.request(Request::Send {
            to,
            payload: payload.into(),
        })
    }

    /// Joins `room` (the future resolves with the receipt, as for [`Client::send`]).
    pub fn join_room(
        &self,
        room: impl Into<String>,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send + 'static {
        self.request(Request::JoinRoom(room.into()))
    }

    /// Leaves `room` (the future resolves with the receipt, as for [`Client::send`]).
    pub fn leave_room(
        &self,
        room: impl Into<String>,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send + 'static {
        self.request(Request::LeaveRoom(room.into()))
    }

    fn request(
        &self,
        request: Request,
    ) -> impl Future<Output = Result<Receipt, ClientError>> + Send + 'static {
        let (reply, receipt) = oneshot::channel();
        let queued = self.requests.send(Command { request, reply });
        let state = self.state.clone();
        async move {
            if queued.is_err() {
                return Err(stopped(&state));
            }
            receipt.await.unwrap_or_else(|_| Err(stopped(&state)))
        }
    }

    /// The connection state, updated as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Every connection event from now on (a subscriber more than 256 events behind
    /// misses the oldest, see [`broadcast::error::RecvError::Lagged`]).
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Closes the connection (sending the last ack) and stops the driver; pending requests
    /// fail with [`ClientError::Stopped`]. The server keeps the session for its resume
    /// window. Returns once the driver has stopped.
    pub async fn close(&self) {
        let (done, stopped) = oneshot::channel();
        if self.control.send(Control::Close(done)).is_ok() {
            let _ = stopped.await;
        }
    }

    /// Logs out: ends the session for good (protocol §10, `4004 LOGGED_OUT`), unlike
    /// [`Client::close`], after which the session stays resumable. The server hands what the
    /// device has not acknowledged to the offline path and forgets the session; the client
    /// stops with [`StopReason::LoggedOut`]. Returns once the server closed the connection
    /// (within the connect time-out), or [`ClientError::NotConnected`] if there was no
    /// connection to tell it on (the client stops anyway).
    pub async fn logout(&self) -> Result<(), ClientError> {
        let (done, result) = oneshot::channel();
        if self.control.send(Control::Logout(done)).is_err() {
            return Err(stopped(&self.state));
        }
        result.await.unwrap_or_else(|_| Err(stopped(&self.state)))
    }

    /// **Chaos hook, for tests and benchmarks**: cuts the current connection abruptly, as
    /// a network failure would (no ack, no close frame; the socket is just dropped), then
    /// reconnects and resumes as after any drop. Does nothing while not connected.
    pub fn debug_drop_connection(&self) {
        let _ = self.control.send(Control::Drop);
    }
}

fn stopped(state: &watch::Receiver<ConnectionState>) -> ClientError {
    match &*state.borrow() {
        ConnectionState::Stopped { reason } => ClientError::Stopped(reason.clone()),
        _ => ClientError::Stopped(StopReason::Closed),
    }
}
