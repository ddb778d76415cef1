-- PostgreSQL twin of migrations/sqlite/0013_embed.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- The object-discussion widget: applications an administrator allowed to embed it, the
-- single-use tokens they mint for one user and one object, and the sessions those tokens
-- become.

-- The web origins that may frame an application's widget (its `frame-ancestors`). An
-- application with no row here may not mint embed tokens.
CREATE TABLE embed_origins (
    application TEXT NOT NULL REFERENCES applications (name) ON DELETE CASCADE,
    origin      TEXT NOT NULL,            -- scheme://host[:port], lowercase, no path
    PRIMARY KEY (application, origin)
);

-- Short-lived, single-use tokens; only their hash is kept. A used token keeps its row (with
-- `used_at`) until it expires, so that a second use is told apart from an unknown token.
CREATE TABLE embed_tokens (
    token_hash    TEXT PRIMARY KEY,       -- hex SHA-256 of the token
    application   TEXT NOT NULL REFERENCES applications (name) ON DELETE CASCADE,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    object_type   TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    discussion_id TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX embed_tokens_by_expiry ON embed_tokens (expires_at);

-- Sessions are of a kind: 'user' (a login) or 'embed' (a widget's, scoped to one discussion
-- by its row in embed_sessions). Only 'user' sessions are taken by login resumption.
ALTER TABLE sessions ADD COLUMN kind TEXT NOT NULL DEFAULT 'user';

CREATE TABLE embed_sessions (
    session_id    TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    application   TEXT NOT NULL,
    object_type   TEXT NOT NULL,
    object_id     TEXT NOT NULL,
    discussion_id TEXT NOT NULL,
    ends_at       BIGINT NOT NULL         -- the longest it may live, however busy
);
CREATE INDEX embed_sessions_by_app ON embed_sessions (application);
