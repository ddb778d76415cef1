use super::audit::{AuditRecord, append};
use super::{StoreError, Users};
use crate::db::{query, query_as, query_scalar};

/// A user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub login: String,
    pub display_name: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub locked: bool,
    pub created_at: i64,
    pub department: String,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub login: String,
    pub display_name: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub department: String,
    pub now: i64,
}

impl Users<'_> {
    /// Creates a user; `Conflict` if the login is taken. `first_admin_only` makes the insert
    /// succeed only while the node has no users at all (the setup-token path).
    pub async fn insert_user(
        &self,
        user: &NewUser,
        first_admin_only: bool,
        audit: &AuditRecord,
    ) -> Result<UserRow, StoreError> {
        let mut tx = self.db.write.begin().await?;
        if first_admin_only {
            let count: i64 = query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut tx)
                .await?;
            if count > 0 {
                return Err(StoreError::Conflict);
            }
        }
        query(
            "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, locked, \
             created_at, updated_at, department) VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7, $8, $9)",
        )
        .bind(&user.id)
        .bind(&user.login)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.is_admin)
        .bind(user.now)
        .bind(user.now)
        .bind(&user.department)
        .execute(&mut tx)
        .await
        .map_err(StoreError::from_insert)?;
        append(&mut tx, audit).await?;
        let row = query_as("SELECT * FROM users WHERE id = $1")
            .bind(&user.id)
            .fetch_one(&mut tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub async fn user_by_login(&self, login: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(query_as("SELECT * FROM users WHERE login = $1")
            .bind(login)
            .fetch_optional(&self.db.read)
            .await?)
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.db.read)
            .await?)
    }

    pub async fn list(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(query_as("SELECT * FROM users ORDER BY login")
            .fetch_all(&self.db.read)
            .await?)
    }

    pub async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.db.read)
            .await?)
    }

    /// Locks or unlocks a user. Locking also ends all their sessions (returned).
    pub async fn set_locked(
        &self,
        login: &str,
        locked: bool,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<(UserRow, Vec<String>)>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let row: Option<UserRow> =
            query_as("UPDATE users SET locked = $1, updated_at = $2 WHERE login = $3 RETURNING *")
                .bind(locked)
                .bind(now)
                .bind(login)
                .fetch_optional(&mut tx)
                .await?;
        let Some(row) = row else { return Ok(None) };
        let ended = if locked {
            query_scalar("DELETE FROM sessions WHERE user_id = $1 RETURNING id")
                .bind(&row.id)
                .fetch_all(&mut tx)
                .await?
        } else {
            Vec::new()
        };
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some((row, ended)))
    }

    /// Replaces a user's password hash and ends their sessions, except `keep_session`.
    pub async fn set_password(
        &self,
        login: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<(UserRow, Vec<String>)>, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let row: Option<UserRow> = query_as(
            "UPDATE users SET password_hash = $1, updated_at = $2 WHERE login = $3 RETURNING *",
        )
        .bind(password_hash)
        .bind(now)
        .bind(login)
        .fetch_optional(&mut tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let ended =
            query_scalar("DELETE FROM sessions WHERE user_id = $1 AND id != $2 RETURNING id")
                .bind(&row.id)
                .bind(keep_session.unwrap_or(""))
                .fetch_all(&mut tx)
                .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some((row, ended)))
    }

    /// Replaces a password hash with a stronger hash of the same password (parameter upgrade
    /// on login), unless the password changed meanwhile.
    pub async fn rehash_password(
        &self,
        id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        query("UPDATE users SET password_hash = $1 WHERE id = $2 AND password_hash = $3")
            .bind(new_hash)
            .bind(id)
            .bind(old_hash)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }
}

impl Users<'_> {
    /// A user's client preferences (a JSON object), if they stored any.
    pub async fn preferences(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            query_scalar("SELECT value FROM user_preferences WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    /// Replaces a user's client preferences.
    pub async fn set_preferences(
        &self,
        user_id: &str,
        value: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        query(
            "INSERT INTO user_preferences (user_id, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(value)
        .bind(now)
        .execute(&self.db.write)
        .await?;
        Ok(())
    }
}
