//! A fresh PostgreSQL database for one test, dropped with it.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Connection};

use crate::StoreError;

/// The variable that names the PostgreSQL server tests run on
/// (`postgres://postgres@127.0.0.1:5432`); unset, they run on SQLite.
pub const TEST_POSTGRES_ENV: &str = "VECHE_TEST_POSTGRES";

/// A database `veche_t_<uuid>` created on a server for one test; dropping it drops the
/// database (closing whatever is still connected to it).
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// A new database on the server [`TEST_POSTGRES_ENV`] names, or `None` when it is unset.
    pub async fn from_env() -> Result<Option<Self>, StoreError> {
        match std::env::var(TEST_POSTGRES_ENV) {
            Ok(server) if !server.is_empty() => Ok(Some(Self::create(&server).await?)),
            _ => Ok(None),
        }
    }

    /// Creates a new database on the server at `server` (any database in the URL is only
    /// where the `CREATE DATABASE` runs).
    pub async fn create(server: &str) -> Result<Self, StoreError> {
        let name = format!("veche_t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&PgConnectOptions::from_str(server)?).await?;
        // The name is ours: a fixed prefix and hex digits.
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let url = with_database(server, &name);
        Ok(Self {
            server: server.to_owned(),
            name,
            url,
        })
    }

    /// The database's URL, for `[storage] database`.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = std::mem::take(&mut self.server);
        let name = std::mem::take(&mut self.name);
        // On a thread of its own: dropping may happen inside a runtime, which cannot block.
        let done = std::thread::spawn(move || {
            let dropped = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|runtime| {
                    runtime
                        .block_on(drop_database(&server, &name))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                eprintln!("could not drop the test database {name}: {e}");
            }
        });
        let _ = done.join();
    }
}

async fn drop_database(server: &str, name: &str) -> Result<(), StoreError> {
    let mut admin = PgConnection::connect_with(&PgConnectOptions::from_str(server)?).await?;
    // The name is ours: a fixed prefix and hex digits.
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

/// `server` with its database (path) replaced by `name`, keeping its parameters.
fn with_database(server: &str, name: &str) -> String {
    let (scheme, rest) = server.split_once("://").unwrap_or(("postgres", server));
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    match query {
        Some(query) => format!("{scheme}://{authority}/{name}?{query}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_url_names_the_new_database() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://p@h/postgres?sslmode=disable", "t1"),
            "postgres://p@h/t1?sslmode=disable"
        );
    }
}
