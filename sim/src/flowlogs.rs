//! Flow-log blobs and the true owner of every tuple end.
//!
//! Each tuple is captured at an attached NIC (its MAC is where Azure puts
//! it: per flow group in NSG v2 logs, per record in VNet v4 logs) at a time
//! when that NIC owned the capturing IP. The other end is one of:
//! an IP owned in the same VNet at that time (`owned`), an IP around the end
//! of an owner interval (`gap`: just before or after a handover or a delete),
//! a private IP of the VNet nobody ever owned (`unowned`), a public IP
//! (`public`), an IP owned in a VNet peered with the capturing one
//! (`peered`), or, in a legacy VNet, an address of its own 10.0.0.0/24 that
//! nobody holds there but a NIC of the other legacy VNet holds (`shadowed`:
//! the packet never left its VNet, so that NIC is not its far end). Some
//! tuples are placed within 90 s of the capturing NIC's own start or end of
//! ownership (`edge`).
//!
//! A share of the legacy VNets' tuples (`unseen`) are captured by
//! short-lived scale-set NICs no snapshot or event ever showed: a MAC ipwho
//! cannot know, on an address the other legacy VNet's NIC holds at that
//! moment. Their capturing end's true owner is that unseen NIC.
//!
//! Files: `flowlogs/nsg-<hour>.json` (NSG flow log v2: `{"records":[...]}`,
//! 13-field tuples, epoch seconds, empty counters on `B` tuples and denied
//! ones) and `flowlogs/vnet-<hour>.json` (VNet flow log v4: epoch
//! milliseconds, IANA protocol numbers, state `D` for deny, `0` counters on
//! `B`/`D`); `nsg-all.json` / `vnet-all.json` when
//! [`super::SimConfig::flow_single_blob`] is set. `flowlogs/truth.jsonl` has
//! one line per tuple: where it is (file, record, flow, group, tuple index),
//! its time, the scope the record gives (VNet for VNet logs, subscription
//! for NSG logs), the capturing MAC, and per end the true owner (NIC, VM),
//! or null, and the VNet routing puts the address in (the capturing VNet, a
//! peered one, or null outside the estate).

use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use rand::seq::SliceRandom as _;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::time::{self, MIN, MS, Micros, SEC};
use super::truth::{FlowLogKind, Interval, TruthIndex, World};
use super::{guid, mix, rng_for, stream};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowStats {
    pub tuples: u64,
    pub nsg_tuples: u64,
    pub vnet_tuples: u64,
    pub records: u64,
    pub files: u64,
    pub bytes: u64,
}

/// One end of a tuple in `flowlogs/truth.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndTruth {
    pub ip: IpAddr,
    pub nic: Option<String>,
    pub vm: Option<String>,
    /// The VNet the address is in, by routing from the capturing VNet.
    #[serde(default)]
    pub vnet: Option<String>,
}

/// The scope a flow record gives: its VNet (VNet flow logs, from
/// `targetResourceID`) or its subscription (NSG flow logs, from the NSG id).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowScope {
    pub vnet: Option<String>,
    pub subscription: String,
}

/// A line of `flowlogs/truth.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TupleTruth {
    pub file: String,
    pub record: u32,
    pub flow: u32,
    pub group: u32,
    pub tuple: u32,
    /// `nsg` or `vnet`.
    pub format: String,
    #[serde(with = "time::serde_us")]
    pub at: Micros,
    /// How the non-capturing end was chosen: owned, gap, unowned, public, edge.
    pub kind: String,
    pub scope: FlowScope,
    /// The capturing NIC's MAC (12 hex digits).
    pub mac: String,
    /// Which end the capturing NIC is: `src` or `dst`.
    pub capture: String,
    pub src: EndTruth,
    pub dst: EndTruth,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Owned,
    Gap,
    Unowned,
    Public,
    Edge,
    Peered,
    Shadowed,
    Unseen,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Owned => "owned",
            Scenario::Gap => "gap",
            Scenario::Unowned => "unowned",
            Scenario::Public => "public",
            Scenario::Edge => "edge",
            Scenario::Peered => "peered",
            Scenario::Shadowed => "shadowed",
            Scenario::Unseen => "unseen",
        }
    }
}

struct Gen {
    /// (format 0 = NSG / 1 = VNet, hour or 0 for the single blob)
    file: (u8, i64),
    /// NSG: (subnet, 0, minute); VNet: (vnet, mac, minute)
    rec: (u32, u64, i64),
    /// NSG: rule; VNet: acl (subnet)
    flow: u32,
    /// NSG: mac; VNet: rule
    group: u64,
    t: Micros,
    seq: u32,
    text: String,
    truth: Option<Box<GenTruth>>,
}

/// Who held one end's address: a known NIC (and its VM), an unseen
/// scale-set NIC (by MAC), or nobody.
#[derive(Clone, Copy)]
enum Holder {
    Nobody,
    Nic(u32, Option<u32>),
    Unseen(u64),
}

struct GenTruth {
    kind: Scenario,
    vnet: u32,
    mac: u64,
    capture_src: bool,
    /// Address, holder, VNet by routing.
    src: (IpAddr, Holder, Option<u32>),
    dst: (IpAddr, Holder, Option<u32>),
}

/// Scale-set NICs no evidence shows get MACs under this prefix (no
/// simulated NIC's MAC has it).
const UNSEEN_MAC_PREFIX: u64 = 0x7C_1E_52 << 24;

const RULES: &[&str] = &[
    "DefaultRule_AllowInternetOutBound",
    "DefaultRule_DenyAllInBound",
    "DefaultRule_AllowVnetInBound",
    "DefaultRule_AllowVnetOutBound",
    "UserRule_allow-https-in",
];

const PUBLIC_FIRST_OCTETS: &[u8] = &[13, 20, 23, 40, 51, 52, 104, 151, 185, 194];
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
        let inside = |w: &super::truth::Vnet| match ip {
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

pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !a.is_private(),
        IpAddr::V6(a) => (a.segments()[0] & 0xfe00) != 0xfc00,
    }
}

pub(crate) fn public_ip(rng: &mut ChaCha8Rng, v4: bool) -> IpAddr {
    if v4 {
        let a = PUBLIC_FIRST_OCTETS[rng.random_range(0..PUBLIC_FIRST_OCTETS.len())];
        IpAddr::V4(Ipv4Addr::new(
            a,
            rng.random(),
            rng.random(),
            rng.random_range(1..255),
        ))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2603,
            0x1030,
            rng.random(),
            rng.random(),
            0,
            0,
            0,
            rng.random_range(1..0xffff),
        ))
    }
}

/// A private IP of VNet `vn` that nobody ever owned.
pub(crate) fn unowned_ip(
    world: &World,
    truth: &TruthIndex,
    vn: u32,
    v4: bool,
    rng: &mut ChaCha8Rng,
) -> Option<IpAddr> {
    let vnet = &world.vnets[vn as usize];
    for _ in 0..30 {
        let ip = if v4 {
            let base = u32::from(vnet.v4.network());
            let off = if vnet.legacy {
                rng.random_range(4..255)
            } else {
                // 10.x.250.0/23 is never a subnet.
                (250 << 8) + rng.random_range(4..500)
            };
            IpAddr::V4(Ipv4Addr::from(base + off))
        } else {
            let n = vnet.v6?;
            IpAddr::V6(Ipv6Addr::from(
                u128::from(n.network())
                    | (0xfffu128 << 64)
                    | u128::from(rng.random_range(4u32..5000)),
            ))
        };
        if truth.history(vn, ip).is_empty() {
            return Some(ip);
        }
    }
    None
}

#[derive(Serialize)]
struct NsgRecord<'a> {
    time: String,
    #[serde(rename = "systemId")]
    system_id: String,
    category: &'static str,
    #[serde(rename = "resourceId")]
    resource_id: String,
    #[serde(rename = "operationName")]
    operation_name: &'static str,
    properties: NsgProps<'a>,
}

#[derive(Serialize)]
struct NsgProps<'a> {
    #[serde(rename = "Version")]
    version: u32,
    flows: Vec<NsgRuleFlows<'a>>,
}

#[derive(Serialize)]
struct NsgRuleFlows<'a> {
    rule: &'static str,
    flows: Vec<NsgMacFlows<'a>>,
}

#[derive(Serialize)]
struct NsgMacFlows<'a> {
    mac: String,
    #[serde(rename = "flowTuples")]
    flow_tuples: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VnetRecord<'a> {
    time: String,
    flow_log_version: u32,
    #[serde(rename = "flowLogGUID")]
    flow_log_guid: String,
    mac_address: String,
    category: &'static str,
    #[serde(rename = "flowLogResourceID")]
    flow_log_resource_id: String,
    #[serde(rename = "targetResourceID")]
    target_resource_id: &'a str,
    operation_name: &'static str,
    flow_records: VnetFlowRecords<'a>,
}

#[derive(Serialize)]
struct VnetFlowRecords<'a> {
    flows: Vec<VnetAclFlows<'a>>,
}

#[derive(Serialize)]
struct VnetAclFlows<'a> {
    #[serde(rename = "aclID")]
    acl_id: String,
    #[serde(rename = "flowGroups")]
    flow_groups: Vec<VnetGroup<'a>>,
}

#[derive(Serialize)]
struct VnetGroup<'a> {
    rule: &'static str,
    #[serde(rename = "flowTuples")]
    flow_tuples: Vec<&'a str>,
}

/// Splits `items` into runs with the same key.
fn runs<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < items.len() {
        let k = key(&items[i]);
        let mut j = i + 1;
        while j < items.len() && key(&items[j]) == k {
            j += 1;
        }
        out.push(&items[i..j]);
        i = j;
    }
    out
}

fn write_file(
    world: &World,
    path: &Path,
    name: &str,
    gens: &[Gen],
    mut truth_w: Option<&mut BufWriter<fs::File>>,
    stats: &mut FlowStats,
) -> anyhow::Result<u64> {
    let seed = world.cfg.seed;
    let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut bytes = 0u64;
    w.write_all(b"{\"records\":[")?;
    bytes += 12;
    let nsg = gens.first().is_some_and(|g| g.file.0 == 0);
    for (ri, rec) in runs(gens, |g| g.rec).into_iter().enumerate() {
        if ri > 0 {
            w.write_all(b",")?;
            bytes += 1;
        }
        let (a, mac, minute) = rec[0].rec;
        let rtime = time::fmt7(
            minute * MIN
                + MIN
                + (mix(seed, &[minute as u64, u64::from(a)]) % (2 * SEC as u64)) as i64,
        );
        let mut tuple_pos: Vec<(u32, u32, u32)> = Vec::with_capacity(rec.len());
        let js = if nsg {
            let sn = &world.subnets[a as usize];
            let mut flows = Vec::new();
            for (fi, by_rule) in runs(rec, |g| g.flow).into_iter().enumerate() {
                let mut groups = Vec::new();
                for (gi, by_mac) in runs(by_rule, |g| g.group).into_iter().enumerate() {
                    for (ti, _) in by_mac.iter().enumerate() {
                        tuple_pos.push((fi as u32, gi as u32, ti as u32));
                    }
                    groups.push(NsgMacFlows {
                        mac: format!("{:012X}", by_mac[0].group),
                        flow_tuples: by_mac.iter().map(|g| g.text.as_str()).collect(),
                    });
                }
                flows.push(NsgRuleFlows {
                    rule: RULES[by_rule[0].flow as usize],
                    flows: groups,
                });
            }
            serde_json::to_string(&NsgRecord {
                time: rtime,
                system_id: guid(seed, &[stream::FLOWS, 1, u64::from(a)]),
                category: "NetworkSecurityGroupFlowEvent",
                resource_id: sn.nsg_id.to_ascii_uppercase(),
                operation_name: "NetworkSecurityGroupFlowEvents",
                properties: NsgProps { version: 2, flows },
            })?
        } else {
            let vnet = &world.vnets[a as usize];
            let sub = &world.subs[vnet.sub as usize];
            let mut flows = Vec::new();
            for (fi, by_acl) in runs(rec, |g| g.flow).into_iter().enumerate() {
                let mut groups = Vec::new();
                for (gi, by_rule) in runs(by_acl, |g| g.group).into_iter().enumerate() {
                    for (ti, _) in by_rule.iter().enumerate() {
                        tuple_pos.push((fi as u32, gi as u32, ti as u32));
                    }
                    groups.push(VnetGroup {
                        rule: RULES[by_rule[0].group as usize],
                        flow_tuples: by_rule.iter().map(|g| g.text.as_str()).collect(),
                    });
                }
                flows.push(VnetAclFlows {
                    acl_id: guid(seed, &[stream::FLOWS, 2, u64::from(by_acl[0].flow)]),
                    flow_groups: groups,
                });
            }
            serde_json::to_string(&VnetRecord {
                time: rtime,
                flow_log_version: 4,
                flow_log_guid: guid(seed, &[stream::FLOWS, 3, u64::from(a)]),
                mac_address: format!("{mac:012X}"),
                category: "FlowLogFlowEvent",
                flow_log_resource_id: format!(
                    "/SUBSCRIPTIONS/{}/RESOURCEGROUPS/NETWORKWATCHERRG/PROVIDERS/MICROSOFT.NETWORK/NETWORKWATCHERS/NETWORKWATCHER_{}/FLOWLOGS/{}-FLOWLOG",
                    sub.id, sub.location, vnet.name
                )
                .to_ascii_uppercase(),
                target_resource_id: &vnet.id,
                operation_name: "FlowLogFlowEvent",
                flow_records: VnetFlowRecords { flows },
            })?
        };
        w.write_all(js.as_bytes())?;
        bytes += js.len() as u64;
        stats.records += 1;
        if let Some(tw) = truth_w.as_deref_mut() {
            for (g, (fi, gi, ti)) in rec.iter().zip(tuple_pos) {
                let Some(gt) = &g.truth else { continue };
                let vnet = &world.vnets[gt.vnet as usize];
                let end = |e: &(IpAddr, Holder, Option<u32>)| {
                    let (nic, vm) = match e.1 {
                        Holder::Nobody => (None, None),
                        Holder::Nic(n, v) => (
                            Some(world.nics[n as usize].id.clone()),
                            v.map(|v| world.vms[v as usize].clone()),
                        ),
                        Holder::Unseen(mac) => (Some(unseen_nic_id(world, gt.vnet, mac)), None),
                    };
                    EndTruth {
                        ip: e.0,
                        nic,
                        vm,
                        vnet: e.2.map(|w| world.vnets[w as usize].id.clone()),
                    }
                };
                let line = TupleTruth {
                    file: format!("flowlogs/{name}"),
                    record: ri as u32,
                    flow: fi,
                    group: gi,
                    tuple: ti,
                    format: if nsg { "nsg".into() } else { "vnet".into() },
                    at: g.t,
                    kind: gt.kind.name().into(),
                    scope: FlowScope {
                        vnet: (!nsg).then(|| vnet.id.clone()),
                        subscription: world.subs[vnet.sub as usize].id.clone(),
                    },
                    mac: format!("{:012X}", gt.mac),
                    capture: if gt.capture_src {
                        "src".into()
                    } else {
                        "dst".into()
                    },
                    src: end(&gt.src),
                    dst: end(&gt.dst),
                };
                serde_json::to_writer(&mut *tw, &line)?;
                tw.write_all(b"\n")?;
            }
        }
    }
    w.write_all(b"]}")?;
    bytes += 2;
    w.flush()?;
    Ok(bytes)
}

/// The id of an unseen scale-set instance's NIC (MAC `mac`, VNet `vn`).
fn unseen_nic_id(world: &World, vn: u32, mac: u64) -> String {
    let v = &world.vnets[vn as usize];
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/vmss-unseen/virtualMachines/{}/networkInterfaces/nic-{:06x}",
        world.subs[v.sub as usize].id,
        v.rg,
        mac & 0xFF_FFFF,
        mac & 0xFF_FFFF
    )
}

/// Reads `flowlogs/truth.jsonl` (empty when absent).
pub fn read_tuple_truth(dir: &Path) -> anyhow::Result<Vec<TupleTruth>> {
    let p = dir.join("flowlogs").join("truth.jsonl");
    if !p.exists() {
        return Ok(Vec::new());
    }
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", p.display())))
        .collect()
}
