//! Opening one connection: transport connect, `Hello`, `Welcome`, codec set-up.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use imgate_codec::{
    CloseCode, Compression, Dictionary, FEATURE_LZ4, FrameEncoder, Hello, Kind, PROTOCOL_VERSION,
    Resume, Welcome,
};
use imgate_transports::{
    Connector, ConnectorConfig, FramedConn, RootCertStore, TransportError, TransportKind,
};

use crate::{ClientConfig, ConnectCause, ConnectFailure, DisconnectReason, Endpoint, StopReason};

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// Try again after a back-off.
    Retry(DisconnectReason),
    /// Do not try again.
    Stop(StopReason),
}

/// One connector per transport, created on first use and kept (the QUIC one owns the
/// client's UDP endpoint).
#[derive(Debug)]
pub(crate) struct Connectors {
    roots: Arc<RootCertStore>,
    server_name: String,
    ws_path: String,
    http_path: String,
    handshake_timeout: Duration,
    by_kind: HashMap<TransportKind, Connector>,
}

impl Connectors {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Self {
            roots: Arc::clone(&config.roots),
            server_name: config.server_name.clone(),
            ws_path: config.ws_path.clone(),
            http_path: config.http_path.clone(),
            handshake_timeout: config.handshake_timeout,
            by_kind: HashMap::new(),
        }
    }

    fn get(&mut self, kind: TransportKind) -> Result<&Connector, TransportError> {
        if !self.by_kind.contains_key(&kind) {
            let mut config = ConnectorConfig::new(kind, RootCertStore::empty());
            config.roots = Arc::clone(&self.roots);
            config.server_name.clone_from(&self.server_name);
            config.ws_path.clone_from(&self.ws_path);
            config.http_path.clone_from(&self.http_path);
            config.handshake_timeout = self.handshake_timeout;
            self.by_kind.insert(kind, Connector::new(config)?);
        }
        Ok(self.by_kind.get(&kind).expect("invariant: inserted above"))
    }
}

/// Builds the `Hello` for `config`, resuming `resume` if set.
pub(crate) fn hello(
    config: &ClientConfig,
    dictionary: &Dictionary,
    resume: Option<Resume>,
) -> Hello {
    let mut hello = Hello {
        version: PROTOCOL_VERSION,
        token: config.token.clone(),
        app_id: config.app_id.clone(),
        device_id: config.device_id.clone(),
        resume,
        ..Hello::default()
    };
    hello.set_platform(config.platform);
    if config.features.lz4 {
        hello.features.push(FEATURE_LZ4.to_owned());
        if config.features.builtin_dictionary {
            hello.dictionaries.push(dictionary.id().0);
        }
    }
    hello
}

/// Connects to `endpoint`, sends `hello` and waits for `Welcome`, all within the
/// handshake deadline; then switches the codec to what `Welcome` negotiated.
pub(crate) async fn open(
    connectors: &mut Connectors,
    endpoint: &Endpoint,
    hello: Hello,
    dictionary: &Dictionary,
) -> Result<(FramedConn, Welcome), ConnectError> {
    let deadline = connectors.handshake_timeout;
    let failed = |cause| {
        ConnectError::Retry(DisconnectReason::ConnectFailed(ConnectFailure {
            endpoint: endpoint.clone(),
            cause,
        }))
    };
    let connector = connectors
        .get(endpoint.kind)
        .map_err(|e| failed(ConnectCause::from_transport(&e)))?;
    let handshake = async {
        let mut conn = connector.connect(endpoint.addr).await?;
        conn.send(&hello.into()).await?;
        let frame = conn.recv().await?;
        Ok::<_, TransportError>((conn, frame))
    };
    let (mut conn, frame) = match tokio::time::timeout(deadline, handshake).await {
        Err(_) => return Err(failed(ConnectCause::Timeout(deadline))),
        Ok(Err(e)) => return Err(failed(ConnectCause::from_transport(&e))),
        Ok(Ok(result)) => result,
    };
    let welcome = match frame.and_then(|f| f.kind) {
        Some(Kind::Welcome(welcome)) => welcome,
        Some(Kind::Error(error)) => {
            return Err(match after_error(error.close_code(), error.message) {
                Ok(reason) => ConnectError::Retry(reason),
                Err(stop) => ConnectError::Stop(stop),
            });
        }
        None => return Err(failed(ConnectCause::Closed)),
        Some(other) => {
            return Err(failed(ConnectCause::Other(format!(
                "expected Welcome, got {other:?}"
            ))));
        }
    };
    negotiate(&mut conn, &welcome, dictionary);
    Ok((conn, welcome))
}

/// Compression (and the dictionary) start right after `Welcome`, if it enabled them;
/// outbound frames respect the server's frame limit.
fn negotiate(conn: &mut FramedConn, welcome: &Welcome, dictionary: &Dictionary) {
    let lz4 = welcome.features.iter().any(|f| f == FEATURE_LZ4);
    let dictionary = (welcome.dictionary_id != 0 && welcome.dictionary_id == dictionary.id().0)
        .then(|| dictionary.clone());
    let compression = lz4.then(|| Compression {
        dictionary: dictionary.clone(),
        ..Compression::default()
    });
    let writer = conn.writer();
    let max_frame = match usize::try_from(welcome.max_frame) {
        Ok(0) | Err(_) => writer.encoder_mut().max_frame(),
        Ok(max) => max,
    };
    *writer.encoder_mut() = FrameEncoder::new(max_frame).with_compression(compression);
    if lz4 && dictionary.is_some() {
        let decoder = conn.reader().decoder_mut();
        *decoder = decoder.clone().with_dictionary(dictionary);
    }
}

/// What a server `Error` means for the client (protocol §13): `Ok` to reconnect (with
/// resume), `Err` to stop.
pub(crate) fn after_error(
    code: CloseCode,
    message: String,
) -> Result<DisconnectReason, StopReason> {
    match code {
        CloseCode::SESSION_TAKEN_OVER => Err(StopReason::TakenOver),
        CloseCode::KICKED => Err(StopReason::Kicked),
        CloseCode::HANDSHAKE_TIMEOUT
        | CloseCode::HEARTBEAT_TIMEOUT
        | CloseCode::GOING_AWAY
        | CloseCode::INTERNAL => Ok(DisconnectReason::ServerError { code, message }),
        CloseCode(3000..=3999) => Ok(DisconnectReason::ServerError { code, message }),
        _ => Err(StopReason::Refused { code, message }),
    }
}
