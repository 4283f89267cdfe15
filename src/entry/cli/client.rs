//! The command line as a client of a running server: `cacheflow rollout` (status, the
//! admin commands, and `wait`, which follows `GET /api/v1/rollouts` until the rollout
//! ends) and `cacheflow drift --server`.

use std::path::PathBuf;
use std::time::Duration;

use super::commands::secret;
use super::{Format, RolloutAction};
use crate::edges::redact::redact_url;
use crate::entry::output::err;
use crate::entry::server::error::ErrorBody;
use crate::pure::drift::DriftReport;
use crate::pure::reconciler::status::{ClusterRollout, CommandAnswer, Rollouts};
use crate::pure::render;

/// What failed when asking a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the server URL `{0}` must start with http:// or https://")]
    NotHttp(String),
    /// A missing or misplaced argument.
    #[error("{0}")]
    Usage(&'static str),
    #[error(transparent)]
    Token(#[from] anyhow::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("{0}")]
    Client(#[source] reqwest::Error),
    /// The request did not get an answer (the words of `edges::api::request_error`).
    #[error("{0}")]
    Unreachable(String),
    #[error("{server}: {source}")]
    Body {
        server: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Answered(String),
    #[error("the server has no cluster `{0}`")]
    NoCluster(String),
    #[error("{what} ({status}){does}: {source}")]
    NotJson {
        what: &'static str,
        does: &'static str,
        status: reqwest::StatusCode,
        #[source]
        source: serde_json::Error,
    },
}

const TOKEN_REQUIRED: &str =
    "an admin token is required: --token-file FILE or CACHEFLOW_ADMIN_TOKEN";

/// The drift report of a server at this moment (`GET /api/v1/drift`).
pub fn server_drift(server: &str, token_file: Option<&PathBuf>) -> anyhow::Result<DriftReport> {
    Ok(fetch_drift(server, token_file)?)
}

/// `cacheflow rollout ACTION [CLUSTER]`: the server's answer, rendered.
pub fn rollout(
    action: RolloutAction,
    cluster: Option<String>,
    reason: Option<String>,
    server: &str,
    token_file: Option<PathBuf>,
    format: Format,
) -> anyhow::Result<String> {
    Ok(request_rollout(
        action, cluster, reason, server, token_file, format,
    )?)
}

/// `server` without its trailing `/`; only http(s) URLs are servers.
fn server_url(server: &str) -> Result<&str, ClientError> {
    let server = server.trim_end_matches('/');
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(ClientError::NotHttp(redact_url(server).to_string()));
    }
    Ok(server)
}

/// One request to `server` on a runtime of its own: the answer's status and body.
/// `request` builds it from the client (or refuses, before anything is sent).
fn exchange(
    server: &str,
    timeout: Duration,
    request: impl FnOnce(&reqwest::Client) -> Result<reqwest::RequestBuilder, ClientError>,
) -> Result<(reqwest::StatusCode, hyper::body::Bytes), ClientError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClientError::Runtime)?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(ClientError::Client)?;
        let response = request(&client)?.send().await.map_err(|e| {
            ClientError::Unreachable(crate::edges::api::request_error(
                &redact_url(server),
                &e,
                timeout,
            ))
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|source| ClientError::Body {
            server: redact_url(server).to_string(),
            source,
        })?;
        Ok((status, bytes))
    })
}

/// The drift report of a server at this moment (`GET /api/v1/drift`).
fn fetch_drift(server: &str, token_file: Option<&PathBuf>) -> Result<DriftReport, ClientError> {
    let server = server_url(server)?;
    let token = secret(token_file, "CACHEFLOW_ADMIN_TOKEN")?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned())
        .ok_or(ClientError::Usage(TOKEN_REQUIRED))?;
    let (status, bytes) = exchange(server, Duration::from_secs(60), |client| {
        Ok(client
            .get(format!("{server}/api/v1/drift"))
            .bearer_auth(token))
    })?;
    if !status.is_success() {
        return Err(ClientError::Answered(format!(
            "{}: {status}: {}",
            redact_url(server),
            ErrorBody::reason(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(|source| ClientError::NotJson {
        what: "the server's drift report",
        does: " does not parse",
        status,
        source,
    })
}

fn request_rollout(
    action: RolloutAction,
    cluster: Option<String>,
    reason: Option<String>,
    server: &str,
    token_file: Option<PathBuf>,
    format: Format,
) -> Result<String, ClientError> {
    let server = server_url(server)?;
    let reason = reason.filter(|r| !r.trim().is_empty());
    match (action, &reason) {
        (RolloutAction::Override, None) => {
            return Err(ClientError::Usage(
                "override needs --reason REASON (it is journaled)",
            ))
        }
        (RolloutAction::Retry, None) => {
            return Err(ClientError::Usage(
                "retry needs --reason REASON (it is journaled)",
            ))
        }
        (RolloutAction::Override | RolloutAction::Retry, Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(ClientError::Usage(
                "--reason is for override and retry only",
            ))
        }
    }
    let token = secret(token_file.as_ref(), "CACHEFLOW_ADMIN_TOKEN")?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned());
    let (status, bytes) = exchange(server, Duration::from_secs(30), |client| {
        Ok(match action {
            RolloutAction::Status => with_token(
                client.get(format!("{server}/api/v1/rollouts")),
                token.as_deref(),
            ),
            other => {
                let cluster = cluster.clone().ok_or(ClientError::Usage(
                    "give the cluster: cacheflow rollout ACTION CLUSTER",
                ))?;
                let token = token.ok_or(ClientError::Usage(TOKEN_REQUIRED))?;
                let verb = format!("{other:?}").to_lowercase();
                let body = serde_json::json!({ "reason": reason });
                client
                    .post(format!("{server}/api/v1/rollouts/{cluster}/{verb}"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
        })
    })?;
    if !status.is_success() {
        return Err(ClientError::Answered(format!(
            "{status}: {}",
            ErrorBody::reason(&bytes)
        )));
    }
    let not_json = |source| ClientError::NotJson {
        what: "the server's answer",
        does: "",
        status,
        source,
    };
    if format == Format::Json {
        let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_json)?;
        return Ok(render::json(&body));
    }
    Ok(match action {
        RolloutAction::Status => serde_json::from_slice::<Rollouts>(&bytes)
            .map_err(not_json)?
            .text(cluster.as_deref()),
        _ => serde_json::from_slice::<CommandAnswer>(&bytes)
            .map_err(not_json)?
            .cluster
            .map(|c| c.text())
            .unwrap_or_default(),
    })
}

/// A request with the token, when there is one (reading may require one).
fn with_token(request: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

/// What `cacheflow rollout wait` waits for.
pub struct WaitRequest {
    pub cluster: String,
    /// The commit (or a prefix of it) whose rollout is waited for; `None`: the cluster's
    /// current rollout.
    pub revision: Option<String>,
    pub timeout: Duration,
    pub interval: Duration,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed,
    /// The server took the revision and it changed nothing in the cluster.
    NothingToRollOut,
    RolledBack,
    Refused,
    Superseded,
    TimedOut,
}

impl Ending {
    fn word(self) -> &'static str {
        match self {
            Ending::Completed => "completed",
            Ending::NothingToRollOut => "nothing-to-roll-out",
            Ending::RolledBack => "rolled-back",
            Ending::Refused => "refused",
            Ending::Superseded => "superseded",
            Ending::TimedOut => "timed-out",
        }
    }
}

/// The end of a wait: how, and the cluster as the server last showed it.
pub struct WaitEnd {
    pub ending: Ending,
    pub cluster: ClusterRollout,
    pub head: Option<String>,
    pub timeout: Duration,
}

impl WaitEnd {
    /// Exit 0: the rollout completed, or there was nothing to roll out.
    pub fn completed(&self) -> bool {
        matches!(self.ending, Ending::Completed | Ending::NothingToRollOut)
    }

    pub fn render(&self, format: Format) -> String {
        if format == Format::Json {
            return render::json(&serde_json::json!({
                "cluster": self.cluster.cluster,
                "outcome": self.ending.word(),
                "head": self.head,
                "rollout": self.cluster,
            }));
        }
        let name = &self.cluster.cluster;
        match self.ending {
            Ending::NothingToRollOut => format!(
                "{name}: {} changed nothing in the cluster: nothing to roll out\n",
                render::short_id(self.head.as_deref().unwrap_or("?"))
            ),
            Ending::TimedOut => format!(
                "{name}: timed out after {}: {}",
                human(self.timeout),
                self.cluster.text().trim_start_matches(&format!("{name}: "))
            ),
            _ => self.cluster.text(),
        }
    }
}

/// Where the cluster's rollout stands for a wait: ended (how), or still to wait for.
pub fn judge(
    rollouts: &Rollouts,
    cluster: &ClusterRollout,
    revision: Option<&str>,
) -> Option<Ending> {
    let matches = |id: &str| revision.is_none_or(|want| id.starts_with(want));
    let refused = cluster.refused.as_ref().filter(|r| {
        revision.is_none_or(|want| {
            r.revision.starts_with(want) || cluster.target.as_deref() == Some(r.revision.as_str())
        })
    });
    if let Some(r) = cluster.rollout.as_ref().filter(|r| matches(&r.revision)) {
        return match r.phase.as_str() {
            "completed" => Some(Ending::Completed),
            "rolled-back" => Some(Ending::RolledBack),
            "superseded" if revision.is_some() => Some(Ending::Superseded),
            // Pending, waiting for a window, applying, baking, judging, paused (a person
            // decides), rolling back; superseded: the next one starts.
            _ => None,
        };
    }
    if refused.is_some() {
        return Some(Ending::Refused);
    }
    match revision {
        // No rollout yet and none to come: nothing to roll out.
        None if cluster.rollout.is_none() => Some(Ending::NothingToRollOut),
        None => None,
        // The server took the revision and it did not change the cluster.
        Some(_) => (rollouts.head.as_deref().is_some_and(matches)
            && !cluster.target.as_deref().is_some_and(matches))
        .then_some(Ending::NothingToRollOut),
    }
}

/// `cacheflow rollout wait`: read the server's rollouts every interval until the
/// cluster's rollout ends or the time is up; each new phase is said on standard error.
pub fn wait(
    request: &WaitRequest,
    server: &str,
    token_file: Option<&PathBuf>,
) -> anyhow::Result<WaitEnd> {
    Ok(follow(request, server, token_file)?)
}

fn follow(
    request: &WaitRequest,
    server: &str,
    token_file: Option<&PathBuf>,
) -> Result<WaitEnd, ClientError> {
    let server = server_url(server)?;
    let token = secret(token_file, "CACHEFLOW_ADMIN_TOKEN")?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned());
    let revision = request
        .revision
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if revision.is_some_and(|r| r.len() < 7) {
        return Err(ClientError::Usage(
            "--revision takes a commit id or a prefix of at least 7 characters",
        ));
    }
    let deadline = std::time::Instant::now() + request.timeout;
    let mut said = String::new();
    loop {
        let rollouts = read_rollouts(server, token.as_deref())?;
        let cluster = rollouts
            .clusters
            .iter()
            .find(|c| c.cluster == request.cluster)
            .cloned()
            .ok_or_else(|| ClientError::NoCluster(request.cluster.clone()))?;
        let end = |ending| WaitEnd {
            ending,
            cluster: cluster.clone(),
            head: rollouts.head.clone(),
            timeout: request.timeout,
        };
        if let Some(ending) = judge(&rollouts, &cluster, revision) {
            return Ok(end(ending));
        }
        let now = cluster.text();
        if now != said {
            err!("{now}");
            said = now;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(end(Ending::TimedOut));
        }
        std::thread::sleep(request.interval.min(left));
    }
}

/// `GET /api/v1/rollouts`, typed.
fn read_rollouts(server: &str, token: Option<&str>) -> Result<Rollouts, ClientError> {
    let (status, bytes) = exchange(server, Duration::from_secs(30), |client| {
        Ok(with_token(
            client.get(format!("{server}/api/v1/rollouts")),
            token,
        ))
    })?;
    if !status.is_success() {
        return Err(ClientError::Answered(format!(
            "{status}: {}",
            ErrorBody::reason(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(|source| ClientError::NotJson {
        what: "the server's rollouts",
        does: " do not parse",
        status,
        source,
    })
}

/// A duration as people write it: `30m`, `1h30m`, `45s`, `500ms`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    [("h", secs / 3600), ("m", secs / 60 % 60), ("s", secs % 60)]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(unit, n)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::reconciler::status::RolloutStatus;
    use crate::pure::reconciler::Refused;

    fn cluster(phase: Option<(&str, &str)>, target: &str, refused: Option<&str>) -> ClusterRollout {
        ClusterRollout {
            cluster: "cache".into(),
            refused: refused.map(|revision| Refused {
                revision: revision.into(),
                digest: "d".into(),
                reason: "gates failed".into(),
            }),
            rollout: phase.map(|(revision, phase)| RolloutStatus {
                batch: None,
                batches: 2,
                confirmed: Default::default(),
                phase: phase.into(),
                reason: None,
                revision: revision.into(),
                sentinel: None,
                started_at: "2026-01-01T00:00:00Z".into(),
                touched: Default::default(),
            }),
            target: Some(target.into()),
        }
    }

    fn judged(head: &str, c: ClusterRollout, revision: Option<&str>) -> Option<Ending> {
        let rollouts = Rollouts {
            clusters: vec![c.clone()],
            head: Some(head.into()),
        };
        judge(&rollouts, &c, revision)
    }

    #[test]
    fn a_wait_ends_on_the_rollout_of_its_revision_and_not_before() {
        let r1 = "1111111111111111111111111111111111111111";
        let r2 = "2222222222222222222222222222222222222222";
        // The server has not taken r2 yet: the last rollout (r1, completed) is not it.
        let done_r1 = cluster(Some((r1, "completed")), r1, None);
        assert_eq!(judged(r1, done_r1.clone(), Some("2222222")), None);
        assert_eq!(judged(r1, done_r1.clone(), None), Some(Ending::Completed));
        // r2 taken, changing nothing in the cluster (its target stays r1).
        assert_eq!(
            judged(r2, done_r1, Some("2222222")),
            Some(Ending::NothingToRollOut)
        );
        // r2 taken and the cluster's target, its rollout not started: wait.
        let pending = cluster(Some((r1, "completed")), r2, None);
        assert_eq!(judged(r2, pending, Some(r2)), None);
        for (phase, ending) in [
            ("baking", None),
            ("paused", None),
            ("rolling-back", None),
            ("completed", Some(Ending::Completed)),
            ("rolled-back", Some(Ending::RolledBack)),
            ("superseded", Some(Ending::Superseded)),
        ] {
            let c = cluster(Some((r2, phase)), r2, None);
            assert_eq!(judged(r2, c, Some("2222222")), ending, "{phase}");
        }
        // Without a revision, a superseded rollout is followed by the next one.
        let c = cluster(Some((r2, "superseded")), r2, None);
        assert_eq!(judged(r2, c, None), None);
        // The revision's content refused without a rollout of its own.
        let c = cluster(Some((r1, "rolled-back")), r1, Some(r1));
        assert_eq!(judged(r2, c, None), Some(Ending::RolledBack));
        let c = cluster(None, r1, Some(r1));
        assert_eq!(judged(r1, c, None), Some(Ending::Refused));
        // No rollout ever: nothing to roll out.
        let c = cluster(None, r1, None);
        assert_eq!(judged(r1, c, None), Some(Ending::NothingToRollOut));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human(Duration::from_secs(1800)), "30m");
        assert_eq!(human(Duration::from_secs(5400)), "1h30m");
        assert_eq!(human(Duration::from_secs(1)), "1s");
        assert_eq!(human(Duration::from_millis(500)), "500ms");
    }
}
