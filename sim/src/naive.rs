//! The naive approach, run in Postgres on the same delivered data.
//!
//! One row per sighting (every delivered snapshot observation and NIC write
//! event: time, IP, VNet, NIC, VM), and windows
//! `window_end = lead(window_start) over (partition by ip order by window_start)`:
//! each owner is stretched until the next sighting of another owner of the
//! same IP. Run twice: partitioned by IP alone (as the well-known write-up
//! publishes it, which ignores the lookup's scope) and by (VNet, IP) (which
//! honours it). A lookup's answer is the window that contains its time.
//!
//! Everything happens in a scratch database `ipwho_naive_<random>` created
//! from `database_url` and dropped at the end, even on error.

use std::net::IpAddr;
use std::str::FromStr as _;

use anyhow::Context as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, Row as _};

use super::evidence::Evidence;
use super::time::{self, Micros};

/// A lookup as the naive query sees it (scope lower-cased).
#[derive(Clone, Debug)]
pub struct NaiveLookup {
    pub ip: IpAddr,
    pub at: Micros,
    pub vnet: Option<String>,
    pub subscription: Option<String>,
}

/// (NIC, VM) named by the naive query, lower-cased; `None` = no window.
pub type NaiveAnswer = Option<(String, Option<String>)>;

/// Answers of both variants, in lookup order.
pub struct NaiveAnswers {
    pub by_ip: Vec<NaiveAnswer>,
    pub by_vnet: Vec<NaiveAnswer>,
    pub sightings: usize,
    pub elapsed_ms: u64,
}

/// Runs both variants in a scratch database.
pub async fn run_naive(
    database_url: &str,
    ev: &Evidence,
    lookups: &[NaiveLookup],
) -> anyhow::Result<NaiveAnswers> {
    let started = std::time::Instant::now();
    let mut admin = PgConnection::connect(database_url)
        .await
        .with_context(|| "connecting to Postgres for the naive approach")?;
    let name = format!("ipwho_naive_{:016x}", rand::random::<u64>());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    let result = async {
        let opts = PgConnectOptions::from_str(database_url)?.database(&name);
        let mut conn = PgConnection::connect_with(&opts).await?;
        let r = answer(&mut conn, ev, lookups).await;
        conn.close().await.ok();
        r
    }
    .await;
    let dropped = sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    admin.close().await.ok();
    let (by_ip, by_vnet) = result?;
    dropped.with_context(|| format!("dropping scratch database {name}"))?;
    Ok(NaiveAnswers {
        by_ip,
        by_vnet,
        sightings: ev.sightings.len(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

async fn answer(
    conn: &mut PgConnection,
    ev: &Evidence,
    lookups: &[NaiveLookup],
) -> anyhow::Result<(Vec<NaiveAnswer>, Vec<NaiveAnswer>)> {
    sqlx::raw_sql(
        "CREATE TABLE sightings (t timestamptz NOT NULL, ip inet NOT NULL, vnet text NOT NULL, nic text NOT NULL, vm text);
         CREATE TABLE probes (id int PRIMARY KEY, ip inet NOT NULL, at timestamptz NOT NULL, vnet text, sub text);",
    )
    .execute(&mut *conn)
    .await?;

    let mut buf = Vec::with_capacity(1 << 20);
    let mut copy = conn
        .copy_in_raw("COPY sightings (t, ip, vnet, nic, vm) FROM STDIN")
        .await?;
    for s in &ev.sightings {
        let vm = s.vm.map(|v| ev.vms.name(v)).unwrap_or("\\N");
        buf.extend_from_slice(
            format!(
                "{}\t{}\t{}\t{}\t{}\n",
                time::fmt_us(s.t),
                s.ip,
                ev.vnets.name(s.vnet),
                ev.nics.name(s.nic),
                vm
            )
            .as_bytes(),
        );
        if buf.len() > 1 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
        }
    }
    if !buf.is_empty() {
        copy.send(std::mem::take(&mut buf)).await?;
    }
    copy.finish().await?;

    let mut copy = conn
        .copy_in_raw("COPY probes (id, ip, at, vnet, sub) FROM STDIN")
        .await?;
    for (i, l) in lookups.iter().enumerate() {
        buf.extend_from_slice(
            format!(
                "{i}\t{}\t{}\t{}\t{}\n",
                l.ip,
                time::fmt_us(l.at),
                l.vnet.as_deref().unwrap_or("\\N"),
                l.subscription.as_deref().unwrap_or("\\N"),
            )
            .as_bytes(),
        );
        if buf.len() > 1 << 20 {
            copy.send(std::mem::take(&mut buf)).await?;
        }
    }
    if !buf.is_empty() {
        copy.send(std::mem::take(&mut buf)).await?;
    }
    copy.finish().await?;

    sqlx::raw_sql(
        "CREATE TABLE win_ip AS
           SELECT ip, vnet, nic, vm, t AS window_start,
                  lead(t) OVER (PARTITION BY ip ORDER BY t, nic) AS window_end
           FROM sightings;
         CREATE INDEX ON win_ip (ip, window_start);
         CREATE TABLE win_vnet AS
           SELECT ip, vnet, nic, vm, t AS window_start,
                  lead(t) OVER (PARTITION BY vnet, ip ORDER BY t, nic) AS window_end
           FROM sightings;
         CREATE INDEX ON win_vnet (ip, window_start);
         ANALYZE;",
    )
    .execute(&mut *conn)
    .await?;

    let by_ip = fetch(
        conn,
        "SELECT p.id, w.nic, w.vm FROM probes p
         LEFT JOIN LATERAL (
           SELECT nic, vm FROM win_ip w
           WHERE w.ip = p.ip AND w.window_start <= p.at
             AND (w.window_end IS NULL OR p.at < w.window_end)
           ORDER BY w.window_start DESC LIMIT 1) w ON true
         ORDER BY p.id",
        lookups.len(),
    )
    .await?;
    let by_vnet = fetch(
        conn,
        "SELECT p.id, w.nic, w.vm FROM probes p
         LEFT JOIN LATERAL (
           SELECT nic, vm FROM win_vnet w
           WHERE w.ip = p.ip AND w.window_start <= p.at
             AND (w.window_end IS NULL OR p.at < w.window_end)
             AND (p.vnet IS NULL OR w.vnet = p.vnet)
             AND (p.sub IS NULL OR w.vnet LIKE '/subscriptions/' || p.sub || '/%')
           ORDER BY w.window_start DESC LIMIT 1) w ON true
         ORDER BY p.id",
        lookups.len(),
    )
    .await?;
    Ok((by_ip, by_vnet))
}

async fn fetch(
    conn: &mut PgConnection,
    sql: &'static str,
    n: usize,
) -> anyhow::Result<Vec<NaiveAnswer>> {
    let rows = sqlx::query(sql).fetch_all(&mut *conn).await?;
    let mut out = vec![None; n];
    for r in rows {
        let id: i32 = r.try_get(0)?;
        let nic: Option<String> = r.try_get(1)?;
        let vm: Option<String> = r.try_get(2)?;
        if let Some(nic) = nic {
            out[id as usize] = Some((nic, vm));
        }
    }
    Ok(out)
}
