-- Times are Unix milliseconds (INTEGER), the same on both backends.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    ingest_key  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- A workspace's Segment integration and the state of delivery to it.
CREATE TABLE integrations (
    workspace_id          TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    sealed_write_key      TEXT NOT NULL,
    write_key_hint        TEXT NOT NULL,
    region                TEXT NOT NULL,
    enabled               INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    next_attempt_at       INTEGER NOT NULL,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    lease_id              TEXT,
    leased_until          INTEGER,
    last_delivery_at      INTEGER,
    last_error_at         INTEGER,
    last_error_status     INTEGER,
    last_error_message    TEXT
);

-- The delivery queue. `payload` is the Segment track message without userId.
-- AUTOINCREMENT: ids are never reused, so a read may start after the last
-- delivered id (see delivery's cursors).
CREATE TABLE events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id  TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    user_id       TEXT,
    anonymous_id  TEXT,
    payload       TEXT NOT NULL,
    received_at   INTEGER NOT NULL
);
CREATE INDEX events_by_workspace ON events (workspace_id, id);
CREATE INDEX events_by_age ON events (received_at);

CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    user_id       TEXT,
    anonymous_id  TEXT,
    payload       TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    status        INTEGER,
    detail        TEXT NOT NULL,
    failed_at     INTEGER NOT NULL
);
CREATE INDEX dead_letters_by_workspace ON dead_letters (workspace_id, id);

-- anonymousId -> userId, per workspace, from identify calls and events with both.
CREATE TABLE identities (
    workspace_id  TEXT NOT NULL,
    anonymous_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, anonymous_id)
);
