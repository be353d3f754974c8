//! Every Azure input format, read from the project's own fixtures
//! (`tests/fixtures/`) through the public HTTP API: NIC list pages, VNet
//! list pages, Activity Log exports (Event Hub envelope and JSON Lines), NSG
//! flow logs version 1 and 2, VNet flow logs version 4. Each fixture holds
//! one unreadable record or tuple besides the good ones: it gets its own
//! error, and nothing else is lost.

mod common;

use common::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;

const SUB: &str = "5c1e7a20-93d4-4b6e-8f21-0a7d3c9e4b15";
/// The two listings of the estate: every NIC and VNet of the fixtures but
/// `batch01-nic` (which lives between them, in the Activity Log only).
const T0: &str = "2026-03-02T08:00:00Z";
const T1: &str = "2026-03-02T10:00:00Z";

fn fixture(name: &str) -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    std::fs::read(format!("{path}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn arm(rest: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rest}")
}

fn nic_id(rg: &str, name: &str) -> String {
    arm(&format!(
        "{rg}/providers/Microsoft.Network/networkInterfaces/{name}"
    ))
}

fn vnet_id(name: &str) -> String {
    arm(&format!(
        "rg-net-weu/providers/Microsoft.Network/virtualNetworks/{name}"
    ))
}

/// Asserts each (JSON pointer, value) of `want` in `v`; `null` stands for
/// absent.
#[track_caller]
fn check(v: &Value, want: &[(&str, Value)]) {
    for (pointer, expected) in want {
        let got = v.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(&got, expected, "{pointer} in {v}");
    }
}

async fn post_listing(app: &TestApp, path: &str, taken_at: &str, body: &Value) -> Value {
    let mut url = format!("{path}?taken_at={taken_at}&subscriptions={SUB}");
    if path == "/v1/snapshots" {
        url.push_str("&complete=true");
    }
    let (code, v) = app.post_json(&url, body).await;
    assert_eq!(code, 200, "{path} at {taken_at}: {v}");
    v
}

/// The VNet listing and two complete NIC listings, two hours apart.
async fn estate(app: &TestApp) {
    post_listing(app, "/v1/topology", T0, &fixture_json("vnets-page.json")).await;
    for t in [T0, T1] {
        let v = post_listing(app, "/v1/snapshots", t, &fixture_json("nics-page.json")).await;
        assert_eq!(
            (v["accepted"].as_u64(), v["complete"].as_bool()),
            (Some(4), Some(true)),
            "{v}"
        );
    }
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nic_list_page_is_read_nic_by_nic(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let mut page = fixture_json("nics-page.json");
    page["value"]
        .as_array_mut()
        .unwrap()
        .push(fixture_json("nic-bad-address.json"));
    let v = post_listing(&app, "/v1/snapshots", T0, &page).await;
    check(
        &v,
        &[
            ("/received", json!(5)),
            ("/accepted", json!(4)),
            ("/finished", json!(true)),
            // An unreadable NIC of its own subscription: the snapshot cannot
            // prove the others' absence.
            ("/complete", json!(false)),
            ("/rejected/0/index", json!(4)),
            (
                "/rejected/0/field",
                json!("properties.ipConfigurations[0].properties.privateIPAddress"),
            ),
            (
                "/rejected/0/reason",
                json!("\"10.40.1.300\" is not an IP address or CIDR prefix"),
            ),
            ("/rejected/1", Value::Null),
        ],
    );
    assert!(v["partial_reason"].is_string(), "{v}");
    assert_eq!(app.count("nics").await, 4, "the bad record stores nothing");

    // Each NIC as listed: IPv4 and IPv6 configurations, dashed MACs read as
    // 12 hex digits, the VM; the unattached NIC has neither MAC nor VM.
    for (ip, rg, name, mac, vm) in [
        (
            "10.40.1.4",
            "rg-pay-app",
            "app01-nic",
            json!("0022486A1C07"),
            json!("app01"),
        ),
        (
            "fd40:a1b2:c3d4:1::4",
            "rg-pay-app",
            "app01-nic",
            json!("0022486A1C07"),
            json!("app01"),
        ),
        (
            "10.40.2.10",
            "rg-pay-db",
            "db01-nic",
            json!("000D3A5E91B2"),
            json!("db01"),
        ),
        (
            "10.41.0.5",
            "rg-shared",
            "tools01-nic",
            json!("6045BD123456"),
            json!("tools01"),
        ),
        (
            "10.40.1.20",
            "rg-pay-app",
            "spare-nic",
            Value::Null,
            Value::Null,
        ),
    ] {
        let (status, _, v) = app.owner(ip, T0, "").await;
        // The listing's own instant: seen there, so proven there.
        assert_eq!(status, "confirmed", "{v}");
        check(
            &v,
            &[
                ("/owner/nic/name", json!(name)),
                ("/owner/nic/id", json!(nic_id(rg, name))),
                ("/owner/nic/subscription", json!(SUB)),
                ("/owner/nic/resource_group", json!(rg)),
                ("/owner/nic/mac", mac),
                ("/vm/vm/name", vm),
            ],
        );
    }
    assert_eq!(app.owner("10.40.1.30", T0, "").await.0, "unknown");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_vnet_list_page_is_read_with_subnets_and_peerings(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let v = post_listing(&app, "/v1/topology", T0, &fixture_json("vnets-page.json")).await;
    check(
        &v,
        &[
            ("/received", json!(3)),
            ("/stored", json!(2)),
            ("/vnets", json!(2)),
            ("/rejected/0/index", json!(2)),
            (
                "/rejected/0/field",
                json!("properties.virtualNetworkPeerings[0].properties.remoteVirtualNetwork.id"),
            ),
            ("/rejected/0/reason", json!("missing")),
            ("/rejected/1", Value::Null),
        ],
    );
    let (code, v) = app.get("/v1/topology").await;
    assert_eq!(code, 200, "{v}");
    let vnets = v["vnets"].as_array().unwrap();
    assert_eq!(vnets.len(), 2, "{v}");
    let find = |name: &str| {
        vnets
            .iter()
            .find(|x| {
                x["id"]
                    .as_str()
                    .unwrap()
                    .eq_ignore_ascii_case(&vnet_id(name))
            })
            .unwrap_or_else(|| panic!("{name} in {v}"))
    };
    let pay = find("vnet-pay");
    check(
        pay,
        &[
            ("/subscription", json!(SUB)),
            (
                "/address_space",
                json!(["10.40.0.0/16", "fd40:a1b2:c3d4::/48"]),
            ),
            (
                "/subnets/0/prefixes",
                json!(["10.40.1.0/24", "fd40:a1b2:c3d4:1::/64"]),
            ),
            ("/subnets/1/prefixes", json!(["10.40.2.0/24"])),
            ("/subnets/2", Value::Null),
            ("/peerings/0/connected", json!(true)),
            ("/peerings/0/remote_address_space", json!(["10.41.0.0/16"])),
            ("/peerings/1", Value::Null),
        ],
    );
    for (path, name) in [("/subnets/0/id", "snet-app"), ("/subnets/1/id", "snet-db")] {
        let id = pay.pointer(path).and_then(Value::as_str).unwrap();
        assert!(
            id.eq_ignore_ascii_case(&format!("{}/subnets/{name}", vnet_id("vnet-pay"))),
            "{id}"
        );
    }
    let remote = pay["peerings"][0]["remote"].as_str().unwrap();
    assert!(
        remote.eq_ignore_ascii_case(&vnet_id("vnet-shared")),
        "{remote}"
    );
    let shared = find("vnet-shared");
    check(
        shared,
        &[
            ("/address_space", json!(["10.41.0.0/16"])),
            ("/subnets/0/prefixes", json!(["10.41.0.0/24"])),
            ("/peerings/0/connected", json!(true)),
            (
                "/peerings/0/remote_address_space",
                json!(["10.40.0.0/16", "fd40:a1b2:c3d4::/48"]),
            ),
        ],
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn activity_log_exports_are_read_in_both_envelopes(pool: PgPool) {
    let app = TestApp::start(pool).await;
    estate(&app).await;
    let batch = nic_id("rg-pay-app", "batch01-nic");

    // Event Hub envelope: a Start, the creating Success (its state in
    // `responseBody` as an escaped string), a public IP write, a Failure,
    // and a Success whose body is another NIC than its resourceId.
    let (code, v) = app
        .post("/v1/activity", fixture("activity-eventhub.json"))
        .await;
    assert_eq!(code, 200, "{v}");
    check(
        &v,
        &[
            ("/records", json!(5)),
            ("/accepted", json!(1)),
            ("/duplicates", json!(0)),
            ("/rejected/0/index", json!(4)),
            ("/rejected/0/field", json!("properties.responseBody.id")),
            ("/rejected/1", Value::Null),
        ],
    );
    let reason = v["rejected"][0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the response body is NIC ") && reason.contains("db01-nic"),
        "{reason}"
    );
    let mut ignored: Vec<(String, u64)> = v["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["reason"].as_str().unwrap().to_string(),
                i["count"].as_u64().unwrap(),
            )
        })
        .collect();
    ignored.sort();
    assert_eq!(
        ignored,
        [
            ("not_succeeded".to_string(), 2),
            ("other_operation".to_string(), 1)
        ]
    );

    // Storage export, JSON Lines: a tag change (`responseBody` as an
    // object), the delete, and a delete at an impossible time.
    let (code, v) = app
        .post("/v1/activity", fixture("activity-storage.jsonl"))
        .await;
    assert_eq!(code, 200, "{v}");
    check(
        &v,
        &[
            ("/records", json!(3)),
            ("/accepted", json!(2)),
            ("/rejected/0/index", json!(2)),
            ("/rejected/0/field", json!("time")),
            ("/rejected/1", Value::Null),
        ],
    );
    // Posting both again changes nothing.
    let (_, v) = app
        .post("/v1/activity", fixture("activity-eventhub.json"))
        .await;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    let (_, v) = app
        .post("/v1/activity", fixture("activity-storage.jsonl"))
        .await;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(2)),
        "{v}"
    );

    // Created at 09:10:14.555, deleted at 09:50: nobody before or after.
    let (status, nic, v) = app.owner("10.40.1.30", "2026-03-02T09:20:00Z", "").await;
    assert_eq!(
        (status.as_str(), nic.as_deref()),
        ("confirmed", Some("batch01-nic")),
        "{v}"
    );
    check(
        &v,
        &[
            ("/owner/nic/id", json!(batch)),
            ("/owner/nic/mac", Value::Null),
            ("/vm/vm", Value::Null),
        ],
    );
    for at in ["2026-03-02T09:10:14Z", "2026-03-02T09:50:01Z"] {
        let (status, _, v) = app.owner("10.40.1.30", at, "").await;
        assert_eq!(status, "unknown", "{at}: {v}");
    }
    let (code, v) = app
        .get(&format!("/v1/ips/10.40.1.30/history?from={T0}&to={T1}"))
        .await;
    assert_eq!(code, 200, "{v}");
    check(
        &v,
        &[
            ("/claims/0/nic/name", json!("batch01-nic")),
            ("/claims/0/start_exact", json!(true)),
            ("/claims/0/end_exact", json!(true)),
            (
                "/claims/0/certain/start",
                json!("2026-03-02T09:10:14.555123Z"),
            ),
            ("/claims/0/certain/end", json!("2026-03-02T09:50:00Z")),
            ("/claims/1", Value::Null),
        ],
    );
}

/// Posts a flow-log blob to `/v1/enrich` and reads the NDJSON answer.
async fn enrich(app: &TestApp, name: &str) -> Vec<Value> {
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(fixture(name))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{name}");
    assert_eq!(
        r.headers()["content-type"],
        "application/x-ndjson",
        "{name}"
    );
    let body = r.bytes().await.unwrap();
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect()
}

/// The attribution of one end: (status, via, NIC name, VM name).
fn who(line: &Value, side: &str) -> (String, String, Option<String>, Option<String>) {
    let e = &line[side]["ipwho"];
    let s = |p: &str| e.pointer(p).and_then(Value::as_str).map(str::to_string);
    (
        s("/status").unwrap_or_default(),
        s("/via").unwrap_or_default(),
        s("/nic/name"),
        s("/vm/name"),
    )
}

#[track_caller]
fn owned(line: &Value, side: &str, status: &str, via: &str, nic: &str, vm: Option<&str>) {
    assert_eq!(
        who(line, side),
        (
            status.to_string(),
            via.to_string(),
            Some(nic.to_string()),
            vm.map(str::to_string)
        ),
        "{side} of {line}"
    );
}

#[track_caller]
fn not_looked_up(line: &Value, side: &str) {
    assert_eq!(
        who(line, side),
        (
            "unknown".to_string(),
            "not_looked_up".to_string(),
            None,
            None
        ),
        "{side} of {line}"
    );
}

#[track_caller]
fn summary(lines: &[Value], want: &[(&str, Value)]) {
    let last = lines.last().unwrap();
    check(&last["ipwho.summary"], want);
}

const NSG_APP: &str = "/SUBSCRIPTIONS/5C1E7A20-93D4-4B6E-8F21-0A7D3C9E4B15/RESOURCEGROUPS/RG-NET-WEU/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-APP";
const NSG_DB: &str = "/SUBSCRIPTIONS/5C1E7A20-93D4-4B6E-8F21-0A7D3C9E4B15/RESOURCEGROUPS/RG-NET-WEU/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/NSG-DB";

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn nsg_flow_logs_version_1_are_enriched(pool: PgPool) {
    let app = TestApp::start(pool).await;
    estate(&app).await;
    let out = enrich(&app, "nsg-v1.json").await;
    assert_eq!(out.len(), 8, "5 tuples, 2 errors, the summary: {out:#?}");

    // 8-field tuples: no flow state, no counters.
    let https_in = &out[0];
    check(
        https_in,
        &[
            ("/@timestamp", json!("2026-03-02T09:00:21Z")),
            ("/event/action", json!("allow")),
            ("/event/outcome", json!("success")),
            (
                "/network",
                json!({"transport": "tcp", "iana_number": "6", "direction": "inbound"}),
            ),
            ("/source/ip", json!("203.0.113.50")),
            ("/source/port", json!(50112)),
            ("/source/packets", Value::Null),
            ("/destination/ip", json!("10.40.1.4")),
            ("/destination/port", json!(443)),
            ("/destination/bytes", Value::Null),
            ("/azure/flowlog/format", json!("nsg")),
            ("/azure/flowlog/version", json!(1)),
            ("/azure/flowlog/state", Value::Null),
            ("/azure/flowlog/record", json!(0)),
            ("/azure/flowlog/tuple", json!(0)),
            ("/azure/flowlog/rule", json!("UserRule_allow-https-in")),
            ("/azure/flowlog/mac", json!("0022486A1C07")),
            ("/azure/flowlog/nsg_id", json!(NSG_APP)),
        ],
    );
    not_looked_up(https_in, "source");
    owned(
        https_in,
        "destination",
        "confirmed",
        "mac",
        "app01-nic",
        Some("app01"),
    );

    let to_db = &out[1];
    check(
        to_db,
        &[
            ("/@timestamp", json!("2026-03-02T09:00:23Z")),
            ("/network/direction", json!("outbound")),
            ("/source/port", json!(41000)),
            ("/destination/ip", json!("10.40.2.10")),
            ("/destination/port", json!(5432)),
            ("/azure/flowlog/tuple", json!(1)),
        ],
    );
    owned(
        to_db,
        "source",
        "confirmed",
        "mac",
        "app01-nic",
        Some("app01"),
    );
    owned(
        to_db,
        "destination",
        "confirmed",
        "ip_in_vnet",
        "db01-nic",
        Some("db01"),
    );

    let ssh_denied = &out[2];
    check(
        ssh_denied,
        &[
            ("/@timestamp", json!("2026-03-02T09:00:30Z")),
            ("/event", json!({"action": "deny", "outcome": "failure"})),
            (
                "/network",
                json!({"transport": "udp", "iana_number": "17", "direction": "inbound"}),
            ),
            ("/source/ip", json!("198.51.100.7")),
            ("/destination/port", json!(22)),
            ("/azure/flowlog/rule", json!("DefaultRule_DenyAllInBound")),
            ("/azure/flowlog/tuple", json!(2)),
        ],
    );
    owned(
        ssh_denied,
        "destination",
        "confirmed",
        "mac",
        "app01-nic",
        Some("app01"),
    );

    check(
        &out[3]["ipwho.error"],
        &[
            ("/record", json!(0)),
            ("/tuple", json!(3)),
            (
                "/reason",
                json!("expected 8 (v1) or 13 (v2/VNet) comma-separated fields, got 7"),
            ),
            (
                "/input",
                json!("1772442031,198.51.100.7,10.40.1.4,61001,3389,T,I"),
            ),
        ],
    );

    // The second record: NSG-DB, the other end in the peered VNet.
    let to_tools = &out[4];
    check(
        to_tools,
        &[
            ("/@timestamp", json!("2026-03-02T09:01:15Z")),
            ("/network/direction", json!("outbound")),
            ("/destination/ip", json!("10.41.0.5")),
            ("/destination/port", json!(49152)),
            ("/azure/flowlog/record", json!(1)),
            ("/azure/flowlog/tuple", json!(0)),
            ("/azure/flowlog/mac", json!("000D3A5E91B2")),
            ("/azure/flowlog/nsg_id", json!(NSG_DB)),
        ],
    );
    owned(
        to_tools,
        "source",
        "confirmed",
        "mac",
        "db01-nic",
        Some("db01"),
    );
    owned(
        to_tools,
        "destination",
        "confirmed",
        "ip_in_peered_vnet",
        "tools01-nic",
        Some("tools01"),
    );
    check(
        &out[5]["ipwho.error"],
        &[
            ("/record", json!(1)),
            ("/tuple", json!(1)),
            ("/reason", json!("field 6 (direction): invalid value \"X\"")),
        ],
    );
    let from_tools = &out[6];
    check(
        from_tools,
        &[
            ("/network/direction", json!("inbound")),
            ("/source/port", json!(49154)),
            ("/azure/flowlog/tuple", json!(2)),
        ],
    );
    owned(
        from_tools,
        "source",
        "confirmed",
        "ip_in_peered_vnet",
        "tools01-nic",
        Some("tools01"),
    );
    owned(
        from_tools,
        "destination",
        "confirmed",
        "mac",
        "db01-nic",
        Some("db01"),
    );

    summary(
        &out,
        &[
            ("/complete", json!(true)),
            ("/records_in", json!(2)),
            ("/records_rejected", json!(0)),
            ("/tuples_in", json!(7)),
            ("/tuples_out", json!(5)),
            ("/tuples_rejected", json!(2)),
            ("/formats/nsg", json!(2)),
            ("/formats/vnet", json!(0)),
            ("/errors_total", json!(2)),
        ],
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn nsg_flow_logs_version_2_are_enriched(pool: PgPool) {
    let app = TestApp::start(pool).await;
    estate(&app).await;
    let out = enrich(&app, "nsg-v2.json").await;
    assert_eq!(out.len(), 8, "5 tuples, 2 errors, the summary: {out:#?}");

    // One connection: begin (empty counters), continue, end.
    let begin = &out[0];
    check(
        begin,
        &[
            ("/@timestamp", json!("2026-03-02T09:05:01Z")),
            ("/event/action", json!("allow")),
            (
                "/network",
                json!({"transport": "tcp", "iana_number": "6", "direction": "outbound"}),
            ),
            ("/source/ip", json!("10.40.1.4")),
            ("/source/port", json!(50500)),
            ("/source/packets", Value::Null),
            ("/destination/ip", json!("192.0.2.80")),
            ("/destination/port", json!(443)),
            ("/azure/flowlog/state", json!("begin")),
            ("/azure/flowlog/version", json!(2)),
            (
                "/azure/flowlog/rule",
                json!("DefaultRule_AllowInternetOutBound"),
            ),
            ("/azure/flowlog/mac", json!("0022486A1C07")),
            ("/azure/flowlog/nsg_id", json!(NSG_APP)),
        ],
    );
    owned(
        begin,
        "source",
        "confirmed",
        "mac",
        "app01-nic",
        Some("app01"),
    );
    not_looked_up(begin, "destination");
    for (line, time, state, src, dst, tuple) in [
        (
            &out[1],
            "2026-03-02T09:05:40Z",
            "continue",
            (14, 2310),
            (11, 9870),
            1,
        ),
        (
            &out[2],
            "2026-03-02T09:06:00Z",
            "end",
            (3, 198),
            (2, 120),
            2,
        ),
    ] {
        check(
            line,
            &[
                ("/@timestamp", json!(time)),
                ("/azure/flowlog/state", json!(state)),
                ("/azure/flowlog/tuple", json!(tuple)),
                ("/source/packets", json!(src.0)),
                ("/source/bytes", json!(src.1)),
                ("/destination/packets", json!(dst.0)),
                ("/destination/bytes", json!(dst.1)),
                ("/network/packets", json!(src.0 + dst.0)),
                ("/network/bytes", json!(src.1 + dst.1)),
            ],
        );
        owned(
            line,
            "source",
            "confirmed",
            "mac",
            "app01-nic",
            Some("app01"),
        );
    }
    // A denied flow: state begin, empty counters.
    let denied = &out[3];
    check(
        denied,
        &[
            ("/event/action", json!("deny")),
            ("/network/direction", json!("inbound")),
            ("/network/packets", Value::Null),
            ("/source/ip", json!("203.0.113.9")),
            ("/destination/port", json!(23)),
            ("/azure/flowlog/state", json!("begin")),
            ("/azure/flowlog/rule", json!("DefaultRule_DenyAllInBound")),
        ],
    );
    owned(
        denied,
        "destination",
        "confirmed",
        "mac",
        "app01-nic",
        Some("app01"),
    );
    check(
        &out[4]["ipwho.error"],
        &[
            ("/record", json!(0)),
            ("/tuple", json!(4)),
            (
                "/reason",
                json!("field 8 (flow state): invalid value \"Q\""),
            ),
            (
                "/input",
                json!("1772442363,203.0.113.9,10.40.1.4,40001,23,T,I,D,Q,,,,"),
            ),
        ],
    );

    // A MAC of 11 digits: reported, and the group's tuple still attributed
    // by IP, within the subscription the NSG's id names.
    check(
        &out[5]["ipwho.error"],
        &[
            ("/record", json!(1)),
            ("/tuple", Value::Null),
            ("/input", json!("0022486A1C0")),
        ],
    );
    let reason = out[5]["ipwho.error"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("invalid MAC address"), "{reason}");
    let by_ip = &out[6];
    check(
        by_ip,
        &[
            ("/azure/flowlog/record", json!(1)),
            ("/azure/flowlog/tuple", json!(0)),
            ("/azure/flowlog/mac", Value::Null),
            ("/network/packets", json!(11)),
            ("/network/bytes", json!(3040)),
        ],
    );
    // No MAC, and an NSG record names no VNet: the source is looked for in
    // the subscription, and never firmly.
    owned(
        by_ip,
        "source",
        "possible",
        "ip_in_subscription",
        "app01-nic",
        Some("app01"),
    );
    assert_eq!(by_ip["source"]["ipwho"]["scoped"], "no_vnet", "{by_ip}");
    // The source, found by IP, does not say which VNet captured the
    // packet: the destination is looked for as widely, and no surer.
    owned(
        by_ip,
        "destination",
        "possible",
        "ip_in_subscription",
        "db01-nic",
        Some("db01"),
    );
    assert_eq!(
        by_ip["destination"]["ipwho"]["scoped"], "no_vnet",
        "{by_ip}"
    );

    summary(
        &out,
        &[
            ("/complete", json!(true)),
            ("/records_in", json!(2)),
            ("/records_rejected", json!(0)),
            ("/tuples_in", json!(6)),
            ("/tuples_out", json!(5)),
            ("/tuples_rejected", json!(1)),
            ("/formats/nsg", json!(2)),
            ("/errors_total", json!(2)),
        ],
    );
}

const FLOW_LOG: &str = "/SUBSCRIPTIONS/5C1E7A20-93D4-4B6E-8F21-0A7D3C9E4B15/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_WESTEUROPE/FLOWLOGS/FL-VNET-PAY";

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn vnet_flow_logs_are_enriched(pool: PgPool) {
    let app = TestApp::start(pool).await;
    estate(&app).await;
    let out = enrich(&app, "vnet-v4.json").await;
    assert_eq!(out.len(), 10, "7 tuples, 2 errors, the summary: {out:#?}");

    // Epoch milliseconds, IANA protocol numbers, `0` counters on begin.
    let begin = &out[0];
    check(
        begin,
        &[
            ("/@timestamp", json!("2026-03-02T09:10:01Z")),
            ("/event/action", json!("allow")),
            (
                "/network",
                json!({"transport": "tcp", "iana_number": "6", "direction": "inbound", "packets": 0, "bytes": 0}),
            ),
            ("/source/ip", json!("10.40.1.4")),
            ("/source/port", json!(41022)),
            ("/source/packets", json!(0)),
            ("/destination/ip", json!("10.40.2.10")),
            ("/destination/port", json!(5432)),
            ("/azure/flowlog/state", json!("begin")),
            ("/azure/flowlog/encryption", json!("NX")),
            ("/azure/flowlog/format", json!("vnet")),
            ("/azure/flowlog/version", json!(4)),
            ("/azure/flowlog/record", json!(0)),
            ("/azure/flowlog/tuple", json!(0)),
            ("/azure/flowlog/rule", json!("DefaultRule_AllowVnetInBound")),
            ("/azure/flowlog/mac", json!("000D3A5E91B2")),
            ("/azure/flowlog/flow_log_id", json!(FLOW_LOG)),
            ("/azure/flowlog/target_id", json!(vnet_id("vnet-pay"))),
            (
                "/azure/flowlog/acl_id",
                json!("7b9d1f3a-5c6e-4b80-a2d4-e6f8a0c2e4b6"),
            ),
            ("/azure/flowlog/nsg_id", Value::Null),
        ],
    );
    owned(
        begin,
        "source",
        "confirmed",
        "ip_in_vnet",
        "app01-nic",
        Some("app01"),
    );
    owned(
        begin,
        "destination",
        "confirmed",
        "mac",
        "db01-nic",
        Some("db01"),
    );
    let end = &out[1];
    check(
        end,
        &[
            ("/@timestamp", json!("2026-03-02T09:10:59.250Z")),
            ("/azure/flowlog/state", json!("end")),
            ("/azure/flowlog/tuple", json!(1)),
            ("/source/packets", json!(20)),
            ("/source/bytes", json!(4100)),
            ("/destination/packets", json!(18)),
            ("/destination/bytes", json!(90210)),
            ("/network/packets", json!(38)),
            ("/network/bytes", json!(94310)),
        ],
    );
    // Deny is the flow state `D`.
    let denied = &out[2];
    check(
        denied,
        &[
            ("/@timestamp", json!("2026-03-02T09:10:05.123Z")),
            ("/event", json!({"action": "deny", "outcome": "failure"})),
            ("/azure/flowlog/state", json!("deny")),
            ("/azure/flowlog/tuple", json!(2)),
            (
                "/azure/flowlog/rule",
                json!("BlockRdpFromInternet_0f3e5a7c-9b1d-4e26-8c4a-6e8b0d2f4a19"),
            ),
            ("/source/ip", json!("192.0.2.44")),
            ("/destination/port", json!(3389)),
        ],
    );
    not_looked_up(denied, "source");
    owned(
        denied,
        "destination",
        "confirmed",
        "mac",
        "db01-nic",
        Some("db01"),
    );

    // The second record: a lower-case MAC, an IPv6 tuple, UDP to the peered
    // VNet, a bad protocol, and the NIC with no VM.
    let v6 = &out[3];
    check(
        v6,
        &[
            ("/@timestamp", json!("2026-03-02T09:11:02.042Z")),
            ("/source/ip", json!("fd40:a1b2:c3d4:1::4")),
            ("/destination/ip", json!("2001:db8:4c1::10")),
            ("/network/direction", json!("outbound")),
            ("/azure/flowlog/state", json!("continue")),
            ("/azure/flowlog/encryption", json!("X")),
            ("/azure/flowlog/record", json!(1)),
            ("/azure/flowlog/tuple", json!(0)),
            ("/azure/flowlog/mac", json!("0022486A1C07")),
            (
                "/azure/flowlog/acl_id",
                json!("1d3f5b7c-9e0a-4c2d-b4f6-a8c0e2b4d6f8"),
            ),
        ],
    );
    owned(v6, "source", "confirmed", "mac", "app01-nic", Some("app01"));
    let dns = &out[4];
    check(
        dns,
        &[
            ("/network/transport", json!("udp")),
            ("/network/iana_number", json!("17")),
            ("/destination/port", json!(53)),
            ("/azure/flowlog/encryption", json!("NX_LOCAL_DST")),
            (
                "/azure/flowlog/rule",
                json!("DefaultRule_AllowVnetOutBound"),
            ),
            ("/azure/flowlog/tuple", json!(1)),
        ],
    );
    owned(
        dns,
        "source",
        "confirmed",
        "mac",
        "app01-nic",
        Some("app01"),
    );
    owned(
        dns,
        "destination",
        "confirmed",
        "ip_in_peered_vnet",
        "tools01-nic",
        Some("tools01"),
    );
    check(
        &out[5]["ipwho.error"],
        &[
            ("/record", json!(1)),
            ("/tuple", json!(2)),
            (
                "/reason",
                json!("field 5 (protocol): invalid value \"abc\""),
            ),
        ],
    );
    let to_spare = &out[6];
    check(
        to_spare,
        &[
            ("/destination/ip", json!("10.40.1.20")),
            ("/destination/port", json!(8080)),
            ("/azure/flowlog/tuple", json!(3)),
        ],
    );
    owned(
        to_spare,
        "destination",
        "confirmed",
        "ip_in_vnet",
        "spare-nic",
        None,
    );

    // A record whose MAC cannot be read: reported, its tuple attributed by
    // IP in the VNet the record names.
    check(
        &out[7]["ipwho.error"],
        &[
            ("/record", json!(2)),
            ("/tuple", Value::Null),
            ("/input", json!("not-a-mac")),
        ],
    );
    let by_ip = &out[8];
    check(
        by_ip,
        &[
            ("/azure/flowlog/record", json!(2)),
            ("/azure/flowlog/mac", Value::Null),
            ("/source/ip", json!("10.40.2.10")),
        ],
    );
    owned(
        by_ip,
        "source",
        "confirmed",
        "ip_in_vnet",
        "db01-nic",
        Some("db01"),
    );
    owned(
        by_ip,
        "destination",
        "confirmed",
        "ip_in_vnet",
        "app01-nic",
        Some("app01"),
    );

    summary(
        &out,
        &[
            ("/complete", json!(true)),
            ("/records_in", json!(3)),
            ("/records_rejected", json!(0)),
            ("/tuples_in", json!(8)),
            ("/tuples_out", json!(7)),
            ("/tuples_rejected", json!(1)),
            ("/formats/vnet", json!(3)),
            ("/formats/nsg", json!(0)),
            ("/errors_total", json!(2)),
        ],
    );
}
