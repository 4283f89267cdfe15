//! Restart-only changes of a shard's primary without a write outage, on real replication
//! through the real binary: `cacheflow serve`, redis-server nodes (a primary and its
//! replicas, each started from its config file) and real agents that restart them. A
//! writer keeps writing during the rollout (`SET` then `WAIT 1`), following whichever
//! node is primary now; every write acknowledged by a replica is read back afterwards.
//! And a primary without a replica to fail over to: paused with the reason; restarted in
//! place with `onPrimaryRestart: in-place`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::gates::{cluster_yaml, config_of, port_of, Agent, Remote, Serve};
use crate::support::git::TestRepo;
use crate::support::servers::{RedisClient, Reply};
use crate::support::service::Service;

/// The role a node reports (`master`, `slave`), if it answers.
pub(crate) fn role_of(port: u16) -> Option<String> {
    let mut c = RedisClient::try_connect(port).ok()?;
    match c.try_cmd(&["ROLE"]).ok()? {
        Reply::Array(Some(items)) => items.first().and_then(Reply::as_str),
        _ => None,
    }
}

pub(crate) fn info_field(port: u16, field: &str) -> Option<String> {
    let mut c = RedisClient::try_connect(port).ok()?;
    let text = c.try_cmd(&["INFO", "replication"]).ok()?.as_str()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

pub(crate) fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the writer saw.
#[derive(Default)]
pub(crate) struct Writes {
    /// Keys acknowledged by at least one replica (`WAIT 1` answered ≥ 1), with values.
    pub(crate) acknowledged: BTreeMap<String, String>,
    /// Writes that failed or were not acknowledged in time.
    pub(crate) failed: u64,
    /// The longest time between two acknowledged writes.
    pub(crate) longest_gap: Duration,
    /// Each primary written to, in order (port).
    pub(crate) primaries: Vec<u16>,
    /// When the last write was acknowledged.
    pub(crate) last_ack: Option<Instant>,
}

/// A client writing `k<i>` as fast as it is acknowledged, to whichever declared node
/// reports role master now, until dropped.
pub(crate) struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Writes>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(crate) fn start(ports: Vec<u16>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Writes::default()));
        let (s, w) = (stop.clone(), writes.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<(u16, RedisClient)> = None;
            let mut last_ack = Instant::now();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = ports
                        .iter()
                        .find(|p| role_of(**p).as_deref() == Some("master"))
                        .and_then(|p| RedisClient::try_connect(*p).ok().map(|c| (*p, c)));
                    if let Some((p, _)) = &client {
                        let mut w = w.lock().unwrap();
                        if w.primaries.last() != Some(p) {
                            w.primaries.push(*p);
                        }
                    }
                }
                let Some((_, c)) = client.as_mut() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                i += 1;
                let (key, value) = (format!("k{i}"), format!("v{i}"));
                let set = c.try_cmd(&["SET", &key, &value]);
                let acked = match set {
                    Ok(r) if r.is_ok() => matches!(
                        c.try_cmd(&["WAIT", "1", "1000"]),
                        Ok(Reply::Int(n)) if n >= 1
                    ),
                    _ => false,
                };
                let mut w = w.lock().unwrap();
                if acked {
                    let now = Instant::now();
                    w.longest_gap = w.longest_gap.max(now - last_ack);
                    last_ack = now;
                    w.last_ack = Some(now);
                    w.acknowledged.insert(key, value);
                } else {
                    w.failed += 1;
                    drop(w);
                    // The node may not be the primary any more: find it again.
                    client = None;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Writer {
            stop,
            writes,
            thread: Some(thread),
        }
    }

    /// Stop once a write made after `since` is acknowledged (at most 60 s later); the
    /// time since the last acknowledged write counts as a gap too.
    pub(crate) fn stop_after_ack(mut self, since: Instant) -> Writes {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .writes
            .lock()
            .unwrap()
            .last_ack
            .is_none_or(|t| t < since)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let mut w = std::mem::take(&mut *self.writes.lock().unwrap());
        if let Some(last) = w.last_ack {
            w.longest_gap = w.longest_gap.max(last.elapsed());
        }
        w
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) const ROLLOUT: &str = "    stages: [1, '100%']\n    bake: 1s\n    warmup: 0s\n    \
                       applyTimeout: 30s\n    gates: {maxHitRatioDrop: 1, minOpsPerSec: 0}\n";

/// Declare `nodes` (a1 the primary of shard a, the others its replicas, agent-managed)
/// with `params` and push; the commit.
fn commit(
    work: &TestRepo,
    remote: &Remote,
    nodes: &[(&str, String)],
    params: &str,
    rollout: &str,
    message: &str,
) -> String {
    let declared: Vec<(&str, String, &str)> = nodes
        .iter()
        .map(|(id, s)| {
            let rest = if *id == "a1" {
                ", shard: a, role: primary, managed: agent"
            } else {
                ", shard: a, role: replica, managed: agent"
            };
            (*id, s.clone(), rest)
        })
        .collect();
    work.write(
        "clusters/cache.yaml",
        &cluster_yaml(params, &declared, rollout),
    );
    let id = work.commit(message);
    remote.push(work);
    id
}

/// Every declared node confirmed the first revision (its assignment has an outcome).
pub(crate) fn wait_all_confirmed(server: &Serve, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.rollout()["target"].is_null()
        || !ids.iter().all(|id| {
            server.try_get("/api/v1/clusters").is_some_and(|(_, b)| {
                b.contains(&format!("\"{id}\":{{\"generation\"")) && !b.contains("\"outcome\":null")
            })
        })
    {
        assert!(Instant::now() < deadline, "{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A primary and two replicas, each from its own config file (the replicas' files say
/// whom they follow), with links up.
pub(crate) fn shard() -> Vec<(&'static str, Service)> {
    let a1 = Service::redis("");
    let follow = format!("replicaof 127.0.0.1 {}\n", port_of(&a1));
    let a2 = Service::redis(&follow);
    let a3 = Service::redis(&follow);
    for r in [&a2, &a3] {
        wait_until("replication link up", Duration::from_secs(15), || {
            info_field(port_of(r), "master_link_status").as_deref() == Some("up")
        });
    }
    vec![("a1", a1), ("a2", a2), ("a3", a3)]
}

#[test]
fn a_restart_only_change_of_the_primary_fails_over_first_and_loses_no_acknowledged_write() {
    let nodes = shard();
    let ports: Vec<u16> = nodes.iter().map(|(_, s)| port_of(s)).collect();
    let declared: Vec<(&str, String)> = nodes.iter().map(|(id, s)| (*id, s.addr())).collect();
    let (remote, work) = (Remote::new(), TestRepo::new());
    commit(
        &work,
        &remote,
        &declared,
        "    databases: 16",
        ROLLOUT,
        "cache: databases 16, as the nodes run",
    );
    let server = Serve::start(&remote);
    let _agents: Vec<Agent> = nodes
        .iter()
        .map(|(id, s)| Agent::start(&server, id, s))
        .collect();
    wait_all_confirmed(&server, &["a1", "a2", "a3"]);
    let old_pid = nodes[0].1.pid();

    let writer = Writer::start(ports.clone());
    std::thread::sleep(Duration::from_secs(1));
    let change = commit(
        &work,
        &remote,
        &declared,
        "    databases: 32",
        ROLLOUT,
        "cache: databases 32 (start-only: every engine restarts)",
    );
    let phase = server.settled(&change, Duration::from_secs(180));
    let writes = writer.stop_after_ack(Instant::now());
    let journal = server.journal().join("\n");
    assert_eq!(phase, "completed", "{journal}");

    // The journal: replicas first, then the failover and its completion, then a1.
    let started = journal
        .lines()
        .find(|l| l.starts_with("cache: failover of shard a: a1 → "))
        .unwrap_or_else(|| panic!("no failover line:\n{journal}"));
    let to = started
        .strip_prefix("cache: failover of shard a: a1 → ")
        .and_then(|r| r.strip_suffix(" (a1 restarts as a replica)"))
        .unwrap_or_else(|| panic!("{started}"))
        .to_owned();
    assert!(["a2", "a3"].contains(&to.as_str()), "{started}");
    let done = format!("cache: failover of shard a done: {to} is the primary, a1 its replica");
    assert!(journal.contains(&done), "{journal}");
    let (i_to, i_a1) = (nodes.iter().position(|(id, _)| *id == to).unwrap(), 0usize);

    // Every node runs the change; a1 was restarted, as a replica of the new primary.
    for (id, s) in &nodes {
        assert_eq!(config_of(port_of(s), "databases"), "32", "{id}");
    }
    assert_ne!(nodes[i_a1].1.pid(), old_pid, "a1 was restarted");
    assert_eq!(role_of(ports[i_to]).as_deref(), Some("master"));
    assert_eq!(role_of(ports[i_a1]).as_deref(), Some("slave"));
    assert_eq!(
        info_field(ports[i_a1], "master_port"),
        Some(ports[i_to].to_string())
    );
    // Its config file says so too: a later restart keeps the roles.
    let conf = std::fs::read_to_string(nodes[i_a1].1.config_path()).unwrap();
    assert!(
        conf.contains(&format!("replicaof 127.0.0.1 {}", ports[i_to])),
        "{conf}"
    );

    // Zero lost: every acknowledged write is on the final primary; the old primary, a
    // replica now, has the last one.
    assert!(
        writes.acknowledged.len() > 100,
        "only {} writes acknowledged ({} failed)",
        writes.acknowledged.len(),
        writes.failed
    );
    let mut primary = RedisClient::connect(ports[i_to]);
    let lost: Vec<&String> = writes
        .acknowledged
        .iter()
        .filter(|(k, v)| primary.cmd(&["GET", k]).as_str().as_deref() != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let (last_key, last_value) = writes
        .acknowledged
        .iter()
        .max_by_key(|(k, _)| k[1..].parse::<u64>().unwrap())
        .unwrap();
    wait_until(
        "the old primary has the last write",
        Duration::from_secs(10),
        || {
            RedisClient::try_connect(ports[i_a1])
                .ok()
                .and_then(|mut c| c.try_cmd(&["GET", last_key]).ok())
                .and_then(|r| r.as_str())
                .as_deref()
                == Some(last_value.as_str())
        },
    );
    assert_eq!(
        writes.primaries,
        vec![ports[i_a1], ports[i_to]],
        "the writer wrote to a1, then to {to} only"
    );
    println!(
        "failover rollout: {} writes acknowledged, {} failed or not acknowledged, longest gap between acknowledged writes {} ms",
        writes.acknowledged.len(),
        writes.failed,
        writes.longest_gap.as_millis()
    );
    assert!(
        writes.longest_gap < Duration::from_secs(5),
        "longest write gap {:?}",
        writes.longest_gap
    );
}

#[test]
fn a_primary_without_a_healthy_replica_pauses_and_in_place_restarts_it_where_it_runs() {
    let a1 = Service::redis("");
    let a2 = Service::redis(&format!("replicaof 127.0.0.1 {}\n", port_of(&a1)));
    wait_until("replication link up", Duration::from_secs(15), || {
        info_field(port_of(&a2), "master_link_status").as_deref() == Some("up")
    });
    let declared = [("a1", a1.addr()), ("a2", a2.addr())];
    let (remote, work) = (Remote::new(), TestRepo::new());
    commit(
        &work,
        &remote,
        &declared,
        "    databases: 16",
        ROLLOUT,
        "cache: databases 16, as the nodes run",
    );
    let server = Serve::start(&remote);
    let _agents = [
        Agent::start(&server, "a1", &a1),
        Agent::start(&server, "a2", &a2),
    ];
    wait_all_confirmed(&server, &["a1", "a2"]);
    // The replica's engine stops: the primary has nowhere to move its role.
    drop(a2);
    std::thread::sleep(Duration::from_secs(3));
    let pid = a1.pid();

    let change = commit(
        &work,
        &remote,
        &declared,
        "    databases: 32",
        ROLLOUT,
        "cache: databases 32",
    );
    let phase = server.settled(&change, Duration::from_secs(60));
    let journal = server.journal().join("\n");
    assert_eq!(phase, "paused", "{journal}");
    let reason = "a1 must restart, and no replica of shard a can take the primary role: \
                  a2: unreachable; a person decides (bring a replica up and resume, or set \
                  onPrimaryRestart: in-place to restart it in place)";
    assert_eq!(server.rollout()["rollout"]["reason"], reason);
    assert!(
        journal.contains(&format!("cache: paused at batch 1: {reason}")),
        "{journal}"
    );
    assert_eq!(a1.pid(), pid, "a1 was not restarted");
    assert_eq!(config_of(port_of(&a1), "databases"), "16");

    // With `onPrimaryRestart: in-place` (a new content supersedes the paused rollout):
    // no failover, a1 restarts where it runs.
    let in_place = format!("{ROLLOUT}    onPrimaryRestart: in-place\n");
    let change = commit(
        &work,
        &remote,
        &declared,
        "    databases: 64",
        &in_place,
        "cache: databases 64, restarted in place",
    );
    let phase = server.settled(&change, Duration::from_secs(60));
    let journal = server.journal().join("\n");
    assert_eq!(phase, "completed", "{journal}");
    assert!(
        journal.contains(
            "cache: a1 restarts in place (onPrimaryRestart: in-place): shard a takes no \
             writes until it is back"
        ),
        "{journal}"
    );
    assert!(
        !journal.contains("cache: failover of shard a:"),
        "{journal}"
    );
    assert_ne!(a1.pid(), pid, "a1 was restarted");
    assert_eq!(config_of(port_of(&a1), "databases"), "64");
    assert_eq!(role_of(port_of(&a1)).as_deref(), Some("master"));
}

/// The benchmark of BENCHMARKS.md ("Write gap of a primary's restart", `bench/failover.sh`):
/// on the same three nodes, the longest gap a writer sees during a restart-only change
/// of the primary, restarted in place, then by failover. Ignored in the suite (it only
/// measures); the test above asserts the failover's bound.
#[test]
#[ignore]
fn bench_write_gap_in_place_then_failover() {
    let nodes = shard();
    let ports: Vec<u16> = nodes.iter().map(|(_, s)| port_of(s)).collect();
    let declared: Vec<(&str, String)> = nodes.iter().map(|(id, s)| (*id, s.addr())).collect();
    let (remote, work) = (Remote::new(), TestRepo::new());
    let in_place = format!("{ROLLOUT}    onPrimaryRestart: in-place\n");
    commit(
        &work,
        &remote,
        &declared,
        "    databases: 16",
        &in_place,
        "cache: databases 16",
    );
    let server = Serve::start(&remote);
    let _agents: Vec<Agent> = nodes
        .iter()
        .map(|(id, s)| Agent::start(&server, id, s))
        .collect();
    wait_all_confirmed(&server, &["a1", "a2", "a3"]);
    let mut results = Vec::new();
    for (mode, params, rollout) in [
        ("in-place", "    databases: 32", in_place.as_str()),
        ("failover", "    databases: 64", ROLLOUT),
    ] {
        let writer = Writer::start(ports.clone());
        std::thread::sleep(Duration::from_secs(1));
        let change = commit(&work, &remote, &declared, params, rollout, mode);
        let phase = server.settled(&change, Duration::from_secs(180));
        let writes = writer.stop_after_ack(Instant::now());
        assert_eq!(phase, "completed", "{:#?}", server.journal());
        let mut primary = ports
            .iter()
            .find(|p| role_of(**p).as_deref() == Some("master"))
            .map(|p| RedisClient::connect(*p))
            .expect("a primary");
        let lost = writes
            .acknowledged
            .iter()
            .filter(|(k, v)| primary.cmd(&["GET", k]).as_str().as_deref() != Some(v.as_str()))
            .count();
        results.push((mode, writes, lost));
    }
    for (mode, w, lost) in &results {
        println!(
            "write-gap {mode}: longest gap {} ms, {} acknowledged, {} failed, {lost} lost",
            w.longest_gap.as_millis(),
            w.acknowledged.len(),
            w.failed
        );
    }
}
