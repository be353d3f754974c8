//! The access layer of every route: the `Host` header, the content type of
//! POSTs, then the credential and the scope the route needs (from
//! [`ROUTE_SCOPES`], which the OpenAPI document also declares), leaving the
//! [`Caller`] in the request's extensions for the handlers.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder, SecurityRequirement};

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::access::{AccessError, Caller, Scope, check_content_type};

/// The scope each operation needs (method, path as routed).
pub const ROUTE_SCOPES: &[(&str, &str, Scope)] = &[
    ("GET", "/v1/ips/{ip}/owner", Scope::Lookup),
    ("GET", "/v1/ips/{ip}/history", Scope::Lookup),
    ("POST", "/v1/lookups", Scope::Lookup),
    ("GET", "/v1/nics/{id}/history", Scope::Lookup),
    ("GET", "/v1/vms/{id}/ips", Scope::Lookup),
    ("GET", "/v1/status", Scope::Lookup),
    ("GET", "/v1/conflicts", Scope::Lookup),
    ("GET", "/v1/topology", Scope::Lookup),
    ("POST", "/v1/enrich", Scope::Enrich),
    ("POST", "/v1/snapshots", Scope::Ingest),
    ("POST", "/v1/snapshots/{id}/done", Scope::Ingest),
    ("POST", "/v1/activity", Scope::Ingest),
    ("POST", "/v1/topology", Scope::Ingest),
];

/// Paths open to anyone: health, readiness and the API documents.
pub fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/openapi.json")
        || path == "/docs"
        || path.starts_with("/docs/")
}

/// The scope a request needs: its route's, or for ids routed by the
/// fallback (NIC and VM ids with their slashes) the lookups'; `None` for
/// anything else (a credential is still needed).
fn scope_of(method: &str, matched: Option<&str>, path: &str) -> Option<Scope> {
    let find = |p: &str| {
        ROUTE_SCOPES
            .iter()
            .find(|(m, rp, _)| *m == method && *rp == p)
            .map(|(_, _, s)| *s)
    };
    match matched {
        Some(p) => find(p),
        None if method == "GET"
            && (path.starts_with("/v1/nics/") || path.starts_with("/v1/vms/")) =>
        {
            Some(Scope::Lookup)
        }
        None => None,
    }
}

/// The middleware (see the module doc).
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let health = matches!(path.as_str(), "/healthz" | "/readyz");
    let access = &state.access;
    if !health {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        if let Err(e) = access.hosts().check(host) {
            return refused(e);
        }
    }
    if let Err(e) = check_content_type(req.method(), req.headers()) {
        return refused(e);
    }
    if is_open(&path) {
        return next.run(req).await;
    }
    let caller = match access.authenticate(req.headers()).await {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let matched = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    if let Some(scope) = scope_of(req.method().as_str(), matched, &path)
        && let Err(e) = caller.authorize(scope)
    {
        return refused(e);
    }
    req.extensions_mut().insert::<Caller>(caller);
    next.run(req).await
}

/// The problem answered for a refusal, with `WWW-Authenticate` on 401 and 403.
fn refused(e: AccessError) -> Response {
    let challenge = match &e {
        AccessError::NoCredential => Some(r#"Bearer realm="ipwho""#.to_string()),
        AccessError::Unauthenticated(_) => {
            Some(r#"Bearer realm="ipwho", error="invalid_token""#.to_string())
        }
        AccessError::Forbidden { scope, .. } => Some(format!(
            r#"Bearer realm="ipwho", error="insufficient_scope", scope="{scope}""#
        )),
        _ => None,
    };
    let mut r = ApiError::from(e).into_response();
    if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    r
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        let detail = e.to_string();
        match e {
            AccessError::NoCredential | AccessError::Unauthenticated(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated, detail)
            }
            AccessError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, detail)
            }
            AccessError::UnsupportedMediaType(_) => {
                let mut e = ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    ErrorCode::UnsupportedMediaType,
                    detail,
                );
                e.parameter = Some("content-type".into());
                e
            }
            AccessError::Host { missing, .. } => {
                let status = if missing {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::MISDIRECTED_REQUEST
                };
                let mut e = ApiError::new(status, ErrorCode::InvalidHost, detail);
                e.parameter = Some("host".into());
                e
            }
            AccessError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                detail,
            ),
        }
    }
}

/// Declares the credential schemes in `doc`, and on each operation of
/// [`ROUTE_SCOPES`] the scope it needs (either scheme carries any key).
pub fn document(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("ipwho API key")
                .description(Some(
                    "An ipwho API key (`ipwho keys create`) as `Authorization: Bearer <key>`. \
Needed on every route but /healthz, /readyz, /docs and /openapi.json once a key exists \
(or --api-key is given); each operation lists the scope it needs.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "api_key",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "X-Api-Key",
            "The same API key as the `X-Api-Key` header.",
        ))),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in [("GET", item.get.as_mut()), ("POST", item.post.as_mut())] {
            let Some(op) = op else { continue };
            let Some(scope) = scope_of(method, Some(path), path) else {
                continue;
            };
            let scopes = [scope.as_str()];
            let mut answers = vec![
                (
                    "401",
                    "No credential, or an unknown, revoked or expired one".to_string(),
                ),
                ("403", format!("The credential lacks the {scope} scope")),
                (
                    "421",
                    "The Host header names no name the service answers to (--allowed-host)"
                        .to_string(),
                ),
            ];
            if method == "POST" {
                answers.push((
                    "415",
                    "No Content-Type, or a form or text/plain one (refused: a web page may send those)"
                        .to_string(),
                ));
            }
            for (code, text) in answers {
                op.responses
                    .responses
                    .entry(code.to_string())
                    .or_insert_with(|| {
                        ResponseBuilder::new()
                            .description(text)
                            .content(
                                "application/problem+json",
                                ContentBuilder::new()
                                    .schema(Some(Ref::from_schema_name("Problem")))
                                    .build(),
                            )
                            .into()
                    });
            }
            op.security = Some(vec![
                SecurityRequirement::new("bearer", scopes),
                SecurityRequirement::new("api_key", scopes),
            ]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the document is open or has its scope, and every
    /// scope listed belongs to a routed operation.
    #[test]
    fn every_operation_has_a_scope_or_is_open() {
        let doc = super::super::openapi();
        let mut seen = 0;
        for (path, item) in &doc.paths.paths {
            for (method, op) in [("GET", &item.get), ("POST", &item.post)] {
                let Some(op) = op else { continue };
                if is_open(path) {
                    assert!(op.security.is_none(), "{method} {path} is open");
                    continue;
                }
                assert!(
                    scope_of(method, Some(path), path).is_some(),
                    "{method} {path}"
                );
                assert!(op.security.is_some(), "{method} {path} declares its scope");
                seen += 1;
            }
        }
        assert_eq!(seen, ROUTE_SCOPES.len());
    }
}
