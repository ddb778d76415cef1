-- A submission its home refused for good: why. Sending it again (same exactly-once key) gets
-- this answer instead of a pending success.
ALTER TABLE fed_pending ADD COLUMN refused TEXT;
