//! One subscription's collection: list its NICs and its Uniform scale sets'
//! NICs, ingest every page into one snapshot as it arrives, and finish the
//! snapshot complete only when every page of every list came back; list its
//! VNets meanwhile, and store them as a topology listing at the snapshot's
//! instant once the snapshot is finished (a VNet list that fails leaves the
//! snapshot as it is).
//!
//! The NIC lists are fetched by producers (the subscription-wide NIC list,
//! and the scale-set list followed by each scale set's NIC list, a few at a
//! time) that parse each page and hand it to a single consumer through a
//! small bounded channel; the consumer writes pages to the store in arrival
//! order. At most a few pages are in memory at once, whatever the
//! subscription's size. VNets are few (hundreds at most): their pages are
//! kept until the list ends.

use std::sync::atomic::Ordering;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use sqlx::{Connection, PgPool};
use tokio::sync::mpsc;

use super::arm::{Arm, Stats};
use super::{CollectReport, CollectorConfig, TopologyReport};
use crate::azure::nic::{nic_array, parse_nic};
use crate::azure::vnet::parse_vnet_page;
use crate::index::Index;
use crate::model::{ArmId, NicState};
use crate::store::topology::TopologyListing;
use crate::store::{self, SnapshotMeta, SnapshotPage};
use crate::topology::VnetState;

/// `networkInterfaces` list-all (Microsoft.Network).
pub const NIC_API_VERSION: &str = "2024-03-01";
/// `virtualMachineScaleSets` list-all (Microsoft.Compute).
pub const VMSS_API_VERSION: &str = "2024-07-01";
/// A scale set's NICs (`ListVirtualMachineScaleSetNetworkInterfaces`).
pub const VMSS_NIC_API_VERSION: &str = "2018-10-01";
/// `virtualNetworks` list-all (Microsoft.Network).
pub const VNET_API_VERSION: &str = "2024-03-01";

/// Snapshot ids the collector makes start with this.
pub const SNAPSHOT_PREFIX: &str = "collect-";

/// Rejection examples kept per report.
const EXAMPLES: usize = 5;

/// One parsed page on its way to the store.
struct Page {
    nics: Vec<NicState>,
    received: usize,
    rejected: Vec<String>,
    scale_set: bool,
}

pub use crate::model::normalize_subscription;

fn lock_key(sub: &str) -> i64 {
    let d = crate::model::short_digest(format!("ipwho-collect|{sub}").as_bytes());
    i64::from_str_radix(&d[..15], 16).unwrap_or(0)
}

/// Collects one subscription. Failures of Resource Manager make the
/// snapshot partial; failures of the database end the collection with an
/// error (what was stored stays, unfinished snapshots are closed as partial
/// by the next run).
pub async fn collect_subscription(
    pool: &PgPool,
    index: &Index,
    arm: &Arm,
    cfg: &CollectorConfig,
    sub: &str,
) -> CollectReport {
    let started = Instant::now();
    let token_requests_before = arm.credential().requests();
    let stats = Stats::new();
    let mut report = CollectReport::new(sub);
    let result = collect_locked(pool, index, arm, cfg, sub, &stats, &mut report).await;
    if let Err(e) = result {
        report.complete = false;
        report.error = Some(format!("{e:#}"));
    }
    report.requests = stats.requests.load(Ordering::Relaxed);
    report.retries = stats.retries.load(Ordering::Relaxed);
    report.throttled = stats.throttled.load(Ordering::Relaxed);
    report.token_requests = arm.credential().requests() - token_requests_before;
    let min = stats.min_remaining_reads.load(Ordering::Relaxed);
    report.min_remaining_reads = (min != u64::MAX).then_some(min);
    report.duration_seconds = started.elapsed().as_secs_f64();
    report
}

async fn collect_locked(
    pool: &PgPool,
    index: &Index,
    arm: &Arm,
    cfg: &CollectorConfig,
    sub: &str,
    stats: &Stats,
    report: &mut CollectReport,
) -> anyhow::Result<()> {
    // One collector per subscription at a time, across replicas: a session
    // lock on a connection of its own, released when that connection closes
    // (also when this future is dropped).
    let mut lock_conn = pool.acquire().await?.detach();
    let locked = store::try_lock(&mut lock_conn, lock_key(sub)).await?;
    if !locked {
        report.skipped = Some("another collector is collecting this subscription".into());
        let _ = lock_conn.close().await;
        return Ok(());
    }
    let r = collect_inner(pool, index, arm, cfg, sub, stats, report).await;
    let _ = store::unlock(&mut lock_conn, lock_key(sub)).await;
    let _ = lock_conn.close().await;
    r
}

/// Closes, as partial, snapshots of this subscription a collector began and
/// never finished (it crashed or was stopped).
async fn close_abandoned(pool: &PgPool, index: &Index, sub: &str) -> anyhow::Result<usize> {
    let ids = store::abandon_unfinished(pool, SNAPSHOT_PREFIX, sub).await?;
    for id in &ids {
        if let Some((_, changes)) = store::finish_snapshot(pool, id).await? {
            index.apply(changes).await;
        }
        tracing::warn!(subscription = sub, snapshot = %id, "closed an unfinished collector snapshot as partial");
    }
    Ok(ids.len())
}

fn snapshot_id(sub: &str, taken_at: DateTime<Utc>) -> String {
    let salt: u32 = rand::random();
    format!(
        "{SNAPSHOT_PREFIX}{sub}-{}-{salt:08x}",
        taken_at.format("%Y%m%dT%H%M%S%.6fZ")
    )
}

async fn collect_inner(
    pool: &PgPool,
    index: &Index,
    arm: &Arm,
    cfg: &CollectorConfig,
    sub: &str,
    stats: &Stats,
    report: &mut CollectReport,
) -> anyhow::Result<()> {
    close_abandoned(pool, index, sub).await?;

    // The listing spans a while; it is recorded at the instant it began.
    let now = Utc::now();
    let taken_at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let meta = SnapshotMeta {
        id: snapshot_id(sub, taken_at),
        taken_at,
        subscriptions: vec![sub.to_string()],
        // Held complete while pages arrive; downgraded below if any list fails.
        complete: true,
    };
    report.snapshot_id = Some(meta.id.clone());
    report.taken_at = Some(taken_at);
    // Create the snapshot before listing, so a collection that fetches
    // nothing is still recorded (as partial, with its reason).
    let first = SnapshotPage {
        meta: meta.clone(),
        nics: Vec::new(),
        last_page: false,
        rejected: 0,
    };
    store::ingest_snapshot_page(pool, &first).await?;

    let (tx, rx) = mpsc::channel::<Page>(cfg.concurrency.max(1) + 1);
    let produce = produce(arm, cfg, sub, stats, tx);
    let consume = consume(pool, index, &meta, rx, report);
    let vnets = list_vnets(arm, sub, stats);
    let (failures, consumed, vnets) = tokio::join!(produce, consume, vnets);
    consumed?;
    let (mut failures, pages, scale_sets) = failures;
    report.pages = pages;
    report.scale_sets = scale_sets;

    let reason = if failures.is_empty() {
        None
    } else {
        failures.sort();
        let n = failures.len();
        let mut text = failures.into_iter().take(5).collect::<Vec<_>>().join("; ");
        if n > 5 {
            text.push_str(&format!("; and {} more failed list(s)", n - 5));
        }
        Some(format!("not every list came back: {text}"))
    };
    store::note_listing(
        pool,
        &meta.id,
        i32::try_from(pages).unwrap_or(i32::MAX),
        reason.as_deref(),
    )
    .await?;
    let (fin, changes) = store::finish_snapshot(pool, &meta.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("snapshot {} vanished before it was finished", meta.id))?;
    index.apply(changes).await;
    report.complete = fin.complete;
    report.partial_reason = fin.partial_reason;
    report.absent_nics_affected = fin.absent_nics_affected;
    report.claims_inserted += fin.claims_inserted;
    report.claims_updated += fin.claims_updated;
    report.claims_deleted += fin.claims_deleted;
    // After the snapshot: whatever becomes of the VNet listing, the
    // snapshot stands.
    report.topology = store_vnets(pool, index, sub, taken_at, vnets).await;
    Ok(())
}

/// One subscription's VNets as listed.
struct VnetList {
    pages: usize,
    received: usize,
    vnets: Vec<VnetState>,
    rejected: Vec<String>,
    /// Why the list is incomplete (a page that never came back).
    failure: Option<String>,
}

/// Fetches every page of the subscription's VNet list. VNets outside `sub`
/// are rejected like unreadable ones.
async fn list_vnets(arm: &Arm, sub: &str, stats: &Stats) -> VnetList {
    let url = arm.url(
        &[
            "subscriptions",
            sub,
            "providers",
            "Microsoft.Network",
            "virtualNetworks",
        ],
        VNET_API_VERSION,
    );
    let mut pager = arm.pages(url, "virtualNetworks".into(), stats);
    let mut list = VnetList {
        pages: 0,
        received: 0,
        vnets: Vec::new(),
        rejected: Vec::new(),
        failure: None,
    };
    while let Some(page) = pager.next_page().await {
        let body = match page {
            Ok(b) => b,
            Err(e) => {
                list.failure = Some(e);
                break;
            }
        };
        list.pages += 1;
        for r in parse_vnet_page(&body).unwrap_or_default() {
            list.received += 1;
            match r {
                Ok(v) if v.id.subscription() == sub => list.vnets.push(v),
                Ok(v) => list.rejected.push(format!(
                    "virtualNetworks: VNet {} is outside subscription {sub}",
                    v.id
                )),
                Err((i, e)) => list.rejected.push(format!(
                    "virtualNetworks page {}: value[{i}]: {e}",
                    list.pages
                )),
            }
        }
    }
    list
}

/// Stores the VNets listed as a topology listing at `taken_at` (partial,
/// with the reason, when a page failed or a record could not be read; a
/// listing that fetched nothing is still recorded, so that `/v1/status`
/// tells why), and reloads the topology `index` holds. Failures are
/// reported, never raised: the NIC snapshot is already stored.
async fn store_vnets(
    pool: &PgPool,
    index: &Index,
    sub: &str,
    taken_at: DateTime<Utc>,
    list: VnetList,
) -> TopologyReport {
    let mut report = TopologyReport {
        pages: list.pages,
        vnets: list.received,
        rejected: list.rejected.len(),
        rejected_examples: list.rejected.iter().take(EXAMPLES).cloned().collect(),
        ..Default::default()
    };
    let mut reasons: Vec<String> = list.failure.into_iter().collect();
    if !list.rejected.is_empty() {
        reasons.push(format!(
            "{} VNet record(s) could not be used",
            list.rejected.len()
        ));
    }
    report.partial_reason = (!reasons.is_empty()).then(|| reasons.join("; "));
    let listing = TopologyListing {
        taken_at,
        subscriptions: vec![sub.to_string()],
        vnets: list.vnets,
        partial_reason: report.partial_reason.clone(),
    };
    let stored = match store::topology::ingest_listing(pool, &listing).await {
        Ok(r) => crate::sync::topology_written(pool, index, r.seq)
            .await
            .map(|()| r),
        Err(e) => Err(e.into()),
    };
    match stored {
        Ok(r) => {
            report.stored = r.stored;
            report.unchanged = r.unchanged;
        }
        Err(e) => report.error = Some(format!("{e:#}")),
    }
    report
}

/// Writes pages to the store as they come.
async fn consume(
    pool: &PgPool,
    index: &Index,
    meta: &SnapshotMeta,
    mut rx: mpsc::Receiver<Page>,
    report: &mut CollectReport,
) -> anyhow::Result<()> {
    while let Some(p) = rx.recv().await {
        report.nics += p.received;
        if p.scale_set {
            report.scale_set_nics += p.received;
        }
        report.rejected += p.rejected.len();
        for r in &p.rejected {
            if report.rejected_examples.len() < EXAMPLES {
                report.rejected_examples.push(r.clone());
            }
        }
        let page = SnapshotPage {
            meta: meta.clone(),
            last_page: false,
            rejected: p.rejected.len(),
            nics: p.nics,
        };
        let (r, changes) = store::ingest_snapshot_page(pool, &page).await?;
        index.apply(changes).await;
        report.accepted += r.accepted;
        report.changed += r.changed;
        report.claims_inserted += r.claims_inserted;
        report.claims_updated += r.claims_updated;
        report.claims_deleted += r.claims_deleted;
    }
    Ok(())
}

/// Parses one page's NICs; records outside `sub` are rejected like
/// unreadable ones (the snapshot cannot vouch for them).
fn parse_page(body: &Value, sub: &str, what: &str, scale_set: bool) -> Page {
    let items = nic_array(body).map(Vec::as_slice).unwrap_or(&[]);
    let mut nics = Vec::with_capacity(items.len());
    let mut rejected = Vec::new();
    for (i, v) in items.iter().enumerate() {
        match parse_nic(v) {
            Ok(n) if n.id.subscription() == sub => nics.push(n),
            Ok(n) => rejected.push(format!(
                "{what}: value[{i}]: NIC {} is outside subscription {sub}",
                n.id
            )),
            Err(e) => rejected.push(format!("{what}: value[{i}]: {e}")),
        }
    }
    Page {
        nics,
        received: items.len(),
        rejected,
        scale_set,
    }
}

/// Fetches every page of one NIC list and sends it on. `Err` is why the
/// list is incomplete.
async fn list_nics(
    arm: &Arm,
    url: reqwest::Url,
    what: String,
    sub: &str,
    scale_set: bool,
    stats: &Stats,
    tx: mpsc::Sender<Page>,
) -> (usize, Result<(), String>) {
    let mut pager = arm.pages(url, what.clone(), stats);
    while let Some(page) = pager.next_page().await {
        let body = match page {
            Ok(b) => b,
            Err(e) => return (pager.pages() - 1, Err(e)),
        };
        let page = parse_page(&body, sub, &what, scale_set);
        drop(body);
        tracing::debug!(list = %what, page = pager.pages(), nics = page.received, "page fetched");
        if tx.send(page).await.is_err() {
            return (pager.pages(), Err(format!("{what}: ingest stopped")));
        }
    }
    (pager.pages(), Ok(()))
}

/// A scale set whose NICs the subscription-wide list does not return.
struct ScaleSet {
    resource_group: String,
    name: String,
}

/// Uniform scale sets of a scale-set list page. Flexible ones are skipped:
/// their NICs are ordinary `Microsoft.Network/networkInterfaces` resources,
/// listed by the subscription-wide list. `orchestrationMode` absent means
/// Uniform (the only mode before Flexible existed).
fn uniform_scale_sets(body: &Value, out: &mut Vec<ScaleSet>, rejected: &mut Vec<String>) {
    for (i, v) in nic_array(body)
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        let mode = v
            .pointer("/properties/orchestrationMode")
            .and_then(Value::as_str)
            .unwrap_or("Uniform");
        if !mode.eq_ignore_ascii_case("Uniform") {
            continue;
        }
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| ArmId::parse(s).ok());
        let rg = id
            .as_ref()
            .and_then(|id| id.resource_group().map(str::to_string));
        let name = id
            .as_ref()
            .and_then(|id| id.segment("virtualMachineScaleSets").map(str::to_string))
            .or_else(|| v.get("name").and_then(Value::as_str).map(str::to_string));
        match (rg, name) {
            (Some(resource_group), Some(name)) => out.push(ScaleSet {
                resource_group,
                name,
            }),
            _ => rejected.push(format!("scale sets: value[{i}]: no usable id")),
        }
    }
}

/// Runs every list; returns why lists failed, pages fetched, and scale sets
/// whose NICs were listed.
async fn produce(
    arm: &Arm,
    cfg: &CollectorConfig,
    sub: &str,
    stats: &Stats,
    tx: mpsc::Sender<Page>,
) -> (Vec<String>, usize, usize) {
    let nic_list = {
        let url = arm.url(
            &[
                "subscriptions",
                sub,
                "providers",
                "Microsoft.Network",
                "networkInterfaces",
            ],
            NIC_API_VERSION,
        );
        list_nics(
            arm,
            url,
            "networkInterfaces".into(),
            sub,
            false,
            stats,
            tx.clone(),
        )
    };
    let scale_sets = async move {
        let mut failures = Vec::new();
        let mut sets = Vec::new();
        let mut bad = Vec::new();
        let url = arm.url(
            &[
                "subscriptions",
                sub,
                "providers",
                "Microsoft.Compute",
                "virtualMachineScaleSets",
            ],
            VMSS_API_VERSION,
        );
        let mut pager = arm.pages(url, "virtualMachineScaleSets".into(), stats);
        while let Some(p) = pager.next_page().await {
            match p {
                Ok(body) => uniform_scale_sets(&body, &mut sets, &mut bad),
                Err(e) => failures.push(e),
            }
        }
        let mut pages = pager.pages() - failures.len();
        if !bad.is_empty() {
            // A scale set it cannot name is one whose NICs it cannot list.
            failures.push(format!(
                "{} scale set(s) without a usable id: {}",
                bad.len(),
                bad.join(", ")
            ));
        }
        let n = sets.len();
        let results: Vec<(usize, Result<(), String>)> = futures::stream::iter(sets)
            .map(|s| {
                let url = arm.url(
                    &[
                        "subscriptions",
                        sub,
                        "resourceGroups",
                        &s.resource_group,
                        "providers",
                        "microsoft.Compute",
                        "virtualMachineScaleSets",
                        &s.name,
                        "networkInterfaces",
                    ],
                    VMSS_NIC_API_VERSION,
                );
                let what = format!(
                    "scale set {}/{} networkInterfaces",
                    s.resource_group, s.name
                );
                list_nics(arm, url, what, sub, true, stats, tx.clone())
            })
            .buffer_unordered(cfg.concurrency.max(1))
            .collect()
            .await;
        for (p, r) in results {
            pages += p;
            if let Err(e) = r {
                failures.push(e);
            }
        }
        drop(tx);
        (failures, pages, n)
    };
    let ((nic_pages, nic_result), (mut failures, vmss_pages, n)) =
        tokio::join!(nic_list, scale_sets);
    if let Err(e) = nic_result {
        failures.push(e);
    }
    (failures, nic_pages + vmss_pages, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subscriptions_are_normalized() {
        assert_eq!(normalize_subscription(" /subscriptions/AB-CD/ "), "ab-cd");
        assert_eq!(normalize_subscription("AB-CD"), "ab-cd");
    }

    #[test]
    fn only_uniform_scale_sets_are_listed() {
        let body = json!({"value": [
            {"id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/u1",
             "properties": {"orchestrationMode": "Uniform"}},
            {"id": "/subscriptions/s/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/old"},
            {"id": "/subscriptions/s/resourceGroups/rg2/providers/Microsoft.Compute/virtualMachineScaleSets/flex",
             "properties": {"orchestrationMode": "Flexible"}},
            {"name": "nameless-and-idless", "id": 7}
        ]});
        let (mut sets, mut bad) = (Vec::new(), Vec::new());
        uniform_scale_sets(&body, &mut sets, &mut bad);
        let names: Vec<(&str, &str)> = sets
            .iter()
            .map(|s| (s.resource_group.as_str(), s.name.as_str()))
            .collect();
        assert_eq!(names, [("rg1", "u1"), ("rg1", "old")]);
        assert_eq!(bad, ["scale sets: value[3]: no usable id"]);
    }
}
