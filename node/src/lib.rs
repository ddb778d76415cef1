//! The Veche node: a self-hosted messaging node for companies that run on business software.
//!
//! The binary `veche` is a thin shell over [`cli::run`]. [`RunningNode::start`] is the entry
//! point for embedding a node (tests do this through `test_utils`).

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod accounts;
mod admin_socket;
mod apps;
pub mod cli;
pub mod config;
pub mod data_dir;
mod errors;
mod federation;
mod files;
mod gateway;
mod identity;
pub mod logging;
mod metrics;
mod node;
mod ops;
mod outbound;
mod plugin_new;
mod plugins;
mod push;
mod search;
mod server;
mod services;
mod throttle;
pub mod tls;
mod web;

#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;

pub use admin_socket::AdminSocketError;
pub use node::{RunningNode, StartError, StartInfo};
pub use services::AdminError;
