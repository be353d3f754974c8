//! Tests of the whole pipeline: the real flow-log samples, bad tuples among
//! good ones, gzip, JSON Lines, flat input, scoping, streaming, and a
//! property test that no input makes the parsers panic.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::model::{ArmId, Mac};

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/samples/azure");
const NSG_V2: &str =
    "elastic-integrations__azure_network_watcher_nsg__sample_logs__testdata.log.json";
const NSG_V1: &str =
    "MicrosoftDocs-azure-docs__network-watcher__flow-logs-read__nsg_v1_record__TRUNCATED.json";
const VNET_BLOB: &str =
    "elastic-integrations__azure_network_watcher_vnet__sample_logs__testdata.log.json";
const VNET_BARE: &str = "elastic-integrations__azure_network_watcher_vnet__test-vnet.log";
const VNET_DOCS: &str =
    "MicrosoftDocs-azure-docs__network-watcher__flow-logs-read__vnet_record.json";

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{SAMPLES}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const SUB: &str = "00000000-0000-0000-0000-000000000000";

fn nic(name: &str, vnet: &str) -> Arc<NicInfo> {
    let id = ArmId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/{name}"
    ))
    .unwrap();
    let vm = ArmId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/VmRg/providers/Microsoft.Compute/virtualMachines/vm-{name}"
    ))
    .unwrap();
    let vnet = ArmId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/{vnet}"
    ))
    .unwrap();
    Arc::new(NicInfo::new(&id, Some(&vm), Some(&vnet)))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The NICs behind the samples' MACs, holding the samples' private IPs for
/// all time.
fn index() -> Arc<MapAttributor> {
    let mut m = MapAttributor::new();
    for (name, mac, addr, vnet) in [
        ("nsgv2", "000D3AF87856", "10.5.16.4", "fabrikam"),
        ("nsgv1", "000D3A18077E", "10.0.0.4", "contoso"),
        ("vnetblob", "00224871C205", "10.0.0.6", "myVNet"),
        ("vnetbare", "0022487BC205", "10.0.0.7", "myVNet"),
        ("vnetdocs", "0022485D8CF8", "192.168.0.4", "ContosoVnetWcus"),
    ] {
        m.add(
            nic(name, vnet),
            Some(Mac::parse(mac).unwrap()),
            &[ip(addr)],
            0,
            i64::MAX,
            Status::Confirmed,
        );
    }
    m.set_freshness(serde_json::json!({"seq": 42}));
    Arc::new(m)
}

fn run_with(
    input: &[u8],
    opts: EnrichOptions,
    attr: Arc<dyn Attributor>,
) -> (Vec<Value>, Vec<Value>, Value) {
    let mut out = Vec::new();
    let summary = enrich_reader(input, &mut out, opts, attr).unwrap();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}")))
        .collect();
    let (last, rest) = lines.split_last().expect("a summary line");
    let s = last.get("ipwho.summary").expect("summary last").clone();
    assert_eq!(s, serde_json::to_value(&summary).unwrap());
    let errors = rest
        .iter()
        .filter_map(|l| l.get("ipwho.error").cloned())
        .collect();
    let tuples = rest
        .iter()
        .filter(|l| l.get("ipwho.error").is_none())
        .cloned()
        .collect();
    (tuples, errors, s)
}

fn run(input: &[u8]) -> (Vec<Value>, Vec<Value>, Value) {
    run_with(input, EnrichOptions::default(), index())
}

#[test]
fn nsg_v2_sample() {
    let (t, e, s) = run(&sample(NSG_V2));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 11);
    assert_eq!(s["tuples_in"], 11);
    assert_eq!(s["records_in"], 2);
    assert_eq!(s["formats"]["nsg"], 2);
    assert_eq!(s["index"]["seq"], 42);
    assert_eq!(s["complete"], true);
    // Deny/begin tuple with empty counters: counts absent, not 0.
    let b = &t[0];
    assert_eq!(b["@timestamp"], "2018-11-13T12:00:02Z");
    assert_eq!(b["source"]["ip"], "94.102.49.190");
    assert_eq!(b["source"]["port"], 28746);
    assert!(b["source"].get("packets").is_none());
    assert!(b["destination"].get("bytes").is_none());
    assert!(b.get("network").unwrap().get("packets").is_none());
    assert_eq!(b["network"]["transport"], "udp");
    assert_eq!(b["network"]["iana_number"], "17");
    assert_eq!(b["network"]["direction"], "inbound");
    assert_eq!(b["event"]["action"], "deny");
    assert_eq!(b["event"]["outcome"], "failure");
    assert_eq!(b["azure"]["flowlog"]["state"], "begin");
    assert_eq!(b["azure"]["flowlog"]["version"], 2);
    assert_eq!(b["azure"]["flowlog"]["rule"], "DefaultRule_DenyAllInBound");
    assert_eq!(b["azure"]["flowlog"]["mac"], "000D3AF87856");
    assert_eq!(
        b["azure"]["flowlog"]["nsg_id"],
        "/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/FABRIKAMRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/FABRIAKMVM1-NSG"
    );
    assert_eq!(
        (
            b["azure"]["flowlog"]["record"].as_u64(),
            b["azure"]["flowlog"]["tuple"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // Inbound: the destination is the capturing NIC, by MAC.
    let d = &b["destination"]["ipwho"];
    assert_eq!(d["status"], "confirmed");
    assert_eq!(d["via"], "mac");
    assert_eq!(d["ip_held"], true);
    assert_eq!(d["nic"]["name"], "nsgv2");
    assert_eq!(d["vm"]["name"], "vm-nsgv2");
    assert_eq!(d["vm"]["resource_group"], "VmRg");
    assert_eq!(d["vm"]["subscription"], SUB);
    assert!(
        d["vnet"]
            .as_str()
            .unwrap()
            .ends_with("/virtualNetworks/fabrikam")
    );
    assert_eq!(b["source"]["ipwho"]["status"], "unknown");
    assert_eq!(b["source"]["ipwho"]["via"], "not_looked_up");
    // End tuple with counters.
    let e4 = t
        .iter()
        .find(|l| l["destination"]["ip"] == "13.67.143.117")
        .unwrap();
    assert_eq!(e4["source"]["packets"], 1);
    assert_eq!(e4["source"]["bytes"], 66);
    assert_eq!(e4["destination"]["packets"], 1);
    assert_eq!(e4["network"]["bytes"], 132);
    assert_eq!(e4["network"]["direction"], "outbound");
    assert_eq!(e4["source"]["ipwho"]["via"], "mac");
    assert_eq!(e4["azure"]["flowlog"]["tuple"], 4);
    // Second record's tuples are indexed from 0 again.
    assert_eq!(t[7]["azure"]["flowlog"]["record"], 1);
    assert_eq!(t[7]["azure"]["flowlog"]["tuple"], 0);
    assert_eq!(s["destination"]["confirmed"], 7);
    assert_eq!(s["source"]["confirmed"], 4);
    assert_eq!(s["source"]["not_looked_up"], 7);
}

#[test]
fn nsg_v1_sample_with_empty_rules() {
    let (t, e, s) = run(&sample(NSG_V1));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 8);
    assert_eq!(s["records_in"], 1);
    let first = &t[0];
    assert_eq!(first["@timestamp"], "2017-06-16T20:58:42Z");
    assert_eq!(first["azure"]["flowlog"]["version"], 1);
    assert!(first["azure"]["flowlog"].get("state").is_none());
    assert_eq!(first["event"]["action"], "allow");
    assert_eq!(first["source"]["ipwho"]["nic"]["name"], "nsgv1");
    let web = &t[4];
    assert_eq!(web["azure"]["flowlog"]["rule"], "UserRule_web-rule");
    assert_eq!(web["azure"]["flowlog"]["tuple"], 4);
    assert_eq!(web["destination"]["port"], 80);
    assert_eq!(web["destination"]["ipwho"]["status"], "confirmed");
}

#[test]
fn vnet_blob_sample() {
    let (t, e, s) = run(&sample(VNET_BLOB));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 19);
    assert_eq!(s["formats"]["vnet"], 1);
    let f = &t[0];
    assert_eq!(f["@timestamp"], "2022-09-14T09:00:03.599Z");
    assert_eq!(f["network"]["transport"], "tcp");
    assert_eq!(f["azure"]["flowlog"]["state"], "begin");
    assert_eq!(f["azure"]["flowlog"]["encryption"], "NX");
    assert_eq!(f["azure"]["flowlog"]["format"], "vnet");
    assert_eq!(f["azure"]["flowlog"]["version"], 4);
    assert_eq!(
        f["azure"]["flowlog"]["acl_id"],
        "00000000-1234-abcd-ef00-c1c2c3c4c5c6"
    );
    assert!(
        f["azure"]["flowlog"]["target_id"]
            .as_str()
            .unwrap()
            .ends_with("/virtualNetworks/myVNet")
    );
    assert!(
        f["azure"]["flowlog"]["flow_log_id"]
            .as_str()
            .unwrap()
            .ends_with("/FLOWLOGS/VNETFLOWLOG")
    );
    // VNet begin tuples carry literal zeros: 0, not absent.
    assert_eq!(f["source"]["packets"], 0);
    assert_eq!(f["source"]["ipwho"]["nic"]["name"], "vnetblob");
    let end = &t[1];
    assert_eq!(end["source"]["bytes"], 767);
    assert_eq!(end["destination"]["bytes"], 1580);
    let deny = t
        .iter()
        .find(|l| l["source"]["ip"] == "101.33.218.153")
        .unwrap();
    assert_eq!(deny["azure"]["flowlog"]["state"], "deny");
    assert_eq!(deny["event"]["action"], "deny");
    assert_eq!(deny["destination"]["ipwho"]["via"], "mac");
    assert_eq!(
        deny["azure"]["flowlog"]["rule"],
        "BlockHighRiskTCPPortsFromInternet"
    );
    assert_eq!(deny["azure"]["flowlog"]["tuple"], 10);
}

#[test]
fn vnet_bare_record_with_mixed_case_mac() {
    let (t, e, _) = run(&sample(VNET_BARE));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["azure"]["flowlog"]["mac"], "0022487BC205");
    // The capturing NIC is known by MAC but its IP is not the tuple's.
    assert_eq!(t[0]["source"]["ipwho"]["status"], "mac_mismatch");
    assert_eq!(t[0]["source"]["ipwho"]["ip_held"], false);
    assert_eq!(t[0]["source"]["ipwho"]["nic"]["name"], "vnetbare");
    assert_eq!(t[1]["destination"]["bytes"], 0);
}

#[test]
fn vnet_docs_pretty_record() {
    let (t, e, s) = run(&sample(VNET_DOCS));
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t.len(), 10);
    assert_eq!(s["records_in"], 1);
    assert_eq!(
        t[0]["azure"]["flowlog"]["rule"],
        "BlockHighRiskTCPPortsFromInternet_456b4993-6e57-4e46-aa4d-81767afff09c"
    );
    assert_eq!(t[0]["@timestamp"], "2023-07-09T03:58:51.557Z");
    assert_eq!(t[0]["destination"]["ipwho"]["vm"]["name"], "vm-vnetdocs");
}

#[test]
fn floor_mode_writes_the_same_tuples_without_lookups() {
    let input = sample(NSG_V2);
    let (t, _, s) = run_with(&input, EnrichOptions::floor(), Arc::new(NoIndex));
    let (full, _, _) = run(&input);
    assert_eq!(t.len(), 11);
    assert_eq!(s["lookups"], false);
    assert_eq!(s["index"], Value::Null);
    for (a, mut b) in t.into_iter().zip(full) {
        assert!(a["source"].get("ipwho").is_none());
        b["source"].as_object_mut().unwrap().remove("ipwho");
        b["destination"].as_object_mut().unwrap().remove("ipwho");
        assert_eq!(a, b);
    }
}

#[test]
fn one_garbage_tuple_is_reported_and_the_rest_enriched() {
    let blob = String::from_utf8(sample(NSG_V2)).unwrap().replacen(
        "\"1542110424,176.119.4.10,10.5.16.4,56509,59336,T,I,D,B,,,,\"",
        "\"1542110424,176.119.4.10,10.5.16.4,56509,99999,T,I,D,B,,,,\"",
        1,
    );
    let (t, e, s) = run(blob.as_bytes());
    assert_eq!(t.len(), 10);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["record"], 0);
    assert_eq!(e[0]["tuple"], 1);
    assert_eq!(e[0]["path"], "properties.flows[0].flows[0].flowTuples[1]");
    assert!(
        e[0]["reason"]
            .as_str()
            .unwrap()
            .contains("destination port")
    );
    assert_eq!(s["tuples_in"], 11);
    assert_eq!(s["tuples_rejected"], 1);
    assert_eq!(s["errors_total"], 1);
    assert_eq!(s["errors"][0], e[0]);
    // A broken record between two good ones.
    let two: Value = serde_json::from_slice(&sample(NSG_V2)).unwrap();
    let recs = two["records"].as_array().unwrap();
    let input = format!(
        "{{\"records\":[{},{{\"properties\":{{\"flows\":\"x\"}}}},{}]}}",
        recs[0], recs[1]
    );
    let (t, e, s) = run(input.as_bytes());
    assert_eq!(t.len(), 11);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["record"], 1);
    assert_eq!(s["records_rejected"], 1);
    assert_eq!(t[10]["azure"]["flowlog"]["record"], 2);
}

#[test]
fn gzip_input_gives_the_same_output() {
    let input = sample(VNET_BLOB);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&input).unwrap();
    let gz = gz.finish().unwrap();
    let (t1, e1, _) = run(&input);
    let (t2, e2, s2) = run(&gz);
    assert_eq!(t1, t2);
    assert_eq!(e1, e2);
    assert_eq!(s2["tuples_out"], 19);
    // Corrupt gzip: reported, not a panic, not an Err.
    let (_, e, s) = run(&gz[..gz.len() / 2]);
    assert_eq!(s["complete"], false);
    assert!(!e.is_empty());
}

#[test]
fn json_lines_of_records() {
    let mut lines = String::new();
    for name in [NSG_V2, VNET_BLOB] {
        let v: Value = serde_json::from_slice(&sample(name)).unwrap();
        for r in v["records"].as_array().unwrap() {
            lines.push_str(&serde_json::to_string(r).unwrap());
            lines.push('\n');
        }
    }
    lines.push_str(std::str::from_utf8(&sample(VNET_BARE)).unwrap().trim_end());
    lines.push_str("\n{\"truncated\":[1,\n");
    lines.push_str(
        &serde_json::to_string(&serde_json::from_slice::<Value>(&sample(VNET_DOCS)).unwrap())
            .unwrap(),
    );
    let (t, e, s) = run(lines.as_bytes());
    assert_eq!(t.len(), 11 + 19 + 2 + 10);
    assert_eq!(s["records_in"], 6);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["record"], 4);
    assert_eq!(e[0]["line"], 5);
    assert_eq!(t.last().unwrap()["azure"]["flowlog"]["record"], 5);
    assert_eq!(t[11]["azure"]["flowlog"]["format"], "vnet");
}

#[test]
fn flat_form_passes_other_fields_through() {
    let input = concat!(
        r#"{"time":"2024-05-01T10:00:00.25Z","src_ip":"10.5.16.4","dst_ip":"10.0.0.6","src_port":"5000","dst_port":443,"protocol":"tcp","direction":"O","mac":"00-0d-3a-f8-78-56","k":{"a":[1,2.50,"x\"y"]},"n":1.0e3,"source":"fw1"}"#,
        "\n",
        r#"{"time":1700000000,"src_ip":"10.0.0.6","dst_ip":"10.5.16.4","vnet":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/myVNet/subnets/default"}"#,
        "\n",
        r#"{"time":"soon","src_ip":"10.0.0.6"}"#,
        "\n"
    );
    let mut out = Vec::new();
    enrich_reader(
        input.as_bytes(),
        &mut out,
        EnrichOptions::default(),
        index(),
    )
    .unwrap();
    let text = String::from_utf8(out).unwrap();
    let first = text.lines().next().unwrap();
    // Untouched: the raw JSON of unknown fields, byte for byte.
    assert!(
        first.contains(r#","k":{"a":[1,2.50,"x\"y"]},"n":1.0e3,"ipwho.input":{"source":"fw1"}}"#),
        "{first}"
    );
    let (t, e, s) = run(input.as_bytes());
    assert_eq!(t.len(), 2);
    assert_eq!(e.len(), 1);
    assert_eq!(s["formats"]["flat"], 3);
    let a = &t[0];
    assert_eq!(a["@timestamp"], "2024-05-01T10:00:00.250Z");
    assert_eq!(a["source"]["port"], 5000);
    assert_eq!(a["azure"]["flowlog"]["format"], "flat");
    assert_eq!(a["azure"]["flowlog"]["mac"], "000D3AF87856");
    assert_eq!(a["source"]["ipwho"]["via"], "mac");
    // The far end is looked up in the capturing NIC's VNet first: 10.0.0.6
    // is in myVNet, not fabrikam, so the subscription answers.
    assert_eq!(a["destination"]["ipwho"]["via"], "ip_in_subscription");
    assert_eq!(a["destination"]["ipwho"]["nic"]["name"], "vnetblob");
    let b = &t[1];
    assert_eq!(b["@timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(b["source"]["ipwho"]["via"], "ip_in_vnet");
    assert!(b.get("network").is_none());
}

#[test]
fn scope_decides_between_vnets_and_ambiguity_is_reported() {
    let mut m = MapAttributor::new();
    let a = nic("a", "vnetA");
    m.add(
        a.clone(),
        Some(Mac::parse("AAAAAAAAAAAA").unwrap()),
        &[ip("10.0.0.4")],
        0,
        i64::MAX,
        Status::Confirmed,
    );
    m.add(
        nic("b", "vnetB"),
        Some(Mac::parse("BBBBBBBBBBBB").unwrap()),
        &[ip("10.0.0.9")],
        0,
        i64::MAX,
        Status::Probable,
    );
    m.add(
        nic("c", "vnetA"),
        Some(Mac::parse("CCCCCCCCCCCC").unwrap()),
        &[ip("10.0.0.9")],
        0,
        i64::MAX,
        Status::Confirmed,
    );
    m.add(
        nic("d", "vnetA"),
        None,
        &[ip("10.0.0.5")],
        0,
        1_000_000_000_000_000,
        Status::Possible,
    );
    let attr: Arc<dyn Attributor> = Arc::new(m);
    let rec = |mac: &str, tuples: &[&str]| {
        format!(
            "{{\"properties\":{{\"Version\":2,\"flows\":[{{\"rule\":\"r\",\"flows\":[{{\"mac\":\"{mac}\",\"flowTuples\":{}}}]}}]}}}}\n",
            serde_json::to_string(tuples).unwrap()
        )
    };
    let mut input = rec(
        "AAAAAAAAAAAA",
        &[
            "1700000000,10.0.0.4,10.0.0.9,1,2,T,O,A,B,,,,",
            "1700000000,10.0.0.4,10.0.0.5,1,2,T,O,A,B,,,,",
            "1700000000,10.0.0.7,10.0.0.9,1,2,T,O,A,B,,,,",
        ],
    );
    input.push_str(&rec(
        "EEEEEEEEEEEE",
        &["1700000000,10.0.0.4,10.0.0.9,1,2,T,I,A,B,,,,"],
    ));
    let (t, e, s) = run_with(input.as_bytes(), EnrichOptions::default(), attr);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(t[0]["destination"]["ipwho"]["nic"]["name"], "c");
    assert_eq!(t[0]["destination"]["ipwho"]["via"], "ip_in_vnet");
    // Claim window ended before the tuple's time.
    assert_eq!(t[1]["destination"]["ipwho"]["status"], "unknown");
    assert_eq!(t[2]["source"]["ipwho"]["status"], "mac_mismatch");
    // Unknown MAC: the capturing side falls back to IP, with no scope: ambiguous.
    let amb = &t[3]["destination"]["ipwho"];
    assert_eq!(amb["status"], "ambiguous");
    assert_eq!(amb["candidates"].as_array().unwrap().len(), 2);
    assert!(amb.get("nic").is_none());
    assert_eq!(s["destination"]["ambiguous"], 1);
    assert_eq!(s["source"]["mac_mismatch"], 1);
}

#[test]
fn forced_format_rejects_other_records() {
    let opts = EnrichOptions {
        format: Some(Format::Vnet),
        ..EnrichOptions::default()
    };
    let (t, e, s) = run_with(&sample(NSG_V2), opts, index());
    assert!(t.is_empty());
    assert_eq!(e.len(), 2);
    assert_eq!(s["records_rejected"], 2);
    assert_eq!("flat".parse::<Format>(), Ok(Format::Flat));
    assert!("xml".parse::<Format>().is_err());
}

#[test]
fn several_inputs_continue_record_indices() {
    let mut out = Vec::new();
    let s = enrich_readers(
        [&sample(NSG_V2)[..], &sample(VNET_BARE)[..]],
        &mut out,
        EnrichOptions::default(),
        index(),
    )
    .unwrap();
    assert_eq!(s.records_in, 3);
    assert_eq!(s.tuples_out, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_output_starts_before_input_ends() {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let input = futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    });
    let v: Value = serde_json::from_slice(&sample(NSG_V2)).unwrap();
    let rec = serde_json::to_string(&v["records"][0]).unwrap();
    let (out, summary) = enrich_stream_with_summary(input, EnrichOptions::default(), index());
    let mut out = Box::pin(out);
    tx.send(Ok(bytes::Bytes::from(format!("{{\"records\":[{rec}"))))
        .await
        .unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), out.next())
        .await
        .expect("first chunk before the input ends")
        .unwrap()
        .unwrap();
    let first = String::from_utf8(first.to_vec()).unwrap();
    assert_eq!(first.lines().count(), 7, "{first}");
    assert!(!first.contains("ipwho.summary"));
    tx.send(Ok(bytes::Bytes::from(format!(",{rec}]}}"))))
        .await
        .unwrap();
    drop(tx);
    let mut rest = String::new();
    while let Some(c) = out.next().await {
        rest.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    assert_eq!(rest.lines().count(), 8);
    assert!(
        rest.lines()
            .last()
            .unwrap()
            .starts_with("{\"ipwho.summary\":")
    );
    let s = summary.await.unwrap();
    assert_eq!(s.tuples_out, 14);
    assert!(s.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_gzip_and_input_errors() {
    use futures::StreamExt;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&sample(NSG_V2)).unwrap();
    let gz = gz.finish().unwrap();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = gz
        .chunks(100)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let (out, summary) = enrich_stream_with_summary(
        futures::stream::iter(chunks),
        EnrichOptions::default(),
        index(),
    );
    let body: Vec<_> = out.collect().await;
    let text: String = body
        .iter()
        .map(|c| {
            std::str::from_utf8(c.as_ref().unwrap())
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(text.lines().count(), 12);
    assert_eq!(summary.await.unwrap().tuples_out, 11);
    // The client aborts mid-body.
    let blob = sample(VNET_BLOB);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::copy_from_slice(&blob[..1000])),
        Err(std::io::Error::other("connection reset")),
    ];
    let (out, summary) = enrich_stream_with_summary(
        futures::stream::iter(chunks),
        EnrichOptions::default(),
        index(),
    );
    let body: Vec<_> = out.collect().await;
    let text: String = body
        .iter()
        .map(|c| {
            std::str::from_utf8(c.as_ref().unwrap())
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(text.contains("connection reset"), "{text}");
    let s = summary.await.unwrap();
    assert!(!s.complete);
}

fn no_panic(input: &[u8]) {
    for format in [
        None,
        Some(Format::Nsg),
        Some(Format::Vnet),
        Some(Format::Flat),
    ] {
        let opts = EnrichOptions {
            format,
            max_record_bytes: 4096,
            read_bytes: 4096,
            chunk_bytes: 1024,
            ..EnrichOptions::default()
        };
        let mut out = Vec::new();
        let s = enrich_reader(input, &mut out, opts, index_once()).unwrap();
        assert!(s.tuples_out + s.tuples_rejected <= s.tuples_in);
        // Every output line is JSON.
        for l in std::str::from_utf8(&out).unwrap().lines() {
            serde_json::from_str::<Value>(l).unwrap();
        }
    }
}

fn all_samples() -> &'static [Vec<u8>] {
    static S: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        [NSG_V2, NSG_V1, VNET_BLOB, VNET_BARE, VNET_DOCS]
            .iter()
            .map(|n| sample(n))
            .collect()
    })
}

fn index_once() -> Arc<MapAttributor> {
    static I: std::sync::OnceLock<Arc<MapAttributor>> = std::sync::OnceLock::new();
    I.get_or_init(index).clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        no_panic(&bytes);
    }

    #[test]
    fn json_ish_bytes_never_panic(s in "[{}\\[\\]\",:0-9a-zA-Z .\\\\\n-]{0,400}") {
        no_panic(s.as_bytes());
        no_panic(format!("{{\"records\":[{s}").as_bytes());
    }

    #[test]
    fn mutated_samples_never_panic(
        which in 0usize..5,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..12),
    ) {
        let mut b = all_samples()[which].clone();
        for (at, kind, byte) in edits {
            if b.is_empty() {
                break;
            }
            let i = at.index(b.len());
            match kind {
                0 => b[i] = byte,
                1 => { b.remove(i); }
                2 => b.insert(i, byte),
                _ => b.truncate(i),
            }
        }
        no_panic(&b);
    }

    #[test]
    fn mutated_tuples_never_panic(s in "[0-9A-Z.,:]{0,80}") {
        let _ = parse_nsg_tuple(&s, 0);
        let _ = parse_vnet_tuple(&s, 0);
        let rec = format!("{{\"properties\":{{\"flows\":[{{\"flows\":[{{\"mac\":\"000D3AF87856\",\"flowTuples\":[{}]}}]}}]}}}}", serde_json::to_string(&s).unwrap());
        no_panic(rec.as_bytes());
    }
}
