//! Stored rows to protocol types.

use veche_protocol::Timestamp;
use veche_protocol::discussions::{
    Action, Change, DiscussionEvent, DiscussionKind, Message, ObjectRef, Reaction,
};

use veche_store::{DiscussionRow, EventRow, MessageRow, Store, StoreError};

pub(crate) fn object(row: &DiscussionRow) -> Option<ObjectRef> {
    match (&row.object_app, &row.object_type, &row.object_id) {
        (Some(app), Some(kind), Some(id)) => Some(ObjectRef {
            application: app.clone(),
            object_type: kind.clone(),
            object_id: id.clone(),
        }),
        _ => None,
    }
}

pub(crate) fn seq(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A message with the given mentions, reactions and files.
pub(crate) fn message(
    row: &MessageRow,
    mentions: Vec<String>,
    reactions: Vec<Reaction>,
    files: Vec<veche_protocol::files::FileInfo>,
) -> Message {
    Message {
        id: row.id.clone(),
        discussion: row.discussion_id.clone(),
        seq: seq(row.seq),
        author: row.author.clone(),
        text: row.text.clone(),
        data: row
            .data
            .as_deref()
            .and_then(|d| serde_json::from_str(d).ok()),
        actions: serde_json::from_str::<Vec<Action>>(&row.actions).unwrap_or_default(),
        reply_to: row.reply_to.clone(),
        mentions,
        reactions,
        files,
        created_at: Timestamp(row.created_at),
        edited_at: row.edited_at.map(Timestamp),
        version: u32::try_from(row.version).unwrap_or(u32::MAX),
        deleted: row.deleted,
    }
}

/// A message in its current state, with reactions and mentions from storage.
pub(crate) async fn stored_message(store: &Store, row: &MessageRow) -> Result<Message, StoreError> {
    let mut reactions: Vec<Reaction> = Vec::new();
    for (emoji, user) in store.discussions().reactions(&row.id).await? {
        match reactions.iter_mut().find(|r| r.emoji == emoji) {
            Some(r) => r.users.push(user),
            None => reactions.push(Reaction {
                emoji,
                users: vec![user],
            }),
        }
    }
    let mentions = store.discussions().mentions(&row.id).await?;
    let files = if row.deleted {
        Vec::new()
    } else {
        let rows = store.files().message_files(&row.id).await?;
        rows.iter()
            .map(crate::discussions::attachments::info)
            .collect()
    };
    Ok(message(row, mentions, reactions, files))
}

/// Event details kept as JSON in the `detail` column.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Detail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) emoji: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) users: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<i64>,
}

impl Detail {
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Stored events to protocol events; message events show the message's current state.
pub(crate) async fn events(
    store: &Store,
    rows: Vec<EventRow>,
) -> Result<Vec<DiscussionEvent>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let detail: Detail = serde_json::from_str(&row.detail).unwrap_or_default();
        let message_id = row.message_id.clone().unwrap_or_default();
        let change = match row.kind.as_str() {
            "created" => Change::Created {
                kind: detail
                    .kind
                    .as_deref()
                    .and_then(DiscussionKind::parse)
                    .unwrap_or(DiscussionKind::Group),
                title: detail.title.unwrap_or_default(),
            },
            "message_posted" => match store.discussions().message(&message_id).await? {
                Some(m) => Change::MessagePosted {
                    message: Box::new(stored_message(store, &m).await?),
                },
                None => Change::Unknown,
            },
            "message_edited" => {
                let version = detail.version.unwrap_or(1);
                Change::MessageEdited {
                    text: store
                        .discussions()
                        .message_version_text(&message_id, version)
                        .await?,
                    message_id,
                    version: u32::try_from(version).unwrap_or(u32::MAX),
                }
            }
            "message_deleted" => Change::MessageDeleted { message_id },
            "reaction_added" => Change::ReactionAdded {
                message_id,
                emoji: detail.emoji.unwrap_or_default(),
            },
            "reaction_removed" => Change::ReactionRemoved {
                message_id,
                emoji: detail.emoji.unwrap_or_default(),
            },
            "title_changed" => Change::TitleChanged {
                title: detail.title.unwrap_or_default(),
            },
            "members_added" => Change::MembersAdded {
                users: detail.users,
            },
            "member_removed" => Change::MemberRemoved {
                user: detail.users.into_iter().next().unwrap_or_default(),
            },
            _ => Change::Unknown,
        };
        out.push(DiscussionEvent {
            discussion: row.discussion_id,
            seq: seq(row.seq),
            at: Timestamp(row.at),
            actor: row.actor,
            change,
        });
    }
    Ok(out)
}
