//! A snapshot page stored: the snapshot registered (or checked against
//! its first page), each listed NIC observed in its runs, the page's
//! listings kept for the finish, and the changed NICs recomputed. The last
//! page finishes the snapshot ([`finish`](super::finish)).

// Maps and sets of NIC keys (150 characters) and fingerprints: hashed with
// the index's hasher, not SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use super::finish::finish;
use super::{StoreError, begin, fingerprints, insert_nics, new_states};
use crate::engine::Micros;
use crate::model::NicState;
use crate::store::micros;
use crate::store::recompute::{
    Batch, ClaimChanges, horizons_of, last_events, load_completes, load_runs, recompute, save_runs,
};
use crate::store::runs::{CompleteSnapshot, Run, Runs};

/// What a snapshot is: an instant, the subscriptions it covers, and whether
/// it lists every NIC of them.
#[derive(Debug, Clone)]
pub struct SnapshotMeta {
    pub id: String,
    pub taken_at: DateTime<Utc>,
    /// Lower-cased subscription ids.
    pub subscriptions: Vec<String>,
    pub complete: bool,
}

/// One page of a snapshot.
#[derive(Debug, Clone)]
pub struct SnapshotPage {
    pub meta: SnapshotMeta,
    pub nics: Vec<NicState>,
    /// The snapshot is finished with this page.
    pub last_page: bool,
    /// NIC records of this page the caller could not read. A complete
    /// snapshot with any is downgraded to partial.
    pub rejected: usize,
}

/// What a snapshot page did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct PageReport {
    pub snapshot_id: String,
    /// NICs on the page taken as evidence.
    pub accepted: usize,
    /// Of those, NICs whose stored evidence changed (new state or new run end).
    pub changed: usize,
    /// The snapshot is finished (its last page arrived).
    pub finished: bool,
    /// Whether ipwho holds the snapshot complete (a claimed-complete snapshot
    /// with unreadable NIC records is downgraded to partial).
    pub complete: bool,
    /// Why the snapshot counts as partial, when it does.
    pub partial_reason: Option<String>,
    /// NICs of the snapshot's scope that a finished complete snapshot did not list, whose claims it bounded.
    pub absent_nics_affected: usize,
    /// NICs the finished snapshot listed more than once with different
    /// states (updated while it was being listed). Of each, the state whose
    /// fingerprint sorts last is the one taken at `taken_at`, so that the
    /// order in which the pages arrived never decides.
    pub listed_with_two_states: usize,
    pub claims_inserted: usize,
    pub claims_updated: usize,
    pub claims_deleted: usize,
}

/// Stores one snapshot page (and finishes the snapshot on its last page).
/// Posting the same page again changes nothing.
pub async fn ingest_snapshot_page(
    pool: &PgPool,
    page: &SnapshotPage,
) -> Result<(PageReport, ClaimChanges), StoreError> {
    let states: Vec<&NicState> = page.nics.iter().collect();
    let fps = fingerprints(&states);
    let (mut tx, cache) = begin(pool).await?;
    let mut to_cache = Vec::new();
    let meta = &page.meta;
    let row: Option<StoredSnapshot> = sqlx::query_as(
        "SELECT taken_at, subscriptions, claimed_complete, finished FROM snapshots WHERE id = $1",
    )
    .bind(&meta.id)
    .fetch_optional(&mut *tx)
    .await?;
    let finished = match row {
        None => {
            sqlx::query(
                "INSERT INTO snapshots (id, taken_at, subscriptions, claimed_complete, complete) VALUES ($1, $2, $3, $4, $4)",
            )
                .bind(&meta.id)
                .bind(meta.taken_at)
                .bind(&meta.subscriptions)
                .bind(meta.complete)
                .execute(&mut *tx)
                .await?;
            false
        }
        Some(StoredSnapshot {
            taken_at,
            subscriptions: subs,
            claimed_complete: complete,
            finished,
        }) => {
            let mismatch = |field, first: String, now: String| StoreError::SnapshotMismatch {
                id: meta.id.clone(),
                field,
                first,
                now,
            };
            if taken_at != meta.taken_at {
                return Err(mismatch(
                    "taken_at",
                    taken_at.to_rfc3339(),
                    meta.taken_at.to_rfc3339(),
                ));
            }
            let (mut a, mut b) = (subs.clone(), meta.subscriptions.clone());
            a.sort();
            b.sort();
            if a != b {
                return Err(mismatch(
                    "subscriptions",
                    subs.join(","),
                    meta.subscriptions.join(","),
                ));
            }
            if complete != meta.complete {
                return Err(mismatch(
                    "complete",
                    complete.to_string(),
                    meta.complete.to_string(),
                ));
            }
            finished
        }
    };

    if page.rejected > 0 && meta.complete && !finished {
        sqlx::query(
            "UPDATE snapshots SET complete = false,
                    partial_reason = coalesce(partial_reason, $2)
             WHERE id = $1",
        )
        .bind(&meta.id)
        .bind(format!("{} NIC record(s) could not be read", page.rejected))
        .execute(&mut *tx)
        .await?;
    }
    let mut report = PageReport {
        snapshot_id: meta.id.clone(),
        accepted: page.nics.len(),
        ..Default::default()
    };
    let mut changes = ClaimChanges::default();
    if !page.nics.is_empty() {
        // Whether the snapshot still counts as complete: only then can an
        // unchanged NIC's observation be left to its live run.
        let still_complete: bool =
            sqlx::query_scalar("SELECT complete FROM snapshots WHERE id = $1")
                .bind(&meta.id)
                .fetch_one(&mut *tx)
                .await?;
        insert_nics(&mut tx, states.iter().map(|s| &s.id)).await?;
        let (stored, state_rows) = new_states(&mut tx, &states, &fps).await?;
        let keys: Vec<String> = page.nics.iter().map(|n| n.id.key().to_string()).collect();
        let mut subs: Vec<String> = page.nics.iter().map(|n| n.id.subscription()).collect();
        subs.sort();
        subs.dedup();
        let completes = load_completes(&mut tx, &subs).await?;
        let horizons = horizons_of(&completes);
        let loaded = load_runs(&mut tx, &keys).await?;
        let last_event = last_events(&mut tx, &keys).await?;
        let known = Known {
            completes,
            horizons,
            runs: loaded,
            last_event,
        };
        let Observed {
            changed,
            deferred,
            late_listed,
        } = observe(page, &fps, known, finished, still_complete);
        report.changed = changed.len();
        if late_listed > 0 {
            sqlx::query("UPDATE snapshots SET nics = nics + $2 WHERE id = $1")
                .bind(&meta.id)
                .bind(late_listed)
                .execute(&mut *tx)
                .await?;
        }
        // Claims are derived on another core while this connection writes
        // the new states, the listings and the runs; the runs are passed as
        // they are written here, not read back (nor the new states).
        let batch = Batch {
            nics: changed.iter().map(|(k, _)| k.clone()).collect(),
            stored,
            runs: Some(
                changed
                    .iter()
                    .map(|(k, r)| (k.clone(), r.runs.clone()))
                    .collect(),
            ),
            events: Vec::new(),
        };
        let recomputed = recompute(&mut tx, &cache, batch, async |conn: &mut PgConnection| {
            state_rows.insert(conn).await?;
            if !finished {
                record_listings(conn, &meta.id, &keys, &fps, &deferred).await?;
            }
            save_runs(conn, &changed).await
        })
        .await?;
        to_cache = recomputed.states_to_cache;
        changes.merge(recomputed.changes);
    }
    if page.last_page && !finished {
        let effective = effective_meta(&mut tx, &meta.id).await?;
        (report.absent_nics_affected, report.listed_with_two_states) =
            finish(&mut tx, &effective, &mut changes, &cache).await?;
        report.finished = true;
    } else {
        report.finished = finished;
    }
    let (complete, reason): (bool, Option<String>) =
        sqlx::query_as("SELECT complete, partial_reason FROM snapshots WHERE id = $1")
            .bind(&meta.id)
            .fetch_one(&mut *tx)
            .await?;
    report.complete = complete;
    report.partial_reason = reason;
    tx.commit().await?;
    cache.put_all(to_cache);
    report.claims_inserted = changes.inserted;
    report.claims_updated = changes.updated;
    report.claims_deleted = changes.deleted;
    Ok((report, changes))
}

/// What is stored of the evidence of a page's NICs (and their
/// subscriptions) before the page.
struct Known {
    completes: HashMap<String, Vec<CompleteSnapshot>>,
    horizons: HashMap<String, CompleteSnapshot>,
    runs: HashMap<String, Vec<Run>>,
    last_event: HashMap<String, Micros>,
}

/// How a page's listings change its NICs' runs.
struct Observed {
    /// The NICs whose runs changed, in the order the page first lists them.
    changed: Vec<(String, Runs)>,
    /// Per listing, in page order: left to the NIC's live run (see
    /// [`observe`]).
    deferred: Vec<bool>,
    /// NICs of a page posted after its snapshot was finished (the page
    /// declared the last came first) that the snapshot had not listed
    /// yet: its count of NICs, set when it finished, grows by them.
    late_listed: i32,
}

/// Records each listing of `page` (states `fps`) in its NIC's runs. Pure:
/// `known` is what is stored, `finished` whether the snapshot was finished
/// before this page, `still_complete` whether it still counts as complete.
fn observe(
    page: &SnapshotPage,
    fps: &[String],
    mut known: Known,
    finished: bool,
    still_complete: bool,
) -> Observed {
    let meta = &page.meta;
    let t = micros(meta.taken_at);
    let mut changed: Vec<(String, Runs)> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::default();
    let mut deferred = vec![false; page.nics.len()];
    let mut late_listed = 0;
    for (i, (nic, fp)) in page.nics.iter().zip(fps).enumerate() {
        let key = nic.id.key().to_string();
        let sub = nic.id.subscription();
        let slot = match index_of.get(&key) {
            Some(&i) => i,
            None => {
                let mut runs = Runs::new(known.runs.remove(&key).unwrap_or_default());
                runs.materialize(known.horizons.get(&sub));
                // Every NIC a snapshot lists has a run through its
                // instant, and a finished complete one has ended there
                // the run of every NIC of its scope it did not list: a
                // NIC without one is new to it (exactly so when it is
                // complete; of a partial one, a NIC whose run from other
                // snapshots spans its instant is not counted again).
                if finished && !runs.covers(t) {
                    late_listed += 1;
                }
                changed.push((key.clone(), runs));
                index_of.insert(key.clone(), changed.len() - 1);
                changed.len() - 1
            }
        };
        let runs = &mut changed[slot].1;
        // Listed unchanged after the end of its live run by a snapshot
        // that is to be complete: once finished, the snapshot is the
        // run's new end without a write. Checked again at finish.
        let defer = still_complete
            && !finished
            && runs
                .live()
                .is_some_and(|r| r.fingerprint == *fp && r.last_at < t)
            && !runs.is_dirty();
        deferred[i] = defer;
        if defer {
            continue;
        }
        let c = known.completes.get(&sub).map(Vec::as_slice).unwrap_or(&[]);
        runs.observe(t, &meta.id, fp, c);
        runs.settle(
            known.horizons.get(&sub).map(|h| h.at),
            known.last_event.get(&key).copied(),
        );
    }
    changed.retain(|(_, r)| r.is_dirty());
    Observed {
        changed,
        deferred,
        late_listed,
    }
}

/// A snapshot as first posted.
#[derive(sqlx::FromRow)]
struct StoredSnapshot {
    taken_at: DateTime<Utc>,
    subscriptions: Vec<String>,
    claimed_complete: bool,
    finished: bool,
}

/// Keeps the listings of a page of an unfinished snapshot, for the finish
/// to settle (see [`finish`]): each listing once, and whether it was
/// deferred to the NIC's live run (`deferred`, per listing of `keys` and
/// `fps`). A NIC listed with two states keeps both.
async fn record_listings(
    conn: &mut PgConnection,
    snapshot_id: &str,
    keys: &[String],
    fps: &[String],
    deferred: &[bool],
) -> sqlx::Result<()> {
    let mut seen = HashSet::default();
    let (mut mk, mut mf, mut md) = (vec![], vec![], vec![]);
    for ((k, fp), d) in keys.iter().zip(fps).zip(deferred) {
        if seen.insert((k, fp)) {
            mk.push(k.clone());
            mf.push(fp.clone());
            md.push(*d);
        }
    }
    // One row for the page; the same page again only ANDs its deferred
    // flags into the stored ones.
    let mut listed = String::new();
    for (k, f) in mk.iter().zip(&mf) {
        listed.extend([k.as_str(), "\0", f.as_str(), "\0"]);
    }
    sqlx::query(
        "INSERT INTO snapshot_pages (snapshot_id, digest, nic_keys, fingerprints, deferred)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (snapshot_id, digest) DO UPDATE
         SET deferred = ARRAY(
             SELECT a AND b FROM unnest(snapshot_pages.deferred, EXCLUDED.deferred)
                                 WITH ORDINALITY AS u(a, b, i) ORDER BY i)",
    )
    .bind(snapshot_id)
    .bind(crate::model::short_digest(listed.as_bytes()))
    .bind(&mk)
    .bind(&mf)
    .bind(&md)
    .execute(conn)
    .await?;
    Ok(())
}

/// A snapshot as ipwho holds it (complete or downgraded to partial).
#[derive(sqlx::FromRow)]
struct EffectiveSnapshot {
    taken_at: DateTime<Utc>,
    subscriptions: Vec<String>,
    complete: bool,
}

pub(super) async fn effective_meta(
    conn: &mut PgConnection,
    id: &str,
) -> sqlx::Result<SnapshotMeta> {
    let s: EffectiveSnapshot =
        sqlx::query_as("SELECT taken_at, subscriptions, complete FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(SnapshotMeta {
        id: id.to_string(),
        taken_at: s.taken_at,
        subscriptions: s.subscriptions,
        complete: s.complete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ArmId;

    const SUB: &str = "00000000-0000-0000-0000-0000000000cc";

    fn nic(n: u32, name: &str) -> NicState {
        let id = format!(
            "/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic{n}"
        );
        NicState {
            id: ArmId::parse(&id).unwrap(),
            name: name.into(),
            mac: None,
            vm: None,
            ips: Vec::new(),
        }
    }

    fn page(nics: Vec<NicState>) -> SnapshotPage {
        SnapshotPage {
            meta: SnapshotMeta {
                id: "s30".into(),
                taken_at: DateTime::from_timestamp(30, 0).unwrap(),
                subscriptions: vec![SUB.into()],
                complete: true,
            },
            nics,
            last_page: false,
            rejected: 0,
        }
    }

    fn known(runs: Vec<(String, Run)>) -> Known {
        let mut k = Known {
            completes: HashMap::default(),
            horizons: HashMap::default(),
            runs: HashMap::default(),
            last_event: HashMap::default(),
        };
        for (nic, r) in runs {
            k.runs.entry(nic).or_default().push(r);
        }
        k
    }

    fn live_run(fp: &str) -> Run {
        Run {
            id: Some(1),
            fingerprint: fp.into(),
            first_at: 10_000_000,
            first_snapshot: "s10".into(),
            last_at: 20_000_000,
            last_snapshot: "s20".into(),
            live: true,
            dirty: false,
        }
    }

    #[test]
    fn an_unchanged_nic_is_left_to_its_live_run_and_a_new_one_gets_a_run() {
        let (a, b) = (nic(1, "a"), nic(2, "b"));
        let fps = vec![a.fingerprint(), b.fingerprint()];
        let p = page(vec![a.clone(), b.clone()]);
        let k = known(vec![(a.id.key().to_string(), live_run(&fps[0]))]);
        let o = observe(&p, &fps, k, false, true);
        assert_eq!(o.deferred, vec![true, false]);
        assert_eq!(o.late_listed, 0);
        assert_eq!(o.changed.len(), 1, "only the new NIC's runs changed");
        let (key, runs) = &o.changed[0];
        assert_eq!(key, b.id.key());
        assert_eq!(runs.runs.len(), 1);
        let r = &runs.runs[0];
        assert_eq!(
            (r.first_at, r.last_at, r.id),
            (30_000_000, 30_000_000, None)
        );
        assert_eq!(r.first_snapshot, "s30");
    }

    #[test]
    fn a_snapshot_that_is_partial_now_defers_nothing() {
        let a = nic(1, "a");
        let fps = vec![a.fingerprint()];
        let k = known(vec![(a.id.key().to_string(), live_run(&fps[0]))]);
        let o = observe(&page(vec![a]), &fps, k, false, false);
        assert_eq!(o.deferred, vec![false]);
        assert_eq!(o.changed.len(), 1, "the run is extended and written");
        assert_eq!(o.changed[0].1.runs[0].last_at, 30_000_000);
    }

    #[test]
    fn a_nic_new_to_a_finished_snapshot_counts_as_listed_late_once() {
        let a = nic(1, "a");
        let fps = vec![a.fingerprint(), a.fingerprint()];
        let o = observe(&page(vec![a.clone(), a]), &fps, known(vec![]), true, true);
        assert_eq!(o.late_listed, 1, "listed twice, counted once");
        assert_eq!(o.deferred, vec![false, false]);
        assert_eq!(o.changed.len(), 1);
    }
}
