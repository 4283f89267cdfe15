//! Scheduled drift runs of `cacheflow serve`: on `drift.schedule` (crontab, 5 fields or 6
//! with seconds, in `drift.timezone`), compare the current revision with the nodes' latest
//! reports, write the report into `<state-dir>/drift/` and tell the targets.
//!
//! ```text
//! DriftTimer::poll(schedule, now) ─► due ─► Handle::drift_inputs (revision + readings)
//!   ─► drift::compute ─► latest.{md,json,html} + one line of history.jsonl
//!   ─► cacheflow_drift_nodes / cacheflow_drift_runs_total
//!   ─► drift::notice_decision (notified.json: what the last notice told, and when)
//!   ─► drift-found (appeared, changed, or unchanged for drift.repeat) or drift-cleared
//!      to drift.notify (or every target subscribed to drift-found)
//!   ─► drift.mode: correct ─► Handle::correct: staged rollouts, journaled
//! ```
//!
//! A node whose last report is older than `--silent-after` counts as silent; a node that
//! reports but no cluster declares is listed as undeclared.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::edges::metrics::{DriftLabels, Metrics};
use crate::edges::notify::{self, Notice, Notifier};
use crate::flow::runtime::Handle;
use crate::pure::drift::{self, DriftKind, DriftReport, NoticeDecision};
use crate::pure::schedule::Crontab;
use crate::pure::spec::model::{Desired, DriftMode, Notification};

/// Points of the chart in the HTML page: the last runs.
pub const HISTORY_POINTS: usize = 48;

/// Longest wait between two looks at the schedule (a new revision may change it).
const RECHECK: Duration = Duration::from_secs(30);

/// When the next scheduled run is due. Missed firings (the process was stopped, the
/// machine suspended) collapse into one run, not a burst.
#[derive(Debug, Clone)]
pub struct DriftTimer {
    /// Runs are due at firings strictly after this instant.
    from: DateTime<Utc>,
}

/// What [`DriftTimer::poll`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Run now: the schedule fired at this instant.
    Due(DateTime<Utc>),
    /// Look again after this long.
    Wait(Duration),
}

impl DriftTimer {
    pub fn new(now: DateTime<Utc>) -> DriftTimer {
        DriftTimer { from: now }
    }

    /// With the schedule in force now (`None`: no scheduled runs) and its zone.
    pub fn poll(
        &mut self,
        schedule: Option<(&Crontab, chrono_tz::Tz)>,
        now: DateTime<Utc>,
    ) -> Poll {
        let Some((cron, zone)) = schedule else {
            // Only firings after the schedule appears count.
            self.from = now;
            return Poll::Wait(RECHECK);
        };
        let Some(next) = cron
            .next_after(&self.from.with_timezone(&zone))
            .map(|t| t.with_timezone(&Utc))
        else {
            self.from = now;
            return Poll::Wait(RECHECK);
        };
        if next <= now {
            self.from = now;
            Poll::Due(next)
        } else {
            let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
            Poll::Wait(wait.min(RECHECK))
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryLine {
    pub at: String,
    pub revision: Option<String>,
    /// Nodes drifted (changed by hand, not persisted) or undeclared. Lines written before
    /// `silent` was kept counted silent nodes here too.
    pub drifted: usize,
    pub clean: bool,
    /// Declared nodes that did not answer (`None` in lines written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent: Option<usize>,
}

impl HistoryLine {
    /// The run as the chart draws it.
    pub fn run(&self) -> drift::Run {
        drift::Run {
            at: self.at.clone(),
            drifted: self.drifted,
            silent: self.silent.unwrap_or(0),
        }
    }
}

/// The schedule of a revision's settings, if it has a valid one.
fn schedule_of(desired: &Desired) -> Option<(Crontab, chrono_tz::Tz)> {
    let drift = &desired.settings.drift;
    let expr = drift.schedule.as_deref()?;
    // Validated with the revision; a failure here is logged, not fatal.
    match (
        Crontab::parse(expr, &[5, 6]),
        crate::pure::windows::parse_zone(drift.timezone.as_deref()),
    ) {
        (Ok(c), Ok(z)) => Some((c, z)),
        (Err(e), _) => {
            tracing::error!("drift schedule ignored: {e}");
            None
        }
        (_, Err(e)) => {
            tracing::error!("drift schedule ignored: {e}");
            None
        }
    }
}

/// The targets of a drift notice of `kind`: `drift.notify` by name when given (whatever
/// their `events:`), else every target subscribed to `drift-found`, and for
/// `drift-cleared` also those subscribed to it alone (a target told of drift is told
/// when it clears).
pub fn drift_targets(desired: &Desired, kind: notify::Kind) -> Vec<Notification> {
    let settings = &desired.settings;
    if settings.drift.notify.is_empty() {
        return settings
            .notifications
            .iter()
            .filter(|n| {
                let subscribed = |k: notify::Kind| {
                    n.events.is_empty() || n.events.iter().any(|e| e == k.as_str())
                };
                subscribed(notify::Kind::DriftFound)
                    || (kind == notify::Kind::DriftCleared && subscribed(kind))
            })
            .map(|n| Notification {
                events: Vec::new(),
                ..n.clone()
            })
            .collect();
    }
    settings
        .notifications
        .iter()
        .filter(|n| settings.drift.notify.contains(&n.name))
        .map(|n| Notification {
            events: Vec::new(),
            ..n.clone()
        })
        .collect()
}

/// Everything a run needs.
#[derive(Clone)]
pub struct DriftRunner {
    pub handle: Handle,
    pub dir: PathBuf,
    pub metrics: Arc<Metrics>,
    pub notifier: Notifier,
    pub silent_after: Duration,
    /// Signalled when a revision is taken: its schedule may differ.
    pub revision_taken: Arc<tokio::sync::Notify>,
    /// Held from reading `notified.json` to writing it: a scheduled run and a requested
    /// one (`POST /api/v1/drift/run`) never both send the same notice.
    pub notices: Arc<tokio::sync::Mutex<()>>,
}

impl DriftRunner {
    /// Run on the schedule until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut timer = DriftTimer::new(Utc::now());
        loop {
            let desired = match self.handle.drift_inputs(self.silent_after).await {
                Ok(inputs) => inputs.desired,
                Err(_) => return,
            };
            let schedule = desired.as_deref().and_then(schedule_of);
            let poll = timer.poll(schedule.as_ref().map(|(c, z)| (c, *z)), Utc::now());
            match poll {
                // Just started: nodes not heard from yet are not silent.
                Poll::Due(at) if self.handle.uptime() < self.silent_after => {
                    tracing::info!(
                        "scheduled drift run ({at}) skipped: nodes are still reporting after the start"
                    );
                }
                Poll::Due(at) => {
                    tracing::info!("scheduled drift run ({at})");
                    if let Err(e) = self.once().await {
                        tracing::warn!(event = "drift_run_failed", "the drift run failed: {e}");
                    }
                }
                Poll::Wait(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.revision_taken.notified() => {}
                        _ = stop.changed() => {}
                    }
                }
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One run: report, files, metrics, notification, correction.
    pub async fn once(&self) -> Result<DriftReport, DriftError> {
        let inputs = self.handle.drift_inputs(self.silent_after).await?;
        let (live, not_compared) = (inputs.live, inputs.not_compared);
        let Some(desired) = inputs.desired else {
            Metrics::count(&self.metrics.drift_runs, "error");
            return Err(DriftError::NothingTaken);
        };
        let dir = self.dir.clone();
        let d = desired.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut report = drift::compute(&d, &live, &crate::edges::nodes::fleet::now_rfc3339());
            report.not_compared = not_compared;
            write_report(&dir, &report).map(|()| report)
        })
        .await?;
        let report = match written {
            Ok(r) => r,
            Err(e) => {
                Metrics::count(&self.metrics.drift_runs, "error");
                return Err(e);
            }
        };
        self.gauges(&report);
        log_report(&report);
        let clean = report.clean();
        Metrics::count(
            &self.metrics.drift_runs,
            if clean { "clean" } else { "drift" },
        );
        self.notify(&desired, &report).await;
        if desired.settings.drift.mode == DriftMode::Correct {
            let to_correct: Vec<String> = report
                .clusters
                .iter()
                .filter(|c| {
                    c.drifted
                        .iter()
                        .any(|n| n.parameters.iter().any(|p| p.kind == DriftKind::Differs))
                })
                .map(|c| c.cluster.clone())
                .collect();
            if !to_correct.is_empty() {
                self.handle.correct(to_correct).await?;
            }
        }
        Ok(report)
    }

    /// Tell the targets when the drift appeared, changed or cleared, or unchanged for
    /// `drift.repeat` since the last notice (the decision: [`drift::notice_decision`]);
    /// then remember what was told in `notified.json`. Sent before it is remembered: a
    /// crash in between repeats a notice after the restart rather than lose one. A memory
    /// that cannot be written is logged, and does not stop the run (nor its correction):
    /// the next run tells the same drift again.
    async fn notify(&self, desired: &Desired, report: &DriftReport) {
        let _one_at_a_time = self.notices.lock().await;
        let dir = self.dir.clone();
        let last = tokio::task::spawn_blocking(move || read_notified(&dir))
            .await
            .unwrap_or_default();
        let found = drift::findings(report, last.as_ref());
        let now = Utc::now();
        let decision =
            drift::notice_decision(last.as_ref(), &found, now, desired.settings.drift.repeat());
        Metrics::count(&self.metrics.drift_notices, decision.as_str());
        let Some(memory) = drift::Notified::after(
            last.as_ref(),
            decision,
            found,
            &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ) else {
            tracing::debug!("drift unchanged since the last notice: none sent");
            return;
        };
        let (summary, details) = drift::notice_text(decision, report, last.as_ref());
        let kind = if decision == NoticeDecision::Cleared {
            notify::Kind::DriftCleared
        } else {
            notify::Kind::DriftFound
        };
        let mut notice = Notice::new(kind, summary).details(details);
        if let Some(r) = &report.revision {
            notice = notice.revision(r);
        }
        self.notifier.send(&drift_targets(desired, kind), &notice);
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || write_notified(&dir, &memory)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot remember the drift notice: {e}"),
            Err(e) => tracing::warn!("cannot remember the drift notice: {e}"),
        }
    }

    fn gauges(&self, report: &DriftReport) {
        self.metrics.drift_nodes.clear();
        for c in &report.clusters {
            let mut differs = 0;
            let mut not_persisted = 0;
            for n in &c.drifted {
                if n.parameters.iter().any(|p| p.kind == DriftKind::Differs) {
                    differs += 1;
                } else {
                    not_persisted += 1;
                }
            }
            for (kind, n) in [
                ("differs", differs),
                ("not_persisted", not_persisted),
                ("silent", c.silent.len()),
            ] {
                self.metrics
                    .drift_nodes
                    .get_or_create(&DriftLabels {
                        cluster: c.cluster.clone(),
                        kind: kind.to_owned(),
                    })
                    .set(n as i64);
            }
        }
    }
}

/// What the last drift notice told, in `notified.json` beside the reports.
pub const NOTIFIED_FILE: &str = "notified.json";

/// The memory of the last drift notice; `None` when there is none (a first run) or it
/// does not read (logged): the next drift is then notified as new.
pub fn read_notified(dir: &Path) -> Option<drift::Notified> {
    let path = dir.join(NOTIFIED_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the last drift notice");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the last drift notice does not read; drift will be notified as new");
            None
        }
    }
}

/// Replace `notified.json` whole.
pub fn write_notified(dir: &Path, notified: &drift::Notified) -> Result<(), DriftError> {
    std::fs::create_dir_all(dir).map_err(|source| DriftError::File {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    replace(
        &dir.join(NOTIFIED_FILE),
        serde_json::to_string_pretty(notified)?.as_bytes(),
    )
}

/// The run's findings as log records, one per drifted or silent node (event
/// `node_drifted` or `node_silent`, with `cluster`, `node`, `revision`), or one
/// `drift_clean`.
fn log_report(report: &DriftReport) {
    let revision = report.revision.as_deref();
    if report.clean() {
        tracing::info!(target: "cacheflow::drift", event = "drift_clean", revision, "drift run: no drift");
    }
    for c in &report.clusters {
        let cluster = c.cluster.as_str();
        for n in &c.drifted {
            let parameters: Vec<&str> = n.parameters.iter().map(|p| p.name.as_str()).collect();
            let parameters = parameters.join(", ");
            tracing::warn!(target: "cacheflow::drift", event = "node_drifted", cluster, node = n.node.as_str(), revision, parameters = parameters.as_str(), "{cluster}: {} drifted: {parameters}", n.node);
        }
        for n in &c.silent {
            tracing::warn!(target: "cacheflow::drift", event = "node_silent", cluster, node = n.node.as_str(), revision, "{cluster}: {} is silent: {}", n.node, n.reason);
        }
    }
    for node in &report.undeclared {
        tracing::warn!(target: "cacheflow::drift", event = "node_undeclared", node = node.as_str(), revision, "{node} reports but no cluster declares it");
    }
}

/// Why a drift run gave no report.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error(transparent)]
    Stopped(#[from] crate::flow::runtime::Stopped),
    #[error("no revision taken yet: nothing to compare")]
    NothingTaken,
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

/// Write `latest.{json,md,html}` (each replaced whole: a reader never sees half a file)
/// and append the run to `history.jsonl`.
pub fn write_report(dir: &Path, report: &DriftReport) -> Result<(), DriftError> {
    let file = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| DriftError::File {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(file("create", dir))?;
    let history_path = dir.join("history.jsonl");
    let line = HistoryLine {
        at: report.generated_at.clone(),
        revision: report.revision.clone(),
        drifted: report.drifted_only(),
        clean: report.clean(),
        silent: Some(report.silent_nodes()),
    };
    // The runs before this one: the page draws this one from the report itself.
    let earlier = read_history(&history_path, HISTORY_POINTS.saturating_sub(1));
    let json = serde_json::to_string_pretty(report)?;
    for (name, contents) in [
        ("latest.json", json),
        ("latest.md", drift::markdown(report)),
        ("latest.html", drift::html(report, &earlier)),
    ] {
        replace(&dir.join(name), contents.as_bytes())?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&history_path)
        .map_err(file("open", &history_path))?;
    let mut text = serde_json::to_string(&line)?;
    text.push('\n');
    out.write_all(text.as_bytes())
        .map_err(file("write", &history_path))
}

/// The last `n` runs of a history file, oldest first (lines that do not parse are
/// skipped: a line cut short by a crash).
pub fn read_history(path: &Path, n: usize) -> Vec<drift::Run> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let all: Vec<drift::Run> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<HistoryLine>(l).ok())
        .map(|h| h.run())
        .collect();
    all[all.len().saturating_sub(n)..].to_vec()
}

fn replace(path: &Path, contents: &[u8]) -> Result<(), DriftError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| DriftError::File {
            action: "write",
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Drive the timer over virtual time, one poll every `step`, and list the firings.
    fn firings(expr: &str, zone: &str, from: &str, until: &str, step: Duration) -> Vec<String> {
        let cron = Crontab::parse(expr, &[5, 6]).unwrap();
        let zone: chrono_tz::Tz = zone.parse().unwrap();
        let mut now = utc(from);
        let end = utc(until);
        let mut timer = DriftTimer::new(now);
        let mut out = Vec::new();
        while now < end {
            match timer.poll(Some((&cron, zone)), now) {
                Poll::Due(at) => out.push(format!(
                    "{} ran {}",
                    at.with_timezone(&zone).format("%a %H:%M:%S %Z"),
                    now.format("%H:%M:%S")
                )),
                Poll::Wait(d) => {
                    assert!(d <= RECHECK && d > Duration::ZERO, "{d:?}");
                    now += chrono::Duration::from_std(d.min(step)).unwrap();
                }
            }
        }
        out
    }

    #[test]
    fn a_five_field_schedule_fires_on_its_minutes_and_waits_no_longer_than_needed() {
        assert_eq!(
            firings(
                "*/30 * * * *",
                "UTC",
                "2026-11-20T10:07:00Z",
                "2026-11-20T11:31:00Z",
                Duration::from_secs(3600)
            ),
            [
                "Fri 10:30:00 UTC ran 10:30:00",
                "Fri 11:00:00 UTC ran 11:00:00",
                "Fri 11:30:00 UTC ran 11:30:00"
            ]
        );
    }

    #[test]
    fn six_fields_with_seconds_in_berlin_across_midnight_and_the_dst_change() {
        // 23:59:30 and 00:00:30 Berlin time, every day: one firing on each side of
        // midnight; Berlin is UTC+1 in November, so midnight is 23:00 UTC.
        assert_eq!(
            firings(
                "30 59 23,0 * * *",
                "Europe/Berlin",
                "2026-11-20T22:00:00Z",
                "2026-11-21T23:30:00Z",
                Duration::from_secs(3600)
            ),
            [
                "Fri 23:59:30 CET ran 22:59:30",
                "Sat 00:59:30 CET ran 23:59:30",
                "Sat 23:59:30 CET ran 22:59:30",
            ]
        );
        // Daily at 02:30 Berlin across the end of summer time (25 October 2026): 02:30
        // happens twice that night and fires once.
        let cron = Crontab::parse("30 2 * * *", &[5]).unwrap();
        let zone = chrono_tz::Europe::Berlin;
        let mut timer = DriftTimer::new(utc("2026-10-24T12:00:00Z"));
        let mut now = utc("2026-10-24T12:00:00Z");
        let mut runs = Vec::new();
        while now < utc("2026-10-26T12:00:00Z") {
            match timer.poll(Some((&cron, zone)), now) {
                Poll::Due(at) => runs.push(at.to_rfc3339()),
                Poll::Wait(d) => now += chrono::Duration::from_std(d).unwrap(),
            }
        }
        assert_eq!(
            runs,
            ["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
    }

    #[test]
    fn missed_firings_run_once_and_no_schedule_runs_nothing() {
        let cron = Crontab::parse("* * * * *", &[5]).unwrap();
        let mut timer = DriftTimer::new(utc("2026-11-20T10:00:10Z"));
        // Asleep for an hour: one run, then the next minute.
        assert_eq!(
            timer.poll(Some((&cron, chrono_tz::UTC)), utc("2026-11-20T11:00:05Z")),
            Poll::Due(utc("2026-11-20T10:01:00Z"))
        );
        assert_eq!(
            timer.poll(Some((&cron, chrono_tz::UTC)), utc("2026-11-20T11:00:05Z")),
            Poll::Wait(Duration::from_secs(30))
        );
        assert_eq!(
            timer.poll(Some((&cron, chrono_tz::UTC)), utc("2026-11-20T11:00:40Z")),
            Poll::Wait(Duration::from_secs(20))
        );
        // No schedule: nothing, and a schedule that appears later fires only after.
        let mut timer = DriftTimer::new(utc("2026-11-20T10:00:00Z"));
        assert_eq!(
            timer.poll(None, utc("2026-11-20T12:00:00Z")),
            Poll::Wait(RECHECK)
        );
        assert_eq!(
            timer.poll(Some((&cron, chrono_tz::UTC)), utc("2026-11-20T12:00:30Z")),
            Poll::Wait(Duration::from_secs(30))
        );
        assert_eq!(
            timer.poll(Some((&cron, chrono_tz::UTC)), utc("2026-11-20T12:01:00Z")),
            Poll::Due(utc("2026-11-20T12:01:00Z"))
        );
    }

    #[test]
    fn drift_cleared_goes_to_those_told_of_drift_and_to_its_own_subscribers() {
        use crate::pure::spec::model::{NotificationKind, SecretRef};
        let target = |name: &str, events: &[&str]| Notification {
            name: name.to_owned(),
            kind: NotificationKind::Webhook,
            url: SecretRef(format!("env:{name}")),
            events: events.iter().map(|e| e.to_string()).collect(),
        };
        let mut desired = Desired {
            commit: None,
            settings: Default::default(),
            profiles: Default::default(),
            clusters: Default::default(),
        };
        desired.settings.notifications = vec![
            target("all", &[]),
            target("found", &["drift-found"]),
            target("cleared", &["drift-cleared"]),
            target("rollouts", &["rollout-failed"]),
        ];
        let names = |d: &Desired, k| -> Vec<String> {
            drift_targets(d, k).into_iter().map(|n| n.name).collect()
        };
        assert_eq!(names(&desired, notify::Kind::DriftFound), ["all", "found"]);
        assert_eq!(
            names(&desired, notify::Kind::DriftCleared),
            ["all", "found", "cleared"]
        );
        // Every target returned takes the notice whatever its events.
        assert!(drift_targets(&desired, notify::Kind::DriftCleared)
            .iter()
            .all(|n| n.events.is_empty()));
        // drift.notify names them: both notices, to those alone.
        desired.settings.drift.notify = vec!["rollouts".into()];
        assert_eq!(names(&desired, notify::Kind::DriftFound), ["rollouts"]);
        assert_eq!(names(&desired, notify::Kind::DriftCleared), ["rollouts"]);
    }

    #[test]
    fn the_last_notice_is_remembered_and_a_torn_memory_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_notified(dir.path()), None);
        let memory = drift::Notified {
            findings: vec![drift::Finding {
                cluster: "cache".into(),
                node: "a2".into(),
                what: "hz differs: expected 10, found 50".into(),
            }],
            at: "2026-11-21T03:00:00Z".into(),
            since: "2026-11-21T01:00:00Z".into(),
        };
        write_notified(dir.path(), &memory).unwrap();
        assert_eq!(read_notified(dir.path()), Some(memory));
        std::fs::write(dir.path().join(NOTIFIED_FILE), "{\"findings\": [").unwrap();
        assert_eq!(read_notified(dir.path()), None);
    }

    #[test]
    fn each_run_is_written_once_into_the_history_and_the_page_draws_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let report = |at: &str, silent: usize| DriftReport {
            generated_at: at.into(),
            revision: None,
            clusters: vec![drift::ClusterDrift {
                cluster: "cache".into(),
                engine: None,
                topology: Vec::new(),
                nodes: 3,
                drifted: Vec::new(),
                silent: (0..silent)
                    .map(|i| drift::Silent {
                        node: format!("a{i}"),
                        reason: "refused".into(),
                    })
                    .collect(),
            }],
            undeclared: Vec::new(),
            not_compared: Vec::new(),
        };
        write_report(dir.path(), &report("2026-11-21T00:00:00Z", 0)).unwrap();
        write_report(dir.path(), &report("2026-11-21T01:00:00Z", 2)).unwrap();
        let history = std::fs::read_to_string(dir.path().join("history.jsonl")).unwrap();
        assert_eq!(
            history,
            "{\"at\":\"2026-11-21T00:00:00Z\",\"revision\":null,\"drifted\":0,\"clean\":true,\"silent\":0}\n\
             {\"at\":\"2026-11-21T01:00:00Z\",\"revision\":null,\"drifted\":0,\"clean\":false,\"silent\":2}\n"
        );
        let page = std::fs::read_to_string(dir.path().join("latest.html")).unwrap();
        assert_eq!(page.matches("<g class=\"run\">").count(), 2, "{page}");
        assert_eq!(
            page.matches("2026-11-21T01:00:00Z: 0 drifted, 2 silent")
                .count(),
            1
        );
        assert_eq!(
            page.matches("2026-11-21T00:00:00Z: 0 drifted, 0 silent")
                .count(),
            1
        );
    }

    #[test]
    fn history_keeps_the_last_points_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let mut text = String::new();
        for i in 0..5 {
            text.push_str(&format!(
                "{{\"at\":\"t{i}\",\"revision\":null,\"drifted\":{i},\"clean\":false}}\n"
            ));
        }
        text.push_str("{\"at\":\"t5\",\"drif");
        std::fs::write(&path, text).unwrap();
        let runs: Vec<(String, usize, usize)> = read_history(&path, 3)
            .into_iter()
            .map(|r| (r.at, r.drifted, r.silent))
            .collect();
        assert_eq!(
            runs,
            [
                ("t2".to_owned(), 2, 0),
                ("t3".to_owned(), 3, 0),
                ("t4".to_owned(), 4, 0)
            ]
        );
        assert!(read_history(&dir.path().join("none"), 3).is_empty());
    }
}
