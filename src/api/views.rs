//! The JSON shapes of answers: what a playbook or a person reads.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::{
    Claim, Continuity, EvidenceKind, EvidenceRef, Micros, NEG_INF, POS_INF, Status, Window,
};
use crate::index::Lookup;
use crate::store::to_ts;

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

/// The VM a NIC was attached to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VmView {
    pub id: String,
    pub name: String,
    pub resource_group: Option<String>,
}

/// A half-open window `[start, end)`; null means unbounded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WindowView {
    pub start: Option<DateTime<Utc>>,
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
    pub at: Option<DateTime<Utc>>,
    /// What this evidence says about the claim.
    pub role: String,
}

/// A claim: NIC n held the IP in one VNet, with both ends bounded.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClaimView {
    pub nic: NicView,
    /// The VM the NIC was attached to, or null when none.
    pub vm: Option<VmView>,
    pub vnet: Option<String>,
    pub subnet: Option<String>,
    /// The IP, or the prefix the NIC holds, as CIDR.
    pub ip: String,
    /// Ownership proven: from the latest possible start to the earliest possible end.
    pub certain: WindowView,
    /// Ownership not ruled out: from the earliest possible start to the latest possible end.
    pub possible: WindowView,
    /// An event fixed the start.
    pub start_exact: bool,
    /// An event fixed the end.
    pub end_exact: bool,
    /// No evidence has ended the claim yet.
    pub open: bool,
    pub evidence: Vec<EvidenceView>,
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

impl From<&Claim> for ClaimView {
    fn from(c: &Claim) -> Self {
        ClaimView {
            nic: NicView {
                id: c.nic.as_str().to_string(),
                name: c.nic_name.clone(),
                mac: c.mac.as_ref().map(|m| m.as_str().to_string()),
                subscription: c.nic.subscription(),
                resource_group: c.nic.resource_group().map(str::to_string),
            },
            vm: c.vm.as_ref().map(|v| VmView {
                id: v.as_str().to_string(),
                name: v.name().to_string(),
                resource_group: v.resource_group().map(str::to_string),
            }),
            vnet: c.vnet.as_ref().map(|v| v.as_str().to_string()),
            subnet: c.subnet.as_ref().map(|v| v.as_str().to_string()),
            ip: c.key.ip.to_string(),
            certain: c.certain.into(),
            possible: c.possible.into(),
            start_exact: c.start_exact,
            end_exact: c.end_exact,
            open: c.is_open(),
            evidence: c
                .evidence()
                .into_iter()
                .map(|e| EvidenceView {
                    kind: e.kind,
                    id: e.id.to_string(),
                    at: to_ts(e.at),
                    role: role(c, e).to_string(),
                })
                .collect(),
        }
    }
}

/// The answer at one instant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AnswerAt {
    pub at: DateTime<Utc>,
    pub status: Status,
    /// The NIC behind a confirmed, probable or possible answer.
    pub owner: Option<ClaimView>,
    /// Every NIC that may have held the IP, when ambiguous.
    pub candidates: Vec<ClaimView>,
}

impl AnswerAt {
    pub fn new(at: Micros, l: &Lookup) -> Self {
        AnswerAt {
            at: to_ts(at).unwrap_or_default(),
            status: l.status,
            owner: l.owner.as_ref().map(|e| ClaimView::from(&e.claim)),
            candidates: l
                .candidates
                .iter()
                .map(|e| ClaimView::from(&e.claim))
                .collect(),
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
    /// Whether the NIC that held the IP at T held it continuously until now:
    /// `yes` (proven), `probably` (nothing since says otherwise), `no`, or `unknown`.
    pub held_continuously: Option<Continuity>,
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

/// One sentence that says what the answer means.
pub fn explain(ip: &str, l: &Lookup) -> String {
    match (l.status, &l.owner) {
        (Status::Confirmed, Some(c)) => format!(
            "{} ({}) held {ip}: proven {}.",
            c.nic_name,
            c.vm.as_ref()
                .map(|v| format!("VM {}", v.name()))
                .unwrap_or_else(|| "no VM".into()),
            span(c.certain, false, !c.end_exact),
        ),
        (Status::Probable, Some(c)) => format!(
            "{} held {ip} when last seen at {}, and no evidence since says otherwise.",
            c.nic_name,
            fmt_ts(c.last.at)
        ),
        (Status::Possible, Some(c)) => format!(
            "{} may have held {ip}: it is only known to have held it {}, and may have {}.",
            c.nic_name,
            span(c.certain, false, !c.end_exact),
            span(c.possible, !c.start_exact, false),
        ),
        (Status::Ambiguous, _) => format!(
            "{} NICs may have held {ip} at that time; look at the candidates' windows and evidence.",
            l.candidates.len()
        ),
        _ => format!("No evidence places {ip} on any NIC at that time."),
    }
}

/// Every claim on an IP in a range, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    pub subject: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub claims: Vec<ClaimView>,
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
        "  NIC  {} ({})\n  VM   {}\n  VNet {}\n  IP   {}\n  certain  {}\n  possible {}\n",
        c.nic.name,
        c.nic.id,
        c.vm.as_ref().map(|v| v.id.as_str()).unwrap_or("none"),
        c.vnet.as_deref().unwrap_or("unknown"),
        c.ip,
        window_text(&c.certain),
        window_text(&c.possible),
    );
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
    for (i, c) in a.answer.candidates.iter().enumerate() {
        s.push_str(&format!("candidate {}:\n{}", i + 1, claim_text(c)));
    }
    if let Some(now) = &a.now {
        let who = now
            .owner
            .as_ref()
            .map(|o| o.nic.name.as_str())
            .unwrap_or("-");
        s.push_str(&format!("now: {} {}\n", now.status.as_str(), who));
    }
    if let Some(c) = a.held_continuously {
        s.push_str(&format!(
            "held continuously until now: {}\n",
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
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
    s
}
