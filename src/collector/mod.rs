//! Built-in collector: lists NICs from Azure Resource Manager, one snapshot
//! per subscription, once (`ipwho collect`) or on a schedule (`ipwho serve
//! --collect-every-minutes`).
//!
//! For each subscription it lists every NIC
//! (`/subscriptions/{sub}/providers/Microsoft.Network/networkInterfaces`,
//! following `nextLink` to the last page), the scale sets
//! (`.../providers/Microsoft.Compute/virtualMachineScaleSets`, paged), and the
//! NICs of each Uniform scale set
//! (`.../virtualMachineScaleSets/{vmss}/networkInterfaces`, api-version
//! 2018-10-01), which the subscription-wide list does not return. Pages are
//! ingested into one snapshot as they arrive, so memory stays bounded by a
//! few pages.
//!
//! It lists the subscription's VNets too
//! (`/subscriptions/{sub}/providers/Microsoft.Network/virtualNetworks`,
//! paged, with the same retries), and stores them as a topology listing at
//! the snapshot's `taken_at`: their address spaces and peerings tell
//! enrichment where a flow can have gone. A VNet list that fails is
//! reported (in the log, the report, and as the listing's partial reason in
//! `/v1/status`); it never makes the NIC snapshot partial, and the VNets it
//! did fetch are stored.
//!
//! **Complete only when every page of every list came back.** 429 and
//! transient 5xx answers are retried with backoff (bounded attempts,
//! `Retry-After` honoured up to a ceiling); a list that still fails leaves
//! the snapshot partial with the reason in `snapshots.partial_reason`, so it
//! ends no claim. A NIC record that cannot be parsed also makes it partial
//! (the store's rule), and so does a scale set deleted between the
//! scale-set list and its NIC list (that 404 counts as a failed list: it
//! cannot be told from a list the collector may not read). A collector that
//! dies mid-way leaves an unfinished snapshot, which the next run for that
//! subscription closes as partial. One collector per subscription runs at a
//! time across replicas (a Postgres session lock).
//!
//! The snapshot's `taken_at` is the instant the listing began. Listing is not
//! a consistent read: a NIC deleted while the listing runs, before its page
//! was fetched, is recorded absent from `taken_at`, a few minutes early;
//! the report's `duration_seconds` is that window.
//!
//! **HTTP client.** The calls are made with `reqwest` (rustls) and each NIC
//! goes through [`crate::azure::nic::parse_nic`], which reads it with
//! `azure_mgmt_network`'s `NetworkInterface` model. `azure_mgmt_network`'s
//! own `Client` and `network_interfaces().list_all(..).into_stream()` pager
//! were not used for the requests because: the pager yields typed pages
//! only, so one NIC the model cannot read fails its whole page, where
//! `parse_nic` on the raw JSON rejects just that NIC and names the field;
//! its retry policy waits however long `Retry-After` asks (the hook that sees
//! the header cannot end the retries); it exposes no count of requests nor a
//! shared rate limit; it follows a `nextLink` to any host with the bearer
//! token; and the scale-set list is a Microsoft.Compute call it does not
//! have. The credential chain is small and written here ([`auth`]) rather
//! than taken from `azure_identity`, so that every host (authority, IMDS,
//! App Service) is a plain value and no OpenSSL is linked.
//!
//! **Request rate.** Requests go through one token bucket
//! (`--requests-per-second`, default 3, `--burst` 10) and at most
//! `--concurrency` scale-set lists run at once. The default stays under
//! Resource Manager's published read limits as this module assumes them:
//! the token bucket (250 reads at once, refilled at 25 per second, per
//! subscription and principal), the older hourly limit still documented for
//! some clouds (12,000 reads per hour per subscription and principal, i.e.
//! 3.3 per second), and Microsoft.Network's own (10,000 reads per 5 minutes
//! per subscription and region). Each report carries the lowest
//! `x-ms-ratelimit-remaining-subscription-reads` seen.

pub mod arm;
pub mod auth;
mod collect;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

pub use arm::RetryPolicy;
pub use auth::{Credential, CredentialSource, ManagedIdentityEndpoint, Secret};
pub use collect::{
    NIC_API_VERSION, SNAPSHOT_PREFIX, VMSS_API_VERSION, VMSS_NIC_API_VERSION, VNET_API_VERSION,
    normalize_subscription,
};

use crate::index::Index;

/// Which credential the collector uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CredentialChoice {
    /// The first that works: service principal (when its variables are set),
    /// managed identity, Azure CLI.
    Auto,
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    ServicePrincipal,
    /// IMDS, or App Service's `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`;
    /// `AZURE_CLIENT_ID` selects a user-assigned identity.
    ManagedIdentity,
    /// `az account get-access-token`.
    AzureCli,
}

/// Command-line options of the collector (`ipwho collect`, and `ipwho
/// serve` for the schedule).
#[derive(Clone, Debug, clap::Args)]
pub struct CollectArgs {
    /// Subscriptions to collect (repeat or comma-separate).
    #[arg(
        long = "subscription",
        value_delimiter = ',',
        env = "IPWHO_COLLECT_SUBSCRIPTIONS"
    )]
    pub subscriptions: Vec<String>,
    /// Resource Manager endpoint (sovereign clouds: e.g. https://management.usgovcloudapi.net).
    #[arg(
        long,
        env = "IPWHO_ARM_ENDPOINT",
        default_value = "https://management.azure.com"
    )]
    pub arm_endpoint: String,
    /// Token audience for Resource Manager, when it differs from the endpoint.
    #[arg(long, env = "IPWHO_ARM_AUDIENCE")]
    pub arm_audience: Option<String>,
    /// Microsoft Entra authority host (service principals).
    #[arg(
        long,
        env = "AZURE_AUTHORITY_HOST",
        default_value = "https://login.microsoftonline.com"
    )]
    pub authority_host: String,
    /// Credential to use.
    #[arg(long, env = "IPWHO_CREDENTIAL", value_enum, default_value_t = CredentialChoice::Auto)]
    pub credential: CredentialChoice,
    /// With `serve`: collect every N minutes (0: never).
    #[arg(long, env = "IPWHO_COLLECT_EVERY_MINUTES", default_value_t = 15)]
    pub collect_every_minutes: u64,
    /// Attempts per request, the first included.
    #[arg(long, env = "IPWHO_COLLECT_MAX_ATTEMPTS", default_value_t = 6)]
    pub max_attempts: u32,
    /// First retry backoff, in milliseconds (doubled per attempt).
    #[arg(long, env = "IPWHO_COLLECT_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Longest backoff between attempts, in seconds.
    #[arg(long, env = "IPWHO_COLLECT_RETRY_MAX_SECS", default_value_t = 60)]
    pub retry_max_secs: u64,
    /// Longest Retry-After honoured, in seconds; a longer one fails the list (partial snapshot).
    #[arg(
        long,
        env = "IPWHO_COLLECT_MAX_RETRY_AFTER_SECS",
        default_value_t = 300
    )]
    pub max_retry_after_secs: u64,
    /// Average Resource Manager requests per second (0: unlimited).
    #[arg(long, env = "IPWHO_COLLECT_REQUESTS_PER_SECOND", default_value_t = 3.0)]
    pub requests_per_second: f64,
    /// Requests allowed at once above the average.
    #[arg(long, env = "IPWHO_COLLECT_BURST", default_value_t = 10)]
    pub burst: u32,
    /// Scale-set NIC lists fetched at once.
    #[arg(long, env = "IPWHO_COLLECT_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// Timeout of one request, in seconds.
    #[arg(
        id = "collect_request_timeout_secs",
        long = "collect-request-timeout-secs",
        env = "IPWHO_COLLECT_REQUEST_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub request_timeout_secs: u64,
}

/// Everything the collector needs, as values (tests build one directly;
/// the CLI uses [`CollectorConfig::from_env`]).
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Lower-cased subscription ids.
    pub subscriptions: Vec<String>,
    /// E.g. `https://management.azure.com`.
    pub arm_endpoint: String,
    pub credential: Credential,
    pub retry: RetryPolicy,
    /// Average requests per second (0: unlimited).
    pub requests_per_second: f64,
    pub burst: u32,
    /// Scale-set NIC lists fetched at once.
    pub concurrency: usize,
    pub request_timeout: Duration,
    /// Largest response body accepted.
    pub max_page_bytes: usize,
    /// Schedule period for [`run_schedule`] (zero: never).
    pub every: Duration,
}

impl CollectorConfig {
    /// A configuration with the defaults of [`CollectArgs`].
    pub fn new(subscriptions: &[&str], arm_endpoint: &str, credential: Credential) -> Self {
        CollectorConfig {
            subscriptions: subscriptions
                .iter()
                .map(|s| normalize_subscription(s))
                .collect(),
            arm_endpoint: arm_endpoint.trim_end_matches('/').to_string(),
            credential,
            retry: RetryPolicy::default(),
            requests_per_second: 3.0,
            burst: 10,
            concurrency: 4,
            request_timeout: Duration::from_secs(60),
            max_page_bytes: 256 * 1024 * 1024,
            every: Duration::from_secs(15 * 60),
        }
    }

    /// The configuration `args` describe, with the credential taken from the
    /// environment the way Azure tools take it: `AZURE_TENANT_ID`,
    /// `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET` for a service principal;
    /// `IDENTITY_ENDPOINT` + `IDENTITY_HEADER` (App Service) or IMDS for a
    /// managed identity (`AZURE_CLIENT_ID` picks a user-assigned one);
    /// otherwise the Azure CLI's login (`IPWHO_AZ_PATH` overrides `az`).
    pub fn from_env(args: &CollectArgs) -> anyhow::Result<Self> {
        let env = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let audience = args
            .arm_audience
            .clone()
            .unwrap_or_else(|| args.arm_endpoint.clone());
        let sp = match (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            (Some(tenant_id), Some(client_id), Some(secret)) => {
                Some(CredentialSource::ServicePrincipal {
                    authority_host: args.authority_host.clone(),
                    tenant_id,
                    client_id,
                    client_secret: Secret::new(secret),
                })
            }
            _ => None,
        };
        let mi = CredentialSource::ManagedIdentity {
            endpoint: match (env("IDENTITY_ENDPOINT"), env("IDENTITY_HEADER")) {
                (Some(url), Some(header)) => ManagedIdentityEndpoint::AppService {
                    url,
                    header: Secret::new(header),
                },
                _ => ManagedIdentityEndpoint::Imds {
                    url: auth::IMDS_TOKEN_ENDPOINT.to_string(),
                },
            },
            client_id: env("AZURE_CLIENT_ID"),
        };
        let cli = CredentialSource::AzureCli {
            program: PathBuf::from(env("IPWHO_AZ_PATH").unwrap_or_else(|| "az".into())),
            tenant_id: env("AZURE_TENANT_ID"),
        };
        let source = match args.credential {
            CredentialChoice::Auto => CredentialSource::Chain(sp.into_iter().chain([mi, cli]).collect()),
            CredentialChoice::ServicePrincipal => sp.ok_or_else(|| {
                anyhow::anyhow!("--credential service-principal needs AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET")
            })?,
            CredentialChoice::ManagedIdentity => mi,
            CredentialChoice::AzureCli => cli,
        };
        let timeout = Duration::from_secs(args.request_timeout_secs.max(1));
        let credential = Credential::new(source, &audience, timeout)?;
        let subs: Vec<&str> = args.subscriptions.iter().map(String::as_str).collect();
        let mut cfg = CollectorConfig::new(&subs, &args.arm_endpoint, credential);
        cfg.subscriptions.retain(|s| !s.is_empty());
        cfg.retry = RetryPolicy {
            max_attempts: args.max_attempts.max(1),
            base_delay: Duration::from_millis(args.retry_base_ms),
            max_delay: Duration::from_secs(args.retry_max_secs),
            max_retry_after: Duration::from_secs(args.max_retry_after_secs),
        };
        cfg.requests_per_second = args.requests_per_second.max(0.0);
        cfg.burst = args.burst.max(1);
        cfg.concurrency = args.concurrency.max(1);
        cfg.request_timeout = timeout;
        cfg.every = Duration::from_secs(args.collect_every_minutes.saturating_mul(60));
        Ok(cfg)
    }
}

/// What collecting one subscription did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CollectReport {
    pub subscription: String,
    pub snapshot_id: Option<String>,
    /// When the listing began (the snapshot's `taken_at`).
    pub taken_at: Option<DateTime<Utc>>,
    /// The snapshot holds every NIC of the subscription.
    pub complete: bool,
    /// Why not, when not.
    pub partial_reason: Option<String>,
    /// List pages fetched (NIC lists, scale-set lists).
    pub pages: usize,
    /// NIC records received (scale-set NICs included).
    pub nics: usize,
    /// Of those, from scale-set NIC lists.
    pub scale_set_nics: usize,
    /// Uniform scale sets whose NICs were listed.
    pub scale_sets: usize,
    /// NICs stored as evidence.
    pub accepted: usize,
    /// Of those, NICs whose stored evidence changed.
    pub changed: usize,
    /// NIC records that could not be used (the snapshot is then partial).
    pub rejected: usize,
    /// A few of them, with the field and why.
    pub rejected_examples: Vec<String>,
    /// NICs of the subscription this complete snapshot did not list.
    pub absent_nics_affected: usize,
    pub claims_inserted: usize,
    pub claims_updated: usize,
    pub claims_deleted: usize,
    /// Resource Manager requests, retries included.
    pub requests: u64,
    pub retries: u64,
    /// Answers 429.
    pub throttled: u64,
    /// Token requests made (0 when a cached token served).
    pub token_requests: u64,
    /// Lowest `x-ms-ratelimit-remaining-subscription-reads` seen.
    pub min_remaining_reads: Option<u64>,
    pub duration_seconds: f64,
    /// Not collected, and why (another replica holds it).
    pub skipped: Option<String>,
    /// The collection stopped on a database error.
    pub error: Option<String>,
    /// The VNet listing, stored at the snapshot's `taken_at`.
    pub topology: TopologyReport,
}

/// What listing one subscription's VNets did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TopologyReport {
    /// VNet list pages fetched.
    pub pages: usize,
    /// VNet records received.
    pub vnets: usize,
    /// VNets whose stored evidence changed.
    pub stored: usize,
    /// VNets listed as they were already stored.
    pub unchanged: usize,
    /// VNet records that could not be used.
    pub rejected: usize,
    /// A few of them, with the field and why.
    pub rejected_examples: Vec<String>,
    /// Why the listing may lack VNets (a page that never came back, a
    /// record that could not be read); stored with the listing.
    pub partial_reason: Option<String>,
    /// The listing could not be stored (a database error).
    pub error: Option<String>,
}

impl CollectReport {
    fn new(sub: &str) -> Self {
        CollectReport {
            subscription: sub.to_string(),
            ..Default::default()
        }
    }
}

/// Collects every configured subscription once, one after another. Never
/// fails for Resource Manager's sake (that makes a report partial); `Err`
/// only when the configuration is unusable.
pub async fn collect_once(
    pool: &PgPool,
    index: &Index,
    cfg: &CollectorConfig,
) -> anyhow::Result<Vec<CollectReport>> {
    let limiter = arm::RateLimiter::new(cfg.requests_per_second, cfg.burst);
    let arm = arm::Arm::new(
        &cfg.arm_endpoint,
        cfg.credential.clone(),
        cfg.retry.clone(),
        limiter,
        cfg.request_timeout,
        cfg.max_page_bytes,
    )?;
    let mut subs: Vec<String> = cfg
        .subscriptions
        .iter()
        .map(|s| normalize_subscription(s))
        .collect();
    subs.retain(|s| !s.is_empty());
    subs.dedup();
    if subs.is_empty() {
        anyhow::bail!("no subscription to collect (--subscription / IPWHO_COLLECT_SUBSCRIPTIONS)");
    }
    let mut reports = Vec::with_capacity(subs.len());
    for sub in &subs {
        tracing::info!(subscription = %sub, "collecting");
        let r = collect::collect_subscription(pool, index, &arm, cfg, sub).await;
        log_report(&r);
        reports.push(r);
    }
    Ok(reports)
}

fn log_report(r: &CollectReport) {
    if r.skipped.is_none() && r.error.is_none() {
        let t = &r.topology;
        if let Some(e) = &t.error {
            tracing::error!(subscription = %r.subscription, error = %e, "the VNet listing could not be stored");
        } else if let Some(why) = &t.partial_reason {
            tracing::warn!(
                subscription = %r.subscription,
                pages = t.pages,
                vnets = t.vnets,
                reason = %why,
                "listed the VNets partially"
            );
        } else {
            tracing::info!(subscription = %r.subscription, pages = t.pages, vnets = t.vnets, "listed the VNets");
        }
    }
    if let Some(why) = &r.skipped {
        tracing::info!(subscription = %r.subscription, reason = %why, "collection skipped");
    } else if let Some(e) = &r.error {
        tracing::error!(subscription = %r.subscription, error = %e, "collection failed");
    } else if r.complete {
        tracing::info!(
            subscription = %r.subscription,
            snapshot = r.snapshot_id.as_deref().unwrap_or(""),
            pages = r.pages,
            nics = r.nics,
            scale_sets = r.scale_sets,
            requests = r.requests,
            seconds = r.duration_seconds,
            "collected a complete snapshot"
        );
    } else {
        tracing::warn!(
            subscription = %r.subscription,
            snapshot = r.snapshot_id.as_deref().unwrap_or(""),
            pages = r.pages,
            nics = r.nics,
            requests = r.requests,
            reason = r.partial_reason.as_deref().unwrap_or(""),
            "collected a partial snapshot"
        );
    }
}

/// Collects every `cfg.every` until `shutdown` turns true (or its sender is
/// dropped). A collection under way when shutdown comes is abandoned; its
/// unfinished snapshot is closed as partial by the next run.
pub async fn run_schedule(
    pool: PgPool,
    index: Arc<Index>,
    cfg: CollectorConfig,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    if cfg.subscriptions.is_empty() || cfg.every.is_zero() {
        tracing::info!("collector not scheduled (no subscriptions, or every 0 minutes)");
        return;
    }
    if *shutdown.borrow() {
        return;
    }
    tracing::info!(
        subscriptions = cfg.subscriptions.len(),
        every_minutes = cfg.every.as_secs_f64() / 60.0,
        "collector scheduled"
    );
    let mut tick = tokio::time::interval(cfg.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            r = collect_once(&pool, &index, &cfg) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "collector run failed");
                }
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    tracing::info!("collector stopped");
}

/// Resolves once shutdown is asked for (or can no longer be asked for).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
