//! Plugin installations, their key-value stores and logs, the bot inbox and business events.

use super::audit::{AuditRecord, append};
use super::{Batch, Plugins, StoreError};
use crate::db::{Exec, query, query_as, query_scalar};

/// A plugin installation as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PluginRow {
    pub id: String,
    pub version: String,
    pub source: String,
    pub manifest: String,
    pub sha256: String,
    /// JSON array of strings.
    pub grants: String,
    /// JSON object of strings.
    pub config: String,
    pub enabled: bool,
    pub bot_user: Option<String>,
    pub installed_at: i64,
    pub updated_at: i64,
}

/// One line of a plugin's log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PluginLogRow {
    pub at: i64,
    pub level: String,
    pub message: String,
    pub fields: String,
}

/// What [`Plugins::uninstall_plugin`] did.
#[derive(Debug, Clone, Default)]
pub struct Uninstalled {
    /// The installation existed (and is gone).
    pub installed: bool,
    pub bot_user: Option<String>,
    /// Key-value entries kept, or removed when purging.
    pub kv_entries: u64,
    /// Log lines kept, or removed when purging.
    pub log_lines: u64,
    /// Inbox items (pending and dead) dropped.
    pub inbox_dropped: u64,
}

/// Something a bot is to be told.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxRow {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub next_at: i64,
}

/// What recording a business event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A new event, with its id.
    New(i64),
    /// The source sent this key before with the same kind, object and payload: the earlier
    /// event's id; nothing queued again.
    Repeat(i64),
    /// The source sent this key before for another event: the earlier event's id; nothing
    /// stored.
    Conflict(i64),
}

/// A business event to record.
#[derive(Debug, Clone)]
pub struct NewBusinessEvent<'a> {
    pub source: &'a str,
    pub kind: &'a str,
    pub idempotency_key: &'a str,
    pub object: Option<(&'a str, &'a str, &'a str)>,
    /// The inbox payload (JSON), the same for every plugin.
    pub inbox_payload: &'a str,
    pub payload: &'a str,
    pub occurred_at: i64,
    /// The body of the webhook request every webhook that wants this kind receives.
    pub webhook_body: &'a str,
}

/// Bytes each key-value entry counts against the quota beyond its key and value, so that
/// empty entries are not free.
const KV_ROW_OVERHEAD: u64 = 64;

/// How many log lines a plugin keeps.
const LOG_LINES_KEPT: i64 = 2000;

const INSERT_INBOX: &str = "INSERT INTO plugin_inbox (plugin_id, kind, payload, state, attempts, \
                            next_at, created_at) VALUES ($1, $2, $3, 'pending', 0, $4, $5)";

impl Plugins<'_> {
    pub async fn list(&self) -> Result<Vec<PluginRow>, StoreError> {
        Ok(query_as("SELECT * FROM plugins ORDER BY id")
            .fetch_all(&self.db.read)
            .await?)
    }

    pub async fn plugin(&self, id: &str) -> Result<Option<PluginRow>, StoreError> {
        Ok(query_as("SELECT * FROM plugins WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?)
    }

    /// Installs or replaces a plugin; its bot user (if any) is created when missing.
    pub async fn put_plugin(
        &self,
        row: &PluginRow,
        bot: Option<(&str, &str)>,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        if let (Some((login, display_name)), Some(user)) = (bot, &row.bot_user) {
            // A person with the bot's login keeps their account: the install is refused.
            let done = query(
                "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, \
                 locked, created_at, updated_at, kind) VALUES ($1, $2, $3, '', '!', FALSE, FALSE, $4, $5, 'bot') \
                 ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name \
                 WHERE users.kind = 'bot'",
            )
            .bind(user)
            .bind(login)
            .bind(display_name)
            .bind(row.updated_at)
            .bind(row.updated_at)
            .execute(&mut tx)
            .await
            .map_err(StoreError::from_insert)?
            .rows_affected();
            if done == 0 {
                return Err(StoreError::Conflict);
            }
        }
        query(
            "INSERT INTO plugins (id, version, source, manifest, sha256, grants, config, enabled, \
             bot_user, installed_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, source = excluded.source, \
             manifest = excluded.manifest, sha256 = excluded.sha256, grants = excluded.grants, \
             config = excluded.config, enabled = excluded.enabled, bot_user = excluded.bot_user, \
             updated_at = excluded.updated_at",
        )
        .bind(&row.id)
        .bind(&row.version)
        .bind(&row.source)
        .bind(&row.manifest)
        .bind(&row.sha256)
        .bind(&row.grants)
        .bind(&row.config)
        .bind(row.enabled)
        .bind(&row.bot_user)
        .bind(row.installed_at)
        .bind(row.updated_at)
        .execute(&mut tx)
        .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a plugin's installation and its inbox; with `purge`, also its key-value
    /// entries and log (also when it is no longer installed). Its bot user stays: its messages
    /// are history. Nothing is written (and `installed` is false) when there was no
    /// installation and nothing was purged.
    pub async fn uninstall_plugin(
        &self,
        id: &str,
        purge: bool,
        audit: &AuditRecord,
    ) -> Result<Uninstalled, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let bot_user: Option<Option<String>> =
            query_scalar("DELETE FROM plugins WHERE id = $1 RETURNING bot_user")
                .bind(id)
                .fetch_optional(&mut tx)
                .await?;
        let inbox_dropped = query("DELETE FROM plugin_inbox WHERE plugin_id = $1")
            .bind(id)
            .execute(&mut tx)
            .await?
            .rows_affected();
        let (kv_entries, log_lines) = if purge {
            let kv = query("DELETE FROM plugin_kv WHERE plugin_id = $1")
                .bind(id)
                .execute(&mut tx)
                .await?
                .rows_affected();
            let logs = query("DELETE FROM plugin_logs WHERE plugin_id = $1")
                .bind(id)
                .execute(&mut tx)
                .await?
                .rows_affected();
            (kv, logs)
        } else {
            let kv: i64 = query_scalar("SELECT COUNT(*) FROM plugin_kv WHERE plugin_id = $1")
                .bind(id)
                .fetch_one(&mut tx)
                .await?;
            let logs: i64 = query_scalar("SELECT COUNT(*) FROM plugin_logs WHERE plugin_id = $1")
                .bind(id)
                .fetch_one(&mut tx)
                .await?;
            (kv as u64, logs as u64)
        };
        let done = Uninstalled {
            installed: bot_user.is_some(),
            bot_user: bot_user.flatten(),
            kv_entries,
            log_lines,
            inbox_dropped,
        };
        if done.installed || (purge && (kv_entries > 0 || log_lines > 0)) {
            append(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(done)
    }

    pub async fn set_plugin_enabled(
        &self,
        id: &str,
        enabled: bool,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let done = query("UPDATE plugins SET enabled = $1, updated_at = $2 WHERE id = $3")
            .bind(enabled)
            .bind(audit.at)
            .bind(id)
            .execute(&mut tx)
            .await?
            .rows_affected()
            > 0;
        if done {
            append(&mut tx, audit).await?;
            tx.commit().await?;
        }
        Ok(done)
    }

    pub async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            query_scalar("SELECT value FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
                .bind(plugin)
                .bind(key)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    /// Sets `key` unless the plugin's keys and values would then exceed `max_total` bytes;
    /// `false` when refused.
    pub async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: &[u8],
        max_total: u64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let used: i64 = query_scalar(
            "SELECT CAST(COALESCE(SUM(octet_length(key) + length(value) + $1), 0) AS BIGINT) \
             FROM plugin_kv WHERE plugin_id = $2 AND key <> $3",
        )
        .bind(KV_ROW_OVERHEAD as i64)
        .bind(plugin)
        .bind(key)
        .fetch_one(&mut tx)
        .await?;
        let after =
            u64::try_from(used).unwrap_or(0) + (key.len() + value.len()) as u64 + KV_ROW_OVERHEAD;
        if after > max_total {
            return Ok(false);
        }
        query(
            "INSERT INTO plugin_kv (plugin_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (plugin_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(plugin)
        .bind(key)
        .bind(value)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        query("DELETE FROM plugin_kv WHERE plugin_id = $1 AND key = $2")
            .bind(plugin)
            .bind(key)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    pub async fn kv_keys(
        &self,
        plugin: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // Prefix match without LIKE's wildcards: the keys from `prefix` up to the first
        // string that no longer starts with it.
        let from = after.filter(|a| *a >= prefix).unwrap_or(prefix);
        let rows: Vec<String> = query_scalar(
            "SELECT key FROM plugin_kv WHERE plugin_id = $1 AND key >= $2 AND key <> $3 \
             AND SUBSTR(key, 1, $4) = $5 ORDER BY key LIMIT $6",
        )
        .bind(plugin)
        .bind(from)
        .bind(after.unwrap_or(""))
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .bind(i64::from(limit))
        .fetch_all(&self.db.read)
        .await?;
        Ok(rows)
    }

    /// Appends log lines and trims the plugin's log to its newest lines.
    pub async fn append_plugin_logs(
        &self,
        plugin: &str,
        lines: &[(i64, String, String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        for (at, level, message, fields) in lines {
            query(
                "INSERT INTO plugin_logs (plugin_id, at, level, message, fields) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(plugin)
            .bind(at)
            .bind(level)
            .bind(message)
            .bind(fields)
            .execute(&mut tx)
            .await?;
        }
        query(
            "DELETE FROM plugin_logs WHERE plugin_id = $1 AND id <= \
             (SELECT id FROM plugin_logs WHERE plugin_id = $2 ORDER BY id DESC LIMIT 1 OFFSET $3)",
        )
        .bind(plugin)
        .bind(plugin)
        .bind(LOG_LINES_KEPT)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` log lines, oldest first.
    pub async fn plugin_logs(
        &self,
        plugin: &str,
        limit: u32,
    ) -> Result<Vec<PluginLogRow>, StoreError> {
        let mut rows: Vec<PluginLogRow> = query_as(
            "SELECT at, level, message, fields FROM plugin_logs WHERE plugin_id = $1 \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(plugin)
        .bind(i64::from(limit))
        .fetch_all(&self.db.read)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    /// Records a business event once per source and idempotency key and queues it for
    /// `plugins`. A key the source used before is a `Repeat` when the kind, object and payload
    /// text are the same (nothing is queued again), else a `Conflict` (nothing is stored).
    pub async fn insert_business_event(
        &self,
        event: &NewBusinessEvent<'_>,
        plugins: &[String],
        now: i64,
    ) -> Result<Recorded, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let (object_app, object_type, object_id) = event.object.unzip3();
        let id: Option<i64> = query_scalar(
            "INSERT INTO business_events (source, kind, idempotency_key, object_app, object_type, \
             object_id, payload, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (source, idempotency_key) DO NOTHING RETURNING id",
        )
        .bind(event.source)
        .bind(event.kind)
        .bind(event.idempotency_key)
        .bind(object_app)
        .bind(object_type)
        .bind(object_id)
        .bind(event.payload)
        .bind(event.occurred_at)
        .fetch_optional(&mut tx)
        .await?;
        let Some(id) = id else {
            type Earlier = (
                i64,
                String,
                Option<String>,
                Option<String>,
                Option<String>,
                String,
            );
            let (earlier, kind, app_was, type_was, id_was, payload): Earlier = query_as(
                "SELECT id, kind, object_app, object_type, object_id, payload \
                 FROM business_events WHERE source = $1 AND idempotency_key = $2",
            )
            .bind(event.source)
            .bind(event.idempotency_key)
            .fetch_one(&mut tx)
            .await?;
            tx.commit().await?;
            let same = kind == event.kind
                && (app_was.as_deref(), type_was.as_deref(), id_was.as_deref())
                    == (object_app, object_type, object_id)
                && payload == event.payload;
            return Ok(if same {
                Recorded::Repeat(earlier)
            } else {
                Recorded::Conflict(earlier)
            });
        };
        for plugin in plugins {
            insert_inbox(&mut tx, plugin, "event", event.inbox_payload, now).await?;
        }
        super::apps::enqueue_webhooks(
            &mut tx,
            super::apps::Recipients::EventFrom(event.source),
            event.kind,
            event.webhook_body,
            now,
        )
        .await?;
        tx.commit().await?;
        self.db.queued.notify_one();
        Ok(Recorded::New(id))
    }

    /// Queues one item for a plugin outside any batch (clicks).
    pub async fn enqueue_plugin(
        &self,
        plugin: &str,
        kind: &str,
        payload: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        insert_inbox(&self.db.write, plugin, kind, payload, now).await
    }

    /// The oldest pending item of a plugin, if it is due.
    pub async fn next_inbox(&self, plugin: &str, now: i64) -> Result<Option<InboxRow>, StoreError> {
        // Strictly in order: the head waits out its backoff before anything behind it runs.
        let row: Option<InboxRow> = query_as(
            "SELECT id, kind, payload, attempts, last_error, created_at, next_at \
             FROM plugin_inbox WHERE plugin_id = $1 AND state = 'pending' ORDER BY id LIMIT 1",
        )
        .bind(plugin)
        .fetch_optional(&self.db.read)
        .await?;
        Ok(row.filter(|r| r.next_at <= now))
    }

    /// When the plugin's oldest pending item is due, if it has one.
    pub async fn inbox_due_at(&self, plugin: &str) -> Result<Option<i64>, StoreError> {
        Ok(query_scalar(
            "SELECT next_at FROM plugin_inbox WHERE plugin_id = $1 AND state = 'pending' \
             ORDER BY id LIMIT 1",
        )
        .bind(plugin)
        .fetch_optional(&self.db.read)
        .await?)
    }

    pub async fn inbox_done(&self, id: i64) -> Result<(), StoreError> {
        query("DELETE FROM plugin_inbox WHERE id = $1")
            .bind(id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Records a failed attempt: due again at `next_at`, or parked as dead.
    pub async fn inbox_failed(
        &self,
        id: i64,
        error: &str,
        next_at: i64,
        dead: bool,
    ) -> Result<(), StoreError> {
        query(
            "UPDATE plugin_inbox SET attempts = attempts + 1, last_error = $1, next_at = $2, \
             state = $3 WHERE id = $4",
        )
        .bind(error)
        .bind(next_at)
        .bind(if dead { "dead" } else { "pending" })
        .bind(id)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    pub async fn dead_letter_count(&self, plugin: &str) -> Result<u64, StoreError> {
        let n: i64 = query_scalar(
            "SELECT COUNT(*) FROM plugin_inbox WHERE plugin_id = $1 AND state = 'dead'",
        )
        .bind(plugin)
        .fetch_one(&self.db.read)
        .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub async fn dead_letters(&self, plugin: &str) -> Result<Vec<InboxRow>, StoreError> {
        Ok(query_as(
            "SELECT id, kind, payload, attempts, last_error, created_at, \
             next_at FROM plugin_inbox WHERE plugin_id = $1 AND state = 'dead' ORDER BY id",
        )
        .bind(plugin)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Puts dead items (one, or all of the plugin's) back in line; how many.
    pub async fn replay_dead(
        &self,
        plugin: &str,
        id: Option<i64>,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<u64, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let n = query(
            "UPDATE plugin_inbox SET state = 'pending', attempts = 0, next_at = $1 \
             WHERE plugin_id = $2 AND state = 'dead' AND ($3 IS NULL OR id = $4)",
        )
        .bind(now)
        .bind(plugin)
        .bind(id)
        .bind(id)
        .execute(&mut tx)
        .await?
        .rows_affected();
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(n)
    }
}

impl Batch {
    /// Queues an item for a plugin in the batch's transaction: it exists exactly when its
    /// cause does.
    pub async fn enqueue_plugin(
        &mut self,
        plugin: &str,
        kind: &str,
        payload: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        insert_inbox(&mut self.tx, plugin, kind, payload, now).await
    }
}

async fn insert_inbox<'c>(
    db: impl Exec<'c>,
    plugin: &str,
    kind: &str,
    payload: &str,
    now: i64,
) -> Result<(), StoreError> {
    query(INSERT_INBOX)
        .bind(plugin)
        .bind(kind)
        .bind(payload)
        .bind(now)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

trait Unzip3<'a> {
    fn unzip3(self) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>);
}

impl<'a> Unzip3<'a> for Option<(&'a str, &'a str, &'a str)> {
    fn unzip3(self) -> (Option<&'a str>, Option<&'a str>, Option<&'a str>) {
        match self {
            Some((a, b, c)) => (Some(a), Some(b), Some(c)),
            None => (None, None, None),
        }
    }
}
