//! Durable storage. All SQL of the node lives in this module.
//!
//! SQLite in WAL mode with `synchronous=FULL`: when a method returns `Ok`, the change is on
//! disk. One writer connection serialises writes (SQLite allows one writer anyway); readers
//! use their own pool. The schema uses portable types so that a PostgreSQL backend can run the
//! same statements.

/// Whether the membership `m` (an alias of `members`) is in a discussion this node and the
/// linked node share, taking the numbers of three placeholders: its link, then `@<its name>`
/// twice (for example `shared_with!(2, 3, 4)` binds `$2`, `$3` and `$4`): one this node is home of
/// and shares over the link, or a group or dialog the linked node is home of (a replica here:
/// it reached this node over that link). People who share a discussion across a link can
/// thus find and reach each other from either side (see docs/decisions.md).
macro_rules! shared_with {
    ($link:literal, $name:literal, $name_again:literal) => {
        concat!(
            "(EXISTS (SELECT 1 FROM fed_shares s WHERE s.discussion_id = m.discussion_id \
             AND s.link = $",
            $link,
            ") OR EXISTS (SELECT 1 FROM discussions d WHERE d.id = m.discussion_id \
             AND d.kind IN ('group', 'dialog') AND substr(d.id, length(d.id) - length($",
            $name,
            ") + 1) = $",
            $name_again,
            "))"
        )
    };
}

mod apps;
mod audit;
mod db;
mod discussions;
mod embed;
mod federation;
mod fedlog;
mod files;
mod plugins;
mod presence;
mod push;
#[cfg(test)]
mod schema_parity;
mod search;
mod sessions;
#[cfg(any(test, feature = "test-utils"))]
mod test_db;
#[cfg(test)]
mod testing;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use db::Backend;
use db::{Pool, query, query_scalar};

pub use apps::{
    Activate, Activation, AppRow, Attempt, CodeRefused, DeliveryRow, NewCode, NewTopicMessage,
    Published, PushRow, SubscriptionRow, TopicMessageRow, WebhookRow, WebhookStatus,
};
pub use audit::AuditRecord;
pub use discussions::{Batch, DiscussionRow, EventRow, ListedRow, MessageRow, ObjectKey};
pub use embed::{EmbedScopeRow, EmbedTokenRow, TokenTaken};
pub use federation::{LinkRow, NewLink, Renewal};
pub use fedlog::{FedLogRow, NewPending, ReaderAccess, RemoteProfile};
pub use files::{BackendUsage, BlobRow, FileRow, REMOTE_BACKEND, UploadRow};
pub use plugins::{InboxRow, NewBusinessEvent, PluginRow, Recorded, Uninstalled};
pub use push::{NewPush, PushEndpointRow, PushJob};
pub use search::IndexRow;
pub use sessions::SessionRow;
#[cfg(any(test, feature = "test-utils"))]
pub use test_db::{TEST_POSTGRES_ENV, TestDatabase};
pub use users::{NewUser, UserRow};

/// The oldest SQLite this node runs on: 3.51.3 fixed a WAL-reset bug that could lose
/// committed writes.
pub const MIN_SQLITE: (u32, u32, u32) = (3, 51, 3);

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The linked SQLite is too old to be trusted with our data.
    #[error("SQLite {found} is linked, but Veche needs 3.51.3 or newer (WAL-reset bug)")]
    SqliteTooOld {
        /// The version found.
        found: String,
    },
    /// A unique key is taken.
    #[error("already exists")]
    Conflict,
    /// A write batch failed as a whole; nothing of it was stored.
    #[error("the write batch failed: {0}")]
    Aborted(String),
    /// The database is not in the durability mode we require.
    #[error("the database runs with {setting}; Veche requires {required}")]
    NotDurable {
        /// What was found.
        setting: String,
        /// What is required.
        required: &'static str,
    },
}

impl StoreError {
    pub fn from_insert(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
            _ => StoreError::Database(e),
        }
    }
}

/// Reader connections.
const READERS: u32 = 4;

/// Rows in one multi-row `INSERT`: far below SQLite's limit of 32,766 bound values.
const ROWS_PER_STATEMENT: usize = 250;

/// `VALUES (...), (...)` for a multi-row `INSERT` of `rows` rows with `bound` numbered
/// placeholders each (`$1` to `$<rows * bound>`, row after row), every row then ending with
/// `constants` (literal SQL such as `NULL, 1`, or empty). The same text reads on both backends,
/// unlike `QueryBuilder`'s, whose SQLite placeholders are unnumbered `?`.
fn values_rows(rows: usize, bound: usize, constants: &str) -> String {
    use std::fmt::Write;
    let mut sql = String::from("VALUES ");
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..bound {
            let separator = if column == 0 { "" } else { ", " };
            // Writing into a String cannot fail.
            let _ = write!(sql, "{separator}${}", row * bound + column + 1);
        }
        if !constants.is_empty() {
            sql.push_str(if bound == 0 { "" } else { ", " });
            sql.push_str(constants);
        }
        sql.push(')');
    }
    sql
}

/// `values` as one JSON parameter, for `json_each(?)`: a list in one statement.
fn json_param(values: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(values).map_err(|e| StoreError::Aborted(format!("a JSON parameter: {e}")))
}

/// The node's database.
#[derive(Debug, Clone)]
pub struct Store {
    /// One connection: writes are serialised on both backends (SQLite allows one writer; on
    /// PostgreSQL it keeps the checks that rely on it true while one process writes).
    write: Pool,
    read: Pool,
    /// Rung after a commit that made a webhook delivery or a topic push due now (see
    /// [`Apps::queued`]).
    queued: std::sync::Arc<tokio::sync::Notify>,
}

impl Store {
    /// Opens the database `location` names, creating it (SQLite) and bringing its schema up
    /// to date.
    pub async fn connect(location: &Location) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => Self::open(path).await,
            Location::Postgres(url) => Self::open_postgres(url).await,
        }
    }

    /// Which database this store runs on.
    pub fn backend(&self) -> Backend {
        self.write.backend()
    }

    /// Connects to the PostgreSQL database at `url` (`postgres://…`), refuses it unless it
    /// is durable (`fsync`, `synchronous_commit`), and brings its schema up to date.
    pub async fn open_postgres(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url)?;
        let write = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        check_postgres(&write).await?;
        sqlx::migrate!("./migrations/postgres").run(&write).await?;
        let read = PgPoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await?;
        Ok(Self {
            write: Pool::Pg(write),
            read: Pool::Pg(read),
            queued: std::sync::Arc::default(),
        })
    }

    /// Opens (creating if needed) the SQLite database at `path` and brings its schema up to
    /// date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            .pragma("journal_size_limit", (64 * 1024 * 1024).to_string());
        // Connections are opened here, once, and kept: a connection's worker thread inherits
        // the priority of the thread that opens it, and plugin threads run at a low one.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        check_sqlite(&write).await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .min_connections(READERS)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Self {
            write: Pool::Sqlite(write),
            read: Pool::Sqlite(read),
            queued: std::sync::Arc::default(),
        })
    }

    /// Waits for running statements and closes every connection (checkpointing the WAL).
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// Where a store's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database, by its URL (`postgres://…`).
    Postgres(String),
}

/// Declares a repository: a borrowed view of the database for one domain, and the accessor
/// on [`Store`] that gives it.
macro_rules! repository {
    ($name:ident, $accessor:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy)]
        pub struct $name<'s> {
            db: &'s Store,
        }

        impl Store {
            #[doc = $doc]
            pub fn $accessor(&self) -> $name<'_> {
                $name { db: self }
            }
        }
    };
}

repository!(
    Apps,
    apps,
    "Registered business applications, their webhooks, topics and queues."
);
repository!(AuditLog, audit_log, "The hash-chained audit log.");
repository!(
    Discussions,
    discussions,
    "Discussions, members, messages and events, read outside the sequencer."
);
repository!(
    Links,
    links,
    "Federation links, offers and each link's outbox and inbox numbering."
);
repository!(
    Federated,
    federated,
    "Federated discussions outside the sequencer: remote users, the link inbox, readers."
);
repository!(Files, files, "Uploads, files and their blobs.");
repository!(
    Plugins,
    plugins,
    "Installed plugins, their key-value data, logs and inbox."
);
repository!(
    Push,
    push,
    "Notification settings, push endpoints and the push queue."
);
repository!(
    Presence,
    presence,
    "Presence choices and the lookups presence needs."
);
repository!(
    SearchQueue,
    search,
    "What the search index reads: the queue of changed messages, hits, the directory."
);
repository!(Sessions, sessions, "Login sessions.");
repository!(
    Embed,
    embed,
    "What applications may embed the object-discussion widget: origins, tokens, widget sessions."
);
repository!(Users, users, "User accounts and their preferences.");
repository!(
    Meta,
    meta,
    "Small values of the node: its settings and markers."
);

impl Meta<'_> {
    /// A value from the `meta` table.
    pub async fn get(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.db.read)
            .await?)
    }

    /// Sets a value in the `meta` table.
    pub async fn set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }

    /// Removes a value from the `meta` table.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        query("DELETE FROM meta WHERE key = $1")
            .bind(key)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }
}

async fn check_sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    let found: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(pool)
        .await?;
    if parse_version(&found).is_none_or(|v| v < MIN_SQLITE) {
        return Err(StoreError::SqliteTooOld { found });
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::NotDurable {
            setting: format!("journal_mode={mode}"),
            required: "journal_mode=WAL",
        });
    }
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await?;
    // 2 = FULL, 3 = EXTRA.
    if sync < 2 {
        return Err(StoreError::NotDurable {
            setting: format!("synchronous={sync}"),
            required: "synchronous=FULL",
        });
    }
    Ok(())
}

/// The PostgreSQL settings without which a committed write could be lost in a crash.
async fn check_postgres(pool: &PgPool) -> Result<(), StoreError> {
    let fsync: String = sqlx::query_scalar("SHOW fsync").fetch_one(pool).await?;
    if fsync != "on" {
        return Err(StoreError::NotDurable {
            setting: format!("fsync={fsync}"),
            required: "fsync=on",
        });
    }
    // Every level but `off` waits for the local WAL flush before a commit returns.
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(pool)
        .await?;
    if sync == "off" {
        return Err(StoreError::NotDurable {
            setting: format!("synchronous_commit={sync}"),
            required: "synchronous_commit=on",
        });
    }
    Ok(())
}

fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("3.51.3"), Some((3, 51, 3)));
        assert!(parse_version("3.9.0").unwrap() < MIN_SQLITE);
        assert!(parse_version("3.51.2").unwrap() < MIN_SQLITE);
        assert!(parse_version("3.53.0").unwrap() >= MIN_SQLITE);
        assert_eq!(parse_version("garbage"), None);
    }

    /// The statements number their placeholders (`$N`, the text PostgreSQL reads too):
    /// sqlx-sqlite binds `$N` to the N-th bound value, reused as often as the text names it, in
    /// any order, across `concat!` pieces and in the multi-row `INSERT`s of [`values_rows`].
    #[tokio::test]
    async fn numbered_placeholders_bind_by_number() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        let text: String = sqlx::query_scalar("SELECT $2 || $1 || $2 || ?3")
            .bind("a")
            .bind("b")
            .bind("c")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(text, "babc");
        let mixed: (i64, String) = sqlx::query_as("SELECT $3 + $1, $2")
            .bind(40_i64)
            .bind("x")
            .bind(2_i64)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mixed, (42, "x".to_string()));

        sqlx::query("CREATE TABLE t (a INTEGER, b TEXT, c INTEGER, d TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            values_rows(2, 2, "7, 'k'"),
            "VALUES ($1, $2, 7, 'k'), ($3, $4, 7, 'k')"
        );
        assert_eq!(values_rows(1, 3, ""), "VALUES ($1, $2, $3)");
        let sql = format!("INSERT INTO t (a, b, c, d) {}", values_rows(3, 2, "7, 'k'"));
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in 0..3_i64 {
            insert = insert.bind(i).bind(format!("r{i}"));
        }
        assert_eq!(insert.execute(&pool).await.unwrap().rows_affected(), 3);
        let rows: Vec<(i64, String, i64, String)> =
            sqlx::query_as("SELECT a, b, c, d FROM t ORDER BY a")
                .fetch_all(&pool)
                .await
                .unwrap();
        let expected: Vec<_> = (0..3)
            .map(|i| (i, format!("r{i}"), 7, "k".to_string()))
            .collect();
        assert_eq!(rows, expected);
    }

    #[tokio::test]
    async fn opens_durable_and_current() {
        for t in testing::each_backend().await {
            let store = &t.store;
            store.meta().set("k", "v1").await.unwrap();
            store.meta().set("k", "v2").await.unwrap();
            assert_eq!(store.meta().get("k").await.unwrap().as_deref(), Some("v2"));
            store.meta().delete("k").await.unwrap();
            assert_eq!(
                store.meta().get("k").await.unwrap(),
                None,
                "{:?}",
                store.backend()
            );
            store.close().await;
        }
    }

    /// What differs between the dialects, on both: the functions PostgreSQL's migration 0015
    /// defines in SQLite's name, and an i64 through `SUM`.
    #[tokio::test]
    async fn the_portable_functions_read_alike() {
        for t in testing::each_backend().await {
            let store = &t.store;
            let backend = store.backend();
            let keys: Vec<(i64, String)> =
                db::query_as("SELECT key, value FROM json_each($1) ORDER BY key")
                    .bind(r#"["a@x","b@y"]"#)
                    .fetch_all(&store.read)
                    .await
                    .unwrap();
            assert_eq!(keys, [(0, "a@x".into()), (1, "b@y".into())], "{backend:?}");
            let node: String = query_scalar("SELECT substr($1, instr($1, '@') + 1)")
                .bind("anna@hq")
                .fetch_one(&store.read)
                .await
                .unwrap();
            assert_eq!(node, "hq", "{backend:?}");
            let joined: Option<String> = query_scalar(
                "SELECT group_concat(v, '\n') FROM (SELECT value AS v FROM json_each($1)) t",
            )
            .bind(r#"["a","b"]"#)
            .fetch_one(&store.read)
            .await
            .unwrap();
            let mut lines: Vec<&str> = joined.as_deref().unwrap_or("").lines().collect();
            lines.sort_unstable();
            assert_eq!(lines, ["a", "b"], "{backend:?}");
            let none: Option<String> =
                query_scalar("SELECT group_concat(value, ',') FROM json_each('[]')")
                    .fetch_one(&store.read)
                    .await
                    .unwrap();
            assert_eq!(none, None, "{backend:?}");
            store.close().await;
        }
    }

    /// PostgreSQL that may lose a committed write is refused, naming the setting.
    #[tokio::test]
    async fn postgres_without_synchronous_commit_is_refused() {
        let server = std::env::var("VECHE_TEST_DATABASE")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let database = TestDatabase::create(&server).await.unwrap();
        // A setting of the database: every new session takes it.
        let mut admin = sqlx::postgres::PgConnection::connect(&server)
            .await
            .unwrap();
        let name = database.url().rsplit('/').next().unwrap().to_owned();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET synchronous_commit = off"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let refused = Store::open_postgres(database.url()).await.unwrap_err();
        let message = refused.to_string();
        assert!(
            matches!(refused, StoreError::NotDurable { .. })
                && message.contains("synchronous_commit=off"),
            "{message}"
        );
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {name} SET synchronous_commit = on"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        let store = Store::open_postgres(database.url()).await.unwrap();
        assert_eq!(store.backend(), Backend::Postgres);
        store.close().await;
    }

    /// A database the previous release left (migrations 1–3, with people and messages in
    /// it) takes the new migrations, and its messages are there for the search index.
    #[tokio::test]
    async fn a_database_of_the_previous_release_upgrades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let old = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .foreign_keys(true),
            )
            .await
            .unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(3, &old)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, locked, \
             created_at, updated_at) VALUES ('anna@hq', 'anna', 'Анна', 'a@x', '!', FALSE, FALSE, 0, 0)",
            "INSERT INTO discussions (id, kind, title, created_by, created_at, last_seq, \
             last_activity_at) VALUES ('g@hq', 'group', 'g', 'anna@hq', 0, 1, 0)",
            "INSERT INTO messages (id, discussion_id, seq, author, device_id, client_msg_id, \
             payload_hash, text, actions, created_at, version) VALUES ('m1@hq', 'g@hq', 1, \
             'anna@hq', 'd', 'c1', '', 'Счёт оплачен', '[]', 0, 1)",
        ] {
            sqlx::query(sql).execute(&old).await.unwrap();
        }
        old.close().await;

        let store = Store::open(&path).await.unwrap();
        let anna = store.users().user_by_id("anna@hq").await.unwrap().unwrap();
        assert_eq!(anna.department, "");
        let old_messages = store.search().messages_for_index(0, 10).await.unwrap();
        assert_eq!(old_messages.len(), 1);
        assert_eq!(old_messages[0].1.text.as_deref(), Some("Счёт оплачен"));
        // What is written from now on is queued for the index.
        query("UPDATE messages SET text = 'Счёт оплачен полностью' WHERE id = 'm1@hq'")
            .execute(&store.write)
            .await
            .unwrap();
        let queued = store.search().search_queue_after(0, 10).await.unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1.id, "m1@hq");
        store.close().await;
    }
}
