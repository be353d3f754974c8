//! The committed OpenAPI document is the one the code generates.
//! Regenerate with `cargo run -- openapi > openapi/openapi.json`.

#[test]
fn committed_openapi_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).expect("openapi/openapi.json is committed");
    let generated = ipwho::api::openapi_json();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[test]
fn every_path_declares_its_errors() {
    let doc: serde_json::Value = serde_json::from_str(&ipwho::api::openapi_json()).unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("200"),
                "{method} {path} documents its answer"
            );
            let takes_input = path.contains('{')
                || op.get("parameters").is_some()
                || op.get("requestBody").is_some();
            if takes_input && !path.starts_with("/readyz") {
                assert!(
                    responses.keys().any(|k| k.starts_with('4')),
                    "{method} {path} documents its 4xx errors"
                );
            }
        }
    }
}
