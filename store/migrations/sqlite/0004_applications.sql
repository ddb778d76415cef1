-- Business applications, their registration codes, outgoing webhooks and app-to-app topics.

-- An application acts as a user of kind 'app' whose login is the application's name; the
-- objects of its namespace (`application` in an object reference) are its own.
CREATE TABLE applications (
    name             TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL UNIQUE REFERENCES users (id),
    email            TEXT NOT NULL,
    status           TEXT NOT NULL,            -- pending | active | revoked
    secret_hash      TEXT UNIQUE,              -- hex SHA-256 of the secret; set on activation
    instance_id      TEXT,                     -- the instance the registration is bound to
    created_at       BIGINT NOT NULL,
    activated_at     BIGINT,
    copy_refusals    BIGINT NOT NULL DEFAULT 0,
    last_copy_at     BIGINT,
    last_copy_instance TEXT
);

-- One-time codes sent by e-mail; only their hash is kept.
CREATE TABLE application_codes (
    application TEXT NOT NULL REFERENCES applications (name) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    sent_at     BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    used_at     BIGINT,
    PRIMARY KEY (application, code_hash)
);

-- Outgoing webhooks: an owner (an application's user id, or 'node' for the administrator's),
-- the event kinds it wants ('*' for all) and how its requests are signed.
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    url        TEXT NOT NULL,
    kinds      TEXT NOT NULL,                  -- JSON array
    signing    TEXT NOT NULL,                  -- hmac-sha256 | ed25519
    secret     TEXT NOT NULL,                  -- HMAC key (hex); empty for ed25519
    created_at BIGINT NOT NULL
);

-- The durable outbox of webhook requests, retried with backoff.
CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id  TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    state       TEXT NOT NULL,                 -- pending | delivered | failed
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    done_at     BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, state);

-- App-to-app topics. A message is stored once; each subscription has a delivery row for it
-- until the subscriber acknowledges. Expired messages are never returned, whether or not
-- their rows have been removed yet.
CREATE TABLE topic_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    topic           TEXT NOT NULL,
    publisher       TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    payload         TEXT NOT NULL,
    published_at    BIGINT NOT NULL,
    expires_at      BIGINT,
    UNIQUE (topic, publisher, idempotency_key)
);

CREATE TABLE topic_subscriptions (
    topic      TEXT NOT NULL,
    subscriber TEXT NOT NULL,                  -- application name
    push_url   TEXT,                           -- pushed to this URL when set, else pulled
    signing    TEXT NOT NULL,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (topic, subscriber)
);

CREATE TABLE topic_deliveries (
    subscriber TEXT NOT NULL,
    topic      TEXT NOT NULL,
    message_id BIGINT NOT NULL REFERENCES topic_messages (id) ON DELETE CASCADE,
    visible_at BIGINT NOT NULL,                -- leased until then
    attempts   BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    PRIMARY KEY (subscriber, topic, message_id)
);
CREATE INDEX topic_deliveries_due ON topic_deliveries (visible_at);
CREATE INDEX topic_deliveries_by_message ON topic_deliveries (message_id);
