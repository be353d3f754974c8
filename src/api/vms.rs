//! A VM's IPs: every IP it held through its NICs, when, and with `at`,
//! how sure each answer is then.

use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, Problem};
use super::lookup::{parse_at, parse_id};
use super::views::ClaimView;
use super::watch::{SubscriptionWatch, WatchedView};
use super::{AppState, QueryParams};
use crate::engine::{Claim, Owned, Status};

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
