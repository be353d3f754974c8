//! What the evidence settles beyond each NIC's own claims, over real HTTP
//! and Postgres: exclusivity between NICs, the NIC and its VM apart,
//! whether the scope was watched, and stale evidence.

mod common;

use common::*;
use serde_json::json;
use sqlx::PgPool;

const T0: &str = "2025-03-01T10:00:00Z";
const T1: &str = "2025-03-01T10:15:00Z";
const T2: &str = "2025-03-01T10:30:00Z";
const T3: &str = "2025-03-01T10:45:00Z";

async fn post(app: &TestApp, path: &str, body: serde_json::Value) {
    let (code, r) = app.post_json(path, &body).await;
    assert_eq!(code, 200, "{path}: {r}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_new_owner_created_at_an_instant_ends_the_old_ones_window(pool: PgPool) {
    let app = TestApp::start(pool).await;
    // old-nic is listed at T0; its delete was lost. new-nic is created on
    // the same IP at 10:03 (its create recorded), and listed at T1, which
    // does not list old-nic.
    let old = nic(SUB1, "vnet1", "old-nic", &["10.0.0.4"], None);
    let new = nic(SUB1, "vnet1", "new-nic", &["10.0.0.4"], None);
    post(
        &app,
        "/v1/snapshots",
        snapshot(T0, &[SUB1], true, vec![old.clone()]),
    )
    .await;
    post(
        &app,
        "/v1/activity",
        json!({"records": [activity("WRITE", "2025-03-01T10:03:00Z", &new, "Success", true)]}),
    )
    .await;
    post(
        &app,
        "/v1/snapshots",
        snapshot(T1, &[SUB1], true, vec![new.clone()]),
    )
    .await;
    // At 10:05, between its create and the snapshot: new-nic is confirmed,
    // its start fixed by its create, and old-nic ruled out by exclusivity.
    let (status, name, _) = app.owner("10.0.0.4", "2025-03-01T10:05:00Z", "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("new-nic"))
    );
    // Before 10:03, old-nic is only possible: new-nic's create bounds it
    // (tighter than the complete snapshot at 10:15 that no longer lists it).
    let (status, name, v) = app.owner("10.0.0.4", "2025-03-01T10:02:00Z", "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("possible", Some("old-nic"))
    );
    assert_eq!(v["owner"]["possible"]["end"], "2025-03-01T10:03:00Z", "{v}");
    assert_eq!(v["owner"]["open"], false);
    let roles: Vec<&str> = v["owner"]["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["role"].as_str().unwrap())
        .collect();
    assert!(
        roles
            .iter()
            .any(|r| r.starts_with("after: new-nic held the IP from then")),
        "{roles:?}"
    );
    // The same in the history: the old claim's window is the bounded one.
    let (code, h) = app.get("/v1/ips/10.0.0.4/history").await;
    assert_eq!(code, 200);
    let old_claim = h["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["nic"]["name"] == "old-nic")
        .unwrap();
    assert_eq!(old_claim["possible"]["end"], "2025-03-01T10:03:00Z");
    // No conflict: the two are never certain at once.
    let (_, c) = app.get("/v1/conflicts").await;
    assert_eq!(c.as_array().unwrap().len(), 0, "{c}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nic_moved_between_vms_is_one_claim_and_its_vm_a_second_answer(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let on_a = nic(SUB1, "vnet1", "db-nic", &["10.0.0.7"], Some("vm-a"));
    let on_b = nic(SUB1, "vnet1", "db-nic", &["10.0.0.7"], Some("vm-b"));
    post(
        &app,
        "/v1/snapshots",
        snapshot(T0, &[SUB1], true, vec![on_a]),
    )
    .await;
    post(
        &app,
        "/v1/snapshots",
        snapshot(T2, &[SUB1], true, vec![on_b]),
    )
    .await;
    let (code, h) = app.get("/v1/ips/10.0.0.7/history").await;
    assert_eq!(code, 200);
    assert_eq!(h["claims"].as_array().unwrap().len(), 1, "one claim: {h}");
    let vms: Vec<&str> = h["claims"][0]["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["vm"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(vms, vec!["vm-a", "vm-b"]);
    // Between the sightings the NIC is proven; its VM is "a or b".
    let (status, name, v) = app.owner("10.0.0.7", T1, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("db-nic"))
    );
    assert_eq!(v["vm"]["status"], "ambiguous");
    let cands: Vec<&str> = v["vm"]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cands, vec!["vm-a", "vm-b"]);
    assert!(
        v["explanation"]
            .as_str()
            .unwrap()
            .contains("VM vm-a or VM vm-b"),
        "{v}"
    );
    // At T0 the VM is proven; held on until T2 by the NIC, not on the same VM.
    let (_, _, v) = app.owner("10.0.0.7", T0, "").await;
    assert_eq!(
        (v["vm"]["status"].as_str(), v["vm"]["vm"]["name"].as_str()),
        (Some("confirmed"), Some("vm-a"))
    );
    // The VM's view says the same at T1.
    let vm_a = v["vm"]["vm"]["id"].as_str().unwrap().to_string();
    let (code, ips) = app
        .get(&format!("/v1/vms/{}/ips?at={T1}", urlencode(&vm_a)))
        .await;
    assert_eq!(code, 200, "{ips}");
    assert_eq!(ips["ips"][0]["status"], "confirmed");
    assert_eq!(ips["ips"][0]["vm_status"], "ambiguous");
    assert_eq!(ips["watched"]["watched"], true);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn unknown_says_whether_anything_was_watching(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let keep = nic(SUB1, "vnet1", "keep", &["10.0.0.8"], None);
    for t in [T0, T1, T2] {
        post(
            &app,
            "/v1/snapshots",
            snapshot(t, &[SUB1], true, vec![keep.clone()]),
        )
        .await;
    }
    // Between complete snapshots 15 minutes apart: nobody held 10.0.0.9.
    let (status, _, v) = app
        .owner(
            "10.0.0.9",
            "2025-03-01T10:20:00Z",
            &format!("&subscription={SUB1}"),
        )
        .await;
    assert_eq!(status, "unknown");
    assert_eq!(v["watched"]["watched"], true, "{v}");
    let w = &v["watched"]["subscriptions"][0];
    assert_eq!(
        (
            w["before"]["taken_at"].as_str(),
            w["after"]["taken_at"].as_str()
        ),
        (Some(T1), Some(T2))
    );
    assert_eq!(w["bound_seconds"], 1350.0);
    // Before the first one, and long after the last: nothing was looking.
    for at in ["2025-03-01T09:00:00Z", "2025-03-01T12:00:00Z"] {
        let (status, _, v) = app
            .owner("10.0.0.9", at, &format!("&subscription={SUB1}"))
            .await;
        assert_eq!(status, "unknown");
        assert_eq!(v["watched"]["watched"], false, "{at}: {v}");
        assert!(
            v["explanation"].as_str().unwrap().contains("not watched"),
            "{v}"
        );
    }
    // A subscription nothing ever listed is never watched.
    let (_, _, v) = app
        .owner("10.0.0.9", T1, &format!("&subscription={SUB2}"))
        .await;
    assert_eq!(v["watched"]["watched"], false);
    // The history lists the stretches nobody watched.
    let (_, h) = app
        .get("/v1/ips/10.0.0.8/history?from=2025-03-01T09:00:00Z&to=2025-03-01T12:00:00Z")
        .await;
    let unwatched = h["coverage"][0]["unwatched"].as_array().unwrap();
    assert_eq!(unwatched.len(), 2, "{h}");
    assert_eq!(unwatched[0]["end"], T0);
    // And the status page, each subscription's bound.
    let (_, s) = app.get("/v1/status").await;
    let sub = s["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["subscription"] == SUB1)
        .unwrap();
    assert_eq!(sub["freshness"]["bound_seconds"], 1350.0, "{s}");
    assert_eq!(sub["freshness"]["bound_source"], "cadence");
    assert_eq!(sub["freshness"]["stale"], true);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn an_open_claim_past_the_freshness_bound_is_possible(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    post(
        &app,
        "/v1/snapshots",
        snapshot(T0, &[SUB1], true, vec![a.clone()]),
    )
    .await;
    post(
        &app,
        "/v1/snapshots",
        snapshot(T1, &[SUB1], true, vec![a.clone()]),
    )
    .await;
    let (status, _, v) = app.owner("10.0.0.4", T2, "").await;
    assert_eq!(status, "probable", "{v}");
    assert!(v["stale"].is_null());
    assert_eq!(v["vm"]["status"], "probable");
    let (status, name, v) = app.owner("10.0.0.4", T3, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("possible", Some("nic-a"))
    );
    assert_eq!(v["stale"]["age_seconds"], 1800.0, "{v}");
    assert_eq!(v["stale"]["latest_complete_snapshot"]["taken_at"], T1);
    assert_eq!(v["vm"]["status"], "possible", "never surer than the NIC");
    // The same in a batch, and in enrichment.
    let (_, b) = app
        .post_json(
            "/v1/lookups",
            &json!({"lookups": [{"ip": "10.0.0.4", "at": T3}]}),
        )
        .await;
    assert_eq!(b["answers"][0]["status"], "possible");
    assert!(
        b["answers"][0]["stale"]["reason"]
            .as_str()
            .unwrap()
            .contains("freshness bound")
    );
    let line = json!({"time": T3, "src_ip": "10.0.0.4", "dst_ip": "8.8.8.8", "direction": "O",
                      "mac": a["properties"]["macAddress"], "subscription": SUB1});
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(line.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let s = &first["source"]["ipwho"];
    assert_eq!(
        (s["status"].as_str(), s["stale"].as_bool()),
        (Some("possible"), Some(true)),
        "{first}"
    );
    assert_eq!(s["scoped"], "mac");
    assert_eq!(
        s["watched"], false,
        "45 minutes after a snapshot due every 15: {first}"
    );
}

/// `%`-encodes an ARM id for one path segment.
fn urlencode(s: &str) -> String {
    s.replace('/', "%2F")
}

/// A VNet flow log record captured at `mac` in VNet `vnet_id`, one tuple
/// per `(src, dst, direction)`, at `at` (epoch ms).
fn vnet_flow_record(
    vnet_id: &str,
    mac: &str,
    at_ms: i64,
    tuples: &[(&str, &str, &str)],
) -> serde_json::Value {
    let tuples: Vec<String> = tuples
        .iter()
        .map(|(s, d, dir)| format!("{at_ms},{s},{d},40000,443,6,{dir},B,NX,0,0,0,0"))
        .collect();
    json!({
        "time": "2025-03-01T10:20:00.0000000Z",
        "flowLogVersion": 4,
        "flowLogGUID": "00000000-0000-0000-0000-0000000000f1",
        "macAddress": mac,
        "category": "FlowLogFlowEvent",
        "flowLogResourceID": format!("/SUBSCRIPTIONS/{SUB1}/RESOURCEGROUPS/NW/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NW/FLOWLOGS/FL"),
        "targetResourceID": vnet_id,
        "operationName": "FlowLogFlowEvent",
        "flowRecords": {"flows": [{"aclID": "acl", "flowGroups": [{"rule": "r", "flowTuples": tuples}]}]}
    })
}

async fn enrich_lines(app: &TestApp, body: serde_json::Value) -> Vec<serde_json::Value> {
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l.get("ipwho.summary").is_none())
        .collect()
}

/// Two VNets in two subscriptions both use 10.0.0.0/24; hub (SUB1) is
/// peered with spoke (10.1.0.0/24). Each end is looked up only where the
/// packet can have been.
#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn each_end_is_looked_up_only_where_the_packet_could_have_been(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let web = nic(SUB1, "hub", "web", &["10.0.0.4"], Some("web-vm"));
    let spoke_db = nic(SUB1, "spoke", "spoke-db", &["10.1.0.5"], Some("db-vm"));
    // The other subscription's VNet uses the same range: 10.0.0.9 is held
    // there, and nobody holds it in hub.
    let other = nic(
        SUB2,
        "other",
        "other-nic",
        &["10.0.0.9", "10.0.0.4"],
        Some("x-vm"),
    );
    for t in [T0, T1, T2] {
        post(
            &app,
            "/v1/snapshots",
            snapshot(t, &[SUB1], true, vec![web.clone(), spoke_db.clone()]),
        )
        .await;
        post(
            &app,
            "/v1/snapshots",
            snapshot(t, &[SUB2], true, vec![other.clone()]),
        )
        .await;
    }
    let mac = web["properties"]["macAddress"]
        .as_str()
        .unwrap()
        .replace('-', "");
    let hub = vnet_id(SUB1, "hub");
    let at_ms = 1_740_824_400_000; // 2025-03-01T10:20:00Z
    let tuples = [
        ("10.0.0.4", "10.0.0.9", "O"), // inside hub's space, nobody there
        ("10.0.0.4", "10.1.0.5", "O"), // in the peered spoke
        ("10.0.0.4", "10.2.0.7", "O"), // outside hub and its peers
    ];
    // Without topology: the far ends may be anywhere, never firmly elsewhere.
    let out = enrich_lines(
        &app,
        json!({"records": [vnet_flow_record(&hub, &mac, at_ms, &tuples)]}),
    )
    .await;
    assert_eq!(out.len(), 3);
    let src = &out[0]["source"]["ipwho"];
    assert_eq!(
        (src["status"].as_str(), src["scoped"].as_str()),
        (Some("confirmed"), Some("mac"))
    );
    assert_eq!(src["vm"]["name"], "web-vm");
    let far = &out[0]["destination"]["ipwho"];
    assert_eq!(
        (far["status"].as_str(), far["scoped"].as_str()),
        (Some("possible"), Some("no_topology")),
        "{far}"
    );
    assert_eq!(far["nic"]["name"], "other-nic");

    // With the topology: inside hub's space, hub only; the peered spoke;
    // outside, not looked up.
    let listing =
        |sub: &str, vnets| json!({"taken_at": T0, "subscriptions": [sub], "value": vnets});
    post(
        &app,
        "/v1/topology",
        listing(
            SUB1,
            json!([
                vnet(
                    SUB1,
                    "hub",
                    &["10.0.0.0/24"],
                    &[("spoke", "Connected", &["10.1.0.0/24"])]
                ),
                vnet(
                    SUB1,
                    "spoke",
                    &["10.1.0.0/24"],
                    &[("hub", "Connected", &["10.0.0.0/24"])]
                ),
            ]),
        ),
    )
    .await;
    let out = enrich_lines(
        &app,
        json!({"records": [vnet_flow_record(&hub, &mac, at_ms, &tuples)]}),
    )
    .await;
    let far = |i: usize| out[i]["destination"]["ipwho"].clone();
    assert_eq!(
        (far(0)["status"].as_str(), far(0)["scoped"].as_str()),
        (Some("unknown"), Some("in_vnet")),
        "{}",
        far(0)
    );
    assert!(far(0).get("nic").is_none(), "never the other VNet's NIC");
    assert_eq!(far(0)["watched"], true);
    assert_eq!(
        (far(1)["status"].as_str(), far(1)["scoped"].as_str()),
        (Some("confirmed"), Some("peered"))
    );
    assert_eq!(far(1)["via"], "ip_in_peered_vnet");
    assert_eq!(far(1)["nic"]["name"], "spoke-db");
    assert_eq!(
        (far(2)["status"].as_str(), far(2)["scoped"].as_str()),
        (Some("unknown"), Some("outside"))
    );

    // Captured by a NIC nobody knows (a scale-set NIC that lived between
    // snapshots): unknown, never the NIC of another VNet on that address.
    let out = enrich_lines(
        &app,
        json!({"records": [vnet_flow_record(&hub, "000D3AFFFFFF", at_ms, &[("10.0.0.4", "10.1.0.5", "O")])]}),
    )
    .await;
    let cap = &out[0]["source"]["ipwho"];
    assert_eq!(
        (cap["status"].as_str(), cap["scoped"].as_str()),
        (Some("unknown"), Some("mac_unknown")),
        "{cap}"
    );
    assert_eq!(cap["searched"], hub.to_ascii_lowercase());
    // The far end still follows the record's VNet.
    assert_eq!(out[0]["destination"]["ipwho"]["scoped"], "peered");
    // The known MAC, but a record of another VNet: out of scope.
    let other_vnet = vnet_id(SUB2, "other");
    let out = enrich_lines(
        &app,
        json!({"records": [vnet_flow_record(&other_vnet, &mac, at_ms, &tuples[..1])]}),
    )
    .await;
    assert_eq!(out[0]["source"]["ipwho"]["scoped"], "mac_out_of_scope");
    assert_eq!(out[0]["source"]["ipwho"]["status"], "unknown");
}
