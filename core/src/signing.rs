//! Ed25519 over exact bytes, with a domain-separation prefix per kind of
//! message so that a signature on one kind can never be passed off as another.
//! Verification uses `verify_strict` (no malleable or small-order keys).

use crate::hash::Sha256;
use ed25519_dalek::{Signer as _, SigningKey as DalekSigningKey, VerifyingKey};
use std::fmt;
use std::path::Path;

/// What is being signed; each kind has its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// A node's report: prefix `meldnet.v1.report\0`.
    Report,
    /// The hub's routing decision: prefix `meldnet.v1.decision\0`.
    Decision,
}

impl Context {
    /// The prefix signed before the message bytes.
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Context::Report => b"meldnet.v1.report\0",
            Context::Decision => b"meldnet.v1.decision\0",
        }
    }

    /// The exact bytes that are signed: prefix then message.
    pub fn signed_bytes(self, message: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.prefix().len() + message.len());
        v.extend_from_slice(self.prefix());
        v.extend_from_slice(message);
        v
    }
}

/// Errors of key handling and verification.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Not 64 hex digits of a 32-byte key.
    #[error("{what}: expected 64 hex digits of a 32-byte Ed25519 key")]
    KeyFormat {
        /// Which key.
        what: String,
    },
    /// The signature is not 64 bytes.
    #[error("expected a 64-byte signature, got {0} bytes")]
    SignatureLength(usize),
    /// The signature does not verify.
    #[error("signature does not verify")]
    BadSignature,
}

/// Short id of a public key: the first 8 bytes of its SHA-256, as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The id of `key`.
    pub fn of(key: &VerifyingKey) -> Self {
        let d = Sha256::of(key.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.0[..8]);
        KeyId(id)
    }

    /// Parses 16 lower-case hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut id = [0u8; 8];
        hex::decode_to_slice(s, &mut id).ok()?;
        Some(KeyId(id))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A public key with its id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
}

impl PublicKey {
    /// Wraps a verifying key.
    pub fn new(key: VerifyingKey) -> Self {
        PublicKey {
            id: KeyId::of(&key),
            key,
        }
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str, what: &str) -> Result<Self, SigningError> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| SigningError::KeyFormat {
            what: what.to_string(),
        })?;
        VerifyingKey::from_bytes(&b)
            .map(PublicKey::new)
            .map_err(|_| SigningError::KeyFormat {
                what: what.to_string(),
            })
    }

    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The dalek key, for batch verification.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Verifies `signature` over `context` + `message`, strictly.
    pub fn verify(
        &self,
        context: Context,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SigningError> {
        let sig = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| SigningError::SignatureLength(signature.len()))?;
        self.key
            .verify_strict(&context.signed_bytes(message), &sig)
            .map_err(|_| SigningError::BadSignature)
    }
}

/// A private signing key with its id. Never leaves the party that owns it.
pub struct SigningKey {
    key: DalekSigningKey,
    public: PublicKey,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_dalek(DalekSigningKey::generate(&mut rand::rngs::OsRng))
    }

    fn from_dalek(key: DalekSigningKey) -> Self {
        SigningKey {
            public: PublicKey::new(key.verifying_key()),
            key,
        }
    }

    /// Reads a key file: the 32-byte seed as 64 hex digits.
    pub fn load(path: &Path) -> Result<Self, SigningError> {
        let text = std::fs::read_to_string(path).map_err(|source| SigningError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut seed = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| SigningError::KeyFormat {
            what: path.display().to_string(),
        })?;
        Ok(Self::from_dalek(DalekSigningKey::from_bytes(&seed)))
    }

    /// The seed as 64 hex digits, the content of a key file.
    pub fn to_file_text(&self) -> String {
        format!("{}\n", hex::encode(self.key.to_bytes()))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Signs `context` + `message`.
    pub fn sign(&self, context: Context, message: &[u8]) -> [u8; 64] {
        self.key.sign(&context.signed_bytes(message)).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_do_not_cross() {
        let k = SigningKey::generate();
        let sig = k.sign(Context::Report, b"hello");
        k.public().verify(Context::Report, b"hello", &sig).unwrap();
        assert!(k
            .public()
            .verify(Context::Decision, b"hello", &sig)
            .is_err());
        assert!(k.public().verify(Context::Report, b"hellO", &sig).is_err());
        assert!(k
            .public()
            .verify(Context::Report, b"hello", &sig[..63])
            .is_err());
    }

    #[test]
    fn key_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let k = SigningKey::generate();
        let p = dir.path().join("k");
        std::fs::write(&p, k.to_file_text()).unwrap();
        let back = SigningKey::load(&p).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(
            KeyId::parse(&k.public().id().to_string()),
            Some(k.public().id())
        );
    }
}
