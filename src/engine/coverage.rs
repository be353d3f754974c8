//! How well a subscription was watched: its finished complete snapshots in
//! time order, the freshness bound they imply, and what the Activity Log
//! reached. Two answers rest on it:
//!
//! - **Stale is not probable.** `probable` rests on the absence of evidence
//!   that the NIC went away, which means something only while complete
//!   snapshots of its subscription keep arriving: past the latest one by
//!   more than the bound, an open claim is only `possible`
//!   ([`Coverage::stale_at`]).
//! - **Watched or not.** `unknown` means "nobody held it" only where
//!   complete snapshots lie close enough on both sides of T (no further
//!   apart than the bound: [`Coverage::watched_at`]); elsewhere it means
//!   "nothing was looking".
//!
//! The bound is configured ([`Freshness::fixed`]) or follows from how often
//! complete snapshots of the subscription arrive: a factor of the median
//! interval between its latest ones ([`Freshness::bound_for`]).

/// Each subscription's coverage, by subscription id.
pub type CoverageMap = std::collections::HashMap<String, Coverage>;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{MINUTE, Micros};

/// A finished complete snapshot of a subscription.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Complete {
    pub at: Micros,
    pub id: Arc<str>,
}

/// How the freshness bound of a subscription is set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Freshness {
    /// One bound for every subscription (`None`: from each one's cadence).
    pub fixed: Option<Micros>,
    /// The bound is this many times the median interval between the
    /// subscription's latest complete snapshots.
    pub factor: f64,
    /// The bound while fewer than two complete snapshots say the cadence.
    pub fallback: Micros,
    /// Never tighter than this (a collector's jitter).
    pub min: Micros,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            fixed: None,
            factor: 1.5,
            fallback: 60 * MINUTE,
            min: 5 * MINUTE,
        }
    }
}

/// Intervals the cadence is read from: those between the latest this many
/// complete snapshots.
const CADENCE_SNAPSHOTS: usize = 25;

/// Where a subscription's bound came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoundSource {
    /// Configured for every subscription.
    Configured,
    /// A factor of the median interval between its complete snapshots.
    Cadence,
    /// Fewer than two complete snapshots: the configured fallback.
    Fallback,
}

impl Freshness {
    /// The bound for complete snapshots at `completes` (sorted), and where
    /// it came from.
    pub fn bound_for(&self, completes: &[Complete]) -> (Micros, BoundSource) {
        if let Some(b) = self.fixed {
            return (b, BoundSource::Configured);
        }
        let recent = &completes[completes.len().saturating_sub(CADENCE_SNAPSHOTS)..];
        let mut gaps: Vec<Micros> = recent
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .filter(|g| *g > 0)
            .collect();
        if gaps.is_empty() {
            return (self.fallback, BoundSource::Fallback);
        }
        gaps.sort_unstable();
        let median = gaps[gaps.len() / 2];
        let b = (median as f64 * self.factor) as Micros;
        (b.max(self.min), BoundSource::Cadence)
    }
}

/// What watched a subscription.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    /// Finished complete snapshots, oldest first.
    pub completes: Vec<Complete>,
    /// Past the latest complete snapshot by more than this, evidence is stale.
    pub bound: Micros,
    pub bound_source: Option<BoundSource>,
    /// The earliest and latest Activity Log event recorded for it.
    pub activity: Option<(Micros, Micros)>,
}

/// Why an open claim is only `possible`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stale {
    /// The subscription's latest complete snapshot (none: it never had one).
    pub horizon: Option<Complete>,
    /// How far T lies past it.
    pub age: Option<Micros>,
    pub bound: Micros,
}

impl Stale {
    pub fn reason(&self) -> String {
        match (&self.horizon, self.age) {
            (Some(h), Some(age)) => format!(
                "the latest complete snapshot of the subscription ({}) is {} older than T, past its freshness bound of {}: nothing since would have shown the NIC gone",
                h.id,
                human(age),
                human(self.bound)
            ),
            _ => "no complete snapshot of the subscription has been received: nothing would have shown the NIC gone".to_string(),
        }
    }
}

/// A duration in words ("2 h 5 min", "40 s").
pub fn human(us: Micros) -> String {
    let s = us / 1_000_000;
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

impl Coverage {
    /// The coverage of complete snapshots `completes` (any order) and
    /// Activity Log reach `activity`, its bound set by `policy`.
    pub fn new(
        mut completes: Vec<Complete>,
        activity: Option<(Micros, Micros)>,
        policy: &Freshness,
    ) -> Self {
        completes.sort();
        completes.dedup_by(|a, b| a.at == b.at);
        let (bound, source) = policy.bound_for(&completes);
        Coverage {
            completes,
            bound,
            bound_source: Some(source),
            activity,
        }
    }

    /// Adds a finished complete snapshot (a no-op when known) and resets the
    /// bound. Returns whether it was new.
    pub fn add(&mut self, c: Complete, policy: &Freshness) -> bool {
        let pos = self.completes.partition_point(|x| x.at < c.at);
        if self.completes.get(pos).is_some_and(|x| x.at == c.at) {
            return false;
        }
        self.completes.insert(pos, c);
        let (bound, source) = policy.bound_for(&self.completes);
        self.bound = bound;
        self.bound_source = Some(source);
        true
    }

    /// Widens the Activity Log reach to `[from, to]`.
    pub fn add_activity(&mut self, from: Micros, to: Micros) {
        self.activity = Some(match self.activity {
            Some((a, b)) => (a.min(from), b.max(to)),
            None => (from, to),
        });
    }

    /// The latest finished complete snapshot.
    pub fn horizon(&self) -> Option<&Complete> {
        self.completes.last()
    }

    /// The complete snapshots at or before `t` (latest) and at or after it
    /// (earliest).
    pub fn around(&self, t: Micros) -> (Option<&Complete>, Option<&Complete>) {
        let k = self.completes.partition_point(|c| c.at <= t);
        let before = k.checked_sub(1).map(|i| &self.completes[i]);
        let after = if before.is_some_and(|b| b.at == t) {
            before
        } else {
            self.completes.get(k)
        };
        (before, after)
    }

    /// Complete snapshots lie on both sides of `t`, no further apart than
    /// the bound (a NIC that held an IP at `t` lived through one of them,
    /// unless it lived less than the bound); after the latest one, `t` is
    /// within the bound of it (the next not yet due).
    pub fn watched_at(&self, t: Micros) -> bool {
        match self.around(t) {
            (Some(b), Some(a)) => a.at - b.at <= self.bound,
            (Some(b), None) => t - b.at <= self.bound,
            _ => false,
        }
    }

    /// Why an open claim of this subscription is stale at `t`, if it is.
    pub fn stale_at(&self, t: Micros) -> Option<Stale> {
        match self.horizon() {
            Some(h) if t - h.at <= self.bound => None,
            Some(h) => Some(Stale {
                horizon: Some(h.clone()),
                age: Some(t - h.at),
                bound: self.bound,
            }),
            None => Some(Stale {
                horizon: None,
                age: None,
                bound: self.bound,
            }),
        }
    }
}

/// What the answers know of every subscription's coverage.
pub trait Watching {
    fn coverage(&self, subscription: &str) -> Option<&Coverage>;

    /// The bound of a subscription with no coverage at all.
    fn fallback_bound(&self) -> Micros {
        Freshness::default().fallback
    }

    /// Why an open claim of `subscription` is stale at `t`: past its
    /// horizon by more than its bound, or it never had a complete snapshot.
    fn stale_at(&self, subscription: &str, t: Micros) -> Option<Stale> {
        match self.coverage(subscription) {
            Some(c) => c.stale_at(t),
            None => Some(Stale {
                horizon: None,
                age: None,
                bound: self.fallback_bound(),
            }),
        }
    }
}

impl<S: std::hash::BuildHasher> Watching for std::collections::HashMap<String, Coverage, S> {
    fn coverage(&self, subscription: &str) -> Option<&Coverage> {
        self.get(subscription)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(at: Micros) -> Complete {
        Complete {
            at,
            id: format!("s{at}").into(),
        }
    }

    #[test]
    fn the_bound_follows_the_cadence() {
        let p = Freshness::default();
        let hourly: Vec<Complete> = (0..10).map(|h| c(h * 60 * MINUTE)).collect();
        assert_eq!(p.bound_for(&hourly), (90 * MINUTE, BoundSource::Cadence));
        // A missed snapshot does not move the median.
        let mut missed = hourly.clone();
        missed.remove(4);
        assert_eq!(p.bound_for(&missed).0, 90 * MINUTE);
        assert_eq!(
            p.bound_for(&hourly[..1]),
            (p.fallback, BoundSource::Fallback)
        );
        let fixed = Freshness {
            fixed: Some(7),
            ..p
        };
        assert_eq!(fixed.bound_for(&hourly), (7, BoundSource::Configured));
        let fast: Vec<Complete> = (0..10).map(|m| c(m * MINUTE)).collect();
        assert_eq!(p.bound_for(&fast).0, p.min);
    }

    #[test]
    fn stale_past_the_bound_watched_within_it_on_both_sides() {
        let p = Freshness::default();
        let cov = Coverage::new(vec![c(0), c(60 * MINUTE), c(240 * MINUTE)], None, &p);
        // Gaps of 60 and 180 minutes: median 180 (of two), bound 270.
        assert_eq!(cov.bound, 270 * MINUTE);
        assert!(cov.watched_at(30 * MINUTE));
        assert!(cov.watched_at(240 * MINUTE + 270 * MINUTE));
        assert!(!cov.watched_at(240 * MINUTE + 271 * MINUTE));
        assert!(!cov.watched_at(-1));
        assert!(cov.stale_at(240 * MINUTE + 270 * MINUTE).is_none());
        let s = cov.stale_at(240 * MINUTE + 271 * MINUTE).unwrap();
        assert_eq!(s.age, Some(271 * MINUTE));
        assert!(s.reason().contains("4 h 31 min"), "{}", s.reason());
        assert_eq!(
            cov.around(60 * MINUTE),
            (Some(&c(60 * MINUTE)), Some(&c(60 * MINUTE)))
        );
        let none = Coverage::new(Vec::new(), None, &p);
        assert!(none.stale_at(0).unwrap().horizon.is_none());
    }
}
