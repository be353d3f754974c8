//! `ipwho demo`: a small estate with the churn that makes attribution hard,
//! posted through the same ingest path as real data, so a newcomer can query
//! something at once. Loading it twice changes nothing.
//!
//! The story (2025-06-02, UTC), two subscriptions whose VNets both use 10.0.0.0/24:
//! - `web-01-nic` (10.0.0.4, VM web-01) is created at 08:10 and lives on.
//! - `batch-07-nic` (10.0.0.5, VM batch-07) is created at 08:20 and deleted at
//!   10:05; 10.0.0.5 stays free until `api-02-nic` is created with it at 12:30.
//! - `db-nic` (10.0.0.7) moves from VM db-old to VM db-new at 11:15.
//! - `vmss-nic-0` (10.0.0.6, a scale-set NIC: no events) is listed until the
//!   10:00 snapshot; `vmss-nic-1` has 10.0.0.6 from the 11:00 snapshot on.
//! - In the dev subscription, `test-nic` holds 10.0.0.4 in another VNet.
//! - Complete snapshots of both subscriptions every hour, 08:00 to 14:00.

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::index::Index;
use crate::ingest::{self, SnapshotParams};

pub const PROD: &str = "11111111-1111-1111-1111-111111111111";
pub const DEV: &str = "22222222-2222-2222-2222-222222222222";

struct Nic {
    sub: &'static str,
    rg: &'static str,
    vnet: &'static str,
    name: &'static str,
    ip: &'static str,
    mac: &'static str,
    vm: &'static str,
}

fn nic_json(n: &Nic) -> Value {
    let base = format!("/subscriptions/{}/resourceGroups/{}", n.sub, n.rg);
    let id = format!(
        "{base}/providers/Microsoft.Network/networkInterfaces/{}",
        n.name
    );
    json!({
        "name": n.name,
        "id": id,
        "type": "Microsoft.Network/networkInterfaces",
        "location": "westeurope",
        "properties": {
            "provisioningState": "Succeeded",
            "macAddress": n.mac,
            "virtualMachine": { "id": format!("{base}/providers/Microsoft.Compute/virtualMachines/{}", n.vm) },
            "ipConfigurations": [{
                "name": "ipconfig1",
                "id": format!("{id}/ipConfigurations/ipconfig1"),
                "properties": {
                    "privateIPAddress": n.ip,
                    "privateIPAllocationMethod": "Dynamic",
                    "privateIPAddressVersion": "IPv4",
                    "primary": true,
                    "subnet": { "id": format!("{base}/providers/Microsoft.Network/virtualNetworks/{}/subnets/default", n.vnet) }
                }
            }]
        }
    })
}

fn event(op: &str, at: DateTime<Utc>, nic: &Nic, created: bool, body: Option<&Value>) -> Value {
    let id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}",
        nic.sub, nic.rg, nic.name
    )
    .to_uppercase();
    let mut props = json!({ "statusCode": if created { "Created" } else { "OK" } });
    if let Some(b) = body {
        props["responseBody"] = Value::String(b.to_string());
    }
    json!({
        "time": format!("{}0Z", at.format("%Y-%m-%dT%H:%M:%S%.6f")),
        "resourceId": id,
        "operationName": format!("MICROSOFT.NETWORK/NETWORKINTERFACES/{op}"),
        "category": "Administrative",
        "resultType": "Success",
        "resultSignature": if created { "Succeeded.Created" } else { "Succeeded.OK" },
        "correlationId": crate::model::short_digest(format!("{op}{at}{}", nic.name).as_bytes()),
        "properties": props
    })
}

/// Loads the demo estate; returns a summary with queries to try.
pub async fn load(pool: &PgPool, index: &Index) -> anyhow::Result<String> {
    let day = Utc
        .with_ymd_and_hms(2025, 6, 2, 0, 0, 0)
        .single()
        .expect("valid date");
    let at = |h: i64, m: i64| day + Duration::hours(h) + Duration::minutes(m);
    let prod = |name, ip, mac, vm| Nic {
        sub: PROD,
        rg: "prod-rg",
        vnet: "prod-vnet",
        name,
        ip,
        mac,
        vm,
    };
    let web = prod("web-01-nic", "10.0.0.4", "00-0D-3A-10-00-04", "web-01");
    let batch = prod("batch-07-nic", "10.0.0.5", "00-0D-3A-10-00-05", "batch-07");
    let api = prod("api-02-nic", "10.0.0.5", "00-0D-3A-10-00-15", "api-02");
    let db_old = prod("db-nic", "10.0.0.7", "00-0D-3A-10-00-07", "db-old");
    let db_new = prod("db-nic", "10.0.0.7", "00-0D-3A-10-00-07", "db-new");
    let vmss0 = prod("vmss-nic-0", "10.0.0.6", "00-0D-3A-10-00-06", "vmss_0");
    let vmss1 = prod("vmss-nic-1", "10.0.0.6", "00-0D-3A-10-00-16", "vmss_1");
    let test = Nic {
        sub: DEV,
        rg: "dev-rg",
        vnet: "dev-vnet",
        name: "test-nic",
        ip: "10.0.0.4",
        mac: "00-0D-3A-20-00-04",
        vm: "test-vm",
    };

    // Who each hourly snapshot lists.
    let mut snapshots = 0;
    for h in 8..=14 {
        let t = at(h, 0);
        let mut listed: Vec<&Nic> = Vec::new();
        if t >= at(8, 10) {
            listed.push(&web);
        }
        if t >= at(8, 20) && t < at(10, 5) {
            listed.push(&batch);
        }
        if t >= at(12, 30) {
            listed.push(&api);
        }
        listed.push(if t < at(11, 15) { &db_old } else { &db_new });
        if h <= 10 {
            listed.push(&vmss0);
        } else {
            listed.push(&vmss1);
        }
        let body = json!({ "value": listed.iter().map(|n| nic_json(n)).collect::<Vec<_>>() });
        let params = SnapshotParams {
            snapshot_id: Some(format!("demo-prod-{h:02}00")),
            taken_at: Some(t.to_rfc3339()),
            subscriptions: Some(vec![PROD.into()]),
            complete: Some(true),
            last_page: Some(true),
        };
        ingest::ingest_snapshot(pool, index, body.to_string().as_bytes(), params).await?;
        let dev = json!({ "value": [nic_json(&test)] });
        let params = SnapshotParams {
            snapshot_id: Some(format!("demo-dev-{h:02}00")),
            taken_at: Some(t.to_rfc3339()),
            subscriptions: Some(vec![DEV.into()]),
            complete: Some(true),
            last_page: Some(true),
        };
        ingest::ingest_snapshot(pool, index, dev.to_string().as_bytes(), params).await?;
        snapshots += 2;
    }
    let records = vec![
        event("WRITE", at(8, 10), &web, true, Some(&nic_json(&web))),
        event("WRITE", at(8, 20), &batch, true, Some(&nic_json(&batch))),
        event("DELETE", at(10, 5), &batch, false, None),
        event(
            "WRITE",
            at(11, 15),
            &db_new,
            false,
            Some(&nic_json(&db_new)),
        ),
        event("WRITE", at(12, 30), &api, true, Some(&nic_json(&api))),
    ];
    let body = json!({ "records": records }).to_string();
    let r = ingest::ingest_activity(pool, index, body.as_bytes()).await?;
    let claims = crate::store::claim_count(pool).await?;
    Ok(format!(
        "demo estate loaded: {snapshots} snapshots, {} activity events ({} new), {} claims in all.\n\
         Try:\n  \
         ipwho lookup 10.0.0.5 --at 2025-06-02T09:00:00Z      # batch-07-nic, confirmed\n  \
         ipwho lookup 10.0.0.5 --at 2025-06-02T11:00:00Z      # unknown: deleted at 10:05, free until 12:30\n  \
         ipwho lookup 10.0.0.6 --at 2025-06-02T10:30:00Z      # ambiguous: scale-set handover between snapshots\n  \
         ipwho lookup 10.0.0.4 --at 2025-06-02T12:00:00Z      # ambiguous: two VNets use 10.0.0.4\n  \
         ipwho lookup 10.0.0.4 --at 2025-06-02T12:00:00Z --subscription {PROD}\n  \
         ipwho history 10.0.0.7                               # db-nic moved from VM db-old to db-new",
        records.len(),
        r.accepted,
        claims
    ))
}
