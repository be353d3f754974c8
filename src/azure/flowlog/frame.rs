//! Incremental framing: splits a byte stream into one record at a time
//! without ever holding more than the record being read.
//!
//! The input is a sequence of top-level JSON values separated by whitespace:
//!
//! - `{"records":[ rec, rec, ... ]}` (a flow-log blob or an Event Hubs
//!   message): the envelope is recognised by its first key and each element of
//!   the array is a record, framed as soon as its closing brace arrives;
//! - any other object: one record (a bare record, or one line of JSON Lines);
//! - a top-level array: each element is a record.
//!
//! Record boundaries are found by tracking strings, escapes and nesting depth;
//! the record's bytes are then handed to serde. A raw line break inside a
//! string (invalid JSON) ends the broken record there, and once the input has
//! shown itself to be JSON Lines (a single-line top-level object), a line that
//! ends inside a record is reported and the next line starts afresh, so one
//! truncated line never swallows the next.

use std::io::{self, Read};

/// One framed unit: a record's bytes, or why something could not be framed.
#[derive(Debug)]
pub(crate) enum Frame<'a> {
    Record {
        bytes: &'a [u8],
        index: u64,
        line: u64,
    },
    Error {
        index: Option<u64>,
        line: u64,
        reason: &'static str,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A top-level object that is not an envelope.
    Top,
    /// An element of an array (`envelope`: of `{"records":[...]}`).
    Elem { envelope: bool },
    /// The rest of an envelope object after its array: scanned and dropped.
    Tail,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Top,
    Garbage,
    Elems { envelope: bool },
    AfterElem { envelope: bool },
    Value(Kind),
}

enum Scan {
    More,
    Done(usize),
    Broken(&'static str),
}

enum Head {
    More,
    Envelope(usize),
    Other,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[inline]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// `{ ws "records" ws : ws [` → the offset just past `[`.
fn classify_head(b: &[u8], eof: bool) -> Head {
    const KEY: &[u8] = b"\"records\"";
    let more = || {
        if eof || b.len() > 4096 {
            Head::Other
        } else {
            Head::More
        }
    };
    let mut i = 1;
    while i < b.len() && is_ws(b[i]) {
        i += 1;
    }
    if b.len() < i + KEY.len() {
        return if KEY.starts_with(&b[i..]) {
            more()
        } else {
            Head::Other
        };
    }
    if &b[i..i + KEY.len()] != KEY {
        return Head::Other;
    }
    i += KEY.len();
    for want in [b':', b'['] {
        while i < b.len() && is_ws(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            return more();
        }
        if b[i] != want {
            return Head::Other;
        }
        i += 1;
    }
    Head::Envelope(i)
}

pub(crate) struct Framer {
    /// Storage; `buf[..end]` is input not yet dropped, `buf[end..]` is
    /// initialised spare room that reads fill without zeroing it again.
    buf: Vec<u8>,
    end: usize,
    pos: usize,
    st: St,
    vstart: usize,
    vline: u64,
    depth: u32,
    in_str: bool,
    esc: bool,
    scalar: bool,
    v_newline: bool,
    oversize: bool,
    line: u64,
    line_mode: bool,
    eof: bool,
    eof_reported: bool,
    next_index: u64,
    max_record: usize,
}

impl Framer {
    pub(crate) fn new(max_record: usize) -> Self {
        Framer {
            buf: Vec::new(),
            end: 0,
            pos: 0,
            st: St::Top,
            vstart: 0,
            vline: 1,
            depth: 0,
            in_str: false,
            esc: false,
            scalar: false,
            v_newline: false,
            oversize: false,
            line: 1,
            line_mode: false,
            eof: false,
            eof_reported: false,
            next_index: 0,
            max_record: max_record.max(1),
        }
    }

    /// Starts a new input (the next file): framing state resets, record
    /// indices continue.
    pub(crate) fn reset_input(&mut self) {
        let next = self.next_index;
        *self = Framer {
            buf: std::mem::take(&mut self.buf),
            ..Framer::new(self.max_record)
        };
        self.end = 0;
        self.next_index = next;
    }

    /// Records (and unframeable values) seen so far.
    pub(crate) fn records_seen(&self) -> u64 {
        self.next_index
    }

    /// Drops bytes that no pending value needs.
    fn compact(&mut self) {
        let keep_from = match self.st {
            St::Value(Kind::Top | Kind::Elem { .. }) if !self.oversize => self.vstart,
            _ => self.pos,
        };
        if keep_from == 0 {
            return;
        }
        self.buf.copy_within(keep_from..self.end, 0);
        self.end -= keep_from;
        self.pos -= keep_from;
        self.vstart = self.vstart.saturating_sub(keep_from);
    }

    /// Appends bytes (tests and in-memory callers).
    pub(crate) fn feed(&mut self, data: &[u8]) {
        self.compact();
        self.reserve(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    fn reserve(&mut self, n: usize) {
        if self.buf.len() < self.end + n {
            self.buf.resize(self.end + n, 0);
        }
    }

    /// Reads up to `chunk` bytes from `r` straight into the buffer; 0 at end
    /// of input.
    pub(crate) fn read_from<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        chunk: usize,
    ) -> io::Result<usize> {
        self.compact();
        let old = self.end;
        self.reserve(chunk);
        let res = loop {
            match r.read(&mut self.buf[old..old + chunk]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *res.as_ref().unwrap_or(&0);
        self.end = old + n.min(chunk);
        res
    }

    /// No more input will come: the next calls to [`Framer::next_frame`]
    /// flush what is pending and report a truncated record or envelope.
    pub(crate) fn finish(&mut self) {
        self.eof = true;
    }

    fn skip_ws(&mut self) {
        while self.pos < self.end {
            match self.buf[self.pos] {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.pos += 1;
        }
    }

    fn start_value(&mut self, kind: Kind) {
        self.st = St::Value(kind);
        self.vstart = self.pos;
        self.vline = self.line;
        self.depth = 0;
        self.in_str = false;
        self.esc = false;
        self.v_newline = false;
        self.oversize = false;
        self.scalar = !matches!(self.buf[self.pos], b'{' | b'[' | b'"');
    }

    fn end_of_array(&mut self, envelope: bool) {
        self.pos += 1;
        if envelope {
            // Inside the envelope object, after its array: scan to its end.
            self.st = St::Value(Kind::Tail);
            self.vstart = self.pos;
            self.depth = 1;
            self.in_str = false;
            self.esc = false;
            self.scalar = false;
            self.oversize = false;
        } else {
            self.st = St::Top;
        }
    }

    fn take_index(&mut self) -> u64 {
        let i = self.next_index;
        self.next_index += 1;
        i
    }

    /// The next record or framing error, or `None` when more input is needed
    /// (or, after [`Framer::finish`], when all is done).
    pub(crate) fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            match self.st {
                St::Top => {
                    self.skip_ws();
                    if self.pos >= self.end {
                        return None;
                    }
                    match self.buf[self.pos] {
                        b'{' => match classify_head(&self.buf[self.pos..self.end], self.eof) {
                            Head::More => return None,
                            Head::Envelope(after) => {
                                let nl = memchr::memchr_iter(
                                    b'\n',
                                    &self.buf[self.pos..self.pos + after],
                                )
                                .count();
                                self.line += nl as u64;
                                self.pos += after;
                                self.st = St::Elems { envelope: true };
                            }
                            Head::Other => self.start_value(Kind::Top),
                        },
                        b'[' => {
                            self.pos += 1;
                            self.st = St::Elems { envelope: false };
                        }
                        0xEF if self.end - self.pos < 3 && !self.eof => return None,
                        0xEF if self.buf[self.pos..self.end].starts_with(BOM) => self.pos += 3,
                        _ => {
                            self.st = St::Garbage;
                            return Some(Frame::Error {
                                index: None,
                                line: self.line,
                                reason: "unexpected data at top level: expected a JSON object (a record, or {\"records\":[...]}) or an array; skipped to the end of the line",
                            });
                        }
                    }
                }
                St::Garbage => match memchr::memchr(b'\n', &self.buf[self.pos..self.end]) {
                    Some(i) => {
                        self.pos += i;
                        self.st = St::Top;
                    }
                    None => {
                        self.pos = self.end;
                        return None;
                    }
                },
                St::Elems { envelope } => {
                    while self.pos < self.end {
                        match self.buf[self.pos] {
                            b'\n' => self.line += 1,
                            b' ' | b'\t' | b'\r' | b',' => {}
                            _ => break,
                        }
                        self.pos += 1;
                    }
                    if self.pos >= self.end {
                        return None;
                    }
                    if self.buf[self.pos] == b']' {
                        self.end_of_array(envelope);
                    } else {
                        self.start_value(Kind::Elem { envelope });
                    }
                }
                St::AfterElem { envelope } => {
                    self.skip_ws();
                    if self.pos >= self.end {
                        return None;
                    }
                    match self.buf[self.pos] {
                        b',' => {
                            self.pos += 1;
                            self.st = St::Elems { envelope };
                        }
                        b']' => self.end_of_array(envelope),
                        // A missing comma: tolerated, the next value starts here.
                        _ => self.st = St::Elems { envelope },
                    }
                }
                St::Value(kind) => {
                    let res = self.scan(kind);
                    match res {
                        Scan::More => {
                            if self.eof && self.scalar {
                                let end = self.end;
                                return Some(self.value_done(kind, end));
                            }
                            if !self.oversize && self.pos - self.vstart > self.max_record {
                                self.oversize = true;
                            }
                            return None;
                        }
                        Scan::Done(end) => {
                            if kind == Kind::Tail {
                                self.st = St::Top;
                                continue;
                            }
                            return Some(self.value_done(kind, end));
                        }
                        Scan::Broken(reason) => {
                            self.st = match kind {
                                Kind::Top | Kind::Tail => St::Top,
                                Kind::Elem { envelope } => St::AfterElem { envelope },
                            };
                            if kind == Kind::Tail {
                                continue;
                            }
                            let index = self.take_index();
                            return Some(Frame::Error {
                                index: Some(index),
                                line: self.vline,
                                reason,
                            });
                        }
                    }
                }
            }
        }
    }

    fn value_done(&mut self, kind: Kind, end: usize) -> Frame<'_> {
        self.st = match kind {
            Kind::Elem { envelope } => St::AfterElem { envelope },
            _ => St::Top,
        };
        self.pos = end;
        if kind == Kind::Top && !self.v_newline {
            self.line_mode = true;
        }
        let index = self.take_index();
        if self.oversize || end - self.vstart > self.max_record {
            return Frame::Error {
                index: Some(index),
                line: self.vline,
                reason: "record larger than the configured limit (max_record_bytes); skipped",
            };
        }
        Frame::Record {
            bytes: &self.buf[self.vstart..end],
            index,
            line: self.vline,
        }
    }

    /// After [`Framer::finish`] and once `next_frame` returned `None`: what
    /// was left open when the input ended.
    pub(crate) fn eof_frame(&mut self) -> Option<Frame<'static>> {
        if !self.eof || self.eof_reported {
            return None;
        }
        self.eof_reported = true;
        let line = self.line;
        let st = std::mem::replace(&mut self.st, St::Top);
        match st {
            St::Value(Kind::Top | Kind::Elem { .. }) => {
                let index = self.take_index();
                Some(Frame::Error {
                    index: Some(index),
                    line: self.vline,
                    reason: "input ends inside a record (truncated)",
                })
            }
            St::Elems { envelope: true }
            | St::AfterElem { envelope: true }
            | St::Value(Kind::Tail) => Some(Frame::Error {
                index: None,
                line,
                reason: "input ends before the envelope's closing ]} (truncated blob); the records before it were enriched",
            }),
            St::Elems { envelope: false } | St::AfterElem { envelope: false } => {
                Some(Frame::Error {
                    index: None,
                    line,
                    reason: "input ends before the closing ] of a top-level array",
                })
            }
            St::Top if self.pos < self.end => Some(Frame::Error {
                index: None,
                line,
                reason: "input ends with an incomplete value",
            }),
            St::Top | St::Garbage => None,
        }
    }

    fn scan(&mut self, kind: Kind) -> Scan {
        let buf = &self.buf[..self.end];
        let len = buf.len();
        let mut pos = self.pos;
        if self.scalar {
            if pos == self.vstart {
                // The first byte belongs to the value, whatever it is, so
                // that a stray `}` or `,` cannot frame an empty value forever.
                pos += 1;
            }
            while pos < len {
                if matches!(buf[pos], b',' | b']' | b'}' | b' ' | b'\t' | b'\r' | b'\n') {
                    self.pos = pos;
                    return Scan::Done(pos);
                }
                pos += 1;
            }
            self.pos = pos;
            return Scan::More;
        }
        loop {
            if self.in_str {
                if self.esc {
                    if pos >= len {
                        break;
                    }
                    if buf[pos] == b'\n' {
                        self.pos = pos;
                        return Scan::Broken("line break inside a string: the record is cut short");
                    }
                    self.esc = false;
                    pos += 1;
                    continue;
                }
                match memchr::memchr3(b'"', b'\\', b'\n', &buf[pos..]) {
                    None => {
                        pos = len;
                        break;
                    }
                    Some(i) => {
                        pos += i;
                        match buf[pos] {
                            b'"' => {
                                self.in_str = false;
                                pos += 1;
                                if self.depth == 0 {
                                    self.pos = pos;
                                    return Scan::Done(pos);
                                }
                            }
                            b'\\' => {
                                self.esc = true;
                                pos += 1;
                            }
                            _ => {
                                self.pos = pos;
                                return Scan::Broken(
                                    "line break inside a string: the record is cut short",
                                );
                            }
                        }
                    }
                }
            } else {
                if pos >= len {
                    break;
                }
                match buf[pos] {
                    b'"' => self.in_str = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            self.pos = pos + 1;
                            return Scan::Done(pos + 1);
                        }
                    }
                    b'\n' => {
                        if self.line_mode && kind == Kind::Top {
                            self.pos = pos;
                            return Scan::Broken(
                                "line ends inside a record (JSON Lines): the record is cut short",
                            );
                        }
                        self.v_newline = true;
                        self.line += 1;
                    }
                    _ => {}
                }
                pos += 1;
            }
        }
        self.pos = pos;
        Scan::More
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum F {
        R(String, u64, u64),
        E(Option<u64>, u64),
    }

    fn frames_in_chunks(input: &[u8], chunk: usize, max: usize) -> Vec<F> {
        let mut fr = Framer::new(max);
        let mut out = Vec::new();
        let drain = |fr: &mut Framer, out: &mut Vec<F>| {
            while let Some(f) = fr.next_frame() {
                out.push(match f {
                    Frame::Record { bytes, index, line } => {
                        F::R(String::from_utf8_lossy(bytes).into_owned(), index, line)
                    }
                    Frame::Error { index, line, .. } => F::E(index, line),
                });
            }
        };
        for c in input.chunks(chunk.max(1)) {
            fr.feed(c);
            drain(&mut fr, &mut out);
        }
        fr.finish();
        drain(&mut fr, &mut out);
        if let Some(Frame::Error { index, line, .. }) = fr.eof_frame() {
            out.push(F::E(index, line));
        }
        out
    }

    fn frames(input: &[u8]) -> Vec<F> {
        let whole = frames_in_chunks(input, input.len(), 1 << 20);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(
                frames_in_chunks(input, chunk, 1 << 20),
                whole,
                "chunk {chunk}"
            );
        }
        whole
    }

    fn r(s: &str, i: u64, l: u64) -> F {
        F::R(s.to_string(), i, l)
    }

    #[test]
    fn envelope_records_one_at_a_time() {
        let got = frames(b"{\"records\":[{\"a\":\"x}]\\\"\"},\r\n{\"b\":[1,{}]}\r\n]}");
        assert_eq!(
            got,
            vec![r("{\"a\":\"x}]\\\"\"}", 0, 1), r("{\"b\":[1,{}]}", 1, 2)]
        );
    }

    #[test]
    fn pretty_envelope_and_bare_record() {
        let got = frames(b"\xEF\xBB\xBF{\n \"records\" : [\n  {\"a\":\n1}\n ],\n \"x\": {\"y\": \"]}\"}\n}\n{\n\"b\":2\n}\n");
        assert_eq!(got, vec![r("{\"a\":\n1}", 0, 3), r("{\n\"b\":2\n}", 1, 8)]);
    }

    #[test]
    fn json_lines_resync_after_a_cut_line() {
        let got = frames(b"{\"a\":1}\n{\"b\":[1,\n{\"c\":\"x\n{\"d\":4}\n");
        assert_eq!(
            got,
            vec![
                r("{\"a\":1}", 0, 1),
                F::E(Some(1), 2),
                F::E(Some(2), 3),
                r("{\"d\":4}", 3, 4)
            ]
        );
    }

    #[test]
    fn garbage_and_truncation_reported() {
        let got = frames(b"hello\n{\"records\":[{\"a\":1},{\"b\":");
        assert_eq!(
            got,
            vec![F::E(None, 1), r("{\"a\":1}", 0, 2), F::E(Some(1), 2)]
        );
        let got = frames(b"{\"records\":[{\"a\":1}");
        assert_eq!(got, vec![r("{\"a\":1}", 0, 1), F::E(None, 1)]);
        let got = frames(b"{\"records\":[}]}");
        assert_eq!(got, vec![r("}", 0, 1)]);
        let got = frames(b"[,}:]");
        assert_eq!(got, vec![r("}:", 0, 1)]);
        let got = frames(b"[{\"a\":1}, 5, \"s\"]");
        assert_eq!(
            got,
            vec![r("{\"a\":1}", 0, 1), r("5", 1, 1), r("\"s\"", 2, 1)]
        );
    }

    #[test]
    fn oversize_records_are_skipped_not_buffered() {
        let big = format!(
            "{{\"records\":[{{\"a\":\"{}\"}},{{\"b\":1}}]}}",
            "x".repeat(1000)
        );
        let got = frames_in_chunks(big.as_bytes(), 16, 100);
        assert_eq!(got, vec![F::E(Some(0), 1), r("{\"b\":1}", 1, 1)]);
    }
}
