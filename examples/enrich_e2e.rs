//! End-to-end benchmark of flow-log enrichment (issue 4), in one run:
//!
//! 1. **ipwho over HTTP**: a server process (this program with `--serve`:
//!    the service's own router, `ipwho::api::serve`, over the
//!    `ipwho::index::Index` loaded from the database, as `ipwho serve` loads
//!    it) is sent the blob as `POST /v1/enrich`; the whole NDJSON response
//!    is read and its summary line checked;
//! 2. **the floor**: the same request with `?floor=true` (parse and write,
//!    no lookups, the same code path);
//! 3. **the naive approach**: the tuples parsed, loaded with `COPY` into
//!    Postgres and joined to the claims table of the same database
//!    (`JOIN claims c ON c.ip = t.src_ip AND c.possible @> t.time`, both
//!    ends), the result read back with `COPY ... TO STDOUT`.
//!
//! The inputs come from the simulator's `bench-history` estate (seed 7 by
//! default; `ipwho-sim generate --profile bench-history`): its claims, as
//! the core benchmark's `history` phase leaves them in the database
//! `ipwho_bench` (run `cargo bench --bench core -- --only history` first),
//! and its blob `flowlogs/vnet-all.json`: 1,000,000 tuples of VNet flow logs
//! (version 4) captured by 300 NICs in the estate's last hour.
//!
//! The server's memory: the index size is its RSS after loading the index
//! minus before; the peak during each request is `VmHWM` after resetting it
//! (`/proc/PID/clear_refs`) just before the request.
//!
//! Run: `cargo run --release --example enrich_e2e [-- --seed S --estates DIR
//! --database NAME --runs R --workers W --no-naive --inproc --no-http --replay]`
//! (`--workers`: the server's `IPWHO_ENRICH_WORKERS`; `--inproc`: also the
//! pipeline in process with 1 and 2 workers; `--no-http`: only that;
//! `--replay`: also the transport alone, a server sending the output
//! ipwho rendered beforehand from memory)
//! (`DATABASE_URL` names the Postgres server).

/// The allocator `ipwho serve` runs with (src/bin/ipwho/main.rs), so the server
/// measured here is the one deployed.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// The URL of database `db` on the Postgres server of `DATABASE_URL`.
fn db_url(db: &str) -> String {
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    format!(
        "{}/{db}",
        admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(head, _)| head)
    )
}

/// The index of the claims in database `db`, as the service loads it.
async fn load_index(db: &str) -> anyhow::Result<ipwho::index::Index> {
    let pool = PgPool::connect(&db_url(db)).await?;
    let claims: i64 = sqlx::query_scalar("SELECT count(*) FROM claims")
        .fetch_one(&pool)
        .await
        .unwrap_or(0);
    anyhow::ensure!(
        claims > 0,
        "database {db} holds no claims: run `cargo bench --bench core -- --only history` first"
    );
    let index = ipwho::sync::load(&pool, Default::default()).await?;
    pool.close().await;
    Ok(index)
}

fn ts(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

// ---------------------------------------------------------------------------
// the server (a child process)

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user, system) a process has used.
fn cpu_secs(pid: u32) -> (f64, f64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with the last ')').
    let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0; // USER_HZ
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    (get(11), get(12))
}

/// A server's stop signal: the parent closed our stdin.
async fn until_stdin_closes() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        while std::io::stdin()
            .read_line(&mut s)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await;
}

fn serve(db: &str) -> anyhow::Result<()> {
    let me = std::process::id();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let before = status_kib(me, "VmRSS:");
        let t = Instant::now();
        let index = Arc::new(load_index(db).await?);
        let after = status_kib(me, "VmRSS:");
        let built = t.elapsed();
        // The enrichment endpoint never touches Postgres: a lazy pool that
        // never connects.
        let pool = sqlx::PgPool::connect_lazy(&db_url(db))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "READY port={} claims={} rss_before_kib={before} rss_after_kib={after} build_ms={}",
            listener.local_addr()?.port(),
            index.len(),
            built.as_millis()
        );
        std::io::stdout().flush()?;
        let state = ipwho::api::AppState {
            pool,
            index,
            limits: ipwho::api::Limits::default(),
            access: Arc::new(ipwho::access::Access::open(
                ipwho::access::AllowedHosts::new(None, &[]),
            )),
        };
        ipwho::api::serve(listener, state, until_stdin_closes()).await?;
        anyhow::Ok(())
    })
}

/// The transport alone: a server that has rendered the blob's output
/// (floor and enriched) in memory beforehand, then answers `POST
/// /v1/enrich[?floor=true]` by reading the request's body and sending that
/// output in chunks of the size the service sends (1 MiB), over the same
/// HTTP stack (`axum::serve`): no parsing, no lookups, no rendering. Its
/// time is what moving the bytes costs: the least this output can take
/// through this HTTP stack on this machine.
fn serve_replay(db: &str, blob: &std::path::Path) -> anyhow::Result<()> {
    use axum::body::Body;
    use ipwho::enrich::{Attributor, EnrichOptions, NoIndex, enrich_reader};
    let rt = tokio::runtime::Runtime::new()?;
    let input = std::fs::read(blob)?;
    let index: Arc<dyn Attributor> = Arc::new(rt.block_on(load_index(db))?);
    let render = |lookups: bool| -> anyhow::Result<bytes::Bytes> {
        let mut out = Vec::new();
        let attr: Arc<dyn Attributor> = if lookups {
            index.clone()
        } else {
            Arc::new(NoIndex)
        };
        let opts = EnrichOptions {
            lookups,
            ..EnrichOptions::default()
        };
        enrich_reader(&input[..], &mut out, opts, attr)?;
        Ok(out.into())
    };
    let (floor, full) = (render(false)?, render(true)?);
    drop(index);
    // The size of the chunks the service sends its output in.
    let chunk = EnrichOptions::default().chunk_bytes;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("READY port={}", listener.local_addr()?.port());
        std::io::stdout().flush()?;
        let app = axum::Router::new().route(
            "/v1/enrich",
            axum::routing::post(move |q: axum::extract::RawQuery, body: Body| async move {
                let _ = axum::body::to_bytes(body, usize::MAX).await;
                let out = if q.0.is_some_and(|q| q.contains("floor=true")) {
                    floor
                } else {
                    full
                };
                let chunks = (0..out.len().div_ceil(chunk)).map(move |i| {
                    Ok::<_, std::io::Error>(out.slice(i * chunk..((i + 1) * chunk).min(out.len())))
                });
                Body::from_stream(futures::stream::iter(chunks))
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(until_stdin_closes())
            .await?;
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------
// the client

struct Posted {
    secs: f64,
    out_bytes: u64,
    lines: u64,
    tuples_out: u64,
    summary: serde_json::Value,
    peak_rss_kib: u64,
    /// CPU seconds (user + system) of the server and of this client.
    server_cpu: (f64, f64),
    client_cpu: (f64, f64),
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
    server: u32,
) -> anyhow::Result<Posted> {
    // Peak RSS of this request alone: reset the high-water mark first.
    std::fs::write(format!("/proc/{server}/clear_refs"), "5")?;
    let (s0, c0) = (cpu_secs(server), cpu_secs(std::process::id()));
    let t = Instant::now();
    let mut r = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
    let mut out_bytes = 0u64;
    let mut lines = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(c) = r.chunk().await? {
        out_bytes += c.len() as u64;
        lines += memchr::memchr_iter(b'\n', &c).count() as u64;
        if c.len() >= 64 << 10 {
            tail.clear();
            tail.extend_from_slice(&c[c.len() - (64 << 10)..]);
        } else {
            tail.extend_from_slice(&c);
            if tail.len() > 256 << 10 {
                tail.drain(..tail.len() - (64 << 10));
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let peak_rss_kib = status_kib(server, "VmHWM:");
    let (s1, c1) = (cpu_secs(server), cpu_secs(std::process::id()));
    let last = tail
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(last)?;
    let summary = v["ipwho.summary"].clone();
    Ok(Posted {
        secs,
        out_bytes,
        lines,
        tuples_out: summary["tuples_out"].as_u64().unwrap_or(0),
        summary,
        peak_rss_kib,
        server_cpu: (s1.0 - s0.0, s1.1 - s0.1),
        client_cpu: (c1.0 - c0.0, c1.1 - c0.1),
    })
}

/// Starts a server process (this program with `--serve ...`, set up in
/// `cmd`) and waits for its `READY key=value ...` line.
fn start_server(cmd: &mut Command) -> anyhow::Result<(std::process::Child, String)> {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready)?;
    Ok((child, ready))
}

/// The number `k=` of a server's `READY` line.
fn ready_field(ready: &str, k: &str) -> anyhow::Result<u64> {
    ready
        .split_whitespace()
        .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {k} in the server's {ready:?}"))
}

/// Posts `input` to `base?floor=true` and to `base`, `runs` times each,
/// alternately; checks every response's line count and summary; returns
/// the fastest of each (floor, enriched).
#[allow(clippy::too_many_arguments)]
fn best_of_runs(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    base: &str,
    input: &bytes::Bytes,
    server: u32,
    tuples: u64,
    runs: usize,
    label: &str,
) -> anyhow::Result<(Posted, Posted)> {
    let (mut best_floor, mut best_full): (Option<Posted>, Option<Posted>) = (None, None);
    for run in 0..runs {
        for (floor, best) in [(true, &mut best_floor), (false, &mut best_full)] {
            let url = if floor {
                format!("{base}?floor=true")
            } else {
                base.to_string()
            };
            let p = rt.block_on(post(client, &url, input.clone(), server))?;
            anyhow::ensure!(
                p.tuples_out == tuples && p.lines == tuples + 1,
                "{label}run {run}: {} tuples out, {} lines: {}",
                p.tuples_out,
                p.lines,
                p.summary
            );
            println!(
                "  run {run} {label}{:<6} {:>7.3} s {:>10.0} tuples/s {:>8.1} MB out, server peak RSS {:>6.0} MiB, CPU s (user+sys): server {:.2}+{:.2}, client {:.2}+{:.2}",
                if floor { "floor" } else { "enrich" },
                p.secs,
                tuples as f64 / p.secs,
                p.out_bytes as f64 / 1e6,
                mib(p.peak_rss_kib),
                p.server_cpu.0,
                p.server_cpu.1,
                p.client_cpu.0,
                p.client_cpu.1,
            );
            if best.as_ref().is_none_or(|b| p.secs < b.secs) {
                *best = Some(p);
            }
        }
    }
    Ok((best_floor.unwrap(), best_full.unwrap()))
}

/// Runs the replay server (`serve_replay`) and posts the blob to it as to
/// ipwho, best of `runs` each for the floor's output and ipwho's.
fn replay(
    a: &Args,
    dir: &std::path::Path,
    input: &bytes::Bytes,
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    tuples: u64,
) -> anyhow::Result<(Posted, Posted)> {
    let (mut child, ready) = start_server(
        Command::new(std::env::current_exe()?)
            .args(["--serve", "--database", &a.database, "--replay-blob"])
            .arg(dir.join("flowlogs/vnet-all.json")),
    )?;
    let port = ready_field(&ready, "port")?;
    let base = format!("http://127.0.0.1:{port}/v1/enrich");
    let best = best_of_runs(
        rt,
        client,
        &base,
        input,
        child.id(),
        tuples,
        a.runs,
        "replay ",
    )?;
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(best)
}

// ---------------------------------------------------------------------------
// the naive approach

struct Naive {
    load_secs: f64,
    join_secs: f64,
    rows: u64,
}

async fn naive(db: &str, input: &[u8]) -> anyhow::Result<Naive> {
    use sqlx::Connection as _;
    let mut c = sqlx::PgConnection::connect(&db_url(db)).await?;
    {
        // Timed: parse the blob, COPY the tuples in, join, read everything back.
        let t = Instant::now();
        sqlx::raw_sql(
            "CREATE TEMP TABLE tuples (time timestamptz, src_ip inet, dst_ip inet, src_port int, \
             dst_port int, protocol int, direction text, state text, record bigint, tuple int)",
        )
        .execute(&mut c)
        .await?;
        let mut copy = c
            .copy_in_raw("COPY tuples FROM STDIN WITH (FORMAT csv)")
            .await?;
        let mut rows: Vec<u8> = Vec::with_capacity(8 << 20);
        let mut pending: Vec<Vec<u8>> = Vec::new();
        {
            use std::io::Write;
            let mut d = ipwho::azure::flowlog::Decoder::new(None);
            let mut f = |item: ipwho::azure::flowlog::Decoded<'_>| {
                if let ipwho::azure::flowlog::Decoded::Tuple(ctx, t) = item {
                    let _ = writeln!(
                        rows,
                        "{},{},{},{},{},{},{},{},{},{}",
                        ts(t.time_micros),
                        t.src_ip,
                        t.dst_ip,
                        t.src_port.map(|p| p.to_string()).unwrap_or_default(),
                        t.dst_port.map(|p| p.to_string()).unwrap_or_default(),
                        t.protocol.map(|p| p.iana().to_string()).unwrap_or_default(),
                        t.direction.map(|d| d.as_str()).unwrap_or(""),
                        t.state.map(|s| s.as_str()).unwrap_or(""),
                        ctx.record_index,
                        t.tuple_index
                    );
                    if rows.len() > 4 << 20 {
                        pending.push(std::mem::take(&mut rows));
                    }
                }
                Ok(())
            };
            d.feed(input, &mut f)?;
            d.finish(&mut f)?;
        }
        pending.push(rows);
        for p in pending {
            copy.send(p).await?;
        }
        copy.finish().await?;
        sqlx::raw_sql("ANALYZE tuples").execute(&mut c).await?;
        let load_secs = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut out = c
            .copy_out_raw(
                "COPY (SELECT t.*, s.nic_key, s.vm_key, s.scope, d.nic_key, d.vm_key, d.scope \
                 FROM tuples t \
                 LEFT JOIN claims s ON s.ip = t.src_ip AND s.possible @> t.time \
                 LEFT JOIN claims d ON d.ip = t.dst_ip AND d.possible @> t.time) \
                 TO STDOUT WITH (FORMAT csv)",
            )
            .await?;
        let mut n = 0u64;
        use futures::StreamExt as _;
        while let Some(chunk) = out.next().await {
            n += memchr::memchr_iter(b'\n', &chunk?).count() as u64;
        }
        drop(out);
        let join_secs = t.elapsed().as_secs_f64();
        c.close().await.ok();
        Ok(Naive {
            load_secs,
            join_secs,
            rows: n,
        })
    }
}

// ---------------------------------------------------------------------------

struct Args {
    seed: u64,
    /// Where the estates are (generated there if missing).
    estates: std::path::PathBuf,
    /// The database holding the estate's claims.
    database: String,
    runs: usize,
    naive: bool,
    serve: bool,
    /// Also time the pipeline in process (no HTTP) with 1 and 2 workers.
    inproc: bool,
    /// Only that.
    no_http: bool,
    /// The server's `IPWHO_ENRICH_WORKERS` (default: inherited, else 1).
    workers: Option<u64>,
    /// Also time the transport alone: a server that answers with the
    /// output ipwho rendered before, from memory.
    replay: bool,
    /// Serve mode: render the outputs of this blob and replay them.
    replay_blob: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        seed: 7,
        estates: concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-estates").into(),
        database: "ipwho_bench".into(),
        runs: 3,
        naive: true,
        serve: false,
        inproc: false,
        no_http: false,
        workers: None,
        replay: false,
        replay_blob: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        let num = |v: String| -> u64 {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{k} needs a number"))
        };
        match k.as_str() {
            "--seed" => a.seed = num(value()),
            "--estates" => a.estates = value().into(),
            "--database" => a.database = value(),
            "--runs" => a.runs = num(value()) as usize,
            "--no-naive" => a.naive = false,
            "--workers" => a.workers = Some(num(value())),
            "--serve" => a.serve = true,
            "--inproc" => a.inproc = true,
            "--replay" => a.replay = true,
            "--replay-blob" => a.replay_blob = Some(value().into()),
            "--no-http" => {
                a.inproc = true;
                a.no_http = true;
                a.naive = false;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The `bench-history` estate of `seed` under `root` (generated if
/// missing): its directory and its flow-log blob.
fn estate(root: &std::path::Path, seed: u64) -> anyhow::Result<(std::path::PathBuf, Vec<u8>)> {
    let t = Instant::now();
    let (dir, generated) = ipwho_sim::cached_estate(root, "bench-history", seed)?;
    if generated.is_some() {
        println!(
            "generated {} in {:.1} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let blob = std::fs::read(dir.join("flowlogs/vnet-all.json"))?;
    Ok((dir, blob))
}

/// The pipeline in process, best of `runs`: floor and enrich with 1 and 2
/// workers, into a byte counter.
fn inproc(db: &str, tuples: u64, input: &[u8], runs: usize) -> anyhow::Result<()> {
    use ipwho::enrich::{Attributor, EnrichOptions, NoIndex, enrich_reader};
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len() as u64;
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let index: Arc<dyn Attributor> =
        Arc::new(tokio::runtime::Runtime::new()?.block_on(load_index(db))?);
    // `IPWHO_E2E_ONLY=enrich1` (or floor2, ...): one configuration only, for a profiler.
    let only = std::env::var("IPWHO_E2E_ONLY").ok();
    for workers in [1, 2] {
        for floor in [true, false] {
            let name = format!("{}{workers}", if floor { "floor" } else { "enrich" });
            if only.as_ref().is_some_and(|o| *o != name) {
                continue;
            }
            let mut best = f64::MAX;
            for _ in 0..runs {
                let opts = EnrichOptions {
                    lookups: !floor,
                    workers,
                    ..EnrichOptions::default()
                };
                let attr: Arc<dyn Attributor> = if floor {
                    Arc::new(NoIndex)
                } else {
                    index.clone()
                };
                let t = Instant::now();
                enrich_reader(input, Count(0), opts, attr).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "  in process, {workers} worker(s), {:<6} {best:.3} s ({:.2}M tuples/s)",
                if floor { "floor" } else { "enrich" },
                tuples as f64 / 1e6 / best
            );
        }
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> anyhow::Result<()> {
    let a = args();
    if a.serve {
        return match &a.replay_blob {
            Some(blob) => serve_replay(&a.database, blob),
            None => serve(&a.database),
        };
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let (dir, input) = estate(&a.estates, a.seed)?;
    let summary: ipwho_sim::Summary =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json"))?)?;
    let tuples = summary.flow.tuples;
    println!(
        "blob: {}/flowlogs/vnet-all.json, {tuples} tuples in {} records, {:.1} MB (VNet flow logs v4)",
        dir.display(),
        summary.flow.records,
        input.len() as f64 / 1e6
    );

    if a.no_http {
        return inproc(&a.database, tuples, &input, a.runs);
    }
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--serve", "--database", &a.database]);
    if let Some(w) = a.workers {
        cmd.env("IPWHO_ENRICH_WORKERS", w.to_string());
    }
    println!(
        "server enrichment workers: {}",
        a.workers
            .map(|w| w.to_string())
            .or_else(|| std::env::var("IPWHO_ENRICH_WORKERS").ok())
            .unwrap_or_else(|| "1 (default)".into())
    );
    let (mut child, ready) = start_server(&mut cmd)?;
    let server = child.id();
    let input = bytes::Bytes::from(input);
    let field = |k: &str| ready_field(&ready, k);
    let (port, claims) = (field("port")?, field("claims")?);
    let (rss0, rss1) = (field("rss_before_kib")?, field("rss_after_kib")?);
    let index_kib = rss1.saturating_sub(rss0);
    println!(
        "server pid {server}: index of {claims} claims loaded from {} in {:.1} s, RSS {:.0} -> {:.0} MiB (index {:.0} MiB)",
        a.database,
        field("build_ms")? as f64 / 1e3,
        mib(rss0),
        mib(rss1),
        mib(index_kib)
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let base = format!("http://127.0.0.1:{port}/v1/enrich");
    let (floor, full) = best_of_runs(&rt, &client, &base, &input, server, tuples, a.runs, "")?;
    println!(
        "source statuses: {}\ndestination statuses: {}",
        full.summary["source"], full.summary["destination"]
    );
    drop(child.stdin.take());
    let _ = child.wait();
    let replayed = if a.replay {
        Some(replay(&a, &dir, &input, &rt, &client, tuples)?)
    } else {
        None
    };
    if a.inproc {
        inproc(&a.database, tuples, &input, a.runs)?;
    }

    let naive = if a.naive {
        let t = Instant::now();
        let n = rt.block_on(naive(&a.database, &input))?;
        println!(
            "naive: tuples parsed and loaded in {:.1} s, joined and read in {:.1} s ({} rows); total {:.1} s",
            n.load_secs,
            n.join_secs,
            n.rows,
            t.elapsed().as_secs_f64()
        );
        Some(n)
    } else {
        None
    };

    let tps = |s: f64| tuples as f64 / s;
    let blob_mib = input.len() as f64 / (1 << 20) as f64;
    let limit_mib = 2.0 * (blob_mib + mib(index_kib));
    println!();
    println!("| | time | tuples/s | output | server peak RSS |\n| --- | --- | --- | --- | --- |");
    for (name, p) in [
        ("ipwho `POST /v1/enrich`", &full),
        ("floor `POST /v1/enrich?floor=true`", &floor),
    ] {
        println!(
            "| {name} | {:.3} s | {:.2}M | {:.0} MB | {:.0} MiB |",
            p.secs,
            tps(p.secs) / 1e6,
            p.out_bytes as f64 / 1e6,
            mib(p.peak_rss_kib)
        );
    }
    if let Some((rf, rx)) = &replayed {
        for (name, p) in [
            ("transport alone: ipwho's output replayed from memory", rx),
            ("transport alone: the floor's output replayed", rf),
        ] {
            println!(
                "| {name} | {:.3} s | {:.2}M | {:.0} MB | — |",
                p.secs,
                tps(p.secs) / 1e6,
                p.out_bytes as f64 / 1e6,
            );
        }
    }
    if let Some(n) = &naive {
        let s = n.load_secs + n.join_secs;
        println!(
            "| naive: parse + COPY + join in Postgres | {s:.1} s | {:.2}M | {} rows | — |",
            tps(s) / 1e6,
            n.rows
        );
    }
    println!();
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "end to end: {:.2}M tuples/s (target >= 1.5M): {}",
        tps(full.secs) / 1e6,
        check(tps(full.secs) >= 1.5e6)
    );
    println!(
        "enrich / floor time: {:.2}x (target <= 2x): {}",
        full.secs / floor.secs,
        check(full.secs <= 2.0 * floor.secs)
    );
    if let Some(n) = &naive {
        let s = n.load_secs + n.join_secs;
        println!(
            "naive / ipwho time: {:.1}x (target >= 20x): {}",
            s / full.secs,
            check(s >= 20.0 * full.secs)
        );
    }
    if let Some((rf, rx)) = &replayed {
        println!(
            "transport alone (replayed output): ipwho's {:.2}M tuples/s, the floor's {:.2}M tuples/s; ipwho / its transport {:.2}x, floor / its transport {:.2}x",
            tps(rx.secs) / 1e6,
            tps(rf.secs) / 1e6,
            full.secs / rx.secs,
            floor.secs / rf.secs
        );
    }
    println!(
        "server peak RSS while enriching: {:.0} MiB; limit 2 x (blob {:.0} MiB + index {:.0} MiB) = {:.0} MiB: {}",
        mib(full.peak_rss_kib),
        blob_mib,
        mib(index_kib),
        limit_mib,
        check(mib(full.peak_rss_kib) <= limit_mib)
    );
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}
