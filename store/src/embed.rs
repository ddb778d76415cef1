//! The widget's storage: the origins an application may be framed by, its single-use tokens
//! and the embed sessions they become.

use super::audit::{AuditRecord, append};
use super::sessions::SessionRow;
use super::{Embed, StoreError};
use crate::db::{Tx, query, query_as, query_scalar};

/// A token to record (its hash only).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmbedTokenRow {
    pub token_hash: String,
    pub application: String,
    pub user_id: String,
    pub object_type: String,
    pub object_id: String,
    pub discussion_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

/// What taking a token found.
#[derive(Debug)]
pub enum TokenTaken {
    /// It was valid and is used now.
    Taken(EmbedTokenRow),
    /// It was used before.
    Used,
    /// It expired unused.
    Expired,
    /// No such token (or it expired long ago and was removed).
    Unknown,
}

/// What an embed session covers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmbedScopeRow {
    pub session_id: String,
    pub application: String,
    pub object_type: String,
    pub object_id: String,
    pub discussion_id: String,
    pub ends_at: i64,
}

impl Embed<'_> {
    /// Replaces the origins an application may be framed by (none: it may not embed), and,
    /// when they shrink to none, drops its unused tokens and ends its embed sessions (their
    /// ids are returned). `None` when there is no such application.
    pub async fn set_embed_origins(
        &self,
        app: &str,
        origins: &[String],
        audit: &AuditRecord,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let exists: Option<i64> =
            query_scalar("SELECT CAST(1 AS BIGINT) FROM applications WHERE name = $1")
                .bind(app)
                .fetch_optional(&mut tx)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        query("DELETE FROM embed_origins WHERE application = $1")
            .bind(app)
            .execute(&mut tx)
            .await?;
        for origin in origins {
            query(
                "INSERT INTO embed_origins (application, origin) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(app)
            .bind(origin)
            .execute(&mut tx)
            .await?;
        }
        let ended = if origins.is_empty() {
            end_app_embeds(&mut tx, app).await?
        } else {
            Vec::new()
        };
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    /// The origins an application may be framed by: none unless it is usable (active, its
    /// user unlocked) and an administrator allowed it to embed.
    pub async fn embed_origins(&self, app: &str) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT o.origin FROM embed_origins o JOIN applications a ON a.name = o.application \
             WHERE o.application = $1 AND a.status = 'active' AND NOT EXISTS \
             (SELECT 1 FROM users u WHERE u.id = a.user_id AND u.locked) ORDER BY o.origin",
        )
        .bind(app)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// The origins an administrator allowed, whatever the application's state (for listing).
    pub async fn allowed_embed_origins(&self, app: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            query_scalar("SELECT origin FROM embed_origins WHERE application = $1 ORDER BY origin")
                .bind(app)
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// Records a minted token and its audit record.
    pub async fn insert_embed_token(
        &self,
        token: &EmbedTokenRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        query(
            "INSERT INTO embed_tokens (token_hash, application, user_id, object_type, \
             object_id, discussion_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.token_hash)
        .bind(&token.application)
        .bind(&token.user_id)
        .bind(&token.object_type)
        .bind(&token.object_id)
        .bind(&token.discussion_id)
        .bind(token.created_at)
        .bind(token.expires_at)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from_insert)?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses a token at `now`, once: the first caller gets it, every later one `Used`.
    pub async fn take_embed_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<TokenTaken, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let row: Option<EmbedTokenRow> =
            query_as("SELECT * FROM embed_tokens WHERE token_hash = $1")
                .bind(token_hash)
                .fetch_optional(&mut tx)
                .await?;
        let Some(row) = row else {
            return Ok(TokenTaken::Unknown);
        };
        if row.used_at.is_some() {
            return Ok(TokenTaken::Used);
        }
        if row.expires_at <= now {
            return Ok(TokenTaken::Expired);
        }
        query("UPDATE embed_tokens SET used_at = $1 WHERE token_hash = $2")
            .bind(now)
            .bind(token_hash)
            .execute(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(TokenTaken::Taken(EmbedTokenRow {
            used_at: Some(now),
            ..row
        }))
    }

    /// Creates an embed session (kind `embed`) with its scope, if its user is unlocked and the
    /// application may still embed; returns whether it was created.
    pub async fn insert_embed_session(
        &self,
        session: &SessionRow,
        scope: &EmbedScopeRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let inserted = query(
            "INSERT INTO sessions (id, user_id, token_hash, device_id, device_name, created_at, \
             last_seen_at, expires_at, kind) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, 'embed' FROM users \
             WHERE id = $9 AND locked = FALSE \
             AND EXISTS (SELECT 1 FROM embed_origins WHERE application = $10)",
        )
        .bind(&session.id)
        .bind(&session.user_id)
        .bind(&session.token_hash)
        .bind(&session.device_id)
        .bind(&session.device_name)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .bind(&session.user_id)
        .bind(&scope.application)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from_insert)?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        query(
            "INSERT INTO embed_sessions (session_id, application, object_type, object_id, \
             discussion_id, ends_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&scope.session_id)
        .bind(&scope.application)
        .bind(&scope.object_type)
        .bind(&scope.object_id)
        .bind(&scope.discussion_id)
        .bind(scope.ends_at)
        .execute(&mut tx)
        .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The embed session holding this token hash, with its scope.
    pub async fn embed_session_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(SessionRow, EmbedScopeRow)>, StoreError> {
        let Some(session): Option<SessionRow> =
            query_as("SELECT * FROM sessions WHERE token_hash = $1 AND kind = 'embed'")
                .bind(token_hash)
                .fetch_optional(&self.db.read)
                .await?
        else {
            return Ok(None);
        };
        let scope: Option<EmbedScopeRow> =
            query_as("SELECT * FROM embed_sessions WHERE session_id = $1")
                .bind(&session.id)
                .fetch_optional(&self.db.read)
                .await?;
        Ok(scope.map(|scope| (session, scope)))
    }

    /// Removes tokens that expired before `before`.
    pub async fn delete_expired_embed_tokens(&self, before: i64) -> Result<u64, StoreError> {
        Ok(query("DELETE FROM embed_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.db.write)
            .await?
            .rows_affected())
    }

    /// Ends every embed session of an application and drops its tokens (it was revoked);
    /// returns the ended session ids.
    pub async fn end_app_embed_sessions(&self, app: &str) -> Result<Vec<String>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let ended = end_app_embeds(&mut tx, app).await?;
        tx.commit().await?;
        Ok(ended)
    }
}

async fn end_app_embeds(tx: &mut Tx, app: &str) -> Result<Vec<String>, StoreError> {
    query("DELETE FROM embed_tokens WHERE application = $1")
        .bind(app)
        .execute(&mut *tx)
        .await?;
    Ok(query_scalar(
        "DELETE FROM sessions WHERE kind = 'embed' AND id IN \
         (SELECT session_id FROM embed_sessions WHERE application = $1) RETURNING id",
    )
    .bind(app)
    .fetch_all(&mut *tx)
    .await?)
}
