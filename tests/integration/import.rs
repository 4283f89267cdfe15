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

/// The `parameters:` of a written cluster file: name → value as written.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line == "  parameters:" {
            inside = true;
        } else if inside {
            match line.strip_prefix("    ").and_then(|l| l.split_once(": ")) {
                Some((name, value)) if !line.starts_with("     ") => {
                    out.push((name.to_owned(), value.to_owned()))
                }
                _ => break,
            }
        }
    }
    out
}

#[test]
fn a_tls_redis_with_client_certificates_and_a_tls_memcached_are_imported_and_converged() {
    use crate::tls::{memcached_tls, redis_cli, redis_tls, Pki};

    let pki = Pki::new();
    let node = redis_tls(&pki, "server", true);
    assert_eq!(
        redis_cli(
            &pki,
            &node,
            true,
            &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]
        ),
        "OK"
    );
    let repo = TestRepo::new();
    let out = repo.path().to_str().unwrap();

    // Without the TLS flags: the node's words, nothing written.
    let (code, o, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "c",
            "--redis",
            &node.addr(),
            "--output",
            out,
        ],
        repo.path(),
    );
    assert_eq!(code, 1, "{o}{err}");
    assert!(
        err.contains("nothing written") && err.contains("a TLS port?"),
        "{err}"
    );
    // A CA that did not sign the node's certificate: said so, nothing written.
    let (code, o, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "c",
            "--redis",
            &node.addr(),
            "--output",
            out,
            "--node-ca-file",
            "other-ca.pem",
        ],
        Path::new(&pki.path("")),
    );
    assert_eq!(code, 1, "{o}{err}");
    assert!(err.contains("not signed by a CA of tls.ca"), "{err}");
    assert!(!repo.path().join("clusters").exists());

    // Relative paths, from the certificates' directory: written absolute.
    let (code, o, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "c",
            "--redis",
            &node.addr(),
            "--output",
            out,
            "--node-ca-file",
            "ca.pem",
            "--node-cert-file",
            "client.pem",
            "--node-key-file",
            "client.key",
            "--node-server-name",
            "localhost",
        ],
        Path::new(&pki.path("")),
    );
    assert_eq!(code, 0, "{o}{err}");
    let text = repo.read("clusters/c.yaml");
    let tls = format!(
        "  tls:\n    ca: \"file:{}\"\n    cert: \"file:{}\"\n    key: \"file:{}\"\n    serverName: \"localhost\"\n",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client.key")
    );
    assert!(text.contains(&tls), "{tls}\n{text}");
    let names: Vec<String> = parameters(&text).into_iter().map(|(n, _)| n).collect();
    // What the node runs with beyond the defaults; not its port, nor a default such as
    // proc-title-template.
    assert_eq!(
        names,
        [
            "maxmemory-policy",
            "tls-ca-cert-file",
            "tls-cert-file",
            "tls-key-file",
        ],
        "{text}"
    );
    assert!(text.contains("maxmemory-policy: \"allkeys-lru\""), "{text}");
    converged(repo.path());

    // memcached -Z beside it, with the same CA.
    let mc = memcached_tls(&pki);
    let (code, o, err) = cacheflow(
        &[
            "import",
            "--cluster",
            "sessions",
            "--memcached",
            &mc.addr(),
            "--output",
            out,
            "--node-ca-file",
            &pki.path("ca.pem"),
        ],
        repo.path(),
    );
    assert_eq!(code, 0, "{o}{err}");
    let text = repo.read("clusters/sessions.yaml");
    assert!(
        text.contains(&format!(
            "  tls:\n    ca: \"file:{}\"\n  nodes:\n",
            pki.path("ca.pem")
        )),
        "{text}"
    );
    // The daemon of tls.rs starts memcached with -m 32.
    assert_eq!(
        parameters(&text),
        [("maxbytes".to_owned(), "\"33554432\"".to_owned())],
        "{text}"
    );
    converged(repo.path());
}

#[test]
fn a_memcached_started_with_other_settings_is_imported_with_exactly_those() {
    let mc = MemcachedServer::start_with_args(&[
        "-m",
        "128",
        "-c",
        "2048",
        "-o",
        "hash_algorithm=jenkins",
    ]);
    let repo = TestRepo::new();
    let (code, out, err) = cacheflow(
        &["import", "--cluster", "pages", "--memcached", &mc.addr()],
        repo.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    let text = repo.read("clusters/pages.yaml");
    assert_eq!(
        parameters(&text),
        [
            ("hash_algorithm".to_owned(), "\"jenkins\"".to_owned()),
            ("maxbytes".to_owned(), "\"134217728\"".to_owned()),
            ("maxconns".to_owned(), "\"2048\"".to_owned()),
        ],
        "{text}"
    );
    // Its port and listening address are the node's, not the cluster's.
    assert!(
        !text.contains("tcpport") && !text.contains("inter:"),
        "{text}"
    );
    converged(repo.path());
}

#[test]
fn a_memcached_with_authentication_is_imported_with_the_user_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth");
    std::fs::write(&authfile, "cacheflow:s3cret-pw\n").unwrap();
    // (tls.rs's daemon: MemcachedServer waits for an answer it would not get.)
    let mc = crate::tls::memcached(&["-Y".to_owned(), authfile.display().to_string()]);
    let repo = TestRepo::new();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["import", "--cluster", "m", "--memcached", &mc.addr()])
            .args(args)
            .current_dir(repo.path())
            .env("M_PASSWORD", "s3cret-pw")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    // No user: refused before reading; no credentials: the node refuses, nothing written.
    let (code, out) = run(&["--auth-password-ref", "env:M_PASSWORD"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("give --auth-user too"), "{out}");
    let (code, out) = run(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing written"), "{out}");
    assert!(!repo.path().join("clusters").exists());

    let (code, out) = run(&[
        "--auth-user",
        "cacheflow",
        "--auth-password-ref",
        "env:M_PASSWORD",
    ]);
    assert_eq!(code, 0, "{out}");
    let text = repo.read("clusters/m.yaml");
    assert!(
        text.contains("  auth:\n    username: \"cacheflow\"\n    password: \"env:M_PASSWORD\"\n"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
    let (code, o, e) = cacheflow(&["validate", "--worktree", "--repo", "."], repo.path());
    assert_eq!(code, 0, "{o}{e}");
    // plan --direct needs the password in its environment too.
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["plan", "--direct", "--worktree", "--repo", "."])
        .current_dir(repo.path())
        .env("M_PASSWORD", "s3cret-pw")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
