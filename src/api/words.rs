//! Answers in words: the one-sentence explanation an answer carries, and
//! the summaries the command line prints.

use chrono::{DateTime, SecondsFormat, Utc};

use super::views::{ClaimView, HistoryView, OwnerAnswer, WindowView};
use super::watch::WatchedView;
use crate::engine::{
    Answer, Attachment, Continuity, Micros, NEG_INF, POS_INF, Stale, Status, VmAnswer, Window,
};
use crate::store::to_ts;

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
