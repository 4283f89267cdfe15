//! A simulated cache node: an in-process stand-in for the demo and for scale tests of
//! thousands of nodes. It never stands in for a real server in a test where one can run.
//!
//! The model is small and deterministic. A node serves a working set of `working_set`
//! bytes at `ops_per_sec`; the share that fits in its memory limit is what it can hit, so
//! the hit ratio follows `maxmemory` (and the eviction policy: `noeviction` keeps what it
//! holds but fails writes, random eviction keeps a worse share hot than LRU/LFU).
//! Shrinking the memory limit below what is used evicts at once. Traffic advances only
//! when [`SimulatedNode::advance`] is called, so tests control time.
//!
//! Faults are injected with [`Fault`]: down, slow (every answer delayed), a parameter the
//! node refuses, flapping (down on every other call).
//!
//! A node may run as a service ([`SimulatedNode::run_as_service`]): started from a Redis
//! config file and restarted when a marker file appears (what a restart command such as
//! `touch MARKER` does), so an agent's restart-only apply (write the file, run the
//! command, read the node back) works on it; a restart reads the file again and its
//! counters start from zero. Roles move by a modelled `FAILOVER TO` or `CLUSTER FAILOVER`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Applied, BoxFuture, NodeDriver, NodeError};
use crate::pure::catalog::{self, Engine};
use crate::pure::live::{Health, NodeLive, Topology};
use crate::pure::spec::model::Role;

/// A fault to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every call fails as if the node were unreachable.
    Down,
    /// Every answer takes this long (a caller's timeout then fires).
    Slow(Duration),
    /// The node refuses this parameter with an engine-like message.
    Refuse(String),
    /// Every other call fails as unreachable.
    Flapping,
}

#[derive(Debug, Clone)]
struct State {
    /// Shared between nodes built from the same map and copied on the first write, so a
    /// fleet of 10,000 nodes with full parameter maps holds one map per distinct state.
    params: Arc<BTreeMap<String, String>>,
    used_memory: u64,
    working_set: u64,
    ops_per_sec: f64,
    hits: u64,
    misses: u64,
    evicted_keys: u64,
    evictions_per_sec: f64,
    faults: Vec<Fault>,
    calls: u64,
    revision: Option<String>,
    /// The role the node runs as and, for a replica, the address of its primary.
    role: Role,
    primary: Option<String>,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimulatedNode {
    address: String,
    engine: Engine,
    state: Mutex<State>,
    /// The nodes a failover can reach, by address (set by [`Replication::join`]).
    peers: Mutex<Option<Arc<Replication>>>,
    /// Run as a service: its config file and the marker that asks for a restart.
    service: Mutex<Option<(PathBuf, PathBuf)>>,
}

/// The simulated nodes that replicate one another, by address: what a simulated
/// `FAILOVER TO` reaches. Nodes join it after they are built.
#[derive(Debug, Default)]
pub struct Replication {
    nodes: Mutex<BTreeMap<String, std::sync::Weak<SimulatedNode>>>,
}

impl Replication {
    pub fn join(self: &Arc<Self>, node: &Arc<SimulatedNode>) {
        if let Ok(mut nodes) = self.nodes.lock() {
            nodes.insert(node.address.clone(), Arc::downgrade(node));
        }
        if let Ok(mut peers) = node.peers.lock() {
            *peers = Some(Arc::clone(self));
        }
    }

    fn get(&self, address: &str) -> Option<Arc<SimulatedNode>> {
        self.nodes.lock().ok()?.get(address)?.upgrade()
    }

    fn all(&self) -> Vec<Arc<SimulatedNode>> {
        self.nodes
            .lock()
            .map(|n| n.values().filter_map(std::sync::Weak::upgrade).collect())
            .unwrap_or_default()
    }
}

/// Average size of a key in the model, to turn bytes into key counts.
const KEY_BYTES: u64 = 1024;

impl SimulatedNode {
    /// A node with `params` (engine text) serving a working set of `working_set` bytes at
    /// `ops_per_sec`. Nodes given clones of one `Arc` share the map until one changes.
    pub fn new(
        address: impl Into<String>,
        engine: Engine,
        role: Role,
        params: impl Into<Arc<BTreeMap<String, String>>>,
        working_set: u64,
        ops_per_sec: f64,
    ) -> SimulatedNode {
        let node = SimulatedNode {
            address: address.into(),
            engine,
            state: Mutex::new(State {
                params: params.into(),
                used_memory: 0,
                working_set,
                ops_per_sec,
                hits: 0,
                misses: 0,
                evicted_keys: 0,
                evictions_per_sec: 0.0,
                faults: Vec::new(),
                calls: 0,
                revision: None,
                role,
                primary: None,
            }),
            peers: Mutex::new(None),
            service: Mutex::new(None),
        };
        node.with_state(|s| {
            s.used_memory = s.working_set.min(limit_of(engine, s));
        });
        node
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A poisoned lock only means another caller panicked mid-update; the plain data
        // inside is still the best state we have.
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    pub fn inject(&self, fault: Fault) {
        self.with_state(|s| s.faults.push(fault));
    }

    pub fn clear_faults(&self) {
        self.with_state(|s| s.faults.clear());
    }

    /// Record the revision an agent applied (reported in `read`).
    pub fn set_revision(&self, revision: Option<String>) {
        self.with_state(|s| s.revision = revision);
    }

    /// Follow the primary at `address` (a hand-made `REPLICAOF host port`), or run as a
    /// primary with `None` (`REPLICAOF NO ONE`).
    pub fn replicate_from(&self, address: Option<String>) {
        self.with_state(|s| {
            s.role = if address.is_some() {
                Role::Replica
            } else {
                Role::Primary
            };
            s.primary = address;
        });
    }

    fn primary_address(&self) -> Option<String> {
        self.with_state(|s| s.primary.clone())
    }

    /// `FAILOVER TO to`, modelled: `to` must be a replica of this primary among the
    /// joined nodes; it becomes the primary, and this node and its other replicas follow
    /// it. Done at once (the model has no lag).
    fn failover_now(&self, to: &str) -> Result<(), NodeError> {
        let refused = |message: String| NodeError::Refused {
            address: self.address.clone(),
            parameter: "FAILOVER".to_owned(),
            message,
        };
        if self.with_state(|s| s.role) != Role::Primary {
            return Err(refused(
                "ERR FAILOVER is not valid when server is a replica.".into(),
            ));
        }
        let peers = self.peers.lock().ok().and_then(|p| p.clone());
        let target = peers
            .as_ref()
            .and_then(|p| p.get(to))
            .filter(|t| t.primary_address().as_deref() == Some(self.address.as_str()))
            .ok_or_else(|| {
                refused("ERR FAILOVER target HOST and PORT is not a replica.".to_owned())
            })?;
        target.replicate_from(None);
        for other in peers.iter().flat_map(|p| p.all()) {
            if other.primary_address().as_deref() == Some(self.address.as_str()) {
                other.replicate_from(Some(to.to_owned()));
            }
        }
        self.replicate_from(Some(to.to_owned()));
        Ok(())
    }

    /// Run as a service started from `config_file`, restarted when `marker` appears.
    pub fn run_as_service(&self, config_file: PathBuf, marker: PathBuf) {
        if let Ok(mut service) = self.service.lock() {
            *service = Some((config_file, marker));
        }
    }

    /// A restart was asked for (the marker exists): remove the marker, start again from
    /// the config file (its parameters replace the running ones), counters from zero.
    fn restart_if_asked(&self) {
        let Some((file, marker)) = self.service.lock().ok().and_then(|s| s.clone()) else {
            return;
        };
        if std::fs::remove_file(&marker).is_err() {
            return;
        }
        let from_file = std::fs::read_to_string(&file)
            .map(|t| super::redis::parse_config_file(&t))
            .unwrap_or_default();
        let engine = self.engine;
        self.with_state(|s| {
            let params = Arc::make_mut(&mut s.params);
            for (name, value) in from_file {
                params.insert(name, value);
            }
            s.hits = 0;
            s.misses = 0;
            s.evicted_keys = 0;
            settle_memory(engine, s);
        });
    }

    /// Change a parameter behind cacheflow's back (a hand-made `CONFIG SET`).
    pub fn set_by_hand(&self, name: &str, value: &str) {
        let engine = self.engine;
        self.with_state(|s| {
            Arc::make_mut(&mut s.params).insert(name.to_owned(), value.to_owned());
            settle_memory(engine, s);
        });
    }

    /// Let `seconds` of traffic pass.
    pub fn advance(&self, seconds: f64) {
        let engine = self.engine;
        self.with_state(|s| {
            let ops = (s.ops_per_sec * seconds).max(0.0);
            let ratio = hit_ratio(engine, s);
            let hits = (ops * ratio).round() as u64;
            s.hits += hits;
            s.misses += ops.round() as u64 - hits.min(ops.round() as u64);
            // Misses that are written back push other keys out when memory is full.
            let full = s.used_memory >= limit_of(engine, s) && limit_of(engine, s) > 0;
            let policy = policy_of(engine, s);
            let evicting = full && policy != "noeviction" && s.working_set > s.used_memory;
            let evicted = if evicting {
                ((ops * (1.0 - ratio)) * 0.5).round() as u64
            } else {
                0
            };
            s.evicted_keys += evicted;
            s.evictions_per_sec = if seconds > 0.0 {
                evicted as f64 / seconds
            } else {
                0.0
            };
        });
    }

    /// The first fault that applies to this call, counting calls for flapping.
    fn fault(&self) -> Option<Fault> {
        self.with_state(|s| {
            s.calls += 1;
            let calls = s.calls;
            s.faults
                .iter()
                .find(|f| match f {
                    Fault::Flapping => calls % 2 == 0,
                    Fault::Refuse(_) => false,
                    _ => true,
                })
                .cloned()
        })
    }

    fn unreachable(&self) -> NodeError {
        NodeError::Unreachable {
            address: self.address.clone(),
            message: "connection refused (simulated)".to_owned(),
        }
    }
}

fn limit_of(engine: Engine, s: &State) -> u64 {
    let name = engine.memory_limit_parameter();
    s.params
        .get(name)
        .and_then(|v| {
            catalog::catalog(engine)
                .normalize(name, &serde_json::Value::String(v.clone()))
                .ok()
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
}

fn policy_of(engine: Engine, s: &State) -> String {
    match engine {
        Engine::Redis => s
            .params
            .get("maxmemory-policy")
            .cloned()
            .unwrap_or_else(|| "noeviction".to_owned()),
        Engine::Memcached => match s.params.get("evictions").map(String::as_str) {
            Some("off") => "noeviction".to_owned(),
            _ => "allkeys-lru".to_owned(),
        },
    }
}

/// The share of requests that hit: what fits of the working set, shaded by policy.
fn hit_ratio(engine: Engine, s: &State) -> f64 {
    let limit = limit_of(engine, s);
    let fits = if limit == 0 || s.working_set == 0 {
        1.0
    } else {
        (limit as f64 / s.working_set as f64).min(1.0)
    };
    let shade = match policy_of(engine, s).as_str() {
        "allkeys-lfu" | "volatile-lfu" => 0.97,
        "allkeys-lru" | "volatile-lru" => 0.95,
        "volatile-ttl" => 0.9,
        "allkeys-random" | "volatile-random" => 0.85,
        _ => 0.95,
    };
    (fits * shade).clamp(0.0, 1.0)
}

/// After a memory-limit change: evict down to the new limit at once.
fn settle_memory(engine: Engine, s: &mut State) {
    let limit = limit_of(engine, s);
    let target = if limit == 0 {
        s.working_set
    } else {
        s.working_set.min(limit)
    };
    if target < s.used_memory {
        s.evicted_keys += (s.used_memory - target) / KEY_BYTES;
    }
    s.used_memory = target;
}

impl NodeDriver for SimulatedNode {
    fn engine(&self) -> Engine {
        self.engine
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn read(&self) -> BoxFuture<'_, Result<NodeLive, NodeError>> {
        Box::pin(async move {
            self.restart_if_asked();
            match self.fault() {
                Some(Fault::Down) | Some(Fault::Flapping) => return Err(self.unreachable()),
                Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
                _ => {}
            }
            let engine = self.engine;
            Ok(self.with_state(|s| {
                let total = s.hits + s.misses;
                let role = s.role;
                NodeLive {
                    cluster: None,
                    engine: Some(engine),
                    address: Some(self.address.clone()),
                    version: Some(match engine {
                        Engine::Redis => "7.0.15-sim".to_owned(),
                        Engine::Memcached => "1.6.18-sim".to_owned(),
                    }),
                    reachable: true,
                    error: None,
                    revision: s.revision.clone(),
                    parameters: (*s.params).clone(),
                    persisted: None,
                    health: Some(Health {
                        used_memory: Some(s.used_memory),
                        max_memory: Some(limit_of(engine, s)),
                        keyspace_hits: Some(s.hits),
                        keyspace_misses: Some(s.misses),
                        hit_ratio: (total > 0).then(|| s.hits as f64 / total as f64),
                        evicted_keys: Some(s.evicted_keys),
                        evictions_per_sec: Some(s.evictions_per_sec),
                        connected_clients: Some(10),
                        ops_per_sec: Some(s.ops_per_sec),
                        latency_ms: Some(0.2),
                        role: Some(role),
                        replication_link: (role == Role::Replica)
                            .then_some(crate::pure::live::LinkState::Up),
                        keys: Some(s.used_memory / KEY_BYTES),
                        uptime_seconds: None,
                        // Replicas always caught up, no resync: the model has no lag.
                        topology: (engine == Engine::Redis).then(|| Topology {
                            primary: s.primary.clone(),
                            offset: Some(0),
                            full_syncs: Some(0),
                            ..Topology::default()
                        }),
                    }),
                }
            }))
        })
    }

    fn apply<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Applied, NodeError>> {
        Box::pin(async move {
            self.restart_if_asked();
            match self.fault() {
                Some(Fault::Down) | Some(Fault::Flapping) => return Err(self.unreachable()),
                Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
                _ => {}
            }
            let cat = catalog::catalog(self.engine);
            if let Some(name) = params.keys().find(|n| cat.needs_restart(n)) {
                return Err(NodeError::NeedsRestart {
                    address: self.address.clone(),
                    parameter: name.clone(),
                });
            }
            let engine = self.engine;
            self.with_state(|s| {
                let refused: BTreeSet<&String> = s
                    .faults
                    .iter()
                    .filter_map(|f| match f {
                        Fault::Refuse(p) => Some(p),
                        _ => None,
                    })
                    .collect();
                // All or nothing: check everything before changing anything.
                if let Some(name) = params.keys().find(|n| refused.contains(n)) {
                    return Err(NodeError::Refused {
                        address: self.address.clone(),
                        parameter: name.clone(),
                        message: format!("ERR CONFIG SET failed (possibly related to argument '{name}') - simulated refusal"),
                    });
                }
                let mut applied = Applied::default();
                for (name, value) in params {
                    let old = Arc::make_mut(&mut s.params).insert(name.clone(), value.clone());
                    if old.as_deref() != Some(value.as_str()) {
                        applied.changed.insert(name.clone(), old);
                    }
                }
                settle_memory(engine, s);
                Ok(applied)
            })
        })
    }

    fn failover<'a>(
        &'a self,
        to: &'a str,
        _timeout: Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(async move {
            if let Some(Fault::Down | Fault::Flapping) = self.fault() {
                return Err(self.unreachable());
            }
            self.failover_now(to)
        })
    }

    /// `CLUSTER FAILOVER` on the replica at `to`, modelled as `FAILOVER TO` from here:
    /// the same outcome (the replica leads, this node and the shard's replicas follow it).
    fn cluster_failover<'a>(
        &'a self,
        to: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        self.failover(to, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(maxmemory: &str) -> SimulatedNode {
        let params: BTreeMap<String, String> = [
            ("maxmemory".to_owned(), maxmemory.to_owned()),
            ("maxmemory-policy".to_owned(), "allkeys-lru".to_owned()),
        ]
        .into_iter()
        .collect();
        SimulatedNode::new(
            "sim:1",
            Engine::Redis,
            Role::Primary,
            params,
            1 << 30,
            1000.0,
        )
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds")
            .block_on(f)
    }

    #[test]
    fn a_simulated_failover_shows_in_the_reading() {
        let n = node("1gb");
        let h = block_on(n.read()).unwrap().health.unwrap();
        assert_eq!(h.role, Some(Role::Primary));
        assert_eq!(h.topology.unwrap().primary, None);
        // Made a replica of another node by hand (`REPLICAOF sim:2`).
        n.replicate_from(Some("sim:2".into()));
        let h = block_on(n.read()).unwrap().health.unwrap();
        assert_eq!(h.role, Some(Role::Replica));
        assert_eq!(h.replication_link, Some(crate::pure::live::LinkState::Up));
        assert_eq!(h.topology.unwrap().primary.as_deref(), Some("sim:2"));
        // And back (`REPLICAOF NO ONE`).
        n.replicate_from(None);
        let h = block_on(n.read()).unwrap().health.unwrap();
        assert_eq!(h.role, Some(Role::Primary));
    }

    #[test]
    fn hit_ratio_follows_memory() {
        let big = node("2gb");
        let small = node("256mb");
        big.advance(10.0);
        small.advance(10.0);
        let hr = |n: &SimulatedNode| {
            block_on(n.read())
                .unwrap()
                .health
                .unwrap()
                .hit_ratio
                .unwrap()
        };
        assert_eq!(hr(&big), 0.95);
        assert_eq!(hr(&small), 0.2375);
    }

    #[test]
    fn shrinking_memory_evicts_at_once() {
        let n = node("1gb");
        let before = block_on(n.read()).unwrap().health.unwrap();
        assert_eq!(before.used_memory, Some(1 << 30));
        let set: BTreeMap<String, String> = [("maxmemory".to_owned(), "536870912".to_owned())]
            .into_iter()
            .collect();
        let applied = block_on(n.apply(&set)).unwrap();
        assert_eq!(applied.changed["maxmemory"].as_deref(), Some("1gb"));
        let after = block_on(n.read()).unwrap().health.unwrap();
        assert_eq!(after.used_memory, Some(1 << 29));
        assert_eq!(after.evicted_keys, Some((1 << 29) / KEY_BYTES));
    }

    #[test]
    fn a_refused_parameter_changes_nothing() {
        let n = node("1gb");
        n.inject(Fault::Refuse("maxmemory-policy".to_owned()));
        let set: BTreeMap<String, String> = [
            ("maxmemory".to_owned(), "2147483648".to_owned()),
            ("maxmemory-policy".to_owned(), "allkeys-lfu".to_owned()),
        ]
        .into_iter()
        .collect();
        let err = block_on(n.apply(&set)).unwrap_err();
        assert!(
            matches!(err, NodeError::Refused { ref parameter, .. } if parameter == "maxmemory-policy")
        );
        let live = block_on(n.read()).unwrap();
        assert_eq!(live.parameters["maxmemory"], "1gb");
        assert_eq!(live.parameters["maxmemory-policy"], "allkeys-lru");
    }

    #[test]
    fn down_slow_and_flapping_nodes_behave_as_faults() {
        let n = node("1gb");
        n.inject(Fault::Down);
        assert!(matches!(
            block_on(n.read()),
            Err(NodeError::Unreachable { .. })
        ));
        n.clear_faults();
        n.inject(Fault::Flapping);
        let results: Vec<bool> = (0..4).map(|_| block_on(n.read()).is_ok()).collect();
        assert_eq!(results.iter().filter(|ok| **ok).count(), 2);
        n.clear_faults();
        n.inject(Fault::Slow(Duration::from_millis(200)));
        let timed =
            block_on(async { tokio::time::timeout(Duration::from_millis(20), n.read()).await });
        assert!(timed.is_err(), "a slow node outlasts a short timeout");
    }

    #[test]
    fn a_simulated_failover_moves_the_role_and_the_other_replicas_follow() {
        let net = Arc::new(Replication::default());
        let nodes: Vec<Arc<SimulatedNode>> = ["sim:1", "sim:2", "sim:3"]
            .iter()
            .map(|a| {
                let mut n = node("1gb");
                n.address = (*a).to_owned();
                let n = Arc::new(n);
                net.join(&n);
                n
            })
            .collect();
        nodes[1].replicate_from(Some("sim:1".into()));
        nodes[2].replicate_from(Some("sim:1".into()));
        let refused = block_on(nodes[1].failover("sim:3", Duration::from_secs(1)));
        assert!(
            matches!(&refused, Err(NodeError::Refused { message, .. }) if message.contains("replica")),
            "{refused:?}"
        );
        block_on(nodes[0].failover("sim:2", Duration::from_secs(1))).unwrap();
        let role = |n: &SimulatedNode| {
            let live = block_on(n.read()).unwrap();
            let h = live.health.unwrap();
            (h.role.unwrap(), h.topology.unwrap().primary)
        };
        assert_eq!(role(&nodes[0]), (Role::Replica, Some("sim:2".to_owned())));
        assert_eq!(role(&nodes[1]), (Role::Primary, None));
        assert_eq!(role(&nodes[2]), (Role::Replica, Some("sim:2".to_owned())));
        let again = block_on(nodes[0].failover("sim:3", Duration::from_secs(1)));
        assert!(again.is_err(), "a replica takes no FAILOVER");
    }

    #[test]
    fn a_start_only_parameter_needs_a_restart() {
        let n = node("1gb");
        let set: BTreeMap<String, String> = [("databases".to_owned(), "32".to_owned())]
            .into_iter()
            .collect();
        assert!(matches!(
            block_on(n.apply(&set)),
            Err(NodeError::NeedsRestart { .. })
        ));
    }
}
