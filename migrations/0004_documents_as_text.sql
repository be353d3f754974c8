-- Bulk ingest speed: a claim's detail and a NIC state are JSON documents
-- that ipwho itself serialises and alone reads back. Stored as `json`, each
-- is parsed again by Postgres on insert to validate it: about 4 microseconds
-- a claim, a quarter of a claim row's insert (0.7 s of a 100,000-NIC
-- snapshot's 180,000 claims here). As text they are stored as written; ipwho
-- parses them when it loads them, as it did before. Both stay lz4-compressed.
ALTER TABLE claims ALTER COLUMN detail TYPE text USING detail::text;
ALTER TABLE claims ALTER COLUMN detail SET COMPRESSION lz4;
ALTER TABLE nic_states ALTER COLUMN state TYPE text USING state::text;
ALTER TABLE nic_states ALTER COLUMN state SET COMPRESSION lz4;
