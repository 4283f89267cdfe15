//! `cacheflow sync`: one staged rollout in the foreground against the directly managed
//! nodes, for a team without a server. The same reconciler as `serve` (rollout state
//! machine, gates, journal in the config repository's `refs/cacheflow/journal`), with
//! in-process agents for the nodes:
//!
//! ```text
//! validate the revision ─► read the nodes ─► show the plan ─► confirm (or --yes)
//!   ─► reconciler: canary, batches, gates ─► progress per event ─► summary, exit code
//! Ctrl-C: every rollout in flight is paused (journaled); `cacheflow sync` again resumes
//! ```

use std::collections::{BTreeSet, HashMap};
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::edges::audit::Journal;
use crate::edges::nodes::fleet::{self, SnapshotOptions, Target};
use crate::edges::nodes::NodeDriver;
use crate::edges::source::ConfigRepo;
use crate::flow::pipeline::{self, PipelineError, Revision};
use crate::flow::runtime::{self, DirectOptions};
use crate::pure::live::{LiveState, NodeLive};
use crate::pure::plan;
use crate::pure::reconciler::{ClusterState, State};
use crate::pure::rollout::{Event, Phase};
use crate::pure::spec::model::{Desired, Managed};

pub struct SyncOptions {
    pub rev: String,
    pub yes: bool,
    pub reach: SnapshotOptions,
    /// Time between the in-process agents' readings of idle nodes.
    pub interval: Duration,
    /// Start batches outside the rollout windows, for this reason (journaled).
    pub override_window: Option<String>,
    pub json: bool,
}

/// How a cluster ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOutcome {
    pub cluster: String,
    /// `completed`, `in-sync`, `rolled-back`, `paused`, `waiting` (outside the rollout
    /// windows), `refused`, `superseded`.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub revision: String,
    pub clusters: Vec<ClusterOutcome>,
    pub elapsed_ms: u64,
    /// Agent-managed nodes left to `cacheflow serve`.
    pub skipped_agent_nodes: usize,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.clusters
            .iter()
            .all(|c| c.outcome == "completed" || c.outcome == "in-sync")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Audit(#[from] crate::edges::audit::AuditError),
    #[error("not applied: {0}")]
    NotConfirmed(String),
    #[error("not applied: {0}")]
    Untrusted(String),
    #[error("{0}")]
    Other(String),
}

/// Only the directly managed nodes: the ones a foreground sync can reach.
fn direct_only(mut desired: Desired) -> (Desired, usize) {
    let mut skipped = 0;
    for c in desired.clusters.values_mut() {
        let before = c.nodes.len();
        c.nodes.retain(|n| n.managed == Managed::Direct);
        skipped += before - c.nodes.len();
    }
    (desired, skipped)
}

/// Run one sync. Prints the plan and progress to standard output (as text) and returns
/// the summary; `Err` when nothing was applied (invalid revision, not confirmed).
pub fn sync(repo: &ConfigRepo, options: SyncOptions) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let git_dir = repo.repository().path().to_path_buf();
    let rev = Revision::Rev(options.rev.clone());
    let desired = match pipeline::desired(repo, &rev) {
        Ok(d) => d,
        Err(e) => {
            // Journal the refusal too: the audit log says what was not applied and why.
            if let PipelineError::Invalid { revision, .. } = &e {
                // Not on a journal this build cannot read (a newer format): it would
                // be written over with an empty state.
                if let Some((mut journal, state)) = Journal::open(&git_dir)
                    .ok()
                    .and_then(|mut j| j.load().ok().map(|state| (j, state)))
                {
                    let state = state.unwrap_or_default();
                    let _ = journal.append(
                        &format!("{revision} refused by cacheflow sync: it is invalid"),
                        &state,
                    );
                }
            }
            return Err(e.into());
        }
    };
    let revision = desired.commit.clone().unwrap_or_default();
    // Commit trust, judged by the policy of the last revision taken (from the journal).
    let mut journal = Journal::open(&git_dir)?;
    let before: State = journal.load()?.unwrap_or_default();
    let policy = crate::edges::trust::policy(repo, before.head.as_deref(), &desired);
    if let Err(reason) = crate::edges::trust::check(repo.repository(), &revision, &policy) {
        journal.append(
            &format!(
                "revision {} refused by cacheflow sync: {reason}\nnothing applied",
                &revision[..revision.len().min(12)]
            ),
            &before,
        )?;
        return Err(SyncError::Untrusted(reason.to_string()));
    }
    let (desired, skipped) = direct_only(desired);
    let text = !options.json;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SyncError::Other(format!("cannot start the async runtime: {e}")))?;
    // One driver (one connection) per node, for the snapshot and then its agent.
    let mut drivers: HashMap<(String, String), Arc<dyn NodeDriver>> = HashMap::new();
    let targets: Vec<Target> = desired
        .clusters
        .values()
        .flat_map(|c| {
            let keep = Arc::new(c.parameters.keys().cloned().collect());
            c.nodes.iter().map(move |n| (c, n, Arc::clone(&keep)))
        })
        .map(|(c, n, keep)| {
            let driver = pipeline::driver_for(c, n, options.reach.timeout);
            drivers.insert((c.name.clone(), n.id.clone()), Arc::clone(&driver));
            Target {
                keep: Some(keep),
                ..Target::new(n.id.clone(), c.name.clone(), driver)
            }
        })
        .collect();
    let live: LiveState = runtime.block_on(fleet::snapshot(targets, options.reach));
    let planned = plan::plan(&desired, &live);

    let resumable: Vec<String> = before
        .clusters
        .iter()
        .filter(|(_, cs)| paused_at(cs, &revision) || waiting_at(cs, &revision))
        .map(|(name, _)| name.clone())
        .collect();

    if text {
        print!("{}", crate::pure::render::plan_text(&planned));
        if skipped > 0 {
            println!(
                "{skipped} agent-managed node(s) are left to `cacheflow serve`: sync drives directly managed nodes only."
            );
        }
        for name in &resumable {
            println!("{name}: a paused or waiting rollout of this revision goes on.");
        }
    }
    if planned.converged() && resumable.is_empty() {
        if text {
            println!("Nothing to do.");
        }
        return Ok(Summary {
            revision,
            clusters: desired
                .clusters
                .keys()
                .map(|c| ClusterOutcome {
                    cluster: c.clone(),
                    outcome: "in-sync".into(),
                    reason: None,
                    nodes: Vec::new(),
                })
                .collect(),
            elapsed_ms: started.elapsed().as_millis() as u64,
            skipped_agent_nodes: skipped,
        });
    }
    if !options.yes {
        confirm()?;
    }

    runtime.block_on(async move {
        let (handle, task) = runtime::start(journal, 0, None, true)?;
        let mut events = handle.events.subscribe();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |_| SyncError::Other("the reconciler stopped; see the journal".into());
        let names: Vec<String> = desired.clusters.keys().cloned().collect();
        // The agents start after the revision: before it, no node is declared.
        let clusters = desired.clusters.clone();
        let mut first_readings: HashMap<String, NodeLive> = live
            .nodes
            .iter()
            .filter(|(_, l)| l.reachable)
            .map(|(id, l)| (id.clone(), l.clone()))
            .collect();
        handle.revision(desired, Some(live)).await.map_err(stopped)?;
        let mut agents = Vec::new();
        for c in clusters.values() {
            let declared: Arc<BTreeSet<String>> = Arc::new(c.parameters.keys().cloned().collect());
            for n in &c.nodes {
                let key = (c.name.clone(), n.id.clone());
                let driver = drivers
                    .remove(&key)
                    .unwrap_or_else(|| pipeline::driver_for(c, n, options.reach.timeout));
                agents.push(handle.spawn_direct_agent(
                    n.id.clone(),
                    driver,
                    DirectOptions {
                        interval: options.interval,
                        timeout: options.reach.timeout,
                        // Read a moment ago: the first report needs no second reading.
                        first_reading: first_readings.remove(&n.id),
                        declared: Some(Arc::clone(&declared)),
                    },
                    stop_rx.clone(),
                ));
            }
        }

        for name in &resumable {
            let event = if before.clusters.get(name).is_some_and(|cs| waiting_at(cs, &revision)) {
                Event::WindowOpened
            } else {
                Event::Resume {
                    by: "cacheflow sync".into(),
                }
            };
            let _ = handle.command(name, event).await;
        }
        if let Some(reason) = &options.override_window {
            let state = handle.state().await.map_err(stopped)?;
            for name in &names {
                if state.clusters.get(name).is_some_and(|cs| waiting_at(cs, &revision)) {
                    let by = format!("{} (cacheflow sync)", user());
                    let reason = reason.clone();
                    let _ = handle.command(name, Event::Override { by, reason }).await;
                }
            }
        }
        let mut interrupted = false;
        loop {
            let state = handle.state().await.map_err(stopped)?;
            if names
                .iter()
                .all(|n| state.clusters.get(n).is_none_or(|cs| !in_flight(cs)))
            {
                break;
            }
            tokio::select! {
                line = events.recv() => {
                    if let (true, Ok(line)) = (text, line) {
                        progress(&line, &handle.state().await.map_err(stopped)?, started);
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = tokio::signal::ctrl_c(), if !interrupted => {
                    interrupted = true;
                    for n in &names {
                        let _ = handle.command(n, Event::Pause { by: "ctrl-c".into() }).await;
                    }
                    break;
                }
            }
        }
        // Show the last lines (the final journal entries).
        while let Ok(line) = events.try_recv() {
            if text {
                progress(&line, &handle.state().await.map_err(stopped)?, started);
            }
        }
        let state = handle.state().await.map_err(stopped)?;
        let _ = stop_tx.send(true);
        for a in agents {
            let _ = a.await;
        }
        handle.stop().await;
        drop(handle);
        let _ = task.await;
        let clusters: Vec<ClusterOutcome> = names
            .iter()
            .map(|n| outcome(n, state.clusters.get(n), before.clusters.get(n), &revision))
            .collect();
        let summary = Summary {
            revision: revision.clone(),
            clusters,
            elapsed_ms: started.elapsed().as_millis() as u64,
            skipped_agent_nodes: skipped,
        };
        if text {
            print_summary(&summary);
            if summary.clusters.iter().any(|c| c.outcome == "waiting") {
                println!(
                    "Outside the rollout windows: nothing more is started. Run `cacheflow sync --rev {}` again once they open, or add --override-window REASON to roll out now (the reason is journaled).",
                    &revision[..revision.len().min(12)]
                );
            }
            if interrupted {
                println!(
                    "Interrupted: rollouts in flight are paused (nodes keep what they run). Run `cacheflow sync --rev {}` again to resume.",
                    &revision[..revision.len().min(12)]
                );
            }
        }
        Ok(summary)
    })
}

/// A rollout the foreground sync waits for: not final, not paused, not waiting for a
/// window (which may be hours away).
fn in_flight(cs: &ClusterState) -> bool {
    cs.rollout.as_ref().is_some_and(|r| {
        !r.rollout.phase.is_final()
            && !matches!(
                r.rollout.phase,
                Phase::Paused { .. } | Phase::Waiting { .. }
            )
    })
}

fn waiting_at(cs: &ClusterState, revision: &str) -> bool {
    cs.rollout.as_ref().is_some_and(|r| {
        r.rollout.spec.revision == revision && matches!(r.rollout.phase, Phase::Waiting { .. })
    })
}

/// Who runs this sync, for the journal.
fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into())
}

fn paused_at(cs: &ClusterState, revision: &str) -> bool {
    cs.rollout.as_ref().is_some_and(|r| {
        r.rollout.spec.revision == revision && matches!(r.rollout.phase, Phase::Paused { .. })
    })
}

/// How `name` ended, from the state after the sync (`cs`) and before it (`was`).
fn outcome(
    name: &str,
    cs: Option<&ClusterState>,
    was: Option<&ClusterState>,
    revision: &str,
) -> ClusterOutcome {
    let mut out = ClusterOutcome {
        cluster: name.to_owned(),
        outcome: "in-sync".into(),
        reason: None,
        nodes: Vec::new(),
    };
    let Some(cs) = cs else { return out };
    let refused = cs
        .refused
        .as_ref()
        .filter(|r| cs.target.as_ref().is_some_and(|t| t.digest == r.digest));
    if let Some(r) = refused {
        out.outcome = "refused".into();
        out.reason = Some(if r.revision == revision {
            r.reason.clone()
        } else {
            format!(
                "revision {} with the same content was rolled back ({}); it stays refused until the cluster changes",
                &r.revision[..r.revision.len().min(12)],
                r.reason
            )
        });
    }
    // Refused before this sync began: nothing was tried now.
    let refused_before = refused.is_some() && was.and_then(|w| w.refused.as_ref()) == refused;
    if let Some(rec) = cs
        .rollout
        .as_ref()
        .filter(|r| r.rollout.spec.revision == revision && !refused_before)
    {
        out.nodes = rec.rollout.touched.iter().cloned().collect();
        let (o, reason) = match &rec.rollout.phase {
            Phase::Completed => ("completed", None),
            Phase::RolledBack { reason } => ("rolled-back", Some(reason.clone())),
            Phase::Paused { reason, .. } => ("paused", Some(reason.clone())),
            Phase::Waiting { reason, .. } => ("waiting", Some(reason.clone())),
            Phase::Superseded { by } => ("superseded", Some(format!("by {by}"))),
            other => ("in-progress", Some(format!("{other:?}"))),
        };
        out.outcome = o.into();
        out.reason = reason;
    }
    out
}

fn progress(line: &str, state: &State, started: Instant) {
    let first = line.lines().next().unwrap_or(line);
    let ms = started.elapsed().as_millis();
    let mut out = format!("{ms:>6} ms  {first}");
    // A bar for the cluster the line is about.
    if let Some((cluster, _)) = first.split_once(": ") {
        if let Some(rec) = state.clusters.get(cluster).and_then(|c| c.rollout.as_ref()) {
            let total: usize = rec.rollout.spec.batches.iter().map(Vec::len).sum();
            let done = state.clusters[cluster]
                .assignments
                .iter()
                .filter(|(id, a)| {
                    rec.rollout.touched.contains(*id)
                        && a.revision == rec.rollout.spec.revision
                        && a.outcome == Some(crate::pure::protocol::Outcome::Applied)
                })
                .count();
            let width = 20;
            if let Some(filled) = (done * width).checked_div(total) {
                out.push_str(&format!(
                    "\n           [{}{}] {done}/{total} nodes",
                    "#".repeat(filled),
                    "-".repeat(width - filled)
                ));
            }
        }
    }
    println!("{out}");
    let _ = std::io::stdout().flush();
}

fn print_summary(s: &Summary) {
    println!(
        "\nSummary of {} ({} ms):",
        &s.revision[..s.revision.len().min(12)],
        s.elapsed_ms
    );
    for c in &s.clusters {
        let nodes = if c.nodes.is_empty() {
            String::new()
        } else {
            format!(" ({} node(s): {})", c.nodes.len(), c.nodes.join(", "))
        };
        let reason = c
            .reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default();
        println!("  {}: {}{reason}{nodes}", c.cluster, c.outcome);
    }
}

fn confirm() -> Result<(), SyncError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(SyncError::NotConfirmed(
            "standard input is not a terminal; give --yes to apply without asking".into(),
        ));
    }
    print!("Apply this plan? [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    stdin
        .read_line(&mut answer)
        .map_err(|e| SyncError::Other(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(SyncError::NotConfirmed("the plan was not confirmed".into()))
    }
}
