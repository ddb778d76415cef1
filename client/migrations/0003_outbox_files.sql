-- Files attached to a message of the outbox, in order. The file is read from `path` when the
-- message goes out; `size` and `sha256` were taken when it was queued, so a file changed since
-- is refused by the node rather than sent in another state. `upload_id` is kept as soon as the
-- node has declared the upload, so an interrupted upload continues from what the node
-- confirmed, also after a restart of the client; `file_id` once the node has the whole file.
CREATE TABLE outbox_files (
    outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    path      TEXT NOT NULL,
    name      TEXT NOT NULL,
    size      INTEGER NOT NULL,
    sha256    TEXT NOT NULL,
    upload_id TEXT,
    file_id   TEXT,
    PRIMARY KEY (outbox_id, position)
);
