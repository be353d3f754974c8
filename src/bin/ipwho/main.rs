//! The `ipwho` command line: serve the API, migrate, ingest files, look up
//! IPs, load a demo estate.

/// mimalloc: ingest and enrichment allocate small objects by the million;
/// glibc malloc spent half their CPU time in its own bookkeeping.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ipwho::api::lookup::{self, ScopeParams};
use ipwho::api::{self, ApiError, AppState, Limits};
use ipwho::ingest::{self, IngestError, SnapshotParams, TopologyParams};
use ipwho::{collector, demo, store, sync};

mod args;

use args::{Cli, Command, IngestCommand, ServeArgs};

fn init_tracing(filter: &str, json: bool) {
    // Postgres's notices ("relation _sqlx_migrations already exists,
    // skipping" on every start) are noise unless asked for by name.
    let filter = if filter.contains("sqlx") {
        filter.to_string()
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_json);
    let url = cli.db.database_url.clone();
    let fresh = cli.freshness.policy()?;
    match cli.command {
        Command::Serve(args) => serve(&url, args, fresh).await,
        Command::Migrate => {
            database(&url, 2).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Ingest(cmd) => ingest(&url, cmd).await,
        Command::Keys(cmd) => {
            let pool = match ipwho::access::cli::needs_database(&cmd) {
                true => Some(database(&url, 2).await?),
                false => None,
            };
            ipwho::access::cli::run_keys(pool.as_ref(), cmd).await
        }
        Command::Lookup {
            ip,
            at,
            vnet,
            subscription,
            json,
        } => {
            let index = open_for_ip(&url, &ip, fresh).await?;
            let scope = ScopeParams {
                vnet,
                subnet: None,
                subscription,
            };
            let answer = lookup::owner_answer(&index, &ip, at.as_deref(), &scope)
                .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", ipwho::api::words::render_answer(&answer));
            }
            Ok(())
        }
        Command::History { ip, from, to, json } => {
            let index = open_for_ip(&url, &ip, fresh).await?;
            let h = ipwho::api::history::ip_history_for(
                &index,
                &ip,
                from.as_deref(),
                to.as_deref(),
                &ScopeParams::default(),
            )
            .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print!("{}", ipwho::api::words::render_history(&h));
            }
            Ok(())
        }
        Command::Collect(args) => {
            let cfg = collector::CollectorConfig::from_env(&args)?;
            let (pool, index) = open_for_ingest(&url).await?;
            let reports = collector::collect_once(&pool, &index, &cfg).await?;
            println!("{}", serde_json::to_string_pretty(&reports)?);
            Ok(())
        }
        Command::Status => {
            let pool = existing_database(&url, 2).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(&store::status(&pool).await?)?
            );
            Ok(())
        }
        Command::Enrich {
            files,
            out,
            format,
            floor,
        } => enrich(&url, files, out, format, floor, fresh).await,
        Command::Openapi => {
            println!("{}", api::openapi_json());
            Ok(())
        }
        Command::Demo => {
            let (pool, index) = open_for_ingest(&url).await?;
            let summary = demo::load(&pool, &index).await?;
            println!("{summary}");
            Ok(())
        }
    }
}

/// The claims that answer for `ip` alone (none when `ip` is not an
/// address: the lookup then says why), rather than every claim.
async fn open_for_ip(
    url: &str,
    ip: &str,
    fresh: ipwho::engine::Freshness,
) -> anyhow::Result<ipwho::index::Index> {
    let pool = existing_database(url, 2).await?;
    Ok(match ip.trim().parse::<std::net::IpAddr>() {
        Ok(addr) => sync::load_ip(&pool, addr.to_canonical(), fresh).await?,
        Err(_) => ipwho::index::Index::with_freshness(fresh),
    })
}

/// The database, and an empty index for what ingest changes: a command
/// that only writes need not load every claim (a running service learns
/// of the changes from the change feed).
async fn open_for_ingest(url: &str) -> anyhow::Result<(sqlx::PgPool, ipwho::index::Index)> {
    Ok((database(url, 4).await?, ipwho::index::Index::new()))
}

/// Every claim, for reading (see [`existing_database`]).
async fn open(
    url: &str,
    fresh: ipwho::engine::Freshness,
) -> anyhow::Result<(sqlx::PgPool, ipwho::index::Index)> {
    let pool = existing_database(url, 4).await?;
    let index = sync::load(&pool, fresh).await?;
    Ok((pool, index))
}

/// The database (created if missing), migrated, through `connections`.
async fn database(url: &str, connections: u32) -> anyhow::Result<sqlx::PgPool> {
    let pool = store::connect(url, connections)
        .await
        .with_context(|| "connecting to Postgres (DATABASE_URL)")?;
    store::migrate(&pool).await?;
    Ok(pool)
}

/// The database for a read-only command (`lookup`, `history`, `status`,
/// `enrich`): never created nor migrated. A mistyped DATABASE_URL fails,
/// naming the database, instead of answering `unknown` from a new one.
async fn existing_database(url: &str, connections: u32) -> anyhow::Result<sqlx::PgPool> {
    use store::Existing;
    let existing = store::connect_existing(url, connections)
        .await
        .with_context(|| "connecting to Postgres (DATABASE_URL)")?;
    match existing {
        Existing::Ready(pool) => Ok(pool),
        Existing::Missing { database, server } => anyhow::bail!(
            "database {database:?} does not exist on {server}: check DATABASE_URL / --database-url \
             (this command only reads, so it creates no database; `ipwho migrate` or `ipwho serve` does)"
        ),
        Existing::NotMigrated { database, server } => anyhow::bail!(
            "database {database:?} on {server} is not an ipwho database with every migration applied: \
             check DATABASE_URL / --database-url, or run `ipwho migrate` (this command only reads, so it migrates nothing)"
        ),
    }
}

async fn enrich(
    url: &str,
    files: Vec<PathBuf>,
    out: Option<PathBuf>,
    format: Option<String>,
    floor: bool,
    fresh: ipwho::engine::Freshness,
) -> anyhow::Result<()> {
    use std::io::{BufWriter, Read, Write};
    let index: Arc<dyn ipwho::enrich::Attributor> = if floor {
        Arc::new(ipwho::enrich::NoIndex)
    } else {
        Arc::new(open(url, fresh).await?.1)
    };
    let opts = ipwho::enrich::EnrichOptions {
        format: format
            .map(|f| {
                f.parse::<ipwho::enrich::Format>()
                    .map_err(|e| anyhow::anyhow!("--format: {e}"))
            })
            .transpose()?,
        lookups: !floor,
        ..Default::default()
    };
    let files = expand_dirs(files)?;
    let summary = tokio::task::spawn_blocking(move || -> anyhow::Result<ipwho::enrich::Summary> {
        let readers: Vec<Box<dyn Read>> = if files.is_empty() {
            vec![Box::new(std::io::stdin().lock())]
        } else {
            files
                .iter()
                .map(|f| {
                    std::fs::File::open(f)
                        .map(|x| Box::new(std::io::BufReader::new(x)) as Box<dyn Read>)
                        .with_context(|| format!("opening {}", f.display()))
                })
                .collect::<anyhow::Result<_>>()?
        };
        let w: Box<dyn Write> = match &out {
            Some(p) => Box::new(
                std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            ),
            None => Box::new(std::io::stdout().lock()),
        };
        Ok(ipwho::enrich::enrich_readers(
            readers,
            BufWriter::with_capacity(1 << 20, w),
            opts,
            index,
        )?)
    })
    .await??;
    eprintln!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// The files named, a directory standing for every file below it (as a
/// storage export lays blobs out: `.../y=2025/m=06/d=02/h=08/m=00/PT1H.json`),
/// in path order.
fn expand_dirs(paths: Vec<PathBuf>) -> anyhow::Result<Vec<PathBuf>> {
    fn add(p: PathBuf, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        if !p.is_dir() {
            out.push(p);
            return Ok(());
        }
        let mut entries = std::fs::read_dir(&p)
            .and_then(|d| {
                d.map(|e| e.map(|e| e.path()))
                    .collect::<Result<Vec<_>, _>>()
            })
            .with_context(|| format!("reading {}", p.display()))?;
        entries.sort();
        entries.into_iter().try_for_each(|e| add(e, out))
    }
    let mut out = Vec::new();
    for p in paths {
        add(p, &mut out)?;
    }
    Ok(out)
}

async fn ingest(url: &str, cmd: IngestCommand) -> anyhow::Result<()> {
    let (pool, index) = open_for_ingest(url).await?;
    match cmd {
        IngestCommand::Snapshot {
            files,
            taken_at,
            subscription,
            complete,
            snapshot_id,
        } => {
            let files = expand_dirs(files)?;
            let n = files.len();
            for (i, f) in files.iter().enumerate() {
                let body = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let body = ingest::decompressed(&body, None).map_err(|e| flagged(f, e))?;
                let params = SnapshotParams {
                    snapshot_id: snapshot_id.clone(),
                    taken_at: taken_at.clone(),
                    subscriptions: (!subscription.is_empty()).then(|| subscription.clone()),
                    complete: Some(complete),
                    last_page: snapshot_id.as_ref().map(|_| i + 1 == n),
                };
                let r = ingest::ingest_snapshot(&pool, &index, &body, params)
                    .await
                    .map_err(|e| flagged(f, e))?;
                println!("{}: {}", f.display(), serde_json::to_string(&r)?);
            }
        }
        IngestCommand::Topology {
            files,
            taken_at,
            subscription,
        } => {
            for f in expand_dirs(files)? {
                let body = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                let body = ingest::decompressed(&body, None).map_err(|e| flagged(&f, e))?;
                let params = TopologyParams {
                    taken_at: taken_at.clone(),
                    subscriptions: (!subscription.is_empty()).then(|| subscription.clone()),
                };
                let r = ingest::ingest_topology(&pool, &index, &body, params)
                    .await
                    .map_err(|e| flagged(&f, e))?;
                println!("{}: {}", f.display(), serde_json::to_string(&r)?);
            }
        }
        IngestCommand::Activity { files } => {
            for f in expand_dirs(files)? {
                let body = std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                let body = ingest::decompressed(&body, None).map_err(|e| flagged(&f, e))?;
                let r = ingest::ingest_activity(&pool, &index, &body)
                    .await
                    .map_err(|e| flagged(&f, e))?;
                println!("{}: {}", f.display(), serde_json::to_string(&r)?);
            }
        }
    }
    Ok(())
}

/// An ingest error of file `f`, with the flag that gives the metadata a
/// listing lacks. Worded as the API words it (a failure of the database is
/// logged, and named in general terms).
fn flagged(f: &std::path::Path, e: IngestError) -> anyhow::Error {
    let flag = match e.field() {
        Some("taken_at") => " (--taken-at)",
        Some("subscriptions") => " (--subscription)",
        _ => "",
    };
    let e = ApiError::from(e);
    anyhow::anyhow!("{}: {}{flag}", f.display(), e.detail)
}

async fn serve(url: &str, args: ServeArgs, fresh: ipwho::engine::Freshness) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--request-timeout-secs", args.request_timeout_secs),
        ("--header-read-timeout-secs", args.header_read_timeout_secs),
        ("--enrich-timeout-secs", args.enrich_timeout_secs),
        ("--enrich-max-bytes", args.enrich_max_bytes),
        ("--enrich-streams", args.enrich_streams as u64),
    ] {
        anyhow::ensure!(value > 0, "{flag} must be at least 1");
    }
    let pool = database(url, args.db_connections).await?;
    let access = ipwho::access::cli::for_serve(&pool, &args.access, args.listen).await?;
    // The port opens at once: health and readiness are answered while the
    // claims load (anything else is a 503 until then).
    let index = Arc::new(ipwho::index::Index::loading(fresh));
    let state = AppState {
        pool: pool.clone(),
        index: index.clone(),
        limits: Limits {
            max_body_bytes: args.max_body_bytes,
            max_lookups: args.max_lookups,
            request_timeout: Duration::from_secs(args.request_timeout_secs),
            header_read_timeout: Duration::from_secs(args.header_read_timeout_secs),
            enrich_max_bytes: args.enrich_max_bytes,
            enrich_timeout: Duration::from_secs(args.enrich_timeout_secs),
            enrich_streams: args.enrich_streams,
        },
        access: Arc::new(access),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(address = %listener.local_addr()?, "ipwho listening");
    let mut server = tokio::spawn(api::serve(listener, state, shutdown_signal()));
    tokio::select! {
        loaded = sync::load_into(&pool, &index) => loaded?,
        // Stopped (a signal) before the claims were loaded.
        served = &mut server => {
            served??;
            pool.close().await;
            return Ok(());
        }
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn(sync::follow(
        pool.clone(),
        index.clone(),
        Duration::from_secs(5),
        stop_rx.clone(),
    ));
    let pruner = {
        let pool = pool.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(300));
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tick.tick() => {
                        if let Err(e) = sync::prune(&pool, Duration::from_secs(3600)).await {
                            tracing::warn!(error = %e, "pruning the change feed failed");
                        }
                    }
                }
            }
        })
    };
    let collector_task = if args.collect.subscriptions.is_empty() {
        None
    } else {
        let cfg = collector::CollectorConfig::from_env(&args.collect)?;
        tracing::info!(
            subscriptions = cfg.subscriptions.len(),
            every_minutes = args.collect.collect_every_minutes,
            "collector scheduled"
        );
        Some(tokio::spawn(collector::run_schedule(
            pool.clone(),
            index.clone(),
            cfg,
            stop_rx.clone(),
        )))
    };
    server.await??;
    let _ = stop_tx.send(true);
    let _ = follower.await;
    let _ = pruner.await;
    if let Some(c) = collector_task {
        let _ = c.await;
    }
    pool.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
}
