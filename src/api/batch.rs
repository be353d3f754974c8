//! Many lookups in one call: the batch read item by item, so that one
//! malformed item is an error in its place and the rest are answered.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorCode, Problem};
use super::lookup::{ScopeParams, owner_answer};
use super::views::OwnerAnswer;
use super::{AppState, JsonBody, NoParams, QueryParams};

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
        (status = 400, description = "Not a batch, or a query parameter (it takes none: `at` and scope are per item)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Too many lookups or too large a body", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn batch(
    State(state): State<AppState>,
    _: QueryParams<NoParams>,
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
