//! The delivered files read back: snapshot pages and Activity Log records
//! turned into each NIC's timed items, then into claims.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

use crate::time::{self, Micros};
use crate::write::SnapshotMeta;
use crate::{FeedItem, Manifest};

use super::{Claim, Evidence, Item, ItemKind, Sighting, normal_mac, sub_of_id, vnet_of_subnet};

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
