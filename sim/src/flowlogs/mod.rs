//! Flow-log blobs and the true owner of every tuple end.
//!
//! Each tuple is captured at an attached NIC (its MAC is where Azure puts
//! it: per flow group in NSG v2 logs, per record in VNet v4 logs) at a time
//! when that NIC owned the capturing IP. The other end is one of:
//! an IP owned in the same VNet at that time (`owned`), an IP around the end
//! of an owner interval (`gap`: just before or after a handover or a delete),
//! a private IP of the VNet nobody ever owned (`unowned`), a public IP
//! (`public`), an IP owned in a VNet peered with the capturing one
//! (`peered`), or, in a legacy VNet, an address of its own 10.0.0.0/24 that
//! nobody holds there but a NIC of the other legacy VNet holds (`shadowed`:
//! the packet never left its VNet, so that NIC is not its far end). Some
//! tuples are placed within 90 s of the capturing NIC's own start or end of
//! ownership (`edge`).
//!
//! A share of the legacy VNets' tuples (`unseen`) are captured by
//! short-lived scale-set NICs no snapshot or event ever showed: a MAC ipwho
//! cannot know, on an address the other legacy VNet's NIC holds at that
//! moment. Their capturing end's true owner is that unseen NIC.
//!
//! Files: `flowlogs/nsg-<hour>.json` (NSG flow log v2: `{"records":[...]}`,
//! 13-field tuples, epoch seconds, empty counters on `B` tuples and denied
//! ones) and `flowlogs/vnet-<hour>.json` (VNet flow log v4: epoch
//! milliseconds, IANA protocol numbers, state `D` for deny, `0` counters on
//! `B`/`D`); `nsg-all.json` / `vnet-all.json` when
//! [`super::SimConfig::flow_single_blob`] is set. `flowlogs/truth.jsonl` has
//! one line per tuple: where it is (file, record, flow, group, tuple index),
//! its time, the scope the record gives (VNet for VNet logs, subscription
//! for NSG logs), the capturing MAC, and per end the true owner (NIC, VM),
//! or null, and the VNet routing puts the address in (the capturing VNet, a
//! peered one, or null outside the estate).

mod blob;
mod generate;
mod ips;

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::time::{self, Micros};

pub use generate::write_flow_logs;
pub(crate) use ips::{public_ip, unowned_ip};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowStats {
    pub tuples: u64,
    pub nsg_tuples: u64,
    pub vnet_tuples: u64,
    pub records: u64,
    pub files: u64,
    pub bytes: u64,
}

/// One end of a tuple in `flowlogs/truth.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndTruth {
    pub ip: IpAddr,
    pub nic: Option<String>,
    pub vm: Option<String>,
    /// The VNet the address is in, by routing from the capturing VNet.
    #[serde(default)]
    pub vnet: Option<String>,
}

/// The scope a flow record gives: its VNet (VNet flow logs, from
/// `targetResourceID`) or its subscription (NSG flow logs, from the NSG id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowScope {
    pub vnet: Option<String>,
    pub subscription: String,
}

/// A line of `flowlogs/truth.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TupleTruth {
    pub file: String,
    pub record: u32,
    pub flow: u32,
    pub group: u32,
    pub tuple: u32,
    /// `nsg` or `vnet`.
    pub format: String,
    #[serde(with = "time::serde_us")]
    pub at: Micros,
    /// How the non-capturing end was chosen: owned, gap, unowned, public, edge.
    pub kind: String,
    pub scope: FlowScope,
    /// The capturing NIC's MAC (12 hex digits).
    pub mac: String,
    /// Which end the capturing NIC is: `src` or `dst`.
    pub capture: String,
    pub src: EndTruth,
    pub dst: EndTruth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Owned,
    Gap,
    Unowned,
    Public,
    Edge,
    Peered,
    Shadowed,
    Unseen,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Owned => "owned",
            Scenario::Gap => "gap",
            Scenario::Unowned => "unowned",
            Scenario::Public => "public",
            Scenario::Edge => "edge",
            Scenario::Peered => "peered",
            Scenario::Shadowed => "shadowed",
            Scenario::Unseen => "unseen",
        }
    }
}

struct Gen {
    /// (format 0 = NSG / 1 = VNet, hour or 0 for the single blob)
    file: (u8, i64),
    /// NSG: (subnet, 0, minute); VNet: (vnet, mac, minute)
    rec: (u32, u64, i64),
    /// NSG: rule; VNet: acl (subnet)
    flow: u32,
    /// NSG: mac; VNet: rule
    group: u64,
    t: Micros,
    seq: u32,
    text: String,
    truth: Option<Box<GenTruth>>,
}

/// Who held one end's address: a known NIC (and its VM), an unseen
/// scale-set NIC (by MAC), or nobody.
#[derive(Clone, Copy)]
enum Holder {
    Nobody,
    Nic(u32, Option<u32>),
    Unseen(u64),
}

struct GenTruth {
    kind: Scenario,
    vnet: u32,
    mac: u64,
    capture_src: bool,
    /// Address, holder, VNet by routing.
    src: (IpAddr, Holder, Option<u32>),
    dst: (IpAddr, Holder, Option<u32>),
}

/// Scale-set NICs no evidence shows get MACs under this prefix (no
/// simulated NIC's MAC has it).
const UNSEEN_MAC_PREFIX: u64 = 0x7C_1E_52 << 24;

const RULES: &[&str] = &[
    "DefaultRule_AllowInternetOutBound",
    "DefaultRule_DenyAllInBound",
    "DefaultRule_AllowVnetInBound",
    "DefaultRule_AllowVnetOutBound",
    "UserRule_allow-https-in",
];

/// Reads `flowlogs/truth.jsonl` (empty when absent).
pub fn read_tuple_truth(dir: &Path) -> anyhow::Result<Vec<TupleTruth>> {
    let p = dir.join("flowlogs").join("truth.jsonl");
    if !p.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", p.display())))
        .collect()
}
