-- Work grows with change, not repetition.
--
-- A live observation run is the NIC's latest run, with no event after its
-- end, that every finished complete snapshot of its subscription taken after
-- its end listed with the same state. Its end is therefore the
-- subscription's latest finished complete snapshot (its horizon), read at
-- query time rather than written into every run by every snapshot: an
-- unchanged NIC costs a new snapshot no write. A complete snapshot that does
-- not list the NIC, a different state, or an event after the run ends it
-- (the end is then written down and the run is no longer live).
ALTER TABLE observations ADD COLUMN live boolean NOT NULL DEFAULT false;
CREATE INDEX observations_live ON observations (nic_key) WHERE live;

-- A live claim is an open claim whose last evidence is the end of its NIC's
-- live run: its certain window ends at the subscription's horizon (or later
-- stored end), and its last evidence is the horizon snapshot.
ALTER TABLE claims ADD COLUMN live boolean NOT NULL DEFAULT false;

-- What each member of an unfinished snapshot was listed as, and whether its
-- observation was deferred to the live run (checked again when the snapshot
-- is finished, in case it ends up partial or the run was ended meanwhile).
ALTER TABLE snapshot_members ADD COLUMN fingerprint text;
ALTER TABLE snapshot_members ADD COLUMN deferred boolean NOT NULL DEFAULT false;

-- Bulk ingest speed: GiST indexes over long text keys cost tens of
-- microseconds per row, more than everything else an ingest does. Claims are
-- derived data whose disjointness the engine guarantees (and its property
-- tests check); lookups are served from memory. So claims keep btree
-- indexes only: conflicts find their candidates by IP equality, and
-- prefixes by the partial index below.
ALTER TABLE claims DROP CONSTRAINT claims_disjoint;
DROP INDEX claims_by_scope_ip_time;
DROP INDEX claims_by_ip;
DROP INDEX claims_by_vm;
-- Stored evidence keeps its exclusion constraint (a NIC's runs never
-- overlap), keyed by a 64-bit hash of the NIC key instead of the key: a
-- hash collision could only refuse a row, never admit an overlap.
ALTER TABLE observations DROP CONSTRAINT observations_disjoint;
ALTER TABLE observations ADD CONSTRAINT observations_disjoint EXCLUDE USING gist (
    (hashtextextended(nic_key, 0)) WITH =, tstzrange(first_at, last_at, '[]') WITH &&
) DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX claims_by_ip ON claims (ip);
CREATE INDEX claims_prefixes ON claims (scope)
    WHERE masklen(ip) < CASE WHEN family(ip) = 4 THEN 32 ELSE 128 END;
-- Claims of a subscription by where their certain window starts: the ones a
-- moved horizon may bring into conflict with a live claim.
DROP INDEX claims_by_subscription;
CREATE INDEX claims_by_subscription_start ON claims (subscription, lower(certain));

-- A conflict is one pair of claims; its overlap grows while both are live,
-- so it is keyed by where the overlap starts.
ALTER TABLE conflicts DROP CONSTRAINT conflicts_scope_ip_nic_a_nic_b_overlap_key;
CREATE UNIQUE INDEX conflicts_pair ON conflicts (scope, ip, nic_a, nic_b, lower(overlap));

-- Reading one NIC's runs, and finding the claims a complete snapshot may
-- bound (those not live whose possible window reaches past it).
CREATE INDEX observations_by_nic ON observations (nic_key);
CREATE INDEX claims_open_by_subscription
    ON claims (subscription, (coalesce(upper(possible), 'infinity'::timestamptz))) WHERE NOT live;

-- A claim's detail and a NIC state are written once and read whole, never
-- queried inside: json text (no jsonb conversion on insert), lz4 when long.
ALTER TABLE claims ALTER COLUMN detail TYPE json USING detail::json;
ALTER TABLE claims ALTER COLUMN detail SET COMPRESSION lz4;
ALTER TABLE nic_states ALTER COLUMN state TYPE json USING state::json;
ALTER TABLE nic_states ALTER COLUMN state SET COMPRESSION lz4;
