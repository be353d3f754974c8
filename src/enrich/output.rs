//! The NDJSON writer: one line per tuple in the schema documented in
//! [`super`], written by hand into a reused buffer (itoa for numbers, a
//! lookup table for string escapes, the timestamp's date part cached per
//! second, each flow group's shared `azure.flowlog` fields rendered once, and
//! each NIC's part of an answer rendered once into its [`NicInfo`]).
//! Error and summary lines are rare and go through serde.

use std::io::Write as _;
use std::net::IpAddr;

use serde_json::value::RawValue;

use super::{EndAttribution, NicInfo, Status, Summary, VmInfo};
use crate::azure::flowlog::tuple::{self, FlowTuple};
use crate::azure::flowlog::{ErrorItem, FlowContext};

/// Escape table: 0 = as is; otherwise the character after the backslash
/// (`u` = `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `s` as a JSON string.
#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Branch-free over the whole string, so it vectorises; ids and names
    // practically never need escaping.
    let dirty = bytes.iter().fold(false, |acc, &b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !dirty {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let e = ESCAPE[b as usize];
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if e == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 15) as usize],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', e]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Writes `s`, one of ipwho's own names that need no escaping, as a JSON string.
#[inline]
fn write_plain(out: &mut Vec<u8>, s: &'static str) {
    debug_assert!(!s.bytes().any(|b| ESCAPE[b as usize] != 0));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[inline]
fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// `"1.2.3.4"` (quotes included).
#[inline]
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut buf = [0u8; 17];
            let mut n = 0;
            buf[n] = b'"';
            n += 1;
            for (k, o) in v4.octets().into_iter().enumerate() {
                if k > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + o / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
            buf[n] = b'"';
            n += 1;
            out.extend_from_slice(&buf[..n]);
        }
        IpAddr::V6(v6) => {
            out.push(b'"');
            write_ipv6(out, v6);
            out.push(b'"');
        }
    }
}

/// An IPv6 address as `Display` writes it (RFC 5952: lower-case hex, no
/// leading zeros, the longest run of two or more zero groups, the first of
/// equals, as `::`; IPv4-mapped addresses as `::ffff:a.b.c.d`).
fn write_ipv6(out: &mut Vec<u8>, v6: std::net::Ipv6Addr) {
    if v6.to_ipv4_mapped().is_some() {
        let _ = write!(out, "{v6}");
        return;
    }
    let g = v6.segments();
    // The longest run of zero groups (first on ties).
    let (mut best, mut best_len, mut run, mut run_len) = (0usize, 0usize, 0usize, 0usize);
    for (i, &x) in g.iter().enumerate() {
        if x == 0 {
            if run_len == 0 {
                run = i;
            }
            run_len += 1;
            if run_len > best_len {
                best = run;
                best_len = run_len;
            }
        } else {
            run_len = 0;
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let group = |out: &mut Vec<u8>, x: u16| {
        let mut shift = 12;
        while shift > 0 && (x >> shift) == 0 {
            shift -= 4;
        }
        loop {
            out.push(HEX[((x >> shift) & 15) as usize]);
            if shift == 0 {
                break;
            }
            shift -= 4;
        }
    };
    let groups = |out: &mut Vec<u8>, gs: &[u16]| {
        for (i, &x) in gs.iter().enumerate() {
            if i > 0 {
                out.push(b':');
            }
            group(out, x);
        }
    };
    if best_len > 1 {
        groups(out, &g[..best]);
        out.extend_from_slice(b"::");
        groups(out, &g[best + best_len..]);
    } else {
        groups(out, &g);
    }
}

/// Writes `,"key":` (or `"key":` for the first field of an object).
#[inline]
fn key(out: &mut Vec<u8>, first: &mut bool, k: &[u8]) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k);
    out.extend_from_slice(b"\":");
}

fn opt_str(out: &mut Vec<u8>, first: &mut bool, k: &[u8], v: Option<&str>) {
    if let Some(v) = v {
        key(out, first, k);
        write_str(out, v);
    }
}

/// The top-level keys a tuple line uses; flat input keys that collide go
/// under `ipwho.input`.
pub(crate) const TOP_KEYS: &[&str] = &[
    "@timestamp",
    "event",
    "network",
    "source",
    "destination",
    "azure",
];

#[derive(Default)]
pub(crate) struct LineWriter {
    ts_secs: i64,
    ts_date: [u8; 19],
    ts_valid: bool,
    group_id: u64,
    group_valid: bool,
    group_tail: Vec<u8>,
}

impl LineWriter {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn timestamp(&mut self, out: &mut Vec<u8>, micros: i64) {
        let secs = micros.div_euclid(1_000_000);
        if !self.ts_valid || secs != self.ts_secs {
            if self.ts_valid && secs.div_euclid(86_400) == self.ts_secs.div_euclid(86_400) {
                // Same day: only the time of day changes.
                let sod = secs.rem_euclid(86_400) as u32;
                let two = |v: u32| [b'0' + (v / 10) as u8, b'0' + (v % 10) as u8];
                self.ts_date[11..13].copy_from_slice(&two(sod / 3600));
                self.ts_date[14..16].copy_from_slice(&two(sod / 60 % 60));
                self.ts_date[17..19].copy_from_slice(&two(sod % 60));
            } else {
                tuple::format_secs(&mut self.ts_date, secs);
            }
            self.ts_secs = secs;
            self.ts_valid = true;
        }
        out.push(b'"');
        out.extend_from_slice(&self.ts_date);
        tuple::write_frac(out, micros.rem_euclid(1_000_000) as u32);
        out.push(b'"');
    }

    /// The group-constant end of `azure.flowlog`, rendered once per group.
    fn group_tail(&mut self, ctx: &FlowContext<'_>) {
        if self.group_valid && self.group_id == ctx.group_id {
            return;
        }
        let t = &mut self.group_tail;
        t.clear();
        t.extend_from_slice(b"\"format\":\"");
        t.extend_from_slice(ctx.format.as_str().as_bytes());
        t.push(b'"');
        let mut first = false;
        if let Some(v) = ctx.version {
            key(t, &mut first, b"version");
            write_u64(t, v as u64);
        }
        opt_str(t, &mut first, b"rule", ctx.rule);
        opt_str(t, &mut first, b"mac", ctx.mac.map(|m| m.as_str()));
        opt_str(t, &mut first, b"nsg_id", ctx.resource_id);
        opt_str(t, &mut first, b"flow_log_id", ctx.flow_log_id);
        opt_str(t, &mut first, b"target_id", ctx.target_id);
        opt_str(t, &mut first, b"acl_id", ctx.acl_id);
        self.group_id = ctx.group_id;
        self.group_valid = true;
    }

    /// One tuple line. `ends` is `None` in floor mode.
    pub(crate) fn tuple(
        &mut self,
        out: &mut Vec<u8>,
        ctx: &FlowContext<'_>,
        t: &FlowTuple<'_>,
        ends: Option<(&EndAttribution, &EndAttribution)>,
    ) {
        out.extend_from_slice(b"{\"@timestamp\":");
        self.timestamp(out, t.time_micros);
        if let Some(d) = t.decision {
            out.extend_from_slice(match d {
                tuple::Decision::Allow => {
                    b",\"event\":{\"action\":\"allow\",\"outcome\":\"success\"}"
                }
                tuple::Decision::Deny => {
                    b",\"event\":{\"action\":\"deny\",\"outcome\":\"failure\"}"
                }
            });
        }
        // network
        let c = &t.counters;
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
        };
        let packets = sum(c.packets_src_to_dst, c.packets_dst_to_src);
        let bytes = sum(c.bytes_src_to_dst, c.bytes_dst_to_src);
        if t.protocol.is_some() || t.direction.is_some() || packets.is_some() || bytes.is_some() {
            out.extend_from_slice(b",\"network\":{");
            let mut first = true;
            if let Some(p) = t.protocol {
                key(out, &mut first, b"transport");
                match p.name() {
                    Some(n) => write_plain(out, n),
                    None => {
                        out.push(b'"');
                        write_u64(out, p.iana() as u64);
                        out.push(b'"');
                    }
                }
                key(out, &mut first, b"iana_number");
                out.push(b'"');
                write_u64(out, p.iana() as u64);
                out.push(b'"');
            }
            if let Some(d) = t.direction {
                key(out, &mut first, b"direction");
                write_plain(out, d.as_str());
            }
            if let Some(p) = packets {
                key(out, &mut first, b"packets");
                write_u64(out, p);
            }
            if let Some(b) = bytes {
                key(out, &mut first, b"bytes");
                write_u64(out, b);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b",\"source\":");
        end(
            out,
            t.src_ip,
            t.src_port,
            c.packets_src_to_dst,
            c.bytes_src_to_dst,
            ends.map(|e| e.0),
        );
        out.extend_from_slice(b",\"destination\":");
        end(
            out,
            t.dst_ip,
            t.dst_port,
            c.packets_dst_to_src,
            c.bytes_dst_to_src,
            ends.map(|e| e.1),
        );
        // azure.flowlog
        out.extend_from_slice(b",\"azure\":{\"flowlog\":{");
        if let Some(s) = t.state {
            out.extend_from_slice(b"\"state\":");
            write_plain(out, s.as_str());
            out.push(b',');
        }
        if let Some(e) = t.encryption {
            out.extend_from_slice(b"\"encryption\":");
            write_str(out, e);
            out.push(b',');
        }
        out.extend_from_slice(b"\"record\":");
        write_u64(out, ctx.record_index);
        out.extend_from_slice(b",\"tuple\":");
        write_u64(out, t.tuple_index as u64);
        out.push(b',');
        self.group_tail(ctx);
        out.extend_from_slice(&self.group_tail);
        out.extend_from_slice(b"}}");
        if let Some(flat) = ctx.flat {
            passthrough(out, &flat.passthrough);
        }
        out.extend_from_slice(b"}\n");
    }

    pub(crate) fn error(&mut self, out: &mut Vec<u8>, e: &ErrorItem) {
        out.extend_from_slice(b"{\"ipwho.error\":");
        let _ = serde_json::to_writer(&mut *out, e);
        out.extend_from_slice(b"}\n");
    }

    pub(crate) fn summary(&mut self, out: &mut Vec<u8>, s: &Summary) {
        out.extend_from_slice(b"{\"ipwho.summary\":");
        let _ = serde_json::to_writer(&mut *out, s);
        out.extend_from_slice(b"}\n");
    }
}

fn passthrough(out: &mut Vec<u8>, fields: &[(std::borrow::Cow<'_, str>, &RawValue)]) {
    let mut collided = false;
    for (k, v) in fields {
        if TOP_KEYS.contains(&k.as_ref()) {
            collided = true;
            continue;
        }
        out.push(b',');
        write_str(out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    if collided {
        out.extend_from_slice(b",\"ipwho.input\":{");
        let mut first = true;
        for (k, v) in fields
            .iter()
            .filter(|(k, _)| TOP_KEYS.contains(&k.as_ref()))
        {
            if !first {
                out.push(b',');
            }
            first = false;
            write_str(out, k);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
    }
}

/// `{"ip":..,"port":..,"packets":..,"bytes":..,"ipwho":{..}}`
fn end(
    out: &mut Vec<u8>,
    ip: IpAddr,
    port: Option<u16>,
    packets: Option<u64>,
    bytes: Option<u64>,
    a: Option<&EndAttribution>,
) {
    out.extend_from_slice(b"{\"ip\":");
    write_ip(out, ip);
    if let Some(p) = port {
        out.extend_from_slice(b",\"port\":");
        write_u64(out, p as u64);
    }
    if let Some(p) = packets {
        out.extend_from_slice(b",\"packets\":");
        write_u64(out, p);
    }
    if let Some(b) = bytes {
        out.extend_from_slice(b",\"bytes\":");
        write_u64(out, b);
    }
    if let Some(a) = a {
        out.extend_from_slice(b",\"ipwho\":");
        ipwho(out, a);
    }
    out.push(b'}');
}

/// `,"nic":{..},"vnet":".."` of a NIC.
fn render_nic(out: &mut Vec<u8>, n: &NicInfo) {
    out.extend_from_slice(b",\"nic\":{\"id\":");
    write_str(out, &n.id);
    out.extend_from_slice(b",\"name\":");
    write_str(out, &n.name);
    out.push(b'}');
    if let Some(v) = &n.vnet {
        out.extend_from_slice(b",\"vnet\":");
        write_str(out, v);
    }
}

/// `,"vm":{..}` of a VM.
fn render_vm(v: &VmInfo) -> Box<[u8]> {
    let mut out = Vec::new();
    out.extend_from_slice(b",\"vm\":{\"id\":");
    write_str(&mut out, &v.id);
    out.extend_from_slice(b",\"name\":");
    write_str(&mut out, &v.name);
    let mut first = false;
    opt_str(
        &mut out,
        &mut first,
        b"resource_group",
        v.resource_group.as_deref(),
    );
    opt_str(&mut out, &mut first, b"subscription", Some(&v.subscription));
    out.push(b'}');
    out.into()
}

/// `,"evidence":..,"window":{..}`, each when known.
fn render_basis(
    out: &mut Vec<u8>,
    evidence: Option<&str>,
    window: Option<(Option<i64>, Option<i64>)>,
) {
    if let Some(e) = evidence {
        out.extend_from_slice(b",\"evidence\":");
        write_str(out, e);
    }
    if let Some((from, until)) = window {
        out.extend_from_slice(b",\"window\":{");
        let mut first = true;
        for (k, v) in [(&b"from"[..], from), (&b"until"[..], until)] {
            if let Some(v) = v {
                key(out, &mut first, k);
                out.push(b'"');
                tuple::write_rfc3339(out, v.clamp(0, tuple::MAX_EPOCH_SECS * 1_000_000));
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
}

/// `{"nic":..,"vnet":..}` of a candidate (rendered once per NIC).
fn render_candidate(n: &NicInfo) -> Box<[u8]> {
    let mut out = Vec::new();
    out.extend_from_slice(b"{\"nic\":");
    write_str(&mut out, &n.id);
    let mut first = false;
    opt_str(&mut out, &mut first, b"vnet", n.vnet.as_deref());
    out.push(b'}');
    out.into()
}

fn status_field(out: &mut Vec<u8>, k: &[u8], s: Status) {
    out.extend_from_slice(k);
    out.extend_from_slice(s.as_str().as_bytes());
    out.push(b'"');
}

fn ipwho(out: &mut Vec<u8>, a: &EndAttribution) {
    status_field(out, b"{\"status\":\"", a.status);
    out.extend_from_slice(b",\"via\":\"");
    out.extend_from_slice(a.via.as_str().as_bytes());
    out.extend_from_slice(b"\",\"scoped\":\"");
    out.extend_from_slice(a.scoped.as_str().as_bytes());
    out.push(b'"');
    if let Some(h) = a.ip_held {
        out.extend_from_slice(if h {
            b",\"ip_held\":true"
        } else {
            b",\"ip_held\":false"
        });
    }
    if let Some(n) = &a.nic {
        out.extend_from_slice(n.as_named.get_or_init(|| {
            let mut v = Vec::new();
            render_nic(&mut v, n);
            v.into()
        }));
    }
    if let Some(s) = a.vm_status {
        status_field(out, b",\"vm_status\":\"", s);
    }
    if let Some(v) = &a.vm {
        out.extend_from_slice(v.rendered.get_or_init(|| render_vm(v)));
    }
    if a.stale {
        out.extend_from_slice(b",\"stale\":true");
    }
    if let Some(w) = a.watched {
        out.extend_from_slice(if w {
            b",\"watched\":true"
        } else {
            b",\"watched\":false"
        });
    }
    if let Some(s) = &a.searched {
        out.extend_from_slice(b",\"searched\":");
        write_str(out, s);
    }
    render_basis(out, a.evidence.as_deref(), a.window);
    if !a.candidates.is_empty() {
        out.extend_from_slice(b",\"candidates\":[");
        for (i, c) in a.candidates.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(c.as_candidate.get_or_init(|| render_candidate(c)));
        }
        out.push(b']');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_escape_like_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\nt\tc\u{1}",
            "ünï",
            "",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(s).unwrap()
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_string_escapes_like_serde(s in "[a-c\"\\\\\\x00-\\x1f\\x7fé€]{0,40}", pad in 0usize..9) {
            // Shifted so that special characters fall at every place of a word.
            let s = format!("{}{s}", "a".repeat(pad));
            let mut out = Vec::new();
            write_str(&mut out, &s);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn ips_write_like_display() {
        for s in [
            "0.0.0.0",
            "10.5.16.4",
            "255.255.255.255",
            "1.20.100.9",
            "2001:db8::1",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{s}\""));
        }
    }

    proptest::proptest! {
        /// Addresses with runs of zero groups of every length and place.
        #[test]
        fn ipv6_writes_like_display(
            groups in proptest::collection::vec(
                proptest::prop_oneof![
                    3 => proptest::strategy::Just(0u16),
                    1 => 1u16..16,
                    1 => proptest::num::u16::ANY,
                ],
                8,
            ),
            mapped in proptest::bool::weighted(0.05),
        ) {
            let mut g: [u16; 8] = groups.try_into().unwrap();
            if mapped {
                g[..5].fill(0);
                g[5] = 0xffff;
            }
            let ip = std::net::Ipv6Addr::from(g);
            let mut out = Vec::new();
            write_ipv6(&mut out, ip);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }
}
