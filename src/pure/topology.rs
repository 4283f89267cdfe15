//! Live topology of one cluster: each declared node's role and shard as the nodes report
//! them, matched to the declaration. A replica's primary (`host:port` in its reading) is
//! named by the declared node at that address; a replica's shard is the shard of the
//! primary it follows. The plan, drift and the gates order and limit by these live roles
//! and shards; a node that was not read keeps its declared role (primary when none is
//! declared: the cautious guess) and shard.
//!
//! A declared role or shard that differs from the live one is a [`TopologyNote`]
//! ("declared primary, runs as a replica of b2"): reported, never a refusal.
//!
//! A cluster that names its Sentinels (`spec.sentinel`) has its primary from them:
//! [`sentinel_view`] weighs their answers (a quorum answering, all agreeing, none failing
//! over) and [`resolve_with`] places the primary they agree on as the primary, whatever
//! a stale reading of a node says.
//! In cluster mode (`mode: cluster`) the declared nodes are also checked against the
//! cluster's own view (`CLUSTER NODES` and `CLUSTER INFO` in the readings,
//! [`cluster_notes`]): a node the cluster does not know or has left, a node without
//! cluster mode, a declared shard the cluster splits, slots no primary covers, and a
//! primary serving slots that no node declares.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pure::live::{
    same_address, ClusterMember, ClusterView, LinkState, NodeLive, SentinelAnswer, Topology,
    CLUSTER_SLOTS,
};
use crate::pure::rollout::FailoverChoice;
use crate::pure::spec::model::{Cluster, ClusterMode, Role, Sentinel};

/// How a shard's primary role moves to a replica: the cluster's mode chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailoverMethod {
    /// `FAILOVER TO host port` sent to the primary (Redis 6.2+ replication).
    Replication,
    /// `CLUSTER FAILOVER` sent to the replica (Redis Cluster).
    Cluster,
}

impl FailoverMethod {
    pub fn for_mode(mode: ClusterMode) -> FailoverMethod {
        match mode {
            ClusterMode::Replication => FailoverMethod::Replication,
            ClusterMode::Cluster => FailoverMethod::Cluster,
        }
    }
}

/// Where one declared node stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The live role when the node was read, else the declared one, else primary.
    pub role: Role,
    /// The live role, when the node was read and reported one.
    pub live: Option<Role>,
    /// The shard of the primary a live replica follows; the declared shard otherwise.
    pub shard: String,
    /// The primary a live replica follows: a declared node's id, or the address it
    /// reports when no node of the cluster is declared there.
    pub follows: Option<String>,
}

/// A declared role or shard the node does not run as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopologyNote {
    pub node: String,
    /// `declared primary, runs as a replica of b2`.
    pub text: String,
}

/// Every declared node of a cluster, placed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTopology {
    pub nodes: BTreeMap<String, Placement>,
    pub notes: Vec<TopologyNote>,
}

impl ClusterTopology {
    /// The node's role for ordering and risks (primary for a node not declared).
    pub fn role(&self, id: &str) -> Role {
        self.nodes.get(id).map(|p| p.role).unwrap_or(Role::Primary)
    }

    /// The node's shard (`id` itself for a node not declared).
    pub fn shard<'a>(&'a self, id: &'a str) -> &'a str {
        self.nodes.get(id).map(|p| p.shard.as_str()).unwrap_or(id)
    }
}

/// Place every node of `cluster` by its reading (`reading(id)`, `None` when not read).
/// Its steps: each node's live role and the primary it follows; each replica's shard
/// through the chain of primaries; the notes where declaration and live state differ.
pub fn resolve<'a>(
    cluster: &Cluster,
    reading: impl Fn(&str) -> Option<&'a NodeLive>,
) -> ClusterTopology {
    resolve_with(cluster, reading, None)
}

/// [`resolve`] from a live-state snapshot: with the primary the cluster's Sentinels
/// agree on, when it names them and the snapshot has their answers (what `plan` and
/// `drift` place nodes by).
pub fn resolve_live(cluster: &Cluster, live: &crate::pure::live::LiveState) -> ClusterTopology {
    let primary = cluster.sentinel.as_ref().and_then(|s| {
        let answers = live.sentinels.get(&cluster.name)?;
        match sentinel_view(cluster, s, answers) {
            SentinelView::Agreed { primary, .. } => Some(primary),
            SentinelView::Unsettled { .. } => None,
        }
    });
    resolve_with(cluster, |id| live.nodes.get(id), primary.as_deref())
}

/// [`resolve`], with the primary the cluster's Sentinels agree on (a node id, from
/// [`sentinel_view`]): that node is the primary, and a node whose reading still says
/// primary (the Sentinels have not turned it into a replica yet) counts as its replica.
pub fn resolve_with<'a>(
    cluster: &Cluster,
    reading: impl Fn(&str) -> Option<&'a NodeLive>,
    sentinel_primary: Option<&str>,
) -> ClusterTopology {
    let mut nodes: BTreeMap<String, Placement> = BTreeMap::new();
    for n in &cluster.nodes {
        let read = reading(&n.id).filter(|r| r.reachable);
        let health = read.and_then(|r| r.health.as_ref());
        let mut live = health.and_then(|h| h.role);
        match sentinel_primary {
            Some(p) if p == n.id => live = Some(Role::Primary),
            Some(p) if live == Some(Role::Primary) => {
                nodes.insert(
                    n.id.clone(),
                    Placement {
                        role: Role::Replica,
                        live: Some(Role::Replica),
                        shard: n.shard.clone(),
                        follows: Some(p.to_owned()),
                    },
                );
                continue;
            }
            _ => {}
        }
        let follows = match live {
            Some(Role::Replica) => health
                .and_then(|h| h.topology.as_ref())
                .and_then(|t| t.primary.as_deref())
                .map(|address| {
                    cluster
                        .nodes
                        .iter()
                        .find(|d| same_address(&d.address, address))
                        .map(|d| d.id.clone())
                        .unwrap_or_else(|| address.to_owned())
                }),
            _ => None,
        };
        nodes.insert(
            n.id.clone(),
            Placement {
                role: live.or(n.role).unwrap_or(Role::Primary),
                live,
                shard: n.shard.clone(),
                follows,
            },
        );
    }
    let shards: BTreeMap<String, String> = nodes
        .keys()
        .map(|id| (id.clone(), root_shard(cluster, &nodes, id)))
        .collect();
    for (id, shard) in shards {
        if let Some(p) = nodes.get_mut(&id) {
            p.shard = shard;
        }
    }
    let mut notes: Vec<TopologyNote> = cluster
        .nodes
        .iter()
        .filter_map(|n| {
            let p = nodes.get(&n.id)?;
            Some(TopologyNote {
                node: n.id.clone(),
                text: note(cluster, n.role, &n.shard, p, &nodes)?,
            })
        })
        .collect();
    if cluster.mode == ClusterMode::Cluster {
        for n in cluster_notes(cluster, &reading) {
            // A replica already reported outside its declared shard is not reported twice.
            let said =
                n.text.starts_with("declared in shard") && notes.iter().any(|m| m.node == n.node);
            if !said {
                notes.push(n);
            }
        }
    }
    ClusterTopology { nodes, notes }
}

/// What a cluster's Sentinels say about its primary, all answers weighed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SentinelView {
    /// A quorum answered, every one that answered names `primary` (a declared node)
    /// and none is failing over.
    Agreed { primary: String, address: String },
    /// Anything else, and why in words: no primary is decided on such a view.
    Unsettled { reason: String },
}

impl SentinelView {
    /// The node the Sentinels agree is the primary.
    pub fn primary(&self) -> Option<&str> {
        match self {
            SentinelView::Agreed { primary, .. } => Some(primary),
            SentinelView::Unsettled { .. } => None,
        }
    }
}

/// Weigh `answers` of the Sentinels `sentinel` names. Its steps: who answered (a
/// quorum must: a majority of those named); whether one of them is failing over; whether
/// all that answered name the same primary; whether a declared node is there.
pub fn sentinel_view(
    cluster: &Cluster,
    sentinel: &Sentinel,
    answers: &[SentinelAnswer],
) -> SentinelView {
    let name = &sentinel.master_name;
    let unsettled = |reason: String| SentinelView::Unsettled { reason };
    let answered: Vec<&SentinelAnswer> = answers
        .iter()
        .filter(|a| a.error.is_none() && a.primary.is_some())
        .collect();
    let silent: Vec<String> = answers
        .iter()
        .filter(|a| a.error.is_some() || a.primary.is_none())
        .map(|a| {
            format!(
                "{}: {}",
                a.address,
                a.error.as_deref().unwrap_or("named no primary")
            )
        })
        .collect();
    let unasked: Vec<&String> = sentinel
        .addresses
        .iter()
        .filter(|s| !answers.iter().any(|a| same_address(&a.address, s)))
        .collect();
    if answered.len() < sentinel.quorum() {
        let mut why = silent;
        why.extend(unasked.iter().map(|s| format!("{s}: not asked yet")));
        return unsettled(format!(
            "only {} of the {} Sentinels of {name} answered (a quorum is {}): {}",
            answered.len(),
            sentinel.addresses.len(),
            sentinel.quorum(),
            why.join("; ")
        ));
    }
    let failing: Vec<&str> = answered
        .iter()
        .filter(|a| a.failing_over)
        .map(|a| a.address.as_str())
        .collect();
    if !failing.is_empty() {
        return unsettled(format!(
            "the Sentinels of {name} are failing over its primary ({} in progress)",
            failing.join(", ")
        ));
    }
    let named = |address: &str| {
        cluster
            .nodes
            .iter()
            .find(|n| same_address(&n.address, address))
            .map(|n| format!("{} ({address})", n.id))
            .unwrap_or_else(|| address.to_owned())
    };
    let first = answered[0].primary.as_deref().unwrap_or_default();
    if answered
        .iter()
        .any(|a| !a.primary.as_deref().is_some_and(|p| same_address(p, first)))
    {
        let says: Vec<String> = answered
            .iter()
            .map(|a| {
                format!(
                    "{} names {}",
                    a.address,
                    named(a.primary.as_deref().unwrap_or_default())
                )
            })
            .chain(silent)
            .collect();
        return unsettled(format!(
            "the Sentinels of {name} do not agree on its primary: {}",
            says.join("; ")
        ));
    }
    match cluster
        .nodes
        .iter()
        .find(|n| same_address(&n.address, first))
    {
        Some(n) => SentinelView::Agreed {
            primary: n.id.clone(),
            address: first.to_owned(),
        },
        None => unsettled(format!(
            "the Sentinels of {name} name {first} its primary, which no node of {} declares",
            cluster.name
        )),
    }
}

/// The first 8 characters of a cluster node id, as people quote them.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// A cluster-mode cluster's declared nodes against the cluster's own view (the views in
/// the readings of the declared nodes). Its steps: each node a member the others know;
/// each declared shard one shard of the cluster; every slot covered; every primary
/// that serves slots declared.
pub fn cluster_notes<'a>(
    cluster: &Cluster,
    reading: &impl Fn(&str) -> Option<&'a NodeLive>,
) -> Vec<TopologyNote> {
    let view_of = |id: &str| -> Option<&'a ClusterView> {
        reading(id)
            .filter(|r| r.reachable)
            .and_then(|r| r.health.as_ref())
            .and_then(|h| h.topology.as_ref())
            .and_then(|t| t.cluster.as_ref())
    };
    let views: Vec<(&str, &ClusterView)> = cluster
        .nodes
        .iter()
        .filter_map(|n| Some((n.id.as_str(), view_of(&n.id)?)))
        .collect();
    let mut notes = Vec::new();
    let mut add = |node: &str, text: String| {
        notes.push(TopologyNote {
            node: node.to_owned(),
            text,
        })
    };
    for n in &cluster.nodes {
        let read = reading(&n.id).filter(|r| r.reachable);
        let others: Vec<&ClusterView> = views
            .iter()
            .filter(|(id, _)| *id != n.id)
            .map(|(_, v)| *v)
            .collect();
        match (read, view_of(&n.id)) {
            (Some(r), None) if r.health.is_some() => add(
                &n.id,
                "declared in a `mode: cluster` cluster, but runs without cluster mode \
                 (cluster_enabled:0)"
                    .to_owned(),
            ),
            (Some(_), Some(mine)) if !others.is_empty() => {
                if let Some(text) = membership(&n.address, mine, &others) {
                    add(&n.id, text);
                }
            }
            (None, _)
                if !views.is_empty() && !views.iter().any(|(_, v)| v.at(&n.address).is_some()) =>
            {
                add(
                    &n.id,
                    format!(
                        "the cluster does not know {}: no member lists its address",
                        n.address
                    ),
                );
            }
            _ => {}
        }
    }
    // The view of the first read member the most others agree with stands for the cluster:
    // a node that left the cluster sees only itself.
    let Some(view) = views
        .iter()
        .max_by_key(|(_, v)| {
            (
                views
                    .iter()
                    .filter(|(_, o)| o.member(&v.id).is_some())
                    .count(),
                std::cmp::Reverse(v.nodes.len() == 1),
            )
        })
        .map(|(_, v)| *v)
    else {
        return notes;
    };
    for (node, text) in shard_notes(cluster, view) {
        add(&node, text);
    }
    if view.slots_assigned < CLUSTER_SLOTS {
        add(
            &cluster.name,
            format!(
                "slots not covered: {} of {CLUSTER_SLOTS} slots have no primary \
                 (cluster_state {})",
                CLUSTER_SLOTS - view.slots_assigned,
                view.state
            ),
        );
    }
    for m in view.nodes.iter().filter(|m| !m.slots.is_empty()) {
        if !cluster
            .nodes
            .iter()
            .any(|n| same_address(&n.address, &m.address))
        {
            add(
                &m.address,
                format!(
                    "a primary of the cluster (node {}, slots {}) that no node of {} declares",
                    short(&m.id),
                    m.slots_text(),
                    cluster.name
                ),
            );
        }
    }
    notes
}

/// Whether the other members know the node whose own view is `mine`, in words when not.
fn membership(address: &str, mine: &ClusterView, others: &[&ClusterView]) -> Option<String> {
    let known: Vec<&ClusterMember> = others.iter().filter_map(|o| o.member(&mine.id)).collect();
    if known.is_empty() {
        return Some(match others.iter().find_map(|o| o.at(address)) {
            Some(m) => format!(
                "the cluster does not know it: its node id {} is not a member; the cluster \
                 knows node {} at its address (it left the cluster or was reset)",
                short(&mine.id),
                short(&m.id)
            ),
            None => format!(
                "the cluster does not know it: no other member lists its node id {} (it \
                 left the cluster or never joined)",
                short(&mine.id)
            ),
        });
    }
    known
        .iter()
        .any(|m| m.has_flag("fail"))
        .then(|| format!("the cluster marks node {} as failed", short(&mine.id)))
}

/// Each declared shard against the cluster's shards (a primary and its replicas): the
/// nodes the cluster puts outside the shard most of the declared shard's nodes are in,
/// and declared primaries that serve no slots.
fn shard_notes(cluster: &Cluster, view: &ClusterView) -> Vec<(String, String)> {
    // Declared shard → [(node, the cluster shard it is in: its primary's id)].
    let mut declared: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    let mut out = Vec::new();
    for n in &cluster.nodes {
        let Some(m) = view.at(&n.address) else {
            continue;
        };
        declared
            .entry(n.shard.as_str())
            .or_default()
            .push((n.id.as_str(), view.shard_of(&m.id)));
        if n.role == Some(Role::Primary) && m.has_flag("master") && m.slots.is_empty() {
            out.push((
                n.id.clone(),
                "runs as a primary that serves no slots (the cluster gives its shard none)"
                    .to_owned(),
            ));
        }
    }
    let describe = |primary: &str| {
        let m = view.member(primary);
        let name = m
            .and_then(|m| {
                cluster
                    .nodes
                    .iter()
                    .find(|n| same_address(&n.address, &m.address))
            })
            .map(|n| n.id.clone())
            .or_else(|| m.map(|m| m.address.clone()))
            .unwrap_or_else(|| short(primary).to_owned());
        match m.map(ClusterMember::slots_text).filter(|s| !s.is_empty()) {
            Some(slots) => format!("the shard of {name} (slots {slots})"),
            None => format!("the shard of {name} (no slots)"),
        }
    };
    for (shard, members) in declared {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, live) in &members {
            *count.entry(live).or_default() += 1;
        }
        if count.len() < 2 {
            continue;
        }
        // Most of the declared shard's nodes are in one cluster shard (ties: the first
        // node's); the others are reported.
        let first = members[0].1;
        let main = count
            .iter()
            .max_by_key(|(live, c)| (**c, **live == first))
            .map(|(live, _)| *live)
            .unwrap_or(first);
        for (id, live) in members.iter().filter(|(_, live)| *live != main) {
            out.push((
                (*id).to_owned(),
                format!(
                    "declared in shard {shard}, but the cluster puts it in {} while shard \
                     {shard} is {}",
                    describe(live),
                    describe(main)
                ),
            ));
        }
    }
    out
}

/// How far behind its primary a replica may be to take the primary role: `FAILOVER`
/// itself waits for it to catch up fully (within its timeout), so this only keeps a
/// replica that is far behind from being chosen.
pub const MAX_FAILOVER_LAG_BYTES: u64 = 1 << 20;

/// A replica that might take a shard's primary role.
#[derive(Debug, Clone, Copy)]
pub struct FailoverCandidate<'a> {
    pub id: &'a str,
    pub address: &'a str,
    /// Its latest reading (`None`: never read).
    pub reading: Option<&'a NodeLive>,
    /// It runs the revision being rolled out (assigned it, and did not fail it).
    pub updated: bool,
}

/// Where the primary role of `from` (declared at `from_address`, last read as `primary`)
/// goes before it restarts: the candidate with its link up to `from`, updated, and least
/// behind (at most [`MAX_FAILOVER_LAG_BYTES`]); ties go to the first id. A `from` that
/// runs as a replica needs no failover. Otherwise no candidate qualifies, and the reason
/// names each one.
pub fn choose_failover(
    from: &str,
    from_address: &str,
    primary: Option<&NodeLive>,
    candidates: &[FailoverCandidate<'_>],
) -> FailoverChoice {
    let health = primary
        .filter(|r| r.reachable)
        .and_then(|r| r.health.as_ref());
    if health.and_then(|h| h.role) == Some(Role::Replica) {
        let of = health
            .and_then(|h| h.topology.as_ref())
            .and_then(|t| t.primary.clone())
            .unwrap_or_else(|| "another node".to_owned());
        return FailoverChoice::NotNeeded {
            why: format!("{from} already runs as a replica of {of}"),
        };
    }
    let topology = health.and_then(|h| h.topology.as_ref());
    let mut fit: Vec<(u64, &str)> = Vec::new();
    let mut unfit: Vec<String> = Vec::new();
    for c in candidates {
        match candidate_lag(from, from_address, topology, c) {
            Ok(lag) => fit.push((lag, c.id)),
            Err(why) => unfit.push(format!("{}: {why}", c.id)),
        }
    }
    fit.sort();
    match fit.first() {
        Some((_, id)) => FailoverChoice::To {
            node: (*id).to_owned(),
        },
        None if unfit.is_empty() => FailoverChoice::NoHealthyReplica {
            why: "the shard has no replica".to_owned(),
        },
        None => FailoverChoice::NoHealthyReplica {
            why: unfit.join("; "),
        },
    }
}

/// How many bytes `c` is behind `from`, or why it cannot take the role.
fn candidate_lag(
    from: &str,
    from_address: &str,
    primary: Option<&Topology>,
    c: &FailoverCandidate<'_>,
) -> Result<u64, String> {
    let reading = c.reading.ok_or("not read yet")?;
    if !reading.reachable {
        return Err("unreachable".to_owned());
    }
    if !c.updated {
        return Err("does not run the new revision yet".to_owned());
    }
    let health = reading.health.as_ref().ok_or("reported no role")?;
    if health.role != Some(Role::Replica) {
        return Err("runs as a primary".to_owned());
    }
    let topology = health.topology.as_ref();
    let follows = topology.and_then(|t| t.primary.as_deref());
    if !follows.is_some_and(|a| same_address(a, from_address)) {
        return Err(format!(
            "replicates {}, not {from}",
            follows.unwrap_or("an unknown primary")
        ));
    }
    if health.replication_link != Some(LinkState::Up) {
        return Err("its replication link is down".to_owned());
    }
    let lag = primary
        .and_then(|p| p.replica_lag_bytes(c.address))
        .or_else(|| {
            let theirs = topology?.offset?;
            Some(primary?.offset?.saturating_sub(theirs))
        })
        .ok_or("how far behind it is is not known")?;
    if lag > MAX_FAILOVER_LAG_BYTES {
        return Err(format!("{lag} bytes behind"));
    }
    Ok(lag)
}

/// The declared shard of the primary at the top of a replica's chain (a replica of a
/// replica follows it up; a loop or an undeclared primary stops at the last declared node).
fn root_shard(cluster: &Cluster, nodes: &BTreeMap<String, Placement>, id: &str) -> String {
    let mut at = id;
    for _ in 0..=cluster.nodes.len() {
        match nodes.get(at).and_then(|p| p.follows.as_deref()) {
            Some(next) if nodes.contains_key(next) && next != id => at = next,
            _ => break,
        }
    }
    cluster
        .node(at)
        .map(|n| n.shard.clone())
        .unwrap_or_else(|| id.to_owned())
}

/// What differs between a node's declaration and its live placement, in words.
fn note(
    cluster: &Cluster,
    declared: Option<Role>,
    declared_shard: &str,
    p: &Placement,
    nodes: &BTreeMap<String, Placement>,
) -> Option<String> {
    let live = p.live?;
    let follows = || match &p.follows {
        Some(f) if nodes.contains_key(f) => format!("a replica of {f}"),
        Some(f) => format!(
            "a replica of {f}, which no node of {} declares",
            cluster.name
        ),
        None => "a replica of a primary it does not name".to_owned(),
    };
    let in_shard = if p.shard != declared_shard {
        format!(" (shard {})", p.shard)
    } else {
        String::new()
    };
    // A replica outside its declared shard, or following a node the cluster lacks.
    let moved = !in_shard.is_empty() || p.follows.as_ref().is_some_and(|f| !nodes.contains_key(f));
    match (declared, live) {
        (Some(Role::Primary), Role::Replica) => {
            Some(format!("declared primary, runs as {}{in_shard}", follows()))
        }
        (Some(Role::Replica), Role::Primary) => Some("declared replica, runs as a primary".into()),
        (_, Role::Replica) if moved => Some(format!(
            "declared in shard {declared_shard}, runs as {}{in_shard}",
            follows()
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::live::{Health, Topology};
    use crate::pure::spec::model::{Managed, Node};

    fn cluster(nodes: &[(&str, &str, Option<Role>)]) -> Cluster {
        Cluster {
            name: "c".into(),
            file: "clusters/c.yaml".into(),
            labels: BTreeMap::new(),
            engine: crate::pure::catalog::Engine::Redis,
            product: crate::pure::catalog::Product::Redis,
            version: None,
            catalog: crate::pure::catalog::CatalogId::default_for(
                crate::pure::catalog::Engine::Redis,
            ),
            profile: None,
            parameters: BTreeMap::new(),
            auth: None,
            tls: None,
            sentinel: None,
            mode: Default::default(),
            nodes: nodes
                .iter()
                .map(|(id, shard, role)| Node {
                    id: id.to_string(),
                    address: format!("10.0.0.{}:6379", &id[1..]),
                    shard: shard.to_string(),
                    role: *role,
                    managed: Managed::Direct,
                    labels: BTreeMap::new(),
                })
                .collect(),
            rollout: Default::default(),
        }
    }

    fn read(role: Role, primary: Option<&str>) -> NodeLive {
        NodeLive {
            reachable: true,
            health: Some(Health {
                role: Some(role),
                topology: Some(Topology {
                    primary: primary.map(str::to_owned),
                    ..Topology::default()
                }),
                ..Health::default()
            }),
            ..NodeLive::default()
        }
    }

    #[test]
    fn a_hand_made_failover_is_placed_by_the_live_roles_and_reported() {
        // Declared: a1 primary of shard a, a2 its replica. Live: a2 took over.
        let c = cluster(&[
            ("a1", "a", Some(Role::Primary)),
            ("a2", "a", Some(Role::Replica)),
            ("b3", "b", None),
        ]);
        let live: BTreeMap<&str, NodeLive> = [
            ("a1", read(Role::Replica, Some("10.0.0.2:6379"))),
            ("a2", read(Role::Primary, None)),
        ]
        .into_iter()
        .collect();
        let t = resolve(&c, |id| live.get(id));
        assert_eq!(t.role("a1"), Role::Replica);
        assert_eq!(t.role("a2"), Role::Primary);
        assert_eq!(t.nodes["a1"].follows.as_deref(), Some("a2"));
        assert_eq!(t.shard("a1"), "a");
        // Not read, no declared role: the cautious guess.
        assert_eq!(t.role("b3"), Role::Primary);
        assert_eq!(
            t.notes,
            vec![
                TopologyNote {
                    node: "a1".into(),
                    text: "declared primary, runs as a replica of a2".into()
                },
                TopologyNote {
                    node: "a2".into(),
                    text: "declared replica, runs as a primary".into()
                },
            ]
        );
    }

    #[test]
    fn a_replica_belongs_to_the_shard_of_the_primary_it_follows() {
        let c = cluster(&[
            ("a1", "a", Some(Role::Primary)),
            ("a2", "a", None),
            ("b3", "b", Some(Role::Primary)),
            ("b4", "b", Some(Role::Replica)),
        ]);
        let live: BTreeMap<&str, NodeLive> = [
            ("a1", read(Role::Primary, None)),
            // a2 follows b4, which follows a1: a2 is in shard a through the chain.
            ("a2", read(Role::Replica, Some("10.0.0.4:6379"))),
            ("b4", read(Role::Replica, Some("10.0.0.1:6379"))),
            ("b3", read(Role::Replica, Some("10.9.9.9:6379"))),
        ]
        .into_iter()
        .collect();
        let t = resolve(&c, |id| live.get(id));
        assert_eq!(t.shard("a2"), "a");
        assert_eq!(t.shard("b4"), "a");
        let texts: Vec<String> = t
            .notes
            .iter()
            .map(|n| format!("{}: {}", n.node, n.text))
            .collect();
        assert_eq!(
            texts,
            vec![
                "b3: declared primary, runs as a replica of 10.9.9.9:6379, which no node of c declares",
                "b4: declared in shard b, runs as a replica of a1 (shard a)",
            ]
        );
    }

    /// A member as a test writes it: (id, node number, primary id, slots).
    type Member<'a> = (&'a str, u8, Option<&'a str>, &'a [[u16; 2]]);

    /// A cluster member's reading: its own id `me`, every member, the cluster's state and
    /// assigned slots.
    fn member_of(me: &str, members: &[Member<'_>], assigned: u64) -> NodeLive {
        let primary = members
            .iter()
            .find(|m| m.0 == me)
            .and_then(|m| m.2)
            .and_then(|p| members.iter().find(|m| m.0 == p))
            .map(|m| format!("10.0.0.{}:6379", m.1));
        let role = if primary.is_some() {
            Role::Replica
        } else {
            Role::Primary
        };
        let mut r = read(role, primary.as_deref());
        let view = crate::pure::live::ClusterView {
            id: me.into(),
            state: if assigned == CLUSTER_SLOTS {
                "ok"
            } else {
                "fail"
            }
            .into(),
            slots_assigned: assigned,
            slots_pfail: 0,
            slots_fail: 0,
            nodes: members
                .iter()
                .map(|(id, k, p, slots)| ClusterMember {
                    id: id.to_string(),
                    address: format!("10.0.0.{k}:6379"),
                    primary: p.map(str::to_owned),
                    flags: vec![if p.is_some() { "slave" } else { "master" }.into()],
                    slots: slots.to_vec(),
                })
                .collect(),
        };
        if let Some(t) = r.health.as_mut().and_then(|h| h.topology.as_mut()) {
            t.cluster = Some(view);
        }
        r
    }

    #[test]
    fn cluster_mode_checks_the_declared_nodes_against_the_clusters_view() {
        let mut c = cluster(&[
            ("a1", "a", Some(Role::Primary)),
            ("a2", "a", Some(Role::Replica)),
            ("a3", "a", None),
            ("b4", "b", Some(Role::Primary)),
            ("c7", "c", None),
            ("d8", "d", None),
        ]);
        c.mode = ClusterMode::Cluster;
        // The cluster: A (node 1, replica 2) and B (node 3, replica 4) and an undeclared
        // primary at node 9; node 7 runs alone (it left); node 8 runs without cluster mode.
        let members: &[Member<'_>] = &[
            ("A", 1, None, &[[0, 5000]]),
            ("A2", 2, Some("A"), &[]),
            ("B", 3, None, &[[5001, 10000]]),
            ("B2", 4, Some("B"), &[]),
            ("Z", 9, None, &[[10001, 16000]]),
        ];
        let alone: &[Member<'_>] = &[("SEVEN000x", 7, None, &[])];
        let assigned = 16001;
        let live: BTreeMap<&str, NodeLive> = [
            ("a1", member_of("A", members, assigned)),
            ("a2", member_of("A2", members, assigned)),
            ("a3", member_of("B", members, assigned)),
            ("b4", member_of("B2", members, assigned)),
            ("c7", member_of("SEVEN000x", alone, 0)),
            ("d8", read(Role::Primary, None)),
        ]
        .into_iter()
        .collect();
        let t = resolve(&c, |id| live.get(id));
        let texts: Vec<String> = t
            .notes
            .iter()
            .map(|n| format!("{}: {}", n.node, n.text))
            .collect();
        assert_eq!(
            texts,
            vec![
                // Replication's own note: b4 follows a3, which is in shard a.
                "b4: declared primary, runs as a replica of a3 (shard a)".to_owned(),
                "c7: the cluster does not know it: no other member lists its node id SEVEN000 (it left the cluster or never joined)".to_owned(),
                "d8: declared in a `mode: cluster` cluster, but runs without cluster mode (cluster_enabled:0)".to_owned(),
                "a3: declared in shard a, but the cluster puts it in the shard of a3 (slots 5001-10000) while shard a is the shard of a1 (slots 0-5000)".to_owned(),
                "c: slots not covered: 383 of 16384 slots have no primary (cluster_state fail)".to_owned(),
                "10.0.0.9:6379: a primary of the cluster (node Z, slots 10001-16000) that no node of c declares".to_owned(),
            ]
        );
        // Shards follow the cluster: b4 is in a3's shard (a, as a3 is declared).
        assert_eq!(t.shard("b4"), "a");
    }

    #[test]
    fn the_failover_method_follows_the_clusters_mode() {
        assert_eq!(
            FailoverMethod::for_mode(ClusterMode::Cluster),
            FailoverMethod::Cluster
        );
        assert_eq!(
            FailoverMethod::for_mode(ClusterMode::Replication),
            FailoverMethod::Replication
        );
    }

    #[test]
    fn an_unreachable_node_keeps_its_declared_role() {
        let c = cluster(&[
            ("a1", "a", Some(Role::Primary)),
            ("a2", "a", Some(Role::Replica)),
        ]);
        let mut down = read(Role::Primary, None);
        down.reachable = false;
        let live: BTreeMap<&str, NodeLive> = [("a2", down)].into_iter().collect();
        let t = resolve(&c, |id| live.get(id));
        assert_eq!(t.role("a2"), Role::Replica);
        assert!(t.notes.is_empty());
    }

    /// A replica of `10.0.0.1:6379` with its link up at `offset`.
    fn replica_at(offset: u64) -> NodeLive {
        let mut r = read(Role::Replica, Some("10.0.0.1:6379"));
        if let Some(h) = r.health.as_mut() {
            h.replication_link = Some(LinkState::Up);
            if let Some(t) = h.topology.as_mut() {
                t.offset = Some(offset);
            }
        }
        r
    }

    #[test]
    fn the_failover_goes_to_the_updated_replica_least_behind_and_says_why_not_others() {
        let mut primary = read(Role::Primary, None);
        if let Some(t) = primary.health.as_mut().and_then(|h| h.topology.as_mut()) {
            t.offset = Some(5_000_000);
        }
        let (a2, a3, a4) = (replica_at(4_999_000), replica_at(4_999_900), replica_at(1));
        let mut down = replica_at(5_000_000);
        if let Some(h) = down.health.as_mut() {
            h.replication_link = Some(LinkState::Down);
        }
        let c = |id, reading, updated| FailoverCandidate {
            id,
            address: "10.0.0.9:6379",
            reading,
            updated,
        };
        let choice = choose_failover(
            "a1",
            "10.0.0.1:6379",
            Some(&primary),
            &[
                c("a2", Some(&a2), true),
                c("a3", Some(&a3), true),
                c("a4", Some(&a4), true),
                c("a5", Some(&down), true),
            ],
        );
        assert_eq!(choice, FailoverChoice::To { node: "a3".into() });
        let other = read(Role::Replica, Some("10.0.0.7:6379"));
        let choice = choose_failover(
            "a1",
            "10.0.0.1:6379",
            Some(&primary),
            &[
                c("a2", None, true),
                c("a3", Some(&a3), false),
                c("a4", Some(&a4), true),
                c("a5", Some(&down), true),
                c("a6", Some(&other), true),
            ],
        );
        assert_eq!(
            choice,
            FailoverChoice::NoHealthyReplica {
                why: "a2: not read yet; a3: does not run the new revision yet; a4: 4999999 bytes behind; a5: its replication link is down; a6: replicates 10.0.0.7:6379, not a1".into()
            }
        );
        let moved = read(Role::Replica, Some("10.0.0.2:6379"));
        assert_eq!(
            choose_failover("a1", "10.0.0.1:6379", Some(&moved), &[]),
            FailoverChoice::NotNeeded {
                why: "a1 already runs as a replica of 10.0.0.2:6379".into()
            }
        );
    }

    fn sentinels() -> Sentinel {
        Sentinel {
            master_name: "main".into(),
            addresses: vec![
                "10.0.1.1:26379".into(),
                "10.0.1.2:26379".into(),
                "10.0.1.3:26379".into(),
            ],
            auth: None,
        }
    }

    fn says(address: &str, primary: Option<&str>, failing_over: bool) -> SentinelAnswer {
        SentinelAnswer {
            address: address.into(),
            primary: primary.map(str::to_owned),
            failing_over,
            error: primary
                .is_none()
                .then(|| "unreachable: connection refused".to_owned()),
        }
    }

    #[test]
    fn the_primary_is_the_one_a_quorum_of_sentinels_agrees_on_and_a_split_view_decides_nothing() {
        let c = cluster(&[
            ("a1", "a", Some(Role::Primary)),
            ("a2", "a", Some(Role::Replica)),
        ]);
        let s = sentinels();
        // Two of three answer and agree: a quorum.
        let view = sentinel_view(
            &c,
            &s,
            &[
                says("10.0.1.1:26379", Some("10.0.0.2:6379"), false),
                says("10.0.1.2:26379", Some("10.0.0.2:6379"), false),
                says("10.0.1.3:26379", None, false),
            ],
        );
        assert_eq!(
            view,
            SentinelView::Agreed {
                primary: "a2".into(),
                address: "10.0.0.2:6379".into()
            }
        );
        // The Sentinels' primary is placed as the primary, the stale one as its replica.
        let live: BTreeMap<&str, NodeLive> = [
            ("a1", read(Role::Primary, None)),
            ("a2", read(Role::Primary, None)),
        ]
        .into_iter()
        .collect();
        let t = resolve_with(&c, |id| live.get(id), view.primary());
        assert_eq!((t.role("a1"), t.role("a2")), (Role::Replica, Role::Primary));
        assert_eq!(t.nodes["a1"].follows.as_deref(), Some("a2"));

        // From a snapshot (plan, drift): the same placement, from the answers it holds.
        let snapshot = crate::pure::live::LiveState {
            version: crate::pure::live::LIVE_STATE_VERSION,
            taken_at: None,
            nodes: live
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            sentinels: [(
                "c".to_owned(),
                vec![
                    says("10.0.1.1:26379", Some("10.0.0.2:6379"), false),
                    says("10.0.1.2:26379", Some("10.0.0.2:6379"), false),
                ],
            )]
            .into_iter()
            .collect(),
        };
        let mut with_sentinel = c.clone();
        with_sentinel.sentinel = Some(s.clone());
        let t = resolve_live(&with_sentinel, &snapshot);
        assert_eq!((t.role("a1"), t.role("a2")), (Role::Replica, Role::Primary));
        // Without `sentinel` in the cluster the nodes' own readings place them.
        assert_eq!(resolve_live(&c, &snapshot).role("a1"), Role::Primary);

        let split = sentinel_view(
            &c,
            &s,
            &[
                says("10.0.1.1:26379", Some("10.0.0.1:6379"), false),
                says("10.0.1.2:26379", Some("10.0.0.2:6379"), false),
                says("10.0.1.3:26379", None, false),
            ],
        );
        assert_eq!(
            split,
            SentinelView::Unsettled {
                reason: "the Sentinels of main do not agree on its primary: 10.0.1.1:26379 names a1 (10.0.0.1:6379); 10.0.1.2:26379 names a2 (10.0.0.2:6379); 10.0.1.3:26379: unreachable: connection refused".into()
            }
        );
        let down = sentinel_view(
            &c,
            &s,
            &[
                says("10.0.1.1:26379", Some("10.0.0.1:6379"), false),
                says("10.0.1.2:26379", None, false),
            ],
        );
        assert_eq!(
            down,
            SentinelView::Unsettled {
                reason: "only 1 of the 3 Sentinels of main answered (a quorum is 2): 10.0.1.2:26379: unreachable: connection refused; 10.0.1.3:26379: not asked yet".into()
            }
        );
        let failing = sentinel_view(
            &c,
            &s,
            &[
                says("10.0.1.1:26379", Some("10.0.0.1:6379"), true),
                says("10.0.1.2:26379", Some("10.0.0.1:6379"), false),
            ],
        );
        assert_eq!(
            failing,
            SentinelView::Unsettled {
                reason: "the Sentinels of main are failing over its primary (10.0.1.1:26379 in progress)".into()
            }
        );
        let elsewhere = sentinel_view(
            &c,
            &s,
            &[
                says("10.0.1.1:26379", Some("10.0.0.9:6379"), false),
                says("10.0.1.2:26379", Some("10.0.0.9:6379"), false),
            ],
        );
        assert_eq!(
            elsewhere,
            SentinelView::Unsettled {
                reason: "the Sentinels of main name 10.0.0.9:6379 its primary, which no node of c declares".into()
            }
        );
    }
}
