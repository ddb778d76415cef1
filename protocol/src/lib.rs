//! The Veche client protocol: every frame a client and a node exchange, and the codec that
//! turns them into bytes.
//!
//! This crate does no networking. It is shared by the node, the client SDK and the tests so
//! that each protocol type is defined exactly once. The format is documented for non-Rust
//! clients in `docs/protocol.md`.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of CBOR (RFC 8949).
//! The length is checked against the receiver's limit *before* any buffer is allocated.

#![warn(missing_docs)]

pub mod admin;
pub mod close;
pub mod discussions;
pub mod files;
pub mod frame;
/// Identifiers that cross the wire (defined in the base crate).
pub use veche_base::ids;
mod messages;
pub mod presence;

pub use messages::{
    ClientFrame, DirectoryEntry, ErrorBody, ErrorCode, Event, MAX_PREFERENCES_BYTES, Reply,
    Request, ServerFrame, SessionInfo, UserInfo,
};
pub use veche_base::Timestamp;

/// The ALPN protocol id a client must offer in the TLS handshake.
pub const ALPN: &[u8] = b"veche/1";

/// Protocol versions this build speaks, oldest first.
pub const PROTOCOL_VERSIONS: &[u16] = &[1];

/// Picks the highest version both sides support, if any.
pub fn negotiate_version(offered: &[u16]) -> Option<u16> {
    PROTOCOL_VERSIONS
        .iter()
        .rev()
        .find(|v| offered.contains(v))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_highest_common_version() {
        assert_eq!(negotiate_version(&[1, 7]), Some(1));
        assert_eq!(negotiate_version(&[2, 3]), None);
        assert_eq!(negotiate_version(&[]), None);
    }
}
