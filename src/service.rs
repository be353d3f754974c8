//! Ingest as a use case, shared by the HTTP API and the command line: bytes
//! in Azure's formats → parsed evidence (with per-record errors) → stored →
//! claims recomputed → in-memory index updated.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::api::{ApiError, ErrorCode};
use crate::azure::activity::{ActivityOutcome, parse_activity};
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

/// A rejected record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectedView {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

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

/// A list body (a snapshot page, a VNet listing) read one level deep: its
/// records and metadata fields as JSON text, each record parsed on its own
/// afterwards.
pub(crate) struct ListBody<'a> {
    /// The records; `None` when the body holds no list of them.
    pub records: Option<Vec<Cow<'a, RawValue>>>,
    /// The metadata fields asked for, as given.
    pub meta: serde_json::Map<String, Value>,
    /// What the page says of the pages after it.
    after: After,
}

/// What a list page says of the rest of its listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Nothing: it is the last page (or the listing's only one).
    Nothing,
    /// More pages follow: the field that links to the next one (ARM's
    /// `nextLink`, Resource Graph's skip token).
    More(&'static str),
    /// Resource Graph cut the result short (`resultTruncated`) and gave no
    /// skip token: the rest cannot be fetched page by page.
    Truncated,
}

impl After {
    fn of(fields: &BTreeMap<String, &RawValue>) -> After {
        let given = |k: &str| {
            fields
                .get(k)
                .is_some_and(|raw| match serde_json::from_str::<Value>(raw.get()) {
                    Ok(Value::Null) => false,
                    Ok(Value::String(s)) => !s.trim().is_empty(),
                    _ => true,
                })
        };
        for k in ["nextLink", "$skipToken", "skipToken", "skip_token"] {
            if given(k) {
                return After::More(k);
            }
        }
        let truncated = fields.get("resultTruncated").is_some_and(|raw| {
            matches!(
                serde_json::from_str::<Value>(raw.get()),
                Ok(Value::Bool(true))
            ) || raw.get().eq_ignore_ascii_case("\"true\"")
        });
        if truncated {
            After::Truncated
        } else {
            After::Nothing
        }
    }
}

/// The rows of a Resource Graph response in its table format (`"data":
/// {"columns": [{"name", "type"}], "rows": [[...]]}`), each as the object
/// the default format gives. `None` when `data` is not such a table.
fn table_rows(data: &RawValue) -> Option<Vec<Cow<'static, RawValue>>> {
    #[derive(serde::Deserialize)]
    struct Column {
        name: String,
    }
    #[derive(serde::Deserialize)]
    struct Table {
        columns: Vec<Column>,
        rows: Vec<Vec<Value>>,
    }
    let table: Table = serde_json::from_str(data.get()).ok()?;
    table
        .rows
        .into_iter()
        .map(|row| {
            let obj: serde_json::Map<String, Value> = table
                .columns
                .iter()
                .map(|c| c.name.clone())
                .zip(row)
                .collect();
            let text = serde_json::to_string(&obj).ok()?;
            RawValue::from_string(text).ok().map(Cow::Owned)
        })
        .collect()
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

/// Reads a list body: a JSON array of records; or an object with them
/// under the first of `lists` that holds an array (`data` may also be
/// Resource Graph's table format), its `meta` fields kept; or one record
/// as a GET returns it, when its `id` is `one`'s.
pub(crate) fn list_body<'a>(
    body: &'a [u8],
    lists: &[&str],
    meta: &[&str],
    one: fn(&str) -> bool,
) -> Result<ListBody<'a>, serde_json::Error> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let records: Vec<&RawValue> = serde_json::from_slice(body)?;
        return Ok(ListBody {
            records: Some(records.into_iter().map(Cow::Borrowed).collect()),
            meta: Default::default(),
            after: After::Nothing,
        });
    }
    let fields: BTreeMap<String, &RawValue> = match first {
        Some(b'{') => serde_json::from_slice(body)?,
        _ => {
            // Not an object or array: only a JSON error or nothing to use.
            serde_json::from_slice::<serde::de::IgnoredAny>(body)?;
            BTreeMap::new()
        }
    };
    let records = lists
        .iter()
        .find_map(|k| {
            let raw = fields.get(*k)?;
            let items = serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?;
            Some(items.into_iter().map(Cow::Borrowed).collect())
        })
        .or_else(|| table_rows(fields.get("data")?))
        .or_else(|| {
            // One record (`az network nic show`, an ARM GET): a page of one.
            let id = fields.get("id")?;
            let id = serde_json::from_str::<&str>(id.get()).ok()?;
            one(id)
                .then(|| serde_json::from_slice::<&RawValue>(body).ok())
                .flatten()
                .map(|raw| vec![Cow::Borrowed(raw)])
        });
    let after = After::of(&fields);
    let mut kept = serde_json::Map::new();
    for (k, raw) in fields {
        if meta.contains(&k.as_str()) {
            kept.insert(k, serde_json::from_str(raw.get())?);
        }
    }
    Ok(ListBody {
        records,
        meta: kept,
        after,
    })
}

/// A listing's `taken_at`: required, a time, and not more than 5 minutes
/// ahead of this clock (a wrong clock or zone would make evidence certain
/// until a time nothing has seen yet).
pub(crate) fn listing_time(taken_at: Option<String>) -> Result<DateTime<Utc>, ApiError> {
    let taken_at = taken_at.ok_or_else(|| {
        ApiError::bad(
            ErrorCode::InvalidParameter,
            "taken_at",
            "taken_at is required: when the listing was taken",
        )
    })?;
    let t = crate::azure::time::parse_time(&taken_at).map_err(|e| {
        ApiError::bad(
            ErrorCode::InvalidTime,
            "taken_at",
            format!("taken_at {taken_at:?}: {e}"),
        )
    })?;
    if let Some(reason) = crate::azure::time::from_the_future(t) {
        return Err(ApiError::bad(
            ErrorCode::InvalidTime,
            "taken_at",
            format!("taken_at {reason}"),
        ));
    }
    Ok(t)
}

/// Parses and stores one snapshot page, then updates `index`.
pub async fn ingest_snapshot(
    pool: &PgPool,
    index: &Index,
    body: &[u8],
    query: SnapshotParams,
) -> Result<SnapshotResponse, ApiError> {
    let body = page_body(body).map_err(|e| {
        ApiError::bad(
            ErrorCode::InvalidBody,
            "body",
            format!("snapshot body is not JSON: {e}"),
        )
    })?;
    let after = body.after;
    let from_body: SnapshotParams =
        serde_json::from_value(Value::Object(body.meta)).map_err(|e| {
            ApiError::bad(
                ErrorCode::InvalidBody,
                "body",
                format!("snapshot metadata: {e}"),
            )
        })?;
    let nics = body.records.ok_or_else(|| {
        ApiError::bad(
            ErrorCode::InvalidBody,
            "value",
            "no NIC array: expected an ARM list page {\"value\": [...]}, {\"nics\": [...]}, a Resource Graph {\"data\": [...]}, a JSON array, or one NIC",
        )
    })?;
    let taken_at = listing_time(from_body.taken_at.or(query.taken_at))?;
    let complete = from_body.complete.or(query.complete).unwrap_or(false);
    // A page that says more pages follow does not finish its snapshot
    // unless told to; it cannot finish a complete one at all: every NIC on
    // the pages not posted would be taken for deleted.
    let last_page = match (from_body.last_page.or(query.last_page), after) {
        (Some(true), After::More(link)) if complete => {
            return Err(ApiError::bad(
                ErrorCode::InvalidParameter,
                "last_page",
                format!(
                    "this page's {link} says its listing goes on, so it cannot finish a complete snapshot: \
                     post every page of the listing (with the same snapshot_id, or the same metadata), the last one without a {link}"
                ),
            ));
        }
        (_, After::Truncated) if complete => {
            return Err(ApiError::bad(
                ErrorCode::InvalidParameter,
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
            return Err(ApiError::bad(
                ErrorCode::InvalidParameter,
                "subscriptions",
                "a complete snapshot must name the subscriptions it covers",
            ));
        }
        None => parsed.iter().map(|(_, s)| s.id.subscription()).collect(),
    };
    let mut subscriptions = subscriptions;
    subscriptions.sort();
    subscriptions.dedup();
    if subscriptions.is_empty() {
        return Err(ApiError::bad(
            ErrorCode::InvalidParameter,
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
    let id = from_body
        .snapshot_id
        .or(query.snapshot_id)
        .unwrap_or_else(|| derived_snapshot_id(taken_at, &subscriptions, complete));
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
) -> Result<SnapshotResponse, ApiError> {
    let (report, changes) = store::finish_snapshot(pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no snapshot with id {id:?}")))?;
    index.apply(changes).await;
    let (taken_at, subscriptions): (DateTime<Utc>, Vec<String>) =
        sqlx::query_as("SELECT taken_at, subscriptions FROM snapshots WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    Ok(snapshot_response(
        report,
        taken_at,
        subscriptions,
        0,
        Vec::new(),
    ))
}

/// A body or file as posted, gzip decompressed: gzip is recognised by its
/// magic bytes (whatever the headers say), and its decompressed size held to
/// `limit` when one is given (413: a small gzip body may expand a
/// thousandfold).
pub fn decompressed(body: &[u8], limit: Option<usize>) -> Result<Cow<'_, [u8]>, ApiError> {
    use std::io::Read;
    if !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(Cow::Borrowed(body));
    }
    let mut out = Vec::new();
    let cap = limit.map_or(u64::MAX, |l| l as u64 + 1);
    flate2::read::MultiGzDecoder::new(body)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad(
                ErrorCode::InvalidBody,
                "body",
                format!("the gzip body could not be decompressed: {e}"),
            )
        })?;
    match limit {
        Some(l) if out.len() > l => Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::BodyTooLarge,
            format!(
                "the gzip body decompresses to more than the configured limit of {l} bytes (--max-body-bytes / IPWHO_MAX_BODY_BYTES); post smaller pages"
            ),
        )),
        _ => Ok(Cow::Owned(out)),
    }
}

/// Parses and stores a batch of Activity Log records, then updates `index`.
pub async fn ingest_activity(
    pool: &PgPool,
    index: &Index,
    body: &[u8],
) -> Result<ActivityResponse, ApiError> {
    let outcomes = parse_activity(body);
    let records = outcomes.len();
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
