//! The reconciler's runtime: one task owns the [`Reconciler`] and takes its inputs from
//! a channel (reports, revisions, timers, commands), writes the journal entry of each
//! input before it answers (write-ahead), starts timers as tasks and wakes the
//! in-process agents of directly managed nodes when their assignment changes.
//!
//! After each entry is written the runtime publishes the reconciler's [`Status`] (a
//! `watch` of an `Arc`): the API, `/metrics` and progress displays read it without
//! sending anything to the task.
//!
//! Directly managed nodes get an in-process agent: the loop of `cacheflow agent`
//! ([`crate::flow::agent::drive`]: read the node, report, apply a new (revision,
//! generation) once, report again) with a [`Reporter`] that sends through the channel
//! instead of HTTP, so both kinds of node follow one assignment path. An in-process agent
//! starts remembering the assignment its node already reported on (from the resumed
//! state), so a restart applies nothing by itself. [`Host`] starts the task and stops it
//! with its agents.
//!
//! Clusters that name Sentinels (`spec.sentinel`) have them asked about their primary
//! twice a second by one task, started with the first such revision; the answers go to
//! the reconciler like any input, and a failover of such a cluster goes through them.

pub mod host;

pub use host::{Host, HostError, HostOptions};

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};

use crate::edges::audit::{AuditError, EntryMaker, Journal, Prepared, ENTRY_TRAILER};
use crate::edges::etcd::election::Leadership;
use crate::edges::etcd::journal::{FencedJournal, JournalError};
use crate::edges::metrics::Metrics;
use crate::edges::nodes::NodeDriver;
use crate::flow::agent::{AgentState, ApplyOptions, LoopOptions, Reporter, Unreported};
use crate::pure::live::{LiveState, NodeLive};
use crate::pure::protocol::{Assignment, Outcome, Report};
use crate::pure::reconciler::status::Status;
use crate::pure::reconciler::{Effect, Reconciler, Record, RefusedInput, State};
use crate::pure::rollout::Event;
use crate::pure::spec::model::{Desired, Sentinel};
use crate::pure::topology::FailoverMethod;

enum Msg {
    Report {
        node: String,
        report: Box<Report>,
        reply: oneshot::Sender<Result<Assignment, RefusedInput>>,
    },
    Revision {
        desired: Box<Desired>,
        live: Option<Box<LiveState>>,
        reply: oneshot::Sender<()>,
    },
    Refuse {
        revision: String,
        reason: String,
        reply: oneshot::Sender<()>,
    },
    Timer {
        cluster: String,
        event: Event,
        run: u64,
    },
    Command {
        cluster: String,
        event: Event,
        reply: oneshot::Sender<Result<(), RefusedInput>>,
    },
    Retry {
        cluster: String,
        by: String,
        reason: String,
        reply: oneshot::Sender<Result<(), RefusedInput>>,
    },
    Inspect {
        reply: oneshot::Sender<State>,
    },
    Head {
        reply: oneshot::Sender<Option<String>>,
    },
    DriftInputs {
        silent_after_ms: u64,
        reply: oneshot::Sender<crate::pure::reconciler::DriftInputs>,
    },
    Readings {
        silent_after_ms: u64,
        reply: oneshot::Sender<LiveState>,
    },
    Correct {
        clusters: Vec<String>,
        reply: oneshot::Sender<()>,
    },
    /// What a cluster's Sentinels answered (`edges::nodes::sentinel::ask`) to an ask
    /// begun at `asked_ms` ([`Handle::now_ms`]'s clock).
    Sentinel {
        cluster: String,
        answers: Vec<crate::pure::live::SentinelAnswer>,
        asked_ms: u64,
    },
    Tick,
    /// End the task (timers still pending are dropped).
    Stop,
}

/// Wakers of in-process agents, by node id.
type Wakers = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// Drivers the reconciler's process reaches nodes with for a failover, by node id: the
/// in-process agents' own, and those the server made for agent-managed nodes.
type Reach = Arc<Mutex<HashMap<String, Arc<dyn NodeDriver>>>>;

/// The Sentinels of the current revision's clusters that name them, by cluster.
type Sentinels = Arc<Mutex<std::collections::BTreeMap<String, Sentinel>>>;

/// How often the Sentinels are asked about their primary.
const SENTINEL_INTERVAL: Duration = Duration::from_millis(500);
/// How long one Sentinel may take to answer.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(2);

/// A cheap, cloneable way to talk to the reconciler task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
    wakers: Wakers,
    reach: Reach,
    sentinels: Sentinels,
    /// The task asking the Sentinels was started.
    sentinel_watch: Arc<std::sync::atomic::AtomicBool>,
    /// Every journal message, for progress displays and logs.
    pub events: broadcast::Sender<String>,
    started: Instant,
    started_wall: u64,
    metrics: Option<Arc<Metrics>>,
    /// Where `Effect::Notify` goes (the server sets one; `sync` has none).
    notifier: Arc<std::sync::OnceLock<crate::edges::notify::Notifier>>,
    /// The status published after each journal write (see [`Handle::status`]).
    status: watch::Receiver<Arc<Status>>,
}

/// The wall clock in ms, never earlier than `started_wall` plus the time since `started`.
fn clock_ms(started_wall: u64, started: Instant) -> u64 {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    wall.max(started_wall + started.elapsed().as_millis() as u64)
}

/// Ask `cluster`'s Sentinels `s` and hand their answers to the reconciler, with the
/// time the ask began; `false` when the reconciler has stopped.
async fn ask_sentinels(
    tx: &mpsc::Sender<Msg>,
    clock: &impl Fn() -> u64,
    cluster: String,
    s: &Sentinel,
) -> bool {
    let asked_ms = clock();
    let answers = crate::edges::nodes::sentinel::ask(s, SENTINEL_TIMEOUT).await;
    tx.send(Msg::Sentinel {
        cluster,
        answers,
        asked_ms,
    })
    .await
    .is_ok()
}

/// The task ended (its journal failed, or it was stopped).
#[derive(Debug, thiserror::Error)]
#[error("the reconciler has stopped")]
pub struct Stopped;

impl Handle {
    /// Milliseconds on the wall clock: gate baselines are kept in the journal and
    /// compared with readings taken after a restart, so a per-process clock would not do.
    /// Never earlier than a reading this process took before (the clock may step back).
    fn now_ms(&self) -> u64 {
        clock_ms(self.started_wall, self.started)
    }

    /// [`Handle::now_ms`] for a task that holds no handle (which would keep the
    /// reconciler's channels open).
    fn clock(&self) -> impl Fn() -> u64 + Send + 'static {
        let (wall, started) = (self.started_wall, self.started);
        move || clock_ms(wall, started)
    }

    pub async fn report(
        &self,
        node: &str,
        report: Report,
    ) -> Result<Result<Assignment, RefusedInput>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Report {
                node: node.to_owned(),
                report: Box::new(report),
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// A report whose node no revision declares yet, held (a long poll) until a revision
    /// that declares it is published or `hold` has passed, then taken again: an agent
    /// that reported at the server's start, before the first revision was taken (or
    /// just before the push that declares its node), gets its assignment as soon as the
    /// node is known rather than after its back-off. Counted in
    /// `cacheflow_node_reports_waiting` while held.
    pub async fn report_held(
        &self,
        node: &str,
        report: Report,
        hold: Duration,
    ) -> Result<Result<Assignment, RefusedInput>, Stopped> {
        let deadline = tokio::time::Instant::now() + hold;
        let mut published = self.status.clone();
        let mut waiting: Option<Waiting> = None;
        loop {
            // The head before the report: a revision published in between is not missed.
            let seen = published.borrow_and_update().head.clone();
            let answer = self.report(node, report.clone()).await?;
            if !matches!(answer, Err(RefusedInput::UnknownNode(_)))
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(answer);
            }
            waiting.get_or_insert_with(|| Waiting::new(self.metrics.clone()));
            let next = published.wait_for(|s| s.head != seen);
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(Stopped),
                Err(_) => return Ok(answer),
            }
        }
    }

    /// A new valid revision, with a reading of the nodes taken just before if there is one.
    pub async fn revision(&self, desired: Desired, live: Option<LiveState>) -> Result<(), Stopped> {
        self.watch_sentinels(&desired);
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Revision {
                desired: Box::new(desired),
                live: live.map(Box::new),
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn refuse(&self, revision: &str, reason: &str) -> Result<(), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Refuse {
                revision: revision.to_owned(),
                reason: reason.to_owned(),
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    pub async fn command(
        &self,
        cluster: &str,
        event: Event,
    ) -> Result<Result<(), RefusedInput>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Command {
                cluster: cluster.to_owned(),
                event,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// A person retries the cluster's refused content ([`Reconciler::retry`]).
    pub async fn retry(
        &self,
        cluster: &str,
        by: String,
        reason: String,
    ) -> Result<Result<(), RefusedInput>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Retry {
                cluster: cluster.to_owned(),
                by,
                reason,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// A copy of the reconciler's state.
    pub async fn state(&self) -> Result<State, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Inspect { reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// The status as of the last journal write (and of changes no entry was needed
    /// for), without a round trip through the reconciler's inputs: readers never queue
    /// behind reports and revisions.
    pub fn status(&self) -> Result<Arc<Status>, Stopped> {
        // The writer holds the sender: closed, the reconciler has stopped.
        if self.status.has_changed().is_err() {
            return Err(Stopped);
        }
        Ok(self.status.borrow().clone())
    }

    /// The status as it is published, to wait for its changes.
    pub fn watch_status(&self) -> watch::Receiver<Arc<Status>> {
        self.status.clone()
    }

    /// The last valid revision taken (cheap, unlike [`Handle::state`]).
    pub async fn head(&self) -> Result<Option<String>, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Head { reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Time since the reconciler started (nodes report again after a start).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Send the reconciler's notices through `notifier` from now on (once).
    pub fn set_notifier(&self, notifier: crate::edges::notify::Notifier) {
        let _ = self.notifier.set(notifier);
    }

    /// What a drift report compares (see [`Reconciler::drift_inputs`]).
    pub async fn drift_inputs(
        &self,
        silent_after: Duration,
    ) -> Result<crate::pure::reconciler::DriftInputs, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::DriftInputs {
                silent_after_ms: silent_after.as_millis() as u64,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Every node's latest reading (see [`Reconciler::readings`]).
    pub async fn readings(&self, silent_after: Duration) -> Result<LiveState, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Readings {
                silent_after_ms: silent_after.as_millis() as u64,
                reply,
            })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Correct the drift of `clusters` through staged rollouts (journaled first).
    pub async fn correct(&self, clusters: Vec<String>) -> Result<(), Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Correct { clusters, reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Stop the reconciler task after the inputs before this one.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }

    pub async fn tick(&self) -> Result<(), Stopped> {
        self.tx.send(Msg::Tick).await.map_err(|_| Stopped)
    }

    /// Ask the Sentinels of `desired`'s clusters that name them, every
    /// [`SENTINEL_INTERVAL`], and hand their answers to the reconciler (one task for
    /// all clusters, started with the first cluster that names Sentinels).
    fn watch_sentinels(&self, desired: &Desired) {
        let named: std::collections::BTreeMap<String, Sentinel> = desired
            .clusters
            .iter()
            .filter_map(|(name, c)| Some((name.clone(), c.sentinel.clone()?)))
            .collect();
        let any = !named.is_empty();
        *self.sentinels.lock().expect("sentinels lock") = named;
        if !any || self.sentinel_watch.swap(true, Ordering::SeqCst) {
            return;
        }
        let (tx, sentinels, clock) = (self.tx.clone(), self.sentinels.clone(), self.clock());
        tokio::spawn(async move {
            loop {
                let now = sentinels.lock().expect("sentinels lock").clone();
                for (cluster, s) in now {
                    if !ask_sentinels(&tx, &clock, cluster, &s).await {
                        return;
                    }
                }
                tokio::time::sleep(SENTINEL_INTERVAL).await;
            }
        });
    }

    /// Ask `cluster`'s Sentinels once, now (a batch waits for their answer).
    fn ask_sentinels_now(&self, rt: &tokio::runtime::Handle, cluster: String) {
        let Some(s) = self
            .sentinels
            .lock()
            .expect("sentinels lock")
            .get(&cluster)
            .cloned()
        else {
            return;
        };
        let (tx, clock) = (self.tx.clone(), self.clock());
        rt.spawn(async move {
            ask_sentinels(&tx, &clock, cluster, &s).await;
        });
    }

    /// The driver a failover from `node` goes through (the server sends `FAILOVER` to a
    /// primary itself, agent-managed or not); replaces any earlier one.
    pub fn reach(&self, node: &str, driver: Arc<dyn NodeDriver>) {
        self.reach
            .lock()
            .expect("reach lock")
            .insert(node.to_owned(), driver);
    }

    /// Drive `node` with an in-process agent until `stop` turns true.
    pub fn spawn_direct_agent(
        &self,
        node: String,
        driver: Arc<dyn NodeDriver>,
        options: DirectOptions,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let wake = Arc::new(Notify::new());
        self.wakers
            .lock()
            .expect("wakers lock")
            .insert(node.clone(), wake.clone());
        self.reach(&node, driver.clone());
        let handle = self.clone();
        tokio::spawn(direct_agent(handle, node, driver, options, wake, stop))
    }
}

/// One report held by [`Handle::report_held`], counted while it waits (also when the
/// request is dropped).
struct Waiting(Option<Arc<Metrics>>);

impl Waiting {
    fn new(metrics: Option<Arc<Metrics>>) -> Waiting {
        if let Some(m) = &metrics {
            m.reports_waiting.inc();
        }
        Waiting(metrics)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(m) = &self.0 {
            m.reports_waiting.dec();
        }
    }
}

/// How in-process agents read and apply.
#[derive(Debug, Clone)]
pub struct DirectOptions {
    /// Time between reports when nothing happens (the gates' readings).
    pub interval: Duration,
    /// Bound of one read of the node.
    pub timeout: Duration,
    /// A reading taken just before (`sync`'s snapshot): the first report sends it
    /// instead of reading the node again.
    pub first_reading: Option<NodeLive>,
    /// Read only these parameters (the revision's declared ones), when the revision
    /// cannot change while the agent runs (`sync`); all of them when `None`.
    pub declared: Option<Arc<BTreeSet<String>>>,
    /// How the in-process agent applies (a config file and a restart command for
    /// start-only changes, as `cacheflow agent` takes them); run-time changes only, with
    /// no warm-up, when `None`.
    pub apply: Option<ApplyOptions>,
}

impl Default for DirectOptions {
    fn default() -> Self {
        DirectOptions {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            first_reading: None,
            declared: None,
            apply: None,
        }
    }
}

/// A leader replica's fence (`serve --etcd-endpoints`): each entry is written to etcd
/// under the leader key's create revision before Git, and nothing is answered once the
/// leadership is lost (its lease expired, or etcd refused a write).
pub struct Replica {
    pub journal: FencedJournal,
    pub leadership: Arc<Leadership>,
}

/// Start the reconciler task from the journal's last state. `grace_ms` is how long
/// nodes need to report after a restart (see [`Reconciler::resume`]). Callers start it
/// through [`Host`], which also stops it with its in-process agents.
pub(crate) fn start(
    mut journal: Journal,
    grace_ms: u64,
    metrics: Option<Arc<Metrics>>,
    correct_drift: bool,
    replica: Option<Replica>,
) -> Result<(Handle, tokio::task::JoinHandle<Result<(), AuditError>>), AuditError> {
    let state = journal.load()?.unwrap_or_default();
    let maker = EntryMaker::loaded(&state);
    let told = Told::loaded(&state);
    let status = Arc::new(Status::of(&state));
    let (status_tx, status_rx) = watch::channel(status.clone());
    let mut core = Reconciler::new(state);
    core.correct_drift = correct_drift;
    core.report_grace_ms = grace_ms;
    let (tx, rx) = mpsc::channel::<Msg>(4096);
    let handle = Handle::new(tx, metrics, status_rx);
    for record in core.resuming(grace_ms) {
        log_record(&record);
    }
    let resumed = core.resume(grace_ms);
    let leadership = replica.as_ref().map(|r| r.leadership.clone());
    let (mut batches, done) = spawn_writer(&handle, journal, maker, status, status_tx, replica)?;
    batches.told = told;
    let task = tokio::spawn(run(
        handle.clone(),
        core,
        rx,
        (batches, done),
        resumed,
        leadership,
    ));
    Ok((handle, task))
}

impl Handle {
    fn new(
        tx: mpsc::Sender<Msg>,
        metrics: Option<Arc<Metrics>>,
        status: watch::Receiver<Arc<Status>>,
    ) -> Handle {
        let (events, _) = broadcast::channel(1024);
        Handle {
            tx,
            wakers: Arc::new(Mutex::new(HashMap::new())),
            reach: Arc::new(Mutex::new(HashMap::new())),
            sentinels: Arc::default(),
            sentinel_watch: Arc::default(),
            events,
            started: Instant::now(),
            started_wall: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            metrics,
            notifier: Arc::default(),
            status,
        }
    }
}

/// The writer's end: `Err` is a journal that could not be written.
type WriterDone = oneshot::Receiver<Result<(), AuditError>>;

/// The journal writer: its own thread, so git's file I/O never holds a runtime worker
/// (and the HTTP connections queued on it) nor the reconciler's next inputs. As deep as
/// the input channel: a slow write (a busy disk) must not stop the reconciler from
/// answering the reports that need no entry.
fn spawn_writer(
    handle: &Handle,
    journal: Journal,
    maker: EntryMaker,
    status: Arc<Status>,
    status_tx: watch::Sender<Arc<Status>>,
    replica: Option<Replica>,
) -> Result<(Batches, WriterDone), AuditError> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(4096);
    let written = Arc::new(AtomicU64::new(0));
    let (done_tx, done) = oneshot::channel();
    let h = handle.clone();
    let rt = tokio::runtime::Handle::current();
    let w = written.clone();
    std::thread::Builder::new()
        .name("cacheflow-journal".to_owned())
        .spawn(move || {
            let _ = done_tx.send(write_jobs(
                &h, &rt, journal, jobs_rx, &w, &status_tx, replica,
            ));
        })
        .map_err(|e| AuditError::Writer(e.to_string()))?;
    let batches = Batches {
        maker,
        seq: 0,
        pending: HashMap::new(),
        told: Told::default(),
        written,
        jobs: jobs_tx,
        status,
    };
    Ok((batches, done))
}

/// The reconciler's task. Inputs that arrived together (a batch of nodes confirming at
/// once) are handled together and journaled as one entry holding every input's lines;
/// nothing is answered or started before that entry is written (write-ahead), except
/// reports that changed nothing, from clusters whose state is already written.
///
/// A leader replica answers nothing once its leadership is lost: the task ends with
/// [`AuditError::Replicated`] before it takes the next input.
async fn run(
    h: Handle,
    mut core: Reconciler,
    mut rx: mpsc::Receiver<Msg>,
    (mut batches, mut done): (Batches, WriterDone),
    resumed: Vec<Effect>,
    leadership: Option<Arc<Leadership>>,
) -> Result<(), AuditError> {
    let mut lost = leadership.as_ref().map(|l| l.lost());
    let deposed = || AuditError::Replicated("this replica no longer leads its shard".to_owned());
    let leads = || leadership.as_ref().is_none_or(|l| l.valid());
    // The writer ended early: its error (a journal that cannot be written) is ours.
    let writer_failed = |r: Result<Result<(), AuditError>, _>| r.unwrap_or(Ok(()));
    if batches
        .submit(&mut core, resumed, Vec::new())
        .await
        .is_err()
    {
        return writer_failed(done.await);
    }
    loop {
        let first = tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
            result = &mut done => return writer_failed(result),
            _ = leadership_lost(&mut lost) => return Err(deposed()),
        };
        let mut inputs = Inputs::default();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            // Checked before each input: a leader paused past its lease (a long GC, a
            // frozen VM) wakes with inputs queued, and answers none of them.
            if !leads() {
                if let Some(l) = &leadership {
                    l.deposed();
                }
                return Err(deposed());
            }
            inputs.take(&mut core, &batches, msg, h.now_ms());
            if !inputs.stop && inputs.replies.len() < 1024 {
                next = rx.try_recv().ok();
            }
        }
        let stop = inputs.stop;
        if batches
            .submit(&mut core, inputs.effects, inputs.replies)
            .await
            .is_err()
        {
            return writer_failed(done.await);
        }
        if stop {
            break;
        }
    }
    // The writer finishes what it was given, then ends.
    drop(batches);
    writer_failed(done.await)
}

/// Resolves when the leadership is lost (never without one).
async fn leadership_lost(lost: &mut Option<watch::Receiver<bool>>) {
    match lost {
        Some(rx) => {
            let _ = rx.wait_for(|l| *l).await;
        }
        None => std::future::pending().await,
    }
}

/// The inputs of one batch: what they caused, and the answers that wait for its entry.
#[derive(Default)]
struct Inputs {
    effects: Vec<Effect>,
    replies: Vec<Box<dyn FnOnce() + Send>>,
    stop: bool,
}

impl Inputs {
    fn later<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, value: T) {
        self.replies.push(Box::new(move || {
            let _ = reply.send(value);
        }));
    }

    /// Hand one input to the core.
    fn take(&mut self, core: &mut Reconciler, batches: &Batches, msg: Msg, now: u64) {
        match msg {
            Msg::Report {
                node,
                report,
                reply,
            } => match core.report(&node, *report, now) {
                // Answered from journaled state: the node's own assignment is in an
                // entry already written, so it waits for no entry, even one this
                // report makes (an apply result) or one of its cluster in flight
                // (most reports while rollouts run).
                Ok((assignment, e)) if batches.durable(core, &node) => {
                    self.effects.extend(e);
                    let _ = reply.send(Ok(assignment));
                }
                Ok((assignment, e)) => {
                    self.effects.extend(e);
                    self.later(reply, Ok(assignment));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::Revision {
                desired,
                live,
                reply,
            } => {
                self.effects
                    .extend(core.revision(*desired, live.as_deref(), now));
                self.later(reply, ());
            }
            Msg::Refuse {
                revision,
                reason,
                reply,
            } => {
                self.effects
                    .extend(core.refuse_revision(&revision, &reason, now));
                self.later(reply, ());
            }
            Msg::Timer {
                cluster,
                event,
                run,
            } => self
                .effects
                .extend(core.timer_of(&cluster, event, run, now)),
            Msg::Command {
                cluster,
                event,
                reply,
            } => match core.command(&cluster, event, now) {
                Ok(e) => {
                    self.effects.extend(e);
                    self.later(reply, Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::Retry {
                cluster,
                by,
                reason,
                reply,
            } => match core.retry(&cluster, &by, &reason, now) {
                Ok(e) => {
                    self.effects.extend(e);
                    self.later(reply, Ok(()));
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            Msg::Inspect { reply } => self.later(reply, core.state.clone()),
            Msg::Head { reply } => self.later(reply, core.state.head.clone()),
            // Readings are not journaled: answered at once.
            Msg::DriftInputs {
                silent_after_ms,
                reply,
            } => {
                let _ = reply.send(core.drift_inputs(now, silent_after_ms));
            }
            Msg::Readings {
                silent_after_ms,
                reply,
            } => {
                let _ = reply.send(core.readings(now, silent_after_ms));
            }
            Msg::Correct { clusters, reply } => {
                self.effects.extend(core.correct(&clusters, now));
                self.later(reply, ());
            }
            Msg::Stop => self.stop = true,
            Msg::Tick => self.effects.extend(core.tick(now)),
            Msg::Sentinel {
                cluster,
                answers,
                asked_ms,
            } => self
                .effects
                .extend(core.sentinel(&cluster, answers, asked_ms, now)),
        }
    }
}

/// One batch of inputs for the journal writer: its entry (when the batch changed
/// something worth one), then what may happen only once that entry is written.
struct Job {
    /// The number of the last entry made so far (this one's, if it has one).
    seq: u64,
    entry: Option<Prepared>,
    /// The status to publish once the entry is written.
    status: Option<Arc<Status>>,
    effects: Vec<Effect>,
    replies: Vec<Box<dyn FnOnce() + Send>>,
}

/// The reconciler's side of the journal: makes the entries and knows which clusters
/// have entries not yet written.
struct Batches {
    maker: EntryMaker,
    seq: u64,
    /// Cluster → the last entry that changed it.
    pending: HashMap<String, u64>,
    /// Node → the assignment the entries made so far tell it, and the entry that did.
    told: Told,
    /// The last entry written (set by the writer).
    written: Arc<AtomicU64>,
    jobs: mpsc::Sender<Job>,
    /// The last status made.
    status: Arc<Status>,
}

impl Batches {
    /// Hand a batch to the writer. `Err`: the writer has ended.
    async fn submit(
        &mut self,
        core: &mut Reconciler,
        effects: Vec<Effect>,
        replies: Vec<Box<dyn FnOnce() + Send>>,
    ) -> Result<(), ()> {
        let messages: Vec<&str> = effects
            .iter()
            .filter_map(|e| match e {
                Effect::Journal { message } => Some(message.as_str()),
                _ => None,
            })
            .collect();
        let entry = if messages.is_empty() {
            None
        } else {
            let changed = core.take_changed();
            self.seq += 1;
            for cluster in &changed {
                self.pending.insert(cluster.clone(), self.seq);
                if let Some(cs) = core.state.clusters.get(cluster) {
                    self.told.record(cs, self.seq);
                }
            }
            Some(
                self.maker
                    .prepare(&messages.join("\n"), &core.state, &changed),
            )
        };
        // Only the clusters changed since the last status are made again, entry or not
        // (an outcome reported after its rollout ended changes state without a line).
        let unpublished = core.take_unpublished();
        let status = (!unpublished.is_empty() || core.state.head != self.status.head).then(|| {
            self.status = Arc::new(self.status.updated(&core.state, &unpublished));
            self.status.clone()
        });
        if entry.is_none() && status.is_none() && effects.is_empty() && replies.is_empty() {
            return Ok(());
        }
        let job = Job {
            seq: self.seq,
            entry,
            status,
            effects,
            replies,
        };
        self.jobs.send(job).await.map_err(|_| ())
    }

    /// True when `node`'s assignment comes from state already written: its cluster is
    /// unchanged since the last entry made, and that entry's write is done; or, its
    /// cluster changed since, the node's own assignment is the one an entry already
    /// written holds (the others of its cluster moved on, or it confirmed an apply).
    fn durable(&self, core: &Reconciler, node: &str) -> bool {
        let written = self.written.load(Ordering::Acquire);
        let cluster_written = core.assignment_is_written(node)
            && core
                .cluster_of(node)
                .is_some_and(|cluster| self.pending.get(cluster).is_none_or(|&seq| seq <= written));
        let now = core
            .cluster_of(node)
            .and_then(|c| core.state.clusters.get(c))
            .and_then(|cs| cs.assignments.get(node));
        cluster_written || self.told.holds(node, now, written)
    }
}

/// What the entries made so far tell each node, as a fingerprint of its assignment
/// (revision, parameters' digest, generation, restart allowed) and the entry that first
/// held it. An answer whose assignment has the fingerprint of an entry already written
/// tells the node nothing the journal does not hold, whatever else is in flight.
#[derive(Default)]
struct Told {
    nodes: HashMap<String, (u64, u64)>,
}

impl Told {
    /// The state a journal was loaded from: every assignment in it is written (entry 0).
    fn loaded(state: &crate::pure::reconciler::state::State) -> Told {
        let mut told = Told::default();
        for cs in state.clusters.values() {
            told.record(cs, 0);
        }
        told
    }

    /// The assignments of a cluster in entry `seq`: a node's changed one dates from it.
    fn record(&mut self, cs: &crate::pure::reconciler::state::ClusterState, seq: u64) {
        for (node, a) in &cs.assignments {
            let print = fingerprint(a);
            match self.nodes.get_mut(node) {
                Some((known, _)) if *known == print => {}
                Some(entry) => *entry = (print, seq),
                None => {
                    self.nodes.insert(node.clone(), (print, seq));
                }
            }
        }
    }

    /// Whether `now`, `node`'s assignment as the reconciler holds it, is the one an
    /// entry up to `written` holds.
    fn holds(
        &self,
        node: &str,
        now: Option<&crate::pure::reconciler::state::NodeAssignment>,
        written: u64,
    ) -> bool {
        match (now, self.nodes.get(node)) {
            (Some(a), Some(&(print, seq))) => seq <= written && fingerprint(a) == print,
            _ => false,
        }
    }
}

/// A node's assignment as far as the node acts on it (its outcome and the time it
/// reported it are the node's own news, not something it is told to do).
fn fingerprint(a: &crate::pure::reconciler::state::NodeAssignment) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.revision.hash(&mut h);
    a.digest.hash(&mut h);
    a.generation.hash(&mut h);
    a.restart_allowed.hash(&mut h);
    h.finish()
}

/// The writer thread: takes the batches in order; the ones waiting while it wrote the
/// previous entry are written as one (group commit), then their effects happen and
/// their answers go out, in order.
fn write_jobs(
    h: &Handle,
    rt: &tokio::runtime::Handle,
    mut journal: Journal,
    mut jobs: mpsc::Receiver<Job>,
    written: &AtomicU64,
    status: &watch::Sender<Arc<Status>>,
    mut replica: Option<Replica>,
) -> Result<(), AuditError> {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < 256 {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut entry: Option<Prepared> = None;
        for job in &mut group {
            if let Some(e) = job.entry.take() {
                match &mut entry {
                    Some(earlier) => earlier.merge(e),
                    None => entry = Some(e),
                }
            }
        }
        if let Some(entry) = &mut entry {
            let began = Instant::now();
            if let Some(replica) = &mut replica {
                let seq = rt.block_on(replicate(replica, entry))?;
                entry.add_trailer(&format!("{ENTRY_TRAILER}{seq}"));
            }
            journal.write(entry)?;
            if let Some(m) = &h.metrics {
                m.journal_commit.observe(began.elapsed().as_secs_f64());
            }
        }
        let last = group.iter().map(|j| j.seq).max().unwrap_or(0);
        written.fetch_max(last, Ordering::Release);
        // Published before anyone is answered: an answered command is in the status.
        if let Some(latest) = group.iter_mut().rev().find_map(|j| j.status.take()) {
            status.send_replace(latest);
        }
        for job in group {
            after_journal(h, rt, &journal, job.effects);
            for reply in job.replies {
                reply();
            }
        }
    }
    Ok(())
}

/// Write `entry` to etcd under the fence: its number there. etcd that does not answer
/// is tried again while the lease lasts (a member restarting, an election among the
/// members); a refusal by the fence is final. A write that timed out may have been
/// applied: the retry writes the same keys with the same values.
async fn replicate(replica: &mut Replica, entry: &Prepared) -> Result<u64, AuditError> {
    loop {
        if !replica.leadership.valid() {
            replica.leadership.deposed();
            return Err(AuditError::Replicated(
                "this replica no longer leads its shard".to_owned(),
            ));
        }
        match replica
            .journal
            .write(entry.message(), entry.top(), entry.clusters())
            .await
        {
            Ok(seq) => return Ok(seq),
            Err(e @ JournalError::Fenced { .. }) => {
                replica.leadership.deposed();
                return Err(AuditError::Replicated(e.to_string()));
            }
            Err(e) => {
                tracing::warn!("the journal entry is not in etcd yet: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Everything an entry's inputs cause, once the entry is written.
fn after_journal(h: &Handle, rt: &tokio::runtime::Handle, journal: &Journal, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Journal { message } => {
                let _ = h.events.send(message);
            }
            Effect::Log { records } => {
                for record in &records {
                    log_record(record);
                }
            }
            Effect::StageDone { ms, .. } => {
                if let Some(m) = &h.metrics {
                    m.stage_duration.observe(ms as f64 / 1000.0);
                }
            }
            Effect::Note {
                revision,
                cluster,
                text,
                outcome,
            } => {
                if let (Some(m), Some(outcome)) = (&h.metrics, outcome) {
                    m.rollout_ended(outcome);
                    if outcome == "completed" {
                        m.rollout_completed(&cluster, crate::edges::clock::now_secs_f64());
                    }
                }
                if let Err(e) = journal.note(&revision, &cluster, &text) {
                    tracing::warn!("cannot write the note on {revision}: {e}");
                }
            }
            Effect::Corrected { cluster, outcome } => {
                if let Some(m) = &h.metrics {
                    m.rollout_ended(outcome);
                    if outcome == "completed" {
                        m.rollout_completed(&cluster, crate::edges::clock::now_secs_f64());
                    }
                }
            }
            Effect::Timer {
                cluster,
                after_ms,
                event,
                run,
            } => {
                let tx = h.tx.clone();
                rt.spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after_ms)).await;
                    let _ = tx
                        .send(Msg::Timer {
                            cluster,
                            event,
                            run,
                        })
                        .await;
                });
            }
            Effect::Notify { notice, targets } => {
                if let Some(n) = h.notifier.get() {
                    n.send(&targets, &notice);
                }
            }
            Effect::Failover {
                cluster,
                batch,
                from,
                to,
                to_address,
                timeout_ms,
                run,
                sentinel,
                method,
                ..
            } => {
                let driver = h.reach.lock().expect("reach lock").get(&from).cloned();
                let tx = h.tx.clone();
                rt.spawn(async move {
                    let timeout = Duration::from_millis(timeout_ms);
                    // Under Sentinel they choose the replica: the event names the one
                    // they promoted.
                    let outcome = match (driver, &sentinel, method) {
                        (Some(d), Some(s), _) => d
                            .failover_through_sentinel(&s.sentinel, timeout)
                            .await
                            .map(|address| s.node_at(&address))
                            .map_err(|e| e.to_string()),
                        (Some(d), None, FailoverMethod::Replication) => d
                            .failover(&to_address, timeout)
                            .await
                            .map(|()| to)
                            .map_err(|e| e.to_string()),
                        (Some(d), None, FailoverMethod::Cluster) => d
                            .cluster_failover(&to_address, timeout)
                            .await
                            .map(|()| to)
                            .map_err(|e| e.to_string()),
                        (None, ..) => Err(format!(
                            "the server has no way to reach {from} (no address it can connect to)"
                        )),
                    };
                    let event = match outcome {
                        Ok(to) => Event::FailedOver { batch, from, to },
                        Err(error) => Event::FailoverFailed { batch, from, error },
                    };
                    let _ = tx
                        .send(Msg::Timer {
                            cluster,
                            event,
                            run,
                        })
                        .await;
                });
            }
            Effect::AskSentinels { cluster } => h.ask_sentinels_now(rt, cluster),
            Effect::Wake { nodes } => {
                let wakers = h.wakers.lock().expect("wakers lock");
                for n in nodes {
                    if let Some(w) = wakers.get(&n) {
                        w.notify_one();
                    }
                }
            }
        }
    }
}

/// One journal line as one log record (target `cacheflow::journal`), its fields
/// structured: `event`, `cluster`, `revision`, `node`, `batch` (absent ones left out).
pub(crate) fn log_record(r: &Record) {
    let (cluster, revision, node) = (
        r.cluster.as_deref(),
        r.revision.as_deref(),
        r.node.as_deref(),
    );
    if r.warn {
        tracing::warn!(target: "cacheflow::journal", event = r.event, cluster, revision, node, batch = r.batch, "{}", r.message);
    } else {
        tracing::info!(target: "cacheflow::journal", event = r.event, cluster, revision, node, batch = r.batch, "{}", r.message);
    }
}

/// The in-process agents' reporter: the reconciler's channel.
struct Channel {
    handle: Handle,
    node: String,
}

impl Reporter for Channel {
    fn agent(&self) -> String {
        format!("cacheflow/{} (in-process)", env!("CARGO_PKG_VERSION"))
    }

    async fn report(&self, report: Report) -> Result<Option<Assignment>, Unreported> {
        match self.handle.report(&self.node, report).await {
            Ok(Ok(a)) => Ok(Some(a)),
            Ok(Err(e)) => {
                tracing::warn!("{}: {e}", self.node);
                Ok(None)
            }
            Err(Stopped) => Err(Unreported::Gone),
        }
    }
}

/// The agent loop of `cacheflow agent` for a directly managed node, reporting through
/// the channel; woken when its assignment changes.
/// What an in-process agent starting now remembers of its node: the (revision,
/// generation) the node already reported an outcome for, from the state the reconciler
/// resumed. A restarted server's agents do not apply that assignment again: a value
/// changed by hand since stays (it is drift, reported, and corrected only through a
/// journaled rollout), and only an assignment the node never reported on is applied.
fn remembered(handle: &Handle, node: &str) -> AgentState {
    let Ok(status) = handle.status() else {
        return AgentState::default();
    };
    let Some(a) = status
        .clusters
        .values()
        .find_map(|c| c.assignments.get(node))
    else {
        return AgentState::default();
    };
    let Some(outcome) = a.outcome else {
        return AgentState::default();
    };
    AgentState {
        applied_revision: (outcome == Outcome::Applied).then(|| a.revision.clone()),
        last_tried: Some((a.revision.clone(), a.generation)),
        ..AgentState::default()
    }
}

async fn direct_agent(
    handle: Handle,
    node: String,
    driver: Arc<dyn NodeDriver>,
    options: DirectOptions,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) {
    let looped = LoopOptions {
        node_id: node.clone(),
        interval: options.interval,
        node_timeout: options.timeout,
        max_backoff: options.interval,
        once: false,
        apply: options.apply.unwrap_or(ApplyOptions {
            warmup: Duration::ZERO,
            ..ApplyOptions::default()
        }),
        first_reading: options.first_reading,
        declared: options.declared,
        remembered: remembered(&handle, &node),
    };
    let reporter = Channel { handle, node };
    let _ = crate::flow::agent::drive(driver, &reporter, looped, Some(wake), stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::reconciler::state::{ClusterState, NodeAssignment};

    fn assigned(revision: &str, generation: u64) -> NodeAssignment {
        NodeAssignment {
            revision: revision.to_owned(),
            digest: format!("digest of {revision}"),
            generation,
            parameters: std::collections::BTreeMap::new(),
            restart_allowed: true,
            outcome: None,
            reported_at: None,
        }
    }

    fn cluster(nodes: &[(&str, NodeAssignment)]) -> ClusterState {
        let mut cs = ClusterState::default();
        for (id, a) in nodes {
            cs.assignments.insert((*id).to_owned(), a.clone());
        }
        cs
    }

    #[test]
    fn an_answer_goes_out_at_once_only_when_an_entry_written_holds_the_nodes_assignment() {
        let mut told = Told::default();
        told.record(
            &cluster(&[("a", assigned("r1", 1)), ("b", assigned("r1", 1))]),
            1,
        );
        // Entry 2 moves b on to r2; a's assignment is unchanged, its outcome reported.
        let mut confirmed = assigned("r1", 1);
        confirmed.outcome = Some(crate::pure::protocol::Outcome::Applied);
        confirmed.reported_at = Some("2026-12-06T05:00:00Z".to_owned());
        told.record(
            &cluster(&[("a", confirmed.clone()), ("b", assigned("r2", 1))]),
            2,
        );
        // Entry 1 written, entry 2 in flight: a's answer holds nothing new, b's does.
        assert!(told.holds("a", Some(&confirmed), 1));
        assert!(!told.holds("b", Some(&assigned("r2", 1)), 1));
        assert!(told.holds("b", Some(&assigned("r2", 1)), 2));
        // An assignment no entry made yet (the reconciler's own, not submitted), a node
        // never recorded, a node without an assignment: they wait.
        assert!(!told.holds("a", Some(&assigned("r1", 2)), 2));
        assert!(!told.holds("c", Some(&assigned("r1", 1)), 2));
        assert!(!told.holds("a", None, 2));
        // A restart no longer allowed is something new to tell.
        let mut no_restart = assigned("r2", 1);
        no_restart.restart_allowed = false;
        assert!(!told.holds("b", Some(&no_restart), 2));
    }
}
