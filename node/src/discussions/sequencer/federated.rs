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
use veche_protocol::discussions::{Change, ObjectRef, SendMessage};
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

/// The federated event the current command applies, with the key that signed it.
#[derive(Debug, Clone)]
pub(crate) struct Applying {
    pub(crate) event: Event,
    pub(crate) origin_key: PublicKey,
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

    pub(super) fn applying(&self) -> Option<Applying> {
        self.applying
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_applying(&self, a: Option<Applying>) {
        *self.applying.lock().unwrap_or_else(|e| e.into_inner()) = a;
    }

    /// Whether the current command applies an event the home stamped (on a replica): the
    /// home has authorized it, so the replica does not judge it again.
    pub(super) fn applying_stamped(&self) -> bool {
        self.applying()
            .is_some_and(|a| !self.is_home(&a.event.header().discussion))
    }

    /// Whether a local command on `discussion` must go to its home instead of being stored.
    pub(super) fn goes_home(&self, discussion: &str) -> bool {
        self.fed.key.is_some() && !self.is_home(discussion) && self.applying().is_none()
    }

    /// The id a message being posted gets: the federated event's, when one is applied. A
    /// linked node's submission cannot choose it; the home's stamped post names it.
    pub(super) fn federated_message_id(&self) -> Option<String> {
        let a = self.applying()?;
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

    /// At the home: puts a change of a shared discussion in its federated log and queues it
    /// for every link it is shared over. Does nothing for other discussions.
    pub(super) async fn federate(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        actor: &str,
        change: &Change,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Ok(());
        };
        if !self.is_home(&d.id) {
            return Ok(());
        }
        let mut links = b.fed_shares(&d.id).await?;
        if links.is_empty() {
            // After the change's own writes: any failure must undo the whole batch.
            let again = self
                .share_dialog_again(b, d, out)
                .await
                .map_err(|e| match e {
                    e @ DiscussionError::Store(_) => e,
                    other => DiscussionError::Store(StoreError::Aborted(other.to_string())),
                })?;
            links.extend(again);
        }
        if links.is_empty() {
            return Ok(());
        }
        let (kind, body) = match change {
            Change::MessagePosted { message } => (
                "message.post",
                Body {
                    message: Some(message.id.clone()),
                    text: message.text.clone(),
                    reply_to: message.reply_to.clone(),
                    files: message
                        .files
                        .iter()
                        .map(|f| FileRef {
                            sha256: f.sha256.clone(),
                            size: f.size,
                            name: f.name.clone(),
                            mime: f.mime.clone(),
                        })
                        .collect(),
                    ..Body::default()
                },
            ),
            Change::MessageEdited {
                message_id, text, ..
            } => (
                "message.edit",
                Body {
                    message: Some(message_id.clone()),
                    text: text.clone(),
                    ..Body::default()
                },
            ),
            Change::MessageDeleted { message_id } => (
                "message.delete",
                Body {
                    message: Some(message_id.clone()),
                    ..Body::default()
                },
            ),
            Change::ReactionAdded { message_id, emoji }
            | Change::ReactionRemoved { message_id, emoji } => (
                if matches!(change, Change::ReactionAdded { .. }) {
                    "reaction.add"
                } else {
                    "reaction.remove"
                },
                Body {
                    message: Some(message_id.clone()),
                    emoji: Some(emoji.clone()),
                    ..Body::default()
                },
            ),
            Change::TitleChanged { title } => (
                "discussion.title",
                Body {
                    title: Some(title.clone()),
                    ..Body::default()
                },
            ),
            Change::MembersAdded { users } => (
                "member.add",
                Body {
                    users: users.clone(),
                    ..Body::default()
                },
            ),
            Change::MemberRemoved { user } => (
                "member.remove",
                Body {
                    users: vec![user.clone()],
                    ..Body::default()
                },
            ),
            _ => return Ok(()),
        };
        let message_id = body.message.clone();
        let (event, origin_key) = match self.applying() {
            // A linked node's event, exactly as its origin signed it.
            Some(a) => (a.event, a.origin_key),
            None => {
                let target = match &message_id {
                    Some(m) if kind != "message.post" => b
                        .fed_event_of_message(&d.id, m)
                        .await?
                        .and_then(|h| Hash::from_hex(&h)),
                    _ => None,
                };
                let txn = uuid::Uuid::new_v4().simple().to_string();
                let header = self.header(kind, &d.id, actor, txn, target);
                // After the change's own writes: a failure here must undo the whole batch
                // (sends have no savepoint), never commit a change the links miss.
                let broken = |e: String| DiscussionError::Store(StoreError::Aborted(e));
                let body = serde_json::to_vec(&body).map_err(|e| broken(e.to_string()))?;
                (
                    Event::create(key, header, Some(body)).map_err(|e| broken(e.to_string()))?,
                    key.public(),
                )
            }
        };
        self.stamp_and_queue(
            b,
            &d.id,
            &event,
            origin_key,
            message_id.as_deref(),
            &links,
            out,
        )
        .await
    }

    /// Gives `event` the next place in the discussion's federated log, signed and chained, and
    /// queues it for `links`.
    #[allow(clippy::too_many_arguments)]
    async fn stamp_and_queue(
        &self,
        b: &mut Batch,
        discussion: &str,
        event: &Event,
        origin_key: PublicKey,
        message_id: Option<&str>,
        links: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let entry = (event, origin_key, message_id);
        self.stamp_and_queue_after(b, discussion, entry, 0, links, out)
            .await
    }

    /// [`Self::stamp_and_queue`], numbered after `after` at least (a home restored from a
    /// backup goes on after the numbers its replicas hold).
    async fn stamp_and_queue_after(
        &self,
        b: &mut Batch,
        discussion: &str,
        (event, origin_key, message_id): (&Event, PublicKey, Option<&str>),
        after: i64,
        links: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Ok(());
        };
        let (fseq, prev) = match b.fed_head(discussion).await? {
            Some(h) => (h.fseq.max(after), stamp_hash(&h.stamp)?),
            None => (after, Hash::default()),
        };
        let stamp = Stamp::create(
            key,
            StampBody {
                format: EVENT_FORMAT,
                discussion: discussion.to_owned(),
                seq: u64::try_from(fseq + 1).unwrap_or(0),
                event: event.id(),
                origin_key,
                prev,
                accepted_at: self.now(),
            },
        );
        let kind = event.header().kind.clone();
        let message_id = match (message_id, kind.as_str()) {
            (None, "message.post") => node_of(discussion).map(|h| message_id_of(&event.id(), h)),
            (m, _) => m.map(str::to_owned),
        };
        b.fed_log_append(&log_row(&stamp, event, message_id.clone()))
            .await?;
        let item = encode(&Item::Stamped {
            stamp: stamp.signed().clone(),
            event: event.wire().clone(),
        });
        for link in links {
            b.fed_enqueue(link, &item).await?;
        }
        if kind == "message.delete"
            && let Some(m) = &message_id
        {
            purge_bodies(b, discussion, m).await?;
        }
        out.push(Delivery::WakeLinks(links.to_vec()));
        Ok(())
    }

    /// The dialog of `caller` with `with`, one of them a user of a linked node (`key` is the
    /// pair). Its home is the node whose name sorts first, and its id derives from the pair.
    /// The home shares it over the link at once; the other node creates it here and asks the
    /// home to open it, ahead of the messages its user writes there meanwhile (pending until
    /// the home has sequenced them, like any submission).
    pub(super) async fn open_linked_dialog(
        &self,
        b: &mut Batch,
        caller: &Caller,
        with: &str,
        key: String,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(node_key) = &self.fed.key else {
            return Err(DiscussionError::NotFound("user"));
        };
        let theirs = [caller.user.as_str(), with]
            .into_iter()
            .find_map(|u| node_of(u).filter(|n| *n != self.node.as_str()))
            .ok_or_else(|| fed_error("neither user is of another node"))?;
        self.existing_or_linked_users(b, &[with.to_owned()]).await?;
        let link = b
            .fed_link_to(theirs)
            .await?
            .ok_or(DiscussionError::NotFound("user"))?;
        let home = theirs.min(self.node.as_str());
        let existing = b.dialog_by_key(&key).await?;
        let d = match existing.clone() {
            Some(d) => d,
            None => {
                let mut pair: Vec<&str> = key.split('\n').collect();
                pair.sort_unstable();
                let d = DiscussionRow {
                    id: dialog_id(&key, home),
                    dialog_key: Some(key.clone()),
                    ..self.new_discussion(
                        veche_protocol::discussions::DiscussionKind::Dialog,
                        String::new(),
                        caller,
                    )
                };
                b.insert_discussion(&d).await?;
                for user in pair {
                    b.add_member(&d.id, user, "member", d.created_at).await?;
                }
                self.forget_cache();
                self.announce_created(b, &d, out).await?;
                d
            }
        };
        if self.is_home(&d.id) {
            if !b.fed_shares(&d.id).await?.contains(&link) {
                self.share_state(b, node_key, &d, &link, out).await?;
            }
        } else if self.applying().is_none()
            && (existing.is_none() || b.fed_head(&d.id).await?.is_none())
        {
            // Asked again while the home has not shared it: the first request may have been
            // refused (the user did not exist there yet); a repeat is harmless.
            let body = Body {
                users: vec![with.to_owned()],
                ..Body::default()
            };
            let txn = uuid::Uuid::new_v4().simple().to_string();
            let header = self.header("dialog.open", &d.id, &caller.user, txn.clone(), None);
            let bytes = serde_json::to_vec(&body).map_err(fed_error)?;
            let event = Event::create(node_key, header, Some(bytes)).map_err(fed_error)?;
            // Kept so that a refusal can be matched and told.
            let pending = NewPending {
                event_id: &event.id().to_hex(),
                message_id: &d.id,
                discussion: &d.id,
                author: &caller.user,
                device: &caller.device,
                client_msg_id: &txn,
                kind: "dialog.open",
                at: self.now(),
            };
            b.fed_add_pending(&pending).await?;
            submit(b, link, &event, out).await?;
        }
        Ok(Done::Discussion(d.id))
    }

    /// At the home: a dialog with a user of a linked node that is not shared over an active
    /// link (the link it was shared over ended, and the nodes linked again) is shared over
    /// the new one, its state first. The link, if so.
    async fn share_dialog_again(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        out: &mut Vec<Delivery>,
    ) -> Result<Option<String>, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Ok(None);
        };
        let Some(pair) = d.dialog_key.as_deref().filter(|_| self.is_home(&d.id)) else {
            return Ok(None);
        };
        let Some(theirs) = pair
            .split('\n')
            .find_map(|u| node_of(u).filter(|n| *n != self.node.as_str()))
        else {
            return Ok(None);
        };
        let Some(link) = b.fed_link_to(theirs).await? else {
            return Ok(None);
        };
        if b.fed_shares(&d.id).await?.contains(&link) {
            return Ok(Some(link));
        }
        self.share_state(b, key, d, &link, out).await?;
        Ok(Some(link))
    }

    /// At the home: a linked node's user opens a dialog with a user of this node: a person
    /// (not a bot, not locked) the link's directory scope lets that node see. Whatever the
    /// reason, a refusal says only "not found", so that logins cannot be probed.
    async fn fed_open_dialog(
        &self,
        b: &mut Batch,
        link: &str,
        event: &Event,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let h = event.header();
        let body = body_of(event)?;
        let with = match body.users.as_slice() {
            [with] if node_of(with) == Some(self.node.as_str()) => with,
            _ => return Err(fed_error("a dialog is opened with one user of this node")),
        };
        if !b
            .fed_reachable(link, &h.origin, with, full_directory)
            .await?
        {
            return Err(DiscussionError::NotFound("user"));
        }
        remote_user(b, &h.author, &self.node, self.now()).await?;
        let mut pair = [h.author.as_str(), with.as_str()];
        pair.sort_unstable();
        let key = pair.join("\n");
        // The home is the node whose name sorts first: this one, or the asker got it wrong.
        let home = h.origin.as_str().min(self.node.as_str());
        if h.discussion != dialog_id(&key, home) {
            return Err(fed_error("that is not the id of these users' dialog"));
        }
        self.open_linked_dialog(b, &author(event, false), with, key, out)
            .await
    }

    /// The answer to a submission sent before with the same exactly-once key, if there was
    /// one: its message id, or its home's refusal.
    pub(super) async fn submitted_before(
        &self,
        b: &mut Batch,
        caller: &Caller,
        d: &DiscussionRow,
        client_txn: &str,
    ) -> Result<Option<Result<String, DiscussionError>>, DiscussionError> {
        let home = node_of(&d.id).unwrap_or_default();
        let pending = b
            .fed_pending(&caller.user, &caller.device, client_txn)
            .await?;
        Ok(pending.map(|p| match p.refused {
            Some(reason) => Err(DiscussionError::Forbidden(format!(
                "{home} refused it: {reason}"
            ))),
            None => Ok(p.message_id),
        }))
    }

    /// On a replica: a local user's change of another home's discussion, signed and queued for
    /// the home (with the files it attaches). Its message id, for a post.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn submit_home(
        &self,
        b: &mut Batch,
        caller: &Caller,
        d: &DiscussionRow,
        kind: &str,
        body: Body,
        client_txn: &str,
        files: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<String, DiscussionError> {
        let key = self.fed.key.as_ref().ok_or(DiscussionError::Unavailable)?;
        let home = node_of(&d.id).ok_or_else(|| fed_error("the discussion names no home"))?;
        if let Some(answer) = self.submitted_before(b, caller, d, client_txn).await? {
            return answer;
        }
        let link = b.fed_link_to(home).await?.ok_or_else(|| {
            DiscussionError::Forbidden(format!(
                "this discussion lives on {home}, and there is no active link with it"
            ))
        })?;
        let target = match &body.message {
            Some(m) => b
                .fed_event_of_message(&d.id, m)
                .await?
                .and_then(|h| Hash::from_hex(&h)),
            None => None,
        };
        let header = self.header(kind, &d.id, &caller.user, client_txn.to_owned(), target);
        let message_id = body.message.clone();
        let bytes = serde_json::to_vec(&body).map_err(fed_error)?;
        let event = Event::create(key, header, Some(bytes)).map_err(fed_error)?;
        let message_id = message_id.unwrap_or_else(|| message_id_of(&event.id(), home));
        let pending = NewPending {
            event_id: &event.id().to_hex(),
            message_id: &message_id,
            discussion: &d.id,
            author: &caller.user,
            device: &caller.device,
            client_msg_id: client_txn,
            kind,
            at: self.now(),
        };
        if !b.fed_add_pending(&pending).await? {
            return Err(DiscussionError::Store(StoreError::Aborted(
                "a submission key vanished during its own transaction".into(),
            )));
        }
        b.fed_pending_files(pending.event_id, files).await?;
        submit(b, link, &event, out).await?;
        Ok(message_id)
    }

    /// Applies received items in order, each in a savepoint of its own. A transient failure
    /// holds back the rest of its link (tried again later, in order); a storage failure
    /// breaks the batch, so nothing of the round is kept and all is tried again.
    pub(super) async fn fed_many(
        &self,
        b: &mut Batch,
        items: Vec<(String, Item)>,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let mut held = HashSet::new();
        let mut round = Round::default();
        let ids: Vec<String> = items
            .iter()
            .filter_map(|(_, item)| match item {
                Item::Submit { event } | Item::Stamped { event, .. } => {
                    Some(Hash::of(&event.header).to_hex())
                }
                Item::Refusal { .. } | Item::Readers { .. } => None,
            })
            .collect();
        round.known = b.fed_known_events(&ids).await?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut items = items.into_iter().peekable();
        while let Some((link, item)) = items.next() {
            if held.contains(&link) {
                outcomes.push(FedOutcome::Later);
                continue;
            }
            // A run of the home's plain posts to one discussion is stored in a few multi-row
            // statements: the bulk of what a replica receives.
            if let Some((discussion, body)) = self.plain_post(&item) {
                let mut run = vec![(item, body)];
                while let Some((next_link, next)) = items.peek() {
                    if *next_link != link {
                        break;
                    }
                    match self.plain_post(next) {
                        Some((d, body)) if d == discussion => {
                            if let Some((_, next)) = items.next() {
                                run.push((next, body));
                            }
                        }
                        _ => break,
                    }
                }
                for result in self.fed_posts(b, &link, run, &mut round, out).await? {
                    outcomes.push(match result {
                        Ok(()) => FedOutcome::Applied,
                        Err(e) => {
                            tracing::error!(link, error = %e, "a received item was refused");
                            FedOutcome::Refused(e.to_string())
                        }
                    });
                }
                continue;
            }
            let header = match &item {
                Item::Submit { event } | Item::Stamped { event, .. } => Event::peek(event).ok(),
                Item::Refusal { .. } | Item::Readers { .. } => None,
            };
            // A submission refused for good is answered, so that its author learns of it.
            let submitted = match (&item, &header) {
                (Item::Submit { event }, Some(h)) => Some((
                    Hash::of(&event.header),
                    h.discussion.clone(),
                    h.author.clone(),
                )),
                _ => None,
            };
            // Messages and reactions leave the batch's dialogs and groups as they were.
            let plain = header
                .as_ref()
                .is_some_and(|h| h.kind.starts_with("message.") || h.kind.starts_with("reaction."));
            // A stamped event writes only under a savepoint of its own, or fails the whole
            // round (`fed_apply`): two statements fewer on the replica's hot path.
            let guarded = !matches!(item, Item::Stamped { .. });
            if guarded {
                b.savepoint().await?;
            }
            let mut delivered = Vec::new();
            // A stamped event is known once logged (`Round::advance`); a submission once taken.
            let submitted_id = match &item {
                Item::Submit { event } => Some(Hash::of(&event.header).to_hex()),
                Item::Stamped { .. } | Item::Refusal { .. } | Item::Readers { .. } => None,
            };
            let result = match item {
                Item::Submit { event } => {
                    self.fed_submit(b, &link, event, &mut round, &mut delivered)
                        .await
                }
                Item::Stamped { stamp, event } => {
                    self.fed_apply(b, &link, stamp, event, &mut round, &mut delivered)
                        .await
                }
                Item::Refusal {
                    event,
                    discussion,
                    author,
                    reason,
                } => {
                    self.fed_refusal(
                        b,
                        &link,
                        &event,
                        discussion,
                        author,
                        &reason,
                        &mut delivered,
                    )
                    .await
                }
                Item::Readers { discussion, users } => {
                    self.fed_readers(b, &link, &discussion, users, &mut round, &mut delivered)
                        .await
                }
            };
            self.set_applying(None);
            if !plain || result.is_err() {
                self.forget_cache();
            }
            if guarded {
                match &result {
                    Ok(_) => b.release().await?,
                    Err(_) => {
                        b.rollback_command().await?;
                        round.forget_users();
                    }
                }
            }
            match result {
                Ok(_) => {
                    // A repeat later in the round is skipped.
                    round.known.extend(submitted_id);
                    out.extend(delivered);
                    outcomes.push(FedOutcome::Applied);
                }
                Err(e @ DiscussionError::Store(StoreError::Conflict)) => {
                    self.refuse(b, &link, submitted, &e, out).await?;
                    outcomes.push(FedOutcome::Refused(e.to_string()));
                }
                Err(e @ (DiscussionError::Store(_) | DiscussionError::Undecided(_))) => {
                    return Err(e);
                }
                Err(DiscussionError::Unavailable) => {
                    held.insert(link);
                    outcomes.push(FedOutcome::Later);
                }
                Err(e) => {
                    tracing::error!(link, error = %e, "a received item was refused");
                    self.refuse(b, &link, submitted, &e, out).await?;
                    outcomes.push(FedOutcome::Refused(e.to_string()));
                }
            }
        }
        Ok(Done::Federated(outcomes))
    }

    /// Tells the peer of `link` that this node cannot take its user's event `(event id,
    /// discussion, author)` for good, and why: a submission, at the home; a share, elsewhere.
    /// Nothing is sent over a link that has ended.
    async fn refuse(
        &self,
        b: &mut Batch,
        link: &str,
        refused: Option<(Hash, String, String)>,
        error: &DiscussionError,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let Some((event, discussion, author)) = refused else {
            return Ok(());
        };
        if b.fed_link_peer(link).await?.is_none() {
            return Ok(());
        }
        let mut reason = error.to_string();
        if reason.len() > veche_federation::wire::MAX_REASON_BYTES {
            let mut end = veche_federation::wire::MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        let item = Item::Refusal {
            event,
            discussion,
            author,
            reason,
        };
        b.fed_enqueue(link, &encode(&item)).await?;
        out.push(Delivery::WakeLinks(vec![link.to_owned()]));
        Ok(())
    }

    /// A linked node could not take an event of one of this node's users: the home refused a
    /// submission, or a node a discussion was shared with could not take the share (a dialog
    /// with a user it does not have). The author is told; a refusal of nothing this node sent
    /// is ignored.
    #[allow(clippy::too_many_arguments)]
    async fn fed_refusal(
        &self,
        b: &mut Batch,
        link: &str,
        event: &Hash,
        discussion: String,
        author: String,
        reason: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
        let message_id = if self.is_home(&discussion) {
            // Only a share sent over this very link, and only its author is told.
            let shared_here = b.fed_shares(&discussion).await?.iter().any(|l| l == link);
            let stored = b.fed_share_event(&event.to_hex(), &discussion).await?;
            let shared_by = stored
                .and_then(|bytes| ciborium::from_reader::<EventWire, _>(bytes.as_slice()).ok())
                .and_then(|wire| Event::peek(&wire).ok())
                .map(|h| h.author);
            if !shared_here || shared_by.as_deref() != Some(author.as_str()) {
                return Ok(Done::Nothing);
            }
            None
        } else {
            match b
                .fed_refuse_pending(&event.to_hex(), &discussion, &author, &reason)
                .await?
            {
                Some(message) => message,
                None => return Ok(Done::Nothing),
            }
        };
        tracing::warn!(link, discussion, author, reason, "a linked node refused");
        out.push(Delivery::Personal {
            users: vec![author],
            event: veche_protocol::Event::NotDelivered {
                discussion,
                message_id,
                reason,
            },
        });
        Ok(Done::Nothing)
    }

    /// At the home: a linked node's submission for one of its users.
    async fn fed_submit(
        &self,
        b: &mut Batch,
        link: &str,
        wire: EventWire,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let event = Event::stored(wire).map_err(fed_error)?;
        let h = event.header().clone();
        if !self.is_home(&h.discussion) {
            return Err(fed_error("this node is not the discussion's home"));
        }
        if round.known.contains(&event.id().to_hex()) {
            return Ok(Done::Nothing);
        }
        let peer = round
            .peer(b, link)
            .await?
            .ok_or_else(|| fed_error("the link has ended"))?;
        if peer != h.origin {
            return Err(fed_error(
                "the event comes from another node than the link's",
            ));
        }
        if h.kind == "dialog.open" {
            return self.fed_open_dialog(b, link, &event, out).await;
        }
        let shared = b.fed_shares(&h.discussion).await?.iter().any(|l| l == link);
        let shared_again = match (shared, b.discussion(&h.discussion).await?) {
            (false, Some(d)) => self.share_dialog_again(b, &d, out).await?.as_deref() == Some(link),
            _ => false,
        };
        if !shared && !shared_again {
            return Err(DiscussionError::Forbidden(format!(
                "{} is not shared with {}",
                h.discussion, h.origin
            )));
        }
        let origin_key = b
            .fed_link_key(link)
            .await?
            .map(veche_federation::keys::PublicKey)
            .ok_or_else(|| fed_error("the link has ended"))?;
        if !matches!(
            h.kind.as_str(),
            "message.post" | "message.edit" | "message.delete" | "reaction.add" | "reaction.remove"
        ) {
            return Err(DiscussionError::Forbidden(format!(
                "{} is changed on its home node only ({})",
                h.discussion, h.kind
            )));
        }
        let body = body_of(&event)?;
        round.user(b, &h.author, &self.node, self.now()).await?;
        let caller = author(&event, false);
        self.set_applying(Some(Applying {
            event: event.clone(),
            origin_key,
        }));
        let result = self
            .apply_change(b, &caller, &h.discussion, &h.kind, body, &event, out)
            .await;
        self.set_applying(None);
        result
    }

    /// The discussion and body of `item` if it is the home's stamped post of plain text (no
    /// reply, no mention, no file): one [`Self::fed_posts`] stores with others in a few statements.
    fn plain_post(&self, item: &Item) -> Option<(String, Body)> {
        let Item::Stamped { event, .. } = item else {
            return None;
        };
        let header = Event::peek(event).ok()?;
        if header.kind != "message.post" || self.is_home(&header.discussion) {
            return None;
        }
        let body: Body = serde_json::from_slice(event.body.as_deref()?).ok()?;
        let text = body.text.as_deref()?;
        let plain = body.reply_to.is_none()
            && body.files.is_empty()
            && text::mentioned_logins(&text::convert_shortcodes(text), self.node.as_str())
                .is_empty();
        plain.then_some((header.discussion, body))
    }

    /// On a replica: a run of the home's plain posts to one discussion ([`Self::plain_post`]).
    /// Each is checked as [`Self::fed_apply`] checks it and applied as a send would apply it
    /// (one this node cannot apply is skipped, its stamp still logged), but the messages,
    /// their events and their log entries are stored in multi-row statements, and the
    /// discussion's number is written once. Every write is made only after every check, so
    /// the run needs no savepoint: a storage error fails the round.
    async fn fed_posts(
        &self,
        b: &mut Batch,
        link: &str,
        run: Vec<(Item, Body)>,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Vec<Result<(), DiscussionError>>, DiscussionError> {
        // Only what a later round may get past fails this one; anything else skips its item.
        let fails_round = |e: &DiscussionError| {
            matches!(
                e,
                DiscussionError::Unavailable
                    | DiscussionError::Store(
                        StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Aborted(_)
                    )
            )
        };
        let fail = |e: DiscussionError| match e {
            e @ DiscussionError::Store(StoreError::Database(_) | StoreError::Migrate(_)) => e,
            other => DiscussionError::Store(StoreError::Aborted(other.to_string())),
        };
        let mut outcomes = Vec::with_capacity(run.len());
        let mut next = Vec::with_capacity(run.len());
        for (item, body) in run {
            let Item::Stamped { stamp, event } = item else {
                outcomes.push(Err(fed_error("not a stamped event")));
                continue;
            };
            match self.fed_check(b, link, stamp, event, round).await {
                Ok(Some(n)) => {
                    round.advance(&n.stamp, &n.event);
                    next.push((n, body));
                    outcomes.push(Ok(()));
                }
                Ok(None) => outcomes.push(Ok(())),
                Err(e) if fails_round(&e) => return Err(fail(e)),
                Err(e) => outcomes.push(Err(e)),
            }
        }
        let at = self.now();
        let mut logs = Vec::with_capacity(next.len());
        // Each with the index of its log entry.
        let mut accepted: Vec<(usize, Caller, MessageRow)> = Vec::with_capacity(next.len());
        let mut d: Option<DiscussionRow> = None;
        for (Next { stamp, event }, body) in next {
            let message_id = self.message_id_for(&event, &body);
            logs.push(log_row(&stamp, &event, message_id.clone()));
            let caller = author(&event, true);
            let m = SendMessage {
                discussion: stamp.body().discussion.clone(),
                client_msg_id: event.id().to_hex(),
                text: body.text.unwrap_or_default(),
                reply_to: None,
                data: None,
                actions: Vec::new(),
                files: Vec::new(),
            };
            let checked = match (message_id, self.content(&m)) {
                (None, _) => Err(fed_error("the post names no message")),
                (Some(_), Err(e)) => Err(e),
                (Some(id), Ok(content)) => {
                    match self.readable_as(b, &caller, &m.discussion, true).await {
                        Ok((_, grant)) if !grant.write => Err(super::read_only()),
                        Ok((row, _)) => {
                            match round.user(b, &caller.user, &self.node, self.now()).await {
                                Ok(()) => Ok((id, content, row)),
                                Err(e) => Err(e),
                            }
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            let (id, content, row) = match checked {
                Ok(ok) => ok,
                Err(e) if fails_round(&e) => return Err(fail(e)),
                Err(e) => {
                    tracing::warn!(discussion = m.discussion, event = %event.id(), error = %e, "a federated post could not be applied here; skipped");
                    continue;
                }
            };
            d.get_or_insert(row);
            accepted.push((
                logs.len() - 1,
                caller.clone(),
                MessageRow {
                    id,
                    discussion_id: m.discussion,
                    seq: 0,
                    author: caller.user,
                    device_id: caller.device,
                    client_msg_id: m.client_msg_id,
                    payload_hash: content.hash,
                    text: Some(content.text),
                    data: content.data,
                    actions: content.actions,
                    reply_to: None,
                    created_at: at,
                    edited_at: None,
                    version: 1,
                    deleted: false,
                },
            ));
        }
        // The home names its messages, and a local client chooses its device and message ids:
        // a post whose id, or whose exactly-once key, is taken here (or earlier in the run) is
        // skipped as a send would refuse it, rather than failing the round.
        let rows: Vec<&MessageRow> = accepted.iter().map(|(_, _, row)| row).collect();
        let taken = b.messages_taken(&rows).await?;
        let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
        let mut posts: Vec<(Caller, MessageRow)> = Vec::with_capacity(accepted.len());
        for (i, (entry, caller, mut row)) in accepted.into_iter().enumerate() {
            let key = (
                row.author.clone(),
                row.device_id.clone(),
                row.client_msg_id.clone(),
            );
            if taken.contains(&i) || ids.contains(&row.id) || keys.contains(&key) {
                tracing::warn!(
                    message = row.id,
                    "a federated post names a message or client id in use here; skipped"
                );
                // Its log entry must not point at the message that holds the id here.
                logs[entry].message_id = None;
                continue;
            }
            ids.insert(row.id.clone());
            keys.insert(key);
            let Some(d) = &d else {
                continue;
            };
            row.seq = d.last_seq + 1 + posts.len() as i64;
            posts.push((caller, row));
        }
        if let (Some(d), Some((_, last))) = (&d, posts.last()) {
            let rows: Vec<MessageRow> = posts.iter().map(|(_, row)| row.clone()).collect();
            b.insert_messages(&rows)
                .await
                .map_err(DiscussionError::Store)?;
            self.set_seq(b, &d.id, last.seq, at).await?;
            let events: Vec<EventRow> = rows
                .iter()
                .map(|row| EventRow {
                    discussion_id: d.id.clone(),
                    seq: row.seq,
                    kind: "message_posted".into(),
                    actor: row.author.clone(),
                    at,
                    message_id: Some(row.id.clone()),
                    detail: "{}".into(),
                })
                .collect();
            b.insert_events(&events).await?;
            let mut d = d.clone();
            d.last_seq = last.seq;
            if d.kind == "object" {
                // As a send does: posting puts an object discussion in one's list.
                let mut authors: Vec<&str> = posts.iter().map(|(c, _)| c.user.as_str()).collect();
                authors.sort_unstable();
                authors.dedup();
                for author in authors {
                    b.set_follow(author, &d.id, true).await?;
                }
            }
            for (caller, row) in posts {
                self.announce_posted(b, &caller, &d, row, Vec::new(), None, Vec::new(), out)
                    .await
                    .map_err(fail)?;
            }
        }
        b.fed_log_append_many(&logs).await?;
        Ok(outcomes)
    }

    /// On a replica: whether the home's stamped event is the next of its discussion's log
    /// here (`Some`), or one this node has already (`None`); refused if it is neither.
    async fn fed_check(
        &self,
        b: &mut Batch,
        link: &str,
        stamp: Signed,
        wire: EventWire,
        round: &mut Round,
    ) -> Result<Option<Next>, DiscussionError> {
        let stamp = Stamp::stored(stamp).map_err(fed_error)?;
        let event = Event::stored(wire).map_err(fed_error)?;
        stamp.check_event(&event).map_err(fed_error)?;
        // The log's numbers are SQLite integers.
        if i64::try_from(stamp.body().seq).is_err() {
            return Err(fed_error("a stamp's number is out of range"));
        }
        let h = event.header().clone();
        let discussion = stamp.body().discussion.clone();
        if round.peer(b, link).await?.as_deref() != node_of(&discussion) {
            return Err(fed_error(
                "stamped by a node that is not the discussion's home",
            ));
        }
        if round.known.contains(&event.id().to_hex()) {
            return Ok(None);
        }
        let head = match round.heads.get(&discussion) {
            Some(head) => Some(*head),
            None => match b.fed_head(&discussion).await? {
                Some(head) => Some(Head {
                    seq: u64::try_from(head.fseq).unwrap_or(0),
                    hash: stamp_hash(&head.stamp)?,
                }),
                None => None,
            },
        };
        match head {
            // A replica's log starts where the discussion was shared with it.
            None if h.kind == "discussion.share" => {}
            None => return Err(fed_error("the discussion was never shared with this node")),
            Some(head) => {
                match head.next(&stamp) {
                    Ok(_) => {}
                    Err(ChainError::Old { seq, head }) => {
                        // Known events were skipped above: an unknown one at an old number is
                        // the home numbering again what it had numbered (restored from a
                        // backup). It is skipped, and said.
                        tracing::warn!(
                            discussion,
                            seq,
                            head,
                            event = %event.id(),
                            "the home stamped a number it had given another event (restored from a backup?); skipped"
                        );
                        return Ok(None);
                    }
                    // A share is a snapshot: it restarts a replica that lost its place (the
                    // home's administrator shares the group again).
                    // (Or, a home restored from a backup shares it past where this node is,
                    // after numbers it may have given other events: see `fed_rejoin`.)
                    Err(ChainError::Gap { .. } | ChainError::Fork { .. })
                        if h.kind == "discussion.share" =>
                    {
                        tracing::warn!(
                            discussion,
                            "the home resent the group's state; following it from here"
                        );
                    }
                    // Items come in order, and an earlier one that must wait holds this one
                    // back: a gap here means the predecessor was refused for good. The group
                    // stops on this node until its home shares it again.
                    Err(e) => {
                        return Err(fed_error(format!(
                            "{e}; the group waits for its home to share it again"
                        )));
                    }
                }
            }
        }
        Ok(Some(Next { stamp, event }))
    }

    /// On a replica: the home's next stamped event, applied if it follows the log.
    async fn fed_apply(
        &self,
        b: &mut Batch,
        link: &str,
        stamp: Signed,
        wire: EventWire,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(Next { stamp, event }) = self.fed_check(b, link, stamp, wire, round).await? else {
            return Ok(Done::Nothing);
        };
        let h = event.header().clone();
        let discussion = stamp.body().discussion.clone();
        // What this node cannot read or apply is skipped below; the stamp still enters the log.
        let body = body_of(&event).unwrap_or_default();
        // What the home stamped, it authorized: the author acts with every right here.
        let caller = author(&event, true);
        self.set_applying(Some(Applying {
            event: event.clone(),
            origin_key: stamp.body().origin_key,
        }));
        // The change is applied in a savepoint of its own: if this node cannot apply it (a
        // reply to a message from before the share, a user unknown here), it is skipped and
        // logged, and the log goes on: one event never stops a group.
        b.savepoint().await?;
        let mut delivered = Vec::new();
        let result = match self.known_users(b, &event, &body, round).await {
            Err(e) => Err(e),
            Ok(()) if h.kind == "discussion.share" => {
                self.apply_share(b, &caller, &discussion, &body, &mut delivered)
                    .await
            }
            Ok(()) => {
                self.apply_change(
                    b,
                    &caller,
                    &discussion,
                    &h.kind,
                    body.clone(),
                    &event,
                    &mut delivered,
                )
                .await
            }
        };
        self.set_applying(None);
        let done = match result {
            Ok(done) => {
                b.release().await?;
                out.extend(delivered);
                done
            }
            Err(
                e @ (DiscussionError::Unavailable | DiscussionError::Store(StoreError::Aborted(_))),
            ) => {
                b.rollback_command().await?;
                round.forget_users();
                self.forget_cache();
                return Err(e);
            }
            Err(e @ DiscussionError::Store(StoreError::Database(_) | StoreError::Migrate(_))) => {
                b.rollback_command().await?;
                round.forget_users();
                self.forget_cache();
                return Err(e);
            }
            Err(e) => {
                b.rollback_command().await?;
                round.forget_users();
                // What the cache saw of the undone change is undone too.
                self.forget_cache();
                tracing::warn!(discussion, kind = h.kind, event = %event.id(), error = %e, "a federated change could not be applied here; skipped");
                if h.kind == "discussion.share" {
                    // The home's user learns that this node cannot take part (a dialog with
                    // a user it does not have), in words that say nothing of who exists here.
                    let refused = (event.id(), discussion.clone(), h.author.clone());
                    let why = DiscussionError::Forbidden(format!(
                        "{} cannot take part in this discussion",
                        self.node
                    ));
                    self.refuse(b, link, Some(refused), &why, out).await?;
                }
                Done::Nothing
            }
        };
        let message_id = match h.kind.as_str() {
            "message.post" => self.message_id_for(&event, &body),
            _ => body.message.clone(),
        };
        b.fed_log_append(&log_row(&stamp, &event, message_id.clone()))
            .await?;
        round.advance(&stamp, &event);
        if h.kind == "message.delete"
            && let Some(m) = &message_id
        {
            purge_bodies(b, &discussion, m).await?;
        }
        Ok(done)
    }

    /// Makes sure the users an event names are known here (users of other nodes as profile
    /// records).
    async fn known_users(
        &self,
        b: &mut Batch,
        event: &Event,
        body: &Body,
        round: &mut Round,
    ) -> Result<(), DiscussionError> {
        for user in body.users.iter().chain(body.members.iter().map(|(u, _)| u)) {
            round.user(b, user, &self.node, self.now()).await?;
        }
        round
            .user(b, &event.header().author, &self.node, self.now())
            .await
    }

    fn message_id_for(&self, event: &Event, body: &Body) -> Option<String> {
        body.message.clone().or_else(|| {
            node_of(&event.header().discussion).map(|home| message_id_of(&event.id(), home))
        })
    }

    /// Applies a message, reaction, member or title change through the ordinary command.
    #[allow(clippy::too_many_arguments)]
    async fn apply_change(
        &self,
        b: &mut Batch,
        caller: &Caller,
        discussion: &str,
        kind: &str,
        body: Body,
        event: &Event,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let message = || {
            body.message
                .clone()
                .ok_or_else(|| fed_error("the event names no message"))
        };
        match kind {
            "message.post" => {
                let text = body.text.clone().unwrap_or_default();
                // A reply to a message this node never had (written before the share) is
                // shown as a plain message here.
                let reply_to = match &body.reply_to {
                    Some(r)
                        if b.message(r)
                            .await?
                            .is_some_and(|m| m.discussion_id == discussion) =>
                    {
                        Some(r.clone())
                    }
                    _ => None,
                };
                let files = self
                    .record_files(b, discussion, &caller.user, event, &body.files)
                    .await?;
                self.send(
                    b,
                    caller,
                    SendMessage {
                        discussion: discussion.to_owned(),
                        client_msg_id: event.id().to_hex(),
                        text,
                        reply_to,
                        data: None,
                        actions: Vec::new(),
                        files,
                    },
                    out,
                )
                .await
            }
            "message.edit" => {
                let text = body.text.clone().unwrap_or_default();
                self.edit(b, caller, discussion, &message()?, &text, out)
                    .await
            }
            "message.delete" => self.delete(b, caller, discussion, &message()?, out).await,
            "reaction.add" | "reaction.remove" => {
                let emoji = body.emoji.clone().unwrap_or_default();
                self.react(
                    b,
                    caller,
                    discussion,
                    &message()?,
                    &emoji,
                    kind == "reaction.add",
                    out,
                )
                .await
            }
            "member.add" => {
                self.add_members(b, caller, discussion, &body.users, out)
                    .await
            }
            "member.remove" => {
                let user = body
                    .users
                    .first()
                    .ok_or_else(|| fed_error("the event names no member"))?;
                self.remove_member(b, caller, discussion, user, out).await
            }
            "discussion.title" => {
                let title = body.title.clone().unwrap_or_default();
                self.set_title(b, caller, discussion, &title, out).await
            }
            other => Err(fed_error(format!("unknown kind {other}"))),
        }
    }

    /// On a replica: what a local user's files attached to a post for `d`'s home say of
    /// themselves, once they pass the scope of the link to the home (the home fetches their
    /// contents from here).
    pub(super) async fn files_for_home(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        files: &[String],
    ) -> Result<Vec<FileRef>, DiscussionError> {
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let home = node_of(&d.id).unwrap_or_default();
        let scope = match b.fed_link_to(home).await? {
            Some(link) => b.fed_link_scope(&link).await?,
            None => None,
        };
        let Some(scope) = scope else {
            return Err(DiscussionError::Forbidden(format!(
                "this discussion lives on {home}, and there is no active link with it"
            )));
        };
        let max_mb = serde_json::from_str::<veche_federation::grant::Scope>(&scope)
            .map_err(|e| DiscussionError::Store(StoreError::Aborted(e.to_string())))?
            .max_file_mb;
        let rows = b.files_by_id(files).await?;
        for f in &rows {
            let size = u64::try_from(f.size).unwrap_or(u64::MAX);
            if max_mb == 0 || size > max_mb.saturating_mul(1024 * 1024) {
                let why = if max_mb == 0 {
                    format!("the link with {home} carries no files")
                } else {
                    format!(
                        "the link with {home} carries files of at most {max_mb} MiB; {} is {} bytes",
                        f.name, f.size
                    )
                };
                return Err(DiscussionError::Refused(Box::new(
                    veche_protocol::ErrorBody::refused_by("link.max_file_mb", why),
                )));
            }
        }
        Ok(rows.iter().map(FileRef::of).collect())
    }

    /// Records the files a federated post carries, as files of `discussion` uploaded by
    /// `uploader`, and gives their ids here (derived from the event, so the same on a retry).
    /// A content not held here is recorded as waiting at a linked node. Each file names the
    /// node it is fetched from until that node has sent its content (a hash names a content
    /// but proves nothing). At the home the files must fit the link they came over and this
    /// node's policy (a refusal refuses the post); a replica takes what the home accepted.
    pub(super) async fn record_files(
        &self,
        b: &mut Batch,
        discussion: &str,
        uploader: &str,
        event: &Event,
        refs: &[FileRef],
    ) -> Result<Vec<String>, DiscussionError> {
        if refs.len() > crate::discussions::attachments::MAX_FILES_PER_MESSAGE {
            return Err(fed_error("too many files"));
        }
        let home = self.is_home(discussion);
        let kind = match b.discussion(discussion).await? {
            Some(d) => d.kind,
            None => return Err(DiscussionError::NotFound("discussion")),
        };
        // The node a content is fetched from, which must show it holds it (at the home, the
        // uploader's node: the event's origin).
        let source =
            crate::discussions::attachments::source_node(self.node.as_str(), discussion, uploader)
                .unwrap_or_default()
                .to_owned();
        // At the home, files must fit the link they come over.
        let max_bytes = if home {
            let scope = match b.fed_link_to(&source).await? {
                Some(link) => b.fed_link_scope(&link).await?,
                None => None,
            };
            let scope = scope.ok_or_else(|| fed_error("the link has ended"))?;
            let scope: veche_federation::grant::Scope =
                serde_json::from_str(&scope).map_err(fed_error)?;
            Some(scope.max_file_mb.saturating_mul(1024 * 1024))
        } else {
            None
        };
        let own = event.header().origin == self.node.as_str();
        let at = self.now();
        let mut ids = Vec::with_capacity(refs.len());
        for (position, r) in refs.iter().enumerate() {
            let size = i64::try_from(r.size).map_err(|_| fed_error("a file is too large"))?;
            if !veche_protocol::files::is_sha256_hex(&r.sha256) || r.name.is_empty() {
                return Err(fed_error("a file is named without a name or a SHA-256"));
            }
            let name = crate::file_policy::sanitize_name(&r.name);
            if let Some(max) = max_bytes {
                if max == 0 || r.size > max {
                    return Err(DiscussionError::Refused(Box::new(
                        veche_protocol::ErrorBody::refused_by(
                            "link.max_file_mb",
                            format!("the link with {source} carries no file of {} bytes", r.size),
                        ),
                    )));
                }
                crate::file_policy::check_declared(&self.config.files, &kind, &name, r.size)
                    .map_err(|e| DiscussionError::Refused(Box::new(e)))?;
            }
            // This node's own user's upload, coming back stamped, needs no proof.
            let proven = own
                && b.fed_submitted_content(&event.id().to_hex(), &r.sha256)
                    .await?;
            let id = Hash::of(
                format!("veche-fed/v1/file\0{}\0{position}", event.id().to_hex()).as_bytes(),
            )
            .to_hex();
            let file = FileRow {
                id: format!("f_{}", &id[..32]),
                name,
                size,
                discussion_id: discussion.to_owned(),
                uploader: uploader.to_owned(),
                created_at: at,
                attached: false,
                sha256: r.sha256.clone(),
                backend: REMOTE_BACKEND.to_owned(),
                mime: r.mime.chars().take(255).collect(),
                thumbnail: false,
                width: None,
                height: None,
                linked_from: (!proven).then(|| source.clone()),
            };
            let blob = BlobRow {
                sha256: file.sha256.clone(),
                size,
                backend: REMOTE_BACKEND.to_owned(),
                mime: file.mime.clone(),
                thumbnail: false,
                width: None,
                height: None,
                created_at: at,
            };
            b.record_linked_file(&file, &blob).await?;
            ids.push(file.id);
        }
        Ok(ids)
    }

    /// On a replica: the discussion as its home shared it (created here, or its members
    /// brought up to date).
    async fn apply_share(
        &self,
        b: &mut Batch,
        caller: &Caller,
        discussion: &str,
        body: &Body,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let at = self.now();
        let existing = b.discussion(discussion).await?;
        if body.kind.as_deref() == Some("object")
            || existing.as_ref().is_some_and(|d| d.kind == "object")
        {
            return self
                .apply_object_share(b, caller, discussion, existing, body, out)
                .await;
        }
        let d = match existing {
            Some(d) => d,
            None if body.kind.as_deref() == Some("dialog") => {
                let mut pair: Vec<&str> = body.members.iter().map(|(u, _)| u.as_str()).collect();
                pair.sort_unstable();
                let key = pair.join("\n");
                let home = node_of(discussion).unwrap_or_default();
                let nodes: Vec<Option<&str>> = pair.iter().map(|u| node_of(u)).collect();
                // One user of the home, one of this node, the home the name that sorts first,
                // and the id both nodes derive.
                let well_formed = pair.len() == 2
                    && nodes.contains(&Some(home))
                    && nodes.contains(&Some(self.node.as_str()))
                    && home < self.node.as_str()
                    && pair.contains(&caller.user.as_str())
                    && dialog_id(&key, home) == discussion;
                if !well_formed {
                    return Err(fed_error("a shared dialog is not between its two users"));
                }
                let with = if pair[0] == caller.user {
                    pair[1]
                } else {
                    pair[0]
                };
                // This node's user must be a person who may be reached from there: the same
                // rule a home applies to `dialog.open`.
                let mine = pair
                    .iter()
                    .find(|u| node_of(u) == Some(self.node.as_str()))
                    .copied()
                    .unwrap_or_default();
                let link = b
                    .fed_link_to(home)
                    .await?
                    .ok_or_else(|| fed_error("the link has ended"))?;
                if !b.fed_reachable(&link, home, mine, full_directory).await? {
                    return Err(DiscussionError::NotFound("user"));
                }
                return self.open_linked_dialog(b, caller, with, key, out).await;
            }
            None => {
                let d = DiscussionRow {
                    id: discussion.to_owned(),
                    ..self.new_discussion(
                        veche_protocol::discussions::DiscussionKind::Group,
                        body.title.clone().unwrap_or_default(),
                        caller,
                    )
                };
                b.insert_discussion(&d).await?;
                for (user, role) in &body.members {
                    let role = if role == "owner" { "owner" } else { "member" };
                    b.add_member(&d.id, user, role, at).await?;
                }
                self.forget_cache();
                self.announce_created(b, &d, out).await?;
                return Ok(Done::Discussion(d.id));
            }
        };
        // The snapshot is authoritative: members it lacks leave, its title holds.
        let present: Vec<String> = b.members(&d.id).await?.into_iter().map(|m| m.0).collect();
        let mut added = Vec::new();
        for (user, role) in &body.members {
            if !present.contains(user) {
                let role = if role == "owner" { "owner" } else { "member" };
                b.add_member(&d.id, user, role, at).await?;
                added.push(user.clone());
            }
        }
        if !added.is_empty() {
            self.forget_cache();
            self.announce_members_added(b, &d, &caller.user, added, out)
                .await?;
        }
        for user in present {
            if !body.members.iter().any(|(m, _)| *m == user) {
                self.forget_cache();
                self.remove_member(b, caller, &d.id, &user, out).await?;
            }
        }
        if let Some(title) = &body.title
            && *title != d.title
        {
            self.forget_cache();
            self.set_title(b, caller, &d.id, title, out).await?;
        }
        Ok(Done::Discussion(d.id))
    }

    /// At the home: shares a group over a link and sends its state as the first entry the
    /// other node sees.
    pub(super) async fn share(
        &self,
        b: &mut Batch,
        discussion: &str,
        link: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        let d = b
            .discussion(discussion)
            .await?
            .ok_or(DiscussionError::NotFound("discussion"))?;
        if !self.is_home(&d.id) {
            return Err(DiscussionError::BadRequest(
                "only the discussion's home node shares it".into(),
            ));
        }
        if b.fed_link_peer(link).await?.is_none() {
            return Err(DiscussionError::NotFound("link"));
        }
        // An object discussion is shared when a user of the other node opens it; sharing it
        // again by hand restarts a copy there that lost its place in the log.
        let again = d.kind == "object" && b.fed_shares(&d.id).await?.iter().any(|l| l == link);
        if d.kind != "group" && !again {
            return Err(DiscussionError::BadRequest(
                "only groups can be shared with another node by an administrator (an object \
                 discussion only again, over a link it is shared over)"
                    .into(),
            ));
        }
        self.share_state(b, key, &d, link, out).await
    }

    /// At the home: shares `d` over `link` and queues its state (members, title) as the next
    /// entry of its log, for every link it is shared over.
    async fn share_state(
        &self,
        b: &mut Batch,
        key: &veche_federation::keys::NodeKey,
        d: &DiscussionRow,
        link: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        self.share_state_after(b, key, d, (link, 0), out).await
    }

    /// [`Self::share_state`], numbered after `after` at least.
    async fn share_state_after(
        &self,
        b: &mut Batch,
        key: &veche_federation::keys::NodeKey,
        d: &DiscussionRow,
        (link, after): (&str, i64),
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        // Sharing again sends the group's state again: a replica that lost its place in the
        // log starts over from it.
        b.fed_add_share(&d.id, link, self.now()).await?;
        let members = b.members(&d.id).await?;
        // This node signs the share for one of its users: the creator, or (a dialog a user of
        // the other node opened) the member who is on this node. An object discussion is
        // shared by its application: whoever opened it here stays unnamed to the linked node.
        let mine = |u: &String| node_of(u) == Some(self.node.as_str());
        let app = d
            .object_app
            .as_ref()
            .map(|app| format!("{app}@{}", self.node));
        let author = app
            .iter()
            .chain(std::iter::once(&d.created_by))
            .chain(members.iter().map(|m| &m.0))
            .find(|u| mine(u))
            .cloned()
            .ok_or_else(|| fed_error("the discussion has no member on this node"))?;
        let object = match (&d.object_app, &d.object_type, &d.object_id) {
            (Some(application), Some(object_type), Some(object_id)) => Some(ObjectRef {
                application: application.clone(),
                object_type: object_type.clone(),
                object_id: object_id.clone(),
            }),
            _ => None,
        };
        let body = Body {
            kind: Some(d.kind.clone()),
            title: Some(d.title.clone()),
            members: members.into_iter().collect(),
            object,
            ..Body::default()
        };
        let txn = uuid::Uuid::new_v4().simple().to_string();
        let header = self.header("discussion.share", &d.id, &author, txn, None);
        let bytes = serde_json::to_vec(&body).map_err(fed_error)?;
        let event = Event::create(key, header, Some(bytes)).map_err(fed_error)?;
        // Every link gets it: the log is one chain; nodes that had the discussion already
        // bring their member lists up to date.
        let links = b.fed_shares(&d.id).await?;
        let entry = (&event, key.public(), None);
        self.stamp_and_queue_after(b, &d.id, entry, after, &links, out)
            .await?;
        Ok(Done::Nothing)
    }
}

impl Sequencer {
    /// At the home: a linked node's user opens the discussion of one of this node's objects
    /// (`Query::Object`; `held` is what their node holds for them). The object's rule decides
    /// for them exactly as for a user here (the application's context provider or access
    /// list). If they may see it, the discussion is opened if need be and shared over the link
    /// (again, if their node lost it), and their node is told what they may do there unless
    /// it holds that already; if not, it is told that too, should it hold otherwise.
    pub(super) async fn fed_open_object(
        &self,
        b: &mut Batch,
        link: &str,
        (user, held): (&str, Option<wire::Access>),
        object: &ObjectRef,
        title: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        let peer = b
            .fed_link_peer(link)
            .await?
            .ok_or(DiscussionError::NotFound("link"))?;
        if node_of(user) != Some(peer.as_str()) {
            return Err(DiscussionError::NotFound("object"));
        }
        let scope = b.fed_link_scope(link).await?.unwrap_or_default();
        let objects = serde_json::from_str::<veche_federation::grant::Scope>(&scope)
            .is_ok_and(|s| s.object_discussions);
        if !objects {
            return Err(DiscussionError::NotFound("object"));
        }
        let object_key = ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        let access = object_access(b, self, object_key, user).await?;
        let existing = b.object_discussion(object_key).await?;
        let d = match (access, existing) {
            (Access::None, existing) => {
                // Told only if it was told otherwise (what the node says it holds is not
                // trusted here: it would learn of the discussion): a refusal queues nothing.
                if let Some(d) = existing
                    && b.fed_reader(&d.id, user).await?.is_some()
                {
                    self.tell_reader(b, &d, link, user, None, out).await?;
                }
                return Ok(Done::Reader(None));
            }
            (_, Some(d)) => d,
            (_, None) => {
                let caller = Caller {
                    user: user.to_owned(),
                    device: format!("fed-{peer}"),
                    admin: false,
                    connection: 0,
                };
                // Known here by id from now on, like any user of a linked node.
                remote_user(b, user, &self.node, self.now()).await?;
                let Done::Discussion(id) = self.open_object(b, &caller, object, title, out).await?
                else {
                    return Err(fed_error("opening an object gave no discussion"));
                };
                b.discussion(&id)
                    .await?
                    .ok_or(DiscussionError::NotFound("object"))?
            }
        };
        // Shared again if the node lost it, but not more often than every few minutes: each
        // share is an entry of the discussion's log.
        let now = self.now();
        let share = match b.fed_shared_at(&d.id, link).await? {
            None => true,
            Some(at) => held.is_none() && now.saturating_sub(at) >= SHARE_AGAIN_AFTER_MS,
        };
        if share {
            self.share_state(b, key, &d, link, out).await?;
        }
        let write = access == Access::Write;
        let told = b.fed_reader(&d.id, user).await?;
        if share || held != Some(reader_to_wire(Some(write))) || told != Some(write) {
            self.tell_reader(b, &d, link, user, Some(write), out)
                .await?;
        }
        Ok(Done::Reader(Some((d.id, write))))
    }

    /// At the home: records what `user` of the peer of `link` may do in the object discussion
    /// `d`, and tells the peer. When the last of the peer's users may no longer read it, the
    /// discussion is no longer shared over the link.
    async fn tell_reader(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        link: &str,
        user: &str,
        access: ReaderAccess,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        b.fed_set_reader(&d.id, user, access).await?;
        let item = Item::Readers {
            discussion: d.id.clone(),
            users: vec![Reader {
                user: user.to_owned(),
                access: reader_to_wire(access),
            }],
        };
        b.fed_enqueue(link, &encode(&item)).await?;
        if access.is_none() {
            let peer = node_of(user);
            let others = b
                .fed_readers(&d.id)
                .await?
                .iter()
                .any(|(u, _)| node_of(u) == peer);
            if !others {
                b.fed_unshare(&d.id, link).await?;
            }
        }
        out.push(Delivery::WakeLinks(vec![link.to_owned()]));
        Ok(())
    }

    /// At the home: decides again for every user of a linked node told they may read the
    /// object discussion `d`, and tells their nodes of each change (an access list changed, or
    /// a context provider may answer otherwise now). A context provider is asked once for all
    /// of them; if it fails, nothing changes now.
    pub(super) async fn recheck_readers(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let (Some(app), Some(kind), Some(id)) = (&d.object_app, &d.object_type, &d.object_id)
        else {
            return Ok(());
        };
        if self.fed.key.is_none() || !self.is_home(&d.id) || is_linked_object(app) {
            return Ok(());
        }
        let readers = b.fed_readers(&d.id).await?;
        if readers.is_empty() {
            return Ok(());
        }
        let object_key = ObjectKey { app, kind, id };
        let decided: Vec<Access> = if self.plugins.serves(kind) {
            let object = ObjectRef {
                application: app.clone(),
                object_type: kind.clone(),
                object_id: id.clone(),
            };
            let users: Vec<String> = readers.iter().map(|(u, _)| u.clone()).collect();
            match self.provider_answers(&object, &users)? {
                Some(decided) if decided.len() == users.len() => decided,
                _ => return Ok(()),
            }
        } else {
            let mut decided = Vec::with_capacity(readers.len());
            for (user, _) in &readers {
                decided.push(object_access(b, self, object_key, user).await?);
            }
            decided
        };
        for ((user, write), now) in readers.into_iter().zip(decided) {
            let now = match now {
                Access::None => None,
                Access::Read => Some(false),
                Access::Write => Some(true),
            };
            if now == Some(write) {
                continue;
            }
            let link = match node_of(&user) {
                Some(node) => b.fed_link_to(node).await?,
                None => None,
            };
            match link {
                Some(link) => self.tell_reader(b, d, &link, &user, now, out).await?,
                // No link reaches the user's node any more (its readers went with it).
                None => {
                    b.fed_set_reader(&d.id, &user, None).await?;
                }
            }
        }
        Ok(())
    }

    /// See [`super::Op::FedResync`].
    pub(super) async fn fed_resync(
        &self,
        b: &mut Batch,
        link: &str,
        received: i64,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        let Some(peer) = b.fed_link_peer(link).await? else {
            return Ok(Done::Nothing);
        };
        b.fed_renumber_outbox(link, received).await?;
        for id in b.fed_shared_over(link).await? {
            let Some(d) = b.discussion(&id).await?.filter(|d| self.is_home(&d.id)) else {
                continue;
            };
            self.share_tolerant(self.share_state(b, key, &d, link, out).await)?;
            for (user, write) in b.fed_readers(&d.id).await? {
                if node_of(&user) == Some(peer.as_str()) {
                    self.tell_reader(b, &d, link, &user, Some(write), out)
                        .await?;
                }
            }
        }
        out.push(Delivery::WakeLinks(vec![link.to_owned()]));
        Ok(Done::Nothing)
    }

    /// At a home restored from a backup: `heads` are where the peer of `link` is in the logs
    /// of discussions this node is home of. Each discussion's state is shared again, numbered
    /// two past the peer's head or this node's, whichever is further: the peer takes a share
    /// after a gap as a new start (as every other node it is shared with, whose head may be
    /// anywhere: a share that does not chain is taken as a new start too), and the log goes
    /// on from there. A discussion that cannot be shared is skipped and logged.
    pub(super) async fn fed_rejoin(
        &self,
        b: &mut Batch,
        link: &str,
        heads: Vec<(String, i64)>,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Some(key) = &self.fed.key else {
            return Err(DiscussionError::Unavailable);
        };
        if b.fed_link_peer(link).await?.is_none() {
            return Ok(Done::Nothing);
        }
        for (id, theirs) in heads {
            let Some(d) = b.discussion(&id).await?.filter(|d| self.is_home(&d.id)) else {
                continue;
            };
            let ours = b.fed_head(&d.id).await?.map_or(0, |h| h.fseq);
            tracing::warn!(
                discussion = d.id,
                ours,
                theirs,
                "restored: sharing the discussion again past where the linked node is"
            );
            let after = theirs.max(ours).saturating_add(1);
            self.share_tolerant(self.share_state_after(b, key, &d, (link, after), out).await)?;
        }
        Ok(Done::Nothing)
    }

    /// A share that fails for good (a discussion with no member here left) is logged and
    /// skipped, so that it does not undo the others; a storage failure fails the command.
    fn share_tolerant(&self, shared: Result<Done, DiscussionError>) -> Result<(), DiscussionError> {
        match shared {
            Ok(_) => Ok(()),
            Err(e @ DiscussionError::Store(_)) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "a discussion was not shared again");
                Ok(())
            }
        }
    }

    /// At the home: [`Self::recheck_readers`] for the object discussions after `after` (by id),
    /// a page at a time; the id to go on after, if there are more.
    pub(super) async fn recheck_all_readers(
        &self,
        b: &mut Batch,
        after: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        // A few discussions a command: each may wait for a context provider.
        const PAGE: i64 = 10;
        let page = b.fed_told_readers(self.node.as_str(), after, PAGE).await?;
        for id in &page {
            if let Some(d) = b.discussion(id).await? {
                self.recheck_readers(b, &d, out).await?;
            }
        }
        let next = if page.len() as i64 == PAGE {
            page.last().cloned()
        } else {
            None
        };
        Ok(Done::Checked(next))
    }

    /// On a replica: the home of an object discussion says what some of this node's users
    /// may do there. Users not (or no longer) here are skipped; those who lose it are told.
    async fn fed_readers(
        &self,
        b: &mut Batch,
        link: &str,
        discussion: &str,
        users: Vec<Reader>,
        round: &mut Round,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        if round.peer(b, link).await?.as_deref() != node_of(discussion) {
            return Err(fed_error("readers named by a node that is not the home"));
        }
        let d = b
            .discussion(discussion)
            .await?
            .filter(|d| d.object_app.as_deref().is_some_and(is_linked_object))
            .ok_or_else(|| fed_error("readers of an object discussion not shared here"))?;
        let mut lost = Vec::new();
        for r in users {
            if node_of(&r.user) != Some(self.node.as_str()) || !b.user_exists(&r.user).await? {
                continue;
            }
            let access = reader_from_wire(r.access);
            if b.fed_set_reader(&d.id, &r.user, access).await? && access.is_none() {
                lost.push(r.user);
            }
        }
        if !lost.is_empty() {
            out.push(Delivery::Revoked {
                discussion: d.id,
                users: lost,
            });
        }
        Ok(Done::Nothing)
    }

    /// On a replica: an object discussion as its home shared it (created here, its title
    /// brought up to date). Its application is named with the home (`app@home`), so that it
    /// never mixes with this node's own objects; nobody here may read it until the home says
    /// who may (`fed_readers`).
    async fn apply_object_share(
        &self,
        b: &mut Batch,
        caller: &Caller,
        discussion: &str,
        existing: Option<DiscussionRow>,
        body: &Body,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let home = node_of(discussion).unwrap_or_default();
        if let Some(d) = existing {
            if d.kind != "object" || body.kind.as_deref() != Some("object") {
                return Err(fed_error("a discussion shared again as another kind"));
            }
            if let Some(title) = &body.title
                && *title != d.title
            {
                self.set_title(b, caller, &d.id, title, out).await?;
            }
            return Ok(Done::Discussion(d.id));
        }
        let object = body
            .object
            .as_ref()
            .ok_or_else(|| fed_error("an object discussion shared without its object"))?;
        check_object(object)?;
        if is_linked_object(&object.application) {
            return Err(fed_error("an object discussion of a third node"));
        }
        // The link must carry object discussions as this node holds it too.
        let link = b
            .fed_link_to(home)
            .await?
            .ok_or_else(|| fed_error("the link has ended"))?;
        let scope = b.fed_link_scope(&link).await?.unwrap_or_default();
        if !serde_json::from_str::<veche_federation::grant::Scope>(&scope)
            .is_ok_and(|s| s.object_discussions)
        {
            return Err(DiscussionError::Forbidden(
                "this link does not share object discussions".into(),
            ));
        }
        let d = DiscussionRow {
            id: discussion.to_owned(),
            object_app: Some(format!("{}@{home}", object.application)),
            object_type: Some(object.object_type.clone()),
            object_id: Some(object.object_id.clone()),
            ..self.new_discussion(
                veche_protocol::discussions::DiscussionKind::Object,
                body.title.clone().unwrap_or_default(),
                caller,
            )
        };
        b.insert_discussion(&d).await?;
        self.announce_created(b, &d, out).await?;
        Ok(Done::Discussion(d.id))
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
