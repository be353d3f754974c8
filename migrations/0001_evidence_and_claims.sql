-- ipwho's system of record: evidence (append-only, deduplicated, with the
-- time it was recorded beside the time it speaks of), the claims derived from
-- it, and the conflicts between claims.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- One row per snapshot (a collector's listing of NICs at one instant). Pages
-- of a multi-page listing share the id; a snapshot counts as evidence of
-- absence only once it is finished and complete.
CREATE TABLE snapshots (
    id            text PRIMARY KEY,
    taken_at      timestamptz NOT NULL,
    subscriptions text[] NOT NULL,
    -- What the poster claimed, and what ipwho holds it to: a snapshot with
    -- rejected NIC records is downgraded to partial, since a NIC it failed to
    -- read must not count as missing.
    claimed_complete boolean NOT NULL,
    complete      boolean NOT NULL,
    partial_reason text,
    finished      boolean NOT NULL DEFAULT false,
    pages         integer NOT NULL DEFAULT 0,
    nics          integer NOT NULL DEFAULT 0,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
CREATE INDEX snapshots_complete_by_subscription
    ON snapshots USING gin (subscriptions) WHERE complete AND finished;

-- NICs a snapshot listed, kept only until the snapshot is finished (to tell
-- which NICs of its scope it did not list).
CREATE TABLE snapshot_members (
    snapshot_id text NOT NULL REFERENCES snapshots ON DELETE CASCADE,
    nic_key     text NOT NULL,
    PRIMARY KEY (snapshot_id, nic_key)
);

-- Every NIC ever seen; nic_key is the lower-cased ARM id.
CREATE TABLE nics (
    nic_key      text PRIMARY KEY,
    id           text NOT NULL,
    subscription text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nics_by_subscription ON nics (subscription);

-- Distinct NIC states, stored once however often they are observed.
CREATE TABLE nic_states (
    fingerprint text PRIMARY KEY,
    nic_key     text NOT NULL REFERENCES nics,
    state       jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

-- Snapshot observations, compressed into runs: every complete snapshot of
-- the NIC's subscription taken in [first_at, last_at] listed the NIC with
-- this state. An unchanged NIC extends its run instead of adding rows, so
-- storage grows with change, not repetition.
CREATE TABLE observations (
    id             bigserial PRIMARY KEY,
    nic_key        text NOT NULL REFERENCES nics,
    fingerprint    text NOT NULL REFERENCES nic_states,
    first_at       timestamptz NOT NULL,
    first_snapshot text NOT NULL,
    last_at        timestamptz NOT NULL,
    last_snapshot  text NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (first_at <= last_at),
    -- A NIC's runs never overlap.
    CONSTRAINT observations_disjoint EXCLUDE USING gist (
        nic_key WITH =, tstzrange(first_at, last_at, '[]') WITH &&
    ) DEFERRABLE INITIALLY DEFERRED
);

-- Activity Log NIC write/delete Success records, once each.
CREATE TABLE activity_events (
    key            text PRIMARY KEY,
    nic_key        text NOT NULL REFERENCES nics,
    at             timestamptz NOT NULL,
    kind           text NOT NULL CHECK (kind IN ('write', 'delete')),
    created        boolean NOT NULL DEFAULT false,
    fingerprint    text REFERENCES nic_states,
    correlation_id text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'write') = (fingerprint IS NOT NULL))
);
CREATE INDEX activity_events_by_nic ON activity_events (nic_key, at);

-- Claims: NIC n held IP (or prefix) ip in scope (VNet key) while attached to
-- VM vm_key. Derived from evidence and replaced whenever the NIC's evidence
-- changes; `detail` is the engine's claim as JSON.
CREATE TABLE claims (
    id           bigserial PRIMARY KEY,
    nic_key      text NOT NULL,
    scope        text NOT NULL,
    ip           inet NOT NULL,
    vm_key       text NOT NULL,
    subscription text NOT NULL,
    possible     tstzrange NOT NULL,
    certain      tstzrange NOT NULL,
    digest       text NOT NULL,
    detail       jsonb NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    -- One NIC's claims on one IP in one scope with one VM never overlap.
    CONSTRAINT claims_disjoint EXCLUDE USING gist (
        nic_key WITH =, scope WITH =, ip WITH =, vm_key WITH =, possible WITH &&
    ) DEFERRABLE INITIALLY DEFERRED
) WITH (fillfactor = 80);
CREATE INDEX claims_by_scope_ip_time ON claims USING gist (scope, ip inet_ops, possible);
CREATE INDEX claims_by_ip ON claims USING gist (ip inet_ops, possible);
CREATE INDEX claims_by_nic ON claims (nic_key);
CREATE INDEX claims_by_vm ON claims (vm_key) WHERE vm_key <> '';
CREATE INDEX claims_by_subscription ON claims (subscription);

-- Two NICs' certain windows overlapping on one IP in one scope: contradictory
-- evidence, kept until the evidence changes.
CREATE TABLE conflicts (
    id          bigserial PRIMARY KEY,
    scope       text NOT NULL,
    ip          inet NOT NULL,
    nic_a       text NOT NULL,
    nic_b       text NOT NULL,
    overlap     tstzrange NOT NULL,
    detail      jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope, ip, nic_a, nic_b, overlap)
);
CREATE INDEX conflicts_by_nic_a ON conflicts (nic_a);
CREATE INDEX conflicts_by_nic_b ON conflicts (nic_b);

-- The change feed other replicas follow (LISTEN ipwho_claims): every NIC
-- whose claims an ingest changed, in commit order (ingests are serialised).
-- Pruned after an hour; a replica further behind reloads everything.
CREATE TABLE claim_changes (
    seq        bigserial PRIMARY KEY,
    nic_key    text NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claim_changes_by_time ON claim_changes (changed_at);
