//! Figures for the built-in collector: time and memory to collect and ingest
//! a large subscription from a fake Resource Manager started in-process, into
//! a fresh database `ipwho_bench_collect`. The NICs are the first complete
//! snapshot of the simulator's `bench-snapshot` estate (100,000 NICs in 100
//! ARM list pages of 1,000; `ipwho-sim generate --profile bench-snapshot`),
//! generated into `target/bench-estates/bench-snapshot-<seed>` if missing.
//!
//! ```text
//! cargo build --release --example collect_bench
//! /usr/bin/time -v target/release/examples/collect_bench [--seed 7] [--rps 0] [--runs 2]
//! ```
//!
//! The fake reads each page from disk when asked, so the process's peak
//! memory is the collector's and the store's, not the fixture's. `--rps` is
//! the collector's request-rate limit (0: unlimited, to measure its own
//! speed). The second run re-collects the same, unchanged estate: the
//! steady-state cost of a scheduled collection.

/// The allocator `ipwho serve` runs with (src/bin/ipwho/main.rs), so the server
/// measured here is the one deployed.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::Uri;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use ipwho::collector::{self, CollectorConfig, Credential, CredentialSource, Secret};
use serde_json::{Value, json};
use sqlx::ConnectOptions;

#[derive(Clone)]
struct Fake {
    base: String,
    /// The ARM list pages, in order.
    pages: std::sync::Arc<Vec<std::path::PathBuf>>,
}

async fn token() -> impl IntoResponse {
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": "bench-token"}))
}

async fn arm(State(f): State<Fake>, uri: Uri) -> impl IntoResponse {
    let path = uri.path().to_ascii_lowercase();
    if path.ends_with("/virtualmachinescalesets") {
        return axum::Json(json!({"value": []}));
    }
    let page: usize = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("$skiptoken="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let Some(file) = f.pages.get(page) else {
        return axum::Json(json!({"value": []}));
    };
    let mut body: Value =
        serde_json::from_slice(&std::fs::read(file).expect("page file")).expect("page JSON");
    body["nextLink"] = if page + 1 < f.pages.len() {
        json!(format!(
            "{}{}?api-version=2024-03-01&$skiptoken={}",
            f.base,
            uri.path(),
            page + 1
        ))
    } else {
        Value::Null
    };
    axum::Json(body)
}

/// `VmRSS` and `VmHWM` (peak) of this process, in MiB.
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seed: u64 = arg("--seed", 7);
    let estates: std::path::PathBuf = arg(
        "--estates",
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-estates").into(),
    );
    let rps: f64 = arg("--rps", 0.0);
    let runs: usize = arg("--runs", 2);
    let url: String = arg(
        "--database-url",
        "postgres://postgres@127.0.0.1:5432/ipwho_bench_collect".to_string(),
    );

    // A fresh database.
    let opts: sqlx::postgres::PgConnectOptions = url.parse()?;
    let name = opts
        .get_database()
        .unwrap_or("ipwho_bench_collect")
        .to_string();
    let mut admin = opts.clone().database("postgres").connect().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    let pool = ipwho::store::connect(&url, 4).await?;
    ipwho::store::migrate(&pool).await?;
    let index = ipwho::index::Index::new();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let (dir, _) = ipwho_sim::cached_estate(&estates, "bench-snapshot", seed)?;
    let manifest = ipwho_sim::read_manifest(&dir)?;
    let Some(ipwho_sim::FeedItem::Snapshot { dir: rel, .. }) = manifest.feed.first() else {
        anyhow::bail!("{}: the first delivery is not a snapshot", dir.display());
    };
    let sdir = dir.join(rel);
    let meta: ipwho_sim::write::SnapshotMeta =
        serde_json::from_slice(&std::fs::read(sdir.join("meta.json"))?)?;
    let sub = meta.subscriptions[0].clone();
    let fake = Fake {
        base: base.clone(),
        pages: std::sync::Arc::new(meta.pages.iter().map(|p| sdir.join(p)).collect()),
    };
    let pages = fake.pages.len();
    let app = axum::Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .fallback(get(arm))
        .with_state(fake);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let credential = Credential::new(
        CredentialSource::ServicePrincipal {
            authority_host: base.clone(),
            tenant_id: "bench".into(),
            client_id: "bench".into(),
            client_secret: Secret::new("bench-secret"),
        },
        &base,
        Duration::from_secs(30),
    )?;
    let mut cfg = CollectorConfig::new(&[sub.as_str()], &base, credential);
    cfg.requests_per_second = rps;

    let (rss, _) = memory();
    println!("set up (database, fake server): RSS {rss:.0} MiB");
    println!(
        "collecting the {pages} pages of {}, rate limit {rps} req/s",
        sdir.display()
    );
    for run in 1..=runs {
        let t = Instant::now();
        let reports = collector::collect_once(&pool, &index, &cfg).await?;
        let secs = t.elapsed().as_secs_f64();
        let r = &reports[0];
        println!(
            "run {run}: {secs:.1} s, complete={}, pages={}, nics={}, accepted={}, requests={}, {:.0} NICs/s, {:.1} requests/s, claims in index={}",
            r.complete,
            r.pages,
            r.nics,
            r.accepted,
            r.requests,
            r.nics as f64 / secs,
            r.requests as f64 / secs,
            index.len()
        );
        if !r.complete {
            println!("  partial: {:?} {:?}", r.partial_reason, r.error);
        }
        let (rss, peak) = memory();
        println!("  RSS {rss:.0} MiB, peak {peak:.0} MiB");
    }
    // What the claim index alone costs: load a second copy of it.
    let (before, _) = memory();
    let copy = ipwho::sync::load(&pool, Default::default()).await?;
    let (after, _) = memory();
    println!(
        "a second in-memory index of {} claims adds {:.0} MiB",
        copy.len(),
        after - before
    );
    Ok(())
}
