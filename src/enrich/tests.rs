//! Tests of the whole pipeline: the real flow-log samples, bad tuples among
//! good ones, gzip, JSON Lines, flat input, scoping, streaming, and a
//! property test that no input makes the parsers panic.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::azure::flowlog::tuple::{parse_nsg_tuple, parse_vnet_tuple};
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
    // `rg/name`, or a name in rg1.
    let (rg, vnet) = vnet.split_once('/').unwrap_or(("rg1", vnet));
    let vnet = ArmId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{vnet}"
    ))
    .unwrap();
    Arc::new(NicInfo::new(&id, Some(&vnet)))
}

/// The VM of test NIC `name`.
fn vm(name: &str) -> Option<Arc<VmInfo>> {
    let vm = ArmId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/VmRg/providers/Microsoft.Compute/virtualMachines/vm-{name}"
    ))
    .unwrap();
    Some(Arc::new(VmInfo::new(&vm)))
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
        // As the VNet flow logs' `targetResourceID` names them.
        (
            "vnetblob",
            "00224871C205",
            "10.0.0.6",
            "myResourceGroup/myVNet",
        ),
        (
            "vnetbare",
            "0022487BC205",
            "10.0.0.7",
            "myResourceGroup/myVNet",
        ),
        (
            "vnetdocs",
            "0022485D8CF8",
            "192.168.0.4",
            "Contoso-westcentralus-RG/ContosoVnetWcus",
        ),
    ] {
        m.add(
            nic(name, vnet),
            vm(name),
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
        r#"{"time":1700000000,"src_ip":"10.0.0.6","dst_ip":"10.5.16.4","vnet":"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/myResourceGroup/providers/Microsoft.Network/virtualNetworks/myVNet/subnets/default"}"#,
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
    // is in myVNet, not fabrikam, so the subscription answers; without the
    // VNets' topology, never firmly from another VNet.
    assert_eq!(a["destination"]["ipwho"]["via"], "ip_in_subscription");
    assert_eq!(a["destination"]["ipwho"]["scoped"], "no_topology");
    assert_eq!(a["destination"]["ipwho"]["status"], "possible");
    assert_eq!(a["destination"]["ipwho"]["nic"]["name"], "vnetblob");
    let b = &t[1];
    assert_eq!(b["@timestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(b["source"]["ipwho"]["via"], "ip_in_vnet");
    assert!(b.get("network").is_none());
}

#[test]
fn a_hint_that_names_no_vnet_or_subscription_is_reported_not_dropped() {
    // A VNet's name where its id belongs, a path for a subscription: each
    // an error line naming the hint, and the tuple still attributed (by IP,
    // as with no hint). Valid hints, bare or as ids, give no error.
    let input = concat!(
        r#"{"time":1700000000,"src_ip":"10.0.0.6","dst_ip":"10.5.16.4","vnet":"myVNet"}"#,
        "\n",
        r#"{"time":1700000000,"src_ip":"10.0.0.6","dst_ip":"10.5.16.4","subscription":"rg1/myVNet"}"#,
        "\n",
        r#"{"time":1700000000,"src_ip":"10.0.0.6","dst_ip":"10.5.16.4","subscription":"00000000-0000-0000-0000-000000000000"}"#,
        "\n",
        r#"{"time":1700000000,"src_ip":"10.0.0.6","dst_ip":"10.5.16.4","subscription":"/subscriptions/00000000-0000-0000-0000-000000000000"}"#,
        "\n",
    );
    let (t, e, s) = run(input.as_bytes());
    assert_eq!(t.len(), 4);
    assert_eq!(s["tuples_rejected"], 0);
    let errors: Vec<(u64, &str)> = e
        .iter()
        .map(|x| (x["record"].as_u64().unwrap(), x["path"].as_str().unwrap()))
        .collect();
    assert_eq!(errors, [(0, "vnet"), (1, "subscription")], "{e:?}");
    assert!(
        e[0]["reason"]
            .as_str()
            .unwrap()
            .contains("attributed without it")
    );
    assert_eq!(t[0]["source"]["ipwho"]["via"], "ip_any_scope");
    for x in &t[2..] {
        assert_eq!(x["source"]["ipwho"]["via"], "ip_in_subscription", "{x}");
    }
}

#[test]
fn scope_decides_between_vnets_and_ambiguity_is_reported() {
    let mut m = MapAttributor::new();
    let a = nic("a", "vnetA");
    m.add(
        a.clone(),
        vm("a"),
        Some(Mac::parse("AAAAAAAAAAAA").unwrap()),
        &[ip("10.0.0.4")],
        0,
        i64::MAX,
        Status::Confirmed,
    );
    m.add(
        nic("b", "vnetB"),
        vm("b"),
        Some(Mac::parse("BBBBBBBBBBBB").unwrap()),
        &[ip("10.0.0.9")],
        0,
        i64::MAX,
        Status::Probable,
    );
    m.add(
        nic("c", "vnetA"),
        vm("c"),
        Some(Mac::parse("CCCCCCCCCCCC").unwrap()),
        &[ip("10.0.0.9")],
        0,
        i64::MAX,
        Status::Confirmed,
    );
    m.add(
        nic("d", "vnetA"),
        vm("d"),
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
    // Unknown MAC: the capturing side is unknown, never looked up by IP
    // (two NICs hold 10.0.0.9; neither captured it).
    let cap = &t[3]["destination"]["ipwho"];
    assert_eq!(cap["status"], "unknown");
    assert_eq!(cap["scoped"], "mac_unknown");
    assert!(cap.get("nic").is_none() && cap.get("candidates").is_none());
    // Its VNet unknown, the far end is found where it may be, never firmly.
    let far = &t[3]["source"]["ipwho"];
    assert_eq!(
        (far["status"].as_str(), far["scoped"].as_str()),
        (Some("possible"), Some("no_vnet"))
    );
    assert_eq!(far["nic"]["name"], "a");
    assert_eq!(s["destination"]["ambiguous"], 0);
    assert_eq!(s["source"]["mac_mismatch"], 1);
}

#[test]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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

/// Streams an NSG v2 blob of two records in two chunks, the second sent
/// only after the first record's lines came out, and checks both halves.
async fn streams_before_input_ends(opts: EnrichOptions) {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
    let input = futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    });
    let v: Value = serde_json::from_slice(&sample(NSG_V2)).unwrap();
    let rec = serde_json::to_string(&v["records"][0]).unwrap();
    let (out, summary) = enrich_stream_with_summary(input, opts, index());
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
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
async fn streaming_output_starts_before_input_ends() {
    streams_before_input_ends(EnrichOptions::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
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
    #[cfg_attr(not(feature = "samples"), ignore = "reads ../shared/samples: --features samples")]
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

// ---- several workers --------------------------------------------------------

/// The output with the summary's `elapsed_ms` zeroed (the only field that
/// may differ between two runs).
fn normalised(out: &[u8]) -> (Vec<u8>, Value) {
    let text = std::str::from_utf8(out).unwrap();
    let body_end = text[..text.len() - 1]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let mut summary: Value = serde_json::from_str(&text[body_end..]).unwrap();
    summary["ipwho.summary"]["elapsed_ms"] = Value::from(0);
    (out[..body_end].to_vec(), summary)
}

/// Where two outputs part: the first differing lines.
fn first_diff(a: &(Vec<u8>, Value), b: &(Vec<u8>, Value)) -> String {
    let (la, lb) = (String::from_utf8_lossy(&a.0), String::from_utf8_lossy(&b.0));
    for (i, (x, y)) in la.lines().zip(lb.lines()).enumerate() {
        if x != y {
            return format!("line {i}:\n  {x}\n  {y}");
        }
    }
    format!(
        "{} vs {} lines; summaries {} vs {}",
        la.lines().count(),
        lb.lines().count(),
        a.1,
        b.1
    )
}

fn enrich_with(input: &[u8], opts: EnrichOptions, attr: Arc<dyn Attributor>) -> (Vec<u8>, Value) {
    let mut out = Vec::new();
    enrich_reader(input, &mut out, opts, attr).unwrap();
    normalised(&out)
}

/// One record per line, of every kind the decoder meets, good and bad.
fn palette() -> Vec<String> {
    let mut lines = Vec::new();
    for name in [NSG_V2, VNET_BLOB] {
        let v: Value = serde_json::from_slice(&sample(name)).unwrap();
        for r in v["records"].as_array().unwrap() {
            lines.push(serde_json::to_string(r).unwrap());
        }
    }
    lines.extend(
        [
            r#"{"time":"2024-01-02T03:04:05Z","src_ip":"10.5.16.4","dst_ip":"1.2.3.4","k":[1,2]}"#,
            // Epoch time: parses only as flat.
            r#"{"time":1700000000123,"src_ip":"10.0.0.4","dst_ip":"10.5.16.4","direction":"O","mac":"000D3A18077E"}"#,
            // Flat keys and an NSG shape: flat after a flat record, NSG otherwise.
            r#"{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","time":"2024-01-02T03:04:05Z","properties":{"Version":2,"flows":[{"rule":"r","flows":[{"mac":"000D3AF87856","flowTuples":["1542110377,10.5.16.4,13.67.143.118,59831,443,T,O,A,B,,,,","bad"]}]}]}}"#,
            r#"{"x":1}"#,
            r#"{"time":"2024-01-02T03:04:05Z","src_ip":"nope"}"#,
            r#"{"properties":{"Version":1,"flows":[{"rule":"r","flows":[{"mac":"nope","flowTuples":["1,10.0.0.1,10.0.0.2,1,2,T,I,A",7]}]}]}}"#,
            "not json at all",
            r#"{"truncated":"#,
        ]
        .map(String::from),
    );
    lines
}

#[test]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
fn workers_write_the_same_bytes_in_input_order() {
    let p = palette();
    // Every kind after every kind, as JSON Lines and as one envelope.
    let mut order = Vec::new();
    for i in 0..p.len() {
        for j in 0..p.len() {
            order.push(i);
            order.push(j);
        }
    }
    let lines = order.iter().map(|&i| p[i].as_str()).collect::<Vec<_>>();
    let jsonl = lines.join("\n");
    let good: Vec<&str> = order
        .iter()
        .filter(|&&i| i < p.len() - 2)
        .map(|&i| p[i].as_str())
        .collect();
    let envelope = format!("{{\"records\":[{}]}}", good.join(","));
    for input in [jsonl.as_bytes(), envelope.as_bytes(), &sample(NSG_V2)[..]] {
        for format in [None, Some(Format::Nsg), Some(Format::Flat)] {
            let one = EnrichOptions {
                workers: 1,
                format,
                read_bytes: 4096,
                chunk_bytes: 2048,
                ..EnrichOptions::default()
            };
            let want = enrich_with(input, one.clone(), index());
            for (workers, batch_bytes) in [(2, 1), (3, 1), (4, 700), (2, 1 << 20)] {
                let opts = EnrichOptions {
                    workers,
                    batch_bytes,
                    ..one.clone()
                };
                let got = enrich_with(input, opts, index());
                assert!(
                    got == want,
                    "{workers} workers, batches of {batch_bytes} bytes, {format:?}: {}",
                    first_diff(&got, &want)
                );
            }
        }
    }
}

#[test]
fn workers_keep_order_over_many_batches() {
    // 2,000 records of one tuple each, their times in input order.
    let mut input = String::new();
    for i in 0..2000 {
        input.push_str(&format!(
            "{{\"time\":{},\"src_ip\":\"10.5.16.4\",\"dst_ip\":\"10.0.0.{}\",\"n\":{i}}}\n",
            1_700_000_000 + i,
            i % 250
        ));
    }
    let opts = EnrichOptions {
        workers: 3,
        batch_bytes: 300,
        ..EnrichOptions::default()
    };
    let (t, e, s) = run_with(input.as_bytes(), opts, index());
    assert!(e.is_empty());
    assert_eq!(s["tuples_out"], 2000);
    let n: Vec<u64> = t.iter().map(|l| l["n"].as_u64().unwrap()).collect();
    assert_eq!(n, (0..2000).collect::<Vec<_>>());
}

#[test]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
fn workers_report_an_unreadable_input_after_what_came_before() {
    struct Failing<'a>(&'a [u8]);
    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let blob = sample(NSG_V2);
    let mut outs = Vec::new();
    for workers in [1, 2] {
        let mut out = Vec::new();
        let s = enrich_readers(
            [Failing(&blob[..blob.len() / 2])],
            &mut out,
            EnrichOptions {
                workers,
                batch_bytes: 1,
                ..EnrichOptions::default()
            },
            index(),
        )
        .unwrap();
        assert!(!s.complete);
        outs.push(normalised(&out));
    }
    assert!(outs[0] == outs[1]);
    assert!(String::from_utf8_lossy(&outs[1].0).contains("disk on fire"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
async fn streaming_with_workers_starts_before_input_ends() {
    streams_before_input_ends(EnrichOptions {
        workers: 3,
        batch_bytes: 1 << 20,
        ..EnrichOptions::default()
    })
    .await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    #[cfg_attr(not(feature = "samples"), ignore = "reads ../shared/samples: --features samples")]
    fn workers_match_one_worker(
        picks in proptest::collection::vec(0usize..64, 1..60),
        workers in 2usize..5,
        batch_bytes in 1usize..3000,
        envelope in any::<bool>(),
    ) {
        let p = palette();
        let lines: Vec<&str> = picks.iter().map(|&i| p[i % p.len()].as_str()).collect();
        let input = if envelope {
            format!("{{\"records\":[{}]}}", lines.join(","))
        } else {
            lines.join("\n")
        };
        let one = EnrichOptions { workers: 1, read_bytes: 4096, ..EnrichOptions::default() };
        let want = enrich_with(input.as_bytes(), one.clone(), index_once());
        let got = enrich_with(
            input.as_bytes(),
            EnrichOptions { workers, batch_bytes, ..one },
            index_once(),
        );
        prop_assert!(got == want, "{}", first_diff(&got, &want));
    }
}

// ---- the claims index as an attributor ----------------------------------------

mod index_attributor {
    //! `Index`'s enrichment lookups against the straightforward reading of
    //! the attribution model over its public API (claims of the IP, of the
    //! MAC's NICs, `engine::answer` with exclusivity, staleness and the
    //! VM), on random claims and coverage.

    use super::*;
    use crate::engine::{
        self, Attachment, Claim, ClaimKey, Complete, Coverage, EvidenceKind, EvidenceRef,
        Freshness, Micros, NEG_INF, POS_INF, Window,
    };
    use crate::index::{Claims, CoverageMap, Index, Scope};
    use ipnet::IpNet;

    fn sub_id(sub: u8) -> String {
        format!("0000000{sub}-0000-0000-0000-000000000000")
    }

    fn vnet_id(sub: u8, v: u8) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v{v}",
            sub_id(sub)
        )
    }

    #[derive(Clone, Debug)]
    struct Gen {
        nic: u8,
        vnet: u8,
        ip: u8,
        vm: u8,
        start: Option<i64>,
        len: Option<i64>,
        certain: (i64, i64),
    }

    fn claim(g: &Gen) -> Claim {
        // NICs 0..6 live in subscription nic % 2; VNets 0..3 in vnet % 2.
        let sub = g.nic % 2;
        let nic = ArmId::parse(&format!(
            "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/n{}",
            sub_id(sub),
            g.nic
        ))
        .unwrap();
        let vnet = ArmId::parse(&vnet_id(g.vnet % 2, g.vnet)).unwrap();
        let vm = |k: u8| {
            ArmId::parse(&format!(
                "/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm{k}",
                sub_id(sub)
            ))
            .unwrap()
        };
        // IPs 0..3 are /32s of 10.0.0.0/30; 4 is the /30 itself.
        let ip: IpNet = if g.ip < 4 {
            format!("10.0.0.{}/32", g.ip).parse().unwrap()
        } else {
            "10.0.0.0/30".parse().unwrap()
        };
        let start = g.start.unwrap_or(NEG_INF);
        let end = match (g.start, g.len) {
            (_, None) => POS_INF,
            (Some(s), Some(l)) => s + l,
            (None, Some(l)) => l,
        };
        let lo = if start == NEG_INF { -100 } else { start };
        let hi = if end == POS_INF { 200 } else { end };
        let cs = (lo + g.certain.0).min(hi);
        let ce = (cs + g.certain.1).min(hi).max(cs + 1);
        let ev = |at: Micros, kind| EvidenceRef {
            kind,
            id: format!("e{at}").into(),
            at,
        };
        let last = ev(
            ce - 1,
            [EvidenceKind::Snapshot, EvidenceKind::ActivityWrite][g.vm as usize % 2],
        );
        let certain = Window { start: cs, end: ce };
        let possible = Window { start, end };
        // VM 2: moved from VM 2 to VM 3 half way through its sightings.
        let vms = if g.vm == 2 && ce - cs >= 2 {
            let mid = cs + (ce - cs) / 2;
            vec![
                Attachment {
                    vm: Some(vm(2)),
                    certain: Window {
                        start: cs,
                        end: mid,
                    },
                    possible: Window {
                        start,
                        end: mid + 1,
                    },
                    first: ev(cs, EvidenceKind::Snapshot),
                    last: ev(mid - 1, EvidenceKind::Snapshot),
                },
                Attachment {
                    vm: Some(vm(3)),
                    certain: Window {
                        start: mid + 1,
                        end: ce,
                    },
                    possible: Window { start: mid, end },
                    first: ev(mid + 1, EvidenceKind::Snapshot),
                    last: last.clone(),
                },
            ]
        } else {
            vec![Attachment {
                vm: (g.vm != 1).then(|| vm(g.vm)),
                certain,
                possible,
                first: ev(cs, EvidenceKind::Snapshot),
                last: last.clone(),
            }]
        };
        Claim {
            key: ClaimKey {
                nic: nic.key().into(),
                scope: vnet.key().into(),
                ip,
            },
            nic_name: nic.name().to_string(),
            // NICs 0 and 1 share a MAC; the others have their own.
            mac: Some(Mac::parse(&format!("00000000000{}", g.nic.max(1))).unwrap()),
            nic,
            subnet: None,
            vnet: Some(vnet),
            certain,
            possible,
            start_exact: false,
            end_exact: false,
            before: None,
            first: ev(cs, EvidenceKind::Snapshot),
            last,
            after: None,
            vms,
            live: false,
        }
    }

    /// The engine's answer over `claims` (of one IP, in scope) as an end.
    fn answer(claims: &Claims, t: Micros) -> EndAttribution {
        let a = claims.answer(t);
        let mut e = EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet);
        e.status = a.status;
        if let Some(o) = &a.owner {
            let entry = claims.entry_of(o.claim).unwrap();
            let b = |m: i64| (m != NEG_INF && m != POS_INF).then_some(m);
            e.nic = Some(entry.info.clone());
            e.evidence = Some(std::borrow::Cow::Borrowed(o.claim.last.kind.as_str()));
            e.window = Some((b(o.possible.start), b(o.possible.end)));
            e.stale = a.stale.is_some();
            let vm = a.vm.as_ref().unwrap();
            e.vm_status = Some(vm.status);
            e.vm = vm
                .attachment
                .and_then(|x| o.claim.vms.iter().position(|y| std::ptr::eq(x, y)))
                .and_then(|i| entry.vms[i].clone());
        }
        e.candidates = a
            .candidates
            .iter()
            .map(|c| claims.entry_of(c.claim).unwrap().info.clone())
            .collect();
        e
    }

    fn reference_by_ip(idx: &Index, ip: IpAddr, at: i64, within: Within<'_>) -> EndAttribution {
        let scope = match within {
            Within::Vnet(v) => Scope::Vnet(v.to_string()),
            Within::Subscription(s) => Scope::Subscription(s.to_string()),
            Within::Any => Scope::Any,
        };
        answer(&idx.claims_of_ip(ip, &scope), at)
    }

    fn reference_by_mac(
        idx: &Index,
        mac: &Mac,
        ip: IpAddr,
        at: i64,
        scope: &ScopeHint,
    ) -> EndAttribution {
        let in_scope = |n: &str| {
            let claims = idx.claims_of_nic(n);
            match (&scope.vnet, &scope.subscription) {
                (Some(v), _) => claims.entries.iter().any(|c| *c.key.scope == **v),
                (None, Some(s)) => ArmId::subscription_of_key(n) == s,
                _ => true,
            }
        };
        let nics: Vec<String> = idx
            .nics_of_mac(mac)
            .into_iter()
            .filter(|n| in_scope(n))
            .collect();
        let unknown = |scoped| {
            let mut a = EndAttribution::unknown(Via::Mac, scoped);
            a.searched = scope
                .vnet
                .as_deref()
                .or(scope.subscription.as_deref())
                .map(Arc::from);
            a
        };
        if idx.nics_of_mac(mac).is_empty() {
            return unknown(Scoped::MacUnknown);
        }
        if nics.is_empty() {
            return unknown(Scoped::MacOutOfScope);
        }
        // The NICs with the MAC whose claim on the IP (bounded by the other
        // claims of the IP in its VNet) holds T: the capture rules out the
        // others. A NIC with two such claims counts its first.
        let all = idx.claims_of_ip(ip, &Scope::Any);
        let refs = all.refs();
        let bounds = engine::exclusive(&refs);
        let mut held: Vec<(i64, &Claim, Arc<NicInfo>)> = Vec::new();
        let mut existed = None;
        for n in &nics {
            let own = idx.claims_of_nic(n);
            existed = existed.or_else(|| {
                own.entries
                    .iter()
                    .find(|c| c.possible.contains(at))
                    .cloned()
            });
            let first = own.entries.iter().find_map(|o| {
                let i = refs.iter().position(|c| std::ptr::eq(*c, &o.claim))?;
                bounds[i].possible.contains(at).then(|| {
                    (
                        bounds[i].possible.start,
                        refs[i],
                        all.entries[i].info.clone(),
                    )
                })
            });
            held.extend(first);
        }
        match held.len() {
            0 => {}
            1 => {
                let mut a = lone(idx, ip, at, &held[0].1.key.nic);
                a.ip_held = Some(true);
                return a;
            }
            _ => {
                held.sort_by(|x, y| engine::candidate_order(x.0, x.1, y.0, y.1));
                let mut a = EndAttribution::unknown(Via::Mac, Scoped::Mac);
                a.status = Status::Ambiguous;
                a.ip_held = Some(true);
                a.candidates = held.into_iter().map(|h| h.2).collect();
                return a;
            }
        }
        match existed {
            Some(c) => {
                let mut a = EndAttribution::mac_mismatch(Scoped::Mac, c.info.clone());
                a.evidence = Some(std::borrow::Cow::Borrowed(c.last.kind.as_str()));
                a
            }
            None => unknown(Scoped::MacUnknown),
        }
    }

    /// The answer of NIC `nic`'s claim on `ip` at `at`, bounded by every
    /// claim of the IP, as if no other claim held `at`.
    fn lone(idx: &Index, ip: IpAddr, at: i64, nic: &str) -> EndAttribution {
        let all = idx.claims_of_ip(ip, &Scope::Any);
        let refs = all.refs();
        let bounds = engine::exclusive(&refs);
        let own = idx.claims_of_nic(nic);
        let i = own
            .entries
            .iter()
            .find_map(|o| {
                let i = refs.iter().position(|c| std::ptr::eq(*c, &o.claim))?;
                bounds[i].possible.contains(at).then_some(i)
            })
            .unwrap();
        let c = refs[i];
        let possible = bounds[i].possible;
        let (status, stale) = engine::owner_status(c.certain, possible, at, c.subscription(), &all);
        let vm = engine::vm_answer(c, possible, at, status);
        let entry = &all.entries[i];
        let b = |m: i64| (m != NEG_INF && m != POS_INF).then_some(m);
        let mut e = EndAttribution::nic(status, Via::Mac, Scoped::Mac, entry.info.clone());
        e.evidence = Some(std::borrow::Cow::Borrowed(c.last.kind.as_str()));
        e.window = Some((b(possible.start), b(possible.end)));
        e.stale = stale.is_some();
        e.vm_status = Some(vm.status);
        e.vm = vm
            .attachment
            .and_then(|x| c.vms.iter().position(|y| std::ptr::eq(x, y)))
            .and_then(|i| entry.vms[i].clone());
        e
    }

    fn any_claim() -> impl Strategy<Value = Gen> {
        (
            0u8..6,
            0u8..4,
            0u8..5,
            0u8..3,
            proptest::option::weighted(0.85, 0i64..100),
            proptest::option::weighted(0.8, 1i64..60),
            (0i64..20, 0i64..40),
        )
            .prop_map(|(nic, vnet, ip, vm, start, len, certain)| Gen {
                nic,
                vnet,
                ip,
                vm,
                start,
                len,
                certain,
            })
    }

    /// Subscription 0 has complete snapshots at `at`; subscription 1 none.
    fn coverage(at: &[i64]) -> CoverageMap {
        let policy = Freshness {
            min: 1,
            ..Freshness::default()
        };
        let completes = at
            .iter()
            .map(|&at| Complete {
                at,
                id: format!("c{at}").into(),
            })
            .collect();
        [(sub_id(0), Coverage::new(completes, None, &policy))].into()
    }

    #[test]
    fn the_index_holds_shared_ids_once_and_keeps_every_spelling() {
        let a = Gen {
            nic: 2,
            vnet: 0,
            ip: 1,
            vm: 0,
            start: Some(0),
            len: None,
            certain: (10, 30),
        };
        // The same NIC's other IP; another NIC in the same VNet, whose
        // claim (from an Activity Log export, say) spells the VNet in capitals.
        let b = Gen { ip: 2, ..a.clone() };
        let mut c = claim(&Gen {
            nic: 4,
            ip: 3,
            ..a.clone()
        });
        c.vnet = Some(ArmId::parse(&vnet_id(0, 0).to_uppercase()).unwrap());
        let idx = Index::from_claims(
            vec![claim(&a), claim(&b), c],
            Default::default(),
            Freshness::default(),
        );
        let mut all = idx.all_claims();
        all.sort_by_key(|c| c.key.ip);
        let [a, b, c] = &all[..] else {
            panic!("{all:?}")
        };
        let same = |x: &str, y: &str| x.as_ptr() == y.as_ptr();
        // Spellings are kept, and compared by key.
        assert_eq!(a.vnet.as_ref().unwrap().as_str(), vnet_id(0, 0));
        assert_eq!(
            c.vnet.as_ref().unwrap().as_str(),
            vnet_id(0, 0).to_uppercase()
        );
        assert_eq!(a.key.scope, c.key.scope);
        // One copy of what is the same string.
        assert!(same(a.nic.as_str(), b.nic.as_str()));
        assert!(same(&a.key.nic, a.nic.key()) && same(&a.key.nic, &b.key.nic));
        assert!(same(
            a.vnet.as_ref().unwrap().as_str(),
            b.vnet.as_ref().unwrap().as_str()
        ));
        assert!(same(&a.key.scope, a.vnet.as_ref().unwrap().key()));
        assert_eq!(a.first.kind, EvidenceKind::Snapshot);
        assert!(
            same(&a.first.id, &b.first.id),
            "one copy of a snapshot's id"
        );
        assert!(!same(
            a.vnet.as_ref().unwrap().as_str(),
            c.vnet.as_ref().unwrap().as_str()
        ));
        // And the answers are those of the claims as given.
        let ip = IpAddr::from([10, 0, 0, 3]);
        let l = idx.by_ip(ip, 20, Within::Any);
        assert_eq!(l.status, Status::Confirmed);
        assert_eq!(l.nic.as_ref().map(|n| n.name.as_str()), Some("n4"));
        assert_eq!(
            l.nic.as_ref().and_then(|n| n.vnet.as_deref()),
            Some(vnet_id(0, 0).to_uppercase().as_str())
        );
    }

    #[test]
    fn the_capturing_nic_answers_for_its_own_ip() {
        // NICs 2 and 3 may both have held 10.0.0.1 in VNet 0 at t = 50
        // (two snapshot-seen claims whose possible windows overlap).
        let a = Gen {
            nic: 2,
            vnet: 0,
            ip: 1,
            vm: 0,
            start: Some(0),
            len: Some(100),
            certain: (10, 20),
        };
        let b = Gen {
            nic: 3,
            start: Some(40),
            len: None,
            certain: (20, 10),
            vm: 1,
            ..a.clone()
        };
        let idx = Index::from_claims(
            vec![claim(&a), claim(&b)],
            coverage(&[0, 100]),
            Freshness::default(),
        );
        let ip = IpAddr::from([10, 0, 0, 1]);
        let v0 = vnet_id(0, 0).to_ascii_lowercase();
        // By IP, the evidence cannot tell them apart.
        assert_eq!(
            idx.by_ip(ip, 50, Within::Vnet(&v0)).status,
            Status::Ambiguous
        );
        // Captured by NIC 3's MAC: NIC 3, with its own claim's status.
        let mac3 = Mac::parse("000000000003").unwrap();
        let in_vnet = ScopeHint {
            vnet: Some(v0.clone()),
            ..ScopeHint::default()
        };
        let local = idx.by_mac(&mac3, ip, 50, &in_vnet);
        assert_eq!(local.status, Status::Possible);
        assert_eq!((local.ip_held, local.scoped), (Some(true), Scoped::Mac));
        assert!(local.candidates.is_empty());
        assert_eq!(local.nic.as_ref().map(|n| n.name.as_str()), Some("n3"));
        // Inside NIC 3's certain window (60..70): confirmed; NIC 3 is on no VM.
        let inside = idx.by_mac(&mac3, ip, 65, &in_vnet);
        assert_eq!(
            (inside.status, inside.vm_status),
            (Status::Confirmed, Some(Status::Confirmed))
        );
        assert!(inside.vm.is_none());
        // NIC 2 after its possible end: no NIC known with its MAC then.
        let mac2 = Mac::parse("000000000002").unwrap();
        let after = idx.by_mac(&mac2, ip, 150, &in_vnet);
        assert_eq!(
            (after.status, after.scoped),
            (Status::Unknown, Scoped::MacUnknown)
        );
        assert_eq!(
            idx.by_mac(&mac2, ip, 20, &in_vnet)
                .nic
                .as_ref()
                .map(|n| n.name.as_str()),
            Some("n2")
        );
        // A scope the NIC is not in: never the answer.
        let elsewhere = ScopeHint {
            vnet: Some(vnet_id(1, 1).to_ascii_lowercase()),
            ..ScopeHint::default()
        };
        let out = idx.by_mac(&mac3, ip, 65, &elsewhere);
        assert_eq!(
            (out.status, out.scoped),
            (Status::Unknown, Scoped::MacOutOfScope)
        );
        assert!(out.nic.is_none());
        let unknown = idx.by_mac(&Mac::parse("0000000000AA").unwrap(), ip, 65, &in_vnet);
        assert_eq!(
            (unknown.scoped, unknown.searched.as_deref()),
            (Scoped::MacUnknown, Some(v0.as_str()))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        #[test]
        fn index_lookups_match_the_model(
            gens in proptest::collection::vec(any_claim(), 0..14),
            completes in proptest::collection::vec(-50i64..250, 0..5),
            probes in proptest::collection::vec(
                (0u8..5, -20i64..260, 0u8..4, proptest::option::of(0u8..4), proptest::option::of(0u8..3)),
                1..40,
            ),
        ) {
            let mut claims: Vec<Claim> = gens.iter().map(claim).collect();
            // The index keeps a NIC's claims in insertion order and the
            // model reads them oldest first: insert them oldest first.
            claims.sort_by(|a, b| {
                (&a.key.nic, a.possible.start, a.certain.start)
                    .cmp(&(&b.key.nic, b.possible.start, b.certain.start))
            });
            let idx = Index::from_claims(claims, coverage(&completes), Freshness::default());
            for (ipn, at, macn, vnet, sub) in probes {
                let ip = IpAddr::from([10, 0, 0, ipn]);
                let mac = Mac::parse(&format!("00000000000{}", macn.max(1))).unwrap();
                let hint = ScopeHint {
                    vnet: vnet.map(|v| vnet_id(v % 2, v).to_ascii_lowercase()),
                    subscription: sub.map(sub_id),
                    ..ScopeHint::default()
                };
                prop_assert_eq!(idx.by_mac(&mac, ip, at, &hint), reference_by_mac(&idx, &mac, ip, at, &hint));
                let v = hint.vnet.clone().unwrap_or_default();
                let s = hint.subscription.clone().unwrap_or_default();
                for within in [Within::Vnet(&v), Within::Subscription(&s), Within::Any] {
                    prop_assert_eq!(idx.by_ip(ip, at, within), reference_by_ip(&idx, ip, at, within));
                }
            }
        }
    }
}

#[test]
fn flat_lines_with_epoch_times_from_the_first_line() {
    // The first line decides nothing: an epoch-number `time` (which no
    // flow-log record has) is flat from the start.
    let input = b"{\"time\":1700000000123,\"src_ip\":\"10.0.0.4\",\"dst_ip\":\"1.2.3.4\"}\n{\"time\":1700000000,\"src_ip\":\"10.0.0.5\",\"dst_ip\":\"1.2.3.4\"}\n";
    for workers in [1, 2] {
        let opts = EnrichOptions {
            workers,
            ..EnrichOptions::default()
        };
        let (t, e, s) = run_with(input, opts, index());
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["@timestamp"], "2023-11-14T22:13:20.123Z");
        assert_eq!(s["formats"]["flat"], 2);
    }
}

#[test]
fn an_invalid_mac_is_reported_in_every_record() {
    let rec = r#"{"properties":{"Version":1,"flows":[{"rule":"a","flows":[{"mac":"nope","flowTuples":["1,10.0.0.1,10.0.0.2,1,2,T,I,A"]}]},{"rule":"b","flows":[{"mac":"nope","flowTuples":["1,10.0.0.1,10.0.0.2,1,2,T,I,A"]}]}]}}"#;
    let input = format!("{rec}\n{rec}\n");
    for workers in [1, 3] {
        let opts = EnrichOptions {
            workers,
            batch_bytes: 1,
            ..EnrichOptions::default()
        };
        let (t, e, _) = run_with(input.as_bytes(), opts, index());
        assert_eq!(t.len(), 4);
        // Once per record, for its first group with the MAC.
        let at: Vec<_> = e.iter().map(|e| e["record"].clone()).collect();
        assert_eq!(at, vec![Value::from(0), Value::from(1)], "{e:?}");
    }
}
