//! Deriving: the engine turns each NIC's evidence into claims, which are
//! compared with the stored ones by digest. Pure CPU work, no SQL: a large
//! batch is split in two halves derived on two threads, and the whole runs
//! on a blocking thread while the caller's connection writes.

// Maps and sets of NIC keys (150 characters) and claim identities: hashed
// with the index's hasher, not SipHash.
use crate::model::hash::{FastMap as HashMap, FastSet as HashSet};
use std::sync::Arc;

use super::ClaimChanges;
use super::conflicts::{ConflictClaim, at_horizon};
use super::read::{ClaimIdent, Inputs, StoredClaim};
use super::write::{ClaimRows, Encoded};
use crate::engine::{Claim, EvidenceKind, derive_claims};
use crate::model::{ArmId, NicState};
use crate::store::runs::{CompleteSnapshot, Run, Runs, StoredEvent, assemble_evidence};
use crate::store::to_ts;

/// Below this many NICs, one thread.
const SPLIT_AT: usize = 256;

/// The claims derived from [`Inputs`], and how `claims` must change to hold
/// them.
pub(super) struct Derived {
    pub nics: Vec<String>,
    pub horizons: HashMap<String, CompleteSnapshot>,
    pub changes: ClaimChanges,
    /// Ids of stored claims no longer derived.
    pub deleted: Vec<i64>,
    /// The updates' and inserts' bind parameters, encoded here (on the
    /// deriving thread) rather than on the writing connection's.
    pub updates: Option<Encoded>,
    pub inserts: Option<Encoded>,
    /// The claims as the conflict check needs them (ids of new ones filled
    /// in after their insert: `inserted_at[k]` is the index of the `k`-th
    /// inserted claim).
    pub checked: Vec<ConflictClaim>,
    pub inserted_at: Vec<usize>,
}

impl Inputs {
    /// A live run with an event after its end is live no more: settles the
    /// runs of every such NIC (in these inputs, as they are then derived
    /// from) and returns those that changed, to be saved. Its end (the
    /// horizon) is then written down, so that later snapshots extend it
    /// explicitly.
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

/// Derives the claims of every NIC of `inputs` and compares them with the
/// stored ones. NICs are independent, so a large batch is split in two
/// halves derived on two threads.
pub(super) fn derive(inputs: Inputs) -> Derived {
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
            .partition(|(ident, _)| in_b.contains(ident.nic.as_str()));
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
        deleted,
        updates,
        inserts,
        checked,
        inserted_at,
    } = part;
    let changes = ClaimChanges {
        by_nic,
        deleted: deleted.len(),
        updated: updates.id.len(),
        inserted: inserts.nic.len(),
        ..Default::default()
    };
    Derived {
        nics,
        horizons,
        changes,
        deleted,
        updates: (!updates.id.is_empty()).then(|| updates.encode_update()),
        inserts: (!inserts.nic.is_empty()).then(|| inserts.encode_insert()),
        checked,
        inserted_at,
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
    deleted: Vec<i64>,
    updates: ClaimRows,
    inserts: ClaimRows,
    checked: Vec<ConflictClaim>,
    inserted_at: Vec<usize>,
}

impl Part {
    /// Appends what other NICs found (inserts after this part's, so that
    /// `inserted_at` still follows the order of `inserts`).
    fn append(&mut self, other: Part) {
        let offset = self.checked.len();
        self.by_nic.extend(other.by_nic);
        self.deleted.extend(other.deleted);
        self.updates.append(other.updates);
        self.inserts.append(other.inserts);
        self.checked.extend(other.checked);
        self.inserted_at
            .extend(other.inserted_at.into_iter().map(|r| r + offset));
    }
}

impl Context<'_> {
    /// Derives the claims of `nics`, given their runs and stored claims.
    fn derive(
        &self,
        nics: &[String],
        mut runs: HashMap<String, Vec<Run>>,
        mut existing: HashMap<ClaimIdent, StoredClaim>,
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
                let ident = ClaimIdent {
                    nic: c.key.nic.to_string(),
                    scope: c.key.scope.to_string(),
                    ip: c.key.ip,
                    possible_start: to_ts(c.possible.start),
                };
                let mut row = ConflictClaim {
                    id: 0,
                    nic: c.key.nic.to_string(),
                    scope: c.key.scope.to_string(),
                    ip: c.key.ip,
                    certain: at_horizon(c.certain, c.live, self.horizons.get(sub)),
                };
                match existing.remove(&ident) {
                    Some(stored) if stored.digest == digest => row.id = stored.id,
                    Some(stored) => {
                        nic_changed = true;
                        part.updates.push(Some(stored.id), c, sub, digest, detail());
                        row.id = stored.id;
                    }
                    None => {
                        nic_changed = true;
                        part.inserts.push(None, c, sub, digest, detail());
                        part.inserted_at.push(part.checked.len());
                    }
                }
                part.checked.push(row);
            }
            part.by_nic.insert(nic.clone(), claims);
            if !nic_changed {
                unchanged.insert(nic.clone());
            }
        }
        // NICs that lost a claim changed too.
        for ident in existing.keys() {
            unchanged.remove(&ident.nic);
        }
        part.by_nic.retain(|n, _| !unchanged.contains(n));
        part.deleted = existing.values().map(|c| c.id).collect();
        part
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{inputs_of, nic_key, run, state};
    use super::*;
    use crate::store::runs::StoredEvent;

    fn digest(c: &Claim) -> String {
        crate::model::short_digest(&serde_json::to_vec(c).unwrap())
    }

    fn ident(c: &Claim) -> ClaimIdent {
        ClaimIdent {
            nic: c.key.nic.to_string(),
            scope: c.key.scope.to_string(),
            ip: c.key.ip,
            possible_start: to_ts(c.possible.start),
        }
    }

    #[test]
    fn new_claims_are_inserts() {
        let d = derive(inputs_of(&[(1, state(1, &["10.0.0.4", "10.0.0.5"]))]));
        assert_eq!(
            (d.changes.inserted, d.changes.updated, d.changes.deleted),
            (2, 0, 0)
        );
        assert_eq!(d.changes.by_nic[&nic_key(1)].len(), 2);
        assert_eq!(d.inserts.as_ref().map(|e| e.rows), Some(2));
        assert!(d.inserts.as_ref().is_some_and(|e| e.args.is_ok()));
        assert!(d.updates.is_none() && d.deleted.is_empty());
        assert_eq!(d.inserted_at, vec![0, 1]);
        let ips: Vec<String> = d.checked.iter().map(|c| c.ip.to_string()).collect();
        assert_eq!(ips, vec!["10.0.0.4/32", "10.0.0.5/32"]);
        assert!(d.checked.iter().all(|c| c.nic == nic_key(1) && c.id == 0));
    }

    #[test]
    fn claims_stored_as_derived_change_nothing() {
        let nics = [(1, state(1, &["10.0.0.4", "10.0.0.5"]))];
        let first = derive(inputs_of(&nics));
        let mut inputs = inputs_of(&nics);
        for (i, c) in first.changes.by_nic[&nic_key(1)].iter().enumerate() {
            let stored = StoredClaim {
                id: 100 + i as i64,
                digest: digest(c),
            };
            inputs.existing.insert(ident(c), stored);
        }
        let d = derive(inputs);
        assert_eq!(
            (d.changes.inserted, d.changes.updated, d.changes.deleted),
            (0, 0, 0)
        );
        assert!(
            d.changes.by_nic.is_empty(),
            "an unchanged NIC is not listed"
        );
        assert!(d.inserts.is_none() && d.updates.is_none());
        let mut ids: Vec<i64> = d.checked.iter().map(|c| c.id).collect();
        ids.sort();
        assert_eq!(ids, vec![100, 101], "checked under their stored ids");
    }

    #[test]
    fn a_changed_claim_is_updated_and_a_lost_one_deleted() {
        let nics = [(1, state(1, &["10.0.0.4"]))];
        let first = derive(inputs_of(&nics));
        let c = &first.changes.by_nic[&nic_key(1)][0];
        let mut inputs = inputs_of(&nics);
        let old = StoredClaim {
            id: 7,
            digest: "old".into(),
        };
        inputs.existing.insert(ident(c), old);
        let lost = ClaimIdent {
            ip: "10.0.0.99/32".parse().unwrap(),
            ..ident(c)
        };
        let gone = StoredClaim {
            id: 8,
            digest: "x".into(),
        };
        inputs.existing.insert(lost, gone);
        let d = derive(inputs);
        assert_eq!(
            (d.changes.inserted, d.changes.updated, d.changes.deleted),
            (0, 1, 1)
        );
        assert_eq!(d.deleted, vec![8]);
        assert_eq!(d.updates.as_ref().map(|e| e.rows), Some(1));
        assert_eq!(d.checked.len(), 1);
        assert_eq!(d.checked[0].id, 7);
        assert!(d.changes.by_nic.contains_key(&nic_key(1)));
    }

    #[test]
    fn a_nic_that_lost_every_claim_is_listed_with_none() {
        let mut inputs = inputs_of(&[(1, state(1, &["10.0.0.4"]))]);
        let c = derive(inputs_of(&[(1, state(1, &["10.0.0.4"]))]));
        let claim = &c.changes.by_nic[&nic_key(1)][0];
        inputs.runs.clear();
        let stored = StoredClaim {
            id: 3,
            digest: digest(claim),
        };
        inputs.existing.insert(ident(claim), stored);
        let d = derive(inputs);
        assert_eq!(d.deleted, vec![3]);
        assert_eq!(d.changes.by_nic.get(&nic_key(1)).map(Vec::len), Some(0));
    }

    #[test]
    fn a_large_batch_on_two_threads_derives_as_its_halves_do() {
        let n = SPLIT_AT as u32 + 44;
        let nics: Vec<(u32, NicState)> = (0..n)
            .map(|i| (i, state(i, &[&format!("10.1.{}.{}", i / 200, i % 200 + 1)])))
            .collect();
        let whole = derive(inputs_of(&nics));
        let (a, b) = nics.split_at(nics.len() / 2);
        let (a, b) = (derive(inputs_of(a)), derive(inputs_of(b)));
        assert_eq!(whole.changes.inserted, n as usize);
        assert_eq!(
            whole.changes.inserted,
            a.changes.inserted + b.changes.inserted
        );
        let mut keys: Vec<&String> = whole.changes.by_nic.keys().collect();
        let mut halves: Vec<&String> = a
            .changes
            .by_nic
            .keys()
            .chain(b.changes.by_nic.keys())
            .collect();
        keys.sort();
        halves.sort();
        assert_eq!(keys, halves);
        // `inserted_at` points at every checked claim, in insert order.
        let at: Vec<usize> = (0..n as usize).collect();
        assert_eq!(whole.inserted_at, at);
        let checked: Vec<&ConflictClaim> = a.checked.iter().chain(&b.checked).collect();
        assert_eq!(whole.checked.iter().collect::<Vec<_>>(), checked);
    }

    #[test]
    fn an_event_after_a_live_run_ends_it() {
        let s = state(1, &["10.0.0.4"]);
        let mut inputs = inputs_of(&[(1, s.clone())]);
        let key = nic_key(1);
        let fp = s.fingerprint();
        inputs
            .runs
            .insert(key.clone(), vec![run(Some(5), &fp, 10, 20, true)]);
        assert!(
            inputs.end_live_runs_before_events().is_empty(),
            "no event: still live"
        );
        inputs.events.insert(
            key.clone(),
            vec![StoredEvent {
                key: "e1".into(),
                at: 30,
                created: false,
                state: None,
            }],
        );
        let ended = inputs.end_live_runs_before_events();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0, key);
        let r = &ended[0].1.runs[0];
        assert!(!r.live && r.dirty && r.id == Some(5));
        assert!(
            !inputs.runs[&key][0].live,
            "the inputs hold the runs as settled"
        );
    }
}
