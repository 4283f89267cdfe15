//! The web console in a real browser: headless Chromium over WebDriver, against the real
//! `cacheflow serve` rolling commits out to six real redis-server nodes. The test reads
//! what a person sees: the fleet page changing a node's cell while it stays open (server-
//! sent events, no reload), the cluster page's gate figures after a failing canary, and
//! the admin buttons, whose commands the journal records with the admin's name.
//! Screenshots of each page go to the target directory's `console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cacheflow::edges::forge::webhook::github_signature;

use crate::support::fleet::Fleet;
use crate::support::git::{journal_messages, TestRepo};
use crate::support::servers::free_port;
use crate::support::webdriver::Browser;

const SECRET: &str = "webhook-secret-for-tests";
const ADMIN_TOKEN: &str = "admin-token-0123456789";
const READ_TOKEN: &str = "read-token-0123456789";

/// `cacheflow serve` on a bare remote, with admin and read tokens.
struct Serve {
    child: Child,
    port: u16,
    state: PathBuf,
}

impl Serve {
    fn start(remote: &Path, state: &Path) -> Serve {
        std::fs::write(state.join("admin"), format!("alice:{ADMIN_TOKEN}\n")).unwrap();
        std::fs::write(state.join("readers"), format!("bob:{READ_TOKEN}\n")).unwrap();
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .arg("serve")
            .arg("--repo")
            .arg(format!("file://{}", remote.display()))
            .arg("--state-dir")
            .arg(state.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--poll-interval", "1h", "--direct-interval", "200ms"])
            .args(["--resume-grace", "1s", "--silent-after", "2s"])
            .arg("--admin-tokens-file")
            .arg(state.join("admin"))
            .env("CACHEFLOW_READ_TOKENS_FILE", state.join("readers"))
            .env("CACHEFLOW_WEBHOOK_SECRET", SECRET)
            .env("CACHEFLOW_NODE_TOKEN_SECRET", "node-token-secret-for-tests")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.join("serve.log")).unwrap())
            .spawn()
            .expect("start cacheflow serve");
        let mut s = Serve {
            child,
            port,
            state: state.join("state"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.http("GET", "/readyz", &[], "").0 != 200 {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("cacheflow serve exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "cacheflow serve did not get ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// (status, body); status 0 when the server does not answer.
    fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        if s.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1)
            .unwrap_or("")
            .to_owned();
        (status, body)
    }

    fn push_hook(&self, delivery: &str) {
        let body = r#"{"ref":"refs/heads/main","after":"0000"}"#;
        let sig = github_signature(SECRET.as_bytes(), body.as_bytes());
        let (status, answer) = self.http(
            "POST",
            "/hooks/github",
            &[
                ("Content-Type", "application/json"),
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sig),
            ],
            body,
        );
        assert_eq!(status, 202, "{answer}");
    }

    fn journal(&self) -> Vec<String> {
        let dir = std::fs::read_dir(self.state.join("mirror"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .expect("a mirror");
        journal_messages(&git2::Repository::open_bare(dir).unwrap())
    }

    fn until_journaled(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.journal().iter().any(|m| m.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} in {:#?}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn converge(fleet: &Fleet, param: &str, want: &str, within: Duration) {
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

/// Where the screenshots go: the target directory, never the repository.
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Wait until `script` (a JavaScript expression) is true in the page.
fn until_true(browser: &Browser, script: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while browser.script(&format!("return Boolean({script});")) != serde_json::json!(true) {
        assert!(
            Instant::now() < deadline,
            "never true: {script}\n{}",
            browser.source()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_console_shows_a_rollout_live_explains_a_failed_canary_and_journals_pause_and_resume() {
    let fleet = Fleet::start();
    // 3 MB of data: a 2mb maxmemory fails the canary's memory gate.
    let value = "x".repeat(1 << 20);
    for p in ["a1", "b1"] {
        let mut c = fleet.get(p).client();
        for k in ["k1", "k2", "k3"] {
            assert!(c.cmd(&["SET", k, &value]).is_ok());
        }
    }
    let remote = tempfile::Builder::new()
        .prefix("cacheflow-remote-")
        .tempdir()
        .unwrap();
    git2::Repository::init_bare(remote.path()).unwrap();
    let work = TestRepo::new();
    let push = || {
        let mut r = work
            .repository()
            .remote_anonymous(&remote.path().display().to_string())
            .unwrap();
        r.push(&["refs/heads/main:refs/heads/main"], None)
            .expect("git push");
    };
    let cluster = |params: &str, bake: &str| {
        fleet.cluster_yaml_with(
            &format!("    {params}\n    maxmemory-policy: noeviction"),
            &format!("stages: [1, '50%', '100%']\n    bake: {bake}"),
        )
    };
    work.write("clusters/cache.yaml", &cluster("maxmemory: 64mb", "1s"));
    work.commit("cache: 64mb");
    push();
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(remote.path(), dir.path());
    converge(&fleet, "maxmemory", "67108864", Duration::from_secs(30));
    let shots = screenshots();

    // Reading needs a token: a reader's token reads, and is not an admin's.
    let reader = format!("Bearer {READ_TOKEN}");
    assert_eq!(server.http("GET", "/api/v1/rollouts", &[], "").0, 401);
    let (status, body) = server.http("GET", "/api/v1/rollouts", &[("Authorization", &reader)], "");
    assert_eq!(status, 200, "{body}");
    let (status, page) = server.http("GET", "/", &[], "");
    assert_eq!(status, 401);
    assert!(page.contains("asks for a read token"), "{page}");
    let (status, _) = server.http(
        "POST",
        "/api/v1/rollouts/cache/pause",
        &[("Authorization", &reader)],
        "",
    );
    assert_eq!(status, 401, "a read token is not an admin token");

    // The browser signs in once with the read token; the cookie carries it after.
    let browser = Browser::start();
    browser.goto(&server.url("/"));
    browser
        .wait_for("#token", Duration::from_secs(10))
        .send_keys(READ_TOKEN);
    browser
        .find("#login button")
        .expect("the sign-in button")
        .click();
    browser.wait_for("#row-cache", Duration::from_secs(10));
    until_true(
        &browser,
        "document.querySelectorAll('#row-cache i.n.s-in-sync').length === 6",
        Duration::from_secs(10),
    );
    assert_eq!(
        browser.script("return document.querySelectorAll('#row-cache i.n').length;"),
        6
    );
    until_true(
        &browser,
        "document.getElementById('live').textContent === 'live'",
        Duration::from_secs(10),
    );
    browser.screenshot(&shots.join("fleet.png"));
    // Remember every state a cell takes from now on, and mark the page: a reload would
    // lose the mark.
    browser.script(
        "window.kept = 42; window.seen = new Set();\
         new MutationObserver(function () {\
           document.querySelectorAll('#row-cache i.n').forEach(function (c) { window.seen.add(c.className); });\
         }).observe(document.getElementById('rows'), {childList: true, subtree: true});",
    );

    // A change whose canary fails its memory gate: the open page follows it.
    work.write("clusters/cache.yaml", &cluster("maxmemory: 2mb", "1s"));
    let bad = work.commit("cache: 2mb");
    push();
    server.push_hook("d-bad");
    until_true(
        &browser,
        "document.querySelector('#row-cache i.n.s-rolled-back') !== null",
        Duration::from_secs(40),
    );
    assert_eq!(
        browser.script("return window.kept;"),
        42,
        "the page was not reloaded"
    );
    let seen = browser.script("return Array.from(window.seen).sort();");
    let seen: Vec<String> = serde_json::from_value(seen).unwrap();
    assert!(
        seen.iter()
            .any(|c| c == "n s-assigned" || c == "n s-baking"),
        "the canary was seen assigned or baking: {seen:?}"
    );
    assert!(seen.iter().any(|c| c == "n s-rolled-back"), "{seen:?}");
    let phase = browser.find("#row-cache td.phase").unwrap().text();
    assert!(phase.starts_with("rolled-back"), "{phase}");
    browser.screenshot(&shots.join("fleet-rolled-back.png"));
    converge(&fleet, "maxmemory", "67108864", Duration::from_secs(10));

    // The cluster page says why: the canary's figures against its baseline.
    browser.goto(&server.url("/clusters/cache"));
    let verdict = browser.wait_for("#verdict", Duration::from_secs(10)).text();
    assert!(verdict.starts_with("Batch 1: failed: "), "{verdict}");
    assert!(verdict.contains("is above 98.0%"), "{verdict}");
    let canary = browser
        .find("#gates tbody tr")
        .expect("the canary's figures");
    let node = canary.attribute("data-node").expect("a node");
    assert!(
        ["a1", "a2", "a3", "b1", "b2", "b3"].contains(&node.as_str()),
        "{node}"
    );
    let cells = browser.script(
        "return Array.from(document.querySelectorAll('#gates tbody tr td')).map(function (c) { return c.textContent; });",
    );
    let cells: Vec<String> = serde_json::from_value(cells).unwrap();
    assert_eq!(cells[..2], [node.clone(), "yes".to_owned()], "{cells:?}");
    let memory = browser
        .script("return document.querySelector('#gates tbody tr td:last-child').textContent;");
    let memory: f64 = memory
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(memory > 98.0, "the memory the gate failed on: {memory}");
    assert!(
        browser.find("#gates svg.bars").is_some(),
        "the figures are drawn"
    );
    let history = browser.find("#history").unwrap().text();
    assert!(history.contains("cache: 2mb"), "{history}");
    assert!(history.contains(&bad[..12]), "{history}");
    assert!(
        history.contains("cache: rolled back"),
        "the commit's note: {history}"
    );
    browser.screenshot(&shots.join("cluster-rolled-back.png"));

    // A good change with a long bake: the admin pauses and resumes it from the page.
    work.write("clusters/cache.yaml", &cluster("maxmemory: 48mb", "30s"));
    work.commit("cache: 48mb");
    push();
    server.push_hook("d-good");
    until_true(
        &browser,
        "document.getElementById('phase').textContent.startsWith('baking, batch 1 of ')",
        Duration::from_secs(30),
    );
    until_true(
        &browser,
        "/^[0-9]+ s$/.test(document.getElementById('bake').textContent)",
        Duration::from_secs(5),
    );
    browser.find("#admin-token").unwrap().send_keys(ADMIN_TOKEN);
    browser.find("button[data-action=pause]").unwrap().click();
    until_true(
        &browser,
        "document.getElementById('admin-result').textContent === 'pause: done'",
        Duration::from_secs(10),
    );
    until_true(
        &browser,
        "document.getElementById('phase').textContent.startsWith('paused, batch 1 of ')",
        Duration::from_secs(10),
    );
    server.until_journaled("cache: paused by alice at batch 1", Duration::from_secs(10));
    browser.screenshot(&shots.join("cluster-paused.png"));
    // The token was typed once: kept for the tab, not in the field nor in localStorage.
    assert_eq!(
        browser.script("return [sessionStorage.getItem('cacheflow-admin-token'), localStorage.length, document.getElementById('admin-token').value];"),
        serde_json::json!([ADMIN_TOKEN, 0, ""])
    );
    browser.find("button[data-action=resume]").unwrap().click();
    until_true(
        &browser,
        "document.getElementById('admin-result').textContent === 'resume: done'",
        Duration::from_secs(10),
    );
    server.until_journaled(
        "cache: resumed by alice at batch 1",
        Duration::from_secs(10),
    );
    until_true(
        &browser,
        "document.getElementById('phase').textContent.indexOf('paused') < 0",
        Duration::from_secs(10),
    );

    // The drift page: a run now, its report and chart served by the console.
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let (status, body) = server.http(
        "POST",
        "/api/v1/drift/run",
        &[("Authorization", &admin)],
        "",
    );
    assert_eq!(status, 200, "{body}");
    browser.goto(&server.url("/drift"));
    browser.wait_for("#chart", Duration::from_secs(10));
    assert_eq!(
        browser.script("return document.querySelectorAll('#chart g.run').length;"),
        1
    );
    let not_compared = browser
        .find("#not-compared")
        .expect("the cluster in flight")
        .text();
    assert!(not_compared.starts_with("cache: "), "{not_compared}");
    browser.screenshot(&shots.join("drift.png"));
}
