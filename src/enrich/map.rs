//! A simple [`Attributor`] over hash maps: NICs with the IPs they held during
//! a time window. For tests, benchmarks and demos; the service implements
//! [`Attributor`] over its claims index.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::{
    Attributor, EndAttribution, Lookups, NicInfo, ScopeHint, Scoped, Status, Via, VmInfo, Within,
};
use crate::model::Mac;

use crate::model::hash::FastMap;

#[derive(Clone, Debug)]
struct Entry {
    nic: Arc<NicInfo>,
    vm: Option<Arc<VmInfo>>,
    ips: Vec<IpAddr>,
    vnet_key: String,
    subscription: String,
    from: i64,
    until: i64,
    status: Status,
}

impl Entry {
    fn covers(&self, at: i64) -> bool {
        self.from <= at && at < self.until
    }
}

/// NICs, each with its MAC and the IPs it held in `[from, until)` (epoch µs).
#[derive(Debug, Default)]
pub struct MapAttributor {
    by_mac: FastMap<Mac, Vec<Entry>>,
    by_ip: FastMap<IpAddr, Vec<Entry>>,
    freshness: serde_json::Value,
}

impl MapAttributor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a NIC (on `vm`) that held `ips` (in its VNet, `nic.vnet`) from
    /// `from` until `until`, answering `status` for lookups in that window.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        nic: Arc<NicInfo>,
        vm: Option<Arc<VmInfo>>,
        mac: Option<Mac>,
        ips: &[IpAddr],
        from: i64,
        until: i64,
        status: Status,
    ) {
        let vnet_key = nic.vnet.as_deref().unwrap_or("").to_ascii_lowercase();
        let subscription = crate::model::ArmId::parse(&nic.id)
            .map(|a| a.subscription())
            .unwrap_or_default();
        let e = Entry {
            nic,
            vm,
            ips: ips.to_vec(),
            vnet_key,
            subscription,
            from,
            until,
            status,
        };
        for ip in ips {
            self.by_ip.entry(*ip).or_default().push(e.clone());
        }
        if let Some(m) = mac {
            self.by_mac.entry(m).or_default().push(e);
        }
    }

    /// What [`Attributor::freshness`] reports.
    pub fn set_freshness(&mut self, v: serde_json::Value) {
        self.freshness = v;
    }

    fn answer(e: &Entry, via: Via, scoped: Scoped) -> EndAttribution {
        EndAttribution {
            evidence: Some(Cow::Borrowed("map")),
            vm_status: Some(e.status),
            vm: e.vm.clone(),
            ..EndAttribution::nic(e.status, via, scoped, e.nic.clone())
        }
    }
}

impl Lookups for MapAttributor {
    fn by_mac(&self, mac: &Mac, ip: IpAddr, at: i64, scope: &ScopeHint) -> EndAttribution {
        let Some(all) = self.by_mac.get(mac) else {
            return EndAttribution::unknown(Via::Mac, Scoped::MacUnknown);
        };
        let in_scope = |e: &&Entry| match (&scope.vnet, &scope.subscription) {
            (Some(v), _) => e.vnet_key == *v,
            (None, Some(s)) => e.subscription == *s,
            (None, None) => true,
        };
        let mut mine = all.iter().filter(in_scope).peekable();
        if mine.peek().is_none() {
            return EndAttribution::unknown(Via::Mac, Scoped::MacOutOfScope);
        }
        let Some(e) = mine.find(|e| e.covers(at)) else {
            return EndAttribution::unknown(Via::Mac, Scoped::MacUnknown);
        };
        let held = e.ips.contains(&ip);
        let mut a = Self::answer(e, Via::Mac, Scoped::Mac);
        a.ip_held = Some(held);
        if !held {
            // The NIC with the MAC, which did not hold the IP.
            a.status = Status::Unknown;
        }
        a
    }

    fn by_ip(&self, ip: IpAddr, at: i64, within: Within<'_>) -> EndAttribution {
        let unknown = EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet);
        let Some(all) = self.by_ip.get(&ip) else {
            return unknown;
        };
        let admits = |e: &Entry| {
            e.covers(at)
                && match within {
                    Within::Vnet(v) => e.vnet_key == v,
                    Within::Subscription(s) => e.subscription == s,
                    Within::Any => true,
                }
        };
        let mut it = all.iter().filter(|e| admits(e));
        let Some(first) = it.next() else {
            return unknown;
        };
        if it.next().is_none() {
            return Self::answer(first, Via::IpAnyScope, Scoped::NoVnet);
        }
        let mut a = unknown;
        a.status = Status::Ambiguous;
        a.candidates = all
            .iter()
            .filter(|e| admits(e))
            .map(|e| e.nic.clone())
            .collect();
        a
    }
}

impl Attributor for MapAttributor {
    fn freshness(&self) -> serde_json::Value {
        self.freshness.clone()
    }

    fn with_lookups(&self, f: &mut dyn FnMut(&dyn Lookups)) {
        f(self)
    }
}
