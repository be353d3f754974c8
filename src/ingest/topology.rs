//! VNet listings in, as a use case shared by the HTTP API and the command
//! line: a body in Azure's formats → VNets parsed (with per-record errors)
//! → stored as a topology listing → the topology reloaded into the index.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use super::body::list_body;
use super::{IngestError, Input, RejectedView, comma_list, listing_time};
use crate::azure::vnet::parse_vnet;
use crate::index::Index;
use crate::store::topology::{TopologyListing, ingest_listing};
use crate::topology::VnetState;

/// Listing metadata, given in the body or as query parameters (the body
/// wins). With query parameters, the body may be an ARM list page as it came.
#[derive(Debug, Default, Clone, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopologyParams {
    /// When the listing was taken (RFC 3339). Required.
    pub taken_at: Option<String>,
    /// The subscriptions the listing covers (comma-separated in a query).
    /// Default: the subscriptions of its VNets. A VNet of another
    /// subscription is rejected.
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "comma_list")]
    pub subscriptions: Option<Vec<String>>,
}

/// What a topology post did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TopologyResponse {
    pub taken_at: DateTime<Utc>,
    pub subscriptions: Vec<String>,
    /// VNet records in the post.
    pub received: usize,
    /// VNets whose stored evidence changed (a new state, or its run of an
    /// unchanged state extended or split).
    pub stored: usize,
    /// VNets whose evidence already held this listing (posted before).
    pub unchanged: usize,
    /// Of the stored, VNet states not seen before.
    pub new_states: usize,
    /// Records that could not be used: which, which field, why.
    pub rejected: Vec<RejectedView>,
    /// VNets the topology now holds.
    pub vnets: usize,
}

/// Parses and stores one VNet listing (or a page of one), then reloads the
/// topology `index` holds.
pub async fn ingest_topology(
    pool: &PgPool,
    index: &Index,
    body: &[u8],
    query: TopologyParams,
) -> Result<TopologyResponse, IngestError> {
    let body = list_body(
        body,
        &["value", "data"],
        &["taken_at", "subscriptions"],
        |id| id.to_ascii_lowercase().contains("/virtualnetworks/"),
    )
    .map_err(|e| {
        IngestError::invalid(
            Input::Body,
            "body",
            format!("topology body is not JSON: {e}"),
        )
    })?;
    let from_body: TopologyParams = serde_json::from_value(Value::Object(body.meta))
        .map_err(|e| IngestError::invalid(Input::Body, "body", format!("listing metadata: {e}")))?;
    let records = body.records.ok_or_else(|| {
        IngestError::invalid(
            Input::Body,
            "value",
            "no VNet array: expected an ARM list page {\"value\": [...]}, a Resource Graph {\"data\": [...]}, a JSON array, or one VNet",
        )
    })?;
    let taken_at = listing_time(from_body.taken_at.or(query.taken_at))?;

    let mut rejected = Vec::new();
    let mut parsed: Vec<(usize, VnetState)> = Vec::with_capacity(records.len());
    for (i, raw) in records.iter().enumerate() {
        let v = serde_json::from_str::<Value>(raw.get())
            .map_err(|e| crate::azure::FieldError::new("", format!("not valid JSON: {e}")))
            .and_then(|v| parse_vnet(&v));
        match v {
            Ok(s) => parsed.push((i, s)),
            Err(e) => rejected.push(RejectedView {
                index: i,
                field: e.field,
                reason: e.reason,
            }),
        }
    }
    let given = from_body.subscriptions.or(query.subscriptions).map(|s| {
        s.iter()
            .map(|x| crate::model::normalize_subscription(x))
            .filter(|x| !x.is_empty())
            .collect::<Vec<_>>()
    });
    let mut subscriptions: Vec<String> = match given {
        Some(s) => s,
        None => parsed.iter().map(|(_, s)| s.id.subscription()).collect(),
    };
    for s in &subscriptions {
        super::no_nul("subscriptions", s)?;
    }
    subscriptions.sort();
    subscriptions.dedup();
    let mut vnets = Vec::with_capacity(parsed.len());
    for (i, s) in parsed {
        if subscriptions.binary_search(&s.id.subscription()).is_ok() {
            vnets.push(s);
        } else {
            rejected.push(RejectedView {
                index: i,
                field: "id".into(),
                reason: format!(
                    "VNet {} is in subscription {}, outside the listing's subscriptions",
                    s.id,
                    s.id.subscription()
                ),
            });
        }
    }
    rejected.sort_by_key(|r| r.index);
    if vnets.is_empty() {
        let why = match rejected.first() {
            None => "the body lists no VNet".to_string(),
            Some(r) => format!(
                "{} VNet record(s), none readable; the first, [{}]: {}{}",
                records.len(),
                r.index,
                if r.field.is_empty() {
                    String::new()
                } else {
                    format!("{}: ", r.field)
                },
                r.reason
            ),
        };
        return Err(IngestError::invalid(
            Input::Body,
            "value",
            format!("no VNet to store: {why}"),
        ));
    }
    let listing = TopologyListing {
        taken_at,
        subscriptions: subscriptions.clone(),
        vnets,
        partial_reason: None,
    };
    let report = ingest_listing(pool, &listing).await?;
    crate::sync::topology_written(pool, index, report.seq)
        .await
        .map_err(IngestError::Index)?;
    Ok(TopologyResponse {
        taken_at,
        subscriptions,
        received: records.len(),
        stored: report.stored,
        unchanged: report.unchanged,
        new_states: report.new_states,
        rejected,
        vnets: index.topology().len(),
    })
}
