-- The events a workspace forwards to Segment (a JSON array; NULL: all) and the
-- properties left out of every event (a JSON array; NULL: none).
ALTER TABLE integrations ADD COLUMN forwarded_events TEXT;
ALTER TABLE integrations ADD COLUMN omitted_properties TEXT;
