//! What the journal stores: the reconciler's state, as plain serde data. The journal
//! (`edges::audit`) reads and writes these types and nothing else of the reconciler.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pure::gates::{Judgement, Sample};
use crate::pure::protocol::Outcome;
use crate::pure::rollout::Rollout;
use crate::pure::spec::model::Window;

/// The format version of the journal's state. 2: a rollout's baseline and restore map
/// are in a file of their own (`clusters/<name>.rollout.json`, see [`RolloutFixed`]);
/// version 1 kept them in the cluster's file, and still reads.
pub const STATE_VERSION: u32 = 2;

/// The suffix of a cluster's rollout file among the journal's cluster files: cluster
/// names are DNS labels, without a dot.
pub const ROLLOUT_FILE_SUFFIX: &str = ".rollout";

/// Everything the reconciler must remember across a restart; the journal's tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub version: u32,
    /// The last valid revision taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Raised for every assignment made.
    pub generation: u64,
    pub clusters: BTreeMap<String, ClusterState>,
    /// The rollout windows of the last valid revision (`Settings`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterState {
    /// The cluster's content being rolled out or rolled out last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The node ids the last revision taken declares: a revision that adds one is the
    /// cause (and the note's commit) of the rollout that reaches it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declared: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutRecord>,
    /// A revision rolled back: not applied again until the cluster's content changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
    /// What each node of the cluster was told to run.
    #[serde(default)]
    pub assignments: BTreeMap<String, NodeAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The revision the rollouts of this content are noted on: the first revision with
    /// this content, or a later one that added nodes to the cluster.
    pub revision: String,
    /// A digest of the cluster's parameters: equal digests, equal assignments.
    pub digest: String,
    pub parameters: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Refused {
    pub revision: String,
    pub digest: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    pub rollout: Rollout,
    pub started_at: String,
    /// Made when the rollout starts and never changed: written in a file of its own,
    /// once per rollout, rather than in every entry of the cluster's file (about 60% of
    /// it for 100 nodes). Read from the cluster's file too (version 1).
    #[serde(flatten, skip_serializing)]
    pub fixed: Arc<RolloutFixed>,
    /// When the current batch was assigned, on this process's clock (not kept: after a
    /// restart the batch's time counts from the restart).
    #[serde(skip)]
    pub batch_started_ms: Option<u64>,
    /// When the current batch's bake ends, on the wall clock (ms; the console's
    /// countdown). Not kept, like `batch_started_ms`.
    #[serde(skip)]
    pub bake_until_ms: Option<u64>,
    /// The gates' last judgement of this rollout: the batch (from 0) and its figures, for
    /// the console. Not kept: after a restart the journal's line has them.
    #[serde(skip)]
    pub judged: Option<(usize, Judgement)>,
    /// Which run of assignments the rollout is in: the generation of the last
    /// assignment it made. Timers carry it, so a timer started before a supersede, a
    /// resume or a rollback never acts on the run after it.
    #[serde(default)]
    pub run: u64,
    /// A drift correction: the content rolled out again to nodes that drifted from
    /// their assignment. Noted on no config commit (journaled only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub correction: bool,
    /// What the cluster's Sentinels did by themselves during the rollout (a primary
    /// they failed over), in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<String>,
}

/// The part of a rollout record set when it starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutFixed {
    /// Every node's health before the rollout began (parameters left out).
    #[serde(default)]
    pub baseline: BTreeMap<String, Sample>,
    /// Per touched node, what a rollback assigns: its previous assignment, and for
    /// parameters it had none for, the value it ran before the rollout.
    #[serde(default)]
    pub restore: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAssignment {
    pub revision: String,
    pub digest: String,
    pub generation: u64,
    pub parameters: BTreeMap<String, String>,
    pub restart_allowed: bool,
    /// The outcome the node reported for this (revision, generation), once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// The `finishedAt` of the last apply result the node reported for this (revision,
    /// generation): a later one is the same assignment applied again (a restarted agent),
    /// journaled; sent back as the assignment's `confirmedAt` once applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_at: Option<String>,
}
