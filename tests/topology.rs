//! VNet listings end to end: real Postgres (a fresh database per test),
//! real HTTP, the project's own fixtures; what is stored, what is refused,
//! and the routes the index then gives.

mod common;

use std::net::IpAddr;

use common::*;
use ipwho::topology::Route;
use serde_json::{Value, json};
use sqlx::PgPool;

const T0: &str = "2025-03-01T10:00:00Z";
const T1: &str = "2025-03-01T10:15:00Z";
const T2: &str = "2025-03-01T10:30:00Z";
const T3: &str = "2025-03-01T10:45:00Z";

fn micros(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_micros()
}

fn key(sub: &str, name: &str) -> String {
    vnet_id(sub, name).to_ascii_lowercase()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

/// A listing body: metadata and VNets.
fn listing(taken_at: &str, subs: &[&str], vnets: Vec<Value>) -> Value {
    json!({"taken_at": taken_at, "subscriptions": subs, "value": vnets})
}

/// A hub peered with a spoke (connected) and with a VNet whose peering is
/// only initiated, and the spoke.
fn estate(spoke_state: &str) -> Vec<Value> {
    vec![
        vnet(
            SUB1,
            "hub",
            &["10.1.0.0/16"],
            &[
                ("spoke", spoke_state, &["10.2.0.0/16"]),
                ("pending", "Initiated", &["10.3.0.0/16"]),
            ],
        ),
        vnet(
            SUB1,
            "spoke",
            &["10.2.0.0/16"],
            &[("hub", spoke_state, &["10.1.0.0/16"])],
        ),
    ]
}

/// Every stored row of the topology tables, as text, sorted.
async fn tables(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT 'listing ' || taken_at::text || ' ' || subscriptions::text FROM topology_listings
         UNION ALL SELECT 'vnet ' || vnet_key FROM vnets
         UNION ALL SELECT 'state ' || fingerprint || ' ' || state FROM vnet_states
         UNION ALL SELECT 'run ' || vnet_key || ' ' || fingerprint || ' ' || first_at::text || ' ' || last_at::text FROM vnet_runs",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.sort();
    rows
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_listing_is_stored_once_and_the_index_routes_by_it(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    let (code, r) = app
        .post_json("/v1/topology", &listing(T0, &[SUB1], estate("Connected")))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (
            r["received"].as_u64(),
            r["stored"].as_u64(),
            r["unchanged"].as_u64(),
            r["new_states"].as_u64(),
            r["vnets"].as_u64()
        ),
        (Some(2), Some(2), Some(0), Some(2), Some(2)),
        "{r}"
    );
    assert_eq!(r["rejected"], json!([]));
    assert_eq!(r["subscriptions"], json!([SUB1]));

    let topo = app.index.topology();
    let (hub, t) = (key(SUB1, "hub"), micros(T1));
    assert_eq!(topo.route(&hub, ip("10.1.7.7"), t), Route::InVnet);
    assert_eq!(
        topo.route(&hub, ip("10.2.0.9"), t),
        Route::Peered(key(SUB1, "spoke").into())
    );
    // An initiated peering carries nothing; outside every peered space.
    assert_eq!(topo.route(&hub, ip("10.3.0.9"), t), Route::Outside);
    assert_eq!(topo.route(&hub, ip("8.8.8.8"), t), Route::Outside);
    assert_eq!(
        topo.route(&key(SUB1, "spoke"), ip("10.1.0.4"), t),
        Route::Peered(hub.clone().into())
    );
    assert_eq!(
        topo.route(&key(SUB1, "pending"), ip("10.3.0.9"), t),
        Route::Unknown
    );

    // The same listing again: nothing changes, nothing is written.
    let before = (tables(&pool).await, app.count("claim_changes").await);
    let (code, r) = app
        .post_json("/v1/topology", &listing(T0, &[SUB1], estate("Connected")))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (
            r["stored"].as_u64(),
            r["unchanged"].as_u64(),
            r["new_states"].as_u64()
        ),
        (Some(0), Some(2), Some(0))
    );
    assert_eq!(
        before,
        (tables(&pool).await, app.count("claim_changes").await)
    );

    // Later listings of the unchanged estate extend the runs: one more
    // listing row each, no state and no run added.
    for at in [T1, T2] {
        let (_, r) = app
            .post_json("/v1/topology", &listing(at, &[SUB1], estate("Connected")))
            .await;
        assert_eq!(
            (r["stored"].as_u64(), r["new_states"].as_u64()),
            (Some(2), Some(0))
        );
    }
    assert_eq!(app.count("topology_listings").await, 3);
    assert_eq!(app.count("vnet_states").await, 2);
    assert_eq!(app.count("vnet_runs").await, 2);
    let (first, last): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT first_at, last_at FROM vnet_runs WHERE vnet_key = $1")
            .bind(&hub)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (first.to_rfc3339(), last.to_rfc3339()),
        (
            "2025-03-01T10:00:00+00:00".into(),
            "2025-03-01T10:30:00+00:00".into()
        )
    );

    // The peering disconnected at T3: from then on the spoke is outside.
    let (_, r) = app
        .post_json(
            "/v1/topology",
            &listing(T3, &[SUB1], estate("Disconnected")),
        )
        .await;
    assert_eq!(
        (r["stored"].as_u64(), r["new_states"].as_u64()),
        (Some(2), Some(2))
    );
    let topo = app.index.topology();
    assert_eq!(
        topo.route(&hub, ip("10.2.0.9"), micros(T2)),
        Route::Peered(key(SUB1, "spoke").into())
    );
    assert_eq!(topo.route(&hub, ip("10.2.0.9"), micros(T3)), Route::Outside);

    // The latest state of each VNet, and when it was listed so.
    let (code, v) = app.get("/v1/topology").await;
    assert_eq!(code, 200, "{v}");
    let vnets = v["vnets"].as_array().unwrap();
    assert_eq!(vnets.len(), 2);
    let h = &vnets[0];
    assert_eq!(h["id"], vnet_id(SUB1, "hub"));
    assert_eq!(h["subscription"], SUB1);
    assert_eq!(h["address_space"], json!(["10.1.0.0/16"]));
    assert_eq!(h["subnets"][0]["prefixes"], json!(["10.1.0.0/16"]));
    assert_eq!(h["peerings"][1]["remote"], vnet_id(SUB1, "spoke"));
    assert_eq!(h["peerings"][1]["connected"], false);
    assert_eq!(
        (h["since"].as_str(), h["taken_at"].as_str()),
        (Some(T3), Some(T3))
    );
    let (_, v) = app.get(&format!("/v1/topology?subscription={SUB2}")).await;
    assert_eq!(v["vnets"], json!([]));
    let (code, v) = app.get("/v1/topology?subscriptions=x").await;
    assert_eq!(
        (code, v["parameter"].as_str()),
        (400, Some("subscriptions")),
        "{v}"
    );

    // A replica starting now loads the same topology.
    let fresh = ipwho::sync::load(&pool, Default::default()).await.unwrap();
    assert_eq!(fresh.topology().len(), 2);
    assert_eq!(
        fresh.topology().route(&hub, ip("10.2.0.9"), micros(T3)),
        Route::Outside
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn every_shape_of_listing_is_read_and_bad_posts_are_refused(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let hub = vnet(SUB1, "hub", &["10.1.0.0/16"], &[]);
    let spoke = vnet(SUB1, "spoke", &["10.2.0.0/16"], &[]);
    let q = format!("/v1/topology?taken_at={T0}&subscriptions={SUB1}");
    // An ARM list page as it came, metadata in the query.
    let (code, r) = app
        .post_json(
            &q,
            &json!({"value": [hub.clone()], "nextLink": "https://management.azure.com/next"}),
        )
        .await;
    assert_eq!((code, r["stored"].as_u64()), (200, Some(1)), "{r}");
    // One VNet as a GET returns it (the listing's second page, say).
    let (code, r) = app.post_json(&q, &spoke).await;
    assert_eq!(
        (code, r["stored"].as_u64(), r["vnets"].as_u64()),
        (200, Some(1), Some(2)),
        "{r}"
    );
    // Resource Graph rows, as objects and in the table format, gzip.
    let row = |v: &Value| {
        let mut r = v.clone();
        r["type"] = json!("microsoft.network/virtualnetworks");
        r["subscriptionId"] = json!(SUB1);
        r
    };
    let q1 = format!("/v1/topology?taken_at={T1}&subscriptions={SUB1}");
    let (code, r) = app
        .post(
            &q1,
            gzip(
                json!({"count": 2, "data": [row(&hub), row(&spoke)]})
                    .to_string()
                    .as_bytes(),
            ),
        )
        .await;
    assert_eq!(
        (code, r["stored"].as_u64(), r["new_states"].as_u64()),
        (200, Some(2), Some(0)),
        "{r}"
    );
    let table = json!({"count": 1, "data": {
        "columns": [{"name": "id", "type": "string"}, {"name": "type", "type": "string"}, {"name": "properties", "type": "object"}],
        "rows": [[hub["id"], "microsoft.network/virtualnetworks", hub["properties"]]]
    }});
    let (code, r) = app
        .post_json(&format!("/v1/topology?taken_at={T2}"), &table)
        .await;
    assert_eq!(
        (code, r["stored"].as_u64(), r["subscriptions"].clone()),
        (200, Some(1), json!([SUB1])),
        "{r}"
    );
    // `az network vnet list` output, a bare array.
    let cli = json!([{
        "addressSpace": {"addressPrefixes": ["10.2.0.0/16"]},
        "id": vnet_id(SUB1, "spoke"),
        "name": "spoke",
        "subnets": [{"addressPrefix": "10.2.0.0/16", "id": format!("{}/subnets/s0", vnet_id(SUB1, "spoke")), "name": "s0"}],
        "virtualNetworkPeerings": []
    }]);
    let (code, r) = app
        .post_json(&format!("/v1/topology?taken_at={T2}"), &cli)
        .await;
    assert_eq!(
        (code, r["stored"].as_u64(), r["new_states"].as_u64()),
        (200, Some(1), Some(0)),
        "{r}"
    );
    assert_eq!(app.count("vnet_states").await, 2);

    // Refused: with the parameter at fault.
    let future = (chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339();
    let cases: Vec<(String, Value, u16, &str, &str)> = vec![
        (
            "/v1/topology".into(),
            json!({"value": [hub.clone()]}),
            400,
            "invalid_parameter",
            "taken_at",
        ),
        (
            "/v1/topology?taken_at=noon".to_string(),
            json!([hub.clone()]),
            400,
            "invalid_time",
            "taken_at",
        ),
        (
            format!("/v1/topology?taken_at={}", future.replace('+', "%2B")),
            json!([hub.clone()]),
            400,
            "invalid_time",
            "taken_at",
        ),
        (
            format!("/v1/topology?taken_at={T0}&at={T0}"),
            json!([hub.clone()]),
            400,
            "invalid_parameter",
            "at",
        ),
        (
            format!("/v1/topology?taken_at={T0}"),
            json!({"vnets": [hub.clone()]}),
            400,
            "invalid_body",
            "value",
        ),
        (
            format!("/v1/topology?taken_at={T0}"),
            json!({"value": []}),
            400,
            "invalid_body",
            "value",
        ),
        (
            format!("/v1/topology?taken_at={T0}"),
            json!({"value": [{"id": 7}, "x"]}),
            400,
            "invalid_body",
            "value",
        ),
        (
            format!("/v1/topology?taken_at={T0}&subscriptions={SUB2}"),
            json!([hub.clone()]),
            400,
            "invalid_body",
            "value",
        ),
    ];
    for (path, body, status, code, parameter) in cases {
        let (got, v) = app.post_json(&path, &body).await;
        assert_eq!(
            (got, v["code"].as_str(), v["parameter"].as_str()),
            (status, Some(code), Some(parameter)),
            "{path}: {v}"
        );
    }
    let (code, v) = app
        .post(&format!("/v1/topology?taken_at={T0}"), "{\"value\": [")
        .await;
    assert_eq!(
        (code, v["code"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    let (_, v) = app
        .post_json(
            &format!("/v1/topology?taken_at={T0}"),
            &json!({"value": [{"id": 7}]}),
        )
        .await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("[0]: id: expected a string"),
        "{v}"
    );
    // Nothing refused was stored: the listings at T0, T1 and T2 (two posts each of T0 and T2).
    assert_eq!(app.count("topology_listings").await, 3);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn the_body_limit_holds_for_listings_as_for_snapshots(pool: PgPool) {
    let limits = ipwho::api::Limits {
        max_body_bytes: 4096,
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    let many: Vec<Value> = (0..20)
        .map(|i| vnet(SUB1, &format!("v{i}"), &[&format!("10.{i}.0.0/16")], &[]))
        .collect();
    let body = listing(T0, &[SUB1], many);
    let (code, v) = app.post_json("/v1/topology", &body).await;
    assert_eq!(
        (code, v["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    // A small gzip body that decompresses past the limit.
    let (code, v) = app
        .post("/v1/topology", gzip(body.to_string().as_bytes()))
        .await;
    assert_eq!(
        (code, v["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    let (code, _) = app
        .post_json(
            "/v1/topology",
            &listing(T0, &[SUB1], vec![vnet(SUB1, "v", &["10.0.0.0/16"], &[])]),
        )
        .await;
    assert_eq!(code, 200);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn one_bad_vnet_is_rejected_alone(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let good = vnet(SUB1, "hub", &["10.1.0.0/16"], &[]);
    let mut bad_prefix = vnet(SUB1, "b1", &["10.9.0.0/16"], &[]);
    bad_prefix["properties"]["addressSpace"]["addressPrefixes"] =
        json!(["10.9.0.0/16", "10.300.0.0/16"]);
    let mut no_id = vnet(SUB1, "b2", &["10.8.0.0/16"], &[]);
    no_id.as_object_mut().unwrap().remove("id");
    let mut nul = vnet(SUB1, "b3", &["10.7.0.0/16"], &[]);
    nul["id"] = json!(format!("{}\u{0}", vnet_id(SUB1, "b3")));
    let mut no_remote = vnet(
        SUB1,
        "b4",
        &["10.6.0.0/16"],
        &[("hub", "Connected", &["10.1.0.0/16"])],
    );
    no_remote["properties"]["virtualNetworkPeerings"][0]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("remoteVirtualNetwork");
    let other_sub = vnet(SUB2, "elsewhere", &["10.5.0.0/16"], &[]);
    let body = listing(
        T0,
        &[SUB1],
        vec![
            bad_prefix,
            good,
            no_id,
            json!(["not", "a", "vnet"]),
            nul,
            no_remote,
            other_sub,
        ],
    );
    let (code, r) = app.post_json("/v1/topology", &body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["received"].as_u64(), r["stored"].as_u64()),
        (Some(7), Some(1))
    );
    let rejected: Vec<(u64, &str)> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["index"].as_u64().unwrap(), x["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rejected,
        [
            (0, "properties.addressSpace.addressPrefixes[1]"),
            (2, "id"),
            (3, ""),
            (4, "id"),
            (
                5,
                "properties.virtualNetworkPeerings[0].properties.remoteVirtualNetwork.id"
            ),
            (6, "id"),
        ],
        "{r}"
    );
    assert!(
        r["rejected"][3]["reason"].as_str().unwrap().contains("NUL"),
        "{r}"
    );
    assert!(
        r["rejected"][5]["reason"]
            .as_str()
            .unwrap()
            .contains("outside the listing's subscriptions"),
        "{r}"
    );
    assert_eq!(app.count("vnets").await, 1);
    assert_eq!(
        app.index
            .topology()
            .route(&key(SUB1, "hub"), ip("10.1.0.1"), micros(T0)),
        Route::InVnet
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn listings_in_either_order_give_the_same_evidence_and_routes(pool: PgPool) {
    // A peering initiated at T0, connected at T2, disconnected at T3 (the
    // hub listed on two pages at T2): posted in time order and backwards.
    let app = TestApp::start(pool.clone()).await;
    let posts: Vec<(&str, Vec<Value>)> = vec![
        (T0, estate("Initiated")),
        (T1, estate("Initiated")),
        (T2, estate("Connected")[..1].to_vec()),
        (T2, estate("Connected")[1..].to_vec()),
        (T3, estate("Disconnected")),
    ];
    let (hub, spoke_ip) = (key(SUB1, "hub"), ip("10.2.3.4"));
    let mut seen = Vec::new();
    // In time order, backwards, and the outer listings first (the ones at
    // T0, T3 and T1 make one run of the hub's state, which T2's splits at
    // the listings nearest it).
    for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [0, 4, 1, 3, 2]] {
        app.empty().await;
        for (at, vnets) in order.iter().map(|&i| &posts[i]) {
            let (code, r) = app
                .post_json("/v1/topology", &listing(at, &[SUB1], vnets.clone()))
                .await;
            assert_eq!(code, 200, "{r}");
        }
        let topo = app.index.topology();
        let routes: Vec<Route> = [T0, T1, T2, T3, "2025-03-01T11:00:00Z"]
            .iter()
            .map(|t| topo.route(&hub, spoke_ip, micros(t)))
            .collect();
        let peered = Route::Peered(key(SUB1, "spoke").into());
        assert_eq!(
            routes,
            [
                Route::Outside,
                Route::Outside,
                peered.clone(),
                Route::Outside,
                Route::Outside
            ],
            "order {order:?}"
        );
        let (_, latest) = app.get("/v1/topology").await;
        seen.push((tables(&pool).await, latest, routes));
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2]);
    // Two states of each VNet (a peering initiated or disconnected
    // carries nothing either way: the same state), in three runs; four
    // listings.
    assert_eq!(app.count("vnet_states").await, 4);
    assert_eq!(app.count("vnet_runs").await, 6);
    assert_eq!(app.count("topology_listings").await, 4);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn status_counts_each_subscription_s_vnets(pool: PgPool) {
    let app = TestApp::start(pool).await;
    app.post_json("/v1/topology", &listing(T0, &[SUB1], estate("Connected")))
        .await;
    app.post_json(
        "/v1/topology",
        &listing(
            T1,
            &[SUB1, SUB2],
            vec![
                estate("Connected").remove(0),
                vnet(SUB2, "far", &["10.9.0.0/16"], &[]),
            ],
        ),
    )
    .await;
    let (code, v) = app.get("/v1/status").await;
    assert_eq!(code, 200, "{v}");
    let subs = v["subscriptions"].as_array().unwrap();
    let of = |sub: &str| {
        subs.iter()
            .find(|s| s["subscription"] == sub)
            .unwrap()
            .clone()
    };
    // The latest listing of SUB1 (T1) showed only the hub.
    let s1 = of(SUB1);
    assert_eq!(s1["vnets"], 1, "{s1}");
    assert_eq!(s1["last_topology_listing"]["taken_at"], T1);
    assert!(s1["last_topology_listing"]["partial_reason"].is_null());
    assert!(s1["last_topology_listing"]["recorded_at"].is_string());
    let s2 = of(SUB2);
    assert_eq!(
        (s2["vnets"].as_i64(), s2["nics"].as_i64()),
        (Some(1), Some(0)),
        "{s2}"
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn replicas_pick_up_topology_through_the_change_feed(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    // Another process stores a listing.
    let other = ipwho::index::Index::new();
    let body = listing(T0, &[SUB1], estate("Connected")).to_string();
    ipwho::ingest::ingest_topology(&pool, &other, body.as_bytes(), Default::default())
        .await
        .unwrap();
    assert_eq!(other.topology().len(), 2, "the writer reloads its own");
    assert!(
        app.index.topology().is_empty(),
        "not seen before catching up"
    );
    assert_eq!(
        ipwho::sync::catch_up(&pool, &app.index).await.unwrap(),
        0,
        "no NIC"
    );
    let hub = key(SUB1, "hub");
    assert_eq!(
        app.index.topology().route(&hub, ip("10.2.0.1"), micros(T0)),
        Route::Peered(key(SUB1, "spoke").into())
    );
    // A change elsewhere, then a repeat (no feed entry): both followed.
    let body = listing(T1, &[SUB1], estate("Disconnected")).to_string();
    ipwho::ingest::ingest_topology(&pool, &other, body.as_bytes(), Default::default())
        .await
        .unwrap();
    let entries = app.count("claim_changes").await;
    ipwho::ingest::ingest_topology(&pool, &other, body.as_bytes(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        app.count("claim_changes").await,
        entries,
        "a repeat writes no entry"
    );
    ipwho::sync::catch_up(&pool, &app.index).await.unwrap();
    assert_eq!(
        app.index.topology().route(&hub, ip("10.2.0.1"), micros(T1)),
        Route::Outside
    );
    // This replica's own post moves its position past its entry.
    let (code, _) = app
        .post_json("/v1/topology", &listing(T2, &[SUB1], estate("Connected")))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        app.index.topology().route(&hub, ip("10.2.0.1"), micros(T2)),
        Route::Peered(key(SUB1, "spoke").into())
    );
    assert_eq!(ipwho::sync::catch_up(&pool, &app.index).await.unwrap(), 0);
}
