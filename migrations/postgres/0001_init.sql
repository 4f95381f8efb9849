-- Times are Unix milliseconds (BIGINT), the same on both backends.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    ingest_key  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- A workspace's Segment integration and the state of delivery to it.
CREATE TABLE integrations (
    workspace_id          TEXT PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    sealed_write_key      TEXT NOT NULL,
    write_key_hint        TEXT NOT NULL,
    region                TEXT NOT NULL,
    enabled               BOOLEAN NOT NULL,
    updated_at            BIGINT NOT NULL,
    next_attempt_at       BIGINT NOT NULL,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    lease_id              TEXT,
    leased_until          BIGINT,
    last_delivery_at      BIGINT,
    last_error_at         BIGINT,
    last_error_status     INTEGER,
    last_error_message    TEXT
);

-- The delivery queue. `payload` is the Segment track message without userId.
-- Keyed by workspace first: delivery reads a workspace's oldest events and
-- deletes them by id once Segment has them. The worker holding the
-- workspace's lease (in `integrations`) owns its events; rows carry no lease.
CREATE TABLE events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY,
    workspace_id  TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    user_id       TEXT,
    anonymous_id  TEXT,
    payload       TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX events_by_age ON events (received_at);

CREATE TABLE dead_letters (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    message_id    TEXT NOT NULL,
    user_id       TEXT,
    anonymous_id  TEXT,
    payload       TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    status        INTEGER,
    detail        TEXT NOT NULL,
    failed_at     BIGINT NOT NULL
);
CREATE INDEX dead_letters_by_workspace ON dead_letters (workspace_id, id);

-- anonymousId -> userId, per workspace, from identify calls and events with both.
CREATE TABLE identities (
    workspace_id  TEXT NOT NULL,
    anonymous_id  TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, anonymous_id)
);
