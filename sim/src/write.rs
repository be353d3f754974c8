//! What a collector would have seen of the simulated estate.
//!
//! - `snapshots/<n>/page-<k>.json`: the pages of
//!   `GET /subscriptions/{sub}/providers/Microsoft.Network/networkInterfaces`
//!   (`{"value":[NIC...],"nextLink":"..."}`, NICs in ARM casing; scale-set
//!   NICs included, as a collector that also lists scale sets would), and
//!   `snapshots/<n>/meta.json` (`snapshot_id`, `taken_at`, `subscriptions`,
//!   `complete`). One snapshot per subscription every `snapshot_minutes`;
//!   some are never delivered (missing numbers), some lose their last pages
//!   (`complete: false`). The first and last snapshot of each subscription
//!   are always delivered complete.
//! - `activity/<hour>-<k>.json` (`{"records":[...]}`, as Event Hubs deliver)
//!   and `activity/<hour>-<k>.jsonl` (JSON Lines, as storage exports), by
//!   hour of delivery: `MICROSOFT.NETWORK/NETWORKINTERFACES/WRITE` and
//!   `/DELETE` records of VM NICs (none for scale-set NICs), `Success` with
//!   `responseBody` as an escaped JSON string, plus `Start` records (some
//!   with a `requestbody`) and a few `Failure` records that asked for
//!   another IP. A share of records is lost, delayed (written in a later
//!   hour), duplicated, and every file is slightly out of order.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::time::{self, HOUR, MIN, Micros, SEC};
use super::truth::{NicSt, Op, World};
use super::{FeedItem, guid, mix, rng_for, stream};

/// Counts of what was written under `snapshots/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Snapshots the collector took (delivered or not).
    pub taken: u64,
    pub delivered: u64,
    pub complete: u64,
    pub partial: u64,
    pub missed: u64,
    pub pages: u64,
    /// NIC objects written in pages.
    pub nic_observations: u64,
    pub bytes: u64,
    /// Distinct (NIC, IP) pairs seen in delivered snapshots or events: a
    /// lower bound of the claims ipwho will hold.
    pub observed_claims: u64,
}

/// Counts of what was written under `activity/`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActivityStats {
    /// NIC writes and deletes that Azure logged.
    pub operations: u64,
    pub success_written: u64,
    pub start_written: u64,
    pub failure_written: u64,
    /// Records lost (of every result type).
    pub lost: u64,
    pub success_lost: u64,
    pub duplicated: u64,
    pub delayed: u64,
    pub files: u64,
    pub bytes: u64,
}

/// A `Success` record that was never delivered.
#[derive(Clone, Copy, Debug)]
pub struct LostEvent {
    pub t: Micros,
    pub nic: u32,
}

pub struct Written {
    pub feed: Vec<FeedItem>,
    pub snapshots: SnapshotStats,
    pub activity: ActivityStats,
    pub lost: Vec<LostEvent>,
}

// ---------------------------------------------------------------------------
// ARM NIC JSON

#[derive(Serialize)]
struct ArmNic<'a> {
    name: &'a str,
    id: &'a str,
    etag: String,
    #[serde(rename = "type")]
    ty: &'static str,
    location: &'a str,
    properties: NicProps<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NicProps<'a> {
    provisioning_state: &'static str,
    resource_guid: String,
    ip_configurations: Vec<IpConfig>,
    dns_settings: DnsSettings,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac_address: Option<String>,
    enable_accelerated_networking: bool,
    vnet_encryption_supported: bool,
    #[serde(rename = "enableIPForwarding")]
    enable_ip_forwarding: bool,
    disable_tcp_state_tracking: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    primary: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_machine: Option<SubResource<'a>>,
    hosted_workloads: [(); 0],
    tap_configurations: [(); 0],
    nic_type: &'static str,
    auxiliary_mode: &'static str,
    auxiliary_sku: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DnsSettings {
    dns_servers: [(); 0],
    applied_dns_servers: [(); 0],
}

#[derive(Serialize)]
struct SubResource<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct IpConfig {
    name: &'static str,
    id: String,
    etag: String,
    #[serde(rename = "type")]
    ty: &'static str,
    properties: IpConfigProps,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IpConfigProps {
    provisioning_state: &'static str,
    #[serde(rename = "privateIPAddress")]
    private_ip_address: String,
    #[serde(rename = "privateIPAllocationMethod")]
    private_ip_allocation_method: &'static str,
    subnet: OwnedSubResource,
    primary: bool,
    #[serde(rename = "privateIPAddressVersion")]
    private_ip_address_version: &'static str,
}

#[derive(Serialize)]
struct OwnedSubResource {
    id: String,
}

/// The NIC `nic` in state `st` as ARM returns it (compact JSON).
pub fn nic_json(world: &World, nic: u32, st: &NicSt) -> String {
    let n = &world.nics[nic as usize];
    let sn = &world.subnets[n.subnet as usize];
    let sub = &world.subs[world.vnets[sn.vnet as usize].sub as usize];
    let seed = world.cfg.seed;
    let etag = format!(
        "W/\"{}\"",
        guid(
            seed,
            &[stream::IDS, 2, u64::from(nic), u64::from(st.version)]
        )
    );
    let mut cfgs = vec![IpConfig {
        name: "ipconfig1",
        id: format!("{}/ipConfigurations/ipconfig1", n.id),
        etag: etag.clone(),
        ty: "Microsoft.Network/networkInterfaces/ipConfigurations",
        properties: IpConfigProps {
            provisioning_state: "Succeeded",
            private_ip_address: sn.v4_addr(st.v4).to_string(),
            private_ip_allocation_method: if st.v4_static { "Static" } else { "Dynamic" },
            subnet: OwnedSubResource { id: sn.id.clone() },
            primary: true,
            private_ip_address_version: "IPv4",
        },
    }];
    if let Some(a) = st.v6.and_then(|h| sn.v6_addr(h)) {
        cfgs.push(IpConfig {
            name: "ipconfig-v6",
            id: format!("{}/ipConfigurations/ipconfig-v6", n.id),
            etag: etag.clone(),
            ty: "Microsoft.Network/networkInterfaces/ipConfigurations",
            properties: IpConfigProps {
                provisioning_state: "Succeeded",
                private_ip_address: a.to_string(),
                private_ip_allocation_method: "Dynamic",
                subnet: OwnedSubResource { id: sn.id.clone() },
                primary: false,
                private_ip_address_version: "IPv6",
            },
        });
    }
    let vm = st.vm.map(|v| world.vms[v as usize].as_str());
    let nj = ArmNic {
        name: &n.name,
        id: &n.id,
        etag,
        ty: "Microsoft.Network/networkInterfaces",
        location: sub.location,
        properties: NicProps {
            provisioning_state: "Succeeded",
            resource_guid: guid(seed, &[stream::IDS, 3, u64::from(nic)]),
            ip_configurations: cfgs,
            dns_settings: DnsSettings {
                dns_servers: [],
                applied_dns_servers: [],
            },
            mac_address: st.mac.then(|| n.mac_arm()),
            enable_accelerated_networking: !n.vmss,
            vnet_encryption_supported: false,
            enable_ip_forwarding: false,
            disable_tcp_state_tracking: false,
            primary: vm.map(|_| true),
            virtual_machine: vm.map(|id| SubResource { id }),
            hosted_workloads: [],
            tap_configurations: [],
            nic_type: "Standard",
            auxiliary_mode: "None",
            auxiliary_sku: "None",
        },
    };
    serde_json::to_string(&nj).expect("NIC JSON")
}

// ---------------------------------------------------------------------------
// Activity Log records

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

struct ActivityWriter<'w> {
    world: &'w World,
    rng: ChaCha8Rng,
    recs: Vec<Rec>,
    seq: u64,
    stats: ActivityStats,
    lost: Vec<LostEvent>,
    principal: String,
    app: String,
}

impl<'w> ActivityWriter<'w> {
    fn new(world: &'w World) -> Self {
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
    fn operation(
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
    fn finish(
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

// ---------------------------------------------------------------------------
// The sweep

struct SnapPlan {
    t: Micros,
    sub: u32,
    forced: bool,
}

/// Writes `snapshots/` and `activity/` for `world` into `out`.
pub fn write_collector_view(world: &World, out: &Path) -> anyhow::Result<Written> {
    let cfg = &world.cfg;
    let mut rng = rng_for(cfg.seed, &[stream::SNAPSHOTS]);
    fs::create_dir_all(out.join("snapshots"))?;

    // The snapshot schedule.
    let k = i64::from(cfg.snapshot_minutes) * MIN;
    let mut plans = Vec::new();
    for s in 0..world.subs.len() as u32 {
        let offset = 2 * MIN + i64::from(s) * 53 * SEC + rng.random_range(0..30 * SEC);
        let mut times = Vec::new();
        let mut t = world.t0 + offset;
        while t < world.t_end {
            times.push(t);
            t += k;
        }
        let last = times.len().saturating_sub(1);
        for (j, t) in times.into_iter().enumerate() {
            plans.push(SnapPlan {
                t,
                sub: s,
                forced: j == 0 || j == last,
            });
        }
    }
    plans.sort_by_key(|p| (p.t, p.sub));

    // Every change, in time order.
    let mut changes: Vec<(Micros, u32, u32)> = Vec::new();
    for (ni, n) in world.nics.iter().enumerate() {
        for (ci, c) in n.changes.iter().enumerate() {
            changes.push((c.t, ni as u32, ci as u32));
        }
    }
    changes.sort_unstable();

    let mut cache: Vec<Option<(NicSt, Option<String>)>> = vec![None; world.nics.len()];
    let mut alive: Vec<BTreeSet<u32>> = vec![BTreeSet::new(); world.subs.len()];
    let mut acts = ActivityWriter::new(world);
    let mut sstats = SnapshotStats::default();
    let mut observed: HashSet<(u32, IpAddr)> = HashSet::new();
    let mut feed = Vec::new();
    let mut ci = 0;
    let mut fail_rng = rng_for(cfg.seed, &[stream::ACTIVITY, 1]);

    for (n, plan) in plans.iter().enumerate() {
        while ci < changes.len() && changes[ci].0 <= plan.t {
            let (t, nic, chi) = changes[ci];
            ci += 1;
            let ch = &world.nics[nic as usize].changes[chi as usize];
            let sub = world.sub_of_nic(nic) as usize;
            match ch.state {
                Some(st) => {
                    alive[sub].insert(nic);
                    if ch.event {
                        let body = nic_json(world, nic, &st);
                        let failed = failed_attempt(world, nic, &st, &mut fail_rng);
                        acts.operation(nic, t, ch.op, Some(&body), failed);
                        if acts.lost.last().is_none_or(|l| l.t != t || l.nic != nic) {
                            mark_observed(world, nic, &st, &mut observed);
                        }
                        cache[nic as usize] = Some((st, Some(body)));
                    } else {
                        cache[nic as usize] = Some((st, None));
                    }
                }
                None => {
                    alive[sub].remove(&nic);
                    cache[nic as usize] = None;
                    if ch.event {
                        acts.operation(nic, t, Op::Delete, None, None);
                    }
                }
            }
        }
        // Changes after the last snapshot still produce events.
        sstats.taken += 1;
        if !plan.forced && rng.random_bool(cfg.snapshot_miss) {
            sstats.missed += 1;
            continue;
        }
        let partial = !plan.forced && rng.random_bool(cfg.snapshot_partial);
        let members: Vec<u32> = alive[plan.sub as usize].iter().copied().collect();
        let page_size = cfg.page_size as usize;
        let n_pages = members.len().div_ceil(page_size).max(1);
        let mut keep_pages = n_pages;
        let mut truncate_to = None;
        if partial {
            if n_pages > 1 {
                keep_pages = rng.random_range(1..n_pages);
            } else {
                truncate_to = Some(members.len() * rng.random_range(3..8) / 10);
            }
        }
        let dir_rel = format!("snapshots/{n:06}");
        let dir = out.join(&dir_rel);
        fs::create_dir_all(&dir)?;
        let sub_id = &world.subs[plan.sub as usize].id;
        let mut page_names = Vec::new();
        for p in 0..keep_pages {
            let lo = p * page_size;
            let mut hi = ((p + 1) * page_size).min(members.len());
            if let Some(tr) = truncate_to {
                hi = tr.min(hi);
            }
            let name = format!("page-{p:04}.json");
            let path = dir.join(&name);
            let f =
                fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = BufWriter::with_capacity(1 << 20, f);
            w.write_all(b"{\"value\":[")?;
            let mut bytes = 12u64;
            for (x, &nic) in members[lo.min(hi)..hi].iter().enumerate() {
                if x > 0 {
                    w.write_all(b",")?;
                    bytes += 1;
                }
                let slot = cache[nic as usize].as_mut().expect("alive NIC has a state");
                if slot.1.is_none() {
                    slot.1 = Some(nic_json(world, nic, &slot.0));
                }
                let js = slot.1.as_deref().expect("just set");
                w.write_all(js.as_bytes())?;
                bytes += js.len() as u64;
                sstats.nic_observations += 1;
                mark_observed(world, nic, &slot.0, &mut observed);
            }
            w.write_all(b"]")?;
            if p + 1 < n_pages {
                let token = format!(
                    "{:016x}",
                    mix(cfg.seed, &[stream::SNAPSHOTS, n as u64, p as u64])
                );
                let link = format!(
                    ",\"nextLink\":\"https://management.azure.com/subscriptions/{sub_id}/providers/Microsoft.Network/networkInterfaces?api-version=2024-05-01&$skiptoken={token}\""
                );
                w.write_all(link.as_bytes())?;
                bytes += link.len() as u64;
            }
            w.write_all(b"}")?;
            w.flush()?;
            sstats.pages += 1;
            sstats.bytes += bytes + 2;
            page_names.push(name);
        }
        let complete = !partial;
        let meta = SnapshotMeta {
            snapshot_id: guid(cfg.seed, &[stream::SNAPSHOTS, n as u64]),
            taken_at: time::fmt_us(plan.t),
            subscriptions: vec![sub_id.clone()],
            complete,
            pages: page_names,
            pages_listed: n_pages as u32,
        };
        super::write_json_file(&dir.join("meta.json"), &meta)?;
        sstats.delivered += 1;
        if complete {
            sstats.complete += 1;
        } else {
            sstats.partial += 1;
        }
        feed.push(FeedItem::Snapshot {
            dir: dir_rel,
            deliver_at: plan.t + MIN,
        });
    }
    // Changes after the last snapshot (none inside the quiet tail, but the
    // tail may be shorter than the window).
    while ci < changes.len() {
        let (t, nic, chi) = changes[ci];
        ci += 1;
        let ch = &world.nics[nic as usize].changes[chi as usize];
        if !ch.event {
            continue;
        }
        match ch.state {
            Some(st) => {
                let body = nic_json(world, nic, &st);
                let failed = failed_attempt(world, nic, &st, &mut fail_rng);
                acts.operation(nic, t, ch.op, Some(&body), failed);
                if acts.lost.last().is_none_or(|l| l.t != t || l.nic != nic) {
                    mark_observed(world, nic, &st, &mut observed);
                }
            }
            None => acts.operation(nic, t, Op::Delete, None, None),
        }
    }
    sstats.observed_claims = observed.len() as u64;
    let (afeed, astats, lost) = acts.finish(out)?;
    feed.extend(afeed);
    feed.sort_by_key(|f| match f {
        FeedItem::Snapshot { deliver_at, .. } => (*deliver_at, 0),
        FeedItem::Activity { deliver_at, .. } => (*deliver_at, 1),
        FeedItem::Topology { deliver_at, .. } => (*deliver_at, 0),
    });
    Ok(Written {
        feed,
        snapshots: sstats,
        activity: astats,
        lost,
    })
}

/// Now and then (1%), a write that failed just before the successful one,
/// asking for another IP: its `requestbody` must not be taken as state.
fn failed_attempt(world: &World, nic: u32, st: &NicSt, rng: &mut ChaCha8Rng) -> Option<String> {
    (world.cfg.start_records && rng.random_bool(0.01)).then(|| {
        let mut bogus = *st;
        let cap = world.subnets[world.nics[nic as usize].subnet as usize].cap;
        bogus.v4 = (st.v4 + 1 + rng.random_range(0..50)) % cap;
        bogus.version += 1_000_000;
        nic_json(world, nic, &bogus)
    })
}

fn mark_observed(world: &World, nic: u32, st: &NicSt, seen: &mut HashSet<(u32, IpAddr)>) {
    let sn = &world.subnets[world.nics[nic as usize].subnet as usize];
    seen.insert((nic, IpAddr::V4(sn.v4_addr(st.v4))));
    if let Some(a) = st.v6.and_then(|h| sn.v6_addr(h)) {
        seen.insert((nic, IpAddr::V6(a)));
    }
}

/// `snapshots/<n>/meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub snapshot_id: String,
    pub taken_at: String,
    pub subscriptions: Vec<String>,
    pub complete: bool,
    /// The page files delivered, in order.
    #[serde(default)]
    pub pages: Vec<String>,
    /// How many pages the listing had (more than `pages` when partial).
    #[serde(default)]
    pub pages_listed: u32,
}
