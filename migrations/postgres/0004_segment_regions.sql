-- Each Segment region's health, shared by all instances: consecutive
-- region-wide failures (5xx, timeouts, connection errors) since the last
-- success of any workspace there; since when the region counts as down; and
-- when it may next be probed, which is also the probe's claim (one probe at
-- a time, across instances). Times are Unix milliseconds.
CREATE TABLE segment_regions (
    region         TEXT PRIMARY KEY,
    failures       INTEGER NOT NULL DEFAULT 0,
    down_since     BIGINT,
    next_probe_at  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO segment_regions (region) VALUES ('us'), ('eu');
