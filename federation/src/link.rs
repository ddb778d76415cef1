//! One link as a pure state machine: what the transport does for one peer, with no IO.
//!
//! The driver ([`crate::net`]) owns the libp2p swarm and the store; for each link it feeds a
//! [`Link`] what happened ([`Input`]: a connection opened or closed, a dial failed, an answer
//! came, a storage call returned, the timer fired, the node asked for something) together with
//! the time ([`Now`]), asks it about each request the peer sends ([`Link::inbound`]), and
//! carries out what it says ([`Link::poll_output`]: dial, send a request, call the store, close
//! the connection, tell the node). The machine never reads a clock, never touches a socket and
//! never waits, so its tests drive it step by step with a made-up clock.
//!
//! The life of a link is its [`Phase`]: `Disconnected` → `Dialing` → `Greeting` (our `hello`,
//! saying what we stored from the peer) → `Settling` (the peer's answer is being recorded:
//! the store may number what waits again) → `Active` (notices first, then the outbox, one
//! push at a time), back to `Disconnected` when the last connection closes; `Ending` while a
//! revocation is delivered; `Ended` for good. A failure pauses the next attempt
//! (`retry_at`), by one of two backoffs:
//!
//! - the peer cannot be reached (a dial failed, a request timed out or its connection broke):
//!   probed again soon, from `retry_min` doubling to at most [`PROBE_MAX`], so that a healed
//!   partition carries traffic again within a few seconds;
//! - the peer (or this node's store) answered and said no: from `retry_min` doubling to
//!   `retry_max`, so that a peer that does not let us in is not pressed.
//!
//! A connection from the peer ends any pause at once: the greeting goes out on it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::grant::{Change, DirectoryScope, Grant, Party, Scope, Signed, SignedNotice};
use crate::keys::{Hash, NodeId, PublicKey};
use crate::store::{Outgoing, StoreError};
use crate::wire::{
    Address, Item, MAX_BATCH_BYTES, MAX_BATCH_ITEMS, MAX_DISCUSSION_BYTES, MAX_PRESENCE,
    MAX_PROFILES, MAX_QUERY_BYTES, MAX_USER_BYTES, Presence, Query, Rejected, Request, Response,
};

#[cfg(test)]
mod tests;

/// The longest pause between two attempts to reach a peer that could not be reached (a dial
/// failed, a request timed out, the connection broke). Reaching out costs one TCP handshake,
/// so it is tried often: after a partition heals, the link carries traffic again within this
/// long. (A configured `retry_max` below it caps it too.) A peer that answers and refuses
/// waits for the other backoff, up to `retry_max`.
pub const PROBE_MAX: Duration = Duration::from_secs(5);

/// How long a link accepted here waits for its offerer to show that it confirmed it (by
/// greeting, or answering a greeting) before it ends: the administrators exchange the offer
/// and the grant by hand, which takes hours or days, not weeks.
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(3 * 24 * 60 * 60);
/// Why a link its offerer never confirmed ended.
pub const UNCONFIRMED: &str = "the other node never confirmed the link (an offer it did not \
     confirm with this node's grant: replayed, or abandoned)";

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
/// The highest `link_seq` taken from a peer: far beyond any real outbox, and safe to add to.
const MAX_LINK_SEQ: u64 = 1 << 62;

/// The time as the machine sees it: passed in with every input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// The monotonic clock: pauses and rates.
    pub instant: Instant,
    /// The wall clock in milliseconds since the epoch: a grant's validity.
    pub wall_ms: i64,
}

/// The pauses after failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first pause after a failure; doubled after each further one.
    pub retry_min: Duration,
    /// The longest pause after refusals ([`PROBE_MAX`] for a peer that cannot be reached).
    pub retry_max: Duration,
}

impl Backoff {
    fn probe_max(&self) -> Duration {
        PROBE_MAX.min(self.retry_max).max(self.retry_min)
    }
}

/// Which backoff a failure counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The peer could not be reached.
    Unreachable,
    /// The peer, or this node's store, answered no.
    Refused,
}

/// What a link is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No connection; a dial goes when something waits and any pause is over.
    Disconnected,
    /// A dial is out; its connection or its failure comes as an input (dialled again when the
    /// pause is over and neither has come).
    Dialing,
    /// Connected; our greeting goes (after any pause) and waits for its answer.
    Greeting,
    /// The peer answered our greeting (the `greeting`-th); the store records what it holds of
    /// ours, and may number what waits again. Notices may go; the outbox waits.
    Settling {
        /// Which greeting.
        greeting: u64,
    },
    /// Greeted: notices, then the outbox, one request at a time.
    Active,
    /// A revocation goes to the peer (dialled if need be); the link ends once it is
    /// delivered, or cannot be.
    Ending {
        /// The revocation.
        notice: SignedNotice,
        /// Whether a connection is open.
        connected: bool,
    },
    /// Over: the peer is disallowed and nothing is retried.
    Ended,
}

/// Names one request the machine sent, so that its answer finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(u64);

/// What a link's request in flight was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Hello,
    Push,
    Notice,
    Ending,
}

/// What happened, for the machine.
#[derive(Debug)]
pub enum Input {
    /// The timer: the pause may be over, the grant may have expired, presence held back may go.
    Tick,
    /// The outbox has new items.
    Wake,
    /// The node made a one-sided change (a narrowing) to tell the peer; in force here at once.
    Notify(SignedNotice),
    /// The node ends the link, telling the peer with the notice (best effort).
    End(Option<SignedNotice>),
    /// Presence of this node's users to tell the peer (merged with what waits).
    Presence(Vec<Presence>),
    /// A connection to the peer opened (either side dialled).
    Connected,
    /// The last connection to the peer closed.
    Disconnected,
    /// A dial failed.
    DialFailed,
    /// A request was answered.
    Answered {
        /// Which.
        token: Token,
        /// The answer.
        response: Response,
    },
    /// A request failed without an answer (a timeout, the connection broke).
    RequestFailed {
        /// Which.
        token: Token,
    },
    /// [`Output::Watermark`] returned: the last `link_seq` stored from the peer.
    Watermark(Result<u64, StoreError>),
    /// [`Output::Outbox`] returned.
    Batch(Result<Vec<Outgoing>, StoreError>),
    /// [`Output::Acked`] returned: `true` when the store numbered what waits again.
    AckRecorded {
        /// The greeting it was for, if any.
        greeting: Option<u64>,
        /// What the store said.
        result: Result<bool, StoreError>,
    },
}

/// What the machine asks the driver to do.
#[derive(Debug)]
pub enum Output {
    /// Dial the peer at the grant's addresses (unless a dial is out or a connection open).
    Dial,
    /// Send a request; its answer or failure comes back with the token.
    Send {
        /// Names it.
        token: Token,
        /// The request.
        request: Request,
    },
    /// Read the last `link_seq` stored from the peer ([`crate::store::LinkStore::watermark`]);
    /// the result comes as [`Input::Watermark`].
    Watermark,
    /// Read the outbox after `after` ([`crate::store::LinkStore::outbox`]); the result comes
    /// as [`Input::Batch`].
    Outbox {
        /// The last item the peer holds.
        after: u64,
    },
    /// Record that the peer holds our items up to `upto` ([`crate::store::LinkStore::acked`]);
    /// the result comes as [`Input::AckRecorded`] with `greeting`.
    Acked {
        /// The last item the peer holds.
        upto: u64,
        /// The digest of that item, when the peer says.
        last: Option<Hash>,
        /// The greeting whose answer this is.
        greeting: Option<u64>,
    },
    /// Close the connections to the peer (both greet again on the next).
    Disconnect,
    /// Disallow the peer and close its connections: the link is over.
    Disallow,
    /// Tell the node.
    Tell(Tell),
}

/// What the node is told about a link.
#[derive(Debug)]
pub enum Tell {
    /// The peer answered our greeting on a new connection.
    Connected,
    /// The peer of a link this node accepted has greeted or answered a greeting: it has
    /// confirmed the link ([`Link::expect_confirmation`]).
    Confirmed,
    /// The last connection closed after a greeting.
    Disconnected,
    /// The peer holds more of ours than this node ever sent: this node was restored.
    Restored,
    /// The peer holds less of ours than it acknowledged, up to `received`.
    Behind {
        /// The last of our items the peer holds.
        received: u64,
    },
    /// The peer refused some of our items for good.
    Rejected(Vec<Rejected>),
    /// The peer narrowed the scope (its verified notice).
    Narrowed {
        /// The scope now.
        scope: Scope,
        /// The notice.
        notice: Signed,
    },
    /// The peer greeted with the renewal this node held: in force now.
    Renewed {
        /// Its hash.
        grant: Hash,
    },
    /// The link is over.
    Ended {
        /// Why.
        reason: String,
        /// The peer's signed revocation, when there was one.
        notice: Option<Signed>,
    },
}

/// What to do with a request from the peer.
#[derive(Debug)]
pub enum Inbound {
    /// Answer with a refusal.
    Refuse {
        /// Why.
        reason: String,
        /// Whether the link is over.
        link_ended: bool,
    },
    /// The peer greeted: answer with our watermark.
    Greet,
    /// Verify the items, store them, then acknowledge.
    Push {
        /// The first item's `link_seq`.
        first: u64,
        /// The items.
        items: Vec<Item>,
    },
    /// Acknowledge; the node hears of these users (the peer's own, possibly none).
    Presence(Vec<Presence>),
    /// The node answers the question, within `scope`.
    Query {
        /// The link's scope now.
        scope: Scope,
        /// The question.
        query: Query,
    },
    /// A notice was verified and taken: acknowledge it.
    Noted,
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
    /// The link was accepted here and the peer has not yet shown that it confirmed it.
    pub unconfirmed: bool,
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

/// A token bucket: `burst` requests at once, then `per_sec`.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    burst: f64,
    per_sec: f64,
    left: f64,
    at: Instant,
}

impl Allowance {
    fn full((burst, per_sec): (f64, f64), now: Instant) -> Self {
        Self {
            burst,
            per_sec,
            left: burst,
            at: now,
        }
    }

    /// Takes one request's worth if there is one `now`.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let left = (self.left + elapsed * self.per_sec).min(self.burst);
        let take = left >= 1.0;
        self.left = if take { left - 1.0 } else { left };
        self.at = now.max(self.at);
        take
    }
}

/// Whether the node may be told again of a restore (last told at `told`, which becomes `now`
/// if so): see [`RESTORE_RETELL`].
fn retell_due(told: &mut Option<Instant>, now: Instant) -> bool {
    let due = told.is_none_or(|at| now.saturating_duration_since(at) >= RESTORE_RETELL);
    if due {
        *told = Some(now);
    }
    due
}

/// One link: its grants, its phase and its bookkeeping.
#[derive(Debug)]
pub struct Link {
    id: String,
    me: PublicKey,
    my_id: NodeId,
    backoff: Backoff,
    grant: Grant,
    /// A renewal the node has accepted: in force once the peer greets with it (the peer has
    /// confirmed it then).
    next: Option<Grant>,
    /// The grant before the last renewal: the peer may still greet or send notices with it
    /// until it has taken the renewal too.
    previous: Option<Grant>,
    peer: Party,
    peer_id: NodeId,
    scope: Scope,
    phase: Phase,
    /// Nothing is attempted before then (a dial, a greeting, a request): the pause after a
    /// failure.
    retry_at: Option<Instant>,
    /// The next pause after the peer could not be reached ([`PROBE_MAX`] at most).
    probe: Duration,
    /// The next pause after a refusal (`retry_max` at most).
    refusal: Duration,
    /// The peer greeted us on the current connections: its pushes may be taken.
    heard_hello: bool,
    /// The last of our items the peer holds.
    acked: u64,
    /// The last `link_seq` of the push in flight: the peer cannot acknowledge more.
    pushed: u64,
    /// The outbox may hold something to push.
    pending: bool,
    /// Bumped by every wake; a fetch that started before the last wake cannot say the
    /// outbox is empty.
    wakes: u64,
    fetched_at_wake: u64,
    /// A storage call for our side (watermark, outbox) is out.
    store_busy: bool,
    in_flight: Option<(Token, Sent)>,
    notices: VecDeque<SignedNotice>,
    /// Greetings answered so far: which one a recorded greeting was.
    greetings: u64,
    /// When the node was last told that the peer lost what it had stored of ours, or that
    /// this node was restored ([`RESTORE_RETELL`]).
    behind_told: Option<Instant>,
    restored_told: Option<Instant>,
    /// Presence waiting to go (one request in flight at a time; a user's last state wins).
    presence: Vec<Presence>,
    presence_in_flight: Option<Token>,
    /// The presence requests we may send now: as many as the peer takes, so that none is
    /// refused; what waits meanwhile merges into the next.
    presence_sending: Allowance,
    /// The peer's presence requests we may still take now.
    presence_allowance: Allowance,
    /// Why delivery cannot go on (the peer lost what this outbox no longer holds).
    stalled: Option<String>,
    /// A link accepted here that the peer has not yet confirmed ends at this wall-clock time
    /// (ms): an offer replayed to this node, or one its offerer never confirmed, is let go.
    confirm_by: Option<i64>,
    /// The peer has greeted, or answered a greeting, under this grant: it has confirmed it.
    proven: bool,
    tokens: u64,
    outputs: VecDeque<Output>,
}

impl Link {
    /// A link under `grant` with the scope in force, for this node `me`; `connected` if a
    /// connection to the peer is open already. Something may wait in the outbox: the first
    /// [`Input::Tick`] dials.
    pub fn new(
        me: PublicKey,
        grant: Grant,
        scope: Scope,
        backoff: Backoff,
        connected: bool,
        now: Now,
    ) -> Result<Self, LinkError> {
        let peer = grant.peer_of(&me).ok_or(LinkError::NotAParty)?.clone();
        Ok(Self {
            id: grant.link().to_owned(),
            my_id: me.node_id(),
            me,
            backoff,
            peer_id: peer.key.node_id(),
            peer,
            scope,
            grant,
            next: None,
            previous: None,
            phase: if connected {
                Phase::Greeting
            } else {
                Phase::Disconnected
            },
            retry_at: None,
            probe: backoff.retry_min,
            refusal: backoff.retry_min,
            heard_hello: false,
            acked: 0,
            pushed: 0,
            pending: true,
            wakes: 0,
            fetched_at_wake: 0,
            store_busy: false,
            in_flight: None,
            notices: VecDeque::new(),
            greetings: 0,
            behind_told: None,
            restored_told: None,
            presence: Vec::new(),
            presence_in_flight: None,
            presence_sending: Allowance::full(PRESENCE_SENT, now.instant),
            presence_allowance: Allowance::full(PRESENCE_TAKEN, now.instant),
            stalled: None,
            confirm_by: None,
            proven: false,
            tokens: 0,
            outputs: VecDeque::new(),
        })
    }

    /// The link's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The peer as the grant in force names it.
    pub fn peer(&self) -> &Party {
        &self.peer
    }

    /// The scope in force.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether the link is over.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Whether a revocation is on its way to the peer.
    pub fn is_ending(&self) -> bool {
        matches!(self.phase, Phase::Ending { .. })
    }

    /// Whether the peer answered our greeting on the open connection: queries may go.
    pub fn is_greeted(&self) -> bool {
        matches!(self.phase, Phase::Settling { .. } | Phase::Active)
    }

    /// When the machine wants the next [`Input::Tick`] for a pause that is running (the driver
    /// also ticks regularly, for the grant's validity and presence held back).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_ended() { None } else { self.retry_at }
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The link's state for an administrator.
    pub fn status(&self) -> LinkStatus {
        LinkStatus {
            link: self.id.clone(),
            peer: self.peer.node.clone(),
            connected: self.is_greeted(),
            acked: self.acked,
            ended: self.is_ended(),
            stalled: self.stalled.clone(),
            unconfirmed: self.confirm_by.is_some(),
        }
    }

    /// This node accepted the link and the peer, its offerer, has not yet shown that it
    /// confirmed it: unless the peer greets or answers a greeting before `by` (wall clock,
    /// ms), the link ends (as if it expired; nothing is sent). A peer that has greeted
    /// already is told at once ([`Tell::Confirmed`]).
    pub fn expect_confirmation(&mut self, by: i64) {
        if self.proven {
            self.tell(Tell::Confirmed);
        } else {
            self.confirm_by = Some(by);
        }
    }

    /// The peer has greeted, or answered our greeting: it confirmed the link.
    fn confirmed_by_peer(&mut self) {
        self.proven = true;
        if self.confirm_by.take().is_some() {
            self.tell(Tell::Confirmed);
        }
    }

    fn connected(&self) -> bool {
        match &self.phase {
            Phase::Greeting | Phase::Settling { .. } | Phase::Active => true,
            Phase::Ending { connected, .. } => *connected,
            Phase::Disconnected | Phase::Dialing | Phase::Ended => false,
        }
    }

    /// Our greeting no longer counts (the peer refused something, or a renewal is in force):
    /// greet again on the open connection.
    fn ungreet(&mut self) {
        if matches!(self.phase, Phase::Settling { .. } | Phase::Active) {
            self.phase = Phase::Greeting;
        }
    }

    fn address(&self) -> Address {
        Address {
            link: self.id.clone(),
            from: self.my_id.clone(),
            to: self.peer_id.clone(),
        }
    }

    fn send(&mut self, request: Request) -> Token {
        self.tokens += 1;
        let token = Token(self.tokens);
        self.outputs.push_back(Output::Send { token, request });
        token
    }

    fn tell(&mut self, tell: Tell) {
        self.outputs.push_back(Output::Tell(tell));
    }

    /// Something failed: wait before the next attempt, a little longer each time, by the
    /// backoff of the failure's kind.
    fn failed(&mut self, failure: Failure, now: Now) {
        self.in_flight = None;
        let (pause, max) = match failure {
            Failure::Unreachable => (&mut self.probe, self.backoff.probe_max()),
            Failure::Refused => (&mut self.refusal, self.backoff.retry_max),
        };
        self.retry_at = now.instant.checked_add(*pause);
        *pause = pause.saturating_mul(2).min(max);
    }

    /// Takes what happened and moves on.
    pub fn handle(&mut self, input: Input, now: Now) {
        match input {
            Input::Tick => {
                self.expire(now);
                self.drive(now);
                self.send_presence(now);
            }
            Input::Wake => {
                self.pending = true;
                self.wakes += 1;
                self.drive(now);
            }
            Input::Notify(notice) => {
                if let Change::Narrow { scope } = &notice.notice().change {
                    self.scope = self.scope.meet(scope);
                    // A renewal held here would undo it: it must be accepted again.
                    self.next = None;
                }
                self.notices.push_back(notice);
                self.drive(now);
            }
            Input::End(notice) => self.end(notice, now),
            Input::Presence(users) => self.queue_presence(users, now),
            Input::Connected => self.on_connected(now),
            Input::Disconnected => self.on_disconnected(now),
            Input::DialFailed => match self.phase {
                // The revocation could not be delivered; the link ends anyway.
                Phase::Ending { .. } => self.finish_end(None),
                Phase::Disconnected | Phase::Dialing => {
                    self.phase = Phase::Disconnected;
                    self.failed(Failure::Unreachable, now);
                }
                _ => {}
            },
            Input::Answered { token, response } => self.on_response(token, response, now),
            Input::RequestFailed { token } => self.on_failure(token, now),
            Input::Watermark(result) => self.on_watermark(result, now),
            Input::Batch(result) => self.on_batch(result, now),
            Input::AckRecorded { greeting, result } => self.on_ack_recorded(greeting, result, now),
        }
    }

    /// The grant (and any renewal held here) has run out, or the peer never confirmed the
    /// link: the link ends.
    fn expire(&mut self, now: Now) {
        if !self.is_ended() && self.confirm_by.is_some_and(|by| now.wall_ms >= by) {
            self.confirm_by = None;
            self.finish_end(Some((UNCONFIRMED.into(), None)));
            return;
        }
        let until = |g: &Grant| g.terms().not_after;
        if !self.is_ended()
            && now.wall_ms >= until(&self.grant)
            && self.next.as_ref().is_none_or(|n| now.wall_ms >= until(n))
        {
            self.finish_end(Some(("the link expired".into(), None)));
        }
    }

    /// Moves one step if it can.
    fn drive(&mut self, now: Now) {
        if self.is_ended() || self.in_flight.is_some() || self.store_busy {
            return;
        }
        if !self.is_ending() && now.wall_ms < self.grant.terms().not_before {
            // Not valid yet (or this clock is behind): wait, the tick looks again.
            return;
        }
        if self.retry_at.is_some_and(|at| now.instant < at) {
            return;
        }
        let wants = self.pending || self.is_ending() || !self.notices.is_empty();
        match &self.phase {
            Phase::Disconnected
            | Phase::Dialing
            | Phase::Ending {
                connected: false, ..
            } => {
                if wants {
                    self.outputs.push_back(Output::Dial);
                    if !self.is_ending() {
                        self.phase = Phase::Dialing;
                    }
                    // The connection or its failure comes as an input; look again later.
                    self.retry_at = now.instant.checked_add(self.probe);
                }
            }
            // A revocation needs no greeting: it is signed, and the link ends either way.
            Phase::Ending {
                notice,
                connected: true,
            } => {
                let request = Request::Notice {
                    address: self.address(),
                    notice: notice.signed().clone(),
                };
                let token = self.send(request);
                self.in_flight = Some((token, Sent::Ending));
            }
            Phase::Greeting => {
                self.store_busy = true;
                self.outputs.push_back(Output::Watermark);
            }
            Phase::Settling { .. } | Phase::Active => {
                if let Some(notice) = self.notices.front() {
                    let request = Request::Notice {
                        address: self.address(),
                        notice: notice.signed().clone(),
                    };
                    let token = self.send(request);
                    self.in_flight = Some((token, Sent::Notice));
                } else if self.pending && self.phase == Phase::Active {
                    self.store_busy = true;
                    self.fetched_at_wake = self.wakes;
                    self.outputs.push_back(Output::Outbox { after: self.acked });
                }
            }
            Phase::Ended => {}
        }
    }

    fn end(&mut self, notice: Option<SignedNotice>, now: Now) {
        if self.is_ended() {
            return;
        }
        match notice {
            Some(notice) if self.connected() || !self.peer.addresses.is_empty() => {
                let connected = self.connected();
                self.phase = Phase::Ending { notice, connected };
                self.retry_at = None;
                self.drive(now);
            }
            _ => self.finish_end(None),
        }
    }

    /// The link is over: the peer is disallowed and disconnected, nothing is retried.
    /// `told` is the reason to report, with the peer's notice; `None` when we ended it.
    fn finish_end(&mut self, told: Option<(String, Option<Signed>)>) {
        if self.is_ended() {
            return;
        }
        self.phase = Phase::Ended;
        self.in_flight = None;
        self.outputs.push_back(Output::Disallow);
        if let Some((reason, notice)) = told {
            self.tell(Tell::Ended { reason, notice });
        }
    }

    fn on_connected(&mut self, now: Now) {
        // Reachable: the next time it is not, probing starts over from the shortest pause.
        self.probe = self.backoff.retry_min;
        match &mut self.phase {
            Phase::Disconnected | Phase::Dialing => {
                self.phase = Phase::Greeting;
                self.retry_at = None;
            }
            Phase::Ending { connected, .. } if !*connected => {
                *connected = true;
                self.retry_at = None;
            }
            _ => {}
        }
        self.drive(now);
    }

    fn on_disconnected(&mut self, now: Now) {
        // What the node learnt on this connection (our greeting answered, or the peer's
        // heard) is stale now.
        let was = self.is_greeted() || self.heard_hello;
        // Its failure may be reported after this, or not at all: settle it here.
        self.in_flight = None;
        self.heard_hello = false;
        self.presence.clear();
        self.presence_in_flight = None;
        match self.phase {
            // The peer got our revocation and hung up.
            Phase::Ending { .. } => self.finish_end(None),
            Phase::Ended => {}
            _ => {
                self.phase = Phase::Disconnected;
                if was {
                    self.tell(Tell::Disconnected);
                } else {
                    // Closed before a greeting: the peer does not (yet) let us in. Do not
                    // redial at once.
                    self.failed(Failure::Refused, now);
                }
            }
        }
    }

    fn on_failure(&mut self, token: Token, now: Now) {
        if self.presence_in_flight == Some(token) {
            // Lost: the next greeting makes it good.
            self.presence_in_flight = None;
            self.send_presence(now);
            return;
        }
        let Some((id, sent)) = self.in_flight else {
            return;
        };
        if id != token {
            return;
        }
        tracing::debug!(link = self.id, "request failed; the same range goes again");
        if sent == Sent::Ending {
            self.finish_end(None);
        } else {
            self.failed(Failure::Unreachable, now);
        }
    }

    fn on_response(&mut self, token: Token, response: Response, now: Now) {
        if self.presence_in_flight == Some(token) {
            self.presence_in_flight = None;
            self.send_presence(now);
            return;
        }
        let Some((id, sent)) = self.in_flight else {
            return;
        };
        if id != token {
            return;
        }
        self.in_flight = None;
        // It answered: reachable.
        self.probe = self.backoff.retry_min;
        let link = self.id.clone();
        if self.is_ending() {
            if sent == Sent::Ending {
                self.finish_end(None);
            } else {
                // An answer to what went before the revocation: the revocation goes next.
                self.drive(now);
            }
            return;
        }
        if sent == Sent::Notice {
            match &response {
                Response::Refused {
                    link_ended: true, ..
                } => {
                    self.finish_end(Some(("the peer ended the link".into(), None)));
                    return;
                }
                // The notice itself was refused: sending it again changes nothing.
                Response::Refused { reason, .. } if reason.starts_with("notice refused") => {
                    tracing::warn!(link, reason, "the peer refused our notice");
                    self.notices.pop_front();
                }
                Response::Refused { reason, .. } => {
                    tracing::warn!(link, reason, "the peer could not take our notice now");
                    self.ungreet();
                    self.failed(Failure::Refused, now);
                    return;
                }
                _ => {
                    self.notices.pop_front();
                }
            }
            self.drive(now);
            return;
        }
        match response {
            Response::Hello { received, .. } if received > MAX_LINK_SEQ => {
                tracing::warn!(link, received, "the peer claims an impossible watermark");
                self.ungreet();
                self.failed(Failure::Refused, now);
                return;
            }
            // A push is acknowledged at most up to its last item. (A push from before a
            // reconnect that the peer stored meanwhile can make it say more: greeting again
            // settles it.)
            Response::Ack { upto, .. } if upto > self.pushed.max(self.acked) => {
                tracing::info!(
                    link,
                    upto,
                    pushed = self.pushed,
                    "the peer acknowledged more than this push; greeting it again"
                );
                self.ungreet();
                self.failed(Failure::Refused, now);
                return;
            }
            Response::Hello { received, last } => {
                if received < self.acked {
                    tracing::warn!(
                        link,
                        received,
                        acked = self.acked,
                        "the peer has less than it acknowledged (restored from a backup?)"
                    );
                }
                self.greetings += 1;
                self.phase = Phase::Settling {
                    greeting: self.greetings,
                };
                self.acked = received;
                self.pending = true;
                self.tell(Tell::Connected);
                self.confirmed_by_peer();
                self.outputs.push_back(Output::Acked {
                    upto: received,
                    last,
                    greeting: Some(self.greetings),
                });
            }
            Response::Ack { upto, rejected } => {
                self.acked = upto;
                self.pending = true;
                self.refusal = self.backoff.retry_min;
                if !rejected.is_empty() {
                    self.tell(Tell::Rejected(rejected));
                }
                self.outputs.push_back(Output::Acked {
                    upto,
                    last: None,
                    greeting: None,
                });
            }
            Response::Refused { reason, link_ended } => {
                tracing::warn!(link, reason, link_ended, "the peer refused");
                if link_ended {
                    self.finish_end(Some((format!("the peer ended the link: {reason}"), None)));
                } else {
                    self.ungreet();
                    self.failed(Failure::Refused, now);
                }
                return;
            }
            Response::Profiles { .. }
            | Response::Chunk(_)
            | Response::Object { .. }
            | Response::Head { .. } => {
                tracing::warn!(link, "the peer answered a push with an answer to a query");
                self.ungreet();
                self.failed(Failure::Refused, now);
                return;
            }
        }
        self.drive(now);
    }

    fn on_watermark(&mut self, result: Result<u64, StoreError>, now: Now) {
        self.store_busy = false;
        match result {
            Err(e) => {
                tracing::warn!(link = self.id, error = %e, "federation storage failed; retrying");
                self.failed(Failure::Refused, now);
            }
            Ok(received) if self.phase == Phase::Greeting => {
                let request = Request::Hello {
                    address: self.address(),
                    grant: self.grant.hash(),
                    received,
                };
                let token = self.send(request);
                self.in_flight = Some((token, Sent::Hello));
            }
            // The connection closed meanwhile, or a revocation goes instead.
            Ok(_) => self.drive(now),
        }
    }

    fn on_batch(&mut self, result: Result<Vec<Outgoing>, StoreError>, now: Now) {
        self.store_busy = false;
        let mut items = match result {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(link = self.id, error = %e, "federation storage failed; retrying");
                self.failed(Failure::Refused, now);
                return;
            }
        };
        if self.phase != Phase::Active {
            // The connection changed meanwhile: the outbox is read again once greeted.
            self.drive(now);
            return;
        }
        // Only the run that follows the acknowledged point, cut to the byte budget.
        let mut bytes = 0;
        let mut keep = 0;
        items.retain(|i| i.link_seq > self.acked);
        for (expected, item) in (self.acked.saturating_add(1)..).zip(&items) {
            if item.link_seq != expected || (keep > 0 && bytes >= MAX_BATCH_BYTES) {
                break;
            }
            bytes += item.item.weight();
            keep += 1;
        }
        if let Some(first) = items.first().filter(|_| keep == 0) {
            // The peer lost items it had acknowledged (restored from a backup): they are gone
            // here, so the outbox cannot fill the hole. The node is told once.
            tracing::error!(
                link = self.id,
                acked = self.acked,
                next = first.link_seq,
                "the peer's watermark is behind this outbox; delivery on this link waits"
            );
            self.stalled = Some(format!(
                "{} has stored items up to {} of this node's, which next holds {}: it lost \
                 items it had acknowledged (restored from a backup?); delivery waits until \
                 this node has queued its discussions' state again",
                self.peer.node, self.acked, first.link_seq
            ));
            if retell_due(&mut self.behind_told, now.instant) {
                self.tell(Tell::Behind {
                    received: self.acked,
                });
            }
        } else {
            self.stalled = None;
        }
        items.truncate(keep);
        let Some(first) = items.first().map(|i| i.link_seq) else {
            // Drained, unless something was queued after this fetch began.
            if self.fetched_at_wake == self.wakes {
                self.pending = false;
            } else {
                self.drive(now);
            }
            return;
        };
        self.pushed = items.last().map_or(self.acked, |i| i.link_seq);
        let request = Request::Push {
            address: self.address(),
            first,
            items: items.into_iter().map(|o| o.item).collect(),
        };
        let token = self.send(request);
        self.in_flight = Some((token, Sent::Push));
    }

    fn on_ack_recorded(
        &mut self,
        greeting: Option<u64>,
        result: Result<bool, StoreError>,
        now: Now,
    ) {
        match result {
            Ok(false) => {
                if let Phase::Settling { greeting: g } = self.phase
                    && Some(g) == greeting
                {
                    self.phase = Phase::Active;
                    self.drive(now);
                }
            }
            // The store numbered what waits again after the peer's watermark (it had been
            // restored from a backup): send them.
            Ok(true) => {
                self.pending = true;
                if let Phase::Settling { greeting: g } = self.phase
                    && Some(g) == greeting
                {
                    self.phase = Phase::Active;
                }
                self.wakes += 1;
                let tell = retell_due(&mut self.restored_told, now.instant);
                self.drive(now);
                if tell {
                    self.tell(Tell::Restored);
                }
            }
            // Greet again: the acknowledgement comes back, and is taken then.
            Err(e) => {
                tracing::warn!(link = self.id, error = %e, "acknowledged items not removed");
                self.ungreet();
                self.failed(Failure::Refused, now);
            }
        }
    }

    fn queue_presence(&mut self, users: Vec<Presence>, now: Now) {
        if self.is_ended() || !self.is_greeted() || !self.scope.presence {
            return;
        }
        if self.presence.is_empty() {
            self.presence = users;
        } else {
            for p in users {
                match self.presence.iter_mut().find(|q| q.user == p.user) {
                    Some(q) => *q = p,
                    None => self.presence.push(p),
                }
            }
        }
        self.send_presence(now);
    }

    /// Sends the next presence batch, unless one is in flight.
    fn send_presence(&mut self, now: Now) {
        if self.presence_in_flight.is_some()
            || self.presence.is_empty()
            || !self.is_greeted()
            || !self.scope.presence
            || !self.presence_sending.take(now.instant)
        {
            return;
        }
        let rest = self
            .presence
            .split_off(self.presence.len().min(MAX_PRESENCE));
        let users = std::mem::replace(&mut self.presence, rest);
        let request = Request::Presence {
            address: self.address(),
            users,
        };
        self.presence_in_flight = Some(self.send(request));
    }

    /// Puts in force a renewal this node offered and the peer accepted: both greet again.
    pub fn renew(&mut self, grant: Grant, scope: Scope, now: Now) -> Result<(), LinkError> {
        let peer = grant.peer_of(&self.me).ok_or(LinkError::NotAParty)?.clone();
        if self.is_ended() {
            return Err(LinkError::NoLink);
        }
        if self.peer.key != peer.key {
            return Err(LinkError::OtherPeer);
        }
        self.peer = peer;
        self.previous = Some(std::mem::replace(&mut self.grant, grant));
        self.next = None;
        self.scope = scope;
        self.ungreet();
        self.heard_hello = false;
        self.pending = true;
        self.retry_at = None;
        self.probe = self.backoff.retry_min;
        self.refusal = self.backoff.retry_min;
        if self.connected() {
            // Both greet again on the next connection, with the grants they hold then.
            self.outputs.push_back(Output::Disconnect);
        } else {
            self.drive(now);
        }
        Ok(())
    }

    /// Holds a renewal this node accepted, until the peer greets with it.
    pub fn expect_renewal(&mut self, grant: Grant) -> Result<(), LinkError> {
        let peer = grant.peer_of(&self.me).ok_or(LinkError::NotAParty)?;
        if self.is_ended() {
            return Err(LinkError::NoLink);
        }
        if self.peer.key != peer.key {
            return Err(LinkError::OtherPeer);
        }
        if Some(grant.terms().version) != self.grant.terms().version.checked_add(1) {
            return Err(LinkError::NotNext);
        }
        self.next = Some(grant);
        Ok(())
    }

    /// Decides what to do with a request from the peer (verifying the items of a push is left
    /// to the driver, which knows every link's keys).
    pub fn inbound(&mut self, request: Request, now: Now) -> Inbound {
        let refuse = |reason: &str, link_ended| Inbound::Refuse {
            reason: reason.to_owned(),
            link_ended,
        };
        if self.is_ended() || (self.is_ending() && !matches!(request, Request::Hello { .. })) {
            return refuse("the link has ended", true);
        }
        if let Err(reason) = check_address(request.address(), &self.id, &self.peer_id, &self.my_id)
        {
            return refuse(&reason.to_string(), false);
        }
        match request {
            Request::Hello { grant, .. }
                if grant != self.grant.hash()
                    && self.next.as_ref().is_none_or(|g| g.hash() != grant)
                    && self.previous.as_ref().is_none_or(|g| g.hash() != grant) =>
            {
                refuse(
                    "the grants differ: confirm the same grant on both nodes",
                    false,
                )
            }
            Request::Push { .. } | Request::Query { .. } | Request::Presence { .. }
                if !self.heard_hello =>
            {
                refuse("greet first: hello with the grant", false)
            }
            Request::Hello { grant, .. } => {
                self.heard_hello = true;
                self.confirmed_by_peer();
                // The peer greets with the renewal it confirmed: in force here now.
                if let Some(next) = self.next.take_if(|g| g.hash() == grant) {
                    self.scope = next.terms().scope.clone();
                    if let Some(peer) = next.peer_of(&self.me) {
                        self.peer = peer.clone();
                    }
                    self.previous = Some(std::mem::replace(&mut self.grant, next));
                    self.ungreet();
                    self.tell(Tell::Renewed { grant });
                    self.drive(now);
                }
                Inbound::Greet
            }
            Request::Push { first, items, .. } => {
                if items.len() > MAX_BATCH_ITEMS
                    || first == 0
                    || first.checked_add(MAX_BATCH_ITEMS as u64).is_none()
                {
                    return refuse("a malformed push", false);
                }
                Inbound::Push { first, items }
            }
            Request::Presence { users, .. } => {
                if !self.scope.presence {
                    return refuse("this link does not carry presence", false);
                }
                // However fast a peer sends, the node takes a bounded stream of presence.
                if !self.presence_allowance.take(now.instant) {
                    return refuse("too many presence updates; send fewer", false);
                }
                if users.len() > MAX_PRESENCE {
                    return refuse("too many users at once", false);
                }
                // A node speaks for its own users only, in a few words.
                let peer_node = self.peer.node.as_str();
                let users = users
                    .into_iter()
                    .filter(|p| {
                        crate::event::node_of(&p.user) == Some(peer_node)
                            && p.user.len() <= MAX_USER_BYTES
                            && p.state.len() <= 16
                            && p.status_text.len() <= 400
                    })
                    .collect();
                Inbound::Presence(users)
            }
            Request::Query { query, .. } => {
                if let Err(reason) = check_query(&query) {
                    return refuse(&reason.to_string(), false);
                }
                let peer_node = Some(self.peer.node.as_str());
                let refused = match &query {
                    Query::Directory { .. } if self.scope.directory == DirectoryScope::None => {
                        Some("this link does not share the user directory")
                    }
                    Query::File { .. } if self.scope.max_file_mb == 0 => {
                        Some("this link does not carry files")
                    }
                    Query::Object { .. } if !self.scope.object_discussions => {
                        Some("this link does not share object discussions")
                    }
                    // A node asks only where the peer is in its own discussions.
                    Query::Head { discussion }
                        if crate::event::node_of(discussion) != peer_node =>
                    {
                        Some("a node asks only about discussions it is home of")
                    }
                    // A node asks for its own users only.
                    Query::Object { user, .. } if crate::event::node_of(user) != peer_node => {
                        Some("an object is opened for a user of the asking node only")
                    }
                    _ => None,
                };
                match refused {
                    Some(reason) => refuse(reason, false),
                    None => Inbound::Query {
                        scope: self.scope.clone(),
                        query,
                    },
                }
            }
            Request::Notice { notice, .. } => self.on_notice(notice),
        }
    }

    fn on_notice(&mut self, notice: Signed) -> Inbound {
        // Checked against the grant: narrowings made on both sides meanwhile add up. A peer
        // between two versions may sign with the other one.
        let granted = self.grant.terms().scope.clone();
        let mut verified =
            SignedNotice::verify(notice.clone(), &self.grant, &self.peer.key, &granted);
        for other in [self.previous.as_ref(), self.next.as_ref()]
            .into_iter()
            .flatten()
        {
            if verified.is_err()
                && let Ok(v) = SignedNotice::verify(notice.clone(), other, &self.peer.key, &granted)
            {
                verified = Ok(v);
            }
        }
        let notice = match verified {
            Ok(notice) => notice,
            Err(e) => {
                return Inbound::Refuse {
                    reason: format!("notice refused: {e}"),
                    link_ended: false,
                };
            }
        };
        match notice.notice().change.clone() {
            Change::Revoke { reason } => {
                let signed = notice.signed().clone();
                self.finish_end(Some((
                    format!("revoked by the peer: {reason}"),
                    Some(signed),
                )));
            }
            Change::Narrow { scope } => {
                self.scope = self.scope.meet(&scope);
                self.next = None;
                self.tell(Tell::Narrowed {
                    scope: self.scope.clone(),
                    notice: notice.signed().clone(),
                });
            }
        }
        Inbound::Noted
    }
}

/// Why a frame's address does not fit the link it came on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Misaddressed {
    #[error("not the link {0}")]
    Link(String),
    #[error("the frame claims another sender")]
    Sender,
    #[error("the frame is addressed to another node")]
    Recipient,
}

/// Checks that a request on `link` from the peer `peer` is addressed to this node `me`.
pub(crate) fn check_address(
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

/// Why a query was refused; the peer is told the text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadQuery {
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

/// Checks that a query is well formed.
pub(crate) fn check_query(query: &Query) -> Result<(), BadQuery> {
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
