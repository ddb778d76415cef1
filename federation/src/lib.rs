//! Federation: signed links between Veche nodes.
//!
//! - [`keys`]: the node's ed25519 key (also its libp2p identity), node ids, signatures bound
//!   to their purpose.
//! - [`grant`]: link offers, acceptances and one-sided notices (revoke, narrow).
//! - [`event`]: events signed by their author's node, and the home node's chained stamps.
//! - [`wire`]: what linked nodes say to each other.
//! - [`store`]: what the transport needs from the node's storage; [`memory`] keeps it in memory.
//! - [`link`]: one link as a pure state machine: greeting, stop-and-wait outbox delivery,
//!   backoffs, notices, presence pacing; no IO.
//! - `net` (feature `net`, on by default): the libp2p transport: allowlist, and a task driving
//!   each link's machine.
//!
//! This crate knows nothing of SQL, plugins, search or the client protocol: the node gives it
//! storage through [`store::LinkStore`] and interprets events itself.

pub mod event;
pub mod grant;
pub mod keys;
pub mod link;
pub mod memory;
#[cfg(feature = "net")]
pub mod net;
pub mod store;
pub mod wire;

#[cfg(all(test, feature = "net"))]
mod tests;

#[cfg(feature = "net")]
pub use libp2p::Multiaddr;
