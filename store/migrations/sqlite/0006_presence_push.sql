-- Presence, notification settings and push endpoints. Presence itself lives in memory; only
-- what a user chose is kept here.

CREATE TABLE presence_choices (
    user_id     TEXT PRIMARY KEY,
    choice      TEXT NOT NULL,                 -- auto | away | dnd | invisible
    status_text TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Only settings that differ from the default have a row.
CREATE TABLE notification_settings (
    user_id       TEXT NOT NULL,
    discussion_id TEXT NOT NULL,
    level         TEXT NOT NULL,               -- default | all | mentions | none
    muted_until   BIGINT,
    PRIMARY KEY (user_id, discussion_id)
);
CREATE INDEX notification_settings_by_discussion ON notification_settings (discussion_id);

-- One endpoint per device and kind.
CREATE TABLE push_endpoints (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    kind       TEXT NOT NULL,                  -- web_push | gateway
    target     TEXT NOT NULL,                  -- the push service URL, or the gateway's name
    p256dh     TEXT NOT NULL DEFAULT '',       -- web_push: the subscription's key, base64url
    auth       TEXT NOT NULL DEFAULT '',       -- web_push: its authentication secret
    pushkey    TEXT NOT NULL DEFAULT '',       -- gateway: the device's token
    created_at BIGINT NOT NULL,
    UNIQUE (user_id, device_id, kind)
);
CREATE INDEX push_endpoints_by_user ON push_endpoints (user_id);

-- Notifications waiting to be pushed, one row per endpoint and discussion: a notification for
-- a discussion that already waits updates its row (coalescing), and `count` says how many
-- it stands for.
CREATE TABLE push_queue (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id   TEXT NOT NULL REFERENCES push_endpoints (id) ON DELETE CASCADE,
    discussion_id TEXT NOT NULL,
    payload       TEXT NOT NULL,               -- JSON of the latest notification
    count         BIGINT NOT NULL,
    urgent        BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    due_at        BIGINT NOT NULL,             -- the end of the coalescing window, then backoff
    attempts      BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT,
    UNIQUE (endpoint_id, discussion_id)
);
CREATE INDEX push_queue_due ON push_queue (due_at);

-- A device whose last session ends (logout, revocation, expiry) gets no more pushes.
CREATE TRIGGER push_endpoints_follow_sessions AFTER DELETE ON sessions
WHEN NOT EXISTS (
    SELECT 1 FROM sessions s WHERE s.user_id = OLD.user_id AND s.device_id = OLD.device_id
)
BEGIN
    DELETE FROM push_endpoints WHERE user_id = OLD.user_id AND device_id = OLD.device_id;
END;
