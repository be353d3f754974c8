//! Operations: liveness, readiness, coverage and conflicts.

use std::any::Any;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorCode, Problem};
use super::{AppState, NoParams, QueryParams};
use crate::store::{self, ConflictRow, SubscriptionStatus};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, body = Health),
        (status = 400, description = "A query parameter (it takes none)", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn healthz(_: QueryParams<NoParams>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub status: String,
    pub database: bool,
    pub migrations: bool,
    /// The claims are loaded into memory (false while the server starts).
    pub index_loaded: bool,
    /// Claims held in memory.
    pub claims_in_memory: usize,
}

/// How long readiness waits for the database.
const READINESS_WITHIN: std::time::Duration = std::time::Duration::from_millis(800);

/// Readiness: the database is reachable, every migration is applied, and
/// the claims are loaded into memory.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, body = Readiness),
        (status = 400, description = "A query parameter (it takes none)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Not ready (answered within a second, also while the database does not answer)", body = Readiness)
    )
)]
pub async fn readyz(State(state): State<AppState>, _: QueryParams<NoParams>) -> Response {
    // Within a second, also while Postgres does not answer (a connection
    // waits for the pool up to 10 s): not answered in time is not ready.
    let checks = async {
        let database = store::ping(&state.pool).await.is_ok();
        let migrations = database
            && store::migrations_applied(&state.pool)
                .await
                .unwrap_or(false);
        (database, migrations)
    };
    let (database, migrations) = tokio::time::timeout(READINESS_WITHIN, checks)
        .await
        .unwrap_or((false, false));
    let index_loaded = !state.index.is_loading();
    let ok = database && migrations && index_loaded;
    let body = Readiness {
        status: if ok { "ready" } else { "not ready" }.into(),
        database,
        migrations,
        index_loaded,
        claims_in_memory: state.index.len(),
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    pub subscriptions: Vec<SubscriptionStatus>,
    pub claims_in_memory: usize,
    /// Update sequence of the in-memory index.
    pub index_sequence: u64,
    pub index_updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Coverage and freshness per subscription: the last complete and partial
/// snapshots, the newest Activity Log event and its lag, counts of NICs,
/// claims and conflicts.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "operations",
    responses(
        (status = 200, body = StatusView),
        (status = 400, description = "A query parameter (it takes none)", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn status(
    State(state): State<AppState>,
    _: QueryParams<NoParams>,
) -> Result<Json<StatusView>, ApiError> {
    let (seq, at) = state.index.freshness();
    let mut subscriptions = store::status(&state.pool).await?;
    let coverage = state.index.coverage();
    let now = store::micros(chrono::Utc::now());
    for s in &mut subscriptions {
        s.freshness = coverage
            .get(&s.subscription)
            .map(|c| store::FreshnessStatus::of(c, now));
    }
    Ok(Json(StatusView {
        subscriptions,
        claims_in_memory: state.index.len(),
        index_sequence: seq,
        index_updated_at: store::to_ts(at),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConflictParams {
    /// At most this many, newest first (default 100, at most 10,000).
    pub limit: Option<i64>,
}

/// Contradictory evidence: two NICs whose certain windows overlap on one IP in one VNet.
#[utoipa::path(
    get,
    path = "/v1/conflicts",
    tag = "operations",
    params(ConflictParams),
    responses((status = 200, body = Vec<ConflictRow>), (status = 400, body = Problem, content_type = "application/problem+json"))
)]
pub async fn conflicts(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ConflictParams>,
) -> Result<Json<Vec<ConflictRow>>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad(
            ErrorCode::InvalidParameter,
            "limit",
            "limit must be between 1 and 10000",
        ));
    }
    Ok(Json(store::conflicts(&state.pool, limit).await?))
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see /openapi.json or /docs")
}

pub fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error; see the service log",
    )
    .into_response()
}
