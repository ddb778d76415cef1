-- PostgreSQL twin of migrations/sqlite/0002_discussions.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- Discussions, messages and their event log.
-- Every change to a discussion is a row in `events` with the discussion's next `seq`
-- (gapless, assigned in the writing transaction). Message bodies live only in `messages`
-- and `message_versions`, so deleting a message purges its text everywhere.

CREATE TABLE discussions (
    id               TEXT PRIMARY KEY,         -- <uuid>@<home node>
    kind             TEXT NOT NULL,            -- dialog | group | object
    title            TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_seq         BIGINT NOT NULL DEFAULT 0,
    last_activity_at BIGINT NOT NULL,
    dialog_key       TEXT UNIQUE,              -- the two user ids, sorted, for dialogs
    object_app       TEXT,
    object_type      TEXT,
    object_id        TEXT,
    UNIQUE (object_app, object_type, object_id)
);

CREATE TABLE members (
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    user_id       TEXT NOT NULL,
    role          TEXT NOT NULL,               -- owner | member
    added_at      BIGINT NOT NULL,
    PRIMARY KEY (discussion_id, user_id)
);
CREATE INDEX members_by_user ON members (user_id);

-- Who may read an object's discussion: `user:<id>` or `group:<discussion id>`.
-- Keyed by the object, so access can be set before the discussion exists.
CREATE TABLE object_access (
    object_app  TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    principal   TEXT NOT NULL,
    PRIMARY KEY (object_app, object_type, object_id, principal)
);

-- Object discussions in a user's list (followed: posted, mentioned, or followed by hand).
CREATE TABLE follows (
    user_id       TEXT NOT NULL,
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    PRIMARY KEY (user_id, discussion_id)
);
CREATE INDEX follows_by_discussion ON follows (discussion_id);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    seq           BIGINT NOT NULL,
    author        TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    client_msg_id TEXT NOT NULL,
    payload_hash  TEXT NOT NULL,
    text          TEXT,                        -- NULL once deleted
    data          TEXT,                        -- JSON; NULL once deleted
    actions       TEXT NOT NULL,               -- JSON array of {id, label}
    reply_to      TEXT,
    created_at    BIGINT NOT NULL,
    edited_at     BIGINT,
    version       BIGINT NOT NULL,
    deleted       BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (author, device_id, client_msg_id),  -- exactly once, kept for good
    UNIQUE (discussion_id, seq)
);

CREATE TABLE message_versions (
    message_id TEXT NOT NULL REFERENCES messages (id),
    version    BIGINT NOT NULL,
    text       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (message_id, version)
);

CREATE TABLE mentions (
    message_id    TEXT NOT NULL REFERENCES messages (id),
    user_id       TEXT NOT NULL,
    discussion_id TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX mentions_by_user ON mentions (user_id, discussion_id, seq);

CREATE TABLE reactions (
    message_id TEXT NOT NULL REFERENCES messages (id),
    user_id    TEXT NOT NULL,
    emoji      TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id, emoji)
);

CREATE TABLE events (
    discussion_id TEXT NOT NULL REFERENCES discussions (id),
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    actor         TEXT NOT NULL,
    at            BIGINT NOT NULL,
    message_id    TEXT,
    detail        TEXT NOT NULL,               -- JSON: emoji, title, users, version
    PRIMARY KEY (discussion_id, seq)
);

CREATE TABLE read_markers (
    user_id       TEXT NOT NULL,
    discussion_id TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    PRIMARY KEY (user_id, discussion_id)
);
