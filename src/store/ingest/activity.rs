//! An Activity Log batch stored: each event once, with the states it
//! wrote, how far the subscription's Activity Log reaches, and the NICs the
//! events concern recomputed.

// Maps and sets of NIC keys (150 characters) and event keys: hashed with
// the index's hasher, not SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;

use super::{StoreError, begin, fingerprints, insert_nics, new_states};
use crate::azure::activity::{ActivityChange, ActivityEvent};
use crate::engine::Micros;
use crate::model::{ArmId, NicState};
use crate::store::micros;
use crate::store::recompute::{Batch, ClaimChanges, EventRow, recompute};

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

/// Widens each subscription's Activity Log reach (`activity_reach`) to the
/// events `rows` (new ones); returns the reach of this batch per
/// subscription.
async fn activity_reach(
    conn: &mut PgConnection,
    rows: &[EventRow],
) -> sqlx::Result<Vec<(String, Micros, Micros)>> {
    let mut by_sub: HashMap<&str, (DateTime<Utc>, DateTime<Utc>)> = HashMap::default();
    for r in rows {
        let e = by_sub
            .entry(ArmId::subscription_of_key(&r.nic_key))
            .or_insert((r.at, r.at));
        e.0 = e.0.min(r.at);
        e.1 = e.1.max(r.at);
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
    let mut rows: Vec<EventRow> = Vec::new();
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
        rows.push(EventRow {
            nic_key: e.nic.key().to_string(),
            key: e.key.clone(),
            at: e.at,
            created,
            fingerprint: fp,
        });
        kind.push(k);
        corr.push(e.correlation_id.clone());
    }
    report.accepted = rows.len();
    report.duplicates = events.len() - rows.len();
    let mut nics: Vec<String> = rows.iter().map(|r| r.nic_key.clone()).collect();
    nics.sort();
    nics.dedup();
    // Claims are derived on other threads while this connection writes the
    // events, their states and how far the Activity Log reaches (the runs
    // the events ended are written after).
    let batch = Batch {
        nics,
        stored,
        runs: None,
        events: rows.clone(),
    };
    let recomputed = recompute(&mut tx, &cache, batch, async |conn: &mut PgConnection| {
        state_rows.insert(conn).await?;
        let reach = activity_reach(conn, &rows).await?;
        insert_events(conn, rows, &kind, &corr).await?;
        Ok(reach)
    })
    .await?;
    let mut changes = recomputed.changes;
    changes.activity = recomputed.meanwhile;
    tx.commit().await?;
    cache.put_all(recomputed.states_to_cache);
    report.claims_inserted = changes.inserted;
    report.claims_updated = changes.updated;
    report.claims_deleted = changes.deleted;
    Ok((report, changes))
}

/// Inserts the events `rows` (not stored yet), of kinds `kind` and
/// correlation ids `corr`.
async fn insert_events(
    conn: &mut PgConnection,
    rows: Vec<EventRow>,
    kind: &[&str],
    corr: &[Option<String>],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let (mut nic, mut key, mut at, mut created, mut fp) = (vec![], vec![], vec![], vec![], vec![]);
    for r in rows {
        nic.push(r.nic_key);
        key.push(r.key);
        at.push(r.at);
        created.push(r.created);
        fp.push(r.fingerprint);
    }
    sqlx::query(
        "INSERT INTO activity_events (key, nic_key, at, kind, created, fingerprint, correlation_id)
         SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::bool[], $6::text[], $7::text[])
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&key)
    .bind(&nic)
    .bind(&at)
    .bind(kind)
    .bind(&created)
    .bind(&fp)
    .bind(corr)
    .execute(conn)
    .await?;
    Ok(())
}
