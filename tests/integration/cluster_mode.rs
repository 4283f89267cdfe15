//! Redis Cluster mode (`mode: cluster`) on a real 6-node cluster made with `redis-cli
//! --cluster create ... --cluster-replicas 1` on loopback, through the real binary: a
//! run-time change rolled out one node per shard at a time behind the cluster-state
//! gate; a restart-only change whose primaries hand their role to their replicas by
//! `CLUSTER FAILOVER` first, with a writer on one shard's slots losing no acknowledged
//! write; declared nodes and shards checked against the cluster's own view; and a shard
//! killed during a batch failing the gate with its figures.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::gates::{config_of, port_of, Agent, Remote, Serve};
use crate::support::git::TestRepo;
use crate::support::servers::{free_port, RedisClient, Reply};
use crate::support::service::Service;

/// A node of the cluster as `CLUSTER NODES` shows it.
#[derive(Debug, Clone)]
struct Member {
    port: u16,
    /// The primary's port, for a replica.
    primary: Option<u16>,
    slots: String,
}

/// Six cluster-enabled redis-server processes, each in its own directory, joined into
/// one cluster of three primaries with one replica each.
struct RedisCluster {
    nodes: Vec<Service>,
}

fn cluster_node() -> Service {
    // The bus port is chosen too: port + 10000 may not exist for a high port.
    Service::redis(&format!(
        "cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\n\
         cluster-port {}\n",
        free_port()
    ))
}

fn text(port: u16, args: &[&str]) -> Option<String> {
    RedisClient::try_connect(port)
        .ok()?
        .try_cmd(args)
        .ok()?
        .as_str()
}

fn info_field(port: u16, section: &str, field: &str) -> Option<String> {
    text(port, &["INFO", section])?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

fn cluster_info(port: u16, field: &str) -> Option<String> {
    text(port, &["CLUSTER", "INFO"])?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

fn role_of(port: u16) -> Option<String> {
    let mut c = RedisClient::try_connect(port).ok()?;
    match c.try_cmd(&["ROLE"]).ok()? {
        Reply::Array(Some(items)) => items.first().and_then(Reply::as_str),
        _ => None,
    }
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The members as the node at `port` sees them.
fn members(port: u16) -> Vec<Member> {
    let nodes = text(port, &["CLUSTER", "NODES"]).expect("CLUSTER NODES");
    let mut by_id: BTreeMap<String, (u16, Option<String>, String)> = BTreeMap::new();
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let port: u16 = f[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let primary = (f[3] != "-").then(|| f[3].to_owned());
        by_id.insert(f[0].to_owned(), (port, primary, f[8..].join(" ")));
    }
    by_id
        .values()
        .map(|(port, primary, slots)| Member {
            port: *port,
            primary: primary
                .as_ref()
                .and_then(|p| by_id.get(p).map(|(port, _, _)| *port)),
            slots: slots.clone(),
        })
        .collect()
}

impl RedisCluster {
    fn start() -> RedisCluster {
        let nodes: Vec<Service> = (0..6).map(|_| cluster_node()).collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(n.addr());
        }
        let out = cmd
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-cli (apt-get install redis-tools redis-server): {e}")
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = RedisCluster { nodes };
        c.wait_whole();
        c
    }

    fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(port_of).collect()
    }

    /// Every node sees six members, `cluster_state:ok`, and each replica's link is up.
    fn wait_whole(&self) {
        let ports = self.ports();
        wait_until("the cluster is whole", Duration::from_secs(60), || {
            ports.iter().all(|p| {
                cluster_info(*p, "cluster_state").as_deref() == Some("ok")
                    && cluster_info(*p, "cluster_known_nodes").as_deref() == Some("6")
                    && cluster_info(*p, "cluster_slots_ok").as_deref() == Some("16384")
                    && (role_of(*p).as_deref() == Some("master")
                        || info_field(*p, "replication", "master_link_status").as_deref()
                            == Some("up"))
            })
        });
    }

    /// The layout: shard `sK` is the K-th primary by port with its replica; ids `pK` and
    /// `rK`. (id, member, shard).
    fn layout(&self) -> Vec<(String, Member, String)> {
        let all = members(self.ports()[0]);
        let mut primaries: Vec<&Member> = all.iter().filter(|m| m.primary.is_none()).collect();
        primaries.sort_by_key(|m| m.port);
        let mut out = Vec::new();
        for (k, p) in primaries.iter().enumerate() {
            let shard = format!("s{}", k + 1);
            out.push((format!("p{}", k + 1), (*p).clone(), shard.clone()));
            for r in all.iter().filter(|m| m.primary == Some(p.port)) {
                out.push((format!("r{}", k + 1), r.clone(), shard.clone()));
            }
        }
        assert_eq!(out.len(), 6, "{all:?}");
        out
    }

    fn service(&self, port: u16) -> &Service {
        self.nodes.iter().find(|s| port_of(s) == port).unwrap()
    }
}

/// A Cluster document in cluster mode: `nodes` as (id, port, the rest of the entry).
fn cluster_yaml(params: &str, nodes: &[(String, u16, String)], rollout: &str) -> String {
    let mut list = String::new();
    for (id, port, rest) in nodes {
        list.push_str(&format!(
            "    - {{id: {id}, address: '127.0.0.1:{port}'{rest}}}\n"
        ));
    }
    format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  \
         engine: redis\n  mode: cluster\n  parameters:\n{params}\n  nodes:\n{list}  \
         rollout:\n{rollout}"
    )
}

/// Each node of the layout declared where the cluster has it.
fn declared(layout: &[(String, Member, String)], managed: &str) -> Vec<(String, u16, String)> {
    layout
        .iter()
        .map(|(id, m, shard)| {
            let role = if m.primary.is_none() {
                "primary"
            } else {
                "replica"
            };
            (
                id.clone(),
                m.port,
                format!(", shard: {shard}, role: {role}, managed: {managed}"),
            )
        })
        .collect()
}

fn push(work: &TestRepo, remote: &Remote, yaml: &str, message: &str) -> String {
    work.write("clusters/cache.yaml", yaml);
    let id = work.commit(message);
    remote.push(work);
    id
}

/// Every journal line, oldest first.
fn lines(server: &Serve) -> Vec<String> {
    server
        .journal()
        .iter()
        .flat_map(|m| m.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// The batches journaled for `revision`: `cache: batch 2 of 3 assigned REV: a, b`.
fn batches(server: &Serve, revision: &str) -> Vec<Vec<String>> {
    let marker = format!(" assigned {revision}: ");
    lines(server)
        .iter()
        .filter(|l| l.starts_with("cache: batch "))
        .filter_map(|l| l.split_once(&marker).map(|(_, nodes)| nodes.to_owned()))
        .map(|nodes| nodes.split(", ").map(str::to_owned).collect())
        .collect()
}

/// Every declared node's first revision confirmed (its assignment has an outcome).
fn wait_all_confirmed(server: &Serve, ids: &[String]) {
    wait_until("every node confirms", Duration::from_secs(60), || {
        !server.rollout()["target"].is_null()
            && ids.iter().all(|id| {
                server.try_get("/api/v1/clusters").is_some_and(|(_, b)| {
                    b.contains(&format!("\"{id}\":{{\"generation\""))
                        && !b.contains("\"outcome\":null")
                })
            })
    });
}

const ROLLOUT: &str = "    stages: [1, '100%']\n    bake: 1s\n    warmup: 0s\n    \
                       applyTimeout: 60s\n    gates: {maxHitRatioDrop: 1, minOpsPerSec: 0}\n";

#[test]
fn a_runtime_change_reaches_every_node_of_the_cluster_never_two_of_one_shard_at_once() {
    let cluster = RedisCluster::start();
    let layout = cluster.layout();
    let nodes = declared(&layout, "direct");
    let (remote, work) = (Remote::new(), TestRepo::new());
    push(
        &work,
        &remote,
        &cluster_yaml("    cluster-node-timeout: 2000", &nodes, ROLLOUT),
        "cache: as the cluster runs",
    );
    let server = Serve::start(&remote);
    let ids: Vec<String> = layout.iter().map(|(id, _, _)| id.clone()).collect();
    wait_all_confirmed(&server, &ids);

    let change = push(
        &work,
        &remote,
        &cluster_yaml("    cluster-node-timeout: 3000", &nodes, ROLLOUT),
        "cache: cluster-node-timeout 3s",
    );
    let phase = server.settled(&change, Duration::from_secs(180));
    assert_eq!(phase, "completed", "{:#?}", server.journal());
    for (id, m, _) in &layout {
        assert_eq!(config_of(m.port, "cluster-node-timeout"), "3000", "{id}");
    }
    // Never two nodes of one shard in a batch; every node in exactly one batch.
    let shard_of: BTreeMap<&str, &str> = layout
        .iter()
        .map(|(id, _, s)| (id.as_str(), s.as_str()))
        .collect();
    let batches = batches(&server, &change);
    assert!(batches.len() >= 3, "{batches:?}");
    let mut seen: Vec<String> = Vec::new();
    for b in &batches {
        let mut shards: Vec<&str> = b.iter().map(|id| shard_of[id.as_str()]).collect();
        shards.sort_unstable();
        let n = shards.len();
        shards.dedup();
        assert_eq!(
            shards.len(),
            n,
            "two nodes of one shard in a batch: {batches:?}"
        );
        seen.extend(b.iter().cloned());
    }
    seen.sort();
    assert_eq!(seen, ids.to_vec().tap_sort());
    // Replicas first: the primaries come after every replica.
    let order: Vec<&String> = batches.iter().flatten().collect();
    let last_replica = order.iter().rposition(|id| id.starts_with('r')).unwrap();
    let first_primary = order.iter().position(|id| id.starts_with('p')).unwrap();
    assert!(last_replica < first_primary, "{batches:?}");
    // The cluster-state gate judged every batch on the cluster's figures.
    let journal = lines(&server);
    let judged: Vec<&String> = journal
        .iter()
        .filter(|l| l.starts_with("cluster: [") && l.contains("\"state\":\"ok\""))
        .collect();
    assert!(judged.len() >= batches.len(), "{journal:#?}");
    assert!(
        judged[0].contains("\"slotsAssigned\":16384,\"slotsPfail\":0,\"slotsFail\":0"),
        "{}",
        judged[0]
    );
}

trait TapSort {
    fn tap_sort(self) -> Self;
}

impl TapSort for Vec<String> {
    fn tap_sort(mut self) -> Self {
        self.sort();
        self
    }
}

/// What the writer saw.
#[derive(Default)]
struct Writes {
    /// Keys acknowledged by the shard's replica (`WAIT 1` answered 1), with values.
    acknowledged: BTreeMap<String, String>,
    failed: u64,
    /// Each primary written to, in order (port).
    primaries: Vec<u16>,
    last_ack: Option<Instant>,
}

/// A client writing `{tag}k<i>` (keys of one shard's slots) to whichever of `ports`
/// reports role master now, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Writes>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(ports: Vec<u16>, tag: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Writes::default()));
        let (s, w) = (stop.clone(), writes.clone());
        let thread = std::thread::spawn(move || {
            let mut client: Option<RedisClient> = None;
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                if client.is_none() {
                    let found = ports
                        .iter()
                        .find(|p| role_of(**p).as_deref() == Some("master"))
                        .and_then(|p| RedisClient::try_connect(*p).ok().map(|c| (*p, c)));
                    if let Some((p, c)) = found {
                        let mut w = w.lock().unwrap();
                        if w.primaries.last() != Some(&p) {
                            w.primaries.push(p);
                        }
                        client = Some(c);
                    }
                }
                let Some(c) = client.as_mut() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                i += 1;
                let (key, value) = (format!("{{{tag}}}k{i}"), format!("v{i}"));
                let acked = match c.try_cmd(&["SET", &key, &value]) {
                    Ok(r) if r.is_ok() => matches!(
                        c.try_cmd(&["WAIT", "1", "1000"]),
                        Ok(Reply::Int(n)) if n >= 1
                    ),
                    _ => false,
                };
                let mut w = w.lock().unwrap();
                if acked {
                    w.last_ack = Some(Instant::now());
                    w.acknowledged.insert(key, value);
                } else {
                    w.failed += 1;
                    drop(w);
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

    /// Stop once a write made after `since` is acknowledged (at most 60 s later).
    fn stop_after_ack(mut self, since: Instant) -> Writes {
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
        std::mem::take(&mut *self.writes.lock().unwrap())
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

/// A hash tag whose keys fall in the slots `first-last` (a shard's single range).
fn tag_in(port: u16, slots: &str) -> String {
    let (first, last) = slots.split_once('-').unwrap();
    let (first, last): (i64, i64) = (first.parse().unwrap(), last.parse().unwrap());
    (0..10_000)
        .map(|i| format!("t{i}"))
        .find(|t| {
            let mut c = RedisClient::connect(port);
            matches!(c.cmd(&["CLUSTER", "KEYSLOT", t]), Reply::Int(s) if s >= first && s <= last)
        })
        .unwrap()
}

#[test]
fn a_restart_only_change_of_the_primaries_goes_through_cluster_failover_and_loses_no_acknowledged_write(
) {
    let cluster = RedisCluster::start();
    let layout = cluster.layout();
    let nodes = declared(&layout, "agent");
    let (remote, work) = (Remote::new(), TestRepo::new());
    push(
        &work,
        &remote,
        &cluster_yaml("    databases: 16", &nodes, ROLLOUT),
        "cache: as the cluster runs",
    );
    let server = Serve::start(&remote);
    let _agents: Vec<Agent> = layout
        .iter()
        .map(|(id, m, _)| Agent::start(&server, id, cluster.service(m.port)))
        .collect();
    let ids: Vec<String> = layout.iter().map(|(id, _, _)| id.clone()).collect();
    wait_all_confirmed(&server, &ids);
    let port = |id: &str| layout.iter().find(|(i, _, _)| i == id).unwrap().1.port;
    let p1 = &layout.iter().find(|(i, _, _)| i == "p1").unwrap().1;
    let old_pids: BTreeMap<String, Option<u32>> = layout
        .iter()
        .map(|(id, m, _)| (id.clone(), cluster.service(m.port).pid()))
        .collect();

    // A writer on shard s1's slots, following whichever of p1 and r1 is its primary.
    let tag = tag_in(p1.port, &p1.slots);
    let writer = Writer::start(vec![port("p1"), port("r1")], tag);
    std::thread::sleep(Duration::from_secs(1));
    let change = push(
        &work,
        &remote,
        &cluster_yaml("    databases: 32", &nodes, ROLLOUT),
        "cache: databases 32 (start-only: every engine restarts)",
    );
    let phase = server.settled(&change, Duration::from_secs(400));
    let writes = writer.stop_after_ack(Instant::now());
    let journal = lines(&server);
    assert_eq!(phase, "completed", "{journal:#?}");

    // Each primary handed its role to its replica by CLUSTER FAILOVER, then restarted.
    for k in 1..=3 {
        let (p, r) = (format!("p{k}"), format!("r{k}"));
        let started =
            format!("cache: failover of shard s{k}: {p} → {r} ({p} restarts as a replica)");
        let done =
            format!("cache: failover of shard s{k} done: {r} is the primary, {p} its replica");
        let (i_started, i_done) = (
            journal.iter().position(|l| *l == started),
            journal.iter().position(|l| *l == done),
        );
        assert!(
            i_started.is_some() && i_done > i_started,
            "{k}: {journal:#?}"
        );
        assert_eq!(role_of(port(&r)).as_deref(), Some("master"), "{r}");
        assert_eq!(role_of(port(&p)).as_deref(), Some("slave"), "{p}");
        // The cluster agrees: every member sees p a replica of r.
        for (_, m, _) in &layout {
            let seen = members(m.port);
            let pm = seen.iter().find(|x| x.port == port(&p)).unwrap();
            assert_eq!(pm.primary, Some(port(&r)), "as {} sees it", m.port);
        }
    }
    // The agents sent each node's view of the cluster (the `cluster` report field): the
    // cluster-state gate judged every batch on it.
    let views = journal
        .iter()
        .filter(|l| l.starts_with("cluster: [") && l.contains("\"state\":\"ok\""))
        .count();
    assert!(views >= 3, "{journal:#?}");
    for (id, m, _) in &layout {
        assert_eq!(config_of(m.port, "databases"), "32", "{id}");
        assert_ne!(
            cluster.service(m.port).pid(),
            old_pids[id],
            "{id} restarted"
        );
    }
    wait_until("the cluster is ok", Duration::from_secs(30), || {
        layout
            .iter()
            .all(|(_, m, _)| cluster_info(m.port, "cluster_state").as_deref() == Some("ok"))
    });

    // Zero lost: every acknowledged write is on the shard's primary now.
    assert!(
        writes.acknowledged.len() > 50,
        "only {} writes acknowledged ({} failed)",
        writes.acknowledged.len(),
        writes.failed
    );
    let mut primary = RedisClient::connect(port("r1"));
    let lost: Vec<&String> = writes
        .acknowledged
        .iter()
        .filter(|(k, v)| primary.cmd(&["GET", k]).as_str().as_deref() != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        writes.primaries,
        vec![port("p1"), port("r1")],
        "the writer wrote to p1, then to r1 only"
    );
}

/// `cacheflow plan --direct` of the repository in `work`: (exit code, stdout).
fn plan(work: &TestRepo) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["plan", "--direct", "--color", "never", "--repo"])
        .arg(work.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn declared_nodes_and_shards_are_checked_against_the_clusters_own_view() {
    let cluster = RedisCluster::start();
    let layout = cluster.layout();
    let work = TestRepo::new();
    let nodes = declared(&layout, "direct");
    work.write(
        "clusters/cache.yaml",
        &cluster_yaml("    cluster-node-timeout: 2000", &nodes, ROLLOUT),
    );
    work.commit("cache: as the cluster runs");
    let (code, out) = plan(&work);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("does not know") && !out.contains("declared in shard"),
        "{out}"
    );

    // A cluster-enabled node that never joined, and p2 declared in shard s1.
    let stray = cluster_node();
    let stray_id = text(port_of(&stray), &["CLUSTER", "MYID"]).unwrap();
    let slots = |id: &str| {
        layout
            .iter()
            .find(|(i, _, _)| i == id)
            .unwrap()
            .1
            .slots
            .clone()
    };
    let mut wrong: Vec<(String, u16, String)> = nodes
        .iter()
        .map(|(id, port, rest)| match id.as_str() {
            "p2" => (id.clone(), *port, ", shard: s1, managed: direct".to_owned()),
            // A declared replica needs a declared primary in its shard.
            "r2" => (id.clone(), *port, ", shard: s2, managed: direct".to_owned()),
            _ => (id.clone(), *port, rest.clone()),
        })
        .collect();
    wrong.push((
        "n7".to_owned(),
        port_of(&stray),
        ", shard: s7, managed: direct".to_owned(),
    ));
    work.write(
        "clusters/cache.yaml",
        &cluster_yaml("    cluster-node-timeout: 2000", &wrong, ROLLOUT),
    );
    work.commit("cache: a stray node, p2 in the wrong shard");
    let (code, out) = plan(&work);
    assert_eq!(code, 0, "{out}");
    let expected = [
        format!(
            "n7: the cluster does not know it: no other member lists its node id {} (it left \
             the cluster or never joined)",
            &stray_id[..8]
        ),
        format!(
            "p2: declared in shard s1, but the cluster puts it in the shard of p2 (slots {}) \
             while shard s1 is the shard of p1 (slots {})",
            slots("p2"),
            slots("p1")
        ),
    ];
    for line in &expected {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }

    // A replica leaves the cluster (CLUSTER RESET HARD: a new id, no peers).
    let r3 = layout.iter().find(|(i, _, _)| i == "r3").unwrap().1.port;
    let mut c = RedisClient::connect(r3);
    assert!(c.cmd(&["CLUSTER", "RESET", "HARD"]).is_ok());
    let new_id = text(r3, &["CLUSTER", "MYID"]).unwrap();
    work.write(
        "clusters/cache.yaml",
        &cluster_yaml("    cluster-node-timeout: 2000", &nodes, ROLLOUT),
    );
    work.commit("cache: as declared first");
    let (code, out) = plan(&work);
    assert_eq!(code, 0, "{out}");
    let left = "r3: the cluster does not know it: ";
    let line = out
        .lines()
        .find(|l| l.contains(left))
        .unwrap_or_else(|| panic!("no line for r3 in:\n{out}"));
    assert!(
        line.contains(&format!("its node id {}", &new_id[..8])),
        "{line}"
    );
}

#[test]
fn a_shard_that_fails_during_a_batch_fails_the_cluster_state_gate_with_its_figures() {
    let cluster = RedisCluster::start();
    let layout = cluster.layout();
    let nodes = declared(&layout, "direct");
    let rollout = "    stages: [1, '100%']\n    bake: 12s\n    warmup: 0s\n    \
                   applyTimeout: 60s\n    gates: {maxHitRatioDrop: 1, minOpsPerSec: 0}\n";
    let (remote, work) = (Remote::new(), TestRepo::new());
    push(
        &work,
        &remote,
        &cluster_yaml("    cluster-node-timeout: 2000", &nodes, rollout),
        "cache: as the cluster runs",
    );
    let server = Serve::start(&remote);
    let ids: Vec<String> = layout.iter().map(|(id, _, _)| id.clone()).collect();
    wait_all_confirmed(&server, &ids);

    let change = push(
        &work,
        &remote,
        &cluster_yaml("    cluster-node-timeout: 2500", &nodes, rollout),
        "cache: cluster-node-timeout 2.5s",
    );
    let mut canary = Vec::new();
    wait_until("batch 1 assigned", Duration::from_secs(60), || {
        canary = batches(&server, &change)
            .into_iter()
            .next()
            .unwrap_or_default();
        !canary.is_empty()
    });
    // Both nodes of a shard the canary is not in go down: their slots fail.
    let canary_shard = &layout.iter().find(|(id, _, _)| *id == canary[0]).unwrap().2;
    let killed: Vec<&(String, Member, String)> = layout
        .iter()
        .filter(|(_, _, s)| s != canary_shard)
        .filter(|(_, _, s)| *s == layout.iter().find(|(_, _, x)| x != canary_shard).unwrap().2)
        .collect();
    assert_eq!(killed.len(), 2);
    for (_, m, _) in &killed {
        let pid = cluster.service(m.port).pid().unwrap();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let phase = server.settled(&change, Duration::from_secs(120));
    let journal = lines(&server);
    assert_eq!(phase, "rolled-back", "{journal:#?}");
    let verdict = journal
        .iter()
        .find(|l| l.starts_with("cache: gates of batch 1 failed: "))
        .unwrap_or_else(|| panic!("{journal:#?}"));
    let why = format!(
        "{}: the cluster is not whole: cluster_state:fail, ",
        canary[0]
    );
    assert!(verdict.contains(&why), "{verdict}");
    assert!(
        verdict.contains("slots failing (cluster_slots_fail)"),
        "{verdict}"
    );
    let figures = journal
        .iter()
        .find(|l| l.starts_with("cluster: [") && l.contains("\"state\":\"fail\""))
        .unwrap_or_else(|| panic!("{journal:#?}"));
    assert!(
        figures.contains("\"slotsFail\":5461") || figures.contains("\"slotsFail\":5462"),
        "{figures}"
    );
    // The canary is put back.
    let canary_port = layout
        .iter()
        .find(|(id, _, _)| *id == canary[0])
        .unwrap()
        .1
        .port;
    assert_eq!(config_of(canary_port, "cluster-node-timeout"), "2000");
}
