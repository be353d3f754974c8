//! Evidence in: NIC snapshots (page by page) and Activity Log records.

use axum::Json;
use axum::extract::{Path, Request, State};

use super::error::{ApiError, Problem};
use super::{AppState, NoParams, QueryParams, body_bytes};
use crate::ingest::{self, ActivityResponse, SnapshotParams, SnapshotResponse};

/// Post a NIC snapshot, or one page of it.
///
/// The body is a JSON object with the metadata (`taken_at`, `subscriptions`,
/// `complete`, `snapshot_id`, `last_page`) and the NICs exactly as ARM lists
/// them under `value` (or `nics`, or Resource Graph rows under `data`, as
/// objects or in the table format); or an
/// ARM list page as it came (or one NIC, as an ARM GET returns it), with the
/// metadata as query parameters. NICs as `az network nic list` or
/// `Get-AzNetworkInterface | ConvertTo-Json` print them (properties
/// flattened) are read too. A
/// `complete` snapshot is evidence that every NIC of its subscriptions that
/// it does not list did not exist at `taken_at`; it counts only once its last
/// page is in. Posting the same page again changes nothing. A NIC record that
/// cannot be read is rejected (index, field, reason) and the rest are stored;
/// a complete snapshot with unreadable records is downgraded to partial (a
/// NIC of a subscription it does not cover is rejected, but cannot be one of
/// its own, and leaves it complete).
#[utoipa::path(
    post,
    path = "/v1/snapshots",
    tag = "ingest",
    params(SnapshotParams),
    request_body(content = serde_json::Value, description = "Snapshot page: metadata and NICs (ARM NetworkInterface objects); plain or gzip"),
    responses(
        (status = 200, description = "What was stored", body = SnapshotResponse),
        (status = 400, description = "Not a snapshot page (missing taken_at, no NIC array, ...)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Snapshot id reused with other metadata", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the configured limit", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn snapshots(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<SnapshotParams>,
    req: Request,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let body = body_bytes(req, &state).await?;
    let body = ingest::decompressed(&body, Some(state.limits.max_body_bytes))?;
    Ok(Json(
        ingest::ingest_snapshot(&state.pool, &state.index, &body, q).await?,
    ))
}

/// Finish a snapshot posted page by page (same as a page with `last_page: true`). Idempotent.
#[utoipa::path(
    post,
    path = "/v1/snapshots/{id}/done",
    tag = "ingest",
    params(("id" = String, Path, description = "The snapshot id used on its pages")),
    responses(
        (status = 200, description = "The snapshot is finished", body = SnapshotResponse),
        (status = 400, description = "A query parameter (it takes none), or an id with a NUL character", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such snapshot", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn snapshot_done(
    State(state): State<AppState>,
    Path(id): Path<String>,
    _: QueryParams<NoParams>,
) -> Result<Json<SnapshotResponse>, ApiError> {
    Ok(Json(
        ingest::finish_snapshot(&state.pool, &state.index, &id).await?,
    ))
}

/// Post Activity Log records.
///
/// Accepts the Event Hub / storage export envelope `{"records": [...]}`,
/// JSON Lines (one record a line), a JSON array, or one record. Successful
/// `MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE` (state from
/// `properties.responseBody`) and `.../DELETE` records become evidence; the
/// rest are counted as ignored, per reason. A record that cannot be read is
/// rejected (index, field, reason); the batch never fails for it.
#[utoipa::path(
    post,
    path = "/v1/activity",
    tag = "ingest",
    request_body(content = String, description = "Activity Log records; plain or gzip (known by its bytes, with or without Content-Encoding)", content_type = "application/json"),
    responses(
        (status = 200, description = "What was stored", body = ActivityResponse),
        (status = 400, description = "No record in the body can be read (the first one's field and reason), a gzip body that cannot be decompressed, or a query parameter (it takes none)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the configured limit (decompressed, when gzip)", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn activity(
    State(state): State<AppState>,
    _: QueryParams<NoParams>,
    req: Request,
) -> Result<Json<ActivityResponse>, ApiError> {
    let body = body_bytes(req, &state).await?;
    let body = ingest::decompressed(&body, Some(state.limits.max_body_bytes))?;
    Ok(Json(
        ingest::ingest_activity(&state.pool, &state.index, &body).await?,
    ))
}
