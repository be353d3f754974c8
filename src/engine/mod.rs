//! The pure attribution core: a NIC's evidence in, claims with bounded ends
//! out ([`derive_claims`]); a set of claims, an instant and what watched
//! their subscriptions in, an answer with a status out ([`answer`]): the
//! NIC's, bounded by the other NICs' claims ([`exclusive`]), and its VM's.
//! No SQL, no HTTP, no clock: everything it knows is in its arguments,
//! which is what makes its laws testable.
//!
//! Times are microseconds since the Unix epoch (`i64`), the precision
//! Postgres keeps. Windows are half-open `[start, end)`; [`NEG_INF`] and
//! [`POS_INF`] stand for unbounded ends.

mod answer;
mod claims;
mod coverage;
mod exclusive;

pub use answer::{
    Alive, Answer, Continuity, Held, Owned, Status, Verdict, VmAnswer, answer, answer_bounded,
    answer_where, candidate_order, continuity, lone_status, owner_status, verdict, vm_answer,
};
pub use claims::{Attachment, Claim, ClaimKey, derive_claims, find_conflicts};
pub use coverage::{
    BoundSource, Complete, Coverage, CoverageMap, Freshness, Stale, Watching, human,
};
pub use exclusive::{Bounded, exclusive};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::NicState;

/// Microseconds since the Unix epoch.
pub type Micros = i64;
/// An unbounded start.
pub const NEG_INF: Micros = i64::MIN;
/// An unbounded end.
pub const POS_INF: Micros = i64::MAX;

/// Microseconds → timestamp (`None` for the infinities).
pub fn to_ts(m: Micros) -> Option<chrono::DateTime<chrono::Utc>> {
    if m == NEG_INF || m == POS_INF {
        None
    } else {
        chrono::DateTime::from_timestamp_micros(m)
    }
}

/// Timestamp → microseconds.
pub fn micros(t: chrono::DateTime<chrono::Utc>) -> Micros {
    t.timestamp_micros()
}
/// A minute in microseconds.
pub const MINUTE: Micros = 60_000_000;

/// Where a piece of evidence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// A snapshot listed the NIC with this state.
    Snapshot,
    /// A complete snapshot of the NIC's subscription did not list it.
    SnapshotAbsence,
    /// Activity Log `NETWORKINTERFACES/WRITE` Success: this state from now on.
    ActivityWrite,
    /// Activity Log `NETWORKINTERFACES/DELETE` Success: gone from now on.
    ActivityDelete,
}

impl EvidenceKind {
    /// Events mark the instant a state began; snapshots only sample it.
    pub fn is_event(self) -> bool {
        matches!(
            self,
            EvidenceKind::ActivityWrite | EvidenceKind::ActivityDelete
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceKind::Snapshot => "snapshot",
            EvidenceKind::SnapshotAbsence => "snapshot_absence",
            EvidenceKind::ActivityWrite => "activity_write",
            EvidenceKind::ActivityDelete => "activity_delete",
        }
    }
}

/// What a piece of evidence says the NIC was at its instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The NIC existed with this state (shared: one state is the evidence
    /// of every run point and event that saw it).
    Present(std::sync::Arc<NicState>),
    /// The NIC did not exist (deleted, or missing from a complete snapshot).
    Absent,
}

/// One piece of evidence about one NIC at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub at: Micros,
    pub kind: EvidenceKind,
    /// Snapshot id or Activity Log event key: what a person looks up to see why.
    pub id: String,
    /// For writes: the event says the NIC was created (nothing before it).
    pub created: bool,
    pub observation: Observation,
}

/// A reference to a piece of evidence, carried by claims and answers. Its
/// id is shared (`Arc<str>`): the index holds one copy of each snapshot's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EvidenceRef {
    pub kind: EvidenceKind,
    pub id: std::sync::Arc<str>,
    pub at: Micros,
}

impl From<&Evidence> for EvidenceRef {
    fn from(e: &Evidence) -> Self {
        EvidenceRef {
            kind: e.kind,
            id: e.id.as_str().into(),
            at: e.at,
        }
    }
}

/// A half-open window `[start, end)` in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    pub start: Micros,
    pub end: Micros,
}

impl Window {
    pub fn contains(&self, t: Micros) -> bool {
        self.start <= t && t < self.end
    }
    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// Two prefixes overlap when one contains the other.
pub fn ip_overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests;
