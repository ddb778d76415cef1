//! Presence and typing: in memory, never in a discussion's log.
//!
//! A user is as present as their most present connection: available while one of them is
//! active, away once all have been idle for `idle_away_secs`, offline when none is left — after
//! `offline_grace_ms`, so that a reconnect does not flicker. What they chose (`away`, `dnd`,
//! `invisible`) and their status text override that and are kept in the database.
//!
//! Fan-out is by interest: a change goes to the user's *contacts* (people they share a dialog or
//! group with) who are online, to connections that subscribed to the user, and to the user's own
//! devices. One task looks at every online user once per `coalesce_ms` and sends what changed,
//! one event per receiver, so a burst of changes costs each receiver at most one event per
//! period.
//!
//! The registry reports connections coming and going through a channel; contacts and stored
//! choices are loaded off the lock, when a user comes online and when their dialogs or groups
//! change.
//!
//! Users of linked nodes are shown as their node reports them (`remote`); this node's changes
//! go out to the federation service each tick (`linked` sink), which sends each link those of
//! its users that matter there.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use veche_protocol::Event;
use veche_protocol::presence::{PresenceChoice, PresenceInfo, PresenceState};

use crate::config::PresenceConfig;
use crate::live::registry::{EncodedEvent, Registry};
use veche_store::{Store, StoreError};

/// Longest status text, in characters.
const MAX_STATUS_CHARS: usize = 100;

/// A status text was refused.
#[derive(Debug, thiserror::Error)]
#[error("a status text is at most {MAX_STATUS_CHARS} characters, without control characters")]
pub struct StatusTextError;
/// Most users one `get_presence` may name.
pub const MAX_QUERY: usize = 500;
/// Most users in one `presence` event.
const PER_EVENT: usize = 1000;
/// Most contacts sent in the snapshot a new connection receives.
const MAX_SNAPSHOT: usize = 2000;

/// A connection came or went (sent by the registry).
#[derive(Debug)]
pub enum ConnectionChange {
    Connected { user: String, connection: u64 },
    Disconnected { user: String, connection: u64 },
}

/// Who sees a typing indicator.
#[derive(Debug, Clone)]
pub enum TypingAudience {
    /// These users (the members of a dialog or group).
    Users(Vec<String>),
    /// The connections that have this object discussion open, of these users (those who may
    /// read it now).
    Watchers(HashSet<String>),
}

/// How a user stands for push notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    /// Active on some connection: they see messages live; no push.
    Active,
    /// Connected, but all connections idle or away by choice: push.
    Away,
    /// Do not disturb: no push.
    Dnd,
    /// Not known here (offline for a while): the stored choice decides about DND.
    Offline,
}

/// Presence and typing.
#[derive(Debug, Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// The registry's reports, until the task takes them.
    changes: Mutex<Option<mpsc::UnboundedReceiver<ConnectionChange>>>,
    /// Someone came online: load their contacts and stored choice now, not at the next tick.
    load_now: tokio::sync::Notify,
    store: Store,
    registry: Arc<Registry>,
    config: PresenceConfig,
    /// Where changes of this node's users go for linked nodes, once federation runs.
    linked: Mutex<Option<mpsc::UnboundedSender<Vec<PresenceInfo>>>>,
    clock: veche_base::SharedClock,
}

#[derive(Debug, Default)]
struct State {
    /// Users of linked nodes who are not offline, as their node last reported them.
    remote: HashMap<String, PresenceInfo>,
    /// Users of linked nodes whose change is still to be told (the last report wins).
    remote_changed: HashMap<String, PresenceInfo>,
    users: HashMap<String, UserState>,
    /// Subscribed-to user → (connection → its user).
    subscribers: HashMap<String, HashMap<u64, String>>,
    /// Connection → the users it subscribed to.
    subscriptions: HashMap<u64, Vec<String>>,
    typing: HashMap<(String, String), Typing>,
    /// Choices to write to the database at the next tick: (user, choice, status text).
    unsaved: HashMap<String, (PresenceChoice, String)>,
    /// Users whose contacts must be (re)loaded.
    reload: HashSet<String>,
}

#[derive(Debug)]
struct UserState {
    /// Connection → since when its user has been idle on it (`None`: active).
    connections: HashMap<u64, Option<Instant>>,
    choice: PresenceChoice,
    status_text: String,
    /// The choice is known: loaded from the database, or made by the user in this run (a
    /// late load must not override it).
    chose: bool,
    /// Loaded once the user came online; `None` until then (changes wait for it).
    contacts: Option<Arc<HashSet<String>>>,
    /// When the last connection closed.
    gone_since: Option<Instant>,
    /// What others and the user were last told.
    told_others: PresenceInfo,
    told_self: PresenceInfo,
}

#[derive(Debug)]
struct Typing {
    expires: Instant,
    sent: Instant,
    audience: TypingAudience,
}

/// A user's change as others see it, who may hear of it (their contacts), and the
/// connections subscribed to them (with each one's user).
type Changed = (PresenceInfo, Arc<HashSet<String>>, Vec<(u64, String)>);

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // The state stays consistent under any panic in its short critical sections.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn offline(user: &str) -> PresenceInfo {
    PresenceInfo {
        user: user.to_owned(),
        state: PresenceState::Offline,
        status_text: String::new(),
    }
}

impl UserState {
    fn new(user: &str) -> Self {
        Self {
            connections: HashMap::new(),
            choice: PresenceChoice::Auto,
            status_text: String::new(),
            chose: false,
            contacts: None,
            gone_since: None,
            told_others: offline(user),
            told_self: offline(user),
        }
    }

    /// Takes the stored choice (choice, status text), unless the choice is already known.
    fn apply_stored(&mut self, stored: Option<(String, String)>) {
        if self.chose {
            return;
        }
        self.chose = true;
        if let Some((choice, text)) = stored {
            self.choice = PresenceChoice::parse(&choice).unwrap_or_default();
            self.status_text = text;
        }
    }

    /// Whether one of the connections is active: not idle, or idle for less than
    /// `idle_away_secs`.
    fn active(&self, now: Instant, config: &PresenceConfig) -> bool {
        let idle_after = Duration::from_secs(config.idle_away_secs);
        self.connections
            .values()
            .any(|idle| idle.is_none_or(|since| now.duration_since(since) < idle_after))
    }

    /// What others and the user should see now: (others, self).
    fn shown(
        &self,
        user: &str,
        now: Instant,
        config: &PresenceConfig,
    ) -> (PresenceInfo, PresenceInfo) {
        if self.connections.is_empty() {
            let grace = Duration::from_millis(config.offline_grace_ms);
            return match self.gone_since {
                Some(at) if now.duration_since(at) < grace => {
                    (self.told_others.clone(), self.told_self.clone())
                }
                _ => (offline(user), offline(user)),
            };
        }
        let active = self.active(now, config);
        let state = match self.choice {
            PresenceChoice::Invisible => PresenceState::Invisible,
            PresenceChoice::Dnd => PresenceState::Dnd,
            PresenceChoice::Away => PresenceState::Away,
            PresenceChoice::Auto if active => PresenceState::Available,
            PresenceChoice::Auto => PresenceState::Away,
        };
        let me = PresenceInfo {
            user: user.to_owned(),
            state,
            status_text: self.status_text.clone(),
        };
        let others = if state == PresenceState::Invisible {
            offline(user)
        } else {
            me.clone()
        };
        (others, me)
    }
}

impl Presence {
    /// Starts presence; the registry reports connections on the returned sender.
    pub fn new(
        store: Store,
        registry: Arc<Registry>,
        config: PresenceConfig,
        clock: veche_base::SharedClock,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        registry.set_presence_sink(tx);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                changes: Mutex::new(Some(rx)),
                load_now: tokio::sync::Notify::new(),
                store,
                registry,
                config,
                linked: Mutex::new(None),
                clock,
            }),
        }
    }

    /// From now on, every tick's changes of this node's users (as others see them) go to
    /// `sink`.
    pub fn send_changes_to(&self, sink: mpsc::UnboundedSender<Vec<PresenceInfo>>) {
        *self.inner.linked.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// This node's users who are not offline, as others see them (for a linked node that
    /// just connected).
    pub fn present_here(&self) -> Vec<PresenceInfo> {
        let state = lock(&self.inner.state);
        present(&state, state.users.keys())
    }

    /// Users of a linked node, as it reports them; told to their contacts here at the next
    /// tick.
    pub fn remote(&self, infos: Vec<PresenceInfo>) {
        let mut state = lock(&self.inner.state);
        for mut info in infos {
            if info.state == PresenceState::Invisible {
                info.state = PresenceState::Offline;
            }
            if info.state == PresenceState::Offline {
                info.status_text.clear();
                if state.remote.remove(&info.user).is_none() {
                    continue;
                }
            } else if state.remote.get(&info.user) == Some(&info) {
                continue;
            } else {
                state.remote.insert(info.user.clone(), info.clone());
            }
            state.remote_changed.insert(info.user.clone(), info);
        }
    }

    /// A linked node can no longer be reached: its users are shown offline.
    pub fn remote_gone(&self, node: &str) {
        let suffix = format!("@{node}");
        let mut state = lock(&self.inner.state);
        let gone: Vec<String> = state
            .remote
            .keys()
            .filter(|u| u.ends_with(&suffix))
            .cloned()
            .collect();
        for user in gone {
            state.remote.remove(&user);
            state.remote_changed.insert(user.clone(), offline(&user));
        }
    }

    /// Runs the ticks and takes the registry's reports until `stop`.
    pub fn spawn(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let changes = self
            .inner
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        tokio::spawn(async move {
            let Some(mut changes) = changes else {
                return;
            };
            let mut flush =
                tokio::time::interval(Duration::from_millis(this.inner.config.coalesce_ms));
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let typing_tick = (this.inner.config.typing_ttl_ms / 4).clamp(50, 1000);
            let mut typing = tokio::time::interval(Duration::from_millis(typing_tick));
            typing.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    change = changes.recv() => match change {
                        Some(change) => this.connection_change(change),
                        None => break,
                    },
                    _ = flush.tick() => {
                        this.load_pending().await;
                        this.flush().await;
                        this.save_choices().await;
                    }
                    _ = typing.tick() => this.expire_typing(),
                    () = this.inner.load_now.notified() => this.load_pending().await,
                }
            }
            this.save_choices().await;
        })
    }

    fn connection_change(&self, change: ConnectionChange) {
        let snapshot = {
            let mut state = lock(&self.inner.state);
            let state = &mut *state;
            match change {
                ConnectionChange::Connected { user, connection } => {
                    let entry = state.users.entry(user.clone()).or_insert_with(|| {
                        state.reload.insert(user.clone());
                        self.inner.load_now.notify_one();
                        UserState::new(&user)
                    });
                    // An `activity` may have come first and created it.
                    entry.connections.entry(connection).or_insert(None);
                    entry.gone_since = None;
                    // A user already loaded gets the snapshot now; a new one when loaded.
                    entry.contacts.is_some().then(|| {
                        (
                            user.clone(),
                            connection,
                            snapshot_of(state, &user, &self.inner.config),
                        )
                    })
                }
                ConnectionChange::Disconnected { user, connection } => {
                    if let Some(entry) = state.users.get_mut(&user)
                        && entry.connections.remove(&connection).is_some()
                        && entry.connections.is_empty()
                    {
                        entry.gone_since = Some(Instant::now());
                    }
                    if let Some(targets) = state.subscriptions.remove(&connection) {
                        for t in targets {
                            unsubscribe(state, &t, connection);
                        }
                    }
                    None
                }
            }
        };
        if let Some((user, connection, infos)) = snapshot {
            self.send_to_connection(&user, connection, infos);
        }
    }

    /// Loads contacts and stored choices of users who came online or whose dialogs and
    /// groups changed.
    async fn load_pending(&self) {
        let users: Vec<String> = std::mem::take(&mut lock(&self.inner.state).reload)
            .into_iter()
            .collect();
        for user in users {
            let loaded = async {
                let contacts = self.inner.store.presence().contacts(&user).await?;
                let choice = self.inner.store.presence().presence_choice(&user).await?;
                Ok::<_, StoreError>((contacts, choice))
            }
            .await;
            let (contacts, choice) = match loaded {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, %user, "cannot load presence contacts; will retry");
                    lock(&self.inner.state).reload.insert(user);
                    continue;
                }
            };
            let sends = {
                let mut state = lock(&self.inner.state);
                let state = &mut *state;
                let Some(entry) = state.users.get_mut(&user) else {
                    continue;
                };
                entry.apply_stored(choice);
                let contacts: HashSet<String> = contacts.into_iter().collect();
                let added: Option<Vec<String>> = entry
                    .contacts
                    .as_ref()
                    .map(|old| contacts.difference(old).cloned().collect());
                entry.contacts = Some(Arc::new(contacts));
                let connections: Vec<u64> = entry.connections.keys().copied().collect();
                let infos = match added {
                    // First load: the snapshot.
                    None => snapshot_of(state, &user, &self.inner.config),
                    // New contacts: how they are (they are told about this user by their own
                    // reload).
                    Some(added) => present(state, added.iter()),
                };
                connections
                    .into_iter()
                    .map(|c| (c, infos.clone()))
                    .collect::<Vec<_>>()
            };
            for (connection, infos) in sends {
                self.send_to_connection(&user, connection, infos);
            }
        }
    }

    /// Sends every change since the last tick, one event per receiver.
    async fn flush(&self) {
        let now = Instant::now();
        let mut to_users: HashMap<String, Vec<PresenceInfo>> = HashMap::new();
        let mut to_connections: HashMap<(String, u64), Vec<PresenceInfo>> = HashMap::new();
        // Under the lock, only what changed and who may hear of it; the fan-out itself (a
        // user in many groups has hundreds of contacts) is built after, so requests that set
        // presence do not wait for it.
        let mut changed: Vec<Changed> = Vec::new();
        let online: HashSet<String> = {
            let mut state = lock(&self.inner.state);
            let state = &mut *state;
            let mut gone = Vec::new();
            for (user, entry) in state.users.iter_mut() {
                let Some(contacts) = &entry.contacts else {
                    continue;
                };
                let (others, me) = entry.shown(user, now, &self.inner.config);
                if me != entry.told_self {
                    entry.told_self = me.clone();
                    to_users.entry(user.clone()).or_default().push(me);
                }
                if others != entry.told_others {
                    entry.told_others = others.clone();
                    let subscribers = state
                        .subscribers
                        .get(user)
                        .into_iter()
                        .flatten()
                        .map(|(c, u)| (*c, u.clone()))
                        .collect();
                    changed.push((others.clone(), contacts.clone(), subscribers));
                }
                if entry.connections.is_empty() && others.state == PresenceState::Offline {
                    gone.push(user.clone());
                }
            }
            for user in gone {
                state.users.remove(&user);
            }
            // Users of linked nodes: told to their contacts here and to subscribers. Each
            // online user's contacts or the changes, whichever are fewer, are looked through.
            let remote_changed = std::mem::take(&mut state.remote_changed);
            if !remote_changed.is_empty() {
                for (user, entry) in &state.users {
                    let Some(contacts) = &entry.contacts else {
                        continue;
                    };
                    let infos: Vec<PresenceInfo> = if contacts.len() < remote_changed.len() {
                        contacts
                            .iter()
                            .filter_map(|c| remote_changed.get(c))
                            .cloned()
                            .collect()
                    } else {
                        remote_changed
                            .values()
                            .filter(|i| contacts.contains(&i.user))
                            .cloned()
                            .collect()
                    };
                    if !infos.is_empty() {
                        to_users.entry(user.clone()).or_default().extend(infos);
                    }
                }
            }
            for info in remote_changed.into_values() {
                for (connection, subscriber) in
                    state.subscribers.get(&info.user).into_iter().flatten()
                {
                    to_connections
                        .entry((subscriber.clone(), *connection))
                        .or_default()
                        .push(info.clone());
                }
            }
            if changed.is_empty() {
                HashSet::new()
            } else {
                state.users.keys().cloned().collect()
            }
        };
        let linked = self
            .inner
            .linked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(sink) = linked
            && !changed.is_empty()
        {
            let _ = sink.send(changed.iter().map(|c| c.0.clone()).collect());
        }
        for (info, contacts, subscribers) in changed {
            let mut told = HashSet::new();
            for contact in contacts.iter().filter(|c| online.contains(*c)) {
                to_users
                    .entry(contact.clone())
                    .or_default()
                    .push(info.clone());
                told.insert(contact.as_str());
            }
            for (connection, subscriber) in subscribers {
                if !told.contains(subscriber.as_str()) {
                    to_connections
                        .entry((subscriber, connection))
                        .or_default()
                        .push(info.clone());
                }
            }
        }
        let registry = &self.inner.registry;
        for (i, (user, users)) in to_users.into_iter().enumerate() {
            for event in events(users) {
                registry.deliver(std::slice::from_ref(&user), &event);
            }
            // A storm's fan-out is thousands of events: let the connections on this worker
            // (and the QUIC endpoint) run in between.
            if i % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
        for ((user, connection), users) in to_connections {
            for event in events(users) {
                registry.deliver_to_connection(&user, connection, &event);
            }
        }
    }

    async fn save_choices(&self) {
        let unsaved: Vec<(String, String, String)> =
            std::mem::take(&mut lock(&self.inner.state).unsaved)
                .into_iter()
                .map(|(user, (choice, text))| (user, choice.as_str().to_owned(), text))
                .collect();
        if unsaved.is_empty() {
            return;
        }
        let now = self.inner.clock.now_ms();
        if let Err(e) = self
            .inner
            .store
            .presence()
            .save_presence_choices(&unsaved, now)
            .await
        {
            tracing::warn!(error = %e, "cannot save presence choices; will retry");
            let mut state = lock(&self.inner.state);
            for (user, choice, text) in unsaved {
                state
                    .unsaved
                    .entry(user)
                    .or_insert((PresenceChoice::parse(&choice).unwrap_or_default(), text));
            }
        }
    }

    fn send_to_connection(&self, user: &str, connection: u64, users: Vec<PresenceInfo>) {
        for event in events(users) {
            self.inner
                .registry
                .deliver_to_connection(user, connection, &event);
        }
    }

    /// Sets what `user` chose; others see it at the next tick.
    pub fn set_choice(
        &self,
        user: &str,
        choice: PresenceChoice,
        status_text: &str,
    ) -> Result<(), StatusTextError> {
        let text = status_text.trim();
        if text.chars().count() > MAX_STATUS_CHARS || text.chars().any(char::is_control) {
            return Err(StatusTextError);
        }
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        let entry = state.users.entry(user.to_owned()).or_insert_with(|| {
            state.reload.insert(user.to_owned());
            self.inner.load_now.notify_one();
            UserState::new(user)
        });
        entry.choice = choice;
        entry.status_text = text.to_owned();
        entry.chose = true;
        if choice == PresenceChoice::Invisible {
            // Their indicators lapse on the receivers' side; no stop is sent for an invisible
            // user.
            state.typing.retain(|(_, typist), _| typist != user);
        }
        state
            .unsaved
            .insert(user.to_owned(), (choice, text.to_owned()));
        Ok(())
    }

    /// The user of `connection` has been idle for `idle_ms` (0: active now, until told
    /// otherwise).
    pub fn activity(&self, user: &str, connection: u64, idle_ms: u64) {
        let now = Instant::now();
        let idle = (idle_ms > 0).then(|| {
            now.checked_sub(Duration::from_millis(idle_ms))
                .unwrap_or(now)
        });
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        if let Some(at) = state
            .users
            .get_mut(user)
            .and_then(|u| u.connections.get_mut(&connection))
        {
            *at = idle;
            return;
        }
        // The registry's report of this connection has not been handled yet. The registry
        // reports under its own lock, so if it still has the connection, the disconnection
        // (if any) is reported after this and removes what is made here.
        if !self.inner.registry.has_connection(user, connection) {
            return;
        }
        let entry = state.users.entry(user.to_owned()).or_insert_with(|| {
            state.reload.insert(user.to_owned());
            self.inner.load_now.notify_one();
            UserState::new(user)
        });
        entry.connections.insert(connection, idle);
        entry.gone_since = None;
    }

    /// The presence of `users` (ids) as `viewer` sees it; with `subscribe`, `connection`
    /// receives their changes from now on (replacing what it subscribed to before).
    pub async fn query(
        &self,
        viewer: &str,
        connection: u64,
        users: &[String],
        subscribe: bool,
    ) -> Result<Vec<PresenceInfo>, StoreError> {
        // Users who just connected may not have their stored choice loaded yet.
        let unknown: Vec<String> = {
            let state = lock(&self.inner.state);
            users
                .iter()
                .filter(|u| state.users.get(*u).is_some_and(|e| !e.chose))
                .cloned()
                .collect()
        };
        for u in unknown {
            let choice = self.inner.store.presence().presence_choice(&u).await?;
            let mut state = lock(&self.inner.state);
            if let Some(entry) = state.users.get_mut(&u) {
                entry.apply_stored(choice);
            }
        }
        let now = Instant::now();
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        // Only a live connection subscribes (its disconnection cleans up after it).
        if subscribe && self.inner.registry.has_connection(viewer, connection) {
            if let Some(old) = state.subscriptions.remove(&connection) {
                for t in old {
                    unsubscribe(state, &t, connection);
                }
            }
            for u in users {
                state
                    .subscribers
                    .entry(u.clone())
                    .or_default()
                    .insert(connection, viewer.to_owned());
            }
            state.subscriptions.insert(connection, users.to_vec());
        }
        Ok(users
            .iter()
            .map(|u| match state.users.get(u) {
                Some(entry) => {
                    let (others, me) = entry.shown(u, now, &self.inner.config);
                    if u == viewer { me } else { others }
                }
                None => state.remote.get(u).cloned().unwrap_or_else(|| offline(u)),
            })
            .collect())
    }

    /// How `user` stands for push notifications right now.
    pub fn reachability(&self, user: &str) -> Reachability {
        let now = Instant::now();
        let state = lock(&self.inner.state);
        let Some(entry) = state.users.get(user) else {
            return Reachability::Offline;
        };
        if entry.choice == PresenceChoice::Dnd {
            return Reachability::Dnd;
        }
        if entry.active(now, &self.inner.config) && entry.choice != PresenceChoice::Away {
            return Reachability::Active;
        }
        if entry.chose {
            // Gone, in the grace period, idle or away by choice: not at a screen.
            Reachability::Away
        } else {
            // The stored choice (maybe DND) is not loaded yet.
            Reachability::Offline
        }
    }

    /// The dialogs or groups of these users changed: their contacts are loaded again.
    pub fn contacts_changed(&self, users: &[String]) {
        let mut state = lock(&self.inner.state);
        let state = &mut *state;
        for u in users {
            if state.users.contains_key(u) {
                state.reload.insert(u.clone());
                self.inner.load_now.notify_one();
            }
        }
    }

    /// Whether `user` chose to look offline (their typing would give them away).
    pub fn invisible(&self, user: &str) -> bool {
        lock(&self.inner.state)
            .users
            .get(user)
            .is_some_and(|u| u.choice == PresenceChoice::Invisible)
    }

    /// Whether a typing indicator of `user` in `discussion` needs sending; if not, its expiry
    /// is pushed back and the caller is done (no authorization needed: nothing is sent).
    pub fn typing_renewed(&self, user: &str, discussion: &str) -> bool {
        let now = Instant::now();
        let ttl = Duration::from_millis(self.inner.config.typing_ttl_ms);
        let mut state = lock(&self.inner.state);
        match state
            .typing
            .get_mut(&(discussion.to_owned(), user.to_owned()))
        {
            Some(t) if now.duration_since(t.sent) < ttl / 2 => {
                t.expires = now + ttl;
                true
            }
            _ => false,
        }
    }

    /// `user` started or stopped typing in `discussion`, seen by `audience`.
    pub fn typing(&self, user: &str, discussion: &str, typing: bool, audience: TypingAudience) {
        let now = Instant::now();
        let ttl = Duration::from_millis(self.inner.config.typing_ttl_ms);
        let key = (discussion.to_owned(), user.to_owned());
        let send = {
            let mut state = lock(&self.inner.state);
            if typing {
                state.typing.insert(
                    key,
                    Typing {
                        expires: now + ttl,
                        sent: now,
                        audience: audience.clone(),
                    },
                );
                true
            } else {
                state.typing.remove(&key).is_some()
            }
        };
        if send {
            self.send_typing(user, discussion, typing, &audience);
        }
    }

    fn expire_typing(&self) {
        let now = Instant::now();
        let expired: Vec<((String, String), Typing)> = {
            let mut state = lock(&self.inner.state);
            let keys: Vec<(String, String)> = state
                .typing
                .iter()
                .filter(|(_, t)| t.expires <= now)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| state.typing.remove(&k).map(|t| (k, t)))
                .collect()
        };
        for ((discussion, user), t) in expired {
            self.send_typing(&user, &discussion, false, &t.audience);
        }
    }

    fn send_typing(&self, user: &str, discussion: &str, typing: bool, audience: &TypingAudience) {
        let Some(event) = EncodedEvent::new(&Event::Typing {
            discussion: discussion.to_owned(),
            user: user.to_owned(),
            typing,
            expires_in_ms: if typing {
                self.inner.config.typing_ttl_ms
            } else {
                0
            },
        }) else {
            return;
        };
        let registry = &self.inner.registry;
        match audience {
            TypingAudience::Users(users) => {
                let others: Vec<String> = users.iter().filter(|u| *u != user).cloned().collect();
                registry.deliver(&others, &event);
            }
            TypingAudience::Watchers(allowed) => {
                let typist = HashSet::from([user.to_owned()]);
                registry.deliver_to_watchers(discussion, allowed, &typist, &event);
            }
        }
    }
}

/// `presence` events carrying `users`, at most [`PER_EVENT`] each, so that no event outgrows a
/// frame however many contacts changed.
fn events(users: Vec<PresenceInfo>) -> Vec<EncodedEvent> {
    users
        .chunks(PER_EVENT)
        .filter_map(|chunk| {
            EncodedEvent::new(&Event::Presence {
                users: chunk.to_vec(),
            })
        })
        .collect()
}

/// What a new connection of `user` is told: their own presence and that of their contacts who
/// are not offline.
fn snapshot_of(state: &State, user: &str, config: &PresenceConfig) -> Vec<PresenceInfo> {
    let Some(entry) = state.users.get(user) else {
        return Vec::new();
    };
    let mut infos = vec![entry.shown(user, Instant::now(), config).1];
    let mut contacts = present(state, entry.contacts.iter().flat_map(|c| c.iter()));
    contacts.truncate(MAX_SNAPSHOT);
    infos.append(&mut contacts);
    infos
}

/// How these users were last shown to others (users of linked nodes: as their node reported
/// them), for those not offline.
fn present<'a>(state: &State, users: impl Iterator<Item = &'a String>) -> Vec<PresenceInfo> {
    users
        .filter_map(|u| match state.users.get(u) {
            Some(entry) => Some(entry.told_others.clone()),
            None => state.remote.get(u).cloned(),
        })
        .filter(|i| i.state != PresenceState::Offline)
        .collect()
}

fn unsubscribe(state: &mut State, target: &str, connection: u64) {
    if let Some(subs) = state.subscribers.get_mut(target) {
        subs.remove(&connection);
        if subs.is_empty() {
            state.subscribers.remove(target);
        }
    }
}
