//! The plan: desired state at a revision against a live-state snapshot, per node what
//! would change, the risks only live data can show, and the staged batches the rollout
//! policy gives. A pure function; the same inputs give the same plan byte for byte.
//!
//! Roles and shards are the live ones (`topology`): after a failover the node that runs
//! as the primary goes last and the old primary, now its replica, goes with the replicas.
//! A node not read keeps its declared role. Where declaration and live state differ, the
//! plan says so (`topology` notes) and goes on.
//!
//! Batching: the nodes that need a change are ordered replicas first, then primaries;
//! within a role, round-robin across shards (the first replica of every shard, then the
//! second...), so that a batch spreads over shards instead of draining one. Each stage
//! takes the next nodes up to its cumulative target; a stage is cut into batches so that
//! no batch holds more nodes of one shard than `maxUnavailablePerShard` (one in cluster
//! mode, whatever it says).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::pure::catalog::{self, Product};
use crate::pure::diff::{self, ParamChange, Risk, RiskKind};
use crate::pure::live::LiveState;
use crate::pure::spec::model::{Cluster, ClusterMode, Desired, Role, Stage};
use crate::pure::topology::{self, ClusterTopology, TopologyNote};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub commit: Option<String>,
    pub clusters: Vec<ClusterPlan>,
    /// Nodes in the snapshot that no cluster declares.
    pub undeclared: Vec<String>,
}

impl Plan {
    /// Every declared node was read and none needs a change.
    pub fn converged(&self) -> bool {
        self.clusters
            .iter()
            .all(|c| c.nodes.is_empty() && c.unreachable.is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    pub cluster: String,
    /// What the cluster's `spec.engine` says (valkey for Valkey).
    pub engine: Product,
    /// Nodes that need a change, by id.
    pub nodes: Vec<NodePlan>,
    /// Nodes that already match.
    pub in_sync: Vec<String>,
    /// Nodes with no usable live state: not planned.
    pub unreachable: Vec<Unreachable>,
    pub risks: Vec<Risk>,
    pub stages: Vec<PlannedStage>,
    /// Nodes whose live role or shard is not the declared one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology: Vec<TopologyNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePlan {
    pub id: String,
    /// The live shard (the declared one when the node's primary is not known).
    pub shard: String,
    /// The live role (the declared one when the node did not report one).
    pub role: Role,
    pub changes: Vec<ParamChange>,
    /// True when at least one change needs a restart.
    pub restart: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreachable {
    pub id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStage {
    /// The stage's position in the rollout policy, from 1 (stages that add no node are
    /// skipped, so the numbers can have gaps).
    pub index: usize,
    /// The stage as written (`1`, `25%`).
    pub stage: String,
    /// The cumulative number of nodes done after this stage.
    pub target: usize,
    /// Batches in order; each a list of node ids.
    pub batches: Vec<Vec<String>>,
}

/// Plan every cluster of `desired` against `live`.
pub fn plan(desired: &Desired, live: &LiveState) -> Plan {
    let clusters = desired
        .clusters
        .values()
        .map(|c| plan_cluster(c, live))
        .collect();
    // One set of declared ids, not a search of every cluster per live node (which was
    // quadratic: 0.46 s for 10,000 nodes).
    let declared: std::collections::HashSet<&str> = desired
        .clusters
        .values()
        .flat_map(|c| c.nodes.iter().map(|n| n.id.as_str()))
        .collect();
    let undeclared: Vec<String> = live
        .nodes
        .keys()
        .filter(|id| !declared.contains(id.as_str()))
        .cloned()
        .collect();
    Plan {
        commit: desired.commit.clone(),
        clusters,
        undeclared,
    }
}

/// One cluster's plan against its nodes' live state. Its steps: each node's changes
/// (or why it is left out), the risks (primaries restarting, data evicted, eviction
/// policies switched), the rollout order and the batches.
pub fn plan_cluster(cluster: &Cluster, live: &LiveState) -> ClusterPlan {
    let topology = topology::resolve_live(cluster, live);
    let NodePlans {
        nodes,
        in_sync,
        unreachable,
        evicting,
    } = node_plans(cluster, live, &topology);
    let mut risks: Vec<Risk> = Vec::new();
    risks.extend(primary_restart_risk(&nodes));
    risks.extend(eviction_risk(cluster, evicting));
    risks.extend(policy_switch_risks(cluster, &nodes));
    risks.sort();

    let order = rollout_order(&nodes);
    // Redis Cluster: a shard with two members down at once may lose its slots (the
    // replica that would take over is the other one), so one node per shard, whatever
    // `maxUnavailablePerShard` says.
    let per_shard = match cluster.mode {
        ClusterMode::Cluster => 1,
        ClusterMode::Replication => cluster.rollout.max_unavailable_per_shard as usize,
    };
    let stages = batches(&order, &cluster.rollout.stages, per_shard);
    ClusterPlan {
        cluster: cluster.name.clone(),
        engine: cluster.product,
        nodes,
        in_sync,
        unreachable,
        risks,
        stages,
        topology: topology.notes,
    }
}

/// The nodes of a cluster sorted by what the plan does with them.
struct NodePlans {
    nodes: Vec<NodePlan>,
    in_sync: Vec<String>,
    unreachable: Vec<Unreachable>,
    /// (node, used memory, new limit) where the new memory limit is below the usage.
    evicting: Vec<(String, u64, u64)>,
}

/// Each declared node: left out (not in the snapshot, unreachable), in sync, or its
/// changes.
fn node_plans(cluster: &Cluster, live: &LiveState, topology: &ClusterTopology) -> NodePlans {
    let mut nodes = Vec::new();
    let mut in_sync = Vec::new();
    let mut unreachable = Vec::new();
    let mut evicting: Vec<(String, u64, u64)> = Vec::new();
    let mem_param = cluster.engine.memory_limit_parameter();
    for node in &cluster.nodes {
        let Some(state) = live.nodes.get(&node.id) else {
            unreachable.push(Unreachable {
                id: node.id.clone(),
                reason: "not in the live snapshot".into(),
            });
            continue;
        };
        if !state.reachable {
            unreachable.push(Unreachable {
                id: node.id.clone(),
                reason: state
                    .error
                    .clone()
                    .unwrap_or_else(|| "reported as unreachable, no reason given".into()),
            });
            continue;
        }
        let changes = diff::node_changes(cluster.catalog(), &cluster.parameters, &state.parameters);
        if changes.is_empty() {
            in_sync.push(node.id.clone());
            continue;
        }
        if let (Some(change), Some(used)) = (
            changes.iter().find(|c| c.name == mem_param),
            state.health.as_ref().and_then(|h| h.used_memory),
        ) {
            if let Some(limit) = change.new.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                if limit > 0 && used > limit {
                    evicting.push((node.id.clone(), used, limit));
                }
            }
        }
        nodes.push(NodePlan {
            id: node.id.clone(),
            shard: topology.shard(&node.id).to_owned(),
            role: topology.role(&node.id),
            restart: changes.iter().any(|c| c.restart),
            changes,
        });
    }

    NodePlans {
        nodes,
        in_sync,
        unreachable,
        evicting,
    }
}

/// Primaries (live) that restart for start-only parameters.
fn primary_restart_risk(nodes: &[NodePlan]) -> Option<Risk> {
    let restarting_primaries: Vec<String> = nodes
        .iter()
        .filter(|n| n.restart && n.role == Role::Primary)
        .map(|n| n.id.clone())
        .collect();
    if restarting_primaries.is_empty() {
        return None;
    }
    Some(Risk {
        kind: RiskKind::PrimaryRestart,
        message: format!(
            "{} primar{} will restart for start-only parameters",
            restarting_primaries.len(),
            if restarting_primaries.len() == 1 {
                "y"
            } else {
                "ies"
            }
        ),
        nodes: restarting_primaries,
    })
}

/// A memory limit set below what the nodes use: the difference is evicted.
fn eviction_risk(cluster: &Cluster, evicting: Vec<(String, u64, u64)>) -> Option<Risk> {
    let mem_param = cluster.engine.memory_limit_parameter();
    if evicting.is_empty() {
        return None;
    }
    let total: u64 = evicting.iter().map(|(_, used, limit)| used - limit).sum();
    let detail: Vec<String> = evicting
        .iter()
        .map(|(id, used, limit)| {
            format!(
                "{id} uses {} > {}",
                catalog::approx_size(*used),
                catalog::human_size(*limit)
            )
        })
        .collect();
    Some(Risk {
        kind: RiskKind::EvictsData,
        message: format!(
            "{mem_param} below current usage on {} node{}: about {} would be evicted ({})",
            evicting.len(),
            if evicting.len() == 1 { "" } else { "s" },
            catalog::approx_size(total),
            detail.join("; ")
        ),
        nodes: evicting.into_iter().map(|(id, _, _)| id).collect(),
    })
}

fn policy_switch_risks(cluster: &Cluster, nodes: &[NodePlan]) -> Vec<Risk> {
    let mut risks = Vec::new();
    // Eviction-policy switches: one risk per distinct change (values normalised, so
    // `ALLKEYS-LRU` and `allkeys-lru` are one), naming only the nodes making it.
    let cat = cluster.catalog();
    let mut switches: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for n in nodes {
        for c in &n.changes {
            if !cluster
                .engine
                .eviction_parameters()
                .contains(&c.name.as_str())
            {
                continue;
            }
            let (Some(old), Some(new)) = (&c.old, &c.new) else {
                continue;
            };
            let old = cat
                .normalize(&c.name, &serde_json::Value::String(old.clone()))
                .unwrap_or_else(|_| old.clone());
            switches
                .entry((c.name.clone(), old, new.clone()))
                .or_default()
                .push(n.id.clone());
        }
    }
    for ((name, old, new), ids) in switches {
        let change = ParamChange {
            name,
            old: Some(old),
            new: Some(new),
            restart: false,
            unchecked: false,
        };
        for r in diff::eviction_and_memory_risks(cluster.engine, &[change], true) {
            if r.kind == RiskKind::EvictionPolicySwitch {
                risks.push(Risk {
                    nodes: ids.clone(),
                    ..r
                });
            }
        }
    }
    risks
}

/// Replicas before primaries; within a role, round-robin over shards.
fn rollout_order(nodes: &[NodePlan]) -> Vec<(&str, &str)> {
    let mut rank_in_shard: HashMap<(&str, Role), usize> = HashMap::new();
    let mut keyed: Vec<(u8, usize, &str, &str)> = nodes
        .iter()
        .map(|n| {
            let role_rank = match n.role {
                Role::Replica => 0,
                Role::Primary => 1,
            };
            let r = rank_in_shard.entry((n.shard.as_str(), n.role)).or_insert(0);
            let rank = *r;
            *r += 1;
            (role_rank, rank, n.shard.as_str(), n.id.as_str())
        })
        .collect();
    keyed.sort();
    keyed
        .into_iter()
        .map(|(_, _, shard, id)| (id, shard))
        .collect()
}

/// Cut the ordered nodes into stages and batches.
fn batches(order: &[(&str, &str)], stages: &[Stage], per_shard: usize) -> Vec<PlannedStage> {
    let per_shard = per_shard.max(1);
    let total = order.len();
    let mut out = Vec::new();
    let mut done = 0usize;
    for (index, stage) in stages.iter().enumerate() {
        let target = stage.target(total).max(done);
        if target == done {
            continue;
        }
        let mut pending: Vec<(&str, &str)> = order[done..target].to_vec();
        let mut stage_batches = Vec::new();
        while !pending.is_empty() {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            let mut batch = Vec::new();
            let mut rest = Vec::new();
            for (id, shard) in pending {
                let c = counts.entry(shard).or_insert(0);
                if *c < per_shard {
                    *c += 1;
                    batch.push(id.to_owned());
                } else {
                    rest.push((id, shard));
                }
            }
            stage_batches.push(batch);
            pending = rest;
        }
        out.push(PlannedStage {
            index: index + 1,
            stage: stage.to_string(),
            target,
            batches: stage_batches,
        });
        done = target;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(id: &str, shard: &str, role: Role) -> NodePlan {
        NodePlan {
            id: id.into(),
            shard: shard.into(),
            role,
            changes: Vec::new(),
            restart: false,
        }
    }

    #[test]
    fn plan_never_takes_two_nodes_of_one_shard_at_once() {
        let nodes = vec![
            np("a1", "a", Role::Primary),
            np("a2", "a", Role::Replica),
            np("a3", "a", Role::Replica),
            np("b1", "b", Role::Primary),
            np("b2", "b", Role::Replica),
            np("b3", "b", Role::Replica),
        ];
        let order = rollout_order(&nodes);
        let ids: Vec<&str> = order.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec!["a2", "b2", "a3", "b3", "a1", "b1"]);
        let stages = batches(&order, &[Stage::Count(1), Stage::Percent(100)], 1);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].batches, vec![vec!["a2".to_string()]]);
        assert_eq!(
            stages[1].batches,
            vec![
                vec!["b2".to_string(), "a3".to_string()],
                vec!["b3".to_string(), "a1".to_string()],
                vec!["b1".to_string()],
            ]
        );
    }

    #[test]
    fn live_roles_order_the_rollout_and_a_failover_is_reported_not_refused() {
        use crate::pure::catalog::{CatalogId, Engine, Product};
        use crate::pure::live::{Health, NodeLive, Topology};
        use crate::pure::spec::model::{Managed, Node, Param};
        let node = |id: &str, shard: &str, role: Option<Role>| Node {
            id: id.into(),
            address: format!("{id}:6379"),
            shard: shard.into(),
            role,
            managed: Managed::Direct,
            labels: BTreeMap::new(),
        };
        let cluster = Cluster {
            name: "c".into(),
            file: "clusters/c.yaml".into(),
            labels: BTreeMap::new(),
            engine: Engine::Redis,
            product: Product::Redis,
            version: None,
            catalog: CatalogId::default_for(Engine::Redis),
            profile: None,
            parameters: [(
                "hz".to_owned(),
                Param {
                    value: "20".into(),
                    written: "20".into(),
                    profile: None,
                    unchecked: false,
                },
            )]
            .into_iter()
            .collect(),
            auth: None,
            tls: None,
            sentinel: None,
            mode: Default::default(),
            nodes: vec![
                node("a1", "a", Some(Role::Primary)),
                node("a2", "a", Some(Role::Replica)),
                node("a3", "a", None),
            ],
            rollout: Default::default(),
        };
        // a2 took over by hand; a1 and a3 follow it.
        let read = |role: Role, primary: Option<&str>| NodeLive {
            reachable: true,
            parameters: [("hz".to_owned(), "10".to_owned())].into_iter().collect(),
            health: Some(Health {
                role: Some(role),
                topology: Some(Topology {
                    primary: primary.map(str::to_owned),
                    ..Topology::default()
                }),
                ..Health::default()
            }),
            ..NodeLive::default()
        };
        let live = LiveState {
            sentinels: Default::default(),
            version: 1,
            taken_at: None,
            nodes: [
                ("a1".to_owned(), read(Role::Replica, Some("a2:6379"))),
                ("a2".to_owned(), read(Role::Primary, None)),
                ("a3".to_owned(), read(Role::Replica, Some("a2:6379"))),
            ]
            .into_iter()
            .collect(),
        };
        let p = plan_cluster(&cluster, &live);
        let order: Vec<&str> = p
            .stages
            .iter()
            .flat_map(|s| s.batches.iter().flatten())
            .map(String::as_str)
            .collect();
        assert_eq!(order, vec!["a1", "a3", "a2"]);
        let texts: Vec<String> = p
            .topology
            .iter()
            .map(|t| format!("{}: {}", t.node, t.text))
            .collect();
        assert_eq!(
            texts,
            vec![
                "a1: declared primary, runs as a replica of a2",
                "a2: declared replica, runs as a primary",
            ]
        );
        let roles: Vec<(&str, Role)> = p.nodes.iter().map(|n| (n.id.as_str(), n.role)).collect();
        assert_eq!(
            roles,
            vec![
                ("a1", Role::Replica),
                ("a2", Role::Primary),
                ("a3", Role::Replica)
            ]
        );
    }

    #[test]
    fn cluster_mode_takes_one_node_of_a_shard_at_a_time_whatever_the_policy_says() {
        use crate::pure::catalog::{CatalogId, Engine, Product};
        use crate::pure::live::NodeLive;
        use crate::pure::spec::model::{Managed, Node, Param, RolloutPolicy};
        let node = |id: &str| Node {
            id: id.into(),
            address: format!("{id}:6379"),
            shard: "a".into(),
            role: None,
            managed: Managed::Direct,
            labels: BTreeMap::new(),
        };
        let mut cluster = Cluster {
            name: "c".into(),
            file: "clusters/c.yaml".into(),
            labels: BTreeMap::new(),
            engine: Engine::Redis,
            product: Product::Redis,
            version: None,
            catalog: CatalogId::default_for(Engine::Redis),
            profile: None,
            parameters: [(
                "hz".to_owned(),
                Param {
                    value: "20".into(),
                    written: "20".into(),
                    profile: None,
                    unchecked: false,
                },
            )]
            .into_iter()
            .collect(),
            auth: None,
            tls: None,
            sentinel: None,
            mode: ClusterMode::Replication,
            nodes: vec![node("a1"), node("a2"), node("a3")],
            rollout: RolloutPolicy {
                stages: vec![Stage::Percent(100)],
                max_unavailable_per_shard: 3,
                ..RolloutPolicy::default()
            },
        };
        let read = NodeLive {
            reachable: true,
            parameters: [("hz".to_owned(), "10".to_owned())].into_iter().collect(),
            ..NodeLive::default()
        };
        let live = LiveState {
            sentinels: Default::default(),
            version: 1,
            taken_at: None,
            nodes: ["a1", "a2", "a3"]
                .into_iter()
                .map(|id| (id.to_owned(), read.clone()))
                .collect(),
        };
        let batches = |c: &Cluster| plan_cluster(c, &live).stages[0].batches.len();
        assert_eq!(batches(&cluster), 1);
        cluster.mode = ClusterMode::Cluster;
        assert_eq!(batches(&cluster), 3);
    }

    #[test]
    fn stages_that_add_nothing_are_skipped() {
        let nodes = vec![np("x", "x", Role::Primary), np("y", "y", Role::Primary)];
        let order = rollout_order(&nodes);
        let stages = batches(
            &order,
            &[Stage::Count(1), Stage::Percent(50), Stage::Percent(100)],
            1,
        );
        let names: Vec<&str> = stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, vec!["1", "100%"]);
    }
}
