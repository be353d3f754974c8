//! The simulated world and its ground truth.
//!
//! Layout: `subscriptions` subscriptions; regular VNets `10.(k+1).0.0/16`
//! spread over them, each with VM subnets and scale-set subnets (`/22`), odd
//! VNets dual-stack; and two legacy VNets in different subscriptions that both
//! use `10.0.0.0/24`. The last `/22`s of every regular VNet are never used, so
//! probes and flows can name private IPs nobody owned.
//!
//! Each subnet is simulated on its own (its own random stream) as a queue of
//! timed actions over its address pool. Azure hands out the lowest free
//! address, so a freed IP often goes to the next NIC created in the subnet:
//!
//! - VM NICs are created unattached, attached to a VM seconds later (MAC and
//!   VM appear), sometimes moved to another VM, re-addressed (static IP),
//!   touched (tag changes), detached when their VM is deleted, then deleted.
//!   Attaching and detaching are VM operations: no NIC record.
//!   A deleted NIC is replaced after seconds, hours or days, so its IP is
//!   reused at once or stays free for hours.
//! - Some NICs are never attached (no MAC, no VM).
//! - Static IPs move between NICs: A takes a new address, B takes A's.
//! - Scale-set instance NICs churn (delete, new instance seconds later,
//!   usually on the same IP) and produce no Activity Log events.
//!
//! No NIC ever holds an IP again after releasing it, and a NIC never returns
//! to a VM it left: a change hidden between two observations of the same state
//! therefore cannot exist, and two observations of the same state prove the
//! state in between.
//!
//! Regular VNets are peered in pairs (`vnet-00` with `vnet-01`, ...); the
//! legacy VNets with nothing (they overlap).
//!
//! Changes go on to the end of the window unless a quiet tail is configured
//! ([`super::SimConfig::quiet_minutes`]): the last answers are about claims
//! no later snapshot has closed, where a playbook asks "who has it now?".

mod index;
mod layout;
mod record;
mod subnet;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::time::Micros;
use super::{SimConfig, guid, stream};

pub use index::TruthIndex;
pub use record::TruthRecord;

use layout::layout;
use subnet::SubnetSim;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlowLogKind {
    Nsg,
    Vnet,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubnetKind {
    Vm,
    Vmss,
}

#[derive(Clone, Debug)]
pub struct Sub {
    /// Lower-case GUID.
    pub id: String,
    pub location: &'static str,
}

#[derive(Clone, Debug)]
pub struct Vnet {
    pub sub: u32,
    pub rg: String,
    pub name: String,
    /// ARM casing.
    pub id: String,
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
    pub flow: FlowLogKind,
    pub subnets: Vec<u32>,
    /// One of the two VNets sharing 10.0.0.0/24.
    pub legacy: bool,
    /// VNets peered with this one (`Connected`; regular VNets in pairs,
    /// never the legacy ones).
    pub peers: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct Subnet {
    pub vnet: u32,
    pub name: String,
    pub id: String,
    pub v4: Ipv4Net,
    pub v6: Option<Ipv6Net>,
    pub kind: SubnetKind,
    /// Resource group of the NICs (and VMs / scale set) in this subnet.
    pub nic_rg: String,
    pub nsg_id: String,
    pub vmss_name: String,
    pub population: u32,
    /// Usable addresses (Azure keeps the first four and the last).
    pub cap: u32,
}

impl Subnet {
    /// Address of host slot `h` (slot 0 is `.4`).
    pub fn v4_addr(&self, h: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.v4.network()) + 4 + h)
    }
    pub fn v6_addr(&self, h: u32) -> Option<Ipv6Addr> {
        self.v6
            .map(|n| Ipv6Addr::from(u128::from(n.network()) + 4 + u128::from(h)))
    }
}

/// What changed in a NIC at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Op {
    Create,
    Attach,
    Detach,
    Readdress,
    Touch,
    Delete,
}

/// The state of a NIC as far as attribution cares, in simulator terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NicSt {
    /// Host slot of the IPv4 address in the NIC's subnet.
    pub v4: u32,
    pub v4_static: bool,
    pub v6: Option<u32>,
    /// Global VM index.
    pub vm: Option<u32>,
    /// Has a MAC (was attached at least once).
    pub mac: bool,
    /// Bumped at every change (the etag).
    pub version: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct Change {
    pub t: Micros,
    pub op: Op,
    /// `None` after a delete.
    pub state: Option<NicSt>,
    /// Azure writes an Activity Log record for this change (VM NICs, inside
    /// the window).
    pub event: bool,
}

#[derive(Clone, Debug)]
pub struct Nic {
    pub subnet: u32,
    /// ARM casing.
    pub id: String,
    pub name: String,
    pub vmss: bool,
    /// 48-bit MAC, constant for the NIC's life (shown once attached).
    pub mac: u64,
    pub changes: Vec<Change>,
}

impl Nic {
    /// `00-0D-3A-12-34-56`
    pub fn mac_arm(&self) -> String {
        let b = self.mac.to_be_bytes();
        format!(
            "{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
            b[2], b[3], b[4], b[5], b[6], b[7]
        )
    }
    /// `000D3A123456`
    pub fn mac_flow(&self) -> String {
        format!("{:012X}", self.mac)
    }
    /// The state at `t` (after any change at exactly `t`).
    pub fn state_at(&self, t: Micros) -> Option<NicSt> {
        let i = self.changes.partition_point(|c| c.t <= t);
        if i == 0 {
            None
        } else {
            self.changes[i - 1].state
        }
    }
}

/// One owner interval: `nic` (on `vm`) held `ip` in `vnet` during `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub vnet: u32,
    pub ip: IpAddr,
    pub from: Micros,
    /// `None`: still held at the end of the window.
    pub to: Option<Micros>,
    pub nic: u32,
    pub vm: Option<u32>,
}

impl Interval {
    pub fn covers(&self, t: Micros) -> bool {
        self.from <= t && self.to.is_none_or(|e| t < e)
    }
}

/// The simulated estate.
pub struct World {
    pub cfg: SimConfig,
    pub t0: Micros,
    pub t_end: Micros,
    /// No change happens at or after this instant.
    pub change_end: Micros,
    pub tenant: String,
    pub subs: Vec<Sub>,
    pub vnets: Vec<Vnet>,
    pub subnets: Vec<Subnet>,
    pub nics: Vec<Nic>,
    /// VM ids (ARM casing), by global VM index.
    pub vms: Vec<String>,
    /// Sorted by (vnet, ip, from).
    pub intervals: Vec<Interval>,
}

impl World {
    /// Runs the simulation of `cfg`.
    pub fn simulate(cfg: &SimConfig) -> World {
        let t0 = cfg.start;
        let t_end = cfg.end();
        let change_end = (t_end - cfg.quiet()).max(t0);
        let (subs, vnets, subnets) = layout(cfg);
        let mut nics = Vec::new();
        let mut vms = Vec::new();
        for (si, sn) in subnets.iter().enumerate() {
            let out = SubnetSim::run(cfg, &subs, &vnets, sn, si as u32, t0, change_end);
            let vm_off = vms.len() as u32;
            let nic_off = nics.len() as u64;
            vms.extend(out.vms);
            for (k, mut n) in out.nics.into_iter().enumerate() {
                let oui: u64 = if si.is_multiple_of(2) {
                    0x000D3A
                } else {
                    0x002248
                };
                // An odd multiplier permutes the 24 low bits: unique, not sequential.
                n.mac =
                    (oui << 24) | ((nic_off + k as u64 + 1).wrapping_mul(0x9E_3779) & 0xFF_FFFF);
                for c in &mut n.changes {
                    if let Some(s) = &mut c.state {
                        s.vm = s.vm.map(|v| v + vm_off);
                    }
                }
                nics.push(n);
            }
        }
        let mut w = World {
            cfg: cfg.clone(),
            t0,
            t_end,
            change_end,
            tenant: guid(cfg.seed, &[stream::IDS, 0]),
            subs,
            vnets,
            subnets,
            nics,
            vms,
            intervals: Vec::new(),
        };
        w.intervals = w.compute_intervals();
        w
    }

    pub fn vnet_of_nic(&self, nic: u32) -> u32 {
        self.subnets[self.nics[nic as usize].subnet as usize].vnet
    }

    pub fn sub_of_nic(&self, nic: u32) -> u32 {
        self.vnets[self.vnet_of_nic(nic) as usize].sub
    }

    fn compute_intervals(&self) -> Vec<Interval> {
        let mut out = Vec::new();
        for (ni, nic) in self.nics.iter().enumerate() {
            let sn = &self.subnets[nic.subnet as usize];
            let vnet = sn.vnet;
            // Open interval per family: (ip, vm, from).
            let mut open: [Option<(IpAddr, Option<u32>, Micros)>; 2] = [None, None];
            for c in &nic.changes {
                let now: [Option<(IpAddr, Option<u32>)>; 2] = match c.state {
                    None => [None, None],
                    Some(s) => [
                        Some((IpAddr::V4(sn.v4_addr(s.v4)), s.vm)),
                        s.v6.and_then(|h| sn.v6_addr(h))
                            .map(|a| (IpAddr::V6(a), s.vm)),
                    ],
                };
                for fam in 0..2 {
                    let same = match (&open[fam], &now[fam]) {
                        (Some((ip, vm, _)), Some((ip2, vm2))) => ip == ip2 && vm == vm2,
                        (None, None) => true,
                        _ => false,
                    };
                    if same {
                        continue;
                    }
                    if let Some((ip, vm, from)) = open[fam].take() {
                        out.push(Interval {
                            vnet,
                            ip,
                            from,
                            to: Some(c.t),
                            nic: ni as u32,
                            vm,
                        });
                    }
                    if let Some((ip, vm)) = now[fam] {
                        open[fam] = Some((ip, vm, c.t));
                    }
                }
            }
            for (ip, vm, from) in open.into_iter().flatten() {
                out.push(Interval {
                    vnet,
                    ip,
                    from,
                    to: None,
                    nic: ni as u32,
                    vm,
                });
            }
        }
        out.sort_by_key(|a| (a.vnet, a.ip, a.from, a.nic));
        out
    }

    /// An index for "who owned (vnet, ip) at t".
    pub fn truth_index(&self) -> TruthIndex {
        TruthIndex::new(self.intervals.clone())
    }
}
