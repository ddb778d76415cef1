-- PostgreSQL twin of migrations/sqlite/0012_user_preferences.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- A person's client preferences (the send key, the sound, the language), as one JSON object
-- the clients define, kept on the node so that they follow the user to every device.
CREATE TABLE user_preferences (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
