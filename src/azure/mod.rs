//! Parsers for Azure's own records. No I/O: bytes and JSON values in, domain
//! values ([`crate::model`]) and per-record errors out.

pub mod activity;
pub mod flowlog;
pub mod nic;
pub mod time;
pub mod vnet;

use std::fmt;

use serde_json::{Map, Value};

/// Why a JSON value is not a usable record (a NIC, a VNet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the offending field, e.g.
    /// `properties.ipConfigurations[1].properties.privateIPAddress`; empty when
    /// the problem is the value as a whole.
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error seen from an enclosing value: `prefix` is prepended to
    /// the field path (e.g. `properties.responseBody`).
    pub fn within(self, prefix: &str) -> Self {
        let field = match (prefix.is_empty(), self.field.is_empty()) {
            (true, _) => self.field,
            (false, true) => prefix.to_string(),
            (false, false) => format!("{prefix}.{}", self.field),
        };
        Self { field, ..self }
    }

    /// The error of a model that rejected the value, at serde's path.
    pub(crate) fn from_serde<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> Self {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Self::new(path, e.into_inner().to_string())
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

/// What kind of JSON value `v` is, for an error.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Whether `obj` has the field `name`, in any casing.
pub(crate) fn has_field(obj: &Map<String, Value>, name: &str) -> bool {
    obj.keys().any(|k| k.eq_ignore_ascii_case(name))
}

/// The field `name` of `obj` (see [`lookup`]), unless null.
pub(crate) fn field(obj: &Map<String, Value>, name: &str) -> Option<Value> {
    lookup(obj, &[name])
        .map(|(_, v)| v)
        .filter(|v| !v.is_null())
        .cloned()
}

/// Copies the fields `names` present in `from` (in any casing) into `to`,
/// spelled as given: how a record printed by the Azure CLI or PowerShell
/// (properties flattened, PascalCase) is rebuilt in the ARM shape.
pub(crate) fn copy_fields(from: &Map<String, Value>, to: &mut Map<String, Value>, names: &[&str]) {
    for name in names {
        if let Some(v) = field(from, name) {
            to.insert((*name).to_string(), v);
        }
    }
}

/// A reference to another resource as ARM gives it, `{"id": ...}`, however
/// its key is spelled (`Id` in PowerShell's output); anything else as it is,
/// for the model to reject.
pub(crate) fn reference(v: Value) -> Option<Value> {
    match &v {
        Value::Object(o) => field(o, "id").map(|id| serde_json::json!({ "id": id })),
        _ => Some(v),
    }
}

/// Looks a field up by its spellings: first exactly, in order, then ignoring
/// ASCII case. Returns the key as spelled in the record and the value.
pub(crate) fn lookup<'a>(
    obj: &'a Map<String, Value>,
    names: &[&str],
) -> Option<(&'a str, &'a Value)> {
    for name in names {
        if let Some((k, v)) = obj.get_key_value(*name) {
            return Some((k.as_str(), v));
        }
    }
    for name in names {
        if let Some((k, v)) = obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            return Some((k.as_str(), v));
        }
    }
    None
}
