//! `POST /hooks/{github,gitlab,gitea}`: a forge's delivery, checked in the order of the
//! table in docs/server.md; a push to the tracked branch wakes the follower, a
//! pull-request event is answered at once and its feedback posted in the background.
//!
//! ```text
//! before the body: declared length (413) ─► webhook secret, signature header present
//!   and well formed, GitLab's token (401)
//! the body (413, 408, 503, 400) ─► signature (401) ─► content type (415) ─► delivery
//!   seen? (200) ─► ping (200) ─► pull request (202, feedback) ─► push? (202) ─►
//!   payload (400) ─► tracked branch? (202 ignored) ─► wake the follower (202)
//! ```

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::body::Bodies;
use super::error::ApiError;
use super::{pr, Shared, MAX_WEBHOOK_BYTES};
use crate::edges::forge::webhook::{self, Forge, Push};
use crate::edges::metrics::Metrics;

pub(super) async fn github(
    State(app): State<Shared>,
    State(bodies): State<Bodies>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    hook(app, bodies, Forge::GitHub, headers, body).await
}

pub(super) async fn gitlab(
    State(app): State<Shared>,
    State(bodies): State<Bodies>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    hook(app, bodies, Forge::GitLab, headers, body).await
}

pub(super) async fn gitea(
    State(app): State<Shared>,
    State(bodies): State<Bodies>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    hook(app, bodies, Forge::Gitea, headers, body).await
}

/// A delivery's answer, counted in `cacheflow_webhook_deliveries_total`.
async fn hook(
    app: Shared,
    bodies: Bodies,
    forge: Forge,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let name = forge.name();
    match delivery(&app, &bodies, forge, &headers, body).await {
        Ok((result, response)) => {
            if let Some(result) = result {
                app.metrics.delivery(name, result);
            }
            response
        }
        Err(e) => {
            if let Some(result) = refused_as(&e) {
                app.metrics.delivery(name, result);
            }
            e.into_response()
        }
    }
}

/// The `result` label of a refused delivery (none when the reconciler has stopped: the
/// delivery was counted already).
fn refused_as(e: &ApiError) -> Option<&'static str> {
    match e {
        ApiError::Stopped => None,
        other => Some(other.code()),
    }
}

/// The header that carries a forge's signature (GitLab: its token).
fn signature_header(forge: Forge) -> &'static str {
    match forge {
        Forge::GitHub => "x-hub-signature-256",
        Forge::GitLab => "x-gitlab-token",
        Forge::Gitea => "x-gitea-signature",
    }
}

fn accepted(status: StatusCode, result: &'static str, body: serde_json::Value) -> Delivered {
    Ok((Some(result), (status, Json(body)).into_response()))
}

/// The answer and its `result` label (`None`: counted already).
type Delivered = Result<(Option<&'static str>, Response), ApiError>;

async fn delivery(
    app: &Shared,
    bodies: &Bodies,
    forge: Forge,
    headers: &HeaderMap,
    body: Body,
) -> Delivered {
    let name = forge.name();
    // What can be refused before the body arrives.
    Bodies::check_declared(headers, MAX_WEBHOOK_BYTES)?;
    let Some(secret) = app.options.webhook_secret.as_deref() else {
        return Err(ApiError::Unauthorized(
            "this server has no webhook secret (CACHEFLOW_WEBHOOK_SECRET_FILE): webhooks are refused"
                .into(),
        ));
    };
    let sig_header = signature_header(forge);
    let sig = headers.get(sig_header).and_then(|v| v.to_str().ok());
    let unauthorized = |why: &str| ApiError::Unauthorized(format!("{sig_header}: {why}"));
    webhook::precheck(forge, secret, sig).map_err(unauthorized)?;
    let body = bodies.read(headers, body, MAX_WEBHOOK_BYTES).await?;
    webhook::verify(forge, secret, sig, &body).map_err(unauthorized)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "content type `{content_type}`: set the webhook's content type to application/json"
        )));
    }
    let event = headers
        .get(forge.event_header())
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(id) = headers
        .get(forge.delivery_header())
        .and_then(|v| v.to_str().ok())
    {
        let first = app
            .deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .first(id);
        if !first {
            return accepted(
                StatusCode::OK,
                "duplicate",
                json!({"ignored": format!("delivery {id} was already received")}),
            );
        }
    }
    if event == "ping" {
        return accepted(StatusCode::OK, "ignored", json!({"pong": true}));
    }
    if crate::edges::forge::is_pull_request(forge, event) {
        return pull_request(app, forge, event, &body).await;
    }
    if !forge.is_push(event) {
        return accepted(
            StatusCode::ACCEPTED,
            "ignored",
            json!({"ignored": format!("event `{event}` is not a push")}),
        );
    }
    let push: Push = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("the push payload is not what {name} sends: {e}"))
    })?;
    let tracked = format!("refs/heads/{}", app.options.branch);
    if push.git_ref != tracked {
        return accepted(
            StatusCode::ACCEPTED,
            "ignored",
            json!({"ignored": format!("push to {}, this server tracks {tracked}", push.git_ref)}),
        );
    }
    app.wake_follower.notify_one();
    accepted(
        StatusCode::ACCEPTED,
        "accepted",
        json!({"accepted": true, "after": push.after}),
    )
}

/// A pull-request event: answered at once; the feedback is posted in the background.
async fn pull_request(app: &Shared, forge: Forge, event: &str, body: &[u8]) -> Delivered {
    let name = forge.name();
    let ignored = |why: serde_json::Value| {
        Metrics::count(&app.metrics.pr_feedback, "ignored");
        accepted(StatusCode::ACCEPTED, "ignored", json!({ "ignored": why }))
    };
    let pr = match crate::edges::forge::pull_request(forge, event, body) {
        Ok(Some(pr)) => pr,
        Ok(None) => return ignored(json!("this pull-request action needs no feedback")),
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
    };
    let client = match app.feedback.client(forge) {
        Ok(c) => c,
        Err(why) => return ignored(json!(why.to_string())),
    };
    app.metrics.delivery(name, "accepted");
    let live = app
        .handle
        .drift_inputs(app.options.silent_after)
        .await?
        .live;
    let answer = json!({"accepted": true, "pullRequest": pr.number, "head": pr.head_sha});
    tokio::spawn(pr::answer(
        super::origin(&app.options),
        client,
        app.metrics.clone(),
        pr,
        live,
    ));
    Ok((None, (StatusCode::ACCEPTED, Json(answer)).into_response()))
}
