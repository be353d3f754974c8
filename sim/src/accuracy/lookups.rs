//! What is asked and what is true of it: one lookup per probe and per
//! flow-tuple end, its request scope, its true owners, and what the
//! delivered evidence settles of it.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;

use crate::evidence::{Evidence, Interner, Scope};
use crate::flowlogs::read_tuple_truth;
use crate::probes::read_probes;
use crate::time::Micros;
use crate::truth::{Interval, TruthIndex, TruthRecord};

/// Where the delivered evidence is read for what it settles of a lookup.
pub(super) enum Settle {
    /// Claims within this scope: a probe's request scope; for a flow end,
    /// the VNet routing puts it in, when the evidence can place the
    /// capturing VNet (a VNet flow log names it; an NSG flow log's MAC
    /// names a NIC the evidence knows).
    In(Scope),
    /// The capturing end of a MAC no delivered evidence shows: nobody
    /// known captured it, so `unknown` is the settled answer.
    Nobody,
    /// The far end of an NSG record whose MAC no evidence shows: the
    /// capturing VNet is not known, so nothing is settled.
    Open,
}

/// One lookup with its scope and truth.
pub(super) struct Lookup {
    pub(super) ip: IpAddr,
    pub(super) at: Micros,
    /// Request scope, as spelled in the estate.
    pub(super) vnet: Option<String>,
    pub(super) subscription: Option<String>,
    /// What the evidence is asked to settle (see [`Settle`]).
    pub(super) settle: Settle,
    pub(super) kind: String,
    /// A flow end: (file, record, tuple index in the record, source end).
    pub(super) flow: Option<(String, u32, u32, bool)>,
    /// True owners (NIC, VM), lower case.
    pub(super) truth: Vec<(String, Option<String>)>,
}

/// The truth of `truth.jsonl`, indexed.
pub(crate) struct Truth {
    index: TruthIndex,
    vnets: Interner,
    nics: Interner,
    vms: Interner,
    vnet_sub: Vec<String>,
}

impl Truth {
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Truth> {
        let p = dir.join("truth.jsonl");
        let text = fs::read_to_string(&p)
            .with_context(|| format!("reading {} (generate with truth enabled)", p.display()))?;
        let mut vnets = Interner::default();
        let mut nics = Interner::default();
        let mut vms = Interner::default();
        let mut vnet_sub = Vec::new();
        let mut ivs = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let r: TruthRecord =
                serde_json::from_str(line).with_context(|| format!("parsing {}", p.display()))?;
            let v = vnets.id(&r.vnet);
            if v as usize >= vnet_sub.len() {
                vnet_sub.push(r.subscription.to_ascii_lowercase());
            }
            ivs.push(Interval {
                vnet: v,
                ip: r.ip,
                from: r.from,
                to: r.to,
                nic: nics.id(&r.nic),
                vm: r.vm.as_deref().map(|x| vms.id(x)),
            });
        }
        Ok(Truth {
            index: TruthIndex::new(ivs),
            vnets,
            nics,
            vms,
            vnet_sub,
        })
    }

    pub(crate) fn owners(
        &self,
        ip: IpAddr,
        at: Micros,
        scope: &Scope,
    ) -> Vec<(String, Option<String>)> {
        self.index
            .owners_at(ip, at, |v| match scope {
                Scope::Any => true,
                Scope::Vnet(k) => self.vnets.name(v) == k,
                Scope::Subscription(s) => &self.vnet_sub[v as usize] == s,
            })
            .into_iter()
            .map(|iv| {
                (
                    self.nics.name(iv.nic).to_string(),
                    iv.vm.map(|v| self.vms.name(v).to_string()),
                )
            })
            .collect()
    }
}

pub(crate) fn scope_of(vnet: Option<&str>, sub: Option<&str>) -> Scope {
    match (vnet, sub) {
        (Some(v), _) => Scope::Vnet(v.to_ascii_lowercase()),
        (None, Some(s)) => Scope::Subscription(s.to_ascii_lowercase()),
        (None, None) => Scope::Any,
    }
}

pub(super) fn build_lookups(
    dir: &Path,
    truth: &Truth,
    ev: &Evidence,
) -> anyhow::Result<Vec<Lookup>> {
    let mut out = Vec::new();
    for p in read_probes(dir)? {
        let scope = scope_of(p.vnet.as_deref(), p.subscription.as_deref());
        out.push(Lookup {
            ip: p.ip,
            at: p.at,
            truth: truth.owners(p.ip, p.at, &scope),
            vnet: p.vnet,
            subscription: p.subscription,
            settle: Settle::In(scope),
            kind: p.kind,
            flow: None,
        });
    }
    // Tuples are written in record order; their index in the record counts
    // across the record's flows and groups.
    let mut last: Option<(String, u32)> = None;
    let mut ordinal = 0u32;
    for tt in read_tuple_truth(dir)? {
        let here = (tt.file.clone(), tt.record);
        if last.as_ref() == Some(&here) {
            ordinal += 1;
        } else {
            ordinal = 0;
            last = Some(here);
        }
        for (end, role) in [(&tt.src, "src"), (&tt.dst, "dst")] {
            let (vnet, sub) = if tt.format == "vnet" {
                (tt.scope.vnet.clone(), None)
            } else {
                (None, Some(tt.scope.subscription.clone()))
            };
            let side = if role == tt.capture {
                "capture"
            } else {
                "peer"
            };
            out.push(Lookup {
                ip: end.ip,
                at: tt.at,
                truth: end
                    .nic
                    .iter()
                    .map(|n| {
                        (
                            n.to_ascii_lowercase(),
                            end.vm.as_ref().map(|v| v.to_ascii_lowercase()),
                        )
                    })
                    .collect(),
                vnet,
                subscription: sub,
                settle: match (
                    ev.macs.contains(&tt.mac),
                    tt.format == "vnet",
                    role == tt.capture,
                ) {
                    (true, ..) | (false, true, false) => {
                        Settle::In(scope_of(end.vnet.as_deref(), None))
                    }
                    (false, _, true) => Settle::Nobody,
                    (false, false, false) => Settle::Open,
                },
                kind: format!("flow-{}-{side}", tt.kind),
                flow: Some((tt.file.clone(), tt.record, ordinal, role == "src")),
            });
        }
    }
    Ok(out)
}

impl Lookup {
    /// Did the delivered evidence point at (nic, vm)? (Never for an end the
    /// evidence cannot place.)
    pub(super) fn pointed_at(&self, ev: &Evidence, nic: &str, vm: Option<Option<&str>>) -> bool {
        match &self.settle {
            Settle::In(scope) => ev.pointed_at(self.ip, self.at, scope, nic, vm),
            Settle::Nobody | Settle::Open => false,
        }
    }
}
