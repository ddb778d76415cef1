//! QUIC application close codes the node uses when it ends a connection.
//!
//! The close reason bytes carry a short human-readable text; the code is what programs match.

/// Normal close (client logout, client went away).
pub const NORMAL: u32 = 0;
/// The peer sent a frame that is not valid CBOR or not a known frame.
pub const MALFORMED_FRAME: u32 = 1;
/// The peer announced a frame larger than the receiver's limit.
pub const FRAME_TOO_LARGE: u32 = 2;
/// No protocol version in common.
pub const UNSUPPORTED_VERSION: u32 = 3;
/// The session of this connection was revoked, logged out elsewhere, or the user was locked.
pub const SESSION_REVOKED: u32 = 4;
/// The node is shutting down.
pub const SHUTTING_DOWN: u32 = 5;
/// The client did not complete the handshake or authenticate in time.
pub const AUTH_TIMEOUT: u32 = 6;
/// The peer broke the stream discipline (wrong stream, reset, ALPN missing).
pub const PROTOCOL_VIOLATION: u32 = 8;
/// The client read its events too slowly; reconnect and `sync` from the cursors.
pub const EVENTS_LAGGED: u32 = 9;
/// A stream code, not a connection code: the node reset a transfer stream because the
/// transfer failed after its bytes started (a download whose stored content failed its hash
/// check). The client discards what it received.
pub const TRANSFER_FAILED: u32 = 10;

/// A short name for a close code, for logs and error messages.
pub fn describe(code: u64) -> &'static str {
    match code {
        0 => "normal close",
        1 => "malformed frame",
        2 => "frame too large",
        3 => "unsupported protocol version",
        4 => "session revoked",
        5 => "node shutting down",
        6 => "authentication timeout",
        8 => "protocol violation",
        9 => "events lagged; resync",
        10 => "transfer failed",
        _ => "unknown close code",
    }
}
