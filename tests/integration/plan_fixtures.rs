//! `cacheflow plan --live` against `example-repo/`, one directory per case under
//! `tests/fixtures/plan/`: `live.json` (the snapshot), `expected-plan.json`,
//! `expected-plan.txt` (reviewed golden output, commit ids as `<commit>` and
//! `<commit:short>`) and `expected-exit-code`. Besides the exact output, every case is
//! held to the rules a plan must keep whatever the golden files say: replicas before
//! primaries, never more nodes of one shard in a batch than the limit, in-sync and
//! unreachable nodes untouched, every changed node exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use cacheflow::edges::source::FileSet;
use cacheflow::pure::live::LiveState;
use cacheflow::pure::plan::{self, Plan};
use cacheflow::pure::spec::{self, model::Desired, model::Role};

use crate::example_repo::{
    cacheflow, check_golden, crate_dir, example_dir, example_repo, files_under, placeholders,
    stderr, stdout,
};

fn cases() -> Vec<(String, PathBuf)> {
    let root = crate_dir().join("tests/fixtures/plan");
    let mut out: Vec<(String, PathBuf)> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

fn desired() -> Desired {
    let mut files = FileSet::default();
    for rel in files_under(&example_dir()) {
        let text = fs::read_to_string(example_dir().join(&rel)).unwrap();
        files.files.insert(rel, text);
    }
    spec::load(&files).unwrap_or_else(|d| panic!("example-repo is invalid: {d:?}"))
}

#[test]
fn there_is_a_plan_fixture_for_each_situation() {
    let names: Vec<String> = cases().into_iter().map(|(n, _)| n).collect();
    for wanted in [
        "converged",
        "drifted",
        "maxmemory-below-usage",
        "undeclared-node",
        "unreachable-nodes",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "no fixture {wanted}: {names:?}"
        );
    }
}

#[test]
fn plan_prints_the_expected_plan_and_exit_code_for_every_fixture() {
    let (repo, commit) = example_repo();
    let mut failures = Vec::new();
    for (case, dir) in cases() {
        let code: i32 = fs::read_to_string(dir.join("expected-exit-code"))
            .unwrap_or_else(|e| panic!("{case}/expected-exit-code: {e}"))
            .trim()
            .parse()
            .unwrap();
        for (format, file) in [
            ("json", "expected-plan.json"),
            ("text", "expected-plan.txt"),
        ] {
            let out = cacheflow(&[
                "plan",
                "--repo",
                repo.path().to_str().unwrap(),
                "--live",
                dir.join("live.json").to_str().unwrap(),
                "--format",
                format,
            ]);
            if out.status.code() != Some(code) || !out.stderr.is_empty() {
                failures.push(format!(
                    "{case} --format {format}: exit {:?}, expected {code}; stderr: {}",
                    out.status.code(),
                    stderr(&out)
                ));
            }
            let actual = placeholders(&stdout(&out), &[("commit", &commit)]);
            if let Err(e) = check_golden(&dir.join(file), &actual) {
                failures.push(format!("{case}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The rules of a plan, checked on the plan computed from the fixture.
fn check_rules(case: &str, desired: &Desired, live: &LiveState, p: &Plan) {
    for (c, cp) in desired.clusters.values().zip(&p.clusters) {
        assert_eq!(c.name, cp.cluster, "{case}: clusters in name order");
        let changing: Vec<&str> = cp.nodes.iter().map(|n| n.id.as_str()).collect();
        let unreachable: Vec<&str> = cp.unreachable.iter().map(|u| u.id.as_str()).collect();

        // Every declared node is in exactly one of: to change, in sync, unreachable.
        let mut seen: Vec<&str> = changing
            .iter()
            .chain(
                cp.in_sync
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .chain(unreachable.iter())
            .copied()
            .collect();
        seen.sort();
        let declared: Vec<&str> = c.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            seen, declared,
            "{case}/{}: every node accounted for once",
            c.name
        );

        // In-sync nodes match the snapshot, and only reachable nodes are planned.
        for id in &cp.in_sync {
            let state = &live.nodes[id];
            assert!(state.reachable, "{case}: {id}");
        }
        for n in &cp.nodes {
            assert!(live.nodes[&n.id].reachable, "{case}: {}", n.id);
            assert!(
                !n.changes.is_empty(),
                "{case}: {} planned without a change",
                n.id
            );
        }

        // Batches: each changed node exactly once, replicas first, shard limit kept,
        // stage targets cumulative and growing.
        let order: Vec<&str> = cp
            .stages
            .iter()
            .flat_map(|s| s.batches.iter().flatten().map(String::as_str))
            .collect();
        let mut sorted_order = order.clone();
        sorted_order.sort();
        assert_eq!(
            sorted_order, changing,
            "{case}/{}: batches hold the changed nodes once",
            c.name
        );
        let role = |id: &str| c.node(id).unwrap().role.unwrap_or(Role::Primary);
        if let Some(first_primary) = order.iter().position(|id| role(id) == Role::Primary) {
            assert!(
                order[first_primary..]
                    .iter()
                    .all(|id| role(id) == Role::Primary),
                "{case}/{}: a replica after a primary: {order:?}",
                c.name
            );
        }
        let limit = c.rollout.max_unavailable_per_shard as usize;
        let mut done = 0;
        for s in &cp.stages {
            for b in &s.batches {
                assert!(!b.is_empty(), "{case}: empty batch");
                let mut per_shard: BTreeMap<&str, usize> = BTreeMap::new();
                for id in b {
                    *per_shard
                        .entry(c.node(id).unwrap().shard.as_str())
                        .or_default() += 1;
                }
                assert!(
                    per_shard.values().all(|&n| n <= limit),
                    "{case}/{}: batch {b:?} exceeds {limit} per shard",
                    c.name
                );
                done += b.len();
            }
            assert_eq!(
                s.target, done,
                "{case}/{}: stage {} target",
                c.name, s.stage
            );
        }
        assert_eq!(done, changing.len());
        let targets: Vec<usize> = cp.stages.iter().map(|s| s.target).collect();
        assert!(
            targets.windows(2).all(|w| w[0] < w[1]),
            "{case}: {targets:?}"
        );
    }
    let declared: BTreeSet<&str> = desired
        .clusters
        .values()
        .flat_map(|c| c.nodes.iter().map(|n| n.id.as_str()))
        .collect();
    let undeclared: Vec<&str> = live
        .nodes
        .keys()
        .map(String::as_str)
        .filter(|id| !declared.contains(id))
        .collect();
    assert_eq!(p.undeclared, undeclared, "{case}");
}

#[test]
fn every_plan_fixture_keeps_the_rules_of_a_staged_rollout() {
    let desired = desired();
    for (case, dir) in cases() {
        let live = cacheflow::edges::live_file::read(&dir.join("live.json")).unwrap();
        let p = plan::plan(&desired, &live);
        check_rules(&case, &desired, &live, &p);
        assert_eq!(
            p,
            plan::plan(&desired, &live),
            "{case}: the same inputs, the same plan"
        );
    }
}

#[test]
fn the_quick_start_snapshot_shows_hand_made_drift_a_lagging_node_and_an_unreachable_one() {
    let desired = desired();
    let live =
        cacheflow::edges::live_file::read(&crate_dir().join("examples/live-state.json")).unwrap();
    let p = plan::plan(&desired, &live);
    check_rules("examples/live-state.json", &desired, &live, &p);
    let changes: Vec<(String, String, Option<String>, Option<String>)> = p
        .clusters
        .iter()
        .flat_map(|c| &c.nodes)
        .flat_map(|n| {
            n.changes.iter().map(|ch| {
                (
                    n.id.clone(),
                    ch.name.clone(),
                    ch.old.clone(),
                    ch.new.clone(),
                )
            })
        })
        .collect();
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        changes,
        [
            (
                "sessions-eu-2b".into(),
                "maxmemory-policy".into(),
                s("allkeys-lru"),
                s("volatile-lru")
            ),
            (
                "sessions-us-3a".into(),
                "maxmemory".into(),
                s("3221225472"),
                s("4294967296")
            ),
        ]
    );
    let unreachable: Vec<&str> = p
        .clusters
        .iter()
        .flat_map(|c| c.unreachable.iter().map(|u| u.id.as_str()))
        .collect();
    assert_eq!(unreachable, ["page-cache-3"]);
    assert!(p.undeclared.is_empty());
    assert!(!p.converged());

    // And the binary says so, with exit code 2.
    let (repo, _) = example_repo();
    let out = cacheflow(&[
        "plan",
        "--repo",
        repo.path().to_str().unwrap(),
        "--live",
        crate_dir()
            .join("examples/live-state.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("\n2 nodes to change, 1 unreachable\n"),
        "{}",
        stdout(&out)
    );
}
