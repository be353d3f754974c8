//! The index's maps behind its lock: claims by IP (with their bounded
//! windows), by NIC, VM and MAC, where they lie, and what watched each
//! subscription; and how a NIC's claims are swapped in and out of them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::{CoverageMap, Entry, Slot};
use crate::engine::{self, Claim, Complete, Coverage, EvidenceKind, Freshness, Micros};
use crate::model::hash::{FastMap, FastSet};
use crate::model::{ArmId, Mac, NicInfo, VmInfo};

/// The one copy of `id` in `set` (added when new).
pub(super) fn one_copy(set: &mut FastSet<Arc<str>>, id: &str) -> Arc<str> {
    match set.get(id) {
        Some(one) => one.clone(),
        None => {
            let one: Arc<str> = id.into();
            set.insert(one.clone());
            one
        }
    }
}

/// Where the claims held lie, coarsely: the IPv4 /16s and IPv6 /48s that
/// hold a claim. Enrichment looks up no address outside it (the public side
/// of internet traffic, mostly), and any address inside it, whatever its
/// range: a VNet may use a public address space. Marks are never cleared (a
/// stale one costs a lookup that finds nothing).
#[derive(Default)]
pub(super) struct Space {
    /// One bit per IPv4 /16 (allocated with the first IPv4 claim).
    v4: Vec<u64>,
    v6: FastSet<u64>,
    /// A claim on an IPv6 prefix wider than a /48: every IPv6 address is looked up.
    v6_wide: bool,
}

impl Space {
    pub(super) fn add(&mut self, net: &IpNet) {
        match net {
            IpNet::V4(n) => {
                if self.v4.is_empty() {
                    self.v4 = vec![0; 1 << 10];
                }
                let first = u32::from(n.network()) >> 16;
                let last = u32::from(n.broadcast()) >> 16;
                for b in first..=last {
                    self.v4[(b >> 6) as usize] |= 1 << (b & 63);
                }
            }
            IpNet::V6(n) if n.prefix_len() < 48 => self.v6_wide = true,
            IpNet::V6(n) => {
                self.v6.insert((u128::from(n.network()) >> 80) as u64);
            }
        }
    }

    #[inline]
    pub(super) fn holds(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let b = u32::from(a) >> 16;
                self.v4
                    .get((b >> 6) as usize)
                    .is_some_and(|w| w >> (b & 63) & 1 == 1)
            }
            IpAddr::V6(a) => self.v6_wide || self.v6.contains(&((u128::from(a) >> 80) as u64)),
        }
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    pub(super) by_ip: FastMap<IpNet, Vec<Slot>>,
    pub(super) space: Space,
    /// Scope keys and subscriptions (lower-cased) of the claims held, as
    /// small integers (never removed: there are few).
    pub(super) names: FastMap<String, u32>,
    /// The subnet and VNet ids of the claims held, one copy each, shared by
    /// every claim that names them (never removed: there are few).
    pub(super) ids: FastMap<Box<str>, ArmId>,
    /// Snapshot ids named by the claims held, one copy each (never removed:
    /// a few a day per subscription).
    pub(super) snapshot_ids: FastSet<Arc<str>>,
    pub(super) prefix_lens: BTreeSet<(bool, u8)>,
    pub(super) by_nic: FastMap<Arc<str>, Vec<Arc<Entry>>>,
    /// Each claim under every VM it was attached to.
    pub(super) by_vm: FastMap<Arc<str>, Vec<Arc<Entry>>>,
    pub(super) by_mac: FastMap<Mac, Vec<Arc<Entry>>>,
    pub(super) claims: usize,
    /// What watched each subscription; live claims are held read at its
    /// horizon (latest complete snapshot). Shared with the lookups that
    /// read it (copied on write).
    pub(super) coverage: Arc<CoverageMap>,
    /// The subscriptions of the claims held (never removed), shared with
    /// the lookups that read them (rebuilt when one is added).
    pub(super) subscriptions: Arc<[String]>,
}

pub(super) fn ip_key(ip: &IpNet) -> IpNet {
    ip.trunc()
}

/// Makes `key` the shared key of `id` when they are the same string.
fn share(key: &mut Arc<str>, id: Option<&ArmId>) {
    if let Some(id) = id
        && id.key() == &**key
    {
        *key = id.shared_key();
    }
}

/// Replaces `old` by `new` in `list` (when there).
fn swap_entry(list: Option<&mut Vec<Arc<Entry>>>, old: &Arc<Entry>, new: &Arc<Entry>) {
    if let Some(slot) = list.into_iter().flatten().find(|x| Arc::ptr_eq(x, old)) {
        *slot = new.clone();
    }
}

/// The distinct VM keys a claim was attached to.
fn vm_keys(c: &Claim) -> impl Iterator<Item = &Arc<str>> {
    let mut seen: Vec<&str> = Vec::new();
    c.vms.iter().filter_map(move |a| {
        let v = a.vm.as_ref()?;
        if seen.contains(&v.key()) {
            return None;
        }
        seen.push(v.key());
        Some(v.shared_key_ref())
    })
}

impl Inner {
    /// Takes a NIC's claims out of every map; returns them, and adds the
    /// IPs whose claims changed to `touched`.
    pub(super) fn remove_nic(
        &mut self,
        nic: &str,
        touched: &mut FastSet<IpNet>,
    ) -> Vec<Arc<Entry>> {
        let Some(old) = self.by_nic.remove(nic) else {
            return Vec::new();
        };
        self.claims -= old.len();
        for c in &old {
            let k = ip_key(&c.key.ip);
            if let Some(v) = self.by_ip.get_mut(&k) {
                v.retain(|x| &*x.entry.key.nic != nic);
                if v.is_empty() {
                    self.by_ip.remove(&k);
                } else {
                    touched.insert(k);
                }
            }
            for vm in vm_keys(&c.claim) {
                if let Some(v) = self.by_vm.get_mut(vm) {
                    v.retain(|x| &*x.key.nic != nic);
                    if v.is_empty() {
                        self.by_vm.remove(vm);
                    }
                }
            }
            if let Some(m) = &c.mac
                && let Some(v) = self.by_mac.get_mut(m)
            {
                v.retain(|x| &*x.key.nic != nic);
                if v.is_empty() {
                    self.by_mac.remove(m);
                }
            }
        }
        old
    }

    pub(super) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.insert(name.to_string(), id);
        id
    }

    /// Inserts `c`, which replaces the claims `replaced` of its NIC: their
    /// `NicInfo` and `VmInfo` are kept when the ids are the same. Adds its IP to `touched`.
    pub(super) fn insert(
        &mut self,
        mut c: Claim,
        replaced: &[Arc<Entry>],
        touched: &mut FastSet<IpNet>,
    ) {
        let sub = c.subscription().to_string();
        if c.live
            && let Some(h) = self.coverage.get(&sub).and_then(Coverage::horizon)
        {
            let id = one_copy(&mut self.snapshot_ids, &h.id);
            c.extend_to(h.at, &id);
        }
        let snapshot_ids = &mut self.snapshot_ids;
        let refs = [&mut c.before, &mut c.after]
            .into_iter()
            .flatten()
            .chain([&mut c.first, &mut c.last]);
        for r in refs.chain(c.vms.iter_mut().flat_map(|a| [&mut a.first, &mut a.last])) {
            if r.kind == EvidenceKind::Snapshot {
                r.id = one_copy(snapshot_ids, &r.id);
            }
        }
        let slot_names = (self.intern(&c.key.scope), self.intern(&sub));
        if let Err(at) = self.subscriptions.binary_search(&sub) {
            let mut all = self.subscriptions.to_vec();
            all.insert(at, sub);
            self.subscriptions = all.into();
        }
        // The NIC's claims in one VNet (its IPv4 and IPv6 addresses, say)
        // share one `NicInfo`, and its claims on one VM one `VmInfo`, so
        // each is held once.
        let id = |a: &Option<ArmId>| a.as_ref().map(|a| a.as_str().to_string());
        let mine: Vec<&Arc<Entry>> = self
            .by_nic
            .get(&c.key.nic)
            .into_iter()
            .flat_map(|v| v.iter().rev().take(8))
            .chain(replaced.iter())
            .collect();
        let info = match mine
            .iter()
            .find(|e| e.nic.as_str() == c.nic.as_str() && e.info.vnet == id(&c.vnet))
        {
            Some(e) => {
                // The same spelling: hold the NIC's id once.
                c.nic = e.claim.nic.clone();
                e.info.clone()
            }
            None => Arc::new(NicInfo::new(&c.nic, c.vnet.as_ref())),
        };
        let vms: Vec<Option<Arc<VmInfo>>> = c
            .vms
            .iter()
            .map(|a| {
                let vm = a.vm.as_ref()?;
                let known = mine
                    .iter()
                    .flat_map(|e| e.vms.iter().flatten())
                    .find(|v| v.id == vm.as_str());
                Some(match known {
                    Some(v) => v.clone(),
                    None => Arc::new(VmInfo::new(vm)),
                })
            })
            .collect();
        for id in [&mut c.subnet, &mut c.vnet].into_iter().flatten() {
            match self.ids.get(id.as_str()) {
                Some(one) => *id = one.clone(),
                None => {
                    self.ids.insert(id.as_str().into(), id.clone());
                }
            }
        }
        // The key's strings are those ids' keys (when they are): one copy.
        share(&mut c.key.nic, Some(&c.nic));
        share(&mut c.key.scope, c.vnet.as_ref());
        let c = Arc::new(Entry {
            claim: c,
            info,
            vms,
        });
        let k = ip_key(&c.key.ip);
        self.prefix_lens
            .insert((k.addr().is_ipv4(), k.prefix_len()));
        self.space.add(&k);
        let slot = Slot::new(c.clone(), slot_names.0, slot_names.1);
        self.by_ip.entry(k).or_default().push(slot);
        touched.insert(k);
        for vm in vm_keys(&c.claim) {
            self.by_vm.entry(vm.clone()).or_default().push(c.clone());
        }
        if let Some(m) = &c.mac {
            let v = self.by_mac.entry(m.clone()).or_default();
            // One entry per NIC is enough to find its claims.
            if !v.iter().any(|x| x.key.nic == c.key.nic) {
                v.push(c.clone());
            }
        }
        self.by_nic.entry(c.key.nic.clone()).or_default().push(c);
        self.claims += 1;
    }

    /// Bounds the possible windows of the claims on each IP of `ips` by
    /// exclusivity (see [`engine::exclusive`]).
    pub(super) fn rebound<'a>(&mut self, ips: impl IntoIterator<Item = &'a IpNet>) {
        for k in ips {
            let Some(slots) = self.by_ip.get_mut(k) else {
                continue;
            };
            let bounds = {
                let refs: Vec<&Claim> = slots.iter().map(|s| &s.entry.claim).collect();
                engine::exclusive(&refs)
            };
            for (s, b) in slots.iter_mut().zip(bounds) {
                s.from = b.possible.start;
                s.until = b.possible.end;
            }
        }
    }

    pub(super) fn claims_of_ip(&self, ip: IpAddr) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        for &(v4, len) in &self.prefix_lens {
            if v4 != ip.is_ipv4() {
                continue;
            }
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            if let Some(v) = self.by_ip.get(&net.trunc()) {
                out.extend(v.iter().map(|s| s.entry.clone()));
            }
        }
        out
    }

    /// Takes in finished complete snapshots (by subscription): their
    /// subscriptions' coverage grows, and their live claims are read at
    /// the new horizon (rebuilt in place; no other claim is touched).
    pub(super) fn add_completes(&mut self, completes: Vec<(String, Complete)>, policy: &Freshness) {
        let mut moved: Vec<String> = Vec::new();
        let coverage = Arc::make_mut(&mut self.coverage);
        for (sub, c) in completes {
            let cov = coverage.entry(sub.clone()).or_default();
            let was = cov.horizon().map(|h| h.at);
            if cov.add(c, policy) && was != cov.horizon().map(|h| h.at) && !moved.contains(&sub) {
                moved.push(sub);
            }
        }
        if moved.is_empty() {
            return;
        }
        // Each live claim of a moved subscription is replaced by its extended
        // copy wherever it is held; its NIC and VM infos are shared, not rebuilt.
        let Inner {
            by_ip,
            by_vm,
            by_mac,
            by_nic,
            coverage,
            snapshot_ids,
            ..
        } = self;
        let mut touched: FastSet<IpNet> = FastSet::default();
        for entries in by_nic.values_mut() {
            // A NIC's claims share its subscription.
            let Some(sub) = entries.first().map(|e| e.subscription()) else {
                continue;
            };
            let Some(h) = moved
                .iter()
                .find(|m| m.as_str() == sub)
                .and_then(|m| coverage[m].horizon())
            else {
                continue;
            };
            let id = one_copy(snapshot_ids, &h.id);
            for e in entries.iter_mut() {
                // Copied only when the horizon extends it.
                if !e.claim.extends_to(h.at) {
                    continue;
                }
                let mut claim = e.claim.clone();
                claim.extend_to(h.at, &id);
                let new = Arc::new(Entry {
                    claim,
                    info: e.info.clone(),
                    vms: e.vms.clone(),
                });
                let k = ip_key(&e.key.ip);
                if let Some(slot) = by_ip
                    .get_mut(&k)
                    .into_iter()
                    .flatten()
                    .find(|s| Arc::ptr_eq(&s.entry, e))
                {
                    // The same claim, its certain window moved.
                    *slot = Slot::new(new.clone(), slot.scope, slot.subscription);
                    touched.insert(k);
                }
                for vm in vm_keys(&e.claim) {
                    swap_entry(by_vm.get_mut(vm), e, &new);
                }
                if let Some(m) = &e.mac {
                    swap_entry(by_mac.get_mut(m), e, &new);
                }
                *e = new;
            }
        }
        let touched: Vec<IpNet> = touched.into_iter().collect();
        self.rebound(&touched);
    }

    pub(super) fn add_activity(
        &mut self,
        reach: Vec<(String, Micros, Micros)>,
        policy: &Freshness,
    ) {
        if reach.is_empty() {
            return;
        }
        let coverage = Arc::make_mut(&mut self.coverage);
        for (sub, from, to) in reach {
            coverage
                .entry(sub)
                .or_insert_with(|| Coverage::new(Vec::new(), None, policy))
                .add_activity(from, to);
        }
    }
}
