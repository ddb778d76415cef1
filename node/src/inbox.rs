//! What bots are told about discussions, as `plugin_inbox` keeps it: messages and clicks on
//! their buttons. The sequencer writes these in the transaction of their cause; the plugin
//! host reads them back and delivers them. A leaf: data and its JSON form only.

use serde::{Deserialize, Serialize};
use veche_protocol::discussions::ObjectRef;

/// A message as a bot's inbox keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BotMessage {
    pub(crate) id: String,
    pub(crate) discussion: String,
    pub(crate) object: Option<ObjectRef>,
    pub(crate) author: String,
    pub(crate) text: String,
    pub(crate) mentions: Vec<String>,
    pub(crate) reply_to: Option<String>,
    pub(crate) sent_at: i64,
}

impl BotMessage {
    /// The inbox payload for this message (`{"type": "message", …}`).
    pub(crate) fn payload(&self) -> String {
        serde_json::to_string(&Tagged::Message(self)).unwrap_or_default()
    }
}

/// A click as a bot's inbox keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Click {
    pub(crate) message: String,
    pub(crate) discussion: String,
    pub(crate) object: Option<ObjectRef>,
    pub(crate) action: String,
    pub(crate) user: String,
    pub(crate) data: Option<String>,
}

/// The inbox's tagged form, as the plugin host reads it back.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged<'a> {
    Message(&'a BotMessage),
}
