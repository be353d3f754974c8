//! One flow tuple, decoded.
//!
//! Azure writes each tuple as one comma-separated string:
//!
//! | # | NSG v1 (8 fields) | NSG v2 (13 fields) | VNet v4 (13 fields) |
//! |---|---|---|---|
//! | 0 | epoch seconds | epoch seconds | epoch milliseconds |
//! | 1-4 | src IP, dst IP, src port, dst port | same | same |
//! | 5 | protocol `T`/`U` | `T`/`U` | IANA number (`6`, `17`) |
//! | 6 | direction `I`/`O` | same | same |
//! | 7 | decision `A`/`D` | same | flow state `B`/`C`/`E`/`D` (D = deny) |
//! | 8 | - | flow state `B`/`C`/`E` | encryption (`X`, `NX`, `NX_...`) |
//! | 9-12 | - | packets/bytes src->dst, packets/bytes dst->src | same |
//!
//! Empty counters (begin and deny tuples of NSG v2, the docs' VNet example)
//! decode to `None`, never to 0. Times are detected by magnitude (seconds,
//! milliseconds, microseconds or nanoseconds), because the VNet docs also show
//! 10-digit second timestamps. Field counts other than 8 and 13 are tolerated:
//! the fields present are decoded, extra fields are ignored, fewer than 8 is an
//! error. This file also holds the number, address and time helpers the
//! parsers and the writer share.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Direction of the flow as seen by the NIC that logged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Whether the NSG (or security admin rule) let the flow through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

/// Flow state: `B`egin, `C`ontinue, `E`nd, or `D`eny (VNet flow logs only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowState {
    Begin,
    Continue,
    End,
    Deny,
}

impl FlowState {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowState::Begin => "begin",
            FlowState::Continue => "continue",
            FlowState::End => "end",
            FlowState::Deny => "deny",
        }
    }
}

/// The transport protocol. NSG logs write `T`/`U`, VNet logs the IANA number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Any other IANA protocol number.
    Other(u8),
}

impl Protocol {
    pub fn from_iana(n: u8) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            n => Protocol::Other(n),
        }
    }

    pub fn iana(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Other(n) => n,
        }
    }

    /// The ECS `network.transport` name; `None` for numbers without one (the
    /// writer then writes the number).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Protocol::Tcp => Some("tcp"),
            Protocol::Udp => Some("udp"),
            Protocol::Icmp => Some("icmp"),
            Protocol::Icmpv6 => Some("ipv6-icmp"),
            Protocol::Other(_) => None,
        }
    }

    /// Accepts `T`, `U` (NSG), an IANA number (VNet), or a name (`tcp`,
    /// `udp`, `icmp`, any case; flat input).
    pub fn parse(s: &str) -> Option<Self> {
        match s.as_bytes() {
            b"T" => return Some(Protocol::Tcp),
            b"U" => return Some(Protocol::Udp),
            b"6" => return Some(Protocol::Tcp),
            b"17" => return Some(Protocol::Udp),
            _ => {}
        }
        if let Some(n) = parse_u64(s.as_bytes()) {
            return u8::try_from(n).ok().map(Protocol::from_iana);
        }
        if s.eq_ignore_ascii_case("tcp") {
            Some(Protocol::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Some(Protocol::Udp)
        } else if s.eq_ignore_ascii_case("icmp") {
            Some(Protocol::Icmp)
        } else if s.eq_ignore_ascii_case("ipv6-icmp") || s.eq_ignore_ascii_case("icmpv6") {
            Some(Protocol::Icmpv6)
        } else {
            None
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_str(&self.iana().to_string()),
        }
    }
}

/// The four counters of v2/VNet tuples. `None` when the field is empty (begin
/// and deny tuples) or absent (v1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub packets_src_to_dst: Option<u64>,
    pub bytes_src_to_dst: Option<u64>,
    pub packets_dst_to_src: Option<u64>,
    pub bytes_dst_to_src: Option<u64>,
}

/// One decoded tuple. The record-level context (rule, MAC, resource ids,
/// record index, format, version) is in [`super::FlowContext`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FlowTuple<'a> {
    /// Start of the flow (or of the reporting interval), epoch microseconds.
    pub time_micros: i64,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub protocol: Option<Protocol>,
    pub direction: Option<Direction>,
    pub decision: Option<Decision>,
    pub state: Option<FlowState>,
    /// VNet flow logs: `X`, `NX`, `NX_HW_NOT_SUPPORTED`, ...
    pub encryption: Option<&'a str>,
    pub counters: Counters,
    /// Position of the tuple within its record, counting every tuple of the
    /// record in document order from 0 (good or bad).
    pub tuple_index: u32,
}

/// Why a tuple string could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TupleError(pub String);

impl std::fmt::Display for TupleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const MAX_FIELDS: usize = 16;

fn split_fields(s: &str) -> ([&str; MAX_FIELDS], usize) {
    let mut out = [""; MAX_FIELDS];
    let mut n = 0usize;
    let bytes = s.as_bytes();
    let mut start = 0usize;
    for i in memchr::memchr_iter(b',', bytes) {
        if n < MAX_FIELDS {
            // Commas are ASCII, so these are char boundaries.
            out[n] = &s[start..i];
        }
        n += 1;
        start = i + 1;
    }
    if n < MAX_FIELDS {
        out[n] = &s[start..];
    }
    n += 1;
    (out, n)
}

fn bad(field: usize, name: &str, value: &str) -> TupleError {
    let mut v: String = value.chars().take(64).collect();
    if v.len() < value.len() {
        v.push('…');
    }
    TupleError(format!("field {field} ({name}): invalid value {v:?}"))
}

fn time_field(f: &str) -> Result<i64, TupleError> {
    parse_u64(f.as_bytes())
        .and_then(epoch_to_micros)
        .ok_or_else(|| bad(0, "time", f))
}

fn ip_field(f: &str, i: usize, name: &str) -> Result<IpAddr, TupleError> {
    parse_ip(f).ok_or_else(|| bad(i, name, f))
}

fn port_field(f: &str, i: usize, name: &str) -> Result<Option<u16>, TupleError> {
    if f.is_empty() {
        return Ok(None);
    }
    match parse_u64(f.as_bytes()) {
        Some(n) if n <= u16::MAX as u64 => Ok(Some(n as u16)),
        _ => Err(bad(i, name, f)),
    }
}

fn counter_field(f: &str, i: usize, name: &str) -> Result<Option<u64>, TupleError> {
    if f.is_empty() {
        return Ok(None);
    }
    parse_u64(f.as_bytes())
        .map(Some)
        .ok_or_else(|| bad(i, name, f))
}

fn direction_field(f: &str) -> Result<Direction, TupleError> {
    match f {
        "I" => Ok(Direction::Inbound),
        "O" => Ok(Direction::Outbound),
        _ => Err(bad(6, "direction", f)),
    }
}

fn protocol_field(f: &str) -> Result<Protocol, TupleError> {
    Protocol::parse(f).ok_or_else(|| bad(5, "protocol", f))
}

fn counters(f: &[&str; MAX_FIELDS], n: usize) -> Result<Counters, TupleError> {
    let get = |i: usize, name: &str| -> Result<Option<u64>, TupleError> {
        if i < n {
            counter_field(f[i], i, name)
        } else {
            Ok(None)
        }
    };
    Ok(Counters {
        packets_src_to_dst: get(9, "packets src->dst")?,
        bytes_src_to_dst: get(10, "bytes src->dst")?,
        packets_dst_to_src: get(11, "packets dst->src")?,
        bytes_dst_to_src: get(12, "bytes dst->src")?,
    })
}

fn too_few(n: usize) -> TupleError {
    TupleError(format!(
        "expected 8 (v1) or 13 (v2/VNet) comma-separated fields, got {n}"
    ))
}

/// Decodes an NSG flow-log tuple (version 1 or 2).
pub fn parse_nsg_tuple(s: &str, tuple_index: u32) -> Result<FlowTuple<'_>, TupleError> {
    let (f, n) = split_fields(s);
    if n < 8 {
        return Err(too_few(n));
    }
    let decision = match f[7] {
        "A" => Decision::Allow,
        "D" => Decision::Deny,
        other => return Err(bad(7, "decision", other)),
    };
    let state = if n > 8 {
        match f[8] {
            "" => None,
            "B" => Some(FlowState::Begin),
            "C" => Some(FlowState::Continue),
            "E" => Some(FlowState::End),
            "D" => Some(FlowState::Deny),
            other => return Err(bad(8, "flow state", other)),
        }
    } else {
        None
    };
    Ok(FlowTuple {
        time_micros: time_field(f[0])?,
        src_ip: ip_field(f[1], 1, "source IP")?,
        dst_ip: ip_field(f[2], 2, "destination IP")?,
        src_port: port_field(f[3], 3, "source port")?,
        dst_port: port_field(f[4], 4, "destination port")?,
        protocol: Some(protocol_field(f[5])?),
        direction: Some(direction_field(f[6])?),
        decision: Some(decision),
        state,
        encryption: None,
        counters: counters(&f, n)?,
        tuple_index,
    })
}

/// Decodes a VNet flow-log tuple (version 4).
pub fn parse_vnet_tuple(s: &str, tuple_index: u32) -> Result<FlowTuple<'_>, TupleError> {
    let (f, n) = split_fields(s);
    if n < 8 {
        return Err(too_few(n));
    }
    let (state, decision) = match f[7] {
        "B" => (FlowState::Begin, Decision::Allow),
        "C" => (FlowState::Continue, Decision::Allow),
        "E" => (FlowState::End, Decision::Allow),
        "D" => (FlowState::Deny, Decision::Deny),
        other => return Err(bad(7, "flow state", other)),
    };
    let encryption = if n > 8 && !f[8].is_empty() {
        Some(f[8])
    } else {
        None
    };
    Ok(FlowTuple {
        time_micros: time_field(f[0])?,
        src_ip: ip_field(f[1], 1, "source IP")?,
        dst_ip: ip_field(f[2], 2, "destination IP")?,
        src_port: port_field(f[3], 3, "source port")?,
        dst_port: port_field(f[4], 4, "destination port")?,
        protocol: Some(protocol_field(f[5])?),
        direction: Some(direction_field(f[6])?),
        decision: Some(decision),
        state: Some(state),
        encryption,
        counters: counters(&f, n)?,
        tuple_index,
    })
}

/// Decimal digits only, no sign, at most 20 digits, no overflow.
#[inline]
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut acc: u64 = 0;
    if s.len() < 20 {
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            acc = acc * 10 + d as u64;
        }
        Some(acc)
    } else {
        for &b in s {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                return None;
            }
            acc = acc.checked_mul(10)?.checked_add(d as u64)?;
        }
        Some(acc)
    }
}

/// The latest instant the writer can spell in RFC 3339 (9999-12-31T23:59:59Z).
pub(crate) const MAX_EPOCH_SECS: i64 = 253_402_300_799;

/// An epoch timestamp of unknown unit to microseconds, by magnitude: below
/// 10^11 it is seconds (up to year 5138), below 10^14 milliseconds (from 1973),
/// below 10^17 microseconds, else nanoseconds. `None` past year 9999.
pub fn epoch_to_micros(v: u64) -> Option<i64> {
    let micros: u64 = if v < 100_000_000_000 {
        v.checked_mul(1_000_000)?
    } else if v < 100_000_000_000_000 {
        v.checked_mul(1_000)?
    } else if v < 100_000_000_000_000_000 {
        v
    } else {
        v / 1_000
    };
    let m = i64::try_from(micros).ok()?;
    if m / 1_000_000 > MAX_EPOCH_SECS {
        return None;
    }
    Some(m)
}

/// Parses an IP address: a fast path for dotted-quad IPv4, the standard
/// parser for IPv6.
#[inline]
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let b = s.as_bytes();
    if b.len() <= 15 && !b.contains(&b':') {
        return parse_ipv4(b).map(IpAddr::V4);
    }
    parse_ipv6_hex(b)
        .or_else(|| s.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The common IPv6 forms, fast: hex groups of one to four digits, eight of
/// them or at most seven around one `::`. `None` for anything else (an
/// embedded IPv4 part, a malformed address), which the standard parser
/// then decides; what this accepts, it parses as the standard parser does.
#[inline]
fn parse_ipv6_hex(b: &[u8]) -> Option<Ipv6Addr> {
    if b.len() < 2 || b.len() > 39 {
        return None;
    }
    let mut g = [0u16; 8];
    let mut n = 0usize;
    // Groups before the `::` (when there is one).
    let mut gap: Option<usize> = None;
    let mut i = 0usize;
    if b.starts_with(b"::") {
        gap = Some(0);
        i = 2;
        if i == b.len() {
            return Some(Ipv6Addr::UNSPECIFIED);
        }
    }
    loop {
        // One group.
        let start = i;
        let mut v: u16 = 0;
        while i < b.len() && i - start < 4 {
            let d = match b[i] {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'a'..=b'f' => c - b'a' + 10,
                c @ b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            v = v << 4 | d as u16;
            i += 1;
        }
        if i == start || n == 8 {
            return None;
        }
        g[n] = v;
        n += 1;
        if i == b.len() {
            break;
        }
        if b[i] != b':' {
            return None;
        }
        i += 1;
        if b.get(i) == Some(&b':') {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            i += 1;
            if i == b.len() {
                break;
            }
        } else if i == b.len() {
            return None;
        }
    }
    match gap {
        None if n == 8 => Some(Ipv6Addr::from(g)),
        Some(at) if n <= 7 => {
            let mut full = [0u16; 8];
            full[..at].copy_from_slice(&g[..at]);
            full[8 - (n - at)..].copy_from_slice(&g[at..n]);
            Some(Ipv6Addr::from(full))
        }
        _ => None,
    }
}

/// Dotted quad, each octet 0-255 without leading zeros (as the standard
/// parser requires).
#[inline]
fn parse_ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    let mut oct = [0u8; 4];
    let mut i = 0usize;
    for (k, o) in oct.iter_mut().enumerate() {
        if k > 0 {
            if b.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let start = i;
        let mut v: u32 = 0;
        while i < b.len() && i - start < 3 {
            let d = b[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v * 10 + d as u32;
            i += 1;
        }
        let len = i - start;
        if len == 0 || v > 255 || (len > 1 && b[start] == b'0') {
            return None;
        }
        *o = v as u8;
    }
    if i != b.len() {
        return None;
    }
    Some(Ipv4Addr::from(oct))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes `micros` as RFC 3339 UTC: `2018-11-13T12:00:02Z`, with `.mmm` or
/// `.uuuuuu` when the value has a fraction. Years outside 0000-9999 are
/// clamped by the parsers before they get here.
pub(crate) fn write_rfc3339(out: &mut Vec<u8>, micros: i64) {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let mut buf = [0u8; 19];
    format_secs(&mut buf, secs);
    out.extend_from_slice(&buf);
    write_frac(out, frac);
}

pub(crate) fn write_frac(out: &mut Vec<u8>, frac: u32) {
    if frac == 0 {
        out.push(b'Z');
    } else if frac.is_multiple_of(1000) {
        let ms = frac / 1000;
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
    } else {
        let mut b = [b'.', 0, 0, 0, 0, 0, 0, b'Z'];
        let mut v = frac;
        for i in (1..7).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&b);
    }
}

/// `YYYY-MM-DDTHH:MM:SS` for epoch seconds.
pub(crate) fn format_secs(buf: &mut [u8; 19], secs: i64) {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    let y = y.clamp(0, 9999) as u32;
    let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
    buf[0] = b'0' + (y / 1000) as u8;
    buf[1] = b'0' + (y / 100 % 10) as u8;
    buf[2] = b'0' + (y / 10 % 10) as u8;
    buf[3] = b'0' + (y % 10) as u8;
    buf[4] = b'-';
    buf[5..7].copy_from_slice(&two(m));
    buf[7] = b'-';
    buf[8..10].copy_from_slice(&two(d));
    buf[10] = b'T';
    buf[11..13].copy_from_slice(&two(sod / 3600));
    buf[13] = b':';
    buf[14..16].copy_from_slice(&two(sod / 60 % 60));
    buf[16] = b':';
    buf[17..19].copy_from_slice(&two(sod % 60));
}

/// RFC 3339 as a `String` (for tests and the summary).
pub fn rfc3339(micros: i64) -> String {
    let mut v = Vec::with_capacity(32);
    write_rfc3339(&mut v, micros);
    String::from_utf8(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The IPv6 fast path agrees with the standard parser on every
        /// string: addresses as written (zero runs, upper case) and strings
        /// near them (characters dropped, doubled or replaced).
        #[test]
        fn ip_parse_agrees_with_std(
            groups in proptest::collection::vec(
                proptest::prop_oneof![3 => proptest::strategy::Just(0u16), 1 => proptest::num::u16::ANY],
                8,
            ),
            upper in proptest::bool::ANY,
            edits in proptest::collection::vec((proptest::num::usize::ANY, 0u8..3, 0usize..8), 0..3),
        ) {
            let g: [u16; 8] = groups.try_into().unwrap();
            let mut text = Ipv6Addr::from(g).to_string();
            if upper {
                text = text.to_ascii_uppercase();
            }
            let mut b = text.into_bytes();
            for (at, op, c) in edits {
                let at = at % (b.len() + 1);
                let ch = b":0aF.g1"[c % 7];
                match op {
                    0 if at < b.len() => { b.remove(at); }
                    1 => b.insert(at, ch),
                    _ if at < b.len() => b[at] = ch,
                    _ => {}
                }
            }
            let s = String::from_utf8(b).unwrap();
            proptest::prop_assert_eq!(parse_ip(&s), s.parse::<IpAddr>().ok(), "{}", s);
        }
    }

    #[test]
    fn ipv6_forms() {
        for s in [
            "::",
            "::1",
            "1::",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8",
            "FD5E:1A2B:1:16::117",
            "fd5e::1a2b:0:0:1",
            "::ffff:10.0.0.1",
            "1::2::3",
            ":::",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::8",
            "12345::",
            "1:",
            ":1",
            "1:2:3:4:5:6:7",
        ] {
            assert_eq!(parse_ip(s), s.parse::<IpAddr>().ok(), "{s}");
        }
    }

    #[test]
    fn v2_begin_tuple_has_no_counters() {
        let t = parse_nsg_tuple(
            "1542110402,94.102.49.190,10.5.16.4,28746,443,U,I,D,B,,,,",
            0,
        )
        .unwrap();
        assert_eq!(t.time_micros, 1_542_110_402_000_000);
        assert_eq!(t.src_ip, "94.102.49.190".parse::<IpAddr>().unwrap());
        assert_eq!(t.dst_port, Some(443));
        assert_eq!(t.protocol, Some(Protocol::Udp));
        assert_eq!(t.direction, Some(Direction::Inbound));
        assert_eq!(t.decision, Some(Decision::Deny));
        assert_eq!(t.state, Some(FlowState::Begin));
        assert_eq!(t.counters, Counters::default());
    }

    #[test]
    fn v2_end_tuple_counters() {
        let t = parse_nsg_tuple(
            "1542110379,10.5.16.4,13.67.143.117,59932,443,T,O,A,E,1,66,1,66",
            3,
        )
        .unwrap();
        assert_eq!(t.counters.packets_src_to_dst, Some(1));
        assert_eq!(t.counters.bytes_src_to_dst, Some(66));
        assert_eq!(t.counters.packets_dst_to_src, Some(1));
        assert_eq!(t.counters.bytes_dst_to_src, Some(66));
        assert_eq!(t.tuple_index, 3);
        assert_eq!(t.state, Some(FlowState::End));
    }

    #[test]
    fn v1_tuple_has_8_fields() {
        let t = parse_nsg_tuple("1487282421,192.0.2.95,10.1.0.4,51529,5358,T,I,D", 0).unwrap();
        assert_eq!(t.state, None);
        assert_eq!(t.decision, Some(Decision::Deny));
        assert_eq!(t.counters, Counters::default());
    }

    #[test]
    fn vnet_tuple_ms_and_deny_state() {
        let t = parse_vnet_tuple(
            "1663145998065,101.33.218.153,10.0.0.6,55188,22,6,I,D,NX,0,0,0,0",
            0,
        )
        .unwrap();
        assert_eq!(t.time_micros, 1_663_145_998_065_000);
        assert_eq!(rfc3339(t.time_micros), "2022-09-14T08:59:58.065Z");
        assert_eq!(t.state, Some(FlowState::Deny));
        assert_eq!(t.decision, Some(Decision::Deny));
        assert_eq!(t.encryption, Some("NX"));
        assert_eq!(t.counters.packets_src_to_dst, Some(0));
        // The docs' example: 10-digit seconds and empty counters.
        let t = parse_vnet_tuple(
            "1493763938,185.170.185.105,10.2.0.4,35370,23,6,I,B,NX,,,,",
            0,
        )
        .unwrap();
        assert_eq!(rfc3339(t.time_micros), "2017-05-02T22:25:38Z");
        assert_eq!(t.counters.bytes_dst_to_src, None);
    }

    #[test]
    fn bad_tuples_say_which_field() {
        let e =
            parse_nsg_tuple("1542110402,94.102.49.999,10.5.16.4,1,2,U,I,D,B,,,,", 0).unwrap_err();
        assert!(e.0.contains("field 1"), "{e}");
        assert!(
            parse_nsg_tuple("garbage", 0)
                .unwrap_err()
                .0
                .contains("got 1")
        );
        assert!(parse_nsg_tuple("1,1.2.3.4,1.2.3.4,1,70000,T,I,A", 0).is_err());
        assert!(parse_nsg_tuple("1,1.2.3.4,1.2.3.4,1,7,X,I,A", 0).is_err());
        assert!(parse_vnet_tuple("1,1.2.3.4,1.2.3.4,1,7,6,I,A,NX", 0).is_err());
        assert!(parse_nsg_tuple("99999999999999999999999,1.2.3.4,1.2.3.4,1,7,T,I,A", 0).is_err());
    }

    #[test]
    fn ipv6_and_ipv4_edge_cases() {
        assert_eq!(parse_ip("2001:db8::1"), "2001:db8::1".parse().ok());
        assert_eq!(parse_ip("10.0.0.4"), "10.0.0.4".parse().ok());
        assert_eq!(parse_ip("255.255.255.255"), "255.255.255.255".parse().ok());
        for s in [
            "10.0.0",
            "10.0.0.256",
            "01.0.0.1",
            "1.2.3.4.",
            "1..2.3",
            "",
            "a.b.c.d",
        ] {
            assert_eq!(parse_ip(s), None, "{s}");
        }
    }

    #[test]
    fn times_format() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_000_001), "1970-01-01T00:00:01.000001Z");
        assert_eq!(epoch_to_micros(1_542_110_402), Some(1_542_110_402_000_000));
        assert_eq!(
            epoch_to_micros(1_663_146_003_599),
            Some(1_663_146_003_599_000)
        );
        assert_eq!(
            epoch_to_micros(1_663_146_003_599_123),
            Some(1_663_146_003_599_123)
        );
        assert_eq!(
            epoch_to_micros(1_663_146_003_599_123_456),
            Some(1_663_146_003_599_123)
        );
        assert_eq!(
            epoch_to_micros(99_999_999_999),
            Some(99_999_999_999_000_000)
        );
        assert_eq!(rfc3339(MAX_EPOCH_SECS * 1_000_000), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn protocols() {
        assert_eq!(Protocol::parse("T"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("17"), Some(Protocol::Udp));
        assert_eq!(Protocol::parse("1"), Some(Protocol::Icmp));
        assert_eq!(Protocol::parse("47"), Some(Protocol::Other(47)));
        assert_eq!(Protocol::parse("TCP"), Some(Protocol::Tcp));
        assert_eq!(Protocol::parse("300"), None);
        assert_eq!(Protocol::parse("X"), None);
    }
}
