//! Replicas of `cacheflow serve` on a real three-member etcd cluster: three real
//! servers (`--etcd-endpoints`, a 3 s lease), six real redis-server nodes managed
//! directly, a local bare repository as the remote. The leader killed (SIGKILL) or
//! frozen (SIGSTOP past its lease) in the middle of a staged rollout; etcd losing a
//! member, then its quorum.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cacheflow::edges::forge::webhook::github_signature;

use crate::serve::{converge, Remote};
use crate::support::etcd::EtcdCluster;
use crate::support::fleet::Fleet;
use crate::support::git::{journal_messages, TestRepo};
use crate::support::servers::free_port;

const SECRET: &str = "webhook-secret-for-tests";
const LEASE_TTL: Duration = Duration::from_secs(3);
const LEADER_KEY: &str = "/cacheflow/shard/0/leader";
/// Four batches, each baking 2 s: a rollout long enough to kill its leader in.
const SLOW: &str = "stages: [1, 2, 4, '100%']\n    bake: 2s";

struct Replica {
    child: Child,
    port: u16,
    state: tempfile::TempDir,
}

impl Replica {
    fn start(remote: &Remote, etcd: &EtcdCluster, ttl: Duration) -> Replica {
        let port = free_port();
        Replica::start_as(remote, etcd, ttl, port, Some(&format!("replica-{port}")))
    }

    /// A replica on `port`, with `--replica-id id` (none: the hostname).
    fn start_as(
        remote: &Remote,
        etcd: &EtcdCluster,
        ttl: Duration,
        port: u16,
        id: Option<&str>,
    ) -> Replica {
        Replica::start_with_args(remote, etcd, ttl, port, id, &[])
    }

    /// As `start_as`, with `extra` arguments (`--shards N`).
    fn start_with_args(
        remote: &Remote,
        etcd: &EtcdCluster,
        ttl: Duration,
        port: u16,
        id: Option<&str>,
        extra: &[&str],
    ) -> Replica {
        let state = tempfile::Builder::new()
            .prefix("cacheflow-replica-")
            .tempdir()
            .unwrap();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--repo".into(),
            remote.url(),
            "--state-dir".into(),
            state.path().display().to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--advertise-url".into(),
            format!("http://127.0.0.1:{port}"),
            "--etcd-endpoints".into(),
            etcd.endpoints(),
            "--lease-ttl".into(),
            format!("{}s", ttl.as_secs()),
            "--poll-interval".into(),
            "1h".into(),
            "--direct-interval".into(),
            "200ms".into(),
            "--resume-grace".into(),
            "1s".into(),
        ];
        if let Some(id) = id {
            args.extend(["--replica-id".into(), id.into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let child = spawn(&args, &state.path().join("serve.log"));
        Replica { child, port, state }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn readyz(&self) -> Option<(u16, String)> {
        http(self.port, "GET", "/readyz", &[], b"")
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args([sig, &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid}");
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("serve.log")).unwrap_or_default()
    }

    /// The replica's own Git journal (its mirror).
    fn journal(&self) -> Vec<String> {
        let mirror = self.state.path().join("mirror");
        let Some(dir) = std::fs::read_dir(&mirror).ok().and_then(|d| {
            d.map(|e| e.unwrap().path())
                .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        }) else {
            return Vec::new();
        };
        match git2::Repository::open_bare(dir) {
            Ok(r) => journal_messages(&r),
            Err(_) => Vec::new(),
        }
    }

    /// A push webhook for `main`, signed like GitHub signs it.
    fn github_push(&self, delivery: &str) -> u16 {
        let body = br#"{"ref":"refs/heads/main","after":"0000"}"#;
        http(
            self.port,
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
        .map_or(0, |(code, _)| code)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A stopped process must be continued to die of SIGKILL promptly.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[String], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .env("CACHEFLOW_WEBHOOK_SECRET", SECRET)
        .env("CACHEFLOW_NODE_TOKEN_SECRET", "node-token-secret-for-tests")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(log).unwrap()))
        .spawn()
        .expect("start cacheflow serve")
}

fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text))
}

/// The three replicas, and the setup every test starts from: hz 20 everywhere,
/// rolled out by whichever replica leads.
struct Setup {
    etcd: EtcdCluster,
    fleet: Fleet,
    remote: Remote,
    work: TestRepo,
    replicas: Vec<Replica>,
}

impl Setup {
    fn start() -> Setup {
        Setup::start_with(LEASE_TTL)
    }

    fn start_with(ttl: Duration) -> Setup {
        let etcd = EtcdCluster::start();
        let fleet = Fleet::start();
        let remote = Remote::new();
        let work = TestRepo::new();
        work.write(
            "clusters/cache.yaml",
            &fleet.cluster_yaml_with("    hz: 20", SLOW),
        );
        work.commit("cache: hz 20");
        remote.push(&work, false);
        let replicas = (0..3)
            .map(|_| Replica::start(&remote, &etcd, ttl))
            .collect();
        let mut s = Setup {
            etcd,
            fleet,
            remote,
            work,
            replicas,
        };
        s.wait_leader(None, Duration::from_secs(60));
        converge(&s.fleet, "hz", "20", Duration::from_secs(60));
        s
    }

    /// The replica that says it is ready (the leader); the others must say standby.
    fn leader(&mut self) -> Option<usize> {
        let mut ready = Vec::new();
        for (i, r) in self.replicas.iter_mut().enumerate() {
            if r.alive() && r.readyz().is_some_and(|(code, _)| code == 200) {
                ready.push(i);
            }
        }
        assert!(ready.len() <= 1, "two replicas ready at once: {ready:?}");
        ready.first().copied()
    }

    /// Wait until one replica other than `not` leads and is ready.
    fn wait_leader(&mut self, not: Option<usize>, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            if let Some(i) = self.leader().filter(|i| Some(*i) != not) {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no replica leads within {within:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The leader key's value (the leader's advertised URL) and its create revision.
    fn leader_key(&self) -> Option<(String, i64)> {
        self.etcd.get(LEADER_KEY)
    }

    fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("--- replica {i} ({}):\n{}", r.url(), tail(&r.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Commit `hz` with the slow rollout and tell the leader.
    fn roll_out(&mut self, hz: &str, leader: usize) -> String {
        self.work.write(
            "clusters/cache.yaml",
            &self.fleet.cluster_yaml_with(&format!("    hz: {hz}"), SLOW),
        );
        let commit = self.work.commit(&format!("cache: hz {hz}"));
        self.remote.push(&self.work, false);
        assert_eq!(self.replicas[leader].github_push(&format!("hz-{hz}")), 202);
        commit
    }

    /// Wait until the remote's journal (pushed by the leader) says `commit` reached
    /// every node; its messages.
    fn wait_remote_completed(&self, commit: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let journal = journal_messages(&self.remote.repository());
            if journal
                .iter()
                .flat_map(|m| m.lines())
                .any(|l| l.contains(commit) && l.ends_with(" reached every node"))
            {
                return journal;
            }
            assert!(
                Instant::now() < deadline,
                "the remote's journal does not show {commit} completed: {journal:#?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every batch of `commit`'s rollout assigned exactly once and in order, every node
/// confirmed exactly once, and every journal commit with at most one parent.
fn assert_linear_without_duplicates(
    remote: &Remote,
    journal: &[String],
    commit: &str,
    nodes: &Fleet,
) {
    let repo = remote.repository();
    let head = repo.refname_to_id("refs/cacheflow/journal").unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push(head).unwrap();
    for oid in walk {
        let c = repo.find_commit(oid.unwrap()).unwrap();
        assert!(c.parent_count() <= 1, "a journal merge: {}", c.id());
    }
    let lines: Vec<&str> = journal
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| l.contains(commit))
        .collect();
    let assigned: Vec<String> = lines
        .iter()
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
    for (id, _) in &nodes.nodes {
        let confirmations = lines
            .iter()
            .filter(|l| **l == format!("cache: {id} applied {commit}"))
            .count();
        assert_eq!(confirmations, 1, "{id}: {journal:#?}");
    }
}

/// Wait until the replica's own journal has a line with `commit` containing `what`.
fn until_journaled(r: &Replica, commit: &str, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !r
        .journal()
        .iter()
        .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
        .any(|l| l.contains(commit) && l.contains(what))
    {
        assert!(
            Instant::now() < deadline,
            "no journal line with {commit} and `{what}`: {:#?}\n{}",
            r.journal(),
            tail(&r.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every node's `hz` for `during` stays as `values` were.
fn nodes_keep(fleet: &Fleet, values: &BTreeMap<String, String>, during: Duration) {
    let until = Instant::now() + during;
    while Instant::now() < until {
        let now: BTreeMap<String, String> = fleet.config("hz").into_iter().collect();
        assert_eq!(&now, values, "a node changed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_leader_killed_in_the_middle_of_a_rollout_another_replica_finishes_it() {
    let mut s = Setup::start();
    let leader = s.wait_leader(None, Duration::from_secs(30));
    // The standbys say so and send agents to the leader.
    for (i, r) in s.replicas.iter().enumerate().filter(|(i, _)| *i != leader) {
        let (code, text) = r.readyz().expect("a standby answers");
        assert_eq!(code, 503, "replica {i}: {text}");
        assert!(text.contains("standby replica"), "{text}");
        let (code, text) = http(r.port, "POST", "/api/v1/nodes/a1/report", &[], b"{}").unwrap();
        assert_eq!(code, 307, "{text}");
        assert!(
            text.contains(&format!(
                "location: {}/api/v1/nodes/a1/report",
                s.replicas[leader].url()
            )),
            "{text}"
        );
    }
    let (url, token) = s.leader_key().expect("a leader key");
    assert_eq!(url, s.replicas[leader].url());

    let commit = s.roll_out("30", leader);
    until_journaled(
        &s.replicas[leader],
        &commit,
        "batch 2 of 4 assigned",
        Duration::from_secs(60),
    );
    s.replicas[leader].kill9();
    let killed = Instant::now();

    // Another replica holds the leader key within the lease and 5 s.
    loop {
        match s.leader_key() {
            Some((u, t)) if u != url => {
                assert_ne!(t, token);
                break;
            }
            _ => {}
        }
        assert!(
            killed.elapsed() < LEASE_TTL + Duration::from_secs(5),
            "no new leader within {:?}:\n{}",
            LEASE_TTL + Duration::from_secs(5),
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let next = s.wait_leader(Some(leader), Duration::from_secs(30));
    assert_ne!(next, leader);

    converge(&s.fleet, "hz", "30", Duration::from_secs(60));
    let journal = s.wait_remote_completed(&commit, Duration::from_secs(60));
    assert_linear_without_duplicates(&s.remote, &journal, &commit, &s.fleet);
    assert!(
        journal
            .iter()
            .any(|m| m.contains("leads shard 0 (fencing token")),
        "{journal:#?}"
    );
}

#[test]
fn a_leader_frozen_past_its_lease_writes_nothing_and_changes_no_node_when_it_wakes() {
    let mut s = Setup::start();
    let old = s.wait_leader(None, Duration::from_secs(30));
    let commit = s.roll_out("30", old);
    until_journaled(
        &s.replicas[old],
        &commit,
        "batch 2 of 4 assigned",
        Duration::from_secs(60),
    );
    // Frozen as soon as batch 2 is assigned: its in-process agents may be in the middle
    // of their apply (between reading a node's values and its CONFIG SET, or before the
    // CONFIG REWRITE). Woken, they send nothing more (the fence on node writes), and a
    // put-back never undoes what the new leader set since.
    s.replicas[old].signal("-STOP");

    // Another replica takes over and finishes the rollout; then a new one, to 40.
    let next = s.wait_leader(Some(old), Duration::from_secs(30));
    // What the frozen leader wrote before it froze (read once it surely has: `kill`
    // returns before the signal stops a process in the middle of a write).
    let frozen_journal = s.replicas[old].journal();
    converge(&s.fleet, "hz", "30", Duration::from_secs(60));
    s.wait_remote_completed(&commit, Duration::from_secs(60));
    let newer = s.roll_out("40", next);
    converge(&s.fleet, "hz", "40", Duration::from_secs(60));
    let journal = s.wait_remote_completed(&newer, Duration::from_secs(60));
    let (url, token) = s.leader_key().expect("a leader key");
    assert_eq!(url, s.replicas[next].url());

    // The frozen leader wakes with its bake timers due and its agents mid-loop.
    s.replicas[old].signal("-CONT");
    let values: BTreeMap<String, String> = s.fleet.config("hz").into_iter().collect();
    assert!(
        values.values().all(|v| v == "40"),
        "{values:?}\n--- the frozen leader:\n{}\n{}",
        tail(&s.replicas[old].log(), 60),
        s.logs()
    );
    nodes_keep(&s.fleet, &values, Duration::from_secs(6));
    // It stepped down: a standby again, its Git journal as it was when it froze, and
    // the leader key and the remote's journal are the new leader's alone.
    let (code, text) = s.replicas[old].readyz().expect("the old leader answers");
    assert_eq!(code, 503, "{text}\n{}", tail(&s.replicas[old].log(), 40));
    assert!(text.contains("standby replica"), "{text}");
    // Its Git journal holds nothing of the new leader's term: what it has beyond the
    // journal read while it was frozen can only be an entry etcd committed under its
    // own fence just before the freeze (the answer was on its way when it stopped),
    // written into its Git copy when it woke. Its number is below the new leader's
    // first entry.
    let woke = s.replicas[old].journal();
    assert!(
        woke.starts_with(&frozen_journal),
        "{woke:#?}\n{frozen_journal:#?}"
    );
    let taken_over = journal
        .iter()
        .find(|m| m.contains(&format!("leads shard 0 (fencing token {token})")))
        .and_then(|m| entry_number(m))
        .expect("the new leader's first entry, numbered");
    for m in &woke[frozen_journal.len()..] {
        assert!(
            entry_number(m).is_some_and(|n| n < taken_over),
            "written by the old leader after the new one took over: {m}"
        );
    }
    assert_eq!(s.leader_key(), Some((url, token)));
    assert!(
        s.replicas[old].log().contains("no longer leads"),
        "{}",
        tail(&s.replicas[old].log(), 40)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(journal_messages(&s.remote.repository()), journal);
    assert_linear_without_duplicates(&s.remote, &journal, &commit, &s.fleet);
}

/// The number of the replicated journal's entry a Git journal message carries
/// (its `Cacheflow-Entry: N` trailer).
fn entry_number(message: &str) -> Option<u64> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("Cacheflow-Entry: "))
        .and_then(|n| n.trim().parse().ok())
}

#[test]
fn etcd_losing_a_member_interrupts_nothing_and_losing_its_quorum_stops_every_replica_until_it_is_back(
) {
    // etcd's own election after its leader dies takes a second or two more on a loaded
    // machine: a lease that outlives it (as the default 15 s does, by far).
    let ttl = Duration::from_secs(6);
    let mut s = Setup::start_with(ttl);
    let leader = s.wait_leader(None, Duration::from_secs(30));
    let before = s.leader_key().expect("a leader key");

    // One member down: etcd's raft leader, the worst one to lose (the cluster elects
    // another; until it has, no write is taken).
    let gone = s.etcd.raft_leader().expect("etcd has a leader");
    s.etcd.kill(gone);
    let commit = s.roll_out("30", leader);
    converge(&s.fleet, "hz", "30", Duration::from_secs(60));
    let journal = s.wait_remote_completed(&commit, Duration::from_secs(60));
    assert_linear_without_duplicates(&s.remote, &journal, &commit, &s.fleet);
    assert_eq!(s.leader_key(), Some(before.clone()), "the leader changed");
    assert_eq!(s.leader(), Some(leader));

    // Quorum lost in the middle of a rollout: within the lease no replica acts.
    let newer = s.roll_out("40", leader);
    until_journaled(
        &s.replicas[leader],
        &newer,
        "batch 2 of 4 assigned",
        Duration::from_secs(60),
    );
    s.etcd.kill((gone + 1) % 3);
    let lost = Instant::now();
    while s.leader().is_some() {
        assert!(
            lost.elapsed() < ttl + Duration::from_secs(10),
            "a replica still says it leads without etcd's quorum:\n{}",
            s.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    let values: BTreeMap<String, String> = s.fleet.config("hz").into_iter().collect();
    nodes_keep(&s.fleet, &values, Duration::from_secs(5));
    assert!(s.leader().is_none(), "{}", s.logs());

    // Quorum back: a replica leads and the rollout resumes where it was.
    s.etcd.start_member(gone);
    s.etcd.start_member((gone + 1) % 3);
    s.wait_leader(None, Duration::from_secs(60));
    converge(&s.fleet, "hz", "40", Duration::from_secs(60));
    let journal = s.wait_remote_completed(&newer, Duration::from_secs(60));
    assert_linear_without_duplicates(&s.remote, &journal, &newer, &s.fleet);
}

/// The live replicas as the library reads them.
fn live_replicas(etcd: &EtcdCluster) -> Vec<(String, String)> {
    let client = cacheflow::edges::etcd::EtcdClient::new(&cacheflow::edges::etcd::EtcdOptions {
        endpoints: etcd.endpoints().split(',').map(str::to_owned).collect(),
        timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .expect("an etcd client");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(cacheflow::edges::etcd::members::live(&client, "/cacheflow"))
        .expect("the live replicas")
}

/// Wait until the membership key `id` holds `url` (`None`: until it is gone).
fn until_member(
    etcd: &EtcdCluster,
    id: &str,
    url: Option<&str>,
    within: Duration,
    logs: &dyn Fn() -> String,
) {
    let key = format!("/cacheflow/replicas/{id}");
    let deadline = Instant::now() + within;
    loop {
        let now = etcd.get(&key).map(|(v, _)| v);
        if now.as_deref() == url {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} holds {now:?}, not {url:?}, after {within:?}:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_replica_keeps_a_membership_key_under_its_id_while_it_lives() {
    let etcd = EtcdCluster::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("clusters/.keep", "");
    work.commit("no clusters yet");
    remote.push(&work, false);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("the hostname")
        .trim()
        .to_owned();
    // alpha: a lease far longer than the test waits, so its key can only go by revoking.
    let long = Duration::from_secs(60);
    let mut alpha = Replica::start_as(&remote, &etcd, long, free_port(), Some("alpha"));
    let mut beta = Replica::start_as(&remote, &etcd, LEASE_TTL, free_port(), Some("beta"));
    let mut named = Replica::start_as(&remote, &etcd, LEASE_TTL, free_port(), None);
    let logs = |rs: &[&Replica]| {
        rs.iter()
            .map(|r| format!("--- {}:\n{}", r.url(), tail(&r.log(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let within = Duration::from_secs(60);
    until_member(&etcd, "alpha", Some(&alpha.url()), within, &|| {
        logs(&[&alpha])
    });
    until_member(&etcd, "beta", Some(&beta.url()), within, &|| logs(&[&beta]));
    // Without --replica-id: the hostname.
    until_member(&etcd, &hostname, Some(&named.url()), within, &|| {
        logs(&[&named])
    });
    // The list the placement of shard leaders is computed over, in id order.
    let mut expected = vec![
        ("alpha".to_owned(), alpha.url()),
        ("beta".to_owned(), beta.url()),
        (hostname.clone(), named.url()),
    ];
    expected.sort();
    assert_eq!(live_replicas(&etcd), expected);

    // SIGKILL: the key goes with its lease (3 s), the others' stay.
    beta.kill9();
    until_member(&etcd, "beta", None, Duration::from_secs(30), &|| {
        logs(&[&beta])
    });
    assert_eq!(
        etcd.get("/cacheflow/replicas/alpha").map(|(v, _)| v),
        Some(alpha.url())
    );
    named.kill9();
    until_member(&etcd, &hostname, None, Duration::from_secs(30), &|| {
        logs(&[&named])
    });
    assert_eq!(
        live_replicas(&etcd),
        vec![("alpha".to_owned(), alpha.url())]
    );

    // SIGTERM: the lease is revoked, the key goes at once (well before its 60 s).
    alpha.signal("-TERM");
    let stopped = Instant::now();
    until_member(&etcd, "alpha", None, Duration::from_secs(30), &|| {
        logs(&[&alpha])
    });
    assert!(stopped.elapsed() < long, "{}", logs(&[&alpha]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while alpha.alive() {
        assert!(
            Instant::now() < deadline,
            "alpha did not stop:\n{}",
            logs(&[&alpha])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn shards_above_one_without_etcd_are_refused_with_their_reason() {
    let state = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["serve", "--repo", "/nonexistent-repo", "--state-dir"])
            .arg(state.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("CACHEFLOW_WEBHOOK_SECRET", SECRET)
            .env("CACHEFLOW_NODE_TOKEN_SECRET", "node-token-secret-for-tests")
            .output()
            .expect("run cacheflow serve");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--shards", "2"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--shards 2 needs --etcd-endpoints"), "{err}");
    let (code, err) = run(&["--shards", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--shards"), "{err}");
}

/// Two cluster names the placement puts on shards 0 and 1 of 2, and two replica ids it
/// makes the preferred leaders of shards 0 and 1 (computed, not assumed: the hashes
/// decide).
fn split_names() -> ((String, String), (String, String)) {
    use cacheflow::pure::shards::{Balance, Leaders, ShardMap};
    let balance = Balance::default();
    let candidates: Vec<String> = (0..64).map(|i| format!("cache-{i}")).collect();
    let clusters = candidates
        .iter()
        .flat_map(|x| candidates.iter().map(move |y| (x.clone(), y.clone())))
        .find(|(x, y)| {
            x != y
                && ShardMap::assign([x.as_str(), y.as_str()], 2, &balance)
                    .is_ok_and(|m| m.shard_of(x) == Some(0) && m.shard_of(y) == Some(1))
        })
        .expect("two clusters on two shards");
    let ids: Vec<String> = (0..64).map(|i| format!("replica-{i}")).collect();
    let replicas = ids
        .iter()
        .flat_map(|p| ids.iter().map(move |q| (p.clone(), q.clone())))
        .find(|(p, q)| {
            p != q
                && Leaders::place(2, &[p.as_str(), q.as_str()], &balance).is_ok_and(|l| {
                    l.leader_of(0) == Some(p.as_str()) && l.leader_of(1) == Some(q.as_str())
                })
        })
        .expect("two replicas leading one shard each");
    (clusters, replicas)
}

/// Wait until `r` says it is ready and leads exactly `shards` (its /readyz).
fn until_leads(r: &Replica, shards: &str, within: Duration, logs: &dyn Fn() -> String) {
    let want = format!("ready: leads shard(s) {shards} of 2");
    let deadline = Instant::now() + within;
    loop {
        let got = r.readyz();
        if got
            .as_ref()
            .is_some_and(|(code, text)| *code == 200 && text.contains(&want))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not say \"{want}\" within {within:?} (last: {got:?}):\n{}",
            r.url(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The messages of `reference` in `repo`, oldest first.
fn messages_of(repo: &git2::Repository, reference: &str) -> Vec<String> {
    let Ok(head) = repo.refname_to_id(reference) else {
        return Vec::new();
    };
    let mut walk = repo.revwalk().unwrap();
    walk.push(head).unwrap();
    let mut out: Vec<String> = walk
        .map(|oid| {
            let c = repo.find_commit(oid.unwrap()).unwrap();
            c.message().unwrap().to_owned()
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn two_shards_over_two_replicas_one_killed_its_shards_move_and_the_others_do_not() {
    let ((x, y), (p_id, q_id)) = split_names();
    let etcd = EtcdCluster::start();
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    let fast = "stages: [1, '100%']\n    bake: 0s";
    let write = |hz: &str| {
        work.write(
            &format!("clusters/{x}.yaml"),
            &fleet.cluster_of(&x, "a", &format!("    hz: {hz}"), fast),
        );
        work.write(
            &format!("clusters/{y}.yaml"),
            &fleet.cluster_of(&y, "b", &format!("    hz: {hz}"), fast),
        );
    };
    write("20");
    work.commit("two clusters: hz 20");
    remote.push(&work, false);
    let shards = ["--shards", "2"];
    let (p_port, q_port) = (free_port(), free_port());
    let p = Replica::start_with_args(&remote, &etcd, LEASE_TTL, p_port, Some(&p_id), &shards);
    let mut q = Replica::start_with_args(&remote, &etcd, LEASE_TTL, q_port, Some(&q_id), &shards);
    let logs = |rs: &[&Replica]| {
        rs.iter()
            .map(|r| format!("--- {}:\n{}", r.url(), tail(&r.log(), 40)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let within = Duration::from_secs(60);
    // Each leads its preferred shard (a shard taken by the first one up is handed over
    // once the other is live).
    until_leads(&p, "0", within, &|| logs(&[&p, &q]));
    until_leads(&q, "1", within, &|| logs(&[&p, &q]));
    converge(&fleet, "hz", "20", within);
    let key = |s: u32| etcd.get(&format!("/cacheflow/shard/{s}/leader"));
    let (url0, token0) = key(0).expect("shard 0's leader key");
    let (url1, token1) = key(1).expect("shard 1's leader key");
    assert_eq!(
        (url0.as_str(), url1.as_str()),
        (p.url().as_str(), q.url().as_str())
    );
    assert_eq!(
        etcd.get("/cacheflow/shards").map(|(v, _)| v).as_deref(),
        Some("2")
    );
    // A report reaches its node's shard leader whichever replica the agent called.
    // (503 with Retry-After while a replica has not yet read who took a shard.)
    let report = |port: u16, node: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = format!("/api/v1/nodes/{node}/report");
            let (code, text) = http(port, "POST", &path, &[], b"{}").unwrap();
            if code != 503 || Instant::now() > deadline {
                return (code, text);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (code, text) = report(p.port, "b1");
    assert_eq!(code, 307, "{text}");
    assert!(
        text.contains(&format!("location: {}/api/v1/nodes/b1/report", q.url())),
        "{text}"
    );
    let (code, text) = report(q.port, "a2");
    assert_eq!(code, 307, "{text}");
    assert!(
        text.contains(&format!("location: {}/api/v1/nodes/a2/report", p.url())),
        "{text}"
    );
    // A replica given another number of shards is refused.
    let odd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["serve", "--repo", &remote.url(), "--state-dir"])
        .arg(odd.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--etcd-endpoints", &etcd.endpoints(), "--replica-id", "odd"])
        .args(["--advertise-url", "http://127.0.0.1:9", "--shards", "3"])
        .env("CACHEFLOW_WEBHOOK_SECRET", SECRET)
        .env("CACHEFLOW_NODE_TOKEN_SECRET", "node-token-secret-for-tests")
        .output()
        .expect("run cacheflow serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--shards 3: the replicas under /cacheflow use 2 shards"),
        "{err}"
    );

    // q killed: its shard moves to p within the lease and 5 s; shard 0 stays where it
    // was, under the same fencing token.
    q.kill9();
    let killed = Instant::now();
    loop {
        if let Some((u, t)) = key(1) {
            if u == p.url() {
                assert_ne!(t, token1);
                break;
            }
        }
        assert!(
            killed.elapsed() < LEASE_TTL + Duration::from_secs(5),
            "shard 1 did not move within {:?}:\n{}",
            LEASE_TTL + Duration::from_secs(5),
            logs(&[&p, &q])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    until_leads(&p, "0, 1", within, &|| logs(&[&p]));
    assert_eq!(key(0), Some((url0.clone(), token0)), "shard 0 moved");

    // p now rolls out both clusters; each shard journals its own.
    write("30");
    let commit = work.commit("two clusters: hz 30");
    remote.push(&work, false);
    assert_eq!(p.github_push("hz-30"), 202, "{}", logs(&[&p]));
    converge(&fleet, "hz", "30", within);

    // q back: shard 1 returns to it, shard 0 does not move.
    q = Replica::start_with_args(&remote, &etcd, LEASE_TTL, q_port, Some(&q_id), &shards);
    until_leads(&q, "1", within, &|| logs(&[&p, &q]));
    until_leads(&p, "0", within, &|| logs(&[&p, &q]));
    assert_eq!(key(0), Some((url0, token0)), "shard 0 moved");

    // The remote holds one journal per shard, each with the outcome of its own
    // cluster only, and `history` on a fresh clone shows both.
    let deadline = Instant::now() + within;
    let done = |text: &[String], cluster: &str| {
        text.iter()
            .flat_map(|m| m.lines())
            .any(|l| l == format!("{cluster}: {commit} reached every node"))
    };
    loop {
        let repo = remote.repository();
        let j0 = messages_of(&repo, "refs/cacheflow/shards/0/journal");
        let j1 = messages_of(&repo, "refs/cacheflow/shards/1/journal");
        if done(&j0, &x) && done(&j1, &y) {
            assert!(!done(&j0, &y) && !done(&j1, &x), "{j0:#?}\n{j1:#?}");
            assert!(repo.refname_to_id("refs/cacheflow/journal").is_err());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the remote's shard journals do not show {commit} completed:\n{j0:#?}\n{j1:#?}\n{}",
            logs(&[&p, &q])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The notes go with the next push after the entry.
    let noted = |s: u32, cluster: &str| {
        let repo = remote.repository();
        let oid = git2::Oid::from_str(&commit).unwrap();
        repo.find_note(Some(&format!("refs/notes/cacheflow-shard-{s}")), oid)
            .ok()
            .and_then(|n| n.message().ok().map(str::to_owned))
            .is_some_and(|m| m.contains(&format!("{cluster}: completed")))
    };
    let deadline = Instant::now() + within;
    while !(noted(0, &x) && noted(1, &y)) {
        assert!(
            Instant::now() < deadline,
            "the remote has no notes of {commit} on both shards (its refs: {:?}):\n{}",
            remote
                .repository()
                .references()
                .unwrap()
                .flatten()
                .map(|r| r.name().unwrap_or("?").to_owned())
                .collect::<Vec<_>>(),
            [&p, &q]
                .iter()
                .map(|r| {
                    let mirror = r.state.path().join("mirror");
                    let dir = std::fs::read_dir(&mirror)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                        .unwrap();
                    let repo = git2::Repository::open_bare(dir).unwrap();
                    let refs: Vec<String> = repo
                        .references()
                        .unwrap()
                        .flatten()
                        .map(|r| r.name().unwrap_or("?").to_owned())
                        .collect();
                    format!("{refs:?}\n{}", r.log())
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let clone = tempfile::tempdir().unwrap();
    let dir = clone.path().join("config");
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&[
        "clone",
        "--quiet",
        "--branch",
        "main",
        &remote.url(),
        dir.to_str().unwrap(),
    ]);
    git(&[
        "-C",
        dir.to_str().unwrap(),
        "fetch",
        "--quiet",
        "origin",
        "refs/notes/*:refs/notes/*",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args([
            "history",
            "--repo",
            dir.to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .expect("cacheflow history");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{text}{err}");
    let entries: serde_json::Value = serde_json::from_str(&text).expect("history JSON");
    let newest = &entries.as_array().expect("a list")[0];
    assert_eq!(newest["commit"], commit.as_str());
    let outcomes: Vec<&str> = newest["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    for cluster in [&x, &y] {
        assert!(
            outcomes
                .iter()
                .any(|o| o.starts_with(&format!("{cluster}: completed"))),
            "{outcomes:#?}"
        );
    }
    drop(p);
}

/// `n` bytes that zlib cannot shrink, as a cluster's file.
fn incompressible(n: usize, seed: u64) -> Vec<u8> {
    crate::support::noise(seed, n)
}

/// A client of `etcd`'s members, as a replica makes one.
fn etcd_client(etcd: &EtcdCluster) -> std::sync::Arc<cacheflow::edges::etcd::EtcdClient> {
    use cacheflow::edges::etcd::{EtcdClient, EtcdOptions};
    let options = EtcdOptions {
        endpoints: etcd.endpoints().split(',').map(str::to_owned).collect(),
        timeout: Duration::from_secs(5),
        ..EtcdOptions::default()
    };
    std::sync::Arc::new(EtcdClient::new(&options).unwrap())
}

/// Create `key` as an election would (only if it does not exist): its create revision,
/// the fencing token.
async fn elect(client: &cacheflow::edges::etcd::EtcdClient, key: &str) -> i64 {
    use cacheflow::edges::etcd::{Compare, Op};
    let won = client
        .txn(
            &[Compare::CreateRevision {
                key: key.to_owned(),
                revision: 0,
            }],
            &[Op::Put {
                key: key.to_owned(),
                value: b"me".to_vec(),
                lease: 0,
            }],
        )
        .await
        .unwrap();
    assert!(won.succeeded, "{key} exists already");
    won.revision
}

#[test]
fn an_entry_and_its_new_files_go_to_etcd_in_one_transaction_unless_they_are_too_large() {
    use cacheflow::edges::etcd::journal::{Fence, FencedJournal};

    let etcd = EtcdCluster::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = etcd_client(&etcd);
        let leader = "/t/shard/0/leader".to_owned();
        let token = elect(&client, &leader).await;
        let shard = "/t/shard/0".to_owned();
        let mut journal = FencedJournal::new(
            Fence::new(client.clone(), shard.clone(), leader.clone(), token),
            None,
        );
        let revision_of_seq = || async {
            client
                .get(&format!("{shard}/journal/seq"))
                .await
                .unwrap()
                .unwrap()
                .mod_revision
        };

        // Two small clusters: the files ride in the entry's own transaction.
        let small: BTreeMap<String, Option<Vec<u8>>> = [
            ("a".to_owned(), Some(b"{\"hz\":\"10\"}".to_vec())),
            ("b".to_owned(), Some(incompressible(4_000, 7))),
        ]
        .into_iter()
        .collect();
        assert_eq!(journal.write("one", b"{}", &small).await.unwrap(), 1);
        assert_eq!(revision_of_seq().await, token + 1, "one transaction");

        // A file of 1.2 MiB that does not compress: written first, in its own
        // transaction; the entry after it.
        let before = revision_of_seq().await;
        let large: BTreeMap<String, Option<Vec<u8>>> = [
            ("a".to_owned(), None),
            ("b".to_owned(), Some(incompressible(1_200_000, 9))),
        ]
        .into_iter()
        .collect();
        assert_eq!(journal.write("two", b"{}", &large).await.unwrap(), 2);
        assert_eq!(revision_of_seq().await, before + 2, "two transactions");

        // Both read back whole, and the first file of b is gone from the blobs.
        let stored = FencedJournal::load(&client, &shard).await.unwrap().unwrap();
        assert_eq!(stored.seq, 2);
        assert_eq!(stored.clusters["a"], b"{\"hz\":\"10\"}".to_vec());
        assert_eq!(stored.clusters["b"], incompressible(1_200_000, 9));
        assert_eq!(stored.blobs.len(), 2, "{:?}", stored.blobs);
        let log: Vec<&str> = stored.log.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(log, ["one", "two"]);
    });
}

#[test]
fn the_entries_of_two_shards_led_by_one_replica_go_to_etcd_as_one_transaction_and_a_deposed_shard_is_refused_alone(
) {
    use cacheflow::edges::etcd::group::GroupCommit;
    use cacheflow::edges::etcd::journal::{Fence, FencedJournal, JournalError};
    use cacheflow::edges::etcd::Op;

    let etcd = EtcdCluster::start();
    // One thread: both writers send their transaction before the group's task runs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = etcd_client(&etcd);
        let group = GroupCommit::start(client.clone());
        let mut journals = Vec::new();
        for s in 0..2 {
            let leader = format!("/g/shard/{s}/leader");
            let token = elect(&client, &leader).await;
            let fence = Fence::new(client.clone(), format!("/g/shard/{s}"), leader, token)
                .grouped(Some(group.clone()));
            journals.push(FencedJournal::new(fence, None));
        }
        let seq_revision = |s: u32| {
            let client = client.clone();
            async move {
                let kv = client.get(&format!("/g/shard/{s}/journal/seq")).await;
                kv.unwrap().map(|kv| kv.mod_revision)
            }
        };
        let files = |hz: &str| -> BTreeMap<String, Option<Vec<u8>>> {
            [(
                "c".to_owned(),
                Some(format!("{{\"hz\":\"{hz}\"}}").into_bytes()),
            )]
            .into_iter()
            .collect()
        };

        let (j0, j1) = journals.split_at_mut(1);
        let (f0, f1) = (files("10"), files("11"));
        let (a, b) = tokio::join!(
            j0[0].write("zero", b"{}", &f0),
            j1[0].write("one", b"{}", &f1),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
        let (r0, r1) = (
            seq_revision(0).await.unwrap(),
            seq_revision(1).await.unwrap(),
        );
        assert_eq!(r0, r1, "both entries in one transaction");

        // Shard 1 is led elsewhere now: its entry is refused, shard 0's still goes.
        client
            .txn(
                &[],
                &[Op::Delete {
                    key: "/g/shard/1/leader".to_owned(),
                }],
            )
            .await
            .unwrap();
        elect(&client, "/g/shard/1/leader").await;
        let (f0, f1) = (files("20"), files("21"));
        let (a, b) = tokio::join!(
            j0[0].write("zero again", b"{}", &f0),
            j1[0].write("one again", b"{}", &f1),
        );
        assert_eq!(a.unwrap(), 2);
        assert!(matches!(b, Err(JournalError::Fenced { .. })), "{b:?}");
        assert!(seq_revision(0).await.unwrap() > r0);
        assert_eq!(seq_revision(1).await.unwrap(), r1);
        let stored = FencedJournal::load(&client, "/g/shard/1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.seq, 1);
        assert_eq!(stored.clusters["c"], b"{\"hz\":\"11\"}".to_vec());
    });
}

#[test]
fn a_shared_validation_serves_only_the_commit_it_was_made_for() {
    use cacheflow::edges::source::ConfigRepo;
    use cacheflow::flow::pipeline::intake;

    let repo = TestRepo::new();
    let cluster = |hz: &str| {
        format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  engine: redis\n  parameters:\n    hz: {hz}\n  nodes:\n    - {{id: a1, address: '127.0.0.1:1', shard: a, role: primary}}\n"
        )
    };
    repo.write("clusters/cache.yaml", &cluster("20"));
    let first = repo.commit("hz 20");
    repo.write("clusters/cache.yaml", &cluster("bogus"));
    let second = repo.commit("hz bogus");
    let config = ConfigRepo::open(repo.path().to_str().unwrap(), None).unwrap();
    let hz = |commit: &str| -> Result<String, usize> {
        match intake::validated(&config, commit).unwrap() {
            Ok(d) => Ok(d.clusters["cache"].parameters["hz"].value.clone()),
            Err(diagnostics) => Err(diagnostics.len()),
        }
    };

    intake::share_validations();
    assert_eq!(hz(&first), Ok("20".to_owned()));
    assert_eq!(hz(&first), Ok("20".to_owned()), "the shared one");
    assert_eq!(hz(&second), Err(1));
    assert_eq!(hz(&second), Err(1), "the shared one");
    assert_eq!(hz(&first), Ok("20".to_owned()));
}
