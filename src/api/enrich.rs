//! `POST /v1/enrich`: flow logs in, one enriched NDJSON line per tuple out,
//! streamed while the body is read (see `crate::enrich`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode, Problem};
use super::{AppState, QueryParams};
use crate::enrich::{Attributor, EnrichOptions, Format, enrich_stream};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EnrichParams {
    /// `nsg`, `vnet` or `flat`. Default: detected from each record's content.
    pub format: Option<String>,
    /// `true`: parse and write the tuples without attribution (the benchmark floor).
    pub floor: Option<bool>,
}

/// Enrich flow logs: every tuple with the VM identity of both ends.
///
/// Takes NSG flow log blobs (version 1 or 2), VNet flow log blobs (version 4),
/// the same records as JSON Lines, or flat JSON Lines of
/// `{time, src_ip, dst_ip, ...}` (optional `mac`, `vnet`, `subscription`
/// hints; other fields pass through), plain or gzip. Answers NDJSON, one line
/// per tuple in ECS style (`@timestamp`, `source.*`, `destination.*`,
/// `network.*`, `azure.flowlog.*`, and per end an `ipwho` block with the
/// status, NIC, VM, VNet and evidence), `{"ipwho.error": ...}` lines for
/// malformed records or tuples (the rest are still enriched), and a final
/// `{"ipwho.summary": ...}` line with counts per status, rejections and how
/// current the index is. The capturing side is resolved by the NIC's MAC
/// first; the other end by IP within the scope the record implies. The body
/// size is not limited (it is streamed); the response is gzip when asked.
#[utoipa::path(
    post,
    path = "/v1/enrich",
    tag = "enrichment",
    params(EnrichParams),
    request_body(content = String, description = "Flow-log records (JSON, JSON Lines, or gzip of either)", content_type = "application/json"),
    responses(
        (status = 200, description = "Enriched tuples, one JSON object per line, then a summary line", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "Unknown format", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn enrich(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EnrichParams>,
    req: Request,
) -> Result<Response, ApiError> {
    let format = match q.format.as_deref().map(str::trim) {
        None | Some("") | Some("auto") => None,
        Some(f) => Some(f.parse::<Format>().map_err(|_| {
            ApiError::bad(
                ErrorCode::InvalidParameter,
                "format",
                format!("format {f:?}: expected nsg, vnet or flat"),
            )
        })?),
    };
    let opts = EnrichOptions {
        format,
        lookups: !q.floor.unwrap_or(false),
        ..Default::default()
    };
    let (seq, _) = state.index.freshness();
    let attributor: Arc<dyn Attributor> = state.index.clone();
    let out = enrich_stream(req.into_body().into_data_stream(), opts, attributor);
    let mut res = Response::new(Body::from_stream(out));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    res.headers_mut()
        .insert("x-ipwho-index-sequence", HeaderValue::from(seq));
    Ok(res)
}
