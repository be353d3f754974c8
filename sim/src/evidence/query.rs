//! What the evidence says of a lookup: the claims in scope, what they
//! settle, and whether they pointed at a given owner.

use std::net::IpAddr;

use crate::time::Micros;

use super::{Claim, Evidence, Scope, Settled};

impl Evidence {
    fn vnet_in_scope(&self, v: u32, scope: &Scope) -> bool {
        match scope {
            Scope::Any => true,
            Scope::Vnet(k) => self.vnets.name(v) == k,
            Scope::Subscription(s) => self.subs.name(self.vnet_sub[v as usize]) == s,
        }
    }

    /// Claims on `ip` within `scope`.
    pub fn claims_for(&self, ip: IpAddr, scope: &Scope) -> Vec<&Claim> {
        self.claims_in(ip, scope)
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    /// Claims on `ip` within `scope`, with their VNets.
    fn claims_in(&self, ip: IpAddr, scope: &Scope) -> Vec<(u32, &Claim)> {
        let Some(vs) = self.by_ip.get(&ip) else {
            return Vec::new();
        };
        vs.iter()
            .filter(|&&v| self.vnet_in_scope(v, scope))
            .flat_map(|&v| {
                self.claims
                    .get(&(v, ip))
                    .into_iter()
                    .flatten()
                    .map(move |c| (v, c))
            })
            .collect()
    }

    /// What the evidence settles for (ip, t, scope).
    pub fn settled(&self, ip: IpAddr, t: Micros, scope: &Scope) -> Settled {
        let claims = self.claims_in(ip, scope);
        // Strictly between two holding observations: an exact end (a delete
        // event) does not say the state held up to it when a record in
        // between was lost.
        let certain: Vec<&(u32, &Claim)> = claims
            .iter()
            .filter(|(_, c)| c.first() <= t && t <= c.last())
            .collect();
        match certain.as_slice() {
            [] => {}
            [(v, c)] => {
                // Exclusivity rules out the other claims of its VNet only.
                if claims.iter().any(|(w, o)| w != v && o.possible(t)) {
                    return Settled::Open;
                }
                let (before, after) = c.vm_around(t);
                let vm = match (before, after) {
                    (Some(b), Some(a)) => (a == b).then_some(b),
                    (Some(b), None) => Some(b),
                    _ => None,
                };
                return Settled::Confirmed { nic: c.nic, vm };
            }
            [(v, c), rest @ ..] if rest.iter().all(|(w, _)| w == v) => {
                return Settled::Contested { nic: c.nic };
            }
            // Owners in several VNets (an unscoped lookup): nothing single.
            _ => return Settled::Open,
        }
        if claims.iter().all(|(_, c)| !c.possible(t)) {
            Settled::Unknown
        } else {
            Settled::Open
        }
    }

    /// Did the delivered evidence point at `nic` (and, when `vm` is given,
    /// at that VM: `Some(None)` for none) for (ip, t, scope)? True when t
    /// lies in that NIC's certain window, or after its last observation
    /// with nothing ending it, and the VM seen around t is the one asked.
    pub fn pointed_at(
        &self,
        ip: IpAddr,
        t: Micros,
        scope: &Scope,
        nic: &str,
        vm: Option<Option<&str>>,
    ) -> bool {
        let Some(n) = self.nics.get(nic) else {
            return false;
        };
        let vm = match vm {
            Some(Some(v)) => match self.vms.get(v) {
                Some(v) => Some(Some(v)),
                None => return false,
            },
            Some(None) => Some(None),
            None => None,
        };
        self.claims_for(ip, scope).iter().any(|c| {
            if c.nic != n || t < c.first() {
                return false;
            }
            let covered = c.certain(t) || (t > c.last() && c.pe.is_none());
            let (before, after) = c.vm_around(t);
            covered && vm.is_none_or(|vm| before == Some(vm) && after.is_none_or(|a| a == vm))
        })
    }
}
