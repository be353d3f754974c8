//! Micro-benchmark of flow-log enrichment, in process (no HTTP, no Postgres).
//!
//! Generates an NSG v2 blob of N tuples (default 1,000,000) in memory over an
//! estate of NICs held in a hash-map attributor, then times:
//! (a) the floor: parse + write NDJSON, no lookups (same code path);
//! (b) enrichment with lookups, blocking API ([`ipwho::enrich::enrich_reader`]);
//! (c) enrichment through the streaming API ([`ipwho::enrich::enrich_stream`])
//!     on a Tokio runtime, input in 64 KiB chunks, output consumed and counted;
//! (d) (b) with gzip input.
//!
//! Run: `cargo run --release --example enrich_bench [-- TUPLES NICS]`.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;

use ipwho::enrich::{self, Attributor, EnrichOptions, MapAttributor, NicInfo, NoIndex, Status};
use ipwho::model::{ArmId, Mac};

struct Rng(u64);
impl Rng {
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

struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const SUB: &str = "6d1c2f3a-8b4e-4c5d-9e0f-a1b2c3d4e5f6";

fn nic_ip(i: u64) -> Ipv4Addr {
    Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8 | 4)
}

fn nic_mac(i: u64) -> String {
    format!("000D3A{:06X}", i)
}

fn estate(nics: u64) -> MapAttributor {
    let mut m = MapAttributor::new();
    for i in 0..nics {
        let rg = format!("rg-app-{}", i % 50);
        let id = ArmId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/networkInterfaces/vm-{i}-nic"
        ))
        .unwrap();
        let vm = ArmId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/vm-{i}"
        ))
        .unwrap();
        let vnet = ArmId::parse(&format!(
            "/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/vnet-{}",
            i % 8
        ))
        .unwrap();
        let nic = Arc::new(NicInfo::new(&id, Some(&vm), Some(&vnet)));
        m.add(
            nic,
            Some(Mac::parse(&nic_mac(i)).unwrap()),
            &[IpAddr::V4(nic_ip(i))],
            0,
            i64::MAX,
            Status::Confirmed,
        );
    }
    m.set_freshness(serde_json::json!({"generated": true}));
    m
}

/// `{"records":[...]}` with records of 500 tuples, one NIC (MAC) each:
/// 40% inbound from the internet (mostly denied), 40% outbound to the
/// internet, 20% to another NIC of the estate.
fn blob(tuples: u64, nics: u64, rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(tuples as usize * 75);
    out.extend_from_slice(b"{\"records\":[");
    let per = 500;
    let mut t0: u64 = 1_700_000_000;
    let mut done = 0;
    let mut first = true;
    while done < tuples {
        let n = per.min(tuples - done);
        let me = rng.below(nics);
        if !first {
            out.extend_from_slice(b"\r\n,");
        }
        first = false;
        write!(
            out,
            "{{\"time\":\"2023-11-14T22:13:20.0000000Z\",\"systemId\":\"a0fca5ce-022c-47b1-9735-89943b42f2fa\",\"category\":\"NetworkSecurityGroupFlowEvent\",\"resourceId\":\"/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-APP-{}/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/VM-{me}-NSG\",\"operationName\":\"NetworkSecurityGroupFlowEvents\",\"properties\":{{\"Version\":2,\"flows\":[",
            SUB.to_uppercase(),
            me % 50
        )
        .unwrap();
        let rules = [
            "DefaultRule_DenyAllInBound",
            "UserRule_allow-web",
            "DefaultRule_AllowInternetOutBound",
            "DefaultRule_AllowVnetOutBound",
        ];
        let mut tuples_by_rule: [Vec<String>; 4] = Default::default();
        let local = nic_ip(me);
        for _ in 0..n {
            t0 += rng.below(2);
            let r = rng.below(10);
            let public = Ipv4Addr::new(
                20 + rng.below(180) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            );
            let (rule, s) = if r < 4 {
                let deny = r < 3;
                let s = if deny {
                    format!(
                        "{t0},{public},{local},{},{},T,I,D,B,,,,",
                        1024 + rng.below(60000),
                        [22, 3389, 445, 8080][rng.below(4) as usize]
                    )
                } else {
                    format!(
                        "{t0},{public},{local},{},443,T,I,A,E,{},{},{},{}",
                        1024 + rng.below(60000),
                        rng.below(50),
                        rng.below(50000),
                        rng.below(50),
                        rng.below(500000)
                    )
                };
                (if deny { 0 } else { 1 }, s)
            } else if r < 8 {
                (
                    2,
                    format!(
                        "{t0},{local},{public},{},443,T,O,A,{},{},{},{},{}",
                        1024 + rng.below(60000),
                        ["C", "E"][rng.below(2) as usize],
                        rng.below(90),
                        rng.below(90000),
                        rng.below(90),
                        rng.below(900000)
                    ),
                )
            } else {
                let other = nic_ip(rng.below(nics));
                (
                    3,
                    format!(
                        "{t0},{local},{other},{},{},U,O,A,B,,,,",
                        1024 + rng.below(60000),
                        [53, 123, 1433][rng.below(3) as usize]
                    ),
                )
            };
            tuples_by_rule[rule].push(s);
        }
        let mut first_rule = true;
        for (rule, ts) in rules.iter().zip(tuples_by_rule.iter()) {
            if !first_rule {
                out.push(b',');
            }
            first_rule = false;
            write!(
                out,
                "{{\"rule\":\"{rule}\",\"flows\":[{{\"mac\":\"{}\",\"flowTuples\":[",
                nic_mac(me)
            )
            .unwrap();
            for (k, t) in ts.iter().enumerate() {
                if k > 0 {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(t.as_bytes());
                out.push(b'"');
            }
            out.extend_from_slice(b"]}]}");
        }
        out.extend_from_slice(b"]}}");
        done += n;
    }
    out.extend_from_slice(b"\r\n]}");
    out
}

fn time<F: FnMut() -> (u64, u64)>(label: &str, tuples: u64, runs: usize, mut f: F) -> f64 {
    let mut best = f64::MAX;
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let (out_bytes, n) = f();
        let s = t.elapsed().as_secs_f64();
        assert_eq!(n, tuples, "{label}: tuples out");
        best = best.min(s);
        bytes = out_bytes;
    }
    println!(
        "{label:<38} {:>8.3} s  {:>12.0} tuples/s  {:>8.1} MB out",
        best,
        tuples as f64 / best,
        bytes as f64 / 1e6
    );
    best
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let tuples = args.first().copied().unwrap_or(1_000_000);
    let nics = args.get(1).copied().unwrap_or(200_000);
    let runs = 3;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    let attr: Arc<dyn Attributor> = Arc::new(estate(nics));
    let input = blob(tuples, nics, &mut rng);
    println!(
        "generated {tuples} tuples ({:.1} MB blob) over {nics} NICs in {:.1} s",
        input.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let floor = time("(a) floor: parse + write, no lookups", tuples, runs, || {
        let mut w = Count(0);
        let s = enrich::enrich_reader(
            &input[..],
            &mut w,
            EnrichOptions::floor(),
            Arc::new(NoIndex),
        )
        .unwrap();
        (w.0, s.tuples_out)
    });
    let full = time("(b) enrich, hash-map attributor", tuples, runs, || {
        let mut w = Count(0);
        let s = enrich::enrich_reader(&input[..], &mut w, EnrichOptions::default(), attr.clone())
            .unwrap();
        (w.0, s.tuples_out)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let input_bytes = bytes::Bytes::from(input.clone());
    let streamed = time("(c) enrich_stream (64 KiB chunks in)", tuples, runs, || {
        rt.block_on(async {
            use futures::StreamExt;
            let chunks: Vec<Result<bytes::Bytes, io::Error>> = (0..input_bytes.len())
                .step_by(64 << 10)
                .map(|i| Ok(input_bytes.slice(i..(i + (64 << 10)).min(input_bytes.len()))))
                .collect();
            let (out, summary) = enrich::enrich_stream_with_summary(
                futures::stream::iter(chunks),
                EnrichOptions::default(),
                attr.clone(),
            );
            let mut out = std::pin::pin!(out);
            let mut n = 0u64;
            while let Some(c) = out.next().await {
                n += c.unwrap().len() as u64;
            }
            (n, summary.await.unwrap().tuples_out)
        })
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&input).unwrap();
    let gz = gz.finish().unwrap();
    let gzipped = time("(d) enrich, gzip input", tuples, runs, || {
        let mut w = Count(0);
        let s =
            enrich::enrich_reader(&gz[..], &mut w, EnrichOptions::default(), attr.clone()).unwrap();
        (w.0, s.tuples_out)
    });
    println!(
        "enrich/floor time: blocking {:.2}x, streaming {:.2}x, gzip {:.2}x (gzip blob {:.1} MB)",
        full / floor,
        streamed / floor,
        gzipped / floor,
        gz.len() as f64 / 1e6
    );
}
