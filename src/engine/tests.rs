//! The engine's laws, as examples and as properties over generated estates.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::{ArmId, IpAssignment, NicState};

const SUB: &str = "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg";

fn nic_id(n: u32) -> ArmId {
    ArmId::parse(&format!(
        "{SUB}/providers/Microsoft.Network/networkInterfaces/nic{n}"
    ))
    .unwrap()
}

fn subnet(vnet: u32) -> ArmId {
    ArmId::parse(&format!(
        "{SUB}/providers/Microsoft.Network/virtualNetworks/vnet{vnet}/subnets/default"
    ))
    .unwrap()
}

fn state(n: u32, vnet: u32, ips: &[&str], vm: Option<u32>) -> NicState {
    NicState {
        id: nic_id(n),
        name: format!("nic{n}"),
        mac: None,
        vm: vm.map(|v| {
            ArmId::parse(&format!(
                "{SUB}/providers/Microsoft.Compute/virtualMachines/vm{v}"
            ))
            .unwrap()
        }),
        ips: ips
            .iter()
            .map(|ip| IpAssignment {
                ip: ip.parse::<std::net::IpAddr>().unwrap().into(),
                config: "ipconfig1".into(),
                primary: true,
                subnet: Some(subnet(vnet)),
            })
            .collect(),
    }
}

fn ev(at: Micros, kind: EvidenceKind, obs: Observation) -> Evidence {
    Evidence {
        at,
        kind,
        id: format!("{}-{at}", kind.as_str()),
        created: false,
        observation: obs,
    }
}

fn snap(at: Micros, s: &NicState) -> Evidence {
    ev(
        at,
        EvidenceKind::Snapshot,
        Observation::Present(std::sync::Arc::new(s.clone())),
    )
}
fn absent(at: Micros) -> Evidence {
    ev(at, EvidenceKind::SnapshotAbsence, Observation::Absent)
}
fn write(at: Micros, s: &NicState, created: bool) -> Evidence {
    let mut e = ev(
        at,
        EvidenceKind::ActivityWrite,
        Observation::Present(std::sync::Arc::new(s.clone())),
    );
    e.created = created;
    e
}
fn delete(at: Micros) -> Evidence {
    ev(at, EvidenceKind::ActivityDelete, Observation::Absent)
}

/// Coverage that is never stale: the answer rule without "stale is not
/// probable", for the tests of the other rules.
struct Fresh;

impl Watching for Fresh {
    fn coverage(&self, _: &str) -> Option<&Coverage> {
        None
    }
    fn stale_at(&self, _: &str, _: Micros) -> Option<Stale> {
        None
    }
}

fn ans<'a>(claims: impl IntoIterator<Item = &'a Claim>, t: Micros) -> Answer<'a> {
    let refs: Vec<&Claim> = claims.into_iter().collect();
    answer(&refs, t, &Fresh)
}

fn owner_nic(a: &Answer<'_>) -> Option<String> {
    a.owner.as_ref().map(|o| o.claim.key.nic.to_string())
}

fn vm_name(a: &Answer<'_>) -> Option<Option<String>> {
    let v = a.vm.as_ref()?;
    v.attachment
        .map(|x| x.vm.as_ref().map(|v| v.name().to_string()))
}

fn w(start: Micros, end: Micros) -> Window {
    Window { start, end }
}

#[test]
fn snapshots_alone_bound_both_ends() {
    let s = state(1, 1, &["10.0.0.4"], Some(1));
    let claims = derive_claims(&[absent(100), snap(200, &s), snap(300, &s), absent(400)]);
    assert_eq!(claims.len(), 1);
    let c = &claims[0];
    assert_eq!(c.certain, w(200, 301));
    assert_eq!(c.possible, w(101, 400));
    assert!(!c.start_exact && !c.end_exact);
    assert_eq!(ans([c], 250).status, Status::Confirmed);
    assert_eq!(ans([c], 150).status, Status::Possible);
    assert_eq!(ans([c], 350).status, Status::Possible);
    assert_eq!(ans([c], 400).status, Status::Unknown);
    assert_eq!(ans([c], 100).status, Status::Unknown);
    // The VM is never surer than the NIC.
    assert_eq!(ans([c], 250).vm.unwrap().status, Status::Confirmed);
    assert_eq!(ans([c], 350).vm.unwrap().status, Status::Possible);
}

#[test]
fn events_fix_the_ends_exactly() {
    let s = state(1, 1, &["10.0.0.4"], None);
    let claims = derive_claims(&[write(100, &s, true), snap(200, &s), delete(500)]);
    let c = &claims[0];
    assert_eq!(c.certain, w(100, 500));
    assert_eq!(c.possible, c.certain);
    assert_eq!(ans([c], 499).status, Status::Confirmed);
    assert_eq!(
        ans([c], 500).status,
        Status::Unknown,
        "a deleted NIC is never the answer after its delete"
    );
}

#[test]
fn a_delete_ends_the_claim_exactly_whatever_vm_it_showed() {
    // Azure refuses to delete a NIC attached to a VM, and the detach raises
    // no NIC event: the NIC held the IP up to the delete; its VM after its
    // last sighting on it is that VM or none.
    let s = state(1, 1, &["10.0.0.4"], Some(7));
    let claims = derive_claims(&[write(100, &s, true), snap(200, &s), delete(500)]);
    let c = &claims[0];
    assert!(c.start_exact && c.end_exact);
    assert_eq!(c.certain, w(100, 500));
    assert_eq!(c.vms.len(), 2);
    assert_eq!(c.vms[0].certain, w(100, 201));
    assert_eq!(c.vms[0].possible, w(100, 500));
    assert_eq!(
        (c.vms[1].vm.clone(), c.vms[1].possible),
        (None, w(201, 500))
    );
    let at = ans([c], 150);
    assert_eq!(
        (at.status, at.vm.as_ref().unwrap().status),
        (Status::Confirmed, Status::Confirmed)
    );
    assert_eq!(vm_name(&at), Some(Some("vm7".into())));
    let gap = ans([c], 300);
    assert_eq!(gap.status, Status::Confirmed);
    let vm = gap.vm.unwrap();
    assert_eq!(vm.status, Status::Ambiguous);
    let names: Vec<Option<&str>> = vm
        .candidates
        .iter()
        .map(|a| a.vm.as_ref().map(|v| v.name()))
        .collect();
    assert_eq!(names, vec![Some("vm7"), None]);
    assert_eq!(ans([c], 500).status, Status::Unknown);
}

#[test]
fn a_nic_moved_to_another_vm_keeps_one_claim() {
    let a = state(1, 1, &["10.0.0.4"], Some(1));
    let b = state(1, 1, &["10.0.0.4"], Some(2));
    let claims = derive_claims(&[snap(100, &a), snap(200, &b)]);
    assert_eq!(claims.len(), 1);
    let c = &claims[0];
    assert_eq!(c.certain, w(100, 201));
    // Between the sightings the NIC is confirmed and the VM is "1 or 2".
    let mid = ans([c], 150);
    assert_eq!(mid.status, Status::Confirmed);
    assert_eq!(mid.vm.as_ref().unwrap().status, Status::Ambiguous);
    assert_eq!(vm_name(&ans([c], 100)), Some(Some("vm1".into())));
    assert_eq!(vm_name(&ans([c], 200)), Some(Some("vm2".into())));
    // Held on from 100 to 300: the NIC probably, but not on the same VM.
    let at = ans([c], 100);
    let held = continuity(at.owner.as_ref().unwrap(), &[c], 100, 300, &Fresh);
    assert_eq!((held.nic, held.vm), (Continuity::Probably, Continuity::No));
    assert_eq!(held.both(), Continuity::No);
    let at = ans([c], 200);
    let held = continuity(at.owner.as_ref().unwrap(), &[c], 200, 300, &Fresh);
    assert_eq!(
        (held.nic, held.vm),
        (Continuity::Probably, Continuity::Probably)
    );
}

#[test]
fn an_update_showing_another_vm_does_not_fix_the_change() {
    let a = state(1, 1, &["10.0.0.4"], Some(1));
    let b = state(1, 1, &["10.0.0.4"], Some(2));
    let claims = derive_claims(&[snap(100, &a), write(300, &b, false)]);
    assert_eq!(claims.len(), 1);
    let c = &claims[0];
    assert_eq!((c.vms[0].possible.end, c.vms[1].possible.start), (300, 101));
    assert_eq!(ans([c], 200).vm.unwrap().status, Status::Ambiguous);
}

#[test]
fn an_open_claim_is_probable_after_its_last_sighting() {
    let s = state(1, 1, &["10.0.0.4"], None);
    let claims = derive_claims(&[snap(200, &s)]);
    let c = &claims[0];
    assert!(c.is_open());
    assert_eq!(ans([c], 200).status, Status::Confirmed);
    assert_eq!(ans([c], 10_000).status, Status::Probable);
    assert_eq!(
        ans([c], 100).status,
        Status::Possible,
        "before the first sighting, with no contrary evidence"
    );
}

#[test]
fn stale_is_not_probable() {
    let s = state(1, 1, &["10.0.0.4"], None);
    let claims = derive_claims(&[snap(200, &s)]);
    let c = &claims[0];
    let sub = c.subscription().to_string();
    let complete = |at| Complete {
        at,
        id: format!("c{at}").into(),
    };
    let policy = Freshness {
        min: 1,
        ..Freshness::default()
    };
    // Complete snapshots every 100: a bound of 150.
    let cov = Coverage::new(
        vec![complete(0), complete(100), complete(200)],
        None,
        &policy,
    );
    assert_eq!(cov.bound, 150);
    let watch: std::collections::HashMap<String, Coverage> = [(sub, cov)].into();
    let a = answer(&[c], 350, &watch);
    assert_eq!((a.status, a.stale.is_none()), (Status::Probable, true));
    let a = answer(&[c], 351, &watch);
    assert_eq!(a.status, Status::Possible);
    let st = a.stale.unwrap();
    assert_eq!((st.age, st.bound), (Some(151), 150));
    assert_eq!(a.vm.unwrap().status, Status::Possible);
    // Nothing watched the subscription: an open claim is never probable.
    let none: std::collections::HashMap<String, Coverage> = Default::default();
    let a = answer(&[c], 201, &none);
    assert_eq!(a.status, Status::Possible);
    assert!(a.stale.unwrap().horizon.is_none());
    // Inside the certain window, staleness does not matter.
    assert_eq!(answer(&[c], 200, &none).status, Status::Confirmed);
}

#[test]
fn a_certain_start_ends_the_others_possible_windows() {
    // NIC 1 last seen at 100, its delete lost; NIC 2 created at 300 exactly.
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 1, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a)]);
    claims.extend(derive_claims(&[write(300, &b, true), snap(400, &b)]));
    let at = ans(&claims, 350);
    assert_eq!(at.status, Status::Confirmed);
    assert_eq!(owner_nic(&at), Some(nic_id(2).key().to_string()));
    // Before it, NIC 1 is no longer probable: its end lies before 300.
    let before = ans(&claims, 200);
    assert_eq!(before.status, Status::Possible);
    let o = before.owner.unwrap();
    assert_eq!(o.possible, w(NEG_INF, 300));
    assert_eq!(
        o.end_by.map(|c| c.key.nic.to_string()),
        Some(nic_id(2).key().to_string())
    );
    assert!(find_conflicts(&claims.iter().collect::<Vec<_>>()).is_empty());
}

#[test]
fn a_certain_end_starts_the_others_possible_windows() {
    // NIC 1 seen 100 and 200, gone at 400; NIC 2 first seen at 500 with
    // nothing before it.
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 1, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a), snap(200, &a), absent(400)]);
    claims.extend(derive_claims(&[snap(500, &b)]));
    // Inside NIC 1's certain window, NIC 2 is ruled out.
    let at = ans(&claims, 150);
    assert_eq!(at.status, Status::Confirmed);
    assert_eq!(owner_nic(&at), Some(nic_id(1).key().to_string()));
    // After it, either.
    assert_eq!(ans(&claims, 300).status, Status::Ambiguous);
    let refs: Vec<&Claim> = claims.iter().collect();
    let b2 = &exclusive(&refs)[1];
    assert_eq!((b2.possible, b2.start_by), (w(201, POS_INF), Some(0)));
}

#[test]
fn an_update_changes_the_ip_exactly() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(1, 1, &["10.0.0.5"], None);
    let claims = derive_claims(&[write(100, &a, true), write(300, &b, false)]);
    let c4 = claims
        .iter()
        .find(|c| c.key.ip.to_string() == "10.0.0.4/32")
        .unwrap();
    let c5 = claims
        .iter()
        .find(|c| c.key.ip.to_string() == "10.0.0.5/32")
        .unwrap();
    assert_eq!(c4.certain, w(100, 300));
    assert_eq!(c5.possible.start, 300);
    assert!(c5.start_exact);
}

#[test]
fn an_update_after_an_absence_does_not_fix_the_start() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let claims = derive_claims(&[absent(100), write(300, &a, false)]);
    assert_eq!(claims[0].possible.start, 101);
    assert!(!claims[0].start_exact);
}

#[test]
fn handover_between_nics_is_ambiguous_only_in_the_gap() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 1, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a), absent(200)]);
    claims.extend(derive_claims(&[absent(100), snap(200, &b)]));
    let refs: Vec<&Claim> = claims.iter().collect();
    assert_eq!(ans(refs.iter().copied(), 100).status, Status::Confirmed);
    assert_eq!(ans(refs.iter().copied(), 150).status, Status::Ambiguous);
    let a2 = ans(refs.iter().copied(), 200);
    assert_eq!(a2.status, Status::Confirmed);
    assert_eq!(owner_nic(&a2), Some(nic_id(2).key().to_string()));
    let a1 = ans(refs.iter().copied(), 100);
    let held = continuity(a1.owner.as_ref().unwrap(), &refs, 100, 250, &Fresh);
    assert_eq!(held.nic, Continuity::No);
    assert!(find_conflicts(&refs).is_empty());
}

#[test]
fn same_ip_in_two_vnets_is_two_scopes() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 2, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a)]);
    claims.extend(derive_claims(&[snap(100, &b)]));
    assert_ne!(claims[0].key.scope, claims[1].key.scope);
    assert_eq!(ans(claims.iter(), 100).status, Status::Ambiguous);
    assert_eq!(
        ans(
            claims.iter().filter(|c| c.key.scope == claims[0].key.scope),
            100
        )
        .status,
        Status::Confirmed
    );
    let refs: Vec<&Claim> = claims.iter().collect();
    assert!(find_conflicts(&refs).is_empty());
    // Exclusivity holds within a VNet only.
    assert!(
        exclusive(&refs)
            .iter()
            .all(|b| b.start_by.is_none() && b.end_by.is_none())
    );
}

#[test]
fn contradictory_evidence_is_a_conflict_and_never_confirmed() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 1, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a), snap(300, &a)]);
    claims.extend(derive_claims(&[snap(200, &b)]));
    let refs: Vec<&Claim> = claims.iter().collect();
    assert_eq!(find_conflicts(&refs), vec![(0, 1)]);
    assert_eq!(ans(refs.iter().copied(), 200).status, Status::Ambiguous);
}

#[test]
fn prefixes_are_claims_on_the_whole_prefix() {
    let s = state(1, 1, &[], None);
    let mut s = s;
    s.ips.push(IpAssignment {
        ip: "172.20.2.16/28".parse().unwrap(),
        config: "ipconfig2".into(),
        primary: false,
        subnet: Some(subnet(1)),
    });
    let claims = derive_claims(&[snap(100, &s)]);
    assert_eq!(claims.len(), 1);
    assert!(
        claims[0]
            .key
            .ip
            .contains(&"172.20.2.20".parse::<std::net::IpAddr>().unwrap())
    );
}

// ---- properties over generated estates -------------------------------------

/// One IP in one VNet, owned in turn by several NICs with gaps between them.
#[derive(Debug, Clone)]
struct Life {
    nic: u32,
    from: Micros,
    to: Micros,
    /// Activity events are emitted for this NIC (scale-set NICs have none).
    events: bool,
    /// The NIC moves to a second VM at this instant (a VM operation: no
    /// NIC event).
    moved: Option<Micros>,
}

impl Life {
    fn vm_at(&self, t: Micros) -> u32 {
        match self.moved {
            Some(m) if t >= m => self.nic * 10 + 1,
            _ => self.nic * 10,
        }
    }
}

fn lives() -> impl Strategy<Value = Vec<Life>> {
    prop::collection::vec(
        (
            1i64..50,
            1i64..200,
            any::<bool>(),
            prop::option::of(0i64..100),
        ),
        1..6,
    )
    .prop_map(|v| {
        let mut t = 0;
        v.into_iter()
            .enumerate()
            .map(|(i, (gap, len, events, moved))| {
                let from = t + gap * 10;
                let to = from + len * 10;
                t = to;
                Life {
                    nic: i as u32 + 1,
                    from,
                    to,
                    events,
                    moved: moved
                        .map(|m| from + (to - from) * m / 100)
                        .filter(|m| *m > from),
                }
            })
            .collect()
    })
}

/// Evidence as a collector would have it: complete snapshots every `every`
/// (each NIC seen while alive, absent otherwise) and, for NICs with events,
/// create and delete events (the create with the NIC's first VM). With
/// `lose`, the deletes are lost.
fn evidence_for(
    lives: &[Life],
    every: Micros,
    horizon: Micros,
    lose: bool,
) -> BTreeMap<u32, Vec<Evidence>> {
    let mut out: BTreeMap<u32, Vec<Evidence>> = BTreeMap::new();
    for l in lives {
        let s = |t| state(l.nic, 1, &["10.0.0.4"], Some(l.vm_at(t)));
        let e = out.entry(l.nic).or_default();
        let mut t = every / 2;
        while t < horizon {
            if l.from <= t && t < l.to {
                e.push(snap(t, &s(t)));
            } else {
                e.push(absent(t));
            }
            t += every;
        }
        if l.events {
            e.push(write(l.from, &s(l.from), true));
            if !lose {
                e.push(delete(l.to));
            }
        }
    }
    out
}

fn truth_at(lives: &[Life], t: Micros) -> Option<&Life> {
    lives.iter().find(|l| l.from <= t && t < l.to)
}

fn shuffle<T>(v: &mut [T], seed: u64) {
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// What an answer says, owned, to compare two answers: status, owner and
/// its bounded window, candidates, VM status and VM.
type Said = (
    Status,
    Option<(String, Window)>,
    Vec<String>,
    Option<(Status, Option<String>)>,
);

fn said(a: &Answer<'_>) -> Said {
    (
        a.status,
        a.owner
            .as_ref()
            .map(|o| (o.claim.key.nic.to_string(), o.possible)),
        a.candidates
            .iter()
            .map(|o| o.claim.key.nic.to_string())
            .collect(),
        a.vm.as_ref().map(|v| {
            (
                v.status,
                v.attachment
                    .and_then(|x| x.vm.as_ref())
                    .map(|v| v.key().to_string()),
            )
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_permutation_gives_the_same_claims_and_answers(ls in lives(), every in 5i64..300, seed in any::<u64>(), probes in prop::collection::vec(0i64..3000, 20)) {
        let horizon = ls.last().unwrap().to + 500;
        let mut all = Vec::new();
        for (_, evs) in evidence_for(&ls, every, horizon, seed % 3 == 0) {
            let base = derive_claims(&evs);
            let mut shuffled = evs.clone();
            shuffle(&mut shuffled, seed);
            prop_assert_eq!(derive_claims(&shuffled), base.clone());
            all.extend(base);
        }
        // Answers do not depend on the order the claims are given in either.
        let mut mixed: Vec<&Claim> = all.iter().collect();
        shuffle(&mut mixed, seed ^ 0x5555);
        let ordered: Vec<&Claim> = all.iter().collect();
        for t in probes {
            prop_assert_eq!(said(&answer(&ordered, t, &Fresh)), said(&answer(&mixed, t, &Fresh)));
        }
    }

    #[test]
    fn answers_are_never_wrong_when_the_evidence_is_right(ls in lives(), every in 5i64..300, lose in any::<bool>(), probes in prop::collection::vec(0i64..3000, 50)) {
        let horizon = ls.last().unwrap().to + 500;
        let claims: Vec<Claim> = evidence_for(&ls, every, horizon, lose).values().flat_map(|e| derive_claims(e)).collect();
        let refs: Vec<&Claim> = claims.iter().collect();
        // Consistent evidence: certain windows of different NICs never overlap.
        prop_assert!(find_conflicts(&refs).is_empty());
        for t in probes {
            let a = answer(&refs, t, &Fresh);
            let truth = truth_at(&ls, t);
            let truth_nic = truth.map(|l| nic_id(l.nic).key().to_string());
            // Never names a NIC whose possible window does not contain T.
            if let Some(o) = &a.owner { prop_assert!(o.possible.contains(t) && o.claim.possible.contains(t)); }
            for c in &a.candidates { prop_assert!(c.possible.contains(t)); }
            match a.status {
                Status::Confirmed => {
                    prop_assert_eq!(owner_nic(&a), truth_nic.clone(), "confirmed at {}", t);
                }
                // Probable can only be stale after the horizon of the evidence.
                Status::Probable if t < horizon - every => {
                    prop_assert_eq!(owner_nic(&a), truth_nic.clone(), "probable at {}", t);
                }
                // The owner is among the candidates, unless no evidence ever
                // showed it (a NIC that lived between two snapshots).
                Status::Ambiguous => {
                    if let Some(n) = truth_nic.as_ref().filter(|n| refs.iter().any(|c| &*c.key.nic == n.as_str())) {
                        prop_assert!(a.candidates.iter().any(|c| &*c.claim.key.nic == n.as_str()));
                    }
                }
                _ => {}
            }
            // A confirmed VM is the VM the NIC was on.
            if let (Some(v), Some(l)) = (&a.vm, truth)
                && v.status == Status::Confirmed
                && owner_nic(&a) == truth_nic
            {
                let got = v.attachment.and_then(|x| x.vm.as_ref()).map(|v| v.name().to_string());
                prop_assert_eq!(got, Some(format!("vm{}", l.vm_at(t))), "VM at {}", t);
            }
            // A deleted NIC is never the answer after its delete.
            for l in ls.iter().filter(|l| l.events && !lose && t >= l.to) {
                let n = nic_id(l.nic).key().to_string();
                prop_assert!(owner_nic(&a).as_deref() != Some(n.as_str()));
                prop_assert!(a.candidates.iter().all(|o| *o.claim.key.nic != *n));
            }
        }
    }

    #[test]
    fn exclusivity_narrows_possible_windows_and_keeps_the_truth(ls in lives(), every in 5i64..300, lose in any::<bool>()) {
        let horizon = ls.last().unwrap().to + 500;
        let claims: Vec<Claim> = evidence_for(&ls, every, horizon, lose).values().flat_map(|e| derive_claims(e)).collect();
        let refs: Vec<&Claim> = claims.iter().collect();
        let bounds = exclusive(&refs);
        for (c, b) in refs.iter().zip(&bounds) {
            // Never wider than the claim's own, never narrower than its
            // certain window: certain windows are untouched, so two NICs
            // are never made certain at once.
            prop_assert!(b.possible.start >= c.possible.start && b.possible.end <= c.possible.end);
            prop_assert!(b.possible.start <= c.certain.start && b.possible.end >= c.certain.end);
            // Still holds every instant the NIC truly held the IP.
            for l in ls.iter().filter(|l| nic_id(l.nic).key() == &*c.key.nic) {
                for t in [l.from, (l.from + l.to) / 2, l.to - 1] {
                    if c.possible.contains(t) {
                        prop_assert!(b.possible.contains(t), "{} at {}", l.nic, t);
                    }
                }
            }
        }
        for t in (0..horizon).step_by(7) {
            prop_assert!(refs.iter().filter(|c| c.certain.contains(t)).count() <= 1);
        }
    }

    #[test]
    fn a_stale_claim_is_never_probable(ls in lives(), every in 5i64..300, snaps in prop::collection::vec(0i64..3000, 0..8), probes in prop::collection::vec(0i64..4000, 30)) {
        let horizon = ls.last().unwrap().to + 500;
        let claims: Vec<Claim> = evidence_for(&ls, every, horizon, true).values().flat_map(|e| derive_claims(e)).collect();
        let refs: Vec<&Claim> = claims.iter().collect();
        let completes: Vec<Complete> = snaps.iter().map(|&at| Complete { at, id: format!("c{at}").into() }).collect();
        let cov = Coverage::new(completes, None, &Freshness { min: 1, ..Freshness::default() });
        let sub = nic_id(1).subscription();
        let watch: std::collections::HashMap<String, Coverage> = [(sub, cov.clone())].into();
        for t in probes {
            let a = answer(&refs, t, &watch);
            if a.status == Status::Probable {
                prop_assert!(cov.stale_at(t).is_none());
            }
            if a.stale.is_some() {
                prop_assert_eq!(a.status, Status::Possible);
            }
        }
    }

    #[test]
    fn conflicts_are_reported_not_dropped(a in prop::collection::vec(0i64..1000, 1..5), b in prop::collection::vec(0i64..1000, 1..5)) {
        let sa = state(1, 1, &["10.0.0.4"], None);
        let sb = state(2, 1, &["10.0.0.4"], None);
        let mut claims = derive_claims(&a.iter().map(|t| snap(*t, &sa)).collect::<Vec<_>>());
        claims.extend(derive_claims(&b.iter().map(|t| snap(*t, &sb)).collect::<Vec<_>>()));
        let refs: Vec<&Claim> = claims.iter().collect();
        let conflicts = find_conflicts(&refs);
        for i in 0..refs.len() {
            for j in i + 1..refs.len() {
                let overlap = refs[i].key.nic != refs[j].key.nic && refs[i].certain.overlaps(&refs[j].certain);
                prop_assert_eq!(overlap, conflicts.contains(&(i, j)));
            }
        }
        // Where certain windows overlap, the answer is never confirmed.
        for (i, j) in conflicts {
            let (x, y) = (refs[i], refs[j]);
            let t = x.certain.start.max(y.certain.start);
            prop_assert_eq!(answer(&refs, t, &Fresh).status, Status::Ambiguous);
        }
    }
}
