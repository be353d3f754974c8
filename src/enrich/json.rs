//! JSON written by hand into a reused buffer, for the enriched output's
//! hot path: strings escaped through a lookup table, integers by itoa, IP
//! addresses without going through `Display`, and keys with their commas.
//! serde_json writes into a `Write` through its formatter for every value;
//! this is the part of that the output needs, without the indirection.

use std::io::Write as _;
use std::net::IpAddr;

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
pub(super) fn write_str(out: &mut Vec<u8>, s: &str) {
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
pub(super) fn write_plain(out: &mut Vec<u8>, s: &'static str) {
    debug_assert!(!s.bytes().any(|b| ESCAPE[b as usize] != 0));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[inline]
pub(super) fn write_u64(out: &mut Vec<u8>, v: u64) {
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(v).as_bytes());
}

/// `"1.2.3.4"` (quotes included).
#[inline]
pub(super) fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
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
pub(super) fn write_ipv6(out: &mut Vec<u8>, v6: std::net::Ipv6Addr) {
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
pub(super) fn key(out: &mut Vec<u8>, first: &mut bool, k: &[u8]) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k);
    out.extend_from_slice(b"\":");
}

pub(super) fn opt_str(out: &mut Vec<u8>, first: &mut bool, k: &[u8], v: Option<&str>) {
    if let Some(v) = v {
        key(out, first, k);
        write_str(out, v);
    }
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
