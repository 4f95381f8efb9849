-- Every key of a per-workspace table begins with workspace_id, so that on a
-- store distributed by workspace (Citus) each statement that names one
-- workspace runs on one shard. The primary key now serves the listing by
-- workspace, so its index of the same columns goes.
ALTER TABLE dead_letters DROP CONSTRAINT dead_letters_pkey, ADD PRIMARY KEY (workspace_id, id);
DROP INDEX dead_letters_by_workspace;
