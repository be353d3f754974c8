//! The conflict check: two NICs' certain windows overlapping on
//! overlapping IPs in one scope (live claims read at their horizon) are
//! recorded in `conflicts`. Candidates are read by SQL; which of them
//! conflict is decided by [`detect`], pure code.

// Maps and sets of claim identities: hashed with the index's hasher, not
// SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use sqlx::PgConnection;

use crate::engine::{Micros, NEG_INF, POS_INF, Window};
use crate::store::runs::CompleteSnapshot;
use crate::store::{micros, to_ts};

/// Which claims to check for conflicts.
pub(super) enum ConflictsOf<'a> {
    /// Every claim of these NICs, as just written (their old conflicts are
    /// dropped first).
    Rows {
        nics: &'a [String],
        rows: Vec<ConflictClaim>,
    },
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ConflictClaim {
    pub id: i64,
    pub nic: String,
    pub scope: String,
    pub ip: IpNet,
    /// As lookups read it: a live claim's reaches its horizon.
    pub certain: Window,
}

/// A stored claim as the conflict check reads it ([`CLAIM_COLUMNS`]).
#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: i64,
    nic_key: String,
    scope: String,
    ip: IpNet,
    certain_start: Option<DateTime<Utc>>,
    certain_end: Option<DateTime<Utc>>,
    live: bool,
    subscription: String,
}

/// The columns of a [`ClaimRow`].
const CLAIM_COLUMNS: &str = "id, nic_key, scope, ip, lower(certain) AS certain_start, \
     upper(certain) AS certain_end, live, subscription";

impl ClaimRow {
    fn checked(self, horizons: &HashMap<String, CompleteSnapshot>) -> ConflictClaim {
        let stored = Window {
            start: self.certain_start.map_or(NEG_INF, micros),
            end: self.certain_end.map_or(POS_INF, micros),
        };
        ConflictClaim {
            id: self.id,
            nic: self.nic_key,
            scope: self.scope,
            ip: self.ip,
            certain: at_horizon(stored, self.live, horizons.get(&self.subscription)),
        }
    }
}

/// A claim's certain window as lookups read it: a live claim's reaches its
/// subscription's horizon (as [`Claim::extend_to`](crate::engine::Claim::extend_to)
/// does in the index).
pub(super) fn at_horizon(
    certain: Window,
    live: bool,
    horizon: Option<&CompleteSnapshot>,
) -> Window {
    match horizon {
        Some(h) if live => Window {
            end: certain.end.max(h.at.saturating_add(1)),
            ..certain
        },
        _ => certain,
    }
}

fn is_prefix(ip: &IpNet) -> bool {
    ip.prefix_len() < ip.max_prefix_len()
}

/// Two claims found in conflict: `a` of the NIC whose key sorts first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Conflict {
    pub a: i64,
    pub b: i64,
    pub scope: String,
    /// The more specific of the two claims' IPs.
    pub ip: IpNet,
    /// Where their certain windows overlap.
    pub overlap: Window,
}

/// The conflicts of the claims `xs` with the candidates: `exact` (claims on
/// one of their IPs), `prefixes` (prefix claims in their scopes, and claims
/// inside their prefixes). Each pair once, however it was found.
pub(super) fn detect(
    xs: &[ConflictClaim],
    exact: &[&ConflictClaim],
    prefixes: &[ConflictClaim],
) -> Vec<Conflict> {
    let mut by_key: HashMap<(&str, IpNet), Vec<&ConflictClaim>> = HashMap::default();
    for &y in exact {
        by_key.entry((y.scope.as_str(), y.ip)).or_default().push(y);
    }
    let mut seen: HashSet<(i64, i64)> = HashSet::default();
    let mut out = Vec::new();
    for x in xs {
        let same_ip = by_key
            .get(&(x.scope.as_str(), x.ip))
            .into_iter()
            .flatten()
            .copied();
        for y in same_ip.chain(prefixes.iter()) {
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
            out.push(Conflict {
                a: a.id,
                b: b.id,
                scope: x.scope.clone(),
                ip: if x.ip.prefix_len() >= y.ip.prefix_len() {
                    x.ip
                } else {
                    y.ip
                },
                overlap: Window {
                    start: a.certain.start.max(b.certain.start),
                    end: a.certain.end.min(b.certain.end),
                },
            });
        }
    }
    out
}

/// Finds the conflicts of the claims `of` names and records them.
/// Candidates come from IP equality and the few prefix claims, so a claim
/// on an IP nobody else held costs one index probe.
pub(super) async fn refresh_conflicts(
    conn: &mut PgConnection,
    of: ConflictsOf<'_>,
    horizons: &HashMap<String, CompleteSnapshot>,
) -> sqlx::Result<()> {
    // `own`: NICs all of whose claims are among `xs`.
    let (xs, own): (Vec<ConflictClaim>, &[String]) = match of {
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
            let moved = sqlx::query_as::<_, ClaimRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {CLAIM_COLUMNS} FROM claims
                 WHERE subscription = $1 AND lower(certain) > coalesce($2, '-infinity') AND lower(certain) <= $3"
            )))
            .bind(subscription)
            .bind(after.and_then(to_ts))
            .bind(to_ts(upto))
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| r.checked(horizons))
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
    let mut same: Vec<ClaimRow> = Vec::new();
    for chunk in ips.chunks(5_000) {
        let ip: Vec<IpNet> = chunk.iter().map(|(ip, _)| *ip).collect();
        let lo: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|(_, w)| to_ts(w.start)).collect();
        let hi: Vec<Option<DateTime<Utc>>> = chunk.iter().map(|(_, w)| to_ts(w.end)).collect();
        same.extend(
            sqlx::query_as::<_, ClaimRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {CLAIM_COLUMNS}
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
    let mut prefixes: Vec<ClaimRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {CLAIM_COLUMNS} FROM claims
         WHERE masklen(ip) < CASE WHEN family(ip) = 4 THEN 32 ELSE 128 END AND scope = ANY($1)"
    )))
    .bind(&scopes)
    .fetch_all(&mut *conn)
    .await?;
    for x in xs.iter().filter(|x| is_prefix(&x.ip)) {
        let inside: Vec<ClaimRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CLAIM_COLUMNS} FROM claims WHERE scope = $1 AND ip <<= $2"
        )))
        .bind(&x.scope)
        .bind(x.ip)
        .fetch_all(&mut *conn)
        .await?;
        prefixes.extend(inside);
    }
    let same: Vec<ConflictClaim> = same.into_iter().map(|r| r.checked(horizons)).collect();
    // The claims of `own` were not read back: they are the rows in hand.
    let in_hand: &[ConflictClaim] = if own.is_empty() { &[] } else { &xs };
    let exact: Vec<&ConflictClaim> = same.iter().chain(in_hand).collect();
    let prefixes: Vec<ConflictClaim> = prefixes.into_iter().map(|r| r.checked(horizons)).collect();
    insert_conflicts(conn, &detect(&xs, &exact, &prefixes)).await
}

/// Records `found` in `conflicts` (with both claims' details), each pair
/// once: one found again has its overlap and details replaced.
async fn insert_conflicts(conn: &mut PgConnection, found: &[Conflict]) -> sqlx::Result<()> {
    if found.is_empty() {
        return Ok(());
    }
    let ida: Vec<i64> = found.iter().map(|c| c.a).collect();
    let idb: Vec<i64> = found.iter().map(|c| c.b).collect();
    let scope: Vec<&str> = found.iter().map(|c| c.scope.as_str()).collect();
    let ip: Vec<IpNet> = found.iter().map(|c| c.ip).collect();
    let lo: Vec<Option<DateTime<Utc>>> = found.iter().map(|c| to_ts(c.overlap.start)).collect();
    let hi: Vec<Option<DateTime<Utc>>> = found.iter().map(|c| to_ts(c.overlap.end)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: i64, nic: &str, ip: &str, start: Micros, end: Micros) -> ConflictClaim {
        ConflictClaim {
            id,
            nic: nic.into(),
            scope: "vnet".into(),
            ip: ip.parse().unwrap(),
            certain: Window { start, end },
        }
    }

    #[test]
    fn a_live_claim_reaches_past_its_horizon() {
        let w = Window { start: 1, end: 5 };
        let h = CompleteSnapshot {
            at: 9,
            id: "s9".into(),
        };
        assert_eq!(at_horizon(w, true, Some(&h)), Window { start: 1, end: 10 });
        assert_eq!(at_horizon(w, false, Some(&h)), w, "not live: as stored");
        assert_eq!(at_horizon(w, true, None), w, "no horizon yet");
        let early = CompleteSnapshot {
            at: 2,
            id: "s2".into(),
        };
        assert_eq!(at_horizon(w, true, Some(&early)), w, "never shorter");
    }

    #[test]
    fn two_nics_overlapping_on_one_ip_conflict_once() {
        let x = claim(2, "b", "10.0.0.4/32", 10, 30);
        let y = claim(1, "a", "10.0.0.4/32", 20, 40);
        let found = detect(std::slice::from_ref(&x), &[&x, &y], &[]);
        assert_eq!(
            found,
            vec![Conflict {
                a: 1,
                b: 2,
                scope: "vnet".into(),
                ip: "10.0.0.4/32".parse().unwrap(),
                overlap: Window { start: 20, end: 30 },
            }]
        );
        // Both checked: still one pair.
        let both = [x.clone(), y.clone()];
        assert_eq!(detect(&both, &[&x, &y], &[]).len(), 1);
    }

    #[test]
    fn no_conflict_within_a_nic_across_scopes_or_times() {
        let x = claim(1, "a", "10.0.0.4/32", 10, 30);
        let same_nic = claim(2, "a", "10.0.0.4/32", 20, 40);
        let later = claim(3, "b", "10.0.0.4/32", 30, 40);
        let other_scope = ConflictClaim {
            scope: "other".into(),
            ..claim(4, "c", "10.0.0.4/32", 10, 30)
        };
        let other_ip = claim(5, "d", "10.0.0.5/32", 10, 30);
        let exact = [&x, &same_nic, &later, &other_scope, &other_ip];
        let found = detect(std::slice::from_ref(&x), &exact, &[]);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn a_prefix_holding_the_ip_conflicts_on_the_narrower() {
        let x = claim(1, "a", "10.0.0.4/32", 10, 30);
        let prefix = claim(2, "b", "10.0.0.0/24", 0, 20);
        let elsewhere = claim(3, "c", "10.9.0.0/24", 0, 20);
        let found = detect(
            std::slice::from_ref(&x),
            &[&x],
            &[prefix.clone(), elsewhere, prefix],
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ip, "10.0.0.4/32".parse::<IpNet>().unwrap());
        assert_eq!((found[0].a, found[0].b), (1, 2));
        assert_eq!(found[0].overlap, Window { start: 10, end: 20 });
    }

    #[test]
    fn stored_rows_are_read_at_their_horizon() {
        let row = |live| ClaimRow {
            id: 1,
            nic_key: "a".into(),
            scope: "vnet".into(),
            ip: "10.0.0.4/32".parse().unwrap(),
            certain_start: None,
            certain_end: crate::store::to_ts(5_000_000),
            live,
            subscription: "s".into(),
        };
        let mut horizons = HashMap::default();
        horizons.insert(
            "s".to_string(),
            CompleteSnapshot {
                at: 9_000_000,
                id: "h".into(),
            },
        );
        let stored = row(false).checked(&horizons);
        assert_eq!(
            stored.certain,
            Window {
                start: NEG_INF,
                end: 5_000_000
            }
        );
        let live = row(true).checked(&horizons);
        assert_eq!(live.certain.end, 9_000_001);
        assert!(is_prefix(&"10.0.0.0/24".parse().unwrap()));
        assert!(!is_prefix(&"10.0.0.4/32".parse().unwrap()));
    }
}
