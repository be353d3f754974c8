//! Fixtures for the unit tests of recompute's parts, and the tests of what
//! needs Postgres: the evidence reads and writes, and the one call.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::*;
use crate::model::{ArmId, IpAssignment};
use crate::store::ingest_snapshot_page;
use crate::store::runs::Runs;
use crate::store::{SnapshotMeta, SnapshotPage};

pub(super) const SUB: &str = "00000000-0000-0000-0000-0000000000aa";

fn arm(path: &str) -> ArmId {
    ArmId::parse(&format!(
        "/subscriptions/{SUB}/resourceGroups/rg/providers/{path}"
    ))
    .unwrap()
}

/// The key of NIC `n`.
pub(super) fn nic_key(n: u32) -> String {
    arm(&format!("Microsoft.Network/networkInterfaces/nic{n}"))
        .key()
        .to_string()
}

/// NIC `n` holding `ips` in VNet `vnet1`.
pub(super) fn state(n: u32, ips: &[&str]) -> NicState {
    NicState {
        id: arm(&format!("Microsoft.Network/networkInterfaces/nic{n}")),
        name: format!("nic{n}"),
        mac: None,
        vm: None,
        ips: ips
            .iter()
            .map(|ip| IpAssignment {
                ip: ip.parse::<std::net::IpAddr>().unwrap().into(),
                config: "ipconfig1".into(),
                primary: true,
                subnet: Some(arm(
                    "Microsoft.Network/virtualNetworks/vnet1/subnets/default",
                )),
            })
            .collect(),
    }
}

/// A run of state `fp` from `first` to `last` (snapshots named `s<t>`).
pub(super) fn run(id: Option<i64>, fp: &str, first: Micros, last: Micros, live: bool) -> Run {
    Run {
        id,
        fingerprint: fp.into(),
        first_at: first,
        first_snapshot: format!("s{first}"),
        last_at: last,
        last_snapshot: format!("s{last}"),
        live,
        dirty: false,
    }
}

/// What deriving NIC `n` of each of `nics` needs: one run of its state, from
/// 10 to 20 seconds, nothing stored.
pub(super) fn inputs_of(nics: &[(u32, NicState)]) -> read::Inputs {
    let mut inputs = read::Inputs {
        nics: Vec::new(),
        completes: HashMap::default(),
        horizons: HashMap::default(),
        runs: HashMap::default(),
        states: HashMap::default(),
        fresh: Vec::new(),
        events: HashMap::default(),
        existing: HashMap::default(),
    };
    for (n, s) in nics {
        let fp = s.fingerprint();
        inputs.nics.push(nic_key(*n));
        inputs.runs.insert(
            nic_key(*n),
            vec![run(None, &fp, 10_000_000, 20_000_000, false)],
        );
        inputs.states.insert(fp, Arc::new(s.clone()));
    }
    inputs
}

fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// A finished complete snapshot listing `nics`, at `at` seconds.
fn snapshot(id: &str, at: i64, nics: Vec<NicState>) -> SnapshotPage {
    SnapshotPage {
        meta: SnapshotMeta {
            id: id.into(),
            taken_at: ts(at),
            subscriptions: vec![SUB.into()],
            complete: true,
        },
        nics,
        last_page: true,
        rejected: 0,
    }
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn runs_saved_are_loaded_back(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let (a, b) = (nic_key(1), nic_key(2));
    let mut new = Runs::new(vec![
        run(None, "A", 1_000_000, 2_000_000, false),
        run(None, "B", 3_000_000, 4_000_000, true),
    ]);
    new.runs.iter_mut().for_each(|r| r.dirty = true);
    save_runs(&mut conn, &[(a.clone(), new)]).await.unwrap();
    let loaded = load_runs(&mut conn, &[a.clone(), b.clone()]).await.unwrap();
    assert!(!loaded.contains_key(&b), "NIC 2 has no runs");
    let mut runs = Runs::new(loaded[&a].clone());
    let fields: Vec<_> = runs
        .runs
        .iter()
        .map(|r| {
            (
                r.fingerprint.as_str(),
                r.first_at,
                r.last_at,
                r.live,
                r.dirty,
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            ("A", 1_000_000, 2_000_000, false, false),
            ("B", 3_000_000, 4_000_000, true, false)
        ]
    );
    assert!(runs.runs.iter().all(|r| r.id.is_some()));

    // An update of one, a delete of the other.
    let gone = runs.runs[0].id.unwrap();
    runs.runs.remove(0);
    runs.deleted.push(gone);
    runs.runs[0].last_at = 5_000_000;
    runs.runs[0].last_snapshot = "s5".into();
    runs.runs[0].live = false;
    runs.runs[0].dirty = true;
    let kept = runs.runs[0].id;
    save_runs(&mut conn, &[(a.clone(), runs)]).await.unwrap();
    let loaded = load_runs(&mut conn, std::slice::from_ref(&a))
        .await
        .unwrap();
    assert_eq!(loaded[&a].len(), 1);
    let r = &loaded[&a][0];
    assert_eq!(
        (r.id, r.last_at, r.last_snapshot.as_str(), r.live),
        (kept, 5_000_000, "s5", false)
    );
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn complete_snapshots_are_read_in_time_order_and_the_last_is_the_horizon(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    for (id, at, complete, finished) in [
        ("late", 30, true, true),
        ("early", 10, true, true),
        ("partial", 20, false, true),
        ("unfinished", 40, true, false),
    ] {
        sqlx::query(
            "INSERT INTO snapshots (id, taken_at, subscriptions, claimed_complete, complete, finished)
             VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(id)
        .bind(ts(at))
        .bind(vec![SUB.to_string()])
        .bind(complete)
        .bind(finished)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let other = "00000000-0000-0000-0000-0000000000bb".to_string();
    let completes = load_completes(&mut conn, &[SUB.to_string(), other.clone()])
        .await
        .unwrap();
    let ids: Vec<(&str, Micros)> = completes[SUB]
        .iter()
        .map(|c| (c.id.as_str(), c.at))
        .collect();
    assert_eq!(ids, vec![("early", 10_000_000), ("late", 30_000_000)]);
    assert!(
        completes[&other].is_empty(),
        "every subscription asked for is there"
    );
    let horizons = horizons_of(&completes);
    assert_eq!(horizons[SUB].id, "late");
    assert!(!horizons.contains_key(&other));
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn recompute_restores_lost_claims_once(pool: PgPool) {
    let nic = state(1, &["10.0.0.4", "10.0.0.5"]);
    ingest_snapshot_page(&pool, &snapshot("s1", 100, vec![nic]))
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    assert_eq!(count(&mut tx, "claims").await, 2);
    sqlx::query("DELETE FROM claims")
        .execute(&mut *tx)
        .await
        .unwrap();
    let feed_before = count(&mut tx, "claim_changes").await;
    let cache = StateCache::default();

    let r = recompute(
        &mut tx,
        &cache,
        Batch::stored(vec![nic_key(1)]),
        async |_| Ok(7),
    )
    .await
    .unwrap();
    assert_eq!(r.meanwhile, 7, "what the caller's writes returned");
    assert_eq!(
        (r.changes.inserted, r.changes.updated, r.changes.deleted),
        (2, 0, 0)
    );
    assert_eq!(r.changes.by_nic[&nic_key(1)].len(), 2);
    assert!(r.changes.seq.is_some());
    assert_eq!(r.states_to_cache.len(), 1, "the state was read, not cached");
    assert_eq!(count(&mut tx, "claims").await, 2);
    assert_eq!(count(&mut tx, "claim_changes").await, feed_before + 1);

    // Nothing changed since: nothing written, no feed entry.
    let r = recompute(
        &mut tx,
        &cache,
        Batch::stored(vec![nic_key(1)]),
        async |_| Ok(()),
    )
    .await
    .unwrap();
    assert_eq!(
        (r.changes.inserted, r.changes.updated, r.changes.deleted),
        (0, 0, 0)
    );
    assert!(r.changes.by_nic.is_empty());
    assert_eq!(r.changes.seq, None);
    assert_eq!(count(&mut tx, "claim_changes").await, feed_before + 1);
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn the_callers_writes_run_even_without_nics(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let cache = StateCache::default();
    let r = recompute(
        &mut conn,
        &cache,
        Batch::stored(Vec::new()),
        async |conn: &mut PgConnection| {
            sqlx::query_scalar::<_, i32>("SELECT 41 + 1")
                .fetch_one(conn)
                .await
        },
    )
    .await
    .unwrap();
    assert_eq!(r.meanwhile, 42);
    assert_eq!(r.changes.seq, None);
    assert!(r.changes.by_nic.is_empty());
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn two_nics_on_one_ip_at_once_are_a_conflict(pool: PgPool) {
    let page = snapshot(
        "s1",
        100,
        vec![state(1, &["10.0.0.4"]), state(2, &["10.0.0.4", "10.0.0.9"])],
    );
    ingest_snapshot_page(&pool, &page).await.unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let pairs: Vec<(String, String, String)> =
        sqlx::query_as("SELECT nic_a, nic_b, host(ip) FROM conflicts")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(pairs, vec![(nic_key(1), nic_key(2), "10.0.0.4".into())]);

    // NIC 1's claim on the IP lost: recomputing NIC 1 restores it, and its
    // conflict is found again.
    sqlx::query("DELETE FROM claims WHERE nic_key = $1 AND ip = '10.0.0.4'")
        .bind(nic_key(1))
        .execute(&mut *conn)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let r = recompute(
        &mut tx,
        &StateCache::default(),
        Batch::stored(vec![nic_key(1)]),
        async |_| Ok(()),
    )
    .await
    .unwrap();
    assert_eq!(r.changes.inserted, 1, "the deleted claim is back");
    assert_eq!(
        count(&mut tx, "conflicts").await,
        1,
        "and so is its conflict"
    );
}

#[sqlx::test(migrator = "crate::store::MIGRATOR")]
async fn a_moved_horizon_is_one_feed_entry(pool: PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let horizons = HashMap::default();
    let none = horizons_moved(&mut conn, &[], &horizons).await.unwrap();
    assert_eq!(none.seq, None);
    assert!(none.horizons.is_empty());
    assert_eq!(count(&mut conn, "claim_changes").await, 0);

    let now = CompleteSnapshot {
        at: 5_000_000,
        id: "s5".into(),
    };
    let moved = [MovedHorizon {
        subscription: SUB,
        before: None,
        now: &now,
    }];
    let c = horizons_moved(&mut conn, &moved, &horizons).await.unwrap();
    assert_eq!(c.horizons, vec![(SUB.to_string(), now.clone())]);
    let seq = c.seq.expect("a feed entry").0;
    let nics: Vec<String> = sqlx::query_scalar("SELECT nic_keys FROM claim_changes WHERE seq = $1")
        .bind(seq)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(nics, vec![HORIZON_MOVED.to_string()]);
}

#[test]
fn merged_changes_add_up_and_span_both_feed_ranges() {
    let mut a = ClaimChanges {
        inserted: 1,
        seq: Some((5, 5)),
        ..Default::default()
    };
    a.merge(ClaimChanges {
        updated: 2,
        deleted: 3,
        seq: Some((3, 4)),
        ..Default::default()
    });
    assert_eq!((a.inserted, a.updated, a.deleted), (1, 2, 3));
    assert_eq!(a.seq, Some((3, 5)));
    a.merge(ClaimChanges::default());
    assert_eq!(a.seq, Some((3, 5)), "no range leaves the range as it is");
    assert!(a.wrote());
    assert!(!ClaimChanges::default().wrote());
}
