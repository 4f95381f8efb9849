-- Retention sweeps find old rows by time.
CREATE INDEX dead_letters_by_age ON dead_letters (failed_at);
CREATE INDEX identities_by_age ON identities (updated_at);

-- The queue churns (every row is inserted, updated by claims, then deleted):
-- vacuum it after a small fraction of changes so it stays small and reads
-- do not wade through dead tuples.
ALTER TABLE events SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);
