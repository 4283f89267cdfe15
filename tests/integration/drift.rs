//! `cacheflow drift` against six real redis-server nodes brought in line by
//! `cacheflow sync`, then changed by hand: a live value changed, a value right live but
//! wrong in the config file, a node stopped.

use std::process::Command;

use crate::support::cacheflow_sync;
use crate::support::fleet::Fleet;
use crate::support::git::TestRepo;
use crate::support::servers::Reply;

fn drift(repo: &TestRepo, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["drift", "--direct", "--repo"])
        .arg(repo.path())
        .args(extra)
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hand_made_changes_unpersisted_values_and_silent_nodes_are_reported() {
    let mut fleet = Fleet::start();
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    let commit = repo.commit("cache: hz 20");
    let (code, out) = cacheflow_sync(repo.path(), &["--yes"], &[]);
    assert_eq!(code, 0, "{out}");

    let (code, out, err) = drift(&repo, &[]);
    assert_eq!(
        (code, out.as_str()),
        (0, "cache: 6 node(s), 0 drifted, 0 silent\nno drift\n"),
        "{err}"
    );

    // 3 am: someone runs CONFIG SET by hand on a2; on b2 the value is put back live but
    // the config file keeps the hand-made one; b3 is stopped.
    let ok = |reply: Reply| assert!(reply.is_ok(), "{reply:?}");
    ok(fleet.get("a2").client().cmd(&["CONFIG", "SET", "hz", "50"]));
    let mut b2 = fleet.get("b2").client();
    ok(b2.cmd(&["CONFIG", "SET", "hz", "77"]));
    ok(b2.cmd(&["CONFIG", "REWRITE"]));
    ok(b2.cmd(&["CONFIG", "SET", "hz", "20"]));
    let b3 = fleet.nodes.iter().position(|(id, _)| id == "b3").unwrap();
    drop(fleet.nodes.remove(b3));

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("report");
    let (code, out, err) = drift(&repo, &["--output-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "cache: 6 node(s), 2 drifted, 1 silent");
    assert_eq!(
        lines[1],
        "  a2 hz: expected 20, found 50 (live value differs)"
    );
    assert_eq!(
        lines[2],
        "  b2 hz: expected 20, found 77 (not persisted (lost on restart))"
    );
    assert!(lines[3].starts_with("  b3 silent: "), "{out}");
    assert_eq!(lines[4], "3 node(s) drifted or silent");
    assert_eq!(lines.len(), 5, "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("drift.json")).unwrap())
            .unwrap();
    let cluster = &json["clusters"][0];
    assert_eq!(cluster["cluster"], "cache");
    assert_eq!(
        cluster["drifted"],
        serde_json::json!([
            {"node": "a2", "parameters": [
                {"name": "hz", "kind": "differs", "expected": "20", "found": "50"}]},
            {"node": "b2", "parameters": [
                {"name": "hz", "kind": "not-persisted", "expected": "20", "found": "77"}]},
        ])
    );
    assert_eq!(cluster["silent"][0]["node"], "b3");
    assert_eq!(json["undeclared"], serde_json::json!([]));
    assert_eq!(json["revision"], commit);

    let md = std::fs::read_to_string(out_dir.join("drift.md")).unwrap();
    assert!(md.contains("| cache | 6 | 2 | 1 |"), "{md}");
    assert!(
        md.contains("| a2 | `hz` | `20` | `50` | live value differs |"),
        "{md}"
    );
    let html = std::fs::read_to_string(out_dir.join("drift.html")).unwrap();
    assert!(
        html.contains("<strong id=\"status\" class=\"bad\">3 node(s) drifted or silent</strong>")
    );
    assert!(html.contains("<td>a2</td><td><code>hz</code></td><td><code>20</code></td><td class=\"bad\"><code>50</code></td>"), "{html}");
    assert!(html.contains("<svg id=\"chart\""), "{html}");
    assert!(!html.contains("<script"), "self-contained, no script");
}
