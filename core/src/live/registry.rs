//! Live authenticated connections, by session and by user: revoking a session, locking a user
//! or logging out reaches the connections at once, and discussion events reach every device of
//! their recipients.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use veche_protocol::{Event, frame};

use crate::live::presence::ConnectionChange;
use metrics::Counter;

/// Longest a connection may take to end gracefully after its session ended; then it is closed
/// regardless. Keeps "a revoked session's connection is closed within 1 s".
const FORCE_CLOSE_AFTER: Duration = Duration::from_millis(900);

/// An event encoded once as a frame and shared by every connection it goes to.
#[derive(Debug, Clone)]
pub struct EncodedEvent(Arc<[u8]>);

impl EncodedEvent {
    /// Encodes `event`; `None` if it cannot be sent (larger than any frame may be).
    pub fn new(event: &Event) -> Option<Self> {
        match frame::encode(event, frame::MAX_OUTGOING_FRAME) {
            Ok(bytes) => Some(Self(bytes.into())),
            Err(e) => {
                tracing::error!(error = %e, "event cannot be encoded; not delivered");
                None
            }
        }
    }

    /// The frame, length prefix included.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why the registry ends a connection.
#[derive(Debug, Clone)]
pub enum EndSignal {
    /// Its session ended; the text says why.
    Session(String),
    /// It did not read its events fast enough; the client reconnects and syncs.
    Lagged,
}

/// Connection ids, unique across QUIC connections and WebSockets.
static CONNECTION_IDS: AtomicU64 = AtomicU64::new(1);

/// A new connection id.
pub fn next_connection_id() -> u64 {
    CONNECTION_IDS.fetch_add(1, Ordering::Relaxed)
}

/// How the registry closes a connection that did not end by itself in time.
#[derive(Debug, Clone)]
pub enum Transport {
    /// A QUIC connection, closed through the transport.
    Quic(Arc<dyn ForceClose>),
    /// A gateway WebSocket; cancelling ends its task.
    Socket(tokio_util::sync::CancellationToken),
}

impl Transport {
    fn force_close(&self) {
        match self {
            Self::Quic(conn) => conn.force_close(),
            Self::Socket(token) => token.cancel(),
        }
    }
}

/// Closes a connection at once with the protocol's "session revoked" code; the QUIC server
/// implements it over its connection.
pub trait ForceClose: Send + Sync + std::fmt::Debug {
    /// Closes the connection now.
    fn force_close(&self);
}

/// The live registry's counters.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// Events handed to connections' queues.
    pub deliveries: Counter,
    /// Connections closed because they did not read their events in time.
    pub lagging_closes: Counter,
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            deliveries: Counter::noop(),
            lagging_closes: Counter::noop(),
        }
    }
}

/// One live connection.
#[derive(Debug, Clone)]
pub struct LiveConnection {
    pub id: u64,
    pub user: String,
    pub conn: Transport,
    /// Tells the connection task to end, and why.
    pub end: mpsc::Sender<EndSignal>,
    /// Set before `end` is signalled for a session end: the connection's handlers stop acting
    /// for the session.
    pub ended: Arc<AtomicBool>,
    /// The connection's event stream.
    pub events: mpsc::Sender<EncodedEvent>,
    /// Object discussions this connection watches (open in the client).
    pub watching: Arc<Mutex<HashSet<String>>>,
}

impl LiveConnection {
    fn send(&self, event: &EncodedEvent, counters: &Fanout) {
        if self.events.try_send(event.clone()).is_ok() {
            counters.deliveries.increment(1);
        } else if self.end.try_send(EndSignal::Lagged).is_ok() && !self.events.is_closed() {
            // The client reads too slowly (or is gone): it must resync rather than miss
            // events. Counted once per connection: its `end` channel then stays full.
            counters.lagging_closes.increment(1);
        }
    }
}

#[derive(Debug, Default)]
struct Maps {
    sessions: HashMap<String, Vec<LiveConnection>>,
    users: HashMap<String, Vec<LiveConnection>>,
    /// Object discussion → connections watching it, so that delivering to watchers does not
    /// scan every online user.
    watchers: HashMap<String, Vec<LiveConnection>>,
}

/// Live connections by session and by user.
#[derive(Debug, Default)]
pub struct Registry {
    maps: Mutex<Maps>,
    /// Where connections coming and going are reported (presence).
    presence: std::sync::OnceLock<mpsc::UnboundedSender<ConnectionChange>>,
    /// Deliveries and lagging closes.
    counters: Fanout,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent under any panic in their short critical sections.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// A registry counting its deliveries in `counters`.
    pub fn new(counters: Fanout) -> Self {
        Self {
            counters,
            ..Self::default()
        }
    }

    /// Reports connections coming and going to `sink` from now on.
    pub fn set_presence_sink(&self, sink: mpsc::UnboundedSender<ConnectionChange>) {
        let _ = self.presence.set(sink);
    }

    fn report(&self, change: ConnectionChange) {
        if let Some(sink) = self.presence.get() {
            let _ = sink.send(change);
        }
    }

    pub fn register(&self, session_id: &str, live: LiveConnection) {
        let change = ConnectionChange::Connected {
            user: live.user.clone(),
            connection: live.id,
        };
        let mut maps = lock(&self.maps);
        maps.users
            .entry(live.user.clone())
            .or_default()
            .push(live.clone());
        maps.sessions
            .entry(session_id.to_owned())
            .or_default()
            .push(live);
        // Under the lock, as disconnections are: presence sees them in the order they
        // happened. After the insert, so that its snapshot finds the connection.
        self.report(change);
    }

    /// Whether `user` has the live connection `connection_id`.
    pub fn has_connection(&self, user: &str, connection_id: u64) -> bool {
        lock(&self.maps)
            .users
            .get(user)
            .is_some_and(|conns| conns.iter().any(|c| c.id == connection_id))
    }

    pub fn unregister(&self, session_id: &str, connection_id: u64) {
        let mut maps = lock(&self.maps);
        let mut user = None;
        if let Some(list) = maps.sessions.get_mut(session_id) {
            if let Some(c) = list.iter().find(|c| c.id == connection_id) {
                user = Some(c.user.clone());
            }
            list.retain(|c| c.id != connection_id);
            if list.is_empty() {
                maps.sessions.remove(session_id);
            }
        }
        if let Some(user) = user {
            remove_user_connection(&mut maps, &user, connection_id);
            self.report(ConnectionChange::Disconnected {
                user,
                connection: connection_id,
            });
        }
    }

    /// Ends the connections of these sessions: each tells its client why and closes; any that
    /// has not closed after [`FORCE_CLOSE_AFTER`] is closed anyway.
    pub fn end_sessions(&self, session_ids: &[String], reason: &str) -> usize {
        let ended: Vec<LiveConnection> = {
            let mut maps = lock(&self.maps);
            let ended: Vec<LiveConnection> = session_ids
                .iter()
                .filter_map(|id| maps.sessions.remove(id))
                .flatten()
                .collect();
            for c in &ended {
                remove_user_connection(&mut maps, &c.user, c.id);
                self.report(ConnectionChange::Disconnected {
                    user: c.user.clone(),
                    connection: c.id,
                });
            }
            ended
        };
        for live in &ended {
            live.ended.store(true, Ordering::SeqCst);
            let _ = live.end.try_send(EndSignal::Session(reason.to_owned()));
            let conn = live.conn.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FORCE_CLOSE_AFTER).await;
                conn.force_close();
            });
        }
        ended.len()
    }

    /// Sends `event` to every connection of these users.
    pub fn deliver(&self, users: &[String], event: &EncodedEvent) {
        let maps = lock(&self.maps);
        for user in users {
            for c in maps.users.get(user).into_iter().flatten() {
                c.send(event, &self.counters);
            }
        }
    }

    /// Sends `event` to one connection of `user`.
    pub fn deliver_to_connection(&self, user: &str, connection_id: u64, event: &EncodedEvent) {
        let maps = lock(&self.maps);
        if let Some(c) = maps
            .users
            .get(user)
            .and_then(|conns| conns.iter().find(|c| c.id == connection_id))
        {
            c.send(event, &self.counters);
        }
    }

    /// Sends `event` to connections watching `discussion` whose user is in `allowed`, except
    /// users in `already` (who received it as followers).
    pub fn deliver_to_watchers(
        &self,
        discussion: &str,
        allowed: &HashSet<String>,
        already: &HashSet<String>,
        event: &EncodedEvent,
    ) {
        let maps = lock(&self.maps);
        for c in maps.watchers.get(discussion).into_iter().flatten() {
            if allowed.contains(&c.user) && !already.contains(&c.user) {
                c.send(event, &self.counters);
            }
        }
    }

    /// The users with a connection watching `discussion`.
    pub fn watcher_users(&self, discussion: &str) -> Vec<String> {
        let maps = lock(&self.maps);
        let mut users: Vec<String> = maps
            .watchers
            .get(discussion)
            .into_iter()
            .flatten()
            .map(|c| c.user.clone())
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Starts or stops live events of an object discussion on one connection.
    pub fn watch(&self, user: &str, connection_id: u64, discussion: &str, on: bool) {
        let mut maps = lock(&self.maps);
        let Some(c) = maps
            .users
            .get(user)
            .and_then(|conns| conns.iter().find(|c| c.id == connection_id))
            .cloned()
        else {
            return;
        };
        let changed = {
            let mut watching = lock(&c.watching);
            if on {
                watching.insert(discussion.to_owned())
            } else {
                watching.remove(discussion)
            }
        };
        if !changed {
            return;
        }
        if on {
            maps.watchers
                .entry(discussion.to_owned())
                .or_default()
                .push(c);
        } else {
            unwatch(&mut maps, discussion, connection_id);
        }
    }

    /// These users lost access to `discussion`: stop their live events and tell them.
    pub fn revoke_access(&self, discussion: &str, users: &[String]) {
        let Some(event) = EncodedEvent::new(&Event::DiscussionRemoved {
            discussion: discussion.to_owned(),
        }) else {
            return;
        };
        let mut maps = lock(&self.maps);
        let mut unwatched = Vec::new();
        for user in users {
            for c in maps.users.get(user).into_iter().flatten() {
                if lock(&c.watching).remove(discussion) {
                    unwatched.push(c.id);
                }
                c.send(&event, &self.counters);
            }
        }
        for id in unwatched {
            unwatch(&mut maps, discussion, id);
        }
    }
}

fn unwatch(maps: &mut Maps, discussion: &str, connection_id: u64) {
    if let Some(list) = maps.watchers.get_mut(discussion) {
        list.retain(|c| c.id != connection_id);
        if list.is_empty() {
            maps.watchers.remove(discussion);
        }
    }
}

fn remove_user_connection(maps: &mut Maps, user: &str, connection_id: u64) {
    if let Some(list) = maps.users.get_mut(user) {
        if let Some(c) = list.iter().find(|c| c.id == connection_id) {
            let watched: Vec<String> = lock(&c.watching).iter().cloned().collect();
            for d in watched {
                unwatch(maps, &d, connection_id);
            }
        }
        let Some(list) = maps.users.get_mut(user) else {
            return;
        };
        list.retain(|c| c.id != connection_id);
        if list.is_empty() {
            maps.users.remove(user);
        }
    }
}
