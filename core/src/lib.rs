//! The domain of a Veche node, with no transport: discussions and their sequencer (the only
//! writer), authorization, the file policy, presence and the live registry. The node
//! (`veche-node`) puts transports, the plugin host, search and push on top; where the domain
//! must reach up, it owns a small trait the node implements.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod directory;
pub mod discussions;
pub mod file_policy;
pub mod inbox;
pub mod live;
