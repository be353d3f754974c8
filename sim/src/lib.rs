//! Estate simulator with ground truth, and the accuracy scorer.
//!
//! [`generate`] simulates an Azure estate over time from a seed ([`truth`]):
//! subscriptions, VNets (two of them reusing 10.0.0.0/24), VM NICs that are
//! created, attached, moved between VMs, re-addressed and deleted, scale-set
//! NICs that churn without any Activity Log event, static IPs moved between
//! NICs, IPv6 configurations and unattached NICs. It then writes what a
//! collector would have seen ([`write`]: ARM list pages per subscription
//! snapshot, Activity Log exports with loss, delay, duplicates and disorder),
//! VNet listings ([`vnets`]), flow-log blobs ([`flowlogs`]), the truth (every owner interval of every
//! (VNet, IP)) and probes weighted toward transitions ([`probes`]).
//!
//! [`run_accuracy`] feeds such a directory to a running ipwho over HTTP, asks
//! it the owner of every probe and flow-tuple end, scores the answers against
//! the truth ([`accuracy`]), works out which probes the delivered evidence
//! settles ([`evidence`]), and answers the same probes with the naive
//! `lead()` window query in a scratch Postgres database ([`naive`]).
//!
//! Everything is deterministic from [`SimConfig::seed`]: the same
//! configuration writes the same bytes.

pub mod accuracy;
pub mod ask;
pub mod evidence;
pub mod feed;
pub mod flowlogs;
pub mod naive;
pub mod probes;
pub mod time;
pub mod truth;
pub mod vnets;
pub mod write;

use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use accuracy::{AccuracyOptions, AccuracyReport, run_accuracy, run_accuracy_with};
use time::Micros;

/// Which flow-log formats the estate writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKinds {
    /// NSG flow logs v2 on even VNets, VNet flow logs v4 on odd ones.
    Both,
    Nsg,
    Vnet,
}

/// Which regular VNets have an IPv6 address space (their NICs get IPv6
/// configurations: 70% of VM NICs, every scale-set NIC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DualStack {
    Off,
    /// Odd VNets.
    Odd,
    All,
}

/// Every knob of the simulator. [`SimConfig::default`] is a medium estate;
/// [`SimConfig::profile`] names the small CI estate and the benchmark inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimConfig {
    pub seed: u64,
    /// Start of the simulated window (µs since the epoch).
    pub start: Micros,
    /// Steady-state number of live NICs.
    pub nics: u32,
    /// Length of the simulated window.
    pub days: f64,
    pub subscriptions: u32,
    /// One complete snapshot per subscription every this many minutes.
    pub snapshot_minutes: u32,
    /// NICs per ARM list page.
    pub page_size: u32,
    /// Share of Activity Log records lost.
    pub event_loss: f64,
    /// Share of records delayed by up to `event_delay_max_min` minutes.
    pub event_delay_share: f64,
    pub event_delay_max_min: u32,
    /// Share of records delivered twice.
    pub event_dup: f64,
    /// Share of snapshots never delivered.
    pub snapshot_miss: f64,
    /// Share of snapshots that lose pages (delivered with `complete: false`).
    pub snapshot_partial: f64,
    /// Flow tuples to write.
    pub flow_tuples: u32,
    pub flow_kinds: FlowKinds,
    /// Write all flow tuples of a kind into one blob (benchmarks).
    pub flow_single_blob: bool,
    /// Flow tuples fall in the last this many minutes of the window
    /// (`None`: anywhere in it).
    #[serde(default)]
    pub flow_minutes: Option<u32>,
    /// Only this many NICs (chosen at random among those attached in the
    /// flow window) capture the flow tuples (`None`: any attached NIC).
    #[serde(default)]
    pub flow_capture_nics: Option<u32>,
    /// Write `flowlogs/truth.jsonl`.
    pub flow_truth: bool,
    /// Random (ip, time) probes.
    pub probes: u32,
    /// Share of the population in VM scale sets (no Activity Log events).
    pub vmss_share: f64,
    /// Mean life of a VM NIC.
    pub vm_life_hours: f64,
    /// Mean life of a scale-set instance NIC.
    pub vmss_life_hours: f64,
    /// Mean time between changes to a live VM NIC (VM move, re-address, tag).
    pub op_interval_hours: f64,
    /// Mean time between static-IP moves in a VM subnet.
    pub static_move_hours: f64,
    /// Which VNets are dual-stack.
    pub dual_stack: DualStack,
    /// Write `Start` and `Failure` records beside the `Success` ones.
    pub start_records: bool,
    /// Split an hour of Activity Log records into files of at most this many.
    pub activity_file_max_records: u32,
    /// Write `truth.jsonl`.
    pub write_truth: bool,
    /// Minutes at the end of the window in which nothing changes (`None`:
    /// none; changes go on to the end of the evidence).
    #[serde(default)]
    pub quiet_minutes: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            start: 1_740_960_000 * time::SEC, // 2025-03-03T00:00:00Z
            nics: 600,
            days: 2.0,
            subscriptions: 3,
            snapshot_minutes: 30,
            page_size: 100,
            event_loss: 0.05,
            event_delay_share: 0.15,
            event_delay_max_min: 120,
            event_dup: 0.02,
            snapshot_miss: 0.05,
            snapshot_partial: 0.05,
            flow_tuples: 5_000,
            flow_kinds: FlowKinds::Both,
            flow_single_blob: false,
            flow_minutes: None,
            flow_capture_nics: None,
            flow_truth: true,
            probes: 5_000,
            vmss_share: 0.35,
            vm_life_hours: 36.0,
            vmss_life_hours: 6.0,
            op_interval_hours: 48.0,
            static_move_hours: 12.0,
            dual_stack: DualStack::Odd,
            start_records: true,
            activity_file_max_records: 5_000,
            write_truth: true,
            quiet_minutes: None,
        }
    }
}

/// Names accepted by [`SimConfig::profile`].
pub const PROFILES: &[&str] = &[
    "default",
    "sparse",
    "tiny",
    "small",
    "large",
    "bench-snapshot",
    "bench-activity",
    "bench-history",
];

impl SimConfig {
    /// A named starting point; flags override its fields.
    ///
    /// - `sparse`: the default estate seen poorly: complete snapshots every
    ///   two hours, 30% of Activity Log records lost, 25% of snapshots missed.
    /// - `tiny`: the smallest estate that still has every pattern (unit and
    ///   integration tests).
    /// - `small`: a few seconds end to end, for CI.
    /// - `large`: the by-hand accuracy run recorded in `docs/accuracy.md`.
    /// - `bench-snapshot`: one complete 100,000-NIC snapshot, every VNet
    ///   dual-stack (two or more IPs a NIC).
    /// - `bench-activity`: over 100,000 Activity Log `Success` records.
    /// - `bench-history`: over 1,000,000 owner intervals (claims), mostly
    ///   scale-set churn seen by snapshots every two hours, and one VNet
    ///   flow-log blob of 1,000,000 tuples captured by 300 NICs in the last
    ///   hour, with probes for the lookup benchmark.
    pub fn profile(name: &str, seed: u64) -> anyhow::Result<Self> {
        let base = Self {
            seed,
            ..Self::default()
        };
        Ok(match name {
            "default" => base,
            "sparse" => Self {
                snapshot_minutes: 120,
                event_loss: 0.30,
                snapshot_miss: 0.25,
                ..base
            },
            "tiny" => Self {
                nics: 90,
                days: 0.75,
                snapshot_minutes: 60,
                page_size: 10,
                flow_tuples: 800,
                probes: 800,
                event_loss: 0.1,
                snapshot_miss: 0.1,
                snapshot_partial: 0.1,
                ..base
            },
            "small" => Self {
                nics: 150,
                days: 1.0,
                snapshot_minutes: 60,
                page_size: 25,
                flow_tuples: 1_500,
                probes: 2_000,
                ..base
            },
            "large" => Self {
                nics: 3_000,
                days: 3.0,
                snapshot_minutes: 60,
                flow_tuples: 50_000,
                probes: 40_000,
                ..base
            },
            "bench-snapshot" => Self {
                nics: 100_000,
                dual_stack: DualStack::All,
                days: 0.25,
                subscriptions: 1,
                snapshot_minutes: 24 * 60,
                snapshot_miss: 0.0,
                snapshot_partial: 0.0,
                flow_tuples: 0,
                probes: 1_000,
                page_size: 1_000,
                ..base
            },
            "bench-activity" => Self {
                nics: 24_000,
                days: 1.0,
                subscriptions: 1,
                vmss_share: 0.0,
                snapshot_minutes: 24 * 60,
                quiet_minutes: Some(0),
                vm_life_hours: 24.0,
                op_interval_hours: 12.0,
                event_loss: 0.0,
                event_dup: 0.0,
                flow_tuples: 0,
                probes: 1_000,
                page_size: 1_000,
                activity_file_max_records: 50_000,
                ..base
            },
            "bench-history" => Self {
                nics: 100_000,
                days: 0.85,
                dual_stack: DualStack::All,
                subscriptions: 4,
                snapshot_minutes: 120,
                quiet_minutes: Some(0),
                snapshot_miss: 0.0,
                snapshot_partial: 0.0,
                vmss_share: 0.9,
                vmss_life_hours: 1.0,
                vm_life_hours: 24.0,
                flow_tuples: 1_000_000,
                flow_kinds: FlowKinds::Vnet,
                flow_single_blob: true,
                flow_minutes: Some(60),
                flow_capture_nics: Some(300),
                flow_truth: false,
                probes: 50_000,
                page_size: 1_000,
                ..base
            },
            other => anyhow::bail!("unknown profile {other:?}; known: {}", PROFILES.join(", ")),
        })
    }

    /// End of the simulated window.
    pub fn end(&self) -> Micros {
        self.start + (self.days * time::DAY as f64) as Micros
    }

    /// Length of the quiet tail.
    pub fn quiet(&self) -> Micros {
        match self.quiet_minutes {
            Some(m) => i64::from(m) * time::MIN,
            None => 0,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.nics >= 1, "--nics must be at least 1");
        anyhow::ensure!(self.days > 0.0, "--days must be positive");
        anyhow::ensure!(
            (1..=250).contains(&self.subscriptions),
            "--subscriptions must be 1..=250"
        );
        anyhow::ensure!(
            self.snapshot_minutes >= 1,
            "--snapshot-minutes must be >= 1"
        );
        anyhow::ensure!(self.page_size >= 1, "--page-size must be >= 1");
        for (name, v) in [
            ("event-loss", self.event_loss),
            ("event-delay-share", self.event_delay_share),
            ("event-dup", self.event_dup),
            ("snapshot-miss", self.snapshot_miss),
            ("snapshot-partial", self.snapshot_partial),
            ("vmss-share", self.vmss_share),
        ] {
            anyhow::ensure!((0.0..=1.0).contains(&v), "--{name} must be in 0..=1");
        }
        anyhow::ensure!(
            self.vm_life_hours > 0.0
                && self.vmss_life_hours > 0.0
                && self.op_interval_hours > 0.0
                && self.static_move_hours > 0.0,
            "lifetimes must be positive"
        );
        Ok(())
    }
}

/// What [`generate`] wrote, with timings.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Summary {
    pub seed: u64,
    pub subscriptions: usize,
    pub vnets: usize,
    pub subnets: usize,
    /// NICs that ever existed in the window (all lives, not the population).
    pub nics: usize,
    pub vmss_nics: usize,
    /// Owner intervals in the truth.
    pub intervals: usize,
    pub snapshots: write::SnapshotStats,
    pub activity: write::ActivityStats,
    pub flow: flowlogs::FlowStats,
    pub probes: usize,
    pub simulate_ms: u64,
    pub write_ms: u64,
    pub total_ms: u64,
}

/// The file [`generate`] writes first: configuration, estate layout and the
/// order in which a collector would have delivered the files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub config: SimConfig,
    #[serde(with = "time::serde_us")]
    pub start: Micros,
    #[serde(with = "time::serde_us")]
    pub end: Micros,
    /// After this instant nothing changes (the quiet tail).
    #[serde(with = "time::serde_us")]
    pub changes_end: Micros,
    pub subscriptions: Vec<String>,
    pub vnets: Vec<ManifestVnet>,
    /// Files to feed, in delivery order.
    pub feed: Vec<FeedItem>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestVnet {
    pub id: String,
    pub subscription: String,
    pub address_space: Vec<String>,
    pub flow_log: String,
}

/// One delivery: a snapshot directory, an Activity Log file or a VNet
/// listing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeedItem {
    Snapshot {
        /// Directory relative to the estate root, e.g. `snapshots/000012`.
        dir: String,
        #[serde(with = "time::serde_us")]
        deliver_at: Micros,
    },
    Activity {
        /// File relative to the estate root.
        file: String,
        #[serde(with = "time::serde_us")]
        deliver_at: Micros,
    },
    /// A `POST /v1/topology` body (services without that route ignore it).
    Topology {
        file: String,
        #[serde(with = "time::serde_us")]
        deliver_at: Micros,
    },
}

/// Simulates the estate of `cfg` and writes it into `out` (created if
/// missing; must not already hold an estate).
pub fn generate(cfg: &SimConfig, out: &Path) -> anyhow::Result<Summary> {
    cfg.validate()?;
    let t_start = Instant::now();
    if out.join("manifest.json").exists() {
        anyhow::bail!(
            "{} already holds an estate (manifest.json); use an empty directory",
            out.display()
        );
    }
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    let world = truth::World::simulate(cfg);
    let simulate_ms = t_start.elapsed().as_millis() as u64;

    let t_write = Instant::now();
    let mut written = write::write_collector_view(&world, out)?;
    let mut feed = vnets::write_vnet_listings(&world, out)?;
    feed.append(&mut written.feed);
    written.feed = feed;
    let truth_index = world.truth_index();
    let flow = flowlogs::write_flow_logs(&world, &truth_index, out)?;
    let probes = probes::write_probes(&world, &truth_index, &written.lost, out)?;
    if cfg.write_truth {
        world.write_truth(&out.join("truth.jsonl"))?;
    }
    let manifest = Manifest {
        config: cfg.clone(),
        start: world.t0,
        end: world.t_end,
        changes_end: world.change_end,
        subscriptions: world.subs.iter().map(|s| s.id.clone()).collect(),
        vnets: world
            .vnets
            .iter()
            .map(|v| ManifestVnet {
                id: v.id.clone(),
                subscription: world.subs[v.sub as usize].id.clone(),
                address_space: std::iter::once(v.v4.to_string())
                    .chain(v.v6.map(|n| n.to_string()))
                    .collect(),
                flow_log: match v.flow {
                    truth::FlowLogKind::Nsg => "nsg".into(),
                    truth::FlowLogKind::Vnet => "vnet".into(),
                },
            })
            .collect(),
        feed: written.feed,
    };
    write_json_file(&out.join("manifest.json"), &manifest)?;
    let write_ms = t_write.elapsed().as_millis() as u64;

    let summary = Summary {
        seed: cfg.seed,
        subscriptions: world.subs.len(),
        vnets: world.vnets.len(),
        subnets: world.subnets.len(),
        nics: world.nics.len(),
        vmss_nics: world.nics.iter().filter(|n| n.vmss).count(),
        intervals: world.intervals.len(),
        snapshots: written.snapshots,
        activity: written.activity,
        flow,
        probes,
        simulate_ms,
        write_ms,
        total_ms: t_start.elapsed().as_millis() as u64,
    };
    write_json_file(&out.join("summary.json"), &summary)?;
    Ok(summary)
}

/// The estate of `profile` and `seed` kept under `root` (in
/// `<root>/<profile>-<seed>`), generated first when missing: into a
/// temporary directory renamed once complete, so an interrupted run leaves
/// no half estate behind. Returns its directory, and its summary when it was
/// generated now. The benchmarks read their inputs through this.
pub fn cached_estate(
    root: &Path,
    profile: &str,
    seed: u64,
) -> anyhow::Result<(PathBuf, Option<Summary>)> {
    let dir = root.join(format!("{profile}-{seed}"));
    if dir.join("manifest.json").exists() {
        return Ok((dir, None));
    }
    let tmp = root.join(format!(".{profile}-{seed}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    let summary = generate(&SimConfig::profile(profile, seed)?, &tmp)?;
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok((dir, Some(summary)))
}

/// Reads `manifest.json` of an estate directory.
pub fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let p = dir.join("manifest.json");
    let bytes = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", p.display()))
}

/// A ChaCha8 stream derived from the seed and a purpose, so that each part of
/// the generator draws from its own stream and changing one part does not
/// shift the others.
pub(crate) fn rng_for(seed: u64, purpose: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(seed, purpose))
}

/// A stable 64-bit hash of a seed and some words (splitmix64 steps).
pub(crate) fn mix(seed: u64, words: &[u64]) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for &w in words {
        h = splitmix(h ^ w);
    }
    splitmix(h)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A GUID-shaped id derived from the seed and some words (lower-case hex).
pub(crate) fn guid(seed: u64, words: &[u64]) -> String {
    let a = mix(seed, words);
    let b = mix(a, &[0xA5A5]);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        (0x8000 | (b >> 48) & 0x3fff) as u16,
        b & 0xffff_ffff_ffff
    )
}

/// Purposes of the random streams (the words fed to [`rng_for`]).
pub(crate) mod stream {
    pub const SUBNET: u64 = 2;
    pub const SNAPSHOTS: u64 = 3;
    pub const ACTIVITY: u64 = 4;
    pub const FLOWS: u64 = 5;
    pub const PROBES: u64 = 6;
    pub const IDS: u64 = 7;
}

pub(crate) fn write_json_file<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::new(f);
    serde_json::to_writer_pretty(&mut w, value)?;
    w.write_all(b"\n")?;
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests;
