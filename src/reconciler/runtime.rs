//! The reconciler's runtime: one task owns the [`Reconciler`] and takes its inputs from
//! a channel (reports, revisions, timers, commands), writes the journal entry of each
//! input before it answers (write-ahead), starts timers as tasks and wakes the
//! in-process agents of directly managed nodes when their assignment changes.
//!
//! Directly managed nodes get an in-process agent: the same loop as `cacheflow agent`
//! (read the node, report, apply a new (revision, generation) once, report again), only
//! the report goes through the channel instead of HTTP, so both kinds of node follow
//! one assignment path.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};

use super::{Effect, Reconciler, RefusedInput, State};
use crate::audit::{AuditError, Journal};
use crate::live::{LiveState, NodeLive};
use crate::metrics::Metrics;
use crate::nodes::agent::ApplyOptions;
use crate::nodes::fleet::now_rfc3339;
use crate::nodes::protocol::{ApplyResult, Assignment, Report, PROTOCOL_VERSION};
use crate::nodes::NodeDriver;
use crate::rollout::Event;
use crate::spec::model::Desired;

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
    Inspect {
        reply: oneshot::Sender<State>,
    },
    Head {
        reply: oneshot::Sender<Option<String>>,
    },
    Tick,
    /// End the task (timers still pending are dropped).
    Stop,
}

/// Wakers of in-process agents, by node id.
type Wakers = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// A cheap, cloneable way to talk to the reconciler task.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<Msg>,
    wakers: Wakers,
    /// Every journal message, for progress displays and logs.
    pub events: broadcast::Sender<String>,
    started: Instant,
    started_wall: u64,
    metrics: Option<Arc<Metrics>>,
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
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        wall.max(self.started_wall + self.started.elapsed().as_millis() as u64)
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

    /// A new valid revision, with a reading of the nodes taken just before if there is one.
    pub async fn revision(&self, desired: Desired, live: Option<LiveState>) -> Result<(), Stopped> {
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

    /// A copy of the reconciler's state.
    pub async fn state(&self) -> Result<State, Stopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Inspect { reply })
            .await
            .map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
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

    /// Stop the reconciler task after the inputs before this one.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop).await;
    }

    pub async fn tick(&self) -> Result<(), Stopped> {
        self.tx.send(Msg::Tick).await.map_err(|_| Stopped)
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
        let handle = self.clone();
        tokio::spawn(direct_agent(handle, node, driver, options, wake, stop))
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
}

impl Default for DirectOptions {
    fn default() -> Self {
        DirectOptions {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            first_reading: None,
            declared: None,
        }
    }
}

/// Start the reconciler task from the journal's last state. `grace_ms` is how long
/// nodes need to report after a restart (see [`Reconciler::resume`]).
pub fn start(
    mut journal: Journal,
    grace_ms: u64,
    metrics: Option<Arc<Metrics>>,
    correct_drift: bool,
) -> Result<(Handle, tokio::task::JoinHandle<Result<(), AuditError>>), AuditError> {
    let state = journal.load()?.unwrap_or_default();
    let mut core = Reconciler::new(state);
    core.correct_drift = correct_drift;
    core.report_grace_ms = grace_ms;
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let (events, _) = broadcast::channel(1024);
    let handle = Handle {
        tx,
        wakers: Arc::new(Mutex::new(HashMap::new())),
        events,
        started: Instant::now(),
        started_wall: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        metrics,
    };
    let resumed = core.resume(grace_ms);
    let h = handle.clone();
    let task = tokio::spawn(async move {
        carry_out(&h, &mut journal, &mut core, resumed)?;
        // Inputs that arrived together (a batch of nodes confirming at once) are handled
        // together and journaled as one commit holding every input's lines; nothing is
        // answered or started before that commit is written (write-ahead).
        while let Some(first) = rx.recv().await {
            let mut effects = Vec::new();
            let mut replies: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
            let mut stop = false;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                let now = h.now_ms();
                match msg {
                    Msg::Report {
                        node,
                        report,
                        reply,
                    } => match core.report(&node, *report, now) {
                        // A reading that changed nothing, answered from journaled state:
                        // no entry to wait for (most reports while others roll out).
                        Ok((assignment, e))
                            if e.is_empty() && core.assignment_is_written(&node) =>
                        {
                            let _ = reply.send(Ok(assignment));
                        }
                        Ok((assignment, e)) => {
                            effects.extend(e);
                            replies.push(Box::new(move || {
                                let _ = reply.send(Ok(assignment));
                            }));
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
                        effects.extend(core.revision(*desired, live.as_deref(), now));
                        replies.push(Box::new(move || {
                            let _ = reply.send(());
                        }));
                    }
                    Msg::Refuse {
                        revision,
                        reason,
                        reply,
                    } => {
                        effects.extend(core.refuse_revision(&revision, &reason));
                        replies.push(Box::new(move || {
                            let _ = reply.send(());
                        }));
                    }
                    Msg::Timer {
                        cluster,
                        event,
                        run,
                    } => effects.extend(core.timer_of(&cluster, event, run, now)),
                    Msg::Command {
                        cluster,
                        event,
                        reply,
                    } => match core.command(&cluster, event, now) {
                        Ok(e) => {
                            effects.extend(e);
                            replies.push(Box::new(move || {
                                let _ = reply.send(Ok(()));
                            }));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    },
                    Msg::Inspect { reply } => {
                        let state = core.state.clone();
                        replies.push(Box::new(move || {
                            let _ = reply.send(state);
                        }));
                    }
                    Msg::Head { reply } => {
                        let head = core.state.head.clone();
                        replies.push(Box::new(move || {
                            let _ = reply.send(head);
                        }));
                    }
                    Msg::Stop => stop = true,
                    Msg::Tick => effects.extend(core.tick(now)),
                }
                if !stop && replies.len() < 1024 {
                    next = rx.try_recv().ok();
                }
            }
            carry_out(&h, &mut journal, &mut core, effects)?;
            for reply in replies {
                reply();
            }
            if stop {
                break;
            }
        }
        Ok(())
    });
    Ok((handle, task))
}

/// Journal first, then everything else.
fn carry_out(
    h: &Handle,
    journal: &mut Journal,
    core: &mut Reconciler,
    effects: Vec<Effect>,
) -> Result<(), AuditError> {
    let messages: Vec<&str> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Journal { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    if !messages.is_empty() {
        let changed = core.take_changed();
        journal.append_changed(&messages.join("\n"), &core.state, Some(&changed))?;
    }
    for effect in effects {
        match effect {
            Effect::Journal { message } => {
                tracing::info!(target: "cacheflow::journal", "{message}");
                let _ = h.events.send(message);
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
                if let Some(m) = &h.metrics {
                    m.rollout_ended(outcome);
                }
                if let Err(e) = journal.note(&revision, &cluster, &text) {
                    tracing::warn!("cannot write the note on {revision}: {e}");
                }
            }
            Effect::Timer {
                cluster,
                after_ms,
                event,
                run,
            } => {
                let tx = h.tx.clone();
                tokio::spawn(async move {
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
    Ok(())
}

async fn direct_agent(
    handle: Handle,
    node: String,
    driver: Arc<dyn NodeDriver>,
    options: DirectOptions,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut first_reading = options.first_reading.clone();
    let apply_options = ApplyOptions {
        warmup: Duration::ZERO,
        ..ApplyOptions::default()
    };
    let mut last_tried: Option<(String, u64)> = None;
    let mut last_apply: Option<ApplyResult> = None;
    loop {
        let read = async {
            match first_reading.take() {
                Some(live) => Ok(Ok(live)),
                None => {
                    let reading = async {
                        match &options.declared {
                            Some(names) => driver.read_declared(names).await,
                            None => driver.read().await,
                        }
                    };
                    tokio::time::timeout(options.timeout, reading).await
                }
            }
        };
        let live = match read.await {
            Ok(Ok(live)) => live,
            Ok(Err(e)) => NodeLive {
                reachable: false,
                error: Some(e.to_string()),
                ..NodeLive::default()
            },
            Err(_) => NodeLive {
                reachable: false,
                error: Some(format!(
                    "{}: no answer within {} ms",
                    driver.address(),
                    options.timeout.as_millis()
                )),
                ..NodeLive::default()
            },
        };
        let reachable = live.reachable;
        let report = Report {
            version: PROTOCOL_VERSION,
            node_id: node.clone(),
            agent: format!("cacheflow/{} (in-process)", env!("CARGO_PKG_VERSION")),
            sent_at: now_rfc3339(),
            node: live,
            last_apply: last_apply.clone(),
        };
        let assignment = match handle.report(&node, report).await {
            Ok(Ok(a)) => Some(a),
            Ok(Err(e)) => {
                tracing::warn!("{node}: {e}");
                None
            }
            Err(Stopped) => return,
        };
        if let Some((rev, assignment)) = assignment.and_then(|a| Some((a.revision.clone()?, a))) {
            let key = (rev, assignment.generation);
            if reachable && !*stop.borrow() && last_tried.as_ref() != Some(&key) {
                last_tried = Some(key);
                let result =
                    crate::nodes::agent::apply::apply(driver.as_ref(), &apply_options, &assignment)
                        .await;
                last_apply = Some(result);
                continue; // report the result at once
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(options.interval) => {}
            _ = stop.changed() => {}
        }
        // Stopped while idle: no last reading nor report (nobody would read them).
        if *stop.borrow() {
            return;
        }
    }
}
