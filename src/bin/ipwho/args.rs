//! The command line: every command, flag and environment variable of
//! `ipwho`, as clap derives them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipwho::{api, collector};

#[derive(Parser)]
#[command(
    name = "ipwho",
    version,
    about = "Which NIC, and so which VM, owned private IP X at time T?"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) db: DbArgs,
    #[command(flatten)]
    pub(crate) freshness: FreshnessArgs,
    /// Log filter (tracing EnvFilter syntax), e.g. `info,ipwho=debug`.
    #[arg(long, env = "IPWHO_LOG", default_value = "info", global = true)]
    pub(crate) log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "IPWHO_LOG_JSON", global = true)]
    pub(crate) log_json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Args)]
pub(crate) struct DbArgs {
    /// Postgres URL. `serve`, `migrate`, `ingest`, `collect` and `demo` create the database if
    /// missing and migrate it; `lookup`, `history`, `status` and `enrich` only read, and fail
    /// when it is missing or not migrated.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/ipwho",
        global = true
    )]
    pub(crate) database_url: String,
}

/// When evidence is stale: past a subscription's latest complete snapshot
/// by more than its freshness bound, an open claim is `possible`, not
/// `probable`.
#[derive(Args)]
pub(crate) struct FreshnessArgs {
    /// One freshness bound for every subscription, in minutes (default: from
    /// each subscription's cadence of complete snapshots).
    #[arg(long, env = "IPWHO_FRESHNESS_MINUTES", global = true)]
    pub(crate) freshness_minutes: Option<f64>,
    /// The bound is this many times the median interval between a
    /// subscription's latest complete snapshots.
    #[arg(
        long,
        env = "IPWHO_FRESHNESS_FACTOR",
        default_value_t = 1.5,
        global = true
    )]
    pub(crate) freshness_factor: f64,
    /// The bound of a subscription with fewer than two complete snapshots, in minutes.
    #[arg(
        long,
        env = "IPWHO_FRESHNESS_FALLBACK_MINUTES",
        default_value_t = 60.0,
        global = true
    )]
    pub(crate) freshness_fallback_minutes: f64,
}

impl FreshnessArgs {
    pub(crate) fn policy(&self) -> anyhow::Result<ipwho::engine::Freshness> {
        let minutes = |m: f64, flag: &str| -> anyhow::Result<i64> {
            anyhow::ensure!(
                m.is_finite() && m > 0.0,
                "--{flag} must be a positive number of minutes"
            );
            Ok((m * ipwho::engine::MINUTE as f64) as i64)
        };
        anyhow::ensure!(
            self.freshness_factor.is_finite() && self.freshness_factor >= 1.0,
            "--freshness-factor must be at least 1"
        );
        Ok(ipwho::engine::Freshness {
            fixed: self
                .freshness_minutes
                .map(|m| minutes(m, "freshness-minutes"))
                .transpose()?,
            factor: self.freshness_factor,
            fallback: minutes(
                self.freshness_fallback_minutes,
                "freshness-fallback-minutes",
            )?,
            ..Default::default()
        })
    }
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve the HTTP API (applies pending migrations first).
    Serve(ServeArgs),
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Ingest evidence from files.
    #[command(subcommand)]
    Ingest(IngestCommand),
    /// API keys: create, list, revoke.
    #[command(subcommand)]
    Keys(ipwho::access::cli::KeysCommand),
    /// Who owned IP at a time.
    Lookup {
        ip: String,
        /// RFC 3339 time; default now.
        #[arg(long)]
        at: Option<String>,
        /// Narrow to one VNet (ARM id).
        #[arg(long)]
        vnet: Option<String>,
        /// Narrow to one subscription.
        #[arg(long)]
        subscription: Option<String>,
        /// Print the JSON answer instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Every claim on an IP, oldest first.
    History {
        ip: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Coverage and freshness per subscription.
    Status,
    /// Take one complete snapshot of each subscription from Azure Resource Manager and ingest it.
    Collect(collector::CollectArgs),
    /// Load a small realistic estate with churn, to query at once.
    Demo,
    /// Print the OpenAPI document (the one committed as openapi/openapi.json).
    Openapi,
    /// Enrich flow-log files (or standard input) into NDJSON, one line per tuple.
    Enrich {
        /// NSG or VNet flow-log blobs, JSON Lines, or flat tuples; gzip or plain; a directory: every file below it. None: standard input.
        files: Vec<PathBuf>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// `nsg`, `vnet` or `flat`; default: detected per record.
        #[arg(long)]
        format: Option<String>,
        /// Parse and write without attribution.
        #[arg(long)]
        floor: bool,
    },
}

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IPWHO_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Largest request body (ingest, batch lookups), in bytes; a gzip ingest body counts decompressed.
    #[arg(long, env = "IPWHO_MAX_BODY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub(crate) max_body_bytes: usize,
    /// Most lookups in one POST /v1/lookups.
    #[arg(long, env = "IPWHO_MAX_LOOKUPS", default_value_t = 10_000)]
    pub(crate) max_lookups: usize,
    /// Request timeout, in seconds (answered 503 `timeout`; enrichment has its own).
    #[arg(long, env = "IPWHO_REQUEST_TIMEOUT_SECS", default_value_t = 120)]
    pub(crate) request_timeout_secs: u64,
    /// Longest a client may take to send a request's headers, in seconds; the connection is closed after.
    #[arg(long, env = "IPWHO_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    pub(crate) header_read_timeout_secs: u64,
    /// Most bytes one POST /v1/enrich may read (decompressed, when gzip).
    #[arg(long, env = "IPWHO_ENRICH_MAX_BYTES", default_value_t = 1 << 30)]
    pub(crate) enrich_max_bytes: u64,
    /// Longest one POST /v1/enrich may run, in seconds.
    #[arg(long, env = "IPWHO_ENRICH_TIMEOUT_SECS", default_value_t = 300)]
    pub(crate) enrich_timeout_secs: u64,
    /// Most POST /v1/enrich streams at once (503 with Retry-After past them); default: the cores but one, at least one.
    #[arg(long, env = "IPWHO_ENRICH_STREAMS", default_value_t = api::default_enrich_streams())]
    pub(crate) enrich_streams: usize,
    /// Database connections.
    #[arg(long, env = "IPWHO_DB_CONNECTIONS", default_value_t = 8)]
    pub(crate) db_connections: u32,
    /// The built-in collector: with `--subscription`, collect every `--collect-every-minutes`.
    #[command(flatten)]
    pub(crate) collect: collector::CollectArgs,
    /// Who may call (API keys), and the Host names served.
    #[command(flatten)]
    pub(crate) access: ipwho::access::cli::AccessArgs,
}

#[derive(Subcommand)]
pub(crate) enum IngestCommand {
    /// NIC snapshot files: ARM list pages or {"taken_at", "subscriptions", "complete", "value": [...]} documents.
    /// All files given form one snapshot when --snapshot-id is set; otherwise each file is its own.
    Snapshot {
        files: Vec<PathBuf>,
        #[arg(long)]
        taken_at: Option<String>,
        /// Subscriptions covered (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        subscription: Vec<String>,
        #[arg(long)]
        complete: bool,
        #[arg(long)]
        snapshot_id: Option<String>,
    },
    /// Activity Log files: {"records": [...]}, JSON Lines, or a JSON array; a directory: every file below it.
    Activity { files: Vec<PathBuf> },
    /// VNet listings: ARM list pages (or one VNet), Resource Graph results, `az network vnet list` or
    /// `Get-AzVirtualNetwork | ConvertTo-Json -Depth 8` output, or {"taken_at", "subscriptions", "value": [...]}
    /// documents; a directory: every file below it. Files with the same --taken-at form one listing.
    Topology {
        files: Vec<PathBuf>,
        #[arg(long)]
        taken_at: Option<String>,
        /// Subscriptions covered (repeat or comma-separate); default: those of the VNets listed.
        #[arg(long, value_delimiter = ',')]
        subscription: Vec<String>,
    },
}
