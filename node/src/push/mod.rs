//! Push notifications for users who are not at a screen.
//!
//! ```text
//! sequencer ── Notice (after the commit) ──▶ decider ── push_queue rows ──▶ sender ──▶ Web Push / gateway
//!                                  presence, settings, endpoints            (coalesced per discussion)
//! ```
//!
//! A new message notifies: the other member of a dialog, people it mentions, the author of the
//! message it replies to, and the followers of an object discussion — as each one's level for
//! the discussion allows (`all`, `mentions`, `none`, or the default for its kind; a mute until
//! a time silences it). It is pushed only to users who have no connection or whose
//! connections are all away, never to users in do-not-disturb, and only to endpoints whose
//! device still has a session.
//!
//! The queue has one row per endpoint and discussion: what arrives while a row waits for its
//! coalescing window (or for its retry) is folded into it. The sender retries with backoff and
//! removes an endpoint the push service says is gone (404, 410).

mod webpush;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use veche_base::SharedClock;

use ed25519_dalek::Signer;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use veche_protocol::Reply;
use veche_protocol::Timestamp;
use veche_protocol::presence::{
    NotificationLevel, NotificationSetting, PushEndpointInfo, PushTarget,
};

pub(crate) use webpush::Vapid;

use crate::config::PushConfig;
use crate::outbound::public_address;
use veche_core::discussions::{Notice, PushOutlet};
use veche_core::live::presence::{Presence, Reachability};
use veche_store::{NewPush, PushEndpointRow, PushJob, Store, StoreError};

/// Notices waiting for the decider; beyond this, new ones are dropped (and logged).
const NOTICE_QUEUE: usize = 16_384;
/// Queued notifications sent per round.
const BATCH: i64 = 64;
/// The longest pause between two attempts.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;
/// How long a push service keeps an undelivered notification. Also the VAPID token's
/// lifetime, which RFC 8292 caps at 24 hours; 12 leaves room for clocks that run ahead.
const TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// What ed25519 signatures of gateway requests sign before the timestamp (not the webhooks'
/// context, so one cannot be replayed as the other).
pub(crate) const GATEWAY_CONTEXT: &str = "veche-push:";
/// Characters of the message put in a notification.
const EXCERPT_CHARS: usize = 200;

/// Why a push request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// The request is invalid; the text says why.
    #[error("{0}")]
    BadRequest(String),
    /// No such endpoint (or not the caller's).
    #[error("push endpoint not found")]
    NotFound,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the decider is asked to do, in order.
#[derive(Debug)]
enum Work {
    Notice(Notice),
    Forget {
        discussion: String,
        users: Vec<String>,
    },
    ForgetMessage {
        discussion: String,
        message_id: String,
    },
}

/// Why a user is notified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Mention,
    Reply,
    Message,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Mention => "mention",
            Self::Reply => "reply",
            Self::Message => "message",
        }
    }
}

/// Push notifications.
#[derive(Debug, Clone)]
pub(crate) struct Push {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: PushConfig,
    presence: Presence,
    vapid: Vapid,
    contact: String,
    key: ed25519_dalek::SigningKey,
    work: mpsc::Sender<Work>,
    receiver: Mutex<Option<mpsc::Receiver<Work>>>,
    wake: Notify,
    /// Users with at least one endpoint: everyone else is skipped without a query.
    with_endpoints: Mutex<HashSet<String>>,
    clock: SharedClock,
    metrics: crate::metrics::Metrics,
}

impl PushOutlet for Push {
    fn notify(&self, notice: Notice) {
        Push::notify(self, notice);
    }

    fn forget(&self, discussion: &str, users: &[String]) {
        Push::forget(self, discussion, users);
    }

    fn forget_message(&self, discussion: &str, message_id: &str) {
        Push::forget_message(self, discussion, message_id);
    }
}

impl Push {
    /// Now, by the node's clock.
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}

impl Push {
    // One service per argument: what the node wires together at start.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn new(
        store: Store,
        config: PushConfig,
        presence: Presence,
        vapid: Vapid,
        node: &str,
        key: ed25519_dalek::SigningKey,
        clock: SharedClock,
        metrics: crate::metrics::Metrics,
    ) -> Result<Self, StoreError> {
        let (work, receiver) = mpsc::channel(NOTICE_QUEUE);
        let with_endpoints = store.push().users_with_push().await?.into_iter().collect();
        let contact = if config.vapid_contact.is_empty() {
            format!("mailto:postmaster@{node}")
        } else {
            config.vapid_contact.clone()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                presence,
                vapid,
                contact,
                key,
                work,
                receiver: Mutex::new(Some(receiver)),
                wake: Notify::new(),
                with_endpoints: Mutex::new(with_endpoints),
                clock,
                metrics,
            }),
        })
    }

    /// Hands a new message to the decider; never waits (called by the sequencer).
    pub(crate) fn notify(&self, notice: Notice) {
        if !self.inner.config.enabled {
            return;
        }
        if let Err(e) = self.inner.work.try_send(Work::Notice(notice)) {
            tracing::warn!(error = %e, "push notices are arriving faster than they are handled; one is dropped");
        }
    }

    /// These users can no longer read `discussion`: what waits for them from it is dropped.
    pub(crate) fn forget(&self, discussion: &str, users: &[String]) {
        let work = Work::Forget {
            discussion: discussion.to_owned(),
            users: users.to_vec(),
        };
        self.must_send(work);
    }

    /// A message was deleted: a notification still waiting with its text is dropped.
    pub(crate) fn forget_message(&self, discussion: &str, message_id: &str) {
        self.must_send(Work::ForgetMessage {
            discussion: discussion.to_owned(),
            message_id: message_id.to_owned(),
        });
    }

    /// Queues work that must not be skipped: when the queue is full, a task waits for room
    /// (after the notices already queued, so the order holds).
    fn must_send(&self, work: Work) {
        if !self.inner.config.enabled {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(work)) = self.inner.work.try_send(work) {
            let tx = self.inner.work.clone();
            tokio::spawn(async move {
                let _ = tx.send(work).await;
            });
        }
    }

    /// Starts the decider and the sender; both stop at `stop`.
    pub(crate) fn spawn(&self, stop: CancellationToken) -> Vec<tokio::task::JoinHandle<()>> {
        let receiver = self
            .inner
            .receiver
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut tasks = Vec::new();
        if let Some(receiver) = receiver {
            tasks.push(tokio::spawn(decide(self.clone(), receiver, stop.clone())));
        }
        tasks.push(tokio::spawn(send(self.clone(), stop)));
        tasks
    }

    /// What a client needs to register.
    pub(crate) fn config_reply(&self) -> Reply {
        Reply::PushConfig {
            vapid_public_key: self.inner.vapid.public_key().to_owned(),
            gateways: self.inner.config.gateways.keys().cloned().collect(),
        }
    }

    /// Registers the push endpoint of `user`'s `device`.
    pub(crate) async fn register(
        &self,
        user: &str,
        device: &str,
        target: PushTarget,
    ) -> Result<Reply, PushError> {
        let (kind, target, p256dh, auth, pushkey) = match target {
            PushTarget::WebPush {
                endpoint,
                p256dh,
                auth,
            } => {
                self.check_endpoint(&endpoint).await?;
                webpush::subscription(&endpoint, &p256dh, &auth)
                    .map_err(|e| PushError::BadRequest(e.to_string()))?;
                ("web_push", endpoint, p256dh, auth, String::new())
            }
            PushTarget::Gateway { gateway, pushkey } => {
                if !self.inner.config.gateways.contains_key(&gateway) {
                    return Err(PushError::BadRequest(format!(
                        "no push gateway is named {gateway:?}; push_config lists them"
                    )));
                }
                if pushkey.is_empty() || pushkey.len() > 4096 {
                    return Err(PushError::BadRequest("pushkey is 1 to 4096 bytes".into()));
                }
                ("gateway", gateway, String::new(), String::new(), pushkey)
            }
        };
        let row = PushEndpointRow {
            id: uuid::Uuid::now_v7().simple().to_string(),
            user_id: user.to_owned(),
            device_id: device.to_owned(),
            kind: kind.to_owned(),
            target,
            p256dh,
            auth,
            pushkey,
            created_at: self.now_ms(),
        };
        // Into the set before the row exists: the set may hold users without endpoints
        // (never the reverse), so nobody with an endpoint is skipped.
        self.lock_users().insert(user.to_owned());
        let id = self.inner.store.push().register_push(&row).await?;
        Ok(Reply::PushRegistered { id })
    }

    /// Web Push endpoints are public push services: https, and not this machine, link-local
    /// or private addresses (loopback, also over http, only if the administrator allows it).
    async fn check_endpoint(&self, endpoint: &str) -> Result<(), PushError> {
        let bad = |m: String| PushError::BadRequest(m);
        if endpoint.len() > 2048 {
            return Err(bad("endpoint is at most 2048 bytes".into()));
        }
        let url = reqwest::Url::parse(endpoint)
            .map_err(|_| bad(format!("endpoint {endpoint:?} is not a URL")))?;
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| bad(format!("cannot resolve {host}: {e}")))?
            .collect();
        let loopback_ok = self.inner.config.allow_loopback_endpoints;
        let all_loopback = !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback());
        if url.scheme() != "https" && !(loopback_ok && all_loopback && url.scheme() == "http") {
            return Err(bad("a Web Push endpoint must be an https URL".into()));
        }
        for a in &addrs {
            if !public_address(a.ip(), loopback_ok) {
                return Err(bad(format!(
                    "{host} is {}, which is not a public push service",
                    a.ip()
                )));
            }
        }
        Ok(())
    }

    /// Removes one of `user`'s endpoints.
    pub(crate) async fn unregister(&self, user: &str, id: &str) -> Result<Reply, PushError> {
        if !self
            .inner
            .store
            .push()
            .remove_push_endpoint(Some(user), id)
            .await?
        {
            return Err(PushError::NotFound);
        }
        Ok(Reply::Done)
    }

    /// `user`'s endpoints.
    pub(crate) async fn list(&self, user: &str) -> Result<Reply, PushError> {
        let endpoints = self
            .inner
            .store
            .push()
            .push_endpoints(user)
            .await?
            .into_iter()
            .map(|e| PushEndpointInfo {
                id: e.id,
                device_id: e.device_id,
                target: if e.kind == "web_push" {
                    reqwest::Url::parse(&e.target)
                        .map(|u| u.origin().ascii_serialization())
                        .unwrap_or_default()
                } else {
                    e.target
                },
                kind: e.kind,
                created_at: Timestamp(e.created_at),
            })
            .collect();
        Ok(Reply::PushEndpoints { endpoints })
    }

    /// Sets `user`'s level for a discussion they may read (checked by the caller).
    pub(crate) async fn set_level(
        &self,
        user: &str,
        discussion: &str,
        level: NotificationLevel,
        muted_until: Option<Timestamp>,
    ) -> Result<Reply, PushError> {
        self.inner
            .store
            .push()
            .set_notification(
                user,
                discussion,
                level.as_str(),
                muted_until.map(Timestamp::as_millis),
            )
            .await?;
        Ok(Reply::Done)
    }

    /// `user`'s settings that differ from the default.
    pub(crate) async fn levels(&self, user: &str) -> Result<Reply, PushError> {
        let settings = self
            .inner
            .store
            .push()
            .notification_settings(user)
            .await?
            .into_iter()
            .map(|r| NotificationSetting {
                discussion: r.discussion_id,
                level: NotificationLevel::parse(&r.level).unwrap_or_default(),
                muted_until: r.muted_until.map(Timestamp),
            })
            .collect();
        Ok(Reply::NotificationSettings { settings })
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner
            .with_endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Who of a notice's people are to be pushed, and why.
    async fn recipients(&self, n: &Notice) -> Result<HashMap<String, Reason>, StoreError> {
        let mut reasons: HashMap<String, Reason> = HashMap::new();
        {
            let with = self.lock_users();
            for u in &n.audience {
                if with.contains(u) {
                    reasons.insert(u.clone(), Reason::Message);
                }
            }
            if let Some(u) = &n.replied_to
                && with.contains(u)
                && n.audience.contains(u)
            {
                reasons.insert(u.clone(), Reason::Reply);
            }
            for u in &n.mentions {
                if with.contains(u) {
                    reasons.insert(u.clone(), Reason::Mention);
                }
            }
        }
        reasons.remove(&n.author);
        if reasons.is_empty() {
            return Ok(HashMap::new());
        }
        // Presence first: most people are at a screen.
        let mut offline = Vec::new();
        reasons.retain(|u, _| match self.inner.presence.reachability(u) {
            Reachability::Active | Reachability::Dnd => false,
            Reachability::Away => true,
            Reachability::Offline => {
                offline.push(u.clone());
                true
            }
        });
        if !offline.is_empty() {
            let json = serde_json::to_string(&offline).unwrap_or_default();
            for u in self.inner.store.presence().dnd_users(&json).await? {
                reasons.remove(&u);
            }
        }
        if reasons.is_empty() {
            return Ok(HashMap::new());
        }
        let users: Vec<&String> = reasons.keys().collect();
        let json = serde_json::to_string(&users).unwrap_or_default();
        let now = self.now_ms();
        let mut levels: HashMap<String, (NotificationLevel, bool)> = HashMap::new();
        for s in self
            .inner
            .store
            .push()
            .notification_settings_for(&json, &n.discussion)
            .await?
        {
            let muted = s.muted_until.is_some_and(|t| t > now);
            let level = NotificationLevel::parse(&s.level).unwrap_or_default();
            levels.insert(s.user_id, (level, muted));
        }
        // Users without a setting have the default level, unmuted.
        Ok(reasons
            .into_iter()
            .filter(|(u, reason)| {
                let (level, muted) = levels.get(u).copied().unwrap_or_default();
                !muted && wants(level, &n.kind, *reason)
            })
            .collect())
    }
}

/// Whether `level` in a discussion of `kind` notifies for `reason`.
fn wants(level: NotificationLevel, kind: &str, reason: Reason) -> bool {
    match level {
        NotificationLevel::Nothing => false,
        NotificationLevel::All => true,
        NotificationLevel::Mentions => reason != Reason::Message,
        NotificationLevel::Default => wants_default(kind, reason),
    }
}

/// The default: every message of dialogs and followed object discussions; in groups, only
/// mentions and replies.
fn wants_default(kind: &str, reason: Reason) -> bool {
    kind != "group" || reason != Reason::Message
}

/// Takes notices, decides who is pushed, and queues the notifications; drops queued ones
/// of users who lost access and of deleted messages.
async fn decide(push: Push, mut work: mpsc::Receiver<Work>, stop: CancellationToken) {
    let mut batch = Vec::with_capacity(256);
    loop {
        let got = tokio::select! {
            () = stop.cancelled() => return,
            n = work.recv_many(&mut batch, 256) => n,
        };
        if got == 0 {
            return;
        }
        let mut queued = Vec::new();
        for w in batch.drain(..) {
            if let Work::Notice(n) = &w {
                match push.queue_for(n).await {
                    Ok(mut rows) => queued.append(&mut rows),
                    Err(e) => {
                        tracing::warn!(error = %e, discussion = %n.discussion, "cannot decide on push notifications; skipped")
                    }
                }
                continue;
            }
            // Queue what was decided before, so that the removal covers it.
            push.queue(std::mem::take(&mut queued)).await;
            if let Err(e) = push.drop_waiting(w).await {
                tracing::warn!(error = %e, "cannot drop queued push notifications");
            }
        }
        push.queue(queued).await;
    }
}

impl Push {
    /// Drops waiting notifications a `Forget` or `ForgetMessage` names.
    async fn drop_waiting(&self, work: Work) -> Result<(), StoreError> {
        let store = &self.inner.store;
        match work {
            Work::Forget { discussion, users } => {
                let json = serde_json::to_string(&users).unwrap_or_default();
                store.push().drop_pushes_for(&discussion, &json).await
            }
            Work::ForgetMessage {
                discussion,
                message_id,
            } => {
                store
                    .push()
                    .drop_pushes_of_message(&discussion, &message_id)
                    .await
            }
            Work::Notice(_) => Ok(()),
        }
    }

    async fn queue(&self, rows: Vec<NewPush>) {
        if rows.is_empty() {
            return;
        }
        if let Err(e) = self
            .inner
            .store
            .push()
            .queue_pushes(&rows, self.now_ms())
            .await
        {
            tracing::warn!(error = %e, count = rows.len(), "cannot queue push notifications; skipped");
            return;
        }
        self.inner.wake.notify_one();
    }
}

/// Resolves push service names to public addresses only, at every connection: a name that
/// passed the check at registration cannot be pointed at this network later.
#[derive(Debug)]
struct PublicOnly {
    allow_loopback: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| public_address(a.ip(), allow_loopback))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl Push {
    /// The queue rows for one notice.
    async fn queue_for(&self, n: &Notice) -> Result<Vec<NewPush>, StoreError> {
        let reasons = self.recipients(n).await?;
        if reasons.is_empty() {
            return Ok(Vec::new());
        }
        let users: Vec<&String> = reasons.keys().collect();
        let json = serde_json::to_string(&users).unwrap_or_default();
        let now = self.now_ms();
        let endpoints = self
            .inner
            .store
            .push()
            .live_push_endpoints(&json, now)
            .await?;
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let author_json = serde_json::to_string(&[&n.author]).unwrap_or_default();
        let author_name = self
            .inner
            .store
            .presence()
            .display_names(&author_json)
            .await?
            .into_iter()
            .next()
            .map(|(_, name)| name)
            .unwrap_or_default();
        let text: String = if self.inner.config.include_text {
            n.text.chars().take(EXCERPT_CHARS).collect()
        } else {
            String::new()
        };
        let due_at = now.saturating_add(i64::try_from(self.inner.config.coalesce_ms).unwrap_or(0));
        Ok(endpoints
            .into_iter()
            .filter_map(|e| {
                let reason = *reasons.get(&e.user_id)?;
                let payload = serde_json::json!({
                    "type": "message",
                    "reason": reason.as_str(),
                    "discussion": n.discussion,
                    "discussion_kind": n.kind,
                    "title": n.title,
                    "message_id": n.message_id,
                    "seq": n.seq,
                    "author": n.author,
                    "author_name": author_name,
                    "text": text,
                });
                Some(NewPush {
                    endpoint_id: e.id,
                    discussion_id: n.discussion.clone(),
                    payload: payload.to_string(),
                    urgent: n.kind == "dialog" || reason != Reason::Message,
                    due_at,
                })
            })
            .collect())
    }
}

/// Sends due notifications until `stop`.
async fn send(push: Push, stop: CancellationToken) {
    let timeout = Duration::from_secs(push.inner.config.timeout_secs);
    let builder = || {
        reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the endpoint itself, past the address policy.
            .no_proxy()
            .user_agent(concat!("veche/", env!("CARGO_PKG_VERSION")))
    };
    // Web Push endpoints come from users: public addresses only, checked at each connection.
    // Gateways come from the administrator and may well be on the company network.
    let clients = builder()
        .dns_resolver(Arc::new(PublicOnly {
            allow_loopback: push.inner.config.allow_loopback_endpoints,
        }))
        .build()
        .and_then(|web| {
            Ok(Clients {
                web,
                gateway: builder().build()?,
            })
        });
    let clients = match clients {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: push notifications are not sent");
            return;
        }
    };
    loop {
        if stop.is_cancelled() {
            return;
        }
        let now = push.now_ms();
        let jobs = match push.inner.store.push().due_push_jobs(now, BATCH).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the push queue");
                Vec::new()
            }
        };
        let full = jobs.len() as i64 == BATCH;
        join_all(jobs.into_iter().map(|j| push.attempt(&clients, j))).await;
        if full {
            continue;
        }
        let next = push.inner.store.push().next_push_due().await.ok().flatten();
        let pause = next.map_or(1000, |at| (at - push.now_ms()).clamp(0, 1000));
        tokio::select! {
            () = stop.cancelled() => return,
            () = push.inner.wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(u64::try_from(pause).unwrap_or(0))) => {}
        }
    }
}

/// The sender's HTTP clients.
struct Clients {
    web: reqwest::Client,
    gateway: reqwest::Client,
}

/// How one attempt ended.
/// Why a notification could not be handed to its push service: coarse, because the text is
/// kept in the push queue and shown to administrators.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Subscription(#[from] webpush::SubscriptionError),
    #[error("the endpoint's address is not public")]
    NotPublic,
    #[error("cannot build the push request: {0}")]
    Build(String),
    #[error("push gateway {0:?} is no longer configured")]
    NoGateway(String),
    #[error("the request timed out")]
    Timeout,
    #[error("could not connect")]
    Connect,
    #[error("the request failed")]
    Failed,
}

enum Outcome {
    Delivered,
    /// The push service says the subscription is gone.
    Gone,
    /// Worth trying again (after `retry_after_ms`, if the service said).
    Failed {
        error: String,
        retry_after_ms: Option<i64>,
    },
    /// Will never work (the payload is refused).
    Refused(String),
}

impl Push {
    async fn attempt(&self, clients: &Clients, job: PushJob) {
        let outcome = match self.request(clients, &job).await {
            Ok(response) => classify(response, job.endpoint.kind == "web_push"),
            Err(error) => Outcome::Failed {
                error: error.to_string(),
                retry_after_ms: None,
            },
        };
        let store = &self.inner.store;
        let recorded = match outcome {
            Outcome::Delivered => store.push().push_sent(job.id, job.count).await,
            Outcome::Gone => {
                tracing::info!(user = %job.endpoint.user_id, device = %job.endpoint.device_id, "push endpoint gone; removed");
                store
                    .push()
                    .remove_push_endpoint(None, &job.endpoint.id)
                    .await
                    .map(|_| ())
            }
            Outcome::Refused(error) => {
                self.inner.metrics.push_failed();
                tracing::warn!(user = %job.endpoint.user_id, %error, "push notification refused; dropped");
                store.push().push_dropped(job.id, job.count).await
            }
            Outcome::Failed {
                error,
                retry_after_ms,
            } => {
                self.inner.metrics.push_failed();
                if job.attempts + 1 >= i64::from(self.inner.config.attempts) {
                    tracing::warn!(user = %job.endpoint.user_id, %error, "push notification failed for good");
                    store.push().push_dropped(job.id, job.count).await
                } else {
                    let base = i64::try_from(self.inner.config.retry_base_ms).unwrap_or(1000);
                    let shift = u32::try_from(job.attempts.clamp(0, 20)).unwrap_or(20);
                    let wait = retry_after_ms
                        .unwrap_or_else(|| base.saturating_mul(1i64 << shift))
                        .min(MAX_BACKOFF_MS);
                    tracing::debug!(user = %job.endpoint.user_id, %error, "push failed; will retry");
                    store
                        .push()
                        .push_retry(job.id, self.now_ms().saturating_add(wait), &error)
                        .await
                }
            }
        };
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "cannot record a push attempt; it will be sent again");
        }
    }

    /// Sends one notification; the answer, or a coarse reason it could not be sent.
    async fn request(
        &self,
        clients: &Clients,
        job: &PushJob,
    ) -> Result<reqwest::Response, SendError> {
        let mut payload: serde_json::Value =
            serde_json::from_str(&job.payload).unwrap_or(serde_json::Value::Null);
        if let Some(map) = payload.as_object_mut() {
            map.insert("count".into(), job.count.into());
        }
        let built = if job.endpoint.kind == "web_push" {
            let sub = webpush::subscription(
                &job.endpoint.target,
                &job.endpoint.p256dh,
                &job.endpoint.auth,
            )?;
            // Names are checked by the resolver at each connection; an address in the URL
            // never reaches it.
            let literal = sub
                .endpoint
                .host()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok());
            if literal
                .is_some_and(|ip| !public_address(ip, self.inner.config.allow_loopback_endpoints))
            {
                return Err(SendError::NotPublic);
            }
            let body = payload.to_string();
            let request = webpush::request(
                &self.inner.vapid,
                &self.inner.contact,
                sub,
                TTL,
                body.as_bytes(),
            )
            .map_err(|e| SendError::Build(e.to_string()))?;
            let (parts, body) = request.into_parts();
            let mut headers = parts.headers;
            let urgency = if job.urgent { "high" } else { "normal" };
            headers.insert("urgency", http::HeaderValue::from_static(urgency));
            // The push service replaces an undelivered notification of the same topic: one
            // per discussion on a device that was off.
            if let Ok(topic) = http::HeaderValue::from_str(&topic_of(&job.discussion_id)) {
                headers.insert("topic", topic);
            }
            clients
                .web
                .post(parts.uri.to_string())
                .headers(headers)
                .body(body)
        } else {
            let Some(url) = self.inner.config.gateways.get(&job.endpoint.target) else {
                return Err(SendError::NoGateway(job.endpoint.target.clone()));
            };
            let body = serde_json::json!({
                "user": job.endpoint.user_id,
                "device_id": job.endpoint.device_id,
                "pushkey": job.endpoint.pushkey,
                "notification": payload,
            })
            .to_string();
            let ts = self.now_ms();
            let signed = format!("{GATEWAY_CONTEXT}{ts}.{body}");
            let signature = hex::encode(self.inner.key.sign(signed.as_bytes()).to_bytes());
            clients
                .gateway
                .post(url)
                .header("content-type", "application/json")
                .header("veche-event", "push.notification")
                .header("veche-delivery", format!("push-{}-{}", job.id, job.count))
                .header("veche-timestamp", ts.to_string())
                .header("veche-signature", format!("ed25519={signature}"))
                .body(body)
        };
        built.send().await.map_err(|e| {
            tracing::debug!(error = %e, "push request failed");
            if e.is_timeout() {
                SendError::Timeout
            } else if e.is_connect() {
                SendError::Connect
            } else {
                SendError::Failed
            }
        })
    }
}

fn classify(response: reqwest::Response, web_push: bool) -> Outcome {
    let status = response.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    match status.as_u16() {
        404 | 410 => Outcome::Gone,
        400 | 413 => Outcome::Refused(format!("the push service answered {status}")),
        // A push service that refuses our VAPID signature will refuse it again; a company
        // gateway may just not be set up yet, and is tried again.
        401 | 403 if web_push => Outcome::Refused(format!("the push service answered {status}")),
        _ => Outcome::Failed {
            error: format!("the push service answered {status}"),
            retry_after_ms: response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .map(|secs| secs.saturating_mul(1000)),
        },
    }
}

/// A Web Push `Topic` (at most 32 base64url characters) for a discussion.
fn topic_of(discussion: &str) -> String {
    use base64::Engine;
    let digest = Sha256::digest(discussion.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_levels_follow_the_discussion_kind() {
        assert!(wants_default("dialog", Reason::Message));
        assert!(wants_default("object", Reason::Message));
        assert!(!wants_default("group", Reason::Message));
        assert!(wants_default("group", Reason::Mention));
        assert!(wants_default("group", Reason::Reply));
        assert!(!wants(
            NotificationLevel::Nothing,
            "dialog",
            Reason::Mention
        ));
        assert!(wants(NotificationLevel::All, "group", Reason::Message));
        assert!(!wants(
            NotificationLevel::Mentions,
            "dialog",
            Reason::Message
        ));
        assert!(wants(NotificationLevel::Mentions, "object", Reason::Reply));
    }

    #[test]
    fn topics_fit_the_web_push_limit() {
        let t = topic_of("0192f0c3a1b27c3d8e9f0a1b2c3d4e5f@hq.example");
        assert_eq!(t.len(), 32);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(t, topic_of("other@hq.example"));
    }
}
