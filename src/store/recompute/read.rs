//! What recompute reads before it derives: the NICs' observation runs,
//! Activity Log events and states, their subscriptions' complete
//! snapshots, and their claims as stored. The evidence reads that ingest
//! shares for the evidence it writes itself (runs, complete snapshots,
//! latest events) are here too.

// Maps of NIC keys (150 characters), fingerprints and claim identities:
// hashed with the index's hasher, not SipHash.
use crate::model::hash::FastMap as HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgConnection;

use super::Batch;
use crate::engine::Micros;
use crate::model::{ArmId, NicState};
use crate::store::runs::{CompleteSnapshot, Run, StoredEvent};
use crate::store::states::StateCache;
use crate::store::{Doc, micros, of_nics, of_wanted};

/// NIC states an ingest has just stored, by fingerprint: exactly what
/// `nic_states` holds for them, so they need not be read back.
pub(in crate::store) type Stored<'a> = HashMap<String, &'a NicState>;

/// A stored Activity Log event as recompute reads it (or as an ingest is
/// storing it).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub(in crate::store) struct EventRow {
    pub nic_key: String,
    pub key: String,
    pub at: DateTime<Utc>,
    pub created: bool,
    /// The state's fingerprint: `None` for a delete.
    pub fingerprint: Option<String>,
}

/// A row of `observations`.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    nic_key: String,
    fingerprint: String,
    first_at: DateTime<Utc>,
    first_snapshot: String,
    last_at: DateTime<Utc>,
    last_snapshot: String,
    live: bool,
}

impl RunRow {
    fn into_run(self) -> Run {
        Run {
            id: Some(self.id),
            fingerprint: self.fingerprint,
            first_at: micros(self.first_at),
            first_snapshot: self.first_snapshot,
            last_at: micros(self.last_at),
            last_snapshot: self.last_snapshot,
            live: self.live,
            dirty: false,
        }
    }
}

/// A finished complete snapshot, once per subscription it covers.
#[derive(sqlx::FromRow)]
struct CompleteRow {
    sub: String,
    taken_at: DateTime<Utc>,
    id: String,
}

/// A NIC's latest Activity Log event.
#[derive(sqlx::FromRow)]
struct LastEventRow {
    nic_key: String,
    at: DateTime<Utc>,
}

/// A stored NIC state.
#[derive(sqlx::FromRow)]
struct StateRow {
    fingerprint: String,
    state: Doc<NicState>,
}

/// A stored claim: its id, identity and digest.
#[derive(sqlx::FromRow)]
struct StoredClaimRow {
    id: i64,
    nic_key: String,
    scope: String,
    ip: IpNet,
    possible_start: Option<DateTime<Utc>>,
    digest: String,
}

/// A claim's identity in `claims`: NIC, scope, IP and possible start.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ClaimIdent {
    pub nic: String,
    pub scope: String,
    pub ip: IpNet,
    pub possible_start: Option<DateTime<Utc>>,
}

/// What `claims` holds for a [`ClaimIdent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct StoredClaim {
    pub id: i64,
    pub digest: String,
}

/// Loads the runs of `nics`, keyed by NIC.
pub(in crate::store) async fn load_runs(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<HashMap<String, Vec<Run>>> {
    let mut rows: Vec<RunRow> = sqlx::query_as(concat!(
        "SELECT id, nic_key, fingerprint, first_at, first_snapshot, last_at, last_snapshot, live
         FROM observations WHERE ",
        of_nics!()
    ))
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    of_wanted(&mut rows, nics, |r| &r.nic_key);
    let mut out: HashMap<String, Vec<Run>> = HashMap::default();
    for mut r in rows {
        let nic = std::mem::take(&mut r.nic_key);
        out.entry(nic).or_default().push(r.into_run());
    }
    Ok(out)
}

/// The finished complete snapshots of each subscription, sorted by time.
pub(in crate::store) async fn load_completes(
    conn: &mut PgConnection,
    subscriptions: &[String],
) -> sqlx::Result<HashMap<String, Vec<CompleteSnapshot>>> {
    let rows: Vec<CompleteRow> = sqlx::query_as(
        "SELECT s.sub, taken_at, id FROM snapshots, unnest(subscriptions) AS s(sub)
         WHERE complete AND finished AND subscriptions && $1 AND s.sub = ANY($1)
         ORDER BY taken_at, id",
    )
    .bind(subscriptions)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<String, Vec<CompleteSnapshot>> = subscriptions
        .iter()
        .map(|s| (s.clone(), Vec::new()))
        .collect();
    for r in rows {
        out.entry(r.sub).or_default().push(CompleteSnapshot {
            at: micros(r.taken_at),
            id: r.id,
        });
    }
    Ok(out)
}

/// Each subscription's horizon: its latest finished complete snapshot.
pub(in crate::store) fn horizons_of(
    completes: &HashMap<String, Vec<CompleteSnapshot>>,
) -> HashMap<String, CompleteSnapshot> {
    completes
        .iter()
        .filter_map(|(s, c)| c.last().map(|h| (s.clone(), h.clone())))
        .collect()
}

/// The latest event of each NIC (an event after a run's end keeps the run
/// from being live).
pub(in crate::store) async fn last_events(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<HashMap<String, Micros>> {
    let mut rows: Vec<LastEventRow> = sqlx::query_as(concat!(
        "SELECT nic_key, max(at) AS at FROM activity_events WHERE ",
        of_nics!(),
        " GROUP BY nic_key"
    ))
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    of_wanted(&mut rows, nics, |r| &r.nic_key);
    Ok(rows
        .into_iter()
        .map(|r| (r.nic_key, micros(r.at)))
        .collect())
}

/// Everything recompute reads before it derives claims: the NICs' runs,
/// events and states, their subscriptions' complete snapshots, and their
/// claims as stored. Owned, so claims can be derived on another thread.
pub(super) struct Inputs {
    pub nics: Vec<String>,
    pub completes: HashMap<String, Vec<CompleteSnapshot>>,
    pub horizons: HashMap<String, CompleteSnapshot>,
    pub runs: HashMap<String, Vec<Run>>,
    pub states: HashMap<String, Arc<NicState>>,
    /// The states of `states` that were not cached: read from
    /// `nic_states` or stored by this ingest.
    pub fresh: Vec<(String, Arc<NicState>)>,
    pub events: HashMap<String, Vec<StoredEvent>>,
    pub existing: HashMap<ClaimIdent, StoredClaim>,
}

/// The distinct subscriptions of `nics`, sorted.
fn subscriptions_of(nics: &[String]) -> Vec<String> {
    let mut subs: Vec<&str> = nics.iter().map(|n| ArmId::subscription_of_key(n)).collect();
    subs.sort_unstable();
    subs.dedup();
    subs.into_iter().map(str::to_string).collect()
}

/// Reads what recomputing the NICs of `batch` needs (see [`Batch`] for
/// what the caller hands over instead of having it read back). Their stored
/// claims are read only when `claims_stored` (not while `claims` is being
/// rebuilt from empty).
pub(super) async fn inputs(
    conn: &mut PgConnection,
    cache: &StateCache,
    batch: Batch<'_>,
    claims_stored: bool,
) -> sqlx::Result<Inputs> {
    let Batch {
        nics,
        stored,
        runs,
        events: batch,
    } = batch;
    let completes = load_completes(conn, &subscriptions_of(&nics)).await?;
    let horizons = horizons_of(&completes);
    let runs = match runs {
        Some(r) => r,
        None => load_runs(conn, &nics).await?,
    };

    let mut ev_rows: Vec<EventRow> = sqlx::query_as(concat!(
        "SELECT nic_key, key, at, created, fingerprint FROM activity_events WHERE ",
        of_nics!()
    ))
    .bind(&nics)
    .fetch_all(&mut *conn)
    .await?;
    of_wanted(&mut ev_rows, &nics, |r| &r.nic_key);
    ev_rows.extend(batch);

    // States of runs and events, parsed once per fingerprint; the ones this
    // ingest has just stored are not read back, nor those cached.
    let mut needed: Vec<&str> = runs
        .values()
        .flatten()
        .map(|r| r.fingerprint.as_str())
        .chain(ev_rows.iter().filter_map(|e| e.fingerprint.as_deref()))
        .filter(|f| !stored.contains_key(*f))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let mut states: HashMap<String, Arc<NicState>> = HashMap::default();
    let mut missing: Vec<&str> = Vec::new();
    for f in needed {
        match cache.get(f) {
            Some(s) => {
                states.insert(f.to_string(), s);
            }
            None => missing.push(f),
        }
    }
    let mut fresh: Vec<(String, Arc<NicState>)> = Vec::new();
    if !missing.is_empty() {
        let read: Vec<StateRow> =
            sqlx::query_as("SELECT fingerprint, state FROM nic_states WHERE fingerprint = ANY($1)")
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
        fresh.extend(
            read.into_iter()
                .map(|r| (r.fingerprint, Arc::new(r.state.0))),
        );
    }
    fresh.extend(
        stored
            .iter()
            .map(|(f, s)| (f.clone(), Arc::new((*s).clone()))),
    );
    states.extend(fresh.iter().cloned());

    let mut events: HashMap<String, Vec<StoredEvent>> = HashMap::default();
    for e in ev_rows {
        let state = e.fingerprint.and_then(|f| states.get(&f).cloned());
        events.entry(e.nic_key).or_default().push(StoredEvent {
            key: e.key,
            at: micros(e.at),
            created: e.created,
            state,
        });
    }

    let mut existing: Vec<StoredClaimRow> = Vec::new();
    if claims_stored {
        existing = sqlx::query_as(concat!(
            "SELECT id, nic_key, scope, ip, lower(possible) AS possible_start, digest FROM claims WHERE ",
            of_nics!()
        ))
        .bind(&nics)
        .fetch_all(&mut *conn)
        .await?;
        of_wanted(&mut existing, &nics, |r| &r.nic_key);
    }
    let existing = existing
        .into_iter()
        .map(|r| {
            (
                ClaimIdent {
                    nic: r.nic_key,
                    scope: r.scope,
                    ip: r.ip,
                    possible_start: r.possible_start,
                },
                StoredClaim {
                    id: r.id,
                    digest: r.digest,
                },
            )
        })
        .collect();
    Ok(Inputs {
        nics,
        completes,
        horizons,
        runs,
        states,
        fresh,
        events,
        existing,
    })
}

impl Inputs {
    /// The states these inputs hold that were not cached, to be cached once
    /// the ingest that read them has committed (see [`StateCache`]).
    pub(super) fn states_to_cache(&mut self) -> Vec<(String, Arc<NicState>)> {
        std::mem::take(&mut self.fresh)
    }
}
