//! The blobs written as Azure writes them (NSG v2 records grouped by rule
//! and MAC, VNet v4 records by ACL and rule), with a truth line per tuple.

use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::time::{self, MIN, SEC};
use crate::truth::World;
use crate::{guid, mix, stream};

use super::{EndTruth, FlowScope, FlowStats, Gen, Holder, RULES, TupleTruth};

#[derive(Serialize)]
struct NsgRecord<'a> {
    time: String,
    #[serde(rename = "systemId")]
    system_id: String,
    category: &'static str,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "operationName")]
    operation_name: &'static str,
    properties: NsgProps<'a>,
}

#[derive(Serialize)]
struct NsgProps<'a> {
    #[serde(rename = "Version")]
    version: u32,
    flows: Vec<NsgRuleFlows<'a>>,
}

#[derive(Serialize)]
struct NsgRuleFlows<'a> {
    rule: &'static str,
    flows: Vec<NsgMacFlows<'a>>,
}

#[derive(Serialize)]
struct NsgMacFlows<'a> {
    mac: String,
    #[serde(rename = "flowTuples")]
    flow_tuples: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VnetRecord<'a> {
    time: String,
    flow_log_version: u32,
    #[serde(rename = "flowLogGUID")]
    flow_log_guid: String,
    mac_address: String,
    category: &'static str,
    #[serde(rename = "flowLogResourceID")]
    flow_log_resource_id: String,
    #[serde(rename = "targetResourceID")]
    target_resource_id: &'a str,
    operation_name: &'static str,
    flow_records: VnetFlowRecords<'a>,
}

#[derive(Serialize)]
struct VnetFlowRecords<'a> {
    flows: Vec<VnetAclFlows<'a>>,
}

#[derive(Serialize)]
struct VnetAclFlows<'a> {
    #[serde(rename = "aclID")]
    acl_id: String,
    #[serde(rename = "flowGroups")]
    flow_groups: Vec<VnetGroup<'a>>,
}

#[derive(Serialize)]
struct VnetGroup<'a> {
    rule: &'static str,
    #[serde(rename = "flowTuples")]
    flow_tuples: Vec<&'a str>,
}

/// Splits `items` into runs with the same key.
fn runs<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let k = key(&items[i]);
        let mut j = i + 1;
        while j < items.len() && key(&items[j]) == k {
            j += 1;
        }
        out.push(&items[i..j]);
        i = j;
    }
    out
}

pub(super) fn write_file(
    world: &World,
    path: &Path,
    name: &str,
    gens: &[Gen],
    mut truth_w: Option<&mut BufWriter<fs::File>>,
    stats: &mut FlowStats,
) -> anyhow::Result<u64> {
    let seed = world.cfg.seed;
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut bytes = 0u64;
    w.write_all(b"{\"records\":[")?;
    bytes += 12;
    let nsg = gens.first().is_some_and(|g| g.file.0 == 0);
    for (ri, rec) in runs(gens, |g| g.rec).into_iter().enumerate() {
        if ri > 0 {
            w.write_all(b",")?;
            bytes += 1;
        }
        let (a, mac, minute) = rec[0].rec;
        let rtime = time::fmt7(
            minute * MIN
                + MIN
                + (mix(seed, &[minute as u64, u64::from(a)]) % (2 * SEC as u64)) as i64,
        );
        let mut tuple_pos: Vec<(u32, u32, u32)> = Vec::with_capacity(rec.len());
        let js = if nsg {
            let sn = &world.subnets[a as usize];
            let mut flows = Vec::new();
            for (fi, by_rule) in runs(rec, |g| g.flow).into_iter().enumerate() {
                let mut groups = Vec::new();
                for (gi, by_mac) in runs(by_rule, |g| g.group).into_iter().enumerate() {
                    for (ti, _) in by_mac.iter().enumerate() {
                        tuple_pos.push((fi as u32, gi as u32, ti as u32));
                    }
                    groups.push(NsgMacFlows {
                        mac: format!("{:012X}", by_mac[0].group),
                        flow_tuples: by_mac.iter().map(|g| g.text.as_str()).collect(),
                    });
                }
                flows.push(NsgRuleFlows {
                    rule: RULES[by_rule[0].flow as usize],
                    flows: groups,
                });
            }
            serde_json::to_string(&NsgRecord {
                time: rtime,
                system_id: guid(seed, &[stream::FLOWS, 1, u64::from(a)]),
                category: "NetworkSecurityGroupFlowEvent",
                resource_id: sn.nsg_id.to_ascii_uppercase(),
                operation_name: "NetworkSecurityGroupFlowEvents",
                properties: NsgProps { version: 2, flows },
            })?
        } else {
            let vnet = &world.vnets[a as usize];
            let sub = &world.subs[vnet.sub as usize];
            let mut flows = Vec::new();
            for (fi, by_acl) in runs(rec, |g| g.flow).into_iter().enumerate() {
                let mut groups = Vec::new();
                for (gi, by_rule) in runs(by_acl, |g| g.group).into_iter().enumerate() {
                    for (ti, _) in by_rule.iter().enumerate() {
                        tuple_pos.push((fi as u32, gi as u32, ti as u32));
                    }
                    groups.push(VnetGroup {
                        rule: RULES[by_rule[0].group as usize],
                        flow_tuples: by_rule.iter().map(|g| g.text.as_str()).collect(),
                    });
                }
                flows.push(VnetAclFlows {
                    acl_id: guid(seed, &[stream::FLOWS, 2, u64::from(by_acl[0].flow)]),
                    flow_groups: groups,
                });
            }
            serde_json::to_string(&VnetRecord {
                time: rtime,
                flow_log_version: 4,
                flow_log_guid: guid(seed, &[stream::FLOWS, 3, u64::from(a)]),
                mac_address: format!("{mac:012X}"),
                category: "FlowLogFlowEvent",
                flow_log_resource_id: format!(
                    "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_{}/FLOWLOGS/{}-FLOWLOG",
                    sub.id, sub.location, vnet.name
                )
                .to_ascii_uppercase(),
                target_resource_id: &vnet.id,
                operation_name: "FlowLogFlowEvent",
                flow_records: VnetFlowRecords { flows },
            })?
        };
        w.write_all(js.as_bytes())?;
        bytes += js.len() as u64;
        stats.records += 1;
        if let Some(tw) = truth_w.as_deref_mut() {
            for (g, (fi, gi, ti)) in rec.iter().zip(tuple_pos) {
                let Some(gt) = &g.truth else { continue };
                let vnet = &world.vnets[gt.vnet as usize];
                let end = |e: &(IpAddr, Holder, Option<u32>)| {
                    let (nic, vm) = match e.1 {
                        Holder::Nobody => (None, None),
                        Holder::Nic(n, v) => (
                            Some(world.nics[n as usize].id.clone()),
                            v.map(|v| world.vms[v as usize].clone()),
                        ),
                        Holder::Unseen(mac) => (Some(unseen_nic_id(world, gt.vnet, mac)), None),
                    };
                    EndTruth {
                        ip: e.0,
                        nic,
                        vm,
                        vnet: e.2.map(|w| world.vnets[w as usize].id.clone()),
                    }
                };
                let line = TupleTruth {
                    file: format!("flowlogs/{name}"),
                    record: ri as u32,
                    flow: fi,
                    group: gi,
                    tuple: ti,
                    format: if nsg { "nsg".into() } else { "vnet".into() },
                    at: g.t,
                    kind: gt.kind.name().into(),
                    scope: FlowScope {
                        vnet: (!nsg).then(|| vnet.id.clone()),
                        subscription: world.subs[vnet.sub as usize].id.clone(),
                    },
                    mac: format!("{:012X}", gt.mac),
                    capture: if gt.capture_src {
                        "src".into()
                    } else {
                        "dst".into()
                    },
                    src: end(&gt.src),
                    dst: end(&gt.dst),
                };
                serde_json::to_writer(&mut *tw, &line)?;
                tw.write_all(b"\n")?;
            }
        }
    }
    w.write_all(b"]}")?;
    bytes += 2;
    w.flush()?;
    Ok(bytes)
}

/// The id of an unseen scale-set instance's NIC (MAC `mac`, VNet `vn`).
fn unseen_nic_id(world: &World, vn: u32, mac: u64) -> String {
    let v = &world.vnets[vn as usize];
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/vmss-unseen/virtualMachines/{}/networkInterfaces/nic-{:06x}",
        world.subs[v.sub as usize].id,
        v.rg,
        mac & 0xFF_FFFF,
        mac & 0xFF_FFFF
    )
}
