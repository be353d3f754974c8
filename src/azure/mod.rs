//! Parsers for Azure's own records. No I/O: bytes and JSON values in, domain
//! values ([`crate::model`]) and per-record errors out.

pub mod activity;
pub mod nic;
pub mod time;

use serde_json::{Map, Value};

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
