//! Access control over real HTTP and a real database: API keys and their
//! scopes, revocation and expiry, keys stored only hashed, the safe
//! defaults of `serve`, and the browser-facing checks (simple POSTs, Host).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use ipwho::access::{Scopes, keys};
use serde_json::{Value, json};
use sha2::Digest;

const T0: &str = "2025-03-01T10:00:00Z";

async fn key(app: &TestApp, name: &str, scopes: &str) -> String {
    keys::create(&app.pool, name, Scopes::parse(scopes).unwrap(), None)
        .await
        .unwrap()
        .key
}

/// A request with `key` (as a bearer credential, or `X-Api-Key` when
/// `header`), answered as status, `WWW-Authenticate` and body.
async fn call(
    app: &TestApp,
    method: &str,
    path: &str,
    key: Option<&str>,
    header: bool,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut r = app.http.request(method.parse().unwrap(), app.url(path));
    if let Some(k) = key {
        r = if header {
            r.header("x-api-key", k)
        } else {
            r.bearer_auth(k)
        };
    }
    if method == "POST" {
        r = r
            .header("content-type", "application/json")
            .body(body.map(|b| b.to_string()).unwrap_or_default());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert_eq!(ct.as_deref(), Some("application/problem+json"), "{v}");
    }
    (status, challenge, v)
}

fn page() -> Value {
    snapshot(
        T0,
        &[SUB1],
        true,
        vec![nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"))],
    )
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn every_api_route_needs_a_key_with_its_scope(pool: sqlx::PgPool) {
    let app = TestApp::start_with_access(pool).await;
    // No key stored: access control is off (loopback), every caller anonymous.
    assert!(!app.access.enforced());
    let (code, _, v) = call(&app, "GET", "/v1/status", None, false, None).await;
    assert_eq!(code, 200, "{v}");

    let lookup = key(&app, "playbook", "lookup").await;
    let ingest = key(&app, "collector", "ingest").await;
    let enrich = key(&app, "siem", "enrich").await;
    let owner = format!("/v1/ips/10.0.0.4/owner?at={T0}");
    let nic_path = format!(
        "/v1/nics/subscriptions/{SUB1}/resourceGroups/rg-nic-a/providers/Microsoft.Network/networkInterfaces/nic-a/history"
    );
    let routes: Vec<(&str, String, &str, Option<Value>)> = vec![
        ("GET", owner.clone(), "lookup", None),
        ("GET", "/v1/ips/10.0.0.4/history".into(), "lookup", None),
        (
            "POST",
            "/v1/lookups".into(),
            "lookup",
            Some(json!({"lookups": [{"ip": "10.0.0.4", "at": T0}]})),
        ),
        ("GET", nic_path.clone(), "lookup", None),
        ("GET", "/v1/status".into(), "lookup", None),
        ("GET", "/v1/conflicts".into(), "lookup", None),
        ("GET", "/v1/topology".into(), "lookup", None),
        ("POST", "/v1/snapshots".into(), "ingest", Some(page())),
        (
            "POST",
            "/v1/activity".into(),
            "ingest",
            Some(json!({"records": []})),
        ),
        (
            "POST",
            "/v1/enrich".into(),
            "enrich",
            Some(json!({"records": []})),
        ),
    ];
    // The first key stored turns access control on.
    for (m, path, _, body) in &routes {
        let (code, challenge, v) = call(&app, m, path, None, false, body.clone()).await;
        assert_eq!(
            (code, v["code"].as_str()),
            (401, Some("unauthenticated")),
            "{m} {path}: {v}"
        );
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"ipwho\""),
            "{m} {path}"
        );
        assert!(
            v["detail"].as_str().unwrap().contains("no credential"),
            "{v}"
        );
        let (code, challenge, v) = call(
            &app,
            m,
            path,
            Some("ipwho_0123456789abcdef"),
            false,
            body.clone(),
        )
        .await;
        assert_eq!(code, 401, "{m} {path}: {v}");
        assert!(
            v["detail"].as_str().unwrap().contains("unknown API key"),
            "{v}"
        );
        assert_eq!(
            challenge.as_deref(),
            Some("Bearer realm=\"ipwho\", error=\"invalid_token\"")
        );
    }
    assert!(app.access.enforced());
    let key_of = |scope: &str| match scope {
        "lookup" => &lookup,
        "ingest" => &ingest,
        _ => &enrich,
    };
    for (m, path, scope, body) in &routes {
        // Right scope, by either header.
        for header in [false, true] {
            let (code, _, v) = call(&app, m, path, Some(key_of(scope)), header, body.clone()).await;
            assert!(
                code == 200 || code == 404,
                "{m} {path} with {scope}: {code} {v}"
            );
        }
        // Every other scope: 403, naming the scope needed.
        for other in ["lookup", "ingest", "enrich"]
            .into_iter()
            .filter(|s| s != scope)
        {
            let (code, challenge, v) =
                call(&app, m, path, Some(key_of(other)), false, body.clone()).await;
            assert_eq!(
                (code, v["code"].as_str()),
                (403, Some("forbidden")),
                "{m} {path} with {other}: {v}"
            );
            assert_eq!(
                challenge.as_deref(),
                Some(
                    format!(
                        "Bearer realm=\"ipwho\", error=\"insufficient_scope\", scope=\"{scope}\""
                    )
                    .as_str()
                )
            );
            assert!(v["detail"].as_str().unwrap().contains(scope), "{v}");
        }
    }
    // The snapshot the ingest key posted was stored and is answered.
    let (code, _, v) = call(&app, "GET", &owner, Some(&lookup), false, None).await;
    assert_eq!(
        (code, v["owner"]["nic"]["name"].as_str()),
        (200, Some("nic-a")),
        "{v}"
    );
    let (code, _, v) = call(&app, "GET", &nic_path, Some(&lookup), false, None).await;
    assert_eq!(code, 200, "{v}");
    // Health, readiness and the API documents stay open.
    for path in ["/healthz", "/readyz", "/openapi.json", "/docs/"] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    // An unknown path needs a credential too (nothing is told to strangers).
    let (code, _, _) = call(&app, "GET", "/v1/nothing", None, false, None).await;
    assert_eq!(code, 401);
    let (code, _, _) = call(&app, "GET", "/v1/nothing", Some(&lookup), false, None).await;
    assert_eq!(code, 404);
    // A malformed Authorization header is named.
    let r = app
        .http
        .get(app.url("/v1/status"))
        .header("authorization", format!("Basic {lookup}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("Bearer"), "{v}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn revoked_and_expired_keys_are_refused(pool: sqlx::PgPool) {
    let app = TestApp::start_with_access(pool).await;
    let k = key(&app, "short-lived", "lookup").await;
    let (code, _, _) = call(&app, "GET", "/v1/status", Some(&k), false, None).await;
    assert_eq!(code, 200);
    keys::revoke(&app.pool, "short-lived").await.unwrap();
    let (code, challenge, v) = call(&app, "GET", "/v1/status", Some(&k), false, None).await;
    assert_eq!(
        (code, v["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
    assert!(challenge.is_some());
    assert!(keys::revoke(&app.pool, "short-lived").await.is_err());

    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    let expired = keys::create(&app.pool, "expired", Scopes::ALL, Some(past))
        .await
        .unwrap()
        .key;
    let (code, _, v) = call(&app, "GET", "/v1/status", Some(&expired), false, None).await;
    assert_eq!(code, 401, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");
    let soon = chrono::Utc::now() + chrono::Duration::seconds(2);
    let brief = keys::create(&app.pool, "brief", Scopes::ALL, Some(soon))
        .await
        .unwrap()
        .key;
    let (code, _, _) = call(&app, "GET", "/v1/status", Some(&brief), false, None).await;
    assert_eq!(code, 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (code, _, v) = call(&app, "GET", "/v1/status", Some(&brief), false, None).await;
    assert_eq!(code, 401, "{v}");
    // Every key revoked or expired leaves access control on.
    assert!(app.access.enforced());
    let (code, _, _) = call(&app, "GET", "/v1/status", None, false, None).await;
    assert_eq!(code, 401);
    // A name is taken for good.
    assert!(matches!(
        keys::create(&app.pool, "short-lived", Scopes::ALL, None).await,
        Err(keys::KeyError::Exists(_))
    ));
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn keys_are_stored_only_hashed(pool: sqlx::PgPool) {
    let app = TestApp::start_with_access(pool).await;
    let k = key(&app, "hashed", "lookup,enrich").await;
    let rows: Vec<(String, String, Vec<u8>, Vec<String>)> =
        sqlx::query_as("SELECT name, prefix, secret_sha256, scopes FROM api_keys")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    let (name, prefix, hash, scopes) = &rows[0];
    assert_eq!(name, "hashed");
    assert_eq!(scopes, &["lookup", "enrich"]);
    assert_eq!(hash.as_slice(), &sha2::Sha256::digest(k.as_bytes())[..]);
    assert!(
        k.starts_with(prefix.as_str()) && prefix.len() < 16,
        "{prefix}"
    );
    // No column of the table holds the key, or its secret part, in clear.
    let secret = &k["ipwho_".len()..];
    let clear: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM api_keys k WHERE strpos(k::text, $1) > 0 OR strpos(encode(secret_sha256, 'hex'), $1) > 0",
    )
    .bind(&secret[8..40])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(clear, 0);
    // The listing shows the prefix and state, never the secret.
    let list = keys::list(&app.pool).await.unwrap();
    let shown = serde_json::to_string(&list).unwrap();
    assert!(!shown.contains(secret), "{shown}");
    assert_eq!(list[0].state, "active");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn posts_a_web_page_could_send_are_refused(pool: sqlx::PgPool) {
    // Access control off (no key): the checks hold all the same.
    let app = TestApp::start_with_access(pool).await;
    let body = page().to_string();
    for ct in [
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        for path in [
            "/v1/snapshots",
            "/v1/activity",
            "/v1/topology",
            "/v1/lookups",
            "/v1/enrich",
            "/v1/snapshots/s-1/done",
        ] {
            let mut r = app.http.post(app.url(path)).body(body.clone());
            if let Some(ct) = ct {
                r = r.header("content-type", ct);
            }
            let r = r.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 415, "{path} {ct:?}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["code"], "unsupported_media_type", "{v}");
            assert_eq!(v["parameter"], "content-type", "{v}");
        }
    }
    assert_eq!(app.count("snapshots").await, 0);
    // The same body as JSON, or NDJSON, is stored.
    for ct in ["application/json", "application/x-ndjson"] {
        let r = app
            .http
            .post(app.url("/v1/snapshots"))
            .header("content-type", ct)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{ct}");
    }
    assert_eq!(app.count("snapshots").await, 1);
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn a_host_not_configured_is_refused(pool: sqlx::PgPool) {
    let app = TestApp::start_with_access(pool).await;
    let get = |path: &'static str, host: &'static str| {
        let r = app.http.get(app.url(path)).header("host", host).send();
        async move {
            let r = r.await.unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    // DNS rebinding: a page of evil.example, resolved to 127.0.0.1.
    let (code, v) = get("/v1/status", "evil.example:8080").await;
    assert_eq!(
        (code, v["code"].as_str()),
        (421, Some("invalid_host")),
        "{v}"
    );
    assert!(
        v["detail"].as_str().unwrap().contains("--allowed-host"),
        "{v}"
    );
    let (code, _) = get("/openapi.json", "evil.example").await;
    assert_eq!(code, 421);
    for host in ["localhost:8080", "127.0.0.1", "[::1]:9"] {
        let (code, v) = get("/v1/status", host).await;
        assert_eq!(code, 200, "{host}: {v}");
    }
    // Probes may name the pod's address: health and readiness answer any host.
    let (code, _) = get("/healthz", "10.9.9.9:8080").await;
    assert_eq!(code, 200);
}

/// A server started by a test, stopped when dropped (also when the test fails).
#[derive(Debug)]
struct Served(std::process::Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `ipwho serve` with `args` on the test database, until it logs that
/// it listens (then its log lines so far and the child, to stop) or exits
/// (then its log and exit status).
fn serve(url: &str, args: &[&str]) -> (Vec<Value>, Result<Served, std::process::ExitStatus>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipwho"))
        .arg("serve")
        .args(args)
        .env("DATABASE_URL", url)
        .env("IPWHO_LOG_JSON", "true")
        .env_remove("IPWHO_LISTEN")
        .env_remove("IPWHO_API_KEY")
        .env_remove("IPWHO_GENERATE_API_KEY")
        .env_remove("IPWHO_INSECURE_NO_AUTH")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run ipwho serve");
    let mut lines = Vec::new();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or(json!({"fields": {"message": line}}));
        let listening = v["fields"]["message"] == "ipwho listening";
        lines.push(v);
        if listening {
            // Keep reading its log: a closed pipe would stop it.
            std::thread::spawn(move || stderr.for_each(drop));
            return (lines, Ok(Served(child)));
        }
    }
    let status = child.wait().unwrap();
    (lines, Err(status))
}

/// Waits until the server at `base` has loaded its claims.
async fn ready(base: &str) {
    for _ in 0..200 {
        let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
        if r.status().is_success() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{base} never became ready");
}

fn messages(lines: &[Value]) -> String {
    lines
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap_or("").to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn url_of(pool: &sqlx::PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap()
    )
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn serve_without_credentials_stays_on_loopback(pool: sqlx::PgPool) {
    let url = url_of(&pool);
    // A non-loopback address without credentials is refused.
    let (lines, r) = serve(&url, &["--listen", "0.0.0.0:0"]);
    let status = r.expect_err("refused");
    assert!(!status.success());
    let log = messages(&lines);
    assert!(
        log.contains("refusing to listen on 0.0.0.0:0 without credentials"),
        "{log}"
    );
    // On loopback it starts, access control off, and says so.
    let (lines, r) = serve(&url, &["--listen", "127.0.0.1:0"]);
    let child = r.expect("serving");
    let log = messages(&lines);
    assert!(
        log.contains("access control off") && log.contains("loopback only"),
        "{log}"
    );
    let addr = lines.last().unwrap()["fields"]["address"]
        .as_str()
        .unwrap()
        .to_string();
    ready(&format!("http://{addr}")).await;
    let r = reqwest::get(format!("http://{addr}/v1/status"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(child);
    // With --insecure-no-auth it serves the address, and warns.
    let (lines, r) = serve(&url, &["--listen", "0.0.0.0:0", "--insecure-no-auth"]);
    let child = r.expect("serving");
    assert!(messages(&lines).contains("access control OFF on a non-loopback address"));
    drop(child);

    // Keys made with `ipwho keys`: then any address, and a key is needed.
    let keys_cmd = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipwho"))
            .arg("keys")
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, key, err) = keys_cmd(&[
        "create",
        "--name",
        "ops",
        "--scope",
        "lookup,admin",
        "--expires",
        "30d",
    ]);
    assert!(ok, "{err}");
    assert!(key.starts_with("ipwho_") && key.len() == 70, "{key}");
    assert!(err.contains("shown only now"), "{err}");
    let (ok, _, err) = keys_cmd(&["create", "--name", "ops", "--scope", "lookup"]);
    assert!(!ok && err.contains("exists already"), "{err}");
    let (ok, _, err) = keys_cmd(&["create", "--name", "bad", "--scope", "lookup,write"]);
    assert!(!ok && err.contains("unknown scope \"write\""), "{err}");
    let (ok, list, _) = keys_cmd(&["list"]);
    assert!(
        ok && list.contains("ops\t") && list.contains("lookup,admin\tactive"),
        "{list}"
    );
    assert!(!list.contains(&key[10..]), "{list}");
    let (lines, r) = serve(&url, &["--listen", "0.0.0.0:0"]);
    let child = r.unwrap_or_else(|s| panic!("{s}: {}", messages(&lines)));
    assert!(messages(&lines).contains("access control on"));
    let port = lines.last().unwrap()["fields"]["address"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    ready(&format!("http://127.0.0.1:{port}")).await;
    let base = format!("http://127.0.0.1:{port}/v1/status");
    let http = reqwest::Client::new();
    assert_eq!(http.get(&base).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(
        http.get(&base)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let (ok, _, _) = keys_cmd(&["revoke", "ops"]);
    assert!(ok);
    // Revoked within the refresh interval (2 s).
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(
        http.get(&base)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401
    );
    drop(child);
    let (ok, list, _) = keys_cmd(&["list"]);
    assert!(ok && list.contains("revoked"), "{list}");
}

#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn serve_takes_a_key_from_the_environment_or_makes_one(pool: sqlx::PgPool) {
    let url = url_of(&pool);
    let given = ipwho::access::generate_key();
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ipwho"));
        c.args(["serve", "--listen", "0.0.0.0:0"])
            .env("DATABASE_URL", &url)
            .env("IPWHO_LOG_JSON", "true")
            .env_remove("IPWHO_API_KEY")
            .env_remove("IPWHO_GENERATE_API_KEY")
            .stderr(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        Served(c.spawn().unwrap())
    };
    let wait_listening = |child: &mut Served| -> String {
        let mut stderr = BufReader::new(child.0.stderr.take().unwrap()).lines();
        while let Some(line) = stderr.next() {
            let v: Value = serde_json::from_str(&line.unwrap()).unwrap_or(Value::Null);
            if v["fields"]["message"] == "ipwho listening" {
                std::thread::spawn(move || stderr.for_each(drop));
                let a = v["fields"]["address"].as_str().unwrap();
                return format!("http://127.0.0.1:{}", a.rsplit(':').next().unwrap());
            }
        }
        panic!("never listened");
    };
    // IPWHO_API_KEY: that key, every scope.
    let mut child = run(&[("IPWHO_API_KEY", &given)]);
    let base = wait_listening(&mut child);
    ready(&base).await;
    let http = reqwest::Client::new();
    let status = format!("{base}/v1/status");
    assert_eq!(
        http.get(&status).send().await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        http.get(&status)
            .header("x-api-key", &given)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    drop(child);
    // An empty IPWHO_API_KEY and IPWHO_GENERATE_API_KEY (as compose passes
    // them): a key made for the run, printed.
    let mut child = run(&[("IPWHO_API_KEY", ""), ("IPWHO_GENERATE_API_KEY", "true")]);
    let base = wait_listening(&mut child);
    ready(&base).await;
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let made = stdout
        .lines()
        .map(|l| l.unwrap())
        .find(|l| l.starts_with("ipwho_"))
        .unwrap();
    let status = format!("{base}/v1/status");
    assert_eq!(
        http.get(&status).send().await.unwrap().status().as_u16(),
        401
    );
    assert_eq!(
        http.get(&status)
            .bearer_auth(&made)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    drop(child);
    // Nothing was stored: the generated key lives for the run.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM api_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// A bearer token that is not an ipwho key goes to the plugged-in
/// validator (the seam for Entra ID tokens), and is refused without one.
#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn other_bearer_tokens_go_to_the_token_validator(pool: sqlx::PgPool) {
    use ipwho::access::{Access, AccessError, AllowedHosts, Caller, CallerKind, TokenValidator};
    struct Fixed;
    impl TokenValidator for Fixed {
        fn validate<'a>(
            &'a self,
            token: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Caller, AccessError>> {
            Box::pin(async move {
                match token {
                    "good-token" => Ok(Caller {
                        name: "logic-app/sub-1".into(),
                        kind: CallerKind::Token,
                        scopes: Scopes::parse("lookup").unwrap(),
                    }),
                    _ => Err(AccessError::Unauthenticated(
                        "token signature invalid".into(),
                    )),
                }
            })
        }
    }
    let headers = |v: &str| {
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", format!("Bearer {v}").parse().unwrap());
        h
    };
    let hosts = AllowedHosts::new(None, &[]);
    let plain = Access::load(pool.clone(), None, hosts.clone())
        .await
        .unwrap();
    // Off: no key, no validator.
    assert_eq!(
        plain
            .authenticate(&headers("good-token"))
            .await
            .unwrap()
            .kind,
        CallerKind::Anonymous
    );
    let access = Access::load(pool.clone(), None, hosts)
        .await
        .unwrap()
        .with_tokens(std::sync::Arc::new(Fixed));
    assert!(access.enforced());
    let c = access.authenticate(&headers("good-token")).await.unwrap();
    assert_eq!(
        (c.name.as_str(), c.kind),
        ("logic-app/sub-1", CallerKind::Token)
    );
    assert!(c.authorize(ipwho::access::Scope::Ingest).is_err());
    assert!(matches!(
        access.authenticate(&headers("forged")).await,
        Err(AccessError::Unauthenticated(m)) if m.contains("signature")
    ));
    // An ipwho key is still checked as a key.
    let k = keys::create(&pool, "k", Scopes::ALL, None)
        .await
        .unwrap()
        .key;
    access.refresh().await.unwrap();
    assert_eq!(
        access.authenticate(&headers(&k)).await.unwrap().kind,
        CallerKind::Key
    );
    let off = Access::load(pool, None, AllowedHosts::new(None, &[]))
        .await
        .unwrap();
    assert!(matches!(
        off.authenticate(&headers("good-token")).await,
        Err(AccessError::Unauthenticated(m)) if m.contains("not an ipwho API key")
    ));
}
