//! Histories: every claim on an IP, or of a NIC, over a time range,
//! oldest first, with how their subscriptions were watched meanwhile.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorCode, Problem};
use super::lookup::{ScopeParams, parse_at, parse_id, parse_ip};
use super::views::{ClaimView, HistoryView};
use super::watch::CoverageView;
use super::{AppState, QueryParams};
use crate::engine::{Owned, Window};
use crate::index::{Claims, Index};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct IpRangeParams {
    /// Start of the range (RFC 3339). Default: unbounded.
    pub from: Option<String>,
    /// End of the range (RFC 3339). Default: unbounded.
    pub to: Option<String>,
    /// Narrow to one VNet (ARM id, any casing).
    pub vnet: Option<String>,
    /// Narrow to the VNet of this subnet (ARM id).
    pub subnet: Option<String>,
    /// Narrow to one subscription (id).
    pub subscription: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeParams {
    /// Start of the range (RFC 3339). Default: unbounded.
    pub from: Option<String>,
    /// End of the range (RFC 3339). Default: unbounded.
    pub to: Option<String>,
}

fn range(from: Option<&str>, to: Option<&str>) -> Result<Window, ApiError> {
    let start = match from {
        Some(s) if !s.trim().is_empty() => parse_at(Some(s), "from")?,
        _ => crate::engine::NEG_INF,
    };
    let end = match to {
        Some(s) if !s.trim().is_empty() => parse_at(Some(s), "to")?.saturating_add(1),
        _ => crate::engine::POS_INF,
    };
    if end <= start {
        return Err(ApiError::bad(
            ErrorCode::InvalidParameter,
            "to",
            "to must not be before from",
        ));
    }
    Ok(Window { start, end })
}

/// The claims `own` whose possible window meets `w`, oldest first, each
/// bounded by exclusivity among `all` (its neighbours on its IPs, `own`
/// included), with how their subscriptions were watched over `w`.
fn history(subject: String, w: Window, own: &Claims<'_>, all: &Claims<'_>) -> HistoryView {
    let refs = all.refs();
    let bounds = crate::engine::exclusive(&refs);
    let mut cs: Vec<Owned<'_>> = own
        .entries
        .iter()
        .filter_map(|e| {
            let i = refs.iter().position(|c| std::ptr::eq(*c, &e.claim))?;
            let b = &bounds[i];
            Some(Owned {
                claim: &e.claim,
                possible: b.possible,
                start_by: b.start_by.map(|j| refs[j]),
                end_by: b.end_by.map(|j| refs[j]),
            })
        })
        .filter(|o| o.possible.overlaps(&w))
        .collect();
    cs.sort_by_key(|o| (o.possible.start, o.claim.certain.start));
    let mut subs: Vec<&str> = cs.iter().map(|o| o.claim.subscription()).collect();
    subs.sort_unstable();
    subs.dedup();
    HistoryView {
        subject,
        from: crate::store::to_ts(w.start),
        to: crate::store::to_ts(w.end),
        claims: cs.iter().map(ClaimView::of).collect(),
        coverage: subs
            .into_iter()
            .map(|s| CoverageView::new(s, own.coverage.get(s), w))
            .collect(),
    }
}

/// Every claim on an IP (or a prefix containing it) in a time range, oldest first.
#[utoipa::path(
    get,
    path = "/v1/ips/{ip}/history",
    tag = "lookups",
    params(("ip" = String, Path, description = "IPv4 or IPv6 address"), IpRangeParams),
    responses(
        (status = 200, description = "Claims whose possible window meets the range", body = HistoryView),
        (status = 400, description = "Invalid IP, time or scope", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn ip_history(
    State(state): State<AppState>,
    Path(ip): Path<String>,
    QueryParams(q): QueryParams<IpRangeParams>,
) -> Result<Json<HistoryView>, ApiError> {
    let scope = ScopeParams {
        vnet: q.vnet,
        subnet: q.subnet,
        subscription: q.subscription,
    };
    Ok(Json(ip_history_for(
        &state.index,
        &ip,
        q.from.as_deref(),
        q.to.as_deref(),
        &scope,
    )?))
}

/// Every claim on an IP whose possible window meets `[from, to]`, oldest first.
pub fn ip_history_for(
    index: &Index,
    ip: &str,
    from: Option<&str>,
    to: Option<&str>,
    scope: &ScopeParams,
) -> Result<HistoryView, ApiError> {
    let ip = parse_ip(ip, "ip")?;
    let w = range(from, to)?;
    let scope = scope.scope()?;
    let claims = index.claims_of_ip(ip, &scope);
    Ok(history(ip.to_string(), w, &claims.in_scope(), &claims))
}

/// Every IP a NIC held, when (the NIC's ARM id, URL-encoded, in any casing).
#[utoipa::path(
    get,
    path = "/v1/nics/{id}/history",
    tag = "lookups",
    params(("id" = String, Path, description = "NIC ARM id, URL-encoded (slashes as %2F); given with its slashes as they are, it is read the same"), RangeParams),
    responses(
        (status = 200, description = "The NIC's claims, oldest first", body = HistoryView),
        (status = 400, description = "Invalid id or time", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No claim of this NIC", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn nic_history(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<RangeParams>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = parse_id(&id, "id")?;
    let w = range(q.from.as_deref(), q.to.as_deref())?;
    let claims = state.index.claims_of_nic(id.key());
    if claims.entries.is_empty() {
        return Err(ApiError::not_found(format!(
            "no claim of NIC {id} is known"
        )));
    }
    let all = state.index.neighbours(&claims);
    Ok(Json(history(id.to_string(), w, &claims, &all)))
}
