//! The services layer: what one request needs, on top of every subsystem. [`Services`] holds
//! the node's services; [`user_request`] carries out a user's request (from QUIC or the HTTP
//! gateway) and [`execute`] an administrator's command (from QUIC, the admin socket or the
//! command line). Transports call down into this layer; nothing below calls up into it.

pub(crate) mod admin;
pub(crate) mod embed;
mod user;

use std::sync::Arc;

pub use admin::AdminError;
pub(crate) use admin::{execute, webhook_info};
pub(crate) use user::user_request;

use crate::accounts::Accounts;
use crate::apps::Apps;
use crate::plugins::Plugins;
use veche_core::discussions::Discussions;
use veche_core::live::registry::Registry;

/// What an administrator command needs: the accounts and the live connections.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    pub(crate) accounts: Accounts,
    pub(crate) registry: Arc<Registry>,
    pub(crate) discussions: Discussions,
    /// The message index; a search re-checks every hit with the discussions' `authorize`.
    pub(crate) search: crate::search::Search,
    pub(crate) plugins: Plugins,
    pub(crate) apps: Apps,
    pub(crate) presence: veche_core::live::presence::Presence,
    pub(crate) push: crate::push::Push,
    pub(crate) files: crate::files::Files,
    pub(crate) federation: crate::federation::Federation,
    /// The node's clock.
    pub(crate) clock: veche_base::SharedClock,
    /// Storage, for what has no service of its own (the widget's tokens and sessions).
    pub(crate) store: veche_store::Store,
    /// The node's metric handles (no-ops unless `[metrics] enabled`).
    pub(crate) metrics: crate::metrics::Metrics,
}
