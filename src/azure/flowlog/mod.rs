//! Flow logs to tuples: NSG flow-log records (v1/v2), VNet flow-log records
//! (v4) and flat JSON objects, each parsed once with serde (borrowing from the
//! record's bytes) and walked tuple by tuple.
//!
//! - [`frame`]: a byte stream split into one record at a time (envelopes,
//!   JSON Lines, arrays), never holding more than the record being read;
//! - [`shapes`](self): the serde shapes of the records, borrowing;
//! - [`record`](self): the [`Decoder`], framing joined to decoding, and the
//!   NSG and VNet records walked group by group;
//! - [`flat`](self): one flat object, one tuple;
//! - [`tuple`](mod@tuple): one comma-separated flow tuple, and the number, address and
//!   time helpers the parsers and the writer share.
//!
//! The [`Decoder`] turns bytes into [`Decoded`] items through a callback,
//! with the same code path for the enrichment pipeline, its floor mode and
//! anyone who only wants the tuples. A bad tuple is an [`ErrorItem`] and the
//! rest of its record goes on; a bad record is an [`ErrorItem`] and the rest
//! of the input goes on.

mod flat;
pub mod frame;
mod record;
mod shapes;
pub mod tuple;

use std::borrow::Cow;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::Mac;

pub(crate) use record::{BatchDependence, RecordDecoder};
pub use record::{DEFAULT_MAX_RECORD_BYTES, Decoder};
pub use shapes::FLAT_KEYS;
pub use tuple::{FlowTuple, TupleError};

/// The record formats the decoder understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// NSG flow logs, `properties.flows[].flows[].flowTuples` (version 1 or 2).
    Nsg,
    /// VNet flow logs, `flowRecords.flows[].flowGroups[].flowTuples` (version 4).
    Vnet,
    /// One already-parsed tuple per object: `{time, src_ip, dst_ip, ...}`.
    Flat,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Nsg => "nsg",
            Format::Vnet => "vnet",
            Format::Flat => "flat",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "nsg" => Ok(Format::Nsg),
            "vnet" => Ok(Format::Vnet),
            "flat" => Ok(Format::Flat),
            other => Err(format!(
                "unknown format {other:?}: expected nsg, vnet or flat"
            )),
        }
    }
}

/// What the tuples of one flow group share: where they come from and how to
/// scope their lookups.
#[derive(Clone, Copy, Debug)]
pub struct FlowContext<'a> {
    pub format: Format,
    /// `properties.Version` (NSG) or `flowLogVersion` (VNet).
    pub version: Option<u32>,
    /// Index of the record in the input, from 0, across envelopes and lines.
    pub record_index: u64,
    /// Line of the input where the record starts, from 1.
    pub line: u64,
    /// The record's own `time` (when Azure wrote it), as given.
    pub record_time: Option<&'a str>,
    /// NSG flow logs: the NSG's `resourceId`, as given (upper case).
    pub resource_id: Option<&'a str>,
    /// VNet flow logs: `flowLogResourceID`, as given.
    pub flow_log_id: Option<&'a str>,
    /// VNet flow logs: `targetResourceID` (VNet, subnet or NIC), as given.
    pub target_id: Option<&'a str>,
    /// VNet flow logs: `aclID` of the flow (a GUID).
    pub acl_id: Option<&'a str>,
    /// The rule that matched.
    pub rule: Option<&'a str>,
    /// The MAC of the NIC that logged the flow, normalised.
    pub mac: Option<&'a Mac>,
    /// Scope implied by the record (target VNet, NSG or flow-log subscription).
    pub scope: &'a ScopeHint,
    /// Flat input only: the fields that pass through.
    pub flat: Option<&'a FlatExtras<'a>>,
    /// Changes with every flow group, so writers can cache what a group shares.
    pub group_id: u64,
}

/// Flat input: the fields of the object that ipwho does not interpret, in
/// their original order and spelling, to be written back untouched.
#[derive(Debug, Default)]
pub struct FlatExtras<'a> {
    pub passthrough: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A malformed tuple, record or stretch of input. Serialised as the body of
/// an `{"ipwho.error": {...}}` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorItem {
    /// Index of the record (0-based, across the whole input); absent when the
    /// error is outside any record (garbage between records, a truncated
    /// envelope).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// Index of the tuple within its record (0-based, in document order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuple: Option<u32>,
    /// Input line where the record (or the problem) starts, from 1.
    pub line: u64,
    /// JSON path of the bad element within the record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub reason: String,
    /// The offending tuple string (first 200 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
}

/// One item out of the decoder.
#[derive(Debug)]
pub enum Decoded<'a> {
    Tuple(&'a FlowContext<'a>, &'a FlowTuple<'a>),
    Error(ErrorItem),
}

/// Counters of the decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    /// Records seen, good or bad.
    pub records_in: u64,
    pub records_rejected: u64,
    /// Tuples seen, good or bad.
    pub tuples_in: u64,
    pub tuples_rejected: u64,
    pub nsg_records: u64,
    pub vnet_records: u64,
    pub flat_records: u64,
    /// Errors outside any record (garbage at top level, truncated envelope).
    pub input_errors: u64,
}

/// The scope a record implies. All ids lower-case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopeHint {
    /// VNet id: the VNet (or subnet's VNet) a VNet flow log targets, else
    /// the flat input's `vnet`.
    pub vnet: Option<String>,
    /// Subscription GUID: of the target, the NSG or the flow log, or the flat
    /// input's `subscription`.
    pub subscription: Option<String>,
    /// VNet flow logs: `targetResourceID` (a VNet, subnet or NIC id).
    pub target: Option<String>,
    /// The NIC a VNet flow log targets, when it targets one.
    pub nic: Option<String>,
    /// NSG flow logs: the NSG id.
    pub nsg: Option<String>,
}
