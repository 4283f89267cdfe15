//! The web console of `cacheflow serve` (and `cacheflow demo --serve`): the pages at `/`,
//! the event stream that keeps them live, and who may read them. The pages are rendered
//! by [`crate::pure::console`] from the status the runtime publishes; this file
//! reads what they need (the status, the latest drift report, the commit history) and
//! answers.
//!
//! ```text
//! GET  /                       the fleet: a row per cluster, a cell per node
//! GET  /clusters/{name}        batches × nodes, bake countdown, gate figures, drift, commits
//! GET  /drift                  the latest drift report and the drift-over-time chart
//! GET  /console/events         server-sent events: the rows (or the cluster's live part)
//!                              that changed, after each status the runtime publishes
//! POST /console/login          {"token": …} ─► a session cookie (HttpOnly, SameSite=Strict)
//! ```
//!
//! With read tokens (`--read-tokens-file`) every page, the stream and the JSON status
//! routes need one (or an admin token): `Authorization: Bearer …` or the cookie set by
//! the sign-in page. The admin buttons call the JSON API with the admin token the person
//! typed, kept in the tab's `sessionStorage`; it is never sent to the pages.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::watch;

use super::error::ApiError;
use crate::edges::forge::webhook::constant_time_eq;
use crate::flow::runtime::Handle;
use crate::pure::console::{self as render, HistoryRow};
use crate::pure::drift::{self, DriftReport};
use crate::pure::reconciler::status::{ClusterStatus, Status};

/// The session cookie of a reader who typed a token.
const COOKIE: &str = "cacheflow_session";

/// How often an open stream looks for a new drift report (a file the drift runs write).
const DRIFT_LOOK: Duration = Duration::from_secs(5);

/// Commits shown on a cluster's page.
const HISTORY_LIMIT: usize = 20;

/// What the console reads and who may read it.
#[derive(Clone, Default)]
pub struct ConsoleOptions {
    /// The config repository for the commit history: a local path, or a URL whose
    /// mirror is `mirror`.
    pub repo: String,
    pub mirror: Option<PathBuf>,
    /// The revision the history starts from (`refs/heads/main`, `HEAD`).
    pub rev: String,
    /// Where the drift runs write `latest.json` and `history.jsonl`.
    pub drift_dir: Option<PathBuf>,
    /// Name → token of those who may read; empty: reading is open.
    pub read_tokens: BTreeMap<String, String>,
    /// Admin tokens read too.
    pub admin_tokens: BTreeMap<String, String>,
    /// Whether the admin buttons are shown (the JSON API is served beside the console).
    pub actions: bool,
    /// Mark the cookie `Secure` (the server speaks TLS).
    pub secure_cookie: bool,
}

/// The console's state: the runtime's status, the options, the drift report last read.
pub struct Console {
    handle: Handle,
    options: ConsoleOptions,
    stop: watch::Receiver<bool>,
    drift: Mutex<Option<(SystemTime, Arc<DriftReport>)>>,
    rows: Mutex<Rows>,
}

/// The fleet rows last rendered, shared by every open stream: after a status is
/// published each changed row is rendered once, not once per open page.
#[derive(Default)]
struct Rows {
    /// The drift report the rows were drawn with (`generated_at`).
    drift: Option<String>,
    /// Cluster → the status its row was drawn from, and the row.
    rows: HashMap<String, (Arc<ClusterStatus>, Arc<str>)>,
}

impl Rows {
    /// The row of `name` drawn from `cs`: the one rendered before when `cs` is the
    /// status it was drawn from and the drift report is the same, else rendered now.
    fn row(
        &mut self,
        name: &str,
        cs: &Arc<ClusterStatus>,
        drift: Option<&DriftReport>,
    ) -> Result<Arc<str>, render::ConsoleError> {
        let drift_at = drift.map(|d| d.generated_at.as_str());
        if self.drift.as_deref() != drift_at {
            self.rows.clear();
            self.drift = drift_at.map(str::to_owned);
        }
        if let Some((drawn, row)) = self.rows.get(name) {
            if Arc::ptr_eq(drawn, cs) {
                return Ok(row.clone());
            }
        }
        let row: Arc<str> = render::fleet_row(name, cs, drift)?.into();
        self.rows.insert(name.to_owned(), (cs.clone(), row.clone()));
        Ok(row)
    }

    fn forget(&mut self, gone: &[String]) {
        for name in gone {
            self.rows.remove(name);
        }
    }
}

impl Console {
    /// `stop` turning true ends the open event streams (a server that stops must not
    /// wait for them).
    pub fn new(handle: Handle, options: ConsoleOptions, stop: watch::Receiver<bool>) -> Console {
        Console {
            handle,
            options,
            stop,
            drift: Mutex::new(None),
            rows: Mutex::new(Rows::default()),
        }
    }

    /// The fleet row of `name` in the state `cs`, rendered by the first stream that
    /// needs it and shared with the others.
    fn fleet_row(
        &self,
        name: &str,
        cs: &Arc<ClusterStatus>,
        drift: Option<&DriftReport>,
    ) -> Result<Arc<str>, render::ConsoleError> {
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .row(name, cs, drift)
    }

    /// Forget the rows of clusters that left the status.
    fn forget_rows(&self, gone: &[String]) {
        if !gone.is_empty() {
            self.rows
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(gone);
        }
    }

    /// The latest drift report, read again only when its file changed.
    fn latest_drift(&self) -> Option<Arc<DriftReport>> {
        let path = self.options.drift_dir.as_ref()?.join("latest.json");
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
        let mut cache = self.drift.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, report)) = cache.as_ref() {
            if *at == modified {
                return Some(report.clone());
            }
        }
        let report: DriftReport = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
        let report = Arc::new(report);
        *cache = Some((modified, report.clone()));
        Some(report)
    }
}

/// The console's routes.
pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(fleet))
        .route("/clusters/{name}", get(cluster))
        .route("/drift", get(drift_page))
        .route("/console/events", get(events))
        .route("/console/login", post(login))
        .with_state(console)
}

/// Serve the console alone (the demo) on `listener` until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, console: Arc<Console>) {
    let mut stop = console.stop.clone();
    super::http::serve(listener, router(console), None, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await;
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The token in the session cookie (hex, so any token fits a cookie).
fn cookie_token(headers: &HeaderMap) -> Option<Vec<u8>> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    let value = cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)?
        .1;
    hex_decode(value)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn is_token(
    read: &BTreeMap<String, String>,
    admin: &BTreeMap<String, String>,
    token: &[u8],
) -> bool {
    !token.is_empty()
        && read
            .values()
            .chain(admin.values())
            .any(|t| constant_time_eq(t.as_bytes(), token))
}

/// May this request read? Always without read tokens; with them, when it carries one
/// (or an admin token) as a bearer token or in the session cookie.
pub fn may_read(
    read: &BTreeMap<String, String>,
    admin: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> bool {
    read.is_empty()
        || bearer(headers).is_some_and(|t| is_token(read, admin, t.as_bytes()))
        || cookie_token(headers).is_some_and(|t| is_token(read, admin, &t))
}

/// The same for the JSON status routes: 401 with why.
pub(super) fn reader(
    read: &BTreeMap<String, String>,
    admin: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if may_read(read, admin, headers) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "a read token is required (Authorization: Bearer …, from CACHEFLOW_READ_TOKENS_FILE; an admin token reads too)"
                .into(),
        ))
    }
}

/// A page, or why there is none.
enum Answer {
    Page(String),
    SignIn,
    Missing(String),
    Failed(String),
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let page = |status, body: String| {
            let mut r = (status, Html(body)).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        };
        match self {
            Answer::Page(body) => page(StatusCode::OK, body),
            Answer::SignIn => page(
                StatusCode::UNAUTHORIZED,
                render::login().unwrap_or_else(|e| e.to_string()),
            ),
            Answer::Missing(why) => page(StatusCode::NOT_FOUND, plain(&why)),
            Answer::Failed(why) => page(StatusCode::SERVICE_UNAVAILABLE, plain(&why)),
        }
    }
}

/// A one-line page, escaped.
fn plain(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>cacheflow</title></head><body><p>{escaped}</p><p><a href=\"/\">the fleet</a></p></body></html>")
}

fn rendered(r: Result<String, render::ConsoleError>) -> Answer {
    match r {
        Ok(page) => Answer::Page(page),
        Err(e) => Answer::Failed(e.to_string()),
    }
}

impl Console {
    fn may_read(&self, headers: &HeaderMap) -> bool {
        may_read(
            &self.options.read_tokens,
            &self.options.admin_tokens,
            headers,
        )
    }

    fn status(&self) -> Result<Arc<Status>, Answer> {
        self.handle
            .status()
            .map_err(|_| Answer::Failed("the reconciler has stopped".into()))
    }
}

/// `GET /`: the fleet.
async fn fleet(State(console): State<Arc<Console>>, headers: HeaderMap) -> Answer {
    if !console.may_read(&headers) {
        return Answer::SignIn;
    }
    let status = match console.status() {
        Ok(s) => s,
        Err(a) => return a,
    };
    let drift = console.latest_drift();
    rendered(render::fleet(&status, drift.as_deref()))
}

/// `GET /clusters/{name}`: one cluster, with its commits.
async fn cluster(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Answer {
    if !console.may_read(&headers) {
        return Answer::SignIn;
    }
    let status = match console.status() {
        Ok(s) => s,
        Err(a) => return a,
    };
    let Some(cs) = status.clusters.get(&name).cloned() else {
        return Answer::Missing(format!("no cluster `{name}` in the current revision"));
    };
    let drift = console.latest_drift();
    let options = console.options.clone();
    let who = name.clone();
    let history = tokio::task::spawn_blocking(move || history_of(&options, &who))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let (rows, note) = match history {
        Ok(rows) => (rows, "No commit changed this cluster yet.".to_owned()),
        Err(why) => (Vec::new(), format!("The history cannot be read: {why}")),
    };
    let page = render::cluster(&status, &name, &cs, drift.as_deref(), &rows, &note);
    match page {
        Ok(page) if !console.options.actions => Answer::Page(without_actions(page)),
        other => rendered(other),
    }
}

/// The cluster page without its admin section (a console served without the API).
fn without_actions(page: String) -> String {
    match (
        page.find("<section class=\"admin\""),
        page.find("<section id=\"history\""),
    ) {
        (Some(a), Some(h)) if a < h => format!("{}{}", &page[..a], &page[h..]),
        _ => page,
    }
}

/// The cluster's last commits with their notes (git: a blocking read).
fn history_of(options: &ConsoleOptions, cluster: &str) -> Result<Vec<HistoryRow>, String> {
    use crate::edges::source::{self, ConfigRepo};
    let repo = match &options.mirror {
        Some(mirror) if source::is_url(&options.repo) => source::open_cached(&options.repo, mirror),
        _ => ConfigRepo::open(&options.repo, None),
    }
    .map_err(|e| e.to_string())?;
    let entries = crate::flow::history::history(
        &repo,
        &crate::flow::history::HistoryOptions {
            rev: options.rev.clone(),
            cluster: Some(cluster.to_owned()),
            param: None,
            limit: HISTORY_LIMIT,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(entries
        .into_iter()
        .map(|e| {
            let changes = e
                .clusters
                .iter()
                .filter(|c| c.cluster == cluster)
                .flat_map(|c| c.parameters.iter())
                .map(|p| {
                    format!(
                        "{} {} → {}",
                        p.name,
                        p.old.as_deref().unwrap_or("(unset)"),
                        p.new.as_deref().unwrap_or("(unset)")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            let note = e
                .outcomes
                .iter()
                .filter(|o| o.starts_with(&format!("{cluster}:")))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            HistoryRow {
                commit: crate::pure::render::short_id(&e.commit).to_owned(),
                time: e.time,
                author: e.author,
                subject: e.summary,
                changes: if changes.is_empty() {
                    "nodes or rollout policy".to_owned()
                } else {
                    changes
                },
                note: if note.is_empty() {
                    e.invalid
                        .map(|why| format!("invalid: {}", why.lines().next().unwrap_or("")))
                        .unwrap_or_else(|| "no note".to_owned())
                } else {
                    note
                },
            }
        })
        .collect())
}

/// `GET /drift`: the latest report and the chart of the runs before it.
async fn drift_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Answer {
    if !console.may_read(&headers) {
        return Answer::SignIn;
    }
    let seq = console.status().map(|s| s.seq).unwrap_or(0);
    let Some(report) = console.latest_drift() else {
        return rendered(render::drift_page(
            seq,
            "<h1>Drift</h1>\n<p id=\"status\">No drift run yet: runs follow <code>drift.schedule</code>, or <code>POST /api/v1/drift/run</code>.</p>",
        ));
    };
    let mut runs = console
        .options
        .drift_dir
        .as_ref()
        .map(|d| super::drift::read_history(&d.join("history.jsonl"), super::drift::HISTORY_POINTS))
        .unwrap_or_default();
    // The history's last line is this report's run: the page draws it from the report.
    if runs.last().is_some_and(|r| r.at == report.generated_at) {
        runs.pop();
    }
    rendered(render::drift_page(seq, &drift::html_body(&report, &runs)))
}

/// The query of `/console/events`.
#[derive(Debug, Default, PartialEq)]
struct Since {
    /// The cluster whose page is open; absent: the fleet; empty: no part of the status.
    cluster: Option<String>,
    /// The status the page was drawn from (`Status::seq`).
    since: Option<u64>,
}

impl Since {
    /// `cluster=NAME&since=N`, percent-decoded.
    fn parse(query: Option<&str>) -> Since {
        let mut out = Since::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "cluster" => out.cluster = Some(percent_decode(v)),
                "since" => out.since = v.parse().ok(),
                _ => {}
            }
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /console/events`: server-sent events. `part`: an element of the page drawn
/// again (a fleet row, or the cluster's live section), to put in place of the element
/// with its id; `gone`: the id of a row whose cluster left. A stream sends what changed
/// after the status the page was drawn from, and ends when the server stops.
async fn events(
    State(console): State<Arc<Console>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let q = Since::parse(uri.query());
    if !console.may_read(&headers) {
        return Answer::SignIn.into_response();
    }
    let mut rx = console.handle.watch_status();
    let now = rx.borrow_and_update().clone();
    let drift = console.latest_drift();
    let stream = Stream {
        stop: console.stop.clone(),
        console,
        rx,
        cluster: q.cluster,
        // A page drawn from an older status gets everything at once.
        seen: (q.since == Some(now.seq)).then(|| now.clone()),
        seen_drift: drift.map(|d| d.generated_at.clone()),
        queue: VecDeque::new(),
        ended: false,
    };
    let events = futures_util::stream::unfold(stream, |mut s| async move {
        let event = s.next().await?;
        Some((Ok::<Event, Infallible>(event), s))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One open event stream: what it holds is a receiver and the status it last sent
/// from (shared with the runtime), whatever the size of the fleet.
struct Stream {
    console: Arc<Console>,
    rx: watch::Receiver<Arc<Status>>,
    stop: watch::Receiver<bool>,
    cluster: Option<String>,
    seen: Option<Arc<Status>>,
    seen_drift: Option<String>,
    queue: VecDeque<Part>,
    ended: bool,
}

/// A part of the page waiting to be sent. It becomes an event (a copy of its bytes)
/// only when its turn comes: a stream whose socket is slow holds shared rows, not
/// copies of them.
enum Part {
    /// A fleet row, shared with the other streams.
    Row(Arc<str>),
    /// The live section of a cluster's page.
    Live(String),
    /// The id of a row whose cluster left.
    Gone(String),
}

impl Part {
    fn event(self) -> Event {
        match self {
            Part::Row(row) => Event::default().event("part").data(&*row),
            Part::Live(part) => Event::default().event("part").data(part),
            Part::Gone(id) => Event::default().event("gone").data(id),
        }
    }
}

impl Stream {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(part) = self.queue.pop_front() {
                return Some(part.event());
            }
            if self.ended {
                return None;
            }
            if self.seen.is_some() {
                let stop = &mut self.stop;
                tokio::select! {
                    changed = self.rx.changed() => if changed.is_err() { return None },
                    () = async { if stop.wait_for(|s| *s).await.is_err() { std::future::pending::<()>().await } } => {
                        self.ended = true;
                        return None;
                    }
                    () = tokio::time::sleep(DRIFT_LOOK) => {}
                }
            }
            let now = self.rx.borrow_and_update().clone();
            let drift = self.console.latest_drift();
            let drift_at = drift.as_ref().map(|d| d.generated_at.clone());
            let before = if drift_at != self.seen_drift {
                // A new drift run: every cell may say something else.
                None
            } else {
                self.seen.take()
            };
            self.parts(before.as_deref(), &now, drift.as_deref());
            self.seen = Some(now);
            self.seen_drift = drift_at;
        }
    }

    /// Queue the parts of the page that differ from `before` (all of them without it).
    fn parts(&mut self, before: Option<&Status>, now: &Status, drift: Option<&DriftReport>) {
        let empty = Status::default();
        let (changed, gone) = render::changed(before.unwrap_or(&empty), now);
        match self.cluster.as_deref() {
            None => {
                for name in changed {
                    if let Ok(row) = self.console.fleet_row(name, &now.clusters[name], drift) {
                        self.queue.push_back(Part::Row(row));
                    }
                }
                self.console.forget_rows(&gone);
                for name in gone {
                    let id = format!("row-{name}");
                    self.queue.push_back(Part::Gone(id));
                }
            }
            Some("") => {}
            Some(name) => {
                if changed.contains(&name) {
                    if let Ok(part) = render::cluster_live(name, &now.clusters[name], drift) {
                        self.queue.push_back(Part::Live(part));
                    }
                }
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

/// `POST /console/login`: a read or admin token ─► the session cookie (204), or 401.
async fn login(State(console): State<Arc<Console>>, Json(body): Json<Login>) -> Response {
    let o = &console.options;
    if !is_token(
        &o.read_tokens,
        &o.admin_tokens,
        body.token.trim().as_bytes(),
    ) {
        return ApiError::Unauthorized("not a read or admin token of this server".into())
            .into_response();
    }
    let hex: String = body
        .token
        .trim()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let cookie = format!(
        "{COOKIE}={hex}; Path=/; HttpOnly; SameSite=Strict{}",
        if o.secure_cookie { "; Secure" } else { "" }
    );
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_needs_a_read_or_admin_token_as_bearer_or_cookie() {
        let read = BTreeMap::from([("bob".to_owned(), "read-token-0123456789".to_owned())]);
        let admin = BTreeMap::from([("alice".to_owned(), "admin-token-0123456".to_owned())]);
        let with = |k: header::HeaderName, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(k, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(
            may_read(&BTreeMap::new(), &admin, &HeaderMap::new()),
            "open without read tokens"
        );
        assert!(!may_read(&read, &admin, &HeaderMap::new()));
        assert!(may_read(
            &read,
            &admin,
            &with(header::AUTHORIZATION, "Bearer read-token-0123456789")
        ));
        assert!(may_read(
            &read,
            &admin,
            &with(header::AUTHORIZATION, "Bearer admin-token-0123456")
        ));
        assert!(!may_read(
            &read,
            &admin,
            &with(header::AUTHORIZATION, "Bearer read-token-012345678")
        ));
        let hex: String = "read-token-0123456789"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(may_read(
            &read,
            &admin,
            &with(header::COOKIE, &format!("a=b; {COOKIE}={hex}"))
        ));
        assert!(!may_read(
            &read,
            &admin,
            &with(header::COOKIE, &format!("{COOKIE}=zz"))
        ));
        assert!(!may_read(
            &read,
            &admin,
            &with(header::COOKIE, &format!("{COOKIE}="))
        ));
    }

    #[test]
    fn the_event_query_is_read_and_decoded() {
        assert_eq!(
            Since::parse(Some("cluster=a%2Fb&since=12")),
            Since {
                cluster: Some("a/b".into()),
                since: Some(12)
            }
        );
        assert_eq!(
            Since::parse(Some("cluster=&since=x")),
            Since {
                cluster: Some(String::new()),
                since: None
            }
        );
        assert_eq!(Since::parse(None), Since::default());
    }

    #[test]
    fn a_fleet_row_is_rendered_once_per_cluster_status_and_shared() {
        let cluster = |nodes: &[&str]| {
            Arc::new(ClusterStatus {
                target: None,
                refused: None,
                rollout: None,
                progress: None,
                assignments: BTreeMap::new(),
                declared: Arc::new(nodes.iter().map(|n| (*n).to_owned()).collect()),
            })
        };
        let mut rows = Rows::default();
        let one = cluster(&["n1", "n2"]);
        let first = rows.row("c", &one, None).unwrap();
        assert!(first.contains("id=\"row-c\""), "{first}");
        assert_eq!(first.matches("<i class=\"n s-").count(), 2, "{first}");
        // Another stream asking for the same status gets the same bytes, not a render.
        assert!(Arc::ptr_eq(&first, &rows.row("c", &one, None).unwrap()));
        // A new status of the cluster (even an equal one) is drawn again.
        let two = cluster(&["n1", "n2", "n3"]);
        let second = rows.row("c", &two, None).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert_eq!(second.matches("<i class=\"n s-").count(), 3, "{second}");
        assert!(Arc::ptr_eq(&second, &rows.row("c", &two, None).unwrap()));
        // A cluster that left is forgotten.
        rows.forget(&["c".to_owned()]);
        assert!(rows.rows.is_empty());
        assert!(!Arc::ptr_eq(&second, &rows.row("c", &two, None).unwrap()));
    }

    #[test]
    fn a_console_without_the_api_has_no_admin_buttons() {
        let page = "<main><section class=\"admin\" id=\"admin\">x</section>\n<section id=\"history\">h</section></main>".to_owned();
        assert_eq!(
            without_actions(page),
            "<main><section id=\"history\">h</section></main>"
        );
    }
}
