//! The staged rollout of one revision to one cluster, as a pure state machine:
//! `step(state, event) -> (state, actions)`. No clock and no I/O inside: the runtime feeds
//! it events (nodes confirming, timers firing, gate verdicts, a person's commands) and
//! carries out the actions it returns (assign a revision to nodes, start a timer, judge the
//! gates, write a journal entry). The same code runs under virtual time in tests, and the
//! whole state is serialisable, so the reconciler can store it in the journal and resume.
//!
//! ```text
//!             ┌──────────── node failed / apply timeout / gates failed ─────────────┐
//!             ▼                                                                     │
//! Begin ─► Applying(b) ── every node of b confirmed ─► Baking(b) ── bake elapsed ─► Judging(b)
//!             ▲                                          │ promote                  │ pass
//!             └──────────────── next batch ◄─────────────┴──────────────────────────┘
//!  failure: on_failure = rollback → RollingBack (previous assignment to every touched
//!           node) → RolledBack;  on_failure = pause → Paused (a person decides)
//!  inconclusive gates → Paused;  last batch passed → Completed
//!  a batch due while `hold` is set (outside the rollout windows) → Waiting(b);
//!  WindowOpened or Override (with a reason, recorded) → Applying(b)
//!  a batch holding a live primary that restarts (`spec.failovers`): before it is
//!  assigned, FailingOver(b) per such primary: ChooseFailover → the caller answers
//!  FailoverChosen (to a replica / not needed / no healthy replica); Failover → FailedOver
//!  (next primary, then Applying(b)) or FailoverFailed / FailoverTimedOut (batch failed).
//!  No healthy replica: Paused. With `onPrimaryRestart: in-place` no failover: the
//!  primary restarts in place (journaled).
//! ```
//!
//! Timer and gate events carry the batch they were started for; an event for another
//! batch (a timer that fired after the rollout moved on) is ignored, so the runtime never
//! has to cancel anything.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::pure::catalog::human_ms;
use crate::pure::spec::model::{OnFailure, OnPrimaryRestart};

/// What a rollout needs to know, fixed when it starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    pub cluster: String,
    /// The revision being rolled out.
    pub revision: String,
    /// The revision the nodes ran before, assigned back on rollback (`None`: nothing was
    /// assigned before; a rollback then only reports).
    pub previous: Option<String>,
    /// Node batches in order (from `plan`): replicas first, shard limits respected.
    pub batches: Vec<Vec<String>>,
    pub bake_ms: u64,
    pub apply_timeout_ms: u64,
    pub on_failure: OnFailure,
    /// Nodes whose change restarts the engine: a batch holding one bakes `warmup_ms`
    /// longer, so its gates judge a warmed-up cache and the next batch waits for it.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub restarting: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub warmup_ms: u64,
    /// Live primaries that restart and whose shard has other nodes: before its batch is
    /// assigned, the primary role moves to one of them (node id → the plan).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failovers: BTreeMap<String, FailoverPlan>,
    /// What a primary with no healthy replica to move its role to does.
    #[serde(default, skip_serializing_if = "is_failover")]
    pub on_primary_restart: OnPrimaryRestart,
    /// How long one failover may take before the batch fails (0: `apply_timeout_ms`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failover_timeout_ms: u64,
}

/// The move of a shard's primary role before the primary restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPlan {
    pub shard: String,
    /// The shard's other declared nodes, the candidates to take the role.
    pub replicas: Vec<String>,
}

/// The caller's choice of where a shard's primary role goes (answer to
/// [`Action::ChooseFailover`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "choice")]
pub enum FailoverChoice {
    /// An updated, caught-up replica with its link up.
    To { node: String },
    /// The node no longer runs as a primary with replicas (a failover already happened):
    /// it restarts as it is.
    NotNeeded { why: String },
    /// No replica can take the role, and why.
    NoHealthyReplica { why: String },
}

fn is_failover(m: &OnPrimaryRestart) -> bool {
    *m == OnPrimaryRestart::Failover
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl RolloutSpec {
    /// How long batch `batch` bakes once applied: the bake, plus the warm-up when one
    /// of its nodes restarted.
    pub fn bake_of(&self, batch: usize) -> u64 {
        let restarts = self
            .batches
            .get(batch)
            .is_some_and(|nodes| nodes.iter().any(|n| self.restarting.contains(n)));
        if restarts {
            self.bake_ms.saturating_add(self.warmup_ms)
        } else {
            self.bake_ms
        }
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "phase")]
pub enum Phase {
    /// Created, not begun (waiting for a window, say).
    Pending,
    /// Batch `batch` was assigned; waiting for its nodes to confirm.
    Applying {
        batch: usize,
    },
    /// Batch `batch` applied; waiting out the bake time.
    Baking {
        batch: usize,
    },
    /// Before batch `batch` is assigned: the primary role of `from`'s shard moves to
    /// `to` (`None` while the caller chooses).
    FailingOver {
        batch: usize,
        from: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// Waiting for the gates' verdict on batch `batch`.
    Judging {
        batch: usize,
    },
    /// Batch `batch` is due but may not start: outside the rollout windows. Goes on at
    /// `WindowOpened` (once the windows allow it) or a person's `Override`.
    Waiting {
        batch: usize,
        reason: String,
    },
    /// Stopped by a person or an inconclusive gate; `resume` goes back to `at`.
    Paused {
        batch: usize,
        reason: String,
    },
    /// Assigning the previous revision back to every touched node.
    RollingBack {
        reason: String,
    },
    Completed,
    RolledBack {
        reason: String,
    },
    /// A newer revision took over; nodes keep what they have until it assigns them.
    Superseded {
        by: String,
    },
}

impl Phase {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Phase::Completed | Phase::RolledBack { .. } | Phase::Superseded { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    pub spec: RolloutSpec,
    pub phase: Phase,
    /// Nodes that were assigned the new revision (what a rollback must undo).
    pub touched: BTreeSet<String>,
    /// Nodes of the current batch that confirmed the new revision.
    pub confirmed: BTreeSet<String>,
    /// During a rollback: nodes still to confirm the previous revision.
    pub restoring: BTreeSet<String>,
    /// Why no batch may start now (outside the rollout windows), set by the caller
    /// before each step from the time it knows; `None`: batches may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// A person overrode the windows for this rollout: who and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_override: Option<String>,
    /// Why no batch may start now whatever a window override says (the cluster's
    /// Sentinels do not agree on its primary), set by the caller like `hold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<String>,
    /// Primaries of `spec.failovers` whose role moved (or that restart in place): their
    /// batch assigns them without another failover.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub failed_over: BTreeSet<String>,
}

/// The gates' judgement of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum Verdict {
    Pass,
    Fail {
        reason: String,
    },
    /// Too little traffic to judge: a person decides.
    Inconclusive {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum Event {
    Begin,
    /// A node reported the outcome of applying `revision`.
    NodeApplied {
        node: String,
        revision: String,
        ok: bool,
        error: Option<String>,
    },
    ApplyTimedOut {
        batch: usize,
    },
    /// The rollback's nodes did not all confirm the previous revision in time.
    RollbackTimedOut,
    BakeElapsed {
        batch: usize,
    },
    Gates {
        batch: usize,
        verdict: Verdict,
    },
    Pause {
        by: String,
    },
    Resume {
        by: String,
    },
    /// Skip the rest of the bake (and the gates) of the current batch.
    Promote {
        by: String,
    },
    Abort {
        by: String,
    },
    /// The rollout windows may allow a waiting batch now (the caller has set `hold`).
    WindowOpened,
    /// Start batches whatever the windows say, for this rollout; `reason` is recorded.
    Override {
        by: String,
        reason: String,
    },
    /// The caller's answer to [`Action::ChooseFailover`].
    FailoverChosen {
        batch: usize,
        from: String,
        choice: FailoverChoice,
    },
    /// The failover completed: `to` reports role master, `from` is its replica.
    FailedOver {
        batch: usize,
        from: String,
        to: String,
    },
    /// The failover was refused or did not complete.
    FailoverFailed {
        batch: usize,
        from: String,
        error: String,
    },
    FailoverTimedOut {
        batch: usize,
        from: String,
    },
    /// A newer valid revision arrived.
    Supersede {
        revision: String,
    },
    /// A newer revision no longer declares these nodes in the cluster: they leave the
    /// rollout (its batches, and a rollback's nodes still to confirm), and it goes on
    /// with the others.
    NodesRemoved {
        nodes: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Action {
    /// Give these nodes this revision's assignment.
    Assign {
        nodes: Vec<String>,
        revision: String,
    },
    /// Fire `event` after `after_ms` (ApplyTimedOut or BakeElapsed).
    Timer { after_ms: u64, event: Event },
    /// Judge the gates for these nodes and answer with `Event::Gates`.
    JudgeGates { batch: usize, nodes: Vec<String> },
    /// Record what happened (one journal commit each).
    Journal {
        message: String,
        /// What the line is about, for the logs' fields (not journaled).
        #[serde(skip)]
        about: About,
    },
    /// Choose where `from`'s primary role goes among `replicas` (from live readings)
    /// and answer with `Event::FailoverChosen`.
    ChooseFailover {
        batch: usize,
        shard: String,
        from: String,
        replicas: Vec<String>,
    },
    /// Move `shard`'s primary role from `from` to `to`; answer with `Event::FailedOver`
    /// or `Event::FailoverFailed`.
    Failover {
        batch: usize,
        shard: String,
        from: String,
        to: String,
    },
}

/// What a journal line is about, as the logs' fields: the event (`batch_assigned`,
/// `rolling_back`, ...), the batch (from 1) and the node it names. The cluster and the
/// revision are the rollout's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct About {
    pub event: &'static str,
    pub batch: Option<usize>,
    pub node: Option<String>,
}

impl About {
    pub fn event(event: &'static str) -> About {
        About {
            event,
            ..About::default()
        }
    }

    /// `batch` counted from 0, said from 1.
    pub fn batch(mut self, batch: usize) -> About {
        self.batch = Some(batch + 1);
        self
    }

    pub fn node(mut self, node: &str) -> About {
        self.node = Some(node.to_owned());
        self
    }
}

impl Rollout {
    pub fn new(spec: RolloutSpec) -> Rollout {
        Rollout {
            spec,
            phase: Phase::Pending,
            touched: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            restoring: BTreeSet::new(),
            hold: None,
            window_override: None,
            blocked: None,
            failed_over: BTreeSet::new(),
        }
    }

    fn batch_nodes(&self, batch: usize) -> &[String] {
        self.spec
            .batches
            .get(batch)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A person's command the rollout's phase does not take, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRefused {
    /// `pause`, `resume`, `promote`, `abort` or `override`.
    pub command: &'static str,
    /// Where the rollout is, and what the command takes.
    pub why: String,
}

/// Whether [`step`] takes a person's command (pause, resume, promote, abort, override)
/// in the rollout's current phase: `Some` says why not, so the command is refused in
/// words instead of changing nothing in silence. Other events are never refused here.
/// A test holds this to `step`: refused exactly when `step` would change nothing.
pub fn refusal(r: &Rollout, event: &Event) -> Option<CommandRefused> {
    let running = !r.phase.is_final() && !matches!(r.phase, Phase::RollingBack { .. });
    let (command, taken, takes) = match event {
        Event::Pause { .. } => (
            "pause",
            matches!(
                r.phase,
                Phase::Applying { .. }
                    | Phase::Baking { .. }
                    | Phase::Judging { .. }
                    | Phase::Waiting { .. }
            ),
            "pause takes a rollout that is applying, baking, judging or waiting",
        ),
        Event::Resume { .. } => (
            "resume",
            matches!(r.phase, Phase::Paused { .. }),
            "resume takes a paused rollout",
        ),
        Event::Promote { .. } => (
            "promote",
            matches!(
                r.phase,
                Phase::Baking { .. } | Phase::Judging { .. } | Phase::Paused { .. }
            ),
            "promote takes a batch that is baking, judging or paused",
        ),
        Event::Abort { .. } => (
            "abort",
            running,
            "abort takes a rollout that has not ended and is not rolling back",
        ),
        Event::Override { .. } => {
            if let (true, Some(done)) = (running, &r.window_override) {
                return Some(CommandRefused {
                    command: "override",
                    why: format!(
                        "its rollout windows were already overridden ({done}); override is taken once per rollout"
                    ),
                });
            }
            (
                "override",
                running,
                "override takes a rollout that has not ended and is not rolling back",
            )
        }
        _ => return None,
    };
    (!taken).then(|| CommandRefused {
        command,
        why: format!("it is {}; {takes}", r.phase_text(r.spec.batches.len())),
    })
}

impl Rollout {
    /// The phase in words, for a refusal: `paused at batch 1 of 3 (paused by alice)`.
    fn phase_text(&self, batches: usize) -> String {
        match &self.phase {
            Phase::Pending => "not begun".to_owned(),
            Phase::Applying { batch } => format!("applying batch {} of {batches}", batch + 1),
            Phase::Baking { batch } => format!("baking batch {} of {batches}", batch + 1),
            Phase::Judging { batch } => {
                format!("judging the gates of batch {} of {batches}", batch + 1)
            }
            Phase::FailingOver { batch, from, .. } => {
                format!(
                    "moving the primary role away from {from} before batch {} of {batches}",
                    batch + 1
                )
            }
            Phase::Waiting { batch, reason } => {
                format!(
                    "waiting to start batch {} of {batches} ({reason})",
                    batch + 1
                )
            }
            Phase::Paused { batch, reason } => {
                format!("paused at batch {} of {batches} ({reason})", batch + 1)
            }
            Phase::RollingBack { reason } => format!("rolling back ({reason})"),
            Phase::Completed => "completed".to_owned(),
            Phase::RolledBack { reason } => format!("rolled back ({reason})"),
            Phase::Superseded { by } => format!("superseded by {by}"),
        }
    }
}

/// One transition. Events that do not apply in the current phase change nothing and
/// return no action (a late timer, a node confirming twice, a resume while running).
pub fn step(mut r: Rollout, event: Event) -> (Rollout, Vec<Action>) {
    let mut actions = Vec::new();
    let journal = |actions: &mut Vec<Action>, about: About, message: String| {
        actions.push(Action::Journal { message, about })
    };
    match (&r.phase.clone(), event) {
        (_, Event::Supersede { revision }) if !r.phase.is_final() => {
            journal(
                &mut actions,
                About::event("rollout_superseded"),
                format!(
                    "{}: rollout of {} superseded by {revision}",
                    r.spec.cluster, r.spec.revision
                ),
            );
            r.phase = Phase::Superseded { by: revision };
        }
        (_, Event::NodesRemoved { nodes }) if !r.phase.is_final() => {
            leave(&mut r, &nodes, &mut actions);
        }
        (Phase::Pending, Event::Begin) => {
            journal(
                &mut actions,
                About::event("rollout_started"),
                format!(
                    "{}: rollout of {} started, {} batch(es)",
                    r.spec.cluster,
                    r.spec.revision,
                    r.spec.batches.len()
                ),
            );
            start_batch(&mut r, 0, &mut actions);
        }
        (
            Phase::Applying { batch },
            Event::NodeApplied {
                node,
                revision,
                ok,
                error,
            },
        ) if revision == r.spec.revision && r.batch_nodes(*batch).contains(&node) => {
            let batch = *batch;
            if ok {
                if r.confirmed.insert(node.clone()) {
                    journal(
                        &mut actions,
                        About::event("node_applied").batch(batch).node(&node),
                        format!("{}: {node} applied {revision}", r.spec.cluster),
                    );
                }
                if r.batch_nodes(batch).iter().all(|n| r.confirmed.contains(n)) {
                    bake(&mut r, batch, &mut actions);
                }
            } else {
                let why = format!(
                    "{node} failed to apply {revision}: {}",
                    error.unwrap_or_else(|| "no reason given".to_owned())
                );
                fail(&mut r, batch, why, &mut actions);
            }
        }
        (Phase::Applying { batch }, Event::ApplyTimedOut { batch: b }) if *batch == b => {
            let missing: Vec<&String> = r
                .batch_nodes(b)
                .iter()
                .filter(|n| !r.confirmed.contains(*n))
                .collect();
            let why = format!(
                "{} did not confirm {} within {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                r.spec.revision,
                human_ms(r.spec.apply_timeout_ms)
            );
            fail(&mut r, b, why, &mut actions);
        }
        (
            Phase::FailingOver {
                batch,
                from,
                to: None,
            },
            Event::FailoverChosen {
                batch: b,
                from: f,
                choice,
            },
        ) if *batch == b && *from == f => {
            failover_chosen(&mut r, b, f, choice, &mut actions);
        }
        (
            Phase::FailingOver {
                batch,
                from,
                to: Some(_),
            },
            Event::FailedOver {
                batch: b,
                from: f,
                to,
            },
        ) if *batch == b && *from == f => {
            let shard = r.shard_of(&f);
            journal(
                &mut actions,
                About::event("failover_done").batch(b).node(&f),
                format!(
                    "{}: failover of shard {shard} done: {to} is the primary, {f} its replica",
                    r.spec.cluster
                ),
            );
            r.failed_over.insert(f);
            start_batch(&mut r, b, &mut actions);
        }
        (
            Phase::FailingOver {
                batch,
                from,
                to: Some(to),
            },
            Event::FailoverFailed {
                batch: b,
                from: f,
                error,
            },
        ) if *batch == b && *from == f => {
            let why = format!(
                "failover of shard {} from {f} to {to} failed: {error}",
                r.shard_of(&f)
            );
            fail(&mut r, b, why, &mut actions);
        }
        (
            Phase::FailingOver {
                batch,
                from,
                to: Some(to),
            },
            Event::FailoverTimedOut { batch: b, from: f },
        ) if *batch == b && *from == f => {
            let why = format!(
                "failover of shard {} from {f} to {to} did not complete within {} ms",
                r.shard_of(&f),
                r.spec.failover_timeout()
            );
            fail(&mut r, b, why, &mut actions);
        }
        (Phase::Baking { batch }, Event::BakeElapsed { batch: b }) if *batch == b => {
            r.phase = Phase::Judging { batch: b };
            actions.push(Action::JudgeGates {
                batch: b,
                nodes: r.batch_nodes(b).to_vec(),
            });
        }
        (Phase::Judging { batch }, Event::Gates { batch: b, verdict }) if *batch == b => {
            match verdict {
                Verdict::Pass => {
                    journal(
                        &mut actions,
                        About::event("batch_passed").batch(b),
                        format!("{}: batch {} passed its gates", r.spec.cluster, b + 1),
                    );
                    next_batch(&mut r, b, &mut actions);
                }
                Verdict::Fail { reason } => {
                    fail(&mut r, b, format!("gates failed: {reason}"), &mut actions);
                }
                Verdict::Inconclusive { reason } => {
                    let reason = format!("gates inconclusive: {reason}");
                    journal(
                        &mut actions,
                        About::event("rollout_paused").batch(b),
                        format!("{}: paused at batch {}: {reason}", r.spec.cluster, b + 1),
                    );
                    r.phase = Phase::Paused { batch: b, reason };
                }
            }
        }
        (Phase::Baking { batch } | Phase::Judging { batch }, Event::Promote { by }) => {
            let b = *batch;
            journal(
                &mut actions,
                About::event("batch_promoted").batch(b),
                format!("{}: batch {} promoted by {by}", r.spec.cluster, b + 1),
            );
            next_batch(&mut r, b, &mut actions);
        }
        (Phase::Paused { batch, .. }, Event::Promote { by }) => {
            let b = *batch;
            journal(
                &mut actions,
                About::event("batch_promoted").batch(b),
                format!("{}: batch {} promoted by {by}", r.spec.cluster, b + 1),
            );
            next_batch(&mut r, b, &mut actions);
        }
        (
            Phase::Applying { batch }
            | Phase::Baking { batch }
            | Phase::Judging { batch }
            | Phase::Waiting { batch, .. },
            Event::Pause { by },
        ) => {
            let b = *batch;
            journal(
                &mut actions,
                About::event("rollout_paused").batch(b),
                format!("{}: paused by {by} at batch {}", r.spec.cluster, b + 1),
            );
            r.phase = Phase::Paused {
                batch: b,
                reason: format!("paused by {by}"),
            };
        }
        (Phase::Waiting { batch, .. }, Event::WindowOpened) => {
            let b = *batch;
            start_batch(&mut r, b, &mut actions);
        }
        (phase, Event::Override { by, reason })
            if !phase.is_final()
                && !matches!(phase, Phase::RollingBack { .. })
                && r.window_override.is_none() =>
        {
            journal(
                &mut actions,
                About::event("windows_overridden"),
                format!(
                    "{}: rollout windows overridden by {by} for {}: {reason}",
                    r.spec.cluster, r.spec.revision
                ),
            );
            r.window_override = Some(format!("{by}: {reason}"));
            if let Phase::Waiting { batch, .. } = r.phase {
                start_batch(&mut r, batch, &mut actions);
            }
        }
        (Phase::Paused { batch, .. }, Event::Resume { by }) => {
            // Resuming re-runs the batch from its assignment: nodes that already applied
            // it confirm again at once (the agent answers an assignment it runs with no
            // change), and the bake starts over, which is the safe side.
            let b = *batch;
            journal(
                &mut actions,
                About::event("rollout_resumed").batch(b),
                format!("{}: resumed by {by} at batch {}", r.spec.cluster, b + 1),
            );
            start_batch(&mut r, b, &mut actions);
        }
        (phase, Event::Abort { by })
            if !phase.is_final() && !matches!(phase, Phase::RollingBack { .. }) =>
        {
            rollback(&mut r, format!("aborted by {by}"), &mut actions);
        }
        (
            Phase::RollingBack { reason },
            Event::NodeApplied {
                node, revision, ok, ..
            },
        ) if Some(&revision) == r.spec.previous.as_ref() && ok => {
            let reason = reason.clone();
            r.restoring.remove(&node);
            if r.restoring.is_empty() {
                rolled_back(&mut r, reason, &mut actions);
            }
        }
        (Phase::RollingBack { reason }, Event::RollbackTimedOut) => {
            // A node that cannot confirm (it is down) must not hold the rollout forever;
            // the outcome names it, so a person knows which node to look at.
            let reason = format!(
                "{reason}; {} did not confirm the rollback within {}",
                r.restoring.iter().cloned().collect::<Vec<_>>().join(", "),
                human_ms(r.spec.apply_timeout_ms)
            );
            journal(
                &mut actions,
                About::event("rollback_incomplete"),
                format!(
                    "{}: rollback of {} incomplete: {reason}",
                    r.spec.cluster, r.spec.revision
                ),
            );
            r.phase = Phase::RolledBack { reason };
        }
        _ => {}
    }
    (r, actions)
}

/// Every node of `batch` confirmed: bake it.
fn bake(r: &mut Rollout, batch: usize, actions: &mut Vec<Action>) {
    r.phase = Phase::Baking { batch };
    actions.push(Action::Timer {
        after_ms: r.spec.bake_of(batch),
        event: Event::BakeElapsed { batch },
    });
}

/// Every touched node confirmed the previous revision again (or left the cluster).
fn rolled_back(r: &mut Rollout, reason: String, actions: &mut Vec<Action>) {
    actions.push(Action::Journal {
        message: format!(
            "{}: rolled back to {}",
            r.spec.cluster,
            r.spec.previous.clone().unwrap_or_default()
        ),
        about: About::event("rolled_back"),
    });
    r.phase = Phase::RolledBack { reason };
}

/// Nodes no longer declared leave the rollout; a batch they emptied is skipped, a batch
/// whose other nodes all confirmed bakes, a rollback with no node left to confirm ends.
fn leave(r: &mut Rollout, nodes: &[String], actions: &mut Vec<Action>) {
    let gone: BTreeSet<&String> = nodes
        .iter()
        .filter(|n| r.spec.batches.iter().flatten().any(|m| m == *n) || r.restoring.contains(*n))
        .collect();
    if gone.is_empty() {
        return;
    }
    for batch in &mut r.spec.batches {
        batch.retain(|n| !gone.contains(n));
    }
    for set in [
        &mut r.spec.restarting,
        &mut r.touched,
        &mut r.confirmed,
        &mut r.restoring,
    ] {
        set.retain(|n| !gone.contains(n));
    }
    actions.push(Action::Journal {
        message: format!(
            "{}: {} left the rollout of {}: no longer declared in the cluster",
            r.spec.cluster,
            gone.iter()
                .map(|n| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            r.spec.revision
        ),
        about: About::event("nodes_left"),
    });
    match r.phase.clone() {
        Phase::Applying { batch } if r.batch_nodes(batch).is_empty() => {
            next_batch(r, batch, actions)
        }
        Phase::Applying { batch }
            if r.batch_nodes(batch).iter().all(|n| r.confirmed.contains(n)) =>
        {
            bake(r, batch, actions)
        }
        Phase::Baking { batch } | Phase::Judging { batch } if r.batch_nodes(batch).is_empty() => {
            next_batch(r, batch, actions)
        }
        Phase::RollingBack { reason } if r.restoring.is_empty() => rolled_back(r, reason, actions),
        _ => {}
    }
}

fn start_batch(r: &mut Rollout, batch: usize, actions: &mut Vec<Action>) {
    // A batch emptied by nodes that left the cluster is skipped.
    let batch = (batch..r.spec.batches.len())
        .find(|b| !r.spec.batches[*b].is_empty())
        .unwrap_or(r.spec.batches.len());
    if batch >= r.spec.batches.len() {
        actions.push(Action::Journal {
            message: format!("{}: {} reached every node", r.spec.cluster, r.spec.revision),
            about: About::event("rollout_completed"),
        });
        r.phase = Phase::Completed;
        return;
    }
    let hold = match (&r.blocked, &r.hold, &r.window_override) {
        (Some(reason), _, _) | (None, Some(reason), None) => Some(reason.clone()),
        _ => None,
    };
    if let Some(reason) = &hold {
        // Journaled once when the wait begins, not at every check that finds it closed.
        if !matches!(&r.phase, Phase::Waiting { batch: b, .. } if *b == batch) {
            actions.push(Action::Journal {
                message: format!(
                    "{}: batch {} of {} waits: {reason}",
                    r.spec.cluster,
                    batch + 1,
                    r.spec.batches.len()
                ),
                about: About::event("batch_waiting").batch(batch),
            });
        }
        r.phase = Phase::Waiting {
            batch,
            reason: reason.clone(),
        };
        return;
    }
    if let Some((from, plan)) = r
        .batch_nodes(batch)
        .iter()
        .filter(|n| !r.failed_over.contains(*n))
        .find_map(|n| Some((n.clone(), r.spec.failovers.get(n)?.clone())))
    {
        if r.spec.on_primary_restart == OnPrimaryRestart::InPlace {
            actions.push(Action::Journal {
                message: format!(
                    "{}: {from} restarts in place (onPrimaryRestart: in-place): shard {} takes no writes until it is back",
                    r.spec.cluster, plan.shard
                ),
                about: About::event("restart_in_place").batch(batch).node(&from),
            });
            r.failed_over.insert(from);
            return start_batch(r, batch, actions);
        }
        r.phase = Phase::FailingOver {
            batch,
            from: from.clone(),
            to: None,
        };
        actions.push(Action::ChooseFailover {
            batch,
            shard: plan.shard,
            from,
            replicas: plan.replicas,
        });
        return;
    }
    let nodes = r.batch_nodes(batch).to_vec();
    r.confirmed.clear();
    r.touched.extend(nodes.iter().cloned());
    r.phase = Phase::Applying { batch };
    actions.push(Action::Journal {
        message: format!(
            "{}: batch {} of {} assigned {}: {}",
            r.spec.cluster,
            batch + 1,
            r.spec.batches.len(),
            r.spec.revision,
            nodes.join(", ")
        ),
        about: About::event("batch_assigned").batch(batch),
    });
    actions.push(Action::Assign {
        nodes,
        revision: r.spec.revision.clone(),
    });
    actions.push(Action::Timer {
        after_ms: r.spec.apply_timeout_ms,
        event: Event::ApplyTimedOut { batch },
    });
}

impl RolloutSpec {
    /// How long one failover may take.
    pub fn failover_timeout(&self) -> u64 {
        if self.failover_timeout_ms == 0 {
            self.apply_timeout_ms
        } else {
            self.failover_timeout_ms
        }
    }
}

impl Rollout {
    fn shard_of(&self, node: &str) -> String {
        self.spec
            .failovers
            .get(node)
            .map(|p| p.shard.clone())
            .unwrap_or_else(|| node.to_owned())
    }
}

/// The caller chose where `from`'s primary role goes: start the failover, go on without
/// one, or pause and say why.
fn failover_chosen(
    r: &mut Rollout,
    batch: usize,
    from: String,
    choice: FailoverChoice,
    actions: &mut Vec<Action>,
) {
    let cluster = r.spec.cluster.clone();
    let shard = r.shard_of(&from);
    match choice {
        FailoverChoice::To { node } => {
            actions.push(Action::Journal {
                message: format!(
                    "{cluster}: failover of shard {shard}: {from} → {node} ({from} restarts as a replica)"
                ),
                about: About::event("failover_started").batch(batch).node(&from),
            });
            r.phase = Phase::FailingOver {
                batch,
                from: from.clone(),
                to: Some(node.clone()),
            };
            actions.push(Action::Failover {
                batch,
                shard,
                from: from.clone(),
                to: node,
            });
            actions.push(Action::Timer {
                after_ms: r.spec.failover_timeout(),
                event: Event::FailoverTimedOut { batch, from },
            });
        }
        FailoverChoice::NotNeeded { why } => {
            actions.push(Action::Journal {
                message: format!("{cluster}: no failover of shard {shard}: {why}"),
                about: About::event("failover_not_needed").batch(batch).node(&from),
            });
            r.failed_over.insert(from);
            start_batch(r, batch, actions);
        }
        FailoverChoice::NoHealthyReplica { why } => {
            let reason = format!(
                "{from} must restart, and no replica of shard {shard} can take the primary role: {why}; a person decides (bring a replica up and resume, or set onPrimaryRestart: in-place to restart it in place)"
            );
            actions.push(Action::Journal {
                message: format!("{cluster}: paused at batch {}: {reason}", batch + 1),
                about: About::event("rollout_paused").batch(batch),
            });
            r.phase = Phase::Paused { batch, reason };
        }
    }
}

fn next_batch(r: &mut Rollout, batch: usize, actions: &mut Vec<Action>) {
    start_batch(r, batch + 1, actions);
}

fn fail(r: &mut Rollout, batch: usize, why: String, actions: &mut Vec<Action>) {
    match r.spec.on_failure {
        OnFailure::Rollback => rollback(r, why, actions),
        OnFailure::Pause => {
            actions.push(Action::Journal {
                message: format!("{}: paused at batch {}: {why}", r.spec.cluster, batch + 1),
                about: About::event("rollout_paused").batch(batch),
            });
            r.phase = Phase::Paused { batch, reason: why };
        }
    }
}

fn rollback(r: &mut Rollout, reason: String, actions: &mut Vec<Action>) {
    actions.push(Action::Journal {
        message: format!(
            "{}: rolling back {}: {reason}",
            r.spec.cluster, r.spec.revision
        ),
        about: About::event("rolling_back"),
    });
    match (&r.spec.previous, r.touched.is_empty()) {
        (Some(previous), false) => {
            r.restoring = r.touched.clone();
            actions.push(Action::Assign {
                nodes: r.touched.iter().cloned().collect(),
                revision: previous.clone(),
            });
            actions.push(Action::Timer {
                after_ms: r.spec.apply_timeout_ms,
                event: Event::RollbackTimedOut,
            });
            r.phase = Phase::RollingBack { reason };
        }
        _ => {
            r.phase = Phase::RolledBack { reason };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(on_failure: OnFailure) -> RolloutSpec {
        RolloutSpec {
            cluster: "c".into(),
            revision: "new".into(),
            previous: Some("old".into()),
            batches: vec![vec!["a".into()], vec!["b".into(), "c".into()]],
            bake_ms: 1000,
            apply_timeout_ms: 5000,
            on_failure,
            restarting: BTreeSet::new(),
            warmup_ms: 0,
            failovers: BTreeMap::new(),
            on_primary_restart: OnPrimaryRestart::Failover,
            failover_timeout_ms: 0,
        }
    }

    /// Replica `a` restarts first, then primary `b` of shard `s` (replica `a`).
    fn failover_spec(on_failure: OnFailure, on_primary: OnPrimaryRestart) -> RolloutSpec {
        let mut s = spec(on_failure);
        s.batches = vec![vec!["a".into()], vec!["b".into()]];
        s.restarting = ["a".to_owned(), "b".to_owned()].into_iter().collect();
        s.failovers.insert(
            "b".into(),
            FailoverPlan {
                shard: "s".into(),
                replicas: vec!["a".into()],
            },
        );
        s.on_primary_restart = on_primary;
        s.failover_timeout_ms = 3000;
        s
    }

    /// Begin, batch 1 applied and passed: the rollout reaches the primary's batch.
    fn at_primary_batch(spec: RolloutSpec) -> (Rollout, Vec<Action>) {
        run(
            Rollout::new(spec),
            vec![
                Event::Begin,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
                Event::Gates {
                    batch: 0,
                    verdict: Verdict::Pass,
                },
            ],
        )
    }

    fn journal_lines(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Journal { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_primary_that_restarts_hands_its_role_to_its_replica_before_it_is_assigned() {
        let (r, actions) = at_primary_batch(failover_spec(
            OnFailure::Rollback,
            OnPrimaryRestart::Failover,
        ));
        assert_eq!(
            r.phase,
            Phase::FailingOver {
                batch: 1,
                from: "b".into(),
                to: None
            }
        );
        assert_eq!(
            assigns(&actions),
            vec![(vec!["a".to_owned()], "new".to_owned())]
        );
        assert_eq!(
            actions.last(),
            Some(&Action::ChooseFailover {
                batch: 1,
                shard: "s".into(),
                from: "b".into(),
                replicas: vec!["a".into()],
            })
        );
        let (r, actions) = step(
            r,
            Event::FailoverChosen {
                batch: 1,
                from: "b".into(),
                choice: FailoverChoice::To { node: "a".into() },
            },
        );
        assert_eq!(
            actions,
            vec![
                Action::Journal {
                    message: "c: failover of shard s: b → a (b restarts as a replica)".into(),
                    about: About::event("failover_started").batch(1).node("b"),
                },
                Action::Failover {
                    batch: 1,
                    shard: "s".into(),
                    from: "b".into(),
                    to: "a".into()
                },
                Action::Timer {
                    after_ms: 3000,
                    event: Event::FailoverTimedOut {
                        batch: 1,
                        from: "b".into()
                    }
                },
            ]
        );
        // A late or foreign outcome changes nothing.
        let (r, none) = step(
            r,
            Event::FailedOver {
                batch: 0,
                from: "b".into(),
                to: "a".into(),
            },
        );
        assert!(none.is_empty());
        let (r, actions) = step(
            r,
            Event::FailedOver {
                batch: 1,
                from: "b".into(),
                to: "a".into(),
            },
        );
        assert_eq!(r.phase, Phase::Applying { batch: 1 });
        assert_eq!(
            journal_lines(&actions)[0],
            "c: failover of shard s done: a is the primary, b its replica"
        );
        assert_eq!(
            assigns(&actions),
            vec![(vec!["b".to_owned()], "new".to_owned())]
        );
        // The timer of the failover that completed is ignored.
        let (r, none) = step(
            r,
            Event::FailoverTimedOut {
                batch: 1,
                from: "b".into(),
            },
        );
        assert!(none.is_empty());
        let (r, _) = run(
            r,
            vec![
                applied("b", "new"),
                Event::BakeElapsed { batch: 1 },
                Event::Gates {
                    batch: 1,
                    verdict: Verdict::Pass,
                },
            ],
        );
        assert_eq!(r.phase, Phase::Completed);
        // Serialised and read back (the journal keeps it).
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Rollout>(&text).unwrap(), r);
    }

    #[test]
    fn a_failover_that_fails_or_times_out_fails_the_batch_and_rolls_back() {
        for outcome in [
            Event::FailoverFailed {
                batch: 1,
                from: "b".into(),
                error: "ERR FAILOVER target HOST and PORT is not a replica.".into(),
            },
            Event::FailoverTimedOut {
                batch: 1,
                from: "b".into(),
            },
        ] {
            let (r, _) = at_primary_batch(failover_spec(
                OnFailure::Rollback,
                OnPrimaryRestart::Failover,
            ));
            let (r, actions) = run(
                r,
                vec![
                    Event::FailoverChosen {
                        batch: 1,
                        from: "b".into(),
                        choice: FailoverChoice::To { node: "a".into() },
                    },
                    outcome.clone(),
                ],
            );
            let Phase::RollingBack { reason } = &r.phase else {
                panic!("{:?}", r.phase)
            };
            let expected = match outcome {
                Event::FailoverFailed { .. } => "failover of shard s from b to a failed: ERR FAILOVER target HOST and PORT is not a replica.",
                _ => "failover of shard s from b to a did not complete within 3000 ms",
            };
            assert_eq!(reason, expected);
            // The primary was never assigned; the replica of batch 1 goes back.
            assert_eq!(
                assigns(&actions),
                vec![(vec!["a".to_owned()], "old".to_owned())]
            );
            assert!(!r.touched.contains("b"));
        }
    }

    #[test]
    fn no_healthy_replica_pauses_and_in_place_restarts_without_a_failover() {
        let none = FailoverChoice::NoHealthyReplica {
            why: "a: its replication link is down".into(),
        };
        let (r, _) = at_primary_batch(failover_spec(
            OnFailure::Rollback,
            OnPrimaryRestart::Failover,
        ));
        let (r, actions) = step(
            r,
            Event::FailoverChosen {
                batch: 1,
                from: "b".into(),
                choice: none,
            },
        );
        let reason = "b must restart, and no replica of shard s can take the primary role: a: its replication link is down; a person decides (bring a replica up and resume, or set onPrimaryRestart: in-place to restart it in place)";
        assert_eq!(
            r.phase,
            Phase::Paused {
                batch: 1,
                reason: reason.into()
            }
        );
        assert_eq!(
            journal_lines(&actions),
            vec![format!("c: paused at batch 2: {reason}")]
        );
        assert!(assigns(&actions).is_empty());
        // Resuming chooses again.
        let (r, actions) = step(r, Event::Resume { by: "alice".into() });
        assert!(matches!(r.phase, Phase::FailingOver { batch: 1, .. }));
        assert!(matches!(
            actions.last(),
            Some(Action::ChooseFailover { .. })
        ));

        let (r, actions) = at_primary_batch(failover_spec(
            OnFailure::Rollback,
            OnPrimaryRestart::InPlace,
        ));
        assert_eq!(r.phase, Phase::Applying { batch: 1 });
        assert!(journal_lines(&actions).contains(
            &"c: b restarts in place (onPrimaryRestart: in-place): shard s takes no writes until it is back".to_owned()
        ));
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::ChooseFailover { .. } | Action::Failover { .. })));
        assert_eq!(
            assigns(&actions),
            vec![
                (vec!["a".to_owned()], "new".to_owned()),
                (vec!["b".to_owned()], "new".to_owned())
            ]
        );
    }

    #[test]
    fn a_primary_that_already_runs_as_a_replica_is_assigned_without_a_failover() {
        let (r, _) = at_primary_batch(failover_spec(
            OnFailure::Rollback,
            OnPrimaryRestart::Failover,
        ));
        let (r, actions) = step(
            r,
            Event::FailoverChosen {
                batch: 1,
                from: "b".into(),
                choice: FailoverChoice::NotNeeded {
                    why: "b already runs as a replica of 10.0.0.1:6379".into(),
                },
            },
        );
        assert_eq!(r.phase, Phase::Applying { batch: 1 });
        assert_eq!(
            journal_lines(&actions)[0],
            "c: no failover of shard s: b already runs as a replica of 10.0.0.1:6379"
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Failover { .. })));
    }

    #[test]
    fn a_window_override_does_not_start_a_batch_its_sentinels_block() {
        let mut r = Rollout::new(spec(OnFailure::Rollback));
        r.blocked = Some("the Sentinels of main do not agree on its primary".into());
        let (r, actions) = step(r, Event::Begin);
        assert_eq!(
            r.phase,
            Phase::Waiting {
                batch: 0,
                reason: "the Sentinels of main do not agree on its primary".into()
            }
        );
        assert!(assigns(&actions).is_empty());
        let (mut r, actions) = step(
            r,
            Event::Override {
                by: "alice".into(),
                reason: "now".into(),
            },
        );
        assert!(matches!(r.phase, Phase::Waiting { batch: 0, .. }));
        assert!(assigns(&actions).is_empty());
        r.blocked = None;
        let (r, actions) = step(r, Event::WindowOpened);
        assert_eq!(r.phase, Phase::Applying { batch: 0 });
        assert!(!assigns(&actions).is_empty());
    }

    fn applied(node: &str, revision: &str) -> Event {
        Event::NodeApplied {
            node: node.into(),
            revision: revision.into(),
            ok: true,
            error: None,
        }
    }

    fn assigns(actions: &[Action]) -> Vec<(Vec<String>, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Assign { nodes, revision } => Some((nodes.clone(), revision.clone())),
                _ => None,
            })
            .collect()
    }

    /// Feed events in order; every action list, flattened.
    fn run(mut r: Rollout, events: Vec<Event>) -> (Rollout, Vec<Action>) {
        let mut all = Vec::new();
        for e in events {
            let (next, actions) = step(r, e);
            r = next;
            all.extend(actions);
        }
        (r, all)
    }

    #[test]
    fn a_clean_rollout_goes_batch_by_batch_to_completed() {
        let (r, actions) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![
                Event::Begin,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
                Event::Gates {
                    batch: 0,
                    verdict: Verdict::Pass,
                },
                applied("b", "new"),
                applied("c", "new"),
                Event::BakeElapsed { batch: 1 },
                Event::Gates {
                    batch: 1,
                    verdict: Verdict::Pass,
                },
            ],
        );
        assert_eq!(r.phase, Phase::Completed);
        assert_eq!(
            assigns(&actions),
            vec![
                (vec!["a".to_owned()], "new".to_owned()),
                (vec!["b".to_owned(), "c".to_owned()], "new".to_owned())
            ]
        );
        assert!(actions.contains(&Action::JudgeGates {
            batch: 1,
            nodes: vec!["b".into(), "c".into()]
        }));
    }

    #[test]
    fn outside_the_windows_a_batch_waits_and_goes_on_when_they_open_or_on_override() {
        let mut r = Rollout::new(spec(OnFailure::Rollback));
        r.hold = Some("inside deny window `fri`".into());
        let (mut r, actions) = run(r, vec![Event::Begin]);
        assert_eq!(
            r.phase,
            Phase::Waiting {
                batch: 0,
                reason: "inside deny window `fri`".into()
            }
        );
        assert!(assigns(&actions).is_empty());
        assert!(actions.contains(&Action::Journal {
            message: "c: batch 1 of 2 waits: inside deny window `fri`".into(),
            about: About::event("batch_waiting").batch(0),
        }));
        // Still closed: nothing happens and nothing is journaled again.
        let (r2, again) = step(r.clone(), Event::WindowOpened);
        assert_eq!((r2.phase.clone(), again), (r.phase.clone(), vec![]));
        // Open: batch 1 starts; a later batch due while closed waits again.
        r.hold = None;
        let (mut r, actions) = run(
            r,
            vec![
                Event::WindowOpened,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
            ],
        );
        assert_eq!(
            assigns(&actions),
            vec![(vec!["a".to_owned()], "new".to_owned())]
        );
        r.hold = Some("outside allow window(s) `day`".into());
        let (r, _) = step(
            r,
            Event::Gates {
                batch: 0,
                verdict: Verdict::Pass,
            },
        );
        assert!(matches!(r.phase, Phase::Waiting { batch: 1, .. }));
        // A person overrides with a reason: recorded, and the batch starts.
        let (r, actions) = step(
            r,
            Event::Override {
                by: "alice".into(),
                reason: "INC-42 hotfix".into(),
            },
        );
        assert_eq!(r.phase, Phase::Applying { batch: 1 });
        assert_eq!(r.window_override.as_deref(), Some("alice: INC-42 hotfix"));
        assert_eq!(
            actions[0],
            Action::Journal {
                message: "c: rollout windows overridden by alice for new: INC-42 hotfix".into(),
                about: About::event("windows_overridden"),
            }
        );
        assert_eq!(
            assigns(&actions),
            vec![(vec!["b".to_owned(), "c".to_owned()], "new".to_owned())]
        );
    }

    #[test]
    fn the_bake_starts_only_when_the_whole_batch_confirmed() {
        let (r, actions) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![
                Event::Begin,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
                Event::Gates {
                    batch: 0,
                    verdict: Verdict::Pass,
                },
                applied("b", "new"),
                // A late timer of batch 0 and a confirmation of another revision: ignored.
                Event::BakeElapsed { batch: 0 },
                applied("c", "old"),
            ],
        );
        assert_eq!(r.phase, Phase::Applying { batch: 1 });
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::JudgeGates { .. }))
                .count(),
            1
        );
    }

    #[test]
    fn a_batch_with_a_restart_bakes_for_the_warm_up_too() {
        let mut spec = spec(OnFailure::Rollback);
        spec.warmup_ms = 30_000;
        spec.restarting = BTreeSet::from(["c".to_owned()]);
        let bakes = |events: Vec<Event>| -> Vec<u64> {
            run(Rollout::new(spec.clone()), events)
                .1
                .iter()
                .filter_map(|a| match a {
                    Action::Timer {
                        after_ms,
                        event: Event::BakeElapsed { .. },
                    } => Some(*after_ms),
                    _ => None,
                })
                .collect()
        };
        let events = vec![
            Event::Begin,
            applied("a", "new"),
            Event::BakeElapsed { batch: 0 },
            Event::Gates {
                batch: 0,
                verdict: Verdict::Pass,
            },
            applied("b", "new"),
            applied("c", "new"),
        ];
        // Batch 0 (a) restarts nothing; batch 1 holds c, which restarts.
        assert_eq!(bakes(events), vec![1000, 31_000]);
    }

    #[test]
    fn a_failed_gate_rolls_every_touched_node_back() {
        let (r, actions) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![
                Event::Begin,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
                Event::Gates {
                    batch: 0,
                    verdict: Verdict::Pass,
                },
                applied("b", "new"),
                applied("c", "new"),
                Event::BakeElapsed { batch: 1 },
                Event::Gates {
                    batch: 1,
                    verdict: Verdict::Fail {
                        reason: "hit ratio of b fell 30%".into(),
                    },
                },
            ],
        );
        assert_eq!(
            r.phase,
            Phase::RollingBack {
                reason: "gates failed: hit ratio of b fell 30%".into()
            }
        );
        assert_eq!(
            assigns(&actions).last().unwrap(),
            &(
                vec!["a".to_owned(), "b".to_owned(), "c".to_owned()],
                "old".to_owned()
            )
        );
        let (r, _) = run(r, vec![applied("a", "old"), applied("b", "old")]);
        assert!(matches!(r.phase, Phase::RollingBack { .. }));
        let (r, actions) = run(r, vec![applied("c", "old")]);
        assert_eq!(
            r.phase,
            Phase::RolledBack {
                reason: "gates failed: hit ratio of b fell 30%".into()
            }
        );
        assert!(actions.contains(&Action::Journal {
            message: "c: rolled back to old".into(),
            about: About::event("rolled_back"),
        }));
    }

    #[test]
    fn a_rollback_a_dead_node_cannot_confirm_ends_after_the_apply_timeout() {
        let (r, actions) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![
                Event::Begin,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
                Event::Gates {
                    batch: 0,
                    verdict: Verdict::Fail {
                        reason: "a is down".into(),
                    },
                },
            ],
        );
        assert!(actions.contains(&Action::Timer {
            after_ms: 5000,
            event: Event::RollbackTimedOut
        }));
        let (r, _) = run(r, vec![Event::RollbackTimedOut]);
        assert_eq!(
            r.phase,
            Phase::RolledBack {
                reason: "gates failed: a is down; a did not confirm the rollback within 5s".into()
            }
        );
    }

    #[test]
    fn a_node_that_fails_or_times_out_fails_the_batch() {
        let failing = Event::NodeApplied {
            node: "a".into(),
            revision: "new".into(),
            ok: false,
            error: Some("`maxmemory-policy` refused".into()),
        };
        let (r, _) = run(
            Rollout::new(spec(OnFailure::Pause)),
            vec![Event::Begin, failing],
        );
        assert_eq!(
            r.phase,
            Phase::Paused {
                batch: 0,
                reason: "a failed to apply new: `maxmemory-policy` refused".into()
            }
        );
        let (r, _) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![Event::Begin, Event::ApplyTimedOut { batch: 0 }],
        );
        assert_eq!(
            r.phase,
            Phase::RollingBack {
                reason: "a did not confirm new within 5s".into()
            }
        );
    }

    #[test]
    fn inconclusive_gates_pause_and_a_person_resumes_or_promotes() {
        let (r, _) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![
                Event::Begin,
                applied("a", "new"),
                Event::BakeElapsed { batch: 0 },
                Event::Gates {
                    batch: 0,
                    verdict: Verdict::Inconclusive {
                        reason: "3 ops/s".into(),
                    },
                },
            ],
        );
        assert_eq!(
            r.phase,
            Phase::Paused {
                batch: 0,
                reason: "gates inconclusive: 3 ops/s".into()
            }
        );
        let (promoted, actions) = run(r.clone(), vec![Event::Promote { by: "alice".into() }]);
        assert_eq!(promoted.phase, Phase::Applying { batch: 1 });
        assert!(actions.contains(&Action::Journal {
            message: "c: batch 1 promoted by alice".into(),
            about: About::event("batch_promoted").batch(0),
        }));
        let (resumed, actions) = run(r, vec![Event::Resume { by: "bob".into() }]);
        assert_eq!(resumed.phase, Phase::Applying { batch: 0 });
        assert_eq!(
            assigns(&actions),
            vec![(vec!["a".to_owned()], "new".to_owned())]
        );
    }

    #[test]
    fn abort_and_supersede_end_a_rollout_in_flight() {
        let (r, actions) = run(
            Rollout::new(spec(OnFailure::Pause)),
            vec![Event::Begin, Event::Abort { by: "carol".into() }],
        );
        assert_eq!(
            r.phase,
            Phase::RollingBack {
                reason: "aborted by carol".into()
            }
        );
        assert_eq!(
            assigns(&actions).last().unwrap(),
            &(vec!["a".to_owned()], "old".to_owned())
        );
        let (r, _) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![
                Event::Begin,
                Event::Supersede {
                    revision: "newer".into(),
                },
                applied("a", "new"),
            ],
        );
        assert_eq!(r.phase, Phase::Superseded { by: "newer".into() });
        // Final states take no more events.
        let (same, actions) = step(r.clone(), Event::Resume { by: "x".into() });
        assert_eq!(same, r);
        assert!(actions.is_empty());
    }

    #[test]
    fn a_command_is_refused_exactly_when_step_would_change_nothing() {
        let phases = [
            Phase::Pending,
            Phase::Applying { batch: 0 },
            Phase::Baking { batch: 0 },
            Phase::Judging { batch: 0 },
            Phase::Waiting {
                batch: 1,
                reason: "closed".into(),
            },
            Phase::Paused {
                batch: 0,
                reason: "paused by x".into(),
            },
            Phase::RollingBack {
                reason: "aborted by x".into(),
            },
            Phase::Completed,
            Phase::RolledBack {
                reason: "aborted by x".into(),
            },
            Phase::Superseded { by: "newer".into() },
        ];
        let commands = [
            Event::Pause { by: "bob".into() },
            Event::Resume { by: "bob".into() },
            Event::Promote { by: "bob".into() },
            Event::Abort { by: "bob".into() },
            Event::Override {
                by: "bob".into(),
                reason: "INC-2".into(),
            },
        ];
        for overridden in [None, Some("alice: INC-1".to_owned())] {
            for phase in &phases {
                for command in &commands {
                    let mut r = Rollout::new(spec(OnFailure::Rollback));
                    r.phase = phase.clone();
                    r.window_override = overridden.clone();
                    r.touched.insert("a".into());
                    let (after, _) = step(r.clone(), command.clone());
                    assert_eq!(
                        refusal(&r, command).is_none(),
                        after != r,
                        "{phase:?} {command:?} overridden {overridden:?}"
                    );
                }
            }
        }
        // Not a person's command: never refused here.
        let r = Rollout::new(spec(OnFailure::Rollback));
        assert_eq!(refusal(&r, &Event::WindowOpened), None);
    }

    #[test]
    fn a_refusal_says_where_the_rollout_is_and_what_the_command_takes() {
        let mut r = Rollout::new(spec(OnFailure::Rollback));
        r.phase = Phase::Paused {
            batch: 0,
            reason: "paused by alice".into(),
        };
        assert_eq!(
            refusal(&r, &Event::Pause { by: "bob".into() }),
            Some(CommandRefused {
                command: "pause",
                why: "it is paused at batch 1 of 2 (paused by alice); pause takes a rollout that is applying, baking, judging or waiting".into()
            })
        );
        r.phase = Phase::Applying { batch: 1 };
        assert_eq!(
            refusal(&r, &Event::Promote { by: "bob".into() }).map(|c| c.why),
            Some("it is applying batch 2 of 2; promote takes a batch that is baking, judging or paused".into())
        );
        r.window_override = Some("alice: INC-1".into());
        assert_eq!(
            refusal(
                &r,
                &Event::Override {
                    by: "bob".into(),
                    reason: "again".into()
                }
            )
            .map(|c| c.why),
            Some("its rollout windows were already overridden (alice: INC-1); override is taken once per rollout".into())
        );
    }

    #[test]
    fn the_state_round_trips_through_json_for_the_journal() {
        let (r, _) = run(
            Rollout::new(spec(OnFailure::Rollback)),
            vec![Event::Begin, applied("a", "new")],
        );
        let text = serde_json::to_string(&r).unwrap();
        let back: Rollout = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.phase, Phase::Baking { batch: 0 });
    }
}
