//! Federation: link offers, links, and each link's outbox and inbox.

use crate::db::{Tx, query, query_as, query_scalar};

use super::{AuditRecord, Links, ROWS_PER_STATEMENT, StoreError};

/// A link with another node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkRow {
    pub link: String,
    pub grant_text: String,
    pub peer_node: String,
    pub state: String,
    pub scope: String,
    pub ended_reason: Option<String>,
    pub queued: i64,
    /// A renewal this node accepted, in force once the peer greets with it.
    pub renewal: Option<String>,
    /// A link this node accepted whose offerer has not yet shown that it confirmed it: when
    /// (ms) it ends unconfirmed. `None` once confirmed, and for links this node offered.
    pub confirm_by: Option<i64>,
}

/// What a renewal of a link does to it.
#[derive(Debug, Clone, Copy)]
pub enum Renewal<'a> {
    /// In force now: the renewal's grant and scope replace the link's (narrowings of the old
    /// grant are over, and a renewal held here too).
    InForce {
        grant_text: &'a str,
        scope: &'a str,
        /// The new scope carries object discussions.
        objects: bool,
    },
    /// Accepted here, held until the other node greets with it.
    Held(&'a str),
}

/// An offer this node made that is not confirmed yet.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OfferRow {
    pub link: String,
    pub offer: String,
    pub created_at: i64,
}

/// A new link.
#[derive(Debug, Clone)]
pub struct NewLink<'a> {
    pub link: &'a str,
    pub grant_text: &'a str,
    pub peer_node: &'a str,
    pub peer_key: &'a [u8],
    pub scope: &'a str,
    pub at: i64,
    /// Accepted here: pending until then (see [`LinkRow::confirm_by`]).
    pub confirm_by: Option<i64>,
}

/// Every column of `fed_links l` in `LinkRow`'s order.
macro_rules! link_columns {
    () => {
        "l.link, l.grant_text, l.peer_node, l.state, l.scope, l.ended_reason, \
         (SELECT COUNT(*) FROM fed_outbox o WHERE o.link = l.link) AS queued, l.renewal, \
         l.confirm_by"
    };
}

impl Links<'_> {
    pub async fn fed_add_offer(
        &self,
        link: &str,
        offer: &str,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        // A renewal offered again replaces the open one.
        query(
            "INSERT INTO fed_offers (link, offer, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (link) DO UPDATE SET offer = excluded.offer, \
             created_at = excluded.created_at",
        )
        .bind(link)
        .bind(offer)
        .bind(at)
        .execute(&mut tx)
        .await?;
        super::audit::append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn fed_offers(&self) -> Result<Vec<OfferRow>, StoreError> {
        Ok(
            query_as("SELECT link, offer, created_at FROM fed_offers ORDER BY created_at DESC")
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    pub async fn fed_offer(&self, link: &str) -> Result<Option<OfferRow>, StoreError> {
        Ok(
            query_as("SELECT link, offer, created_at FROM fed_offers WHERE link = $1")
                .bind(link)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    /// Stores an active link (and forgets the offer it answers); `false` if the link id is
    /// known already or the peer has an active link.
    pub async fn fed_add_link(
        &self,
        new: &NewLink<'_>,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let taken: Option<(String,)> = query_as(
            "SELECT link FROM fed_links WHERE link = $1 \
             OR ((peer_node = $2 OR peer_key = $3) AND state = 'active')",
        )
        .bind(new.link)
        .bind(new.peer_node)
        .bind(new.peer_key)
        .fetch_optional(&mut tx)
        .await?;
        if taken.is_some() {
            return Ok(false);
        }
        query(
            "INSERT INTO fed_links (link, grant_text, peer_node, peer_key, state, scope, created_at, \
             confirm_by) VALUES ($1, $2, $3, $4, 'active', $5, $6, $7)",
        )
        .bind(new.link)
        .bind(new.grant_text)
        .bind(new.peer_node)
        .bind(new.peer_key)
        .bind(new.scope)
        .bind(new.at)
        .bind(new.confirm_by)
        .execute(&mut tx)
        .await?;
        forget_offers(&mut tx, new.link).await?;
        super::audit::append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records a renewal of an active link (and forgets this node's offer for it), unless the
    /// link is not active any more or holds a grant other than `current` now (`false`).
    pub async fn fed_renewal(
        &self,
        link: &str,
        current: &str,
        renewal: Renewal<'_>,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        // NULL keeps a column as it is.
        let (grant_text, scope, held, objects) = match renewal {
            Renewal::InForce {
                grant_text,
                scope,
                objects,
            } => (Some(grant_text), Some(scope), None, objects),
            Renewal::Held(text) => (None, None, Some(text), true),
        };
        let mut tx = self.db.write.begin().await?;
        let done = query(
            "UPDATE fed_links SET grant_text = COALESCE($1, grant_text), \
             scope = COALESCE($2, scope), renewal = $3 \
             WHERE link = $4 AND state = 'active' AND grant_text = $5",
        )
        .bind(grant_text)
        .bind(scope)
        .bind(held)
        .bind(link)
        .bind(current)
        .execute(&mut tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if !objects {
            drop_object_sharing(&mut tx, link).await?;
        }
        forget_offers(&mut tx, link).await?;
        super::audit::append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn fed_links(&self) -> Result<Vec<LinkRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            link_columns!(),
            " FROM fed_links l ORDER BY l.created_at DESC"
        ))
        .fetch_all(&self.db.read)
        .await?)
    }

    pub async fn fed_link(&self, link: &str) -> Result<Option<LinkRow>, StoreError> {
        Ok(query_as(concat!(
            "SELECT ",
            link_columns!(),
            " FROM fed_links l WHERE l.link = $1"
        ))
        .bind(link)
        .fetch_optional(&self.db.read)
        .await?)
    }

    /// The offerer of a link this node accepted has shown that it confirmed it: no longer
    /// pending.
    pub async fn fed_link_confirmed(&self, link: &str) -> Result<(), StoreError> {
        query("UPDATE fed_links SET confirm_by = NULL WHERE link = $1")
            .bind(link)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Ends an active link and drops what was waiting for the peer; `false` if it was not
    /// active.
    pub async fn fed_end_link(
        &self,
        link: &str,
        reason: &str,
        at: i64,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let done = query(
            "UPDATE fed_links SET state = 'ended', ended_reason = $1, ended_at = $2 \
             WHERE link = $3 AND state = 'active'",
        )
        .bind(reason)
        .bind(at)
        .bind(link)
        .execute(&mut tx)
        .await?
        .rows_affected()
            > 0;
        if done {
            query("DELETE FROM fed_outbox WHERE link = $1")
                .bind(link)
                .execute(&mut tx)
                .await?;
            // A renewal offered for it is over too.
            forget_offers(&mut tx, link).await?;
            // Who the peer said may read its objects, and who this node told it may read
            // its own: a new link starts from nothing.
            drop_object_readers(&mut tx, link).await?;
            super::audit::append(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Replaces a link's scope (JSON) with `change(current)`, in one transaction.
    pub async fn fed_update_scope(
        &self,
        link: &str,
        change: impl FnOnce(&str) -> String,
        without_objects: bool,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        let row: Option<(String,)> = query_as("SELECT scope FROM fed_links WHERE link = $1")
            .bind(link)
            .fetch_optional(&mut tx)
            .await?;
        let Some((current,)) = row else {
            return Ok(());
        };
        if without_objects {
            drop_object_sharing(&mut tx, link).await?;
        }
        // A renewal held here, or offered from here, would undo the narrowing: it must be
        // offered and accepted again.
        query("UPDATE fed_links SET scope = $1, renewal = NULL WHERE link = $2")
            .bind(change(&current))
            .bind(link)
            .execute(&mut tx)
            .await?;
        forget_offers(&mut tx, link).await?;
        super::audit::append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Outbox items of `link` after `after`, in order.
    pub async fn fed_outbox(
        &self,
        link: &str,
        after: i64,
        max: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        Ok(query_as(
            "SELECT link_seq, item FROM fed_outbox WHERE link = $1 AND link_seq > $2 \
             ORDER BY link_seq LIMIT $3",
        )
        .bind(link)
        .bind(after)
        .bind(max)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The peer has stored everything up to `upto`: what it holds leaves the outbox. Unless
    /// `restored` (the caller's rule, given the last number this node gave out and its own item
    /// at `upto`) says this node was restored from a backup: then what waits is numbered again
    /// after `upto`, and `true` is returned.
    pub async fn fed_acked(
        &self,
        link: &str,
        upto: i64,
        restored: impl FnOnce(Option<i64>, Option<&[u8]>) -> bool,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let numbered: Option<i64> = query_scalar("SELECT out_last FROM fed_links WHERE link = $1")
            .bind(link)
            .fetch_optional(&mut tx)
            .await?;
        let mine: Option<Vec<u8>> =
            query_scalar("SELECT item FROM fed_outbox WHERE link = $1 AND link_seq = $2")
                .bind(link)
                .bind(upto)
                .fetch_optional(&mut tx)
                .await?;
        if restored(numbered, mine.as_deref()) {
            super::fedlog::renumber_outbox(&mut tx, link, upto).await?;
            tx.commit().await?;
            return Ok(true);
        }
        query("DELETE FROM fed_outbox WHERE link = $1 AND link_seq <= $2")
            .bind(link)
            .bind(upto)
            .execute(&mut tx)
            .await?;
        query("UPDATE fed_links SET acked = CASE WHEN $1 > acked THEN $1 ELSE acked END WHERE link = $2")
            .bind(upto)
            .bind(link)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(false)
    }

    /// The last `link_seq` stored from the peer.
    pub async fn fed_received(&self, link: &str) -> Result<(i64, Option<String>), StoreError> {
        let row: Option<(i64, Option<String>)> =
            query_as("SELECT received, received_digest FROM fed_links WHERE link = $1")
                .bind(link)
                .fetch_optional(&self.db.read)
                .await?;
        Ok(row.unwrap_or((0, None)))
    }

    /// Stores a received batch (sorted by `link_seq`): items at or below the watermark are
    /// skipped, the rest are kept only while contiguous with it, and the last one's `digest` is
    /// remembered. The new watermark.
    pub async fn fed_receive(
        &self,
        link: &str,
        items: &[(i64, Vec<u8>, Option<String>)],
        at: i64,
        digest: impl Fn(&[u8]) -> Option<String>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let row: Option<(i64, String)> =
            query_as("SELECT received, state FROM fed_links WHERE link = $1")
                .bind(link)
                .fetch_optional(&mut tx)
                .await?;
        let Some((mut mark, state)) = row else {
            return Err(StoreError::Aborted(format!("no link {link}")));
        };
        if state != "active" {
            return Err(StoreError::Aborted(format!("the link {link} has ended")));
        }
        let mut fresh = Vec::with_capacity(items.len());
        for (seq, item, refused) in items {
            if *seq <= mark {
                continue;
            }
            if *seq != mark + 1 {
                break;
            }
            fresh.push((seq, item, refused));
            mark = *seq;
        }
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO fed_inbox (link, link_seq, item, refused, received_at) {}",
                super::values_rows(chunk.len(), 5, "")
            );
            // Built from constants and a count, no input.
            let mut insert = query(sql);
            for (seq, item, refused) in chunk {
                insert = insert
                    .bind(link)
                    .bind(**seq)
                    .bind(*item)
                    .bind(*refused)
                    .bind(at);
            }
            insert.execute(&mut tx).await?;
        }
        // What tells the last item from others, for a sender restored from a backup.
        let digest = fresh.last().and_then(|(_, item, _)| digest(item));
        query(
            "UPDATE fed_links SET received = $1, \
             received_digest = COALESCE($2, received_digest) WHERE link = $3",
        )
        .bind(mark)
        .bind(digest)
        .bind(link)
        .execute(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(mark)
    }
}

/// Object discussions stop travelling over `link`, both ways: this node's are no longer sent,
/// and the peer's no longer read here.
async fn drop_object_sharing(tx: &mut Tx, link: &str) -> Result<(), StoreError> {
    query(
        "DELETE FROM fed_shares WHERE link = $1 \
         AND discussion_id IN (SELECT id FROM discussions WHERE kind = 'object')",
    )
    .bind(link)
    .execute(&mut *tx)
    .await?;
    drop_object_readers(tx, link).await
}

/// Forgets who may read object discussions across `link`: the users of its peer this node told
/// they may read its own, and what the peer said of this node's users in its.
async fn drop_object_readers(tx: &mut Tx, link: &str) -> Result<(), StoreError> {
    query(
        "DELETE FROM fed_object_readers WHERE EXISTS (SELECT 1 FROM fed_links l \
         WHERE l.link = $1 AND (substr(user_id, length(user_id) - length(l.peer_node)) = '@' || l.peer_node \
         OR substr(discussion_id, length(discussion_id) - length(l.peer_node)) = '@' || l.peer_node))",
    )
    .bind(link)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Drops the offers this node made for `link` (a renewal offered for it).
async fn forget_offers(tx: &mut Tx, link: &str) -> Result<(), StoreError> {
    query("DELETE FROM fed_offers WHERE link = $1")
        .bind(link)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
