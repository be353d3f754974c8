//! The estate's layout: subscriptions, VNets (regular, dual-stack and the
//! two overlapping legacy ones), their subnets and peerings.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::{DualStack, FlowKinds, SimConfig, guid, stream};

use super::{FlowLogKind, Sub, Subnet, SubnetKind, Vnet};

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

pub(super) fn layout(cfg: &SimConfig) -> (Vec<Sub>, Vec<Vnet>, Vec<Subnet>) {
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
