//! The router of `cacheflow serve`: every route and its handler, apart from serving (the
//! accept loop is `http.rs`), so tests call it directly.
//!
//! ```text
//! /hooks/{github,gitlab,gitea}                       hooks.rs   signature
//! /api/v1/nodes/{id}/report                          api.rs     node token
//! /api/v1/rollouts/{cluster}/{action}, /api/v1/drift, /api/v1/drift/run   api.rs   admin token
//! /api/v1/clusters, /api/v1/rollouts                 api.rs     read token, when there are read tokens
//! /metrics, /healthz, /readyz                        api.rs     none
//! /, /clusters/{name}, /drift, /console/*            console.rs read token, when there are read tokens
//! ```
//!
//! Every request is logged once answered (`access.rs`, target `cacheflow::access`).
//!
//! Refusals are [`ApiError`](super::error::ApiError)s; bodies are read through
//! [`Bodies`] (size, memory and time bounds).

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use axum::Router;

use tokio::sync::watch;

use super::body::Bodies;
use super::{access, api, console, hooks, Shared, MAX_WEBHOOK_BYTES};
use crate::pure::protocol::MAX_PAYLOAD_BYTES;

/// What the handlers are given: the server and the bounds of body reading.
#[derive(Clone)]
pub(super) struct AppState {
    pub app: Shared,
    pub bodies: Bodies,
}

impl FromRef<AppState> for Shared {
    fn from_ref(state: &AppState) -> Shared {
        state.app.clone()
    }
}

impl FromRef<AppState> for Bodies {
    fn from_ref(state: &AppState) -> Bodies {
        state.bodies.clone()
    }
}

/// Every route of the server; `stop` turning true ends the console's event streams.
pub(super) fn app_stopping(state: Shared, stop: watch::Receiver<bool>) -> Router {
    app_full(state, Bodies::default(), stop)
}

/// Every route of the server, reading bodies under `bodies`.
#[cfg(test)]
pub(super) fn app_with(state: Shared, bodies: Bodies) -> Router {
    let (_stop, never) = watch::channel(false);
    app_full(state, bodies, never)
}

/// The API's routes and the console's.
fn app_full(state: Shared, bodies: Bodies, stop: watch::Receiver<bool>) -> Router {
    let console = console::Console::new(state.handle.clone(), console_options(&state), stop);
    Router::new()
        .route("/hooks/github", post(hooks::github))
        .route("/hooks/gitlab", post(hooks::gitlab))
        .route("/hooks/gitea", post(hooks::gitea))
        .route("/api/v1/nodes/{id}/report", post(api::report))
        .route("/api/v1/clusters", get(api::clusters))
        .route("/api/v1/rollouts", get(api::rollouts))
        .route("/api/v1/rollouts/{cluster}/{action}", post(api::command))
        .route("/api/v1/drift", get(api::drift_now))
        .route("/api/v1/drift/run", post(api::drift_run))
        .route("/metrics", get(api::metrics_text))
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .layer(DefaultBodyLimit::max(
            MAX_WEBHOOK_BYTES.max(MAX_PAYLOAD_BYTES),
        ))
        .layer(axum::middleware::from_fn(access::log))
        .with_state(AppState { app: state, bodies })
        .merge(console::router(std::sync::Arc::new(console)))
}

/// What the console of `serve` reads: the tracked branch, the drift runs' directory.
fn console_options(app: &super::App) -> console::ConsoleOptions {
    let o = &app.options;
    console::ConsoleOptions {
        repo: o.repo.clone(),
        mirror: Some(super::origin(o).mirror),
        rev: format!("refs/heads/{}", o.branch),
        drift_dir: Some(app.drift.dir.clone()),
        read_tokens: o.read_tokens.clone(),
        admin_tokens: o.admin_tokens.clone(),
        actions: true,
        secure_cookie: o.tls.is_some(),
    }
}

#[cfg(test)]
mod tests {
    //! The routes called directly (no socket): webhooks, node reports, admin commands,
    //! and the checks made before a body is read.

    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::{Body, Bytes};
    use axum::http::{Request, StatusCode};
    use axum::Router;
    use tokio::sync::Notify;
    use tower::ServiceExt;

    use super::super::body::Bodies;
    use super::super::{drift, pr, App, ServeOptions};
    use crate::edges::audit::Journal;
    use crate::edges::forge::webhook::{github_signature, Deliveries};
    use crate::edges::metrics::Metrics;
    use crate::flow::runtime;

    const SECRET: &[u8] = b"webhook-secret";
    const NODE_SECRET: &[u8] = b"node-token-secret-for-tests";
    const ADMIN: &str = "admin-token-0123";

    /// A server with an empty journal and no revision taken, its routes reading bodies
    /// within 300 ms and 64 KiB in all.
    struct Test {
        router: Router,
        app: Arc<App>,
        _dir: tempfile::TempDir,
    }

    fn server() -> Test {
        server_reading(BTreeMap::new())
    }

    /// The same server with read tokens.
    fn server_reading(read_tokens: BTreeMap<String, String>) -> Test {
        let dir = tempfile::tempdir().unwrap();
        git2::Repository::init_bare(dir.path().join("git")).unwrap();
        let journal = Journal::open(&dir.path().join("git")).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (handle, _task) =
            runtime::start(journal, 0, Some(metrics.clone()), false, None).unwrap();
        let notifier = crate::edges::notify::Notifier::new(
            crate::edges::notify::NotifyOptions::default(),
            Some(metrics.clone()),
        );
        let options = ServeOptions {
            repo: dir.path().display().to_string(),
            path: String::new(),
            branch: "main".into(),
            state_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            poll_interval: Duration::from_secs(3600),
            webhook_secret: Some(SECRET.to_vec()),
            node_token_secret: Some(NODE_SECRET.to_vec()),
            admin_tokens: BTreeMap::from([("alice".to_owned(), ADMIN.to_owned())]),
            read_tokens,
            push_audit: false,
            direct_interval: Duration::from_secs(5),
            node_timeout: Duration::from_secs(5),
            resume_grace: Duration::ZERO,
            silent_after: Duration::from_secs(60),
            forge_api_url: None,
            forge_token: None,
            tls: None,
            replication: None,
        };
        let app = Arc::new(App {
            handle: handle.clone(),
            feedback: pr::Feedback::new(None, None),
            drift: drift::DriftRunner {
                handle,
                dir: dir.path().join("drift"),
                metrics: metrics.clone(),
                notifier,
                silent_after: options.silent_after,
                revision_taken: Arc::new(Notify::new()),
                notices: Arc::default(),
            },
            options,
            metrics,
            deliveries: Mutex::new(Deliveries::default()),
            wake_follower: Notify::new(),
            fence: None,
            ready: AtomicBool::new(false),
            // Held reports answered well within `call`'s 2 s.
            report_hold: Duration::from_millis(200),
            remote: Mutex::new(crate::entry::server::RemoteHealth::default()),
        });
        let router = super::app_with(
            app.clone(),
            Bodies::new(64 << 10, Duration::from_millis(300)),
        );
        Test {
            router,
            app,
            _dir: dir,
        }
    }

    /// A body whose bytes never come (the sender is leaked: the client stalls).
    fn stalled() -> Body {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        std::mem::forget(tx);
        struct Stalled(tokio::sync::mpsc::Receiver<Bytes>);
        impl axum::body::HttpBody for Stalled {
            type Data = Bytes;
            type Error = std::io::Error;
            fn poll_frame(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
                self.0
                    .poll_recv(cx)
                    .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
            }
        }
        Body::new(Stalled(rx))
    }

    impl Test {
        /// The status and the JSON body of a request (`Null` when not JSON); panics if
        /// the answer takes longer than 2 s.
        async fn call(&self, request: Request<Body>) -> (StatusCode, serde_json::Value) {
            let response =
                tokio::time::timeout(Duration::from_secs(2), self.router.clone().oneshot(request))
                    .await
                    .expect("an answer within 2 s")
                    .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice(&bytes).unwrap_or_default())
        }

        fn metrics(&self) -> String {
            self.app.metrics.encode()
        }
    }

    fn post(path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
        let mut request = Request::post(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.body(body).unwrap()
    }

    /// The one error envelope, with its code.
    fn refused(answer: &(StatusCode, serde_json::Value), status: u16, code: &str) -> String {
        assert_eq!(answer.0.as_u16(), status, "{}", answer.1);
        assert_eq!(answer.1["code"], code, "{}", answer.1);
        answer.1["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }

    #[tokio::test]
    async fn webhooks_are_checked_before_their_body_and_a_signed_push_wakes_the_follower() {
        let t = server();
        let hook = |headers: &[(&str, &str)], body: Body| post("/hooks/github", headers, body);
        // No signature: refused without waiting for a body that never comes.
        let answer = t.call(hook(&[("x-github-event", "push")], stalled())).await;
        let why = refused(&answer, 401, "unauthorized");
        assert!(why.contains("the signature header is missing"), "{why}");
        let answer = t
            .call(hook(&[("x-hub-signature-256", "sha1=00")], stalled()))
            .await;
        refused(&answer, 401, "unauthorized");
        // A declared length over 1 MiB: 413 before anything is read.
        let answer = t
            .call(hook(&[("content-length", "100000000")], stalled()))
            .await;
        let why = refused(&answer, 413, "too_large");
        assert_eq!(why, "the body is larger than 1048576 bytes");
        // A well-formed signature and a body that stalls: 408 at the time bound.
        let sig = github_signature(SECRET, b"{}");
        let answer = t
            .call(hook(&[("x-hub-signature-256", &sig)], stalled()))
            .await;
        refused(&answer, 408, "timeout");
        // A signed push to the tracked branch wakes the follower; its replay is ignored.
        let body = br#"{"ref":"refs/heads/main","after":"abc"}"#;
        let sig = github_signature(SECRET, body);
        let headers = [
            ("x-hub-signature-256", sig.as_str()),
            ("x-github-event", "push"),
            ("x-github-delivery", "d-1"),
            ("content-type", "application/json"),
        ];
        let woken = t.app.wake_follower.notified();
        let (status, json) = t.call(hook(&headers, Body::from(&body[..]))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{json}");
        assert_eq!(json, serde_json::json!({"accepted": true, "after": "abc"}));
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("the follower is woken");
        let (status, json) = t.call(hook(&headers, Body::from(&body[..]))).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(json["ignored"]
            .as_str()
            .unwrap()
            .contains("already received"));
        // Signed but forged, and signed but not JSON.
        let forged = github_signature(b"not the secret", body);
        let answer = t
            .call(hook(
                &[("x-hub-signature-256", &forged)],
                Body::from(&body[..]),
            ))
            .await;
        let why = refused(&answer, 401, "unauthorized");
        assert!(why.contains("does not match the body"), "{why}");
        let answer = t
            .call(hook(
                &[
                    ("x-hub-signature-256", &sig),
                    ("content-type", "text/plain"),
                ],
                Body::from(&body[..]),
            ))
            .await;
        refused(&answer, 415, "unsupported_media_type");
        let metrics = t.metrics();
        for line in [
            r#"cacheflow_webhook_deliveries_total{forge="github",result="unauthorized"} 3"#,
            r#"cacheflow_webhook_deliveries_total{forge="github",result="too_large"} 1"#,
            r#"cacheflow_webhook_deliveries_total{forge="github",result="timeout"} 1"#,
            r#"cacheflow_webhook_deliveries_total{forge="github",result="accepted"} 1"#,
            r#"cacheflow_webhook_deliveries_total{forge="github",result="duplicate"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} not in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn a_gitlab_token_is_checked_whole_before_the_body() {
        let t = server();
        let answer = t
            .call(post(
                "/hooks/gitlab",
                &[("x-gitlab-token", "a guess")],
                stalled(),
            ))
            .await;
        let why = refused(&answer, 401, "unauthorized");
        assert!(why.contains("the token does not match"), "{why}");
    }

    #[tokio::test]
    async fn node_reports_need_the_node_token_before_their_body() {
        let t = server();
        let path = "/api/v1/nodes/a1/report";
        let answer = t.call(post(path, &[], stalled())).await;
        let why = refused(&answer, 401, "unauthorized");
        assert!(why.contains("cacheflow agent-token a1"), "{why}");
        let wrong = crate::pure::identity::node_token(NODE_SECRET, "a2").unwrap();
        let bearer = format!("Bearer {wrong}");
        let answer = t
            .call(post(path, &[("authorization", &bearer)], stalled()))
            .await;
        refused(&answer, 401, "unauthorized");
        let token = crate::pure::identity::node_token(NODE_SECRET, "a1").unwrap();
        let bearer = format!("Bearer {token}");
        let auth = ("authorization", bearer.as_str());
        let answer = t.call(post(path, &[auth], Body::from("<html>"))).await;
        refused(&answer, 400, "bad_request");
        let answer = t
            .call(post(
                path,
                &[auth, ("content-length", "2000000")],
                stalled(),
            ))
            .await;
        refused(&answer, 413, "too_large");
        // No revision taken yet: every node is unknown.
        let report = r#"{"version":1,"nodeId":"a1","agent":"t","sentAt":"2026-11-21T00:00:00Z","node":{"reachable":true}}"#;
        let answer = t.call(post(path, &[auth], Body::from(report))).await;
        let why = refused(&answer, 404, "not_found");
        assert!(why.contains("not declared"), "{why}");
        let answer = t.call(post(path, &[auth], stalled())).await;
        refused(&answer, 408, "timeout");
        let metrics = t.metrics();
        for line in [
            r#"cacheflow_node_reports_total{result="unauthorized"} 2"#,
            r#"cacheflow_node_reports_total{result="malformed"} 1"#,
            r#"cacheflow_node_reports_total{result="too_large"} 1"#,
            r#"cacheflow_node_reports_total{result="unknown_node"} 1"#,
            r#"cacheflow_node_reports_total{result="timeout"} 1"#,
        ] {
            assert!(metrics.contains(line), "{line} not in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn admin_routes_need_an_admin_token_and_say_why_they_refuse() {
        let t = server();
        let answer = t
            .call(post("/api/v1/rollouts/cache/pause", &[], stalled()))
            .await;
        let why = refused(&answer, 401, "unauthorized");
        assert!(why.contains("an admin token is required"), "{why}");
        let bearer = format!("Bearer {ADMIN}");
        let admin = ("authorization", bearer.as_str());
        let answer = t
            .call(post(
                "/api/v1/rollouts/cache/pause",
                &[admin],
                Body::empty(),
            ))
            .await;
        refused(&answer, 404, "not_found");
        let answer = t
            .call(post(
                "/api/v1/rollouts/cache/explode",
                &[admin],
                Body::empty(),
            ))
            .await;
        let why = refused(&answer, 404, "not_found");
        assert!(why.contains("unknown action `explode`"), "{why}");
        let answer = t
            .call(post(
                "/api/v1/rollouts/cache/override",
                &[admin],
                Body::from(r#"{"reason": "  "}"#),
            ))
            .await;
        let why = refused(&answer, 400, "bad_request");
        assert!(why.contains("an override needs a reason"), "{why}");
        let answer = t
            .call(post(
                "/api/v1/rollouts/cache/retry",
                &[admin],
                Body::empty(),
            ))
            .await;
        let why = refused(&answer, 400, "bad_request");
        assert!(why.contains("a retry needs a reason"), "{why}");
        let answer = t
            .call(post(
                "/api/v1/rollouts/cache/retry",
                &[admin],
                Body::from(r#"{"reason": "INC-1"}"#),
            ))
            .await;
        let why = refused(&answer, 404, "not_found");
        assert!(why.contains("cluster `cache` is not declared"), "{why}");
        let answer = t
            .call(
                Request::get("/api/v1/drift")
                    .header("authorization", &bearer)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        let why = refused(&answer, 503, "unavailable");
        assert!(why.contains("no revision taken yet"), "{why}");
        let answer = t
            .call(Request::get("/api/v1/drift").body(Body::empty()).unwrap())
            .await;
        refused(&answer, 401, "unauthorized");
        let (status, json) = t
            .call(
                Request::get("/api/v1/rollouts")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(json, serde_json::json!({"head": null, "clusters": []}));
        let metrics = t.metrics();
        for line in [
            r#"cacheflow_admin_calls_total{result="unauthorized"} 2"#,
            r#"cacheflow_admin_calls_total{result="refused"} 5"#,
        ] {
            assert!(metrics.contains(line), "{line} not in\n{metrics}");
        }
    }

    #[tokio::test]
    async fn with_read_tokens_the_console_and_the_status_need_one_and_signing_in_sets_a_cookie() {
        const READER: &str = "read-token-0123456789";
        let t = server_reading(BTreeMap::from([("bob".to_owned(), READER.to_owned())]));
        let get = |path: &str, headers: &[(&str, &str)]| {
            let mut request = Request::get(path);
            for (k, v) in headers {
                request = request.header(*k, *v);
            }
            request.body(Body::empty()).unwrap()
        };
        let raw = |request: Request<Body>| {
            let router = t.router.clone();
            async move {
                let response = router.oneshot(request).await.unwrap();
                let status = response.status().as_u16();
                let cookie = response
                    .headers()
                    .get("set-cookie")
                    .map(|v| v.to_str().unwrap().to_owned());
                let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, cookie, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        let answer = t.call(get("/api/v1/rollouts", &[])).await;
        let why = refused(&answer, 401, "unauthorized");
        assert!(why.contains("a read token is required"), "{why}");
        let (status, _, page) = raw(get("/", &[])).await;
        assert_eq!(status, 401);
        assert!(page.contains("This server asks for a read token"), "{page}");
        let login = |token: &str| {
            post(
                "/console/login",
                &[("content-type", "application/json")],
                Body::from(serde_json::json!({ "token": token }).to_string()),
            )
        };
        assert_eq!(raw(login("a guess")).await.0, 401);
        let (status, cookie, _) = raw(login(READER)).await;
        assert_eq!(status, 204);
        let cookie = cookie.expect("a session cookie");
        assert!(
            cookie.starts_with("cacheflow_session=")
                && cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict"),
            "{cookie}"
        );
        assert!(
            !cookie.contains(READER),
            "the token is not in the cookie as typed"
        );
        let session = cookie.split(';').next().unwrap().to_owned();
        let (status, _, page) = raw(get("/", &[("cookie", &session)])).await;
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("<h1>Fleet</h1>"), "{page}");
        // An admin token reads too; a reader's token still commands nothing.
        let admin = format!("Bearer {ADMIN}");
        let (status, json) = t
            .call(get("/api/v1/rollouts", &[("authorization", &admin)]))
            .await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let reader = format!("Bearer {READER}");
        let answer = t
            .call(post(
                "/api/v1/rollouts/cache/pause",
                &[("authorization", &reader)],
                Body::empty(),
            ))
            .await;
        refused(&answer, 401, "unauthorized");
        // Scrapers and probes need nothing.
        assert_eq!(raw(get("/metrics", &[])).await.0, 200);
        assert_eq!(raw(get("/healthz", &[])).await.0, 200);
    }
}
