-- The change feed holds one entry per write of claims (an ingest writes one
-- or a few) listing the NICs it changed, instead of one entry per NIC: a
-- first snapshot of 100,000 NICs appended 100,000 rows of 150-character
-- keys, each with two index entries, for followers that read them all
-- together anyway. A follower reads the NICs of every entry past its
-- position, as before; `seq` still orders the writes.
ALTER TABLE claim_changes ADD COLUMN nic_keys text[] COLLATE "C";
UPDATE claim_changes SET nic_keys = ARRAY[nic_key];
ALTER TABLE claim_changes ALTER COLUMN nic_keys SET NOT NULL;
ALTER TABLE claim_changes DROP COLUMN nic_key;
