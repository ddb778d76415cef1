//! Presence choices kept across restarts, and the lookups presence needs: contacts, do-not-disturb
//! users, display names.

use super::{Presence, StoreError};
use crate::db::{query, query_as, query_scalar};

impl Presence<'_> {
    /// What `user` chose (choice, status text), if they ever chose.
    pub async fn presence_choice(
        &self,
        user: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        Ok(
            query_as("SELECT choice, status_text FROM presence_choices WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&self.db.read)
                .await?,
        )
    }

    /// Saves presence choices (user, choice, status text) in one transaction.
    pub async fn save_presence_choices(
        &self,
        choices: &[(String, String, String)],
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.db.write.begin().await?;
        for (user, choice, text) in choices {
            query(
                "INSERT INTO presence_choices (user_id, choice, status_text, updated_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO UPDATE SET \
                 choice = excluded.choice, status_text = excluded.status_text, \
                 updated_at = excluded.updated_at",
            )
            .bind(user)
            .bind(choice)
            .bind(text)
            .bind(now)
            .execute(&mut tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The people `user` shares a dialog or group with.
    pub async fn contacts(&self, user: &str) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT DISTINCT other.user_id FROM members mine \
             JOIN discussions d ON d.id = mine.discussion_id AND d.kind IN ('dialog', 'group') \
             JOIN members other ON other.discussion_id = mine.discussion_id \
             WHERE mine.user_id = $1 AND other.user_id <> mine.user_id",
        )
        .bind(user)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Those of these users (a JSON array of ids) who chose do-not-disturb.
    pub async fn dnd_users(&self, users_json: &str) -> Result<Vec<String>, StoreError> {
        Ok(query_scalar(
            "SELECT user_id FROM presence_choices WHERE choice = 'dnd' \
             AND user_id IN (SELECT value FROM json_each($1))",
        )
        .bind(users_json)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Display names of these users (a JSON array of ids).
    pub async fn display_names(
        &self,
        users_json: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(query_as(
            "SELECT id, display_name FROM users WHERE id IN (SELECT value FROM json_each($1))",
        )
        .bind(users_json)
        .fetch_all(&self.db.read)
        .await?)
    }

    /// Which of these users (a JSON array of ids) exist.
    pub async fn existing_users(&self, users_json: &str) -> Result<Vec<String>, StoreError> {
        Ok(
            query_scalar("SELECT id FROM users WHERE id IN (SELECT value FROM json_each($1))")
                .bind(users_json)
                .fetch_all(&self.db.read)
                .await?,
        )
    }
}
