//! What the delivered files of an estate prove, read back from disk the way a
//! user's collector would hand them over (never from the simulator's memory).
//!
//! Evidence about a NIC is a list of timed items:
//! - an observation of its state (from a snapshot page, or from a
//!   `Success` NIC write record's `responseBody`; `statusCode` `Created`
//!   marks an exact start);
//! - its disappearance (a `Success` delete record, or its absence from a
//!   complete snapshot of its subscription).
//!
//! From those items, per NIC and (VNet, IP), a [`Claim`] with the bounds of
//! the attribution model: the certain window runs from the first to the last
//! observation holding the IP, and on to the next item that shows it gone
//! when that item is an event (exact end); the possible window runs from the
//! last item showing it not held (or the exact start) to the first item after
//! the last holding one that shows it gone.
//!
//! [`Evidence::settled`] says what the evidence settles for a lookup: one
//! NIC beyond doubt (T between two observations of one NIC holding the IP,
//! in no other claim's certain window: exclusivity rules the others out),
//! its VM too when both observations show the same one (the NIC and its VM
//! are two answers), or nobody (T inside no claim's possible window).
//!
//! [`Evidence::sightings`] are the rows of the naive approach: every
//! delivered observation, one row per (time, IP).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use super::time::{self, Micros};
use super::write::SnapshotMeta;
use super::{FeedItem, Manifest};

/// Strings (lower-cased ARM ids) to small integers.
#[derive(Default, Debug)]
pub struct Interner {
    map: HashMap<String, u32>,
    pub names: Vec<String>,
}

impl Interner {
    pub fn id(&mut self, s: &str) -> u32 {
        let k = s.to_ascii_lowercase();
        if let Some(&i) = self.map.get(&k) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(k.clone());
        self.map.insert(k, i);
        i
    }
    pub fn get(&self, s: &str) -> Option<u32> {
        self.map.get(&s.to_ascii_lowercase()).copied()
    }
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

/// The VNet id (lower case) of a subnet id.
pub fn vnet_of_subnet(subnet: &str) -> Option<String> {
    let l = subnet.to_ascii_lowercase();
    let i = l.find("/virtualnetworks/")?;
    let rest = &l[i + "/virtualnetworks/".len()..];
    let name = rest.split('/').next()?;
    Some(format!("{}{}", &l[..i + "/virtualnetworks/".len()], name))
}

/// A MAC as 12 upper-case hex digits, whatever its separators.
pub fn normal_mac(m: &str) -> String {
    m.chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The subscription (lower case) of an ARM id.
pub fn sub_of_id(id: &str) -> String {
    id.split('/')
        .skip_while(|s| !s.eq_ignore_ascii_case("subscriptions"))
        .nth(1)
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[derive(Clone, Debug)]
enum ItemKind {
    Obs {
        created: bool,
        event: bool,
        ips: Vec<(u32, IpAddr)>,
        vm: Option<u32>,
    },
    Gone {
        event: bool,
    },
}

#[derive(Clone, Debug)]
struct Item {
    t: Micros,
    kind: ItemKind,
}

/// One NIC's hold of one (VNet, IP), as far as the delivered evidence shows.
#[derive(Clone, Debug)]
pub struct Claim {
    pub nic: u32,
    /// Observations holding the IP: (time, VM).
    pub holds: Vec<(Micros, Option<u32>)>,
    /// The first holding observation is a create event.
    pub start_exact: bool,
    /// Last item before the first hold showing the IP not held.
    pub ps: Option<Micros>,
    /// First item after the last hold showing the IP not held.
    pub pe: Option<Micros>,
    /// `pe` comes from an event (delete, or a write without the IP).
    pub end_exact: bool,
}

impl Claim {
    pub fn first(&self) -> Micros {
        self.holds[0].0
    }
    pub fn last(&self) -> Micros {
        self.holds[self.holds.len() - 1].0
    }
    /// T may lie in this claim.
    pub fn possible(&self, t: Micros) -> bool {
        let lo = if self.start_exact {
            t >= self.first()
        } else {
            self.ps.is_none_or(|p| t > p)
        };
        lo && self.pe.is_none_or(|e| t < e)
    }
    /// T lies in this claim beyond doubt.
    pub fn certain(&self, t: Micros) -> bool {
        t >= self.first()
            && (t <= self.last() || (self.end_exact && self.pe.is_some_and(|e| t < e)))
    }
    /// The VM of the last hold at or before `t`, and of the first hold at or
    /// after it (None when `t` is past the last hold).
    pub fn vm_around(&self, t: Micros) -> (Option<Option<u32>>, Option<Option<u32>>) {
        let i = self.holds.partition_point(|h| h.0 <= t);
        let before = (i > 0).then(|| self.holds[i - 1].1);
        let j = self.holds.partition_point(|h| h.0 < t);
        let after = self.holds.get(j).map(|h| h.1);
        (before, after)
    }
}

/// A lookup's scope, lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Vnet(String),
    Subscription(String),
    Any,
}

/// What the evidence settles for one lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// One NIC beyond doubt (exclusivity rules out every other claim), and
    /// its VM when that is beyond doubt too (`Some(None)`: no VM).
    Confirmed { nic: u32, vm: Option<Option<u32>> },
    /// Inside the certain windows of two claims: contradictory evidence.
    Contested { nic: u32 },
    /// No claim can cover T.
    Unknown,
    /// Nothing settled.
    Open,
}

/// A row of the naive approach.
#[derive(Clone, Copy, Debug)]
pub struct Sighting {
    pub t: Micros,
    pub ip: IpAddr,
    pub vnet: u32,
    pub nic: u32,
    pub vm: Option<u32>,
}

/// Delivered evidence of an estate directory.
#[derive(Default)]
pub struct Evidence {
    pub vnets: Interner,
    pub nics: Interner,
    pub vms: Interner,
    pub subs: Interner,
    /// Subscription of each VNet.
    pub vnet_sub: Vec<u32>,
    pub claims: HashMap<(u32, IpAddr), Vec<Claim>>,
    by_ip: HashMap<IpAddr, Vec<u32>>,
    pub sightings: Vec<Sighting>,
    /// Every MAC a delivered observation showed (12 hex digits, upper case).
    pub macs: HashSet<String>,
    pub snapshots: usize,
    pub complete_snapshots: usize,
    pub success_records: usize,
}

#[derive(Deserialize)]
struct PNic {
    id: String,
    #[serde(default)]
    properties: PNicProps,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PNicProps {
    #[serde(default)]
    ip_configurations: Vec<PIpConfig>,
    #[serde(default)]
    virtual_machine: Option<PId>,
    #[serde(default)]
    mac_address: Option<String>,
}

#[derive(Deserialize)]
struct PId {
    id: String,
}

#[derive(Deserialize)]
struct PIpConfig {
    #[serde(default)]
    properties: PIpProps,
}

#[derive(Deserialize, Default)]
struct PIpProps {
    #[serde(rename = "privateIPAddress", default)]
    private_ip_address: Option<String>,
    #[serde(default)]
    subnet: Option<PId>,
}

#[derive(Deserialize)]
struct PPage {
    #[serde(default)]
    value: Vec<PNic>,
}

impl Evidence {
    /// Reads every delivered file listed in the estate's manifest.
    pub fn load(dir: &Path, manifest: &Manifest) -> anyhow::Result<Evidence> {
        let mut ev = Evidence::default();
        let mut items: Vec<Vec<Item>> = Vec::new();
        let mut nic_sub: Vec<u32> = Vec::new();
        // Complete snapshots per subscription: (time, members).
        let mut complete: HashMap<u32, Vec<(Micros, HashSet<u32>)>> = HashMap::new();

        for item in &manifest.feed {
            match item {
                FeedItem::Snapshot { dir: rel, .. } => {
                    let sdir = dir.join(rel);
                    let meta: SnapshotMeta = read_json(&sdir.join("meta.json"))?;
                    let t = time::parse(&meta.taken_at)
                        .with_context(|| format!("bad taken_at in {}", sdir.display()))?;
                    ev.snapshots += 1;
                    let mut members = HashSet::new();
                    for page in &meta.pages {
                        let p: PPage = read_json(&sdir.join(page))?;
                        for nic in p.value {
                            let (n, obs) = ev.observation(&nic, &mut items, &mut nic_sub);
                            members.insert(n);
                            if let ItemKind::Obs { ips, vm, .. } = &obs {
                                for &(vnet, ip) in ips {
                                    ev.sightings.push(Sighting {
                                        t,
                                        ip,
                                        vnet,
                                        nic: n,
                                        vm: *vm,
                                    });
                                }
                            }
                            items[n as usize].push(Item { t, kind: obs });
                        }
                    }
                    if meta.complete {
                        ev.complete_snapshots += 1;
                        for s in &meta.subscriptions {
                            let s = ev.subs.id(s);
                            complete.entry(s).or_default().push((t, members.clone()));
                        }
                    }
                }
                FeedItem::Activity { file, .. } => {
                    let p = dir.join(file);
                    let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                    for rec in parse_activity(&bytes)
                        .with_context(|| format!("parsing {}", p.display()))?
                    {
                        ev.activity_record(&rec, &mut items, &mut nic_sub);
                    }
                }
                // Routing, not ownership: the scorer takes each flow end's
                // VNet from the flow truth.
                FeedItem::Topology { .. } => {}
            }
        }
        for v in complete.values_mut() {
            v.sort_by_key(|(t, _)| *t);
        }
        // Absence from the complete snapshots around each NIC's observations.
        for (n, its) in items.iter_mut().enumerate() {
            let obs_t: Vec<Micros> = its
                .iter()
                .filter(|i| matches!(i.kind, ItemKind::Obs { .. }))
                .map(|i| i.t)
                .collect();
            let (Some(&first), Some(&last)) = (obs_t.iter().min(), obs_t.iter().max()) else {
                continue;
            };
            let Some(snaps) = complete.get(&nic_sub[n]) else {
                continue;
            };
            let i = snaps.partition_point(|(t, _)| *t < first);
            if i > 0 && !snaps[i - 1].1.contains(&(n as u32)) {
                its.push(Item {
                    t: snaps[i - 1].0,
                    kind: ItemKind::Gone { event: false },
                });
            }
            let j = snaps.partition_point(|(t, _)| *t <= last);
            if let Some((t, members)) = snaps.get(j)
                && !members.contains(&(n as u32))
            {
                its.push(Item {
                    t: *t,
                    kind: ItemKind::Gone { event: false },
                });
            }
        }
        // Claims.
        for (n, its) in items.iter_mut().enumerate() {
            its.sort_by_key(|i| i.t);
            let mut keys: Vec<(u32, IpAddr)> = its
                .iter()
                .filter_map(|i| match &i.kind {
                    ItemKind::Obs { ips, .. } => Some(ips.iter().copied()),
                    _ => None,
                })
                .flatten()
                .collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let holds_of = |i: &Item| match &i.kind {
                    ItemKind::Obs { ips, .. } => ips.contains(&key),
                    ItemKind::Gone { .. } => false,
                };
                let hold_idx: Vec<usize> = (0..its.len()).filter(|&i| holds_of(&its[i])).collect();
                let (fi, li) = (hold_idx[0], hold_idx[hold_idx.len() - 1]);
                let start_exact = matches!(its[fi].kind, ItemKind::Obs { created: true, .. });
                let ps = its[..fi].iter().rev().find(|i| !holds_of(i)).map(|i| i.t);
                let after = its[li + 1..]
                    .iter()
                    .find(|i| !holds_of(i) && i.t > its[li].t);
                let (pe, end_exact) = match after {
                    Some(Item {
                        t,
                        kind: ItemKind::Gone { event } | ItemKind::Obs { event, .. },
                    }) => (Some(*t), *event),
                    None => (None, false),
                };
                let holds = hold_idx
                    .iter()
                    .map(|&i| match &its[i].kind {
                        ItemKind::Obs { vm, .. } => (its[i].t, *vm),
                        ItemKind::Gone { .. } => unreachable!("holding items are observations"),
                    })
                    .collect();
                ev.claims.entry(key).or_default().push(Claim {
                    nic: n as u32,
                    holds,
                    start_exact,
                    ps,
                    pe,
                    end_exact,
                });
            }
        }
        for &(v, ip) in ev.claims.keys() {
            ev.by_ip.entry(ip).or_default().push(v);
        }
        for v in ev.by_ip.values_mut() {
            v.sort();
        }
        Ok(ev)
    }

    fn nic_index(&mut self, id: &str, items: &mut Vec<Vec<Item>>, nic_sub: &mut Vec<u32>) -> u32 {
        let n = self.nics.id(id);
        if n as usize >= items.len() {
            items.push(Vec::new());
            nic_sub.push(self.subs.id(&sub_of_id(id)));
        }
        n
    }

    fn observation(
        &mut self,
        nic: &PNic,
        items: &mut Vec<Vec<Item>>,
        nic_sub: &mut Vec<u32>,
    ) -> (u32, ItemKind) {
        let n = self.nic_index(&nic.id, items, nic_sub);
        if let Some(m) = &nic.properties.mac_address {
            self.macs.insert(normal_mac(m));
        }
        let mut ips = Vec::new();
        for c in &nic.properties.ip_configurations {
            let (Some(ip), Some(sn)) = (&c.properties.private_ip_address, &c.properties.subnet)
            else {
                continue;
            };
            let Ok(ip) = ip.split('/').next().unwrap_or_default().parse::<IpAddr>() else {
                continue;
            };
            let Some(vnet) = vnet_of_subnet(&sn.id) else {
                continue;
            };
            let v = self.vnet_index(&vnet);
            ips.push((v, ip));
        }
        let vm = nic
            .properties
            .virtual_machine
            .as_ref()
            .map(|v| self.vms.id(&v.id));
        (
            n,
            ItemKind::Obs {
                created: false,
                event: false,
                ips,
                vm,
            },
        )
    }

    fn vnet_index(&mut self, vnet: &str) -> u32 {
        let v = self.vnets.id(vnet);
        if v as usize >= self.vnet_sub.len() {
            let s = self.subs.id(&sub_of_id(vnet));
            self.vnet_sub.push(s);
        }
        v
    }

    fn activity_record(
        &mut self,
        rec: &serde_json::Value,
        items: &mut Vec<Vec<Item>>,
        nic_sub: &mut Vec<u32>,
    ) {
        let s = |k: &str| rec.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        if !s("resultType").eq_ignore_ascii_case("success") {
            return;
        }
        let op = s("operationName").to_ascii_lowercase();
        let Some(t) = time::parse(s("time")) else {
            return;
        };
        if op == "microsoft.network/networkinterfaces/write" {
            let props = rec.get("properties");
            let body = props.and_then(|p| p.get("responseBody"));
            let nic: Option<PNic> = match body {
                Some(serde_json::Value::String(js)) => serde_json::from_str(js).ok(),
                Some(v @ serde_json::Value::Object(_)) => serde_json::from_value(v.clone()).ok(),
                _ => None,
            };
            let Some(nic) = nic else { return };
            let created = props
                .and_then(|p| p.get("statusCode"))
                .and_then(|v| v.as_str())
                .is_some_and(|c| c.eq_ignore_ascii_case("created"));
            self.success_records += 1;
            let (n, mut obs) = self.observation(&nic, items, nic_sub);
            if let ItemKind::Obs {
                created: c,
                event,
                ips,
                vm,
            } = &mut obs
            {
                *c = created;
                *event = true;
                for &(vnet, ip) in ips.iter() {
                    self.sightings.push(Sighting {
                        t,
                        ip,
                        vnet,
                        nic: n,
                        vm: *vm,
                    });
                }
            }
            items[n as usize].push(Item { t, kind: obs });
        } else if op == "microsoft.network/networkinterfaces/delete" {
            let id = s("resourceId");
            if id.is_empty() {
                return;
            }
            self.success_records += 1;
            let n = self.nic_index(id, items, nic_sub);
            items[n as usize].push(Item {
                t,
                kind: ItemKind::Gone { event: true },
            });
        }
    }

    fn vnet_in_scope(&self, v: u32, scope: &Scope) -> bool {
        match scope {
            Scope::Any => true,
            Scope::Vnet(k) => self.vnets.name(v) == k,
            Scope::Subscription(s) => self.subs.name(self.vnet_sub[v as usize]) == s,
        }
    }

    /// Claims on `ip` within `scope`.
    pub fn claims_for(&self, ip: IpAddr, scope: &Scope) -> Vec<&Claim> {
        self.claims_in(ip, scope)
            .into_iter()
            .map(|(_, c)| c)
            .collect()
    }

    /// Claims on `ip` within `scope`, with their VNets.
    fn claims_in(&self, ip: IpAddr, scope: &Scope) -> Vec<(u32, &Claim)> {
        let Some(vs) = self.by_ip.get(&ip) else {
            return Vec::new();
        };
        vs.iter()
            .filter(|&&v| self.vnet_in_scope(v, scope))
            .flat_map(|&v| {
                self.claims
                    .get(&(v, ip))
                    .into_iter()
                    .flatten()
                    .map(move |c| (v, c))
            })
            .collect()
    }

    /// What the evidence settles for (ip, t, scope).
    pub fn settled(&self, ip: IpAddr, t: Micros, scope: &Scope) -> Settled {
        let claims = self.claims_in(ip, scope);
        // Strictly between two holding observations: an exact end (a delete
        // event) does not say the state held up to it when a record in
        // between was lost.
        let certain: Vec<&(u32, &Claim)> = claims
            .iter()
            .filter(|(_, c)| c.first() <= t && t <= c.last())
            .collect();
        match certain.as_slice() {
            [] => {}
            [(v, c)] => {
                // Exclusivity rules out the other claims of its VNet only.
                if claims.iter().any(|(w, o)| w != v && o.possible(t)) {
                    return Settled::Open;
                }
                let (before, after) = c.vm_around(t);
                let vm = match (before, after) {
                    (Some(b), Some(a)) => (a == b).then_some(b),
                    (Some(b), None) => Some(b),
                    _ => None,
                };
                return Settled::Confirmed { nic: c.nic, vm };
            }
            [(v, c), rest @ ..] if rest.iter().all(|(w, _)| w == v) => {
                return Settled::Contested { nic: c.nic };
            }
            // Owners in several VNets (an unscoped lookup): nothing single.
            _ => return Settled::Open,
        }
        if claims.iter().all(|(_, c)| !c.possible(t)) {
            Settled::Unknown
        } else {
            Settled::Open
        }
    }

    /// Did the delivered evidence point at `nic` (and, when `vm` is given,
    /// at that VM: `Some(None)` for none) for (ip, t, scope)? True when t
    /// lies in that NIC's certain window, or after its last observation
    /// with nothing ending it, and the VM seen around t is the one asked.
    pub fn pointed_at(
        &self,
        ip: IpAddr,
        t: Micros,
        scope: &Scope,
        nic: &str,
        vm: Option<Option<&str>>,
    ) -> bool {
        let Some(n) = self.nics.get(nic) else {
            return false;
        };
        let vm = match vm {
            Some(Some(v)) => match self.vms.get(v) {
                Some(v) => Some(Some(v)),
                None => return false,
            },
            Some(None) => Some(None),
            None => None,
        };
        self.claims_for(ip, scope).iter().any(|c| {
            if c.nic != n || t < c.first() {
                return false;
            }
            let covered = c.certain(t) || (t > c.last() && c.pe.is_none());
            let (before, after) = c.vm_around(t);
            covered && vm.is_none_or(|vm| before == Some(vm) && after.is_none_or(|a| a == vm))
        })
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> anyhow::Result<T> {
    let bytes = fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))
}

/// The records of an Activity Log file: `{"records":[...]}` or JSON Lines.
pub fn parse_activity(bytes: &[u8]) -> anyhow::Result<Vec<serde_json::Value>> {
    let text = std::str::from_utf8(bytes)?;
    let trimmed = text.trim_start();
    if (trimmed.starts_with("{\"records\"") || trimmed.starts_with("{ \"records\""))
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
        && let Some(arr) = v.get("records").and_then(|r| r.as_array())
    {
        return Ok(arr.clone());
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(Into::into))
        .collect()
}
