//! Arrival order never changes an answer: random histories (NICs created,
//! readdressed, moved between VMs and VNets, deleted and recreated, IPs
//! reused), seen through complete, partial and multi-page snapshots (some
//! listing a NIC twice, as it was and as it is) and Activity Log events
//! (some lost, some posted twice), posted over HTTP in
//! several orders. Every order must leave the same claims and conflicts,
//! and the index kept current after each post must equal one loaded afresh.

mod common;

use common::{TestApp, activity, claims_table, dangling_references, nic};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng};
use serde_json::{Value, json};
use sqlx::PgPool;

const SUB: &str = "cccccccc-0000-0000-0000-000000000001";

/// The scenario's random source: seeded, so every failure replays.
struct Rng(StdRng);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(StdRng::seed_from_u64(seed))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0.random_range(0..n)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What one NIC is at one step: VNet, IP, VM.
type State = Option<(usize, usize, Option<usize>)>;

fn render(name: &str, s: (usize, usize, Option<usize>)) -> Value {
    let (vnet, ip, vm) = s;
    let ip = format!("10.0.0.{}", 4 + ip);
    let vm = vm.map(|v| format!("vm-{v}"));
    nic(SUB, &format!("vnet{vnet}"), name, &[&ip], vm.as_deref())
}

fn at(step: usize, minus_secs: u64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2025-06-01T10:00:00Z").unwrap()
        + chrono::Duration::seconds(step as i64 * 300 - minus_secs as i64);
    t.to_utc().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One postable unit: one or more (path, body) posts made back to back.
type Unit = Vec<(String, Value)>;

fn scenario(seed: u64) -> Vec<Unit> {
    let mut rng = Rng::new(seed);
    const NICS: usize = 5;
    const STEPS: usize = 10;
    let mut truth: Vec<Vec<State>> = vec![vec![None; STEPS]; NICS];
    for line in truth.iter_mut() {
        let mut s: State = rng.chance(70).then(|| {
            (
                rng.below(2) as usize,
                rng.below(3) as usize,
                Some(rng.below(3) as usize),
            )
        });
        for cell in line.iter_mut() {
            if rng.chance(30) {
                s = match (s, rng.below(4)) {
                    (None, _) => Some((rng.below(2) as usize, rng.below(3) as usize, None)),
                    (Some(_), 0) => None,
                    (Some((v, _, m)), 1) => Some((v, rng.below(3) as usize, m)),
                    (Some((v, i, _)), 2) => {
                        Some((v, i, rng.chance(50).then(|| rng.below(3) as usize)))
                    }
                    (Some((_, i, m)), _) => Some((rng.below(2) as usize, i, m)),
                };
            }
            *cell = s;
        }
    }
    let name = |n: usize| format!("nic-{n}");
    // Half the histories list a NIC twice now and then (as it was and as
    // it is); those take only complete snapshots. With partial ones, a
    // sighting inside a run is not stored and a later split can drop it
    // in one order and not in another (docs/attribution.md), which a NIC
    // listed twice makes likely enough to hide what else these test.
    let twice = rng.chance(50);
    let mut units: Vec<Unit> = Vec::new();
    for step in 0..STEPS {
        // Events for the changes that led to this step, two minutes before it.
        for (n, line) in truth.iter().enumerate() {
            let prev = if step == 0 { None } else { line[step - 1] };
            if step == 0 || prev == line[step] || rng.chance(30) {
                continue;
            }
            let t = at(step, 120);
            let rec = match line[step] {
                Some(s) => activity("WRITE", &t, &render(&name(n), s), "Success", prev.is_none()),
                None => {
                    let p = prev.expect("a change from something");
                    activity("DELETE", &t, &render(&name(n), p), "Success", false)
                }
            };
            units.push(vec![("/v1/activity".into(), json!({ "records": [rec] }))]);
        }
        if !rng.chance(70) {
            continue;
        }
        let complete = twice || rng.chance(70);
        let listed: Vec<Value> = truth
            .iter()
            .enumerate()
            .filter_map(|(n, line)| line[step].map(|s| (n, s)))
            .filter(|_| complete || rng.chance(60))
            .map(|(n, s)| render(&name(n), s))
            .collect();
        // Now and then a NIC changed at this step is listed a second time,
        // as it was before: updated while the listing was taken.
        let stale: Option<Value> = (twice && step > 0 && rng.chance(30))
            .then(|| {
                truth
                    .iter()
                    .enumerate()
                    .find_map(|(n, line)| match (line[step - 1], line[step]) {
                        (Some(p), Some(s)) if p != s => Some(render(&name(n), p)),
                        _ => None,
                    })
            })
            .flatten();
        let id = format!("snap-{seed}-{step}");
        let base = json!({"snapshot_id": id, "taken_at": at(step, 0), "subscriptions": [SUB], "complete": complete});
        if complete && listed.len() > 1 && rng.chance(40) {
            let (a, b) = listed.split_at(listed.len() / 2);
            let mut p1 = base.clone();
            p1["value"] = json!(a);
            if let Some(x) = &stale {
                p1["value"].as_array_mut().unwrap().push(x.clone());
            }
            p1["last_page"] = json!(false);
            let mut p2 = base.clone();
            p2["value"] = json!(b);
            p2["last_page"] = json!(false);
            units.push(vec![
                ("/v1/snapshots".into(), p1),
                ("/v1/snapshots".into(), p2),
                (format!("/v1/snapshots/{id}/done"), Value::Null),
            ]);
        } else {
            let mut p = base;
            p["value"] = json!(listed);
            if let Some(x) = stale {
                p["value"].as_array_mut().unwrap().insert(0, x);
            }
            units.push(vec![("/v1/snapshots".into(), p)]);
        }
    }
    // Something posted twice.
    if !units.is_empty() {
        let i = rng.below(units.len() as u64) as usize;
        units.push(units[i].clone());
    }
    units
}

async fn conflicts_table(pool: &PgPool) -> Vec<String> {
    let mut rows: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', scope, ip::text, nic_a, nic_b, lower(overlap)::text) FROM conflicts",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    rows.sort();
    rows
}

fn index_table(claims: Vec<ipwho::engine::Claim>) -> Vec<String> {
    let mut rows: Vec<String> = claims
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    rows.sort();
    rows
}

/// How many random histories each test tries: 12, or `IPWHO_ORDER_SEEDS`
/// (more explore further by hand; by 100, a history with partial snapshots
/// reaches the case docs/attribution.md describes, where order can show).
fn seeds() -> u64 {
    std::env::var("IPWHO_ORDER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

/// Posts `posts` into emptied tables and an empty index; returns the claims
/// and conflicts they leave, after checking that the index kept current
/// equals one loaded afresh and that no reference dangles.
async fn post_all(
    app: &TestApp,
    posts: &[&(String, Value)],
    what: &str,
) -> (Vec<String>, Vec<String>) {
    app.empty().await;
    for (path, body) in posts {
        let (code, r) = if body.is_null() {
            app.post(path, "").await
        } else {
            app.post_json(path, body).await
        };
        assert_eq!(code, 200, "{what}, {path}: {r}");
    }
    let dangling = dangling_references(&app.pool).await;
    assert!(dangling.is_empty(), "{what}: {dangling:?}");
    let claims = claims_table(&app.pool).await;
    let fresh = ipwho::sync::load(&app.pool, Default::default())
        .await
        .unwrap();
    assert_eq!(
        index_table(app.index.all_claims()),
        index_table(fresh.all_claims()),
        "{what}: the index kept current differs from a fresh load"
    );
    (claims, conflicts_table(&app.pool).await)
}

/// The scenario's Activity Log records posted in batches of several (some
/// repeated inside a batch, some already posted in the batch before), its
/// snapshots between them as they come.
fn batched(units: &[Unit], rng: &mut Rng) -> Vec<(String, Value)> {
    let mut posts: Vec<(String, Value)> = Vec::new();
    let mut batch: Vec<Value> = Vec::new();
    let mut last: Option<Value> = None;
    let flush = |batch: &mut Vec<Value>,
                 last: &mut Option<Value>,
                 posts: &mut Vec<(String, Value)>,
                 rng: &mut Rng| {
        if batch.is_empty() {
            return;
        }
        let mut records = std::mem::take(batch);
        let newest = records.last().cloned();
        if rng.chance(50) {
            let i = rng.below(records.len() as u64) as usize;
            records.insert(i, records[i].clone());
        }
        if let Some(old) = last.take().filter(|_| rng.chance(50)) {
            records.insert(0, old);
        }
        *last = newest;
        posts.push(("/v1/activity".into(), json!({ "records": records })));
    };
    for unit in units {
        for (path, body) in unit {
            if path == "/v1/activity" {
                batch.extend(body["records"].as_array().unwrap().iter().cloned());
                if rng.chance(25) {
                    flush(&mut batch, &mut last, &mut posts, rng);
                }
            } else {
                flush(&mut batch, &mut last, &mut posts, rng);
                posts.push((path.clone(), body.clone()));
            }
        }
    }
    flush(&mut batch, &mut last, &mut posts, rng);
    posts
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn events_posted_in_batches_give_the_same_history(pool: PgPool) {
    let app = TestApp::start(pool).await;
    let mut several = 0;
    for seed in 1..=seeds() {
        let units = scenario(seed);
        let one_by_one: Vec<&(String, Value)> = units.iter().flatten().collect();
        let single = post_all(&app, &one_by_one, &format!("seed {seed}, one by one")).await;
        let posts = batched(&units, &mut Rng::new(seed + 2000));
        several += posts
            .iter()
            .filter(|(p, b)| p == "/v1/activity" && b["records"].as_array().unwrap().len() > 1)
            .count();
        let refs: Vec<&(String, Value)> = posts.iter().collect();
        let batches = post_all(&app, &refs, &format!("seed {seed}, in batches")).await;
        assert!(
            single == batches,
            "seed {seed}: events in batches leave other claims or conflicts:\none by one: {single:#?}\nin batches: {batches:#?}"
        );
    }
    assert!(several > 0, "no batch held more than one record");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn any_arrival_order_gives_the_same_history(pool: PgPool) {
    let app = TestApp::start(pool).await;
    for seed in 1..=seeds() {
        let units = scenario(seed);
        let mut orders: Vec<Vec<usize>> = vec![(0..units.len()).collect()];
        orders.push((0..units.len()).rev().collect());
        let mut rng = Rng::new(seed + 1000);
        for _ in 0..2 {
            let mut o: Vec<usize> = (0..units.len()).collect();
            for i in (1..o.len()).rev() {
                o.swap(i, rng.below(i as u64 + 1) as usize);
            }
            orders.push(o);
        }
        let mut results = Vec::new();
        for (k, order) in orders.iter().enumerate() {
            // Every other order also takes a multi-page snapshot's pages
            // the other way round (its `done` still last).
            let posts: Vec<&(String, Value)> = order
                .iter()
                .flat_map(|&u| {
                    let mut posts: Vec<&(String, Value)> = units[u].iter().collect();
                    if k % 2 == 1 && posts.len() > 2 {
                        let n = posts.len() - 1;
                        posts[..n].reverse();
                    }
                    posts
                })
                .collect();
            results.push(post_all(&app, &posts, &format!("seed {seed}, order {order:?}")).await);
        }
        assert!(!results[0].0.is_empty(), "seed {seed}: no claims at all");
        for (i, r) in results.iter().enumerate().skip(1) {
            let only = |a: &Vec<String>, b: &Vec<String>| -> Vec<String> {
                a.iter().filter(|x| !b.contains(x)).cloned().collect()
            };
            assert!(
                results[0].0 == r.0,
                "seed {seed}: claims differ between order {:?} and {:?}:\nonly in the first: {:#?}\nonly in the second: {:#?}",
                orders[0],
                orders[i],
                only(&results[0].0, &r.0),
                only(&r.0, &results[0].0)
            );
            assert_eq!(
                results[0].1, r.1,
                "seed {seed}: conflicts differ between order {:?} and {:?}",
                orders[0], orders[i]
            );
        }
    }
}

/// The claims and conflicts stored, as [`post_all`] returns them.
async fn stored(pool: &PgPool) -> (Vec<String>, Vec<String>) {
    (claims_table(pool).await, conflicts_table(pool).await)
}

/// What Postgres does to the claims when it recovers from a crash: they
/// are unlogged (migration 0009), so it empties them and their marker.
async fn lose_claims(pool: &PgPool) {
    sqlx::query("TRUNCATE claims, claims_intact")
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn lost_claims_are_recomputed_from_the_evidence(pool: PgPool) {
    let unlogged: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relpersistence = 'u' AND relkind = 'r' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        unlogged,
        ["claims", "claims_intact"],
        "only claims are unlogged"
    );
    let app = TestApp::start(pool).await;
    let mut conflicts = 0;
    for seed in 1..=seeds() {
        let units = scenario(seed);
        let posts: Vec<&(String, Value)> = units.iter().flatten().collect();
        let what = format!("seed {seed}");
        let (claims, conflicted) = post_all(&app, &posts, &what).await;
        assert!(!claims.is_empty(), "{what}: no claims at all");
        conflicts += conflicted.len();
        let same = |how: &str, after: (Vec<String>, Vec<String>)| {
            assert!(
                claims == after.0,
                "{what}: claims recomputed {how} differ:\nbefore: {claims:#?}\nafter: {:#?}",
                after.0
            );
            assert_eq!(
                conflicted, after.1,
                "{what}: conflicts recomputed {how} differ"
            );
        };

        // At start: loading the index recomputes them first.
        lose_claims(&app.pool).await;
        let loaded = ipwho::sync::load(&app.pool, Default::default())
            .await
            .unwrap();
        same("at load", stored(&app.pool).await);
        assert_eq!(
            index_table(loaded.all_claims()),
            index_table(app.index.all_claims()),
            "{what}: the index loaded after the loss differs"
        );

        // At the next ingest, before it reads them: here one that changes
        // nothing (a post repeated).
        lose_claims(&app.pool).await;
        let (path, body) = posts.last().unwrap();
        let (code, r) = if body.is_null() {
            app.post(path, "").await
        } else {
            app.post_json(path, body).await
        };
        assert_eq!(code, 200, "{what}: {r}");
        same("at ingest", stored(&app.pool).await);

        // When a replica polls the change feed: it recomputes them and
        // reloads its index.
        lose_claims(&app.pool).await;
        let follower = ipwho::index::Index::new();
        let nics = ipwho::sync::catch_up(&app.pool, &follower).await.unwrap();
        assert!(nics > 0, "{what}: the follower reloaded nothing");
        same("at catch-up", stored(&app.pool).await);
        assert_eq!(
            index_table(follower.all_claims()),
            index_table(app.index.all_claims()),
            "{what}: the follower's index after the loss differs"
        );
        // Intact again: nothing more to do.
        assert_eq!(
            ipwho::store::rebuild_claims_if_lost(&app.pool)
                .await
                .unwrap(),
            0
        );
    }
    assert!(conflicts > 0, "no scenario had a conflict to recompute");
}
