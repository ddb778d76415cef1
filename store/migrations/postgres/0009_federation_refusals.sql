-- PostgreSQL twin of migrations/sqlite/0009_federation_refusals.sql: the same tables and columns (a store test
-- compares them); BIGINT for INTEGER, BYTEA for BLOB, identity columns for rowids.
-- A submission its home refused for good: why. Sending it again (same exactly-once key) gets
-- this answer instead of a pending success.
ALTER TABLE fed_pending ADD COLUMN refused TEXT;
-- What was submitted: `message.post`, `message.edit`, ... or `dialog.open` (whose
-- `message_id` is the dialog's id).
ALTER TABLE fed_pending ADD COLUMN kind TEXT NOT NULL DEFAULT 'message.post';
