//! The enrichment adapter: enrichment's lookups ([`Lookups`]) answered from
//! the claims index. They run once or twice per tuple, so they borrow from
//! the index under one read of its lock (a worker's batch) and allocate
//! nothing but the candidate list of an ambiguous answer. The answers are
//! the engine's rule ([`engine::verdict`]) over the windows the index holds
//! bounded by exclusivity: the same as a lookup through the API gives (a
//! property test in `enrich/tests.rs` checks it).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Attributor, EndAttribution, Lookups, ScopeHint, Scoped, Via, Within};
use crate::engine::{self, Micros, Status, Verdict};
use crate::index::{Entry, Index, Slot, View};
use crate::model::Mac;
use crate::topology::Route;

fn bound(m: Micros) -> Option<i64> {
    (m != engine::NEG_INF && m != engine::POS_INF).then_some(m)
}

impl View<'_> {
    /// The answer rule ([`engine::verdict`]) over the claims `alive` yields
    /// (those in scope whose bounded window holds `t`, chosen on [`Slot`]s),
    /// as an enrichment end, without collecting the claims first. `via` and
    /// `scoped` are the caller's.
    fn answer_end<'s>(&self, alive: impl Iterator<Item = &'s Slot>, t: Micros) -> EndAttribution {
        let mut a = EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet);
        match engine::verdict(alive, t, self) {
            Verdict::Unknown => {}
            Verdict::Lone {
                owner,
                status,
                stale,
                vm,
            } => {
                let claim = &owner.entry.claim;
                a.status = status;
                a.stale = stale.is_some();
                a.vm_status = Some(vm.status);
                a.vm = vm
                    .attachment
                    .and_then(|x| claim.vms.iter().position(|y| std::ptr::eq(x, y)))
                    .and_then(|i| owner.entry.vms[i].clone());
                a.nic = Some(owner.info.clone());
                a.evidence = Some(Cow::Borrowed(owner.last.as_str()));
                a.window = Some((bound(owner.from), bound(owner.until)));
            }
            Verdict::Ambiguous(all) => {
                a.status = Status::Ambiguous;
                a.candidates = all.iter().map(|s| s.info.clone()).collect();
            }
        }
        a
    }
}

/// The scope the record names, in words, for an unknown capturing end.
fn searched(scope: &ScopeHint) -> Option<Arc<str>> {
    scope
        .nic
        .as_deref()
        .or(scope.vnet.as_deref())
        .or(scope.subscription.as_deref())
        .map(Arc::from)
}

impl Lookups for View<'_> {
    fn by_mac(&self, mac: &Mac, ip: IpAddr, at: i64, scope: &ScopeHint) -> EndAttribution {
        let unknown = |scoped| {
            let mut a = EndAttribution::unknown(Via::Mac, scoped);
            a.searched = searched(scope);
            a
        };
        let Some(nics) = self.of_mac(mac) else {
            return unknown(Scoped::MacUnknown);
        };
        // Within the scope the record names: the NIC it targets, else its
        // VNet, else its subscription.
        let in_scope = |e: &&Arc<Entry>| match (&scope.nic, &scope.vnet, &scope.subscription) {
            (Some(n), _, _) => *e.key.nic == **n,
            (None, Some(v), _) => self.of_nic(&e.key.nic).iter().any(|c| *c.key.scope == **v),
            (None, None, Some(s)) => e.subscription() == s,
            (None, None, None) => true,
        };
        let mut mine = nics.iter().filter(in_scope).peekable();
        if mine.peek().is_none() {
            return unknown(Scoped::MacOutOfScope);
        }
        let of_ip = self.of_ip(ip);
        let all = of_ip.at(at);
        // The record names the NIC that captured the tuple: a NIC with the
        // MAC that may have held the IP at `at` is the capturing end,
        // whatever other NICs of the VNet may have held it then (the capture
        // rules them out). Its own claim gives the status. Several such NICs
        // (a MAC reused) make the answer ambiguous between them. A NIC with
        // several live claims on the IP counts its first in its own order.
        let mut held: Vec<&Slot> = Vec::new();
        let mut known: Option<&Arc<Entry>> = None;
        for n in mine {
            let nic = &n.key.nic;
            if known.is_none() {
                known = self.of_nic(nic).iter().find(|c| c.possible.contains(at));
            }
            let mut own = all.clone().filter(|s| s.entry.key.nic == *nic);
            let Some(s) = own.next() else {
                continue;
            };
            if own.next().is_none() {
                held.push(s);
                continue;
            }
            let first = self
                .of_nic(nic)
                .iter()
                .find(|c| c.key.ip.contains(&ip) && all.clone().any(|s| Arc::ptr_eq(&s.entry, c)))
                .expect("a live claim of the NIC on the IP is among the NIC's claims");
            held.push(
                all.clone()
                    .find(|s| Arc::ptr_eq(&s.entry, first))
                    .expect("the NIC's live claim on the IP has its slot"),
            );
        }
        if !held.is_empty() {
            let mut a = self.answer_end(held.iter().copied(), at);
            a.via = Via::Mac;
            a.scoped = Scoped::Mac;
            a.ip_held = Some(true);
            return a;
        }
        // A NIC with the MAC existed then but did not hold the IP: named.
        match known {
            Some(c) => {
                let mut a = EndAttribution::mac_mismatch(Scoped::Mac, c.info.clone());
                a.evidence = Some(Cow::Borrowed(c.last.kind.as_str()));
                a
            }
            // No NIC known to have had the MAC at that time.
            None => unknown(Scoped::MacUnknown),
        }
    }

    fn by_ip(&self, ip: IpAddr, at: i64, within: Within<'_>) -> EndAttribution {
        let of_ip = self.of_ip(ip);
        if of_ip.is_empty() {
            return EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet);
        }
        let all = of_ip.at(at);
        // A scope the index has never seen holds none of its claims.
        let name = |n: &str| self.name(n);
        match within {
            Within::Vnet(v) => match name(v) {
                Some(v) => self.answer_end(all.filter(|s| s.scope == v), at),
                None => EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet),
            },
            Within::Subscription(sub) => match name(sub) {
                Some(s) => self.answer_end(all.filter(|x| x.subscription == s), at),
                None => EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet),
            },
            Within::Any => self.answer_end(all, at),
        }
    }

    fn route(&self, vnet: &str, ip: IpAddr, at: i64) -> Route {
        self.topology().route(vnet, ip, at)
    }

    fn watched(&self, subscription: &str, at: i64) -> Option<bool> {
        Some(engine::Watching::coverage(self, subscription).is_some_and(|c| c.watched_at(at)))
    }

    fn may_hold(&self, ip: IpAddr) -> bool {
        self.in_space(ip)
    }
}

/// One lookup at a time, each under its own read of the lock.
impl Lookups for Index {
    fn by_mac(&self, mac: &Mac, ip: IpAddr, at: i64, scope: &ScopeHint) -> EndAttribution {
        self.view(|p| p.by_mac(mac, ip, at, scope))
    }

    fn by_ip(&self, ip: IpAddr, at: i64, within: Within<'_>) -> EndAttribution {
        self.view(|p| p.by_ip(ip, at, within))
    }

    fn route(&self, vnet: &str, ip: IpAddr, at: i64) -> Route {
        self.topology().route(vnet, ip, at)
    }

    fn watched(&self, subscription: &str, at: i64) -> Option<bool> {
        self.view(|p| p.watched(subscription, at))
    }

    fn may_hold(&self, ip: IpAddr) -> bool {
        self.view(|v| v.in_space(ip))
    }
}

impl Attributor for Index {
    /// Holds the read lock for all of `f` (a worker's batch: milliseconds of
    /// work, never waiting on output).
    fn with_lookups(&self, f: &mut dyn FnMut(&dyn Lookups)) {
        self.view(|p| f(p))
    }

    fn freshness(&self) -> serde_json::Value {
        let (seq, at) = self.freshness();
        serde_json::json!({
            "sequence": seq,
            "updated_at": engine::to_ts(at),
            "claims": self.len(),
        })
    }
}
