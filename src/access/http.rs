//! The checks on a request's headers: the credential it carries, its
//! `Host` against the names the service answers to (DNS rebinding), and
//! the content type of a POST (cross-site requests a web page may send
//! without a CORS preflight).

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, header};

use super::AccessError;

/// The names the service answers to in a `Host` header (ports aside).
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    any: bool,
    names: Vec<String>,
}

impl AllowedHosts {
    /// The loopback names (`localhost`, `127.0.0.1`, `::1`), the address
    /// `listen` names (unless it is `0.0.0.0` or `::`), and `extra`
    /// (`*` accepts any host: behind a proxy that checks it).
    pub fn new(listen: Option<SocketAddr>, extra: &[String]) -> AllowedHosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if let Some(a) = listen.filter(|a| !a.ip().is_unspecified()) {
            names.push(a.ip().to_string());
        }
        let mut any = false;
        for e in extra {
            let e = e.trim();
            if e == "*" {
                any = true;
            } else if !e.is_empty() {
                names.push(normalise(host_name(e)));
            }
        }
        AllowedHosts { any, names }
    }

    /// Ok when `host` (a `Host` header's value, or the request URI's
    /// authority) names this service.
    pub fn check(&self, host: Option<&str>) -> Result<(), AccessError> {
        let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
            return Err(AccessError::Host {
                detail: "the request has no Host header".into(),
                missing: true,
            });
        };
        if self.any {
            return Ok(());
        }
        let name = normalise(host_name(host));
        if self.names.contains(&name) {
            return Ok(());
        }
        Err(AccessError::Host {
            detail: format!(
                "Host {host:?} is not a name this service answers to ({}); add it with --allowed-host / IPWHO_ALLOWED_HOSTS",
                self.names.join(", ")
            ),
            missing: false,
        })
    }
}

/// `host` without its port (`[::1]:8080` → `::1`, `a.b:80` → `a.b`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    if host.parse::<IpAddr>().is_ok() {
        return host;
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn normalise(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => name,
    }
}

/// A POST must say what it carries, and not as a form or plain text: a web
/// page can send `text/plain`, `application/x-www-form-urlencoded` and
/// `multipart/form-data` bodies, and bodies with no content type at all
/// (an `ArrayBuffer` or an untyped `Blob`), to any address without asking
/// first. Any other type (`application/json`, `application/x-ndjson`,
/// `application/gzip`, `application/octet-stream`, …) makes the browser
/// ask (a CORS preflight), which this service never grants.
pub fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), AccessError> {
    if method != Method::POST {
        return Ok(());
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Err(AccessError::UnsupportedMediaType(
            "a POST needs a Content-Type (application/json, application/x-ndjson, application/gzip, ...): a web page can send a body without one".into(),
        ));
    };
    let essence = ct
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty()
        || matches!(
            essence.as_str(),
            "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
        )
    {
        return Err(AccessError::UnsupportedMediaType(format!(
            "Content-Type {essence:?} is refused: a web page can post it to any address; send application/json (or application/x-ndjson, application/gzip)"
        )));
    }
    Ok(())
}

/// The credential a request carries: `Authorization: Bearer <x>` or
/// `X-Api-Key: <x>` (`None`: neither header).
pub(crate) fn credential(headers: &HeaderMap) -> Result<Option<&str>, AccessError> {
    let bearer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or("").trim();
            let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
            if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
                return Err(AccessError::Unauthenticated(
                    "the Authorization header must be \"Bearer <API key>\"".into(),
                ));
            }
            Some(rest.trim())
        }
    };
    let key = headers
        .get("x-api-key")
        .map(|v| v.to_str().unwrap_or("").trim());
    match (bearer, key) {
        (Some(a), Some(b)) if a != b => Err(AccessError::Unauthenticated(
            "Authorization and X-Api-Key carry different credentials; send one".into(),
        )),
        (Some(""), _) | (_, Some("")) => Err(AccessError::Unauthenticated(
            "the credential is empty".into(),
        )),
        (a, b) => Ok(a.or(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_matched_without_their_port() {
        let h = AllowedHosts::new(
            Some("10.1.2.3:8080".parse().unwrap()),
            &["ipwho.example.org".into()],
        );
        for ok in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "10.1.2.3",
            "IPWHO.example.org.",
            "ipwho.example.org:443",
        ] {
            assert!(h.check(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.1.2.4:8080",
            "localhost.evil.example",
        ] {
            assert!(
                matches!(
                    h.check(Some(bad)),
                    Err(AccessError::Host { missing: false, .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            h.check(None),
            Err(AccessError::Host { missing: true, .. })
        ));
        assert!(
            AllowedHosts::new(None, &["*".into()])
                .check(Some("any.where"))
                .is_ok()
        );
    }

    #[test]
    fn simple_posts_are_refused() {
        let post = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            }
            check_content_type(&Method::POST, &h)
        };
        assert!(post(Some("application/json")).is_ok());
        assert!(post(Some("application/x-ndjson")).is_ok());
        assert!(post(Some("application/gzip")).is_ok());
        for bad in [
            None,
            Some("text/plain;charset=UTF-8"),
            Some("Application/X-WWW-Form-Urlencoded"),
            Some("multipart/form-data; boundary=x"),
        ] {
            assert!(
                matches!(post(bad), Err(AccessError::UnsupportedMediaType(_))),
                "{bad:?}"
            );
        }
        assert!(check_content_type(&Method::GET, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn credentials_come_from_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), Ok(None));
        h.insert(header::AUTHORIZATION, "Bearer ipwho_x".parse().unwrap());
        assert_eq!(credential(&h), Ok(Some("ipwho_x")));
        h.insert("x-api-key", "ipwho_y".parse().unwrap());
        assert!(credential(&h).is_err());
        h.remove(header::AUTHORIZATION);
        assert_eq!(credential(&h), Ok(Some("ipwho_y")));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(credential(&h).is_err());
    }
}
