//! VNet listings a collector would have taken: one per subscription at the
//! start of the window, `vnets/<subscription>.json`, in the body
//! `POST /v1/topology` takes (`taken_at`, `subscriptions`, and the VNets as
//! ARM lists them under `value`: address space, subnets, peerings with
//! `peeringState` `Connected` and the remote address space). The layout
//! never changes in the simulator, so one listing each is the whole truth.

use std::fs;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value, json};

use super::FeedItem;
use super::time;
use super::truth::{Vnet, World};

fn address_space(v: &Vnet) -> Vec<String> {
    std::iter::once(v.v4.to_string())
        .chain(v.v6.map(|n| n.to_string()))
        .collect()
}

fn arm_vnet(world: &World, v: &Vnet) -> Value {
    let subnets: Vec<Value> = v
        .subnets
        .iter()
        .map(|&s| {
            let sn = &world.subnets[s as usize];
            let prefixes: Vec<String> = std::iter::once(sn.v4.to_string())
                .chain(sn.v6.map(|n| n.to_string()))
                .collect();
            json!({
                "name": sn.name,
                "id": sn.id,
                "properties": { "addressPrefixes": prefixes, "provisioningState": "Succeeded" },
                "type": "Microsoft.Network/virtualNetworks/subnets",
            })
        })
        .collect();
    let peerings: Vec<Value> = v
        .peers
        .iter()
        .map(|&p| {
            let r = &world.vnets[p as usize];
            json!({
                "name": format!("peer-{}", r.name),
                "id": format!("{}/virtualNetworkPeerings/peer-{}", v.id, r.name),
                "properties": {
                    "peeringState": "Connected",
                    "peeringSyncLevel": "FullyInSync",
                    "remoteVirtualNetwork": { "id": r.id },
                    "allowVirtualNetworkAccess": true,
                    "remoteAddressSpace": { "addressPrefixes": address_space(r) },
                    "provisioningState": "Succeeded",
                },
                "type": "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
            })
        })
        .collect();
    json!({
        "name": v.name,
        "id": v.id,
        "type": "Microsoft.Network/virtualNetworks",
        "location": world.subs[v.sub as usize].location,
        "properties": {
            "provisioningState": "Succeeded",
            "addressSpace": { "addressPrefixes": address_space(v) },
            "subnets": subnets,
            "virtualNetworkPeerings": peerings,
        },
    })
}

/// Writes `vnets/<subscription>.json` for every subscription; returns the
/// feed items, delivered at the start of the window.
pub fn write_vnet_listings(world: &World, out: &Path) -> anyhow::Result<Vec<FeedItem>> {
    let dir = out.join("vnets");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut feed = Vec::new();
    for (si, sub) in world.subs.iter().enumerate() {
        let value: Vec<Value> = world
            .vnets
            .iter()
            .filter(|v| v.sub as usize == si)
            .map(|v| arm_vnet(world, v))
            .collect();
        let body = json!({
            "taken_at": time::fmt_us(world.t0),
            "subscriptions": [sub.id],
            "value": value,
        });
        let file = format!("vnets/{}.json", sub.id);
        fs::write(out.join(&file), serde_json::to_vec(&body)?)
            .with_context(|| format!("writing {file}"))?;
        feed.push(FeedItem::Topology {
            file,
            deliver_at: world.t0,
        });
    }
    Ok(feed)
}
