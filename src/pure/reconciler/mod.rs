//! The reconciler: turns valid revisions into staged rollouts, one per cluster, and node
//! reports into assignments. This module is the deterministic core: it holds the
//! [`State`] (what the journal stores, in `state.rs`), takes one input at a time (a
//! revision, a node's report, a timer, a person's command) with the time given by the
//! caller, and returns [`Effect`]s (plain data, in `effect.rs`) for the runtime
//! (`flow::runtime`) to carry out: write a journal entry, add a note, start a timer, wake
//! a node whose assignment changed, hand a [`Notice`] to `edges::notify`. It reads no
//! clock and imports nothing that does I/O.
//!
//! ```text
//! revision ─► per cluster: content changed? refused? ─► plan against live ─► Rollout
//! report   ─► live sample; lastApply of the current (revision, generation)? ─► NodeApplied
//! Rollout actions: Assign ─► assignments (+ generation)   JudgeGates ─► gates::judge
//!                  Timer ─► Effect::Timer                  Journal ─► one entry per input
//! ```
//!
//! Write-ahead: the runtime writes the journal entry of an input before it answers any
//! node or starts any timer, so what a node was told is always in the journal.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::pure::catalog::human_ms;
use crate::pure::gates::{self, Sample};
use crate::pure::live::{LiveState, NodeLive};
use crate::pure::plan;
use crate::pure::protocol::{ApplyResult, Assignment, Outcome, Report, PROTOCOL_VERSION};
use crate::pure::render::{rfc3339_utc, short_id};
use crate::pure::rollout::{self, Action, Event, Phase, Rollout, RolloutSpec};
use crate::pure::spec::model::{Cluster, Desired, Managed, Window};
use crate::pure::windows::{self, Windows};

pub mod effect;
mod sentinel;
pub mod state;
pub mod status;

pub use effect::{targets_for, Effect, Notice, NoticeKind, Record, SentinelFailover};
pub use state::{
    ClusterState, NodeAssignment, Refused, RolloutFixed, RolloutRecord, State, Target,
    STATE_VERSION,
};

/// Why a report or a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedInput {
    #[error("node `{0}` is not declared in any cluster of the current revision")]
    UnknownNode(String),
    #[error("cluster `{0}` is not declared in the current revision")]
    UnknownCluster(String),
    #[error("cluster `{0}` has no rollout in progress")]
    NoRollout(String),
    /// A person's command the rollout's phase does not take (`rollout::refusal`).
    #[error("cluster `{cluster}`: cannot {command} the rollout of {revision}: {why}")]
    NotTaken {
        cluster: String,
        command: &'static str,
        revision: String,
        why: String,
    },
    #[error("cluster `{0}` has no refused content to retry")]
    NothingRefused(String),
    #[error("the report is for node `{found}`, not `{expected}`")]
    WrongNode { expected: String, found: String },
}

/// The reconciler's core. Not thread-safe by design: the runtime owns it in one task.
pub struct Reconciler {
    pub state: State,
    desired: Option<Arc<Desired>>,
    /// node id → cluster name, for the current revision.
    node_cluster: HashMap<String, String>,
    /// The latest reading of each node (declared parameters only).
    live: HashMap<String, Sample>,
    /// The latest reading of nodes that report but no cluster declares (for the drift
    /// report; at most [`MAX_UNDECLARED`]).
    undeclared: HashMap<String, Sample>,
    /// Journal lines of the input being handled, with their log fields.
    lines: Vec<Record>,
    /// Roll out again to nodes whose live values differ from their assignment (drift).
    /// `sync` sets it: a person asked to converge now. The server leaves drift to the
    /// drift report unless told to correct it.
    pub correct_drift: bool,
    /// Inside [`Reconciler::correct`]: what cannot be corrected is said, not refused.
    correcting: bool,
    effects: Vec<Effect>,
    /// `state.windows`, compiled.
    windows: Windows,
    /// How long after a revision a rollout waits for declared nodes never heard from
    /// (after a start, nodes report one by one: without the wait the first rollout would
    /// hold only the nodes whose report came first). 0: no wait (`sync` read every node).
    pub report_grace_ms: u64,
    /// When the current revision was taken.
    revision_at_ms: u64,
    /// Clusters whose state changed since the last [`Reconciler::take_changed`]: the
    /// journal serialises only those (with 100 clusters, serialising all of them on
    /// every entry was most of a report's wait during rollouts).
    dirty: BTreeSet<String>,
    /// Clusters whose state changed since the last [`Reconciler::take_unpublished`]: the
    /// runtime rebuilds only their part of the published status. Apart from `dirty`: an
    /// outcome recorded without a journal line leaves its cluster dirty until the next
    /// entry, and rebuilding every dirty cluster on every batch of reports took 10,000
    /// agents from 3 ms to 3 s per report.
    unpublished: BTreeSet<String>,
    /// What each cluster's Sentinels said last (clusters that name them).
    sentinels: HashMap<String, sentinel::SentinelSeen>,
    /// Gates due while a cluster's Sentinels were unsettled.
    gates_waiting: HashMap<String, sentinel::GatesWaiting>,
    /// Steps that would start a batch of a cluster that names Sentinels, held until
    /// they answer an ask made after the step was due.
    deferred: HashMap<String, sentinel::Deferred>,
}

fn digest(params: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in params {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The batch a rollout is working on (assigned, baking or judging), if any.
fn running_batch(phase: &Phase) -> Option<usize> {
    match phase {
        Phase::Applying { batch }
        | Phase::Baking { batch }
        | Phase::Judging { batch }
        | Phase::FailingOver { batch, .. } => Some(*batch),
        _ => None,
    }
}

/// True when a step from `before` to `after` starts a batch: assigns it, or moves a
/// primary's role first (a batch resumed after a pause starts again).
fn starts_batch(before: &Phase, after: &Phase) -> bool {
    let starting = |p: &Phase| match p {
        Phase::Applying { batch } | Phase::FailingOver { batch, .. } => Some(*batch),
        _ => None,
    };
    starting(after).is_some() && starting(after) != starting(before)
}

/// Compile rollout windows (validated with the revision they came from; windows that do
/// not compile here are logged and left out rather than holding rollouts forever).
fn compile_windows(list: &[Window]) -> Windows {
    Windows::new(list).unwrap_or_else(|e| {
        tracing::error!("rollout windows ignored: {e}");
        Windows::default()
    })
}

/// What a drift report compares: the revision (without the clusters not compared), the
/// readings, and the clusters left out with why.
#[derive(Debug, Clone)]
pub struct DriftInputs {
    pub desired: Option<Arc<Desired>>,
    pub live: LiveState,
    pub not_compared: Vec<crate::pure::drift::NotCompared>,
}

/// Undeclared nodes remembered for the drift report (they hold a valid node token).
pub const MAX_UNDECLARED: usize = 10_000;

/// The journal line of an assignment a node applied again after it had reported on it
/// (its agent restarted): what changed, or why it failed.
fn reapplied(cluster: &str, node_id: &str, result: &ApplyResult) -> Record {
    let what = match (result.outcome, result.changed.is_empty()) {
        (Outcome::Applied, true) => "no value changed".to_owned(),
        (Outcome::Applied, false) => format!("changed {}", result.changed.join(", ")),
        (outcome, _) => format!(
            "{}: {}",
            if outcome == Outcome::Failed {
                "failed"
            } else {
                "inconsistent"
            },
            result.error.as_deref().unwrap_or_default()
        ),
    };
    let restarted = if result.restarted {
        ", the engine restarted"
    } else {
        ""
    };
    let line = format!(
        "{cluster}: {node_id} applied {} (generation {}) again after its agent restarted: {what}{restarted}",
        short_id(&result.revision),
        result.generation
    );
    let record = Record::new("node_reapplied", line)
        .cluster(cluster)
        .revision(&result.revision)
        .node(node_id);
    if result.outcome == Outcome::Applied {
        record
    } else {
        record.warn()
    }
}

/// The time of an input (milliseconds on the wall clock, given by the caller) as RFC 3339.
fn rfc3339(now_ms: u64) -> String {
    rfc3339_utc((now_ms / 1000) as i64)
}

fn values(cluster: &Cluster) -> BTreeMap<String, String> {
    cluster
        .parameters
        .iter()
        .map(|(k, p)| (k.clone(), p.value.clone()))
        .collect()
}

/// The journal line of a new head: what it leaves to roll out (`waiting`), or that it
/// changed nothing.
fn taken_line(revision: &str, first: bool, waiting: &[String]) -> String {
    let first = if first { " (the first revision)" } else { "" };
    if waiting.is_empty() {
        return format!(
            "revision {}{first} taken: no cluster changed",
            short_id(revision)
        );
    }
    format!(
        "revision {}{first} taken: {} cluster(s) to roll out as their nodes report: {}",
        short_id(revision),
        waiting.len(),
        waiting.join(", ")
    )
}

/// The rollout of `batches` under the cluster's policy.
fn rollout_spec(
    name: &str,
    cluster: &Cluster,
    target: &Target,
    planned: &plan::ClusterPlan,
    batches: Vec<Vec<String>>,
    previous: String,
    failovers: BTreeMap<String, rollout::FailoverPlan>,
) -> RolloutSpec {
    let policy = &cluster.rollout;
    RolloutSpec {
        cluster: name.to_owned(),
        revision: target.revision.clone(),
        previous: Some(previous),
        batches,
        bake_ms: policy.bake.0,
        apply_timeout_ms: policy.apply_timeout.0,
        on_failure: policy.on_failure,
        restarting: planned
            .nodes
            .iter()
            .filter(|n| n.restart)
            .map(|n| n.id.clone())
            .collect(),
        warmup_ms: policy.warmup.0,
        failovers,
        on_primary_restart: policy.on_primary_restart,
        failover_timeout_ms: 0,
    }
}

/// The live primaries among the nodes that restart whose shard has other declared
/// nodes: before such a primary restarts, its role moves to one of them. A shard of one
/// node restarts in place, as it always did (there is nowhere to move the role).
fn failovers(
    cluster: &Cluster,
    planned: &plan::ClusterPlan,
    live: &HashMap<String, Sample>,
    sentinel_primary: Option<&str>,
) -> BTreeMap<String, rollout::FailoverPlan> {
    let topology = crate::pure::topology::resolve_with(
        cluster,
        |id| live.get(id).map(|s| &s.node),
        sentinel_primary,
    );
    planned
        .nodes
        .iter()
        .filter(|n| n.restart)
        .filter(|n| {
            topology.nodes.get(&n.id).and_then(|p| p.live)
                == Some(crate::pure::spec::model::Role::Primary)
        })
        .filter_map(|n| {
            let shard = topology.shard(&n.id).to_owned();
            let replicas: Vec<String> = cluster
                .nodes
                .iter()
                .filter(|d| d.id != n.id && topology.shard(&d.id) == shard)
                .map(|d| d.id.clone())
                .collect();
            (!replicas.is_empty())
                .then(|| (n.id.clone(), rollout::FailoverPlan { shard, replicas }))
        })
        .collect()
}

impl Reconciler {
    /// A reconciler resuming from `state` (a fresh one from `State::default()`).
    pub fn new(mut state: State) -> Reconciler {
        state.version = STATE_VERSION;
        Reconciler {
            desired: None,
            node_cluster: HashMap::new(),
            live: HashMap::new(),
            undeclared: HashMap::new(),
            lines: Vec::new(),
            effects: Vec::new(),
            correct_drift: false,
            correcting: false,
            windows: compile_windows(&state.windows),
            report_grace_ms: 0,
            revision_at_ms: 0,
            // Loaded state: every cluster is written once by the first entry.
            dirty: state.clusters.keys().cloned().collect(),
            // The first status is made from the loaded state.
            unpublished: BTreeSet::new(),
            sentinels: HashMap::new(),
            gates_waiting: HashMap::new(),
            deferred: HashMap::new(),
            state,
        }
    }

    /// The clusters changed since the last call (every one at first).
    pub fn take_changed(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// The clusters changed since the last call: the parts of the published status to
    /// make again.
    pub fn take_unpublished(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.unpublished)
    }

    /// A cluster's state changed: journal it with the next entry, publish it after this
    /// batch.
    fn touch(&mut self, cluster: &str) {
        if !self.dirty.contains(cluster) {
            self.dirty.insert(cluster.to_owned());
        }
        if !self.unpublished.contains(cluster) {
            self.unpublished.insert(cluster.to_owned());
        }
    }

    /// True when `node_id`'s assignment comes only from state already handed to the
    /// journal (its cluster is unchanged since the last entry made); the runtime also
    /// checks that entry's write is done before it answers without waiting.
    pub fn assignment_is_written(&self, node_id: &str) -> bool {
        self.cluster_of(node_id)
            .is_some_and(|c| !self.dirty.contains(c))
    }

    /// The cluster a declared node belongs to.
    pub fn cluster_of(&self, node_id: &str) -> Option<&str> {
        self.node_cluster.get(node_id).map(String::as_str)
    }

    /// Why no batch may start at `now_ms`, if the windows say so.
    fn hold(&self, now_ms: u64) -> Option<String> {
        match self.windows.status(now_ms) {
            windows::Status::Open => None,
            windows::Status::Closed { reason, .. } => Some(reason),
        }
    }

    pub fn desired(&self) -> Option<&Arc<Desired>> {
        self.desired.as_ref()
    }

    /// The latest reading of every node.
    pub fn live(&self) -> &HashMap<String, Sample> {
        &self.live
    }

    /// After a restart: the timers the rollouts in flight were waiting on, started
    /// again in full (the safe side: a bake interrupted by a crash bakes again), and a
    /// judgement interrupted by the crash is made again after a bake. `grace_ms` is at
    /// least the time the nodes need to report again, so gates are never judged on the
    /// empty readings of a process that just started.
    pub fn resume(&mut self, grace_ms: u64) -> Vec<Effect> {
        let clusters: Vec<String> = self.state.clusters.keys().cloned().collect();
        for name in clusters {
            self.touch(&name);
            let Some(rec) = self
                .state
                .clusters
                .get_mut(&name)
                .and_then(|c| c.rollout.as_mut())
            else {
                continue;
            };
            let r = &mut rec.rollout;
            let timer = match r.phase {
                Phase::Applying { batch } => Some((
                    r.spec.apply_timeout_ms.max(grace_ms),
                    Event::ApplyTimedOut { batch },
                )),
                Phase::Baking { batch } | Phase::Judging { batch } => {
                    r.phase = Phase::Baking { batch };
                    Some((
                        r.spec.bake_of(batch).max(grace_ms),
                        Event::BakeElapsed { batch },
                    ))
                }
                Phase::RollingBack { .. } => Some((
                    r.spec.apply_timeout_ms.max(grace_ms),
                    Event::RollbackTimedOut,
                )),
                // Created but not begun: its start waited for the Sentinels' answers
                // when the process died. It begins again once the nodes report.
                Phase::Pending => Some((grace_ms, Event::Begin)),
                // The failover's outcome died with the process: it fails the batch when
                // its time is up (the safe side), and the usual rollback follows.
                Phase::FailingOver {
                    batch, ref from, ..
                } => Some((
                    r.spec.failover_timeout().max(grace_ms),
                    Event::FailoverTimedOut {
                        batch,
                        from: from.clone(),
                    },
                )),
                _ => None,
            };
            if let Some((after_ms, event)) = timer {
                self.effects.push(Effect::Timer {
                    cluster: name.clone(),
                    after_ms,
                    event,
                    run: rec.run,
                });
            }
        }
        std::mem::take(&mut self.effects)
    }

    fn rec_mut(&mut self, cluster: &str) -> &mut RolloutRecord {
        self.touch(cluster);
        self.state
            .clusters
            .get_mut(cluster)
            .and_then(|c| c.rollout.as_mut())
            .expect("a rollout record the caller saw")
    }

    /// A new valid revision; `live`, when given, is a reading of the nodes taken just
    /// before (what `sync` showed the person who confirmed).
    pub fn revision(
        &mut self,
        desired: Desired,
        live: Option<&LiveState>,
        now_ms: u64,
    ) -> Vec<Effect> {
        let desired = Arc::new(desired);
        self.revision_at_ms = now_ms;
        let revision = desired.commit.clone().unwrap_or_else(|| "worktree".into());
        self.node_cluster = desired
            .clusters
            .values()
            .flat_map(|c| c.nodes.iter().map(|n| (n.id.clone(), c.name.clone())))
            .collect();
        self.live.retain(|id, _| self.node_cluster.contains_key(id));
        self.desired = Some(desired.clone());
        self.adopt_early_readings(now_ms);
        for (id, node) in live.iter().flat_map(|l| l.nodes.iter()) {
            if self.node_cluster.contains_key(id) {
                self.observe(id, node.clone(), now_ms);
            }
        }
        if self.state.windows != desired.settings.windows {
            self.state.windows = desired.settings.windows.clone();
            self.windows = compile_windows(&self.state.windows);
        }
        let first = self.state.head.is_none();
        self.drop_removed(&revision, now_ms);
        let new_head = self.state.head.as_deref() != Some(revision.as_str());
        self.state.head = Some(revision.clone());
        // Clusters this revision gives something to roll out: new content or new nodes.
        let mut changed = Vec::new();
        for cluster in desired.clusters.values() {
            let params = values(cluster);
            let dig = digest(&params);
            self.touch(&cluster.name);
            let cs = self.state.clusters.entry(cluster.name.clone()).or_default();
            let declared: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
            let adds_nodes =
                !cs.declared.is_empty() && declared.iter().any(|id| !cs.declared.contains(id));
            cs.declared = declared;
            if let Some(t) = cs.target.as_mut().filter(|t| t.digest == dig) {
                // Same content: the nodes this revision adds are rolled out under it
                // (the rollout, its status and its note name the commit that added them).
                if adds_nodes {
                    t.revision = revision.clone();
                    changed.push(cluster.name.clone());
                }
                if self.correct_drift || adds_nodes {
                    self.start(&cluster.name, now_ms);
                }
                continue;
            }
            changed.push(cluster.name.clone());
            // New content: a refusal (always of the previous target's content) is lifted.
            cs.refused = None;
            cs.target = Some(Target {
                revision: revision.clone(),
                digest: dig,
                parameters: params,
            });
            if let Some(rec) = cs.rollout.as_ref() {
                if !rec.rollout.phase.is_final() {
                    let revision = revision.clone();
                    self.feed(&cluster.name, Event::Supersede { revision }, now_ms);
                }
            }
            self.start(&cluster.name, now_ms);
            self.already_assigned(&cluster.name, now_ms);
        }
        let waiting: Vec<String> = changed
            .into_iter()
            .filter(|name| self.still_to_roll_out(name))
            .collect();
        if new_head && (self.lines.is_empty() || !waiting.is_empty()) {
            let line = Record::new("revision_taken", taken_line(&revision, first, &waiting));
            self.lines.insert(0, line.revision(&revision));
        }
        self.finish()
    }

    /// A content every declared node is now assigned without a rollout: a commit
    /// reverting to what a rollback put back (or to what a refused change left), or the
    /// last of the nodes found running it was assigned it (at once, or when it first
    /// reported). No rollout is needed and none started; the commit is the cluster's
    /// target all the same, so it is journaled (`C: N node(s) already run r: ...`, not
    /// "no cluster changed") and noted on the commit (`in sync TIME: ...`) once.
    fn already_assigned(&mut self, name: &str, now_ms: u64) {
        let Some((revision, nodes)) = self.assigned_without_rollout(name) else {
            return;
        };
        let noted = self.effects.iter().any(|e| {
            matches!(e, Effect::Note { revision: r, cluster, outcome: None, .. }
                if *r == revision && cluster == name)
        });
        if noted {
            return;
        }
        let n = nodes.len();
        let nodes = nodes.join(", ");
        // Nodes found running it in this input were assigned it and journaled so.
        let said = format!(" already run {}: ", short_id(&revision));
        let journaled = self
            .lines
            .iter()
            .any(|l| l.message.starts_with(&format!("{name}: ")) && l.message.contains(&said));
        if !journaled {
            self.lines.push(
                Record::new("nodes_in_sync", format!("{name}: {n} node(s){said}{nodes}"))
                    .cluster(name)
                    .revision(&revision),
            );
        }
        self.effects.push(Effect::Note {
            revision,
            cluster: name.to_owned(),
            text: format!(
                "in sync {}: {n} node(s) already run it: {nodes}",
                rfc3339(now_ms)
            ),
            outcome: None,
        });
    }

    /// The target's revision and the declared nodes (sorted), when no rollout is in
    /// flight and every declared node is assigned the target's content.
    fn assigned_without_rollout(&self, name: &str) -> Option<(String, Vec<String>)> {
        let cs = self.state.clusters.get(name)?;
        let target = cs.target.as_ref()?;
        let rolling = cs
            .rollout
            .as_ref()
            .is_some_and(|r| !r.rollout.phase.is_final());
        let all = !cs.declared.is_empty()
            && cs.declared.iter().all(|id| {
                cs.assignments
                    .get(id)
                    .is_some_and(|a| a.digest == target.digest)
            });
        if rolling || !all {
            return None;
        }
        let mut nodes = cs.declared.clone();
        nodes.sort_unstable();
        Some((target.revision.clone(), nodes))
    }

    /// True when `name` has no rollout in flight, its content is not refused, and a
    /// declared node is not assigned its content yet: a rollout is still to start (once
    /// its nodes report, or can be reached).
    fn still_to_roll_out(&self, name: &str) -> bool {
        let Some(cs) = self.state.clusters.get(name) else {
            return false;
        };
        let Some(target) = cs.target.as_ref() else {
            return false;
        };
        let rolling = cs
            .rollout
            .as_ref()
            .is_some_and(|r| !r.rollout.phase.is_final());
        let refused = cs
            .refused
            .as_ref()
            .is_some_and(|r| r.digest == target.digest);
        !rolling
            && !refused
            && cs.declared.iter().any(|id| {
                cs.assignments
                    .get(id)
                    .is_none_or(|a| a.digest != target.digest)
            })
    }

    /// What the server does after a restart, one line per rollout in flight (for its
    /// log, event `rollout_resumed`): which cluster, which revision, at which batch, and
    /// what it waits for.
    pub fn resuming(&self, grace_ms: u64) -> Vec<Record> {
        self.state
            .clusters
            .iter()
            .filter_map(|(name, cs)| {
                let r = &cs.rollout.as_ref()?.rollout;
                let of = r.spec.batches.len();
                let what = match &r.phase {
                    Phase::Pending => "not started yet".to_owned(),
                    Phase::Waiting { batch, .. } => {
                        format!("batch {} of {of}, waiting for a rollout window", batch + 1)
                    }
                    Phase::Applying { batch } => format!(
                        "batch {} of {of}, waiting up to {} for its nodes to confirm",
                        batch + 1,
                        human_ms(r.spec.apply_timeout_ms.max(grace_ms))
                    ),
                    Phase::Baking { batch } | Phase::Judging { batch } => format!(
                        "batch {} of {of}, baking again for {} before its gates are judged",
                        batch + 1,
                        human_ms(r.spec.bake_of(*batch).max(grace_ms))
                    ),
                    Phase::Paused { batch, .. } => format!(
                        "batch {} of {of}, paused: a person decides (resume, rollback)",
                        batch + 1
                    ),
                    Phase::FailingOver { batch, from, .. } => format!(
                        "batch {} of {of}, failing over from {from}: the batch fails unless the failover's outcome is known within {} ms",
                        batch + 1,
                        r.spec.failover_timeout().max(grace_ms)
                    ),
                    Phase::RollingBack { .. } => format!(
                        "rolling back, waiting up to {} for its nodes to confirm",
                        human_ms(r.spec.apply_timeout_ms.max(grace_ms))
                    ),
                    _ => return None,
                };
                let batch = match &r.phase {
                    Phase::Waiting { batch, .. }
                    | Phase::Applying { batch }
                    | Phase::Baking { batch }
                    | Phase::Judging { batch }
                    | Phase::Paused { batch, .. } => Some(batch + 1),
                    _ => None,
                };
                let line = format!(
                    "{name}: rollout of {} resumed after a restart: {what}",
                    short_id(&r.spec.revision)
                );
                let record = Record::new("rollout_resumed", line)
                    .cluster(name)
                    .revision(&r.spec.revision)
                    .batch(batch)
                    .warn();
                Some(record)
            })
            .collect()
    }

    /// Nodes the new revision no longer declares in a cluster (removed from it, moved to
    /// another, or their cluster removed): their assignments are dropped at once, so they
    /// leave the status, `/api/v1/clusters` and `cacheflow_nodes` when the revision is
    /// taken, and the journal says so. A rollout in flight goes on without them; one left
    /// with no node, or whose cluster is gone, is superseded by the revision.
    fn drop_removed(&mut self, revision: &str, now_ms: u64) {
        let names: Vec<String> = self.state.clusters.keys().cloned().collect();
        for name in names {
            let gone = self.undeclared_in(&name);
            if gone.is_empty() {
                continue;
            }
            self.drop_assignments(&name, &gone);
            self.leave_rollout(&name, gone, revision, now_ms);
        }
    }

    /// The nodes `name` holds (assigned, or in its rollout in flight) that the current
    /// revision does not declare in it.
    fn undeclared_in(&self, name: &str) -> BTreeSet<String> {
        let cs = &self.state.clusters[name];
        let in_flight = cs
            .rollout
            .as_ref()
            .filter(|r| !r.rollout.phase.is_final())
            .map(|r| &r.rollout);
        cs.assignments
            .keys()
            .chain(
                in_flight
                    .iter()
                    .flat_map(|r| r.spec.batches.iter().flatten()),
            )
            .filter(|id| self.node_cluster.get(*id).map(String::as_str) != Some(name))
            .cloned()
            .collect()
    }

    fn drop_assignments(&mut self, name: &str, gone: &BTreeSet<String>) {
        self.touch(name);
        let cs = self.state.clusters.get_mut(name).expect("a cluster listed");
        let dropped: Vec<&str> = gone
            .iter()
            .filter(|id| cs.assignments.remove(*id).is_some())
            .map(String::as_str)
            .collect();
        if !dropped.is_empty() {
            self.lines.push(
                Record::new(
                    "nodes_dropped",
                    format!(
                        "{name}: {} no longer declared in the cluster: assignment dropped",
                        dropped.join(", ")
                    ),
                )
                .cluster(name),
            );
        }
    }

    /// The rollout in flight, if any, goes on without `gone`; superseded by `revision`
    /// when no node of it is left or its cluster is gone.
    fn leave_rollout(&mut self, name: &str, gone: BTreeSet<String>, revision: &str, now_ms: u64) {
        let Some(r) = self.state.clusters[name]
            .rollout
            .as_ref()
            .map(|rec| &rec.rollout)
            .filter(|r| !r.phase.is_final())
        else {
            return;
        };
        let left = r.spec.batches.iter().flatten().any(|id| !gone.contains(id));
        let declared = self
            .desired
            .as_ref()
            .is_some_and(|d| d.clusters.contains_key(name));
        let event = if left && declared {
            Event::NodesRemoved {
                nodes: gone.into_iter().collect(),
            }
        } else {
            Event::Supersede {
                revision: revision.to_owned(),
            }
        };
        self.feed(name, event, now_ms);
    }

    /// A revision that failed validation or trust: journaled, nothing applied.
    pub fn refuse_revision(&mut self, revision: &str, reason: &str, now_ms: u64) -> Vec<Effect> {
        self.lines.push(
            Record::new(
                "revision_refused",
                format!("revision {} refused: {reason}", short_id(revision)),
            )
            .revision(revision)
            .warn(),
        );
        self.notify(
            Notice::new_at(
                NoticeKind::RevisionRefused,
                format!("revision {} refused: nothing applied", short_id(revision)),
                rfc3339(now_ms),
            )
            .revision(revision)
            .details(reason),
        );
        let kept = match &self.state.head {
            Some(h) => Record::new("revision_kept", format!("keeping revision {}", short_id(h)))
                .revision(h),
            None => Record::new("revision_kept", "no revision was applied yet"),
        };
        self.lines.push(kept);
        self.finish()
    }

    /// Start rolling out a cluster's target to the nodes whose assignment differs,
    /// unless a rollout is in flight or the content is refused. Its steps: whether the
    /// cluster may start, the nodes to roll out to, those already running the target
    /// (assigned at once), a refusal for start-only changes on directly managed nodes,
    /// then the rollout: batches, rollback label, restore map, baseline, spec.
    fn start(&mut self, name: &str, now_ms: u64) {
        let Some(desired) = self.desired.clone() else {
            return;
        };
        let Some(cluster) = desired.clusters.get(name) else {
            return;
        };
        let Some(target) = self.startable(name, cluster, now_ms) else {
            return;
        };
        let candidates = self.candidates(name, cluster, &target);
        if candidates.is_empty() {
            return;
        }
        let live = LiveState {
            sentinels: self.sentinel_answers(Some(name)),
            version: crate::pure::live::LIVE_STATE_VERSION,
            taken_at: None,
            nodes: candidates
                .iter()
                .map(|id| (id.to_string(), self.live[*id].node.clone()))
                .collect(),
        };
        let planned = plan::plan_cluster(cluster, &live);
        self.assign_in_sync(name, &target, &planned.in_sync);
        if planned.nodes.is_empty() {
            if !planned.in_sync.is_empty() {
                self.already_assigned(name, now_ms);
            }
            return;
        }
        if self.refuse_direct_restarts(name, cluster, &target, &planned, now_ms) {
            return;
        }
        let batches: Vec<Vec<String>> = planned
            .stages
            .iter()
            .flat_map(|s| s.batches.iter().cloned())
            .collect();
        self.touch(name);
        // Only nodes already assigned this content: a drift correction, caused by no
        // config commit.
        let correction = self.state.clusters.get(name).is_some_and(|cs| {
            batches.iter().flatten().all(|id| {
                cs.assignments
                    .get(id)
                    .is_some_and(|a| a.digest == target.digest)
            })
        });
        if correction {
            self.lines.push(
                Record::new("drift_correcting", format!("{name}: correcting drift"))
                    .cluster(name)
                    .revision(&target.revision),
            );
        }
        let previous = self.previous_revision(name, &target, &batches);
        let restore = self.restore_map(name, cluster, &target, &batches);
        let baseline = self.baseline(cluster);
        let failovers = failovers(cluster, &planned, &self.live, self.sentinel_primary(name));
        let spec = rollout_spec(
            name, cluster, &target, &planned, batches, previous, failovers,
        );
        let batch_sizes: Vec<String> = spec.batches.iter().map(|b| b.len().to_string()).collect();
        let started = Notice::new_at(
            NoticeKind::RolloutStarted,
            format!(
                "{name}: rolling out {} to {} node(s) in batches of {}",
                short_id(&spec.revision),
                spec.batches.iter().map(Vec::len).sum::<usize>(),
                batch_sizes.join(", ")
            ),
            rfc3339(now_ms),
        )
        .cluster(name)
        .revision(&spec.revision);
        let cs = self.state.clusters.get_mut(name).expect("entry made above");
        cs.rollout = Some(RolloutRecord {
            rollout: Rollout::new(spec),
            started_at: rfc3339(now_ms),
            fixed: Arc::new(RolloutFixed { baseline, restore }),
            batch_started_ms: None,
            bake_until_ms: None,
            judged: None,
            run: 0,
            correction,
            sentinel: None,
        });
        self.notify(started);
        self.feed(name, Event::Begin, now_ms);
    }

    /// The cluster's target, if a rollout may start: none in flight, the content not
    /// refused, and (within the grace after a revision) every declared node heard from
    /// at least once, so one rollout covers them all.
    fn startable(&mut self, name: &str, cluster: &Cluster, now_ms: u64) -> Option<Target> {
        self.touch(name);
        let cs = self.state.clusters.entry(name.to_owned()).or_default();
        if cs
            .rollout
            .as_ref()
            .is_some_and(|r| !r.rollout.phase.is_final())
        {
            return None;
        }
        let target = cs.target.clone()?;
        if cs
            .refused
            .as_ref()
            .is_some_and(|r| r.digest == target.digest)
        {
            return None;
        }
        if now_ms < self.revision_at_ms.saturating_add(self.report_grace_ms)
            && cluster.nodes.iter().any(|n| !self.live.contains_key(&n.id))
        {
            return None;
        }
        Some(target)
    }

    /// Declared nodes, reachable, whose assignment is not the target (with drift
    /// correction, also those that run something else than their assignment).
    fn candidates<'c>(
        &self,
        name: &str,
        cluster: &'c Cluster,
        target: &Target,
    ) -> BTreeSet<&'c str> {
        let Some(cs) = self.state.clusters.get(name) else {
            return BTreeSet::new();
        };
        cluster
            .nodes
            .iter()
            .filter(|n| {
                let assigned = cs
                    .assignments
                    .get(&n.id)
                    .is_some_and(|a| a.digest == target.digest);
                !assigned
                    || (self.correct_drift
                        && self.live.get(&n.id).is_some_and(|s| {
                            !crate::pure::diff::node_changes(
                                cluster.catalog(),
                                &cluster.parameters,
                                &s.node.parameters,
                            )
                            .is_empty()
                        }))
            })
            .filter(|n| self.live.get(&n.id).is_some_and(|s| s.node.reachable))
            .map(|n| n.id.as_str())
            .collect()
    }

    /// Nodes that already run the target: assigned without a rollout, and woken.
    fn assign_in_sync(&mut self, name: &str, target: &Target, in_sync: &[String]) {
        let mut woken = Vec::new();
        for id in in_sync {
            self.state.generation += 1;
            self.touch(name);
            let cs = self.state.clusters.get_mut(name).expect("entry made above");
            cs.assignments.insert(
                id.clone(),
                NodeAssignment {
                    revision: target.revision.clone(),
                    digest: target.digest.clone(),
                    generation: self.state.generation,
                    parameters: target.parameters.clone(),
                    restart_allowed: false,
                    outcome: None,
                    reported_at: None,
                },
            );
            woken.push(id.clone());
        }
        if !woken.is_empty() {
            let line = format!(
                "{name}: {} node(s) already run {}: {}",
                woken.len(),
                short_id(&target.revision),
                woken.join(", ")
            );
            self.lines.push(
                Record::new("nodes_in_sync", line)
                    .cluster(name)
                    .revision(&target.revision),
            );
            self.effects.push(Effect::Wake { nodes: woken });
        }
    }

    /// Start-only changes need an agent that can restart the engine: on directly
    /// managed nodes they refuse the revision for the cluster (or, when correcting
    /// drift, leave the drift reported). True when the rollout must not start.
    fn refuse_direct_restarts(
        &mut self,
        name: &str,
        cluster: &Cluster,
        target: &Target,
        planned: &plan::ClusterPlan,
        now_ms: u64,
    ) -> bool {
        let direct_restarts: Vec<String> = planned
            .nodes
            .iter()
            .filter(|n| n.restart)
            .filter(|n| {
                cluster
                    .node(&n.id)
                    .is_some_and(|d| d.managed == Managed::Direct)
            })
            .map(|n| {
                let names: Vec<&str> = n
                    .changes
                    .iter()
                    .filter(|c| c.restart)
                    .map(|c| c.name.as_str())
                    .collect();
                format!("{} ({})", n.id, names.join(", "))
            })
            .collect();
        if direct_restarts.is_empty() {
            return false;
        }
        if self.correcting {
            // A drift correction never refuses the revision: the drift stays reported.
            let line = format!(
                "{name}: drift not corrected: start-only parameters on directly managed nodes ({}): restart them by hand",
                direct_restarts.join("; ")
            );
            self.lines.push(
                Record::new("drift_not_corrected", line)
                    .cluster(name)
                    .revision(&target.revision)
                    .warn(),
            );
            return true;
        }
        let reason = format!(
            "start-only parameters on directly managed nodes, which cacheflow cannot restart: {}; manage them with an agent that has --restart-command",
            direct_restarts.join("; ")
        );
        self.refuse_cluster(name, target, reason, now_ms);
        true
    }

    /// The label a rollback returns to: the one revision the nodes were assigned, or
    /// `before-<target>`.
    fn previous_revision(&self, name: &str, target: &Target, batches: &[Vec<String>]) -> String {
        let mut revs: Vec<&str> = batches
            .iter()
            .flatten()
            .filter_map(|id| {
                let cs = self.state.clusters.get(name)?;
                cs.assignments.get(id).map(|a| a.revision.as_str())
            })
            .collect();
        revs.dedup();
        match revs.as_slice() {
            // Correcting drift re-rolls the revision the nodes were assigned: the
            // rollback label must still differ from it.
            [one] if *one != target.revision => one.to_string(),
            _ => format!("before-{}", short_id(&target.revision)),
        }
    }

    /// Per node to roll out to, what a rollback assigns: the previous assignment,
    /// unless it is the target itself (correcting drift), and for parameters it has none
    /// for, what the node ran before, read at the start.
    fn restore_map(
        &self,
        name: &str,
        cluster: &Cluster,
        target: &Target,
        batches: &[Vec<String>],
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let assignments = self.state.clusters.get(name).map(|cs| &cs.assignments);
        let cat = cluster.catalog();
        batches
            .iter()
            .flatten()
            .map(|id| {
                let mut params = assignments
                    .and_then(|a| a.get(id))
                    .filter(|a| a.digest != target.digest)
                    .map(|a| a.parameters.clone())
                    .unwrap_or_default();
                if let Some(sample) = self.live.get(id) {
                    for key in target.parameters.keys() {
                        if params.contains_key(key) {
                            continue;
                        }
                        if let Some(v) = sample.node.parameters.get(key) {
                            let v = cat
                                .normalize(key, &serde_json::Value::String(v.clone()))
                                .unwrap_or_else(|_| v.clone());
                            params.insert(key.clone(), v);
                        }
                    }
                }
                (id.clone(), params)
            })
            .collect()
    }

    /// Every node's health before the rollout began (parameters left out): the gates
    /// compare against it.
    fn baseline(&self, cluster: &Cluster) -> BTreeMap<String, Sample> {
        cluster
            .nodes
            .iter()
            .filter_map(|n| {
                let s = self.live.get(&n.id)?;
                Some((
                    n.id.clone(),
                    Sample {
                        at_ms: s.at_ms,
                        node: NodeLive {
                            parameters: BTreeMap::new(),
                            persisted: None,
                            ..s.node.clone()
                        },
                    },
                ))
            })
            .collect()
    }

    fn refuse_cluster(&mut self, name: &str, target: &Target, reason: String, now_ms: u64) {
        let line = format!(
            "{name}: revision {} refused: {reason}",
            short_id(&target.revision)
        );
        self.lines.push(
            Record::new("revision_refused", line)
                .cluster(name)
                .revision(&target.revision)
                .warn(),
        );
        self.effects.push(Effect::Note {
            revision: target.revision.clone(),
            cluster: name.to_owned(),
            text: format!("refused: {reason}"),
            outcome: Some("refused"),
        });
        self.notify(
            Notice::new_at(
                NoticeKind::RevisionRefused,
                format!(
                    "{name}: revision {} refused for this cluster",
                    short_id(&target.revision)
                ),
                rfc3339(now_ms),
            )
            .cluster(name)
            .revision(&target.revision)
            .details(reason.clone()),
        );
        self.touch(name);
        let cs = self.state.clusters.get_mut(name).expect("cluster state");
        cs.refused = Some(Refused {
            revision: target.revision.clone(),
            digest: target.digest.clone(),
            reason,
        });
    }

    /// Feed an event to a cluster's rollout and carry out its actions.
    fn feed(&mut self, name: &str, event: Event, now_ms: u64) {
        let hold = self.hold(now_ms);
        let blocked = self.sentinel_hold(name);
        let fresh = self.sentinels_fresh(name);
        self.touch(name);
        let mut queue = vec![event];
        while let Some(event) = queue.pop() {
            let Some(rec) = self
                .state
                .clusters
                .get_mut(name)
                .and_then(|c| c.rollout.as_mut())
            else {
                return;
            };
            rec.rollout.hold = hold.clone();
            rec.rollout.blocked = blocked.clone();
            let was_final = rec.rollout.phase.is_final();
            let was_rolling_back = matches!(rec.rollout.phase, Phase::RollingBack { .. });
            let was_paused = matches!(rec.rollout.phase, Phase::Paused { .. });
            let was_batch = running_batch(&rec.rollout.phase);
            // Under Sentinels a batch starts on answers asked after it was due, never on
            // the last periodic ones (a Sentinel may have gone down since).
            let kept = (!fresh).then(|| event.clone());
            let (next, actions) = rollout::step(rec.rollout.clone(), event);
            let starts = starts_batch(&rec.rollout.phase, &next.phase);
            if let Some(event) = kept.filter(|_| starts) {
                self.defer_for_sentinels(name, event, now_ms);
                continue;
            }
            rec.rollout = next;
            let batch = running_batch(&rec.rollout.phase);
            if batch != was_batch || (was_batch.is_some() && rec.rollout.phase.is_final()) {
                if let (Some(_), Some(started)) = (was_batch, rec.batch_started_ms) {
                    let passed = matches!(rec.rollout.phase, Phase::Completed)
                        || batch.is_some_and(|b| Some(b) > was_batch);
                    if passed {
                        self.effects.push(Effect::StageDone {
                            cluster: name.to_owned(),
                            ms: now_ms.saturating_sub(started),
                        });
                    }
                }
                rec.batch_started_ms = batch.map(|_| now_ms);
            }
            if starts {
                self.sentinels_used(name, now_ms);
            }
            for action in actions {
                match action {
                    Action::Journal { message, about } => {
                        let warn = matches!(
                            about.event,
                            "rolling_back"
                                | "rolled_back"
                                | "rollback_incomplete"
                                | "rollout_paused"
                        );
                        let record = Record {
                            event: about.event,
                            warn,
                            cluster: Some(name.to_owned()),
                            revision: Some(self.rec_mut(name).rollout.spec.revision.clone()),
                            node: about.node,
                            batch: about.batch,
                            message,
                        };
                        self.lines.push(record);
                    }
                    Action::Timer { after_ms, event } => {
                        let rec = self.rec_mut(name);
                        if matches!(event, Event::BakeElapsed { .. }) {
                            rec.bake_until_ms = Some(now_ms.saturating_add(after_ms));
                        }
                        let run = rec.run;
                        self.effects.push(Effect::Timer {
                            cluster: name.to_owned(),
                            after_ms,
                            event,
                            run,
                        })
                    }
                    Action::Assign { nodes, revision } => {
                        self.assign(name, &nodes, &revision);
                        let generation = self.state.generation;
                        self.rec_mut(name).run = generation;
                    }
                    Action::JudgeGates { batch, nodes } => match self.sentinel_hold(name) {
                        None => queue.push(self.judge(name, batch, &nodes)),
                        Some(reason) => self.gates_wait(name, batch, nodes, reason),
                    },
                    Action::ChooseFailover {
                        batch,
                        from,
                        replicas,
                        ..
                    } => {
                        let choice = self.choose_failover(name, &from, &replicas);
                        queue.push(Event::FailoverChosen {
                            batch,
                            from,
                            choice,
                        });
                    }
                    Action::Failover {
                        batch,
                        shard,
                        from,
                        to,
                    } => {
                        let rec = self.rec_mut(name);
                        let (run, timeout_ms) = (rec.run, rec.rollout.spec.failover_timeout());
                        let cluster = self.desired.as_ref().and_then(|d| d.clusters.get(name));
                        let to_address = cluster
                            .and_then(|c| c.node(&to))
                            .map(|n| n.address.clone())
                            .unwrap_or_default();
                        let sentinel = cluster.and_then(SentinelFailover::of);
                        let method = crate::pure::topology::FailoverMethod::for_mode(
                            cluster.map(|c| c.mode).unwrap_or_default(),
                        );
                        self.effects.push(Effect::Failover {
                            cluster: name.to_owned(),
                            batch,
                            shard,
                            from,
                            to,
                            to_address,
                            timeout_ms,
                            run,
                            sentinel,
                            method,
                        });
                    }
                }
            }
            let rec = self.rec_mut(name);
            let revision = rec.rollout.spec.revision.clone();
            match &rec.rollout.phase {
                Phase::RollingBack { reason } if !was_rolling_back => {
                    let notice = Notice::new_at(
                        NoticeKind::RolloutFailed,
                        format!(
                            "{name}: rollout of {} failed, rolling back",
                            short_id(&revision)
                        ),
                        rfc3339(now_ms),
                    )
                    .details(reason.clone());
                    self.notify(notice.cluster(name).revision(&revision));
                }
                Phase::Paused { batch, reason } if !was_paused => {
                    let notice = Notice::new_at(
                        NoticeKind::Paused,
                        format!(
                            "{name}: rollout of {} paused at batch {}: a person decides (resume, rollback)",
                            short_id(&revision),
                            batch + 1
                        ), rfc3339(now_ms))
                    .details(reason.clone());
                    self.notify(notice.cluster(name).revision(&revision));
                }
                _ => {}
            }
            let rec = self.rec_mut(name);
            if !was_final && rec.rollout.phase.is_final() {
                self.finished(name, now_ms);
            }
        }
    }

    fn assign(&mut self, name: &str, nodes: &[String], revision: &str) {
        self.touch(name);
        let cs = self.state.clusters.get_mut(name).expect("cluster state");
        let rec = cs.rollout.as_ref().expect("a rollout assigns");
        let target = cs.target.clone().expect("a rollout has a target");
        let forward = revision == rec.rollout.spec.revision;
        for id in nodes {
            self.state.generation += 1;
            let (parameters, digest) = if forward {
                (target.parameters.clone(), target.digest.clone())
            } else {
                let p = rec.fixed.restore.get(id).cloned().unwrap_or_default();
                let d = digest(&p);
                (p, d)
            };
            cs.assignments.insert(
                id.clone(),
                NodeAssignment {
                    revision: revision.to_owned(),
                    digest,
                    generation: self.state.generation,
                    parameters,
                    restart_allowed: forward,
                    outcome: None,
                    reported_at: None,
                },
            );
        }
        self.effects.push(Effect::Wake {
            nodes: nodes.to_vec(),
        });
    }

    /// Where `from`'s primary role goes, from the latest readings of `replicas` and
    /// their assignments (see `topology::choose_failover`).
    fn choose_failover(
        &self,
        name: &str,
        from: &str,
        replicas: &[String],
    ) -> rollout::FailoverChoice {
        if let Some(choice) = self.sentinel_choice(name, from) {
            return choice;
        }
        let cluster = self.desired.as_ref().and_then(|d| d.clusters.get(name));
        let cs = self.state.clusters.get(name);
        let target = cs.and_then(|c| c.target.as_ref());
        let address = |id: &str| {
            cluster
                .and_then(|c| c.node(id))
                .map(|n| n.address.as_str())
                .unwrap_or_default()
        };
        let candidates: Vec<crate::pure::topology::FailoverCandidate<'_>> = replicas
            .iter()
            .map(|id| crate::pure::topology::FailoverCandidate {
                id,
                address: address(id),
                reading: self.live.get(id).map(|s| &s.node),
                updated: cs
                    .and_then(|c| c.assignments.get(id))
                    .zip(target)
                    .is_some_and(|(a, t)| {
                        a.digest == t.digest
                            && !matches!(a.outcome, Some(Outcome::Failed | Outcome::Inconsistent))
                    }),
            })
            .collect();
        crate::pure::topology::choose_failover(
            from,
            address(from),
            self.live.get(from).map(|s| &s.node),
            &candidates,
        )
    }

    fn judge(&mut self, name: &str, batch: usize, nodes: &[String]) -> Event {
        let desired = self.desired.clone();
        let cs = &self.state.clusters[name];
        let rec = cs.rollout.as_ref().expect("judging a rollout");
        let gates = desired
            .as_ref()
            .and_then(|d| d.clusters.get(name))
            .map(|c| c.rollout.gates.clone())
            .unwrap_or_default();
        let untouched: Vec<String> = desired
            .as_ref()
            .and_then(|d| d.clusters.get(name))
            .map(|c| {
                c.nodes
                    .iter()
                    .filter(|n| !rec.rollout.touched.contains(&n.id))
                    .map(|n| n.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        // Every node of the cluster: the replication gates follow replicas to their
        // primaries, wherever those are in the rollout.
        let cluster = desired.as_ref().and_then(|d| d.clusters.get(name));
        let now: BTreeMap<String, Sample> = cluster
            .map(|c| c.nodes.iter().map(|n| &n.id).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(nodes.iter())
            .filter_map(|id| self.live.get(id).map(|s| (id.clone(), s.clone())))
            .collect();
        let mut j = gates::judge(&gates, nodes, &untouched, &rec.fixed.baseline, &now);
        let mut figures = serde_json::to_string(&j.figures).unwrap_or_default();
        if let Some(c) = cluster {
            let r = gates::judge_replication(&gates, c, nodes, &rec.fixed.baseline, &now);
            j.verdict = gates::with_replication(j.verdict, &r.failures);
            if !r.figures.is_empty() {
                let replication = serde_json::to_string(&r.figures).unwrap_or_default();
                figures.push_str(&format!("\nreplication: {replication}"));
            }
            let k = gates::judge_cluster(c, &now);
            j.verdict = gates::with_replication(j.verdict, &k.failures);
            if !k.figures.is_empty() {
                let view = serde_json::to_string(&k.figures).unwrap_or_default();
                figures.push_str(&format!("\ncluster: {view}"));
            }
        }
        let verdict = match &j.verdict {
            rollout::Verdict::Pass => "passed".to_owned(),
            rollout::Verdict::Fail { reason } => format!("failed: {reason}"),
            rollout::Verdict::Inconclusive { reason } => format!("inconclusive: {reason}"),
        };
        // Conditions that were already there, gates not applied: said, not held against it.
        let noted = if j.notes.is_empty() {
            String::new()
        } else {
            format!("\nnoted: {}", j.notes.join("; "))
        };
        let passed = matches!(j.verdict, rollout::Verdict::Pass);
        let line = Record::new(
            "gates_judged",
            format!(
                "{name}: gates of batch {} {verdict}{noted}\nfigures: {figures}",
                batch + 1
            ),
        )
        .cluster(name)
        .revision(&rec.rollout.spec.revision)
        .batch(Some(batch + 1));
        self.lines.push(if passed { line } else { line.warn() });
        let verdict = j.verdict.clone();
        self.rec_mut(name).judged = Some((batch, j));
        Event::Gates { batch, verdict }
    }

    /// A rollout reached a final phase: note it on the config commit that caused it (a
    /// drift correction is journaled instead); a rolled-back revision is refused for the
    /// cluster until its content changes.
    fn finished(&mut self, name: &str, now_ms: u64) {
        let now = rfc3339(now_ms);
        self.touch(name);
        let cs = self.state.clusters.get_mut(name).expect("cluster state");
        let rec = cs.rollout.as_ref().expect("finished rollout");
        let revision = rec.rollout.spec.revision.clone();
        let correcting = rec.correction;
        let nodes: Vec<String> = rec.rollout.touched.iter().cloned().collect();
        let outcome = match &rec.rollout.phase {
            Phase::Completed => "completed",
            Phase::RolledBack { .. } => "rolled_back",
            _ => "superseded",
        };
        let text = match &rec.rollout.phase {
            Phase::Completed => format!(
                "completed {now}: reached {} node(s): {}",
                nodes.len(),
                nodes.join(", ")
            ),
            Phase::RolledBack { reason } => {
                let target = cs.target.clone().expect("target");
                cs.refused = Some(Refused {
                    revision: revision.clone(),
                    digest: target.digest,
                    reason: reason.clone(),
                });
                format!(
                    "rolled back {now}: {reason}; {} node(s) back on {}",
                    nodes.len(),
                    rec.rollout.spec.previous.clone().unwrap_or_default()
                )
            }
            Phase::Superseded { by } => {
                format!(
                    "superseded {now} by {} before it reached every node",
                    short_id(by)
                )
            }
            _ => return,
        };
        let event = match outcome {
            "completed" => Some(NoticeKind::RolloutCompleted),
            "rolled_back" => Some(NoticeKind::RolledBack),
            _ => None,
        };
        if let Some(event) = event {
            let summary = match event {
                NoticeKind::RolloutCompleted => format!(
                    "{name}: {} reached all {} node(s)",
                    short_id(&revision),
                    nodes.len()
                ),
                _ => format!("{name}: {} rolled back", short_id(&revision)),
            };
            let notice = Notice::new_at(event, summary, rfc3339(now_ms))
                .cluster(name)
                .revision(&revision)
                .details(text.clone());
            self.notify(notice);
        }
        if correcting {
            // No config commit caused it: journaled, never noted over a commit's outcome.
            self.lines.push(
                Record::new(
                    "drift_corrected",
                    format!("{name}: drift correction {text}"),
                )
                .cluster(name)
                .revision(&revision),
            );
            self.effects.push(Effect::Corrected {
                cluster: name.to_owned(),
                outcome,
            });
            return;
        }
        self.effects.push(Effect::Note {
            revision,
            cluster: name.to_owned(),
            text,
            outcome: Some(outcome),
        });
    }

    /// Queue `notice` for the targets of the current revision subscribed to it.
    fn notify(&mut self, notice: Notice) {
        let targets: Vec<_> = self
            .desired
            .as_ref()
            .map(|d| {
                targets_for(&d.settings.notifications, notice.event)
                    .into_iter()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if !targets.is_empty() {
            self.effects.push(Effect::Notify { notice, targets });
        }
    }

    /// A node's report: remember its reading, take its apply result, answer with its
    /// assignment.
    pub fn report(
        &mut self,
        node_id: &str,
        report: Report,
        now_ms: u64,
    ) -> Result<(Assignment, Vec<Effect>), RefusedInput> {
        if report.node_id != node_id {
            return Err(RefusedInput::WrongNode {
                expected: node_id.to_owned(),
                found: report.node_id,
            });
        }
        let Some(name) = self.node_cluster.get(node_id).cloned() else {
            if self.undeclared.len() < MAX_UNDECLARED || self.undeclared.contains_key(node_id) {
                self.undeclared.insert(
                    node_id.to_owned(),
                    Sample {
                        at_ms: now_ms,
                        node: report.node,
                    },
                );
            }
            return Err(RefusedInput::UnknownNode(node_id.to_owned()));
        };
        let first = !self.live.contains_key(node_id);
        self.observe(node_id, report.node, now_ms);
        if self.gates_waiting.contains_key(&name) {
            self.judge_waiting(&name, now_ms);
        }
        // A reading alone changes no cluster state (readings are not journaled).
        if !self.state.clusters.contains_key(&name) {
            self.touch(&name);
        }
        let cs = self.state.clusters.entry(name.clone()).or_default();
        if let (Some(result), Some(a)) = (report.last_apply, cs.assignments.get_mut(node_id)) {
            let same = result.revision == a.revision && result.generation == a.generation;
            if same && a.outcome.is_some() && a.reported_at.as_ref() != Some(&result.finished_at) {
                // The same assignment applied again: a restarted agent that could not
                // tell its engine had it (an engine restarted since, or an older agent).
                let known = a.reported_at.replace(result.finished_at.clone()).is_some();
                self.dirty.insert(name.clone());
                if known {
                    self.lines.push(reapplied(&name, node_id, &result));
                }
            }
            if same && a.outcome.is_none() {
                self.dirty.insert(name.clone());
                self.unpublished.insert(name.clone());
                a.outcome = Some(result.outcome);
                a.reported_at = Some(result.finished_at.clone());
                let ok = result.outcome == Outcome::Applied;
                let event = Event::NodeApplied {
                    node: node_id.to_owned(),
                    revision: result.revision.clone(),
                    ok,
                    error: result.error.clone(),
                };
                let active = cs
                    .rollout
                    .as_ref()
                    .is_some_and(|r| !r.rollout.phase.is_final());
                if active {
                    self.feed(&name, event, now_ms);
                } else if !ok {
                    let line = format!(
                        "{name}: {node_id} failed to apply {}: {}",
                        short_id(&result.revision),
                        result.error.unwrap_or_default()
                    );
                    self.lines.push(
                        Record::new("node_apply_failed", line)
                            .cluster(&name)
                            .revision(&result.revision)
                            .node(node_id)
                            .warn(),
                    );
                }
            }
        }
        // The first report of a node its cluster's rollout waits for (after a start, or
        // a report held until the revision that declares the node): the rollout starts
        // now, not at the next tick, and this answer carries the node's assignment.
        if first && self.still_to_roll_out(&name) {
            self.start(&name, now_ms);
        }
        let assignment = self.assignment(node_id);
        Ok((assignment, self.finish()))
    }

    /// Readings of nodes that reported before a revision declared them (an agent that
    /// reported at the server's start, before the first revision was taken, or just
    /// before the push that adds its node) count as their first report, when no older
    /// than the report grace: the rollout needs not wait for the node's next report.
    fn adopt_early_readings(&mut self, now_ms: u64) {
        let early: Vec<String> = self
            .undeclared
            .keys()
            .filter(|id| self.node_cluster.contains_key(*id))
            .cloned()
            .collect();
        for id in early {
            let Some(sample) = self.undeclared.remove(&id) else {
                continue;
            };
            let fresh = now_ms.saturating_sub(sample.at_ms) <= self.report_grace_ms;
            if fresh && !self.live.contains_key(&id) {
                self.observe(&id, sample.node, sample.at_ms);
            }
        }
    }

    /// Keep a reading of a declared node: only the parameters its cluster declares (all
    /// a plan compares), so 10,000 nodes do not cost 190 parameters each.
    fn observe(&mut self, node_id: &str, mut node: NodeLive, now_ms: u64) {
        let cluster = self
            .node_cluster
            .get(node_id)
            .and_then(|c| self.desired.as_ref()?.clusters.get(c));
        if let Some(c) = cluster {
            node.parameters.retain(|k, _| c.parameters.contains_key(k));
            if let Some(p) = node.persisted.as_mut() {
                p.retain(|k, _| c.parameters.contains_key(k));
            }
        }
        self.live.insert(
            node_id.to_owned(),
            Sample {
                at_ms: now_ms,
                node,
            },
        );
    }

    /// What the drift report compares: the current revision and the latest reading of
    /// every node heard from, declared or not. A reading older than `silent_after_ms`
    /// counts as no answer.
    /// The latest reading of every node heard from, declared or not; a reading older
    /// than `silent_after_ms` counts as no answer (what a pull request is planned against).
    pub fn readings(&self, now_ms: u64, silent_after_ms: u64) -> LiveState {
        self.drift_inputs_where(now_ms, silent_after_ms, false).live
    }

    pub fn drift_inputs(&self, now_ms: u64, silent_after_ms: u64) -> DriftInputs {
        self.drift_inputs_where(now_ms, silent_after_ms, true)
    }

    fn drift_inputs_where(
        &self,
        now_ms: u64,
        silent_after_ms: u64,
        leave_out: bool,
    ) -> DriftInputs {
        // Clusters whose nodes are meant to differ from the revision now.
        let mut not_compared = Vec::new();
        if let Some(d) = self.desired.as_ref().filter(|_| leave_out) {
            for name in d.clusters.keys() {
                let Some(cs) = self.state.clusters.get(name) else {
                    continue;
                };
                let rolling = cs.rollout.as_ref().filter(|r| !r.rollout.phase.is_final());
                if let Some(r) = rolling {
                    not_compared.push(crate::pure::drift::NotCompared {
                        cluster: name.clone(),
                        reason: format!("rolling out {} now", short_id(&r.rollout.spec.revision)),
                    });
                } else if let Some(refused) = cs
                    .refused
                    .as_ref()
                    .filter(|r| cs.target.as_ref().is_some_and(|t| t.digest == r.digest))
                {
                    not_compared.push(crate::pure::drift::NotCompared {
                        cluster: name.clone(),
                        reason: format!(
                            "revision {} refused ({}): nodes stay on what they ran",
                            short_id(&refused.revision),
                            refused.reason
                        ),
                    });
                }
            }
        }
        let skipped = |id: &str| {
            self.node_cluster
                .get(id)
                .is_some_and(|c| not_compared.iter().any(|n| &n.cluster == c))
        };
        let nodes = self
            .live
            .iter()
            .chain(
                self.undeclared
                    .iter()
                    .filter(|(id, _)| !self.node_cluster.contains_key(*id)),
            )
            .map(|(id, sample)| {
                let age = now_ms.saturating_sub(sample.at_ms);
                let mut node = sample.node.clone();
                if age > silent_after_ms {
                    node.reachable = false;
                    node.error = Some(format!("no report for {} s", age / 1000));
                }
                (id.clone(), node)
            })
            .filter(|(id, node)| {
                !skipped(id) && (self.node_cluster.contains_key(id) || node.reachable)
            })
            .collect();
        let live = LiveState {
            sentinels: self.sentinel_answers(None),
            version: crate::pure::live::LIVE_STATE_VERSION,
            taken_at: None,
            nodes,
        };
        let desired = match &self.desired {
            Some(d) if !not_compared.is_empty() => {
                let mut d = Desired::clone(d);
                d.clusters
                    .retain(|name, _| !not_compared.iter().any(|n| &n.cluster == name));
                Some(Arc::new(d))
            }
            other => other.clone(),
        };
        DriftInputs {
            desired,
            live,
            not_compared,
        }
    }

    /// Roll the current revision out again to the nodes of `clusters` whose live values
    /// differ from it (a drift report's correction), through the staged path: batches,
    /// gates, rollback. A cluster with a rollout in flight is left alone.
    pub fn correct(&mut self, clusters: &[String], now_ms: u64) -> Vec<Effect> {
        let before = self.correct_drift;
        self.correct_drift = true;
        for name in clusters {
            let busy = self
                .state
                .clusters
                .get(name)
                .and_then(|c| c.rollout.as_ref())
                .is_some_and(|r| !r.rollout.phase.is_final());
            if busy {
                self.lines.push(
                    Record::new(
                        "drift_not_corrected",
                        format!("{name}: drift not corrected now: a rollout is in progress"),
                    )
                    .cluster(name),
                );
                continue;
            }
            if self
                .desired
                .as_ref()
                .is_some_and(|d| d.clusters.contains_key(name))
            {
                self.correcting = true;
                // A rolled-back revision stays refused: correcting would roll it out again.
                // The rollout it starts, if any, journals `correcting drift` first.
                self.start(name, now_ms);
                self.correcting = false;
            }
        }
        self.correct_drift = before;
        self.finish()
    }

    /// What `node_id` should run now.
    pub fn assignment(&self, node_id: &str) -> Assignment {
        let a = self
            .node_cluster
            .get(node_id)
            .and_then(|c| self.state.clusters.get(c))
            .and_then(|cs| cs.assignments.get(node_id));
        // The catalog and the unchecked names come from the cluster as the current
        // revision declares it.
        let cluster = self
            .node_cluster
            .get(node_id)
            .and_then(|c| self.desired.as_ref()?.clusters.get(c))
            .filter(|_| a.is_some());
        Assignment {
            version: PROTOCOL_VERSION,
            node_id: node_id.to_owned(),
            revision: a.map(|a| a.revision.clone()),
            generation: a.map(|a| a.generation).unwrap_or(0),
            parameters: a.map(|a| a.parameters.clone()).unwrap_or_default(),
            restart_allowed: a.is_some_and(|a| a.restart_allowed),
            report_interval_secs: None,
            // Sent only when not the engine's default catalog: an older agent (whose
            // schema lacks these fields) still takes what it could take before.
            catalog_version: cluster
                .filter(|c| c.catalog != crate::pure::catalog::CatalogId::default_for(c.engine))
                .map(|c| c.catalog.version().to_owned()),
            product: cluster
                .map(|c| c.catalog.product())
                .filter(|p| *p != crate::pure::catalog::Product::from(p.engine()))
                .map(|p| p.as_str().to_owned()),
            unchecked: cluster
                .map(|c| {
                    c.parameters
                        .iter()
                        .filter(|(_, p)| p.unchecked)
                        .map(|(n, _)| n.clone())
                        .collect()
                })
                .unwrap_or_default(),
            confirmed_at: a
                .filter(|a| a.outcome == Some(Outcome::Applied))
                .and_then(|a| a.reported_at.clone()),
        }
    }

    /// A timer of rollout run `run` fired; one of an earlier run (before a supersede, a
    /// resume, a rollback, or of another rollout) is ignored.
    pub fn timer_of(&mut self, cluster: &str, event: Event, run: u64, now_ms: u64) -> Vec<Effect> {
        let current = self
            .state
            .clusters
            .get(cluster)
            .and_then(|c| c.rollout.as_ref())
            .map(|r| r.run);
        if current != Some(run) {
            return Vec::new();
        }
        self.timer(cluster, event, now_ms)
    }

    /// A timer of the rollout's current run fired.
    pub fn timer(&mut self, cluster: &str, event: Event, now_ms: u64) -> Vec<Effect> {
        self.feed(cluster, event, now_ms);
        self.finish()
    }

    /// A person's command (pause, resume, promote, abort, override): refused when the
    /// cluster has no rollout in progress or its phase does not take the command.
    pub fn command(
        &mut self,
        cluster: &str,
        event: Event,
        now_ms: u64,
    ) -> Result<Vec<Effect>, RefusedInput> {
        let Some(cs) = self.state.clusters.get(cluster) else {
            return Err(RefusedInput::UnknownCluster(cluster.to_owned()));
        };
        let Some(rec) = cs.rollout.as_ref().filter(|r| !r.rollout.phase.is_final()) else {
            return Err(RefusedInput::NoRollout(cluster.to_owned()));
        };
        if let Some(refused) = rollout::refusal(&rec.rollout, &event) {
            return Err(RefusedInput::NotTaken {
                cluster: cluster.to_owned(),
                command: refused.command,
                revision: short_id(&rec.rollout.spec.revision).to_owned(),
                why: refused.why,
            });
        }
        self.feed(cluster, event, now_ms);
        Ok(self.finish())
    }

    /// A person retries the cluster's refused content (rolled back, or refused for
    /// start-only changes on directly managed nodes) without a new commit: the refusal is
    /// lifted, journaled with who and why, and the content rolls out again through the
    /// staged path. Refused when nothing is refused.
    pub fn retry(
        &mut self,
        cluster: &str,
        by: &str,
        reason: &str,
        now_ms: u64,
    ) -> Result<Vec<Effect>, RefusedInput> {
        let Some(cs) = self.state.clusters.get(cluster) else {
            return Err(RefusedInput::UnknownCluster(cluster.to_owned()));
        };
        let refused = match (&cs.refused, &cs.target) {
            (Some(r), Some(t)) if r.digest == t.digest => r.clone(),
            _ => return Err(RefusedInput::NothingRefused(cluster.to_owned())),
        };
        self.touch(cluster);
        if let Some(cs) = self.state.clusters.get_mut(cluster) {
            cs.refused = None;
        }
        self.lines.push(
            Record::new(
                "retry",
                format!(
                    "{cluster}: retry of revision {} by {by}: {reason} (it was refused: {})",
                    short_id(&refused.revision),
                    refused.reason
                ),
            )
            .cluster(cluster)
            .revision(&refused.revision),
        );
        self.start(cluster, now_ms);
        Ok(self.finish())
    }

    /// Periodically: start rollouts for nodes that came up since (a node unreachable
    /// when its cluster's rollout began gets the target through a rollout of its own).
    pub fn tick(&mut self, now_ms: u64) -> Vec<Effect> {
        let names: Vec<String> = self.state.clusters.keys().cloned().collect();
        let open = self.hold(now_ms).is_none();
        for name in names {
            let waiting = self.state.clusters[&name]
                .rollout
                .as_ref()
                .is_some_and(|r| matches!(r.rollout.phase, Phase::Waiting { .. }));
            if waiting && open && self.sentinel_hold(&name).is_none() {
                self.feed(&name, Event::WindowOpened, now_ms);
            }
            self.start(&name, now_ms);
        }
        self.finish()
    }

    /// The journal entry of this input (if anything happened), then its other effects.
    fn finish(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        if !self.lines.is_empty() {
            let records = std::mem::take(&mut self.lines);
            let lines: Vec<&str> = records.iter().map(|r| r.message.as_str()).collect();
            effects.push(Effect::Journal {
                message: lines.join("\n"),
            });
            effects.push(Effect::Log { records });
        }
        effects.append(&mut self.effects);
        effects
    }
}

#[cfg(test)]
mod tests;
