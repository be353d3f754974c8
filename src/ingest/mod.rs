//! Ingest as a use case, shared by the HTTP API and the command line: bytes
//! in Azure's formats (NIC snapshots, Activity Log records, VNet listings)
//! → parsed evidence (with per-record errors) → stored → claims recomputed
//! → in-memory index updated. Failures are [`IngestError`]s, which say what
//! went wrong and leave it to the caller to answer them.

mod activity;
mod body;
mod error;
mod snapshot;
mod topology;

pub use activity::{ActivityResponse, IgnoredView, ingest_activity};
pub use body::decompressed;
pub use error::{IngestError, Input};
pub use snapshot::{SnapshotParams, SnapshotResponse, finish_snapshot, ingest_snapshot};
pub use topology::{TopologyParams, TopologyResponse, ingest_topology};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A list given as a JSON array, or as one comma-separated string (a query
/// parameter).
pub(crate) fn comma_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum L {
        One(String),
        Many(Vec<String>),
    }
    Ok(Option::<L>::deserialize(d)?.map(|l| match l {
        L::One(s) => s.split(',').map(str::to_string).collect(),
        L::Many(v) => v,
    }))
}

/// A rejected record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectedView {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// `value` of the parameter `field`, unless it holds a NUL character,
/// which Postgres text cannot hold and no Azure name or id has.
pub(crate) fn no_nul<'a>(field: &'static str, value: &'a str) -> Result<&'a str, IngestError> {
    if value.contains('\0') {
        return Err(IngestError::invalid(
            Input::Parameter,
            field,
            format!("{field} {value:?} contains a NUL character"),
        ));
    }
    Ok(value)
}

/// A listing's `taken_at`: required, a time, and not more than 5 minutes
/// ahead of this clock (a wrong clock or zone would make evidence certain
/// until a time nothing has seen yet).
pub(crate) fn listing_time(taken_at: Option<String>) -> Result<DateTime<Utc>, IngestError> {
    let taken_at = taken_at.ok_or_else(|| {
        IngestError::invalid(
            Input::Parameter,
            "taken_at",
            "taken_at is required: when the listing was taken",
        )
    })?;
    let t = crate::azure::time::parse_time(&taken_at).map_err(|e| {
        IngestError::invalid(
            Input::Time,
            "taken_at",
            format!("taken_at {taken_at:?}: {e}"),
        )
    })?;
    if let Some(reason) = crate::azure::time::from_the_future(t) {
        return Err(IngestError::invalid(
            Input::Time,
            "taken_at",
            format!("taken_at {reason}"),
        ));
    }
    Ok(t)
}
