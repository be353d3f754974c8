//! `truth.jsonl`: the owner intervals written out, one a line, and read back.

use std::fs;
use std::io::{BufWriter, Write as _};
use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::time::{self, Micros};

use super::World;

impl World {
    /// Writes `truth.jsonl`: one owner interval per line.
    pub fn write_truth(&self, path: &Path) -> anyhow::Result<()> {
        let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        for iv in &self.intervals {
            let nic = &self.nics[iv.nic as usize];
            let line = TruthLine {
                vnet: &self.vnets[iv.vnet as usize].id,
                subscription: &self.subs[self.vnets[iv.vnet as usize].sub as usize].id,
                ip: iv.ip,
                from: time::fmt_us(iv.from),
                to: iv.to.map(time::fmt_us),
                nic: &nic.id,
                vm: iv.vm.map(|v| self.vms[v as usize].as_str()),
                scale_set: nic.vmss,
            };
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        Ok(())
    }
}

/// A line of `truth.jsonl`.
#[derive(Serialize)]
struct TruthLine<'a> {
    vnet: &'a str,
    subscription: &'a str,
    ip: IpAddr,
    from: String,
    to: Option<String>,
    nic: &'a str,
    vm: Option<&'a str>,
    scale_set: bool,
}

/// A line of `truth.jsonl`, as read back.
#[derive(Clone, Debug, Deserialize)]
pub struct TruthRecord {
    pub vnet: String,
    pub subscription: String,
    pub ip: IpAddr,
    #[serde(with = "time::serde_us")]
    pub from: Micros,
    #[serde(with = "time::serde_us::opt")]
    pub to: Option<Micros>,
    pub nic: String,
    pub vm: Option<String>,
    #[serde(default)]
    pub scale_set: bool,
}
