//! What bots are told about discussions, as `plugin_inbox` keeps it: messages and clicks on
//! their buttons. The sequencer writes these in the transaction of their cause; the plugin
//! host reads them back and delivers them. A leaf: data and its JSON form only.

use serde::{Deserialize, Serialize};
use veche_protocol::discussions::ObjectRef;

/// A message as a bot's inbox keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BotMessage {
    pub id: String,
    pub discussion: String,
    pub object: Option<ObjectRef>,
    pub author: String,
    pub text: String,
    pub mentions: Vec<String>,
    pub reply_to: Option<String>,
    pub sent_at: i64,
}

impl BotMessage {
    /// The inbox payload for this message (`{"type": "message", …}`).
    pub fn payload(&self) -> String {
        serde_json::to_string(&Tagged::Message(self)).unwrap_or_default()
    }
}

/// A click as a bot's inbox keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Click {
    pub message: String,
    pub discussion: String,
    pub object: Option<ObjectRef>,
    pub action: String,
    pub user: String,
    pub data: Option<String>,
}

/// The inbox's tagged form, as the plugin host reads it back.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged<'a> {
    Message(&'a BotMessage),
}
