//! The enrichment adapter: enrichment's lookups ([`Lookups`]) answered from
//! the claims index. They run once or twice per tuple, so they borrow from
//! the index under one read of its lock (a worker's batch) and allocate
//! nothing but the candidate list of an ambiguous answer. The answers are
//! the engine's ([`engine::owner_status`], [`engine::vm_answer`]) over the
//! windows the index holds bounded by exclusivity: the same as a lookup
//! through the API gives (a property test in `enrich/tests.rs` checks it).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Index, Inner, Slot, ip_key};
use crate::engine::{self, Coverage, Freshness, Micros, Status, Verdict, Watching};
use crate::enrich::{Attributor, EndAttribution, Lookups, ScopeHint, Scoped, Via, Within};
use crate::model::Mac;
use crate::topology::{Route, Topology};

fn bound(m: Micros) -> Option<i64> {
    (m != engine::NEG_INF && m != engine::POS_INF).then_some(m)
}

/// The claims on an IP (including prefixes that contain it), looked up once
/// and borrowed, in the order of [`Inner::claims_of_ip`]: one slice per
/// prefix length present (almost always one), four inline.
#[derive(Clone, Default)]
struct OfIp<'a> {
    inline: [&'a [Slot]; 4],
    n: usize,
    spill: Vec<&'a [Slot]>,
}

impl<'a> OfIp<'a> {
    fn push(&mut self, s: &'a [Slot]) {
        if self.n < self.inline.len() {
            self.inline[self.n] = s;
            self.n += 1;
        } else {
            self.spill.push(s);
        }
    }

    /// The claims whose (bounded) possible window holds `t`.
    fn at(&self, t: Micros) -> impl Iterator<Item = &'a Slot> + Clone + '_ {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .flat_map(|s| s.iter())
            .filter(move |s| s.holds(t))
    }

    fn is_empty(&self) -> bool {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .all(|s| s.is_empty())
    }
}

impl Inner {
    fn of_ip(&self, ip: IpAddr) -> OfIp<'_> {
        let mut out = OfIp::default();
        let v4 = ip.is_ipv4();
        for &(family, len) in &self.prefix_lens {
            if family != v4 {
                continue;
            }
            let Ok(net) = ipnet::IpNet::new(ip, len) else {
                continue;
            };
            if let Some(v) = self.by_ip.get(&ip_key(&net)) {
                out.push(v);
            }
        }
        out
    }
}

/// The index under one read of its lock: a worker's batch of lookups.
struct Pinned<'a> {
    r: &'a Inner,
    topology: &'a Topology,
    freshness: Freshness,
}

impl Watching for Pinned<'_> {
    fn coverage(&self, subscription: &str) -> Option<&Coverage> {
        self.r.coverage.get(subscription)
    }
    fn fallback_bound(&self) -> Micros {
        self.freshness.fallback
    }
}

impl Pinned<'_> {
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

impl Lookups for Pinned<'_> {
    fn by_mac(&self, mac: &Mac, ip: IpAddr, at: i64, scope: &ScopeHint) -> EndAttribution {
        let r = self.r;
        let unknown = |scoped| {
            let mut a = EndAttribution::unknown(Via::Mac, scoped);
            a.searched = searched(scope);
            a
        };
        let Some(nics) = r.by_mac.get(mac) else {
            return unknown(Scoped::MacUnknown);
        };
        // Within the scope the record names: the NIC it targets, else its
        // VNet, else its subscription.
        let in_scope = |e: &&Arc<super::Entry>| match (&scope.nic, &scope.vnet, &scope.subscription)
        {
            (Some(n), _, _) => *e.key.nic == **n,
            (None, Some(v), _) => r
                .by_nic
                .get(&e.key.nic)
                .is_some_and(|cs| cs.iter().any(|c| *c.key.scope == **v)),
            (None, None, Some(s)) => e.subscription() == s,
            (None, None, None) => true,
        };
        let mut mine = nics.iter().filter(in_scope).peekable();
        if mine.peek().is_none() {
            return unknown(Scoped::MacOutOfScope);
        }
        let of_ip = r.of_ip(ip);
        let all = of_ip.at(at);
        // The record names the NIC that captured the tuple: a NIC with the
        // MAC that may have held the IP at `at` is the capturing end,
        // whatever other NICs of the VNet may have held it then (the capture
        // rules them out). Its own claim gives the status. Several such NICs
        // (a MAC reused) make the answer ambiguous between them. A NIC with
        // several live claims on the IP counts its first in its own order.
        let mut held: Vec<&Slot> = Vec::new();
        let mut known: Option<&Arc<super::Entry>> = None;
        for n in mine {
            let nic = &n.key.nic;
            if known.is_none() {
                known = r
                    .by_nic
                    .get(nic)
                    .and_then(|cs| cs.iter().find(|c| c.possible.contains(at)));
            }
            let mut own = all.clone().filter(|s| s.entry.key.nic == *nic);
            let Some(s) = own.next() else {
                continue;
            };
            if own.next().is_none() {
                held.push(s);
                continue;
            }
            let claims = r.by_nic.get(nic).map(Vec::as_slice).unwrap_or_default();
            let first = claims
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
        let of_ip = self.r.of_ip(ip);
        if of_ip.is_empty() {
            return EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet);
        }
        let all = of_ip.at(at);
        // A scope the index has never seen holds none of its claims.
        let name = |n: &str| self.r.names.get(n).copied();
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
        self.topology.route(vnet, ip, at)
    }

    fn watched(&self, subscription: &str, at: i64) -> Option<bool> {
        Some(
            self.r
                .coverage
                .get(subscription)
                .is_some_and(|c| c.watched_at(at)),
        )
    }

    fn may_hold(&self, ip: IpAddr) -> bool {
        self.r.space.holds(ip)
    }
}

impl Index {
    fn pinned<T>(&self, f: impl FnOnce(&Pinned<'_>) -> T) -> T {
        let topology = self.topology();
        let freshness = self.freshness;
        self.read(|r| {
            f(&Pinned {
                r,
                topology: &topology,
                freshness,
            })
        })
    }
}

/// One lookup at a time, each under its own read of the lock.
impl Lookups for Index {
    fn by_mac(&self, mac: &Mac, ip: IpAddr, at: i64, scope: &ScopeHint) -> EndAttribution {
        self.pinned(|p| p.by_mac(mac, ip, at, scope))
    }

    fn by_ip(&self, ip: IpAddr, at: i64, within: Within<'_>) -> EndAttribution {
        self.pinned(|p| p.by_ip(ip, at, within))
    }

    fn route(&self, vnet: &str, ip: IpAddr, at: i64) -> Route {
        self.topology().route(vnet, ip, at)
    }

    fn watched(&self, subscription: &str, at: i64) -> Option<bool> {
        self.pinned(|p| p.watched(subscription, at))
    }

    fn may_hold(&self, ip: IpAddr) -> bool {
        self.read(|r| r.space.holds(ip))
    }
}

impl Attributor for Index {
    /// Holds the read lock for all of `f` (a worker's batch: milliseconds of
    /// work, never waiting on output).
    fn with_lookups(&self, f: &mut dyn FnMut(&dyn Lookups)) {
        self.pinned(|p| f(p))
    }

    fn freshness(&self) -> serde_json::Value {
        let (seq, at) = self.freshness();
        serde_json::json!({
            "sequence": seq,
            "updated_at": crate::store::to_ts(at),
            "claims": self.len(),
        })
    }
}
