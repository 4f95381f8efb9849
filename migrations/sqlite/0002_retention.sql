-- Retention sweeps find old rows by time.
CREATE INDEX dead_letters_by_age ON dead_letters (failed_at);
CREATE INDEX identities_by_age ON identities (updated_at);
