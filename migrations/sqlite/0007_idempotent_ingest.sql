-- An event is queued once per workspace and messageId: a retry of a commit
-- whose answer was lost (a cut connection, a crash) is acknowledged and not
-- stored again. Duplicates queued before this are removed first.
DELETE FROM events WHERE id NOT IN (SELECT MIN(id) FROM events GROUP BY workspace_id, message_id);
CREATE UNIQUE INDEX events_by_message_id ON events (workspace_id, message_id);
