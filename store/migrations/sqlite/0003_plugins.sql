-- WASM plugins: installations, their key-value stores, their logs, and the bot inbox.

-- Users are people or bots; a bot belongs to a plugin and cannot log in.
ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';

CREATE TABLE plugins (
    id           TEXT PRIMARY KEY,             -- the manifest's id
    version      TEXT NOT NULL,
    source       TEXT NOT NULL,                -- the folder it was installed from (watched in dev mode)
    manifest     TEXT NOT NULL,                -- plugin.toml as installed
    sha256       TEXT NOT NULL,                -- of the component
    grants       TEXT NOT NULL,                -- JSON array of the rights the administrator granted
    config       TEXT NOT NULL,                -- JSON object: the installation's configuration
    enabled      BOOLEAN NOT NULL,
    bot_user     TEXT,                         -- users.id of its bot, if it has the bot role
    installed_at BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

CREATE TABLE plugin_kv (
    plugin_id TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (plugin_id, key)
);

-- The newest lines each plugin logged (trimmed to a fixed number per plugin).
CREATE TABLE plugin_logs (
    id        INTEGER PRIMARY KEY,
    plugin_id TEXT NOT NULL,
    at        BIGINT NOT NULL,
    level     TEXT NOT NULL,
    message   TEXT NOT NULL,
    fields    TEXT NOT NULL                    -- JSON object
);
CREATE INDEX plugin_logs_by_plugin ON plugin_logs (plugin_id, id);

-- What bots are to be told, written in the same transaction as its cause: a message, a
-- business event or a click. Delivered in id order per plugin; failures are retried with
-- backoff, then parked as `dead` until an administrator replays them.
CREATE TABLE plugin_inbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids key bots' posts
    plugin_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,                  -- message | event | click
    payload    TEXT NOT NULL,                  -- JSON
    state      TEXT NOT NULL,                  -- pending | dead
    attempts   BIGINT NOT NULL DEFAULT 0,
    next_at    BIGINT NOT NULL,
    last_error TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX plugin_inbox_pending ON plugin_inbox (plugin_id, state, id);

-- Business events as received, once per (source, idempotency key).
CREATE TABLE business_events (
    id              INTEGER PRIMARY KEY,
    source          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    object_app      TEXT,
    object_type     TEXT,
    object_id       TEXT,
    payload         TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    UNIQUE (source, idempotency_key)
);
