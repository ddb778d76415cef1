//! A client that stays connected: it reconnects with backoff and jitter, resumes its session,
//! catches up from its cursors, and sends the durable outbox exactly once, in order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::{Notify, broadcast, watch};
use veche_protocol::discussions::{Cursor, DiscussionEvent, DiscussionInfo, SendMessage};
use veche_protocol::{ErrorCode, Event, Reply, Request};

use crate::store::{ClientStore, OutboxEntry, OutboxState, Recipient, StoreError};
use crate::{ClientConfig, ConnectError, Connection, LoggedIn, RequestError, ResolveError};

const DEVICE_ID: &str = "device_id";
const TOKEN: &str = "session_token";
const LOGIN: &str = "login";
const SYNCED: &str = "synced";
/// When (Unix ms) the last attempt of any process of this profile to reach the node went
/// unanswered; removed by the next connection that succeeds.
const UNANSWERED_AT: &str = "unanswered_at";
/// How long an unanswered attempt counts as "the node is down": within it,
/// [`Client::known_down`] says so and a script's send is queued without trying again.
pub const UNANSWERED_MEMORY: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The node takes at most this many cursors per `sync`.
const MAX_CURSORS_PER_SYNC: usize = 1000;
/// Attempts at a message the node failed on internally before it is marked failed.
const INTERNAL_RETRIES: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether the client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected and authenticated.
    Online,
    /// Trying to (re)connect.
    Connecting,
    /// Not connected and not trying (not started, stopped, or the session is no longer valid).
    Offline,
}

/// What the client reports to the application.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// An event from the node, deduplicated against the cursors.
    Server(Event),
    /// A message of the outbox changed state.
    Outbox(OutboxEntry),
    /// The connection state changed.
    State(ConnectionState),
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Connecting failed.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The node refused or the request failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The client has no session: log in first.
    #[error("not logged in")]
    NotLoggedIn,
    /// The client is not connected right now.
    #[error("not connected")]
    Offline,
    /// Another process of this profile could not be waited for to release the outbox.
    #[error("outbox lock: {0}")]
    Lock(std::io::Error),
    /// The profile still has unsent messages of another user.
    #[error("this profile has unsent messages of {0}; use another profile folder")]
    OtherUser(String),
    /// A file to attach could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Attachment {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// More files than a message may carry.
    #[error("a message carries at most {MAX_FILES} files")]
    TooManyFiles,
}

/// The most files one message carries.
pub const MAX_FILES: usize = 10;

/// A client with a data folder of its own.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    store: ClientStore,
    device_id: String,
    state: watch::Sender<ConnectionState>,
    current: Mutex<Option<Arc<Connection>>>,
    events: broadcast::Sender<ClientEvent>,
    outbox_work: Notify,
    stop: watch::Sender<bool>,
    running: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The data folder: its `outbox.lock` is held while a process sends the outbox.
    dir: PathBuf,
}

impl ClientError {
    /// Whether the node could not be reached, or the connection was lost: the outbox keeps
    /// what was not sent, and a later attempt may succeed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Connect(e) => e.is_unreachable(),
            Self::Request(RequestError::Closed(_) | RequestError::Timeout) => true,
            _ => false,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// Opens (creating if needed) the client's data folder. Nothing connects yet.
    pub async fn open(dir: &Path, config: ClientConfig) -> Result<Self, ClientError> {
        let store = ClientStore::open(dir).await?;
        let device_id = match store.get(DEVICE_ID).await? {
            Some(id) => id,
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                store.set(DEVICE_ID, &id).await?;
                id
            }
        };
        let (events, _) = broadcast::channel(4096);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                store,
                device_id,
                state: watch::Sender::new(ConnectionState::Offline),
                current: Mutex::new(None),
                events,
                outbox_work: Notify::new(),
                stop: watch::Sender::new(false),
                running: Mutex::new(None),
                dir: dir.to_owned(),
            }),
        })
    }

    /// This client's device id, kept in its data folder.
    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// Logs in with a password and keeps the session token in the data folder.
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        device_name: &str,
    ) -> Result<LoggedIn, ClientError> {
        let conn = Connection::connect(&self.inner.config).await?;
        let logged = conn
            .login(login, password, &self.inner.device_id, device_name)
            .await?;
        let previous = self.inner.store.get(LOGIN).await?;
        if previous.as_deref().is_some_and(|p| p != logged.user.id) {
            let pending = self
                .inner
                .store
                .outbox()
                .await?
                .into_iter()
                .any(|e| e.state == OutboxState::Pending);
            if pending {
                conn.close().await;
                return Err(ClientError::OtherUser(previous.unwrap_or_default()));
            }
            self.inner.store.reset_for_new_user().await?;
        }
        self.inner.store.set(TOKEN, &logged.token).await?;
        self.inner.store.set(LOGIN, &logged.user.id).await?;
        self.inner.store.unset(UNANSWERED_AT).await?;
        // Like every connection of the profile, this one sends what was queued: messages
        // written while the session was no longer valid go out once the user is back.
        let flushed = flush(&self.inner, &conn).await;
        conn.close().await;
        flushed?;
        Ok(logged)
    }

    /// Forgets the session token kept in the data folder (after `logout`, or when the node
    /// cannot be told): this profile is then logged out. The outbox and the device id stay.
    pub async fn forget_session(&self) -> Result<(), ClientError> {
        Ok(self.inner.store.unset(TOKEN).await?)
    }

    /// Creates the node's first administrator with the one-time setup token the node printed,
    /// then logs in as them from this client's device.
    pub async fn setup(
        &self,
        setup_token: &str,
        login: &str,
        password: &str,
        display_name: &str,
        device_name: &str,
    ) -> Result<LoggedIn, ClientError> {
        let conn = Connection::connect(&self.inner.config).await?;
        conn.request(Request::Setup {
            token: setup_token.to_owned(),
            login: login.to_owned(),
            password: password.to_owned(),
            display_name: display_name.to_owned(),
            email: String::new(),
        })
        .await?;
        // The setup session served its purpose; this device gets its own.
        let _ = conn.request(Request::Logout).await;
        conn.close().await;
        self.login(login, password, device_name).await
    }

    /// The user this client is logged in as, if any.
    pub async fn user(&self) -> Result<Option<String>, ClientError> {
        Ok(self.inner.store.get(LOGIN).await?)
    }

    /// Starts staying connected in the background (idempotent).
    pub fn start(&self) {
        let mut running = lock(&self.inner.running);
        if running.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        self.inner.stop.send_replace(false);
        let inner = self.inner.clone();
        *running = Some(tokio::spawn(supervise(inner)));
    }

    /// Stops the background connection and closes the store.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let task = lock(&self.inner.running).take();
        if let Some(conn) = lock(&self.inner.current).take() {
            conn.quic().close(0u32.into(), b"client stopping");
        }
        if let Some(task) = task {
            let _ = task.await;
        }
        self.inner.store.close().await;
    }

    /// The connection state, as it changes.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// Events for the application: server events (deduplicated), outbox changes, state.
    pub fn subscribe(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    /// Writes a message to the outbox (durably) and lets the sender take it. It goes out now if
    /// online, or after the connection returns — also after a restart of this program.
    pub async fn send(
        &self,
        discussion: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<OutboxEntry, ClientError> {
        self.enqueue(Recipient::Discussion(discussion), text, reply_to)
            .await
    }

    /// Like [`Client::send`], to what the user named: a discussion id, or else a user or a
    /// discussion title, which is resolved once the node is reachable (a user's name opens the
    /// dialog with them). Nothing is asked of the node here, so it works offline; a name that
    /// resolves to nothing marks the message failed with the reason.
    pub async fn send_to(
        &self,
        to: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<OutboxEntry, ClientError> {
        let to = if crate::is_discussion_id(to) {
            Recipient::Discussion(to)
        } else {
            Recipient::Name(to)
        };
        self.enqueue(to, text, reply_to).await
    }

    /// Like [`Client::send_to`], with files attached: each is read now for its size and
    /// SHA-256, and uploaded when the message goes out (an interrupted upload continues where
    /// the node stopped confirming, also after a restart of this program). A file changed
    /// before it is uploaded makes the node refuse the message.
    pub async fn send_files_to(
        &self,
        to: &str,
        text: &str,
        files: &[PathBuf],
    ) -> Result<OutboxEntry, ClientError> {
        if files.len() > MAX_FILES {
            return Err(ClientError::TooManyFiles);
        }
        let mut attachments = Vec::with_capacity(files.len());
        for path in files {
            let failed = |source| ClientError::Attachment {
                path: path.clone(),
                source,
            };
            let path = std::path::absolute(path).map_err(failed)?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| failed(std::io::Error::other("not a file name")))?;
            let file = tokio::fs::File::open(&path).await.map_err(failed)?;
            if !file.metadata().await.map_err(failed)?.is_file() {
                return Err(failed(std::io::Error::other("not a regular file")));
            }
            let (sha256, size) = crate::sha256_of(file).await.map_err(failed)?;
            attachments.push(crate::store::NewAttachment {
                path,
                name,
                size,
                sha256,
            });
        }
        let to = if crate::is_discussion_id(to) {
            Recipient::Discussion(to)
        } else {
            Recipient::Name(to)
        };
        self.enqueue_with(to, text, None, &attachments).await
    }

    async fn enqueue(
        &self,
        to: Recipient<'_>,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<OutboxEntry, ClientError> {
        self.enqueue_with(to, text, reply_to, &[]).await
    }

    async fn enqueue_with(
        &self,
        to: Recipient<'_>,
        text: &str,
        reply_to: Option<&str>,
        files: &[crate::store::NewAttachment],
    ) -> Result<OutboxEntry, ClientError> {
        let entry = self
            .inner
            .store
            .enqueue(&to, text, reply_to, None, files)
            .await?;
        let _ = self.inner.events.send(ClientEvent::Outbox(entry.clone()));
        self.inner.outbox_work.notify_one();
        Ok(entry)
    }

    /// Whether the node is known to be down: an attempt of any process of this profile went
    /// unanswered within the last [`UNANSWERED_MEMORY`], and none has connected since.
    pub async fn known_down(&self) -> Result<bool, ClientError> {
        let Some(at) = self.inner.store.get(UNANSWERED_AT).await? else {
            return Ok(false);
        };
        let Ok(at) = at.parse::<i64>() else {
            return Ok(false);
        };
        let age = veche_protocol::Timestamp::now()
            .as_millis()
            .saturating_sub(at);
        Ok(u128::try_from(age).is_ok_and(|age| age < UNANSWERED_MEMORY.as_millis()))
    }

    /// Every message of the outbox, oldest first, with its state.
    pub async fn outbox(&self) -> Result<Vec<OutboxEntry>, ClientError> {
        Ok(self.inner.store.outbox().await?)
    }

    /// The current connection, for what `request` does not cover (file transfers).
    pub fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        lock(&self.inner.current)
            .clone()
            .ok_or(ClientError::Offline)
    }

    /// Sends a request on the current connection.
    pub async fn request(&self, request: Request) -> Result<Reply, ClientError> {
        let conn = lock(&self.inner.current)
            .clone()
            .ok_or(ClientError::Offline)?;
        Ok(conn.request(request).await?)
    }

    /// The discussion list, most recent activity first.
    pub async fn discussions(&self) -> Result<Vec<DiscussionInfo>, ClientError> {
        match self.request(Request::ListDiscussions).await? {
            Reply::Discussions { discussions } => Ok(discussions),
            _ => Err(RequestError::UnexpectedReply("list_discussions").into()),
        }
    }

    /// A page of history: events before `before` (the latest when `None`), oldest first, and
    /// whether older ones exist.
    pub async fn history(
        &self,
        discussion: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<(Vec<DiscussionEvent>, bool), ClientError> {
        let request = Request::History {
            discussion: discussion.to_owned(),
            before,
            limit,
        };
        match self.request(request).await? {
            Reply::Events { events, more } => Ok((events, more)),
            _ => Err(RequestError::UnexpectedReply("history").into()),
        }
    }

    /// Replaces the text of one's own message.
    pub async fn edit(
        &self,
        discussion: &str,
        message_id: &str,
        text: &str,
    ) -> Result<(), ClientError> {
        self.request(Request::Edit {
            discussion: discussion.to_owned(),
            message_id: message_id.to_owned(),
            text: text.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Deletes a message.
    pub async fn delete(&self, discussion: &str, message_id: &str) -> Result<(), ClientError> {
        self.request(Request::Delete {
            discussion: discussion.to_owned(),
            message_id: message_id.to_owned(),
        })
        .await
        .map(drop)
    }

    /// Adds or removes a reaction (an emoji or a `:shortcode:`).
    pub async fn react(
        &self,
        discussion: &str,
        message_id: &str,
        emoji: &str,
        add: bool,
    ) -> Result<(), ClientError> {
        self.request(Request::React {
            discussion: discussion.to_owned(),
            message_id: message_id.to_owned(),
            emoji: emoji.to_owned(),
            add,
        })
        .await
        .map(drop)
    }

    /// Moves the read marker of a discussion forward.
    pub async fn mark_read(&self, discussion: &str, seq: u64) -> Result<(), ClientError> {
        self.request(Request::MarkRead {
            discussion: discussion.to_owned(),
            seq,
        })
        .await
        .map(drop)
    }

    /// Connects once, for the requests of one command (scripts): resumes the stored session,
    /// then sends the outbox, so that what was queued goes out first.
    pub async fn connect_once(&self) -> Result<Arc<Connection>, ClientError> {
        self.connect_once_within(self.inner.config.timeout).await
    }

    /// [`Client::connect_once`], giving up on reaching the node after `budget`.
    pub async fn connect_once_within(
        &self,
        budget: Duration,
    ) -> Result<Arc<Connection>, ClientError> {
        let conn = connect(&self.inner, budget).await?;
        flush(&self.inner, &conn).await?;
        Ok(conn)
    }
}

/// Takes the profile's outbox lock, waiting while another process (or task) holds it: it is
/// held only while the outbox is being sent, so two commands of one profile take turns.
async fn lock_outbox(dir: &Path) -> Result<std::fs::File, ClientError> {
    let file = crate::private::private_file()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("outbox.lock"))
        .map_err(ClientError::Lock)?;
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| ClientError::Lock(std::io::Error::other(e)))?
        .map_err(ClientError::Lock)
}

/// Sends every pending message of the outbox on `conn`, holding the outbox lock. Stops early,
/// leaving the rest pending, when the connection fails.
async fn flush(inner: &Inner, conn: &Connection) -> Result<(), ClientError> {
    if !inner.store.has_pending().await? {
        return Ok(());
    }
    let _lock = lock_outbox(&inner.dir).await?;
    send_pending(inner, conn).await;
    Ok(())
}

fn set_state(inner: &Inner, state: ConnectionState) {
    if *inner.state.borrow() != state {
        inner.state.send_replace(state);
        let _ = inner.events.send(ClientEvent::State(state));
    }
}

/// Connects, resumes, catches up and serves until the connection ends; then waits and again.
async fn supervise(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *stop.borrow() {
            break;
        }
        set_state(&inner, ConnectionState::Connecting);
        let connected = tokio::select! {
            c = connect(&inner, inner.config.timeout) => c,
            _ = stop.changed() => break,
        };
        match connected {
            Ok(conn) => {
                *lock(&inner.current) = Some(conn.clone());
                set_state(&inner, ConnectionState::Online);
                tokio::select! {
                    caught_up = serve(&inner, &conn) => {
                        // Only a connection that got as far as serving resets the backoff, so a
                        // node that accepts and then fails cannot make the client spin.
                        if caught_up {
                            backoff = FIRST_BACKOFF;
                        }
                    }
                    _ = stop.changed() => {}
                }
                lock(&inner.current).take();
                conn.quic().close(0u32.into(), b"");
            }
            Err(ClientError::NotLoggedIn) => break,
            Err(ClientError::Request(e))
                if matches!(
                    e.code(),
                    Some(ErrorCode::InvalidCredentials | ErrorCode::AccountLocked)
                ) =>
            {
                tracing::warn!(error = %e, "the session is no longer valid; log in again");
                break;
            }
            Err(e) => tracing::debug!(error = %e, "connect failed"),
        }
        if *stop.borrow() {
            break;
        }
        set_state(&inner, ConnectionState::Connecting);
        // Exponential backoff with jitter, so that many clients do not return at once.
        let jitter = rand::rng().random_range(0.5..1.5);
        let wait = backoff.mul_f64(jitter);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
    }
    set_state(&inner, ConnectionState::Offline);
}

/// Connects and resumes the stored session, giving up on reaching the node after `budget`.
/// Remembers an attempt nobody answered (see [`Client::known_down`]), and forgets it when one
/// succeeds.
async fn connect(inner: &Inner, budget: Duration) -> Result<Arc<Connection>, ClientError> {
    let token = inner
        .store
        .get(TOKEN)
        .await?
        .ok_or(ClientError::NotLoggedIn)?;
    let connected = match tokio::time::timeout(budget, Connection::connect(&inner.config)).await {
        Ok(connected) => connected,
        Err(_) => Err(ConnectError::Timeout),
    };
    let conn = match connected {
        Ok(conn) => conn,
        Err(e) => {
            if matches!(e, ConnectError::Timeout) {
                let now = veche_protocol::Timestamp::now().as_millis().to_string();
                inner.store.set(UNANSWERED_AT, &now).await?;
            }
            return Err(e.into());
        }
    };
    inner.store.unset(UNANSWERED_AT).await?;
    conn.resume(&token, &inner.device_id).await?;
    Ok(Arc::new(conn))
}

/// One connection's life: catch up, then forward events and drive the outbox until it ends.
async fn serve(inner: &Arc<Inner>, conn: &Arc<Connection>) -> bool {
    if let Err(e) = catch_up(inner, conn).await {
        tracing::debug!(error = %e, "catch-up failed");
        return false;
    }
    let outbox = drive_outbox(inner.clone(), conn.clone());
    let events = async {
        while let Some(event) = conn.next_event().await {
            if apply(inner, conn, event).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = outbox => {}
        () = events => {}
    }
    true
}

/// Learns discussions created while away and fetches everything missed since the cursors.
async fn catch_up(inner: &Inner, conn: &Connection) -> Result<(), ClientError> {
    let known: std::collections::HashMap<String, i64> =
        inner.store.cursors().await?.into_iter().collect();
    // On the very first connection, history is read on demand and live events start now;
    // afterwards a discussion that appeared while away is fetched from its beginning.
    let first_time = inner.store.get(SYNCED).await?.is_none();
    if let Reply::Discussions { discussions } = conn.request(Request::ListDiscussions).await? {
        let listed: std::collections::HashSet<&str> =
            discussions.iter().map(|d| d.id.as_str()).collect();
        for gone in known.keys().filter(|k| !listed.contains(k.as_str())) {
            inner.store.forget_cursor(gone).await?;
        }
        for d in &discussions {
            if !known.contains_key(&d.id) {
                inner
                    .store
                    .advance_cursor(&d.id, if first_time { d.last_seq } else { 0 })
                    .await?;
            }
        }
    }
    let cursors: Vec<Cursor> = inner
        .store
        .cursors()
        .await?
        .into_iter()
        .map(|(discussion, seq)| Cursor {
            discussion,
            seq: u64::try_from(seq).unwrap_or(0),
        })
        .collect();
    for chunk in cursors.chunks(MAX_CURSORS_PER_SYNC) {
        sync(inner, conn, chunk.to_vec()).await?;
    }
    inner.store.set(SYNCED, "1").await?;
    Ok(())
}

/// Fetches and delivers everything after `cursors`, calling again while the node has more.
async fn sync(
    inner: &Inner,
    conn: &Connection,
    mut cursors: Vec<Cursor>,
) -> Result<(), ClientError> {
    loop {
        let Reply::Events { events, more } = conn
            .request(Request::Sync {
                cursors: cursors.clone(),
            })
            .await?
        else {
            return Ok(());
        };
        for event in events {
            if let Some(c) = cursors
                .iter_mut()
                .find(|c| c.discussion == event.discussion)
            {
                c.seq = c.seq.max(event.seq);
            }
            deliver(inner, event).await?;
        }
        if !more {
            return Ok(());
        }
    }
}

/// Applies one discussion event unless it was already seen; forwards it.
async fn deliver(inner: &Inner, event: DiscussionEvent) -> Result<(), ClientError> {
    let cursor = inner.store.cursor(&event.discussion).await?.unwrap_or(0);
    if event.seq <= cursor {
        return Ok(());
    }
    inner
        .store
        .advance_cursor(&event.discussion, event.seq)
        .await?;
    let _ = inner
        .events
        .send(ClientEvent::Server(Event::Discussion { event }));
    Ok(())
}

async fn apply(inner: &Inner, conn: &Connection, event: Event) -> Result<(), ClientError> {
    match event {
        Event::Discussion { event } => {
            let cursor = inner.store.cursor(&event.discussion).await?;
            // A gap (events this client has not seen) is filled by a sync first.
            if let Some(cursor) = cursor
                && event.seq > cursor + 1
            {
                let gap = vec![Cursor {
                    discussion: event.discussion.clone(),
                    seq: cursor,
                }];
                sync(inner, conn, gap).await?;
            }
            deliver(inner, event).await
        }
        Event::DiscussionRemoved { discussion } => {
            inner.store.forget_cursor(&discussion).await?;
            let _ = inner
                .events
                .send(ClientEvent::Server(Event::DiscussionRemoved { discussion }));
            Ok(())
        }
        other => {
            let _ = inner.events.send(ClientEvent::Server(other));
            Ok(())
        }
    }
}

/// Sends the outbox whenever it has pending messages, until the connection fails. The outbox
/// lock is taken only while sending, so other processes of the profile (`veche send` beside
/// `veche chat` or `veche tail`) send theirs in turn.
async fn drive_outbox(inner: Arc<Inner>, conn: Arc<Connection>) {
    loop {
        match inner.store.has_pending().await {
            Ok(false) => {}
            Ok(true) => {
                let _lock = match lock_outbox(&inner.dir).await {
                    Ok(lock) => lock,
                    Err(e) => {
                        tracing::warn!(error = %e, "outbox not sent");
                        return;
                    }
                };
                if !send_pending(&inner, &conn).await {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox unreadable");
                return;
            }
        }
        // Woken by `send`, or after a while for messages another process of this profile
        // (say `veche send` beside `veche chat`) wrote.
        tokio::select! {
            () = inner.outbox_work.notified() => {}
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// Sends pending messages one at a time, oldest first, resolving the names they were written
/// to; returns `true` once none is left, `false` when the connection (or the store) failed.
/// The caller holds the outbox lock.
async fn send_pending(inner: &Inner, conn: &Connection) -> bool {
    let mut internal_failures = 0u32;
    loop {
        let next = match inner.store.next_pending().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "outbox unreadable");
                return false;
            }
        };
        let Some(mut entry) = next else {
            return true;
        };
        if entry.discussion.is_empty() {
            let target = entry.target.clone().unwrap_or_default();
            let me = match inner.store.get(LOGIN).await {
                Ok(me) => me.unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = %e, "outbox unreadable");
                    return false;
                }
            };
            let resolved = match conn.resolve(&me, &target, true).await {
                Ok(id) => inner.store.resolve(entry.id, &id).await.map(|()| id),
                Err(ResolveError::Request(e)) => {
                    if !refused_for_good(&e) {
                        tracing::debug!(error = %e, "outbox paused until the connection returns");
                        return false;
                    }
                    let (state, result) = fail(inner, entry.id, e.to_string()).await;
                    if !report(inner, entry, state, result) {
                        return false;
                    }
                    continue;
                }
                Err(e) => {
                    // Nobody has that name: the message cannot go anywhere.
                    let (state, result) = fail(inner, entry.id, e.to_string()).await;
                    if !report(inner, entry, state, result) {
                        return false;
                    }
                    continue;
                }
            };
            match resolved {
                Ok(id) => entry.discussion = id,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox state not saved");
                    return false;
                }
            }
        }
        let files = match upload_attachments(inner, conn, &entry).await {
            Ok(files) => files,
            Err(Attach::Paused) => return false,
            Err(Attach::Refused(reason)) => {
                let (state, result) = fail(inner, entry.id, reason).await;
                if !report(inner, entry, state, result) {
                    return false;
                }
                continue;
            }
        };
        let request = Request::Send(SendMessage {
            files,
            discussion: entry.discussion.clone(),
            client_msg_id: entry.client_msg_id.clone(),
            text: entry.text.clone(),
            reply_to: entry.reply_to.clone(),
            data: entry
                .data
                .as_deref()
                .and_then(|d| serde_json::from_str(d).ok()),
            actions: Vec::new(),
        });
        let (state, result) = match conn.request(request).await {
            Ok(Reply::Sent { message_id, seq }) => {
                let r = inner.store.mark_sent(entry.id, &message_id, seq).await;
                (OutboxState::Sent { message_id, seq }, r)
            }
            Ok(other) => fail(inner, entry.id, format!("unexpected reply {other:?}")).await,
            Err(RequestError::Server(body))
                if matches!(body.code, ErrorCode::Internal | ErrorCode::Unknown) =>
            {
                // The node failed, not the message: try again (same client_msg_id), then give up.
                internal_failures += 1;
                if internal_failures < INTERNAL_RETRIES {
                    tokio::time::sleep(Duration::from_millis(500) * internal_failures).await;
                    continue;
                }
                fail(inner, entry.id, body.message).await
            }
            Err(RequestError::Server(body)) if body.code != ErrorCode::Unavailable => {
                // Refused for good: record why, and go on with the next one.
                fail(inner, entry.id, body.message).await
            }
            Err(e @ RequestError::TooLarge { .. }) => fail(inner, entry.id, e.to_string()).await,
            Err(RequestError::ConnectionFailed(body)) if body.code == ErrorCode::FrameTooLarge => {
                // The node closed the connection over this message (its frame limit is lower).
                let (state, r) = fail(inner, entry.id, body.message).await;
                report(inner, entry, state, r);
                return false;
            }
            Err(RequestError::Timeout) => {
                // Same client_msg_id next time: a late success is not duplicated.
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "outbox paused until the connection returns");
                return false;
            }
        };
        internal_failures = 0;
        if !report(inner, entry, state, result) {
            return false;
        }
    }
}

/// Whether a request failed because the node refused it (so the message fails), rather than
/// because the node or the connection is unavailable (so it waits).
fn refused_for_good(e: &RequestError) -> bool {
    match e {
        RequestError::Server(body) => !matches!(
            body.code,
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::Unknown
        ),
        RequestError::TooLarge { .. } | RequestError::UnexpectedReply(_) => true,
        _ => false,
    }
}

/// Tells the application that `entry` changed state, once the change is saved; `false` if it
/// could not be saved.
fn report(
    inner: &Inner,
    entry: OutboxEntry,
    state: OutboxState,
    saved: Result<(), StoreError>,
) -> bool {
    if let Err(e) = saved {
        tracing::warn!(error = %e, "outbox state not saved");
        return false;
    }
    let _ = inner
        .events
        .send(ClientEvent::Outbox(OutboxEntry { state, ..entry }));
    true
}

async fn fail(inner: &Inner, id: i64, reason: String) -> (OutboxState, Result<(), StoreError>) {
    let r = inner.store.mark_failed(id, &reason).await;
    (OutboxState::Failed { reason }, r)
}

/// Why the files of a message could not be uploaded.
enum Attach {
    /// The connection (or the store) failed: try again on the next one.
    Paused,
    /// The node refused a file, or it cannot be read: the message fails with this reason.
    Refused(String),
}

/// Uploads the files of `entry` not yet on the node, continuing interrupted uploads; returns
/// the node's file ids in order.
async fn upload_attachments(
    inner: &Inner,
    conn: &Connection,
    entry: &OutboxEntry,
) -> Result<Vec<String>, Attach> {
    let mut ids = Vec::with_capacity(entry.files.len());
    for f in &entry.files {
        if let Some(id) = &f.file_id {
            ids.push(id.clone());
            continue;
        }
        let file = upload_one(inner, conn, entry, f).await?;
        if let Err(e) = inner.store.set_file(entry.id, f.position, &file).await {
            tracing::warn!(error = %e, "outbox state not saved");
            return Err(Attach::Paused);
        }
        ids.push(file);
    }
    Ok(ids)
}

async fn upload_one(
    inner: &Inner,
    conn: &Connection,
    entry: &OutboxEntry,
    f: &crate::store::OutboxFile,
) -> Result<String, Attach> {
    let request_failed = |e: RequestError| {
        if refused_for_good(&e) {
            Attach::Refused(format!("{}: {e}", f.name))
        } else {
            Attach::Paused
        }
    };
    let saved = |r: Result<(), StoreError>| {
        r.map_err(|e| {
            tracing::warn!(error = %e, "outbox state not saved");
            Attach::Paused
        })
    };
    // An upload declared earlier continues, unless the node no longer has it (expired).
    let earlier = match &f.upload_id {
        Some(id) => match conn.upload_status(id).await {
            Ok(upload) => Some(upload),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => {
                saved(inner.store.set_upload(entry.id, f.position, None).await)?;
                None
            }
            Err(e) => return Err(request_failed(e)),
        },
        None => None,
    };
    let upload = match earlier {
        Some(upload) => upload,
        None => {
            let new = veche_protocol::files::NewUpload {
                discussion: entry.discussion.clone(),
                name: f.name.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            };
            let upload = conn.create_upload(new).await.map_err(request_failed)?;
            saved(
                inner
                    .store
                    .set_upload(entry.id, f.position, Some(&upload.id))
                    .await,
            )?;
            upload
        }
    };
    if let Some(file) = upload.file {
        return Ok(file.id);
    }
    let unreadable =
        |e: std::io::Error| Attach::Refused(format!("cannot read {}: {e}", f.path.display()));
    let mut source = tokio::fs::File::open(&f.path).await.map_err(unreadable)?;
    tokio::io::AsyncSeekExt::seek(&mut source, std::io::SeekFrom::Start(upload.confirmed))
        .await
        .map_err(unreadable)?;
    match conn
        .send_upload(&upload.id, upload.confirmed, source, |_| {})
        .await
    {
        Ok(file) => Ok(file.id),
        Err(crate::TransferError::Refused(body)) if body.code != ErrorCode::Unavailable => {
            Err(Attach::Refused(format!("{}: {}", f.name, body.message)))
        }
        Err(crate::TransferError::Request(e)) => Err(request_failed(e)),
        Err(crate::TransferError::Io(e)) if conn.quic().close_reason().is_none() => {
            // The connection stands, so reading the file failed.
            Err(unreadable(e))
        }
        Err(e) => {
            tracing::debug!(error = %e, "upload paused until the connection returns");
            Err(Attach::Paused)
        }
    }
}
