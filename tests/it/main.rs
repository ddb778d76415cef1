//! Veche integration tests: one binary, real nodes on loopback, real QUIC, real SQLite files.

mod accounts;
mod apps;
mod bench;
mod cli;
mod cli_actions;
mod client;
mod discussions;
mod embed;
mod federation;
mod files;
#[path = "../benches/generated.rs"]
mod generated;
mod metrics;
mod outbox;
mod plugins;
mod presence;
mod protocol;
mod push;
mod search;
mod support;
mod tui;
mod web;
