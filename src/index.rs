//! Claims held in memory for lookups and enrichment: loaded from Postgres at
//! start, kept current after every ingest by replacing the claims of the
//! NICs the ingest recomputed.
//!
//! Lookups by IP try each prefix length present (almost always just /32 and
//! /128), so a NIC that holds a prefix answers for every address in it.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use crate::engine::{self, Answer, Claim, Continuity, EvidenceKind, Micros, Window};
use crate::enrich::{FastMap, FastSet, NicInfo};
use crate::model::{ArmId, Mac};
use crate::store::runs::CompleteSnapshot;

/// A claim as the index holds it, with the NIC as enrichment shows it built
/// once (so an enriched tuple costs no allocation).
#[derive(Debug)]
pub struct Entry {
    pub claim: Claim,
    pub info: Arc<NicInfo>,
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
            Scope::Subscription(s) => c.nic.subscription() == *s,
        }
    }
}

/// A claim on an IP as `by_ip` holds it: its possible window inline, so a
/// lookup at a time passes over the claims it rules out without reading them,
/// and what an enrichment answer reads of the claim it finds (certain
/// window, last evidence, NIC), so that the claim itself is read only to
/// order the candidates of a tie. Its scope and subscription are interned
/// ([`Inner::names`]) for the same reason. One cache line.
struct Slot {
    from: Micros,
    until: Micros,
    certain: Window,
    info: Arc<NicInfo>,
    entry: Arc<Entry>,
    scope: u32,
    subscription: u32,
    last: EvidenceKind,
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
    fn holds(&self, t: Micros) -> bool {
        self.from <= t && t < self.until
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
struct Inner {
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
    by_vm: FastMap<Arc<str>, Vec<Arc<Entry>>>,
    by_mac: FastMap<Mac, Vec<Arc<Entry>>>,
    claims: usize,
    /// Each subscription's horizon (latest finished complete snapshot):
    /// live claims are held read at it.
    horizons: HashMap<String, CompleteSnapshot>,
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

impl Inner {
    /// Takes a NIC's claims out of every map; returns them.
    fn remove_nic(&mut self, nic: &str) -> Vec<Arc<Entry>> {
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
                }
            }
            if !c.key.vm.is_empty()
                && let Some(v) = self.by_vm.get_mut(&c.key.vm)
            {
                v.retain(|x| &*x.key.nic != nic);
                if v.is_empty() {
                    self.by_vm.remove(&c.key.vm);
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

    fn insert(&mut self, c: Claim) {
        self.insert_replacing(c, &[]);
    }

    /// Inserts `c`, which replaces the claims `replaced` of its NIC: their
    /// `NicInfo` (and what enrichment has rendered of it) is kept when the
    /// NIC, VM and VNet ids are the same.
    fn insert_replacing(&mut self, mut c: Claim, replaced: &[Arc<Entry>]) {
        let sub = c.nic.subscription();
        if c.live
            && let Some(h) = self.horizons.get(&sub)
        {
            c.extend_to(h.at, &one_copy(&mut self.snapshot_ids, &h.id));
        }
        for r in [&mut c.before, &mut c.after]
            .into_iter()
            .flatten()
            .chain([&mut c.first, &mut c.last])
        {
            if r.kind == engine::EvidenceKind::Snapshot {
                r.id = one_copy(&mut self.snapshot_ids, &r.id);
            }
        }
        let slot_names = (self.intern(&c.key.scope), self.intern(&sub));
        // The NIC's claims with the same VM and VNet (its IPv4 and IPv6
        // addresses, say) share one `NicInfo`, so it renders once.
        fn id(a: &Option<crate::model::ArmId>) -> Option<&str> {
            a.as_ref().map(|a| a.as_str())
        }
        let same = |e: &&Arc<Entry>| {
            e.nic.as_str() == c.nic.as_str() && id(&e.vm) == id(&c.vm) && id(&e.vnet) == id(&c.vnet)
        };
        let shared = self
            .by_nic
            .get(&c.key.nic)
            .and_then(|v| v.iter().rev().take(8).find(same))
            .or_else(|| replaced.iter().find(same));
        let info = match shared {
            Some(e) => {
                // The same spellings: hold the NIC's ids once.
                c.nic = e.claim.nic.clone();
                c.vm.clone_from(&e.claim.vm);
                e.info.clone()
            }
            None => Arc::new(NicInfo::new(&c.nic, c.vm.as_ref(), c.vnet.as_ref())),
        };
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
        share(&mut c.key.vm, c.vm.as_ref());
        share(&mut c.key.scope, c.vnet.as_ref());
        let c = Arc::new(Entry { claim: c, info });
        let k = ip_key(&c.key.ip);
        self.prefix_lens
            .insert((k.addr().is_ipv4(), k.prefix_len()));
        self.space.add(&k);
        let slot = Slot::new(c.clone(), slot_names.0, slot_names.1);
        self.by_ip.entry(k).or_default().push(slot);
        if !c.key.vm.is_empty() {
            self.by_vm
                .entry(c.key.vm.clone())
                .or_default()
                .push(c.clone());
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
}

/// The in-memory claim index. Cheap to share (`Arc<Index>`); reads take a
/// shared lock, updates an exclusive one for the time of a swap per NIC.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
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
}

impl Builder {
    /// Hands the builder more claims (waits while it is four chunks behind).
    pub async fn add(&self, claims: Vec<Claim>) {
        // Fails only if the builder panicked, which `finish` reports.
        let _ = self.tx.send(claims).await;
    }

    /// The index of every claim added.
    pub async fn finish(self) -> Index {
        let Builder { tx, thread } = self;
        drop(tx);
        let inner = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join the index builder")
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let idx = Index {
            inner: RwLock::new(inner),
            ..Default::default()
        };
        idx.touch();
        idx
    }
}

/// One answer with owned claims (the index's lock is not held).
#[derive(Clone, Debug)]
pub struct Lookup {
    pub status: engine::Status,
    pub owner: Option<Arc<Entry>>,
    pub candidates: Vec<Arc<Entry>>,
}

impl Index {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index that is still to be loaded: it says so
    /// ([`Index::is_loading`]) until [`Index::reset`] fills it, so that the
    /// server can answer health checks, and refuse what needs the claims,
    /// while it loads them.
    pub fn loading() -> Self {
        let idx = Self::default();
        idx.loading.store(true, Ordering::Relaxed);
        idx
    }

    /// Whether the claims are still being loaded (an empty answer now would
    /// be wrong, not "unknown").
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire)
    }

    /// Builds an index from every claim and the subscriptions' horizons.
    pub fn from_claims(claims: Vec<Claim>, horizons: HashMap<String, CompleteSnapshot>) -> Self {
        let idx = Index::default();
        {
            let mut w = idx.inner.write().expect("index lock");
            w.horizons = horizons;
            for c in claims {
                w.insert(c);
            }
        }
        idx.touch();
        idx
    }

    /// Starts building an index on a thread of its own from claims handed to
    /// it in chunks ([`Builder::add`]), so that the caller reads and parses
    /// the next chunks meanwhile.
    pub fn builder(horizons: HashMap<String, CompleteSnapshot>) -> Builder {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Claim>>(4);
        let thread = std::thread::Builder::new()
            .name("ipwho-index-load".into())
            .spawn(move || {
                let mut inner = Inner {
                    horizons,
                    ..Default::default()
                };
                while let Some(chunk) = rx.blocking_recv() {
                    for c in chunk {
                        inner.insert(c);
                    }
                }
                inner
            })
            .expect("spawn the index builder");
        Builder { tx, thread }
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
        for (nic, claims) in by_nic {
            let old = w.remove_nic(&nic);
            for c in claims {
                w.insert_replacing(c, &old);
            }
        }
        drop(w);
        self.touch();
    }

    /// Moves subscriptions' horizons: their live claims are read at the new
    /// one (rebuilt in place; no other claim is touched).
    pub fn set_horizons<I>(&self, horizons: I)
    where
        I: IntoIterator<Item = (String, CompleteSnapshot)>,
    {
        let mut w = self.inner.write().expect("index lock");
        let mut moved: Vec<String> = Vec::new();
        for (sub, h) in horizons {
            if w.horizons.get(&sub).is_none_or(|old| *old < h) {
                w.horizons.insert(sub.clone(), h);
                moved.push(sub);
            }
        }
        if moved.is_empty() {
            return;
        }
        // Each live claim of a moved subscription is replaced by its extended
        // copy wherever it is held; its NIC info is shared, not rebuilt.
        let Inner {
            by_ip,
            by_vm,
            by_mac,
            by_nic,
            horizons,
            snapshot_ids,
            ..
        } = &mut *w;
        for entries in by_nic.values_mut() {
            // A NIC's claims share its subscription.
            let Some(sub) = entries.first().and_then(|e| e.nic.segment("subscriptions")) else {
                continue;
            };
            let Some(h) = moved
                .iter()
                .find(|m| m.eq_ignore_ascii_case(sub))
                .map(|m| &horizons[m])
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
                });
                if let Some(slot) = by_ip
                    .get_mut(&ip_key(&e.key.ip))
                    .into_iter()
                    .flatten()
                    .find(|s| Arc::ptr_eq(&s.entry, e))
                {
                    // The same claim, its window moved.
                    *slot = Slot::new(new.clone(), slot.scope, slot.subscription);
                }
                if !e.key.vm.is_empty() {
                    swap_entry(by_vm.get_mut(&e.key.vm), e, &new);
                }
                if let Some(m) = &e.mac {
                    swap_entry(by_mac.get_mut(m), e, &new);
                }
                *e = new;
            }
        }
        drop(w);
        self.touch();
    }

    /// Applies the claims an ingest of this process recomputed, and advances
    /// the change-feed position when nothing from other writers came between.
    pub async fn apply(&self, changes: crate::store::ClaimChanges) {
        let mut applied = self.applied_seq.lock().await;
        self.replace(changes.by_nic);
        self.set_horizons(changes.horizons);
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

    /// Replaces every claim and horizon by those of `fresh`.
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

    /// Every claim on `ip` (including prefixes that contain it) admitted by `scope`.
    pub fn claims_of_ip(&self, ip: IpAddr, scope: &Scope) -> Vec<Arc<Entry>> {
        let r = self.inner.read().expect("index lock");
        let mut v = r.claims_of_ip(ip);
        v.retain(|c| scope.admits(c));
        v
    }

    /// Who held `ip` at `t` within `scope`.
    pub fn lookup(&self, ip: IpAddr, t: Micros, scope: &Scope) -> Lookup {
        let claims = self.claims_of_ip(ip, scope);
        answer_owned(&claims, t)
    }

    /// The owner at `t`, the owner at `now`, and whether the same NIC held
    /// the IP from `t` to `now`.
    pub fn lookup_with_now(
        &self,
        ip: IpAddr,
        t: Micros,
        now: Micros,
        scope: &Scope,
    ) -> (Lookup, Lookup, Option<Continuity>) {
        let claims = self.claims_of_ip(ip, scope);
        let at_t = answer_owned(&claims, t);
        let at_now = answer_owned(&claims, now);
        let continuity = at_t.owner.as_ref().map(|o| {
            let refs: Vec<&Claim> = claims.iter().map(|c| &c.claim).collect();
            engine::continuity(&o.claim, &refs, t, now)
        });
        (at_t, at_now, continuity)
    }

    /// Every claim of a NIC (by lower-cased id), oldest first.
    pub fn claims_of_nic(&self, nic_key: &str) -> Vec<Arc<Entry>> {
        let r = self.inner.read().expect("index lock");
        let mut v = r.by_nic.get(nic_key).cloned().unwrap_or_default();
        v.sort_by_key(|c| (c.possible.start, c.certain.start));
        v
    }

    /// Every claim made while the NIC was attached to a VM (by lower-cased id), oldest first.
    pub fn claims_of_vm(&self, vm_key: &str) -> Vec<Arc<Entry>> {
        let r = self.inner.read().expect("index lock");
        let mut v = r.by_vm.get(vm_key).cloned().unwrap_or_default();
        v.sort_by_key(|c| (c.possible.start, c.certain.start));
        v
    }

    /// The NICs ever seen with this MAC (one claim of each, to find the rest).
    pub fn nics_of_mac(&self, mac: &Mac) -> Vec<String> {
        let r = self.inner.read().expect("index lock");
        r.by_mac
            .get(mac)
            .map(|v| v.iter().map(|c| c.key.nic.to_string()).collect())
            .unwrap_or_default()
    }
}

fn answer_owned(claims: &[Arc<Entry>], t: Micros) -> Lookup {
    let a: Answer<'_> = engine::answer(claims.iter().map(|c| &c.claim), t);
    let find = |c: &Claim| {
        claims
            .iter()
            .find(|x| std::ptr::eq(&x.claim, c))
            .cloned()
            .expect("answer names an input claim")
    };
    Lookup {
        status: a.status,
        owner: a.owner.map(find),
        candidates: a.candidates.into_iter().map(find).collect(),
    }
}

// ---- enrichment -------------------------------------------------------------
//
// The lookups of flow-log enrichment run once or twice per tuple, so they
// borrow from the index under its read lock and allocate nothing but the
// candidate list of an ambiguous answer.

use crate::enrich::{Attributor, EndAttribution, Lookups, ScopeHint, Status as EStatus, Via};

fn bound(m: Micros) -> Option<i64> {
    (m != engine::NEG_INF && m != engine::POS_INF).then_some(m)
}

/// The claims on an IP (including prefixes that contain it), looked up once
/// and borrowed, in the order of [`Inner::claims_of_ip`]: one slice per
/// prefix length present (almost always one), four inline.
#[derive(Clone, Default)]
struct OfIp<'a> {
    inline: [&'a [Slot]; 4],
    n: usize,
    spill: Vec<&'a [Slot]>,
}

impl<'a> OfIp<'a> {
    fn push(&mut self, s: &'a [Slot]) {
        if self.n < self.inline.len() {
            self.inline[self.n] = s;
            self.n += 1;
        } else {
            self.spill.push(s);
        }
    }

    /// The claims whose possible window holds `t`.
    fn at(&self, t: Micros) -> impl Iterator<Item = &'a Slot> + Clone + '_ {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .flat_map(|s| s.iter())
            .filter(move |s| s.holds(t))
    }

    fn is_empty(&self) -> bool {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .all(|s| s.is_empty())
    }
}

impl Inner {
    fn of_ip(&self, ip: IpAddr) -> OfIp<'_> {
        let mut out = OfIp::default();
        let v4 = ip.is_ipv4();
        for &(family, len) in &self.prefix_lens {
            if family != v4 {
                continue;
            }
            let Ok(net) = IpNet::new(ip, len) else {
                continue;
            };
            if let Some(v) = self.by_ip.get(&ip_key(&net)) {
                out.push(v);
            }
        }
        out
    }
}

/// [`engine::answer`] over the claims `alive` yields (those in scope whose
/// possible window holds `t`, chosen on [`Slot`]s), as an enrichment end: the
/// same statuses and candidate order, without collecting the claims first.
fn answer_end<'a, I>(alive: I, t: Micros, via: Via) -> EndAttribution
where
    I: Iterator<Item = &'a Slot> + Clone,
{
    let mut hits = alive.clone();
    let Some(owner) = hits.next() else {
        return EndAttribution::unknown(via);
    };
    let mut a = EndAttribution::unknown(via);
    if hits.next().is_none() {
        let possible = Window {
            start: owner.from,
            end: owner.until,
        };
        a.status = engine::lone_status(owner.certain, possible, t).into();
        a.nic = Some(owner.info.clone());
        a.evidence = Some(std::borrow::Cow::Borrowed(owner.last.as_str()));
        a.window = Some((bound(owner.from), bound(owner.until)));
        return a;
    }
    // Ambiguous, as `engine::answer` says it: every claim alive at `t`, in
    // its order (which starts with the possible window's start).
    let mut hits: Vec<&Slot> = alive.collect();
    hits.sort_by(|x, y| {
        x.from
            .cmp(&y.from)
            .then_with(|| engine::candidate_order(&x.entry.claim, &y.entry.claim))
    });
    a.status = EStatus::Ambiguous;
    a.candidates = hits.iter().map(|s| s.info.clone()).collect();
    a
}

/// The index under one read of its lock: a worker's batch of lookups.
struct Pinned<'a>(&'a Inner);

impl Lookups for Pinned<'_> {
    fn local(&self, mac: &Mac, ip: IpAddr, at: i64) -> EndAttribution {
        let r = self.0;
        let Some(nics) = r.by_mac.get(mac) else {
            return EndAttribution::unknown(Via::Mac);
        };
        let of_ip = r.of_ip(ip);
        let all = of_ip.at(at);
        // The record names the NIC that captured the tuple: a NIC with the
        // MAC that may have held the IP at `at` is the local end, whatever
        // other NICs of the VNet may have held it then (the capture rules
        // them out). Its own claim gives the status. Several such NICs
        // (a MAC reused) make the answer ambiguous between them. A NIC with
        // several live claims on the IP counts its first in its own order.
        let mut held: Vec<&Slot> = Vec::new();
        for n in nics {
            let nic = &n.key.nic;
            let mut mine = all.clone().filter(|s| s.entry.key.nic == *nic);
            let Some(s) = mine.next() else {
                continue;
            };
            if mine.next().is_none() {
                held.push(s);
                continue;
            }
            let claims = r.by_nic.get(nic).map(Vec::as_slice).unwrap_or_default();
            let first = claims
                .iter()
                .find(|c| c.possible.contains(at) && c.key.ip.contains(&ip))
                .expect("a live claim of the NIC on the IP is among the NIC's claims");
            held.push(
                all.clone()
                    .find(|s| Arc::ptr_eq(&s.entry, first))
                    .expect("the NIC's live claim on the IP has its slot"),
            );
        }
        if !held.is_empty() {
            // `held` are alive at `at`.
            let mut a = answer_end(held.iter().copied(), at, Via::Mac);
            a.ip_held = Some(true);
            return a;
        }
        // No NIC with the MAC held the IP: the first live one is named.
        let other = nics.iter().find_map(|n| {
            r.by_nic
                .get(&n.key.nic)?
                .iter()
                .find(|c| c.possible.contains(at))
        });
        match other {
            Some(c) => {
                let mut a = EndAttribution::nic(EStatus::MacMismatch, Via::Mac, c.info.clone());
                a.ip_held = Some(false);
                a.evidence = Some(std::borrow::Cow::Borrowed(c.last.kind.as_str()));
                a
            }
            None => EndAttribution::unknown(Via::Mac),
        }
    }

    fn remote(&self, ip: IpAddr, at: i64, hint: &ScopeHint) -> EndAttribution {
        let of_ip = self.0.of_ip(ip);
        if of_ip.is_empty() {
            return EndAttribution::unknown(Via::IpAnyScope);
        }
        let all = of_ip.at(at);
        // A scope the index has never seen holds none of its claims.
        let name = |n: &Option<String>| n.as_deref().and_then(|n| self.0.names.get(n)).copied();
        if let Some(v) = name(&hint.vnet) {
            let in_vnet = all.clone().filter(|s| s.scope == v);
            let a = answer_end(in_vnet, at, Via::IpInVnet);
            if a.status != EStatus::Unknown {
                return a;
            }
        }
        if let Some(sub) = name(&hint.subscription) {
            let in_sub = all.clone().filter(|s| s.subscription == sub);
            let a = answer_end(in_sub, at, Via::IpInSubscription);
            if a.status != EStatus::Unknown {
                return a;
            }
        }
        answer_end(all, at, Via::IpAnyScope)
    }

    fn may_hold(&self, ip: IpAddr) -> bool {
        self.0.space.holds(ip)
    }
}

/// One lookup at a time, each under its own read of the lock.
impl Lookups for Index {
    fn local(&self, mac: &Mac, ip: IpAddr, at: i64) -> EndAttribution {
        Pinned(&self.inner.read().expect("index lock")).local(mac, ip, at)
    }

    fn remote(&self, ip: IpAddr, at: i64, hint: &ScopeHint) -> EndAttribution {
        Pinned(&self.inner.read().expect("index lock")).remote(ip, at, hint)
    }

    fn may_hold(&self, ip: IpAddr) -> bool {
        self.inner.read().expect("index lock").space.holds(ip)
    }
}

impl Attributor for Index {
    /// Holds the read lock for all of `f` (a worker's batch: milliseconds of
    /// work, never waiting on output).
    fn with_lookups(&self, f: &mut dyn FnMut(&dyn Lookups)) {
        let r = self.inner.read().expect("index lock");
        f(&Pinned(&r))
    }

    fn freshness(&self) -> serde_json::Value {
        let (seq, at) = self.freshness();
        serde_json::json!({
            "sequence": seq,
            "updated_at": crate::store::to_ts(at),
            "claims": self.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ClaimKey, EvidenceKind, EvidenceRef, Window};
    use crate::model::ArmId;

    const SUB: &str =
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers";

    fn claim(vnet: &str, end: Micros) -> Claim {
        let nic = ArmId::parse(&format!("{SUB}/Microsoft.Network/networkInterfaces/n1")).unwrap();
        let vnet =
            ArmId::parse(&format!("{SUB}/Microsoft.Network/virtualNetworks/{vnet}")).unwrap();
        let ev = |at| EvidenceRef {
            kind: EvidenceKind::Snapshot,
            id: format!("s{at}").into(),
            at,
        };
        Claim {
            key: ClaimKey {
                nic: nic.key().into(),
                scope: vnet.key().into(),
                ip: "10.0.0.4/32".parse().unwrap(),
                vm: "".into(),
            },
            nic_name: "n1".into(),
            mac: None,
            nic,
            vm: None,
            subnet: None,
            vnet: Some(vnet),
            certain: Window { start: 0, end },
            possible: Window { start: 0, end },
            start_exact: false,
            end_exact: false,
            before: None,
            first: ev(0),
            last: ev(end - 1),
            after: None,
            live: false,
        }
    }

    #[test]
    fn the_space_holds_the_sixteens_and_forty_eights_of_the_claims() {
        let mut s = Space::default();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert!(!s.holds(ip("10.0.0.4")) && !s.holds(ip("fd00::4")));
        s.add(&"20.50.1.4/32".parse().unwrap());
        s.add(&"172.16.0.0/15".parse().unwrap());
        s.add(&"2603:1030:40c:7::4/128".parse().unwrap());
        for a in [
            "20.50.0.1",
            "20.50.255.255",
            "172.16.9.9",
            "172.17.0.1",
            "2603:1030:40c:ffff::1",
        ] {
            assert!(s.holds(ip(a)), "{a}");
        }
        for a in [
            "20.51.1.4",
            "20.49.1.4",
            "172.18.0.1",
            "10.0.0.4",
            "2603:1030:40d::4",
            "fd00::4",
        ] {
            assert!(!s.holds(ip(a)), "{a}");
        }
        s.add(&"2001:db8::/32".parse().unwrap());
        assert!(
            s.holds(ip("fd00::4")),
            "a prefix wider than /48 opens every IPv6 address"
        );
        assert!(!s.holds(ip("10.0.0.4")));
    }

    #[test]
    fn a_replaced_nic_keeps_its_info_while_its_ids_stay() {
        let idx = Index::new();
        let key = claim("v1", 10).key.nic.to_string();
        let info = |idx: &Index| {
            let r = idx.inner.read().unwrap();
            let e = r.by_nic[key.as_str()][0].clone();
            (e.info.clone(), e.certain.end)
        };
        idx.replace([(key.clone(), vec![claim("v1", 10)])]);
        let (first, _) = info(&idx);
        // A new window, the same NIC, VM and VNet: the same NicInfo (and
        // whatever enrichment rendered of it).
        idx.replace([(key.clone(), vec![claim("v1", 20)])]);
        let (second, end) = info(&idx);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(end, 20);
        assert_eq!(idx.len(), 1);
        // Another VNet: a NicInfo of its own.
        idx.replace([(key.clone(), vec![claim("v2", 20)])]);
        let (third, _) = info(&idx);
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(
            third.vnet.as_deref().map(|v| v.ends_with("/v2")),
            Some(true)
        );
        assert_eq!(idx.len(), 1);
    }
}
