//! Store unit tests run on both backends: SQLite in a temporary folder, and a fresh database
//! on the local PostgreSQL (`VECHE_TEST_DATABASE`, by default
//! `postgres://postgres@127.0.0.1:5432/postgres`, as for the schema parity test).

use crate::{Store, TestDatabase};

/// A store for one test, and what must outlive it.
pub(crate) struct TestStore {
    pub(crate) store: Store,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

/// A new SQLite store and a new PostgreSQL store.
pub(crate) async fn each_backend() -> Vec<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&dir.path().join("t.db")).await.unwrap();
    let server = std::env::var("VECHE_TEST_DATABASE")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let database = TestDatabase::create(&server)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {server} (is it running?): {e}"));
    let postgres = Store::open_postgres(database.url()).await.unwrap();
    vec![
        TestStore {
            store: sqlite,
            _dir: Some(dir),
            _database: None,
        },
        TestStore {
            store: postgres,
            _dir: None,
            _database: Some(database),
        },
    ]
}
