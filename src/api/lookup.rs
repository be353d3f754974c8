//! Lookups: who owned an IP at T, an IP's history, and the reverse views a
//! responder wants (what a NIC or a VM held, when). Served from the
//! in-memory index.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorCode, Problem};
use super::views::{
    AnswerAt, ClaimView, CoverageView, HistoryView, OwnerAnswer, SubscriptionWatch, WatchedView,
    explain,
};
use super::{AppState, JsonBody, QueryParams};
use crate::engine::{Claim, Micros, Owned, Status, Window};
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

fn parse_id(s: &str, parameter: &str) -> Result<ArmId, ApiError> {
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

    fn describe(&self) -> Option<String> {
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VmParams {
    /// Only the IPs the VM may have held at this instant, each with its status. Default: all.
    pub at: Option<String>,
}

/// One IP a VM held.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VmIp {
    pub ip: String,
    /// At `at`: the status of the NIC's claim on this IP, as the IP's
    /// lookup answers it (`ambiguous` when another NIC's claim may be the
    /// answer).
    pub status: Option<crate::engine::Status>,
    /// At `at`: the status of the NIC's attachment to this VM.
    pub vm_status: Option<crate::engine::Status>,
    pub claim: ClaimView,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VmIps {
    pub vm: String,
    pub at: Option<DateTime<Utc>>,
    pub ips: Vec<VmIp>,
    /// With `at`: whether the VM's subscription was watched then.
    pub watched: Option<WatchedView>,
}

/// Every IP a VM held through its NICs, when (the VM's ARM id, URL-encoded).
#[utoipa::path(
    get,
    path = "/v1/vms/{id}/ips",
    tag = "lookups",
    params(("id" = String, Path, description = "VM ARM id, URL-encoded (slashes as %2F); given with its slashes as they are, it is read the same"), VmParams),
    responses(
        (status = 200, description = "The VM's IPs", body = VmIps),
        (status = 400, description = "Invalid id or time", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No claim of this VM", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn vm_ips(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<VmParams>,
) -> Result<Json<VmIps>, ApiError> {
    let id = parse_id(&id, "id")?;
    let claims = state.index.claims_of_vm(id.key());
    if claims.entries.is_empty() {
        return Err(ApiError::not_found(format!("no claim of VM {id} is known")));
    }
    let at = match q.at.as_deref() {
        Some(s) if !s.trim().is_empty() => Some(parse_at(Some(s), "at")?),
        _ => None,
    };
    let all = state.index.neighbours(&claims);
    let refs = all.refs();
    let bounds = crate::engine::exclusive(&refs);
    let on_vm = |a: &crate::engine::Attachment| a.vm.as_ref().is_some_and(|v| *v == id);
    let mut ips = Vec::new();
    for e in &claims.entries {
        let Some(i) = refs.iter().position(|c| std::ptr::eq(*c, &e.claim)) else {
            continue;
        };
        let b = &bounds[i];
        let owned = Owned {
            claim: &e.claim,
            possible: b.possible,
            start_by: b.start_by.map(|j| refs[j]),
            end_by: b.end_by.map(|j| refs[j]),
        };
        let (status, vm_status) = match at {
            None => (None, None),
            Some(t) => {
                // The VM's claim answers for its IP as the IP's lookup
                // would, in its VNet.
                let same: Vec<&Claim> = refs
                    .iter()
                    .copied()
                    .filter(|c| c.key.scope == e.key.scope && c.key.ip == e.key.ip)
                    .collect();
                let a = crate::engine::answer(&same, t, &all);
                let mine = a
                    .owner
                    .as_ref()
                    .is_some_and(|o| std::ptr::eq(o.claim, &e.claim));
                let listed = a.candidates.iter().any(|o| std::ptr::eq(o.claim, &e.claim));
                if !mine && !listed {
                    continue;
                }
                let vm = crate::engine::vm_answer(&e.claim, b.possible, t, a.status);
                let vm_status = match (vm.attachment, vm.candidates.is_empty()) {
                    (Some(x), _) if on_vm(x) => vm.status,
                    (None, false) if vm.candidates.iter().any(|x| on_vm(x)) => Status::Ambiguous,
                    _ if !mine => Status::Ambiguous,
                    _ => continue,
                };
                (
                    Some(if mine { a.status } else { Status::Ambiguous }),
                    Some(vm_status),
                )
            }
        };
        ips.push(VmIp {
            ip: e.key.ip.to_string(),
            status,
            vm_status,
            claim: ClaimView::of(&owned),
        });
    }
    let sub = id.subscription();
    Ok(Json(VmIps {
        vm: id.to_string(),
        at: at.and_then(crate::store::to_ts),
        ips,
        watched: at.map(|t| {
            WatchedView::new(vec![SubscriptionWatch::new(
                &sub,
                claims.coverage.get(&sub),
                t,
            )])
        }),
    }))
}

/// One lookup of a batch. Its scope is `scope`, or one of `vnet`, `subnet`
/// and `subscription`; any other field is an error in the item's place (a
/// misspelt scope must not widen the lookup silently).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupItem {
    pub ip: String,
    /// RFC 3339 (or epoch seconds or milliseconds, as a number or a string); default now.
    #[serde(default, deserialize_with = "text_or_number")]
    #[schema(value_type = Option<String>)]
    pub at: Option<String>,
    pub scope: Option<ItemScope>,
    pub vnet: Option<String>,
    pub subnet: Option<String>,
    pub subscription: Option<String>,
}

/// A batch item's `scope`: an object with one of `vnet`, `subnet` and
/// `subscription`, or one id as a string (a VNet or subnet id, or a
/// subscription id, bare or as `/subscriptions/{id}`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ItemScope {
    Id(String),
    Fields(ScopeParams),
}

impl LookupItem {
    /// The item's scope, from `scope` or the separate fields (not both).
    fn scope(&self) -> Result<ScopeParams, ApiError> {
        let fields = ScopeParams {
            vnet: self.vnet.clone(),
            subnet: self.subnet.clone(),
            subscription: self.subscription.clone(),
        };
        let Some(scope) = &self.scope else {
            return Ok(fields);
        };
        if fields.describe().is_some() {
            return Err(ApiError::bad(
                ErrorCode::InvalidParameter,
                "scope",
                "give scope, or one of vnet, subnet and subscription, not both",
            ));
        }
        Ok(match scope {
            ItemScope::Fields(f) => f.clone(),
            ItemScope::Id(id) if id.to_ascii_lowercase().contains("/virtualnetworks/") => {
                ScopeParams {
                    vnet: Some(id.clone()),
                    ..ScopeParams::default()
                }
            }
            ItemScope::Id(id) => ScopeParams {
                subscription: Some(id.clone()),
                ..ScopeParams::default()
            },
        })
    }
}

/// A string, or a number as its decimal text.
fn text_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::invalid_type(
            serde::de::Unexpected::Other(match other {
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            }),
            &"a time as a string or a number",
        )),
    }
}

/// `{"lookups": [...]}`, or the array of lookups alone.
#[derive(Debug, ToSchema)]
pub struct BatchRequest {
    /// Up to the configured limit (default 10,000). An item that cannot be
    /// read gets an error in its place; the others are answered.
    pub lookups: Vec<LookupItem>,
}

/// A batch as read: its items, each read on its own afterwards (so that one
/// malformed item is an error in its place, not a failed batch).
pub struct BatchBody(pub Vec<serde_json::Value>);

impl<'de> Deserialize<'de> for BatchBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchBody;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("{\"lookups\": [...]} or an array of lookups")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BatchBody, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(BatchBody(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BatchBody, A::Error> {
                let mut items = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key != "lookups" {
                        // A batch-wide `scope` or `at` is not read: dropped,
                        // it would leave every lookup wider than meant.
                        return Err(serde::de::Error::unknown_field(&key, &["lookups"]));
                    }
                    items = Some(map.next_value()?);
                }
                items
                    .map(BatchBody)
                    .ok_or_else(|| serde::de::Error::missing_field("lookups"))
            }
        }
        d.deserialize_any(V)
    }
}

/// One answer of a batch: the answer, or the error of that item alone.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchAnswer {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub answer: Option<OwnerAnswer>,
    /// Set when this item was invalid; the others are still answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BatchError>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchError {
    pub index: usize,
    pub code: ErrorCode,
    pub parameter: Option<String>,
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    /// In the order of the request.
    pub answers: Vec<BatchAnswer>,
}

/// Many lookups in one call, answered in order. An invalid item gets an
/// error in its place; the rest are answered.
#[utoipa::path(
    post,
    path = "/v1/lookups",
    tag = "lookups",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "Answers in request order", body = BatchResponse),
        (status = 400, description = "Not a batch", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too many lookups or too large a body", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    JsonBody(BatchBody(items)): JsonBody<BatchBody>,
) -> Result<Json<BatchResponse>, ApiError> {
    if items.len() > state.limits.max_lookups {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BatchTooLarge,
            format!(
                "{} lookups in one batch; the limit is {}",
                items.len(),
                state.limits.max_lookups
            ),
        ));
    }
    let answers = items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let item: LookupItem = match serde_path_to_error::deserialize(item) {
                Ok(item) => item,
                Err(e) => {
                    let path = e.path().to_string();
                    let parameter = if path == "." {
                        format!("lookups[{index}]")
                    } else {
                        format!("lookups[{index}].{path}")
                    };
                    return BatchAnswer {
                        answer: None,
                        error: Some(BatchError {
                            index,
                            code: ErrorCode::InvalidBody,
                            detail: format!("{parameter}: {}", e.into_inner()),
                            parameter: Some(parameter),
                        }),
                    };
                }
            };
            let answer = item
                .scope()
                .and_then(|scope| owner_answer(&state.index, &item.ip, item.at.as_deref(), &scope));
            match answer {
                Ok(a) => BatchAnswer {
                    answer: Some(a),
                    error: None,
                },
                Err(e) => BatchAnswer {
                    answer: None,
                    error: Some(BatchError {
                        index,
                        code: e.code,
                        parameter: e.parameter.map(|p| format!("lookups[{index}].{p}")),
                        detail: e.detail,
                    }),
                },
            }
        })
        .collect();
    Ok(Json(BatchResponse { answers }))
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
