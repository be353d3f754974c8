//! Claims held in memory for lookups and enrichment: loaded from Postgres at
//! start, kept current after every ingest by replacing the claims of the
//! NICs the ingest recomputed, with what watched each subscription
//! ([`Coverage`]) and the VNets' topology beside them.
//!
//! Lookups by IP try each prefix length present (almost always just /32 and
//! /128), so a NIC that holds a prefix answers for every address in it.
//! Each claim's possible window is held as exclusivity bounds it
//! ([`engine::exclusive`]), recomputed for the claims of an IP whenever one
//! of them changes, so that a batch of lookups reads it inline ([`View`]).

mod entry;
mod inner;
mod view;

pub use entry::{Entry, Scope, Slot};
pub use view::{OfIp, View};

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use crate::engine::{self, Answer, Claim, Complete, Coverage, Freshness, Micros, Watching};
use crate::model::Mac;
use crate::model::hash::FastSet;
use inner::{Inner, ip_key};

/// What watched each subscription, by subscription id (lower case).
pub use crate::engine::CoverageMap;

/// The in-memory claim index. Cheap to share (`Arc<Index>`); reads take a
/// shared lock, updates an exclusive one for the time of a swap per NIC.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
    /// How each subscription's freshness bound is set.
    freshness: Freshness,
    /// Bumped by every update: how current the index is.
    seq: AtomicU64,
    /// When the last update was applied (micros).
    updated_at: AtomicI64,
    /// The last change-feed sequence number reflected here. Held across a
    /// whole apply, so local ingests and the feed follower never interleave.
    pub(crate) applied_seq: tokio::sync::Mutex<i64>,
    /// Not yet holding the database's claims (see [`Index::loading`]).
    loading: AtomicBool,
    /// The VNets' address spaces and peerings (swapped whole when a listing
    /// arrives; read by enrichment once per batch).
    topology: RwLock<Arc<crate::topology::Topology>>,
}

/// An index being built from chunks of claims: see [`Index::builder`].
pub struct Builder {
    tx: tokio::sync::mpsc::Sender<Vec<Claim>>,
    thread: std::thread::JoinHandle<Inner>,
    freshness: Freshness,
}

impl Builder {
    /// Hands the builder more claims (waits while it is four chunks behind).
    pub async fn add(&self, claims: Vec<Claim>) {
        // Fails only if the builder panicked, which `finish` reports.
        let _ = self.tx.send(claims).await;
    }

    /// The index of every claim added.
    pub async fn finish(self) -> Index {
        let Builder {
            tx,
            thread,
            freshness,
        } = self;
        drop(tx);
        let inner = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join the index builder")
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let idx = Index {
            inner: RwLock::new(inner),
            freshness,
            ..Default::default()
        };
        idx.touch();
        idx
    }
}

/// What [`Claims`] hold of the index beside their entries: shared with it
/// (taken out, to answer without its lock), or borrowed under its lock
/// ([`Index::with_claims_of_ip`], for the lookups that run by the ten
/// thousand a second: the index's shared counts are not touched).
#[derive(Debug)]
pub enum Held<'a, T: ?Sized> {
    Shared(Arc<T>),
    Borrowed(&'a T),
}

impl<T: ?Sized> Clone for Held<'_, T> {
    fn clone(&self) -> Self {
        match self {
            Held::Shared(a) => Held::Shared(a.clone()),
            Held::Borrowed(r) => Held::Borrowed(r),
        }
    }
}

impl<T: ?Sized> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            Held::Shared(a) => a,
            Held::Borrowed(r) => r,
        }
    }
}

/// Claims of one IP, NIC or VM, with what watched their subscriptions, to
/// answer from.
#[derive(Clone, Debug)]
pub struct Claims<'a> {
    /// Every claim of the IP (all of them bound each other), or of the NIC
    /// or VM.
    pub entries: Vec<Arc<Entry>>,
    /// The scope asked about: answers name only claims it admits.
    pub scope: Scope,
    pub coverage: Held<'a, CoverageMap>,
    freshness: Freshness,
    /// Every subscription the index holds claims of.
    pub subscriptions: Held<'a, [String]>,
}

impl Claims<'_> {
    pub fn refs(&self) -> Vec<&Claim> {
        self.entries.iter().map(|e| &e.claim).collect()
    }

    /// Who held the IP at `t` within the scope (the claims are of one IP).
    pub fn answer(&self, t: Micros) -> Answer<'_> {
        engine::answer_where(&self.refs(), t, self, |c| self.scope.admits(c))
    }

    /// The claims the scope admits.
    pub fn in_scope(&self) -> Self {
        let mut c = self.clone();
        c.entries.retain(|e| self.scope.admits(e));
        c
    }

    /// Whether `owner` held the IP, on the same VM, from `t` to `now`.
    pub fn continuity(&self, owner: &engine::Owned<'_>, t: Micros, now: Micros) -> engine::Held {
        engine::continuity(owner, &self.refs(), t, now, self)
    }

    /// The entry of a claim of these claims.
    pub fn entry_of(&self, c: &Claim) -> Option<&Arc<Entry>> {
        self.entries.iter().find(|e| std::ptr::eq(&e.claim, c))
    }
}

impl Watching for Claims<'_> {
    fn coverage(&self, subscription: &str) -> Option<&Coverage> {
        self.coverage.get(subscription)
    }
    fn fallback_bound(&self) -> Micros {
        self.freshness.fallback
    }
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index whose subscriptions' freshness bounds follow `f`.
    pub fn with_freshness(f: Freshness) -> Self {
        Index {
            freshness: f,
            ..Default::default()
        }
    }

    /// An empty index that is still to be loaded: it says so
    /// ([`Index::is_loading`]) until [`Index::reset`] fills it, so that the
    /// server can answer health checks, and refuse what needs the claims,
    /// while it loads them.
    pub fn loading(f: Freshness) -> Self {
        let idx = Self::with_freshness(f);
        idx.loading.store(true, Ordering::Relaxed);
        idx
    }

    /// How each subscription's freshness bound is set.
    pub fn freshness_policy(&self) -> Freshness {
        self.freshness
    }

    /// Whether the claims are still being loaded (an empty answer now would
    /// be wrong, not "unknown").
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    fn empty_inner(coverage: CoverageMap) -> Inner {
        Inner {
            coverage: Arc::new(coverage),
            ..Default::default()
        }
    }

    /// Builds an index from every claim and the subscriptions' coverage.
    pub fn from_claims(claims: Vec<Claim>, coverage: CoverageMap, freshness: Freshness) -> Self {
        let idx = Index::with_freshness(freshness);
        {
            let mut w = idx.inner.write().expect("index lock");
            *w = Self::empty_inner(coverage);
            let mut touched = FastSet::default();
            for c in claims {
                w.insert(c, &[], &mut touched);
            }
            let touched: Vec<IpNet> = touched.into_iter().collect();
            w.rebound(&touched);
        }
        idx.touch();
        idx
    }

    /// Starts building an index on a thread of its own from claims handed to
    /// it in chunks ([`Builder::add`]), so that the caller reads and parses
    /// the next chunks meanwhile.
    pub fn builder(coverage: CoverageMap, freshness: Freshness) -> Builder {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Claim>>(4);
        let thread = std::thread::Builder::new()
            .name("ipwho-index-load".into())
            .spawn(move || {
                let mut inner = Self::empty_inner(coverage);
                let mut touched = FastSet::default();
                while let Some(chunk) = rx.blocking_recv() {
                    for c in chunk {
                        inner.insert(c, &[], &mut touched);
                    }
                }
                let touched: Vec<IpNet> = touched.into_iter().collect();
                inner.rebound(&touched);
                inner
            })
            .expect("spawn the index builder");
        Builder {
            tx,
            thread,
            freshness,
        }
    }

    fn touch(&self) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        self.updated_at
            .store(chrono::Utc::now().timestamp_micros(), Ordering::Relaxed);
    }

    /// Replaces the claims of each NIC with its newly derived set.
    pub fn replace<I>(&self, by_nic: I)
    where
        I: IntoIterator<Item = (String, Vec<Claim>)>,
    {
        let mut w = self.inner.write().expect("index lock");
        let mut touched = FastSet::default();
        for (nic, claims) in by_nic {
            let old = w.remove_nic(&nic, &mut touched);
            for c in claims {
                w.insert(c, &old, &mut touched);
            }
        }
        let touched: Vec<IpNet> = touched.into_iter().collect();
        w.rebound(&touched);
        drop(w);
        self.touch();
    }

    /// Takes in finished complete snapshots: their subscriptions' coverage
    /// grows and live claims are read at the new horizons.
    pub fn add_completes<I>(&self, completes: I)
    where
        I: IntoIterator<Item = (String, Complete)>,
    {
        let completes: Vec<(String, Complete)> = completes.into_iter().collect();
        if completes.is_empty() {
            return;
        }
        self.inner
            .write()
            .expect("index lock")
            .add_completes(completes, &self.freshness);
        self.touch();
    }

    /// Takes in what watched every subscription, as the database holds it
    /// (a follower's reload): Activity Log reach as given, complete
    /// snapshots added, live claims read at the new horizons.
    pub fn set_coverage(&self, coverage: CoverageMap) {
        let mut w = self.inner.write().expect("index lock");
        let mut completes: Vec<(String, Complete)> = Vec::new();
        let held = Arc::make_mut(&mut w.coverage);
        for (s, c) in coverage {
            held.entry(s.clone())
                .or_insert_with(|| Coverage::new(Vec::new(), None, &self.freshness))
                .activity = c.activity;
            completes.extend(c.completes.into_iter().map(|x| (s.clone(), x)));
        }
        w.add_completes(completes, &self.freshness);
        drop(w);
        self.touch();
    }

    /// Applies the claims an ingest of this process recomputed, and advances
    /// the change-feed position when nothing from other writers came between.
    pub async fn apply(&self, changes: crate::store::ClaimChanges) {
        let mut applied = self.applied_seq.lock().await;
        self.replace(changes.by_nic);
        self.add_completes(changes.horizons.into_iter().map(|(s, h)| {
            (
                s,
                Complete {
                    at: h.at,
                    id: h.id.into(),
                },
            )
        }));
        if !changes.activity.is_empty() {
            self.inner
                .write()
                .expect("index lock")
                .add_activity(changes.activity, &self.freshness);
        }
        if let Some((lo, hi)) = changes.seq
            && *applied == lo - 1
        {
            *applied = hi;
        }
    }

    /// The topology held (VNets' address spaces and peerings).
    pub fn topology(&self) -> Arc<crate::topology::Topology> {
        self.topology.read().expect("topology lock").clone()
    }

    /// Replaces the topology held.
    pub fn set_topology(&self, t: crate::topology::Topology) {
        *self.topology.write().expect("topology lock") = Arc::new(t);
        self.touch();
    }

    /// Replaces every claim and coverage by those of `fresh`.
    pub fn reset(&self, fresh: Index) {
        let fresh = fresh.inner.into_inner().expect("index lock");
        *self.inner.write().expect("index lock") = fresh;
        self.touch();
        self.loading.store(false, Ordering::Release);
    }

    /// Every claim held, as lookups read them (for checks and diagnostics).
    pub fn all_claims(&self) -> Vec<Claim> {
        let r = self.inner.read().expect("index lock");
        r.by_nic
            .values()
            .flatten()
            .map(|e| e.claim.clone())
            .collect()
    }

    /// Number of NICs whose claims are held.
    pub fn nics(&self) -> usize {
        self.inner.read().expect("index lock").by_nic.len()
    }

    /// Number of claims held.
    pub fn len(&self) -> usize {
        self.inner.read().expect("index lock").claims
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Update sequence number and time of the last update (micros).
    pub fn freshness(&self) -> (u64, Micros) {
        (
            self.seq.load(Ordering::Relaxed),
            self.updated_at.load(Ordering::Relaxed),
        )
    }

    /// What watched every subscription.
    pub fn coverage(&self) -> Arc<CoverageMap> {
        self.inner.read().expect("index lock").coverage.clone()
    }

    fn claims_from(&self, r: &Inner, entries: Vec<Arc<Entry>>) -> Claims<'static> {
        Claims {
            entries,
            scope: Scope::Any,
            coverage: Held::Shared(r.coverage.clone()),
            freshness: self.freshness,
            subscriptions: Held::Shared(r.subscriptions.clone()),
        }
    }

    /// Every claim on `ip` (including prefixes that contain it), to answer
    /// within `scope` ([`Claims::answer`], [`Claims::in_scope`]).
    pub fn claims_of_ip(&self, ip: IpAddr, scope: &Scope) -> Claims<'static> {
        let r = self.inner.read().expect("index lock");
        let mut c = self.claims_from(&r, r.claims_of_ip(ip));
        c.scope = scope.clone();
        c
    }

    /// [`Index::claims_of_ip`] borrowed under the index's read lock, for
    /// `f` (which must not wait on anything).
    pub fn with_claims_of_ip<T>(
        &self,
        ip: IpAddr,
        scope: &Scope,
        f: impl FnOnce(&Claims<'_>) -> T,
    ) -> T {
        let r = self.inner.read().expect("index lock");
        let c = Claims {
            entries: r.claims_of_ip(ip),
            scope: scope.clone(),
            coverage: Held::Borrowed(&*r.coverage),
            freshness: self.freshness,
            subscriptions: Held::Borrowed(&*r.subscriptions),
        };
        f(&c)
    }

    /// Every claim of a NIC (by lower-cased id), oldest first.
    pub fn claims_of_nic(&self, nic_key: &str) -> Claims<'static> {
        let r = self.inner.read().expect("index lock");
        let mut v = r.by_nic.get(nic_key).cloned().unwrap_or_default();
        v.sort_by_key(|c| (c.possible.start, c.certain.start));
        self.claims_from(&r, v)
    }

    /// Every claim made while the NIC was attached to a VM (by lower-cased
    /// id) for part of it, oldest first.
    pub fn claims_of_vm(&self, vm_key: &str) -> Claims<'static> {
        let r = self.inner.read().expect("index lock");
        let mut v = r.by_vm.get(vm_key).cloned().unwrap_or_default();
        v.sort_by_key(|c| (c.possible.start, c.certain.start));
        self.claims_from(&r, v)
    }

    /// The claims of every NIC on the IPs those claims hold, within the
    /// same scopes: what bounds them by exclusivity.
    pub fn neighbours(&self, of: &Claims<'_>) -> Claims<'static> {
        let r = self.inner.read().expect("index lock");
        let mut ips: Vec<IpNet> = of.entries.iter().map(|e| ip_key(&e.key.ip)).collect();
        ips.sort_unstable();
        ips.dedup();
        let v = ips
            .iter()
            .filter_map(|k| r.by_ip.get(k))
            .flatten()
            .map(|s| s.entry.clone())
            .collect();
        self.claims_from(&r, v)
    }

    /// The NICs ever seen with this MAC (one claim of each, to find the rest).
    pub fn nics_of_mac(&self, mac: &Mac) -> Vec<String> {
        let r = self.inner.read().expect("index lock");
        r.by_mac
            .get(mac)
            .map(|v| v.iter().map(|c| c.key.nic.to_string()).collect())
            .unwrap_or_default()
    }

    /// Runs `f` under one read of the index (for the enrichment adapter).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Inner) -> T) -> T {
        f(&self.inner.read().expect("index lock"))
    }
}

#[cfg(test)]
mod tests;
