//! Flow-log enrichment: Azure flow logs in, every tuple out as one NDJSON line
//! with both ends attributed to a NIC and VM at the tuple's own time.
//!
//! # Pipeline
//!
//! bytes ─▶ gzip? ─▶ [`frame`](crate::azure::flowlog::frame) (one record at
//! a time) ─▶ [`Decoder`](crate::azure::flowlog::Decoder) (serde per record,
//! tuple by tuple) ─▶ attribution through an [`Attributor`] ─▶ hand-rolled
//! NDJSON writer ─▶ output chunks. The parsers are
//! [`crate::azure::flowlog`]'s; this module attributes and writes.
//!
//! Memory stays bounded: input is read in chunks and only the record being
//! framed is kept; output leaves in chunks of [`EnrichOptions::chunk_bytes`]
//! through a bounded channel ([`enrich_stream`]) or a writer
//! ([`enrich_reader`]). Floor mode ([`EnrichOptions::floor`]) runs the same
//! path with no lookups, for benchmarks.
//!
//! With [`EnrichOptions::workers`] above one (`IPWHO_ENRICH_WORKERS`), the
//! calling thread frames and hands batches of whole records to
//! worker threads, each with its own decoder and writer, and writes their
//! output in input order; a few batches are in flight at a time, so memory
//! stays bounded, and pending output is still flushed whenever the input
//! would wait. The output is byte for byte the same as with one worker.
//!
//! # Inputs (detected from content, or forced with [`EnrichOptions::format`])
//!
//! - NSG flow-log blobs `{"records":[...]}`, version 1 (8-field tuples) and 2
//!   (13 fields; empty counters on begin and deny tuples);
//! - VNet flow-log blobs (`flowLogVersion` 4, epoch milliseconds, numeric
//!   protocol, state `D` = deny, encryption field);
//! - the same records as JSON Lines, a bare record, or a top-level array;
//! - flat JSON Lines: `{"time", "src_ip", "dst_ip"}` required; `src_port`,
//!   `dst_port`, `protocol` (`tcp`/`T`/`6`), `direction` (`inbound`/`I`/...),
//!   and the hints `mac`, `vnet` (VNet id) and `subscription` optional (one
//!   that names no NIC, VNet or subscription is an error line, and the tuple
//!   is attributed without it); `time`
//!   is RFC 3339, ISO 8601 without a zone (UTC) or epoch s/ms/µs/ns; every
//!   other field passes through;
//! - any of these gzip-compressed (detected by the gzip magic bytes).
//!
//! # Output schema (one JSON object per line)
//!
//! A tuple line (fields absent when unknown; ECS names where ECS has one):
//!
//! ```text
//! {
//!   "@timestamp": "2018-11-13T12:00:02Z",      // tuple time, RFC 3339 UTC (ms/µs when present)
//!   "event": {"action": "allow"|"deny", "outcome": "success"|"failure"},
//!   "network": {"transport": "tcp"|"udp"|"icmp"|"ipv6-icmp"|"<number>",
//!               "iana_number": "6", "direction": "inbound"|"outbound",
//!               "packets": 2, "bytes": 132},  // sums of both directions
//!   "source": {"ip": "10.5.16.4", "port": 59932,
//!              "packets": 1, "bytes": 66,     // source -> destination
//!              "ipwho": IPWHO},
//!   "destination": {"ip": ..., "port": ..., "packets": ..., "bytes": ..., // destination -> source
//!                   "ipwho": IPWHO},
//!   "azure": {"flowlog": {
//!       "state": "begin"|"continue"|"end"|"deny", "encryption": "NX",
//!       "record": 0, "tuple": 3,              // record index in the input, tuple index in the record
//!       "format": "nsg"|"vnet"|"flat", "version": 2,
//!       "rule": "DefaultRule_AllowInternetOutBound", "mac": "000D3AF87856",
//!       "nsg_id": "...", "flow_log_id": "...", "target_id": "...", "acl_id": "..."}},
//!   ...                                        // flat input: the other input fields, untouched
//! }
//!
//! IPWHO = {
//!   "status": "confirmed"|"probable"|"possible"|"ambiguous"|"unknown"|"mac_mismatch",  // of the NIC
//!   "via": "mac"|"ip_in_vnet"|"ip_in_peered_vnet"|"ip_in_subscription"|"ip_any_scope"|"not_looked_up",
//!   "scoped": "mac"|"mac_unknown"|"mac_out_of_scope"|"in_vnet"|"peered"|"outside"
//!             |"no_topology"|"no_vnet"|"not_looked_up",   // where the end was looked for, and why there
//!   "ip_held": true|false,                     // capturing side: did the NIC with the MAC hold the IP
//!   "nic": {"id": "...", "name": "..."},
//!   "vnet": "...",                             // VNet id
//!   "vm_status": "confirmed"|...,              // the VM's own status, never surer than the NIC's
//!   "vm": {"id": "...", "name": "...", "resource_group": "...", "subscription": "..."},  // when one
//!   "stale": true,                             // an open claim past its subscription's freshness bound
//!   "watched": true|false,                     // the scope looked in was watched at the tuple's time
//!   "searched": "...",                         // unknown capturing end: the scope the record names
//!   "evidence": "snapshot"|...,                // what the answer rests on
//!   "window": {"from": "...", "until": "..."}, // the claim's possible window (bounded), when known
//!   "candidates": [{"nic": "...", "vnet": "..."}]   // ambiguous only
//! }
//! ```
//!
//! `ipwho` blocks are absent in floor mode. Where each end is looked for is
//! [`policy`](self)'s: the capturing side (source for outbound,
//! destination for inbound) by the record's MAC only, within the scope the
//! record names; the other side by routing from the capturing VNet (its
//! address space, else a peered VNet's, else outside the estate), never
//! firmly from another VNet when the topology is not known. IPs outside
//! the index's space ([`Lookups::may_hold`]: for the claims index, the IPv4
//! /16s and IPv6 /48s its claims lie in, so a VNet with a public address
//! space is looked up like any other) answer `unknown` with `via:
//! "not_looked_up"` without a lookup.
//!
//! Flat input: input keys that collide with the top-level keys above
//! (`@timestamp`, `event`, `network`, `source`, `destination`, `azure`) are
//! kept under `"ipwho.input"` instead, so no key appears twice.
//!
//! An error line: `{"ipwho.error": {"record": 0, "tuple": 5, "line": 1,
//! "path": "properties.flows[0].flows[0].flowTuples[5]", "reason": "...",
//! "input": "<the tuple>"}}` (see [`ErrorItem`]).
//!
//! The last line: `{"ipwho.summary": {...}}` (see [`Summary`]): counts of
//! records and tuples in, out and rejected, per-status counts for each end,
//! the first errors, whether the input was read to its end, and the index's
//! freshness ([`Attributor::freshness`]).

mod adapter;
mod json;
mod map;
mod output;
mod pipeline;
mod policy;
mod stream;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Mac;

/// How sure an end's answer is: the engine's, the same as a lookup's.
pub use crate::engine::Status;
pub use crate::model::{NicInfo, VmInfo};

use crate::azure::flowlog::DEFAULT_MAX_RECORD_BYTES;
pub use crate::azure::flowlog::{ErrorItem, Format, ScopeHint};
pub use map::MapAttributor;
pub use pipeline::{enrich_reader, enrich_readers};
pub use stream::{enrich_stream, enrich_stream_with_summary};

/// How an end was resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// By the MAC of the NIC that logged the flow.
    Mac,
    /// By IP, within the capturing VNet (or the record's VNet).
    IpInVnet,
    /// By IP, within a VNet peered with the capturing VNet.
    IpInPeeredVnet,
    /// By IP, within the record's subscription.
    IpInSubscription,
    /// By IP, across all scopes.
    IpAnyScope,
    /// Not looked up: outside the estate by routing, or outside every
    /// address range the index holds claims in (public IPs, mostly).
    NotLookedUp,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mac => "mac",
            Via::IpInVnet => "ip_in_vnet",
            Via::IpInPeeredVnet => "ip_in_peered_vnet",
            Via::IpInSubscription => "ip_in_subscription",
            Via::IpAnyScope => "ip_any_scope",
            Via::NotLookedUp => "not_looked_up",
        }
    }
}

/// Where an end was looked for, and why there (see [`policy`](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoped {
    /// The capturing end: the NIC with the record's MAC, within the scope
    /// the record names.
    Mac,
    /// The capturing end, and no NIC ipwho knows has the record's MAC.
    MacUnknown,
    /// The capturing end: NICs with the record's MAC are known, but none
    /// within the scope the record names.
    MacOutOfScope,
    /// Inside the capturing VNet's address space: looked up there only.
    InVnet,
    /// Inside a VNet peered with the capturing VNet: looked up there only.
    Peered,
    /// Outside the capturing VNet and every VNet peered with it: not in the
    /// estate; not looked up.
    Outside,
    /// The capturing VNet's address space is not known: looked up in it,
    /// then elsewhere, where an answer is never `confirmed` or `probable`.
    NoTopology,
    /// The capturing VNet is not known: looked up in the record's
    /// subscription, then everywhere, never `confirmed` or `probable`.
    NoVnet,
    /// Outside every address range the index holds claims in.
    NotLookedUp,
}

impl Scoped {
    pub fn as_str(self) -> &'static str {
        match self {
            Scoped::Mac => "mac",
            Scoped::MacUnknown => "mac_unknown",
            Scoped::MacOutOfScope => "mac_out_of_scope",
            Scoped::InVnet => "in_vnet",
            Scoped::Peered => "peered",
            Scoped::Outside => "outside",
            Scoped::NoTopology => "no_topology",
            Scoped::NoVnet => "no_vnet",
            Scoped::NotLookedUp => "not_looked_up",
        }
    }
}

/// The attribution of one end of a tuple.
#[derive(Clone, Debug, PartialEq)]
pub struct EndAttribution {
    /// Of the NIC holding the IP: `unknown` for a MAC mismatch (the NIC
    /// with the record's MAC did not hold it, `ip_held: Some(false)`),
    /// which the output calls `mac_mismatch` ([`Self::status_word`]).
    pub status: Status,
    pub via: Via,
    pub scoped: Scoped,
    /// The NIC named by the answer (for `mac_mismatch`: the NIC with the MAC).
    /// `None` for `unknown` and `ambiguous`.
    pub nic: Option<Arc<NicInfo>>,
    /// The VM answer, when a NIC is named: its status (never surer than
    /// the NIC's) and the VM (`None` with a status: no VM; `None` when
    /// ambiguous).
    pub vm_status: Option<Status>,
    pub vm: Option<Arc<VmInfo>>,
    /// Capturing side resolved by MAC: whether that NIC held the tuple's IP.
    pub ip_held: Option<bool>,
    /// What the answer rests on, e.g. `snapshot`, `activity_write`.
    pub evidence: Option<Cow<'static, str>>,
    /// The window of the claim behind the answer (epoch µs), when known.
    pub window: Option<(Option<i64>, Option<i64>)>,
    /// An open claim past its subscription's freshness bound: `possible`,
    /// not `probable`.
    pub stale: bool,
    /// Whether the scope searched was watched at the tuple's time (complete
    /// snapshots close enough on both sides).
    pub watched: Option<bool>,
    /// For an unknown capturing end: the scope the record names, searched.
    pub searched: Option<Arc<str>>,
    /// `ambiguous`: the NICs that may have had the IP.
    pub candidates: Vec<Arc<NicInfo>>,
}

impl EndAttribution {
    /// Nothing known.
    pub fn unknown(via: Via, scoped: Scoped) -> Self {
        EndAttribution {
            status: Status::Unknown,
            via,
            scoped,
            nic: None,
            vm_status: None,
            vm: None,
            ip_held: None,
            evidence: None,
            window: None,
            stale: false,
            watched: None,
            searched: None,
            candidates: Vec::new(),
        }
    }

    /// The capturing end: the NIC with the record's MAC, which did not hold
    /// the tuple's IP at its time, named.
    pub fn mac_mismatch(scoped: Scoped, nic: Arc<NicInfo>) -> Self {
        EndAttribution {
            ip_held: Some(false),
            ..Self::nic(Status::Unknown, Via::Mac, scoped, nic)
        }
    }

    /// The NIC with the record's MAC did not hold the tuple's IP.
    pub fn is_mac_mismatch(&self) -> bool {
        self.ip_held == Some(false)
    }

    /// The answer's status as the output writes it: the status, or
    /// `mac_mismatch`.
    pub fn status_word(&self) -> &'static str {
        if self.is_mac_mismatch() {
            "mac_mismatch"
        } else {
            self.status.as_str()
        }
    }

    /// An answer naming one NIC.
    pub fn nic(status: Status, via: Via, scoped: Scoped, nic: Arc<NicInfo>) -> Self {
        EndAttribution {
            nic: Some(nic),
            status,
            ..Self::unknown(via, scoped)
        }
    }

    /// Never surer than `possible`: an answer found where the packet may
    /// not have been.
    pub fn at_most_possible(&mut self) {
        fn cap(s: &mut Status) {
            if matches!(s, Status::Confirmed | Status::Probable) {
                *s = Status::Possible;
            }
        }
        cap(&mut self.status);
        if let Some(v) = &mut self.vm_status {
            cap(v);
        }
    }
}

/// Where a lookup by IP searches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Within<'a> {
    /// One VNet (lower-cased id).
    Vnet(&'a str),
    /// One subscription (lower case).
    Subscription(&'a str),
    Any,
}

/// What enrichment asks of an index, tuple by tuple; [`policy`](self)
/// decides what to ask and where.
pub trait Lookups {
    /// The capturing end: the NICs with `mac` that lie within `scope` (the
    /// NIC it targets, else its VNet, else its subscription, else any).
    /// One that may have held `ip` at `at` is the answer, with its own
    /// claim's status (the capture rules out the other NICs of the VNet),
    /// `ip_held: Some(true)` and `scoped: mac`; when none held it,
    /// `mac_mismatch` naming one with `ip_held: Some(false)`; when no NIC
    /// has the MAC, or none within the scope, `unknown` with `scoped`
    /// saying which.
    fn by_mac(&self, mac: &Mac, ip: IpAddr, at_micros: i64, scope: &ScopeHint) -> EndAttribution;

    /// By IP, `within` one VNet, subscription or anywhere: the claims'
    /// answer (`ambiguous` with candidates when several), `unknown` when
    /// none. The caller sets `via` and `scoped`.
    fn by_ip(&self, ip: IpAddr, at_micros: i64, within: Within<'_>) -> EndAttribution;

    /// Where routing from VNet `vnet` (key) can have taken a packet to
    /// `ip`; [`Route::Unknown`] without topology.
    fn route(&self, _vnet: &str, _ip: IpAddr, _at_micros: i64) -> crate::topology::Route {
        crate::topology::Route::Unknown
    }

    /// Whether `subscription` was watched at `at` (`None`: not known).
    fn watched(&self, _subscription: &str, _at_micros: i64) -> Option<bool> {
        None
    }

    /// Whether `ip` can be in the index at all. IPs for which this is false
    /// answer `unknown` / `not_looked_up` without a lookup. The default is
    /// [`is_private`]; the claims index answers from where its claims lie (a
    /// VNet may use a public address space).
    fn may_hold(&self, ip: IpAddr) -> bool {
        is_private(ip)
    }
}

/// What enrichment needs of an index; the in-memory claims index implements it.
pub trait Attributor: Lookups + Send + Sync + 'static {
    /// How current the index is (e.g. change sequence and time of the last
    /// update); reported in the summary line.
    fn freshness(&self) -> serde_json::Value;

    /// Runs `f` with lookups that may share one read of the index: the
    /// workers of the pipeline make a whole batch of records' lookups
    /// through one call, so an index behind a lock takes it once per batch
    /// (a few milliseconds of work, never waiting on output) rather than
    /// twice per tuple. Implementations without a lock pass themselves.
    fn with_lookups(&self, f: &mut dyn FnMut(&dyn Lookups));
}

/// An [`Attributor`] that knows nothing (every end `unknown`).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIndex;

impl Lookups for NoIndex {
    fn by_mac(&self, _: &Mac, _: IpAddr, _: i64, _: &ScopeHint) -> EndAttribution {
        EndAttribution::unknown(Via::Mac, Scoped::MacUnknown)
    }
    fn by_ip(&self, _: IpAddr, _: i64, _: Within<'_>) -> EndAttribution {
        EndAttribution::unknown(Via::IpAnyScope, Scoped::NoVnet)
    }
}

impl Attributor for NoIndex {
    fn freshness(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn with_lookups(&self, f: &mut dyn FnMut(&dyn Lookups)) {
        f(self)
    }
}

/// Address space a VNet may use: RFC 1918, shared address space
/// (100.64.0.0/10), IPv6 unique-local (fc00::/7) and link-local.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 10
                || (o[0] == 172 && (16..32).contains(&o[1]))
                || (o[0] == 192 && o[1] == 168)
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 169 && o[1] == 254)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Options of one enrichment run.
#[derive(Clone, Debug)]
pub struct EnrichOptions {
    /// `None`: detect each record's format from its content.
    pub format: Option<Format>,
    /// `false`: floor mode, parse and write with no lookups (no `ipwho` blocks).
    pub lookups: bool,
    /// Output leaves in chunks of about this size (default 1 MiB: fewer,
    /// larger writes cost the socket less than quarter-size ones).
    pub chunk_bytes: usize,
    /// Input is read in chunks of this size (default 256 KiB).
    pub read_bytes: usize,
    /// Records larger than this are reported and skipped (default 64 MiB).
    pub max_record_bytes: usize,
    /// How many errors the summary lists (default 100; all are counted).
    pub max_errors_listed: usize,
    /// Write an `ipwho.error` line for each error (default true).
    pub error_lines: bool,
    /// [`enrich_stream`]: output chunks queued for a slow reader (default 4),
    /// and input chunks queued ahead of the parser (default 8).
    pub queue_chunks: usize,
    /// Threads that decode, attribute and write records (default 1, or
    /// `IPWHO_ENRICH_WORKERS`). With more than one, the calling thread
    /// frames the input and hands whole records to them in batches, and
    /// writes their output in input order: the output is the same, byte
    /// for byte, as with one. On the shared 2-core benchmark machine two
    /// workers were no faster than one (see `docs/performance.md`), hence
    /// the default.
    pub workers: usize,
    /// Records go to the workers in batches of about this many input bytes
    /// (default 256 KiB; a batch holds at least one record).
    pub batch_bytes: usize,
    /// Limits on the run's input (none by default): past one, the run stops
    /// reading, says why in an error line and the summary (`complete:
    /// false`), and ends with the summary of what it read.
    pub limits: RunLimits,
}

/// Limits on one run's input, for a service that must not let one stream
/// take a core or the memory of others for ever.
#[derive(Clone, Debug, Default)]
pub struct RunLimits {
    /// Most input bytes read, decompressed.
    pub max_bytes: Option<u64>,
    /// Longest the run may read for.
    pub time: Option<std::time::Duration>,
    /// Where the limits are set (e.g. the flags), appended to the reason
    /// that stops a run.
    pub set_by: &'static str,
}

/// The default [`EnrichOptions::workers`]: `IPWHO_ENRICH_WORKERS` (1 to
/// 64), else 1.
pub fn default_workers() -> usize {
    std::env::var("IPWHO_ENRICH_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(|n| n.clamp(1, 64))
        .unwrap_or(1)
}

impl Default for EnrichOptions {
    fn default() -> Self {
        EnrichOptions {
            format: None,
            lookups: true,
            chunk_bytes: 1 << 20,
            read_bytes: 256 << 10,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            max_errors_listed: 100,
            error_lines: true,
            queue_chunks: 4,
            workers: default_workers(),
            batch_bytes: 256 << 10,
            limits: RunLimits::default(),
        }
    }
}

impl EnrichOptions {
    /// Floor mode: the same code path with no lookups.
    pub fn floor() -> Self {
        EnrichOptions {
            lookups: false,
            ..Self::default()
        }
    }
}

/// Tuples per status, for one end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCounts {
    pub confirmed: u64,
    pub probable: u64,
    pub possible: u64,
    pub ambiguous: u64,
    pub unknown: u64,
    pub mac_mismatch: u64,
    /// Of `unknown`: not looked up (outside the index's address space).
    pub not_looked_up: u64,
}

impl StatusCounts {
    pub(crate) fn add(&mut self, a: &EndAttribution) {
        match a.status {
            _ if a.is_mac_mismatch() => self.mac_mismatch += 1,
            Status::Confirmed => self.confirmed += 1,
            Status::Probable => self.probable += 1,
            Status::Possible => self.possible += 1,
            Status::Ambiguous => self.ambiguous += 1,
            Status::Unknown => self.unknown += 1,
        }
        if a.via == Via::NotLookedUp {
            self.not_looked_up += 1;
        }
    }
}

/// Records per detected format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatCounts {
    pub nsg: u64,
    pub vnet: u64,
    pub flat: u64,
}

/// The body of the final `{"ipwho.summary": {...}}` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The input was read to its end (false: a read or decompression error
    /// stopped it; the error is listed).
    pub complete: bool,
    /// Lookups were made (false in floor mode).
    pub lookups: bool,
    /// Records seen (good or bad), and those rejected whole.
    pub records_in: u64,
    pub records_rejected: u64,
    /// Tuples seen (good or bad), written, and rejected.
    pub tuples_in: u64,
    pub tuples_out: u64,
    pub tuples_rejected: u64,
    pub formats: FormatCounts,
    /// Per-status counts of the source and destination ends.
    pub source: StatusCounts,
    pub destination: StatusCounts,
    /// All errors (tuples, records, input); the first `max_errors_listed`
    /// are in `errors`.
    pub errors_total: u64,
    pub errors: Vec<ErrorItem>,
    /// [`Attributor::freshness`] at the end of the run (null in floor mode).
    pub index: serde_json::Value,
    pub elapsed_ms: u64,
}
