//! Federated discussions: which links a discussion is shared over, the signed log of each
//! shared discussion (on its home and on replicas), submissions waiting for their home, and
//! remote users' profile records. Written in the sequencer's transaction.

use super::{Batch, Federated, ROWS_PER_STATEMENT, StoreError, json_param};
use crate::db::{Tx, query, query_as, query_scalar};

/// A received item waiting to be applied.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InboxItem {
    pub link: String,
    pub link_seq: i64,
    pub item: Vec<u8>,
}

/// The last entry of a discussion's federated log.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FedHead {
    pub fseq: i64,
    pub stamp: Vec<u8>,
}

/// An entry of a discussion's federated log, to be appended.
#[derive(Debug, Clone)]
pub struct FedLogRow {
    pub discussion: String,
    pub fseq: i64,
    pub event_id: String,
    pub kind: String,
    pub message_id: Option<String>,
    pub stamp: Vec<u8>,
    pub event: Vec<u8>,
}

/// A submission written here for a discussion of another home.
#[derive(Debug, Clone)]
pub struct NewPending<'a> {
    pub event_id: &'a str,
    /// The message written or changed; a dialog's id for `dialog.open`.
    pub message_id: &'a str,
    pub discussion: &'a str,
    pub author: &'a str,
    pub device: &'a str,
    pub client_msg_id: &'a str,
    pub kind: &'a str,
    pub at: i64,
}

/// What a linked node says of one of its users.
#[derive(Debug, Clone, Copy)]
pub struct RemoteProfile<'a> {
    pub id: &'a str,
    pub display_name: &'a str,
    pub department: &'a str,
}

/// A submission written here for a discussion of another home, by its exactly-once key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingRow {
    pub message_id: String,
    /// Why its home refused it, if it did.
    pub refused: Option<String>,
}

impl Batch {
    /// The active links `discussion` is shared over (this node being its home).
    pub async fn fed_shares(&mut self, discussion: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = query_as(
            "SELECT s.link FROM fed_shares s JOIN fed_links l ON l.link = s.link \
             WHERE s.discussion_id = $1 AND l.state = 'active' ORDER BY s.link",
        )
        .bind(discussion)
        .fetch_all(&mut self.tx)
        .await?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Shares `discussion` over `link` (again: its state was sent `at`).
    pub async fn fed_add_share(
        &mut self,
        discussion: &str,
        link: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO fed_shares (discussion_id, link, shared_at) VALUES ($1, $2, $3) \
             ON CONFLICT (discussion_id, link) DO UPDATE SET shared_at = excluded.shared_at",
        )
        .bind(discussion)
        .bind(link)
        .bind(at)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// When `discussion`'s state was last sent over `link`, if it is shared over it.
    pub async fn fed_shared_at(
        &mut self,
        discussion: &str,
        link: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            query_scalar("SELECT shared_at FROM fed_shares WHERE discussion_id = $1 AND link = $2")
                .bind(discussion)
                .bind(link)
                .fetch_optional(&mut self.tx)
                .await?,
        )
    }

    /// The discussions shared over `link`.
    pub async fn fed_shared_over(&mut self, link: &str) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT discussion_id FROM fed_shares WHERE link = $1 ORDER BY discussion_id",
        )
        .bind(link)
        .fetch_all(&mut self.tx)
        .await?)
    }

    /// Numbers what waits in `link`'s outbox again to follow `received` (the peer lost what
    /// came between), in order, and numbering goes on after it.
    pub async fn fed_renumber_outbox(
        &mut self,
        link: &str,
        received: i64,
    ) -> Result<(), StoreError> {
        renumber_outbox(&mut self.tx, link, received).await
    }

    /// Stops sharing `discussion` over `link`.
    pub async fn fed_unshare(&mut self, discussion: &str, link: &str) -> Result<(), StoreError> {
        query("DELETE FROM fed_shares WHERE discussion_id = $1 AND link = $2")
            .bind(discussion)
            .bind(link)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// The active link to the node named `node`.
    pub async fn fed_link_to(&mut self, node: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            query_as("SELECT link FROM fed_links WHERE peer_node = $1 AND state = 'active'")
                .bind(node)
                .fetch_optional(&mut self.tx)
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// The scope (JSON) of an active link.
    pub async fn fed_link_scope(&mut self, link: &str) -> Result<Option<String>, StoreError> {
        Ok(
            query_scalar("SELECT scope FROM fed_links WHERE link = $1 AND state = 'active'")
                .bind(link)
                .fetch_optional(&mut self.tx)
                .await?,
        )
    }

    /// The peer node of an active link.
    pub async fn fed_link_peer(&mut self, link: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> =
            query_as("SELECT peer_node FROM fed_links WHERE link = $1 AND state = 'active'")
                .bind(link)
                .fetch_optional(&mut self.tx)
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// The peer's public key (ed25519) on an active link.
    pub async fn fed_link_key(&mut self, link: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let row: Option<(Vec<u8>,)> =
            query_as("SELECT peer_key FROM fed_links WHERE link = $1 AND state = 'active'")
                .bind(link)
                .fetch_optional(&mut self.tx)
                .await?;
        Ok(row.and_then(|r| <[u8; 32]>::try_from(r.0.as_slice()).ok()))
    }

    /// The last entry of `discussion`'s federated log.
    pub async fn fed_head(&mut self, discussion: &str) -> Result<Option<FedHead>, StoreError> {
        Ok(query_as(
            "SELECT fseq, stamp FROM fed_log WHERE discussion_id = $1 ORDER BY fseq DESC LIMIT 1",
        )
        .bind(discussion)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Which of `event_ids` are in a federated log already, in one statement.
    pub async fn fed_known_events(
        &mut self,
        event_ids: &[String],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        if event_ids.is_empty() {
            return Ok(Default::default());
        }
        let ids = json_param(&event_ids)?;
        let found: Vec<String> = query_scalar(
            "SELECT event_id FROM fed_log WHERE event_id IN (SELECT value FROM json_each($1))",
        )
        .bind(ids)
        .fetch_all(&mut self.tx)
        .await?;
        Ok(found.into_iter().collect())
    }

    /// The event that posted `message`, if the message came through a federated log.
    pub async fn fed_event_of_message(
        &mut self,
        discussion: &str,
        message: &str,
    ) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = query_as(
            "SELECT event_id FROM fed_log WHERE discussion_id = $1 AND message_id = $2 \
             AND kind = 'message.post'",
        )
        .bind(discussion)
        .bind(message)
        .fetch_optional(&mut self.tx)
        .await?;
        Ok(row.map(|r| r.0))
    }

    /// Appends to a discussion's federated log.
    pub async fn fed_log_append(&mut self, r: &FedLogRow) -> Result<(), StoreError> {
        query(
            "INSERT INTO fed_log (discussion_id, fseq, event_id, kind, message_id, stamp, event) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.discussion)
        .bind(r.fseq)
        .bind(&r.event_id)
        .bind(&r.kind)
        .bind(&r.message_id)
        .bind(&r.stamp)
        .bind(&r.event)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }

    /// Appends entries to federated logs in multi-row statements.
    pub async fn fed_log_append_many(&mut self, rows: &[FedLogRow]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO fed_log (discussion_id, fseq, event_id, kind, message_id, stamp, \
                 event) {}",
                super::values_rows(chunk.len(), 7, "")
            );
            // Built from constants and a count, no input.
            let mut insert = query(sql);
            for r in chunk {
                insert = insert
                    .bind(&r.discussion)
                    .bind(r.fseq)
                    .bind(&r.event_id)
                    .bind(&r.kind)
                    .bind(&r.message_id)
                    .bind(&r.stamp)
                    .bind(&r.event);
            }
            insert.execute(&mut self.tx).await?;
        }
        Ok(())
    }

    /// The stored events that posted or edited `message` in `discussion`: `(event_id, event)`.
    pub async fn fed_message_events(
        &mut self,
        discussion: &str,
        message: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(query_as(
            "SELECT event_id, event FROM fed_log WHERE discussion_id = $1 AND message_id = $2 \
             AND kind IN ('message.post', 'message.edit')",
        )
        .bind(discussion)
        .bind(message)
        .fetch_all(&mut self.tx)
        .await?)
    }

    /// Replaces the stored bytes of the logged event `event_id` (its body was purged).
    pub async fn fed_replace_event(
        &mut self,
        event_id: &str,
        event: &[u8],
    ) -> Result<(), StoreError> {
        query("UPDATE fed_log SET event = $1 WHERE event_id = $2")
            .bind(event)
            .bind(event_id)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// Queues `item` (CBOR) for the peer of `link`.
    pub async fn fed_enqueue(&mut self, link: &str, item: &[u8]) -> Result<(), StoreError> {
        let row: Option<(i64,)> = query_as(
            "UPDATE fed_links SET out_last = out_last + 1 WHERE link = $1 AND state = 'active' \
             RETURNING out_last",
        )
        .bind(link)
        .fetch_optional(&mut self.tx)
        .await?;
        let Some((seq,)) = row else {
            return Err(StoreError::Aborted(format!(
                "the link {link} is not active"
            )));
        };
        query("INSERT INTO fed_outbox (link, link_seq, item) VALUES ($1, $2, $3)")
            .bind(link)
            .bind(seq)
            .bind(item)
            .execute(&mut self.tx)
            .await?;
        Ok(())
    }

    /// A message written here and sent to its home, by its exactly-once key.
    pub async fn fed_pending(
        &mut self,
        author: &str,
        device: &str,
        client_msg_id: &str,
    ) -> Result<Option<PendingRow>, StoreError> {
        Ok(query_as(
            "SELECT message_id, refused FROM fed_pending \
             WHERE author = $1 AND device_id = $2 AND client_msg_id = $3",
        )
        .bind(author)
        .bind(device)
        .bind(client_msg_id)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Records a submission sent to its home; `false` if its key was used already.
    pub async fn fed_add_pending(&mut self, p: &NewPending<'_>) -> Result<bool, StoreError> {
        Ok(query(
            "INSERT INTO fed_pending (event_id, message_id, discussion_id, author, device_id, \
             client_msg_id, created_at, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT DO NOTHING",
        )
        .bind(p.event_id)
        .bind(p.message_id)
        .bind(p.discussion)
        .bind(p.author)
        .bind(p.device)
        .bind(p.client_msg_id)
        .bind(p.at)
        .bind(p.kind)
        .execute(&mut self.tx)
        .await?
        .rows_affected()
            > 0)
    }

    /// Records that no submission still waiting for the node `home` (neither stamped nor
    /// refused) will be delivered, with `reason` (the link to it ended): (discussion, author,
    /// the message written or changed, none for a dialog's opening) of each.
    pub async fn fed_refuse_pending_at(
        &mut self,
        home: &str,
        reason: &str,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let suffix = format!("@{home}");
        let rows: Vec<(String, String, String, String)> = query_as(
            "UPDATE fed_pending SET refused = $1 WHERE refused IS NULL \
             AND substr(discussion_id, length(discussion_id) - length($2) + 1) = $2 \
             AND NOT EXISTS (SELECT 1 FROM fed_log g WHERE g.event_id = fed_pending.event_id) \
             RETURNING discussion_id, author, message_id, kind",
        )
        .bind(reason)
        .bind(&suffix)
        .fetch_all(&mut self.tx)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(discussion, author, message, kind)| {
                (
                    discussion,
                    author,
                    (kind != "dialog.open").then_some(message),
                )
            })
            .collect())
    }

    /// Records that the home refused the submission `event_id` of `author` in `discussion`:
    /// `None` if there is no such submission, or it was refused already (a refusal sent again
    /// is told once); else the message it wrote or changed, if it was about one (a dialog's
    /// opening is not).
    pub async fn fed_refuse_pending(
        &mut self,
        event_id: &str,
        discussion: &str,
        author: &str,
        reason: &str,
    ) -> Result<Option<Option<String>>, StoreError> {
        let row: Option<(String, String)> = query_as(
            "UPDATE fed_pending SET refused = $1 WHERE event_id = $2 AND discussion_id = $3 \
             AND author = $4 AND refused IS NULL RETURNING message_id, kind",
        )
        .bind(reason)
        .bind(event_id)
        .bind(discussion)
        .bind(author)
        .fetch_optional(&mut self.tx)
        .await?;
        Ok(row.map(|(message, kind)| (kind != "dialog.open").then_some(message)))
    }

    /// Whether the peer of the active `link` may reach `user` of this node (in a dialog): a
    /// person, not locked, and unless `full_directory` says the link's scope (as stored) lets
    /// the peer see everyone, a member of a discussion shared with the peer (`shared_with!`).
    pub async fn fed_reachable(
        &mut self,
        link: &str,
        peer: &str,
        user: &str,
        full_directory: impl FnOnce(&str) -> bool,
    ) -> Result<bool, StoreError> {
        let scope: Option<String> =
            query_scalar("SELECT scope FROM fed_links WHERE link = $1 AND state = 'active'")
                .bind(link)
                .fetch_optional(&mut self.tx)
                .await?;
        let Some(scope) = scope else {
            return Ok(false);
        };
        let full = full_directory(&scope);
        let person: Option<i64> = query_scalar(
            "SELECT CAST(1 AS BIGINT) FROM users WHERE id = $1 AND kind = 'person' AND NOT locked",
        )
        .bind(user)
        .fetch_optional(&mut self.tx)
        .await?;
        if person.is_none() || full {
            return Ok(person.is_some());
        }
        let suffix = format!("@{peer}");
        let member: Option<i64> = query_scalar(concat!(
            "SELECT CAST(1 AS BIGINT) FROM members m WHERE m.user_id = $1 AND ",
            shared_with!(2, 3, 4),
            " LIMIT 1"
        ))
        .bind(user)
        .bind(link)
        .bind(&suffix)
        .bind(&suffix)
        .fetch_optional(&mut self.tx)
        .await?;
        Ok(member.is_some())
    }

    /// The share `event_id` of `discussion` in its federated log here (CBOR, as signed).
    pub async fn fed_share_event(
        &mut self,
        event_id: &str,
        discussion: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(query_scalar(
            "SELECT event FROM fed_log WHERE event_id = $1 AND discussion_id = $2 \
             AND kind = 'discussion.share'",
        )
        .bind(event_id)
        .bind(discussion)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// A user of another node, known here by id only; such a user never logs in here.
    pub async fn ensure_remote_user(&mut self, id: &str, at: i64) -> Result<(), StoreError> {
        let display = id.split_once('@').map_or(id, |(login, _)| login);
        query(
            "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, locked, \
             created_at, updated_at, kind) VALUES ($1, $2, $3, '', '!', FALSE, FALSE, $4, $5, 'remote') \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(id)
        .bind(display)
        .bind(at)
        .bind(at)
        .execute(&mut self.tx)
        .await?;
        Ok(())
    }
}

impl Federated<'_> {
    /// Which of `ids` are users of linked nodes known here.
    pub async fn known_remote_users(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let ids = json_param(&ids)?;
        let found: Vec<String> = query_scalar(
            "SELECT id FROM users WHERE kind = 'remote' AND id IN (SELECT value FROM json_each($1))",
        )
        .bind(ids)
        .fetch_all(&self.db.read)
        .await?;
        Ok(found.into_iter().collect())
    }

    /// Brings the profiles of linked nodes' users known here up to date with what their node
    /// says (nobody is added: a user of another node is known once they take part).
    pub async fn refresh_remote_profiles(
        &self,
        profiles: &[RemoteProfile<'_>],
        at: i64,
    ) -> Result<(), StoreError> {
        // Most people found are not known here: the writer is taken only for those who are.
        let ids: Vec<&str> = profiles.iter().map(|p| p.id).collect();
        let known = self.known_remote_users(&ids).await?;
        if known.is_empty() {
            return Ok(());
        }
        let mut tx = self.db.write.begin().await?;
        for p in profiles.iter().filter(|p| known.contains(p.id)) {
            query(
                "UPDATE users SET display_name = $1, department = $2, updated_at = $3 \
                 WHERE id = $4 AND kind = 'remote' AND (display_name <> $5 OR department <> $6)",
            )
            .bind(p.display_name)
            .bind(p.department)
            .bind(at)
            .bind(p.id)
            .bind(p.display_name)
            .bind(p.department)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Received items not yet applied, in each link's order.
    pub async fn fed_inbox_next(&self, limit: i64) -> Result<Vec<InboxItem>, StoreError> {
        Ok(query_as(
            "SELECT link, link_seq, item FROM fed_inbox \
             WHERE processed_at IS NULL AND refused IS NULL ORDER BY link, link_seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Forgets received items once applied (what they did is in the discussion and its
    /// federated log), or keeps them, refused for good, with their error for the
    /// administrator; in one transaction, each link's run of applied items in one statement.
    pub async fn fed_inbox_done(
        &self,
        items: &[(String, i64, Option<String>)],
        at: i64,
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut applied: Vec<(&str, i64, i64)> = Vec::new();
        let mut tx = self.db.write.begin().await?;
        for (link, link_seq, error) in items {
            match error {
                None => match applied.last_mut() {
                    Some((l, _, last)) if *l == link.as_str() && *last + 1 == *link_seq => {
                        *last = *link_seq;
                    }
                    _ => applied.push((link, *link_seq, *link_seq)),
                },
                Some(error) => {
                    query(
                        "UPDATE fed_inbox SET processed_at = $1, error = $2 \
                         WHERE link = $3 AND link_seq = $4",
                    )
                    .bind(at)
                    .bind(error)
                    .bind(link)
                    .bind(link_seq)
                    .execute(&mut tx)
                    .await?;
                }
            }
        }
        for (link, first, last) in applied {
            query("DELETE FROM fed_inbox WHERE link = $1 AND link_seq BETWEEN $2 AND $3")
                .bind(link)
                .bind(first)
                .bind(last)
                .execute(&mut tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// What a user may do in an object discussion across a link (see `fed_object_readers`):
/// `Some(true)` read and write, `Some(false)` read only.
pub type ReaderAccess = Option<bool>;

impl Batch {
    /// What the home of the object discussion `discussion` says `user` may do there (on a
    /// replica), or what this node, as home, last told `user`'s node.
    pub async fn fed_reader(
        &mut self,
        discussion: &str,
        user: &str,
    ) -> Result<ReaderAccess, StoreError> {
        Ok(query_scalar(
            "SELECT write FROM fed_object_readers WHERE discussion_id = $1 AND user_id = $2",
        )
        .bind(discussion)
        .bind(user)
        .fetch_optional(&mut self.tx)
        .await?)
    }

    /// Every reader of `discussion` recorded here, with whether they may write.
    pub async fn fed_readers(
        &mut self,
        discussion: &str,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        Ok(query_as(
            "SELECT user_id, write FROM fed_object_readers WHERE discussion_id = $1 \
             ORDER BY user_id",
        )
        .bind(discussion)
        .fetch_all(&mut self.tx)
        .await?)
    }

    /// Records what `user` may do in `discussion` (`None`: nothing); `true` if that changed.
    pub async fn fed_set_reader(
        &mut self,
        discussion: &str,
        user: &str,
        access: ReaderAccess,
    ) -> Result<bool, StoreError> {
        let changed = match access {
            Some(write) => query(
                "INSERT INTO fed_object_readers (discussion_id, user_id, write) VALUES ($1, $2, $3) \
                 ON CONFLICT (discussion_id, user_id) DO UPDATE SET write = excluded.write \
                 WHERE fed_object_readers.write <> excluded.write",
            )
            .bind(discussion)
            .bind(user)
            .bind(write)
            .execute(&mut self.tx)
            .await?
            .rows_affected(),
            None => query(
                "DELETE FROM fed_object_readers WHERE discussion_id = $1 AND user_id = $2",
            )
            .bind(discussion)
            .bind(user)
            .execute(&mut self.tx)
            .await?
            .rows_affected(),
        };
        Ok(changed > 0)
    }

    /// The object discussions this node (`me`) is home of that users of linked nodes were
    /// told they may read, at most `limit` after `after` (by id), to be checked again.
    pub async fn fed_told_readers(
        &mut self,
        me: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT DISTINCT discussion_id FROM fed_object_readers WHERE discussion_id > $1 \
             AND substr(discussion_id, length(discussion_id) - length($2)) = '@' || $2 \
             ORDER BY discussion_id LIMIT $3",
        )
        .bind(after)
        .bind(me)
        .bind(limit)
        .fetch_all(&mut self.tx)
        .await?)
    }
}

impl Federated<'_> {
    /// The last number of `discussion`'s federated log held here.
    pub async fn fed_head_seq(&self, discussion: &str) -> Result<Option<i64>, StoreError> {
        Ok(
            query_scalar("SELECT MAX(fseq) FROM fed_log WHERE discussion_id = $1")
                .bind(discussion)
                .fetch_one(&self.db.read)
                .await?,
        )
    }

    /// The discussions this node (`me`) is home of and shares over `link`.
    pub async fn fed_home_shared_over(
        &self,
        link: &str,
        me: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT discussion_id FROM fed_shares WHERE link = $1 \
             AND substr(discussion_id, length(discussion_id) - length($2)) = '@' || $2 ORDER BY discussion_id",
        )
        .bind(link)
        .bind(me)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The active link with `node`, from the reader pool.
    pub async fn fed_link_to(&self, node: &str) -> Result<Option<String>, StoreError> {
        Ok(
            query_scalar("SELECT link FROM fed_links WHERE peer_node = $1 AND state = 'active'")
                .bind(node)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    /// [`Batch::fed_reader`] from the reader pool.
    pub async fn fed_reader(
        &self,
        discussion: &str,
        user: &str,
    ) -> Result<ReaderAccess, StoreError> {
        Ok(query_scalar(
            "SELECT write FROM fed_object_readers WHERE discussion_id = $1 AND user_id = $2",
        )
        .bind(discussion)
        .bind(user)
        .fetch_optional(&self.db.read)
        .await?)
    }
}

/// Numbers what waits in `link`'s outbox again to follow `after`, in order; numbering goes on
/// after the last of them (or after `after`), and the peer is taken to hold up to `after`.
pub(super) async fn renumber_outbox(
    conn: &mut Tx,
    link: &str,
    after: i64,
) -> Result<(), StoreError> {
    let first: Option<i64> = query_scalar("SELECT MIN(link_seq) FROM fed_outbox WHERE link = $1")
        .bind(link)
        .fetch_one(&mut *conn)
        .await?;
    // Through negative numbers, so that no two items share one on the way.
    let shift = first.map_or(0, |first| first - after - 1);
    query("UPDATE fed_outbox SET link_seq = -link_seq WHERE link = $1")
        .bind(link)
        .execute(&mut *conn)
        .await?;
    query("UPDATE fed_outbox SET link_seq = -link_seq - $1 WHERE link = $2")
        .bind(shift)
        .bind(link)
        .execute(&mut *conn)
        .await?;
    let last: Option<i64> = query_scalar("SELECT MAX(link_seq) FROM fed_outbox WHERE link = $1")
        .bind(link)
        .fetch_one(&mut *conn)
        .await?;
    query("UPDATE fed_links SET out_last = $1, acked = $2 WHERE link = $3")
        .bind(last.unwrap_or(after))
        .bind(after)
        .bind(link)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
