//! Owner intervals indexed for "who owned (vnet, ip) at t".

use std::collections::HashMap;
use std::net::IpAddr;

use crate::time::Micros;

use super::Interval;

/// Owner intervals indexed by (vnet, ip) and by ip. Vnet, NIC and VM are
/// small integers; whoever builds the index keeps the names.
pub struct TruthIndex {
    pub intervals: Vec<Interval>,
    ranges: HashMap<(u32, IpAddr), (u32, u32)>,
    by_ip: HashMap<IpAddr, Vec<u32>>,
}

impl TruthIndex {
    pub fn new(mut intervals: Vec<Interval>) -> Self {
        intervals.sort_by_key(|a| (a.vnet, a.ip, a.from, a.nic));
        let mut ranges = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<u32>> = HashMap::new();
        let mut i = 0;
        while i < intervals.len() {
            let key = (intervals[i].vnet, intervals[i].ip);
            let mut j = i;
            while j < intervals.len() && (intervals[j].vnet, intervals[j].ip) == key {
                j += 1;
            }
            ranges.insert(key, (i as u32, j as u32));
            by_ip.entry(key.1).or_default().push(key.0);
            i = j;
        }
        Self {
            intervals,
            ranges,
            by_ip,
        }
    }

    /// All intervals of (vnet, ip), sorted by start.
    pub fn history(&self, vnet: u32, ip: IpAddr) -> &[Interval] {
        match self.ranges.get(&(vnet, ip)) {
            Some(&(a, b)) => &self.intervals[a as usize..b as usize],
            None => &[],
        }
    }

    /// The owner of (vnet, ip) at `t`.
    pub fn owner_at(&self, vnet: u32, ip: IpAddr, t: Micros) -> Option<&Interval> {
        let h = self.history(vnet, ip);
        let i = h.partition_point(|iv| iv.from <= t);
        if i == 0 {
            return None;
        }
        let iv = &h[i - 1];
        iv.covers(t).then_some(iv)
    }

    /// VNets in which `ip` was ever owned.
    pub fn vnets_of(&self, ip: IpAddr) -> &[u32] {
        self.by_ip.get(&ip).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Owners of `ip` at `t` in every VNet that `keep` accepts.
    pub fn owners_at(&self, ip: IpAddr, t: Micros, keep: impl Fn(u32) -> bool) -> Vec<&Interval> {
        self.vnets_of(ip)
            .iter()
            .filter(|&&v| keep(v))
            .filter_map(|&v| self.owner_at(v, ip, t))
            .collect()
    }

    pub fn keys(&self) -> impl Iterator<Item = (u32, IpAddr)> + '_ {
        self.ranges.keys().copied()
    }
}
