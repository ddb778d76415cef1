//! The audit log: append-only, each record chained to the previous one by SHA-256, written in
//! the same transaction as the change it records.

use crate::db::{Tx, query, query_as};
use sha2::{Digest, Sha256};

use super::{AuditLog, StoreError};

/// One audited action. Never holds passwords, tokens or message bodies.
#[derive(Debug, Clone)]
pub struct AuditRecord {
    pub at: i64,
    /// `cli`, `admin-socket`, `user:login@node`, `setup-token`.
    pub actor: String,
    /// `user.add`, `user.lock`, `session.revoke`, `login.fail`, ...
    pub action: &'static str,
    pub target: String,
    pub detail: String,
}

/// A stored audit record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn chain_hash(prev: &str, seq: i64, r: (&i64, &str, &str, &str, &str)) -> String {
    let mut h = Sha256::new();
    for part in [prev, &seq.to_string(), &r.0.to_string(), r.1, r.2, r.3, r.4] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

pub(super) async fn append(tx: &mut Tx, record: &AuditRecord) -> Result<(), StoreError> {
    let last: Option<(i64, String)> =
        query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
    let (prev_seq, prev_hash) = last.unwrap_or((0, GENESIS.to_owned()));
    let seq = prev_seq + 1;
    let hash = chain_hash(
        &prev_hash,
        seq,
        (
            &record.at,
            &record.actor,
            record.action,
            &record.target,
            &record.detail,
        ),
    );
    query(
        "INSERT INTO audit_log (seq, at, actor, action, target, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(seq)
    .bind(record.at)
    .bind(&record.actor)
    .bind(record.action)
    .bind(&record.target)
    .bind(&record.detail)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl AuditLog<'_> {
    /// Appends one record on its own (for events that change nothing else, like failed logins).
    pub async fn append(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        append(&mut tx, record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest `limit` records, newest first.
    pub async fn audit_tail(&self, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(
            query_as("SELECT * FROM audit_log ORDER BY seq DESC LIMIT $1")
                .bind(limit)
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// Checks the whole chain, streaming it; returns the sequence number of the first broken
    /// record.
    pub async fn verify_audit_chain(&self) -> Result<Option<i64>, StoreError> {
        use futures_util::TryStreamExt;

        let mut rows =
            query_as::<AuditRow>("SELECT * FROM audit_log ORDER BY seq").fetch(&self.db.read);
        let mut prev = GENESIS.to_owned();
        let mut i = 0i64;
        while let Some(row) = rows.try_next().await? {
            let expected = chain_hash(
                &prev,
                row.seq,
                (&row.at, &row.actor, &row.action, &row.target, &row.detail),
            );
            i += 1;
            if row.seq != i || row.prev_hash != prev || row.hash != expected {
                return Ok(Some(row.seq));
            }
            prev = row.hash;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(action: &'static str) -> AuditRecord {
        AuditRecord {
            at: 1,
            actor: "cli".into(),
            action,
            target: "ivanov@hq".into(),
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn the_chain_detects_an_altered_record() {
        for t in crate::testing::each_backend().await {
            let store = &t.store;
            for action in ["user.add", "user.lock", "user.unlock"] {
                store.audit_log().append(&record(action)).await.unwrap();
            }
            assert_eq!(store.audit_log().verify_audit_chain().await.unwrap(), None);
            query("UPDATE audit_log SET target = 'someone-else' WHERE seq = 2")
                .execute(&store.write)
                .await
                .unwrap();
            assert_eq!(
                store.audit_log().verify_audit_chain().await.unwrap(),
                Some(2),
                "{:?}",
                store.backend()
            );
            store.close().await;
        }
    }
}
