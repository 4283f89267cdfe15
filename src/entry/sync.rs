//! `cacheflow sync`: one staged rollout in the foreground against the directly managed
//! nodes, for a team without a server. The same reconciler as `serve` (rollout state
//! machine, gates, journal in the config repository's `refs/cacheflow/journal`), with
//! in-process agents for the nodes:
//!
//! ```text
//! the intake (resolve, descends from the last good revision, load, trust; a refusal
//!   goes to the reconciler, journaled as `serve` journals it)
//!   ─► read the nodes ─► show the plan ─► confirm (or --yes)
//!   ─► Host: reconciler and agents: canary, batches, gates ─► progress per event (on a
//!      terminal: one line per cluster, redrawn, with the bake's countdown)
//!   ─► summary, exit code
//! Ctrl-C, SIGTERM or SIGHUP: every rollout in flight is paused (journaled); `cacheflow sync`
//! again resumes
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::edges::audit::Journal;
use crate::edges::nodes::fleet::{self, SnapshotOptions, Target};
use crate::edges::nodes::NodeDriver;
use crate::edges::source::ConfigRepo;
use crate::entry::output::{out, outln};
use crate::flow::pipeline::intake::{self, IntakeError, Outcome, Refusal};
use crate::flow::pipeline::{self, PipelineError};
use crate::flow::runtime::{DirectOptions, Handle, Host, HostOptions};
use crate::pure::live::{LiveState, NodeLive};
use crate::pure::plan;
use crate::pure::reconciler::status::{ClusterStatus, Status};
use crate::pure::reconciler::State;
use crate::pure::render::{short_id, Decor, Mark};
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
    /// Only this cluster: only its nodes are read, planned and driven. The revision is
    /// taken whole (the journal's head), so the other clusters' rollouts wait for their
    /// nodes: the next sync without `cluster` rolls them out.
    pub cluster: Option<String>,
    /// How the plan looks (marks and colours on a terminal).
    pub decor: Decor,
    /// Standard output is a terminal: one progress line per cluster, redrawn in place
    /// with the bake countdown, under the journal's lines.
    pub live: bool,
}

/// How a cluster ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOutcome {
    pub cluster: String,
    /// `completed`, `in-sync`, `rolled-back`, `paused`, `waiting` (outside the rollout
    /// windows), `refused`, `superseded`, `unreached` (nodes that could not be read and
    /// got nothing: never "in sync").
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
    /// The head was refused (journaled through the reconciler, as `serve` does).
    #[error("not applied: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Host(#[from] crate::flow::runtime::HostError),
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

/// One driver (one connection) per node, for the snapshot and then its agent.
type Drivers = HashMap<(String, String), Arc<dyn NodeDriver>>;

/// What a sync goes on with once its head is taken and its nodes read.
struct Run {
    started: Instant,
    revision: String,
    drivers: Drivers,
    /// The journal's state before this sync, as readers see it.
    before: Status,
    /// Clusters whose paused or waiting rollout of this revision goes on.
    resumable: Vec<String>,
    skipped: usize,
    /// The nodes that could not be read, by cluster: `id (why)`.
    unreached: BTreeMap<String, Vec<(String, String)>>,
}

/// Run one sync. Prints the plan and progress to standard output (as text) and returns
/// the summary; `Err` when nothing was applied (refused revision, not confirmed).
pub fn sync(repo: &ConfigRepo, options: SyncOptions) -> Result<Summary, SyncError> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| SyncError::Other(format!("cannot start the async runtime: {e}")))?;
    let mut journal = Journal::open(repo.repository().path())?;
    let before: State = journal.load()?.unwrap_or_default();
    let desired = match intake(repo, &options.rev, &before) {
        Ok(desired) => desired,
        Err(Intake::Refused(refusal)) => {
            runtime.block_on(refuse(journal, &refusal))?;
            return Err(refused(refusal));
        }
        Err(Intake::Failed(e)) => return Err(e),
    };
    let (desired, skipped) = direct_only(desired);
    let scope = scope(&desired, options.cluster.as_deref())?;
    let shown = scope.as_ref().unwrap_or(&desired);
    let missing = pipeline::missing_secrets(shown.clusters.values(), true);
    if !missing.is_empty() {
        return Err(PipelineError::MissingSecrets(missing).into());
    }
    let revision = desired.commit.clone().unwrap_or_default();
    let (live, drivers) = runtime.block_on(read_nodes(shown, options.reach));
    let unreached = unreached(shown, &live);
    let before = Status::of(&before);
    let resumable: Vec<String> = before
        .clusters
        .iter()
        .filter(|(name, _)| shown.clusters.contains_key(*name))
        .filter(|(_, cs)| paused_at(cs, &revision) || waiting_at(cs, &revision))
        .map(|(name, _)| name.clone())
        .collect();
    let run = Run {
        started,
        revision,
        drivers,
        before,
        resumable,
        skipped,
        unreached,
    };
    let text = (!options.json).then_some(options.decor);
    if !show_plan(&run, shown, &live, text) {
        return Ok(in_sync(&run, shown));
    }
    if !options.yes {
        confirm()?;
    }
    let names: Vec<String> = shown.clusters.keys().cloned().collect();
    drop(scope);
    runtime.block_on(roll_out(journal, run, desired, names, live, &options))
}

/// With `--cluster NAME`: the revision with only that cluster, for reading, planning and
/// driving its nodes (`None`: every cluster).
fn scope(desired: &Desired, only: Option<&str>) -> Result<Option<Desired>, SyncError> {
    let Some(name) = only else { return Ok(None) };
    let Some(cluster) = desired.clusters.get(name) else {
        return Err(SyncError::Other(format!(
            "no cluster `{name}` in revision {}",
            short_id(desired.commit.as_deref().unwrap_or("?"))
        )));
    };
    let mut one = Desired {
        clusters: Default::default(),
        ..desired.clone()
    };
    one.clusters.insert(name.to_owned(), cluster.clone());
    Ok(Some(one))
}

/// Why the intake did not give a head to roll out.
enum Intake {
    Refused(Refusal),
    Failed(SyncError),
}

/// The head of `rev` through the one intake, judged against the last good revision of
/// the journal (`before.head`).
fn intake(repo: &ConfigRepo, rev: &str, before: &State) -> Result<Desired, Intake> {
    match intake::take(repo, rev, before.head.as_deref(), None) {
        Outcome::Valid(taken) => Ok(*taken.desired),
        Outcome::Refused(r) => Err(Intake::Refused(r)),
        Outcome::FetchFailed(IntakeError::Resolve { source, .. } | IntakeError::Read(source)) => {
            Err(Intake::Failed(PipelineError::Source(source).into()))
        }
        Outcome::FetchFailed(e) => Err(Intake::Failed(SyncError::Other(e.to_string()))),
        Outcome::Unchanged { head } => Err(Intake::Failed(SyncError::Other(format!(
            "{head}: nothing to take"
        )))),
    }
}

/// Journal (and notify) a refused head through the reconciler: the same input `serve`
/// gives it, so the words are the same.
async fn refuse(journal: Journal, refusal: &Refusal) -> Result<(), SyncError> {
    let host = Host::start(journal, HostOptions::default())?;
    let refused = host
        .handle()
        .refuse(refusal.head(), &refusal.reason())
        .await;
    host.stop().await?;
    refused.map_err(|_| SyncError::Other("the reconciler stopped; see the journal".into()))
}

/// The error a refusal ends `sync` with: an invalid head lists its diagnostics.
fn refused(refusal: Refusal) -> SyncError {
    match refusal {
        Refusal::Invalid { head, diagnostics } => SyncError::Pipeline(PipelineError::Invalid {
            revision: format!("revision {}", crate::pure::render::short(Some(&head))),
            diagnostics,
        }),
        other => SyncError::Refused(other),
    }
}

/// Read every node of `desired` at once, keeping the drivers for the agents.
async fn read_nodes(desired: &Desired, reach: SnapshotOptions) -> (LiveState, Drivers) {
    let mut drivers: Drivers = HashMap::new();
    let targets: Vec<Target> = desired
        .clusters
        .values()
        .flat_map(|c| {
            let keep = Arc::new(c.parameters.keys().cloned().collect());
            c.nodes.iter().map(move |n| (c, n, Arc::clone(&keep)))
        })
        .map(|(c, n, keep)| {
            let driver = pipeline::driver_for(c, n, reach.timeout);
            drivers.insert((c.name.clone(), n.id.clone()), Arc::clone(&driver));
            Target {
                keep: Some(keep),
                ..Target::new(n.id.clone(), c.name.clone(), driver)
            }
        })
        .collect();
    (fleet::snapshot(targets, reach).await, drivers)
}

/// Print the plan (as text, decorated as given; `None`: not at all); `false` when
/// there is nothing to do.
fn show_plan(run: &Run, desired: &Desired, live: &LiveState, text: Option<Decor>) -> bool {
    let planned = plan::plan(desired, live);
    if let Some(decor) = text {
        out!("{}", crate::pure::render::plan_text_with(&planned, decor));
        if run.skipped > 0 {
            outln!(
                "{} agent-managed node(s) are left to `cacheflow serve`: sync drives directly managed nodes only.",
                run.skipped
            );
        }
        for name in &run.resumable {
            outln!("{name}: a paused or waiting rollout of this revision goes on.");
        }
    }
    let todo = !planned.converged() || !run.resumable.is_empty();
    if !todo && text.is_some() {
        outln!("Nothing to do.");
    }
    todo
}

/// The declared nodes the reading before the sync could not read, by cluster.
fn unreached(desired: &Desired, live: &LiveState) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for c in desired.clusters.values() {
        for n in &c.nodes {
            let why = match live.nodes.get(&n.id) {
                Some(l) if l.reachable => continue,
                Some(l) => l.error.clone().unwrap_or_else(|| "unreachable".into()),
                None => "not read".into(),
            };
            out.entry(c.name.clone())
                .or_default()
                .push((n.id.clone(), why));
        }
    }
    out
}

/// A cluster whose nodes could not be read and that got nothing is not "in sync":
/// `unreached`, with the nodes and why (the sync then exits 1).
fn mark_unreached(
    mut summary: Summary,
    unreached: &BTreeMap<String, Vec<(String, String)>>,
) -> Summary {
    for c in &mut summary.clusters {
        let Some(nodes) = unreached.get(&c.cluster) else {
            continue;
        };
        if c.outcome != "in-sync" {
            continue;
        }
        c.outcome = "unreached".into();
        c.reason = Some(format!(
            "{} node(s) could not be read, so nothing is known of them: {}",
            nodes.len(),
            nodes
                .iter()
                .map(|(id, why)| format!("{id} ({why})"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        c.nodes = nodes.iter().map(|(id, _)| id.clone()).collect();
    }
    summary
}

/// The summary when every cluster already runs the revision.
fn in_sync(run: &Run, desired: &Desired) -> Summary {
    Summary {
        revision: run.revision.clone(),
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
        elapsed_ms: run.started.elapsed().as_millis() as u64,
        skipped_agent_nodes: run.skipped,
    }
}

fn stopped(_: crate::flow::runtime::Stopped) -> SyncError {
    SyncError::Other("the reconciler stopped; see the journal".into())
}

/// The rollout: the reconciler and an agent per node ([`Host`]), the revision, the
/// rollouts to resume or override, then watch until none is in flight.
async fn roll_out(
    journal: Journal,
    mut run: Run,
    desired: Desired,
    names: Vec<String>,
    live: LiveState,
    options: &SyncOptions,
) -> Result<Summary, SyncError> {
    // From before the first node is told anything: a stop pauses, never cuts.
    let stops = Stops::listen();
    let host = Host::start(
        journal,
        HostOptions {
            correct_drift: true,
            ..HostOptions::default()
        },
    )?;
    let handle = host.handle().clone();
    let mut events = handle.events.subscribe();
    // The agents start after the revision: before it, no node is declared. Only the
    // clusters in scope get them.
    let clusters: Vec<_> = names
        .iter()
        .filter_map(|n| desired.clusters.get(n).cloned())
        .collect();
    let mut first_readings: HashMap<String, NodeLive> = live
        .nodes
        .iter()
        .filter(|(_, l)| l.reachable)
        .map(|(id, l)| (id.clone(), l.clone()))
        .collect();
    handle
        .revision(desired, Some(live))
        .await
        .map_err(stopped)?;
    for c in &clusters {
        let declared: Arc<BTreeSet<String>> = Arc::new(c.parameters.keys().cloned().collect());
        for n in &c.nodes {
            let driver = run
                .drivers
                .remove(&(c.name.clone(), n.id.clone()))
                .unwrap_or_else(|| pipeline::driver_for(c, n, options.reach.timeout));
            let direct = DirectOptions {
                interval: options.interval,
                timeout: options.reach.timeout,
                // Read a moment ago: the first report needs no second reading.
                first_reading: first_readings.remove(&n.id),
                declared: Some(Arc::clone(&declared)),
                apply: None,
            };
            host.drive(&n.id, driver, direct);
        }
    }
    go_on(&handle, &run, &names, options.override_window.as_deref()).await?;
    let display = match (options.json, options.live) {
        (true, _) => Display::Quiet,
        (false, false) => Display::Lines,
        (false, true) => Display::Board(Board::new(&names, options.decor)),
    };
    let interrupted = watch(&handle, &mut events, &names, run.started, display, stops).await?;
    let state = handle.status().map_err(stopped)?;
    drop(handle);
    // The journal's outcome is the reconciler's: a failed write ended it already.
    let _ = host.stop().await;
    let summary = Summary {
        revision: run.revision.clone(),
        clusters: names
            .iter()
            .map(|n| {
                outcome(
                    n,
                    state.clusters.get(n).map(|cs| &**cs),
                    run.before.clusters.get(n).map(|cs| &**cs),
                    &run.revision,
                )
            })
            .collect(),
        elapsed_ms: run.started.elapsed().as_millis() as u64,
        skipped_agent_nodes: run.skipped,
    };
    let summary = mark_unreached(summary, &run.unreached);
    if !options.json {
        print_end(&summary, interrupted);
    }
    Ok(summary)
}

/// Resume the paused rollouts of this revision, open the waiting ones, and override the
/// rollout windows of the waiting ones when asked (with the reason, journaled).
async fn go_on(
    handle: &Handle,
    run: &Run,
    names: &[String],
    override_window: Option<&str>,
) -> Result<(), SyncError> {
    let revision = &run.revision;
    for name in &run.resumable {
        let waiting = run
            .before
            .clusters
            .get(name)
            .is_some_and(|cs| waiting_at(cs, revision));
        let event = if waiting {
            Event::WindowOpened
        } else {
            Event::Resume {
                by: "cacheflow sync".into(),
            }
        };
        let _ = handle.command(name, event).await;
    }
    if let Some(reason) = override_window {
        let state = handle.status().map_err(stopped)?;
        for name in names {
            if state
                .clusters
                .get(name)
                .is_some_and(|cs| waiting_at(cs, revision))
            {
                let by = format!("{} (cacheflow sync)", user());
                let reason = reason.to_owned();
                let _ = handle.command(name, Event::Override { by, reason }).await;
            }
        }
    }
    Ok(())
}

/// How progress is shown.
enum Display {
    /// Nothing (`--format json`).
    Quiet,
    /// A line per journal event, with a bar for its cluster: pipes, files and CI.
    Lines,
    /// On a terminal: the journal's lines scroll above one line per cluster, redrawn in
    /// place.
    Board(Board),
}

impl Display {
    /// A journal line.
    fn event(&mut self, line: &str, state: &Status, started: Instant) {
        match self {
            Display::Quiet => {}
            Display::Lines => progress(line, state, started),
            Display::Board(board) => {
                let first = line.lines().next().unwrap_or(line);
                let ms = started.elapsed().as_millis();
                board.draw(state, Some(&format!("{ms:>6} ms  {first}")));
            }
        }
    }

    /// Time passes: the countdowns move.
    fn tick(&mut self, state: &Status) {
        if let Display::Board(board) = self {
            board.draw(state, None);
        }
    }
}

/// One line per cluster on a terminal: a bar of the nodes applied, the phase, the batch
/// and, while baking, the time left.
struct Board {
    names: Vec<String>,
    decor: Decor,
    /// Lines drawn last time (erased before the next drawing).
    drawn: usize,
}

impl Board {
    fn new(names: &[String], decor: Decor) -> Board {
        Board {
            names: names.to_vec(),
            decor,
            drawn: 0,
        }
    }

    /// Erase the last drawing, print `above` (a journal line) if any, draw again.
    fn draw(&mut self, state: &Status, above: Option<&str>) {
        let mut out = String::new();
        if self.drawn > 0 {
            // Up to the first line drawn, and clear from there down.
            out.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        if let Some(line) = above {
            out.push_str(line);
            out.push('\n');
        }
        let width = self.names.iter().map(String::len).max().unwrap_or(0);
        for name in self.names.clone() {
            let line = self.line(&name, state.clusters.get(&name).map(|c| &**c), width);
            self.decor.line(
                &mut out,
                "",
                mark_of(state.clusters.get(&name).map(|c| &**c)),
                &line,
            );
        }
        self.drawn = self.names.len();
        out!("{out}");
    }

    /// `cache  [#######-------------] 2/6 nodes  baking batch 1 of 3, 4s left`
    fn line(&mut self, name: &str, cs: Option<&ClusterStatus>, width: usize) -> String {
        let Some((cs, rec, progress)) =
            cs.and_then(|cs| Some((cs, cs.rollout.as_ref()?, cs.progress.as_ref()?)))
        else {
            return format!("{name:<width$}  waiting for its first rollout");
        };
        let done = applied(cs, rec);
        let total = progress.nodes;
        let bar_width = 20;
        let filled = (done * bar_width).checked_div(total).unwrap_or(0);
        let batch = rec
            .batch
            .map(|b| format!(" batch {b} of {}", rec.batches))
            .unwrap_or_default();
        let left = match (&progress.phase, progress.bake_until_ms) {
            (Phase::Baking { .. }, Some(until)) => {
                let left_ms = until.saturating_sub(crate::edges::clock::now_ms());
                format!(", {}s left", left_ms.div_ceil(1000))
            }
            _ => String::new(),
        };
        let reason = match &progress.phase {
            Phase::Paused { .. } | Phase::RollingBack { .. } | Phase::RolledBack { .. } => rec
                .reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        format!(
            "{name:<width$}  [{}{}] {done}/{total} nodes  {} {}{batch}{left}{reason}",
            "#".repeat(filled),
            "-".repeat(bar_width - filled),
            short_id(&rec.revision),
            rec.phase,
        )
    }
}

/// A cluster's line on the board: green completed, red rolled back, yellow otherwise.
fn mark_of(cs: Option<&ClusterStatus>) -> Mark {
    match cs.and_then(|cs| cs.progress.as_ref()).map(|p| &p.phase) {
        Some(Phase::Completed) => Mark::Add,
        Some(Phase::RolledBack { .. } | Phase::RollingBack { .. }) => Mark::Remove,
        _ => Mark::Change,
    }
}

/// The nodes of the rollout that applied its revision.
fn applied(cs: &ClusterStatus, rec: &crate::pure::reconciler::status::RolloutStatus) -> usize {
    cs.assignments
        .iter()
        .filter(|(id, a)| {
            rec.touched.contains(*id)
                && a.revision == rec.revision
                && a.outcome == Some(crate::pure::protocol::Outcome::Applied)
        })
        .count()
}

/// What stops a foreground sync: Ctrl-C, SIGTERM (`kill`, a cancelled CI job) or
/// SIGHUP (the terminal closed, the SSH session dropped). Each pauses the rollouts in
/// flight, journaled, where the signal's default would cut the process off mid-batch.
struct Stops {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Stops {
    /// Listen from now on (a signal that cannot be listened to keeps its default).
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Stops {
                interrupt: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
                hangup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Stops {}
    }

    /// The next stop, by the name the journal gives it (`paused by SIGTERM`).
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        async fn on(signal: Option<&mut tokio::signal::unix::Signal>) {
            match signal {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        #[cfg(unix)]
        tokio::select! {
            () = on(self.interrupt.as_mut()) => "ctrl-c",
            () = on(self.term.as_mut()) => "SIGTERM",
            () = on(self.hangup.as_mut()) => "SIGHUP",
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "ctrl-c"
        }
    }
}

/// Show progress until no rollout of `names` is in flight; Ctrl-C, SIGTERM or SIGHUP
/// pauses them all ([`Stops`]). `true` when interrupted.
async fn watch(
    handle: &Handle,
    events: &mut tokio::sync::broadcast::Receiver<String>,
    names: &[String],
    started: Instant,
    mut display: Display,
    mut stops: Stops,
) -> Result<bool, SyncError> {
    let mut interrupted = false;
    loop {
        let state = handle.status().map_err(stopped)?;
        if names
            .iter()
            .all(|n| state.clusters.get(n).is_none_or(|cs| !in_flight(cs)))
        {
            break;
        }
        tokio::select! {
            line = events.recv() => {
                if let Ok(line) = line {
                    display.event(&line, &*handle.status().map_err(stopped)?, started);
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                display.tick(&*handle.status().map_err(stopped)?);
            }
            by = stops.next(), if !interrupted => {
                interrupted = true;
                for n in names {
                    let _ = handle.command(n, Event::Pause { by: by.into() }).await;
                }
                break;
            }
        }
    }
    // Show the last lines (the final journal entries).
    while let Ok(line) = events.try_recv() {
        display.event(&line, &*handle.status().map_err(stopped)?, started);
    }
    display.tick(&*handle.status().map_err(stopped)?);
    Ok(interrupted)
}

/// The summary, and what to do next when a rollout waits or was interrupted.
fn print_end(summary: &Summary, interrupted: bool) {
    let short = short_id(&summary.revision);
    print_summary(summary);
    if summary.clusters.iter().any(|c| c.outcome == "waiting") {
        outln!(
            "Waiting: nothing more is started (the reason is above). Run `cacheflow sync --rev {short}` again once it has passed; outside the rollout windows, --override-window REASON rolls out now (the reason is journaled; it does not override Sentinels that disagree)."
        );
    }
    if interrupted {
        outln!(
            "Interrupted: rollouts in flight are paused (nodes keep what they run). Run `cacheflow sync --rev {short}` again to resume."
        );
    }
}

/// A rollout the foreground sync waits for: not final, not paused, not waiting for a
/// window (which may be hours away).
fn in_flight(cs: &ClusterStatus) -> bool {
    cs.progress.as_ref().is_some_and(|p| {
        !p.phase.is_final() && !matches!(p.phase, Phase::Paused { .. } | Phase::Waiting { .. })
    })
}

/// The phase of `cs`'s rollout when it rolls out `revision`.
fn phase_at<'a>(cs: &'a ClusterStatus, revision: &str) -> Option<&'a Phase> {
    cs.rollout.as_ref().filter(|r| r.revision == revision)?;
    cs.progress.as_ref().map(|p| &p.phase)
}

fn waiting_at(cs: &ClusterStatus, revision: &str) -> bool {
    matches!(phase_at(cs, revision), Some(Phase::Waiting { .. }))
}

/// Who runs this sync, for the journal.
fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into())
}

fn paused_at(cs: &ClusterStatus, revision: &str) -> bool {
    matches!(phase_at(cs, revision), Some(Phase::Paused { .. }))
}

/// How `name` ended, from the state after the sync (`cs`) and before it (`was`).
fn outcome(
    name: &str,
    cs: Option<&ClusterStatus>,
    was: Option<&ClusterStatus>,
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
                short_id(&r.revision),
                r.reason
            )
        });
    }
    // Refused before this sync began: nothing was tried now.
    let refused_before = refused.is_some() && was.and_then(|w| w.refused.as_ref()) == refused;
    let rollout = cs
        .rollout
        .as_ref()
        .zip(cs.progress.as_ref())
        .filter(|(r, _)| r.revision == revision && !refused_before);
    if let Some((rec, progress)) = rollout {
        out.nodes = rec.touched.iter().cloned().collect();
        // The rollout's phase and reason as the status API says them, when it ended or
        // stopped; the phase as the reconciler holds it otherwise.
        let (o, reason) = match &progress.phase {
            Phase::Completed
            | Phase::RolledBack { .. }
            | Phase::Paused { .. }
            | Phase::Waiting { .. }
            | Phase::Superseded { .. } => (rec.phase.as_str(), rec.reason.clone()),
            other => ("in-progress", Some(format!("{other:?}"))),
        };
        out.outcome = o.into();
        out.reason = reason;
    }
    out
}

fn progress(line: &str, state: &Status, started: Instant) {
    let first = line.lines().next().unwrap_or(line);
    let ms = started.elapsed().as_millis();
    let mut out = format!("{ms:>6} ms  {first}");
    // A bar for the cluster the line is about.
    if let Some((cluster, _)) = first.split_once(": ") {
        let cs = state.clusters.get(cluster);
        if let Some((cs, rec, total)) = cs.and_then(|cs| {
            let rec = cs.rollout.as_ref()?;
            Some((cs, rec, cs.progress.as_ref()?.nodes))
        }) {
            let done = applied(cs, rec);
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
    outln!("{out}");
}

fn print_summary(s: &Summary) {
    outln!(
        "\nSummary of {} ({} ms):",
        short_id(&s.revision),
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
        outln!("  {}: {}{reason}{nodes}", c.cluster, c.outcome);
    }
}

fn confirm() -> Result<(), SyncError> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(SyncError::NotConfirmed(
            "standard input is not a terminal; give --yes to apply without asking".into(),
        ));
    }
    out!("Apply this plan? [y/N] ");
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
