//! Discussions and messages: dialogs, groups and object discussions, exactly-once sending,
//! live delivery and sync.
//!
//! Writes go through the [`sequencer`]: one task that applies commands in batches, each batch
//! one durable transaction, and delivers the resulting events after the commit in sequence
//! order. Reads go straight to storage. Both decide who may see a discussion with
//! [`access::authorize`], the one authorization function.

pub mod access;
pub mod attachments;
pub mod links;
mod render;
mod sequencer;
mod text;

use std::collections::HashMap;
use std::sync::Arc;
use veche_base::SharedClock;

use tokio::sync::{mpsc, oneshot};
use veche_protocol::discussions::{
    Cursor, DiscussionEvent, DiscussionInfo, DiscussionKind, Member, MessageVersion, ObjectRef,
    Role, SendMessage,
};
use veche_protocol::ids::{Login, NodeName};
use veche_protocol::{ErrorBody, Event, Reply, Timestamp};

use crate::inbox::Click;
use crate::live::registry::{EncodedEvent, Registry};
pub(crate) use access::authorize;
use access::{Decided, ProviderHost};
pub use sequencer::Limits;
use sequencer::{Job, Op};
use veche_store::{DiscussionRow, Store, StoreError};

/// Events one `sync` or `history` answer carries at most.
const MAX_EVENTS_PER_ANSWER: i64 = 1000;
/// How often a command may come back from the sequencer for context providers' answers: the
/// caller, then the people mentioned, then the audience, each decided in one call; a fourth
/// round covers a follower or watcher that came meanwhile, and in the last round whoever is
/// still undecided has no access (as when a provider fails).
const DECISION_ROUNDS: usize = 4;
/// Approximate bytes one `sync` or `history` answer carries at most (well under the 16 MiB
/// frame limit); at least one event is always included.
const MAX_BYTES_PER_ANSWER: usize = 4 * 1024 * 1024;
/// Cursors one `sync` may carry.
const MAX_CURSORS: usize = 1000;

/// What is left of one answer's allowance.
struct Budget {
    events: i64,
    bytes: usize,
    any: bool,
}

impl Budget {
    fn new() -> Self {
        Self {
            events: MAX_EVENTS_PER_ANSWER,
            bytes: MAX_BYTES_PER_ANSWER,
            any: false,
        }
    }

    fn spent(&self) -> bool {
        self.events <= 0 || self.bytes == 0
    }

    fn events_left(&self) -> i64 {
        self.events.max(0)
    }

    /// How many of `events` (in order) fit; charges them.
    fn take(&mut self, events: &[DiscussionEvent]) -> usize {
        let mut n = 0;
        for e in events {
            let size = approx_size(e);
            if self.events <= 0 || (self.any && size > self.bytes) {
                self.bytes = 0;
                break;
            }
            self.events -= 1;
            self.bytes = self.bytes.saturating_sub(size);
            self.any = true;
            n += 1;
        }
        n
    }
}

/// An upper estimate of an event's encoded size.
fn approx_size(e: &DiscussionEvent) -> usize {
    use veche_protocol::discussions::Change;
    let body = match &e.change {
        Change::MessagePosted { message } => {
            message.text.as_ref().map_or(0, String::len)
                + message.data.as_ref().map_or(0, |d| d.to_string().len())
                + message
                    .actions
                    .iter()
                    .map(|a| a.id.len() + a.label.len() + 16)
                    .sum::<usize>()
                + message
                    .mentions
                    .iter()
                    .chain(message.reactions.iter().flat_map(|r| r.users.iter()))
                    .map(|u| u.len() + 8)
                    .sum::<usize>()
        }
        Change::MessageEdited { text, .. } => text.as_ref().map_or(0, String::len),
        Change::MembersAdded { users } => users.iter().map(|u| u.len() + 8).sum(),
        Change::TitleChanged { title } | Change::Created { title, .. } => title.len(),
        _ => 0,
    };
    body + 512
}

fn render_seq(e: &DiscussionEvent) -> i64 {
    i64::try_from(e.seq).unwrap_or(i64::MAX)
}

/// Why a discussion operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscussionError {
    /// The discussion, message or user does not exist, or the caller may not see it.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may see the discussion but not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The request's content is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A client message id was reused with different content.
    #[error("{0}")]
    Conflict(String),
    /// The node is stopping.
    #[error("the node is shutting down")]
    Unavailable,
    /// A part of the node is not ready yet; the text says which.
    #[error("{0}")]
    NotReady(String),
    /// The node's policy refused; the body names the rule.
    #[error("{}", .0.message)]
    Refused(Box<ErrorBody>),
    /// Storage failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// The command needs a context provider's answer that was not at hand in the sequencer,
    /// which never calls a plugin: [`Discussions::submit`] asks and sends the command again.
    /// Never an answer to a client.
    #[error("undecided access to {} {}", .0.object.object_type, .0.object.object_id)]
    Undecided(Box<access::Undecided>),
}

/// Who is asking: the authenticated user on one connection.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub device: String,
    pub admin: bool,
    pub connection: u64,
}

/// The discussions service.
#[derive(Debug, Clone)]
pub struct Discussions {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    node: NodeName,
    registry: Arc<Registry>,
    jobs: mpsc::Sender<Job>,
    plugins: ProviderHost,
    /// Linked nodes, asked for their directories.
    links: Arc<dyn links::Links>,
    clock: SharedClock,
}

pub use sequencer::FedOutcome;

/// Where the sequencer reports what it committed, besides the registry: new messages to push
/// notifications, membership changes to presence.
#[derive(Debug, Clone)]
pub struct Outlets {
    pub presence: crate::live::presence::Presence,
    pub push: Arc<dyn PushOutlet>,
    pub fed: FedOutlet,
    /// Batch sizes, commit times, messages stored.
    pub metrics: Arc<dyn BatchMetrics>,
    /// Rung after every commit that changed something: the search indexer waits on it
    /// instead of polling the database.
    pub committed: Arc<tokio::sync::Notify>,
}

/// Push notifications as the sequencer feeds them after each commit; the node's push service
/// implements it.
pub trait PushOutlet: Send + Sync + std::fmt::Debug {
    /// A new message was stored.
    fn notify(&self, notice: Notice);
    /// These users can no longer read `discussion`: what waits for them from it is dropped.
    fn forget(&self, discussion: &str, users: &[String]);
    /// A message was deleted: a notification still waiting with its text is dropped.
    fn forget_message(&self, discussion: &str, message_id: &str);
}

/// Where the sequencer counts its committed batches; the node's metrics implement it.
pub trait BatchMetrics: Send + Sync + std::fmt::Debug {
    /// One batch of `commands` committed in `took`, storing `stored` new messages.
    fn batch(&self, commands: usize, stored: u64, took: std::time::Duration);
}

/// A new message, as the sequencer saw it in the transaction that stored it.
#[derive(Debug, Clone)]
pub struct Notice {
    pub discussion: String,
    /// `dialog`, `group` or `object`.
    pub kind: String,
    pub title: String,
    pub seq: u64,
    pub message_id: String,
    pub author: String,
    pub text: String,
    /// Who receives the message live: members, or followers with access.
    pub audience: Vec<String>,
    pub mentions: Vec<String>,
    /// The author of the message replied to.
    pub replied_to: Option<String>,
}

/// What the sequencer needs for discussions that span nodes: the node's key (none for offline
/// admin commands), and the links to wake when their outboxes grow.
#[derive(Debug, Clone)]
pub struct FedOutlet {
    pub key: Option<Arc<veche_federation::keys::NodeKey>>,
    pub links: Arc<dyn links::Links>,
}

impl Default for FedOutlet {
    fn default() -> Self {
        Self {
            key: None,
            links: Arc::new(links::NoLinks),
        }
    }
}

impl Discussions {
    /// Starts the sequencer.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        store: Store,
        node: NodeName,
        registry: Arc<Registry>,
        config: sequencer::Limits,
        plugins: ProviderHost,
        outlets: Outlets,
        clock: SharedClock,
    ) -> Self {
        let (jobs, rx) = mpsc::channel(4096);
        let links = outlets.fed.links.clone();
        tokio::spawn(sequencer::run(
            sequencer::Sequencer::new(
                store.clone(),
                node.clone(),
                registry.clone(),
                config,
                plugins.clone(),
                outlets,
                clock.clone(),
            ),
            rx,
        ));
        Self {
            inner: Arc::new(Inner {
                store,
                node,
                registry,
                jobs,
                plugins,
                links,
                clock,
            }),
        }
    }

    /// How an object looks, for a caller who may read its discussion; `not found` when no
    /// context provider serves its type or it cannot render it.
    pub async fn describe_object(
        &self,
        caller: &Caller,
        object: &ObjectRef,
    ) -> Result<Reply, DiscussionError> {
        check_object(object)?;
        let key = veche_store::ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        let access = access::object_access(
            &mut access::Reader(&self.inner.store),
            &self.inner.plugins,
            key,
            &caller.user,
        )
        .await?;
        if access == access::Access::None {
            return Err(DiscussionError::NotFound("object"));
        }
        let card = self
            .inner
            .plugins
            .render(object.clone())
            .await
            .ok_or(DiscussionError::NotFound("object card"))?;
        Ok(Reply::Object { card })
    }

    /// People matching `query` (locked users are not listed), of this node or of the linked
    /// `node`.
    pub async fn directory(
        &self,
        query: &str,
        limit: u32,
        node: Option<&str>,
    ) -> Result<Reply, DiscussionError> {
        if query.trim().is_empty() || query.len() > 200 || limit == 0 || limit > 100 {
            return Err(DiscussionError::BadRequest(
                "a directory query is 1 to 200 bytes, limit 1 to 100".into(),
            ));
        }
        if let Some(node) = node.filter(|n| *n != self.inner.node.as_str()) {
            return self.linked_directory(node, query, limit).await;
        }
        let users = self.inner.store.search().directory_users().await?;
        let found = crate::directory::rank(users, query, limit as usize);
        // Colleagues see who someone is, not their address or rights.
        Ok(Reply::Directory {
            users: found
                .into_iter()
                .map(|u| veche_protocol::DirectoryEntry {
                    id: u.id,
                    login: u.login,
                    display_name: u.display_name,
                    department: u.department,
                })
                .collect(),
        })
    }

    /// People of a linked node, as far as the link's scope allows, asked over the link now.
    /// The names found refresh the profiles of that node's users known here.
    async fn linked_directory(
        &self,
        node: &str,
        query: &str,
        limit: u32,
    ) -> Result<Reply, DiscussionError> {
        use veche_federation::wire::QueryError;
        let link = self
            .inner
            .store
            .links()
            .fed_links()
            .await?
            .into_iter()
            .find(|l| l.peer_node == node && l.state == "active")
            .ok_or(DiscussionError::NotFound("linked node"))?
            .link;
        let asked = veche_federation::wire::Query::Directory {
            text: query.to_owned(),
            limit,
        };
        let profiles = self
            .inner
            .links
            .query(&link, asked)
            .await
            .map_err(|e| match e {
                QueryError::NoLink => DiscussionError::NotFound("linked node"),
                QueryError::Malformed(m) => DiscussionError::BadRequest(m),
                QueryError::Refused(m) => {
                    DiscussionError::Forbidden(format!("{node} refused: {m}"))
                }
                e @ (QueryError::Unreachable(_) | QueryError::Stopped) => {
                    DiscussionError::NotReady(e.to_string())
                }
            })?;
        // A node answers for its own users only, with names of a sane size.
        let sane = |s: &str| s.chars().count() <= 200 && !s.chars().any(char::is_control);
        let profiles: Vec<_> = profiles
            .into_iter()
            .filter(|p| {
                p.id.parse::<veche_protocol::ids::UserId>()
                    .is_ok_and(|u| u.node().as_str() == node)
                    && sane(&p.display_name)
                    && sane(&p.department)
            })
            .collect();
        self.inner
            .store
            .federated()
            .refresh_remote_profiles(
                &profiles
                    .iter()
                    .map(|p| veche_store::RemoteProfile {
                        id: &p.id,
                        display_name: &p.display_name,
                        department: &p.department,
                    })
                    .collect::<Vec<_>>(),
                self.inner.clock.now_ms(),
            )
            .await?;
        Ok(Reply::Directory {
            users: profiles
                .into_iter()
                .map(|p| veche_protocol::DirectoryEntry {
                    // What `open_dialog` and `create_group` take for a user of that node.
                    login: p.id.clone(),
                    id: p.id,
                    display_name: p.display_name,
                    department: p.department,
                })
                .collect(),
        })
    }

    /// The discussion a message is in.
    pub async fn discussion_of(&self, message: &str) -> Option<String> {
        self.inner
            .store
            .discussions()
            .message(message)
            .await
            .ok()
            .flatten()
            .map(|m| m.discussion_id)
    }

    /// At the home: shares a group over a link (an administrator's command).
    pub async fn share(&self, discussion: &str, link: &str) -> Result<(), DiscussionError> {
        self.submit(Op::Share {
            discussion: discussion.to_owned(),
            link: link.to_owned(),
        })
        .await
        .map(|_| ())
    }

    /// Applies items received over links (verified by the transport), in each link's order,
    /// in one command: submissions to discussions this node is home of, and stamped events of
    /// other homes' discussions. One outcome per item; an error means none was applied.
    pub async fn apply_federated(
        &self,
        items: Vec<(String, veche_federation::wire::Item)>,
    ) -> Result<Vec<sequencer::FedOutcome>, DiscussionError> {
        match self.submit(Op::FedMany { items }).await? {
            sequencer::Done::Federated(outcomes) => Ok(outcomes),
            other => Err(DiscussionError::Store(veche_store::StoreError::Aborted(
                format!("unexpected answer {other:?}"),
            ))),
        }
    }

    /// Has the sequencer apply `op`. A command that needs a context provider's answer not at
    /// hand comes back undecided before it has written anything: the provider is asked here,
    /// on the caller's task, where no lock and no transaction is held, and the command is sent
    /// again with the answers. A slow provider thus delays only the commands that need it.
    async fn submit(&self, op: Op) -> Result<sequencer::Done, DiscussionError> {
        let mut decided = Decided::default();
        let mut op = Some(op);
        for round in 1..=DECISION_ROUNDS {
            let final_round = round == DECISION_ROUNDS;
            // Only commands that may come back need a copy: none while no provider runs.
            let this = match op.take() {
                Some(op_now) if !final_round && self.inner.plugins.has_providers() => {
                    op = Some(op_now.clone());
                    op_now
                }
                Some(op_now) => op_now,
                None => break,
            };
            let (reply, rx) = oneshot::channel();
            self.inner
                .jobs
                .send(Job {
                    op: this,
                    reply,
                    decided: decided.clone(),
                    final_round,
                })
                .await
                .map_err(|_| DiscussionError::Unavailable)?;
            match rx.await.map_err(|_| DiscussionError::Unavailable)? {
                Err(DiscussionError::Undecided(undecided)) if op.is_some() => {
                    decided = self.inner.plugins.decide(*undecided, decided).await;
                }
                // A provider was installed while the command was on its way; it was not
                // applied.
                Err(DiscussionError::Undecided(_)) => break,
                other => return other,
            }
        }
        Err(DiscussionError::NotReady(
            "a context provider was installed meanwhile; try again".into(),
        ))
    }

    async fn reply_for(
        &self,
        caller: &Caller,
        done: sequencer::Done,
    ) -> Result<Reply, DiscussionError> {
        Ok(match done {
            sequencer::Done::Discussion(id) => Reply::Discussion {
                discussion: self.get(caller, &id).await?,
            },
            sequencer::Done::Sent { message_id, seq } => Reply::Sent { message_id, seq },
            sequencer::Done::Nothing
            | sequencer::Done::Federated(_)
            | sequencer::Done::Reader(_)
            | sequencer::Done::Checked(_) => Reply::Done,
        })
    }

    pub async fn open_dialog(&self, caller: &Caller, with: &str) -> Result<Reply, DiscussionError> {
        let with = self.user_ref(with)?;
        let done = self
            .submit(Op::OpenDialog {
                caller: caller.clone(),
                with,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn create_group(
        &self,
        caller: &Caller,
        title: &str,
        members: &[String],
    ) -> Result<Reply, DiscussionError> {
        let members = members
            .iter()
            .map(|m| self.user_ref(m))
            .collect::<Result<Vec<_>, _>>()?;
        let done = self
            .submit(Op::CreateGroup {
                caller: caller.clone(),
                title: title.to_owned(),
                members,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn open_object(
        &self,
        caller: &Caller,
        mut object: ObjectRef,
        title: &str,
    ) -> Result<Reply, DiscussionError> {
        check_object(&object)?;
        // `application@node`: an object of that node (or of this one).
        if let Some((app, node)) = object.application.split_once('@') {
            if node != self.inner.node.as_str() {
                let node = node.to_owned();
                return self.open_linked_object(caller, object, &node).await;
            }
            object.application = app.to_owned();
        }
        let title = self.object_title(&caller.user, &object, title).await?;
        let done = self
            .submit(Op::OpenObject {
                caller: caller.clone(),
                object,
                title,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    /// How long a user opening another node's object waits for its discussion to arrive over
    /// the link, after that node said they may see it.
    const LINKED_OBJECT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

    /// Opens the discussion of an object of the linked node `node` (the object's application
    /// is `name@node`): that node decides whether the caller may see it, shares it over the
    /// link and says what the caller may do there; this waits until both have arrived. If
    /// the node cannot be reached, what it said last stands.
    async fn open_linked_object(
        &self,
        caller: &Caller,
        object: ObjectRef,
        node: &str,
    ) -> Result<Reply, DiscussionError> {
        let not_found = || DiscussionError::NotFound("object");
        let Some((app, _)) = object.application.split_once('@') else {
            return Err(not_found());
        };
        let store = &self.inner.store;
        let Some(link) = store.federated().fed_link_to(node).await? else {
            return Err(not_found());
        };
        // What this node holds, so that the home shares the discussion again if it is lost
        // here, and says again what the user may do if that is not what was last said.
        let held = match store.discussions().object_discussion_id(&object).await? {
            None => None,
            Some(id) => Some(access::reader_to_wire(
                store.federated().fed_reader(&id, &caller.user).await?,
            )),
        };
        let asked = self
            .inner
            .links
            .open_object(
                &link,
                &caller.user,
                (app, &object.object_type, &object.object_id),
                held,
            )
            .await;
        use veche_federation::wire::QueryError;
        let (id, write) = match asked {
            Ok((id, access)) => (id, access == veche_federation::wire::Access::Write),
            Err(e) => {
                // Unreachable, or busy (it says to ask again, or did not answer in time):
                // what the home said last stands.
                let transient = match &e {
                    QueryError::Unreachable(_) | QueryError::Stopped => true,
                    QueryError::Refused(reason) => {
                        reason.contains("again") || reason.contains("in time")
                    }
                    _ => false,
                };
                if !transient {
                    tracing::debug!(node, error = %e, "a linked node did not open an object");
                    return Err(not_found());
                }
                return match self.existing_object_discussion(caller, &object).await? {
                    Some(id) => {
                        self.reply_for(caller, sequencer::Done::Discussion(id))
                            .await
                    }
                    None => Err(DiscussionError::Unavailable),
                };
            }
        };
        if veche_federation::event::node_of(&id) != Some(node) {
            return Err(not_found());
        }
        let deadline = tokio::time::Instant::now() + Self::LINKED_OBJECT_WAIT;
        loop {
            let arrived = store.federated().fed_reader(&id, &caller.user).await? == Some(write)
                && store.discussions().discussion(&id).await?.is_some_and(|d| {
                    d.object_app.as_deref() == Some(&*object.application)
                        && d.object_type.as_deref() == Some(&*object.object_type)
                        && d.object_id.as_deref() == Some(&*object.object_id)
                });
            if arrived {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(DiscussionError::Unavailable);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.reply_for(caller, sequencer::Done::Discussion(id))
            .await
    }

    /// At the home: a user of the peer of `link` opens the discussion of one of this node's
    /// objects (`Query::Object`). The discussion's id and whether they may write there;
    /// `None` if they may not see the object.
    pub async fn open_object_for_link(
        &self,
        link: &str,
        user: &str,
        object: ObjectRef,
        held: Option<veche_federation::wire::Access>,
    ) -> Result<Option<(String, bool)>, DiscussionError> {
        check_object(&object)?;
        if object.application.contains('@') {
            return Ok(None);
        }
        // The decision comes first, so that a context provider's word on whether an object
        // exists reaches only users who may see it. The sequencer decides again.
        let key = veche_store::ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        let mut reader = access::Reader(&self.inner.store);
        let allowed = access::object_access(&mut reader, &self.inner.plugins, key, user).await?
            != access::Access::None;
        let title = if allowed {
            self.object_title(user, &object, "").await?
        } else {
            String::new()
        };
        match self
            .submit(Op::FedOpenObject {
                link: link.to_owned(),
                user: user.to_owned(),
                object,
                title,
                held,
            })
            .await?
        {
            sequencer::Done::Reader(answer) => Ok(answer),
            other => Err(DiscussionError::Store(StoreError::Aborted(format!(
                "unexpected answer {other:?}"
            )))),
        }
    }

    /// The peer of `link` lost what it had stored of this node's items after `received`
    /// (restored from a backup): see [`Op::FedResync`].
    pub async fn resync_link(&self, link: &str, received: u64) -> Result<(), DiscussionError> {
        self.submit(Op::FedResync {
            link: link.to_owned(),
            received: i64::try_from(received).unwrap_or(i64::MAX),
        })
        .await?;
        Ok(())
    }

    /// The link to `home` ended: see [`Op::FedUndelivered`].
    pub async fn undelivered(&self, home: &str, reason: &str) -> Result<(), DiscussionError> {
        self.submit(Op::FedUndelivered {
            home: home.to_owned(),
            reason: reason.to_owned(),
        })
        .await?;
        Ok(())
    }

    /// This node was restored from a backup: see [`Op::FedRejoin`].
    pub async fn rejoin_link(
        &self,
        link: &str,
        heads: Vec<(String, i64)>,
    ) -> Result<(), DiscussionError> {
        self.submit(Op::FedRejoin {
            link: link.to_owned(),
            heads,
        })
        .await?;
        Ok(())
    }

    /// At the home: decides again, page by page, for every user of a linked node told they
    /// may read one of this node's object discussions.
    pub async fn recheck_linked_readers(&self) -> Result<(), DiscussionError> {
        let mut after = String::new();
        loop {
            match self.submit(Op::FedRecheckReaders { after }).await? {
                sequencer::Done::Checked(Some(next)) => after = next,
                _ => return Ok(()),
            }
        }
    }

    /// The title of a new object discussion: `title`, or what the type's context provider
    /// calls the object. A context provider for the type also says whether the object exists
    /// (without one, the application's word is taken). Bots act on the word of the
    /// application whose event they handle, so they may open it before the provider has
    /// heard of the object.
    async fn object_title(
        &self,
        user: &str,
        object: &ObjectRef,
        title: &str,
    ) -> Result<String, DiscussionError> {
        let mut title = title.to_owned();
        let bot = self.inner.plugins.bot_plugin(user).is_some();
        let own_app = self
            .inner
            .store
            .apps()
            .is_app(user, &object.application)
            .await?;
        if !bot && !own_app && self.inner.plugins.serves(&object.object_type) {
            let exists = self
                .inner
                .store
                .discussions()
                .object_discussion_id(object)
                .await?
                .is_some();
            if !exists {
                self.inner
                    .plugins
                    .validate(object.clone())
                    .await
                    .map_err(|e| DiscussionError::BadRequest(e.to_string()))?;
            }
            if title.trim().is_empty()
                && let Some(card) = self.inner.plugins.render(object.clone()).await
            {
                title = card.title;
            }
        }
        Ok(title)
    }

    /// The id of an object's discussion if it exists and the caller may read it: the read
    /// path, without a round through the sequencer.
    pub async fn existing_object_discussion(
        &self,
        caller: &Caller,
        object: &ObjectRef,
    ) -> Result<Option<String>, DiscussionError> {
        check_object(object)?;
        let Some(id) = self
            .inner
            .store
            .discussions()
            .object_discussion_id(object)
            .await?
        else {
            return Ok(None);
        };
        match self.readable(caller, &id).await {
            Ok(_) => Ok(Some(id)),
            Err(DiscussionError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn set_object_access(
        &self,
        caller: &Caller,
        object: ObjectRef,
        users: &[String],
        groups: &[String],
    ) -> Result<Reply, DiscussionError> {
        check_object(&object)?;
        let users = users
            .iter()
            .map(|u| self.user_ref(u))
            .collect::<Result<Vec<_>, _>>()?;
        let done = self
            .submit(Op::SetObjectAccess {
                caller: caller.clone(),
                object,
                users,
                groups: groups.to_vec(),
            })
            .await?;
        self.reply_for(caller, done).await
    }

    /// An object's access list as (users, groups); for administrators and the object's
    /// application.
    pub async fn object_access_list(
        &self,
        caller: &Caller,
        object: &ObjectRef,
    ) -> Result<(Vec<String>, Vec<String>), DiscussionError> {
        check_object(object)?;
        let store = &self.inner.store;
        if !caller.admin
            && !store
                .apps()
                .is_app(&caller.user, &object.application)
                .await?
        {
            return Err(DiscussionError::Forbidden(
                "only administrators and the object's application read object access".into(),
            ));
        }
        let key = veche_store::ObjectKey {
            app: &object.application,
            kind: &object.object_type,
            id: &object.object_id,
        };
        let mut users = Vec::new();
        let mut groups = Vec::new();
        for p in store.discussions().object_access_list(key).await? {
            if let Some(u) = p.strip_prefix("user:") {
                users.push(u.to_owned());
            } else if let Some(g) = p.strip_prefix("group:") {
                groups.push(g.to_owned());
            }
        }
        Ok((users, groups))
    }

    pub async fn add_members(
        &self,
        caller: &Caller,
        discussion: &str,
        users: &[String],
    ) -> Result<Reply, DiscussionError> {
        let users = users
            .iter()
            .map(|u| self.user_ref(u))
            .collect::<Result<Vec<_>, _>>()?;
        let done = self
            .submit(Op::AddMembers {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                users,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn remove_member(
        &self,
        caller: &Caller,
        discussion: &str,
        user: &str,
    ) -> Result<Reply, DiscussionError> {
        let user = self.user_ref(user)?;
        let done = self
            .submit(Op::RemoveMember {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                user,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn set_title(
        &self,
        caller: &Caller,
        discussion: &str,
        title: &str,
    ) -> Result<Reply, DiscussionError> {
        let done = self
            .submit(Op::SetTitle {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                title: title.to_owned(),
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn follow(
        &self,
        caller: &Caller,
        discussion: &str,
        follow: bool,
    ) -> Result<Reply, DiscussionError> {
        let done = self
            .submit(Op::Follow {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                follow,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn send(
        &self,
        caller: &Caller,
        message: SendMessage,
    ) -> Result<Reply, DiscussionError> {
        let done = self
            .submit(Op::Send {
                caller: caller.clone(),
                message,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn edit(
        &self,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
        text: &str,
    ) -> Result<Reply, DiscussionError> {
        let done = self
            .submit(Op::Edit {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                message_id: message_id.to_owned(),
                text: text.to_owned(),
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn delete(
        &self,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
    ) -> Result<Reply, DiscussionError> {
        let done = self
            .submit(Op::Delete {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                message_id: message_id.to_owned(),
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn react(
        &self,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
        emoji: &str,
        add: bool,
    ) -> Result<Reply, DiscussionError> {
        let emoji = text::normalize_emoji(emoji)
            .ok_or_else(|| DiscussionError::BadRequest(format!("{emoji:?} is not an emoji")))?;
        let done = self
            .submit(Op::React {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                message_id: message_id.to_owned(),
                emoji,
                add,
            })
            .await?;
        self.reply_for(caller, done).await
    }

    pub async fn mark_read(
        &self,
        caller: &Caller,
        discussion: &str,
        seq: u64,
    ) -> Result<Reply, DiscussionError> {
        let done = self
            .submit(Op::MarkRead {
                caller: caller.clone(),
                discussion: discussion.to_owned(),
                seq: i64::try_from(seq).unwrap_or(i64::MAX),
            })
            .await?;
        self.reply_for(caller, done).await
    }

    /// A discussion the caller may read; `NotFound` otherwise (also when it does not exist).
    async fn readable(
        &self,
        caller: &Caller,
        discussion: &str,
    ) -> Result<DiscussionRow, DiscussionError> {
        Ok(self.granted(caller, discussion).await?.0)
    }

    /// The discussion and what the caller may do in it, if they may read it.
    pub async fn granted(
        &self,
        caller: &Caller,
        discussion: &str,
    ) -> Result<(DiscussionRow, access::Grant), DiscussionError> {
        let store = &self.inner.store;
        let row = store
            .discussions()
            .discussion(discussion)
            .await?
            .ok_or(DiscussionError::NotFound("discussion"))?;
        let grant = authorize(
            &mut access::Reader(store),
            &self.inner.plugins,
            &caller.user,
            &row,
        )
        .await?
        .ok_or(DiscussionError::NotFound("discussion"))?;
        Ok((row, grant))
    }

    /// Sends a button click to the message's author.
    pub async fn click(
        &self,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
        action_id: &str,
    ) -> Result<Reply, DiscussionError> {
        // Pressing a button acts in the discussion: readers who may not post may not click.
        if !self.granted(caller, discussion).await?.1.write {
            return Err(DiscussionError::Forbidden(
                "you may read this discussion but not act in it".into(),
            ));
        }
        let message = self
            .inner
            .store
            .discussions()
            .message(message_id)
            .await?
            .filter(|m| m.discussion_id == discussion && !m.deleted)
            .ok_or(DiscussionError::NotFound("message"))?;
        let actions: Vec<veche_protocol::discussions::Action> =
            serde_json::from_str(&message.actions).unwrap_or_default();
        if !actions.iter().any(|a| a.id == action_id) {
            return Err(DiscussionError::NotFound("action"));
        }
        // An author who can no longer read the discussion learns nothing of it.
        let row = self
            .inner
            .store
            .discussions()
            .discussion(discussion)
            .await?
            .ok_or(DiscussionError::NotFound("discussion"))?;
        if authorize(
            &mut access::Reader(&self.inner.store),
            &self.inner.plugins,
            &message.author,
            &row,
        )
        .await?
        .is_none()
        {
            return Ok(Reply::Done);
        }
        // An application's button: its webhooks that want clicks are told, durably, before
        // anything else, so that a failure here leaves nothing half-delivered to retry.
        let author_app = message
            .author
            .split_once('@')
            .map(|(login, _)| login.to_owned());
        if let Some(app) = author_app
            && self
                .inner
                .store
                .apps()
                .is_app(&message.author, &app)
                .await?
        {
            let body = serde_json::json!({
                "type": "action_clicked",
                "discussion": discussion,
                "object": render::object(&row),
                "message_id": message_id,
                "action_id": action_id,
                "user": caller.user,
                "data": message
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
            })
            .to_string();
            self.inner
                .store
                .apps()
                .enqueue_owner_webhooks(
                    &message.author,
                    "action.clicked",
                    &body,
                    self.inner.clock.now_ms(),
                )
                .await?;
        }
        let clicked = Event::ActionClicked {
            discussion: discussion.to_owned(),
            message_id: message_id.to_owned(),
            action_id: action_id.to_owned(),
            user: caller.user.clone(),
        };
        if let Some(event) = EncodedEvent::new(&clicked) {
            self.inner
                .registry
                .deliver(std::slice::from_ref(&message.author), &event);
        }
        // A bot's button: its plugin is told, through its durable inbox.
        if let Some(plugin) = self.inner.plugins.bot_plugin(&message.author) {
            let click = Click {
                message: message_id.to_owned(),
                discussion: discussion.to_owned(),
                object: render::object(&row),
                action: action_id.to_owned(),
                user: caller.user.clone(),
                data: message.data.clone(),
            };
            self.inner.plugins.clicked(plugin.clone(), click).await?;
        }
        Ok(Reply::Done)
    }

    /// Starts or stops live events of an object discussion on the caller's connection.
    pub async fn watch(
        &self,
        caller: &Caller,
        discussion: &str,
        on: bool,
    ) -> Result<Reply, DiscussionError> {
        if on {
            self.readable(caller, discussion).await?;
        }
        self.inner
            .registry
            .watch(&caller.user, caller.connection, discussion, on);
        Ok(Reply::Done)
    }

    /// Who sees the caller typing in `discussion`: its members (dialogs, groups) or the
    /// connections that have it open (object discussions). The caller must be able to post.
    pub async fn typing_audience(
        &self,
        caller: &Caller,
        discussion: &str,
    ) -> Result<crate::live::presence::TypingAudience, DiscussionError> {
        let (row, grant) = self.granted(caller, discussion).await?;
        if !grant.write {
            return Err(DiscussionError::Forbidden(
                "you may read this discussion but not post in it".into(),
            ));
        }
        if row.kind == DiscussionKind::Object {
            // As for messages: only watchers who may read the discussion now.
            let mut allowed = std::collections::HashSet::new();
            for user in self.inner.registry.watcher_users(&row.id) {
                let store = &self.inner.store;
                if authorize(&mut access::Reader(store), &self.inner.plugins, &user, &row)
                    .await?
                    .is_some()
                {
                    allowed.insert(user);
                }
            }
            return Ok(crate::live::presence::TypingAudience::Watchers(allowed));
        }
        let members = self.inner.store.discussions().members_of(&row.id).await?;
        Ok(crate::live::presence::TypingAudience::Users(
            members.into_iter().map(|(u, _)| u).collect(),
        ))
    }

    /// The users named (`login` or `login@node`, at most 500) that exist, as ids, in the order
    /// given; unknown ones are left out.
    pub async fn existing_users(&self, users: &[String]) -> Result<Vec<String>, DiscussionError> {
        if users.len() > crate::live::presence::MAX_QUERY {
            return Err(DiscussionError::BadRequest(format!(
                "at most {} users per request",
                crate::live::presence::MAX_QUERY
            )));
        }
        let mut ids: Vec<String> = users.iter().filter_map(|u| self.user_ref(u).ok()).collect();
        let mut seen = std::collections::HashSet::new();
        ids.retain(|u| seen.insert(u.clone()));
        let json = serde_json::to_string(&ids).unwrap_or_default();
        let existing: std::collections::HashSet<String> = self
            .inner
            .store
            .presence()
            .existing_users(&json)
            .await?
            .into_iter()
            .collect();
        ids.retain(|u| existing.contains(u));
        Ok(ids)
    }

    /// The caller's discussion list, most recent activity first. The list, the caller's
    /// places and the members come from two statements; only object discussions ask
    /// [`authorize`] one by one (their access may be a context provider's answer).
    pub async fn list(&self, caller: &Caller) -> Result<Reply, DiscussionError> {
        let store = &self.inner.store;
        let listed = store.discussions().listed_discussions(&caller.user).await?;
        let mut members: HashMap<String, Vec<Member>> = HashMap::new();
        for (discussion, user, role) in store.discussions().members_of_listed(&caller.user).await? {
            members
                .entry(discussion)
                .or_default()
                .push(member(user, &role));
        }
        let mut discussions = Vec::with_capacity(listed.len());
        for row in listed {
            let readable = match row.discussion.kind {
                // What `authorize` asks of a dialog or group: the caller's membership.
                DiscussionKind::Dialog | DiscussionKind::Group => row.role.is_some(),
                DiscussionKind::Object => authorize(
                    &mut access::Reader(store),
                    &self.inner.plugins,
                    &caller.user,
                    &row.discussion,
                )
                .await?
                .is_some(),
            };
            if !readable {
                continue;
            }
            let members = if row.discussion.kind == DiscussionKind::Object {
                Vec::new()
            } else {
                members.remove(&row.discussion.id).unwrap_or_default()
            };
            let following = row.discussion.kind != DiscussionKind::Object || row.following;
            discussions.push(describe(
                &row.discussion,
                members,
                Place {
                    read_seq: row.read_seq,
                    unread: row.unread,
                    mentions: row.mentions,
                    following,
                },
            ));
        }
        Ok(Reply::Discussions { discussions })
    }

    pub async fn get(
        &self,
        caller: &Caller,
        discussion: &str,
    ) -> Result<DiscussionInfo, DiscussionError> {
        let row = self.readable(caller, discussion).await?;
        self.info(caller, &row).await
    }

    async fn info(
        &self,
        caller: &Caller,
        row: &DiscussionRow,
    ) -> Result<DiscussionInfo, DiscussionError> {
        let store = &self.inner.store;
        let kind = row.kind;
        let members = if kind == DiscussionKind::Object {
            Vec::new()
        } else {
            store
                .discussions()
                .members_of(&row.id)
                .await?
                .into_iter()
                .map(|(user, role)| member(user, &role))
                .collect()
        };
        let read_seq = store
            .discussions()
            .read_marker(&caller.user, &row.id)
            .await?;
        let (unread, mentions) = store
            .discussions()
            .unread(&caller.user, &row.id, read_seq)
            .await?;
        let following = kind != DiscussionKind::Object
            || store
                .discussions()
                .is_following(&caller.user, &row.id)
                .await?;
        Ok(describe(
            row,
            members,
            Place {
                read_seq,
                unread,
                mentions,
                following,
            },
        ))
    }

    pub async fn history(
        &self,
        caller: &Caller,
        discussion: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Reply, DiscussionError> {
        let row = self.readable(caller, discussion).await?;
        let limit = i64::from(limit.clamp(1, 500));
        let before = before.map_or(row.last_seq + 1, |b| i64::try_from(b).unwrap_or(i64::MAX));
        let store = &self.inner.store;
        let rows = store
            .discussions()
            .events_before(discussion, before, limit)
            .await?;
        let mut rendered = render::events(store, rows).await?;
        // Keep the newest events that fit the answer; the client pages back for the rest.
        rendered.reverse();
        let taken = Budget::new().take(&rendered);
        rendered.truncate(taken);
        rendered.reverse();
        let more = rendered.first().is_some_and(|e| e.seq > 1);
        Ok(Reply::Events {
            events: rendered,
            more,
        })
    }

    pub async fn sync(
        &self,
        caller: &Caller,
        cursors: &[Cursor],
    ) -> Result<Reply, DiscussionError> {
        if cursors.len() > MAX_CURSORS {
            return Err(DiscussionError::BadRequest(format!(
                "at most {MAX_CURSORS} cursors per sync"
            )));
        }
        let store = &self.inner.store;
        let mut events: Vec<DiscussionEvent> = Vec::new();
        let mut budget = Budget::new();
        let mut more = false;
        let mut seen = std::collections::HashSet::new();
        for cursor in cursors {
            if !seen.insert(cursor.discussion.as_str()) {
                continue;
            }
            // Discussions the caller can no longer read are skipped without a word: the
            // client was told with `discussion_removed`.
            let row = match self.readable(caller, &cursor.discussion).await {
                Ok(row) => row,
                Err(DiscussionError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let after = i64::try_from(cursor.seq).unwrap_or(i64::MAX);
            if row.last_seq <= after {
                continue;
            }
            if budget.spent() {
                more = true;
                break;
            }
            let rows = store
                .discussions()
                .events_after(&row.id, after, budget.events_left())
                .await?;
            let fetched = rows.len();
            let rendered = render::events(store, rows).await?;
            let taken = budget.take(&rendered);
            if taken < fetched
                || rendered
                    .get(taken.saturating_sub(1))
                    .is_some_and(|e| render_seq(e) < row.last_seq)
            {
                more = true;
            }
            events.extend(rendered.into_iter().take(taken));
        }
        Ok(Reply::Events { events, more })
    }

    pub async fn edit_history(
        &self,
        caller: &Caller,
        discussion: &str,
        message_id: &str,
    ) -> Result<Reply, DiscussionError> {
        self.readable(caller, discussion).await?;
        let store = &self.inner.store;
        let message = store
            .discussions()
            .message(message_id)
            .await?
            .filter(|m| m.discussion_id == discussion)
            .ok_or(DiscussionError::NotFound("message"))?;
        let mut versions: Vec<MessageVersion> = store
            .discussions()
            .message_versions(message_id)
            .await?
            .into_iter()
            .map(|(version, text, at)| MessageVersion {
                version: u32::try_from(version).unwrap_or(u32::MAX),
                text,
                at: Timestamp(at),
            })
            .collect();
        // A message never edited keeps its only version in the message itself.
        if versions.is_empty()
            && let Some(text) = message.text
        {
            versions.push(MessageVersion {
                version: 1,
                text,
                at: Timestamp(message.created_at),
            });
        }
        Ok(Reply::Versions { versions })
    }

    /// `login`, `login@this-node` or `login@linked-node` → user id (existence, and for other
    /// nodes whether they are linked and where such a user may take part, is checked by the
    /// sequencer).
    pub fn user_ref(&self, input: &str) -> Result<String, DiscussionError> {
        let (login, node) = match input.split_once('@') {
            Some((l, n)) => (l, Some(n)),
            None => (input, None),
        };
        if let Some(node) = node
            && node != self.inner.node.as_str()
        {
            let id = format!("{}@{node}", login.to_lowercase());
            return match id.parse::<veche_protocol::ids::UserId>() {
                Ok(_) => Ok(id),
                Err(_) => Err(DiscussionError::NotFound("user")),
            };
        }
        let login: Login = login
            .to_lowercase()
            .parse()
            .map_err(|_| DiscussionError::NotFound("user"))?;
        Ok(format!("{login}@{}", self.inner.node))
    }
}

/// Checks the parts of an object reference.
pub fn check_object(object: &ObjectRef) -> Result<(), DiscussionError> {
    let ok =
        |s: &str, max: usize| !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control);
    if ok(&object.application, 64) && ok(&object.object_type, 64) && ok(&object.object_id, 256) {
        Ok(())
    } else {
        Err(DiscussionError::BadRequest(
            "an object is (application ≤ 64, object type ≤ 64, object id ≤ 256) non-empty strings"
                .into(),
        ))
    }
}

/// A caller's place in a discussion, as its description shows it.
struct Place {
    read_seq: i64,
    unread: i64,
    mentions: i64,
    following: bool,
}

fn member(user: String, role: &str) -> Member {
    Member {
        user,
        role: if role == "owner" {
            Role::Owner
        } else {
            Role::Member
        },
    }
}

/// A discussion as the protocol describes it to one caller.
fn describe(row: &DiscussionRow, members: Vec<Member>, place: Place) -> DiscussionInfo {
    DiscussionInfo {
        id: row.id.clone(),
        kind: row.kind,
        title: row.title.clone(),
        object: render::object(row),
        members,
        last_seq: render::seq(row.last_seq),
        last_activity_at: Timestamp(row.last_activity_at),
        read_seq: render::seq(place.read_seq),
        unread: render::seq(place.unread),
        mentions: render::seq(place.mentions),
        following: place.following,
    }
}
