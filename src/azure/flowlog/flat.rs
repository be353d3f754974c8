//! Flat input: one JSON object, one tuple. `time`, `src_ip` and `dst_ip` are
//! required; ports, protocol, direction and the hints `mac`, `vnet` and
//! `subscription` are read when present (a hint that names nothing is
//! reported and the tuple goes on without it); every other field passes
//! through untouched.

use std::borrow::Cow;
use std::io;

use serde_json::value::RawValue;

use super::record::{RecordDecoder, clip};
use super::shapes::{FlatMap, Str};
use super::tuple::{self, Direction, FlowTuple, Protocol};
use super::{Decoded, ErrorItem, FlatExtras, FlowContext, Format, ScopeHint};
use crate::model::ArmId;

impl RecordDecoder {
    pub(super) fn flat<F>(
        &mut self,
        map: FlatMap<'_>,
        index: u64,
        line: u64,
        f: &mut F,
    ) -> io::Result<()>
    where
        F: FnMut(Decoded<'_>) -> io::Result<()>,
    {
        self.stats.flat_records += 1;
        self.last = Format::Flat;
        self.settled = true;
        self.stats.tuples_in += 1;
        let mut extras = FlatExtras {
            passthrough: Vec::with_capacity(map.0.len()),
        };
        let mut time = None;
        let (mut src, mut dst, mut sport, mut dport, mut proto, mut dir) =
            (None, None, None, None, None, None);
        let (mut mac_raw, mut vnet, mut sub) = (None, None, None);
        let mut problems: Vec<String> = Vec::new();
        fn bad(problems: &mut Vec<String>, k: &str, v: &RawValue, what: &str) {
            problems.push(format!("{k}: invalid {what} {}", clip(v.get())));
        }
        // Required fields given, valid or not (an invalid one is reported as
        // such, not also as missing).
        let mut given = [false; 3];
        for (k, v) in map.0 {
            let text = scalar_text(v);
            if let Some(i) = ["time", "src_ip", "dst_ip"].iter().position(|n| *n == k) {
                given[i] = true;
            }
            match k.as_ref() {
                "time" => match text
                    .as_deref()
                    .and_then(|t| parse_time(t, v.get().starts_with('"')))
                {
                    Some(t) => time = Some(t),
                    None => bad(
                        &mut problems,
                        &k,
                        v,
                        "time (RFC 3339, ISO 8601 taken as UTC, or epoch seconds/ms/µs)",
                    ),
                },
                // An IPv4-mapped address (as some tools log IPv4 peers) is
                // its IPv4 address.
                "src_ip" | "dst_ip" => match text
                    .as_deref()
                    .and_then(tuple::parse_ip)
                    .map(|ip| ip.to_canonical())
                {
                    Some(ip) if k == "src_ip" => src = Some(ip),
                    Some(ip) => dst = Some(ip),
                    None => bad(&mut problems, &k, v, "IP address"),
                },
                "src_port" | "dst_port" => {
                    let p = match text.as_deref() {
                        None => None,
                        Some(t) => match tuple::parse_u64(t.as_bytes()) {
                            Some(n) if n <= u16::MAX as u64 => Some(n as u16),
                            _ => {
                                bad(&mut problems, &k, v, "port");
                                None
                            }
                        },
                    };
                    if k == "src_port" {
                        sport = p
                    } else {
                        dport = p
                    }
                }
                "protocol" => {
                    if let Some(t) = text.as_deref() {
                        match Protocol::parse(t) {
                            Some(p) => proto = Some(p),
                            None => bad(&mut problems, &k, v, "protocol"),
                        }
                    }
                }
                "direction" => {
                    if let Some(t) = text.as_deref() {
                        match parse_direction(t) {
                            Some(d) => dir = Some(d),
                            None => bad(&mut problems, &k, v, "direction (inbound/outbound, I/O)"),
                        }
                    }
                }
                "mac" => mac_raw = text.map(|t| Str(Cow::Owned(t.into_owned()))),
                "vnet" => vnet = text.map(|t| t.to_ascii_lowercase()),
                "subscription" => sub = text.map(|t| t.to_ascii_lowercase()),
                _ => extras.passthrough.push((k, v)),
            }
        }
        let missing: Vec<&str> = ["time", "src_ip", "dst_ip"]
            .into_iter()
            .zip(given)
            .filter(|(_, given)| !given)
            .map(|(n, _)| n)
            .collect();
        if !problems.is_empty() || !missing.is_empty() {
            if !missing.is_empty() {
                problems.push(format!("missing {}", missing.join(", ")));
            }
            self.stats.tuples_rejected += 1;
            return self.reject(
                index,
                line,
                format!("flat record: {}", problems.join("; ")),
                f,
            );
        }
        let mac = self.mac(mac_raw.as_ref(), index, line, &|| "mac".to_string(), f)?;
        // A hint that names no VNet or subscription is reported, as an
        // invalid MAC is, and the tuple attributed without it.
        let vnet_key = vnet.as_ref().and_then(|v| {
            ArmId::parse(v)
                .ok()
                .and_then(|a| a.truncate_after("virtualNetworks"))
                .map(|a| a.key().to_string())
        });
        let sub_key = sub.as_ref().and_then(|s| {
            let s = match ArmId::parse(s) {
                Ok(a) => a.subscription(),
                Err(_) => crate::model::normalize_subscription(s),
            };
            (!s.is_empty() && !s.contains('/')).then_some(s)
        });
        for (hint, given, usable, what) in [
            (
                "vnet",
                &vnet,
                vnet_key.is_some(),
                "a VNet (or subnet) resource id",
            ),
            ("subscription", &sub, sub_key.is_some(), "a subscription id"),
        ] {
            if let (Some(raw), false) = (given, usable) {
                f(Decoded::Error(ErrorItem {
                    record: Some(index),
                    tuple: None,
                    line,
                    path: Some(hint.to_string()),
                    reason: format!(
                        "invalid {hint} hint (expected {what}); the tuple is attributed without it"
                    ),
                    input: Some(clip(raw)),
                }))?;
            }
        }
        let scope = ScopeHint {
            vnet: vnet_key,
            subscription: sub_key,
            ..ScopeHint::default()
        };
        self.group_id += 1;
        let ctx = FlowContext {
            format: Format::Flat,
            version: None,
            record_index: index,
            line,
            record_time: None,
            resource_id: None,
            flow_log_id: None,
            target_id: None,
            acl_id: None,
            rule: None,
            mac: mac.as_ref(),
            scope: if scope == ScopeHint::default() {
                &self.empty_scope
            } else {
                &scope
            },
            flat: Some(&extras),
            group_id: self.group_id,
        };
        let t = FlowTuple {
            time_micros: time.unwrap_or_default(),
            src_ip: src.expect("checked above"),
            dst_ip: dst.expect("checked above"),
            src_port: sport,
            dst_port: dport,
            protocol: proto,
            direction: dir,
            decision: None,
            state: None,
            encryption: None,
            counters: Default::default(),
            tuple_index: 0,
        };
        f(Decoded::Tuple(&ctx, &t))
    }
}

/// A flat value as text: strings unescaped, numbers as written, `null` as
/// `None`; objects and arrays as their JSON.
fn scalar_text(v: &RawValue) -> Option<Cow<'_, str>> {
    let raw = v.get();
    if raw.starts_with('"') {
        serde_json::from_str::<Str>(raw).ok().map(|s| s.0)
    } else if raw == "null" {
        None
    } else {
        Some(Cow::Borrowed(raw))
    }
}

fn parse_direction(t: &str) -> Option<Direction> {
    let l = t.to_ascii_lowercase();
    match l.as_str() {
        "i" | "in" | "inbound" | "ingress" => Some(Direction::Inbound),
        "o" | "out" | "outbound" | "egress" => Some(Direction::Outbound),
        _ => None,
    }
}

/// RFC 3339 text, or an epoch number (seconds, ms, µs or ns by magnitude,
/// fractions allowed) given as a number or a string of digits; or any other
/// shape the service reads times in ([`crate::azure::time::parse_time`]:
/// ISO 8601 without a zone, taken as UTC, as SIEM exports write it; the US
/// dates of portal exports).
fn parse_time(t: &str, quoted: bool) -> Option<i64> {
    if let Some(n) = tuple::parse_u64(t.as_bytes()) {
        return tuple::epoch_to_micros(n);
    }
    if !quoted || t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let v: f64 = t.parse().ok()?;
        if !(v.is_finite() && v >= 0.0) {
            return None;
        }
        let micros = if v < 1e11 {
            v * 1e6
        } else if v < 1e14 {
            v * 1e3
        } else if v < 1e17 {
            v
        } else {
            v / 1e3
        };
        let m = micros.round() as i64;
        return (m / 1_000_000 <= tuple::MAX_EPOCH_SECS).then_some(m);
    }
    let m = match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(dt) => dt.timestamp_micros(),
        Err(_) => crate::azure::time::parse_time(t).ok()?.timestamp_micros(),
    };
    (0..=tuple::MAX_EPOCH_SECS * 1_000_000 + 999_999)
        .contains(&m)
        .then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_flat_form() {
        assert_eq!(parse_time("1700000000", false), Some(1_700_000_000_000_000));
        assert_eq!(
            parse_time("1700000000.5", false),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(
            parse_time("2018-11-13T12:00:35.3899262Z", true),
            Some(1_542_110_435_389_926)
        );
        // ISO 8601 without a zone (UTC), as SIEM exports write it, and a
        // portal export's US date: the shapes the lookup API reads too.
        assert_eq!(
            parse_time("2018-11-13 12:00:35.389", true),
            Some(1_542_110_435_389_000)
        );
        assert_eq!(
            parse_time("2018-11-13T12:00:35", true),
            Some(1_542_110_435_000_000)
        );
        assert_eq!(
            parse_time("11/13/2018 12:00:35 PM", true),
            Some(1_542_110_435_000_000)
        );
        assert_eq!(parse_time("yesterday", true), None);
        assert_eq!(parse_time("13/11/2018 12:00:35", true), None);
        assert_eq!(parse_time("-5", false), None);
    }
}
