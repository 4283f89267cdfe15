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

/// The drift report of a server at this moment (`GET /api/v1/drift`).
pub fn server_drift(server: &str, token_file: Option<&PathBuf>) -> anyhow::Result<DriftReport> {
    fetch_drift(server, token_file).map_err(anyhow::Error::msg)
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
    request_rollout(action, cluster, reason, server, token_file, format).map_err(anyhow::Error::msg)
}

/// The drift report of a server at this moment (`GET /api/v1/drift`).
fn fetch_drift(server: &str, token_file: Option<&PathBuf>) -> Result<DriftReport, String> {
    let server = server.trim_end_matches('/');
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(format!(
            "the server URL `{}` must start with http:// or https://",
            redact_url(server)
        ));
    }
    let token = secret(token_file, "CACHEFLOW_ADMIN_TOKEN")
        .map_err(|e| e.to_string())?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned())
        .ok_or("an admin token is required: --token-file FILE or CACHEFLOW_ADMIN_TOKEN")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .get(format!("{server}/api/v1/drift"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                crate::edges::api::request_error(&redact_url(server), &e, Duration::from_secs(60))
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{}: {e}", redact_url(server)))?;
        if !status.is_success() {
            return Err(format!(
                "{}: {status}: {}",
                redact_url(server),
                ErrorBody::reason(&bytes)
            ));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the server's drift report ({status}) does not parse: {e}"))
    })
}

fn request_rollout(
    action: RolloutAction,
    cluster: Option<String>,
    reason: Option<String>,
    server: &str,
    token_file: Option<PathBuf>,
    format: Format,
) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(format!(
            "the server URL `{}` must start with http:// or https://",
            redact_url(server)
        ));
    }
    let reason = reason.filter(|r| !r.trim().is_empty());
    match (action, &reason) {
        (RolloutAction::Override, None) => {
            return Err("override needs --reason REASON (it is journaled)".into())
        }
        (RolloutAction::Override, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err("--reason is for override only".into()),
    }
    let token = secret(token_file.as_ref(), "CACHEFLOW_ADMIN_TOKEN")
        .map_err(|e| e.to_string())?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let request = match action {
            RolloutAction::Status => client.get(format!("{server}/api/v1/rollouts")),
            other => {
                let cluster = cluster
                    .clone()
                    .ok_or("give the cluster: cacheflow rollout ACTION CLUSTER")?;
                let token = token.ok_or(
                    "an admin token is required: --token-file FILE or CACHEFLOW_ADMIN_TOKEN",
                )?;
                let verb = format!("{other:?}").to_lowercase();
                let body = serde_json::json!({ "reason": reason });
                client
                    .post(format!("{server}/api/v1/rollouts/{cluster}/{verb}"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
        };
        let response = request.send().await.map_err(|e| {
            crate::edges::api::request_error(&redact_url(server), &e, Duration::from_secs(30))
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{}: {e}", redact_url(server)))?;
        if !status.is_success() {
            return Err(format!("{status}: {}", ErrorBody::reason(&bytes)));
        }
        let not_json = |e: serde_json::Error| format!("the server's answer ({status}): {e}");
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
    })
}
