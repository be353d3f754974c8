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

mod load;
mod query;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::time::Micros;

pub use load::parse_activity;

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
