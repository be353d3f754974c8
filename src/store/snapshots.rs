//! Snapshots as their writers keep track of them, outside the ingest of
//! their pages: what a finished snapshot covered, a collector's unfinished
//! snapshots closed as partial, and a collection's outcome noted before its
//! snapshot is finished.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The instant a stored snapshot was taken at and the subscriptions it
/// covers.
pub async fn snapshot_scope(pool: &PgPool, id: &str) -> sqlx::Result<(DateTime<Utc>, Vec<String>)> {
    sqlx::query_as("SELECT taken_at, subscriptions FROM snapshots WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Marks partial the unfinished snapshots of subscription `sub` whose ids
/// start with `prefix` (their writer stopped before finishing them); returns
/// their ids, for the caller to finish.
pub async fn abandon_unfinished(
    pool: &PgPool,
    prefix: &str,
    sub: &str,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "UPDATE snapshots SET complete = false,
                partial_reason = coalesce(partial_reason, 'the collector stopped before finishing this snapshot')
         WHERE starts_with(id, $1) AND NOT finished AND $2 = ANY(subscriptions)
         RETURNING id",
    )
    .bind(prefix)
    .bind(sub)
    .fetch_all(pool)
    .await
}

/// Records on the unfinished snapshot `id` how many pages were listed, and,
/// when `reason` says why the listing is incomplete, makes it partial with
/// that reason first.
pub async fn note_listing(
    pool: &PgPool,
    id: &str,
    pages: i32,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE snapshots SET pages = $2,
                complete = complete AND $3::text IS NULL,
                partial_reason = CASE WHEN $3::text IS NULL THEN partial_reason
                                      ELSE concat_ws('; ', $3::text, partial_reason) END
         WHERE id = $1 AND NOT finished",
    )
    .bind(id)
    .bind(pages)
    .bind(reason)
    .execute(pool)
    .await
    .map(|_| ())
}
