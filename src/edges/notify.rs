//! Notifications: what happened to a rollout or a drift run, sent to the targets of
//! `cacheflow.yaml` (`notifications:`), Slack-compatible (`{"text": …}`) or generic JSON.
//!
//! ```text
//! reconciler ─► Effect::Notify (after its journal entry is written)
//!   ─► Notifier::send: try_send into each target's queue (never waits)
//!        ─► one worker task per target: resolve the URL's secret reference, POST,
//!           retry with backoff (connection errors, timeouts, 429, 5xx), count the result
//! ```
//!
//! A target that fails or hangs holds up only its own queue: every attempt has a
//! timeout, the queue is bounded and a notice that finds it full is dropped (and
//! counted), so the reconciler is never blocked or slowed. The URL of a webhook is a
//! secret (Slack's carries its token): it is held as a reference and resolved in the
//! worker; logs and errors name the target, never its URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::edges::metrics::Metrics;
use crate::pure::spec::model::{Notification, NotificationKind};

pub use crate::pure::reconciler::effect::{targets_for, Notice, NoticeKind as Kind};

/// Delivery's side of a notice: the core builds notices with the time of its input
/// ([`Notice::new_at`]); the shell's own notices (the drift runs) are stamped now.
impl Notice {
    pub fn new(event: Kind, summary: impl Into<String>) -> Notice {
        Notice::new_at(event, summary, crate::edges::clock::now_rfc3339())
    }

    /// The request body for a target of `kind`.
    pub fn body(&self, kind: NotificationKind) -> String {
        match kind {
            NotificationKind::Webhook => serde_json::to_string(&serde_json::json!({
                "source": "cacheflow",
                "event": self.event,
                "cluster": self.cluster,
                "revision": self.revision,
                "summary": self.summary,
                "details": self.details,
                "at": self.at,
            }))
            .unwrap_or_default(),
            NotificationKind::Slack => {
                let mut text = format!("*cacheflow* `{}`: {}", self.event.as_str(), self.summary);
                if !self.details.is_empty() {
                    text.push_str("\n```\n");
                    // Slack rejects messages over 40,000 characters; keep them short.
                    text.push_str(truncate(&self.details, 3000));
                    text.push_str("\n```");
                }
                serde_json::to_string(&serde_json::json!({ "text": text })).unwrap_or_default()
            }
        }
    }
}

/// At most `max` characters of `s`.
fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub struct NotifyOptions {
    /// Bound of one attempt (connect, send, answer).
    pub timeout: Duration,
    /// Attempts per notice, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubled each time, up to 60 s.
    pub backoff: Duration,
    /// Notices waiting per target; more are dropped.
    pub queue: usize,
}

impl Default for NotifyOptions {
    fn default() -> Self {
        NotifyOptions {
            timeout: Duration::from_secs(10),
            attempts: 5,
            backoff: Duration::from_secs(1),
            queue: 256,
        }
    }
}

/// A target's name, URL reference and kind.
type TargetKey = (String, String, &'static str);

/// Sends notices without ever waiting. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    options: NotifyOptions,
    metrics: Option<Arc<Metrics>>,
    rt: tokio::runtime::Handle,
    /// One queue per target (name, kind and URL reference: a changed target is a new one).
    queues: Mutex<HashMap<TargetKey, mpsc::Sender<Notice>>>,
}

impl Notifier {
    /// A notifier whose workers run on the current Tokio runtime.
    pub fn new(options: NotifyOptions, metrics: Option<Arc<Metrics>>) -> Notifier {
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .user_agent(concat!("cacheflow/", env!("CARGO_PKG_VERSION")))
            // A webhook URL that redirects elsewhere is not followed with the notice.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Notifier {
            inner: Arc::new(Inner {
                client,
                options,
                metrics,
                rt: tokio::runtime::Handle::current(),
                queues: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Queue `notice` for every target of `all` subscribed to its event. Never waits:
    /// callable from the reconciler and from threads outside the runtime.
    pub fn send(&self, all: &[Notification], notice: &Notice) {
        for target in targets_for(all, notice.event) {
            let kind = match target.kind {
                NotificationKind::Slack => "slack",
                NotificationKind::Webhook => "webhook",
            };
            let key = (target.name.clone(), target.url.0.clone(), kind);
            let tx = {
                // The map stays whole if a holder panicked: insertions are single calls.
                let mut queues = self
                    .inner
                    .queues
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                queues
                    .entry(key)
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(self.inner.options.queue.max(1));
                        self.inner
                            .rt
                            .spawn(worker(self.inner.clone(), target.clone(), rx));
                        tx
                    })
                    .clone()
            };
            if tx.try_send(notice.clone()).is_err() {
                tracing::warn!(
                    target: "cacheflow::notify",
                    "notification target `{}` is behind ({} notices waiting): {} dropped",
                    target.name,
                    self.inner.options.queue,
                    notice.event.as_str()
                );
                self.count(&target.name, "dropped");
            }
        }
    }

    fn count(&self, target: &str, result: &str) {
        self.inner.count(target, result);
    }
}

impl Inner {
    fn count(&self, target: &str, result: &str) {
        if let Some(m) = &self.metrics {
            m.notification(target, result);
        }
    }
}

/// One target's deliveries, in order.
async fn worker(inner: Arc<Inner>, target: Notification, mut rx: mpsc::Receiver<Notice>) {
    while let Some(notice) = rx.recv().await {
        match deliver(&inner, &target, &notice).await {
            Ok(()) => inner.count(&target.name, "sent"),
            Err(why) => {
                tracing::warn!(
                    target: "cacheflow::notify",
                    "notification target `{}`: {} not delivered: {why}",
                    target.name,
                    notice.event.as_str()
                );
                inner.count(&target.name, "failed");
            }
        }
    }
}

/// Why a notice was not delivered. Never holds the URL (it may carry a token).
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Secret(#[from] crate::edges::secret::SecretError),
    /// A refusal (404 of a deleted hook, 400 of a bad payload): not retried.
    #[error("answered {0}")]
    Refused(reqwest::StatusCode),
    #[error("{last} (after {attempts} attempts)")]
    GaveUp { last: Attempt, attempts: u32 },
}

/// How one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum Attempt {
    #[error("answered {0}")]
    Answered(reqwest::StatusCode),
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The client's error, described without its URL.
    #[error("{0}")]
    Failed(String),
}

/// Deliver one notice, retrying what may succeed later. The error never holds the URL.
async fn deliver(inner: &Inner, target: &Notification, notice: &Notice) -> Result<(), NotifyError> {
    let url = crate::edges::secret::resolve(&target.url)?;
    let body = notice.body(target.kind);
    let mut wait = inner.options.backoff;
    let attempts = inner.options.attempts.max(1);
    let mut last = Attempt::Failed(String::new());
    for attempt in 1..=attempts {
        if attempt > 1 {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
        let sent = inner
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => {
                let status = answer.status();
                // A refusal (404 of a deleted hook, 400 of a bad payload) stays one, and
                // a redirect is not followed with the notice.
                let retry = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
                if !retry {
                    return Err(NotifyError::Refused(status));
                }
                last = Attempt::Answered(status);
            }
            Err(e) => {
                last = if e.is_timeout() {
                    Attempt::NoAnswer(inner.options.timeout)
                } else {
                    Attempt::Failed(crate::edges::http_error::describe(&e.without_url()))
                };
            }
        }
        tracing::debug!(
            target: "cacheflow::notify",
            "notification target `{}`: attempt {attempt} failed: {last}",
            target.name
        );
    }
    Err(NotifyError::GaveUp { last, attempts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::spec::model::SecretRef;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::Router;
    use std::time::Instant;

    /// A local receiver: records bodies; answers `fail_first` requests with 503 and
    /// never answers at all when `hang`.
    #[derive(Clone, Default)]
    struct Receiver {
        bodies: Arc<Mutex<Vec<String>>>,
        calls: Arc<Mutex<u32>>,
        fail_first: u32,
        status: u16,
        hang: bool,
    }

    async fn receive(State(r): State<Receiver>, body: String) -> StatusCode {
        let n = {
            let mut c = r.calls.lock().unwrap();
            *c += 1;
            *c
        };
        if r.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        if n <= r.fail_first {
            return StatusCode::from_u16(r.status).unwrap();
        }
        r.bodies.lock().unwrap().push(body);
        StatusCode::OK
    }

    async fn start(r: Receiver) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hook", post(receive)).with_state(r);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/hook")
    }

    fn target(name: &str, kind: NotificationKind, env: &str, events: &[&str]) -> Notification {
        Notification {
            name: name.to_owned(),
            kind,
            url: SecretRef(format!("env:{env}")),
            events: events.iter().map(|e| e.to_string()).collect(),
        }
    }

    async fn until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
        let began = Instant::now();
        while !ok() {
            assert!(began.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn bodies_are_slack_text_or_the_generic_json_and_targets_filter_events() {
        let n = Notice {
            event: Kind::RolledBack,
            cluster: Some("sessions-eu".into()),
            revision: Some("abc".into()),
            summary: "sessions-eu: abc rolled back".into(),
            details: "gate hit ratio failed".into(),
            at: "2026-11-21T10:00:00Z".into(),
        };
        assert_eq!(
            n.body(NotificationKind::Slack),
            r#"{"text":"*cacheflow* `rolled-back`: sessions-eu: abc rolled back\n```\ngate hit ratio failed\n```"}"#
        );
        assert_eq!(
            n.body(NotificationKind::Webhook),
            r#"{"at":"2026-11-21T10:00:00Z","cluster":"sessions-eu","details":"gate hit ratio failed","event":"rolled-back","revision":"abc","source":"cacheflow","summary":"sessions-eu: abc rolled back"}"#
        );
        let all = [
            target("a", NotificationKind::Slack, "X", &["rolled-back"]),
            target("b", NotificationKind::Webhook, "X", &["drift-found"]),
            target("c", NotificationKind::Webhook, "X", &[]),
        ];
        let names = |k| -> Vec<&str> {
            targets_for(&all, k)
                .iter()
                .map(|t| t.name.as_str())
                .collect()
        };
        assert_eq!(names(Kind::RolledBack), ["a", "c"]);
        assert_eq!(names(Kind::DriftFound), ["b", "c"]);
        assert_eq!(names(Kind::Paused), ["c"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_and_a_hanging_target_neither_block_nor_delay_the_others() {
        let good = Receiver::default();
        let flaky = Receiver {
            fail_first: 2,
            status: 503,
            ..Receiver::default()
        };
        let refusing = Receiver {
            fail_first: 100,
            status: 404,
            ..Receiver::default()
        };
        let hanging = Receiver {
            hang: true,
            ..Receiver::default()
        };
        std::env::set_var("CACHEFLOW_TEST_NOTIFY_GOOD", start(good.clone()).await);
        std::env::set_var("CACHEFLOW_TEST_NOTIFY_FLAKY", start(flaky.clone()).await);
        std::env::set_var("CACHEFLOW_TEST_NOTIFY_404", start(refusing.clone()).await);
        std::env::set_var("CACHEFLOW_TEST_NOTIFY_HANG", start(hanging.clone()).await);
        let metrics = Arc::new(Metrics::default());
        let notifier = Notifier::new(
            NotifyOptions {
                timeout: Duration::from_millis(500),
                attempts: 3,
                backoff: Duration::from_millis(50),
                queue: 4,
            },
            Some(metrics.clone()),
        );
        let all = [
            target(
                "good",
                NotificationKind::Webhook,
                "CACHEFLOW_TEST_NOTIFY_GOOD",
                &[],
            ),
            target(
                "flaky",
                NotificationKind::Slack,
                "CACHEFLOW_TEST_NOTIFY_FLAKY",
                &[],
            ),
            target(
                "refusing",
                NotificationKind::Webhook,
                "CACHEFLOW_TEST_NOTIFY_404",
                &[],
            ),
            target(
                "hanging",
                NotificationKind::Webhook,
                "CACHEFLOW_TEST_NOTIFY_HANG",
                &[],
            ),
            target(
                "unset",
                NotificationKind::Webhook,
                "CACHEFLOW_TEST_NOTIFY_UNSET",
                &[],
            ),
        ];
        let send = |i: u32| {
            let began = Instant::now();
            notifier.send(
                &all,
                &Notice::new(Kind::RolloutStarted, format!("rollout {i}")).cluster("c"),
            );
            // Sending never waits, whatever the targets do.
            assert!(
                began.elapsed() < Duration::from_millis(20),
                "{:?}",
                began.elapsed()
            );
        };
        send(0);
        until(
            "the first notice everywhere",
            Duration::from_secs(2),
            || {
                *hanging.calls.lock().unwrap() == 1
                    && *flaky.calls.lock().unwrap() == 3
                    && *refusing.calls.lock().unwrap() == 1
                    && good.bodies.lock().unwrap().len() == 1
            },
        )
        .await;
        // A burst as deep as the queues: every target holds it.
        for i in 1..5 {
            send(i);
        }
        // The good target has every notice, in order, long before the hanging one's
        // first attempt gives up.
        until("the good target", Duration::from_millis(400), || {
            good.bodies.lock().unwrap().len() == 5
        })
        .await;
        // The hanging target's queue is full now: what comes next is dropped there and
        // delivered everywhere else.
        send(5);
        send(6);
        let bodies = || good.bodies.lock().unwrap().clone();
        until("the good target", Duration::from_millis(400), || {
            bodies().len() == 7
        })
        .await;
        let summaries: Vec<String> = bodies()
            .iter()
            .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap()["summary"].to_string())
            .collect();
        assert_eq!(
            summaries,
            (0..7)
                .map(|i| format!("\"rollout {i}\""))
                .collect::<Vec<_>>()
        );
        let first: serde_json::Value = serde_json::from_str(&bodies()[0]).unwrap();
        assert_eq!(first["event"], "rollout-started");
        assert_eq!(first["cluster"], "c");
        // The flaky one got each, the first after two 503s.
        until("the flaky target", Duration::from_secs(2), || {
            flaky.bodies.lock().unwrap().len() == 7
        })
        .await;
        assert_eq!(*flaky.calls.lock().unwrap(), 9);
        assert!(flaky.bodies.lock().unwrap()[0]
            .starts_with(r#"{"text":"*cacheflow* `rollout-started`: rollout 0"#));
        let has = |line: &str| metrics.encode().lines().any(|l| l == line);
        until("the counts", Duration::from_secs(2), || {
            has(r#"cacheflow_notifications_total{target="refusing",result="failed"} 7"#)
                && has(r#"cacheflow_notifications_total{target="unset",result="failed"} 7"#)
        })
        .await;
        // A 404 is not retried: one call per notice.
        assert_eq!(*refusing.calls.lock().unwrap(), 7);
        let text = metrics.encode();
        for line in [
            r#"cacheflow_notifications_total{target="good",result="sent"} 7"#,
            r#"cacheflow_notifications_total{target="flaky",result="sent"} 7"#,
            r#"cacheflow_notifications_total{target="hanging",result="dropped"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert_eq!(*hanging.calls.lock().unwrap(), 1);
        // No URL (a secret) anywhere in what is counted or logged.
        assert!(!text.contains("127.0.0.1"), "{text}");
    }
}
