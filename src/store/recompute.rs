//! Recomputing the claims of a set of NICs from all of their stored
//! evidence, and writing back only what changed.

// Maps and sets of NIC keys (150 characters), fingerprints and claim
// identities: hashed with the index's hasher, not SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection};

use super::Doc;

use super::runs::{CompleteSnapshot, Run, Runs, StoredEvent, assemble_evidence};
use super::states::StateCache;
use super::{micros, of_nics, of_wanted, to_ts};
use crate::engine::{Claim, EvidenceKind, Micros, NEG_INF, POS_INF, Window, derive_claims};
use crate::model::{ArmId, NicState};

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
}

/// Loads the runs of `nics`, keyed by NIC.
pub(super) async fn load_runs(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<HashMap<String, Vec<Run>>> {
    type Row = (
        i64,
        String,
        String,
        DateTime<Utc>,
        String,
        DateTime<Utc>,
        String,
        bool,
    );
    let mut rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT id, nic_key, fingerprint, first_at, first_snapshot, last_at, last_snapshot, live
         FROM observations WHERE ",
        of_nics!()
    ))
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    of_wanted(&mut rows, nics, |r| &r.1);
    let mut out: HashMap<String, Vec<Run>> = HashMap::default();
    for (id, nic, fingerprint, first_at, first_snapshot, last_at, last_snapshot, live) in rows {
        out.entry(nic).or_default().push(Run {
            id: Some(id),
            fingerprint,
            first_at: micros(first_at),
            first_snapshot,
            last_at: micros(last_at),
            last_snapshot,
            live,
            dirty: false,
        });
    }
    Ok(out)
}

/// Writes back changed runs: deletes, updates of loaded runs, inserts of new ones.
pub(super) async fn save_runs(
    conn: &mut PgConnection,
    nic: &[(String, super::runs::Runs)],
) -> sqlx::Result<()> {
    let mut del: Vec<i64> = Vec::new();
    let (mut u_id, mut u_fa, mut u_fs, mut u_la, mut u_ls, mut u_live) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut i_nic, mut i_fp, mut i_fa, mut i_fs, mut i_la, mut i_ls, mut i_live) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for (key, runs) in nic {
        del.extend(&runs.deleted);
        for r in runs.runs.iter().filter(|r| r.dirty) {
            match r.id {
                Some(id) => {
                    u_id.push(id);
                    u_fa.push(to_ts(r.first_at));
                    u_fs.push(r.first_snapshot.clone());
                    u_la.push(to_ts(r.last_at));
                    u_ls.push(r.last_snapshot.clone());
                    u_live.push(r.live);
                }
                None => {
                    i_nic.push(key.clone());
                    i_fp.push(r.fingerprint.clone());
                    i_fa.push(to_ts(r.first_at));
                    i_fs.push(r.first_snapshot.clone());
                    i_la.push(to_ts(r.last_at));
                    i_ls.push(r.last_snapshot.clone());
                    i_live.push(r.live);
                }
            }
        }
    }
    if !del.is_empty() {
        sqlx::query("DELETE FROM observations WHERE id = ANY($1)")
            .bind(&del)
            .execute(&mut *conn)
            .await?;
    }
    if !u_id.is_empty() {
        sqlx::query(
            "UPDATE observations o SET first_at = u.fa, first_snapshot = u.fs, last_at = u.la, last_snapshot = u.ls,
                    live = u.live, updated_at = now()
             FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::text[], $6::bool[])
                  AS u(id, fa, fs, la, ls, live)
             WHERE o.id = u.id",
        )
        .bind(&u_id)
        .bind(&u_fa)
        .bind(&u_fs)
        .bind(&u_la)
        .bind(&u_ls)
        .bind(&u_live)
        .execute(&mut *conn)
        .await?;
    }
    if !i_nic.is_empty() {
        sqlx::query(
            "INSERT INTO observations (nic_key, fingerprint, first_at, first_snapshot, last_at, last_snapshot, live)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[], $6::text[], $7::bool[])",
        )
        .bind(&i_nic)
        .bind(&i_fp)
        .bind(&i_fa)
        .bind(&i_fs)
        .bind(&i_la)
        .bind(&i_ls)
        .bind(&i_live)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The finished complete snapshots of each subscription, sorted by time.
pub(super) async fn load_completes(
    conn: &mut PgConnection,
    subscriptions: &[String],
) -> sqlx::Result<HashMap<String, Vec<CompleteSnapshot>>> {
    let rows: Vec<(String, DateTime<Utc>, String)> = sqlx::query_as(
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
    for (sub, at, id) in rows {
        out.entry(sub)
            .or_default()
            .push(CompleteSnapshot { at: micros(at), id });
    }
    Ok(out)
}

/// Each subscription's horizon: its latest finished complete snapshot.
pub(super) fn horizons_of(
    completes: &HashMap<String, Vec<CompleteSnapshot>>,
) -> HashMap<String, CompleteSnapshot> {
    completes
        .iter()
        .filter_map(|(s, c)| c.last().map(|h| (s.clone(), h.clone())))
        .collect()
}

/// The latest event of each NIC (an event after a run's end keeps the run
/// from being live).
pub(super) async fn last_events(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<HashMap<String, Micros>> {
    let mut rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(concat!(
        "SELECT nic_key, max(at) FROM activity_events WHERE ",
        of_nics!(),
        " GROUP BY nic_key"
    ))
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    of_wanted(&mut rows, nics, |r| &r.0);
    Ok(rows.into_iter().map(|(n, t)| (n, micros(t))).collect())
}

/// NIC states an ingest has just stored, by fingerprint: exactly what
/// `nic_states` holds for them, so they need not be read back.
pub(super) type Stored<'a> = HashMap<String, &'a NicState>;

/// A claim's identity in `claims`: NIC, scope, IP and possible start.
type Ident = (String, String, IpNet, Option<DateTime<Utc>>);

/// A stored claim's id, identity and digest.
type Existing = (i64, String, String, IpNet, Option<DateTime<Utc>>, String);

/// Everything recompute reads before it derives claims: the NICs' runs,
/// events and states, their subscriptions' complete snapshots, and their
/// claims as stored. Owned, so claims can be derived on another thread.
pub(super) struct Inputs {
    nics: Vec<String>,
    completes: HashMap<String, Vec<CompleteSnapshot>>,
    horizons: HashMap<String, CompleteSnapshot>,
    runs: HashMap<String, Vec<Run>>,
    states: HashMap<String, Arc<NicState>>,
    /// The states of `states` that were not cached: read from
    /// `nic_states` or stored by this ingest.
    fresh: Vec<(String, Arc<NicState>)>,
    events: HashMap<String, Vec<StoredEvent>>,
    existing: HashMap<Ident, (i64, String)>,
}

/// A stored Activity Log event as recompute reads it: NIC key, event key,
/// time, `created`, and the state's fingerprint (`None` for a delete).
pub(super) type EvRow = (String, String, DateTime<Utc>, bool, Option<String>);

/// Reads what recomputing `nics` needs. `runs`, when given, are the NICs'
/// runs exactly as the caller has written (or is writing) them, so they are
/// not read back. `batch` are events of these NICs that the caller is
/// storing in this transaction and that are not stored yet (each once).
pub(super) async fn read_inputs(
    conn: &mut PgConnection,
    nics: &[String],
    stored: &Stored<'_>,
    runs: Option<HashMap<String, Vec<Run>>>,
    cache: &StateCache,
    batch: Vec<EvRow>,
    claims_stored: bool,
) -> sqlx::Result<Inputs> {
    let mut sub_list: Vec<&str> = nics.iter().map(|n| ArmId::subscription_of_key(n)).collect();
    sub_list.sort_unstable();
    sub_list.dedup();
    let sub_list: Vec<String> = sub_list.into_iter().map(str::to_string).collect();
    let completes = load_completes(conn, &sub_list).await?;
    let horizons = horizons_of(&completes);
    let runs = match runs {
        Some(r) => r,
        None => load_runs(conn, nics).await?,
    };

    let mut ev_rows: Vec<EvRow> = sqlx::query_as(concat!(
        "SELECT nic_key, key, at, created, fingerprint FROM activity_events WHERE ",
        of_nics!()
    ))
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    of_wanted(&mut ev_rows, nics, |r| &r.0);
    ev_rows.extend(batch);

    // States of runs and events, parsed once per fingerprint; the ones this
    // ingest has just stored are not read back, nor those cached.
    let mut needed: Vec<&str> = runs
        .values()
        .flatten()
        .map(|r| r.fingerprint.as_str())
        .chain(ev_rows.iter().filter_map(|e| e.4.as_deref()))
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
        let read = sqlx::query_as::<_, (String, Doc<NicState>)>(
            "SELECT fingerprint, state FROM nic_states WHERE fingerprint = ANY($1)",
        )
        .bind(&missing)
        .fetch_all(&mut *conn)
        .await?;
        fresh.extend(read.into_iter().map(|(f, s)| (f, Arc::new(s.0))));
    }
    fresh.extend(
        stored
            .iter()
            .map(|(f, s)| (f.clone(), Arc::new((*s).clone()))),
    );
    states.extend(fresh.iter().cloned());

    let mut events: HashMap<String, Vec<StoredEvent>> = HashMap::default();
    for (nic, key, at, created, fp) in ev_rows {
        let state = fp.and_then(|f| states.get(&f).cloned());
        events.entry(nic).or_default().push(StoredEvent {
            key,
            at: micros(at),
            created,
            state,
        });
    }

    let mut existing: Vec<Existing> = Vec::new();
    if claims_stored {
        existing = sqlx::query_as(concat!(
            "SELECT id, nic_key, scope, ip, lower(possible), digest FROM claims WHERE ",
            of_nics!()
        ))
        .bind(nics)
        .fetch_all(&mut *conn)
        .await?;
        of_wanted(&mut existing, nics, |r| &r.1);
    }
    let existing = existing
        .into_iter()
        .map(|(id, n, s, ip, lo, d)| ((n, s, ip, lo), (id, d)))
        .collect();
    Ok(Inputs {
        nics: nics.to_vec(),
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

    /// A live run with an event after its end is live no more: settles the
    /// runs of every such NIC (in these inputs, as [`write_claims`]'s caller
    /// then writes them) and returns those that changed, to be saved. Its
    /// end (the horizon) is then written down, so that later snapshots
    /// extend it explicitly.
    pub(super) fn end_live_runs_before_events(&mut self) -> Vec<(String, Runs)> {
        let mut dirty = Vec::new();
        for (nic, runs) in &mut self.runs {
            let events = self.events.get(nic).map(Vec::as_slice).unwrap_or(&[]);
            let ended = runs
                .iter()
                .any(|r| r.live && events.iter().any(|e| e.at > r.last_at));
            if !ended {
                continue;
            }
            let h = self.horizons.get(ArmId::subscription_of_key(nic));
            let mut settled = Runs::new(std::mem::take(runs));
            settled.materialize(h);
            settled.settle(h.map(|h| h.at), events.iter().map(|e| e.at).max());
            runs.clone_from(&settled.runs);
            if settled.is_dirty() {
                dirty.push((nic.clone(), settled));
            }
        }
        dirty
    }
}

/// The claims derived from [`Inputs`], and how `claims` must change to hold
/// them.
pub(super) struct Derived {
    nics: Vec<String>,
    horizons: HashMap<String, CompleteSnapshot>,
    changes: ClaimChanges,
    del: Vec<i64>,
    /// The updates' and inserts' bind parameters, encoded here (on the
    /// deriving thread) rather than on the writing connection's.
    upd: Option<Encoded>,
    ins: Option<Encoded>,
    /// The claims as the conflict check needs them (ids of new ones filled
    /// in after their insert: `new_rows[k]` is the row of the `k`-th
    /// inserted claim).
    xs: Vec<CRow>,
    new_rows: Vec<usize>,
}

/// Derives the claims of every NIC of `inputs` and compares them with the
/// stored ones. Pure CPU work: NICs are independent, so a large batch is
/// split in two halves derived on two threads.
fn derive(inputs: Inputs) -> Derived {
    /// Below this many NICs, one thread.
    const SPLIT_AT: usize = 256;
    let Inputs {
        nics,
        completes,
        horizons,
        runs,
        states,
        events,
        existing,
        ..
    } = inputs;
    let cx = Context {
        completes: &completes,
        horizons: &horizons,
        states: &states,
        events: &events,
    };
    let part = if nics.len() < SPLIT_AT {
        cx.derive(&nics, runs, existing)
    } else {
        let (a, b) = nics.split_at(nics.len() / 2);
        let in_b: HashSet<&str> = b.iter().map(String::as_str).collect();
        let (runs_b, runs_a): (HashMap<_, _>, HashMap<_, _>) = runs
            .into_iter()
            .partition(|(n, _)| in_b.contains(n.as_str()));
        let (existing_b, existing_a): (HashMap<_, _>, HashMap<_, _>) = existing
            .into_iter()
            .partition(|(ident, _)| in_b.contains(ident.0.as_str()));
        std::thread::scope(|s| {
            let other = s.spawn(|| cx.derive(b, runs_b, existing_b));
            let mut part = cx.derive(a, runs_a, existing_a);
            part.append(
                other
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e)),
            );
            part
        })
    };
    let Part {
        by_nic,
        del,
        upd,
        ins,
        xs,
        new_rows,
    } = part;
    let changes = ClaimChanges {
        by_nic,
        deleted: del.len(),
        updated: upd.id.len(),
        inserted: ins.nic.len(),
        ..Default::default()
    };
    Derived {
        nics,
        horizons,
        changes,
        del,
        upd: (!upd.id.is_empty()).then(|| upd.encode_update()),
        ins: (!ins.nic.is_empty()).then(|| ins.encode_insert()),
        xs,
        new_rows,
    }
}

/// What [`derive`] reads and never changes.
struct Context<'a> {
    completes: &'a HashMap<String, Vec<CompleteSnapshot>>,
    horizons: &'a HashMap<String, CompleteSnapshot>,
    states: &'a HashMap<String, Arc<NicState>>,
    events: &'a HashMap<String, Vec<StoredEvent>>,
}

/// What deriving some NICs found: their changed claims, and how `claims`
/// must change (as in [`Derived`]).
#[derive(Default)]
struct Part {
    by_nic: HashMap<String, Vec<Claim>>,
    del: Vec<i64>,
    upd: ClaimRows,
    ins: ClaimRows,
    xs: Vec<CRow>,
    new_rows: Vec<usize>,
}

impl Part {
    /// Appends what other NICs found (inserts after this part's, so that
    /// `new_rows` still follows the order of `ins`).
    fn append(&mut self, other: Part) {
        let offset = self.xs.len();
        self.by_nic.extend(other.by_nic);
        self.del.extend(other.del);
        self.upd.append(other.upd);
        self.ins.append(other.ins);
        self.xs.extend(other.xs);
        self.new_rows
            .extend(other.new_rows.into_iter().map(|r| r + offset));
    }
}

impl Context<'_> {
    /// Derives the claims of `nics`, given their runs and stored claims.
    fn derive(
        &self,
        nics: &[String],
        mut runs: HashMap<String, Vec<Run>>,
        mut existing: HashMap<Ident, (i64, String)>,
    ) -> Part {
        let state_of = |fp: &str| self.states.get(fp);
        let empty = Vec::new();
        let mut unchanged: HashSet<String> = HashSet::default();
        let mut part = Part::default();
        // Each claim is serialized to compare its digest with the stored
        // one; most are unchanged, so into one buffer, copied only when not.
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        for nic in nics {
            let sub = ArmId::subscription_of_key(nic);
            let mut nic_runs = Runs::new(runs.remove(nic).unwrap_or_default());
            nic_runs.materialize(self.horizons.get(sub));
            let live_end = nic_runs.live().map(|r| r.last_at);
            let evidence = assemble_evidence(
                &nic_runs.runs,
                state_of,
                self.events.get(nic).unwrap_or(&empty),
                self.completes.get(sub).map(Vec::as_slice).unwrap_or(&[]),
            );
            let mut claims = derive_claims(&evidence);
            for c in &mut claims {
                c.live = c.is_open()
                    && c.last.kind == EvidenceKind::Snapshot
                    && live_end == Some(c.last.at);
            }
            let mut nic_changed = false;
            for c in &claims {
                buf.clear();
                serde_json::to_writer(&mut buf, c).expect("claims serialize");
                let digest = crate::model::short_digest(&buf);
                let detail = || String::from_utf8(buf.clone()).expect("JSON is UTF-8");
                let ident: Ident = (
                    c.key.nic.to_string(),
                    c.key.scope.to_string(),
                    c.key.ip,
                    to_ts(c.possible.start),
                );
                let mut row = CRow {
                    id: 0,
                    nic: c.key.nic.to_string(),
                    scope: c.key.scope.to_string(),
                    ip: c.key.ip,
                    certain: at_horizon(c.certain, c.live, self.horizons.get(sub)),
                };
                match existing.remove(&ident) {
                    Some((id, d)) if d == digest => row.id = id,
                    Some((id, _)) => {
                        nic_changed = true;
                        part.upd.push(Some(id), c, sub, digest, detail());
                        row.id = id;
                    }
                    None => {
                        nic_changed = true;
                        part.ins.push(None, c, sub, digest, detail());
                        part.new_rows.push(part.xs.len());
                    }
                }
                part.xs.push(row);
            }
            part.by_nic.insert(nic.clone(), claims);
            if !nic_changed {
                unchanged.insert(nic.clone());
            }
        }
        // NICs that lost a claim changed too.
        for (n, ..) in existing.keys() {
            unchanged.remove(n);
        }
        part.by_nic.retain(|n, _| !unchanged.contains(n));
        part.del = existing.values().map(|(id, _)| *id).collect();
        part
    }
}

/// Starts [`derive`] on a blocking thread, so that the caller's connection
/// can write meanwhile; the result is awaited (a panic there is resumed).
pub(super) fn derive_meanwhile(inputs: Inputs) -> impl Future<Output = Derived> {
    let task = tokio::task::spawn_blocking(move || derive(inputs));
    async move {
        task.await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }
}

/// Recomputes the claims of `nics` from all their evidence and writes the
/// difference to `claims` and `conflicts`.
pub(super) async fn recompute(
    conn: &mut PgConnection,
    nics: &[String],
    stored: &Stored<'_>,
    cache: &StateCache,
) -> sqlx::Result<ClaimChanges> {
    if nics.is_empty() {
        return Ok(ClaimChanges::default());
    }
    let inputs = read_inputs(conn, nics, stored, None, cache, Vec::new(), true).await?;
    write_claims(conn, derive(inputs)).await
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
        let inputs = read_inputs(
            conn,
            nics,
            &Stored::default(),
            None,
            cache,
            Vec::new(),
            false,
        )
        .await?;
        written += write_claims(conn, derive(inputs)).await?.inserted;
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

/// Writes what [`derive`] found to `claims`, then checks the written claims
/// for conflicts and appends their NICs to the change feed.
pub(super) async fn write_claims(
    conn: &mut PgConnection,
    d: Derived,
) -> sqlx::Result<ClaimChanges> {
    let Derived {
        nics,
        horizons,
        mut changes,
        del,
        upd,
        ins,
        mut xs,
        new_rows,
    } = d;
    if !del.is_empty() {
        sqlx::query("DELETE FROM claims WHERE id = ANY($1)")
            .bind(&del)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(upd) = upd {
        sqlx::query_with(
            "UPDATE claims c SET possible = tstzrange(u.plo, u.phi, '[)'), certain = tstzrange(u.clo, u.chi, '[)'),
                    live = u.live, digest = u.dig, detail = u.det, updated_at = now()
             FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[],
                         $6::bool[], $7::text[], $8::text[])
                  AS u(id, plo, phi, clo, chi, live, dig, det)
             WHERE c.id = u.id",
            upd.args.map_err(sqlx::Error::Encode)?,
        )
        .execute(&mut *conn)
        .await?;
    }
    if let Some(ins) = ins {
        // Ids drawn first, so nothing need be returned and matched up: one
        // block of the sequence, reserved by moving the sequence past it
        // (one call, where a `nextval` per claim took 3 microseconds each).
        // Only ingest inserts claims, and ingests are serialised (advisory
        // lock), so nothing draws from the sequence in between.
        let n = ins.rows as i64;
        let last: i64 = sqlx::query_scalar(
            "SELECT setval(s, nextval(s) + $1 - 1) FROM pg_get_serial_sequence('claims', 'id') AS s",
        )
        .bind(n)
        .fetch_one(&mut *conn)
        .await?;
        let ids: Vec<i64> = (last - n + 1..=last).collect();
        // The ids are the last parameter, added to what derive encoded.
        let mut args = ins.args.map_err(sqlx::Error::Encode)?;
        args.add(&ids).map_err(sqlx::Error::Encode)?;
        sqlx::query_with(
            "INSERT INTO claims (id, nic_key, scope, ip, subscription, possible, certain, live, digest, detail)
             SELECT id, n, s, ip::inet, sub, tstzrange(plo, phi, '[)'), tstzrange(clo, chi, '[)'), live, dig, det
             FROM unnest($12::bigint[], $1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                         $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::bool[], $10::text[], $11::text[])
                  AS u(id, n, s, ip, sub, plo, phi, clo, chi, live, dig, det)",
            args,
        )
        .execute(&mut *conn)
        .await?;
        for (&i, id) in new_rows.iter().zip(ids) {
            xs[i].id = id;
        }
    }
    if changes.inserted + changes.updated + changes.deleted > 0 {
        refresh_conflicts(
            conn,
            ConflictsOf::Rows {
                nics: &nics,
                rows: xs,
            },
            &horizons,
        )
        .await?;
        let changed: Vec<String> = changes.by_nic.keys().cloned().collect();
        changes.seq = feed(conn, &changed).await?;
    }
    Ok(changes)
}

/// Appends one entry listing `nics` to the change feed and notifies
/// followers; returns its sequence number (as the range the ingest wrote).
/// `""` stands for "a horizon moved" (followers reload the horizons).
pub(super) async fn feed(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<Option<(i64, i64)>> {
    if nics.is_empty() {
        return Ok(None);
    }
    let seq: i64 =
        sqlx::query_scalar("INSERT INTO claim_changes (nic_keys) VALUES ($1) RETURNING seq")
            .bind(nics)
            .fetch_one(&mut *conn)
            .await?;
    sqlx::query("SELECT pg_notify('ipwho_claims', $1)")
        .bind(seq.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(Some((seq, seq)))
}

/// Claim rows to insert or update, column by column.
#[derive(Default)]
struct ClaimRows {
    id: Vec<i64>,
    nic: Vec<String>,
    scope: Vec<String>,
    ip: Vec<String>,
    sub: Vec<String>,
    plo: Vec<Option<DateTime<Utc>>>,
    phi: Vec<Option<DateTime<Utc>>>,
    clo: Vec<Option<DateTime<Utc>>>,
    chi: Vec<Option<DateTime<Utc>>>,
    live: Vec<bool>,
    dig: Vec<String>,
    det: Vec<String>,
}

/// Bind parameters encoded ahead of their statement, and how many rows they hold.
pub(super) struct Encoded {
    rows: usize,
    args: Result<PgArguments, sqlx::error::BoxDynError>,
}

impl ClaimRows {
    fn append(&mut self, mut other: ClaimRows) {
        self.id.append(&mut other.id);
        self.nic.append(&mut other.nic);
        self.scope.append(&mut other.scope);
        self.ip.append(&mut other.ip);
        self.sub.append(&mut other.sub);
        self.plo.append(&mut other.plo);
        self.phi.append(&mut other.phi);
        self.clo.append(&mut other.clo);
        self.chi.append(&mut other.chi);
        self.live.append(&mut other.live);
        self.dig.append(&mut other.dig);
        self.det.append(&mut other.det);
    }

    /// The parameters of the insert, ids excepted (drawn when it is written).
    fn encode_insert(self) -> Encoded {
        let mut a = PgArguments::default();
        a.reserve(12, self.wire_size());
        let args = (|| {
            a.add(&self.nic)?;
            a.add(&self.scope)?;
            a.add(&self.ip)?;
            a.add(&self.sub)?;
            self.add_common(&mut a)?;
            Ok(a)
        })();
        Encoded {
            rows: self.nic.len(),
            args,
        }
    }

    /// The parameters of the update.
    fn encode_update(self) -> Encoded {
        let mut a = PgArguments::default();
        a.reserve(8, self.wire_size());
        let args = (|| {
            a.add(&self.id)?;
            self.add_common(&mut a)?;
            Ok(a)
        })();
        Encoded {
            rows: self.id.len(),
            args,
        }
    }

    fn add_common(&self, a: &mut PgArguments) -> Result<(), sqlx::error::BoxDynError> {
        a.add(&self.plo)?;
        a.add(&self.phi)?;
        a.add(&self.clo)?;
        a.add(&self.chi)?;
        a.add(&self.live)?;
        a.add(&self.dig)?;
        a.add(&self.det)?;
        Ok(())
    }

    /// About the bytes the encoded parameters take (so the buffer is
    /// allocated once).
    fn wire_size(&self) -> usize {
        let text = |v: &[String]| v.iter().map(|s| s.len() + 4).sum::<usize>();
        let rows = self.plo.len();
        text(&self.nic)
            + text(&self.scope)
            + text(&self.ip)
            + text(&self.sub)
            + text(&self.dig)
            + text(&self.det)
            + rows * (8 + 4 * 12 + 5 + 2 * 8)
            + 12 * 64
    }

    fn push(&mut self, id: Option<i64>, c: &Claim, sub: &str, digest: String, detail: String) {
        match id {
            Some(id) => self.id.push(id),
            None => {
                self.nic.push(c.key.nic.to_string());
                self.scope.push(c.key.scope.to_string());
                self.ip.push(c.key.ip.to_string());
                self.sub.push(sub.to_string());
            }
        }
        self.plo.push(to_ts(c.possible.start));
        self.phi.push(to_ts(c.possible.end));
        self.clo.push(to_ts(c.certain.start));
        self.chi.push(to_ts(c.certain.end));
        self.live.push(c.live);
        self.dig.push(digest);
        self.det.push(detail);
    }
}

/// Which claims to check for conflicts.
pub(super) enum ConflictsOf<'a> {
    /// Every claim of these NICs, as just written (their old conflicts are
    /// dropped first).
    Rows { nics: &'a [String], rows: Vec<CRow> },
    /// Claims of a subscription whose certain window starts in
    /// `(after, upto]`: the only ones a live claim can newly overlap when
    /// the subscription's horizon moves from `after` to `upto` (a live
    /// claim's window grows from its old end, past `after`, to `upto`).
    HorizonMoved {
        subscription: &'a str,
        after: Option<Micros>,
        upto: Micros,
    },
}

/// A claim as the conflict check needs it.
#[derive(Clone, Debug)]
pub(super) struct CRow {
    id: i64,
    nic: String,
    scope: String,
    ip: IpNet,
    certain: Window,
}

type CDbRow = (
    i64,
    String,
    String,
    IpNet,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
    String,
);

const CROW_COLUMNS: &str =
    "id, nic_key, scope, ip, lower(certain), upper(certain), live, subscription";

/// A claim's certain window as lookups read it: a live claim's reaches its
/// subscription's horizon (as [`Claim::extend_to`] does in the index).
fn at_horizon(certain: Window, live: bool, horizon: Option<&CompleteSnapshot>) -> Window {
    match horizon {
        Some(h) if live => Window {
            end: certain.end.max(h.at.saturating_add(1)),
            ..certain
        },
        _ => certain,
    }
}

fn crow(r: CDbRow, horizons: &HashMap<String, CompleteSnapshot>) -> CRow {
    let (id, nic, scope, ip, lo, hi, live, sub) = r;
    let stored = Window {
        start: lo.map_or(NEG_INF, micros),
        end: hi.map_or(POS_INF, micros),
    };
    CRow {
        id,
        nic,
        scope,
        ip,
        certain: at_horizon(stored, live, horizons.get(&sub)),
    }
}

fn is_prefix(ip: &IpNet) -> bool {
    ip.prefix_len() < ip.max_prefix_len()
}

/// Finds two NICs' certain windows overlapping on overlapping IPs in one
/// scope (live claims read at their horizon) and records them. Candidates
/// come from IP equality and the few prefix claims, so a claim on
/// an IP nobody else held costs one index probe.
pub(super) async fn refresh_conflicts(
    conn: &mut PgConnection,
    of: ConflictsOf<'_>,
    horizons: &HashMap<String, CompleteSnapshot>,
) -> sqlx::Result<()> {
    // `own`: NICs all of whose claims are among `xs`.
    let (xs, own): (Vec<CRow>, &[String]) = match of {
        ConflictsOf::Rows { nics, rows } => {
            sqlx::query("DELETE FROM conflicts WHERE nic_a = ANY($1) OR nic_b = ANY($1)")
                .bind(nics)
                .execute(&mut *conn)
                .await?;
            (rows, nics)
        }
        ConflictsOf::HorizonMoved {
            subscription,
            after,
            upto,
        } => {
            // Only a live claim whose window the move extends can newly
            // overlap anything: one whose stored end is at or before the
            // new horizon (lookups read it as ending there). When there is
            // none (a first snapshot, whose claims start at the horizon
            // itself and were checked as they were written), nothing moved.
            // Newest first (by the index on start): live claims are recent.
            let grows: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM claims
                 WHERE subscription = $1 AND lower(certain) < $2 AND live AND upper(certain) <= $2
                 ORDER BY lower(certain) DESC LIMIT 1)",
            )
            .bind(subscription)
            .bind(to_ts(upto))
            .fetch_one(&mut *conn)
            .await?;
            if !grows {
                return Ok(());
            }
            let moved = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CROW_COLUMNS} FROM claims
                 WHERE subscription = $1 AND lower(certain) > coalesce($2, '-infinity') AND lower(certain) <= $3"
            )))
            .bind(subscription)
            .bind(after.and_then(to_ts))
            .bind(to_ts(upto))
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| crow(r, horizons))
            .collect();
            (moved, &[])
        }
    };
    if xs.is_empty() {
        return Ok(());
    }

    // Candidates: the same IP, prefixes in the same scopes, and
    // what lies inside the checked prefixes. A claim on the same IP is read
    // only if its certain window may meet one checked on that IP: it
    // starts before the latest end and (unless live, whose end is read at
    // its horizon) ends after the earliest start.
    let mut windows: HashMap<IpNet, Window> = HashMap::default();
    for x in &xs {
        windows
            .entry(x.ip)
            .and_modify(|w| {
                w.start = w.start.min(x.certain.start);
                w.end = w.end.max(x.certain.end);
            })
            .or_insert(x.certain);
    }
    let mut ips: Vec<(IpNet, Window)> = windows.into_iter().collect();
    ips.sort_unstable_by_key(|(ip, _)| *ip);
    let mut scopes: Vec<&str> = xs.iter().map(|x| x.scope.as_str()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    // In chunks, an index probe per IP (the subquery is not flattened, so
    // whatever the planner's estimates, no plan scans the whole table).
    // The claims of `own` are not read back (`NOT IN` a subquery is hashed
    // even in a generic plan, where `<> ALL($2)` would compare every key).
    let mut same: Vec<CDbRow> = Vec::new();
    for chunk in ips.chunks(5_000) {
        let ip: Vec<IpNet> = chunk.iter().map(|(ip, _)| *ip).collect();
        let lo: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|(_, w)| to_ts(w.start)).collect();
        let hi: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|(_, w)| to_ts(w.end)).collect();
        same.extend(
            sqlx::query_as::<_, CDbRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {CROW_COLUMNS}
                 FROM unnest($1::inet[], $3::timestamptz[], $4::timestamptz[]) AS u(checked, lo, hi)
                 CROSS JOIN LATERAL (
                     SELECT id, nic_key, scope, ip, certain, live, subscription FROM claims
                     WHERE ip = u.checked
                       AND coalesce(lower(certain), '-infinity') < coalesce(u.hi, 'infinity')
                       AND (live OR coalesce(upper(certain), 'infinity') > coalesce(u.lo, '-infinity'))
                     OFFSET 0
                 ) c
                 WHERE nic_key NOT IN (SELECT unnest($2::text[]))"
            )))
            .bind(&ip)
            .bind(own)
            .bind(&lo)
            .bind(&hi)
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    let mut prefixes: Vec<CDbRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CROW_COLUMNS} FROM claims
         WHERE masklen(ip) < CASE WHEN family(ip) = 4 THEN 32 ELSE 128 END AND scope = ANY($1)"
    )))
    .bind(&scopes)
    .fetch_all(&mut *conn)
    .await?;
    for x in xs.iter().filter(|x| is_prefix(&x.ip)) {
        let inside: Vec<CDbRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CROW_COLUMNS} FROM claims WHERE scope = $1 AND ip <<= $2"
        )))
        .bind(&x.scope)
        .bind(x.ip)
        .fetch_all(&mut *conn)
        .await?;
        prefixes.extend(inside);
    }
    let same: Vec<CRow> = same.into_iter().map(|r| crow(r, horizons)).collect();
    // The claims of `own` were not read back: they are the rows in hand.
    let in_hand: &[CRow] = if own.is_empty() { &[] } else { &xs };
    let mut by_key: HashMap<(&str, IpNet), Vec<&CRow>> = HashMap::default();
    for y in same.iter().chain(in_hand) {
        by_key.entry((y.scope.as_str(), y.ip)).or_default().push(y);
    }
    let prefixes: Vec<CRow> = prefixes.into_iter().map(|r| crow(r, horizons)).collect();

    let mut seen: HashSet<(i64, i64)> = HashSet::default();
    let (mut ida, mut idb, mut scope, mut ip, mut lo, mut hi) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for x in &xs {
        let exact = by_key
            .get(&(x.scope.as_str(), x.ip))
            .into_iter()
            .flatten()
            .copied();
        for y in exact.chain(prefixes.iter()) {
            if y.nic == x.nic
                || y.scope != x.scope
                || !crate::engine::ip_overlaps(&x.ip, &y.ip)
                || !x.certain.overlaps(&y.certain)
            {
                continue;
            }
            let (a, b) = if x.nic < y.nic { (x, y) } else { (y, x) };
            if !seen.insert((a.id, b.id)) {
                continue;
            }
            ida.push(a.id);
            idb.push(b.id);
            scope.push(x.scope.clone());
            ip.push(if x.ip.prefix_len() >= y.ip.prefix_len() {
                x.ip
            } else {
                y.ip
            });
            lo.push(to_ts(a.certain.start.max(b.certain.start)));
            hi.push(to_ts(a.certain.end.min(b.certain.end)));
        }
    }
    if ida.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO conflicts (scope, ip, nic_a, nic_b, overlap, detail)
         SELECT u.scope, u.ip, a.nic_key, b.nic_key, tstzrange(u.lo, u.hi, '[)'),
                jsonb_build_object('a', a.detail::jsonb, 'b', b.detail::jsonb)
         FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::inet[], $5::timestamptz[], $6::timestamptz[])
              AS u(ida, idb, scope, ip, lo, hi)
         JOIN claims a ON a.id = u.ida JOIN claims b ON b.id = u.idb
         ON CONFLICT (scope, ip, nic_a, nic_b, lower(overlap))
         DO UPDATE SET overlap = EXCLUDED.overlap, detail = EXCLUDED.detail",
    )
    .bind(&ida)
    .bind(&idb)
    .bind(&scope)
    .bind(&ip)
    .bind(&lo)
    .bind(&hi)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
