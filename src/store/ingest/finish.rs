//! A snapshot finished: when complete, the NICs of its scope it did not
//! list get the absence as evidence, listings deferred to live runs are
//! written down where the run does not cover them after all, NICs listed
//! with two states are settled on one, the affected NICs are recomputed,
//! and the live claims of the subscriptions whose horizon it moved are
//! checked for conflicts.

// Maps and sets of NIC keys (150 characters): hashed with the index's
// hasher, not SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::snapshot::{PageReport, SnapshotMeta, effective_meta};
use super::{StoreError, begin};
use crate::model::ArmId;
use crate::store::recompute::{
    Batch, ClaimChanges, MovedHorizon, horizons_moved, horizons_of, last_events, load_completes,
    load_runs, recompute, save_runs,
};
use crate::store::runs::{CompleteSnapshot, Runs};
use crate::store::states::StateCache;
use crate::store::{micros, to_ts};

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

/// A finished snapshot's count of NICs, and of its pages' listings.
#[derive(sqlx::FromRow)]
struct ListingCounts {
    nics: i32,
    listings: i64,
}

/// A NIC a snapshot listed, with the state it listed.
#[derive(sqlx::FromRow)]
struct Listing {
    nic_key: String,
    fingerprint: String,
}

/// Marks the snapshot finished. When complete, every NIC of its scope that
/// it did not list gets the absence as evidence (live runs end, runs
/// spanning it are split, claims bounded by it recomputed) and its
/// subscriptions' horizons move; observations deferred to live runs are
/// written down where the run does not cover them after all, and a NIC
/// listed with two states is settled on one. Returns how many NICs the
/// absence affected, and how many were listed with two states.
pub(super) async fn finish(
    conn: &mut PgConnection,
    meta: &SnapshotMeta,
    changes: &mut ClaimChanges,
    cache: &StateCache,
) -> sqlx::Result<(usize, usize)> {
    // The horizons before this snapshot, to know which it moves.
    let before = horizons_of(&load_completes(conn, &meta.subscriptions).await?);
    // The NICs it listed, and its listings: more listings than NICs when
    // a NIC was listed on two pages, or with two states.
    let counts: ListingCounts = sqlx::query_as(
        "UPDATE snapshots SET finished = true, finished_at = now(),
                nics = (SELECT count(*) FROM snapshot_members WHERE snapshot_id = $1)
         WHERE id = $1
         RETURNING nics, (SELECT coalesce(sum(cardinality(nic_keys)), 0)
                          FROM snapshot_pages WHERE snapshot_id = $1) AS listings",
    )
    .bind(&meta.id)
    .fetch_one(&mut *conn)
    .await?;
    let tm = micros(meta.taken_at);
    // The finished complete snapshots now, this one included when complete.
    let completes = load_completes(conn, &meta.subscriptions).await?;
    let horizons = horizons_of(&completes);

    // The NICs whose evidence finishing it changes: those it did not list,
    // listings to write down after all, and runs around events.
    let absent = absent_nics(conn, meta).await?;
    let mut uncovered = uncovered_listings(conn, meta, &horizons).await?;
    let twice = if counts.listings == i64::from(counts.nics) {
        Vec::new()
    } else {
        listed_with_two_states(conn, meta).await?
    };
    let listed_twice = twice.len();
    uncovered.extend(twice);
    let around_events = listed_around_events(conn, meta, &before).await?;

    let mut affected = 0;
    let mut touched: Vec<String> = absent.clone();
    touched.extend(uncovered.iter().map(|l| l.nic_key.clone()));
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
        let listed: HashMap<&String, &String> = uncovered
            .iter()
            .map(|l| (&l.nic_key, &l.fingerprint))
            .collect();
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
        affected = absent.len();
        let recomputed = recompute(conn, cache, Batch::stored(touched), async |_| Ok(())).await?;
        changes.merge(recomputed.changes);
    }

    // Horizons this snapshot moved: live claims of each subscription now
    // reach it, which can make two of them overlap for the first time.
    if meta.complete {
        let moved: Vec<MovedHorizon> = meta
            .subscriptions
            .iter()
            .filter_map(|sub| {
                let now = horizons.get(sub)?;
                let before = before.get(sub);
                (before != Some(now)).then_some(MovedHorizon {
                    subscription: sub,
                    before,
                    now,
                })
            })
            .collect();
        changes.merge(horizons_moved(conn, &moved, &horizons).await?);
    }
    sqlx::query("DELETE FROM snapshot_pages WHERE snapshot_id = $1")
        .bind(&meta.id)
        .execute(&mut *conn)
        .await?;
    Ok((affected, listed_twice))
}

/// NICs of the scope of complete snapshot `meta` that it did not list:
/// runs it splits, live runs (their claims, live or not, may reach back
/// past it), and other claims whose possible window holds it. None when
/// it is partial.
async fn absent_nics(conn: &mut PgConnection, meta: &SnapshotMeta) -> sqlx::Result<Vec<String>> {
    if !meta.complete {
        return Ok(Vec::new());
    }
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
    .bind(meta.taken_at)
    .bind(&meta.id)
    .fetch_all(&mut *conn)
    .await
}

/// Members of `meta` deferred to their live run whose run does not reach
/// it after all (it was ended meanwhile, or the snapshot ended up
/// partial). `horizons` are every subscription's now.
async fn uncovered_listings(
    conn: &mut PgConnection,
    meta: &SnapshotMeta,
    horizons: &HashMap<String, CompleteSnapshot>,
) -> sqlx::Result<Vec<Listing>> {
    let (h_sub, h_at): (Vec<&String>, Vec<DateTime<Utc>>) = horizons
        .iter()
        .filter_map(|(s, c)| to_ts(c.at).map(|at| (s, at)))
        .unzip();
    sqlx::query_as(
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
    .bind(meta.taken_at)
    .fetch_all(&mut *conn)
    .await
}

/// NICs `meta` listed with two states (updated while it was being listed,
/// on two pages or twice on one), each with the state whose fingerprint
/// sorts last: that one stands at `taken_at`, as `Runs::observe` keeps it
/// when both reach it, whatever the order in which the pages came.
async fn listed_with_two_states(
    conn: &mut PgConnection,
    meta: &SnapshotMeta,
) -> sqlx::Result<Vec<Listing>> {
    sqlx::query_as(
        "SELECT u.nic_key, max(u.fingerprint COLLATE \"C\") AS fingerprint
         FROM snapshot_pages p, unnest(p.nic_keys, p.fingerprints) AS u(nic_key, fingerprint)
         WHERE p.snapshot_id = $1
         GROUP BY u.nic_key HAVING min(u.fingerprint COLLATE \"C\") <> max(u.fingerprint COLLATE \"C\")",
    )
    .bind(&meta.id)
    .fetch_all(&mut *conn)
    .await
}

/// NICs complete snapshot `meta` listed inside a run of the same state (a
/// later snapshot had shown them so already) around an Activity Log
/// event: the run's points nearest the event, which bound the claims the
/// event splits, now include this snapshot. Only a snapshot taken after
/// this one can have carried a run past it, so in time order (the common
/// case) there is nothing to look for. A live run reaches the horizon as
/// it was `before` this snapshot: only a snapshot older than that falls
/// inside.
async fn listed_around_events(
    conn: &mut PgConnection,
    meta: &SnapshotMeta,
    before: &HashMap<String, CompleteSnapshot>,
) -> sqlx::Result<Vec<String>> {
    let t = meta.taken_at;
    let later: bool = meta.complete
        && sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM snapshots WHERE taken_at > $1 AND subscriptions && $2)",
        )
        .bind(t)
        .bind(&meta.subscriptions)
        .fetch_one(&mut *conn)
        .await?;
    if !later {
        return Ok(Vec::new());
    }
    let tm = micros(t);
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
    .await
}
