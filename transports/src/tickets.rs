//! TLS session-ticket keys shared by every gateway node, so a phone that reconnects through the
//! load balancer to another node still resumes its TLS session.
//!
//! Without them each process encrypts its tickets with keys of its own (rustls' rotating
//! `Ticketer`): resumption works only against the node that issued the ticket. With them, the
//! first key encrypts new tickets and every key decrypts, so keys rotate without a flag day,
//! in two phases: add the new key behind the current one on every node, then move it in front;
//! drop the old one [`TICKET_LIFETIME_SECS`] after it stopped sealing.
//!
//! A ticket is `key id (16 bytes) ‖ issued at (8, Unix seconds) ‖ nonce (12) ‖
//! ChaCha20-Poly1305(session state) ‖ tag (16)`, the key id and issue time as associated data.
//! A ticket older than [`TICKET_LIFETIME_SECS`] is refused here: rustls itself does not check a
//! ticket's age, and with keys that live as long as the operator keeps them, only this bounds
//! how long a stolen ticket resumes. A key file is exactly 48 random bytes (the id, then the
//! 256-bit key): `head -c 48 /dev/urandom > ticket.key`.
//!
//! Rotate keys regularly (daily is common): a TLS 1.2 ticket carries the session's master
//! secret, so whoever obtains a key can decrypt recorded TLS 1.2 sessions whose tickets it
//! sealed (TLS 1.3 resumption adds a fresh key exchange, so this does not extend to it). Nonces
//! are random, which is sound for far more tickets than a key seals in a day.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::TransportError;

/// How long a ticket resumes: the hint sent with it, and the age past which it is refused.
/// Keep a retired key at least this long.
pub const TICKET_LIFETIME_SECS: u32 = 12 * 3600;

/// Tolerated clock difference between the node that sealed a ticket and the one opening it.
const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// Bytes in a key file: a 16-byte key id and a 32-byte ChaCha20-Poly1305 key.
pub const TICKET_KEY_LEN: usize = KEY_ID_LEN + 32;

const KEY_ID_LEN: usize = 16;
const ISSUED_LEN: usize = 8;
const HEADER_LEN: usize = KEY_ID_LEN + ISSUED_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;

/// Session-ticket keys: the first seals new tickets, all of them open tickets (cheap to
/// clone; clones share the keys, so [`TicketKeys::reload`] changes them for every listener).
#[derive(Clone)]
pub struct TicketKeys(Arc<SharedTicketer>);

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key counts and file names only, never key material.
        f.debug_struct("TicketKeys")
            .field("keys", &self.0.current().len())
            .field(
                "files",
                &*self.0.files.read().unwrap_or_else(PoisonError::into_inner),
            )
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// Keys from raw 48-byte key files, the sealing key first. [`TicketKeys::reload`] reads
    /// the same files again.
    pub fn from_files(paths: &[PathBuf]) -> Result<Self, TransportError> {
        let keys = read_key_files(paths)?;
        Ok(Self::with_keys(keys, paths.to_vec()))
    }

    /// Keys from raw 48-byte values, the sealing key first.
    pub fn from_bytes(keys: &[&[u8]]) -> Result<Self, TransportError> {
        let named: Vec<(&Path, &[u8])> = keys.iter().map(|k| (Path::new("<bytes>"), *k)).collect();
        Ok(Self::with_keys(build(&named)?, Vec::new()))
    }

    /// Reads the key files again and uses them from now on (on SIGHUP, to rotate keys without
    /// a restart). On an error the keys in use stay. Returns how many keys are loaded.
    pub fn reload(&self) -> Result<usize, TransportError> {
        let files = self
            .0
            .files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if files.is_empty() {
            return Err(TransportError::Config(
                "ticket keys: not loaded from files, nothing to reload".into(),
            ));
        }
        self.reload_from(&files)
    }

    /// Reads `paths` (the sealing key first) and uses them, and those files, from now on: a
    /// changed list in the config takes effect. On an error the keys and files in use stay.
    pub fn reload_from(&self, paths: &[PathBuf]) -> Result<usize, TransportError> {
        let keys = read_key_files(paths)?;
        let count = keys.len();
        *self.0.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
        *self.0.files.write().unwrap_or_else(PoisonError::into_inner) = paths.to_vec();
        Ok(count)
    }

    fn with_keys(keys: Vec<TicketKey>, files: Vec<PathBuf>) -> Self {
        Self(Arc::new(SharedTicketer {
            keys: RwLock::new(Arc::new(keys)),
            files: RwLock::new(files),
            random: SystemRandom::new(),
            now: unix_now,
        }))
    }

    /// The same keys read against another clock (tests of ticket age).
    #[cfg(test)]
    fn with_clock(self, now: fn() -> u64) -> Self {
        let ticketer = Arc::try_unwrap(self.0).unwrap_or_else(|_| unreachable!("fresh keys"));
        Self(Arc::new(SharedTicketer { now, ..ticketer }))
    }

    /// The ticketer for a rustls server configuration.
    pub(crate) fn ticketer(&self) -> Arc<dyn ProducesTickets> {
        Arc::clone(&self.0) as Arc<dyn ProducesTickets>
    }
}

fn read_key_files(paths: &[PathBuf]) -> Result<Vec<TicketKey>, TransportError> {
    let keys = paths
        .iter()
        .map(|path| {
            std::fs::read(path).map_err(|e| {
                TransportError::Config(format!("ticket key file {}: {e}", path.display()))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let named: Vec<(&Path, &[u8])> = paths
        .iter()
        .map(PathBuf::as_path)
        .zip(keys.iter().map(Vec::as_slice))
        .collect();
    build(&named)
}

fn build(keys: &[(&Path, &[u8])]) -> Result<Vec<TicketKey>, TransportError> {
    if keys.is_empty() {
        return Err(TransportError::Config("ticket keys: none given".into()));
    }
    let mut built = Vec::with_capacity(keys.len());
    for (origin, bytes) in keys {
        if bytes.len() != TICKET_KEY_LEN {
            return Err(TransportError::Config(format!(
                "ticket key {}: {} bytes, expected exactly {TICKET_KEY_LEN} random bytes \
                 (head -c {TICKET_KEY_LEN} /dev/urandom)",
                origin.display(),
                bytes.len()
            )));
        }
        let (id, key) = bytes.split_at(KEY_ID_LEN);
        let mut key_id = [0; KEY_ID_LEN];
        key_id.copy_from_slice(id);
        if built.iter().any(|k: &TicketKey| k.id == key_id) {
            return Err(TransportError::Config(format!(
                "ticket key {}: the same key id appears twice",
                origin.display()
            )));
        }
        let aead = UnboundKey::new(&CHACHA20_POLY1305, key)
            .map_err(|_| TransportError::Config("ticket key: unusable key".into()))?;
        built.push(TicketKey {
            id: key_id,
            aead: LessSafeKey::new(aead),
        });
    }
    Ok(built)
}

struct TicketKey {
    id: [u8; KEY_ID_LEN],
    aead: LessSafeKey,
}

struct SharedTicketer {
    /// Swapped whole by a reload; handshakes take a reference for the one ticket they seal
    /// or open.
    keys: RwLock<Arc<Vec<TicketKey>>>,
    /// Where the keys were read from (empty: given as bytes).
    files: RwLock<Vec<PathBuf>>,
    random: SystemRandom,
    /// Unix seconds (a wall clock: tickets travel between nodes).
    now: fn() -> u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

impl SharedTicketer {
    fn current(&self) -> Arc<Vec<TicketKey>> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for SharedTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTicketer")
            .field("keys", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl ProducesTickets for SharedTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.current();
        let key = keys.first()?;
        let mut nonce = [0; NONCE_LEN];
        self.random.fill(&mut nonce).ok()?;
        let mut ticket = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&key.id);
        ticket.extend_from_slice(&(self.now)().to_be_bytes());
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let (header, body) = ticket.split_at_mut(HEADER_LEN);
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&header[..KEY_ID_LEN + ISSUED_LEN]),
                body,
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    /// `ticket` comes from the peer: anything short, unknown, forged or expired is `None`.
    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < HEADER_LEN + TAG_LEN {
            return None;
        }
        let (header, sealed) = ticket.split_at(HEADER_LEN);
        let (authenticated, nonce) = header.split_at(KEY_ID_LEN + ISSUED_LEN);
        let (id, issued) = authenticated.split_at(KEY_ID_LEN);
        let keys = self.current();
        let key = keys.iter().find(|k| k.id == id)?;
        let issued = u64::from_be_bytes(issued.try_into().ok()?);
        let now = (self.now)();
        // Checked before opening, but the issue time is authenticated: a forged one fails
        // the tag below.
        if issued > now.saturating_add(MAX_CLOCK_SKEW_SECS)
            || now.saturating_sub(issued) > u64::from(TICKET_LIFETIME_SECS)
        {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain_len = key
            .aead
            .open_in_place(nonce, Aad::from(authenticated), &mut body)
            .ok()?
            .len();
        body.truncate(plain_len);
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests

    use super::*;

    fn key(byte: u8) -> Vec<u8> {
        let mut key = vec![byte; TICKET_KEY_LEN];
        key[0] = byte.wrapping_add(1); // a distinct id per test key
        key
    }

    fn ticketer(keys: &[&[u8]]) -> Arc<dyn ProducesTickets> {
        TicketKeys::from_bytes(keys).unwrap().ticketer()
    }

    #[test]
    fn a_ticket_opens_with_the_key_that_sealed_it() {
        let node = ticketer(&[&key(1)]);
        let ticket = node.encrypt(b"session state").unwrap();
        assert_eq!(node.decrypt(&ticket).unwrap(), b"session state");
        assert_ne!(
            &ticket[HEADER_LEN..][..13],
            b"session state",
            "sealed, not copied"
        );
        // Another node with the same key opens it too: that is the point.
        assert_eq!(
            ticketer(&[&key(1)]).decrypt(&ticket).unwrap(),
            b"session state"
        );
    }

    #[test]
    fn rotation_keeps_old_tickets_until_the_old_key_is_dropped() {
        let old = ticketer(&[&key(1)]);
        let ticket = old.encrypt(b"state").unwrap();
        let rotated = ticketer(&[&key(2), &key(1)]);
        assert_eq!(rotated.decrypt(&ticket).unwrap(), b"state");
        let new_ticket = rotated.encrypt(b"state").unwrap();
        assert!(
            old.decrypt(&new_ticket).is_none(),
            "sealed with the new key"
        );
        assert!(ticketer(&[&key(2)]).decrypt(&ticket).is_none());
    }

    #[test]
    fn forged_truncated_or_foreign_tickets_are_refused() {
        let node = ticketer(&[&key(1)]);
        let ticket = node.encrypt(b"state").unwrap();
        for i in 0..ticket.len() {
            let mut flipped = ticket.clone();
            flipped[i] ^= 0x40;
            assert!(node.decrypt(&flipped).is_none(), "byte {i} flipped");
        }
        for len in 0..ticket.len() {
            assert!(node.decrypt(&ticket[..len]).is_none(), "cut to {len}");
        }
    }

    proptest::proptest! {
        /// Whatever a peer sends as a ticket is refused without a panic, even when it starts
        /// with a valid key id and a fresh issue time.
        #[test]
        fn arbitrary_tickets_are_refused(
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
            with_header in proptest::prelude::any::<bool>(),
        ) {
            let node = ticketer(&[&key(1)]);
            let mut ticket = Vec::new();
            if with_header {
                ticket.extend_from_slice(&key(1)[..KEY_ID_LEN]);
                ticket.extend_from_slice(&unix_now().to_be_bytes());
            }
            ticket.extend_from_slice(&junk);
            proptest::prop_assert!(node.decrypt(&ticket).is_none());
        }

        /// Any session state seals and opens unchanged.
        #[test]
        fn any_state_round_trips(
            state in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
        ) {
            let node = ticketer(&[&key(1)]);
            let ticket = node.encrypt(&state).unwrap();
            proptest::prop_assert_eq!(node.decrypt(&ticket), Some(state));
        }
    }

    const ISSUED: u64 = 1_800_000_000;
    const _: () = assert!(TICKET_LIFETIME_SECS == 12 * 3600);

    fn keys_at(now: fn() -> u64) -> Arc<dyn ProducesTickets> {
        TicketKeys::from_bytes(&[&key(1)])
            .unwrap()
            .with_clock(now)
            .ticketer()
    }

    #[test]
    fn tickets_expire_after_their_lifetime_and_tolerate_some_skew() {
        let ticket = keys_at(|| ISSUED).encrypt(b"state").unwrap();
        let lifetime = u64::from(TICKET_LIFETIME_SECS);
        assert!(
            keys_at(|| ISSUED + 12 * 3600).decrypt(&ticket).is_some(),
            "at the limit"
        );
        assert!(
            keys_at(|| ISSUED + 12 * 3600 + 1)
                .decrypt(&ticket)
                .is_none(),
            "expired"
        );
        assert_eq!(lifetime, 12 * 3600);
        assert!(
            keys_at(|| ISSUED - 300).decrypt(&ticket).is_some(),
            "opener's clock behind"
        );
        assert!(
            keys_at(|| ISSUED - 301).decrypt(&ticket).is_none(),
            "from the future"
        );
        // The issue time is authenticated: moving it forward breaks the tag.
        let mut younger = ticket.clone();
        younger[KEY_ID_LEN..KEY_ID_LEN + ISSUED_LEN]
            .copy_from_slice(&(ISSUED + 3600).to_be_bytes());
        assert!(keys_at(|| ISSUED + 3600).decrypt(&younger).is_none());
    }

    #[test]
    fn each_ticket_gets_a_fresh_nonce() {
        let node = ticketer(&[&key(1)]);
        let a = node.encrypt(b"state").unwrap();
        let b = node.encrypt(b"state").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn reload_rotates_every_clone_and_keeps_the_keys_on_a_bad_file() {
        let dir = std::env::temp_dir().join(format!("imgate-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (first, second) = (dir.join("first.key"), dir.join("second.key"));
        std::fs::write(&first, key(1)).unwrap();
        std::fs::write(&second, key(2)).unwrap();
        let keys = TicketKeys::from_files(&[first.clone(), second.clone()]).unwrap();
        let listener = keys.clone().ticketer(); // as a listener holds it
        let old_ticket = listener.encrypt(b"state").unwrap();

        // Rotate: a new key first, the old one second.
        std::fs::write(&first, key(3)).unwrap();
        std::fs::write(&second, key(1)).unwrap();
        assert_eq!(keys.reload().unwrap(), 2);
        let new_ticket = listener.encrypt(b"state").unwrap();
        assert!(
            ticketer(&[&key(1)]).decrypt(&new_ticket).is_none(),
            "sealed with the new first key"
        );
        assert!(ticketer(&[&key(3)]).decrypt(&new_ticket).is_some());
        assert!(
            listener.decrypt(&old_ticket).is_some(),
            "old key still opens"
        );

        // A broken file: the reload fails, the keys in use stay.
        std::fs::write(&first, [0u8; 5]).unwrap();
        assert!(keys.reload().unwrap_err().to_string().contains("first.key"));
        assert!(listener.decrypt(&new_ticket).is_some());
        assert!(
            TicketKeys::from_bytes(&[&key(1)])
                .unwrap()
                .reload()
                .is_err()
        );

        // Another list: its files from now on, for later reloads too.
        let third = dir.join("third.key");
        std::fs::write(&third, key(4)).unwrap();
        assert_eq!(keys.reload_from(std::slice::from_ref(&third)).unwrap(), 1);
        assert!(listener.decrypt(&new_ticket).is_none(), "key 3 is gone");
        std::fs::write(&third, key(5)).unwrap();
        assert_eq!(keys.reload().unwrap(), 1);
        let ticket = listener.encrypt(b"state").unwrap();
        assert!(
            ticketer(&[&key(5)]).decrypt(&ticket).is_some(),
            "re-read from third.key"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bad_key_sets_are_refused_with_the_reason() {
        let err = TicketKeys::from_bytes(&[&[0; 32]]).unwrap_err().to_string();
        assert!(err.contains("expected exactly 48"), "{err}");
        assert!(TicketKeys::from_bytes(&[]).is_err());
        let err = TicketKeys::from_bytes(&[&key(1), &key(1)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
        let missing = TicketKeys::from_files(&[PathBuf::from("/nonexistent/ticket.key")])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nonexistent/ticket.key"), "{missing}");
    }
}
