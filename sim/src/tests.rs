//! Tests of the simulator and the scorer: determinism, the shapes of every
//! written format, properties of the truth, and the scorer end to end against
//! mock servers (and the naive query when Postgres is reachable).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use super::accuracy::{AccuracyOptions, Truth, scope_of};
use super::evidence::{Evidence, Scope, parse_activity};
use super::flowlogs::{TupleTruth, read_tuple_truth};
use super::probes::read_probes;
use super::time::Micros;
use super::*;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("ipwho-sim-{name}-{}-{nanos}", std::process::id()));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn tiny(seed: u64) -> SimConfig {
    SimConfig::profile("tiny", seed).unwrap()
}

fn generated(name: &str, cfg: &SimConfig) -> (TempDir, Summary) {
    let d = TempDir::new(name);
    let s = generate(cfg, &d.0).expect("generate");
    (d, s)
}

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn read(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn activity_records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for (rel, bytes) in files(dir) {
        if rel.starts_with("activity/") {
            out.extend(parse_activity(&bytes).unwrap());
        }
    }
    out
}

#[test]
fn same_seed_writes_the_same_bytes() {
    let cfg = tiny(11);
    let (a, _) = generated("det-a", &cfg);
    let (b, _) = generated("det-b", &cfg);
    let (fa, fb) = (files(&a.0), files(&b.0));
    let names = |f: &BTreeMap<String, Vec<u8>>| f.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&fa), names(&fb));
    for (k, v) in &fa {
        if k == "summary.json" {
            continue; // holds timings
        }
        assert!(v == &fb[k], "{k} differs between two runs of the same seed");
    }
    let (c, _) = generated("det-c", &tiny(12));
    assert_ne!(
        fs::read(a.0.join("truth.jsonl")).unwrap(),
        fs::read(c.0.join("truth.jsonl")).unwrap()
    );
}

#[test]
fn snapshot_pages_are_arm_list_pages() {
    let (d, s) = generated("snap", &tiny(3));
    assert!(
        s.snapshots.partial > 0 && s.snapshots.missed > 0,
        "{:?}",
        s.snapshots
    );
    let mut seen_unattached = false;
    let mut seen_v6 = false;
    let mut seen_vmss = false;
    let mut dirs = 0;
    for e in fs::read_dir(d.0.join("snapshots")).unwrap() {
        let sdir = e.unwrap().path();
        dirs += 1;
        let meta = read(&sdir.join("meta.json"));
        for k in ["snapshot_id", "taken_at", "subscriptions", "complete"] {
            assert!(meta.get(k).is_some(), "meta lacks {k}");
        }
        assert!(time::parse(meta["taken_at"].as_str().unwrap()).is_some());
        let sub = meta["subscriptions"][0].as_str().unwrap().to_string();
        let pages = meta["pages"].as_array().unwrap();
        let listed = meta["pages_listed"].as_u64().unwrap() as usize;
        if meta["complete"].as_bool().unwrap() {
            assert_eq!(pages.len(), listed);
        }
        for (i, p) in pages.iter().enumerate() {
            let page = read(&sdir.join(p.as_str().unwrap()));
            let obj = page.as_object().unwrap();
            assert!(obj.keys().all(|k| k == "value" || k == "nextLink"));
            let has_next = page.get("nextLink").is_some();
            // Page k of a listing of n pages has a nextLink unless it is the last.
            let k: usize = p.as_str().unwrap()[5..9].parse().unwrap();
            assert_eq!(has_next, k + 1 < listed, "page {i} of {}", sdir.display());
            if has_next {
                let link = page["nextLink"].as_str().unwrap();
                assert!(link.starts_with(&format!(
                    "https://management.azure.com/subscriptions/{sub}/providers/Microsoft.Network/networkInterfaces?"
                )));
            }
            for nic in page["value"].as_array().unwrap() {
                for k in ["id", "name", "type", "location", "etag", "properties"] {
                    assert!(nic.get(k).is_some(), "NIC lacks {k}");
                }
                assert_eq!(nic["type"], "Microsoft.Network/networkInterfaces");
                let id = nic["id"].as_str().unwrap();
                assert!(id.starts_with(&format!("/subscriptions/{sub}/resourceGroups/")));
                assert!(nic["etag"].as_str().unwrap().starts_with("W/\""));
                let props = &nic["properties"];
                match props.get("macAddress") {
                    Some(m) => {
                        let m = m.as_str().unwrap();
                        assert_eq!(m.len(), 17);
                        assert!(m.split('-').all(|b| {
                            b.len() == 2
                                && b.chars()
                                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
                        }));
                    }
                    None => {
                        assert!(props.get("virtualMachine").is_none(), "no MAC but a VM");
                        seen_unattached = true;
                    }
                }
                if id.contains("/virtualMachineScaleSets/") {
                    seen_vmss = true;
                }
                for c in props["ipConfigurations"].as_array().unwrap() {
                    let cp = &c["properties"];
                    let ip: IpAddr = cp["privateIPAddress"].as_str().unwrap().parse().unwrap();
                    let ver = cp["privateIPAddressVersion"].as_str().unwrap();
                    assert_eq!(ver == "IPv6", ip.is_ipv6());
                    seen_v6 |= ip.is_ipv6();
                    assert!(
                        ["Static", "Dynamic"]
                            .contains(&cp["privateIPAllocationMethod"].as_str().unwrap())
                    );
                    assert!(cp["primary"].is_boolean());
                    assert!(
                        cp["subnet"]["id"]
                            .as_str()
                            .unwrap()
                            .contains("/virtualNetworks/")
                    );
                    assert!(
                        c["id"]
                            .as_str()
                            .unwrap()
                            .starts_with(&format!("{id}/ipConfigurations/"))
                    );
                }
            }
        }
    }
    assert_eq!(dirs as u64, s.snapshots.delivered);
    assert!(seen_unattached && seen_v6 && seen_vmss);
}

#[test]
fn activity_records_have_the_export_shape() {
    let (d, s) = generated("act", &tiny(5));
    let recs = activity_records(&d.0);
    assert!(s.activity.success_lost > 0 && s.activity.delayed > 0);
    let exts: HashSet<String> = files(&d.0)
        .keys()
        .filter(|k| k.starts_with("activity/"))
        .map(|k| k.rsplit('.').next().unwrap().to_string())
        .collect();
    assert!(exts.contains("json") && exts.contains("jsonl"));
    let (mut created, mut updated, mut deleted, mut started) = (0, 0, 0, 0);
    for r in &recs {
        let t = r["time"].as_str().unwrap();
        assert_eq!(t.len(), 28, "{t}");
        assert_eq!(&t[19..20], ".");
        assert!(t.ends_with('Z'));
        let rid = r["resourceId"].as_str().unwrap();
        assert_eq!(rid, rid.to_ascii_uppercase());
        let op = r["operationName"].as_str().unwrap();
        assert!(
            op == "MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE"
                || op == "MICROSOFT.NETWORK/NETWORKINTERFACES/DELETE"
        );
        match r["resultType"].as_str().unwrap() {
            "Start" => {
                started += 1;
                assert!(r.pointer("/properties/responseBody").is_none());
            }
            "Failure" => assert!(r.pointer("/properties/responseBody").is_none()),
            "Success" if op.ends_with("DELETE") => {
                deleted += 1;
                assert_eq!(r["properties"]["statusCode"], "OK");
            }
            "Success" => {
                let code = r["properties"]["statusCode"].as_str().unwrap();
                match code {
                    "Created" => created += 1,
                    "OK" => updated += 1,
                    other => panic!("statusCode {other}"),
                }
                let body = r["properties"]["responseBody"]
                    .as_str()
                    .expect("responseBody is a string");
                let nic: Value = serde_json::from_str(body).unwrap();
                assert!(nic["id"].as_str().unwrap().eq_ignore_ascii_case(rid));
                assert!(nic["properties"]["ipConfigurations"].is_array());
            }
            other => panic!("resultType {other}"),
        }
    }
    assert!(created > 0 && updated > 0 && deleted > 0 && started > 0);
    // Delivery order is not event order.
    let times: Vec<&str> = recs.iter().map(|r| r["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).any(|w| w[0] > w[1]));
}

#[test]
fn scale_set_nics_have_no_events() {
    let (d, _) = generated("vmss", &tiny(6));
    for r in activity_records(&d.0) {
        let rid = r["resourceId"].as_str().unwrap();
        assert!(!rid.contains("VIRTUALMACHINESCALESETS"), "{rid}");
    }
    let truth = fs::read_to_string(d.0.join("truth.jsonl")).unwrap();
    assert!(truth.lines().any(|l| l.contains("\"scale_set\":true")));
}

#[test]
fn flow_tuples_have_their_formats() {
    let (d, s) = generated("flow", &tiny(8));
    assert!(s.flow.nsg_tuples > 0 && s.flow.vnet_tuples > 0);
    let (mut nsg_b, mut vnet_d, mut v6) = (0, 0, 0);
    for (rel, bytes) in files(&d.0) {
        if !rel.starts_with("flowlogs/") || !rel.ends_with(".json") {
            continue;
        }
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        for rec in v["records"].as_array().unwrap() {
            assert_eq!(rec["time"].as_str().unwrap().len(), 28);
            if rel.starts_with("flowlogs/nsg-") {
                assert_eq!(rec["category"], "NetworkSecurityGroupFlowEvent");
                let rid = rec["resourceId"].as_str().unwrap();
                assert_eq!(rid, rid.to_ascii_uppercase());
                assert_eq!(rec["properties"]["Version"], 2);
                for rule in rec["properties"]["flows"].as_array().unwrap() {
                    for g in rule["flows"].as_array().unwrap() {
                        let mac = g["mac"].as_str().unwrap();
                        assert_eq!(mac.len(), 12);
                        for t in g["flowTuples"].as_array().unwrap() {
                            let f: Vec<&str> = t.as_str().unwrap().split(',').collect();
                            assert_eq!(f.len(), 13, "{t}");
                            assert_eq!(f[0].len(), 10, "epoch seconds: {t}");
                            assert!(
                                ["T", "U"].contains(&f[5])
                                    && ["I", "O"].contains(&f[6])
                                    && ["A", "D"].contains(&f[7])
                            );
                            assert!(["B", "C", "E"].contains(&f[8]));
                            if f[8] == "B" || f[7] == "D" {
                                nsg_b += 1;
                                assert!(f[9..].iter().all(|c| c.is_empty()), "{t}");
                            } else {
                                assert!(f[9..].iter().all(|c| c.parse::<u64>().is_ok()), "{t}");
                            }
                            let _: IpAddr = f[1].parse().unwrap();
                            let _: IpAddr = f[2].parse().unwrap();
                        }
                    }
                }
            } else {
                assert_eq!(rec["category"], "FlowLogFlowEvent");
                assert_eq!(rec["flowLogVersion"], 4);
                assert_eq!(rec["macAddress"].as_str().unwrap().len(), 12);
                let fl = rec["flowLogResourceID"].as_str().unwrap();
                assert_eq!(fl, fl.to_ascii_uppercase());
                assert!(
                    rec["targetResourceID"]
                        .as_str()
                        .unwrap()
                        .contains("/providers/Microsoft.Network/virtualNetworks/")
                );
                for acl in rec["flowRecords"]["flows"].as_array().unwrap() {
                    assert!(acl["aclID"].is_string());
                    for g in acl["flowGroups"].as_array().unwrap() {
                        for t in g["flowTuples"].as_array().unwrap() {
                            let f: Vec<&str> = t.as_str().unwrap().split(',').collect();
                            assert_eq!(f.len(), 13, "{t}");
                            assert_eq!(f[0].len(), 13, "epoch milliseconds: {t}");
                            assert!(["6", "17"].contains(&f[5]));
                            assert!(["B", "C", "E", "D"].contains(&f[7]));
                            assert_eq!(f[8], "NX");
                            if f[7] == "D" {
                                vnet_d += 1;
                                assert_eq!(&f[9..], &["0", "0", "0", "0"]);
                            }
                            v6 += usize::from(f[1].contains(':'));
                        }
                    }
                }
            }
        }
    }
    assert!(nsg_b > 0 && vnet_d > 0 && v6 > 0);
}

#[test]
fn flow_truth_names_the_capturing_nic() {
    let (d, _) = generated("flowtruth", &tiny(9));
    let tuples = read_tuple_truth(&d.0).unwrap();
    assert!(!tuples.is_empty());
    // MAC -> NIC from every delivered snapshot.
    let mut mac_nic: HashMap<String, String> = HashMap::new();
    for (rel, bytes) in files(&d.0) {
        if rel.starts_with("snapshots/") && rel.contains("page-") {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            for nic in v["value"].as_array().unwrap() {
                if let Some(m) = nic["properties"]["macAddress"].as_str() {
                    mac_nic.insert(m.replace('-', ""), nic["id"].as_str().unwrap().to_string());
                }
            }
        }
    }
    let mut kinds: HashSet<String> = HashSet::new();
    let mut checked = 0;
    for t in &tuples {
        kinds.insert(t.kind.clone());
        let cap = if t.capture == "src" { &t.src } else { &t.dst };
        let nic = cap.nic.as_ref().expect("the capturing end has an owner");
        let peer = if t.capture == "src" { &t.dst } else { &t.src };
        if let Some(v) = &t.scope.vnet {
            assert_eq!(cap.vnet.as_ref(), Some(v), "{t:?}");
        }
        if t.kind == "unseen" {
            // A NIC no snapshot shows, on an address the other legacy VNet holds.
            assert!(nic.contains("/vmss-unseen/"), "{t:?}");
            assert!(!mac_nic.contains_key(&t.mac), "{t:?}");
            assert!(
                cap.vnet.as_deref().unwrap().contains("vnet-legacy-"),
                "{t:?}"
            );
            continue;
        }
        assert!(cap.vm.is_some(), "the capturing NIC is attached");
        if t.kind == "shadowed" {
            // Nobody holds it in the capturing VNet: its far end is nobody.
            assert!(peer.nic.is_none(), "{t:?}");
            assert_eq!(peer.vnet, cap.vnet, "{t:?}");
        }
        if t.kind == "peered" {
            assert!(peer.nic.is_some(), "{t:?}");
            assert!(peer.vnet.is_some() && peer.vnet != cap.vnet, "{t:?}");
        }
        if let Some(n) = mac_nic.get(&t.mac) {
            assert_eq!(n, nic);
            checked += 1;
        }
        if t.kind == "public" || t.kind == "unowned" {
            assert!(peer.nic.is_none(), "{t:?}");
        }
        if t.kind == "owned" {
            assert!(peer.nic.is_some(), "{t:?}");
        }
    }
    assert!(checked > tuples.len() / 2);
    for k in [
        "owned", "gap", "unowned", "public", "edge", "peered", "shadowed", "unseen",
    ] {
        assert!(kinds.contains(k), "no {k} tuples");
    }
}

#[test]
fn cached_estates_are_generated_once() {
    let root = TempDir::new("cache");
    let (dir, first) = cached_estate(&root.0, "tiny", 5).unwrap();
    assert_eq!(dir, root.0.join("tiny-5"));
    let first = first.expect("generated on the first call");
    let manifest = fs::read(dir.join("manifest.json")).unwrap();
    let (again, second) = cached_estate(&root.0, "tiny", 5).unwrap();
    assert_eq!(again, dir);
    assert!(second.is_none(), "generated twice");
    assert_eq!(fs::read(dir.join("manifest.json")).unwrap(), manifest);
    assert_eq!(first.seed, 5);
    let names: Vec<String> = fs::read_dir(&root.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["tiny-5"], "no partial directory left");
    assert!(cached_estate(&root.0, "no-such-profile", 5).is_err());
}

#[test]
fn flow_window_and_capturing_nics_narrow_the_tuples() {
    let cfg = SimConfig {
        flow_minutes: Some(60),
        flow_capture_nics: Some(4),
        flow_tuples: 600,
        ..tiny(11)
    };
    let (d, s) = generated("flowbusy", &cfg);
    let m = read_manifest(&d.0).unwrap();
    let tuples = read_tuple_truth(&d.0).unwrap();
    assert_eq!(tuples.len() as u64, s.flow.tuples);
    assert!(tuples.len() > 300, "{} tuples", tuples.len());
    let from = m.end - 60 * super::time::MIN;
    assert!(
        tuples.iter().all(|t| t.at >= from && t.at < m.end),
        "a tuple outside the last hour"
    );
    let macs: HashSet<&str> = tuples.iter().map(|t| t.mac.as_str()).collect();
    assert!(
        (1..=4).contains(&macs.len()),
        "{} capturing MACs, at most 4 asked",
        macs.len()
    );
}

#[test]
fn truth_intervals_never_overlap() {
    let cfg = tiny(13);
    let world = truth::World::simulate(&cfg);
    let idx = world.truth_index();
    let mut keys = 0;
    for (v, ip) in idx.keys() {
        keys += 1;
        let h = idx.history(v, ip);
        for w in h.windows(2) {
            let end = w[0].to.expect("an interval followed by another has an end");
            assert!(
                end <= w[1].from,
                "overlap on {ip} in vnet {v}: {:?} {:?}",
                w[0],
                w[1]
            );
        }
        for iv in h {
            assert!(iv.to.is_none_or(|e| e > iv.from), "empty interval {iv:?}");
        }
    }
    assert!(keys > 50);
    // The two legacy VNets reuse the same addresses.
    let legacy: Vec<u32> = (0..world.vnets.len() as u32)
        .filter(|&v| world.vnets[v as usize].legacy)
        .collect();
    assert_eq!(legacy.len(), 2);
    let shared = idx
        .keys()
        .filter(|(v, ip)| *v == legacy[0] && !idx.history(legacy[1], *ip).is_empty())
        .count();
    assert!(shared > 0);
    // Handovers within minutes exist (scale-set churn).
    let quick = idx
        .keys()
        .flat_map(|(v, ip)| {
            idx.history(v, ip)
                .windows(2)
                .map(|w| w[1].from - w[0].to.unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|&g| g < 10 * time::MIN)
        .count();
    assert!(quick > 0);
    // No NIC holds the same (vnet, ip) again after letting it go, and no NIC
    // returns to a VM.
    type Runs = HashMap<(u32, u32, IpAddr), Vec<(Micros, Option<Micros>)>>;
    let mut runs: Runs = HashMap::new();
    for iv in &idx.intervals {
        runs.entry((iv.nic, iv.vnet, iv.ip))
            .or_default()
            .push((iv.from, iv.to));
        if let Some(vm) = iv.vm {
            let dup = idx
                .intervals
                .iter()
                .filter(|o| o.nic == iv.nic && o.vm == Some(vm) && o.ip == iv.ip)
                .count();
            assert_eq!(dup, 1, "NIC {} on VM {vm} twice with {}", iv.nic, iv.ip);
        }
    }
    for (k, mut r) in runs {
        r.sort();
        for w in r.windows(2) {
            assert_eq!(
                w[0].1,
                Some(w[1].0),
                "{k:?} let go of its IP and took it back"
            );
        }
    }
    for n in &world.nics {
        let mut vms = Vec::new();
        for c in &n.changes {
            if let Some(vm) = c.state.and_then(|s| s.vm)
                && vms.last() != Some(&vm)
            {
                assert!(!vms.contains(&vm), "{} returns to a VM", n.id);
                vms.push(vm);
            }
        }
    }
}

#[test]
fn probes_truth_matches_truth_file() {
    let (d, _) = generated("probes", &tiny(14));
    let truth = Truth::load(&d.0).unwrap();
    let probes = read_probes(&d.0).unwrap();
    assert_eq!(probes.len(), 800);
    let mut kinds: HashMap<String, usize> = HashMap::new();
    let (mut none, mut owned, mut multi) = (0, 0, 0);
    for p in &probes {
        *kinds.entry(p.kind.clone()).or_default() += 1;
        let scope = scope_of(p.vnet.as_deref(), p.subscription.as_deref());
        let mut want: Vec<(String, Option<String>)> = p
            .truth
            .iter()
            .map(|o| {
                (
                    o.nic.to_ascii_lowercase(),
                    o.vm.as_ref().map(|v| v.to_ascii_lowercase()),
                )
            })
            .collect();
        let mut got = truth.owners(p.ip, p.at, &scope);
        want.sort();
        got.sort();
        assert_eq!(want, got, "{p:?}");
        match p.truth.len() {
            0 => none += 1,
            1 => owned += 1,
            _ => multi += 1,
        }
    }
    assert!(
        none > 50 && owned > 200,
        "none {none} owned {owned} multi {multi}"
    );
    let transitional: usize = [
        "before_end",
        "after_start",
        "after_release",
        "freed_gap",
        "handover",
        "lost_event",
    ]
    .iter()
    .map(|k| kinds.get(*k).copied().unwrap_or(0))
    .sum();
    assert!(transitional * 2 > probes.len(), "{kinds:?}");
}

/// Two delivered observations of the same NIC holding the same IP on the
/// same VM prove the state in between: the generator never hides a change
/// there (no NIC re-takes an IP or returns to a VM).
#[test]
fn evidence_between_equal_observations_is_the_truth() {
    let (d, _) = generated("evidence", &tiny(15));
    let manifest = read_manifest(&d.0).unwrap();
    let ev = Evidence::load(&d.0, &manifest).unwrap();
    let truth = Truth::load(&d.0).unwrap();
    let mut checked = 0;
    for (&(v, ip), claims) in &ev.claims {
        let scope = Scope::Vnet(ev.vnets.name(v).to_string());
        for c in claims {
            for w in c.holds.windows(2) {
                if w[0].1 != w[1].1 || w[1].0 - w[0].0 < 2 {
                    continue;
                }
                let t = w[0].0 + (w[1].0 - w[0].0) / 2;
                let owners = truth.owners(ip, t, &scope);
                let want = (
                    ev.nics.name(c.nic).to_string(),
                    w[0].1.map(|x| ev.vms.name(x).to_string()),
                );
                assert_eq!(owners, vec![want], "{ip} at {}", time::fmt_us(t));
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn profiles_parse_and_validate() {
    for p in PROFILES {
        SimConfig::profile(p, 1).unwrap().validate().unwrap();
    }
    assert!(SimConfig::profile("nope", 1).is_err());
}

// ---------------------------------------------------------------------------
// The scorer against mock servers

/// How a mock answers one end of a flow tuple: (tuple, source end?) → the
/// end's `ipwho` block.
type EndFn = Arc<dyn Fn(&TupleTruth, bool) -> Value + Send + Sync>;

/// A file's tuples with their index in their record.
type FileTuples = Vec<(TupleTruth, u32)>;

/// A mock ipwho: accepts every post, answers lookups with `answer` and
/// each posted flow-log file of the estate in `dir` with `end` for both
/// ends of every tuple (the file is recognised by its bytes).
async fn mock_server(
    dir: &Path,
    answer: Arc<dyn Fn(&Value) -> Value + Send + Sync>,
    end: EndFn,
) -> String {
    use axum::Json;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    // Tuples of each flow-log file, by its bytes, with their index in the record.
    let mut by_file: HashMap<String, FileTuples> = HashMap::new();
    let mut last = None;
    let mut ord = 0;
    for t in read_tuple_truth(dir).unwrap() {
        let here = (t.file.clone(), t.record);
        ord = if last.as_ref() == Some(&here) {
            ord + 1
        } else {
            0
        };
        last = Some(here);
        by_file.entry(t.file.clone()).or_default().push((t, ord));
    }
    let by_bytes: Arc<HashMap<Vec<u8>, FileTuples>> = Arc::new(
        by_file
            .into_iter()
            .map(|(f, ts)| (fs::read(dir.join(&f)).unwrap(), ts))
            .collect(),
    );
    let app = axum::Router::new()
        .route(
            "/v1/snapshots",
            post(|Json(_b): Json<Value>| async { Json(json!({"observations": 1})) }),
        )
        .route(
            "/v1/activity",
            post(|_b: axum::body::Bytes| async { Json(json!({"accepted": 1})) }),
        )
        .route(
            "/v1/topology",
            post(|Json(_b): Json<Value>| async { Json(json!({"stored": 1})) }),
        )
        .route(
            "/v1/enrich",
            post(move |b: axum::body::Bytes| {
                let (by_bytes, end) = (by_bytes.clone(), end.clone());
                async move {
                    let mut out = String::new();
                    for (t, ord) in by_bytes.get(b.as_ref()).expect("a file of the estate") {
                        let line = json!({
                            "source": {"ip": t.src.ip, "ipwho": end(t, true)},
                            "destination": {"ip": t.dst.ip, "ipwho": end(t, false)},
                            "azure": {"flowlog": {"record": t.record, "tuple": ord}},
                        });
                        out.push_str(&line.to_string());
                        out.push('\n');
                    }
                    out.push_str("{\"ipwho.summary\":{}}\n");
                    out
                }
            }),
        )
        .route(
            "/v1/lookups",
            post(move |Json(req): Json<Value>| {
                let answer = answer.clone();
                async move {
                    let answers: Vec<Value> = req["lookups"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| answer(l))
                        .collect();
                    Json(json!({ "answers": answers }))
                }
            }),
        )
        .layer(DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

/// Answers each flow end with its true owner.
fn oracle_end() -> EndFn {
    Arc::new(|t: &TupleTruth, src: bool| {
        let e = if src { &t.src } else { &t.dst };
        match &e.nic {
            Some(n) => json!({
                "status": "confirmed",
                "nic": {"id": n.to_ascii_uppercase(), "name": "x"},
                "vm_status": if e.vm.is_some() { "confirmed" } else { "unknown" },
                "vm": e.vm.as_ref().map(|v| json!({"id": v, "name": "vm"})),
            }),
            None => json!({"status": "unknown", "via": "not_looked_up"}),
        }
    })
}

fn owner_json(nic: &str, vm: Option<&str>) -> Value {
    json!({
        "nic": {"id": nic, "name": "x", "mac": null, "subscription": "s", "resource_group": "rg"},
        "vm": vm.map(|v| json!({"id": v, "name": "vm", "resource_group": "rg"})),
        "vnet": null, "subnet": null, "ip": "10.0.0.4/32",
        "certain": {"start": null, "end": null}, "possible": {"start": null, "end": null},
        "evidence": []
    })
}

/// Answers with the truth itself.
fn oracle(dir: &Path) -> Arc<dyn Fn(&Value) -> Value + Send + Sync> {
    let truth = Arc::new(Truth::load(dir).unwrap());
    Arc::new(move |l: &Value| {
        let ip: IpAddr = l["ip"].as_str().unwrap().parse().unwrap();
        let at = time::parse(l["at"].as_str().unwrap()).unwrap();
        let scope = scope_of(l["vnet"].as_str(), l["subscription"].as_str());
        let owners = truth.owners(ip, at, &scope);
        let base = json!({"ip": l["ip"], "at": l["at"]});
        let mut a = base.as_object().unwrap().clone();
        match owners.len() {
            0 => {
                a.insert("status".into(), json!("unknown"));
                a.insert("owner".into(), Value::Null);
                a.insert("candidates".into(), json!([]));
            }
            1 => {
                a.insert("status".into(), json!("confirmed"));
                a.insert(
                    "owner".into(),
                    owner_json(&owners[0].0.to_ascii_uppercase(), owners[0].1.as_deref()),
                );
                a.insert("candidates".into(), json!([]));
            }
            _ => {
                a.insert("status".into(), json!("ambiguous"));
                a.insert("owner".into(), Value::Null);
                let c: Vec<Value> = owners
                    .iter()
                    .map(|o| owner_json(&o.0, o.1.as_deref()))
                    .collect();
                a.insert("candidates".into(), Value::Array(c));
            }
        }
        Value::Object(a)
    })
}

#[tokio::test]
async fn oracle_answers_score_right() {
    let (d, s) = generated("oracle", &tiny(21));
    let url = mock_server(&d.0, oracle(&d.0), oracle_end()).await;
    let mut o = AccuracyOptions::new(&url);
    o.batch = 300;
    let r = run_accuracy_with(&d.0, &o).await.unwrap();
    assert_eq!(r.feed.snapshots, s.snapshots.delivered);
    assert_eq!(r.feed.activity_files, s.activity.files);
    assert_eq!(r.probes.lookups, 800);
    assert_eq!(r.flow_ends.lookups, 2 * s.flow.tuples);
    for sec in [&r.probes, &r.flow_ends] {
        let c = &sec.by_status["confirmed"];
        assert_eq!(c.right, c.n);
        assert_eq!(c.wrong, 0);
        let u = &sec.by_status["unknown"];
        assert_eq!(u.truth_none, u.n);
        if let Some(a) = sec.by_status.get("ambiguous") {
            assert_eq!(a.truth_in_candidates, a.n);
        }
    }
    assert_eq!(r.targets.wrong_confirmed, 0);
    assert!(r.settled.confirmed.n > 0 && r.settled.unknown.n > 0);
    // The oracle names every owner, so it never hedges a settled confirmed probe.
    assert_eq!(r.settled.confirmed.hedged, 0, "{:#?}", r.notable);
    assert_eq!(r.settled.confirmed.wrong, 0, "{:#?}", r.notable);
    let text = r.render();
    assert!(text.contains("Targets:"), "{text}");
}

#[tokio::test]
async fn wrong_answers_are_counted_wrong() {
    let (d, _) = generated("liar", &tiny(22));
    let bogus = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nobody";
    let url = mock_server(
        &d.0,
        Arc::new(move |l: &Value| {
            json!({"ip": l["ip"], "at": l["at"], "status": "probable", "owner": owner_json(bogus, None), "candidates": []})
        }),
        Arc::new(move |_: &TupleTruth, _| {
            json!({"status": "probable", "nic": {"id": bogus, "name": "nobody"}})
        }),
    )
    .await;
    let mut o = AccuracyOptions::new(&url);
    o.feed = false;
    let r = run_accuracy_with(&d.0, &o).await.unwrap();
    assert_eq!(
        r.targets.wrong_probable,
        r.probes.lookups + r.flow_ends.lookups
    );
    assert_eq!(r.targets.misled_probable, 0);
    assert!(!r.targets.met);
    assert_eq!(r.settled.unknown.hedged, r.settled.unknown.n);
}

#[tokio::test]
async fn naive_runs_in_a_scratch_database() {
    let admin = "postgres://postgres@127.0.0.1:5432/postgres";
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("the naive approach needs Postgres at {admin}: {e}"));
    let (d, _) = generated("naive", &tiny(23));
    let url = mock_server(&d.0, oracle(&d.0), oracle_end()).await;
    let mut o = AccuracyOptions::new(&url);
    o.database_url = Some(admin.to_string());
    let r = run_accuracy_with(&d.0, &o).await.unwrap();
    let n = r.naive.as_ref().expect("naive report");
    assert!(n.sightings > 0);
    let (ip, vn) = (&n.by_ip.probes, &n.by_vnet.probes);
    assert_eq!(ip.n, 800);
    assert_eq!(
        ip.right + ip.wrong + ip.no_answer_truth_none + ip.no_answer_truth_owner,
        ip.n
    );
    // Stretching windows over freed IPs and handovers names wrong owners.
    assert!(ip.wrong > 0 && vn.wrong > 0);
    assert!(ip.wrong_truth_none > 0);
    // Partitioning by VNet can only help the lookups that name a scope.
    assert!(vn.right >= ip.right, "by vnet {vn:?} by ip {ip:?}");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'ipwho_naive_%'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(left, 0, "scratch database left behind");
}
