//! Sentinel on real processes through the real binary: a primary and two replicas
//! (redis-server, each from its config file, restarted by a real agent), three real
//! `redis-sentinel` processes watching them, and `cacheflow serve` with the cluster's
//! `sentinel:` block. A restart-only change of the primary moves its role through the
//! Sentinels (`SENTINEL FAILOVER`) while a writer writes (every write acknowledged with
//! `WAIT 1` read back: zero lost); a failover the Sentinels make by themselves in the
//! middle of a rollout is noticed and the rollout finishes against the new roles; and
//! Sentinels that disagree or are down hold the rollout with the reason, nothing applied.

use std::time::{Duration, Instant};

use crate::failover::{info_field, role_of, shard, wait_all_confirmed, wait_until, Writer};
use crate::gates::{config_of, port_of, Agent, Remote, Serve};
use crate::support::git::TestRepo;
use crate::support::servers::{RedisClient, SentinelServer};
use crate::support::service::Service;

const MASTER: &str = "main";

const ROLLOUT: &str = "    stages: [1, '100%']\n    bake: 1s\n    warmup: 0s\n    \
                       applyTimeout: 60s\n    gates: {maxHitRatioDrop: 1, minOpsPerSec: 0}\n";

/// The cluster file: `nodes` in shard a (roles left out: whatever they run as), the
/// Sentinels at `sentinels`.
fn cluster_file(nodes: &[(&str, String)], sentinels: &[String], params: &str) -> String {
    let mut list = String::new();
    for (id, addr) in nodes {
        list.push_str(&format!(
            "    - {{id: {id}, address: '{addr}', shard: a, managed: agent}}\n"
        ));
    }
    let addresses: Vec<String> = sentinels.iter().map(|s| format!("'{s}'")).collect();
    format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  \
         engine: redis\n  parameters:\n{params}\n  sentinel:\n    masterName: {MASTER}\n    \
         addresses: [{}]\n  nodes:\n{list}  rollout:\n{ROLLOUT}",
        addresses.join(", ")
    )
}

fn commit(
    work: &TestRepo,
    remote: &Remote,
    nodes: &[(&str, String)],
    sentinels: &[String],
    params: &str,
    message: &str,
) -> String {
    work.write(
        "clusters/cache.yaml",
        &cluster_file(nodes, sentinels, params),
    );
    let id = work.commit(message);
    remote.push(work);
    id
}

/// Three Sentinels watching the primary at `primary` (quorum 2), each knowing both
/// replicas and the two other Sentinels before the test goes on.
fn sentinels(primary: u16) -> Vec<SentinelServer> {
    let all: Vec<SentinelServer> = (0..3)
        .map(|_| SentinelServer::start(MASTER, primary, 2, 10_000))
        .collect();
    for s in &all {
        wait_until(
            "each Sentinel knows two replicas and two other Sentinels",
            Duration::from_secs(40),
            || {
                let fields = s.client().cmd(&["SENTINEL", "MASTER", MASTER]);
                field(&fields, "num-slaves").as_deref() == Some("2")
                    && field(&fields, "num-other-sentinels").as_deref() == Some("2")
            },
        );
    }
    all
}

/// A field of a `SENTINEL MASTER` reply (a flat array of names and values).
fn field(reply: &crate::support::servers::Reply, name: &str) -> Option<String> {
    match reply {
        crate::support::servers::Reply::Array(Some(items)) => items
            .chunks(2)
            .find(|p| p[0].as_str().as_deref() == Some(name))
            .and_then(|p| p.get(1)?.as_str()),
        _ => None,
    }
}

/// The primary every Sentinel names, once they all name the same one.
fn agreed_primary(all: &[SentinelServer], within: Duration) -> String {
    let mut agreed = String::new();
    wait_until("the Sentinels agree on a primary", within, || {
        let named: Vec<Option<String>> = all.iter().map(|s| s.primary(MASTER)).collect();
        match named.first() {
            Some(Some(p)) if named.iter().all(|n| n.as_ref() == Some(p)) => {
                agreed = p.clone();
                true
            }
            _ => false,
        }
    });
    agreed
}

fn port_in(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

/// The id of the node at `address`.
fn id_at<'a>(nodes: &'a [(&'a str, Service)], address: &str) -> &'a str {
    nodes
        .iter()
        .find(|(_, s)| s.addr() == address)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("no node at {address}"))
}

fn all_logs(all: &[SentinelServer]) -> String {
    all.iter().map(|s| s.logs()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_restart_only_change_of_the_primary_fails_over_through_the_sentinels_and_loses_no_acknowledged_write(
) {
    let nodes = shard();
    let ports: Vec<u16> = nodes.iter().map(|(_, s)| port_of(s)).collect();
    let all = sentinels(ports[0]);
    let addresses: Vec<String> = all.iter().map(|s| s.addr()).collect();
    let declared: Vec<(&str, String)> = nodes.iter().map(|(id, s)| (*id, s.addr())).collect();
    let (remote, work) = (Remote::new(), TestRepo::new());
    commit(
        &work,
        &remote,
        &declared,
        &addresses,
        "    databases: 16",
        "cache: databases 16, as the nodes run, its Sentinels named",
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
        &addresses,
        "    databases: 32",
        "cache: databases 32 (start-only: every engine restarts)",
    );
    let phase = server.settled(&change, Duration::from_secs(240));
    let writes = writer.stop_after_ack(Instant::now());
    let journal = server.journal().join("\n");
    assert_eq!(phase, "completed", "{journal}\n{}", all_logs(&all));

    // The Sentinels chose the replica and all name it now; the journal says so.
    let primary = agreed_primary(&all, Duration::from_secs(30));
    let to = id_at(&nodes, &primary);
    assert_ne!(to, "a1");
    assert!(
        journal.contains("cache: failover of shard a: a1 → "),
        "{journal}"
    );
    let done = format!("cache: failover of shard a done: {to} is the primary, a1 its replica");
    assert!(journal.contains(&done), "{journal}");
    // Through Sentinel: they switched the master themselves (their own log line).
    let switched = format!(
        "+switch-master {MASTER} 127.0.0.1 {} 127.0.0.1 {}",
        ports[0],
        port_in(&primary)
    );
    assert!(all_logs(&all).contains(&switched), "{}", all_logs(&all));
    assert!(
        !journal.contains("failover cacheflow did not start"),
        "{journal}"
    );

    // Every node runs the change; a1 was restarted, as a replica of the new primary.
    for (id, s) in &nodes {
        assert_eq!(config_of(port_of(s), "databases"), "32", "{id}");
    }
    assert_ne!(nodes[0].1.pid(), old_pid, "a1 was restarted");
    assert_eq!(role_of(port_in(&primary)).as_deref(), Some("master"));
    for (id, s) in nodes.iter().filter(|(id, _)| *id != to) {
        wait_until(
            &format!("{id} follows the new primary"),
            Duration::from_secs(30),
            || {
                role_of(port_of(s)).as_deref() == Some("slave")
                    && info_field(port_of(s), "master_port") == Some(port_in(&primary).to_string())
            },
        );
    }

    // Zero lost: every acknowledged write is on the new primary.
    assert!(
        writes.acknowledged.len() > 100,
        "only {} writes acknowledged ({} failed)",
        writes.acknowledged.len(),
        writes.failed
    );
    let mut c = RedisClient::connect(port_in(&primary));
    let lost: Vec<&String> = writes
        .acknowledged
        .iter()
        .filter(|(k, v)| c.cmd(&["GET", k]).as_str().as_deref() != Some(v.as_str()))
        .map(|(k, _)| k)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(
        writes.primaries,
        vec![ports[0], port_in(&primary)],
        "the writer wrote to a1, then to {to} only"
    );
    println!(
        "sentinel failover rollout: {} writes acknowledged, {} failed or not acknowledged, longest gap {} ms",
        writes.acknowledged.len(),
        writes.failed,
        writes.longest_gap.as_millis()
    );
    assert!(
        writes.longest_gap < Duration::from_secs(30),
        "longest write gap {:?}",
        writes.longest_gap
    );
}

#[test]
fn a_failover_the_sentinels_make_by_themselves_mid_rollout_is_noticed_and_the_rollout_finishes_on_the_new_roles(
) {
    let nodes = shard();
    let ports: Vec<u16> = nodes.iter().map(|(_, s)| port_of(s)).collect();
    let all = sentinels(ports[0]);
    let addresses: Vec<String> = all.iter().map(|s| s.addr()).collect();
    let declared: Vec<(&str, String)> = nodes.iter().map(|(id, s)| (*id, s.addr())).collect();
    let (remote, work) = (Remote::new(), TestRepo::new());
    commit(
        &work,
        &remote,
        &declared,
        &addresses,
        "    databases: 16",
        "cache: databases 16, as the nodes run",
    );
    let server = Serve::start(&remote);
    let _agents: Vec<Agent> = nodes
        .iter()
        .map(|(id, s)| Agent::start(&server, id, s))
        .collect();
    wait_all_confirmed(&server, &["a1", "a2", "a3"]);

    let change = commit(
        &work,
        &remote,
        &declared,
        &addresses,
        "    databases: 32",
        "cache: databases 32",
    );
    // Once the first batch's node applied the change, the Sentinels fail the primary
    // over by themselves (a person's SENTINEL FAILOVER, as on-call would).
    wait_until("the first batch applied", Duration::from_secs(120), || {
        server.journal().iter().any(|m| {
            m.lines()
                .any(|l| l.starts_with("cache: a") && l.contains(" applied "))
        })
    });
    let reply = all[0].client().cmd(&["SENTINEL", "FAILOVER", MASTER]);
    assert!(reply.is_ok(), "SENTINEL FAILOVER: {reply:?}");
    let moved = agreed_primary_other_than(&all, &nodes[0].1.addr(), Duration::from_secs(60));
    let to = id_at(&nodes, &moved).to_owned();

    let phase = server.settled(&change, Duration::from_secs(300));
    let journal = server.journal().join("\n");
    assert_eq!(phase, "completed", "{journal}\n{}", all_logs(&all));

    // Noticed, journaled, in the status; not fought.
    let noticed = format!(
        "cache: the Sentinels of {MASTER} failed the primary of shard a over from a1 to {to} during batch "
    );
    let line = journal
        .lines()
        .find(|l| l.starts_with(&noticed))
        .unwrap_or_else(|| panic!("not noticed:\n{journal}"));
    assert!(
        line.contains(", a failover cacheflow did not start: "),
        "{line}"
    );
    println!("{line}");
    let status = server.rollout();
    assert_eq!(
        status["rollout"]["sentinel"].as_str(),
        line.strip_prefix("cache: "),
        "{status}"
    );

    // Nothing applied twice: each node applied the revision once.
    for (id, _) in &nodes {
        let applied = format!("cache: {id} applied {change}");
        let times = journal.lines().filter(|l| l.starts_with(&applied)).count();
        assert_eq!(times, 1, "{id} applied {times} times:\n{journal}");
    }
    // Every node runs the change, and the Sentinels' primary leads the other two.
    for (id, s) in &nodes {
        assert_eq!(config_of(port_of(s), "databases"), "32", "{id}");
    }
    let primary = agreed_primary(&all, Duration::from_secs(30));
    assert_eq!(role_of(port_in(&primary)).as_deref(), Some("master"));
    for (id, s) in nodes.iter().filter(|(_, s)| s.addr() != primary) {
        wait_until(
            &format!("{id} follows {primary}"),
            Duration::from_secs(60),
            || info_field(port_of(s), "master_port") == Some(port_in(&primary).to_string()),
        );
    }
}

/// The primary every Sentinel names once they all agree on one other than `old`.
fn agreed_primary_other_than(all: &[SentinelServer], old: &str, within: Duration) -> String {
    let mut agreed = String::new();
    wait_until("the Sentinels agree on a new primary", within, || {
        let named: Vec<Option<String>> = all.iter().map(|s| s.primary(MASTER)).collect();
        match named.first() {
            Some(Some(p)) if p != old && named.iter().all(|n| n.as_ref() == Some(p)) => {
                agreed = p.clone();
                true
            }
            _ => false,
        }
    });
    agreed
}

#[test]
fn sentinels_that_disagree_or_are_down_hold_the_rollout_with_the_reason_and_nothing_is_applied() {
    let nodes = shard();
    let ports: Vec<u16> = nodes.iter().map(|(_, s)| port_of(s)).collect();
    // Two Sentinels watch a1; a third, misconfigured, watches a2 under the same name.
    let mut s1 = SentinelServer::start(MASTER, ports[0], 2, 10_000);
    let mut s2 = SentinelServer::start(MASTER, ports[0], 2, 10_000);
    let mut s3 = SentinelServer::start(MASTER, ports[1], 2, 10_000);
    let addresses = vec![s1.addr(), s2.addr(), s3.addr()];
    let declared: Vec<(&str, String)> = nodes.iter().map(|(id, s)| (*id, s.addr())).collect();
    let (remote, work) = (Remote::new(), TestRepo::new());
    commit(
        &work,
        &remote,
        &declared,
        &addresses,
        "    databases: 16",
        "cache: databases 16, as the nodes run",
    );
    let server = Serve::start(&remote);
    let _agents: Vec<Agent> = nodes
        .iter()
        .map(|(id, s)| Agent::start(&server, id, s))
        .collect();
    wait_all_confirmed(&server, &["a1", "a2", "a3"]);
    let pids: Vec<Option<u32>> = nodes.iter().map(|(_, s)| s.pid()).collect();

    let change = commit(
        &work,
        &remote,
        &declared,
        &addresses,
        "    databases: 32",
        "cache: databases 32",
    );
    let split = format!(
        "the Sentinels of {MASTER} do not agree on its primary: {} names a1 ({}); {} names a1 ({}); {} names a2 ({})",
        addresses[0], declared[0].1, addresses[1], declared[0].1, addresses[2], declared[1].1
    );
    let waiting = wait_for_waiting(&server, &change);
    assert_eq!(waiting["reason"], split.as_str(), "{waiting}");
    let journal = server.journal().join("\n");
    assert!(
        journal.contains(&format!("cache: batch 1 of 3 waits: {split}")),
        "{journal}"
    );
    // Held, not applied: a few seconds on, nothing was assigned or restarted.
    std::thread::sleep(Duration::from_secs(3));
    let journal = server.journal().join("\n");
    assert!(!journal.contains("assigned"), "{journal}");
    assert!(!journal.contains("failover of shard"), "{journal}");
    for ((id, s), pid) in nodes.iter().zip(&pids) {
        assert_eq!(config_of(port_of(s), "databases"), "16", "{id}");
        assert_eq!(s.pid(), *pid, "{id} was not restarted");
    }

    // The misconfigured one stops: two of three answer and agree (a quorum), and the
    // rollout goes on by itself.
    s3.stop();
    let phase = server.settled(&change, Duration::from_secs(240));
    let journal = server.journal().join("\n");
    assert_eq!(phase, "completed", "{journal}");
    assert!(
        journal.contains(&format!("cache: the Sentinels of {MASTER} agree again: "))
            || journal.contains("cache: batch 1 of 3 assigned"),
        "{journal}"
    );
    for (id, s) in &nodes {
        assert_eq!(config_of(port_of(s), "databases"), "32", "{id}");
    }

    // One of three left: no quorum, the next change waits and says which are down.
    // It is pushed the moment s2 is gone, while the server's last periodic answers
    // still count s2: a batch starts only on an answer asked after it was due, so the
    // first batch never starts on the answers of before the stop.
    s2.stop();
    let pids: Vec<Option<u32>> = nodes.iter().map(|(_, s)| s.pid()).collect();
    let change = commit(
        &work,
        &remote,
        &declared,
        &addresses,
        "    databases: 64",
        "cache: databases 64",
    );
    let waiting = wait_for_waiting(&server, &change);
    let reason = waiting["reason"].as_str().unwrap_or_default().to_owned();
    let prefix = format!(
        "only 1 of the 3 Sentinels of {MASTER} answered (a quorum is 2): {}: unreachable: ",
        addresses[1]
    );
    assert!(reason.starts_with(&prefix), "{reason}");
    assert!(
        reason.contains(&format!("; {}: unreachable: ", addresses[2])),
        "{reason}"
    );
    std::thread::sleep(Duration::from_secs(3));
    for ((id, s), pid) in nodes.iter().zip(&pids) {
        assert_eq!(config_of(port_of(s), "databases"), "32", "{id}");
        assert_eq!(s.pid(), *pid, "{id} was not restarted");
    }
    s1.stop();
}

/// The rollout of `revision` once it waits; its status.
fn wait_for_waiting(server: &Serve, revision: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = server.rollout();
        if c["rollout"]["revision"] == revision && c["rollout"]["phase"] == "waiting" {
            return c["rollout"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the rollout of {revision} did not wait: {c}\n{:#?}",
            server.journal()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
