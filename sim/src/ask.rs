//! Asking a running ipwho what the scorer scores: `POST /v1/lookups` for
//! the probes, and `POST /v1/enrich` for the flow-log files, both ends of
//! every tuple read back from the enriched lines.
//!
//! An enriched end's `ipwho` block is read as a lookup answer: its
//! `status`, `nic` (as the owner), `vm_status` and `vm` (the VM with its
//! own status; a server without `vm_status` gives the VM the NIC's), and
//! `candidates`. Lines are matched to tuples by `azure.flowlog.record`
//! (the record's index in the posted file) and `azure.flowlog.tuple` (the
//! tuple's index in its record).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::feed::post_json;
use super::time::{self, Micros};

#[derive(Serialize)]
struct LookupReq<'a> {
    ip: String,
    at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    vnet: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscription: Option<&'a str>,
}

#[derive(Deserialize)]
struct LookupResp {
    answers: Vec<Answer>,
}

/// An answer of `POST /v1/lookups`, or an enriched end read as one (the
/// fields the scorer reads).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Answer {
    pub status: String,
    #[serde(default)]
    pub owner: Option<Owner>,
    /// The owner's VM with a status of its own (absent from older servers,
    /// which put the VM in `owner`).
    #[serde(default)]
    pub vm: Option<VmAnswer>,
    #[serde(default)]
    pub candidates: Vec<Owner>,
    /// Enriched ends: where the end was looked for (`scoped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoped: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VmAnswer {
    pub status: String,
    #[serde(default)]
    pub vm: Option<IdRef>,
}

impl Answer {
    /// The VM the answer names firmly (`confirmed` or `probable`), if any.
    pub fn firm_vm(&self) -> Option<Option<String>> {
        let firm = |s: &str| matches!(s.to_ascii_lowercase().as_str(), "confirmed" | "probable");
        match (&self.vm, &self.owner) {
            (Some(v), _) if firm(&v.status) => {
                Some(v.vm.as_ref().map(|v| v.id.to_ascii_lowercase()))
            }
            (Some(_), _) => None,
            (None, Some(o)) if firm(&self.status) => {
                Some(o.vm.as_ref().map(|v| v.id.to_ascii_lowercase()))
            }
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Owner {
    pub nic: IdRef,
    #[serde(default)]
    pub vm: Option<IdRef>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct IdRef {
    pub id: String,
}

/// One lookup to send.
pub struct Ask<'a> {
    pub ip: std::net::IpAddr,
    pub at: Micros,
    pub vnet: Option<&'a str>,
    pub subscription: Option<&'a str>,
}

/// Asks `POST /v1/lookups` in batches of `batch`; answers in order.
pub async fn ask_lookups(
    client: &reqwest::Client,
    base: &str,
    lookups: &[Ask<'_>],
    batch: usize,
) -> anyhow::Result<Vec<Answer>> {
    let mut answers = Vec::with_capacity(lookups.len());
    for chunk in lookups.chunks(batch.clamp(1, 10_000)) {
        let reqs: Vec<LookupReq> = chunk
            .iter()
            .map(|l| LookupReq {
                ip: l.ip.to_string(),
                at: time::fmt_us(l.at),
                vnet: l.vnet,
                subscription: l.subscription,
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "lookups": reqs }))?;
        let url = format!("{base}/v1/lookups");
        let v = post_json(client, &url, body, "application/json").await?;
        let resp: LookupResp =
            serde_json::from_value(v).with_context(|| format!("decoding the answer of {url}"))?;
        anyhow::ensure!(
            resp.answers.len() == chunk.len(),
            "{url} returned {} answers for {} lookups",
            resp.answers.len(),
            chunk.len()
        );
        answers.extend(resp.answers);
    }
    Ok(answers)
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    source: Option<LineEnd>,
    #[serde(default)]
    destination: Option<LineEnd>,
    #[serde(default)]
    azure: Option<LineAzure>,
}

#[derive(Deserialize)]
struct LineAzure {
    flowlog: LineFlowlog,
}

#[derive(Deserialize)]
struct LineFlowlog {
    record: u32,
    tuple: u32,
}

#[derive(Deserialize)]
struct LineEnd {
    #[serde(default)]
    ipwho: Option<Block>,
}

#[derive(Deserialize)]
struct Block {
    status: String,
    #[serde(default)]
    scoped: Option<String>,
    #[serde(default)]
    nic: Option<IdRef>,
    #[serde(default)]
    vm_status: Option<String>,
    #[serde(default)]
    vm: Option<IdRef>,
    #[serde(default)]
    candidates: Vec<Candidate>,
}

#[derive(Deserialize)]
struct Candidate {
    nic: String,
}

impl Block {
    fn answer(self) -> Answer {
        let vm = self.vm_status.map(|status| VmAnswer {
            status,
            vm: self.vm.clone(),
        });
        Answer {
            status: self.status,
            owner: self.nic.map(|nic| Owner { nic, vm: self.vm }),
            vm,
            candidates: self
                .candidates
                .into_iter()
                .map(|c| Owner {
                    nic: IdRef { id: c.nic },
                    vm: None,
                })
                .collect(),
            scoped: self.scoped,
        }
    }
}

/// Both ends of every tuple of one enriched file, by (record, tuple).
pub type Enriched = HashMap<(u32, u32), (Answer, Answer)>;

/// Posts the flow-log file `dir/file` to `POST /v1/enrich` and reads back
/// both ends of every tuple.
pub async fn ask_enrich(
    client: &reqwest::Client,
    base: &str,
    dir: &Path,
    file: &str,
) -> anyhow::Result<Enriched> {
    let bytes = fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?;
    let url = format!("{base}/v1/enrich");
    let resp = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .with_context(|| format!("reading {url}"))?;
    anyhow::ensure!(
        status.is_success(),
        "POST {url} ({file}): {status}: {}",
        text.chars().take(500).collect::<String>()
    );
    let mut out = Enriched::new();
    for (i, l) in text.lines().enumerate() {
        if l.starts_with("{\"ipwho.") {
            anyhow::ensure!(
                !l.starts_with("{\"ipwho.error\""),
                "{file}: the service rejected part of it: {l}"
            );
            continue;
        }
        let line: Line =
            serde_json::from_str(l).with_context(|| format!("{url} ({file}): line {}", i + 1))?;
        let (Some(az), Some(src), Some(dst)) = (line.azure, line.source, line.destination) else {
            anyhow::bail!(
                "{url} ({file}): line {} has no azure.flowlog or ends",
                i + 1
            );
        };
        let end = |e: LineEnd| {
            e.ipwho.map_or_else(
                || Answer {
                    status: "unknown".into(),
                    ..Default::default()
                },
                Block::answer,
            )
        };
        out.insert((az.flowlog.record, az.flowlog.tuple), (end(src), end(dst)));
    }
    Ok(out)
}
