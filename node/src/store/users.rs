use super::audit::{AuditRecord, append};
use super::{Store, StoreError};

/// A user as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct UserRow {
    pub(crate) id: String,
    pub(crate) login: String,
    pub(crate) display_name: String,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) is_admin: bool,
    pub(crate) locked: bool,
    pub(crate) created_at: i64,
    pub(crate) department: String,
}

/// A user to create.
#[derive(Debug, Clone)]
pub(crate) struct NewUser {
    pub(crate) id: String,
    pub(crate) login: String,
    pub(crate) display_name: String,
    pub(crate) email: String,
    pub(crate) password_hash: String,
    pub(crate) is_admin: bool,
    pub(crate) department: String,
    pub(crate) now: i64,
}

impl Store {
    /// Creates a user; `Conflict` if the login is taken. `first_admin_only` makes the insert
    /// succeed only while the node has no users at all (the setup-token path).
    pub(crate) async fn insert_user(
        &self,
        user: &NewUser,
        first_admin_only: bool,
        audit: &AuditRecord,
    ) -> Result<UserRow, StoreError> {
        let mut tx = self.write.begin().await?;
        if first_admin_only {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut *tx)
                .await?;
            if count > 0 {
                return Err(StoreError::Conflict);
            }
        }
        sqlx::query(
            "INSERT INTO users (id, login, display_name, email, password_hash, is_admin, locked, \
             created_at, updated_at, department) VALUES (?, ?, ?, ?, ?, ?, FALSE, ?, ?, ?)",
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
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_insert)?;
        append(&mut tx, audit).await?;
        let row = sqlx::query_as("SELECT * FROM users WHERE id = ?")
            .bind(&user.id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    pub(crate) async fn user_by_login(&self, login: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE login = ?")
            .bind(login)
            .fetch_optional(&self.read)
            .await?)
    }

    pub(crate) async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?)
    }

    pub(crate) async fn users(&self) -> Result<Vec<UserRow>, StoreError> {
        Ok(sqlx::query_as("SELECT * FROM users ORDER BY login")
            .fetch_all(&self.read)
            .await?)
    }

    pub(crate) async fn user_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await?)
    }

    /// Locks or unlocks a user. Locking also ends all their sessions (returned).
    pub(crate) async fn set_locked(
        &self,
        login: &str,
        locked: bool,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<(UserRow, Vec<String>)>, StoreError> {
        let mut tx = self.write.begin().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET locked = ?, updated_at = ? WHERE login = ? RETURNING *",
        )
        .bind(locked)
        .bind(now)
        .bind(login)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let ended = if locked {
            sqlx::query_scalar("DELETE FROM sessions WHERE user_id = ? RETURNING id")
                .bind(&row.id)
                .fetch_all(&mut *tx)
                .await?
        } else {
            Vec::new()
        };
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some((row, ended)))
    }

    /// Replaces a user's password hash and ends their sessions, except `keep_session`.
    pub(crate) async fn set_password(
        &self,
        login: &str,
        password_hash: &str,
        keep_session: Option<&str>,
        now: i64,
        audit: &AuditRecord,
    ) -> Result<Option<(UserRow, Vec<String>)>, StoreError> {
        let mut tx = self.write.begin().await?;
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET password_hash = ?, updated_at = ? WHERE login = ? RETURNING *",
        )
        .bind(password_hash)
        .bind(now)
        .bind(login)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let ended =
            sqlx::query_scalar("DELETE FROM sessions WHERE user_id = ? AND id != ? RETURNING id")
                .bind(&row.id)
                .bind(keep_session.unwrap_or(""))
                .fetch_all(&mut *tx)
                .await?;
        append(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(Some((row, ended)))
    }

    /// Replaces a password hash with a stronger hash of the same password (parameter upgrade
    /// on login), unless the password changed meanwhile.
    pub(crate) async fn rehash_password(
        &self,
        id: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?")
            .bind(new_hash)
            .bind(id)
            .bind(old_hash)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}

impl Store {
    /// A user's client preferences (a JSON object), if they stored any.
    pub(crate) async fn preferences(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM user_preferences WHERE user_id = ?")
                .bind(user_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// Replaces a user's client preferences.
    pub(crate) async fn set_preferences(
        &self,
        user_id: &str,
        value: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO user_preferences (user_id, value, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (user_id) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(value)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }
}
