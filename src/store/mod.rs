//! Postgres: evidence, snapshots, claims and conflicts. Every write goes
//! through one transaction per ingest call, under an advisory lock, so two
//! ingests never interleave their reads and writes of the same NIC.

mod changes;
mod ingest;
pub mod keys;
mod locks;
mod probe;
mod recompute;
pub mod runs;
mod snapshots;
mod states;
pub mod topology;

pub use changes::{changed_nics, claims_by_nic, feed_end, feed_span, feed_state, prune_feed};
pub use locks::{try_lock, unlock};
pub use probe::{claim_count, ping};
pub use snapshots::{abandon_unfinished, note_listing, snapshot_scope};

pub use ingest::{
    ActivityReport, PageReport, SnapshotMeta, SnapshotPage, StoreError, finish_snapshot,
    ingest_activity, ingest_snapshot_page, rebuild_claims_if_lost,
};
pub use recompute::ClaimChanges;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use crate::engine::{Claim, Micros};

/// A JSON document that ipwho wrote as text (a claim's detail, a NIC
/// state: see migration 0004), parsed as it is read.
pub(crate) struct Doc<T>(pub T);

impl<T> sqlx::Type<sqlx::Postgres> for Doc<T> {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl<'r, T: serde::de::DeserializeOwned> sqlx::Decode<'r, sqlx::Postgres> for Doc<T> {
    fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(Doc(serde_json::from_str(text)?))
    }
}

/// The condition that selects the rows of the NICs whose keys are `$1`
/// through the indexes on `hashtextextended(nic_key, 0)` (migration 0008),
/// for a query's text (`concat!`). Two keys may share a hash, so the caller
/// keeps only its own NICs' rows ([`of_wanted`]).
macro_rules! of_nics {
    () => {
        "hashtextextended(nic_key, 0) = ANY(ARRAY(SELECT hashtextextended(k, 0) FROM unnest($1::text[]) AS k))"
    };
}
pub(crate) use of_nics;

/// Keeps the rows whose NIC (`key`) is one of `nics`: what a query by
/// [`of_nics`] returned, without another NIC's that shares a hash with one.
pub(crate) fn of_wanted<T>(rows: &mut Vec<T>, nics: &[String], key: impl Fn(&T) -> &str) {
    let wanted: crate::model::hash::FastSet<&str> = nics.iter().map(String::as_str).collect();
    rows.retain(|r| wanted.contains(key(r)));
}

/// Migrations, embedded at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Creates the database named in `url` if it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let opts = PgConnectOptions::from_str(url)?;
    let Some(name) = opts.get_database().map(str::to_string) else {
        return Ok(());
    };
    let admin = opts.clone().database("postgres");
    let mut conn = admin.connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another process created it in between.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A database opened for reading only ([`connect_existing`]).
pub enum Existing {
    /// It exists and every migration is applied.
    Ready(PgPool),
    /// No database of that name on the server (a mistyped name, mostly).
    Missing { database: String, server: String },
    /// It exists, without every migration applied (not ipwho's, or older).
    NotMigrated { database: String, server: String },
}

/// Connects to `url` for reading only: creates nothing and migrates
/// nothing (a mistyped name must not become an empty database that
/// answers `unknown`), and says when the database is missing or not
/// migrated.
pub async fn connect_existing(url: &str, max_connections: u32) -> anyhow::Result<Existing> {
    let opts = PgConnectOptions::from_str(url)?;
    let database = opts.get_database().unwrap_or("postgres").to_string();
    let server = format!("{}:{}", opts.get_host(), opts.get_port());
    let pool = match pool(url, max_connections).await {
        Ok(p) => p,
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("3D000") => {
            return Ok(Existing::Missing { database, server });
        }
        Err(e) => return Err(e.into()),
    };
    if !migrations_applied(&pool).await? {
        pool.close().await;
        return Ok(Existing::NotMigrated { database, server });
    }
    Ok(Existing::Ready(pool))
}

/// Connects to `url` (creating the database if missing).
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    create_database_if_missing(url).await?;
    Ok(pool(url, max_connections).await?)
}

/// A pool on `url`, as it is.
async fn pool(url: &str, max_connections: u32) -> sqlx::Result<PgPool> {
    // No JIT and no parallel plans: ingest queries are many and short; with
    // row estimates that lag bulk loads, JIT compilation and starting
    // parallel workers cost tens of milliseconds a query. A batch's claims
    // (thousands of rows of 1.5 KB, sent as arrays) are held in memory
    // while they are written: with the stock 4 MB of `work_mem` the update
    // of a batch's claims spilled them to a temporary file first. Ingests
    // are serialised, so one connection at a time uses that much.
    let opts = PgConnectOptions::from_str(url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .options([
            ("jit", "off"),
            ("max_parallel_workers_per_gather", "0"),
            ("work_mem", "32MB"),
        ]);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether every embedded migration has been applied.
pub async fn migrations_applied(pool: &PgPool) -> anyhow::Result<bool> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    Ok(MIGRATOR.iter().all(|m| applied.contains(&m.version)))
}

/// Every claim, read as the index loads them ([`stream_claims`]), in one list
/// (for checks and diagnostics).
pub async fn load_claims(pool: &PgPool) -> anyhow::Result<Vec<Claim>> {
    let mut all = Vec::new();
    stream_claims(pool, LOAD_CHUNK, |chunk| {
        all.extend(chunk);
        std::future::ready(())
    })
    .await?;
    Ok(all)
}

/// Claims per chunk of [`stream_claims`] when loading the index (a few MB
/// of JSON).
pub const LOAD_CHUNK: usize = 4096;

/// Every claim, handed to `each` in chunks of `chunk` (the last one shorter)
/// as they arrive: the rows of one chunk are received while the chunks
/// before it are parsed on blocking threads, so that reading, parsing and
/// whatever `each` does overlap. Returns how many
/// claims there were.
pub async fn stream_claims<F, Fut>(
    pool: &PgPool,
    chunk: usize,
    mut each: F,
) -> anyhow::Result<usize>
where
    F: FnMut(Vec<Claim>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::TryStreamExt;
    /// Chunks being parsed at once.
    const IN_FLIGHT: usize = 2;
    let size = chunk.max(1);
    type Parsing = tokio::task::JoinHandle<anyhow::Result<Vec<Claim>>>;
    fn parse(first: usize, rows: Vec<String>) -> Parsing {
        tokio::task::spawn_blocking(move || {
            rows.iter()
                .enumerate()
                .map(|(i, r)| {
                    serde_json::from_str(r)
                        .map_err(|e| anyhow::anyhow!("claim row {}: {e}", first + i))
                })
                .collect()
        })
    }
    let mut rows = sqlx::query_scalar::<_, String>("SELECT detail::text FROM claims").fetch(pool);
    let mut pending: std::collections::VecDeque<Parsing> = Default::default();
    let mut chunk = Vec::with_capacity(size);
    let mut n = 0;
    loop {
        let row = rows.try_next().await?;
        let end = row.is_none();
        if let Some(r) = row {
            chunk.push(r);
        }
        if chunk.len() == size || (end && !chunk.is_empty()) {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(size));
            let first = n;
            n += full.len();
            pending.push_back(parse(first, full));
        }
        while pending.len() > IN_FLIGHT || (end && !pending.is_empty()) {
            let Some(p) = pending.pop_front() else { break };
            let claims = p.await??;
            each(claims).await;
        }
        if end {
            return Ok(n);
        }
    }
}

/// The claims on `ip` and on the prefixes holding it: what a lookup of `ip`
/// reads, without loading every claim (the command line's `lookup` and
/// `history`). Prefix claims are few; the partial index `claims_prefixes`
/// holds them.
pub async fn claims_of_ip(pool: &PgPool, ip: std::net::IpAddr) -> anyhow::Result<Vec<Claim>> {
    let ip = ipnet::IpNet::from(ip);
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT detail::text FROM claims WHERE ip = $1
         UNION ALL
         SELECT detail::text FROM claims
         WHERE masklen(ip) < CASE WHEN family(ip) = 4 THEN 32 ELSE 128 END AND ip >> $1",
    )
    .bind(ip)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| serde_json::from_str(r).map_err(|e| anyhow::anyhow!("claim of {ip}: {e}")))
        .collect()
}

/// What watched every subscription: its finished complete snapshots and
/// its Activity Log reach, each subscription's freshness bound set by
/// `policy`.
pub async fn load_coverage(
    pool: &PgPool,
    policy: &crate::engine::Freshness,
) -> anyhow::Result<crate::engine::CoverageMap> {
    use crate::engine::{Complete, Coverage};
    let rows: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT sub, taken_at, id FROM snapshots, unnest(subscriptions) AS s(sub)
         WHERE complete AND finished ORDER BY sub, taken_at, id",
    )
    .fetch_all(pool)
    .await?;
    let mut completes: std::collections::HashMap<String, Vec<Complete>> = Default::default();
    for (sub, at, id) in rows {
        completes.entry(sub).or_default().push(Complete {
            at: micros(at),
            id: id.into(),
        });
    }
    let reach: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
        sqlx::query_as("SELECT subscription, first_at, last_at FROM activity_reach")
            .fetch_all(pool)
            .await?;
    let mut reach: std::collections::HashMap<String, (Micros, Micros)> = reach
        .into_iter()
        .map(|(s, a, b)| (s, (micros(a), micros(b))))
        .collect();
    let mut out: crate::engine::CoverageMap = completes
        .into_iter()
        .map(|(sub, c)| {
            let activity = reach.remove(&sub);
            (sub, Coverage::new(c, activity, policy))
        })
        .collect();
    for (sub, r) in reach {
        out.insert(sub, Coverage::new(Vec::new(), Some(r), policy));
    }
    Ok(out)
}

pub use crate::engine::{micros, to_ts};

/// Counts for `/v1/status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SubscriptionStatus {
    pub subscription: String,
    pub nics: i64,
    pub claims: i64,
    pub open_conflicts: i64,
    pub last_complete_snapshot: Option<SnapshotInfo>,
    pub last_partial_snapshot: Option<SnapshotInfo>,
    pub newest_activity_event: Option<DateTime<Utc>>,
    /// How long after its own `time` the newest event was recorded, in seconds.
    pub newest_activity_lag_seconds: Option<f64>,
    /// VNets the latest topology listing of the subscription showed.
    pub vnets: i64,
    /// The latest topology (VNet) listing of the subscription.
    pub last_topology_listing: Option<topology::TopologyListingInfo>,
    /// How long its evidence stays fresh, and whether it is now (from the
    /// in-memory index).
    pub freshness: Option<FreshnessStatus>,
}

/// A subscription's freshness bound: past its latest complete snapshot by
/// more than this, an open claim is `possible`, not `probable`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FreshnessStatus {
    pub bound_seconds: f64,
    /// `configured`, `cadence` (a factor of the median interval between
    /// its latest complete snapshots) or `fallback` (fewer than two).
    #[schema(value_type = String)]
    pub bound_source: Option<crate::engine::BoundSource>,
    /// How old its latest complete snapshot is now.
    pub age_seconds: Option<f64>,
    /// Past the bound: open claims answer `possible` now.
    pub stale: bool,
    /// Finished complete snapshots held.
    pub complete_snapshots: usize,
}

impl FreshnessStatus {
    pub fn of(c: &crate::engine::Coverage, now: Micros) -> Self {
        FreshnessStatus {
            bound_seconds: c.bound as f64 / 1e6,
            bound_source: c.bound_source,
            age_seconds: c.horizon().map(|h| (now - h.at) as f64 / 1e6),
            stale: c.stale_at(now).is_some(),
            complete_snapshots: c.completes.len(),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct SnapshotInfo {
    pub id: String,
    pub taken_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub nics: i32,
    pub finished: bool,
    /// Why the snapshot counts as partial (null when complete, or when the
    /// poster did not claim it complete).
    pub partial_reason: Option<String>,
}

/// Per-subscription coverage and freshness.
pub async fn status(pool: &PgPool) -> anyhow::Result<Vec<SubscriptionStatus>> {
    let subs: Vec<String> = sqlx::query_scalar(
        "SELECT subscription FROM nics UNION SELECT unnest(subscriptions) FROM snapshots
         UNION SELECT unnest(subscriptions) FROM topology_listings ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let mut topology = topology::status_by_subscription(pool).await?;
    let mut out = Vec::with_capacity(subs.len());
    for sub in subs {
        let (nics,): (i64,) = sqlx::query_as("SELECT count(*) FROM nics WHERE subscription = $1")
            .bind(&sub)
            .fetch_one(pool)
            .await?;
        let (claims,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM claims WHERE subscription = $1")
                .bind(&sub)
                .fetch_one(pool)
                .await?;
        let (open_conflicts,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM conflicts c JOIN nics n ON n.nic_key = c.nic_a WHERE n.subscription = $1",
        )
        .bind(&sub)
        .fetch_one(pool)
        .await?;
        let snap = |complete: bool| {
            sqlx::query_as::<_, SnapshotInfo>(
                "SELECT id, taken_at, recorded_at, nics, finished, partial_reason FROM snapshots
                 WHERE $1 = ANY(subscriptions) AND (complete AND finished) = $2
                 ORDER BY taken_at DESC LIMIT 1",
            )
            .bind(sub.clone())
            .bind(complete)
            .fetch_optional(pool)
        };
        let last_complete_snapshot = snap(true).await?;
        let last_partial_snapshot = snap(false).await?;
        let ev: Option<(DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT e.at, e.recorded_at FROM activity_events e JOIN nics n USING (nic_key)
             WHERE n.subscription = $1 ORDER BY e.at DESC LIMIT 1",
        )
        .bind(&sub)
        .fetch_optional(pool)
        .await?;
        let (vnets, last_topology_listing) = match topology.remove(&sub) {
            Some((n, listing)) => (n, Some(listing)),
            None => (0, None),
        };
        out.push(SubscriptionStatus {
            subscription: sub,
            nics,
            claims,
            open_conflicts,
            last_complete_snapshot,
            last_partial_snapshot,
            newest_activity_event: ev.map(|e| e.0),
            newest_activity_lag_seconds: ev
                .map(|(at, rec)| (rec - at).num_milliseconds() as f64 / 1000.0),
            freshness: None,
            vnets,
            last_topology_listing,
        });
    }
    Ok(out)
}

/// Conflicts recorded for a set of NICs (or all, when empty).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct ConflictRow {
    pub scope: String,
    pub ip: String,
    pub nic_a: String,
    pub nic_b: String,
    pub overlap_start: Option<DateTime<Utc>>,
    pub overlap_end: Option<DateTime<Utc>>,
    pub recorded_at: DateTime<Utc>,
}

pub async fn conflicts(pool: &PgPool, limit: i64) -> anyhow::Result<Vec<ConflictRow>> {
    Ok(sqlx::query_as(
        "SELECT scope, host(ip) || '/' || masklen(ip) AS ip, nic_a, nic_b,
                lower(overlap) AS overlap_start, upper(overlap) AS overlap_end, recorded_at
         FROM conflicts ORDER BY recorded_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
