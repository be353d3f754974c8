//! ARM `VirtualNetwork` resources (GET and list responses, Resource Graph
//! `resources` rows, `az network vnet list` and `Get-AzVirtualNetwork |
//! ConvertTo-Json` output) mapped to [`VnetState`]: what routing needs of a
//! VNet.
//!
//! As for NICs ([`super::nic`]), the JSON is read through
//! `azure_mgmt_network`'s `VirtualNetwork` model, so field names and types
//! are the ones ARM publishes and extra fields are ignored; output with its
//! properties flattened (the Azure CLI) or in PascalCase (PowerShell) is
//! first rebuilt in the ARM shape. The model is then narrowed to the VNet's
//! id, its address space (`properties.addressSpace.addressPrefixes`), its
//! subnets' prefixes (`addressPrefix` and `addressPrefixes`) and its
//! peerings: the remote VNet, whether `peeringState` is `Connected` (the
//! only state that carries traffic), and the remote address space the
//! peering shows (`remoteAddressSpace`, else
//! `remoteVirtualNetworkAddressSpace`). Every error names the JSON field it
//! is about, in the ARM shape.

use azure_mgmt_network::package_2024_03::models::{
    AddressSpace, VirtualNetwork, virtual_network_peering_properties_format::PeeringState,
};
use ipnet::IpNet;
use serde_json::{Map, Value};

use super::nic::nic_array;
use super::{copy_fields, field, has_field, kind, reference};
use crate::model::ArmId;
use crate::model::{Peering, SubnetState, VnetState};

/// Why a JSON value is not a usable VNet: the JSON path of the offending
/// field, e.g. `properties.addressSpace.addressPrefixes[1]` (empty when the
/// problem is the value as a whole), and the reason.
pub use super::FieldError as VnetError;

/// Parses one VNet: an ARM `VirtualNetwork` (as a GET or a list returns it),
/// a Resource Graph `resources` row of type
/// `microsoft.network/virtualnetworks`, or a VNet as the Azure CLI or
/// PowerShell print it.
///
/// `id` is required and must name a virtual network, without a NUL
/// character; `properties` and a non-empty address space are required (a
/// listing without them is not one to take as "this VNet holds no
/// address"). A subnet without an id is named after the VNet and its
/// `name`. A peering needs its `properties` and its remote VNet's id. The
/// result is [`normalized`].
pub fn parse_vnet(v: &Value) -> Result<VnetState, VnetError> {
    let obj = v
        .as_object()
        .ok_or_else(|| VnetError::new("", format!("expected a VNet object, got {}", kind(v))))?;
    if let Some(arm) = unflattened(obj) {
        return parse_vnet(&arm);
    }
    // The model flattens `id`/`name`/`type` from a shared base, which loses
    // serde's path for them; check their types here so errors name the field.
    for key in ["id", "name", "type"] {
        match obj.get(key) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(VnetError::new(
                    key,
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        }
    }
    let vnet: VirtualNetwork =
        serde_path_to_error::deserialize(v).map_err(VnetError::from_serde)?;
    from_model(vnet)
}

/// Parses every VNet of a list response (an ARM page `{"value": [...]}`, a
/// Resource Graph `{"data": [...]}`, or a bare array). Each entry is the VNet
/// or its index in the array with the error; one bad VNet does not spoil
/// the others. `None` when the body holds no array of them.
pub fn parse_vnet_page(body: &Value) -> Option<Vec<Result<VnetState, (usize, VnetError)>>> {
    let items = nic_array(body)?;
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_vnet(v).map_err(|e| (i, e)))
            .collect(),
    )
}

/// Canonical form: prefixes truncated to their network, sorted and
/// deduplicated; subnets by id, peerings by remote VNet. Two listings of the
/// same VNet compare equal whatever order ARM returned them in.
pub fn normalized(mut s: VnetState) -> VnetState {
    fn canonical(nets: &mut Vec<IpNet>) {
        for n in nets.iter_mut() {
            *n = n.trunc();
        }
        nets.sort();
        nets.dedup();
    }
    canonical(&mut s.address_space);
    for sub in &mut s.subnets {
        canonical(&mut sub.prefixes);
    }
    s.subnets
        .sort_by(|a, b| (a.id.key(), &a.prefixes).cmp(&(b.id.key(), &b.prefixes)));
    s.subnets.dedup();
    for p in &mut s.peerings {
        canonical(&mut p.remote_address_space);
    }
    s.peerings.sort_by(|a, b| {
        (a.remote.key(), a.connected, &a.remote_address_space).cmp(&(
            b.remote.key(),
            b.connected,
            &b.remote_address_space,
        ))
    });
    s.peerings.dedup();
    s
}

/// `Microsoft.Network/virtualNetworks` in any casing.
pub fn is_vnet_type(t: &str) -> bool {
    t.trim()
        .eq_ignore_ascii_case("microsoft.network/virtualnetworks")
}

/// The id's parent segment is `virtualNetworks`: `.../virtualNetworks/<name>`.
fn is_vnet_id(id: &ArmId) -> bool {
    let mut rev = id.as_str().rsplit('/');
    rev.next();
    rev.next()
        .is_some_and(|s| s.eq_ignore_ascii_case("virtualNetworks"))
}

/// An ARM id at `field`: no NUL character (Postgres text cannot hold one),
/// and `/subscriptions/<id>/...`.
fn arm_id(field: &str, s: &str) -> Result<ArmId, VnetError> {
    if s.contains('\0') {
        return Err(VnetError::new(field, "contains a NUL character"));
    }
    ArmId::parse(s).map_err(|e| VnetError::new(field, format!("{s:?}: {e}")))
}

/// CIDR prefixes at `field` (`field[i]` names the bad one).
fn prefixes<'a>(
    field: &str,
    list: impl IntoIterator<Item = &'a String>,
) -> Result<Vec<IpNet>, VnetError> {
    list.into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.trim().parse::<IpNet>().map_err(|_| {
                VnetError::new(
                    format!("{field}[{i}]"),
                    format!("{p:?} is not a CIDR prefix"),
                )
            })
        })
        .collect()
}

/// The model narrowed to a [`VnetState`].
fn from_model(vnet: VirtualNetwork) -> Result<VnetState, VnetError> {
    if let Some(t) = vnet.resource.type_.as_deref()
        && !is_vnet_type(t)
    {
        return Err(VnetError::new(
            "type",
            format!("{t:?} is not a virtual network type"),
        ));
    }
    let id = match vnet.resource.id.as_deref() {
        None => return Err(VnetError::new("id", "missing")),
        Some(s) => arm_id("id", s)?,
    };
    if !is_vnet_id(&id) {
        return Err(VnetError::new(
            "id",
            format!("{id} does not name a virtual network"),
        ));
    }
    let Some(props) = vnet.properties else {
        return Err(VnetError::new(
            "properties",
            "missing: a VNet as ARM or Resource Graph gives it has `properties` \
             (or, as `az network vnet list` prints it, `addressSpace` at the top level)",
        ));
    };
    let space = props.address_space.unwrap_or_default().address_prefixes;
    let address_space = prefixes("properties.addressSpace.addressPrefixes", &space)?;
    if address_space.is_empty() {
        return Err(VnetError::new(
            "properties.addressSpace.addressPrefixes",
            "missing or empty: a VNet's listing names its address space, \
             and one without it would place every address outside the VNet",
        ));
    }

    let mut subnets = Vec::with_capacity(props.subnets.len());
    for (i, s) in props.subnets.into_iter().enumerate() {
        let at = format!("properties.subnets[{i}]");
        let sid = match (
            s.sub_resource.id.as_deref(),
            s.name.as_deref().map(str::trim),
        ) {
            (Some(sid), _) if !sid.trim().is_empty() => arm_id(&format!("{at}.id"), sid)?,
            (_, Some(name)) if !name.is_empty() => {
                arm_id(&format!("{at}.name"), &format!("{id}/subnets/{name}"))?
            }
            _ => return Err(VnetError::new(format!("{at}.id"), "missing (and no name)")),
        };
        let mut nets = Vec::new();
        if let Some(p) = s.properties {
            if let Some(one) = p.address_prefix.as_deref().filter(|p| !p.trim().is_empty()) {
                nets.push(one.trim().parse().map_err(|_| {
                    VnetError::new(
                        format!("{at}.properties.addressPrefix"),
                        format!("{one:?} is not a CIDR prefix"),
                    )
                })?);
            }
            nets.extend(prefixes(
                &format!("{at}.properties.addressPrefixes"),
                &p.address_prefixes,
            )?);
        }
        subnets.push(SubnetState {
            id: sid,
            prefixes: nets,
        });
    }

    let mut peerings = Vec::with_capacity(props.virtual_network_peerings.len());
    for (i, p) in props.virtual_network_peerings.into_iter().enumerate() {
        let at = format!("properties.virtualNetworkPeerings[{i}].properties");
        let Some(pp) = p.properties else {
            return Err(VnetError::new(
                at,
                "missing: a peering's remote VNet and state are in its properties",
            ));
        };
        let remote = match pp.remote_virtual_network.and_then(|r| r.id) {
            Some(r) if !r.trim().is_empty() => {
                arm_id(&format!("{at}.remoteVirtualNetwork.id"), &r)?
            }
            _ => {
                return Err(VnetError::new(
                    format!("{at}.remoteVirtualNetwork.id"),
                    "missing",
                ));
            }
        };
        let connected = match &pp.peering_state {
            Some(PeeringState::Connected) => true,
            Some(PeeringState::UnknownValue(s)) => s.trim().eq_ignore_ascii_case("connected"),
            _ => false,
        };
        let of = |a: Option<AddressSpace>| a.map(|a| a.address_prefixes).unwrap_or_default();
        let (remote_field, remote_space) = match of(pp.remote_address_space) {
            list if !list.is_empty() => ("remoteAddressSpace", list),
            _ => (
                "remoteVirtualNetworkAddressSpace",
                of(pp.remote_virtual_network_address_space),
            ),
        };
        let remote_address_space = prefixes(
            &format!("{at}.{remote_field}.addressPrefixes"),
            &remote_space,
        )?;
        peerings.push(Peering {
            remote,
            connected,
            remote_address_space,
        });
    }

    Ok(normalized(VnetState {
        id,
        address_space,
        subnets,
        peerings,
    }))
}

/// A VNet as `az network vnet list` prints it (its `properties` flattened
/// into the object, and each subnet's and peering's into theirs), or as
/// `Get-AzVirtualNetwork | ConvertTo-Json -Depth 8` does (the same, in
/// PascalCase; a subnet's `AddressPrefix` is a list, a peering's remote
/// address space `PeeredRemoteAddressSpace`), rebuilt in the ARM shape.
/// `None` when `obj` is not flattened: it has `properties`, or none of a
/// VNet's property fields at its top level.
fn unflattened(obj: &Map<String, Value>) -> Option<Value> {
    const VNET_FIELDS: [&str; 3] = ["addressSpace", "subnets", "virtualNetworkPeerings"];
    if has_field(obj, "properties") || !VNET_FIELDS.iter().any(|f| has_field(obj, f)) {
        return None;
    }
    let mut props = Map::new();
    copy_fields(obj, &mut props, &["provisioningState"]);
    if let Some(a) = field(obj, "addressSpace") {
        props.insert("addressSpace".into(), address_space(a));
    }
    if let Some(s) = field(obj, "subnets") {
        props.insert("subnets".into(), each_flattened(s, subnet));
    }
    if let Some(p) = field(obj, "virtualNetworkPeerings") {
        props.insert("virtualNetworkPeerings".into(), each_flattened(p, peering));
    }
    let mut arm = Map::new();
    copy_fields(obj, &mut arm, &["id", "name", "type"]);
    arm.insert("properties".into(), Value::Object(props));
    Some(Value::Object(arm))
}

/// `{"addressPrefixes": [...]}`, however its key is spelled; anything else
/// as it is, for the model to reject.
fn address_space(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut a = Map::new();
            copy_fields(&o, &mut a, &["addressPrefixes"]);
            Value::Object(a)
        }
        other => other,
    }
}

/// Each flattened object of an array rebuilt by `rebuild`; the rest (ARM
/// shaped ones, or an array that is not one) as they are.
fn each_flattened(v: Value, rebuild: fn(Map<String, Value>) -> Value) -> Value {
    match v {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    Value::Object(o) if !has_field(&o, "properties") => rebuild(o),
                    other => other,
                })
                .collect(),
        ),
        other => other,
    }
}

fn subnet(o: Map<String, Value>) -> Value {
    let mut s = Map::new();
    copy_fields(&o, &mut s, &["id", "name"]);
    let mut p = Map::new();
    copy_fields(&o, &mut p, &["addressPrefix", "addressPrefixes"]);
    // PowerShell prints `AddressPrefix` as a list: ARM's `addressPrefixes`.
    if let Some(Value::Array(list)) = p.get("addressPrefix").cloned() {
        p.remove("addressPrefix");
        match p.get_mut("addressPrefixes") {
            Some(Value::Array(more)) => more.extend(list),
            // Not a list: left for the model to reject, naming the field.
            Some(_) => {}
            None => {
                p.insert("addressPrefixes".into(), Value::Array(list));
            }
        }
    }
    s.insert("properties".into(), Value::Object(p));
    Value::Object(s)
}

fn peering(o: Map<String, Value>) -> Value {
    let mut r = Map::new();
    copy_fields(&o, &mut r, &["id", "name"]);
    let mut p = Map::new();
    copy_fields(
        &o,
        &mut p,
        &["peeringState", "peeringSyncLevel", "provisioningState"],
    );
    if let Some(remote) = field(&o, "remoteVirtualNetwork").and_then(reference) {
        p.insert("remoteVirtualNetwork".into(), remote);
    }
    let spaces: [(&str, &[&str]); 2] = [
        (
            "remoteAddressSpace",
            &["remoteAddressSpace", "peeredRemoteAddressSpace"],
        ),
        (
            "remoteVirtualNetworkAddressSpace",
            &["remoteVirtualNetworkAddressSpace"],
        ),
    ];
    for (arm, names) in spaces {
        if let Some(v) = names.iter().find_map(|n| field(&o, n)) {
            p.insert(arm.into(), address_space(v));
        }
    }
    r.insert("properties".into(), Value::Object(p));
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SUB: &str = "/subscriptions/0f0e0d0c-1111-2222-3333-444455556666";

    fn vnet_id(rg: &str, name: &str) -> String {
        format!("{SUB}/resourceGroups/{rg}/providers/Microsoft.Network/virtualNetworks/{name}")
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// A hub VNet as an ARM list returns it: two address prefixes, a subnet
    /// with `addressPrefix`, one with `addressPrefixes`, and three peerings
    /// (connected, initiated, disconnected), with the fields ARM adds.
    fn hub() -> Value {
        let id = vnet_id("rg-net", "hub");
        json!({
            "name": "hub",
            "id": id,
            "etag": "W/\"6d1a4d0e-0000-0000-0000-000000000001\"",
            "type": "Microsoft.Network/virtualNetworks",
            "location": "westeurope",
            "tags": {"env": "prod"},
            "properties": {
                "provisioningState": "Succeeded",
                "resourceGuid": "5b2c0a77-0000-0000-0000-000000000002",
                "addressSpace": {"addressPrefixes": ["10.10.0.0/16", "fd10:aa::/48"]},
                "dhcpOptions": {"dnsServers": []},
                "subnets": [
                    {
                        "name": "gw",
                        "id": format!("{id}/subnets/gw"),
                        "etag": "W/\"6d1a4d0e-0000-0000-0000-000000000001\"",
                        "type": "Microsoft.Network/virtualNetworks/subnets",
                        "properties": {
                            "provisioningState": "Succeeded",
                            "addressPrefixes": ["10.10.2.0/24", "fd10:aa:0:2::/64"],
                            "ipConfigurations": [{"id": format!("{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/networkInterfaces/gw-nic/ipConfigurations/ipconfig1")}],
                            "privateEndpointNetworkPolicies": "Disabled",
                            "privateLinkServiceNetworkPolicies": "Enabled"
                        }
                    },
                    {
                        "name": "apps",
                        "id": format!("{id}/subnets/apps"),
                        "properties": {
                            "addressPrefix": "10.10.1.0/24",
                            "networkSecurityGroup": {"id": format!("{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/networkSecurityGroups/apps-nsg")},
                            "delegations": [],
                            "provisioningState": "Succeeded"
                        }
                    }
                ],
                "virtualNetworkPeerings": [
                    {
                        "name": "hub-to-spoke",
                        "id": format!("{id}/virtualNetworkPeerings/hub-to-spoke"),
                        "properties": {
                            "provisioningState": "Succeeded",
                            "peeringState": "Connected",
                            "peeringSyncLevel": "FullyInSync",
                            "remoteVirtualNetwork": {"id": vnet_id("rg-spoke", "spoke")},
                            "allowVirtualNetworkAccess": true,
                            "allowForwardedTraffic": false,
                            "allowGatewayTransit": true,
                            "useRemoteGateways": false,
                            "remoteAddressSpace": {"addressPrefixes": ["10.20.0.0/16"]},
                            "remoteVirtualNetworkAddressSpace": {"addressPrefixes": ["10.20.0.0/16", "10.21.0.0/16"]}
                        }
                    },
                    {
                        "name": "hub-to-new",
                        "id": format!("{id}/virtualNetworkPeerings/hub-to-new"),
                        "properties": {
                            "peeringState": "Initiated",
                            "remoteVirtualNetwork": {"id": vnet_id("rg-new", "new")},
                            "remoteVirtualNetworkAddressSpace": {"addressPrefixes": ["10.30.0.0/16"]}
                        }
                    },
                    {
                        "name": "hub-to-old",
                        "id": format!("{id}/virtualNetworkPeerings/hub-to-old"),
                        "properties": {
                            "peeringState": "Disconnected",
                            "remoteVirtualNetwork": {"id": vnet_id("rg-old", "old")},
                            "remoteAddressSpace": {"addressPrefixes": ["10.40.0.0/16"]}
                        }
                    }
                ]
            }
        })
    }

    #[test]
    fn an_arm_vnet_reads_as_its_address_space_subnets_and_peerings() {
        let v = parse_vnet(&hub()).unwrap();
        assert_eq!(v.id.as_str(), vnet_id("rg-net", "hub"));
        assert_eq!(
            v.address_space,
            vec![net("10.10.0.0/16"), net("fd10:aa::/48")]
        );
        // Subnets by id: apps before gw; both prefix fields read.
        let subnets: Vec<(&str, Vec<IpNet>)> = v
            .subnets
            .iter()
            .map(|s| (s.id.name(), s.prefixes.clone()))
            .collect();
        assert_eq!(
            subnets,
            vec![
                ("apps", vec![net("10.10.1.0/24")]),
                ("gw", vec![net("10.10.2.0/24"), net("fd10:aa:0:2::/64")]),
            ]
        );
        // Only a Connected peering carries traffic; the peering's own
        // remoteAddressSpace wins over the remote VNet's current one.
        let peerings: Vec<(&str, bool, Vec<IpNet>)> = v
            .peerings
            .iter()
            .map(|p| (p.remote.name(), p.connected, p.remote_address_space.clone()))
            .collect();
        assert_eq!(
            peerings,
            vec![
                ("new", false, vec![net("10.30.0.0/16")]),
                ("old", false, vec![net("10.40.0.0/16")]),
                ("spoke", true, vec![net("10.20.0.0/16")]),
            ]
        );
        assert!(v.holds("10.10.200.1".parse().unwrap()));
        assert!(!v.holds("10.20.0.1".parse().unwrap()));
    }

    #[test]
    fn the_same_vnet_listed_in_another_order_or_casing_is_equal() {
        let a = parse_vnet(&hub()).unwrap();
        let mut b = hub();
        b["properties"]["subnets"].as_array_mut().unwrap().reverse();
        b["properties"]["virtualNetworkPeerings"]
            .as_array_mut()
            .unwrap()
            .reverse();
        b["properties"]["addressSpace"]["addressPrefixes"] =
            json!(["fd10:aa::/48", "10.10.0.0/16", "10.10.0.0/16"]);
        b["id"] = json!(vnet_id("rg-net", "hub").to_uppercase());
        assert_eq!(parse_vnet(&b).unwrap(), a);
        // A prefix with host bits set is its network.
        let mut c = hub();
        c["properties"]["addressSpace"]["addressPrefixes"] =
            json!(["10.10.7.7/16", "fd10:aa::1/48"]);
        assert_eq!(parse_vnet(&c).unwrap().address_space, a.address_space);
    }

    #[test]
    fn a_resource_graph_row_and_its_response_read_as_the_arm_vnet() {
        let mut row = hub();
        let o = row.as_object_mut().unwrap();
        o.insert("type".into(), json!("microsoft.network/virtualnetworks"));
        for (k, v) in [
            ("tenantId", json!("72f988bf-0000-0000-0000-000000000000")),
            ("kind", json!("")),
            ("resourceGroup", json!("rg-net")),
            ("subscriptionId", json!(&SUB[15..])),
            ("managedBy", json!("")),
            ("sku", Value::Null),
            ("plan", Value::Null),
            ("identity", Value::Null),
            ("zones", Value::Null),
            ("extendedLocation", Value::Null),
        ] {
            o.insert(k.into(), v);
        }
        let want = parse_vnet(&hub()).unwrap();
        assert_eq!(parse_vnet(&row).unwrap(), want);
        let page =
            parse_vnet_page(&json!({"totalRecords": 2, "count": 2, "data": [row, {"id": 7}]}))
                .unwrap();
        assert_eq!(page[0].as_ref().unwrap(), &want);
        let (i, e) = page[1].as_ref().unwrap_err();
        assert_eq!((*i, e.field.as_str()), (1, "id"));
        assert!(parse_vnet_page(&json!({"nextLink": null})).is_none());
    }

    /// [`hub`] as `az network vnet list` prints it: properties flattened
    /// into the VNet, each subnet and each peering.
    fn cli() -> Value {
        let id = vnet_id("rg-net", "hub");
        json!({
            "addressSpace": {"addressPrefixes": ["10.10.0.0/16", "fd10:aa::/48"]},
            "dhcpOptions": {"dnsServers": []},
            "enableDdosProtection": false,
            "etag": "W/\"6d1a4d0e-0000-0000-0000-000000000001\"",
            "id": id,
            "location": "westeurope",
            "name": "hub",
            "provisioningState": "Succeeded",
            "resourceGroup": "rg-net",
            "resourceGuid": "5b2c0a77-0000-0000-0000-000000000002",
            "subnets": [
                {
                    "addressPrefixes": ["10.10.2.0/24", "fd10:aa:0:2::/64"],
                    "id": format!("{id}/subnets/gw"),
                    "name": "gw",
                    "privateEndpointNetworkPolicies": "Disabled",
                    "provisioningState": "Succeeded",
                    "resourceGroup": "rg-net",
                    "type": "Microsoft.Network/virtualNetworks/subnets"
                },
                {
                    "addressPrefix": "10.10.1.0/24",
                    "id": format!("{id}/subnets/apps"),
                    "name": "apps",
                    "networkSecurityGroup": {"id": format!("{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/networkSecurityGroups/apps-nsg"), "resourceGroup": "rg-net"},
                    "resourceGroup": "rg-net"
                }
            ],
            "type": "Microsoft.Network/virtualNetworks",
            "virtualNetworkPeerings": [
                {
                    "allowForwardedTraffic": false,
                    "id": format!("{id}/virtualNetworkPeerings/hub-to-spoke"),
                    "name": "hub-to-spoke",
                    "peeringState": "Connected",
                    "peeringSyncLevel": "FullyInSync",
                    "remoteAddressSpace": {"addressPrefixes": ["10.20.0.0/16"]},
                    "remoteVirtualNetwork": {"id": vnet_id("rg-spoke", "spoke"), "resourceGroup": "rg-spoke"},
                    "remoteVirtualNetworkAddressSpace": {"addressPrefixes": ["10.20.0.0/16", "10.21.0.0/16"]},
                    "resourceGroup": "rg-net",
                    "type": "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
                },
                {
                    "name": "hub-to-new",
                    "peeringState": "Initiated",
                    "remoteVirtualNetwork": {"id": vnet_id("rg-new", "new")},
                    "remoteVirtualNetworkAddressSpace": {"addressPrefixes": ["10.30.0.0/16"]}
                },
                {
                    "name": "hub-to-old",
                    "peeringState": "Disconnected",
                    "remoteVirtualNetwork": {"id": vnet_id("rg-old", "old")},
                    "remoteAddressSpace": {"addressPrefixes": ["10.40.0.0/16"]}
                }
            ]
        })
    }

    /// [`hub`] as `Get-AzVirtualNetwork | ConvertTo-Json -Depth 8` prints
    /// it: PascalCase, a subnet's `AddressPrefix` a list, the peered
    /// address space `PeeredRemoteAddressSpace`.
    fn powershell() -> Value {
        let id = vnet_id("rg-net", "hub");
        json!({
            "AddressSpace": {"AddressPrefixes": ["10.10.0.0/16", "fd10:aa::/48"]},
            "DhcpOptions": {"DnsServers": []},
            "Subnets": [
                {"AddressPrefix": ["10.10.2.0/24", "fd10:aa:0:2::/64"], "IpConfigurations": [], "ProvisioningState": "Succeeded", "Name": "gw", "Etag": "W/\"x\"", "Id": format!("{id}/subnets/gw")},
                {"AddressPrefix": ["10.10.1.0/24"], "Name": "apps", "Id": format!("{id}/subnets/apps")}
            ],
            "VirtualNetworkPeerings": [
                {"ResourceGroupName": "rg-net", "VirtualNetworkName": "hub", "PeeringState": "Connected", "PeeringSyncLevel": "FullyInSync",
                 "AllowVirtualNetworkAccess": true, "RemoteVirtualNetwork": {"Id": vnet_id("rg-spoke", "spoke")}, "RemoteGateways": [],
                 "PeeredRemoteAddressSpace": {"AddressPrefixes": ["10.20.0.0/16"]},
                 "RemoteVirtualNetworkAddressSpace": {"AddressPrefixes": ["10.20.0.0/16", "10.21.0.0/16"]},
                 "ProvisioningState": "Succeeded", "Name": "hub-to-spoke", "Id": format!("{id}/virtualNetworkPeerings/hub-to-spoke")},
                {"PeeringState": "Initiated", "RemoteVirtualNetwork": {"Id": vnet_id("rg-new", "new")},
                 "PeeredRemoteAddressSpace": {"AddressPrefixes": []},
                 "RemoteVirtualNetworkAddressSpace": {"AddressPrefixes": ["10.30.0.0/16"]}, "Name": "hub-to-new"},
                {"PeeringState": "Disconnected", "RemoteVirtualNetwork": {"Id": vnet_id("rg-old", "old")},
                 "PeeredRemoteAddressSpace": {"AddressPrefixes": ["10.40.0.0/16"]}, "Name": "hub-to-old"}
            ],
            "ProvisioningState": "Succeeded",
            "EnableDdosProtection": false,
            "ResourceGroupName": "rg-net",
            "Location": "westeurope",
            "ResourceGuid": "5b2c0a77-0000-0000-0000-000000000002",
            "Type": "Microsoft.Network/virtualNetworks",
            "Tag": null,
            "Name": "hub",
            "Etag": "W/\"x\"",
            "Id": id
        })
    }

    #[test]
    fn az_cli_and_powershell_listings_read_as_the_arm_one() {
        let want = parse_vnet(&hub()).unwrap();
        assert_eq!(parse_vnet(&cli()).unwrap(), want);
        assert_eq!(parse_vnet(&powershell()).unwrap(), want);
        // Several VNets from PowerShell are a bare array.
        let page = parse_vnet_page(&json!([powershell(), cli()])).unwrap();
        assert!(page.iter().all(|r| r.as_ref() == Ok(&want)));
        // Errors name the field of the ARM shape.
        let mut bad = cli();
        bad["subnets"][1]["addressPrefix"] = json!("10.10.1.0/33");
        assert_eq!(
            parse_vnet(&bad).unwrap_err().field,
            "properties.subnets[1].properties.addressPrefix"
        );
        let mut bad = powershell();
        bad["VirtualNetworkPeerings"][0]["PeeredRemoteAddressSpace"]["AddressPrefixes"] =
            json!(["10.20.0.0"]);
        assert_eq!(
            parse_vnet(&bad).unwrap_err().field,
            "properties.virtualNetworkPeerings[0].properties.remoteAddressSpace.addressPrefixes[0]"
        );
        // ConvertTo-Json without enough -Depth prints nested objects as
        // strings: not taken for an empty address space.
        let mut shallow = powershell();
        shallow["AddressSpace"] = json!("Microsoft.Azure.Commands.Network.Models.PSAddressSpace");
        let e = parse_vnet(&shallow).unwrap_err();
        assert_eq!(e.field, "properties.addressSpace", "{e}");
    }

    #[test]
    fn a_subnet_without_an_id_is_named_after_its_vnet() {
        let mut v = hub();
        v["properties"]["subnets"][1]
            .as_object_mut()
            .unwrap()
            .remove("id");
        let s = parse_vnet(&v).unwrap();
        assert_eq!(
            s.subnets[0].id.as_str(),
            format!("{}/subnets/apps", vnet_id("rg-net", "hub"))
        );
        assert_eq!(s, parse_vnet(&hub()).unwrap());
    }

    /// A change to a good VNet that must make it fail.
    type Mutation = Box<dyn Fn(&mut Value)>;

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("id");
                }),
                "id",
                "missing",
            ),
            (Box::new(|v| v["id"] = json!(42)), "id", "expected a string"),
            (
                Box::new(|v| v["id"] = json!(format!("{}\u{0}x", vnet_id("rg-net", "hub")))),
                "id",
                "NUL",
            ),
            (
                Box::new(|v| v["id"] = json!("virtualNetworks/hub")),
                "id",
                "not an Azure resource id",
            ),
            (
                Box::new(|v| {
                    v["id"] = json!(format!(
                        "{SUB}/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/nic"
                    ))
                }),
                "id",
                "does not name a virtual network",
            ),
            (
                Box::new(|v| v["type"] = json!("Microsoft.Network/networkInterfaces")),
                "type",
                "not a virtual network type",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("properties");
                }),
                "properties",
                "missing",
            ),
            (
                Box::new(|v| {
                    v["properties"]["addressSpace"]["addressPrefixes"][1] = json!("fd10::/129")
                }),
                "properties.addressSpace.addressPrefixes[1]",
                "not a CIDR prefix",
            ),
            (
                Box::new(|v| v["properties"]["addressSpace"]["addressPrefixes"] = json!([])),
                "properties.addressSpace.addressPrefixes",
                "empty",
            ),
            (
                Box::new(|v| {
                    v["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove("addressSpace");
                }),
                "properties.addressSpace.addressPrefixes",
                "missing",
            ),
            (
                Box::new(|v| {
                    v["properties"]["addressSpace"]["addressPrefixes"] = json!("10.0.0.0/8")
                }),
                "properties.addressSpace.addressPrefixes",
                "expected a sequence",
            ),
            (
                Box::new(|v| {
                    v["properties"]["subnets"][0]["properties"]["addressPrefixes"][0] =
                        json!("10.10.2.0")
                }),
                "properties.subnets[0].properties.addressPrefixes[0]",
                "not a CIDR prefix",
            ),
            (
                Box::new(|v| {
                    v["properties"]["subnets"][1]["properties"]["addressPrefix"] = json!("ten")
                }),
                "properties.subnets[1].properties.addressPrefix",
                "not a CIDR prefix",
            ),
            (
                Box::new(|v| v["properties"]["subnets"][1]["id"] = json!("subnets/apps")),
                "properties.subnets[1].id",
                "not an Azure resource id",
            ),
            (
                Box::new(|v| {
                    let s = v["properties"]["subnets"][1].as_object_mut().unwrap();
                    s.remove("id");
                    s.remove("name");
                }),
                "properties.subnets[1].id",
                "missing",
            ),
            (
                Box::new(|v| {
                    v["properties"]["virtualNetworkPeerings"][2]
                        .as_object_mut()
                        .unwrap()
                        .remove("properties");
                }),
                "properties.virtualNetworkPeerings[2].properties",
                "missing",
            ),
            (
                Box::new(|v| {
                    v["properties"]["virtualNetworkPeerings"][0]["properties"]
                        .as_object_mut()
                        .unwrap()
                        .remove("remoteVirtualNetwork");
                }),
                "properties.virtualNetworkPeerings[0].properties.remoteVirtualNetwork.id",
                "missing",
            ),
            (
                Box::new(|v| {
                    v["properties"]["virtualNetworkPeerings"][0]["properties"]["remoteVirtualNetwork"]
                        ["id"] = json!("/subscriptions/s/\u{0}")
                }),
                "properties.virtualNetworkPeerings[0].properties.remoteVirtualNetwork.id",
                "NUL",
            ),
            (
                Box::new(|v| {
                    v["properties"]["virtualNetworkPeerings"][1]["properties"]["remoteVirtualNetworkAddressSpace"]
                        ["addressPrefixes"] = json!(["10.30.0.0/99"])
                }),
                "properties.virtualNetworkPeerings[1].properties.remoteVirtualNetworkAddressSpace.addressPrefixes[0]",
                "not a CIDR prefix",
            ),
            // Type errors caught by the ARM model carry serde's path.
            (
                Box::new(|v| {
                    v["properties"]["virtualNetworkPeerings"][0]["properties"]["allowGatewayTransit"] =
                        json!("yes")
                }),
                "properties.virtualNetworkPeerings[0].properties.allowGatewayTransit",
                "expected a boolean",
            ),
            (
                Box::new(|v| v["properties"]["subnets"] = json!({})),
                "properties.subnets",
                "expected a sequence",
            ),
        ];
        for (mutate, field, reason) in cases {
            let mut v = hub();
            mutate(&mut v);
            let err = parse_vnet(&v).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.reason.contains(reason), "{err}");
            assert!(err.to_string().starts_with(field), "{err}");
        }
        let err = parse_vnet(&json!("hub")).unwrap_err();
        assert_eq!(err.to_string(), "expected a VNet object, got a string");
    }

    #[test]
    fn a_peering_is_connected_only_when_its_state_says_so() {
        for (state, connected) in [
            (json!("Connected"), true),
            (json!("connected"), true),
            (json!("Initiated"), false),
            (json!("Disconnected"), false),
            (json!("Syncing"), false),
            (Value::Null, false),
        ] {
            let mut v = hub();
            v["properties"]["virtualNetworkPeerings"][0]["properties"]["peeringState"] =
                state.clone();
            let s = parse_vnet(&v).unwrap();
            let p = s
                .peerings
                .iter()
                .find(|p| p.remote.name() == "spoke")
                .unwrap();
            assert_eq!(p.connected, connected, "{state}");
        }
    }
}
