//! The collector's sweep: the snapshot schedule over every subscription, the
//! pages written (some lost or cut short) and the Activity Log beside them.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::time::{self, MIN, Micros, SEC};
use crate::truth::{NicSt, Op, World};
use crate::{FeedItem, guid, mix, rng_for, stream};

use super::activity::ActivityWriter;
use super::nic_json;
use super::{SnapshotMeta, SnapshotStats, Written};

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
        crate::write_json_file(&dir.join("meta.json"), &meta)?;
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
