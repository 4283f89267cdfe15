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
    pub pr_feedback: Family<ResultLabels, Counter>,
    /// 1 while the last fetch of the remote succeeded, 0 while it fails (the server then
    /// serves the mirror's revision).
    pub remote_reachable: Gauge,
    pub fetch_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cacheflow");
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook deliveries by forge and result (accepted, ignored, duplicate, unauthorized, bad_request, too_large, unsupported_media_type)",
            webhook_deliveries.clone(),
        );
        let reports = Family::<ResultLabels, Counter>::default();
        registry.register(
            "node_reports",
            "Node reports by result (ok, unauthorized, malformed, unknown_node, too_large)",
            reports.clone(),
        );
        let admin_calls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "admin_calls",
            "Rollout commands by result (ok, unauthorized, refused)",
            admin_calls.clone(),
        );
        let rollouts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "rollouts",
            "Rollouts ended, by outcome (completed, rolled_back, superseded, refused)",
            rollouts.clone(),
        );
        let revisions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "revisions",
            "Revisions of the tracked branch seen, by result (taken, invalid, rewritten, fetch_failed)",
            revisions.clone(),
        );
        let stage_duration =
            Histogram::new([0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0]);
        registry.register(
            "stage_duration_seconds",
            "Time from a batch's assignment to its gates passing (or its promotion)",
            stage_duration.clone(),
        );
        let report_duration =
            Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0]);
        registry.register(
            "report_duration_seconds",
            "Time the server took to answer a node report (body read to answer), any result",
            report_duration.clone(),
        );
        let journal_commit =
            Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0, 5.0]);
        registry.register(
            "journal_commit_seconds",
            "Time to write one journal entry (changed clusters' blobs, tree, commit, ref); answers wait for it",
            journal_commit.clone(),
        );
        let nodes = Family::<StateLabels, Gauge>::default();
        registry.register(
            "nodes",
            "Nodes with an assignment, by its outcome (applied, pending, failed)",
            nodes.clone(),
        );
        let notifications = Family::<TargetLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notifications by target and result (sent, failed after every retry, dropped: the target's queue was full)",
            notifications.clone(),
        );
        let drift_nodes = Family::<DriftLabels, Gauge>::default();
        registry.register(
            "drift_nodes",
            "Nodes drifted at the last drift run, by cluster and kind (differs, not_persisted, silent)",
            drift_nodes.clone(),
        );
        let drift_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "drift_runs",
            "Scheduled drift runs by result (clean, drift, error)",
            drift_runs.clone(),
        );
        let pr_feedback = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pr_feedback",
            "Pull-request feedback by result (posted, failed, ignored)",
            pr_feedback.clone(),
        );
        let remote_reachable = Gauge::default();
        registry.register(
            "remote_reachable",
            "1 when the last fetch of the config repository's remote succeeded, 0 while it fails (the server serves the revision its mirror holds)",
            remote_reachable.clone(),
        );
        let fetch_failures = Counter::default();
        registry.register(
            "fetch_failures",
            "Fetches of the config repository's remote that failed (retried after a backoff)",
            fetch_failures.clone(),
        );
        let results = |family: &Family<ResultLabels, Counter>, all: &[&str]| {
            for result in all {
                let _ = family.get_or_create(&ResultLabels {
                    result: (*result).to_owned(),
                });
            }
        };
        for forge in FORGES {
            for result in DELIVERY_RESULTS {
                let _ = webhook_deliveries.get_or_create(&DeliveryLabels {
                    forge: forge.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
        results(&reports, &REPORT_RESULTS);
        results(&admin_calls, &ADMIN_RESULTS);
        for outcome in ROLLOUT_OUTCOMES {
            let _ = rollouts.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }
        results(&revisions, &REVISION_RESULTS);
        results(&drift_runs, &DRIFT_RUN_RESULTS);
        results(&pr_feedback, &PR_FEEDBACK_RESULTS);
        Metrics {
            registry,
            webhook_deliveries,
            reports,
            admin_calls,
            rollouts,
            revisions,
            stage_duration,
            report_duration,
            journal_commit,
            nodes,
            notifications,
            drift_nodes,
            drift_runs,
            pr_feedback,
            remote_reachable,
            fetch_failures,
        }
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
