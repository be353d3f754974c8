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

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::Context as _;
use ipnet::{Ipv4Net, Ipv6Net};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::time::{self, DAY, HOUR, MIN, Micros, SEC};
use super::{DualStack, FlowKinds, SimConfig, guid, rng_for, stream};

const LOCATIONS: &[&str] = &[
    "westeurope",
    "eastus",
    "northeurope",
    "eastus2",
    "uksouth",
    "westus2",
    "francecentral",
    "swedencentral",
];

/// Most NICs a regular subnet is given (a `/22` has 1,019 usable addresses).
const SUBNET_POP: u32 = 600;
/// Most NICs a regular VNet is given.
const VNET_POP: u32 = 30_000;

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

    /// Writes `truth.jsonl`: one owner interval per line.
    pub fn write_truth(&self, path: &Path) -> anyhow::Result<()> {
        let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        for iv in &self.intervals {
            let nic = &self.nics[iv.nic as usize];
            let line = TruthLine {
                vnet: &self.vnets[iv.vnet as usize].id,
                subscription: &self.subs[self.vnets[iv.vnet as usize].sub as usize].id,
                ip: iv.ip,
                from: time::fmt_us(iv.from),
                to: iv.to.map(time::fmt_us),
                nic: &nic.id,
                vm: iv.vm.map(|v| self.vms[v as usize].as_str()),
                scale_set: nic.vmss,
            };
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    }
}

/// A line of `truth.jsonl`.
#[derive(Serialize)]
struct TruthLine<'a> {
    vnet: &'a str,
    subscription: &'a str,
    ip: IpAddr,
    from: String,
    to: Option<String>,
    nic: &'a str,
    vm: Option<&'a str>,
    scale_set: bool,
}

/// A line of `truth.jsonl`, as read back.
#[derive(Clone, Debug, Deserialize)]
pub struct TruthRecord {
    pub vnet: String,
    pub subscription: String,
    pub ip: IpAddr,
    #[serde(with = "time::serde_us")]
    pub from: Micros,
    #[serde(with = "time::serde_us::opt")]
    pub to: Option<Micros>,
    pub nic: String,
    pub vm: Option<String>,
    #[serde(default)]
    pub scale_set: bool,
}

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

// ---------------------------------------------------------------------------
// Layout

fn layout(cfg: &SimConfig) -> (Vec<Sub>, Vec<Vnet>, Vec<Subnet>) {
    let seed = cfg.seed;
    let s_count = cfg.subscriptions;
    let subs: Vec<Sub> = (0..s_count)
        .map(|i| Sub {
            id: guid(seed, &[stream::IDS, 1, u64::from(i)]),
            location: LOCATIONS[i as usize % LOCATIONS.len()],
        })
        .collect();
    let n = cfg.nics;
    let legacy_each = (n / 20).clamp(2, 160).min(n / 3);
    let rest = n - 2 * legacy_each;
    let vmss_total = (f64::from(rest) * cfg.vmss_share).round() as u32;
    let vm_total = rest - vmss_total;
    let n_vnets = s_count.max(rest.div_ceil(VNET_POP)).min(250);

    let flow_for = |k: u32| match cfg.flow_kinds {
        FlowKinds::Nsg => FlowLogKind::Nsg,
        FlowKinds::Vnet => FlowLogKind::Vnet,
        FlowKinds::Both => {
            if k.is_multiple_of(2) {
                FlowLogKind::Nsg
            } else {
                FlowLogKind::Vnet
            }
        }
    };
    let share = |total: u32, k: u32, parts: u32| total / parts + u32::from(k < total % parts);

    let mut vnets = Vec::new();
    let mut subnets = Vec::new();
    for k in 0..n_vnets {
        let sub = k % s_count;
        let rg = format!("rg-net-{k:02}");
        let name = format!("vnet-{k:02}");
        let id = format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{name}",
            subs[sub as usize].id
        );
        let v4 = Ipv4Net::new(Ipv4Addr::new(10, (k + 1) as u8, 0, 0), 16).expect("prefix");
        let dual = match cfg.dual_stack {
            DualStack::Off => false,
            DualStack::Odd => k % 2 == 1,
            DualStack::All => true,
        };
        let v6 = dual.then(|| {
            Ipv6Net::new(
                Ipv6Addr::new(0xfd5e, 0x1a2b, (k + 1) as u16, 0, 0, 0, 0, 0),
                48,
            )
            .expect("prefix")
        });
        let vi = vnets.len() as u32;
        let mut v = Vnet {
            sub,
            rg,
            name,
            id,
            v4,
            v6,
            flow: flow_for(k),
            subnets: Vec::new(),
            legacy: false,
            peers: Vec::new(),
        };
        let vm_k = share(vm_total, k, n_vnets);
        let vmss_k = share(vmss_total, k, n_vnets);
        let mut j = 0u32;
        for (kind, pop) in [(SubnetKind::Vm, vm_k), (SubnetKind::Vmss, vmss_k)] {
            let parts = pop.div_ceil(SUBNET_POP);
            for p in 0..parts {
                let sname = match kind {
                    SubnetKind::Vm => format!("snet-app-{j:02}"),
                    SubnetKind::Vmss => format!("snet-pool-{j:02}"),
                };
                let v4s = Ipv4Net::new(Ipv4Addr::new(10, (k + 1) as u8, (4 * j) as u8, 0), 22)
                    .expect("prefix");
                let v6s = v6.map(|n| {
                    let base = u128::from(n.network()) | (u128::from(j) << 64);
                    Ipv6Net::new(Ipv6Addr::from(base), 64).expect("prefix")
                });
                v.subnets.push(subnets.len() as u32);
                subnets.push(Subnet {
                    vnet: vi,
                    id: format!("{}/subnets/{sname}", v.id),
                    nsg_id: format!(
                        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkSecurityGroups/nsg-{}-{sname}",
                        subs[sub as usize].id, v.rg, v.name
                    ),
                    name: sname,
                    v4: v4s,
                    v6: v6s,
                    kind,
                    nic_rg: match kind {
                        SubnetKind::Vm => format!("rg-app-{k:02}"),
                        SubnetKind::Vmss => format!("rg-pool-{k:02}"),
                    },
                    vmss_name: format!("vmss-{k:02}-{j:02}"),
                    population: share(pop, p, parts),
                    cap: 1019,
                });
                j += 1;
            }
        }
        vnets.push(v);
    }
    for (tag, sub) in [("a", 0u32), ("b", 1u32.min(s_count - 1))] {
        let vi = vnets.len() as u32;
        let rg = format!("rg-net-legacy-{tag}");
        let name = format!("vnet-legacy-{tag}");
        let id = format!(
            "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{name}",
            subs[sub as usize].id
        );
        let v4 = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24).expect("prefix");
        let flow = match cfg.flow_kinds {
            FlowKinds::Both if tag == "a" => FlowLogKind::Nsg,
            FlowKinds::Both => FlowLogKind::Vnet,
            _ => flow_for(0),
        };
        subnets.push(Subnet {
            vnet: vi,
            id: format!("{id}/subnets/default"),
            nsg_id: format!(
                "/subscriptions/{}/resourceGroups/{rg}/providers/Microsoft.Network/networkSecurityGroups/nsg-{name}-default",
                subs[sub as usize].id
            ),
            name: "default".into(),
            v4,
            v6: None,
            kind: SubnetKind::Vm,
            nic_rg: format!("rg-legacy-{tag}"),
            vmss_name: String::new(),
            population: legacy_each,
            cap: 251,
        });
        vnets.push(Vnet {
            sub,
            rg,
            name,
            id,
            v4,
            v6: None,
            flow,
            subnets: vec![subnets.len() as u32 - 1],
            legacy: true,
            peers: Vec::new(),
        });
    }
    for k in (0..n_vnets.saturating_sub(1)).step_by(2) {
        vnets[k as usize].peers.push(k + 1);
        vnets[k as usize + 1].peers.push(k);
    }
    (subs, vnets, subnets)
}

// ---------------------------------------------------------------------------
// Per-subnet simulation

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    CreateVm { unattached: bool },
    Attach(u32),
    Detach(u32),
    Op(u32),
    Delete(u32),
    StaticMove,
    StaticTake { from: u32, host: u32 },
    VmssCreate,
    VmssDelete(u32),
}

struct LNic {
    nic: Nic,
    cur: Option<NicSt>,
    held4: Vec<u32>,
    held6: Vec<u32>,
    version: u32,
}

struct SubnetOut {
    nics: Vec<Nic>,
    vms: Vec<String>,
}

struct SubnetSim<'a> {
    cfg: &'a SimConfig,
    sn: &'a Subnet,
    sn_idx: u32,
    sub_id: &'a str,
    rng: ChaCha8Rng,
    t0: Micros,
    change_end: Micros,
    free4: BTreeSet<u32>,
    free6: BTreeSet<u32>,
    nics: Vec<LNic>,
    alive: Vec<u32>,
    alive_pos: Vec<usize>,
    vms: Vec<String>,
    heap: BinaryHeap<Reverse<(Micros, u64, Act)>>,
    seq: u64,
}

fn uni(rng: &mut ChaCha8Rng, lo: Micros, hi: Micros) -> Micros {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

fn exp(rng: &mut ChaCha8Rng, mean: Micros) -> Micros {
    let u: f64 = rng.random::<f64>();
    (-(1.0 - u).ln() * mean as f64) as Micros
}

fn hours(h: f64) -> Micros {
    (h * HOUR as f64) as Micros
}

impl<'a> SubnetSim<'a> {
    fn run(
        cfg: &'a SimConfig,
        subs: &'a [Sub],
        vnets: &'a [Vnet],
        sn: &'a Subnet,
        sn_idx: u32,
        t0: Micros,
        change_end: Micros,
    ) -> SubnetOut {
        let vnet = &vnets[sn.vnet as usize];
        let mut s = SubnetSim {
            cfg,
            sn,
            sn_idx,
            sub_id: &subs[vnet.sub as usize].id,
            rng: rng_for(cfg.seed, &[stream::SUBNET, u64::from(sn_idx)]),
            t0,
            change_end,
            free4: (0..sn.cap).collect(),
            free6: if sn.v6.is_some() {
                (0..sn.cap).collect()
            } else {
                BTreeSet::new()
            },
            nics: Vec::new(),
            alive: Vec::new(),
            alive_pos: Vec::new(),
            vms: Vec::new(),
            heap: BinaryHeap::new(),
            seq: 0,
        };
        s.populate();
        if sn.kind == SubnetKind::Vm && sn.population >= 2 {
            let first = t0 + exp(&mut s.rng, hours(cfg.static_move_hours));
            s.at(first, Act::StaticMove);
        }
        while let Some(Reverse((t, _, act))) = s.heap.pop() {
            s.fire(t, act);
        }
        SubnetOut {
            nics: s.nics.into_iter().map(|l| l.nic).collect(),
            vms: s.vms,
        }
    }

    fn at(&mut self, t: Micros, act: Act) {
        if t >= self.t0 && t < self.change_end {
            self.seq += 1;
            self.heap.push(Reverse((t, self.seq, act)));
        }
    }

    fn populate(&mut self) {
        for _ in 0..self.sn.population {
            let tc = self.t0 - uni(&mut self.rng, HOUR, 30 * DAY);
            match self.sn.kind {
                SubnetKind::Vm => {
                    let unattached = self.rng.random_bool(0.06);
                    let lowest = self.rng.random_bool(0.85);
                    let Some(n) = self.new_vm_nic(tc, lowest, !unattached) else {
                        continue;
                    };
                    self.schedule_vm_life(n, self.t0, !unattached);
                    if unattached && self.rng.random_bool(0.5) {
                        let t = self.t0 + uni(&mut self.rng, 10 * MIN, DAY);
                        self.at(t, Act::Attach(n));
                    }
                }
                SubnetKind::Vmss => {
                    let lowest = self.rng.random_bool(0.9);
                    if let Some(n) = self.new_vmss_nic(tc, lowest) {
                        let td = self.t0 + exp(&mut self.rng, hours(self.cfg.vmss_life_hours));
                        self.at(td, Act::VmssDelete(n));
                    }
                }
            }
        }
    }

    fn new_vm(&mut self) -> u32 {
        let k = self.vms.len();
        self.vms.push(format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachines/vm-{:03}-{k:04}",
            self.sub_id, self.sn.nic_rg, self.sn_idx
        ));
        k as u32
    }

    fn push_nic(&mut self, id: String, name: String, vmss: bool) -> u32 {
        let n = self.nics.len() as u32;
        self.nics.push(LNic {
            nic: Nic {
                subnet: self.sn_idx,
                id,
                name,
                vmss,
                mac: 0,
                changes: Vec::new(),
            },
            cur: None,
            held4: Vec::new(),
            held6: Vec::new(),
            version: 0,
        });
        self.alive_pos.push(usize::MAX);
        n
    }

    fn set_alive(&mut self, n: u32, alive: bool) {
        if alive {
            self.alive_pos[n as usize] = self.alive.len();
            self.alive.push(n);
        } else {
            let p = self.alive_pos[n as usize];
            if p == usize::MAX {
                return;
            }
            self.alive.swap_remove(p);
            if p < self.alive.len() {
                let moved = self.alive[p];
                self.alive_pos[moved as usize] = p;
            }
            self.alive_pos[n as usize] = usize::MAX;
        }
    }

    /// Takes a free IPv4 slot the NIC never held: the lowest, or a random one.
    fn alloc4(&mut self, n: u32, lowest: bool) -> Option<u32> {
        let held = &self.nics[n as usize].held4;
        let pick = if lowest || self.free4.is_empty() {
            self.free4.iter().copied().find(|h| !held.contains(h))
        } else {
            let k = self.rng.random_range(0..self.free4.len());
            self.free4
                .iter()
                .skip(k)
                .chain(self.free4.iter().take(k))
                .copied()
                .find(|h| !held.contains(h))
        }?;
        self.free4.remove(&pick);
        self.nics[n as usize].held4.push(pick);
        Some(pick)
    }

    fn alloc6(&mut self, n: u32) -> Option<u32> {
        let held = &self.nics[n as usize].held6;
        let pick = self.free6.iter().copied().find(|h| !held.contains(h))?;
        self.free6.remove(&pick);
        self.nics[n as usize].held6.push(pick);
        Some(pick)
    }

    fn release(&mut self, st: &NicSt) {
        self.free4.insert(st.v4);
        if let Some(h) = st.v6 {
            self.free6.insert(h);
        }
    }

    fn change(&mut self, n: u32, t: Micros, op: Op, state: Option<NicSt>) {
        let l = &mut self.nics[n as usize];
        l.version += 1;
        let state = state.map(|mut s| {
            s.version = l.version;
            s
        });
        l.cur = state;
        // Attaching a NIC to a VM and detaching it are VM operations: Azure
        // writes no NIC record for them.
        let event = !l.nic.vmss && t >= self.t0 && !matches!(op, Op::Attach | Op::Detach);
        l.nic.changes.push(Change {
            t,
            op,
            state,
            event,
        });
    }

    fn new_vm_nic(&mut self, t: Micros, lowest: bool, attached: bool) -> Option<u32> {
        if self.free4.is_empty() {
            return None;
        }
        let k = self.nics.len();
        let name = format!("nic-{:03}-{k:04}", self.sn_idx);
        let id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{name}",
            self.sub_id, self.sn.nic_rg
        );
        let n = self.push_nic(id, name, false);
        let v4 = self.alloc4(n, lowest)?;
        let v6 = if self.sn.v6.is_some() && self.rng.random_bool(0.7) {
            self.alloc6(n)
        } else {
            None
        };
        let vm = attached.then(|| self.new_vm());
        let st = NicSt {
            v4,
            v4_static: !lowest,
            v6,
            vm,
            mac: attached,
            version: 0,
        };
        self.change(n, t, Op::Create, Some(st));
        self.set_alive(n, true);
        Some(n)
    }

    fn new_vmss_nic(&mut self, t: Micros, lowest: bool) -> Option<u32> {
        if self.free4.is_empty() {
            return None;
        }
        let inst = self.nics.len();
        let vmss = &self.sn.vmss_name;
        let vm_id = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmss}/virtualMachines/{inst}",
            self.sub_id, self.sn.nic_rg
        );
        let id = format!("{vm_id}/networkInterfaces/{vmss}-nic");
        let n = self.push_nic(id, format!("{vmss}-nic"), true);
        let v4 = self.alloc4(n, lowest)?;
        let v6 = if self.sn.v6.is_some() {
            self.alloc6(n)
        } else {
            None
        };
        let vm = self.vms.len() as u32;
        self.vms.push(vm_id);
        let st = NicSt {
            v4,
            v4_static: false,
            v6,
            vm: Some(vm),
            mac: true,
            version: 0,
        };
        self.change(n, t, Op::Create, Some(st));
        self.set_alive(n, true);
        Some(n)
    }

    /// Schedules the death (and the VM's deletion before it) and the first
    /// life change of a VM NIC alive at `from`.
    fn schedule_vm_life(&mut self, n: u32, from: Micros, will_attach: bool) {
        let td = from + exp(&mut self.rng, hours(self.cfg.vm_life_hours));
        if will_attach && self.rng.random_bool(0.7) {
            let tdet = td - uni(&mut self.rng, 10 * SEC, 30 * MIN);
            if tdet > from + 5 * MIN {
                self.at(tdet, Act::Detach(n));
            }
        }
        self.at(td, Act::Delete(n));
        let top = from + exp(&mut self.rng, hours(self.cfg.op_interval_hours));
        self.at(top, Act::Op(n));
    }

    fn cur(&self, n: u32) -> Option<NicSt> {
        self.nics[n as usize].cur
    }

    fn fire(&mut self, t: Micros, act: Act) {
        match act {
            Act::CreateVm { unattached } => {
                let lowest = self.rng.random_bool(0.7);
                if let Some(n) = self.new_vm_nic(t, lowest, false) {
                    self.schedule_vm_life(n, t, !unattached);
                    if !unattached {
                        let ta = t + uni(&mut self.rng, 20 * SEC, 3 * MIN);
                        self.at(ta, Act::Attach(n));
                    } else if self.rng.random_bool(0.5) {
                        let ta = t + uni(&mut self.rng, 10 * MIN, DAY);
                        self.at(ta, Act::Attach(n));
                    }
                }
            }
            Act::Attach(n) => {
                if let Some(mut s) = self.cur(n)
                    && s.vm.is_none()
                {
                    s.vm = Some(self.new_vm());
                    s.mac = true;
                    self.change(n, t, Op::Attach, Some(s));
                }
            }
            Act::Detach(n) => {
                if let Some(mut s) = self.cur(n)
                    && s.vm.is_some()
                {
                    s.vm = None;
                    self.change(n, t, Op::Detach, Some(s));
                }
            }
            Act::Op(n) => {
                let Some(mut s) = self.cur(n) else { return };
                let r: f64 = self.rng.random();
                if r < 0.3 && s.vm.is_some() {
                    // Move the NIC to another VM.
                    s.vm = None;
                    self.change(n, t, Op::Detach, Some(s));
                    let ta = t + uni(&mut self.rng, MIN, 2 * HOUR);
                    self.at(ta, Act::Attach(n));
                } else if r < 0.45 {
                    if let Some(h) = self.alloc4(n, false) {
                        self.free4.insert(s.v4);
                        s.v4 = h;
                        s.v4_static = true;
                        self.change(n, t, Op::Readdress, Some(s));
                    }
                } else {
                    self.change(n, t, Op::Touch, Some(s));
                }
                let next = t + exp(&mut self.rng, hours(self.cfg.op_interval_hours));
                self.at(next, Act::Op(n));
            }
            Act::Delete(n) => {
                let Some(s) = self.cur(n) else { return };
                self.release(&s);
                self.change(n, t, Op::Delete, None);
                self.set_alive(n, false);
                let r: f64 = self.rng.random();
                let delay = if r < 0.40 {
                    uni(&mut self.rng, 5 * SEC, 10 * MIN)
                } else if r < 0.85 {
                    uni(&mut self.rng, HOUR, 12 * HOUR)
                } else {
                    uni(&mut self.rng, 12 * HOUR, 3 * DAY)
                };
                let unattached = self.rng.random_bool(0.08);
                self.at(t + delay, Act::CreateVm { unattached });
            }
            Act::StaticMove => {
                let next = t + exp(&mut self.rng, hours(self.cfg.static_move_hours));
                self.at(next, Act::StaticMove);
                if self.alive.len() < 2 {
                    return;
                }
                let a = self.alive[self.rng.random_range(0..self.alive.len())];
                let Some(mut s) = self.cur(a) else { return };
                let Some(y) = self.alloc4(a, true) else {
                    return;
                };
                let x = s.v4;
                s.v4 = y;
                s.v4_static = true;
                self.change(a, t, Op::Readdress, Some(s));
                // x stays out of the pool until B takes it.
                let tt = t + uni(&mut self.rng, 5 * SEC, 20 * MIN);
                if tt < self.change_end {
                    self.at(tt, Act::StaticTake { from: a, host: x });
                } else {
                    self.free4.insert(x);
                }
            }
            Act::StaticTake { from, host } => {
                for _ in 0..10 {
                    if self.alive.is_empty() {
                        break;
                    }
                    let b = self.alive[self.rng.random_range(0..self.alive.len())];
                    if b == from || self.nics[b as usize].held4.contains(&host) {
                        continue;
                    }
                    let Some(mut s) = self.cur(b) else { continue };
                    self.free4.insert(s.v4);
                    s.v4 = host;
                    s.v4_static = true;
                    self.nics[b as usize].held4.push(host);
                    self.change(b, t, Op::Readdress, Some(s));
                    return;
                }
                self.free4.insert(host);
            }
            Act::VmssCreate => {
                if let Some(n) = self.new_vmss_nic(t, true) {
                    let td = t + exp(&mut self.rng, hours(self.cfg.vmss_life_hours));
                    self.at(td, Act::VmssDelete(n));
                }
            }
            Act::VmssDelete(n) => {
                let Some(s) = self.cur(n) else { return };
                self.release(&s);
                self.change(n, t, Op::Delete, None);
                self.set_alive(n, false);
                let delay = if self.rng.random_bool(0.85) {
                    uni(&mut self.rng, 2 * SEC, 8 * MIN)
                } else {
                    uni(&mut self.rng, HOUR, 10 * HOUR)
                };
                self.at(t + delay, Act::VmssCreate);
            }
        }
    }
}
