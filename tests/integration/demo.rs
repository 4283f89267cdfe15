//! `cacheflow demo` through the real binary, end to end: exit code, the key lines of
//! every step, its duration, and the repository it kept (commits, journal, notes).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::git::cacheflow_note;

/// The journal lines the demo printed live, without their time column
/// (`   3.0s  sessions-eu: ...` → `sessions-eu: ...`).
fn live_lines(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| {
            let (at, rest) = l.trim_start().split_once("s  ")?;
            at.parse::<f64>().ok()?;
            Some(rest)
        })
        .collect()
}

/// The short id of the commit the demo announced with `commit <id> by <who>: <message>`.
fn commit_of<'a>(out: &'a str, who_and_message: &str) -> &'a str {
    out.lines()
        .find_map(|l| {
            let rest = l.trim_start().strip_prefix("commit ")?;
            let (id, tail) = rest.split_once(' ')?;
            (tail == format!("by {who_and_message}")).then_some(id)
        })
        .unwrap_or_else(|| panic!("no commit by {who_and_message} in:\n{out}"))
}

#[test]
fn demo_runs_the_whole_loop_and_ends_by_itself() {
    let keep = tempfile::Builder::new()
        .prefix("cacheflow-demo-test-")
        .tempdir()
        .expect("a temporary directory");
    let dir = keep.path().join("repo");
    let began = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .arg("demo")
        .arg("--keep")
        .arg(&dir)
        .output()
        .expect("the cacheflow binary runs");
    let took = began.elapsed();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{out}\n{err}");
    assert!(took < Duration::from_secs(90), "took {took:?}:\n{out}");

    // The steps, in order.
    let mut at = 0;
    for heading in [
        "== 1. The repository",
        "== 2. A change rolls out",
        "== 3. A bad change: the canary fails its gates and is rolled back",
        "== 4. Someone ran CONFIG SET by hand: the drift report",
        "== 5. A restart-only change of a primary: its role moves to a replica first",
        "== 6. History: `cacheflow history`",
        "== What next: the same commands against real Redis and Memcached",
    ] {
        let found = out[at..]
            .find(heading)
            .unwrap_or_else(|| panic!("no `{heading}` after byte {at}:\n{out}"));
        at += found + heading.len();
    }

    let speeds = commit_of(
        &out,
        "cacheflow demo: Demo speeds: bake 3s, warm-up 1s, apply timeout 10s, no rollout windows",
    );
    let good = commit_of(
        &out,
        "bob: More memory for EU sessions: maxmemory 6gb → 8gb",
    );
    let bad = commit_of(&out, "carol: Save memory: EU sessions down to 3gb");
    let revert = commit_of(
        &out,
        "carol: Revert \"Save memory: EU sessions down to 3gb\"",
    );
    let live = live_lines(&out);
    let has = |line: &str| {
        assert!(live.contains(&line), "no live line `{line}` in:\n{out}");
    };
    let has_prefix = |prefix: &str| {
        assert!(
            live.iter().any(|l| l.starts_with(prefix)),
            "no live line starting `{prefix}` in:\n{out}"
        );
    };

    // 1. The fleet runs the repository as it is.
    assert!(
        out.contains(&format!(
            "sessions-eu: 9 node(s) already run {speeds}: sessions-eu-1a, sessions-eu-1b"
        )),
        "{out}"
    );

    // 2. Canary, then batches (replicas first, one node of a shard at a time), each
    // passing its gates.
    has(&format!(
        "sessions-eu: rollout of {good} started, 4 batch(es)"
    ));
    has(&format!(
        "sessions-eu: batch 1 of 4 assigned {good}: sessions-eu-1b"
    ));
    has(&format!("sessions-eu: sessions-eu-1b applied {good}"));
    has("sessions-eu: gates of batch 1 passed");
    has(&format!(
        "sessions-eu: batch 2 of 4 assigned {good}: sessions-eu-2b, sessions-eu-3b, sessions-eu-1c"
    ));
    has(&format!(
        "sessions-eu: batch 3 of 4 assigned {good}: sessions-eu-2c, sessions-eu-3c, sessions-eu-1a"
    ));
    has(&format!(
        "sessions-eu: batch 4 of 4 assigned {good}: sessions-eu-2a, sessions-eu-3a"
    ));
    has("sessions-eu: batch 4 passed its gates");
    has(&format!("sessions-eu: {good} reached every node"));
    assert!(
        out.contains(
            "Read back from the nodes: maxmemory is 8gb (8589934592 bytes) on all 9 nodes of sessions-eu."
        ),
        "{out}"
    );

    // 3. The canary fails its gates on real readings and is rolled back.
    has(&format!(
        "sessions-eu: batch 1 of 4 assigned {bad}: sessions-eu-1b"
    ));
    has_prefix("sessions-eu: gates of batch 1 failed: sessions-eu-1b: memory 3gb of 3gb (100.0%) is above 95.0%; sessions-eu-1b: hit ratio fell from 95.0% to ");
    has_prefix(&format!(
        "sessions-eu: rolling back {bad}: gates failed: sessions-eu-1b: "
    ));
    has(&format!("sessions-eu: rolled back to {good}"));
    assert!(
        !live.contains(&format!("sessions-eu: batch 2 of 4 assigned {bad}: sessions-eu-2b, sessions-eu-3b, sessions-eu-1c").as_str()),
        "{out}"
    );
    assert!(
        out.contains("Read back from sessions-eu-1b: maxmemory is 8gb (8589934592 bytes) again."),
        "{out}"
    );
    assert!(
        out.contains("The other 8 nodes were never touched."),
        "{out}"
    );
    // The revert changes the cluster back to what every node runs: journaled as such
    // (never "no cluster changed") and noted on the revert (below).
    has(&format!(
        "sessions-eu: 9 node(s) already run {revert}: sessions-eu-1a, sessions-eu-1b, \
         sessions-eu-1c, sessions-eu-2a, sessions-eu-2b, sessions-eu-2c, sessions-eu-3a, \
         sessions-eu-3b, sessions-eu-3c"
    ));

    // 4. The drift, from the nodes' readings.
    assert!(
        out.contains("      sessions-eu-2a maxmemory-policy: expected volatile-lru, found allkeys-lru (live value differs)\n"),
        "{out}"
    );
    assert!(
        out.contains("    sessions-eu: 9 node(s), 1 drifted, 0 silent\n"),
        "{out}"
    );
    assert!(out.contains("    1 node(s) drifted or silent\n"), "{out}");

    // 5. A start-only change of a primary: the replica first, then the primary role moves
    // to it, then the old primary restarts as its replica.
    let carts = commit_of(
        &out,
        "bob: Carts: 32 databases (start-only: each engine restarts)",
    );
    for line in [
        format!("carts: batch 1 of 2 assigned {carts}: carts-1b"),
        format!("carts: carts-1b applied {carts}"),
        "carts: failover of shard c1: carts-1a → carts-1b (carts-1a restarts as a replica)"
            .to_owned(),
        "carts: failover of shard c1 done: carts-1b is the primary, carts-1a its replica"
            .to_owned(),
        format!("carts: batch 2 of 2 assigned {carts}: carts-1a"),
        format!("carts: carts-1a applied {carts}"),
        format!("carts: {carts} reached every node"),
    ] {
        has(&line);
    }
    let order: Vec<usize> = [
        "carts: batch 1 of 2 assigned",
        "carts: failover of shard c1: ",
        "carts: failover of shard c1 done: ",
        "carts: batch 2 of 2 assigned",
    ]
    .iter()
    .map(|p| live.iter().position(|l| l.starts_with(p)).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{out}");
    assert!(
        out.contains(
            "Read back from carts-1a: databases 32, runs as a replica.\n\
             Read back from carts-1b: databases 32, runs as a primary.\n"
        ),
        "{out}"
    );

    // 6. The history, with the reconciler's notes.
    assert!(out.contains(&format!("    {bad} ")), "{out}");
    assert!(
        out.contains("      sessions-eu: maxmemory 8gb → 3gb\n      ⇒ sessions-eu: rolled back "),
        "{out}"
    );
    assert!(
        out.contains("      sessions-eu: maxmemory 6gb → 8gb\n      ⇒ sessions-eu: completed "),
        "{out}"
    );
    assert!(out.contains("cacheflow plan --repo . --direct"), "{out}");
    assert!(
        out.contains(&format!(
            "cacheflow history --repo {}",
            dir.canonicalize().unwrap().display()
        )),
        "{out}"
    );

    // The kept repository holds what was printed: the commits, the notes, the journal.
    let repo = git2::Repository::open(&dir).expect("the kept repository opens");
    let head = repo.head().unwrap().peel_to_commit().unwrap();
    assert!(head.id().to_string().starts_with(carts));
    assert!(cacheflow_note(&repo, &full_id(&repo, carts)).starts_with("carts: completed "));
    let full = |short: &str| repo.revparse_single(short).unwrap().id().to_string();
    assert!(
        cacheflow_note(&repo, &full(bad)).starts_with("sessions-eu: rolled back "),
        "{}",
        cacheflow_note(&repo, &full(bad))
    );
    assert!(cacheflow_note(&repo, &full(good)).starts_with("sessions-eu: completed "));
    let reverted = cacheflow_note(&repo, &full(revert));
    assert!(
        reverted.starts_with("sessions-eu: in sync ")
            && reverted.ends_with(": 9 node(s) already run it: sessions-eu-1a, sessions-eu-1b, sessions-eu-1c, sessions-eu-2a, sessions-eu-2b, sessions-eu-2c, sessions-eu-3a, sessions-eu-3b, sessions-eu-3c"),
        "{reverted}"
    );
    let journal = repo
        .find_reference("refs/cacheflow/journal")
        .expect("the journal ref");
    let mut walk = repo.revwalk().unwrap();
    walk.push(journal.target().unwrap()).unwrap();
    assert!(walk.count() > 10);
}

fn full_id(repo: &git2::Repository, short: &str) -> String {
    repo.revparse_single(short).unwrap().id().to_string()
}

/// GET `path` on `port`: (status, body); 0 when nothing answers.
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
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
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_owned())
}

#[test]
fn demo_serve_prints_the_console_and_keeps_it_up_until_ctrl_c() {
    use std::io::BufRead;
    use std::process::Stdio;
    let port = crate::support::servers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["demo", "--serve", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the cacheflow binary runs");
    // Read its output on a thread; the lines come back over a channel.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                return;
            }
        }
    });
    let mut out = String::new();
    let mut until = |want: &str, within: Duration| {
        let deadline = Instant::now() + within;
        while !out.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    out.push_str(&line);
                    out.push('\n');
                }
                Err(_) => panic!("no {want:?} within {within:?} in:\n{out}"),
            }
        }
        out.clone()
    };
    let said = until("The story starts in 5 s.", Duration::from_secs(30));
    assert!(
        said.contains(&format!("The web console: http://127.0.0.1:{port}/ (live")),
        "{said}"
    );
    // The console answers before the story starts: every cluster a row.
    let (status, page) = get(port, "/");
    assert_eq!(status, 200, "{page}");
    for cluster in ["catalog-staging", "page-cache", "sessions-eu"] {
        assert!(
            page.contains(&format!("<tr id=\"row-{cluster}\"")),
            "{page}"
        );
    }
    let said = until("Ctrl-C to go on.", Duration::from_secs(90));
    assert!(
        said.contains("The console's drift page shows this report: /drift."),
        "{said}"
    );
    // After the story: the bad change's rollback, its figures and note, and the drift.
    let (status, page) = get(port, "/clusters/sessions-eu");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("<p id=\"verdict\" class=\"bad\">Batch 1: failed: "),
        "{page}"
    );
    assert!(page.contains("<svg class=\"bars\""), "{page}");
    assert!(
        page.contains("sessions-eu: rolled back "),
        "the commit's note: {page}"
    );
    assert!(
        !page.contains("data-action=\"pause\""),
        "no admin buttons without the API"
    );
    let (status, page) = get(port, "/drift");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("1 node(s) drifted or silent"), "{page}");
    assert_eq!(page.matches("<g class=\"run\">").count(), 1, "{page}");
    // Ctrl-C: the console stops, the demo goes on to its history and ends with 0.
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let said = until(
        "How this demo works: docs/demo.md.",
        Duration::from_secs(20),
    );
    assert!(
        said.contains("== 6. History: `cacheflow history`"),
        "{said}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not end after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(0));
    assert_eq!(get(port, "/").0, 0, "the console is down");
}
