-- A claim is "NIC n held IP i in VNet v"; the VMs the NIC was attached to
-- meanwhile are inside it (`detail.vms`), each with its own windows, so a
-- NIC moved to another VM keeps one claim on its IP. The VM leaves the
-- claim's key. Claims are derived data: they are emptied here, and the
-- missing `claims_intact` row has them recomputed from the evidence, in
-- the new shape, before anything reads them.
DELETE FROM claims_intact;
TRUNCATE claims;
TRUNCATE conflicts;
ALTER TABLE claims DROP COLUMN vm_key;

-- How far the Activity Log reaches, per subscription: its earliest and
-- latest event (what watched a subscription, beside its complete
-- snapshots). Widened by every ingest of events.
CREATE TABLE activity_reach (
    subscription text COLLATE "C" PRIMARY KEY,
    first_at     timestamptz NOT NULL,
    last_at      timestamptz NOT NULL
);
INSERT INTO activity_reach (subscription, first_at, last_at)
SELECT split_part(nic_key, '/', 3), min(at), max(at)
FROM activity_events GROUP BY 1;
