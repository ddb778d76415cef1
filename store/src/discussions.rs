//! Discussions, messages and events. Writes happen inside a [`Batch`] (one transaction that
//! the sequencer fills with many commands); reads use the reader pool.

use crate::db::{Sql, Tx, query, query_as, query_scalar};
use veche_protocol::discussions::DiscussionKind;

use super::{Discussions, ROWS_PER_STATEMENT, Store, StoreError, json_param};

/// A discussion as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DiscussionRow {
    pub id: String,
    #[sqlx(try_from = "String")]
    pub kind: DiscussionKind,
    pub title: String,
    pub created_by: String,
    pub created_at: i64,
    pub last_seq: i64,
    pub last_activity_at: i64,
    pub dialog_key: Option<String>,
    pub object_app: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
}

/// A discussion in a user's list, with the user's place in it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ListedRow {
    #[sqlx(flatten)]
    pub discussion: DiscussionRow,
    /// The user's role when a member (`owner` or `member`).
    pub role: Option<String>,
    /// The user's read marker (0 when none).
    pub read_seq: i64,
    pub following: bool,
    /// Messages by others after the read marker that are not deleted.
    pub unread: i64,
    /// How many of them mention the user.
    pub mentions: i64,
}

/// The rows of [`Discussions::listed_discussions`]; the counts are those of
/// [`Discussions::unread`] and the role that of [`Discussions::member_role`].
const LISTED_DISCUSSIONS: &str = "\
WITH listed AS (
    SELECT discussion_id AS id FROM members WHERE user_id = $1
    UNION
    SELECT discussion_id AS id FROM follows WHERE user_id = $1
), marked AS (
    SELECT l.id, COALESCE(r.seq, 0) AS read_seq
    FROM listed l LEFT JOIN read_markers r ON r.user_id = $1 AND r.discussion_id = l.id
)
SELECT d.*,
    (SELECT role FROM members WHERE discussion_id = d.id AND user_id = $1) AS role,
    k.read_seq,
    EXISTS (SELECT 1 FROM follows WHERE user_id = $1 AND discussion_id = d.id) AS following,
    (SELECT COUNT(*) FROM messages WHERE discussion_id = d.id AND seq > k.read_seq \
        AND author != $1 AND deleted = FALSE) AS unread,
    (SELECT COUNT(*) FROM mentions WHERE user_id = $1 AND discussion_id = d.id \
        AND seq > k.read_seq) AS mentions
FROM marked k JOIN discussions d ON d.id = k.id
ORDER BY d.last_activity_at DESC, d.id";

/// A message as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: String,
    pub discussion_id: String,
    pub seq: i64,
    pub author: String,
    pub device_id: String,
    pub client_msg_id: String,
    pub payload_hash: String,
    pub text: Option<String>,
    pub data: Option<String>,
    pub actions: String,
    pub reply_to: Option<String>,
    pub created_at: i64,
    pub edited_at: Option<i64>,
    pub version: i64,
    pub deleted: bool,
}

/// An event as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub discussion_id: String,
    pub seq: i64,
    pub kind: String,
    pub actor: String,
    pub at: i64,
    pub message_id: Option<String>,
    pub detail: String,
}

/// A business object's key.
#[derive(Debug, Clone, Copy)]
pub struct ObjectKey<'a> {
    pub app: &'a str,
    pub kind: &'a str,
    pub id: &'a str,
}

const HAS_OBJECT_ACCESS: &str = "SELECT CAST(1 AS BIGINT) FROM object_access a \
     WHERE a.object_app = $1 AND a.object_type = $2 AND a.object_id = $3 \
     AND (a.principal = 'user:' || $4 \
          OR (a.principal LIKE 'group:%' AND EXISTS ( \
              SELECT 1 FROM members m \
              WHERE m.discussion_id = substr(a.principal, 7) AND m.user_id = $5))) \
     LIMIT 1";

/// Users who may read an object's discussion, expanded from the access list.
const USERS_WITH_OBJECT_ACCESS: &str = "SELECT substr(principal, 6) AS user_id FROM object_access \
     WHERE object_app = $1 AND object_type = $2 AND object_id = $3 AND principal LIKE 'user:%' \
     UNION \
     SELECT m.user_id FROM object_access a JOIN members m ON m.discussion_id = substr(a.principal, 7) \
     WHERE a.object_app = $4 AND a.object_type = $5 AND a.object_id = $6 AND a.principal LIKE 'group:%'";

/// The writing transaction of one sequencer batch.
#[derive(Debug)]
pub struct Batch {
    pub(super) tx: Tx,
}

impl Store {
    /// Starts a writing transaction: the sequencer's unit of work.
    pub async fn batch(&self) -> Result<Batch, StoreError> {
        Ok(Batch {
            tx: self.write.begin().await?,
        })
    }
}

impl Batch {
    /// Commits everything in the batch durably.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Appends an audit record in this batch.
    pub async fn audit(&mut self, record: &super::AuditRecord) -> Result<(), StoreError> {
        super::audit::append(&mut self.tx, record).await
    }

    /// Marks a point the batch can return to if one command fails.
    pub async fn savepoint(&mut self) -> Result<(), StoreError> {
        query("SAVEPOINT command").execute(&mut self.tx).await?;
        Ok(())
    }

    /// Keeps the command's changes.
    pub async fn release(&mut self) -> Result<(), StoreError> {
        query("RELEASE command").execute(&mut self.tx).await?;
        Ok(())
    }

    /// Undoes the command's changes.
    pub async fn rollback_command(&mut self) -> Result<(), StoreError> {
        query("ROLLBACK TO command").execute(&mut self.tx).await?;
        query("RELEASE command").execute(&mut self.tx).await?;
        Ok(())
    }

    pub async fn discussion(&mut self, id: &str) -> Result<Option<DiscussionRow>, StoreError> {
        Ok(query_as("SELECT * FROM discussions WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.tx)
            .await?)
    }

    pub async fn dialog_by_key(&mut self, key: &str) -> Result<Option<DiscussionRow>, StoreError> {
        Ok(query_as("SELECT * FROM discussions WHERE dialog_key = $1")
            .bind(key)
            .fetch_optional(&mut self.tx)
            .await?)
    }

    pub async fn object_discussion(
        &mut self,
        object: ObjectKey<'_>,
    ) -> Result<Option<DiscussionRow>, StoreError> {
        Ok(query_as(
            "SELECT * FROM discussions WHERE object_app = $1 AND object_type = $2 AND object_id = $3",
        )
        .bind(object.app)
        .bind(object.kind)
        .bind(object.id)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    pub async fn insert_discussion(&mut self, d: &DiscussionRow) -> Result<(), StoreError> {
        query(
            "INSERT INTO discussions (id, kind, title, created_by, created_at, last_seq, \
             last_activity_at, dialog_key, object_app, object_type, object_id) \
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10)",
        )
        .bind(&d.id)
        .bind(d.kind.as_str())
        .bind(&d.title)
        .bind(&d.created_by)
        .bind(d.created_at)
        .bind(d.last_activity_at)
        .bind(&d.dialog_key)
        .bind(&d.object_app)
        .bind(&d.object_type)
        .bind(&d.object_id)
        .execute(&mut self.tx)
        .await
        .map_err(StoreError::from_insert)?;
        Ok(())
    }

    pub async fn set_title(&mut self, id: &str, title: &str) -> Result<(), StoreError> {
        query("UPDATE discussions SET title = $1 WHERE id = $2")
            .bind(title)
            .bind(id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Records `seq` as the discussion's latest sequence number.
    pub async fn set_last_seq(&mut self, id: &str, seq: i64, at: i64) -> Result<(), StoreError> {
        query("UPDATE discussions SET last_seq = $1, last_activity_at = $2 WHERE id = $3")
            .bind(seq)
            .bind(at)
            .bind(id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Takes the discussion's next sequence number.
    pub async fn next_seq(&mut self, id: &str, at: i64) -> Result<i64, StoreError> {
        Ok(query_scalar(
            "UPDATE discussions SET last_seq = last_seq + 1, last_activity_at = $1 \
             WHERE id = $2 RETURNING last_seq",
        )
        .bind(at)
        .bind(id)
        .fetch_one(&mut self.tx)
        .await?)
    }

    /// Stores new messages without mentions in multi-row statements: a run of posts a linked
    /// node's home stamped. A client message id used before is a broken invariant there (each
    /// event is applied once), so it fails the batch rather than being skipped.
    pub async fn insert_messages(&mut self, rows: &[MessageRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO messages (id, discussion_id, seq, author, device_id, client_msg_id, \
                 payload_hash, text, data, actions, reply_to, created_at, edited_at, version, \
                 deleted) {} ON CONFLICT (author, device_id, client_msg_id) DO NOTHING",
                super::values_rows(chunk.len(), 12, "NULL, 1, FALSE")
            );
            // Built from constants and a count, no input.
            let mut insert = query(sql);
            for m in chunk {
                insert = insert
                    .bind(&m.id)
                    .bind(&m.discussion_id)
                    .bind(m.seq)
                    .bind(&m.author)
                    .bind(&m.device_id)
                    .bind(&m.client_msg_id)
                    .bind(&m.payload_hash)
                    .bind(&m.text)
                    .bind(&m.data)
                    .bind(&m.actions)
                    .bind(&m.reply_to)
                    .bind(m.created_at);
            }
            let inserted = insert.execute(&mut self.tx).await?.rows_affected();
            if inserted != chunk.len() as u64 {
                return Err(StoreError::Aborted(
                    "a message of a run was stored before".into(),
                ));
            }
        }
        Ok(())
    }

    /// Which of `rows` (by index) a stored message rules out, in one statement: one with the
    /// same id, or with the same exactly-once key (author, device, client message id).
    pub async fn messages_taken(
        &mut self,
        rows: &[&MessageRow],
    ) -> Result<std::collections::HashSet<usize>, StoreError> {
        if rows.is_empty() {
            return Ok(Default::default());
        }
        let wanted: Vec<[&str; 4]> = rows
            .iter()
            .map(|m| [&m.id, &m.author, &m.device_id, &m.client_msg_id].map(String::as_str))
            .collect();
        let wanted = json_param(&wanted)?;
        let found: Vec<i64> = query_scalar(Sql::two(
            "SELECT w.key FROM json_each($1) w \
             WHERE EXISTS (SELECT 1 FROM messages m WHERE m.id = w.value ->> 0) \
             OR EXISTS (SELECT 1 FROM messages m WHERE m.author = w.value ->> 1 \
             AND m.device_id = w.value ->> 2 AND m.client_msg_id = w.value ->> 3)",
            // The elements are arrays: walked as JSON, not as the text `json_each` gives.
            "SELECT w.ord - 1 FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY w(value, ord) \
             WHERE EXISTS (SELECT 1 FROM messages m WHERE m.id = w.value ->> 0) \
             OR EXISTS (SELECT 1 FROM messages m WHERE m.author = w.value ->> 1 \
             AND m.device_id = w.value ->> 2 AND m.client_msg_id = w.value ->> 3)",
        ))
        .bind(wanted)
        .fetch_all(&mut self.tx)
        .await?;
        Ok(found
            .into_iter()
            .filter_map(|i| usize::try_from(i).ok())
            .collect())
    }

    /// Stores events in multi-row statements.
    pub async fn insert_events(&mut self, rows: &[EventRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO events (discussion_id, seq, kind, actor, at, message_id, detail) {}",
                super::values_rows(chunk.len(), 7, "")
            );
            // Built from constants and a count, no input.
            let mut insert = query(sql);
            for e in chunk {
                insert = insert
                    .bind(&e.discussion_id)
                    .bind(e.seq)
                    .bind(&e.kind)
                    .bind(&e.actor)
                    .bind(e.at)
                    .bind(&e.message_id)
                    .bind(&e.detail);
            }
            insert.execute(&mut self.tx).await?;
        }
        Ok(())
    }

    pub async fn insert_event(&mut self, e: &EventRow) -> Result<(), StoreError> {
        query(
            "INSERT INTO events (discussion_id, seq, kind, actor, at, message_id, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&e.discussion_id)
        .bind(e.seq)
        .bind(&e.kind)
        .bind(&e.actor)
        .bind(e.at)
        .bind(&e.message_id)
        .bind(&e.detail)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    pub async fn member_role(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            query_scalar("SELECT role FROM members WHERE discussion_id = $1 AND user_id = $2")
                .bind(discussion)
                .bind(user)
                .fetch_optional(&mut self.tx)
                .await?,
        )
    }

    pub async fn members(&mut self, discussion: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(query_as(
            "SELECT user_id, role FROM members WHERE discussion_id = $1 ORDER BY added_at, user_id",
        )
        .bind(discussion)
        .fetch_all(&mut self.tx)
        .await?)
    }

    pub async fn add_member(
        &mut self,
        discussion: &str,
        user: &str,
        role: &str,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = query(
            "INSERT INTO members (discussion_id, user_id, role, added_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (discussion_id, user_id) DO NOTHING",
        )
        .bind(discussion)
        .bind(user)
        .bind(role)
        .bind(at)
        .execute(&mut self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_role(
        &mut self,
        discussion: &str,
        user: &str,
        role: &str,
    ) -> Result<(), StoreError> {
        query("UPDATE members SET role = $1 WHERE discussion_id = $2 AND user_id = $3")
            .bind(role)
            .bind(discussion)
            .bind(user)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Object discussions whose object's access list names this group.
    pub async fn object_discussions_granted_to_group(
        &mut self,
        group: &str,
    ) -> Result<Vec<DiscussionRow>, StoreError> {
        Ok(query_as(
            "SELECT d.* FROM discussions d JOIN object_access a \
             ON a.object_app = d.object_app AND a.object_type = d.object_type AND a.object_id = d.object_id \
             WHERE a.principal = 'group:' || $1",
        )
        .bind(group)
        .fetch_all(&mut self.tx)
        .await?)
    }

    pub async fn remove_member(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<bool, StoreError> {
        let done = query("DELETE FROM members WHERE discussion_id = $1 AND user_id = $2")
            .bind(discussion)
            .bind(user)
            .execute(&mut self.tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn user_exists(&mut self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar("SELECT CAST(1 AS BIGINT) FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.tx)
            .await?;
        Ok(found.is_some())
    }

    pub async fn has_object_access(
        &mut self,
        object: ObjectKey<'_>,
        user: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(HAS_OBJECT_ACCESS)
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .bind(user)
            .bind(user)
            .fetch_optional(&mut self.tx)
            .await?;
        Ok(found.is_some())
    }

    pub async fn is_app(&mut self, user: &str, app: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(super::apps::IS_APP)
            .bind(app)
            .bind(user)
            .fetch_optional(&mut self.tx)
            .await?;
        Ok(found.is_some())
    }

    pub async fn users_with_object_access(
        &mut self,
        object: ObjectKey<'_>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(USERS_WITH_OBJECT_ACCESS)
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .fetch_all(&mut self.tx)
            .await?)
    }

    /// Replaces an object's access list.
    pub async fn set_object_access(
        &mut self,
        object: ObjectKey<'_>,
        principals: &[String],
    ) -> Result<(), StoreError> {
        query(
            "DELETE FROM object_access WHERE object_app = $1 AND object_type = $2 AND object_id = $3",
        )
        .bind(object.app)
        .bind(object.kind)
        .bind(object.id)
        .execute(&mut self.tx)
        .await?;
        for p in principals {
            query(
                "INSERT INTO object_access (object_app, object_type, object_id, principal) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .bind(p)
            .execute(&mut self.tx)
            .await?;
        }
        Ok(())
    }

    /// Followers of an object discussion who (still) have access to its object.
    /// Everyone following a discussion, whatever their access now.
    pub async fn followers(&mut self, discussion: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            query_scalar("SELECT user_id FROM follows WHERE discussion_id = $1 ORDER BY user_id")
                .bind(discussion)
                .fetch_all(&mut self.tx)
                .await?,
        )
    }

    pub async fn followers_with_access(
        &mut self,
        discussion: &str,
        object: ObjectKey<'_>,
    ) -> Result<Vec<String>, StoreError> {
        let query = format!(
            "SELECT f.user_id FROM follows f WHERE f.discussion_id = $7 AND f.user_id IN ({USERS_WITH_OBJECT_ACCESS})"
        );
        // The query is built from two constants of this module, no input; the constant's
        // placeholders are $1 to $6, the discussion $7.
        Ok(query_scalar(query)
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .bind(discussion)
            .fetch_all(&mut self.tx)
            .await?)
    }

    pub async fn set_follow(
        &mut self,
        user: &str,
        discussion: &str,
        follow: bool,
    ) -> Result<(), StoreError> {
        if follow {
            query(
                "INSERT INTO follows (user_id, discussion_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(user)
            .bind(discussion)
            .execute(&mut self.tx)
            .await?;
        } else {
            query("DELETE FROM follows WHERE user_id = $1 AND discussion_id = $2")
                .bind(user)
                .bind(discussion)
                .execute(&mut self.tx)
                .await?;
        }
        Ok(())
    }

    pub async fn message(&mut self, id: &str) -> Result<Option<MessageRow>, StoreError> {
        Ok(query_as("SELECT * FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut self.tx)
            .await?)
    }

    pub async fn message_by_client_id(
        &mut self,
        author: &str,
        device: &str,
        client_msg_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        Ok(query_as(
            "SELECT * FROM messages WHERE author = $1 AND device_id = $2 AND client_msg_id = $3",
        )
        .bind(author)
        .bind(device)
        .bind(client_msg_id)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Stores a new message and its mentions; `false` (and nothing stored) if the author's
    /// device already used this client message id.
    pub async fn insert_message(
        &mut self,
        m: &MessageRow,
        mentions: &[String],
    ) -> Result<bool, StoreError> {
        let inserted = query(
            "INSERT INTO messages (id, discussion_id, seq, author, device_id, client_msg_id, \
             payload_hash, text, data, actions, reply_to, created_at, edited_at, version, deleted) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, 1, FALSE) \
             ON CONFLICT (author, device_id, client_msg_id) DO NOTHING",
        )
        .bind(&m.id)
        .bind(&m.discussion_id)
        .bind(m.seq)
        .bind(&m.author)
        .bind(&m.device_id)
        .bind(&m.client_msg_id)
        .bind(&m.payload_hash)
        .bind(&m.text)
        .bind(&m.data)
        .bind(&m.actions)
        .bind(&m.reply_to)
        .bind(m.created_at)
        .execute(&mut self.tx)
        .await
        .map_err(StoreError::from_insert)?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        for user in mentions {
            query(
                "INSERT INTO mentions (message_id, user_id, discussion_id, seq) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&m.id)
            .bind(user)
            .bind(&m.discussion_id)
            .bind(m.seq)
            .execute(&mut self.tx)
            .await?;
        }
        Ok(true)
    }

    /// Stores a new version of a message's text; returns the version number. The original text
    /// is copied to `message_versions` at the first edit (unedited messages keep one copy).
    pub async fn edit_message(&mut self, id: &str, text: &str, at: i64) -> Result<i64, StoreError> {
        query(
            "INSERT INTO message_versions (message_id, version, text, at) \
             SELECT id, 1, text, created_at FROM messages \
             WHERE id = $1 AND version = 1 AND text IS NOT NULL",
        )
        .bind(id)
        .execute(&mut self.tx)
        .await?;
        let version: i64 = query_scalar(
            "UPDATE messages SET text = $1, edited_at = $2, version = version + 1 WHERE id = $3 RETURNING version",
        )
        .bind(text)
        .bind(at)
        .bind(id)
        .fetch_one(&mut self.tx)
        .await?;
        query(
            "INSERT INTO message_versions (message_id, version, text, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(version)
        .bind(text)
        .bind(at)
        .execute(&mut self.tx)
        .await?;
        Ok(version)
    }

    /// Turns a message into a tombstone: text, data, actions and every earlier version are
    /// purged; the row (and its exactly-once key) stays.
    pub async fn delete_message(&mut self, id: &str) -> Result<(), StoreError> {
        query(
            "UPDATE messages SET text = NULL, data = NULL, actions = '[]', deleted = TRUE WHERE id = $1",
        )
        .bind(id)
        .execute(&mut self.tx)
        .await?;
        for purge in [
            "DELETE FROM message_versions WHERE message_id = $1",
            "DELETE FROM reactions WHERE message_id = $1",
            "DELETE FROM mentions WHERE message_id = $1",
            // A file whose last message is gone becomes removable (see `removable_files`).
            "DELETE FROM message_files WHERE message_id = $1",
        ] {
            query(purge).bind(id).execute(&mut self.tx).await?;
        }
        Ok(())
    }

    /// Adds or removes a reaction; returns whether anything changed.
    pub async fn set_reaction(
        &mut self,
        message: &str,
        user: &str,
        emoji: &str,
        add: bool,
        at: i64,
    ) -> Result<bool, StoreError> {
        let done = if add {
            query(
                "INSERT INTO reactions (message_id, user_id, emoji, at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(message)
            .bind(user)
            .bind(emoji)
            .bind(at)
            .execute(&mut self.tx)
            .await?
        } else {
            query("DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3")
                .bind(message)
                .bind(user)
                .bind(emoji)
                .execute(&mut self.tx)
                .await?
        };
        Ok(done.rows_affected() > 0)
    }

    /// Moves a read marker forward (never back).
    pub async fn mark_read(
        &mut self,
        user: &str,
        discussion: &str,
        seq: i64,
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO read_markers (user_id, discussion_id, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, discussion_id) DO UPDATE SET seq = \
             CASE WHEN excluded.seq > read_markers.seq THEN excluded.seq ELSE read_markers.seq END",
        )
        .bind(user)
        .bind(discussion)
        .bind(seq)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }
}

/// Reads, on the reader pool.
impl Discussions<'_> {
    /// The id of an object's discussion, if it has one.
    pub async fn object_discussion_id(
        &self,
        object: &veche_protocol::discussions::ObjectRef,
    ) -> Result<Option<String>, StoreError> {
        Ok(query_scalar(
            "SELECT id FROM discussions WHERE object_app = $1 AND object_type = $2 AND object_id = $3",
        )
        .bind(&object.application)
        .bind(&object.object_type)
        .bind(&object.object_id)
        .fetch_optional(&self.db.read)
        .await?)
    }

    pub async fn discussion(&self, id: &str) -> Result<Option<DiscussionRow>, StoreError> {
        Ok(query_as("SELECT * FROM discussions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?)
    }

    pub async fn member_role(
        &self,
        discussion: &str,
        user: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            query_scalar("SELECT role FROM members WHERE discussion_id = $1 AND user_id = $2")
                .bind(discussion)
                .bind(user)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    pub async fn members_of(&self, discussion: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(query_as(
            "SELECT user_id, role FROM members WHERE discussion_id = $1 ORDER BY added_at, user_id",
        )
        .bind(discussion)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn has_object_access(
        &self,
        object: ObjectKey<'_>,
        user: &str,
    ) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(HAS_OBJECT_ACCESS)
            .bind(object.app)
            .bind(object.kind)
            .bind(object.id)
            .bind(user)
            .bind(user)
            .fetch_optional(&self.db.read)
            .await?;
        Ok(found.is_some())
    }

    /// The principals (`user:<id>`, `group:<id>`) on an object's access list.
    pub async fn object_access_list(
        &self,
        object: ObjectKey<'_>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT principal FROM object_access WHERE object_app = $1 AND object_type = $2 \
             AND object_id = $3 ORDER BY principal",
        )
        .bind(object.app)
        .bind(object.kind)
        .bind(object.id)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn is_following(&self, user: &str, discussion: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM follows WHERE user_id = $1 AND discussion_id = $2",
        )
        .bind(user)
        .bind(discussion)
        .fetch_optional(&self.db.read)
        .await?;
        Ok(found.is_some())
    }

    /// Dialogs and groups the user belongs to and object discussions they follow, most recent
    /// activity first, each with the user's place in it: one statement for the whole list, so
    /// a list of a thousand discussions is not five thousand round trips.
    pub async fn listed_discussions(&self, user: &str) -> Result<Vec<ListedRow>, StoreError> {
        Ok(query_as(LISTED_DISCUSSIONS)
            .bind(user)
            .fetch_all(&self.db.read)
            .await?)
    }

    /// The members of every dialog and group `user` belongs to, as (discussion, user, role),
    /// each discussion's members in the order [`Self::members_of`] gives them.
    pub async fn members_of_listed(
        &self,
        user: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        Ok(query_as(
            "SELECT m.discussion_id, m.user_id, m.role FROM members m \
             WHERE m.discussion_id IN (SELECT discussion_id FROM members WHERE user_id = $1) \
             ORDER BY m.discussion_id, m.added_at, m.user_id",
        )
        .bind(user)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn read_marker(&self, user: &str, discussion: &str) -> Result<i64, StoreError> {
        let seq: Option<i64> =
            query_scalar("SELECT seq FROM read_markers WHERE user_id = $1 AND discussion_id = $2")
                .bind(user)
                .bind(discussion)
                .fetch_optional(&self.db.read)
                .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Messages by others after `after`, and how many of them mention `user`.
    pub async fn unread(
        &self,
        user: &str,
        discussion: &str,
        after: i64,
    ) -> Result<(i64, i64), StoreError> {
        let unread: i64 = query_scalar(
            "SELECT COUNT(*) FROM messages WHERE discussion_id = $1 AND seq > $2 AND author != $3 AND deleted = FALSE",
        )
        .bind(discussion)
        .bind(after)
        .bind(user)
        .fetch_one(&self.db.read)
        .await?;
        let mentions: i64 = query_scalar(
            "SELECT COUNT(*) FROM mentions WHERE user_id = $1 AND discussion_id = $2 AND seq > $3",
        )
        .bind(user)
        .bind(discussion)
        .bind(after)
        .fetch_one(&self.db.read)
        .await?;
        Ok((unread, mentions))
    }

    /// Events with `seq > after`, oldest first.
    pub async fn events_after(
        &self,
        discussion: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(query_as(
            "SELECT * FROM events WHERE discussion_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(discussion)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Events with `seq < before`, the newest `limit` of them, oldest first.
    pub async fn events_before(
        &self,
        discussion: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let mut rows: Vec<EventRow> = query_as(
            "SELECT * FROM events WHERE discussion_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
        )
        .bind(discussion)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        rows.reverse();
        Ok(rows)
    }

    pub async fn message(&self, id: &str) -> Result<Option<MessageRow>, StoreError> {
        Ok(query_as("SELECT * FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?)
    }

    pub async fn message_versions(&self, id: &str) -> Result<Vec<(i64, String, i64)>, StoreError> {
        Ok(query_as(
            "SELECT version, text, at FROM message_versions WHERE message_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn message_version_text(
        &self,
        id: &str,
        version: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            query_scalar(
                "SELECT text FROM message_versions WHERE message_id = $1 AND version = $2",
            )
            .bind(id)
            .bind(version)
            .fetch_optional(&self.db.read)
            .await?,
        )
    }

    pub async fn reactions(&self, message: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(query_as(
            "SELECT emoji, user_id FROM reactions WHERE message_id = $1 ORDER BY at, user_id",
        )
        .bind(message)
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn mentions(&self, message: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            query_scalar("SELECT user_id FROM mentions WHERE message_id = $1 ORDER BY user_id")
                .bind(message)
                .fetch_all(&self.db.read)
                .await?,
        )
    }
}
