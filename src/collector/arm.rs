//! Resource Manager over HTTP: GETs with a bearer token, a request-rate
//! limit, bounded retries with backoff (honouring `Retry-After` up to a
//! configured ceiling), and list paging through `nextLink`.
//!
//! A `nextLink` is followed only when it points at the configured Resource
//! Manager origin (the bearer token goes nowhere else) and only once (a
//! loop of links ends the list as failed, not as complete).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use rand::Rng;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::auth::Credential;

/// How failed requests are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub base_delay: Duration,
    /// Longest backoff between attempts.
    pub max_delay: Duration,
    /// Longest `Retry-After` honoured. A throttled answer asking for more
    /// fails the list (the snapshot is then partial) instead of stalling.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` (attempt counts from 1): the
    /// base doubled per attempt, capped, with jitter in [½, 1].
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
        let d = exp.min(self.max_delay);
        let f: f64 = rand::rng().random_range(0.5..=1.0);
        d.mul_f64(f)
    }
}

/// Request counts of one collection.
#[derive(Default, Debug)]
pub struct Stats {
    /// HTTP requests sent to Resource Manager, retries included.
    pub requests: AtomicU64,
    /// Of those, repeats of a failed request.
    pub retries: AtomicU64,
    /// Answers 429 (throttled).
    pub throttled: AtomicU64,
    /// Lowest `x-ms-ratelimit-remaining-subscription-reads` seen (`u64::MAX`: none).
    pub min_remaining_reads: AtomicU64,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            min_remaining_reads: AtomicU64::new(u64::MAX),
            ..Default::default()
        }
    }

    fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// A token bucket shared by every request of a collection, with a pause
/// that a throttled answer imposes on all of them.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: tokio::sync::Mutex<(f64, Instant, Option<Instant>)>,
}

impl RateLimiter {
    /// `rate` requests per second on average (0: unlimited), at most
    /// `burst` at once.
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate,
            burst,
            state: tokio::sync::Mutex::new((burst, Instant::now(), None)),
        }
    }

    /// Waits for a slot.
    pub async fn acquire(&self) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = Instant::now();
            let paused = s.2.filter(|&until| until > now).map(|until| until - now);
            if self.rate <= 0.0 {
                paused.unwrap_or_default()
            } else {
                let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
                s.0 = (s.0 + refill).min(self.burst);
                s.1 = now;
                // Reserve a token now; a negative balance is a queue.
                s.0 -= 1.0;
                let own = if s.0 < 0.0 {
                    Duration::from_secs_f64(-s.0 / self.rate)
                } else {
                    Duration::ZERO
                };
                own.max(paused.unwrap_or_default())
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Holds every request back until `d` from now.
    pub async fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut s = self.state.lock().await;
        if s.2.is_none_or(|u| u < until) {
            s.2 = Some(until);
        }
    }
}

/// Resource Manager as a JSON source.
pub struct Arm {
    http: reqwest::Client,
    base: Url,
    credential: Credential,
    retry: RetryPolicy,
    limiter: RateLimiter,
    max_body_bytes: usize,
}

impl Arm {
    pub fn new(
        endpoint: &str,
        credential: Credential,
        retry: RetryPolicy,
        limiter: RateLimiter,
        timeout: Duration,
        max_body_bytes: usize,
    ) -> anyhow::Result<Self> {
        let base = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| anyhow::anyhow!("Resource Manager endpoint {endpoint:?}: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            anyhow::bail!("Resource Manager endpoint {endpoint:?} is not an http(s) URL");
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Arm {
            http,
            base,
            credential,
            retry,
            limiter,
            max_body_bytes,
        })
    }

    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// `{endpoint}/{segments...}?api-version=...`, each segment escaped.
    pub fn url(&self, segments: &[&str], api_version: &str) -> Url {
        let mut u = self.base.clone();
        {
            let mut p = u.path_segments_mut().expect("http(s) URLs have paths");
            p.pop_if_empty();
            p.extend(segments);
        }
        u.query_pairs_mut().append_pair("api-version", api_version);
        u
    }

    fn same_origin(&self, u: &Url) -> bool {
        u.scheme() == self.base.scheme()
            && u.host_str().map(str::to_ascii_lowercase)
                == self.base.host_str().map(str::to_ascii_lowercase)
            && u.port_or_known_default() == self.base.port_or_known_default()
    }

    /// GET `url` as JSON, retrying what is worth retrying. The error is a
    /// one-line reason fit for a snapshot's `partial_reason`.
    pub async fn get_json(&self, url: &Url, stats: &Stats) -> Result<Value, String> {
        let max = self.retry.max_attempts.max(1);
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            if attempt > 1 {
                Stats::bump(&stats.retries);
            }
            self.limiter.acquire().await;
            let token = match self.credential.token().await {
                Ok(t) => t,
                Err(e) if e.transient && attempt < max => {
                    let wait = self.retry.backoff(attempt);
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "token request failed; retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
                Err(e) => return Err(format!("authentication failed: {e}")),
            };
            Stats::bump(&stats.requests);
            let sent = self
                .http
                .get(url.clone())
                .bearer_auth(token.expose())
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    let why = format!("request failed: {}", e.without_url());
                    if attempt < max {
                        let wait = self.retry.backoff(attempt);
                        tracing::warn!(path = url.path(), error = %why, attempt, wait_ms = wait.as_millis() as u64, "retrying Resource Manager request");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    return Err(format!("{why} (after {attempt} attempts)"));
                }
            };
            if let Some(n) = resp
                .headers()
                .get("x-ms-ratelimit-remaining-subscription-reads")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                stats.min_remaining_reads.fetch_min(n, Ordering::Relaxed);
            }
            let status = resp.status();
            if status.is_success() {
                match self.read_body(resp).await {
                    Ok(body) => {
                        return serde_json::from_slice(&body).map_err(|e| {
                            format!("HTTP {} with a body that is not JSON: {e}", status.as_u16())
                        });
                    }
                    Err(why) if attempt < max => {
                        let wait = self.retry.backoff(attempt);
                        tracing::warn!(path = url.path(), error = %why, attempt, "retrying Resource Manager request");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(why) => return Err(format!("{why} (after {attempt} attempts)")),
                }
            }
            let retry_after = retry_after(resp.headers());
            let body = self.read_body(resp).await.unwrap_or_default();
            let why = describe_failure(status, &body);
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                // The token may have been revoked or expired early: once, get a new one.
                reauthenticated = true;
                self.credential.invalidate().await;
                attempt -= 1;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                Stats::bump(&stats.throttled);
            }
            let retryable = matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504);
            if !retryable {
                return Err(why);
            }
            if attempt >= max {
                return Err(format!("{why} (after {attempt} attempts)"));
            }
            let wait = match retry_after {
                Some(ra) if ra > self.retry.max_retry_after => {
                    return Err(format!(
                        "{why}: Retry-After {} s exceeds the {} s this collector waits",
                        ra.as_secs(),
                        self.retry.max_retry_after.as_secs()
                    ));
                }
                Some(ra) => {
                    // Throttling is per subscription and principal: hold every request back.
                    self.limiter.pause(ra).await;
                    ra
                }
                None => self.retry.backoff(attempt),
            };
            tracing::warn!(
                path = url.path(),
                status = status.as_u16(),
                attempt,
                wait_ms = wait.as_millis() as u64,
                "retrying Resource Manager request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if out.len() + c.len() > self.max_body_bytes {
                        return Err(format!(
                            "response larger than {} bytes",
                            self.max_body_bytes
                        ));
                    }
                    out.extend_from_slice(&c);
                }
                Ok(None) => return Ok(out),
                Err(e) => return Err(format!("reading the response: {}", e.without_url())),
            }
        }
    }

    /// Pages of a list, from `first` through every `nextLink`.
    pub fn pages<'a>(&'a self, first: Url, what: String, stats: &'a Stats) -> Pager<'a> {
        Pager {
            arm: self,
            next: Some(first),
            seen: HashSet::new(),
            page: 0,
            what,
            stats,
        }
    }
}

/// One list's pages, fetched one at a time.
pub struct Pager<'a> {
    arm: &'a Arm,
    next: Option<Url>,
    seen: HashSet<String>,
    page: usize,
    what: String,
    stats: &'a Stats,
}

impl Pager<'_> {
    /// The next page's body; `None` after the last page or the first error.
    pub async fn next_page(&mut self) -> Option<Result<Value, String>> {
        let url = self.next.take()?;
        self.page += 1;
        let n = self.page;
        let body = match self.arm.get_json(&url, self.stats).await {
            Ok(b) => b,
            Err(e) => return Some(Err(format!("{} page {n}: {e}", self.what))),
        };
        if crate::azure::nic::nic_array(&body).is_none() || !body.is_object() {
            return Some(Err(format!(
                "{} page {n}: no `value` array in the answer",
                self.what
            )));
        }
        if let Some(link) = crate::azure::nic::next_link(&body) {
            let parsed = match Url::parse(link) {
                Ok(u) => u,
                Err(_) => match self.arm.base.join(link) {
                    Ok(u) => u,
                    Err(e) => {
                        return Some(Err(format!(
                            "{} page {n}: nextLink is not a URL: {e}",
                            self.what
                        )));
                    }
                },
            };
            if !self.arm.same_origin(&parsed) {
                return Some(Err(format!(
                    "{} page {n}: nextLink points at {}, not at the Resource Manager endpoint",
                    self.what,
                    parsed.host_str().unwrap_or("?")
                )));
            }
            let mut parsed = parsed;
            if !parsed.query_pairs().any(|(k, _)| k == "api-version")
                && let Some((_, v)) = url.query_pairs().find(|(k, _)| k == "api-version")
            {
                let v = v.into_owned();
                parsed.query_pairs_mut().append_pair("api-version", &v);
            }
            if !self.seen.insert(parsed.as_str().to_string()) {
                return Some(Err(format!(
                    "{} page {n}: nextLink repeats an earlier page",
                    self.what
                )));
            }
            self.next = Some(parsed);
        }
        Some(Ok(body))
    }

    /// Pages fetched so far.
    pub fn pages(&self) -> usize {
        self.page
    }
}

/// `Retry-After` (seconds or an HTTP date), or the millisecond variants.
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = h
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let d = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or_default())
}

/// `HTTP 404 (ResourceNotFound: The Resource ... was not found.)`.
fn describe_failure(status: StatusCode, body: &[u8]) -> String {
    let detail = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let e = v.get("error")?;
        let code = e.get("code").and_then(Value::as_str).unwrap_or("");
        let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
        let msg: String = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        let msg: String = if msg.chars().count() > 200 {
            format!("{}…", msg.chars().take(200).collect::<String>())
        } else {
            msg
        };
        Some(format!("{code}: {msg}"))
    });
    match detail {
        Some(d) => format!("HTTP {} ({d})", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_milliseconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("x-ms-retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        let mut h = reqwest::header::HeaderMap::new();
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(1),
        };
        let b1 = p.backoff(1);
        assert!(b1 >= Duration::from_millis(50) && b1 <= Duration::from_millis(100));
        let b3 = p.backoff(3);
        assert!(b3 >= Duration::from_millis(200) && b3 <= Duration::from_millis(400));
        assert!(p.backoff(30) <= Duration::from_millis(500));
    }

    #[test]
    fn failures_name_the_arm_error_code() {
        let body = br#"{"error":{"code":"AuthorizationFailed","message":"The client  does not have\nauthorization"}}"#;
        assert_eq!(
            describe_failure(StatusCode::FORBIDDEN, body),
            "HTTP 403 (AuthorizationFailed: The client does not have authorization)"
        );
        assert_eq!(
            describe_failure(StatusCode::BAD_GATEWAY, b"<html>"),
            "HTTP 502"
        );
    }

    #[tokio::test]
    async fn the_rate_limiter_spaces_requests_after_the_burst() {
        let l = RateLimiter::new(100.0, 2);
        let t0 = Instant::now();
        for _ in 0..6 {
            l.acquire().await;
        }
        // Two at once, then one per 10 ms.
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(38) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        // A pause holds everyone back.
        let l = RateLimiter::new(0.0, 1);
        l.pause(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        l.acquire().await;
        assert!(t0.elapsed() >= Duration::from_millis(45));
    }
}
