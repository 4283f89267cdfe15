//! The server's metrics, in the Prometheus text format (`GET /metrics`), through the
//! `prometheus-client` crate. Counters are bumped where things happen (webhooks, reports,
//! rollouts ending); node gauges are computed from the reconciler's state at scrape time.
//!
//! Every counter series whose labels are known is there at 0 from the start (the results
//! of each family below; a notification target's when a revision naming it is taken), so
//! `increase()` sees the first refusal, rollback or fetch failure after a restart: a
//! series that appears at 1 has no earlier sample to increase from.
//!
//! At each scrape ([`Metrics::scrape`]) the per-cluster gauges are rebuilt from the
//! published status (a cluster gone from the repository leaves no series behind) and the
//! process's own figures are read (`edges::process`). `cacheflow_build_info` names the
//! version and the commit the binary was built from (`build.rs`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::edges::process;
use crate::pure::reconciler::status::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub forge: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub cluster: String,
    pub kind: String,
}

/// The forges whose webhooks are counted (`/hooks/{forge}`).
pub const FORGES: [&str; 3] = ["github", "gitlab", "gitea"];
/// `cacheflow_webhook_deliveries_total{result}`.
pub const DELIVERY_RESULTS: [&str; 7] = [
    "accepted",
    "ignored",
    "duplicate",
    "unauthorized",
    "bad_request",
    "too_large",
    "unsupported_media_type",
];
/// `cacheflow_node_reports_total{result}`.
pub const REPORT_RESULTS: [&str; 5] = [
    "ok",
    "unauthorized",
    "malformed",
    "unknown_node",
    "too_large",
];
/// `cacheflow_admin_calls_total{result}`.
pub const ADMIN_RESULTS: [&str; 3] = ["ok", "unauthorized", "refused"];
/// `cacheflow_rollouts_total{outcome}`.
pub const ROLLOUT_OUTCOMES: [&str; 4] = ["completed", "rolled_back", "superseded", "refused"];
/// `cacheflow_revisions_total{result}`.
pub const REVISION_RESULTS: [&str; 5] =
    ["taken", "invalid", "untrusted", "rewritten", "fetch_failed"];
/// `cacheflow_notifications_total{result}`, per target.
pub const NOTIFICATION_RESULTS: [&str; 3] = ["sent", "failed", "dropped"];
/// `cacheflow_drift_runs_total{result}`.
pub const DRIFT_RUN_RESULTS: [&str; 3] = ["clean", "drift", "error"];
/// `cacheflow_drift_notices_total{result}`: what a drift run decided to tell.
pub const DRIFT_NOTICE_RESULTS: [&str; 5] =
    ["appeared", "changed", "reminder", "cleared", "unchanged"];
/// `cacheflow_pr_feedback_total{result}`.
pub const PR_FEEDBACK_RESULTS: [&str; 3] = ["posted", "failed", "ignored"];

pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub reports: Family<ResultLabels, Counter>,
    pub admin_calls: Family<ResultLabels, Counter>,
    pub rollouts: Family<OutcomeLabels, Counter>,
    pub revisions: Family<ResultLabels, Counter>,
    pub stage_duration: Histogram,
    pub report_duration: Histogram,
    /// Reports held until a revision declares their node (see `Handle::report_held`).
    pub reports_waiting: Gauge,
    pub journal_commit: Histogram,
    pub nodes: Family<StateLabels, Gauge>,
    pub notifications: Family<TargetLabels, Counter>,
    pub drift_nodes: Family<DriftLabels, Gauge>,
    pub drift_runs: Family<ResultLabels, Counter>,
    pub drift_notices: Family<ResultLabels, Counter>,
    pub pr_feedback: Family<ResultLabels, Counter>,
    /// 1 while the last fetch of the remote succeeded, 0 while it fails (the server then
    /// serves the mirror's revision).
    pub remote_reachable: Gauge,
    pub fetch_failures: Counter,
    /// Per-cluster gauges, rebuilt at each scrape.
    pub clusters: ClusterGauges,
    /// `process_*`, unprefixed, read at each scrape.
    process: ProcessGauges,
    /// One scrape at a time: the cluster families are cleared and filled again.
    scraping: Mutex<()>,
}

impl Default for Metrics {
    /// Every metric registered, and every series whose labels are known at 0.
    fn default() -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("cacheflow"),
            webhook_deliveries: Family::<DeliveryLabels, Counter>::default(),
            reports: Family::<ResultLabels, Counter>::default(),
            admin_calls: Family::<ResultLabels, Counter>::default(),
            rollouts: Family::<OutcomeLabels, Counter>::default(),
            revisions: Family::<ResultLabels, Counter>::default(),
            stage_duration: Histogram::new([
                0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ]),
            report_duration: Histogram::new([
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0,
            ]),
            reports_waiting: Gauge::default(),
            journal_commit: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            nodes: Family::<StateLabels, Gauge>::default(),
            notifications: Family::<TargetLabels, Counter>::default(),
            drift_nodes: Family::<DriftLabels, Gauge>::default(),
            drift_runs: Family::<ResultLabels, Counter>::default(),
            drift_notices: Family::<ResultLabels, Counter>::default(),
            pr_feedback: Family::<ResultLabels, Counter>::default(),
            remote_reachable: Gauge::default(),
            fetch_failures: Counter::default(),
            clusters: ClusterGauges::default(),
            process: ProcessGauges::default(),
            scraping: Mutex::new(()),
        };
        metrics.register();
        metrics.clusters.register(&mut metrics.registry);
        metrics.registry.register(
            "build",
            "The version and commit cacheflow was built from (always 1)",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: BUILD_COMMIT.to_owned(),
            }),
        );
        metrics.start_at_zero();
        metrics
    }
}

impl Metrics {
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register("webhook_deliveries", "Webhook deliveries by forge and result (accepted, ignored, duplicate, unauthorized, bad_request, too_large, unsupported_media_type)", self.webhook_deliveries.clone());
        r.register(
            "node_reports",
            "Node reports by result (ok, unauthorized, malformed, unknown_node, too_large)",
            self.reports.clone(),
        );
        r.register(
            "admin_calls",
            "Rollout commands by result (ok, unauthorized, refused)",
            self.admin_calls.clone(),
        );
        r.register(
            "rollouts",
            "Rollouts ended, by outcome (completed, rolled_back, superseded, refused)",
            self.rollouts.clone(),
        );
        r.register("revisions", "Revisions of the tracked branch seen, by result (taken, invalid, rewritten, fetch_failed)", self.revisions.clone());
        r.register(
            "stage_duration_seconds",
            "Time from a batch's assignment to its gates passing (or its promotion)",
            self.stage_duration.clone(),
        );
        r.register(
            "report_duration_seconds",
            "Time the server took to answer a node report (body read to answer), any result",
            self.report_duration.clone(),
        );
        r.register("node_reports_waiting", "Node reports held until a revision declares their node (answered then, or 404 when none does within 5 s)", self.reports_waiting.clone());
        r.register("journal_commit_seconds", "Time to write one journal entry (changed clusters' blobs, tree, commit, ref); answers wait for it", self.journal_commit.clone());
        r.register(
            "nodes",
            "Nodes with an assignment, by its outcome (applied, pending, failed)",
            self.nodes.clone(),
        );
        r.register("notifications", "Notifications by target and result (sent, failed after every retry, dropped: the target's queue was full)", self.notifications.clone());
        r.register("drift_nodes", "Nodes drifted at the last drift run, by cluster and kind (differs, not_persisted, silent)", self.drift_nodes.clone());
        r.register(
            "drift_runs",
            "Scheduled drift runs by result (clean, drift, error)",
            self.drift_runs.clone(),
        );
        r.register("drift_notices", "Drift runs by what they told (appeared, changed, reminder: drift-found; cleared: drift-cleared; unchanged: nothing sent)", self.drift_notices.clone());
        r.register(
            "pr_feedback",
            "Pull-request feedback by result (posted, failed, ignored)",
            self.pr_feedback.clone(),
        );
        r.register("remote_reachable", "1 when the last fetch of the config repository's remote succeeded, 0 while it fails (the server serves the revision its mirror holds)", self.remote_reachable.clone());
        r.register(
            "fetch_failures",
            "Fetches of the config repository's remote that failed (retried after a backoff)",
            self.fetch_failures.clone(),
        );
    }

    /// `increase()` needs a sample before the first count: every series whose labels
    /// are known is there at 0 from the start (notification targets: when a revision
    /// names them).
    fn start_at_zero(&self) {
        let results = |family: &Family<ResultLabels, Counter>, all: &[&str]| {
            for result in all {
                let _ = family.get_or_create(&ResultLabels {
                    result: (*result).to_owned(),
                });
            }
        };
        for forge in FORGES {
            for result in DELIVERY_RESULTS {
                let _ = self.webhook_deliveries.get_or_create(&DeliveryLabels {
                    forge: forge.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
        results(&self.reports, &REPORT_RESULTS);
        results(&self.admin_calls, &ADMIN_RESULTS);
        for outcome in ROLLOUT_OUTCOMES {
            let _ = self.rollouts.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        results(&self.revisions, &REVISION_RESULTS);
        results(&self.drift_runs, &DRIFT_RUN_RESULTS);
        results(&self.drift_notices, &DRIFT_NOTICE_RESULTS);
        results(&self.pr_feedback, &PR_FEEDBACK_RESULTS);
    }
}

impl Metrics {
    pub fn delivery(&self, forge: &str, result: &str) {
        self.webhook_deliveries
            .get_or_create(&DeliveryLabels {
                forge: forge.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn count(family: &Family<ResultLabels, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn rollout_ended(&self, outcome: &str) {
        self.rollouts
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn set_nodes(&self, state: &str, n: i64) {
        self.nodes
            .get_or_create(&StateLabels {
                state: state.to_owned(),
            })
            .set(n);
    }

    pub fn notification(&self, target: &str, result: &str) {
        self.notifications
            .get_or_create(&TargetLabels {
                target: target.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Register `targets`' notification series at 0 (those already there keep their
    /// counts): called when a revision is taken, before any notice to them is sent.
    pub fn notification_targets<'a>(&self, targets: impl IntoIterator<Item = &'a str>) {
        for target in targets {
            for result in NOTIFICATION_RESULTS {
                let _ = self.notifications.get_or_create(&TargetLabels {
                    target: target.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut out, &self.process.registry);
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    /// `GET /metrics`: the per-cluster gauges from `status` (when the reconciler
    /// answers) and the process read now, then the text.
    pub fn scrape(&self, status: Option<&Status>) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = status {
            self.clusters.set(status);
        }
        if let Some(reading) = process::read() {
            self.process.set(&reading);
        }
        self.encode()
    }

    /// A rollout of `cluster` completed `at` (seconds since the epoch):
    /// `cacheflow_cluster_last_completed_timestamp_seconds`.
    pub fn rollout_completed(&self, cluster: &str, at: f64) {
        let mut done = self
            .clusters
            .completed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        done.insert(cluster.to_owned(), at);
    }
}

/// The commit the binary was built from, or `unknown` (`build.rs`).
pub const BUILD_COMMIT: &str = env!("CACHEFLOW_COMMIT");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterPhaseLabels {
    pub cluster: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterRevisionLabels {
    pub cluster: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterStateLabels {
    pub cluster: String,
    pub state: String,
}

/// `cacheflow_cluster_phase{phase}`: every word `render::phase_word` says, and `none`
/// for a cluster that never had a rollout.
pub const PHASES: [&str; 11] = [
    "none",
    "pending",
    "waiting",
    "applying",
    "baking",
    "judging",
    "paused",
    "rolling-back",
    "completed",
    "rolled-back",
    "superseded",
];
/// `cacheflow_cluster_nodes{state}`: the outcome of each node's assignment.
pub const NODE_STATES: [&str; 3] = ["applied", "failed", "pending"];

/// The per-cluster gauges: what the status API says, as series a dashboard draws and
/// an alert watches.
#[derive(Default)]
pub struct ClusterGauges {
    /// 1 for the cluster's rollout phase, 0 for the others (a state set: an alert reads
    /// `== 1`, a table shows the one that is 1).
    pub phase: Family<ClusterPhaseLabels, Gauge>,
    /// 1, with the revision rolled out (or being rolled out) as a label.
    pub info: Family<ClusterRevisionLabels, Gauge>,
    /// Nodes by the outcome of their assignment.
    pub nodes: Family<ClusterStateLabels, Gauge>,
    /// The batch in flight (from 1; 0 when none) and the rollout's batches.
    pub batch: Family<ClusterLabels, Gauge>,
    pub batches: Family<ClusterLabels, Gauge>,
    /// 1 while the cluster's content is refused (rolled back, not applied again until
    /// it changes).
    pub refused: Family<ClusterLabels, Gauge>,
    pub last_completed: Family<ClusterLabels, Gauge<f64, AtomicU64>>,
    completed_at: Mutex<BTreeMap<String, f64>>,
}

impl ClusterGauges {
    fn register(&self, r: &mut Registry) {
        r.register("cluster_phase", "1 for the phase of the cluster's current or last rollout (none, pending, waiting, applying, baking, judging, paused, rolling-back, completed, rolled-back, superseded), 0 for the others", self.phase.clone());
        r.register("cluster_info", "1, with the revision of the cluster's current or last rollout as a label (the target's when no rollout ran)", self.info.clone());
        r.register(
            "cluster_nodes",
            "A cluster's nodes by the outcome of their assignment (applied, failed, pending)",
            self.nodes.clone(),
        );
        r.register(
            "cluster_rollout_batch",
            "The batch of the cluster's rollout in flight, from 1 (0 when none is)",
            self.batch.clone(),
        );
        r.register(
            "cluster_rollout_batches",
            "The batches of the cluster's current or last rollout",
            self.batches.clone(),
        );
        r.register("cluster_refused", "1 while the cluster's content is refused (rolled back: not applied again until it changes)", self.refused.clone());
        r.register("cluster_last_completed_timestamp_seconds", "When the cluster's last rollout completed, seconds since the epoch (rollouts completed since this server started)", self.last_completed.clone());
    }

    /// Every family rebuilt from `status`.
    fn set(&self, status: &Status) {
        self.phase.clear();
        self.info.clear();
        self.nodes.clear();
        self.batch.clear();
        self.batches.clear();
        self.refused.clear();
        self.last_completed.clear();
        let completed = self.completed_at.lock().unwrap_or_else(|e| e.into_inner());
        for (name, cs) in &status.clusters {
            let cluster = || ClusterLabels {
                cluster: name.clone(),
            };
            let current = cs.rollout.as_ref().map_or("none", |r| r.phase.as_str());
            for phase in PHASES {
                let labels = ClusterPhaseLabels {
                    cluster: name.clone(),
                    phase: phase.to_owned(),
                };
                self.phase
                    .get_or_create(&labels)
                    .set(i64::from(phase == current));
            }
            let revision = cs
                .rollout
                .as_ref()
                .map(|r| r.revision.clone())
                .or_else(|| cs.target.as_ref().map(|t| t.revision.clone()));
            if let Some(revision) = revision {
                let labels = ClusterRevisionLabels {
                    cluster: name.clone(),
                    revision,
                };
                self.info.get_or_create(&labels).set(1);
            }
            let counts = cs.nodes();
            for state in NODE_STATES {
                let n = counts.get(state).copied().unwrap_or(0);
                let labels = ClusterStateLabels {
                    cluster: name.clone(),
                    state: state.to_owned(),
                };
                self.nodes
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            let (batch, batches) = cs
                .rollout
                .as_ref()
                .map_or((0, 0), |r| (r.batch.unwrap_or(0), r.batches));
            self.batch
                .get_or_create(&cluster())
                .set(i64::try_from(batch).unwrap_or(0));
            self.batches
                .get_or_create(&cluster())
                .set(i64::try_from(batches).unwrap_or(0));
            self.refused
                .get_or_create(&cluster())
                .set(i64::from(cs.refused.is_some()));
            if let Some(at) = completed.get(name) {
                self.last_completed.get_or_create(&cluster()).set(*at);
            }
        }
    }
}

/// `process_*`: the usual names, in a registry of their own (no `cacheflow_` prefix).
struct ProcessGauges {
    registry: Registry,
    resident_memory: Gauge,
    virtual_memory: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge,
}

impl Default for ProcessGauges {
    fn default() -> Self {
        let mut p = ProcessGauges {
            registry: Registry::default(),
            resident_memory: Gauge::default(),
            virtual_memory: Gauge::default(),
            cpu_seconds: Counter::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            start_time: Gauge::default(),
        };
        let r = &mut p.registry;
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            p.resident_memory.clone(),
        );
        r.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            p.virtual_memory.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            p.cpu_seconds.clone(),
        );
        r.register(
            "process_open_fds",
            "Number of open file descriptors",
            p.open_fds.clone(),
        );
        r.register(
            "process_max_fds",
            "Maximum number of open file descriptors (-1: unlimited)",
            p.max_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            p.start_time.clone(),
        );
        p
    }
}

impl ProcessGauges {
    fn set(&self, r: &process::ProcessReading) {
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.resident_memory, r.resident_memory_bytes);
        gauge(&self.virtual_memory, r.virtual_memory_bytes);
        gauge(&self.open_fds, r.open_fds);
        self.max_fds
            .set(r.max_fds.and_then(|n| i64::try_from(n).ok()).unwrap_or(-1));
        // Whole seconds: the start time is known to 1/100 s and a gauge holds integers.
        self.start_time.set(r.start_time_seconds as i64);
        // The kernel's count only grows: add what it grew by since the last scrape.
        let grew = r.cpu_seconds - self.cpu_seconds.get();
        if grew > 0.0 {
            self.cpu_seconds.inc_by(grew);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::protocol::Outcome;
    use crate::pure::reconciler::{ClusterState, NodeAssignment, Refused, State, Target};
    use crate::pure::rollout::Phase;

    #[test]
    fn every_phase_word_is_a_phase_series() {
        let reason = || "r".to_owned();
        for phase in [
            Phase::Pending,
            Phase::Waiting {
                batch: 0,
                reason: reason(),
            },
            Phase::Applying { batch: 0 },
            Phase::Baking { batch: 0 },
            Phase::Judging { batch: 0 },
            Phase::Paused {
                batch: 0,
                reason: reason(),
            },
            Phase::RollingBack { reason: reason() },
            Phase::Completed,
            Phase::RolledBack { reason: reason() },
            Phase::Superseded { by: reason() },
        ] {
            let word = crate::pure::render::phase_word(&phase);
            assert!(PHASES.contains(&word), "{word}");
        }
    }

    #[test]
    fn cluster_gauges_follow_the_status_and_a_removed_cluster_leaves_no_series() {
        let assignment = |outcome| NodeAssignment {
            revision: "r1".into(),
            digest: "d".into(),
            generation: 1,
            parameters: Default::default(),
            restart_allowed: false,
            outcome,
            reported_at: None,
        };
        let mut state = State::default();
        state.clusters.insert(
            "cache".into(),
            ClusterState {
                target: Some(Target {
                    revision: "r1".into(),
                    digest: "d".into(),
                    parameters: Default::default(),
                }),
                refused: Some(Refused {
                    revision: "r2".into(),
                    digest: "e".into(),
                    reason: "rolled back".into(),
                }),
                assignments: [
                    ("a".to_owned(), assignment(Some(Outcome::Applied))),
                    ("b".to_owned(), assignment(Some(Outcome::Applied))),
                    ("c".to_owned(), assignment(None)),
                ]
                .into(),
                ..ClusterState::default()
            },
        );
        let m = Metrics::default();
        m.rollout_completed("cache", 1_700_000_000.5);
        let text = m.scrape(Some(&Status::of(&state)));
        for line in [
            r#"cacheflow_cluster_phase{cluster="cache",phase="none"} 1"#,
            r#"cacheflow_cluster_phase{cluster="cache",phase="completed"} 0"#,
            r#"cacheflow_cluster_info{cluster="cache",revision="r1"} 1"#,
            r#"cacheflow_cluster_nodes{cluster="cache",state="applied"} 2"#,
            r#"cacheflow_cluster_nodes{cluster="cache",state="pending"} 1"#,
            r#"cacheflow_cluster_nodes{cluster="cache",state="failed"} 0"#,
            r#"cacheflow_cluster_rollout_batch{cluster="cache"} 0"#,
            r#"cacheflow_cluster_refused{cluster="cache"} 1"#,
            r#"cacheflow_cluster_last_completed_timestamp_seconds{cluster="cache"} 1700000000.5"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        // The cluster is gone from the repository: none of its series is left.
        let text = m.scrape(Some(&Status::of(&State::default())));
        assert!(!text.contains(r#"cluster="cache""#), "{text}");
    }

    #[test]
    fn every_known_counter_series_is_there_at_zero_from_the_start() {
        let m = Metrics::default();
        m.notification_targets(["ops"]);
        let text = m.encode();
        let has = |line: &str| text.lines().any(|l| l == line);
        for forge in FORGES {
            for result in DELIVERY_RESULTS {
                let line = format!(
                    "cacheflow_webhook_deliveries_total{{forge=\"{forge}\",result=\"{result}\"}} 0"
                );
                assert!(has(&line), "{line}\n{text}");
            }
        }
        for (name, label, values) in [
            ("node_reports", "result", &REPORT_RESULTS[..]),
            ("admin_calls", "result", &ADMIN_RESULTS[..]),
            ("rollouts", "outcome", &ROLLOUT_OUTCOMES[..]),
            ("revisions", "result", &REVISION_RESULTS[..]),
            ("drift_runs", "result", &DRIFT_RUN_RESULTS[..]),
            ("pr_feedback", "result", &PR_FEEDBACK_RESULTS[..]),
        ] {
            for v in values {
                let line = format!("cacheflow_{name}_total{{{label}=\"{v}\"}} 0");
                assert!(has(&line), "{line}\n{text}");
            }
        }
        for result in NOTIFICATION_RESULTS {
            let line =
                format!("cacheflow_notifications_total{{target=\"ops\",result=\"{result}\"}} 0");
            assert!(has(&line), "{line}\n{text}");
        }
        // A count is kept when the targets are registered again.
        m.notification("ops", "failed");
        m.notification_targets(["ops"]);
        assert!(m
            .encode()
            .lines()
            .any(|l| l == r#"cacheflow_notifications_total{target="ops",result="failed"} 1"#));
    }
}
