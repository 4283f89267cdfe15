//! `example-repo/`, the config repository of the documentation and the quick start: it
//! loads through both the JSON Schema and the Rust types (the guard against the two
//! drifting apart), editors can find its schema, and the real binary validates and diffs
//! it with exact, reviewed output (`tests/fixtures/diff/<case>/expected.{txt,json,md}`).
//!
//! Golden files hold `<base>`/`<head>` (full commit ids) and `<base:short>`/`<head:short>`
//! (the 12-character form) instead of ids, so that editing `example-repo/` does not churn
//! every fixture. `CACHEFLOW_BLESS=1 cargo test --test integration` rewrites them; read
//! the result before committing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cacheflow::edges::source::{is_cacheflow_path, FileSet};
use cacheflow::pure::catalog::Engine;
use cacheflow::pure::spec::{
    self,
    model::{Managed, Millis, NotificationKind, OnFailure, Role, SecretRef, Stage, WindowAction},
};

use crate::support::git::TestRepo;

/// The directory of the crate, where `example-repo/`, `schemas/` and `tests/fixtures/` are.
pub(crate) fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn example_dir() -> PathBuf {
    crate_dir().join("example-repo")
}

/// Every file under `dir`, as `/`-separated relative paths, sorted.
pub(crate) fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A git repository holding `example-repo/` in one commit; returns it with the commit id.
pub(crate) fn example_repo() -> (TestRepo, String) {
    let repo = TestRepo::new();
    repo.copy_dir(&example_dir(), "");
    let commit = repo.commit("Import the example fleet");
    (repo, commit)
}

/// Run the real binary with `args`, isolated from the caller's `CACHEFLOW_*` settings.
pub(crate) fn cacheflow(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cacheflow"));
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .env_remove("CACHEFLOW_REPO")
        .env_remove("CACHEFLOW_CACHE_DIR")
        .env_remove("CACHEFLOW_LOG")
        .env_remove("CACHEFLOW_LOG_FORMAT");
    cmd.output().expect("run the cacheflow binary")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// Replace commit ids by named placeholders, full ids first (a short id is a prefix).
pub(crate) fn placeholders(text: &str, commits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (name, id) in commits {
        out = out.replace(id, &format!("<{name}>"));
    }
    for (name, id) in commits {
        out = out.replace(&id[..12], &format!("<{name}:short>"));
    }
    out
}

/// Compare `actual` with the golden file at `path`, or rewrite it under `CACHEFLOW_BLESS`;
/// the error shows both.
pub(crate) fn check_golden(path: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("CACHEFLOW_BLESS").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, actual).unwrap();
        return Ok(());
    }
    let expected = fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: {e} (run with CACHEFLOW_BLESS=1 to create it, then review it)",
            path.display()
        )
    })?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "output differs from {}\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        ))
    }
}

fn load_example() -> spec::model::Desired {
    let mut files = FileSet::default();
    for rel in files_under(&example_dir()) {
        let text = fs::read_to_string(example_dir().join(&rel)).unwrap();
        files.files.insert(rel, text);
    }
    match spec::load(&files) {
        Ok(d) => d,
        Err(diags) => panic!(
            "example-repo does not load:\n{}",
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

#[test]
fn every_file_of_the_example_repo_is_one_cacheflow_reads() {
    // A file cacheflow skips (a `.yml.bak`, a policy in a subdirectory) would escape the
    // guard test below without anyone noticing.
    let skipped: Vec<String> = files_under(&example_dir())
        .into_iter()
        .filter(|p| !is_cacheflow_path(p))
        .collect();
    assert_eq!(skipped, Vec::<String>::new());
}

#[test]
fn the_example_repo_loads_through_the_schema_and_the_rust_types_without_a_diagnostic() {
    let d = load_example();
    assert_eq!(d.commit, None);

    let profiles: Vec<&str> = d.profiles.keys().map(String::as_str).collect();
    assert_eq!(
        profiles,
        ["memcached-default", "redis-cache", "redis-sessions"]
    );
    let clusters: Vec<(&str, Engine, usize)> = d
        .clusters
        .values()
        .map(|c| (c.name.as_str(), c.engine, c.nodes.len()))
        .collect();
    assert_eq!(
        clusters,
        [
            ("catalog-staging", Engine::Redis, 2),
            ("page-cache", Engine::Memcached, 4),
            ("sessions-eu", Engine::Redis, 9),
            ("sessions-us", Engine::Redis, 9),
        ]
    );

    // Settings.
    let s = &d.settings;
    assert_eq!(s.file.as_deref(), Some("cacheflow.yaml"));
    assert_eq!(s.windows.len(), 1);
    assert_eq!(s.windows[0].action, WindowAction::Deny);
    assert_eq!(s.windows[0].schedule, "0 13 * * 5");
    assert_eq!(s.drift.notify, ["cache-team"]);
    let notifications: Vec<(&str, NotificationKind, &SecretRef)> = s
        .notifications
        .iter()
        .map(|n| (n.name.as_str(), n.kind, &n.url))
        .collect();
    assert_eq!(
        notifications,
        [
            (
                "cache-team",
                NotificationKind::Slack,
                &SecretRef("env:CACHEFLOW_SLACK_WEBHOOK_URL".into())
            ),
            (
                "incident-hook",
                NotificationKind::Webhook,
                &SecretRef("env:CACHEFLOW_INCIDENT_WEBHOOK_URL".into())
            ),
        ]
    );
    assert!(!s.trust.require_signed_head);

    // A cluster override wins over its profile; values are normalised to the engine's
    // own text, and the text as written is kept for people.
    let eu = &d.clusters["sessions-eu"];
    assert_eq!(eu.labels["env"], "prod");
    assert_eq!(eu.labels["region"], "eu-west-1");
    assert_eq!(eu.parameters["maxmemory"].value, "6442450944");
    assert_eq!(eu.parameters["maxmemory"].written, "6gb");
    assert_eq!(eu.parameters["maxmemory"].profile, None);
    assert_eq!(eu.parameters["timeout"].value, "300");
    assert_eq!(
        eu.parameters["timeout"].profile.as_deref(),
        Some("redis-sessions")
    );
    assert_eq!(eu.parameters["appendonly"].value, "yes");
    let auth = eu.auth.as_ref().unwrap();
    assert_eq!(auth.username.as_deref(), Some("cacheflow"));
    assert_eq!(
        auth.password,
        SecretRef("env:SESSIONS_EU_REDIS_PASSWORD".into())
    );
    let primaries: Vec<(&str, &str)> = eu
        .nodes
        .iter()
        .filter(|n| n.role == Some(Role::Primary))
        .map(|n| (n.id.as_str(), n.shard.as_str()))
        .collect();
    assert_eq!(
        primaries,
        [
            ("sessions-eu-1a", "s1"),
            ("sessions-eu-2a", "s2"),
            ("sessions-eu-3a", "s3")
        ]
    );
    assert_eq!(
        eu.node("sessions-eu-2c").unwrap().address,
        "10.20.2.13:6379"
    );
    assert_eq!(
        eu.node("sessions-eu-2c").unwrap().labels["zone"],
        "eu-west-1c"
    );

    // The rollout policy: the cluster's own fields over the Settings' rolloutDefaults
    // over the built-in defaults.
    let r = &eu.rollout;
    assert_eq!(
        r.stages,
        [Stage::Count(1), Stage::Percent(34), Stage::Percent(100)]
    );
    assert_eq!(
        (r.bake, r.apply_timeout, r.warmup),
        (Millis(600_000), Millis(60_000), Millis(60_000))
    );
    assert_eq!(r.on_failure, OnFailure::Rollback);
    assert_eq!(r.gates.max_hit_ratio_drop, 0.02);
    assert_eq!(r.gates.max_latency_ms, Some(2.0));
    assert_eq!(r.gates.max_memory_ratio, 0.95, "from rolloutDefaults");
    assert_eq!(r.gates.max_latency_increase_ms, Some(5.0));

    let us = &d.clusters["sessions-us"];
    assert_eq!(us.parameters["maxmemory"].value, "4294967296");
    assert_eq!(
        us.parameters["maxmemory"].profile.as_deref(),
        Some("redis-sessions")
    );
    assert_eq!(us.parameters["timeout"].value, "600");
    assert!(us.nodes.iter().all(|n| n.managed == Managed::Agent));
    assert_eq!(
        us.rollout.stages,
        [
            Stage::Count(1),
            Stage::Count(3),
            Stage::Percent(50),
            Stage::Percent(100)
        ]
    );
    assert_eq!(us.rollout.on_failure, OnFailure::Pause);
    assert_eq!(
        us.rollout.apply_timeout,
        Millis(120_000),
        "from rolloutDefaults"
    );

    // Memcached nodes without shard and role: a shard of their own, primary, direct.
    let pc = &d.clusters["page-cache"];
    assert_eq!(pc.parameters["maxbytes"].value, "6442450944");
    assert_eq!(pc.parameters["maxconns"].value, "4096");
    assert_eq!(pc.parameters["evictions"].value, "on");
    for n in &pc.nodes {
        assert_eq!(
            (n.shard.as_str(), n.role, n.managed),
            (n.id.as_str(), Some(Role::Primary), Managed::Direct)
        );
    }
    assert_eq!(pc.rollout.warmup, Millis(300_000));
    assert!(!pc.rollout.gates.require_replication_link);
    assert_eq!(pc.rollout.gates.max_evictions_per_sec, Some(500.0));

    let staging = &d.clusters["catalog-staging"];
    assert_eq!(staging.labels["env"], "staging");
    assert_eq!(staging.parameters["maxmemory"].value, "1073741824");
    assert_eq!(staging.parameters["maxmemory-policy"].value, "allkeys-lfu");
    assert_eq!(staging.parameters["databases"].value, "4");
    assert_eq!(staging.auth.as_ref().unwrap().username, None);
    assert_eq!(staging.rollout.stages, [Stage::Percent(100)]);
}

#[test]
fn every_yaml_file_of_the_example_repo_names_a_schema_that_exists() {
    let schema = fs::canonicalize(crate_dir().join("schemas/cacheflow.schema.json")).unwrap();
    let yaml: Vec<String> = files_under(&example_dir())
        .into_iter()
        .filter(|p| p.ends_with(".yaml") || p.ends_with(".yml"))
        .collect();
    assert!(yaml.len() >= 8, "{yaml:?}");
    for rel in yaml {
        let path = example_dir().join(&rel);
        let text = fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        let named = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| {
                panic!("{rel}: the first line is `{first}`, not the yaml-language-server line")
            });
        let target = path.parent().unwrap().join(named);
        let resolved = fs::canonicalize(&target)
            .unwrap_or_else(|e| panic!("{rel}: {named} does not exist ({e})"));
        assert_eq!(resolved, schema, "{rel} names {named}");
    }
}

#[test]
fn every_policy_of_the_example_repo_is_draft_2020_12_with_a_title() {
    let policies: Vec<String> = files_under(&example_dir())
        .into_iter()
        .filter(|p| p.starts_with("policies/"))
        .collect();
    assert_eq!(
        policies,
        [
            "policies/no-noeviction-in-prod.schema.json",
            "policies/prod-sets-a-memory-limit.schema.json"
        ]
    );
    for rel in policies {
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(example_dir().join(&rel)).unwrap()).unwrap();
        assert_eq!(
            v["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{rel}"
        );
        assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()), "{rel}");
    }
}

#[test]
fn the_binary_validates_the_example_repo_with_one_summary_line() {
    let (repo, commit) = example_repo();
    let out = cacheflow(&["validate", "--repo", repo.path().to_str().unwrap()]);
    assert_eq!(stderr(&out), "");
    assert_eq!(
        stdout(&out),
        format!(
            "valid: 4 clusters, 3 profiles, 24 nodes at {}\n",
            &commit[..12]
        )
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_example_policies_refuse_noeviction_and_a_missing_memory_limit_in_prod() {
    let (repo, _) = example_repo();
    let eu = repo
        .read("clusters/sessions-eu.yaml")
        .replace("    maxmemory: 6gb\n", "    maxmemory-policy: noeviction\n");
    repo.write("clusters/sessions-eu.yaml", &eu);
    // sessions-us takes both from the profile.
    let profile = repo
        .read("profiles/redis-sessions.yaml")
        .replace("    maxmemory: 4gb\n", "")
        .replace(
            "maxmemory-policy: volatile-lru",
            "maxmemory-policy: noeviction",
        );
    repo.write("profiles/redis-sessions.yaml", &profile);
    // Staging may do as it likes.
    let staging = repo.read("clusters/catalog-staging.yaml").replace(
        "    maxmemory: 1gb\n",
        "    maxmemory: 0\n    maxmemory-policy: noeviction\n",
    );
    repo.write("clusters/catalog-staging.yaml", &staging);

    let out = cacheflow(&[
        "validate",
        "--repo",
        repo.path().to_str().unwrap(),
        "--worktree",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let memory = "violates policy `prod clusters set a memory limit` (policies/prod-sets-a-memory-limit.schema.json): ";
    let eviction =
        "violates policy `no noeviction in prod` (policies/no-noeviction-in-prod.schema.json): ";
    // A required field that is missing points at the mapping that lacks it (its first
    // entry); a forbidden value points at the value.
    assert_eq!(
        lines[0],
        format!("clusters/sessions-eu.yaml:18:5: {memory}missing required field `maxmemory` (at /spec/parameters)")
    );
    assert!(
        lines[1].starts_with(&format!("clusters/sessions-eu.yaml:18:23: {eviction}")),
        "{text}"
    );
    assert!(
        lines[1]
            .ends_with("\"noeviction\" is not allowed here (at /spec/parameters/maxmemory-policy)"),
        "{text}"
    );
    // Inherited from the profile: reported at the cluster's `profile`, saying so.
    assert!(
        lines[2].starts_with(&format!("clusters/sessions-us.yaml:17:12: {eviction}")),
        "{text}"
    );
    assert!(
        lines[2].ends_with(
            "\"noeviction\" is not allowed here (inherited from profile `redis-sessions`) (at /spec/parameters/maxmemory-policy)"
        ),
        "{text}"
    );
    assert_eq!(
        lines[3],
        format!("clusters/sessions-us.yaml:19:5: {memory}missing required field `maxmemory` (at /spec/parameters)")
    );
    assert_eq!(lines[4], "invalid: 4 errors in 2 files at the working tree");
}

// ---------------------------------------------------------------------------------------
// diff

/// One edit of a file of the example repository: replace `from` (which must occur exactly
/// once) by `to`; an empty `from` creates the file; `to: None` deletes it.
struct Edit {
    path: &'static str,
    from: &'static str,
    to: Option<&'static str>,
}

const RAISE_PROFILE_MAXMEMORY: Edit = Edit {
    path: "profiles/redis-sessions.yaml",
    from: "    maxmemory: 4gb\n",
    to: Some("    maxmemory: 5gb\n"),
};
const SWITCH_EVICTION_POLICY: Edit = Edit {
    path: "clusters/sessions-us.yaml",
    from: "    timeout: 10m\n",
    to: Some("    timeout: 10m\n    maxmemory-policy: allkeys-lru\n"),
};
const ADD_NODE: Edit = Edit {
    path: "clusters/page-cache.yaml",
    from: "    - { id: page-cache-4, address: \"10.20.8.24:11211\" }\n",
    to: Some(
        "    - { id: page-cache-4, address: \"10.20.8.24:11211\" }\n    - { id: page-cache-5, address: \"10.20.8.25:11211\" }\n",
    ),
};
const RESTART_ONLY_PARAMETER: Edit = Edit {
    path: "clusters/catalog-staging.yaml",
    from: "    databases: 4\n",
    to: Some("    databases: 8\n"),
};
const LOWER_MAXMEMORY: Edit = Edit {
    path: "clusters/catalog-staging.yaml",
    from: "    maxmemory: 1gb\n",
    to: Some("    maxmemory: 512mb\n"),
};
const LONGER_BAKE: Edit = Edit {
    path: "clusters/sessions-eu.yaml",
    from: "    bake: 10m\n",
    to: Some("    bake: 15m\n"),
};
const REMOVE_TWO_REPLICAS: Edit = Edit {
    path: "clusters/sessions-eu.yaml",
    from: "    - { id: sessions-eu-3b, address: \"10.20.3.12:6379\", shard: s3, role: replica, labels: { zone: eu-west-1b } }\n    - { id: sessions-eu-3c, address: \"10.20.3.13:6379\", shard: s3, role: replica, labels: { zone: eu-west-1c } }\n",
    to: Some(""),
};
const REMOVE_CLUSTER: Edit = Edit {
    path: "clusters/catalog-staging.yaml",
    from: "",
    to: None,
};

/// `tests/fixtures/diff/<name>/` and the edits of its head commit.
const DIFF_CASES: &[(&str, &[Edit])] = &[
    ("profile-raises-maxmemory", &[RAISE_PROFILE_MAXMEMORY]),
    ("eviction-policy-switch", &[SWITCH_EVICTION_POLICY]),
    ("node-added", &[ADD_NODE]),
    ("restart-only-parameter", &[RESTART_ONLY_PARAMETER]),
    ("shard-loses-two-replicas", &[REMOVE_TWO_REPLICAS]),
    ("cluster-removed", &[REMOVE_CLUSTER]),
    (
        "pull-request",
        &[
            RAISE_PROFILE_MAXMEMORY,
            SWITCH_EVICTION_POLICY,
            ADD_NODE,
            RESTART_ONLY_PARAMETER,
            LOWER_MAXMEMORY,
            LONGER_BAKE,
        ],
    ),
];

fn apply(repo: &TestRepo, edit: &Edit) {
    match (edit.from, edit.to) {
        (_, None) => repo.remove(edit.path),
        ("", Some(text)) => repo.write(edit.path, text),
        (from, Some(to)) => {
            let text = repo.read(edit.path);
            assert_eq!(
                text.matches(from).count(),
                1,
                "{}: `{from}` must occur exactly once",
                edit.path
            );
            repo.write(edit.path, &text.replacen(from, to, 1));
        }
    }
}

#[test]
fn diff_shows_each_change_of_a_pull_request_in_text_json_and_markdown() {
    let mut failures = Vec::new();
    for (case, edits) in DIFF_CASES {
        let (repo, base) = example_repo();
        for edit in edits.iter() {
            apply(&repo, edit);
        }
        let head = repo.commit(&format!("Change: {case}"));
        let path = repo.path().to_str().unwrap();
        for (format, ext) in [("text", "txt"), ("json", "json"), ("markdown", "md")] {
            let out = cacheflow(&[
                "diff", "--repo", path, "--base", &base, "--head", &head, "--format", format,
            ]);
            let where_ = format!("{case} --format {format}");
            if out.status.code() != Some(2) || !out.stderr.is_empty() {
                failures.push(format!(
                    "{where_}: exit {:?}, stderr: {}",
                    out.status.code(),
                    stderr(&out)
                ));
                continue;
            }
            let actual = placeholders(&stdout(&out), &[("base", &base), ("head", &head)]);
            let golden = crate_dir().join(format!("tests/fixtures/diff/{case}/expected.{ext}"));
            if let Err(e) = check_golden(&golden, &actual) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_diff_that_changes_no_cluster_exits_0() {
    let (repo, base) = example_repo();
    // The same size spelled differently, and a file cacheflow does not read.
    apply(
        &repo,
        &Edit {
            path: "clusters/sessions-eu.yaml",
            from: "    maxmemory: 6gb\n",
            to: Some("    maxmemory: 6144mb\n"),
        },
    );
    repo.write("README.md", "# Cache fleet\n");
    let head = repo.commit("Spell the EU limit in megabytes");
    let path = repo.path().to_str().unwrap();

    let out = cacheflow(&["diff", "--repo", path, "--base", &base, "--head", &head]);
    assert_eq!(
        stdout(&out),
        format!(
            "diff {} → {}\nno cluster changes\n",
            &base[..12],
            &head[..12]
        )
    );
    assert_eq!(out.status.code(), Some(0));

    let out = cacheflow(&[
        "diff", "--repo", path, "--base", &base, "--head", &head, "--format", "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({ "base": base, "head": head, "clusters": [] })
    );
    assert_eq!(out.status.code(), Some(0));

    // Against itself.
    let out = cacheflow(&[
        "diff", "--repo", path, "--base", &head, "--head", &head, "--format", "markdown",
    ]);
    assert_eq!(
        stdout(&out),
        format!(
            "### cacheflow: no cluster changes\n\n`{}` → `{}`\n",
            &head[..12],
            &head[..12]
        )
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn the_same_files_and_message_give_the_same_commit_id() {
    let (_a, first) = example_repo();
    let (_b, second) = example_repo();
    assert_eq!(first, second);
}
