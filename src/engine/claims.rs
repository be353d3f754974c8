//! A NIC's evidence → claims: "NIC n held IP i in VNet v (attached to VM m)",
//! each end bounded by the evidence on either side.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Evidence, EvidenceKind, EvidenceRef, Micros, NEG_INF, Observation, POS_INF, Window};
use crate::model::{ArmId, Mac, NicState};

/// What makes two claims the same claim: the NIC, the scope (VNet key, or ""
/// when the ip configuration names no subnet) and the IP or prefix. The VM
/// is not part of it: a NIC moved to another VM keeps its claim on the IP,
/// and the VM is an answer of its own inside it ([`Claim::vms`]).
///
/// Its strings are shared (`Arc<str>`): a claim's key holds the same copy as
/// its NIC's id, the index's VNet ids and other claims of the NIC.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClaimKey {
    pub nic: Arc<str>,
    pub scope: Arc<str>,
    pub ip: IpNet,
}

/// The VM a NIC was attached to (or none) during part of a claim: a maximal
/// run of the claim's evidence that showed the NIC on that VM. VM changes
/// are VM operations, never NIC events, so no NIC evidence fixes either end
/// exactly: between the last sighting on one VM and the first on the next,
/// either may be the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `None`: the NIC was attached to no VM.
    pub vm: Option<ArmId>,
    /// Proven: from the first to the last sighting on this VM.
    pub certain: Window,
    /// Not ruled out: from just after the last sighting on another VM (or
    /// the claim's possible start) to the first sighting on the next (or
    /// the claim's possible end).
    pub possible: Window,
    pub first: EvidenceRef,
    pub last: EvidenceRef,
}

impl Attachment {
    /// The VM's key ("" for none).
    pub fn vm_key(&self) -> &str {
        self.vm.as_ref().map(ArmId::key).unwrap_or("")
    }
}

/// One maximal run of evidence in which a NIC held an IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub key: ClaimKey,
    /// Display values, from the last evidence in which the NIC held the IP.
    pub nic: ArmId,
    pub nic_name: String,
    pub mac: Option<Mac>,
    pub subnet: Option<ArmId>,
    pub vnet: Option<ArmId>,
    /// Ownership proven: from the latest possible start to the earliest possible end.
    pub certain: Window,
    /// Ownership not ruled out: from the earliest possible start to the latest possible end.
    pub possible: Window,
    /// An event fixed the start (both windows start together).
    pub start_exact: bool,
    /// An event fixed the end (both windows end together).
    pub end_exact: bool,
    /// Bounding evidence: the contrary evidence before (if any), the first and
    /// last evidence that showed the IP held, the contrary evidence after (if any).
    pub before: Option<EvidenceRef>,
    pub first: EvidenceRef,
    pub last: EvidenceRef,
    pub after: Option<EvidenceRef>,
    /// The VMs the NIC was attached to while it held the IP, oldest first;
    /// together their possible windows cover the claim's.
    pub vms: Vec<Attachment>,
    /// Set by the store, not the engine: the claim's last evidence is the end
    /// of a live observation run, so its certain window and last evidence
    /// extend to its subscription's horizon (the latest finished complete
    /// snapshot) without being rewritten. See [`Claim::extend_to`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub live: bool,
}

impl Claim {
    /// No evidence has ended it yet: the NIC held the IP when last seen.
    pub fn is_open(&self) -> bool {
        self.possible.end == POS_INF
    }

    /// The subscription of the NIC (lower case), read off its key.
    pub fn subscription(&self) -> &str {
        ArmId::subscription_of_key(&self.key.nic)
    }

    /// The VM of the claim's last evidence.
    pub fn last_vm(&self) -> Option<&ArmId> {
        self.vms
            .iter()
            .rev()
            .find(|a| a.last == self.last)
            .and_then(|a| a.vm.as_ref())
    }

    /// A live claim read at its subscription's horizon: a complete snapshot
    /// at `at` (id `id`) listed the NIC as the claim's last evidence did.
    /// Returns whether anything changed; does nothing to other claims.
    pub fn extend_to(&mut self, at: Micros, id: &Arc<str>) -> bool {
        if !self.extends_to(at) {
            return false;
        }
        let last = EvidenceRef {
            kind: EvidenceKind::Snapshot,
            id: id.clone(),
            at,
        };
        // The snapshot listed the NIC in the same state, on the same VM.
        if let Some(a) = self.vms.iter_mut().rev().find(|a| a.last == self.last) {
            a.certain.end = at.saturating_add(1);
            a.last = last.clone();
        }
        self.certain.end = at.saturating_add(1);
        self.last = last;
        true
    }

    /// Whether [`Claim::extend_to`] at `at` would change the claim.
    pub fn extends_to(&self, at: Micros) -> bool {
        self.live && at >= self.last.at && at.saturating_add(1) > self.certain.end
    }

    /// The evidence behind the claim, oldest first.
    pub fn evidence(&self) -> Vec<&EvidenceRef> {
        let mut v: Vec<&EvidenceRef> = Vec::with_capacity(4);
        v.extend(self.before.as_ref());
        v.push(&self.first);
        if self.last != self.first {
            v.push(&self.last);
        }
        v.extend(self.after.as_ref());
        v
    }
}

fn kind_rank(k: EvidenceKind) -> u8 {
    match k {
        EvidenceKind::SnapshotAbsence => 0,
        EvidenceKind::Snapshot => 1,
        EvidenceKind::ActivityWrite => 2,
        EvidenceKind::ActivityDelete => 3,
    }
}

fn vm_key(s: &NicState) -> &str {
    s.vm.as_ref().map(ArmId::key).unwrap_or("")
}

/// Derives every claim of one NIC from all of its evidence. The result does
/// not depend on the order of `evidence`: it is sorted here by (time, kind,
/// id), so the same evidence in any arrival order gives the same claims.
pub fn derive_claims(evidence: &[Evidence]) -> Vec<Claim> {
    let mut ev: Vec<&Evidence> = evidence.iter().collect();
    ev.sort_by(|a, b| (a.at, kind_rank(a.kind), &a.id).cmp(&(b.at, kind_rank(b.kind), &b.id)));
    ev.dedup_by(|a, b| a.at == b.at && a.kind == b.kind && a.id == b.id);

    // Every (scope, ip) the NIC ever held. Borrowed from the evidence:
    // nothing is allocated per evidence.
    let mut keys: Vec<(&str, IpNet)> = Vec::new();
    for e in &ev {
        if let Observation::Present(s) = &e.observation {
            for a in &s.ips {
                let k = (a.vnet_key(), a.ip);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
    }
    keys.sort();

    let mut out = Vec::new();
    let mut held: Vec<bool> = Vec::with_capacity(ev.len());
    for (scope, ip) in keys {
        held.clear();
        held.extend(ev.iter().map(|e| match &e.observation {
            Observation::Present(s) => s.holds(scope, &ip),
            Observation::Absent => false,
        }));
        let mut i = 0;
        while i < ev.len() {
            if !held[i] {
                i += 1;
                continue;
            }
            let a = i;
            while i + 1 < ev.len() && held[i + 1] {
                i += 1;
            }
            let b = i;
            i += 1;
            out.push(build_claim(&ev, a, b, scope, ip));
        }
    }
    out
}

fn state_of(e: &Evidence) -> &NicState {
    match &e.observation {
        Observation::Present(s) => s,
        Observation::Absent => unreachable!("a held evidence is present"),
    }
}

fn build_claim(ev: &[&Evidence], a: usize, b: usize, scope: &str, ip: IpNet) -> Claim {
    let first = ev[a];
    let last = ev[b];
    let before = a.checked_sub(1).map(|j| ev[j]);
    let after = ev.get(b + 1).copied();

    // Events mark the instant a NIC's own properties (its IPs) changed:
    // - the start, when the write created the NIC, or when the evidence just
    //   before shows the NIC without this IP (an update that assigned it);
    //   after an absence the create was not seen;
    // - the end, when a write shows the NIC without this IP, or a delete
    //   ends it. Whatever VM the NIC last showed: Azure refuses to delete
    //   a NIC attached to a VM, and a VM change is not a NIC event, so the
    //   VM does not bear on when the NIC held the IP.
    let start_exact = first.kind == EvidenceKind::ActivityWrite
        && (first.created
            || before.is_some_and(|p| matches!(p.observation, Observation::Present(_))));
    let end_exact = after.is_some_and(|n| n.kind.is_event());

    let possible_start = if start_exact {
        first.at
    } else {
        before.map_or(NEG_INF, |p| p.at.saturating_add(1))
    };
    let possible_end = after.map_or(POS_INF, |n| n.at);
    let certain_end = if end_exact {
        after.map_or(POS_INF, |n| n.at)
    } else {
        last.at.saturating_add(1)
    };
    let possible = Window {
        start: possible_start,
        end: possible_end,
    };

    let state = state_of(last);
    let assignment = state
        .ips
        .iter()
        .find(|x| x.ip == ip && x.vnet_key() == scope)
        .expect("held evidence holds the ip");

    Claim {
        key: ClaimKey {
            nic: state.id.shared_key(),
            scope: scope.into(),
            ip,
        },
        nic: state.id.clone(),
        nic_name: state.name.clone(),
        mac: state.mac.clone(),
        subnet: assignment.subnet.clone(),
        vnet: assignment.vnet(),
        certain: Window {
            start: first.at,
            end: certain_end,
        },
        possible,
        start_exact,
        end_exact,
        before: if start_exact {
            None
        } else {
            before.map(EvidenceRef::from)
        },
        first: EvidenceRef::from(first),
        last: EvidenceRef::from(last),
        after: after.map(EvidenceRef::from),
        vms: attachments(&ev[a..=b], possible, after),
        live: false,
    }
}

/// The VMs of a claim's evidence `held` (all of it showing the IP held),
/// whose possible window is `possible`, ended by `after`.
fn attachments(held: &[&Evidence], possible: Window, after: Option<&Evidence>) -> Vec<Attachment> {
    let mut out: Vec<Attachment> = Vec::new();
    let mut i = 0;
    while i < held.len() {
        let s = i;
        let vm = vm_key(state_of(held[s]));
        while i + 1 < held.len() && vm_key(state_of(held[i + 1])) == vm {
            i += 1;
        }
        let e = i;
        i += 1;
        out.push(Attachment {
            vm: state_of(held[e]).vm.clone(),
            certain: Window {
                start: held[s].at,
                end: held[e].at.saturating_add(1),
            },
            possible: Window {
                start: if s == 0 {
                    possible.start
                } else {
                    held[s - 1].at.saturating_add(1)
                },
                end: held.get(e + 1).map_or(possible.end, |n| n.at),
            },
            first: EvidenceRef::from(held[s]),
            last: EvidenceRef::from(held[e]),
        });
    }
    let last = out.last_mut().expect("a claim holds evidence");
    match after {
        // A write that ends the claim shows the NIC's VM at its instant: on
        // the same VM, the NIC stayed on it up to the write.
        Some(n) if n.kind == EvidenceKind::ActivityWrite => {
            if let Observation::Present(s) = &n.observation
                && vm_key(s) == last.vm_key()
            {
                last.certain.end = n.at;
            }
        }
        // A NIC is detached before it is deleted: after its last sighting on
        // a VM, it was on that VM or on none.
        Some(n) if n.kind == EvidenceKind::ActivityDelete && last.vm.is_some() => {
            let from = last.last.at.saturating_add(1);
            let gone = EvidenceRef::from(n);
            out.push(Attachment {
                vm: None,
                certain: Window {
                    start: n.at,
                    end: n.at,
                },
                possible: Window {
                    start: from.min(n.at),
                    end: n.at,
                },
                first: gone.clone(),
                last: gone,
            });
        }
        _ => {}
    }
    out
}

/// Pairs of claims (by index) of different NICs whose certain windows
/// overlap in one scope on overlapping IPs: contradictory evidence, reported
/// as conflicts and never silently resolved.
pub fn find_conflicts(claims: &[&Claim]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for i in 0..claims.len() {
        for j in i + 1..claims.len() {
            let (x, y) = (claims[i], claims[j]);
            if x.key.nic != y.key.nic
                && x.key.scope == y.key.scope
                && super::ip_overlaps(&x.key.ip, &y.key.ip)
                && x.certain.overlaps(&y.certain)
            {
                out.push((i, j));
            }
        }
    }
    out
}
