-- PostgreSQL twin of migrations/sqlite/0014_link_confirmation.sql: the same columns (a store
-- test compares them); BIGINT for INTEGER.
-- A link this node accepted is pending until its offerer shows that it confirmed it (by
-- greeting, or answering a greeting): until then `confirm_by` (ms) is when it ends unconfirmed
-- (an offer replayed to this node, or one its offerer abandoned). NULL: confirmed.
ALTER TABLE fed_links ADD COLUMN confirm_by BIGINT;
