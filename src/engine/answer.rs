//! Claims of one IP → the answer for an instant, with one of five statuses.

use serde::{Deserialize, Serialize};

use super::{Claim, Micros, POS_INF, Window};

/// How sure an answer is. `confirmed` and `probable` are the answers a
/// playbook may act on; `possible` and `ambiguous` say "look closer".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// T lies in the certain window of exactly one claim and in no other
    /// claim's possible window.
    Confirmed,
    /// T lies after the last evidence of a claim that nothing has ended yet,
    /// and in no other claim's possible window.
    Probable,
    /// T lies in a gap of one claim bounded by contrary evidence (before its
    /// first sighting or after its last), and in no other claim's possible window.
    Possible,
    /// T lies in the possible windows of two or more claims.
    Ambiguous,
    /// No claim covers T.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Confirmed => "confirmed",
            Status::Probable => "probable",
            Status::Possible => "possible",
            Status::Ambiguous => "ambiguous",
            Status::Unknown => "unknown",
        }
    }

    /// Answers a playbook may act on.
    pub fn is_actionable(self) -> bool {
        matches!(self, Status::Confirmed | Status::Probable)
    }
}

/// The answer for one instant.
#[derive(Clone, Debug)]
pub struct Answer<'a> {
    pub status: Status,
    /// The one claim behind a confirmed, probable or possible answer.
    pub owner: Option<&'a Claim>,
    /// Every claim whose possible window holds T, when ambiguous.
    pub candidates: Vec<&'a Claim>,
}

/// The order of an ambiguous answer's candidates: earliest possible start
/// first, then by claim key.
pub fn candidate_order(a: &Claim, b: &Claim) -> std::cmp::Ordering {
    (a.possible.start, &a.key).cmp(&(b.possible.start, &b.key))
}

/// What a claim answers at `t` when its possible window holds `t` and no
/// other claim's does: `confirmed` inside its certain window, `probable`
/// after it while nothing has ended the claim (its possible window is
/// open), `possible` elsewhere.
#[inline]
pub fn lone_status(certain: Window, possible: Window, t: Micros) -> Status {
    if certain.contains(t) {
        Status::Confirmed
    } else if possible.end == POS_INF && t >= certain.end {
        Status::Probable
    } else {
        Status::Possible
    }
}

/// Answers "who held this IP at `t`?" from the claims of that IP (already
/// narrowed to the scope asked about, if any).
pub fn answer<'a, I>(claims: I, t: Micros) -> Answer<'a>
where
    I: IntoIterator<Item = &'a Claim>,
{
    let mut hits: Vec<&'a Claim> = claims
        .into_iter()
        .filter(|c| c.possible.contains(t))
        .collect();
    match hits.len() {
        0 => Answer {
            status: Status::Unknown,
            owner: None,
            candidates: Vec::new(),
        },
        1 => {
            let c = hits[0];
            Answer {
                status: lone_status(c.certain, c.possible, t),
                owner: Some(c),
                candidates: Vec::new(),
            }
        }
        _ => {
            hits.sort_by(|a, b| candidate_order(a, b));
            Answer {
                status: Status::Ambiguous,
                owner: None,
                candidates: hits,
            }
        }
    }
}

/// Did the NIC that held the IP at `t` hold it continuously until `now`?
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Continuity {
    /// Proven: the NIC's certain windows cover every instant from T to now.
    Yes,
    /// Evidence covers T up to the NIC's last sighting and nothing since says
    /// otherwise.
    Probably,
    /// Another NIC held it in between, or the NIC's claim ended.
    No,
    /// The evidence cannot tell (gaps, or several candidates).
    Unknown,
}

/// Walks the chain of `owner`'s claims (same NIC, scope and IP; a change of
/// VM continues the chain) from the one holding `t` towards `now`, and
/// compares with the other NICs' claims of the IP.
pub fn continuity(owner: &Claim, claims: &[&Claim], t: Micros, now: Micros) -> Continuity {
    if now < t {
        return Continuity::Unknown;
    }
    let same_ip: Vec<&Claim> = claims
        .iter()
        .copied()
        .filter(|c| c.key.scope == owner.key.scope && c.key.ip == owner.key.ip)
        .collect();
    let others = || same_ip.iter().filter(|c| c.key.nic != owner.key.nic);
    if others()
        .any(|c| c.certain.start < c.certain.end && c.certain.start <= now && t < c.certain.end)
    {
        return Continuity::No;
    }
    let contested = others().any(|c| c.possible.start <= now && t < c.possible.end);
    let mut own: Vec<&Claim> = same_ip
        .iter()
        .copied()
        .filter(|c| c.key.nic == owner.key.nic)
        .collect();
    own.sort_by_key(|c| c.possible.start);
    let Some(mut idx) = own.iter().position(|c| c.possible.contains(t)) else {
        return Continuity::Unknown;
    };
    if !own[idx].certain.contains(t) {
        // T itself is only probable (after the last sighting of an open
        // claim) or possible (in a gap): continuity is no surer than that.
        let c = own[idx];
        return if c.is_open() && t >= c.certain.end && !contested {
            Continuity::Probably
        } else {
            Continuity::Unknown
        };
    }
    loop {
        let c = own[idx];
        if c.certain.contains(now) {
            return if contested {
                Continuity::Unknown
            } else {
                Continuity::Yes
            };
        }
        if now < c.possible.end {
            // now lies after the claim's last sighting: open, or ending in a gap.
            return if c.is_open() && !contested {
                Continuity::Probably
            } else {
                Continuity::Unknown
            };
        }
        // The claim ended before now: continue only into a claim of the same
        // NIC that picks up where it stopped (a VM change, or touching windows).
        match own.get(idx + 1) {
            Some(n) if n.certain.start <= c.certain.end || c.after.as_ref() == Some(&n.first) => {
                idx += 1
            }
            _ => return Continuity::No,
        }
    }
}
