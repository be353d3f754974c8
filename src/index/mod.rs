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

mod view;

pub use view::{OfIp, View};

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use crate::engine::{
    self, Answer, Claim, Complete, Coverage, EvidenceKind, Freshness, Micros, Watching, Window,
};

use crate::model::hash::{FastMap, FastSet};
use crate::model::{ArmId, Mac, NicInfo, VmInfo};

/// What watched each subscription, by subscription id (lower case).
pub use crate::engine::CoverageMap;

/// A claim as the index holds it, with the NIC and its VMs as enrichment
/// shows them built once (so an enriched tuple costs no allocation).
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
    fn new(entry: Arc<Entry>, scope: u32, subscription: u32) -> Self {
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

/// The one copy of `id` in `set` (added when new).
fn one_copy(set: &mut FastSet<Arc<str>>, id: &str) -> Arc<str> {
    match set.get(id) {
        Some(one) => one.clone(),
        None => {
            let one: Arc<str> = id.into();
            set.insert(one.clone());
            one
        }
    }
}

/// Where the claims held lie, coarsely: the IPv4 /16s and IPv6 /48s that
/// hold a claim. Enrichment looks up no address outside it (the public side
/// of internet traffic, mostly), and any address inside it, whatever its
/// range: a VNet may use a public address space. Marks are never cleared (a
/// stale one costs a lookup that finds nothing).
#[derive(Default)]
struct Space {
    /// One bit per IPv4 /16 (allocated with the first IPv4 claim).
    v4: Vec<u64>,
    v6: FastSet<u64>,
    /// A claim on an IPv6 prefix wider than a /48: every IPv6 address is looked up.
    v6_wide: bool,
}

impl Space {
    fn add(&mut self, net: &IpNet) {
        match net {
            IpNet::V4(n) => {
                if self.v4.is_empty() {
                    self.v4 = vec![0; 1 << 10];
                }
                let first = u32::from(n.network()) >> 16;
                let last = u32::from(n.broadcast()) >> 16;
                for b in first..=last {
                    self.v4[(b >> 6) as usize] |= 1 << (b & 63);
                }
            }
            IpNet::V6(n) if n.prefix_len() < 48 => self.v6_wide = true,
            IpNet::V6(n) => {
                self.v6.insert((u128::from(n.network()) >> 80) as u64);
            }
        }
    }

    #[inline]
    fn holds(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let b = u32::from(a) >> 16;
                self.v4
                    .get((b >> 6) as usize)
                    .is_some_and(|w| w >> (b & 63) & 1 == 1)
            }
            IpAddr::V6(a) => self.v6_wide || self.v6.contains(&((u128::from(a) >> 80) as u64)),
        }
    }
}

#[derive(Default)]
pub(crate) struct Inner {
    by_ip: FastMap<IpNet, Vec<Slot>>,
    space: Space,
    /// Scope keys and subscriptions (lower-cased) of the claims held, as
    /// small integers (never removed: there are few).
    names: FastMap<String, u32>,
    /// The subnet and VNet ids of the claims held, one copy each, shared by
    /// every claim that names them (never removed: there are few).
    ids: FastMap<Box<str>, ArmId>,
    /// Snapshot ids named by the claims held, one copy each (never removed:
    /// a few a day per subscription).
    snapshot_ids: FastSet<Arc<str>>,
    prefix_lens: BTreeSet<(bool, u8)>,
    by_nic: FastMap<Arc<str>, Vec<Arc<Entry>>>,
    /// Each claim under every VM it was attached to.
    by_vm: FastMap<Arc<str>, Vec<Arc<Entry>>>,
    by_mac: FastMap<Mac, Vec<Arc<Entry>>>,
    claims: usize,
    /// What watched each subscription; live claims are held read at its
    /// horizon (latest complete snapshot). Shared with the lookups that
    /// read it (copied on write).
    coverage: Arc<CoverageMap>,
    /// The subscriptions of the claims held (never removed), shared with
    /// the lookups that read them (rebuilt when one is added).
    subscriptions: Arc<[String]>,
}

fn ip_key(ip: &IpNet) -> IpNet {
    ip.trunc()
}

/// Makes `key` the shared key of `id` when they are the same string.
fn share(key: &mut Arc<str>, id: Option<&ArmId>) {
    if let Some(id) = id
        && id.key() == &**key
    {
        *key = id.shared_key();
    }
}

/// Replaces `old` by `new` in `list` (when there).
fn swap_entry(list: Option<&mut Vec<Arc<Entry>>>, old: &Arc<Entry>, new: &Arc<Entry>) {
    if let Some(slot) = list.into_iter().flatten().find(|x| Arc::ptr_eq(x, old)) {
        *slot = new.clone();
    }
}

/// The distinct VM keys a claim was attached to.
fn vm_keys(c: &Claim) -> impl Iterator<Item = &Arc<str>> {
    let mut seen: Vec<&str> = Vec::new();
    c.vms.iter().filter_map(move |a| {
        let v = a.vm.as_ref()?;
        if seen.contains(&v.key()) {
            return None;
        }
        seen.push(v.key());
        Some(v.shared_key_ref())
    })
}

impl Inner {
    /// Takes a NIC's claims out of every map; returns them, and adds the
    /// IPs whose claims changed to `touched`.
    fn remove_nic(&mut self, nic: &str, touched: &mut FastSet<IpNet>) -> Vec<Arc<Entry>> {
        let Some(old) = self.by_nic.remove(nic) else {
            return Vec::new();
        };
        self.claims -= old.len();
        for c in &old {
            let k = ip_key(&c.key.ip);
            if let Some(v) = self.by_ip.get_mut(&k) {
                v.retain(|x| &*x.entry.key.nic != nic);
                if v.is_empty() {
                    self.by_ip.remove(&k);
                } else {
                    touched.insert(k);
                }
            }
            for vm in vm_keys(&c.claim) {
                if let Some(v) = self.by_vm.get_mut(vm) {
                    v.retain(|x| &*x.key.nic != nic);
                    if v.is_empty() {
                        self.by_vm.remove(vm);
                    }
                }
            }
            if let Some(m) = &c.mac
                && let Some(v) = self.by_mac.get_mut(m)
            {
                v.retain(|x| &*x.key.nic != nic);
                if v.is_empty() {
                    self.by_mac.remove(m);
                }
            }
        }
        old
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.insert(name.to_string(), id);
        id
    }

    /// Inserts `c`, which replaces the claims `replaced` of its NIC: their
    /// `NicInfo` and `VmInfo` (and what enrichment has rendered of them)
    /// are kept when the ids are the same. Adds its IP to `touched`.
    fn insert(&mut self, mut c: Claim, replaced: &[Arc<Entry>], touched: &mut FastSet<IpNet>) {
        let sub = c.subscription().to_string();
        if c.live
            && let Some(h) = self.coverage.get(&sub).and_then(Coverage::horizon)
        {
            let id = one_copy(&mut self.snapshot_ids, &h.id);
            c.extend_to(h.at, &id);
        }
        let snapshot_ids = &mut self.snapshot_ids;
        let refs = [&mut c.before, &mut c.after]
            .into_iter()
            .flatten()
            .chain([&mut c.first, &mut c.last]);
        for r in refs.chain(c.vms.iter_mut().flat_map(|a| [&mut a.first, &mut a.last])) {
            if r.kind == EvidenceKind::Snapshot {
                r.id = one_copy(snapshot_ids, &r.id);
            }
        }
        let slot_names = (self.intern(&c.key.scope), self.intern(&sub));
        if let Err(at) = self.subscriptions.binary_search(&sub) {
            let mut all = self.subscriptions.to_vec();
            all.insert(at, sub);
            self.subscriptions = all.into();
        }
        // The NIC's claims in one VNet (its IPv4 and IPv6 addresses, say)
        // share one `NicInfo`, and its claims on one VM one `VmInfo`, so
        // each renders once.
        let id = |a: &Option<ArmId>| a.as_ref().map(|a| a.as_str().to_string());
        let mine: Vec<&Arc<Entry>> = self
            .by_nic
            .get(&c.key.nic)
            .into_iter()
            .flat_map(|v| v.iter().rev().take(8))
            .chain(replaced.iter())
            .collect();
        let info = match mine
            .iter()
            .find(|e| e.nic.as_str() == c.nic.as_str() && e.info.vnet == id(&c.vnet))
        {
            Some(e) => {
                // The same spelling: hold the NIC's id once.
                c.nic = e.claim.nic.clone();
                e.info.clone()
            }
            None => Arc::new(NicInfo::new(&c.nic, c.vnet.as_ref())),
        };
        let vms: Vec<Option<Arc<VmInfo>>> = c
            .vms
            .iter()
            .map(|a| {
                let vm = a.vm.as_ref()?;
                let known = mine
                    .iter()
                    .flat_map(|e| e.vms.iter().flatten())
                    .find(|v| v.id == vm.as_str());
                Some(match known {
                    Some(v) => v.clone(),
                    None => Arc::new(VmInfo::new(vm)),
                })
            })
            .collect();
        for id in [&mut c.subnet, &mut c.vnet].into_iter().flatten() {
            match self.ids.get(id.as_str()) {
                Some(one) => *id = one.clone(),
                None => {
                    self.ids.insert(id.as_str().into(), id.clone());
                }
            }
        }
        // The key's strings are those ids' keys (when they are): one copy.
        share(&mut c.key.nic, Some(&c.nic));
        share(&mut c.key.scope, c.vnet.as_ref());
        let c = Arc::new(Entry {
            claim: c,
            info,
            vms,
        });
        let k = ip_key(&c.key.ip);
        self.prefix_lens
            .insert((k.addr().is_ipv4(), k.prefix_len()));
        self.space.add(&k);
        let slot = Slot::new(c.clone(), slot_names.0, slot_names.1);
        self.by_ip.entry(k).or_default().push(slot);
        touched.insert(k);
        for vm in vm_keys(&c.claim) {
            self.by_vm.entry(vm.clone()).or_default().push(c.clone());
        }
        if let Some(m) = &c.mac {
            let v = self.by_mac.entry(m.clone()).or_default();
            // One entry per NIC is enough to find its claims.
            if !v.iter().any(|x| x.key.nic == c.key.nic) {
                v.push(c.clone());
            }
        }
        self.by_nic.entry(c.key.nic.clone()).or_default().push(c);
        self.claims += 1;
    }

    /// Bounds the possible windows of the claims on each IP of `ips` by
    /// exclusivity (see [`engine::exclusive`]).
    fn rebound<'a>(&mut self, ips: impl IntoIterator<Item = &'a IpNet>) {
        for k in ips {
            let Some(slots) = self.by_ip.get_mut(k) else {
                continue;
            };
            let bounds = {
                let refs: Vec<&Claim> = slots.iter().map(|s| &s.entry.claim).collect();
                engine::exclusive(&refs)
            };
            for (s, b) in slots.iter_mut().zip(bounds) {
                s.from = b.possible.start;
                s.until = b.possible.end;
            }
        }
    }

    fn claims_of_ip(&self, ip: IpAddr) -> Vec<Arc<Entry>> {
        let mut out = Vec::new();
        for &(v4, len) in &self.prefix_lens {
            if v4 != ip.is_ipv4() {
                continue;
            }
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            if let Some(v) = self.by_ip.get(&net.trunc()) {
                out.extend(v.iter().map(|s| s.entry.clone()));
            }
        }
        out
    }

    /// Takes in finished complete snapshots (by subscription): their
    /// subscriptions' coverage grows, and their live claims are read at
    /// the new horizon (rebuilt in place; no other claim is touched).
    fn add_completes(&mut self, completes: Vec<(String, Complete)>, policy: &Freshness) {
        let mut moved: Vec<String> = Vec::new();
        let coverage = Arc::make_mut(&mut self.coverage);
        for (sub, c) in completes {
            let cov = coverage.entry(sub.clone()).or_default();
            let was = cov.horizon().map(|h| h.at);
            if cov.add(c, policy) && was != cov.horizon().map(|h| h.at) && !moved.contains(&sub) {
                moved.push(sub);
            }
        }
        if moved.is_empty() {
            return;
        }
        // Each live claim of a moved subscription is replaced by its extended
        // copy wherever it is held; its NIC and VM infos are shared, not rebuilt.
        let Inner {
            by_ip,
            by_vm,
            by_mac,
            by_nic,
            coverage,
            snapshot_ids,
            ..
        } = self;
        let mut touched: FastSet<IpNet> = FastSet::default();
        for entries in by_nic.values_mut() {
            // A NIC's claims share its subscription.
            let Some(sub) = entries.first().map(|e| e.subscription()) else {
                continue;
            };
            let Some(h) = moved
                .iter()
                .find(|m| m.as_str() == sub)
                .and_then(|m| coverage[m].horizon())
            else {
                continue;
            };
            let id = one_copy(snapshot_ids, &h.id);
            for e in entries.iter_mut() {
                // Copied only when the horizon extends it.
                if !e.claim.extends_to(h.at) {
                    continue;
                }
                let mut claim = e.claim.clone();
                claim.extend_to(h.at, &id);
                let new = Arc::new(Entry {
                    claim,
                    info: e.info.clone(),
                    vms: e.vms.clone(),
                });
                let k = ip_key(&e.key.ip);
                if let Some(slot) = by_ip
                    .get_mut(&k)
                    .into_iter()
                    .flatten()
                    .find(|s| Arc::ptr_eq(&s.entry, e))
                {
                    // The same claim, its certain window moved.
                    *slot = Slot::new(new.clone(), slot.scope, slot.subscription);
                    touched.insert(k);
                }
                for vm in vm_keys(&e.claim) {
                    swap_entry(by_vm.get_mut(vm), e, &new);
                }
                if let Some(m) = &e.mac {
                    swap_entry(by_mac.get_mut(m), e, &new);
                }
                *e = new;
            }
        }
        let touched: Vec<IpNet> = touched.into_iter().collect();
        self.rebound(&touched);
    }

    fn add_activity(&mut self, reach: Vec<(String, Micros, Micros)>, policy: &Freshness) {
        if reach.is_empty() {
            return;
        }
        let coverage = Arc::make_mut(&mut self.coverage);
        for (sub, from, to) in reach {
            coverage
                .entry(sub)
                .or_insert_with(|| Coverage::new(Vec::new(), None, policy))
                .add_activity(from, to);
        }
    }
}

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
