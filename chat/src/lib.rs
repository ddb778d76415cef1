//! The Veche terminal client (`veche chat`) and the scriptable client commands
//! (`veche login`, `discussions`, `send`, `tail`, `history`), built on the client SDK.

#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod cli;
pub mod download;
mod profile;
pub mod tui;
pub mod untrusted;

pub use profile::{Profile, SendKey};
