//! Ingest: snapshot pages and Activity Log events become stored evidence,
//! then the claims of every NIC whose evidence changed are recomputed. All in
//! one transaction per call, serialised by an advisory lock.

// Maps and sets of NIC keys (150 characters), fingerprints and claim
// identities: hashed with the index's hasher, not SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use utoipa::ToSchema;

use super::recompute::{
    ClaimChanges, ConflictsOf, EvRow, Stored, derive_meanwhile, feed, horizons_of, last_events,
    load_completes, load_runs, read_inputs, recompute, recompute_all, refresh_conflicts, save_runs,
    write_claims,
};
use super::runs::CompleteSnapshot;
use super::runs::Runs;
use super::states::StateCache;
use super::{micros, to_ts};
use crate::azure::activity::{ActivityChange, ActivityEvent};
use crate::engine::Micros;
use crate::model::{ArmId, NicState};

/// The advisory lock every ingest holds: one writer at a time, across replicas.
const INGEST_LOCK: i64 = 0x1905_1d00;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot {id} was first posted with {field} = {first}, now {now}")]
    SnapshotMismatch {
        id: String,
        field: &'static str,
        first: String,
        now: String,
    },
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

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

/// What an Activity Log batch did.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ActivityReport {
    /// Events stored for the first time.
    pub accepted: usize,
    /// Events already stored (posted before): changed nothing.
    pub duplicates: usize,
    pub claims_inserted: usize,
    pub claims_updated: usize,
    pub claims_deleted: usize,
}

/// Takes the ingest lock for the rest of the transaction.
pub(super) async fn lock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(INGEST_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// Opens an ingest's transaction: takes the ingest lock, the NIC-state
/// cache, and makes sure the claims it will update are there
/// ([`rebuild_if_lost`]).
async fn begin(pool: &PgPool) -> sqlx::Result<(Transaction<'static, Postgres>, Arc<StateCache>)> {
    let (mut tx, cache) = locked(pool).await?;
    rebuild_if_lost(&mut tx, &cache).await?;
    Ok((tx, cache))
}

/// A transaction holding the ingest lock, and the NIC-state cache.
async fn locked(pool: &PgPool) -> sqlx::Result<(Transaction<'static, Postgres>, Arc<StateCache>)> {
    let mut tx = pool.begin().await?;
    lock(&mut tx).await?;
    let cache = StateCache::of(pool, &mut tx).await?;
    Ok((tx, cache))
}

/// NICs recomputed at a time when the claims are rebuilt.
const REBUILD_CHUNK: usize = 5_000;

/// Whether the claims' marker is there: Postgres has not lost them.
async fn claims_intact<'c>(conn: impl sqlx::PgExecutor<'c>) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM claims_intact)")
        .fetch_one(conn)
        .await
}

/// Claims are unlogged (migration 0009): Postgres empties them after a crash,
/// and on a promoted standby, together with their one-row marker
/// `claims_intact`. When the marker is gone, recomputes every NIC's claims
/// from the evidence (and their conflicts; the change feed names every NIC,
/// so replicas reload them) and puts it back. Returns how many NICs were
/// recomputed: 0 when the claims were intact. Call under the ingest lock.
async fn rebuild_if_lost(conn: &mut PgConnection, cache: &StateCache) -> sqlx::Result<usize> {
    if claims_intact(&mut *conn).await? {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    let nics: Vec<String> = sqlx::query_scalar("SELECT nic_key FROM nics ORDER BY nic_key")
        .fetch_all(&mut *conn)
        .await?;
    tracing::warn!(
        nics = nics.len(),
        "the claims were lost (Postgres recovered from a crash, or a standby was promoted); \
         recomputing them from the evidence"
    );
    let claims = recompute_all(conn, &nics, REBUILD_CHUNK, cache).await?;
    sqlx::query("INSERT INTO claims_intact DEFAULT VALUES")
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        nics = nics.len(),
        claims,
        seconds = started.elapsed().as_secs_f64(),
        "claims recomputed"
    );
    Ok(nics.len())
}

/// Recomputes the claims if they were lost ([`rebuild_if_lost`]), in a
/// transaction of its own under the ingest lock. Returns how many NICs were
/// recomputed: 0 when the claims were intact (one query, no lock).
pub async fn rebuild_claims_if_lost(pool: &PgPool) -> sqlx::Result<usize> {
    if claims_intact(pool).await? {
        return Ok(0);
    }
    let (mut tx, cache) = locked(pool).await?;
    let n = rebuild_if_lost(&mut tx, &cache).await?;
    tx.commit().await?;
    Ok(n)
}

/// Widens each subscription's Activity Log reach (`activity_reach`) to the
/// events `rows` (new ones); returns the reach of this batch per
/// subscription.
async fn activity_reach(
    conn: &mut PgConnection,
    rows: &[EvRow],
) -> sqlx::Result<Vec<(String, Micros, Micros)>> {
    let mut by_sub: HashMap<&str, (DateTime<Utc>, DateTime<Utc>)> = HashMap::default();
    for (nic, _, at, _, _) in rows {
        let e = by_sub
            .entry(ArmId::subscription_of_key(nic))
            .or_insert((*at, *at));
        e.0 = e.0.min(*at);
        e.1 = e.1.max(*at);
    }
    if by_sub.is_empty() {
        return Ok(Vec::new());
    }
    let (mut sub, mut lo, mut hi) = (vec![], vec![], vec![]);
    for (s, (a, b)) in &by_sub {
        sub.push(s.to_string());
        lo.push(*a);
        hi.push(*b);
    }
    sqlx::query(
        "INSERT INTO activity_reach (subscription, first_at, last_at)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
         ON CONFLICT (subscription) DO UPDATE
         SET first_at = least(activity_reach.first_at, EXCLUDED.first_at),
             last_at = greatest(activity_reach.last_at, EXCLUDED.last_at)",
    )
    .bind(&sub)
    .bind(&lo)
    .bind(&hi)
    .execute(&mut *conn)
    .await?;
    Ok(by_sub
        .into_iter()
        .map(|(s, (a, b))| (s.to_string(), micros(a), micros(b)))
        .collect())
}

/// Registers NICs (once each; known ones are left as they are).
async fn insert_nics<'a>(
    conn: &mut PgConnection,
    ids: impl Iterator<Item = &'a ArmId>,
) -> sqlx::Result<()> {
    let mut seen = HashSet::default();
    let ids: Vec<&ArmId> = ids.filter(|n| seen.insert(n.key())).collect();
    let keys: Vec<&str> = ids.iter().map(|n| n.key()).collect();
    // Most are known already (an unchanged estate): send only the new.
    let known: HashSet<String> =
        sqlx::query_scalar("SELECT nic_key FROM nics WHERE nic_key = ANY($1)")
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let (mut k, mut id, mut sub) = (vec![], vec![], vec![]);
    for n in ids.into_iter().filter(|n| !known.contains(n.key())) {
        k.push(n.key().to_string());
        id.push(n.as_str().to_string());
        sub.push(n.subscription());
    }
    if k.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO nics (nic_key, id, subscription) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(&k)
    .bind(&id)
    .bind(&sub)
    .execute(conn)
    .await?;
    Ok(())
}

/// Each state's fingerprint: computed before an ingest takes its lock, so
/// that it overlaps another ingest's writes.
fn fingerprints(states: &[&NicState]) -> Vec<String> {
    states.iter().map(|s| s.fingerprint()).collect()
}

/// The states not stored yet (the first of each new fingerprint; `fps`
/// are their [`fingerprints`]), which recompute need not read back, and the
/// rows that store them. Ingests are serialised (advisory lock), so none of
/// these is stored by anyone else before the caller inserts the rows.
async fn new_states<'a>(
    conn: &mut PgConnection,
    states: &[&'a NicState],
    fps: &[String],
) -> sqlx::Result<(Stored<'a>, StateRows)> {
    // Most states were stored before (an unchanged NIC): send only the new.
    let known: HashSet<String> =
        sqlx::query_scalar("SELECT fingerprint FROM nic_states WHERE fingerprint = ANY($1)")
            .bind(fps)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let mut stored = Stored::default();
    let mut rows = StateRows::default();
    for (s, f) in states.iter().zip(fps) {
        if known.contains(f) || stored.contains_key(f) {
            continue;
        }
        stored.insert(f.clone(), *s);
        rows.fp.push(f.clone());
        rows.nic.push(s.id.key().to_string());
        rows.state
            .push(serde_json::to_string(s).expect("states serialize"));
    }
    Ok((stored, rows))
}

/// `nic_states` rows to insert, column by column.
#[derive(Default)]
struct StateRows {
    fp: Vec<String>,
    nic: Vec<String>,
    state: Vec<String>,
}

impl StateRows {
    async fn insert(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.fp.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO nic_states (fingerprint, nic_key, state)
             SELECT f, n, s FROM unnest($1::text[], $2::text[], $3::text[]) AS u(f, n, s)
             ON CONFLICT DO NOTHING",
        )
        .bind(&self.fp)
        .bind(&self.nic)
        .bind(&self.state)
        .execute(conn)
        .await?;
        Ok(())
    }
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
    let row: Option<(DateTime<Utc>, Vec<String>, bool, bool)> = sqlx::query_as(
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
        Some((taken_at, subs, complete, finished)) => {
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
        let mut loaded = load_runs(&mut tx, &keys).await?;
        let last_event = last_events(&mut tx, &keys).await?;
        let t = micros(meta.taken_at);
        let mut changed: Vec<(String, Runs)> = Vec::new();
        let mut index_of: HashMap<String, usize> = HashMap::default();
        // Per listing, in page order.
        let mut deferred = vec![false; page.nics.len()];
        // NICs of a page posted after its snapshot was finished (the page
        // declared the last came first) that the snapshot had not listed
        // yet: its count of NICs, set when it finished, grows by them.
        let mut late_listed = 0;
        for (i, (nic, fp)) in page.nics.iter().zip(&fps).enumerate() {
            let key = nic.id.key().to_string();
            let sub = nic.id.subscription();
            let slot = match index_of.get(&key) {
                Some(&i) => i,
                None => {
                    let mut runs = Runs::new(loaded.remove(&key).unwrap_or_default());
                    runs.materialize(horizons.get(&sub));
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
            let c = completes.get(&sub).map(Vec::as_slice).unwrap_or(&[]);
            runs.observe(t, &meta.id, fp, c);
            runs.settle(
                horizons.get(&sub).map(|h| h.at),
                last_event.get(&key).copied(),
            );
        }
        changed.retain(|(_, r)| r.is_dirty());
        report.changed = changed.len();
        if late_listed > 0 {
            sqlx::query("UPDATE snapshots SET nics = nics + $2 WHERE id = $1")
                .bind(&meta.id)
                .bind(late_listed)
                .execute(&mut *tx)
                .await?;
        }
        let nics: Vec<String> = changed.iter().map(|(k, _)| k.clone()).collect();
        // Claims are derived on another core while this connection writes
        // the new states, the members and the runs; the runs are passed as
        // they are written here, not read back (nor the new states).
        let derived = if nics.is_empty() {
            None
        } else {
            let written = changed
                .iter()
                .map(|(k, r)| (k.clone(), r.runs.clone()))
                .collect();
            let mut inputs = read_inputs(
                &mut tx,
                &nics,
                &stored,
                Some(written),
                &cache,
                Vec::new(),
                true,
            )
            .await?;
            to_cache = inputs.states_to_cache();
            Some(derive_meanwhile(inputs))
        };
        state_rows.insert(&mut tx).await?;
        if !finished {
            // Each listing once; a NIC listed with two states keeps both,
            // for the finish to settle (see `finish`).
            let mut seen = HashSet::default();
            let (mut mk, mut mf, mut md) = (vec![], vec![], vec![]);
            for ((k, fp), d) in keys.iter().zip(&fps).zip(&deferred) {
                if seen.insert((k, fp)) {
                    mk.push(k.clone());
                    mf.push(fp.clone());
                    md.push(*d);
                }
            }
            // One row for the page; the same page again only ANDs its
            // deferred flags into the stored ones.
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
            .bind(&meta.id)
            .bind(crate::model::short_digest(listed.as_bytes()))
            .bind(&mk)
            .bind(&mf)
            .bind(&md)
            .execute(&mut *tx)
            .await?;
        }
        save_runs(&mut tx, &changed).await?;
        if let Some(derived) = derived {
            changes.merge(write_claims(&mut tx, derived.await).await?);
        }
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

async fn effective_meta(conn: &mut PgConnection, id: &str) -> sqlx::Result<SnapshotMeta> {
    let (taken_at, subscriptions, complete): (DateTime<Utc>, Vec<String>, bool) =
        sqlx::query_as("SELECT taken_at, subscriptions, complete FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(SnapshotMeta {
        id: id.to_string(),
        taken_at,
        subscriptions,
        complete,
    })
}

/// Finishes a snapshot posted page by page. Idempotent; an unknown id is `Ok(None)`.
pub async fn finish_snapshot(
    pool: &PgPool,
    id: &str,
) -> Result<Option<(PageReport, ClaimChanges)>, StoreError> {
    let (mut tx, cache) = begin(pool).await?;
    let finished: Option<bool> = sqlx::query_scalar("SELECT finished FROM snapshots WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(finished) = finished else {
        return Ok(None);
    };
    let meta = effective_meta(&mut tx, id).await?;
    let mut changes = ClaimChanges::default();
    let mut report = PageReport {
        snapshot_id: id.to_string(),
        finished: true,
        ..Default::default()
    };
    if !finished {
        (report.absent_nics_affected, report.listed_with_two_states) =
            finish(&mut tx, &meta, &mut changes, &cache).await?;
    }
    let reason: Option<String> =
        sqlx::query_scalar("SELECT partial_reason FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    report.complete = meta.complete;
    report.partial_reason = reason;
    tx.commit().await?;
    report.claims_inserted = changes.inserted;
    report.claims_updated = changes.updated;
    report.claims_deleted = changes.deleted;
    Ok(Some((report, changes)))
}

/// Marks the snapshot finished. When complete, every NIC of its scope that
/// it did not list gets the absence as evidence (live runs end, runs
/// spanning it are split, claims bounded by it recomputed) and its
/// subscriptions' horizons move; observations deferred to live runs are
/// written down where the run does not cover them after all, and a NIC
/// listed with two states is settled on one. Returns how many NICs the
/// absence affected, and how many were listed with two states.
async fn finish(
    conn: &mut PgConnection,
    meta: &SnapshotMeta,
    changes: &mut ClaimChanges,
    cache: &StateCache,
) -> sqlx::Result<(usize, usize)> {
    // The horizons before this snapshot, to know which it moves.
    let before = horizons_of(&load_completes(conn, &meta.subscriptions).await?);
    // The NICs it listed, and its listings: more listings than NICs when
    // a NIC was listed on two pages, or with two states.
    let (nics, listings): (i32, i64) = sqlx::query_as(
        "UPDATE snapshots SET finished = true, finished_at = now(),
                nics = (SELECT count(*) FROM snapshot_members WHERE snapshot_id = $1)
         WHERE id = $1
         RETURNING nics, (SELECT coalesce(sum(cardinality(nic_keys)), 0)
                          FROM snapshot_pages WHERE snapshot_id = $1)",
    )
    .bind(&meta.id)
    .fetch_one(&mut *conn)
    .await?;
    let t = meta.taken_at;
    let tm = micros(t);
    // The finished complete snapshots now, this one included when complete.
    let completes = load_completes(conn, &meta.subscriptions).await?;
    let horizons = horizons_of(&completes);

    // NICs of the scope it did not list: runs it splits, live runs (their
    // claims, live or not, may reach back past it), and other claims whose
    // possible window holds it.
    let absent: Vec<String> = if meta.complete {
        sqlx::query_scalar(
            "SELECT o.nic_key FROM observations o JOIN nics n USING (nic_key)
             WHERE n.subscription = ANY($1)
               AND ((o.first_at < $2 AND o.last_at > $2) OR o.live)
               AND NOT EXISTS (SELECT 1 FROM snapshot_members m WHERE m.snapshot_id = $3 AND m.nic_key = o.nic_key)
             UNION
             SELECT c.nic_key FROM claims c
             WHERE NOT c.live AND c.subscription = ANY($1)
               AND coalesce(upper(c.possible), 'infinity'::timestamptz) > $2 AND c.possible @> $2
               AND NOT EXISTS (SELECT 1 FROM snapshot_members m WHERE m.snapshot_id = $3 AND m.nic_key = c.nic_key)",
        )
        .bind(&meta.subscriptions)
        .bind(t)
        .bind(&meta.id)
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    // Deferred members whose run does not reach this snapshot after all
    // (it was ended meanwhile, or the snapshot ended up partial).
    let (h_sub, h_at): (Vec<&String>, Vec<DateTime<Utc>>) = horizons
        .iter()
        .filter_map(|(s, c)| to_ts(c.at).map(|at| (s, at)))
        .unzip();
    let mut uncovered: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.nic_key, m.fingerprint FROM snapshot_members m JOIN nics n USING (nic_key)
         LEFT JOIN unnest($2::text[], $3::timestamptz[]) AS h(sub, at) ON h.sub = n.subscription
         WHERE m.snapshot_id = $1 AND m.deferred AND NOT EXISTS (
             SELECT 1 FROM observations o
             WHERE hashtextextended(o.nic_key, 0) = hashtextextended(m.nic_key, 0)
               AND o.nic_key = m.nic_key AND o.fingerprint = m.fingerprint AND o.first_at <= $4
               AND (o.last_at >= $4 OR (o.live AND h.at >= $4)))",
    )
    .bind(&meta.id)
    .bind(&h_sub)
    .bind(&h_at)
    .bind(t)
    .fetch_all(&mut *conn)
    .await?;

    // NICs the snapshot listed with two states (updated while it was being
    // listed, on two pages or twice on one): the state whose fingerprint
    // sorts last stands at `taken_at`, as `Runs::observe` keeps it when
    // both reach it, whatever the order in which the pages came.
    let twice: Vec<(String, String)> = if listings == i64::from(nics) {
        Vec::new()
    } else {
        sqlx::query_as(
        "SELECT u.nic_key, max(u.fingerprint COLLATE \"C\")
         FROM snapshot_pages p, unnest(p.nic_keys, p.fingerprints) AS u(nic_key, fingerprint)
         WHERE p.snapshot_id = $1
         GROUP BY u.nic_key HAVING min(u.fingerprint COLLATE \"C\") <> max(u.fingerprint COLLATE \"C\")",
        )
        .bind(&meta.id)
        .fetch_all(&mut *conn)
        .await?
    };
    let listed_twice = twice.len();
    uncovered.extend(twice);

    // NICs it listed inside a run of the same state (a later snapshot had
    // shown them so already) around an Activity Log event: the run's
    // points nearest the event, which bound the claims the event splits,
    // now include this snapshot. Only a snapshot taken after this one can
    // have carried a run past it, so in time order (the common case) there
    // is nothing to look for. A live run reaches the horizon as it was
    // before this snapshot: only a snapshot older than that falls inside.
    let later: bool = meta.complete
        && sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM snapshots WHERE taken_at > $1 AND subscriptions && $2)",
        )
        .bind(t)
        .bind(&meta.subscriptions)
        .fetch_one(&mut *conn)
        .await?;
    let around_events: Vec<String> = if later {
        let late: Vec<&String> = meta
            .subscriptions
            .iter()
            .filter(|s| before.get(*s).is_some_and(|h| h.at > tm))
            .collect();
        sqlx::query_scalar(
            "SELECT DISTINCT o.nic_key FROM observations o JOIN nics n USING (nic_key)
             WHERE n.subscription = ANY($1) AND o.first_at < $2
               AND (o.last_at > $2 OR (o.live AND n.subscription = ANY($3)))
               AND EXISTS (SELECT 1 FROM activity_events e
                           WHERE hashtextextended(e.nic_key, 0) = hashtextextended(o.nic_key, 0)
                             AND e.nic_key = o.nic_key AND e.at > o.first_at
                             AND (e.at < o.last_at OR o.live))",
        )
        .bind(&meta.subscriptions)
        .bind(t)
        .bind(&late)
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };

    let mut affected = 0;
    let mut touched: Vec<String> = absent.clone();
    touched.extend(uncovered.iter().map(|(k, _)| k.clone()));
    touched.extend(around_events);
    touched.sort();
    touched.dedup();
    if !touched.is_empty() {
        let without_this: HashMap<String, Vec<CompleteSnapshot>> = completes
            .iter()
            .map(|(s, v)| {
                (
                    s.clone(),
                    v.iter().filter(|c| c.id != meta.id).cloned().collect(),
                )
            })
            .collect();
        let last_event = last_events(conn, &touched).await?;
        let mut loaded = load_runs(conn, &touched).await?;
        let absent: HashSet<&String> = absent.iter().collect();
        let listed: HashMap<&String, &String> = uncovered.iter().map(|(k, f)| (k, f)).collect();
        let mut dirty: Vec<(String, Runs)> = Vec::new();
        for nic in &touched {
            let sub = ArmId::subscription_of_key(nic);
            let c = completes.get(sub).map(Vec::as_slice).unwrap_or(&[]);
            let mut runs = Runs::new(loaded.remove(nic).unwrap_or_default());
            if absent.contains(nic) {
                // Live until the snapshot before this one, at most.
                runs.materialize(without_this.get(sub).and_then(|v| v.last()));
                runs.absent_at(tm, c);
            } else {
                runs.materialize(c.last());
            }
            if let Some(fp) = listed.get(nic) {
                runs.observe(tm, &meta.id, fp, c);
            }
            runs.settle(c.last().map(|h| h.at), last_event.get(nic).copied());
            if runs.is_dirty() {
                dirty.push((nic.clone(), runs));
            }
        }
        save_runs(conn, &dirty).await?;
        let c = recompute(conn, &touched, &Stored::default(), cache).await?;
        affected = absent.len();
        changes.merge(c);
    }

    // Horizons this snapshot moved: live claims of each subscription now
    // reach it, which can make two of them overlap for the first time.
    if meta.complete {
        let mut moved = false;
        for sub in &meta.subscriptions {
            let (Some(now), old) = (horizons.get(sub), before.get(sub)) else {
                continue;
            };
            if old == Some(now) {
                continue;
            }
            moved = true;
            refresh_conflicts(
                conn,
                ConflictsOf::HorizonMoved {
                    subscription: sub,
                    after: old.map(|o| o.at),
                    upto: now.at,
                },
                &horizons,
            )
            .await?;
            changes.horizons.push((sub.clone(), now.clone()));
        }
        if moved {
            let seq = feed(conn, &[String::new()]).await?;
            changes.merge(ClaimChanges {
                seq,
                ..Default::default()
            });
        }
    }
    sqlx::query("DELETE FROM snapshot_pages WHERE snapshot_id = $1")
        .bind(&meta.id)
        .execute(&mut *conn)
        .await?;
    Ok((affected, listed_twice))
}

/// Stores Activity Log events (each once) and recomputes the NICs they concern.
///
/// The events not stored yet are found first, and recompute reads what else
/// their NICs need before they are written: claims are then derived on other
/// threads while this connection writes the events, their states and the
/// runs they ended.
pub async fn ingest_activity(
    pool: &PgPool,
    events: &[ActivityEvent],
) -> Result<(ActivityReport, ClaimChanges), StoreError> {
    let mut report = ActivityReport::default();
    if events.is_empty() {
        return Ok((report, ClaimChanges::default()));
    }
    // Every NIC an event names must exist in `nics`, writes or deletes alike.
    let mut deleted: Vec<&ArmId> = Vec::new();
    let mut states: Vec<&NicState> = Vec::new();
    for e in events {
        match &e.change {
            ActivityChange::Write { state, .. } => states.push(state),
            ActivityChange::Delete => deleted.push(&e.nic),
        }
    }
    let fps = fingerprints(&states);
    let keys: Vec<&str> = events.iter().map(|e| e.key.as_str()).collect();
    let (mut tx, cache) = begin(pool).await?;
    insert_nics(
        &mut tx,
        states.iter().map(|s| &s.id).chain(deleted.iter().copied()),
    )
    .await?;
    let (stored, state_rows) = new_states(&mut tx, &states, &fps).await?;
    // The events not stored yet, each once (the first of a key repeated in
    // the batch, as an insert would keep it).
    let mut seen: HashSet<String> =
        sqlx::query_scalar("SELECT key FROM activity_events WHERE key = ANY($1)")
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let mut fp_iter = fps.into_iter();
    let mut rows: Vec<EvRow> = Vec::new();
    let mut kind: Vec<&str> = Vec::new();
    let mut corr: Vec<Option<String>> = Vec::new();
    for e in events {
        let (k, created, fp) = match &e.change {
            ActivityChange::Write { created, .. } => ("write", *created, fp_iter.next()),
            ActivityChange::Delete => ("delete", false, None),
        };
        if !seen.insert(e.key.clone()) {
            continue;
        }
        rows.push((e.nic.key().to_string(), e.key.clone(), e.at, created, fp));
        kind.push(k);
        corr.push(e.correlation_id.clone());
    }
    report.accepted = rows.len();
    report.duplicates = events.len() - rows.len();
    let mut nics: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    nics.sort();
    nics.dedup();
    let (mut to_cache, mut derived, mut ended) = (Vec::new(), None, Vec::new());
    if !nics.is_empty() {
        let mut inputs =
            read_inputs(&mut tx, &nics, &stored, None, &cache, rows.clone(), true).await?;
        to_cache = inputs.states_to_cache();
        ended = inputs.end_live_runs_before_events();
        derived = Some(derive_meanwhile(inputs));
    }
    // Meanwhile, the evidence, and how far the Activity Log reaches.
    state_rows.insert(&mut tx).await?;
    let reach = activity_reach(&mut tx, &rows).await?;
    if !rows.is_empty() {
        let (mut nic, mut key, mut at, mut created, mut fp) =
            (vec![], vec![], vec![], vec![], vec![]);
        for (n, k, t, c, f) in rows {
            nic.push(n);
            key.push(k);
            at.push(t);
            created.push(c);
            fp.push(f);
        }
        sqlx::query(
            "INSERT INTO activity_events (key, nic_key, at, kind, created, fingerprint, correlation_id)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::bool[], $6::text[], $7::text[])
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&key)
        .bind(&nic)
        .bind(&at)
        .bind(&kind)
        .bind(&created)
        .bind(&fp)
        .bind(&corr)
        .execute(&mut *tx)
        .await?;
    }
    let mut changes = match derived {
        Some(derived) => {
            save_runs(&mut tx, &ended).await?;
            write_claims(&mut tx, derived.await).await?
        }
        None => ClaimChanges::default(),
    };
    changes.activity = reach;
    tx.commit().await?;
    cache.put_all(to_cache);
    report.claims_inserted = changes.inserted;
    report.claims_updated = changes.updated;
    report.claims_deleted = changes.deleted;
    Ok((report, changes))
}
