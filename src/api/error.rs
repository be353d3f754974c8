//! The one error type of the HTTP API: a stable machine-readable code, a
//! human message, and the parameter at fault, answered as
//! `application/problem+json`. Internal errors are logged once here and
//! answered with a generic message (never a database message).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// Machine-readable error codes. Stable: clients may match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A path or query parameter is not an IP address.
    InvalidIp,
    /// A timestamp parameter could not be parsed.
    InvalidTime,
    /// Another parameter is malformed or out of range.
    InvalidParameter,
    /// The request body is not what the endpoint takes.
    InvalidBody,
    /// The request body exceeds the configured limit.
    BodyTooLarge,
    /// A batch holds more items than the configured limit.
    BatchTooLarge,
    /// No credential, or one that is unknown, revoked or expired (401).
    Unauthenticated,
    /// The credential lacks the scope the endpoint needs (403).
    Forbidden,
    /// A POST without a content type, or with one a web page may send to
    /// any address (`text/plain`, forms) (415).
    UnsupportedMediaType,
    /// The `Host` header names no name the service answers to (421), or is missing (400).
    InvalidHost,
    /// No such resource.
    NotFound,
    /// The request contradicts what was stored before (e.g. a snapshot id reused with other metadata).
    Conflict,
    /// The database is unreachable or not migrated.
    Unavailable,
    /// The request took longer than the configured timeout.
    Timeout,
    /// Something failed inside ipwho; the log has the details.
    Internal,
}

/// A problem document (RFC 9457).
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    /// `urn:ipwho:error:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub code: ErrorCode,
    /// What was wrong, for a person.
    pub detail: String,
    /// The parameter or field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub parameter: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            parameter: None,
        }
    }

    pub fn bad(code: ErrorCode, parameter: &str, detail: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code,
            detail: detail.into(),
            parameter: Some(parameter.to_string()),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }

    /// Logs the cause and answers a generic 500.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the service log",
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %e, "database unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "database unavailable",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

impl From<crate::ingest::IngestError> for ApiError {
    fn from(e: crate::ingest::IngestError) -> Self {
        use crate::ingest::{IngestError, Input};
        match e {
            IngestError::Invalid {
                input,
                field,
                message,
            } => {
                let code = match input {
                    Input::Body => ErrorCode::InvalidBody,
                    Input::Time => ErrorCode::InvalidTime,
                    Input::Parameter => ErrorCode::InvalidParameter,
                };
                ApiError::bad(code, field, message)
            }
            IngestError::NotFound(detail) => ApiError::not_found(detail),
            IngestError::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::BodyTooLarge,
                format!(
                    "the gzip body decompresses to more than the configured limit of {limit} bytes (--max-body-bytes / IPWHO_MAX_BODY_BYTES); post smaller pages"
                ),
            ),
            IngestError::Conflict(detail) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, detail)
            }
            IngestError::Storage(d) => d.into(),
            IngestError::Index(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = serde_json::to_value(self.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let body = Problem {
            kind: format!("urn:ipwho:error:{code}"),
            title: self
                .status
                .canonical_reason()
                .unwrap_or("error")
                .to_string(),
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail,
            parameter: self.parameter,
        };
        let mut res = (self.status, Json(body)).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}
