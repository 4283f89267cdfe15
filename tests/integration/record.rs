//! The record tells the truth: a repository goes through a valid commit, an
//! invalid push, its fix, a scale-out, a drift correction and a rollback, each applied by
//! `cacheflow sync` (the real binary) on real redis-server nodes replicating for real;
//! then `git log --notes=cacheflow` and `cacheflow history` are read line by line.
//! The same record through `cacheflow serve` for memcached nodes driven by `cacheflow
//! agent` processes: the notes of nodes found running a commit and of a rollout, a
//! removed node leaving `/api/v1/clusters`, a refused command answering 409.
//!
//! Variable parts are put in words before comparing: each commit id (full or cut to
//! 12 characters) becomes its name (`<valid>`, `<fix>`, ...), the times the reconciler
//! wrote become `<time>`, and the canary's memory figures `<used>` and `<pct>`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::{Remote, Server, NODE_SECRET};
use crate::support::cacheflow_sync;
use crate::support::git::{journal_messages, TestRepo};
use crate::support::servers::RedisServer;
use crate::support::service::Service;

/// The cluster `cache`: `nodes` (id, server; the first the primary, the others its
/// replicas) with these parameters (YAML lines indented by 4); a canary, then the rest;
/// no bake.
fn cluster(nodes: &[(&str, &RedisServer)], params: &str) -> String {
    let list: String = nodes
        .iter()
        .enumerate()
        .map(|(i, (id, n))| {
            let role = if i == 0 { "primary" } else { "replica" };
            format!(
                "    - {{id: {id}, address: '{}', shard: a, role: {role}}}\n",
                n.addr()
            )
        })
        .collect();
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: cache}}
spec:
  engine: redis
  parameters:
{params}
  nodes:
{list}  rollout:
    stages: [1, '100%']
    bake: 0s
    applyTimeout: 10s
    maxUnavailablePerShard: 1
    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}
"
    )
}

/// A replica of `primary` whose link is up.
fn replica_of(primary: &RedisServer) -> RedisServer {
    let replica = RedisServer::start();
    let port = primary.port().to_string();
    assert!(replica
        .client()
        .cmd(&["REPLICAOF", "127.0.0.1", &port])
        .is_ok());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = replica.client().cmd(&["INFO", "replication"]);
        if info
            .as_str()
            .unwrap_or_default()
            .contains("master_link_status:up")
        {
            return replica;
        }
        assert!(Instant::now() < deadline, "replication link not up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hz(nodes: &[&RedisServer]) -> Vec<String> {
    nodes
        .iter()
        .map(|n| n.client().config_get("hz")["hz"].clone())
        .collect()
}

/// `text` with the variable parts in words (see the module's comment).
fn words(text: &str, commits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (name, id) in commits {
        out = out.replace(id, &format!("<{name}>"));
        out = out.replace(&id[..12], &format!("<{name}>"));
    }
    out.lines()
        .map(|l| memory_in_words(&times_in_words(l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// RFC 3339 times of this run (not the test commits' fixed 2024 ones) as `<time>`.
fn times_in_words(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(i) = rest.find("T") {
        let start = i.saturating_sub(10);
        let candidate = rest.get(start..i + 10);
        let is_time = candidate.is_some_and(|c| {
            c.len() == 20
                && c.ends_with('Z')
                && c.as_bytes()[4] == b'-'
                && c[..4].chars().all(|d| d.is_ascii_digit())
                && !c.starts_with("2024-")
        });
        if is_time {
            out.push_str(&rest[..start]);
            out.push_str("<time>");
            rest = &rest[i + 10..];
        } else {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// `memory 3.8mb of 2mb (190.1%)` as `memory <used> of 2mb (<pct>)`.
fn memory_in_words(line: &str) -> String {
    let Some(i) = line.find("memory ") else {
        return line.to_owned();
    };
    let after = &line[i + 7..];
    let Some(of) = after.find(" of ") else {
        return line.to_owned();
    };
    let Some(open) = after.find(" (") else {
        return line.to_owned();
    };
    let Some(close) = after[open..].find("%)") else {
        return line.to_owned();
    };
    format!(
        "{}memory <used>{} (<pct>){}",
        &line[..i],
        &after[of..open],
        &after[open + close + 2..]
    )
}

fn run(repo: &TestRepo, args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(repo.path())
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_lines(got: &str, want: &[&str]) {
    let got: Vec<&str> = got.lines().collect();
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        assert_eq!(g, w, "line {}: the whole text:\n{}", i + 1, got.join("\n"));
    }
    assert_eq!(got.len(), want.len(), "the whole text:\n{}", got.join("\n"));
}

#[test]
fn the_notes_and_history_of_an_invalid_push_a_fix_a_scale_out_a_correction_and_a_rollback_tell_the_true_story(
) {
    let a1 = RedisServer::start();
    // 3 MB of data on the primary, replicated: a 2mb limit fails the memory gate.
    let value = "x".repeat(1 << 20);
    for k in ["k1", "k2", "k3"] {
        assert!(a1.client().cmd(&["SET", k, &value]).is_ok());
    }
    let a2 = replica_of(&a1);
    let two = [("a1", &a1), ("a2", &a2)];
    let repo = TestRepo::new();
    let sync = |what: &str| {
        let (code, out) = cacheflow_sync(repo.path(), &["--yes"], &[]);
        (code, format!("{what}: {out}"))
    };
    let params = |hz: u32, maxmemory: &str| {
        format!("    maxmemory: {maxmemory}\n    maxmemory-policy: noeviction\n    hz: {hz}")
    };

    // 1. A valid commit, rolled out.
    repo.write("clusters/cache.yaml", &cluster(&two, &params(20, "64mb")));
    let valid = repo.commit("cache: 64mb, hz 20");
    let (code, out) = sync("valid");
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&[&a1, &a2]), ["20", "20"]);

    // 2. An invalid push: refused, nothing applied.
    repo.write(
        "clusters/cache.yaml",
        &cluster(&two, &params(500_000, "64mb")),
    );
    let invalid = repo.commit("cache: hz 500000");
    let (code, out) = sync("invalid");
    assert_eq!(code, 1, "{out}");
    assert_eq!(hz(&[&a1, &a2]), ["20", "20"]);

    // 3. Its fix, rolled out.
    repo.write("clusters/cache.yaml", &cluster(&two, &params(25, "64mb")));
    let fix = repo.commit("cache: hz 25 (fix)");
    let (code, out) = sync("fix");
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&[&a1, &a2]), ["25", "25"]);

    // 4. A scale-out: a new replica, same parameters.
    let a3 = replica_of(&a1);
    let three = [("a1", &a1), ("a2", &a2), ("a3", &a3)];
    repo.write("clusters/cache.yaml", &cluster(&three, &params(25, "64mb")));
    let scale_out = repo.commit("cache: add a3");
    let (code, out) = sync("scale-out");
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&[&a1, &a2, &a3]), ["25", "25", "25"]);
    // The status names the commit that added the node.
    let state = run(
        &repo,
        &["git", "show", "refs/cacheflow/journal:clusters/cache.json"],
    );
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["target"]["revision"], scale_out.as_str(), "{state:#}");
    assert_eq!(
        state["rollout"]["rollout"]["spec"]["revision"],
        scale_out.as_str()
    );

    // 5. Someone changes a node by hand; sync corrects it (a correction, no commit).
    assert!(a2.client().cmd(&["CONFIG", "SET", "hz", "11"]).is_ok());
    let (code, out) = sync("drift");
    assert_eq!(code, 0, "{out}");
    assert_eq!(hz(&[&a1, &a2, &a3]), ["25", "25", "25"]);
    let journal = journal_messages(repo.repository());
    let correction: Vec<&str> = journal
        .iter()
        .filter(|m| m.contains("drift"))
        .flat_map(|m| m.lines())
        .filter(|l| l.contains("drift"))
        .collect();
    let commits = [
        ("valid", valid.as_str()),
        ("invalid", invalid.as_str()),
        ("fix", fix.as_str()),
        ("scale-out", scale_out.as_str()),
    ];
    assert_lines(
        &words(&correction.join("\n"), &commits),
        &[
            "cache: correcting drift",
            "cache: drift correction completed <time>: reached 1 node(s): a2",
        ],
    );

    // 6. A limit below what the nodes hold: the canary fails its memory gate, rolled back.
    repo.write("clusters/cache.yaml", &cluster(&three, &params(25, "2mb")));
    let too_small = repo.commit("cache: 2mb (too small)");
    let (code, out) = sync("rollback");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache: rolled-back: gates failed: "), "{out}");
    let limits: Vec<String> = [&a1, &a2, &a3]
        .iter()
        .map(|n| n.client().config_get("maxmemory")["maxmemory"].clone())
        .collect();
    assert_eq!(limits, ["67108864"; 3]);

    let commits = [
        ("valid", valid.as_str()),
        ("invalid", invalid.as_str()),
        ("fix", fix.as_str()),
        ("scale-out", scale_out.as_str()),
        ("too-small", too_small.as_str()),
    ];
    let journal = journal_messages(repo.repository());
    let canary = journal
        .iter()
        .flat_map(|m| m.lines())
        .find(|l| l.starts_with("cache: batch 1 of ") && l.contains(&too_small))
        .and_then(|l| l.rsplit_once(": "))
        .map(|(_, n)| n.to_owned())
        .expect("the canary's batch");
    let rolled_back = format!(
        "cache: rolled back <time>: gates failed: {canary}: memory <used> of 2mb (<pct>) is above 98.0%; 1 node(s) back on before-<too-small>"
    );

    // `git log --notes=cacheflow`: each commit with what became of it, on that commit.
    let log = run(&repo, &["git", "log", "--notes=cacheflow"]);
    assert_lines(
        &words(&log, &commits),
        &[
            "commit <too-small>",
            "Author: cacheflow tests <tests@cacheflow.invalid>",
            "Date:   Mon Jan 1 00:04:00 2024 +0000",
            "",
            "    cache: 2mb (too small)",
            "",
            "Notes (cacheflow):",
            &format!("    {rolled_back}"),
            "",
            "commit <scale-out>",
            "Author: cacheflow tests <tests@cacheflow.invalid>",
            "Date:   Mon Jan 1 00:03:00 2024 +0000",
            "",
            "    cache: add a3",
            "",
            "Notes (cacheflow):",
            "    cache: completed <time>: reached 1 node(s): a3",
            "",
            "commit <fix>",
            "Author: cacheflow tests <tests@cacheflow.invalid>",
            "Date:   Mon Jan 1 00:02:00 2024 +0000",
            "",
            "    cache: hz 25 (fix)",
            "",
            "Notes (cacheflow):",
            "    cache: completed <time>: reached 2 node(s): a1, a2",
            "",
            "commit <invalid>",
            "Author: cacheflow tests <tests@cacheflow.invalid>",
            "Date:   Mon Jan 1 00:01:00 2024 +0000",
            "",
            "    cache: hz 500000",
            "",
            "commit <valid>",
            "Author: cacheflow tests <tests@cacheflow.invalid>",
            "Date:   Mon Jan 1 00:00:00 2024 +0000",
            "",
            "    cache: 64mb, hz 20",
            "",
            "Notes (cacheflow):",
            "    cache: completed <time>: reached 2 node(s): a1, a2",
        ],
    );

    // `cacheflow history`: the fix's own change (from the last valid commit), never
    // "never applied"; the scale-out with its outcome; the rollback with its reason.
    let history = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["history", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert!(history.status.success());
    let history = String::from_utf8_lossy(&history.stdout);
    assert_lines(
        &words(&history, &commits),
        &[
            "<too-small> 2024-01-01T00:04:00Z cacheflow tests: cache: 2mb (too small)",
            "  cache: maxmemory 64mb → 2mb",
            &format!("  ⇒ {rolled_back}"),
            "<scale-out> 2024-01-01T00:03:00Z cacheflow tests: cache: add a3",
            "  cache: nodes or rollout policy changed",
            "  ⇒ cache: completed <time>: reached 1 node(s): a3",
            "<fix> 2024-01-01T00:02:00Z cacheflow tests: cache: hz 25 (fix)",
            "  changes since <valid>, the last valid commit before it",
            "  cache: hz 20 → 25",
            "  ⇒ cache: completed <time>: reached 2 node(s): a1, a2",
            "<invalid> 2024-01-01T00:01:00Z cacheflow tests: cache: hz 500000",
            "  invalid, never applied: head <invalid> is invalid (1 error)",
            "  outcome: nothing rolled out: the commit does not validate",
            "<valid> 2024-01-01T00:00:00Z cacheflow tests: cache: 64mb, hz 20",
            "  cache: hz (unset) → 20, maxmemory (unset) → 64mb, maxmemory-policy (unset) → noeviction",
            "  ⇒ cache: completed <time>: reached 2 node(s): a1, a2",
        ],
    );
}

#[test]
fn history_of_a_valid_commit_after_invalid_ones_shows_what_it_changed_and_never_calls_it_unapplied()
{
    let repo = TestRepo::new();
    let yaml = |params: &str| {
        format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  engine: redis\n  parameters:\n{params}\n  nodes:\n    - {{id: n1, address: '127.0.0.1:6390'}}\n"
        )
    };
    // No valid commit before the fix: everything in it is new.
    repo.write("clusters/cache.yaml", &yaml("    hz: 500000"));
    let broken = repo.commit("cache: hz 500000");
    repo.write(
        "clusters/cache.yaml",
        &yaml("    hz: 30\n    maxmemory: 64mb"),
    );
    let fixed = repo.commit("cache: hz 30, 64mb");
    // Two invalid commits in a row, then a fix: measured from the last valid one.
    repo.write("clusters/cache.yaml", &yaml("    hz: 0"));
    let bad1 = repo.commit("cache: hz 0");
    repo.write(
        "clusters/cache.yaml",
        &yaml("    hz: 0\n    maxmemory: 64zb"),
    );
    let bad2 = repo.commit("cache: 64zb");
    repo.write(
        "clusters/cache.yaml",
        &yaml("    hz: 40\n    maxmemory: 64mb"),
    );
    let fix2 = repo.commit("cache: hz 40");
    let history = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["history", "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert!(history.status.success());
    let commits = [
        ("broken", broken.as_str()),
        ("fixed", fixed.as_str()),
        ("bad1", bad1.as_str()),
        ("bad2", bad2.as_str()),
        ("fix2", fix2.as_str()),
    ];
    assert_lines(
        &words(&String::from_utf8_lossy(&history.stdout), &commits),
        &[
            "<fix2> 2024-01-01T00:04:00Z cacheflow tests: cache: hz 40",
            "  changes since <fixed>, the last valid commit before it",
            "  cache: hz 30 → 40",
            "  outcome: changed cache: not rolled out (no note: no cacheflow took this commit, or a later one replaced it first)",
            "<bad2> 2024-01-01T00:03:00Z cacheflow tests: cache: 64zb",
            "  invalid, never applied: head <bad2> is invalid (2 errors)",
            "  outcome: nothing rolled out: the commit does not validate",
            "<bad1> 2024-01-01T00:02:00Z cacheflow tests: cache: hz 0",
            "  invalid, never applied: head <bad1> is invalid (1 error)",
            "  outcome: nothing rolled out: the commit does not validate",
            "<fixed> 2024-01-01T00:01:00Z cacheflow tests: cache: hz 30, 64mb",
            "  no valid commit before it: everything is new",
            "  cache: hz (unset) → 30, maxmemory (unset) → 64mb",
            "  outcome: changed cache: not rolled out (no note: no cacheflow took this commit, or a later one replaced it first)",
            "<broken> 2024-01-01T00:00:00Z cacheflow tests: cache: hz 500000",
            "  invalid, never applied: revision <broken> is invalid (1 error)",
            "  outcome: nothing rolled out: the commit does not validate",
        ],
    );
}

/// `cacheflow agent` beside one memcached service, reporting to `server` every 300 ms
/// (killed when dropped).
struct Agent(std::process::Child);

impl Agent {
    fn start(server: &Server, id: &str, service: &Service) -> Agent {
        let token = cacheflow::pure::identity::node_token(NODE_SECRET.as_bytes(), id).unwrap();
        let token_file = service.dir().join("agent-token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["agent", "--node-id", id, "--server", &server.url()])
            .arg("--token-file")
            .arg(&token_file)
            .args(["--memcached", &service.addr(), "--config-file"])
            .arg(service.config_path())
            .args(["--restart-command", &service.restart_command()])
            .args(["--interval", "300ms", "--warmup", "0s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cacheflow agent");
        Agent(child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cluster `sessions`: memcached `nodes` behind agents, with this `maxbytes`.
fn sessions(nodes: &[(&str, &Service)], maxbytes: &str) -> String {
    let list: String = nodes
        .iter()
        .map(|(id, s)| {
            format!(
                "    - {{id: {id}, address: '{}', managed: agent}}\n",
                s.addr()
            )
        })
        .collect();
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: sessions}}
spec:
  engine: memcached
  parameters:
    maxbytes: {maxbytes}
  nodes:
{list}  rollout:
    stages: [1, '100%']
    bake: 0s
    applyTimeout: 10s
    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}
"
    )
}

/// `sessions` in `GET /api/v1/clusters`: its nodes' (id, revision, outcome).
fn sessions_nodes(server: &Server) -> Vec<(String, String, String)> {
    let (code, body) = server.http("GET", "/api/v1/clusters", &[], b"");
    assert_eq!(code, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let Some(c) = all["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["cluster"] == "sessions"))
    else {
        return Vec::new();
    };
    c["assignments"]
        .as_object()
        .map(|a| {
            a.iter()
                .map(|(id, a)| {
                    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
                    (id.clone(), text(&a["revision"]), text(&a["outcome"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until `sessions`' nodes are `want`, each applied at `revision`.
fn until_nodes(server: &Server, want: &[&str], revision: &str) {
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|id| (id.to_string(), revision.to_owned(), "applied".to_owned()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while sessions_nodes(server) != want {
        assert!(
            Instant::now() < deadline,
            "{:?}\n{:#?}",
            sessions_nodes(server),
            server.journal()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn memcached_behind_agents_the_record_names_each_commit_and_a_refused_command_is_a_409() {
    let services: Vec<(&str, Service)> = ["m1", "m2", "m3"]
        .into_iter()
        .map(|id| (id, Service::memcached("")))
        .collect();
    let three: Vec<(&str, &Service)> = services.iter().map(|(id, s)| (*id, s)).collect();
    let remote = Remote::new();
    let work = TestRepo::new();

    // 1. The nodes as they run (64 MB): every agent confirms, nothing is rolled out.
    work.write("clusters/sessions.yaml", &sessions(&three, "64mb"));
    let as_they_run = work.commit("sessions: 64mb, as the nodes run");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    let _agents: Vec<Agent> = services
        .iter()
        .map(|(id, s)| Agent::start(&server, id, s))
        .collect();
    until_nodes(&server, &["m1", "m2", "m3"], &as_they_run);

    // 2. 96 MB: rolled out by the agents, canary first, noted on that commit.
    work.write("clusters/sessions.yaml", &sessions(&three, "96mb"));
    let bigger = work.commit("sessions: 96mb");
    remote.push(&work, false);
    assert_eq!(server.github_push("d-96mb").0, 202);
    until_nodes(&server, &["m1", "m2", "m3"], &bigger);
    for (id, s) in &services {
        let maxbytes = s.memcached_client().settings()["maxbytes"].clone();
        assert_eq!(maxbytes, "100663296", "{id}");
    }

    // 3. m3 leaves the cluster: its assignment leaves the API at once.
    let pids: Vec<Option<u32>> = services.iter().map(|(_, s)| s.pid()).collect();
    work.write("clusters/sessions.yaml", &sessions(&three[..2], "96mb"));
    let shrink = work.commit("sessions: m3 leaves");
    remote.push(&work, false);
    assert_eq!(server.github_push("d-m3").0, 202);
    until_nodes(&server, &["m1", "m2"], &bigger);
    assert!(
        server
            .journal()
            .iter()
            .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
            .any(|l| l == "sessions: m3 no longer declared in the cluster: assignment dropped"),
        "{:#?}",
        server.journal()
    );
    let now: Vec<Option<u32>> = services.iter().map(|(_, s)| s.pid()).collect();
    assert_eq!(now, pids, "a change of maxbytes restarts no memcached");

    // 4. Pausing a completed rollout is refused: 409, exit 1, nothing journaled.
    let before = server.journal();
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["rollout", "pause", "sessions", "--server", &server.url()])
        .env("CACHEFLOW_ADMIN_TOKEN", "admin-token-0123456789")
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned()
        ),
        (
            Some(1),
            String::new(),
            "error: 409 Conflict: cluster `sessions` has no rollout in progress\n".to_owned()
        )
    );
    assert_eq!(server.journal(), before);

    // The record: each commit's note, and `cacheflow history` of the server's mirror.
    let commits = [
        ("as-they-run", as_they_run.as_str()),
        ("bigger", bigger.as_str()),
        ("shrink", shrink.as_str()),
    ];
    let notes: Vec<String> = commits
        .iter()
        .map(|(_, c)| words(&server.note(c), &commits))
        .collect();
    assert_eq!(
        notes,
        [
            "sessions: in sync <time>: 3 node(s) already run it: m1, m2, m3",
            "sessions: completed <time>: reached 3 node(s): m1, m2, m3",
            "",
        ]
    );
    let history = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["history", "--repo"])
        .arg(server.mirror().path())
        .args(["--rev", "refs/heads/main"])
        .output()
        .unwrap();
    assert!(
        history.status.success(),
        "{}",
        String::from_utf8_lossy(&history.stderr)
    );
    assert_lines(
        &words(&String::from_utf8_lossy(&history.stdout), &commits),
        &[
            "<shrink> 2024-01-01T00:02:00Z cacheflow tests: sessions: m3 leaves",
            "  sessions: nodes or rollout policy changed",
            "  outcome: changed no parameter, only the nodes or rollout policy of sessions: no rollout noted",
            "<bigger> 2024-01-01T00:01:00Z cacheflow tests: sessions: 96mb",
            "  sessions: maxbytes 64mb → 96mb",
            "  ⇒ sessions: completed <time>: reached 3 node(s): m1, m2, m3",
            "<as-they-run> 2024-01-01T00:00:00Z cacheflow tests: sessions: 64mb, as the nodes run",
            "  sessions: maxbytes (unset) → 64mb",
            "  ⇒ sessions: in sync <time>: 3 node(s) already run it: m1, m2, m3",
        ],
    );
}
