//! `cacheflow serve` end to end: the real binary, a local bare repository as the remote,
//! six real redis-server nodes in two replicating shards, webhooks signed the way GitHub
//! signs them, and SIGKILL in the middle of rollouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cacheflow::edges::forge::webhook::github_signature;

use crate::support::fleet::Fleet;
use crate::support::git::{cacheflow_note, journal_messages, TestRepo};
use crate::support::receiver::Receiver;
use crate::support::servers::{free_port, RedisServer};

const SECRET: &str = "webhook-secret-for-tests";
pub(crate) const NODE_SECRET: &str = "node-token-secret-for-tests";
pub(crate) const ADMIN: &str = "alice:admin-token-0123456789";

/// A bare repository standing in for the forge.
pub(crate) struct Remote {
    dir: tempfile::TempDir,
}

impl Remote {
    pub(crate) fn new() -> Remote {
        let dir = tempfile::Builder::new()
            .prefix("cacheflow-remote-")
            .tempdir()
            .unwrap();
        git2::Repository::init_bare(dir.path()).unwrap();
        Remote { dir }
    }

    pub(crate) fn url(&self) -> String {
        format!("file://{}", self.dir.path().display())
    }

    pub(crate) fn repository(&self) -> git2::Repository {
        git2::Repository::open_bare(self.dir.path()).unwrap()
    }

    pub(crate) fn push(&self, work: &TestRepo, force: bool) {
        let mut remote = work
            .repository()
            .remote_anonymous(&self.dir.path().display().to_string())
            .unwrap();
        let spec = if force {
            "+refs/heads/main:refs/heads/main"
        } else {
            "refs/heads/main:refs/heads/main"
        };
        remote.push(&[spec], None).expect("git push");
    }
}

pub(crate) struct Server {
    child: Child,
    port: u16,
    state: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where its standard error goes (discarded when `None`).
    log: Option<PathBuf>,
}

impl Server {
    pub(crate) fn start(remote: &Remote, state: &Path) -> Server {
        Server::start_with_env(remote, state, &[])
    }

    fn start_with_env(remote: &Remote, state: &Path, env: &[(&str, &str)]) -> Server {
        Server::start_logged(remote, state, env, None)
    }

    fn start_logged(
        remote: &Remote,
        state: &Path,
        env: &[(&str, &str)],
        log: Option<PathBuf>,
    ) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let port = free_port();
        let dir = state.to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let admin = dir.join("admin-tokens");
        std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
        let args: Vec<String> = vec![
            "serve".into(),
            "--repo".into(),
            remote.url(),
            "--state-dir".into(),
            dir.display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--poll-interval".into(),
            "1h".into(),
            "--direct-interval".into(),
            "200ms".into(),
            // Only in-process agents here, reporting every 200 ms.
            "--resume-grace".into(),
            "1s".into(),
            "--admin-tokens-file".into(),
            admin.display().to_string(),
            // Agents report every 200 ms: 2 s without one is silence.
            "--silent-after".into(),
            "2s".into(),
        ];
        let mut s = Server {
            child: spawn(&args, &env, log.as_deref()),
            port,
            state: dir,
            args,
            env,
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.try_http("GET", "/readyz", &[], b"") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cacheflow serve exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "cacheflow serve did not get ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn kill9(&mut self) {
        // SIGKILL: no shutdown path runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and wait for the server to exit (its shutdown path runs).
    pub(crate) fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "cacheflow serve exited with {status} on SIGTERM"
        );
    }

    pub(crate) fn restart(&mut self) {
        self.child = spawn(&self.args, &self.env, self.log.as_deref());
        self.wait_ready();
    }

    fn try_http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<(u16, String)> {
        self.try_http_with_head(method, path, headers, body)
            .map(|(status, _, body)| (status, body))
    }

    /// The status, the response's head (status line and headers) and its body.
    fn try_http_with_head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> std::io::Result<(u16, String, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        // A server may answer (413) before reading a large body; ignore write errors then.
        let _ = s.write_all(body);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        Ok((status, head.to_owned(), body.to_owned()))
    }

    pub(crate) fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> (u16, String) {
        self.try_http(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// The server's URL, as `--server` takes it.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A push webhook for `main`, signed like GitHub signs it.
    pub(crate) fn github_push(&self, delivery: &str) -> (u16, String) {
        let body = br#"{"ref":"refs/heads/main","after":"0000"}"#;
        self.http(
            "POST",
            "/hooks/github",
            &[
                ("Content-Type", "application/json".into()),
                ("X-GitHub-Event", "push".into()),
                ("X-GitHub-Delivery", delivery.into()),
                (
                    "X-Hub-Signature-256",
                    github_signature(SECRET.as_bytes(), body),
                ),
            ],
            body,
        )
    }

    /// The mirror the server keeps (journal and notes live there).
    pub(crate) fn mirror(&self) -> git2::Repository {
        let dir = std::fs::read_dir(self.state.join("mirror"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .expect("a mirror");
        git2::Repository::open_bare(dir).unwrap()
    }

    pub(crate) fn journal(&self) -> Vec<String> {
        journal_messages(&self.mirror())
    }

    pub(crate) fn note(&self, commit: &str) -> String {
        cacheflow_note(&self.mirror(), commit)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[String], env: &[(String, String)], log: Option<&Path>) -> Child {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("the server's log file")),
        None => Stdio::null(),
    };
    Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("CACHEFLOW_WEBHOOK_SECRET", SECRET)
        .env("CACHEFLOW_NODE_TOKEN_SECRET", NODE_SECRET)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start cacheflow serve")
}

/// Wait until every node's `param` reads `want`.
pub(crate) fn converge(fleet: &Fleet, param: &str, want: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let now = fleet.config(param);
        if now.iter().all(|(_, v)| v == want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{param} did not converge to {want}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every node keeps `param` at `value` for `during` (a refused webhook started nothing).
fn stays(fleet: &Fleet, param: &str, value: &str, during: Duration) {
    let deadline = Instant::now() + during;
    while Instant::now() < deadline {
        let now = fleet.config(param);
        assert!(
            now.iter().all(|(_, v)| v == value),
            "{param} moved from {value}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_signed_push_rolls_out_to_every_node_and_bad_input_is_refused() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 64mb\n    hz: 20"),
    );
    let first = work.commit("cache: 64mb, hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    // The head at start is rolled out without a webhook.
    converge(&fleet, "hz", "20", Duration::from_secs(20));

    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 64mb\n    hz: 30"),
    );
    let second = work.commit("cache: hz 30");
    remote.push(&work, false);
    let (code, body) = server.github_push("delivery-1");
    assert_eq!(code, 202, "{body}");
    converge(&fleet, "hz", "30", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.note(&second).contains("completed") {
        assert!(Instant::now() < deadline, "no note on {second}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.note(&second).starts_with("cache: completed "));
    assert!(server.note(&first).starts_with("cache: completed "));
    let journal = server.journal();
    assert_eq!(
        journal
            .iter()
            .filter(|m| m.contains("rollout of ") && m.contains(" started"))
            .count(),
        2,
        "{journal:#?}"
    );

    // Replays, forgeries and junk: each answered, none applied.
    let (code, body) = server.github_push("delivery-1");
    assert_eq!(
        (code, body.contains("already received")),
        (200, true),
        "{body}"
    );
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signed = github_signature(SECRET.as_bytes(), body);
    let post = |headers: &[(&str, String)], body: &[u8]| {
        server.http("POST", "/hooks/github", headers, body)
    };
    let json = ("Content-Type", "application/json".to_owned());
    let push = ("X-GitHub-Event", "push".to_owned());
    let (code, text) = post(&[json.clone(), push.clone()], body);
    assert_eq!(code, 401, "missing signature: {text}");
    assert!(text.contains("the signature header is missing"), "{text}");
    let forged = github_signature(b"not the secret", body);
    let (code, text) = post(
        &[json.clone(), push.clone(), ("X-Hub-Signature-256", forged)],
        body,
    );
    assert_eq!(code, 401, "{text}");
    let (code, text) = post(
        &[
            ("Content-Type", "application/x-www-form-urlencoded".into()),
            push.clone(),
            ("X-Hub-Signature-256", signed.clone()),
        ],
        body,
    );
    assert_eq!(code, 415, "{text}");
    let broken = b"{\"ref\": ";
    let (code, text) = post(
        &[
            json.clone(),
            push.clone(),
            (
                "X-Hub-Signature-256",
                github_signature(SECRET.as_bytes(), broken),
            ),
        ],
        broken,
    );
    assert_eq!(code, 400, "{text}");
    let huge = vec![b' '; 2 << 20];
    let (code, _) = post(&[json.clone(), push.clone()], &huge);
    assert_eq!(code, 413);
    let other = br#"{"ref":"refs/heads/feature"}"#;
    let (code, text) = post(
        &[
            json.clone(),
            push.clone(),
            (
                "X-Hub-Signature-256",
                github_signature(SECRET.as_bytes(), other),
            ),
        ],
        other,
    );
    assert_eq!(code, 202, "{text}");
    assert!(
        text.contains("this server tracks refs/heads/main"),
        "{text}"
    );

    // Node reports: wrong token, unknown node, malformed.
    let report = |id: &str, token: &str, body: &[u8]| {
        server.http(
            "POST",
            &format!("/api/v1/nodes/{id}/report"),
            &[("Authorization", format!("Bearer {token}")), json.clone()],
            body,
        )
    };
    let token =
        |id: &str| cacheflow::pure::identity::node_token(NODE_SECRET.as_bytes(), id).unwrap();
    let (code, text) = report("a1", "cf1.wrong", b"{}");
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("cacheflow agent-token a1"), "{text}");
    let ghost = r#"{"version":1,"nodeId":"ghost","agent":"t","sentAt":"2026-11-21T00:00:00Z","node":{"reachable":true}}"#;
    let (code, text) = report("ghost", &token("ghost"), ghost.as_bytes());
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("not declared"), "{text}");
    let (code, text) = report("a1", &token("a1"), b"<html>");
    assert_eq!(code, 400, "{text}");

    // Admin calls need a token; a cluster with nothing in flight refuses.
    let (code, _) = server.http("POST", "/api/v1/rollouts/cache/pause", &[], b"");
    assert_eq!(code, 401);
    let admin = ("Authorization", "Bearer admin-token-0123456789".to_owned());
    let (code, text) = server.http(
        "POST",
        "/api/v1/rollouts/cache/pause",
        std::slice::from_ref(&admin),
        b"",
    );
    assert_eq!(code, 409, "{text}");
    let (code, text) = server.http("POST", "/api/v1/rollouts/nope/pause", &[admin], b"");
    assert_eq!(code, 404, "{text}");

    let (code, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    for line in [
        r#"cacheflow_webhook_deliveries_total{forge="github",result="accepted"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="duplicate"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="unauthorized"} 2"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="unsupported_media_type"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="bad_request"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="ignored"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="too_large"} 1"#,
        r#"cacheflow_node_reports_total{result="unauthorized"} 1"#,
        r#"cacheflow_node_reports_total{result="unknown_node"} 1"#,
        r#"cacheflow_node_reports_total{result="malformed"} 1"#,
        r#"cacheflow_rollouts_total{outcome="completed"} 2"#,
        r#"cacheflow_nodes{state="applied"} 6"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    // Every journal entry's write is timed: at least the two rollouts' starts and ends.
    let commits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cacheflow_journal_commit_seconds_count "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no journal commit count in\n{metrics}"));
    assert!(commits >= 4, "{commits} journal writes timed\n{metrics}");
    converge(&fleet, "hz", "30", Duration::from_secs(1));
}

#[test]
fn a_failing_gate_rolls_back_and_a_rewritten_history_is_refused() {
    let fleet = Fleet::start();
    let value = "x".repeat(1 << 20);
    for p in ["a1", "b1"] {
        let mut c = fleet.get(p).client();
        for k in ["k1", "k2", "k3"] {
            assert!(c.cmd(&["SET", k, &value]).is_ok());
        }
    }
    let remote = Remote::new();
    let work = TestRepo::new();
    // Notifications: a generic webhook for every event, a Slack one for rollbacks only,
    // and a target that never answers (it must not hold anything up). The URLs are
    // secrets: files here.
    let team = Receiver::start();
    let chat = Receiver::start();
    let stuck = Receiver::hanging();
    let urls = tempfile::tempdir().unwrap();
    for (name, r) in [("team", &team), ("chat", &chat), ("stuck", &stuck)] {
        std::fs::write(urls.path().join(name), format!("{}\n", r.url)).unwrap();
    }
    let url = |name: &str| format!("file:{}", urls.path().join(name).display());
    work.write(
        "cacheflow.yaml",
        &format!(
            "apiVersion: cacheflow/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  notifications:\n    - name: stuck\n      type: webhook\n      url: {}\n    - name: team\n      type: webhook\n      url: {}\n    - name: chat\n      type: slack\n      url: {}\n      events: [rolled-back]\n",
            url("stuck"),
            url("team"),
            url("chat")
        ),
    );
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 64mb\n    maxmemory-policy: noeviction"),
    );
    let good = work.commit("cache: 64mb");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    converge(&fleet, "maxmemory", "67108864", Duration::from_secs(20));

    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 2mb\n    maxmemory-policy: noeviction"),
    );
    let bad = work.commit("cache: 2mb");
    remote.push(&work, false);
    assert_eq!(server.github_push("d-bad").0, 202);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.note(&bad).contains("rolled back") {
        assert!(
            Instant::now() < deadline,
            "no rollback note: {:#?}",
            server.journal()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    converge(&fleet, "maxmemory", "67108864", Duration::from_secs(1));
    let journal = server.journal();
    assert!(
        journal
            .iter()
            .any(|m| m.contains("gates of batch 1 failed") && m.contains("is above 98.0%")),
        "{journal:#?}"
    );
    let (_, status) = server.http("GET", "/api/v1/rollouts", &[], b"");
    assert!(status.contains("\"phase\":\"rolled-back\""), "{status}");

    // Someone force-pushes a history that does not contain the last good revision.
    let rewritten = TestRepo::new();
    rewritten.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 32mb\n    maxmemory-policy: noeviction"),
    );
    let rewritten_head = rewritten.commit("rewritten: 32mb");
    remote.push(&rewritten, true);
    assert_eq!(server.github_push("d-rewrite").0, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .journal()
        .iter()
        .any(|m| m.contains("history rewritten"))
    {
        assert!(Instant::now() < deadline, "{:#?}", server.journal());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    for (id, v) in fleet.config("maxmemory") {
        assert_eq!(v, "67108864", "{id} took a value from a rewritten history");
    }
    let (_, status) = server.http("GET", "/api/v1/rollouts", &[], b"");
    assert!(status.contains(&format!("\"head\":\"{bad}\"")), "{status}");

    // Every event reached the team's webhook, in order, while `stuck` never answered.
    let events = team.wait_for(6, Duration::from_secs(5));
    let json: Vec<serde_json::Value> = events
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let seen: Vec<(&str, &str)> = json
        .iter()
        .map(|j| (j["event"].as_str().unwrap(), j["summary"].as_str().unwrap()))
        .collect();
    let (g, b) = (&good[..12], &bad[..12]);
    assert_eq!(
        seen,
        [
            (
                "rollout-started",
                format!("cache: rolling out {g} to 6 node(s) in batches of 1, 2, 2, 1").as_str()
            ),
            (
                "rollout-completed",
                format!("cache: {g} reached all 6 node(s)").as_str()
            ),
            (
                "rollout-started",
                format!("cache: rolling out {b} to 6 node(s) in batches of 1, 2, 2, 1").as_str()
            ),
            (
                "rollout-failed",
                format!("cache: rollout of {b} failed, rolling back").as_str()
            ),
            ("rolled-back", format!("cache: {b} rolled back").as_str()),
            (
                "revision-refused",
                format!(
                    "revision {} refused: nothing applied",
                    &rewritten_head[..12]
                )
                .as_str()
            ),
        ]
    );
    assert!(
        json[3]["details"]
            .as_str()
            .unwrap()
            .contains("is above 98.0%"),
        "{json:#?}"
    );
    assert!(
        json[5]["details"]
            .as_str()
            .unwrap()
            .starts_with("history rewritten"),
        "{json:#?}"
    );
    assert_eq!(json[4]["cluster"], "cache");
    assert_eq!(json[4]["revision"], bad.as_str());
    assert!(events
        .iter()
        .all(|r| r.method == "POST" && r.path == "/hook"));
    // Slack gets its text form, and only the event it asked for.
    let slack = chat.wait_for(1, Duration::from_secs(1));
    assert_eq!(slack.len(), 1, "{slack:#?}");
    assert!(
        slack[0].body.starts_with(&format!(
            "{{\"text\":\"*cacheflow* `rolled-back`: cache: {b} rolled back\\n```\\nrolled back "
        )),
        "{}",
        slack[0].body
    );
    // The hanging target got the first notice and holds it; the rest wait behind it.
    assert_eq!(stuck.requests().len(), 1);
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    for line in [
        "cacheflow_notifications_total{target=\"team\",result=\"sent\"} 6",
        "cacheflow_notifications_total{target=\"chat\",result=\"sent\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[test]
fn killed_at_any_point_of_a_rollout_the_server_resumes_without_skipping_or_repeating() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    let rollout = "stages: [1, 2, 4, '100%']\n    bake: 400ms";
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 20", rollout),
    );
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "20", Duration::from_secs(30));

    for (round, hz) in ["31", "32", "33"].iter().enumerate() {
        work.write(
            "clusters/cache.yaml",
            &fleet.cluster_yaml_with(&format!("    hz: {hz}"), rollout),
        );
        let commit = work.commit(&format!("cache: hz {hz}"));
        remote.push(&work, false);
        assert_eq!(server.github_push(&format!("kill-{round}")).0, 202);
        // Kill at different instants of the rollout, several times per rollout.
        for delay in [150u64, 500, 900] {
            std::thread::sleep(Duration::from_millis(delay + 97 * round as u64));
            server.kill9();
            server.restart();
        }
        converge(&fleet, "hz", hz, Duration::from_secs(30));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.note(&commit).contains("completed") {
            assert!(Instant::now() < deadline, "{:#?}", server.journal());
            std::thread::sleep(Duration::from_millis(50));
        }
        // The journal of this rollout: every batch assigned exactly once, in order,
        // and every node confirmed exactly once.
        let journal = server.journal();
        let mine: Vec<&String> = journal.iter().filter(|m| m.contains(&commit)).collect();
        let assigned: Vec<String> = mine
            .iter()
            .flat_map(|m| m.lines())
            .filter(|l| l.contains(" assigned "))
            .map(|l| l.split(" assigned ").next().unwrap().to_owned())
            .collect();
        assert_eq!(
            assigned,
            vec![
                "cache: batch 1 of 4",
                "cache: batch 2 of 4",
                "cache: batch 3 of 4",
                "cache: batch 4 of 4"
            ],
            "{journal:#?}"
        );
        for (id, _) in &fleet.nodes {
            let confirmations = mine
                .iter()
                .flat_map(|m| m.lines())
                .filter(|l| *l == format!("cache: {id} applied {commit}"))
                .count();
            assert_eq!(confirmations, 1, "{id}: {journal:#?}");
        }
    }
}

/// Wait until some journal message of `server` has a line starting with `prefix`.
fn until_journaled(server: &Server, prefix: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !server
        .journal()
        .iter()
        .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
        .any(|l| l.starts_with(prefix))
    {
        assert!(
            Instant::now() < deadline,
            "no journal line `{prefix}`: {:#?}",
            server.journal()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_fresh_start_says_what_it_will_roll_out_and_a_restart_logs_the_rollouts_it_resumes() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 20", "stages: [1, '100%']\n    bake: 3s"),
    );
    let commit = work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("serve.log");
    let mut server = Server::start_logged(&remote, state.path(), &[], Some(log.clone()));

    // The first entry: the revision, and what it leaves to roll out (its nodes had not
    // reported yet), never "no cluster changed".
    until_journaled(&server, "cache: rollout of ", Duration::from_secs(20));
    let journal = server.journal();
    assert_eq!(
        journal[0],
        format!(
            "revision {} (the first revision) taken: 1 cluster(s) to roll out as their nodes report: cache\n",
            &commit[..12]
        ),
        "{journal:#?}"
    );
    assert!(
        !journal.iter().any(|m| m.contains("no cluster changed")),
        "{journal:#?}"
    );

    // Killed while the canary bakes: the restarted server says what it resumes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.journal().iter().any(|m| {
        m.lines()
            .any(|l| l.ends_with(&format!(" applied {commit}")))
    }) {
        assert!(Instant::now() < deadline, "{:#?}", server.journal());
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    server.restart();
    let text = std::fs::read_to_string(&log).unwrap();
    let resumed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("resumed after a restart"))
        .collect();
    assert_eq!(resumed.len(), 1, "{text}");
    // The line, then its fields (the text log format prints them after the message).
    assert!(
        resumed[0].ends_with(&format!(
            "cache: rollout of {} resumed after a restart: batch 1 of 4, baking again for 3s before its gates are judged event=\"rollout_resumed\" cluster=\"cache\" revision=\"{commit}\" batch=1",
            &commit[..12]
        )),
        "{text}"
    );
    converge(&fleet, "hz", "20", Duration::from_secs(30));
}

#[test]
fn gitlab_and_gitea_pushes_start_rollouts_and_their_wrong_secrets_are_refused() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    // Polling once an hour: only a webhook can bring the next commits in.
    let server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "20", Duration::from_secs(20));
    let body = br#"{"ref":"refs/heads/main","after":"0000"}"#;
    let json = ("Content-Type", "application/json".to_owned());

    // GitLab: the secret itself in X-Gitlab-Token.
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 30"));
    work.commit("cache: hz 30");
    remote.push(&work, false);
    let gitlab = |token: &str, uuid: &str| {
        server.http(
            "POST",
            "/hooks/gitlab",
            &[
                json.clone(),
                ("X-Gitlab-Event", "Push Hook".into()),
                ("X-Gitlab-Event-UUID", uuid.into()),
                ("X-Gitlab-Token", token.into()),
            ],
            body,
        )
    };
    let (code, text) = gitlab("not-the-secret", "gl-1");
    assert_eq!(code, 401, "{text}");
    stays(&fleet, "hz", "20", Duration::from_millis(800));
    let (code, text) = gitlab(SECRET, "gl-2");
    assert_eq!(code, 202, "{text}");
    converge(&fleet, "hz", "30", Duration::from_secs(20));

    // Gitea: the HMAC-SHA256 of the body, hex without a prefix, in X-Gitea-Signature.
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 40"));
    work.commit("cache: hz 40");
    remote.push(&work, false);
    let signed = github_signature(SECRET.as_bytes(), body)
        .trim_start_matches("sha256=")
        .to_owned();
    let gitea = |signature: &str, delivery: &str| {
        server.http(
            "POST",
            "/hooks/gitea",
            &[
                json.clone(),
                ("X-Gitea-Event", "push".into()),
                ("X-Gitea-Delivery", delivery.into()),
                ("X-Gitea-Signature", signature.into()),
            ],
            body,
        )
    };
    let forged = github_signature(b"another secret", body)
        .trim_start_matches("sha256=")
        .to_owned();
    let (code, text) = gitea(&forged, "gt-1");
    assert_eq!(code, 401, "{text}");
    // GitHub's prefixed form is not Gitea's.
    let (code, text) = gitea(&format!("sha256={signed}"), "gt-2");
    assert_eq!(code, 401, "{text}");
    stays(&fleet, "hz", "30", Duration::from_millis(800));
    let (code, text) = gitea(&signed, "gt-3");
    assert_eq!(code, 202, "{text}");
    converge(&fleet, "hz", "40", Duration::from_secs(20));
    let (code, text) = gitea(&signed, "gt-3");
    assert_eq!(
        (code, text.contains("already received")),
        (200, true),
        "{text}"
    );

    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    for line in [
        r#"cacheflow_webhook_deliveries_total{forge="gitlab",result="unauthorized"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="gitlab",result="accepted"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="gitea",result="unauthorized"} 2"#,
        r#"cacheflow_webhook_deliveries_total{forge="gitea",result="accepted"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="gitea",result="duplicate"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    let started = server
        .journal()
        .iter()
        .filter(|m| m.contains("rollout of ") && m.contains(" started"))
        .count();
    assert_eq!(started, 3, "{:#?}", server.journal());
}

fn settings_yaml(drift: &str, hook: &str) -> String {
    format!(
        "apiVersion: cacheflow/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  drift:\n{drift}    notify: [oncall]\n  notifications:\n    - name: oncall\n      type: webhook\n      url: {hook}\n      events: [rollout-failed]\n"
    )
}

/// `cacheflow drift --server` against the server: (exit code, stdout).
fn drift_cli(server: &Server, format: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args([
            "drift",
            "--server",
            &format!("http://127.0.0.1:{}", server.port),
            "--format",
            format,
        ])
        .env("CACHEFLOW_ADMIN_TOKEN", ADMIN.split_once(':').unwrap().1)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn scheduled_drift_runs_report_a_hand_made_change_then_correct_it_through_a_rollout() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    let oncall = Receiver::start();
    let urls = tempfile::tempdir().unwrap();
    std::fs::write(urls.path().join("oncall"), &oncall.url).unwrap();
    let hook = format!("file:{}", urls.path().join("oncall").display());
    // Every second (six fields), in a zone that is not UTC; report only.
    work.write(
        "cacheflow.yaml",
        &settings_yaml(
            "    schedule: '* * * * * *'\n    timezone: Asia/Tokyo\n    mode: report\n",
            &hook,
        ),
    );
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    work.commit("cache: hz 20, drift every second");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "20", Duration::from_secs(20));
    let clean = "cache: 6 node(s), 0 drifted, 0 silent\nno drift\n";
    until_clean(&server, clean);

    // 3 am: someone runs CONFIG SET by hand on a replica.
    assert!(fleet
        .get("a2")
        .client()
        .cmd(&["CONFIG", "SET", "hz", "50"])
        .is_ok());
    let got = oncall.wait_for(1, Duration::from_secs(10));
    let notice: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(notice["event"], "drift-found");
    assert_eq!(
        notice["summary"],
        "drift: 1 node(s) drifted or silent (cache)"
    );
    assert!(
        notice["details"].as_str().unwrap().contains("hz"),
        "{notice:#}"
    );
    // Report mode: over several runs nothing is corrected; a2 keeps the hand-made value
    // and no other node moves.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        for (id, v) in fleet.config("hz") {
            let want = if id == "a2" { "50" } else { "20" };
            assert_eq!(v, want, "{id}: report mode changed a node");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, json) = drift_cli(&server, "json");
    assert_eq!(code, 2, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["clusters"][0]["drifted"],
        serde_json::json!([{"node": "a2", "parameters": [
            {"name": "hz", "kind": "differs", "expected": "20", "found": "50"}
        ]}])
    );
    // The scheduled run's files and the gauge.
    let dir = state.path().join("drift");
    let latest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("latest.json")).unwrap()).unwrap();
    assert_eq!(latest["clusters"][0]["drifted"][0]["node"], "a2");
    let md = std::fs::read_to_string(dir.join("latest.md")).unwrap();
    assert!(md.contains("| a2 |"), "{md}");
    let html = std::fs::read_to_string(dir.join("latest.html")).unwrap();
    assert!(html.contains("id=\"chart\""), "{html}");
    let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
    assert!(
        history
            .lines()
            .any(|l| l.contains("\"drifted\":1,\"clean\":false")),
        "{history}"
    );
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert!(
        metrics
            .lines()
            .any(|l| l == "cacheflow_drift_nodes{cluster=\"cache\",kind=\"differs\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cacheflow_drift_runs_total{result=\"drift\"} ")),
        "{metrics}"
    );
    // Without an admin token the report is refused.
    assert_eq!(server.http("GET", "/api/v1/drift", &[], b"").0, 401);

    // The team switches to correct: the next run rolls the declared value out again.
    work.write(
        "cacheflow.yaml",
        &settings_yaml("    schedule: '* * * * * *'\n    mode: correct\n", &hook),
    );
    work.commit("drift: correct");
    remote.push(&work, false);
    assert_eq!(server.github_push("d-correct").0, 202);
    converge(&fleet, "hz", "20", Duration::from_secs(15));
    let journal = server.journal();
    let from = journal
        .iter()
        .position(|m| m.starts_with("cache: correcting drift\n"))
        .unwrap_or_else(|| panic!("no correction: {journal:#?}"));
    // Only the drifted node is rolled out to, through the staged path.
    assert!(
        journal[from].contains("started, 1 batch(es)\ncache: batch 1 of 1 assigned ")
            && journal[from].ends_with(": a2\n"),
        "{:#?}",
        &journal[from..]
    );
    until_clean(&server, clean);
    // The scheduled runs after the correction are clean again: the history shows both.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let history = std::fs::read_to_string(dir.join("history.jsonl")).unwrap();
        let last = history.lines().last().unwrap_or_default().to_owned();
        if last.contains("\"drifted\":0,\"clean\":true") {
            break;
        }
        assert!(Instant::now() < deadline, "{history}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert!(
        metrics
            .lines()
            .any(|l| l == "cacheflow_drift_nodes{cluster=\"cache\",kind=\"differs\"} 0"),
        "{metrics}"
    );
}

/// Lines of the server's drift history: one per run.
fn drift_runs(state: &Path) -> Vec<String> {
    std::fs::read_to_string(state.join("drift").join("history.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Wait for `n` more scheduled drift runs after those already in the history; the new
/// lines.
fn more_runs(state: &Path, n: usize) -> Vec<String> {
    let before = drift_runs(state).len();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = drift_runs(state);
        if now.len() >= before + n {
            return now[before..].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "{n} drift run(s) did not come: {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The notices the receiver got, as JSON.
fn notices(receiver: &Receiver) -> Vec<serde_json::Value> {
    receiver
        .requests()
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect()
}

fn metric_line(server: &Server, line_start: &str) -> String {
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in\n{metrics}"))
        .to_owned()
}

#[test]
fn drift_is_notified_when_it_appears_changes_and_clears_not_on_every_run_and_not_after_a_restart() {
    let fleet = Fleet::start();
    // Live values off the declared defaults, so that the first rollout sets the
    // defaults and CONFIG REWRITE leaves them out of every config file.
    for (_, n) in &fleet.nodes {
        let reply = n
            .client()
            .cmd(&["CONFIG", "SET", "hz", "20", "timeout", "300"]);
        assert!(reply.is_ok(), "{reply:?}");
    }
    let remote = Remote::new();
    let work = TestRepo::new();
    let oncall = Receiver::start();
    let urls = tempfile::tempdir().unwrap();
    std::fs::write(urls.path().join("oncall"), &oncall.url).unwrap();
    let hook = format!("file:{}", urls.path().join("oncall").display());
    let every_second = "    schedule: '* * * * * *'\n    mode: report\n";
    work.write("cacheflow.yaml", &settings_yaml(every_second, &hook));
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    hz: 10\n    timeout: 0"),
    );
    work.commit("cache: the defaults, drift every second");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "10", Duration::from_secs(20));
    converge(&fleet, "timeout", "0", Duration::from_secs(20));
    let clean = "cache: 6 node(s), 0 drifted, 0 silent\nno drift\n";
    until_clean(&server, clean);

    // After the clean first sync: scheduled runs find nothing, the gauges are at zero
    // and nobody is told anything.
    for line in more_runs(state.path(), 3) {
        assert!(line.contains("\"drifted\":0,\"clean\":true"), "{line}");
    }
    for kind in ["differs", "not_persisted", "silent"] {
        assert_eq!(
            metric_line(
                &server,
                &format!("cacheflow_drift_nodes{{cluster=\"cache\",kind=\"{kind}\"}}")
            ),
            format!("cacheflow_drift_nodes{{cluster=\"cache\",kind=\"{kind}\"}} 0")
        );
    }
    assert!(oncall.requests().is_empty(), "{:#?}", notices(&oncall));

    // A hand-made change: one notice, however many runs see it.
    let set = |id: &str, value: &str| {
        let reply = fleet.get(id).client().cmd(&["CONFIG", "SET", "hz", value]);
        assert!(reply.is_ok(), "{reply:?}");
    };
    set("a2", "50");
    oncall.wait_for(1, Duration::from_secs(10));
    more_runs(state.path(), 3);
    let got = notices(&oncall);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0]["event"], "drift-found");
    assert_eq!(
        got[0]["summary"],
        "drift: 1 node(s) drifted or silent (cache)"
    );

    // Another: a new notice, with both.
    set("b2", "60");
    oncall.wait_for(2, Duration::from_secs(10));
    more_runs(state.path(), 3);
    let got = notices(&oncall);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[1]["event"], "drift-found");
    assert_eq!(
        got[1]["summary"],
        "drift changed: 2 node(s) drifted or silent (cache)"
    );
    let details = got[1]["details"].as_str().unwrap();
    assert!(
        details.contains("  a2 hz: expected 10, found 50 (live value differs)\n")
            && details.contains("  b2 hz: expected 10, found 60 (live value differs)\n"),
        "{details}"
    );

    // Both put back: one drift-cleared notice, then quiet.
    set("a2", "10");
    set("b2", "10");
    oncall.wait_for(3, Duration::from_secs(10));
    more_runs(state.path(), 3);
    let got = notices(&oncall);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[2]["event"], "drift-cleared");
    assert!(
        got[2]["summary"].as_str().unwrap().starts_with(
            "drift cleared: no node drifted or silent any more (drift notified since "
        ),
        "{:#}",
        got[2]
    );
    assert_eq!(
        got[2]["details"],
        "gone since the last notice:\n  cache/a2 hz differs: expected 10, found 50\n  cache/b2 hz differs: expected 10, found 60\n"
    );
    assert_eq!(
        metric_line(
            &server,
            "cacheflow_drift_nodes{cluster=\"cache\",kind=\"differs\"}"
        ),
        "cacheflow_drift_nodes{cluster=\"cache\",kind=\"differs\"} 0"
    );

    // Someone writes `hz 77` into a3's config file (the live value stays right): drift
    // that a restart of the node would bring, told once.
    let a3_file = fleet.get("a3").config_path();
    let original = std::fs::read_to_string(&a3_file).unwrap();
    std::fs::write(&a3_file, format!("{original}hz 77\n")).unwrap();
    oncall.wait_for(4, Duration::from_secs(10));
    let got = notices(&oncall);
    assert_eq!(
        got[3]["summary"],
        "drift: 1 node(s) drifted or silent (cache)"
    );
    assert!(
        got[3]["details"]
            .as_str()
            .unwrap()
            .contains("  a3 hz: expected 10, found 77 (not persisted (lost on restart))\n"),
        "{:#}",
        got[3]
    );
    assert_eq!(
        metric_line(
            &server,
            "cacheflow_drift_nodes{cluster=\"cache\",kind=\"not_persisted\"}"
        ),
        "cacheflow_drift_nodes{cluster=\"cache\",kind=\"not_persisted\"} 1"
    );

    for (result, n) in [
        ("appeared", 2),
        ("changed", 1),
        ("cleared", 1),
        ("reminder", 0),
    ] {
        let series = format!("cacheflow_drift_notices_total{{result=\"{result}\"}}");
        assert_eq!(metric_line(&server, &series), format!("{series} {n}"));
    }

    // The server is killed and started again: the same drift is not told again.
    server.kill9();
    server.restart();
    let after = more_runs(state.path(), 3);
    assert!(
        after
            .iter()
            .all(|l| l.contains("\"drifted\":1,\"clean\":false")),
        "{after:#?}"
    );
    assert_eq!(notices(&oncall).len(), 4, "{:#?}", notices(&oncall));

    // The line removed: cleared.
    std::fs::write(&a3_file, &original).unwrap();
    oncall.wait_for(5, Duration::from_secs(10));
    more_runs(state.path(), 2);
    let got = notices(&oncall);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(got[4]["event"], "drift-cleared");

    // drift.repeat: unchanged drift is told again once that long has passed.
    work.write(
        "cacheflow.yaml",
        &settings_yaml(&format!("{every_second}    repeat: 3s\n"), &hook),
    );
    work.commit("drift: repeat every 3s");
    remote.push(&work, false);
    assert_eq!(server.github_push("d-repeat").0, 202);
    more_runs(state.path(), 2);
    set("a2", "50");
    oncall.wait_for(6, Duration::from_secs(10));
    let appeared = Instant::now();
    oncall.wait_for(7, Duration::from_secs(15));
    let waited = appeared.elapsed();
    let got = notices(&oncall);
    assert_eq!(
        got[5]["summary"],
        "drift: 1 node(s) drifted or silent (cache)"
    );
    assert_eq!(got[6]["event"], "drift-found");
    assert!(
        got[6]["summary"]
            .as_str()
            .unwrap()
            .starts_with("drift unchanged since "),
        "{:#}",
        got[6]
    );
    // Not before the 3 s (less the second of the schedule's granularity).
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
}

#[test]
fn a_hand_made_failover_shows_in_the_servers_drift_report_and_is_not_drift() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "20", Duration::from_secs(20));
    until_clean(&server, "cache: 6 node(s), 0 drifted, 0 silent\nno drift\n");

    // Shard a fails over by hand: a2 takes over, a1 and a3 follow it.
    let a2_port = fleet.get("a2").port().to_string();
    assert!(fleet
        .get("a2")
        .client()
        .cmd(&["REPLICAOF", "NO", "ONE"])
        .is_ok());
    for id in ["a1", "a3"] {
        assert!(fleet
            .get(id)
            .client()
            .cmd(&["REPLICAOF", "127.0.0.1", &a2_port])
            .is_ok());
    }
    let want = "cache: 6 node(s), 0 drifted, 0 silent\n\
                \x20 a1: declared primary, runs as a replica of a2\n\
                \x20 a2: declared replica, runs as a primary\n\
                no drift\n";
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, text) = drift_cli(&server, "text");
        if text == want {
            assert_eq!(code, 0, "a failover is not drift: {text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, json) = drift_cli(&server, "json");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["clusters"][0]["topology"],
        serde_json::json!([
            {"node": "a1", "text": "declared primary, runs as a replica of a2"},
            {"node": "a2", "text": "declared replica, runs as a primary"},
        ])
    );
}

/// Wait until `cacheflow drift --server` says exactly `clean` (a rollout in flight is
/// "not compared", which is no drift but another text).
fn until_clean(server: &Server, clean: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = drift_cli(server, "text");
        if out == clean {
            assert_eq!(code, 0);
            return;
        }
        assert!(Instant::now() < deadline, "not clean: {code} {out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pull-request webhook for PR #7 of acme/caches, signed like GitHub signs it.
fn github_pull_request(
    server: &Server,
    delivery: &str,
    action: &str,
    head: &str,
    base: &str,
) -> u16 {
    let body = serde_json::json!({
        "action": action,
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"sha": head, "ref": "more-hz", "repo": {"full_name": "acme/caches"}},
            "base": {"sha": base, "ref": "main", "repo": {"full_name": "acme/caches"}},
        },
        "repository": {"full_name": "acme/caches"},
    })
    .to_string();
    server
        .http(
            "POST",
            "/hooks/github",
            &[
                ("Content-Type", "application/json".into()),
                ("X-GitHub-Event", "pull_request".into()),
                ("X-GitHub-Delivery", delivery.into()),
                (
                    "X-Hub-Signature-256",
                    github_signature(SECRET.as_bytes(), body.as_bytes()),
                ),
            ],
            body.as_bytes(),
        )
        .0
}

#[test]
fn a_pull_request_gets_a_status_and_one_comment_edited_on_each_push_and_nothing_rolls_out() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    let base = work.commit("cache: hz 20");
    remote.push(&work, false);
    // The forge: answers the comment list (empty), the comment's creation (id 901), its
    // edits and the statuses, and records every request.
    let forge = Receiver::answering(|r| match (r.method.as_str(), r.path.as_str()) {
        ("GET", p) if p.starts_with("/repos/acme/caches/issues/7/comments") => (200, "[]".into()),
        ("POST", "/repos/acme/caches/issues/7/comments") => (201, r#"{"id": 901}"#.into()),
        ("PATCH", "/repos/acme/caches/issues/comments/901") => (200, r#"{"id": 901}"#.into()),
        ("POST", p) if p.starts_with("/repos/acme/caches/statuses/") => (201, "{}".into()),
        _ => (404, r#"{"message": "Not Found"}"#.into()),
    });
    let api = forge.url.trim_end_matches("/hook").to_owned();
    let state = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        &remote,
        state.path(),
        &[
            ("CACHEFLOW_FORGE_API_URL", api.as_str()),
            ("CACHEFLOW_FORGE_TOKEN", "forge-token-for-tests"),
        ],
    );
    converge(&fleet, "hz", "20", Duration::from_secs(20));

    // A pull request: its head lives at refs/pull/7/head, as on GitHub, not on main.
    let push_pr = |work: &TestRepo| {
        let mut r = work
            .repository()
            .remote_anonymous(&remote.dir.path().display().to_string())
            .unwrap();
        r.push(&["+refs/heads/main:refs/pull/7/head"], None)
            .unwrap();
    };
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 30"));
    let first = work.commit("cache: hz 30");
    push_pr(&work);
    assert_eq!(
        github_pull_request(&server, "pr-1", "opened", &first, &base),
        202
    );
    let got = forge.wait_for(4, Duration::from_secs(15));
    let calls: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.path.split('?').next().unwrap().to_owned(),
            )
        })
        .collect();
    let status_path = |sha: &str| format!("/repos/acme/caches/statuses/{sha}");
    assert_eq!(
        calls,
        [
            ("POST".to_owned(), status_path(&first)),
            (
                "GET".to_owned(),
                "/repos/acme/caches/issues/7/comments".to_owned()
            ),
            (
                "POST".to_owned(),
                "/repos/acme/caches/issues/7/comments".to_owned()
            ),
            ("POST".to_owned(), status_path(&first)),
        ]
    );
    let json = |r: &crate::support::receiver::Request| -> serde_json::Value {
        serde_json::from_str(&r.body).unwrap()
    };
    assert_eq!(json(&got[0])["state"], "pending");
    assert_eq!(json(&got[3])["state"], "success");
    assert_eq!(json(&got[3])["context"], "cacheflow");
    let comment = json(&got[2])["body"].as_str().unwrap().to_owned();
    assert!(
        comment.starts_with("<!-- cacheflow:pr-feedback -->\n"),
        "{comment}"
    );
    assert!(comment.contains(&first[..12]), "{comment}");
    assert!(
        comment.contains("`hz`") && comment.contains("20") && comment.contains("30"),
        "{comment}"
    );
    for r in &got {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer forge-token-for-tests")
        );
        assert!(!r.body.contains("forge-token-for-tests"));
    }

    // A second push to the pull request: the same comment is edited, not a new one.
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 40"));
    let second = work.commit("cache: hz 40");
    push_pr(&work);
    assert_eq!(
        github_pull_request(&server, "pr-2", "synchronize", &second, &base),
        202
    );
    let got = forge.wait_for(7, Duration::from_secs(15));
    let calls: Vec<(String, String)> = got[4..]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST".to_owned(), status_path(&second)),
            (
                "PATCH".to_owned(),
                "/repos/acme/caches/issues/comments/901".to_owned()
            ),
            ("POST".to_owned(), status_path(&second)),
        ]
    );
    let edited = json(&got[5])["body"].as_str().unwrap().to_owned();
    assert!(
        edited.contains(&second[..12]) && edited.contains("40"),
        "{edited}"
    );

    // A third push breaks the file: failure, with file:line:col, in the same comment.
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    hz: 40\n    maxmemory-policy: sometimes"),
    );
    let broken = work.commit("cache: a policy that does not exist");
    push_pr(&work);
    assert_eq!(
        github_pull_request(&server, "pr-3", "synchronize", &broken, &base),
        202
    );
    let got = forge.wait_for(10, Duration::from_secs(15));
    assert_eq!(got[8].method, "PATCH");
    let invalid = json(&got[8])["body"].as_str().unwrap().to_owned();
    assert!(invalid.contains("**Invalid**: 1 error(s)"), "{invalid}");
    assert!(invalid.contains("clusters/cache.yaml:"), "{invalid}");
    assert_eq!(json(&got[9])["state"], "failure");
    assert_eq!(got.len(), 10, "one comment only: {got:#?}");
    // A closed pull request needs nothing; nothing of the pull request was rolled out.
    assert_eq!(
        github_pull_request(&server, "pr-4", "closed", &broken, &base),
        202
    );
    stays(&fleet, "hz", "20", Duration::from_millis(500));
    assert_eq!(forge.requests().len(), 10);
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    for line in [
        "cacheflow_pr_feedback_total{result=\"posted\"} 3",
        "cacheflow_pr_feedback_total{result=\"ignored\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[test]
fn a_fresh_server_shows_every_known_counter_at_zero() {
    // `increase()` needs a sample before the first count: every series whose labels are
    // known is there at 0 from the start, notification targets from the revision's.
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write(
        "cacheflow.yaml",
        "apiVersion: cacheflow/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  notifications:\n    - name: oncall\n      type: webhook\n      url: env:ONCALL_HOOK\n    - name: chat\n      type: slack\n      url: env:CHAT_HOOK\n",
    );
    work.write(
        "clusters/cache.yaml",
        &format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  engine: redis\n  nodes:\n    - {{id: c-1, address: '127.0.0.1:{}', managed: agent}}\n",
            free_port()
        ),
    );
    work.commit("one cluster, two notification targets");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    let (code, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(code, 200);
    let mut want = Vec::new();
    for forge in ["github", "gitlab", "gitea"] {
        for result in [
            "accepted",
            "ignored",
            "duplicate",
            "unauthorized",
            "bad_request",
            "too_large",
            "unsupported_media_type",
        ] {
            want.push(format!(
                "cacheflow_webhook_deliveries_total{{forge=\"{forge}\",result=\"{result}\"}} 0"
            ));
        }
    }
    for (name, label, values) in [
        (
            "node_reports",
            "result",
            &[
                "ok",
                "unauthorized",
                "malformed",
                "unknown_node",
                "too_large",
            ][..],
        ),
        (
            "admin_calls",
            "result",
            &["ok", "unauthorized", "refused"][..],
        ),
        (
            "rollouts",
            "outcome",
            &["completed", "rolled_back", "superseded", "refused"][..],
        ),
        (
            "revisions",
            "result",
            &["invalid", "untrusted", "rewritten", "fetch_failed"][..],
        ),
        ("drift_runs", "result", &["clean", "drift", "error"][..]),
        (
            "pr_feedback",
            "result",
            &["posted", "failed", "ignored"][..],
        ),
    ] {
        for v in values {
            want.push(format!("cacheflow_{name}_total{{{label}=\"{v}\"}} 0"));
        }
    }
    for target in ["oncall", "chat"] {
        for result in ["sent", "failed", "dropped"] {
            want.push(format!(
                "cacheflow_notifications_total{{target=\"{target}\",result=\"{result}\"}} 0"
            ));
        }
    }
    // The head at start was taken once; no report waits for its node.
    want.push("cacheflow_revisions_total{result=\"taken\"} 1".to_owned());
    want.push("cacheflow_node_reports_waiting 0".to_owned());
    for line in &want {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }

    // A report's times are RFC 3339: another text is a malformed report, nothing taken.
    let token = cacheflow::pure::identity::node_token(NODE_SECRET.as_bytes(), "c-1").unwrap();
    let report = |sent_at: &str| {
        let body = format!(
            r#"{{"version":1,"nodeId":"c-1","agent":"t","sentAt":"{sent_at}","node":{{"reachable":true,"engine":"redis","parameters":{{"requirepass":"hand-pass-9z"}}}}}}"#
        );
        server.http(
            "POST",
            "/api/v1/nodes/c-1/report",
            &[
                ("Authorization", format!("Bearer {token}")),
                ("Content-Type", "application/json".to_owned()),
            ],
            body.as_bytes(),
        )
    };
    let (code, text) = report("last tuesday");
    assert_eq!(code, 400, "{text}");
    assert!(
        text.contains("/sentAt: `last tuesday` is not an RFC 3339 time"),
        "{text}"
    );
    let body = r#"{"version":1,"nodeId":"c-1","agent":"t","sentAt":"2026-11-21T00:00:00Z","node":{"reachable":true,"engine":"redis","parameters":{"requirepass":"hand-pass-9z"}}}"#;
    let (code, head, text) = server
        .try_http_with_head(
            "POST",
            "/api/v1/nodes/c-1/report",
            &[
                ("Authorization", format!("Bearer {token}")),
                ("Content-Type", "application/json".to_owned()),
            ],
            body.as_bytes(),
        )
        .unwrap();
    assert_eq!(code, 200, "{text}");
    // The optional report fields this server reads, for agents of later builds.
    assert!(
        head.lines()
            .any(|l| l == "cacheflow-reads: topology, cluster, uptime"),
        "{head}"
    );
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    for line in [
        r#"cacheflow_node_reports_total{result="malformed"} 1"#,
        r#"cacheflow_node_reports_total{result="ok"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    // A credential in a report (an agent of another build) is not kept.
    let (code, clusters) = server.http("GET", "/api/v1/clusters", &[], b"");
    assert_eq!(code, 200);
    assert!(!clusters.contains("hand-pass-9z"), "{clusters}");
}

#[test]
fn a_journal_that_cannot_be_written_stops_the_server_at_once_saying_why() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    // What the nodes run already: the first revision journals twice, then all is quiet.
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 10"));
    work.commit("cache: as it runs");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("serve.log");
    let mut server = Server::start_logged(&remote, state.path(), &[], Some(log.clone()));
    // Two entries: the revision taken, then the nodes' first reports (they run it).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .journal()
        .iter()
        .any(|m| m.contains("6 node(s) already run"))
    {
        assert!(
            Instant::now() < deadline,
            "the nodes' first reports are not journaled: {:#?}",
            server.journal()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The journal's ref can no longer be locked (as on a full or read-only disk): the
    // next entry fails.
    let lock = server.mirror().path().join("refs/cacheflow/journal.lock");
    std::fs::create_dir_all(&lock).unwrap();
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let pushed = Instant::now();
    if let Some(status) = server.child.try_wait().unwrap() {
        panic!(
            "cacheflow serve exited ({status}) before the push: {}\njournal: {:#?}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            server.journal()
        );
    }
    assert_eq!(server.github_push("journal-1").0, 202);
    let deadline = pushed + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "cacheflow serve is still running 10 s after its journal failed (poll interval 1 h)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = pushed.elapsed();
    eprintln!(
        "from the push webhook to the exit: {} ms",
        elapsed.as_millis()
    );
    assert_eq!(status.code(), Some(1), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ERROR") && text.contains("the reconciler stopped: "),
        "the reason is logged: {text}"
    );
    assert!(text.contains("journal.lock"), "{text}");
    // Nothing moved the journal: the log says what failed, not that another server wrote.
    assert!(
        text.contains("cannot write the journal's ref refs/cacheflow/journal (it is where this reconciler left it)"),
        "{text}"
    );
    assert!(!text.contains("moved under this reconciler"), "{text}");
    for (id, v) in fleet.config("hz") {
        assert_eq!(v, "10", "{id}: nothing applied without its journal entry");
    }
    // Released for the next start.
    std::fs::remove_dir(&lock).unwrap();
}

/// Write `request` on a new connection and wait up to `wait` for the status line; the
/// connection stays open (what the request did not send is never sent).
fn raw_status(port: u16, request: &[u8], wait: Duration) -> (Option<u16>, Duration) {
    let began = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = String::from_utf8_lossy(&got)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok());
    (status, began.elapsed())
}

#[test]
fn bodies_are_refused_before_they_are_read_and_a_stalled_one_is_cut_off() {
    let remote = Remote::new();
    let work = TestRepo::new();
    // A node nobody listens on: the checks here need a server, not a fleet.
    work.write(
        "clusters/cache.yaml",
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: cache}
spec:
  engine: redis
  parameters:
    hz: 20
  nodes:
    - {id: a1, address: '127.0.0.1:1', shard: a, role: primary}
",
    );
    work.commit("cache");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    let hook = |extra: &str| {
        format!(
            "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             X-GitHub-Event: push\r\n{extra}\r\n"
        )
    };
    let well_formed = format!("X-Hub-Signature-256: sha256={}\r\n", "0".repeat(64));
    // A body that stalls after 10 bytes: cut off at the 10 s bound with 408.
    let stalled = {
        let request = hook(&format!("{well_formed}Content-Length: 900000\r\n")) + "{\"ref\": \"";
        let port = server.port;
        std::thread::spawn(move || raw_status(port, request.as_bytes(), Duration::from_secs(20)))
    };
    let quick = Duration::from_secs(3);
    // A declared length over 1 MiB with a short body: 413 at once.
    let (code, took) = raw_status(
        server.port,
        (hook(&format!("{well_formed}Content-Length: 100000000\r\n")) + "short").as_bytes(),
        quick,
    );
    assert_eq!(code, Some(413), "after {took:?}");
    // No signature, no node token: 401 before the body is sent.
    let (code, took) = raw_status(
        server.port,
        hook("Content-Length: 900000\r\n").as_bytes(),
        quick,
    );
    assert_eq!(code, Some(401), "after {took:?}");
    let (code, took) = raw_status(
        server.port,
        b"POST /api/v1/nodes/a1/report HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n",
        quick,
    );
    assert_eq!(code, Some(401), "after {took:?}");
    let admin = raw_status(
        server.port,
        b"POST /api/v1/rollouts/cache/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 900000\r\n\r\n",
        quick,
    );
    assert_eq!(admin.0, Some(401), "after {:?}", admin.1);
    // A malformed chunked body is a bad request, not a large one.
    let (code, took) = raw_status(
        server.port,
        (hook(&format!("{well_formed}Transfer-Encoding: chunked\r\n"))
            + "zz\r\nhello\r\n0\r\n\r\n")
            .as_bytes(),
        quick,
    );
    assert_eq!(code, Some(400), "after {took:?}");
    let (code, took) = stalled.join().unwrap();
    assert_eq!(code, Some(408), "after {took:?}");
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "408 after {took:?}"
    );
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    for line in [
        r#"cacheflow_webhook_deliveries_total{forge="github",result="too_large"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="unauthorized"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="bad_request"} 1"#,
        r#"cacheflow_webhook_deliveries_total{forge="github",result="timeout"} 1"#,
        r#"cacheflow_node_reports_total{result="unauthorized"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

/// The remote's bare repository moved away (the forge is down) and back.
fn move_remote(remote: &Remote, away: bool) {
    let there = remote.dir.path().to_path_buf();
    let aside = there.with_extension("away");
    if away {
        std::fs::rename(&there, &aside).unwrap();
    } else {
        std::fs::rename(&aside, &there).unwrap();
    }
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{metrics}"))
}

#[test]
fn a_restart_while_the_remote_is_away_serves_the_mirror_and_resumes_the_rollout() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    let rollout = "stages: [1, 2, 4, '100%']\n    bake: 600ms";
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 20", rollout),
    );
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("serve.log");
    let mut server = Server::start_logged(&remote, state.path(), &[], Some(log.clone()));
    converge(&fleet, "hz", "20", Duration::from_secs(30));
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(metric(&metrics, "cacheflow_remote_reachable"), 1.0);
    assert_eq!(metric(&metrics, "cacheflow_fetch_failures_total"), 0.0);

    // A rollout in flight when the server dies and the forge goes away.
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 31", rollout),
    );
    let commit = work.commit("cache: hz 31");
    remote.push(&work, false);
    assert_eq!(server.github_push("away-1").0, 202);
    std::thread::sleep(Duration::from_millis(400));
    server.kill9();
    assert!(
        !server.note(&commit).contains("completed"),
        "the rollout is still in flight"
    );
    move_remote(&remote, true);

    // It starts from the mirror, says so, and the journal's rollout goes on.
    server.restart();
    let (code, ready) = server.http("GET", "/readyz", &[], b"");
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("remote unreachable since "), "{ready}");
    assert!(
        ready.contains(&format!("serving revision {commit} from the mirror")),
        "{ready}"
    );
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(metric(&metrics, "cacheflow_remote_reachable"), 0.0);
    assert!(metric(&metrics, "cacheflow_fetch_failures_total") >= 1.0);
    converge(&fleet, "hz", "31", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.note(&commit).contains("completed") {
        assert!(Instant::now() < deadline, "{:#?}", server.journal());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Fetched again with a backoff, not once an hour (the poll interval).
    std::thread::sleep(Duration::from_secs(2));
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert!(metric(&metrics, "cacheflow_fetch_failures_total") >= 2.0);

    // The forge is back: a push and its webhook are taken.
    move_remote(&remote, false);
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 32", rollout),
    );
    work.commit("cache: hz 32");
    remote.push(&work, false);
    assert_eq!(server.github_push("back-1").0, 202);
    converge(&fleet, "hz", "32", Duration::from_secs(30));
    let (code, ready) = server.http("GET", "/readyz", &[], b"");
    assert_eq!((code, ready.as_str()), (200, "ready\n"));
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(metric(&metrics, "cacheflow_remote_reachable"), 1.0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("starting from the mirror"), "{text}");
    assert!(text.contains("answers again"), "{text}");

    // A first start with neither a mirror nor the remote is still an error, saying why.
    move_remote(&remote, true);
    let fresh = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["serve", "--repo", &remote.url(), "--state-dir"])
        .arg(fresh.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .env("CACHEFLOW_WEBHOOK_SECRET", SECRET)
        .env("CACHEFLOW_NODE_TOKEN_SECRET", NODE_SECRET)
        .output()
        .unwrap();
    move_remote(&remote, false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds no mirror of the branch `main` to start from"),
        "{stderr}"
    );
}

/// A cluster of one agent-managed Redis node, `hz` as given, stages `[1, 100%]`.
fn early_cluster(node: &RedisServer, hz: &str) -> String {
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: early}}
spec:
  engine: redis
  parameters: {{hz: {hz}}}
  nodes:
    - {{id: e-1, address: '{}', managed: agent}}
  rollout: {{stages: [1, '100%'], bake: 0s, applyTimeout: 30s, gates: {{minOpsPerSec: 0}}}}
",
        node.addr()
    )
}

#[test]
fn an_agent_reporting_at_the_servers_start_before_its_node_is_declared_gets_its_assignment_at_the_push(
) {
    // The start-up race of the webhook's first push: an agent reports before the server
    // knows its node (here: the revision at the start does not declare it yet). Its
    // report is held and taken again when the push's revision declares the node, so the
    // canary's assignment comes back in that answer, not after the agent's back-off.
    // The agent reports every 60 s: refused, it would wait at least 30 s.
    let node = RedisServer::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write(
        "clusters/other.yaml",
        &format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: other}}\nspec:\n  engine: redis\n  nodes:\n    - {{id: o-1, address: '127.0.0.1:{}', managed: agent}}\n",
            free_port()
        ),
    );
    work.commit("another cluster; e-1 not declared yet");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "serve",
        "--repo",
        &remote.url(),
        "--state-dir",
        &state.path().display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--poll-interval",
        "1h",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut server = Server {
        child: spawn(&args, &[], None),
        port,
        state: state.path().to_path_buf(),
        args,
        env: Vec::new(),
        log: None,
    };
    // The agent starts as soon as the server listens: its first report comes at the
    // server's start, before or while the first revision is taken.
    let listening = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < listening, "cacheflow serve did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let token = cacheflow::pure::identity::node_token(NODE_SECRET.as_bytes(), "e-1").unwrap();
    let token_file = state.path().join("agent-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut agent = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["agent", "--node-id", "e-1", "--server", &server.url()])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--redis", &node.addr(), "--interval", "60s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cacheflow agent");
    server.wait_ready();

    // The agent's report has reached the server, which does not know e-1: held (or,
    // before the fix, refused with a 404).
    let reported = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, metrics) = server.http("GET", "/metrics", &[], b"");
        // (A server without the gauge never holds a report.)
        let held = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("cacheflow_node_reports_waiting ")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0);
        let refused = metric(
            &metrics,
            "cacheflow_node_reports_total{result=\"unknown_node\"}",
        );
        if held == 1.0 || refused >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < reported,
            "the agent's report did not reach the server\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.client().config_get("hz")["hz"], "10");

    // The push that declares e-1 with hz 17.
    work.write("clusters/early.yaml", &early_cluster(&node, "17"));
    let declared = work.commit("declare e-1, hz 17");
    remote.push(&work, false);
    let pushed = Instant::now();
    let (code, text) = server.github_push("early-1");
    assert_eq!(code, 202, "{text}");
    let deadline = pushed + Duration::from_secs(25);
    loop {
        if node.client().config_get("hz")["hz"] == "17" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the canary e-1 did not apply hz 17 within 25 s of the push (its agent's \
             back-off would end after 30 s or more); journal: {:#?}",
            server.journal()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The rollout the push started completes on e-1's next report (at once after its
    // apply); no report was refused.
    let completed = Instant::now() + Duration::from_secs(20);
    let journal = loop {
        let journal = server.journal();
        let done = format!("early: {declared} reached every node");
        if journal.iter().any(|m| m.contains(&done)) {
            break journal;
        }
        assert!(
            Instant::now() < completed,
            "the rollout of {declared} did not complete: {journal:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        journal.iter().any(|m| m
            .lines()
            .any(|l| l == format!("early: batch 1 of 1 assigned {declared}: e-1"))),
        "{journal:#?}"
    );
    let (_, metrics) = server.http("GET", "/metrics", &[], b"");
    assert_eq!(
        metric(
            &metrics,
            "cacheflow_node_reports_total{result=\"unknown_node\"}"
        ),
        0.0
    );
    assert_eq!(metric(&metrics, "cacheflow_node_reports_waiting"), 0.0);
    let _ = agent.kill();
    let _ = agent.wait();
    server.terminate();
}
