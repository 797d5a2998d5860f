//! What of a client's upstream traffic reaches a backend: everything but push registrations,
//! which the gateway's push policy takes, so a backend has no variant to refuse.

use bytes::Bytes;

use crate::ids::RoomId;
use crate::offline::PushRegistration;
use crate::session::{Upstream, UpstreamTarget};

/// An upstream request for [`Backend::on_upstream`](super::Backend::on_upstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamRequest {
    /// A message.
    Message {
        /// Destination.
        to: UpstreamTarget,
        /// Opaque payload.
        payload: Bytes,
    },
    /// Join a room.
    JoinRoom(RoomId),
    /// Leave a room.
    LeaveRoom(RoomId),
}

/// The session's request, split where the gateway routes it: a push registration is the
/// error, for the push policy; everything else is the backend's.
impl TryFrom<Upstream> for UpstreamRequest {
    type Error = PushRegistration;

    fn try_from(request: Upstream) -> Result<Self, PushRegistration> {
        match request {
            Upstream::Message { to, payload } => Ok(Self::Message { to, payload }),
            Upstream::JoinRoom(room) => Ok(Self::JoinRoom(room)),
            Upstream::LeaveRoom(room) => Ok(Self::LeaveRoom(room)),
            Upstream::RegisterPush {
                provider,
                token,
                topic,
                sandbox,
            } => Err(PushRegistration {
                provider,
                token,
                topic,
                sandbox,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_push_registrations_stay_with_the_gateway() {
        let message = Upstream::Message {
            to: UpstreamTarget::Backend,
            payload: Bytes::from_static(b"hi"),
        };
        assert_eq!(
            UpstreamRequest::try_from(message),
            Ok(UpstreamRequest::Message {
                to: UpstreamTarget::Backend,
                payload: Bytes::from_static(b"hi"),
            })
        );
        let room = RoomId::from("lobby");
        assert_eq!(
            UpstreamRequest::try_from(Upstream::LeaveRoom(room.clone())),
            Ok(UpstreamRequest::LeaveRoom(room))
        );
        let register = Upstream::RegisterPush {
            provider: imgate_codec::PushProvider::Apns,
            token: "t".into(),
            topic: "app".into(),
            sandbox: true,
        };
        let registration = UpstreamRequest::try_from(register).expect_err("gateway's");
        assert_eq!(
            (registration.token.as_str(), registration.sandbox),
            ("t", true)
        );
    }
}
