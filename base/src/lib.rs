//! Veche's base types, shared by the protocol, the federation and the node so that each is
//! defined once: ids with their documented formats (parsed once, at the boundary, into these
//! newtypes), SHA-256 digests, timestamps, and the clock that tests can set.
//!
//! This crate does no IO and depends on nothing of the node.

#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod clock;
mod hash;
pub mod ids;
mod time;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use hash::Hash;
pub use time::Timestamp;
