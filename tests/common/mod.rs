//! Test harness: the real app on a real socket (port 0) over a fresh
//! database per test (`#[sqlx::test]`), and helpers to post and get JSON.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipwho::access::{Access, AllowedHosts};
use ipwho::api::{self, AppState, Limits};
use ipwho::index::Index;
use serde_json::Value;
use sqlx::PgPool;

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub index: Arc<Index>,
    /// Who may call: as `serve` runs it, on once a key is stored.
    pub access: Arc<Access>,
    pub http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    pub async fn start(pool: PgPool) -> Self {
        Self::start_with(pool, Limits::default()).await
    }

    pub async fn start_with(pool: PgPool, limits: Limits) -> Self {
        let index = Arc::new(
            ipwho::sync::load(&pool, Default::default())
                .await
                .expect("load index"),
        );
        Self::serve(pool, limits, index).await
    }

    /// The app as `ipwho serve` starts it: serving while its claims are
    /// still to be loaded (`ipwho::sync::load_into` loads them).
    pub async fn start_loading(pool: PgPool) -> Self {
        Self::serve(
            pool,
            Limits::default(),
            Arc::new(Index::loading(Default::default())),
        )
        .await
    }

    /// The app with its access control as `serve` sets it up from the
    /// keys stored now (off without any, on with one), reading the keys
    /// again on every request (`refresh_every` zero: revocations at once).
    pub async fn start_with_access(pool: PgPool) -> Self {
        let index = Arc::new(
            ipwho::sync::load(&pool, Default::default())
                .await
                .expect("load index"),
        );
        Self::serve_with(
            pool,
            Limits::default(),
            index,
            Some(std::time::Duration::ZERO),
        )
        .await
    }

    async fn serve(pool: PgPool, limits: Limits, index: Arc<Index>) -> Self {
        Self::serve_with(pool, limits, index, None).await
    }

    async fn serve_with(
        pool: PgPool,
        limits: Limits,
        index: Arc<Index>,
        refresh: Option<std::time::Duration>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut access = Access::load(pool.clone(), None, AllowedHosts::new(Some(addr), &[]))
            .await
            .expect("load keys");
        if let Some(r) = refresh {
            access.refresh_every = r;
        }
        let access = Arc::new(access);
        let state = AppState {
            pool: pool.clone(),
            index: index.clone(),
            limits,
            access: access.clone(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            api::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestApp {
            addr,
            pool,
            index,
            access,
            http: reqwest::Client::new(),
            _stop: tx,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Empties every table of evidence and claims, and the index: the
    /// service as new, for posting the same evidence again in another order.
    pub async fn empty(&self) {
        sqlx::query("TRUNCATE snapshots, snapshot_pages, nics, nic_states, observations, activity_events, activity_reach, claims, conflicts, claim_changes, topology_listings, vnets, vnet_states, vnet_runs CASCADE")
            .execute(&self.pool)
            .await
            .unwrap();
        self.index.reset(Index::new());
        self.index.set_topology(ipwho::topology::Topology::new());
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        // A health check's 503 is its status document, not a problem.
        let health = path.starts_with("/healthz") || path.starts_with("/readyz");
        Self::read(r, !health).await
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        Self::read(r, true).await
    }

    /// A response's status and JSON body; an error must be problem+json
    /// when `problems`.
    async fn read(r: reqwest::Response, problems: bool) -> (u16, Value) {
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.bytes().await.unwrap();
        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status >= 400 && problems {
            assert_eq!(
                ct.as_deref(),
                Some("application/problem+json"),
                "errors are problem+json: {v}"
            );
        }
        (status, v)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post(path, body.to_string()).await
    }

    /// The owner answer's status and NIC name.
    pub async fn owner(&self, ip: &str, at: &str, extra: &str) -> (String, Option<String>, Value) {
        let (code, v) = self
            .get(&format!("/v1/ips/{ip}/owner?at={at}{extra}"))
            .await;
        assert_eq!(code, 200, "{v}");
        let status = v["status"].as_str().unwrap().to_string();
        let nic = v["owner"]["nic"]["name"].as_str().map(str::to_string);
        (status, nic, v)
    }

    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {table}");
        sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

pub const SUB1: &str = "aaaaaaaa-0000-0000-0000-000000000001";
pub const SUB2: &str = "aaaaaaaa-0000-0000-0000-000000000002";

/// A NIC as ARM lists it.
pub fn nic(sub: &str, vnet: &str, name: &str, ips: &[&str], vm: Option<&str>) -> Value {
    let base = format!("/subscriptions/{sub}/resourceGroups/rg-{name}");
    let id = format!("{base}/providers/Microsoft.Network/networkInterfaces/{name}");
    let configs: Vec<Value> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            serde_json::json!({
                "name": format!("ipconfig{}", i + 1),
                "id": format!("{id}/ipConfigurations/ipconfig{}", i + 1),
                "properties": {
                    "privateIPAddress": ip,
                    "privateIPAllocationMethod": "Dynamic",
                    "privateIPAddressVersion": if ip.contains(':') { "IPv6" } else { "IPv4" },
                    "primary": i == 0,
                    "subnet": {"id": format!("/subscriptions/{sub}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/{vnet}/subnets/default")}
                }
            })
        })
        .collect();
    let mut props =
        serde_json::json!({ "ipConfigurations": configs, "provisioningState": "Succeeded" });
    if let Some(vm) = vm {
        props["virtualMachine"] = serde_json::json!({"id": format!("{base}/providers/Microsoft.Compute/virtualMachines/{vm}")});
        let h = name
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(b as u32));
        props["macAddress"] = Value::String(format!(
            "00-0D-3A-{:02X}-{:02X}-{:02X}",
            (h >> 16) & 0xff,
            (h >> 8) & 0xff,
            h & 0xff
        ));
    }
    serde_json::json!({
        "name": name,
        "id": id,
        "type": "Microsoft.Network/networkInterfaces",
        "location": "westeurope",
        "properties": props
    })
}

/// A VNet's ARM id.
pub fn vnet_id(sub: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/{name}"
    )
}

/// A VNet as ARM lists it: its address space, one subnet per prefix given,
/// and peerings to VNets of the same subscription (remote name, state,
/// remote address space).
pub fn vnet(sub: &str, name: &str, space: &[&str], peerings: &[(&str, &str, &[&str])]) -> Value {
    let id = vnet_id(sub, name);
    let subnets: Vec<Value> = space
        .iter()
        .enumerate()
        .map(|(i, p)| {
            serde_json::json!({
                "name": format!("s{i}"),
                "id": format!("{id}/subnets/s{i}"),
                "type": "Microsoft.Network/virtualNetworks/subnets",
                "properties": {"addressPrefix": p, "provisioningState": "Succeeded"}
            })
        })
        .collect();
    let peerings: Vec<Value> = peerings
        .iter()
        .map(|(remote, state, remote_space)| {
            serde_json::json!({
                "name": format!("{name}-to-{remote}"),
                "id": format!("{id}/virtualNetworkPeerings/{name}-to-{remote}"),
                "properties": {
                    "peeringState": state,
                    "peeringSyncLevel": "FullyInSync",
                    "provisioningState": "Succeeded",
                    "allowVirtualNetworkAccess": true,
                    "remoteVirtualNetwork": {"id": vnet_id(sub, remote)},
                    "remoteAddressSpace": {"addressPrefixes": remote_space},
                    "remoteVirtualNetworkAddressSpace": {"addressPrefixes": remote_space}
                }
            })
        })
        .collect();
    serde_json::json!({
        "name": name,
        "id": id,
        "type": "Microsoft.Network/virtualNetworks",
        "location": "westeurope",
        "etag": "W/\"00000000-0000-0000-0000-0000000000e1\"",
        "properties": {
            "provisioningState": "Succeeded",
            "addressSpace": {"addressPrefixes": space},
            "subnets": subnets,
            "virtualNetworkPeerings": peerings
        }
    })
}

/// A complete single-page snapshot body.
pub fn snapshot(taken_at: &str, subs: &[&str], complete: bool, nics: Vec<Value>) -> Value {
    serde_json::json!({
        "taken_at": taken_at,
        "subscriptions": subs,
        "complete": complete,
        "value": nics
    })
}

/// An Activity Log export record for a NIC write or delete.
pub fn activity(op: &str, time: &str, nic: &Value, result: &str, created: bool) -> Value {
    let id = nic["id"].as_str().unwrap().to_uppercase();
    let mut rec = serde_json::json!({
        "time": time,
        "resourceId": id,
        "operationName": format!("MICROSOFT.NETWORK/NETWORKINTERFACES/{op}"),
        "category": "Administrative",
        "resultType": result,
        "resultSignature": if created { "Succeeded.Created" } else { "Succeeded.OK" },
        "correlationId": format!("corr-{op}-{time}"),
        "properties": { "statusCode": if created { "Created" } else { "OK" } }
    });
    if op == "WRITE" && result == "Success" {
        rec["properties"]["responseBody"] = Value::String(nic.to_string());
    }
    rec
}

/// The shared samples of real Azure records.
pub fn samples_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/samples/azure"
    ))
}

/// Every claim as a lookup reads it (live claims at their subscription's
/// horizon), one line each, sorted: equal for equal histories.
pub async fn claims_table(pool: &PgPool) -> Vec<String> {
    let coverage = ipwho::store::load_coverage(pool, &Default::default())
        .await
        .unwrap();
    let mut rows: Vec<String> = ipwho::store::load_claims(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|mut c| {
            if let Some(h) = coverage.get(c.subscription()).and_then(|c| c.horizon()) {
                c.extend_to(h.at, &h.id);
            }
            serde_json::to_string(&c).unwrap()
        })
        .collect();
    rows.sort();
    rows
}

/// Stored references that do not resolve (evidence naming a NIC or a state
/// that is not stored), described; empty when the evidence is whole. The
/// schema leaves these to ingest (no foreign keys on evidence, for speed).
pub async fn dangling_references(pool: &PgPool) -> Vec<String> {
    let checks = [
        (
            "nic_states.nic_key",
            "SELECT count(*) FROM nic_states s WHERE NOT EXISTS (SELECT 1 FROM nics n WHERE n.nic_key = s.nic_key)",
        ),
        (
            "observations.nic_key",
            "SELECT count(*) FROM observations o WHERE NOT EXISTS (SELECT 1 FROM nics n WHERE n.nic_key = o.nic_key)",
        ),
        (
            "observations.fingerprint",
            "SELECT count(*) FROM observations o WHERE NOT EXISTS (SELECT 1 FROM nic_states s WHERE s.fingerprint = o.fingerprint)",
        ),
        (
            "activity_events.nic_key",
            "SELECT count(*) FROM activity_events e WHERE NOT EXISTS (SELECT 1 FROM nics n WHERE n.nic_key = e.nic_key)",
        ),
        (
            "activity_events.fingerprint",
            "SELECT count(*) FROM activity_events e WHERE e.fingerprint IS NOT NULL AND NOT EXISTS (SELECT 1 FROM nic_states s WHERE s.fingerprint = e.fingerprint)",
        ),
    ];
    let mut out = Vec::new();
    for (what, sql) in checks {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        if n > 0 {
            out.push(format!("{n} rows with a dangling {what}"));
        }
    }
    out
}
