//! The HTTP API of `cacheflow serve` apart from webhooks: node reports, the status of
//! clusters and rollouts, the admin commands, drift, metrics and health.
//!
//! ```text
//! POST /api/v1/nodes/{id}/report   declared length (413) ─► node token (401) ─► body
//!                                  (413, 408, 503, 400) ─► reconciler.report ─► assignment
//!                                  (a node not declared yet: held up to 5 s for the
//!                                  revision that declares it, then 404)
//! GET  /api/v1/clusters, /api/v1/rollouts  (reader)  the status the runtime published
//! POST /api/v1/rollouts/{cluster}/{action}  (admin)  ─► reconciler.command
//! GET  /api/v1/drift, POST /api/v1/drift/run (admin) ─► drift report
//! GET  /metrics, /healthz, /readyz
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::Bodies;
use super::error::ApiError;
use super::{App, Shared, MAX_WEBHOOK_BYTES};
use crate::edges::forge::webhook;
use crate::edges::metrics::Metrics;
use crate::pure::protocol::{Assignment, Report, MAX_PAYLOAD_BYTES};
use crate::pure::reconciler::status::CommandAnswer;
use crate::pure::reconciler::RefusedInput;
use crate::pure::rollout::Event;

/// How long a report of a node no revision declares yet is held before its 404: an
/// agent that reports at the server's start, before the first intake, or just before
/// the push that declares its node, is answered with its assignment when the revision
/// is taken instead of backing off (agents wait 10 s for an answer by default).
pub(super) const REPORT_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

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
            // The optional report fields this server reads: the agent sends them from
            // its next report on.
            (
                StatusCode::OK,
                [(
                    crate::pure::protocol::READS_HEADER,
                    crate::pure::protocol::READS_ALL,
                )],
                Json(assignment),
            )
                .into_response()
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
    match app.handle.report_held(id, report, app.report_hold).await? {
        Ok(mut assignment) => {
            // `confirmedAt` only to an agent that reads it (an older one refuses it).
            let reads = headers
                .get(crate::pure::protocol::READS_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !crate::pure::protocol::reads_names(reads, crate::pure::protocol::READS_CONFIRMED) {
                assignment.confirmed_at = None;
            }
            Ok(assignment)
        }
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

/// A typed body as JSON with its keys sorted (the status routes' documented form).
fn sorted_json(body: &impl serde::Serialize) -> Result<Response, ApiError> {
    let value = serde_json::to_value(body).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(value).into_response())
}

/// `GET /api/v1/rollouts`: every cluster's rollout, from the published status.
pub(super) async fn rollouts(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::console::reader(
        &app.options.read_tokens,
        &app.options.admin_tokens,
        &headers,
    )?;
    sorted_json(&app.handle.status()?.rollouts())
}

/// `GET /api/v1/clusters`: every cluster's target and assignments.
pub(super) async fn clusters(
    State(app): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::console::reader(
        &app.options.read_tokens,
        &app.options.admin_tokens,
        &headers,
    )?;
    sorted_json(&app.handle.status()?.clusters())
}

/// `POST /api/v1/rollouts/{cluster}/{action}` (admin): pause, resume, promote, abort or
/// override (with a reason) the cluster's rollout, or retry (with a reason) its refused
/// content.
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
    // The reason is the point of an override and a retry: it is journaled with the name.
    let reason = || {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(|r| r.trim().to_owned()))
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                let what = if action == "retry" {
                    "a retry"
                } else {
                    "an override"
                };
                refused(ApiError::BadRequest(format!(
                    "{what} needs a reason: a JSON body {{\"reason\": \"...\"}}"
                )))
            })
    };
    let event = match action.as_str() {
        "pause" => Event::Pause { by },
        "resume" => Event::Resume { by },
        "promote" => Event::Promote { by },
        "abort" => Event::Abort { by },
        "override" => Event::Override {
            by,
            reason: reason()?,
        },
        "retry" => {
            let reason = reason()?;
            return answer(
                &app,
                &cluster,
                app.handle.retry(&cluster, by, reason).await?,
            );
        }
        other => {
            return Err(refused(ApiError::NotFound(format!(
                "unknown action `{other}`: pause, resume, promote, abort, override or retry"
            ))));
        }
    };
    answer(&app, &cluster, app.handle.command(&cluster, event).await?)
}

/// The answer to a rollout command: the cluster's rollout once it was taken, 404 for an
/// unknown cluster, 409 for a command its state does not allow.
fn answer(
    app: &Shared,
    cluster: &str,
    taken: Result<(), RefusedInput>,
) -> Result<Response, ApiError> {
    let refused = |e: ApiError| {
        Metrics::count(&app.metrics.admin_calls, "refused");
        e
    };
    match taken {
        Ok(()) => {
            Metrics::count(&app.metrics.admin_calls, "ok");
            // Published before the command was answered.
            let cluster = app.handle.status()?.rollout_of(cluster);
            sorted_json(&CommandAnswer { ok: true, cluster })
        }
        Err(e @ RefusedInput::UnknownCluster(_)) => Err(refused(ApiError::NotFound(e.to_string()))),
        Err(e) => Err(refused(ApiError::Conflict(e.to_string()))),
    }
}

/// `GET /metrics`: the Prometheus text, with the nodes' assignment outcomes counted now.
pub(super) async fn metrics_text(State(app): State<Shared>) -> Response {
    let status = app.handle.status().ok();
    if let Some(status) = &status {
        let counts = status.nodes();
        for k in ["applied", "failed", "pending"] {
            let n = counts.get(k).copied().unwrap_or(0);
            app.metrics
                .set_nodes(k, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.scrape(status.as_deref()),
    )
        .into_response()
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the first head was read. A remote that cannot be fetched does not make
/// the server unready (it serves the revision its mirror holds and its rollouts go on):
/// the answer says so, and since when.
pub(super) async fn readyz(State(app): State<Shared>) -> Response {
    if app.ready.load(Ordering::Relaxed) {
        let remote = app.remote.lock().map(|r| r.clone()).unwrap_or_default();
        let Some(since) = remote.since.filter(|_| remote.failures > 0) else {
            return (StatusCode::OK, "ready\n").into_response();
        };
        let head = app.handle.head().await.ok().flatten();
        let serving = head.map_or_else(
            || "no revision yet".to_owned(),
            |h| format!("revision {h} from the mirror"),
        );
        let body = format!(
            "ready: remote unreachable since {since} ({} failed fetches; the last: {}), serving {serving}\n",
            remote.failures, remote.error
        );
        (StatusCode::OK, body).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the config repository was not read yet\n",
        )
            .into_response()
    }
}
