//! The resume secret: proves that a resuming client owns the session.

use std::fmt;

/// 128 random bits handed to the client in `Welcome`, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct ResumeSecret([u8; 16]);

impl ResumeSecret {
    /// Wraps bytes from a cryptographically secure source.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (for the session store).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The bytes, for `Welcome.resume_secret`.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::copy_from_slice(&self.0)
    }

    /// Constant-time comparison, so timing does not leak how much of a guess was right.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        candidate.len() == self.0.len()
            && self
                .0
                .iter()
                .zip(candidate)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

impl fmt::Debug for ResumeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeSecret(..)")
    }
}
