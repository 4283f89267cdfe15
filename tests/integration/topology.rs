//! Live topology through the real binary, on real replicating redis-server processes
//! (two shards of a primary and two replicas): a hand-made failover, then `snapshot`,
//! `plan` and `drift` read the live roles; a full resync during a batch fails the
//! rollout's gates with its figures.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::fleet::Fleet;
use crate::support::git::{journal_messages, TestRepo};
use crate::support::servers::RedisServer;

fn cacheflow(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One field of `INFO replication` / `INFO stats`.
fn info_field(server: &RedisServer, section: &str, field: &str) -> String {
    let text = server
        .client()
        .cmd(&["INFO", section])
        .as_str()
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}: {text}"))
        .to_owned()
}

/// Point `replica` at `primary` and wait for its link to be up.
fn follow(replica: &RedisServer, primary: &RedisServer) {
    let port = primary.port().to_string();
    let reply = replica.client().cmd(&["REPLICAOF", "127.0.0.1", &port]);
    assert!(reply.is_ok(), "REPLICAOF answered {reply:?}");
    wait_for_link(replica);
}

fn wait_for_link(replica: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while info_field(replica, "replication", "master_link_status") != "up" {
        assert!(
            Instant::now() < deadline,
            "the replication link did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The failover of shard a by hand: a2 becomes its primary, a1 and a3 follow a2.
fn fail_over_by_hand(fleet: &Fleet) {
    let (a1, a2, a3) = (fleet.get("a1"), fleet.get("a2"), fleet.get("a3"));
    assert!(a2.client().cmd(&["REPLICAOF", "NO", "ONE"]).is_ok());
    follow(a1, a2);
    follow(a3, a2);
    assert_eq!(info_field(a2, "replication", "role"), "master");
    assert_eq!(info_field(a2, "replication", "connected_slaves"), "2");
}

#[test]
fn after_a_hand_made_failover_plan_drift_and_snapshot_follow_the_live_roles() {
    let fleet = Fleet::start();
    fail_over_by_hand(&fleet);
    let repo = TestRepo::new();
    // hz changes on every node; databases is start-only: a restart of every node.
    repo.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    hz: 20\n    databases: 32"),
    );
    repo.commit("cache: hz 20, 32 databases");
    let path = repo.path().to_str().unwrap();

    // The snapshot shows who follows whom, offsets and the replicas a primary feeds.
    let (code, out, err) = cacheflow(&["snapshot", "--repo", path]);
    assert_eq!(code, 0, "{err}");
    let snap: Value = serde_json::from_str(&out).expect("the snapshot is JSON");
    let node = |id: &str| snap["nodes"][id]["health"].clone();
    let a2_addr = fleet.get("a2").addr();
    assert_eq!(node("a1")["role"], "replica");
    assert_eq!(node("a1")["replicationLink"], "up");
    assert_eq!(node("a1")["topology"]["primary"], a2_addr.as_str());
    assert!(node("a1")["topology"]["offset"].is_u64(), "{}", node("a1"));
    assert_eq!(node("a2")["role"], "primary");
    let mut fed: Vec<String> = node("a2")["topology"]["replicas"]
        .as_array()
        .expect("a2 lists its replicas")
        .iter()
        .map(|r| {
            assert_eq!(r["state"], "online", "{r}");
            assert!(r["offset"].is_u64() && r["lagSeconds"].is_u64(), "{r}");
            r["address"].as_str().unwrap().to_owned()
        })
        .collect();
    fed.sort();
    let mut want = vec![fleet.get("a1").addr(), fleet.get("a3").addr()];
    want.sort();
    assert_eq!(fed, want);
    // a2 served a full copy to each of a1 and a3 when they followed it.
    assert_eq!(
        node("a2")["topology"]["fullSyncs"],
        info_field(fleet.get("a2"), "stats", "sync_full")
            .parse::<u64>()
            .unwrap()
    );
    assert_eq!(node("b1")["role"], "primary");
    assert_eq!(
        node("b2")["topology"]["primary"],
        fleet.get("b1").addr().as_str()
    );

    // The plan: the declared/live difference in words, the live replica a1 first, the
    // live primary a2 last of its shard, the restart risk on the live primaries.
    let (code, text, err) = cacheflow(&["plan", "--repo", path, "--direct"]);
    assert_eq!(code, 2, "{text}{err}");
    assert!(
        text.contains("  ~ a1: declared primary, runs as a replica of a2\n"),
        "{text}"
    );
    assert!(
        text.contains("  ~ a2: declared replica, runs as a primary\n"),
        "{text}"
    );
    assert!(text.contains("  a1 (shard a, replica): "), "{text}");
    assert!(text.contains("  a2 (shard a, primary): "), "{text}");
    let (code, json, err) = cacheflow(&["plan", "--repo", path, "--direct", "--format", "json"]);
    assert_eq!(code, 2, "{err}");
    let plan: Value = serde_json::from_str(&json).unwrap();
    let cache = &plan["clusters"][0];
    let batches: Vec<Vec<String>> = cache["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["batches"].as_array().unwrap().clone())
        .map(|b| {
            b.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        batches,
        vec![vec!["a1"], vec!["b2", "a3"], vec!["b3", "a2"], vec!["b1"],]
    );
    let restart = cache["risks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "primary-restart")
        .expect("a primary-restart risk");
    assert_eq!(restart["nodes"], serde_json::json!(["a2", "b1"]));
    assert_eq!(
        cache["topology"],
        serde_json::json!([
            {"node": "a1", "text": "declared primary, runs as a replica of a2"},
            {"node": "a2", "text": "declared replica, runs as a primary"},
        ])
    );

    // Drift reports it beside the drifted parameters; it is not drift by itself.
    let (_, text, err) = cacheflow(&["drift", "--direct", "--repo", path]);
    assert!(
        text.contains("  a1: declared primary, runs as a replica of a2\n"),
        "{text}{err}"
    );
    assert!(
        text.contains("  a2: declared replica, runs as a primary\n"),
        "{text}"
    );
}

#[test]
fn a_cluster_without_roles_is_ordered_by_what_the_nodes_run_as() {
    let fleet = Fleet::start();
    let repo = TestRepo::new();
    // No `role` anywhere: the live roles decide, nothing is reported as different.
    let yaml = fleet
        .cluster_yaml("    hz: 20")
        .replace(", role: primary}", "}")
        .replace(", role: replica}", "}");
    assert!(!yaml.contains("role:"), "{yaml}");
    repo.write("clusters/cache.yaml", &yaml);
    repo.commit("cache: hz 20, roles left out");
    let path = repo.path().to_str().unwrap();
    let (code, json, err) = cacheflow(&["plan", "--repo", path, "--direct", "--format", "json"]);
    assert_eq!(code, 2, "{err}");
    let plan: Value = serde_json::from_str(&json).unwrap();
    let cache = &plan["clusters"][0];
    let order: Vec<&str> = cache["stages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["batches"].as_array().unwrap())
        .flat_map(|b| b.as_array().unwrap())
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(order, vec!["a2", "b2", "a3", "b3", "a1", "b1"]);
    assert!(cache.get("topology").is_none(), "{cache}");
}

#[test]
fn a_full_resync_during_a_batch_fails_the_gates_with_its_figures() {
    let fleet = Fleet::start();
    let repo = TestRepo::new();
    let yaml = fleet
        .cluster_yaml_with("    hz: 20", "stages: [1, '100%']\n    bake: 4s")
        .replace(
            "gates: {minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}",
            "gates: {minOpsPerSec: 0, maxLatencyIncreaseMs: 1000, maxFullResyncs: 0}",
        );
    assert!(yaml.contains("maxFullResyncs: 0"), "{yaml}");
    repo.write("clusters/cache.yaml", &yaml);
    repo.commit("cache: hz 20, no full resync allowed");
    let a1 = fleet.get("a1");
    let before: u64 = info_field(a1, "stats", "sync_full").parse().unwrap();

    let mut sync = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["sync", "--repo"])
        .arg(repo.path())
        .args(["--interval", "200ms", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cacheflow binary runs");
    // The canary (a2, a replica of a1) gets hz 20; during its bake a3 leaves its
    // primary and comes back: a1 serves it a full copy.
    let canary = fleet.get("a2");
    let deadline = Instant::now() + Duration::from_secs(30);
    while canary.client().config_get("hz")["hz"] != "20" {
        assert!(Instant::now() < deadline, "the canary was never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a3 = fleet.get("a3");
    assert!(a3.client().cmd(&["REPLICAOF", "NO", "ONE"]).is_ok());
    follow(a3, a1);
    let after: u64 = info_field(a1, "stats", "sync_full").parse().unwrap();
    assert_eq!(after, before + 1, "a3 came back by a full resync");

    let status = sync.wait().expect("sync ends");
    let mut out = String::new();
    sync.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    sync.stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    let reason = format!(
        "a1: 1 full resync of its replicas since the rollout began (sync_full {before} → {after}; at most 0)"
    );
    assert!(
        out.contains(&format!("cache: rolled-back: gates failed: {reason}")),
        "{out}"
    );
    // The canary was put back.
    assert_eq!(canary.client().config_get("hz")["hz"], "10");
    let entries = journal_messages(repo.repository());
    let judged = entries
        .iter()
        .find(|m| m.contains("gates of batch 1 failed"))
        .unwrap_or_else(|| panic!("{entries:#?}"));
    assert!(judged.contains(&reason), "{judged}");
    assert!(
        judged.contains(&format!(
            "replication: [{{\"node\":\"a1\",\"fullSyncsBefore\":{before},\"fullSyncs\":{after}}}]"
        )),
        "{judged}"
    );
}

/// Send `signal` (`STOP`, `CONT`) to a server's process.
fn signal(server: &RedisServer, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &server.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed");
}

#[test]
fn a_replica_left_behind_during_its_primarys_batch_fails_the_lag_gates() {
    let fleet = Fleet::start();
    // Every node but a1 already runs hz 20: the rollout is one batch, a1 alone.
    for (id, n) in &fleet.nodes {
        if id != "a1" {
            assert!(n.client().cmd(&["CONFIG", "SET", "hz", "20"]).is_ok());
        }
    }
    let repo = TestRepo::new();
    let yaml = fleet
        .cluster_yaml_with("    hz: 20", "stages: [1, '100%']\n    bake: 4s")
        .replace(
            "gates: {minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}",
            "gates: {minOpsPerSec: 0, maxLatencyIncreaseMs: 1000, maxReplicaLagBytes: 1000, maxReplicaLagSeconds: 2}",
        );
    repo.write("clusters/cache.yaml", &yaml);
    repo.commit("cache: hz 20 on a1, replicas kept close");

    let mut sync = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["sync", "--repo"])
        .arg(repo.path())
        .args(["--interval", "200ms", "--yes"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the cacheflow binary runs");
    // a1 gets hz 20; during its bake its replica a3 stops (SIGSTOP: its connection stays
    // open, it acknowledges nothing) while 20 KB are written to a1.
    let a1 = fleet.get("a1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while a1.client().config_get("hz")["hz"] != "20" {
        assert!(Instant::now() < deadline, "a1 was never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a3 = fleet.get("a3");
    signal(a3, "STOP");
    let value = "v".repeat(10_000);
    for k in ["lag-1", "lag-2"] {
        assert!(a1.client().cmd(&["SET", k, &value]).is_ok());
    }
    let status = sync.wait().expect("sync ends");
    signal(a3, "CONT");
    let mut out = String::new();
    sync.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    sync.stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("cache: rolled-back: gates failed: a3: "),
        "{out}"
    );
    assert_eq!(a1.client().config_get("hz")["hz"], "10", "a1 was put back");

    // The reason and the figures: a3 is at least the 20 KB behind, and has not
    // acknowledged for longer than the limit; a2 kept up and is not named.
    let entries = journal_messages(repo.repository());
    let judged = entries
        .iter()
        .find(|m| m.contains("gates of batch 1 failed"))
        .unwrap_or_else(|| panic!("{entries:#?}"));
    let reason = judged.lines().next().unwrap();
    let bytes: u64 = reason
        .split_once("failed: a3: ")
        .and_then(|(_, r)| r.split_once(" bytes behind its primary a1 (more than 1000); "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    assert!(bytes >= 20_000, "{reason}");
    let (_, rest) = reason
        .split_once("a3: last acknowledged its primary a1 ")
        .unwrap();
    let (secs, tail) = rest.split_once(" s ago (more than 2 s)").unwrap();
    assert!(secs.parse::<u64>().unwrap() > 2, "{reason}");
    assert_eq!(tail, "", "a2 is not named: {reason}");
    let replication = judged
        .lines()
        .find_map(|l| l.strip_prefix("replication: "))
        .unwrap_or_else(|| panic!("{judged}"));
    let figures: Value = serde_json::from_str(replication).unwrap();
    let a3_figures = figures
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["node"] == "a3")
        .unwrap_or_else(|| panic!("{figures}"));
    assert_eq!(a3_figures["primary"], "a1");
    assert_eq!(a3_figures["lagBytes"], bytes);
    assert_eq!(a3_figures["lagSeconds"], secs.parse::<u64>().unwrap());
}
