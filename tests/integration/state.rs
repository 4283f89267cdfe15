//! What the server's state says is true, through the real binary on six real
//! redis-server nodes: a rollout command the phase does not take is refused (409, the
//! CLI exits 1 with the reason) and changes nothing; a node a commit removes leaves
//! `/api/v1/clusters` and `cacheflow_nodes` when the commit is taken, and stays gone
//! after a restart from the journal.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::serve::{converge, Remote, Server};
use crate::support::fleet::Fleet;
use crate::support::git::TestRepo;

const TOKEN: &str = "admin-token-0123456789";

/// `cacheflow ARGS --server URL` with the admin token: exit code, stdout, stderr.
fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .args(["--server", &server.url()])
        .env("CACHEFLOW_ADMIN_TOKEN", TOKEN)
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn get_json(server: &Server, path: &str) -> Value {
    let (code, body) = server.http("GET", path, &[], b"");
    assert_eq!(code, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The `cache` cluster's rollout in `GET /api/v1/rollouts`.
fn rollout(server: &Server) -> Value {
    get_json(server, "/api/v1/rollouts")["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["cluster"] == "cache").cloned())
        .map(|c| c["rollout"].clone())
        .unwrap_or(Value::Null)
}

fn wait_for_phase(server: &Server, phase: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = rollout(server);
        if r["phase"] == phase {
            return r;
        }
        assert!(Instant::now() < deadline, "never {phase}: {r}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric_line(server: &Server, prefix: &str) -> Vec<String> {
    let (code, text) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_rollout_command_the_phase_does_not_take_is_refused_with_409_and_exit_1() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 20", "stages: [1, '50%', '100%']\n    bake: 1h"),
    );
    let first = work.commit("cache: hz 20");
    let rev = &first[..12];
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    // The canary applies, then bakes for an hour.
    let baking = wait_for_phase(&server, "baking");
    let of = format!("1 of {}", baking["batches"]);
    assert_eq!(of, "1 of 4", "{baking}");

    let refused = |args: &[&str], why: &str| {
        let (code, out, err) = cli(&server, args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (1, "", format!("error: 409 Conflict: {why}\n").as_str()),
            "{args:?}"
        );
    };
    let taken = |args: &[&str], text: &str| {
        let (code, out, err) = cli(&server, args);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, text, ""),
            "{args:?}"
        );
    };
    refused(
        &["rollout", "resume", "cache"],
        &format!("cluster `cache`: cannot resume the rollout of {rev}: it is baking batch {of}; resume takes a paused rollout"),
    );
    taken(
        &["rollout", "pause", "cache"],
        &format!("cache: {rev} paused, batch {of}: paused by alice\n"),
    );
    let again = format!("cluster `cache`: cannot pause the rollout of {rev}: it is paused at batch {of} (paused by alice); pause takes a rollout that is applying, baking, judging or waiting");
    refused(&["rollout", "pause", "cache"], &again);
    // The API's own answer: 409 with the JSON error envelope.
    let admin = ("Authorization", format!("Bearer {TOKEN}"));
    let (code, body) = server.http(
        "POST",
        "/api/v1/rollouts/cache/pause",
        std::slice::from_ref(&admin),
        b"",
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"code": "conflict", "error": again})
    );
    taken(
        &["rollout", "override", "cache", "--reason", "INC-1"],
        &format!("cache: {rev} paused, batch {of}: paused by alice\n"),
    );
    refused(
        &["rollout", "override", "cache", "--reason", "INC-2"],
        &format!("cluster `cache`: cannot override the rollout of {rev}: its rollout windows were already overridden (alice: INC-1); override is taken once per rollout"),
    );
    // The answer shows the rollback under way (or, on a fast machine, done).
    let (code, out, err) = cli(&server, &["rollout", "abort", "cache"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(
        [
            format!("cache: {rev} rolling-back: aborted by alice\n"),
            format!("cache: {rev} rolled-back: aborted by alice\n  refused: aborted by alice\n"),
        ]
        .contains(&out),
        "{out}"
    );
    wait_for_phase(&server, "rolled-back");
    refused(
        &["rollout", "pause", "cache"],
        "cluster `cache` has no rollout in progress",
    );

    // Refusals changed nothing: one pause, one override, one abort journaled.
    let journal = server.journal();
    for (line, n) in [
        ("cache: paused by alice", 1),
        ("cache: rollout windows overridden by alice", 1),
        ("cache: rolling back", 1),
        ("resumed by", 0),
    ] {
        let found = journal
            .iter()
            .flat_map(|m| m.lines())
            .filter(|l| l.starts_with(line) || (n == 0 && l.contains(line)))
            .count();
        assert_eq!(found, n, "{line}: {journal:#?}");
    }
    let mut calls = metric_line(&server, "cacheflow_admin_calls_total");
    calls.sort();
    assert_eq!(
        calls,
        [
            r#"cacheflow_admin_calls_total{result="ok"} 3"#,
            r#"cacheflow_admin_calls_total{result="refused"} 5"#,
            r#"cacheflow_admin_calls_total{result="unauthorized"} 0"#,
        ]
    );
}

/// The assignments of `cache` in `GET /api/v1/clusters`, and its node counts.
fn assignments(server: &Server) -> (Vec<String>, Value) {
    let body = get_json(server, "/api/v1/clusters");
    let cache = body["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["cluster"] == "cache").cloned())
        .unwrap_or_else(|| panic!("no cluster `cache` in {body}"));
    let ids = cache["assignments"]
        .as_object()
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default();
    (ids, cache["nodes"].clone())
}

fn nodes_metric(server: &Server) -> Vec<String> {
    metric_line(server, "cacheflow_nodes{")
}

#[test]
fn a_node_a_commit_removes_leaves_the_api_and_the_metrics_and_stays_gone_after_a_restart() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    let yaml = fleet.cluster_yaml("    hz: 20");
    work.write("clusters/cache.yaml", &yaml);
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "20", Duration::from_secs(30));
    wait_for_phase(&server, "completed");
    let six: Vec<String> = ["a1", "a2", "a3", "b1", "b2", "b3"]
        .map(String::from)
        .to_vec();
    assert_eq!(
        assignments(&server),
        (six, serde_json::json!({"applied": 6}))
    );

    // b3 leaves the cluster; nothing else changes.
    let b3 = yaml
        .lines()
        .find(|l| l.contains("{id: b3,"))
        .expect("b3's line")
        .to_owned();
    work.write("clusters/cache.yaml", &yaml.replace(&format!("{b3}\n"), ""));
    let second = work.commit("cache: b3 leaves");
    remote.push(&work, false);
    let (code, body) = server.github_push("delivery-b3");
    assert_eq!(code, 202, "{body}");
    let five: Vec<String> = ["a1", "a2", "a3", "b1", "b2"].map(String::from).to_vec();
    let want = (five, serde_json::json!({"applied": 5}));
    let deadline = Instant::now() + Duration::from_secs(20);
    while assignments(&server) != want {
        assert!(
            Instant::now() < deadline,
            "b3 still assigned: {:?}",
            assignments(&server)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let counted = [
        r#"cacheflow_nodes{state="applied"} 5"#,
        r#"cacheflow_nodes{state="failed"} 0"#,
        r#"cacheflow_nodes{state="pending"} 0"#,
    ];
    let mut metric = nodes_metric(&server);
    metric.sort();
    assert_eq!(metric, counted);
    let journal = server.journal();
    let line = "cache: b3 no longer declared in the cluster: assignment dropped";
    assert!(
        journal.iter().any(|m| m.lines().any(|l| l == line)),
        "{line} not in {journal:#?}"
    );
    assert_eq!(
        get_json(&server, "/api/v1/clusters")["head"],
        Value::String(second)
    );

    // Killed and started again from the journal: the same five.
    server.kill9();
    server.restart();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(assignments(&server), want);
    let mut metric = nodes_metric(&server);
    metric.sort();
    assert_eq!(metric, counted);
}
