//! The libp2p side: one swarm (TCP + Noise + Yamux), an allowlist of the peers named by active
//! grants, and one request-response protocol ([`crate::wire`]).
//!
//! One task owns the swarm. For each link it keeps a small state machine:
//! dial when the outbox has something (with exponential backoff), greet on every new
//! connection (`hello` tells the peer what we have stored from it, so it resumes its outbox
//! right after), then push the outbox stop-and-wait: one batch in flight, the next only after
//! the acknowledgement, the same range again after a failure. Received batches are verified
//! item by item and handed to the [`LinkStore`] in one call; the acknowledgement goes out only
//! after the store returned. Storage calls run on tasks of their own and report back on a
//! channel, so the swarm never waits for the database.
//!
//! Besides the outbox, a node may ask its peer a question (`query`: the peer's user directory,
//! a piece of a file, or the discussion of one of its business objects, within the link's
//! scope). Queries are answered by the node through
//! [`Notification::Query`], never stored, and never wait for a link to come back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use libp2p::core::Transport as _;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel, cbor};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list};
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{Event, Stamp};
use crate::grant::{Change, DirectoryScope, Grant, Party, Scope, Signed, SignedNotice};
use crate::keys::{Hash, NodeId, NodeKey, PublicKey};
use crate::store::{Incoming, LinkStore, Refused};
use crate::wire::{
    Access, Address, Chunk, Item, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_CHUNK,
    MAX_DISCUSSION_BYTES, MAX_FRAME, MAX_PRESENCE, MAX_PROFILES, MAX_QUERY_BYTES, MAX_READERS,
    MAX_REASON_BYTES, MAX_USER_BYTES, PROTOCOL, Presence, Profile, Query, Rejected, Request,
    Response,
};

use veche_base::SharedClock;

/// How the transport behaves.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/7700`.
    pub listen: Vec<Multiaddr>,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// The first pause after a failure; doubled after each further failure.
    pub retry_min: Duration,
    /// The longest pause.
    pub retry_max: Duration,
    /// How long an idle connection stays open.
    pub idle_timeout: Duration,
    /// The wall clock grants' validity and notices are judged by.
    pub clock: SharedClock,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            request_timeout: Duration::from_secs(10),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            clock: veche_base::SystemClock::shared(),
        }
    }
}

/// Presence requests a node takes from a peer: a burst, then so many a second.
const PRESENCE_TAKEN: (f64, f64) = (50.0, 20.0);
/// Presence requests a node sends: fewer than a peer takes, so that a request which arrives
/// sooner after the one before than it was sent is not refused.
const PRESENCE_SENT: (f64, f64) = (40.0, 16.0);
/// A node is told again at most this often that a peer lost what it had stored of ours, or
/// that it was restored from a backup itself: each time it queues its shared discussions'
/// state again, and a peer that says so on every connection must not make it do that on
/// every connection.
const RESTORE_RETELL: Duration = Duration::from_secs(600);
/// Whether the node may be told again of a restore (last told at `told`, which becomes now
/// if so): see [`RESTORE_RETELL`].
fn retell_due(told: &mut Option<Instant>) -> bool {
    let due = told.is_none_or(|at| at.elapsed() >= RESTORE_RETELL);
    if due {
        *told = Some(Instant::now());
    }
    due
}

/// The highest `link_seq` taken from a peer: far beyond any real outbox, and safe to add to.
const MAX_LINK_SEQ: u64 = 1 << 62;

/// A token bucket: `burst` requests at once, then `per_sec`.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    burst: f64,
    per_sec: f64,
    left: f64,
    at: Instant,
}

impl Allowance {
    fn full((burst, per_sec): (f64, f64)) -> Self {
        Self {
            burst,
            per_sec,
            left: burst,
            at: Instant::now(),
        }
    }

    /// Takes one request's worth if there is one now.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let left =
            (self.left + now.duration_since(self.at).as_secs_f64() * self.per_sec).min(self.burst);
        let take = left >= 1.0;
        self.left = if take { left - 1.0 } else { left };
        self.at = now;
        take
    }
}

/// What the transport tells the node.
#[derive(Debug)]
pub enum Notification {
    /// Presence of the peer's users (only on links whose scope carries presence; only users
    /// of the peer).
    Presence {
        /// The link.
        link: String,
        /// The changes.
        users: Vec<Presence>,
    },
    /// The peer asks something; answer through `responder` (dropped unanswered, or not
    /// answered within the request timeout, the peer hears a refusal).
    Query {
        /// The link.
        link: String,
        /// The link's scope now. Refused here already: a directory query on a link whose
        /// directory scope is [`DirectoryScope::None`], a file query on one that carries no
        /// files, an object query on one that does not share object discussions or for a user
        /// of another node than the peer.
        scope: Scope,
        /// The question.
        query: Query,
        /// Where the answer goes.
        responder: Responder,
    },
    /// New items from the peer are in the store.
    Received {
        /// The link.
        link: String,
    },
    /// The peer has stored more of ours than this node ever sent: this node was restored from
    /// a backup. What waited is numbered after it already ([`LinkStore::acked`]); the logs of
    /// discussions this node is home of may restart at numbers the peer holds, so the node
    /// asks the peer where it is ([`Handle::head`]) and goes on after that.
    Restored {
        /// The link.
        link: String,
    },
    /// The peer has stored less of ours than it had acknowledged (it was restored from a
    /// backup): the items in between are gone from the outbox, and delivery waits. The node
    /// numbers what waits again to follow `received` and queues what replaces the lost items,
    /// then wakes the link.
    Behind {
        /// The link.
        link: String,
        /// The last of our items the peer holds.
        received: u64,
    },
    /// The peer refused some of our items for good.
    Rejected {
        /// The link.
        link: String,
        /// Which, and why.
        rejected: Vec<Rejected>,
    },
    /// The peer greeted us on a new connection.
    Connected {
        /// The link.
        link: String,
    },
    /// The last connection to the peer closed.
    Disconnected {
        /// The link.
        link: String,
    },
    /// The peer narrowed the link's scope; the notice is verified.
    Narrowed {
        /// The link.
        link: String,
        /// The new scope.
        scope: Scope,
        /// The signed notice, for the record.
        notice: Signed,
    },
    /// The peer greeted with the renewal this node had accepted ([`Handle::expect_renewal`]):
    /// it has confirmed it, and the renewal is in force now.
    Renewed {
        /// The link.
        link: String,
        /// The renewal's hash.
        grant: Hash,
    },
    /// The link is over: the peer revoked it (with a verified notice), refused it as ended,
    /// or it expired. The peer is no longer allowed and nothing is retried.
    Ended {
        /// The link.
        link: String,
        /// Why.
        reason: String,
        /// The peer's signed revocation, when there was one.
        notice: Option<Signed>,
    },
}

/// Answers one query from a peer.
#[derive(Debug)]
pub struct Responder(oneshot::Sender<Result<Response, String>>);

impl Responder {
    /// Sends the people found (at most [`MAX_PROFILES`] go).
    pub fn answer(self, mut profiles: Vec<Profile>) {
        profiles.truncate(MAX_PROFILES);
        let _ = self.0.send(Ok(Response::Profiles { profiles }));
    }

    /// Sends a piece of a file (refused instead if it is over [`MAX_CHUNK`]).
    pub fn chunk(self, chunk: Chunk) {
        let _ = self.0.send(if chunk.bytes.len() > MAX_CHUNK {
            Err("the node answered with too large a piece".into())
        } else {
            Ok(Response::Chunk(chunk))
        });
    }

    /// Sends an object's discussion and what the user may do there (`none` is sent as a
    /// refusal: the object is not found).
    pub fn object(self, discussion: String, access: Access) {
        let _ = self.0.send(if access == Access::None {
            Err("object not found".into())
        } else {
            Ok(Response::Object { discussion, access })
        });
    }

    /// Sends the last number of a discussion's log held here.
    pub fn head(self, seq: Option<u64>) {
        let _ = self.0.send(Ok(Response::Head { seq }));
    }

    /// Refuses the query, saying why.
    pub fn refuse(self, reason: impl Into<String>) {
        let _ = self.0.send(Err(reason.into()));
    }
}

/// Why a query to a linked node got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// No active link by that id.
    #[error("no active link by that id")]
    NoLink,
    /// The query itself is malformed.
    #[error("{0}")]
    Malformed(String),
    /// The linked node cannot be reached now.
    #[error("the linked node cannot be reached now: {0}")]
    Unreachable(String),
    /// The linked node refused.
    #[error("the linked node refused: {0}")]
    Refused(String),
    /// The transport has stopped.
    #[error("the federation transport has stopped")]
    Stopped,
}

/// What a link is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    /// The link.
    pub link: String,
    /// The peer's node name.
    pub peer: String,
    /// Whether a connection is open and the peer has answered our greeting (a connection the
    /// peer refuses, a stranger's say, does not count).
    pub connected: bool,
    /// The last of our items the peer has stored.
    pub acked: u64,
    /// Whether the link is over.
    pub ended: bool,
    /// Why delivery to the peer cannot go on, if it cannot (for an administrator).
    pub stalled: Option<String>,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The swarm could not be built.
    #[error("cannot build the libp2p transport: {0}")]
    Transport(String),
    /// A listen address was refused.
    #[error("cannot listen on {address}: {message}")]
    Listen {
        /// The address.
        address: Multiaddr,
        /// Why.
        message: String,
    },
}

/// Why a link was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// This node is not a party of the grant.
    #[error("this node is not a party of the link")]
    NotAParty,
    /// The peer's key is not a usable libp2p key.
    #[error("the peer's key is not usable")]
    BadKey,
    /// The transport has stopped.
    #[error("the federation transport has stopped")]
    Stopped,
    /// The peer has another live link.
    #[error("this node has another active link with that node")]
    PeerTaken,
    /// No live link by that id (to renew).
    #[error("no active link by that id")]
    NoLink,
    /// A renewal names another peer than the link's.
    #[error("a renewal keeps the link's peer")]
    OtherPeer,
    /// A renewal is not the next version of the link.
    #[error("a renewal is the link's next version")]
    NotNext,
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    rr: cbor::Behaviour<Request, Response>,
}

enum Command {
    AddLink(Box<(Grant, Scope)>, oneshot::Sender<Result<(), LinkError>>),
    RenewLink(Box<(Grant, Scope)>, oneshot::Sender<Result<(), LinkError>>),
    ExpectRenewal(Box<Grant>, oneshot::Sender<Result<(), LinkError>>),
    EndLink {
        link: String,
        notice: Option<SignedNotice>,
    },
    Notify {
        link: String,
        notice: SignedNotice,
    },
    Wake(String),
    Status(oneshot::Sender<Vec<LinkStatus>>),
    Query {
        link: String,
        query: Query,
        reply: oneshot::Sender<Result<Response, QueryError>>,
    },
    Presence {
        link: String,
        users: Vec<Presence>,
    },
    Stop,
}

enum Internal {
    /// Our watermark for the link is known: greet the peer.
    Greet { link: String, received: u64 },
    /// A batch to push (empty: the outbox is drained).
    Batch {
        link: String,
        items: Vec<crate::store::Outgoing>,
    },
    /// Answer an inbound request.
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
        received: Option<String>,
    },
    /// A storage call failed: try again later.
    Failed { link: String, error: String },
    /// The store numbered its waiting items again after the peer's watermark (it had been
    /// restored from a backup): send them.
    Renumbered { link: String, greeting: Option<u64> },
    /// An acknowledgement could not be recorded: greet the peer again, after a pause.
    Regreet { link: String },
    /// A greeting's acknowledgement was recorded as it was.
    Settled { link: String, greeting: u64 },
}

/// The running transport.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    addresses: watch::Receiver<Vec<Multiaddr>>,
    node_id: NodeId,
}

impl Handle {
    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The addresses the swarm listens on now.
    pub fn current_addresses(&self) -> Vec<Multiaddr> {
        self.addresses.borrow().clone()
    }

    /// The addresses the swarm listens on, once it listens on at least one.
    pub async fn listen_addresses(&self) -> Vec<Multiaddr> {
        let mut rx = self.addresses.clone();
        match rx.wait_for(|a| !a.is_empty()).await {
            Ok(a) => a.clone(),
            Err(_) => Vec::new(),
        }
    }

    /// Starts using a grant with the scope in force (the grant's, or narrower): its peer is
    /// allowed and its outbox pushed.
    pub async fn add_link(&self, grant: Grant, scope: Scope) -> Result<(), LinkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::AddLink(Box::new((grant, scope)), tx))
            .map_err(|_| LinkError::Stopped)?;
        rx.await.map_err(|_| LinkError::Stopped)?
    }

    /// Holds a renewal of a live link this node has accepted: the link goes on under its grant
    /// until the peer greets with the renewal (it has confirmed it then), which then is in
    /// force ([`Notification::Renewed`]).
    pub async fn expect_renewal(&self, grant: Grant) -> Result<(), LinkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::ExpectRenewal(Box::new(grant), tx))
            .map_err(|_| LinkError::Stopped)?;
        rx.await.map_err(|_| LinkError::Stopped)?
    }

    /// Puts in force a renewal of a live link this node offered and the peer accepted (a
    /// later version both signed: a wider scope, a later expiry, new addresses), keeping its
    /// outbox and what was received. The connection is closed, so that both nodes greet
    /// again; the peer's greetings and notices under the previous grant are still taken.
    pub async fn renew_link(&self, grant: Grant, scope: Scope) -> Result<(), LinkError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::RenewLink(Box::new((grant, scope)), tx))
            .map_err(|_| LinkError::Stopped)?;
        rx.await.map_err(|_| LinkError::Stopped)?
    }

    /// Ends a link: tells the peer with `notice` (best effort), then disallows it.
    pub fn end_link(&self, link: &str, notice: Option<SignedNotice>) {
        let _ = self.commands.send(Command::EndLink {
            link: link.to_owned(),
            notice,
        });
    }

    /// Tells the peer of a one-sided change that does not end the link (a narrowing), as soon
    /// as it is connected. The node enforces the change itself at once.
    pub fn notify(&self, link: &str, notice: SignedNotice) {
        let _ = self.commands.send(Command::Notify {
            link: link.to_owned(),
            notice,
        });
    }

    /// The link's outbox has new items.
    pub fn wake(&self, link: &str) {
        let _ = self.commands.send(Command::Wake(link.to_owned()));
    }

    /// Every link's state.
    pub async fn status(&self) -> Vec<LinkStatus> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Status(tx)).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Asks the peer of `link` a question, if it is connected now (a query never waits for a
    /// link to come back).
    pub async fn query(&self, link: &str, query: Query) -> Result<Vec<Profile>, QueryError> {
        let Query::Directory { limit, .. } = &query else {
            return Err(QueryError::Malformed("files are asked with `fetch`".into()));
        };
        let limit = *limit as usize;
        match self.ask(link, query).await? {
            Response::Profiles { mut profiles } => {
                profiles.truncate(limit);
                Ok(profiles)
            }
            _ => Err(QueryError::Refused("an answer of the wrong kind".into())),
        }
    }

    /// Asks the peer of `link` for a piece of a file from `offset`, if it is connected now.
    /// The piece is checked to fit the file's size as the peer gives it.
    pub async fn fetch(
        &self,
        link: &str,
        discussion: &str,
        sha256: &str,
        offset: u64,
    ) -> Result<Chunk, QueryError> {
        let query = Query::File {
            discussion: discussion.to_owned(),
            sha256: sha256.to_owned(),
            offset,
        };
        match self.ask(link, query).await? {
            Response::Chunk(chunk) => {
                let end = offset.checked_add(chunk.bytes.len() as u64);
                if chunk.bytes.len() > MAX_CHUNK || end.is_none_or(|end| end > chunk.total) {
                    return Err(QueryError::Refused(
                        "the piece does not fit the file's size".into(),
                    ));
                }
                Ok(chunk)
            }
            _ => Err(QueryError::Refused("an answer of the wrong kind".into())),
        }
    }

    /// Asks the peer of `link` for the discussion of one of its business objects, for
    /// `user` (a user of this node), if it is connected now: the discussion's id and what the
    /// user may do there. The discussion itself follows over the link.
    pub async fn open_object(
        &self,
        link: &str,
        user: &str,
        (application, object_type, object_id): (&str, &str, &str),
        held: Option<Access>,
    ) -> Result<(String, Access), QueryError> {
        let query = Query::Object {
            user: user.to_owned(),
            application: application.to_owned(),
            object_type: object_type.to_owned(),
            object_id: object_id.to_owned(),
            held,
        };
        match self.ask(link, query).await? {
            Response::Object { discussion, access }
                if access != Access::None
                    && !discussion.is_empty()
                    && discussion.len() <= MAX_DISCUSSION_BYTES =>
            {
                Ok((discussion, access))
            }
            _ => Err(QueryError::Refused("an answer of the wrong kind".into())),
        }
    }

    /// Asks the peer of `link` the last number it holds of the federated log of `discussion`
    /// (one this node is home of), if it is connected now.
    pub async fn head(&self, link: &str, discussion: &str) -> Result<Option<u64>, QueryError> {
        let query = Query::Head {
            discussion: discussion.to_owned(),
        };
        match self.ask(link, query).await? {
            Response::Head { seq } => Ok(seq),
            _ => Err(QueryError::Refused("an answer of the wrong kind".into())),
        }
    }

    async fn ask(&self, link: &str, query: Query) -> Result<Response, QueryError> {
        check_query(&query).map_err(|e| QueryError::Malformed(e.to_string()))?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Query {
                link: link.to_owned(),
                query,
                reply,
            })
            .map_err(|_| QueryError::Stopped)?;
        rx.await.map_err(|_| QueryError::Stopped)?
    }

    /// Tells the peer of `link` about our users' presence, if it is connected now and the
    /// link carries presence (dropped otherwise: the next greeting sends everyone again).
    pub fn send_presence(&self, link: &str, users: Vec<Presence>) {
        let _ = self.commands.send(Command::Presence {
            link: link.to_owned(),
            users,
        });
    }

    /// Stops the transport: connections close, nothing more is sent or stored.
    pub fn stop(&self) {
        let _ = self.commands.send(Command::Stop);
    }
}

/// Whether another node can dial `address`: an IP address (names are not resolved) that is
/// not unspecified (0.0.0.0, ::), and a TCP port other than 0.
pub fn dialable(address: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    let mut iter = address.iter();
    let ip = match iter.next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified(),
        _ => false,
    };
    ip && matches!(iter.next(), Some(Protocol::Tcp(port)) if port != 0)
}

/// The addresses of `peer` this node can dial.
fn dial_addresses(peer: &Party) -> Vec<Multiaddr> {
    peer.addresses
        .iter()
        .filter_map(|a| match a.parse::<Multiaddr>() {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!(address = %a, error = %e, "unusable peer address skipped");
                None
            }
        })
        .collect()
}

/// Sends a signed notice to `peer`.
fn send_notice(
    swarm: &mut Swarm<Behaviour>,
    peer: PeerId,
    address: Address,
    notice: &SignedNotice,
) -> OutboundRequestId {
    let request = Request::Notice {
        address,
        notice: notice.signed().clone(),
    };
    swarm.behaviour_mut().rr.send_request(&peer, request)
}

/// Checks that a request on `link` from the peer `peer` is addressed to this node `me`.
fn check_query(query: &Query) -> Result<(), BadQuery> {
    match query {
        Query::Directory { text, limit } => {
            if text.trim().is_empty() || text.len() > MAX_QUERY_BYTES {
                return Err(BadQuery::DirectoryText);
            }
            if *limit == 0 || *limit as usize > MAX_PROFILES {
                return Err(BadQuery::DirectoryLimit);
            }
        }
        Query::File {
            discussion, sha256, ..
        } => {
            if discussion.is_empty() || discussion.len() > MAX_DISCUSSION_BYTES {
                return Err(BadQuery::FileDiscussion);
            }
            let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
            if sha256.len() != 64 || !sha256.chars().all(hex) {
                return Err(BadQuery::FileHash);
            }
        }
        Query::Head { discussion } => {
            if discussion.is_empty() || discussion.len() > MAX_DISCUSSION_BYTES {
                return Err(BadQuery::HeadDiscussion);
            }
        }
        Query::Object {
            user,
            application,
            object_type,
            object_id,
            ..
        } => {
            let ok = |s: &str, max: usize| {
                !s.is_empty() && s.len() <= max && !s.chars().any(char::is_control)
            };
            if !ok(user, MAX_USER_BYTES)
                || !ok(application, 64)
                || !ok(object_type, 64)
                || !ok(object_id, 256)
            {
                return Err(BadQuery::Object);
            }
        }
    }
    Ok(())
}

/// Why a pushed item was refused; the peer is told the text.
#[derive(Debug, thiserror::Error)]
enum BadItem {
    #[error(transparent)]
    Signature(#[from] crate::event::EventError),
    #[error("submitted to {0}, which is not this node")]
    NotHome(String),
    #[error("stamped by {by}, which is not the home {home}")]
    StampedElsewhere { by: String, home: String },
    #[error("{0} is no longer linked here")]
    Unlinked(String),
    #[error("the stamp names a wrong key for {0}")]
    WrongKey(String),
    #[error("{0} is not a user of this node")]
    NotOurUser(String),
    #[error("{discussion} is not the home of {peer} or of this node")]
    NeitherHome { discussion: String, peer: String },
    #[error("a refusal's reason is too long")]
    LongReason,
    #[error("this link does not share object discussions")]
    NoObjects,
    #[error("{peer} is not the home of {discussion}")]
    NotPeerHome { peer: String, discussion: String },
    #[error("too many readers at once")]
    TooManyReaders,
}

/// Why a peer's query was refused.
#[derive(Debug, thiserror::Error)]
enum BadQuery {
    #[error("a directory query is 1 to {MAX_QUERY_BYTES} bytes")]
    DirectoryText,
    #[error("a directory query asks for 1 to {MAX_PROFILES} people")]
    DirectoryLimit,
    #[error("a file query names a discussion of 1 to {MAX_DISCUSSION_BYTES} bytes")]
    FileDiscussion,
    #[error("a file query names a SHA-256 in 64 lowercase hex digits")]
    FileHash,
    #[error("a head query names a discussion of 1 to {MAX_DISCUSSION_BYTES} bytes")]
    HeadDiscussion,
    #[error(
        "an object query names a user (≤ {MAX_USER_BYTES} bytes), an application and a type \
         (≤ 64) and an id (≤ 256), none empty"
    )]
    Object,
}

/// Why a frame's address does not fit the link it came on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum Misaddressed {
    #[error("not the link {0}")]
    Link(String),
    #[error("the frame claims another sender")]
    Sender,
    #[error("the frame is addressed to another node")]
    Recipient,
}

fn check_address(
    address: &Address,
    link: &str,
    peer: &NodeId,
    me: &NodeId,
) -> Result<(), Misaddressed> {
    if address.link != link {
        return Err(Misaddressed::Link(link.to_owned()));
    }
    if address.from != *peer {
        return Err(Misaddressed::Sender);
    }
    if address.to != *me {
        return Err(Misaddressed::Recipient);
    }
    Ok(())
}

/// Whether only this machine or its own network segment can reach `address` (loopback or
/// link-local).
pub fn is_local_only(address: &Multiaddr) -> bool {
    use libp2p::multiaddr::Protocol;
    match address.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback() || ip.is_unicast_link_local(),
        _ => false,
    }
}

/// Starts the transport for the node named `name` with `key`, serving `grants` (each with the
/// scope in force). Notifications arrive on the
/// returned receiver; the task ends when [`Handle::stop`] is called or every handle is gone.
pub async fn start<S: LinkStore>(
    name: &str,
    key: &NodeKey,
    config: NetConfig,
    store: S,
    grants: Vec<(Grant, Scope)>,
) -> Result<
    (
        Handle,
        mpsc::UnboundedReceiver<Notification>,
        tokio::task::JoinHandle<()>,
    ),
    StartError,
> {
    let rr_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout)
        .with_max_concurrent_streams(16);
    let codec = cbor::codec::Codec::<Request, Response>::default()
        .set_request_size_maximum(MAX_FRAME)
        .set_response_size_maximum(MAX_FRAME);
    let idle = config.idle_timeout;
    // Assembled by hand rather than with `SwarmBuilder::with_tokio`: libp2p's `tokio` feature
    // names QUIC (a weak feature), which would put quinn in Cargo.lock for this crate.
    let keypair = key.keypair();
    let transport = libp2p_tcp::tokio::Transport::new(libp2p_tcp::Config::default().nodelay(true))
        .upgrade(libp2p::core::upgrade::Version::V1)
        .authenticate(
            libp2p::noise::Config::new(&keypair)
                .map_err(|e| StartError::Transport(e.to_string()))?,
        )
        .multiplex(libp2p::yamux::Config::default())
        .boxed();
    let behaviour = Behaviour {
        allow: allow_block_list::Behaviour::default(),
        rr: cbor::Behaviour::with_codec(
            codec,
            [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
            rr_config,
        ),
    };
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        keypair.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(idle),
    );
    for address in &config.listen {
        swarm
            .listen_on(address.clone())
            .map_err(|e| StartError::Listen {
                address: address.clone(),
                message: e.to_string(),
            })?;
    }
    let (commands, commands_rx) = mpsc::unbounded_channel();
    let (notify, notifications) = mpsc::unbounded_channel();
    let (internal, internal_rx) = mpsc::unbounded_channel();
    let (addresses_tx, addresses) = watch::channel(Vec::new());
    let me = key.public();
    let node_id = me.node_id();
    let mut driver = Driver {
        swarm,
        store,
        me,
        name: name.to_owned(),
        node_id: node_id.clone(),
        config,
        links: HashMap::new(),
        by_peer: HashMap::new(),
        queries: HashMap::new(),
        notify,
        internal,
        addresses: addresses_tx,
    };
    for (grant, scope) in grants {
        if let Err(e) = driver.add_link(grant, scope) {
            tracing::warn!(error = %e, "link not started");
        }
    }
    let task = tokio::spawn(driver.run(commands_rx, internal_rx));
    Ok((
        Handle {
            commands,
            addresses,
            node_id,
        },
        notifications,
        task,
    ))
}

/// What a link's request in flight was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Hello,
    Push,
    Notice,
    Ending,
}

struct LinkState {
    grant: Grant,
    /// A renewal the node has accepted: in force once the peer greets with it (the peer has
    /// confirmed it then).
    next: Option<Grant>,
    /// The grant before the last renewal: the peer may still greet or send notices with it
    /// until it has taken the renewal too.
    previous: Option<Grant>,
    peer: Party,
    peer_node_id: NodeId,
    peer_id: PeerId,
    addresses: Vec<Multiaddr>,
    scope: Scope,
    connected: bool,
    greeted: bool,
    acked: u64,
    in_flight: Option<(OutboundRequestId, Sent)>,
    /// The peer greeted us on the current connections: its pushes may be taken.
    heard_hello: bool,
    busy: bool,
    /// Bumped by every wake; a fetch that started before the last wake cannot say the
    /// outbox is empty.
    wakes: u64,
    fetched_at_wake: u64,
    notices: std::collections::VecDeque<SignedNotice>,
    /// The last `link_seq` of the push in flight: the peer cannot acknowledge more.
    pushed: u64,
    /// The peer's greeting is being recorded ([`LinkStore::acked`] may number the outbox
    /// again): nothing is pushed until it is.
    settling: bool,
    /// Greetings answered so far: which one a recorded greeting was.
    greetings: u64,
    /// When the node was last told that the peer lost what it had stored of ours, or that
    /// this node was restored ([`RESTORE_RETELL`]).
    behind_told: Option<Instant>,
    restored_told: Option<Instant>,
    /// Presence waiting to go (one request in flight at a time; a user's last state wins).
    presence: Vec<Presence>,
    presence_in_flight: Option<OutboundRequestId>,
    /// Why delivery cannot go on (the peer lost what this outbox no longer holds).
    stalled: Option<String>,
    /// The presence requests we may send now: as many as the peer takes, so that none is
    /// refused; what waits meanwhile merges into the next.
    presence_sending: Allowance,
    /// The peer's presence requests we may still take now.
    presence_allowance: Allowance,
    pending: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    ending: Option<SignedNotice>,
    ended: bool,
}

struct Driver<S> {
    swarm: Swarm<Behaviour>,
    store: S,
    me: PublicKey,
    name: String,
    node_id: NodeId,
    config: NetConfig,
    links: HashMap<String, LinkState>,
    by_peer: HashMap<PeerId, String>,
    /// Our queries waiting for their answers.
    queries: HashMap<OutboundRequestId, oneshot::Sender<Result<Response, QueryError>>>,
    notify: mpsc::UnboundedSender<Notification>,
    internal: mpsc::UnboundedSender<Internal>,
    addresses: watch::Sender<Vec<Multiaddr>>,
}

impl<S: LinkStore> Driver<S> {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut internal: mpsc::UnboundedReceiver<Internal>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => return,
                    Some(command) => self.on_command(command),
                },
                Some(message) = internal.recv() => self.on_internal(message),
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn renew_link(&mut self, grant: Grant, scope: Scope) -> Result<(), LinkError> {
        let peer = grant.peer_of(&self.me).ok_or(LinkError::NotAParty)?.clone();
        let link = grant.link().to_owned();
        let Some(state) = self.links.get_mut(&link).filter(|s| !s.ended) else {
            return Err(LinkError::NoLink);
        };
        if state.peer.key != peer.key {
            return Err(LinkError::OtherPeer);
        }
        state.addresses = dial_addresses(&peer);
        state.peer = peer;
        state.previous = Some(std::mem::replace(&mut state.grant, grant));
        state.next = None;
        state.scope = scope;
        state.greeted = false;
        state.heard_hello = false;
        state.pending = true;
        state.retry_at = None;
        state.backoff = self.config.retry_min;
        let peer_id = state.peer_id;
        if self.swarm.is_connected(&peer_id) {
            // Both greet again on the next connection, with the grants they hold then.
            let _ = self.swarm.disconnect_peer_id(peer_id);
        } else {
            self.drive(&link);
        }
        Ok(())
    }

    fn expect_renewal(&mut self, grant: Grant) -> Result<(), LinkError> {
        let peer = grant.peer_of(&self.me).ok_or(LinkError::NotAParty)?.clone();
        let Some(state) = self.links.get_mut(grant.link()).filter(|s| !s.ended) else {
            return Err(LinkError::NoLink);
        };
        if state.peer.key != peer.key {
            return Err(LinkError::OtherPeer);
        }
        if Some(grant.terms().version) != state.grant.terms().version.checked_add(1) {
            return Err(LinkError::NotNext);
        }
        state.next = Some(grant);
        Ok(())
    }

    fn add_link(&mut self, grant: Grant, scope: Scope) -> Result<(), LinkError> {
        if grant.party(&self.me).is_none_or(|p| p.node != self.name) {
            return Err(LinkError::NotAParty);
        }
        let peer = grant.peer_of(&self.me).ok_or(LinkError::NotAParty)?.clone();
        let peer_id = peer.key.peer_id().map_err(|_| LinkError::BadKey)?;
        let addresses = dial_addresses(&peer);
        let link = grant.link().to_owned();
        // One live link per peer; an ended one gives way.
        if let Some(old) = self.by_peer.get(&peer_id).filter(|l| **l != link).cloned() {
            if self
                .links
                .get(&old)
                .is_some_and(|s| !s.ended && s.ending.is_none())
            {
                return Err(LinkError::PeerTaken);
            }
            self.links.remove(&old);
        }
        let state = LinkState {
            peer_node_id: peer.key.node_id(),
            scope,
            grant,
            next: None,
            previous: None,
            peer,
            peer_id,
            addresses,
            connected: self.swarm.is_connected(&peer_id),
            greeted: false,
            acked: 0,
            in_flight: None,
            heard_hello: false,
            busy: false,
            wakes: 0,
            fetched_at_wake: 0,
            notices: std::collections::VecDeque::new(),
            pushed: 0,
            settling: false,
            greetings: 0,
            behind_told: None,
            restored_told: None,
            presence: Vec::new(),
            presence_in_flight: None,
            stalled: None,
            presence_sending: Allowance::full(PRESENCE_SENT),
            presence_allowance: Allowance::full(PRESENCE_TAKEN),
            pending: true,
            retry_at: None,
            backoff: self.config.retry_min,
            ending: None,
            ended: false,
        };
        self.swarm.behaviour_mut().allow.allow_peer(peer_id);
        self.by_peer.insert(peer_id, link.clone());
        self.links.insert(link.clone(), state);
        self.drive(&link);
        Ok(())
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::AddLink(link, reply) => {
                let (grant, scope) = *link;
                let _ = reply.send(self.add_link(grant, scope));
            }
            Command::RenewLink(link, reply) => {
                let (grant, scope) = *link;
                let _ = reply.send(self.renew_link(grant, scope));
            }
            Command::ExpectRenewal(grant, reply) => {
                let _ = reply.send(self.expect_renewal(*grant));
            }
            Command::EndLink { link, notice } => {
                let Some(state) = self.links.get_mut(&link) else {
                    return;
                };
                match notice {
                    Some(notice) if state.connected || !state.addresses.is_empty() => {
                        state.ending = Some(notice);
                        state.retry_at = None;
                        self.drive(&link);
                    }
                    _ => self.finish_end(&link, None),
                }
            }
            Command::Notify { link, notice } => {
                if let Some(state) = self.links.get_mut(&link) {
                    if let Change::Narrow { scope } = &notice.notice().change {
                        state.scope = state.scope.meet(scope);
                        // A renewal held here would undo it: it must be accepted again.
                        state.next = None;
                    }
                    state.notices.push_back(notice);
                    self.drive(&link);
                }
            }
            Command::Wake(link) => {
                if let Some(state) = self.links.get_mut(&link) {
                    state.pending = true;
                    state.wakes += 1;
                    self.drive(&link);
                }
            }
            Command::Status(reply) => {
                let mut all: Vec<LinkStatus> = self
                    .links
                    .iter()
                    .map(|(link, s)| LinkStatus {
                        link: link.clone(),
                        peer: s.peer.node.clone(),
                        connected: s.connected && s.greeted,
                        acked: s.acked,
                        ended: s.ended,
                        stalled: s.stalled.clone(),
                    })
                    .collect();
                all.sort_by(|a, b| a.link.cmp(&b.link));
                let _ = reply.send(all);
            }
            Command::Query { link, query, reply } => {
                let Some(state) = self.links.get(&link).filter(|s| !s.ended) else {
                    let _ = reply.send(Err(QueryError::NoLink));
                    return;
                };
                if !state.connected || !state.greeted {
                    let why = "not connected".to_owned();
                    let _ = reply.send(Err(QueryError::Unreachable(why)));
                    return;
                }
                let request = Request::Query {
                    address: Address {
                        link: link.clone(),
                        from: self.node_id.clone(),
                        to: state.peer_node_id.clone(),
                    },
                    query,
                };
                let peer = state.peer_id;
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, request);
                self.queries.insert(id, reply);
            }
            Command::Presence { link, users } => {
                let Some(state) = self.links.get_mut(&link) else {
                    return;
                };
                if state.ended || !state.greeted || !state.scope.presence {
                    return;
                }
                if state.presence.is_empty() {
                    state.presence = users;
                } else {
                    for p in users {
                        match state.presence.iter_mut().find(|q| q.user == p.user) {
                            Some(q) => *q = p,
                            None => state.presence.push(p),
                        }
                    }
                }
                self.send_presence(&link);
            }
            Command::Stop => {}
        }
    }

    fn on_tick(&mut self) {
        let now = self.config.clock.now_ms();
        let expired: Vec<String> = self
            .links
            .iter()
            .filter(|(_, s)| {
                // A renewal accepted here keeps the link until it expires too.
                let until = |g: &Grant| g.terms().not_after;
                !s.ended
                    && now >= until(&s.grant)
                    && s.next.as_ref().is_none_or(|n| now >= until(n))
            })
            .map(|(l, _)| l.clone())
            .collect();
        for link in expired {
            self.finish_end(&link, Some(("the link expired".into(), None)));
        }
        let links: Vec<String> = self.links.keys().cloned().collect();
        for link in links {
            self.drive(&link);
            // Presence held back by the sending allowance.
            self.send_presence(&link);
        }
    }

    /// Moves a link's state machine one step if it can.
    fn drive(&mut self, link: &str) {
        let now = Instant::now();
        let Some(state) = self.links.get_mut(link) else {
            return;
        };
        if state.ended || state.in_flight.is_some() || state.busy {
            return;
        }
        if state.ending.is_none() && self.config.clock.now_ms() < state.grant.terms().not_before {
            // Not valid yet (or this clock is behind): wait, the tick looks again.
            return;
        }
        if state.retry_at.is_some_and(|at| now < at) {
            return;
        }
        let wants = state.pending || state.ending.is_some() || !state.notices.is_empty();
        if !state.connected {
            if wants {
                let opts = DialOpts::peer_id(state.peer_id)
                    .addresses(state.addresses.clone())
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(link, error = %e, "dial not started");
                }
                // The connection or its failure is reported by the swarm; look again later.
                state.retry_at = now.checked_add(state.backoff);
            }
            return;
        }
        let address = Address {
            link: link.to_owned(),
            from: self.node_id.clone(),
            to: state.peer_node_id.clone(),
        };
        // A revocation needs no greeting: it is signed, and the link ends either way.
        if let Some(notice) = &state.ending {
            let id = send_notice(&mut self.swarm, state.peer_id, address, notice);
            state.in_flight = Some((id, Sent::Ending));
            return;
        }
        if !state.greeted {
            state.busy = true;
            let (store, internal, link) =
                (self.store.clone(), self.internal.clone(), link.to_owned());
            tokio::spawn(async move {
                let message = match store.watermark(&link).await {
                    Ok((received, _)) => Internal::Greet { link, received },
                    Err(e) => Internal::Failed {
                        link,
                        error: e.to_string(),
                    },
                };
                let _ = internal.send(message);
            });
            return;
        }
        if let Some(notice) = state.notices.front() {
            let id = send_notice(&mut self.swarm, state.peer_id, address, notice);
            state.in_flight = Some((id, Sent::Notice));
            return;
        }
        if state.pending && !state.settling {
            state.busy = true;
            state.fetched_at_wake = state.wakes;
            let (store, internal, link, after) = (
                self.store.clone(),
                self.internal.clone(),
                link.to_owned(),
                state.acked,
            );
            tokio::spawn(async move {
                let message = match store.outbox(&link, after, MAX_BATCH_ITEMS).await {
                    Ok(items) => Internal::Batch { link, items },
                    Err(e) => Internal::Failed {
                        link,
                        error: e.to_string(),
                    },
                };
                let _ = internal.send(message);
            });
        }
    }

    /// Something failed: wait before the next attempt, a little longer each time.
    fn failed(&mut self, link: &str) {
        if let Some(state) = self.links.get_mut(link) {
            state.in_flight = None;
            state.retry_at = Instant::now().checked_add(state.backoff);
            state.backoff = state.backoff.saturating_mul(2).min(self.config.retry_max);
        }
    }

    fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Greet { link, received } => {
                let Some(state) = self.links.get_mut(&link) else {
                    return;
                };
                state.busy = false;
                if !state.connected || state.ended {
                    return;
                }
                let request = Request::Hello {
                    address: Address {
                        link: link.clone(),
                        from: self.node_id.clone(),
                        to: state.peer_node_id.clone(),
                    },
                    grant: state.grant.hash(),
                    received,
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&state.peer_id, request);
                state.in_flight = Some((id, Sent::Hello));
            }
            Internal::Batch { link, mut items } => {
                let Some(state) = self.links.get_mut(&link) else {
                    return;
                };
                state.busy = false;
                if !state.connected || state.ended || !state.greeted {
                    self.drive(&link);
                    return;
                }
                // Only the run that follows the acknowledged point, cut to the byte budget.
                let mut bytes = 0;
                let mut keep = 0;
                items.retain(|i| i.link_seq > state.acked);
                for (expected, item) in (state.acked.saturating_add(1)..).zip(&items) {
                    if item.link_seq != expected || (keep > 0 && bytes >= MAX_BATCH_BYTES) {
                        break;
                    }
                    bytes += item.item.weight();
                    keep += 1;
                }
                if keep == 0 && !items.is_empty() {
                    // The peer lost items it had acknowledged (restored from a backup): they
                    // are gone here, so the outbox cannot fill the hole. The node is told once.
                    tracing::error!(
                        link,
                        acked = state.acked,
                        next = items[0].link_seq,
                        "the peer's watermark is behind this outbox; delivery on this link waits"
                    );
                    if retell_due(&mut state.behind_told) {
                        let _ = self.notify.send(Notification::Behind {
                            link: link.clone(),
                            received: state.acked,
                        });
                    }
                    state.stalled = Some(format!(
                        "{} has stored items up to {} of this node's, which next holds {}: it lost \
                         items it had acknowledged (restored from a backup?); delivery waits until \
                         this node has queued its discussions' state again",
                        state.peer.node, state.acked, items[0].link_seq
                    ));
                } else {
                    state.stalled = None;
                }
                items.truncate(keep);
                if items.is_empty() {
                    // Drained, unless something was queued after this fetch began.
                    if state.fetched_at_wake == state.wakes {
                        state.pending = false;
                    } else {
                        self.drive(&link);
                    }
                    return;
                }
                state.pushed = items.last().map_or(state.acked, |i| i.link_seq);
                let request = Request::Push {
                    address: Address {
                        link: link.clone(),
                        from: self.node_id.clone(),
                        to: state.peer_node_id.clone(),
                    },
                    first: items[0].link_seq,
                    items: items.into_iter().map(|o| o.item).collect(),
                };
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&state.peer_id, request);
                state.in_flight = Some((id, Sent::Push));
            }
            Internal::Respond {
                channel,
                response,
                received,
            } => {
                if self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!("the peer left before our answer");
                }
                if let Some(link) = received {
                    let _ = self.notify.send(Notification::Received { link });
                }
            }
            Internal::Failed { link, error } => {
                tracing::warn!(link, error, "federation storage failed; retrying");
                if let Some(state) = self.links.get_mut(&link) {
                    state.busy = false;
                }
                self.failed(&link);
            }
            Internal::Regreet { link } => {
                if let Some(state) = self.links.get_mut(&link) {
                    state.greeted = false;
                    state.settling = false;
                }
                self.failed(&link);
            }
            Internal::Settled { link, greeting } => {
                if let Some(state) = self.links.get_mut(&link)
                    && state.settling
                    && state.greetings == greeting
                {
                    state.settling = false;
                    self.drive(&link);
                }
            }
            Internal::Renumbered { link, greeting } => {
                let Some(state) = self.links.get_mut(&link) else {
                    return;
                };
                state.pending = true;
                if greeting == Some(state.greetings) {
                    state.settling = false;
                }
                state.wakes += 1;
                let tell = retell_due(&mut state.restored_told);
                self.drive(&link);
                if tell {
                    let _ = self.notify.send(Notification::Restored { link });
                }
            }
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                self.addresses.send_modify(|a| a.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.addresses.send_modify(|a| a.retain(|x| *x != address));
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if let Some(link) = self.by_peer.get(&peer_id).cloned()
                    && let Some(state) = self.links.get_mut(&link)
                {
                    if !state.connected {
                        state.connected = true;
                        state.greeted = false;
                        state.retry_at = None;
                    }
                    self.drive(&link);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0
                    && let Some(link) = self.by_peer.get(&peer_id).cloned()
                    && let Some(state) = self.links.get_mut(&link)
                {
                    // What the node learnt on this connection (our greeting answered, or the
                    // peer's heard) is stale now.
                    let was = state.greeted || state.heard_hello;
                    state.connected = false;
                    state.greeted = false;
                    // Its failure may be reported after this, or not at all: settle it here.
                    let ending = state.ending.is_some();
                    state.in_flight = None;
                    state.heard_hello = false;
                    state.presence.clear();
                    state.presence_in_flight = None;
                    if ending {
                        // The peer got our revocation and hung up.
                        self.finish_end(&link, None);
                    } else if was {
                        let _ = self.notify.send(Notification::Disconnected { link });
                    } else {
                        // Closed before a greeting: the peer does not (yet) allow us, or the
                        // network failed. Do not redial at once.
                        self.failed(&link);
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer_id),
                error,
                ..
            } => {
                if let Some(link) = self.by_peer.get(&peer_id).cloned()
                    && !self.swarm.is_connected(&peer_id)
                {
                    tracing::debug!(link, error = %error, "dial failed");
                    let ending = self.links.get(&link).is_some_and(|s| s.ending.is_some());
                    if ending {
                        // The revocation could not be delivered; the link ends anyway.
                        self.finish_end(&link, None);
                    } else {
                        self.failed(&link);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rr(event)) => self.on_rr(event),
            _ => {}
        }
    }

    fn on_rr(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_request(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.on_response(peer, request_id, response),
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.queries.remove(&request_id) {
                    let _ = reply.send(Err(QueryError::Unreachable(error.to_string())));
                    return;
                }
                if self.presence_done(peer, request_id) {
                    return;
                }
                let Some(link) = self.by_peer.get(&peer).cloned() else {
                    return;
                };
                let Some(state) = self.links.get_mut(&link) else {
                    return;
                };
                let Some((id, sent)) = state.in_flight else {
                    return;
                };
                if id != request_id {
                    return;
                }
                tracing::debug!(link, error = %error, "request failed; the same range goes again");
                if sent == Sent::Ending {
                    self.finish_end(&link, None);
                } else {
                    self.failed(&link);
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn refuse(&mut self, channel: ResponseChannel<Response>, reason: String, link_ended: bool) {
        let response = Response::Refused { reason, link_ended };
        let _ = self
            .swarm
            .behaviour_mut()
            .rr
            .send_response(channel, response);
    }

    fn on_request(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let Some(link) = self.by_peer.get(&peer).cloned() else {
            return self.refuse(channel, "no link with this node".into(), true);
        };
        let Some(state) = self.links.get(&link) else {
            return self.refuse(channel, "no link with this node".into(), true);
        };
        if state.ended || (state.ending.is_some() && !matches!(request, Request::Hello { .. })) {
            return self.refuse(channel, "the link has ended".into(), true);
        }
        if let Err(reason) =
            check_address(request.address(), &link, &state.peer_node_id, &self.node_id)
        {
            return self.refuse(channel, reason.to_string(), false);
        }
        match request {
            Request::Hello { grant, .. }
                if grant != state.grant.hash()
                    && state.next.as_ref().is_none_or(|g| g.hash() != grant)
                    && state.previous.as_ref().is_none_or(|g| g.hash() != grant) =>
            {
                self.refuse(
                    channel,
                    "the grants differ: confirm the same grant on both nodes".into(),
                    false,
                );
            }
            Request::Push { .. } | Request::Query { .. } | Request::Presence { .. }
                if !state.heard_hello =>
            {
                self.refuse(channel, "greet first: hello with the grant".into(), false);
            }
            Request::Hello { grant, .. } => {
                let mut renewed = false;
                if let Some(state) = self.links.get_mut(&link) {
                    state.heard_hello = true;
                    // The peer greets with the renewal it confirmed: in force here now.
                    if let Some(next) = state.next.take_if(|g| g.hash() == grant) {
                        state.scope = next.terms().scope.clone();
                        if let Some(peer) = next.peer_of(&self.me) {
                            state.addresses = dial_addresses(peer);
                            state.peer = peer.clone();
                        }
                        state.previous = Some(std::mem::replace(&mut state.grant, next));
                        state.greeted = false;
                        renewed = true;
                    }
                }
                if renewed {
                    let _ = self.notify.send(Notification::Renewed {
                        link: link.clone(),
                        grant,
                    });
                    self.drive(&link);
                }
                let (store, internal) = (self.store.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let message = match store.watermark(&link).await {
                        Ok((received, last)) => Internal::Respond {
                            channel,
                            response: Response::Hello { received, last },
                            received: None,
                        },
                        Err(e) => Internal::Respond {
                            channel,
                            response: Response::Refused {
                                reason: e.to_string(),
                                link_ended: false,
                            },
                            received: None,
                        },
                    };
                    let _ = internal.send(message);
                });
            }
            Request::Push { first, items, .. } => {
                if items.len() > MAX_BATCH_ITEMS
                    || first == 0
                    || first.checked_add(MAX_BATCH_ITEMS as u64).is_none()
                {
                    return self.refuse(channel, "a malformed push".into(), false);
                }
                let mut accepted = Vec::new();
                let mut refused = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    let link_seq = first + i as u64;
                    match self.check_item(state, &item).map_err(|e| e.to_string()) {
                        Ok(()) => accepted.push(Incoming { link_seq, item }),
                        Err(reason) => {
                            tracing::warn!(link, link_seq, reason, "federated item refused");
                            refused.push(Refused {
                                link_seq,
                                item,
                                reason,
                            });
                        }
                    }
                }
                let rejected: Vec<Rejected> = refused
                    .iter()
                    .map(|r| Rejected {
                        link_seq: r.link_seq,
                        reason: r.reason.clone(),
                    })
                    .collect();
                let (store, internal) = (self.store.clone(), self.internal.clone());
                tokio::spawn(async move {
                    let message = match store.receive(&link, accepted, refused).await {
                        Ok(upto) => Internal::Respond {
                            channel,
                            response: Response::Ack { upto, rejected },
                            received: Some(link),
                        },
                        Err(e) => Internal::Respond {
                            channel,
                            response: Response::Refused {
                                reason: e.to_string(),
                                link_ended: false,
                            },
                            received: None,
                        },
                    };
                    let _ = internal.send(message);
                });
            }
            Request::Presence { users, .. } => {
                if !state.scope.presence {
                    let reason = "this link does not carry presence".into();
                    return self.refuse(channel, reason, false);
                }
                // However fast a peer sends, the node takes a bounded stream of presence.
                let allowed = self
                    .links
                    .get_mut(&link)
                    .is_some_and(|s| s.presence_allowance.take());
                if !allowed {
                    let reason = "too many presence updates; send fewer".into();
                    return self.refuse(channel, reason, false);
                }
                let Some(state) = self.links.get(&link) else {
                    return;
                };
                if users.len() > MAX_PRESENCE {
                    return self.refuse(channel, "too many users at once".into(), false);
                }
                // A node speaks for its own users only, in a few words.
                let peer_node = state.peer.node.clone();
                let users: Vec<Presence> = users
                    .into_iter()
                    .filter(|p| {
                        crate::event::node_of(&p.user) == Some(peer_node.as_str())
                            && p.user.len() <= MAX_USER_BYTES
                            && p.state.len() <= 16
                            && p.status_text.len() <= 400
                    })
                    .collect();
                let _ = self.swarm.behaviour_mut().rr.send_response(
                    channel,
                    Response::Ack {
                        upto: 0,
                        rejected: Vec::new(),
                    },
                );
                if !users.is_empty() {
                    let _ = self.notify.send(Notification::Presence { link, users });
                }
            }
            Request::Query { query, .. } => {
                if let Err(reason) = check_query(&query) {
                    return self.refuse(channel, reason.to_string(), false);
                }
                let scope = state.scope.clone();
                let refused = match query {
                    Query::Directory { .. } if scope.directory == DirectoryScope::None => {
                        Some("this link does not share the user directory")
                    }
                    Query::File { .. } if scope.max_file_mb == 0 => {
                        Some("this link does not carry files")
                    }
                    Query::Object { .. } if !scope.object_discussions => {
                        Some("this link does not share object discussions")
                    }
                    // A node asks only where the peer is in its own discussions.
                    Query::Head { ref discussion }
                        if crate::event::node_of(discussion) != Some(state.peer.node.as_str()) =>
                    {
                        Some("a node asks only about discussions it is home of")
                    }
                    // A node asks for its own users only.
                    Query::Object { ref user, .. }
                        if crate::event::node_of(user) != Some(state.peer.node.as_str()) =>
                    {
                        Some("an object is opened for a user of the asking node only")
                    }
                    _ => None,
                };
                if let Some(reason) = refused {
                    return self.refuse(channel, reason.into(), false);
                }
                let (tx, rx) = oneshot::channel();
                let asked = Notification::Query {
                    link,
                    scope,
                    query,
                    responder: Responder(tx),
                };
                if self.notify.send(asked).is_err() {
                    return self.refuse(channel, "the node is stopping".into(), false);
                }
                let (internal, timeout) = (self.internal.clone(), self.config.request_timeout);
                tokio::spawn(async move {
                    let response = match tokio::time::timeout(timeout, rx).await {
                        Ok(Ok(Ok(answer))) => answer,
                        Ok(Ok(Err(reason))) => Response::Refused {
                            reason,
                            link_ended: false,
                        },
                        _ => Response::Refused {
                            reason: "the node did not answer in time".into(),
                            link_ended: false,
                        },
                    };
                    let respond = Internal::Respond {
                        channel,
                        response,
                        received: None,
                    };
                    let _ = internal.send(respond);
                });
            }
            Request::Notice { notice, .. } => {
                // Checked against the grant: narrowings made on both sides meanwhile add up. A
                // peer between two versions may sign with the other one.
                let granted = state.grant.terms().scope.clone();
                let mut verified =
                    SignedNotice::verify(notice.clone(), &state.grant, &state.peer.key, &granted);
                for other in [state.previous.as_ref(), state.next.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    if verified.is_err()
                        && let Ok(v) =
                            SignedNotice::verify(notice.clone(), other, &state.peer.key, &granted)
                    {
                        verified = Ok(v);
                    }
                }
                match verified {
                    Ok(notice) => {
                        let _ = self.swarm.behaviour_mut().rr.send_response(
                            channel,
                            Response::Ack {
                                upto: 0,
                                rejected: Vec::new(),
                            },
                        );
                        match notice.notice().change.clone() {
                            Change::Revoke { reason } => {
                                let signed = notice.signed().clone();
                                self.finish_end(
                                    &link,
                                    Some((format!("revoked by the peer: {reason}"), Some(signed))),
                                );
                            }
                            Change::Narrow { scope } => {
                                let scope = match self.links.get_mut(&link) {
                                    Some(state) => {
                                        state.scope = state.scope.meet(&scope);
                                        state.next = None;
                                        state.scope.clone()
                                    }
                                    None => scope,
                                };
                                let _ = self.notify.send(Notification::Narrowed {
                                    link,
                                    scope,
                                    notice: notice.signed().clone(),
                                });
                            }
                        }
                    }
                    Err(e) => self.refuse(channel, format!("notice refused: {e}"), false),
                }
            }
        }
    }

    /// Sends the next presence batch of `link`, unless one is in flight.
    fn send_presence(&mut self, link: &str) {
        let Some(state) = self.links.get_mut(link) else {
            return;
        };
        if state.presence_in_flight.is_some()
            || state.presence.is_empty()
            || !state.greeted
            || !state.connected
            || state.ended
            || state.ending.is_some()
            || !state.scope.presence
            || !state.presence_sending.take()
        {
            return;
        }
        let rest = state
            .presence
            .split_off(state.presence.len().min(MAX_PRESENCE));
        let users = std::mem::replace(&mut state.presence, rest);
        let request = Request::Presence {
            address: Address {
                link: link.to_owned(),
                from: self.node_id.clone(),
                to: state.peer_node_id.clone(),
            },
            users,
        };
        let id = self
            .swarm
            .behaviour_mut()
            .rr
            .send_request(&state.peer_id, request);
        state.presence_in_flight = Some(id);
    }

    /// A presence request was answered or failed (lost: the next greeting makes it good).
    fn presence_done(&mut self, peer: PeerId, request_id: OutboundRequestId) -> bool {
        let Some(link) = self.by_peer.get(&peer).cloned() else {
            return false;
        };
        let Some(state) = self.links.get_mut(&link) else {
            return false;
        };
        if state.presence_in_flight != Some(request_id) {
            return false;
        }
        state.presence_in_flight = None;
        self.send_presence(&link);
        true
    }

    /// Verifies one pushed item as coming from this link's peer.
    fn check_item(&self, state: &LinkState, item: &Item) -> Result<(), BadItem> {
        let me = &self.name;
        match item {
            Item::Submit { event } => {
                let event = Event::verify(event.clone(), &state.peer.node, &state.peer.key)?;
                if event.header().home != *me {
                    return Err(BadItem::NotHome(event.header().home.to_string()));
                }
                Ok(())
            }
            Item::Stamped { stamp, event } => {
                let stamp = Stamp::verify(stamp.clone(), &state.peer.key)?;
                let header = Event::peek(event)?;
                if header.home != state.peer.node {
                    return Err(BadItem::StampedElsewhere {
                        by: state.peer.node.to_string(),
                        home: header.home.to_string(),
                    });
                }
                // The origin's key as we know it, when we know it; the home's word otherwise.
                let known = if header.origin == *me {
                    Some(self.me)
                } else {
                    let mut same = self.links.values().filter(|s| s.peer.node == header.origin);
                    let live = same.clone().find(|s| !s.ended);
                    match (live, same.next()) {
                        (Some(s), _) => Some(s.peer.key),
                        (None, Some(_)) => {
                            return Err(BadItem::Unlinked(header.origin.to_string()));
                        }
                        (None, None) => None,
                    }
                };
                let key = stamp.body().origin_key;
                if known.is_some_and(|k| k != key) {
                    return Err(BadItem::WrongKey(header.origin.to_string()));
                }
                let event = Event::verify(event.clone(), &header.origin, &key)?;
                stamp.check_event(&event)?;
                Ok(())
            }
            // About an event of one of our users in a discussion homed at either end: the
            // peer, as home, refuses a submission; or cannot take a discussion we shared.
            Item::Refusal {
                discussion,
                author,
                reason,
                ..
            } => {
                if crate::event::node_of(author) != Some(me.as_str()) {
                    return Err(BadItem::NotOurUser(author.clone()));
                }
                let home = crate::event::node_of(discussion);
                if home != Some(state.peer.node.as_str()) && home != Some(me.as_str()) {
                    return Err(BadItem::NeitherHome {
                        discussion: discussion.clone(),
                        peer: state.peer.node.to_string(),
                    });
                }
                if reason.len() > MAX_REASON_BYTES {
                    return Err(BadItem::LongReason);
                }
                Ok(())
            }
            // The peer, as home of an object discussion, on what our users may do there.
            Item::Readers { discussion, users } => {
                if !state.scope.object_discussions {
                    return Err(BadItem::NoObjects);
                }
                if crate::event::node_of(discussion) != Some(state.peer.node.as_str()) {
                    return Err(BadItem::NotPeerHome {
                        peer: state.peer.node.to_string(),
                        discussion: discussion.clone(),
                    });
                }
                if users.len() > MAX_READERS {
                    return Err(BadItem::TooManyReaders);
                }
                if let Some(r) = users
                    .iter()
                    .find(|r| crate::event::node_of(&r.user) != Some(me.as_str()))
                {
                    return Err(BadItem::NotOurUser(r.user.clone()));
                }
                Ok(())
            }
        }
    }

    fn on_response(&mut self, peer: PeerId, request_id: OutboundRequestId, response: Response) {
        if let Some(reply) = self.queries.remove(&request_id) {
            let _ = reply.send(match response {
                Response::Refused { reason, .. } => Err(QueryError::Refused(reason)),
                answer => Ok(answer),
            });
            return;
        }
        if self.presence_done(peer, request_id) {
            return;
        }
        let Some(link) = self.by_peer.get(&peer).cloned() else {
            return;
        };
        let Some(state) = self.links.get_mut(&link) else {
            return;
        };
        let Some((id, sent)) = state.in_flight else {
            return;
        };
        if id != request_id {
            return;
        }
        state.in_flight = None;
        match sent {
            Sent::Ending => {
                self.finish_end(&link, None);
                return;
            }
            Sent::Notice => {
                match &response {
                    Response::Refused {
                        link_ended: true, ..
                    } => {
                        self.finish_end(&link, Some(("the peer ended the link".into(), None)));
                        return;
                    }
                    // The notice itself was refused: sending it again changes nothing.
                    Response::Refused { reason, .. } if reason.starts_with("notice refused") => {
                        tracing::warn!(link, reason, "the peer refused our notice");
                        state.notices.pop_front();
                    }
                    Response::Refused { reason, .. } => {
                        tracing::warn!(link, reason, "the peer could not take our notice now");
                        state.greeted = false;
                        self.failed(&link);
                        return;
                    }
                    _ => {
                        state.notices.pop_front();
                    }
                }
                self.drive(&link);
                return;
            }
            Sent::Hello | Sent::Push => {}
        }
        match response {
            Response::Hello { received, .. } if received > MAX_LINK_SEQ => {
                tracing::warn!(link, received, "the peer claims an impossible watermark");
                state.greeted = false;
                self.failed(&link);
                return;
            }
            // A push is acknowledged at most up to its last item. (A push from before a
            // reconnect that the peer stored meanwhile can make it say more: greeting again
            // settles it.)
            Response::Ack { upto, .. } if upto > state.pushed.max(state.acked) => {
                tracing::info!(
                    link,
                    upto,
                    pushed = state.pushed,
                    "the peer acknowledged more than this push; greeting it again"
                );
                state.greeted = false;
                self.failed(&link);
                return;
            }
            Response::Hello { received, last } => {
                if received < state.acked {
                    tracing::warn!(
                        link,
                        received,
                        acked = state.acked,
                        "the peer has less than it acknowledged (restored from a backup?)"
                    );
                }
                state.greeted = true;
                state.acked = received;
                state.pending = true;
                state.settling = true;
                state.greetings += 1;
                let greeting = Some(state.greetings);
                let _ = self
                    .notify
                    .send(Notification::Connected { link: link.clone() });
                self.forget_acked(&link, (received, last), greeting);
            }
            Response::Ack { upto, rejected } => {
                state.acked = upto;
                state.pending = true;
                state.backoff = self.config.retry_min;
                if !rejected.is_empty() {
                    let _ = self.notify.send(Notification::Rejected {
                        link: link.clone(),
                        rejected,
                    });
                }
                self.forget_acked(&link, (upto, None), None);
            }
            Response::Refused { reason, link_ended } => {
                tracing::warn!(link, reason, link_ended, "the peer refused");
                if link_ended {
                    self.finish_end(
                        &link,
                        Some((format!("the peer ended the link: {reason}"), None)),
                    );
                } else {
                    state.greeted = false;
                    self.failed(&link);
                }
                return;
            }
            Response::Profiles { .. }
            | Response::Chunk(_)
            | Response::Object { .. }
            | Response::Head { .. } => {
                tracing::warn!(link, "the peer answered a push with an answer to a query");
                state.greeted = false;
                self.failed(&link);
                return;
            }
        }
        self.drive(&link);
    }

    /// Records that the peer holds our items up to `upto` (the digest of the one there, when
    /// it says); for a `greeting` (which one), pushing resumes once it is recorded.
    fn forget_acked(&self, link: &str, (upto, last): (u64, Option<Hash>), greeting: Option<u64>) {
        let (store, link, internal) = (self.store.clone(), link.to_owned(), self.internal.clone());
        tokio::spawn(async move {
            match store.acked(&link, upto, last).await {
                Ok(false) => {
                    if let Some(greeting) = greeting {
                        let _ = internal.send(Internal::Settled { link, greeting });
                    }
                }
                Ok(true) => {
                    tracing::warn!(
                        link,
                        upto,
                        "the peer has more of ours than this node ever sent (restored from a \
                         backup?): what waits is numbered again after it"
                    );
                    let _ = internal.send(Internal::Renumbered { link, greeting });
                }
                Err(e) => {
                    tracing::warn!(link, error = %e, "acknowledged items not removed");
                    // Greet again: the acknowledgement comes back, and is taken then.
                    let _ = internal.send(Internal::Regreet { link });
                }
            }
        });
    }

    /// The link is over: the peer is disallowed and disconnected, nothing is retried.
    /// `told` is the reason to report, with the peer's notice; `None` when we ended it.
    fn finish_end(&mut self, link: &str, told: Option<(String, Option<Signed>)>) {
        let Some(state) = self.links.get_mut(link) else {
            return;
        };
        if state.ended {
            return;
        }
        state.ended = true;
        state.ending = None;
        state.in_flight = None;
        let peer = state.peer_id;
        self.swarm.behaviour_mut().allow.disallow_peer(peer);
        let _ = self.swarm.disconnect_peer_id(peer);
        if let Some((reason, notice)) = told {
            let _ = self.notify.send(Notification::Ended {
                link: link.to_owned(),
                reason,
                notice,
            });
        }
    }
}

#[cfg(test)]
mod address_tests {
    use super::*;

    #[test]
    fn frames_for_another_link_sender_or_receiver_are_refused() {
        let (me, peer, other) = (
            NodeKey::from_secret([1; 32]).public().node_id(),
            NodeKey::from_secret([2; 32]).public().node_id(),
            NodeKey::from_secret([3; 32]).public().node_id(),
        );
        let ok = Address {
            link: "l".into(),
            from: peer.clone(),
            to: me.clone(),
        };
        assert_eq!(check_address(&ok, "l", &peer, &me), Ok(()));
        let wrong_link = Address {
            link: "m".into(),
            ..ok.clone()
        };
        assert!(check_address(&wrong_link, "l", &peer, &me).is_err());
        let forged_sender = Address {
            from: other.clone(),
            ..ok.clone()
        };
        assert!(
            check_address(&forged_sender, "l", &peer, &me)
                .unwrap_err()
                .to_string()
                .contains("another sender")
        );
        let elsewhere = Address { to: other, ..ok };
        assert!(
            check_address(&elsewhere, "l", &peer, &me)
                .unwrap_err()
                .to_string()
                .contains("addressed to another node")
        );
    }
}
