//! The service end to end: real Postgres (a fresh database per test), real
//! HTTP, the project's own fixtures.

mod common;

use common::*;
use serde_json::{Value, json};
use sqlx::PgPool;

const T0: &str = "2025-03-01T10:00:00Z";
const T1: &str = "2025-03-01T10:15:00Z";
const T2: &str = "2025-03-01T10:30:00Z";
const T3: &str = "2025-03-01T10:45:00Z";

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn snapshots_answer_lookups_and_reposting_changes_nothing(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5", "fd00::5"], None);
    let body = snapshot(T0, &[SUB1], true, vec![a.clone(), b.clone()]);
    let (code, r) = app.post_json("/v1/snapshots", &body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accepted"], 2);
    assert_eq!(r["finished"], true);
    assert_eq!(r["complete"], true);
    assert_eq!(r["claims_inserted"], 3);

    let (status, nic_name, v) = app.owner("10.0.0.4", T0, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-a"))
    );
    // The same IPv4 address as an IPv4-mapped IPv6 one is the same question.
    let (_, _, mut mapped) = app.owner("::ffff:10.0.0.4", T0, "").await;
    mapped["now"] = v["now"].clone();
    assert_eq!(mapped, v);
    assert_eq!(v["vm"]["vm"]["name"], "vm-a");
    assert_eq!(v["owner"]["nic"]["subscription"], SUB1);
    assert_eq!(v["owner"]["evidence"][0]["kind"], "snapshot");
    // After the last sighting, nothing has ended the claim: probable.
    let (status, nic_name, v) = app.owner("10.0.0.4", T2, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("probable", Some("nic-a"))
    );
    // Until now, nothing can say: the latest complete snapshot is long past
    // its freshness bound.
    assert_eq!(v["held_continuously"], "unknown");
    assert_eq!(v["now"]["status"], "possible");
    assert!(
        v["now"]["stale"]["reason"]
            .as_str()
            .unwrap()
            .contains("freshness bound")
    );
    let (status, nic_name, _) = app.owner("fd00::5", T0, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-b"))
    );
    let (status, _, v) = app.owner("10.0.0.9", T0, "").await;
    assert_eq!(status, "unknown");
    assert!(v["owner"].is_null());

    let before = (
        app.count("observations").await,
        app.count("claims").await,
        app.count("nic_states").await,
    );
    let table = claims_table(&app.pool).await;
    let (code, r) = app.post_json("/v1/snapshots", &body).await;
    assert_eq!(code, 200);
    assert_eq!(r["changed"], 0);
    assert_eq!(
        (r["claims_inserted"].as_u64(), r["claims_updated"].as_u64()),
        (Some(0), Some(0))
    );
    let after = (
        app.count("observations").await,
        app.count("claims").await,
        app.count("nic_states").await,
    );
    assert_eq!(before, after);
    assert_eq!(table, claims_table(&app.pool).await);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_complete_snapshot_ends_the_claims_of_missing_nics(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let keep = nic(SUB1, "vnet1", "nic-keep", &["10.0.0.8"], None);
    app.post_json(
        "/v1/snapshots",
        &snapshot(T0, &[SUB1], true, vec![a.clone(), keep.clone()]),
    )
    .await;
    app.post_json(
        "/v1/snapshots",
        &snapshot(T1, &[SUB1], true, vec![a.clone(), keep.clone()]),
    )
    .await;
    // nic-a is gone at T2; a partial snapshot without it says nothing.
    let (_, r) = app
        .post_json(
            "/v1/snapshots",
            &snapshot(T2, &[SUB1], false, vec![keep.clone()]),
        )
        .await;
    assert_eq!(r["complete"], false);
    // 20 minutes after the last complete snapshot (15 minutes apart, a
    // freshness bound of 22.5): nothing has ended the claim.
    let (status, _, _) = app.owner("10.0.0.4", "2025-03-01T10:35:00Z", "").await;
    assert_eq!(status, "probable", "a partial snapshot ends no claim");
    // Past the bound, the same claim is only possible: stale.
    let (status, name, v) = app.owner("10.0.0.4", T3, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("possible", Some("nic-a"))
    );
    assert_eq!(v["stale"]["bound_seconds"], 1350.0, "{v}");
    let (_, r) = app
        .post_json(
            "/v1/snapshots",
            &snapshot(T3, &[SUB1], true, vec![keep.clone()]),
        )
        .await;
    assert_eq!(r["absent_nics_affected"], 1, "{r}");
    let (status, _, v) = app.owner("10.0.0.4", T1, "").await;
    assert_eq!(status, "confirmed");
    // The certain window ends just after the last sighting: said "through" it.
    assert_eq!(
        v["explanation"],
        "nic-a held 10.0.0.4: proven from 2025-03-01T10:00:00Z through 2025-03-01T10:15:00Z. Attached to VM vm-a (proven)."
    );
    // Between the last sighting and the snapshot without it: possible, with the gap's bounds.
    let (status, nic_name, v) = app.owner("10.0.0.4", T2, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("possible", Some("nic-a"))
    );
    assert_eq!(v["owner"]["possible"]["end"], "2025-03-01T10:45:00Z");
    assert_eq!(
        v["explanation"],
        "nic-a may have held 10.0.0.4: it is only known to have held it from 2025-03-01T10:00:00Z \
         through 2025-03-01T10:15:00Z, and may have from the beginning of the evidence until 2025-03-01T10:45:00Z. \
         Possibly attached to VM vm-a."
    );
    assert_eq!(v["held_continuously"], "unknown");
    let (status, _, v) = app.owner("10.0.0.4", T3, "").await;
    assert_eq!(
        status, "unknown",
        "settled: after the complete snapshot that ended every claim"
    );
    assert_eq!(v["now"]["status"], "unknown");
    // The storage holds two runs of observations at most, not one row per sighting.
    assert_eq!(app.count("observations").await, 2);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_multi_page_snapshot_counts_as_complete_only_when_done(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], None);
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.6"], None);
    app.post_json(
        "/v1/snapshots",
        &snapshot(T0, &[SUB1], true, vec![a.clone(), b.clone(), c.clone()]),
    )
    .await;
    // Two pages at T1 without nic-c: nothing is ended until the snapshot is done.
    let page = |nics: Vec<Value>| {
        let mut p = snapshot(T1, &[SUB1], true, nics);
        p["snapshot_id"] = json!("listing-t1");
        p["last_page"] = json!(false);
        p
    };
    let (_, r) = app.post_json("/v1/snapshots", &page(vec![a.clone()])).await;
    assert_eq!(r["finished"], false);
    app.post_json("/v1/snapshots", &page(vec![b.clone()])).await;
    // A page posted again is stored once; a NIC on two pages counts once.
    app.post_json("/v1/snapshots", &page(vec![b.clone()])).await;
    assert_eq!(app.count("snapshot_pages").await, 2);
    app.post_json("/v1/snapshots", &page(vec![a.clone(), b.clone()]))
        .await;
    assert_eq!(app.count("snapshot_pages").await, 3);
    assert_eq!(app.count("snapshot_members").await, 2);
    let (status, _, _) = app.owner("10.0.0.6", T2, "").await;
    assert_eq!(status, "probable");
    let (code, r) = app.post("/v1/snapshots/listing-t1/done", "").await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["finished"], true);
    assert_eq!(r["absent_nics_affected"], 1);
    let listed: i32 = sqlx::query_scalar("SELECT nics FROM snapshots WHERE id = 'listing-t1'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(listed, 2);
    assert_eq!(app.count("snapshot_pages").await, 0);
    let (status, _, _) = app.owner("10.0.0.6", T2, "").await;
    assert_eq!(status, "unknown");
    let (status, _, _) = app.owner("10.0.0.4", T1, "").await;
    assert_eq!(status, "confirmed");
    // Done again: idempotent. Unknown id: 404.
    let (code, _) = app.post("/v1/snapshots/listing-t1/done", "").await;
    assert_eq!(code, 200);
    let (code, v) = app.post("/v1/snapshots/nope/done", "").await;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_found")));
    // Reusing an id with other metadata is a conflict.
    let mut clash = page(vec![a.clone()]);
    clash["taken_at"] = json!(T3);
    let (code, v) = app.post_json("/v1/snapshots", &clash).await;
    assert_eq!((code, v["code"].as_str()), (409, Some("conflict")));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn activity_events_fix_the_ends_and_ignore_the_rest(pool: PgPool) {
    let app = TestApp::start(pool).await;
    // nic-a is not attached to a VM: its delete fixes the end exactly.
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.4"], Some("vm-b"));
    let records = json!({"records": [
        activity("WRITE", "2025-03-01T10:00:00.1234567Z", &a, "Start", true),
        activity("WRITE", "2025-03-01T10:00:05.1234567Z", &a, "Success", true),
        activity("DELETE", "2025-03-01T11:00:00.0000000Z", &a, "Success", false),
        activity("WRITE", "2025-03-01T11:00:30.0000000Z", &b, "Success", true),
        {"time": "2025-03-01T10:00:00Z", "operationName": "MICROSOFT.STORAGE/STORAGEACCOUNTS/WRITE", "resultType": "Success",
         "resourceId": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/R/PROVIDERS/MICROSOFT.STORAGE/STORAGEACCOUNTS/S"}
    ]});
    let (code, r) = app.post_json("/v1/activity", &records).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["records"].as_u64(), r["accepted"].as_u64()),
        (Some(5), Some(3))
    );
    let ignored: Vec<(String, u64)> = r["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["reason"].as_str().unwrap().to_string(),
                x["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ignored,
        vec![("not_succeeded".into(), 1), ("other_operation".into(), 1)]
    );

    let (status, nic_name, v) = app.owner("10.0.0.4", "2025-03-01T10:59:59Z", "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-a"))
    );
    assert_eq!(v["owner"]["certain"]["end"], "2025-03-01T11:00:00Z");
    assert_eq!(v["owner"]["end_exact"], true);
    // An event fixed both ends: "until" the delete, which it did not outlive.
    assert_eq!(
        v["explanation"],
        "nic-a held 10.0.0.4: proven from 2025-03-01T10:00:05.123456Z until 2025-03-01T11:00:00Z. Possibly attached to no VM."
    );
    // Seen on no VM at its create only: a VM may have come and gone
    // between (a VM operation is no NIC event).
    assert_eq!(v["vm"]["status"], "possible");
    assert!(v["vm"]["vm"].is_null());
    assert_eq!(v["held_continuously"], "no");
    assert_eq!(v["now"]["owner"]["nic"]["name"], "nic-b");
    // The deleted NIC is never the answer after its delete.
    let (status, _, _) = app.owner("10.0.0.4", "2025-03-01T11:00:10Z", "").await;
    assert_eq!(status, "unknown");
    let (status, nic_name, _) = app.owner("10.0.0.4", "2025-03-01T11:00:30Z", "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-b"))
    );

    // The same events again, as JSON Lines with a garbage line: duplicates, one rejection.
    let lines: Vec<String> = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    let body = format!("{}\n{{not json\n{}\n", lines[1], lines[2]);
    let (code, r) = app.post("/v1/activity", body).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["duplicates"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(r["rejected"][0]["index"], 1);
    assert_eq!(app.count("activity_events").await, 3);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn arrival_order_never_changes_the_claims(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let a2 = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a2"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], None);
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.4"], None);
    let posts: Vec<(&str, Value)> = vec![
        (
            "/v1/snapshots",
            snapshot(
                "2025-03-01T10:00:00Z",
                &[SUB1],
                true,
                vec![a.clone(), b.clone()],
            ),
        ),
        (
            "/v1/snapshots",
            snapshot(
                "2025-03-01T10:15:00Z",
                &[SUB1],
                true,
                vec![a2.clone(), b.clone()],
            ),
        ),
        (
            "/v1/snapshots",
            snapshot("2025-03-01T10:30:00Z", &[SUB1], true, vec![b.clone()]),
        ),
        (
            "/v1/snapshots",
            snapshot(
                "2025-03-01T10:45:00Z",
                &[SUB1],
                true,
                vec![b.clone(), c.clone()],
            ),
        ),
        (
            "/v1/snapshots",
            snapshot("2025-03-01T10:20:00Z", &[SUB1], false, vec![a2.clone()]),
        ),
        (
            "/v1/activity",
            json!([activity(
                "DELETE",
                "2025-03-01T10:25:00Z",
                &a,
                "Success",
                false
            )]),
        ),
        (
            "/v1/activity",
            json!([activity(
                "WRITE",
                "2025-03-01T10:40:00Z",
                &c,
                "Success",
                true
            )]),
        ),
        (
            "/v1/activity",
            json!([activity(
                "WRITE",
                "2025-03-01T10:05:00Z",
                &a2,
                "Success",
                false
            )]),
        ),
    ];
    let mut tables = Vec::new();
    for order in [
        vec![0, 1, 2, 3, 4, 5, 6, 7],
        vec![7, 6, 5, 4, 3, 2, 1, 0],
        vec![3, 0, 5, 2, 7, 1, 4, 6],
    ] {
        app.empty().await;
        for i in order {
            let (path, body) = &posts[i];
            let (code, r) = app.post_json(path, body).await;
            assert_eq!(code, 200, "{r}");
        }
        tables.push(claims_table(&app.pool).await);
    }
    assert!(!tables[0].is_empty());
    assert_eq!(tables[0], tables[1]);
    assert_eq!(tables[0], tables[2]);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn storage_grows_with_change_not_repetition(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let nics: Vec<Value> = (0..50)
        .map(|i| {
            nic(
                SUB1,
                "vnet1",
                &format!("nic-{i}"),
                &[&format!("10.0.1.{i}")],
                Some("vm"),
            )
        })
        .collect();
    for k in 0..20 {
        let t = format!("2025-03-01T{:02}:{:02}:00Z", 10 + k / 4, (k % 4) * 15);
        let (code, r) = app
            .post_json("/v1/snapshots", &snapshot(&t, &[SUB1], true, nics.clone()))
            .await;
        assert_eq!(code, 200, "{r}");
    }
    assert_eq!(app.count("snapshots").await, 20);
    assert_eq!(app.count("observations").await, 50);
    assert_eq!(app.count("nic_states").await, 50);
    assert_eq!(app.count("claims").await, 50);
    assert_eq!(app.count("snapshot_pages").await, 0);
    let (status, _, v) = app.owner("10.0.1.7", "2025-03-01T11:00:00Z", "").await;
    assert_eq!(status, "confirmed");
    assert_eq!(v["owner"]["certain"]["start"], "2025-03-01T10:00:00Z");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn the_same_ip_in_two_vnets_is_ambiguous_until_scoped(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB2, "vnet2", "nic-b", &["10.0.0.4"], Some("vm-b"));
    app.post_json("/v1/snapshots", &snapshot(T0, &[SUB1], true, vec![a]))
        .await;
    app.post_json("/v1/snapshots", &snapshot(T0, &[SUB2], true, vec![b]))
        .await;
    let (status, _, v) = app.owner("10.0.0.4", T0, "").await;
    assert_eq!(status, "ambiguous");
    assert_eq!(v["candidates"].as_array().unwrap().len(), 2);
    let (status, name, _) = app
        .owner("10.0.0.4", T0, &format!("&subscription={SUB2}"))
        .await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("nic-b"))
    );
    let vnet = format!(
        "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/NET/PROVIDERS/MICROSOFT.NETWORK/VIRTUALNETWORKS/VNET1",
        SUB1.to_uppercase()
    );
    let (status, name, _) = app
        .owner("10.0.0.4", T0, &format!("&vnet={}", urlencode(&vnet)))
        .await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("nic-a"))
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_misspelt_parameter_is_an_error_not_a_wider_lookup(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB2, "vnet2", "nic-b", &["10.0.0.4"], Some("vm-b"));
    let nic_a = a["id"].as_str().unwrap().to_string();
    app.post_json("/v1/snapshots", &snapshot(T0, &[SUB1], true, vec![a]))
        .await;
    app.post_json("/v1/snapshots", &snapshot(T0, &[SUB2], true, vec![b]))
        .await;
    let vnet1 = format!(
        "/subscriptions/{SUB1}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet1"
    );

    // Query strings: a parameter the endpoint does not take is a 400 naming
    // it (answered, `?time=` would have been a lookup at now), as is one
    // given twice or one of the wrong type. `get` checks they are problem+json.
    for (path, parameter) in [
        (format!("/v1/ips/10.0.0.4/owner?time={T0}"), "time"),
        (
            format!(
                "/v1/ips/10.0.0.4/owner?at={T0}&vnet_id={}",
                urlencode(&vnet1)
            ),
            "vnet_id",
        ),
        (format!("/v1/ips/10.0.0.4/owner?at={T0}&at={T1}"), "at"),
        (format!("/v1/ips/10.0.0.4/history?since={T0}"), "since"),
        (
            format!(
                "/v1/nics/{}/history?vnet={}",
                urlencode(&nic_a),
                urlencode(&vnet1)
            ),
            "vnet",
        ),
        ("/v1/conflicts?limit=many".to_string(), "limit"),
        ("/v1/conflicts?max=5".to_string(), "max"),
    ] {
        let (code, v) = app.get(&path).await;
        assert_eq!(
            (code, v["code"].as_str(), v["parameter"].as_str()),
            (400, Some("invalid_parameter"), Some(parameter)),
            "{path}: {v}"
        );
    }
    let (code, v) = app.get(&format!("/v1/ips/10.0.0.4/owner?time={T0}")).await;
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("at, vnet, subnet, subscription"),
        "{code} {v}"
    );
    // An offset's `+` written into the query unencoded arrives as a space,
    // which can mean nothing else: it is read as the `+` it was.
    let (code, v) = app
        .get(&format!(
            "/v1/ips/10.0.0.4/owner?at=2025-03-01T11:00:00+01:00&vnet={}",
            urlencode(&vnet1)
        ))
        .await;
    assert_eq!(
        (code, v["at"].as_str(), v["status"].as_str()),
        (200, Some(T0), Some("confirmed")),
        "{v}"
    );
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.9"], None);
    let (code, v) = app
        .post_json(
            &format!("/v1/snapshots?taken_at={T1}&subscriptions={SUB1}&complet=true"),
            &json!({"value": [c]}),
        )
        .await;
    assert_eq!(
        (code, v["parameter"].as_str()),
        (400, Some("complet")),
        "{v}"
    );
    assert_eq!(app.count("snapshots").await, 2);

    // Batch items: `scope` as an object or as one id narrows the lookup like
    // the separate fields; an unknown field or two scopes are errors in the
    // item's place.
    let items = json!([
        {"ip": "10.0.0.4", "at": T0},
        {"ip": "10.0.0.4", "at": T0, "scope": {"vnet": vnet1}},
        {"ip": "10.0.0.4", "at": T0, "scope": vnet1.to_uppercase()},
        {"ip": "10.0.0.4", "at": T0, "scope": SUB2},
        {"ip": "10.0.0.4", "at": T0, "scope": format!("/subscriptions/{SUB2}")},
        {"ip": "10.0.0.4", "at": T0, "scope": {"subscription": SUB2}},
        {"ip": "10.0.0.4", "at": T0, "vnet_id": vnet1},
        {"ip": "10.0.0.4", "at": T0, "scope": {"vnet": vnet1}, "subscription": SUB2},
        {"ip": "10.0.0.4", "at": T0, "scope": {"vnets": vnet1}},
    ]);
    let (code, v) = app.post_json("/v1/lookups", &items).await;
    assert_eq!(code, 200, "{v}");
    let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> = (0..9)
        .map(|i| {
            let x = &v["answers"][i];
            (
                x["status"].as_str(),
                x["owner"]["nic"]["name"].as_str(),
                x["error"]["parameter"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some("ambiguous"), None, None),
            (Some("confirmed"), Some("nic-a"), None),
            (Some("confirmed"), Some("nic-a"), None),
            (Some("confirmed"), Some("nic-b"), None),
            (Some("confirmed"), Some("nic-b"), None),
            (Some("confirmed"), Some("nic-b"), None),
            (None, None, Some("lookups[6].vnet_id")),
            (None, None, Some("lookups[7].scope")),
            (None, None, Some("lookups[8].scope")),
        ],
        "{v}"
    );
    assert!(
        v["answers"][6]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `vnet_id`"),
        "{v}"
    );
    assert_eq!(v["answers"][3]["scope"], SUB2, "{v}");
    // A batch-wide field is not read, so it is refused rather than dropped.
    let (code, v) = app
        .post_json(
            "/v1/lookups",
            &json!({"lookups": [{"ip": "10.0.0.4", "at": T0}], "scope": vnet1}),
        )
        .await;
    assert_eq!(
        (code, v["code"].as_str(), v["parameter"].as_str()),
        (400, Some("invalid_body"), Some("scope")),
        "{v}"
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_page_that_says_more_follow_does_not_finish_its_snapshot(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], Some("vm-b"));
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.6"], Some("vm-c"));
    let all = snapshot(T0, &[SUB1], true, vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(app.post_json("/v1/snapshots", &all).await.0, 200);
    // The first page of an ARM listing, posted as it came (a complete
    // snapshot, metadata in the query, no last_page): its nextLink keeps
    // the snapshot open, so the NICs of the next page are not taken for
    // deleted meanwhile.
    let query = format!("/v1/snapshots?taken_at={T1}&subscriptions={SUB1}&complete=true");
    let next = "https://management.azure.com/subscriptions/x/providers/Microsoft.Network/networkInterfaces?api-version=2024-05-01&$skiptoken=p2";
    let (code, v) = app
        .post_json(&query, &json!({"value": [a], "nextLink": next}))
        .await;
    assert_eq!((code, v["finished"].as_bool()), (200, Some(false)), "{v}");
    for ip in ["10.0.0.5", "10.0.0.6"] {
        assert_eq!(app.owner(ip, T1, "").await.0, "probable", "{ip}");
    }
    // Its last page finishes it: the NIC on neither page is gone.
    let (code, v) = app.post_json(&query, &json!({"value": [b]})).await;
    assert_eq!(
        (code, v["finished"].as_bool(), v["complete"].as_bool()),
        (200, Some(true), Some(true)),
        "{v}"
    );
    assert_eq!(app.owner("10.0.0.4", T1, "").await.0, "confirmed");
    assert_eq!(app.owner("10.0.0.5", T1, "").await.0, "confirmed");
    assert_eq!(app.owner("10.0.0.6", T1, "").await.0, "unknown");
    assert_eq!(app.owner("10.0.0.6", T0, "").await.0, "confirmed");

    // A page that says the listing goes on cannot be declared the last of
    // a complete snapshot; a Resource Graph result cut short without a skip
    // token cannot be complete; with a skip token, it waits for its pages.
    let later = format!("/v1/snapshots?taken_at={T2}&subscriptions={SUB1}&complete=true");
    let (code, v) = app
        .post_json(
            &format!("{later}&last_page=true"),
            &json!({"value": [c], "nextLink": next}),
        )
        .await;
    assert_eq!(
        (code, v["parameter"].as_str()),
        (400, Some("last_page")),
        "{v}"
    );
    let row = |n: &Value| {
        let mut r = n.clone();
        r["subscriptionId"] = json!(SUB1);
        r
    };
    let (code, v) = app
        .post_json(
            &later,
            &json!({"totalRecords": 3, "count": 1, "resultTruncated": "true", "data": [row(&c)]}),
        )
        .await;
    assert_eq!(
        (code, v["parameter"].as_str()),
        (400, Some("complete")),
        "{v}"
    );
    let (code, v) = app
        .post_json(
            &later,
            &json!({"count": 1, "data": [row(&c)], "skip_token": "ew0KICAiJGlkIjogIjEiLA0K"}),
        )
        .await;
    assert_eq!((code, v["finished"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(app.owner("10.0.0.4", T2, "").await.0, "probable");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_listing_s_pages_in_any_order_give_the_same_claims(pool: PgPool) {
    // The pages of one ARM listing, posted as they came but out of order
    // (uploaded in parallel, say): the last page first finishes the
    // complete snapshot, taking the NICs of the page still to come for
    // deleted; when it comes, they are not.
    let app = TestApp::start(pool.clone()).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], Some("vm-b"));
    let all = snapshot(T0, &[SUB1], true, vec![a.clone(), b.clone()]);
    let query = format!("/v1/snapshots?taken_at={T1}&subscriptions={SUB1}&complete=true");
    let next = "https://management.azure.com/next?$skiptoken=p2";
    let page1 = json!({"value": [a], "nextLink": next});
    let page2 = json!({"value": [b]});
    let mut tables = Vec::new();
    for pages in [[&page1, &page2], [&page2, &page1]] {
        app.empty().await;
        assert_eq!(app.post_json("/v1/snapshots", &all).await.0, 200);
        for p in pages {
            let (code, v) = app.post_json(&query, p).await;
            assert_eq!(code, 200, "{v}");
        }
        for ip in ["10.0.0.4", "10.0.0.5"] {
            assert_eq!(app.owner(ip, T1, "").await.0, "confirmed", "{ip}");
        }
        tables.push(claims_table(&pool).await);
    }
    assert_eq!(tables[0], tables[1]);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_nic_listed_twice_in_one_snapshot_gives_the_same_claims_in_any_order(pool: PgPool) {
    // nic-a moves between 10.0.0.4 and 10.0.0.9 while one listing is
    // taken: page 1 shows it before, page 2 after. Both are true within the
    // listing's seconds; which one stands at its instant must not depend
    // on the order the pages arrived in (nor on the order within a page).
    // Both ways round, so that the state kept is once the old, once the new.
    let app = TestApp::start(pool.clone()).await;
    let a4 = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let a9 = nic(SUB1, "vnet1", "nic-a", &["10.0.0.9"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], Some("vm-b"));
    let query = format!("/v1/snapshots?taken_at={T1}&subscriptions={SUB1}&complete=true");
    let next = "https://management.azure.com/next?$skiptoken=p2";
    let mut kept = Vec::new();
    for (old, new) in [(&a4, &a9), (&a9, &a4)] {
        let before = snapshot(T0, &[SUB1], true, vec![old.clone(), b.clone()]);
        let after = snapshot(T2, &[SUB1], true, vec![new.clone(), b.clone()]);
        let page1 = json!({"value": [old], "nextLink": next});
        let page2 = json!({"value": [new, b]});
        let one_page = json!({"value": [old, new, b]});
        let one_page_reversed = json!({"value": [b, new, old]});
        let orders: Vec<Vec<&Value>> = vec![
            vec![&page1, &page2],
            vec![&page2, &page1],
            vec![&one_page],
            vec![&one_page_reversed],
            // A page posted again after the snapshot finished.
            vec![&page1, &page2, &page1],
            vec![&page2, &page1, &page2],
        ];
        let mut results = Vec::new();
        for (i, pages) in orders.iter().enumerate() {
            app.empty().await;
            assert_eq!(app.post_json("/v1/snapshots", &before).await.0, 200);
            let mut twice = 0;
            for p in pages {
                let (code, v) = app.post_json(&query, p).await;
                assert_eq!(code, 200, "order {i}: {v}");
                twice += v["listed_with_two_states"].as_u64().unwrap();
            }
            // The finish saw both listings when the page with them came before it.
            let expected = if matches!(i, 1 | 5) { 0 } else { 1 };
            assert_eq!(twice, expected, "order {i}");
            assert_eq!(app.post_json("/v1/snapshots", &after).await.0, 200);
            let mut answers = Vec::new();
            for ip in ["10.0.0.4", "10.0.0.9", "10.0.0.5"] {
                for at in [T1, "2025-03-01T10:20:00Z"] {
                    let (status, owner, _) = app.owner(ip, at, "").await;
                    answers.push((ip, at, status, owner));
                }
            }
            results.push((claims_table(&pool).await, answers));
        }
        for (i, r) in results.iter().enumerate().skip(1) {
            assert_eq!(results[0], *r, "order 0 and order {i} differ");
        }
        // One of the two states stands at T1: nic-a confirmed on exactly one
        // of its two addresses then, and the other given to no one else.
        let at_t1: Vec<_> = results[0]
            .1
            .iter()
            .filter(|(ip, at, ..)| *at == T1 && *ip != "10.0.0.5")
            .collect();
        let confirmed: Vec<&str> = at_t1
            .iter()
            .filter(|(_, _, s, o)| s == "confirmed" && o.as_deref() == Some("nic-a"))
            .map(|(ip, ..)| *ip)
            .collect();
        assert_eq!(confirmed.len(), 1, "{at_t1:?}");
        assert!(
            at_t1
                .iter()
                .all(|(_, _, _, o)| o.is_none() || o.as_deref() == Some("nic-a")),
            "{at_t1:?}"
        );
        kept.push(confirmed[0]);
    }
    // The same state both times (the one whose fingerprint sorts last):
    // once it was the old one, once the new.
    assert_eq!(kept[0], kept[1]);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_complete_snapshot_finished_late_inside_a_run_bounds_the_events_in_it(pool: PgPool) {
    // nic-a on 10.0.0.4 with vm-a at T0 and T2, moved to vm-z and back by
    // two events between T1 and T2. The complete snapshot of T1 arrives
    // last: the run from T0 to T2 already holds it, but the claim the first
    // event ends (at an end the event cannot fix: the VM changed) was last
    // seen at T1, as when it arrives in time.
    let app = TestApp::start(pool.clone()).await;
    let a4 = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let az = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-z"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], Some("vm-b"));
    let events = json!({"records": [
        activity("WRITE", "2025-03-01T10:20:00Z", &az, "Success", false),
        activity("WRITE", "2025-03-01T10:25:00Z", &a4, "Success", false),
    ]});
    // T2's snapshot complete (the run stays live, its end not written) or
    // partial (the run's end written).
    for complete in [true, false] {
        let s0 = (
            "/v1/snapshots",
            snapshot(T0, &[SUB1], true, vec![a4.clone(), b.clone()]),
        );
        let s1 = (
            "/v1/snapshots",
            snapshot(T1, &[SUB1], true, vec![a4.clone(), b.clone()]),
        );
        let s2 = (
            "/v1/snapshots",
            snapshot(T2, &[SUB1], complete, vec![a4.clone(), b.clone()]),
        );
        let ev = ("/v1/activity", events.clone());
        let mut tables = Vec::new();
        for posts in [[&s0, &s1, &ev, &s2], [&s0, &s2, &ev, &s1]] {
            app.empty().await;
            for (path, body) in posts {
                let (code, v) = app.post_json(path, body).await;
                assert_eq!(code, 200, "{v}");
            }
            // At T1, the lookup is confirmed either way.
            let (status, owner, _) = app.owner("10.0.0.4", T1, "").await;
            assert_eq!(
                (status.as_str(), owner.as_deref()),
                ("confirmed", Some("nic-a"))
            );
            tables.push(claims_table(&pool).await);
        }
        assert_eq!(tables[0], tables[1], "T2 complete: {complete}");
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn gzip_bodies_are_ingested_like_plain_ones(pool: PgPool) {
    let limits = ipwho::api::Limits {
        max_body_bytes: 64 << 10,
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let page = snapshot(T0, &[SUB1], true, vec![a.clone()]).to_string();
    let events = json!({"records": [activity("DELETE", T1, &a, "Success", false)]}).to_string();
    // Gzip is known by its bytes, with or without Content-Encoding.
    let post_gz = |path: &'static str, body: Vec<u8>, header: bool| {
        let mut r = app
            .http
            .post(app.url(path))
            .header("content-type", "application/json");
        if header {
            r = r.header("content-encoding", "gzip");
        }
        async move {
            let r = r.body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, v) = post_gz("/v1/snapshots", gzip(page.as_bytes()), true).await;
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    let (code, v) = post_gz("/v1/activity", gzip(events.as_bytes()), false).await;
    assert_eq!((code, v["accepted"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(
        app.owner("10.0.0.4", T0, "").await.1.as_deref(),
        Some("nic-a")
    );
    assert_eq!(app.owner("10.0.0.4", T2, "").await.0, "unknown");
    // The same again, plain: nothing new.
    let (_, v) = app.post("/v1/activity", events).await;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(0), Some(1)),
        "{v}"
    );
    // The limit holds for what the body decompresses to; a damaged gzip
    // body is a 400, not a batch of unreadable records.
    let big = format!(
        "{{\"records\": [], \"pad\": \"{}\"}}",
        "x".repeat(200 << 10)
    );
    let small = gzip(big.as_bytes());
    assert!(small.len() < 64 << 10);
    let (code, v) = post_gz("/v1/activity", small, true).await;
    assert_eq!(
        (code, v["code"].as_str()),
        (413, Some("body_too_large")),
        "{v}"
    );
    let mut damaged = gzip(page.as_bytes());
    damaged.truncate(damaged.len() / 2);
    let (code, v) = post_gz("/v1/snapshots", damaged, true).await;
    assert_eq!(
        (code, v["code"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    assert_eq!(app.count("snapshots").await, 1);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn reverse_views_list_what_a_nic_and_a_vm_held(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(
        SUB1,
        "vnet1",
        "nic-a",
        &["10.0.0.4", "10.0.0.14"],
        Some("vm-a"),
    );
    app.post_json(
        "/v1/snapshots",
        &snapshot(T0, &[SUB1], true, vec![a.clone()]),
    )
    .await;
    let id = a["id"].as_str().unwrap().to_uppercase();
    let (code, v) = app
        .get(&format!("/v1/nics/{}/history", urlencode(&id)))
        .await;
    assert_eq!(code, 200, "{v}");
    let ips: Vec<&str> = v["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2);
    assert!(ips.contains(&"10.0.0.4/32") && ips.contains(&"10.0.0.14/32"));
    let vm = a["properties"]["virtualMachine"]["id"].as_str().unwrap();
    let (code, v) = app
        .get(&format!("/v1/vms/{}/ips?at={T0}", urlencode(vm)))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ips"].as_array().unwrap().len(), 2);
    assert_eq!(v["ips"][0]["status"], "confirmed");
    // The ids with their slashes as they are (the path and the id
    // concatenated) are read the same; a bad parameter is still a 400.
    let (code, raw) = app.get(&format!("/v1/vms{vm}/ips?at={T0}")).await;
    assert_eq!((code, &raw), (200, &v));
    let (code, encoded) = app
        .get(&format!("/v1/nics/{}/history?from={T0}", urlencode(&id)))
        .await;
    assert_eq!(code, 200, "{encoded}");
    let (code, raw) = app.get(&format!("/v1/nics{id}/history?from={T0}")).await;
    assert_eq!((code, &raw), (200, &encoded));
    let (code, raw) = app.get(&format!("/v1/nics{id}/history?from=soon")).await;
    assert_eq!(
        (code, raw["parameter"].as_str()),
        (400, Some("from")),
        "{raw}"
    );
    let (code, raw) = app.get(&format!("/v1/nics{id}/elsewhere")).await;
    assert_eq!((code, raw["code"].as_str()), (404, Some("not_found")));
    let (code, v) = app
        .get(&format!("/v1/ips/10.0.0.4/history?from={T0}&to={T3}"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["claims"].as_array().unwrap().len(), 1);
    let (code, v) = app
        .get(&format!(
            "/v1/nics/{}/history",
            urlencode("/subscriptions/x/nope")
        ))
        .await;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_found")));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn bad_input_gets_a_specific_error(pool: PgPool) {
    let limits = ipwho::api::Limits {
        max_body_bytes: 4096,
        max_lookups: 3,
        ..Default::default()
    };
    let app = TestApp::start_with(pool, limits).await;
    let (code, v) = app
        .get("/v1/ips/10.0.0.300/owner?at=2025-01-01T00:00:00Z")
        .await;
    assert_eq!(
        (code, v["code"].as_str(), v["parameter"].as_str()),
        (400, Some("invalid_ip"), Some("ip"))
    );
    let (code, v) = app.get("/v1/ips/10.0.0.3/owner?at=yesterday").await;
    assert_eq!(
        (code, v["code"].as_str(), v["parameter"].as_str()),
        (400, Some("invalid_time"), Some("at"))
    );
    let (code, v) = app.get("/v1/ips/10.0.0.3/owner?vnet=notanid").await;
    assert_eq!(
        (code, v["code"].as_str(), v["parameter"].as_str()),
        (400, Some("invalid_parameter"), Some("vnet"))
    );
    let (code, v) = app.post("/v1/snapshots", "x".repeat(5000)).await;
    assert_eq!((code, v["code"].as_str()), (413, Some("body_too_large")));
    let (code, v) = app.post_json("/v1/snapshots", &json!({"value": []})).await;
    assert_eq!((code, v["parameter"].as_str()), (400, Some("taken_at")));
    let (code, v) = app
        .post_json(
            "/v1/snapshots",
            &json!({"taken_at": T0, "complete": true, "value": []}),
        )
        .await;
    assert_eq!(
        (code, v["parameter"].as_str()),
        (400, Some("subscriptions"))
    );
    // A snapshot dated next year was stamped by a wrong clock: refused, as
    // it would make every NIC it lists certain until then.
    let ahead = (chrono::Utc::now() + chrono::TimeDelta::days(365)).to_rfc3339();
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    let (code, v) = app
        .post_json("/v1/snapshots", &snapshot(&ahead, &[SUB1], true, vec![a]))
        .await;
    assert_eq!(
        (code, v["code"].as_str(), v["parameter"].as_str()),
        (400, Some("invalid_time"), Some("taken_at")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("in the future"),
        "{v}"
    );
    assert_eq!(app.count("snapshots").await, 0);
    let (code, v) = app.post("/v1/lookups", "{\"lookups\": 5}").await;
    assert_eq!((code, v["code"].as_str()), (400, Some("invalid_body")));
    let four = json!({"lookups": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}]});
    let (code, v) = app.post_json("/v1/lookups", &four).await;
    assert_eq!((code, v["code"].as_str()), (413, Some("batch_too_large")));
    let (code, v) = app.get("/v1/nope").await;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_found")));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn one_bad_record_is_reported_and_the_rest_are_stored(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let good = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], None);
    let mut bad = nic(SUB1, "vnet1", "nic-bad", &["10.0.0.5"], None);
    bad["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] =
        json!("10.0.0.500");
    let outside = nic(SUB2, "vnet9", "nic-outside", &["10.0.0.6"], None);
    let (code, r) = app
        .post_json(
            "/v1/snapshots",
            &snapshot(T0, &[SUB1], true, vec![good, bad, outside]),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["accepted"], 1);
    let rej = r["rejected"].as_array().unwrap();
    assert_eq!(rej.len(), 2);
    assert_eq!(rej[0]["index"], 1);
    assert!(
        rej[0]["field"]
            .as_str()
            .unwrap()
            .contains("privateIPAddress"),
        "{r}"
    );
    assert_eq!(
        (rej[1]["index"].as_u64(), rej[1]["field"].as_str()),
        (Some(2), Some("id"))
    );
    // A complete snapshot it could not fully read is held partial: it ends
    // nothing. The NIC of another subscription is rejected, but it cannot be
    // one of the snapshot's, so it does not count.
    assert_eq!(r["complete"], false);
    assert!(
        r["partial_reason"]
            .as_str()
            .unwrap()
            .contains("1 NIC record"),
        "{r}"
    );
    let (status, _, _) = app.owner("10.0.0.4", T0, "").await;
    assert_eq!(status, "confirmed");
    // With only a NIC of another subscription rejected, a complete snapshot
    // stays complete, and what it does not list (nic-a) is gone.
    let (code, r) = app
        .post_json(
            "/v1/snapshots",
            &snapshot(
                T1,
                &[SUB1],
                true,
                vec![
                    nic(SUB2, "vnet9", "nic-outside", &["10.0.0.6"], None),
                    nic(SUB1, "vnet1", "nic-c", &["10.0.0.7"], None),
                ],
            ),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["complete"].as_bool()),
        (Some(1), Some(true)),
        "{r}"
    );
    assert_eq!(r["rejected"][0]["field"], "id", "{r}");
    assert_eq!(app.owner("10.0.0.4", T1, "").await.0, "unknown");
    assert_eq!(app.owner("10.0.0.7", T1, "").await.0, "confirmed");

    // Batch lookups: the bad item gets an error in its place, the rest are answered.
    let (code, v) = app
        .post_json("/v1/lookups", &json!({"lookups": [{"ip": "10.0.0.4", "at": T0}, {"ip": "nope"}, {"ip": "10.0.0.4", "at": "soon"}]}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["answers"][0]["status"], "confirmed");
    assert_eq!(v["answers"][1]["error"]["code"], "invalid_ip");
    assert_eq!(v["answers"][1]["error"]["parameter"], "lookups[1].ip");
    assert_eq!(v["answers"][2]["error"]["code"], "invalid_time");
    // Items that are not lookups at all are errors in their place too; a
    // bare array is a batch; `at` may be epoch seconds as a number.
    let t0 = chrono::DateTime::parse_from_rfc3339(T0)
        .unwrap()
        .timestamp();
    let (code, v) = app
        .post_json("/v1/lookups", &json!([{"ip": 5}, {"addr": "10.0.0.4"}, "10.0.0.4", {"ip": "10.0.0.4", "at": t0}, {"ip": "10.0.0.4", "at": true}]))
        .await;
    assert_eq!(code, 200, "{v}");
    let errors: Vec<(&str, &str)> = (0..5)
        .filter_map(|i| {
            let e = &v["answers"][i]["error"];
            Some((e["code"].as_str()?, e["parameter"].as_str()?))
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("invalid_body", "lookups[0].ip"),
            ("invalid_body", "lookups[1].addr"),
            ("invalid_body", "lookups[2]"),
            ("invalid_body", "lookups[4].at"),
        ],
        "{v}"
    );
    assert!(
        v["answers"][1]["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `addr`"),
        "{v}"
    );
    assert_eq!(v["answers"][3]["status"], "confirmed", "{v}");
    assert_eq!(v["answers"][3]["at"], T0, "{v}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn while_the_claims_load_only_health_is_served(pool: PgPool) {
    let writer = ipwho::index::Index::new();
    let body = snapshot(
        T0,
        &[SUB1],
        true,
        vec![nic(SUB1, "v", "n", &["10.1.0.1"], None)],
    );
    ipwho::ingest::ingest_snapshot(
        &pool,
        &writer,
        body.to_string().as_bytes(),
        Default::default(),
    )
    .await
    .unwrap();
    // The port is open before the claims are in memory: an answer now
    // would say "unknown" for an IP the database knows.
    let app = TestApp::start_loading(pool).await;
    assert_eq!(app.get("/healthz").await.0, 200);
    let (code, v) = app.get("/readyz").await;
    assert_eq!(
        (code, v["index_loaded"].as_bool(), v["database"].as_bool()),
        (503, Some(false), Some(true)),
        "{v}"
    );
    assert_eq!(app.get("/openapi.json").await.0, 200);
    let r = app
        .http
        .get(app.url(&format!("/v1/ips/10.1.0.1/owner?at={T0}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "unavailable", "{v}");
    let (code, v) = app.post_json("/v1/snapshots", &body).await;
    assert_eq!(
        (code, v["code"].as_str()),
        (503, Some("unavailable")),
        "ingest waits too"
    );

    ipwho::sync::load_into(&app.pool, &app.index).await.unwrap();
    let (code, v) = app.get("/readyz").await;
    assert_eq!(
        (code, v["index_loaded"].as_bool()),
        (200, Some(true)),
        "{v}"
    );
    assert_eq!(app.owner("10.1.0.1", T0, "").await.0, "confirmed");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn health_readiness_status_and_docs(pool: PgPool) {
    let app = TestApp::start(pool).await;
    app.post_json(
        "/v1/snapshots",
        &snapshot(
            T0,
            &[SUB1],
            true,
            vec![nic(SUB1, "v", "n", &["10.1.0.1"], None)],
        ),
    )
    .await;
    let (code, v) = app.get("/healthz").await;
    assert_eq!((code, v["status"].as_str()), (200, Some("ok")));
    let (code, v) = app.get("/readyz").await;
    assert_eq!((code, v["migrations"].as_bool()), (200, Some(true)));
    let (code, v) = app.get("/v1/status").await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["subscriptions"][0]["subscription"], SUB1);
    assert_eq!(
        v["subscriptions"][0]["last_complete_snapshot"]["taken_at"],
        "2025-03-01T10:00:00Z"
    );
    let (code, v) = app.get("/openapi.json").await;
    assert_eq!(code, 200);
    assert!(v["paths"]["/v1/ips/{ip}/owner"].is_object());
    let r = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.text().await.unwrap().contains("swagger"));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn replicas_follow_each_other_through_the_change_feed(pool: PgPool) {
    let app = TestApp::start(pool.clone()).await;
    // Another process (a second replica, or `ipwho ingest`) writes to the same database.
    let other = ipwho::index::Index::new();
    // A complete snapshot of SUB1 listing `nics` (name, IP), posted there.
    let post_elsewhere = |at: &'static str, nics: &'static [(&'static str, &'static str)]| {
        let (pool, other) = (&pool, &other);
        async move {
            let nics = nics
                .iter()
                .map(|&(name, ip)| nic(SUB1, "v", name, &[ip], None))
                .collect();
            let body = snapshot(at, &[SUB1], true, nics);
            ipwho::ingest::ingest_snapshot(
                pool,
                other,
                body.to_string().as_bytes(),
                Default::default(),
            )
            .await
            .unwrap();
        }
    };
    const X: &[(&str, &str)] = &[("nic-x", "10.2.0.1")];
    post_elsewhere(T0, X).await;
    let (status, _, _) = app.owner("10.2.0.1", T0, "").await;
    assert_eq!(status, "unknown", "not seen before catching up");
    let n = ipwho::sync::catch_up(&app.pool, &app.index).await.unwrap();
    assert_eq!(n, 1);
    let (status, name, _) = app.owner("10.2.0.1", T0, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("nic-x"))
    );

    // A later complete snapshot of the unchanged estate writes no claim: it
    // moves the subscription's horizon, which followers pick up too.
    let later = "2025-03-01T11:00:00Z";
    post_elsewhere(later, X).await;
    let (status, _, _) = app.owner("10.2.0.1", later, "").await;
    assert_eq!(status, "probable", "the horizon has not moved here yet");
    assert_eq!(
        ipwho::sync::catch_up(&app.pool, &app.index).await.unwrap(),
        0
    );
    let (status, _, v) = app.owner("10.2.0.1", later, "").await;
    assert_eq!(status, "confirmed", "{v}");
    assert_eq!(v["owner"]["certain"]["start"], T0);

    // A replica that fell behind the pruned part of the feed reloads every
    // claim: pruning always keeps the latest entry, so that it can tell.
    let last = "2025-03-01T12:00:00Z";
    post_elsewhere(last, &[("nic-x", "10.2.0.1"), ("nic-y", "10.2.0.2")]).await;
    let pruned = ipwho::sync::prune(&pool, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(pruned >= 2, "pruned {pruned}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM claim_changes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 1, "the latest entry is kept");
    assert_eq!(app.owner("10.2.0.2", last, "").await.0, "unknown");
    assert_eq!(
        ipwho::sync::catch_up(&app.pool, &app.index).await.unwrap(),
        2,
        "every NIC reloaded"
    );
    let (status, name, v) = app.owner("10.2.0.2", last, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("nic-y")),
        "{v}"
    );
    assert_eq!(app.owner("10.2.0.1", last, "").await.0, "confirmed");
    assert_eq!(
        app.index.len(),
        other.len(),
        "the same claims as the writer's"
    );

    // A feed that restarted behind the replica (a restored or reset
    // database) says nothing of what changed: the replica reloads everything.
    sqlx::query("TRUNCATE claim_changes RESTART IDENTITY")
        .execute(&pool)
        .await
        .unwrap();
    let latest = "2025-03-01T13:00:00Z";
    post_elsewhere(
        latest,
        &[
            ("nic-x", "10.2.0.1"),
            ("nic-y", "10.2.0.2"),
            ("nic-z", "10.2.0.3"),
        ],
    )
    .await;
    assert_eq!(
        ipwho::sync::catch_up(&app.pool, &app.index).await.unwrap(),
        3,
        "every NIC reloaded"
    );
    let (status, name, v) = app.owner("10.2.0.3", latest, "").await;
    assert_eq!(
        (status.as_str(), name.as_deref()),
        ("confirmed", Some("nic-z")),
        "{v}"
    );
    // And it follows the restarted feed from there.
    assert_eq!(
        ipwho::sync::catch_up(&app.pool, &app.index).await.unwrap(),
        0
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn the_demo_estate_answers_as_its_story_says(pool: PgPool) {
    let index = ipwho::index::Index::new();
    let first = ipwho::demo::load(&pool, &index).await.unwrap();
    let before = claims_table(&pool).await;
    // Again, with a fresh empty index as the command line gives it: the
    // summary counts the claims stored, not those the index saw change.
    let again = ipwho::demo::load(&pool, &ipwho::index::Index::new())
        .await
        .unwrap();
    assert_eq!(
        before,
        claims_table(&pool).await,
        "loading twice changes nothing"
    );
    let in_all = format!("{} claims in all", before.len());
    assert!(
        first.contains(&in_all) && again.contains(&in_all),
        "{first}\n{again}"
    );
    // The index loads claims in chunks, parsed while the next arrive: in
    // chunks of 3, every claim arrives once, as a whole read gives them.
    let whole = ipwho::store::load_claims(&pool).await.unwrap();
    assert!(whole.len() > 6, "{} claims", whole.len());
    let mut chunks = Vec::new();
    let n = ipwho::store::stream_claims(&pool, 3, |c| {
        chunks.push(c);
        std::future::ready(())
    })
    .await
    .unwrap();
    assert_eq!(n, whole.len());
    assert_eq!(chunks.len(), whole.len().div_ceil(3));
    assert!(chunks[..chunks.len() - 1].iter().all(|c| c.len() == 3));
    let json = |cs: &[ipwho::engine::Claim]| {
        let mut v: Vec<String> = cs
            .iter()
            .map(|c| serde_json::to_string(c).unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(json(&chunks.concat()), json(&whole));
    let app = TestApp::start(pool).await;
    assert_eq!(app.index.len(), whole.len(), "the index loaded them all");
    let prod = format!("&subscription={}", ipwho::demo::PROD);
    for (ip, at, extra, want, who) in [
        (
            "10.0.0.5",
            "2025-06-02T09:00:00Z",
            "",
            "confirmed",
            Some("batch-07-nic"),
        ),
        ("10.0.0.5", "2025-06-02T11:00:00Z", "", "unknown", None),
        (
            "10.0.0.5",
            "2025-06-02T13:00:00Z",
            "",
            "confirmed",
            Some("api-02-nic"),
        ),
        ("10.0.0.6", "2025-06-02T10:30:00Z", "", "ambiguous", None),
        ("10.0.0.4", "2025-06-02T12:00:00Z", "", "ambiguous", None),
        (
            "10.0.0.4",
            "2025-06-02T12:00:00Z",
            prod.as_str(),
            "confirmed",
            Some("web-01-nic"),
        ),
    ] {
        let (status, name, v) = app.owner(ip, at, extra).await;
        assert_eq!(
            (status.as_str(), name.as_deref()),
            (want, who),
            "{ip} at {at}: {v}"
        );
    }
    let (_, _, v) = app.owner("10.0.0.7", "2025-06-02T12:00:00Z", "").await;
    assert_eq!(v["vm"]["vm"]["name"], "db-new");
    let (_, _, v) = app.owner("10.0.0.7", "2025-06-02T11:00:00Z", "").await;
    assert_eq!(v["vm"]["vm"]["name"], "db-old");
}

/// `nic` as `az network nic list` prints it: `properties` flattened into
/// the NIC and into each ip configuration.
fn az_cli(nic: &Value) -> Value {
    let mut out = nic.as_object().unwrap().clone();
    let props = out.remove("properties").unwrap();
    for (k, v) in props.as_object().unwrap() {
        let v = if k == "ipConfigurations" {
            let configs = v.as_array().unwrap().iter().map(|c| {
                let mut c = c.as_object().unwrap().clone();
                let p = c.remove("properties").unwrap();
                c.extend(p.as_object().unwrap().clone());
                Value::Object(c)
            });
            Value::Array(configs.collect())
        } else {
            v.clone()
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn an_az_cli_listing_is_a_snapshot_like_the_arm_one(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5", "fd00::5"], None);
    let listing = json!([az_cli(&a), az_cli(&b)]);
    assert!(listing[0].get("properties").is_none());
    assert_eq!(
        listing[0]["ipConfigurations"][0]["privateIPAddress"],
        "10.0.0.4"
    );
    let path = format!("/v1/snapshots?taken_at={T0}&subscriptions={SUB1}&complete=true");
    let (code, r) = app.post(&path, listing.to_string()).await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["complete"].as_bool()),
        (Some(2), Some(true)),
        "{r}"
    );
    assert_eq!(r["claims_inserted"], 3);
    let (status, nic_name, v) = app.owner("10.0.0.4", T0, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-a"))
    );
    assert_eq!(v["vm"]["vm"]["name"], "vm-a");
    let (status, nic_name, _) = app.owner("fd00::5", T0, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-b"))
    );
    // The ARM listing of the same NICs is the same evidence: nothing new.
    let (code, r) = app
        .post_json("/v1/snapshots", &snapshot(T0, &[SUB1], true, vec![a, b]))
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(
        (r["claims_inserted"].as_u64(), r["claims_updated"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );
    // A Resource Graph response in its table format: rows under columns.
    let d = nic(SUB1, "vnet1", "nic-d", &["10.0.0.7"], Some("vm-d"));
    let columns = ["id", "name", "type", "subscriptionId", "properties"];
    let table = json!({
        "totalRecords": 1, "count": 1, "resultTruncated": "false",
        "data": {
            "columns": columns.iter().map(|c| json!({"name": c, "type": "string"})).collect::<Vec<_>>(),
            "rows": [[d["id"], d["name"], d["type"], SUB1, d["properties"]]]
        }
    });
    let partial = format!("/v1/snapshots?taken_at={T0}&subscriptions={SUB1}");
    let (code, r) = app.post(&partial, table.to_string()).await;
    assert_eq!((code, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    let (status, nic_name, v) = app.owner("10.0.0.7", T0, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-d"))
    );
    assert_eq!(v["vm"]["vm"]["name"], "vm-d");
    // One NIC, as `az network nic show` prints it: a listing of one.
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.6"], Some("vm-c"));
    let path = format!("/v1/snapshots?taken_at={T0}&subscriptions={SUB1}");
    let (code, r) = app.post(&path, az_cli(&c).to_string()).await;
    assert_eq!((code, r["accepted"].as_u64()), (200, Some(1)), "{r}");
    let (status, nic_name, _) = app.owner("10.0.0.6", T0, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("confirmed", Some("nic-c"))
    );
    // A listing whose NICs lost their properties is rejected record by
    // record and held partial: it says nothing of what the NICs held.
    let stripped = json!([{"id": listing[0]["id"], "name": "nic-a"}]);
    let (code, r) = app
        .post(
            &format!("/v1/snapshots?taken_at={T1}&subscriptions={SUB1}&complete=true"),
            stripped.to_string(),
        )
        .await;
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["rejected"][0]["field"], "properties", "{r}");
    assert_eq!(r["complete"], false);
    let (status, nic_name, _) = app.owner("10.0.0.4", T1, "").await;
    assert_eq!(
        (status.as_str(), nic_name.as_deref()),
        ("probable", Some("nic-a"))
    );
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn status_counts_every_page_of_a_snapshot_whose_last_page_came_first(pool: PgPool) {
    // A listing of three NICs over two pages, posted out of order: page 2
    // (declared the last) first, then page 1. Once both are in, the
    // snapshot is finished and complete and lists all three NICs.
    let app = TestApp::start(pool).await;
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(SUB1, "vnet1", "nic-b", &["10.0.0.5"], Some("vm-b"));
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.6"], Some("vm-c"));
    let query =
        format!("/v1/snapshots?snapshot_id=s-t1&taken_at={T1}&subscriptions={SUB1}&complete=true");
    let status = |v: &Value| {
        let s = &v["subscriptions"][0]["last_complete_snapshot"];
        (
            s["id"].as_str().map(str::to_string),
            s["nics"].as_i64(),
            s["finished"].as_bool(),
        )
    };
    let (code, v) = app
        .post_json(&format!("{query}&last_page=true"), &json!({"value": [c]}))
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["finished"].as_bool(), v["complete"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, v) = app.get("/v1/status").await;
    assert_eq!(
        status(&v),
        (Some("s-t1".into()), Some(1), Some(true)),
        "{v}"
    );
    assert!(
        v["subscriptions"][0]["last_partial_snapshot"].is_null(),
        "{v}"
    );

    let page1 = json!({"value": [a, b]});
    let (code, v) = app
        .post_json(&format!("{query}&last_page=false"), &page1)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["finished"].as_bool(), v["complete"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, v) = app.get("/v1/status").await;
    assert_eq!(
        status(&v),
        (Some("s-t1".into()), Some(3), Some(true)),
        "{v}"
    );
    // Posting either page again changes nothing, the count included.
    app.post_json(&format!("{query}&last_page=false"), &page1)
        .await;
    app.post_json(&format!("{query}&last_page=true"), &json!({"value": [c]}))
        .await;
    let (_, v) = app.get("/v1/status").await;
    assert_eq!(
        status(&v),
        (Some("s-t1".into()), Some(3), Some(true)),
        "{v}"
    );
    for ip in ["10.0.0.4", "10.0.0.5", "10.0.0.6"] {
        assert_eq!(app.owner(ip, T1, "").await.0, "confirmed", "{ip}");
    }
}
