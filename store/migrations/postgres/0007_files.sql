-- PostgreSQL twin of migrations/sqlite/0007_files.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- Files: contents stored once per SHA-256 (blobs), files as uploaded (a name, a discussion,
-- an uploader), uploads in progress, and which messages a file is attached to.

-- One row per distinct content. `backend` is where it lives (`fs`, or `plugin:<id>`): a
-- migration between backends moves rows one at a time, so every file stays readable.
CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    backend    TEXT NOT NULL,
    mime       TEXT NOT NULL,                 -- recognised from the content
    thumbnail  BOOLEAN NOT NULL DEFAULT FALSE, -- a PNG preview is stored under `<sha256>.thumb`
    width      BIGINT,
    height     BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX blobs_by_backend ON blobs (backend);

CREATE TABLE files (
    id            TEXT PRIMARY KEY,            -- f_<32 hex>, random
    sha256        TEXT NOT NULL REFERENCES blobs (sha256),
    name          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    uploader      TEXT NOT NULL REFERENCES users (id),
    created_at    BIGINT NOT NULL,
    attached      BOOLEAN NOT NULL DEFAULT FALSE  -- was attached to a message once
);
CREATE INDEX files_by_sha256 ON files (sha256);
CREATE INDEX files_by_uploader ON files (uploader);
CREATE INDEX files_by_created ON files (created_at);

CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,            -- up_<32 hex>
    user_id       TEXT NOT NULL REFERENCES users (id),
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    name          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    confirmed     BIGINT NOT NULL DEFAULT 0,   -- bytes fsynced in the staging file
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    file_id       TEXT REFERENCES files (id) ON DELETE CASCADE  -- set when complete; goes with its file
);
CREATE INDEX uploads_by_user ON uploads (user_id);
CREATE INDEX uploads_by_expiry ON uploads (expires_at);
CREATE INDEX uploads_by_file ON uploads (file_id);

CREATE TABLE message_files (
    message_id TEXT NOT NULL REFERENCES messages (id),
    file_id    TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    PRIMARY KEY (message_id, file_id)
);
CREATE INDEX message_files_by_file ON message_files (file_id);
