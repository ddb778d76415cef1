//! The client's data folder: one SQLite file with its identity, cursors and durable outbox.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use veche_protocol::Timestamp;

/// Why the client's local store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("client store: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("client store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The data folder could not be created.
    #[error("client data folder: {0}")]
    Io(#[from] std::io::Error),
    /// The data folder could not be made private.
    #[error(transparent)]
    Folder(#[from] crate::private::PrivateFolderError),
}

/// Where a composed message stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxState {
    /// Stored locally, not yet acknowledged by the node.
    Pending,
    /// Stored by the node.
    Sent {
        /// The node's message id.
        message_id: String,
        /// Its sequence number in the discussion.
        seq: u64,
    },
    /// Refused by the node; it will not be sent again.
    Failed {
        /// The node's reason.
        reason: String,
    },
}

/// One message in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Local order: messages go out in this order.
    pub id: i64,
    /// The id that makes resends safe.
    pub client_msg_id: String,
    /// The discussion; empty while `target` is not yet resolved.
    pub discussion: String,
    /// The name the message was written to (a user, or a discussion's title), when it was not
    /// a discussion id: it is resolved into `discussion` once the node is reachable.
    pub target: Option<String>,
    /// The text as composed.
    pub text: String,
    /// The message replied to.
    pub reply_to: Option<String>,
    /// Machine-readable data, JSON.
    pub data: Option<String>,
    /// Files to attach, in order.
    pub files: Vec<OutboxFile>,
    /// Where it stands.
    pub state: OutboxState,
    /// When it was composed.
    pub created_at: Timestamp,
}

/// A file attached to a message of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxFile {
    /// Its place among the message's files, from 0.
    pub position: i64,
    /// Where it is read from when the message goes out.
    pub path: std::path::PathBuf,
    /// The name it is sent under.
    pub name: String,
    /// Its size when it was queued.
    pub size: u64,
    /// Its SHA-256 (hex) when it was queued.
    pub sha256: String,
    /// The node's upload, once declared: an interrupted upload continues from it.
    pub upload_id: Option<String>,
    /// The node's file, once uploaded.
    pub file_id: Option<String>,
}

/// A file to attach, as queued: where it is, its name, size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewAttachment {
    pub(crate) path: std::path::PathBuf,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

#[derive(sqlx::FromRow)]
struct FileRow {
    position: i64,
    path: String,
    name: String,
    size: i64,
    sha256: String,
    upload_id: Option<String>,
    file_id: Option<String>,
}

impl From<FileRow> for OutboxFile {
    fn from(r: FileRow) -> Self {
        Self {
            position: r.position,
            path: r.path.into(),
            name: r.name,
            size: u64::try_from(r.size).unwrap_or(0),
            sha256: r.sha256,
            upload_id: r.upload_id,
            file_id: r.file_id,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    client_msg_id: String,
    discussion_id: String,
    target: Option<String>,
    text: String,
    reply_to: Option<String>,
    data: Option<String>,
    state: String,
    message_id: Option<String>,
    seq: Option<i64>,
    error: Option<String>,
    created_at: i64,
}

impl From<OutboxRow> for OutboxEntry {
    fn from(r: OutboxRow) -> Self {
        let state = match r.state.as_str() {
            "sent" => OutboxState::Sent {
                message_id: r.message_id.unwrap_or_default(),
                seq: u64::try_from(r.seq.unwrap_or(0)).unwrap_or(0),
            },
            "failed" => OutboxState::Failed {
                reason: r.error.unwrap_or_default(),
            },
            _ => OutboxState::Pending,
        };
        Self {
            id: r.id,
            client_msg_id: r.client_msg_id,
            discussion: r.discussion_id,
            target: r.target,
            text: r.text,
            reply_to: r.reply_to,
            data: r.data,
            files: Vec::new(),
            state,
            created_at: Timestamp(r.created_at),
        }
    }
}

/// Where a message goes, as the user named it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Recipient<'a> {
    /// A discussion id.
    Discussion(&'a str),
    /// A user or a discussion title, resolved once connected.
    Name(&'a str),
}

/// The client's local store.
#[derive(Debug, Clone)]
pub(crate) struct ClientStore {
    pool: SqlitePool,
}

impl ClientStore {
    pub(crate) async fn open(dir: &Path) -> Result<Self, StoreError> {
        crate::private::prepare_folder(dir)?;
        crate::private::create_private(&dir.join("client.db"))?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(dir.join("client.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM state WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub(crate) async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn unset(&self, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM state WHERE key = ?")
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn cursors(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT discussion_id, seq FROM cursors ORDER BY discussion_id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The last sequence number applied in one discussion, if the client tracks it.
    pub(crate) async fn cursor(&self, discussion: &str) -> Result<Option<u64>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM cursors WHERE discussion_id = ?")
                .bind(discussion)
                .fetch_optional(&self.pool)
                .await?;
        Ok(seq.map(|s| u64::try_from(s).unwrap_or(0)))
    }

    /// Moves a cursor forward (never back).
    pub(crate) async fn advance_cursor(
        &self,
        discussion: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO cursors (discussion_id, seq) VALUES (?, ?) \
             ON CONFLICT (discussion_id) DO UPDATE SET seq = MAX(cursors.seq, excluded.seq)",
        )
        .bind(discussion)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets everything of the previous user but the device id.
    pub(crate) async fn reset_for_new_user(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cursors")
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM state WHERE key = 'synced'")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn forget_cursor(&self, discussion: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cursors WHERE discussion_id = ?")
            .bind(discussion)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes a composed message, to a discussion or to a name resolved later; it is durable
    /// when this returns.
    pub(crate) async fn enqueue(
        &self,
        to: &Recipient<'_>,
        text: &str,
        reply_to: Option<&str>,
        data: Option<&str>,
        files: &[NewAttachment],
    ) -> Result<OutboxEntry, StoreError> {
        let client_msg_id = uuid::Uuid::now_v7().to_string();
        let (discussion, target) = match *to {
            Recipient::Discussion(id) => (id, None),
            Recipient::Name(name) => ("", Some(name)),
        };
        // The message and its files are one write: a message is never queued without them.
        let mut tx = self.pool.begin().await?;
        let row: OutboxRow = sqlx::query_as(
            "INSERT INTO outbox (client_msg_id, discussion_id, target, text, reply_to, data, state, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, 'pending', ?) RETURNING *",
        )
        .bind(&client_msg_id)
        .bind(discussion)
        .bind(target)
        .bind(text)
        .bind(reply_to)
        .bind(data)
        .bind(Timestamp::now().as_millis())
        .fetch_one(&mut *tx)
        .await?;
        for (position, f) in files.iter().enumerate() {
            sqlx::query(
                "INSERT INTO outbox_files (outbox_id, position, path, name, size, sha256) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(row.id)
            .bind(i64::try_from(position).unwrap_or(i64::MAX))
            .bind(f.path.to_string_lossy().into_owned())
            .bind(&f.name)
            .bind(i64::try_from(f.size).unwrap_or(i64::MAX))
            .bind(&f.sha256)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let mut entry: OutboxEntry = row.into();
        entry.files = self.files_of(entry.id).await?;
        Ok(entry)
    }

    /// The files of one message of the outbox, in order.
    pub(crate) async fn files_of(&self, id: i64) -> Result<Vec<OutboxFile>, StoreError> {
        let rows: Vec<FileRow> = sqlx::query_as(
            "SELECT position, path, name, size, sha256, upload_id, file_id FROM outbox_files \
             WHERE outbox_id = ? ORDER BY position",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Records the node's upload for a file of the outbox (or forgets it, with `None`).
    pub(crate) async fn set_upload(
        &self,
        id: i64,
        position: i64,
        upload: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox_files SET upload_id = ? WHERE outbox_id = ? AND position = ?")
            .bind(upload)
            .bind(id)
            .bind(position)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the node's file for a file of the outbox, once uploaded.
    pub(crate) async fn set_file(
        &self,
        id: i64,
        position: i64,
        file: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox_files SET file_id = ? WHERE outbox_id = ? AND position = ?")
            .bind(file)
            .bind(id)
            .bind(position)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The oldest pending message.
    pub(crate) async fn next_pending(&self) -> Result<Option<OutboxEntry>, StoreError> {
        let row: Option<OutboxRow> =
            sqlx::query_as("SELECT * FROM outbox WHERE state = 'pending' ORDER BY id LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut entry: OutboxEntry = row.into();
        entry.files = self.files_of(entry.id).await?;
        Ok(Some(entry))
    }

    /// Whether any message waits to be sent.
    pub(crate) async fn has_pending(&self) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM outbox WHERE state = 'pending' LIMIT 1")
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Records the discussion a message's target name resolved to.
    pub(crate) async fn resolve(&self, id: i64, discussion: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET discussion_id = ? WHERE id = ?")
            .bind(discussion)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn mark_sent(
        &self,
        id: i64,
        message_id: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET state = 'sent', message_id = ?, seq = ?, error = NULL WHERE id = ?",
        )
        .bind(message_id)
        .bind(i64::try_from(seq).unwrap_or(i64::MAX))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(crate) async fn mark_failed(&self, id: i64, reason: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET state = 'failed', error = ? WHERE id = ?")
            .bind(reason)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows: Vec<OutboxRow> = sqlx::query_as("SELECT * FROM outbox ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let mut entry: OutboxEntry = row.into();
            entry.files = self.files_of(entry.id).await?;
            entries.push(entry);
        }
        Ok(entries)
    }
}
