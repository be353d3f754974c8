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

#[test]
fn snapshots_alone_bound_both_ends() {
    let s = state(1, 1, &["10.0.0.4"], Some(1));
    let claims = derive_claims(&[absent(100), snap(200, &s), snap(300, &s), absent(400)]);
    assert_eq!(claims.len(), 1);
    let c = &claims[0];
    assert_eq!(
        c.certain,
        Window {
            start: 200,
            end: 301
        }
    );
    assert_eq!(
        c.possible,
        Window {
            start: 101,
            end: 400
        }
    );
    assert!(!c.start_exact && !c.end_exact);
    assert_eq!(answer([c], 250).status, Status::Confirmed);
    assert_eq!(answer([c], 150).status, Status::Possible);
    assert_eq!(answer([c], 350).status, Status::Possible);
    assert_eq!(answer([c], 400).status, Status::Unknown);
    assert_eq!(answer([c], 100).status, Status::Unknown);
}

#[test]
fn events_fix_the_ends_exactly() {
    let s = state(1, 1, &["10.0.0.4"], None);
    let claims = derive_claims(&[write(100, &s, true), snap(200, &s), delete(500)]);
    let c = &claims[0];
    assert_eq!(
        c.certain,
        Window {
            start: 100,
            end: 500
        }
    );
    assert_eq!(c.possible, c.certain);
    assert_eq!(answer([c], 499).status, Status::Confirmed);
    assert_eq!(
        answer([c], 500).status,
        Status::Unknown,
        "a deleted NIC is never the answer after its delete"
    );
}

#[test]
fn a_delete_does_not_fix_when_the_vm_let_go() {
    // A NIC is detached before it is deleted, and the detach raises no NIC
    // event: between its last sighting on the VM and the delete, the VM is
    // not known.
    let s = state(1, 1, &["10.0.0.4"], Some(7));
    let claims = derive_claims(&[write(100, &s, true), snap(200, &s), delete(500)]);
    let c = &claims[0];
    assert!(c.start_exact && !c.end_exact);
    assert_eq!(
        c.certain,
        Window {
            start: 100,
            end: 201
        }
    );
    assert_eq!(
        c.possible,
        Window {
            start: 100,
            end: 500
        }
    );
    assert_eq!(answer([c], 150).status, Status::Confirmed);
    assert_eq!(answer([c], 300).status, Status::Possible);
    assert_eq!(answer([c], 500).status, Status::Unknown);
}

#[test]
fn an_update_to_another_vm_does_not_fix_the_change() {
    let a = state(1, 1, &["10.0.0.4"], Some(1));
    let b = state(1, 1, &["10.0.0.4"], Some(2));
    let claims = derive_claims(&[snap(100, &a), write(300, &b, false)]);
    let ca = claims.iter().find(|c| c.key.vm.ends_with("vm1")).unwrap();
    let cb = claims.iter().find(|c| c.key.vm.ends_with("vm2")).unwrap();
    assert!(!ca.end_exact && !cb.start_exact);
    assert_eq!(ca.possible.end, 300);
    assert_eq!(cb.possible.start, 101);
}

#[test]
fn an_open_claim_is_probable_after_its_last_sighting() {
    let s = state(1, 1, &["10.0.0.4"], None);
    let claims = derive_claims(&[snap(200, &s)]);
    let c = &claims[0];
    assert!(c.is_open());
    assert_eq!(answer([c], 200).status, Status::Confirmed);
    assert_eq!(answer([c], 10_000).status, Status::Probable);
    assert_eq!(
        answer([c], 100).status,
        Status::Possible,
        "before the first sighting, with no contrary evidence"
    );
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
    assert_eq!(
        c4.certain,
        Window {
            start: 100,
            end: 300
        }
    );
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
fn a_vm_change_starts_a_new_claim() {
    let a = state(1, 1, &["10.0.0.4"], Some(1));
    let b = state(1, 1, &["10.0.0.4"], Some(2));
    let claims = derive_claims(&[snap(100, &a), snap(200, &b)]);
    assert_eq!(claims.len(), 2);
    let refs: Vec<&Claim> = claims.iter().collect();
    // Between the two snapshots the VM is not known: both claims are possible.
    assert_eq!(answer(refs.iter().copied(), 150).status, Status::Ambiguous);
    let c1 = refs.iter().find(|c| c.key.vm.ends_with("vm1")).unwrap();
    assert_eq!(continuity(c1, &refs, 100, 300), Continuity::Probably);
}

#[test]
fn handover_between_nics_is_ambiguous_only_in_the_gap() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 1, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a), absent(200)]);
    claims.extend(derive_claims(&[absent(100), snap(200, &b)]));
    let refs: Vec<&Claim> = claims.iter().collect();
    assert_eq!(answer(refs.iter().copied(), 100).status, Status::Confirmed);
    assert_eq!(answer(refs.iter().copied(), 150).status, Status::Ambiguous);
    let ans = answer(refs.iter().copied(), 200);
    assert_eq!(ans.status, Status::Confirmed);
    assert_eq!(&*ans.owner.unwrap().key.nic, nic_id(2).key());
    let c1 = refs
        .iter()
        .find(|c| &*c.key.nic == nic_id(1).key())
        .unwrap();
    assert_eq!(continuity(c1, &refs, 100, 250), Continuity::No);
    assert!(find_conflicts(&refs).is_empty());
}

#[test]
fn same_ip_in_two_vnets_is_two_scopes() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 2, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a)]);
    claims.extend(derive_claims(&[snap(100, &b)]));
    assert_ne!(claims[0].key.scope, claims[1].key.scope);
    assert_eq!(answer(claims.iter(), 100).status, Status::Ambiguous);
    assert_eq!(
        answer(
            claims.iter().filter(|c| c.key.scope == claims[0].key.scope),
            100
        )
        .status,
        Status::Confirmed
    );
    let refs: Vec<&Claim> = claims.iter().collect();
    assert!(find_conflicts(&refs).is_empty());
}

#[test]
fn contradictory_evidence_is_a_conflict_and_never_confirmed() {
    let a = state(1, 1, &["10.0.0.4"], None);
    let b = state(2, 1, &["10.0.0.4"], None);
    let mut claims = derive_claims(&[snap(100, &a), snap(300, &a)]);
    claims.extend(derive_claims(&[snap(200, &b)]));
    let refs: Vec<&Claim> = claims.iter().collect();
    assert_eq!(find_conflicts(&refs), vec![(0, 1)]);
    assert_eq!(answer(refs.iter().copied(), 200).status, Status::Ambiguous);
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
}

fn lives() -> impl Strategy<Value = Vec<Life>> {
    prop::collection::vec((1i64..50, 1i64..200, any::<bool>()), 1..6).prop_map(|v| {
        let mut t = 0;
        v.into_iter()
            .enumerate()
            .map(|(i, (gap, len, events))| {
                let from = t + gap * 10;
                let to = from + len * 10;
                t = to;
                Life {
                    nic: i as u32 + 1,
                    from,
                    to,
                    events,
                }
            })
            .collect()
    })
}

/// Evidence as a collector would have it: complete snapshots every `every`
/// (each NIC seen while alive, absent otherwise) and, for NICs with events,
/// create and delete events.
fn evidence_for(lives: &[Life], every: Micros, horizon: Micros) -> BTreeMap<u32, Vec<Evidence>> {
    let mut out: BTreeMap<u32, Vec<Evidence>> = BTreeMap::new();
    for l in lives {
        let s = state(l.nic, 1, &["10.0.0.4"], Some(l.nic));
        let e = out.entry(l.nic).or_default();
        let mut t = every / 2;
        while t < horizon {
            if l.from <= t && t < l.to {
                e.push(snap(t, &s));
            } else {
                e.push(absent(t));
            }
            t += every;
        }
        if l.events {
            e.push(write(l.from, &s, true));
            e.push(delete(l.to));
        }
    }
    out
}

fn truth_at(lives: &[Life], t: Micros) -> Option<u32> {
    lives
        .iter()
        .find(|l| l.from <= t && t < l.to)
        .map(|l| l.nic)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_permutation_gives_the_same_claims(ls in lives(), every in 5i64..300, seed in any::<u64>()) {
        let horizon = ls.last().unwrap().to + 500;
        for (_, evs) in evidence_for(&ls, every, horizon) {
            let base = derive_claims(&evs);
            let mut shuffled = evs.clone();
            // A deterministic shuffle from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                shuffled.swap(i, (x % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(derive_claims(&shuffled), base);
        }
    }

    #[test]
    fn answers_are_never_wrong_when_the_evidence_is_right(ls in lives(), every in 5i64..300, probes in prop::collection::vec(0i64..3000, 50)) {
        let horizon = ls.last().unwrap().to + 500;
        let claims: Vec<Claim> = evidence_for(&ls, every, horizon).values().flat_map(|e| derive_claims(e)).collect();
        let refs: Vec<&Claim> = claims.iter().collect();
        // Consistent evidence: certain windows of different NICs never overlap.
        prop_assert!(find_conflicts(&refs).is_empty());
        for t in probes {
            let a = answer(refs.iter().copied(), t);
            let truth = truth_at(&ls, t);
            // Never names a NIC whose possible window does not contain T.
            if let Some(o) = a.owner { prop_assert!(o.possible.contains(t)); }
            for c in &a.candidates { prop_assert!(c.possible.contains(t)); }
            match a.status {
                Status::Confirmed => {
                    let o = a.owner.unwrap();
                    prop_assert_eq!(Some(o.key.nic.to_string()), truth.map(|n| nic_id(n).key().to_string()), "confirmed at {}", t);
                }
                // Probable can only be stale after the horizon of the evidence.
                Status::Probable if t < horizon - every => {
                    let o = a.owner.unwrap();
                    prop_assert_eq!(Some(o.key.nic.to_string()), truth.map(|n| nic_id(n).key().to_string()), "probable at {}", t);
                }
                Status::Ambiguous => {
                    if let Some(n) = truth {
                        prop_assert!(a.candidates.iter().any(|c| &*c.key.nic == nic_id(n).key()));
                    }
                }
                _ => {}
            }
            // A deleted NIC is never the answer after its delete.
            for l in ls.iter().filter(|l| l.events && t >= l.to) {
                prop_assert!(a.owner.is_none_or(|o| &*o.key.nic != nic_id(l.nic).key()));
                prop_assert!(a.candidates.iter().all(|o| &*o.key.nic != nic_id(l.nic).key()));
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
        for c in &refs {
            for t in [c.certain.start, c.certain.end - 1] {
                let ans = answer(refs.iter().copied(), t);
                if refs.iter().filter(|x| x.possible.contains(t)).count() > 1 {
                    prop_assert_eq!(ans.status, Status::Ambiguous);
                }
            }
        }
    }
}
