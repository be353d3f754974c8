//! The pipeline on several threads: the calling thread reads and frames the
//! input and writes the output; workers decode, attribute and render batches
//! of whole records, each with its own [`RecordDecoder`] and [`Enricher`].
//! Batches are numbered and their output leaves in that order, so the bytes
//! are those of the one-thread pipeline:
//!
//! - record and tuple indices come from the framer and the records;
//! - each worker's caches (flow groups, scope hints) are its own and only
//!   ever save work;
//! - counts and listed errors are summed and appended batch by batch;
//! - format detection after a flat record tries flat first, so a record can
//!   decode differently depending on the record before it: a worker guesses
//!   the format before its batch and says whether any record depended on it
//!   (rare: an object with both `src_ip` and a flow-log shape, or one that
//!   only parses as flat); when the guess was wrong the batch is decoded
//!   again, in order, on the calling thread.
//!
//! At most `2 x workers` batches are in flight. When the input would wait,
//! the partial batch is handed out and finished output is written while
//! waiting, as the one-thread pipeline flushes before it blocks.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use super::super::{Attributor, EnrichOptions, StatusCounts, Summary};
use super::{Enricher, Input, Pool, Sink, Src, Stage, drive};
use crate::azure::flowlog::frame::Frame;
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
struct Merger<'a> {
    opts: &'a EnrichOptions,
    attr: &'a dyn Attributor,
    sink: &'a mut dyn Sink,
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
    /// The batch being filled, handed out at about `batch_bytes`.
    batch: Batch,
    batch_bytes: usize,
}

impl<'a> Merger<'a> {
    fn in_flight(&self) -> usize {
        (self.next_seq - self.next_out) as usize
    }

    /// Hands the batch being filled out, first making room when too many
    /// are in flight.
    fn hand_out(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        while self.in_flight() >= self.max_in_flight {
            self.wait_one()?;
        }
        let mut b = std::mem::take(&mut self.batch);
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
    fn report(&mut self, e: ErrorItem) -> io::Result<()> {
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

impl<'a> Stage<'a> for Merger<'a> {
    fn frame(&mut self, frame: Frame<'_>) -> io::Result<()> {
        let batch = &mut self.batch;
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
        if self.batch.bytes.len() >= self.batch_bytes {
            self.hand_out()?;
        }
        Ok(())
    }

    fn pending(&self) -> bool {
        !self.batch.is_empty() || self.in_flight() > 0
    }

    fn idle<R: Input>(&mut self, src: &mut Src<R>) -> io::Result<()> {
        self.hand_out()?;
        self.drain_until_input(src)
    }

    fn error(&mut self, e: ErrorItem) -> io::Result<()> {
        self.hand_out()?;
        self.report(e)
    }

    fn finish(mut self) -> io::Result<(Enricher<'a>, &'a mut dyn Sink, DecodeStats)> {
        self.hand_out()?;
        self.drain()?;
        // The workers stop once the queue is closed.
        self.work = None;
        self.en.summary = std::mem::take(&mut self.summary);
        Ok((self.en, self.sink, self.stats))
    }
}

/// Runs the pipeline with `opts.workers` worker threads (see the module doc).
pub(super) fn run<R, I>(
    inputs: I,
    sink: &mut dyn Sink,
    opts: &EnrichOptions,
    attr: &dyn Attributor,
    started: Instant,
) -> io::Result<Summary>
where
    R: Input,
    I: IntoIterator<Item = R>,
{
    let workers = opts.workers.max(1);
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
        let m = Merger {
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
            batch: Batch::default(),
            batch_bytes: opts.batch_bytes.max(1),
        };
        drive(inputs, m, opts, attr, started)
    })
}
