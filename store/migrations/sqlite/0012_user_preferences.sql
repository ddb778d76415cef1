-- A person's client preferences (the send key, the sound, the language), as one JSON object
-- the clients define, kept on the node so that they follow the user to every device.
CREATE TABLE user_preferences (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
