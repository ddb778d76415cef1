//! The libp2p side: one swarm (TCP + Noise + Yamux), an allowlist of the peers named by active
//! grants, and one request-response protocol ([`crate::wire`]).
//!
//! One task owns the swarm and drives each link's state machine ([`crate::link::Link`]): it
//! feeds the machine what the swarm, the store and the node say, and carries out what the
//! machine asks (dial, send a request, call the store, tell the node). Storage calls run on
//! tasks of their own and report back on a channel, so the swarm never waits for the
//! database. Received batches are verified item by item here (the check needs every link's
//! keys) and handed to the [`LinkStore`] in one call; the acknowledgement goes out only after
//! the store returned.
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
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list};
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{Event, Stamp};
use crate::grant::{Grant, Party, Scope, Signed, SignedNotice};
use crate::keys::{Hash, NodeId, NodeKey, PublicKey};
use crate::link::{Backoff, Inbound, Input, Link, Now, Output, Tell, Token, check_query};
use crate::store::{Incoming, LinkStore, Refused};
pub use crate::wire::QueryError;
use crate::wire::{
    Access, Address, Chunk, Item, MAX_BATCH_ITEMS, MAX_CHUNK, MAX_DISCUSSION_BYTES, MAX_FRAME,
    MAX_PROFILES, MAX_READERS, MAX_REASON_BYTES, PROTOCOL, Presence, Profile, Query, Rejected,
    Request, Response,
};

pub use crate::link::{LinkError, LinkStatus};

use veche_base::SharedClock;

/// How often the driver gives every link's machine the time: pauses that are over, presence
/// held back, a grant's validity.
const TICK: Duration = Duration::from_millis(100);

/// How the transport behaves.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/7700`.
    pub listen: Vec<Multiaddr>,
    /// How long a request may wait for its response.
    pub request_timeout: Duration,
    /// The first pause after a failure; doubled after each further failure.
    pub retry_min: Duration,
    /// The longest pause after the peer refused (a peer that cannot be reached is probed
    /// again after [`crate::link::PROBE_MAX`] at most).
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
    /// The peer of a link this node accepted has shown that it confirmed it
    /// ([`Handle::expect_confirmation`]): the link is no longer pending.
    Confirmed {
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
pub struct Responder(oneshot::Sender<Response>);

impl Responder {
    /// Sends the people found (at most [`MAX_PROFILES`] go).
    pub fn answer(self, mut profiles: Vec<Profile>) {
        profiles.truncate(MAX_PROFILES);
        let _ = self.0.send(Response::Profiles { profiles });
    }

    /// Sends a piece of a file (refused instead if it is over [`MAX_CHUNK`]).
    pub fn chunk(self, chunk: Chunk) {
        let _ = self.0.send(if chunk.bytes.len() > MAX_CHUNK {
            refused("the node answered with too large a piece")
        } else {
            Response::Chunk(chunk)
        });
    }

    /// Sends an object's discussion and what the user may do there (`none` is sent as a
    /// refusal: the object is not found).
    pub fn object(self, discussion: String, access: Access) {
        let _ = self.0.send(if access == Access::None {
            refused("object not found")
        } else {
            Response::Object { discussion, access }
        });
    }

    /// Sends the last number of a discussion's log held here.
    pub fn head(self, seq: Option<u64>) {
        let _ = self.0.send(Response::Head { seq });
    }

    /// Refuses the query, saying why.
    pub fn refuse(self, reason: impl Into<String>) {
        let _ = self.0.send(refused(reason));
    }
}

/// A refusal that leaves the link as it is.
fn refused(reason: impl Into<String>) -> Response {
    Response::Refused {
        reason: reason.into(),
        link_ended: false,
    }
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
    ExpectConfirmation {
        link: String,
        by: i64,
    },
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
    /// A storage call of a link's machine returned.
    Store { link: String, input: Input },
    /// Answer an inbound request.
    Respond {
        channel: ResponseChannel<Response>,
        response: Response,
        received: Option<String>,
    },
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

    /// `link` was accepted here: unless its peer shows that it confirmed it (by greeting, or
    /// answering a greeting) before `by` (wall clock, ms), it ends with
    /// [`crate::link::UNCONFIRMED`] ([`Notification::Ended`]); once it does,
    /// [`Notification::Confirmed`].
    pub fn expect_confirmation(&self, link: &str, by: i64) {
        let _ = self.commands.send(Command::ExpectConfirmation {
            link: link.to_owned(),
            by,
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
        // A dial into a partition would otherwise wait for the system's TCP timeout (minutes),
        // holding back every probe meanwhile.
        .timeout(config.request_timeout)
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
        config,
        links: HashMap::new(),
        by_peer: HashMap::new(),
        requests: HashMap::new(),
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

/// A link's machine and the libp2p id of its peer.
struct Entry {
    machine: Link,
    peer_id: PeerId,
}

struct Driver<S> {
    swarm: Swarm<Behaviour>,
    store: S,
    me: PublicKey,
    name: String,
    config: NetConfig,
    links: HashMap<String, Entry>,
    by_peer: HashMap<PeerId, String>,
    /// The links' requests in flight, by libp2p's id.
    requests: HashMap<OutboundRequestId, (String, Token)>,
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
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                command = commands.recv() => match command {
                    None | Some(Command::Stop) => return,
                    Some(command) => self.on_command(command),
                },
                Some(message) = internal.recv() => self.on_internal(message),
                _ = tick.tick() => {
                    let links: Vec<String> = self.links.keys().cloned().collect();
                    for link in links {
                        self.feed(&link, Input::Tick);
                    }
                }
            }
        }
    }

    fn now(&self) -> Now {
        Now {
            instant: Instant::now(),
            wall_ms: self.config.clock.now_ms(),
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            retry_min: self.config.retry_min,
            retry_max: self.config.retry_max,
        }
    }

    /// Gives `link`'s machine an input and carries out what it says.
    fn feed(&mut self, link: &str, input: Input) {
        let now = self.now();
        if let Some(entry) = self.links.get_mut(link) {
            entry.machine.handle(input, now);
        }
        self.flush(link);
    }

    /// Carries out what `link`'s machine says, until it says nothing more.
    fn flush(&mut self, link: &str) {
        loop {
            let Some(entry) = self.links.get_mut(link) else {
                return;
            };
            let Some(output) = entry.machine.poll_output() else {
                return;
            };
            let peer_id = entry.peer_id;
            self.execute(link, peer_id, output);
        }
    }

    fn execute(&mut self, link: &str, peer_id: PeerId, output: Output) {
        match output {
            Output::Dial => {
                let Some(entry) = self.links.get(link) else {
                    return;
                };
                let opts = DialOpts::peer_id(peer_id)
                    .addresses(dial_addresses(entry.machine.peer()))
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build();
                match self.swarm.dial(opts) {
                    Ok(()) => {}
                    // A dial is out or a connection open already: its outcome is reported.
                    Err(DialError::DialPeerConditionFalse(_)) => {}
                    Err(e) => {
                        tracing::debug!(link, error = %e, "dial not started");
                        self.feed(link, Input::DialFailed);
                    }
                }
            }
            Output::Send { token, request } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rr
                    .send_request(&peer_id, request);
                self.requests.insert(id, (link.to_owned(), token));
            }
            Output::Watermark => {
                let (store, internal, link) =
                    (self.store.clone(), self.internal.clone(), link.to_owned());
                tokio::spawn(async move {
                    let result = store.watermark(&link).await.map(|(received, _)| received);
                    let input = Input::Watermark(result);
                    let _ = internal.send(Internal::Store { link, input });
                });
            }
            Output::Outbox { after } => {
                let (store, internal, link) =
                    (self.store.clone(), self.internal.clone(), link.to_owned());
                tokio::spawn(async move {
                    let input = Input::Batch(store.outbox(&link, after, MAX_BATCH_ITEMS).await);
                    let _ = internal.send(Internal::Store { link, input });
                });
            }
            Output::Acked {
                upto,
                last,
                greeting,
            } => {
                let (store, internal, link) =
                    (self.store.clone(), self.internal.clone(), link.to_owned());
                tokio::spawn(async move {
                    let result = store.acked(&link, upto, last).await;
                    if let Ok(true) = result {
                        tracing::warn!(
                            link,
                            upto,
                            "the peer has more of ours than this node ever sent (restored from \
                             a backup?): what waits is numbered again after it"
                        );
                    }
                    let input = Input::AckRecorded { greeting, result };
                    let _ = internal.send(Internal::Store { link, input });
                });
            }
            Output::Disconnect => {
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            Output::Disallow => {
                self.swarm.behaviour_mut().allow.disallow_peer(peer_id);
                let _ = self.swarm.disconnect_peer_id(peer_id);
            }
            Output::Tell(tell) => {
                let link = link.to_owned();
                let notification = match tell {
                    Tell::Connected => Notification::Connected { link },
                    Tell::Confirmed => Notification::Confirmed { link },
                    Tell::Disconnected => Notification::Disconnected { link },
                    Tell::Restored => Notification::Restored { link },
                    Tell::Behind { received } => Notification::Behind { link, received },
                    Tell::Rejected(rejected) => Notification::Rejected { link, rejected },
                    Tell::Narrowed { scope, notice } => Notification::Narrowed {
                        link,
                        scope,
                        notice,
                    },
                    Tell::Renewed { grant } => Notification::Renewed { link, grant },
                    Tell::Ended { reason, notice } => Notification::Ended {
                        link,
                        reason,
                        notice,
                    },
                };
                let _ = self.notify.send(notification);
            }
        }
    }

    fn add_link(&mut self, grant: Grant, scope: Scope) -> Result<(), LinkError> {
        if grant.party(&self.me).is_none_or(|p| p.node != self.name) {
            return Err(LinkError::NotAParty);
        }
        let peer = grant.peer_of(&self.me).ok_or(LinkError::NotAParty)?;
        let peer_id = peer.key.peer_id().map_err(|_| LinkError::BadKey)?;
        let link = grant.link().to_owned();
        // One live link per peer; an ended one gives way.
        if let Some(old) = self.by_peer.get(&peer_id).filter(|l| **l != link).cloned() {
            if self
                .links
                .get(&old)
                .is_some_and(|e| !e.machine.is_ended() && !e.machine.is_ending())
            {
                return Err(LinkError::PeerTaken);
            }
            self.links.remove(&old);
        }
        let connected = self.swarm.is_connected(&peer_id);
        let machine = Link::new(self.me, grant, scope, self.backoff(), connected, self.now())?;
        self.swarm.behaviour_mut().allow.allow_peer(peer_id);
        self.by_peer.insert(peer_id, link.clone());
        self.links.insert(link.clone(), Entry { machine, peer_id });
        self.feed(&link, Input::Tick);
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
                let id = grant.link().to_owned();
                let now = self.now();
                let result = match self.links.get_mut(&id) {
                    Some(entry) => entry.machine.renew(grant, scope, now),
                    None => Err(LinkError::NoLink),
                };
                self.flush(&id);
                let _ = reply.send(result);
            }
            Command::ExpectRenewal(grant, reply) => {
                let result = match self.links.get_mut(grant.link()) {
                    Some(entry) => entry.machine.expect_renewal(*grant),
                    None => Err(LinkError::NoLink),
                };
                let _ = reply.send(result);
            }
            Command::EndLink { link, notice } => self.feed(&link, Input::End(notice)),
            Command::Notify { link, notice } => self.feed(&link, Input::Notify(notice)),
            Command::Wake(link) => self.feed(&link, Input::Wake),
            Command::ExpectConfirmation { link, by } => {
                if let Some(entry) = self.links.get_mut(&link) {
                    entry.machine.expect_confirmation(by);
                }
                self.feed(&link, Input::Tick);
            }
            Command::Status(reply) => {
                let mut all: Vec<LinkStatus> =
                    self.links.values().map(|e| e.machine.status()).collect();
                all.sort_by(|a, b| a.link.cmp(&b.link));
                let _ = reply.send(all);
            }
            Command::Query { link, query, reply } => {
                let Some(entry) = self.links.get(&link).filter(|e| !e.machine.is_ended()) else {
                    let _ = reply.send(Err(QueryError::NoLink));
                    return;
                };
                if !entry.machine.is_greeted() {
                    let why = "not connected".to_owned();
                    let _ = reply.send(Err(QueryError::Unreachable(why)));
                    return;
                }
                let request = Request::Query {
                    address: Address {
                        link: link.clone(),
                        from: self.me.node_id(),
                        to: entry.machine.peer().key.node_id(),
                    },
                    query,
                };
                let peer = entry.peer_id;
                let id = self.swarm.behaviour_mut().rr.send_request(&peer, request);
                self.queries.insert(id, reply);
            }
            Command::Presence { link, users } => self.feed(&link, Input::Presence(users)),
            Command::Stop => {}
        }
    }

    fn on_internal(&mut self, message: Internal) {
        match message {
            Internal::Store { link, input } => self.feed(&link, input),
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
            // Whoever dialled: a connection from the peer ends any pause, and the greeting
            // goes out on it at once.
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                if let Some(link) = self.by_peer.get(&peer_id).cloned() {
                    self.feed(&link, Input::Connected);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0
                    && let Some(link) = self.by_peer.get(&peer_id).cloned()
                {
                    self.feed(&link, Input::Disconnected);
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
                    self.feed(&link, Input::DialFailed);
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
                } => {
                    if let Some(reply) = self.queries.remove(&request_id) {
                        let _ = reply.send(match response {
                            Response::Refused { reason, .. } => Err(QueryError::Refused(reason)),
                            answer => Ok(answer),
                        });
                    } else if let Some((link, token)) = self.requests.remove(&request_id) {
                        self.feed(&link, Input::Answered { token, response });
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id, error, ..
            } => {
                if let Some(reply) = self.queries.remove(&request_id) {
                    let _ = reply.send(Err(QueryError::Unreachable(error.to_string())));
                } else if let Some((link, token)) = self.requests.remove(&request_id) {
                    tracing::debug!(link, error = %error, "request failed");
                    self.feed(&link, Input::RequestFailed { token });
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

    fn acknowledge(&mut self, channel: ResponseChannel<Response>) {
        let _ = self.swarm.behaviour_mut().rr.send_response(
            channel,
            Response::Ack {
                upto: 0,
                rejected: Vec::new(),
            },
        );
    }

    fn on_request(&mut self, peer: PeerId, request: Request, channel: ResponseChannel<Response>) {
        let Some(link) = self.by_peer.get(&peer).cloned() else {
            return self.refuse(channel, "no link with this node".into(), true);
        };
        let now = self.now();
        let Some(entry) = self.links.get_mut(&link) else {
            return self.refuse(channel, "no link with this node".into(), true);
        };
        let verdict = entry.machine.inbound(request, now);
        // The answer goes before what the machine says next (a revocation taken disconnects).
        match verdict {
            Inbound::Refuse { reason, link_ended } => self.refuse(channel, reason, link_ended),
            Inbound::Greet => {
                let (store, internal, link) =
                    (self.store.clone(), self.internal.clone(), link.clone());
                tokio::spawn(async move {
                    let response = match store.watermark(&link).await {
                        Ok((received, last)) => Response::Hello { received, last },
                        Err(e) => Response::Refused {
                            reason: e.to_string(),
                            link_ended: false,
                        },
                    };
                    let _ = internal.send(Internal::Respond {
                        channel,
                        response,
                        received: None,
                    });
                });
            }
            Inbound::Push { first, items } => self.take_push(&link, channel, first, items),
            Inbound::Presence(users) => {
                self.acknowledge(channel);
                if !users.is_empty() {
                    let link = link.clone();
                    let _ = self.notify.send(Notification::Presence { link, users });
                }
            }
            Inbound::Query { scope, query } => {
                let (tx, rx) = oneshot::channel();
                let asked = Notification::Query {
                    link: link.clone(),
                    scope,
                    query,
                    responder: Responder(tx),
                };
                if self.notify.send(asked).is_err() {
                    self.refuse(channel, "the node is stopping".into(), false);
                } else {
                    let (internal, timeout) = (self.internal.clone(), self.config.request_timeout);
                    tokio::spawn(async move {
                        let response = match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(answer)) => answer,
                            _ => refused("the node did not answer in time"),
                        };
                        let respond = Internal::Respond {
                            channel,
                            response,
                            received: None,
                        };
                        let _ = internal.send(respond);
                    });
                }
            }
            Inbound::Noted => self.acknowledge(channel),
        }
        self.flush(&link);
    }

    /// Verifies a push item by item, stores the batch, then acknowledges it.
    fn take_push(
        &mut self,
        link: &str,
        channel: ResponseChannel<Response>,
        first: u64,
        items: Vec<Item>,
    ) {
        let Some(entry) = self.links.get(link) else {
            return;
        };
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let link_seq = first + i as u64;
            match self
                .check_item(&entry.machine, &item)
                .map_err(|e| e.to_string())
            {
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
        let (store, internal, link) = (self.store.clone(), self.internal.clone(), link.to_owned());
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

    /// Verifies one pushed item as coming from the peer of `link`.
    fn check_item(&self, link: &Link, item: &Item) -> Result<(), BadItem> {
        let me = &self.name;
        let peer = link.peer();
        match item {
            Item::Submit { event } => {
                let event = Event::verify(event.clone(), &peer.node, &peer.key)?;
                if event.header().home != *me {
                    return Err(BadItem::NotHome(event.header().home.to_string()));
                }
                Ok(())
            }
            Item::Stamped { stamp, event } => {
                let stamp = Stamp::verify(stamp.clone(), &peer.key)?;
                let header = Event::peek(event)?;
                if header.home != peer.node {
                    return Err(BadItem::StampedElsewhere {
                        by: peer.node.to_string(),
                        home: header.home.to_string(),
                    });
                }
                // The origin's key as we know it, when we know it; the home's word otherwise.
                let known = if header.origin == *me {
                    Some(self.me)
                } else {
                    let mut same = self
                        .links
                        .values()
                        .map(|e| &e.machine)
                        .filter(|l| l.peer().node == header.origin);
                    let live = same.clone().find(|l| !l.is_ended());
                    match (live, same.next()) {
                        (Some(l), _) => Some(l.peer().key),
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
                if home != Some(peer.node.as_str()) && home != Some(me.as_str()) {
                    return Err(BadItem::NeitherHome {
                        discussion: discussion.clone(),
                        peer: peer.node.to_string(),
                    });
                }
                if reason.len() > MAX_REASON_BYTES {
                    return Err(BadItem::LongReason);
                }
                Ok(())
            }
            // The peer, as home of an object discussion, on what our users may do there.
            Item::Readers { discussion, users } => {
                if !link.scope().object_discussions {
                    return Err(BadItem::NoObjects);
                }
                if crate::event::node_of(discussion) != Some(peer.node.as_str()) {
                    return Err(BadItem::NotPeerHome {
                        peer: peer.node.to_string(),
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
}
