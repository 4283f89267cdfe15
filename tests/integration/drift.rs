//! `cacheflow drift` against six real redis-server nodes brought in line by
//! `cacheflow sync`, then changed by hand: a live value changed, a value right live but
//! wrong in the config file, a node stopped. The HTML page is then opened in headless
//! Chromium (Debian's `chromium`, or Chrome: see `browser()`; scripts/setup.sh --test
//! installs it) and checked as the browser parsed and rendered it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cacheflow_sync;
use crate::support::fleet::Fleet;
use crate::support::git::TestRepo;
use crate::support::servers::Reply;
use crate::support::service::Service;

fn drift(repo: &TestRepo, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["drift", "--direct", "--repo"])
        .arg(repo.path())
        .args(extra)
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn hand_made_changes_unpersisted_values_and_silent_nodes_are_reported() {
    let mut fleet = Fleet::start();
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    let commit = repo.commit("cache: hz 20");
    let (code, out) = cacheflow_sync(repo.path(), &["--yes"], &[]);
    assert_eq!(code, 0, "{out}");

    let (code, out, err) = drift(&repo, &[]);
    assert_eq!(
        (code, out.as_str()),
        (0, "cache: 6 node(s), 0 drifted, 0 silent\nno drift\n"),
        "{err}"
    );

    // 3 am: someone runs CONFIG SET by hand on a2; on b2 the value is put back live but
    // the config file keeps the hand-made one; b3 is stopped.
    let ok = |reply: Reply| assert!(reply.is_ok(), "{reply:?}");
    ok(fleet.get("a2").client().cmd(&["CONFIG", "SET", "hz", "50"]));
    let mut b2 = fleet.get("b2").client();
    ok(b2.cmd(&["CONFIG", "SET", "hz", "77"]));
    ok(b2.cmd(&["CONFIG", "REWRITE"]));
    ok(b2.cmd(&["CONFIG", "SET", "hz", "20"]));
    let b3 = fleet.nodes.iter().position(|(id, _)| id == "b3").unwrap();
    drop(fleet.nodes.remove(b3));

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("report");
    let (code, out, err) = drift(&repo, &["--output-dir", out_dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "cache: 6 node(s), 2 drifted, 1 silent");
    assert_eq!(
        lines[1],
        "  a2 hz: expected 20, found 50 (live value differs)"
    );
    assert_eq!(
        lines[2],
        "  b2 hz: expected 20, found 77 (not persisted (lost on restart))"
    );
    assert!(lines[3].starts_with("  b3 silent: "), "{out}");
    assert_eq!(lines[4], "3 node(s) drifted or silent");
    assert_eq!(lines.len(), 5, "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("drift.json")).unwrap())
            .unwrap();
    let cluster = &json["clusters"][0];
    assert_eq!(cluster["cluster"], "cache");
    assert_eq!(
        cluster["drifted"],
        serde_json::json!([
            {"node": "a2", "parameters": [
                {"name": "hz", "kind": "differs", "expected": "20", "found": "50"}]},
            {"node": "b2", "parameters": [
                {"name": "hz", "kind": "not-persisted", "expected": "20", "found": "77"}]},
        ])
    );
    assert_eq!(cluster["silent"][0]["node"], "b3");
    assert_eq!(json["undeclared"], serde_json::json!([]));
    assert_eq!(json["revision"], commit);

    let md = std::fs::read_to_string(out_dir.join("drift.md")).unwrap();
    assert!(md.contains("| cache | 6 | 2 | 1 |"), "{md}");
    assert!(
        md.contains("| a2 | `hz` | `20` | `50` | live value differs |"),
        "{md}"
    );
    let html = std::fs::read_to_string(out_dir.join("drift.html")).unwrap();
    assert!(
        html.contains("<strong id=\"status\" class=\"bad\">3 node(s) drifted or silent</strong>")
    );
    assert!(html.contains("<td>a2</td><td><code>hz</code></td><td><code>20</code></td><td class=\"bad\"><code>50</code></td>"), "{html}");
    assert!(html.contains("<svg id=\"chart\""), "{html}");
    assert!(!html.contains("<script"), "self-contained, no script");

    // The page as a browser sees it: the DOM Chromium built from it (tables get their
    // implied <tbody>, so this is the parsed page, not the file's text).
    let page = out_dir.join("drift.html");
    let dom = chromium(&page, dir.path(), &["--dump-dom"]);
    let dom = String::from_utf8(dom).expect("the DOM is UTF-8");
    for expected in [
        "<title>cacheflow drift report ",
        "<strong id=\"status\" class=\"bad\">3 node(s) drifted or silent</strong>",
        "<table id=\"summary\"><tbody><tr><th>cluster</th><th>nodes</th><th>drifted</th><th>silent</th></tr>\n\
         <tr><td>cache</td><td>6</td><td>2</td><td>1</td></tr>\n</tbody></table>",
        "<table id=\"drifted\"><tbody><tr><th>cluster</th><th>node</th><th>parameter</th><th>expected</th><th>found</th><th>drift</th></tr>\n\
         <tr><td>cache</td><td>a2</td><td><code>hz</code></td><td><code>20</code></td><td class=\"bad\"><code>50</code></td><td>live value differs</td></tr>\n\
         <tr><td>cache</td><td>b2</td><td><code>hz</code></td><td><code>20</code></td><td class=\"bad\"><code>77</code></td><td>not persisted (lost on restart)</td></tr>\n\
         </tbody></table>",
        "<ul id=\"silent\">\n<li>cache / b3: ",
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"180\" role=\"img\" aria-label=\"nodes drifted and silent per run, over time\" font-size=\"11\">",
        // The one run, once: 2 drifted with the silent one stacked apart, not added in.
        ": 2 drifted, 1 silent</title><rect class=\"drifted\" ",
        "<rect class=\"silent\" ",
        "time (UTC), 1 run(s)",
    ] {
        assert!(dom.contains(expected), "missing {expected:?} in the DOM:\n{dom}");
    }
    assert_eq!(dom.matches("<g class=\"run\">").count(), 1, "{dom}");
    assert!(!dom.contains("<script"), "{dom}");

    // And it renders: a PNG of the window's size, not a blank page (a blank 800×600
    // page is about 3 KB; this one, with its text, tables and chart, over 30 KB).
    let png = chromium(
        &page,
        dir.path(),
        &["--window-size=800,600", "--screenshot=page.png"],
    );
    assert!(png.is_empty(), "--screenshot writes a file, not stdout");
    let png = std::fs::read(dir.path().join("page.png")).expect("Chromium wrote page.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
    assert_eq!(&png[12..16], b"IHDR");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (800, 600), "the window's size");
    assert!(png.len() > 10_000, "a blank page? {} bytes", png.len());
}

/// The cluster `cache` on three independent primaries run as services (daemonized, from
/// their own config file, restartable), with these parameter lines.
fn services_yaml(nodes: &[Service], params: &str) -> String {
    let mut list = String::new();
    for (i, n) in nodes.iter().enumerate() {
        list.push_str(&format!(
            "    - {{id: n{}, address: '{}', shard: s{}, role: primary}}\n",
            i + 1,
            n.addr(),
            i + 1
        ));
    }
    format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  engine: redis\n  version: '7.0'\n  parameters:\n{params}\n  nodes:\n{list}  rollout:\n    stages: ['100%']\n    bake: 0s\n    applyTimeout: 10s\n    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}\n"
    )
}

/// The declared values equal to Redis 7.0's defaults (written as people write them: a
/// duration, an upper-case enum, an empty string), one that is not (`maxmemory`), and
/// the buffer limits with one class off its default.
const DEFAULTS: &str = "    hz: 10\n    timeout: 0\n    tcp-keepalive: 5m\n    maxmemory-policy: NOEVICTION\n    notify-keyspace-events: ''\n    maxmemory: 64mb\n    client-output-buffer-limit: normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 1048576 60";

#[test]
fn declared_defaults_are_not_drift_after_a_sync_and_survive_a_restart() {
    let nodes: Vec<Service> = (0..3).map(|_| Service::redis("")).collect();
    let ok = |reply: Reply| assert!(reply.is_ok(), "{reply:?}");
    // Before the first sync the nodes run other values, set live only (as a person
    // would have): the sync sets the defaults back and CONFIG REWRITE persists them.
    for n in &nodes {
        let mut c = n.redis_client();
        ok(c.cmd(&[
            "CONFIG",
            "SET",
            "hz",
            "20",
            "timeout",
            "300",
            "tcp-keepalive",
            "60",
        ]));
    }
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", &services_yaml(&nodes, DEFAULTS));
    repo.commit("cache: defaults, 64mb, pubsub limits");
    let (code, out) = cacheflow_sync(repo.path(), &["--yes"], &[]);
    assert_eq!(code, 0, "{out}");

    // CONFIG REWRITE wrote what is off its default, and not the defaults.
    for n in &nodes {
        let file = std::fs::read_to_string(n.config_path()).unwrap();
        let directives: Vec<&str> = file
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for absent in [
            "hz",
            "timeout",
            "tcp-keepalive",
            "maxmemory-policy",
            "notify-keyspace-events",
        ] {
            assert!(!directives.contains(&absent), "{absent} in\n{file}");
        }
        assert!(file.contains("\nmaxmemory 64mb\n"), "{file}");
        assert!(
            file.contains("\nclient-output-buffer-limit pubsub 1mb 1mb 60\n"),
            "{file}"
        );
    }
    let clean = "cache: 3 node(s), 0 drifted, 0 silent\nno drift\n";
    let (code, out, err) = drift(&repo, &[]);
    assert_eq!((code, out.as_str()), (0, clean), "{err}");

    // The proof: n3 restarted from its file runs every declared value.
    let before = nodes[2].pid();
    let restart = Command::new("sh")
        .arg("-c")
        .arg(nodes[2].restart_command())
        .output()
        .unwrap();
    assert!(restart.status.success(), "{restart:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while nodes[2].pid() == before
        || crate::support::servers::RedisClient::try_connect(
            nodes[2].addr().rsplit(':').next().unwrap().parse().unwrap(),
        )
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "n3 did not restart:\n{}",
            nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let got = nodes[2].redis_client().config_get("*");
    for (name, want) in [
        ("hz", "10"),
        ("timeout", "0"),
        ("tcp-keepalive", "300"),
        ("maxmemory-policy", "noeviction"),
        ("notify-keyspace-events", ""),
        ("maxmemory", "67108864"),
        (
            "client-output-buffer-limit",
            "normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 1048576 60",
        ),
    ] {
        assert_eq!((name, got[name].as_str()), (name, want));
    }
    let (code, out, err) = drift(&repo, &[]);
    assert_eq!((code, out.as_str()), (0, clean), "{err}");

    // Real hand-made changes are still drift. n1: a live value changed. n2: maxmemory
    // set to the engine's default and rewritten into the file, then put back live: the
    // file says 0 while the repository says 64mb. n3: `hz 50` written into the file by
    // hand while the live value is the declared default.
    ok(nodes[0]
        .redis_client()
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]));
    let mut n2 = nodes[1].redis_client();
    ok(n2.cmd(&["CONFIG", "SET", "maxmemory", "0"]));
    ok(n2.cmd(&["CONFIG", "REWRITE"]));
    ok(n2.cmd(&["CONFIG", "SET", "maxmemory", "64mb"]));
    let mut file = std::fs::read_to_string(nodes[2].config_path()).unwrap();
    file.push_str("hz 50\n");
    std::fs::write(nodes[2].config_path(), file).unwrap();
    let (code, out, err) = drift(&repo, &[]);
    assert_eq!(
        (code, out.as_str()),
        (
            2,
            "cache: 3 node(s), 3 drifted, 0 silent\n  \
             n1 maxmemory-policy: expected noeviction, found allkeys-lru (live value differs)\n  \
             n2 maxmemory: expected 64mb, found 0 (not persisted (lost on restart))\n  \
             n3 hz: expected 10, found 50 (not persisted (lost on restart))\n\
             3 node(s) drifted or silent\n"
        ),
        "{err}"
    );
}

#[test]
fn drift_repeat_must_be_a_duration_longer_than_zero() {
    for (repeat, message) in [
        ("soon", "/spec/drift/repeat"),
        ("0s", "drift.repeat must be longer than 0s"),
    ] {
        let repo = TestRepo::new();
        repo.write(
            "cacheflow.yaml",
            &format!("apiVersion: cacheflow/v1\nkind: Settings\nmetadata: {{name: settings}}\nspec:\n  drift:\n    schedule: '0 * * * *'\n    repeat: {repeat}\n"),
        );
        repo.commit("drift repeat");
        let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["validate", "--repo"])
            .arg(repo.path())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains(message), "{repeat}: {text}");
    }
}

/// The names Chromium goes by (Debian, Ubuntu's snap, Google's package), as
/// scripts/setup.sh looks for them.
const BROWSERS: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// `$CACHEFLOW_BROWSER`, else the first of `BROWSERS` on PATH (else `chromium`, which then
/// fails to start with the message of `chromium()`): never a skipped test.
fn browser() -> std::path::PathBuf {
    if let Some(b) = std::env::var_os("CACHEFLOW_BROWSER").filter(|b| !b.is_empty()) {
        return b.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in BROWSERS {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    "chromium".into()
}

/// Run headless Chromium on `page` with `args`, in `work` (a fresh profile there), and
/// return what it wrote on stdout. Its stderr is noise (D-Bus, GPU) unless it fails.
fn chromium(page: &Path, work: &Path, args: &[&str]) -> Vec<u8> {
    let profile = tempfile::tempdir_in(work).unwrap();
    let stdout = work.join("chromium.out");
    let stderr = work.join("chromium.err");
    let spawned = Command::new(browser())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "no browser found (this test opens the HTML drift report in headless Chromium): \
             looked for $CACHEFLOW_BROWSER, {}; run scripts/setup.sh --test (Debian: apt-get \
             install chromium; Ubuntu: snap install chromium, or Google Chrome's .deb), or set \
             CACHEFLOW_BROWSER to a Chromium or Chrome binary",
            BROWSERS.join(", ")
        ),
        Err(e) => panic!("cannot start chromium: {e}"),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 30 s:\n{}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "chromium {args:?} failed ({status}):\n{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    std::fs::read(&stdout).unwrap()
}
