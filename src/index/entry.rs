//! What the index holds of a claim: the claim with its NIC and VMs as
//! answers name them ([`Entry`]), and its slot under the IP ([`Slot`]);
//! and which claims a lookup considers ([`Scope`]).

use std::sync::Arc;

use crate::engine::{self, Claim, EvidenceKind, Micros, Window};
use crate::model::{NicInfo, VmInfo};

/// A claim as the index holds it, with the NIC and its VMs as answers
/// name them, built once (so an enriched tuple costs no allocation).
#[derive(Debug)]
pub struct Entry {
    pub claim: Claim,
    /// The NIC in the claim's VNet.
    pub info: Arc<NicInfo>,
    /// Each attachment's VM (`None`: no VM), in the order of `claim.vms`.
    pub vms: Vec<Option<Arc<VmInfo>>>,
}

impl std::ops::Deref for Entry {
    type Target = Claim;
    fn deref(&self) -> &Claim {
        &self.claim
    }
}

/// Which claims a lookup considers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Scope {
    /// Every VNet: several VNets holding the IP make the answer ambiguous.
    #[default]
    Any,
    /// One VNet, by its lower-cased id.
    Vnet(String),
    /// One subscription, by its lower-cased id.
    Subscription(String),
}

impl Scope {
    pub fn admits(&self, c: &Claim) -> bool {
        match self {
            Scope::Any => true,
            Scope::Vnet(v) => *c.key.scope == **v,
            Scope::Subscription(s) => c.subscription() == s,
        }
    }
}

/// A claim on an IP as `by_ip` holds it: its possible window inline, as
/// exclusivity bounds it, so a lookup at a time passes over the claims it
/// rules out without reading them, and what an enrichment answer reads of
/// the claim it finds (certain window, last evidence, NIC), so that the
/// claim itself is read only for its VM or to order the candidates of a
/// tie. Its scope and subscription are interned ([`Inner::names`]) for the
/// same reason. One cache line.
pub struct Slot {
    pub(crate) from: Micros,
    pub(crate) until: Micros,
    pub(crate) certain: Window,
    pub(crate) info: Arc<NicInfo>,
    pub(crate) entry: Arc<Entry>,
    pub(crate) scope: u32,
    pub(crate) subscription: u32,
    pub(crate) last: EvidenceKind,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 64);

impl Slot {
    pub(super) fn new(entry: Arc<Entry>, scope: u32, subscription: u32) -> Self {
        Slot {
            from: entry.possible.start,
            until: entry.possible.end,
            certain: entry.certain,
            info: entry.info.clone(),
            last: entry.last.kind,
            entry,
            scope,
            subscription,
        }
    }

    #[inline]
    pub(crate) fn holds(&self, t: Micros) -> bool {
        self.from <= t && t < self.until
    }

    /// The possible window as exclusivity bounds it.
    #[inline]
    pub(crate) fn possible(&self) -> Window {
        Window {
            start: self.from,
            end: self.until,
        }
    }
}

impl<'a> engine::Alive<'a> for &'a Slot {
    fn claim(self) -> &'a Claim {
        &self.entry.claim
    }
    fn possible(self) -> Window {
        Slot::possible(self)
    }
    fn certain(self) -> Window {
        self.certain
    }
}
