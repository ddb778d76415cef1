//! Business applications: registration by a code sent by e-mail, their credentials bound to
//! one instance, outgoing webhooks and app-to-app topics.
//!
//! An application is a user of kind `app` whose login is the application's name; the objects
//! whose reference names it (`application` = name) are its own (see
//! `discussions::access::object_access`). It talks to the node through the HTTP gateway with
//! a secret issued at activation and the id of its instance: the same secret from another
//! instance is a copy of the application's database and is refused.

mod mail;
pub(crate) mod webhooks;

use std::sync::Arc;
use std::time::Duration;
use veche_base::SharedClock;

use ed25519_dalek::SigningKey;
use tokio::sync::Notify;
use veche_protocol::discussions::ObjectRef;
use veche_protocol::ids::{Login, NodeName};

use crate::accounts::{random_token, token_hash};
use crate::config::{AppsConfig, SmtpConfig};
use crate::outbound::receiver_allowed;
use crate::plugins::{BusinessEvent, Plugins};
pub(crate) use mail::Mailer;
use veche_store::{
    Activate, Activation, AppRow, AuditRecord, CodeRefused, NewCode, NewTopicMessage, Published,
    Recorded, Store, StoreError, SubscriptionRow, TopicMessageRow, WebhookRow, WebhookStatus,
};

/// Most messages one pull returns.
const MAX_PULL: u32 = 100;
/// Longest lease a subscriber may ask for.
const MAX_LEASE: Duration = Duration::from_secs(3600);
/// Webhooks one application may have.
const MAX_WEBHOOKS_PER_APP: i64 = 20;
/// Largest topic message payload.
const MAX_TOPIC_PAYLOAD: usize = 256 * 1024;

/// Why an application operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AppError {
    /// The request's content is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The name is used by a user, a bot or an application registered with another address.
    #[error("the name {0:?} is taken")]
    NameTaken(String),
    /// The application is active already.
    #[error("application {0:?} is registered already; an administrator revokes it first")]
    AlreadyActive(String),
    /// A code went out recently.
    #[error("a code was sent recently; try again in {} s", retry_after_ms.div_ceil(1000))]
    TooSoon {
        /// When the next code may be requested.
        retry_after_ms: u64,
    },
    /// Self-registration is not open for this address.
    #[error(
        "applications from this address cannot register themselves; ask an administrator to run `veche admin app register`"
    )]
    NotAllowed,
    /// Mail could not be sent (the reason is in the node's log, not told to the caller).
    #[error("the code could not be sent by e-mail; the node's log says why")]
    Mail,
    /// An administrator revoked the application.
    #[error("application {0:?} was revoked by an administrator, who alone can register it again")]
    Revoked(String),
    /// The code is wrong.
    #[error("wrong code")]
    WrongCode,
    /// The code has expired.
    #[error("the code has expired; request a new one")]
    ExpiredCode,
    /// The code has been used.
    #[error("the code has been used already")]
    UsedCode,
    /// Too many wrong codes.
    #[error("too many wrong codes; request a new one")]
    TooManyAttempts,
    /// No pending registration under this name.
    #[error("no registration is pending for {0:?}")]
    NoRegistration(String),
    /// The secret is unknown or revoked.
    #[error("unknown or revoked application credentials")]
    Unauthenticated,
    /// The credentials came from another instance of the application.
    #[error(
        "refused: this looks like a copy of application {app:?}'s database (instance {instance:?} is not the registered one); the refusal is recorded for the administrator"
    )]
    DatabaseCopy {
        /// The application.
        app: String,
        /// The instance that connected.
        instance: String,
    },
    /// Nothing by that id.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// An idempotency key was used before for other content.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
}

/// An authenticated application.
#[derive(Debug, Clone)]
pub(crate) struct AppPrincipal {
    pub(crate) name: String,
    pub(crate) user_id: String,
}

/// What activation gives the application.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) app: String,
    pub(crate) user_id: String,
    pub(crate) secret: String,
}

/// A webhook to create.
#[derive(Debug, Clone)]
pub(crate) struct NewWebhook {
    pub(crate) url: String,
    pub(crate) kinds: Vec<String>,
    pub(crate) signing: Signing,
}

/// How requests the node sends are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Signing {
    /// HMAC-SHA256 with a secret the node generates and returns once.
    HmacSha256,
    /// The node's ed25519 identity key (public key at `GET /api/v1/node`).
    Ed25519,
}

impl Signing {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// The applications service.
#[derive(Debug, Clone)]
pub(crate) struct Apps {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    node: NodeName,
    config: AppsConfig,
    mailer: Mailer,
    plugins: Plugins,
    key: SigningKey,
    /// Wakes the webhook sender: the store's doorbell for its outgoing queues.
    wake: Arc<Notify>,
    clock: SharedClock,
    metrics: crate::metrics::Metrics,
}

impl Apps {
    // One service per argument: what the node wires together at start.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        node: NodeName,
        config: AppsConfig,
        smtp: SmtpConfig,
        plugins: Plugins,
        key: SigningKey,
        clock: SharedClock,
        metrics: crate::metrics::Metrics,
    ) -> Self {
        let wake = store.apps().queued();
        Self {
            inner: Arc::new(Inner {
                store,
                node,
                config,
                mailer: Mailer::new(smtp),
                plugins,
                key,
                wake,
                clock,
                metrics,
            }),
        }
    }

    /// Now, by the node's clock.
    pub(super) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Starts a registration: records a one-time code for `name` and sends it to `email`.
    /// `by_admin` registrations may use any address; an application's own only addresses of
    /// the configured domains.
    pub(crate) async fn start_registration(
        &self,
        name: &str,
        email: &str,
        by_admin: bool,
        actor: &str,
    ) -> Result<(), AppError> {
        let login: Login = name.parse().map_err(|_| {
            AppError::BadRequest(
                "an application name is 1 to 64 characters of a-z, 0-9, '.', '_' or '-'".into(),
            )
        })?;
        let email = email.trim().to_lowercase();
        let email = email.as_str();
        let address =
            mail::parse_address(email).map_err(|e| AppError::BadRequest(e.to_string()))?;
        if !by_admin {
            let domain = address.domain().to_lowercase();
            if !self
                .inner
                .config
                .self_registration_domains
                .iter()
                .any(|d| d.to_lowercase() == domain)
            {
                return Err(AppError::NotAllowed);
            }
        }
        let code = format!("{:08}", rand::random_range(0..100_000_000u32));
        let code_hash = token_hash(&code);
        let now = self.now_ms();
        let user_id = format!("{}@{}", login.as_str(), self.inner.node);
        let config = &self.inner.config;
        let refused = self
            .inner
            .store
            .apps()
            .record_app_code(
                &NewCode {
                    app: login.as_str(),
                    user_id: &user_id,
                    display_name: login.as_str(),
                    email,
                    code_hash: &code_hash,
                    now,
                    expires_at: now.saturating_add(secs_ms(config.code_ttl_secs)),
                    not_after: now.saturating_sub(secs_ms(config.code_resend_secs)),
                    by_admin,
                },
                &AuditRecord {
                    at: now,
                    actor: actor.to_owned(),
                    action: "app.code_sent",
                    target: login.as_str().to_owned(),
                    detail: email.to_owned(),
                },
            )
            .await?;
        match refused {
            Ok(()) => {}
            Err(CodeRefused::NameTaken) => return Err(AppError::NameTaken(name.to_owned())),
            Err(CodeRefused::Active) => return Err(AppError::AlreadyActive(name.to_owned())),
            Err(CodeRefused::Revoked) => return Err(AppError::Revoked(name.to_owned())),
            Err(CodeRefused::TooSoon(last)) => {
                let next = last.saturating_add(secs_ms(config.code_resend_secs));
                return Err(AppError::TooSoon {
                    retry_after_ms: u64::try_from(next.saturating_sub(now)).unwrap_or(0),
                });
            }
        }
        if let Err(e) = self
            .inner
            .mailer
            .send_code(address, login.as_str(), &code, config.code_ttl_secs)
            .await
        {
            // A code nobody received must not count: it neither works nor delays the next.
            self.inner
                .store
                .apps()
                .drop_app_code(login.as_str(), &code_hash)
                .await?;
            tracing::warn!(app = name, error = %e, "could not send a registration code");
            return Err(AppError::Mail);
        }
        tracing::info!(app = name, "registration code sent");
        Ok(())
    }

    /// Activates a registration with the code from the e-mail; binds it to `instance`.
    pub(crate) async fn activate(
        &self,
        name: &str,
        code: &str,
        instance: &str,
    ) -> Result<Credentials, AppError> {
        check_instance(instance)?;
        let secret = format!("vapp_{}", random_token());
        let now = self.now_ms();
        let outcome = self
            .inner
            .store
            .apps()
            .activate_app(
                &Activate {
                    app: name,
                    code_hash: &token_hash(code.trim()),
                    instance,
                    secret_hash: &token_hash(&secret),
                    now,
                    max_attempts: i64::from(self.inner.config.code_attempts),
                },
                &AuditRecord {
                    at: now,
                    actor: format!("app:{name}"),
                    action: "app.activated",
                    target: name.to_owned(),
                    detail: format!("instance {instance}"),
                },
            )
            .await?;
        match outcome {
            Activation::Activated => {
                let app = self
                    .inner
                    .store
                    .apps()
                    .app(name)
                    .await?
                    .ok_or(AppError::NotFound("application"))?;
                tracing::info!(app = name, instance, "application activated");
                Ok(Credentials {
                    app: app.name,
                    user_id: app.user_id,
                    secret,
                })
            }
            Activation::Unknown => Err(AppError::NoRegistration(name.to_owned())),
            Activation::WrongCode => Err(AppError::WrongCode),
            Activation::Expired => Err(AppError::ExpiredCode),
            Activation::Used => Err(AppError::UsedCode),
            Activation::TooManyAttempts => Err(AppError::TooManyAttempts),
        }
    }

    /// Who holds this secret, if it is presented by the registered instance. A different
    /// instance is a copy of the application's database: refused, counted and audited.
    pub(crate) async fn authenticate(
        &self,
        secret: &str,
        instance: &str,
    ) -> Result<AppPrincipal, AppError> {
        let app = self
            .inner
            .store
            .apps()
            .app_by_secret(&token_hash(secret))
            .await?
            .ok_or(AppError::Unauthenticated)?;
        if app.instance_id.as_deref() != Some(instance) {
            let now = self.now_ms();
            // Every refusal is counted; the same copy is audited once an hour, so that a copy
            // retrying in a loop does not flood the audit log.
            let audited_lately = app.last_copy_instance.as_deref() == Some(instance)
                && app
                    .last_copy_at
                    .is_some_and(|at| now.saturating_sub(at) < 3_600_000);
            tracing::warn!(
                app = %app.name,
                registered = app.instance_id.as_deref().unwrap_or(""),
                instance,
                "refused a copy of an application's database"
            );
            self.inner
                .store
                .apps()
                .record_app_copy(
                    &app.name,
                    instance,
                    now,
                    (!audited_lately).then(|| AuditRecord {
                        at: now,
                        actor: format!("app:{}", app.name),
                        action: "app.copy_refused",
                        target: app.name.clone(),
                        detail: format!("instance {instance}"),
                    }),
                )
                .await?;
            return Err(AppError::DatabaseCopy {
                app: app.name,
                instance: instance.to_owned(),
            });
        }
        Ok(AppPrincipal {
            name: app.name,
            user_id: app.user_id,
        })
    }

    pub(crate) async fn list(&self) -> Result<Vec<AppRow>, AppError> {
        Ok(self.inner.store.apps().list().await?)
    }

    /// Revokes an application's credentials at once.
    pub(crate) async fn revoke(&self, name: &str, actor: &str) -> Result<(), AppError> {
        let done = self
            .inner
            .store
            .apps()
            .revoke_app(
                name,
                &AuditRecord {
                    at: self.now_ms(),
                    actor: actor.to_owned(),
                    action: "app.revoked",
                    target: name.to_owned(),
                    detail: String::new(),
                },
            )
            .await?;
        if done {
            Ok(())
        } else {
            Err(AppError::NotFound("application"))
        }
    }

    /// Publishes a business event from `app`: recorded once per idempotency key, routed to
    /// subscribed bots and to webhooks. `false` if the key was seen before for the same event;
    /// a key used before for another event is refused with `Conflict`, as for topics.
    pub(crate) async fn post_event(
        &self,
        app: &AppPrincipal,
        kind: String,
        object: Option<ObjectRef>,
        payload: String,
        key: String,
    ) -> Result<bool, AppError> {
        if kind.starts_with("action.") {
            return Err(AppError::BadRequest(
                "event kinds starting with 'action.' are the node's own".into(),
            ));
        }
        let event = BusinessEvent::new(app.name.clone(), kind, object, payload, key, self.now_ms())
            .map_err(|e| AppError::BadRequest(e.to_string()))?;
        let key = event.idempotency_key.clone();
        match self.inner.plugins.post_event(event).await? {
            Recorded::New(_) => {
                self.inner.wake.notify_one();
                Ok(true)
            }
            Recorded::Repeat(_) => Ok(false),
            Recorded::Conflict(id) => {
                tracing::info!(app = %app.name, key, earlier = id, "refused a reused idempotency key");
                Err(AppError::Conflict(format!(
                    "idempotency_key {key:?} was already used for a different event (event {id})"
                )))
            }
        }
    }

    // ---- webhooks ----

    /// Creates a webhook for `owner` (an application's user id, or `node`); returns it with
    /// the HMAC secret (empty for ed25519).
    pub(crate) async fn add_webhook(
        &self,
        owner: &str,
        hook: NewWebhook,
    ) -> Result<WebhookRow, AppError> {
        check_url(&hook.url)?;
        if owner != "node" {
            self.check_receiver(&hook.url).await?;
            if self.inner.store.apps().webhook_count(owner).await? >= MAX_WEBHOOKS_PER_APP {
                return Err(AppError::BadRequest(format!(
                    "an application has at most {MAX_WEBHOOKS_PER_APP} webhooks"
                )));
            }
        }
        if hook.kinds.is_empty() || hook.kinds.iter().any(|k| k.is_empty() || k.len() > 128) {
            return Err(AppError::BadRequest(
                "kinds: one or more event kinds of 1 to 128 bytes, or \"*\"".into(),
            ));
        }
        let row = WebhookRow {
            id: uuid::Uuid::now_v7().to_string(),
            owner: owner.to_owned(),
            url: hook.url,
            kinds: serde_json::to_string(&hook.kinds).unwrap_or_else(|_| "[]".into()),
            signing: hook.signing.as_str().to_owned(),
            secret: match hook.signing {
                Signing::HmacSha256 => random_token(),
                Signing::Ed25519 => String::new(),
            },
            created_at: self.now_ms(),
        };
        self.inner.store.apps().insert_webhook(&row).await?;
        Ok(row)
    }

    pub(crate) async fn webhooks(
        &self,
        owner: Option<&str>,
    ) -> Result<Vec<WebhookStatus>, AppError> {
        Ok(self.inner.store.apps().webhooks(owner).await?)
    }

    pub(crate) async fn remove_webhook(
        &self,
        id: &str,
        owner: Option<&str>,
    ) -> Result<(), AppError> {
        if self.inner.store.apps().delete_webhook(id, owner).await? {
            Ok(())
        } else {
            Err(AppError::NotFound("webhook"))
        }
    }

    /// Queues a webhook's failed requests again; how many.
    pub(crate) async fn retry_webhook(&self, id: &str) -> Result<u64, AppError> {
        let n = self
            .inner
            .store
            .apps()
            .retry_failed_deliveries(id, self.now_ms())
            .await?;
        self.inner.wake.notify_one();
        Ok(n)
    }

    // ---- topics ----

    /// Subscribes `app` to `topic`, pulled or pushed to `push` (signed as given). Returns the
    /// subscription with its HMAC secret.
    pub(crate) async fn subscribe(
        &self,
        app: &AppPrincipal,
        topic: &str,
        push: Option<(String, Signing)>,
    ) -> Result<SubscriptionRow, AppError> {
        check_topic(topic)?;
        if let Some((url, _)) = &push {
            check_url(url)?;
            self.check_receiver(url).await?;
        }
        let signing = push.as_ref().map_or(Signing::HmacSha256, |(_, s)| *s);
        let row = SubscriptionRow {
            topic: topic.to_owned(),
            subscriber: app.name.clone(),
            push_url: push.map(|(u, _)| u),
            signing: signing.as_str().to_owned(),
            secret: match signing {
                Signing::HmacSha256 => random_token(),
                Signing::Ed25519 => String::new(),
            },
        };
        self.inner
            .store
            .apps()
            .subscribe_topic(&row, self.now_ms())
            .await?;
        self.inner.wake.notify_one();
        Ok(row)
    }

    pub(crate) async fn unsubscribe(
        &self,
        app: &AppPrincipal,
        topic: &str,
    ) -> Result<(), AppError> {
        if self
            .inner
            .store
            .apps()
            .unsubscribe_topic(topic, &app.name)
            .await?
        {
            Ok(())
        } else {
            Err(AppError::NotFound("subscription"))
        }
    }

    /// Publishes once per idempotency key; returns the message id and whether it is new. A key
    /// used before for another payload is refused with `Conflict`, as a reused `client_msg_id`
    /// is for messages: the caller is told, not given the earlier message as its own.
    pub(crate) async fn publish(
        &self,
        app: &AppPrincipal,
        topic: &str,
        payload: &serde_json::Value,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<(i64, bool), AppError> {
        check_topic(topic)?;
        if key.is_empty() || key.len() > 128 {
            return Err(AppError::BadRequest(
                "idempotency_key is 1 to 128 bytes".into(),
            ));
        }
        let payload = payload.to_string();
        if payload.len() > MAX_TOPIC_PAYLOAD {
            return Err(AppError::BadRequest(format!(
                "a topic message's payload is at most {} KiB",
                MAX_TOPIC_PAYLOAD / 1024
            )));
        }
        let now = self.now_ms();
        let result = self
            .inner
            .store
            .apps()
            .publish_topic(&NewTopicMessage {
                topic,
                publisher: &app.name,
                idempotency_key: key,
                payload: &payload,
                now,
                expires_at: ttl.map(|t| now.saturating_add(dur_ms(t))),
            })
            .await?;
        match result {
            Published::New(id) => {
                self.inner.wake.notify_one();
                Ok((id, true))
            }
            Published::Repeat(id) => Ok((id, false)),
            Published::Conflict(id) => {
                tracing::info!(app = %app.name, topic, key, earlier = id, "refused a reused idempotency key");
                Err(AppError::Conflict(format!(
                    "idempotency_key {key:?} was already used on topic {topic:?} for a different payload (message {id})"
                )))
            }
        }
    }

    /// Leases up to `max` messages for `lease` (the configured default when `None`);
    /// unacknowledged ones come again after it.
    pub(crate) async fn pull(
        &self,
        app: &AppPrincipal,
        topic: &str,
        max: u32,
        lease: Option<Duration>,
    ) -> Result<Vec<TopicMessageRow>, AppError> {
        match self
            .inner
            .store
            .apps()
            .subscription(topic, &app.name)
            .await?
        {
            None => return Err(AppError::NotFound("subscription")),
            Some(s) if s.push_url.is_some() => {
                return Err(AppError::BadRequest(
                    "this subscription is pushed; its messages are not pulled".into(),
                ));
            }
            Some(_) => {}
        }
        let lease = lease
            .unwrap_or(Duration::from_secs(self.inner.config.topic_lease_secs))
            .min(MAX_LEASE);
        let now = self.now_ms();
        Ok(self
            .inner
            .store
            .apps()
            .pull_topic(
                topic,
                &app.name,
                now,
                now.saturating_add(dur_ms(lease)),
                i64::from(max.clamp(1, MAX_PULL)),
            )
            .await?)
    }

    pub(crate) async fn ack(
        &self,
        app: &AppPrincipal,
        topic: &str,
        ids: &[i64],
    ) -> Result<u64, AppError> {
        Ok(self
            .inner
            .store
            .apps()
            .ack_topic(topic, &app.name, ids)
            .await?)
    }

    /// Runs the webhook and push sender until `stop`.
    pub(crate) fn spawn_sender(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { webhooks::run(this, stop).await })
    }

    /// Whether `name` is an active application whose user is not locked.
    pub(crate) async fn is_active(&self, name: &str) -> Result<bool, AppError> {
        Ok(self.inner.store.apps().app_usable(name).await?)
    }

    /// Refuses receivers an application may not make the node call: loopback, link-local
    /// (cloud metadata services), unspecified and multicast addresses, unless the
    /// administrator allows loopback receivers. Private networks are allowed: that is where
    /// a company's ERP lives.
    async fn check_receiver(&self, url: &str) -> Result<(), AppError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| AppError::BadRequest(format!("{url:?} is not an http(s) URL")))?;
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']']);
        let port = parsed.port_or_known_default().unwrap_or(80);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| AppError::BadRequest(format!("cannot resolve {host}: {e}")))?
            .collect();
        let allow_loopback = self.inner.config.allow_loopback_receivers;
        for a in &addrs {
            if !receiver_allowed(a.ip(), allow_loopback) {
                return Err(AppError::BadRequest(format!(
                    "{host} is {}, which applications may not send the node to",
                    a.ip()
                )));
            }
        }
        Ok(())
    }

    /// The node's public key, hex, against which ed25519-signed requests are checked.
    pub(crate) fn public_key_hex(&self) -> String {
        hex::encode(self.inner.key.verifying_key().as_bytes())
    }
}

fn check_instance(instance: &str) -> Result<(), AppError> {
    if instance.is_empty() || instance.len() > 128 || instance.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "instance_id is 1 to 128 printable characters".into(),
        ));
    }
    Ok(())
}

fn check_topic(topic: &str) -> Result<(), AppError> {
    let ok = !topic.is_empty()
        && topic.len() <= 128
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AppError::BadRequest(
            "a topic name is 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' or '-'".into(),
        ))
    }
}

fn check_url(url: &str) -> Result<(), AppError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(AppError::BadRequest(format!(
            "{url:?} is not an http(s) URL"
        ))),
    }
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn dur_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
