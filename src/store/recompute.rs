//! Recomputing the claims of a set of NICs from all of their stored
//! evidence, and writing back only what changed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::{PgConnection, types::Json};

use super::runs::{CompleteSnapshot, Run, StoredEvent, assemble_evidence};
use super::{micros, to_ts};
use crate::engine::{Claim, derive_claims};
use crate::model::NicState;

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
}

impl ClaimChanges {
    pub fn merge(&mut self, other: ClaimChanges) {
        self.by_nic.extend(other.by_nic);
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
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
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, nic_key, fingerprint, first_at, first_snapshot, last_at, last_snapshot
         FROM observations WHERE nic_key = ANY($1)",
    )
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<String, Vec<Run>> = HashMap::new();
    for (id, nic, fingerprint, first_at, first_snapshot, last_at, last_snapshot) in rows {
        out.entry(nic).or_default().push(Run {
            id: Some(id),
            fingerprint,
            first_at: micros(first_at),
            first_snapshot,
            last_at: micros(last_at),
            last_snapshot,
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
    let (mut u_id, mut u_fa, mut u_fs, mut u_la, mut u_ls) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut i_nic, mut i_fp, mut i_fa, mut i_fs, mut i_la, mut i_ls) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
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
                }
                None => {
                    i_nic.push(key.clone());
                    i_fp.push(r.fingerprint.clone());
                    i_fa.push(to_ts(r.first_at));
                    i_fs.push(r.first_snapshot.clone());
                    i_la.push(to_ts(r.last_at));
                    i_ls.push(r.last_snapshot.clone());
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
            "UPDATE observations o SET first_at = u.fa, first_snapshot = u.fs, last_at = u.la, last_snapshot = u.ls, updated_at = now()
             FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::text[]) AS u(id, fa, fs, la, ls)
             WHERE o.id = u.id",
        )
        .bind(&u_id)
        .bind(&u_fa)
        .bind(&u_fs)
        .bind(&u_la)
        .bind(&u_ls)
        .execute(&mut *conn)
        .await?;
    }
    if !i_nic.is_empty() {
        sqlx::query(
            "INSERT INTO observations (nic_key, fingerprint, first_at, first_snapshot, last_at, last_snapshot)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[], $6::text[])",
        )
        .bind(&i_nic)
        .bind(&i_fp)
        .bind(&i_fa)
        .bind(&i_fs)
        .bind(&i_la)
        .bind(&i_ls)
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

/// Recomputes the claims of `nics` from all their evidence and writes the
/// difference to `claims` and `conflicts`.
pub(super) async fn recompute(
    conn: &mut PgConnection,
    nics: &[String],
) -> sqlx::Result<ClaimChanges> {
    let mut changes = ClaimChanges::default();
    if nics.is_empty() {
        return Ok(changes);
    }
    let subs: Vec<(String, String)> =
        sqlx::query_as("SELECT nic_key, subscription FROM nics WHERE nic_key = ANY($1)")
            .bind(nics)
            .fetch_all(&mut *conn)
            .await?;
    let sub_of: HashMap<String, String> = subs.into_iter().collect();
    let mut sub_list: Vec<String> = sub_of
        .values()
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    sub_list.sort();
    let completes = load_completes(conn, &sub_list).await?;
    let mut runs = load_runs(conn, nics).await?;

    // States of runs and events, parsed once per fingerprint.
    let states: Vec<(String, Json<NicState>)> = sqlx::query_as(
        "SELECT DISTINCT s.fingerprint, s.state FROM nic_states s
         WHERE s.fingerprint IN (SELECT fingerprint FROM observations WHERE nic_key = ANY($1)
                                 UNION SELECT fingerprint FROM activity_events WHERE nic_key = ANY($1))",
    )
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    let states: HashMap<String, NicState> = states.into_iter().map(|(f, s)| (f, s.0)).collect();

    type EvRow = (String, String, DateTime<Utc>, bool, Option<String>);
    let ev_rows: Vec<EvRow> = sqlx::query_as(
        "SELECT nic_key, key, at, created, fingerprint FROM activity_events WHERE nic_key = ANY($1)",
    )
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    let mut events: HashMap<String, Vec<StoredEvent>> = HashMap::new();
    for (nic, key, at, created, fp) in ev_rows {
        let state = fp.and_then(|f| states.get(&f).cloned());
        events.entry(nic).or_default().push(StoredEvent {
            key,
            at: micros(at),
            created,
            state,
        });
    }

    // Existing claims, by identity.
    type Ident = (String, String, IpNet, String, Option<DateTime<Utc>>);
    type Existing = (
        i64,
        String,
        String,
        IpNet,
        String,
        Option<DateTime<Utc>>,
        String,
    );
    let existing: Vec<Existing> = sqlx::query_as(
        "SELECT id, nic_key, scope, ip, vm_key, lower(possible), digest FROM claims WHERE nic_key = ANY($1)",
    )
    .bind(nics)
    .fetch_all(&mut *conn)
    .await?;
    let mut existing: HashMap<Ident, (i64, String)> = existing
        .into_iter()
        .map(|(id, n, s, ip, vm, lo, d)| ((n, s, ip, vm, lo), (id, d)))
        .collect();

    let empty = Vec::new();
    let mut unchanged: HashSet<String> = HashSet::new();
    let (mut u_id, mut u_plo, mut u_phi, mut u_clo, mut u_chi, mut u_dig, mut u_det) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut i_nic, mut i_scope, mut i_ip, mut i_vm, mut i_sub) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut i_plo, mut i_phi, mut i_clo, mut i_chi, mut i_dig, mut i_det) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for nic in nics {
        let sub = sub_of.get(nic).cloned().unwrap_or_default();
        let nic_runs = runs.remove(nic).unwrap_or_default();
        let evidence = assemble_evidence(
            &nic_runs,
            |fp| states.get(fp),
            events.get(nic).unwrap_or(&empty),
            completes.get(&sub).map(Vec::as_slice).unwrap_or(&[]),
        );
        let claims = derive_claims(&evidence);
        let mut nic_changed = false;
        for c in &claims {
            let detail = serde_json::to_string(c).expect("claims serialize");
            let digest = crate::model::short_digest(detail.as_bytes());
            let ident: Ident = (
                c.key.nic.clone(),
                c.key.scope.clone(),
                c.key.ip,
                c.key.vm.clone(),
                to_ts(c.possible.start),
            );
            match existing.remove(&ident) {
                Some((_, d)) if d == digest => {}
                Some((id, _)) => {
                    nic_changed = true;
                    u_id.push(id);
                    u_plo.push(to_ts(c.possible.start));
                    u_phi.push(to_ts(c.possible.end));
                    u_clo.push(to_ts(c.certain.start));
                    u_chi.push(to_ts(c.certain.end));
                    u_dig.push(digest);
                    u_det.push(detail);
                }
                None => {
                    nic_changed = true;
                    i_nic.push(c.key.nic.clone());
                    i_scope.push(c.key.scope.clone());
                    i_ip.push(c.key.ip.to_string());
                    i_vm.push(c.key.vm.clone());
                    i_sub.push(sub.clone());
                    i_plo.push(to_ts(c.possible.start));
                    i_phi.push(to_ts(c.possible.end));
                    i_clo.push(to_ts(c.certain.start));
                    i_chi.push(to_ts(c.certain.end));
                    i_dig.push(digest);
                    i_det.push(detail);
                }
            }
        }
        changes.by_nic.insert(nic.clone(), claims);
        if !nic_changed {
            unchanged.insert(nic.clone());
        }
    }
    // NICs that lost a claim changed too.
    for (n, ..) in existing.keys() {
        unchanged.remove(n);
    }
    changes.by_nic.retain(|n, _| !unchanged.contains(n));
    let del: Vec<i64> = existing.values().map(|(id, _)| *id).collect();
    changes.deleted = del.len();
    changes.updated = u_id.len();
    changes.inserted = i_nic.len();
    if !del.is_empty() {
        sqlx::query("DELETE FROM claims WHERE id = ANY($1)")
            .bind(&del)
            .execute(&mut *conn)
            .await?;
    }
    if !u_id.is_empty() {
        sqlx::query(
            "UPDATE claims c SET possible = tstzrange(u.plo, u.phi, '[)'), certain = tstzrange(u.clo, u.chi, '[)'),
                    digest = u.dig, detail = u.det::jsonb, updated_at = now()
             FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::text[])
                  AS u(id, plo, phi, clo, chi, dig, det)
             WHERE c.id = u.id",
        )
        .bind(&u_id)
        .bind(&u_plo)
        .bind(&u_phi)
        .bind(&u_clo)
        .bind(&u_chi)
        .bind(&u_dig)
        .bind(&u_det)
        .execute(&mut *conn)
        .await?;
    }
    if !i_nic.is_empty() {
        sqlx::query(
            "INSERT INTO claims (nic_key, scope, ip, vm_key, subscription, possible, certain, digest, detail)
             SELECT n, s, ip::inet, vm, sub, tstzrange(plo, phi, '[)'), tstzrange(clo, chi, '[)'), dig, det::jsonb
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                         $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[])
                  AS u(n, s, ip, vm, sub, plo, phi, clo, chi, dig, det)",
        )
        .bind(&i_nic)
        .bind(&i_scope)
        .bind(&i_ip)
        .bind(&i_vm)
        .bind(&i_sub)
        .bind(&i_plo)
        .bind(&i_phi)
        .bind(&i_clo)
        .bind(&i_chi)
        .bind(&i_dig)
        .bind(&i_det)
        .execute(&mut *conn)
        .await?;
    }
    if changes.inserted + changes.updated + changes.deleted > 0 {
        refresh_conflicts(conn, nics).await?;
        let changed: Vec<String> = changes.by_nic.keys().cloned().collect();
        let range: (Option<i64>, Option<i64>) = sqlx::query_as(
            "WITH ins AS (INSERT INTO claim_changes (nic_key) SELECT unnest($1::text[]) RETURNING seq)
             SELECT min(seq), max(seq) FROM ins",
        )
        .bind(&changed)
        .fetch_one(&mut *conn)
        .await?;
        if let (Some(lo), Some(hi)) = range {
            changes.seq = Some((lo, hi));
            sqlx::query("SELECT pg_notify('ipwho_claims', $1)")
                .bind(hi.to_string())
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(changes)
}

/// Re-derives the conflicts that involve `nics`: two NICs' certain windows
/// overlapping on overlapping IPs in one scope.
async fn refresh_conflicts(conn: &mut PgConnection, nics: &[String]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM conflicts WHERE nic_a = ANY($1) OR nic_b = ANY($1)")
        .bind(nics)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO conflicts (scope, ip, nic_a, nic_b, overlap, detail)
         SELECT x.scope,
                CASE WHEN masklen(x.ip) >= masklen(y.ip) THEN x.ip ELSE y.ip END,
                least(x.nic_key, y.nic_key), greatest(x.nic_key, y.nic_key), x.certain * y.certain,
                CASE WHEN x.nic_key < y.nic_key THEN jsonb_build_object('a', x.detail, 'b', y.detail)
                     ELSE jsonb_build_object('a', y.detail, 'b', x.detail) END
         FROM claims x
         JOIN claims y ON y.scope = x.scope AND y.ip && x.ip AND y.possible && x.possible
                      AND y.nic_key <> x.nic_key AND y.certain && x.certain
         WHERE x.nic_key = ANY($1)
         ON CONFLICT DO NOTHING",
    )
    .bind(nics)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
