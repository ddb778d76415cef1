//! Discussions that span nodes, inside the sequencer.
//!
//! - **At the home** (the node named in the discussion's id), every change of a discussion
//!   shared over a link becomes a signed event (the home's own, or the one a linked node
//!   submitted for its user), gets the next number of the discussion's federated log with a
//!   stamp chained to the previous one, and is queued for every link the discussion is shared
//!   over, all in the transaction of the change itself.
//! - **On a replica**, what a local user writes in another home's discussion is not stored: it
//!   becomes a signed submission queued for the home (`seq` 0 in the answer: pending). The
//!   home's stamped events are applied strictly in order, through the same commands local
//!   users use, with the event's author as the caller.
//!
//! Message ids are the same on every node: the home's id when the home wrote the message, or
//! one derived from the event id when a linked node did.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use veche_federation::event::{
    ChainError, EVENT_FORMAT, Event, EventHeader, EventWire, Head, Stamp, StampBody, node_of,
};
use veche_federation::grant::Signed;
use veche_federation::keys::{Hash, PublicKey};
use veche_federation::wire::{self, Item, Reader};
use veche_protocol::discussions::{Change, DiscussionKind, ObjectRef, SendMessage};
use veche_protocol::ids::{NodeName, UserId};

use super::{Delivery, Done, FedOutcome, Sequencer};
use crate::discussions::access::Access;
use crate::discussions::access::{
    is_linked_object, object_access, reader_from_wire, reader_to_wire,
};
use crate::discussions::{Caller, DiscussionError, check_object, text};
use veche_store::{
    Batch, BlobRow, DiscussionRow, EventRow, FedLogRow, FileRow, MessageRow, NewPending, ObjectKey,
    REMOTE_BACKEND, ReaderAccess, StoreError,
};

mod dialogs;
mod files;
mod home;
mod objects;
mod replica;
mod restore;
mod round;

/// A linked node that says it lost an object discussion gets its state again at most this
/// often (each share is an entry of the discussion's log).
const SHARE_AGAIN_AFTER_MS: i64 = 10 * 60 * 1000;

/// What a federated event says beyond its header (JSON).
// Unknown fields are ignored: a newer home may say more than this node understands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Body {
    /// For `discussion.share`: what the discussion is (`group`, `dialog`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    /// The message concerned (for posts: its id at the home, when the home wrote it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) emoji: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) title: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) users: Vec<String>,
    /// For `discussion.share`: every member with their role.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) members: Vec<(String, String)>,
    /// For posts: the files attached, in order. Their contents stay at the node that has them
    /// and are fetched from it on the first download (see `files::Files::download`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) files: Vec<FileRef>,
    /// For `discussion.share` of an object discussion: the object, as its home names it (its
    /// application is a login there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) object: Option<ObjectRef>,
}

/// A file attached to a federated post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRef {
    /// The content's SHA-256 (64 lowercase hex digits).
    pub(crate) sha256: String,
    pub(crate) size: u64,
    pub(crate) name: String,
    /// The type the sending node recognised (shown until the content is fetched, then
    /// recognised again here).
    pub(crate) mime: String,
}

impl FileRef {
    pub(crate) fn of(f: &FileRow) -> Self {
        Self {
            sha256: f.sha256.clone(),
            size: u64::try_from(f.size).unwrap_or(0),
            name: f.name.clone(),
            mime: f.mime.clone(),
        }
    }
}

/// What the current round of received items has read or written, so that each is read once:
/// the heads of federated logs, the peers of links, which events are in a log, and which users
/// of other nodes are known here.
#[derive(Default)]
struct Round {
    heads: HashMap<String, Head>,
    peers: HashMap<String, Option<String>>,
    known: HashSet<String>,
    users: HashSet<String>,
}

impl Round {
    /// The peer node of `link`, while the link is active.
    async fn peer(&mut self, b: &mut Batch, link: &str) -> Result<Option<String>, StoreError> {
        if let Some(peer) = self.peers.get(link) {
            return Ok(peer.clone());
        }
        let peer = b.fed_link_peer(link).await?;
        self.peers.insert(link.to_owned(), peer.clone());
        Ok(peer)
    }

    /// The stamp is the head of its discussion's log now, and its event is in the log.
    fn advance(&mut self, stamp: &Stamp, event: &Event) {
        self.heads.insert(
            stamp.body().discussion.clone(),
            Head {
                seq: stamp.body().seq,
                hash: Hash::of(&stamp.signed().bytes),
            },
        );
        self.known.insert(event.id().to_hex());
    }

    /// Users ensured since the last savepoint that was rolled back may be gone again.
    fn forget_users(&mut self) {
        self.users.clear();
    }

    /// Makes sure a user named in an event is known here (see [`remote_user`]), once a round.
    async fn user(
        &mut self,
        b: &mut Batch,
        id: &str,
        me: &NodeName,
        at: i64,
    ) -> Result<(), DiscussionError> {
        if !self.users.contains(id) {
            remote_user(b, id, me, at).await?;
            self.users.insert(id.to_owned());
        }
        Ok(())
    }
}

/// A stamped event that is the next of its discussion's log here.
struct Next {
    stamp: Stamp,
    event: Event,
}

/// A federated event a command applies, with the key that signed it.
#[derive(Debug, Clone)]
pub(crate) struct Applying {
    pub(crate) event: Event,
    pub(crate) origin_key: PublicKey,
}

/// Where a command comes from: it decides who judges the command, where it is stored and
/// who signs the events it federates. Every command carries one, down to each write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// This node originates the change (a user, bot or application of this node, or the
    /// node itself): it is judged here; in another home's discussion it goes to that home
    /// instead of being stored; at the home the node signs the events it federates.
    Here,
    /// A linked node's user's event, submitted to this node, the discussion's home: judged
    /// here like a local command, and federated exactly as its origin signed it.
    Submitted(&'a Applying),
    /// An event the discussion's home stamped, applied on this replica: the home judged it,
    /// so it is not judged again, and it names the ids it created.
    Stamped(&'a Applying),
}

impl<'a> Origin<'a> {
    /// Whether the command applies an event the home stamped (on a replica).
    pub(crate) fn stamped(self) -> bool {
        matches!(self, Origin::Stamped(_))
    }

    /// The federated event the command applies, if any.
    pub(crate) fn applying(self) -> Option<&'a Applying> {
        match self {
            Origin::Here => None,
            Origin::Submitted(a) | Origin::Stamped(a) => Some(a),
        }
    }
}

/// The id a message posted by `event` has on every node, unless the home named it.
pub(crate) fn message_id_of(event: &Hash, home: &str) -> String {
    format!("{}@{home}", &event.to_hex()[..32])
}

/// The id of the dialog `key` (its two users) whose home is `home`: the same on both nodes,
/// so that either side may open it first, even cut off from the other, or both at once.
pub(crate) fn dialog_id(key: &str, home: &str) -> String {
    let hash = Hash::of(format!("veche-fed/v1/dialog\0{key}").as_bytes());
    format!("{}@{home}", &hash.to_hex()[..32])
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("encoding to a Vec cannot fail");
    out
}

fn fed_error(e: impl std::fmt::Display) -> DiscussionError {
    DiscussionError::BadRequest(format!("federated event refused: {e}"))
}

fn body_of(event: &Event) -> Result<Body, DiscussionError> {
    let bytes = event
        .body()
        .ok_or_else(|| fed_error("the event came without its body"))?;
    serde_json::from_slice(bytes).map_err(fed_error)
}

/// A caller acting for an event's author.
fn author(event: &Event, admin: bool) -> Caller {
    Caller {
        user: event.header().author.clone(),
        device: format!("fed-{}", event.header().origin),
        admin,
        connection: 0,
    }
}

impl Sequencer {
    /// Refuses, before anything is written, a text too long to travel to linked nodes when
    /// `d` is shared.
    pub(super) async fn check_travels(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        text: &str,
    ) -> Result<(), DiscussionError> {
        // JSON at most doubles a text (quotes and backslashes), plus the other fields.
        let too_long = 2 * text.len() + 4096 > veche_federation::event::MAX_BODY;
        // A dialog with a user of another node travels even before it is shared (again).
        let linked_dialog = d.dialog_key.as_deref().is_some_and(|k| {
            k.split('\n')
                .any(|u| node_of(u).is_some_and(|n| n != self.node.as_str()))
        });
        if too_long
            && self.fed.key.is_some()
            && self.is_home(&d.id)
            && (linked_dialog || !b.fed_shares(&d.id).await?.is_empty())
        {
            return Err(DiscussionError::BadRequest(format!(
                "this group is shared with another node, where a text may have at most {} bytes",
                (veche_federation::event::MAX_BODY - 4096) / 2
            )));
        }
        Ok(())
    }

    /// The header of an event this node signs.
    fn header(
        &self,
        kind: &str,
        discussion: &str,
        author: &str,
        client_txn: String,
        target: Option<Hash>,
    ) -> EventHeader {
        EventHeader {
            format: EVENT_FORMAT,
            kind: kind.to_owned(),
            discussion: discussion.to_owned(),
            home: node_of(discussion).unwrap_or_default().to_owned(),
            origin: self.node.to_string(),
            author: author.to_owned(),
            client_txn,
            created_at: self.now(),
            target,
            body_hash: None,
            body_len: 0,
        }
    }

    /// Whether this node is the home of `discussion`.
    pub(super) fn is_home(&self, discussion: &str) -> bool {
        node_of(discussion) == Some(self.node.as_str())
    }

    /// The origin of a command applying `a`, an event received over a link: a submission
    /// when this node is the discussion's home, else the home's stamped event.
    fn origin_of<'a>(&self, a: &'a Applying) -> Origin<'a> {
        if self.is_home(&a.event.header().discussion) {
            Origin::Submitted(a)
        } else {
            Origin::Stamped(a)
        }
    }

    /// Whether a command on `discussion` must go to its home instead of being stored.
    pub(super) fn goes_home(&self, discussion: &str, origin: Origin<'_>) -> bool {
        self.fed.key.is_some() && !self.is_home(discussion) && origin.applying().is_none()
    }

    /// The id a message being posted gets: the federated event's, when one is applied. A
    /// linked node's submission cannot choose it; the home's stamped post names it.
    pub(super) fn federated_message_id(&self, origin: Origin<'_>) -> Option<String> {
        let a = origin.applying()?;
        if a.event.header().kind != "message.post" {
            return None;
        }
        let home = node_of(&a.event.header().discussion)?;
        let derived = message_id_of(&a.event.id(), home);
        if self.is_home(&a.event.header().discussion) {
            return Some(derived);
        }
        let body = body_of(&a.event).ok()?;
        Some(body.message.unwrap_or(derived))
    }
}

/// Queues this node's `event` for its home over `link`.
async fn submit(
    b: &mut Batch,
    link: String,
    event: &Event,
    out: &mut Vec<Delivery>,
) -> Result<(), DiscussionError> {
    let item = Item::Submit {
        event: event.wire().clone(),
    };
    b.fed_enqueue(&link, &encode(&item)).await?;
    out.push(Delivery::WakeLinks(vec![link]));
    Ok(())
}

/// Makes sure a user of another node named in a federated event is known here; users of this
/// node are not created (they exist or the change fails).
async fn remote_user(
    b: &mut Batch,
    id: &str,
    me: &NodeName,
    at: i64,
) -> Result<(), DiscussionError> {
    let user: UserId = id
        .parse()
        .map_err(|_| fed_error(format!("{id:?} is not a user id")))?;
    if user.node() != me {
        b.ensure_remote_user(id, at).await?;
    }
    Ok(())
}

/// The log entry of a stamped event.
fn log_row(stamp: &Stamp, event: &Event, message_id: Option<String>) -> FedLogRow {
    FedLogRow {
        discussion: stamp.body().discussion.clone(),
        // Checked on receipt (`fed_check`); a home's own numbers count up from 1.
        fseq: i64::try_from(stamp.body().seq).unwrap_or(i64::MAX),
        event_id: event.id().to_hex(),
        kind: event.header().kind.clone(),
        message_id,
        stamp: encode(stamp.signed()),
        event: encode(event.wire()),
    }
}

fn stamp_hash(stored: &[u8]) -> Result<Hash, DiscussionError> {
    let signed: Signed = ciborium::from_reader(stored)
        .map_err(|e| DiscussionError::Store(StoreError::Aborted(format!("a stored stamp: {e}"))))?;
    Ok(Hash::of(&signed.bytes))
}

/// Drops the bodies of the events that posted or edited `message` in `discussion` (it was
/// deleted); their signed headers stay, and still verify.
async fn purge_bodies(b: &mut Batch, discussion: &str, message: &str) -> Result<(), StoreError> {
    for (id, bytes) in b.fed_message_events(discussion, message).await? {
        let mut wire: veche_federation::event::EventWire = ciborium::from_reader(bytes.as_slice())
            .map_err(|e| StoreError::Aborted(format!("a stored event: {e}")))?;
        if wire.body.take().is_none() {
            continue;
        }
        let mut purged = Vec::new();
        ciborium::into_writer(&wire, &mut purged)
            .map_err(|e| StoreError::Aborted(format!("an event: {e}")))?;
        b.fed_replace_event(&id, &purged).await?;
    }
    Ok(())
}

/// Whether a link's stored scope lets its peer find everyone here (`directory = full`).
fn full_directory(scope: &str) -> bool {
    serde_json::from_str::<veche_federation::grant::Scope>(scope)
        .is_ok_and(|s| s.directory == veche_federation::grant::DirectoryScope::Full)
}
