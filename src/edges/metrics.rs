//! The server's metrics, in the Prometheus text format (`GET /metrics`), through the
//! `prometheus-client` crate. Counters are bumped where things happen (webhooks, reports,
//! rollouts ending); node gauges are computed from the reconciler's state at scrape time.
//!
//! Every counter series whose labels are known is there at 0 from the start (the results
//! of each family below; a notification target's when a revision naming it is taken), so
//! `increase()` sees the first refusal, rollback or fetch failure after a restart: a
//! series that appears at 1 has no earlier sample to increase from.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
        };
        metrics.register();
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
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
