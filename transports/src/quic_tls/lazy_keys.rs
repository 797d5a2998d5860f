//! Packet keys of the next key phase, derived the first time they are used: most
//! connections never update their keys, and each phase's keys cost ~1.2 KB.

use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use quinn::crypto::{CryptoError, PacketKey};
use rustls::quic::Secrets;

/// Properties of the 1-RTT packet keys, the same in every key phase (the cipher suite does
/// not change), so lazily derived keys can answer them before they exist.
#[derive(Clone, Copy)]
pub(super) struct KeyLimits {
    pub(super) tag_len: usize,
    pub(super) confidentiality_limit: u64,
    pub(super) integrity_limit: u64,
}

/// One key phase's secrets, turned into packet keys the first time either direction is used.
pub(super) struct PendingPhase {
    secrets: Secrets,
    limits: KeyLimits,
    /// Boxed: most phases are never derived, and the box keeps them small until they are.
    derived: OnceLock<Box<Derived>>,
}

/// A phase's packet keys and the secrets of the phase after it (rustls derives both in one
/// step and offers no other way to move on).
struct Derived {
    keys: rustls::quic::PacketKeySet,
    following: Secrets,
}

impl PendingPhase {
    pub(super) fn new(secrets: Secrets, limits: KeyLimits) -> Self {
        Self {
            secrets,
            limits,
            derived: OnceLock::new(),
        }
    }

    /// The phase after this one, for when quinn makes this phase current (its keys are needed
    /// from then on, so deriving them here costs nothing extra).
    pub(super) fn following(&self) -> Self {
        Self::new(self.derived().following.clone(), self.limits)
    }

    /// Whether either direction's key has been derived (tests check the laziness).
    #[cfg(test)]
    pub(super) fn is_derived(&self) -> bool {
        self.derived.get().is_some()
    }

    fn derived(&self) -> &Derived {
        self.derived.get_or_init(|| {
            let mut following = self.secrets.clone();
            let keys = following.next_packet_keys();
            Box::new(Derived { keys, following })
        })
    }

    fn keys(&self) -> &rustls::quic::PacketKeySet {
        &self.derived().keys
    }
}

/// A packet key of the next key phase, derived when first used.
pub(super) struct LazyPacketKey {
    pub(super) phase: Arc<PendingPhase>,
    pub(super) local: bool,
}

impl LazyPacketKey {
    fn key(&self) -> &dyn rustls::quic::PacketKey {
        let keys = self.phase.keys();
        if self.local {
            keys.local.as_ref()
        } else {
            keys.remote.as_ref()
        }
    }
}

impl PacketKey for LazyPacketKey {
    fn encrypt(&self, packet: u64, buf: &mut [u8], header_len: usize) {
        let key = self.key();
        let (header, payload_tag) = buf.split_at_mut(header_len);
        let Some(tag_at) = payload_tag.len().checked_sub(key.tag_len()) else {
            // quinn always leaves room for the tag; without it, send nothing readable.
            payload_tag.fill(0);
            tracing::error!("QUIC packet without room for its tag; payload zeroed");
            return;
        };
        let (payload, tag_storage) = payload_tag.split_at_mut(tag_at);
        match key.encrypt_in_place(packet, header, payload) {
            Ok(tag) => tag_storage.copy_from_slice(tag.as_ref()),
            // ring's AEAD seal does not fail for a valid key; fail closed (quinn's own key
            // panics here): the peer drops a packet it cannot authenticate.
            Err(e) => {
                payload_tag.fill(0);
                tracing::error!(error = %e, "QUIC packet encryption failed; payload zeroed");
            }
        }
    }

    fn decrypt(
        &self,
        packet: u64,
        header: &[u8],
        payload: &mut BytesMut,
    ) -> Result<(), CryptoError> {
        let plain_len = self
            .key()
            .decrypt_in_place(packet, header, payload.as_mut())
            .map_err(|_| CryptoError)?
            .len();
        payload.truncate(plain_len);
        Ok(())
    }

    fn tag_len(&self) -> usize {
        self.phase.limits.tag_len
    }

    fn confidentiality_limit(&self) -> u64 {
        self.phase.limits.confidentiality_limit
    }

    fn integrity_limit(&self) -> u64 {
        self.phase.limits.integrity_limit
    }
}
