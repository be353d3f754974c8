//! Writing: runs and claims encoded column by column as array parameters
//! (one statement per kind of change, however many rows), and the writes
//! to `observations` and `claims`.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::{Arguments, PgConnection};

use super::derive::Derived;
use crate::engine::Claim;
use crate::store::runs::Runs;
use crate::store::to_ts;

/// Changed runs as `save_runs` writes them: ids to delete, updates of
/// loaded runs, inserts of new ones.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RunWrites {
    pub deleted: Vec<i64>,
    pub updates: RunColumns,
    pub inserts: RunColumns,
}

/// `observations` rows, column by column (`id` for updates, `nic` and
/// `fingerprint` for inserts).
#[derive(Debug, Default, PartialEq)]
pub(super) struct RunColumns {
    pub id: Vec<i64>,
    pub nic: Vec<String>,
    pub fingerprint: Vec<String>,
    pub first_at: Vec<Option<DateTime<Utc>>>,
    pub first_snapshot: Vec<String>,
    pub last_at: Vec<Option<DateTime<Utc>>>,
    pub last_snapshot: Vec<String>,
    pub live: Vec<bool>,
}

impl RunWrites {
    /// What writing back the dirty runs of each NIC takes.
    pub(super) fn of(nics: &[(String, Runs)]) -> Self {
        let mut w = RunWrites::default();
        for (key, runs) in nics {
            w.deleted.extend(&runs.deleted);
            for r in runs.runs.iter().filter(|r| r.dirty) {
                let cols = match r.id {
                    Some(id) => {
                        w.updates.id.push(id);
                        &mut w.updates
                    }
                    None => {
                        w.inserts.nic.push(key.clone());
                        w.inserts.fingerprint.push(r.fingerprint.clone());
                        &mut w.inserts
                    }
                };
                cols.first_at.push(to_ts(r.first_at));
                cols.first_snapshot.push(r.first_snapshot.clone());
                cols.last_at.push(to_ts(r.last_at));
                cols.last_snapshot.push(r.last_snapshot.clone());
                cols.live.push(r.live);
            }
        }
        w
    }
}

/// Writes back changed runs: deletes, updates of loaded runs, inserts of new ones.
pub(in crate::store) async fn save_runs(
    conn: &mut PgConnection,
    nics: &[(String, Runs)],
) -> sqlx::Result<()> {
    let RunWrites {
        deleted,
        updates: u,
        inserts: i,
    } = RunWrites::of(nics);
    if !deleted.is_empty() {
        sqlx::query("DELETE FROM observations WHERE id = ANY($1)")
            .bind(&deleted)
            .execute(&mut *conn)
            .await?;
    }
    if !u.id.is_empty() {
        sqlx::query(
            "UPDATE observations o SET first_at = u.fa, first_snapshot = u.fs, last_at = u.la, last_snapshot = u.ls,
                    live = u.live, updated_at = now()
             FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::timestamptz[], $5::text[], $6::bool[])
                  AS u(id, fa, fs, la, ls, live)
             WHERE o.id = u.id",
        )
        .bind(&u.id)
        .bind(&u.first_at)
        .bind(&u.first_snapshot)
        .bind(&u.last_at)
        .bind(&u.last_snapshot)
        .bind(&u.live)
        .execute(&mut *conn)
        .await?;
    }
    if !i.nic.is_empty() {
        sqlx::query(
            "INSERT INTO observations (nic_key, fingerprint, first_at, first_snapshot, last_at, last_snapshot, live)
             SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[], $6::text[], $7::bool[])",
        )
        .bind(&i.nic)
        .bind(&i.fingerprint)
        .bind(&i.first_at)
        .bind(&i.first_snapshot)
        .bind(&i.last_at)
        .bind(&i.last_snapshot)
        .bind(&i.live)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Claim rows to insert or update, column by column (`id` for updates;
/// `nic`, `scope`, `ip` and `sub` for inserts).
#[derive(Debug, Default)]
pub(super) struct ClaimRows {
    pub id: Vec<i64>,
    pub nic: Vec<String>,
    pub scope: Vec<String>,
    pub ip: Vec<String>,
    pub sub: Vec<String>,
    pub plo: Vec<Option<DateTime<Utc>>>,
    pub phi: Vec<Option<DateTime<Utc>>>,
    pub clo: Vec<Option<DateTime<Utc>>>,
    pub chi: Vec<Option<DateTime<Utc>>>,
    pub live: Vec<bool>,
    pub dig: Vec<String>,
    pub det: Vec<String>,
}

/// Bind parameters encoded ahead of their statement, and how many rows they hold.
pub(super) struct Encoded {
    pub rows: usize,
    pub args: Result<PgArguments, sqlx::error::BoxDynError>,
}

impl ClaimRows {
    pub(super) fn append(&mut self, mut other: ClaimRows) {
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
    pub(super) fn encode_insert(self) -> Encoded {
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
    pub(super) fn encode_update(self) -> Encoded {
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

    /// Adds claim `c` of subscription `sub`: an update of the stored claim
    /// `id`, or an insert when `None`.
    pub(super) fn push(
        &mut self,
        id: Option<i64>,
        c: &Claim,
        sub: &str,
        digest: String,
        detail: String,
    ) {
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

/// Writes what [`derive`](super::derive::derive) found to `claims`:
/// deletes, updates, then inserts, whose ids are filled into the claims
/// `d` holds for the conflict check.
pub(super) async fn write_claims(conn: &mut PgConnection, d: &mut Derived) -> sqlx::Result<()> {
    if !d.deleted.is_empty() {
        sqlx::query("DELETE FROM claims WHERE id = ANY($1)")
            .bind(&d.deleted)
            .execute(&mut *conn)
            .await?;
    }
    if let Some(upd) = d.updates.take() {
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
    if let Some(ins) = d.inserts.take() {
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
        for (&i, id) in d.inserted_at.iter().zip(ids) {
            d.checked[i].id = id;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{inputs_of, nic_key, run, state};
    use super::*;

    #[test]
    fn only_dirty_runs_are_written_updates_by_id_inserts_by_nic() {
        let mut runs = Runs::new(vec![
            run(Some(1), "A", 1_000_000, 2_000_000, false),
            run(Some(2), "B", 3_000_000, 4_000_000, false),
            run(None, "C", 5_000_000, 6_000_000, true),
        ]);
        runs.runs[1].dirty = true;
        runs.runs[2].dirty = true;
        runs.deleted.push(9);
        let w = RunWrites::of(&[("nic".into(), runs)]);
        assert_eq!(w.deleted, vec![9]);
        assert_eq!(w.updates.id, vec![2]);
        assert_eq!(w.updates.first_at, vec![to_ts(3_000_000)]);
        assert_eq!(w.updates.last_snapshot, vec!["s4000000".to_string()]);
        assert!(w.updates.nic.is_empty());
        assert_eq!(w.inserts.nic, vec!["nic".to_string()]);
        assert_eq!(w.inserts.fingerprint, vec!["C".to_string()]);
        assert_eq!(w.inserts.live, vec![true]);
        assert!(w.inserts.id.is_empty());
        assert_eq!(RunWrites::of(&[]), RunWrites::default());
    }

    #[test]
    fn claim_rows_encode_updates_and_inserts() {
        let d = super::super::derive::derive(inputs_of(&[(1, state(1, &["10.0.0.4"]))]));
        let c = &d.changes.by_nic[&nic_key(1)][0];
        let mut upd = ClaimRows::default();
        upd.push(Some(7), c, "sub", "d1".into(), "{}".into());
        let mut ins = ClaimRows::default();
        ins.push(None, c, "sub", "d2".into(), "{}".into());
        assert_eq!((upd.id.clone(), upd.nic.len()), (vec![7], 0));
        assert_eq!(ins.nic, vec![nic_key(1)]);
        assert_eq!(ins.ip, vec!["10.0.0.4/32".to_string()]);
        assert_eq!(ins.plo, vec![to_ts(c.possible.start)]);
        assert_eq!(ins.chi, vec![to_ts(c.certain.end)]);

        let mut more = ClaimRows::default();
        more.push(Some(8), c, "sub", "d3".into(), "{}".into());
        upd.append(more);
        assert_eq!(upd.id, vec![7, 8]);
        assert_eq!(upd.dig, vec!["d1".to_string(), "d3".to_string()]);
        let e = upd.encode_update();
        assert_eq!(e.rows, 2);
        assert!(e.args.is_ok());
        let e = ins.encode_insert();
        assert_eq!(e.rows, 1);
        assert!(e.args.is_ok());
    }
}
