-- API keys (`ipwho keys create|list|revoke`). The secret itself is never
-- stored: `secret_sha256` is the SHA-256 of the whole key as the client
-- sends it, `prefix` its first characters (to tell keys apart in lists).
-- Revoked keys stay, for the record, with `revoked_at` set.
CREATE TABLE api_keys (
    name          text COLLATE "C" PRIMARY KEY,
    prefix        text NOT NULL,
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    scopes        text[] NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    revoked_at    timestamptz
);
