//! What can go wrong in an ingest: the input is not usable (which part,
//! which field, why), the thing named does not exist, the body is too
//! large, it contradicts what was stored, or the storage failed.

use crate::store::StoreError;

/// Which part of an ingest's input is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The body is not what the use case reads (not JSON, no list of
    /// records, nothing to store).
    Body,
    /// A time cannot be read, or is ahead of this clock.
    Time,
    /// Other metadata is missing, or contradicts the body.
    Parameter,
}

/// An ingest that stored nothing, or failed while storing.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The input cannot be used: `field` is the field or metadata at fault.
    #[error("{message}")]
    Invalid {
        input: Input,
        field: &'static str,
        message: String,
    },
    /// The thing named (a snapshot id) was never stored.
    #[error("{0}")]
    NotFound(String),
    /// A gzip body decompresses to more than `limit` bytes.
    #[error("the gzip body decompresses to more than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// The input contradicts what was stored before (a snapshot id reused
    /// with other metadata).
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error("storage failed: {0}")]
    Storage(#[source] sqlx::Error),
    /// What was stored could not be read back into the in-memory index.
    #[error("the index could not be updated: {0:#}")]
    Index(anyhow::Error),
}

impl IngestError {
    /// Unusable input: `field` and why.
    pub(crate) fn invalid(input: Input, field: &'static str, message: impl Into<String>) -> Self {
        IngestError::Invalid {
            input,
            field,
            message: message.into(),
        }
    }

    /// The field or metadata at fault, when the input is unusable.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            IngestError::Invalid { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::SnapshotMismatch { .. } => IngestError::Conflict(e.to_string()),
            StoreError::Db(d) => IngestError::Storage(d),
        }
    }
}

impl From<sqlx::Error> for IngestError {
    fn from(e: sqlx::Error) -> Self {
        IngestError::Storage(e)
    }
}
