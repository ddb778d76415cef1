//! Files as part of messages: which files a new message may carry (checked in the
//! sequencer's transaction), how a file looks to clients, and which node holds a linked
//! file's content. The files service, above this layer, moves the bytes.

use std::collections::HashSet;

use veche_federation::event::node_of;
use veche_protocol::files::FileInfo;
use veche_protocol::{ErrorBody, Timestamp};

use super::DiscussionError;
use crate::config::FilesConfig;
use veche_store::{FileRow, REMOTE_BACKEND};

/// Files attached to one message at most.
pub const MAX_FILES_PER_MESSAGE: usize = 10;

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A file row as clients see it.
pub fn info(row: &FileRow) -> FileInfo {
    let dim = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    // A linked node's claim shows nothing of a content held here until it is proven.
    let claimed = row.linked_from.is_some() && row.backend != REMOTE_BACKEND;
    FileInfo {
        id: row.id.clone(),
        name: row.name.clone(),
        size: to_u64(row.size),
        mime: if claimed {
            "application/octet-stream".into()
        } else {
            row.mime.clone()
        },
        sha256: row.sha256.clone(),
        thumbnail: row.thumbnail && !claimed,
        dimensions: dim(row.width).zip(dim(row.height)).filter(|_| !claimed),
        discussion: row.discussion_id.clone(),
        uploader: row.uploader.clone(),
        created_at: Timestamp(row.created_at),
    }
}

/// The linked node this node (`me`) fetches the content of a file of `discussion` uploaded by
/// `uploader` from: the discussion's home, or for the home itself the uploader's node. `None`
/// if that is this node.
pub fn source_node<'a>(me: &str, discussion: &'a str, uploader: &'a str) -> Option<&'a str> {
    let home = node_of(discussion);
    let source = if home == Some(me) {
        node_of(uploader)
    } else {
        home
    };
    source.filter(|s| *s != me)
}

/// Checks files to attach to a new message in `discussion` of kind `kind`, by `author`:
/// the policy still allows files there, and each file was uploaded by the author for this
/// discussion. Runs in the sequencer's transaction.
pub async fn check_attachments(
    c: &FilesConfig,
    b: &mut veche_store::Batch,
    author: &str,
    discussion: &str,
    kind: &str,
    files: &[String],
    now: i64,
) -> Result<(), DiscussionError> {
    if files.is_empty() {
        return Ok(());
    }
    if files.len() > MAX_FILES_PER_MESSAGE {
        return Err(DiscussionError::BadRequest(format!(
            "a message takes at most {MAX_FILES_PER_MESSAGE} files"
        )));
    }
    if !c.enabled || !c.discussion_kinds.iter().any(|k| k == kind) {
        let (rule, why) = if c.enabled {
            (
                "files.discussion_kinds",
                format!("files are not allowed in {kind} discussions on this node"),
            )
        } else {
            (
                "files.enabled",
                "the administrator has turned files off on this node".into(),
            )
        };
        return Err(DiscussionError::Refused(Box::new(ErrorBody::refused_by(
            rule, why,
        ))));
    }
    let mut seen = HashSet::new();
    for id in files {
        if !seen.insert(id) {
            return Err(DiscussionError::BadRequest(format!(
                "file {id} is listed twice"
            )));
        }
        match b.file_owner(id).await? {
            Some((uploader, d, created_at)) if uploader == author && d == discussion => {
                let days = i64::from(c.retention_days);
                if days > 0 && created_at < now - days * 86_400_000 {
                    return Err(DiscussionError::Refused(Box::new(ErrorBody::refused_by(
                        "files.retention_days",
                        format!("file {id} is past the {days}-day retention and is being removed"),
                    ))));
                }
            }
            _ => return Err(DiscussionError::NotFound("file")),
        }
    }
    Ok(())
}
