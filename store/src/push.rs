//! Presence choices, notification settings, push endpoints and the push queue.

use super::{Push, StoreError};
use crate::db::{Sql, query, query_as, query_scalar};

/// A push endpoint as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushEndpointRow {
    pub id: String,
    pub user_id: String,
    pub device_id: String,
    pub kind: String,
    pub target: String,
    pub p256dh: String,
    pub auth: String,
    pub pushkey: String,
    pub created_at: i64,
}

/// A user's setting for one discussion.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRow {
    pub user_id: String,
    pub discussion_id: String,
    pub level: String,
    pub muted_until: Option<i64>,
}

/// A notification to queue for one endpoint.
#[derive(Debug, Clone)]
pub struct NewPush {
    pub endpoint_id: String,
    pub discussion_id: String,
    pub payload: String,
    pub urgent: bool,
    pub due_at: i64,
}

/// A queued notification with its endpoint, ready to send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PushJob {
    #[sqlx(rename = "job_id")]
    pub id: i64,
    pub discussion_id: String,
    pub payload: String,
    pub count: i64,
    pub urgent: bool,
    pub attempts: i64,
    #[sqlx(flatten)]
    pub endpoint: PushEndpointRow,
}

/// Every column of `push_endpoints e`, in `PushEndpointRow`'s order, as a static string.
macro_rules! endpoint_columns {
    () => {
        "e.id, e.user_id, e.device_id, e.kind, e.target, e.p256dh, e.auth, e.pushkey, \
         e.created_at"
    };
}

/// Every column of `notification_settings`, in `NotificationRow`'s order.
macro_rules! setting_columns {
    () => {
        "user_id, discussion_id, level, muted_until"
    };
}

impl Push<'_> {
    /// Sets (or, for the default without a mute, removes) a notification setting.
    pub async fn set_notification(
        &self,
        user: &str,
        discussion: &str,
        level: &str,
        muted_until: Option<i64>,
    ) -> Result<(), StoreError> {
        if level == "default" && muted_until.is_none() {
            query("DELETE FROM notification_settings WHERE user_id = $1 AND discussion_id = $2")
                .bind(user)
                .bind(discussion)
                .execute(&self.db.write)
                .await?;
            return Ok(());
        }
        query(
            "INSERT INTO notification_settings (user_id, discussion_id, level, muted_until) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, discussion_id) DO UPDATE SET \
             level = excluded.level, muted_until = excluded.muted_until",
        )
        .bind(user)
        .bind(discussion)
        .bind(level)
        .bind(muted_until)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// `user`'s settings that differ from the default.
    pub async fn notification_settings(
        &self,
        user: &str,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            setting_columns!(),
            " FROM notification_settings WHERE user_id = $1 ORDER BY discussion_id"
        ))
        .bind(user)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The settings of these users (a JSON array of ids) for one discussion.
    pub async fn notification_settings_for(
        &self,
        users_json: &str,
        discussion: &str,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            setting_columns!(),
            " FROM notification_settings \
             WHERE discussion_id = $1 AND user_id IN (SELECT value FROM json_each($2))"
        ))
        .bind(discussion)
        .bind(users_json)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Registers a device's endpoint, replacing its previous one of the same kind (whose
    /// queued notifications go with it); returns the endpoint's id.
    pub async fn register_push(&self, row: &PushEndpointRow) -> Result<String, StoreError> {
        let mut tx = self.db.write.begin().await?;
        query("DELETE FROM push_endpoints WHERE user_id = $1 AND device_id = $2 AND kind = $3")
            .bind(&row.user_id)
            .bind(&row.device_id)
            .bind(&row.kind)
            .execute(&mut tx)
            .await?;
        query(
            "INSERT INTO push_endpoints (id, user_id, device_id, kind, target, p256dh, auth, \
             pushkey, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&row.id)
        .bind(&row.user_id)
        .bind(&row.device_id)
        .bind(&row.kind)
        .bind(&row.target)
        .bind(&row.p256dh)
        .bind(&row.auth)
        .bind(&row.pushkey)
        .bind(row.created_at)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(row.id.clone())
    }

    /// Removes an endpoint of `user` (any user's, with `None`); whether it existed.
    pub async fn remove_push_endpoint(
        &self,
        user: Option<&str>,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done =
            query("DELETE FROM push_endpoints WHERE id = $1 AND ($2 IS NULL OR user_id = $3)")
                .bind(id)
                .bind(user)
                .bind(user)
                .execute(&self.db.write)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// `user`'s endpoints.
    pub async fn push_endpoints(&self, user: &str) -> Result<Vec<PushEndpointRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM push_endpoints e WHERE e.user_id = $1 ORDER BY e.created_at, e.id"
        ))
        .bind(user)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The users with at least one endpoint.
    pub async fn users_with_push(&self) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar("SELECT DISTINCT user_id FROM push_endpoints")
            .fetch_all(&self.db.read)
            .await?)
    }

    /// The endpoints of these users (a JSON array of ids) whose device still has a session.
    pub async fn live_push_endpoints(
        &self,
        users_json: &str,
        now: i64,
    ) -> Result<Vec<PushEndpointRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM push_endpoints e \
             WHERE e.user_id IN (SELECT value FROM json_each($1)) AND EXISTS (SELECT 1 FROM \
             sessions s WHERE s.user_id = e.user_id AND s.device_id = e.device_id \
             AND s.expires_at > $2)"
        ))
        .bind(users_json)
        .bind(now)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Queues notifications in one transaction; one already waiting for the same endpoint
    /// and discussion takes the newer payload and counts one more.
    pub async fn queue_pushes(&self, pushes: &[NewPush], now: i64) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        for p in pushes {
            query(
                "INSERT INTO push_queue (endpoint_id, discussion_id, payload, count, urgent, \
                 created_at, due_at) VALUES ($1, $2, $3, 1, $4, $5, $6) \
                 ON CONFLICT (endpoint_id, discussion_id) DO UPDATE SET \
                 payload = excluded.payload, count = push_queue.count + 1, \
                 urgent = push_queue.urgent OR excluded.urgent, attempts = 0, \
                 due_at = CASE WHEN excluded.due_at < push_queue.due_at \
                 THEN excluded.due_at ELSE push_queue.due_at END",
            )
            .bind(&p.endpoint_id)
            .bind(&p.discussion_id)
            .bind(&p.payload)
            .bind(p.urgent)
            .bind(now)
            .bind(p.due_at)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Queued notifications due at `now`, oldest first.
    pub async fn due_push_jobs(&self, now: i64, limit: i64) -> Result<Vec<PushJob>, StoreError> {
        Ok(query_as(concat!(
            "SELECT q.id AS job_id, q.discussion_id, q.payload, q.count, q.urgent, q.attempts, ",
            endpoint_columns!(),
            " FROM push_queue q JOIN push_endpoints e ON e.id = q.endpoint_id \
             WHERE q.due_at <= $1 ORDER BY q.due_at, q.id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// When the next queued notification is due, if any.
    pub async fn next_push_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(query_scalar("SELECT MIN(due_at) FROM push_queue")
            .fetch_one(&self.db.read)
            .await?)
    }

    /// A notification was delivered: removes it, unless newer messages were folded into it
    /// meanwhile (its count changed), in which case it stays to be sent again.
    pub async fn push_sent(&self, id: i64, count: i64) -> Result<(), StoreError> {
        query("DELETE FROM push_queue WHERE id = $1 AND count = $2")
            .bind(id)
            .bind(count)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// A notification failed: tries again at `due_at`.
    pub async fn push_retry(&self, id: i64, due_at: i64, error: &str) -> Result<(), StoreError> {
        query(
            "UPDATE push_queue SET attempts = attempts + 1, due_at = $1, last_error = $2 \
             WHERE id = $3",
        )
        .bind(due_at)
        .bind(error)
        .bind(id)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Drops what waits for these users (a JSON array of ids) from `discussion`.
    pub async fn drop_pushes_for(
        &self,
        discussion: &str,
        users_json: &str,
    ) -> Result<(), StoreError> {
        query(
            "DELETE FROM push_queue WHERE discussion_id = $1 AND endpoint_id IN \
             (SELECT id FROM push_endpoints WHERE user_id IN (SELECT value FROM json_each($2)))",
        )
        .bind(discussion)
        .bind(users_json)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Drops waiting notifications that carry this message.
    pub async fn drop_pushes_of_message(
        &self,
        discussion: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        query(Sql::two(
            "DELETE FROM push_queue WHERE discussion_id = $1 \
             AND json_extract(payload, '$.message_id') = $2",
            "DELETE FROM push_queue WHERE discussion_id = $1 \
             AND payload::jsonb ->> 'message_id' = $2",
        ))
        .bind(discussion)
        .bind(message_id)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// A notification is given up, unless newer messages were folded into it meanwhile.
    pub async fn push_dropped(&self, id: i64, count: i64) -> Result<(), StoreError> {
        query("DELETE FROM push_queue WHERE id = $1 AND count = $2")
            .bind(id)
            .bind(count)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Queued notifications (the metrics' queue depth, tests and the benchmark).
    pub async fn push_queue_len(&self) -> Result<i64, StoreError> {
        Ok(query_scalar("SELECT COUNT(*) FROM push_queue")
            .fetch_one(&self.db.read)
            .await?)
    }
}
