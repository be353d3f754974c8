//! Conformance: every real NIC and Activity Log record in
//! `../shared/samples/azure` goes through the HTTP API, and none is lost.

mod common;

use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(samples_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The NICs of an ARM spec example: a single NIC, or a list page's `value`.
fn example_nics(name: &str) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&read(name)).unwrap();
    let body = &v["responses"]["200"]["body"];
    match body["value"].as_array() {
        Some(a) => a.clone(),
        None => vec![body.clone()],
    }
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn every_nic_sample_is_accepted(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let mut files: Vec<String> = std::fs::read_dir(samples_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("NetworkInterface"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "{files:?}");
    let mut total = 0;
    for (k, f) in files.iter().enumerate() {
        let nics = example_nics(f);
        total += nics.len();
        let body = json!({"taken_at": format!("2025-07-01T00:0{k}:00Z"), "complete": false, "value": nics});
        let (code, r) = app.post_json("/v1/snapshots", &body).await;
        assert_eq!(code, 200, "{f}: {r}");
        assert_eq!(r["accepted"].as_u64(), Some(nics.len() as u64), "{f}: {r}");
        assert!(r["rejected"].as_array().unwrap().is_empty(), "{f}: {r}");
    }
    assert!(total >= 4);
    // The Get example's second ip configuration is a /28 prefix: any address in it answers.
    // The 2025-05-01 List example has the same prefix in another subscription's VNet.
    let (code, v) = app
        .get("/v1/ips/172.20.2.20/owner?at=2025-07-01T00:01:00Z")
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["status"], "ambiguous", "{v}");
    let (code, v) = app
        .get("/v1/ips/172.20.2.20/owner?at=2025-07-01T00:01:00Z&subscription=00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["status"], "confirmed", "{v}");
    assert_eq!(v["owner"]["ip"], "172.20.2.16/28");
    assert_eq!(v["owner"]["nic"]["mac"], "000D3A1BC721");
    // The unattached NIC of ListAll has no MAC and no VM.
    let (_, h) = app.get("/v1/ips/172.20.2.4/history").await;
    assert!(
        h["claims"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["vm"].is_null() && c["nic"]["mac"].is_null()),
        "{h}"
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn every_activity_log_sample_is_accounted_for(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let files = [
        "MicrosoftDocs-azure-monitor-docs__platform__activity-log-schema__storage_eventhub_example.json",
        "elastic-integrations__azure_activitylogs__test-acitivitylogs-responsebody.log",
        "elastic-integrations__azure_activitylogs__test-activitylogs-raw.log",
        "elastic-integrations__azure_activitylogs__test-time-formats-corner-cases.log",
    ];
    for f in files {
        let (code, r) = app.post("/v1/activity", read(f)).await;
        assert_eq!(code, 200, "{f}: {r}");
        let ignored: u64 = r["ignored"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["count"].as_u64().unwrap())
            .sum();
        let rejected = r["rejected"].as_array().unwrap().len() as u64;
        let accounted = r["accepted"].as_u64().unwrap()
            + r["duplicates"].as_u64().unwrap()
            + ignored
            + rejected;
        assert_eq!(
            Some(accounted),
            r["records"].as_u64(),
            "{f}: every record accounted for: {r}"
        );
        assert!(r["records"].as_u64().unwrap() >= 1, "{f}");
        // None of these real records is a NIC write or delete.
        assert_eq!(r["accepted"], 0, "{f}: {r}");
        for x in r["rejected"].as_array().unwrap() {
            assert!(!x["reason"].as_str().unwrap().is_empty());
        }
    }
}
