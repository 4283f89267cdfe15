//! `scripts/gen-catalogs.py` on a cut-down `src/config.c` (tests/fixtures/gen-catalogs/):
//! types, ranges, flags, enum words, aliases and defaults read from the config table,
//! hidden parameters left out, the curated notes merged; the output is a catalog the
//! binary reads and the catalog schema accepts.

use std::process::Command;

use cacheflow::pure::catalog::{Catalog, ParamType};
use serde_json::Value;

use crate::example_repo::crate_dir;

#[test]
fn the_generator_reads_a_config_table_into_the_expected_catalog() {
    let dir = crate_dir().join("tests/fixtures/gen-catalogs");
    let out = Command::new("python3")
        .arg(crate_dir().join("scripts/gen-catalogs.py"))
        .args(["--engine", "redis", "--version", "7.0", "--source-dir"])
        .arg(&dir)
        .args(["--repository", "example.invalid/fixture"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut got: Value = serde_json::from_str(&text).unwrap();
    // The commit is the checkout's (or "unknown" outside git): the one varying field.
    let commit = got["source"]["commit"].as_str().unwrap().to_owned();
    assert!(commit == "unknown" || commit.len() == 40, "commit {commit}");
    got["source"]["commit"] = Value::String("<commit>".into());
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_eq!(got, want);

    let params = got["parameters"].as_object().unwrap();
    assert!(
        !params.contains_key("use-exit-on-panic"),
        "hidden: left out"
    );
    assert_eq!(params["slave-read-only"]["runtime"], true, "alias kept");
    assert_eq!(params["requirepass"]["secret"], true);
    assert!(params["requirepass"].get("default").is_none());
    // Defaults written as macros of server.h are expanded, never taken as empty.
    assert_eq!(
        params["proc-title-template"]["default"],
        "{title} {listen-addr} {server-mode}"
    );
    assert_eq!(params["hz"]["default"], "10");
    assert_eq!(params["unixsocket"]["default"], "");

    let catalog: Catalog = serde_json::from_str(&text).unwrap();
    assert!(catalog.needs_restart("databases"));
    assert!(matches!(
        catalog.get("maxmemory-clients").unwrap().ty,
        ParamType::Size { percent: true, .. }
    ));
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(crate_dir().join("schemas/engines/catalog.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
}
