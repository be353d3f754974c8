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
