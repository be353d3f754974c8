//! Ingest and lookup benchmarks of the core (issue 2), over real HTTP and a
//! real Postgres. Run in release:
//!
//! ```sh
//! cargo bench --bench core                 # full size: 100k NICs, >= 1M claims
//! cargo bench --bench core -- --nics 10000 # smaller
//! cargo bench --bench core -- --lookups-only  # lookups again, on the database a full run left
//! ```
//!
//! Phases, each timed: a complete 100,000-NIC snapshot posted in pages of
//! 1,000 (3 IPs per NIC); the same snapshot posted again; a new snapshot of
//! the unchanged estate; 100,000 Activity Log events; then a second
//! subscription to pass a million claims, and `GET /v1/ips/{ip}/owner` under
//! concurrency 32 from `wrk` (a separate process), beside the same query run
//! directly against Postgres with `pgbench` in the same run.
//! Uses (and recreates) the database `ipwho_bench`.

/// mimalloc: ingest and enrichment allocate small objects by the million;
/// glibc malloc spent half their CPU time in its own bookkeeping.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ipwho::api::{AppState, Limits};
use serde_json::{Value, json};
use sqlx::PgPool;

const SUB1: &str = "bbbbbbbb-0000-0000-0000-000000000001";
const SUB2: &str = "bbbbbbbb-0000-0000-0000-000000000002";
const T0: &str = "2025-05-01T00:00:00Z";
const T1: &str = "2025-05-01T00:15:00Z";
const PAGE: usize = 1000;

/// The k-th IPv4 of NIC i: subscription 1 in 10.0.0.0/9, subscription 2 in
/// 172.16.0.0/12, IPs moved by update events in 10.128.0.0/9.
fn v4(s: usize, i: usize, k: usize) -> String {
    let a = (i * 4 + k + 1) as u32;
    let base: u32 = match s {
        1 => 0x0a00_0000,
        2 => 0xac10_0000,
        _ => 0x0a80_0000,
    };
    std::net::Ipv4Addr::from(base + a).to_string()
}

fn nic(sub: &str, s: usize, i: usize, ip_shift: usize) -> Value {
    let base = format!("/subscriptions/{sub}/resourceGroups/rg-{}", i / 5000);
    let id = format!("{base}/providers/Microsoft.Network/networkInterfaces/nic-{i}");
    let vnet = format!(
        "/subscriptions/{sub}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet-{}",
        i / 1000
    );
    let ips = [
        v4(s, i + ip_shift, 0),
        v4(s, i + ip_shift, 1),
        format!(
            "fd00:{s}::{:x}:{:x}",
            (i + ip_shift) >> 16,
            (i + ip_shift) & 0xffff
        ),
    ];
    let configs: Vec<Value> = ips
        .iter()
        .enumerate()
        .map(|(k, ip)| {
            json!({"name": format!("ipconfig{k}"), "id": format!("{id}/ipConfigurations/ipconfig{k}"),
                   "properties": {"privateIPAddress": ip, "privateIPAllocationMethod": "Dynamic",
                                  "privateIPAddressVersion": if k == 2 { "IPv6" } else { "IPv4" }, "primary": k == 0,
                                  "subnet": {"id": format!("{vnet}/subnets/default")}}})
        })
        .collect();
    json!({"name": format!("nic-{i}"), "id": id, "type": "Microsoft.Network/networkInterfaces", "location": "westeurope",
           "etag": "W/\"00000000-0000-0000-0000-000000000000\"",
           "properties": {"provisioningState": "Succeeded", "macAddress": format!("00-0D-3A-{:02X}-{:02X}-{:02X}", s, (i >> 8) & 0xff, i & 0xff),
                          "virtualMachine": {"id": format!("{base}/providers/Microsoft.Compute/virtualMachines/vm-{i}")},
                          "ipConfigurations": configs, "enableAcceleratedNetworking": true}})
}

async fn post(client: &reqwest::Client, url: &str, body: String) -> Value {
    let r = client.post(url).body(body).send().await.expect("post");
    let status = r.status();
    let v: Value = r.json().await.expect("json");
    assert!(status.is_success(), "{url}: {status} {v}");
    assert!(
        v["rejected"].as_array().is_none_or(|a| a.is_empty()),
        "{url}: rejected records: {v}"
    );
    v
}

async fn counts(pool: &PgPool) -> String {
    let mut out = Vec::new();
    for t in [
        "snapshots",
        "nic_states",
        "observations",
        "activity_events",
        "claims",
        "claim_changes",
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {t}")))
            .fetch_one(pool)
            .await
            .unwrap();
        out.push(format!("{t}={n}"));
    }
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await
        .unwrap();
    out.push(format!("db={} MiB", size / (1024 * 1024)));
    out.join(" ")
}

#[allow(clippy::too_many_arguments)]
async fn post_snapshot(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    at: &str,
    sub: &str,
    s: usize,
    n: usize,
    shift: usize,
) -> Duration {
    let pages: Vec<String> = (0..n.div_ceil(PAGE))
        .map(|p| {
            let nics: Vec<Value> = (p * PAGE..((p + 1) * PAGE).min(n))
                .map(|i| nic(sub, s, i, shift))
                .collect();
            json!({"snapshot_id": id, "taken_at": at, "subscriptions": [sub], "complete": true,
                   "last_page": (p + 1) * PAGE >= n, "value": nics})
            .to_string()
        })
        .collect();
    let t = Instant::now();
    for body in pages {
        post(client, &format!("{base}/v1/snapshots"), body).await;
    }
    t.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--nics", 100_000);
    let n2 = arg("--nics2", 250_000);
    let duration = arg("--seconds", 10);
    let admin = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let url = {
        let mut u = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(head, _)| head)
            .to_string();
        u.push_str("/ipwho_bench");
        u
    };
    // --lookups-only: measure lookups again on the database a full run left.
    let lookups_only = args.iter().any(|a| a == "--lookups-only");
    if !lookups_only {
        let pool = ipwho::store::connect(&admin, 1).await?;
        sqlx::query("DROP DATABASE IF EXISTS ipwho_bench WITH (FORCE)")
            .execute(&pool)
            .await?;
    }
    let pool = ipwho::store::connect(&url, 8).await?;
    ipwho::store::migrate(&pool).await?;
    let index = Arc::new(ipwho::sync::load(&pool).await?);
    let state = AppState {
        pool: pool.clone(),
        index: index.clone(),
        limits: Limits {
            request_timeout: Duration::from_secs(600),
            ..Default::default()
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { ipwho::api::serve(listener, state, std::future::pending()).await });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(900))
        .build()?;

    if !lookups_only {
        println!("# ipwho core benchmark: {n} NICs x 3 IPs, pages of {PAGE}");
        let d = post_snapshot(&client, &base, "bench-s1-t0", T0, SUB1, 1, n, 0).await;
        println!(
            "complete snapshot, first post:       {:>8.2} s   {}",
            d.as_secs_f64(),
            counts(&pool).await
        );
        let d = post_snapshot(&client, &base, "bench-s1-t0", T0, SUB1, 1, n, 0).await;
        println!(
            "same snapshot posted again:          {:>8.2} s   {}",
            d.as_secs_f64(),
            counts(&pool).await
        );
        let d = post_snapshot(&client, &base, "bench-s1-t1", T1, SUB1, 1, n, 0).await;
        println!(
            "new snapshot, unchanged estate:      {:>8.2} s   {}",
            d.as_secs_f64(),
            counts(&pool).await
        );

        // 100,000 Activity Log events: for half the NICs an update that moves
        // the first IP, then a delete; posted as Event Hub batches of 10,000.
        let events: Vec<Value> = (0..n / 2)
            .flat_map(|i| {
                let mut moved = nic(SUB1, 1, i, 0);
                moved["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] = json!(v4(3, i, 0));
                let id = moved["id"].as_str().unwrap().to_uppercase();
                let w = json!({"time": format!("2025-05-01T00:20:{:02}.{:07}Z", i % 60, i), "resourceId": id,
                               "operationName": "MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE", "category": "Administrative",
                               "resultType": "Success", "resultSignature": "Succeeded.OK", "correlationId": format!("w-{i}"),
                               "properties": {"statusCode": "OK", "responseBody": moved.to_string()}});
                let d = json!({"time": format!("2025-05-01T00:40:{:02}.{:07}Z", i % 60, i), "resourceId": id,
                               "operationName": "MICROSOFT.NETWORK/NETWORKINTERFACES/DELETE", "category": "Administrative",
                               "resultType": "Success", "resultSignature": "Succeeded.OK", "correlationId": format!("d-{i}"),
                               "properties": {"statusCode": "OK"}});
                [w, d]
            })
            .collect();
        let batches: Vec<String> = events
            .chunks(10_000)
            .map(|c| json!({"records": c}).to_string())
            .collect();
        let t = Instant::now();
        for b in batches {
            post(&client, &format!("{base}/v1/activity"), b).await;
        }
        println!(
            "{:>6} Activity Log events:          {:>8.2} s   {}",
            events.len(),
            t.elapsed().as_secs_f64(),
            counts(&pool).await
        );
        drop(events);

        let d = post_snapshot(&client, &base, "bench-s2-t0", T0, SUB2, 2, n2, 0).await;
        println!(
            "second subscription, {n2} NICs:   {:>8.2} s   {}",
            d.as_secs_f64(),
            counts(&pool).await
        );
    }
    println!("claims in memory: {}", index.len());

    // Lookups under concurrency 32, from wrk in a separate process.
    let script = format!(
        "math.randomseed(7)\nrequest = function()\n  local i = math.random(0, {})\n  local a = 1 + i * 4\n  \
         local ip = string.format('172.%d.%d.%d', 16 + math.floor(a / 65536), math.floor(a / 256) % 256, a % 256)\n  \
         return wrk.format('GET', '/v1/ips/' .. ip .. '/owner?at=2025-05-01T00:10:00Z')\nend\n",
        n2 - 1
    );
    let lua = std::env::temp_dir().join("ipwho-bench.lua");
    std::fs::write(&lua, script)?;
    let out = std::process::Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{duration}s"), "--latency", "-s"])
        .arg(&lua)
        .arg(&base)
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            println!("\n## GET /v1/ips/{{ip}}/owner, wrk -t2 -c32 -d{duration}s");
            for l in text.lines().filter(|l| {
                l.contains("Requests/sec")
                    || l.contains(" 50%")
                    || l.contains(" 99%")
                    || l.contains("requests in")
                    || l.contains("Non-2xx")
            }) {
                println!("  {}", l.trim());
            }
        }
        Err(e) => println!("wrk not available ({e}); install it with `apt-get install wrk`"),
    }

    // The same query directly against Postgres, pgbench -c 32.
    // Fresh statistics, as autovacuum would have them by now.
    sqlx::query("ANALYZE").execute(&pool).await?;
    let sql = "\\set i random(0, NICS)\nSELECT detail FROM claims WHERE ip = inet '172.16.0.0' + (1 + :i * 4) AND possible @> timestamptz '2025-05-01T00:10:00Z';\n"
        .replace("NICS", &(n2 - 1).to_string());
    let f = std::env::temp_dir().join("ipwho-bench.sql");
    std::fs::write(&f, sql)?;
    let out = std::process::Command::new("pgbench")
        .args([
            "-n",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-c",
            "32",
            "-j",
            "2",
            "-T",
            &duration.to_string(),
            "-f",
        ])
        .arg(&f)
        .arg("ipwho_bench")
        .output();
    match out {
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            println!("\n## the same lookup as SQL, pgbench -c 32 -j 2 -T {duration}");
            for l in text
                .lines()
                .filter(|l| l.starts_with("tps") || l.starts_with("latency average"))
            {
                println!("  {l}");
            }
        }
        Err(e) => println!("pgbench not available ({e})"),
    }
    Ok(())
}
