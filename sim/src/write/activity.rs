//! Activity Log records of NIC writes and deletes, written as Azure
//! delivers them: lost, delayed, duplicated, out of order, by hour.

use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::time::{self, HOUR, MIN, Micros, SEC};
use crate::truth::{Op, World};
use crate::{FeedItem, guid, mix, rng_for, stream};

use super::{ActivityStats, LostEvent};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActRecord<'a> {
    time: String,
    resource_id: &'a str,
    operation_name: &'static str,
    category: &'static str,
    result_type: &'static str,
    result_signature: &'static str,
    duration_ms: u32,
    caller_ip_address: &'a str,
    correlation_id: &'a str,
    identity: Identity<'a>,
    level: &'static str,
    location: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    properties: Option<ActProps<'a>>,
}

#[derive(Serialize)]
struct Identity<'a> {
    authorization: Authorization<'a>,
    claims: Claims<'a>,
}

#[derive(Serialize)]
struct Authorization<'a> {
    scope: &'a str,
    action: &'static str,
    evidence: Evidence<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Evidence<'a> {
    role: &'static str,
    role_assignment_scope: &'a str,
    role_assignment_id: &'a str,
    role_definition_id: &'static str,
    principal_id: &'a str,
    principal_type: &'static str,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'static str,
    appid: &'a str,
    #[serde(rename = "http://schemas.microsoft.com/identity/claims/objectidentifier")]
    oid: &'a str,
    #[serde(rename = "http://schemas.microsoft.com/identity/claims/tenantid")]
    tid: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActProps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_message: Option<&'a str>,
    service_request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requestbody: Option<&'a str>,
    entity: &'a str,
    message: &'static str,
    hierarchy: &'a str,
    event_category: &'static str,
}

const OP_WRITE: &str = "MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE";
const OP_DELETE: &str = "MICROSOFT.NETWORK/NETWORKINTERFACES/DELETE";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Success,
    Failure,
}

struct Rec {
    deliver: Micros,
    seq: u64,
    line: String,
}

pub(super) struct ActivityWriter<'w> {
    world: &'w World,
    rng: ChaCha8Rng,
    recs: Vec<Rec>,
    seq: u64,
    stats: ActivityStats,
    pub(super) lost: Vec<LostEvent>,
    principal: String,
    app: String,
}

impl<'w> ActivityWriter<'w> {
    pub(super) fn new(world: &'w World) -> Self {
        let seed = world.cfg.seed;
        Self {
            world,
            rng: rng_for(seed, &[stream::ACTIVITY]),
            recs: Vec::new(),
            seq: 0,
            stats: ActivityStats::default(),
            lost: Vec::new(),
            principal: guid(seed, &[stream::IDS, 10]),
            app: guid(seed, &[stream::IDS, 11]),
        }
    }

    /// Logs one NIC operation: Start, maybe a failed attempt before it, and
    /// the Success record with the resulting state.
    pub(super) fn operation(
        &mut self,
        nic: u32,
        t: Micros,
        op: Op,
        body: Option<&str>,
        failed_body: Option<String>,
    ) {
        let cfg = &self.world.cfg;
        self.stats.operations += 1;
        let corr = guid(cfg.seed, &[stream::IDS, 20, u64::from(nic), t as u64]);
        if let Some(fb) = failed_body {
            let tf = t - self.uni(10 * SEC, 5 * MIN);
            let corr_f = guid(cfg.seed, &[stream::IDS, 21, u64::from(nic), t as u64]);
            self.record(
                nic,
                tf - 2 * SEC,
                op,
                Phase::Start,
                None,
                Some(&fb),
                &corr_f,
            );
            self.record(nic, tf, op, Phase::Failure, None, Some(&fb), &corr_f);
        }
        if cfg.start_records {
            let ts = t - self.uni(SEC, 8 * SEC);
            let req = if op != Op::Delete && self.rng.random_bool(0.3) {
                body
            } else {
                None
            };
            self.record(nic, ts, op, Phase::Start, None, req, &corr);
        }
        let lost = self.record(nic, t, op, Phase::Success, body, None, &corr);
        if lost {
            self.stats.success_lost += 1;
            self.lost.push(LostEvent { t, nic });
        }
    }

    fn uni(&mut self, lo: Micros, hi: Micros) -> Micros {
        self.rng.random_range(lo..hi)
    }

    /// Builds one record and schedules its delivery; returns whether it was
    /// lost.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        nic: u32,
        t: Micros,
        op: Op,
        phase: Phase,
        response: Option<&str>,
        request: Option<&str>,
        corr: &str,
    ) -> bool {
        let w = self.world;
        let cfg = &w.cfg;
        let n = &w.nics[nic as usize];
        let sub = &w.subs[w.sub_of_nic(nic) as usize];
        let del = op == Op::Delete;
        let (result_type, signature, status) = match (phase, del, op) {
            (Phase::Start, _, _) => ("Start", "Started.", None),
            (Phase::Failure, _, _) => ("Failure", "Failed.Conflict", Some("Conflict")),
            (Phase::Success, true, _) => ("Success", "Succeeded.OK", Some("OK")),
            (Phase::Success, false, Op::Create) => {
                ("Success", "Succeeded.Created", Some("Created"))
            }
            (Phase::Success, false, _) => ("Success", "Succeeded.OK", Some("OK")),
        };
        let service_req = guid(cfg.seed, &[stream::IDS, 22, u64::from(nic), t as u64]);
        let hierarchy = format!("{}/{}", w.tenant, sub.id);
        let scope = format!("/subscriptions/{}", sub.id);
        let caller = format!("203.0.113.{}", 1 + (nic % 250));
        let status_message = (phase == Phase::Failure).then_some(
            r#"{"error":{"code":"PrivateIPAddressInUse","message":"IP configuration ipconfig1 is using the private IP address which is already allocated to resource another NIC."}}"#,
        );
        let props = match (phase, status) {
            (Phase::Start, _) => request.map(|rq| ActProps {
                status_code: None,
                status_message: None,
                service_request_id: &service_req,
                response_body: None,
                requestbody: Some(rq),
                entity: &n.id,
                message: if del {
                    "Microsoft.Network/networkInterfaces/delete"
                } else {
                    "Microsoft.Network/networkInterfaces/write"
                },
                hierarchy: &hierarchy,
                event_category: "Administrative",
            }),
            (_, Some(code)) => Some(ActProps {
                status_code: Some(code),
                status_message,
                service_request_id: &service_req,
                response_body: response,
                requestbody: request,
                entity: &n.id,
                message: if del {
                    "Microsoft.Network/networkInterfaces/delete"
                } else {
                    "Microsoft.Network/networkInterfaces/write"
                },
                hierarchy: &hierarchy,
                event_category: "Administrative",
            }),
            _ => None,
        };
        let upper_id = n.id.to_ascii_uppercase();
        let rec = ActRecord {
            time: time::fmt7(t),
            resource_id: &upper_id,
            operation_name: if del { OP_DELETE } else { OP_WRITE },
            category: "Administrative",
            result_type,
            result_signature: signature,
            duration_ms: (mix(cfg.seed, &[t as u64]) % 4000) as u32,
            caller_ip_address: &caller,
            correlation_id: corr,
            identity: Identity {
                authorization: Authorization {
                    scope: &n.id,
                    action: if del {
                        "Microsoft.Network/networkInterfaces/delete"
                    } else {
                        "Microsoft.Network/networkInterfaces/write"
                    },
                    evidence: Evidence {
                        role: "Contributor",
                        role_assignment_scope: &scope,
                        role_assignment_id: &self.app,
                        role_definition_id: "b24988ac618042a0ab8820f7382dd24c",
                        principal_id: &self.principal,
                        principal_type: "ServicePrincipal",
                    },
                },
                claims: Claims {
                    aud: "https://management.core.windows.net/",
                    appid: &self.app,
                    oid: &self.principal,
                    tid: &w.tenant,
                },
            },
            level: if phase == Phase::Failure {
                "Error"
            } else {
                "Information"
            },
            location: "global",
            properties: props,
        };
        let line = serde_json::to_string(&rec).expect("record JSON");
        if self.rng.random_bool(cfg.event_loss) {
            self.stats.lost += 1;
            return true;
        }
        let d = self.delivery(t);
        if self.rng.random_bool(cfg.event_dup) {
            self.stats.duplicated += 1;
            let d2 = self.delivery(t);
            self.seq += 1;
            self.recs.push(Rec {
                deliver: d2,
                seq: self.seq,
                line: line.clone(),
            });
        }
        self.seq += 1;
        self.recs.push(Rec {
            deliver: d,
            seq: self.seq,
            line,
        });
        match phase {
            Phase::Start => self.stats.start_written += 1,
            Phase::Success => self.stats.success_written += 1,
            Phase::Failure => self.stats.failure_written += 1,
        }
        false
    }

    fn delivery(&mut self, t: Micros) -> Micros {
        let cfg = &self.world.cfg;
        let mut d = t + self.uni(20 * SEC, 4 * MIN);
        let max = i64::from(cfg.event_delay_max_min) * MIN;
        if max > 5 * MIN && self.rng.random_bool(cfg.event_delay_share) {
            self.stats.delayed += 1;
            d += self.uni(5 * MIN, max);
        }
        d
    }

    /// Groups the records by hour of delivery into files, shuffles each file
    /// a little, writes them; returns the feed items.
    pub(super) fn finish(
        mut self,
        out: &Path,
    ) -> anyhow::Result<(Vec<FeedItem>, ActivityStats, Vec<LostEvent>)> {
        let dir = out.join("activity");
        fs::create_dir_all(&dir)?;
        self.recs.sort_by_key(|r| (r.deliver, r.seq));
        let max = self.world.cfg.activity_file_max_records.max(1) as usize;
        let mut feed = Vec::new();
        let mut i = 0;
        while i < self.recs.len() {
            let hour = self.recs[i].deliver.div_euclid(HOUR);
            let mut j = i;
            while j < self.recs.len() && self.recs[j].deliver.div_euclid(HOUR) == hour {
                j += 1;
            }
            for (k, start) in (i..j).step_by(max).enumerate() {
                let end = (start + max).min(j);
                let chunk = &mut self.recs[start..end];
                // Out of order: swap some neighbours.
                for x in 1..chunk.len() {
                    if self.rng.random_bool(0.25) {
                        chunk.swap(x - 1, x);
                    }
                }
                let jsonl = hour % 2 == 1;
                let name = format!(
                    "{}-{k:02}.{}",
                    time::hour_stamp(hour * HOUR),
                    if jsonl { "jsonl" } else { "json" }
                );
                let path = dir.join(&name);
                let f = fs::File::create(&path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let mut w = BufWriter::with_capacity(1 << 20, f);
                let mut bytes = 0u64;
                if jsonl {
                    for r in chunk.iter() {
                        w.write_all(r.line.as_bytes())?;
                        w.write_all(b"\n")?;
                        bytes += r.line.len() as u64 + 1;
                    }
                } else {
                    w.write_all(b"{\"records\":[")?;
                    for (x, r) in chunk.iter().enumerate() {
                        if x > 0 {
                            w.write_all(b",")?;
                        }
                        w.write_all(r.line.as_bytes())?;
                        bytes += r.line.len() as u64 + 1;
                    }
                    w.write_all(b"]}")?;
                    bytes += 14;
                }
                w.flush()?;
                self.stats.files += 1;
                self.stats.bytes += bytes;
                let deliver_at = chunk.iter().map(|r| r.deliver).max().unwrap_or(hour * HOUR);
                feed.push(FeedItem::Activity {
                    file: format!("activity/{name}"),
                    deliver_at,
                });
            }
            i = j;
        }
        Ok((feed, self.stats, self.lost))
    }
}
