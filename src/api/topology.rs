//! VNet topology in and out: listings of VNets (address spaces, subnets,
//! peerings) posted as evidence, and each VNet as its latest listing
//! showed it.

use axum::Json;
use axum::extract::{Request, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorCode, Problem};
use super::{AppState, QueryParams, body_bytes};
use crate::ingest::{self, TopologyParams, TopologyResponse};

/// Post a listing of VNets (or one page of it).
///
/// The body is a JSON object with the metadata (`taken_at`,
/// `subscriptions`) and the VNets exactly as ARM lists them under `value`
/// (or Resource Graph rows under `data`, as objects or in the table
/// format); or an ARM list page as it came (or one VNet, as an ARM GET
/// returns it), with the metadata as query parameters. VNets as `az
/// network vnet list` or `Get-AzVirtualNetwork | ConvertTo-Json -Depth 8`
/// print them are read too. Each VNet's address space, subnets and
/// peerings at `taken_at` become evidence of where routing can take a
/// packet from it; a peering carries traffic only when its `peeringState`
/// is `Connected`. Posting the same listing again changes nothing; the
/// pages of one listing are posted with the same `taken_at` and
/// `subscriptions`. A VNet record that cannot be read is rejected (index,
/// field, reason) and the rest are stored; a body with no readable VNet is
/// a 400.
#[utoipa::path(
    post,
    path = "/v1/topology",
    tag = "ingest",
    params(TopologyParams),
    request_body(content = serde_json::Value, description = "VNet listing: metadata and VNets (ARM VirtualNetwork objects); plain or gzip"),
    responses(
        (status = 200, description = "What was stored", body = TopologyResponse),
        (status = 400, description = "Not a VNet listing (missing taken_at, no VNet array, no readable VNet, ...)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over the configured limit (decompressed, when gzip)", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn post_topology(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<TopologyParams>,
    req: Request,
) -> Result<Json<TopologyResponse>, ApiError> {
    let body = body_bytes(req, &state).await?;
    let body = ingest::decompressed(&body, Some(state.limits.max_body_bytes))?;
    Ok(Json(
        ingest::ingest_topology(&state.pool, &state.index, &body, q).await?,
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopologyQuery {
    /// Only the VNets of this subscription.
    pub subscription: Option<String>,
}

/// The VNets, each as its latest listing showed it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopologyView {
    pub vnets: Vec<VnetView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VnetView {
    pub id: String,
    pub subscription: String,
    /// CIDR prefixes.
    pub address_space: Vec<String>,
    pub subnets: Vec<SubnetView>,
    pub peerings: Vec<PeeringView>,
    /// The latest listing that showed the VNet.
    pub taken_at: DateTime<Utc>,
    /// The first listing of the run of listings that showed it so.
    pub since: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubnetView {
    pub id: String,
    pub prefixes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PeeringView {
    /// The remote VNet's id.
    pub remote: String,
    /// `peeringState` is `Connected`: traffic flows.
    pub connected: bool,
    /// The remote address space as the peering shows it.
    pub remote_address_space: Vec<String>,
}

/// Each VNet as its latest listing showed it: address space, subnets and
/// peerings.
#[utoipa::path(
    get,
    path = "/v1/topology",
    tag = "lookups",
    params(TopologyQuery),
    responses(
        (status = 200, description = "The VNets, by id", body = TopologyView),
        (status = 400, description = "An unknown query parameter, or a subscription with a NUL character", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_topology(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<TopologyQuery>,
) -> Result<Json<TopologyView>, ApiError> {
    let sub = q
        .subscription
        .as_deref()
        .map(crate::model::normalize_subscription);
    if let Some(s) = &sub
        && s.contains('\0')
    {
        return Err(ApiError::bad(
            ErrorCode::InvalidParameter,
            "subscription",
            format!("subscription {s:?} contains a NUL character"),
        ));
    }
    let vnets = crate::store::topology::latest_vnets(&state.pool, sub.as_deref()).await?;
    let nets = |n: &[ipnet::IpNet]| n.iter().map(ToString::to_string).collect();
    Ok(Json(TopologyView {
        vnets: vnets
            .into_iter()
            .map(|v| VnetView {
                id: v.state.id.to_string(),
                subscription: v.state.id.subscription(),
                address_space: nets(&v.state.address_space),
                subnets: v
                    .state
                    .subnets
                    .iter()
                    .map(|s| SubnetView {
                        id: s.id.to_string(),
                        prefixes: nets(&s.prefixes),
                    })
                    .collect(),
                peerings: v
                    .state
                    .peerings
                    .iter()
                    .map(|p| PeeringView {
                        remote: p.remote.to_string(),
                        connected: p.connected,
                        remote_address_space: nets(&p.remote_address_space),
                    })
                    .collect(),
                taken_at: v.taken_at,
                since: v.since,
            })
            .collect(),
    }))
}
