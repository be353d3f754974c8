//! Every answer scored against the truth and the evidence, the naive query's
//! beside it; the report assembled.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use crate::ask::Owner;
use crate::evidence::{Evidence, Settled};
use crate::naive::{NaiveAnswer, NaiveLookup, run_naive};
use crate::read_manifest;
use crate::time;

use super::feed::{ask_all, feed};
use super::lookups::{Settle, Truth, build_lookups};
use super::{
    AccuracyOptions, AccuracyReport, KindRow, MAX_NOTABLE, NaiveReport, NaiveRow, Notable,
};

fn named(o: &Owner) -> (String, Option<String>) {
    (
        o.nic.id.to_ascii_lowercase(),
        o.vm.as_ref().map(|v| v.id.to_ascii_lowercase()),
    )
}

/// Right when `owner`'s NIC is the single true NIC.
fn owner_right(owner: &(String, Option<String>), truth: &[(String, Option<String>)]) -> bool {
    !truth.is_empty() && truth.iter().all(|t| t.0 == owner.0)
}

fn naive_score(row: &mut NaiveRow, ans: &NaiveAnswer, truth: &[(String, Option<String>)]) -> bool {
    row.n += 1;
    match ans {
        Some(o) => {
            if owner_right(o, truth) {
                row.right += 1;
                true
            } else {
                row.wrong += 1;
                if truth.is_empty() {
                    row.wrong_truth_none += 1;
                }
                false
            }
        }
        None if truth.is_empty() => {
            row.no_answer_truth_none += 1;
            true
        }
        None => {
            row.no_answer_truth_owner += 1;
            false
        }
    }
}

/// Runs the report with explicit options.
pub async fn run_accuracy_with(
    dir: &Path,
    opts: &AccuracyOptions,
) -> anyhow::Result<AccuracyReport> {
    let manifest = read_manifest(dir)?;
    let truth = Truth::load(dir)?;
    let evidence = Evidence::load(dir, &manifest)?;
    let lookups = build_lookups(dir, &truth, &evidence)?;
    let client = reqwest::Client::builder().timeout(opts.timeout).build()?;
    let base = opts.base_url.trim_end_matches('/');

    let mut report = AccuracyReport {
        dir: dir.display().to_string(),
        seed: manifest.config.seed,
        base_url: base.to_string(),
        ..Default::default()
    };
    if opts.feed {
        feed(&client, base, dir, &manifest.feed, &mut report.feed).await?;
    }
    let started = Instant::now();
    let answers = ask_all(&client, base, dir, &lookups, opts.batch).await?;
    report.feed.lookups = lookups.len() as u64;
    report.feed.lookup_ms = started.elapsed().as_millis() as u64;

    let naive = match &opts.database_url {
        Some(url) => {
            let nl: Vec<NaiveLookup> = lookups
                .iter()
                .map(|l| NaiveLookup {
                    ip: l.ip,
                    at: l.at,
                    vnet: l.vnet.as_ref().map(|v| v.to_ascii_lowercase()),
                    subscription: l.subscription.as_ref().map(|s| s.to_ascii_lowercase()),
                })
                .collect();
            Some(run_naive(url, &evidence, &nl).await?)
        }
        None => None,
    };

    let mut kinds: BTreeMap<String, KindRow> = BTreeMap::new();
    let mut naive_rep = naive.as_ref().map(|n| NaiveReport {
        sightings: n.sightings as u64,
        elapsed_ms: n.elapsed_ms,
        ..Default::default()
    });
    for (i, (l, a)) in lookups.iter().zip(&answers).enumerate() {
        let section = if l.flow.is_some() {
            &mut report.flow_ends
        } else {
            &mut report.probes
        };
        section.lookups += 1;
        let status = a.status.to_ascii_lowercase();
        let row = section.by_status.entry(status.clone()).or_default();
        row.n += 1;
        if l.truth.is_empty() {
            row.truth_none += 1;
        }
        let kr = kinds.entry(l.kind.clone()).or_insert_with(|| KindRow {
            kind: l.kind.clone(),
            ..Default::default()
        });
        kr.n += 1;
        let firm = status == "confirmed" || status == "probable";
        match status.as_str() {
            "confirmed" | "probable" | "possible" => match &a.owner {
                Some(o) => {
                    let o = named(o);
                    if owner_right(&o, &l.truth) {
                        row.right += 1;
                        if firm {
                            kr.ipwho_right += 1;
                        } else {
                            kr.ipwho_hedged += 1;
                        }
                        if let Some(vm) = a.firm_vm()
                            && !l.truth.iter().any(|t| t.1 == vm)
                        {
                            row.wrong_vm_only += 1;
                            if !l.pointed_at(&evidence, &o.0, Some(vm.as_deref())) {
                                report.targets.wrong_vm_firm += 1;
                            }
                        }
                    } else {
                        row.wrong += 1;
                        let misled = l.pointed_at(&evidence, &o.0, None);
                        if misled {
                            row.wrong_misled += 1;
                        }
                        if firm {
                            kr.ipwho_wrong_firm += 1;
                            if misled {
                                if status == "confirmed" {
                                    report.targets.misled_confirmed += 1;
                                } else {
                                    report.targets.misled_probable += 1;
                                }
                            } else if status == "confirmed" {
                                report.targets.wrong_confirmed += 1;
                            } else {
                                report.targets.wrong_probable += 1;
                            }
                        } else {
                            kr.ipwho_wrong_possible += 1;
                        }
                    }
                }
                None => {
                    row.wrong += 1;
                    if firm {
                        kr.ipwho_wrong_firm += 1;
                        if status == "confirmed" {
                            report.targets.wrong_confirmed += 1;
                        } else {
                            report.targets.wrong_probable += 1;
                        }
                    } else {
                        kr.ipwho_wrong_possible += 1;
                    }
                }
            },
            "ambiguous" => {
                kr.ipwho_hedged += 1;
                if !l.truth.is_empty() {
                    let cands: Vec<_> = a.candidates.iter().map(named).collect();
                    if l.truth.iter().all(|t| cands.iter().any(|c| c.0 == t.0)) {
                        row.truth_in_candidates += 1;
                    } else {
                        row.truth_not_in_candidates += 1;
                    }
                }
            }
            "unknown" if l.truth.is_empty() => kr.ipwho_right += 1,
            _ => kr.ipwho_hedged += 1,
        }

        // Settled lookups.
        let settled = match &l.settle {
            Settle::In(scope) => evidence.settled(l.ip, l.at, scope),
            Settle::Nobody => Settled::Unknown,
            Settle::Open => Settled::Open,
        };
        let mut why: Option<&str> = None;
        if firm
            && let Some(o) = &a.owner
            && !owner_right(&named(o), &l.truth)
        {
            let o = named(o);
            why = Some(if l.pointed_at(&evidence, &o.0, None) {
                "misled"
            } else {
                "wrong"
            });
        }
        let srow = match settled {
            Settled::Confirmed { .. } => Some((&mut report.settled.confirmed, "confirmed")),
            Settled::Contested { .. } => Some((&mut report.settled.contested, "confirmed")),
            Settled::Unknown => Some((&mut report.settled.unknown, "unknown")),
            Settled::Open => None,
        };
        if let Some((sr, expect)) = srow {
            sr.n += 1;
            *sr.by_status.entry(status.clone()).or_default() += 1;
            // A capturing end whose NIC (by MAC) held no claim there says so.
            let capture = l.kind.ends_with("-capture");
            let settled_answer =
                status == expect || (capture && expect == "unknown" && status == "mac_mismatch");
            if !settled_answer {
                sr.hedged += 1;
                if !matches!(settled, Settled::Contested { .. }) {
                    why = why.or(Some(if expect == "confirmed" {
                        "settled-confirmed-hedged"
                    } else {
                        "settled-unknown-hedged"
                    }));
                }
            } else if expect == "confirmed" {
                let right_owner = match (&settled, &a.owner) {
                    (Settled::Confirmed { nic, .. } | Settled::Contested { nic, .. }, Some(o)) => {
                        named(o).0 == evidence.nics.name(*nic)
                    }
                    _ => false,
                };
                if !right_owner {
                    sr.wrong += 1;
                    why = why.or(Some("settled-confirmed-wrong"));
                } else if let Settled::Confirmed { vm: Some(vm), .. } = &settled {
                    let vr = &mut report.settled.vm;
                    vr.n += 1;
                    let (vstatus, named_vm) = match &a.vm {
                        Some(v) => (
                            v.status.to_ascii_lowercase(),
                            v.vm.as_ref().map(|x| x.id.to_ascii_lowercase()),
                        ),
                        None => (status.clone(), a.owner.as_ref().and_then(|o| named(o).1)),
                    };
                    *vr.by_status.entry(vstatus.clone()).or_default() += 1;
                    let want = vm.map(|v| evidence.vms.name(v).to_string());
                    if vstatus != "confirmed" {
                        vr.hedged += 1;
                        why = why.or(Some("settled-vm-hedged"));
                    } else if named_vm != want {
                        vr.wrong += 1;
                        why = why.or(Some("settled-vm-wrong"));
                    }
                }
            }
        }
        if let Some(why) = why
            && report.notable.len() < MAX_NOTABLE
        {
            let settled_s = match &settled {
                Settled::Confirmed { nic, vm } => format!(
                    "confirmed {} {}",
                    evidence.nics.name(*nic),
                    match vm {
                        Some(Some(v)) => evidence.vms.name(*v),
                        Some(None) => "no-vm",
                        None => "vm-open",
                    }
                ),
                Settled::Contested { nic } => format!("contested {}", evidence.nics.name(*nic)),
                Settled::Unknown => "unknown".into(),
                Settled::Open => "open".into(),
            };
            report.notable.push(Notable {
                why: why.into(),
                kind: l.kind.clone(),
                ip: l.ip.to_string(),
                at: time::fmt_us(l.at),
                vnet: l.vnet.clone(),
                subscription: l.subscription.clone(),
                status: status.clone(),
                answer: a.owner.as_ref().map(named),
                truth: l.truth.clone(),
                settled: settled_s,
            });
        }

        if let (Some(n), Some(nr)) = (&naive, naive_rep.as_mut()) {
            let (vi, vv) = if l.flow.is_some() {
                (&mut nr.by_ip.flow_ends, &mut nr.by_vnet.flow_ends)
            } else {
                (&mut nr.by_ip.probes, &mut nr.by_vnet.probes)
            };
            if naive_score(vi, &n.by_ip[i], &l.truth) {
                kr.naive_ip_right += 1;
            } else if n.by_ip[i].is_some() {
                kr.naive_ip_wrong += 1;
            }
            if naive_score(vv, &n.by_vnet[i], &l.truth) {
                kr.naive_vnet_right += 1;
            } else if n.by_vnet[i].is_some() {
                kr.naive_vnet_wrong += 1;
            }
        }
    }
    report.naive = naive_rep;
    report.by_kind = kinds.into_values().collect();
    report.targets.settled_hedged =
        report.settled.confirmed.hedged + report.settled.vm.hedged + report.settled.unknown.hedged;
    report.targets.met = report.targets.wrong_confirmed == 0
        && report.targets.wrong_vm_firm == 0
        && report.targets.wrong_probable == 0
        && report.targets.settled_hedged == 0;
    Ok(report)
}
