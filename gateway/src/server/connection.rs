//! A new connection: `Hello`, authentication, then a fresh or resumed session.

use std::sync::Arc;

use imgate_codec::{CloseCode, Compression, Dictionary, FEATURE_LZ4, Hello, ResumeRefused};

use super::limits;
use imgate_transports::{FrameReader, FrameWriter, TransportKind};
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

use super::ServerConfig;
use super::driver::{Connection, Driver};
use crate::app::App;
use crate::auth::{AuthRequest, MAX_USER_ID_LEN};
use crate::backend::Origin;
use crate::handle::{GatewayHandle, wall_ms};
use crate::ids::{AppId, DeviceId, SessionId};
use crate::metrics::{Metrics, TransportLabel};
use crate::registry::SessionCell;
use crate::session::{Handshake, HandshakeRefused, Identity, Negotiated, ResumeSecret, Session};
use crate::store::Change;

/// Serves one connection's protocol handshake, then hands it to a session driver task.
///
/// The handshake's locals (the `Hello` with its token, the authenticator's future) live in
/// this short task only: every byte of a task's future is held for its whole life, and the
/// driver task lives as long as the connection.
pub(super) async fn serve(handle: GatewayHandle, mut reader: FrameReader, mut writer: FrameWriter) {
    let peer = reader.info().peer;
    let config = handle.shared.config.clone();
    let open = OpenConnection::new(&handle, reader.info().kind);
    let Some((hello, app)) = handshake(&handle, &mut reader, &mut writer, &config).await else {
        return;
    };
    let device = DeviceId::new(hello.device_id.as_str());
    let request = AuthRequest {
        app: app.id.clone(),
        device: device.clone(),
        token: hello.token.clone(),
        peer: Some(peer),
    };
    let authenticated = match app.authenticator.authenticate(&request).await {
        // The `Welcome` carries the user id and must fit the smallest frame limit a client
        // may announce (§12): an authenticator's longer id is a server fault.
        Ok(authenticated) if authenticated.user.as_str().len() > MAX_USER_ID_LEN => {
            Metrics::count(&handle.metrics().handshakes, CloseCode::INTERNAL.name());
            tracing::error!(app = %app.id, "the authenticator returned a user id over {MAX_USER_ID_LEN} bytes");
            let _ = writer.close(CloseCode::INTERNAL, "internal error").await;
            return;
        }
        Ok(authenticated) => authenticated,
        Err(error) => {
            Metrics::count(&handle.metrics().handshakes, error.close_code().name());
            if handle.shared.log_sample.try_take(Instant::now()) {
                tracing::info!(
                    client.addr = %peer,
                    app = %app.id,
                    code = error.close_code().name(),
                    %error,
                    "token refused (sampled; imgate_handshakes_total counts every one)"
                );
            } else {
                tracing::debug!(client.addr = %peer, %error, "token refused");
            }
            let _ = writer.close(error.close_code(), &error.to_string()).await;
            return;
        }
    };
    let identity = Identity {
        app: app.id.clone(),
        user: authenticated.user,
        device,
        platform: hello.platform(),
    };
    let (negotiated, compression) = negotiate(&hello);
    limits::apply(&mut reader, &app, compression.as_ref());
    #[cfg(feature = "cluster")]
    let elsewhere = match fetch_from_cluster(&handle, &hello, &identity).await {
        Ok(refused) => refused,
        Err(refused) => {
            Metrics::count(&handle.metrics().handshakes, refused.code.name());
            let _ = writer.close(refused.code, &refused.message).await;
            return;
        }
    };
    #[cfg(not(feature = "cluster"))]
    let elsewhere = None;
    let now = Instant::now();
    let (cell, fresh) = match attach(&handle, &app, &hello, identity, &negotiated, now, elsewhere) {
        Ok(attached) => attached,
        Err(refused) => {
            Metrics::count(&handle.metrics().handshakes, refused.code.name());
            let _ = writer.close(refused.code, &refused.message).await;
            return;
        }
    };
    limit_frames(&mut writer, hello.max_frame);
    Metrics::count(&handle.metrics().handshakes, "ok");
    tracing::Span::current().record("session.id", tracing::field::display(cell.id()));
    if handle.shared.log_sample.try_take(now) {
        tracing::info!(
            client.addr = %peer,
            user = %cell.identity().user,
            device = %cell.identity().device,
            resumed = !fresh,
            "session attached (sampled; imgate_handshakes_total counts every one)"
        );
    } else {
        tracing::debug!(
            user = %cell.identity().user,
            device = %cell.identity().device,
            resumed = !fresh,
            "session attached"
        );
    }
    let origin = Origin {
        session: cell.id(),
        identity: cell.identity().clone(),
    };
    #[cfg(feature = "cluster")]
    if fresh && let Some(cluster) = &handle.shared.cluster {
        crate::cluster::route::claim(&handle, cluster, cell.identity(), cell.id()).await;
    }
    if fresh {
        app.backend.on_connect(&handle, &origin).await;
    }
    let driver = Driver::new(handle.clone(), app, cell, origin);
    // The driver runs outside the connection's span: at the default `info` level a span
    // lives in the subscriber for as long as the connection (~490 B per idle session,
    // measured) and is entered on every wake-up. Its events name the session instead.
    handle.spawn(driver_task(
        driver,
        (reader, writer, open),
        compression.map(Box::new),
    ));
}

/// The future of a session driver's task. It owns the driver's state exactly once; its
/// size is what every idle connection costs beyond its session (`footprint` tests hold it).
pub(super) fn driver_task(
    mut driver: Driver,
    connection: Connection,
    compression: Option<Box<Compression>>,
) -> impl Future<Output = ()> + Send {
    let mut connection = Some(connection);
    let mut compression = compression;
    async move { driver.run(&mut connection, &mut compression).await }
}

/// The future of a restored session's driver: no connection until the client resumes (the
/// resume hands the session to the new connection's driver, and this one lets go).
// Not an `async fn`: one taking the driver by value would hold it twice (argument and local).
#[allow(clippy::manual_async_fn)]
pub(super) fn detached_driver_task(mut driver: Driver) -> impl Future<Output = ()> + Send {
    async move { driver.run(&mut None, &mut None).await }
}

/// Counts a connection in the `connections` gauge from accept until dropped.
pub(super) struct OpenConnection(Gauge);

impl OpenConnection {
    pub(super) fn new(handle: &GatewayHandle, transport: TransportKind) -> Self {
        let gauge = handle
            .metrics()
            .connections
            .get_or_create(&TransportLabel {
                transport: transport.as_str(),
            })
            .clone();
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What a client that connects (or has not said `Hello` yet) during a drain is told.
const DRAINING: &str = "the server is draining; connect elsewhere";

/// Waits for a valid `Hello` naming a configured app; refuses and closes otherwise.
async fn handshake(
    handle: &GatewayHandle,
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    config: &ServerConfig,
) -> Option<(Hello, Arc<App>)> {
    let handshake = Handshake::new(Instant::now(), config.handshake_timeout);
    let draining = || HandshakeRefused::new(CloseCode::GOING_AWAY, DRAINING);
    let first = tokio::select! {
        first = tokio::time::timeout_at(handshake.poll_timeout(), reader.recv()) => Some(first),
        // A drain does not wait for a client that has not said `Hello` yet.
        () = handle.shared.drain_started.cancelled() => None,
    };
    let refusal = match first {
        None => Some(draining()),
        Some(Err(_elapsed)) => handshake.handle_timeout(Instant::now()),
        Some(Ok(Ok(Some(_)))) if handle.is_draining() => Some(draining()),
        Some(Ok(Ok(Some(_)))) if !handle.shared.handshake_limit.try_take(Instant::now()) => {
            Metrics::count(&handle.metrics().limited, "handshake_rate");
            Some(crate::session::HandshakeRefused::new(
                CloseCode::RATE_LIMITED,
                "too many handshakes; retry with back-off",
            ))
        }
        Some(Ok(Ok(Some(frame)))) => match handshake.handle_frame(frame) {
            Ok(hello) => {
                let app_id = AppId::new(hello.app_id.as_str());
                match handle.app(&app_id) {
                    Some(app) => return Some((hello, app.clone())),
                    None => Some(crate::session::HandshakeRefused::new(
                        CloseCode::UNKNOWN_APP,
                        format!("unknown app {app_id}"),
                    )),
                }
            }
            Err(refused) => Some(refused),
        },
        Some(Ok(Ok(None))) => None,
        Some(Ok(Err(error))) => error
            .close_code()
            .map(|code| crate::session::HandshakeRefused::new(code, error.peer_message())),
    };
    if let Some(refused) = refusal {
        Metrics::count(&handle.metrics().handshakes, refused.code.name());
        let _ = tokio::time::timeout(
            config.close_timeout,
            writer.close(refused.code, &refused.message),
        )
        .await;
    }
    None
}

/// A resume of a session this node does not hold: bring it from the node that does (it is
/// then resumed here like a local one), or refuse a device that lost its session to a newer
/// login from evicting it (§10's rule, cluster-wide). A resume that finds nothing goes on as
/// a fresh login, as it would on one node, its `Welcome` saying why (the returned reason).
#[cfg(feature = "cluster")]
async fn fetch_from_cluster(
    handle: &GatewayHandle,
    hello: &Hello,
    identity: &Identity,
) -> Result<Option<ResumeRefused>, HandshakeRefused> {
    use crate::cluster::route::{Fetched, fetch_for_resume};
    let (Some(cluster), Some(resume)) = (&handle.shared.cluster, &hello.resume) else {
        return Ok(None);
    };
    if handle
        .shared
        .registry
        .session(SessionId(resume.session_id))
        .is_some()
    {
        return Ok(None);
    }
    match fetch_for_resume(handle, cluster, identity, resume).await {
        Fetched::TakenOver => Err(HandshakeRefused::new(
            CloseCode::SESSION_TAKEN_OVER,
            "this session was taken over by a newer login of the device",
        )),
        Fetched::Moved => Ok(None),
        Fetched::Refused(reason) => Ok(Some(reason)),
    }
}

/// Compression the client can take (LZ4 if it lists the feature, with the built-in
/// dictionary if it holds it) and the largest frame it takes.
fn negotiate(hello: &Hello) -> (Negotiated, Option<Compression>) {
    if !hello.features.iter().any(|f| f == FEATURE_LZ4) {
        let negotiated = Negotiated {
            max_frame: hello.max_frame,
            ..Negotiated::default()
        };
        return (negotiated, None);
    }
    let builtin = Dictionary::builtin();
    let dictionary = hello
        .dictionaries
        .contains(&builtin.id().0)
        .then_some(builtin);
    let negotiated = Negotiated {
        features: vec![FEATURE_LZ4.to_owned()],
        dictionary_id: dictionary.as_ref().map_or(0, |d| d.id().0),
        max_frame: hello.max_frame,
    };
    let compression = Compression {
        dictionary,
        ..Compression::default()
    };
    (negotiated, Some(compression))
}

/// Resumes the requested session, or creates a fresh one (taking over the device's older
/// session). Returns the session and whether it is fresh.
fn attach(
    handle: &GatewayHandle,
    app: &App,
    hello: &Hello,
    identity: Identity,
    negotiated: &Negotiated,
    now: Instant,
    refused_elsewhere: Option<ResumeRefused>,
) -> Result<(Arc<SessionCell>, bool), HandshakeRefused> {
    let registry = &handle.shared.registry;
    let mut refused = ResumeRefused::Unspecified;
    if let Some(resume) = &hello.resume {
        match registry.session(SessionId(resume.session_id)) {
            Some(cell) => {
                let result = cell.lock().resume(
                    now,
                    &identity,
                    &resume.resume_secret,
                    resume.last_seq,
                    negotiated,
                );
                // The previous driver (if any) sees the new generation and lets go.
                cell.wake();
                match result {
                    Ok(()) => {
                        Metrics::count(&handle.metrics().resumes, "resumed");
                        return Ok((cell, false));
                    }
                    Err(reason) => refused = reason,
                }
            }
            None => refused = refused_elsewhere.unwrap_or(ResumeRefused::UnknownSession),
        }
        Metrics::count(&handle.metrics().resumes, refused.as_str_name());
    }
    let current = registry.device_session(&identity.app, &identity.user, &identity.device);
    if let (Some(resume), Some(_)) = (&hello.resume, &current)
        && registry.was_taken_over(SessionId(resume.session_id))
    {
        // A device that lost its session to a newer login is reconnecting on its own: it
        // must not evict the login that replaced it.
        return Err(HandshakeRefused::new(
            CloseCode::SESSION_TAKEN_OVER,
            "this session was taken over by a newer login of the device",
        ));
    }
    if let Some(old) = current {
        old.lock().take_over();
        old.wake();
        registry.remove(&old);
        registry.remember_taken_over(old.id());
    }
    // Without the OS generator no unguessable secret can be made: refuse the connection.
    let (Some(id), Some(secret)) = (random_bytes(), random_bytes()) else {
        tracing::error!("the OS random generator failed; refusing the connection");
        return Err(HandshakeRefused::new(CloseCode::INTERNAL, "internal error"));
    };
    let id = SessionId(u64::from_le_bytes(id));
    let secret = ResumeSecret::from_bytes(secret);
    let mut session = Session::new(
        now,
        wall_ms(),
        id,
        secret,
        identity,
        app.session.clone(),
        negotiated,
    );
    if refused != ResumeRefused::Unspecified {
        session.set_resume_refused(refused);
    }
    if let Some(store) = handle.shared.store_for(app) {
        // Before any delivery can reach the session (it is not yet in the registry), so the
        // store sees it open before its first message.
        store.append(Change::Opened {
            session: session.id(),
            secret: session.secret().clone(),
            identity: session.identity().clone(),
            opened_at_ms: wall_ms(),
        });
    }
    let cell = SessionCell::new(session);
    registry.insert(cell.clone());
    Ok((cell, true))
}

/// Holds everything sent on the connection from its `Welcome` on to the client's frame
/// limit. The session keeps `Deliver` frames within it; a frame over it would fail to
/// queue, so this only guards the limit (§12).
fn limit_frames(writer: &mut FrameWriter, client_max_frame: u32) {
    let limit = client_max_frame as usize;
    // Only a smaller limit copies the listener's shared encoder.
    if limit != 0 && limit < writer.encoder().max_frame() {
        writer.encoder_mut().set_max_frame(limit);
    }
}

fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}
