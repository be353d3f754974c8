//! The enrichment core, shared by the blocking API ([`enrich_reader`]) and
//! the streaming one ([`super::enrich_stream`]): inputs (gzip detected by
//! their magic bytes) are decoded record by record, each tuple is attributed
//! and written, and output leaves through a sink in chunks.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use super::output::LineWriter;
use super::{Attributor, EnrichOptions, Lookups, Summary};
use crate::azure::flowlog::{DecodeStats, Decoded, Decoder, ErrorItem};

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
    if opts.workers > 1 {
        return parallel::run(inputs, sink, opts, attr);
    }
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
                    Ok(_) => dec.drain(&mut |item| en.item(item, sink, attr))?,
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            },
        }
        dec.finish(&mut |item| en.item(item, sink, attr))?;
        if let Some(e) = failed {
            complete = false;
            en.error(input_error(n, &e));
            break;
        }
    }
    let stats = dec.stats();
    finish_summary(&mut en.summary, complete, &stats, opts, attr, started);
    let summary = en.summary.clone();
    en.writer.summary(&mut en.out, &summary);
    sink.send(&mut en.out)?;
    Ok(summary)
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

/// The pipeline on several threads: the calling thread reads and frames the
/// input and writes the output; workers decode, attribute and render batches
/// of whole records, each with its own [`RecordDecoder`] and [`Enricher`].
/// Batches are numbered and their output leaves in that order, so the bytes
/// are those of the one-thread pipeline:
///
/// - record and tuple indices come from the framer and the records;
/// - each worker's caches (flow groups, scope hints, rendered NICs) are its
///   own and only ever save work;
/// - counts and listed errors are summed and appended batch by batch;
/// - format detection after a flat record tries flat first, so a record can
///   decode differently depending on the record before it: a worker guesses
///   the format before its batch and says whether any record depended on it
///   (rare: an object with both `src_ip` and a flow-log shape, or one that
///   only parses as flat); when the guess was wrong the batch is decoded
///   again, in order, on the calling thread.
///
/// At most `2 x workers` batches are in flight. When the input would wait,
/// the partial batch is handed out and finished output is written while
/// waiting, as the one-thread pipeline flushes before it blocks.
mod parallel {
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::{Mutex, mpsc};
    use std::time::{Duration, Instant};

    use super::super::{Attributor, EnrichOptions, StatusCounts, Summary};
    use super::{Enricher, Input, Pool, Sink, Src, finish_summary, input_error};
    use crate::azure::flowlog::frame::{Frame, Framer};
    use crate::azure::flowlog::{
        BatchDependence, DecodeStats, Decoded, ErrorItem, Format, RecordDecoder,
    };

    /// A framed unit, by its place in the batch's bytes.
    enum Item {
        Record {
            start: usize,
            end: usize,
            index: u64,
            line: u64,
        },
        FrameError {
            index: Option<u64>,
            line: u64,
            reason: &'static str,
        },
    }

    #[derive(Default)]
    struct Batch {
        seq: u64,
        bytes: Vec<u8>,
        items: Vec<Item>,
    }

    impl Batch {
        fn is_empty(&self) -> bool {
            self.items.is_empty()
        }
    }

    /// What a worker made of a batch.
    struct Done {
        batch: Batch,
        chunks: Vec<Vec<u8>>,
        summary: Summary,
        stats: DecodeStats,
        dep: BatchDependence,
    }

    /// Collects output chunks instead of sending them.
    struct Collect<'p> {
        chunks: Vec<Vec<u8>>,
        cap: usize,
        pool: &'p Pool,
    }

    impl Sink for Collect<'_> {
        fn send(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
            if !buf.is_empty() {
                let fresh = self.pool.take(self.cap);
                self.chunks.push(std::mem::replace(buf, fresh));
            }
            Ok(())
        }
    }

    /// A worker's state: the record decoder and the enricher, both kept
    /// across batches (their caches only save work).
    struct Worker<'a> {
        rec: RecordDecoder,
        en: Enricher<'a>,
        cap: usize,
        pool: &'a Pool,
    }

    impl<'a> Worker<'a> {
        fn new(opts: &'a EnrichOptions, attr: &'a dyn Attributor, pool: &'a Pool) -> Self {
            Worker {
                rec: RecordDecoder::new(opts.format),
                en: Enricher::new(opts, attr),
                cap: opts.chunk_bytes + (64 << 10),
                pool,
            }
        }

        /// Decodes, attributes and renders a batch; `last`: the format of the
        /// record before it, when known (else the worker's guess stands).
        fn run(&mut self, batch: Batch, last: Option<Format>) -> Done {
            self.rec.begin_batch(last);
            let entry = self.rec.last();
            let mut sink = Collect {
                chunks: Vec::new(),
                cap: self.cap,
                pool: self.pool,
            };
            let Worker { rec, en, .. } = self;
            en.summary = Summary {
                lookups: en.opts.lookups,
                ..Summary::default()
            };
            // One read of the index for the whole batch: the work is bounded
            // and never waits on output.
            let attr = en.attr;
            attr.with_lookups(&mut |l| {
                let mut f = |item: Decoded<'_>| en.item(item, &mut sink, l);
                for item in &batch.items {
                    // `Collect` never fails, so neither does `f`.
                    let _ = match *item {
                        Item::Record {
                            start,
                            end,
                            index,
                            line,
                        } => rec.record(&batch.bytes[start..end], index, line, &mut f),
                        Item::FrameError {
                            index,
                            line,
                            reason,
                        } => rec.frame_error(index, line, reason, &mut f),
                    };
                }
            });
            let _ = sink.send(&mut en.out);
            let (stats, dep) = rec.end_batch(entry);
            Done {
                batch,
                chunks: sink.chunks,
                summary: std::mem::take(&mut en.summary),
                stats,
                dep,
            }
        }
    }

    fn add_counts(a: &mut StatusCounts, b: &StatusCounts) {
        a.confirmed += b.confirmed;
        a.probable += b.probable;
        a.possible += b.possible;
        a.ambiguous += b.ambiguous;
        a.unknown += b.unknown;
        a.mac_mismatch += b.mac_mismatch;
        a.not_looked_up += b.not_looked_up;
    }

    fn add_stats(a: &mut DecodeStats, b: &DecodeStats) {
        a.records_rejected += b.records_rejected;
        a.tuples_in += b.tuples_in;
        a.tuples_rejected += b.tuples_rejected;
        a.nsg_records += b.nsg_records;
        a.vnet_records += b.vnet_records;
        a.flat_records += b.flat_records;
        a.input_errors += b.input_errors;
    }

    /// The calling thread's side: hands out batches, puts the results back
    /// in order and writes them.
    struct Merger<'a, 's> {
        opts: &'a EnrichOptions,
        attr: &'a dyn Attributor,
        sink: &'s mut dyn Sink,
        work: Option<mpsc::SyncSender<(Batch, Option<Format>)>>,
        done: mpsc::Receiver<Done>,
        max_in_flight: usize,
        /// Sequence number of the next batch handed out, and of the next to write.
        next_seq: u64,
        next_out: u64,
        waiting: BTreeMap<u64, Done>,
        /// The format of the last record written (format detection).
        last: Format,
        summary: Summary,
        stats: DecodeStats,
        /// Decodes again, in order, a batch whose worker guessed wrong.
        redo: Option<Worker<'a>>,
        /// Summary line and input errors are rendered here.
        en: Enricher<'a>,
        pool: &'a Pool,
    }

    impl<'a> Merger<'a, '_> {
        fn in_flight(&self) -> usize {
            (self.next_seq - self.next_out) as usize
        }

        /// Hands a batch out, first making room when too many are in flight.
        fn dispatch(&mut self, batch: &mut Batch) -> io::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            while self.in_flight() >= self.max_in_flight {
                self.wait_one()?;
            }
            let mut b = std::mem::take(batch);
            b.seq = self.next_seq;
            self.next_seq += 1;
            // The format before the batch is known when nothing is in flight.
            let last = (self.next_seq - 1 == self.next_out).then_some(self.last);
            let work = self.work.as_ref().expect("workers run until the end");
            work.send((b, last))
                .map_err(|_| io::Error::other("an enrichment worker stopped"))
        }

        /// Waits for one result and writes whatever is then in order.
        fn wait_one(&mut self) -> io::Result<()> {
            let d = self
                .done
                .recv()
                .map_err(|_| io::Error::other("an enrichment worker stopped"))?;
            self.accept(d)
        }

        fn accept(&mut self, d: Done) -> io::Result<()> {
            self.waiting.insert(d.batch.seq, d);
            while let Some(d) = self.waiting.remove(&self.next_out) {
                self.next_out += 1;
                self.write(d)?;
            }
            Ok(())
        }

        fn write(&mut self, mut d: Done) -> io::Result<()> {
            if d.dep.dependent && (d.dep.entry == Format::Flat) != (self.last == Format::Flat) {
                let (opts, attr) = (self.opts, self.attr);
                let pool = self.pool;
                let redo = self
                    .redo
                    .get_or_insert_with(|| Worker::new(opts, attr, pool));
                d = redo.run(d.batch, Some(self.last));
            }
            if let Some(l) = d.dep.exit {
                self.last = l;
            }
            let s = &mut self.summary;
            s.tuples_out += d.summary.tuples_out;
            add_counts(&mut s.source, &d.summary.source);
            add_counts(&mut s.destination, &d.summary.destination);
            s.errors_total += d.summary.errors_total;
            let room = self.opts.max_errors_listed.saturating_sub(s.errors.len());
            s.errors.extend(d.summary.errors.into_iter().take(room));
            add_stats(&mut self.stats, &d.stats);
            let cap = self.opts.chunk_bytes + (64 << 10);
            for mut c in d.chunks {
                self.sink.send(&mut c)?;
                self.pool.give(c, cap);
            }
            Ok(())
        }

        /// Writes everything in flight.
        fn drain(&mut self) -> io::Result<()> {
            while self.in_flight() > 0 {
                self.wait_one()?;
            }
            Ok(())
        }

        /// The input would wait: writes results as they come until input
        /// arrives or nothing is left in flight.
        fn drain_until_input<R: Input>(&mut self, src: &mut Src<R>) -> io::Result<()> {
            while self.in_flight() > 0 {
                match self.done.recv_timeout(Duration::from_millis(1)) {
                    Ok(d) => self.accept(d)?,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return Err(io::Error::other("an enrichment worker stopped"));
                    }
                }
                if !src.would_block() {
                    break;
                }
            }
            Ok(())
        }

        /// An error outside any batch (an input that could not be read),
        /// after everything before it.
        fn error(&mut self, e: ErrorItem) -> io::Result<()> {
            self.drain()?;
            self.summary.errors_total += 1;
            if self.opts.error_lines {
                self.en.writer.error(&mut self.en.out, &e);
                self.sink.send(&mut self.en.out)?;
            }
            if self.summary.errors.len() < self.opts.max_errors_listed {
                self.summary.errors.push(e);
            }
            Ok(())
        }
    }

    /// Moves the frames complete in `framer` into `batch`, handing out full
    /// batches.
    fn frames(
        framer: &mut Framer,
        batch: &mut Batch,
        m: &mut Merger<'_, '_>,
        batch_bytes: usize,
    ) -> io::Result<()> {
        while let Some(frame) = framer.next_frame() {
            match frame {
                Frame::Record { bytes, index, line } => {
                    let start = batch.bytes.len();
                    batch.bytes.extend_from_slice(bytes);
                    batch.items.push(Item::Record {
                        start,
                        end: batch.bytes.len(),
                        index,
                        line,
                    });
                }
                Frame::Error {
                    index,
                    line,
                    reason,
                } => batch.items.push(Item::FrameError {
                    index,
                    line,
                    reason,
                }),
            }
            if batch.bytes.len() >= batch_bytes {
                m.dispatch(batch)?;
            }
        }
        Ok(())
    }

    pub(super) fn run<R, I>(
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
        let workers = opts.workers.max(1);
        let read_bytes = opts.read_bytes.max(4096);
        let batch_bytes = opts.batch_bytes.max(1);
        let (work_tx, work_rx) = mpsc::sync_channel::<(Batch, Option<Format>)>(workers);
        let work_rx = Mutex::new(work_rx);
        let pool = Pool::new(32);
        std::thread::scope(|scope| {
            let (done_tx, done_rx) = mpsc::channel::<Done>();
            for _ in 0..workers {
                let (work_rx, done_tx, pool) = (&work_rx, done_tx.clone(), &pool);
                std::thread::Builder::new()
                    .name("ipwho-enrich".into())
                    .spawn_scoped(scope, move || {
                        let mut w = Worker::new(opts, attr, pool);
                        loop {
                            let next = work_rx.lock().map(|rx| rx.recv());
                            let Ok(Ok((batch, last))) = next else { break };
                            if done_tx.send(w.run(batch, last)).is_err() {
                                break;
                            }
                        }
                    })?;
            }
            drop(done_tx);
            let mut m = Merger {
                opts,
                attr,
                sink,
                work: Some(work_tx),
                done: done_rx,
                max_in_flight: 2 * workers,
                next_seq: 0,
                next_out: 0,
                waiting: BTreeMap::new(),
                last: opts.format.unwrap_or(Format::Nsg),
                summary: Summary {
                    lookups: opts.lookups,
                    ..Summary::default()
                },
                stats: DecodeStats::default(),
                redo: None,
                en: Enricher::new(opts, attr),
                pool: &pool,
            };
            let mut framer = Framer::new(opts.max_record_bytes);
            let mut batch = Batch::default();
            let mut complete = true;
            for (n, input) in inputs.into_iter().enumerate() {
                if n > 0 {
                    framer.reset_input();
                }
                let mut failed = None;
                match Src::open(input, read_bytes) {
                    Err(e) => failed = Some(e),
                    Ok(mut src) => loop {
                        if (!batch.is_empty() || m.in_flight() > 0) && src.would_block() {
                            m.dispatch(&mut batch)?;
                            m.drain_until_input(&mut src)?;
                        }
                        match framer.read_from(&mut src, read_bytes) {
                            Ok(0) => break,
                            Ok(_) => frames(&mut framer, &mut batch, &mut m, batch_bytes)?,
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    },
                }
                framer.finish();
                frames(&mut framer, &mut batch, &mut m, batch_bytes)?;
                if let Some(Frame::Error {
                    index,
                    line,
                    reason,
                }) = framer.eof_frame()
                {
                    batch.items.push(Item::FrameError {
                        index,
                        line,
                        reason,
                    });
                }
                if let Some(e) = failed {
                    complete = false;
                    m.dispatch(&mut batch)?;
                    m.error(input_error(n, &e))?;
                    break;
                }
            }
            m.dispatch(&mut batch)?;
            m.drain()?;
            m.work = None;
            let mut stats = m.stats;
            stats.records_in = framer.records_seen();
            finish_summary(&mut m.summary, complete, &stats, opts, attr, started);
            let summary = m.summary.clone();
            m.en.writer.summary(&mut m.en.out, &summary);
            m.sink.send(&mut m.en.out)?;
            Ok(summary)
        })
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
