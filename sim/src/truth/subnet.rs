//! One subnet simulated on its own random stream: timed actions over its
//! address pool (create, attach, move, re-address, delete, scale-set churn).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::time::{DAY, HOUR, MIN, Micros, SEC};
use crate::{SimConfig, rng_for, stream};

use super::{Change, Nic, NicSt, Op, Sub, Subnet, SubnetKind, Vnet};

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

pub(super) struct SubnetOut {
    pub(super) nics: Vec<Nic>,
    pub(super) vms: Vec<String>,
}

pub(super) struct SubnetSim<'a> {
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
    pub(super) fn run(
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
