//! The attribution policy: where each end of a flow tuple is looked for.
//! A packet goes only where routing takes it, so each end is looked up only
//! where the packet can have been:
//!
//! 1. **The capturing end** (source of an outbound tuple, destination of an
//!    inbound one) is the NIC with the record's MAC, within the scope the
//!    record names (the NIC a VNet flow log targets, else its VNet; the
//!    NSG's subscription). A NIC with another MAC, or outside that scope,
//!    is never its answer; when no known NIC has the MAC, the end is
//!    `unknown` (`scoped: mac_unknown` or `mac_out_of_scope`, with the
//!    scope searched). It is never looked up by IP: that would name
//!    whichever NIC of some other VNet happens to use the address.
//! 2. **The capturing VNet** is that NIC's VNet, else the VNet the record
//!    names.
//! 3. **The far end** (and both ends of a record without a MAC) follows
//!    routing from the capturing VNet ([`crate::topology::Route`]): inside
//!    its address space, that VNet only (`in_vnet`); inside a peered VNet's,
//!    that VNet only (`peered`); elsewhere, outside the estate (`outside`,
//!    `unknown` without a lookup).
//! 4. **Without topology** for the capturing VNet, the end is looked up in
//!    that VNet, then in the record's subscription, then everywhere; an
//!    answer from outside the capturing VNet is at most `possible`
//!    (`no_topology`). With no capturing VNet at all, likewise from the
//!    subscription (`no_vnet`).
//! 5. An address outside every range the index holds claims in is
//!    `unknown` without a lookup (`not_looked_up`).
//!
//! Every end also says whether the scope it was looked for in was watched
//! at the tuple's time.

use std::net::IpAddr;

use super::{EndAttribution, Lookups, Scoped, Status, Via, Within};
use crate::azure::flowlog::tuple::Direction;
use crate::azure::flowlog::{FlowContext, FlowTuple, ScopeHint};
use crate::model::{ArmId, Mac};
use crate::topology::Route;

/// (source, destination) attributions of one tuple: the capturing end
/// first when the direction says which it is, then the other from the
/// capturing VNet.
pub(super) fn attribute(
    l: &dyn Lookups,
    ctx: &FlowContext<'_>,
    t: &FlowTuple<'_>,
) -> (EndAttribution, EndAttribution) {
    let at = t.time_micros;
    let record = ctx.scope;
    match (t.direction, ctx.mac) {
        (Some(dir), mac) => {
            let (lip, rip) = match dir {
                Direction::Outbound => (t.src_ip, t.dst_ip),
                Direction::Inbound => (t.dst_ip, t.src_ip),
            };
            let local = match mac {
                Some(m) => capture_end(l, m, lip, at, record),
                None => far_end(l, lip, at, record.vnet.as_deref(), record),
            };
            let vnet = capturing_vnet(&local, record);
            let remote = far_end(l, rip, at, vnet, record);
            match dir {
                Direction::Outbound => (local, remote),
                Direction::Inbound => (remote, local),
            }
        }
        (None, Some(mac)) => {
            // Flat input with a MAC but no direction: the end whose IP the
            // NIC held is the capturing one.
            let held = |a: &EndAttribution| a.ip_held == Some(true);
            let s = capture_end(l, mac, t.src_ip, at, record);
            if held(&s) {
                let d = far_end(l, t.dst_ip, at, capturing_vnet(&s, record), record);
                return (s, d);
            }
            let d = capture_end(l, mac, t.dst_ip, at, record);
            if held(&d) {
                let s = far_end(l, t.src_ip, at, capturing_vnet(&d, record), record);
                return (s, d);
            }
            let vnet = record.vnet.as_deref();
            (
                far_end(l, t.src_ip, at, vnet, record),
                far_end(l, t.dst_ip, at, vnet, record),
            )
        }
        (None, None) => {
            let vnet = record.vnet.as_deref();
            (
                far_end(l, t.src_ip, at, vnet, record),
                far_end(l, t.dst_ip, at, vnet, record),
            )
        }
    }
}

/// The capturing end: by MAC only (rule 1).
fn capture_end(
    l: &dyn Lookups,
    mac: &Mac,
    ip: IpAddr,
    at: i64,
    record: &ScopeHint,
) -> EndAttribution {
    let mut a = l.by_mac(mac, ip, at, record);
    let sub = match &a.nic {
        Some(n) => Some(n.subscription.as_str()),
        None => record.subscription.as_deref(),
    };
    if let Some(s) = sub {
        a.watched = l.watched(s, at);
    }
    a
}

/// The capturing VNet: the capturing NIC's, else the record's (rule 2).
fn capturing_vnet<'a>(local: &'a EndAttribution, record: &'a ScopeHint) -> Option<&'a str> {
    local
        .nic
        .as_ref()
        .and_then(|n| n.vnet_key.as_deref())
        .or(record.vnet.as_deref())
}

/// The far end: by routing from the capturing VNet (rule 3), else wide
/// (rule 4).
fn far_end(
    l: &dyn Lookups,
    ip: IpAddr,
    at: i64,
    vnet: Option<&str>,
    record: &ScopeHint,
) -> EndAttribution {
    let Some(v) = vnet else {
        return wide(l, ip, at, record.subscription.as_deref(), Scoped::NoVnet);
    };
    let (target, via, scoped) = match l.route(v, ip, at) {
        Route::Outside => return EndAttribution::unknown(Via::NotLookedUp, Scoped::Outside),
        Route::InVnet => (v, Via::IpInVnet, Scoped::InVnet),
        Route::Peered(p) => {
            return in_vnet(l, ip, at, &p, Via::IpInPeeredVnet, Scoped::Peered);
        }
        Route::Unknown => (v, Via::IpInVnet, Scoped::NoTopology),
    };
    let a = in_vnet(l, ip, at, target, via, scoped);
    if a.status != Status::Unknown || scoped == Scoped::InVnet || a.via == Via::NotLookedUp {
        return a;
    }
    // The record's subscription, else the capturing VNet's.
    let sub = record
        .subscription
        .as_deref()
        .unwrap_or(ArmId::subscription_of_key(v));
    wide(l, ip, at, Some(sub), Scoped::NoTopology)
}

/// By IP in one VNet (key), with what watched it; not looked up outside
/// the index's ranges (rule 5).
fn in_vnet(
    l: &dyn Lookups,
    ip: IpAddr,
    at: i64,
    vnet: &str,
    via: Via,
    scoped: Scoped,
) -> EndAttribution {
    if !l.may_hold(ip) {
        return EndAttribution::unknown(Via::NotLookedUp, Scoped::NotLookedUp);
    }
    let mut a = l.by_ip(ip, at, Within::Vnet(vnet));
    a.via = via;
    a.scoped = scoped;
    a.watched = l.watched(ArmId::subscription_of_key(vnet), at);
    a
}

/// By IP in a subscription, then everywhere, never firm (rule 4); not
/// looked up outside the index's ranges (rule 5).
fn wide(l: &dyn Lookups, ip: IpAddr, at: i64, sub: Option<&str>, scoped: Scoped) -> EndAttribution {
    if !l.may_hold(ip) {
        return EndAttribution::unknown(Via::NotLookedUp, Scoped::NotLookedUp);
    }
    let mut a = EndAttribution::unknown(Via::IpAnyScope, scoped);
    if let Some(sub) = sub {
        a = l.by_ip(ip, at, Within::Subscription(sub));
        a.via = Via::IpInSubscription;
        a.watched = l.watched(sub, at);
    }
    if a.status == Status::Unknown {
        let watched = a.watched;
        a = l.by_ip(ip, at, Within::Any);
        a.via = Via::IpAnyScope;
        a.watched = watched;
    }
    a.scoped = scoped;
    a.at_most_possible();
    a
}
