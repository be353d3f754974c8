//! A NIC's evidence → claims: "NIC n held IP i in VNet v (attached to VM m)",
//! each end bounded by the evidence on either side.

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Evidence, EvidenceKind, EvidenceRef, Micros, NEG_INF, Observation, POS_INF, Window};
use crate::model::{ArmId, Mac, NicState};

/// What makes two claims the same claim: the NIC, the scope (VNet key, or ""
/// when the ip configuration names no subnet), the IP or prefix, and the VM
/// the NIC was attached to ("" for none). A NIC moved to another VM starts a
/// new claim, so an answer never names the wrong VM.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
///
/// Its strings are shared (`Arc<str>`): a claim's key holds the same copy as
/// its NIC's id, the index's VNet ids and other claims of the NIC.
pub struct ClaimKey {
    pub nic: Arc<str>,
    pub scope: Arc<str>,
    pub ip: IpNet,
    pub vm: Arc<str>,
}

/// One maximal run of evidence in which a NIC held an IP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub key: ClaimKey,
    /// Display values, from the last evidence in which the NIC held the IP.
    pub nic: ArmId,
    pub nic_name: String,
    pub mac: Option<Mac>,
    pub vm: Option<ArmId>,
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

    /// A live claim read at its subscription's horizon: a complete snapshot
    /// at `at` (id `id`) listed the NIC as the claim's last evidence did.
    /// Returns whether anything changed; does nothing to other claims.
    pub fn extend_to(&mut self, at: Micros, id: &Arc<str>) -> bool {
        if !self.extends_to(at) {
            return false;
        }
        self.certain.end = at.saturating_add(1);
        self.last = EvidenceRef {
            kind: EvidenceKind::Snapshot,
            id: id.clone(),
            at,
        };
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

    // Every (scope, ip, vm) the NIC ever held, each with the parsed state.
    // Borrowed from the evidence: nothing is allocated per evidence.
    let mut keys: Vec<(&str, IpNet, &str)> = Vec::new();
    for e in &ev {
        if let Observation::Present(s) = &e.observation {
            let vm = vm_key(s);
            for a in &s.ips {
                let k = (a.vnet_key(), a.ip, vm);
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
    }
    keys.sort();

    let mut out = Vec::new();
    for (scope, ip, vm) in keys {
        let held: Vec<bool> = ev
            .iter()
            .map(|e| match &e.observation {
                Observation::Present(s) => vm_key(s) == vm && s.holds(scope, &ip),
                Observation::Absent => false,
            })
            .collect();
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
            out.push(build_claim(&ev, a, b, scope, ip, vm));
        }
    }
    out
}

fn build_claim(ev: &[&Evidence], a: usize, b: usize, scope: &str, ip: IpNet, vm: &str) -> Claim {
    let first = ev[a];
    let last = ev[b];
    let before = a.checked_sub(1).map(|j| ev[j]);
    let after = ev.get(b + 1).copied();

    // Events mark the instant a NIC's own properties (its IPs) changed. The
    // VM a NIC is attached to changes through the VM, not through a NIC
    // event, and a NIC must be detached before it can be deleted. So an event
    // fixes an end of a claim only when the VM on both sides of it is known:
    // - the start, when the write created the NIC, or when the evidence just
    //   before shows the NIC with the same VM and without this IP (an update
    //   that assigned it); after an absence the create was not seen;
    // - the end, when a write shows the NIC with the same VM and without this
    //   IP, or a delete ends a claim with no VM.
    fn vm_of(e: &Evidence) -> Option<&str> {
        match &e.observation {
            Observation::Present(s) => Some(vm_key(s)),
            Observation::Absent => None,
        }
    }
    let start_exact = first.kind == EvidenceKind::ActivityWrite
        && (first.created || before.is_some_and(|p| vm_of(p) == Some(vm)));
    let end_exact = match after {
        Some(n) if n.kind == EvidenceKind::ActivityWrite => vm_of(n) == Some(vm),
        Some(n) if n.kind == EvidenceKind::ActivityDelete => vm.is_empty(),
        _ => false,
    };

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

    let state = match &last.observation {
        Observation::Present(s) => s,
        Observation::Absent => unreachable!("a held evidence is present"),
    };
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
            vm: match &state.vm {
                Some(v) if v.key() == vm => v.shared_key(),
                _ => vm.into(),
            },
        },
        nic: state.id.clone(),
        nic_name: state.name.clone(),
        mac: state.mac.clone(),
        vm: state.vm.clone(),
        subnet: assignment.subnet.clone(),
        vnet: assignment.vnet(),
        certain: Window {
            start: first.at,
            end: certain_end,
        },
        possible: Window {
            start: possible_start,
            end: possible_end,
        },
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
        live: false,
    }
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
