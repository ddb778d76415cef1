//! `migrations/sqlite/` and `migrations/postgres/` describe one schema: the same migrations
//! (numbers and names), and after them the same tables with the same columns, each of the
//! same kind (text, 64-bit integer, boolean, bytes) and nullability. Applied for real: to a
//! temporary SQLite file, and to a fresh database on the local PostgreSQL
//! (`VECHE_TEST_DATABASE`, by default `postgres://postgres@127.0.0.1:5432/postgres`), created
//! and dropped by the test.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, Connection};

/// Tables whose implicit SQLite `rowid` the statements read (`m.rowid` in `search.rs`):
/// PostgreSQL has no such thing, so there it is a real column of that name.
const ROWID_TABLES: &[&str] = &["messages"];

/// What a column holds, as both backends' drivers decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    kind: String,
    not_null: bool,
}

/// Table → column → what it holds.
type Schema = BTreeMap<String, BTreeMap<String, Column>>;

/// The kind of an SQLite declared type, named after the one PostgreSQL type that matches it.
fn sqlite_kind(declared: &str) -> String {
    match declared.to_ascii_uppercase().as_str() {
        "TEXT" => "text".into(),
        // SQLite's integers are 64-bit; PostgreSQL's `integer` is not, and an i64 does not
        // decode from it.
        "INTEGER" | "BIGINT" => "bigint".into(),
        "BOOLEAN" => "boolean".into(),
        "BLOB" => "bytea".into(),
        other => format!("sqlite {other}"),
    }
}

async fn sqlite_schema() -> anyhow::Result<Schema> {
    let dir = tempfile::tempdir()?;
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("schema.db"))
        .create_if_missing(true)
        .foreign_keys(true);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    sqlx::migrate!("./migrations/sqlite").run(&mut conn).await?;
    let rows: Vec<(String, String, String, bool, i64)> = sqlx::query_as(
        "SELECT t.name, c.name, c.type, c.\"notnull\", c.pk \
         FROM sqlite_schema t JOIN pragma_table_info(t.name) c \
         WHERE t.type = 'table' AND t.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
         AND t.name <> '_sqlx_migrations'",
    )
    .fetch_all(&mut conn)
    .await?;
    conn.close().await?;
    let mut schema = Schema::new();
    for (table, column, declared, not_null, pk) in rows {
        // A primary key is never NULL in what the node writes, and PostgreSQL enforces it.
        let not_null = not_null || pk > 0;
        schema.entry(table).or_default().insert(
            column,
            Column {
                kind: sqlite_kind(&declared),
                not_null,
            },
        );
    }
    for table in ROWID_TABLES {
        let Some(columns) = schema.get_mut(*table) else {
            bail!("ROWID_TABLES names {table}, which the SQLite migrations do not create");
        };
        columns.insert(
            "rowid".into(),
            Column {
                kind: "bigint".into(),
                not_null: true,
            },
        );
    }
    Ok(schema)
}

fn postgres_url() -> String {
    std::env::var("VECHE_TEST_DATABASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Migrates a fresh database on the local PostgreSQL and reads its columns; the database is
/// dropped whatever happens.
async fn postgres_schema() -> anyhow::Result<Schema> {
    let url = postgres_url();
    let mut admin = PgConnection::connect(&url)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {url} (is it running?)"))?;
    let name = format!("veche_t_{}", uuid::Uuid::new_v4().simple());
    // The name is ours: a fixed prefix and hex digits.
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let read = async {
        let options = PgConnectOptions::from_str(&url)?.database(&name);
        let mut conn = PgConnection::connect_with(&options).await?;
        sqlx::migrate!("./migrations/postgres")
            .run(&mut conn)
            .await?;
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
             FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
        )
        .fetch_all(&mut conn)
        .await?;
        conn.close().await?;
        anyhow::Ok(rows)
    }
    .await;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await?;
    admin.close().await?;
    let mut schema = Schema::new();
    for (table, column, data_type, nullable) in read? {
        schema.entry(table).or_default().insert(
            column,
            Column {
                kind: data_type,
                not_null: nullable == "NO",
            },
        );
    }
    Ok(schema)
}

/// Every difference between the two schemas, one line each.
fn differences(sqlite: &Schema, postgres: &Schema) -> Vec<String> {
    let mut found = Vec::new();
    let tables = sqlite.keys().chain(postgres.keys());
    let tables: std::collections::BTreeSet<_> = tables.collect();
    let empty = BTreeMap::new();
    for table in tables {
        let (s, p) = match (sqlite.get(table), postgres.get(table)) {
            (Some(s), Some(p)) => (s, p),
            (Some(_), None) => {
                found.push(format!("table {table}: only in SQLite"));
                (&empty, &empty)
            }
            (None, Some(_)) => {
                found.push(format!("table {table}: only in PostgreSQL"));
                (&empty, &empty)
            }
            (None, None) => (&empty, &empty),
        };
        let columns: std::collections::BTreeSet<_> = s.keys().chain(p.keys()).collect();
        for column in columns {
            match (s.get(column), p.get(column)) {
                (Some(a), Some(b)) if a != b => {
                    found.push(format!("{table}.{column}: SQLite {a:?}, PostgreSQL {b:?}"))
                }
                (Some(_), None) => found.push(format!("{table}.{column}: only in SQLite")),
                (None, Some(_)) => found.push(format!("{table}.{column}: only in PostgreSQL")),
                _ => {}
            }
        }
    }
    found
}

#[tokio::test]
async fn both_backends_migrate_to_the_same_columns() -> anyhow::Result<()> {
    let names = |m: &sqlx::migrate::Migrator| -> Vec<(i64, String)> {
        m.iter()
            .map(|m| (m.version, m.description.to_string()))
            .collect()
    };
    assert_eq!(
        names(&sqlx::migrate!("./migrations/sqlite")),
        names(&sqlx::migrate!("./migrations/postgres")),
        "the two migration folders must hold the same numbers and names"
    );

    let sqlite = sqlite_schema().await?;
    let postgres = postgres_schema().await?;
    assert!(
        sqlite.len() > 40,
        "the SQLite migrations made only {} tables",
        sqlite.len()
    );
    let found = differences(&sqlite, &postgres);
    assert!(
        found.is_empty(),
        "the schemas differ:\n{}",
        found.join("\n")
    );
    Ok(())
}
