-- PostgreSQL twin of migrations/sqlite/0011_federated_object_discussions.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- Object discussions across links.
--
-- Who may see a business object is decided by the node that holds it (its context provider or
-- access list). For an object discussion this node is home of: the users of linked nodes it
-- has told may read it (`write`: and post), so that it can tell them again when that changes.
-- For an object discussion homed at a linked node: what the home says this node's users may
-- do there; nobody else here may read it.
CREATE TABLE fed_object_readers (
    discussion_id TEXT NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    user_id       TEXT NOT NULL,
    write         BOOLEAN NOT NULL,
    PRIMARY KEY (discussion_id, user_id)
);

-- The digest of the last item received on a link, so that a peer restored from a backup,
-- which numbered other items the same, can tell (see `LinkStore::acked`).
ALTER TABLE fed_links ADD COLUMN received_digest TEXT;
