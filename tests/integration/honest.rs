//! Results that must not say success (issue 15, items 1 and 2), through the real
//! binary: a directory that is not a config repository, a config root inside a
//! monorepo (`--path`), nodes that could not be read (real redis-server beside ports
//! nobody listens on), and a secret reference with no value.

use std::path::Path;
use std::process::Command;

use crate::support::git::TestRepo;
use crate::support::servers::{free_port, RedisServer};

/// `cacheflow ARGS...` with `env` added: the exit code and stdout followed by stderr.
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .env_remove("CACHEFLOW_PATH")
        .env_remove("CACHEFLOW_REPO")
        .envs(env.iter().copied())
        .output()
        .expect("the cacheflow binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn cluster(name: &str, addresses: &[String], auth: Option<&str>) -> String {
    let nodes: String = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| format!("    - {{id: {name}-{i}, address: '{a}'}}\n"))
        .collect();
    let auth = auth
        .map(|r| format!("  auth:\n    password: {r}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  engine: redis\n  parameters:\n    hz: 20\n{auth}  nodes:\n{nodes}  rollout:\n    stages: ['100%']\n    bake: 0s\n    applyTimeout: 5s\n    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}\n"
    )
}

/// A loopback address nobody listens on.
fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

#[test]
fn a_directory_inside_a_repository_is_not_taken_for_its_parent() {
    let repo = TestRepo::new();
    repo.copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        "",
    );
    repo.write("docs/readme.txt", "not a config\n");
    repo.commit("config and docs");
    let docs = repo.path().join("docs");
    for cmd in ["validate", "snapshot", "history"] {
        let (code, out) = run(&[cmd, "--repo", &path(&docs)], &[]);
        assert_eq!(code, 1, "{cmd}: {out}");
        assert!(out.contains("not a git repository"), "{cmd}: {out}");
    }
}

#[test]
fn a_repository_without_a_config_is_an_error_for_every_command() {
    let repo = TestRepo::new();
    repo.write("README.md", "an application, not a cache config\n");
    repo.commit("app");
    let r = path(repo.path());
    let live = repo.path().join("live.json");
    std::fs::write(&live, r#"{"nodes": {}}"#).unwrap();
    let live = path(&live);
    let commands: Vec<Vec<&str>> = vec![
        vec!["validate", "--repo", &r],
        vec!["validate", "--repo", &r, "--worktree"],
        vec!["plan", "--repo", &r, "--live", &live],
        vec!["drift", "--repo", &r, "--live", &live],
        vec!["snapshot", "--repo", &r],
        vec!["diff", "--repo", &r, "--base", "HEAD"],
        vec!["sync", "--repo", &r, "--yes"],
    ];
    for args in commands {
        let (code, out) = run(&args, &[]);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert!(
            out.contains("no cacheflow.yaml") && out.contains("--path DIR"),
            "{args:?}: {out}"
        );
        assert!(
            !out.lines().any(|l| l.starts_with("valid:")),
            "{args:?}: {out}"
        );
        for success in ["converged", "no drift", "Nothing to do", "in-sync"] {
            assert!(!out.contains(success), "{args:?}: {out}");
        }
    }
}

#[test]
fn path_reads_the_config_root_of_a_monorepo_and_shows_repository_paths() {
    let repo = TestRepo::new();
    repo.write("src/main.rs", "fn main() {}\n");
    repo.copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo"),
        "deploy/caches",
    );
    let base = repo.commit("app and its caches");
    let r = path(repo.path());

    let (code, out) = run(&["validate", "--repo", &r], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no cacheflow.yaml"), "{out}");

    let (code, out) = run(&["validate", "--repo", &r, "--path", "deploy/caches"], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("valid: 4 clusters"), "{out}");
    // The environment does the same.
    let (code, out) = run(
        &["validate", "--repo", &r],
        &[("CACHEFLOW_PATH", "./deploy/caches/")],
    );
    assert_eq!(code, 0, "{out}");

    // A broken cluster is named by its path in the repository.
    let file = std::fs::read_dir(repo.path().join("deploy/caches/clusters"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".yaml"))
        .unwrap();
    let rel = format!("deploy/caches/clusters/{file}");
    let text = repo.read(&rel);
    repo.write(&rel, &text.replace("engine: redis", "engine: rediss"));
    let head = repo.commit("break a cluster");
    let (code, out) = run(&["validate", "--repo", &r, "--path", "deploy/caches"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{rel}:")), "{out}");

    // A diff sees the change under the config root, and only there.
    let (code, out) = run(
        &[
            "diff",
            "--repo",
            &r,
            "--path",
            "deploy/caches",
            "--base",
            &base,
            "--head",
            &head,
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("{rel}:")), "{out}");
    repo.write(
        &rel,
        &text.replace("engine: redis", "engine: redis\n  # a comment"),
    );
    repo.write("src/main.rs", "fn main() { println!(); }\n");
    let fixed = repo.commit("fix it, and change the app");
    let (code, out) = run(
        &[
            "diff",
            "--repo",
            &r,
            "--path",
            "deploy/caches",
            "--base",
            &base,
            "--head",
            &fixed,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");

    // `..` and absolute paths stay out.
    for bad in ["../x", "/etc"] {
        let (code, out) = run(&["validate", "--repo", &r, "--path", bad], &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("--path"), "{out}");
    }
}

#[test]
fn a_cluster_whose_nodes_cannot_be_read_is_never_in_sync() {
    let redis = RedisServer::start();
    let repo = TestRepo::new();
    repo.write("clusters/up.yaml", &cluster("up", &[redis.addr()], None));
    repo.write(
        "clusters/down.yaml",
        &cluster("down", &[dead_address(), dead_address()], None),
    );
    repo.commit("two clusters, one of them down");
    let r = path(repo.path());

    let (code, out) = run(&["plan", "--repo", &r, "--direct", "--timeout", "1s"], &[]);
    // Not converged: the plan lists the nodes it could not read (exit 2, never 0).
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("down-0") && out.contains("down-1"), "{out}");
    assert!(out.contains("unreachable"), "{out}");

    let (code, out) = run(&["drift", "--repo", &r, "--direct", "--timeout", "1s"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("no drift"), "{out}");

    let (code, out) = run(
        &[
            "sync",
            "--repo",
            &r,
            "--yes",
            "--interval",
            "200ms",
            "--timeout",
            "1s",
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("down: in-sync"), "{out}");
    assert!(out.contains("down: unreached"), "{out}");
    assert!(out.contains("down-0") && out.contains("down-1"), "{out}");
}

#[test]
fn a_secret_reference_with_no_value_is_one_configuration_error() {
    let redis = RedisServer::start();
    let repo = TestRepo::new();
    let reference = "env:CACHEFLOW_TEST_UNSET_PASSWORD_15";
    repo.write(
        "clusters/a.yaml",
        &cluster("a", &[redis.addr(), dead_address()], Some(reference)),
    );
    repo.write(
        "clusters/b.yaml",
        &cluster("b", &[dead_address()], Some(reference)),
    );
    repo.commit("two clusters behind one password");
    let r = path(repo.path());
    for args in [
        vec!["sync", "--repo", &r, "--yes", "--timeout", "1s"],
        vec!["plan", "--repo", &r, "--direct", "--timeout", "1s"],
        vec!["snapshot", "--repo", &r, "--timeout", "1s"],
    ] {
        let (code, out) = run(&args, &[]);
        assert_eq!(code, 1, "{args:?}: {out}");
        assert_eq!(out.matches(reference).count(), 1, "{args:?}: {out}");
        assert!(out.contains("used by clusters a, b"), "{args:?}: {out}");
        assert!(!out.contains("unreachable"), "{args:?}: {out}");
        assert!(!out.contains("in-sync"), "{args:?}: {out}");
    }
}
