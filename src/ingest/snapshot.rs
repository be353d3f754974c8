//! NIC snapshots in, page by page: metadata from the body or the query,
//! each NIC parsed on its own (unreadable ones rejected), the page stored,
//! the snapshot finished with its last page (or on its own), and the
//! claims it changed applied to the index.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use super::body::{After, ListBody, list_body};
use super::{IngestError, Input, RejectedView, comma_list, listing_time, no_nul};
use crate::azure::nic::parse_nic_str;
use crate::index::Index;
use crate::model::NicState;
use crate::store::{self, PageReport, SnapshotMeta, SnapshotPage};

/// Snapshot metadata, given in the body or as query parameters (the body
/// wins). With query parameters, the body may be an ARM list page as it came.
#[derive(Debug, Default, Clone, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SnapshotParams {
    /// Pages with the same id form one snapshot. Default: derived from
    /// `taken_at`, `subscriptions` and `complete`, so a re-post is recognised.
    pub snapshot_id: Option<String>,
    /// When the listing was taken (RFC 3339). Required.
    pub taken_at: Option<String>,
    /// The subscriptions the listing covers (comma-separated in a query).
    /// Required when `complete`; default: the subscriptions of its NICs.
    #[param(value_type = Option<String>)]
    #[serde(default, deserialize_with = "comma_list")]
    pub subscriptions: Option<Vec<String>>,
    /// The listing holds every NIC of its subscriptions, so a NIC missing
    /// from it did not exist at `taken_at`. Default false.
    pub complete: Option<bool>,
    /// This page finishes the snapshot. Default true, unless the page says
    /// more follow (an ARM `nextLink`, a Resource Graph skip token): so the
    /// pages of a listing may be posted as they come. Otherwise post
    /// `false` on every page but the last of a multi-page listing (or
    /// finish it with `POST /v1/snapshots/{id}/done`). A page that says more
    /// follow cannot finish a complete snapshot (400).
    pub last_page: Option<bool>,
}

/// What a snapshot post did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SnapshotResponse {
    pub snapshot_id: String,
    pub taken_at: DateTime<Utc>,
    pub subscriptions: Vec<String>,
    /// NIC records in the post.
    pub received: usize,
    /// NICs taken as evidence.
    pub accepted: usize,
    /// Of those, NICs whose stored evidence changed.
    pub changed: usize,
    /// Records that could not be used: which, which field, why.
    pub rejected: Vec<RejectedView>,
    pub finished: bool,
    /// Whether ipwho holds this snapshot complete for its subscriptions.
    pub complete: bool,
    pub partial_reason: Option<String>,
    pub absent_nics_affected: usize,
    /// Set when the snapshot finishes: NICs it listed more than once with
    /// different states (updated while it was being listed). Of each, the
    /// state whose fingerprint sorts last is taken at `taken_at`, whatever
    /// the order in which the pages arrived.
    pub listed_with_two_states: usize,
    pub claims_inserted: usize,
    pub claims_updated: usize,
    pub claims_deleted: usize,
}

fn derived_snapshot_id(taken_at: DateTime<Utc>, subs: &[String], complete: bool) -> String {
    let text = format!(
        "{}|{}|{}",
        taken_at.timestamp_micros(),
        subs.join(","),
        complete
    );
    format!(
        "snap-{}",
        &crate::model::short_digest(text.as_bytes())[..20]
    )
}

fn page_body(body: &[u8]) -> Result<ListBody<'_>, serde_json::Error> {
    const META: [&str; 5] = [
        "snapshot_id",
        "taken_at",
        "subscriptions",
        "complete",
        "last_page",
    ];
    list_body(body, &["value", "nics", "data"], &META, |id| {
        id.to_ascii_lowercase().contains("/networkinterfaces/")
    })
}

/// Parses and stores one snapshot page, then updates `index`.
pub async fn ingest_snapshot(
    pool: &PgPool,
    index: &Index,
    body: &[u8],
    query: SnapshotParams,
) -> Result<SnapshotResponse, IngestError> {
    let body = page_body(body).map_err(|e| {
        IngestError::invalid(
            Input::Body,
            "body",
            format!("snapshot body is not JSON: {e}"),
        )
    })?;
    let after = body.after;
    let from_body: SnapshotParams =
        serde_json::from_value(Value::Object(body.meta)).map_err(|e| {
            IngestError::invalid(Input::Body, "body", format!("snapshot metadata: {e}"))
        })?;
    let nics = body.records.ok_or_else(|| {
        IngestError::invalid(
            Input::Body,
            "value",
            "no NIC array: expected an ARM list page {\"value\": [...]}, {\"nics\": [...]}, a Resource Graph {\"data\": [...]}, a JSON array, or one NIC",
        )
    })?;
    let taken_at = listing_time(from_body.taken_at.or(query.taken_at))?;
    let given_id = from_body.snapshot_id.or(query.snapshot_id);
    if let Some(id) = &given_id {
        no_nul("snapshot_id", id)?;
    }
    let complete = from_body.complete.or(query.complete).unwrap_or(false);
    // A page that says more pages follow does not finish its snapshot
    // unless told to; it cannot finish a complete one at all: every NIC on
    // the pages not posted would be taken for deleted.
    let last_page = match (from_body.last_page.or(query.last_page), after) {
        (Some(true), After::More(link)) if complete => {
            return Err(IngestError::invalid(
                Input::Parameter,
                "last_page",
                format!(
                    "this page's {link} says its listing goes on, so it cannot finish a complete snapshot: \
                     post every page of the listing (with the same snapshot_id, or the same metadata), the last one without a {link}"
                ),
            ));
        }
        (_, After::Truncated) if complete => {
            return Err(IngestError::invalid(
                Input::Parameter,
                "complete",
                "Resource Graph truncated this result (resultTruncated) without a skip token, so it cannot be a \
                 complete snapshot: page the query (skip tokens; an id column in the projection) or post it as partial",
            ));
        }
        (Some(last), _) => last,
        (None, After::More(_)) => false,
        (None, _) => true,
    };

    let mut rejected = Vec::new();
    let mut parsed: Vec<(usize, NicState)> = Vec::with_capacity(nics.len());
    let states = crate::par::map(&nics, |_, v| parse_nic_str(v.get()));
    for (i, state) in states.into_iter().enumerate() {
        match state {
            Ok(s) => parsed.push((i, s)),
            Err(e) => rejected.push(RejectedView {
                index: i,
                field: e.field.clone(),
                reason: e.reason.clone(),
            }),
        }
    }
    let subscriptions: Vec<String> = match from_body.subscriptions.or(query.subscriptions) {
        Some(s) => s
            .iter()
            .map(|x| crate::model::normalize_subscription(x))
            .filter(|x| !x.is_empty())
            .collect(),
        None if complete => {
            return Err(IngestError::invalid(
                Input::Parameter,
                "subscriptions",
                "a complete snapshot must name the subscriptions it covers",
            ));
        }
        None => parsed.iter().map(|(_, s)| s.id.subscription()).collect(),
    };
    let mut subscriptions = subscriptions;
    for s in &subscriptions {
        no_nul("subscriptions", s)?;
    }
    subscriptions.sort();
    subscriptions.dedup();
    if subscriptions.is_empty() {
        return Err(IngestError::invalid(
            Input::Parameter,
            "subscriptions",
            "no subscription given",
        ));
    }
    // Only records it could not read make a complete snapshot partial: one
    // of them may be a NIC of its scope. A NIC of another subscription is
    // rejected but cannot be one, so the listing stays complete for its own.
    let unreadable = rejected.len();
    let mut accepted = Vec::with_capacity(parsed.len());
    for (i, s) in parsed {
        if subscriptions.binary_search(&s.id.subscription()).is_ok() {
            accepted.push(s);
        } else {
            rejected.push(RejectedView {
                index: i,
                field: "id".into(),
                reason: format!(
                    "NIC {} is in subscription {}, outside the snapshot's subscriptions",
                    s.id,
                    s.id.subscription()
                ),
            });
        }
    }
    rejected.sort_by_key(|r| r.index);
    let id = given_id.unwrap_or_else(|| derived_snapshot_id(taken_at, &subscriptions, complete));
    let page = SnapshotPage {
        meta: SnapshotMeta {
            id,
            taken_at,
            subscriptions: subscriptions.clone(),
            complete,
        },
        nics: accepted,
        last_page,
        rejected: unreadable,
    };
    let received = nics.len();
    let (report, changes) = store::ingest_snapshot_page(pool, &page).await?;
    index.apply(changes).await;
    Ok(snapshot_response(
        report,
        taken_at,
        subscriptions,
        received,
        rejected,
    ))
}

fn snapshot_response(
    r: PageReport,
    taken_at: DateTime<Utc>,
    subscriptions: Vec<String>,
    received: usize,
    rejected: Vec<RejectedView>,
) -> SnapshotResponse {
    SnapshotResponse {
        snapshot_id: r.snapshot_id,
        taken_at,
        subscriptions,
        received,
        accepted: r.accepted,
        changed: r.changed,
        rejected,
        finished: r.finished,
        complete: r.complete,
        partial_reason: r.partial_reason,
        absent_nics_affected: r.absent_nics_affected,
        listed_with_two_states: r.listed_with_two_states,
        claims_inserted: r.claims_inserted,
        claims_updated: r.claims_updated,
        claims_deleted: r.claims_deleted,
    }
}

/// Finishes a multi-page snapshot, then updates `index`.
pub async fn finish_snapshot(
    pool: &PgPool,
    index: &Index,
    id: &str,
) -> Result<SnapshotResponse, IngestError> {
    no_nul("id", id)?;
    let (report, changes) = store::finish_snapshot(pool, id)
        .await?
        .ok_or_else(|| IngestError::NotFound(format!("no snapshot with id {id:?}")))?;
    index.apply(changes).await;
    let (taken_at, subscriptions) = store::snapshot_scope(pool, id).await?;
    Ok(snapshot_response(
        report,
        taken_at,
        subscriptions,
        0,
        Vec::new(),
    ))
}
