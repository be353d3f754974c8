//! The JSON shapes of answers: claims, the NIC and VM they name, the
//! answer at an instant and an IP's history. How the scope was watched is
//! in `watch`; the same answers in words, for the command line, in `words`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::watch::{CoverageView, StaleView, WatchedView};
use crate::engine::{
    Answer, Attachment, Claim, Continuity, EvidenceKind, EvidenceRef, Held, Micros, Owned, Status,
    VmAnswer, Window,
};
use crate::model::ArmId;
use crate::store::to_ts;

/// Timestamps as RFC 3339 UTC, microseconds when present (`2025-06-02T10:00:00.000001Z`),
/// written without going through `chrono`'s formatter: an answer holds a
/// dozen of them, and formatting them was a tenth of a lookup's time.
pub(super) mod ts {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    fn text(t: &DateTime<Utc>) -> String {
        let mut out = Vec::with_capacity(27);
        crate::azure::flowlog::tuple::write_rfc3339(&mut out, t.timestamp_micros());
        String::from_utf8(out).expect("RFC 3339 is ASCII")
    }

    pub fn one<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(t))
    }

    pub fn opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&text(t)),
            None => s.serialize_none(),
        }
    }
}

/// A NIC as an answer names it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NicView {
    /// ARM id, as Azure spelled it.
    pub id: String,
    pub name: String,
    /// 12 upper-case hex digits; null while the NIC was not attached.
    pub mac: Option<String>,
    /// Subscription id (lower case).
    pub subscription: String,
    pub resource_group: Option<String>,
}

/// A VM.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    pub id: String,
    pub name: String,
    pub resource_group: Option<String>,
}

impl From<&ArmId> for VmView {
    fn from(v: &ArmId) -> Self {
        VmView {
            id: v.as_str().to_string(),
            name: v.name().to_string(),
            resource_group: v.resource_group().map(str::to_string),
        }
    }
}

/// A half-open window `[start, end)`; null means unbounded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowView {
    #[serde(serialize_with = "ts::opt")]
    pub start: Option<DateTime<Utc>>,
    #[serde(serialize_with = "ts::opt")]
    pub end: Option<DateTime<Utc>>,
}

impl From<Window> for WindowView {
    fn from(w: Window) -> Self {
        WindowView {
            start: to_ts(w.start),
            end: to_ts(w.end),
        }
    }
}

/// One piece of evidence: what to look up to see why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EvidenceView {
    /// `snapshot`, `snapshot_absence`, `activity_write` or `activity_delete`.
    #[schema(value_type = String)]
    pub kind: EvidenceKind,
    /// Snapshot id, or Activity Log event key.
    pub id: String,
    #[serde(serialize_with = "ts::opt")]
    pub at: Option<DateTime<Utc>>,
    /// What this evidence says about the claim.
    pub role: String,
}

fn evidence(e: &EvidenceRef, role: String) -> EvidenceView {
    EvidenceView {
        kind: e.kind,
        id: e.id.to_string(),
        at: to_ts(e.at),
        role,
    }
}

/// The VM a NIC was attached to (or none) during part of a claim. Its
/// certain window runs from its first to its last sighting on the VM (the
/// claim's evidence); one on no VM whose certain window is empty, at the
/// claim's delete, says that the NIC was detached before it was deleted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttachmentView {
    /// Null: attached to no VM.
    pub vm: Option<VmView>,
    /// On this VM, proven: from the first to the last sighting on it.
    pub certain: WindowView,
    /// On this VM, not ruled out (VM changes are not NIC events: between
    /// the last sighting on one VM and the first on the next, either).
    pub possible: WindowView,
}

impl AttachmentView {
    fn new(a: &Attachment, within: Window) -> Self {
        AttachmentView {
            vm: a.vm.as_ref().map(VmView::from),
            certain: a.certain.into(),
            possible: Window {
                start: a.possible.start.max(within.start),
                end: a.possible.end.min(within.end),
            }
            .into(),
        }
    }
}

/// A claim: NIC n held the IP in one VNet, with both ends bounded, and the
/// VMs it was attached to meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimView {
    pub nic: NicView,
    pub vnet: Option<String>,
    pub subnet: Option<String>,
    /// The IP, or the prefix the NIC holds, as CIDR.
    pub ip: String,
    /// Ownership proven: from the latest possible start to the earliest possible end.
    pub certain: WindowView,
    /// Ownership not ruled out: from the earliest possible start to the
    /// latest possible end, bounded by other NICs' certain windows on the
    /// same IP in the same VNet (exclusivity).
    pub possible: WindowView,
    /// An event fixed the start.
    pub start_exact: bool,
    /// An event fixed the end.
    pub end_exact: bool,
    /// No evidence has ended the claim yet, nor another NIC's claim bounded it.
    pub open: bool,
    pub evidence: Vec<EvidenceView>,
    /// The VMs the NIC was attached to while it held the IP, oldest first
    /// (omitted from `now`, whose `vm` answers for the present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<AttachmentView>,
}

fn role(c: &Claim, e: &EvidenceRef) -> &'static str {
    if Some(e) == c.before.as_ref() {
        "before: did not hold the IP"
    } else if Some(e) == c.after.as_ref() {
        "after: no longer held the IP"
    } else if *e == c.first && *e == c.last {
        "held the IP (first and last sighting)"
    } else if *e == c.first {
        "held the IP (first sighting)"
    } else {
        "held the IP (last sighting)"
    }
}

/// The evidence at which a claim's certain window ends: its end event, or
/// its last sighting.
fn certain_end_evidence(c: &Claim) -> &EvidenceRef {
    match &c.after {
        Some(a) if c.end_exact => a,
        _ => &c.last,
    }
}

impl ClaimView {
    /// A claim as an answer names it: its possible window bounded by the
    /// other claims on its IP, and the evidence of those that bound it.
    pub fn of(o: &Owned<'_>) -> Self {
        Self::build(o, true)
    }

    /// [`ClaimView::of`], with or without the claim's attachments.
    fn build(o: &Owned<'_>, with_vms: bool) -> Self {
        let c = o.claim;
        let mut ev: Vec<EvidenceView> = c
            .evidence()
            .into_iter()
            .map(|e| evidence(e, role(c, e).to_string()))
            .collect();
        if let Some(by) = o.start_by {
            ev.push(evidence(
                certain_end_evidence(by),
                format!(
                    "before: {} held the IP until then, and one IP has one NIC at a time in a VNet",
                    by.nic_name
                ),
            ));
        }
        if let Some(by) = o.end_by {
            ev.push(evidence(
                &by.first,
                format!(
                    "after: {} held the IP from then, and one IP has one NIC at a time in a VNet",
                    by.nic_name
                ),
            ));
        }
        ev.sort_by_key(|e| e.at);
        ClaimView {
            nic: NicView {
                id: c.nic.as_str().to_string(),
                name: c.nic_name.clone(),
                mac: c.mac.as_ref().map(|m| m.as_str().to_string()),
                subscription: c.nic.subscription(),
                resource_group: c.nic.resource_group().map(str::to_string),
            },
            vnet: c.vnet.as_ref().map(|v| v.as_str().to_string()),
            subnet: c.subnet.as_ref().map(|v| v.as_str().to_string()),
            ip: c.key.ip.to_string(),
            certain: c.certain.into(),
            possible: o.possible.into(),
            start_exact: c.start_exact,
            end_exact: c.end_exact,
            open: o.is_open(),
            evidence: ev,
            vms: if with_vms {
                c.vms
                    .iter()
                    .map(|a| AttachmentView::new(a, o.possible))
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The VM of the NIC that held the IP at T: a second answer, never surer
/// than the NIC's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmAnswerView {
    pub status: Status,
    /// The VM (null with a status: attached to no VM; null when ambiguous).
    pub vm: Option<VmView>,
    /// The NIC was on this VM, proven / not ruled out.
    pub certain: Option<WindowView>,
    pub possible: Option<WindowView>,
    /// When ambiguous: every VM the NIC may have been attached to at T
    /// (null: none).
    pub candidates: Vec<Option<VmView>>,
}

impl From<&VmAnswer<'_>> for VmAnswerView {
    fn from(v: &VmAnswer<'_>) -> Self {
        VmAnswerView {
            status: v.status,
            vm: v.attachment.and_then(|a| a.vm.as_ref()).map(VmView::from),
            certain: v.attachment.map(|a| a.certain.into()),
            possible: v.possible.map(Into::into),
            candidates: v
                .candidates
                .iter()
                .map(|a| a.vm.as_ref().map(VmView::from))
                .collect(),
        }
    }
}

/// The answer at one instant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AnswerAt {
    #[serde(serialize_with = "ts::one")]
    pub at: DateTime<Utc>,
    /// Of the NIC holding the IP.
    pub status: Status,
    /// The NIC behind a confirmed, probable or possible answer.
    pub owner: Option<ClaimView>,
    /// The owner's VM at T, with a status of its own.
    pub vm: Option<VmAnswerView>,
    /// Every NIC that may have held the IP, when ambiguous.
    pub candidates: Vec<ClaimView>,
    /// Set when an open claim is only `possible` because its evidence is stale.
    pub stale: Option<StaleView>,
    /// Whether the scope was watched at T.
    pub watched: WatchedView,
}

impl AnswerAt {
    pub fn new(at: Micros, a: &Answer<'_>, watched: WatchedView) -> Self {
        AnswerAt {
            at: to_ts(at).unwrap_or_default(),
            status: a.status,
            owner: a.owner.as_ref().map(ClaimView::of),
            vm: a.vm.as_ref().map(VmAnswerView::from),
            candidates: a.candidates.iter().map(ClaimView::of).collect(),
            stale: a.stale.as_ref().map(StaleView::from),
            watched,
        }
    }

    /// The answer now: its claims' attachments and the subscriptions'
    /// coverage left out (`vm` says which VM now, `stale` what is old).
    pub fn now(at: Micros, a: &Answer<'_>, watched: WatchedView) -> Self {
        AnswerAt {
            at: to_ts(at).unwrap_or_default(),
            status: a.status,
            owner: a.owner.as_ref().map(|o| ClaimView::build(o, false)),
            vm: a.vm.as_ref().map(VmAnswerView::from),
            candidates: a
                .candidates
                .iter()
                .map(|o| ClaimView::build(o, false))
                .collect(),
            stale: a.stale.as_ref().map(StaleView::from),
            watched,
        }
    }
}

/// Whether the NIC, and its VM, held on from T to now.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct ContinuityView {
    pub nic: Continuity,
    pub vm: Continuity,
}

impl From<Held> for ContinuityView {
    fn from(h: Held) -> Self {
        ContinuityView {
            nic: h.nic,
            vm: h.vm,
        }
    }
}

/// Who owned an IP at T, who owns it now, and whether it is the same NIC throughout.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OwnerAnswer {
    pub ip: String,
    /// The scope the lookup was narrowed to, if any.
    pub scope: Option<String>,
    #[serde(flatten)]
    pub answer: AnswerAt,
    /// One sentence for a person.
    pub explanation: String,
    /// The same lookup now.
    pub now: Option<AnswerAt>,
    /// Whether the NIC that held the IP at T held it continuously until now,
    /// on the same VM: `yes` (proven), `probably` (nothing since says
    /// otherwise), `no`, or `unknown`.
    pub held_continuously: Option<Continuity>,
    /// The same for the NIC and for its VM apart.
    pub continuity: Option<ContinuityView>,
}

/// Every claim on an IP (or of a NIC) in a range, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    pub subject: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub claims: Vec<ClaimView>,
    /// How the subscriptions of these claims were watched over the range.
    pub coverage: Vec<CoverageView>,
}
