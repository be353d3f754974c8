//! What a collector would have seen of the simulated estate.
//!
//! - `snapshots/<n>/page-<k>.json`: the pages of
//!   `GET /subscriptions/{sub}/providers/Microsoft.Network/networkInterfaces`
//!   (`{"value":[NIC...],"nextLink":"..."}`, NICs in ARM casing; scale-set
//!   NICs included, as a collector that also lists scale sets would), and
//!   `snapshots/<n>/meta.json` (`snapshot_id`, `taken_at`, `subscriptions`,
//!   `complete`). One snapshot per subscription every `snapshot_minutes`;
//!   some are never delivered (missing numbers), some lose their last pages
//!   (`complete: false`). The first and last snapshot of each subscription
//!   are always delivered complete.
//! - `activity/<hour>-<k>.json` (`{"records":[...]}`, as Event Hubs deliver)
//!   and `activity/<hour>-<k>.jsonl` (JSON Lines, as storage exports), by
//!   hour of delivery: `MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE` and
//!   `/DELETE` records of VM NICs (none for scale-set NICs), `Success` with
//!   `responseBody` as an escaped JSON string, plus `Start` records (some
//!   with a `requestbody`) and a few `Failure` records that asked for
//!   another IP. A share of records is lost, delayed (written in a later
//!   hour), duplicated, and every file is slightly out of order.

mod activity;
mod nic;
mod sweep;

use serde::{Deserialize, Serialize};

use super::FeedItem;
use super::time::Micros;

pub use nic::nic_json;
pub use sweep::write_collector_view;

/// Counts of what was written under `snapshots/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Snapshots the collector took (delivered or not).
    pub taken: u64,
    pub delivered: u64,
    pub complete: u64,
    pub partial: u64,
    pub missed: u64,
    pub pages: u64,
    /// NIC objects written in pages.
    pub nic_observations: u64,
    pub bytes: u64,
    /// Distinct (NIC, IP) pairs seen in delivered snapshots or events: a
    /// lower bound of the claims ipwho will hold.
    pub observed_claims: u64,
}

/// Counts of what was written under `activity/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActivityStats {
    /// NIC writes and deletes that Azure logged.
    pub operations: u64,
    pub success_written: u64,
    pub start_written: u64,
    pub failure_written: u64,
    /// Records lost (of every result type).
    pub lost: u64,
    pub success_lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A `Success` record that was never delivered.
#[derive(Clone, Copy, Debug)]
pub struct LostEvent {
    pub t: Micros,
    pub nic: u32,
}

pub struct Written {
    pub feed: Vec<FeedItem>,
    pub snapshots: SnapshotStats,
    pub activity: ActivityStats,
    pub lost: Vec<LostEvent>,
}

/// `snapshots/<n>/meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub snapshot_id: String,
    pub taken_at: String,
    pub subscriptions: Vec<String>,
    pub complete: bool,
    /// The page files delivered, in order.
    #[serde(default)]
    pub pages: Vec<String>,
    /// How many pages the listing had (more than `pages` when partial).
    #[serde(default)]
    pub pages_listed: u32,
}
