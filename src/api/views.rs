//! The JSON shapes of answers: what a playbook or a person reads, and the
//! same in words for the command line.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{
    Answer, Attachment, Claim, Complete, Continuity, Coverage, EvidenceKind, EvidenceRef, Held,
    Micros, NEG_INF, Owned, POS_INF, Stale, Status, VmAnswer, Window,
};
use crate::model::ArmId;
use crate::store::to_ts;

/// Timestamps as RFC 3339 UTC, microseconds when present (`2025-06-02T10:00:00.000001Z`),
/// written without going through `chrono`'s formatter: an answer holds a
/// dozen of them, and formatting them was a tenth of a lookup's time.
mod ts {
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

/// A complete snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SnapshotRef {
    pub id: String,
    #[serde(serialize_with = "ts::opt")]
    pub taken_at: Option<DateTime<Utc>>,
}

impl From<&Complete> for SnapshotRef {
    fn from(c: &Complete) -> Self {
        SnapshotRef {
            id: c.id.to_string(),
            taken_at: to_ts(c.at),
        }
    }
}

/// Why an open claim is only `possible`: stale evidence.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StaleView {
    pub reason: String,
    /// The subscription's latest complete snapshot (null: none ever).
    pub latest_complete_snapshot: Option<SnapshotRef>,
    /// How far T lies past it.
    pub age_seconds: Option<f64>,
    /// The subscription's freshness bound.
    pub bound_seconds: f64,
}

fn secs(us: Micros) -> f64 {
    us as f64 / 1e6
}

impl From<&Stale> for StaleView {
    fn from(s: &Stale) -> Self {
        StaleView {
            reason: s.reason(),
            latest_complete_snapshot: s.horizon.as_ref().map(SnapshotRef::from),
            age_seconds: s.age.map(secs),
            bound_seconds: secs(s.bound),
        }
    }
}

/// How one subscription was watched at T.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SubscriptionWatch {
    pub subscription: String,
    /// Complete snapshots lie within the freshness bound on both sides of T
    /// (after the latest: T within the bound of it).
    pub watched: bool,
    /// The complete snapshots at or before T, and at or after it.
    pub before: Option<SnapshotRef>,
    pub after: Option<SnapshotRef>,
    pub bound_seconds: Option<f64>,
    /// The Activity Log's reach: its earliest and latest event received.
    pub activity_log: Option<WindowView>,
}

impl SubscriptionWatch {
    pub fn new(subscription: &str, c: Option<&Coverage>, t: Micros) -> Self {
        let (before, after) = c.map(|c| c.around(t)).unwrap_or((None, None));
        SubscriptionWatch {
            subscription: subscription.to_string(),
            watched: c.is_some_and(|c| c.watched_at(t)),
            before: before.map(SnapshotRef::from),
            after: after.map(SnapshotRef::from),
            bound_seconds: c.filter(|c| c.bound > 0).map(|c| secs(c.bound)),
            activity_log: c
                .and_then(|c| c.activity)
                .map(|(a, b)| WindowView::from(Window { start: a, end: b })),
        }
    }
}

/// Whether the scope of a lookup was watched at T: `unknown` says "nobody
/// held it" only where it was.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WatchedView {
    /// Every subscription of the scope was watched at T.
    pub watched: bool,
    /// Subscriptions in the scope, and how many of them were not watched.
    pub subscriptions_in_scope: usize,
    pub unwatched: usize,
    /// Each subscription's coverage (at most 10, unwatched first; left out
    /// of the answer `now`, whose `stale` says what is old).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscriptions: Vec<SubscriptionWatch>,
}

/// Most subscriptions a [`WatchedView`] lists.
const WATCH_LISTED: usize = 10;

impl WatchedView {
    /// Only the counts, from whether each subscription in scope was watched.
    pub fn counts(watched: impl Iterator<Item = bool>) -> Self {
        let (mut n, mut unwatched) = (0, 0);
        for w in watched {
            n += 1;
            unwatched += usize::from(!w);
        }
        WatchedView {
            watched: n > 0 && unwatched == 0,
            subscriptions_in_scope: n,
            unwatched,
            subscriptions: Vec::new(),
        }
    }

    pub fn new(mut subs: Vec<SubscriptionWatch>) -> Self {
        subs.sort_by(|a, b| (a.watched, &a.subscription).cmp(&(b.watched, &b.subscription)));
        let n = subs.len();
        let unwatched = subs.iter().filter(|s| !s.watched).count();
        subs.truncate(WATCH_LISTED);
        WatchedView {
            watched: n > 0 && unwatched == 0,
            subscriptions_in_scope: n,
            unwatched,
            subscriptions: subs,
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

fn fmt_ts(m: Micros) -> String {
    match m {
        NEG_INF => "the beginning of the evidence".to_string(),
        POS_INF => "now".to_string(),
        m => to_ts(m)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_default(),
    }
}

/// A window in words. Windows are half-open, `[start, end)`, and their ends
/// are instants of evidence, or next to them: a certain window ends just
/// after its last sighting (said "through" that sighting) unless an event
/// fixed its end; a possible window starts just after the contrary evidence
/// before it (said "after" that evidence) unless an event fixed its start.
fn span(w: Window, start_after: bool, end_through: bool) -> String {
    let start = match w.start {
        NEG_INF => "from the beginning of the evidence".to_string(),
        s if start_after => format!("after {}", fmt_ts(s.saturating_sub(1))),
        s => format!("from {}", fmt_ts(s)),
    };
    let end = match w.end {
        POS_INF => "until now".to_string(),
        e if end_through => format!("through {}", fmt_ts(e.saturating_sub(1))),
        e => format!("until {}", fmt_ts(e)),
    };
    format!("{start} {end}")
}

/// The VM answer in words.
fn vm_words(v: &VmAnswer<'_>) -> String {
    let name = |a: &Attachment| {
        a.vm.as_ref()
            .map(|v| format!("VM {}", v.name()))
            .unwrap_or_else(|| "no VM".to_string())
    };
    match (v.status, v.attachment) {
        (Status::Confirmed, Some(a)) => format!("Attached to {} (proven).", name(a)),
        (Status::Probable, Some(a)) => format!("Attached to {} when last seen.", name(a)),
        (Status::Possible, Some(a)) => format!("Possibly attached to {}.", name(a)),
        (Status::Ambiguous, _) => {
            let names: Vec<String> = v.candidates.iter().map(|a| name(a)).collect();
            format!(
                "Attached to {} (VM changes are not NIC events).",
                names.join(" or ")
            )
        }
        _ => "Its VM is not known.".to_string(),
    }
}

/// One sentence that says what the answer means.
pub fn explain(ip: &str, a: &Answer<'_>, watched: &WatchedView) -> String {
    let vm = a.vm.as_ref().map(vm_words).unwrap_or_default();
    match (a.status, &a.owner) {
        (Status::Confirmed, Some(o)) => format!(
            "{} held {ip}: proven {}. {vm}",
            o.claim.nic_name,
            span(o.claim.certain, false, !o.claim.end_exact),
        ),
        (Status::Probable, Some(o)) => format!(
            "{} held {ip} when last seen at {}, and no evidence since says otherwise. {vm}",
            o.claim.nic_name,
            fmt_ts(o.claim.last.at)
        ),
        (Status::Possible, Some(o)) if a.stale.is_some() => format!(
            "{} held {ip} when last seen at {}, but {}. {vm}",
            o.claim.nic_name,
            fmt_ts(o.claim.last.at),
            a.stale.as_ref().map(Stale::reason).unwrap_or_default(),
        ),
        (Status::Possible, Some(o)) => format!(
            "{} may have held {ip}: it is only known to have held it {}, and may have {}. {vm}",
            o.claim.nic_name,
            span(o.claim.certain, false, !o.claim.end_exact),
            span(o.possible, !o.claim.start_exact && o.start_by.is_none(), false),
        ),
        (Status::Ambiguous, _) => format!(
            "{} NICs may have held {ip} at that time; look at the candidates' windows and evidence.",
            a.candidates.len()
        ),
        _ if watched.watched => format!(
            "No evidence places {ip} on any NIC at that time, and complete snapshots of the scope on both sides of it would have shown one."
        ),
        _ => format!(
            "No evidence places {ip} on any NIC at that time, but the scope was not watched then ({} of {} subscriptions without complete snapshots close enough): nobody may have been looking.",
            watched.unwatched, watched.subscriptions_in_scope
        ),
    }
    .trim_end()
    .to_string()
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

/// A subscription's watch over a range: its complete snapshots there, and
/// the gaps between them longer than its freshness bound (unwatched).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CoverageView {
    pub subscription: String,
    pub complete_snapshots: usize,
    pub bound_seconds: Option<f64>,
    /// Stretches of the range in which the subscription was not watched.
    pub unwatched: Vec<WindowView>,
    pub activity_log: Option<WindowView>,
}

impl CoverageView {
    /// At most this many unwatched stretches are listed.
    const LISTED: usize = 50;

    pub fn new(subscription: &str, c: Option<&Coverage>, range: Window) -> Self {
        let Some(c) = c else {
            return CoverageView {
                subscription: subscription.to_string(),
                complete_snapshots: 0,
                bound_seconds: None,
                unwatched: vec![range.into()],
                activity_log: None,
            };
        };
        let inside = c.completes.iter().filter(|x| range.contains(x.at)).count();
        CoverageView {
            subscription: subscription.to_string(),
            complete_snapshots: inside,
            bound_seconds: Some(secs(c.bound)),
            unwatched: unwatched(c, range)
                .take(Self::LISTED)
                .map(Into::into)
                .collect(),
            activity_log: c.activity.map(|(a, b)| Window { start: a, end: b }.into()),
        }
    }
}

/// The stretches of `range` in which [`Coverage::watched_at`] is false:
/// before the first complete snapshot, between two further apart than the
/// bound, and past the latest by more than the bound.
fn unwatched(c: &Coverage, range: Window) -> impl Iterator<Item = Window> + '_ {
    let b = c.bound;
    let first = c.completes.first().map(|x| Window {
        start: NEG_INF,
        end: x.at,
    });
    let gaps = c
        .completes
        .windows(2)
        .filter(move |w| w[1].at - w[0].at > b)
        .map(|w| Window {
            start: w[0].at + 1,
            end: w[1].at,
        });
    let last = c.completes.last().map(|x| Window {
        start: x.at.saturating_add(b).saturating_add(1),
        end: POS_INF,
    });
    let none = c.completes.is_empty().then_some(Window {
        start: NEG_INF,
        end: POS_INF,
    });
    first
        .into_iter()
        .chain(gaps)
        .chain(last)
        .chain(none)
        .filter_map(move |w| {
            let x = Window {
                start: w.start.max(range.start),
                end: w.end.min(range.end),
            };
            (x.start < x.end).then_some(x)
        })
}

fn window_text(w: &WindowView) -> String {
    let f = |t: &Option<DateTime<Utc>>, inf: &str| {
        t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| inf.to_string())
    };
    format!("[{}, {})", f(&w.start, "-inf"), f(&w.end, "+inf"))
}

fn claim_text(c: &ClaimView) -> String {
    let mut s = format!(
        "  NIC  {} ({})\n  VNet {}\n  IP   {}\n  certain  {}\n  possible {}\n",
        c.nic.name,
        c.nic.id,
        c.vnet.as_deref().unwrap_or("unknown"),
        c.ip,
        window_text(&c.certain),
        window_text(&c.possible),
    );
    for a in &c.vms {
        s.push_str(&format!(
            "  VM   {}: certain {} possible {}\n",
            a.vm.as_ref().map(|v| v.id.as_str()).unwrap_or("none"),
            window_text(&a.certain),
            window_text(&a.possible),
        ));
    }
    for e in &c.evidence {
        s.push_str(&format!(
            "  evidence {} {} at {} ({})\n",
            e.kind.as_str(),
            e.id,
            e.at.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
                .unwrap_or_default(),
            e.role
        ));
    }
    s
}

fn name_of(c: &Continuity) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A human summary of an owner answer, for the command line.
pub fn render_answer(a: &OwnerAnswer) -> String {
    let mut s = format!(
        "{} at {}: {}\n{}\n",
        a.ip,
        a.answer.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        a.answer.status.as_str(),
        a.explanation
    );
    if let Some(o) = &a.answer.owner {
        s.push_str(&claim_text(o));
    }
    if let Some(v) = &a.answer.vm {
        let vms: Vec<String> = match &v.vm {
            Some(vm) => vec![vm.name.clone()],
            None if v.candidates.is_empty() => vec!["none".into()],
            None => v
                .candidates
                .iter()
                .map(|c| c.as_ref().map_or("none".to_string(), |c| c.name.clone()))
                .collect(),
        };
        s.push_str(&format!("VM: {} {}\n", v.status.as_str(), vms.join(" or ")));
    }
    for (i, c) in a.answer.candidates.iter().enumerate() {
        s.push_str(&format!("candidate {}:\n{}", i + 1, claim_text(c)));
    }
    if let Some(st) = &a.answer.stale {
        s.push_str(&format!("stale: {}\n", st.reason));
    }
    let w = &a.answer.watched;
    s.push_str(&format!(
        "watched: {} ({} of {} subscriptions in scope unwatched)\n",
        if w.watched { "yes" } else { "no" },
        w.unwatched,
        w.subscriptions_in_scope
    ));
    if let Some(now) = &a.now {
        let who = now
            .owner
            .as_ref()
            .map(|o| o.nic.name.as_str())
            .unwrap_or("-");
        s.push_str(&format!("now: {} {}\n", now.status.as_str(), who));
    }
    if let Some(c) = a.held_continuously {
        s.push_str(&format!("held continuously until now: {}", name_of(&c)));
        if let Some(d) = &a.continuity {
            s.push_str(&format!(
                " (NIC {}, VM {})",
                name_of(&d.nic),
                name_of(&d.vm)
            ));
        }
        s.push('\n');
    }
    s
}

/// A human summary of a history, for the command line.
pub fn render_history(h: &HistoryView) -> String {
    let mut s = format!("{}: {} claim(s)\n", h.subject, h.claims.len());
    for c in &h.claims {
        s.push_str(&claim_text(c));
        s.push('\n');
    }
    for c in &h.coverage {
        s.push_str(&format!(
            "subscription {}: {} complete snapshot(s) in range, {} unwatched stretch(es)\n",
            c.subscription,
            c.complete_snapshots,
            c.unwatched.len()
        ));
        for w in &c.unwatched {
            s.push_str(&format!("  unwatched {}\n", window_text(w)));
        }
    }
    s
}
