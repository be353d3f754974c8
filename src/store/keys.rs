//! API keys as stored: a name, scopes, expiry and revocation, and the
//! SHA-256 of the secret (never the secret). What a key means is `access`'s.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One stored key.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub name: String,
    /// The key's first characters, to tell keys apart in a list.
    pub prefix: String,
    /// SHA-256 of the whole key as sent.
    pub secret_sha256: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Stores a new key; `false` when a key of that name exists already.
pub async fn create_key(
    pool: &PgPool,
    name: &str,
    prefix: &str,
    secret_sha256: &[u8],
    scopes: &[String],
    expires_at: Option<DateTime<Utc>>,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO api_keys (name, prefix, secret_sha256, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(prefix)
    .bind(secret_sha256)
    .bind(scopes)
    .bind(expires_at)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Every key, revoked and expired ones too, by name.
pub async fn list_keys(pool: &PgPool) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as(
        "SELECT name, prefix, secret_sha256, scopes, created_at, expires_at, revoked_at
         FROM api_keys ORDER BY name",
    )
    .fetch_all(pool)
    .await
}

/// Revokes the key `name` (from now); `false` when there is no such key or
/// it was revoked already.
pub async fn revoke_key(pool: &PgPool, name: &str) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name)
    .execute(pool)
    .await?;
    Ok(r.rows_affected() == 1)
}
