//! Who may call: API keys and their scopes, checked on every request but
//! health, readiness and the API documents; and the browser-facing checks
//! that hold even with access control off (the `Host` header against the
//! configured names, no POST a web page could send without asking first).
//!
//! A request that passes carries a [`Caller`] (request extension): who it
//! is ([`CallerKind`]: an API key, a bearer token, or anonymous while access
//! control is off) and what it may do ([`Scopes`]). Credentials come as
//! `Authorization: Bearer <credential>` or `X-Api-Key: <key>`. An ipwho key
//! (`ipwho_…`) is checked against the keys in Postgres and the one given by
//! configuration; any other bearer credential goes to the
//! [`TokenValidator`], when one is plugged in ([`Access::with_tokens`]), and
//! is refused otherwise.

pub mod cli;
mod http;
pub mod keys;

use std::fmt;
use std::sync::Arc;

use futures::future::BoxFuture;

pub use http::{AllowedHosts, check_content_type};
pub use keys::{Access, KeyError, NewKey, generate_key};

/// One permission. `lookup`: answers, history, NIC and VM views, status,
/// conflicts, topology as read; `enrich`: flow-log enrichment; `ingest`:
/// every evidence write; `admin`: key management (and what is added for
/// operators later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Lookup,
    Enrich,
    Ingest,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Lookup, Scope::Enrich, Scope::Ingest, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Lookup => "lookup",
            Scope::Enrich => "enrich",
            Scope::Ingest => "ingest",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown scope {s:?}; scopes are lookup, enrich, ingest, admin"))
    }
}

/// A set of scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    pub const NONE: Scopes = Scopes(0);
    pub const ALL: Scopes = Scopes(0b1111);

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn with(self, s: Scope) -> Scopes {
        Scopes(self.0 | s.bit())
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Reads `lookup,enrich` (commas or spaces); at least one scope.
    pub fn parse(s: &str) -> Result<Scopes, String> {
        let mut out = Scopes::NONE;
        for part in s.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
            out = out.with(part.parse()?);
        }
        if out.is_empty() {
            return Err("no scope given; scopes are lookup, enrich, ingest, admin".into());
        }
        Ok(out)
    }

    /// The scopes' names, as stored.
    pub fn names(self) -> Vec<String> {
        self.iter().map(|s| s.as_str().to_string()).collect()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

/// How a caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerKind {
    /// An ipwho API key (from Postgres, or the one given by configuration).
    Key,
    /// A bearer token accepted by the plugged-in [`TokenValidator`].
    Token,
    /// Nobody in particular: access control is off (no credential
    /// configured, loopback only or `--insecure-no-auth`).
    Anonymous,
}

/// Who is calling, as every handler may read it (a request extension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The key's name, or the token's application and subject, or
    /// `anonymous`.
    pub name: String,
    pub kind: CallerKind,
    pub scopes: Scopes,
}

impl Caller {
    /// The caller while access control is off: may do everything.
    pub fn anonymous() -> Caller {
        Caller {
            name: "anonymous".into(),
            kind: CallerKind::Anonymous,
            scopes: Scopes::ALL,
        }
    }

    /// Ok when the caller holds `scope`.
    pub fn authorize(&self, scope: Scope) -> Result<(), AccessError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(AccessError::Forbidden {
                caller: self.name.clone(),
                scope,
            })
        }
    }
}

/// Why a request was refused before it reached its handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// No credential at all (401).
    #[error("no credential: send Authorization: Bearer <API key> (or X-Api-Key: <API key>)")]
    NoCredential,
    /// A credential that is malformed, unknown, revoked or expired (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid credential without the scope the route needs (403).
    #[error("{caller} lacks the {scope} scope this endpoint needs")]
    Forbidden { caller: String, scope: Scope },
    /// A POST a web page could send without a CORS preflight (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A `Host` header not among the configured names (421), or none (400).
    #[error("{detail}")]
    Host { detail: String, missing: bool },
    /// The credential could not be checked (its store failed).
    #[error("checking the credential failed: {0}")]
    Unavailable(String),
}

/// The seam for bearer tokens that are not ipwho keys (Entra ID access
/// tokens, say): given the token as sent, the caller it stands for, or
/// [`AccessError::Unauthenticated`] saying why not.
pub trait TokenValidator: Send + Sync {
    fn validate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AccessError>>;
}

/// A plugged-in validator, shared.
pub type Tokens = Arc<dyn TokenValidator>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        let s = Scopes::parse("lookup, enrich").unwrap();
        assert!(s.contains(Scope::Lookup) && s.contains(Scope::Enrich));
        assert!(!s.contains(Scope::Ingest) && !s.contains(Scope::Admin));
        assert_eq!(s.to_string(), "lookup,enrich");
        assert!(
            Scopes::parse("lookup,write")
                .unwrap_err()
                .contains("\"write\"")
        );
        assert!(Scopes::parse(" , ").is_err());
        assert_eq!(Scopes::ALL.names().len(), 4);
    }

    #[test]
    fn a_caller_without_the_scope_is_forbidden() {
        let c = Caller {
            name: "k".into(),
            kind: CallerKind::Key,
            scopes: Scopes::parse("lookup").unwrap(),
        };
        assert!(c.authorize(Scope::Lookup).is_ok());
        assert_eq!(
            c.authorize(Scope::Ingest),
            Err(AccessError::Forbidden {
                caller: "k".into(),
                scope: Scope::Ingest
            })
        );
    }
}
