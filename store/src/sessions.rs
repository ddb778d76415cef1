use super::audit::{AuditRecord, append};
use super::{Sessions, StoreError};
use crate::db::{query, query_as, query_scalar};

/// A session as stored. The token itself is never stored, only its SHA-256.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: String,
    pub user_id: String,
    pub token_hash: String,
    pub device_id: String,
    pub device_name: String,
    pub created_at: i64,
    pub last_seen_at: i64,
    pub expires_at: i64,
    /// `user` (a login) or `embed` (a widget's, scoped by its row in `embed_sessions`).
    pub kind: String,
}

impl Sessions<'_> {
    /// Creates a session if its user is unlocked and still has `password_hash`; returns
    /// whether it was created.
    pub async fn insert_session(
        &self,
        session: &SessionRow,
        password_hash: &str,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let inserted = query(
            "INSERT INTO sessions (id, user_id, token_hash, device_id, device_name, created_at, \
             last_seen_at, expires_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM users \
             WHERE id = $9 AND locked = FALSE AND password_hash = $10",
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
        .bind(password_hash)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from_insert)?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn session_exists(&self, id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            query_scalar("SELECT CAST(1 AS BIGINT) FROM sessions WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.db.read)
                .await?;
        Ok(found.is_some())
    }

    pub async fn session_by_token_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<SessionRow>, StoreError> {
        Ok(query_as("SELECT * FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.db.read)
            .await?)
    }

    /// Records a use of the session and extends its expiry.
    pub async fn touch_session(
        &self,
        id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        query("UPDATE sessions SET last_seen_at = $1, expires_at = $2 WHERE id = $3")
            .bind(now)
            .bind(expires_at)
            .bind(id)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRow>, StoreError> {
        Ok(
            query_as("SELECT * FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id")
                .bind(user_id)
                .fetch_all(&self.db.read)
                .await?,
        )
    }

    /// Deletes one session of a user (or all when `session_id` is `None`); returns the ids.
    pub async fn delete_sessions(
        &self,
        user_id: &str,
        session_id: Option<&str>,
        audit: &AuditRecord,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let ids: Vec<String> = match session_id {
            Some(sid) => {
                query_scalar("DELETE FROM sessions WHERE user_id = $1 AND id = $2 RETURNING id")
                    .bind(user_id)
                    .bind(sid)
                    .fetch_all(&mut tx)
                    .await?
            }
            None => {
                query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING id")
                    .bind(user_id)
                    .fetch_all(&mut tx)
                    .await?
            }
        };
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Removes sessions that expired before `now`.
    pub async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
        Ok(query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now)
            .execute(&self.db.write)
            .await?
            .rows_affected())
    }
}

impl Sessions<'_> {
    /// Benchmarks only: users (`login@node`, login) that cannot log in with a password, each
    /// with one session whose token hash is given, in one transaction.
    #[cfg(any(test, feature = "test-utils"))]
    pub async fn bench_sessions(
        &self,
        users: &[(String, String, String)],
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        for (id, login, token_hash) in users {
            query(
                "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, \
                 locked, created_at, updated_at) VALUES ($1, $2, $3, '', '!', FALSE, FALSE, $4, $5)",
            )
            .bind(id)
            .bind(login)
            .bind(login)
            .bind(now)
            .bind(now)
            .execute(&mut tx)
            .await?;
            query(
                "INSERT INTO sessions (id, user_id, token_hash, device_id, device_name, \
                 created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, 'bench', 'bench', $4, $5, $6)",
            )
            .bind(uuid::Uuid::now_v7().simple().to_string())
            .bind(id)
            .bind(token_hash)
            .bind(now)
            .bind(now)
            .bind(expires_at)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
