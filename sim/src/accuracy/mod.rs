//! The accuracy report: feed an estate to a running ipwho over HTTP, ask it
//! the owner of every probe and of both ends of every flow tuple, and score
//! the answers against the truth; beside it, the naive `lead()` query.
//!
//! HTTP contract used:
//! - `POST /v1/snapshots` `{"snapshot_id","taken_at","subscriptions",
//!   "complete","last_page","value":[NIC...]}`, one call per page;
//! - `POST /v1/activity` with an Activity Log file's bytes as-is;
//! - `POST /v1/lookups` `{"lookups":[{"ip","at","vnet"?,"subscription"?}]}`
//!   → `{"answers":[{"status","owner","vm","candidates"}]}` in order.
//!
//! Scoring (ids compared case-insensitively):
//! - `confirmed`, `probable`, `possible` name a NIC (the status is the
//!   NIC's): right when it is the single true NIC, wrong otherwise (also
//!   when nobody owned the IP, or when several did in an unscoped lookup).
//!   A wrong answer is *misled* when the delivered evidence pointed at that
//!   owner (a change nobody could see: a lost record and no snapshot
//!   between).
//! - The VM is scored apart, by its own status (`vm.status`): a
//!   `confirmed` or `probable` VM other than the true one, on the right
//!   NIC, is a wrong VM (`vm-only`); a server that still puts the VM
//!   inside `owner` is read the same way, its VM taking the NIC's status.
//! - `ambiguous`: whether every true owner is among the candidates.
//! - `unknown`: whether nobody owned the IP.
//!
//! Settled lookups (see [`super::evidence`]): one owner beyond doubt must be
//! `confirmed`, nobody beyond doubt must be `unknown`; anything else is
//! counted as settled but hedged. Targets: no wrong (not misled)
//! `confirmed` or `probable` answer, NIC or VM, and no settled lookup
//! hedged.

mod feed;
mod lookups;
mod report;
mod score;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use report::Correct;
pub use score::run_accuracy_with;

#[cfg(test)]
pub(crate) use lookups::{Truth, scope_of};

/// How to run the report.
#[derive(Clone, Debug)]
pub struct AccuracyOptions {
    /// ipwho's base URL, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Postgres URL for the naive approach's scratch database; `None` skips it.
    pub database_url: Option<String>,
    /// Post the estate first (false: it was already fed).
    pub feed: bool,
    /// Lookups per `POST /v1/lookups` (the API takes at most 10,000).
    pub batch: usize,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

impl AccuracyOptions {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            database_url: None,
            feed: true,
            batch: 10_000,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Feeds `dir` to ipwho at `base_url`, scores its answers, and runs the naive
/// approach in a scratch database created through `database_url`.
pub async fn run_accuracy(
    dir: &Path,
    base_url: &str,
    database_url: &str,
) -> anyhow::Result<AccuracyReport> {
    let mut o = AccuracyOptions::new(base_url);
    o.database_url = Some(database_url.to_string());
    run_accuracy_with(dir, &o).await
}

/// Counts for one answer status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusRow {
    pub n: u64,
    /// Named the single true NIC.
    pub right: u64,
    /// Named an owner that was not the single true owner.
    pub wrong: u64,
    /// Of `wrong`: the delivered evidence pointed at that owner.
    pub wrong_misled: u64,
    /// Of `right`: a `confirmed`/`probable` VM that was not the NIC's.
    pub wrong_vm_only: u64,
    /// Nobody owned the IP.
    pub truth_none: u64,
    /// `ambiguous`: every true owner among the candidates.
    pub truth_in_candidates: u64,
    /// `ambiguous`: some true owner missing from the candidates.
    pub truth_not_in_candidates: u64,
}

/// Answers of one kind of lookup, by status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Section {
    pub lookups: u64,
    pub by_status: BTreeMap<String, StatusRow>,
}

/// How ipwho answered the lookups that one settled class holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SettledRow {
    pub n: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Not given the settled status.
    pub hedged: u64,
    /// Given the settled status but naming the wrong owner.
    pub wrong: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SettledReport {
    /// One NIC beyond doubt (inside one claim's certain window only).
    pub confirmed: SettledRow,
    /// Of those, the VM beyond doubt too, answered on the right NIC: the
    /// VM's own status must be `confirmed`, naming that VM.
    #[serde(default)]
    pub vm: SettledRow,
    /// Inside two claims' certain windows: contradictory evidence.
    pub contested: SettledRow,
    /// No claim can cover the time.
    pub unknown: SettledRow,
}

/// Naive answers of one lookup set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveRow {
    pub n: u64,
    /// Named the single true owner.
    pub right: u64,
    /// Named another owner (or anyone when nobody owned the IP).
    pub wrong: u64,
    /// Of `wrong`: nobody owned the IP.
    pub wrong_truth_none: u64,
    pub no_answer_truth_none: u64,
    pub no_answer_truth_owner: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveVariant {
    pub probes: NaiveRow,
    pub flow_ends: NaiveRow,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveReport {
    /// Partitioned by IP alone, as published.
    pub by_ip: NaiveVariant,
    /// Partitioned by (VNet, IP), honouring the lookup's scope.
    pub by_vnet: NaiveVariant,
    pub sightings: u64,
    pub elapsed_ms: u64,
}

/// One probe or flow-end kind across ipwho and the naive variants.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KindRow {
    pub kind: String,
    pub n: u64,
    /// `confirmed`/`probable` with the right owner, or `unknown` when nobody owned it.
    pub ipwho_right: u64,
    /// `confirmed`/`probable` naming a wrong owner (misled included).
    pub ipwho_wrong_firm: u64,
    /// `possible` naming a wrong owner.
    pub ipwho_wrong_possible: u64,
    /// `possible` right, `ambiguous`, or `unknown` while someone owned it.
    pub ipwho_hedged: u64,
    pub naive_ip_right: u64,
    pub naive_ip_wrong: u64,
    pub naive_vnet_right: u64,
    pub naive_vnet_wrong: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeedStats {
    pub snapshots: u64,
    pub pages: u64,
    pub activity_files: u64,
    /// VNet listings posted (and how many the service refused as an
    /// unknown route: a build without `POST /v1/topology`).
    #[serde(default)]
    pub vnet_listings: u64,
    #[serde(default)]
    pub vnet_listings_refused: u64,
    pub bytes: u64,
    pub feed_ms: u64,
    pub lookups: u64,
    pub lookup_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Targets {
    /// Wrong `confirmed` answers the evidence did not point at.
    pub wrong_confirmed: u64,
    pub wrong_probable: u64,
    /// Wrong `confirmed`/`probable` answers the evidence pointed at.
    pub misled_confirmed: u64,
    pub misled_probable: u64,
    /// Right NIC, but a `confirmed`/`probable` VM it was not on, the
    /// evidence not pointing at it.
    #[serde(default)]
    pub wrong_vm_firm: u64,
    /// Settled lookups (confirmed + unknown) not given the settled status.
    pub settled_hedged: u64,
    pub met: bool,
}

/// A lookup worth a look: a wrong firm answer or a settled lookup hedged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Notable {
    /// `wrong`, `misled`, `settled-confirmed-hedged`, `settled-unknown-hedged`,
    /// `settled-confirmed-wrong`.
    pub why: String,
    pub kind: String,
    pub ip: String,
    pub at: String,
    pub vnet: Option<String>,
    pub subscription: Option<String>,
    pub status: String,
    /// (NIC, VM) named by ipwho.
    pub answer: Option<(String, Option<String>)>,
    pub truth: Vec<(String, Option<String>)>,
    /// What the evidence settles, e.g. `confirmed nic vm`.
    pub settled: String,
}

/// The whole report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccuracyReport {
    pub dir: String,
    pub seed: u64,
    pub base_url: String,
    pub feed: FeedStats,
    pub probes: Section,
    pub flow_ends: Section,
    pub settled: SettledReport,
    pub naive: Option<NaiveReport>,
    pub by_kind: Vec<KindRow>,
    pub targets: Targets,
    /// Up to [`MAX_NOTABLE`] lookups that missed a target, for diagnosis.
    pub notable: Vec<Notable>,
}

/// How many notable lookups a report keeps.
pub const MAX_NOTABLE: usize = 200;
