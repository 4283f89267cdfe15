//! `cacheflow import` against real servers: a redis-server primary with two replicas and
//! a memcached. The written repository validates and `plan --direct` against the same
//! nodes says converged; a down node and a missing password fail with nothing written;
//! an existing cluster file is never overwritten.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::git::TestRepo;
use crate::support::servers::{MemcachedServer, RedisOptions, RedisServer};

fn cacheflow(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shared() -> RedisOptions {
    RedisOptions::new()
        .config("maxmemory-policy", "allkeys-lru")
        .config("timeout", "300")
}

fn wait_linked(replica: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = replica
            .client()
            .cmd(&["INFO", "replication"])
            .as_str()
            .unwrap_or_default();
        if info.contains("master_link_status:up") {
            return;
        }
        assert!(Instant::now() < deadline, "replica never linked: {info:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn converged(repo: &Path) {
    let (code, out, err) = cacheflow(&["validate", "--worktree", "--repo", "."], repo);
    assert_eq!(code, 0, "validate: {out}{err}");
    let (code, out, err) = cacheflow(&["plan", "--direct", "--worktree", "--repo", "."], repo);
    assert_eq!(code, 0, "plan --direct: {out}{err}");
}

#[test]
fn a_primary_with_two_replicas_is_imported_and_converged() {
    let primary = RedisServer::start_with(shared());
    let replica = |p: &RedisServer| {
        RedisServer::start_with(shared().config("replicaof", &format!("127.0.0.1 {}", p.port())))
    };
    let r1 = replica(&primary);
    let r2 = replica(&primary);
    wait_linked(&r1);
    wait_linked(&r2);
    let repo = TestRepo::new();
    let addrs = format!("{},{},{}", r1.addr(), primary.addr(), r2.addr());
    let (code, out, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "cache",
            "--redis",
            &addrs,
            "--output",
            ".",
        ],
        repo.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cacheflow.yaml"), "{out}");
    let text = repo.read("clusters/cache.yaml");
    assert!(text.contains("engine: redis\n  version: \"7.0\""), "{text}");
    assert!(text.contains("maxmemory-policy: \"allkeys-lru\""), "{text}");
    assert!(text.contains("timeout: \"300\""), "{text}");
    assert!(
        !text.contains("  maxmemory:"),
        "the default is left out: {text}"
    );
    let p = format!("cache-127-0-0-1-{}", primary.port());
    assert!(
        text.contains(&format!(
            "{{ id: {p}, address: \"{}\", shard: {p}, role: primary }}",
            primary.addr()
        )),
        "{text}"
    );
    for r in [&r1, &r2] {
        let line = format!(
            "{{ id: cache-127-0-0-1-{}, address: \"{}\", shard: {p}, role: replica }}",
            r.port(),
            r.addr()
        );
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(err.contains("differ between the nodes"), "{err}");
    converged(repo.path());

    // Again: refused, the file unchanged.
    let (code, out, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "cache",
            "--redis",
            &addrs,
            "--output",
            ".",
        ],
        repo.path(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(repo.read("clusters/cache.yaml"), text);

    // A memcached into the same repository: added beside it.
    let mc = MemcachedServer::start();
    let (code, out, err) = cacheflow(
        &["import", "--cluster", "sessions", "--memcached", &mc.addr()],
        repo.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("cacheflow.yaml"), "settings kept: {out}");
    let text = repo.read("clusters/sessions.yaml");
    assert!(
        text.contains("engine: memcached\n  version: \"1.6\""),
        "{text}"
    );
    let id = format!("sessions-127-0-0-1-{}", mc.port());
    assert!(
        text.contains(&format!("{{ id: {id}, address: \"{}\" }}", mc.addr())),
        "{text}"
    );
    converged(repo.path());
}

#[test]
fn a_down_node_or_a_missing_password_writes_nothing() {
    let up = RedisServer::start();
    let down = RedisServer::start();
    let down_addr = down.addr();
    drop(down);
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "c",
            "--redis",
            &format!("{},{down_addr}", up.addr()),
        ],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("nothing written") && err.contains(&down_addr),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let locked = RedisServer::start_with(RedisOptions::new().requirepass("s3cret-pw"));
    let (code, out, err) = cacheflow(
        &["import", "--cluster", "c", "--redis", &locked.addr()],
        dir.path(),
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("nothing written"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Given as a reference: the cluster file holds the reference, never the password.
    let (code, out, err) = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["import", "--cluster", "c", "--redis", &locked.addr()])
        .args(["--auth-password-ref", "env:C_PASSWORD"])
        .current_dir(dir.path())
        .env("C_PASSWORD", "s3cret-pw")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(dir.path().join("clusters/c.yaml")).unwrap();
    assert!(text.contains("password: \"env:C_PASSWORD\""), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
