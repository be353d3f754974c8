//! A NIC state as ARM returns it (`Microsoft.Network/networkInterfaces`,
//! ARM casing), as listed in snapshot pages and logged in Activity Log bodies.

use serde::Serialize;

use crate::truth::{NicSt, World};
use crate::{guid, stream};

#[derive(Serialize)]
struct ArmNic<'a> {
    name: &'a str,
    id: &'a str,
    etag: String,
    #[serde(rename = "type")]
    ty: &'static str,
    location: &'a str,
    properties: NicProps<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NicProps<'a> {
    provisioning_state: &'static str,
    resource_guid: String,
    ip_configurations: Vec<IpConfig>,
    dns_settings: DnsSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac_address: Option<String>,
    enable_accelerated_networking: bool,
    vnet_encryption_supported: bool,
    #[serde(rename = "enableIPForwarding")]
    enable_ip_forwarding: bool,
    disable_tcp_state_tracking: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_machine: Option<SubResource<'a>>,
    hosted_workloads: [(); 0],
    tap_configurations: [(); 0],
    nic_type: &'static str,
    auxiliary_mode: &'static str,
    auxiliary_sku: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DnsSettings {
    dns_servers: [(); 0],
    applied_dns_servers: [(); 0],
}

#[derive(Serialize)]
struct SubResource<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct IpConfig {
    name: &'static str,
    id: String,
    etag: String,
    #[serde(rename = "type")]
    ty: &'static str,
    properties: IpConfigProps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpConfigProps {
    provisioning_state: &'static str,
    #[serde(rename = "privateIPAddress")]
    private_ip_address: String,
    #[serde(rename = "privateIPAllocationMethod")]
    private_ip_allocation_method: &'static str,
    subnet: OwnedSubResource,
    primary: bool,
    #[serde(rename = "privateIPAddressVersion")]
    private_ip_address_version: &'static str,
}

#[derive(Serialize)]
struct OwnedSubResource {
    id: String,
}

/// The NIC `nic` in state `st` as ARM returns it (compact JSON).
pub fn nic_json(world: &World, nic: u32, st: &NicSt) -> String {
    let n = &world.nics[nic as usize];
    let sn = &world.subnets[n.subnet as usize];
    let sub = &world.subs[world.vnets[sn.vnet as usize].sub as usize];
    let seed = world.cfg.seed;
    let etag = format!(
        "W/\"{}\"",
        guid(
            seed,
            &[stream::IDS, 2, u64::from(nic), u64::from(st.version)]
        )
    );
    let mut cfgs = vec![IpConfig {
        name: "ipconfig1",
        id: format!("{}/ipConfigurations/ipconfig1", n.id),
        etag: etag.clone(),
        ty: "Microsoft.Network/networkInterfaces/ipConfigurations",
        properties: IpConfigProps {
            provisioning_state: "Succeeded",
            private_ip_address: sn.v4_addr(st.v4).to_string(),
            private_ip_allocation_method: if st.v4_static { "Static" } else { "Dynamic" },
            subnet: OwnedSubResource { id: sn.id.clone() },
            primary: true,
            private_ip_address_version: "IPv4",
        },
    }];
    if let Some(a) = st.v6.and_then(|h| sn.v6_addr(h)) {
        cfgs.push(IpConfig {
            name: "ipconfig-v6",
            id: format!("{}/ipConfigurations/ipconfig-v6", n.id),
            etag: etag.clone(),
            ty: "Microsoft.Network/networkInterfaces/ipConfigurations",
            properties: IpConfigProps {
                provisioning_state: "Succeeded",
                private_ip_address: a.to_string(),
                private_ip_allocation_method: "Dynamic",
                subnet: OwnedSubResource { id: sn.id.clone() },
                primary: false,
                private_ip_address_version: "IPv6",
            },
        });
    }
    let vm = st.vm.map(|v| world.vms[v as usize].as_str());
    let nj = ArmNic {
        name: &n.name,
        id: &n.id,
        etag,
        ty: "Microsoft.Network/networkInterfaces",
        location: sub.location,
        properties: NicProps {
            provisioning_state: "Succeeded",
            resource_guid: guid(seed, &[stream::IDS, 3, u64::from(nic)]),
            ip_configurations: cfgs,
            dns_settings: DnsSettings {
                dns_servers: [],
                applied_dns_servers: [],
            },
            mac_address: st.mac.then(|| n.mac_arm()),
            enable_accelerated_networking: !n.vmss,
            vnet_encryption_supported: false,
            enable_ip_forwarding: false,
            disable_tcp_state_tracking: false,
            primary: vm.map(|_| true),
            virtual_machine: vm.map(|id| SubResource { id }),
            hosted_workloads: [],
            tap_configurations: [],
            nic_type: "Standard",
            auxiliary_mode: "None",
            auxiliary_sku: "None",
        },
    };
    serde_json::to_string(&nj).expect("NIC JSON")
}
