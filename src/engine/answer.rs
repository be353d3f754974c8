//! Claims of one IP → the answer for an instant: the NIC that held it, with
//! one of five statuses, and the VM that NIC was attached to, with a status
//! of its own.
//!
//! The rule, in order:
//! 1. every claim's possible window is bounded by the other claims on its
//!    (VNet, IP) ([`super::exclusive`]);
//! 2. the claims whose bounded window holds T are the candidates: none is
//!    `unknown`, several `ambiguous`;
//! 3. one is `confirmed` inside its certain window, `probable` after it while
//!    nothing has ended it, `possible` elsewhere ([`lone_status`]); and
//!    `probable` is only `possible` when its subscription's complete
//!    snapshots are stale at T ([`super::Watching::stale_at`]);
//! 4. the VM: the claim's attachments whose window holds T ([`vm_answer`]),
//!    never surer than the NIC.

use serde::{Deserialize, Serialize};

use super::{Attachment, Bounded, Claim, Micros, POS_INF, Stale, Watching, Window, exclusive};

/// How sure an answer is. `confirmed` and `probable` are the answers a
/// playbook may act on; `possible` and `ambiguous` say "look closer".
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// T lies in the certain window of exactly one claim and in no other
    /// claim's possible window.
    Confirmed,
    /// T lies after the last evidence of a claim that nothing has ended yet,
    /// in no other claim's possible window, and within its subscription's
    /// freshness bound.
    Probable,
    /// T lies in a gap of one claim bounded by contrary evidence (before its
    /// first sighting or after its last), or after the last sighting of an
    /// open claim whose subscription's evidence is stale; and in no other
    /// claim's possible window.
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

    /// The less sure of two statuses of one answer (a VM is never surer
    /// than its NIC).
    pub fn weaker(self, other: Status) -> Status {
        self.max(other)
    }
}

/// A claim as an answer names it: its possible window as exclusivity bounds
/// it, and the claims that bound it.
#[derive(Clone, Debug)]
pub struct Owned<'a> {
    pub claim: &'a Claim,
    pub possible: Window,
    /// Another NIC's claim whose certain end bounds the start.
    pub start_by: Option<&'a Claim>,
    /// Another NIC's claim whose certain start bounds the end.
    pub end_by: Option<&'a Claim>,
}

impl<'a> Owned<'a> {
    fn new(claims: &[&'a Claim], b: &Bounded, i: usize) -> Self {
        Owned {
            claim: claims[i],
            possible: b.possible,
            start_by: b.start_by.map(|j| claims[j]),
            end_by: b.end_by.map(|j| claims[j]),
        }
    }

    /// No evidence has ended the claim, nor bounded it by another's.
    pub fn is_open(&self) -> bool {
        self.possible.end == POS_INF
    }
}

/// The VM of the NIC that held the IP at T.
#[derive(Clone, Debug)]
pub struct VmAnswer<'a> {
    pub status: Status,
    /// The one attachment behind a confirmed, probable or possible answer
    /// (its `vm` is `None` when the NIC was on no VM).
    pub attachment: Option<&'a Attachment>,
    /// The possible window of that attachment, within the claim's.
    pub possible: Option<Window>,
    /// Every attachment that may have been the NIC's at T, when ambiguous.
    pub candidates: Vec<&'a Attachment>,
}

/// The answer for one instant.
#[derive(Clone, Debug)]
pub struct Answer<'a> {
    /// Of the NIC holding the IP.
    pub status: Status,
    /// The one claim behind a confirmed, probable or possible answer.
    pub owner: Option<Owned<'a>>,
    /// The owner's VM at T.
    pub vm: Option<VmAnswer<'a>>,
    /// Every claim whose possible window holds T, when ambiguous.
    pub candidates: Vec<Owned<'a>>,
    /// Why an open claim is only `possible`: its evidence is stale.
    pub stale: Option<Stale>,
}

/// The order of an ambiguous answer's candidates: earliest (bounded)
/// possible start first, then by claim key.
pub fn candidate_order(
    a_start: Micros,
    a: &Claim,
    b_start: Micros,
    b: &Claim,
) -> std::cmp::Ordering {
    (a_start, &a.key).cmp(&(b_start, &b.key))
}

/// What a claim answers at `t` when its (bounded) possible window holds `t`
/// and no other claim's does: `confirmed` inside its certain window,
/// `probable` after it while nothing has ended or bounded the claim (its
/// possible window is open), `possible` elsewhere.
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

/// [`lone_status`] of a claim of `subscription`, with "stale is not
/// probable": past the subscription's freshness bound, `possible`, and why.
#[inline]
pub fn owner_status(
    certain: Window,
    possible: Window,
    t: Micros,
    subscription: &str,
    watch: &dyn Watching,
) -> (Status, Option<Stale>) {
    match lone_status(certain, possible, t) {
        Status::Probable => match watch.stale_at(subscription, t) {
            Some(s) => (Status::Possible, Some(s)),
            None => (Status::Probable, None),
        },
        s => (s, None),
    }
}

/// The VM of `claim` at `t`, given the claim's bounded possible window and
/// the NIC's status: the attachments whose window (within the claim's)
/// holds `t`; one is answered as a claim is, never surer than the NIC.
pub fn vm_answer<'a>(claim: &'a Claim, possible: Window, t: Micros, nic: Status) -> VmAnswer<'a> {
    let within = |a: &Attachment| Window {
        start: a.possible.start.max(possible.start),
        end: a.possible.end.min(possible.end),
    };
    let mut hits = claim.vms.iter().filter(|a| within(a).contains(t));
    let (Some(first), second) = (hits.next(), hits.next()) else {
        return VmAnswer {
            status: Status::Unknown,
            attachment: None,
            possible: None,
            candidates: Vec::new(),
        };
    };
    match second {
        None => {
            let w = within(first);
            VmAnswer {
                status: lone_status(first.certain, w, t).weaker(nic),
                attachment: Some(first),
                possible: Some(w),
                candidates: Vec::new(),
            }
        }
        Some(second) => {
            let mut candidates = vec![first, second];
            candidates.extend(hits);
            VmAnswer {
                status: Status::Ambiguous,
                attachment: None,
                possible: None,
                candidates,
            }
        }
    }
}

/// Answers "who held this IP at `t`?" from the claims of that IP.
pub fn answer<'a>(claims: &[&'a Claim], t: Micros, watch: &dyn Watching) -> Answer<'a> {
    answer_where(claims, t, watch, |_| true)
}

/// [`answer`] among the claims `admit` lets through (the scope asked
/// about), every claim of the IP still bounding the others: another
/// subscription's NIC that certainly held the IP in the VNet rules the
/// admitted ones out as well.
pub fn answer_where<'a>(
    claims: &[&'a Claim],
    t: Micros,
    watch: &dyn Watching,
    admit: impl Fn(&Claim) -> bool,
) -> Answer<'a> {
    let bounds = exclusive(claims);
    answer_bounded(claims, &bounds, t, watch, admit)
}

/// A claim whose (bounded) possible window holds the time asked about, as
/// its caller holds it: a claim of a slice with its bounds, or a slot of
/// the claims index. [`verdict`] decides among them.
pub trait Alive<'a>: Copy {
    fn claim(self) -> &'a Claim;
    /// Its possible window as exclusivity bounds it.
    fn possible(self) -> Window;
    /// Its certain window (a holder may keep a copy beside the window).
    fn certain(self) -> Window {
        self.claim().certain
    }
}

/// What the claims alive at a time answer.
#[derive(Clone, Debug)]
pub enum Verdict<'a, T> {
    /// None is alive: `unknown`.
    Unknown,
    /// One is: its status (stale is not probable) and its VM's.
    Lone {
        owner: T,
        status: Status,
        stale: Option<Stale>,
        vm: VmAnswer<'a>,
    },
    /// Several are: `ambiguous`, the candidates in [`candidate_order`].
    Ambiguous(Vec<T>),
}

/// The answer rule, the one every answer follows (a lookup, a batch item,
/// an enriched flow end): among the claims `alive` at `t` (those in scope
/// whose bounded possible window holds `t`), none is `unknown`, one answers
/// by [`owner_status`] with its VM by [`vm_answer`], several are
/// `ambiguous`.
pub fn verdict<'a, T: Alive<'a>>(
    mut alive: impl Iterator<Item = T>,
    t: Micros,
    watch: &dyn Watching,
) -> Verdict<'a, T> {
    let Some(first) = alive.next() else {
        return Verdict::Unknown;
    };
    let Some(second) = alive.next() else {
        let (c, possible) = (first.claim(), first.possible());
        let (status, stale) = owner_status(first.certain(), possible, t, c.subscription(), watch);
        return Verdict::Lone {
            owner: first,
            status,
            stale,
            vm: vm_answer(c, possible, t, status),
        };
    };
    let mut all = vec![first, second];
    all.extend(alive);
    all.sort_by(|a, b| {
        candidate_order(a.possible().start, a.claim(), b.possible().start, b.claim())
    });
    Verdict::Ambiguous(all)
}

/// A claim of a slice, with its bounds.
#[derive(Clone, Copy)]
struct Of<'a> {
    i: usize,
    claim: &'a Claim,
    possible: Window,
}

impl<'a> Alive<'a> for Of<'a> {
    fn claim(self) -> &'a Claim {
        self.claim
    }
    fn possible(self) -> Window {
        self.possible
    }
}

/// [`answer_where`] with the claims' bounds already worked out.
pub fn answer_bounded<'a>(
    claims: &[&'a Claim],
    bounds: &[Bounded],
    t: Micros,
    watch: &dyn Watching,
    admit: impl Fn(&Claim) -> bool,
) -> Answer<'a> {
    let alive = (0..claims.len())
        .filter(|&i| bounds[i].possible.contains(t) && admit(claims[i]))
        .map(|i| Of {
            i,
            claim: claims[i],
            possible: bounds[i].possible,
        });
    match verdict(alive, t, watch) {
        Verdict::Unknown => Answer {
            status: Status::Unknown,
            owner: None,
            vm: None,
            candidates: Vec::new(),
            stale: None,
        },
        Verdict::Lone {
            owner,
            status,
            stale,
            vm,
        } => Answer {
            status,
            vm: Some(vm),
            owner: Some(Owned::new(claims, &bounds[owner.i], owner.i)),
            candidates: Vec::new(),
            stale,
        },
        Verdict::Ambiguous(all) => Answer {
            status: Status::Ambiguous,
            owner: None,
            vm: None,
            candidates: all
                .into_iter()
                .map(|o| Owned::new(claims, &bounds[o.i], o.i))
                .collect(),
            stale: None,
        },
    }
}

/// Did the NIC (and its VM) that held the IP at T hold it continuously
/// until now?
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Continuity {
    /// Proven: certain windows cover every instant from T to now.
    Yes,
    /// Evidence covers T up to the last sighting and nothing since says
    /// otherwise.
    Probably,
    /// The evidence cannot tell (gaps, or several candidates).
    Unknown,
    /// Another NIC held it in between, the NIC's claim ended, or the NIC
    /// moved to another VM.
    No,
}

impl Continuity {
    /// Both held: the less sure of two.
    pub fn and(self, other: Continuity) -> Continuity {
        self.max(other)
    }
}

/// Continuity of the NIC and of its VM, from T to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub nic: Continuity,
    pub vm: Continuity,
}

impl Held {
    /// Both: what a playbook about to isolate the VM needs.
    pub fn both(&self) -> Continuity {
        self.nic.and(self.vm)
    }
}

/// Whether the owner at `t` (a claim of `claims`, with its bounded window)
/// held the IP, and stayed on the same VM, from `t` until `now`.
pub fn continuity(
    owner: &Owned<'_>,
    claims: &[&Claim],
    t: Micros,
    now: Micros,
    watch: &dyn Watching,
) -> Held {
    let unknown = Held {
        nic: Continuity::Unknown,
        vm: Continuity::Unknown,
    };
    if now < t {
        return unknown;
    }
    let c = owner.claim;
    let same: Vec<&Claim> = claims
        .iter()
        .copied()
        .filter(|x| x.key.scope == c.key.scope && x.key.ip == c.key.ip)
        .collect();
    let bounds = exclusive(&same);
    let others = || {
        same.iter()
            .zip(&bounds)
            .filter(|(x, _)| x.key.nic != c.key.nic)
    };
    // Another NIC proven on the IP in between: no.
    if others().any(|(x, _)| {
        x.certain.start < x.certain.end && x.certain.start <= now && t < x.certain.end
    }) {
        return Held {
            nic: Continuity::No,
            vm: Continuity::No,
        };
    }
    let contested = others().any(|(_, b)| b.possible.start <= now && t < b.possible.end);
    let nic = if !c.certain.contains(t) {
        // T itself is only probable or possible: no surer than that.
        if owner.is_open()
            && t >= c.certain.end
            && !contested
            && watch.stale_at(c.subscription(), now).is_none()
        {
            Continuity::Probably
        } else {
            Continuity::Unknown
        }
    } else if c.certain.contains(now) {
        if contested {
            Continuity::Unknown
        } else {
            Continuity::Yes
        }
    } else if now < owner.possible.end {
        // now lies after the claim's last sighting: open, or ending in a gap.
        if owner.is_open() && !contested && watch.stale_at(c.subscription(), now).is_none() {
            Continuity::Probably
        } else {
            Continuity::Unknown
        }
    } else {
        Continuity::No
    };
    let vm = vm_continuity(c, owner.possible, t, now, nic);
    Held { nic, vm }
}

/// Whether the NIC stayed on its VM at `t` until `now` (never surer than
/// the NIC's own continuity).
fn vm_continuity(
    c: &Claim,
    possible: Window,
    t: Micros,
    now: Micros,
    nic: Continuity,
) -> Continuity {
    if nic == Continuity::No {
        return Continuity::No;
    }
    let at_t = vm_answer(c, possible, t, super::Status::Confirmed);
    let Some(a) = at_t.attachment else {
        return Continuity::Unknown;
    };
    // A later attachment to another VM, proven before now: it moved.
    let moved = c.vms.iter().any(|x| {
        x.vm_key() != a.vm_key()
            && x.certain.start < x.certain.end
            && x.certain.start > a.certain.start
            && x.certain.start <= now
    });
    if moved {
        return Continuity::No;
    }
    let own = if a.certain.contains(t) && a.certain.contains(now) {
        Continuity::Yes
    } else if a.certain.contains(t)
        && std::ptr::eq(a, c.vms.last().expect("attachments"))
        && now >= a.certain.end
    {
        Continuity::Probably
    } else {
        Continuity::Unknown
    };
    own.and(nic)
}
