//! What readers see of the reconciler: its [`Status`], published by the runtime after
//! each journal write (a `watch` of an `Arc`, so the API, `/metrics` and progress
//! displays never queue behind the reconciler's inputs), and the typed bodies of the
//! status routes, which the `cacheflow rollout` client reads back.
//!
//! ```text
//! reconciler State ─► Status (per cluster, rebuilt only for the clusters an entry changed)
//!   ─► Rollouts      GET /api/v1/rollouts, `cacheflow rollout status`
//!   ─► ClusterView   GET /api/v1/clusters
//!   ─► node counts   cacheflow_nodes{state}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pure::protocol::Outcome;
use crate::pure::reconciler::{ClusterState, Refused, RolloutRecord, State, Target};
use crate::pure::rollout::Phase;

/// The reconciler's state as readers see it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Status {
    /// The last valid revision taken.
    pub head: Option<String>,
    pub clusters: BTreeMap<String, Arc<ClusterStatus>>,
    /// Raised by every update: a reader (the console's event stream) tells whether the
    /// status changed since a page was drawn.
    pub seq: u64,
}

/// One cluster of the [`Status`].
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterStatus {
    pub target: Option<Target>,
    pub refused: Option<Refused>,
    pub rollout: Option<RolloutStatus>,
    /// The same rollout typed, for the readers that act on it (`sync`, `demo`).
    pub progress: Option<RolloutProgress>,
    pub assignments: BTreeMap<String, AssignmentStatus>,
    /// The node ids the last revision taken declares (the console's rows). Shared with
    /// the status before when unchanged: a 10,000-node cluster is not copied again on
    /// every update.
    pub declared: Arc<Vec<String>>,
}

/// A rollout's phase and size as the reconciler holds them (the [`RolloutStatus`] says
/// them in the words of the API).
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutProgress {
    pub phase: Phase,
    /// The nodes of all its batches.
    pub nodes: usize,
    /// Its batches, in order, with their nodes (shared like `declared`).
    pub batches: Arc<Vec<Vec<String>>>,
    /// When the current batch's bake ends (wall-clock ms), while baking.
    pub bake_until_ms: Option<u64>,
    /// The gates' last judgement: the batch (from 0) and the figures.
    pub judged: Option<(usize, crate::pure::gates::Judgement)>,
}

/// A cluster's current or last rollout. Fields in the order of their JSON names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The batch (from 1) while waiting, applying, baking, judging or paused.
    pub batch: Option<usize>,
    pub batches: usize,
    pub confirmed: BTreeSet<String>,
    /// `pending`, `waiting`, `failing-over`, `applying`, `baking`, `judging`, `paused`, `rolling-back`,
    /// `completed`, `rolled-back` or `superseded`.
    pub phase: String,
    /// Why it is waiting, paused, rolling back or rolled back; `by <revision>` when
    /// superseded.
    pub reason: Option<String>,
    pub revision: String,
    /// What the cluster's Sentinels did by themselves during the rollout (a primary
    /// they failed over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<String>,
    pub started_at: String,
    pub touched: BTreeSet<String>,
}

/// What a node was told and what it said of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignmentStatus {
    pub generation: u64,
    pub outcome: Option<Outcome>,
    pub revision: String,
}

/// The body of `GET /api/v1/rollouts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollouts {
    pub clusters: Vec<ClusterRollout>,
    pub head: Option<String>,
}

/// One cluster in [`Rollouts`] (and the `cluster` of a command's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRollout {
    pub cluster: String,
    pub refused: Option<Refused>,
    pub rollout: Option<RolloutStatus>,
    /// The revision of the cluster's content being (or last) rolled out.
    pub target: Option<String>,
}

/// The body of `POST /api/v1/rollouts/{cluster}/{action}` when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandAnswer {
    pub cluster: Option<ClusterRollout>,
    pub ok: bool,
}

/// One cluster of `GET /api/v1/clusters`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView<'a> {
    pub assignments: &'a BTreeMap<String, AssignmentStatus>,
    pub cluster: &'a str,
    /// Nodes by the outcome of their assignment: `applied`, `failed`, `pending`.
    pub nodes: BTreeMap<&'static str, usize>,
    pub target: &'a Option<Target>,
}

/// The body of `GET /api/v1/clusters`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Clusters<'a> {
    pub clusters: Vec<ClusterView<'a>>,
    pub head: &'a Option<String>,
}

/// `applied`, `failed` (either failure) or `pending` (no outcome yet).
fn outcome_name(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Applied) => "applied",
        Some(_) => "failed",
        None => "pending",
    }
}

impl RolloutStatus {
    pub fn of(record: &RolloutRecord) -> RolloutStatus {
        let r = &record.rollout;
        let (batch, reason) = match &r.phase {
            Phase::Pending | Phase::Completed => (None, None),
            Phase::Applying { batch } | Phase::Baking { batch } | Phase::Judging { batch } => {
                (Some(*batch), None)
            }
            Phase::FailingOver { batch, from, to } => (
                Some(*batch),
                Some(match to {
                    Some(to) => format!("failover: {from} → {to}"),
                    None => format!("failover from {from}: choosing a replica"),
                }),
            ),
            Phase::Waiting { batch, reason } | Phase::Paused { batch, reason } => {
                (Some(*batch), Some(reason.clone()))
            }
            Phase::RollingBack { reason } | Phase::RolledBack { reason } => {
                (None, Some(reason.clone()))
            }
            Phase::Superseded { by } => (None, Some(format!("by {by}"))),
        };
        RolloutStatus {
            batch: batch.map(|b| b + 1),
            batches: r.spec.batches.len(),
            confirmed: r.confirmed.clone(),
            phase: crate::pure::render::phase_word(&r.phase).to_owned(),
            reason,
            revision: r.spec.revision.clone(),
            sentinel: record.sentinel.clone(),
            started_at: record.started_at.clone(),
            touched: r.touched.clone(),
        }
    }
}

/// `now` shared: the one of `before` when equal (a comparison costs no allocation).
fn shared<T: PartialEq + Clone>(now: &T, before: Option<&Arc<T>>) -> Arc<T> {
    match before {
        Some(b) if **b == *now => b.clone(),
        _ => Arc::new(now.clone()),
    }
}

impl ClusterStatus {
    pub fn of(cs: &ClusterState) -> ClusterStatus {
        ClusterStatus::after(cs, None)
    }

    /// The status of `cs`, sharing the node lists of `before` that did not change.
    pub fn after(cs: &ClusterState, before: Option<&ClusterStatus>) -> ClusterStatus {
        let batches_before = before.and_then(|b| b.progress.as_ref()).map(|p| &p.batches);
        ClusterStatus {
            target: cs.target.clone(),
            refused: cs.refused.clone(),
            rollout: cs.rollout.as_ref().map(RolloutStatus::of),
            progress: cs.rollout.as_ref().map(|r| RolloutProgress {
                phase: r.rollout.phase.clone(),
                nodes: r.rollout.spec.batches.iter().map(Vec::len).sum(),
                batches: shared(&r.rollout.spec.batches, batches_before),
                bake_until_ms: r.bake_until_ms,
                judged: r.judged.clone(),
            }),
            assignments: cs
                .assignments
                .iter()
                .map(|(id, a)| {
                    let status = AssignmentStatus {
                        generation: a.generation,
                        outcome: a.outcome,
                        revision: a.revision.clone(),
                    };
                    (id.clone(), status)
                })
                .collect(),
            declared: shared(&cs.declared, before.map(|b| &b.declared)),
        }
    }

    /// Nodes by the outcome of their assignment.
    pub fn nodes(&self) -> BTreeMap<&'static str, usize> {
        let mut by_outcome = BTreeMap::new();
        for a in self.assignments.values() {
            *by_outcome.entry(outcome_name(a.outcome)).or_default() += 1;
        }
        by_outcome
    }
}

impl Status {
    /// The status of the whole state.
    pub fn of(state: &State) -> Status {
        Status::default().updated(state, state.clusters.keys())
    }

    /// This status with the head and the clusters `changed` read again from `state`
    /// (the others are shared with `self`).
    pub fn updated<'a>(
        &self,
        state: &State,
        changed: impl IntoIterator<Item = &'a String>,
    ) -> Status {
        let mut clusters = self.clusters.clone();
        for name in changed {
            match state.clusters.get(name) {
                Some(cs) => {
                    let before = clusters.get(name).map(|b| b.as_ref());
                    let now = ClusterStatus::after(cs, before);
                    clusters.insert(name.clone(), Arc::new(now))
                }
                None => clusters.remove(name),
            };
        }
        Status {
            head: state.head.clone(),
            clusters,
            seq: self.seq.wrapping_add(1),
        }
    }

    /// The body of `GET /api/v1/rollouts`.
    pub fn rollouts(&self) -> Rollouts {
        Rollouts {
            head: self.head.clone(),
            clusters: self
                .clusters
                .keys()
                .filter_map(|name| self.rollout_of(name))
                .collect(),
        }
    }

    /// One cluster of [`Status::rollouts`].
    pub fn rollout_of(&self, name: &str) -> Option<ClusterRollout> {
        let cs = self.clusters.get(name)?;
        Some(ClusterRollout {
            cluster: name.to_owned(),
            refused: cs.refused.clone(),
            rollout: cs.rollout.clone(),
            target: cs.target.as_ref().map(|t| t.revision.clone()),
        })
    }

    /// The body of `GET /api/v1/clusters`.
    pub fn clusters(&self) -> Clusters<'_> {
        Clusters {
            head: &self.head,
            clusters: self
                .clusters
                .iter()
                .map(|(name, cs)| ClusterView {
                    assignments: &cs.assignments,
                    cluster: name,
                    nodes: cs.nodes(),
                    target: &cs.target,
                })
                .collect(),
        }
    }

    /// Nodes of every cluster by the outcome of their assignment (`cacheflow_nodes`).
    pub fn nodes(&self) -> BTreeMap<&'static str, usize> {
        let mut all = BTreeMap::new();
        for cs in self.clusters.values() {
            for (k, n) in cs.nodes() {
                *all.entry(k).or_default() += n;
            }
        }
        all
    }
}

impl Rollouts {
    /// `cacheflow rollout status`: one line per cluster (and one more when refused).
    pub fn text(&self, only: Option<&str>) -> String {
        self.clusters
            .iter()
            .filter(|c| only.is_none_or(|n| c.cluster == n))
            .map(ClusterRollout::text)
            .collect()
    }
}

impl ClusterRollout {
    /// `cache: 9da30030a5b4 applying, batch 2 of 2` (and `  refused: <reason>`).
    pub fn text(&self) -> String {
        let name = &self.cluster;
        let mut out = match &self.rollout {
            None => format!("{name}: no rollout\n"),
            Some(r) => {
                let rev = crate::pure::render::short_id(&r.revision);
                let batch = r
                    .batch
                    .map(|b| format!(", batch {b} of {}", r.batches))
                    .unwrap_or_default();
                let reason = r
                    .reason
                    .as_ref()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                format!("{name}: {rev} {}{batch}{reason}\n", r.phase)
            }
        };
        if let Some(refused) = &self.refused {
            out.push_str(&format!("  refused: {}\n", refused.reason));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::reconciler::NodeAssignment;

    fn state() -> State {
        let assignment = |outcome| NodeAssignment {
            revision: "r1".into(),
            digest: "d".into(),
            generation: 3,
            parameters: BTreeMap::new(),
            restart_allowed: true,
            outcome,
            reported_at: None,
        };
        let cache = ClusterState {
            target: Some(Target {
                revision: "r1".into(),
                digest: "d".into(),
                parameters: BTreeMap::from([("hz".into(), "20".into())]),
            }),
            refused: Some(Refused {
                revision: "r2".into(),
                digest: "e".into(),
                reason: "rolled back".into(),
            }),
            assignments: BTreeMap::from([
                ("a1".into(), assignment(Some(Outcome::Applied))),
                ("a2".into(), assignment(None)),
            ]),
            ..ClusterState::default()
        };
        State {
            head: Some("r2".into()),
            clusters: BTreeMap::from([
                ("cache".into(), cache),
                ("other".into(), ClusterState::default()),
            ]),
            ..State::default()
        }
    }

    #[test]
    fn the_status_routes_keep_their_json_and_the_client_reads_it_back() {
        let status = Status::of(&state());
        let rollouts = serde_json::to_value(status.rollouts()).unwrap();
        assert_eq!(
            rollouts,
            serde_json::json!({"head": "r2", "clusters": [
                {"cluster": "cache", "target": "r1", "rollout": null,
                 "refused": {"revision": "r2", "digest": "e", "reason": "rolled back"}},
                {"cluster": "other", "target": null, "rollout": null, "refused": null},
            ]})
        );
        let back: Rollouts = serde_json::from_value(rollouts).unwrap();
        assert_eq!(back, status.rollouts());
        assert_eq!(
            back.text(None),
            "cache: no rollout\n  refused: rolled back\nother: no rollout\n"
        );
        assert_eq!(back.text(Some("other")), "other: no rollout\n");
        let clusters = serde_json::to_value(status.clusters()).unwrap();
        assert_eq!(
            clusters["clusters"][0]["nodes"],
            serde_json::json!({"applied": 1, "pending": 1})
        );
        assert_eq!(
            clusters["clusters"][0]["assignments"]["a2"],
            serde_json::json!({"revision": "r1", "generation": 3, "outcome": null})
        );
        assert_eq!(clusters["clusters"][0]["target"]["parameters"]["hz"], "20");
        assert_eq!(
            status.nodes(),
            BTreeMap::from([("applied", 2 - 1), ("pending", 1)])
        );
    }

    #[test]
    fn an_update_reads_again_only_the_clusters_changed() {
        let mut state = state();
        let before = Status::of(&state);
        state.clusters.remove("other");
        state.clusters.get_mut("cache").unwrap().refused = None;
        state.head = Some("r3".into());
        let only_cache = before.updated(&state, &["cache".to_owned()]);
        assert_eq!(only_cache.head.as_deref(), Some("r3"));
        assert!(only_cache.clusters["cache"].refused.is_none());
        // Not said to have changed: shared, as it was.
        assert!(Arc::ptr_eq(
            &only_cache.clusters["other"],
            &before.clusters["other"]
        ));
        // The node lists of a cluster made again are shared when they did not change.
        let mut declaring = state.clone();
        declaring.clusters.get_mut("cache").unwrap().declared = vec!["a1".into(), "a2".into()];
        let one = Status::of(&declaring);
        let again = one.updated(&declaring, &["cache".to_owned()]);
        assert!(!Arc::ptr_eq(
            &one.clusters["cache"],
            &again.clusters["cache"]
        ));
        assert!(Arc::ptr_eq(
            &one.clusters["cache"].declared,
            &again.clusters["cache"].declared
        ));
        declaring
            .clusters
            .get_mut("cache")
            .unwrap()
            .declared
            .push("a3".into());
        let changed = again.updated(&declaring, &["cache".to_owned()]);
        assert_eq!(*changed.clusters["cache"].declared, ["a1", "a2", "a3"]);
        let both = before.updated(&state, &["cache".to_owned(), "other".to_owned()]);
        let fresh = Status::of(&state);
        assert_eq!((&both.head, &both.clusters), (&fresh.head, &fresh.clusters));
        assert_eq!((before.seq, both.seq), (1, 2), "every update is numbered");
    }
}
