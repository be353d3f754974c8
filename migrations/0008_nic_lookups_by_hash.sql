-- The per-NIC lookups of recompute (a batch's NICs' claims, events and
-- observation runs) go through a 64-bit hash of the NIC key instead of the
-- key itself. The keys are lower-cased ARM ids of about 150 characters: a
-- btree over them held an entry of that size per row, and every claim
-- inserted or rewritten, every event and every run added one. An entry of
-- the hash is 8 bytes. `hashtextextended` is the function Postgres hashes
-- partition keys with, so it is stable across versions; on a deterministic
-- collation (every key column is "C") it hashes the bytes.
--
-- Two keys may share a hash: every query through these indexes also
-- compares the key itself, so a collision costs a row read, never a wrong
-- row. (The exclusion constraint on `observations` already hashes the key
-- the same way.)
DROP INDEX claims_by_nic;
CREATE INDEX claims_by_nic ON claims (hashtextextended(nic_key, 0));
DROP INDEX activity_events_by_nic;
CREATE INDEX activity_events_by_nic ON activity_events (hashtextextended(nic_key, 0));
DROP INDEX observations_by_nic;
CREATE INDEX observations_by_nic ON observations (hashtextextended(nic_key, 0));
