-- What `context.ip` keeps of the browser's address for this workspace:
-- 'full', 'truncated' (last IPv4 octet / last 80 IPv6 bits zeroed) or 'none'.
ALTER TABLE integrations ADD COLUMN ip TEXT NOT NULL DEFAULT 'full';

-- Workspaces deleted in the last hour. Another instance may accept events
-- with a deleted workspace's ingest key until its key cache expires; the
-- janitor removes what they committed, then the row itself.
CREATE TABLE deleted_workspaces (
    id          TEXT PRIMARY KEY,
    deleted_at  BIGINT NOT NULL
);
