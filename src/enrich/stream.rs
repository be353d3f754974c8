//! The streaming API for the HTTP handler: a request body stream in, an
//! NDJSON chunk stream out, with the CPU work on a blocking thread and
//! bounded queues on both sides. A slow reader of the response fills the
//! output queue, which stops the parser, which stops reading the request:
//! memory stays at a few chunks plus the record being parsed. Pending output
//! is flushed whenever the parser would wait for input, so the first lines
//! leave before the last bytes arrive.

use std::io::{self, Read};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::pipeline::{self, Input, Pool, Sink};
use super::{Attributor, EnrichOptions, Summary};

/// Reads the request body chunks that the forwarding task queues.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
    err: Option<io::Error>,
    done: bool,
}

impl ChannelReader {
    fn accept(&mut self, item: Option<io::Result<Bytes>>) {
        match item {
            Some(Ok(b)) => self.cur = b,
            Some(Err(e)) => self.err = Some(e),
            None => self.done = true,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if let Some(e) = self.err.take() {
                return Err(e);
            }
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            let item = self.rx.blocking_recv();
            self.accept(item);
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        Ok(n)
    }
}

impl Input for ChannelReader {
    fn would_block(&mut self) -> bool {
        if !self.cur.is_empty() || self.err.is_some() || self.done {
            return false;
        }
        match self.rx.try_recv() {
            Ok(item) => {
                self.accept(Some(item));
                false
            }
            Err(mpsc::error::TryRecvError::Empty) => true,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.done = true;
                false
            }
        }
    }
}

struct ChannelSink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    cap: usize,
    /// Chunks the response has written out, back for the next ones.
    spare: Arc<Pool>,
}

/// A chunk of output that goes back to the sink's spare buffers once written.
struct Recycled {
    buf: Vec<u8>,
    cap: usize,
    spare: Arc<Pool>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.buf), self.cap);
    }
}

impl Sink for ChannelSink {
    fn send(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let full = Recycled {
            buf: std::mem::replace(buf, self.spare.take(self.cap)),
            cap: self.cap,
            spare: self.spare.clone(),
        };
        self.tx
            .blocking_send(Ok(Bytes::from_owner(full)))
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the reader of the enrichment output went away",
                )
            })
    }
}

/// Enriches a byte stream (an HTTP request body: a blob, JSON Lines or flat
/// lines, plain or gzip) into a stream of NDJSON chunks of about
/// [`EnrichOptions::chunk_bytes`], the last of which ends with the summary
/// line. Must be called within a Tokio runtime (it spawns a task and a
/// blocking thread). Input errors (the client aborting) end the output with
/// an error line and a summary with `complete: false`; dropping the returned
/// stream stops the work.
pub fn enrich_stream<S, E>(
    input: S,
    opts: EnrichOptions,
    attributor: Arc<dyn Attributor>,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    enrich_stream_with_summary(input, opts, attributor).0
}

/// [`enrich_stream`], plus the [`Summary`] once the run ends (for logs and
/// metrics; the receiver errs if the run failed, e.g. the client went away).
pub fn enrich_stream_with_summary<S, E>(
    input: S,
    opts: EnrichOptions,
    attributor: Arc<dyn Attributor>,
) -> (
    impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static,
    oneshot::Receiver<Summary>,
)
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let queue = opts.queue_chunks.max(1);
    let (in_tx, in_rx) = mpsc::channel::<io::Result<Bytes>>(queue * 2);
    let (out_tx, mut out_rx) = mpsc::channel::<io::Result<Bytes>>(queue);
    let (sum_tx, sum_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut input = std::pin::pin!(input);
        while let Some(item) = input.next().await {
            let item = item.map_err(|e| io::Error::other(e.into()));
            let stop = item.is_err();
            if in_tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx: in_rx,
            cur: Bytes::new(),
            err: None,
            done: false,
        };
        let mut sink = ChannelSink {
            tx: out_tx,
            cap: opts.chunk_bytes + (64 << 10),
            // Enough for the chunks queued and those the connection is writing.
            spare: Arc::new(Pool::new(16)),
        };
        if let Ok(summary) = pipeline::run([reader], &mut sink, &opts, attributor.as_ref()) {
            let _ = sum_tx.send(summary);
        }
    });
    let stream = futures::stream::poll_fn(move |cx| out_rx.poll_recv(cx));
    (stream, sum_rx)
}
