//! Random (ip, time, scope) probes with their true owners, weighted toward
//! the moments where attribution goes wrong.
//!
//! Kinds (share of probes):
//! - `quiet` (12%): the middle of an owner interval;
//! - `before_end` (12%), `after_start` (12%): within 10 minutes of an
//!   interval's end or start;
//! - `after_release` (12%): just after an owner let the IP go (delete,
//!   re-address) when nobody took it at once;
//! - `freed_gap` (10%): anywhere inside a gap of at least 10 minutes where
//!   the IP was free;
//! - `handover` (10%): around an end followed within 15 minutes by the next
//!   owner (scale-set churn, static moves);
//! - `lost_event` (10%): within 30 minutes of an Activity Log record that was
//!   never delivered;
//! - `tail` (6%): the last minutes of the window, after the final snapshot;
//! - `never_owned` (4%): a private IP of a VNet nobody ever owned;
//! - `public` (2%): a public IP.
//!
//! 70% of probes name the VNet, 10% the subscription, 20% no scope (so
//! 10.0.0.x of the two legacy VNets can have two true owners).

use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::flowlogs::{public_ip, unowned_ip};
use super::time::{self, MIN, MS, Micros};
use super::truth::{Interval, TruthIndex, World};
use super::write::LostEvent;
use super::{rng_for, stream};

/// A true owner of a probe's IP.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProbeOwner {
    pub nic: String,
    pub vm: Option<String>,
    pub vnet: String,
}

/// A line of `probes.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    pub id: u32,
    pub ip: IpAddr,
    #[serde(with = "time::serde_us")]
    pub at: Micros,
    /// Scope given with the lookup (ARM casing).
    pub vnet: Option<String>,
    pub subscription: Option<String>,
    pub kind: String,
    /// Every owner within the scope at `at` (empty: nobody).
    pub truth: Vec<ProbeOwner>,
}

const KINDS: &[(&str, f64)] = &[
    ("quiet", 0.12),
    ("before_end", 0.12),
    ("after_start", 0.12),
    ("after_release", 0.12),
    ("freed_gap", 0.10),
    ("handover", 0.10),
    ("lost_event", 0.10),
    ("tail", 0.06),
    ("never_owned", 0.04),
    ("public", 0.02),
];

/// Writes `probes.jsonl`; returns the number of probes.
pub fn write_probes(
    world: &World,
    truth: &TruthIndex,
    lost: &[LostEvent],
    out: &Path,
) -> anyhow::Result<usize> {
    let probes = make_probes(world, truth, lost);
    let p = out.join("probes.jsonl");
    let f = fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    for pr in &probes {
        serde_json::to_writer(&mut w, pr)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(probes.len())
}

/// Reads `probes.jsonl`.
pub fn read_probes(dir: &Path) -> anyhow::Result<Vec<Probe>> {
    let p = dir.join("probes.jsonl");
    let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("parsing {}", p.display())))
        .collect()
}

fn rand_in(rng: &mut ChaCha8Rng, lo: Micros, hi: Micros) -> Micros {
    if hi <= lo {
        lo
    } else {
        rng.random_range(lo..hi)
    }
}

/// Builds the probes of `world` (deterministic from the seed).
pub fn make_probes(world: &World, truth: &TruthIndex, lost: &[LostEvent]) -> Vec<Probe> {
    let mut rng = rng_for(world.cfg.seed, &[stream::PROBES]);
    let (t0, t_end) = (world.t0, world.t_end);
    let ivs = &truth.intervals;
    if ivs.is_empty() {
        return Vec::new();
    }
    let next_same = |i: usize| -> Option<&Interval> {
        ivs.get(i + 1)
            .filter(|n| n.vnet == ivs[i].vnet && n.ip == ivs[i].ip)
    };
    let in_window: Vec<usize> = (0..ivs.len())
        .filter(|&i| ivs[i].from < t_end && ivs[i].to.is_none_or(|e| e > t0))
        .collect();
    let ends: Vec<usize> = (0..ivs.len())
        .filter(|&i| ivs[i].to.is_some_and(|e| e > t0 && e < t_end))
        .collect();
    let starts: Vec<usize> = (0..ivs.len())
        .filter(|&i| ivs[i].from > t0 && ivs[i].from < t_end)
        .collect();
    let released: Vec<usize> = ends
        .iter()
        .copied()
        .filter(|&i| next_same(i).is_none_or(|n| n.from > ivs[i].to.unwrap() + MIN))
        .collect();
    let handovers: Vec<usize> = ends
        .iter()
        .copied()
        .filter(|&i| next_same(i).is_some_and(|n| n.from <= ivs[i].to.unwrap() + 15 * MIN))
        .collect();
    // Gaps of at least 10 minutes: (vnet, ip, from, to).
    let gaps: Vec<(u32, IpAddr, Micros, Micros)> = ends
        .iter()
        .filter_map(|&i| {
            let a = ivs[i].to.unwrap();
            let b = next_same(i).map_or(t_end, |n| n.from).min(t_end);
            (b - a >= 10 * MIN).then_some((ivs[i].vnet, ivs[i].ip, a, b))
        })
        .collect();
    let open_at_end: Vec<usize> = in_window
        .iter()
        .copied()
        .filter(|&i| ivs[i].to.is_none())
        .collect();
    let nic_ivs = {
        let mut m: std::collections::HashMap<u32, Vec<usize>> = std::collections::HashMap::new();
        for (i, iv) in ivs.iter().enumerate() {
            m.entry(iv.nic).or_default().push(i);
        }
        m
    };

    let pick = |rng: &mut ChaCha8Rng, v: &[usize]| -> Option<usize> {
        (!v.is_empty()).then(|| v[rng.random_range(0..v.len())])
    };
    let mut out = Vec::with_capacity(world.cfg.probes as usize);
    let mut attempts = 0u64;
    while out.len() < world.cfg.probes as usize && attempts < 50 * u64::from(world.cfg.probes) + 100
    {
        attempts += 1;
        let r: f64 = rng.random();
        let mut acc = 0.0;
        let mut kind = KINDS[0].0;
        for &(k, w) in KINDS {
            acc += w;
            if r < acc {
                kind = k;
                break;
            }
        }
        let got: Option<(u32, IpAddr, Micros)> = match kind {
            "quiet" => pick(&mut rng, &in_window).map(|i| {
                let iv = &ivs[i];
                let (a, b) = (iv.from.max(t0), iv.to.unwrap_or(t_end).min(t_end));
                let third = (b - a) / 3;
                (iv.vnet, iv.ip, rand_in(&mut rng, a + third, b - third))
            }),
            "before_end" => pick(&mut rng, &ends).map(|i| {
                let iv = &ivs[i];
                let e = iv.to.unwrap();
                (
                    iv.vnet,
                    iv.ip,
                    (e - rand_in(&mut rng, MS, 10 * MIN)).max(iv.from),
                )
            }),
            "after_start" => pick(&mut rng, &starts).map(|i| {
                let iv = &ivs[i];
                let t = iv.from + rand_in(&mut rng, MS, 10 * MIN);
                (iv.vnet, iv.ip, iv.to.map_or(t, |e| t.min(e - 1)))
            }),
            "after_release" => pick(&mut rng, &released).map(|i| {
                let iv = &ivs[i];
                let e = iv.to.unwrap();
                let limit = next_same(i).map_or(30 * MIN, |n| (n.from - e).min(30 * MIN));
                (iv.vnet, iv.ip, e + rand_in(&mut rng, MS, limit.max(2 * MS)))
            }),
            "freed_gap" => (!gaps.is_empty()).then(|| {
                let (v, ip, a, b) = gaps[rng.random_range(0..gaps.len())];
                (v, ip, rand_in(&mut rng, a + MS, b))
            }),
            "handover" => pick(&mut rng, &handovers).map(|i| {
                let iv = &ivs[i];
                let e = iv.to.unwrap();
                let n = next_same(i).expect("handover has a next owner").from;
                (iv.vnet, iv.ip, rand_in(&mut rng, e - 5 * MIN, n + 5 * MIN))
            }),
            "lost_event" => (!lost.is_empty())
                .then(|| lost[rng.random_range(0..lost.len())])
                .and_then(|l| {
                    let list = nic_ivs.get(&l.nic)?;
                    let i = list
                        .iter()
                        .copied()
                        .find(|&i| ivs[i].from == l.t || ivs[i].to == Some(l.t))
                        .unwrap_or(list[rng.random_range(0..list.len())]);
                    let iv = &ivs[i];
                    Some((iv.vnet, iv.ip, l.t + rand_in(&mut rng, -30 * MIN, 30 * MIN)))
                }),
            "tail" => pick(&mut rng, &open_at_end).map(|i| {
                let iv = &ivs[i];
                (
                    iv.vnet,
                    iv.ip,
                    rand_in(&mut rng, (t_end - 10 * MIN).max(iv.from), t_end),
                )
            }),
            "never_owned" => {
                let v = rng.random_range(0..world.vnets.len()) as u32;
                let v4 = world.vnets[v as usize].v6.is_none() || rng.random_bool(0.7);
                unowned_ip(world, truth, v, v4, &mut rng)
                    .map(|ip| (v, ip, rand_in(&mut rng, t0, t_end)))
            }
            _ => {
                let v = rng.random_range(0..world.vnets.len()) as u32;
                Some((v, public_ip(&mut rng, true), rand_in(&mut rng, t0, t_end)))
            }
        };
        let Some((vnet, ip, at)) = got else { continue };
        let at = at.clamp(t0, t_end - 1);
        let sub = world.vnets[vnet as usize].sub;
        let s: f64 = rng.random();
        let (scope_vnet, scope_sub) = if s < 0.7 {
            (Some(vnet), None)
        } else if s < 0.8 {
            (None, Some(sub))
        } else {
            (None, None)
        };
        let owners = truth.owners_at(ip, at, |v| match (scope_vnet, scope_sub) {
            (Some(sv), _) => v == sv,
            (None, Some(ss)) => world.vnets[v as usize].sub == ss,
            (None, None) => true,
        });
        let truth_owners = owners
            .iter()
            .map(|iv| ProbeOwner {
                nic: world.nics[iv.nic as usize].id.clone(),
                vm: iv.vm.map(|v| world.vms[v as usize].clone()),
                vnet: world.vnets[iv.vnet as usize].id.clone(),
            })
            .collect();
        out.push(Probe {
            id: out.len() as u32,
            ip,
            at,
            vnet: scope_vnet.map(|v| world.vnets[v as usize].id.clone()),
            subscription: scope_sub.map(|s| world.subs[s as usize].id.clone()),
            kind: kind.to_string(),
            truth: truth_owners,
        });
    }
    out
}
