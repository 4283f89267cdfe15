//! A control plane for agent tests: `POST /api/v1/nodes/{id}/report` over real HTTP on a
//! loopback port, checking the bearer token with `cacheflow::pure::identity` and every report
//! against the protocol schema, recording what it got and answering with the assignment
//! the test set. The reconciler's real server replaces it in the end-to-end tests of that
//! issue; the agent cannot tell the difference (same route, same payloads).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use cacheflow::pure::protocol::{Assignment, Report};

pub const SECRET: &[u8] = b"a test node-token secret of 32 b";

/// What the control plane answers instead of the assignment set with `assign`.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status with a short body, `count` times, then assignments again.
    Status(u16, usize),
    /// This raw body with status 200.
    Raw(String),
}

#[derive(Default)]
struct Inner {
    assignment: Option<Assignment>,
    answer: Option<Answer>,
    reports: Vec<(Instant, Report)>,
    /// The `cacheflow-reads` header answered with assignments (none: a server of before
    /// the optional report fields).
    reads: Option<String>,
    /// Requests of any kind, with their time (including refused ones).
    hits: Vec<Instant>,
}

pub struct ControlPlane {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl ControlPlane {
    /// Serve on a free loopback port, on the current tokio runtime.
    pub async fn start() -> ControlPlane {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/v1/nodes/{id}/report", post(report))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the control plane to a loopback port");
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ControlPlane { url, inner }
    }

    /// The token of `node_id` under the control plane's secret.
    pub fn token(node_id: &str) -> String {
        cacheflow::pure::identity::node_token(SECRET, node_id).unwrap()
    }

    pub fn assign(&self, assignment: Assignment) {
        self.inner.lock().unwrap().assignment = Some(assignment);
    }

    /// Name these optional report fields in the `cacheflow-reads` header of every
    /// assignment from now on, as a server that reads them does.
    pub fn reads(&self, fields: &str) {
        self.inner.lock().unwrap().reads = Some(fields.to_owned());
    }

    pub fn answer(&self, answer: Answer) {
        self.inner.lock().unwrap().answer = Some(answer);
    }

    pub fn reports(&self) -> Vec<Report> {
        self.inner
            .lock()
            .unwrap()
            .reports
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn hits(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().hits.clone()
    }

    /// Wait (up to `secs`) until a report satisfies `pred`; that report.
    pub async fn wait_for(&self, secs: u64, pred: impl Fn(&Report) -> bool) -> Report {
        let deadline = Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(r) = self.reports().into_iter().find(|r| pred(r)) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no such report within {secs} s; got {:#?}",
                self.reports()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

async fn report(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = inner.lock().unwrap();
    s.hits.push(Instant::now());
    if let Some(Answer::Status(code, left)) = s.answer.clone() {
        s.answer = (left > 1).then_some(Answer::Status(code, left - 1));
        return (StatusCode::from_u16(code).unwrap(), "not now").into_response();
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !cacheflow::pure::identity::verify(SECRET, &id, token) {
        return (StatusCode::UNAUTHORIZED, "bad node token").into_response();
    }
    let report = match Report::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if report.node_id != id {
        return (StatusCode::BAD_REQUEST, "node id mismatch").into_response();
    }
    s.reports.push((Instant::now(), report));
    if let Some(Answer::Raw(body)) = &s.answer {
        return (StatusCode::OK, body.clone()).into_response();
    }
    let assignment = s.assignment.clone().unwrap_or(Assignment {
        version: 1,
        node_id: id,
        revision: None,
        generation: 0,
        parameters: Default::default(),
        restart_allowed: false,
        report_interval_secs: None,
        catalog_version: None,
        product: None,
        unchecked: Vec::new(),
        confirmed_at: None,
    });
    let mut response = (
        StatusCode::OK,
        [("content-type", "application/json")],
        serde_json::to_string(&assignment).unwrap(),
    )
        .into_response();
    if let Some(fields) = &s.reads {
        response
            .headers_mut()
            .insert("cacheflow-reads", fields.parse().unwrap());
    }
    response
}
