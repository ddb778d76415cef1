//! Node keys, node ids and domain-separated signatures.
//!
//! One ed25519 key per node: it signs link grants, events and stamps, and it is the node's
//! libp2p identity, so the peer a Noise handshake authenticates is the key a grant names.
//! Every signature covers a domain tag followed by the exact bytes, so a signature made for
//! one purpose (a stamp) can never pass for another (an event).

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// What a signature is for; its tag is signed before the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A link offer or acceptance.
    Grant,
    /// An event, by the node of its author.
    Event,
    /// A home node's sequence stamp.
    Stamp,
    /// A link's revocation or narrowing, by one party.
    LinkNotice,
}

impl Purpose {
    fn tag(self) -> &'static [u8] {
        match self {
            Purpose::Grant => b"veche-fed/v1/grant\0",
            Purpose::Event => b"veche-fed/v1/event\0",
            Purpose::Stamp => b"veche-fed/v1/stamp\0",
            Purpose::LinkNotice => b"veche-fed/v1/link-notice\0",
        }
    }
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not a valid ed25519 point, or a weak one.
    #[error("not a usable ed25519 public key")]
    BadKey,
    /// The signature does not verify (strictly) for these bytes and this purpose.
    #[error("the signature does not verify")]
    Invalid,
}

/// A node's secret key.
pub struct NodeKey {
    signing: SigningKey,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// The key with this 32-byte secret.
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// A new random key.
    pub fn generate() -> Self {
        Self::from_secret(rand::random())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `bytes` for `purpose`.
    pub fn sign(&self, purpose: Purpose, bytes: &[u8]) -> Signature {
        let mut message = Vec::with_capacity(purpose.tag().len() + bytes.len());
        message.extend_from_slice(purpose.tag());
        message.extend_from_slice(bytes);
        Signature(self.signing.sign(&message).to_bytes())
    }

    /// The same key as a libp2p identity.
    #[cfg(feature = "net")]
    pub(crate) fn keypair(&self) -> libp2p::identity::Keypair {
        libp2p::identity::Keypair::ed25519_from_bytes(self.signing.to_bytes())
            .expect("an ed25519 secret is always 32 bytes")
    }
}

/// A node's public key: 32 bytes, CBOR bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.0))
    }
}

impl PublicKey {
    /// The node id derived from this key.
    pub fn node_id(&self) -> NodeId {
        let digest = Sha256::digest(self.0);
        NodeId(
            data_encoding::BASE32_NOPAD
                .encode(&digest[..16])
                .to_ascii_lowercase(),
        )
    }

    /// The libp2p peer id of this key.
    #[cfg(feature = "net")]
    pub fn peer_id(&self) -> Result<libp2p::PeerId, SignatureError> {
        let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&self.0)
            .map_err(|_| SignatureError::BadKey)?;
        Ok(libp2p::identity::PublicKey::from(key).to_peer_id())
    }

    /// Checks a signature made by [`NodeKey::sign`]: strict verification, weak keys refused.
    pub fn verify(
        &self,
        purpose: Purpose,
        bytes: &[u8],
        signature: &Signature,
    ) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        if key.is_weak() {
            return Err(SignatureError::BadKey);
        }
        let mut message = Vec::with_capacity(purpose.tag().len() + bytes.len());
        message.extend_from_slice(purpose.tag());
        message.extend_from_slice(bytes);
        key.verify_strict(
            &message,
            &ed25519_dalek::Signature::from_bytes(&signature.0),
        )
        .map_err(|_| SignatureError::Invalid)
    }
}

/// A signature: 64 bytes, CBOR bytes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

/// A node id: the first 128 bits of the SHA-256 of the node's public key, in lower-case
/// base32 without padding (26 characters). Node names are for people; ids are what links bind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(String);

impl NodeId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SHA-256 digest: event ids, stamp hashes, grant hashes (the base crate's, shared with the
/// node).
pub use veche_base::Hash;

macro_rules! fixed_bytes_serde {
    ($ty:ident, $n:literal, $what:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serde_bytes::Bytes::new(&self.0).serialize(s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = serde_bytes::ByteBuf::deserialize(d)?;
                let array: [u8; $n] = bytes.as_slice().try_into().map_err(|_| {
                    serde::de::Error::custom(concat!($what, " must be ", $n, " bytes"))
                })?;
                Ok($ty(array))
            }
        }
    };
}

fixed_bytes_serde!(PublicKey, 32, "a public key");
fixed_bytes_serde!(Signature, 64, "a signature");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_bound_to_their_purpose_and_bytes() {
        let key = NodeKey::from_secret([7; 32]);
        let sig = key.sign(Purpose::Event, b"hello");
        key.public().verify(Purpose::Event, b"hello", &sig).unwrap();
        assert_eq!(
            key.public().verify(Purpose::Stamp, b"hello", &sig),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            key.public().verify(Purpose::Event, b"hellO", &sig),
            Err(SignatureError::Invalid)
        );
        let other = NodeKey::from_secret([8; 32]);
        assert_eq!(
            other.public().verify(Purpose::Event, b"hello", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn weak_keys_are_refused() {
        // The identity point: a signature of all zeros would "verify" for any message.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let sig = Signature([0; 64]);
        assert_eq!(
            PublicKey(weak).verify(Purpose::Event, b"x", &sig),
            Err(SignatureError::BadKey)
        );
    }

    #[cfg(feature = "net")]
    #[test]
    fn the_libp2p_identity_is_the_node_key() {
        let key = NodeKey::from_secret([9; 32]);
        assert_eq!(
            key.keypair().public().to_peer_id(),
            key.public().peer_id().unwrap()
        );
        assert_eq!(key.public().node_id().as_str().len(), 26);
    }
}
