//! `POST /v1/enrich`: flow logs in, one enriched NDJSON line per tuple out,
//! streamed while the body is read (see `crate::enrich`).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::Semaphore;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode, Problem};
use super::{AppState, QueryParams};
use crate::enrich::{Attributor, EnrichOptions, Format, RunLimits, enrich_stream};

/// The places for concurrent enrichment streams ([`super::Limits::enrich_streams`]).
#[derive(Clone)]
pub struct EnrichSlots(pub Arc<Semaphore>);

impl EnrichSlots {
    pub fn new(streams: usize) -> Self {
        EnrichSlots(Arc::new(Semaphore::new(streams)))
    }
}

/// How long a response may stay unread past the time limit before it is
/// cut (the run itself has stopped by then).
const UNREAD_GRACE: Duration = Duration::from_secs(5);

const SET_BY: &str = " (--enrich-max-bytes / IPWHO_ENRICH_MAX_BYTES, --enrich-timeout-secs / IPWHO_ENRICH_TIMEOUT_SECS)";

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
/// first; the other end by IP within the scope the record implies. The
/// response is gzip when asked.
///
/// Limits (configurable): a run reads at most `--enrich-max-bytes` (1 GiB,
/// decompressed; a body whose `Content-Length` is over it is refused with
/// 413) for at most `--enrich-timeout-secs` (300 s); past either it stops,
/// with an error line and a summary with `complete: false`. At most
/// `--enrich-streams` run at once (the cores but one), so that lookups keep
/// a core; past them, 503 `unavailable` with `Retry-After`.
#[utoipa::path(
    post,
    path = "/v1/enrich",
    tag = "enrichment",
    params(EnrichParams),
    request_body(content = String, description = "Flow-log records (JSON, JSON Lines, or gzip of either)", content_type = "application/json"),
    responses(
        (status = 200, description = "Enriched tuples, one JSON object per line, then a summary line", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "Unknown format, or a query parameter it does not take", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Content-Length over --enrich-max-bytes", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every enrichment stream is taken (--enrich-streams); retry after Retry-After seconds", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn enrich(
    State(state): State<AppState>,
    Extension(slots): Extension<EnrichSlots>,
    QueryParams(q): QueryParams<EnrichParams>,
    req: Request,
) -> Result<Response, ApiError> {
    let limits = &state.limits;
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if let Some(n) = length
        && n > limits.enrich_max_bytes
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!(
                "the body ({n} bytes) is over the enrichment limit of {} bytes (--enrich-max-bytes / \
                 IPWHO_ENRICH_MAX_BYTES); post the flow logs in smaller parts",
                limits.enrich_max_bytes
            ),
        ));
    }
    let Ok(permit) = slots.0.clone().try_acquire_owned() else {
        let mut r = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!(
                "all {} enrichment streams are taken (--enrich-streams / IPWHO_ENRICH_STREAMS); retry shortly",
                limits.enrich_streams
            ),
        )
        .into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return Ok(r);
    };
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
        limits: RunLimits {
            max_bytes: Some(limits.enrich_max_bytes),
            time: Some(limits.enrich_timeout),
            set_by: SET_BY,
        },
        ..Default::default()
    };
    let (seq, _) = state.index.freshness();
    let attributor: Arc<dyn Attributor> = state.index.clone();
    let deadline = tokio::time::Instant::now() + limits.enrich_timeout;
    let input = until(
        req.into_body().into_data_stream(),
        deadline,
        limits.enrich_timeout,
    );
    // The stream holds its place until its response is written or dropped
    // (the run stops when its output has no reader); an answer left unread
    // is cut shortly after the time limit.
    let out = enrich_stream(input, opts, attributor)
        .take_until(tokio::time::sleep_until(deadline + UNREAD_GRACE))
        .map(move |chunk| {
            let _held = &permit;
            chunk
        });
    let mut res = Response::new(Body::from_stream(out));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    res.headers_mut()
        .insert("x-ipwho-index-sequence", HeaderValue::from(seq));
    Ok(res)
}

/// The body's chunks until `deadline`; then an error that ends the run (a
/// stalled upload would otherwise hold its stream for ever).
fn until(
    body: axum::body::BodyDataStream,
    deadline: tokio::time::Instant,
    limit: Duration,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static {
    let timer = Box::pin(tokio::time::sleep_until(deadline));
    let state = (body, timer, false);
    futures::stream::unfold(state, move |(mut body, mut timer, done)| async move {
        if done {
            return None;
        }
        tokio::select! {
            chunk = body.next() => {
                let chunk = chunk?.map_err(std::io::Error::other);
                Some((chunk, (body, timer, false)))
            }
            () = &mut timer => {
                let e = std::io::Error::other(format!(
                    "the body did not arrive within the limit of {} s{SET_BY}",
                    limit.as_secs_f64()
                ));
                Some((Err(e), (body, timer, true)))
            }
        }
    })
}
