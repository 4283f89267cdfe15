//! The Host: the reconciler's task and the in-process agents of directly managed nodes,
//! started and stopped as one by `serve`, `sync` and `demo`.
//!
//! ```text
//! start: journal ─► reconciler task (resumes from the journal's last state)
//! drive: one in-process agent per directly managed node (once per node)
//! stop:  the agents finish their step ─► the reconciler takes the inputs before the
//!        stop ─► the journal's last write; its error is the Host's
//! ```

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::edges::audit::{AuditError, Journal};
use crate::edges::metrics::Metrics;
use crate::edges::nodes::NodeDriver;
use crate::flow::runtime::{DirectOptions, Handle};

/// How the reconciler runs.
#[derive(Default)]
pub struct HostOptions {
    /// How long nodes need to report after a restart (see
    /// [`crate::pure::reconciler::Reconciler::resume`]).
    pub grace_ms: u64,
    pub metrics: Option<Arc<Metrics>>,
    /// Correct drift found in the nodes' readings through rollouts (`sync`).
    pub correct_drift: bool,
    /// Where the reconciler's notices go (`serve`); none when `None`.
    pub notifier: Option<crate::edges::notify::Notifier>,
    /// A leader replica's fence; `None`: the single process (the journal in Git only).
    pub replica: Option<super::Replica>,
}

/// Why the reconciler ended other than by [`Host::stop`].
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the journal could not be written: {0}")]
    Journal(#[from] AuditError),
    #[error("the reconciler failed: {0}")]
    Failed(#[from] tokio::task::JoinError),
}

/// How the reconciler's task ended.
type Reconciled = Result<Result<(), AuditError>, tokio::task::JoinError>;

/// The reconciler with its in-process agents.
pub struct Host {
    handle: Handle,
    task: Mutex<Option<JoinHandle<Reconciled>>>,
    ended: watch::Receiver<bool>,
    stop_agents: watch::Sender<bool>,
    agents: Mutex<Vec<JoinHandle<()>>>,
    driven: Mutex<HashSet<String>>,
}

impl Host {
    /// Start the reconciler from `journal`'s last state (inside a tokio runtime).
    pub fn start(journal: Journal, options: HostOptions) -> Result<Host, AuditError> {
        let (handle, task) = super::start(
            journal,
            options.grace_ms,
            options.metrics,
            options.correct_drift,
            options.replica,
        )?;
        if let Some(n) = options.notifier {
            handle.set_notifier(n);
        }
        // Whoever waits on `ended` learns at once that the task is gone.
        let (ended_tx, ended) = watch::channel(false);
        let task = tokio::spawn(async move {
            let result = task.await;
            let _ = ended_tx.send(true);
            result
        });
        let (stop_agents, _) = watch::channel(false);
        Ok(Host {
            handle,
            task: Mutex::new(Some(task)),
            ended,
            stop_agents,
            agents: Mutex::new(Vec::new()),
            driven: Mutex::new(HashSet::new()),
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Turns true when the reconciler task has ended (stopped, or its journal failed).
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.clone()
    }

    /// Drive `node` with an in-process agent until [`Host::stop`]; a node already driven
    /// is left to its agent (`false`).
    pub fn drive(&self, node: &str, driver: Arc<dyn NodeDriver>, options: DirectOptions) -> bool {
        let fresh = self
            .driven
            .lock()
            .map(|mut d| d.insert(node.to_owned()))
            .unwrap_or(false);
        if fresh {
            let agent = self.handle.spawn_direct_agent(
                node.to_owned(),
                driver,
                options,
                self.stop_agents.subscribe(),
            );
            if let Ok(mut agents) = self.agents.lock() {
                agents.push(agent);
            }
        }
        fresh
    }

    /// Stop the agents (each finishes the step it is in), then the reconciler after the
    /// inputs before this; `Err` when its journal could not be written. When the
    /// reconciler has already ended, the agents are not waited for: nothing would take
    /// their reports.
    pub async fn stop(&self) -> Result<(), HostError> {
        let _ = self.stop_agents.send(true);
        let agents = self
            .agents
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        if !*self.ended.borrow() {
            for a in agents {
                let _ = a.await;
            }
        }
        self.handle.stop().await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        let Some(task) = task else { return Ok(()) };
        match task.await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(HostError::Journal(e)),
            Ok(Err(e)) | Err(e) => Err(HostError::Failed(e)),
        }
    }
}
