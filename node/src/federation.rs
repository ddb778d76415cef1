//! Federation in the node: link administration (offer, accept, confirm, list, revoke), the
//! libp2p transport of `veche-federation`, and the storage it delivers from and into.
//!
//! The node's identity key is its federation key and libp2p identity. A link is active once
//! both administrators have signed it; only active links' peers may connect. Ending a link
//! (revocation by either side, or expiry) drops what was queued for the peer and tells it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use veche_base::SharedClock;

use veche_federation::Multiaddr;
use veche_federation::grant::{
    Change, DirectoryScope, GRANT_FORMAT, Grant, GrantError, Notice, Offer, Party, Relationship,
    Scope, SignedNotice, Terms,
};
use veche_federation::keys::{Hash, NodeKey};
use veche_federation::link::CONFIRM_WITHIN;
use veche_federation::net::{self, Handle, LinkError, LinkStatus, NetConfig, Notification};
use veche_federation::store::{Incoming, LinkStore, Outgoing, Refused};
use veche_federation::wire::{self, Item};
use veche_protocol::Timestamp;
use veche_protocol::admin::{LinkInfo, LinkScope};
use veche_protocol::discussions::ObjectRef;
use veche_protocol::ids::NodeName;
use veche_protocol::presence::{PresenceInfo, PresenceState};

use crate::config::FederationConfig;
use crate::files::{FileError, Files};
use veche_core::discussions::links::Links;
use veche_core::discussions::{DiscussionError, Discussions, FedOutcome};
use veche_core::live::presence::Presence;
use veche_store::{AuditRecord, LinkRow, NewLink, Renewal, Store, StoreError};

/// Why a link command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FederationError {
    /// Federation is switched off.
    #[error("federation is disabled on this node ([federation] enabled = false)")]
    Disabled,
    /// Link commands sign with the node's key: they need the running node.
    #[error("link commands need the running node (start it with `veche serve`)")]
    NotRunning,
    /// The offer, grant or notice was refused.
    #[error("{0}")]
    Grant(#[from] GrantError),
    /// The request makes no sense.
    #[error("{0}")]
    BadRequest(String),
    /// No such link.
    #[error("no link {0}")]
    NotFound(String),
    /// The link exists already.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transport refused the link.
    #[error("{0}")]
    Link(#[from] LinkError),
}

/// Why the federation transport could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("cannot read the links: {0}")]
    Store(#[from] StoreError),
    #[error("federation.listen {0:?}: {1}")]
    Listen(String, <Multiaddr as std::str::FromStr>::Err),
    #[error(transparent)]
    Start(#[from] veche_federation::net::StartError),
}

/// The federation service.
#[derive(Debug, Clone)]
pub(crate) struct Federation {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    node: NodeName,
    /// `None` for offline admin commands, which have no key to sign with.
    key: Option<Arc<NodeKey>>,
    config: FederationConfig,
    handle: Transport,
    discussions: Discussions,
    /// Users of linked nodes are shown here; ours go out.
    presence: Presence,
    /// Linked nodes fetch files attached to shared discussions' messages.
    files: Files,
    /// Answers to linked nodes' file requests under way at most.
    file_answers: Arc<tokio::sync::Semaphore>,
    /// Received items wait to be applied.
    received: tokio::sync::Notify,
    clock: SharedClock,
}

/// What an offer says: a new link, or a renewal of an active one.
pub(crate) struct OfferTerms<'a> {
    /// `branch`, `partner`, or empty (partner; a renewal keeps the link's).
    pub(crate) relationship: &'a str,
    pub(crate) days: u32,
    pub(crate) scope: &'a LinkScope,
    /// The link renewed.
    pub(crate) renews: Option<&'a str>,
}

/// The services federation works with.
pub(crate) struct Services {
    pub(crate) discussions: Discussions,
    pub(crate) presence: Presence,
    pub(crate) files: Files,
}

/// The running transport, once started. The discussions and files services reach linked
/// nodes through it (as [`Links`]); it is bound when [`Federation::start`] has started the
/// transport, and until then (and in offline commands) a link is not reachable.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transport(Arc<Mutex<Option<Handle>>>);

impl Transport {
    fn get(&self) -> Option<Handle> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, handle: Handle) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
    }
}

impl Links for Transport {
    fn wake(&self, link: &str) {
        if let Some(h) = self.get() {
            h.wake(link);
        }
    }

    fn query<'a>(
        &'a self,
        link: &'a str,
        query: wire::Query,
    ) -> BoxFuture<'a, Result<Vec<wire::Profile>, net::QueryError>> {
        Box::pin(async move {
            let handle = self.get().ok_or(net::QueryError::Stopped)?;
            handle.query(link, query).await
        })
    }

    fn fetch<'a>(
        &'a self,
        link: &'a str,
        discussion: &'a str,
        sha256: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<wire::Chunk, net::QueryError>> {
        Box::pin(async move {
            let handle = self.get().ok_or(net::QueryError::Stopped)?;
            handle.fetch(link, discussion, sha256, offset).await
        })
    }

    fn open_object<'a>(
        &'a self,
        link: &'a str,
        user: &'a str,
        object: (&'a str, &'a str, &'a str),
        held: Option<wire::Access>,
    ) -> BoxFuture<'a, Result<(String, wire::Access), net::QueryError>> {
        Box::pin(async move {
            let handle = self.get().ok_or(net::QueryError::Stopped)?;
            handle.open_object(link, user, object, held).await
        })
    }
}

/// This node's users who matter to a linked node.
type Audience = std::collections::HashSet<String>;

/// Linked nodes' file requests answered at once at most (each holds up to a 1 MiB piece).
const FILE_ANSWERS: usize = 16;

/// How often the users of linked nodes who may read this node's object discussions are
/// decided again.
const READERS_RECHECK: Duration = Duration::from_secs(60);

/// How often who matters to a link is looked up again.
const AUDIENCE_REFRESH: Duration = Duration::from_secs(3);

fn carries_presence(row: &LinkRow) -> bool {
    row.state == "active"
        && serde_json::from_str::<Scope>(&row.scope).is_ok_and(|s: Scope| s.presence)
}

/// The changes of `audience`'s users, as they travel.
fn for_link(infos: &[PresenceInfo], audience: &Audience) -> Vec<wire::Presence> {
    infos
        .iter()
        .filter(|i| audience.contains(&i.user))
        .map(|i| wire::Presence {
            user: i.user.clone(),
            state: match i.state {
                PresenceState::Available => "available",
                PresenceState::Away => "away",
                PresenceState::Dnd => "dnd",
                _ => "offline",
            }
            .to_owned(),
            status_text: i.status_text.clone(),
        })
        .collect()
}

/// A linked node's report of one of its users (the transport checked whose).
fn from_wire(p: wire::Presence) -> PresenceInfo {
    let state = match p.state.as_str() {
        "available" => PresenceState::Available,
        "away" => PresenceState::Away,
        "dnd" => PresenceState::Dnd,
        _ => PresenceState::Offline,
    };
    let status_text = p
        .status_text
        .chars()
        .filter(|c| !c.is_control())
        .take(100)
        .collect();
    PresenceInfo {
        user: p.user,
        state,
        status_text,
    }
}

impl Federation {
    /// Now, by the node's clock.
    fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn audit(
        &self,
        actor: &str,
        action: &'static str,
        target: &str,
        detail: String,
    ) -> AuditRecord {
        AuditRecord {
            at: self.now_ms(),
            actor: actor.to_owned(),
            action,
            target: target.to_owned(),
            detail,
        }
    }

    /// The service for `node`; `key` is `None` for offline admin commands. `transport` is
    /// shared with the discussions and files services, which reach links through it.
    pub(crate) fn new(
        store: Store,
        node: NodeName,
        key: Option<Arc<NodeKey>>,
        config: FederationConfig,
        transport: Transport,
        services: Services,
        clock: SharedClock,
    ) -> Self {
        let Services {
            discussions,
            presence,
            files,
        } = services;
        Self {
            inner: Arc::new(Inner {
                store,
                node,
                key,
                config,
                handle: transport,
                discussions,
                presence,
                files,
                file_answers: Arc::new(tokio::sync::Semaphore::new(FILE_ANSWERS)),
                received: tokio::sync::Notify::new(),
                clock,
            }),
        }
    }

    fn handle(&self) -> Option<Handle> {
        self.inner.handle.get()
    }

    /// Shares a group this node is home of over an active link.
    pub(crate) async fn share(
        &self,
        actor: &str,
        discussion: &str,
        link: &str,
    ) -> Result<(), FederationError> {
        self.key()?;
        self.inner
            .discussions
            .share(discussion, link)
            .await
            .map_err(|e| FederationError::BadRequest(e.to_string()))?;
        self.inner
            .store
            .audit_log()
            .append(&self.audit(actor, "discussion.share", discussion, link.to_owned()))
            .await?;
        Ok(())
    }

    /// Applies received items in each link's order, as they arrive, until the node stops.
    async fn apply_received(self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let items = match self.inner.store.federated().fed_inbox_next(500).await {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = %e, "reading received items failed");
                    Vec::new()
                }
            };
            if stop.is_cancelled() {
                return;
            }
            // One command applies them all, in order, in one transaction (one fsync).
            let mut done = Vec::new();
            let mut jobs = Vec::new();
            let mut tried = Vec::new();
            for item in &items {
                match ciborium::from_reader::<Item, _>(item.item.as_slice()) {
                    Ok(decoded) => {
                        jobs.push((item.link.clone(), decoded));
                        tried.push(item);
                    }
                    Err(e) => done.push((
                        item.link.clone(),
                        item.link_seq,
                        Some(format!("unreadable item: {e}")),
                    )),
                }
            }
            let mut stalled = false;
            let mut applied = false;
            match self.inner.discussions.apply_federated(jobs).await {
                Ok(outcomes) => {
                    for (item, outcome) in tried.into_iter().zip(outcomes) {
                        match outcome {
                            FedOutcome::Applied => {
                                done.push((item.link.clone(), item.link_seq, None));
                                applied = true;
                            }
                            FedOutcome::Refused(reason) => {
                                done.push((item.link.clone(), item.link_seq, Some(reason)));
                            }
                            // Stays in the inbox and is tried again, in order.
                            FedOutcome::Later => stalled = true,
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "applying received items failed; retrying");
                    stalled = true;
                }
            }
            if let Err(e) = self
                .inner
                .store
                .federated()
                .fed_inbox_done(&done, self.now_ms())
                .await
            {
                tracing::error!(error = %e, "recording applied items failed");
                stalled = true;
            }
            if applied {
                // Posts of linked nodes may have brought files the home keeps.
                self.inner.files.prefetch_soon();
            }
            if !items.is_empty() && !stalled {
                continue;
            }
            let pause = if stalled {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.inner.received.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    fn key(&self) -> Result<&NodeKey, FederationError> {
        if !self.inner.config.enabled {
            return Err(FederationError::Disabled);
        }
        self.inner.key.as_deref().ok_or(FederationError::NotRunning)
    }

    /// Starts the transport with every active link, if federation is enabled, and the task
    /// that applies what arrives; both end with `stop`.
    pub(crate) async fn start(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Result<(), TransportError> {
        let c = &self.inner.config;
        let Some(key) = self.inner.key.as_deref().filter(|_| c.enabled) else {
            return Ok(());
        };
        let mut grants = Vec::new();
        let mut held = Vec::new();
        let mut unconfirmed = Vec::new();
        for row in self.inner.store.links().fed_links().await? {
            if row.state != "active" {
                continue;
            }
            if let Some(by) = row.confirm_by {
                unconfirmed.push((row.link.clone(), by));
            }
            // Renewals accepted here wait for the other node's greeting.
            match row.renewal.as_deref().map(Grant::parse) {
                Some(Ok(g)) => held.push(g),
                Some(Err(e)) => {
                    tracing::error!(link = row.link, error = %e, "a held renewal no longer reads; accept it again")
                }
                None => {}
            }
            match Grant::parse(&row.grant_text) {
                Ok(g) => {
                    let scope = serde_json::from_str(&row.scope)
                        .unwrap_or_else(|_| g.terms().scope.clone());
                    grants.push((g, scope));
                }
                Err(e) => {
                    tracing::error!(link = row.link, error = %e, "a stored grant no longer reads; link not started")
                }
            }
        }
        let listen = c
            .listen
            .iter()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .map_err(|e| TransportError::Listen(a.clone(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = NetConfig {
            listen,
            request_timeout: Duration::from_secs(c.request_timeout_secs),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(c.retry_max_secs),
            idle_timeout: Duration::from_secs(120),
            clock: self.inner.clock.clone(),
        };
        let storage = Storage(self.inner.store.clone(), self.inner.clock.clone());
        let (handle, notifications, _task) =
            net::start(self.inner.node.as_str(), key, config, storage, grants).await?;
        for (link, by) in unconfirmed {
            handle.expect_confirmation(&link, by);
        }
        for grant in held {
            if let Err(e) = handle.expect_renewal(grant.clone()).await {
                tracing::error!(link = grant.link(), error = %e, "a held renewal was not taken");
            }
        }
        let addresses = if c.listen.is_empty() {
            Vec::new()
        } else {
            tokio::time::timeout(Duration::from_secs(10), handle.listen_addresses())
                .await
                .unwrap_or_default()
        };
        tracing::info!(node_id = %handle.node_id(), ?addresses, "federation listening");
        self.inner.handle.set(handle);
        tokio::spawn(self.clone().follow(notifications));
        tokio::spawn(self.clone().apply_received(stop.clone()));
        let (changes, changed) = tokio::sync::mpsc::unbounded_channel();
        self.inner.presence.send_changes_to(changes);
        tokio::spawn(self.clone().recheck_readers(stop.clone()));
        tokio::spawn(self.clone().forward_presence(changed, stop));
        Ok(())
    }

    /// This node was restored from a backup: asks the peer of `link` where it is in the logs of
    /// the discussions this node is home of and shares over the link, and goes on after that.
    async fn rejoin(self, link: String) {
        let Some(handle) = self.handle() else {
            return;
        };
        let shared = match self
            .inner
            .store
            .federated()
            .fed_home_shared_over(&link, self.inner.node.as_str())
            .await
        {
            Ok(shared) => shared,
            Err(e) => {
                tracing::error!(link, error = %e, "restored: the shared discussions cannot be read");
                return;
            }
        };
        let mut heads = Vec::new();
        for discussion in shared {
            match handle.head(&link, &discussion).await {
                // A real log is far shorter; a larger number would overflow the next ones.
                Ok(Some(seq)) if seq < 1 << 62 => {
                    heads.push((discussion, i64::try_from(seq).unwrap_or(0)));
                }
                Ok(Some(seq)) => {
                    tracing::warn!(
                        link,
                        discussion,
                        seq,
                        "restored: the linked node names an impossible head"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(link, discussion, error = %e, "restored: the linked node did not say where it is")
                }
            }
        }
        if let Err(e) = self.inner.discussions.rejoin_link(&link, heads).await {
            tracing::error!(link, error = %e, "restored: the discussions were not shared again");
        }
    }

    /// Decides again, every [`READERS_RECHECK`], for the users of linked nodes told they may
    /// read one of this node's object discussions: a context provider may answer otherwise
    /// now (an access list's changes are told at once).
    async fn recheck_readers(self, stop: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(READERS_RECHECK);
        every.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {
                    if let Err(e) = self.inner.discussions.recheck_linked_readers().await {
                        tracing::warn!(error = %e, "readers of object discussions not checked again");
                    }
                }
            }
        }
    }

    /// Sends the presence changes of this node's users to the links where they matter, until
    /// the node stops. Who matters to a link is looked up every few seconds; people who
    /// just came to matter (a group newly shared) are sent as they are then.
    async fn forward_presence(
        self,
        mut changed: tokio::sync::mpsc::UnboundedReceiver<Vec<PresenceInfo>>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut audiences: std::collections::HashMap<String, Audience> =
            std::collections::HashMap::new();
        let mut refresh = tokio::time::interval(AUDIENCE_REFRESH);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                infos = changed.recv() => {
                    let Some(infos) = infos else { return };
                    let Some(handle) = self.handle() else { continue };
                    for (link, audience) in &audiences {
                        let out = for_link(&infos, audience);
                        if !out.is_empty() {
                            handle.send_presence(link, out);
                        }
                    }
                }
                _ = refresh.tick() => {
                    if let Err(e) = self.refresh_audiences(&mut audiences).await {
                        tracing::warn!(error = %e, "presence for linked nodes: links unreadable");
                    }
                }
            }
        }
    }

    /// Looks up again who matters to each link that carries presence, and sends the links
    /// how those who are new to them are.
    async fn refresh_audiences(
        &self,
        audiences: &mut std::collections::HashMap<String, Audience>,
    ) -> Result<(), StoreError> {
        let links = self.inner.store.links().fed_links().await?;
        let carrying: Vec<&LinkRow> = links.iter().filter(|l| carries_presence(l)).collect();
        audiences.retain(|link, _| carrying.iter().any(|l| l.link == *link));
        let Some(handle) = self.handle() else {
            return Ok(());
        };
        for row in carrying {
            let fresh = self.audience(row).await?;
            let old = audiences.insert(row.link.clone(), fresh.clone());
            let (new, left): (Audience, Audience) = match old {
                Some(old) => (
                    fresh.difference(&old).cloned().collect(),
                    old.difference(&fresh).cloned().collect(),
                ),
                None => (fresh, Audience::new()),
            };
            let mut out = for_link(&self.inner.presence.present_here(), &new);
            // Those who no longer share anything with the peer are shown offline there.
            out.extend(left.into_iter().map(|user| wire::Presence {
                user,
                state: "offline".into(),
                status_text: String::new(),
            }));
            if !out.is_empty() {
                handle.send_presence(&row.link, out);
            }
        }
        Ok(())
    }

    /// This node's people who matter to the peer of `row`: those its `members` directory
    /// shows (in discussions shared with it).
    async fn audience(&self, row: &LinkRow) -> Result<Audience, StoreError> {
        self.inner
            .store
            .search()
            .directory_users_shared_over(&row.link, &row.peer_node)
            .await
            .map(|users| users.into_iter().map(|u| u.id).collect())
    }

    /// A linked node greeted us: it hears the presence of everyone here who matters to it.
    async fn send_present(&self, link: &str) -> Result<(), StoreError> {
        let Some(row) = self.inner.store.links().fed_link(link).await? else {
            return Ok(());
        };
        let Some(handle) = self.handle().filter(|_| carries_presence(&row)) else {
            return Ok(());
        };
        let audience = self.audience(&row).await?;
        let out = for_link(&self.inner.presence.present_here(), &audience);
        if !out.is_empty() {
            handle.send_presence(link, out);
        }
        Ok(())
    }

    /// A linked node is out of reach: its users are shown offline here.
    async fn peer_gone(&self, link: &str) -> Result<(), StoreError> {
        if let Some(row) = self.inner.store.links().fed_link(link).await? {
            self.inner.presence.remote_gone(&row.peer_node);
        }
        Ok(())
    }

    /// The link ended: this node's users are told that what they wrote in the discussions of
    /// its peer and the peer has not stamped will not be delivered.
    async fn undelivered(&self, link: &str, reason: &str) {
        let peer = match self.inner.store.links().fed_link(link).await {
            Ok(Some(row)) => row.peer_node,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(link, error = %e, "link ended: its pending messages stay pending");
                return;
            }
        };
        let why = format!("the link with {peer} ended: {reason}");
        if let Err(e) = self.inner.discussions.undelivered(&peer, &why).await {
            tracing::warn!(link, error = %e, "link ended: its pending messages stay pending");
        }
    }

    /// Stops the transport.
    pub(crate) fn stop(&self) {
        if let Some(handle) = self.handle() {
            handle.stop();
        }
    }

    /// Records what the transport reports, until it stops.
    async fn follow(self, mut notifications: tokio::sync::mpsc::UnboundedReceiver<Notification>) {
        self.follow_until_closed(&mut notifications).await;
        tracing::info!("the federation transport stopped");
    }

    async fn follow_until_closed(
        &self,
        notifications: &mut tokio::sync::mpsc::UnboundedReceiver<Notification>,
    ) {
        while let Some(n) = notifications.recv().await {
            let store = &self.inner.store;
            let result = match n {
                Notification::Ended { link, reason, .. } => {
                    tracing::warn!(link, reason, "link ended");
                    if let Err(e) = self.peer_gone(&link).await {
                        tracing::warn!(link, error = %e, "link ended: its users stay shown");
                    }
                    let ended = store
                        .links()
                        .fed_end_link(
                            &link,
                            &reason,
                            self.now_ms(),
                            &self.audit("federation", "link.ended", &link, reason.clone()),
                        )
                        .await
                        .map(|_| ());
                    self.undelivered(&link, &reason).await;
                    ended
                }
                Notification::Confirmed { link } => {
                    tracing::info!(link, "the other node confirmed the link");
                    store.links().fed_link_confirmed(&link).await
                }
                Notification::Narrowed { link, scope, .. } => {
                    tracing::info!(link, ?scope, "the peer narrowed the link");
                    if !scope.presence
                        && let Err(e) = self.peer_gone(&link).await
                    {
                        tracing::warn!(link, error = %e, "narrowed: its users stay shown");
                    }
                    store
                        .links()
                        .fed_update_scope(
                            &link,
                            |current| narrowed(current, &scope),
                            !scope.object_discussions,
                            &self.audit("federation", "link.narrowed", &link, format!("{scope:?}")),
                        )
                        .await
                }
                Notification::Restored { link } => {
                    tracing::warn!(
                        link,
                        "the linked node holds more of ours than this node ever sent (restored \
                         from a backup?): asking where it is in the discussions this node is home of"
                    );
                    tokio::spawn(self.clone().rejoin(link));
                    Ok(())
                }
                Notification::Query {
                    link,
                    query: wire::Query::Head { discussion },
                    responder,
                    ..
                } => {
                    let store = store.clone();
                    tokio::spawn(async move {
                        match store.federated().fed_head_seq(&discussion).await {
                            Ok(seq) => responder.head(seq.and_then(|s| u64::try_from(s).ok())),
                            Err(e) => {
                                tracing::error!(link, error = %e, "a linked node's head query failed");
                                responder.refuse("the log cannot be read now; ask again");
                            }
                        }
                    });
                    Ok(())
                }
                Notification::Behind { link, received } => {
                    tracing::warn!(
                        link,
                        received,
                        "the linked node lost what it had stored of ours (restored from a backup?): \
                         queuing the state of every discussion shared with it again"
                    );
                    match self.inner.discussions.resync_link(&link, received).await {
                        Ok(()) => {
                            if let Some(handle) = self.handle() {
                                handle.wake(&link);
                            }
                            Ok(())
                        }
                        Err(e) => Err(StoreError::Aborted(e.to_string())),
                    }
                }
                Notification::Rejected { link, rejected } => {
                    for r in rejected {
                        tracing::error!(
                            link,
                            link_seq = r.link_seq,
                            reason = r.reason,
                            "the peer refused an item for good"
                        );
                    }
                    Ok(())
                }
                Notification::Renewed { link, grant } => self.renewed(&link, &grant).await,
                Notification::Connected { link } => {
                    tracing::info!(link, "linked node connected");
                    self.send_present(&link).await
                }
                Notification::Disconnected { link } => {
                    tracing::info!(link, "linked node disconnected");
                    self.peer_gone(&link).await
                }
                Notification::Presence { users, .. } => {
                    // Only users known here matter (someone here shares a discussion with
                    // them); a node cannot fill this one's memory with users it makes up.
                    let ids: Vec<&str> = users.iter().map(|p| p.user.as_str()).collect();
                    store
                        .federated()
                        .known_remote_users(&ids)
                        .await
                        .map(|known| {
                            let known = users.into_iter().filter(|p| known.contains(&p.user));
                            self.inner.presence.remote(known.map(from_wire).collect());
                        })
                }
                Notification::Received { link } => {
                    tracing::debug!(link, "items received");
                    self.inner.received.notify_one();
                    Ok(())
                }
                Notification::Query {
                    link,
                    scope,
                    query: wire::Query::Directory { text, limit },
                    responder,
                } => {
                    tokio::spawn(Self::answer_query(
                        store.clone(),
                        link,
                        scope.directory,
                        (text, limit),
                        responder,
                    ));
                    Ok(())
                }
                Notification::Query {
                    link,
                    scope,
                    query:
                        wire::Query::File {
                            discussion,
                            sha256,
                            offset,
                        },
                    responder,
                } => {
                    // A few answers at a time: each may hold a piece of up to 1 MiB.
                    let Ok(permit) = self.inner.file_answers.clone().try_acquire_owned() else {
                        responder.refuse("busy; ask again shortly");
                        continue;
                    };
                    tokio::spawn(Self::answer_file(
                        permit,
                        store.clone(),
                        self.inner.files.clone(),
                        link,
                        (
                            scope.max_file_mb.saturating_mul(1024 * 1024),
                            // Half the peer's patience: the answer must reach it in time.
                            Duration::from_secs(self.inner.config.request_timeout_secs) / 2,
                        ),
                        (discussion, sha256, offset),
                        responder,
                    ));
                    Ok(())
                }
                Notification::Query {
                    link,
                    query:
                        wire::Query::Object {
                            user,
                            application,
                            object_type,
                            object_id,
                            held,
                        },
                    responder,
                    ..
                } => {
                    let discussions = self.inner.discussions.clone();
                    tokio::spawn(async move {
                        let object = ObjectRef {
                            application,
                            object_type,
                            object_id,
                        };
                        match discussions
                            .open_object_for_link(&link, &user, object, held)
                            .await
                        {
                            Ok(Some((discussion, write))) => {
                                responder.object(
                                    discussion,
                                    veche_core::discussions::access::reader_to_wire(Some(write)),
                                );
                            }
                            // Whatever the reason (a context provider's word on an object the
                            // user may not see included): the asker learns nothing of objects.
                            Ok(None)
                            | Err(
                                DiscussionError::NotFound(_)
                                | DiscussionError::BadRequest(_)
                                | DiscussionError::Forbidden(_),
                            ) => {
                                responder.refuse("object not found");
                            }
                            Err(e) => {
                                tracing::error!(link, error = %e, "a linked node's object request failed");
                                responder.refuse("the object cannot be opened now; ask again");
                            }
                        }
                    });
                    Ok(())
                }
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "recording a link change failed");
            }
        }
    }

    /// Answers a linked node's request for a piece of a file (see `Files::serve_linked`).
    async fn answer_file(
        _permit: tokio::sync::OwnedSemaphorePermit,
        store: Store,
        files: Files,
        link: String,
        limits: (u64, Duration),
        (discussion, sha256, offset): (String, String, u64),
        responder: net::Responder,
    ) {
        let peer = match store.links().fed_link(&link).await {
            Ok(Some(row)) if row.state == "active" => row.peer_node,
            Ok(_) => return responder.refuse("the link has ended"),
            Err(e) => {
                tracing::error!(link, error = %e, "a linked node's file request failed");
                return responder.refuse("the file cannot be read now");
            }
        };
        let served = files
            .serve_linked(&link, &peer, &discussion, &sha256, offset, limits)
            .await;
        match served {
            Ok(chunk) => responder.chunk(chunk),
            Err(e) => {
                // The peer learns only what concerns its request, not why this node could not
                // get the file from elsewhere.
                let reason = match &e {
                    FileError::NotFound(_) => crate::files::LINKED_NOT_FOUND.to_owned(),
                    FileError::BadRequest(m) => m.clone(),
                    FileError::Busy(_) => "the file is on its way here; ask again later".into(),
                    FileError::Refused(_) | FileError::Conflict(_) => {
                        crate::files::LINKED_REFUSED.to_owned()
                    }
                    _ => "the file cannot be sent now; ask again later".into(),
                };
                tracing::debug!(link, sha256, error = %e, "a linked node's file request refused");
                responder.refuse(reason);
            }
        }
    }

    /// Answers a linked node's directory query: this node's people (the whole directory, or only
    /// members of discussions shared over the link, as its scope says).
    async fn answer_query(
        store: Store,
        link: String,
        directory: DirectoryScope,
        (text, limit): (String, u32),
        responder: net::Responder,
    ) {
        let users = match directory {
            DirectoryScope::Full => store.search().directory_users().await,
            DirectoryScope::Members => match store.links().fed_link(&link).await {
                Ok(Some(row)) => {
                    store
                        .search()
                        .directory_users_shared_over(&link, &row.peer_node)
                        .await
                }
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
            DirectoryScope::None => {
                return responder.refuse("this link does not share the directory");
            }
        };
        match users {
            Ok(users) => {
                let found = veche_core::directory::rank(users, &text, limit as usize);
                responder.answer(
                    found
                        .into_iter()
                        .map(|u| veche_federation::wire::Profile {
                            id: u.id,
                            display_name: u.display_name,
                            department: u.department,
                        })
                        .collect(),
                );
            }
            Err(e) => {
                tracing::error!(link, error = %e, "a linked node's directory query failed");
                responder.refuse("the directory cannot be read now");
            }
        }
    }

    /// This node as a party of a link.
    async fn me(&self, organisation: String, contact: String) -> Result<Party, FederationError> {
        let key = self.key()?;
        let advertised = &self.inner.config.advertise;
        let addresses: Vec<Multiaddr> = if advertised.is_empty() {
            let handle = self.handle().ok_or(FederationError::NotRunning)?;
            let all = handle.current_addresses();
            // Listening on every interface includes loopback, which only this machine reaches.
            let outside: Vec<Multiaddr> = all
                .iter()
                .filter(|a| !net::is_local_only(a))
                .cloned()
                .collect();
            if outside.is_empty() { all } else { outside }
        } else {
            advertised.iter().filter_map(|a| a.parse().ok()).collect()
        };
        if let Some(bad) = addresses.iter().find(|a| !net::dialable(a)) {
            return Err(FederationError::BadRequest(format!(
                "{bad} cannot be dialled by another node: set [federation] advertise to the \
                 addresses other nodes reach this one at"
            )));
        }
        if addresses.is_empty() {
            return Err(FederationError::BadRequest(
                "this node has no address to offer: set [federation] listen or advertise".into(),
            ));
        }
        Ok(Party {
            node: self.inner.node.to_string(),
            key: key.public(),
            addresses: addresses.iter().map(ToString::to_string).collect(),
            organisation,
            contact,
        })
    }

    /// Makes and records a signed offer.
    pub(crate) async fn offer(
        &self,
        actor: &str,
        terms: OfferTerms<'_>,
        organisation: String,
        contact: String,
    ) -> Result<(Offer, LinkInfo), FederationError> {
        let OfferTerms {
            relationship,
            days,
            scope,
            renews,
        } = terms;
        // A renewal is the same link, one version on.
        let renewed = match renews {
            Some(link) => Some(self.active(link).await?.0),
            None => None,
        };
        let relationship = match (relationship, &renewed) {
            ("", Some(g)) => g.terms().relationship,
            ("" | "partner", None) => Relationship::Partner,
            ("branch", None) => Relationship::Branch,
            (r @ ("branch" | "partner"), Some(g)) => {
                let current = g.terms().relationship;
                if r != self::relationship(current) {
                    return Err(FederationError::BadRequest(format!(
                        "a renewal keeps the link's relationship ({})",
                        self::relationship(current)
                    )));
                }
                current
            }
            (other, _) => {
                return Err(FederationError::BadRequest(format!(
                    "relationship {other:?}: use branch or partner"
                )));
            }
        };
        if !(1..=3650).contains(&days) {
            return Err(FederationError::BadRequest(
                "days: between 1 and 3650".into(),
            ));
        }
        let scope = scope_from(scope)?;
        // A renewal names this organisation as the link does, unless told otherwise.
        let (organisation, contact) = match &renewed {
            Some(g) => as_named(g, &self.key()?.public(), organisation, contact),
            None => (organisation, contact),
        };
        let offerer = self.me(organisation, contact).await?;
        let key = self.key()?;
        let now = self.now_ms();
        let terms = Terms {
            format: GRANT_FORMAT,
            link: match &renewed {
                Some(g) => g.link().to_owned(),
                None => hex::encode(rand::random::<[u8; 16]>()),
            },
            version: match &renewed {
                Some(g) => g.terms().version.checked_add(1).ok_or_else(|| {
                    FederationError::BadRequest("this link cannot be renewed again".into())
                })?,
                None => 1,
            },
            relationship,
            scope,
            // A few minutes back, for the other machine's clock.
            not_before: now - 10 * 60 * 1000,
            not_after: now + i64::from(days) * 86_400_000,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            offerer,
        };
        let offer = Offer::create(key, terms)?;
        let link = offer.terms().link.clone();
        let action = if renewed.is_some() {
            "link.renewal.offer"
        } else {
            "link.offer"
        };
        self.inner
            .store
            .links()
            .fed_add_offer(
                &link,
                &offer.to_text(),
                now,
                &self.audit(actor, action, &link, offer.fingerprint()),
            )
            .await?;
        let info = offered_info(&offer);
        Ok((offer, info))
    }

    /// Countersigns another node's offer; the link is active here at once.
    pub(crate) async fn accept(
        &self,
        actor: &str,
        offer: &str,
        organisation: String,
        contact: String,
    ) -> Result<(Grant, LinkInfo), FederationError> {
        let offer = Offer::parse(offer)?;
        let key = self.key()?;
        if offer.terms().offerer.key == key.public()
            || offer.terms().offerer.node == self.inner.node.as_str()
        {
            return Err(FederationError::BadRequest(
                "this is an offer of this node: send it to the other node's administrator".into(),
            ));
        }
        // A renewal names this organisation as the link does, unless told otherwise.
        let (organisation, contact) = match self
            .inner
            .store
            .links()
            .fed_link(&offer.terms().link)
            .await?
        {
            Some(row) if row.state == "active" => as_named(
                &Grant::parse(&row.grant_text)?,
                &key.public(),
                organisation,
                contact,
            ),
            _ => (organisation, contact),
        };
        let me = self.me(organisation, contact).await?;
        let grant = offer.accept(key, me, self.now_ms())?;
        self.activate(actor, "link.accept", &grant).await?;
        let info = self.info(grant.link()).await?;
        Ok((grant, info))
    }

    /// Activates a link this node offered, from the other side's grant.
    pub(crate) async fn confirm(
        &self,
        actor: &str,
        grant: &str,
    ) -> Result<LinkInfo, FederationError> {
        let grant = Grant::parse(grant)?;
        let key = self.key()?;
        if grant.offerer().key != key.public() {
            return Err(FederationError::BadRequest(
                "this grant answers another node's offer".into(),
            ));
        }
        // A link active here at this version or later says so, before the offer is looked for.
        if let Some(row) = self.inner.store.links().fed_link(grant.link()).await?
            && row.state == "active"
        {
            let now = Grant::parse(&row.grant_text)?.terms().version;
            if grant.terms().version <= now {
                return Err(FederationError::Conflict(format!(
                    "this link is known already (at version {now})"
                )));
            }
        }
        let offered = self.inner.store.links().fed_offer(grant.link()).await?;
        let ours = offered
            .and_then(|o| Offer::parse(&o.offer).ok())
            .is_some_and(|o| o.hash() == grant.offer().hash());
        if !ours {
            return Err(FederationError::BadRequest(
                "this grant answers no open offer of this node (confirmed already, or revoked)"
                    .into(),
            ));
        }
        grant.check_time(self.now_ms())?;
        self.activate(actor, "link.confirm", &grant).await?;
        self.info(grant.link()).await
    }

    async fn activate(
        &self,
        actor: &str,
        action: &'static str,
        grant: &Grant,
    ) -> Result<(), FederationError> {
        let key = self.key()?;
        let peer = grant
            .peer_of(&key.public())
            .ok_or_else(|| FederationError::BadRequest("this node is not a party".into()))?;
        let scope = serde_json::to_string(&grant.terms().scope)
            .map_err(|e| FederationError::BadRequest(e.to_string()))?;
        if let Some(row) = self.inner.store.links().fed_link(grant.link()).await? {
            return self.renew(actor, action, grant, &row, &scope).await;
        }
        if grant.terms().version != 1 {
            return Err(FederationError::BadRequest(
                "this renews a link this node does not have".into(),
            ));
        }
        // Accepted here: pending until the other node shows it confirmed (a replayed or
        // abandoned offer ends, and its users are told).
        let confirm_by = (action == "link.accept").then(|| {
            self.now_ms()
                .saturating_add(i64::try_from(CONFIRM_WITHIN.as_millis()).unwrap_or(i64::MAX))
        });
        let new = NewLink {
            link: grant.link(),
            grant_text: &grant.to_text(),
            peer_node: &peer.node,
            peer_key: &peer.key.0,
            scope: &scope,
            at: self.now_ms(),
            confirm_by,
        };
        let detail = format!(
            "{} ({}), {}",
            peer.node,
            peer.organisation,
            grant.fingerprint()
        );
        if !self
            .inner
            .store
            .links()
            .fed_add_link(&new, &self.audit(actor, action, grant.link(), detail))
            .await?
        {
            return Err(FederationError::Conflict(format!(
                "this link is known already, or {} has an active link: revoke it first",
                peer.node
            )));
        }
        if let Some(handle) = self.handle() {
            // The link is stored: it starts at the next start even if the transport is gone now.
            if let Err(e) = handle
                .add_link(grant.clone(), grant.terms().scope.clone())
                .await
            {
                tracing::error!(link = grant.link(), error = %e, "the transport did not take the link; it starts with the next start");
            } else if let Some(by) = confirm_by {
                handle.expect_confirmation(grant.link(), by);
            }
        }
        Ok(())
    }

    /// Takes a renewal of a link: the same two nodes, the next version. Accepted here, it is
    /// held until the other node greets with it (it has confirmed it then: `renewed`);
    /// confirmed here, it is in force at once.
    async fn renew(
        &self,
        actor: &str,
        action: &'static str,
        grant: &Grant,
        row: &LinkRow,
        scope: &str,
    ) -> Result<(), FederationError> {
        let key = self.key()?;
        if row.state != "active" {
            return Err(FederationError::Conflict(
                "this link has ended: offer a new link".into(),
            ));
        }
        let current = Grant::parse(&row.grant_text)?;
        let same_peer = match (current.peer_of(&key.public()), grant.peer_of(&key.public())) {
            (Some(a), Some(b)) => a.key == b.key && a.node == b.node,
            _ => false,
        };
        if !same_peer {
            return Err(FederationError::BadRequest(
                "a renewal is between the same two nodes as the link".into(),
            ));
        }
        let (now, new) = (current.terms().version, grant.terms().version);
        if new == now {
            return Err(FederationError::Conflict(format!(
                "this link is known already (at version {now})"
            )));
        }
        if new < now {
            return Err(FederationError::Conflict(format!(
                "this link is at version {now} already; a renewal must be later"
            )));
        }
        if Some(new) != now.checked_add(1) {
            return Err(FederationError::BadRequest(format!(
                "this link is at version {now}; its renewal is version {}",
                now.saturating_add(1)
            )));
        }
        if grant.terms().relationship != current.terms().relationship {
            return Err(FederationError::BadRequest(format!(
                "a renewal keeps the link's relationship ({})",
                relationship(current.terms().relationship)
            )));
        }
        let detail = format!(
            "version {} → {}, {}",
            current.terms().version,
            grant.terms().version,
            grant.fingerprint()
        );
        let changed = || FederationError::Conflict("the link changed meanwhile; try again".into());
        let store = &self.inner.store;
        if action == "link.accept" {
            let audit = self.audit(actor, "link.renewal.accept", grant.link(), detail);
            if !store
                .links()
                .fed_renewal(
                    grant.link(),
                    &row.grant_text,
                    Renewal::Held(&grant.to_text()),
                    &audit,
                )
                .await?
            {
                return Err(changed());
            }
            if let Some(handle) = self.handle()
                && let Err(e) = handle.expect_renewal(grant.clone()).await
            {
                tracing::error!(link = grant.link(), error = %e, "the transport did not take the renewal; it waits for it from the next start");
            }
            return Ok(());
        }
        if row.renewal.is_some() {
            return Err(FederationError::Conflict(
                "this node has accepted the other node's renewal of this link, in force once \
                 that node confirms it; accept neither or one"
                    .into(),
            ));
        }
        let audit = self.audit(actor, "link.renewal.confirm", grant.link(), detail);
        if !store
            .links()
            .fed_renewal(
                grant.link(),
                &row.grant_text,
                Renewal::InForce {
                    grant_text: &grant.to_text(),
                    scope,
                    objects: grant.terms().scope.object_discussions,
                },
                &audit,
            )
            .await?
        {
            return Err(changed());
        }
        if let Some(handle) = self.handle()
            && let Err(e) = handle
                .renew_link(grant.clone(), grant.terms().scope.clone())
                .await
        {
            tracing::error!(link = grant.link(), error = %e, "the transport did not take the renewal; it is in force from the next start");
        }
        tracing::info!(link = grant.link(), version = new, "link renewed");
        Ok(())
    }

    /// The other node greeted with the renewal this node had accepted (`hash`): it is in
    /// force now.
    async fn renewed(
        &self,
        link: &str,
        hash: &veche_federation::keys::Hash,
    ) -> Result<(), StoreError> {
        let Some(row) = self.inner.store.links().fed_link(link).await? else {
            return Ok(());
        };
        let Some(text) = row.renewal.as_deref() else {
            return Ok(());
        };
        let grant = match Grant::parse(text) {
            Ok(g) if g.hash() == *hash => g,
            Ok(_) => {
                tracing::warn!(link, "the renewal put in force is not the one held now");
                return Ok(());
            }
            Err(e) => {
                tracing::error!(link, error = %e, "a held renewal no longer reads");
                return Ok(());
            }
        };
        let scope = serde_json::to_string(&grant.terms().scope)
            .map_err(|e| StoreError::Aborted(e.to_string()))?;
        let detail = format!("version {}, {}", grant.terms().version, grant.fingerprint());
        let audit = self.audit("federation", "link.renewal.in_force", link, detail);
        if self
            .inner
            .store
            .links()
            .fed_renewal(
                link,
                &row.grant_text,
                Renewal::InForce {
                    grant_text: text,
                    scope: &scope,
                    objects: grant.terms().scope.object_discussions,
                },
                &audit,
            )
            .await?
        {
            tracing::info!(link, version = grant.terms().version, "link renewed");
        }
        Ok(())
    }

    /// Narrows a link's scope now and tells the other node.
    pub(crate) async fn narrow(
        &self,
        actor: &str,
        link: &str,
        scope: &LinkScope,
    ) -> Result<LinkInfo, FederationError> {
        let scope = scope_from(scope)?;
        let notice = self
            .notice(
                link,
                Change::Narrow {
                    scope: scope.clone(),
                },
            )
            .await
            .map_err(|e| match e {
                FederationError::Grant(GrantError::Widens) => FederationError::BadRequest(
                    "a link is widened only by a new offer both sides sign; this only narrows"
                        .into(),
                ),
                other => other,
            })?;
        self.inner
            .store
            .links()
            .fed_update_scope(
                link,
                |current| narrowed(current, &scope),
                !scope.object_discussions,
                &self.audit(actor, "link.narrow", link, format!("{scope:?}")),
            )
            .await?;
        if let Some(handle) = self.handle() {
            handle.notify(link, notice);
        }
        if !scope.presence {
            self.peer_gone(link).await?;
        }
        self.info(link).await
    }

    /// A one-sided change of an active link, signed by this node.
    async fn notice(&self, link: &str, change: Change) -> Result<SignedNotice, FederationError> {
        let key = self.key()?;
        let (grant, current) = self.active(link).await?;
        let notice = Notice {
            link: link.to_owned(),
            grant: grant.hash(),
            at: self.now_ms(),
            change,
        };
        Ok(SignedNotice::create(key, &grant, &current, notice)?)
    }

    /// An active link's grant and the scope in force.
    async fn active(&self, link: &str) -> Result<(Grant, Scope), FederationError> {
        let row = self
            .inner
            .store
            .links()
            .fed_link(link)
            .await?
            .filter(|r| r.state == "active")
            .ok_or_else(|| FederationError::NotFound(link.to_owned()))?;
        let grant = Grant::parse(&row.grant_text)?;
        let current =
            serde_json::from_str(&row.scope).unwrap_or_else(|_| grant.terms().scope.clone());
        Ok((grant, current))
    }

    /// Ends a link now and tells the other node.
    pub(crate) async fn revoke(
        &self,
        actor: &str,
        link: &str,
        reason: &str,
    ) -> Result<(), FederationError> {
        let notice = self
            .notice(
                link,
                Change::Revoke {
                    reason: reason.to_owned(),
                },
            )
            .await?;
        self.inner
            .store
            .links()
            .fed_end_link(
                link,
                &format!("revoked here: {reason}"),
                self.now_ms(),
                &self.audit(actor, "link.revoke", link, reason.to_owned()),
            )
            .await?;
        self.undelivered(link, &format!("revoked here: {reason}"))
            .await;
        if let Some(handle) = self.handle() {
            handle.end_link(link, Some(notice));
        }
        Ok(())
    }

    /// Offers not yet confirmed, then links, newest first.
    pub(crate) async fn list(&self) -> Result<Vec<LinkInfo>, FederationError> {
        let status = match self.handle() {
            Some(h) => h.status().await,
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for o in self.inner.store.links().fed_offers().await? {
            match Offer::parse(&o.offer) {
                Ok(offer) => out.push(offered_info(&offer)),
                Err(e) => {
                    tracing::error!(link = o.link, created_at = o.created_at, error = %e, "a stored offer no longer reads")
                }
            }
        }
        for row in self.inner.store.links().fed_links().await? {
            match link_info(&row, status.iter().find(|s| s.link == row.link)) {
                Ok(info) => out.push(info),
                Err(e) => {
                    tracing::error!(link = row.link, error = %e, "a stored grant no longer reads")
                }
            }
        }
        Ok(out)
    }

    /// The link as it is in force here (or offered, if it is only that).
    async fn info(&self, link: &str) -> Result<LinkInfo, FederationError> {
        let all = self.list().await?;
        let offered = all
            .iter()
            .position(|l| l.link == link && l.state == "offered");
        let held = all
            .iter()
            .position(|l| l.link == link && l.state != "offered");
        held.or(offered)
            .map(|i| all[i].clone())
            .ok_or_else(|| FederationError::NotFound(link.to_owned()))
    }
}

/// The organisation and contact this node (`me`) gives in a renewal of `current`: the ones
/// given, or where empty, the ones the link names now.
fn as_named(
    current: &Grant,
    me: &veche_federation::keys::PublicKey,
    organisation: String,
    contact: String,
) -> (String, String) {
    let mine = current.party(me);
    let keep = |given: String, now: Option<&String>| {
        if given.is_empty() {
            now.cloned().unwrap_or_default()
        } else {
            given
        }
    };
    (
        keep(organisation, mine.map(|p| &p.organisation)),
        keep(contact, mine.map(|p| &p.contact)),
    )
}

/// The stored scope (JSON) narrowed by `by`: what both allow, so narrowings made on either
/// side, in any order, add up.
fn narrowed(current: &str, by: &Scope) -> String {
    let now: Option<Scope> = serde_json::from_str(current).ok();
    let met = now.map_or_else(|| by.clone(), |n| n.meet(by));
    serde_json::to_string(&met).unwrap_or_else(|_| current.to_owned())
}

fn scope_from(scope: &LinkScope) -> Result<Scope, FederationError> {
    let directory = match scope.directory.as_str() {
        "none" => DirectoryScope::None,
        "members" => DirectoryScope::Members,
        "full" => DirectoryScope::Full,
        other => {
            return Err(FederationError::BadRequest(format!(
                "directory {other:?}: use none, members or full"
            )));
        }
    };
    Ok(Scope {
        object_discussions: scope.object_discussions,
        directory,
        presence: scope.presence,
        max_file_mb: scope.max_file_mb,
    })
}

fn scope_to(scope: &Scope) -> LinkScope {
    LinkScope {
        object_discussions: scope.object_discussions,
        directory: match scope.directory {
            DirectoryScope::None => "none",
            DirectoryScope::Members => "members",
            DirectoryScope::Full => "full",
        }
        .to_owned(),
        presence: scope.presence,
        max_file_mb: scope.max_file_mb,
    }
}

fn relationship(r: Relationship) -> String {
    match r {
        Relationship::Branch => "branch",
        Relationship::Partner => "partner",
    }
    .to_owned()
}

fn offered_info(offer: &Offer) -> LinkInfo {
    let t = offer.terms();
    LinkInfo {
        link: t.link.clone(),
        state: "offered".into(),
        peer: String::new(),
        peer_id: String::new(),
        organisation: String::new(),
        relationship: relationship(t.relationship),
        scope: scope_to(&t.scope),
        fingerprint: offer.fingerprint(),
        version: t.version,
        not_after: Timestamp(t.not_after),
        connected: false,
        queued: 0,
        ended_reason: None,
        stalled: None,
        renewing: None,
    }
}

fn link_info(row: &LinkRow, status: Option<&LinkStatus>) -> Result<LinkInfo, GrantError> {
    let grant = Grant::parse(&row.grant_text)?;
    let t = grant.terms();
    // The party that is not this node is the one named in the row.
    let peer = if grant.offerer().node == row.peer_node {
        grant.offerer()
    } else {
        grant.acceptor()
    };
    let scope: Scope = serde_json::from_str(&row.scope).unwrap_or_else(|_| t.scope.clone());
    // Accepted here and not yet confirmed by the other node: pending.
    let state = if row.state == "active" && row.confirm_by.is_some() {
        "pending".to_owned()
    } else {
        row.state.clone()
    };
    Ok(LinkInfo {
        link: row.link.clone(),
        state,
        peer: peer.node.clone(),
        peer_id: peer.key.node_id().to_string(),
        organisation: peer.organisation.clone(),
        relationship: relationship(t.relationship),
        scope: scope_to(&scope),
        fingerprint: grant.fingerprint(),
        version: t.version,
        not_after: Timestamp(t.not_after),
        connected: status.is_some_and(|s| s.connected && !s.ended),
        queued: u64::try_from(row.queued).unwrap_or(0),
        ended_reason: row.ended_reason.clone(),
        stalled: status.and_then(|s| s.stalled.clone()),
        renewing: row
            .renewal
            .as_deref()
            .and_then(|r| Grant::parse(r).ok())
            .map(|g| g.terms().version),
    })
}

/// The transport's storage: each link's outbox and inbox in the node's database, items as
/// CBOR exactly as they travel.
#[derive(Debug, Clone)]
struct Storage(Store, SharedClock);

fn fed_store_error(e: StoreError) -> veche_federation::store::StoreError {
    veche_federation::store::StoreError(e.to_string())
}

/// An item as stored in a link's outbox or inbox; `None` for bytes that are not one.
fn decode_item(bytes: &[u8]) -> Option<Item> {
    ciborium::from_reader(bytes).ok()
}

fn encode_item(item: &Item) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(item, &mut out).expect("encoding to a Vec cannot fail");
    out
}

impl LinkStore for Storage {
    async fn outbox(
        &self,
        link: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<Outgoing>, veche_federation::store::StoreError> {
        let rows = self
            .0
            .links()
            .fed_outbox(
                link,
                i64::try_from(after).unwrap_or(i64::MAX),
                i64::try_from(max).unwrap_or(i64::MAX),
            )
            .await
            .map_err(fed_store_error)?;
        rows.into_iter()
            .map(|(seq, bytes)| {
                let item = ciborium::from_reader(bytes.as_slice()).map_err(|e| {
                    veche_federation::store::StoreError(format!("outbox item {seq}: {e}"))
                })?;
                Ok(Outgoing {
                    link_seq: u64::try_from(seq).unwrap_or(0),
                    item,
                })
            })
            .collect()
    }

    async fn acked(
        &self,
        link: &str,
        upto: u64,
        last: Option<Hash>,
    ) -> Result<bool, veche_federation::store::StoreError> {
        // The transport takes no watermark beyond 2^62.
        let upto = i64::try_from(upto).unwrap_or(i64::MAX);
        // This node was restored from a backup when the peer has more of its items than it ever
        // numbered, or another item at that number (compared through `Item::digest`, the same
        // function on both sides, whatever wrote the bytes). Only a greeting names the peer's
        // last item.
        let restored = |numbered: Option<i64>, mine: Option<&[u8]>| {
            let other = match (last, mine) {
                (Some(last), Some(mine)) => decode_item(mine).is_some_and(|m| m.digest() != last),
                _ => false,
            };
            numbered.is_some_and(|n| upto > n) || other
        };
        self.0
            .links()
            .fed_acked(link, upto, restored)
            .await
            .map_err(fed_store_error)
    }

    async fn watermark(
        &self,
        link: &str,
    ) -> Result<(u64, Option<Hash>), veche_federation::store::StoreError> {
        let (mark, last) = self
            .0
            .links()
            .fed_received(link)
            .await
            .map_err(fed_store_error)?;
        Ok((
            u64::try_from(mark).unwrap_or(0),
            last.as_deref().and_then(Hash::from_hex),
        ))
    }

    async fn receive(
        &self,
        link: &str,
        accepted: Vec<Incoming>,
        refused: Vec<Refused>,
    ) -> Result<u64, veche_federation::store::StoreError> {
        let mut items: Vec<(i64, Vec<u8>, Option<String>)> = accepted
            .iter()
            .map(|i| (i.link_seq, encode_item(&i.item), None))
            .chain(
                refused
                    .iter()
                    .map(|r| (r.link_seq, encode_item(&r.item), Some(r.reason.clone()))),
            )
            .map(|(s, b, r)| (i64::try_from(s).unwrap_or(i64::MAX), b, r))
            .collect();
        items.sort_by_key(|i| i.0);
        let mark = self
            .0
            .links()
            .fed_receive(link, &items, self.1.now_ms(), |bytes| {
                decode_item(bytes).map(|item| item.digest().to_hex())
            })
            .await
            .map_err(fed_store_error)?;
        Ok(u64::try_from(mark).unwrap_or(0))
    }
}
