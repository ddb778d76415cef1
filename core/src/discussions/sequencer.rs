//! The sequencer: the one task that changes discussions.
//!
//! It takes commands from a queue and applies as many as are waiting (up to [`MAX_BATCH`]) in
//! one transaction, each (but sends) inside a savepoint so that one refused command does not undo the
//! others. After the durable commit it answers every command and delivers the events, in the
//! order they were sequenced. Sequence numbers are therefore gapless and assigned at commit,
//! and one fsync is shared by a whole batch (group commit).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use veche_base::SharedClock;

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use veche_protocol::discussions::{
    Action, Change, DiscussionEvent, DiscussionKind, ObjectRef, SendMessage,
};
use veche_protocol::ids::NodeName;
use veche_protocol::{Event, Timestamp};

use super::access::{Access, Decided, NoCalls, ProviderHost, Undecided};
use super::access::{authorize, is_linked_object, object_access};
use super::render::{self, Detail};
use super::{Caller, DiscussionError, text};
use crate::config::{FilesConfig, MessagesConfig};
use crate::inbox::BotMessage;
use crate::live::registry::{EncodedEvent, Registry};
use veche_store::{
    AuditRecord, Batch, DiscussionRow, EventRow, MessageRow, ObjectKey, Store, StoreError,
};

mod federated;

use federated::Origin;

/// Commands applied in one transaction at most.
const MAX_BATCH: usize = 512;
const MAX_TITLE_CHARS: usize = 200;
const MAX_DATA_BYTES: usize = 64 * 1024;
const MAX_ACTIONS: usize = 10;
const MAX_GROUP_MEMBERS_PER_CALL: usize = 1000;
/// Members one group may have.
const MAX_GROUP_SIZE: usize = 10_000;
/// Users one message may mention; further `@names` are plain text.
const MAX_MENTIONS: usize = 50;

/// A command for the sequencer.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    OpenDialog {
        caller: Caller,
        with: String,
    },
    CreateGroup {
        caller: Caller,
        title: String,
        members: Vec<String>,
    },
    OpenObject {
        caller: Caller,
        object: ObjectRef,
        title: String,
    },
    SetObjectAccess {
        caller: Caller,
        object: ObjectRef,
        users: Vec<String>,
        groups: Vec<String>,
    },
    AddMembers {
        caller: Caller,
        discussion: String,
        users: Vec<String>,
    },
    RemoveMember {
        caller: Caller,
        discussion: String,
        user: String,
    },
    SetTitle {
        caller: Caller,
        discussion: String,
        title: String,
    },
    Follow {
        caller: Caller,
        discussion: String,
        follow: bool,
    },
    Send {
        caller: Caller,
        message: SendMessage,
    },
    Edit {
        caller: Caller,
        discussion: String,
        message_id: String,
        text: String,
    },
    Delete {
        caller: Caller,
        discussion: String,
        message_id: String,
    },
    React {
        caller: Caller,
        discussion: String,
        message_id: String,
        emoji: String,
        add: bool,
    },
    MarkRead {
        caller: Caller,
        discussion: String,
        seq: i64,
    },
    /// At the home: shares a group over a link.
    Share {
        discussion: String,
        link: String,
    },
    /// Items received over links (verified by the transport), in each link's order:
    /// submissions to discussions this node is home of, stamped events of other homes'.
    FedMany {
        items: Vec<(String, veche_federation::wire::Item)>,
    },
    /// At the home: a user of the peer of `link` opens the discussion of one of this node's
    /// objects.
    FedOpenObject {
        link: String,
        user: String,
        object: ObjectRef,
        title: String,
        held: Option<veche_federation::wire::Access>,
    },
    /// At the home: decide again for the users of linked nodes told they may read object
    /// discussions (those after `after`, a page of them).
    FedRecheckReaders {
        after: String,
    },
    /// The peer of `link` holds this node's items only up to `received` (it was restored
    /// from a backup; the items after it are gone from the outbox): what waits is numbered
    /// again to follow it, and the state of every discussion this node shares over the link
    /// (and what the peer's users may do in its object discussions) is queued again, so that
    /// the peer's copies start over from it.
    FedResync {
        link: String,
        received: i64,
    },
    /// This node was restored from a backup: where the peer of `link` is in the logs of
    /// discussions this node is home of (see `fed_rejoin`).
    FedRejoin {
        link: String,
        heads: Vec<(String, i64)>,
    },
    /// The link to the node `home` ended: what this node's users wrote in its discussions and
    /// it has not stamped will not be delivered; each author is told why.
    FedUndelivered {
        home: String,
        reason: String,
    },
}

/// What a command produced.
#[derive(Debug)]
pub(crate) enum Done {
    /// The discussion the command opened or created.
    Discussion(String),
    /// A stored message.
    Sent { message_id: String, seq: u64 },
    /// Nothing to return.
    Nothing,
    /// What became of each received item of a `FedMany`.
    Federated(Vec<FedOutcome>),
    /// An object discussion a linked node's user opened, and whether they may write there;
    /// `None` if they may not see the object.
    Reader(Option<(String, bool)>),
    /// Readers were checked again up to here; the id to go on after, if there are more.
    Checked(Option<String>),
}

/// What became of one received item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FedOutcome {
    /// Applied (or found applied before).
    Applied,
    /// Refused for good, with why.
    Refused(String),
    /// Not tried now: an earlier item of its link must be applied first.
    Later,
}

/// Where a command's answer goes.
type Answer = oneshot::Sender<Result<Done, DiscussionError>>;
/// What applying a command gave: its answer and what to deliver after the commit.
type Outcome = Result<(Done, Vec<Delivery>), DiscussionError>;

/// One event to append to a discussion's log.
struct Entry<'a> {
    kind: &'a str,
    message_id: Option<&'a str>,
    detail: Detail,
    change: Change,
}

/// A command and where its answer goes.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Done, DiscussionError>>,
    /// Context providers' answers the command needs, obtained before it was sent here.
    pub(crate) decided: Decided,
    /// Answers still missing count as "no access" instead of failing the command as
    /// [`DiscussionError::Undecided`] (the last of the rounds `Discussions::submit` makes).
    pub(crate) final_round: bool,
}

/// Something to deliver after the commit.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A discussion event to these users, and to connections watching the discussion whose
    /// user is in `watchers`.
    Event {
        event: DiscussionEvent,
        to: Vec<String>,
        watchers: Option<HashSet<String>>,
    },
    /// These users can no longer read the discussion.
    Revoked {
        discussion: String,
        users: Vec<String>,
    },
    /// These plugins' bots have new items in their inbox.
    WakeBots(Vec<String>),
    /// A new message, for push notifications.
    Notify(super::Notice),
    /// These links have new items in their outbox.
    WakeLinks(Vec<String>),
    /// An event for these users' connections only.
    Personal { users: Vec<String>, event: Event },
}

/// The sequencer's state.
#[derive(Debug)]
pub(crate) struct Sequencer {
    store: Store,
    node: NodeName,
    registry: Arc<Registry>,
    config: Limits,
    /// No plugin is ever called here: the sequencer holds the database's writer.
    plugins: NoCalls,
    /// The providers' answers for the command being applied ([`Job::decided`]).
    decided: Decided,
    /// See [`Job::final_round`], for the command being applied.
    final_round: bool,
    outlets: super::Outlets,
    /// Signs federated events and stamps, and wakes links.
    fed: super::FedOutlet,
    /// The node's clock.
    clock: SharedClock,
    /// Dialogs and groups read in the current batch, with their members: most commands of a
    /// busy batch touch the same few discussions. Valid within one batch only, and dropped
    /// whenever a command fails or changes membership or titles.
    cache: std::sync::Mutex<HashMap<String, Cached>>,
    /// New messages in the current batch, counted in the metrics once it commits.
    stored: std::sync::atomic::AtomicU64,
}

/// A dialog or group as the current batch sees it.
#[derive(Debug, Clone)]
struct Cached {
    row: DiscussionRow,
    members: Vec<(String, String)>,
}

/// Runs until every sender is gone.
pub(crate) async fn run(mut sequencer: Sequencer, mut jobs: mpsc::Receiver<Job>) {
    let mut batch_jobs = Vec::with_capacity(MAX_BATCH);
    while jobs.recv_many(&mut batch_jobs, MAX_BATCH).await > 0 {
        sequencer.apply_batch(std::mem::take(&mut batch_jobs)).await;
    }
}

fn new_id(node: &NodeName) -> String {
    format!("{}@{node}", uuid::Uuid::now_v7().simple())
}

fn not_found() -> DiscussionError {
    DiscussionError::NotFound("discussion")
}

/// What the sequencer enforces on what it writes.
#[derive(Debug, Clone)]
pub struct Limits {
    pub messages: MessagesConfig,
    pub files: FilesConfig,
}

fn home_only() -> DiscussionError {
    DiscussionError::Forbidden(
        "members and the title of a discussion shared from another node are changed on its home node"
            .into(),
    )
}

fn read_only() -> DiscussionError {
    DiscussionError::Forbidden("you may read this discussion but not post in it".into())
}

impl Sequencer {
    pub(crate) fn new(
        store: Store,
        node: NodeName,
        registry: Arc<Registry>,
        config: Limits,
        plugins: ProviderHost,
        outlets: super::Outlets,
        clock: SharedClock,
    ) -> Self {
        let fed = outlets.fed.clone();
        Self {
            store,
            node,
            registry,
            config,
            plugins: NoCalls::new(plugins),
            decided: Decided::default(),
            final_round: false,
            outlets,
            fed,
            clock,
            cache: std::sync::Mutex::default(),
            stored: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Now, by the node's clock.
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn forget_cache(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Reads the batch's cache entry of `discussion`, if it has one.
    fn cached<T>(&self, discussion: &str, read: impl FnOnce(&Cached) -> T) -> Option<T> {
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(discussion)
            .map(read)
    }

    /// Changes the batch's cache entry of `discussion`, if it has one.
    fn update_cached(&self, discussion: &str, change: impl FnOnce(&mut Cached)) {
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(discussion)
        {
            change(c);
        }
    }

    async fn apply_batch(&mut self, jobs: Vec<Job>) {
        self.forget_cache();
        let started = std::time::Instant::now();
        let commands = jobs.len();
        // Nothing is left from a batch that failed to start.
        *self.stored.get_mut() = 0;
        let mut batch = match self.store.batch().await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a write batch");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(DiscussionError::Store(StoreError::Aborted(
                            e.to_string(),
                        ))));
                }
                return;
            }
        };
        let mut results: Vec<(Answer, Outcome)> = Vec::with_capacity(jobs.len());
        let mut broken: Option<StoreError> = None;
        for job in jobs {
            if broken.is_some() {
                results.push((job.reply, Err(DiscussionError::Unavailable)));
                continue;
            }
            self.decided = job.decided;
            self.final_round = job.final_round;
            // Sends and read markers check everything before their first write, so they need no
            // savepoint (two fewer statements on the hot path); a storage error inside them
            // fails the whole batch instead. Every other command gets one.
            let guarded = !matches!(job.op, Op::Send { .. } | Op::MarkRead { .. });
            if guarded && let Err(e) = batch.savepoint().await {
                broken = Some(e);
                results.push((job.reply, Err(DiscussionError::Unavailable)));
                continue;
            }
            let mut deliveries = Vec::new();
            let changes_discussion = matches!(
                job.op,
                Op::AddMembers { .. }
                    | Op::RemoveMember { .. }
                    | Op::SetTitle { .. }
                    | Op::FedMany { .. }
            );
            let outcome = self
                .apply(&mut batch, Origin::Here, job.op, &mut deliveries)
                .await;
            if outcome.is_err() || changes_discussion {
                self.forget_cache();
            }
            if guarded {
                let kept = match &outcome {
                    Ok(_) => batch.release().await,
                    Err(_) => batch.rollback_command().await,
                };
                if let Err(e) = kept {
                    broken = Some(e);
                }
            } else if let Err(DiscussionError::Store(e)) = &outcome {
                broken = Some(StoreError::Aborted(e.to_string()));
            }
            results.push((job.reply, outcome.map(|done| (done, deliveries))));
        }
        let committed = match broken {
            Some(e) => Err(e),
            None => batch.commit().await,
        };
        let stored = std::mem::take(self.stored.get_mut());
        if committed.is_ok() {
            self.outlets
                .metrics
                .batch(commands, stored, started.elapsed());
        }
        if let Err(e) = committed {
            tracing::error!(error = %e, "write batch failed; nothing of it was stored");
            for (reply, _) in results {
                let _ = reply.send(Err(DiscussionError::Store(StoreError::Aborted(
                    e.to_string(),
                ))));
            }
            return;
        }
        if results.iter().any(|(_, outcome)| outcome.is_ok()) {
            self.outlets.committed.notify_one();
        }
        for (reply, outcome) in results {
            match outcome {
                Ok((done, deliveries)) => {
                    let _ = reply.send(Ok(done));
                    for d in deliveries {
                        self.deliver(d);
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    fn deliver(&self, delivery: Delivery) {
        match delivery {
            Delivery::Event {
                event,
                to,
                watchers,
            } => {
                let discussion = event.discussion.clone();
                // Contacts are who shares a dialog or group: a membership change changes
                // those of everyone involved.
                let (membership, removed) = match &event.change {
                    Change::Created { kind, .. } => (*kind != DiscussionKind::Object, None),
                    Change::MembersAdded { .. } => (true, None),
                    Change::MemberRemoved { user } => (true, Some(user.clone())),
                    Change::MessageDeleted { message_id } => {
                        self.outlets
                            .push
                            .forget_message(&event.discussion, message_id);
                        (false, None)
                    }
                    _ => (false, None),
                };
                let Some(event) = EncodedEvent::new(&Event::Discussion { event }) else {
                    return;
                };
                if membership {
                    let mut people = to.clone();
                    people.extend(removed);
                    self.outlets.presence.contacts_changed(&people);
                }
                self.registry.deliver(&to, &event);
                if let Some(allowed) = watchers {
                    let already: HashSet<String> = to.into_iter().collect();
                    self.registry
                        .deliver_to_watchers(&discussion, &allowed, &already, &event);
                }
            }
            Delivery::Revoked { discussion, users } => {
                self.outlets.push.forget(&discussion, &users);
                self.registry.revoke_access(&discussion, &users)
            }
            Delivery::WakeBots(plugins) => self.plugins.wake(&plugins),
            Delivery::Notify(notice) => self.outlets.push.notify(notice),
            Delivery::WakeLinks(links) => {
                for link in links {
                    self.fed.links.wake(&link);
                }
            }
            Delivery::Personal { users, event } => {
                if let Some(event) = EncodedEvent::new(&event) {
                    self.registry.deliver(&users, &event);
                }
            }
        }
    }

    async fn apply(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        op: Op,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        match op {
            Op::OpenDialog { caller, with } => {
                self.open_dialog(b, origin, &caller, &with, out).await
            }
            Op::CreateGroup {
                caller,
                title,
                members,
            } => {
                self.create_group(b, origin, &caller, &title, &members, out)
                    .await
            }
            Op::OpenObject {
                caller,
                object,
                title,
            } => {
                self.open_object(b, origin, &caller, &object, &title, out)
                    .await
            }
            Op::SetObjectAccess {
                caller,
                object,
                users,
                groups,
            } => {
                self.set_object_access(b, &caller, &object, &users, &groups, out)
                    .await
            }
            Op::AddMembers {
                caller,
                discussion,
                users,
            } => {
                self.add_members(b, origin, &caller, &discussion, &users, out)
                    .await
            }
            Op::RemoveMember {
                caller,
                discussion,
                user,
            } => {
                self.remove_member(b, origin, &caller, &discussion, &user, out)
                    .await
            }
            Op::SetTitle {
                caller,
                discussion,
                title,
            } => {
                self.set_title(b, origin, &caller, &discussion, &title, out)
                    .await
            }
            Op::Follow {
                caller,
                discussion,
                follow,
            } => self.follow(b, origin, &caller, &discussion, follow).await,
            Op::Send { caller, message } => self.send(b, origin, &caller, message, out).await,
            Op::Edit {
                caller,
                discussion,
                message_id,
                text,
            } => {
                self.edit(b, origin, &caller, &discussion, &message_id, &text, out)
                    .await
            }
            Op::Delete {
                caller,
                discussion,
                message_id,
            } => {
                self.delete(b, origin, &caller, &discussion, &message_id, out)
                    .await
            }
            Op::React {
                caller,
                discussion,
                message_id,
                emoji,
                add,
            } => {
                self.react(
                    b,
                    origin,
                    &caller,
                    &discussion,
                    &message_id,
                    &emoji,
                    add,
                    out,
                )
                .await
            }
            Op::MarkRead {
                caller,
                discussion,
                seq,
            } => {
                let d = self.readable(b, origin, &caller, &discussion).await?.0;
                b.mark_read(&caller.user, &d.id, seq.clamp(0, d.last_seq))
                    .await?;
                Ok(Done::Nothing)
            }
            Op::Share { discussion, link } => self.share(b, &discussion, &link, out).await,
            Op::FedMany { items } => self.fed_many(b, items, out).await,
            Op::FedOpenObject {
                link,
                user,
                object,
                title,
                held,
            } => {
                self.fed_open_object(b, &link, (&user, held), &object, &title, out)
                    .await
            }
            Op::FedRecheckReaders { after } => self.recheck_all_readers(b, &after, out).await,
            Op::FedResync { link, received } => self.fed_resync(b, &link, received, out).await,
            Op::FedRejoin { link, heads } => self.fed_rejoin(b, &link, heads, out).await,
            Op::FedUndelivered { home, reason } => {
                self.fed_undelivered(b, &home, &reason, out).await
            }
        }
    }

    /// The discussion, if the caller may read it, seen inside the batch so that the decision and
    /// the change see the same state.
    async fn readable(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
    ) -> Result<(DiscussionRow, super::access::Grant), DiscussionError> {
        self.readable_as(b, caller, discussion, origin.stamped())
            .await
    }

    /// [`Self::readable`], for a change the discussion's home `stamped` (on a replica).
    async fn readable_as(
        &self,
        b: &mut Batch,
        caller: &Caller,
        discussion: &str,
        stamped: bool,
    ) -> Result<(DiscussionRow, super::access::Grant), DiscussionError> {
        if let Some(c) = self.cached(discussion, Cached::clone) {
            // The same rule as `authorize` for dialogs and groups: members only.
            let role = c
                .members
                .iter()
                .find(|(u, _)| *u == caller.user)
                .map(|(_, r)| r.clone());
            return match role {
                Some(role) => Ok((
                    c.row,
                    super::access::Grant {
                        owner: role == "owner",
                        write: true,
                    },
                )),
                None => Err(not_found()),
            };
        }
        let row = b.discussion(discussion).await?.ok_or_else(not_found)?;
        // What the home of an object discussion stamped, it authorized: this node does not
        // know who may see the object there.
        if stamped && row.kind == DiscussionKind::Object {
            let grant = super::access::Grant {
                owner: false,
                write: true,
            };
            return Ok((row, grant));
        }
        let grant = authorize(b, self, &caller.user, &row)
            .await?
            .ok_or_else(not_found)?;
        if row.kind != DiscussionKind::Object {
            let members = b.members(&row.id).await?;
            self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
                row.id.clone(),
                Cached {
                    row: row.clone(),
                    members,
                },
            );
        }
        Ok((row, grant))
    }

    async fn audience(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
    ) -> Result<(Vec<String>, Option<HashSet<String>>), DiscussionError> {
        match self.cached(&d.id, |c| c.members.clone()) {
            Some(members) => Ok((members.into_iter().map(|(u, _)| u).collect(), None)),
            None => self.audience_free(b, d).await,
        }
    }

    /// A message already stored under this client id: the original answer for a resend with
    /// the same content, `conflict` (audited) for other content, `None` if there is none.
    async fn resend(
        &self,
        b: &mut Batch,
        caller: &Caller,
        client_msg_id: &str,
        hash: &str,
    ) -> Result<Option<Done>, DiscussionError> {
        let Some(existing) = b
            .message_by_client_id(&caller.user, &caller.device, client_msg_id)
            .await?
        else {
            return Ok(None);
        };
        if existing.payload_hash == hash {
            return Ok(Some(Done::Sent {
                message_id: existing.id,
                seq: render::seq(existing.seq),
            }));
        }
        b.audit(&AuditRecord {
            at: self.now(),
            actor: format!("user:{}", caller.user),
            action: "message.conflict",
            target: existing.id.clone(),
            detail: format!("device {} client_msg_id {client_msg_id}", caller.device),
        })
        .await?;
        Err(DiscussionError::Conflict(format!(
            "client_msg_id {client_msg_id} was already used for a different message ({})",
            existing.id
        )))
    }

    /// Records `seq` as the discussion's latest, keeping the cached row current.
    async fn set_seq(
        &self,
        b: &mut Batch,
        discussion: &str,
        seq: i64,
        at: i64,
    ) -> Result<(), StoreError> {
        b.set_last_seq(discussion, seq, at).await?;
        self.update_cached(discussion, |c| {
            c.row.last_seq = seq;
            c.row.last_activity_at = at;
        });
        Ok(())
    }

    /// Who receives a discussion's events: members of dialogs and groups; for object
    /// discussions the followers who may read it, and the set of users whose watching
    /// connections may receive it.
    async fn audience_free(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
    ) -> Result<(Vec<String>, Option<HashSet<String>>), DiscussionError> {
        if d.kind != DiscussionKind::Object {
            return Ok((
                b.members(&d.id)
                    .await?
                    .into_iter()
                    .map(|(u, _)| u)
                    .collect(),
                None,
            ));
        }
        let (Some(key), Some(object)) = (object_key(d), render::object(d)) else {
            return Ok((Vec::new(), None));
        };
        if is_linked_object(key.app) {
            // Another node's object: the users its home said may read it.
            let allowed: HashSet<String> = b
                .fed_readers(&d.id)
                .await?
                .into_iter()
                .map(|(u, _)| u)
                .collect();
            let followers = b
                .followers(&d.id)
                .await?
                .into_iter()
                .filter(|f| allowed.contains(f))
                .collect();
            return Ok((followers, Some(allowed)));
        }
        if self.plugins.serves(key.kind) {
            // The context provider decides, in one call for everyone not cached.
            let followers = b.followers(&d.id).await?;
            let mut candidates = followers.clone();
            candidates.extend(self.registry.watcher_users(&d.id));
            candidates.sort();
            candidates.dedup();
            let access = self
                .provider_answers(&object, &candidates)?
                .unwrap_or_default();
            let allowed: HashSet<String> = candidates
                .into_iter()
                .zip(access)
                .filter(|(_, a)| *a != Access::None)
                .map(|(u, _)| u)
                .collect();
            let mut followers: Vec<String> = followers
                .into_iter()
                .filter(|f| allowed.contains(f))
                .collect();
            let mut allowed = allowed;
            self.add_owner_app(b, d, key, &mut followers, &mut allowed)
                .await?;
            return Ok((followers, Some(allowed)));
        }
        let mut followers = b.followers_with_access(&d.id, key).await?;
        let mut allowed: HashSet<String> =
            b.users_with_object_access(key).await?.into_iter().collect();
        // Bots are not on access lists: they hold their object types by their manifest.
        let bot_followers = if self.plugins.has_bots() {
            b.followers(&d.id).await?
        } else {
            Vec::new()
        };
        for f in bot_followers {
            if !allowed.contains(&f) && self.plugins.bot_access(&object, &f).is_some() {
                allowed.insert(f.clone());
                followers.push(f);
            }
        }
        self.add_owner_app(b, d, key, &mut followers, &mut allowed)
            .await?;
        Ok((followers, Some(allowed)))
    }

    /// The application that owns the object reads its discussion whatever the access list or
    /// the provider says (as `authorize` decides): it gets the events when it watches or
    /// follows.
    async fn add_owner_app(
        &self,
        b: &mut Batch,
        d: &DiscussionRow,
        key: ObjectKey<'_>,
        followers: &mut Vec<String>,
        allowed: &mut HashSet<String>,
    ) -> Result<(), StoreError> {
        let app_user = format!("{}@{}", key.app, self.node);
        if allowed.contains(&app_user) || !b.is_app(&app_user, key.app).await? {
            return Ok(());
        }
        allowed.insert(app_user.clone());
        if b.followers(&d.id).await?.contains(&app_user) {
            followers.push(app_user);
        }
        Ok(())
    }

    /// Whether `user` may read `d`, as `authorize` decides (through the batch cache).
    async fn can_read(
        &self,
        b: &mut Batch,
        user: &str,
        d: &DiscussionRow,
    ) -> Result<bool, DiscussionError> {
        match self.cached(&d.id, |c| c.members.iter().any(|(u, _)| u == user)) {
            Some(member) => Ok(member),
            None => Ok(authorize(b, self, user, d).await?.is_some()),
        }
    }

    /// What `users` may do with `object` as its context provider said before the command
    /// came here (or as cached): `None` when no provider serves its type. A user nobody has
    /// decided about yet fails the command as [`DiscussionError::Undecided`], to be decided
    /// outside the batch and tried again; in the final round they have no access.
    fn provider_answers(
        &self,
        object: &ObjectRef,
        users: &[String],
    ) -> Result<Option<Vec<Access>>, DiscussionError> {
        let Some(known) = self.plugins.known_access(object, users, &self.decided) else {
            return Ok(None);
        };
        let missing: Vec<String> = users
            .iter()
            .zip(&known)
            .filter(|(_, a)| a.is_none())
            .map(|(u, _)| u.clone())
            .collect();
        if !missing.is_empty() && !self.final_round {
            return Err(DiscussionError::Undecided(Box::new(Undecided {
                object: object.clone(),
                users: missing,
            })));
        }
        Ok(Some(
            known
                .into_iter()
                .map(|a| a.unwrap_or(Access::None))
                .collect(),
        ))
    }

    /// Takes the next sequence number, keeping the cached row current.
    async fn next_seq(&self, b: &mut Batch, discussion: &str, at: i64) -> Result<i64, StoreError> {
        let seq = b.next_seq(discussion, at).await?;
        self.update_cached(discussion, |c| {
            c.row.last_seq = seq;
            c.row.last_activity_at = at;
        });
        Ok(seq)
    }

    /// Appends an event to `d`'s log and queues its delivery to everyone who may read it.
    async fn emit(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        d: &DiscussionRow,
        actor: &str,
        entry: Entry<'_>,
        out: &mut Vec<Delivery>,
    ) -> Result<u64, DiscussionError> {
        let Entry {
            kind,
            message_id,
            detail,
            change,
        } = entry;
        let at = self.now();
        let seq = self.next_seq(b, &d.id, at).await?;
        b.insert_event(&EventRow {
            discussion_id: d.id.clone(),
            seq,
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            at,
            message_id: message_id.map(str::to_owned),
            detail: detail.to_json(),
        })
        .await?;
        self.federate(b, origin, d, actor, &change, out).await?;
        let (to, watchers) = self.audience(b, d).await?;
        out.push(Delivery::Event {
            event: DiscussionEvent {
                discussion: d.id.clone(),
                seq: render::seq(seq),
                at: Timestamp(at),
                actor: actor.to_owned(),
                change,
            },
            to,
            watchers,
        });
        Ok(render::seq(seq))
    }

    async fn existing_users(&self, b: &mut Batch, users: &[String]) -> Result<(), DiscussionError> {
        for u in users {
            // Users of other nodes take part in groups and dialogs only, on their own paths.
            let local = veche_federation::event::node_of(u) == Some(self.node.as_str());
            if !local || !b.user_exists(u).await? {
                return Err(DiscussionError::NotFound("user"));
            }
        }
        Ok(())
    }

    /// Like [`Self::existing_users`], but users of a linked node are welcome (known here by
    /// id from then on): they take part once the group is shared with their node.
    async fn existing_or_linked_users(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        users: &[String],
    ) -> Result<(), DiscussionError> {
        for u in users {
            let node = veche_federation::event::node_of(u);
            if node.is_some_and(|n| n != self.node.as_str()) && self.fed.key.is_some() {
                // What a home stamped names users this node may not be linked with.
                let linked = origin.stamped()
                    || match node {
                        Some(n) => b.fed_link_to(n).await?.is_some(),
                        None => false,
                    };
                if !linked || u.parse::<veche_protocol::ids::UserId>().is_err() {
                    return Err(DiscussionError::NotFound("user"));
                }
                b.ensure_remote_user(u, self.now()).await?;
            } else if !b.user_exists(u).await? {
                return Err(DiscussionError::NotFound("user"));
            }
        }
        Ok(())
    }

    /// A new discussion's row, before kind-specific fields.
    fn new_discussion(
        &self,
        kind: DiscussionKind,
        title: String,
        caller: &Caller,
    ) -> DiscussionRow {
        let at = self.now();
        DiscussionRow {
            id: new_id(&self.node),
            kind,
            title,
            created_by: caller.user.clone(),
            created_at: at,
            last_seq: 0,
            last_activity_at: at,
            dialog_key: None,
            object_app: None,
            object_type: None,
            object_id: None,
        }
    }

    /// The first event of a new discussion (its members, if any, already added).
    async fn announce_created(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        d: &DiscussionRow,
        out: &mut Vec<Delivery>,
    ) -> Result<u64, DiscussionError> {
        let kind = d.kind;
        let entry = Entry {
            kind: "created",
            message_id: None,
            detail: Detail {
                kind: Some(kind.as_str().to_owned()),
                title: Some(d.title.clone()),
                ..Detail::default()
            },
            change: Change::Created {
                kind,
                title: d.title.clone(),
            },
        };
        self.emit(b, origin, d, &d.created_by, entry, out).await
    }

    async fn announce_members_added(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        d: &DiscussionRow,
        actor: &str,
        added: Vec<String>,
        out: &mut Vec<Delivery>,
    ) -> Result<u64, DiscussionError> {
        let entry = Entry {
            kind: "members_added",
            message_id: None,
            detail: Detail {
                users: added.clone(),
                ..Detail::default()
            },
            change: Change::MembersAdded { users: added },
        };
        self.emit(b, origin, d, actor, entry, out).await
    }

    async fn open_dialog(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        with: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        if with == caller.user {
            return Err(DiscussionError::BadRequest(
                "a dialog is between two different users".into(),
            ));
        }
        let mut pair = [caller.user.as_str(), with];
        pair.sort_unstable();
        let key = pair.join("\n");
        if self.fed.key.is_some()
            && veche_federation::event::node_of(with).is_some_and(|n| n != self.node.as_str())
        {
            return self
                .open_linked_dialog(b, origin, caller, with, key, out)
                .await;
        }
        self.existing_users(b, &[with.to_owned()]).await?;
        if let Some(d) = b.dialog_by_key(&key).await? {
            return Ok(Done::Discussion(d.id));
        }
        let d = DiscussionRow {
            dialog_key: Some(key),
            ..self.new_discussion(DiscussionKind::Dialog, String::new(), caller)
        };
        b.insert_discussion(&d).await?;
        for user in pair {
            b.add_member(&d.id, user, "member", d.created_at).await?;
        }
        self.announce_created(b, origin, &d, out).await?;
        Ok(Done::Discussion(d.id))
    }

    async fn create_group(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        title: &str,
        members: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let title = check_title(title)?;
        if members.len() > MAX_GROUP_MEMBERS_PER_CALL {
            return Err(DiscussionError::BadRequest(format!(
                "at most {MAX_GROUP_MEMBERS_PER_CALL} members per call"
            )));
        }
        self.existing_or_linked_users(b, origin, members).await?;
        let d = self.new_discussion(DiscussionKind::Group, title, caller);
        b.insert_discussion(&d).await?;
        b.add_member(&d.id, &caller.user, "owner", d.created_at)
            .await?;
        let mut added = vec![caller.user.clone()];
        for m in members {
            if b.add_member(&d.id, m, "member", d.created_at).await? {
                added.push(m.clone());
            }
        }
        self.announce_created(b, origin, &d, out).await?;
        self.announce_members_added(b, origin, &d, &caller.user, added, out)
            .await?;
        Ok(Done::Discussion(d.id))
    }

    async fn open_object(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        object: &ObjectRef,
        title: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let key = ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        if object_access(b, self, key, &caller.user).await? == Access::None {
            return Err(not_found());
        }
        if let Some(d) = b.object_discussion(key).await? {
            return Ok(Done::Discussion(d.id));
        }
        let title = if title.trim().is_empty() {
            format!("{} {}", object.object_type, object.object_id)
        } else {
            check_title(title)?
        };
        let d = DiscussionRow {
            object_app: Some(object.application.clone()),
            object_type: Some(object.object_type.clone()),
            object_id: Some(object.object_id.clone()),
            ..self.new_discussion(DiscussionKind::Object, title, caller)
        };
        b.insert_discussion(&d).await?;
        self.announce_created(b, origin, &d, out).await?;
        Ok(Done::Discussion(d.id))
    }

    async fn set_object_access(
        &self,
        b: &mut Batch,
        caller: &Caller,
        object: &ObjectRef,
        users: &[String],
        groups: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        if !caller.admin && !b.is_app(&caller.user, &object.application).await? {
            return Err(DiscussionError::Forbidden(
                "only administrators and the object's application set object access".into(),
            ));
        }
        if is_linked_object(&object.application) {
            return Err(DiscussionError::BadRequest(
                "access to another node's objects is set on that node".into(),
            ));
        }
        // Users of linked nodes may be named: they open the discussion from their node.
        self.existing_or_linked_users(b, Origin::Here, users)
            .await?;
        for g in groups {
            let is_group = b
                .discussion(g)
                .await?
                .is_some_and(|d| d.kind == DiscussionKind::Group);
            if !is_group {
                return Err(DiscussionError::NotFound("group"));
            }
        }
        let key = ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        let before: HashSet<String> = b.users_with_object_access(key).await?.into_iter().collect();
        let principals: Vec<String> = users
            .iter()
            .map(|u| format!("user:{u}"))
            .chain(groups.iter().map(|g| format!("group:{g}")))
            .collect();
        b.set_object_access(key, &principals).await?;
        let after: HashSet<String> = b.users_with_object_access(key).await?.into_iter().collect();
        b.audit(&AuditRecord {
            at: self.now(),
            actor: format!("user:{}", caller.user),
            action: "object.access",
            target: format!(
                "{}/{}/{}",
                object.application, object.object_type, object.object_id
            ),
            detail: principals.join(" "),
        })
        .await?;
        if let Some(d) = b.object_discussion(key).await? {
            self.recheck_readers(b, &d, out).await?;
            let mut lost: Vec<String> = before.difference(&after).cloned().collect();
            lost.sort();
            if !lost.is_empty() {
                out.push(Delivery::Revoked {
                    discussion: d.id,
                    users: lost,
                });
            }
        }
        Ok(Done::Nothing)
    }

    async fn add_members(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        users: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let (d, grant) = self.readable(b, origin, caller, discussion).await?;
        if d.kind != DiscussionKind::Group {
            return Err(DiscussionError::BadRequest(
                "members are added to groups only".into(),
            ));
        }
        if !grant.owner && !origin.stamped() {
            return Err(DiscussionError::Forbidden(
                "only the group's owners add members".into(),
            ));
        }
        if users.len() > MAX_GROUP_MEMBERS_PER_CALL {
            return Err(DiscussionError::BadRequest(format!(
                "at most {MAX_GROUP_MEMBERS_PER_CALL} members per call"
            )));
        }
        if self.goes_home(&d.id, origin) {
            return Err(home_only());
        }
        self.existing_or_linked_users(b, origin, users).await?;
        if b.members(&d.id).await?.len() + users.len() > MAX_GROUP_SIZE {
            return Err(DiscussionError::BadRequest(format!(
                "a group has at most {MAX_GROUP_SIZE} members"
            )));
        }
        let at = self.now();
        let mut added = Vec::new();
        for u in users {
            if b.add_member(&d.id, u, "member", at).await? {
                added.push(u.clone());
            }
        }
        // The new members receive this event too.
        self.forget_cache();
        if !added.is_empty() {
            self.announce_members_added(b, origin, &d, &caller.user, added, out)
                .await?;
        }
        Ok(Done::Nothing)
    }

    async fn remove_member(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        user: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let (d, grant) = self.readable(b, origin, caller, discussion).await?;
        if d.kind != DiscussionKind::Group {
            return Err(DiscussionError::BadRequest(
                "members leave or are removed from groups only".into(),
            ));
        }
        if user != caller.user && !grant.owner && !origin.stamped() {
            return Err(DiscussionError::Forbidden(
                "only the group's owners remove members".into(),
            ));
        }
        if self.goes_home(&d.id, origin) {
            return Err(home_only());
        }
        let role = b
            .member_role(&d.id, user)
            .await?
            .ok_or(DiscussionError::NotFound("member"))?;
        // The removed user sees the event too, then loses the discussion.
        let detail = Detail {
            users: vec![user.to_owned()],
            ..Detail::default()
        };
        let change = Change::MemberRemoved {
            user: user.to_owned(),
        };
        self.emit(
            b,
            origin,
            &d,
            &caller.user,
            Entry {
                kind: "member_removed",
                message_id: None,
                detail,
                change,
            },
            out,
        )
        .await?;
        b.remove_member(&d.id, user).await?;
        if role == "owner" {
            // A group keeps an owner while it has members: the longest-standing member takes over.
            let members = b.members(&d.id).await?;
            if !members.iter().any(|(_, r)| r == "owner")
                && let Some((next, _)) = members.first()
            {
                b.set_role(&d.id, next, "owner").await?;
            }
        }
        // Object discussions this group gave the user access to are gone for them too,
        // unless another entry of the access list still admits them.
        for object_discussion in b.object_discussions_granted_to_group(&d.id).await? {
            if veche_federation::event::node_of(user) != Some(self.node.as_str()) {
                // A user of a linked node: their node is told.
                self.recheck_readers(b, &object_discussion, out).await?;
                continue;
            }
            if let Some(key) = object_key(&object_discussion)
                && object_access(b, self, key, user).await? == Access::None
            {
                out.push(Delivery::Revoked {
                    discussion: object_discussion.id.clone(),
                    users: vec![user.to_owned()],
                });
            }
        }
        out.push(Delivery::Revoked {
            discussion: d.id,
            users: vec![user.to_owned()],
        });
        Ok(Done::Nothing)
    }

    async fn set_title(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        title: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let (d, grant) = self.readable(b, origin, caller, discussion).await?;
        if self.goes_home(&d.id, origin) {
            return Err(home_only());
        }
        match d.kind {
            DiscussionKind::Dialog => {
                return Err(DiscussionError::BadRequest("a dialog has no title".into()));
            }
            DiscussionKind::Group if !grant.owner && !origin.stamped() => {
                return Err(DiscussionError::Forbidden(
                    "only the group's owners change its title".into(),
                ));
            }
            _ => {}
        }
        let title = check_title(title)?;
        if title == d.title {
            return Ok(Done::Nothing);
        }
        b.set_title(&d.id, &title).await?;
        let detail = Detail {
            title: Some(title.clone()),
            ..Detail::default()
        };
        self.emit(
            b,
            origin,
            &d,
            &caller.user,
            Entry {
                kind: "title_changed",
                message_id: None,
                detail,
                change: Change::TitleChanged { title },
            },
            out,
        )
        .await?;
        Ok(Done::Nothing)
    }

    async fn follow(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        follow: bool,
    ) -> Result<Done, DiscussionError> {
        let (d, _) = self.readable(b, origin, caller, discussion).await?;
        if d.kind != DiscussionKind::Object {
            return Err(DiscussionError::BadRequest(
                "members always follow their dialogs and groups".into(),
            ));
        }
        b.set_follow(&caller.user, &d.id, follow).await?;
        Ok(Done::Nothing)
    }

    /// A message's content checked and normalised, before anything is read or written.
    fn content(&self, m: &SendMessage) -> Result<Content, DiscussionError> {
        if m.client_msg_id.is_empty() || m.client_msg_id.len() > 64 {
            return Err(DiscussionError::BadRequest(
                "client_msg_id is 1 to 64 characters".into(),
            ));
        }
        let text = text::without_controls(&m.text)
            .map_err(|c| DiscussionError::BadRequest(text::control_refusal("the text", c)))?;
        let text = text::convert_shortcodes(&text);
        if text.len() > self.config.messages.max_text_bytes {
            return Err(DiscussionError::BadRequest(format!(
                "the text is {} bytes; the limit is {} bytes",
                text.len(),
                self.config.messages.max_text_bytes
            )));
        }
        let data = match &m.data {
            Some(v) => {
                let json = serde_json::to_string(v)
                    .map_err(|e| DiscussionError::BadRequest(format!("data: {e}")))?;
                if json.len() > MAX_DATA_BYTES {
                    return Err(DiscussionError::BadRequest(format!(
                        "data is {} bytes of JSON; the limit is 65536",
                        json.len()
                    )));
                }
                Some(json)
            }
            None => None,
        };
        check_actions(&m.actions)?;
        if text.trim().is_empty() && data.is_none() && m.actions.is_empty() && m.files.is_empty() {
            return Err(DiscussionError::BadRequest(
                "a message needs text, data, actions or files".into(),
            ));
        }
        let actions = serde_json::to_string(&m.actions).unwrap_or_else(|_| "[]".to_owned());
        let hash = payload_hash(
            &m.discussion,
            &m.text,
            m.reply_to.as_deref(),
            data.as_deref(),
            &actions,
            &m.files,
        );
        Ok(Content {
            text,
            data,
            actions,
            hash,
        })
    }

    async fn send(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        m: SendMessage,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let Content {
            text,
            data,
            actions,
            hash,
        } = self.content(&m)?;
        let readable = self.readable(b, origin, caller, &m.discussion).await;
        let d = match readable {
            Ok((_, grant)) if !grant.write => {
                return match self.resend(b, caller, &m.client_msg_id, &hash).await? {
                    Some(done) => Ok(done),
                    None => Err(read_only()),
                };
            }
            Ok((d, _)) => d,
            Err(e) => {
                // A resend of a stored message is answered even if the discussion is gone
                // from the sender's view since.
                return match self.resend(b, caller, &m.client_msg_id, &hash).await? {
                    Some(done) => Ok(done),
                    None => Err(e),
                };
            }
        };
        // A resend of a message with files is answered from the stored message, even if its
        // files were removed or the policy changed since.
        if !m.files.is_empty()
            && let Some(done) = self.resend(b, caller, &m.client_msg_id, &hash).await?
        {
            return Ok(done);
        }
        let goes_home = self.goes_home(&d.id, origin);
        if goes_home {
            if data.is_some() || !m.actions.is_empty() {
                return Err(DiscussionError::BadRequest(
                    "data and buttons do not travel to another node yet; send text or files".into(),
                ));
            }
            // A resend is answered before its files are checked again: they may be gone or
            // over a narrowed link's limit by now.
            if let Some(answer) = self
                .submitted_before(b, caller, &d, &m.client_msg_id)
                .await?
            {
                return answer.map(|message_id| Done::Sent { message_id, seq: 0 });
            }
        }
        // A replica takes the files its home accepted (recorded by `record_files`).
        if !origin.stamped() {
            super::attachments::check_attachments(
                &self.config.files,
                b,
                &caller.user,
                &d.id,
                d.kind.as_str(),
                &m.files,
                self.now(),
            )
            .await?;
        }
        if goes_home {
            let body = federated::Body {
                text: Some(text),
                reply_to: m.reply_to.clone(),
                files: self.files_for_home(b, &d, &m.files).await?,
                ..federated::Body::default()
            };
            let message_id = self
                .submit_home(
                    b,
                    caller,
                    &d,
                    "message.post",
                    body,
                    &m.client_msg_id,
                    &m.files,
                    out,
                )
                .await?;
            // Pending: the message takes its place when its home has sequenced it.
            return Ok(Done::Sent { message_id, seq: 0 });
        }
        self.check_travels(b, &d, &text).await?;
        let mut replied_to = None;
        if let Some(reply_to) = &m.reply_to {
            let target = b.message(reply_to).await?;
            match target {
                Some(t) if t.discussion_id == d.id => replied_to = Some(t.author),
                _ => return Err(DiscussionError::NotFound("message replied to")),
            }
        }
        // Only users who can read the discussion are mentioned (anyone else would learn of a
        // discussion they cannot see, and the sender would learn which logins exist).
        let named: Vec<String> = text::mentioned_logins(&text, self.node.as_str())
            .into_iter()
            .take(MAX_MENTIONS)
            .map(|login| format!("{login}@{}", self.node))
            .filter(|id| *id != caller.user)
            .collect();
        let served = render::object(&d)
            .filter(|o| !is_linked_object(&o.application) && self.plugins.serves(&o.object_type));
        if let Some(object) = &served {
            // Everyone named is decided in one round, not one round each.
            self.provider_answers(object, &named)?;
        }
        let mut mentions = Vec::new();
        for id in named {
            if self.can_read(b, &id, &d).await? {
                mentions.push(id);
            }
        }
        // Who of an object discussion's audience may read it can need its context provider's
        // answers: learn it before the first write, since a send has no savepoint.
        if served.is_some() {
            self.audience(b, &d).await?;
        }
        let at = self.now();
        let seq = d.last_seq + 1;
        let row = MessageRow {
            id: self
                .federated_message_id(origin)
                .unwrap_or_else(|| new_id(&self.node)),
            discussion_id: d.id.clone(),
            seq,
            author: caller.user.clone(),
            device_id: caller.device.clone(),
            client_msg_id: m.client_msg_id.clone(),
            payload_hash: hash.clone(),
            text: Some(text),
            data,
            actions,
            reply_to: m.reply_to.clone(),
            created_at: at,
            edited_at: None,
            version: 1,
            deleted: false,
        };
        // Exactly once: the unique key (author, device, client id) decides, in the transaction
        // that stores the message. Only a new message takes a sequence number.
        if b.insert_message(&row, &mentions).await? {
            self.stored
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        } else {
            return match self.resend(b, caller, &m.client_msg_id, &hash).await? {
                Some(done) => Ok(done),
                None => Err(DiscussionError::Store(StoreError::Aborted(
                    "a client message id vanished during its own transaction".into(),
                ))),
            };
        }
        b.attach_files(&row.id, &m.files).await?;
        let files = if m.files.is_empty() {
            Vec::new()
        } else {
            b.message_files(&row.id)
                .await?
                .iter()
                .map(crate::discussions::attachments::info)
                .collect()
        };
        self.set_seq(b, &d.id, seq, at).await?;
        b.insert_event(&EventRow {
            discussion_id: d.id.clone(),
            seq,
            kind: "message_posted".into(),
            actor: caller.user.clone(),
            at,
            message_id: Some(row.id.clone()),
            detail: "{}".into(),
        })
        .await?;
        if d.kind == DiscussionKind::Object {
            // Posting or being mentioned puts an object discussion in one's list (only users
            // who may read it are mentioned).
            b.set_follow(&caller.user, &d.id, true).await?;
            for u in &mentions {
                b.set_follow(u, &d.id, true).await?;
            }
        }
        let message_id = row.id.clone();
        self.announce_posted(b, origin, caller, &d, row, mentions, replied_to, files, out)
            .await?;
        Ok(Done::Sent {
            message_id,
            seq: render::seq(seq),
        })
    }

    /// Tells everyone concerned of a message just stored (its number and event row written):
    /// bots, push notifications, linked nodes, and the audience's connections.
    #[allow(clippy::too_many_arguments)]
    async fn announce_posted(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        d: &DiscussionRow,
        row: MessageRow,
        mentions: Vec<String>,
        replied_to: Option<String>,
        files: Vec<veche_protocol::files::FileInfo>,
        out: &mut Vec<Delivery>,
    ) -> Result<(), DiscussionError> {
        let (to, watchers) = self.audience(b, d).await?;
        self.tell_bots(b, caller, d, &row, &to, &mentions, out)
            .await?;
        out.push(Delivery::Notify(super::Notice {
            discussion: d.id.clone(),
            kind: d.kind.as_str().to_owned(),
            title: d.title.clone(),
            seq: render::seq(row.seq),
            message_id: row.id.clone(),
            author: caller.user.clone(),
            text: row.text.clone().unwrap_or_default(),
            audience: to.clone(),
            mentions: mentions.clone(),
            replied_to,
        }));
        let change = Change::MessagePosted {
            message: Box::new(render::message(&row, mentions, Vec::new(), files)),
        };
        self.federate(b, origin, d, &caller.user, &change, out)
            .await?;
        out.push(Delivery::Event {
            event: DiscussionEvent {
                discussion: d.id.clone(),
                seq: render::seq(row.seq),
                at: Timestamp(row.created_at),
                actor: caller.user.clone(),
                change,
            },
            to,
            watchers,
        });
        Ok(())
    }

    /// Queues a new message for the bots among its audience and mentions (never for its own
    /// author), in the batch that stores it.
    #[allow(clippy::too_many_arguments)]
    async fn tell_bots(
        &self,
        b: &mut Batch,
        caller: &Caller,
        d: &DiscussionRow,
        row: &MessageRow,
        audience: &[String],
        mentions: &[String],
        out: &mut Vec<Delivery>,
    ) -> Result<(), StoreError> {
        // A bot's message reaches other bots only if it mentions them: two bots in one
        // discussion must not answer each other forever.
        let from_bot = self.plugins.bot_plugin(&caller.user).is_some();
        let audience: &[String] = if from_bot { &[] } else { audience };
        let mut bots: Vec<String> = audience
            .iter()
            .chain(mentions)
            .filter(|u| **u != caller.user)
            .filter_map(|u| self.plugins.bot_plugin(u))
            .collect();
        if bots.is_empty() {
            return Ok(());
        }
        bots.sort();
        bots.dedup();
        let message = BotMessage {
            id: row.id.clone(),
            discussion: d.id.clone(),
            object: render::object(d),
            author: caller.user.clone(),
            text: row.text.clone().unwrap_or_default(),
            mentions: mentions.to_vec(),
            reply_to: row.reply_to.clone(),
            sent_at: row.created_at,
        };
        let payload = message.payload();
        for plugin in &bots {
            b.enqueue_plugin(plugin, "message", &payload, row.created_at)
                .await?;
        }
        out.push(Delivery::WakeBots(bots));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn edit(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
        text: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let (d, grant) = self.readable(b, origin, caller, discussion).await?;
        if !grant.write {
            return Err(read_only());
        }
        let m = message_in(b, &d, message_id).await?;
        if m.author != caller.user {
            return Err(DiscussionError::Forbidden(
                "only the author edits a message".into(),
            ));
        }
        if m.deleted {
            return Err(DiscussionError::BadRequest(
                "a deleted message cannot be edited".into(),
            ));
        }
        let text = text::without_controls(text)
            .map_err(|c| DiscussionError::BadRequest(text::control_refusal("the text", c)))?;
        let text = text::convert_shortcodes(&text);
        if text.len() > self.config.messages.max_text_bytes {
            return Err(DiscussionError::BadRequest(format!(
                "the text is over {} bytes",
                self.config.messages.max_text_bytes
            )));
        }
        if text.trim().is_empty() {
            return Err(DiscussionError::BadRequest(
                "use delete to remove a message's text".into(),
            ));
        }
        if m.text.as_deref() == Some(text.as_str()) {
            return Ok(Done::Nothing);
        }
        self.check_travels(b, &d, &text).await?;
        if self.goes_home(&d.id, origin) {
            let body = federated::Body {
                message: Some(m.id.clone()),
                text: Some(text),
                ..federated::Body::default()
            };
            let txn = uuid::Uuid::new_v4().simple().to_string();
            self.submit_home(b, caller, &d, "message.edit", body, &txn, &[], out)
                .await?;
            return Ok(Done::Nothing);
        }
        let version = b.edit_message(&m.id, &text, self.now()).await?;
        let detail = Detail {
            version: Some(version),
            ..Detail::default()
        };
        let change = Change::MessageEdited {
            message_id: m.id.clone(),
            text: Some(text),
            version: u32::try_from(version).unwrap_or(u32::MAX),
        };
        self.emit(
            b,
            origin,
            &d,
            &caller.user,
            Entry {
                kind: "message_edited",
                message_id: Some(&m.id),
                detail,
                change,
            },
            out,
        )
        .await?;
        Ok(Done::Nothing)
    }

    async fn delete(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let (d, grant) = self.readable(b, origin, caller, discussion).await?;
        let m = message_in(b, &d, message_id).await?;
        if m.author != caller.user && !grant.owner && !caller.admin {
            return Err(DiscussionError::Forbidden(
                "only the author, a group owner or an administrator deletes a message".into(),
            ));
        }
        if m.deleted {
            return Ok(Done::Nothing);
        }
        if self.goes_home(&d.id, origin) {
            let body = federated::Body {
                message: Some(m.id.clone()),
                ..federated::Body::default()
            };
            let txn = uuid::Uuid::new_v4().simple().to_string();
            self.submit_home(b, caller, &d, "message.delete", body, &txn, &[], out)
                .await?;
            return Ok(Done::Nothing);
        }
        b.delete_message(&m.id).await?;
        let change = Change::MessageDeleted {
            message_id: m.id.clone(),
        };
        self.emit(
            b,
            origin,
            &d,
            &caller.user,
            Entry {
                kind: "message_deleted",
                message_id: Some(&m.id),
                detail: Detail::default(),
                change,
            },
            out,
        )
        .await?;
        Ok(Done::Nothing)
    }

    #[allow(clippy::too_many_arguments)]
    async fn react(
        &self,
        b: &mut Batch,
        origin: Origin<'_>,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
        emoji: &str,
        add: bool,
        out: &mut Vec<Delivery>,
    ) -> Result<Done, DiscussionError> {
        let (d, grant) = self.readable(b, origin, caller, discussion).await?;
        if !grant.write {
            return Err(read_only());
        }
        let m = message_in(b, &d, message_id).await?;
        if m.deleted {
            return Err(DiscussionError::BadRequest(
                "a deleted message takes no reactions".into(),
            ));
        }
        if self.goes_home(&d.id, origin) {
            let body = federated::Body {
                message: Some(m.id.clone()),
                emoji: Some(emoji.to_owned()),
                ..federated::Body::default()
            };
            let txn = uuid::Uuid::new_v4().simple().to_string();
            let kind = if add {
                "reaction.add"
            } else {
                "reaction.remove"
            };
            self.submit_home(b, caller, &d, kind, body, &txn, &[], out)
                .await?;
            return Ok(Done::Nothing);
        }
        if !b
            .set_reaction(&m.id, &caller.user, emoji, add, self.now())
            .await?
        {
            return Ok(Done::Nothing);
        }
        let detail = Detail {
            emoji: Some(emoji.to_owned()),
            ..Detail::default()
        };
        let (kind, change) = if add {
            (
                "reaction_added",
                Change::ReactionAdded {
                    message_id: m.id.clone(),
                    emoji: emoji.to_owned(),
                },
            )
        } else {
            (
                "reaction_removed",
                Change::ReactionRemoved {
                    message_id: m.id.clone(),
                    emoji: emoji.to_owned(),
                },
            )
        };
        self.emit(
            b,
            origin,
            &d,
            &caller.user,
            Entry {
                kind,
                message_id: Some(&m.id),
                detail,
                change,
            },
            out,
        )
        .await?;
        Ok(Done::Nothing)
    }
}

/// A message's content as it is stored: the text with shortcodes converted, data and actions
/// as JSON, and the hash a resend is compared by.
struct Content {
    text: String,
    data: Option<String>,
    actions: String,
    hash: String,
}

/// The discussion, if the caller may read it (inside the batch, so the decision and the change
/// see the same state).
async fn message_in(
    b: &mut Batch,
    d: &DiscussionRow,
    message_id: &str,
) -> Result<MessageRow, DiscussionError> {
    b.message(message_id)
        .await?
        .filter(|m| m.discussion_id == d.id)
        .ok_or(DiscussionError::NotFound("message"))
}

fn object_key(d: &DiscussionRow) -> Option<ObjectKey<'_>> {
    match (&d.object_app, &d.object_type, &d.object_id) {
        (Some(app), Some(kind), Some(id)) => Some(ObjectKey { app, kind, id }),
        _ => None,
    }
}

fn check_title(title: &str) -> Result<String, DiscussionError> {
    let title = title.trim();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS || title.chars().any(char::is_control) {
        return Err(DiscussionError::BadRequest(format!(
            "a title is 1 to {MAX_TITLE_CHARS} characters without control characters"
        )));
    }
    Ok(text::convert_shortcodes(title))
}

fn check_actions(actions: &[Action]) -> Result<(), DiscussionError> {
    if actions.len() > MAX_ACTIONS {
        return Err(DiscussionError::BadRequest(format!(
            "at most {MAX_ACTIONS} actions per message"
        )));
    }
    let mut ids = HashSet::new();
    for a in actions {
        if a.id.is_empty()
            || a.id.len() > 64
            || a.label.trim().is_empty()
            || a.label.chars().count() > 128
            || a.id.chars().chain(a.label.chars()).any(char::is_control)
        {
            return Err(DiscussionError::BadRequest(
                "an action has an id of 1 to 64 bytes and a label of 1 to 128 characters, \
                 without control characters"
                    .into(),
            ));
        }
        if !ids.insert(&a.id) {
            return Err(DiscussionError::BadRequest(format!(
                "action id {:?} is used twice",
                a.id
            )));
        }
    }
    Ok(())
}

/// SHA-256 over the message's content as the client sent it, each part length-prefixed.
fn payload_hash(
    discussion: &str,
    text: &str,
    reply_to: Option<&str>,
    data: Option<&str>,
    actions: &str,
    files: &[String],
) -> String {
    let mut h = Sha256::new();
    // Files are hashed only when there are some, so hashes stored before files existed
    // still match their resends.
    let files = (!files.is_empty()).then(|| files.join("\n"));
    for part in [Some(discussion), Some(text), reply_to, data, Some(actions)]
        .into_iter()
        .chain(files.as_deref().map(Some))
    {
        match part {
            Some(p) => {
                h.update([1u8]);
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            None => h.update([0u8]),
        }
    }
    hex::encode(h.finalize())
}

impl super::access::ObjectAuthority for Sequencer {
    type Error = DiscussionError;
    async fn provider_access(
        &self,
        object: &ObjectRef,
        user: &str,
    ) -> Result<Option<Access>, DiscussionError> {
        if let Some(access) = self.plugins.bot_access(object, user) {
            return Ok(Some(access));
        }
        Ok(self
            .provider_answers(object, std::slice::from_ref(&user.to_owned()))?
            .map(|answers| answers.first().copied().unwrap_or(Access::None)))
    }
}
