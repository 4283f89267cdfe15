//! The command line as a client of a running server: `cacheflow rollout` (status and
//! the admin commands) and `cacheflow drift --server`.

use std::path::PathBuf;
use std::time::Duration;

use super::commands::secret;
use super::{Format, RolloutAction};
use crate::edges::redact::redact_url;
use crate::entry::server::error::ErrorBody;
use crate::pure::drift::DriftReport;
use crate::pure::reconciler::status::{CommandAnswer, Rollouts};
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
            RolloutAction::Status => {
                // A server with read tokens wants one (an admin token reads too).
                let request = client.get(format!("{server}/api/v1/rollouts"));
                match &token {
                    Some(t) => request.bearer_auth(t),
                    None => request,
                }
            }
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
