//! A restart of `cacheflow serve` changes no node: a value set by hand on a directly
//! managed redis-server keeps its value across a SIGTERM and a SIGKILL of the server
//! (`drift.mode: report`), the journal takes no line for it, and drift still reports it.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::serve::{converge, Remote, Server};
use crate::support::fleet::Fleet;
use crate::support::git::TestRepo;

const SETTINGS: &str = "apiVersion: cacheflow/v1
kind: Settings
metadata: {name: settings}
spec:
  drift: {mode: report}
";

/// `hz` on every node of the fleet, for `during`, is `want` (a2's) and 20 (the others').
fn a2_keeps(fleet: &Fleet, want: &str, during: Duration) {
    let until = Instant::now() + during;
    loop {
        for (id, v) in fleet.config("hz") {
            let expected = if id == "a2" { want } else { "20" };
            assert_eq!(v, expected, "{id}: a restart changed the node");
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cacheflow drift --server` against the server: (exit code, stdout).
fn drift(server: &Server) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["drift", "--server", &server.url(), "--format", "text"])
        .env("CACHEFLOW_ADMIN_TOKEN", "admin-token-0123456789")
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_restart_of_serve_keeps_a_hand_made_change_on_a_direct_node_and_journals_nothing() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("cacheflow.yaml", SETTINGS);
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&remote, state.path());
    converge(&fleet, "hz", "20", Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .journal()
        .iter()
        .any(|m| m.lines().any(|l| l.ends_with(" reached every node")))
    {
        assert!(Instant::now() < deadline, "{:#?}", server.journal());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Someone runs CONFIG SET by hand on a2.
    assert!(fleet
        .get("a2")
        .client()
        .cmd(&["CONFIG", "SET", "hz", "50"])
        .is_ok());
    a2_keeps(&fleet, "50", Duration::from_millis(600));
    let journal = server.journal();

    // Stopped with SIGTERM, started again: the resume grace (1 s) and several reports of
    // every node pass; a2 keeps its value and the journal took nothing.
    server.terminate();
    server.restart();
    a2_keeps(&fleet, "50", Duration::from_secs(3));
    assert_eq!(server.journal(), journal, "a restart journaled something");

    // The same after SIGKILL.
    server.kill9();
    server.restart();
    a2_keeps(&fleet, "50", Duration::from_secs(3));
    assert_eq!(server.journal(), journal, "a restart journaled something");

    // The hand change is still drift, for a person to see.
    assert_eq!(
        drift(&server),
        (
            2,
            "cache: 6 node(s), 1 drifted, 0 silent\n  \
             a2 hz: expected 20, found 50 (live value differs)\n\
             1 node(s) drifted or silent\n"
                .to_owned()
        )
    );
}
