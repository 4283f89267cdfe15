//! What a change does: desired state against desired state (a pull request: parameters
//! old → new, nodes added and removed, rollout policy changes, risk flags), and one node's
//! desired parameters against what it reports live. Pure functions over owned data.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::pure::catalog::{self, Catalog, Engine};
use crate::pure::spec::model::{Cluster, Desired, Node, Param, Role};

/// One parameter that changes. Values are shown as written in the repository for a
/// desired-vs-desired diff, and as the engine reports them for a plan against live state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamChange {
    pub name: String,
    /// `None`: not set before (or not reported by the node).
    pub old: Option<String>,
    /// `None`: no longer managed by cacheflow; the node keeps its value.
    pub new: Option<String>,
    /// True when the engine takes the change only at start.
    pub restart: bool,
    /// Set under `uncheckedParameters`: no catalog checked the value; it is sent as written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unchecked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiskKind {
    /// A restart-only parameter changes on a cluster with primaries.
    PrimaryRestart,
    /// The eviction policy changes (which keys go when memory is full).
    EvictionPolicySwitch,
    /// The memory limit goes down.
    MemoryLowered,
    /// The new memory limit is below what a node uses now (needs live state).
    EvictsData,
    /// A shard loses more nodes at once than its disruption limit allows.
    ShardDisruption,
}

/// Something a reviewer should look at twice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    pub kind: RiskKind,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStatus {
    Added,
    Removed,
    Modified,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub id: String,
    pub address: String,
    pub shard: String,
    /// `None`: not declared (whatever the node runs as).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
}

impl From<&Node> for NodeSummary {
    fn from(n: &Node) -> Self {
        NodeSummary {
            id: n.id.clone(),
            address: n.address.clone(),
            shard: n.shard.clone(),
            role: n.role,
        }
    }
}

/// A field of a node or of the rollout policy that changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldChange {
    /// `node-id.field` for nodes, the policy field for rollout changes.
    pub field: String,
    pub old: String,
    pub new: String,
}

/// What a change does to one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDiff {
    pub cluster: String,
    pub file: String,
    pub status: ClusterStatus,
    /// What the cluster's `spec.engine` says (valkey for Valkey).
    pub engine: catalog::Product,
    pub parameters: Vec<ParamChange>,
    pub nodes_added: Vec<NodeSummary>,
    pub nodes_removed: Vec<NodeSummary>,
    pub nodes_changed: Vec<FieldChange>,
    /// Profile, version, labels and credentials references.
    pub cluster_fields: Vec<FieldChange>,
    pub rollout: Vec<FieldChange>,
    pub risks: Vec<Risk>,
}

/// What a change does to the fleet: one entry per cluster that changes, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeSet {
    pub base: Option<String>,
    pub head: Option<String>,
    pub clusters: Vec<ClusterDiff>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }
}

/// Compare the clusters named in `names` (all clusters of both sides when `None`).
pub fn diff(base: &Desired, head: &Desired, names: Option<&BTreeSet<String>>) -> ChangeSet {
    let all: BTreeSet<String> = match names {
        Some(n) => n.clone(),
        None => base
            .clusters
            .keys()
            .chain(head.clusters.keys())
            .cloned()
            .collect(),
    };
    let clusters = all
        .iter()
        .filter_map(|name| diff_cluster(base.clusters.get(name), head.clusters.get(name)))
        .collect();
    ChangeSet {
        base: base.commit.clone(),
        head: head.commit.clone(),
        clusters,
    }
}

/// The diff of one cluster; `None` when nothing changes.
pub fn diff_cluster(old: Option<&Cluster>, new: Option<&Cluster>) -> Option<ClusterDiff> {
    let (status, any) = match (old, new) {
        (None, None) => return None,
        (None, Some(n)) => (ClusterStatus::Added, n),
        (Some(o), None) => (ClusterStatus::Removed, o),
        (Some(_), Some(n)) => (ClusterStatus::Modified, n),
    };
    let empty = BTreeMap::new();
    let old_params = old.map(|c| &c.parameters).unwrap_or(&empty);
    let new_params = new.map(|c| &c.parameters).unwrap_or(&empty);
    let engine = any.product;
    // An engine switch replaces every parameter: all of them are compared by name only.
    let parameters = if status == ClusterStatus::Removed {
        Vec::new()
    } else {
        param_changes(any.catalog(), old_params, new_params)
    };

    let old_nodes: BTreeMap<&str, &Node> = old
        .map(|c| c.nodes.iter().map(|n| (n.id.as_str(), n)).collect())
        .unwrap_or_default();
    let new_nodes: BTreeMap<&str, &Node> = new
        .map(|c| c.nodes.iter().map(|n| (n.id.as_str(), n)).collect())
        .unwrap_or_default();
    let nodes_added: Vec<NodeSummary> = new_nodes
        .iter()
        .filter(|(id, _)| !old_nodes.contains_key(*id))
        .map(|(_, n)| NodeSummary::from(*n))
        .collect();
    let nodes_removed: Vec<NodeSummary> = old_nodes
        .iter()
        .filter(|(id, _)| !new_nodes.contains_key(*id))
        .map(|(_, n)| NodeSummary::from(*n))
        .collect();
    let mut nodes_changed = Vec::new();
    for (id, o) in &old_nodes {
        if let Some(n) = new_nodes.get(id) {
            for (field, a, b) in [
                ("address", o.address.clone(), n.address.clone()),
                ("shard", o.shard.clone(), n.shard.clone()),
                (
                    "role",
                    Role::declared_text(o.role),
                    Role::declared_text(n.role),
                ),
                ("managed", o.managed.to_string(), n.managed.to_string()),
            ] {
                if a != b {
                    nodes_changed.push(FieldChange {
                        field: format!("{id}.{field}"),
                        old: a,
                        new: b,
                    });
                }
            }
        }
    }

    let rollout = match (old, new) {
        (Some(o), Some(n)) => o
            .rollout
            .fields()
            .into_iter()
            .zip(n.rollout.fields())
            .filter(|((_, a), (_, b))| a != b)
            .map(|((field, a), (_, b))| FieldChange {
                field: field.to_owned(),
                old: a,
                new: b,
            })
            .collect(),
        _ => Vec::new(),
    };

    let cluster_fields = match (old, new) {
        (Some(o), Some(n)) => cluster_field_changes(o, n),
        _ => Vec::new(),
    };
    let mut d = ClusterDiff {
        cluster: any.name.clone(),
        file: any.file.clone(),
        status,
        engine,
        parameters,
        nodes_added,
        nodes_removed,
        nodes_changed,
        cluster_fields,
        rollout,
        risks: Vec::new(),
    };
    let unchanged = d.status == ClusterStatus::Modified
        && d.parameters.is_empty()
        && d.nodes_added.is_empty()
        && d.nodes_removed.is_empty()
        && d.nodes_changed.is_empty()
        && d.cluster_fields.is_empty()
        && d.rollout.is_empty();
    if unchanged {
        return None;
    }
    d.risks = risks(&d, old, new);
    Some(d)
}

/// Changes of the cluster's own fields. Credentials are references (`env:NAME`), so
/// showing them reveals no secret.
fn cluster_field_changes(old: &Cluster, new: &Cluster) -> Vec<FieldChange> {
    let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".to_owned());
    let mut out = Vec::new();
    let mut push = |field: String, a: String, b: String| {
        if a != b {
            out.push(FieldChange {
                field,
                old: a,
                new: b,
            });
        }
    };
    push(
        "profile".into(),
        show(old.profile.as_ref()),
        show(new.profile.as_ref()),
    );
    push(
        "engine".into(),
        old.product.to_string(),
        new.product.to_string(),
    );
    push(
        "version".into(),
        show(old.version.as_ref()),
        show(new.version.as_ref()),
    );
    let catalog_name = |c: &Cluster| format!("{} {}", c.catalog.product(), c.catalog.version());
    push("catalog".into(), catalog_name(old), catalog_name(new));
    let keys: BTreeSet<&String> = old.labels.keys().chain(new.labels.keys()).collect();
    for k in keys {
        push(
            format!("labels.{k}"),
            show(old.labels.get(k)),
            show(new.labels.get(k)),
        );
    }
    let user = |c: &Cluster| show(c.auth.as_ref().and_then(|a| a.username.as_ref()));
    let pass = |c: &Cluster| {
        c.auth
            .as_ref()
            .map(|a| a.password.to_string())
            .unwrap_or_else(|| "(unset)".to_owned())
    };
    push("auth.username".into(), user(old), user(new));
    push("auth.password".into(), pass(old), pass(new));
    if old.catalog != new.catalog {
        out.extend(catalog_changes(old.catalog(), new.catalog()));
    }
    out
}

/// What a change of catalog (a version or engine change) does to the parameters: those
/// that appear, vanish or change their class (run-time ↔ start-only), as
/// `catalog.NAME` fields whose old/new are the class or `(absent)`.
pub fn catalog_changes(old: &Catalog, new: &Catalog) -> Vec<FieldChange> {
    let class = |c: &Catalog, name: &str| {
        c.get(name)
            .map(|p| if p.runtime { "run-time" } else { "start-only" })
            .unwrap_or("(absent)")
            .to_owned()
    };
    let names: BTreeSet<&String> = old.parameters.keys().chain(new.parameters.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (class(old, name), class(new, name));
            (a != b).then(|| FieldChange {
                field: format!("catalog.{name}"),
                old: a,
                new: b,
            })
        })
        .collect()
}

fn param_changes(
    cat: &Catalog,
    old: &BTreeMap<String, Param>,
    new: &BTreeMap<String, Param>,
) -> Vec<ParamChange> {
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (o, n) = (old.get(name), new.get(name));
            if o.map(|p| &p.value) == n.map(|p| &p.value) {
                return None;
            }
            Some(ParamChange {
                name: name.clone(),
                old: o.map(|p| p.written.clone()),
                new: n.map(|p| p.written.clone()),
                // Dropping a parameter from management changes nothing on the node.
                // Unchecked parameters are applied at run time, as written.
                restart: n.is_some_and(|p| !p.unchecked) && cat.needs_restart(name),
                unchecked: n.or(o).is_some_and(|p| p.unchecked),
            })
        })
        .collect()
}

/// Risks that need no live data.
fn risks(d: &ClusterDiff, old: Option<&Cluster>, new: Option<&Cluster>) -> Vec<Risk> {
    let mut out = Vec::new();
    let Some(new) = new else {
        return out;
    };
    let restart: Vec<&str> = d
        .parameters
        .iter()
        .filter(|p| p.restart)
        .map(|p| p.name.as_str())
        .collect();
    if !restart.is_empty() && d.status == ClusterStatus::Modified {
        let primaries: Vec<String> = new
            .nodes
            .iter()
            // A node without a declared role may run as a primary.
            .filter(|n| n.role != Some(Role::Replica))
            .map(|n| n.id.clone())
            .collect();
        if !primaries.is_empty() {
            out.push(Risk {
                kind: RiskKind::PrimaryRestart,
                message: format!(
                    "{} only take effect at start: {} primar{} will restart",
                    restart.join(", "),
                    primaries.len(),
                    if primaries.len() == 1 { "y" } else { "ies" }
                ),
                nodes: primaries,
            });
        }
    }
    out.extend(eviction_and_memory_risks(
        new.engine,
        &d.parameters,
        old.is_some(),
    ));
    if let Some(old) = old {
        let limit = new.rollout.max_unavailable_per_shard as usize;
        let mut removed: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for n in &d.nodes_removed {
            removed.entry(&n.shard).or_default().push(n.id.clone());
        }
        for (shard, ids) in removed {
            let before = old.nodes.iter().filter(|n| n.shard == shard).count();
            if ids.len() > limit {
                out.push(Risk {
                    kind: RiskKind::ShardDisruption,
                    message: format!(
                        "shard {shard} loses {} of its {before} nodes at once; its disruption limit is {limit}",
                        ids.len()
                    ),
                    nodes: ids,
                });
            }
        }
    }
    out.sort();
    out
}

/// The eviction-policy and memory-limit risks of a set of parameter changes. Shared by
/// the PR diff and the plan, which adds the live figures.
pub fn eviction_and_memory_risks(
    engine: Engine,
    changes: &[ParamChange],
    existed: bool,
) -> Vec<Risk> {
    let mut out = Vec::new();
    if !existed {
        return out;
    }
    for c in changes {
        let (Some(old), Some(new)) = (&c.old, &c.new) else {
            continue;
        };
        if engine.eviction_parameters().contains(&c.name.as_str()) {
            let note = if new.eq_ignore_ascii_case("noeviction") || new == "off" {
                ": when memory is full, writes will fail instead of evicting"
            } else {
                ""
            };
            out.push(Risk {
                kind: RiskKind::EvictionPolicySwitch,
                message: format!("{}: {old} → {new}{note}", c.name),
                nodes: Vec::new(),
            });
        }
        if c.name == engine.memory_limit_parameter() {
            let cat = catalog::catalog(engine);
            let bytes = |v: &str| {
                cat.normalize(&c.name, &serde_json::Value::String(v.to_owned()))
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            };
            if let (Some(o), Some(n)) = (bytes(old), bytes(new)) {
                // 0 means "no limit" for Redis.
                let lowered = n > 0 && (o == 0 || n < o);
                if lowered {
                    out.push(Risk {
                        kind: RiskKind::MemoryLowered,
                        message: format!(
                            "{} goes down ({old} → {new}): nodes holding more data will evict",
                            c.name
                        ),
                        nodes: Vec::new(),
                    });
                }
            }
        }
    }
    out
}

/// Desired parameters of one node against what it reports: the changes to apply. A
/// live value is normalised through the catalog so that `4gb` and `4294967296` match.
pub fn node_changes(
    cat: &Catalog,
    desired: &BTreeMap<String, Param>,
    live: &BTreeMap<String, String>,
) -> Vec<ParamChange> {
    desired
        .iter()
        .filter_map(|(name, want)| {
            let have = live.get(name);
            // An unchecked parameter is compared as the engine reports it.
            let have_norm = have.map(|v| {
                if want.unchecked {
                    return v.trim().to_owned();
                }
                cat.normalize(name, &serde_json::Value::String(v.clone()))
                    .unwrap_or_else(|_| v.clone())
            });
            if have_norm.as_deref() == Some(want.value.as_str()) {
                return None;
            }
            Some(ParamChange {
                name: name.clone(),
                old: have.cloned(),
                new: Some(want.value.clone()),
                restart: !want.unchecked && cat.needs_restart(name),
                unchecked: want.unchecked,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::spec::model::{Managed, RolloutPolicy};

    fn param(v: &str, w: &str) -> Param {
        Param {
            value: v.into(),
            written: w.into(),
            profile: None,
            unchecked: false,
        }
    }

    fn cluster(params: &[(&str, &str, &str)], nodes: &[(&str, &str, Role)]) -> Cluster {
        Cluster {
            name: "c".into(),
            file: "clusters/c.yaml".into(),
            labels: BTreeMap::new(),
            engine: Engine::Redis,
            product: catalog::Product::Redis,
            version: None,
            catalog: catalog::CatalogId::default_for(Engine::Redis),
            profile: None,
            parameters: params
                .iter()
                .map(|(n, v, w)| (n.to_string(), param(v, w)))
                .collect(),
            auth: None,
            tls: None,
            sentinel: None,
            mode: Default::default(),
            nodes: nodes
                .iter()
                .map(|(id, shard, role)| Node {
                    id: id.to_string(),
                    address: format!("{id}:6379"),
                    shard: shard.to_string(),
                    role: Some(*role),
                    managed: Managed::Direct,
                    labels: BTreeMap::new(),
                })
                .collect(),
            rollout: RolloutPolicy::default(),
        }
    }

    #[test]
    fn equal_values_written_differently_are_no_change() {
        let a = cluster(
            &[("maxmemory", "1073741824", "1gb")],
            &[("n1", "s", Role::Primary)],
        );
        let b = cluster(
            &[("maxmemory", "1073741824", "1024mb")],
            &[("n1", "s", Role::Primary)],
        );
        assert_eq!(diff_cluster(Some(&a), Some(&b)), None);
    }

    #[test]
    fn a_restart_only_change_flags_the_primaries() {
        let a = cluster(
            &[("databases", "16", "16")],
            &[("n1", "s", Role::Primary), ("n2", "s", Role::Replica)],
        );
        let b = cluster(
            &[("databases", "32", "32")],
            &[("n1", "s", Role::Primary), ("n2", "s", Role::Replica)],
        );
        let d = diff_cluster(Some(&a), Some(&b)).unwrap();
        assert!(d.parameters[0].restart);
        assert_eq!(d.risks.len(), 1);
        assert_eq!(d.risks[0].kind, RiskKind::PrimaryRestart);
        assert_eq!(d.risks[0].nodes, vec!["n1".to_string()]);
    }

    #[test]
    fn removing_two_nodes_of_a_shard_with_limit_one_is_a_disruption() {
        let a = cluster(
            &[],
            &[
                ("n1", "s", Role::Primary),
                ("n2", "s", Role::Replica),
                ("n3", "s", Role::Replica),
            ],
        );
        let b = cluster(&[], &[("n1", "s", Role::Primary)]);
        let d = diff_cluster(Some(&a), Some(&b)).unwrap();
        assert_eq!(d.nodes_removed.len(), 2);
        assert_eq!(d.risks[0].kind, RiskKind::ShardDisruption);
        assert_eq!(
            d.risks[0].message,
            "shard s loses 2 of its 3 nodes at once; its disruption limit is 1"
        );
    }

    #[test]
    fn live_values_are_normalised_before_comparing() {
        let want: BTreeMap<String, Param> = [
            ("maxmemory".to_string(), param("1073741824", "1gb")),
            ("appendonly".to_string(), param("yes", "yes")),
        ]
        .into_iter()
        .collect();
        let live: BTreeMap<String, String> = [
            ("maxmemory".to_string(), "1073741824".to_string()),
            ("appendonly".to_string(), "no".to_string()),
        ]
        .into_iter()
        .collect();
        let c = node_changes(catalog::catalog(Engine::Redis), &want, &live);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].name, "appendonly");
        assert_eq!(c[0].old.as_deref(), Some("no"));
    }

    #[test]
    fn a_version_change_shows_the_parameters_that_appear_vanish_or_change_class() {
        let a = cluster(&[], &[("n1", "s", Role::Primary)]);
        let mut b = a.clone();
        b.version = Some("7.2".into());
        b.catalog = catalog::CatalogId::select(catalog::Product::Redis, Some("7.2")).unwrap();
        let d = diff_cluster(Some(&a), Some(&b)).unwrap();
        let field = |name: &str| {
            d.cluster_fields
                .iter()
                .find(|f| f.field == name)
                .map(|f| (f.old.as_str(), f.new.as_str()))
        };
        assert_eq!(field("version"), Some(("(unset)", "7.2")));
        assert_eq!(field("catalog"), Some(("redis 7.0", "redis 7.2")));
        assert_eq!(
            field("catalog.locale-collate"),
            Some(("(absent)", "run-time"))
        );
        assert_eq!(
            field("catalog.aof-disable-auto-gc"),
            Some(("run-time", "(absent)"))
        );
        assert_eq!(field("catalog.maxmemory"), None);
    }

    #[test]
    fn unchecked_parameters_are_flagged_and_applied_at_run_time() {
        let mut want: BTreeMap<String, Param> = BTreeMap::new();
        want.insert(
            "search-timeout".into(),
            Param {
                unchecked: true,
                ..param("600", "600")
            },
        );
        let live: BTreeMap<String, String> = [("search-timeout".to_string(), "500".to_string())]
            .into_iter()
            .collect();
        let c = node_changes(catalog::catalog(Engine::Redis), &want, &live);
        assert_eq!(c.len(), 1);
        assert!(c[0].unchecked);
        assert!(
            !c[0].restart,
            "an unknown parameter would otherwise count as start-only"
        );
        let same: BTreeMap<String, String> = [("search-timeout".to_string(), "600".to_string())]
            .into_iter()
            .collect();
        assert!(node_changes(catalog::catalog(Engine::Redis), &want, &same).is_empty());

        let a = cluster(&[], &[("n1", "s", Role::Primary)]);
        let mut b = a.clone();
        b.parameters = want;
        let d = diff_cluster(Some(&a), Some(&b)).unwrap();
        assert!(d.parameters[0].unchecked && !d.parameters[0].restart);
        assert!(d.risks.is_empty(), "{:?}", d.risks);
    }
}
