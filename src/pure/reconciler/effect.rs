//! What the core asks of its shell, as plain data: [`Effect`]s for the runtime to carry
//! out and [`Notice`]s for `edges::notify` to deliver. Nothing here does I/O or reads a
//! clock: a notice carries the time its input was given.

use serde::Serialize;

use crate::pure::rollout::Event;
use crate::pure::spec::model::Notification;

/// What the runtime must do after an input, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Append one journal entry: `message` (first line the summary) with the state.
    Journal { message: String },
    /// The entry's lines as log records, one per line, with their fields (after the
    /// `Journal` they are the lines of).
    Log { records: Vec<Record> },
    /// Note `text` for `cluster` on config commit `revision` (`refs/notes/cacheflow`).
    Note {
        revision: String,
        cluster: String,
        text: String,
        /// How the rollout ended, for metrics: `completed`, `rolled_back`, `superseded`
        /// or `refused`; `None` when no rollout was needed (every node already ran the
        /// content), which is no rollout to count.
        outcome: Option<&'static str>,
    },
    /// A drift correction ended with `outcome` (as `Note`'s, for metrics); it is
    /// journaled and noted on no config commit.
    Corrected {
        cluster: String,
        outcome: &'static str,
    },
    /// A batch passed (or was promoted) `ms` after it was assigned (for metrics).
    StageDone { cluster: String, ms: u64 },
    /// Feed `event` to `cluster`'s rollout after `after_ms`, with `run` (the rollout
    /// run that started it: a timer of an earlier run is ignored, see
    /// [`Reconciler::timer_of`]).
    Timer {
        cluster: String,
        after_ms: u64,
        event: Event,
        run: u64,
    },
    /// Move `shard`'s primary role from `from` to `to` (at `to_address`) by `method`
    /// (`FAILOVER TO` sent to `from`; `CLUSTER FAILOVER` sent to `to` in cluster mode),
    /// done when `to` reports role master and `from` follows it. The outcome comes back
    /// as `Event::FailedOver` or `Event::FailoverFailed`, fed like a timer of `run`.
    Failover {
        cluster: String,
        batch: usize,
        shard: String,
        from: String,
        to: String,
        to_address: String,
        timeout_ms: u64,
        run: u64,
        /// The cluster names Sentinels: the failover goes through them (`SENTINEL
        /// FAILOVER`) instead of `FAILOVER TO`, and they choose the replica.
        sentinel: Option<SentinelFailover>,
        method: crate::pure::topology::FailoverMethod,
    },
    /// These nodes' assignments changed: tell them now if they can be told.
    Wake { nodes: Vec<String> },
    /// Ask `cluster`'s Sentinels now: a batch waits for answers asked after it was due
    /// (fed back through [`Reconciler::sentinel`](super::Reconciler::sentinel)).
    AskSentinels { cluster: String },
    /// Tell these targets (the revision's `notifications:` subscribed to the event).
    Notify {
        notice: Notice,
        targets: Vec<Notification>,
    },
}

/// A failover through a cluster's Sentinels: who they are, and the declared nodes by
/// address (the Sentinels name the new primary by its address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelFailover {
    pub sentinel: crate::pure::spec::model::Sentinel,
    /// `host:port` → node id.
    pub nodes: Vec<(String, String)>,
}

impl SentinelFailover {
    pub fn of(cluster: &crate::pure::spec::model::Cluster) -> Option<SentinelFailover> {
        Some(SentinelFailover {
            sentinel: cluster.sentinel.clone()?,
            nodes: cluster
                .nodes
                .iter()
                .map(|n| (n.address.clone(), n.id.clone()))
                .collect(),
        })
    }

    /// The node declared at `address` (the address itself when none is).
    pub fn node_at(&self, address: &str) -> String {
        self.nodes
            .iter()
            .find(|(a, _)| crate::pure::live::same_address(a, address))
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| address.to_owned())
    }
}

/// One journal line as the logs show it: the line, and what it is about as fields a log
/// query can select on (`event`, `cluster`, `revision`, `node`, `batch` from 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub event: &'static str,
    /// `warn` for what a person should look at (a rollback, a refusal, a failed apply,
    /// a pause); `info` otherwise.
    pub warn: bool,
    pub cluster: Option<String>,
    pub revision: Option<String>,
    pub node: Option<String>,
    pub batch: Option<usize>,
    pub message: String,
}

impl Record {
    pub fn new(event: &'static str, message: impl Into<String>) -> Record {
        Record {
            event,
            message: message.into(),
            ..Record::default()
        }
    }

    pub fn cluster(mut self, cluster: &str) -> Record {
        self.cluster = Some(cluster.to_owned());
        self
    }

    pub fn revision(mut self, revision: &str) -> Record {
        self.revision = Some(revision.to_owned());
        self
    }

    pub fn node(mut self, node: &str) -> Record {
        self.node = Some(node.to_owned());
        self
    }

    /// `batch` from 1.
    pub fn batch(mut self, batch: Option<usize>) -> Record {
        self.batch = batch;
        self
    }

    pub fn warn(mut self) -> Record {
        self.warn = true;
        self
    }
}

/// The events targets subscribe to (`events:` in `cacheflow.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoticeKind {
    RolloutStarted,
    RolloutCompleted,
    RolloutFailed,
    RolledBack,
    Paused,
    RevisionRefused,
    DriftFound,
    /// The drift a `drift-found` notice told of is gone (sent once, after it).
    DriftCleared,
}

impl NoticeKind {
    pub const ALL: [NoticeKind; 8] = [
        NoticeKind::RolloutStarted,
        NoticeKind::RolloutCompleted,
        NoticeKind::RolloutFailed,
        NoticeKind::RolledBack,
        NoticeKind::Paused,
        NoticeKind::RevisionRefused,
        NoticeKind::DriftFound,
        NoticeKind::DriftCleared,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::RolloutStarted => "rollout-started",
            NoticeKind::RolloutCompleted => "rollout-completed",
            NoticeKind::RolloutFailed => "rollout-failed",
            NoticeKind::RolledBack => "rolled-back",
            NoticeKind::Paused => "paused",
            NoticeKind::RevisionRefused => "revision-refused",
            NoticeKind::DriftFound => "drift-found",
            NoticeKind::DriftCleared => "drift-cleared",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub event: NoticeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// One line: what happened.
    pub summary: String,
    /// More lines (the reason, the figures, the report's summary); may be empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
    /// RFC 3339, when it happened.
    pub at: String,
}

impl Notice {
    /// A notice of `event` that happened `at` (RFC 3339, given by the caller).
    pub fn new_at(event: NoticeKind, summary: impl Into<String>, at: String) -> Notice {
        Notice {
            event,
            cluster: None,
            revision: None,
            summary: summary.into(),
            details: String::new(),
            at,
        }
    }

    pub fn cluster(mut self, cluster: &str) -> Notice {
        self.cluster = Some(cluster.to_owned());
        self
    }

    pub fn revision(mut self, revision: &str) -> Notice {
        self.revision = Some(revision.to_owned());
        self
    }

    pub fn details(mut self, details: impl Into<String>) -> Notice {
        self.details = details.into();
        self
    }
}

/// The targets of `all` that subscribe to `event` (no `events:` means every event).
pub fn targets_for(all: &[Notification], event: NoticeKind) -> Vec<&Notification> {
    all.iter()
        .filter(|t| t.events.is_empty() || t.events.iter().any(|e| e == event.as_str()))
        .collect()
}
