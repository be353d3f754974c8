//! The change feed (`claim_changes`) as a follower reads it: where it ends,
//! which NICs its entries name, and those NICs' claims; and its pruning.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;

use crate::engine::Claim;

/// The feed's last entry (0 when it is empty).
pub async fn feed_end(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM claim_changes")
        .fetch_one(pool)
        .await
}

/// The feed's first and last entries (`None` when it is empty), and whether
/// the claims are intact (not lost in a crash: they are unlogged).
pub async fn feed_state(pool: &PgPool) -> sqlx::Result<(Option<i64>, Option<i64>, bool)> {
    sqlx::query_as(
        "SELECT min(seq), max(seq), EXISTS (SELECT FROM claims_intact) FROM claim_changes",
    )
    .fetch_one(pool)
    .await
}

/// The feed's first and last entries (`None` when it is empty).
pub async fn feed_span(pool: &PgPool) -> sqlx::Result<(Option<i64>, Option<i64>)> {
    sqlx::query_as("SELECT min(seq), max(seq) FROM claim_changes")
        .fetch_one(pool)
        .await
}

/// The NIC keys named by the entries after `after` up to `upto`, each once;
/// `""` among them marks a moved horizon or a topology listing.
pub async fn changed_nics(pool: &PgPool, after: i64, upto: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT unnest(nic_keys) FROM claim_changes WHERE seq > $1 AND seq <= $2",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(pool)
    .await
}

/// The claims of each of `nics`, by NIC key; a NIC without claims has an
/// empty list.
pub async fn claims_by_nic(
    pool: &PgPool,
    nics: &[String],
) -> sqlx::Result<HashMap<String, Vec<Claim>>> {
    let mut rows: Vec<(String, super::Doc<Claim>)> = sqlx::query_as(concat!(
        "SELECT nic_key, detail FROM claims WHERE ",
        super::of_nics!()
    ))
    .bind(nics)
    .fetch_all(pool)
    .await?;
    super::of_wanted(&mut rows, nics, |r| &r.0);
    let mut by_nic: HashMap<String, Vec<Claim>> =
        nics.iter().map(|n| (n.clone(), Vec::new())).collect();
    for (n, c) in rows {
        by_nic.entry(n).or_default().push(c.0);
    }
    Ok(by_nic)
}

/// Deletes entries older than `keep`, except the latest. Returns how many.
pub async fn prune_feed(pool: &PgPool, keep: Duration) -> sqlx::Result<u64> {
    let secs = keep.as_secs_f64();
    let r = sqlx::query(
        "DELETE FROM claim_changes
         WHERE changed_at < now() - make_interval(secs => $1)
           AND seq < (SELECT max(seq) FROM claim_changes)",
    )
    .bind(secs)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}
