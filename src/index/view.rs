//! One read of the claims index: what a batch of lookups borrows under a
//! single read of its lock (enrichment's workers take one per batch). The
//! claims of an IP come back as the index holds them, [`Slot`]s with their
//! bounded windows inline, so a caller chooses among them without
//! collecting or copying a claim.

use std::net::IpAddr;
use std::sync::Arc;

use super::{Entry, Index, Inner, Slot, ip_key};
use crate::engine::{Coverage, Freshness, Micros, Watching};
use crate::model::Mac;
use crate::topology::Topology;

/// The index under one read of its lock.
pub struct View<'a> {
    r: &'a Inner,
    topology: &'a Topology,
    freshness: Freshness,
}

impl Index {
    /// Runs `f` over one read of the index (and its topology as of now).
    pub fn view<T>(&self, f: impl FnOnce(&View<'_>) -> T) -> T {
        let topology = self.topology();
        let freshness = self.freshness;
        self.read(|r| {
            f(&View {
                r,
                topology: &topology,
                freshness,
            })
        })
    }
}

impl<'a> View<'a> {
    /// The claims on `ip`, including prefixes that contain it.
    pub fn of_ip(&self, ip: IpAddr) -> OfIp<'a> {
        let mut out = OfIp::default();
        let v4 = ip.is_ipv4();
        for &(family, len) in &self.r.prefix_lens {
            if family != v4 {
                continue;
            }
            let Ok(net) = ipnet::IpNet::new(ip, len) else {
                continue;
            };
            if let Some(v) = self.r.by_ip.get(&ip_key(&net)) {
                out.push(v);
            }
        }
        out
    }

    /// The claims of every NIC that had `mac`.
    pub fn of_mac(&self, mac: &Mac) -> Option<&'a [Arc<Entry>]> {
        self.r.by_mac.get(mac).map(Vec::as_slice)
    }

    /// The claims of the NIC with key `nic`.
    pub fn of_nic(&self, nic: &str) -> &'a [Arc<Entry>] {
        self.r
            .by_nic
            .get(nic)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The small integer a scope key or subscription is held as in
    /// [`Slot::scope`] and [`Slot::subscription`]; `None`: no claim names it.
    pub fn name(&self, name: &str) -> Option<u32> {
        self.r.names.get(name).copied()
    }

    /// Whether `ip` lies where the index holds claims at all.
    pub fn in_space(&self, ip: IpAddr) -> bool {
        self.r.space.holds(ip)
    }

    pub fn topology(&self) -> &'a Topology {
        self.topology
    }
}

impl Watching for View<'_> {
    fn coverage(&self, subscription: &str) -> Option<&Coverage> {
        self.r.coverage.get(subscription)
    }
    fn fallback_bound(&self) -> Micros {
        self.freshness.fallback
    }
}

/// The claims on an IP (including prefixes that contain it), looked up once
/// and borrowed, in the order the index holds them: one slice per prefix
/// length present (almost always one), four inline.
#[derive(Clone, Default)]
pub struct OfIp<'a> {
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
    pub fn at(&self, t: Micros) -> impl Iterator<Item = &'a Slot> + Clone + '_ {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .flat_map(|s| s.iter())
            .filter(move |s| s.holds(t))
    }

    pub fn is_empty(&self) -> bool {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .all(|s| s.is_empty())
    }
}
