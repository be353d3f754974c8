//! Recomputing the claims of a set of NICs from all of their stored
//! evidence, and writing back only what changed: [`recompute`], one call
//! inside the ingest's transaction. Its steps, in order:
//!
//! 1. [`read`]: the NICs' runs, events and states, their subscriptions'
//!    complete snapshots, and their claims as stored;
//! 2. new Activity Log events end the live runs they follow
//!    (`Inputs::end_live_runs_before_events`);
//! 3. [`derive`]: the engine's claims, compared with the stored ones by
//!    digest, on another thread while the caller's connection writes the
//!    evidence it brought (the `meanwhile` of [`recompute`]);
//! 4. [`write`]: the runs step 2 ended, then the claims' deletes, updates
//!    and inserts;
//! 5. [`conflicts`]: the written claims checked against everyone's;
//! 6. [`feed`]: one change-feed entry naming the NICs whose claims changed.
//!
//! [`recompute_all`] rebuilds every claim the same way, a chunk of NICs at
//! a time; [`horizons_moved`] checks the live claims a finished complete
//! snapshot extended (steps 5 and 6 alone).

mod conflicts;
mod derive;
mod feed;
mod read;
mod write;

#[cfg(test)]
mod tests;

// Maps of NIC keys (150 characters): hashed with the index's hasher, not
// SipHash.
use crate::model::hash::FastMap as HashMap;
use std::sync::Arc;

use sqlx::PgConnection;

use self::conflicts::{ConflictsOf, refresh_conflicts};
use self::derive::{Derived, derive, derive_meanwhile};
use self::write::write_claims;
use super::runs::{CompleteSnapshot, Run};
use super::states::StateCache;
use crate::engine::{Claim, Micros};
use crate::model::NicState;

use self::feed::HORIZON_MOVED;
// The evidence reads and the runs' write that ingest shares for the
// evidence it stores itself, and the feed entry other writers append.
pub(super) use self::feed::feed;
pub(super) use self::read::{
    EventRow, Stored, horizons_of, last_events, load_completes, load_runs,
};
pub(super) use self::write::save_runs;

/// The new claims of every recomputed NIC (an empty list when a NIC has none
/// any more), for updating the in-memory index after commit.
#[derive(Debug, Default)]
pub struct ClaimChanges {
    pub by_nic: HashMap<String, Vec<Claim>>,
    pub inserted: usize,
    pub updated: usize,
    pub deleted: usize,
    /// The change-feed sequence numbers this ingest wrote (first, last).
    pub seq: Option<(i64, i64)>,
    /// Subscriptions whose horizon (latest finished complete snapshot) this
    /// ingest moved: live claims of theirs extend to it.
    pub horizons: Vec<(String, CompleteSnapshot)>,
    /// How far this ingest's Activity Log events reach, per subscription
    /// (earliest, latest).
    pub activity: Vec<(String, Micros, Micros)>,
}

impl ClaimChanges {
    pub fn merge(&mut self, other: ClaimChanges) {
        self.by_nic.extend(other.by_nic);
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.horizons.extend(other.horizons);
        self.activity.extend(other.activity);
        self.seq = match (self.seq, other.seq) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
    }

    /// Whether any claim was inserted, updated or deleted.
    fn wrote(&self) -> bool {
        self.inserted + self.updated + self.deleted > 0
    }
}

/// The NICs to recompute, and what of their evidence the caller hands over
/// rather than have it read back.
pub(super) struct Batch<'a> {
    pub nics: Vec<String>,
    /// States the caller stores in this transaction (not stored yet when
    /// recompute reads).
    pub stored: Stored<'a>,
    /// The NICs' runs exactly as the caller writes them (or is writing
    /// them); `None`: read them.
    pub runs: Option<HashMap<String, Vec<Run>>>,
    /// Events of these NICs that the caller is storing in this transaction
    /// and that are not stored yet (each once).
    pub events: Vec<EventRow>,
}

impl Batch<'_> {
    /// `nics`, whose evidence is all stored.
    pub(super) fn stored(nics: Vec<String>) -> Self {
        Batch {
            nics,
            stored: Stored::default(),
            runs: None,
            events: Vec::new(),
        }
    }
}

/// What [`recompute`] did.
pub(super) struct Recomputed<T> {
    pub changes: ClaimChanges,
    /// NIC states read from `nic_states` or stored by this ingest, to be
    /// cached once it has committed (see [`StateCache`]).
    pub states_to_cache: Vec<(String, Arc<NicState>)>,
    /// What the caller's `meanwhile` returned.
    pub meanwhile: T,
}

/// Recomputes the claims of the NICs of `batch` from all their evidence
/// and writes the difference to `claims` and `conflicts`, with an entry in
/// the change feed. `meanwhile` writes the evidence the caller brought: it
/// runs on `conn` while the claims are derived on another thread, and is
/// finished before any claim is written.
pub(super) async fn recompute<T>(
    conn: &mut PgConnection,
    cache: &StateCache,
    batch: Batch<'_>,
    meanwhile: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>,
) -> sqlx::Result<Recomputed<T>> {
    if batch.nics.is_empty() {
        return Ok(Recomputed {
            changes: ClaimChanges::default(),
            states_to_cache: Vec::new(),
            meanwhile: meanwhile(conn).await?,
        });
    }
    let new_events = !batch.events.is_empty();
    let mut inputs = read::inputs(conn, cache, batch, true).await?;
    let states_to_cache = inputs.states_to_cache();
    let ended = if new_events {
        inputs.end_live_runs_before_events()
    } else {
        Vec::new()
    };
    let derived = derive_meanwhile(inputs);
    let meanwhile = meanwhile(conn).await?;
    save_runs(conn, &ended).await?;
    let changes = write_checked(conn, derived.await).await?;
    Ok(Recomputed {
        changes,
        states_to_cache,
        meanwhile,
    })
}

/// Writes what [`derive`] found to `claims`, then checks the written claims
/// for conflicts and appends their NICs to the change feed.
async fn write_checked(conn: &mut PgConnection, mut d: Derived) -> sqlx::Result<ClaimChanges> {
    write_claims(conn, &mut d).await?;
    let Derived {
        nics,
        horizons,
        mut changes,
        checked,
        ..
    } = d;
    if changes.wrote() {
        let rows = ConflictsOf::Rows {
            nics: &nics,
            rows: checked,
        };
        refresh_conflicts(conn, rows, &horizons).await?;
        changes.seq = feed(conn, &feed::changed_nics(&changes)).await?;
    }
    Ok(changes)
}

/// Computes the claims of every NIC in `nics` into an emptied `claims`
/// table, `chunk` NICs at a time (none of their claims is read, there are
/// none), and their conflicts. Returns how many claims were written.
pub(super) async fn recompute_all(
    conn: &mut PgConnection,
    nics: &[String],
    chunk: usize,
    cache: &StateCache,
) -> sqlx::Result<usize> {
    sqlx::query("DELETE FROM claims")
        .execute(&mut *conn)
        .await?;
    let mut written = 0;
    let mut analyzed = 0;
    for nics in nics.chunks(chunk) {
        let inputs = read::inputs(conn, cache, Batch::stored(nics.to_vec()), false).await?;
        written += write_checked(conn, derive(inputs)).await?.inserted;
        // The table fills inside one transaction, where autovacuum cannot
        // see it: its statistics are refreshed here as its size doubles, so
        // that the conflict check keeps probing it by IP.
        if written >= 2 * analyzed.max(chunk) {
            sqlx::query("ANALYZE claims").execute(&mut *conn).await?;
            analyzed = written;
        }
    }
    Ok(written)
}

/// A subscription's horizon that a finished complete snapshot moved: from
/// `before` (none before its first) to `now`.
pub(super) struct MovedHorizon<'a> {
    pub subscription: &'a str,
    pub before: Option<&'a CompleteSnapshot>,
    pub now: &'a CompleteSnapshot,
}

/// Live claims of each subscription of `moved` now reach its new horizon,
/// which can make two of them overlap for the first time: checks those,
/// and appends one "horizon moved" entry to the change feed. `horizons`
/// are every subscription's horizon now.
pub(super) async fn horizons_moved(
    conn: &mut PgConnection,
    moved: &[MovedHorizon<'_>],
    horizons: &HashMap<String, CompleteSnapshot>,
) -> sqlx::Result<ClaimChanges> {
    let mut changes = ClaimChanges::default();
    for m in moved {
        let of = ConflictsOf::HorizonMoved {
            subscription: m.subscription,
            after: m.before.map(|o| o.at),
            upto: m.now.at,
        };
        refresh_conflicts(conn, of, horizons).await?;
        changes
            .horizons
            .push((m.subscription.to_string(), m.now.clone()));
    }
    if !moved.is_empty() {
        changes.seq = feed(conn, &[HORIZON_MOVED.to_string()]).await?;
    }
    Ok(changes)
}
