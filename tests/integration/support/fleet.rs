//! Six real redis-server nodes in two replicating shards, and the cluster document
//! that declares them.

use std::time::{Duration, Instant};

use crate::support::servers::RedisServer;

/// Two shards: s1 = a1 (primary), a2, a3 (replicas of a1); s2 = b1, b2, b3.
pub struct Fleet {
    pub nodes: Vec<(String, RedisServer)>,
}

impl Fleet {
    pub fn start() -> Fleet {
        let mut nodes = Vec::new();
        for shard in ["a", "b"] {
            let primary = RedisServer::start();
            let port = primary.port().to_string();
            nodes.push((format!("{shard}1"), primary));
            for i in 2..=3 {
                let replica = RedisServer::start();
                let reply = replica.client().cmd(&["REPLICAOF", "127.0.0.1", &port]);
                assert!(reply.is_ok(), "REPLICAOF answered {reply:?}");
                nodes.push((format!("{shard}{i}"), replica));
            }
        }
        // Wait for every replica's link, so the gates see a healthy cluster.
        let deadline = Instant::now() + Duration::from_secs(15);
        for (id, n) in nodes.iter().filter(|(id, _)| !id.ends_with('1')) {
            loop {
                let info = n.client().cmd(&["INFO", "replication"]);
                if info
                    .as_str()
                    .unwrap_or_default()
                    .contains("master_link_status:up")
                {
                    break;
                }
                assert!(Instant::now() < deadline, "{id}: replication link not up");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Fleet { nodes }
    }

    pub fn get(&self, id: &str) -> &RedisServer {
        &self.nodes.iter().find(|(n, _)| n == id).expect("node").1
    }

    pub fn config(&self, param: &str) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|(id, n)| (id.clone(), n.client().config_get(param)[param].clone()))
            .collect()
    }

    /// The cluster `cache` with these parameters (YAML lines indented by 4) and a
    /// rollout of 3 stages, zero bake, gates judged without traffic.
    pub fn cluster_yaml(&self, params: &str) -> String {
        self.cluster_yaml_with(params, "stages: [1, '50%', '100%']\n    bake: 0s")
    }

    pub fn cluster_yaml_with(&self, params: &str, rollout: &str) -> String {
        self.cluster_of("cache", "", params, rollout)
    }

    /// The cluster `name` of the nodes whose ids start with `only` ("": all six).
    pub fn cluster_of(&self, name: &str, only: &str, params: &str, rollout: &str) -> String {
        let mut nodes = String::new();
        for (id, n) in self.nodes.iter().filter(|(id, _)| id.starts_with(only)) {
            let shard = &id[..1];
            let role = if id.ends_with('1') {
                "primary"
            } else {
                "replica"
            };
            nodes.push_str(&format!(
                "    - {{id: {id}, address: '{}', shard: {shard}, role: {role}}}\n",
                n.addr()
            ));
        }
        format!(
            "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: {name}}}
spec:
  engine: redis
  parameters:
{params}
  nodes:
{nodes}  rollout:
    {rollout}
    applyTimeout: 10s
    maxUnavailablePerShard: 1
    # The tests are not about latency and share a busy machine: a latency
    # increase is not a failure here.
    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}
"
        )
    }
}
