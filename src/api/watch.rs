//! Whether a lookup's scope was watched: the complete snapshots around an
//! instant, stale evidence, and a subscription's unwatched stretches over
//! a range.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::views::{WindowView, ts};
use crate::engine::{Complete, Coverage, Micros, NEG_INF, POS_INF, Stale, Window};
use crate::store::to_ts;

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
