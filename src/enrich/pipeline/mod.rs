//! The enrichment core, shared by the blocking API ([`enrich_reader`]) and
//! the streaming one ([`super::enrich_stream`]). One loop ([`drive`]) opens
//! each input (gzip detected by its magic bytes), reads and frames it, and
//! hands each record to a stage: [`Inline`] decodes, attributes and writes
//! it at once on the calling thread (one worker); [`parallel`]'s stage
//! batches records out to worker threads and writes their output back in
//! input order (more than one). Either way each tuple's ends are attributed
//! by [`super::policy`], and output leaves through a sink in chunks.

mod parallel;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use super::output::LineWriter;
use super::{Attributor, EnrichOptions, Lookups, Summary};
use crate::azure::flowlog::frame::{Frame, Framer};
use crate::azure::flowlog::{DecodeStats, Decoded, ErrorItem, RecordDecoder};

/// Output buffers written out and handed back for reuse (a few, at most
/// `max`: fresh memory for every chunk costs page faults).
pub(super) struct Pool {
    bufs: std::sync::Mutex<Vec<Vec<u8>>>,
    max: usize,
}

impl Pool {
    pub(super) fn new(max: usize) -> Self {
        Pool {
            bufs: Default::default(),
            max,
        }
    }

    /// A buffer given back, else a new one of `cap` bytes.
    pub(super) fn take(&self, cap: usize) -> Vec<u8> {
        let v = self.bufs.lock().ok().and_then(|mut p| p.pop());
        v.unwrap_or_else(|| Vec::with_capacity(cap))
    }

    /// Keeps `v` (emptied) for reuse when it is large enough and there is room.
    pub(super) fn give(&self, mut v: Vec<u8>, cap: usize) {
        if v.capacity() >= cap / 2
            && let Ok(mut p) = self.bufs.lock()
            && p.len() < self.max
        {
            v.clear();
            p.push(v);
        }
    }
}

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

    fn item(&mut self, item: Decoded<'_>, sink: &mut dyn Sink, l: &dyn Lookups) -> io::Result<()> {
        match item {
            Decoded::Tuple(ctx, t) => {
                if self.opts.lookups {
                    let (s, d) = super::policy::attribute(l, ctx, t);
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
}

/// Where the loop hands each framed record, in input order: decoded,
/// attributed and written at once on the calling thread ([`Inline`]), or
/// gathered into batches for worker threads whose output is written back in
/// input order ([`parallel`]).
trait Stage<'a> {
    /// One framed record (or framing error).
    fn frame(&mut self, frame: Frame<'_>) -> io::Result<()>;
    /// Whether output or work is pending, to be seen to before the input
    /// waits.
    fn pending(&self) -> bool;
    /// The input would wait: writes what can be written until input arrives.
    fn idle<R: Input>(&mut self, src: &mut Src<R>) -> io::Result<()>;
    /// An error outside any record (an input that could not be read),
    /// after everything before it.
    fn error(&mut self, e: ErrorItem) -> io::Result<()>;
    /// The end: everything written. The enricher holding the run's summary
    /// (errors and per-end counts) with the sink, and the decoders' counts.
    fn finish(self) -> io::Result<(Enricher<'a>, &'a mut dyn Sink, DecodeStats)>;
}

/// The one-thread stage: each record is decoded, attributed and written as
/// soon as it is framed, straight into the sink.
struct Inline<'a> {
    rec: RecordDecoder,
    en: Enricher<'a>,
    sink: &'a mut dyn Sink,
}

impl<'a> Stage<'a> for Inline<'a> {
    fn frame(&mut self, frame: Frame<'_>) -> io::Result<()> {
        let Inline { rec, en, sink } = self;
        let attr = en.attr;
        let mut f = |item: Decoded<'_>| en.item(item, &mut **sink, attr);
        match frame {
            Frame::Record { bytes, index, line } => rec.record(bytes, index, line, &mut f),
            Frame::Error {
                index,
                line,
                reason,
            } => rec.frame_error(index, line, reason, &mut f),
        }
    }

    fn pending(&self) -> bool {
        !self.en.out.is_empty()
    }

    fn idle<R: Input>(&mut self, _: &mut Src<R>) -> io::Result<()> {
        self.sink.send(&mut self.en.out)
    }

    fn error(&mut self, e: ErrorItem) -> io::Result<()> {
        self.en.error(e);
        Ok(())
    }

    fn finish(self) -> io::Result<(Enricher<'a>, &'a mut dyn Sink, DecodeStats)> {
        Ok((self.en, self.sink, self.rec.stats()))
    }
}

/// Runs the pipeline over `inputs` in order (record indices continue from one
/// to the next), writing through `sink`, and returns the summary (also
/// written as the last line). Errors are output (sink) errors only; input
/// errors end up in the summary. With [`EnrichOptions::workers`] above one,
/// records are decoded, attributed and written on that many threads
/// ([`parallel`]); the output is the same.
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
    if opts.workers > 1 {
        return parallel::run(inputs, sink, opts, attr, started);
    }
    let stage = Inline {
        rec: RecordDecoder::new(opts.format),
        en: Enricher::new(opts, attr),
        sink,
    };
    drive(inputs, stage, opts, attr, started)
}

/// The loop: each input opened (gzip or not), read in chunks and framed, its
/// records handed to `stage` in order; pending work seen to whenever the
/// input would wait; a read error reported after what came before it, and
/// the run stopped there; then the summary line.
fn drive<'a, R, I, S>(
    inputs: I,
    mut stage: S,
    opts: &EnrichOptions,
    attr: &dyn Attributor,
    started: Instant,
) -> io::Result<Summary>
where
    R: Input,
    I: IntoIterator<Item = R>,
    S: Stage<'a>,
{
    let read_bytes = opts.read_bytes.max(4096);
    let mut framer = Framer::new(opts.max_record_bytes);
    let mut complete = true;
    let mut read_total = 0u64;
    for (n, input) in inputs.into_iter().enumerate() {
        if n > 0 {
            framer.reset_input();
        }
        let mut failed = None;
        // Past a limit, what is framed but not yet handed on is dropped.
        let mut cut = false;
        match Src::open(input, read_bytes) {
            Err(e) => failed = Some(e),
            Ok(mut src) => loop {
                if let Some(e) = past_limit(&opts.limits, read_total, started) {
                    (failed, cut) = (Some(e), true);
                    break;
                }
                if stage.pending() && src.would_block() {
                    stage.idle(&mut src)?;
                }
                match framer.read_from(&mut src, read_bytes) {
                    Ok(0) => break,
                    Ok(k) => {
                        read_total += k as u64;
                        if let Some(e) = past_limit(&opts.limits, read_total, started) {
                            (failed, cut) = (Some(e), true);
                            break;
                        }
                        while let Some(frame) = framer.next_frame() {
                            stage.frame(frame)?;
                        }
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            },
        }
        if !cut {
            framer.finish();
            while let Some(frame) = framer.next_frame() {
                stage.frame(frame)?;
            }
            if let Some(frame) = framer.eof_frame() {
                stage.frame(frame)?;
            }
        }
        if let Some(e) = failed {
            complete = false;
            stage.error(input_error(n, &e))?;
            break;
        }
    }
    let (mut en, sink, mut stats) = stage.finish()?;
    stats.records_in = framer.records_seen();
    finish_summary(&mut en.summary, complete, &stats, opts, attr, started);
    let summary = en.summary.clone();
    en.writer.summary(&mut en.out, &summary);
    sink.send(&mut en.out)?;
    Ok(summary)
}

/// The error that stops a run past one of its limits, after `read` bytes.
fn past_limit(limits: &super::RunLimits, read: u64, started: Instant) -> Option<io::Error> {
    if let Some(max) = limits.max_bytes
        && read > max
    {
        return Some(io::Error::other(format!(
            "the input is over the limit of {max} bytes (decompressed){}",
            limits.set_by
        )));
    }
    if let Some(t) = limits.time
        && started.elapsed() > t
    {
        return Some(io::Error::other(format!(
            "the run took longer than its limit of {} s{}",
            t.as_secs_f64(),
            limits.set_by
        )));
    }
    None
}

/// Fills the summary's totals at the end of a run.
fn finish_summary(
    s: &mut Summary,
    complete: bool,
    stats: &DecodeStats,
    opts: &EnrichOptions,
    attr: &dyn Attributor,
    started: Instant,
) {
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
}

/// The error that ends a run when input `n` (from 0) could not be read.
fn input_error(n: usize, e: &io::Error) -> ErrorItem {
    ErrorItem {
        record: None,
        tuple: None,
        line: 0,
        path: None,
        reason: format!("reading input {}: {e}; stopped here", n + 1),
        input: None,
    }
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
