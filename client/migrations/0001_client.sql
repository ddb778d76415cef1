-- The client's own state: who it is, where it is in each discussion, and what it has yet to send.

CREATE TABLE state (
    key   TEXT PRIMARY KEY,   -- device_id, login, session_token
    value TEXT NOT NULL
);

CREATE TABLE cursors (
    discussion_id TEXT PRIMARY KEY,
    seq           INTEGER NOT NULL
);

-- Messages the user composed, in the order they were written. A row is written before the
-- first send attempt and keeps its client_msg_id for every resend.
CREATE TABLE outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    client_msg_id TEXT NOT NULL UNIQUE,
    discussion_id TEXT NOT NULL,
    text          TEXT NOT NULL,
    reply_to      TEXT,
    data          TEXT,
    state         TEXT NOT NULL,  -- pending | sent | failed
    message_id    TEXT,
    seq           INTEGER,
    error         TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX outbox_pending ON outbox (state, id);
