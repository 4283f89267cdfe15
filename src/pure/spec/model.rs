//! The validated desired state. These types are only built by `spec::load`, after the
//! schema and every semantic check passed ("parse, don't validate"): a `Desired` that
//! exists is valid. Maps are `BTreeMap` and lists sorted, so output is deterministic.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::pure::catalog::{human_ms, Catalog, CatalogId, Engine, Product};

/// The desired state of every cluster at one revision.
#[derive(Debug, Clone, Serialize)]
pub struct Desired {
    /// The commit the state was read from; `None` for a working tree.
    pub commit: Option<String>,
    pub settings: Settings,
    pub profiles: BTreeMap<String, Profile>,
    pub clusters: BTreeMap<String, Cluster>,
}

/// `cacheflow.yaml`; defaults when the repository has none.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    pub file: Option<String>,
    pub rollout_defaults: RolloutPolicy,
    pub windows: Vec<Window>,
    pub drift: Drift,
    pub notifications: Vec<Notification>,
    pub trust: Trust,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub action: WindowAction,
    pub schedule: String,
    pub duration: String,
    #[serde(default)]
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowAction {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub mode: DriftMode,
    #[serde(default)]
    pub notify: Vec<String>,
    /// The IANA zone the schedule is read in; UTC when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// How often unchanged drift is notified again (a duration; [`DEFAULT_DRIFT_REPEAT`]
    /// when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<String>,
}

/// `drift.repeat` when absent: pager-connected targets are reminded a few times a day.
pub const DEFAULT_DRIFT_REPEAT: std::time::Duration = std::time::Duration::from_secs(4 * 3600);

impl Drift {
    /// `drift.repeat` (validated with the revision: longer than zero); the default when
    /// absent or, should an unchecked one get here, unreadable.
    pub fn repeat(&self) -> std::time::Duration {
        self.repeat
            .as_deref()
            .and_then(crate::pure::catalog::parse_duration_micros)
            .filter(|us| *us > 0)
            .map(std::time::Duration::from_micros)
            .unwrap_or(DEFAULT_DRIFT_REPEAT)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftMode {
    #[default]
    Report,
    Correct,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: NotificationKind,
    /// A secret reference: the URL itself is never in the repository.
    pub url: SecretRef,
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    Slack,
    Webhook,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trust {
    #[serde(default)]
    pub require_signed_head: bool,
    #[serde(default)]
    pub signers: Vec<Signer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signer {
    pub name: String,
    #[serde(default)]
    pub ssh: Option<String>,
    #[serde(default)]
    pub openpgp: Option<String>,
}

/// A reference to a secret (`env:NAME`, `file:PATH`). Only the reference is ever held
/// or printed; resolving it is the job of the code that connects to a node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(pub String);

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A reusable parameter set.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: String,
    pub file: String,
    pub engine: Product,
    pub parameters: BTreeMap<String, Param>,
}

/// One managed parameter: its normalised value (what the engine reports) and the value
/// as written in the repository, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Param {
    pub value: String,
    pub written: String,
    /// `None` when the cluster sets it; the profile's name when inherited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Set under `uncheckedParameters`: no catalog knows it (a module's parameter), so
    /// the value is sent as written and the engine alone judges it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
}

/// One cluster, profile merged, rollout policy resolved.
#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    pub file: String,
    pub labels: BTreeMap<String, String>,
    /// The protocol its nodes speak (Valkey speaks Redis's).
    #[serde(skip)]
    pub engine: Engine,
    /// What `spec.engine` says: redis, valkey or memcached.
    #[serde(rename = "engine")]
    pub product: Product,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The parameter catalog `engine` and `version` select (the product's default
    /// version when `version` is omitted).
    #[serde(skip)]
    pub catalog: CatalogId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Parameters set under `uncheckedParameters` are also here, marked
    /// `Param::unchecked`, so that they are planned and applied like the others.
    pub parameters: BTreeMap<String, Param>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Every node of the cluster is reached over TLS when present.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// The Sentinels that watch the cluster's primary, when it has them: the current
    /// primary is read from them and a primary's failover goes through them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<Sentinel>,
    /// How its nodes form shards: plain replication (the default) or Redis Cluster.
    #[serde(default, skip_serializing_if = "ClusterMode::is_replication")]
    pub mode: ClusterMode,
    /// Sorted by id.
    pub nodes: Vec<Node>,
    pub rollout: RolloutPolicy,
}

/// `spec.mode`: how a cluster's nodes form shards. `replication`: primaries and their
/// replicas (`replicaof`), shards as declared. `cluster`: Redis Cluster (`cluster-enabled
/// yes`): the cluster's own view (`CLUSTER NODES`, `CLUSTER INFO`) says which node serves
/// which slots; declared nodes and shards are checked against it, gates include the
/// cluster's state, and a primary's role moves by `CLUSTER FAILOVER` on its replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    #[default]
    Replication,
    Cluster,
}

impl ClusterMode {
    pub fn is_replication(&self) -> bool {
        *self == ClusterMode::Replication
    }
}

impl Cluster {
    /// The cluster's parameter catalog (its engine at its version).
    pub fn catalog(&self) -> &'static Catalog {
        self.catalog.get()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.nodes[i])
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub password: SecretRef,
}

/// `spec.sentinel`: the Redis Sentinels that watch the cluster's primary under
/// `masterName`. The primary is the one a quorum of them (a majority of `addresses`)
/// names, all that answer agreeing; failovers of a primary go through them
/// (`SENTINEL FAILOVER`). `auth` is what the Sentinels ask for (`requirepass` of
/// `sentinel.conf`): a reference, like the nodes' credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sentinel {
    pub master_name: String,
    /// `host:port` of each Sentinel.
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

impl Sentinel {
    /// How many Sentinels must answer, all agreeing, for their primary to count: a
    /// majority of those named.
    pub fn quorum(&self) -> usize {
        self.addresses.len() / 2 + 1
    }
}

/// `spec.tls`: how the nodes' certificates are checked, and the client certificate
/// when the nodes ask for one (Redis `tls-auth-clients yes`). Only references: the
/// files are read when a driver connects (again once they change), so a renewed
/// certificate is picked up by the next connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tls {
    /// `file:PATH` of a PEM bundle: the CAs the nodes' certificates must chain to (and
    /// only those: the system's roots are not trusted for nodes).
    pub ca: SecretRef,
    /// Client certificate (PEM) and its PKCS#8 PEM key; both or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
    /// The name the nodes' certificates must be for; each node's host when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub id: String,
    pub address: String,
    pub shard: String,
    /// The declared role; `None` (Redis, Valkey): whatever the node runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub managed: Managed,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Primary,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

impl Role {
    /// A declared role as people read it: `primary`, `replica`, or `live role` when the
    /// node's `role` is left out (it is whatever the node runs as).
    pub fn declared_text(role: Option<Role>) -> String {
        role.map(|r| r.to_string())
            .unwrap_or_else(|| "live role".to_owned())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Managed {
    Direct,
    Agent,
}

impl fmt::Display for Managed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Managed::Direct => "direct",
            Managed::Agent => "agent",
        })
    }
}

/// One rollout stage: a cumulative target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// After this stage, this many nodes are done.
    Count(u32),
    /// After this stage, this percentage of the nodes to change is done.
    Percent(u8),
}

impl Stage {
    /// The cumulative number of nodes done after this stage, out of `total`.
    pub fn target(self, total: usize) -> usize {
        match self {
            Stage::Count(n) => (n as usize).min(total),
            Stage::Percent(p) => (total * p as usize).div_ceil(100),
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Count(n) => write!(f, "{n}"),
            Stage::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stage::Count(n) => s.serialize_u32(*n),
            Stage::Percent(_) => s.serialize_str(&self.to_string()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    Rollback,
    Pause,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Rollback => "rollback",
            OnFailure::Pause => "pause",
        })
    }
}

/// What a restart of a shard's live primary does (`onPrimaryRestart`): move the primary
/// role to an updated, caught-up replica first (`failover`), or restart it where it runs
/// (`in-place`: the shard takes no writes until it is back). With `failover`, a shard
/// with no healthy replica to move the role to pauses the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnPrimaryRestart {
    #[default]
    Failover,
    InPlace,
}

impl fmt::Display for OnPrimaryRestart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnPrimaryRestart::Failover => "failover",
            OnPrimaryRestart::InPlace => "in-place",
        })
    }
}

/// A duration kept as milliseconds, shown the way people write it (`5m`, `30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Millis(pub u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_ms(self.0))
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Health gates, defaults filled in.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    pub max_hit_ratio_drop: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_evictions_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_increase_ms: Option<f64>,
    pub max_memory_ratio: f64,
    pub require_up: bool,
    pub require_replication_link: bool,
    pub min_ops_per_sec: f64,
    /// How far a replica may be behind its primary after a batch, in bytes of the
    /// replication stream (the primary's offset minus the replica's acknowledged one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replica_lag_bytes: Option<u64>,
    /// How long since a replica last acknowledged its primary, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_replica_lag_seconds: Option<u64>,
    /// How many full resyncs a shard's primary may serve its replicas during the rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_full_resyncs: Option<u64>,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_hit_ratio_drop: 0.05,
            max_evictions_per_sec: None,
            max_latency_ms: None,
            // Off unless asked for: the round trip is measured from cacheflow's side, and
            // on a busy reconciler host (a batch of 100 nodes read at once on 2 cores) it
            // measures the host as much as the node (see docs/server.md).
            max_latency_increase_ms: None,
            max_memory_ratio: 0.98,
            require_up: true,
            require_replication_link: true,
            min_ops_per_sec: 10.0,
            // Off unless asked for: a replica restarted without persistence always
            // resyncs in full, and how far behind is acceptable depends on the traffic.
            max_replica_lag_bytes: None,
            max_replica_lag_seconds: None,
            max_full_resyncs: None,
        }
    }
}

/// A cluster's resolved rollout policy: built-in defaults, then `Settings`'
/// `rolloutDefaults`, then the cluster's own `rollout`, field by field.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutPolicy {
    pub stages: Vec<Stage>,
    pub bake: Millis,
    pub apply_timeout: Millis,
    pub warmup: Millis,
    pub max_unavailable_per_shard: u32,
    pub on_failure: OnFailure,
    pub on_primary_restart: OnPrimaryRestart,
    pub gates: Gates,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        RolloutPolicy {
            stages: vec![Stage::Count(1), Stage::Percent(25), Stage::Percent(100)],
            bake: Millis(5 * 60 * 1000),
            apply_timeout: Millis(2 * 60 * 1000),
            warmup: Millis(30 * 1000),
            max_unavailable_per_shard: 1,
            on_failure: OnFailure::Rollback,
            on_primary_restart: OnPrimaryRestart::Failover,
            gates: Gates::default(),
        }
    }
}

impl RolloutPolicy {
    /// Every field as (name, shown value), for diffs of the policy.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let opt = |v: Option<f64>| v.map(|x| x.to_string()).unwrap_or_else(|| "off".into());
        let whole = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "off".into());
        let g = &self.gates;
        vec![
            (
                "stages",
                self.stages
                    .iter()
                    .map(Stage::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            ("bake", self.bake.to_string()),
            ("applyTimeout", self.apply_timeout.to_string()),
            ("warmup", self.warmup.to_string()),
            (
                "maxUnavailablePerShard",
                self.max_unavailable_per_shard.to_string(),
            ),
            ("onFailure", self.on_failure.to_string()),
            ("onPrimaryRestart", self.on_primary_restart.to_string()),
            ("gates.maxHitRatioDrop", g.max_hit_ratio_drop.to_string()),
            ("gates.maxEvictionsPerSec", opt(g.max_evictions_per_sec)),
            ("gates.maxLatencyMs", opt(g.max_latency_ms)),
            ("gates.maxLatencyIncreaseMs", opt(g.max_latency_increase_ms)),
            ("gates.maxMemoryRatio", g.max_memory_ratio.to_string()),
            ("gates.requireUp", g.require_up.to_string()),
            (
                "gates.requireReplicationLink",
                g.require_replication_link.to_string(),
            ),
            ("gates.minOpsPerSec", g.min_ops_per_sec.to_string()),
            ("gates.maxReplicaLagBytes", whole(g.max_replica_lag_bytes)),
            (
                "gates.maxReplicaLagSeconds",
                whole(g.max_replica_lag_seconds),
            ),
            ("gates.maxFullResyncs", whole(g.max_full_resyncs)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_targets_round_up_and_cap_at_the_total() {
        assert_eq!(Stage::Percent(25).target(10), 3);
        assert_eq!(Stage::Percent(100).target(7), 7);
        assert_eq!(Stage::Count(5).target(3), 3);
        assert_eq!(Stage::Percent(1).target(0), 0);
    }

    #[test]
    fn millis_print_the_way_people_write_them() {
        assert_eq!(Millis(300_000).to_string(), "5m");
        assert_eq!(Millis(5_400_000).to_string(), "1h30m");
        assert_eq!(Millis(250).to_string(), "250ms");
        assert_eq!(Millis(0).to_string(), "0s");
    }
}
