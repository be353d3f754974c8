//! Where a packet can have been: VNets' address spaces and peerings, as
//! listings of them showed, and the routing question enrichment asks of
//! them ([`Topology::route`]).
//!
//! A flow captured in VNet V has its far end inside V's address space (and
//! then in V and nowhere else), in a VNet peered with V (peered VNets never
//! overlap, so at most one holds the address), or outside the estate.
//! Without a listing of V nothing can be said ([`Route::Unknown`]).
//!
//! Pure: no I/O. The store loads the listings; the index holds one
//! [`Topology`] and swaps it whole when a listing arrives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::engine::Micros;

pub use crate::model::{Peering, SubnetState, VnetState};

/// Where routing can have taken a packet to `ip` from a VNet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// No listing of the VNet: its address space is not known.
    Unknown,
    /// Inside the VNet's own address space: in that VNet and nowhere else.
    InVnet,
    /// Inside the address space of a VNet connected to it by a peering (its
    /// key, lower case).
    Peered(Arc<str>),
    /// Outside the VNet and every VNet peered with it: not in the estate
    /// (the internet, on-premises, a service endpoint).
    Outside,
}

/// Every VNet listing held, by VNet key (lower-cased id), oldest first.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    vnets: HashMap<Arc<str>, Vec<(Micros, Arc<VnetState>)>>,
}

impl Topology {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a listing of a VNet taken at `at` (order does not matter; the
    /// same listing twice is kept once).
    pub fn add(&mut self, at: Micros, state: VnetState) {
        let list = self.vnets.entry(state.id.shared_key()).or_default();
        let pos = list.partition_point(|(t, _)| *t <= at);
        if pos > 0 && list[pos - 1].0 == at && *list[pos - 1].1 == state {
            return;
        }
        list.insert(pos, (at, Arc::new(state)));
    }

    /// Number of VNets listed.
    pub fn len(&self) -> usize {
        self.vnets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vnets.is_empty()
    }

    /// The VNet as the latest listing at or before `t` showed it; before its
    /// first listing, as that one showed it (address spaces and peerings
    /// change rarely, and every route it then gives that is wrong names no
    /// NIC: see [`Topology::route`]).
    pub fn state_at(&self, vnet_key: &str, t: Micros) -> Option<&VnetState> {
        let list = self.vnets.get(vnet_key)?;
        let pos = list.partition_point(|(at, _)| *at <= t);
        list.get(pos.saturating_sub(1)).map(|(_, s)| &**s)
    }

    /// Where a packet to `ip` from VNet `vnet_key` can have gone at `t`.
    pub fn route(&self, vnet_key: &str, ip: IpAddr, t: Micros) -> Route {
        let Some(v) = self.state_at(vnet_key, t) else {
            return Route::Unknown;
        };
        if v.holds(ip) {
            return Route::InVnet;
        }
        for p in v.peerings.iter().filter(|p| p.connected) {
            let remote = p.remote.key();
            // The remote VNet's own listing, when there is one, else the
            // address space the peering shows.
            let holds = match self.state_at(remote, t) {
                Some(r) => r.holds(ip),
                None => p.remote_address_space.iter().any(|n| n.contains(&ip)),
            };
            if holds {
                return Route::Peered(p.remote.shared_key());
            }
        }
        Route::Outside
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ArmId;

    const SUB: &str = "/subscriptions/00000000-0000-0000-0000-00000000000a/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks";

    fn vnet(name: &str, space: &[&str], peers: &[(&str, bool, &[&str])]) -> VnetState {
        VnetState {
            id: ArmId::parse(&format!("{SUB}/{name}")).unwrap(),
            address_space: space.iter().map(|s| s.parse().unwrap()).collect(),
            subnets: Vec::new(),
            peerings: peers
                .iter()
                .map(|(p, connected, space)| Peering {
                    remote: ArmId::parse(&format!("{SUB}/{p}")).unwrap(),
                    connected: *connected,
                    remote_address_space: space.iter().map(|s| s.parse().unwrap()).collect(),
                })
                .collect(),
        }
    }

    fn key(name: &str) -> String {
        format!("{SUB}/{name}").to_ascii_lowercase()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn routes_inside_to_peers_and_outside() {
        let mut t = Topology::new();
        t.add(
            100,
            vnet(
                "hub",
                &["10.1.0.0/16"],
                &[
                    ("spoke", true, &["10.2.0.0/16"]),
                    ("old", false, &["10.3.0.0/16"]),
                ],
            ),
        );
        let hub = key("hub");
        assert_eq!(t.route(&hub, ip("10.1.2.3"), 200), Route::InVnet);
        assert_eq!(
            t.route(&hub, ip("10.2.0.9"), 200),
            Route::Peered(key("spoke").into())
        );
        // A peering that is not connected carries nothing.
        assert_eq!(t.route(&hub, ip("10.3.0.9"), 200), Route::Outside);
        assert_eq!(t.route(&hub, ip("8.8.8.8"), 200), Route::Outside);
        assert_eq!(t.route(&key("spoke"), ip("10.2.0.9"), 200), Route::Unknown);
        // The remote VNet's own listing wins over the peering's copy.
        t.add(150, vnet("spoke", &["10.2.0.0/24"], &[]));
        assert_eq!(t.route(&hub, ip("10.2.1.9"), 200), Route::Outside);
    }

    #[test]
    fn the_listing_at_or_before_t_answers_and_the_first_before_it() {
        let mut t = Topology::new();
        t.add(200, vnet("v", &["10.1.0.0/16", "10.9.0.0/16"], &[]));
        t.add(100, vnet("v", &["10.1.0.0/16"], &[]));
        t.add(100, vnet("v", &["10.1.0.0/16"], &[]));
        let v = key("v");
        assert_eq!(t.vnets[v.as_str()].len(), 2);
        assert_eq!(t.route(&v, ip("10.9.0.1"), 150), Route::Outside);
        assert_eq!(t.route(&v, ip("10.9.0.1"), 200), Route::InVnet);
        assert_eq!(t.route(&v, ip("10.9.0.1"), 50), Route::Outside);
        assert_eq!(t.len(), 1);
    }
}
