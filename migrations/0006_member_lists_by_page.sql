-- A snapshot's member list is kept one row per posted page (the page's NIC
-- keys, their state fingerprints, and whether each observation was deferred
-- to the NIC's live run, as arrays) instead of one row per NIC: a page of
-- 1,000 NICs was 1,000 rows and 1,000 entries in a btree over 150-character
-- keys (about 10 microseconds a NIC, a tenth of a first snapshot's ingest),
-- and is now one row. The list is read only when the snapshot is finished,
-- then deleted.
--
-- Posting a page again is idempotent: a page is keyed by the digest of its
-- keys and fingerprints in order, and a repeat only ANDs its deferred flags
-- into the stored ones. The same NIC on two different pages counts once
-- (see snapshot_members below).
CREATE TABLE snapshot_pages (
    snapshot_id  text NOT NULL REFERENCES snapshots ON DELETE CASCADE,
    digest       text NOT NULL,
    seq          bigserial NOT NULL,
    nic_keys     text[] NOT NULL,
    fingerprints text[] NOT NULL,
    deferred     boolean[] NOT NULL,
    PRIMARY KEY (snapshot_id, digest),
    CHECK (cardinality(nic_keys) = cardinality(fingerprints)
           AND cardinality(nic_keys) = cardinality(deferred))
);
ALTER TABLE snapshot_pages ALTER COLUMN nic_keys SET COMPRESSION lz4;
ALTER TABLE snapshot_pages ALTER COLUMN fingerprints SET COMPRESSION lz4;

INSERT INTO snapshot_pages (snapshot_id, digest, nic_keys, fingerprints, deferred)
SELECT snapshot_id, 'migrated', array_agg(nic_key ORDER BY nic_key),
       array_agg(fingerprint ORDER BY nic_key), array_agg(deferred ORDER BY nic_key)
FROM snapshot_members GROUP BY snapshot_id;
DROP TABLE snapshot_members;

-- One row per NIC a snapshot listed, as before: its fingerprint from the
-- first page that listed it, deferred only if every listing deferred it.
CREATE VIEW snapshot_members AS
SELECT p.snapshot_id, u.nic_key,
       (array_agg(u.fingerprint ORDER BY p.seq, u.i))[1] AS fingerprint,
       bool_and(u.deferred) AS deferred
FROM snapshot_pages p,
     unnest(p.nic_keys, p.fingerprints, p.deferred) WITH ORDINALITY AS u(nic_key, fingerprint, deferred, i)
GROUP BY p.snapshot_id, u.nic_key;
