//! Records to tuples: the [`Decoder`] joins the framing of [`super::frame`]
//! to decoding, and NSG and VNet flow-log records are walked group by group
//! and tuple by tuple (flat objects: [`super::flat`]). Format detection,
//! the scope a record implies and the batch bookkeeping of the parallel
//! pipeline live here too.

use std::io::{self, Read};

use super::frame::{Frame, Framer};
use super::shapes::{FlatMap, RawRecord, Str, TupleItem};
use super::tuple::{self, FlowTuple};
use super::{DecodeStats, Decoded, ErrorItem, FlowContext, Format, ScopeHint};
use crate::model::{ArmId, Mac};

/// Bytes in, tuples and errors out. Feed it with [`Decoder::feed`] (or let
/// [`Decoder::decode_reader`] read), then call [`Decoder::finish`].
pub struct Decoder {
    framer: Framer,
    rec: RecordDecoder,
}

struct ScopeCache {
    key: (String, String, String),
    hint: ScopeHint,
}

/// Records to items: the part of the [`Decoder`] after framing. The parallel
/// pipeline runs one per worker on records framed elsewhere.
pub(crate) struct RecordDecoder {
    format: Option<Format>,
    /// The format of the last record decoded: format detection tries flat
    /// first after a flat record, so a record's fate can depend on it.
    pub(super) last: Format,
    pub(super) stats: DecodeStats,
    pub(super) group_id: u64,
    scope: ScopeCache,
    mac_cache: Option<(String, Option<Mac>)>,
    pub(super) empty_scope: ScopeHint,
    /// Batch tracking (parallel pipeline): `last` was set by a record of the
    /// current batch ...
    pub(super) settled: bool,
    /// ... and before that, a record was decoded whose format would have
    /// been detected differently had `last` been (or not been) flat.
    dependent: bool,
}

/// How a batch of records depended on the format of the record before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchDependence {
    /// The `last` format the batch was decoded with.
    pub entry: Format,
    /// Some record's detection depended on whether `entry` was flat.
    pub dependent: bool,
    /// `last` after the batch, when a record of the batch set it.
    pub exit: Option<Format>,
}

impl RecordDecoder {
    pub(crate) fn new(format: Option<Format>) -> Self {
        RecordDecoder {
            format,
            last: format.unwrap_or(Format::Nsg),
            stats: DecodeStats::default(),
            group_id: 0,
            scope: ScopeCache {
                key: Default::default(),
                hint: ScopeHint::default(),
            },
            mac_cache: None,
            empty_scope: ScopeHint::default(),
            settled: false,
            dependent: false,
        }
    }

    /// Starts a batch decoded as if the record before it had format `last`
    /// (`None`: keep the guess from the previous batch).
    pub(crate) fn begin_batch(&mut self, last: Option<Format>) {
        if let Some(l) = last {
            self.last = l;
        }
        self.settled = false;
        self.dependent = false;
    }

    /// Ends a batch: its counters (reset) and how it depended on the record
    /// before it.
    pub(crate) fn end_batch(&mut self, entry: Format) -> (DecodeStats, BatchDependence) {
        let dep = BatchDependence {
            entry,
            dependent: self.dependent,
            exit: self.settled.then_some(self.last),
        };
        (std::mem::take(&mut self.stats), dep)
    }

    pub(crate) fn last(&self) -> Format {
        self.last
    }

    /// The counters so far (records seen are the framer's).
    pub(crate) fn stats(&self) -> DecodeStats {
        self.stats
    }
}

/// Whether format detection of `bytes` (auto) depends on the previous
/// record: a flat-looking object (`src_ip`/`dst_ip`) that also has a
/// flow-log shape is flat after a flat record and NSG or VNet after any
/// other.
fn detection_depends_on_last(bytes: &[u8]) -> bool {
    use memchr::memmem;
    // Cheap test first: a flat key, or an escape that could spell one.
    if memchr::memchr(b'\\', bytes).is_none()
        && memmem::find(bytes, b"src_ip").is_none()
        && memmem::find(bytes, b"dst_ip").is_none()
    {
        return false;
    }
    let flat = serde_json::from_slice::<FlatMap>(bytes)
        .is_ok_and(|m| m.0.iter().any(|(k, _)| k == "src_ip" || k == "dst_ip"));
    flat && serde_json::from_slice::<RawRecord>(bytes).is_ok_and(|rec| {
        rec.flow_records.is_some()
            || rec.flow_log_version.is_some()
            || rec.properties.as_ref().is_some_and(|p| p.flows.is_some())
    })
}

/// Default largest record accepted (bigger ones are reported and skipped
/// without being buffered).
pub const DEFAULT_MAX_RECORD_BYTES: usize = 64 << 20;

impl Decoder {
    /// `format`: `None` to detect each record's format from its content.
    pub fn new(format: Option<Format>) -> Self {
        Self::with_max_record(format, DEFAULT_MAX_RECORD_BYTES)
    }

    pub fn with_max_record(format: Option<Format>, max_record_bytes: usize) -> Self {
        Decoder {
            framer: Framer::new(max_record_bytes),
            rec: RecordDecoder::new(format),
        }
    }

    pub fn stats(&self) -> DecodeStats {
        let mut s = self.rec.stats;
        s.records_in = self.framer.records_seen();
        s
    }

    /// Decodes a chunk of input; complete records go to `f` at once.
    pub fn feed<F>(&mut self, data: &[u8], f: &mut F) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        self.framer.feed(data);
        self.drain(f)
    }

    /// End of input: decodes what is pending and reports a truncated record
    /// or envelope.
    pub fn finish<F>(&mut self, f: &mut F) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        self.framer.finish();
        self.drain(f)?;
        if let Some(Frame::Error {
            index,
            line,
            reason,
        }) = self.framer.eof_frame()
        {
            self.rec.frame_error(index, line, reason, f)?;
        }
        Ok(())
    }

    /// Starts another input (the next file): framing restarts, indices and
    /// counters go on.
    pub fn next_input(&mut self) {
        self.framer.reset_input();
    }

    /// Reads `r` to the end in `chunk`-byte reads, decoding as it goes, then
    /// finishes. Read errors are returned after the records before them were
    /// decoded.
    pub fn decode_reader<R, F>(&mut self, mut r: R, chunk: usize, f: &mut F) -> io::Result<()>
    where
        R: Read,
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        loop {
            let n = self.read_from(&mut r, chunk)?;
            if n == 0 {
                break;
            }
            self.drain(f)?;
        }
        self.finish(f)
    }

    fn read_from<R: Read + ?Sized>(&mut self, r: &mut R, chunk: usize) -> io::Result<usize> {
        self.framer.read_from(r, chunk)
    }

    /// Decodes every record complete in the buffer.
    fn drain<F>(&mut self, f: &mut F) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        let Decoder { framer, rec } = self;
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Record { bytes, index, line } => rec.record(bytes, index, line, f)?,
                Frame::Error {
                    index,
                    line,
                    reason,
                } => rec.frame_error(index, line, reason, f)?,
            }
        }
        Ok(())
    }
}

pub(super) fn clip(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn build_scope(resource_id: &str, flow_log_id: &str, target_id: &str) -> ScopeHint {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_ascii_lowercase());
    let target = ArmId::parse(target_id).ok();
    let subscription = [target_id, resource_id, flow_log_id]
        .iter()
        .filter_map(|s| ArmId::parse(s).ok())
        .map(|a| a.subscription())
        .find(|s| !s.is_empty());
    ScopeHint {
        vnet: target
            .as_ref()
            .and_then(|t| t.truncate_after("virtualNetworks"))
            .map(|v| v.key().to_string()),
        subscription,
        nic: target
            .as_ref()
            .filter(|t| t.truncate_after("virtualNetworks").is_none())
            .and_then(|t| t.key_through("networkInterfaces"))
            .map(str::to_string),
        target: non_empty(target_id),
        nsg: non_empty(resource_id),
    }
}

impl RecordDecoder {
    pub(crate) fn frame_error<F>(
        &mut self,
        index: Option<u64>,
        line: u64,
        reason: &str,
        f: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        if index.is_some() {
            self.stats.records_rejected += 1;
        } else {
            self.stats.input_errors += 1;
        }
        f(Decoded::Error(ErrorItem {
            record: index,
            tuple: None,
            line,
            path: None,
            reason: reason.to_string(),
            input: None,
        }))
    }

    pub(super) fn reject<F>(
        &mut self,
        index: u64,
        line: u64,
        reason: String,
        f: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        self.stats.records_rejected += 1;
        f(Decoded::Error(ErrorItem {
            record: Some(index),
            tuple: None,
            line,
            path: None,
            reason,
            input: None,
        }))
    }

    pub(crate) fn record<F>(
        &mut self,
        bytes: &[u8],
        index: u64,
        line: u64,
        f: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        if !self.settled
            && !self.dependent
            && self.format.is_none()
            && detection_depends_on_last(bytes)
        {
            self.dependent = true;
        }
        // An invalid MAC is reported once per record (not once per run of
        // records sharing it): records decode the same on any worker.
        self.mac_cache = None;
        let try_flat_first = match self.format {
            Some(Format::Flat) => true,
            Some(_) => false,
            None => self.last == Format::Flat,
        };
        if try_flat_first {
            match serde_json::from_slice::<FlatMap>(bytes) {
                Ok(map) => {
                    let looks_flat = map.0.iter().any(|(k, _)| k == "src_ip" || k == "dst_ip");
                    if looks_flat || self.format == Some(Format::Flat) {
                        return self.flat(map, index, line, f);
                    }
                }
                Err(e) => {
                    if self.format == Some(Format::Flat) {
                        return self.reject(index, line, format!("invalid JSON: {e}"), f);
                    }
                }
            }
        }
        let rec: RawRecord = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                // A flat object need not parse as a flow-log record (an
                // epoch-number `time`): detection tries flat before giving up.
                if self.format.is_none()
                    && !try_flat_first
                    && let Ok(map) = serde_json::from_slice::<FlatMap>(bytes)
                    && map.0.iter().any(|(k, _)| k == "src_ip" || k == "dst_ip")
                {
                    return self.flat(map, index, line, f);
                }
                return self.reject(index, line, format!("invalid record: {e}"), f);
            }
        };
        let is_vnet = rec.flow_records.is_some() || rec.flow_log_version.is_some();
        let is_nsg = rec.properties.as_ref().is_some_and(|p| p.flows.is_some());
        let kind = match self.format {
            Some(Format::Vnet) if is_vnet => Format::Vnet,
            Some(Format::Nsg) if is_nsg => Format::Nsg,
            Some(forced) => {
                return self.reject(
                    index,
                    line,
                    format!("not a {} flow-log record (format forced)", forced.as_str()),
                    f,
                );
            }
            None if is_vnet => Format::Vnet,
            None if is_nsg => Format::Nsg,
            None => {
                if !try_flat_first
                    && let Ok(map) = serde_json::from_slice::<FlatMap>(bytes)
                    && map.0.iter().any(|(k, _)| k == "src_ip" || k == "dst_ip")
                {
                    return self.flat(map, index, line, f);
                }
                return self.reject(
                    index,
                    line,
                    "not a flow-log record: expected properties.flows (NSG), flowRecords (VNet) or src_ip/dst_ip (flat)".into(),
                    f,
                );
            }
        };
        self.last = kind;
        self.settled = true;
        let s = |o: &Option<Str>| o.as_ref().map(|s| s.0.as_ref()).unwrap_or("").to_string();
        let key_matches = {
            let k = &self.scope.key;
            let eq = |o: &Option<Str>, v: &str| o.as_ref().map(|s| s.0.as_ref()).unwrap_or("") == v;
            eq(&rec.resource_id, &k.0) && eq(&rec.flow_log_id, &k.1) && eq(&rec.target_id, &k.2)
        };
        if !key_matches {
            let key = (s(&rec.resource_id), s(&rec.flow_log_id), s(&rec.target_id));
            self.scope.hint = build_scope(&key.0, &key.1, &key.2);
            self.scope.key = key;
        }
        match kind {
            Format::Nsg => self.nsg(&rec, index, line, f),
            _ => self.vnet(&rec, index, line, f),
        }
    }

    /// Parses a MAC (cached: consecutive groups usually share it); an invalid
    /// one is reported and the group goes on without it.
    pub(super) fn mac<F>(
        &mut self,
        raw: Option<&Str>,
        index: u64,
        line: u64,
        path: &dyn Fn() -> String,
        f: &mut F,
    ) -> io::Result<Option<Mac>>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        let Some(raw) = raw.map(|s| s.0.as_ref()).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        if let Some((r, m)) = &self.mac_cache
            && r == raw
        {
            return Ok(m.clone());
        }
        let m = Mac::parse(raw).ok();
        self.mac_cache = Some((raw.to_string(), m.clone()));
        if m.is_none() {
            f(Decoded::Error(ErrorItem {
                record: Some(index),
                tuple: None,
                line,
                path: Some(path()),
                reason: "invalid MAC address (expected 12 hex digits); the group's tuples are attributed by IP only".into(),
                input: Some(clip(raw)),
            }))?;
        }
        Ok(m)
    }

    #[allow(clippy::too_many_arguments)]
    fn tuples<F>(
        &mut self,
        ctx: &FlowContext<'_>,
        items: &[TupleItem<'_>],
        ti: &mut u32,
        path: &dyn Fn(usize) -> String,
        parse: for<'s> fn(&'s str, u32) -> Result<FlowTuple<'s>, tuple::TupleError>,
        f: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        for (k, item) in items.iter().enumerate() {
            self.stats.tuples_in += 1;
            let idx = *ti;
            *ti = ti.saturating_add(1);
            let (reason, input) = match item {
                TupleItem::Str(s) => match parse(s, idx) {
                    Ok(t) => {
                        f(Decoded::Tuple(ctx, &t))?;
                        continue;
                    }
                    Err(e) => (e.0, Some(clip(s))),
                },
                TupleItem::Other(what) => (format!("tuple is {what}, not a string"), None),
            };
            self.stats.tuples_rejected += 1;
            f(Decoded::Error(ErrorItem {
                record: Some(ctx.record_index),
                tuple: Some(idx),
                line: ctx.line,
                path: Some(path(k)),
                reason,
                input,
            }))?;
        }
        Ok(())
    }

    fn nsg<F>(&mut self, rec: &RawRecord<'_>, index: u64, line: u64, f: &mut F) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        self.stats.nsg_records += 1;
        let Some(props) = rec.properties.as_ref() else {
            return Ok(());
        };
        let version = props.version.as_ref().and_then(|v| v.0);
        let scope = std::mem::take(&mut self.scope.hint);
        let mut ti = 0u32;
        let mut res = Ok(());
        'outer: for (ri, rule) in props.flows.iter().flatten().enumerate() {
            for (fi, flow) in rule.flows.iter().flatten().enumerate() {
                let mac_path = || format!("properties.flows[{ri}].flows[{fi}].mac");
                let mac = match self.mac(flow.mac.as_ref(), index, line, &mac_path, f) {
                    Ok(m) => m,
                    Err(e) => {
                        res = Err(e);
                        break 'outer;
                    }
                };
                self.group_id += 1;
                let ctx = FlowContext {
                    format: Format::Nsg,
                    version,
                    record_index: index,
                    line,
                    record_time: rec.time.as_ref().map(|s| s.0.as_ref()),
                    resource_id: rec.resource_id.as_ref().map(|s| s.0.as_ref()),
                    flow_log_id: None,
                    target_id: None,
                    acl_id: None,
                    rule: rule.rule.as_ref().map(|s| s.0.as_ref()),
                    mac: mac.as_ref(),
                    scope: &scope,
                    flat: None,
                    group_id: self.group_id,
                };
                let path = |k: usize| format!("properties.flows[{ri}].flows[{fi}].flowTuples[{k}]");
                let items = flow.flow_tuples.as_deref().unwrap_or(&[]);
                if let Err(e) = self.tuples(&ctx, items, &mut ti, &path, tuple::parse_nsg_tuple, f)
                {
                    res = Err(e);
                    break 'outer;
                }
            }
        }
        self.scope.hint = scope;
        res
    }

    fn vnet<F>(&mut self, rec: &RawRecord<'_>, index: u64, line: u64, f: &mut F) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        self.stats.vnet_records += 1;
        let version = rec.flow_log_version.as_ref().and_then(|v| v.0);
        let mac = self.mac(
            rec.mac_address.as_ref(),
            index,
            line,
            &|| "macAddress".to_string(),
            f,
        )?;
        let scope = std::mem::take(&mut self.scope.hint);
        let mut ti = 0u32;
        let mut res = Ok(());
        let flows = rec
            .flow_records
            .as_ref()
            .and_then(|r| r.flows.as_deref())
            .unwrap_or(&[]);
        'outer: for (fi, flow) in flows.iter().enumerate() {
            for (gi, group) in flow.flow_groups.iter().flatten().enumerate() {
                self.group_id += 1;
                let ctx = FlowContext {
                    format: Format::Vnet,
                    version,
                    record_index: index,
                    line,
                    record_time: rec.time.as_ref().map(|s| s.0.as_ref()),
                    resource_id: None,
                    flow_log_id: rec.flow_log_id.as_ref().map(|s| s.0.as_ref()),
                    target_id: rec.target_id.as_ref().map(|s| s.0.as_ref()),
                    acl_id: flow.acl_id.as_ref().map(|s| s.0.as_ref()),
                    rule: group.rule.as_ref().map(|s| s.0.as_ref()),
                    mac: mac.as_ref(),
                    scope: &scope,
                    flat: None,
                    group_id: self.group_id,
                };
                let path =
                    |k: usize| format!("flowRecords.flows[{fi}].flowGroups[{gi}].flowTuples[{k}]");
                let items = group.flow_tuples.as_deref().unwrap_or(&[]);
                if let Err(e) = self.tuples(&ctx, items, &mut ti, &path, tuple::parse_vnet_tuple, f)
                {
                    res = Err(e);
                    break 'outer;
                }
            }
        }
        self.scope.hint = scope;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], format: Option<Format>) -> (Vec<String>, Vec<ErrorItem>, DecodeStats) {
        let mut d = Decoder::new(format);
        let mut tuples = Vec::new();
        let mut errors = Vec::new();
        let mut f = |item: Decoded<'_>| {
            match item {
                Decoded::Tuple(c, t) => tuples.push(format!(
                    "{}:{}:{}:{}:{}",
                    c.record_index,
                    t.tuple_index,
                    c.mac.map(|m| m.as_str()).unwrap_or("-"),
                    t.src_ip,
                    c.rule.unwrap_or("-")
                )),
                Decoded::Error(e) => errors.push(e),
            }
            Ok(())
        };
        d.feed(input, &mut f).unwrap();
        d.finish(&mut f).unwrap();
        (tuples, errors, d.stats())
    }

    #[test]
    fn garbage_tuple_is_reported_alone() {
        let rec = r#"{"records":[{"resourceId":"/SUBSCRIPTIONS/S1/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.NETWORK/NETWORKSECURITYGROUPS/N","properties":{"Version":2,"flows":[{"rule":"R","flows":[{"mac":"000d3af87856","flowTuples":["1542110377,10.5.16.4,13.67.143.118,59831,443,T,O,A,B,,,,","garbage,tuple",7,"1542110379,10.5.16.4,13.67.143.117,59932,443,T,O,A,E,1,66,1,66"]}]}]}}]}"#;
        let (t, e, s) = collect(rec.as_bytes(), None);
        assert_eq!(
            t,
            vec![
                "0:0:000D3AF87856:10.5.16.4:R",
                "0:3:000D3AF87856:10.5.16.4:R"
            ]
        );
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].record, e[0].tuple), (Some(0), Some(1)));
        assert_eq!(
            e[0].path.as_deref(),
            Some("properties.flows[0].flows[0].flowTuples[1]")
        );
        assert_eq!(e[0].input.as_deref(), Some("garbage,tuple"));
        assert_eq!((e[1].record, e[1].tuple), (Some(0), Some(2)));
        assert_eq!(s.tuples_in, 4);
        assert_eq!(s.tuples_rejected, 2);
        assert_eq!(s.records_rejected, 0);
    }

    #[test]
    fn bad_record_does_not_stop_the_rest() {
        let input = b"{\"records\":[{\"properties\":{\"flows\":5}},{\"x\":1},{\"properties\":{\"Version\":1,\"flows\":[{\"rule\":\"r\",\"flows\":[{\"mac\":\"nope\",\"flowTuples\":[\"1,10.0.0.1,10.0.0.2,1,2,T,I,A\"]}]}]}}]}";
        let (t, e, s) = collect(input, None);
        assert_eq!(t, vec!["2:0:-:10.0.0.1:r"]);
        assert_eq!(
            e.iter().map(|e| e.record).collect::<Vec<_>>(),
            vec![Some(0), Some(1), Some(2)]
        );
        assert!(e[2].reason.contains("MAC"));
        assert_eq!(s.records_in, 3);
        assert_eq!(s.records_rejected, 2);
    }

    #[test]
    fn flat_lines_and_forced_format() {
        let input = b"{\"time\":\"2024-01-02T03:04:05.5Z\",\"src_ip\":\"::ffff:10.0.0.4\",\"dst_ip\":\"1.2.3.4\",\"k\":[1, 2.50]}\n{\"time\":1700000000123,\"src_ip\":\"10.0.0.5\"}\n{\"time\":\"soon\",\"src_ip\":\"10.0.0.5\",\"dst_ip\":\"10.0.0.6\"}\n";
        let (t, e, s) = collect(input, None);
        assert_eq!(t, vec!["0:0:-:10.0.0.4:-"]);
        assert_eq!(e.len(), 2);
        assert!(e[0].reason.contains("missing dst_ip"), "{}", e[0].reason);
        // An invalid field is reported as invalid, not also as missing.
        assert!(
            e[1].reason.contains("time: invalid time"),
            "{}",
            e[1].reason
        );
        assert!(!e[1].reason.contains("missing"), "{}", e[1].reason);
        assert_eq!(s.flat_records, 3);
        let (t, e, _) = collect(input, Some(Format::Nsg));
        assert!(t.is_empty());
        assert_eq!(e.len(), 3);
    }
}
