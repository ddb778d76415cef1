//! Business applications, registration codes, outgoing webhooks and app-to-app topics.

use crate::db::{Tx, query, query_as, query_scalar};

use super::audit::{AuditRecord, append};
use super::{Apps, StoreError};

/// An application as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppRow {
    pub name: String,
    pub user_id: String,
    pub email: String,
    pub status: String,
    pub instance_id: Option<String>,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub copy_refusals: i64,
    pub last_copy_at: Option<i64>,
    pub last_copy_instance: Option<String>,
}

/// A code to record for an application, created as pending if it is new.
#[derive(Debug)]
pub struct NewCode<'a> {
    pub app: &'a str,
    pub user_id: &'a str,
    pub display_name: &'a str,
    pub email: &'a str,
    pub code_hash: &'a str,
    pub now: i64,
    pub expires_at: i64,
    /// Refused with [`CodeRefused::TooSoon`] if the last code went out after this.
    pub not_after: i64,
    /// An administrator's registration: a pending or revoked application's address may
    /// change (someone else may have started it with theirs).
    pub by_admin: bool,
}

/// Why no code was recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum CodeRefused {
    /// The name belongs to a person, a bot or an application registered with another address.
    NameTaken,
    /// The application is already active; an administrator revokes it first.
    Active,
    /// A code went out recently; the next one may go out at this time.
    TooSoon(i64),
    /// An administrator revoked the application; only an administrator registers it again.
    Revoked,
}

/// An activation attempt.
#[derive(Debug, Clone, Copy)]
pub struct Activate<'a> {
    pub app: &'a str,
    pub code_hash: &'a str,
    pub instance: &'a str,
    pub secret_hash: &'a str,
    pub now: i64,
    pub max_attempts: i64,
}

/// How an activation attempt ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Activation {
    /// The application is active with the new secret.
    Activated,
    /// No registration is pending under this name.
    Unknown,
    /// The code is not one that was sent.
    WrongCode,
    /// The code was sent but has expired.
    Expired,
    /// The code was already used.
    Used,
    /// Too many wrong codes: a new one must be requested.
    TooManyAttempts,
}

/// A webhook as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRow {
    pub id: String,
    pub owner: String,
    pub url: String,
    pub kinds: String,
    pub signing: String,
    pub secret: String,
    pub created_at: i64,
}

impl WebhookRow {
    fn wants(&self, kind: &str) -> bool {
        let kinds: Vec<String> = serde_json::from_str(&self.kinds).unwrap_or_default();
        kinds.iter().any(|k| k == "*" || k == kind)
    }
}

/// A webhook with the state of its deliveries.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookStatus {
    #[sqlx(flatten)]
    pub hook: WebhookRow,
    pub pending: i64,
    pub delivered: i64,
    pub failed: i64,
    pub last_error: Option<String>,
}

impl WebhookStatus {
    /// A webhook just created: nothing sent yet.
    pub fn fresh(hook: WebhookRow) -> Self {
        Self {
            hook,
            pending: 0,
            delivered: 0,
            failed: 0,
            last_error: None,
        }
    }
}

/// One webhook request due to be sent.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub webhook_id: String,
    pub kind: String,
    pub body: String,
    pub attempts: i64,
    pub url: String,
    pub signing: String,
    pub secret: String,
}

/// A topic subscription.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubscriptionRow {
    pub topic: String,
    pub subscriber: String,
    pub push_url: Option<String>,
    pub signing: String,
    pub secret: String,
}

/// A topic message handed to a subscriber.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopicMessageRow {
    pub id: i64,
    pub topic: String,
    pub publisher: String,
    pub payload: String,
    pub published_at: i64,
    pub expires_at: Option<i64>,
    pub attempts: i64,
}

/// A pushed topic message due to be sent, with where to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushRow {
    #[sqlx(flatten)]
    pub message: TopicMessageRow,
    pub subscriber: String,
    pub push_url: String,
    pub signing: String,
    pub secret: String,
}

/// A message to publish on a topic.
#[derive(Debug)]
pub struct NewTopicMessage<'a> {
    pub topic: &'a str,
    pub publisher: &'a str,
    pub idempotency_key: &'a str,
    pub payload: &'a str,
    pub now: i64,
    pub expires_at: Option<i64>,
}

/// What publishing a topic message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A new message, with its id.
    New(i64),
    /// The key was used before with the same payload: the earlier message's id.
    Repeat(i64),
    /// The key was used before with another payload: the earlier message's id; nothing stored.
    Conflict(i64),
}

/// `SELECT <every application column> FROM applications <tail>`, as a static string.
macro_rules! select_apps {
    ($($tail:expr),+) => {
        concat!(
            "SELECT name, user_id, email, status, instance_id, created_at, activated_at, ",
            "copy_refusals, last_copy_at, last_copy_instance FROM applications ",
            $($tail),+
        )
    };
}

/// An application that may act: active, and its user not locked.
macro_rules! usable {
    () => {
        "status = 'active' AND NOT EXISTS \
         (SELECT 1 FROM users u WHERE u.id = applications.user_id AND u.locked)"
    };
}

impl Apps<'_> {
    /// The outgoing queue's doorbell: rung after a commit that queued webhook deliveries here
    /// ([`Self::enqueue_owner_webhooks`], a new business event), and by whoever else makes a
    /// delivery or a topic push due. The sender waits on it, or until [`Self::next_due`].
    pub fn queued(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.db.queued.clone()
    }

    /// When the earliest pending webhook delivery or topic push is due (ms), if any is
    /// pending at all.
    pub async fn next_due(&self, now: i64) -> Result<Option<i64>, StoreError> {
        Ok(query_scalar(
            "SELECT MIN(due) FROM ( \
             SELECT MIN(next_at) AS due FROM webhook_deliveries WHERE state = 'pending' \
             UNION ALL \
             SELECT MIN(d.visible_at) AS due FROM topic_deliveries d \
             JOIN topic_subscriptions s ON s.topic = d.topic AND s.subscriber = d.subscriber \
             WHERE s.push_url IS NOT NULL AND (d.expires_at IS NULL OR d.expires_at > $1) \
             ) t",
        )
        .bind(now)
        .fetch_one(&self.db.read)
        .await?)
    }

    /// Records a new registration code, creating the pending application (and its user of
    /// kind `app`) on the first one.
    pub async fn record_app_code(
        &self,
        code: &NewCode<'_>,
        audit: &AuditRecord,
    ) -> Result<Result<(), CodeRefused>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let existing: Option<AppRow> = query_as(select_apps!("WHERE name = $1"))
            .bind(code.app)
            .fetch_optional(&mut tx)
            .await?;
        match &existing {
            Some(app) if app.status == "active" => return Ok(Err(CodeRefused::Active)),
            Some(app) if app.status == "revoked" && !code.by_admin => {
                return Ok(Err(CodeRefused::Revoked));
            }
            Some(app) if app.email != code.email && !code.by_admin => {
                // Someone else's registration holds the name while one of its codes lives.
                let live: Option<i64> = query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM application_codes WHERE application = $1 \
                     AND used_at IS NULL AND expires_at > $2",
                )
                .bind(code.app)
                .bind(code.now)
                .fetch_optional(&mut tx)
                .await?;
                if live.is_some() || app.status != "pending" {
                    return Ok(Err(CodeRefused::NameTaken));
                }
                query("DELETE FROM application_codes WHERE application = $1")
                    .bind(code.app)
                    .execute(&mut tx)
                    .await?;
                query("UPDATE applications SET email = $1 WHERE name = $2")
                    .bind(code.email)
                    .bind(code.app)
                    .execute(&mut tx)
                    .await?;
            }
            Some(app) if app.email != code.email => {
                // An administrator gives the application another address: codes sent to
                // the earlier one stop working.
                query("DELETE FROM application_codes WHERE application = $1")
                    .bind(code.app)
                    .execute(&mut tx)
                    .await?;
                query("UPDATE applications SET status = 'pending', email = $1 WHERE name = $2")
                    .bind(code.email)
                    .bind(code.app)
                    .execute(&mut tx)
                    .await?;
            }
            Some(_) => {
                let last: Option<i64> = query_scalar(
                    "SELECT MAX(sent_at) FROM application_codes WHERE application = $1",
                )
                .bind(code.app)
                .fetch_one(&mut tx)
                .await?;
                if let Some(last) = last
                    && last > code.not_after
                {
                    return Ok(Err(CodeRefused::TooSoon(last)));
                }
                // A revoked application registers anew: it becomes pending again.
                query("UPDATE applications SET status = 'pending' WHERE name = $1")
                    .bind(code.app)
                    .execute(&mut tx)
                    .await?;
            }
            None => {
                let taken: Option<i64> =
                    query_scalar("SELECT CAST(1 AS BIGINT) FROM users WHERE login = $1 OR id = $2")
                        .bind(code.app)
                        .bind(code.user_id)
                        .fetch_optional(&mut tx)
                        .await?;
                if taken.is_some() {
                    return Ok(Err(CodeRefused::NameTaken));
                }
                // Objects already named after this application (opened by an administrator
                // or a bot) would all become its own: only an administrator decides that.
                let used: Option<i64> = query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM discussions WHERE object_app = $1 \
                     UNION SELECT CAST(1 AS BIGINT) FROM object_access WHERE object_app = $2 LIMIT 1",
                )
                .bind(code.app)
                .bind(code.app)
                .fetch_optional(&mut tx)
                .await?;
                if used.is_some() && !code.by_admin {
                    return Ok(Err(CodeRefused::NameTaken));
                }
                query(
                    "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, \
                     locked, created_at, updated_at, kind) \
                     VALUES ($1, $2, $3, $4, '!', FALSE, FALSE, $5, $6, 'app')",
                )
                .bind(code.user_id)
                .bind(code.app)
                .bind(code.display_name)
                .bind(code.email)
                .bind(code.now)
                .bind(code.now)
                .execute(&mut tx)
                .await
                .map_err(StoreError::from_insert)?;
                query(
                    "INSERT INTO applications (name, user_id, email, status, created_at) \
                     VALUES ($1, $2, $3, 'pending', $4)",
                )
                .bind(code.app)
                .bind(code.user_id)
                .bind(code.email)
                .bind(code.now)
                .execute(&mut tx)
                .await
                .map_err(StoreError::from_insert)?;
            }
        }
        // One live code at a time, each with its own budget of wrong tries.
        query("DELETE FROM application_codes WHERE application = $1 AND used_at IS NULL")
            .bind(code.app)
            .execute(&mut tx)
            .await?;
        query(
            "INSERT INTO application_codes (application, code_hash, sent_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(code.app)
        .bind(code.code_hash)
        .bind(code.now)
        .bind(code.expires_at)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from_insert)?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Forgets a code that could not be sent, so that it neither works nor delays the next; a
    /// registration left with no code and never activated is forgotten too, so that a
    /// mistyped address does not hold the name.
    pub async fn drop_app_code(&self, app: &str, code_hash: &str) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        query("DELETE FROM application_codes WHERE application = $1 AND code_hash = $2")
            .bind(app)
            .bind(code_hash)
            .execute(&mut tx)
            .await?;
        let user: Option<String> = query_scalar(
            "DELETE FROM applications WHERE name = $1 AND status = 'pending' \
             AND activated_at IS NULL AND NOT EXISTS \
             (SELECT 1 FROM application_codes WHERE application = $2) RETURNING user_id",
        )
        .bind(app)
        .bind(app)
        .fetch_optional(&mut tx)
        .await?;
        if let Some(user) = user {
            query("DELETE FROM users WHERE id = $1 AND kind = 'app'")
                .bind(user)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Activates a pending application with a code: binds it to `instance` and sets its
    /// secret. A wrong code counts against every live code of the application.
    pub async fn activate_app(
        &self,
        a: &Activate<'_>,
        audit: &AuditRecord,
    ) -> Result<Activation, StoreError> {
        let Activate {
            app,
            code_hash,
            instance,
            secret_hash,
            now,
            max_attempts,
        } = *a;
        let mut tx = self.db.write.begin().await?;
        let status: Option<String> =
            query_scalar("SELECT status FROM applications WHERE name = $1")
                .bind(app)
                .fetch_optional(&mut tx)
                .await?;
        let used: Option<i64> = query_scalar(
            "SELECT used_at FROM application_codes WHERE application = $1 AND code_hash = $2 \
             AND used_at IS NOT NULL",
        )
        .bind(app)
        .bind(code_hash)
        .fetch_optional(&mut tx)
        .await?;
        if used.is_some() {
            return Ok(Activation::Used);
        }
        if status.as_deref() != Some("pending") {
            return Ok(Activation::Unknown);
        }
        let attempts: Option<i64> = query_scalar(
            "SELECT MAX(attempts) FROM application_codes WHERE application = $1 AND used_at IS NULL",
        )
        .bind(app)
        .fetch_one(&mut tx)
        .await?;
        if attempts.is_some_and(|a| a >= max_attempts) {
            return Ok(Activation::TooManyAttempts);
        }
        let found: Option<(i64, Option<i64>)> = query_as(
            "SELECT expires_at, used_at FROM application_codes \
             WHERE application = $1 AND code_hash = $2",
        )
        .bind(app)
        .bind(code_hash)
        .fetch_optional(&mut tx)
        .await?;
        let outcome = match found {
            None => Activation::WrongCode,
            Some((_, Some(_))) => Activation::Used,
            Some((expires, None)) if expires <= now => Activation::Expired,
            Some(_) => Activation::Activated,
        };
        if outcome == Activation::WrongCode {
            query(
                "UPDATE application_codes SET attempts = attempts + 1 \
                 WHERE application = $1 AND used_at IS NULL",
            )
            .bind(app)
            .execute(&mut tx)
            .await?;
            tx.commit().await?;
            return Ok(outcome);
        }
        if outcome != Activation::Activated {
            return Ok(outcome);
        }
        query("UPDATE application_codes SET used_at = $1 WHERE application = $2")
            .bind(now)
            .bind(app)
            .execute(&mut tx)
            .await?;
        query(
            "UPDATE applications SET status = 'active', secret_hash = $1, instance_id = $2, \
             activated_at = $3 WHERE name = $4",
        )
        .bind(secret_hash)
        .bind(instance)
        .bind(now)
        .bind(app)
        .execute(&mut tx)
        .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn app(&self, name: &str) -> Result<Option<AppRow>, StoreError> {
        Ok(query_as(select_apps!("WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.db.read)
            .await?)
    }

    /// The active application holding this secret.
    pub async fn app_by_secret(&self, secret_hash: &str) -> Result<Option<AppRow>, StoreError> {
        Ok(
            query_as(select_apps!("WHERE secret_hash = $1 AND ", usable!()))
                .bind(secret_hash)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    pub async fn list(&self) -> Result<Vec<AppRow>, StoreError> {
        Ok(query_as(select_apps!("ORDER BY name"))
            .fetch_all(&self.db.read)
            .await?)
    }

    /// Whether the application named `name` may act (see [`usable!`]).
    pub async fn app_usable(&self, name: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(concat!(
            "SELECT CAST(1 AS BIGINT) FROM applications WHERE name = $1 AND ",
            usable!()
        ))
        .bind(name)
        .fetch_optional(&self.db.read)
        .await?;
        Ok(found.is_some())
    }

    /// Counts a refused copy of an application's database and audits it.
    pub async fn record_app_copy(
        &self,
        app: &str,
        instance: &str,
        now: i64,
        audit: Option<AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        query(
            "UPDATE applications SET copy_refusals = copy_refusals + 1, last_copy_at = $1, \
             last_copy_instance = $2 WHERE name = $3",
        )
        .bind(now)
        .bind(instance)
        .bind(app)
        .execute(&mut tx)
        .await?;
        if let Some(audit) = &audit {
            append(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Revokes an application: its secret stops working at once. `false` if there is none.
    pub async fn revoke_app(&self, app: &str, audit: &AuditRecord) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let done =
            query("UPDATE applications SET status = 'revoked', secret_hash = NULL WHERE name = $1")
                .bind(app)
                .execute(&mut tx)
                .await?
                .rows_affected()
                > 0;
        if done {
            // Nothing more goes to it: its codes, webhooks (with their queues) and topic
            // subscriptions (with what they had not acknowledged) go.
            query("DELETE FROM application_codes WHERE application = $1")
                .bind(app)
                .execute(&mut tx)
                .await?;
            query(
                "DELETE FROM webhooks WHERE owner = (SELECT user_id FROM applications \
                 WHERE name = $1)",
            )
            .bind(app)
            .execute(&mut tx)
            .await?;
            query("DELETE FROM topic_deliveries WHERE subscriber = $1")
                .bind(app)
                .execute(&mut tx)
                .await?;
            query("DELETE FROM topic_subscriptions WHERE subscriber = $1")
                .bind(app)
                .execute(&mut tx)
                .await?;
            append(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Whether `user` is the active application named `app`.
    pub async fn is_app(&self, user: &str, app: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(IS_APP)
            .bind(app)
            .bind(user)
            .fetch_optional(&self.db.read)
            .await?;
        Ok(found.is_some())
    }

    // ---- webhooks ----

    pub async fn insert_webhook(&self, hook: &WebhookRow) -> Result<(), StoreError> {
        query(
            "INSERT INTO webhooks (id, owner, url, kinds, signing, secret, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&hook.id)
        .bind(&hook.owner)
        .bind(&hook.url)
        .bind(&hook.kinds)
        .bind(&hook.signing)
        .bind(&hook.secret)
        .bind(hook.created_at)
        .execute(&self.db.write)
        .await
        .map_err(StoreError::from_insert)?;
        Ok(())
    }

    /// Removes a webhook of `owner` (any owner's when `None`); `false` if there was none.
    pub async fn delete_webhook(&self, id: &str, owner: Option<&str>) -> Result<bool, StoreError> {
        let done = query("DELETE FROM webhooks WHERE id = $1 AND ($2 IS NULL OR owner = $3)")
            .bind(id)
            .bind(owner)
            .bind(owner)
            .execute(&self.db.write)
            .await?
            .rows_affected();
        Ok(done > 0)
    }

    /// Webhooks of `owner` (all when `None`) with their delivery counts.
    pub async fn webhooks(&self, owner: Option<&str>) -> Result<Vec<WebhookStatus>, StoreError> {
        Ok(query_as(
            "SELECT w.*, \
             (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id \
              AND d.state = 'pending') AS pending, \
             (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id \
              AND d.state = 'delivered') AS delivered, \
             (SELECT COUNT(*) FROM webhook_deliveries d WHERE d.webhook_id = w.id \
              AND d.state = 'failed') AS failed, \
             (SELECT d.last_error FROM webhook_deliveries d WHERE d.webhook_id = w.id \
              AND d.last_error IS NOT NULL ORDER BY d.id DESC LIMIT 1) AS last_error \
             FROM webhooks w WHERE ($1 IS NULL OR w.owner = $2) ORDER BY w.created_at, w.id",
        )
        .bind(owner)
        .bind(owner)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Queues `body` for the webhooks of `owner` that want `kind`, in one transaction; how
    /// many were queued.
    pub async fn enqueue_owner_webhooks(
        &self,
        owner: &str,
        kind: &str,
        body: &str,
        now: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let n = enqueue_webhooks(&mut tx, Recipients::Owner(owner), kind, body, now).await?;
        tx.commit().await?;
        if n > 0 {
            self.db.queued.notify_one();
        }
        Ok(n)
    }

    /// How many webhooks `owner` has.
    pub async fn webhook_count(&self, owner: &str) -> Result<i64, StoreError> {
        Ok(
            query_scalar("SELECT COUNT(*) FROM webhooks WHERE owner = $1")
                .bind(owner)
                .fetch_one(&self.db.read)
                .await?,
        )
    }

    /// Webhook requests waiting to be sent (or sent again).
    pub async fn webhook_queue_len(&self) -> Result<i64, StoreError> {
        Ok(
            query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE state = 'pending'")
                .fetch_one(&self.db.read)
                .await?,
        )
    }

    /// Removes what is no longer needed: webhook requests finished a week ago, and topic
    /// messages nobody still has to receive once a day has passed (their idempotency keys
    /// are kept that long).
    pub async fn prune_app_queues(&self, now: i64) -> Result<u64, StoreError> {
        const WEEK: i64 = 7 * 24 * 3600 * 1000;
        const DAY: i64 = 24 * 3600 * 1000;
        let mut tx = self.db.write.begin().await?;
        let hooks =
            query("DELETE FROM webhook_deliveries WHERE state <> 'pending' AND done_at < $1")
                .bind(now - WEEK)
                .execute(&mut tx)
                .await?
                .rows_affected();
        let messages = query(
            "DELETE FROM topic_messages WHERE (expires_at IS NOT NULL AND expires_at <= $1) \
             OR (published_at < $2 AND NOT EXISTS \
                 (SELECT 1 FROM topic_deliveries d WHERE d.message_id = topic_messages.id))",
        )
        .bind(now)
        .bind(now - DAY)
        .execute(&mut tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(hooks + messages)
    }

    /// Requests due now, oldest first.
    pub async fn due_deliveries(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(query_as(
            "SELECT d.id, d.webhook_id, d.kind, d.body, d.attempts, w.url, w.signing, w.secret \
             FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id \
             WHERE d.state = 'pending' AND d.next_at <= $1 ORDER BY d.next_at, d.id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Records the outcome of one attempt: delivered, retried at `next_at`, or failed for
    /// good.
    pub async fn delivery_attempted(
        &self,
        id: i64,
        outcome: Attempt<'_>,
        now: i64,
    ) -> Result<(), StoreError> {
        let (state, next_at, error) = match outcome {
            Attempt::Delivered => ("delivered", now, None),
            Attempt::Retry { at, error } => ("pending", at, Some(error)),
            Attempt::Failed { error } => ("failed", now, Some(error)),
        };
        query(
            "UPDATE webhook_deliveries SET state = $1, next_at = $2, attempts = attempts + 1, \
             last_error = COALESCE($3, last_error), \
             done_at = CASE WHEN $4 = 'pending' THEN NULL ELSE $5 END WHERE id = $6",
        )
        .bind(state)
        .bind(next_at)
        .bind(error)
        .bind(state)
        .bind(now)
        .bind(id)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Puts a webhook's failed requests back in the queue; how many.
    pub async fn retry_failed_deliveries(
        &self,
        webhook: &str,
        now: i64,
    ) -> Result<u64, StoreError> {
        Ok(query(
            "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, next_at = $1 \
             WHERE webhook_id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(webhook)
        .execute(&self.db.write)
        .await?
        .rows_affected())
    }

    // ---- topics ----

    pub async fn subscribe_topic(&self, sub: &SubscriptionRow, now: i64) -> Result<(), StoreError> {
        query(
            "INSERT INTO topic_subscriptions (topic, subscriber, push_url, signing, secret, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (topic, subscriber) DO UPDATE \
             SET push_url = excluded.push_url, signing = excluded.signing, \
             secret = excluded.secret",
        )
        .bind(&sub.topic)
        .bind(&sub.subscriber)
        .bind(&sub.push_url)
        .bind(&sub.signing)
        .bind(&sub.secret)
        .bind(now)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Ends a subscription and drops what it had not acknowledged; `false` if there was none.
    pub async fn unsubscribe_topic(
        &self,
        topic: &str,
        subscriber: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let done = query("DELETE FROM topic_subscriptions WHERE topic = $1 AND subscriber = $2")
            .bind(topic)
            .bind(subscriber)
            .execute(&mut tx)
            .await?
            .rows_affected();
        query("DELETE FROM topic_deliveries WHERE topic = $1 AND subscriber = $2")
            .bind(topic)
            .bind(subscriber)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(done > 0)
    }

    pub async fn subscription(
        &self,
        topic: &str,
        subscriber: &str,
    ) -> Result<Option<SubscriptionRow>, StoreError> {
        Ok(query_as(
            "SELECT topic, subscriber, push_url, signing, secret FROM topic_subscriptions \
             WHERE topic = $1 AND subscriber = $2",
        )
        .bind(topic)
        .bind(subscriber)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// Publishes a message once per (topic, publisher, key) and gives every subscription a
    /// delivery of it. A key used before answers the earlier message: a `Repeat` if its payload
    /// is the same text, a `Conflict` if not. Expired messages are removed here on the way, a
    /// few at a time, so that storage does not grow without a cleanup job.
    pub async fn publish_topic(&self, m: &NewTopicMessage<'_>) -> Result<Published, StoreError> {
        let mut tx = self.db.write.begin().await?;
        query(
            "DELETE FROM topic_messages WHERE id IN (SELECT id FROM topic_messages \
             WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT 100)",
        )
        .bind(m.now)
        .execute(&mut tx)
        .await?;
        let inserted: Option<i64> = query_scalar(
            "INSERT INTO topic_messages (topic, publisher, idempotency_key, payload, \
             published_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (topic, publisher, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(m.topic)
        .bind(m.publisher)
        .bind(m.idempotency_key)
        .bind(m.payload)
        .bind(m.now)
        .bind(m.expires_at)
        .fetch_optional(&mut tx)
        .await?;
        let result = match inserted {
            Some(id) => {
                query(
                    "INSERT INTO topic_deliveries (subscriber, topic, message_id, visible_at, \
                     expires_at) SELECT subscriber, topic, $1, $2, $3 FROM topic_subscriptions \
                     WHERE topic = $4",
                )
                .bind(id)
                .bind(m.now)
                .bind(m.expires_at)
                .bind(m.topic)
                .execute(&mut tx)
                .await?;
                Published::New(id)
            }
            None => {
                let (id, payload): (i64, String) = query_as(
                    "SELECT id, payload FROM topic_messages WHERE topic = $1 AND publisher = $2 \
                     AND idempotency_key = $3",
                )
                .bind(m.topic)
                .bind(m.publisher)
                .bind(m.idempotency_key)
                .fetch_one(&mut tx)
                .await?;
                if payload == m.payload {
                    Published::Repeat(id)
                } else {
                    Published::Conflict(id)
                }
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    /// Leases up to `max` visible, unexpired messages of a subscription until `lease_until`.
    pub async fn pull_topic(
        &self,
        topic: &str,
        subscriber: &str,
        now: i64,
        lease_until: i64,
        max: i64,
    ) -> Result<Vec<TopicMessageRow>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let rows: Vec<TopicMessageRow> = query_as(
            "SELECT m.id, m.topic, m.publisher, m.payload, m.published_at, m.expires_at, \
             d.attempts + 1 AS attempts FROM topic_deliveries d \
             JOIN topic_messages m ON m.id = d.message_id \
             WHERE d.subscriber = $1 AND d.topic = $2 AND d.visible_at <= $3 \
             AND (d.expires_at IS NULL OR d.expires_at > $4) ORDER BY m.id LIMIT $5",
        )
        .bind(subscriber)
        .bind(topic)
        .bind(now)
        .bind(now)
        .bind(max)
        .fetch_all(&mut tx)
        .await?;
        for r in &rows {
            query(
                "UPDATE topic_deliveries SET visible_at = $1, attempts = attempts + 1 \
                 WHERE subscriber = $2 AND topic = $3 AND message_id = $4",
            )
            .bind(lease_until)
            .bind(subscriber)
            .bind(topic)
            .bind(r.id)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// Acknowledges messages of a subscription; how many were pending.
    pub async fn ack_topic(
        &self,
        topic: &str,
        subscriber: &str,
        ids: &[i64],
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let mut done = 0;
        for id in ids {
            done += query(
                "DELETE FROM topic_deliveries WHERE subscriber = $1 AND topic = $2 \
                 AND message_id = $3",
            )
            .bind(subscriber)
            .bind(topic)
            .bind(id)
            .execute(&mut tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Pushed subscriptions' messages due now.
    pub async fn due_pushes(&self, now: i64, limit: i64) -> Result<Vec<PushRow>, StoreError> {
        Ok(query_as(
            "SELECT m.id, m.topic, m.publisher, m.payload, m.published_at, m.expires_at, \
             d.attempts + 1 AS attempts, d.subscriber, s.push_url, s.signing, s.secret \
             FROM topic_deliveries d JOIN topic_messages m ON m.id = d.message_id \
             JOIN topic_subscriptions s ON s.topic = d.topic AND s.subscriber = d.subscriber \
             WHERE s.push_url IS NOT NULL AND d.visible_at <= $1 \
             AND (d.expires_at IS NULL OR d.expires_at > $2) ORDER BY d.visible_at, m.id LIMIT $3",
        )
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Puts a pushed message off until `at` after a failed attempt.
    pub async fn push_failed(
        &self,
        topic: &str,
        subscriber: &str,
        id: i64,
        at: i64,
    ) -> Result<(), StoreError> {
        query(
            "UPDATE topic_deliveries SET visible_at = $1, attempts = attempts + 1 \
             WHERE subscriber = $2 AND topic = $3 AND message_id = $4",
        )
        .bind(at)
        .bind(subscriber)
        .bind(topic)
        .bind(id)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }
}

/// How one webhook attempt ended.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    Delivered,
    Retry { at: i64, error: &'a str },
    Failed { error: &'a str },
}

pub(super) const IS_APP: &str = "SELECT CAST(1 AS BIGINT) FROM applications WHERE name = $1 AND user_id = $2 AND status = 'active'";

/// Which webhooks a request goes to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Recipients<'a> {
    /// The webhooks of this owner (an application's user id).
    Owner(&'a str),
    /// A business event from this source application: the node's webhooks and the source's
    /// own. Applications share data with each other through topics, not through events.
    EventFrom(&'a str),
}

/// Queues `body` for the webhooks of `to` that want `kind`.
pub(super) async fn enqueue_webhooks(
    conn: &mut Tx,
    to: Recipients<'_>,
    kind: &str,
    body: &str,
    now: i64,
) -> Result<usize, StoreError> {
    let hooks: Vec<WebhookRow> = match to {
        Recipients::Owner(owner) => {
            query_as("SELECT * FROM webhooks WHERE owner = $1")
                .bind(owner)
                .fetch_all(&mut *conn)
                .await?
        }
        Recipients::EventFrom(source) => {
            query_as(
                "SELECT * FROM webhooks WHERE owner = 'node' OR owner = \
                 (SELECT user_id FROM applications WHERE name = $1)",
            )
            .bind(source)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut n = 0;
    for hook in hooks.iter().filter(|h| h.wants(kind)) {
        query(
            "INSERT INTO webhook_deliveries (webhook_id, kind, body, state, next_at, created_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5)",
        )
        .bind(&hook.id)
        .bind(kind)
        .bind(body)
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        n += 1;
    }
    Ok(n)
}
