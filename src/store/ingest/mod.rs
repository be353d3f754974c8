//! Ingest: snapshot pages and Activity Log events become stored evidence,
//! then the claims of every NIC whose evidence changed are recomputed. All in
//! one transaction per call, serialised by an advisory lock.
//!
//! This file opens the transaction (the lock, the state cache, claims
//! rebuilt if Postgres lost them) and registers NICs and states; a snapshot
//! page is stored in [`snapshot`], a snapshot finished in [`finish`], an
//! Activity Log batch in [`activity`].

mod activity;
mod finish;
mod snapshot;

pub use activity::{ActivityReport, ingest_activity};
pub use finish::finish_snapshot;
pub use snapshot::{PageReport, SnapshotMeta, SnapshotPage, ingest_snapshot_page};

// Sets of NIC keys (150 characters) and fingerprints: hashed with the
// index's hasher, not SipHash.
use crate::model::hash::FastSet as HashSet;

use std::sync::Arc;

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::recompute::{Stored, recompute_all};
use super::states::StateCache;
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
