//! Activity Log records about NICs, turned into NIC write/delete evidence.
//!
//! A request body is a batch of records in one of these envelopes:
//! `{"records": [...]}` (Event Hubs, older storage exports), `{"value": [...]}`
//! (the Activity Log REST list API), a plain JSON array, a single record
//! object, or JSON Lines (storage exports since 2018-11; blank lines are
//! skipped). Each record comes back as exactly one [`ActivityOutcome`], in
//! order, so the `i`-th outcome is about record `i`: accepted NIC evidence,
//! ignored (another operation, or not a success), or rejected with the field
//! that was wrong. A record that is not valid JSON is rejected on its own; it
//! never fails the batch.
//!
//! Three record schemas are read, field by field through `serde_json::Value`
//! so that fields of no interest (a string `durationMs`, `identity.claims` as
//! a JSON string) cannot break parsing:
//! - the storage / Event Hubs export: `operationName`, `resultType`,
//!   `resultSignature`, `resourceId`, `time`, `properties.statusCode`,
//!   `properties.responseBody`;
//! - the REST / portal schema: `operationName.value`, `status.value`,
//!   `subStatus.value`, `eventTimestamp`, `resourceId`, `properties`;
//! - Log Analytics `AzureActivity` rows: `OperationNameValue`,
//!   `ActivityStatusValue`, `ActivitySubstatusValue`, `ResourceId`,
//!   `TimeGenerated`, `Properties_d` (object) or `Properties` (JSON string).
//!
//! Only successful `MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE` (with the NIC
//! as `properties.responseBody`, a JSON string or an object) and `.../DELETE`
//! records become evidence.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::lookup;
use super::nic::{parse_nic, parse_nic_str};
use super::time::{from_the_future, parse_time_value};
use crate::model::{ArmId, NicState};

/// The record fields classification reads, each by its spellings in the
/// three schemas (looked up exactly first, then ignoring ASCII case).
const OPERATION: &[&str] = &["OperationNameValue", "operationName"];
const STATUS: &[&str] = &[
    "resultType",
    "status",
    "ActivityStatusValue",
    "ActivityStatus",
];
const RESOURCE: &[&str] = &["resourceId", "ResourceId", "_ResourceId"];
const TIME: &[&str] = &["time", "eventTimestamp", "TimeGenerated"];
const CORRELATION: &[&str] = &["correlationId"];
const EVENT_DATA: &[&str] = &["eventDataId"];
const PROPERTIES: &[&str] = &["properties", "Properties_d"];
const SIGNATURE: &[&str] = &[
    "resultSignature",
    "subStatus",
    "ActivitySubstatusValue",
    "ActivitySubstatus",
];
/// Every field of a record that is read: the others (identity claims,
/// authorization, HTTP request, ...) are skipped unparsed.
const RECORD_FIELDS: &[&[&str]] = &[
    OPERATION,
    STATUS,
    RESOURCE,
    TIME,
    CORRELATION,
    EVENT_DATA,
    PROPERTIES,
    SIGNATURE,
];

const NIC_WRITE: &str = "microsoft.network/networkinterfaces/write";
const NIC_DELETE: &str = "microsoft.network/networkinterfaces/delete";

/// What became of one record of a batch.
// Not boxed: outcomes are short-lived, and in a NIC feed most are `Accepted`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ActivityOutcome {
    /// NIC evidence.
    Accepted(ActivityEvent),
    /// A well-formed record that says nothing about NIC state.
    Ignored { index: usize, reason: IgnoreReason },
    /// A record about a NIC (or one that cannot even be classified) with a
    /// field that is missing or wrong. `field` is the JSON path within the
    /// record; empty when the record as a whole is unusable.
    Rejected {
        index: usize,
        field: String,
        reason: String,
    },
}

/// Why a record was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IgnoreReason {
    /// Not a NIC write or delete (another resource type, a NIC action, a
    /// sign-in, a health event...).
    OtherOperation,
    /// A NIC write or delete that did not (yet) succeed: Start, Accept,
    /// Failure, or any status other than Success/Succeeded.
    NotSucceeded,
    /// A NIC write or delete whose `resourceId` is not a network interface.
    OtherResourceType,
}

impl IgnoreReason {
    /// Stable snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            IgnoreReason::OtherOperation => "other_operation",
            IgnoreReason::NotSucceeded => "not_succeeded",
            IgnoreReason::OtherResourceType => "other_resource_type",
        }
    }
}

impl std::fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A successful NIC write or delete.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityEvent {
    /// Stable dedup key (hex SHA-256, see [`event_key`]): the same record
    /// posted twice, in any envelope, gives the same key.
    pub key: String,
    /// The NIC: the response body's id (ARM casing) for a write, the record's
    /// `resourceId` for a delete.
    pub nic: ArmId,
    /// The record's time, truncated to whole microseconds.
    pub at: DateTime<Utc>,
    pub correlation_id: Option<String>,
    pub change: ActivityChange,
}

/// What the event says about the NIC.
#[derive(Debug, Clone, PartialEq)]
pub enum ActivityChange {
    /// From now on the NIC has `state`; `created` when the write created it
    /// (status code `Created`).
    Write { state: NicState, created: bool },
    /// From now on the NIC is gone.
    Delete,
}

/// Parses a request body of Activity Log records (see the module docs).
/// Returns one outcome per record, in order; an empty body gives none.
///
/// The body is read once to find its records; a large batch's records are
/// then parsed and classified on several threads (they are independent).
pub fn parse_activity(body: &[u8]) -> Vec<ActivityOutcome> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    let mut items = Vec::new();
    if document(body, &mut items).is_err() {
        // JSON Lines: one document a line (itself possibly an envelope).
        items.clear();
        for line in body.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if let Err(e) = document(line, &mut items) {
                items.push(Item::Invalid(e));
            }
        }
    }
    classify_items(&items)
}

/// One record of a body, found but not yet read.
enum Item<'a> {
    Record(&'a RawValue),
    /// A JSON Lines line that is not JSON.
    Invalid(serde_json::Error),
}

/// Reads one JSON document and appends its records to `out`: the records of
/// an envelope `{"records": [...]}` or of a REST page `{"value": [...]}` (a
/// record itself never has an array `records`/`value`, nor, in the REST
/// page, an operation), the items of an array, or else the document itself
/// as one record. Fails, appending nothing, when it is not one valid JSON
/// document.
fn document<'a>(text: &'a [u8], out: &mut Vec<Item<'a>>) -> serde_json::Result<()> {
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    let records: Vec<&RawValue> = match first {
        Some(b'[') => serde_json::from_slice(text)?,
        Some(b'{') => {
            // As in a parsed object, the last of repeated keys counts.
            let fields: BTreeMap<String, &RawValue> = serde_json::from_slice(text)?;
            let operation = OPERATION
                .iter()
                .any(|n| fields.keys().any(|k| k.eq_ignore_ascii_case(n)));
            match (fields.get("records"), fields.get("value")) {
                (Some(r), _) if is_array(r) => items(r),
                (_, Some(v)) if is_array(v) && !operation => items(v),
                _ => vec![serde_json::from_slice(text)?],
            }
        }
        _ => vec![serde_json::from_slice(text)?],
    };
    out.extend(records.into_iter().map(Item::Record));
    Ok(())
}

/// Parses and classifies `items` in order (the `i`-th outcome is about
/// record `i`), on every core when there are many.
fn classify_items(items: &[Item<'_>]) -> Vec<ActivityOutcome> {
    crate::par::map(items, |index, item| {
        let rec = match item {
            Item::Invalid(e) => {
                return rejected(index, (String::new(), format!("not valid JSON: {e}")));
            }
            Item::Record(rec) => rec,
        };
        // An object is read shallowly; anything else whole (to be rejected).
        let parsed = if rec.get().trim_start().starts_with('{') {
            serde_json::from_str::<Record>(rec.get()).map(|Record(obj)| Value::Object(obj))
        } else {
            serde_json::from_str::<Value>(rec.get())
        };
        match parsed {
            Ok(rec) => classify(index, &rec),
            Err(e) => rejected(index, (String::new(), format!("not valid JSON: {e}"))),
        }
    })
}

/// A record as [`classify_record`] reads it: an object holding only the
/// fields of [`RECORD_FIELDS`] (in any ASCII case), parsed; every other
/// field is skipped without being built.
struct Record(Map<String, Value>);

impl<'de> Deserialize<'de> for Record {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Record;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Record, A::Error> {
                let mut obj = Map::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let read = RECORD_FIELDS
                        .iter()
                        .flat_map(|names| names.iter())
                        .any(|n| n.eq_ignore_ascii_case(&key));
                    if read {
                        obj.insert(key.into_owned(), map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Record(obj))
            }
        }
        d.deserialize_map(V)
    }
}

fn items(raw: &RawValue) -> Vec<&RawValue> {
    serde_json::from_str(raw.get()).expect("validated as a JSON array")
}

fn is_array(raw: &RawValue) -> bool {
    raw.get().trim_start().starts_with('[')
}

/// Why a field could not be read: (field path, reason).
type FieldError = (String, String);

/// A string field, or the `value` of a REST localizable `{value,
/// localizedValue}` object. `Ok(None)` when absent, null or blank.
fn text<'a>(
    obj: &'a Map<String, Value>,
    names: &[&str],
) -> Result<Option<(String, &'a str)>, FieldError> {
    let Some((key, v)) = lookup(obj, names) else {
        return Ok(None);
    };
    let (field, s) = match v {
        Value::Null => return Ok(None),
        Value::String(s) => (key.to_string(), s.as_str()),
        Value::Object(o) => match o.get("value") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => (format!("{key}.value"), s.as_str()),
            Some(_) => return Err((format!("{key}.value"), "expected a string".into())),
        },
        _ => return Err((key.to_string(), "expected a string".into())),
    };
    if s.contains('\0') {
        return Err((field, "contains a NUL character".into()));
    }
    let s = s.trim();
    Ok((!s.is_empty()).then_some((field, s)))
}

fn rejected(index: usize, (field, reason): FieldError) -> ActivityOutcome {
    ActivityOutcome::Rejected {
        index,
        field,
        reason,
    }
}

/// The operation named by a record, normalised.
enum Op {
    Write,
    Delete,
}

fn classify(index: usize, rec: &Value) -> ActivityOutcome {
    match classify_record(index, rec) {
        Ok(outcome) => outcome,
        Err(e) => rejected(index, e),
    }
}

fn classify_record(index: usize, rec: &Value) -> Result<ActivityOutcome, FieldError> {
    let Some(obj) = rec.as_object() else {
        return Err((String::new(), "record is not a JSON object".into()));
    };
    let ignored = |reason| Ok(ActivityOutcome::Ignored { index, reason });

    // 1. The operation: anything but a NIC write/delete is of no interest.
    let Some((_, operation)) = text(obj, OPERATION)? else {
        return Err(("operationName".into(), "missing".into()));
    };
    let op = match operation.to_ascii_lowercase().as_str() {
        NIC_WRITE => Op::Write,
        NIC_DELETE => Op::Delete,
        _ => return ignored(IgnoreReason::OtherOperation),
    };

    // 2. The phase: only a success is evidence.
    let Some((_, status)) = text(obj, STATUS)? else {
        return Err(("resultType".into(), "missing".into()));
    };
    let status = status.to_ascii_lowercase();
    if status != "success" && status != "succeeded" {
        return ignored(IgnoreReason::NotSucceeded);
    }

    // 3. The NIC and the time.
    let Some((rid_field, rid)) = text(obj, RESOURCE)? else {
        return Err(("resourceId".into(), "missing".into()));
    };
    let resource = ArmId::parse(rid).map_err(|e| (rid_field.clone(), format!("{rid:?}: {e}")))?;
    if !names_a_nic(&resource) {
        return ignored(IgnoreReason::OtherResourceType);
    }
    let Some((time_field, time)) = lookup(obj, TIME) else {
        return Err(("time".into(), "missing".into()));
    };
    let at = parse_time_value(time).map_err(|e| (time_field.to_string(), e.to_string()))?;
    if let Some(reason) = from_the_future(at) {
        return Err((time_field.to_string(), reason));
    }
    let correlation_id = text(obj, CORRELATION)?.map(|(_, s)| s.to_string());
    let event_data_id = text(obj, EVENT_DATA)?.map(|(_, s)| s.to_string());

    // 4. The change.
    let (nic, change) = match op {
        Op::Delete => (resource.clone(), ActivityChange::Delete),
        Op::Write => {
            let props = properties(obj)?;
            let (body_field, state) = response_state(props.as_ref())?;
            if state.id != resource {
                return Err((
                    format!("{body_field}.id"),
                    format!(
                        "the response body is NIC {} but the record's resourceId is {}",
                        state.id, resource
                    ),
                ));
            }
            let status_code = props
                .as_ref()
                .and_then(|p| lookup(p, &["statusCode"]))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default();
            let signature = text(obj, SIGNATURE)?
                .map(|(_, s)| s.to_ascii_lowercase())
                .unwrap_or_default();
            let created = status_code.trim().eq_ignore_ascii_case("created")
                || signature.ends_with("created");
            (state.id.clone(), ActivityChange::Write { state, created })
        }
    };

    let key = event_key(
        &resource,
        operation,
        &at,
        correlation_id.as_deref(),
        event_data_id.as_deref(),
        match &change {
            ActivityChange::Write { state, .. } => Some(state),
            ActivityChange::Delete => None,
        },
    );
    Ok(ActivityOutcome::Accepted(ActivityEvent {
        key,
        nic,
        at,
        correlation_id,
        change,
    }))
}

/// `.../networkInterfaces/<name>` in any casing.
fn names_a_nic(id: &ArmId) -> bool {
    let mut rev = id.as_str().rsplit('/');
    rev.next();
    rev.next()
        .is_some_and(|s| s.eq_ignore_ascii_case("networkInterfaces"))
}

/// The record's `properties` as an object (Log Analytics' `Properties` column
/// is a JSON string). `None` when absent.
fn properties(obj: &Map<String, Value>) -> Result<Option<Map<String, Value>>, FieldError> {
    let Some((key, v)) = lookup(obj, PROPERTIES) else {
        return Ok(None);
    };
    match v {
        Value::Null => Ok(None),
        Value::Object(o) => Ok(Some(o.clone())),
        Value::String(s) if s.trim().is_empty() => Ok(None),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) => Ok(Some(o)),
            Ok(_) => Err((key.to_string(), "expected an object".into())),
            Err(e) => Err((key.to_string(), format!("not valid JSON: {e}"))),
        },
        _ => Err((key.to_string(), "expected an object".into())),
    }
}

/// The NIC state in `properties.responseBody` (a JSON string or an object),
/// with the field path used for errors.
fn response_state(props: Option<&Map<String, Value>>) -> Result<(String, NicState), FieldError> {
    const FIELD: &str = "properties.responseBody";
    let missing = || -> FieldError {
        (
            FIELD.into(),
            "missing: a successful NIC write must carry the NIC as its response body".into(),
        )
    };
    let (_, body) = props
        .and_then(|p| lookup(p, &["responseBody"]))
        .ok_or_else(missing)?;
    let state = match body {
        Value::Object(_) => parse_nic(body),
        Value::String(s) if s.trim().is_empty() => return Err(missing()),
        // Text: read into the model directly (see `parse_nic_str`).
        Value::String(s) => parse_nic_str(s),
        Value::Null => return Err(missing()),
        _ => {
            return Err((
                FIELD.into(),
                "expected the NIC as a JSON string or an object".into(),
            ));
        }
    }
    .map_err(|e| {
        let e = e.within(FIELD);
        (e.field, e.reason)
    })?;
    Ok((FIELD.to_string(), state))
}

/// The dedup key of a successful NIC event: hex SHA-256 over the lower-cased
/// resource id, the lower-cased operation, the (already required) success
/// status, the time in microseconds, the correlation id, the event data id,
/// and for a write the fingerprint of the NIC state. Each part is
/// length-prefixed, so distinct parts cannot run together. The status is
/// hashed in its canonical form, so `Success` and `Succeeded` spellings of one
/// event agree.
pub fn event_key(
    resource: &ArmId,
    operation: &str,
    at: &DateTime<Utc>,
    correlation_id: Option<&str>,
    event_data_id: Option<&str>,
    state: Option<&NicState>,
) -> String {
    let mut h = Sha256::new();
    let mut part = |present: bool, bytes: &[u8]| {
        h.update([u8::from(present)]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(true, resource.key().as_bytes());
    part(true, operation.trim().to_ascii_lowercase().as_bytes());
    part(true, b"succeeded");
    part(true, at.timestamp_micros().to_string().as_bytes());
    part(
        correlation_id.is_some(),
        correlation_id.unwrap_or_default().as_bytes(),
    );
    part(
        event_data_id.is_some(),
        event_data_id.unwrap_or_default().as_bytes(),
    );
    let fingerprint = state.map(NicState::fingerprint);
    part(
        fingerprint.is_some(),
        fingerprint.unwrap_or_default().as_bytes(),
    );
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn sample(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/../shared/samples/azure/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The number of records in a sample, counted independently of the parser.
    fn count_records(bytes: &[u8]) -> usize {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(o)) if o.contains_key("records") => {
                o["records"].as_array().unwrap().len()
            }
            Ok(Value::Array(a)) => a.len(),
            Ok(_) => 1,
            Err(_) => bytes
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .count(),
        }
    }

    fn ignored(index: usize, reason: IgnoreReason) -> ActivityOutcome {
        ActivityOutcome::Ignored { index, reason }
    }

    fn assert_indexes_in_order(outcomes: &[ActivityOutcome]) {
        for (i, o) in outcomes.iter().enumerate() {
            match o {
                ActivityOutcome::Ignored { index, .. }
                | ActivityOutcome::Rejected { index, .. } => {
                    assert_eq!(*index, i, "{o:?}")
                }
                ActivityOutcome::Accepted(_) => {}
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn every_activity_sample_parses_with_no_record_lost() {
        let files = [
            "elastic-integrations__azure_activitylogs__test-acitivitylogs-responsebody.log",
            "elastic-integrations__azure_activitylogs__test-activitylogs-raw.log",
            "elastic-integrations__azure_activitylogs__test-time-formats-corner-cases.log",
            "MicrosoftDocs-azure-monitor-docs__platform__activity-log-schema__storage_eventhub_example.json",
        ];
        for f in files {
            let bytes = sample(f);
            let outcomes = parse_activity(&bytes);
            assert_eq!(outcomes.len(), count_records(&bytes), "{f}");
            assert!(!outcomes.is_empty(), "{f}");
            assert_indexes_in_order(&outcomes);
        }
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn elastic_public_ip_write_is_another_operation() {
        // The record's operationName is "Sign-in activity" (the envelope was
        // spliced from a sign-in log); its properties describe a
        // publicIPAddresses/write. Either way it is not NIC evidence.
        let out = parse_activity(&sample(
            "elastic-integrations__azure_activitylogs__test-acitivitylogs-responsebody.log",
        ));
        assert_eq!(out, vec![ignored(0, IgnoreReason::OtherOperation)]);
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn elastic_raw_start_event_and_health_events_are_other_operations() {
        // Line 1 is a Start event, but of an Event Hubs listKeys action: the
        // operation rules it out before its phase is looked at. Lines 2-3 are
        // ResourceHealth events with responseBody as a string and an object.
        let out = parse_activity(&sample(
            "elastic-integrations__azure_activitylogs__test-activitylogs-raw.log",
        ));
        assert_eq!(
            out,
            vec![
                ignored(0, IgnoreReason::OtherOperation),
                ignored(1, IgnoreReason::OtherOperation),
                ignored(2, IgnoreReason::OtherOperation),
            ]
        );
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn elastic_raw_start_event_as_a_nic_write_is_not_succeeded() {
        // The same Start record with its operation swapped for a NIC write.
        let bytes = sample("elastic-integrations__azure_activitylogs__test-activitylogs-raw.log");
        let first = bytes.split(|&b| b == b'\n').next().unwrap();
        let mut rec: Value = serde_json::from_slice(first).unwrap();
        assert_eq!(rec["resultType"], "Start");
        rec["operationName"] = json!("MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE");
        let out = parse_activity(rec.to_string().as_bytes());
        assert_eq!(out, vec![ignored(0, IgnoreReason::NotSucceeded)]);
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn time_corner_case_records_have_no_operation_and_are_rejected() {
        let out = parse_activity(&sample(
            "elastic-integrations__azure_activitylogs__test-time-formats-corner-cases.log",
        ));
        assert_eq!(out.len(), 11);
        for (i, o) in out.iter().enumerate() {
            assert_eq!(
                o,
                &ActivityOutcome::Rejected {
                    index: i,
                    field: "operationName".into(),
                    reason: "missing".into()
                }
            );
        }
    }

    #[test]
    #[cfg_attr(
        not(feature = "samples"),
        ignore = "reads ../shared/samples: --features samples"
    )]
    fn documented_export_example_is_another_operation() {
        let out = parse_activity(&sample(
            "MicrosoftDocs-azure-monitor-docs__platform__activity-log-schema__storage_eventhub_example.json",
        ));
        assert_eq!(out, vec![ignored(0, IgnoreReason::OtherOperation)]);
    }

    const SUB: &str = "0b88dfdb-55b3-4fb0-b474-5b6dcbe6b2ef";

    fn nic_id_upper() -> String {
        format!(
            "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/RG-WEB/PROVIDERS/MICROSOFT.NETWORK/NETWORKINTERFACES/WEB-NIC",
            SUB.to_uppercase()
        )
    }

    fn nic_body() -> Value {
        json!({
            "name": "web-nic",
            "id": format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-nic"),
            "etag": "W/\"5c0a5b36-1e3c-4c6b-9f1e-2a7c4d1d1f00\"",
            "location": "westeurope",
            "tags": "******",
            "type": "Microsoft.Network/networkInterfaces",
            "properties": {
                "provisioningState": "Succeeded",
                "macAddress": "00-0D-3A-AA-BB-CC",
                "virtualMachine": {"id": format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-vm")},
                "ipConfigurations": [{
                    "name": "ipconfig1",
                    "id": format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-nic/ipConfigurations/ipconfig1"),
                    "etag": "W/\"5c0a5b36-1e3c-4c6b-9f1e-2a7c4d1d1f00\"",
                    "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
                    "properties": {
                        "provisioningState": "Succeeded",
                        "privateIPAddress": "10.20.0.7",
                        "privateIPAllocationMethod": "Dynamic",
                        "privateIPAddressVersion": "IPv4",
                        "primary": true,
                        "subnet": {"id": format!("/subscriptions/{SUB}/resourceGroups/rg-net/providers/Microsoft.Network/virtualNetworks/spoke/subnets/web")}
                    }
                }]
            }
        })
    }

    /// An export-schema NIC write; `body_as_string` chooses the responseBody form.
    fn export_write(status_code: &str, signature: &str, body_as_string: bool) -> Value {
        let body = if body_as_string {
            Value::String(nic_body().to_string())
        } else {
            nic_body()
        };
        json!({
            "time": "2024-05-02T10:15:30.1234567Z",
            "resourceId": nic_id_upper(),
            "operationName": "MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE",
            "category": "Administrative",
            "resultType": "Success",
            "resultSignature": signature,
            "durationMs": "3120",
            "callerIpAddress": "203.0.113.9",
            "correlationId": "4f1c2a8e-7d0b-4a51-9a7e-0c3b5b1e9d21",
            "identity": {"claims": "{\"name\":\"ops\"}"},
            "level": "Information",
            "location": "global",
            "properties": {
                "statusCode": status_code,
                "serviceRequestId": "9c1a",
                "responseBody": body,
                "eventCategory": "Administrative",
                "message": "Microsoft.Network/networkInterfaces/write"
            }
        })
    }

    fn accepted(o: &ActivityOutcome) -> &ActivityEvent {
        match o {
            ActivityOutcome::Accepted(e) => e,
            other => panic!("expected accepted, got {other:?}"),
        }
    }

    fn rejected_field(o: &ActivityOutcome) -> (usize, &str) {
        match o {
            ActivityOutcome::Rejected { index, field, .. } => (*index, field.as_str()),
            other => panic!("expected rejected, got {other:?}"),
        }
    }

    #[test]
    fn nic_write_with_response_body_as_string_created() {
        let rec = export_write("Created", "Succeeded.Created", true);
        let out = parse_activity(json!({ "records": [rec] }).to_string().as_bytes());
        assert_eq!(out.len(), 1);
        let ev = accepted(&out[0]);
        // The body's ARM casing wins for display; the key is case-insensitive.
        assert_eq!(
            ev.nic.as_str(),
            format!(
                "/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-nic"
            )
        );
        assert_eq!(ev.nic, ArmId::parse(&nic_id_upper()).unwrap());
        assert_eq!(
            ev.at,
            Utc.with_ymd_and_hms(2024, 5, 2, 10, 15, 30).unwrap()
                + chrono::TimeDelta::microseconds(123_456)
        );
        assert_eq!(
            ev.correlation_id.as_deref(),
            Some("4f1c2a8e-7d0b-4a51-9a7e-0c3b5b1e9d21")
        );
        assert_eq!(ev.key.len(), 64);
        match &ev.change {
            ActivityChange::Write { state, created } => {
                assert!(*created);
                assert_eq!(state.name, "web-nic");
                assert_eq!(state.mac.as_ref().unwrap().as_str(), "000D3AAABBCC");
                assert_eq!(state.vm.as_ref().unwrap().name(), "web-vm");
                assert_eq!(state.ips.len(), 1);
                assert_eq!(state.ips[0].ip, "10.20.0.7/32".parse().unwrap());
                assert_eq!(state.ips[0].vnet().unwrap().name(), "spoke");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn nic_write_with_response_body_as_object_ok_is_an_update() {
        let string_form = parse_activity(
            export_write("OK", "Succeeded.OK", true)
                .to_string()
                .as_bytes(),
        );
        let object_form = parse_activity(
            export_write("OK", "Succeeded.OK", false)
                .to_string()
                .as_bytes(),
        );
        let (a, b) = (accepted(&string_form[0]), accepted(&object_form[0]));
        assert!(matches!(
            b.change,
            ActivityChange::Write { created: false, .. }
        ));
        // The two forms are the same event.
        assert_eq!(a, b);
    }

    #[test]
    fn created_is_read_from_the_signature_too() {
        let out = parse_activity(
            export_write("", "Succeeded.Created", false)
                .to_string()
                .as_bytes(),
        );
        assert!(matches!(
            accepted(&out[0]).change,
            ActivityChange::Write { created: true, .. }
        ));
        let out = parse_activity(export_write("Created", "", false).to_string().as_bytes());
        assert!(matches!(
            accepted(&out[0]).change,
            ActivityChange::Write { created: true, .. }
        ));
    }

    #[test]
    fn dedup_keys_are_stable_and_distinct() {
        let rec = export_write("Created", "Succeeded.Created", true);
        let once = parse_activity(rec.to_string().as_bytes());
        let twice = parse_activity(json!([rec, rec]).to_string().as_bytes());
        assert_eq!(accepted(&once[0]).key, accepted(&twice[0]).key);
        assert_eq!(accepted(&twice[0]).key, accepted(&twice[1]).key);

        let mut later = rec.clone();
        later["time"] = json!("2024-05-02T10:15:30.1234580Z");
        let mut other_corr = rec.clone();
        other_corr["correlationId"] = json!("00000000-0000-0000-0000-000000000001");
        let mut other_ip = rec.clone();
        let mut body = nic_body();
        body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] =
            json!("10.20.0.8");
        other_ip["properties"]["responseBody"] = body;
        let mut delete = rec.clone();
        delete["operationName"] = json!("MICROSOFT.NETWORK/NETWORKINTERFACES/DELETE");
        let keys: Vec<String> = [rec, later, other_corr, other_ip, delete]
            .iter()
            .map(|r| {
                accepted(&parse_activity(r.to_string().as_bytes())[0])
                    .key
                    .clone()
            })
            .collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn nic_delete_needs_no_body() {
        let rec = json!({
            "time": "2024-05-02T11:00:00Z",
            "resourceId": nic_id_upper(),
            "operationName": "Microsoft.Network/networkInterfaces/delete",
            "resultType": "Success",
            "resultSignature": "Succeeded.OK",
            "correlationId": "c0ffee00-0000-0000-0000-000000000000",
            "properties": {"statusCode": "OK"}
        });
        let out = parse_activity(rec.to_string().as_bytes());
        let ev = accepted(&out[0]);
        assert_eq!(ev.change, ActivityChange::Delete);
        assert_eq!(ev.nic.as_str(), nic_id_upper());
        assert_eq!(ev.at, Utc.with_ymd_and_hms(2024, 5, 2, 11, 0, 0).unwrap());
    }

    #[test]
    fn json_lines_with_a_garbage_line_rejects_only_that_line() {
        let good = export_write("OK", "Succeeded.OK", true).to_string();
        let mut start = export_write("OK", "Started.", true);
        start["resultType"] = json!("Start");
        let body = format!(
            "{good}\n\n{{\"time\": \"2024-05-02T1\n{}\r\n{good}\n",
            start
        );
        let out = parse_activity(body.as_bytes());
        assert_eq!(out.len(), 4);
        accepted(&out[0]);
        assert_eq!(rejected_field(&out[1]), (1, ""));
        assert_eq!(out[2], ignored(2, IgnoreReason::NotSucceeded));
        accepted(&out[3]);
    }

    #[test]
    fn phases_other_than_success_are_not_succeeded() {
        for status in [
            "Start", "Started", "Accept", "Accepted", "Failure", "Failed", "Canceled",
        ] {
            let mut rec = export_write("OK", "", true);
            rec["resultType"] = json!(status);
            let out = parse_activity(rec.to_string().as_bytes());
            assert_eq!(
                out,
                vec![ignored(0, IgnoreReason::NotSucceeded)],
                "{status}"
            );
        }
        let mut rec = export_write("OK", "", true);
        rec["resultType"] = json!("Succeeded");
        accepted(&parse_activity(rec.to_string().as_bytes())[0]);
    }

    #[test]
    fn other_operations_and_resource_types_are_ignored() {
        let mut pip = export_write("OK", "", true);
        pip["operationName"] = json!("MICROSOFT.NETWORK/PUBLICIPADDRESSES/WRITE");
        let mut storage = export_write("OK", "", true);
        storage["operationName"] = json!("MICROSOFT.STORAGE/STORAGEACCOUNTS/WRITE");
        let mut sub = export_write("OK", "", true);
        sub["resourceId"] = json!(format!(
            "/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-nic/tapConfigurations/tap1"
        ));
        let out = parse_activity(json!([pip, storage, sub]).to_string().as_bytes());
        assert_eq!(
            out,
            vec![
                ignored(0, IgnoreReason::OtherOperation),
                ignored(1, IgnoreReason::OtherOperation),
                ignored(2, IgnoreReason::OtherResourceType),
            ]
        );
        assert_eq!(
            IgnoreReason::OtherResourceType.as_str(),
            "other_resource_type"
        );
        assert_eq!(IgnoreReason::NotSucceeded.to_string(), "not_succeeded");
    }

    #[test]
    fn successful_writes_without_a_usable_body_are_rejected() {
        let mut no_body = export_write("OK", "", true);
        no_body["properties"]
            .as_object_mut()
            .unwrap()
            .remove("responseBody");
        let mut empty_body = export_write("OK", "", true);
        empty_body["properties"]["responseBody"] = json!("");
        let mut no_props = export_write("OK", "", true);
        no_props.as_object_mut().unwrap().remove("properties");
        let mut garbage = export_write("OK", "", true);
        garbage["properties"]["responseBody"] = json!("{\"name\":");
        let mut bad_ip = export_write("OK", "", false);
        bad_ip["properties"]["responseBody"]["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] =
            json!("10.20.0.300");
        let mut other_nic = export_write("OK", "", false);
        other_nic["resourceId"] = json!(nic_id_upper().replace("WEB-NIC", "DB-NIC"));
        let mut bad_time = export_write("OK", "", false);
        bad_time["time"] = json!("13/45/2024 10:00:00");
        let mut bad_rid = export_write("OK", "", false);
        bad_rid["resourceId"] = json!("NETWORKINTERFACES/WEB-NIC");
        let out = parse_activity(
            json!([
                no_body, empty_body, no_props, garbage, bad_ip, other_nic, bad_time, bad_rid, 42
            ])
            .to_string()
            .as_bytes(),
        );
        let got: Vec<(usize, &str)> = out.iter().map(rejected_field).collect();
        assert_eq!(
            got,
            vec![
                (0, "properties.responseBody"),
                (1, "properties.responseBody"),
                (2, "properties.responseBody"),
                (3, "properties.responseBody"),
                (
                    4,
                    "properties.responseBody.properties.ipConfigurations[0].properties.privateIPAddress"
                ),
                (5, "properties.responseBody.id"),
                (6, "time"),
                (7, "resourceId"),
                (8, ""),
            ]
        );
    }

    #[test]
    fn rest_schema_records_and_pages() {
        let rec = json!({
            "authorization": {"action": "Microsoft.Network/networkInterfaces/write", "scope": nic_id_upper()},
            "caller": "ops@example.com",
            "channels": "Operation",
            "claims": {"name": "ops"},
            "correlationId": "4f1c2a8e-7d0b-4a51-9a7e-0c3b5b1e9d21",
            "description": "",
            "eventDataId": "b5d0a9a2-5a0f-4d3c-8f1b-1d2e3f4a5b6c",
            "eventName": {"value": "EndRequest", "localizedValue": "End request"},
            "category": {"value": "Administrative", "localizedValue": "Administrative"},
            "eventTimestamp": "2024-05-02T10:15:30.1234567Z",
            "id": format!("{}/events/b5d0a9a2/ticks/638502333301234567", nic_id_upper()),
            "level": "Informational",
            "operationId": "4f1c2a8e",
            "operationName": {"value": "Microsoft.Network/networkInterfaces/write", "localizedValue": "Create or Update Network Interface"},
            "resourceGroupName": "rg-web",
            "resourceProviderName": {"value": "Microsoft.Network", "localizedValue": "Microsoft.Network"},
            "resourceType": {"value": "Microsoft.Network/networkInterfaces", "localizedValue": "Microsoft.Network/networkInterfaces"},
            "resourceId": format!("/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Network/networkInterfaces/web-nic"),
            "status": {"value": "Succeeded", "localizedValue": "Succeeded"},
            "subStatus": {"value": "Created", "localizedValue": "Created (HTTP Status Code: 201)"},
            "submissionTimestamp": "2024-05-02T10:17:02.000Z",
            "subscriptionId": SUB,
            "properties": {
                "statusCode": "Created",
                "responseBody": nic_body().to_string(),
                "requestbody": "",
                "eventCategory": "Administrative"
            },
            "relatedEvents": []
        });
        let mut start = rec.clone();
        start["status"] = json!({"value": "Started", "localizedValue": "Started"});
        let out = parse_activity(
            json!({"value": [start, rec], "nextLink": null})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(out[0], ignored(0, IgnoreReason::NotSucceeded));
        let ev = accepted(&out[1]);
        assert!(matches!(
            ev.change,
            ActivityChange::Write { created: true, .. }
        ));
        assert_eq!(ev.at.timestamp_subsec_micros(), 123_456);
        // The same event read from the export schema has no eventDataId, so it
        // is keyed apart; with the same eventDataId it is keyed the same.
        let mut export = export_write("Created", "Succeeded.Created", true);
        export["eventDataId"] = json!("b5d0a9a2-5a0f-4d3c-8f1b-1d2e3f4a5b6c");
        let ex = parse_activity(export.to_string().as_bytes());
        assert_eq!(accepted(&ex[0]).key, ev.key);
    }

    #[test]
    fn log_analytics_azure_activity_rows() {
        let row = json!({
            "TenantId": "aaaaaaaa-0000-0000-0000-000000000000",
            "SourceSystem": "Azure",
            "CallerIpAddress": "203.0.113.9",
            "CategoryValue": "Administrative",
            "CorrelationId": "4f1c2a8e-7d0b-4a51-9a7e-0c3b5b1e9d21",
            "OperationName": "Create or Update Network Interface",
            "OperationNameValue": "MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE",
            "ActivityStatusValue": "Success",
            "ActivitySubstatusValue": "Created",
            "ResourceId": nic_id_upper(),
            "_ResourceId": nic_id_upper().to_lowercase(),
            "TimeGenerated": "8/25/2025 8:11:21.937 PM",
            "Properties": json!({"statusCode": "Created", "responseBody": nic_body().to_string()}).to_string(),
            "Type": "AzureActivity"
        });
        let mut dynamic = row.clone();
        dynamic["Properties_d"] =
            json!({"statusCode": "Created", "responseBody": nic_body().to_string()});
        dynamic["Properties"] = json!("not json, and not read when Properties_d is there");
        let mut delete = row.clone();
        delete["OperationNameValue"] = json!("MICROSOFT.NETWORK/NETWORKINTERFACES/DELETE");
        delete["ActivityStatusValue"] = json!("Succeeded");
        let out = parse_activity(json!([row, dynamic, delete]).to_string().as_bytes());
        let ev = accepted(&out[0]);
        assert!(matches!(
            ev.change,
            ActivityChange::Write { created: true, .. }
        ));
        assert_eq!(
            ev.at,
            Utc.with_ymd_and_hms(2025, 8, 25, 20, 11, 21).unwrap()
                + chrono::TimeDelta::milliseconds(937)
        );
        assert_eq!(accepted(&out[1]).key, ev.key);
        assert_eq!(accepted(&out[2]).change, ActivityChange::Delete);
    }

    #[test]
    fn envelopes_and_empty_bodies() {
        assert!(parse_activity(b"").is_empty());
        assert!(parse_activity(b" \n\r\n ").is_empty());
        assert!(parse_activity(b"{\"records\": []}").is_empty());
        let rec = export_write("OK", "", true).to_string();
        let bom = [b"\xEF\xBB\xBF".as_slice(), rec.as_bytes()].concat();
        accepted(&parse_activity(&bom)[0]);
        // JSON Lines whose lines are themselves Event Hubs envelopes.
        let body = format!("{{\"records\":[{rec},{rec}]}}\n{{\"records\":[{rec}]}}\n");
        let out = parse_activity(body.as_bytes());
        assert_eq!(out.len(), 3);
        // A top-level string is a rejected record, not a panic.
        assert_eq!(rejected_field(&parse_activity(b"\"hello\"")[0]), (0, ""));
    }

    #[test]
    fn fields_not_read_are_skipped_and_read_ones_match_in_any_case() {
        let full = export_write("Created", "", true);
        let want = accepted(&parse_activity(full.to_string().as_bytes())[0]).clone();
        // The same record with its keys respelled (one with a JSON escape),
        // an operation given twice (the last counts), and bulky fields of no
        // interest, nested and of every type.
        let mut text = full.to_string();
        text = text.replacen("\"resourceId\"", "\"RESOURCEID\"", 1);
        text = text.replacen("\"time\"", "\"\\u0074ime\"", 1);
        text = text.replacen(
            "\"operationName\"",
            "\"authorization\":{\"evidence\":[1,2.5,null,true,{\"x\":[]}]},\"operationName\":\"Microsoft.Network/publicIPAddresses/write\",\"operationName\"",
            1,
        );
        let got = parse_activity(text.as_bytes());
        assert_eq!(got.len(), 1);
        assert_eq!(accepted(&got[0]), &want);
        // The last repeated operation counts the other way round too.
        let other = text.replacen(
            "\"operationName\":\"MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE\"",
            "\"operationName\":\"MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE\",\"operationName\":\"x/y/read\"",
            1,
        );
        assert_eq!(
            parse_activity(other.as_bytes()),
            vec![ignored(0, IgnoreReason::OtherOperation)]
        );
        // A REST page with an operation is a record, not an envelope.
        let page = json!({"value": [1], "operationName": "x/y/read"}).to_string();
        assert_eq!(
            parse_activity(page.as_bytes()),
            vec![ignored(0, IgnoreReason::OtherOperation)]
        );
    }

    #[test]
    fn a_large_batch_keeps_every_record_in_its_place() {
        // Enough records to be classified on several threads: NIC writes,
        // other operations, and (in JSON Lines) lines that are not JSON,
        // each outcome at its record's index in every envelope.
        let write = export_write("OK", "Succeeded.OK", true);
        let other = json!({"operationName": "x/y/read", "resultType": "Success"});
        let records: Vec<Value> = (0..3000)
            .map(|i| {
                if i % 3 == 0 {
                    other.clone()
                } else {
                    write.clone()
                }
            })
            .collect();
        let check = |out: &[ActivityOutcome], bad: &[usize]| {
            assert_eq!(out.len(), 3000);
            assert_indexes_in_order(out);
            for (i, o) in out.iter().enumerate() {
                if bad.contains(&i) {
                    assert_eq!(rejected_field(o), (i, ""));
                } else if i % 3 == 0 {
                    assert_eq!(o, &ignored(i, IgnoreReason::OtherOperation));
                } else {
                    accepted(o);
                }
            }
        };
        check(
            &parse_activity(json!({ "records": records }).to_string().as_bytes()),
            &[],
        );
        check(
            &parse_activity(Value::Array(records.clone()).to_string().as_bytes()),
            &[],
        );
        let bad = [3, 1500, 2999];
        let lines: Vec<String> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                if bad.contains(&i) {
                    "{\"time\": ".into()
                } else {
                    r.to_string()
                }
            })
            .collect();
        check(&parse_activity(lines.join("\n").as_bytes()), &bad);
    }

    #[test]
    fn a_record_dated_in_the_future_is_rejected_by_its_time_field() {
        // A year ahead: a wrong clock or zone, not evidence.
        let ahead = Utc::now() + chrono::TimeDelta::days(365);
        let mut rec = export_write("OK", "Succeeded.OK", true);
        rec["time"] = json!(ahead.to_rfc3339());
        let mut rest = export_write("OK", "Succeeded.OK", true);
        rest["time"] = json!((Utc::now() + chrono::TimeDelta::seconds(60)).to_rfc3339());
        let out = parse_activity(json!({ "records": [rec, rest] }).to_string().as_bytes());
        match &out[0] {
            ActivityOutcome::Rejected {
                index,
                field,
                reason,
            } => {
                assert_eq!((*index, field.as_str()), (0, "time"));
                assert!(reason.contains("in the future"), "{reason}");
            }
            other => panic!("expected rejected, got {other:?}"),
        }
        // A minute ahead is within the clock skew allowed.
        accepted(&out[1]);
    }
}
