//! `cacheflow snapshot` and `plan --direct` through the real binary, against real
//! redis-server and memcached processes declared in a real git repository.

use std::process::Command;

use serde_json::Value;

use crate::support::git::TestRepo;
use crate::support::servers::{free_port, MemcachedServer, RedisOptions, RedisServer};

fn cacheflow(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cacheflow"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the cacheflow binary runs")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository declaring `sessions` (two Redis nodes, one with a password, and one node
/// nobody listens on) and `pages` (one memcached).
fn fleet_repo(a: &RedisServer, b: &RedisServer, m: &MemcachedServer, down: u16) -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "clusters/sessions.yaml",
        &format!(
            "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: sessions}}
spec:
  engine: redis
  parameters:
    maxmemory: 64mb
    maxmemory-policy: allkeys-lru
  auth: {{password: env:TEST_REDIS_PASSWORD}}
  nodes:
    - {{id: s-1, address: '{}', shard: s1, role: primary}}
    - {{id: s-2, address: '{}', shard: s1, role: replica}}
    - {{id: s-3, address: '127.0.0.1:{down}', shard: s2, role: primary}}
",
            a.addr(),
            b.addr()
        ),
    );
    repo.write(
        "clusters/pages.yaml",
        &format!(
            "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: pages}}
spec:
  engine: memcached
  parameters: {{maxbytes: 64mb}}
  nodes:
    - {{id: p-1, address: '{}'}}
",
            m.addr()
        ),
    );
    repo.commit("fleet");
    repo
}

/// `replica` follows `primary` for real (both with the password `s3cret`), link up.
fn replicate(replica: &RedisServer, primary: &RedisServer) {
    let mut c = replica.client();
    c.auth(None, "s3cret");
    assert!(c.cmd(&["CONFIG", "SET", "masterauth", "s3cret"]).is_ok());
    let port = primary.port().to_string();
    assert!(c.cmd(&["REPLICAOF", "127.0.0.1", &port]).is_ok());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !c
        .cmd(&["INFO", "replication"])
        .as_str()
        .unwrap_or_default()
        .contains("master_link_status:up")
    {
        assert!(std::time::Instant::now() < deadline, "link not up");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn snapshot_reads_every_node_and_reports_the_unreachable_one() {
    let a = RedisServer::start_with(RedisOptions::new().requirepass("s3cret"));
    let b = RedisServer::start_with(RedisOptions::new().requirepass("s3cret"));
    // s-2 is declared a replica of s-1: it is one.
    replicate(&b, &a);
    let m = MemcachedServer::start_with_args(&["-m", "32"]);
    let down = free_port();
    let repo = fleet_repo(&a, &b, &m, down);
    let out = cacheflow(
        &[
            "snapshot",
            "--repo",
            repo.path().to_str().unwrap(),
            "--timeout",
            "1s",
        ],
        &[("TEST_REDIS_PASSWORD", "s3cret")],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        !text.contains("s3cret"),
        "the password never appears in a snapshot"
    );
    let snap: Value = serde_json::from_str(&text).expect("the snapshot is JSON");
    assert_eq!(snap["version"], 1);
    let nodes = snap["nodes"].as_object().unwrap();
    assert_eq!(
        nodes.keys().collect::<Vec<_>>(),
        vec!["p-1", "s-1", "s-2", "s-3"]
    );
    // What CONFIG GET says, as the engine spells it.
    let mut client = a.client();
    client.auth(None, "s3cret");
    let maxmemory = client.config_get("maxmemory")["maxmemory"].clone();
    assert_eq!(
        nodes["s-1"]["parameters"]["maxmemory"],
        Value::String(maxmemory)
    );
    assert_eq!(nodes["s-1"]["reachable"], true);
    assert_eq!(nodes["s-1"]["cluster"], "sessions");
    assert_eq!(nodes["s-1"]["health"]["role"], "primary");
    assert_eq!(nodes["p-1"]["parameters"]["maxbytes"], "33554432");
    assert_eq!(nodes["p-1"]["health"]["maxMemory"], 33554432);
    assert_eq!(nodes["s-3"]["reachable"], false);
    let error = nodes["s-3"]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("127.0.0.1:{down}: unreachable")),
        "{error}"
    );

    // The file form, read back by `plan --live`, gives the same plan as `--direct`.
    let file = repo.path().join("..").join(format!("snap-{down}.json"));
    let out = cacheflow(
        &[
            "snapshot",
            "--repo",
            repo.path().to_str().unwrap(),
            "-o",
            file.to_str().unwrap(),
        ],
        &[("TEST_REDIS_PASSWORD", "s3cret")],
    );
    assert_eq!(out.status.code(), Some(0));
    let from_file = cacheflow(
        &[
            "plan",
            "--repo",
            repo.path().to_str().unwrap(),
            "--live",
            file.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    let direct = cacheflow(
        &[
            "plan",
            "--repo",
            repo.path().to_str().unwrap(),
            "--direct",
            "--format",
            "json",
        ],
        &[("TEST_REDIS_PASSWORD", "s3cret")],
    );
    assert_eq!(from_file.status.code(), Some(2));
    assert_eq!(direct.status.code(), Some(2));
    assert_eq!(stdout(&from_file), stdout(&direct));
    let plan: Value = serde_json::from_str(&stdout(&direct)).unwrap();
    let sessions = &plan["clusters"][1];
    assert_eq!(sessions["cluster"], "sessions");
    let ids: Vec<&str> = sessions["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["s-1", "s-2"]);
    assert_eq!(sessions["unreachable"][0]["id"], "s-3");
    // Replicas first: the canary is the replica.
    assert_eq!(sessions["stages"][0]["batches"][0][0], "s-2");
    let _ = std::fs::remove_file(file);
}

#[test]
fn plan_direct_is_converged_when_the_nodes_match() {
    let a = RedisServer::start_with(RedisOptions::new().requirepass("s3cret"));
    let b = RedisServer::start_with(RedisOptions::new().requirepass("s3cret"));
    let m = MemcachedServer::start_with_args(&["-m", "64"]);
    let repo = fleet_repo(&a, &b, &m, free_port());
    // Drop the node nobody listens on, and set the Redis nodes by hand to the repository.
    let text = repo.read("clusters/sessions.yaml");
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains("s-3")).collect();
    repo.write("clusters/sessions.yaml", &(kept.join("\n") + "\n"));
    repo.commit("two nodes");
    for server in [&a, &b] {
        let mut c = server.client();
        c.auth(None, "s3cret");
        assert!(c
            .cmd(&[
                "CONFIG",
                "SET",
                "maxmemory",
                "64mb",
                "maxmemory-policy",
                "allkeys-lru"
            ])
            .is_ok());
    }
    let out = cacheflow(
        &["plan", "--repo", repo.path().to_str().unwrap(), "--direct"],
        &[("TEST_REDIS_PASSWORD", "s3cret")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).ends_with("converged: every node matches\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_wrong_password_is_an_unreachable_node_without_the_password() {
    let a = RedisServer::start_with(RedisOptions::new().requirepass("s3cret"));
    let b = RedisServer::start_with(RedisOptions::new().requirepass("s3cret"));
    let m = MemcachedServer::start();
    let repo = fleet_repo(&a, &b, &m, free_port());
    let out = cacheflow(
        &[
            "snapshot",
            "--repo",
            repo.path().to_str().unwrap(),
            "--cluster",
            "sessions",
            "--format",
            "text",
        ],
        &[("TEST_REDIS_PASSWORD", "wrong-horse")],
    );
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(!text.contains("wrong-horse"));
    assert!(text.contains("s-1 (sessions): unreachable: "), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.ends_with("3 nodes, 3 unreachable\n"), "{text}");
    let out = cacheflow(
        &[
            "snapshot",
            "--repo",
            repo.path().to_str().unwrap(),
            "--cluster",
            "nope",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no cluster named `nope` in this revision\n"
    );
}

#[test]
fn credentials_set_on_a_node_by_hand_appear_in_no_reading() {
    // Set in the node's config file, so the live view (CONFIG GET *) and the persisted
    // view (the config file) both hold them.
    let secrets = [
        ("masteruser", "hand-user-2x"),
        ("masterauth", "hand-auth-3x"),
        ("tls-key-file-pass", "hand-keypass-4x"),
        ("tls-client-key-file-pass", "hand-clientpass-5x"),
    ];
    let mut options = RedisOptions::new().requirepass("hand-pass-1x");
    for (name, value) in secrets {
        options = options.config(name, value);
    }
    let a = RedisServer::start_with(options);
    let b = RedisServer::start_with(RedisOptions::new().requirepass("hand-pass-1x"));
    // The node holds them: this test would prove nothing otherwise.
    let held = a.client().config_get("*");
    for (name, value) in secrets {
        assert_eq!(held.get(name).map(String::as_str), Some(value), "{name}");
    }
    let m = MemcachedServer::start();
    let repo = fleet_repo(&a, &b, &m, free_port());
    let path = repo.path().to_str().unwrap();
    let env = [("TEST_REDIS_PASSWORD", "hand-pass-1x")];
    let work = tempfile::tempdir().unwrap();
    let live = work.path().join("live.json");
    let mut outputs = Vec::new();
    for args in [
        &["snapshot", "--repo", path, "--format", "json"][..],
        &["snapshot", "--repo", path, "--format", "text"][..],
        &["snapshot", "--repo", path, "-o", live.to_str().unwrap()][..],
        &["drift", "--repo", path, "--direct", "--format", "json"][..],
        &["drift", "--repo", path, "--direct", "--format", "markdown"][..],
        &["drift", "--repo", path, "--direct", "--format", "text"][..],
        &["plan", "--repo", path, "--direct", "--format", "json"][..],
        &["plan", "--repo", path, "--direct", "--format", "markdown"][..],
    ] {
        let out = cacheflow(args, &env);
        let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
        assert!(
            matches!(out.status.code(), Some(0) | Some(2)),
            "{args:?}: {text}"
        );
        outputs.push((args.to_vec().join(" "), text));
    }
    let snapshot = std::fs::read_to_string(&live).unwrap();
    assert!(snapshot.contains("\"s-1\""), "{snapshot}");
    outputs.push(("live.json".to_owned(), snapshot));
    for (what, text) in &outputs {
        for secret in ["hand-pass-1x"]
            .into_iter()
            .chain(secrets.iter().map(|(_, v)| *v))
        {
            assert!(!text.contains(secret), "{what} shows `{secret}`:\n{text}");
        }
    }
}
