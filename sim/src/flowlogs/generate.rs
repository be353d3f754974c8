//! Every tuple generated: its scenario, its capturing NIC and time, its far
//! end, ports and protocol, and the true owner of both ends.

use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;

use crate::time::{self, MIN, MS, Micros, SEC};
use crate::truth::{FlowLogKind, Interval, TruthIndex, World};
use crate::{rng_for, stream};

use super::blob::write_file;
use super::ips::{is_public, public_ip, unowned_ip};
use super::{FlowStats, Gen, GenTruth, Holder, Scenario, UNSEEN_MAC_PREFIX};

const SERVICE_PORTS: &[u16] = &[443, 80, 22, 3389, 1433, 5432, 8080, 6379, 9092];

/// Writes `flowlogs/` for `world`.
pub fn write_flow_logs(world: &World, truth: &TruthIndex, out: &Path) -> anyhow::Result<FlowStats> {
    let cfg = &world.cfg;
    let mut stats = FlowStats::default();
    if cfg.flow_tuples == 0 {
        return Ok(stats);
    }
    let dir = out.join("flowlogs");
    fs::create_dir_all(&dir)?;
    let mut rng = rng_for(cfg.seed, &[stream::FLOWS]);
    let (t0, t_end) = (world.t0, world.t_end);

    // Intervals that can capture traffic (attached NIC, inside the window),
    // overall and per VNet; and intervals that end inside the window.
    // `flow_minutes` narrows the window the tuples fall in.
    let t0 = cfg
        .flow_minutes
        .map_or(t0, |m| (t_end - i64::from(m) * MIN).max(t0));
    let ivs = &truth.intervals;
    let clip = |iv: &Interval| (iv.from.max(t0), iv.to.unwrap_or(t_end).min(t_end));
    let mut capture: Vec<u32> = (0..ivs.len() as u32)
        .filter(|&i| {
            let iv = &ivs[i as usize];
            let (a, b) = clip(iv);
            iv.vm.is_some() && b - a >= 2 * SEC
        })
        .collect();
    if let Some(k) = cfg.flow_capture_nics {
        let mut nics: Vec<u32> = capture.iter().map(|&i| ivs[i as usize].nic).collect();
        nics.sort_unstable();
        nics.dedup();
        nics.shuffle(&mut rng);
        nics.truncate(k as usize);
        let keep: std::collections::HashSet<u32> = nics.into_iter().collect();
        capture.retain(|&i| keep.contains(&ivs[i as usize].nic));
    }
    if capture.is_empty() {
        return Ok(stats);
    }
    let mut capture_by_vnet: Vec<Vec<u32>> = vec![Vec::new(); world.vnets.len()];
    for &i in &capture {
        capture_by_vnet[ivs[i as usize].vnet as usize].push(i);
    }
    let ends: Vec<u32> = (0..ivs.len() as u32)
        .filter(|&i| ivs[i as usize].to.is_some_and(|e| e > t0 && e < t_end))
        .collect();
    let mut by_vnet_all: Vec<Vec<u32>> = vec![Vec::new(); world.vnets.len()];
    for (i, iv) in ivs.iter().enumerate() {
        by_vnet_all[iv.vnet as usize].push(i as u32);
    }

    let legacy: Vec<u32> = (0..world.vnets.len() as u32)
        .filter(|&v| world.vnets[v as usize].legacy)
        .collect();
    // The VNet routing puts `ip` in, from VNet `vn` (None: outside).
    let routed = |vn: u32, ip: IpAddr| -> Option<u32> {
        if is_public(ip) {
            return None;
        }
        let v = &world.vnets[vn as usize];
        let inside = |w: &crate::truth::Vnet| match ip {
            IpAddr::V4(a) => w.v4.contains(&a),
            IpAddr::V6(a) => w.v6.is_some_and(|n| n.contains(&a)),
        };
        if inside(v) {
            return Some(vn);
        }
        v.peers
            .iter()
            .copied()
            .find(|&p| inside(&world.vnets[p as usize]))
    };
    // An IPv4 address held at `t` in VNet `from` and by nobody in `vn`.
    let shadowed = |rng: &mut ChaCha8Rng, from: u32, vn: u32, t: Micros| -> Option<IpAddr> {
        let pool = &by_vnet_all[from as usize];
        for _ in 0..40 {
            let iv = &ivs[pool[rng.random_range(0..pool.len())] as usize];
            if iv.covers(t) && iv.ip.is_ipv4() && truth.owner_at(vn, iv.ip, t).is_none() {
                return Some(iv.ip);
            }
        }
        None
    };

    let mut gens: Vec<Gen> = Vec::with_capacity(cfg.flow_tuples as usize);
    let mut seq = 0u32;
    let mut attempts = 0u64;
    while gens.len() < cfg.flow_tuples as usize && attempts < 20 * u64::from(cfg.flow_tuples) + 1000
    {
        attempts += 1;
        let r: f64 = rng.random();
        let mut scen = if r < 0.05 && legacy.len() == 2 && cfg.flow_capture_nics.is_none() {
            Scenario::Unseen
        } else if r < 0.30 {
            Scenario::Owned
        } else if r < 0.55 {
            Scenario::Public
        } else if r < 0.67 {
            Scenario::Gap
        } else if r < 0.75 {
            Scenario::Unowned
        } else if r < 0.83 {
            Scenario::Peered
        } else if r < 0.88 {
            Scenario::Shadowed
        } else {
            Scenario::Edge
        };
        // The capturing end: (VNet, subnet, MAC, IP, holder, time).
        let (vn, subnet, mac, cap_ip, cap_holder, t, gap_peer) = if scen == Scenario::Unseen {
            let k = rng.random_range(0..2usize);
            let (vn, other) = (legacy[k], legacy[1 - k]);
            let pool = &by_vnet_all[other as usize];
            let mut found = None;
            for _ in 0..40 {
                if pool.is_empty() {
                    break;
                }
                let iv = &ivs[pool[rng.random_range(0..pool.len())] as usize];
                let (a, b) = clip(iv);
                if b - a < 2 * SEC {
                    continue;
                }
                let t = rng.random_range(a..b);
                // Nobody in `vn` has that address within 10 minutes of `t`.
                let free = truth
                    .history(vn, iv.ip)
                    .iter()
                    .all(|o| o.from > t + 10 * MIN || o.to.is_some_and(|e| e + 10 * MIN < t));
                if free {
                    found = Some((iv, t));
                    break;
                }
            }
            let Some((iv, t)) = found else { continue };
            let mac = UNSEEN_MAC_PREFIX | (rng.random::<u64>() & 0xFF_FFFF);
            let subnet = world.vnets[vn as usize].subnets[0];
            (vn, subnet, mac, iv.ip, Holder::Unseen(mac), t, None)
        } else if scen == Scenario::Gap && !ends.is_empty() {
            let j = ends[rng.random_range(0..ends.len())];
            let e = ivs[j as usize].to.expect("ends have an end");
            let t = (e + rng.random_range(-3 * MIN..5 * MIN)).clamp(t0, t_end - 1);
            let vn = ivs[j as usize].vnet as usize;
            let cands = &capture_by_vnet[vn];
            let mut found = None;
            for _ in 0..40 {
                if cands.is_empty() {
                    break;
                }
                let c = cands[rng.random_range(0..cands.len())];
                let civ = &ivs[c as usize];
                if civ.covers(t)
                    && civ.ip != ivs[j as usize].ip
                    && civ.ip.is_ipv4() == ivs[j as usize].ip.is_ipv4()
                {
                    found = Some(c);
                    break;
                }
            }
            let Some(c) = found else { continue };
            let civ = &ivs[c as usize];
            let nic = &world.nics[civ.nic as usize];
            (
                civ.vnet,
                nic.subnet,
                nic.mac,
                civ.ip,
                Holder::Nic(civ.nic, civ.vm),
                t,
                Some(ivs[j as usize].ip),
            )
        } else {
            if scen == Scenario::Gap {
                scen = Scenario::Owned;
            }
            let pool: &[u32] = match scen {
                Scenario::Shadowed => {
                    let k = rng.random_range(0..legacy.len().max(1));
                    match legacy.get(k) {
                        Some(&l) => &capture_by_vnet[l as usize],
                        None => &[],
                    }
                }
                _ => &capture,
            };
            if pool.is_empty() {
                continue;
            }
            let c = pool[rng.random_range(0..pool.len())];
            let civ = &ivs[c as usize];
            if scen == Scenario::Peered && world.vnets[civ.vnet as usize].peers.is_empty() {
                continue;
            }
            let (a, b) = clip(civ);
            let t = if scen == Scenario::Edge {
                let w = (90 * SEC).min((b - a) / 2).max(1);
                if rng.random_bool(0.5) {
                    a + rng.random_range(0..w)
                } else {
                    b - 1 - rng.random_range(0..w)
                }
            } else {
                rng.random_range(a..b)
            };
            let nic = &world.nics[civ.nic as usize];
            (
                civ.vnet,
                nic.subnet,
                nic.mac,
                civ.ip,
                Holder::Nic(civ.nic, civ.vm),
                t,
                None,
            )
        };
        let vnet = &world.vnets[vn as usize];
        let fmt = vnet.flow;
        // Timestamps are truncated to the log's resolution; the capturing NIC
        // must still own its IP then.
        let t = match fmt {
            FlowLogKind::Nsg => t.div_euclid(SEC) * SEC,
            FlowLogKind::Vnet => t.div_euclid(MS) * MS,
        };
        if let Holder::Nic(n, _) = cap_holder
            && truth.owner_at(vn, cap_ip, t).is_none_or(|o| o.nic != n)
        {
            continue;
        }
        let v4 = cap_ip.is_ipv4();
        let other_legacy = legacy.iter().copied().find(|&l| l != vn);
        // An address owned in VNet `w` at `t`, other than the capturing one.
        let owned_in = |rng: &mut ChaCha8Rng, w: u32| -> Option<IpAddr> {
            let pool = &by_vnet_all[w as usize];
            for _ in 0..30 {
                if pool.is_empty() {
                    break;
                }
                let iv = &ivs[pool[rng.random_range(0..pool.len())] as usize];
                if iv.covers(t) && iv.ip != cap_ip && iv.ip.is_ipv4() == v4 {
                    return Some(iv.ip);
                }
            }
            None
        };
        // The other end.
        let peer: IpAddr = match scen {
            Scenario::Gap => gap_peer.expect("gap peer"),
            Scenario::Unseen => {
                let r: f64 = rng.random();
                let p = if r < 0.4 {
                    Some(public_ip(&mut rng, true))
                } else if r < 0.7 {
                    owned_in(&mut rng, vn)
                } else {
                    other_legacy.and_then(|o| shadowed(&mut rng, o, vn, t))
                };
                match p {
                    Some(ip) if ip != cap_ip => ip,
                    _ => public_ip(&mut rng, true),
                }
            }
            Scenario::Shadowed => match other_legacy.and_then(|o| shadowed(&mut rng, o, vn, t)) {
                Some(ip) if ip != cap_ip && vnet.legacy => ip,
                _ => continue,
            },
            Scenario::Peered => {
                let w = vnet.peers[rng.random_range(0..vnet.peers.len())];
                match owned_in(&mut rng, w) {
                    Some(ip) => ip,
                    None => continue,
                }
            }
            Scenario::Owned | Scenario::Edge => match owned_in(&mut rng, vn) {
                Some(ip) => ip,
                None if scen == Scenario::Edge => public_ip(&mut rng, v4),
                None => {
                    scen = Scenario::Unowned;
                    match unowned_ip(world, truth, vn, v4, &mut rng) {
                        Some(ip) => ip,
                        None => continue,
                    }
                }
            },
            Scenario::Unowned => match unowned_ip(world, truth, vn, v4, &mut rng) {
                Some(ip) => ip,
                None => continue,
            },
            Scenario::Public => public_ip(&mut rng, v4),
        };
        let public = is_public(peer);
        let capture_src = if public {
            rng.random_bool(0.6)
        } else {
            rng.random_bool(0.5)
        };
        let denied = public && !capture_src && rng.random_bool(0.7);
        let rule = match (public, capture_src, denied) {
            (true, true, _) => 0,
            (true, false, true) => 1,
            (true, false, false) => 4,
            (false, false, _) => 2,
            (false, true, _) => 3,
        };
        let (src, dst) = if capture_src {
            (cap_ip, peer)
        } else {
            (peer, cap_ip)
        };
        let eph: u16 = rng.random_range(32768..61000);
        let svc = SERVICE_PORTS[rng.random_range(0..SERVICE_PORTS.len())];
        let tcp = rng.random_bool(0.9);
        let state = if denied {
            'D'
        } else {
            match rng.random_range(0..20) {
                0..7 => 'B',
                7..12 => 'C',
                _ => 'E',
            }
        };
        let counters = |rng: &mut ChaCha8Rng| {
            let p1: u32 = rng.random_range(1..200);
            let p2: u32 = rng.random_range(1..200);
            format!(
                "{p1},{},{p2},{}",
                p1 * rng.random_range(60..1400),
                p2 * rng.random_range(60..1400)
            )
        };
        let (file_fmt, text, rec, flow, group) = match fmt {
            FlowLogKind::Nsg => {
                let (st, decision, cnt) = match state {
                    'D' => ('B', 'D', ",,,".to_string()),
                    'B' => ('B', 'A', ",,,".to_string()),
                    s => (s, 'A', counters(&mut rng)),
                };
                let text = format!(
                    "{},{src},{dst},{eph},{svc},{},{},{decision},{st},{cnt}",
                    t / SEC,
                    if tcp { 'T' } else { 'U' },
                    if capture_src { 'O' } else { 'I' },
                );
                (0u8, text, (subnet, 0u64, t.div_euclid(MIN)), rule, mac)
            }
            FlowLogKind::Vnet => {
                let cnt = match state {
                    'B' | 'D' => "0,0,0,0".to_string(),
                    _ => counters(&mut rng),
                };
                let text = format!(
                    "{},{src},{dst},{eph},{svc},{},{},{state},NX,{cnt}",
                    t / MS,
                    if tcp { 6 } else { 17 },
                    if capture_src { 'O' } else { 'I' },
                );
                (
                    1u8,
                    text,
                    (vn, mac, t.div_euclid(MIN)),
                    subnet,
                    u64::from(rule),
                )
            }
        };
        let hour = if cfg.flow_single_blob {
            0
        } else {
            t.div_euclid(time::HOUR)
        };
        let gt = cfg.flow_truth.then(|| {
            let end = |ip: IpAddr| -> (IpAddr, Holder, Option<u32>) {
                if ip == cap_ip && matches!(cap_holder, Holder::Unseen(_)) {
                    return (ip, cap_holder, Some(vn));
                }
                let w = routed(vn, ip);
                let holder = w
                    .and_then(|w| truth.owner_at(w, ip, t))
                    .map_or(Holder::Nobody, |iv| Holder::Nic(iv.nic, iv.vm));
                (ip, holder, w)
            };
            Box::new(GenTruth {
                kind: scen,
                vnet: vn,
                mac,
                capture_src,
                src: end(src),
                dst: end(dst),
            })
        });
        seq += 1;
        gens.push(Gen {
            file: (file_fmt, hour),
            rec,
            flow,
            group,
            t,
            seq,
            text,
            truth: gt,
        });
    }

    gens.sort_by(|a, b| {
        (a.file, a.rec, a.flow, a.group, a.t, a.seq)
            .cmp(&(b.file, b.rec, b.flow, b.group, b.t, b.seq))
    });
    let truth_path = dir.join("truth.jsonl");
    let mut truth_w = if cfg.flow_truth {
        Some(BufWriter::with_capacity(
            1 << 20,
            fs::File::create(&truth_path)
                .with_context(|| format!("creating {}", truth_path.display()))?,
        ))
    } else {
        None
    };
    let mut i = 0;
    while i < gens.len() {
        let file = gens[i].file;
        let mut j = i;
        while j < gens.len() && gens[j].file == file {
            j += 1;
        }
        let name = match file {
            (0, _) if cfg.flow_single_blob => "nsg-all.json".to_string(),
            (_, _) if cfg.flow_single_blob => "vnet-all.json".to_string(),
            (0, h) => format!("nsg-{}.json", time::hour_stamp(h * time::HOUR)),
            (_, h) => format!("vnet-{}.json", time::hour_stamp(h * time::HOUR)),
        };
        let bytes = write_file(
            world,
            &dir.join(&name),
            &name,
            &gens[i..j],
            truth_w.as_mut(),
            &mut stats,
        )?;
        stats.files += 1;
        stats.bytes += bytes;
        for g in &gens[i..j] {
            stats.tuples += 1;
            if g.file.0 == 0 {
                stats.nsg_tuples += 1;
            } else {
                stats.vnet_tuples += 1;
            }
        }
        i = j;
    }
    if let Some(mut w) = truth_w {
        w.flush()?;
    }
    Ok(stats)
}
