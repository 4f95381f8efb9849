-- Browser origins a workspace accepts events from, space-separated
-- (`https://app.example.com https://example.com`); NULL: any origin.
ALTER TABLE workspaces ADD COLUMN allowed_origins TEXT;
