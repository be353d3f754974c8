//! Activity Log records in: NIC writes and deletes stored as evidence, the
//! rest counted per reason, unreadable records rejected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{IngestError, Input, RejectedView};
use crate::azure::activity::{ActivityOutcome, parse_activity};
use crate::index::Index;
use crate::store;

/// What an Activity Log post did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ActivityResponse {
    /// Records in the post.
    pub records: usize,
    /// NIC write/delete Success records stored for the first time.
    pub accepted: usize,
    /// NIC records posted before: changed nothing.
    pub duplicates: usize,
    /// Records that say nothing about NIC state, counted per reason.
    pub ignored: Vec<IgnoredView>,
    pub rejected: Vec<RejectedView>,
    pub claims_inserted: usize,
    pub claims_updated: usize,
    pub claims_deleted: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IgnoredView {
    /// `other_operation`, `not_succeeded` or `other_resource_type`.
    pub reason: String,
    pub count: usize,
}

/// Parses and stores a batch of Activity Log records, then updates `index`.
/// A body without a record, or none of whose records can be read (not
/// JSON, not an object), is refused: answered 200, it would pass for a
/// batch in which nothing happened. An empty list of records is read as
/// one, and a record read but unusable (a field missing or bad) is
/// rejected by field in the response.
pub async fn ingest_activity(
    pool: &PgPool,
    index: &Index,
    body: &[u8],
) -> Result<ActivityResponse, IngestError> {
    let outcomes = parse_activity(body);
    let records = outcomes.len();
    if records == 0 && body.iter().all(u8::is_ascii_whitespace) {
        return Err(IngestError::invalid(
            Input::Body,
            "body",
            "the body is empty: expected Activity Log records ({\"records\": [...]}, JSON Lines, or a JSON array)",
        ));
    }
    let mut events = Vec::new();
    let mut ignored: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut rejected = Vec::new();
    for o in outcomes {
        match o {
            ActivityOutcome::Accepted(e) => events.push(e),
            ActivityOutcome::Ignored { reason, .. } => {
                *ignored.entry(reason.as_str()).or_default() += 1
            }
            ActivityOutcome::Rejected {
                index,
                field,
                reason,
            } => rejected.push(RejectedView {
                index,
                field,
                reason,
            }),
        }
    }
    // A record rejected as a whole (not JSON, not an object) was not read
    // at all; one rejected for a field was read, and the response says why.
    if records > 0 && rejected.iter().filter(|r| r.field.is_empty()).count() == records {
        let first = &rejected[0];
        let more = match records - 1 {
            0 => String::new(),
            n => format!(" (nor can the {n} after it)"),
        };
        return Err(IngestError::invalid(
            Input::Body,
            "body",
            format!(
                "no record in the body can be read: record {}: {}{more}; expected Activity Log records \
                 ({{\"records\": [...]}}, JSON Lines, or a JSON array of objects)",
                first.index, first.reason
            ),
        ));
    }
    let (report, changes) = store::ingest_activity(pool, &events).await?;
    index.apply(changes).await;
    Ok(ActivityResponse {
        records,
        accepted: report.accepted,
        duplicates: report.duplicates,
        ignored: ignored
            .into_iter()
            .map(|(reason, count)| IgnoredView {
                reason: reason.to_string(),
                count,
            })
            .collect(),
        rejected,
        claims_inserted: report.claims_inserted,
        claims_updated: report.claims_updated,
        claims_deleted: report.claims_deleted,
    })
}
