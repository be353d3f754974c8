-- VNet listings as evidence of where routing can take a packet: what each
-- listing showed of a VNet's address space, subnets and peerings. As with
-- NIC observations, storage grows with change, not repetition: each
-- distinct state of a VNet is stored once, and a VNet listed again
-- unchanged extends its run instead of adding a row.

-- One row per listing: the instant it was taken and the subscriptions it
-- covers. The pages of one listing (posted with the same instant and
-- subscriptions) share it; posting a listing again adds nothing.
CREATE TABLE topology_listings (
    id             bigserial PRIMARY KEY,
    taken_at       timestamptz NOT NULL,
    subscriptions  text[] COLLATE "C" NOT NULL,
    -- Why the listing may lack VNets (a page that never came back); null
    -- when it does not say so.
    partial_reason text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (taken_at, subscriptions)
);
CREATE INDEX topology_listings_by_subscription ON topology_listings USING gin (subscriptions);

-- Every VNet ever listed; vnet_key is the lower-cased ARM id.
CREATE TABLE vnets (
    vnet_key     text COLLATE "C" PRIMARY KEY,
    id           text NOT NULL,
    subscription text COLLATE "C" NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vnets_by_subscription ON vnets (subscription);

-- Distinct VNet states (address space, subnets, peerings as ipwho reads
-- them, JSON written and read by ipwho alone), by content fingerprint.
CREATE TABLE vnet_states (
    fingerprint text COLLATE "C" PRIMARY KEY,
    vnet_key    text COLLATE "C" NOT NULL REFERENCES vnets,
    state       text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE vnet_states ALTER COLUMN state SET COMPRESSION lz4;

-- Runs of an unchanged state: listings showed the VNet with this state at
-- first_at and at last_at, and every listing between them that showed the
-- VNet showed it so. A listing with another state inside a run splits it
-- at the listings of the VNet's subscription nearest it. A VNet's runs
-- never overlap.
CREATE TABLE vnet_runs (
    id          bigserial PRIMARY KEY,
    vnet_key    text COLLATE "C" NOT NULL REFERENCES vnets,
    fingerprint text COLLATE "C" NOT NULL REFERENCES vnet_states,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (first_at <= last_at),
    CONSTRAINT vnet_runs_disjoint EXCLUDE USING gist (
        vnet_key WITH =, tstzrange(first_at, last_at, '[]') WITH &&
    ) DEFERRABLE INITIALLY DEFERRED
);
