//! Keeping the in-memory index current with writes made by other processes
//! (other replicas, `ipwho ingest` from a shell): every ingest appends the
//! NICs whose claims it changed to `claim_changes` (one entry per write of
//! claims) and notifies `ipwho_claims`; a follower reloads those NICs' claims.
//! A moved horizon or a new topology listing is an entry naming no NIC
//! (`""`): the follower reloads the horizons and the topology.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use crate::engine::Freshness;
use crate::index::Index;

/// Loads every claim into a new index, positioned at the current end of the change feed.
pub async fn load(pool: &PgPool, freshness: Freshness) -> anyhow::Result<Index> {
    let index = Index::with_freshness(freshness);
    load_into(pool, &index).await?;
    Ok(index)
}

/// An index of the claims on `ip` alone (and the prefixes holding it), with
/// every horizon: it answers lookups and the history of `ip` as the full
/// index does, at the cost of one query.
pub async fn load_ip(
    pool: &PgPool,
    ip: std::net::IpAddr,
    freshness: Freshness,
) -> anyhow::Result<Index> {
    crate::store::rebuild_claims_if_lost(pool).await?;
    let coverage = crate::store::load_coverage(pool, &freshness).await?;
    let claims = crate::store::claims_of_ip(pool, ip).await?;
    Ok(Index::from_claims(claims, coverage, freshness))
}

/// Replaces what `index` holds (an [`Index::loading`] one, say) by every
/// claim, and positions it at the current end of the change feed.
pub async fn load_into(pool: &PgPool, index: &Index) -> anyhow::Result<()> {
    // Claims lost in a crash are recomputed before they are read.
    crate::store::rebuild_claims_if_lost(pool).await?;
    // Read the feed position first: changes committed while loading are
    // replayed by the next catch-up (replaying is harmless).
    let seq = crate::store::feed_end(pool).await?;
    let fresh = build(pool, index.freshness_policy()).await?;
    let topology = crate::store::topology::load_topology(pool).await?;
    let mut applied = index.applied_seq.lock().await;
    index.reset(fresh);
    index.set_topology(topology);
    *applied = seq;
    Ok(())
}

/// Reloads the topology (every VNet listing) into `index`.
async fn reload_topology(pool: &PgPool, index: &Index) -> anyhow::Result<()> {
    let topology = crate::store::topology::load_topology(pool).await?;
    tracing::debug!(vnets = topology.len(), "topology reloaded");
    index.set_topology(topology);
    Ok(())
}

/// After this process stored a topology listing (`seq`: the change-feed
/// entry it wrote, if it changed anything), reloads the topology into
/// `index` and advances its change-feed position as [`Index::apply`] does.
/// Under the position's lock, so that a catch-up running meanwhile cannot
/// leave an older topology in place.
pub async fn topology_written(
    pool: &PgPool,
    index: &Index,
    seq: Option<(i64, i64)>,
) -> anyhow::Result<()> {
    let mut applied = index.applied_seq.lock().await;
    reload_topology(pool, index).await?;
    if let Some((lo, hi)) = seq
        && *applied == lo - 1
    {
        *applied = hi;
    }
    Ok(())
}

/// A new index of every claim and horizon in the database: claims are read,
/// parsed and indexed in chunks, the three overlapping.
async fn build(pool: &PgPool, freshness: Freshness) -> anyhow::Result<Index> {
    let started = std::time::Instant::now();
    let builder = Index::builder(
        crate::store::load_coverage(pool, &freshness).await?,
        freshness,
    );
    let claims =
        crate::store::stream_claims(pool, crate::store::LOAD_CHUNK, |chunk| builder.add(chunk))
            .await?;
    let index = builder.finish().await;
    tracing::info!(
        claims,
        seconds = started.elapsed().as_secs_f64(),
        "claims loaded into the index"
    );
    Ok(index)
}

/// Applies every change-feed entry after the index's position. Returns how
/// many NICs were reloaded.
pub async fn catch_up(pool: &PgPool, index: &Index) -> anyhow::Result<usize> {
    let mut applied = index.applied_seq.lock().await;
    let (mut min, mut max, intact) = crate::store::feed_state(pool).await?;
    let lost = !intact;
    if lost {
        // Postgres lost the claims (a crash; they are unlogged): this index
        // still holds what they were, but what an ingest now reads back of
        // them must be recomputed first, and is reloaded whole after.
        tracing::warn!("the claims in the database were lost; recomputing and reloading them");
        crate::store::rebuild_claims_if_lost(pool).await?;
        (min, max) = crate::store::feed_span(pool).await?;
    }
    let Some(max) = max else { return Ok(0) };
    if max == *applied && !lost {
        return Ok(0);
    }
    // A feed that ends before this replica's position was restarted (the
    // database restored from a backup, or reset): nothing in it says what
    // changed, so everything is reloaded, as when the replica is behind the
    // pruned part of the feed.
    let restarted = max < *applied;
    let pruned = min.is_some_and(|m| m > *applied + 1);
    if lost || restarted || pruned {
        if restarted {
            tracing::warn!(
                applied = *applied,
                latest = max,
                "change feed restarted behind this replica; reloading all claims"
            );
        } else if pruned {
            tracing::warn!(applied = *applied, oldest = ?min, "change feed pruned past this replica; reloading all claims");
        }
        let fresh = build(pool, index.freshness_policy()).await?;
        let n = fresh.nics();
        index.reset(fresh);
        reload_topology(pool, index).await?;
        *applied = max;
        return Ok(n);
    }
    let all = crate::store::changed_nics(pool, *applied, max).await?;
    // "" marks a moved horizon or a topology listing, not a NIC (the
    // coverage is reloaded below).
    if all.iter().any(String::is_empty) {
        reload_topology(pool, index).await?;
    }
    let nics: Vec<String> = all.into_iter().filter(|n| !n.is_empty()).collect();
    let by_nic = crate::store::claims_by_nic(pool, &nics).await?;
    let n = by_nic.len();
    index.replace(by_nic);
    index.set_coverage(crate::store::load_coverage(pool, &index.freshness_policy()).await?);
    *applied = max;
    Ok(n)
}

/// Follows the change feed until `shutdown`: on every notification, and
/// every `poll` in case one was missed.
pub async fn follow(
    pool: PgPool,
    index: std::sync::Arc<Index>,
    poll: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut l) => match l.listen("ipwho_claims").await {
            Ok(()) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "cannot LISTEN ipwho_claims; polling only");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot open a listener connection; polling only");
            None
        }
    };
    let mut tick = tokio::time::interval(poll);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
            n = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = n {
                    tracing::warn!(error = %e, "change-feed listener failed; polling only");
                    listener = None;
                }
            }
        }
        match catch_up(&pool, &index).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(nics = n, "index caught up with the change feed"),
            Err(e) => tracing::warn!(error = %e, "change-feed catch-up failed"),
        }
    }
}

/// Deletes change-feed entries older than `keep`, except the latest: a
/// follower whose position is older than every entry left knows that it
/// missed some and reloads everything (with no entry left, it could not tell).
pub async fn prune(pool: &PgPool, keep: Duration) -> anyhow::Result<u64> {
    Ok(crate::store::prune_feed(pool, keep).await?)
}
