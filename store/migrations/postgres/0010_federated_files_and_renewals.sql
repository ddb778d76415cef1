-- PostgreSQL twin of migrations/sqlite/0010_federated_files_and_renewals.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- Files travel over links.
--
-- A content this node knows only from a linked node's message has a `blobs` row with
-- backend 'remote': it waits at the linked node and is fetched on its first download.
--
-- A file recorded from a linked node's message names that node in `linked_from` until the
-- node has shown it holds the content (sent it, matching the hash): knowing a hash is no
-- proof of holding the file, so until then the file is never served from a content held
-- here. NULL for files uploaded here.
ALTER TABLE files ADD COLUMN linked_from TEXT;

-- Files a user here attached to a message submitted to another node's discussion are
-- listed with the submission: they are kept (and served to the home, which fetches them
-- from here) while the submission waits.
CREATE TABLE fed_pending_files (
    event_id TEXT NOT NULL REFERENCES fed_pending (event_id) ON DELETE CASCADE,
    file_id  TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    PRIMARY KEY (event_id, file_id)
);
CREATE INDEX fed_pending_files_by_file ON fed_pending_files (file_id);

-- A home fetches the contents of its discussions' files it does not hold or has not proven.
CREATE INDEX files_unproven ON files (linked_from) WHERE linked_from IS NOT NULL;

-- A renewal of a link this node has accepted: the link goes on under `grant_text` until the
-- other node greets with the renewal (it has confirmed it then), which then replaces it.
ALTER TABLE fed_links ADD COLUMN renewal TEXT;
