//! Discussions and messages: what clients send to read and write them, and the events the
//! node pushes.
//!
//! Every change to a discussion is an event with the discussion's next sequence number
//! (`seq`, gapless, from 1). Clients keep, per discussion, the last `seq` they applied (their
//! cursor); after a reconnect they `sync` from their cursors and receive exactly what they
//! missed.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// The three kinds of discussion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscussionKind {
    /// Exactly two users.
    Dialog,
    /// Members picked by the initiator; owners manage them.
    Group,
    /// Bound to one business object; access follows the object's access rule.
    Object,
}

impl DiscussionKind {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dialog => "dialog",
            Self::Group => "group",
            Self::Object => "object",
        }
    }

    /// Parses the name used on the wire and in storage.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "dialog" => Some(Self::Dialog),
            "group" => Some(Self::Group),
            "object" => Some(Self::Object),
            _ => None,
        }
    }
}

/// A discussion kind's name that is none of the three.
#[derive(Debug, thiserror::Error)]
#[error("unknown discussion kind {0:?}")]
pub struct UnknownKind(pub String);

/// Parses a stored kind (rows decode through it, so code compares kinds, never strings).
impl TryFrom<String> for DiscussionKind {
    type Error = UnknownKind;

    fn try_from(s: String) -> Result<Self, UnknownKind> {
        Self::parse(&s).ok_or(UnknownKind(s))
    }
}

/// A business object: `(application, object type, object id)`, such as
/// `("erp", "invoice", "INV-2026-00042")`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// The registered application that owns the object.
    pub application: String,
    /// The object's type within the application.
    pub object_type: String,
    /// The object's id within its type.
    pub object_id: String,
}

/// A member's role in a dialog or group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages members and the title; deletes any message.
    Owner,
    /// Reads and posts.
    Member,
}

/// A member of a dialog or group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// User id.
    pub user: String,
    /// Role.
    pub role: Role,
}

/// How a business object looks, as its context provider renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCard {
    /// E.g. `Invoice ПТУ-000123`.
    pub title: String,
    /// E.g. the counterparty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    /// A link into the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// E.g. `posted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Labelled values, in order.
    #[serde(default)]
    pub fields: Vec<(String, String)>,
}

/// A discussion as one user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscussionInfo {
    /// `<uuid>@<home node>`.
    pub id: String,
    /// Kind.
    pub kind: DiscussionKind,
    /// Title (for a dialog: empty; clients show the other member).
    pub title: String,
    /// The business object, for an object discussion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// Members of a dialog or group (empty for an object discussion).
    #[serde(default)]
    pub members: Vec<Member>,
    /// Sequence number of the latest event.
    pub last_seq: u64,
    /// Time of the latest event.
    pub last_activity_at: Timestamp,
    /// The user's read marker: the last sequence number they have read.
    pub read_seq: u64,
    /// Messages by others after the read marker.
    pub unread: u64,
    /// Of those, messages that mention the user.
    pub mentions: u64,
    /// The user follows this object discussion (dialogs and groups: always true).
    pub following: bool,
}

/// A button on a message; a click reaches the message's author as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Chosen by the author, 1–64 characters.
    pub id: String,
    /// Shown on the button, 1–128 characters.
    pub label: String,
}

/// Users who reacted with one emoji.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The emoji.
    pub emoji: String,
    /// User ids, in the order they reacted.
    pub users: Vec<String>,
}

/// A message in its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `<uuid>@<node>`.
    pub id: String,
    /// The discussion.
    pub discussion: String,
    /// The sequence number at which it was posted.
    pub seq: u64,
    /// Author's user id.
    pub author: String,
    /// Text; absent once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Machine-readable data; absent once deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Buttons.
    #[serde(default)]
    pub actions: Vec<Action>,
    /// The message this one replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Users mentioned in the text.
    #[serde(default)]
    pub mentions: Vec<String>,
    /// Reactions.
    #[serde(default)]
    pub reactions: Vec<Reaction>,
    /// Attached files, in the order given; empty once the message is deleted. A file removed
    /// by the retention policy is no longer listed.
    #[serde(default)]
    pub files: Vec<crate::files::FileInfo>,
    /// When it was posted.
    pub created_at: Timestamp,
    /// When it was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<Timestamp>,
    /// 1 for the original text, +1 per edit.
    pub version: u32,
    /// Deleted: a tombstone whose text and data were purged.
    pub deleted: bool,
}

/// One version of an edited message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageVersion {
    /// 1 for the original.
    pub version: u32,
    /// The text of that version.
    pub text: String,
    /// When that version was written.
    pub at: Timestamp,
}

/// One event of a discussion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscussionEvent {
    /// The discussion.
    pub discussion: String,
    /// Its sequence number in the discussion.
    pub seq: u64,
    /// When it was committed.
    pub at: Timestamp,
    /// The user (or application) that caused it.
    pub actor: String,
    /// What changed.
    pub change: Change,
}

/// What an event changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    /// The discussion was created.
    Created {
        /// Its kind.
        kind: DiscussionKind,
        /// Its title.
        title: String,
    },
    /// A message was posted (shown in its current state).
    MessagePosted {
        /// The message.
        message: Box<Message>,
    },
    /// A message was edited.
    MessageEdited {
        /// The message.
        message_id: String,
        /// The new text; absent if the message was deleted since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The version this edit created.
        version: u32,
    },
    /// A message was deleted.
    MessageDeleted {
        /// The message.
        message_id: String,
    },
    /// A reaction was added.
    ReactionAdded {
        /// The message.
        message_id: String,
        /// The emoji.
        emoji: String,
    },
    /// A reaction was removed.
    ReactionRemoved {
        /// The message.
        message_id: String,
        /// The emoji.
        emoji: String,
    },
    /// The title changed.
    TitleChanged {
        /// The new title.
        title: String,
    },
    /// Members joined.
    MembersAdded {
        /// User ids.
        users: Vec<String>,
    },
    /// A member left or was removed.
    MemberRemoved {
        /// User id.
        user: String,
    },
    /// A change this client does not know (from a newer node).
    #[serde(other)]
    Unknown,
}

/// A client's position in one discussion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursor {
    /// The discussion.
    pub discussion: String,
    /// The last sequence number the client applied (0 for none).
    pub seq: u64,
}

/// `send`: posts a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// The discussion.
    pub discussion: String,
    /// Created when the user composed the message, kept across resends: 1–64 characters,
    /// typically a UUID. The node stores it for good with the message; a resend returns the
    /// original message, the same id with other content is a `conflict`.
    pub client_msg_id: String,
    /// Text; `:shortcode:` emoji are converted, `@login` mentions recognised.
    pub text: String,
    /// The message replied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Machine-readable data, a JSON value of at most 64 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    /// Buttons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<Action>,
    /// Files to attach (ids from completed uploads of the sender's for this discussion), at
    /// most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// A full-text search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Words, codes and numbers; all must occur (in any form: `счета` finds `счёт`).
    pub query: String,
    /// Only in this discussion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discussion: Option<String>,
    /// Only by this author (user id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Only in this object's discussion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectRef>,
    /// Only messages written at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::Timestamp>,
    /// Only messages written before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<crate::Timestamp>,
    /// Only messages with files attached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_file: bool,
    /// Hits to skip (paging).
    #[serde(default)]
    pub offset: u32,
    /// At most this many hits (1–100).
    pub limit: u32,
}

impl SearchQuery {
    /// `query` over everything the caller may read, the first 20 hits.
    pub fn text(query: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            discussion: None,
            author: None,
            object: None,
            from: None,
            to: None,
            has_file: false,
            offset: 0,
            limit: 20,
        }
    }
}

/// One message found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchHit {
    /// Its discussion.
    pub discussion: String,
    /// The message.
    pub message_id: String,
    /// Its sequence number in the discussion.
    pub seq: u64,
    /// Its author.
    pub author: String,
    /// When it was written.
    pub created_at: crate::Timestamp,
    /// A piece of its current text around the matches, HTML-escaped, matches in `<b>`.
    pub snippet: String,
}
