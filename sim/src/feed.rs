//! Delivering a generated estate to a running ipwho over HTTP, as a collector
//! would: the accuracy report feeds it whole, and the benchmarks prepare the
//! request bodies first and time only the posts.

use std::fs;
use std::path::Path;

use anyhow::Context as _;

use super::FeedItem;
use super::write::SnapshotMeta;

/// One request to send: path (from the service's root), content type, body.
#[derive(Clone, Debug)]
pub struct Body {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// The `POST /v1/snapshots` bodies of the snapshot directory `sdir`, one per
/// page, the last marked `last_page`. `as_snapshot` posts the same pages as
/// another snapshot: `(snapshot_id, taken_at)`.
pub fn snapshot_bodies(
    sdir: &Path,
    as_snapshot: Option<(&str, &str)>,
) -> anyhow::Result<Vec<Body>> {
    let meta_path = sdir.join("meta.json");
    let meta: SnapshotMeta = serde_json::from_slice(
        &fs::read(&meta_path).with_context(|| format!("reading {}", meta_path.display()))?,
    )
    .with_context(|| format!("parsing {}", meta_path.display()))?;
    let (id, taken_at) = as_snapshot.unwrap_or((&meta.snapshot_id, &meta.taken_at));
    meta.pages
        .iter()
        .enumerate()
        .map(|(i, page)| {
            let mut v: serde_json::Value = serde_json::from_slice(&fs::read(sdir.join(page))?)
                .with_context(|| format!("parsing {}/{page}", sdir.display()))?;
            let value = v
                .get_mut("value")
                .map(serde_json::Value::take)
                .unwrap_or_default();
            let bytes = serde_json::to_vec(&serde_json::json!({
                "snapshot_id": id,
                "taken_at": taken_at,
                "subscriptions": meta.subscriptions,
                "complete": meta.complete,
                "last_page": i + 1 == meta.pages.len(),
                "value": value,
            }))?;
            Ok(Body {
                path: "/v1/snapshots",
                content_type: "application/json",
                bytes,
            })
        })
        .collect()
}

/// The `POST /v1/activity` body of an Activity Log file of the estate.
pub fn activity_body(dir: &Path, file: &str) -> anyhow::Result<Body> {
    let bytes = fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?;
    Ok(Body {
        path: "/v1/activity",
        content_type: if file.ends_with(".jsonl") {
            "application/x-ndjson"
        } else {
            "application/json"
        },
        bytes,
    })
}

/// The bodies of one delivery of the estate in `dir`.
pub fn item_bodies(dir: &Path, item: &FeedItem) -> anyhow::Result<Vec<Body>> {
    match item {
        FeedItem::Snapshot { dir: rel, .. } => snapshot_bodies(&dir.join(rel), None),
        FeedItem::Activity { file, .. } => Ok(vec![activity_body(dir, file)?]),
        FeedItem::Topology { file, .. } => {
            let bytes = fs::read(dir.join(file)).with_context(|| format!("reading {file}"))?;
            Ok(vec![Body {
                path: "/v1/topology",
                content_type: "application/json",
                bytes,
            }])
        }
    }
}

/// Posts `body` to the service at `base`; an error unless it answers 2xx.
/// Returns the JSON answer (`Null` when it is not JSON).
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    body: Body,
) -> anyhow::Result<serde_json::Value> {
    post_json(
        client,
        &format!("{base}{}", body.path),
        body.bytes,
        body.content_type,
    )
    .await
}

pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    ctype: &str,
) -> anyhow::Result<serde_json::Value> {
    let resp = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, ctype)
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "POST {url}: {status}: {}",
            text.chars().take(500).collect::<String>()
        );
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}
