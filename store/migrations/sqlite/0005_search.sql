-- The department a person works in: the directory finds people by it.
ALTER TABLE users ADD COLUMN department TEXT NOT NULL DEFAULT '';

-- What the search index has yet to take in: every message written, edited or deleted, in
-- commit order. The indexer keeps its position in the index itself and removes what it has
-- taken in.
CREATE TABLE search_queue (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL
);

CREATE TRIGGER messages_search_insert AFTER INSERT ON messages
BEGIN
    INSERT INTO search_queue (message_id) VALUES (NEW.id);
END;

CREATE TRIGGER messages_search_update AFTER UPDATE OF text, deleted ON messages
BEGIN
    INSERT INTO search_queue (message_id) VALUES (NEW.id);
END;
