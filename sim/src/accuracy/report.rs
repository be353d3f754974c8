//! The report rendered as text: status tables, settled lookups, the naive
//! query, the targets.

use std::fmt::Write as _;

use super::{AccuracyReport, NaiveRow, Section, SettledRow};

const STATUSES: &[&str] = &[
    "confirmed",
    "probable",
    "possible",
    "ambiguous",
    "unknown",
    "mac_mismatch",
];

/// A section's answers counted the way the naive approach's are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Correct {
    /// `confirmed`/`probable` on the right NIC, or `unknown` when nobody held it.
    pub firm: u64,
    /// Any status naming the right NIC, or `unknown` when nobody held it.
    pub named: u64,
    /// `confirmed`/`probable` naming a wrong NIC (misled included).
    pub firm_wrong: u64,
    pub firm_misled: u64,
}

impl Section {
    pub fn correct(&self) -> Correct {
        let row = |s: &str| self.by_status.get(s).cloned().unwrap_or_default();
        let (c, p, q, u) = (
            row("confirmed"),
            row("probable"),
            row("possible"),
            row("unknown"),
        );
        Correct {
            firm: c.right + p.right + u.truth_none,
            named: c.right + p.right + q.right + u.truth_none,
            firm_wrong: c.wrong + p.wrong,
            firm_misled: c.wrong_misled + p.wrong_misled,
        }
    }
}

fn section_table(out: &mut String, title: &str, s: &Section) {
    let _ = writeln!(out, "{title}: {} lookups", s.lookups);
    let _ = writeln!(
        out,
        "  {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10} {:>10}",
        "status", "n", "right", "wrong", "misled", "vm-only", "truth-none", "truth-in", "truth-out"
    );
    let mut names: Vec<&str> = STATUSES.to_vec();
    for k in s.by_status.keys() {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    for st in names {
        let r = s.by_status.get(st).cloned().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<10} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10} {:>10}",
            st,
            r.n,
            r.right,
            r.wrong,
            r.wrong_misled,
            r.wrong_vm_only,
            r.truth_none,
            r.truth_in_candidates,
            r.truth_not_in_candidates
        );
    }
}

fn settled_line(out: &mut String, name: &str, r: &SettledRow) {
    let by: Vec<String> = r
        .by_status
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        out,
        "  {:<26} {:>7}  hedged {:>5}  wrong {:>5}  ({})",
        name,
        r.n,
        r.hedged,
        r.wrong,
        by.join(", ")
    );
}

fn naive_line(out: &mut String, name: &str, r: &NaiveRow) {
    let _ = writeln!(
        out,
        "  {:<26} {:>7} {:>7} {:>7} {:>10} {:>12} {:>12}",
        name,
        r.n,
        r.right,
        r.wrong,
        r.wrong_truth_none,
        r.no_answer_truth_none,
        r.no_answer_truth_owner
    );
}

impl AccuracyReport {
    /// The plain-text table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ipwho accuracy: {} (seed {}) against {}",
            self.dir, self.seed, self.base_url
        );
        let f = &self.feed;
        let _ = writeln!(
            out,
            "fed {} snapshots ({} pages), {} activity files, {:.1} MB in {:.1} s; {} lookups in {:.1} s",
            f.snapshots,
            f.pages,
            f.activity_files,
            f.bytes as f64 / 1e6,
            f.feed_ms as f64 / 1e3,
            f.lookups,
            f.lookup_ms as f64 / 1e3
        );
        out.push('\n');
        section_table(&mut out, "Probes", &self.probes);
        out.push('\n');
        section_table(&mut out, "Flow-tuple ends", &self.flow_ends);
        out.push('\n');
        let _ = writeln!(
            out,
            "Settled by the delivered evidence (probes and flow ends):"
        );
        settled_line(&mut out, "one NIC -> confirmed", &self.settled.confirmed);
        settled_line(&mut out, "  and its VM -> confirmed", &self.settled.vm);
        settled_line(&mut out, "nobody -> unknown", &self.settled.unknown);
        settled_line(
            &mut out,
            "(contested, not a target)",
            &self.settled.contested,
        );
        if let Some(n) = &self.naive {
            out.push('\n');
            let _ = writeln!(
                out,
                "Naive lead() windows in Postgres ({} sightings, {:.1} s):",
                n.sightings,
                n.elapsed_ms as f64 / 1e3
            );
            let _ = writeln!(
                out,
                "  {:<26} {:>7} {:>7} {:>7} {:>10} {:>12} {:>12}",
                "variant", "n", "right", "wrong", "wrong/none", "none/none", "none/owner"
            );
            naive_line(&mut out, "by ip: probes", &n.by_ip.probes);
            naive_line(&mut out, "by ip: flow ends", &n.by_ip.flow_ends);
            naive_line(&mut out, "by (vnet, ip): probes", &n.by_vnet.probes);
            naive_line(&mut out, "by (vnet, ip): flow ends", &n.by_vnet.flow_ends);
            out.push('\n');
            let _ = writeln!(
                out,
                "Correct answers: the right NIC named (ipwho: firm = confirmed/probable, named = any status), or none when nobody held it:"
            );
            for (name, sec, ip, vnet) in [
                ("probes", &self.probes, &n.by_ip.probes, &n.by_vnet.probes),
                (
                    "flow ends",
                    &self.flow_ends,
                    &n.by_ip.flow_ends,
                    &n.by_vnet.flow_ends,
                ),
            ] {
                let c = sec.correct();
                let _ = writeln!(
                    out,
                    "  {name:<10} ipwho firm {:>6} named {:>6} firm-wrong {:>5} (misled {:>4})   naive by ip {:>6} wrong {:>5}   by (vnet, ip) {:>6} wrong {:>5}",
                    c.firm,
                    c.named,
                    c.firm_wrong,
                    c.firm_misled,
                    ip.right + ip.no_answer_truth_none,
                    ip.wrong,
                    vnet.right + vnet.no_answer_truth_none,
                    vnet.wrong,
                );
            }
        }
        out.push('\n');
        let _ = writeln!(
            out,
            "By kind (ipwho right = confirmed/probable right or unknown when nobody owned it):"
        );
        let _ = writeln!(
            out,
            "  {:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "kind",
            "n",
            "right",
            "firm-x",
            "poss-x",
            "hedged",
            "ip-ok",
            "ip-x",
            "vnet-ok",
            "vnet-x"
        );
        for k in &self.by_kind {
            let _ = writeln!(
                out,
                "  {:<22} {:>6} {:>7} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8}",
                k.kind,
                k.n,
                k.ipwho_right,
                k.ipwho_wrong_firm,
                k.ipwho_wrong_possible,
                k.ipwho_hedged,
                k.naive_ip_right,
                k.naive_ip_wrong,
                k.naive_vnet_right,
                k.naive_vnet_wrong
            );
        }
        out.push('\n');
        let t = &self.targets;
        if !self.notable.is_empty() {
            let _ = writeln!(
                out,
                "{} notable lookups kept (wrong, misled, settled but hedged): see --json \"notable\".",
                self.notable.len()
            );
            let _ = writeln!(
                out,
                "misled = wrong, but the delivered evidence pointed at that owner (a change hidden by a lost record)."
            );
        }
        let _ = writeln!(
            out,
            "Targets: wrong confirmed {} (misled {}), wrong probable {} (misled {}), wrong firm VM {}, settled but hedged {} => {}",
            t.wrong_confirmed,
            t.misled_confirmed,
            t.wrong_probable,
            t.misled_probable,
            t.wrong_vm_firm,
            t.settled_hedged,
            if t.met { "MET" } else { "NOT MET" }
        );
        out
    }
}
