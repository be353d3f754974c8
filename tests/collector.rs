//! The built-in collector end to end: a fake Resource Manager and token
//! endpoint on a local port (real HTTP, real-shaped list pages with
//! `nextLink`, scale sets and their NICs, throttling and failures), the
//! collector's whole path from token to ingested snapshot, and the answers
//! a user then gets from the real app over a fresh database.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{SecondsFormat, Utc};
use common::*;
use ipwho::collector::{
    self, CollectReport, CollectorConfig, Credential, CredentialSource, ManagedIdentityEndpoint,
    RetryPolicy, Secret,
};
use serde_json::{Value, json};
use sqlx::PgPool;

const SECRET: &str = "s3cr3t~Client.Secret_value-9f8e7d";
const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-arm-access-token.sig";

/// A scripted answer in place of a page.
#[derive(Clone, Debug)]
enum Fault {
    /// This status once, with `Retry-After` when given.
    Once(u16, Option<u64>),
    /// This status every time.
    Always(u16),
}

#[derive(Default)]
struct FakeState {
    base: String,
    /// Lower-cased list path → pages of items.
    lists: HashMap<String, Vec<Vec<Value>>>,
    /// (path, page index from 0) → faults to play before the page is served.
    faults: HashMap<(String, usize), VecDeque<Fault>>,
    /// Every ARM request: "path#page".
    seen: Vec<String>,
    token_requests: usize,
}

/// A fake Resource Manager and Microsoft Entra token endpoint.
struct FakeArm {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn arm_error(status: u16, code: &str, message: &str) -> Response {
    let s = StatusCode::from_u16(status).unwrap();
    (
        s,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

async fn token_endpoint(
    State(st): State<Arc<Mutex<FakeState>>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let base = {
        let mut s = st.lock().unwrap();
        s.token_requests += 1;
        s.base.clone()
    };
    assert_eq!(tenant, "tenant-1");
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("client_credentials")
    );
    assert_eq!(form.get("scope"), Some(&format!("{base}/.default")));
    if form.get("client_id").map(String::as_str) != Some("client-1")
        || form.get("client_secret").map(String::as_str) != Some(SECRET)
    {
        // A hostile token endpoint: it echoes what it was sent.
        let echoed = form.get("client_secret").cloned().unwrap_or_default();
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided ({echoed}). Trace ID: 0000"),
                "error_codes": [7000215]
            })),
        )
            .into_response();
    }
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": TOKEN})).into_response()
}

fn page_of(uri: &Uri) -> usize {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| {
            kv.strip_prefix("$skiptoken=")
                .or_else(|| kv.strip_prefix("%24skiptoken="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn arm(State(st): State<Arc<Mutex<FakeState>>>, uri: Uri, headers: HeaderMap) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {TOKEN}"))
    {
        return arm_error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    let path = uri.path().to_ascii_lowercase();
    let page = page_of(&uri);
    let mut s = st.lock().unwrap();
    s.seen.push(format!("{path}#{page}"));
    if let Some(q) = s.faults.get_mut(&(path.clone(), page)) {
        match q.front().cloned() {
            Some(Fault::Always(code)) => {
                return arm_error(
                    code,
                    "InternalServerError",
                    "Encountered internal server error.",
                );
            }
            Some(Fault::Once(code, retry_after)) => {
                q.pop_front();
                let mut r = if code == 429 {
                    arm_error(
                        code,
                        "TooManyRequests",
                        "Number of read requests for subscription exceeded the limit.",
                    )
                } else {
                    arm_error(
                        code,
                        "InternalServerError",
                        "Encountered internal server error.",
                    )
                };
                if let Some(ra) = retry_after {
                    r.headers_mut()
                        .insert("retry-after", ra.to_string().parse().unwrap());
                }
                return r;
            }
            None => {}
        }
    }
    let Some(pages) = s.lists.get(&path) else {
        return arm_error(404, "ResourceNotFound", "The resource was not found.");
    };
    let items = pages.get(page).cloned().unwrap_or_default();
    let mut body = json!({"value": items});
    if page + 1 < pages.len() {
        let api = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find(|kv| kv.starts_with("api-version="))
            .unwrap_or("");
        body["nextLink"] = json!(format!(
            "{}{}?{api}&$skiptoken={}",
            s.base,
            uri.path(),
            page + 1
        ));
    }
    let mut r = axum::Json(body).into_response();
    r.headers_mut().insert(
        "x-ms-ratelimit-remaining-subscription-reads",
        "11999".parse().unwrap(),
    );
    r
}

impl FakeArm {
    async fn start() -> FakeArm {
        logs();
        let state = Arc::new(Mutex::new(FakeState::default()));
        let app = axum::Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token_endpoint))
            .fallback(get(arm))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        state.lock().unwrap().base = format!("http://{addr}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        FakeArm {
            addr,
            state,
            _stop: tx,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set_list(&self, path: &str, pages: Vec<Vec<Value>>) {
        self.state
            .lock()
            .unwrap()
            .lists
            .insert(path.to_ascii_lowercase(), pages);
    }

    fn fault(&self, path: &str, page: usize, faults: Vec<Fault>) {
        self.state
            .lock()
            .unwrap()
            .faults
            .insert((path.to_ascii_lowercase(), page), faults.into());
    }

    fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    fn remove_nic(&self, path: &str, name: &str) {
        let mut s = self.state.lock().unwrap();
        for page in s.lists.get_mut(&path.to_ascii_lowercase()).unwrap() {
            page.retain(|n| n["name"] != name);
        }
    }

    fn seen(&self) -> Vec<String> {
        self.state.lock().unwrap().seen.clone()
    }

    fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }
}

fn nics_path(sub: &str) -> String {
    format!("/subscriptions/{sub}/providers/Microsoft.Network/networkInterfaces")
}

fn vmss_path(sub: &str) -> String {
    format!("/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachineScaleSets")
}

fn vmss_nics_path(sub: &str, rg: &str, name: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/microsoft.Compute/virtualMachineScaleSets/{name}/networkInterfaces"
    )
}

fn scale_set(sub: &str, rg: &str, name: &str, mode: Option<&str>) -> Value {
    let mut v = json!({
        "id": format!("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"),
        "name": name,
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": "westeurope",
        "sku": {"name": "Standard_D2s_v5", "tier": "Standard", "capacity": 2},
        "properties": {"provisioningState": "Succeeded", "uniqueId": "00000000-0000-0000-0000-0000000000aa"}
    });
    if let Some(m) = mode {
        v["properties"]["orchestrationMode"] = json!(m);
    }
    v
}

/// A Uniform scale-set instance's NIC, as `.../virtualMachineScaleSets/{vmss}/networkInterfaces` lists it.
fn vmss_nic(sub: &str, rg: &str, vmss: &str, instance: u32, ip: &str) -> Value {
    let vm = format!(
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{instance}"
    );
    let id = format!("{vm}/networkInterfaces/{vmss}-nic");
    json!({
        "name": format!("{vmss}-nic"),
        "id": id,
        "etag": "W/\"00000000-0000-0000-0000-000000000001\"",
        "properties": {
            "provisioningState": "Succeeded",
            "macAddress": format!("00-0D-3A-AA-00-{instance:02X}"),
            "primary": true,
            "virtualMachine": {"id": vm},
            "ipConfigurations": [{
                "name": "ipconfig1",
                "id": format!("{id}/ipConfigurations/ipconfig1"),
                "properties": {
                    "privateIPAddress": ip,
                    "privateIPAllocationMethod": "Dynamic",
                    "privateIPAddressVersion": "IPv4",
                    "primary": true,
                    "subnet": {"id": format!("/subscriptions/{sub}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet1/subnets/vmss")}
                }
            }]
        }
    })
}

/// `pages` pages of `per` NICs: nic-{p}-{i} holds 10.0.{p}.{i + 4}.
fn nic_pages(sub: &str, pages: usize, per: usize) -> Vec<Vec<Value>> {
    (0..pages)
        .map(|p| {
            (0..per)
                .map(|i| {
                    nic(
                        sub,
                        "vnet1",
                        &format!("nic-{p}-{i}"),
                        &[&format!("10.0.{p}.{}", i + 4)],
                        Some(&format!("vm-{p}-{i}")),
                    )
                })
                .collect()
        })
        .collect()
}

fn credential(fake: &FakeArm, secret: &str) -> Credential {
    let source = CredentialSource::ServicePrincipal {
        authority_host: fake.url(),
        tenant_id: "tenant-1".into(),
        client_id: "client-1".into(),
        client_secret: Secret::new(secret),
    };
    Credential::new(source, &fake.url(), Duration::from_secs(5)).unwrap()
}

fn config(fake: &FakeArm, secret: &str) -> CollectorConfig {
    let mut cfg = CollectorConfig::new(&[SUB1], &fake.url(), credential(fake, secret));
    cfg.retry = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(2),
    };
    cfg.requests_per_second = 0.0;
    cfg.request_timeout = Duration::from_secs(5);
    cfg
}

async fn collect(app: &TestApp, cfg: &CollectorConfig) -> CollectReport {
    let mut reports = collector::collect_once(&app.pool, &app.index, cfg)
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    reports.pop().unwrap()
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn now() -> String {
    rfc3339(Utc::now())
}

fn vnets_path(sub: &str) -> String {
    format!("/subscriptions/{sub}/providers/Microsoft.Network/virtualNetworks")
}

/// The estate's VNets over two pages: vnet1 (10.0.0.0/16, where its NICs
/// are) peered with hub (10.9.0.0/16), and hub.
fn vnet_pages(sub: &str) -> Vec<Vec<Value>> {
    vec![
        vec![vnet(
            sub,
            "vnet1",
            &["10.0.0.0/16"],
            &[("hub", "Connected", &["10.9.0.0/16"])],
        )],
        vec![vnet(
            sub,
            "hub",
            &["10.9.0.0/16"],
            &[("vnet1", "Connected", &["10.0.0.0/16"])],
        )],
    ]
}

/// A standard estate: 5 pages of 3 NICs, no scale sets, two VNets on two
/// pages.
async fn estate(fake: &FakeArm) {
    fake.set_list(&nics_path(SUB1), nic_pages(SUB1, 5, 3));
    fake.set_list(&vmss_path(SUB1), vec![vec![]]);
    fake.set_list(&vnets_path(SUB1), vnet_pages(SUB1));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn every_page_and_every_uniform_scale_set_nic_is_collected(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    fake.set_list(&nics_path(SUB1), nic_pages(SUB1, 5, 3));
    fake.set_list(&vnets_path(SUB1), vnet_pages(SUB1));
    // Scale sets over two pages: one Uniform, one Flexible (its NICs are in
    // the subscription-wide list), one from before orchestration modes.
    fake.set_list(
        &vmss_path(SUB1),
        vec![
            vec![scale_set(SUB1, "rg-vmss", "web", Some("Uniform"))],
            vec![
                scale_set(SUB1, "rg-vmss", "flex", Some("Flexible")),
                scale_set(SUB1, "rg-old", "old", None),
            ],
        ],
    );
    fake.set_list(
        &vmss_nics_path(SUB1, "rg-vmss", "web"),
        vec![
            vec![
                vmss_nic(SUB1, "rg-vmss", "web", 0, "10.1.0.4"),
                vmss_nic(SUB1, "rg-vmss", "web", 1, "10.1.0.5"),
            ],
            vec![vmss_nic(SUB1, "rg-vmss", "web", 3, "10.1.0.7")],
        ],
    );
    fake.set_list(
        &vmss_nics_path(SUB1, "rg-old", "old"),
        vec![vec![vmss_nic(SUB1, "rg-old", "old", 0, "10.2.0.4")]],
    );
    // Listing a Flexible scale set's NICs would fail the snapshot.
    fake.fault(
        &vmss_nics_path(SUB1, "rg-vmss", "flex"),
        0,
        vec![Fault::Always(400)],
    );

    let cfg = config(&fake, SECRET);
    let r = collect(&app, &cfg).await;
    assert!(r.complete, "{r:?}");
    assert_eq!(r.partial_reason, None);
    assert_eq!(
        (r.pages, r.nics, r.accepted, r.rejected),
        (5 + 2 + 2 + 1, 15 + 4, 19, 0),
        "{r:?}"
    );
    assert_eq!((r.scale_sets, r.scale_set_nics), (2, 4));
    assert_eq!(
        (r.requests, r.retries, r.throttled, r.token_requests),
        (10 + 2, 0, 0, 1)
    );
    assert_eq!(
        (r.topology.pages, r.topology.vnets, r.topology.stored),
        (2, 2, 2),
        "{r:?}"
    );
    assert_eq!(r.min_remaining_reads, Some(11999));
    assert!(
        !fake.seen().iter().any(|s| s.contains("/flex/")),
        "a Flexible scale set's NICs are not listed apart"
    );

    // Every NIC of every page answers.
    let at = rfc3339(r.taken_at.unwrap());
    for p in 0..5 {
        for i in 0..3 {
            let (status, name, _) = app.owner(&format!("10.0.{p}.{}", i + 4), &at, "").await;
            assert_eq!(
                (status.as_str(), name),
                ("confirmed", Some(format!("nic-{p}-{i}"))),
                "page {p}"
            );
        }
    }
    // Scale-set NICs too, with their instance as the VM.
    for (ip, vm) in [
        ("10.1.0.4", "0"),
        ("10.1.0.5", "1"),
        ("10.1.0.7", "3"),
        ("10.2.0.4", "0"),
    ] {
        let (status, name, v) = app.owner(ip, &at, "").await;
        assert_eq!(status, "confirmed", "{ip}: {v}");
        assert!(name.unwrap().ends_with("-nic"));
        assert_eq!(v["vm"]["vm"]["name"], vm, "{v}");
    }
    let (code, v) = app.get("/v1/status").await;
    assert_eq!(code, 200);
    let s = &v["subscriptions"][0];
    assert_eq!(
        s["last_complete_snapshot"]["id"].as_str(),
        r.snapshot_id.as_deref()
    );
    assert_eq!(s["last_complete_snapshot"]["nics"], 19);

    // The next run reuses the cached token; it extends the same claims.
    let r2 = collect(&app, &cfg).await;
    assert!(r2.complete);
    assert_eq!(
        (
            r2.token_requests,
            r2.claims_inserted,
            r2.claims_deleted,
            r2.absent_nics_affected
        ),
        (0, 0, 0, 0),
        "{r2:?}"
    );
    assert_eq!(fake.token_requests(), 1);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn throttling_and_a_recovering_500_are_retried_to_a_complete_snapshot(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    estate(&fake).await;
    fake.fault(&nics_path(SUB1), 1, vec![Fault::Once(429, Some(1))]);
    fake.fault(
        &nics_path(SUB1),
        3,
        vec![Fault::Once(500, None), Fault::Once(503, None)],
    );
    let started = Instant::now();
    let r = collect(&app, &config(&fake, SECRET)).await;
    assert!(r.complete, "{r:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    assert_eq!((r.pages, r.nics), (6, 15));
    assert_eq!(
        (r.requests, r.retries, r.throttled),
        (6 + 2 + 3, 3, 1),
        "{r:?}"
    );
    let seen = fake.seen();
    let p = nics_path(SUB1).to_ascii_lowercase();
    assert_eq!(seen.iter().filter(|s| **s == format!("{p}#1")).count(), 2);
    assert_eq!(seen.iter().filter(|s| **s == format!("{p}#3")).count(), 3);
    let (status, _, _) = app.owner("10.0.4.6", &now(), "").await;
    assert_eq!(status, "probable");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_page_that_never_comes_back_leaves_the_snapshot_partial_and_ends_no_claim(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    estate(&fake).await;
    let cfg = config(&fake, SECRET);
    let first = collect(&app, &cfg).await;
    assert!(first.complete);

    // Page 3 of 5 now always fails, and a NIC of page 1 is gone.
    fake.fault(&nics_path(SUB1), 2, vec![Fault::Always(500)]);
    fake.remove_nic(&nics_path(SUB1), "nic-0-0");
    let r = collect(&app, &cfg).await;
    assert!(!r.complete, "{r:?}");
    let reason = r.partial_reason.clone().unwrap();
    assert!(reason.contains("networkInterfaces page 3"), "{reason}");
    assert!(
        reason.contains("HTTP 500") && reason.contains("after 4 attempts"),
        "{reason}"
    );
    assert_eq!(
        (r.pages, r.nics, r.absent_nics_affected),
        (2 + 1, 5, 0),
        "{r:?}"
    );
    assert_eq!((r.requests, r.retries), (2 + 4 + 1 + 2, 3));
    assert_eq!(r.topology.partial_reason, None, "the VNets all came back");
    let (complete, finished, stored_reason): (bool, bool, Option<String>) =
        sqlx::query_as("SELECT complete, finished, partial_reason FROM snapshots WHERE id = $1")
            .bind(r.snapshot_id.as_deref().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (complete, finished, stored_reason.as_deref()),
        (false, true, Some(reason.as_str()))
    );

    let at = now();
    // NICs on the missing page (and after it): still probably theirs.
    for ip in ["10.0.2.4", "10.0.3.5", "10.0.4.6"] {
        let (status, _, v) = app.owner(ip, &at, "").await;
        assert_eq!(status, "probable", "{ip}: {v}");
    }
    // The NIC that is gone is not ended by a partial snapshot either.
    let (status, name, _) = app.owner("10.0.0.4", &at, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("probable", Some("nic-0-0"))
    );
    // NICs the partial snapshot did list are confirmed at its time.
    let (status, _, _) = app
        .owner("10.0.1.4", &rfc3339(r.taken_at.unwrap()), "")
        .await;
    assert_eq!(status, "confirmed");

    let (_, v) = app.get("/v1/status").await;
    let s = &v["subscriptions"][0];
    assert_eq!(
        s["last_partial_snapshot"]["id"].as_str(),
        r.snapshot_id.as_deref()
    );
    assert_eq!(
        s["last_complete_snapshot"]["id"].as_str(),
        first.snapshot_id.as_deref()
    );

    // A Retry-After beyond the ceiling fails the list at once rather than stalling.
    fake.clear_faults();
    fake.fault(&nics_path(SUB1), 1, vec![Fault::Once(429, Some(3600))]);
    let started = Instant::now();
    let r = collect(&app, &cfg).await;
    assert!(!r.complete);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        r.partial_reason
            .unwrap()
            .contains("Retry-After 3600 s exceeds the 2 s")
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_failed_scale_set_list_leaves_the_snapshot_partial(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    fake.set_list(&nics_path(SUB1), nic_pages(SUB1, 1, 2));
    fake.set_list(
        &vmss_path(SUB1),
        vec![vec![scale_set(SUB1, "rg-vmss", "web", Some("Uniform"))]],
    );
    fake.set_list(
        &vmss_nics_path(SUB1, "rg-vmss", "web"),
        vec![vec![vmss_nic(SUB1, "rg-vmss", "web", 0, "10.1.0.4")]],
    );
    let cfg = config(&fake, SECRET);
    assert!(collect(&app, &cfg).await.complete);
    fake.fault(
        &vmss_nics_path(SUB1, "rg-vmss", "web"),
        0,
        vec![Fault::Always(403)],
    );
    let r = collect(&app, &cfg).await;
    assert!(!r.complete);
    let reason = r.partial_reason.unwrap();
    assert!(
        reason.contains("scale set rg-vmss/web networkInterfaces page 1: HTTP 403"),
        "{reason}"
    );
    assert_eq!(r.retries, 0, "a 403 is not retried");
    let (status, _, _) = app.owner("10.1.0.4", &now(), "").await;
    assert_eq!(status, "probable");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn vnets_are_listed_page_by_page_and_a_failing_list_spoils_no_snapshot(pool: PgPool) {
    use ipwho::topology::Route;
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    estate(&fake).await;
    // The VNet list's second page is throttled once: retried like the NICs'.
    fake.fault(&vnets_path(SUB1), 1, vec![Fault::Once(429, Some(1))]);
    let cfg = config(&fake, SECRET);
    let r = collect(&app, &cfg).await;
    assert!(r.complete, "{r:?}");
    let t = &r.topology;
    assert_eq!(
        (
            t.pages,
            t.vnets,
            t.stored,
            t.rejected,
            t.partial_reason.as_deref(),
            t.error.as_deref()
        ),
        (2, 2, 2, 0, None, None),
        "{r:?}"
    );
    assert_eq!((r.throttled, r.retries), (1, 1));
    let p = vnets_path(SUB1).to_ascii_lowercase();
    assert_eq!(
        fake.seen()
            .iter()
            .filter(|s| **s == format!("{p}#1"))
            .count(),
        2
    );
    // The topology, at the snapshot's instant, is in the index.
    let at = r.taken_at.unwrap().timestamp_micros();
    let vnet1 = vnet_id(SUB1, "vnet1").to_ascii_lowercase();
    let hub = vnet_id(SUB1, "hub").to_ascii_lowercase();
    let topo = app.index.topology();
    assert_eq!(
        topo.route(&vnet1, "10.0.3.4".parse().unwrap(), at),
        Route::InVnet
    );
    assert_eq!(
        topo.route(&vnet1, "10.9.0.4".parse().unwrap(), at),
        Route::Peered(hub.clone().into())
    );
    let (_, v) = app.get("/v1/status").await;
    let s = &v["subscriptions"][0];
    assert_eq!(s["vnets"], 2, "{s}");
    assert_eq!(
        s["last_topology_listing"]["taken_at"].as_str(),
        Some(rfc3339(r.taken_at.unwrap()).as_str())
    );
    assert!(s["last_topology_listing"]["partial_reason"].is_null());

    // Page 2 of the VNets now always fails, and vnet1's peering went away:
    // the NIC snapshot is complete all the same, and page 1 is stored.
    fake.clear_faults();
    fake.fault(&vnets_path(SUB1), 1, vec![Fault::Always(500)]);
    fake.set_list(
        &vnets_path(SUB1),
        vec![
            vec![vnet(SUB1, "vnet1", &["10.0.0.0/16"], &[])],
            vnet_pages(SUB1).remove(1),
        ],
    );
    let r2 = collect(&app, &cfg).await;
    assert!(r2.complete, "{r2:?}");
    assert_eq!(r2.partial_reason, None);
    let reason = r2.topology.partial_reason.clone().unwrap();
    assert!(
        reason.contains("virtualNetworks page 2") && reason.contains("HTTP 500"),
        "{reason}"
    );
    assert_eq!((r2.topology.pages, r2.topology.stored), (1, 1), "{r2:?}");
    let at2 = r2.taken_at.unwrap().timestamp_micros();
    let topo = app.index.topology();
    assert_eq!(
        topo.route(&vnet1, "10.9.0.4".parse().unwrap(), at2),
        Route::Outside
    );
    assert_eq!(
        topo.route(&vnet1, "10.9.0.4".parse().unwrap(), at),
        Route::Peered(hub.clone().into()),
        "the first listing still answers for its time"
    );
    let (_, v) = app.get("/v1/status").await;
    let s = &v["subscriptions"][0];
    assert_eq!(s["vnets"], 1, "{s}");
    assert_eq!(
        s["last_topology_listing"]["partial_reason"].as_str(),
        Some(reason.as_str())
    );
    assert_eq!(
        s["last_complete_snapshot"]["id"].as_str(),
        r2.snapshot_id.as_deref()
    );

    // No permission to list VNets at all: recorded, and said why.
    fake.clear_faults();
    fake.fault(&vnets_path(SUB1), 0, vec![Fault::Always(403)]);
    let r3 = collect(&app, &cfg).await;
    assert!(r3.complete, "{r3:?}");
    let reason = r3.topology.partial_reason.clone().unwrap();
    assert!(
        reason.contains("virtualNetworks page 1: HTTP 403"),
        "{reason}"
    );
    let (_, v) = app.get("/v1/status").await;
    let s = &v["subscriptions"][0];
    assert_eq!(
        (
            s["vnets"].as_i64(),
            s["last_topology_listing"]["partial_reason"].as_str()
        ),
        (Some(0), Some(reason.as_str())),
        "{s}"
    );
    // What was known stays known.
    assert_eq!(app.index.topology().len(), 2);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_complete_collection_ends_the_claim_of_a_nic_that_disappeared(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    estate(&fake).await;
    let cfg = config(&fake, SECRET);
    let first = collect(&app, &cfg).await;
    assert!(first.complete);
    fake.remove_nic(&nics_path(SUB1), "nic-2-1");
    let second = collect(&app, &cfg).await;
    assert!(second.complete, "{second:?}");
    assert_eq!((second.nics, second.absent_nics_affected), (14, 1));

    let (status, name, _) = app
        .owner("10.0.2.5", &rfc3339(first.taken_at.unwrap()), "")
        .await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("nic-2-1"))
    );
    let (status, _, v) = app.owner("10.0.2.5", &now(), "").await;
    assert_eq!(status, "unknown", "{v}");
    let (status, _, _) = app.owner("10.0.2.4", &now(), "").await;
    assert_eq!(status, "probable");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn one_collector_per_subscription_and_abandoned_snapshots_are_closed(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    estate(&fake).await;
    let cfg = config(&fake, SECRET);
    // A collector that died mid-way left an unfinished snapshot.
    let meta = ipwho::store::SnapshotMeta {
        id: format!("{}{SUB1}-dead", collector::SNAPSHOT_PREFIX),
        taken_at: Utc::now() - chrono::Duration::hours(1),
        subscriptions: vec![SUB1.into()],
        complete: true,
    };
    let page = ipwho::store::SnapshotPage {
        meta: meta.clone(),
        nics: vec![],
        last_page: false,
        rejected: 0,
    };
    ipwho::store::ingest_snapshot_page(&app.pool, &page)
        .await
        .unwrap();

    let r = collect(&app, &cfg).await;
    assert!(r.complete, "{r:?}");
    let (complete, finished, reason): (bool, bool, Option<String>) =
        sqlx::query_as("SELECT complete, finished, partial_reason FROM snapshots WHERE id = $1")
            .bind(&meta.id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((complete, finished), (false, true));
    assert!(reason.unwrap().contains("stopped before finishing"));

    // While a collection holds the subscription, a second one skips it.
    fake.fault(&nics_path(SUB1), 1, vec![Fault::Once(429, Some(1))]);
    let (a, b) = tokio::join!(
        collector::collect_once(&app.pool, &app.index, &cfg),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            collector::collect_once(&app.pool, &app.index, &cfg).await
        }
    );
    let (a, b) = (a.unwrap().pop().unwrap(), b.unwrap().pop().unwrap());
    assert!(a.complete, "{a:?}");
    assert_eq!(
        b.skipped.as_deref(),
        Some("another collector is collecting this subscription")
    );
    assert_eq!((b.requests, b.snapshot_id), (0, None));
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Every log line of this test binary, at every level, from every target.
/// Installed as the global subscriber by the first test that starts a fake
/// (before any collector code runs), so no event of the collector can miss
/// it; a thread-local default could lose events whose callsites other tests
/// register at the same moment.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        logs
    })
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn the_secret_is_absent_from_every_log_line_and_error(pool: PgPool) {
    let logs = logs();
    let app = TestApp::start(pool).await;
    let fake = FakeArm::start().await;
    estate(&fake).await;
    fake.fault(&nics_path(SUB1), 1, vec![Fault::Once(429, Some(1))]);
    fake.fault(&nics_path(SUB1), 2, vec![Fault::Once(500, None)]);
    let good = config(&fake, SECRET);
    let ok = collect(&app, &good).await;
    assert!(ok.complete);

    // A wrong secret: the token endpoint refuses it and echoes it back.
    let wrong_secret = format!("{SECRET}-but-wrong");
    let bad = config(&fake, &wrong_secret);
    let r = collect(&app, &bad).await;
    assert!(!r.complete);
    let reason = r.partial_reason.clone().unwrap();
    assert!(
        reason.contains("authentication failed") && reason.contains("invalid_client"),
        "{reason}"
    );
    assert!(reason.contains("[redacted]"), "{reason}");

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("retrying Resource Manager request")
            && text.contains("collected a partial snapshot"),
        "the capture works ({} lines)",
        text.lines().count()
    );
    assert!(text.contains("invalid_client"), "the refusal is logged");
    let everything = [
        text.clone(),
        format!("{good:?}{bad:?}"),
        serde_json::to_string(&[&ok, &r]).unwrap(),
        reason.clone(),
    ];
    for (i, s) in everything.iter().enumerate() {
        for needle in [SECRET, wrong_secret.as_str(), TOKEN] {
            let hits: Vec<&str> = s.lines().filter(|l| l.contains(needle)).take(3).collect();
            assert!(hits.is_empty(), "a secret in output {i}: {hits:?}");
        }
    }
    let stored: Vec<Option<String>> = sqlx::query_scalar("SELECT partial_reason FROM snapshots")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(stored.iter().flatten().all(|s| !s.contains(SECRET)));
}

/// Managed identity (IMDS-style and App Service-style) and the Azure CLI,
/// against fakes; tokens are cached.
#[tokio::test]
async fn managed_identity_and_azure_cli_credentials() {
    #[derive(Default)]
    struct Seen {
        imds: usize,
        app_service: usize,
    }
    logs();
    let seen = Arc::new(Mutex::new(Seen::default()));
    async fn imds(
        State(seen): State<Arc<Mutex<Seen>>>,
        headers: HeaderMap,
        axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
    ) -> Response {
        seen.lock().unwrap().imds += 1;
        if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
            return (
                StatusCode::BAD_REQUEST,
                "Required metadata header not specified",
            )
                .into_response();
        }
        assert_eq!(
            q.get("resource").map(String::as_str),
            Some("https://arm.example/")
        );
        assert_eq!(q.get("client_id").map(String::as_str), Some("uami-1"));
        let on = (Utc::now().timestamp() + 86399).to_string();
        axum::Json(json!({"access_token": "imds-token", "expires_in": "86399", "expires_on": on, "resource": "https://arm.example/", "token_type": "Bearer"})).into_response()
    }
    async fn app_service(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap) -> Response {
        seen.lock().unwrap().app_service += 1;
        if headers
            .get("x-identity-header")
            .and_then(|v| v.to_str().ok())
            != Some("identity-header-secret")
        {
            return (StatusCode::UNAUTHORIZED, "bad header").into_response();
        }
        let on = (Utc::now().timestamp() + 3600).to_string();
        axum::Json(
            json!({"access_token": "app-service-token", "expires_on": on, "token_type": "Bearer"}),
        )
        .into_response()
    }
    let app = axum::Router::new()
        .route("/metadata/identity/oauth2/token", get(imds))
        .route("/msi/token", get(app_service))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let imds = Credential::new(
        CredentialSource::ManagedIdentity {
            endpoint: ManagedIdentityEndpoint::Imds {
                url: format!("http://{addr}/metadata/identity/oauth2/token"),
            },
            client_id: Some("uami-1".into()),
        },
        "https://arm.example",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(imds.token().await.unwrap().expose(), "imds-token");
    assert_eq!(imds.token().await.unwrap().expose(), "imds-token");
    assert_eq!(seen.lock().unwrap().imds, 1, "cached");

    let header = Secret::new("identity-header-secret");
    let app_service = Credential::new(
        CredentialSource::ManagedIdentity {
            endpoint: ManagedIdentityEndpoint::AppService {
                url: format!("http://{addr}/msi/token"),
                header,
            },
            client_id: None,
        },
        "https://arm.example",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(!format!("{app_service:?}").contains("identity-header-secret"));
    assert_eq!(
        app_service.token().await.unwrap().expose(),
        "app-service-token"
    );

    // The Azure CLI, as a script printing what `az account get-access-token` prints.
    let dir = std::env::temp_dir().join(format!("ipwho-az-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let az = dir.join("az");
    let expires = Utc::now().timestamp() + 3000;
    std::fs::write(
        &az,
        format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"account get-access-token\" ] || exit 2\necho '{{\"accessToken\": \"cli-token\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": {expires}, \"subscription\": \"s\", \"tenant\": \"t\", \"tokenType\": \"Bearer\"}}'\n"
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // A chain: the managed identity endpoint does not answer here, the CLI does.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let chain = Credential::new(
        CredentialSource::Chain(vec![
            CredentialSource::ManagedIdentity {
                endpoint: ManagedIdentityEndpoint::Imds {
                    url: format!("http://{closed}/metadata/identity/oauth2/token"),
                },
                client_id: None,
            },
            CredentialSource::AzureCli {
                program: az.clone(),
                tenant_id: None,
            },
        ]),
        "https://arm.example",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(chain.token().await.unwrap().expose(), "cli-token");
    assert_eq!(chain.describe(), "Azure CLI");
    // A failing CLI: its stderr is the reason.
    std::fs::write(
        &az,
        "#!/bin/sh\necho \"ERROR: Please run 'az login' to setup account.\" >&2\nexit 1\n",
    )
    .unwrap();
    let cli = Credential::new(
        CredentialSource::AzureCli {
            program: az.clone(),
            tenant_id: None,
        },
        "https://arm.example",
        Duration::from_secs(5),
    )
    .unwrap();
    let e = cli.token().await.unwrap_err();
    assert!(e.message.contains("az login"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn collect_args_parse_with_defaults() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: collector::CollectArgs,
    }
    let cli = Cli::try_parse_from([
        "x",
        "--subscription",
        "A,b",
        "--subscription",
        "/subscriptions/C",
        "--max-attempts",
        "3",
    ])
    .unwrap();
    assert_eq!(cli.args.subscriptions, ["A", "b", "/subscriptions/C"]);
    assert_eq!(cli.args.arm_endpoint, "https://management.azure.com");
    assert_eq!(cli.args.authority_host, "https://login.microsoftonline.com");
    assert_eq!(cli.args.collect_every_minutes, 15);
    let mut args = cli.args;
    args.credential = collector::CredentialChoice::AzureCli;
    let cfg = CollectorConfig::from_env(&args).unwrap();
    assert_eq!(cfg.subscriptions, ["a", "b", "c"]);
    assert_eq!(cfg.retry.max_attempts, 3);
    assert_eq!(cfg.every, Duration::from_secs(900));
}
