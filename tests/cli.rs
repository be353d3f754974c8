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
        vec!["lookup", "--help"],
        vec!["history", "--help"],
        vec!["status", "--help"],
        vec!["collect", "--help"],
        vec!["enrich", "--help"],
        vec!["demo", "--help"],
        vec!["openapi", "--help"],
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
