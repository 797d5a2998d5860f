//! The connection driver: the one task that owns the socket. It connects, resumes, reads
//! and writes frames, runs the heartbeat and ack timers, and reconnects with back-off.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imgate_codec::{Ack, CloseCode, Dictionary, Frame, GoAwayReason, Kind, Ping};
use imgate_transports::{FrameWriter, FramedConn};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::backoff::{after_goaway, backoff};
use crate::connect::{self, ConnectError, Connectors};
use crate::state::{Delivered, Reply, Request, SessionState};
use crate::{
    ClientConfig, ClientError, ConnectCause, ConnectFailure, ConnectionState, DisconnectReason,
    Endpoint, Event, Message, StopReason,
};

/// Messages received but not yet taken by the application's [`Incoming`](crate::Incoming)
/// channel; while this many wait, the driver stops reading the socket.
const STAGED_MAX: usize = 64;

/// A request from a [`Client`](crate::Client) handle.
pub(crate) struct Command {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
}

/// Out-of-band instructions, served even while requests wait.
pub(crate) enum Control {
    /// Close gracefully; answer when done.
    Close(oneshot::Sender<()>),
    /// Cut the current connection abruptly (chaos testing), then reconnect.
    Drop,
    /// End the session for good (protocol §10, `4004 LOGGED_OUT`); answer when done.
    Logout(oneshot::Sender<Result<(), ClientError>>),
}

/// Where [`Client::connect`](crate::Client::connect) waits for the first attempt's outcome.
pub(crate) type FirstAttempt = oneshot::Sender<Result<(), ConnectFailure>>;

/// How a connection ended.
enum End {
    /// Reconnect after `delay` (`None`: the back-off's first step).
    Reconnect {
        reason: DisconnectReason,
        delay: Option<Duration>,
    },
    Stop(StopReason),
}

pub(crate) struct Driver {
    config: ClientConfig,
    state: SessionState,
    requests: mpsc::UnboundedReceiver<Command>,
    requests_open: bool,
    control: mpsc::UnboundedReceiver<Control>,
    incoming: mpsc::Sender<Message>,
    staged: VecDeque<Message>,
    status: watch::Sender<ConnectionState>,
    events: broadcast::Sender<Event>,
    connectors: Connectors,
    dictionary: Dictionary,
    /// Index of the next endpoint to try.
    next_endpoint: usize,
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Set by `Client::connect`: the first attempt is reported there and not retried.
    first: Option<FirstAttempt>,
}

impl Driver {
    pub(crate) fn new(
        config: ClientConfig,
        requests: mpsc::UnboundedReceiver<Command>,
        control: mpsc::UnboundedReceiver<Control>,
        incoming: mpsc::Sender<Message>,
        status: watch::Sender<ConnectionState>,
        events: broadcast::Sender<Event>,
        first: Option<FirstAttempt>,
    ) -> Self {
        Self {
            connectors: Connectors::new(&config),
            config,
            state: SessionState::default(),
            requests,
            requests_open: true,
            control,
            incoming,
            staged: VecDeque::new(),
            status,
            events,
            dictionary: Dictionary::builtin(),
            next_endpoint: 0,
            close_waiters: Vec::new(),
            first,
        }
    }

    fn emit(&self, event: Event) {
        let state = match &event {
            Event::Connecting { endpoint, attempt } => Some(ConnectionState::Connecting {
                endpoint: endpoint.clone(),
                attempt: *attempt,
            }),
            Event::Connected {
                session_id,
                resumed,
                endpoint,
            } => Some(ConnectionState::Connected {
                session_id: *session_id,
                resumed: *resumed,
                endpoint: endpoint.clone(),
            }),
            Event::Disconnected { reason } => Some(ConnectionState::Disconnected {
                reason: reason.clone(),
            }),
            Event::Stopped { reason } => Some(ConnectionState::Stopped {
                reason: reason.clone(),
            }),
            Event::ResumeRefused { .. } | Event::GoAway { .. } | Event::ReceiptOverdue { .. } => {
                None
            }
        };
        if let Some(state) = state {
            self.status.send_replace(state);
        }
        let _ = self.events.send(event);
    }

    /// Runs until the client stops.
    pub(crate) async fn run(mut self) {
        let mut attempt = 0u32;
        let mut delay = Duration::ZERO;
        let stop = loop {
            if let Err(stop) = self.idle(delay).await {
                break stop;
            }
            let endpoint =
                self.config.endpoints[self.next_endpoint % self.config.endpoints.len()].clone();
            self.next_endpoint = self.next_endpoint.wrapping_add(1);
            self.emit(Event::Connecting {
                endpoint: endpoint.clone(),
                attempt,
            });
            let hello = connect::hello(&self.config, &self.dictionary, self.state.resume());
            let opened = tokio::select! {
                biased;
                stop = serve_control_until_stop(&mut self.control, &mut self.close_waiters) => Err(ConnectError::Stop(stop)),
                opened = connect::open(&mut self.connectors, &endpoint, hello, &self.dictionary) => opened,
            };
            if let Some(first) = self.first.take() {
                if let Err(error) = &opened {
                    let _ = first.send(Err(first_failure(error, &endpoint)));
                    break match error {
                        ConnectError::Retry(reason) => StopReason::Disconnected(reason.clone()),
                        ConnectError::Stop(stop) => stop.clone(),
                    };
                }
                let _ = first.send(Ok(()));
            }
            let end = match opened {
                Ok((conn, welcome)) => {
                    attempt = 0;
                    self.welcome(&welcome, &endpoint);
                    let heartbeat = match welcome.heartbeat_ms {
                        0 => self.config.heartbeat.fallback_interval,
                        ms => Duration::from_millis(ms.into()),
                    };
                    self.connection(conn, heartbeat).await
                }
                Err(ConnectError::Retry(reason)) => {
                    let delay = backoff(&self.config.reconnect, attempt);
                    attempt = attempt.saturating_add(1);
                    End::Reconnect {
                        reason,
                        delay: Some(delay),
                    }
                }
                Err(ConnectError::Stop(stop)) => End::Stop(stop),
            };
            match end {
                End::Reconnect { reason, .. } if !self.config.reconnect.automatic => {
                    self.emit(Event::Disconnected {
                        reason: reason.clone(),
                    });
                    break StopReason::Disconnected(reason);
                }
                End::Reconnect { reason, delay: d } => {
                    tracing::debug!(%reason, "disconnected");
                    self.emit(Event::Disconnected { reason });
                    delay = d.unwrap_or_else(|| backoff(&self.config.reconnect, 0));
                }
                End::Stop(stop) => break stop,
            }
        };
        self.state.fail_all(&stop);
        self.emit(Event::Stopped { reason: stop });
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    fn welcome(&mut self, welcome: &imgate_codec::Welcome, endpoint: &Endpoint) {
        let welcomed = self
            .state
            .on_welcome(welcome, self.config.requests.on_fresh_session);
        if let Some((reason, old_session)) = welcomed.refused {
            self.emit(Event::ResumeRefused {
                reason,
                old_session,
                new_session: welcomed.session_id,
            });
        }
        self.emit(Event::Connected {
            session_id: welcomed.session_id,
            resumed: welcomed.resumed,
            endpoint: endpoint.clone(),
        });
    }

    /// Waits `delay` while disconnected, still taking requests (they go out once connected)
    /// and handing staged messages over.
    async fn idle(&mut self, delay: Duration) -> Result<(), StopReason> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                stop = serve_control_until_stop(&mut self.control, &mut self.close_waiters) => return Err(stop),
                () = &mut sleep => return Ok(()),
                () = deliver_staged(&self.incoming, &mut self.staged), if !self.staged.is_empty() => {}
            }
        }
    }

    /// Drives one open connection until it ends.
    async fn connection(&mut self, conn: FramedConn, heartbeat: Duration) -> End {
        let (mut reader, mut writer) = conn.split();
        let liveness = heartbeat.mul_f32(self.config.heartbeat.liveness_factor.max(1.0));
        let now = Instant::now();
        let mut last_sent = now;
        let mut last_received = now;
        // Un-receipted requests go again, in order; the server de-duplicates by msg_id.
        // Ordered: one at a time (the next once the previous is answered), and new
        // requests only after all of them; otherwise all at once.
        let mut resends: VecDeque<Frame> = self.state.resend_frames().collect();
        let ordered = self.config.requests.ordered_resend;
        let mut awaiting: Option<u64> = None;
        if !ordered {
            for frame in resends.drain(..) {
                if let Err(end) = queue(&mut writer, &frame) {
                    return end;
                }
            }
        }
        let mut watched: Option<(u64, Instant)> = None;
        // After a GoAway: (reason, delay before reconnecting, leave no later than).
        let mut going_away: Option<(GoAwayReason, Duration, Instant)> = None;
        loop {
            let ping_at = last_sent + heartbeat;
            let dead_at = last_received + liveness;
            let mut deadline = ping_at.min(dead_at);
            if let Some(ack_at) = self.state.ack_deadline(&self.config.acks) {
                deadline = deadline.min(ack_at);
            }
            if let Some((_, _, leave_at)) = going_away {
                deadline = deadline.min(leave_at);
            }
            if awaiting.is_none_or(|msg_id| !self.state.is_pending(msg_id)) {
                awaiting = None;
                while let Some(frame) = resends.pop_front() {
                    let msg_id = frame_msg_id(&frame);
                    if self.state.is_pending(msg_id) {
                        if let Err(end) = queue(&mut writer, &frame) {
                            return end;
                        }
                        last_sent = Instant::now();
                        awaiting = Some(msg_id);
                        break;
                    }
                }
            }
            // The oldest request and since when it waits on this connection.
            let oldest = self.state.oldest_pending();
            if oldest != watched.map(|(msg_id, _)| msg_id) {
                watched = oldest.map(|msg_id| (msg_id, Instant::now()));
            }
            if let Some((_, since)) = watched {
                deadline = deadline.min(since + self.config.requests.receipt_timeout);
            }
            let take_requests = self.requests_open
                && going_away.is_none()
                && awaiting.is_none()
                && self.state.requests_in_flight() < self.config.requests.max_in_flight.max(1);
            let result: Result<(), End> = tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(Control::Drop) => Err(End::Reconnect {
                        reason: DisconnectReason::Dropped,
                        delay: None,
                    }),
                    Some(Control::Close(done)) => {
                        self.close_waiters.push(done);
                        self.close(&mut writer).await;
                        Err(End::Stop(StopReason::Closed))
                    }
                    Some(Control::Logout(done)) => {
                        let result = self.logout(&mut reader, &mut writer).await;
                        let _ = done.send(result);
                        Err(End::Stop(StopReason::LoggedOut))
                    }
                    None => {
                        self.close(&mut writer).await;
                        Err(End::Stop(StopReason::Closed))
                    }
                },
                flushed = writer.flush(), if writer.queued_bytes() > 0 => flushed.map_err(|e| {
                    disconnected(going_away, DisconnectReason::Transport(e.to_string()))
                }),
                () = deliver_staged(&self.incoming, &mut self.staged), if !self.staged.is_empty() => {
                    Ok(())
                }
                received = reader.recv(), if self.staged.len() < STAGED_MAX => {
                    last_received = Instant::now();
                    match received {
                        Ok(Some(frame)) => self.frame(frame, &mut writer, &mut going_away).await,
                        Ok(None) => Err(disconnected(going_away, DisconnectReason::ClosedByServer)),
                        Err(e) => Err(disconnected(going_away, DisconnectReason::Transport(e.to_string()))),
                    }
                }
                command = self.requests.recv(), if take_requests => {
                    match command {
                        Some(Command { request, reply }) => {
                            let mut frame = self.state.push_request(request, reply);
                            if let Some(Kind::Send(send)) = frame.kind.as_mut() {
                                send.ack = self.state.take_ack();
                            }
                            last_sent = Instant::now();
                            queue(&mut writer, &frame)
                        }
                        None => {
                            self.requests_open = false;
                            Ok(())
                        }
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if now >= dead_at {
                        Err(End::Reconnect {
                            reason: DisconnectReason::HeartbeatTimeout(liveness),
                            delay: None,
                        })
                    } else if let Some((reason, delay, leave_at)) = going_away.filter(|g| now >= g.2) {
                        let _ = leave_at;
                        Err(End::Reconnect {
                            reason: DisconnectReason::GoAway(reason),
                            delay: Some(delay),
                        })
                    } else if let Some((msg_id, _)) = watched
                        .filter(|(_, since)| now >= *since + self.config.requests.receipt_timeout)
                    {
                        watched = Some((msg_id, now));
                        self.emit(Event::ReceiptOverdue { msg_id });
                        match self.state.pending_frame(msg_id) {
                            Some(frame) => {
                                last_sent = now;
                                queue(&mut writer, &frame)
                            }
                            None => Ok(()),
                        }
                    } else if now >= ping_at {
                        last_sent = now;
                        let ping = Ping { client_time_ms: wall_ms(), ack: self.state.take_ack() };
                        queue(&mut writer, &ping.into())
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(end) = result {
                return end;
            }
            let ack_due = self.state.ack_batch_full(&self.config.acks)
                || self
                    .state
                    .ack_deadline(&self.config.acks)
                    .is_some_and(|at| at <= Instant::now());
            if ack_due {
                let seq = self.state.take_ack();
                last_sent = Instant::now();
                if let Err(end) = queue(&mut writer, &Ack { seq }.into()) {
                    return end;
                }
            }
        }
    }

    /// Handles one frame from the server.
    async fn frame(
        &mut self,
        frame: Frame,
        writer: &mut FrameWriter,
        going_away: &mut Option<(GoAwayReason, Duration, Instant)>,
    ) -> Result<(), End> {
        match frame.kind {
            Some(Kind::Deliver(deliver)) => match self.state.on_deliver(Instant::now(), deliver) {
                Delivered::New(message) => {
                    self.staged.push_back(message);
                    Ok(())
                }
                Delivered::Duplicate => Ok(()),
                Delivered::Gap { expected, got } => Err(End::Reconnect {
                    reason: DisconnectReason::SequenceGap { expected, got },
                    delay: None,
                }),
            },
            Some(Kind::Receipt(receipt)) => {
                self.state.on_receipt(receipt);
                Ok(())
            }
            Some(Kind::Pong(_)) => Ok(()),
            Some(Kind::GoAway(goaway)) => {
                let reason = goaway.reason();
                let after = Duration::from_millis(goaway.reconnect_after_ms.into());
                self.emit(Event::GoAway {
                    reason,
                    reconnect_after: after,
                });
                match reason {
                    GoAwayReason::Takeover => Err(End::Stop(StopReason::TakenOver)),
                    GoAwayReason::Kicked => Err(End::Stop(StopReason::Kicked)),
                    _ => {
                        // Settle acks, keep reading receipts, leave when the server closes
                        // or the linger ends.
                        let seq = self.state.take_ack();
                        if seq > 0 {
                            queue(writer, &Ack { seq }.into())?;
                        }
                        let delay = after_goaway(&self.config.reconnect, after);
                        let leave_at = Instant::now() + self.config.reconnect.goaway_linger;
                        *going_away = Some((reason, delay, leave_at));
                        Ok(())
                    }
                }
            }
            Some(Kind::Error(error)) => Err(
                match connect::after_error(error.close_code(), error.message) {
                    Ok(reason) => disconnected(*going_away, reason),
                    Err(stop) => End::Stop(stop),
                },
            ),
            other => Err(End::Reconnect {
                reason: DisconnectReason::Transport(format!("unexpected frame {other:?}")),
                delay: None,
            }),
        }
    }

    /// Tells the server to end the session (`Error{4004 LOGGED_OUT}`, after the last ack)
    /// and waits, within the connect time-out, until it closes the connection: by then the
    /// session is gone (protocol §10).
    async fn logout(
        &mut self,
        reader: &mut imgate_transports::FrameReader,
        writer: &mut FrameWriter,
    ) -> Result<(), ClientError> {
        let seq = self.state.take_ack();
        if seq > 0 {
            let _ = writer.queue(&Ack { seq }.into());
        }
        let told = writer
            .queue(&imgate_codec::Error::new(CloseCode::LOGGED_OUT, "logged out").into())
            .map_err(|_| ClientError::NotConnected);
        let deadline = self.config.handshake_timeout;
        let closed = async {
            told?;
            writer
                .flush()
                .await
                .map_err(|_| ClientError::NotConnected)?;
            // Frames still in flight (receipts, deliveries) until the server closes.
            while let Ok(Some(_)) = reader.recv().await {}
            Ok(())
        };
        let result = tokio::time::timeout(deadline, closed)
            .await
            .unwrap_or(Err(ClientError::NotConnected));
        let _ = writer.close(CloseCode::NORMAL, "logged out").await;
        result
    }

    /// Sends the last ack and closes the connection; the server keeps the session for a
    /// resume.
    async fn close(&mut self, writer: &mut FrameWriter) {
        let seq = self.state.take_ack();
        if seq > 0 {
            let _ = writer.queue(&Ack { seq }.into());
        }
        let _ = writer
            .close(imgate_codec::CloseCode::NORMAL, "client closed")
            .await;
    }
}

/// Serves control messages while not connected; returns when the client must stop.
/// Requests stay in their queue (taken once connected, in order).
async fn serve_control_until_stop(
    control: &mut mpsc::UnboundedReceiver<Control>,
    close_waiters: &mut Vec<oneshot::Sender<()>>,
) -> StopReason {
    loop {
        match control.recv().await {
            Some(Control::Close(done)) => {
                close_waiters.push(done);
                return StopReason::Closed;
            }
            Some(Control::Drop) => {}
            Some(Control::Logout(done)) => {
                let _ = done.send(Err(ClientError::NotConnected));
                return StopReason::LoggedOut;
            }
            None => return StopReason::Closed,
        }
    }
}

/// What the first attempt of `Client::connect` reports: where and why it failed.
fn first_failure(error: &ConnectError, endpoint: &Endpoint) -> ConnectFailure {
    let cause = match error {
        ConnectError::Retry(DisconnectReason::ConnectFailed(failure)) => return failure.clone(),
        ConnectError::Retry(DisconnectReason::ServerError { code, message })
        | ConnectError::Stop(StopReason::Refused { code, message }) => ConnectCause::Rejected {
            code: *code,
            message: message.clone(),
        },
        ConnectError::Retry(other) => ConnectCause::Other(other.to_string()),
        ConnectError::Stop(other) => ConnectCause::Other(other.to_string()),
    };
    ConnectFailure {
        endpoint: endpoint.clone(),
        cause,
    }
}

/// The end of a connection that failed: after a `GoAway`, with its delay.
fn disconnected(
    going_away: Option<(GoAwayReason, Duration, Instant)>,
    reason: DisconnectReason,
) -> End {
    match going_away {
        Some((goaway, delay, _)) => End::Reconnect {
            reason: DisconnectReason::GoAway(goaway),
            delay: Some(delay),
        },
        None => End::Reconnect {
            reason,
            delay: None,
        },
    }
}

/// The `msg_id` of a request frame (0 for other frames).
fn frame_msg_id(frame: &Frame) -> u64 {
    match &frame.kind {
        Some(Kind::Send(send)) => send.msg_id,
        Some(Kind::JoinRoom(join)) => join.msg_id,
        Some(Kind::LeaveRoom(leave)) => leave.msg_id,
        _ => 0,
    }
}

fn queue(writer: &mut FrameWriter, frame: &Frame) -> Result<(), End> {
    writer.queue(frame).map_err(|e| End::Reconnect {
        reason: DisconnectReason::Transport(e.to_string()),
        delay: None,
    })
}

/// Hands the oldest staged message to the application (dropped if it stopped listening).
async fn deliver_staged(incoming: &mpsc::Sender<Message>, staged: &mut VecDeque<Message>) {
    match incoming.reserve().await {
        Ok(permit) => {
            if let Some(message) = staged.pop_front() {
                permit.send(message);
            }
        }
        Err(_) => staged.clear(),
    }
}

/// Wall clock in ms since the Unix epoch (the `Ping` timestamp the server echoes).
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
