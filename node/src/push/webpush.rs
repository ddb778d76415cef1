//! Web Push (RFC 8030) with payloads encrypted to the browser's subscription keys (RFC 8291,
//! `aes128gcm`) and signed with the node's VAPID key (RFC 8292), built by `web-push-native`
//! and sent with the node's own HTTP client.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use web_push_native::jwt_simple::algorithms::{ECDSAP256PublicKeyLike, ES256KeyPair};
use web_push_native::{Auth, WebPushBuilder};

use crate::data_dir::write_private;

/// Why the VAPID key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum VapidError {
    /// Reading or writing the key file failed.
    #[error("VAPID key {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The key file is not a PKCS#8 P-256 key.
    #[error("VAPID key {path} is not a PKCS#8 PEM P-256 key")]
    Invalid {
        /// The key file.
        path: String,
    },
}

/// The node's VAPID key.
pub(crate) struct Vapid {
    key: ES256KeyPair,
    /// Uncompressed public point, base64url: the browser's `applicationServerKey`.
    public: String,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Vapid {
    /// Loads the key at `path`, or creates one (mode 0600) if there is none.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, VapidError> {
        let shown = path.display().to_string();
        let key = if path.exists() {
            let pem = std::fs::read_to_string(path).map_err(|source| VapidError::Io {
                path: shown.clone(),
                source,
            })?;
            ES256KeyPair::from_pem(&pem).map_err(|_| VapidError::Invalid {
                path: shown.clone(),
            })?
        } else {
            let key = ES256KeyPair::generate();
            let pem = key.to_pem().map_err(|_| VapidError::Invalid {
                path: shown.clone(),
            })?;
            write_private(path, pem.as_bytes()).map_err(|source| VapidError::Io {
                path: shown.clone(),
                source,
            })?;
            key
        };
        Ok(Self::from_key(key))
    }

    /// A key that is not kept (offline admin commands push nothing).
    pub(crate) fn throwaway() -> Self {
        Self::from_key(ES256KeyPair::generate())
    }

    fn from_key(key: ES256KeyPair) -> Self {
        let public = URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
        Self { key, public }
    }

    /// The public key browsers subscribe with.
    pub(crate) fn public_key(&self) -> &str {
        &self.public
    }
}

/// A subscription's keys, checked.
#[derive(Debug, Clone)]
pub(crate) struct Subscription {
    pub(crate) endpoint: http::Uri,
    pub(crate) p256dh: p256::PublicKey,
    pub(crate) auth: Auth,
}

/// Which part of a subscription is wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubscriptionError {
    #[error("endpoint is not a URL")]
    Endpoint,
    #[error("p256dh is not a base64url P-256 public key")]
    Key,
    #[error("auth is not 16 bytes of base64url")]
    Auth,
}

/// Parses a subscription as a browser gives it; the error says which part is wrong.
pub(crate) fn subscription(
    endpoint: &str,
    p256dh: &str,
    auth: &str,
) -> Result<Subscription, SubscriptionError> {
    let endpoint: http::Uri = endpoint.parse().map_err(|_| SubscriptionError::Endpoint)?;
    let key = URL_SAFE_NO_PAD
        .decode(p256dh.trim_end_matches('='))
        .ok()
        .and_then(|b| p256::PublicKey::from_sec1_bytes(&b).ok())
        .ok_or(SubscriptionError::Key)?;
    let auth_bytes: [u8; 16] = URL_SAFE_NO_PAD
        .decode(auth.trim_end_matches('='))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SubscriptionError::Auth)?;
    Ok(Subscription {
        endpoint,
        p256dh: key,
        auth: Auth::from(auth_bytes),
    })
}

/// The encrypted, signed request for one notification.
pub(crate) fn request(
    vapid: &Vapid,
    contact: &str,
    sub: Subscription,
    ttl: Duration,
    payload: &[u8],
) -> Result<http::Request<Vec<u8>>, web_push_native::Error> {
    WebPushBuilder::new(sub.endpoint, sub.p256dh, sub.auth)
        .with_valid_duration(ttl)
        .with_vapid(&vapid.key, contact)
        .build(payload.to_vec())
}
