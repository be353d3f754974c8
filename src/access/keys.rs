//! API keys: made, listed and revoked (for `ipwho keys`), and checked on
//! requests ([`Access`]).
//!
//! A key is `ipwho_` and 64 hex digits: 256 bits from the operating
//! system's CSPRNG (through `rand`'s thread generator, reseeded from it).
//! Only its SHA-256 is stored. A slow password hash (argon2, bcrypt)
//! protects secrets a person chose, which can be guessed; a 256-bit random
//! secret cannot be, so one SHA-256 is as safe against a stolen table, and
//! cheap enough to compute on every request and to find the key by.
//!
//! Requests read the keys from memory, reloaded from Postgres when older
//! than [`Access::refresh_every`] (2 s): a key created, revoked or expired
//! (by `ipwho keys`, or on another replica) counts within that time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use super::http::credential;
use super::{AccessError, AllowedHosts, Caller, CallerKind, Scopes, Tokens};
use crate::store::keys::{self as stored, KeyRow};

/// What every ipwho key starts with.
pub const KEY_PREFIX: &str = "ipwho_";

/// How many characters of a key are kept in clear to tell keys apart.
const SHOWN: usize = KEY_PREFIX.len() + 8;

/// A new random key.
pub fn generate_key() -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{KEY_PREFIX}{}", hex::encode(secret))
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Why a key could not be made or revoked.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Invalid(String),
    #[error("a key named {0:?} exists already (revoked keys keep their name)")]
    Exists(String),
    #[error("no key named {0:?} that is not revoked already")]
    NotFound(String),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

/// A key just made: the secret is shown this once.
#[derive(Debug, serde::Serialize)]
pub struct NewKey {
    pub name: String,
    pub key: String,
    pub scopes: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored key, as `ipwho keys list` shows it (never its secret).
#[derive(Debug, serde::Serialize)]
pub struct KeyInfo {
    pub name: String,
    /// The key's first characters.
    pub prefix: String,
    pub scopes: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `expired` or `revoked`.
    pub state: &'static str,
}

/// Reads an expiry: an RFC 3339 time, or a span from now (`90d`, `12h`, `30m`).
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, KeyError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        let t = t.with_timezone(&Utc);
        if t <= now {
            return Err(KeyError::Invalid(format!(
                "--expires {s}: that is in the past"
            )));
        }
        return Ok(t);
    }
    let bad = || {
        KeyError::Invalid(format!(
            "--expires {s:?}: give an RFC 3339 time (2026-12-31T00:00:00Z) or a span (90d, 12h, 30m)"
        ))
    };
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let span = match unit {
        "d" => chrono::Duration::try_days(n),
        "h" => chrono::Duration::try_hours(n),
        "m" => chrono::Duration::try_minutes(n),
        _ => None,
    }
    .filter(|_| n > 0)
    .ok_or_else(bad)?;
    now.checked_add_signed(span).ok_or_else(bad)
}

/// Makes and stores a key named `name` with `scopes`.
pub async fn create(
    pool: &PgPool,
    name: &str,
    scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
) -> Result<NewKey, KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if !ok {
        return Err(KeyError::Invalid(format!(
            "--name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )));
    }
    if scopes.is_empty() {
        return Err(KeyError::Invalid("--scope: at least one scope".into()));
    }
    let key = generate_key();
    let stored = stored::create_key(
        pool,
        name,
        &key[..SHOWN],
        &digest(&key),
        &scopes.names(),
        expires_at,
    )
    .await?;
    if !stored {
        return Err(KeyError::Exists(name.into()));
    }
    Ok(NewKey {
        name: name.into(),
        key,
        scopes: scopes.to_string(),
        expires_at,
    })
}

/// Every key, with its state now.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, KeyError> {
    let now = Utc::now();
    Ok(stored::list_keys(pool)
        .await?
        .into_iter()
        .map(|r| KeyInfo {
            state: if r.revoked_at.is_some() {
                "revoked"
            } else if r.expires_at.is_some_and(|t| t <= now) {
                "expired"
            } else {
                "active"
            },
            scopes: r.scopes.join(","),
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        })
        .collect())
}

/// Revokes the key `name`.
pub async fn revoke(pool: &PgPool, name: &str) -> Result<(), KeyError> {
    if stored::revoke_key(pool, name).await? {
        Ok(())
    } else {
        Err(KeyError::NotFound(name.into()))
    }
}

/// A stored key as requests check it.
struct Known {
    name: String,
    scopes: Scopes,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Loaded {
    keys: Arc<HashMap<[u8; 32], Known>>,
    at: Option<Instant>,
}

/// The credential check of every request, and the names the service
/// answers to. Access control is on (every request but health, readiness
/// and the API documents needs a credential) once a key is stored (any
/// key: revoking every key does not open the service), a key is given by
/// configuration, or a token validator is plugged in; off otherwise, when
/// every caller is [`Caller::anonymous`].
pub struct Access {
    pool: Option<PgPool>,
    configured: Option<[u8; 32]>,
    tokens: Option<Tokens>,
    hosts: AllowedHosts,
    enforced: AtomicBool,
    /// How old the keys read from Postgres may be before a request reads
    /// them again.
    pub refresh_every: Duration,
    loaded: RwLock<Arc<Loaded>>,
    reload: tokio::sync::Mutex<()>,
}

impl Access {
    /// Access control off for good, with no store of keys (the
    /// documentation, tools): every caller is anonymous.
    pub fn open(hosts: AllowedHosts) -> Access {
        Access {
            pool: None,
            configured: None,
            tokens: None,
            hosts,
            enforced: AtomicBool::new(false),
            refresh_every: Duration::from_secs(2),
            loaded: RwLock::new(Arc::default()),
            reload: tokio::sync::Mutex::new(()),
        }
    }

    /// The keys of `pool` and the one configured (`--api-key`), read once
    /// now: on from the start when either exists.
    pub async fn load(
        pool: PgPool,
        configured: Option<&str>,
        hosts: AllowedHosts,
    ) -> Result<Access, KeyError> {
        if let Some(k) = configured
            && (!k.starts_with(KEY_PREFIX) || k.len() < KEY_PREFIX.len() + 32)
        {
            return Err(KeyError::Invalid(format!(
                "--api-key / IPWHO_API_KEY must be an ipwho key ({KEY_PREFIX} and at least 32 more characters; `ipwho keys generate` prints one)"
            )));
        }
        let access = Access {
            pool: Some(pool),
            configured: configured.map(digest),
            enforced: AtomicBool::new(configured.is_some()),
            ..Access::open(hosts)
        };
        access.refresh().await?;
        Ok(access)
    }

    /// Plugs in a validator of bearer tokens that are not ipwho keys;
    /// access control is then on.
    pub fn with_tokens(mut self, tokens: Tokens) -> Access {
        self.tokens = Some(tokens);
        self.enforced = AtomicBool::new(true);
        self
    }

    /// Whether requests need a credential.
    pub fn enforced(&self) -> bool {
        self.enforced.load(Ordering::Relaxed)
    }

    /// The names the service answers to.
    pub fn hosts(&self) -> &AllowedHosts {
        &self.hosts
    }

    /// Reads the stored keys again.
    pub async fn refresh(&self) -> Result<(), KeyError> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let rows: Vec<KeyRow> = stored::list_keys(pool).await?;
        if !rows.is_empty() {
            self.enforced.store(true, Ordering::Relaxed);
        }
        let keys: HashMap<[u8; 32], Known> = rows
            .into_iter()
            .filter_map(|r| {
                let hash: [u8; 32] = r.secret_sha256.as_slice().try_into().ok()?;
                let scopes = r
                    .scopes
                    .iter()
                    .filter_map(|s| s.parse().ok())
                    .fold(Scopes::NONE, Scopes::with);
                Some((
                    hash,
                    Known {
                        name: r.name,
                        scopes,
                        expires_at: r.expires_at,
                        revoked_at: r.revoked_at,
                    },
                ))
            })
            .collect();
        *self.loaded.write().expect("key cache lock") = Arc::new(Loaded {
            keys: Arc::new(keys),
            at: Some(Instant::now()),
        });
        Ok(())
    }

    fn snapshot(&self) -> Arc<Loaded> {
        self.loaded.read().expect("key cache lock").clone()
    }

    /// The keys, read again first when older than `refresh_every` (one
    /// reader at a time; the others wait for it). A failed read keeps the
    /// keys read before, and is retried on a later request.
    async fn current(&self) -> Arc<Loaded> {
        let fresh = |l: &Loaded| l.at.is_some_and(|t| t.elapsed() < self.refresh_every);
        let now = self.snapshot();
        if self.pool.is_none() || fresh(&now) {
            return now;
        }
        let _turn = self.reload.lock().await;
        let now = self.snapshot();
        if fresh(&now) {
            return now;
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(error = %e, "reading the API keys failed; using those read before");
            let mut loaded = self.loaded.write().expect("key cache lock");
            *loaded = Arc::new(Loaded {
                keys: loaded.keys.clone(),
                at: Some(Instant::now()),
            });
        }
        self.snapshot()
    }

    /// Who the request's credential stands for.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AccessError> {
        let loaded = self.current().await;
        if !self.enforced() {
            return Ok(Caller::anonymous());
        }
        let Some(cred) = credential(headers)? else {
            return Err(AccessError::NoCredential);
        };
        if !cred.starts_with(KEY_PREFIX) {
            return match &self.tokens {
                Some(t) => t.validate(cred).await,
                None => Err(AccessError::Unauthenticated(format!(
                    "the credential is not an ipwho API key ({KEY_PREFIX}…)"
                ))),
            };
        }
        let hash = digest(cred);
        if self.configured == Some(hash) {
            return Ok(Caller {
                name: "configured-key".into(),
                kind: CallerKind::Key,
                scopes: Scopes::ALL,
            });
        }
        let Some(k) = loaded.keys.get(&hash) else {
            return Err(AccessError::Unauthenticated("unknown API key".into()));
        };
        if let Some(t) = k.revoked_at {
            return Err(AccessError::Unauthenticated(format!(
                "API key {:?} was revoked at {}",
                k.name,
                t.to_rfc3339()
            )));
        }
        if let Some(t) = k.expires_at.filter(|t| *t <= Utc::now()) {
            return Err(AccessError::Unauthenticated(format!(
                "API key {:?} expired at {}",
                k.name,
                t.to_rfc3339()
            )));
        }
        Ok(Caller {
            name: k.name.clone(),
            kind: CallerKind::Key,
            scopes: k.scopes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_long() {
        let (a, b) = (generate_key(), generate_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), KEY_PREFIX.len() + 64);
        assert!(a.starts_with(KEY_PREFIX));
        assert_ne!(digest(&a), digest(&b));
    }

    #[test]
    fn expiries_are_times_or_spans() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_expiry("90d", now).unwrap().to_rfc3339(),
            "2026-04-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("12h", now).unwrap().to_rfc3339(),
            "2026-01-01T12:00:00+00:00"
        );
        assert!(parse_expiry("2027-01-01T00:00:00Z", now).is_ok());
        for bad in ["2025-01-01T00:00:00Z", "0d", "-3d", "10y", "soon", ""] {
            assert!(parse_expiry(bad, now).is_err(), "{bad}");
        }
    }
}
