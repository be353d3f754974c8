//! `ipwho-sim`: generate a simulated Azure estate with ground truth, and score
//! a running ipwho against it.
//!
//! ```text
//! ipwho-sim generate --seed 7 --out /tmp/estate [--profile small] [--nics N ...]
//! ipwho-sim accuracy --dir /tmp/estate --url http://127.0.0.1:8080 \
//!     [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--json]
//! ```

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ipwho_sim::{self as sim, AccuracyOptions, DualStack, FlowKinds, SimConfig};

#[derive(Parser)]
#[command(
    name = "ipwho-sim",
    version,
    about = "Simulated Azure estate with ground truth, and ipwho's accuracy report"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate an estate and write what a collector would have seen, the
    /// flow logs, the truth and the probes.
    Generate(Box<GenArgs>),
    /// Feed an estate to a running ipwho, ask it, and score the answers
    /// (and the naive lead() query in Postgres).
    Accuracy(AccArgs),
}

#[derive(Args)]
struct GenArgs {
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Output directory (must not hold an estate yet).
    #[arg(long)]
    out: PathBuf,
    /// Starting point: default, small, large, bench-snapshot, bench-activity,
    /// bench-history. Flags below override it.
    #[arg(long, default_value = "default")]
    profile: String,
    /// Start of the window (RFC 3339).
    #[arg(long)]
    start: Option<String>,
    /// Steady-state number of live NICs.
    #[arg(long)]
    nics: Option<u32>,
    #[arg(long)]
    days: Option<f64>,
    #[arg(long)]
    subscriptions: Option<u32>,
    #[arg(long)]
    snapshot_minutes: Option<u32>,
    #[arg(long)]
    page_size: Option<u32>,
    #[arg(long)]
    event_loss: Option<f64>,
    /// Share of Activity Log records delayed by up to --event-delay-max-min.
    #[arg(long)]
    event_delay_share: Option<f64>,
    #[arg(long)]
    event_delay_max_min: Option<u32>,
    #[arg(long)]
    event_dup: Option<f64>,
    #[arg(long)]
    snapshot_miss: Option<f64>,
    #[arg(long)]
    snapshot_partial: Option<f64>,
    #[arg(long)]
    flow_tuples: Option<u32>,
    #[arg(long, value_enum)]
    flow_kinds: Option<FlowKinds>,
    /// Write all tuples of a kind into one blob.
    #[arg(long)]
    flow_single_blob: Option<bool>,
    #[arg(long)]
    flow_truth: Option<bool>,
    /// Flow tuples fall in the last this many minutes of the window.
    #[arg(long)]
    flow_minutes: Option<u32>,
    /// Only this many NICs capture flow tuples.
    #[arg(long)]
    flow_capture_nics: Option<u32>,
    #[arg(long)]
    probes: Option<u32>,
    #[arg(long)]
    vmss_share: Option<f64>,
    #[arg(long)]
    vm_life_hours: Option<f64>,
    #[arg(long)]
    vmss_life_hours: Option<f64>,
    #[arg(long)]
    op_interval_hours: Option<f64>,
    #[arg(long)]
    static_move_hours: Option<f64>,
    /// Which VNets have IPv6: off, odd, all.
    #[arg(long, value_enum)]
    dual_stack: Option<DualStack>,
    /// Write Start and Failure records beside the Success ones.
    #[arg(long)]
    start_records: Option<bool>,
    #[arg(long)]
    activity_file_max_records: Option<u32>,
    #[arg(long)]
    write_truth: Option<bool>,
    /// Minutes at the end without changes (default: two snapshot intervals + 30).
    #[arg(long)]
    quiet_minutes: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AccArgs {
    /// Estate directory written by `generate`.
    #[arg(long)]
    dir: PathBuf,
    /// ipwho's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Postgres URL used to create (and drop) the naive approach's scratch
    /// database; without it the naive columns are skipped.
    #[arg(long, env = "IPWHO_SIM_DATABASE_URL")]
    database_url: Option<String>,
    /// Do not post the estate (it was fed already).
    #[arg(long)]
    no_feed: bool,
    /// Lookups per request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Print the report as JSON instead of the table.
    #[arg(long)]
    json: bool,
    /// Exit with status 2 when a target is not met.
    #[arg(long)]
    check: bool,
}

fn config(a: &GenArgs) -> anyhow::Result<SimConfig> {
    let mut c = SimConfig::profile(&a.profile, a.seed)?;
    if let Some(s) = &a.start {
        c.start =
            sim::time::parse(s).ok_or_else(|| anyhow::anyhow!("--start: not RFC 3339: {s}"))?;
    }
    if a.quiet_minutes.is_some() {
        c.quiet_minutes = a.quiet_minutes;
    }
    if a.flow_minutes.is_some() {
        c.flow_minutes = a.flow_minutes;
    }
    if a.flow_capture_nics.is_some() {
        c.flow_capture_nics = a.flow_capture_nics;
    }
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v; } )* };
    }
    set!(
        nics,
        days,
        subscriptions,
        snapshot_minutes,
        page_size,
        event_loss,
        event_delay_share,
        event_delay_max_min,
        event_dup,
        snapshot_miss,
        snapshot_partial,
        flow_tuples,
        flow_kinds,
        flow_single_blob,
        flow_truth,
        probes,
        vmss_share,
        vm_life_hours,
        vmss_life_hours,
        op_interval_hours,
        static_move_hours,
        dual_stack,
        start_records,
        activity_file_max_records,
        write_truth
    );
    Ok(c)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Generate(a) => {
            let cfg = config(&a)?;
            let s = sim::generate(&cfg, &a.out)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!(
                    "estate {} (seed {}): {} subscriptions, {} VNets, {} subnets, {} NIC lives ({} scale-set), {} owner intervals",
                    a.out.display(),
                    s.seed,
                    s.subscriptions,
                    s.vnets,
                    s.subnets,
                    s.nics,
                    s.vmss_nics,
                    s.intervals
                );
                let sn = &s.snapshots;
                println!(
                    "snapshots: {} taken, {} delivered ({} complete, {} partial), {} missed; {} pages, {} NIC objects, {:.1} MB; {} observed (NIC, IP) claims",
                    sn.taken,
                    sn.delivered,
                    sn.complete,
                    sn.partial,
                    sn.missed,
                    sn.pages,
                    sn.nic_observations,
                    sn.bytes as f64 / 1e6,
                    sn.observed_claims
                );
                let ac = &s.activity;
                println!(
                    "activity: {} operations; written {} Success, {} Start, {} Failure; lost {} ({} Success), delayed {}, duplicated {}; {} files, {:.1} MB",
                    ac.operations,
                    ac.success_written,
                    ac.start_written,
                    ac.failure_written,
                    ac.lost,
                    ac.success_lost,
                    ac.delayed,
                    ac.duplicated,
                    ac.files,
                    ac.bytes as f64 / 1e6
                );
                let f = &s.flow;
                println!(
                    "flow logs: {} tuples ({} NSG, {} VNet) in {} records, {} files, {:.1} MB; {} probes",
                    f.tuples,
                    f.nsg_tuples,
                    f.vnet_tuples,
                    f.records,
                    f.files,
                    f.bytes as f64 / 1e6,
                    s.probes
                );
                println!(
                    "time: simulate {:.2} s, write {:.2} s, total {:.2} s",
                    s.simulate_ms as f64 / 1e3,
                    s.write_ms as f64 / 1e3,
                    s.total_ms as f64 / 1e3
                );
            }
        }
        Cmd::Accuracy(a) => {
            let mut o = AccuracyOptions::new(&a.url);
            o.database_url = a.database_url.clone();
            o.feed = !a.no_feed;
            o.batch = a.batch;
            let r = sim::run_accuracy_with(&a.dir, &o).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.render());
            }
            if a.check && !r.targets.met {
                std::process::exit(2);
            }
        }
    }
    Ok(())
}
