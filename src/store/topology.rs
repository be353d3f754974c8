//! VNet listings as evidence (migration 0011): each listing's instant and
//! subscriptions, each VNet's distinct states by fingerprint, and runs of
//! an unchanged state, extended by a new listing of the same state rather
//! than repeated. Read back whole as a [`Topology`] (VNets are few:
//! hundreds at most).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use super::recompute::feed;
use super::{Doc, micros};
use crate::engine::Micros;
use crate::topology::{Topology, VnetState};

/// One listing of VNets (or one page of it): when it was taken, the
/// subscriptions it covers, and the VNets it showed.
#[derive(Debug, Clone)]
pub struct TopologyListing {
    pub taken_at: DateTime<Utc>,
    /// Lower-cased subscription ids.
    pub subscriptions: Vec<String>,
    pub vnets: Vec<VnetState>,
    /// Why the listing may lack VNets (a page that never came back).
    pub partial_reason: Option<String>,
}

/// What storing a listing did.
#[derive(Debug, Clone, Default)]
pub struct ListingReport {
    /// VNets whose stored evidence changed (a new state, or a run
    /// extended, split or begun).
    pub stored: usize,
    /// VNets whose evidence already held this listing (posted before).
    pub unchanged: usize,
    /// States stored for the first time.
    pub new_states: usize,
    /// The listing (its instant and subscriptions) was new.
    pub new_listing: bool,
    /// The change-feed entry written when anything changed (first, last).
    pub seq: Option<(i64, i64)>,
}

/// A stable fingerprint of everything routing uses of a VNet: its key,
/// address space, subnets and peerings, as [`crate::azure::vnet::normalized`]
/// orders them.
pub fn fingerprint(s: &VnetState) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let nets = |h: &mut Sha256, nets: &[ipnet::IpNet]| {
        for n in nets {
            h.update(n.to_string().as_bytes());
            h.update([0]);
        }
    };
    h.update(s.id.key());
    h.update([0]);
    nets(&mut h, &s.address_space);
    for sub in &s.subnets {
        h.update([1]);
        h.update(sub.id.key());
        h.update([0]);
        nets(&mut h, &sub.prefixes);
    }
    for p in &s.peerings {
        h.update([2]);
        h.update(p.remote.key());
        h.update([0, p.connected as u8]);
        nets(&mut h, &p.remote_address_space);
    }
    hex::encode(&h.finalize()[..16])
}

/// One stored run of a VNet's state. `id` is `None` until inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Run {
    id: Option<i64>,
    fingerprint: String,
    first_at: Micros,
    last_at: Micros,
    dirty: bool,
}

/// A VNet's runs, sorted by time, with the ids of runs to delete.
#[derive(Debug, Default)]
struct Runs {
    runs: Vec<Run>,
    deleted: Vec<i64>,
}

impl Runs {
    fn new(mut runs: Vec<Run>) -> Self {
        runs.sort_by_key(|r| r.first_at);
        Runs {
            runs,
            deleted: Vec::new(),
        }
    }

    fn is_dirty(&self) -> bool {
        !self.deleted.is_empty() || self.runs.iter().any(|r| r.dirty)
    }

    /// The ends of the run of another state that a listing at `t` with
    /// state `fp` splits, if it splits one (see [`Runs::observe`]).
    fn splits(&self, t: Micros, fp: &str) -> Option<(Micros, Micros)> {
        let r = self
            .runs
            .iter()
            .find(|r| r.first_at <= t && t <= r.last_at)?;
        let at_end = r.first_at == t || r.last_at == t;
        (r.fingerprint != fp && !(at_end && r.fingerprint.as_str() > fp))
            .then_some((r.first_at, r.last_at))
    }

    /// Records that a listing at `t` showed the VNet with state `fp`.
    /// Returns whether anything changed. `near` are the listings of the
    /// VNet's subscription nearest `t` on either side inside the run it
    /// splits, if any (the run's points between its ends are not stored).
    ///
    /// Inside a run of another state, the run is split: its part before
    /// `t` ends at the nearest listing before (else at its first), its
    /// part after begins at the nearest listing after (else at its last),
    /// and `t` becomes a run of its own. Two states listed at the same
    /// instant (a run's end and the new listing) cannot both stand: the one
    /// whose fingerprint sorts last is kept, whichever came first. A listing
    /// next to a run of its own state, with no other run between, extends
    /// that run (and joins two).
    fn observe(&mut self, t: Micros, fp: &str, near: (Option<Micros>, Option<Micros>)) -> bool {
        if let Some(i) = self
            .runs
            .iter()
            .position(|r| r.first_at <= t && t <= r.last_at)
        {
            if self.splits(t, fp).is_none() {
                return false;
            }
            let r = self.runs.remove(i);
            let mut pieces: Vec<Run> = Vec::new();
            if r.first_at < t {
                let end = near.0.filter(|&p| r.first_at < p && p < t);
                pieces.push(Run {
                    last_at: end.unwrap_or(r.first_at),
                    dirty: true,
                    ..r.clone()
                });
            }
            if r.last_at > t {
                let start = near.1.filter(|&p| t < p && p < r.last_at);
                pieces.push(Run {
                    id: if pieces.is_empty() { r.id } else { None },
                    first_at: start.unwrap_or(r.last_at),
                    dirty: true,
                    ..r.clone()
                });
            }
            if pieces.is_empty() {
                self.deleted.extend(r.id);
            }
            for (k, p) in pieces.into_iter().enumerate() {
                self.runs.insert(i + k, p);
            }
        }
        let prev = self
            .runs
            .iter()
            .rposition(|r| r.last_at < t)
            .filter(|&p| self.runs[p].fingerprint == fp);
        let next = self
            .runs
            .iter()
            .position(|r| r.first_at > t)
            .filter(|&n| self.runs[n].fingerprint == fp);
        match (prev, next) {
            (Some(p), Some(n)) => {
                let removed = self.runs.remove(n);
                self.deleted.extend(removed.id);
                let r = &mut self.runs[p];
                r.last_at = removed.last_at;
                r.dirty = true;
            }
            (Some(p), None) => {
                let r = &mut self.runs[p];
                r.last_at = t;
                r.dirty = true;
            }
            (None, Some(n)) => {
                let r = &mut self.runs[n];
                r.first_at = t;
                r.dirty = true;
            }
            (None, None) => {
                let at = self.runs.partition_point(|r| r.first_at < t);
                self.runs.insert(
                    at,
                    Run {
                        id: None,
                        fingerprint: fp.to_string(),
                        first_at: t,
                        last_at: t,
                        dirty: true,
                    },
                );
            }
        }
        true
    }
}

/// Stores one listing, under the ingest lock, in one transaction. Posting
/// the same listing again changes nothing. The caller reloads the
/// topology it holds (other replicas learn of it from the change feed).
pub async fn ingest_listing(
    pool: &PgPool,
    listing: &TopologyListing,
) -> sqlx::Result<ListingReport> {
    let vnets: Vec<VnetState> = listing
        .vnets
        .iter()
        .cloned()
        .map(crate::azure::vnet::normalized)
        .collect();
    let fps: Vec<String> = vnets.iter().map(fingerprint).collect();
    let mut subscriptions = listing.subscriptions.clone();
    subscriptions.sort();
    subscriptions.dedup();
    let t = micros(listing.taken_at);

    let mut tx = pool.begin().await?;
    super::ingest::lock(&mut tx).await?;
    let mut report = ListingReport::default();
    let new_listing: Option<i64> = sqlx::query_scalar(
        "INSERT INTO topology_listings (taken_at, subscriptions, partial_reason) VALUES ($1, $2, $3)
         ON CONFLICT (taken_at, subscriptions) DO NOTHING RETURNING id",
    )
    .bind(listing.taken_at)
    .bind(&subscriptions)
    .bind(&listing.partial_reason)
    .fetch_optional(&mut *tx)
    .await?;
    report.new_listing = new_listing.is_some();

    if !vnets.is_empty() {
        let keys: Vec<&str> = vnets.iter().map(|v| v.id.key()).collect();
        let ids: Vec<&str> = vnets.iter().map(|v| v.id.as_str()).collect();
        let subs: Vec<String> = vnets.iter().map(|v| v.id.subscription()).collect();
        sqlx::query(
            "INSERT INTO vnets (vnet_key, id, subscription)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&keys)
        .bind(&ids)
        .bind(&subs)
        .execute(&mut *tx)
        .await?;
        let states: Vec<String> = vnets
            .iter()
            .map(|v| serde_json::to_string(v).expect("VNet states serialize"))
            .collect();
        report.new_states = sqlx::query(
            "INSERT INTO vnet_states (fingerprint, vnet_key, state)
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&fps)
        .bind(&keys)
        .bind(&states)
        .execute(&mut *tx)
        .await?
        .rows_affected() as usize;

        let mut by_vnet = load_runs(&mut tx, &keys).await?;
        let mut changed: HashMap<&str, bool> = HashMap::new();
        for (v, fp) in vnets.iter().zip(&fps) {
            let runs = by_vnet.entry(v.id.key().to_string()).or_default();
            let near = match runs.splits(t, fp) {
                Some((first, last)) => {
                    nearest_listings(&mut tx, &v.id.subscription(), first, t, last).await?
                }
                None => (None, None),
            };
            let c = runs.observe(t, fp, near);
            *changed.entry(v.id.key()).or_default() |= c;
        }
        report.stored = changed.values().filter(|c| **c).count();
        report.unchanged = changed.len() - report.stored;
        save_runs(&mut tx, &by_vnet).await?;
        if report.stored > 0 {
            report.seq = feed(&mut tx, &[String::new()]).await?;
        }
    }
    tx.commit().await?;
    Ok(report)
}

/// The listings of `subscription` (those that do not say they lack VNets)
/// nearest `t` inside `(first, last)`, before and after it: the points of
/// a run that a listing at `t` splits.
async fn nearest_listings(
    conn: &mut PgConnection,
    subscription: &str,
    first: Micros,
    t: Micros,
    last: Micros,
) -> sqlx::Result<(Option<Micros>, Option<Micros>)> {
    let ts = |m: Micros| DateTime::from_timestamp_micros(m).expect("listing times are timestamps");
    let (before, after): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT max(taken_at) FILTER (WHERE taken_at < $3), min(taken_at) FILTER (WHERE taken_at > $3)
         FROM topology_listings
         WHERE $1 = ANY(subscriptions) AND partial_reason IS NULL AND taken_at > $2 AND taken_at < $4",
    )
    .bind(subscription)
    .bind(ts(first))
    .bind(ts(t))
    .bind(ts(last))
    .fetch_one(&mut *conn)
    .await?;
    Ok((before.map(micros), after.map(micros)))
}

/// The runs of `keys`, by VNet key.
async fn load_runs(conn: &mut PgConnection, keys: &[&str]) -> sqlx::Result<HashMap<String, Runs>> {
    type Row = (i64, String, String, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, vnet_key, fingerprint, first_at, last_at FROM vnet_runs WHERE vnet_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(&mut *conn)
    .await?;
    let mut by: HashMap<String, Vec<Run>> = HashMap::new();
    for (id, key, fingerprint, first_at, last_at) in rows {
        by.entry(key).or_default().push(Run {
            id: Some(id),
            fingerprint,
            first_at: micros(first_at),
            last_at: micros(last_at),
            dirty: false,
        });
    }
    Ok(by.into_iter().map(|(k, r)| (k, Runs::new(r))).collect())
}

/// Writes back what [`Runs::observe`] changed: deleted runs, updated ends,
/// new runs.
async fn save_runs(conn: &mut PgConnection, by_vnet: &HashMap<String, Runs>) -> sqlx::Result<()> {
    let ts = |m: Micros| DateTime::from_timestamp_micros(m).expect("listing times are timestamps");
    let mut deleted: Vec<i64> = Vec::new();
    let (mut uid, mut ufp, mut ufirst, mut ulast) = (vec![], vec![], vec![], vec![]);
    let (mut ikey, mut ifp, mut ifirst, mut ilast) = (vec![], vec![], vec![], vec![]);
    for (key, runs) in by_vnet.iter().filter(|(_, r)| r.is_dirty()) {
        deleted.extend(&runs.deleted);
        for r in runs.runs.iter().filter(|r| r.dirty) {
            match r.id {
                Some(id) => {
                    uid.push(id);
                    ufp.push(r.fingerprint.clone());
                    ufirst.push(ts(r.first_at));
                    ulast.push(ts(r.last_at));
                }
                None => {
                    ikey.push(key.clone());
                    ifp.push(r.fingerprint.clone());
                    ifirst.push(ts(r.first_at));
                    ilast.push(ts(r.last_at));
                }
            }
        }
    }
    if !deleted.is_empty() {
        sqlx::query("DELETE FROM vnet_runs WHERE id = ANY($1)")
            .bind(&deleted)
            .execute(&mut *conn)
            .await?;
    }
    if !uid.is_empty() {
        sqlx::query(
            "UPDATE vnet_runs r SET fingerprint = u.fp, first_at = u.first_at, last_at = u.last_at, updated_at = now()
             FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::timestamptz[]) AS u(id, fp, first_at, last_at)
             WHERE r.id = u.id",
        )
        .bind(&uid)
        .bind(&ufp)
        .bind(&ufirst)
        .bind(&ulast)
        .execute(&mut *conn)
        .await?;
    }
    if !ikey.is_empty() {
        sqlx::query(
            "INSERT INTO vnet_runs (vnet_key, fingerprint, first_at, last_at)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])",
        )
        .bind(&ikey)
        .bind(&ifp)
        .bind(&ifirst)
        .bind(&ilast)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Every VNet's states with their times, as [`Topology::add`] takes them:
/// each run's state at its first and at its last listing.
pub async fn load_topology(pool: &PgPool) -> anyhow::Result<Topology> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, Doc<VnetState>)> = sqlx::query_as(
        "SELECT r.first_at, r.last_at, s.state FROM vnet_runs r JOIN vnet_states s USING (fingerprint)",
    )
    .fetch_all(pool)
    .await?;
    let mut t = Topology::new();
    for (first, last, Doc(state)) in rows {
        if last != first {
            t.add(micros(last), state.clone());
        }
        t.add(micros(first), state);
    }
    Ok(t)
}

/// A VNet as its latest listing showed it.
#[derive(Debug, Clone)]
pub struct LatestVnet {
    pub state: VnetState,
    /// The first listing of the run of this state.
    pub since: DateTime<Utc>,
    /// The latest listing that showed it.
    pub taken_at: DateTime<Utc>,
}

/// Each VNet (of `subscription`, when given) as its latest listing showed it,
/// by id.
pub async fn latest_vnets(
    pool: &PgPool,
    subscription: Option<&str>,
) -> anyhow::Result<Vec<LatestVnet>> {
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, Doc<VnetState>)> = sqlx::query_as(
        "SELECT DISTINCT ON (r.vnet_key) r.first_at, r.last_at, s.state
         FROM vnet_runs r JOIN vnet_states s USING (fingerprint) JOIN vnets v ON v.vnet_key = r.vnet_key
         WHERE $1::text IS NULL OR v.subscription = $1
         ORDER BY r.vnet_key, r.last_at DESC",
    )
    .bind(subscription)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(since, taken_at, Doc(state))| LatestVnet {
            state,
            since,
            taken_at,
        })
        .collect())
}

/// The latest topology listing of a subscription, for `/v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopologyListingInfo {
    pub taken_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// Why it may lack VNets (a page that never came back); null otherwise.
    pub partial_reason: Option<String>,
}

/// Per subscription: the VNets its latest topology listing showed, and
/// that listing.
pub(crate) async fn status_by_subscription(
    pool: &PgPool,
) -> anyhow::Result<HashMap<String, (i64, TopologyListingInfo)>> {
    type Row = (String, DateTime<Utc>, DateTime<Utc>, Option<String>, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "WITH latest AS (
             SELECT DISTINCT ON (sub) sub, taken_at, recorded_at, partial_reason
             FROM topology_listings, unnest(subscriptions) AS s(sub)
             ORDER BY sub, taken_at DESC, id DESC)
         SELECT l.sub, l.taken_at, l.recorded_at, l.partial_reason,
                (SELECT count(DISTINCT r.vnet_key) FROM vnet_runs r JOIN vnets v USING (vnet_key)
                 WHERE v.subscription = l.sub AND r.first_at <= l.taken_at AND r.last_at >= l.taken_at)
         FROM latest l",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sub, taken_at, recorded_at, partial_reason, n)| {
            (
                sub,
                (
                    n,
                    TopologyListingInfo {
                        taken_at,
                        recorded_at,
                        partial_reason,
                    },
                ),
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: (Option<Micros>, Option<Micros>) = (None, None);

    fn runs(rs: &Runs) -> Vec<(&str, Micros, Micros)> {
        rs.runs
            .iter()
            .map(|r| (r.fingerprint.as_str(), r.first_at, r.last_at))
            .collect()
    }

    #[test]
    fn an_unchanged_vnet_extends_its_run_and_a_repeat_changes_nothing() {
        let mut r = Runs::default();
        assert!(r.observe(100, "a", NONE));
        assert!(r.observe(200, "a", NONE));
        assert!(r.observe(300, "a", NONE));
        assert!(!r.observe(200, "a", NONE), "inside its own run");
        assert!(!r.observe(300, "a", NONE));
        assert_eq!(runs(&r), [("a", 100, 300)]);
        // Before the first: the run reaches back.
        assert!(r.observe(50, "a", NONE));
        assert_eq!(runs(&r), [("a", 50, 300)]);
    }

    #[test]
    fn a_change_starts_a_run_and_one_inside_a_run_splits_it() {
        let mut r = Runs::default();
        for t in [100, 200, 300] {
            r.observe(t, "a", NONE);
        }
        r.observe(400, "b", NONE);
        assert_eq!(runs(&r), [("a", 100, 300), ("b", 400, 400)]);
        // A listing of another state inside the run splits it at the
        // listings nearest it (here only one before it, at 200).
        r.runs.iter_mut().for_each(|x| x.id = Some(x.first_at));
        r.runs.iter_mut().for_each(|x| x.dirty = false);
        assert_eq!(r.splits(250, "c"), Some((100, 300)));
        assert_eq!(r.splits(250, "a"), None);
        assert_eq!(r.splits(350, "c"), None, "not inside a run");
        assert!(r.observe(250, "c", (Some(200), None)));
        assert_eq!(
            runs(&r),
            [
                ("a", 100, 200),
                ("c", 250, 250),
                ("a", 300, 300),
                ("b", 400, 400)
            ]
        );
        // The first half keeps the row; the second is new.
        assert_eq!(r.runs[0].id, Some(100));
        assert_eq!(r.runs[2].id, None);
        assert!(r.deleted.is_empty());
        // Without listings between, the run's ends stay.
        let mut r = Runs::default();
        r.observe(100, "a", NONE);
        r.observe(300, "a", NONE);
        r.observe(200, "b", NONE);
        assert_eq!(
            runs(&r),
            [("a", 100, 100), ("b", 200, 200), ("a", 300, 300)]
        );
        // A listing between two runs of its state joins them (here over a
        // run of the same instant whose state sorts before it).
        let mut r = Runs::default();
        r.observe(100, "c", NONE);
        r.observe(300, "b", NONE);
        r.observe(500, "c", NONE);
        r.runs[1].id = Some(6);
        r.runs[2].id = Some(7);
        assert!(r.observe(300, "c", NONE));
        assert_eq!(runs(&r), [("c", 100, 500)]);
        assert_eq!(r.deleted, [6, 7]);
    }

    #[test]
    fn two_states_at_one_instant_keep_the_one_sorting_last_in_either_order() {
        for order in [["a", "b"], ["b", "a"]] {
            let mut r = Runs::default();
            r.observe(100, "a", NONE);
            for fp in order {
                r.observe(200, fp, NONE);
            }
            assert_eq!(runs(&r), [("a", 100, 100), ("b", 200, 200)], "{order:?}");
        }
    }

    /// Every order of `items`.
    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, first.clone());
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn in_every_order_runs_are_disjoint_and_each_instant_reads_its_state() {
        // What routing reads of the runs: the state of the latest run
        // point at or before an instant. At every listing's instant, it is
        // the state that listing showed, whatever order they came in; and
        // the runs stored are the same.
        let listings = [
            (100, "a"),
            (200, "a"),
            (300, "b"),
            (400, "a"),
            (500, "b"),
            (600, "b"),
        ];
        let orders = permutations(&listings);
        assert_eq!(orders.len(), 720);
        for o in orders {
            let mut r = Runs::default();
            // The listings recorded so far, as `nearest_listings` reads them.
            let mut posted: Vec<Micros> = Vec::new();
            for &(t, fp) in &o {
                posted.push(t);
                let near = match r.splits(t, fp) {
                    Some((first, last)) => (
                        posted.iter().copied().filter(|&p| first < p && p < t).max(),
                        posted.iter().copied().filter(|&p| t < p && p < last).min(),
                    ),
                    None => NONE,
                };
                r.observe(t, fp, near);
            }
            for w in r.runs.windows(2) {
                assert!(w[0].last_at < w[1].first_at, "{o:?}: {:?}", runs(&r));
            }
            for (t, fp) in listings {
                let at = r.runs.iter().rev().find(|x| x.first_at <= t);
                assert_eq!(
                    at.map(|x| x.fingerprint.as_str()),
                    Some(fp),
                    "{o:?} at {t}: {:?}",
                    runs(&r)
                );
            }
            assert_eq!(
                runs(&r),
                [
                    ("a", 100, 200),
                    ("b", 300, 300),
                    ("a", 400, 400),
                    ("b", 500, 600)
                ],
                "the same runs in every order: {o:?}"
            );
            assert_eq!(r.runs.first().map(|x| x.first_at), Some(100));
            assert_eq!(r.runs.last().map(|x| x.last_at), Some(600));
        }
    }
}
