//! The estate posted to the server, and every lookup asked of it: probes
//! through `POST /v1/lookups`, flow ends through `POST /v1/enrich`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;

use crate::FeedItem;
use crate::ask::{Answer, Ask, Enriched, ask_enrich, ask_lookups};
use crate::feed::{item_bodies, post};

use super::FeedStats;
use super::lookups::Lookup;

pub(super) async fn feed(
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

/// Probes through `POST /v1/lookups`, flow ends through `POST /v1/enrich`
/// (one post per flow-log file); answers in the order of `lookups`.
pub(super) async fn ask_all(
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
