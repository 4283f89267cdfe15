//! Live state: what each node reports it runs (parameters, version, applied revision,
//! health). This is the snapshot `cacheflow snapshot` writes and `plan --live` reads; its
//! JSON format is versioned and described by `schemas/live-state.schema.json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pure::catalog::Engine;
use crate::pure::spec::model::Role;

/// The format version this build reads and writes.
pub const LIVE_STATE_VERSION: u32 = 1;
/// Largest snapshot file read (a 10,000-node fleet is a few MiB).
pub const MAX_SNAPSHOT_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LiveState {
    pub version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<String>,
    pub nodes: BTreeMap<String, NodeLive>,
    /// What the Sentinels of each cluster that names them answered (cluster → one
    /// answer per Sentinel), when they were asked.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sentinels: BTreeMap<String, Vec<SentinelAnswer>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeLive {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persisted: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl NodeLive {
    /// Keep only the parameters in `names`, live and persisted.
    pub fn keep_only(&mut self, names: &std::collections::BTreeSet<String>) {
        self.parameters.retain(|name, _| names.contains(name));
        if let Some(persisted) = self.persisted.as_mut() {
            persisted.retain(|name, _| names.contains(name));
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace_hits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace_misses: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_keys: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_clients: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_link: Option<LinkState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Seconds since the engine started: the gates see a restart by it, and measure the
    /// restarted engine's counters over this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_seconds: Option<u64>,
    /// Replication as the node reports it; `role` above is its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<Topology>,
}

/// Where a node stands in its replication, as one reading shows it: the primary a
/// replica follows, its link and offsets, the replicas a primary feeds and the full
/// resyncs it served. Filled from `INFO replication` (Redis, Valkey); every field is
/// optional so that other readings (Sentinel, `CLUSTER SHARDS`) can fill what they know.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Topology {
    /// The primary a replica follows, `host:port` as the replica names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// Seconds since the replica last heard from its primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_io_seconds_ago: Option<u64>,
    /// A replica is loading a full copy from its primary right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_in_progress: Option<bool>,
    /// The node's replication offset: what a primary has written to its stream, what a
    /// replica has processed of its primary's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Full resyncs this node has served to replicas since it started (`sync_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_syncs: Option<u64>,
    /// Partial resyncs it accepted (`sync_partial_ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_syncs: Option<u64>,
    /// The replicas connected to a primary, as it sees them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaLink>,
    /// A Redis Cluster member's view of the cluster (`CLUSTER INFO`, `CLUSTER NODES`);
    /// absent for a node without cluster mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// Slots of a Redis Cluster: 0 to 16383.
pub const CLUSTER_SLOTS: u64 = 16384;

/// One cluster-mode node's view of its Redis Cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// This node's id in the cluster (40 hex characters).
    pub id: String,
    /// `cluster_state`: `ok`, or `fail` when slots are not served.
    pub state: String,
    /// `cluster_slots_assigned`: slots some primary serves (16384 when all are covered).
    pub slots_assigned: u64,
    /// `cluster_slots_pfail`: slots whose primary this node cannot reach.
    pub slots_pfail: u64,
    /// `cluster_slots_fail`: slots whose primary the cluster agrees has failed.
    pub slots_fail: u64,
    /// Every node this one knows, itself included, sorted by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ClusterMember>,
}

/// One node as a cluster member sees it (a line of `CLUSTER NODES`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub id: String,
    /// `host:port` clients reach it at.
    pub address: String,
    /// The primary it replicates (its id), for a replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// `master`, `slave`, `myself`, `fail?`, `fail`, `handshake`, `noaddr`...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// The slot ranges a primary serves, first and last included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slots: Vec<[u16; 2]>,
}

impl ClusterView {
    /// The member with `id`.
    pub fn member(&self, id: &str) -> Option<&ClusterMember> {
        self.nodes.iter().find(|m| m.id == id)
    }

    /// The member at `address`.
    pub fn at(&self, address: &str) -> Option<&ClusterMember> {
        self.nodes
            .iter()
            .find(|m| same_address(&m.address, address))
    }

    /// The node's shard: the id of its primary (its own id for a primary).
    pub fn shard_of<'a>(&'a self, id: &'a str) -> &'a str {
        self.member(id)
            .and_then(|m| m.primary.as_deref())
            .unwrap_or(id)
    }
}

impl ClusterMember {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// `0-5460`, `0-10 12`: the slots it serves, as `CLUSTER NODES` writes them.
    pub fn slots_text(&self) -> String {
        let ranges: Vec<String> = self
            .slots
            .iter()
            .map(|[a, b]| match a == b {
                true => a.to_string(),
                false => format!("{a}-{b}"),
            })
            .collect();
        ranges.join(" ")
    }
}

/// One replica as its primary sees it (`slaveN:ip=...,port=...,state=...,offset=...,lag=...`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaLink {
    /// `host:port` of the replica.
    pub address: String,
    /// `online`, `wait_bgsave`, `send_bulk`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The offset the replica acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Seconds since its last acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
}

impl Topology {
    /// How far the replica at `address` is behind this primary, in bytes, by the
    /// primary's own figures (its offset and the replica's last acknowledged one).
    pub fn replica_lag_bytes(&self, address: &str) -> Option<u64> {
        let link = self.replica(address)?;
        Some(self.offset?.saturating_sub(link.offset?))
    }

    /// The replica at `address` (host compared without case), if connected.
    pub fn replica(&self, address: &str) -> Option<&ReplicaLink> {
        self.replicas
            .iter()
            .find(|r| same_address(&r.address, address))
    }
}

/// What one of a cluster's named Sentinels answered about the primary it watches
/// (`SENTINEL GET-MASTER-ADDR-BY-NAME`, the flags and failover state of `SENTINEL
/// MASTER`), or why it gave no answer. The topology room weighs the answers of all
/// of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SentinelAnswer {
    /// `host:port` of the Sentinel.
    pub address: String,
    /// The primary it names, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// It is running a failover of that primary now (`failover_in_progress` among its
    /// flags, or a failover state other than `none`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failing_over: bool,
    /// Why it gave no answer (unreachable, authentication, an unknown master name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Two `host:port` addresses name the same endpoint (host case-insensitive).
pub fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    Up,
    Down,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot read live state {path}: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("live state {path} is {size} bytes; the limit is {MAX_SNAPSHOT_BYTES}")]
    TooLarge { path: String, size: u64 },
    #[error("live state {path}:{line}:{column}: not valid JSON: {message}")]
    NotJson {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("live state {path}: format version {found} is not supported (this cacheflow reads version {LIVE_STATE_VERSION})")]
    UnsupportedVersion { path: String, found: String },
    #[error("live state {path} does not match schemas/live-state.schema.json:\n{}", .problems.join("\n"))]
    Invalid { path: String, problems: Vec<String> },
}

impl LiveState {
    /// Parse and check snapshot bytes; `path` is only for messages.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<LiveState, LiveError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            let text = String::from_utf8_lossy(bytes);
            let (line, column, message) = crate::pure::spec::json_error_position(&text, &e);
            LiveError::NotJson {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        })?;
        if let Some(v) = value.get("version") {
            if v.as_u64() != Some(LIVE_STATE_VERSION as u64) {
                return Err(LiveError::UnsupportedVersion {
                    path: path.to_owned(),
                    found: v.to_string(),
                });
            }
        }
        let validator =
            crate::pure::spec::schema::live_state_validator().map_err(|e| LiveError::Invalid {
                path: path.to_owned(),
                problems: vec![e.to_string()],
            })?;
        let problems = crate::pure::spec::schema::problem_lines(validator, &value);
        if !problems.is_empty() {
            return Err(LiveError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        serde_json::from_value(value).map_err(|e| LiveError::Invalid {
            path: path.to_owned(),
            problems: vec![format!("  {e}")],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips() {
        let text = br#"{"version":1,"nodes":{"n1":{"reachable":true,"engine":"redis","parameters":{"maxmemory":"100"},"health":{"usedMemory":5,"role":"primary"}}}}"#;
        let live = LiveState::parse("x.json", text).unwrap();
        assert_eq!(live.nodes["n1"].parameters["maxmemory"], "100");
        assert_eq!(
            live.nodes["n1"].health.as_ref().unwrap().role,
            Some(Role::Primary)
        );
    }

    #[test]
    fn broken_snapshots_say_where_and_why() {
        let e = LiveState::parse("x.json", b"{\"version\": 1,\n \"nodes\": {").unwrap_err();
        assert!(e.to_string().starts_with("live state x.json:2:"), "{e}");
        let e = LiveState::parse("x.json", br#"{"version": 2, "nodes": {}}"#).unwrap_err();
        assert!(
            e.to_string().contains("format version 2 is not supported"),
            "{e}"
        );
        let e = LiveState::parse(
            "x.json",
            br#"{"version": 1, "nodes": {"n1": {"reachable": "yes"}}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nodes/n1/reachable"), "{e}");
    }
}
