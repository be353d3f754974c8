-- Keys compare bytewise, whatever the database's locale. Every key ipwho
-- stores (lower-cased ARM ids, subscription ids, hex digests) is ASCII and
-- only ever compared for equality or sorted for grouping, so the collation
-- changes no answer; but under a linguistic collation (en_US.UTF-8, the
-- default of the official Postgres image, or ICU) each comparison in a btree
-- over 150-character NIC keys goes through the locale's rules: inserting
-- 95,000 NIC keys into such an index took 2.2 times as long under ICU
-- `en-US` as under "C" here. Indexes on these columns are rebuilt.
ALTER TABLE nics
    ALTER COLUMN nic_key TYPE text COLLATE "C",
    ALTER COLUMN subscription TYPE text COLLATE "C";
ALTER TABLE nic_states
    ALTER COLUMN fingerprint TYPE text COLLATE "C",
    ALTER COLUMN nic_key TYPE text COLLATE "C";
ALTER TABLE observations
    ALTER COLUMN nic_key TYPE text COLLATE "C",
    ALTER COLUMN fingerprint TYPE text COLLATE "C";
ALTER TABLE activity_events
    ALTER COLUMN key TYPE text COLLATE "C",
    ALTER COLUMN nic_key TYPE text COLLATE "C",
    ALTER COLUMN fingerprint TYPE text COLLATE "C";
ALTER TABLE claims
    ALTER COLUMN nic_key TYPE text COLLATE "C",
    ALTER COLUMN scope TYPE text COLLATE "C",
    ALTER COLUMN vm_key TYPE text COLLATE "C",
    ALTER COLUMN subscription TYPE text COLLATE "C";
ALTER TABLE conflicts
    ALTER COLUMN scope TYPE text COLLATE "C",
    ALTER COLUMN nic_a TYPE text COLLATE "C",
    ALTER COLUMN nic_b TYPE text COLLATE "C";
ALTER TABLE claim_changes
    ALTER COLUMN nic_key TYPE text COLLATE "C";
