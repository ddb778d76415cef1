//! `veche-bench`: a load generator that drives a running Veche node from outside, over QUIC,
//! as real clients do, and measures it: stored messages a second, delivery latency, the
//! node's CPU per message and memory (from `/proc` when the node runs on this machine), and
//! its own CPU beside the node's, so that a run bounded by the generator says so.
//!
//! Users are created through the node's admin socket (or an administrator's account). Each
//! workload is a function of this library, so tests can run one against a real node.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod fsync;
pub mod idle;
pub mod logins;
pub mod measure;
pub mod mixed;
pub mod procstat;
pub mod report;
pub mod room;
pub mod search;
pub mod stats;
pub mod target;
pub mod workload;

pub use idle::{IdleParams, idle};
pub use logins::{LoginParams, logins};
pub use mixed::{MixedParams, mixed};
pub use report::Report;
pub use room::{RoomOutcome, RoomParams, room};
pub use search::{SearchParams, search};
pub use target::{AdminAccess, SetupError, Target};
pub use workload::WorkloadError;
