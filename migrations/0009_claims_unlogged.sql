-- Claims are derived data: every one of them is recomputed from the stored
-- evidence (snapshots, observation runs, NIC states, Activity Log events)
-- whenever that evidence changes, and nothing else writes them. So they are
-- kept out of the write-ahead log: inserting and rewriting claims (rows
-- of 1.5 KB, six indexes) wrote most of an ingest's WAL, and the WAL was
-- about a third of what writing a claim cost Postgres.
--
-- An unlogged table is emptied when Postgres recovers from a crash, and is
-- empty on a standby that is promoted (or a base backup restored). Its
-- one-row marker `claims_intact`, unlogged too, is emptied with it: ipwho
-- finds it empty (at start, at every ingest, and when a replica polls the
-- change feed) and recomputes every NIC's claims from the evidence before
-- anything else reads or writes them. The evidence itself stays logged.
ALTER TABLE claims SET UNLOGGED;

CREATE UNLOGGED TABLE claims_intact (
    intact boolean PRIMARY KEY DEFAULT true CHECK (intact)
);
INSERT INTO claims_intact DEFAULT VALUES;
