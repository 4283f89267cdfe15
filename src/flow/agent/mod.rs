//! The node agent: runs beside one cache server, reports it to the cacheflow server and
//! applies the assignment it gets back. The same loop ([`drive`]) drives directly
//! managed nodes in process; only the [`Reporter`] differs (HTTP here, the reconciler's
//! channel there).
//!
//! ```text
//! loop:
//!   read the node (driver) ──► POST /api/v1/nodes/{id}/report ──► assignment
//!   new (revision, generation)? apply it (see `apply`), then report again at once
//!   otherwise sleep the interval (or what the server asked for)
//!   server unreachable or refusing: back off, doubling up to a cap, with jitter;
//!   the node is left as it is
//! ```
//!
//! The agent never changes the node on its own: only an assignment it has not tried
//! yet makes it act, and it tries each (revision, generation) once. A failed apply is
//! reported; retrying or rolling back is the server's decision (it raises the
//! generation or assigns another revision). A restarted agent keeps no file: an
//! assignment the server says this node confirmed (`confirmedAt`) is not applied again
//! to an engine running since before then (a difference is drift), only to one that
//! started later (it may have lost the values). On SIGTERM the agent finishes the step it is
//! in (never half an apply) and stops.

pub mod apply;
pub mod conffile;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

pub use apply::ApplyOptions;

use crate::edges::clock::now_rfc3339;
use crate::edges::http_error::describe;
use crate::edges::nodes::NodeDriver;
use crate::pure::live::NodeLive;
use crate::pure::protocol::{
    reads_names, ApplyResult, Assignment, Outcome, Report, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION,
    READS_CLUSTER, READS_CONFIRMED, READS_HEADER, READS_TOPOLOGY, READS_UPTIME,
};

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub node_id: String,
    /// The cacheflow server, `https://cacheflow.internal:8080`.
    pub server: String,
    /// This node's token (`cacheflow agent-token ID`).
    pub token: String,
    /// Time between reports when nothing happens.
    pub interval: Duration,
    /// Bound of one report round trip.
    pub http_timeout: Duration,
    /// Bound of one read of the node.
    pub node_timeout: Duration,
    /// Longest pause between attempts while the server cannot be reached.
    pub max_backoff: Duration,
    /// Stop after one exchange (report, apply if assigned, report the result).
    pub once: bool,
    pub apply: ApplyOptions,
    /// A PEM bundle of CAs trusted for an https:// server, besides the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl AgentOptions {
    pub fn new(node_id: &str, server: &str, token: &str) -> AgentOptions {
        AgentOptions {
            node_id: node_id.to_owned(),
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            interval: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            node_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(300),
            once: false,
            apply: ApplyOptions::default(),
            ca_pem: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    #[error("the server URL `{0}` must start with http:// or https://")]
    BadServerUrl(String),
    #[error("cannot make the HTTP client: {0}")]
    Client(String),
    /// Only with `once`: the exchange did not happen.
    #[error("{0}")]
    Exchange(String),
    /// Only with `once`: the assignment was applied and failed.
    #[error("applying revision {revision} failed: {message}")]
    ApplyFailed { revision: String, message: String },
}

/// What the agent remembers between reports.
#[derive(Debug, Default, Clone)]
pub struct AgentState {
    /// The revision the node last applied in full.
    pub applied_revision: Option<String>,
    /// The last (revision, generation) tried, so each is tried once.
    pub last_tried: Option<(String, u64)>,
    pub last_apply: Option<ApplyResult>,
    /// Consecutive failed exchanges with the server.
    pub failures: u32,
}

/// Where an agent's reports go: the server over HTTP (`cacheflow agent`, [`run`]) or the
/// reconciler's channel (the in-process agents of directly managed nodes, see
/// the runtime, which implements it). Everything else is the one loop, [`drive`].
pub trait Reporter: Send + Sync {
    /// The `agent` field of reports.
    fn agent(&self) -> String;
    /// Send `report`. `Ok(None)`: answered, without an assignment (the report was
    /// refused; it is logged and the loop waits its interval).
    fn report(
        &self,
        report: Report,
    ) -> impl std::future::Future<Output = Result<Option<Assignment>, Unreported>> + Send;
    /// Add to a reading what only this kind of agent knows (by default nothing).
    fn describe(&self, _node: &mut NodeLive, _driver: &dyn NodeDriver, _state: &AgentState) {}
    /// Log each apply (the standalone agent's log is the node's own record).
    fn logs_applies(&self) -> bool {
        false
    }
}

/// Why a report got no answer.
#[derive(Debug)]
pub enum Unreported {
    /// The server could not be reached or refused the report: back off and try again.
    Failed(String),
    /// Nothing takes reports any more (the reconciler stopped): the loop ends.
    Gone,
}

/// Why a report POSTed to the server brought back no assignment (`url` is redacted).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Encode(#[source] serde_json::Error),
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url}: reading the answer: {message}")]
    Reading { url: String, message: String },
    #[error("{url}: the answer is larger than {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url}: the server answered {status}{hint}: {text}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        /// What to check, for the statuses that have a likely cause.
        hint: &'static str,
        text: String,
    },
    #[error("{url}: {source}")]
    BadAssignment {
        url: String,
        #[source]
        source: crate::pure::protocol::PayloadError,
    },
    #[error("{url}: the assignment is for node `{got}`, not `{want}`; ignored")]
    OtherNode {
        url: String,
        got: String,
        want: String,
    },
}

/// How the loop reads, applies and waits.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    pub node_id: String,
    /// Time between reports when nothing happens.
    pub interval: Duration,
    /// Bound of one read of the node.
    pub node_timeout: Duration,
    /// Longest pause between attempts while reports fail.
    pub max_backoff: Duration,
    /// Stop after one exchange (report, apply if assigned, report the result).
    pub once: bool,
    pub apply: ApplyOptions,
    /// A reading taken just before: the first report sends it instead of reading again.
    pub first_reading: Option<NodeLive>,
    /// Read only these parameters; all of them when `None`.
    pub declared: Option<Arc<BTreeSet<String>>>,
    /// What the agent starts from: the assignment the node already reported on before
    /// this loop began (an in-process agent of a restarted server learns it from the
    /// journal's state), so it is not applied again; empty for `cacheflow agent`.
    pub remembered: AgentState,
}

impl LoopOptions {
    fn of(options: &AgentOptions) -> LoopOptions {
        LoopOptions {
            node_id: options.node_id.clone(),
            interval: options.interval,
            node_timeout: options.node_timeout,
            max_backoff: options.max_backoff,
            once: options.once,
            apply: options.apply.clone(),
            first_reading: None,
            declared: None,
            remembered: AgentState::default(),
        }
    }
}

/// Run the agent until `stop` turns true (or after one exchange with `once`).
pub async fn run(
    driver: Arc<dyn NodeDriver>,
    options: AgentOptions,
    stop: watch::Receiver<bool>,
) -> Result<AgentState, AgentError> {
    if !(options.server.starts_with("http://") || options.server.starts_with("https://")) {
        return Err(AgentError::BadServerUrl(crate::edges::source::redact_url(
            &options.server,
        )));
    }
    let mut builder = reqwest::Client::builder()
        .timeout(options.http_timeout)
        .user_agent(agent_name());
    if let Some(pem) = &options.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| AgentError::Client("the CA file is not a PEM bundle".to_owned()))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    // Redirects are followed by `post_report` itself: reqwest drops the Authorization
    // header on a redirect to another host, and a replica's 307 always goes to another.
    let client = builder
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AgentError::Client(e.to_string()))?;
    let looped = LoopOptions::of(&options);
    let reporter = Http {
        client,
        options,
        leader: std::sync::Mutex::new(None),
        server_reads_topology: AtomicBool::new(false),
        server_reads_cluster: AtomicBool::new(false),
        server_reads_uptime: AtomicBool::new(false),
    };
    drive(driver, &reporter, looped, None, stop).await
}

/// The one agent loop: read the node, report, apply a new (revision, generation) once and
/// report again at once; otherwise wait the interval (or until `wake`, or `stop`). Failed
/// reports back off with jitter. Once stopping, it reports but starts nothing new.
pub async fn drive<R: Reporter>(
    driver: Arc<dyn NodeDriver>,
    reporter: &R,
    mut options: LoopOptions,
    wake: Option<Arc<Notify>>,
    mut stop: watch::Receiver<bool>,
) -> Result<AgentState, AgentError> {
    let mut state = std::mem::take(&mut options.remembered);
    loop {
        let step = exchange(driver.as_ref(), reporter, &mut options, &mut state, &stop).await;
        let pause = match step {
            Ok(Step::Applied) => {
                state.failures = 0;
                // Report the result at once.
                continue;
            }
            Ok(Step::Idle { next, waiting }) => {
                state.failures = 0;
                if options.once {
                    return finish_once(state, waiting);
                }
                next.unwrap_or(options.interval)
            }
            Err(Unreported::Gone) => return Ok(state),
            Err(Unreported::Failed(message)) => {
                state.failures = state.failures.saturating_add(1);
                let pause = backoff(options.interval, options.max_backoff, state.failures);
                tracing::warn!(
                    node = %options.node_id,
                    error = %message,
                    retry_in_ms = pause.as_millis() as u64,
                    "report failed; the node is left as it is"
                );
                if options.once {
                    return Err(AgentError::Exchange(message));
                }
                pause
            }
        };
        if *stop.borrow() {
            return Ok(state);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = woken(wake.as_deref()) => {}
            changed = stop.changed() => if changed.is_err() { return Ok(state) },
        }
        // Stopped while idle: no last reading nor report (nobody would read them).
        if *stop.borrow() {
            return Ok(state);
        }
    }
}

/// Until `wake` is notified; never without one.
async fn woken(wake: Option<&Notify>) {
    match wake {
        Some(w) => w.notified().await,
        None => std::future::pending().await,
    }
}

fn finish_once(state: AgentState, waiting: Option<String>) -> Result<AgentState, AgentError> {
    if let Some(why) = waiting {
        return Err(AgentError::Exchange(why));
    }
    match &state.last_apply {
        Some(r) if r.outcome != Outcome::Applied => Err(AgentError::ApplyFailed {
            revision: r.revision.clone(),
            message: r.error.clone().unwrap_or_default(),
        }),
        _ => Ok(state),
    }
}

enum Step {
    /// Something was applied (or tried): report again now.
    Applied,
    /// Nothing done; the server may have asked for the next report's time. `waiting`
    /// says why a new assignment was left for later (the node does not answer).
    Idle {
        next: Option<Duration>,
        waiting: Option<String>,
    },
}

/// One report and, when the answer is a new assignment, its apply.
async fn exchange<R: Reporter>(
    driver: &dyn NodeDriver,
    reporter: &R,
    options: &mut LoopOptions,
    state: &mut AgentState,
    stop: &watch::Receiver<bool>,
) -> Result<Step, Unreported> {
    let mut node = read_node(driver, options).await;
    // Since when the engine runs, before `describe` may leave the uptime out.
    let sent_at = now_rfc3339();
    let engine_uptime = node.health.as_ref().and_then(|h| h.uptime_seconds);
    reporter.describe(&mut node, driver, state);
    let reachable = node.reachable;
    let node_error = node.error.clone();
    // What the node ran, for the apply to guess what differs (it checks the guess).
    let seen = reachable.then(|| node.parameters.clone());
    let report = Report {
        version: PROTOCOL_VERSION,
        node_id: options.node_id.clone(),
        agent: reporter.agent(),
        sent_at: sent_at.clone(),
        node,
        last_apply: state.last_apply.clone(),
    };
    let Some(assignment) = reporter.report(report).await? else {
        return Ok(Step::Idle {
            next: None,
            waiting: None,
        });
    };
    let next = assignment.report_interval_secs.map(Duration::from_secs);
    let idle = Step::Idle {
        next,
        waiting: None,
    };
    let Some(revision) = assignment.revision.clone() else {
        return Ok(idle);
    };
    let key = (revision.clone(), assignment.generation);
    if state.last_tried.as_ref() == Some(&key) || *stop.borrow() {
        return Ok(idle);
    }
    if let Some(at) = assignment.confirmed_at.as_deref() {
        if reachable && running_since_before(&sent_at, engine_uptime, at) {
            // This node applied it and its engine has run since: what differs now was
            // changed on the node (drift, for the server to report or correct).
            if reporter.logs_applies() {
                tracing::info!(event = "already_applied", node = %options.node_id, %revision, generation = assignment.generation, confirmed_at = at, "the engine has run this assignment since it was applied; not applied again");
            }
            state.applied_revision = Some(revision);
            state.last_tried = Some(key);
            return Ok(idle);
        }
    }
    if !reachable {
        // Nothing can be applied to a node that does not answer; try when it does.
        return Ok(Step::Idle {
            next,
            waiting: Some(format!(
                "revision {revision} not applied: the node does not answer ({})",
                node_error.unwrap_or_default()
            )),
        });
    }
    let logs = reporter.logs_applies();
    if logs {
        tracing::info!(event = "applying", node = %options.node_id, %revision, generation = assignment.generation, "applying assignment");
    }
    let result = apply::apply(driver, &options.apply, &assignment, seen.as_ref()).await;
    match result.outcome {
        Outcome::Applied => {
            if logs {
                tracing::info!(event = "applied", node = %options.node_id, %revision, changed = ?result.changed, restarted = result.restarted, "applied");
            }
            state.applied_revision = Some(revision);
        }
        _ if logs => {
            tracing::error!(event = "apply_failed", node = %options.node_id, %revision, error = result.error.as_deref().unwrap_or(""), outcome = ?result.outcome, "apply failed")
        }
        _ => {}
    }
    state.last_tried = Some(key);
    state.last_apply = Some(result);
    Ok(Step::Applied)
}

/// Slack for comparing an engine's start (a reading's time less its uptime, both in whole
/// seconds) with an apply's `finishedAt` (also whole seconds), all from this host's clock.
const START_SLACK_SECS: i64 = 2;

/// Whether the engine read at `sent_at`, up for `uptime` seconds, was already running
/// when the assignment was confirmed applied at `confirmed_at`: then it has run the
/// assignment since, and is not applied again. An engine that started later (restarted
/// by its supervisor, a new machine) may have lost values: the assignment is applied
/// again, and the server journals it. No uptime, or times that do not parse: applied again.
fn running_since_before(sent_at: &str, uptime: Option<u64>, confirmed_at: &str) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let (Some(now), Some(confirmed), Some(uptime)) = (parse(sent_at), parse(confirmed_at), uptime)
    else {
        return false;
    };
    let Ok(uptime) = i64::try_from(uptime) else {
        return false;
    };
    let started = now.timestamp().saturating_sub(uptime);
    started <= confirmed.timestamp().saturating_add(START_SLACK_SECS)
}

/// Read the node (or take the reading given for the first report); a node that does not
/// answer is a reading that says so.
async fn read_node(driver: &dyn NodeDriver, options: &mut LoopOptions) -> NodeLive {
    if let Some(live) = options.first_reading.take() {
        return live;
    }
    let reading = async {
        match &options.declared {
            Some(names) => driver.read_declared(names).await,
            None => driver.read().await,
        }
    };
    match tokio::time::timeout(options.node_timeout, reading).await {
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
                options.node_timeout.as_millis()
            )),
            ..NodeLive::default()
        },
    }
}

/// `cacheflow agent`'s reporter: POST to the server.
struct Http {
    client: reqwest::Client,
    options: AgentOptions,
    /// The server named `topology` in its last answer's `cacheflow-reads` header: the
    /// reading's topology goes into the report (an older server would refuse it).
    server_reads_topology: AtomicBool,
    /// The server also named `cluster`: a cluster-mode node's view goes in too.
    server_reads_cluster: AtomicBool,
    /// The server named `uptime`: `health.uptimeSeconds` goes in.
    server_reads_uptime: AtomicBool,
    /// Where the last report went after a replica's redirect (the leader of this node's
    /// shard): the next reports go there directly, until one fails.
    leader: std::sync::Mutex<Option<String>>,
}

impl Reporter for Http {
    fn agent(&self) -> String {
        agent_name()
    }

    async fn report(&self, report: Report) -> Result<Option<Assignment>, Unreported> {
        post_report(
            &self.client,
            &self.options,
            &self.leader,
            &report,
            [
                &self.server_reads_topology,
                &self.server_reads_cluster,
                &self.server_reads_uptime,
            ],
        )
        .await
        .map(Some)
        .map_err(|e| Unreported::Failed(e.to_string()))
    }

    /// The engine, its address, the revision last applied, and for memcached what its
    /// options file will start it with (the three-way view).
    fn describe(&self, node: &mut NodeLive, driver: &dyn NodeDriver, state: &AgentState) {
        node.engine = Some(driver.engine());
        node.address = Some(driver.address().to_owned());
        if let (crate::pure::catalog::Engine::Memcached, Some(path)) =
            (driver.engine(), self.options.apply.config_file.as_deref())
        {
            if let Ok(text) = std::fs::read_to_string(path) {
                node.persisted = Some(crate::flow::agent::conffile::memcached_persisted(&text));
            }
        }
        node.revision = state.applied_revision.clone();
        if !self.server_reads_topology.load(Ordering::Relaxed) {
            if let Some(health) = node.health.as_mut() {
                health.topology = None;
            }
        }
        if !self.server_reads_uptime.load(Ordering::Relaxed) {
            if let Some(health) = node.health.as_mut() {
                health.uptime_seconds = None;
            }
        }
        if !self.server_reads_cluster.load(Ordering::Relaxed) {
            if let Some(t) = node.health.as_mut().and_then(|h| h.topology.as_mut()) {
                t.cluster = None;
            }
        }
    }

    fn logs_applies(&self) -> bool {
        true
    }
}

/// Redirects followed for one report: a standby's 307 to the leader, and one more
/// should the leadership move in between.
const MAX_REDIRECTS: usize = 2;

/// POST the report (to the leader a replica redirected the last one to, if it
/// answered); the answer must be an assignment for this node. A failed report forgets
/// that leader: the next goes to `--server` again.
async fn post_report(
    client: &reqwest::Client,
    options: &AgentOptions,
    leader: &std::sync::Mutex<Option<String>>,
    report: &Report,
    reads: [&AtomicBool; 3],
) -> Result<Assignment, ReportError> {
    let configured = format!("{}/api/v1/nodes/{}/report", options.server, options.node_id);
    let start = leader
        .lock()
        .ok()
        .and_then(|l| l.clone())
        .unwrap_or_else(|| configured.clone());
    let outcome = post_report_to(client, options, start, report, reads).await;
    if let Ok(mut l) = leader.lock() {
        *l = match &outcome {
            Ok((_, url)) if *url != configured => Some(url.clone()),
            _ => None,
        };
    }
    outcome.map(|(assignment, _)| assignment)
}

/// Where a 307/308 from `current` sends the report: an http(s) URL (never from https
/// down to http), resolved against `current` when relative.
fn redirect_target(
    current: &str,
    location: Option<&reqwest::header::HeaderValue>,
) -> Option<String> {
    let location = location?.to_str().ok()?;
    let base = reqwest::Url::parse(current).ok()?;
    let next = base.join(location).ok()?;
    match (base.scheme(), next.scheme()) {
        ("https", "https") | ("http", "http" | "https") => Some(next.to_string()),
        _ => None,
    }
}

/// POST the report to `url`, following a replica's redirects; the assignment and the
/// URL that answered it.
async fn post_report_to(
    client: &reqwest::Client,
    options: &AgentOptions,
    mut url: String,
    report: &Report,
    reads: [&AtomicBool; 3],
) -> Result<(Assignment, String), ReportError> {
    let body = serde_json::to_vec(report).map_err(ReportError::Encode)?;
    let mut hops = 0;
    let (mut response, shown) = loop {
        let shown = crate::edges::source::redact_url(&url);
        let response = client
            .post(&url)
            .bearer_auth(&options.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            // The optional assignment field this agent reads.
            .header(READS_HEADER, READS_CONFIRMED)
            .body(body.clone())
            .send()
            .await
            .map_err(|e| ReportError::Unreachable {
                url: shown.clone(),
                message: crate::edges::source::redact_url(&describe(&e)),
            })?;
        let status = response.status().as_u16();
        if matches!(status, 307 | 308) && hops < MAX_REDIRECTS {
            let next = redirect_target(&url, response.headers().get(reqwest::header::LOCATION));
            if let Some(next) = next {
                hops += 1;
                url = next;
                continue;
            }
        }
        break (response, shown);
    };
    let status = response.status();
    if status.is_success() {
        let named = |field: &str| {
            response
                .headers()
                .get(READS_HEADER)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| reads_names(v, field))
        };
        for (flag, field) in reads
            .iter()
            .zip([READS_TOPOLOGY, READS_CLUSTER, READS_UPTIME])
        {
            flag.store(named(field), Ordering::Relaxed);
        }
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ReportError::Reading {
        url: shown.clone(),
        message: describe(&e),
    })? {
        if bytes.len() + chunk.len() > MAX_PAYLOAD_BYTES {
            return Err(ReportError::TooLarge { url: shown });
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        let text: String = text.trim().chars().take(300).collect();
        let hint = match status.as_u16() {
            401 | 403 => " (is the token the one `cacheflow agent-token` prints for this node?)",
            _ => "",
        };
        return Err(ReportError::Refused {
            url: shown,
            status,
            hint,
            text,
        });
    }
    let assignment = Assignment::parse(&bytes).map_err(|source| ReportError::BadAssignment {
        url: shown.clone(),
        source,
    })?;
    if assignment.node_id != options.node_id {
        return Err(ReportError::OtherNode {
            url: shown,
            got: assignment.node_id,
            want: options.node_id.clone(),
        });
    }
    Ok((assignment, url))
}

fn agent_name() -> String {
    format!("cacheflow/{}", env!("CARGO_PKG_VERSION"))
}

/// The pause after `failures` failed exchanges in a row (shared with the server's
/// follower).
pub use crate::flow::backoff::backoff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_running_since_before_the_confirmed_apply_is_not_applied_again() {
        let at = "2026-03-02T09:15:04Z";
        // Read at 10:15:04, up one hour and more: it ran the apply.
        assert!(running_since_before("2026-03-02T10:15:04Z", Some(3700), at));
        // Started by the apply itself (a restart), within the slack.
        assert!(running_since_before("2026-03-02T10:15:04Z", Some(3598), at));
        // Started 10 minutes after it: restarted since, values may be lost.
        assert!(!running_since_before(
            "2026-03-02T10:15:04Z",
            Some(3000),
            at
        ));
        // Nothing known: applied again, as before.
        assert!(!running_since_before("2026-03-02T10:15:04Z", None, at));
        assert!(!running_since_before(
            "2026-03-02T10:15:04Z",
            Some(5),
            "soon"
        ));
    }

    #[test]
    fn a_redirect_goes_to_http_or_https_never_from_https_down_to_http() {
        let to = |current: &str, location: &str| {
            redirect_target(current, Some(&location.parse().unwrap()))
        };
        assert_eq!(
            to(
                "http://a:1/api/v1/nodes/n/report",
                "http://b:2/api/v1/nodes/n/report"
            )
            .as_deref(),
            Some("http://b:2/api/v1/nodes/n/report")
        );
        assert_eq!(
            to(
                "http://a:1/api/v1/nodes/n/report",
                "/shards/1/api/v1/nodes/n/report"
            )
            .as_deref(),
            Some("http://a:1/shards/1/api/v1/nodes/n/report")
        );
        assert_eq!(to("https://a/x", "http://b/x"), None);
        assert_eq!(to("http://a/x", "file:///etc/passwd"), None);
        assert_eq!(redirect_target("http://a/x", None), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let i = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        for _ in 0..200 {
            let b1 = backoff(i, max, 1);
            assert!(b1 >= Duration::from_millis(100) && b1 <= i, "{b1:?}");
            let b3 = backoff(i, max, 3);
            assert!(
                b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(800),
                "{b3:?}"
            );
            let b30 = backoff(i, max, 30);
            assert!(b30 >= max / 2 && b30 <= max, "{b30:?}");
        }
        // Not all the same: the jitter spreads a fleet out.
        let draws: std::collections::BTreeSet<Duration> =
            (0..50).map(|_| backoff(i, max, 4)).collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}
