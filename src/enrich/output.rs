//! The NDJSON writer: one line per tuple in the schema documented in
//! [`super`], written by hand into a reused buffer (itoa for numbers, a
//! lookup table for string escapes, the timestamp's date part cached per
//! second, each flow group's shared `azure.flowlog` fields rendered once, and
//! each NIC and VM an answer names written from its shared copy).
//! Error and summary lines are rare and go through serde.

use std::net::IpAddr;

use serde_json::value::RawValue;

use super::json::{key, opt_str, write_ip, write_plain, write_str, write_u64};
use super::{EndAttribution, NicInfo, Summary, VmInfo};
use crate::azure::flowlog::tuple::{self, FlowTuple};
use crate::azure::flowlog::{ErrorItem, FlowContext};

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
fn render_vm(out: &mut Vec<u8>, v: &VmInfo) {
    out.extend_from_slice(b",\"vm\":{\"id\":");
    write_str(out, &v.id);
    out.extend_from_slice(b",\"name\":");
    write_str(out, &v.name);
    let mut first = false;
    opt_str(
        out,
        &mut first,
        b"resource_group",
        v.resource_group.as_deref(),
    );
    opt_str(out, &mut first, b"subscription", Some(&v.subscription));
    out.push(b'}');
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

/// `{"nic":..,"vnet":..}` of a candidate.
fn render_candidate(out: &mut Vec<u8>, n: &NicInfo) {
    out.extend_from_slice(b"{\"nic\":");
    write_str(out, &n.id);
    let mut first = false;
    opt_str(out, &mut first, b"vnet", n.vnet.as_deref());
    out.push(b'}');
}

fn status_field(out: &mut Vec<u8>, k: &[u8], s: &str) {
    out.extend_from_slice(k);
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn ipwho(out: &mut Vec<u8>, a: &EndAttribution) {
    status_field(out, b"{\"status\":\"", a.status_word());
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
        render_nic(out, n);
    }
    if let Some(s) = a.vm_status {
        status_field(out, b",\"vm_status\":\"", s.as_str());
    }
    if let Some(v) = &a.vm {
        render_vm(out, v);
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
            render_candidate(out, c);
        }
        out.push(b']');
    }
    out.push(b'}');
}
