//! Tokens for Resource Manager, obtained the way Azure's own tools obtain
//! them, and cached until shortly before they expire.
//!
//! - **Service principal**: a client-credentials POST to
//!   `{authority}/{tenant}/oauth2/v2.0/token` with scope `{audience}/.default`.
//! - **Managed identity**: the Instance Metadata Service
//!   (`http://169.254.169.254/metadata/identity/oauth2/token`, header
//!   `Metadata: true`) or, on App Service and Functions, `IDENTITY_ENDPOINT`
//!   with the `X-IDENTITY-HEADER` header.
//! - **Azure CLI**: `az account get-access-token --resource {audience}` run as
//!   a subprocess, for a person at a terminal.
//! - **Chain**: the first of several that yields a token, remembered for later
//!   refreshes (what `from_env` builds when no single source is forced).
//!
//! Every host is a value, so sovereign clouds and tests point them elsewhere.
//! Secrets (the client secret, the App Service identity header, and every
//! token) are held in [`Secret`], whose `Debug` is redacted and which has no
//! `Display`; error messages are built from the token endpoint's `error` and
//! `error_description` fields only, and scrubbed of the secrets this
//! credential holds before they leave this module.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

/// The public cloud's Instance Metadata Service token endpoint.
pub const IMDS_TOKEN_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// A secret string: its `Debug` says `[redacted]`, it has no `Display`, and
/// it is read only through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(Arc::from(s.into()))
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Why no token could be had. `transient` errors (network, 429, 5xx from
/// the token endpoint) are worth retrying; the rest are configuration.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    pub message: String,
    pub transient: bool,
    /// The endpoint could not be reached at all (in a chain: that source is
    /// not available here, e.g. IMDS off Azure).
    pub unreachable: bool,
}

impl AuthError {
    fn permanent(message: impl Into<String>) -> Self {
        AuthError {
            message: message.into(),
            transient: false,
            unreachable: false,
        }
    }

    fn unreachable(message: impl Into<String>) -> Self {
        AuthError {
            message: message.into(),
            transient: true,
            unreachable: true,
        }
    }
}

/// Where a managed identity's tokens come from.
#[derive(Clone, Debug)]
pub enum ManagedIdentityEndpoint {
    /// The Instance Metadata Service (VMs, scale sets, AKS nodes).
    Imds { url: String },
    /// App Service / Functions: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`.
    AppService { url: String, header: Secret },
}

/// One way to get a token.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    ServicePrincipal {
        /// E.g. `https://login.microsoftonline.com`.
        authority_host: String,
        tenant_id: String,
        client_id: String,
        client_secret: Secret,
    },
    ManagedIdentity {
        endpoint: ManagedIdentityEndpoint,
        /// A user-assigned identity's client id; `None` for system-assigned.
        client_id: Option<String>,
    },
    AzureCli {
        /// The `az` executable.
        program: PathBuf,
        /// Passed as `--tenant` when set.
        tenant_id: Option<String>,
    },
    /// The first source that yields a token.
    Chain(Vec<CredentialSource>),
}

impl CredentialSource {
    fn label(&self) -> &'static str {
        match self {
            CredentialSource::ServicePrincipal { .. } => "service principal",
            CredentialSource::ManagedIdentity {
                endpoint: ManagedIdentityEndpoint::Imds { .. },
                ..
            } => "managed identity (IMDS)",
            CredentialSource::ManagedIdentity {
                endpoint: ManagedIdentityEndpoint::AppService { .. },
                ..
            } => "managed identity (App Service)",
            CredentialSource::AzureCli { .. } => "Azure CLI",
            CredentialSource::Chain(_) => "credential chain",
        }
    }

    fn secrets(&self, out: &mut Vec<Secret>) {
        match self {
            CredentialSource::ServicePrincipal { client_secret, .. } => {
                out.push(client_secret.clone())
            }
            CredentialSource::ManagedIdentity {
                endpoint: ManagedIdentityEndpoint::AppService { header, .. },
                ..
            } => out.push(header.clone()),
            CredentialSource::Chain(v) => v.iter().for_each(|s| s.secrets(out)),
            _ => {}
        }
    }
}

/// A token and when to stop using it.
struct Cached {
    token: Secret,
    refresh_at: Instant,
}

struct Inner {
    source: CredentialSource,
    /// The token's audience: `{audience}/.default` for service principals,
    /// `resource={audience}` for managed identity and the CLI.
    audience: String,
    http: reqwest::Client,
    /// For IMDS: gives up connecting after a second, since off Azure the
    /// address does not answer and a chain should move on.
    probe_http: reqwest::Client,
    cache: Mutex<Option<Cached>>,
    /// For a chain: the source that worked last.
    chosen: std::sync::Mutex<Option<usize>>,
    /// Strings scrubbed from every error message.
    secrets: Vec<Secret>,
    /// Token requests made (HTTP or subprocess), for reports.
    requests: std::sync::atomic::AtomicU64,
}

/// A source of Resource Manager tokens with a cache. Clones share the cache,
/// so a collector running on a schedule reuses a token until it nears
/// expiry.
#[derive(Clone)]
pub struct Credential(Arc<Inner>);

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("source", &self.0.source)
            .field("audience", &self.0.audience)
            .finish_non_exhaustive()
    }
}

/// Tokens are renewed this long before they expire (or at half their
/// lifetime when that is shorter).
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl Credential {
    /// A credential for tokens whose audience is `audience` (the Resource
    /// Manager endpoint, e.g. `https://management.azure.com`).
    pub fn new(
        source: CredentialSource,
        audience: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5).min(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let probe_http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(1).min(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let mut secrets = Vec::new();
        source.secrets(&mut secrets);
        secrets.retain(|s| !s.expose().is_empty());
        Ok(Credential(Arc::new(Inner {
            source,
            audience: audience.trim_end_matches('/').to_string(),
            http,
            probe_http,
            cache: Mutex::new(None),
            chosen: std::sync::Mutex::new(None),
            secrets,
            requests: Default::default(),
        })))
    }

    /// How many token requests this credential has made.
    pub fn requests(&self) -> u64 {
        self.0.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Which source is in use (for a chain: the one that worked).
    pub fn describe(&self) -> String {
        match &self.0.source {
            CredentialSource::Chain(v) => match *self.0.chosen.lock().expect("lock") {
                Some(i) => v[i].label().to_string(),
                None => "credential chain (none used yet)".to_string(),
            },
            s => s.label().to_string(),
        }
    }

    /// A token valid for a while yet: the cached one, or a fresh one.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut cache = self.0.cache.lock().await;
        if let Some(c) = cache.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await.map_err(|e| AuthError {
            message: self.scrub(&e.message),
            ..e
        })?;
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        *cache = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(margin),
        });
        Ok(token)
    }

    /// Drops the cached token (after Resource Manager refused it).
    pub async fn invalidate(&self) {
        *self.0.cache.lock().await = None;
    }

    fn scrub(&self, message: &str) -> String {
        let mut m = message.to_string();
        for s in &self.0.secrets {
            if m.contains(s.expose()) {
                m = m.replace(s.expose(), "[redacted]");
            }
        }
        m
    }

    async fn fetch(&self) -> Result<(Secret, Duration), AuthError> {
        match &self.0.source {
            CredentialSource::Chain(sources) => {
                let chosen = *self.0.chosen.lock().expect("lock");
                if let Some(i) = chosen {
                    return self.fetch_from(&sources[i]).await;
                }
                let mut errors = Vec::new();
                let mut transient = false;
                for (i, s) in sources.iter().enumerate() {
                    match self.fetch_from(s).await {
                        Ok(t) => {
                            tracing::info!(credential = s.label(), "using credential");
                            *self.0.chosen.lock().expect("lock") = Some(i);
                            return Ok(t);
                        }
                        Err(e) => {
                            tracing::debug!(credential = s.label(), error = %self.scrub(&e.message), "credential unavailable");
                            // A source that answered and failed for a passing reason
                            // makes the chain worth another try; one that is not
                            // there at all does not.
                            transient |= e.transient && !e.unreachable;
                            errors.push(format!("{}: {}", s.label(), e.message));
                        }
                    }
                }
                if errors.is_empty() {
                    return Err(AuthError::permanent("no credential configured"));
                }
                Err(AuthError {
                    message: format!("no credential worked ({})", errors.join("; ")),
                    transient,
                    unreachable: false,
                })
            }
            s => self.fetch_from(s).await,
        }
    }

    async fn fetch_from(&self, source: &CredentialSource) -> Result<(Secret, Duration), AuthError> {
        self.0
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match source {
            CredentialSource::ServicePrincipal {
                authority_host,
                tenant_id,
                client_id,
                client_secret,
            } => {
                let url = format!(
                    "{}/{}/oauth2/v2.0/token",
                    authority_host.trim_end_matches('/'),
                    tenant_id
                );
                let scope = format!("{}/.default", self.0.audience);
                let form = [
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose()),
                    ("scope", scope.as_str()),
                ];
                let req = self.0.http.post(&url).form(&form);
                token_response(req, "token endpoint").await
            }
            CredentialSource::ManagedIdentity {
                endpoint,
                client_id,
            } => {
                let resource = format!("{}/", self.0.audience);
                let req = match endpoint {
                    ManagedIdentityEndpoint::Imds { url } => {
                        let mut q = vec![
                            ("api-version", "2018-02-01"),
                            ("resource", resource.as_str()),
                        ];
                        if let Some(c) = client_id {
                            q.push(("client_id", c.as_str()));
                        }
                        self.0
                            .probe_http
                            .get(url)
                            .query(&q)
                            .header("Metadata", "true")
                    }
                    ManagedIdentityEndpoint::AppService { url, header } => {
                        let mut q = vec![
                            ("api-version", "2019-08-01"),
                            ("resource", resource.as_str()),
                        ];
                        if let Some(c) = client_id {
                            q.push(("client_id", c.as_str()));
                        }
                        self.0
                            .http
                            .get(url)
                            .query(&q)
                            .header("X-IDENTITY-HEADER", header.expose())
                    }
                };
                token_response(req, "managed identity endpoint").await
            }
            CredentialSource::AzureCli { program, tenant_id } => {
                cli_token(program, tenant_id.as_deref(), &self.0.audience).await
            }
            CredentialSource::Chain(_) => Err(AuthError::permanent(
                "nested credential chains are not supported",
            )),
        }
    }
}

/// The fields of a token response that ipwho reads. Entra ID gives
/// `expires_in` as a number; managed identity endpoints give `expires_in`
/// and `expires_on` as strings.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    expires_in: Option<serde_json::Value>,
    expires_on: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

fn as_i64(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lifetime(
    expires_in: Option<&serde_json::Value>,
    expires_on: Option<&serde_json::Value>,
) -> Duration {
    if let Some(secs) = expires_in.and_then(as_i64) {
        return Duration::from_secs(secs.max(0) as u64);
    }
    if let Some(on) = expires_on.and_then(as_i64) {
        let now = chrono::Utc::now().timestamp();
        return Duration::from_secs((on - now).max(0) as u64);
    }
    // No expiry given: assume the common hour, renewed early.
    Duration::from_secs(3600)
}

fn one_line(s: &str, max: usize) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}…")
    } else {
        s
    }
}

async fn token_response(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(Secret, Duration), AuthError> {
    let resp = req.send().await.map_err(|e| {
        // Without the URL: a managed identity's carries the client id.
        AuthError::unreachable(format!("{what} unreachable: {}", e.without_url()))
    })?;
    let status = resp.status();
    let body = resp.bytes().await.map_err(|e| AuthError {
        message: format!("{what}: reading the response: {}", e.without_url()),
        transient: true,
        unreachable: false,
    })?;
    let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let detail = match &parsed {
            Some(TokenResponse {
                error: Some(code),
                error_description,
                ..
            }) => format!(
                ": {code}: {}",
                one_line(error_description.as_deref().unwrap_or(""), 300)
            ),
            _ => String::new(),
        };
        let msg = format!("{what} answered HTTP {}{detail}", status.as_u16());
        let transient =
            status.as_u16() == 429 || status.as_u16() == 408 || status.is_server_error();
        return Err(AuthError {
            message: msg,
            transient,
            unreachable: false,
        });
    }
    let Some(t) = parsed else {
        return Err(AuthError::permanent(format!(
            "{what} answered HTTP {} with a body that is not a token response",
            status.as_u16()
        )));
    };
    let Some(token) = t.access_token.filter(|s| !s.is_empty()) else {
        return Err(AuthError::permanent(format!(
            "{what} answered without an access_token"
        )));
    };
    Ok((
        Secret::new(token),
        lifetime(t.expires_in.as_ref(), t.expires_on.as_ref()),
    ))
}

/// `az account get-access-token --resource ... --output json`. Only its
/// stderr ever reaches an error message; its stdout holds the token.
async fn cli_token(
    program: &std::path::Path,
    tenant: Option<&str>,
    audience: &str,
) -> Result<(Secret, Duration), AuthError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args([
        "account",
        "get-access-token",
        "--output",
        "json",
        "--resource",
    ])
    .arg(audience)
    .stdin(std::process::Stdio::null())
    .kill_on_drop(true);
    if let Some(t) = tenant {
        cmd.args(["--tenant", t]);
    }
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| {
            AuthError::permanent("Azure CLI: `az account get-access-token` took longer than 30 s")
        })?
        .map_err(|e| {
            AuthError::permanent(format!("Azure CLI: cannot run {}: {e}", program.display()))
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(AuthError::permanent(format!(
            "Azure CLI: `az account get-access-token` failed ({}): {}",
            out.status,
            one_line(&err, 300)
        )));
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct CliToken {
        access_token: String,
        /// Seconds since the epoch (CLI 2.54 and later).
        #[serde(rename = "expires_on")]
        expires_on_epoch: Option<serde_json::Value>,
        /// Local time, `2024-01-01 12:00:00.000000` (older CLIs).
        expires_on: Option<String>,
    }
    let t: CliToken = serde_json::from_slice(&out.stdout).map_err(|e| {
        AuthError::permanent(format!(
            "Azure CLI: unexpected output of `az account get-access-token`: {e}"
        ))
    })?;
    let life = match (
        t.expires_on_epoch.as_ref().and_then(as_i64),
        t.expires_on.as_deref(),
    ) {
        (Some(on), _) => Duration::from_secs((on - chrono::Utc::now().timestamp()).max(0) as u64),
        (None, Some(local)) => {
            chrono::NaiveDateTime::parse_from_str(local.trim(), "%Y-%m-%d %H:%M:%S%.f")
                .ok()
                .and_then(|n| n.and_local_timezone(chrono::Local).earliest())
                .map(|at| {
                    Duration::from_secs(
                        (at.timestamp() - chrono::Utc::now().timestamp()).max(0) as u64
                    )
                })
                .unwrap_or(Duration::from_secs(300))
        }
        (None, None) => Duration::from_secs(300),
    };
    Ok((Secret::new(t.access_token), life))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug() {
        let s = CredentialSource::ServicePrincipal {
            authority_host: "https://login.example".into(),
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("hunter2-value"),
        };
        let c = Credential::new(s, "https://arm.example/", Duration::from_secs(5)).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2-value"), "{dbg}");
        assert!(dbg.contains("[redacted]"));
        assert_eq!(c.scrub("echo hunter2-value back"), "echo [redacted] back");
        assert_eq!(c.0.audience, "https://arm.example");
    }

    #[test]
    fn lifetimes_from_numbers_strings_and_epochs() {
        use serde_json::json;
        assert_eq!(
            lifetime(Some(&json!(3599)), None),
            Duration::from_secs(3599)
        );
        assert_eq!(
            lifetime(Some(&json!("86399")), None),
            Duration::from_secs(86399)
        );
        let on = chrono::Utc::now().timestamp() + 600;
        let l = lifetime(None, Some(&json!(on.to_string())));
        assert!(
            l <= Duration::from_secs(600) && l >= Duration::from_secs(590),
            "{l:?}"
        );
        assert_eq!(lifetime(None, None), Duration::from_secs(3600));
    }
}
