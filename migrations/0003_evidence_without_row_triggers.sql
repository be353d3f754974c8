-- Bulk ingest speed: a foreign key costs a trigger and a locking lookup of
-- the referenced row for every row inserted (about 6 microseconds each here,
-- two per observation and per Activity Log event: a tenth of a 100,000-NIC
-- snapshot's ingest). Evidence is written by ingest alone, serialised by its
-- advisory lock, which registers a NIC and stores its state in the same
-- transaction before anything refers to them, and nothing ever deletes a
-- NIC or a state. The integration tests check that every reference resolves.
ALTER TABLE nic_states DROP CONSTRAINT nic_states_nic_key_fkey;
ALTER TABLE observations DROP CONSTRAINT observations_nic_key_fkey;
ALTER TABLE observations DROP CONSTRAINT observations_fingerprint_fkey;
ALTER TABLE activity_events DROP CONSTRAINT activity_events_nic_key_fkey;
ALTER TABLE activity_events DROP CONSTRAINT activity_events_fingerprint_fkey;
