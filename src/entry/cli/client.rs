//! The command line as a client of a running server: `cacheflow rollout` (status and
//! the admin commands) and `cacheflow drift --server`.

use std::path::PathBuf;
use std::time::Duration;

use super::commands::secret;
use super::{Format, RolloutAction};
use crate::edges::redact::redact_url;
use crate::pure::drift::DriftReport;
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
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(format!(
                "{}: {status}: {}",
                redact_url(server),
                body["error"].as_str().unwrap_or("no reason given")
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
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the server's answer ({status}) is not JSON: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{status}: {}",
                body["error"].as_str().unwrap_or("no reason given")
            ));
        }
        if format == Format::Json {
            return Ok(render::json(&body));
        }
        Ok(render_rollouts(action, cluster.as_deref(), &body))
    })
}

/// The server's answer to a rollout command as text: one line per cluster (and one for
/// a refused revision).
fn render_rollouts(
    action: RolloutAction,
    cluster: Option<&str>,
    body: &serde_json::Value,
) -> String {
    let clusters = match action {
        RolloutAction::Status => body["clusters"].as_array().cloned().unwrap_or_default(),
        _ => vec![body["cluster"].clone()],
    };
    let mut out = String::new();
    for c in clusters
        .iter()
        .filter(|c| cluster.is_none_or(|n| c["cluster"] == n))
    {
        let name = c["cluster"].as_str().unwrap_or("?");
        match c["rollout"].as_object() {
            None => out.push_str(&format!("{name}: no rollout\n")),
            Some(r) => {
                let rev = render::short_id(r["revision"].as_str().unwrap_or(""));
                let batch = match (r["batch"].as_u64(), r["batches"].as_u64()) {
                    (Some(b), Some(n)) => format!(", batch {b} of {n}"),
                    _ => String::new(),
                };
                let reason = r["reason"]
                    .as_str()
                    .map(|s| format!(": {s}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{name}: {rev} {}{batch}{reason}\n",
                    r["phase"].as_str().unwrap_or("?")
                ));
            }
        }
        if let Some(refused) = c["refused"].as_object() {
            out.push_str(&format!(
                "  refused: {}\n",
                refused["reason"].as_str().unwrap_or("")
            ));
        }
    }
    out
}
