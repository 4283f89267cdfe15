//! The HTTP API of `cacheflow serve` apart from webhooks: node reports, the status of
//! clusters and rollouts, the admin commands, drift, metrics and health.
//!
//! ```text
//! POST /api/v1/nodes/{id}/report   declared length (413) ─► node token (401) ─► body
//!                                  (413, 408, 503, 400) ─► reconciler.report ─► assignment
//! GET  /api/v1/clusters, /api/v1/rollouts            the reconciler's status
//! POST /api/v1/rollouts/{cluster}/{action}  (admin)  ─► reconciler.command
//! GET  /api/v1/drift, POST /api/v1/drift/run (admin) ─► drift report
//! GET  /metrics, /healthz, /readyz
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::body::Bodies;
use super::error::ApiError;
use super::{App, Shared, MAX_WEBHOOK_BYTES};
use crate::edges::forge::webhook;
use crate::edges::metrics::Metrics;
use crate::pure::protocol::{Assignment, Report, MAX_PAYLOAD_BYTES};
use crate::pure::reconciler::{RefusedInput, State as ReconcilerState};
use crate::pure::rollout::{Event, Phase};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `POST /api/v1/nodes/{id}/report`, counted in `cacheflow_node_reports_total` and
/// timed in `cacheflow_node_report_duration_seconds`.
pub(super) async fn report(
    State(app): State<Shared>,
    State(bodies): State<Bodies>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let began = std::time::Instant::now();
    let metrics = Arc::clone(&app.metrics);
    let count = |r: &str| Metrics::count(&metrics.reports, r);
    let response = match answer_report(&app, &bodies, &id, &headers, body).await {
        Ok(assignment) => {
            count("ok");
            (StatusCode::OK, Json(assignment)).into_response()
        }
        Err(e) => {
            match &e {
                ApiError::Stopped => {}
                ApiError::BadRequest(_) => count("malformed"),
                ApiError::NotFound(_) => count("unknown_node"),
                other => count(other.code()),
            }
            e.into_response()
        }
    };
    metrics
        .report_duration
        .observe(began.elapsed().as_secs_f64());
    response
}

async fn answer_report(
    app: &App,
    bodies: &Bodies,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Assignment, ApiError> {
    // What can be refused before the body arrives.
    Bodies::check_declared(headers, MAX_PAYLOAD_BYTES)?;
    let Some(secret) = app.options.node_token_secret.as_deref() else {
        return Err(ApiError::Unauthorized(
            "this server has no node-token secret (CACHEFLOW_NODE_TOKEN_SECRET_FILE): agents cannot report"
                .into(),
        ));
    };
    let token = bearer(headers).unwrap_or("");
    if !crate::pure::identity::verify(secret, id, token) {
        return Err(ApiError::Unauthorized(format!(
            "no valid token for node `{id}`: give the agent the output of `cacheflow agent-token {id}`"
        )));
    }
    let body = bodies.read(headers, body, MAX_PAYLOAD_BYTES).await?;
    let report = Report::parse(&body).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match app.handle.report(id, report).await? {
        Ok(assignment) => Ok(assignment),
        Err(e @ RefusedInput::UnknownNode(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e) => Err(ApiError::BadRequest(e.to_string())),
    }
}

/// The name of the admin whose token the request carries.
fn admin(app: &App, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer(headers).unwrap_or("");
    let who = app
        .options
        .admin_tokens
        .iter()
        .find(|(_, t)| webhook::constant_time_eq(t.as_bytes(), token.as_bytes()))
        .map(|(name, _)| name.clone());
    who.filter(|_| !token.is_empty()).ok_or_else(|| {
        Metrics::count(&app.metrics.admin_calls, "unauthorized");
        ApiError::Unauthorized(
            "an admin token is required (Authorization: Bearer …, from CACHEFLOW_ADMIN_TOKENS_FILE)"
                .into(),
        )
    })
}

/// `GET /api/v1/drift` (admin): the drift report of this moment, from the nodes' latest
/// reports; nothing is written or sent (`cacheflow drift --server`).
pub(super) async fn drift_now(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let inputs = app.handle.drift_inputs(app.options.silent_after).await?;
    let (live, not_compared) = (inputs.live, inputs.not_compared);
    let Some(desired) = inputs.desired else {
        return Err(ApiError::Unavailable(
            "no revision taken yet: nothing to compare the nodes with".into(),
        ));
    };
    Metrics::count(&app.metrics.admin_calls, "ok");
    let report = tokio::task::spawn_blocking(move || {
        let mut r = crate::pure::drift::compute(
            &desired,
            &live,
            &crate::edges::nodes::fleet::now_rfc3339(),
        );
        r.not_compared = not_compared;
        r
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((StatusCode::OK, Json(report)).into_response())
}

/// `POST /api/v1/drift/run` (admin): a scheduled run now: the report is written into the
/// state directory, sent, and corrected when `drift.mode` says so.
pub(super) async fn drift_run(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    Metrics::count(&app.metrics.admin_calls, "ok");
    match app.drift.once().await {
        Ok(r) => Ok((StatusCode::OK, Json(r)).into_response()),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// The status of every cluster's rollout, for the API and `cacheflow rollout status`.
pub fn rollout_status(state: &ReconcilerState) -> serde_json::Value {
    let clusters: Vec<serde_json::Value> = state
        .clusters
        .iter()
        .map(|(name, cs)| {
            let rollout = cs.rollout.as_ref().map(|rec| {
                let r = &rec.rollout;
                let (phase, batch, reason) = match &r.phase {
                    Phase::Pending => ("pending", None, None),
                    Phase::Applying { batch } => ("applying", Some(*batch), None),
                    Phase::Baking { batch } => ("baking", Some(*batch), None),
                    Phase::Judging { batch } => ("judging", Some(*batch), None),
                    Phase::Waiting { batch, reason } => {
                        ("waiting", Some(*batch), Some(reason.clone()))
                    }
                    Phase::Paused { batch, reason } => {
                        ("paused", Some(*batch), Some(reason.clone()))
                    }
                    Phase::RollingBack { reason } => ("rolling-back", None, Some(reason.clone())),
                    Phase::Completed => ("completed", None, None),
                    Phase::RolledBack { reason } => ("rolled-back", None, Some(reason.clone())),
                    Phase::Superseded { by } => ("superseded", None, Some(format!("by {by}"))),
                };
                json!({
                    "revision": r.spec.revision,
                    "phase": phase,
                    "batch": batch.map(|b| b + 1),
                    "batches": r.spec.batches.len(),
                    "reason": reason,
                    "touched": r.touched,
                    "confirmed": r.confirmed,
                    "startedAt": rec.started_at,
                })
            });
            json!({
                "cluster": name,
                "target": cs.target.as_ref().map(|t| &t.revision),
                "refused": cs.refused,
                "rollout": rollout,
            })
        })
        .collect();
    json!({ "head": state.head, "clusters": clusters })
}

/// `GET /api/v1/rollouts`: every cluster's rollout.
pub(super) async fn rollouts(State(app): State<Shared>) -> Result<Response, ApiError> {
    let state = app.handle.state().await?;
    Ok(Json(rollout_status(&state)).into_response())
}

/// `GET /api/v1/clusters`: every cluster's target and assignments.
pub(super) async fn clusters(State(app): State<Shared>) -> Result<Response, ApiError> {
    let state = app.handle.state().await?;
    let list: Vec<serde_json::Value> = state
        .clusters
        .iter()
        .map(|(name, cs)| {
            let mut by_outcome: BTreeMap<&str, usize> = BTreeMap::new();
            for a in cs.assignments.values() {
                let k = match a.outcome {
                    Some(crate::pure::protocol::Outcome::Applied) => "applied",
                    Some(_) => "failed",
                    None => "pending",
                };
                *by_outcome.entry(k).or_default() += 1;
            }
            json!({
                "cluster": name,
                "target": cs.target,
                "nodes": by_outcome,
                "assignments": cs.assignments.iter().map(|(id, a)| (id.clone(), json!({
                    "revision": a.revision, "generation": a.generation, "outcome": a.outcome,
                }))).collect::<BTreeMap<_, _>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "head": state.head, "clusters": list })).into_response())
}

/// `POST /api/v1/rollouts/{cluster}/{action}` (admin): pause, resume, promote, abort or
/// override (with a reason) the cluster's rollout.
pub(super) async fn command(
    State(app): State<Shared>,
    State(bodies): State<Bodies>,
    Path((cluster, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = MAX_WEBHOOK_BYTES.max(MAX_PAYLOAD_BYTES);
    Bodies::check_declared(&headers, limit)?;
    let by = admin(&app, &headers)?;
    let body = bodies.read(&headers, body, limit).await?;
    let refused = |e: ApiError| {
        Metrics::count(&app.metrics.admin_calls, "refused");
        e
    };
    let event = match action.as_str() {
        "pause" => Event::Pause { by },
        "resume" => Event::Resume { by },
        "promote" => Event::Promote { by },
        "abort" => Event::Abort { by },
        "override" => {
            // The reason is the point of an override: it is journaled with the name.
            let reason = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["reason"].as_str().map(|r| r.trim().to_owned()))
                .filter(|r| !r.is_empty());
            let Some(reason) = reason else {
                return Err(refused(ApiError::BadRequest(
                    "an override needs a reason: a JSON body {\"reason\": \"...\"}".into(),
                )));
            };
            Event::Override { by, reason }
        }
        other => {
            return Err(refused(ApiError::NotFound(format!(
                "unknown action `{other}`: pause, resume, promote, abort or override"
            ))));
        }
    };
    match app.handle.command(&cluster, event).await? {
        Ok(()) => {
            Metrics::count(&app.metrics.admin_calls, "ok");
            let state = app.handle.state().await.map(|s| rollout_status(&s)).ok();
            let this = state.and_then(|s| {
                s["clusters"]
                    .as_array()?
                    .iter()
                    .find(|c| c["cluster"] == cluster.as_str())
                    .cloned()
            });
            Ok((StatusCode::OK, Json(json!({"ok": true, "cluster": this}))).into_response())
        }
        Err(e @ RefusedInput::UnknownCluster(_)) => Err(refused(ApiError::NotFound(e.to_string()))),
        Err(e) => Err(refused(ApiError::Conflict(e.to_string()))),
    }
}

/// `GET /metrics`: the Prometheus text, with the nodes' assignment outcomes counted now.
pub(super) async fn metrics_text(State(app): State<Shared>) -> Response {
    if let Ok(state) = app.handle.state().await {
        let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
        for cs in state.clusters.values() {
            for a in cs.assignments.values() {
                let k = match a.outcome {
                    Some(crate::pure::protocol::Outcome::Applied) => "applied",
                    Some(_) => "failed",
                    None => "pending",
                };
                *counts.entry(k).or_default() += 1;
            }
        }
        for k in ["applied", "failed", "pending"] {
            app.metrics
                .set_nodes(k, counts.get(k).copied().unwrap_or(0));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(app): State<Shared>) -> Response {
    if app.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the config repository was not read yet\n",
        )
            .into_response()
    }
}
