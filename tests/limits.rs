//! Limits and bad input, tried as a new user would: NUL characters in ids,
//! query parameters an endpoint does not take, unreadable Activity Log
//! batches, slow and stalled connections, a database that is down, and
//! enrichment's limits on bytes, time and concurrent streams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ipwho::api::Limits;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T0: &str = "2025-03-01T10:00:00Z";
const T1: &str = "2025-03-01T10:15:00Z";

fn rejected(r: &Value) -> Vec<(u64, String)> {
    r["rejected"]
        .as_array()
        .unwrap_or_else(|| panic!("no rejected list: {r}"))
        .iter()
        .map(|x| {
            (
                x["index"].as_u64().unwrap(),
                x["field"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nul_in_a_nic_record_rejects_that_record_and_keeps_the_rest(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let good = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let mut bad_id = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], None);
    bad_id["id"] = json!(format!("{}\u{0}x", bad_id["id"].as_str().unwrap()));
    let mut bad_name = nic(SUB1, "vnet1", "nic-c", &["10.0.0.6"], None);
    bad_name["name"] = json!("nic\u{0}c");
    let mut bad_vm = nic(SUB1, "vnet1", "nic-d", &["10.0.0.7"], Some("vm-d"));
    bad_vm["properties"]["virtualMachine"]["id"] = json!(format!(
        "/subscriptions/{SUB1}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v\u{0}"
    ));
    let mut bad_subnet = nic(SUB1, "vnet1", "nic-e", &["10.0.0.8"], None);
    bad_subnet["properties"]["ipConfigurations"][0]["properties"]["subnet"]["id"] = json!(format!(
        "/subscriptions/{SUB1}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/v\u{0}/subnets/default"
    ));
    let mut bad_config = nic(SUB1, "vnet1", "nic-f", &["10.0.0.9"], None);
    bad_config["properties"]["ipConfigurations"][0]["name"] = json!("ip\u{0}config");
    let (code, r) = app
        .post_json(
            "/v1/snapshots",
            &snapshot(
                T0,
                &[SUB1],
                false,
                vec![bad_id, good, bad_name, bad_vm, bad_subnet, bad_config],
            ),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accepted"], 1, "{r}");
    assert_eq!(
        rejected(&r),
        vec![
            (0, "id".to_string()),
            (2, "name".to_string()),
            (3, "properties.virtualMachine.id".to_string()),
            (
                4,
                "properties.ipConfigurations[0].properties.subnet.id".to_string()
            ),
            (5, "properties.ipConfigurations[0].name".to_string()),
        ],
        "{r}"
    );
    for x in r["rejected"].as_array().unwrap() {
        assert!(
            x["reason"].as_str().unwrap().contains("NUL"),
            "the reason says why: {x}"
        );
    }
    let (status, nic, _) = app.owner("10.0.0.4", T0, "").await;
    assert_eq!(
        (status.as_str(), nic.as_deref()),
        ("confirmed", Some("nic-a"))
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nul_in_a_listing_s_metadata_is_a_400_naming_it(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    let mut body = snapshot(T0, &[SUB1], true, vec![a.clone()]);
    body["snapshot_id"] = json!("s\u{0}1");
    let (code, v) = app.post_json("/v1/snapshots", &body).await;
    assert_eq!(
        (code, v["code"].as_str(), v["parameter"].as_str()),
        (400, Some("invalid_parameter"), Some("snapshot_id")),
        "{v}"
    );
    let page = json!({"value": [a]});
    let (code, v) = app
        .post_json(
            &format!("/v1/snapshots?snapshot_id=s%001&taken_at={T0}&subscriptions={SUB1}"),
            &page,
        )
        .await;
    assert_eq!(
        (code, v["parameter"].as_str()),
        (400, Some("snapshot_id")),
        "{v}"
    );
    let (code, v) = app.post("/v1/snapshots/s%001/done", "").await;
    assert_eq!((code, v["parameter"].as_str()), (400, Some("id")), "{v}");
    for path in ["/v1/snapshots", "/v1/topology"] {
        let (code, v) = app
            .post_json(
                &format!("{path}?taken_at={T0}&subscriptions={SUB1},a%00b"),
                &json!({"value": []}),
            )
            .await;
        assert_eq!(
            (code, v["parameter"].as_str()),
            (400, Some("subscriptions")),
            "{path}: {v}"
        );
    }
    assert_eq!(app.count("snapshots").await, 0);
    assert_eq!(app.count("topology_listings").await, 0);
    // Reads with one are answered, not failed.
    for path in [
        "/v1/topology?subscription=a%00b",
        "/v1/ips/10.0.0.4/owner?subscription=a%00b",
        "/v1/ips/10.0.0.4/history?vnet=a%00b",
        "/v1/nics/a%00b/history",
        "/v1/vms/a%00b/ips",
    ] {
        let (code, v) = app.get(path).await;
        assert!(code < 500, "{path}: {code} {v}");
    }
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nul_in_an_activity_record_rejects_that_record_and_keeps_the_rest(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], Some("vm-b"));
    let good = activity("WRITE", T0, &a, "Success", true);
    let mut bad_resource = activity("DELETE", T0, &b, "Success", false);
    bad_resource["resourceId"] = json!(format!("{}\u{0}", b["id"].as_str().unwrap()));
    let mut bad_body_nic = b.clone();
    bad_body_nic["name"] = json!("nic\u{0}b");
    let bad_body = activity("WRITE", T1, &bad_body_nic, "Success", false);
    let mut bad_correlation = activity("DELETE", T1, &b, "Success", false);
    bad_correlation["correlationId"] = json!("corr\u{0}");
    let (code, r) = app
        .post_json(
            "/v1/activity",
            &json!({"records": [bad_resource, good, bad_body, bad_correlation]}),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accepted"], 1, "{r}");
    let fields = rejected(&r);
    assert_eq!(
        fields.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 2, 3],
        "{r}"
    );
    assert_eq!(fields[0].1, "resourceId", "{r}");
    assert!(fields[1].1.starts_with("properties.responseBody"), "{r}");
    assert_eq!(fields[2].1, "correlationId", "{r}");
    let (_, nic, _) = app.owner("10.0.0.4", T1, "").await;
    assert_eq!(nic.as_deref(), Some("nic-a"));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nul_in_a_vnet_s_subnet_or_peering_rejects_that_vnet_alone(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let good = vnet(SUB1, "hub", &["10.1.0.0/16"], &[]);
    let mut bad_subnet = vnet(SUB1, "b1", &["10.2.0.0/16"], &[]);
    bad_subnet["properties"]["subnets"][0]["id"] =
        json!(format!("{}/subnets/s\u{0}", vnet_id(SUB1, "b1")));
    let mut bad_subnet_name = vnet(SUB1, "b2", &["10.3.0.0/16"], &[]);
    bad_subnet_name["properties"]["subnets"][0]
        .as_object_mut()
        .unwrap()
        .remove("id");
    bad_subnet_name["properties"]["subnets"][0]["name"] = json!("s\u{0}");
    let mut bad_peering = vnet(
        SUB1,
        "b3",
        &["10.4.0.0/16"],
        &[("hub", "Connected", &["10.1.0.0/16"])],
    );
    bad_peering["properties"]["virtualNetworkPeerings"][0]["properties"]["remoteVirtualNetwork"]
        ["id"] = json!(format!("{}\u{0}", vnet_id(SUB1, "hub")));
    let body = json!({"taken_at": T0, "subscriptions": [SUB1],
        "value": [bad_subnet, good, bad_subnet_name, bad_peering]});
    let (code, r) = app.post_json("/v1/topology", &body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["stored"], 1, "{r}");
    let fields = rejected(&r);
    assert_eq!(
        fields.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 2, 3],
        "{r}"
    );
    assert_eq!(fields[0].1, "properties.subnets[0].id", "{r}");
    assert_eq!(fields[1].1, "properties.subnets[0].name", "{r}");
    assert!(
        fields[2]
            .1
            .starts_with("properties.virtualNetworkPeerings[0]"),
        "{r}"
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn every_endpoint_refuses_query_parameters_it_does_not_take(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    let (code, v) = app
        .post_json(
            "/v1/snapshots",
            &json!({"snapshot_id": "s1", "taken_at": T0, "subscriptions": [SUB1],
                    "complete": true, "last_page": false, "value": [a.clone()]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let lookups = json!({"lookups": [{"ip": "10.0.0.4", "at": T0}]}).to_string();
    let events = json!({"records": [activity("WRITE", T1, &a, "Success", false)]}).to_string();
    for (method, path, body, parameter) in [
        (
            "POST",
            format!("/v1/lookups?at={T0}&subscription={SUB1}"),
            lookups.clone(),
            "at",
        ),
        (
            "POST",
            "/v1/activity?complete=true".into(),
            events.clone(),
            "complete",
        ),
        (
            "POST",
            "/v1/snapshots/s1/done?complete=false".into(),
            String::new(),
            "complete",
        ),
        (
            "GET",
            "/v1/status?subscription=x".into(),
            String::new(),
            "subscription",
        ),
        ("GET", "/readyz?verbose=1".into(), String::new(), "verbose"),
        ("GET", "/healthz?verbose=1".into(), String::new(), "verbose"),
        ("GET", "/openapi.json?v=2".into(), String::new(), "v"),
        ("GET", "/docs/?lang=en".into(), String::new(), "lang"),
    ] {
        let r = match method {
            "GET" => app.http.get(app.url(&path)),
            _ => app
                .http
                .post(app.url(&path))
                .header("content-type", "application/json")
                .body(body),
        }
        .send()
        .await
        .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["code"].as_str(), v["parameter"].as_str()),
            (Some("invalid_parameter"), Some(parameter)),
            "{path}: {v}"
        );
        assert!(
            v["detail"].as_str().unwrap().contains(parameter),
            "{path}: {v}"
        );
    }
    // Refused, the snapshot is still unfinished and the events unstored;
    // without the parameters, the same calls are answered.
    assert_eq!(app.count("activity_events").await, 0);
    let (code, v) = app.post("/v1/snapshots/s1/done", "").await;
    assert_eq!((code, v["finished"].as_bool()), (200, Some(true)), "{v}");
    let (code, v) = app.post("/v1/lookups", lookups).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["answers"][0]["status"], "confirmed", "{v}");
    for path in [
        "/v1/status",
        "/readyz",
        "/healthz",
        "/openapi.json",
        "/docs/",
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn an_activity_post_with_no_readable_record_is_a_400(pool: PgPool) {
    let app = TestApp::start(pool).await;
    for body in [
        "this is not JSON\nnor is this".to_string(),
        json!({"records": [1, "two", [3]]}).to_string(),
        json!([null, true, 3.5]).to_string(),
        "   ".to_string(),
    ] {
        let (code, v) = app.post("/v1/activity", body.clone()).await;
        assert_eq!(
            (code, v["code"].as_str()),
            (400, Some("invalid_body")),
            "{body}: {v}"
        );
        assert!(v["parameter"].is_string(), "{v}");
        assert!(!v["detail"].as_str().unwrap().is_empty(), "{v}");
    }
    // An empty list is readable (nothing happened), as is a batch with one
    // good record among bad ones, with records whose fields are at fault
    // (each rejected by field), or with only records of other resources.
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    for body in [
        json!({"records": []}),
        json!({"records": [1, activity("WRITE", T0, &a, "Success", true)]}),
        json!([{"time": "yesterday", "operationName": "MICROSOFT.NETWORK/NETWORKINTERFACES/DELETE",
                "resultType": "Success", "resourceId": "x"}]),
        json!({"records": [{"time": T0, "resourceId": format!("/subscriptions/{SUB1}/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v"),
                            "operationName": "MICROSOFT.COMPUTE/VIRTUALMACHINES/WRITE", "resultType": "Success"}]}),
    ] {
        let (code, v) = app.post_json("/v1/activity", &body).await;
        assert_eq!(code, 200, "{body}: {v}");
    }
}

/// Sends `head` (and `body`) on a new connection.
async fn connect(app: &TestApp, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Everything the server sends until it closes the connection, or `None`
/// when it has not closed it within `within`.
async fn read_to_close(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_slow_header_connection_is_closed(pool: PgPool) {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    let started = Instant::now();
    let mut s = connect(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
    )
    .await;
    let closed = read_to_close(&mut s, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a slow-header connection stays open");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A whole request on its own connection is still answered.
    let (code, _) = app.get("/healthz").await;
    assert_eq!(code, 200);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn the_request_timeout_answers_a_timeout_problem(pool: PgPool) {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    // A body that never arrives whole: the handler waits for it.
    let mut s = connect(
        &app,
        b"POST /v1/activity HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{\"records\": [",
    )
    .await;
    let got = read_to_close(&mut s, Duration::from_secs(5))
        .await
        .expect("answered within the timeout");
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("application/problem+json"), "{got}");
    assert!(got.contains("\"code\":\"timeout\""), "{got}");
    assert!(got.contains("IPWHO_REQUEST_TIMEOUT_SECS"), "{got}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn readiness_answers_within_a_second_while_postgres_is_down(pool: PgPool) {
    // "Postgres" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let opts: sqlx::postgres::PgConnectOptions =
        format!("postgres://postgres@127.0.0.1:{port}/ipwho")
            .parse()
            .unwrap();
    let down = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(10))
        .connect_lazy_with(opts);
    let index = std::sync::Arc::new(ipwho::sync::load(&pool, Default::default()).await.unwrap());
    let state = ipwho::api::AppState {
        pool: down,
        index,
        limits: Limits::default(),
        access: std::sync::Arc::new(ipwho::access::Access::open(
            ipwho::access::AllowedHosts::new(None, &[]),
        )),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ipwho::api::serve(listener, state, std::future::pending()));
    for _ in 0..2 {
        let started = Instant::now();
        let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        let took = started.elapsed();
        assert_eq!(r.status().as_u16(), 503);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["database"], false, "{v}");
        assert!(took < Duration::from_secs(1), "readiness took {took:?}");
    }
}

fn flat_lines(n: usize) -> String {
    (0..n)
        .map(|i| {
            json!({"time": "2025-03-01T10:30:00Z", "src_ip": "10.0.0.4",
                   "dst_ip": format!("10.0.{}.{}", (i / 250) % 250, i % 250 + 1)})
            .to_string()
                + "\n"
        })
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn summary(body: &str) -> Value {
    let last = body.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last).unwrap_or(Value::Null);
    v["ipwho.summary"].clone()
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn enrichment_stops_at_its_byte_limit(pool: PgPool) {
    let limits = Limits {
        enrich_max_bytes: 256 << 10,
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    let body = flat_lines(20_000);
    assert!(body.len() > 1 << 20);
    // Said too large by its length: refused before any work.
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "body_too_large", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("IPWHO_ENRICH_MAX_BYTES"),
        "{v}"
    );
    // A gzip body small enough, that expands past the limit: stopped there,
    // said in the output.
    let gz = gzip(body.as_bytes());
    assert!(gz.len() < 256 << 10);
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(gz)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    let s = summary(&text);
    assert_eq!(s["complete"], false, "{s}");
    let tuples = s["tuples_in"].as_u64().unwrap();
    assert!(tuples > 100 && tuples < 20_000, "{s}");
    let reason = s["errors"].as_array().unwrap().last().unwrap()["reason"].to_string();
    assert!(reason.contains("limit"), "{reason}");
    // Within the limit, the same body is enriched whole.
    let small = flat_lines(100);
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(gzip(small.as_bytes()))
        .send()
        .await
        .unwrap();
    let s = summary(&r.text().await.unwrap());
    assert_eq!(
        (s["complete"].as_bool(), s["tuples_out"].as_u64()),
        (Some(true), Some(100)),
        "{s}"
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn enrichment_stops_at_its_time_limit(pool: PgPool) {
    let limits = Limits {
        enrich_timeout: Duration::from_millis(700),
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    // An upload that stalls after its first lines.
    let lines = flat_lines(10);
    let head = format!(
        "POST /v1/enrich HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\n{lines}"
    );
    let started = Instant::now();
    let mut s = connect(&app, head.as_bytes()).await;
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("the stream ends at its time limit");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(
        got.contains("\"tuples_out\":10"),
        "the lines before the stall are enriched: {got}"
    );
    assert!(got.contains("\"complete\":false"), "{got}");
    assert!(got.contains("IPWHO_ENRICH_TIMEOUT_SECS"), "{got}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn lookups_answer_while_every_enrichment_stream_is_held(pool: PgPool) {
    let limits = Limits {
        enrich_streams: 2,
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    app.post_json("/v1/snapshots", &snapshot(T0, &[SUB1], true, vec![a]))
        .await;
    // Two uploads in progress hold both streams (their answers have begun).
    let head = format!(
        "POST /v1/enrich HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{}",
        flat_lines(5)
    );
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&app, head.as_bytes()).await;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    // A third is refused at once, with when to retry.
    let r = app
        .http
        .post(app.url("/v1/enrich"))
        .header("content-type", "application/json")
        .body(flat_lines(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().get("retry-after").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("IPWHO_ENRICH_STREAMS"),
        "{v}"
    );
    // Lookups are answered meanwhile, at once.
    for _ in 0..20 {
        let started = Instant::now();
        let (status, nic, _) = app.owner("10.0.0.4", T0, "").await;
        assert_eq!(
            (status.as_str(), nic.as_deref()),
            ("confirmed", Some("nic-a"))
        );
        assert!(started.elapsed() < Duration::from_millis(500));
    }
    // A stream given up frees its place.
    drop(held.pop());
    let mut answered = None;
    for _ in 0..50 {
        let r = app
            .http
            .post(app.url("/v1/enrich"))
            .header("content-type", "application/json")
            .body(flat_lines(5))
            .send()
            .await
            .unwrap();
        if r.status().as_u16() == 200 {
            answered = Some(summary(&r.text().await.unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = answered.expect("a freed stream is taken again");
    assert_eq!(s["tuples_out"], 5, "{s}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn read_only_commands_never_create_or_migrate_a_database(pool: PgPool) {
    use std::process::Command;
    let o = pool.connect_options();
    let name = o.get_database().unwrap().to_string();
    let url_of = |db: &str| {
        format!(
            "postgres://{}@{}:{}/{db}",
            o.get_username(),
            o.get_host(),
            o.get_port()
        )
    };
    let run = |db: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ipwho"))
            .args(args)
            .env("DATABASE_URL", url_of(db))
            .output()
            .expect("run ipwho")
    };
    let exists = |db: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
            )
            .bind(db)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let flows = std::env::temp_dir().join(format!("{name}-flows.jsonl"));
    std::fs::write(&flows, flat_lines(3)).unwrap();
    let flows = flows.to_str().unwrap().to_string();
    let commands: [&[&str]; 4] = [
        &["lookup", "10.0.0.4"],
        &["history", "10.0.0.4"],
        &["status"],
        &["enrich", &flows],
    ];

    // A mistyped name: each fails, naming the database; none is created.
    // Postgres cuts names at 63 bytes: these must differ within them.
    let short: String = name.chars().take(40).collect();
    let typo = format!("{short}_typo");
    let bare = format!("{short}_bare");
    // Left by a run that failed.
    for db in [&typo, &bare] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db}\""
        )))
        .execute(&pool)
        .await
        .unwrap();
    }
    for args in commands {
        let out = run(&typo, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded: {err}");
        assert!(
            err.contains(&format!("database \"{typo}\" does not exist")),
            "{args:?}: {err}"
        );
        assert!(!exists(typo.clone()).await, "{args:?} created {typo}");
    }

    // A database that is not ipwho's: each fails, and nothing is migrated.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{bare}\"")))
        .execute(&pool)
        .await
        .unwrap();
    for args in commands {
        let out = run(&bare, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains(&format!("database \"{bare}\"")),
            "{args:?}: {err}"
        );
        assert!(err.contains("ipwho migrate"), "{args:?}: {err}");
    }
    let bare_pool = PgPool::connect(&url_of(&bare)).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&bare_pool)
            .await
            .unwrap();
    bare_pool.close().await;
    assert_eq!(tables, 0, "a read-only command migrated {bare}");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE \"{bare}\"")))
        .execute(&pool)
        .await
        .unwrap();

    // The right name: answered.
    for args in commands {
        let out = run(&name, args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(&flows);
}
