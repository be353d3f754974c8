//! Who owned an IP at T (the owner now, and whether it held on), and what
//! every lookup reads alike: IPs, times, ARM ids and scopes. An IP's or a
//! NIC's history is in `history`, a VM's IPs in `vms`, many lookups at once
//! in `batch`. Served from the in-memory index.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorCode, Problem};
use super::history::nic_history;
use super::views::{AnswerAt, OwnerAnswer};
use super::vms::vm_ips;
use super::watch::{SubscriptionWatch, WatchedView};
use super::words::explain;
use super::{AppState, QueryParams};
use crate::engine::Micros;
use crate::index::{Claims, Index, Scope};
use crate::model::ArmId;
use crate::store::micros;

/// An IP address; an IPv4-mapped IPv6 address (`::ffff:10.0.0.4`, as some
/// tools log IPv4 peers) is its IPv4 address.
pub(super) fn parse_ip(s: &str, parameter: &str) -> Result<IpAddr, ApiError> {
    s.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| {
            ApiError::bad(
                ErrorCode::InvalidIp,
                parameter,
                format!("{parameter} {s:?} is not an IPv4 or IPv6 address"),
            )
        })
}

pub(super) fn parse_at(s: Option<&str>, parameter: &str) -> Result<Micros, ApiError> {
    match s.map(str::trim) {
        None | Some("") | Some("now") => Ok(micros(Utc::now())),
        Some(s) => {
            let t =
                crate::azure::time::parse_time(s).or_else(|e| plus_decoded_as_space(s).ok_or(e));
            t.map(micros).map_err(|e| {
                ApiError::bad(
                    ErrorCode::InvalidTime,
                    parameter,
                    format!(
                        "{parameter} {s:?} is not a timestamp ({e}); use RFC 3339, e.g. 2025-01-31T14:03:00Z"
                    ),
                )
            })
        }
    }
}

pub(super) fn parse_id(s: &str, parameter: &str) -> Result<ArmId, ApiError> {
    ArmId::parse(s).map_err(|e| {
        ApiError::bad(
            ErrorCode::InvalidParameter,
            parameter,
            format!("{parameter}: {e}"),
        )
    })
}

/// `2025-01-31T15:03:00+01:00` written into a query string unencoded: the
/// `+` of its offset arrives as a space (`...15:03:00 01:00`), which can
/// mean nothing else, so it is read as the `+` it was.
fn plus_decoded_as_space(s: &str) -> Option<DateTime<Utc>> {
    let (time, offset) = s.rsplit_once(' ')?;
    let b = offset.as_bytes();
    let hh_mm = b.len() == 5 && b[2] == b':' && [0, 1, 3, 4].iter().all(|&i| b[i].is_ascii_digit());
    (hh_mm && time.contains('T'))
        .then(|| crate::azure::time::parse_time(&format!("{time}+{offset}")).ok())
        .flatten()
}

/// Scope parameters shared by lookups: at most one of them.
#[derive(Debug, Default, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeParams {
    /// Narrow to one VNet (ARM id, any casing).
    pub vnet: Option<String>,
    /// Narrow to the VNet of this subnet (ARM id).
    pub subnet: Option<String>,
    /// Narrow to one subscription (id).
    pub subscription: Option<String>,
}

impl ScopeParams {
    pub(super) fn scope(&self) -> Result<Scope, ApiError> {
        let given = [&self.vnet, &self.subnet, &self.subscription]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given > 1 {
            return Err(ApiError::bad(
                ErrorCode::InvalidParameter,
                "vnet",
                "give at most one of vnet, subnet and subscription",
            ));
        }
        if let Some(v) = &self.vnet {
            let id = parse_id(v, "vnet")?;
            let vnet = id.truncate_after("virtualNetworks").ok_or_else(|| {
                ApiError::bad(
                    ErrorCode::InvalidParameter,
                    "vnet",
                    "vnet must be a virtualNetworks resource id",
                )
            })?;
            return Ok(Scope::Vnet(vnet.key().to_string()));
        }
        if let Some(s) = &self.subnet {
            let id = parse_id(s, "subnet")?;
            let vnet = id.truncate_after("virtualNetworks").ok_or_else(|| {
                ApiError::bad(
                    ErrorCode::InvalidParameter,
                    "subnet",
                    "subnet must be a virtualNetworks/<vnet>/subnets/<name> id",
                )
            })?;
            return Ok(Scope::Vnet(vnet.key().to_string()));
        }
        if let Some(s) = &self.subscription {
            let s = crate::model::normalize_subscription(s);
            if s.is_empty() || s.contains('/') {
                return Err(ApiError::bad(
                    ErrorCode::InvalidParameter,
                    "subscription",
                    "subscription must be a subscription id",
                ));
            }
            return Ok(Scope::Subscription(s));
        }
        Ok(Scope::Any)
    }

    pub(super) fn describe(&self) -> Option<String> {
        self.vnet
            .clone()
            .or_else(|| self.subnet.clone())
            .or_else(|| self.subscription.clone())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnerParams {
    /// The instant (RFC 3339; also the Activity Log time shapes). Default: now.
    pub at: Option<String>,
    /// Narrow to one VNet (ARM id, any casing).
    pub vnet: Option<String>,
    /// Narrow to the VNet of this subnet (ARM id).
    pub subnet: Option<String>,
    /// Narrow to one subscription (id).
    pub subscription: Option<String>,
}

impl OwnerParams {
    fn scope(&self) -> ScopeParams {
        ScopeParams {
            vnet: self.vnet.clone(),
            subnet: self.subnet.clone(),
            subscription: self.subscription.clone(),
        }
    }
}

/// The subscriptions a scope covers: a VNet's, the one named, or every
/// subscription the index knows (of its claims or its snapshots).
fn scope_subscriptions(scope: &Scope, claims: &Claims<'_>) -> Vec<String> {
    match scope {
        Scope::Vnet(v) => vec![ArmId::subscription_of_key(v).to_string()],
        Scope::Subscription(s) => vec![s.clone()],
        Scope::Any => {
            let mut all: Vec<String> = claims
                .subscriptions
                .iter()
                .cloned()
                .chain(claims.coverage.keys().cloned())
                .collect();
            all.sort();
            all.dedup();
            all
        }
    }
}

/// Whether the subscriptions `subs` were watched at `t`.
fn watched_in(subs: &[String], claims: &Claims<'_>, t: Micros) -> WatchedView {
    WatchedView::new(
        subs.iter()
            .map(|s| SubscriptionWatch::new(s, claims.coverage.get(s), t))
            .collect(),
    )
}

/// [`watched`] without each subscription's coverage, for the answer now.
fn watched_now(subs: &[String], claims: &Claims<'_>, t: Micros) -> WatchedView {
    WatchedView::counts(
        subs.iter()
            .map(|s| claims.coverage.get(s).is_some_and(|c| c.watched_at(t))),
    )
}

/// The owner of `ip_text` at `at` (default now) within the scope, with the owner now.
pub fn owner_answer(
    index: &Index,
    ip_text: &str,
    at: Option<&str>,
    scope_params: &ScopeParams,
) -> Result<OwnerAnswer, ApiError> {
    let ip = parse_ip(ip_text, "ip")?;
    let t = parse_at(at, "at")?;
    let scope = scope_params.scope()?;
    let now = micros(Utc::now()).max(t);
    Ok(index.with_claims_of_ip(ip, &scope, |claims| {
        let at_t = claims.answer(t);
        let at_now = claims.answer(now);
        let held = at_t.owner.as_ref().map(|o| claims.continuity(o, t, now));
        let subs = scope_subscriptions(&scope, claims);
        let w_t = watched_in(&subs, claims, t);
        OwnerAnswer {
            ip: ip.to_string(),
            scope: scope_params.describe(),
            explanation: explain(&ip.to_string(), &at_t, &w_t),
            answer: AnswerAt::new(t, &at_t, w_t),
            now: Some(AnswerAt::now(now, &at_now, watched_now(&subs, claims, now))),
            held_continuously: held.map(|h| h.both()),
            continuity: held.map(Into::into),
        }
    }))
}

/// Who owned an IP at an instant.
///
/// The answer's status says how sure it is; `owner` carries the claim's
/// certain and possible windows and the evidence behind them; `now` is the
/// same lookup at the present; `held_continuously` says whether the owner at
/// T held the IP until now.
#[utoipa::path(
    get,
    path = "/v1/ips/{ip}/owner",
    tag = "lookups",
    params(("ip" = String, Path, description = "IPv4 or IPv6 address"), OwnerParams),
    responses(
        (status = 200, description = "The answer", body = OwnerAnswer),
        (status = 400, description = "Invalid IP, time or scope", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn owner(
    State(state): State<AppState>,
    Path(ip): Path<String>,
    QueryParams(q): QueryParams<OwnerParams>,
) -> Result<Json<OwnerAnswer>, ApiError> {
    Ok(Json(owner_answer(
        &state.index,
        &ip,
        q.at.as_deref(),
        &q.scope(),
    )?))
}

/// Requests no route matches. A NIC or VM id put into the path with its
/// slashes as they are (`/v1/nics/subscriptions/.../networkInterfaces/x/history`,
/// as concatenating the path and an ARM id gives) is served as if it were
/// encoded as one segment; anything else is a 404.
pub async fn fallback(
    State(state): State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    fn raw_id(path: &str, prefix: &str, suffix: &str) -> Option<String> {
        let id = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
        let id = percent_encoding::percent_decode_str(id)
            .decode_utf8()
            .ok()?;
        let head = id.get(..14)?;
        head.eq_ignore_ascii_case("subscriptions/")
            .then(|| format!("/{id}"))
    }
    fn query<T: serde::de::DeserializeOwned + utoipa::IntoParams>(
        uri: &axum::http::Uri,
    ) -> Result<QueryParams<T>, ApiError> {
        super::parse_query(uri.query().unwrap_or("")).map(QueryParams)
    }
    if method == axum::http::Method::GET {
        let path = uri.path();
        if let Some(id) = raw_id(path, "/v1/nics/", "/history") {
            return match query(&uri) {
                Ok(q) => nic_history(State(state), Path(id), q).await.into_response(),
                Err(e) => e.into_response(),
            };
        }
        if let Some(id) = raw_id(path, "/v1/vms/", "/ips") {
            return match query(&uri) {
                Ok(q) => vm_ips(State(state), Path(id), q).await.into_response(),
                Err(e) => e.into_response(),
            };
        }
    }
    super::ops::not_found().await.into_response()
}
