//! The `ipwho` command line: every subcommand's definition is valid (clap
//! checks it when asked for help), and `openapi` prints the committed document.

use std::process::Command;

fn ipwho(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ipwho"))
        .args(args)
        .output()
        .expect("run ipwho")
}

#[test]
fn every_subcommand_parses() {
    for sub in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["migrate", "--help"],
        vec!["ingest", "snapshot", "--help"],
        vec!["ingest", "activity", "--help"],
        vec!["ingest", "topology", "--help"],
        vec!["lookup", "--help"],
        vec!["history", "--help"],
        vec!["status", "--help"],
        vec!["collect", "--help"],
        vec!["enrich", "--help"],
        vec!["demo", "--help"],
        vec!["openapi", "--help"],
        vec!["keys", "create", "--help"],
        vec!["keys", "list", "--help"],
        vec!["keys", "revoke", "--help"],
        vec!["keys", "generate", "--help"],
    ] {
        let out = ipwho(&sub);
        assert!(
            out.status.success(),
            "{sub:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub:?}"
        );
    }
}

#[test]
fn openapi_prints_the_committed_document() {
    let out = ipwho(&["openapi"]);
    assert!(out.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        committed.trim_end()
    );
}

#[test]
#[cfg_attr(
    not(feature = "samples"),
    ignore = "reads ../shared/samples: --features samples"
)]
fn a_directory_stands_for_every_file_below_it() {
    // As a storage export lays blobs out: nested folders of PT1H.json, one
    // of them gzip.
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/samples/azure");
    let nsg = std::fs::read(format!(
        "{samples}/elastic-integrations__azure_network_watcher_nsg__sample_logs__testdata.log.json"
    ))
    .unwrap();
    let vnet = std::fs::read(format!(
        "{samples}/MicrosoftDocs-azure-docs__network-watcher__flow-logs-read__vnet_record.json"
    ))
    .unwrap();
    let root = std::env::temp_dir().join(format!("ipwho-cli-dir-{}", std::process::id()));
    let (h1, h2) = (root.join("y=2025/h=01"), root.join("y=2025/h=02"));
    std::fs::create_dir_all(&h1).unwrap();
    std::fs::create_dir_all(&h2).unwrap();
    std::fs::write(h1.join("PT1H.json"), &nsg).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &vnet).unwrap();
    std::fs::write(h2.join("PT1H.json.gz"), gz.finish().unwrap()).unwrap();

    let each = |file: &[u8]| {
        let path = root.join("one.json");
        std::fs::write(&path, file).unwrap();
        let out = ipwho(&["enrich", "--floor", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().lines().count() - 1
    };
    let (n_nsg, n_vnet) = (each(&nsg), each(&vnet));
    assert!(n_nsg > 0 && n_vnet > 0);

    let out = ipwho(&["enrich", "--floor", root.to_str().unwrap()]);
    std::fs::remove_dir_all(&root).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), n_nsg + n_vnet + 1, "{text}");
    let summary: serde_json::Value = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    assert_eq!(
        summary["ipwho.summary"]["formats"],
        serde_json::json!({"nsg": 2, "vnet": 1, "flat": 0})
    );
}

mod common;

/// `ipwho lookup` and `history` read only the claims of the IP asked about
/// (and of the prefixes holding it), not every claim: what they load answers
/// every lookup of that IP exactly as the full index does.
#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn lookup_and_history_read_only_the_claims_of_the_ip(pool: sqlx::PgPool) {
    use common::*;
    use ipwho::index::Scope;
    use serde_json::json;
    const T0: &str = "2025-03-01T10:00:00Z";
    const T1: &str = "2025-03-01T10:15:00Z";
    const T2: &str = "2025-03-01T10:30:00Z";
    let app = TestApp::start(pool.clone()).await;
    // 10.0.0.4 in two VNets, handed over in one; a NIC with a /28 prefix;
    // a dual-stack NIC; one NIC deleted.
    let a = nic(SUB1, "vnet1", "nic-a", &["10.0.0.4"], Some("vm-a"));
    let b = nic(
        SUB2,
        "vnet2",
        "nic-b",
        &["10.0.0.4", "fd00::4"],
        Some("vm-b"),
    );
    let p = nic(SUB1, "vnet1", "nic-p", &["10.0.0.16/28"], Some("vm-p"));
    let c = nic(SUB1, "vnet1", "nic-c", &["10.0.0.4"], Some("vm-c"));
    for (t, sub, nics) in [
        (T0, SUB1, vec![a.clone(), p.clone()]),
        (T0, SUB2, vec![b.clone()]),
        (T2, SUB1, vec![c.clone(), p.clone()]),
    ] {
        let (code, v) = app
            .post_json("/v1/snapshots", &snapshot(t, &[sub], true, nics))
            .await;
        assert_eq!(code, 200, "{v}");
    }
    let (code, v) = app
        .post_json(
            "/v1/activity",
            &json!({"records": [activity("DELETE", T1, &a, "Success", false)]}),
        )
        .await;
    assert_eq!(code, 200, "{v}");

    let full = ipwho::sync::load(&pool, Default::default()).await.unwrap();
    let vnet1 = Scope::Vnet(format!(
        "/subscriptions/{SUB1}/resourcegroups/net/providers/microsoft.network/virtualnetworks/vnet1"
    ));
    let now = ipwho::store::micros(chrono::Utc::now());
    let mut named = 0;
    for ip in ["10.0.0.4", "10.0.0.20", "10.0.0.99", "fd00::4", "192.0.2.1"] {
        let addr: std::net::IpAddr = ip.parse().unwrap();
        let one = ipwho::sync::load_ip(&pool, addr, Default::default())
            .await
            .unwrap();
        assert!(one.len() <= 3, "{ip}: {} claims", one.len());
        for t in [T0, T1, "2025-03-01T10:20:00Z", T2, "2025-03-02T00:00:00Z"] {
            let t = ipwho::store::micros(t.parse().unwrap());
            for scope in [Scope::Any, vnet1.clone(), Scope::Subscription(SUB2.into())] {
                let (cx, cy) = (
                    full.claims_of_ip(addr, &scope),
                    one.claims_of_ip(addr, &scope),
                );
                let said = |c: &ipwho::index::Claims| -> String {
                    let a = c.answer(t);
                    let held = a.owner.as_ref().map(|o| c.continuity(o, t, now));
                    format!("{a:?} {:?} {held:?}", c.answer(now))
                };
                let (x, y) = (said(&cx), said(&cy));
                assert_eq!(x, y, "{ip} at {t} in {scope:?}");
                named += usize::from(x.contains("nic-"));
            }
        }
        let ids = |i: &ipwho::index::Index| -> Vec<String> {
            let mut v: Vec<String> = i
                .claims_of_ip(addr, &Scope::Any)
                .entries
                .iter()
                .map(|c| format!("{:?}", c.key))
                .collect();
            v.sort();
            v
        };
        assert_eq!(ids(&full), ids(&one), "{ip}");
    }
    assert!(named > 10, "the lookups named owners {named} times");

    // The command itself, against this database.
    let o = pool.connect_options();
    let url = format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap()
    );
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipwho"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .expect("run ipwho");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let v: serde_json::Value =
        serde_json::from_str(&run(&["lookup", "10.0.0.20", "--at", T1, "--json"])).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["owner"]["nic"]["name"].as_str()),
        (Some("confirmed"), Some("nic-p")),
        "{v}"
    );
    let text = run(&["history", "10.0.0.4"]);
    for name in ["nic-a", "nic-b", "nic-c"] {
        assert!(text.contains(name), "{text}");
    }
}

/// `ipwho ingest topology` stores VNet listing files (a directory's too)
/// as the API does, and says which flag gives what a file lacks.
#[sqlx::test(migrator = "ipwho::store::MIGRATOR")]
async fn ingest_topology_stores_listing_files(pool: sqlx::PgPool) {
    use common::*;
    use serde_json::json;
    const T0: &str = "2025-03-01T10:00:00Z";
    let o = pool.connect_options();
    let url = format!(
        "postgres://{}@{}:{}/{}",
        o.get_username(),
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap()
    );
    let root = std::env::temp_dir().join(format!("ipwho-cli-topology-{}", std::process::id()));
    std::fs::create_dir_all(root.join("pages")).unwrap();
    let page = |name: &str, v: serde_json::Value| {
        std::fs::write(root.join("pages").join(name), v.to_string()).unwrap();
    };
    page(
        "1.json",
        json!({"value": [vnet(SUB1, "hub", &["10.1.0.0/16"], &[("spoke", "Connected", &["10.2.0.0/16"])])],
               "nextLink": "https://management.azure.com/next"}),
    );
    page(
        "2.json",
        json!({"value": [vnet(SUB1, "spoke", &["10.2.0.0/16"], &[])]}),
    );
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ipwho"))
            .args(args)
            .env("DATABASE_URL", &url)
            .output()
            .expect("run ipwho")
    };
    let dir = root.join("pages");
    let out = run(&["ingest", "topology", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("taken_at is required") && err.contains("(--taken-at)"),
        "{err}"
    );
    let out = run(&[
        "ingest",
        "topology",
        dir.to_str().unwrap(),
        "--taken-at",
        T0,
        "--subscription",
        SUB1,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains("\"stored\":1")), "{text}");
    std::fs::remove_dir_all(&root).unwrap();
    let listings: i64 = sqlx::query_scalar("SELECT count(*) FROM topology_listings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(listings, 1, "both pages are one listing");
    let topo = ipwho::store::topology::load_topology(&pool).await.unwrap();
    let hub = vnet_id(SUB1, "hub").to_ascii_lowercase();
    let t = chrono::DateTime::parse_from_rfc3339(T0)
        .unwrap()
        .timestamp_micros();
    assert_eq!(
        topo.route(&hub, "10.2.0.1".parse().unwrap(), t),
        ipwho::topology::Route::Peered(vnet_id(SUB1, "spoke").to_ascii_lowercase().into())
    );
}
