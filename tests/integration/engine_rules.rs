//! Rules the engines enforce across parameters. For each rule: the real server refuses
//! to start with the combination (memcached 1.6, redis-server 7.0, in their own words),
//! and `cacheflow validate` refuses it first, through the real binary: exit 1 and the
//! exact error at file:line:col. A combination just inside each rule starts and
//! validates.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::git::TestRepo;
use crate::support::servers::{free_port, running_as_root, MemcachedServer};

/// One rule: the cluster's parameters (YAML lines under `parameters:`), whether it
/// declares `auth`, the engine's arguments for the same values, what the engine says,
/// the parameter the error points at and the rest of the error.
struct Case {
    params: &'static [&'static str],
    auth: bool,
    engine_args: &'static [&'static str],
    engine_says: &'static str,
    at: &'static str,
    error: &'static str,
}

fn cluster_yaml(engine: &str, params: &[&str], auth: bool) -> String {
    let auth = if auth {
        "  auth: {username: cacheflow, password: env:CACHE_PASSWORD}"
    } else {
        "  # no auth"
    };
    let port = if engine == "memcached" { 11211 } else { 6379 };
    // A cluster-enabled node is declared in cluster mode (validate refuses it otherwise).
    let mode = if params.iter().any(|p| p.starts_with("cluster-enabled: yes")) {
        "  mode: cluster\n"
    } else {
        ""
    };
    let params: String = params.iter().map(|p| format!("    {p}\n")).collect();
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: cache}}
spec:
  engine: {engine}
{mode}{auth}
  parameters:
{params}  nodes:
    - {{id: c1, address: '127.0.0.1:{port}', shard: s1}}
"
    )
}

/// `line:column` of the value of `name` in `yaml` (1-based, as validate prints it).
fn value_at(yaml: &str, name: &str) -> String {
    let key = format!("{name}: ");
    let (line, text) = yaml
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim_start().starts_with(&key))
        .unwrap_or_else(|| panic!("{name} not in\n{yaml}"));
    let column = text.find(&key).expect("the key") + key.len() + 1;
    format!("{}:{column}", line + 1)
}

/// `cacheflow validate` of a repository holding `yaml`: exit code and stdout, with the
/// commit's short id written `<commit>`.
fn validate(yaml: &str) -> (i32, String) {
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", yaml);
    let commit = repo.commit("cache");
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["validate", "--repo", &repo.path().display().to_string()])
        .output()
        .expect("the cacheflow binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, "", "validate wrote to stderr");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace(&commit[..12], "<commit>"),
    )
}

fn assert_refused_by_validate(engine: &str, case: &Case) {
    let yaml = cluster_yaml(engine, case.params, case.auth);
    let (code, out) = validate(&yaml);
    let want = format!(
        "clusters/cache.yaml:{}: {} (at /spec/parameters/{})\ninvalid: 1 error in 1 file at <commit>\n",
        value_at(&yaml, case.at),
        case.error,
        case.at
    );
    assert_eq!((code, out.as_str()), (1, want.as_str()), "{yaml}");
}

fn memcached_auth_file(dir: &Path) -> String {
    let path = dir.join("auth");
    std::fs::write(&path, "cacheflow:secret\n").expect("write the auth file");
    path.display().to_string()
}

#[test]
fn memcached_refuses_to_start_with_each_combination_and_validate_refuses_it_first() {
    let dir = tempfile::tempdir().unwrap();
    let auth_file = memcached_auth_file(dir.path());
    let cases = [
        Case {
            params: &["item_size_max: 64mb"],
            auth: false,
            engine_args: &["-I", "64m"],
            engine_says: "Cannot set item size limit higher than 1/2 of memory max.",
            at: "item_size_max",
            error: "`item_size_max` (67108864) is more than half of `maxbytes` (67108864, the default): memcached refuses to start with this (\"Cannot set item size limit higher than 1/2 of memory max.\")",
        },
        Case {
            params: &["maxbytes: 128mb", "item_size_max: 96mb"],
            auth: false,
            engine_args: &["-m", "128", "-I", "96m"],
            engine_says: "Cannot set item size limit higher than 1/2 of memory max.",
            at: "item_size_max",
            error: "`item_size_max` (100663296) is more than half of `maxbytes` (134217728): memcached refuses to start with this (\"Cannot set item size limit higher than 1/2 of memory max.\")",
        },
        Case {
            params: &["item_size_max: 100kb"],
            auth: false,
            engine_args: &["-I", "100k"],
            engine_says: "slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 102400)",
            at: "item_size_max",
            error: "`slab_chunk_max` (524288, the default) is larger than `item_size_max` (102400): memcached refuses to start with this (\"slab_chunk_max (bytes: 524288) cannot be larger than -I (item_size_max 102400)\")",
        },
        Case {
            params: &["item_size_max: 1600kb"],
            auth: false,
            engine_args: &["-I", "1600k"],
            engine_says: "-I (item_size_max: 1638400) must be evenly divisible by slab_chunk_max (bytes: 524288)",
            at: "item_size_max",
            error: "`item_size_max` (1638400) is not a multiple of `slab_chunk_max` (524288, the default): memcached refuses to start with this (\"-I (item_size_max: 1638400) must be evenly divisible by slab_chunk_max (bytes: 524288)\")",
        },
        Case {
            params: &["slab_chunk_max: 393216", "item_size_max: 786432"],
            auth: false,
            engine_args: &["-o", "slab_chunk_max=393216", "-I", "786432"],
            engine_says: "slab_chunk_max (bytes: 393216) must divide evenly into 1048576 (slab_page_size)",
            at: "slab_chunk_max",
            error: "`slab_chunk_max` (393216) does not divide the slab page size (1048576): memcached refuses to start with this (\"slab_chunk_max (bytes: 393216) must divide evenly into 1048576 (slab_page_size)\")",
        },
        Case {
            params: &["hot_lru_pct: 50", "warm_lru_pct: 40"],
            auth: false,
            engine_args: &["-o", "hot_lru_pct=50,warm_lru_pct=40"],
            engine_says: "hot_lru_pct + warm_lru_pct cannot be more than 80% combined",
            at: "hot_lru_pct",
            error: "`hot_lru_pct` (50) + `warm_lru_pct` (40) is more than 80: memcached refuses to start with this (\"hot_lru_pct + warm_lru_pct cannot be more than 80% combined\")",
        },
        Case {
            params: &["temporary_ttl: 60s", "lru_maintainer_thread: false"],
            auth: false,
            engine_args: &["-o", "temporary_ttl=60,no_lru_maintainer"],
            engine_says: "temporary_ttl requires lru_maintainer to be enabled",
            at: "lru_maintainer_thread",
            error: "`temporary_ttl` (which turns the TEMP LRU on) needs `lru_maintainer_thread`, declared no: memcached refuses to start with this (\"temporary_ttl requires lru_maintainer to be enabled\")",
        },
        Case {
            params: &["binding_protocol: binary"],
            auth: true,
            engine_args: &["-B", "binary"],
            engine_says: "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.",
            at: "binding_protocol",
            error: "`binding_protocol` (binary) with `auth` (memcached's -Y takes the ASCII protocol only): memcached refuses to start with this (\"ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.\")",
        },
        Case {
            params: &["udpport: 11999"],
            auth: true,
            engine_args: &["-U", "11999"],
            engine_says: "Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
            at: "udpport",
            error: "`udpport` (11999) with `auth`: memcached refuses to start with this (\"Cannot use UDP with ascii authentication enabled (-U 0 to disable)\")",
        },
    ];
    for case in &cases {
        // The engine itself refuses the combination.
        let mut args: Vec<&str> = case.engine_args.to_vec();
        if case.auth {
            args.extend(["-Y", auth_file.as_str()]);
        }
        match MemcachedServer::try_start_with_args(&args) {
            Ok(_) => panic!("memcached started with {args:?}"),
            Err(log) => assert!(log.contains(case.engine_says), "{args:?}: {log}"),
        }
        assert_refused_by_validate("memcached", case);
    }

    // Just inside the rules: exactly half of maxbytes, 80% of LRU, ASCII with auth.
    let fine = [
        "maxbytes: 128mb",
        "item_size_max: 64mb",
        "hot_lru_pct: 40",
        "warm_lru_pct: 40",
        "binding_protocol: ascii",
    ];
    // (Started by hand: with -Y the harness's unauthenticated ping is refused.)
    let port = free_port().to_string();
    let mut args = vec!["-p", port.as_str(), "-U", "0", "-l", "127.0.0.1"];
    if running_as_root() {
        args.extend(["-u", "root"]);
    }
    args.extend([
        "-m",
        "128",
        "-I",
        "64m",
        "-o",
        "hot_lru_pct=40,warm_lru_pct=40",
    ]);
    args.extend(["-B", "ascii", "-Y", auth_file.as_str()]);
    assert_eq!(refusal("memcached", &args, Duration::from_secs(2)), None);
    let (code, out) = validate(&cluster_yaml("memcached", &fine, true));
    assert_eq!(code, 0, "{out}");
}

/// `program args`: what it wrote if it exited within `within` (`None` if it kept
/// running, killed then). It must not exit 0.
fn refusal(program: &str, args: &[&str], within: Duration) -> Option<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} (apt-get install {program}): {e}"));
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the engine") {
            let out = child.wait_with_output().expect("the engine's output");
            assert!(!status.success(), "{program} exited 0 with {args:?}");
            return Some(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// redis-server on a free loopback port, without persistence, with `args`: what it
/// wrote if it exited within `within`.
fn redis_refusal(args: &[&str], within: Duration) -> Option<String> {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let dir = dir.path().display().to_string();
    let mut all = vec!["--port", port.as_str(), "--bind", "127.0.0.1", "--save", ""];
    all.extend(["--appendonly", "no", "--dir", dir.as_str()]);
    all.extend(args);
    refusal("redis-server", &all, within)
}

#[test]
fn redis_refuses_to_start_with_each_combination_and_validate_refuses_it_first() {
    let cases = [
        Case {
            params: &["port: 0"],
            auth: false,
            engine_args: &["--port", "0"],
            engine_says: "Configured to not listen anywhere, exiting.",
            at: "port",
            error: "`port` (0), `tls-port` (0, the default) and `unixsocket` (\"\", the default) leave no listener: Redis refuses to start with this (\"Configured to not listen anywhere, exiting.\")",
        },
        Case {
            params: &["cluster-enabled: yes", "replicaof: 127.0.0.1 6390"],
            auth: false,
            engine_args: &["--cluster-enabled", "yes", "--replicaof", "127.0.0.1", "6390"],
            engine_says: "replicaof directive not allowed in cluster mode",
            at: "replicaof",
            error: "`replicaof` (127.0.0.1 6390) with `cluster-enabled` (yes): a cluster node's replication is set by CLUSTER REPLICATE: Redis refuses to start with this (\"replicaof directive not allowed in cluster mode\")",
        },
        Case {
            params: &["shutdown-on-sigterm: save nosave"],
            auth: false,
            engine_args: &["--shutdown-on-sigterm", "save", "nosave"],
            engine_says: "shutdown options SAVE and NOSAVE can't be used simultaneously",
            at: "shutdown-on-sigterm",
            error: "`shutdown-on-sigterm` (nosave save) holds both save and nosave: Redis refuses to start with this (\"shutdown options SAVE and NOSAVE can't be used simultaneously\")",
        },
    ];
    for case in &cases {
        let said = redis_refusal(case.engine_args, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("redis-server kept running with {:?}", case.engine_args));
        assert!(
            said.contains(case.engine_says),
            "{:?}: {said}",
            case.engine_args
        );
        assert_refused_by_validate("redis", case);
    }

    // Just inside: a Unix socket is a listener; save alone is a shutdown flag.
    let sock = tempfile::tempdir().unwrap();
    let sock = sock.path().join("redis.sock").display().to_string();
    let args = [
        "--port",
        "0",
        "--unixsocket",
        sock.as_str(),
        "--shutdown-on-sigterm",
        "save",
        "now",
    ];
    assert_eq!(
        redis_refusal(&args, Duration::from_secs(2)),
        None,
        "redis-server refused {args:?}"
    );
    let unixsocket = format!("unixsocket: {sock}");
    let fine = [
        "port: 0",
        unixsocket.as_str(),
        "shutdown-on-sigterm: save now",
    ];
    let (code, out) = validate(&cluster_yaml("redis", &fine, false));
    assert_eq!(code, 0, "{out}");
}
