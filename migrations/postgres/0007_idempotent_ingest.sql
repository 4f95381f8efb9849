-- An event is queued once per workspace and messageId: a retry of a commit
-- whose answer was lost (a failover, a cut connection) is acknowledged and not
-- stored again. Duplicates queued before this are removed first.
DELETE FROM events a USING events b
 WHERE a.workspace_id = b.workspace_id AND a.message_id = b.message_id AND a.id > b.id;
CREATE UNIQUE INDEX events_by_message_id ON events (workspace_id, message_id);
