-- A message may be written to a user or a discussion title while the node is unreachable: the
-- name is kept here and resolved into discussion_id (empty until then) once connected.
ALTER TABLE outbox ADD COLUMN target TEXT;
