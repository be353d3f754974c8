//! Flow-log enrichment end to end: claims from real ingest, blobs posted over
//! real HTTP, NDJSON read back.

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

fn lines(body: &[u8]) -> Vec<Value> {
    body.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l)
                .unwrap_or_else(|e| panic!("not JSON: {e}: {}", String::from_utf8_lossy(l)))
        })
        .collect()
}

/// Posts `body` to `/v1/enrich` (plain, no query) and reads the NDJSON
/// answer, which must be a 200; `what` names the input in failures.
async fn enrich(app: &TestApp, body: impl Into<reqwest::Body>, what: &str) -> Vec<Value> {
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{what}");
    assert_eq!(
        r.headers()["content-type"],
        "application/x-ndjson",
        "{what}"
    );
    lines(&r.bytes().await.unwrap())
}

async fn estate(app: &TestApp) {
    let mut a = nic(SUB1, "vnet1", "web-nic", &["10.5.16.4"], Some("web-vm"));
    a["properties"]["macAddress"] = json!("00-0D-3A-F8-78-56");
    let b = nic(SUB1, "vnet1", "db-nic", &["10.5.16.5"], Some("db-vm"));
    let other = nic(SUB2, "vnet2", "elsewhere-nic", &["10.5.16.5"], Some("x-vm"));
    for t in ["2018-11-13T11:50:00Z", "2018-11-13T12:10:00Z"] {
        let (code, r) = app
            .post_json(
                "/v1/snapshots",
                &snapshot(t, &[SUB1], true, vec![a.clone(), b.clone()]),
            )
            .await;
        assert_eq!(code, 200, "{r}");
        let (code, r) = app
            .post_json(
                "/v1/snapshots",
                &snapshot(t, &[SUB2], true, vec![other.clone()]),
            )
            .await;
        assert_eq!(code, 200, "{r}");
    }
}

fn nsg_blob() -> Value {
    json!({"records": [{
        "time": "2018-11-13T12:01:00.0000000Z",
        "systemId": "a0fca5ce-022c-47b1-9735-89943b42f2fa",
        "category": "NetworkSecurityGroupFlowEvent",
        "resourceId": format!("/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/WEB-NSG", SUB1.to_uppercase()),
        "operationName": "NetworkSecurityGroupFlowEvents",
        "properties": {"Version": 2, "flows": [{"rule": "DefaultRule_AllowVnetOutBound", "flows": [{"mac": "000D3AF87856", "flowTuples": [
            "1542110460,10.5.16.4,10.5.16.5,59932,1433,T,O,A,E,1,66,1,66",
            "1542110461,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,",
            "not,a,tuple",
            "1542110462,10.5.16.4,10.5.16.99,59933,1433,T,O,A,B,,,,"
        ]}]}]}
    }]})
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn both_ends_are_attributed_and_a_bad_tuple_is_reported(pool: PgPool) {
    let app = TestApp::start(pool).await;
    estate(&app).await;
    let out = enrich(&app, nsg_blob().to_string(), "the NSG blob").await;
    assert_eq!(out.len(), 5, "3 tuples, 1 error, 1 summary: {out:?}");

    let t = &out[0];
    assert_eq!(t["@timestamp"], "2018-11-13T12:01:00Z");
    assert_eq!(t["network"]["direction"], "outbound");
    assert_eq!(t["source"]["ipwho"]["status"], "confirmed");
    assert_eq!(t["source"]["ipwho"]["via"], "mac");
    assert_eq!(t["source"]["ipwho"]["nic"]["name"], "web-nic");
    assert_eq!(t["source"]["ipwho"]["vm"]["name"], "web-vm");
    // The other end, by IP in the capturing NIC's VNet: not the same IP in another VNet.
    assert_eq!(t["destination"]["ipwho"]["status"], "confirmed", "{t}");
    assert_eq!(t["destination"]["ipwho"]["via"], "ip_in_vnet");
    assert_eq!(t["destination"]["ipwho"]["vm"]["name"], "db-vm");

    let inbound = &out[1];
    assert_eq!(inbound["source"]["ipwho"]["status"], "unknown");
    assert_eq!(inbound["source"]["ipwho"]["via"], "not_looked_up");
    assert_eq!(inbound["destination"]["ipwho"]["nic"]["name"], "web-nic");
    assert!(
        inbound["source"].get("packets").is_none(),
        "empty counters are absent, not 0: {inbound}"
    );

    assert_eq!(out[2]["ipwho.error"]["tuple"], 2, "{}", out[2]);
    assert_eq!(
        out[3]["destination"]["ipwho"]["status"], "unknown",
        "nobody had 10.5.16.99"
    );

    let s = &out[4]["ipwho.summary"];
    assert_eq!(
        (
            s["tuples_in"].as_u64(),
            s["tuples_out"].as_u64(),
            s["tuples_rejected"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(s["source"]["confirmed"], 2);
    assert!(s["index"]["sequence"].as_u64().unwrap() > 0);
}

/// A VNet may use a public address space (IPv4 or global IPv6): its NICs'
/// addresses are looked up like private ones, while an address where no
/// claim lies, private or public, is not looked up at all.
#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_vnet_with_a_public_address_space_is_attributed(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(
        SUB1,
        "public-vnet",
        "pub-nic",
        &["20.50.1.4", "2603:1030:40c:7::4"],
        Some("pub-vm"),
    );
    let (code, r) = app
        .post_json(
            "/v1/snapshots",
            &snapshot("2025-03-01T10:00:00Z", &[SUB1], true, vec![a]),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    // The lines name the VNet they were captured in.
    let vnet = format!(
        "/subscriptions/{SUB1}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/public-vnet"
    );
    let flat = [
        ("20.50.1.4", "8.8.8.8"),
        ("2603:1030:40c:7::4", "2603:1030:40c:7::5"),
        ("10.9.9.9", "20.50.1.5"),
    ]
    .iter()
    .map(|(s, d)| {
        json!({"time": "2025-03-01T10:30:00Z", "src_ip": s, "dst_ip": d, "vnet": vnet}).to_string()
            + "\n"
    })
    .collect::<String>();
    let out = enrich(&app, flat, "the flat lines").await;
    assert_eq!(out.len(), 4, "{out:?}");
    let end = |i: usize, side: &str| out[i][side]["ipwho"].clone();
    for i in [0, 1] {
        let s = end(i, "source");
        assert_eq!(s["status"], "probable", "{}", out[i]);
        assert_eq!(s["nic"]["name"], "pub-nic");
        assert_eq!(s["vm"]["name"], "pub-vm");
    }
    assert_eq!(end(0, "destination")["via"], "not_looked_up");
    // Same /48 as a claim: looked up (in the VNet, then, its address space
    // not known, everywhere), and nobody held it.
    assert_eq!(end(1, "destination")["status"], "unknown");
    assert_eq!(end(1, "destination")["via"], "ip_any_scope");
    assert_eq!(end(1, "destination")["scoped"], "no_topology");
    // A private address in a /16 without claims: not looked up.
    assert_eq!(end(2, "source")["via"], "not_looked_up");
    assert_eq!(end(2, "destination")["via"], "ip_any_scope");
    let s = &out[3]["ipwho.summary"];
    assert_eq!(s["source"]["probable"], 2, "{s}");
    // Without the VNet, the line's ends may be anywhere: found, never firmly.
    let bare = json!({"time": "2025-03-01T10:30:00Z", "src_ip": "20.50.1.4", "dst_ip": "8.8.8.8"});
    let out = enrich(&app, bare.to_string() + "\n", "a line without its VNet").await;
    let s = &out[0]["source"]["ipwho"];
    assert_eq!(
        (s["status"].as_str(), s["scoped"].as_str()),
        (Some("possible"), Some("no_vnet"))
    );
    assert_eq!(s["nic"]["name"], "pub-nic");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn gzip_in_and_out(pool: PgPool) {
    let app = TestApp::start(pool).await;
    estate(&app).await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(nsg_blob().to_string().as_bytes()).unwrap();
    let body = gz.finish().unwrap();
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&r.bytes().await.unwrap()[..])
        .read_to_end(&mut plain)
        .unwrap();
    let out = lines(&plain);
    assert_eq!(out[0]["source"]["ipwho"]["nic"]["name"], "web-nic");
    assert!(out.last().unwrap().get("ipwho.summary").is_some());
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
async fn every_flow_log_sample_enriches(pool: PgPool) {
    let app = TestApp::start(pool).await;
    for f in [
        "MicrosoftDocs-azure-docs__network-watcher__flow-logs-read__nsg_v1_record__TRUNCATED.json",
        "MicrosoftDocs-azure-docs__network-watcher__flow-logs-read__vnet_record.json",
        "elastic-integrations__azure_network_watcher_nsg__sample_logs__testdata.log.json",
        "elastic-integrations__azure_network_watcher_vnet__sample_logs__testdata.log.json",
        "elastic-integrations__azure_network_watcher_vnet__test-vnet.log",
    ] {
        let body = std::fs::read(samples_dir().join(f)).unwrap();
        let out = enrich(&app, body, f).await;
        let s = &out.last().unwrap()["ipwho.summary"];
        assert!(s["tuples_out"].as_u64().unwrap() > 0, "{f}: {s}");
        assert_eq!(s["tuples_rejected"], 0, "{f}: {s}");
        assert_eq!(s["records_rejected"], 0, "{f}: {s}");
        assert_eq!(
            out.len() as u64,
            s["tuples_out"].as_u64().unwrap() + 1,
            "{f}"
        );
    }
    let (code, v) = app.post("/v1/enrich?format=bogus", "{}").await;
    assert_eq!((code, v["parameter"].as_str()), (400, Some("format")));
}
