//! `cacheflow serve`: the long-running reconciler behind HTTP. Thin: it turns requests
//! into reconciler inputs and answers with what the reconciler says.
//!
//! ```text
//! POST /hooks/{github,gitlab,gitea}  signature ─► tracked branch? new delivery? ─► wake the follower
//! follower: fetch the mirror (a burst of pushes is one fetch) ─► head moved? descends from
//!           the last good one? valid? ─► reconciler.revision / refuse
//! POST /api/v1/nodes/{id}/report     node token ─► reconciler.report ─► the assignment
//! GET  /api/v1/clusters, /api/v1/rollouts;  POST /api/v1/rollouts/{cluster}/{action} (admin)
//! GET  /metrics, /healthz, /readyz
//! ```

pub mod drift;
mod http;
pub use http::ServerTls;
pub mod pr;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::edges::audit::{Journal, JOURNAL_REF, NOTES_REF};
use crate::edges::forge::webhook::{self, Deliveries, Forge, Push};
use crate::edges::metrics::Metrics;
use crate::edges::redact::redact_url;
use crate::edges::source::ConfigRepo;
use crate::flow::pipeline::{self, PipelineError, Revision};
use crate::flow::runtime::{self, DirectOptions, Handle};
use crate::pure::protocol::{Report, MAX_PAYLOAD_BYTES};
use crate::pure::reconciler::{RefusedInput, State as ReconcilerState};
use crate::pure::rollout::{Event, Phase};
use crate::pure::spec::model::Managed;

/// Largest webhook body accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The config repository: a URL (mirrored into the state directory) or a local path.
    pub repo: String,
    pub branch: String,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub poll_interval: Duration,
    /// Shared secret of the forges' webhooks (HMAC key; GitLab's token).
    pub webhook_secret: Option<Vec<u8>>,
    /// The secret node tokens are derived from (`cacheflow agent-token`).
    pub node_token_secret: Option<Vec<u8>>,
    /// Admin tokens: name → token.
    pub admin_tokens: BTreeMap<String, String>,
    /// Push the journal and the notes to the remote after each change.
    pub push_audit: bool,
    /// How often in-process agents read directly managed nodes.
    pub direct_interval: Duration,
    pub node_timeout: Duration,
    /// After a restart, how long before a rollout in flight judges its gates or times
    /// out: the time every node needs to report again (agents report every 30 s by
    /// default).
    pub resume_grace: Duration,
    /// A node whose last report is older than this is silent in drift reports.
    pub silent_after: Duration,
    /// The forge's REST API for pull-request feedback (GitHub's public API by default).
    pub forge_api_url: Option<String>,
    /// The token pull-request feedback posts with.
    pub forge_token: Option<String>,
    /// Terminate TLS here (`--tls-cert-file`, `--tls-key-file`).
    pub tls: Option<http::ServerTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Audit(#[from] crate::edges::audit::AuditError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct App {
    handle: Handle,
    feedback: pr::Feedback,
    drift: drift::DriftRunner,
    options: ServeOptions,
    metrics: Arc<Metrics>,
    deliveries: Mutex<Deliveries>,
    wake_follower: Notify,
    ready: AtomicBool,
}

type Shared = Arc<App>;

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub(crate) fn open_repo(options: &ServeOptions) -> Result<ConfigRepo, ServeError> {
    ConfigRepo::open(&options.repo, Some(&options.state_dir.join("mirror")))
        .map_err(|e| ServeError::Source(redact_url(&e.to_string())))
}

/// Run the server until SIGTERM / Ctrl-C (`stop` turns true).
pub async fn serve(
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&options.state_dir).map_err(|e| {
        ServeError::Source(format!(
            "cannot create the state directory {}: {e}",
            options.state_dir.display()
        ))
    })?;
    // One server per state directory: the lock is held for the life of the process
    // (the OS drops it when the process dies, even by SIGKILL), which makes it safe to
    // clear the lock files a killed predecessor left in the mirror.
    let lock_path = options.state_dir.join("cacheflow.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ServeError::Source(format!("cannot open {}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(ServeError::Source(format!(
            "another cacheflow serve uses the state directory {} (it holds {})",
            options.state_dir.display(),
            lock_path.display()
        )));
    }
    remove_stale_git_locks(&options.state_dir.join("mirror"));
    let opts = options.clone();
    let repo = tokio::task::spawn_blocking(move || open_repo(&opts))
        .await
        .map_err(|e| ServeError::Source(e.to_string()))??;
    let git_dir = repo.repository().path().to_path_buf();
    drop(repo);
    let metrics = Arc::new(Metrics::default());
    let journal = Journal::open(&git_dir)?;
    let grace = options
        .resume_grace
        .max(options.direct_interval * 2)
        .as_millis() as u64;
    let (handle, task) = runtime::start(journal, grace, Some(metrics.clone()), false)?;
    // Notices of rollouts and drift runs to the revision's `notifications:` targets.
    let notifier = crate::edges::notify::Notifier::new(
        crate::edges::notify::NotifyOptions::default(),
        Some(metrics.clone()),
    );
    handle.set_notifier(notifier.clone());
    let app = Arc::new(App {
        handle: handle.clone(),
        feedback: pr::Feedback::new(options.forge_api_url.clone(), options.forge_token.clone()),
        drift: drift::DriftRunner {
            handle: handle.clone(),
            dir: options.state_dir.join("drift"),
            metrics: metrics.clone(),
            notifier,
            silent_after: options.silent_after,
            revision_taken: Arc::new(Notify::new()),
        },
        options: options.clone(),
        metrics,
        deliveries: Mutex::new(Deliveries::default()),
        wake_follower: Notify::new(),
        ready: AtomicBool::new(false),
    });

    let router = Router::new()
        .route("/hooks/github", post(hook_github))
        .route("/hooks/gitlab", post(hook_gitlab))
        .route("/hooks/gitea", post(hook_gitea))
        .route("/api/v1/nodes/{id}/report", post(report))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/rollouts", get(rollouts))
        .route("/api/v1/rollouts/{cluster}/{action}", post(command))
        .route("/api/v1/drift", get(drift_now))
        .route("/api/v1/drift/run", post(drift_run))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(
            MAX_WEBHOOK_BYTES.max(MAX_PAYLOAD_BYTES),
        ))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: options.listen,
        source,
    })?;
    tracing::info!("listening on {local}");
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    println!("cacheflow serve: listening on {scheme}://{local}");

    let follower = tokio::spawn(follow(app.clone(), git_dir.clone(), stop.clone()));
    // Scheduled drift runs (`drift.schedule` of the current revision).
    let drifts = tokio::spawn(app.drift.clone().run(stop.clone()));
    // Nodes heard from after their cluster's revision was taken get it through a
    // rollout of their own; the reconciler looks once a second.
    let ticker = {
        let handle = handle.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                if handle.tick().await.is_err() {
                    return;
                }
            }
        })
    };
    // A reconciler that stopped (its journal could not be written) stops the server:
    // answering without it would hide the failure; the supervisor restarts the process.
    let (dead_tx, dead_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let result = task.await;
        let _ = dead_tx.send(true);
        result
    });
    let mut stop_http = stop.clone();
    let mut dead = dead_rx.clone();
    let server = http::serve(listener, router, options.tls.clone(), async move {
        tokio::select! {
            _ = stop_http.wait_for(|s| *s) => {}
            _ = dead.wait_for(|d| *d) => {}
        }
    });
    server.await;
    if *dead_rx.borrow() {
        drifts.abort();
        let _ = follower.await;
        let _ = ticker.await;
        drop(handle);
        let failure = match task.await {
            Ok(Ok(Err(e))) => e.to_string(),
            _ => "the reconciler stopped".to_owned(),
        };
        tracing::error!("{failure}");
        return Err(ServeError::Source(format!(
            "the reconciler stopped: {failure}"
        )));
    }
    let _ = stop.wait_for(|s| *s).await;
    let _ = drifts.await;
    let _ = follower.await;
    let _ = ticker.await;
    handle.stop().await;
    drop(handle);
    let _ = task.await;
    drop(lock);
    Ok(())
}

/// Delete the `*.lock` files git leaves behind when a process is killed in the middle of
/// a ref update or a fetch; with them in place every later fetch fails.
fn remove_stale_git_locks(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_stale_git_locks(&path);
        } else if path.extension().is_some_and(|e| e == "lock") {
            tracing::warn!("removing the stale git lock {}", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Fetch, check and hand new heads of the tracked branch to the reconciler.
async fn follow(app: Shared, git_dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let (agents_stop_tx, agents_stop) = watch::channel(false);
    let mut driven: HashSet<String> = HashSet::new();
    let mut last_seen: Option<String> = None;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = app.wake_follower.notified() => {}
                _ = tokio::time::sleep(app.options.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
        first = false;
        if *stop.borrow() {
            break;
        }
        let options = app.options.clone();
        let seen = last_seen.clone();
        // Only the head: a copy of the whole state would stall reports on a large fleet.
        let good = match app.handle.head().await {
            Ok(h) => h,
            Err(_) => break,
        };
        let step = tokio::task::spawn_blocking(move || check_head(&options, seen, good)).await;
        match step {
            Ok(Ok(Head::Unchanged)) => {}
            Ok(Ok(Head::Refused { head, reason, kind })) => {
                Metrics::count(&app.metrics.revisions, kind);
                last_seen = Some(head.clone());
                let _ = app.handle.refuse(&head, &reason).await;
            }
            Ok(Ok(Head::Valid { head, desired })) => {
                Metrics::count(&app.metrics.revisions, "taken");
                app.metrics.notification_targets(
                    desired
                        .settings
                        .notifications
                        .iter()
                        .map(|n| n.name.as_str()),
                );
                last_seen = Some(head);
                // In-process agents for directly managed nodes not driven yet.
                for c in desired.clusters.values() {
                    for n in c.nodes.iter().filter(|n| n.managed == Managed::Direct) {
                        if driven.insert(n.id.clone()) {
                            app.handle.spawn_direct_agent(
                                n.id.clone(),
                                pipeline::driver_for(c, n, app.options.node_timeout),
                                DirectOptions {
                                    interval: app.options.direct_interval,
                                    timeout: app.options.node_timeout,
                                    first_reading: None,
                                    declared: None,
                                },
                                agents_stop.clone(),
                            );
                        }
                    }
                }
                if app.handle.revision(*desired, None).await.is_err() {
                    break;
                }
                app.drift.revision_taken.notify_one();
            }
            Ok(Err(message)) => {
                Metrics::count(&app.metrics.revisions, "fetch_failed");
                tracing::warn!("{message}; keeping the last good revision");
            }
            Err(e) => tracing::error!("the follower failed: {e}"),
        }
        app.ready.store(true, Ordering::Relaxed);
        if app.handle.tick().await.is_err() {
            break;
        }
        if app.options.push_audit {
            let options = app.options.clone();
            let dir = git_dir.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || push_audit(&options, &dir)).await
            {
                tracing::warn!("cannot push the audit log: {e}");
            }
        }
    }
    let _ = agents_stop_tx.send(true);
}

enum Head {
    Unchanged,
    Refused {
        head: String,
        reason: String,
        kind: &'static str,
    },
    Valid {
        head: String,
        desired: Box<crate::pure::spec::model::Desired>,
    },
}

/// Fetch and look at the tracked branch's head (blocking: git).
fn check_head(
    options: &ServeOptions,
    seen: Option<String>,
    good: Option<String>,
) -> Result<Head, String> {
    let repo = open_repo(options)
        .map_err(|e| format!("cannot fetch {}: {e}", redact_url(&options.repo)))?;
    let branch = format!("refs/heads/{}", options.branch);
    let head = repo
        .resolve(&branch)
        .map_err(|e| format!("the tracked branch {branch}: {e}"))?;
    if seen.as_deref() == Some(head.as_str()) {
        return Ok(Head::Unchanged);
    }
    if let Some(good) = good.as_deref().filter(|g| *g != head) {
        let r = repo.repository();
        let descends = match (git2::Oid::from_str(&head), git2::Oid::from_str(good)) {
            (Ok(h), Ok(g)) => r.graph_descendant_of(h, g).unwrap_or(false),
            _ => false,
        };
        // A good head that is no longer in the repository, or a head that does not
        // descend from it: history was rewritten.
        if !descends {
            return Ok(Head::Refused {
                reason: format!(
                    "history rewritten: {} does not descend from the last good revision {}",
                    &head[..12],
                    &good[..good.len().min(12)]
                ),
                head,
                kind: "rewritten",
            });
        }
    }
    match pipeline::desired(&repo, &Revision::Rev(head.clone())) {
        Ok(desired) => {
            let policy = crate::edges::trust::policy(&repo, good.as_deref(), &desired);
            match crate::edges::trust::check(repo.repository(), &head, &policy) {
                Ok(signed) => {
                    if let Some(s) = signed {
                        tracing::info!(head = %head, signer = %s.signer, kind = s.kind, "signed head");
                    }
                    Ok(Head::Valid {
                        head,
                        desired: Box::new(desired),
                    })
                }
                Err(reason) => Ok(Head::Refused {
                    head,
                    reason: reason.to_string(),
                    kind: "untrusted",
                }),
            }
        }
        Err(PipelineError::Invalid { diagnostics, .. }) => {
            let first = diagnostics
                .first()
                .map(|d| d.to_string())
                .unwrap_or_default();
            Ok(Head::Refused {
                reason: format!("invalid ({} error(s)); first: {first}", diagnostics.len()),
                head,
                kind: "invalid",
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Push the journal and the notes to the remote.
fn push_audit(options: &ServeOptions, git_dir: &std::path::Path) -> Result<(), String> {
    let repo = git2::Repository::open(git_dir).map_err(|e| e.to_string())?;
    let mut remote = repo
        .remote_anonymous(&options.repo)
        .map_err(|e| e.to_string())?;
    let mut specs = Vec::new();
    for r in [JOURNAL_REF, NOTES_REF] {
        if repo.refname_to_id(r).is_ok() {
            specs.push(format!("{r}:{r}"));
        }
    }
    if specs.is_empty() {
        return Ok(());
    }
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    remote
        .push(&specs, None)
        .map_err(|e| redact_url(e.message()))
}

async fn hook_github(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    hook(app, Forge::GitHub, headers, body).await
}

async fn hook_gitlab(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    hook(app, Forge::GitLab, headers, body).await
}

async fn hook_gitea(State(app): State<Shared>, headers: HeaderMap, body: Body) -> Response {
    hook(app, Forge::Gitea, headers, body).await
}

/// Read a body up to `limit` bytes; a larger one is a 413 (counted by the caller).
async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} bytes"),
        )
    })
}

async fn hook(app: Shared, forge: Forge, headers: HeaderMap, body: Body) -> Response {
    let name = forge.name();
    let count = |result: &str| app.metrics.delivery(name, result);
    let body = match read_body(body, MAX_WEBHOOK_BYTES).await {
        Ok(b) => b,
        Err(response) => {
            count("too_large");
            return response;
        }
    };
    let Some(secret) = app.options.webhook_secret.as_deref() else {
        count("unauthorized");
        return error(
            StatusCode::UNAUTHORIZED,
            "this server has no webhook secret (CACHEFLOW_WEBHOOK_SECRET_FILE): webhooks are refused",
        );
    };
    let sig_header = match forge {
        Forge::GitHub => "x-hub-signature-256",
        Forge::GitLab => "x-gitlab-token",
        Forge::Gitea => "x-gitea-signature",
    };
    let sig = headers.get(sig_header).and_then(|v| v.to_str().ok());
    if let Err(why) = webhook::verify(forge, secret, sig, &body) {
        count("unauthorized");
        return error(StatusCode::UNAUTHORIZED, format!("{sig_header}: {why}"));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/json") {
        count("unsupported_media_type");
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type `{content_type}`: set the webhook's content type to application/json"
            ),
        );
    }
    let event = headers
        .get(forge.event_header())
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(id) = headers
        .get(forge.delivery_header())
        .and_then(|v| v.to_str().ok())
    {
        if !app.deliveries.lock().expect("deliveries lock").first(id) {
            count("duplicate");
            return (
                StatusCode::OK,
                Json(json!({"ignored": format!("delivery {id} was already received")})),
            )
                .into_response();
        }
    }
    if event == "ping" {
        count("ignored");
        return (StatusCode::OK, Json(json!({"pong": true}))).into_response();
    }
    if crate::edges::forge::is_pull_request(forge, event) {
        return pull_request(&app, forge, event, &body).await;
    }
    if !forge.is_push(event) {
        count("ignored");
        return (
            StatusCode::ACCEPTED,
            Json(json!({"ignored": format!("event `{event}` is not a push")})),
        )
            .into_response();
    }
    let push: Push = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            count("bad_request");
            return error(
                StatusCode::BAD_REQUEST,
                format!("the push payload is not what {name} sends: {e}"),
            );
        }
    };
    let tracked = format!("refs/heads/{}", app.options.branch);
    if push.git_ref != tracked {
        count("ignored");
        return (
            StatusCode::ACCEPTED,
            Json(json!({"ignored": format!("push to {}, this server tracks {tracked}", push.git_ref)})),
        )
            .into_response();
    }
    count("accepted");
    app.wake_follower.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({"accepted": true, "after": push.after})),
    )
        .into_response()
}

/// A pull-request event: answered at once; the feedback is posted in the background.
async fn pull_request(app: &Shared, forge: Forge, event: &str, body: &[u8]) -> Response {
    let name = forge.name();
    let pr = match crate::edges::forge::pull_request(forge, event, body) {
        Ok(Some(pr)) => pr,
        Ok(None) => {
            app.metrics.delivery(name, "ignored");
            Metrics::count(&app.metrics.pr_feedback, "ignored");
            return (
                StatusCode::ACCEPTED,
                Json(json!({"ignored": "this pull-request action needs no feedback"})),
            )
                .into_response();
        }
        Err(e) => {
            app.metrics.delivery(name, "bad_request");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let client = match app.feedback.client(forge) {
        Ok(c) => c,
        Err(why) => {
            app.metrics.delivery(name, "ignored");
            Metrics::count(&app.metrics.pr_feedback, "ignored");
            return (StatusCode::ACCEPTED, Json(json!({"ignored": why}))).into_response();
        }
    };
    app.metrics.delivery(name, "accepted");
    let live = match app.handle.drift_inputs(app.options.silent_after).await {
        Ok(inputs) => inputs.live,
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the reconciler has stopped",
            )
        }
    };
    let answer = json!({"accepted": true, "pullRequest": pr.number, "head": pr.head_sha});
    tokio::spawn(pr::answer(
        app.options.clone(),
        client,
        app.metrics.clone(),
        pr,
        live,
    ));
    (StatusCode::ACCEPTED, Json(answer)).into_response()
}

async fn report(
    State(app): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let began = std::time::Instant::now();
    let metrics = Arc::clone(&app.metrics);
    let response = answer_report(app, id, headers, body).await;
    metrics
        .report_duration
        .observe(began.elapsed().as_secs_f64());
    response
}

async fn answer_report(app: Shared, id: String, headers: HeaderMap, body: Body) -> Response {
    let count = |r: &str| Metrics::count(&app.metrics.reports, r);
    let body = match read_body(body, MAX_PAYLOAD_BYTES).await {
        Ok(b) => b,
        Err(response) => {
            count("too_large");
            return response;
        }
    };
    let Some(secret) = app.options.node_token_secret.as_deref() else {
        count("unauthorized");
        return error(
            StatusCode::UNAUTHORIZED,
            "this server has no node-token secret (CACHEFLOW_NODE_TOKEN_SECRET_FILE): agents cannot report",
        );
    };
    let token = bearer(&headers).unwrap_or("");
    if !crate::pure::identity::verify(secret, &id, token) {
        count("unauthorized");
        return error(
            StatusCode::UNAUTHORIZED,
            format!("no valid token for node `{id}`: give the agent the output of `cacheflow agent-token {id}`"),
        );
    }
    let report = match Report::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            count("malformed");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    match app.handle.report(&id, report).await {
        Ok(Ok(assignment)) => {
            count("ok");
            (StatusCode::OK, Json(assignment)).into_response()
        }
        Ok(Err(e @ RefusedInput::UnknownNode(_))) => {
            count("unknown_node");
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => {
            count("malformed");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler has stopped",
        ),
    }
}

/// The name of the admin whose token the request carries, or the 401 to answer.
fn admin(app: &App, headers: &HeaderMap) -> Result<String, Box<Response>> {
    let token = bearer(headers).unwrap_or("");
    let who = app
        .options
        .admin_tokens
        .iter()
        .find(|(_, t)| webhook::constant_time_eq(t.as_bytes(), token.as_bytes()))
        .map(|(name, _)| name.clone());
    who.filter(|_| !token.is_empty()).ok_or_else(|| {
        Metrics::count(&app.metrics.admin_calls, "unauthorized");
        Box::new(error(
            StatusCode::UNAUTHORIZED,
            "an admin token is required (Authorization: Bearer …, from CACHEFLOW_ADMIN_TOKENS_FILE)",
        ))
    })
}

/// `GET /api/v1/drift` (admin): the drift report of this moment, from the nodes' latest
/// reports; nothing is written or sent (`cacheflow drift --server`).
async fn drift_now(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(response) = admin(&app, &headers) {
        return *response;
    }
    let Ok(inputs) = app.handle.drift_inputs(app.options.silent_after).await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler has stopped",
        );
    };
    let (live, not_compared) = (inputs.live, inputs.not_compared);
    let Some(desired) = inputs.desired else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no revision taken yet: nothing to compare the nodes with",
        );
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
    .await;
    match report {
        Ok(r) => (StatusCode::OK, Json(r)).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `POST /api/v1/drift/run` (admin): a scheduled run now: the report is written into the
/// state directory, sent, and corrected when `drift.mode` says so.
async fn drift_run(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(response) = admin(&app, &headers) {
        return *response;
    }
    Metrics::count(&app.metrics.admin_calls, "ok");
    match app.drift.once().await {
        Ok(r) => (StatusCode::OK, Json(r)).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
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

async fn rollouts(State(app): State<Shared>) -> Response {
    match app.handle.state().await {
        Ok(state) => Json(rollout_status(&state)).into_response(),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler has stopped",
        ),
    }
}

async fn clusters(State(app): State<Shared>) -> Response {
    let Ok(state) = app.handle.state().await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler has stopped",
        );
    };
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
    Json(json!({ "head": state.head, "clusters": list })).into_response()
}

async fn command(
    State(app): State<Shared>,
    Path((cluster, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let count = |r: &str| Metrics::count(&app.metrics.admin_calls, r);
    let by = match admin(&app, &headers) {
        Ok(name) => name,
        Err(response) => return *response,
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
                count("refused");
                return error(
                    StatusCode::BAD_REQUEST,
                    "an override needs a reason: a JSON body {\"reason\": \"...\"}",
                );
            };
            Event::Override { by, reason }
        }
        other => {
            count("refused");
            return error(
                StatusCode::NOT_FOUND,
                format!("unknown action `{other}`: pause, resume, promote, abort or override"),
            );
        }
    };
    match app.handle.command(&cluster, event).await {
        Ok(Ok(())) => {
            count("ok");
            let state = app.handle.state().await.map(|s| rollout_status(&s)).ok();
            let this = state.and_then(|s| {
                s["clusters"]
                    .as_array()?
                    .iter()
                    .find(|c| c["cluster"] == cluster.as_str())
                    .cloned()
            });
            (StatusCode::OK, Json(json!({"ok": true, "cluster": this}))).into_response()
        }
        Ok(Err(e @ RefusedInput::UnknownCluster(_))) => {
            count("refused");
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => {
            count("refused");
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the reconciler has stopped",
        ),
    }
}

async fn metrics_text(State(app): State<Shared>) -> Response {
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

async fn readyz(State(app): State<Shared>) -> Response {
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
