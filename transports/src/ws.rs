//! WebSocket (tokio-tungstenite): the upgrade on both sides, and close-frame mapping.

use imgate_codec::{CloseCode, Frame};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use crate::TransportError;
use crate::config::{WS_SUBPROTOCOL, WsConfig};
use crate::stats::HandshakeFailure;

/// The byte stream under a WebSocket: plain TCP (WS) or TLS (WSS).
pub(crate) use crate::maybe_tls::MaybeTls as WsIo;

/// A WebSocket over [`WsIo`].
pub(crate) type WsStream = WebSocketStream<WsIo>;

/// tungstenite's settings: small buffers (its 128 KiB read buffer would dominate an idle
/// connection) and limits equal to the frame limit, checked before reading a message body.
pub(crate) fn ws_config(config: &WsConfig, max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
}

/// The server side of the upgrade: path, Origin allow-list and subprotocol checked.
pub(crate) async fn accept(
    io: WsIo,
    config: &WsConfig,
    max_frame: usize,
) -> Result<WsStream, HandshakeFailure> {
    let mut refused = None;
    #[allow(clippy::result_large_err)] // reason: tungstenite's callback signature
    let callback = |request: &Request, mut response: Response| match check_request(request, config)
    {
        Ok(()) => {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(WS_SUBPROTOCOL),
            );
            Ok(response)
        }
        Err((reason, status)) => {
            refused = Some(reason);
            let mut error = ErrorResponse::new(Some(reason.as_str().to_owned()));
            *error.status_mut() = status;
            Err(error)
        }
    };
    let result = tokio_tungstenite::accept_hdr_async_with_config(
        io,
        callback,
        Some(ws_config(config, max_frame)),
    )
    .await;
    match result {
        Ok(stream) => Ok(stream),
        Err(e) => {
            tracing::debug!(error = %e, "WebSocket upgrade failed");
            Err(refused.unwrap_or(HandshakeFailure::WsBadRequest))
        }
    }
}

fn check_request(
    request: &Request,
    config: &WsConfig,
) -> Result<(), (HandshakeFailure, StatusCode)> {
    if request.uri().path() != config.path {
        return Err((HandshakeFailure::WsPath, StatusCode::NOT_FOUND));
    }
    if let (Some(allowed), Some(origin)) = (
        &config.allowed_origins,
        request.headers().get(header::ORIGIN),
    ) && !allowed.iter().any(|a| a.as_bytes() == origin.as_bytes())
    {
        return Err((HandshakeFailure::WsOrigin, StatusCode::FORBIDDEN));
    }
    let offered = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == WS_SUBPROTOCOL);
    if !offered {
        return Err((HandshakeFailure::WsSubprotocol, StatusCode::BAD_REQUEST));
    }
    Ok(())
}

/// The client side of the upgrade, offering subprotocol `imgate.v1`.
pub(crate) async fn connect(
    io: WsIo,
    url: &str,
    origin: Option<&str>,
    config: &WsConfig,
    max_frame: usize,
) -> Result<WsStream, TransportError> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(WS_SUBPROTOCOL),
    );
    if let Some(origin) = origin {
        let value = HeaderValue::from_str(origin)
            .map_err(|e| TransportError::Config(format!("Origin {origin:?}: {e}")))?;
        request.headers_mut().insert(header::ORIGIN, value);
    }
    let (stream, _response) = tokio_tungstenite::client_async_with_config(
        request,
        io,
        Some(ws_config(config, max_frame)),
    )
    .await?;
    Ok(stream)
}

/// The WebSocket close status for an imgate code (docs/protocol.md §13 lists the mapping).
///
/// RFC 6455 gives 1001–1011 other meanings than ours, so the status is the nearest RFC code
/// and the close frame's reason names our code: `"FRAME_TOO_LARGE(1002): …"`. Only an
/// orderly close is 1000: a client must be able to tell an error from the status alone.
fn ws_code(code: CloseCode) -> WsCode {
    match code {
        CloseCode::NORMAL => WsCode::Normal,
        CloseCode::PROTOCOL_ERROR
        | CloseCode::UNEXPECTED_FRAME
        | CloseCode::COMPRESSION_ERROR
        | CloseCode::UNSUPPORTED_VERSION => WsCode::Protocol,
        CloseCode::FRAME_TOO_LARGE => WsCode::Size,
        CloseCode::UNSUPPORTED_DATA => WsCode::Unsupported,
        CloseCode::RATE_LIMITED
        | CloseCode::CONNECTION_LIMIT
        | CloseCode::SLOW_CONSUMER
        | CloseCode::OVERLOADED => WsCode::Again,
        CloseCode::GOING_AWAY => WsCode::Away,
        CloseCode::INTERNAL => WsCode::Error,
        // Time-outs, authentication, take-over, kick, and codes of later versions.
        _ => WsCode::Policy,
    }
}

/// A close frame for `code`: its status ([`ws_code`]) and `"NAME(code): reason"`.
pub(crate) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    let ws_code = ws_code(code);
    let mut text = format!("{code}: {reason}");
    // A close frame's reason is at most 123 bytes.
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    CloseFrame {
        code: ws_code,
        reason: text.into(),
    }
}

/// What a received close frame means for `recv`: a normal close is end of stream, anything
/// else an error naming the peer's code.
pub(crate) fn close_from_frame(
    frame: Option<&CloseFrame>,
) -> Result<Option<Frame>, TransportError> {
    let Some(frame) = frame else {
        return Ok(None);
    };
    if frame.code == WsCode::Normal {
        return Ok(None);
    }
    let reason = frame.reason.as_str();
    let code = parse_code(reason).unwrap_or(match frame.code {
        WsCode::Size => CloseCode::FRAME_TOO_LARGE,
        WsCode::Unsupported => CloseCode::UNSUPPORTED_DATA,
        WsCode::Away => CloseCode::GOING_AWAY,
        WsCode::Error => CloseCode::INTERNAL,
        WsCode::Again => CloseCode::OVERLOADED,
        _ => CloseCode::PROTOCOL_ERROR,
    });
    Err(TransportError::ClosedByPeer {
        code,
        reason: reason.to_owned(),
    })
}

/// Reads `1002` out of `"FRAME_TOO_LARGE(1002): …"`.
fn parse_code(reason: &str) -> Option<CloseCode> {
    let open = reason.find('(')?;
    let close = reason[open..].find(')')? + open;
    reason[open + 1..close].parse().ok().map(CloseCode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_frames_round_trip_our_codes() {
        for code in [
            CloseCode::UNSUPPORTED_DATA,
            CloseCode::FRAME_TOO_LARGE,
            CloseCode::KICKED,
        ] {
            let frame = close_frame(code, &"x".repeat(500));
            assert!(frame.reason.len() <= 123);
            match close_from_frame(Some(&frame)) {
                Err(TransportError::ClosedByPeer { code: got, .. }) => assert_eq!(got, code),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(
            close_from_frame(Some(&close_frame(CloseCode::NORMAL, ""))),
            Ok(None)
        ));
        for &code in CloseCode::ALL {
            let status = close_frame(code, "").code;
            assert_eq!(
                status == WsCode::Normal,
                code == CloseCode::NORMAL,
                "{code}"
            );
        }
    }
}
