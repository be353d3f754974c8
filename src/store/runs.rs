//! Observation runs: how repeated snapshot observations of an unchanged NIC
//! are stored once, and how a NIC's runs, events and its subscription's
//! complete snapshots become the engine's evidence. Pure code.
//!
//! The invariant of a run `[first, last]` with state `fp`: the NIC was
//! observed with `fp` at `first` and at `last`, and every finished complete
//! snapshot of its subscription taken within `[first, last]` listed it with
//! `fp`. So the points inside a run need not be stored: they can be read back
//! from the list of complete snapshots. A complete snapshot that did not list
//! the NIC, or an observation with another state, splits the run.

use std::sync::Arc;

use crate::engine::{Evidence, EvidenceKind, Micros, NEG_INF, Observation, POS_INF};
use crate::model::NicState;

/// A finished complete snapshot of a subscription: when, and its id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct CompleteSnapshot {
    pub at: Micros,
    pub id: String,
}

/// One stored run. `id` is `None` until inserted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub id: Option<i64>,
    pub fingerprint: String,
    pub first_at: Micros,
    pub first_snapshot: String,
    pub last_at: Micros,
    pub last_snapshot: String,
    /// Live: the NIC's latest run, with no event after its end, that every
    /// finished complete snapshot of its subscription taken after `last_at`
    /// listed with this state. Its real end is the subscription's horizon
    /// (latest finished complete snapshot), not written into the row.
    pub live: bool,
    /// Changed since loaded (to be written back).
    pub dirty: bool,
}

/// A NIC's runs, sorted by time, with the ids of runs to delete.
#[derive(Debug, Default)]
pub struct Runs {
    pub runs: Vec<Run>,
    pub deleted: Vec<i64>,
}

fn completes_in(completes: &[CompleteSnapshot], lo: Micros, hi: Micros) -> &[CompleteSnapshot] {
    // Complete snapshots with lo < at < hi.
    let a = completes.partition_point(|c| c.at <= lo);
    let b = completes.partition_point(|c| c.at < hi);
    if a < b { &completes[a..b] } else { &[] }
}

impl Runs {
    pub fn new(mut runs: Vec<Run>) -> Self {
        runs.sort_by_key(|r| r.first_at);
        Runs {
            runs,
            deleted: Vec::new(),
        }
    }

    /// Reads a live run's end as the horizon (the subscription's latest
    /// finished complete snapshot) when that is later than the stored end.
    /// Not a change to write: the row already means it.
    pub fn materialize(&mut self, horizon: Option<&CompleteSnapshot>) {
        let Some(h) = horizon else { return };
        if let Some(r) = self.runs.last_mut()
            && r.live
            && h.at > r.last_at
        {
            r.last_at = h.at;
            r.last_snapshot = h.id.clone();
        }
    }

    /// Recomputes which run is live after a change: the latest run, ending at
    /// or after the horizon, with no event after its end. A run whose flag
    /// flips is written back (with its end as materialised).
    pub fn settle(&mut self, horizon: Option<Micros>, last_event: Option<Micros>) {
        let n = self.runs.len();
        for (i, r) in self.runs.iter_mut().enumerate() {
            let live = i + 1 == n
                && horizon.is_none_or(|h| r.last_at >= h)
                && last_event.is_none_or(|e| e <= r.last_at);
            if live != r.live {
                r.live = live;
                r.dirty = true;
            }
        }
    }

    /// The latest run, when it is live.
    pub fn live(&self) -> Option<&Run> {
        self.runs.last().filter(|r| r.live)
    }

    /// Whether a run (its end as materialised) holds the instant `t`.
    pub fn covers(&self, t: Micros) -> bool {
        self.runs.iter().any(|r| r.first_at <= t && t <= r.last_at)
    }

    /// Whether anything is to be written back.
    pub fn is_dirty(&self) -> bool {
        !self.deleted.is_empty() || self.runs.iter().any(|r| r.dirty)
    }

    /// Records that a snapshot taken at `t` listed the NIC with state `fp`.
    /// `completes` are the finished complete snapshots of the NIC's
    /// subscription, sorted. Returns whether anything changed.
    ///
    /// Two states observed at the same instant (a NIC updated while one
    /// listing was taken, and so listed twice) cannot both be a run's point:
    /// the one whose fingerprint sorts last is kept, whichever arrived
    /// first, so that the order of the pages never decides.
    pub fn observe(
        &mut self,
        t: Micros,
        snapshot: &str,
        fp: &str,
        completes: &[CompleteSnapshot],
    ) -> bool {
        // Inside an existing run?
        if let Some(i) = self
            .runs
            .iter()
            .position(|r| r.first_at <= t && t <= r.last_at)
        {
            let r = &self.runs[i];
            if r.fingerprint == fp {
                return false;
            }
            // The run holds an observation at `t` itself: one of its ends,
            // or a complete snapshot taken at `t` (which listed it so).
            let observed_at_t = r.first_at == t
                || r.last_at == t
                || completes.binary_search_by_key(&t, |c| c.at).is_ok();
            if observed_at_t && r.fingerprint.as_str() > fp {
                return false;
            }
            self.split(i, t, completes);
            self.insert_point(t, snapshot, fp);
            return true;
        }
        let prev = self.runs.iter().rposition(|r| r.last_at < t);
        let next = self.runs.iter().position(|r| r.first_at > t);
        let joins_prev = prev.filter(|&p| {
            self.runs[p].fingerprint == fp
                && completes_in(completes, self.runs[p].last_at, t).is_empty()
        });
        let joins_next = next.filter(|&n| {
            self.runs[n].fingerprint == fp
                && completes_in(completes, t, self.runs[n].first_at).is_empty()
        });
        match (joins_prev, joins_next) {
            (Some(p), Some(n)) => {
                let (last_at, last_snapshot) =
                    (self.runs[n].last_at, self.runs[n].last_snapshot.clone());
                let removed = self.runs.remove(n);
                self.deleted.extend(removed.id);
                let r = &mut self.runs[p];
                r.last_at = last_at;
                r.last_snapshot = last_snapshot;
                r.dirty = true;
            }
            (Some(p), None) => {
                let r = &mut self.runs[p];
                r.last_at = t;
                r.last_snapshot = snapshot.to_string();
                r.dirty = true;
            }
            (None, Some(n)) => {
                let r = &mut self.runs[n];
                r.first_at = t;
                r.first_snapshot = snapshot.to_string();
                r.dirty = true;
            }
            (None, None) => self.insert_point(t, snapshot, fp),
        }
        true
    }

    /// Records that a finished complete snapshot at `t` did not list the NIC:
    /// a run spanning `t` is split around it. Returns whether anything changed.
    pub fn absent_at(&mut self, t: Micros, completes: &[CompleteSnapshot]) -> bool {
        match self
            .runs
            .iter()
            .position(|r| r.first_at < t && t < r.last_at)
        {
            Some(i) => {
                self.split(i, t, completes);
                true
            }
            None => false,
        }
    }

    fn insert_point(&mut self, t: Micros, snapshot: &str, fp: &str) {
        let at = self.runs.partition_point(|r| r.first_at < t);
        self.runs.insert(
            at,
            Run {
                id: None,
                fingerprint: fp.to_string(),
                first_at: t,
                first_snapshot: snapshot.to_string(),
                last_at: t,
                last_snapshot: snapshot.to_string(),
                live: false,
                dirty: true,
            },
        );
    }

    /// Cuts run `i` around `t` (exclusive): the part before ends at the last
    /// complete snapshot before `t` (or its first point), the part after
    /// starts at the first complete snapshot after `t` (or its last point).
    fn split(&mut self, i: usize, t: Micros, completes: &[CompleteSnapshot]) {
        let r = self.runs[i].clone();
        let before = completes_in(completes, r.first_at, t).last();
        let after = completes_in(completes, t, r.last_at).first();
        let mut pieces = Vec::new();
        if r.first_at < t {
            let (at, id) = before.map_or((r.first_at, r.first_snapshot.clone()), |c| {
                (c.at, c.id.clone())
            });
            pieces.push(Run {
                id: r.id,
                last_at: at,
                last_snapshot: id,
                live: false,
                dirty: true,
                ..r.clone()
            });
        }
        if r.last_at > t {
            let (at, id) = after.map_or((r.last_at, r.last_snapshot.clone()), |c| {
                (c.at, c.id.clone())
            });
            pieces.push(Run {
                id: if pieces.is_empty() { r.id } else { None },
                first_at: at,
                first_snapshot: id,
                live: r.live,
                dirty: true,
                ..r.clone()
            });
        }
        if pieces.is_empty() {
            self.deleted.extend(r.id);
        }
        self.runs.splice(i..=i, pieces);
    }
}

/// An Activity Log event of one NIC, with its state for writes.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub key: String,
    pub at: Micros,
    pub created: bool,
    /// `Some` for writes, `None` for deletes.
    pub state: Option<Arc<NicState>>,
}

/// The engine's evidence for one NIC: its runs (state looked up by
/// fingerprint), its events, and the absences implied by its subscription's
/// complete snapshots that fall outside its runs.
pub fn assemble_evidence<'a>(
    runs: &[Run],
    state_of: impl Fn(&str) -> Option<&'a Arc<NicState>>,
    events: &[StoredEvent],
    completes: &[CompleteSnapshot],
) -> Vec<Evidence> {
    let mut out = Vec::new();
    let snap = |at: Micros, id: &str, s: &Arc<NicState>| Evidence {
        at,
        kind: EvidenceKind::Snapshot,
        id: id.to_string(),
        created: false,
        observation: Observation::Present(s.clone()),
    };
    for r in runs {
        let Some(s) = state_of(&r.fingerprint) else {
            continue;
        };
        out.push(snap(r.first_at, &r.first_snapshot, s));
        if r.last_at != r.first_at {
            out.push(snap(r.last_at, &r.last_snapshot, s));
        }
        // Events inside a run: the run's own points nearest to each event.
        for e in events
            .iter()
            .filter(|e| r.first_at < e.at && e.at < r.last_at)
        {
            if let Some(c) = completes_in(completes, r.first_at, e.at).last() {
                out.push(snap(c.at, &c.id, s));
            }
            if let Some(c) = completes_in(completes, e.at, r.last_at).first() {
                out.push(snap(c.at, &c.id, s));
            }
        }
    }
    for e in events {
        out.push(Evidence {
            at: e.at,
            kind: if e.state.is_some() {
                EvidenceKind::ActivityWrite
            } else {
                EvidenceKind::ActivityDelete
            },
            id: e.key.clone(),
            created: e.created,
            observation: match &e.state {
                Some(s) => Observation::Present(s.clone()),
                None => Observation::Absent,
            },
        });
    }
    if out.is_empty() {
        return out;
    }
    // Absences: in each gap between consecutive evidence that lies outside
    // every run, the first and last complete snapshot (the ones that bound a
    // claim on either side).
    let mut times: Vec<Micros> = out.iter().map(|e| e.at).collect();
    times.sort_unstable();
    times.dedup();
    let mut bounds = Vec::with_capacity(times.len() + 2);
    bounds.push(NEG_INF);
    bounds.extend(times);
    bounds.push(POS_INF);
    for w in bounds.windows(2) {
        let (p, q) = (w[0], w[1]);
        if runs.iter().any(|r| r.first_at <= p && q <= r.last_at) {
            continue;
        }
        let gap = completes_in(completes, p, q);
        let mut picks: Vec<&CompleteSnapshot> = gap.first().into_iter().collect();
        if gap.len() > 1 {
            picks.push(gap.last().expect("non-empty"));
        }
        for c in picks {
            out.push(Evidence {
                at: c.at,
                kind: EvidenceKind::SnapshotAbsence,
                id: c.id.clone(),
                created: false,
                observation: Observation::Absent,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completes(ts: &[Micros]) -> Vec<CompleteSnapshot> {
        ts.iter()
            .map(|t| CompleteSnapshot {
                at: *t,
                id: format!("s{t}"),
            })
            .collect()
    }

    #[test]
    fn an_unchanged_nic_extends_one_run() {
        let c = completes(&[10, 20, 30, 40]);
        let mut r = Runs::default();
        for t in [10, 20, 30, 40] {
            assert!(r.observe(t, &format!("s{t}"), "A", &c[..(t / 10) as usize - 1]));
        }
        assert_eq!(r.runs.len(), 1);
        assert_eq!((r.runs[0].first_at, r.runs[0].last_at), (10, 40));
        // Observing it again inside the run changes nothing (idempotent).
        assert!(!r.observe(20, "s20", "A", &c));
    }

    #[test]
    fn out_of_order_observations_merge_to_the_same_run() {
        let c = completes(&[10, 20, 30]);
        let mut r = Runs::default();
        r.observe(30, "s30", "A", &c);
        r.observe(10, "s10", "A", &c);
        assert_eq!(
            r.runs.len(),
            2,
            "s20 is complete and between them: not yet proven"
        );
        r.observe(20, "s20", "A", &c);
        assert_eq!(r.runs.len(), 1);
        assert_eq!((r.runs[0].first_at, r.runs[0].last_at), (10, 30));
    }

    #[test]
    fn a_complete_snapshot_without_the_nic_splits_its_run() {
        let c = completes(&[10, 20, 30, 40, 50]);
        let mut r = Runs::new(vec![Run {
            id: Some(7),
            fingerprint: "A".into(),
            first_at: 10,
            first_snapshot: "s10".into(),
            last_at: 50,
            last_snapshot: "s50".into(),
            live: false,
            dirty: false,
        }]);
        assert!(r.absent_at(30, &c));
        let spans: Vec<_> = r
            .runs
            .iter()
            .map(|x| (x.first_at, x.last_at, x.id))
            .collect();
        assert_eq!(spans, vec![(10, 20, Some(7)), (40, 50, None)]);
        assert!(!r.absent_at(30, &c));
    }

    #[test]
    fn two_states_at_one_instant_keep_the_same_one_in_either_order() {
        let c = completes(&[10, 20, 30]);
        let spans = |r: &Runs| -> Vec<(Micros, Micros, String)> {
            r.runs
                .iter()
                .map(|x| (x.first_at, x.last_at, x.fingerprint.clone()))
                .collect()
        };
        // A point, the end of a run, and inside a run at a complete
        // snapshot's instant: the state that sorts last stays at 20.
        for before in [vec![], vec![(10, "A")], vec![(10, "A"), (30, "A")]] {
            let mut results = Vec::new();
            for order in [["A", "B"], ["B", "A"]] {
                let mut r = Runs::default();
                for (t, fp) in &before {
                    r.observe(*t, &format!("s{t}"), fp, &c);
                }
                for fp in order {
                    r.observe(20, "s20", fp, &c);
                }
                // Again, as a page posted twice: nothing changes.
                for fp in order {
                    assert!(!r.observe(20, "s20", fp, &c), "{before:?} {order:?}");
                }
                results.push(spans(&r));
            }
            assert_eq!(results[0], results[1], "{before:?}");
            assert!(
                results[0]
                    .iter()
                    .any(|(a, b, f)| *a <= 20 && 20 <= *b && f == "B"),
                "{before:?}: {:?}",
                results[0]
            );
        }
    }

    #[test]
    fn another_state_inside_a_run_splits_it() {
        let c = completes(&[10, 20, 30]);
        let mut r = Runs::default();
        for t in [10, 20, 30] {
            r.observe(t, &format!("s{t}"), "A", &c);
        }
        r.observe(25, "p25", "B", &c);
        let spans: Vec<_> = r
            .runs
            .iter()
            .map(|x| (x.first_at, x.last_at, x.fingerprint.as_str()))
            .collect();
        assert_eq!(spans, vec![(10, 20, "A"), (25, 25, "B"), (30, 30, "A")]);
    }

    #[test]
    fn a_live_run_reaches_the_horizon_until_something_ends_it() {
        let c = completes(&[10, 20, 30]);
        let mut r = Runs::default();
        r.observe(10, "s10", "A", &[]);
        r.settle(None, None);
        assert!(r.live().is_some(), "the latest run, nothing after it");
        // Later complete snapshots listed it unchanged: read at the horizon,
        // nothing to write.
        let mut loaded = Runs::new(vec![Run {
            dirty: false,
            id: Some(1),
            ..r.runs[0].clone()
        }]);
        loaded.materialize(c.last());
        assert_eq!(loaded.runs[0].last_at, 30);
        loaded.settle(Some(30), None);
        assert!(!loaded.is_dirty());
        // An event after its end: no longer live, its end written down.
        loaded.settle(Some(30), Some(35));
        assert!(loaded.live().is_none());
        assert!(loaded.is_dirty());
        assert_eq!((loaded.runs[0].last_at, loaded.runs[0].live), (30, false));
        // A newer run (another state) takes over.
        let mut two = Runs::default();
        two.observe(10, "s10", "A", &[]);
        two.observe(40, "p40", "B", &c);
        two.settle(Some(30), None);
        let flags: Vec<bool> = two.runs.iter().map(|x| x.live).collect();
        assert_eq!(flags, vec![false, true]);
    }

    #[test]
    fn absences_come_from_complete_snapshots_outside_runs() {
        let s = Arc::new(NicState {
            id: crate::model::ArmId::parse(
                "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/networkInterfaces/n",
            )
            .unwrap(),
            name: "n".into(),
            mac: None,
            vm: None,
            ips: vec![],
        });
        let c = completes(&[10, 20, 30, 40, 50, 60]);
        let runs = vec![Run {
            id: Some(1),
            fingerprint: "A".into(),
            first_at: 30,
            first_snapshot: "s30".into(),
            last_at: 40,
            last_snapshot: "s40".into(),
            live: false,
            dirty: false,
        }];
        let ev = assemble_evidence(&runs, |_| Some(&s), &[], &c);
        let mut got: Vec<(Micros, EvidenceKind)> = ev.iter().map(|e| (e.at, e.kind)).collect();
        got.sort();
        use EvidenceKind::*;
        assert_eq!(
            got,
            vec![
                (10, SnapshotAbsence),
                (20, SnapshotAbsence),
                (30, Snapshot),
                (40, Snapshot),
                (50, SnapshotAbsence),
                (60, SnapshotAbsence)
            ]
        );
    }
}
