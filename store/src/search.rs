//! What the search index reads: the queue of changed messages and messages in bulk.

use super::{SearchQueue, StoreError};
use crate::db::{Sql, query, query_as, query_scalar};

/// A message as the index takes it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IndexRow {
    pub id: String,
    pub discussion_id: String,
    pub kind: String,
    pub author: String,
    pub created_at: i64,
    pub text: Option<String>,
    pub deleted: bool,
    pub object: Option<String>,
    /// Names of the attached files, one per line.
    pub files: Option<String>,
}

/// One message as a search result shows it, as it is now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HitRow {
    pub id: String,
    pub discussion_id: String,
    pub seq: i64,
    pub author: String,
    pub created_at: i64,
    pub text: Option<String>,
    pub deleted: bool,
    /// Names of the attached files, one per line.
    pub files: Option<String>,
}

/// Names of the files attached to `m`, one per line (NULL for none).
macro_rules! file_names {
    () => {
        "(SELECT group_concat(f.name, '
') FROM message_files a \
          JOIN files f ON f.id = a.file_id WHERE a.message_id = m.id) AS files "
    };
}

/// The columns of an [`IndexRow`], over `messages m` joined with `discussions d`.
macro_rules! index_columns {
    () => {
        concat!(
            "m.id, m.discussion_id, d.kind, m.author, m.created_at, m.text, m.deleted, ",
            "CASE WHEN d.object_app IS NULL THEN NULL ",
            "ELSE d.object_app || '/' || d.object_type || '/' || d.object_id END AS object, ",
            file_names!()
        )
    };
}

impl SearchQueue<'_> {
    /// Queue entries after `cursor` (at most `limit`), with their messages as they are now.
    pub async fn search_queue_after(
        &self,
        cursor: i64,
        limit: i64,
    ) -> Result<Vec<(i64, IndexRow)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            qid: i64,
            #[sqlx(flatten)]
            row: IndexRow,
        }
        let rows: Vec<Row> = query_as(concat!(
            "SELECT q.id AS qid, ",
            index_columns!(),
            "FROM search_queue q JOIN messages m ON m.id = q.message_id ",
            "JOIN discussions d ON d.id = m.discussion_id ",
            "WHERE q.id > $1 ORDER BY q.id LIMIT $2"
        ))
        .bind(cursor)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        Ok(rows.into_iter().map(|r| (r.qid, r.row)).collect())
    }

    /// Entries the index has yet to take in.
    pub async fn search_backlog(&self) -> Result<i64, StoreError> {
        Ok(query_scalar("SELECT COUNT(*) FROM search_queue")
            .fetch_one(&self.db.read)
            .await?)
    }

    /// The id the queue gave last (0 if it never gave one), whether or not that entry has
    /// been removed since.
    pub async fn search_queue_end(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = query_scalar(Sql::two(
            "SELECT seq FROM sqlite_sequence WHERE name = 'search_queue'",
            // NULL until the identity gave its first value.
            "SELECT COALESCE(last_value, 0) FROM pg_sequences WHERE schemaname = current_schema() \
                 AND sequencename = pg_get_serial_sequence('search_queue', 'id')::regclass::text",
        ))
        .fetch_optional(&self.db.read)
        .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Removes queue entries the index has taken in.
    pub async fn prune_search_queue(&self, upto: i64) -> Result<(), StoreError> {
        query("DELETE FROM search_queue WHERE id <= $1")
            .bind(upto)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Messages in rowid order after `after` (at most `limit`), for building the index from
    /// scratch; with the rowid to continue from.
    pub async fn messages_for_index(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, IndexRow)>, StoreError> {
        #[derive(sqlx::FromRow)]
        struct Row {
            rid: i64,
            #[sqlx(flatten)]
            row: IndexRow,
        }
        let rows: Vec<Row> = query_as(concat!(
            "SELECT m.rowid AS rid, ",
            index_columns!(),
            "FROM messages m JOIN discussions d ON d.id = m.discussion_id ",
            "WHERE m.rowid > $1 AND NOT m.deleted ORDER BY m.rowid LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        Ok(rows.into_iter().map(|r| (r.rid, r.row)).collect())
    }

    /// These messages as they are now, in the order given (missing ones left out).
    pub async fn hits(&self, ids: &[String]) -> Result<Vec<HitRow>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
        let rows: Vec<HitRow> = query_as(concat!(
            "SELECT m.id, m.discussion_id, m.seq, m.author, m.created_at, m.text, m.deleted, ",
            file_names!(),
            "FROM messages m WHERE m.id IN (SELECT value FROM json_each($1))"
        ))
        .bind(list)
        .fetch_all(&self.db.read)
        .await?;
        let mut by_id: std::collections::HashMap<String, HitRow> =
            rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    /// Dialogs and groups `user` is a member of.
    pub async fn member_discussions(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            query_scalar("SELECT discussion_id FROM members WHERE user_id = $1")
                .bind(user)
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// People who are not locked, for the directory.
    pub async fn directory_users(&self) -> Result<Vec<super::UserRow>, StoreError> {
        Ok(
            query_as("SELECT * FROM users WHERE NOT locked AND kind = 'person' ORDER BY login")
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// People of this node in discussions shared with `peer` over `link` (see
    /// `shared_with!`): what a linked node whose directory scope is `members` may find, and whose
    /// presence a linked node hears.
    pub async fn directory_users_shared_over(
        &self,
        link: &str,
        peer: &str,
    ) -> Result<Vec<super::UserRow>, StoreError> {
        let suffix = format!("@{peer}");
        Ok(query_as(concat!(
            "SELECT * FROM users WHERE NOT locked AND kind = 'person' AND id IN \
             (SELECT m.user_id FROM members m WHERE ",
            shared_with!(1, 2, 3),
            ") ORDER BY login"
        ))
        .bind(link)
        .bind(&suffix)
        .bind(&suffix)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Benchmarks only: `discussions` groups (ids `bench-<i>@<node>`, `user` a member of
    /// every `member_every`-th) and `messages` messages by `user` with `text(i)`, written
    /// straight into the tables in a few large transactions.
    #[cfg(any(test, feature = "test-utils"))]
    pub async fn bench_fill(
        &self,
        node: &str,
        user: &str,
        discussions: usize,
        messages: usize,
        member_every: usize,
        text: &(dyn Fn(usize) -> String + Sync),
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        for d in 0..discussions {
            let id = format!("bench-{d}@{node}");
            query(
                "INSERT INTO discussions (id, kind, title, created_by, created_at, last_seq, \
                 last_activity_at) VALUES ($1, 'group', $2, $3, 0, 0, 0)",
            )
            .bind(&id)
            .bind(format!("bench {d}"))
            .bind(user)
            .execute(&mut tx)
            .await?;
            if d % member_every.max(1) == 0 {
                query(
                    "INSERT INTO members (discussion_id, user_id, role, added_at) \
                     VALUES ($1, $2, 'member', 0)",
                )
                .bind(&id)
                .bind(user)
                .execute(&mut tx)
                .await?;
            }
        }
        tx.commit().await?;
        let mut seqs = vec![0i64; discussions.max(1)];
        for chunk in (0..messages).collect::<Vec<_>>().chunks(50_000) {
            let mut tx = self.db.write.begin().await?;
            for &i in chunk {
                let d = i % discussions.max(1);
                seqs[d] += 1;
                query(
                    "INSERT INTO messages (id, discussion_id, seq, author, device_id, \
                     client_msg_id, payload_hash, text, actions, created_at, version) \
                     VALUES ($1, $2, $3, $4, 'bench', $5, '', $6, '[]', $7, 1)",
                )
                .bind(format!("bm-{i}@{node}"))
                .bind(format!("bench-{d}@{node}"))
                .bind(seqs[d])
                .bind(user)
                .bind(format!("b{i}"))
                .bind(text(i))
                .bind(i64::try_from(i).unwrap_or(0))
                .execute(&mut tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }
}
