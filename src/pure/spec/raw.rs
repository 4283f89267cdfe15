//! Raw serde types that mirror the YAML files one to one. They are read only after the
//! JSON Schema accepted the document, so a serde error here means schema and types have
//! drifted apart (a test loads `example-repo/` through both to keep them together).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::model::{
    Auth, Drift, Managed, Notification, OnFailure, OnPrimaryRestart, Role, Sentinel, Tls, Trust,
    Window,
};
use crate::pure::catalog::Product;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Kind {
    Settings,
    Profile,
    Cluster,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Settings => "Settings",
            Kind::Profile => "Profile",
            Kind::Cluster => "Cluster",
        }
    }
}

/// The kind and metadata of a document; `spec` is read into the type of its kind.
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    pub kind: Kind,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsSpec {
    #[serde(default)]
    pub rollout_defaults: Option<Rollout>,
    #[serde(default)]
    pub windows: Vec<Window>,
    #[serde(default)]
    pub drift: Drift,
    #[serde(default)]
    pub notifications: Vec<Notification>,
    #[serde(default)]
    pub trust: Trust,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub engine: Product,
    pub parameters: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub engine: Product,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default, rename = "uncheckedParameters")]
    pub unchecked_parameters: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub auth: Option<Auth>,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub sentinel: Option<Sentinel>,
    pub mode: Option<crate::pure::spec::model::ClusterMode>,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    pub address: String,
    #[serde(default)]
    pub shard: Option<String>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub managed: Option<Managed>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollout {
    #[serde(default)]
    pub stages: Option<Vec<RawStage>>,
    #[serde(default)]
    pub bake: Option<String>,
    #[serde(default)]
    pub apply_timeout: Option<String>,
    #[serde(default)]
    pub warmup: Option<String>,
    #[serde(default)]
    pub max_unavailable_per_shard: Option<u32>,
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    #[serde(default)]
    pub on_primary_restart: Option<OnPrimaryRestart>,
    #[serde(default)]
    pub gates: Option<Gates>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawStage {
    /// A number: JSON Schema accepts `1.0` as an integer, so a whole float is a count.
    Count(serde_json::Number),
    Percent(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gates {
    pub max_hit_ratio_drop: Option<f64>,
    pub max_evictions_per_sec: Option<f64>,
    pub max_latency_ms: Option<f64>,
    pub max_latency_increase_ms: Option<f64>,
    pub max_memory_ratio: Option<f64>,
    pub require_up: Option<bool>,
    pub require_replication_link: Option<bool>,
    pub min_ops_per_sec: Option<f64>,
    pub max_replica_lag_bytes: Option<u64>,
    pub max_replica_lag_seconds: Option<u64>,
    pub max_full_resyncs: Option<u64>,
}
