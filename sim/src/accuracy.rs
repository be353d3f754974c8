//! The accuracy report: feed an estate to a running ipwho over HTTP, ask it
//! the owner of every probe and of both ends of every flow tuple, and score
//! the answers against the truth; beside it, the naive `lead()` query.
//!
//! HTTP contract used:
//! - `POST /v1/snapshots` `{"snapshot_id","taken_at","subscriptions",
//!   "complete","last_page","value":[NIC...]}`, one call per page;
//! - `POST /v1/activity` with an Activity Log file's bytes as-is;
//! - `POST /v1/lookups` `{"lookups":[{"ip","at","vnet"?,"subscription"?}]}`
//!   → `{"answers":[{"status","owner","vm","candidates"}]}` in order.
//!
//! Scoring (ids compared case-insensitively):
//! - `confirmed`, `probable`, `possible` name a NIC (the status is the
//!   NIC's): right when it is the single true NIC, wrong otherwise (also
//!   when nobody owned the IP, or when several did in an unscoped lookup).
//!   A wrong answer is *misled* when the delivered evidence pointed at that
//!   owner (a change nobody could see: a lost record and no snapshot
//!   between).
//! - The VM is scored apart, by its own status (`vm.status`): a
//!   `confirmed` or `probable` VM other than the true one, on the right
//!   NIC, is a wrong VM (`vm-only`); a server that still puts the VM
//!   inside `owner` is read the same way, its VM taking the NIC's status.
//! - `ambiguous`: whether every true owner is among the candidates.
//! - `unknown`: whether nobody owned the IP.
//!
//! Settled lookups (see [`super::evidence`]): one owner beyond doubt must be
//! `confirmed`, nobody beyond doubt must be `unknown`; anything else is
//! counted as settled but hedged. Targets: no wrong (not misled)
//! `confirmed` or `probable` answer, NIC or VM, and no settled lookup
//! hedged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::ask::{Answer, Ask, Enriched, Owner, ask_enrich, ask_lookups};
use super::evidence::{Evidence, Interner, Scope, Settled};
use super::feed::{item_bodies, post};
use super::flowlogs::read_tuple_truth;
use super::naive::{NaiveAnswer, NaiveLookup, run_naive};
use super::probes::read_probes;
use super::time::{self, Micros};
use super::truth::{Interval, TruthIndex, TruthRecord};
use super::{FeedItem, read_manifest};

/// How to run the report.
#[derive(Clone, Debug)]
pub struct AccuracyOptions {
    /// ipwho's base URL, e.g. `http://127.0.0.1:8080`.
    pub base_url: String,
    /// Postgres URL for the naive approach's scratch database; `None` skips it.
    pub database_url: Option<String>,
    /// Post the estate first (false: it was already fed).
    pub feed: bool,
    /// Lookups per `POST /v1/lookups` (the API takes at most 10,000).
    pub batch: usize,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
}

impl AccuracyOptions {
    pub fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            database_url: None,
            feed: true,
            batch: 10_000,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Feeds `dir` to ipwho at `base_url`, scores its answers, and runs the naive
/// approach in a scratch database created through `database_url`.
pub async fn run_accuracy(
    dir: &Path,
    base_url: &str,
    database_url: &str,
) -> anyhow::Result<AccuracyReport> {
    let mut o = AccuracyOptions::new(base_url);
    o.database_url = Some(database_url.to_string());
    run_accuracy_with(dir, &o).await
}

/// Counts for one answer status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusRow {
    pub n: u64,
    /// Named the single true NIC.
    pub right: u64,
    /// Named an owner that was not the single true owner.
    pub wrong: u64,
    /// Of `wrong`: the delivered evidence pointed at that owner.
    pub wrong_misled: u64,
    /// Of `right`: a `confirmed`/`probable` VM that was not the NIC's.
    pub wrong_vm_only: u64,
    /// Nobody owned the IP.
    pub truth_none: u64,
    /// `ambiguous`: every true owner among the candidates.
    pub truth_in_candidates: u64,
    /// `ambiguous`: some true owner missing from the candidates.
    pub truth_not_in_candidates: u64,
}

/// Answers of one kind of lookup, by status.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Section {
    pub lookups: u64,
    pub by_status: BTreeMap<String, StatusRow>,
}

/// How ipwho answered the lookups that one settled class holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SettledRow {
    pub n: u64,
    pub by_status: BTreeMap<String, u64>,
    /// Not given the settled status.
    pub hedged: u64,
    /// Given the settled status but naming the wrong owner.
    pub wrong: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SettledReport {
    /// One NIC beyond doubt (inside one claim's certain window only).
    pub confirmed: SettledRow,
    /// Of those, the VM beyond doubt too, answered on the right NIC: the
    /// VM's own status must be `confirmed`, naming that VM.
    #[serde(default)]
    pub vm: SettledRow,
    /// Inside two claims' certain windows: contradictory evidence.
    pub contested: SettledRow,
    /// No claim can cover the time.
    pub unknown: SettledRow,
}

/// Naive answers of one lookup set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveRow {
    pub n: u64,
    /// Named the single true owner.
    pub right: u64,
    /// Named another owner (or anyone when nobody owned the IP).
    pub wrong: u64,
    /// Of `wrong`: nobody owned the IP.
    pub wrong_truth_none: u64,
    pub no_answer_truth_none: u64,
    pub no_answer_truth_owner: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveVariant {
    pub probes: NaiveRow,
    pub flow_ends: NaiveRow,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NaiveReport {
    /// Partitioned by IP alone, as published.
    pub by_ip: NaiveVariant,
    /// Partitioned by (VNet, IP), honouring the lookup's scope.
    pub by_vnet: NaiveVariant,
    pub sightings: u64,
    pub elapsed_ms: u64,
}

/// One probe or flow-end kind across ipwho and the naive variants.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct KindRow {
    pub kind: String,
    pub n: u64,
    /// `confirmed`/`probable` with the right owner, or `unknown` when nobody owned it.
    pub ipwho_right: u64,
    /// `confirmed`/`probable` naming a wrong owner (misled included).
    pub ipwho_wrong_firm: u64,
    /// `possible` naming a wrong owner.
    pub ipwho_wrong_possible: u64,
    /// `possible` right, `ambiguous`, or `unknown` while someone owned it.
    pub ipwho_hedged: u64,
    pub naive_ip_right: u64,
    pub naive_ip_wrong: u64,
    pub naive_vnet_right: u64,
    pub naive_vnet_wrong: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeedStats {
    pub snapshots: u64,
    pub pages: u64,
    pub activity_files: u64,
    /// VNet listings posted (and how many the service refused as an
    /// unknown route: a build without `POST /v1/topology`).
    #[serde(default)]
    pub vnet_listings: u64,
    #[serde(default)]
    pub vnet_listings_refused: u64,
    pub bytes: u64,
    pub feed_ms: u64,
    pub lookups: u64,
    pub lookup_ms: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Targets {
    /// Wrong `confirmed` answers the evidence did not point at.
    pub wrong_confirmed: u64,
    pub wrong_probable: u64,
    /// Wrong `confirmed`/`probable` answers the evidence pointed at.
    pub misled_confirmed: u64,
    pub misled_probable: u64,
    /// Right NIC, but a `confirmed`/`probable` VM it was not on, the
    /// evidence not pointing at it.
    #[serde(default)]
    pub wrong_vm_firm: u64,
    /// Settled lookups (confirmed + unknown) not given the settled status.
    pub settled_hedged: u64,
    pub met: bool,
}

/// A lookup worth a look: a wrong firm answer or a settled lookup hedged.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Notable {
    /// `wrong`, `misled`, `settled-confirmed-hedged`, `settled-unknown-hedged`,
    /// `settled-confirmed-wrong`.
    pub why: String,
    pub kind: String,
    pub ip: String,
    pub at: String,
    pub vnet: Option<String>,
    pub subscription: Option<String>,
    pub status: String,
    /// (NIC, VM) named by ipwho.
    pub answer: Option<(String, Option<String>)>,
    pub truth: Vec<(String, Option<String>)>,
    /// What the evidence settles, e.g. `confirmed nic vm`.
    pub settled: String,
}

/// The whole report.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccuracyReport {
    pub dir: String,
    pub seed: u64,
    pub base_url: String,
    pub feed: FeedStats,
    pub probes: Section,
    pub flow_ends: Section,
    pub settled: SettledReport,
    pub naive: Option<NaiveReport>,
    pub by_kind: Vec<KindRow>,
    pub targets: Targets,
    /// Up to [`MAX_NOTABLE`] lookups that missed a target, for diagnosis.
    pub notable: Vec<Notable>,
}

/// How many notable lookups a report keeps.
pub const MAX_NOTABLE: usize = 200;

// ---------------------------------------------------------------------------
// Lookups

/// Where the delivered evidence is read for what it settles of a lookup.
enum Settle {
    /// Claims within this scope: a probe's request scope; for a flow end,
    /// the VNet routing puts it in, when the evidence can place the
    /// capturing VNet (a VNet flow log names it; an NSG flow log's MAC
    /// names a NIC the evidence knows).
    In(Scope),
    /// The capturing end of a MAC no delivered evidence shows: nobody
    /// known captured it, so `unknown` is the settled answer.
    Nobody,
    /// The far end of an NSG record whose MAC no evidence shows: the
    /// capturing VNet is not known, so nothing is settled.
    Open,
}

/// One lookup with its scope and truth.
struct Lookup {
    ip: IpAddr,
    at: Micros,
    /// Request scope, as spelled in the estate.
    vnet: Option<String>,
    subscription: Option<String>,
    /// What the evidence is asked to settle (see [`Settle`]).
    settle: Settle,
    kind: String,
    /// A flow end: (file, record, tuple index in the record, source end).
    flow: Option<(String, u32, u32, bool)>,
    /// True owners (NIC, VM), lower case.
    truth: Vec<(String, Option<String>)>,
}

/// The truth of `truth.jsonl`, indexed.
pub(crate) struct Truth {
    index: TruthIndex,
    vnets: Interner,
    nics: Interner,
    vms: Interner,
    vnet_sub: Vec<String>,
}

impl Truth {
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Truth> {
        let p = dir.join("truth.jsonl");
        let text = fs::read_to_string(&p)
            .with_context(|| format!("reading {} (generate with truth enabled)", p.display()))?;
        let mut vnets = Interner::default();
        let mut nics = Interner::default();
        let mut vms = Interner::default();
        let mut vnet_sub = Vec::new();
        let mut ivs = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r: TruthRecord =
                serde_json::from_str(line).with_context(|| format!("parsing {}", p.display()))?;
            let v = vnets.id(&r.vnet);
            if v as usize >= vnet_sub.len() {
                vnet_sub.push(r.subscription.to_ascii_lowercase());
            }
            ivs.push(Interval {
                vnet: v,
                ip: r.ip,
                from: r.from,
                to: r.to,
                nic: nics.id(&r.nic),
                vm: r.vm.as_deref().map(|x| vms.id(x)),
            });
        }
        Ok(Truth {
            index: TruthIndex::new(ivs),
            vnets,
            nics,
            vms,
            vnet_sub,
        })
    }

    pub(crate) fn owners(
        &self,
        ip: IpAddr,
        at: Micros,
        scope: &Scope,
    ) -> Vec<(String, Option<String>)> {
        self.index
            .owners_at(ip, at, |v| match scope {
                Scope::Any => true,
                Scope::Vnet(k) => self.vnets.name(v) == k,
                Scope::Subscription(s) => &self.vnet_sub[v as usize] == s,
            })
            .into_iter()
            .map(|iv| {
                (
                    self.nics.name(iv.nic).to_string(),
                    iv.vm.map(|v| self.vms.name(v).to_string()),
                )
            })
            .collect()
    }
}

pub(crate) fn scope_of(vnet: Option<&str>, sub: Option<&str>) -> Scope {
    match (vnet, sub) {
        (Some(v), _) => Scope::Vnet(v.to_ascii_lowercase()),
        (None, Some(s)) => Scope::Subscription(s.to_ascii_lowercase()),
        (None, None) => Scope::Any,
    }
}

fn build_lookups(dir: &Path, truth: &Truth, ev: &Evidence) -> anyhow::Result<Vec<Lookup>> {
    let mut out = Vec::new();
    for p in read_probes(dir)? {
        let scope = scope_of(p.vnet.as_deref(), p.subscription.as_deref());
        out.push(Lookup {
            ip: p.ip,
            at: p.at,
            truth: truth.owners(p.ip, p.at, &scope),
            vnet: p.vnet,
            subscription: p.subscription,
            settle: Settle::In(scope),
            kind: p.kind,
            flow: None,
        });
    }
    // Tuples are written in record order; their index in the record counts
    // across the record's flows and groups.
    let mut last: Option<(String, u32)> = None;
    let mut ordinal = 0u32;
    for tt in read_tuple_truth(dir)? {
        let here = (tt.file.clone(), tt.record);
        if last.as_ref() == Some(&here) {
            ordinal += 1;
        } else {
            ordinal = 0;
            last = Some(here);
        }
        for (end, role) in [(&tt.src, "src"), (&tt.dst, "dst")] {
            let (vnet, sub) = if tt.format == "vnet" {
                (tt.scope.vnet.clone(), None)
            } else {
                (None, Some(tt.scope.subscription.clone()))
            };
            let side = if role == tt.capture {
                "capture"
            } else {
                "peer"
            };
            out.push(Lookup {
                ip: end.ip,
                at: tt.at,
                truth: end
                    .nic
                    .iter()
                    .map(|n| {
                        (
                            n.to_ascii_lowercase(),
                            end.vm.as_ref().map(|v| v.to_ascii_lowercase()),
                        )
                    })
                    .collect(),
                vnet,
                subscription: sub,
                settle: match (
                    ev.macs.contains(&tt.mac),
                    tt.format == "vnet",
                    role == tt.capture,
                ) {
                    (true, ..) | (false, true, false) => {
                        Settle::In(scope_of(end.vnet.as_deref(), None))
                    }
                    (false, _, true) => Settle::Nobody,
                    (false, false, false) => Settle::Open,
                },
                kind: format!("flow-{}-{side}", tt.kind),
                flow: Some((tt.file.clone(), tt.record, ordinal, role == "src")),
            });
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Feeding and asking

async fn feed(
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
    items: &[FeedItem],
    stats: &mut FeedStats,
) -> anyhow::Result<()> {
    let started = Instant::now();
    for item in items {
        let bodies = item_bodies(dir, item)?;
        match item {
            FeedItem::Snapshot { .. } => {
                stats.snapshots += 1;
                stats.pages += bodies.len() as u64;
            }
            FeedItem::Activity { .. } => stats.activity_files += 1,
            FeedItem::Topology { .. } => stats.vnet_listings += 1,
        }
        for body in bodies {
            stats.bytes += body.bytes.len() as u64;
            let topology = body.path == "/v1/topology";
            match post(client, base, body).await {
                Err(e) if topology && e.to_string().contains(": 404") => {
                    stats.vnet_listings_refused += 1;
                }
                r => {
                    r?;
                }
            }
        }
    }
    stats.feed_ms = started.elapsed().as_millis() as u64;
    Ok(())
}

impl Lookup {
    /// Did the delivered evidence point at (nic, vm)? (Never for an end the
    /// evidence cannot place.)
    fn pointed_at(&self, ev: &Evidence, nic: &str, vm: Option<Option<&str>>) -> bool {
        match &self.settle {
            Settle::In(scope) => ev.pointed_at(self.ip, self.at, scope, nic, vm),
            Settle::Nobody | Settle::Open => false,
        }
    }
}

/// Probes through `POST /v1/lookups`, flow ends through `POST /v1/enrich`
/// (one post per flow-log file); answers in the order of `lookups`.
async fn ask_all(
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
    lookups: &[Lookup],
    batch: usize,
) -> anyhow::Result<Vec<Answer>> {
    let probes: Vec<Ask> = lookups
        .iter()
        .filter(|l| l.flow.is_none())
        .map(|l| Ask {
            ip: l.ip,
            at: l.at,
            vnet: l.vnet.as_deref(),
            subscription: l.subscription.as_deref(),
        })
        .collect();
    let mut probe_answers = ask_lookups(client, base, &probes, batch).await?.into_iter();
    let mut files: BTreeMap<&str, Enriched> = BTreeMap::new();
    for l in lookups {
        if let Some((file, ..)) = &l.flow
            && !files.contains_key(file.as_str())
        {
            files.insert(file, ask_enrich(client, base, dir, file).await?);
        }
    }
    lookups
        .iter()
        .map(|l| match &l.flow {
            None => probe_answers
                .next()
                .context("fewer lookup answers than probes"),
            Some((file, record, tuple, src)) => {
                let (s, d) = files[file.as_str()]
                    .get(&(*record, *tuple))
                    .with_context(|| {
                        format!("{file}: no enriched line for record {record} tuple {tuple}")
                    })?;
                Ok(if *src { s.clone() } else { d.clone() })
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Scoring

fn named(o: &Owner) -> (String, Option<String>) {
    (
        o.nic.id.to_ascii_lowercase(),
        o.vm.as_ref().map(|v| v.id.to_ascii_lowercase()),
    )
}

/// Right when `owner`'s NIC is the single true NIC.
fn owner_right(owner: &(String, Option<String>), truth: &[(String, Option<String>)]) -> bool {
    !truth.is_empty() && truth.iter().all(|t| t.0 == owner.0)
}

fn naive_score(row: &mut NaiveRow, ans: &NaiveAnswer, truth: &[(String, Option<String>)]) -> bool {
    row.n += 1;
    match ans {
        Some(o) => {
            if owner_right(o, truth) {
                row.right += 1;
                true
            } else {
                row.wrong += 1;
                if truth.is_empty() {
                    row.wrong_truth_none += 1;
                }
                false
            }
        }
        None if truth.is_empty() => {
            row.no_answer_truth_none += 1;
            true
        }
        None => {
            row.no_answer_truth_owner += 1;
            false
        }
    }
}

/// Runs the report with explicit options.
pub async fn run_accuracy_with(
    dir: &Path,
    opts: &AccuracyOptions,
) -> anyhow::Result<AccuracyReport> {
    let manifest = read_manifest(dir)?;
    let truth = Truth::load(dir)?;
    let evidence = Evidence::load(dir, &manifest)?;
    let lookups = build_lookups(dir, &truth, &evidence)?;
    let client = reqwest::Client::builder().timeout(opts.timeout).build()?;
    let base = opts.base_url.trim_end_matches('/');

    let mut report = AccuracyReport {
        dir: dir.display().to_string(),
        seed: manifest.config.seed,
        base_url: base.to_string(),
        ..Default::default()
    };
    if opts.feed {
        feed(&client, base, dir, &manifest.feed, &mut report.feed).await?;
    }
    let started = Instant::now();
    let answers = ask_all(&client, base, dir, &lookups, opts.batch).await?;
    report.feed.lookups = lookups.len() as u64;
    report.feed.lookup_ms = started.elapsed().as_millis() as u64;

    let naive = match &opts.database_url {
        Some(url) => {
            let nl: Vec<NaiveLookup> = lookups
                .iter()
                .map(|l| NaiveLookup {
                    ip: l.ip,
                    at: l.at,
                    vnet: l.vnet.as_ref().map(|v| v.to_ascii_lowercase()),
                    subscription: l.subscription.as_ref().map(|s| s.to_ascii_lowercase()),
                })
                .collect();
            Some(run_naive(url, &evidence, &nl).await?)
        }
        None => None,
    };

    let mut kinds: BTreeMap<String, KindRow> = BTreeMap::new();
    let mut naive_rep = naive.as_ref().map(|n| NaiveReport {
        sightings: n.sightings as u64,
        elapsed_ms: n.elapsed_ms,
        ..Default::default()
    });
    for (i, (l, a)) in lookups.iter().zip(&answers).enumerate() {
        let section = if l.flow.is_some() {
            &mut report.flow_ends
        } else {
            &mut report.probes
        };
        section.lookups += 1;
        let status = a.status.to_ascii_lowercase();
        let row = section.by_status.entry(status.clone()).or_default();
        row.n += 1;
        if l.truth.is_empty() {
            row.truth_none += 1;
        }
        let kr = kinds.entry(l.kind.clone()).or_insert_with(|| KindRow {
            kind: l.kind.clone(),
            ..Default::default()
        });
        kr.n += 1;
        let firm = status == "confirmed" || status == "probable";
        match status.as_str() {
            "confirmed" | "probable" | "possible" => match &a.owner {
                Some(o) => {
                    let o = named(o);
                    if owner_right(&o, &l.truth) {
                        row.right += 1;
                        if firm {
                            kr.ipwho_right += 1;
                        } else {
                            kr.ipwho_hedged += 1;
                        }
                        if let Some(vm) = a.firm_vm()
                            && !l.truth.iter().any(|t| t.1 == vm)
                        {
                            row.wrong_vm_only += 1;
                            if !l.pointed_at(&evidence, &o.0, Some(vm.as_deref())) {
                                report.targets.wrong_vm_firm += 1;
                            }
                        }
                    } else {
                        row.wrong += 1;
                        let misled = l.pointed_at(&evidence, &o.0, None);
                        if misled {
                            row.wrong_misled += 1;
                        }
                        if firm {
                            kr.ipwho_wrong_firm += 1;
                            if misled {
                                if status == "confirmed" {
                                    report.targets.misled_confirmed += 1;
                                } else {
                                    report.targets.misled_probable += 1;
                                }
                            } else if status == "confirmed" {
                                report.targets.wrong_confirmed += 1;
                            } else {
                                report.targets.wrong_probable += 1;
                            }
                        } else {
                            kr.ipwho_wrong_possible += 1;
                        }
                    }
                }
                None => {
                    row.wrong += 1;
                    if firm {
                        kr.ipwho_wrong_firm += 1;
                        if status == "confirmed" {
                            report.targets.wrong_confirmed += 1;
                        } else {
                            report.targets.wrong_probable += 1;
                        }
                    } else {
                        kr.ipwho_wrong_possible += 1;
                    }
                }
            },
            "ambiguous" => {
                kr.ipwho_hedged += 1;
                if !l.truth.is_empty() {
                    let cands: Vec<_> = a.candidates.iter().map(named).collect();
                    if l.truth.iter().all(|t| cands.iter().any(|c| c.0 == t.0)) {
                        row.truth_in_candidates += 1;
                    } else {
                        row.truth_not_in_candidates += 1;
                    }
                }
            }
            "unknown" if l.truth.is_empty() => kr.ipwho_right += 1,
            _ => kr.ipwho_hedged += 1,
        }

        // Settled lookups.
        let settled = match &l.settle {
            Settle::In(scope) => evidence.settled(l.ip, l.at, scope),
            Settle::Nobody => Settled::Unknown,
            Settle::Open => Settled::Open,
        };
        let mut why: Option<&str> = None;
        if firm
            && let Some(o) = &a.owner
            && !owner_right(&named(o), &l.truth)
        {
            let o = named(o);
            why = Some(if l.pointed_at(&evidence, &o.0, None) {
                "misled"
            } else {
                "wrong"
            });
        }
        let srow = match settled {
            Settled::Confirmed { .. } => Some((&mut report.settled.confirmed, "confirmed")),
            Settled::Contested { .. } => Some((&mut report.settled.contested, "confirmed")),
            Settled::Unknown => Some((&mut report.settled.unknown, "unknown")),
            Settled::Open => None,
        };
        if let Some((sr, expect)) = srow {
            sr.n += 1;
            *sr.by_status.entry(status.clone()).or_default() += 1;
            // A capturing end whose NIC (by MAC) held no claim there says so.
            let capture = l.kind.ends_with("-capture");
            let settled_answer =
                status == expect || (capture && expect == "unknown" && status == "mac_mismatch");
            if !settled_answer {
                sr.hedged += 1;
                if !matches!(settled, Settled::Contested { .. }) {
                    why = why.or(Some(if expect == "confirmed" {
                        "settled-confirmed-hedged"
                    } else {
                        "settled-unknown-hedged"
                    }));
                }
            } else if expect == "confirmed" {
                let right_owner = match (&settled, &a.owner) {
                    (Settled::Confirmed { nic, .. } | Settled::Contested { nic, .. }, Some(o)) => {
                        named(o).0 == evidence.nics.name(*nic)
                    }
                    _ => false,
                };
                if !right_owner {
                    sr.wrong += 1;
                    why = why.or(Some("settled-confirmed-wrong"));
                } else if let Settled::Confirmed { vm: Some(vm), .. } = &settled {
                    let vr = &mut report.settled.vm;
                    vr.n += 1;
                    let (vstatus, named_vm) = match &a.vm {
                        Some(v) => (
                            v.status.to_ascii_lowercase(),
                            v.vm.as_ref().map(|x| x.id.to_ascii_lowercase()),
                        ),
                        None => (status.clone(), a.owner.as_ref().and_then(|o| named(o).1)),
                    };
                    *vr.by_status.entry(vstatus.clone()).or_default() += 1;
                    let want = vm.map(|v| evidence.vms.name(v).to_string());
                    if vstatus != "confirmed" {
                        vr.hedged += 1;
                        why = why.or(Some("settled-vm-hedged"));
                    } else if named_vm != want {
                        vr.wrong += 1;
                        why = why.or(Some("settled-vm-wrong"));
                    }
                }
            }
        }
        if let Some(why) = why
            && report.notable.len() < MAX_NOTABLE
        {
            let settled_s = match &settled {
                Settled::Confirmed { nic, vm } => format!(
                    "confirmed {} {}",
                    evidence.nics.name(*nic),
                    match vm {
                        Some(Some(v)) => evidence.vms.name(*v),
                        Some(None) => "no-vm",
                        None => "vm-open",
                    }
                ),
                Settled::Contested { nic } => format!("contested {}", evidence.nics.name(*nic)),
                Settled::Unknown => "unknown".into(),
                Settled::Open => "open".into(),
            };
            report.notable.push(Notable {
                why: why.into(),
                kind: l.kind.clone(),
                ip: l.ip.to_string(),
                at: time::fmt_us(l.at),
                vnet: l.vnet.clone(),
                subscription: l.subscription.clone(),
                status: status.clone(),
                answer: a.owner.as_ref().map(named),
                truth: l.truth.clone(),
                settled: settled_s,
            });
        }

        if let (Some(n), Some(nr)) = (&naive, naive_rep.as_mut()) {
            let (vi, vv) = if l.flow.is_some() {
                (&mut nr.by_ip.flow_ends, &mut nr.by_vnet.flow_ends)
            } else {
                (&mut nr.by_ip.probes, &mut nr.by_vnet.probes)
            };
            if naive_score(vi, &n.by_ip[i], &l.truth) {
                kr.naive_ip_right += 1;
            } else if n.by_ip[i].is_some() {
                kr.naive_ip_wrong += 1;
            }
            if naive_score(vv, &n.by_vnet[i], &l.truth) {
                kr.naive_vnet_right += 1;
            } else if n.by_vnet[i].is_some() {
                kr.naive_vnet_wrong += 1;
            }
        }
    }
    report.naive = naive_rep;
    report.by_kind = kinds.into_values().collect();
    report.targets.settled_hedged =
        report.settled.confirmed.hedged + report.settled.vm.hedged + report.settled.unknown.hedged;
    report.targets.met = report.targets.wrong_confirmed == 0
        && report.targets.wrong_vm_firm == 0
        && report.targets.wrong_probable == 0
        && report.targets.settled_hedged == 0;
    Ok(report)
}

// ---------------------------------------------------------------------------
// Rendering

const STATUSES: &[&str] = &[
    "confirmed",
    "probable",
    "possible",
    "ambiguous",
    "unknown",
    "mac_mismatch",
];

/// A section's answers counted the way the naive approach's are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Correct {
    /// `confirmed`/`probable` on the right NIC, or `unknown` when nobody held it.
    pub firm: u64,
    /// Any status naming the right NIC, or `unknown` when nobody held it.
    pub named: u64,
    /// `confirmed`/`probable` naming a wrong NIC (misled included).
    pub firm_wrong: u64,
    pub firm_misled: u64,
}

impl Section {
    pub fn correct(&self) -> Correct {
        let row = |s: &str| self.by_status.get(s).cloned().unwrap_or_default();
        let (c, p, q, u) = (
            row("confirmed"),
            row("probable"),
            row("possible"),
            row("unknown"),
        );
        Correct {
            firm: c.right + p.right + u.truth_none,
            named: c.right + p.right + q.right + u.truth_none,
            firm_wrong: c.wrong + p.wrong,
            firm_misled: c.wrong_misled + p.wrong_misled,
        }
    }
}

fn section_table(out: &mut String, title: &str, s: &Section) {
    let _ = writeln!(out, "{title}: {} lookups", s.lookups);
    let _ = writeln!(
        out,
        "  {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10} {:>10}",
        "status", "n", "right", "wrong", "misled", "vm-only", "truth-none", "truth-in", "truth-out"
    );
    let mut names: Vec<&str> = STATUSES.to_vec();
    for k in s.by_status.keys() {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    for st in names {
        let r = s.by_status.get(st).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10} {:>10}",
            st,
            r.n,
            r.right,
            r.wrong,
            r.wrong_misled,
            r.wrong_vm_only,
            r.truth_none,
            r.truth_in_candidates,
            r.truth_not_in_candidates
        );
    }
}

fn settled_line(out: &mut String, name: &str, r: &SettledRow) {
    let by: Vec<String> = r
        .by_status
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        out,
        "  {:<26} {:>7}  hedged {:>5}  wrong {:>5}  ({})",
        name,
        r.n,
        r.hedged,
        r.wrong,
        by.join(", ")
    );
}

fn naive_line(out: &mut String, name: &str, r: &NaiveRow) {
    let _ = writeln!(
        out,
        "  {:<26} {:>7} {:>7} {:>7} {:>10} {:>12} {:>12}",
        name,
        r.n,
        r.right,
        r.wrong,
        r.wrong_truth_none,
        r.no_answer_truth_none,
        r.no_answer_truth_owner
    );
}

impl AccuracyReport {
    /// The plain-text table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ipwho accuracy: {} (seed {}) against {}",
            self.dir, self.seed, self.base_url
        );
        let f = &self.feed;
        let _ = writeln!(
            out,
            "fed {} snapshots ({} pages), {} activity files, {:.1} MB in {:.1} s; {} lookups in {:.1} s",
            f.snapshots,
            f.pages,
            f.activity_files,
            f.bytes as f64 / 1e6,
            f.feed_ms as f64 / 1e3,
            f.lookups,
            f.lookup_ms as f64 / 1e3
        );
        out.push('\n');
        section_table(&mut out, "Probes", &self.probes);
        out.push('\n');
        section_table(&mut out, "Flow-tuple ends", &self.flow_ends);
        out.push('\n');
        let _ = writeln!(
            out,
            "Settled by the delivered evidence (probes and flow ends):"
        );
        settled_line(&mut out, "one NIC -> confirmed", &self.settled.confirmed);
        settled_line(&mut out, "  and its VM -> confirmed", &self.settled.vm);
        settled_line(&mut out, "nobody -> unknown", &self.settled.unknown);
        settled_line(
            &mut out,
            "(contested, not a target)",
            &self.settled.contested,
        );
        if let Some(n) = &self.naive {
            out.push('\n');
            let _ = writeln!(
                out,
                "Naive lead() windows in Postgres ({} sightings, {:.1} s):",
                n.sightings,
                n.elapsed_ms as f64 / 1e3
            );
            let _ = writeln!(
                out,
                "  {:<26} {:>7} {:>7} {:>7} {:>10} {:>12} {:>12}",
                "variant", "n", "right", "wrong", "wrong/none", "none/none", "none/owner"
            );
            naive_line(&mut out, "by ip: probes", &n.by_ip.probes);
            naive_line(&mut out, "by ip: flow ends", &n.by_ip.flow_ends);
            naive_line(&mut out, "by (vnet, ip): probes", &n.by_vnet.probes);
            naive_line(&mut out, "by (vnet, ip): flow ends", &n.by_vnet.flow_ends);
            out.push('\n');
            let _ = writeln!(
                out,
                "Correct answers: the right NIC named (ipwho: firm = confirmed/probable, named = any status), or none when nobody held it:"
            );
            for (name, sec, ip, vnet) in [
                ("probes", &self.probes, &n.by_ip.probes, &n.by_vnet.probes),
                (
                    "flow ends",
                    &self.flow_ends,
                    &n.by_ip.flow_ends,
                    &n.by_vnet.flow_ends,
                ),
            ] {
                let c = sec.correct();
                let _ = writeln!(
                    out,
                    "  {name:<10} ipwho firm {:>6} named {:>6} firm-wrong {:>5} (misled {:>4})   naive by ip {:>6} wrong {:>5}   by (vnet, ip) {:>6} wrong {:>5}",
                    c.firm,
                    c.named,
                    c.firm_wrong,
                    c.firm_misled,
                    ip.right + ip.no_answer_truth_none,
                    ip.wrong,
                    vnet.right + vnet.no_answer_truth_none,
                    vnet.wrong,
                );
            }
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "By kind (ipwho right = confirmed/probable right or unknown when nobody owned it):"
        );
        let _ = writeln!(
            out,
            "  {:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "kind",
            "n",
            "right",
            "firm-x",
            "poss-x",
            "hedged",
            "ip-ok",
            "ip-x",
            "vnet-ok",
            "vnet-x"
        );
        for k in &self.by_kind {
            let _ = writeln!(
                out,
                "  {:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
                k.kind,
                k.n,
                k.ipwho_right,
                k.ipwho_wrong_firm,
                k.ipwho_wrong_possible,
                k.ipwho_hedged,
                k.naive_ip_right,
                k.naive_ip_wrong,
                k.naive_vnet_right,
                k.naive_vnet_wrong
            );
        }
        out.push('\n');
        let t = &self.targets;
        if !self.notable.is_empty() {
            let _ = writeln!(
                out,
                "{} notable lookups kept (wrong, misled, settled but hedged): see --json \"notable\".",
                self.notable.len()
            );
            let _ = writeln!(
                out,
                "misled = wrong, but the delivered evidence pointed at that owner (a change hidden by a lost record)."
            );
        }
        let _ = writeln!(
            out,
            "Targets: wrong confirmed {} (misled {}), wrong probable {} (misled {}), wrong firm VM {}, settled but hedged {} => {}",
            t.wrong_confirmed,
            t.misled_confirmed,
            t.wrong_probable,
            t.misled_probable,
            t.wrong_vm_firm,
            t.settled_hedged,
            if t.met { "MET" } else { "NOT MET" }
        );
        out
    }
}
