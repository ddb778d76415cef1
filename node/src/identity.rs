//! The node's ed25519 identity key. Federation derives the node id and the libp2p identity
//! from it; it is created on the first start and never changes by itself.

use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};

use crate::data_dir::write_private;

/// Why the identity key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity key {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is not a PKCS#8 ed25519 key.
    #[error("identity key {path} is not a PKCS#8 PEM ed25519 key: {message}")]
    Invalid {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The QUIC endpoint's keys that must survive a restart (see [`NodeIdentity::quic_keys`]).
pub(crate) struct QuicKeys {
    /// Signs stateless resets.
    pub(crate) reset: ring::hmac::Key,
    /// Keys the connection ids, so that the node recognises its earlier ones.
    pub(crate) connection_id: u64,
}

impl std::fmt::Debug for QuicKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicKeys").finish_non_exhaustive()
    }
}

/// The node's signing key.
pub(crate) struct NodeIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Loads the key at `path`, or creates one (mode 0600) if the file does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, IdentityError> {
        let shown = path.display().to_string();
        let io = |source| IdentityError::Io {
            path: shown.clone(),
            source,
        };
        if path.exists() {
            let pem = std::fs::read_to_string(path).map_err(io)?;
            let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| IdentityError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
            return Ok(Self { key });
        }
        let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| IdentityError::Invalid {
                path: shown.clone(),
                message: e.to_string(),
            })?;
        write_private(path, pem.as_bytes()).map_err(io)?;
        Ok(Self { key })
    }

    /// Loads the key at `path` if there is one, else makes a throwaway key (not saved).
    pub(crate) fn load_or_throwaway(path: &Path) -> Result<Self, IdentityError> {
        if path.exists() {
            return Self::load_or_create(path);
        }
        Ok(Self {
            key: SigningKey::from_bytes(&rand::random::<[u8; 32]>()),
        })
    }

    /// The signing key, for signing what the node sends (webhook requests).
    pub(crate) fn signing_key(&self) -> SigningKey {
        self.key.clone()
    }

    /// The keys of QUIC stateless resets and connection ids, derived from the identity key so
    /// that they stay the same across restarts: a node started again after a crash takes a
    /// packet of a connection it no longer knows for one of its own (the connection id checks
    /// out) and answers with a reset the client recognises, so the client learns at once that
    /// its connection is gone instead of waiting for the idle timeout.
    pub(crate) fn quic_keys(&self) -> QuicKeys {
        let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key.to_bytes());
        let reset = ring::hmac::sign(&secret, b"veche quic stateless reset key v1");
        let cid = ring::hmac::sign(&secret, b"veche quic connection id key v1");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&cid.as_ref()[..8]);
        QuicKeys {
            reset: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset.as_ref()),
            connection_id: u64::from_le_bytes(cid_key),
        }
    }

    /// The public key, hex-encoded.
    pub(crate) fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }
}
