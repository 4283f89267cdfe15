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
        "== 5. History: `cacheflow history`",
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

    // 5. The history, with the reconciler's notes.
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
    assert!(head.id().to_string().starts_with(revert));
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
