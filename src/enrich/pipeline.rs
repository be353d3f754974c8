//! The enrichment core, shared by the blocking API ([`enrich_reader`]) and
//! the streaming one ([`super::enrich_stream`]): inputs (gzip detected by
//! their magic bytes) are decoded record by record, each tuple is attributed
//! and written, and output leaves through a sink in chunks.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use super::output::LineWriter;
use super::record::{Decoded, Decoder, ErrorItem, FlowContext};
use super::tuple::{Direction, FlowTuple};
use super::{Attributor, EndAttribution, EnrichOptions, NicInfo, ScopeHint, Status, Summary, Via};
use crate::model::Mac;

/// A byte source that can tell whether its next read would wait, so that
/// pending output is flushed before the pipeline blocks on slow input.
pub(crate) trait Input: Read {
    fn would_block(&mut self) -> bool {
        false
    }
}

/// Any reader: never reports that it would block.
pub(crate) struct Blocking<R>(pub R);

impl<R: Read> Read for Blocking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}
impl<R: Read> Input for Blocking<R> {}

/// Plain or gunzipped, decided by the first byte (JSON never starts with
/// 0x1f; gzip always does).
enum Src<R: Input> {
    Plain(BufReader<R>),
    Gz(Box<flate2::bufread::MultiGzDecoder<BufReader<R>>>),
}

impl<R: Input> Src<R> {
    fn open(r: R, cap: usize) -> io::Result<Self> {
        let mut b = BufReader::with_capacity(cap, r);
        let gz = loop {
            match b.fill_buf() {
                Ok(head) => break head.first() == Some(&0x1f),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        Ok(if gz {
            Src::Gz(Box::new(flate2::bufread::MultiGzDecoder::new(b)))
        } else {
            Src::Plain(b)
        })
    }

    fn would_block(&mut self) -> bool {
        match self {
            Src::Plain(b) => b.buffer().is_empty() && b.get_mut().would_block(),
            Src::Gz(d) => {
                let b = d.get_mut();
                b.buffer().is_empty() && b.get_mut().would_block()
            }
        }
    }
}

impl<R: Input> Read for Src<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Src::Plain(b) => b.read(buf),
            Src::Gz(d) => d.read(buf),
        }
    }
}

/// Where output chunks go. `send` must leave `buf` empty.
pub(crate) trait Sink {
    fn send(&mut self, buf: &mut Vec<u8>) -> io::Result<()>;
}

struct WriteSink<W: Write>(W);

impl<W: Write> Sink for WriteSink<W> {
    fn send(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.0.write_all(buf)?;
        buf.clear();
        Ok(())
    }
}

/// Per-run state: attribution, counting and writing.
struct Enricher<'a> {
    opts: &'a EnrichOptions,
    attr: &'a dyn Attributor,
    out: Vec<u8>,
    writer: LineWriter,
    summary: Summary,
    /// The remote-end hint for the last (group, local NIC) pair.
    hint_key: (u64, usize),
    hint: ScopeHint,
}

impl<'a> Enricher<'a> {
    fn new(opts: &'a EnrichOptions, attr: &'a dyn Attributor) -> Self {
        Enricher {
            opts,
            attr,
            out: Vec::with_capacity(opts.chunk_bytes + (64 << 10)),
            writer: LineWriter::new(),
            summary: Summary {
                lookups: opts.lookups,
                ..Summary::default()
            },
            hint_key: (u64::MAX, 0),
            hint: ScopeHint::default(),
        }
    }

    fn error(&mut self, e: ErrorItem) {
        self.summary.errors_total += 1;
        if self.opts.error_lines {
            self.writer.error(&mut self.out, &e);
        }
        if self.summary.errors.len() < self.opts.max_errors_listed {
            self.summary.errors.push(e);
        }
    }

    fn item(&mut self, item: Decoded<'_>, sink: &mut dyn Sink) -> io::Result<()> {
        match item {
            Decoded::Tuple(ctx, t) => {
                if self.opts.lookups {
                    let (s, d) = self.attribute(ctx, t);
                    self.summary.source.add(&s);
                    self.summary.destination.add(&d);
                    self.writer.tuple(&mut self.out, ctx, t, Some((&s, &d)));
                } else {
                    self.writer.tuple(&mut self.out, ctx, t, None);
                }
                self.summary.tuples_out += 1;
            }
            Decoded::Error(e) => self.error(e),
        }
        if self.out.len() >= self.opts.chunk_bytes {
            sink.send(&mut self.out)?;
        }
        Ok(())
    }

    /// By IP, skipping addresses the index cannot hold.
    fn by_ip(&self, ip: IpAddr, at: i64, hint: &ScopeHint) -> EndAttribution {
        if !self.attr.may_hold(ip) {
            return EndAttribution::unknown(Via::NotLookedUp);
        }
        self.attr.remote(ip, at, hint)
    }

    /// The capturing side: by MAC, by IP when the index does not know the MAC.
    fn local(&self, mac: &Mac, ip: IpAddr, at: i64, hint: &ScopeHint) -> EndAttribution {
        let a = self.attr.local(mac, ip, at);
        if a.status == Status::Unknown && a.nic.is_none() {
            return self.by_ip(ip, at, hint);
        }
        a
    }

    /// The scope for the far end: the capturing NIC's VNet, else the record's.
    fn remote_hint(&mut self, ctx: &FlowContext<'_>, local: &EndAttribution) -> bool {
        let Some(nic) = local.nic.as_ref().filter(|n| n.vnet.is_some()) else {
            return false;
        };
        let key = (ctx.group_id, Arc::as_ptr(nic) as usize);
        if self.hint_key != key {
            self.hint = vnet_hint(ctx.scope, nic);
            self.hint_key = key;
        }
        true
    }

    fn far(
        &mut self,
        ctx: &FlowContext<'_>,
        local: &EndAttribution,
        ip: IpAddr,
        at: i64,
    ) -> EndAttribution {
        if !self.attr.may_hold(ip) {
            return EndAttribution::unknown(Via::NotLookedUp);
        }
        if self.remote_hint(ctx, local) {
            self.attr.remote(ip, at, &self.hint)
        } else {
            self.attr.remote(ip, at, ctx.scope)
        }
    }

    /// (source, destination) attributions.
    fn attribute(
        &mut self,
        ctx: &FlowContext<'_>,
        t: &FlowTuple<'_>,
    ) -> (EndAttribution, EndAttribution) {
        let at = t.time_micros;
        match (t.direction, ctx.mac) {
            (Some(dir), mac) => {
                let (lip, rip) = match dir {
                    Direction::Outbound => (t.src_ip, t.dst_ip),
                    Direction::Inbound => (t.dst_ip, t.src_ip),
                };
                let local = match mac {
                    Some(m) => self.local(m, lip, at, ctx.scope),
                    None => self.by_ip(lip, at, ctx.scope),
                };
                let remote = self.far(ctx, &local, rip, at);
                match dir {
                    Direction::Outbound => (local, remote),
                    Direction::Inbound => (remote, local),
                }
            }
            (None, Some(mac)) => {
                // Flat input with a MAC but no direction: the end whose IP the
                // NIC held is the capturing one.
                let held = |a: &EndAttribution| a.nic.is_some() && a.status != Status::MacMismatch;
                let s = self.attr.local(mac, t.src_ip, at);
                if held(&s) {
                    let d = self.far(ctx, &s, t.dst_ip, at);
                    return (s, d);
                }
                let d = self.attr.local(mac, t.dst_ip, at);
                if held(&d) {
                    let s = self.far(ctx, &d, t.src_ip, at);
                    return (s, d);
                }
                let s = self.by_ip(t.src_ip, at, ctx.scope);
                let d = self.by_ip(t.dst_ip, at, ctx.scope);
                (s, d)
            }
            (None, None) => {
                let s = self.by_ip(t.src_ip, at, ctx.scope);
                let d = self.by_ip(t.dst_ip, at, ctx.scope);
                (s, d)
            }
        }
    }
}

fn vnet_hint(record: &ScopeHint, nic: &NicInfo) -> ScopeHint {
    let vnet = nic.vnet.as_deref().map(str::to_ascii_lowercase);
    let subscription = vnet
        .as_deref()
        .and_then(|v| crate::model::ArmId::parse(v).ok())
        .map(|a| a.subscription())
        .or_else(|| record.subscription.clone());
    ScopeHint {
        vnet,
        subscription,
        target: record.target.clone(),
        nsg: record.nsg.clone(),
    }
}

/// Runs the pipeline over `inputs` in order (record indices continue from one
/// to the next), writing through `sink`, and returns the summary (also
/// written as the last line). Errors are output (sink) errors only; input
/// errors end up in the summary.
pub(crate) fn run<R, I>(
    inputs: I,
    sink: &mut dyn Sink,
    opts: &EnrichOptions,
    attr: &dyn Attributor,
) -> io::Result<Summary>
where
    R: Input,
    I: IntoIterator<Item = R>,
{
    let started = Instant::now();
    let mut en = Enricher::new(opts, attr);
    let mut dec = Decoder::with_max_record(opts.format, opts.max_record_bytes);
    let read_bytes = opts.read_bytes.max(4096);
    let mut complete = true;
    for (n, input) in inputs.into_iter().enumerate() {
        if n > 0 {
            dec.next_input();
        }
        let mut failed = None;
        match Src::open(input, read_bytes) {
            Err(e) => failed = Some(e),
            Ok(mut src) => loop {
                if !en.out.is_empty() && src.would_block() {
                    sink.send(&mut en.out)?;
                }
                match dec.read_from(&mut src, read_bytes) {
                    Ok(0) => break,
                    Ok(_) => dec.drain(&mut |item| en.item(item, sink))?,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            },
        }
        dec.finish(&mut |item| en.item(item, sink))?;
        if let Some(e) = failed {
            complete = false;
            en.error(ErrorItem {
                record: None,
                tuple: None,
                line: 0,
                path: None,
                reason: format!("reading input {}: {e}; stopped here", n + 1),
                input: None,
            });
            break;
        }
    }
    let stats = dec.stats();
    let s = &mut en.summary;
    s.complete = complete;
    s.records_in = stats.records_in;
    s.records_rejected = stats.records_rejected;
    s.tuples_in = stats.tuples_in;
    s.tuples_rejected = stats.tuples_rejected;
    s.formats.nsg = stats.nsg_records;
    s.formats.vnet = stats.vnet_records;
    s.formats.flat = stats.flat_records;
    s.index = if opts.lookups {
        attr.freshness()
    } else {
        serde_json::Value::Null
    };
    s.elapsed_ms = started.elapsed().as_millis() as u64;
    let summary = en.summary.clone();
    en.writer.summary(&mut en.out, &summary);
    sink.send(&mut en.out)?;
    Ok(summary)
}

/// Enriches one input (a blob, JSON Lines, flat lines; plain or gzip) into
/// `w`, ending with the summary line, which is also returned. `Err` only when
/// writing fails; a read error is reported in the output and the summary
/// (`complete: false`).
pub fn enrich_reader<R: Read, W: Write>(
    r: R,
    w: W,
    opts: EnrichOptions,
    attributor: Arc<dyn Attributor>,
) -> io::Result<Summary> {
    enrich_readers([r], w, opts, attributor)
}

/// Like [`enrich_reader`] over several inputs in order (e.g. the files of
/// `ipwho enrich FILE...`), each gzip-detected on its own, with one summary.
pub fn enrich_readers<I, R, W>(
    inputs: I,
    w: W,
    opts: EnrichOptions,
    attributor: Arc<dyn Attributor>,
) -> io::Result<Summary>
where
    I: IntoIterator<Item = R>,
    R: Read,
    W: Write,
{
    let mut sink = WriteSink(w);
    let summary = run(
        inputs.into_iter().map(Blocking),
        &mut sink,
        &opts,
        attributor.as_ref(),
    )?;
    sink.0.flush()?;
    Ok(summary)
}
