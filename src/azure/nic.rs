//! ARM `NetworkInterface` resources (GET and list responses, Resource Graph
//! `resources` rows, Activity Log response bodies) mapped to
//! [`NicState`].
//!
//! The JSON is first deserialized into `azure_mgmt_network`'s
//! `NetworkInterface` model, so the field names and types are the ones ARM
//! publishes; extra fields (Resource Graph's `subscriptionId`,
//! `resourceGroup`, `tenantId`, ...) are ignored. The model is then narrowed to
//! what attribution needs: id, name, MAC, attached VM, and each ip
//! configuration's private IP (v4 or v6, address or CIDR prefix) with its
//! subnet. Every error names the JSON field it is about.

use std::net::IpAddr;

use azure_mgmt_network::package_2024_03::models::NetworkInterface;
use ipnet::IpNet;
use serde_json::{Map, Value};

use super::{copy_fields, field, has_field, kind, reference};
use crate::model::{ArmId, IpAssignment, Mac, NicState};

/// Why a JSON value is not a usable NIC: the JSON path of the offending
/// field, e.g. `properties.ipConfigurations[1].properties.privateIPAddress`
/// (empty when the problem is the value as a whole), and the reason.
pub use super::FieldError as NicError;

/// Parses one NIC: an ARM `NetworkInterface` or a Resource Graph `resources`
/// row of type `microsoft.network/networkinterfaces`.
///
/// `id` is required and must name a network interface. `name` falls back to
/// the id's last segment. `properties.macAddress` and
/// `properties.virtualMachine.id` are optional (an unattached NIC has
/// neither). Ip configurations without a `privateIPAddress` are skipped. The
/// result is [`NicState::normalized`].
pub fn parse_nic(v: &Value) -> Result<NicState, NicError> {
    let obj = v
        .as_object()
        .ok_or_else(|| NicError::new("", format!("expected a NIC object, got {}", kind(v))))?;
    if let Some(arm) = unflattened(obj) {
        return parse_nic(&arm);
    }
    // The model flattens `id`/`name`/`type` from a shared base, which loses
    // serde's path for them; check their types here so errors name the field.
    for key in ["id", "name", "type"] {
        match obj.get(key) {
            None | Some(Value::Null) | Some(Value::String(_)) => {}
            Some(other) => {
                return Err(NicError::new(
                    key,
                    format!("expected a string, got {}", kind(other)),
                ));
            }
        }
    }

    let nic: NetworkInterface =
        serde_path_to_error::deserialize(v).map_err(NicError::from_serde)?;
    from_model(nic)
}

/// [`parse_nic`] from JSON text. The model is read from the text directly
/// (no intermediate [`Value`] tree): a snapshot page holds a thousand NICs.
/// Text the model does not accept is parsed again through [`parse_nic`] for
/// an error that names the field.
pub fn parse_nic_str(text: &str) -> Result<NicState, NicError> {
    match serde_json::from_str::<NetworkInterface>(text) {
        Ok(nic) if nic.properties.is_some() => from_model(nic),
        // Without `properties`: flattened, or not a NIC ARM would list.
        _ => match serde_json::from_str::<Value>(text) {
            Ok(v) => parse_nic(&v),
            Err(e) => Err(NicError::new("", format!("not valid JSON: {e}"))),
        },
    }
}

/// The model narrowed to a [`NicState`].
fn from_model(nic: NetworkInterface) -> Result<NicState, NicError> {
    if let Some(t) = nic.resource.type_.as_deref()
        && !is_nic_type(t)
    {
        return Err(NicError::new(
            "type",
            format!("{t:?} is not a network interface type"),
        ));
    }
    let id = match nic.resource.id.as_deref() {
        None => return Err(NicError::new("id", "missing")),
        Some(s) => ArmId::parse(s).map_err(|e| NicError::new("id", e.to_string()))?,
    };
    if !is_nic_id(&id) {
        return Err(NicError::new(
            "id",
            format!("{id} does not name a network interface"),
        ));
    }
    let name = match nic.resource.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => no_nul("name", n)?.to_string(),
        _ => id.name().to_string(),
    };

    // Every NIC ARM lists or returns has properties (provisioningState at
    // least): one without is not a listing to take as "this NIC held no IP".
    let Some(props) = nic.properties else {
        return Err(NicError::new(
            "properties",
            "missing: a NIC as ARM or Resource Graph gives it has `properties` \
             (or, as `az network nic list` prints it, `ipConfigurations` at the top level)",
        ));
    };
    let mac = match props.mac_address.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(m) => Some(
            Mac::parse(m)
                .map_err(|e| NicError::new("properties.macAddress", format!("{m:?}: {e}")))?,
        ),
    };
    let vm =
        match props.virtual_machine.and_then(|vm| vm.id) {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(ArmId::parse(&s).map_err(|e| {
                NicError::new("properties.virtualMachine.id", format!("{s:?}: {e}"))
            })?),
        };

    let mut ips = Vec::with_capacity(props.ip_configurations.len());
    for (i, cfg) in props.ip_configurations.into_iter().enumerate() {
        let at = format!("properties.ipConfigurations[{i}]");
        let Some(p) = cfg.properties else { continue };
        let Some(addr) = p.private_ip_address.as_deref().map(str::trim) else {
            continue;
        };
        if addr.is_empty() {
            continue;
        }
        let ip = parse_private_ip(addr, p.private_ip_address_prefix_length)
            .map_err(|r| NicError::new(format!("{at}.properties.privateIPAddress"), r))?;
        let config = match cfg.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => no_nul(&format!("{at}.name"), n)?.to_string(),
            _ => match cfg
                .sub_resource
                .id
                .as_deref()
                .and_then(|s| s.rsplit('/').next())
            {
                Some(n) if !n.trim().is_empty() => {
                    no_nul(&format!("{at}.id"), n.trim())?.to_string()
                }
                _ => return Err(NicError::new(format!("{at}.name"), "missing")),
            },
        };
        let subnet = match p.subnet.and_then(|s| s.sub_resource.id) {
            None => None,
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(ArmId::parse(&s).map_err(|e| {
                NicError::new(format!("{at}.properties.subnet.id"), format!("{s:?}: {e}"))
            })?),
        };
        ips.push(IpAssignment {
            ip,
            config,
            primary: p.primary.unwrap_or(false),
            subnet,
        });
    }

    Ok(NicState {
        id,
        name,
        mac,
        vm,
        ips,
    }
    .normalized())
}

/// `s`, unless it holds a NUL character (which Postgres text cannot hold,
/// and no Azure name has): then an error at `field`.
fn no_nul<'a>(field: &str, s: &'a str) -> Result<&'a str, NicError> {
    if s.contains('\0') {
        return Err(NicError::new(field, "contains a NUL character"));
    }
    Ok(s)
}

/// A private IP as ARM gives it: a plain address (a host prefix, /32 or /128)
/// or a CIDR block `a.b.c.d/len`, kept as given. When the address is plain but
/// `privateIPAddressPrefixLength` is set, the block is the address with that
/// length.
fn parse_private_ip(addr: &str, prefix_len: Option<i32>) -> Result<IpNet, String> {
    if addr.contains('/') {
        return addr
            .parse::<IpNet>()
            .map_err(|_| format!("{addr:?} is not an IP address or CIDR prefix"));
    }
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address or CIDR prefix"))?;
    match prefix_len {
        None => Ok(IpNet::from(ip)),
        Some(len) => u8::try_from(len)
            .ok()
            .and_then(|len| IpNet::new(ip, len).ok())
            .ok_or_else(|| format!("prefix length {len} is out of range for {addr}")),
    }
}

/// `Microsoft.Network/networkInterfaces` in any casing, or a nested NIC type
/// such as VMSS instances' `.../virtualMachines/networkInterfaces`.
fn is_nic_type(t: &str) -> bool {
    let t = t.trim().to_ascii_lowercase();
    t == "microsoft.network/networkinterfaces" || t.ends_with("/networkinterfaces")
}

/// The id's parent segment is `networkInterfaces`: `.../networkInterfaces/<name>`.
fn is_nic_id(id: &ArmId) -> bool {
    let mut rev = id.as_str().rsplit('/');
    rev.next();
    rev.next()
        .is_some_and(|s| s.eq_ignore_ascii_case("networkInterfaces"))
}

/// A NIC as `az network nic list` prints it (its `properties` flattened into
/// the object, and each ip configuration's into the configuration), or as
/// `Get-AzNetworkInterface | ConvertTo-Json` does (the same, in PascalCase),
/// rebuilt in the ARM shape. `None` when `obj` is not flattened: it has
/// `properties`, or none of a NIC's property fields at its top level.
fn unflattened(obj: &Map<String, Value>) -> Option<Value> {
    const NIC_FIELDS: [&str; 3] = ["ipConfigurations", "macAddress", "virtualMachine"];
    if has_field(obj, "properties") || !NIC_FIELDS.iter().any(|f| has_field(obj, f)) {
        return None;
    }
    let mut props = Map::new();
    copy_fields(obj, &mut props, &["macAddress", "provisioningState"]);
    if let Some(vm) = field(obj, "virtualMachine").and_then(reference) {
        props.insert("virtualMachine".into(), vm);
    }
    if let Some(configs) = field(obj, "ipConfigurations") {
        let configs = match configs {
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|c| match c {
                        Value::Object(c) if !has_field(&c, "properties") => {
                            let mut cfg = Map::new();
                            copy_fields(&c, &mut cfg, &["name", "id"]);
                            let mut p = Map::new();
                            copy_fields(
                                &c,
                                &mut p,
                                &[
                                    "privateIPAddress",
                                    "privateIPAddressPrefixLength",
                                    "privateIPAddressVersion",
                                    "primary",
                                ],
                            );
                            if let Some(subnet) = field(&c, "subnet").and_then(reference) {
                                p.insert("subnet".into(), subnet);
                            }
                            cfg.insert("properties".into(), Value::Object(p));
                            Value::Object(cfg)
                        }
                        other => other,
                    })
                    .collect(),
            ),
            // Not an array: left for the model to reject, naming the field.
            other => other,
        };
        props.insert("ipConfigurations".into(), configs);
    }
    let mut arm = Map::new();
    copy_fields(obj, &mut arm, &["id", "name", "type"]);
    arm.insert("properties".into(), Value::Object(props));
    Some(Value::Object(arm))
}

/// The NIC array in a list response: an ARM page `{"value": [...],
/// "nextLink": ...}`, a Resource Graph response `{"data": [...]}`, or a bare
/// array. `None` when the body is none of these.
pub fn nic_array(body: &Value) -> Option<&Vec<Value>> {
    match body {
        Value::Array(items) => Some(items),
        Value::Object(obj) => ["value", "data"]
            .iter()
            .find_map(|k| obj.get(*k).and_then(Value::as_array)),
        _ => None,
    }
}

/// The ARM `nextLink` of a list page, when there is a further page.
pub fn next_link(body: &Value) -> Option<&str> {
    body.get("nextLink")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// Parses every NIC of a list response (see [`nic_array`]). Each entry is the
/// NIC or its index in the array with the error; one bad NIC does not spoil
/// the others. `None` when the body holds no NIC array.
pub fn parse_nic_page(body: &Value) -> Option<Vec<Result<NicState, (usize, NicError)>>> {
    let items = nic_array(body)?;
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, v)| parse_nic(v).map_err(|e| (i, e)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> Value {
        let path = format!(
            "{}/../shared/samples/azure/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    fn body(name: &str) -> Value {
        sample(name)["responses"]["200"]["body"].clone()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const SUB0: &str = "/subscriptions/00000000-0000-0000-0000-000000000000";

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn spec_example_get_has_an_address_and_a_slash_28_prefix() {
        let nic = parse_nic(&body(
            "azure-rest-api-specs__network__2025-07-01__NetworkInterfaceGet.json",
        ))
        .unwrap();
        assert_eq!(
            nic.id.as_str(),
            format!(
                "{SUB0}/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/test-nic"
            )
        );
        assert_eq!(nic.name, "test-nic");
        assert_eq!(nic.mac.as_ref().unwrap().as_str(), "000D3A1BC721");
        assert_eq!(
            nic.vm.as_ref().unwrap().as_str(),
            format!("{SUB0}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1")
        );
        let subnet = format!(
            "{SUB0}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/rg1-vnet/subnets/default"
        );
        assert_eq!(
            nic.ips,
            vec![
                IpAssignment {
                    ip: net("172.20.2.4/32"),
                    config: "ipconfig1".into(),
                    primary: true,
                    subnet: Some(ArmId::parse(&subnet).unwrap()),
                },
                IpAssignment {
                    ip: net("172.20.2.16/28"),
                    config: "ipconfig2".into(),
                    primary: false,
                    subnet: Some(ArmId::parse(&subnet).unwrap()),
                },
            ]
        );
        assert_eq!(
            nic.ips[1].vnet_key(),
            format!(
                "{SUB0}/resourcegroups/rg1/providers/microsoft.network/virtualnetworks/rg1-vnet"
            )
        );
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn spec_example_list_all_has_an_unattached_nic_without_mac_or_vm() {
        let page = body("azure-rest-api-specs__network__2025-07-01__NetworkInterfaceListAll.json");
        let nics: Vec<NicState> = parse_nic_page(&page)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].name, "test-nic");
        assert_eq!(nics[0].mac.as_ref().unwrap().as_str(), "000D3A1BC721");
        assert!(nics[0].vm.is_some());
        assert_eq!(nics[0].ips.len(), 1);
        assert_eq!(nics[0].ips[0].ip, net("172.20.2.4/32"));

        let nic2 = &nics[1];
        assert_eq!(nic2.name, "test-nic2");
        assert_eq!(nic2.id.resource_group(), Some("rgnew"));
        assert_eq!(nic2.mac, None);
        assert_eq!(nic2.vm, None);
        assert_eq!(nic2.ips.len(), 1);
        assert_eq!(nic2.ips[0].ip, net("172.20.2.4/32"));
        assert_eq!(nic2.ips[0].config, "ipconfig1");
        assert!(nic2.ips[0].primary);
        // Same IP as test-nic, but another VNet: a different ownership scope.
        assert_eq!(
            nic2.ips[0].vnet().unwrap().as_str(),
            format!(
                "{SUB0}/resourceGroups/rgnew/providers/Microsoft.Network/virtualNetworks/rgnew-vnet2"
            )
        );
        assert_ne!(nic2.ips[0].vnet_key(), nics[0].ips[0].vnet_key());
        assert_eq!(next_link(&page), None);
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn spec_example_list_takes_identity_from_the_nic_not_ipconfig_ids() {
        // The second NIC's ipconfig2 id points under test-nic (a spec bug):
        // identity comes from the NIC's own id, the config name from `name`.
        let page = body("azure-rest-api-specs__network__2025-05-01__NetworkInterfaceList.json");
        let nics: Vec<NicState> = parse_nic_page(&page)
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(nics.len(), 2);
        assert_eq!(nics[0].name, "test-nic");
        assert_eq!(nics[0].mac.as_ref().unwrap().as_str(), "000D3A1BC721");
        assert_eq!(nics[0].vm.as_ref().unwrap().name(), "vm1");
        assert_eq!(nics[0].ips.len(), 1);

        let nic2 = &nics[1];
        assert_eq!(
            nic2.id.as_str(),
            "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Network/networkInterfaces/test-nic2"
        );
        assert_eq!((nic2.mac.clone(), nic2.vm.clone()), (None, None));
        let got: Vec<(IpNet, &str, bool, String)> = nic2
            .ips
            .iter()
            .map(|a| {
                (
                    a.ip,
                    a.config.as_str(),
                    a.primary,
                    a.vnet().unwrap().name().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    net("172.20.2.4/32"),
                    "ipconfig1",
                    true,
                    "rg1-vnet2".to_string()
                ),
                (
                    net("172.20.2.16/28"),
                    "ipconfig2",
                    false,
                    "rg1-vnet".to_string()
                ),
            ]
        );
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn resource_changes_sample_is_a_change_record_not_a_nic_state() {
        // The Resource Graph `resourcechanges` sample describes a change (MAC
        // and VM inserted) of a NIC; it carries no full NIC state, so it is not
        // parsed as one: it has no `id` and names no ip configuration.
        let v = sample("jpazmon-integ-blog__HowToResourceChangeAlert__resourcechanges_nic.json");
        assert_eq!(v["changeType"], "Update");
        assert!(v.get("properties").is_none());
        let err = parse_nic(&v).unwrap_err();
        assert_eq!(err.field, "id");
        // Its MAC spelling normalises like the ARM one.
        let mac = v["changes"]["properties.macAddress"]["newValue"]
            .as_str()
            .unwrap();
        assert_eq!(Mac::parse(mac).unwrap().as_str(), "6045BD660DB8");
    }

    fn arg_row() -> Value {
        json!({
            "id": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/RG-App/providers/Microsoft.Network/networkInterfaces/app-nic",
            "name": "app-nic",
            "type": "microsoft.network/networkinterfaces",
            "tenantId": "aaaaaaaa-0000-0000-0000-000000000000",
            "kind": "",
            "location": "westeurope",
            "resourceGroup": "rg-app",
            "subscriptionId": "11111111-2222-3333-4444-555555555555",
            "managedBy": "",
            "sku": null,
            "plan": null,
            "identity": null,
            "zones": null,
            "extendedLocation": null,
            "tags": {},
            "properties": {
                "provisioningState": "Succeeded",
                "macAddress": "00-22-48-23-c9-54",
                "virtualMachine": {"id": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/RG-App/providers/Microsoft.Compute/virtualMachines/app-vm"},
                "nicType": "Standard",
                "someFutureField": {"nested": [1, 2, 3]},
                "ipConfigurations": [
                    {
                        "name": "ipconfig-v6",
                        "id": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/RG-App/providers/Microsoft.Network/networkInterfaces/app-nic/ipConfigurations/ipconfig-v6",
                        "properties": {
                            "privateIPAddress": "fd00:db8:deca::4",
                            "privateIPAddressVersion": "IPv6",
                            "privateIPAllocationMethod": "Dynamic",
                            "primary": false,
                            "subnet": {"id": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/RG-Net/providers/Microsoft.Network/virtualNetworks/hub/subnets/apps"}
                        }
                    },
                    {
                        "name": "ipconfig1",
                        "properties": {
                            "privateIPAddress": "10.1.2.4",
                            "privateIPAddressVersion": "IPv4",
                            "primary": true,
                            "subnet": {"id": "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/RG-Net/providers/Microsoft.Network/virtualNetworks/hub/subnets/apps"}
                        }
                    },
                    {
                        "name": "pending",
                        "properties": {"privateIPAllocationMethod": "Dynamic"}
                    }
                ]
            }
        })
    }

    #[test]
    fn resource_graph_row_with_extra_fields_ipv6_and_a_config_without_ip() {
        let nic = parse_nic(&arg_row()).unwrap();
        assert_eq!(nic.name, "app-nic");
        assert_eq!(nic.mac.as_ref().unwrap().as_str(), "00224823C954");
        assert_eq!(nic.vm.as_ref().unwrap().name(), "app-vm");
        // Sorted by address: the v4 address first; the config without an IP is skipped.
        let got: Vec<(IpNet, &str, bool)> = nic
            .ips
            .iter()
            .map(|a| (a.ip, a.config.as_str(), a.primary))
            .collect();
        assert_eq!(
            got,
            vec![
                (net("10.1.2.4/32"), "ipconfig1", true),
                (net("fd00:db8:deca::4/128"), "ipconfig-v6", false),
            ]
        );
    }

    #[test]
    fn a_resource_graph_response_is_a_page() {
        let resp =
            json!({"totalRecords": 1, "count": 1, "resultTruncated": "false", "data": [arg_row()]});
        let page = parse_nic_page(&resp).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].as_ref().unwrap().name, "app-nic");
        // A bare array too.
        let bare = json!([arg_row(), arg_row()]);
        assert_eq!(nic_array(&bare).unwrap().len(), 2);
        // Not a list.
        assert!(nic_array(&arg_row()).is_none());
        assert!(parse_nic_page(&json!("x")).is_none());
        let arm = json!({"value": [], "nextLink": "https://management.azure.com/next"});
        assert_eq!(next_link(&arm), Some("https://management.azure.com/next"));
    }

    #[test]
    fn one_bad_nic_in_a_page_is_reported_by_index() {
        let mut bad = arg_row();
        bad["properties"]["macAddress"] = json!("00-22-48");
        let page = parse_nic_page(&json!({"value": [arg_row(), bad, arg_row()]})).unwrap();
        assert!(page[0].is_ok() && page[2].is_ok());
        let (i, e) = page[1].as_ref().unwrap_err();
        assert_eq!(*i, 1);
        assert_eq!(e.field, "properties.macAddress");
    }

    #[test]
    fn name_falls_back_to_the_id_and_any_id_casing_is_accepted() {
        let mut v = arg_row();
        v.as_object_mut().unwrap().remove("name");
        v["id"] = json!(
            "/SUBSCRIPTIONS/11111111-2222-3333-4444-555555555555/RESOURCEGROUPS/RG-APP/PROVIDERS/MICROSOFT.NETWORK/NETWORKINTERFACES/APP-NIC"
        );
        let nic = parse_nic(&v).unwrap();
        assert_eq!(nic.name, "APP-NIC");
        assert_eq!(nic.id, parse_nic(&arg_row()).unwrap().id);
    }

    #[test]
    fn the_same_nic_listed_in_another_order_is_equal() {
        let a = arg_row();
        let mut b = arg_row();
        b["properties"]["ipConfigurations"]
            .as_array_mut()
            .unwrap()
            .reverse();
        assert_eq!(parse_nic(&a).unwrap(), parse_nic(&b).unwrap());
        assert_eq!(
            parse_nic(&a).unwrap().fingerprint(),
            parse_nic(&b).unwrap().fingerprint()
        );
    }

    #[test]
    fn plain_address_with_a_prefix_length_is_that_block() {
        let mut v = arg_row();
        v["properties"]["ipConfigurations"][1]["properties"]["privateIPAddress"] =
            json!("10.1.2.16");
        v["properties"]["ipConfigurations"][1]["properties"]["privateIPAddressPrefixLength"] =
            json!(28);
        let nic = parse_nic(&v).unwrap();
        assert!(nic.ips.iter().any(|a| a.ip == net("10.1.2.16/28")));
    }

    /// [`arg_row`] as `az network nic list` prints it: every `properties`
    /// flattened into its object, with the CLI's own extra fields.
    fn cli_row() -> Value {
        let sub = "/subscriptions/11111111-2222-3333-4444-555555555555";
        let subnet = format!(
            "{sub}/resourceGroups/RG-Net/providers/Microsoft.Network/virtualNetworks/hub/subnets/apps"
        );
        json!([{
            "auxiliaryMode": "None",
            "enableAcceleratedNetworking": false,
            "etag": "W/\"00000000-0000-0000-0000-000000000001\"",
            "id": format!("{sub}/resourceGroups/RG-App/providers/Microsoft.Network/networkInterfaces/app-nic"),
            "ipConfigurations": [
                {
                    "id": format!("{sub}/resourceGroups/RG-App/providers/Microsoft.Network/networkInterfaces/app-nic/ipConfigurations/ipconfig-v6"),
                    "name": "ipconfig-v6",
                    "primary": false,
                    "privateIPAddress": "fd00:db8:deca::4",
                    "privateIPAddressVersion": "IPv6",
                    "privateIPAllocationMethod": "Dynamic",
                    "provisioningState": "Succeeded",
                    "resourceGroup": "RG-App",
                    "subnet": {"id": subnet, "resourceGroup": "RG-Net"},
                    "type": "Microsoft.Network/networkInterfaces/ipConfigurations"
                },
                {
                    "name": "ipconfig1",
                    "primary": true,
                    "privateIPAddress": "10.1.2.4",
                    "privateIPAddressVersion": "IPv4",
                    "subnet": {"id": subnet, "resourceGroup": "RG-Net"}
                },
                {"name": "pending", "privateIPAllocationMethod": "Dynamic"}
            ],
            "location": "westeurope",
            "macAddress": "00-22-48-23-C9-54",
            "name": "app-nic",
            "nicType": "Standard",
            "primary": true,
            "provisioningState": "Succeeded",
            "resourceGroup": "RG-App",
            "tags": {},
            "type": "Microsoft.Network/networkInterfaces",
            "virtualMachine": {"id": format!("{sub}/resourceGroups/RG-App/providers/Microsoft.Compute/virtualMachines/app-vm"), "resourceGroup": "RG-App"}
        }])
    }

    #[test]
    fn az_cli_and_powershell_listings_read_as_the_arm_one() {
        let want = parse_nic(&arg_row()).unwrap();
        let cli = cli_row();
        assert_eq!(parse_nic(&cli[0]).unwrap(), want);
        assert_eq!(parse_nic_str(&cli[0].to_string()).unwrap(), want);
        // `Get-AzNetworkInterface | ConvertTo-Json -Depth 5`: PascalCase.
        let pascal = cli[0]
            .to_string()
            .replace("\"id\"", "\"Id\"")
            .replace("\"name\"", "\"Name\"")
            .replace("\"ipConfigurations\"", "\"IpConfigurations\"")
            .replace("\"privateIPAddress\"", "\"PrivateIpAddress\"")
            .replace("\"primary\"", "\"Primary\"")
            .replace("\"subnet\"", "\"Subnet\"")
            .replace("\"macAddress\"", "\"MacAddress\"")
            .replace("\"virtualMachine\"", "\"VirtualMachine\"");
        assert!(pascal.contains("\"PrivateIpAddress\":\"10.1.2.4\""));
        assert_eq!(parse_nic_str(&pascal).unwrap(), want);
        // An unattached NIC as the CLI prints it.
        let mut bare = cli[0].clone();
        let obj = bare.as_object_mut().unwrap();
        obj.remove("virtualMachine");
        obj.remove("macAddress");
        let nic = parse_nic_str(&bare.to_string()).unwrap();
        assert_eq!((nic.vm, nic.mac, nic.ips), (None, None, want.ips.clone()));
        // Errors name the field of the ARM shape.
        let mut bad = cli[0].clone();
        bad["ipConfigurations"][1]["privateIPAddress"] = json!("10.1.2");
        assert_eq!(
            parse_nic_str(&bad.to_string()).unwrap_err().field,
            "properties.ipConfigurations[1].properties.privateIPAddress"
        );
    }

    #[test]
    fn a_nic_without_properties_is_rejected_not_taken_as_holding_no_ip() {
        // A listing that lost the NICs' properties must not tell ipwho that
        // every NIC it names holds no IP (a complete snapshot would then end
        // all their claims).
        let mut v = arg_row();
        v.as_object_mut().unwrap().remove("properties");
        for got in [parse_nic(&v), parse_nic_str(&v.to_string())] {
            let e = got.unwrap_err();
            assert_eq!(e.field, "properties");
            assert!(e.reason.contains("az network nic list"), "{e}");
        }
    }

    /// A change to a good NIC that must make it fail.
    type Mutation = Box<dyn Fn(&mut Value)>;

    #[test]
    fn errors_name_the_field() {
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| v["properties"]["macAddress"] = json!("not-a-mac")),
                "properties.macAddress",
            ),
            (
                Box::new(|v| v["id"] = json!("networkInterfaces/app-nic")),
                "id",
            ),
            (Box::new(|v| v["id"] = json!(42)), "id"),
            (
                Box::new(|v| {
                    v["id"] = json!(
                        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/publicIPAddresses/pip"
                    )
                }),
                "id",
            ),
            (
                Box::new(|v| {
                    v.as_object_mut().unwrap().remove("id");
                }),
                "id",
            ),
            (
                Box::new(|v| v["type"] = json!("Microsoft.Network/publicIPAddresses")),
                "type",
            ),
            (
                Box::new(|v| {
                    v["properties"]["ipConfigurations"][1]["properties"]["privateIPAddress"] =
                        json!("10.1.2.999")
                }),
                "properties.ipConfigurations[1].properties.privateIPAddress",
            ),
            (
                Box::new(|v| {
                    v["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] =
                        json!("fd00::/129")
                }),
                "properties.ipConfigurations[0].properties.privateIPAddress",
            ),
            (
                Box::new(|v| {
                    v["properties"]["ipConfigurations"][1]["properties"]["subnet"]["id"] =
                        json!("subnets/apps")
                }),
                "properties.ipConfigurations[1].properties.subnet.id",
            ),
            (
                Box::new(|v| v["properties"]["virtualMachine"]["id"] = json!("/virtualMachines/x")),
                "properties.virtualMachine.id",
            ),
            // Type errors caught by the ARM model carry serde's path.
            (
                Box::new(|v| {
                    v["properties"]["ipConfigurations"][1]["properties"]["primary"] = json!("yes")
                }),
                "properties.ipConfigurations[1].properties.primary",
            ),
            (
                Box::new(|v| v["properties"]["macAddress"] = json!(7)),
                "properties.macAddress",
            ),
            (
                Box::new(|v| v["properties"]["ipConfigurations"] = json!({})),
                "properties.ipConfigurations",
            ),
        ];
        for (mutate, field) in cases {
            let mut v = arg_row();
            mutate(&mut v);
            let err = parse_nic(&v).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(!err.reason.is_empty());
            assert!(err.to_string().starts_with(field), "{err}");
            // From text, the same error.
            assert_eq!(parse_nic_str(&v.to_string()), Err(err));
        }
        let err = parse_nic_str("{\"id\": ").unwrap_err();
        assert_eq!(
            err.field, "",
            "text that is not JSON is an error of the whole record"
        );
        assert!(err.reason.starts_with("not valid JSON: "), "{err}");
        let err = parse_nic(&json!([1])).unwrap_err();
        assert_eq!(err.field, "");
        assert_eq!(err.to_string(), "expected a NIC object, got an array");
        assert_eq!(
            NicError::new("id", "missing")
                .within("properties.responseBody")
                .field,
            "properties.responseBody.id"
        );
    }

    /// Every NIC of every sample file (in list pages, GET bodies and Activity
    /// Log response bodies) reads the same from text as from a parsed value.
    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn text_and_value_parse_every_sample_nic_alike() {
        let dir = format!("{}/../shared/samples/azure", env!("CARGO_MANIFEST_DIR"));
        let mut compared = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            // A JSON document, or JSON Lines.
            let mut stack: Vec<Value> = match serde_json::from_str::<Value>(&text) {
                Ok(v) => vec![v],
                Err(_) => text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect(),
            };
            while let Some(x) = stack.pop() {
                match x {
                    Value::Object(o) => {
                        if o.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(is_nic_type)
                        {
                            let v = Value::Object(o.clone());
                            assert_eq!(
                                parse_nic_str(&v.to_string()),
                                parse_nic(&v),
                                "{}",
                                path.display()
                            );
                            compared += 1;
                        }
                        stack.extend(o.into_iter().map(|(_, v)| v));
                    }
                    Value::Array(a) => stack.extend(a),
                    // Response bodies are JSON in a string.
                    Value::String(s) if s.starts_with('{') => {
                        stack.extend(serde_json::from_str::<Value>(&s).ok());
                    }
                    _ => {}
                }
            }
        }
        assert!(compared >= 5, "only {compared} sample NICs found");
    }
}
