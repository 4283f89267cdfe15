//! TLS to the nodes, memcached `-Y` authentication, and `serve`/`agent` over HTTPS, through
//! the real binary against real `redis-server --tls-port`, `memcached -Z` and
//! `memcached -Y`. The certificates are made here, at run time, with the openssl CLI: a
//! CA, a server certificate for 127.0.0.1 and localhost, a client certificate, an expired
//! server certificate, one for another name, and a second CA nobody trusts.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::git::TestRepo;
use crate::support::servers::{free_port, running_as_root};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's certificates, in a temporary directory.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("cacheflow-pki-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        for ca in ["ca", "other-ca"] {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=cacheflow test {ca}"),
                ],
            );
        }
        // name, subject alternative names, days (-1: expired), signing CA
        let leaves: [(&str, &str, &str, &str); 5] = [
            ("server", "IP:127.0.0.1,DNS:localhost", "2", "ca"),
            ("client", "DNS:cacheflow-client", "2", "ca"),
            ("expired", "IP:127.0.0.1,DNS:localhost", "-1", "ca"),
            ("elsewhere", "DNS:cache.example", "2", "ca"),
            ("stranger", "IP:127.0.0.1,DNS:localhost", "2", "other-ca"),
        ];
        for (name, san, days, ca) in leaves {
            fs::write(
                d.join(format!("{name}.ext")),
                format!("subjectAltName={san}\n"),
            )
            .unwrap();
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &format!("{name}.pem"),
                    "-days",
                    days,
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
        fs::write(d.join("not-pem.pem"), "this is not a certificate\n").unwrap();
        Pki { dir }
    }

    pub(crate) fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }
}

/// A server process on a loopback port, killed on drop.
pub(crate) struct Daemon {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(binary: &str, args: impl Fn(u16, &Path) -> Vec<String>) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("cacheflow-tls-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let mut child = Command::new(binary)
            .args(args(port, dir.path()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{binary} exited with {status}: {}",
                    fs::read_to_string(dir.path().join("log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "{binary} did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            port,
            _dir: dir,
        }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-server` with only a TLS port, serving `cert`; `clients` asks for a client
/// certificate.
pub(crate) fn redis_tls(pki: &Pki, cert: &str, clients: bool) -> Daemon {
    Daemon::start("redis-server", |port, dir| {
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--tls-cert-file".into(),
            pki.path(&format!("{cert}.pem")),
            "--tls-key-file".into(),
            pki.path(&format!("{cert}.key")),
            "--tls-ca-cert-file".into(),
            pki.path("ca.pem"),
            "--tls-auth-clients".into(),
            if clients { "yes" } else { "no" }.into(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ]
    })
}

fn redis_plain() -> Daemon {
    Daemon::start("redis-server", |port, dir| {
        vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            "".into(),
            "--dir".into(),
            dir.display().to_string(),
        ]
    })
}

pub(crate) fn memcached(extra: &[String]) -> Daemon {
    let extra = extra.to_vec();
    Daemon::start("memcached", move |port, _| {
        let mut args: Vec<String> = vec![
            "-p".into(),
            port.to_string(),
            "-U".into(),
            "0".into(),
            "-l".into(),
            "127.0.0.1".into(),
            "-m".into(),
            "32".into(),
        ];
        if running_as_root() {
            args.extend(["-u".to_owned(), "root".to_owned()]);
        }
        args.extend(extra.iter().cloned());
        args
    })
}

pub(crate) fn memcached_tls(pki: &Pki) -> Daemon {
    memcached(&[
        "-Z".into(),
        "-o".into(),
        format!(
            "ssl_chain_cert={},ssl_key={}",
            pki.path("server.pem"),
            pki.path("server.key")
        ),
    ])
}

/// `redis-cli --tls` against `node`: what the server itself says.
pub(crate) fn redis_cli(pki: &Pki, node: &Daemon, client_cert: bool, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &node.port.to_string()])
        .args(["--tls", "--cacert", &pki.path("ca.pem")]);
    if client_cert {
        cmd.args([
            "--cert",
            &pki.path("client.pem"),
            "--key",
            &pki.path("client.key"),
        ]);
    }
    let out = cmd.args(args).output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `stats settings` of a `memcached -Z`, asked through `openssl s_client`.
fn memcached_tls_setting(pki: &Pki, node: &Daemon, name: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-quiet", "-connect", &node.addr()])
        .args(["-CAfile", &pki.path("ca.pem"), "-verify_return_error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"stats settings\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stdin.write_all(b"quit\r\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("STAT {name} ")))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .trim()
        .to_owned()
}

fn cacheflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .output()
        .expect("the cacheflow binary runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A repository with one cluster `c` of `engine`: `extra` goes under `spec:`, `nodes` is
/// a list of (id, address).
fn cluster_repo(engine: &str, params: &str, extra: &str, nodes: &[(&str, String)]) -> TestRepo {
    let repo = TestRepo::new();
    let mut yaml = format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  engine: {engine}\n  parameters: {{{params}}}\n{extra}  nodes:\n"
    );
    for (id, address) in nodes {
        yaml.push_str(&format!("    - {{id: {id}, address: '{address}'}}\n"));
    }
    // No bake, gates judged without traffic: these tests are about reaching the nodes.
    yaml.push_str(
        "  rollout:\n    bake: 0s\n    gates: {minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}\n",
    );
    repo.write("clusters/c.yaml", &yaml);
    repo.commit("cluster c");
    repo
}

fn tls_block(pki: &Pki, ca: &str, more: &str) -> String {
    format!("  tls:\n    ca: file:{}\n{more}", pki.path(ca))
}

/// `cacheflow snapshot` of `repo`: node id → its entry.
fn snapshot(repo: &TestRepo) -> serde_json::Map<String, Value> {
    let out = cacheflow(&[
        "snapshot",
        "--repo",
        repo.path().to_str().unwrap(),
        "--timeout",
        "2s",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let snap: Value = serde_json::from_slice(&out.stdout).expect("the snapshot is JSON");
    snap["nodes"].as_object().unwrap().clone()
}

fn error_of(node: &Value) -> String {
    assert_eq!(node["reachable"], false, "{node}");
    node["error"].as_str().unwrap().to_owned()
}

fn sync(repo: &TestRepo) -> (i32, String) {
    crate::support::cacheflow_sync(repo.path(), &["--yes"], &[])
}

#[test]
fn redis_over_tls_is_read_and_changed_and_every_bad_certificate_says_what_is_wrong() {
    let pki = Pki::new();
    let good = redis_tls(&pki, "server", false);
    let expired = redis_tls(&pki, "expired", false);
    let elsewhere = redis_tls(&pki, "elsewhere", false);
    let stranger = redis_tls(&pki, "stranger", false);
    let plain = redis_plain();
    let tls = tls_block(&pki, "ca.pem", "");
    let repo = cluster_repo(
        "redis",
        "maxmemory-policy: allkeys-lru",
        &tls,
        &[
            ("good", good.addr()),
            ("expired", expired.addr()),
            ("elsewhere", elsewhere.addr()),
            ("stranger", stranger.addr()),
            ("plain", plain.addr()),
        ],
    );
    let started = Instant::now();
    let nodes = snapshot(&repo);
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert_eq!(nodes["good"]["reachable"], true, "{}", nodes["good"]);
    assert_eq!(
        nodes["good"]["parameters"]["maxmemory-policy"],
        "noeviction"
    );
    let e = error_of(&nodes["expired"]);
    assert!(e.contains("TLS: the node's certificate has expired"), "{e}");
    let e = error_of(&nodes["elsewhere"]);
    assert!(
        e.contains("TLS: the node's certificate is not for `127.0.0.1`"),
        "{e}"
    );
    let e = error_of(&nodes["stranger"]);
    assert!(
        e.contains("TLS: the node's certificate is not signed by a CA of tls.ca"),
        "{e}"
    );
    let e = error_of(&nodes["plain"]);
    assert!(e.contains("TLS:") && e.contains("plaintext port?"), "{e}");
    assert!(!e.contains("unreachable"), "{e}");

    // sync changes the TLS node and refuses to go on with the broken ones; nothing is
    // applied to them, and no plaintext attempt reaches the plaintext node.
    let (_, out) = sync(&repo);
    assert_eq!(
        redis_cli(&pki, &good, false, &["config", "get", "maxmemory-policy"]),
        "maxmemory-policy\nallkeys-lru",
        "{out}"
    );
    assert_eq!(
        redis_cli(
            &pki,
            &stranger,
            false,
            &["config", "get", "maxmemory-policy"]
        ),
        "",
        "redis-cli trusting only ca.pem cannot reach it either"
    );
    let mut plain_cli = Command::new("redis-cli");
    plain_cli.args([
        "-p",
        &plain.port.to_string(),
        "config",
        "get",
        "maxmemory-policy",
    ]);
    let plain_now = String::from_utf8_lossy(&plain_cli.output().unwrap().stdout).into_owned();
    assert_eq!(plain_now.trim(), "maxmemory-policy\nnoeviction");

    // The name the certificate is for, given as tls.serverName, makes `elsewhere` good.
    let named = tls_block(&pki, "ca.pem", "    serverName: cache.example\n");
    let named_repo = one_node(&named, &elsewhere);
    let nodes = snapshot(&named_repo);
    assert_eq!(nodes["n"]["reachable"], true, "{}", nodes["n"]);

    // A CA file that is not PEM: a per-node error before any byte is sent.
    let broken = tls_block(&pki, "not-pem.pem", "");
    let nodes = snapshot(&one_node(&broken, &good));
    let e = error_of(&nodes["n"]);
    assert!(e.contains("tls.ca file:") && e.contains("not PEM"), "{e}");

    // A plaintext cluster in front of a TLS node: a clear error, within the timeout.
    let started = Instant::now();
    let nodes = snapshot(&one_node("", &good));
    let e = error_of(&nodes["n"]);
    assert!(started.elapsed() < Duration::from_secs(10), "no hang: {e}");
    assert!(e.starts_with(&format!("{}:", good.addr())), "{e}");
    eprintln!("a plaintext client of a TLS redis: {e}");
}

fn one_node(extra: &str, node: &Daemon) -> TestRepo {
    cluster_repo("redis", "hz: 11", extra, &[("n", node.addr())])
}

#[test]
fn a_redis_that_asks_for_a_client_certificate_gets_the_one_in_tls_cert_and_key() {
    let pki = Pki::new();
    let node = redis_tls(&pki, "server", true);
    let without = one_node(&tls_block(&pki, "ca.pem", ""), &node);
    let nodes = snapshot(&without);
    let e = error_of(&nodes["n"]);
    assert!(e.contains("client certificate"), "{e}");

    let with = one_node(
        &tls_block(
            &pki,
            "ca.pem",
            &format!(
                "    cert: file:{}\n    key: file:{}\n",
                pki.path("client.pem"),
                pki.path("client.key")
            ),
        ),
        &node,
    );
    let (code, out) = sync(&with);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        redis_cli(&pki, &node, true, &["config", "get", "hz"]),
        "hz\n11"
    );
    let nodes = snapshot(&with);
    assert_eq!(nodes["n"]["parameters"]["hz"], "11");
}

#[test]
fn memcached_over_tls_is_read_and_changed_and_a_plaintext_client_is_told_why() {
    let pki = Pki::new();
    let node = memcached_tls(&pki);
    let tls = tls_block(&pki, "ca.pem", "");
    let repo = cluster_repo("memcached", "maxbytes: 48mb", &tls, &[("m", node.addr())]);
    let nodes = snapshot(&repo);
    assert_eq!(nodes["m"]["reachable"], true, "{}", nodes["m"]);
    assert_eq!(nodes["m"]["parameters"]["maxbytes"], "33554432");
    let (code, out) = sync(&repo);
    assert_eq!(code, 0, "{out}");
    assert_eq!(memcached_tls_setting(&pki, &node, "maxbytes"), "50331648");

    // The same node declared without `tls:`: it hangs up on plaintext, and the error
    // says it may be a TLS port.
    let plain = cluster_repo("memcached", "maxbytes: 48mb", "", &[("m", node.addr())]);
    let nodes = snapshot(&plain);
    let e = error_of(&nodes["m"]);
    assert!(e.contains("a TLS port?"), "{e}");

    // A plaintext memcached declared with `tls:`: an error that says so, within the
    // timeout, and nothing sent in plaintext.
    let plain_node = memcached(&[]);
    let wrong = cluster_repo(
        "memcached",
        "maxbytes: 48mb",
        &tls,
        &[("m", plain_node.addr())],
    );
    let started = Instant::now();
    let nodes = snapshot(&wrong);
    let e = error_of(&nodes["m"]);
    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
    assert!(e.contains("TLS:") && e.contains("plaintext port?"), "{e}");
}

#[test]
fn memcached_authentication_takes_a_user_and_a_password_reference() {
    let dir = tempfile::tempdir().unwrap();
    let authfile = dir.path().join("auth");
    fs::write(&authfile, "cacheflow:s3cret-pw\n").unwrap();
    let password = dir.path().join("password");
    fs::write(&password, "s3cret-pw\n").unwrap();
    let wrong = dir.path().join("wrong");
    fs::write(&wrong, "nope\n").unwrap();
    let node = memcached(&["-Y".into(), authfile.display().to_string()]);
    let auth = |file: &Path| {
        format!(
            "  auth:\n    username: cacheflow\n    password: file:{}\n",
            file.display()
        )
    };
    let good = cluster_repo(
        "memcached",
        "maxbytes: 48mb",
        &auth(&password),
        &[("m", node.addr())],
    );
    let nodes = snapshot(&good);
    assert_eq!(nodes["m"]["reachable"], true, "{}", nodes["m"]);
    let (code, out) = sync(&good);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("s3cret-pw"));

    let bad = cluster_repo(
        "memcached",
        "maxbytes: 40mb",
        &auth(&wrong),
        &[("m", node.addr())],
    );
    let nodes = snapshot(&bad);
    let e = error_of(&nodes["m"]);
    assert!(e.contains("authentication failed"), "{e}");
    assert!(!e.contains("nope"), "{e}");

    let none = cluster_repo("memcached", "maxbytes: 40mb", "", &[("m", node.addr())]);
    let nodes = snapshot(&none);
    let e = error_of(&nodes["m"]);
    assert!(e.contains("asks for authentication"), "{e}");

    // What the node runs now, asked with its own protocol after authenticating.
    let mut s = TcpStream::connect(node.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    use std::io::{Read, Write};
    let token = "cacheflow s3cret-pw";
    write!(
        s,
        "set a 0 0 {}\r\n{token}\r\nstats settings\r\nquit\r\n",
        token.len()
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.contains("STAT maxbytes 50331648"), "{reply}");

    // A memcached cluster's auth needs a user: a validation error, nothing applied.
    let no_user = cluster_repo(
        "memcached",
        "maxbytes: 40mb",
        &format!("  auth:\n    password: file:{}\n", password.display()),
        &[("m", node.addr())],
    );
    let out = cacheflow(&["validate", "--repo", no_user.path().to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).contains("add `username`"), "{}", text(&out));
}

#[test]
fn serve_terminates_tls_and_the_agent_trusts_it_with_ca_file() {
    let pki = Pki::new();
    let node = redis_tls(&pki, "server", false);
    let repo = TestRepo::new();
    repo.write(
        "clusters/c.yaml",
        &format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  engine: redis\n  parameters: {{hz: 12}}\n{}  nodes:\n    - {{id: n, address: '{}', managed: agent}}\n",
            tls_block(&pki, "ca.pem", ""),
            node.addr()
        ),
    );
    repo.commit("agent node");
    let state = tempfile::tempdir().unwrap();
    let secret = state.path().join("node-secret");
    fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let port = free_port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["serve", "--repo"])
        .arg(format!("file://{}", repo.path().display()))
        .args(["--state-dir"])
        .arg(state.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--node-token-secret-file"])
        .arg(&secret)
        .args(["--tls-cert-file", &pki.path("server.pem")])
        .args(["--tls-key-file", &pki.path("server.key")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Killer(&mut server);
    let url = format!("https://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("curl")
            .args(["-s", "--cacert", &pki.path("ca.pem")])
            .arg(format!("{url}/healthz"))
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "serve did not answer over TLS");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Plain HTTP to the TLS port gets no answer from the routes.
    let out = Command::new("curl")
        .args(["-s", "-m", "5"])
        .arg(format!("http://127.0.0.1:{port}/healthz"))
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let token_out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["agent-token", "n", "--secret-file"])
        .arg(&secret)
        .output()
        .unwrap();
    let token = state.path().join("token");
    fs::write(&token, &token_out.stdout).unwrap();
    let agent = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["agent", "--once", "--node-id", "n", "--server", &url])
            .args(["--redis", &node.addr(), "--timeout", "2s"])
            .args(["--node-ca-file", &pki.path("ca.pem")])
            .arg("--token-file")
            .arg(&token)
            .args(extra)
            .output()
            .unwrap()
    };
    // Without --ca-file the server's certificate is not trusted.
    let out = agent(&[]);
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    // With it the agent reports, and applies the assignment over TLS to the node.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = agent(&["--ca-file", &pki.path("ca.pem")]);
        if redis_cli(&pki, &node, false, &["config", "get", "hz"]) == "hz\n12" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not apply: {}",
            text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

struct Killer<'a>(&'a mut Child);

impl Drop for Killer<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
