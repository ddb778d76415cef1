//! Presence, typing and push notifications: what clients send to say how present they are and
//! where to be notified, and what the node tells them about others.
//!
//! Presence and typing are ephemeral: they are never part of a discussion's event log and are
//! not replayed by `sync`. After a reconnect, a client receives a fresh presence snapshot of
//! its contacts.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The presence a user chose. `auto` means "available while I am active on some device, away
/// when every device has been idle for a while".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceChoice {
    /// Available or away, from the devices' activity.
    #[default]
    Auto,
    /// Away, whatever the devices report.
    Away,
    /// Do not disturb: shown to others, and no push notifications are sent.
    Dnd,
    /// Shown to others as offline while connected.
    Invisible,
}

impl PresenceChoice {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Away => "away",
            Self::Dnd => "dnd",
            Self::Invisible => "invisible",
        }
    }

    /// Parses the name used on the wire and in storage.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "away" => Some(Self::Away),
            "dnd" => Some(Self::Dnd),
            "invisible" => Some(Self::Invisible),
            _ => None,
        }
    }
}

/// How present a user is, as shown to someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// Connected and active on at least one device.
    Available,
    /// Connected, but every device idle (or away by choice).
    Away,
    /// Do not disturb.
    Dnd,
    /// No connected device (or invisible, to others).
    Offline,
    /// Connected but shown to others as offline; only the user themselves see this.
    Invisible,
    /// A state this client does not know (from a newer node).
    #[serde(other)]
    Unknown,
}

/// One user's presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceInfo {
    /// `login@node`.
    pub user: String,
    /// Their state as shown to the receiver.
    pub state: PresenceState,
    /// The status text they set (empty if none, or if shown as offline).
    #[serde(default)]
    pub status_text: String,
}

/// Which messages of a discussion notify a user who is not at a screen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationLevel {
    /// The default for the discussion's kind: every message in dialogs and followed object
    /// discussions; mentions and replies in groups.
    #[default]
    Default,
    /// Every message.
    All,
    /// Only mentions of the user and replies to their messages.
    Mentions,
    /// Nothing.
    #[serde(rename = "none")]
    Nothing,
}

impl NotificationLevel {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::All => "all",
            Self::Mentions => "mentions",
            Self::Nothing => "none",
        }
    }

    /// Parses the name used on the wire and in storage.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "default" => Some(Self::Default),
            "all" => Some(Self::All),
            "mentions" => Some(Self::Mentions),
            "none" => Some(Self::Nothing),
            _ => None,
        }
    }
}

/// A user's notification setting for one discussion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSetting {
    /// The discussion.
    pub discussion: String,
    /// Its level.
    pub level: NotificationLevel,
    /// Nothing is pushed from this discussion before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until: Option<Timestamp>,
}

/// Where a device wants its push notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PushTarget {
    /// A browser's Web Push subscription (`PushSubscription.toJSON()`): the push service's
    /// endpoint and the subscription's keys, base64url. Payloads are encrypted to these keys
    /// (RFC 8291) and signed with the node's VAPID key (RFC 8292).
    WebPush {
        /// The push service URL (https).
        endpoint: String,
        /// The subscription's P-256 public key.
        p256dh: String,
        /// The subscription's authentication secret.
        auth: String,
    },
    /// A company push gateway the administrator configured (`[push.gateways]`), which
    /// forwards to a mobile platform; the node POSTs signed JSON to it.
    Gateway {
        /// The gateway's name in the node's configuration.
        gateway: String,
        /// What the gateway needs to reach this device (its platform token).
        pushkey: String,
    },
}

/// A registered push endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEndpointInfo {
    /// Its id.
    pub id: String,
    /// The device it belongs to.
    pub device_id: String,
    /// `web_push` or `gateway`.
    pub kind: String,
    /// The push service's origin, or the gateway's name.
    pub target: String,
    /// When it was registered.
    pub created_at: Timestamp,
}
