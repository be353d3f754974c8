//! End-to-end benchmark of flow-log enrichment (issue 4), in one run:
//!
//! 1. **ipwho over HTTP**: a server process (this program with `--serve`:
//!    the service's own router, `ipwho::api::serve`, over an
//!    `ipwho::index::Index` of generated claims) is sent the blob as
//!    `POST /v1/enrich`; the whole NDJSON response is read and its summary
//!    line checked;
//! 2. **the floor**: the same request with `?floor=true` (parse and write,
//!    no lookups, the same code path);
//! 3. **the naive approach**: the tuples parsed, loaded with `COPY` into
//!    Postgres and joined to a claims table holding the same claims
//!    (`JOIN claims c ON c.ip = t.src_ip AND c.possible @> t.time`, both
//!    ends), the result read back with `COPY ... TO STDOUT`, in a scratch
//!    database `ipwho_bench_enrich` created and dropped here.
//!
//! The estate: `--claims` claims (default 1,000,000) over 8 VNets in 4
//! subscriptions, VNets in different subscriptions reusing the same address
//! space; every IP is held by 8 NICs one after the other (a day each;
//! scale-set churn). Half the IPs change hands by Activity Log events (exact
//! ends), half are seen by hourly snapshots only (an hour of overlap:
//! ambiguous). The blob: `--tuples` tuples (default 1,000,000) of VNet flow
//! logs (version 4), one record per (NIC, minute): 35% inbound from the
//! internet, 35% outbound to it, 20% to a NIC of the same VNet, 5% to a NIC of
//! another VNet, 5% to an address nobody holds.
//!
//! The server's memory: the index size is its RSS after building the index
//! minus before; the peak during each request is `VmHWM` after resetting it
//! (`/proc/PID/clear_refs`) just before the request.
//!
//! Run: `cargo run --release --example enrich_e2e [-- --tuples N --claims N --runs R
//! --workers W --no-naive --inproc --no-http]` (`--workers`: the server's
//! `IPWHO_ENRICH_WORKERS`; `--inproc`: also the pipeline in process with 1
//! and 2 workers; `--no-http`: only that)
//! (`DATABASE_URL` names the Postgres server for the naive approach).

use std::io::{BufRead, BufReader, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use ipwho::engine::{Claim, ClaimKey, EvidenceKind, EvidenceRef, NEG_INF, POS_INF, Window};
use ipwho::model::{ArmId, Mac};

const HOUR: i64 = 3_600_000_000;
const DAY: i64 = 24 * HOUR;
const MIN: i64 = 60_000_000;
/// 2025-03-03T00:00:00Z
const T0: i64 = 1_740_960_000_000_000;
/// NICs per IP, one after the other, a day each.
const PER_SLOT: u64 = 8;
const VNETS: u64 = 8;
const SUBS: [&str; 4] = [
    "6d1c2f3a-8b4e-4c5d-9e0f-a1b2c3d4e5f6",
    "0b6f8e2a-4c1d-4e8f-9a3b-5c7d9e1f2a4b",
    "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f",
];

// ---------------------------------------------------------------------------
// the estate

struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn vnet_of(slot: u64) -> u64 {
    slot % VNETS
}

fn sub_of_vnet(v: u64) -> &'static str {
    SUBS[(v / 2) as usize]
}

/// VNets `v` and `v + 4` (other subscriptions) use the same address space.
fn slot_ip(slot: u64) -> Ipv4Addr {
    let v = vnet_of(slot);
    let h = slot / VNETS;
    Ipv4Addr::new(
        10,
        ((v % 4) * 64 + h / 250) as u8,
        (4 + h % 250) as u8,
        4 + (h % 7) as u8,
    )
}

/// An address of VNet `v`'s space that no NIC holds.
fn unused_ip(v: u64, r: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, ((v % 4) * 64 + r % 64) as u8, 254, 200 + (r % 50) as u8)
}

fn vnet_id(v: u64) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-{v}",
        sub_of_vnet(v)
    )
}

fn nic_no(slot: u64, k: u64) -> u64 {
    slot * PER_SLOT + k
}

fn mac_of(n: u64) -> String {
    format!("00{:010X}", 0x000D_3A00_0000 + n)
}

/// When the `k`-th NIC of `slot` took the IP (truth): a day after the
/// previous one, give or take two hours. `k = 0` holds it from the start.
fn change_at(slot: u64, k: u64) -> i64 {
    if k == 0 {
        return NEG_INF;
    }
    let jitter = (mix(slot, k) % (4 * HOUR as u64)) as i64 - 2 * HOUR;
    T0 + k as i64 * DAY + jitter
}

/// Snapshots are hourly, a minute past the hour.
fn tick_after(t: i64) -> i64 {
    (t - T0 - MIN).div_euclid(HOUR) * HOUR + HOUR + T0 + MIN
}

/// The last snapshot (all IPs last seen then): end of the history.
fn history_end() -> i64 {
    tick_after(T0 + PER_SLOT as i64 * DAY + 6 * HOUR) - HOUR
}

/// One claim as the generator sees it.
struct Spec {
    slot: u64,
    k: u64,
    certain: Window,
    possible: Window,
    exact: bool,
}

/// The claims of one slot: `PER_SLOT` NICs back to back. Event slots (even)
/// change hands at known instants; snapshot slots (odd) are seen hourly,
/// so a change leaves an hour in which both NICs may have held the IP.
fn slot_specs(slot: u64) -> impl Iterator<Item = Spec> {
    let exact = slot.is_multiple_of(2);
    let end = history_end();
    (0..PER_SLOT).map(move |k| {
        let from = change_at(slot, k);
        let until = if k + 1 < PER_SLOT {
            change_at(slot, k + 1)
        } else {
            POS_INF
        };
        let (certain, possible) = if exact {
            let c_start = if k == 0 { T0 - DAY } else { from };
            let c_end = if until == POS_INF { end } else { until };
            (
                Window {
                    start: c_start,
                    end: c_end,
                },
                Window {
                    start: if k == 0 { NEG_INF } else { from },
                    end: until,
                },
            )
        } else {
            let first = if k == 0 { T0 - DAY } else { tick_after(from) };
            let last = if until == POS_INF {
                end
            } else {
                tick_after(until) - HOUR
            };
            (
                Window {
                    start: first,
                    end: last + 1,
                },
                Window {
                    start: if k == 0 { NEG_INF } else { first - HOUR },
                    end: if until == POS_INF {
                        POS_INF
                    } else {
                        last + HOUR
                    },
                },
            )
        };
        Spec {
            slot,
            k,
            certain,
            possible,
            exact,
        }
    })
}

fn specs(claims: u64) -> impl Iterator<Item = Spec> {
    (0..claims.div_ceil(PER_SLOT)).flat_map(slot_specs)
}

struct Ids {
    nic: String,
    vm: String,
    subnet: String,
    vnet: String,
}

fn ids(slot: u64, k: u64) -> Ids {
    let v = vnet_of(slot);
    let sub = sub_of_vnet(v);
    let rg = format!("rg-app-{}", slot % 40);
    Ids {
        nic: format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/vm-{slot}-{k}-nic"
        ),
        vm: format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/vm-{slot}-{k}"
        ),
        subnet: format!("{}/subnets/default", vnet_id(v)),
        vnet: vnet_id(v),
    }
}

fn claim(s: &Spec) -> Claim {
    let i = ids(s.slot, s.k);
    let nic = ArmId::parse(&i.nic).unwrap();
    let vm = ArmId::parse(&i.vm).unwrap();
    let vnet = ArmId::parse(&i.vnet).unwrap();
    let kind = if s.exact {
        EvidenceKind::ActivityWrite
    } else {
        EvidenceKind::Snapshot
    };
    let ev = |at: i64, kind: EvidenceKind| EvidenceRef {
        kind,
        id: format!("{}-{}", kind.as_str(), at / MIN),
        at,
    };
    Claim {
        key: ClaimKey {
            nic: nic.key().to_string(),
            scope: vnet.key().to_string(),
            ip: IpNet::from(IpAddr::V4(slot_ip(s.slot))),
            vm: vm.key().to_string(),
        },
        nic_name: nic.name().to_string(),
        mac: Some(Mac::parse(&mac_of(nic_no(s.slot, s.k))).unwrap()),
        subnet: Some(ArmId::parse(&i.subnet).unwrap()),
        nic,
        vm: Some(vm),
        vnet: Some(vnet),
        certain: s.certain,
        possible: s.possible,
        start_exact: s.exact && s.k > 0,
        end_exact: s.exact && s.possible.end != POS_INF,
        before: (s.possible.start != NEG_INF).then(|| ev(s.possible.start, kind)),
        first: ev(s.certain.start, kind),
        last: ev(s.certain.end - 1, EvidenceKind::Snapshot),
        after: (s.possible.end != POS_INF).then(|| ev(s.possible.end, kind)),
        live: false,
    }
}

/// Which of a slot's NICs held its IP at `t` (truth).
fn holder(slot: u64, t: i64) -> u64 {
    (1..PER_SLOT)
        .rev()
        .find(|&k| change_at(slot, k) <= t)
        .unwrap_or(0)
}

/// The VNet flow-log blob: `{"records":[...]}`, one record per (NIC,
/// minute), 100 to 900 tuples each.
fn blob(tuples: u64, slots: u64, seed: u64) -> Vec<u8> {
    use std::io::Write;
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(tuples as usize * 90);
    out.extend_from_slice(b"{\"records\":[");
    let span = history_end() + 6 * HOUR - (T0 + 12 * HOUR);
    let mut done = 0;
    let mut groups: [Vec<u8>; 4] = Default::default();
    const RULES: [&str; 4] = [
        "DefaultRule_DenyAllInBound",
        "UserRule_allow-web",
        "DefaultRule_AllowInternetOutBound",
        "DefaultRule_AllowVnetOutBound",
    ];
    while done < tuples {
        let n = (100 + rng.below(800)).min(tuples - done);
        let slot = rng.below(slots);
        let v = vnet_of(slot);
        let minute = (T0 + 12 * HOUR + rng.below(span as u64) as i64).div_euclid(MIN) * MIN;
        let k = holder(slot, minute);
        let local = slot_ip(slot);
        for g in groups.iter_mut() {
            g.clear();
        }
        for _ in 0..n {
            let t_ms = (minute + rng.below(60_000_000) as i64) / 1000;
            let public = Ipv4Addr::new(
                20 + rng.below(180) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            );
            let r = rng.below(100);
            let eph = 32768 + rng.below(28000);
            let proto = if rng.below(10) < 9 { 6 } else { 17 };
            let counters = |rng: &mut Rng| {
                let (p1, p2) = (1 + rng.below(199), 1 + rng.below(199));
                format!(
                    "{p1},{},{p2},{}",
                    p1 * (60 + rng.below(1340)),
                    p2 * (60 + rng.below(1340))
                )
            };
            let (g, line) = if r < 35 {
                let deny = r < 25;
                let port = [22, 3389, 443, 8080][rng.below(4) as usize];
                if deny {
                    (
                        0,
                        format!("{t_ms},{public},{local},{eph},{port},{proto},I,D,NX,0,0,0,0"),
                    )
                } else {
                    (
                        1,
                        format!(
                            "{t_ms},{public},{local},{eph},443,{proto},I,E,NX,{}",
                            counters(&mut rng)
                        ),
                    )
                }
            } else if r < 70 {
                let st = ["B", "C", "E"][rng.below(3) as usize];
                let c = if st == "B" {
                    "0,0,0,0".to_string()
                } else {
                    counters(&mut rng)
                };
                (
                    2,
                    format!("{t_ms},{local},{public},{eph},443,{proto},O,{st},NX,{c}"),
                )
            } else {
                let peer = if r < 90 {
                    // Same VNet.
                    slot_ip(rng.below(slots / VNETS) * VNETS + v)
                } else if r < 95 {
                    // Another VNet (a peering), maybe another subscription.
                    let v2 = (v + 1 + rng.below(VNETS - 1)) % VNETS;
                    slot_ip(rng.below(slots / VNETS) * VNETS + v2)
                } else {
                    unused_ip(v, rng.next())
                };
                let port = [53, 123, 1433, 5432, 6379][rng.below(5) as usize];
                (
                    3,
                    format!(
                        "{t_ms},{local},{peer},{eph},{port},{proto},O,E,NX,{}",
                        counters(&mut rng)
                    ),
                )
            };
            let buf = &mut groups[g];
            if !buf.is_empty() {
                buf.push(b',');
            }
            buf.push(b'"');
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'"');
        }
        if done > 0 {
            out.push(b',');
        }
        let sub = sub_of_vnet(v).to_uppercase();
        write!(
            out,
            "{{\"time\":\"{}\",\"flowLogVersion\":4,\"flowLogGUID\":\"66aa66aa-6a66-66a6-a6a6-a66aa6aa6a66\",\"macAddress\":\"{}\",\"category\":\"FlowLogFlowEvent\",\"flowLogResourceID\":\"/SUBSCRIPTIONS/{sub}/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/VNET-{v}-FLOWLOG\",\"targetResourceID\":\"{}\",\"operationName\":\"FlowLogFlowEvent\",\"flowRecords\":{{\"flows\":[{{\"aclID\":\"{:08x}-1111-4222-8333-444455556666\",\"flowGroups\":[",
            ts(minute + MIN + 1_234_567),
            mac_of(nic_no(slot, k)),
            vnet_id(v),
            v
        )
        .unwrap();
        let mut first = true;
        for (g, rule) in groups.iter().zip(RULES) {
            if g.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write!(out, "{{\"rule\":\"{rule}\",\"flowTuples\":[").unwrap();
            out.extend_from_slice(g);
            out.extend_from_slice(b"]}");
        }
        out.extend_from_slice(b"]}]}}");
        done += n;
    }
    out.extend_from_slice(b"]}");
    out
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

fn serve(claims: u64) -> anyhow::Result<()> {
    let me = std::process::id();
    let before = status_kib(me, "VmRSS:");
    let t = Instant::now();
    let claims: Vec<Claim> = specs(claims).map(|s| claim(&s)).collect();
    let index = Arc::new(ipwho::index::Index::from_claims(claims, Default::default()));
    let after = status_kib(me, "VmRSS:");
    let built = t.elapsed();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        // The enrichment endpoint never touches Postgres: a lazy pool that
        // never connects.
        let pool = sqlx::PgPool::connect_lazy(&url)?;
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
        };
        // Stops when the parent closes our stdin.
        let stop = async {
            let _ = tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                while std::io::stdin()
                    .read_line(&mut s)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {}
            })
            .await;
        };
        ipwho::api::serve(listener, state, stop).await?;
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
    let mut r = client.post(url).body(body).send().await?;
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

// ---------------------------------------------------------------------------
// the naive approach

struct Naive {
    load_secs: f64,
    join_secs: f64,
    rows: u64,
}

async fn naive(url: &str, claims: u64, input: &[u8]) -> anyhow::Result<(Naive, f64)> {
    use sqlx::Connection as _;
    use sqlx::postgres::PgConnectOptions;
    use std::str::FromStr as _;
    const DB: &str = "ipwho_bench_enrich";
    let mut admin = sqlx::PgConnection::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DB}")))
        .execute(&mut admin)
        .await?;
    let result = async {
        let opts = PgConnectOptions::from_str(url)?.database(DB);
        let mut c = sqlx::PgConnection::connect_with(&opts).await?;
        let t = Instant::now();
        sqlx::raw_sql(
            "CREATE TABLE claims (nic text NOT NULL, vm text, scope text NOT NULL, ip inet NOT NULL, \
             possible tstzrange NOT NULL, certain tstzrange NOT NULL)",
        )
        .execute(&mut c)
        .await?;
        let range = |w: &Window| {
            let b = |m: i64| {
                if m == NEG_INF || m == POS_INF {
                    String::new()
                } else {
                    ts(m)
                }
            };
            format!("\"[{},{})\"", b(w.start), b(w.end))
        };
        let mut copy = c
            .copy_in_raw("COPY claims FROM STDIN WITH (FORMAT csv)")
            .await?;
        let mut buf = String::with_capacity(8 << 20);
        for s in specs(claims) {
            let i = ids(s.slot, s.k);
            use std::fmt::Write as _;
            writeln!(
                buf,
                "{},{},{},{},{},{}",
                i.nic.to_ascii_lowercase(),
                i.vm.to_ascii_lowercase(),
                i.vnet.to_ascii_lowercase(),
                slot_ip(s.slot),
                range(&s.possible),
                range(&s.certain)
            )?;
            if buf.len() > 4 << 20 {
                copy.send(buf.as_bytes()).await?;
                buf.clear();
            }
        }
        copy.send(buf.as_bytes()).await?;
        copy.finish().await?;
        sqlx::raw_sql(
            "CREATE INDEX claims_by_ip ON claims USING gist (ip inet_ops, possible); \
             CREATE INDEX claims_by_ip_btree ON claims (ip); ANALYZE claims",
        )
        .execute(&mut c)
        .await?;
        let setup = t.elapsed().as_secs_f64();

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
            let mut d = ipwho::enrich::Decoder::new(None);
            let mut f = |item: ipwho::enrich::Decoded<'_>| {
                if let ipwho::enrich::Decoded::Tuple(ctx, t) = item {
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
                "COPY (SELECT t.*, s.nic, s.vm, s.scope, d.nic, d.vm, d.scope \
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
        anyhow::Ok((
            Naive {
                load_secs,
                join_secs,
                rows: n,
            },
            setup,
        ))
    }
    .await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DB} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let r = result?;
    dropped?;
    Ok(r)
}

// ---------------------------------------------------------------------------

struct Args {
    tuples: u64,
    claims: u64,
    runs: usize,
    naive: bool,
    serve: bool,
    /// Also time the pipeline in process (no HTTP) with 1 and 2 workers.
    inproc: bool,
    /// Only that.
    no_http: bool,
    /// The server's `IPWHO_ENRICH_WORKERS` (default: inherited, else 1).
    workers: Option<u64>,
}

fn args() -> Args {
    let mut a = Args {
        tuples: 1_000_000,
        claims: 1_000_000,
        runs: 3,
        naive: true,
        serve: false,
        inproc: false,
        no_http: false,
        workers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{k} needs a number"))
        };
        match k.as_str() {
            "--tuples" => a.tuples = num(),
            "--claims" => a.claims = num(),
            "--runs" => a.runs = num() as usize,
            "--no-naive" => a.naive = false,
            "--workers" => a.workers = Some(num()),
            "--serve" => a.serve = true,
            "--inproc" => a.inproc = true,
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

/// The pipeline in process, best of `runs`: floor and enrich with 1 and 2
/// workers, into a byte counter.
fn inproc(claims: u64, tuples: u64, input: &[u8], runs: usize) {
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
    let index: Arc<dyn Attributor> = Arc::new(ipwho::index::Index::from_claims(
        specs(claims).map(|s| claim(&s)).collect(),
        Default::default(),
    ));
    for workers in [1, 2] {
        for floor in [true, false] {
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
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> anyhow::Result<()> {
    let a = args();
    if a.serve {
        return serve(a.claims);
    }
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());

    if a.no_http {
        let input = blob(a.tuples, a.claims.div_ceil(PER_SLOT), 0x5EED);
        inproc(a.claims, a.tuples, &input, a.runs);
        return Ok(());
    }
    // The server builds its index while we generate the blob.
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["--serve", "--claims", &a.claims.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
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
    let mut child = cmd.spawn()?;
    let server = child.id();
    let t = Instant::now();
    let slots = a.claims.div_ceil(PER_SLOT);
    let input = bytes::Bytes::from(blob(a.tuples, slots, 0x5EED));
    println!(
        "blob: {} tuples, {:.1} MB (VNet flow logs v4), generated in {:.1} s",
        a.tuples,
        input.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready)?;
    let field = |k: &str| -> u64 {
        ready
            .split_whitespace()
            .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("server said {ready:?}"))
    };
    let (port, claims) = (field("port"), field("claims"));
    let (rss0, rss1) = (field("rss_before_kib"), field("rss_after_kib"));
    let index_kib = rss1.saturating_sub(rss0);
    println!(
        "server pid {server}: index of {claims} claims built in {:.1} s, RSS {:.0} -> {:.0} MiB (index {:.0} MiB)",
        field("build_ms") as f64 / 1e3,
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
    let mut best_floor: Option<Posted> = None;
    let mut best_full: Option<Posted> = None;
    for run in 0..a.runs {
        for (floor, best) in [(true, &mut best_floor), (false, &mut best_full)] {
            let url = if floor {
                format!("{base}?floor=true")
            } else {
                base.clone()
            };
            let p = rt.block_on(post(&client, &url, input.clone(), server))?;
            anyhow::ensure!(
                p.tuples_out == a.tuples && p.lines == a.tuples + 1,
                "run {run}: {} tuples out, {} lines: {}",
                p.tuples_out,
                p.lines,
                p.summary
            );
            println!(
                "  run {run} {:<6} {:>7.3} s {:>10.0} tuples/s {:>8.1} MB out, server peak RSS {:>6.0} MiB, CPU s (user+sys): server {:.2}+{:.2}, client {:.2}+{:.2}",
                if floor { "floor" } else { "enrich" },
                p.secs,
                a.tuples as f64 / p.secs,
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
    let (floor, full) = (best_floor.unwrap(), best_full.unwrap());
    println!(
        "source statuses: {}\ndestination statuses: {}",
        full.summary["source"], full.summary["destination"]
    );
    drop(child.stdin.take());
    let _ = child.wait();
    if a.inproc {
        inproc(a.claims, a.tuples, &input, a.runs);
    }

    let naive = if a.naive {
        let t = Instant::now();
        let (n, setup) = rt.block_on(naive(&url, a.claims, &input))?;
        println!(
            "naive: claims table set up in {setup:.1} s (not timed); tuples parsed and loaded in {:.1} s, joined and read in {:.1} s ({} rows); total {:.1} s",
            n.load_secs,
            n.join_secs,
            n.rows,
            t.elapsed().as_secs_f64() - setup
        );
        Some(n)
    } else {
        None
    };

    let tps = |s: f64| a.tuples as f64 / s;
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
