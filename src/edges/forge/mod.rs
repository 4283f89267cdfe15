//! Pull-request feedback through a forge's REST API: what a `pull_request` webhook says,
//! a commit status on the PR head, and one Markdown comment per pull request that each
//! new push edits instead of adding another.
//!
//! | | GitHub | Gitea | GitLab |
//! | --- | --- | --- | --- |
//! | base URL | `https://api.github.com` (Enterprise: `https://HOST/api/v3`) | `https://HOST/api/v1` | `https://HOST/api/v4` |
//! | event | `X-GitHub-Event: pull_request` | `X-Gitea-Event: pull_request` | `X-Gitlab-Event: Merge Request Hook` |
//! | feedback on | `opened`, `synchronize`, `reopened`, `edited` with a new base | `opened`, `synchronized`, `reopened`, `edited` with a new base | `open`, `reopen`, `update` with new commits (`oldrev`) or a new target branch |
//! | auth | `Authorization: Bearer T` | `Authorization: token T` | `PRIVATE-TOKEN: T` |
//! | status | `POST /repos/{o}/{r}/statuses/{sha}` | the same | `POST /projects/{id}/statuses/{sha}` |
//! | comments | `GET`/`POST /repos/{o}/{r}/issues/{n}/comments`, `PATCH /repos/{o}/{r}/issues/comments/{id}` | the same | `GET`/`POST /projects/{id}/merge_requests/{iid}/notes`, `PUT …/notes/{id}` |
//!
//! The comment cacheflow owns starts with [`MARKER`], a hidden HTML comment: the client
//! finds it by listing the pull request's comments (every page, oldest first) and edits
//! it; it remembers the comment's id per pull request so later pushes skip the listing,
//! and lists again when the remembered comment is gone (a 404 on the edit).
//!
//! The token is sent in a header marked sensitive and never appears in an error: errors
//! carry the method, the path, the HTTP status and a short excerpt of the forge's answer
//! (with the token masked should the forge echo it).

pub mod webhook;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

pub use crate::edges::forge::webhook::Forge;
use crate::pure::diff::ChangeSet;
use crate::pure::plan::Plan;

/// The hidden first line of the comment cacheflow owns on a pull request.
pub const MARKER: &str = "<!-- cacheflow:pr-feedback -->";
/// The commit status context (GitHub, Gitea) or name (GitLab).
pub const CONTEXT: &str = "cacheflow";
/// GitHub refuses comments longer than 65,536 characters; a comment is cut (on a line
/// boundary, with a note) to stay under it, counted in bytes so it holds for any text.
pub const MAX_COMMENT_BYTES: usize = 65_000;
/// GitHub's limit on a status description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 140;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Comments are listed this many per page.
const PAGE_SIZE: usize = 100;
/// Gitea caps pages at its `MAX_RESPONSE_ITEMS` (50 by default).
const GITEA_PAGE_SIZE: usize = 50;
/// At most this many pages are listed (10,000 comments on GitHub and GitLab).
const MAX_PAGES: u32 = 100;
/// Comment ids remembered (the map is emptied when it grows past this).
const MAX_REMEMBERED: usize = 10_000;

// ---------------------------------------------------------------------------------------
// Webhook payloads

/// A pull request (GitLab: merge request) that wants feedback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    /// `owner/name` on GitHub and Gitea; the project id (or its URL-decoded
    /// `group/project` path) on GitLab.
    pub repo: String,
    /// The pull request's number (GitLab: the merge request's `iid`).
    pub number: u64,
    pub head_sha: String,
    /// The source branch, without `refs/heads/`.
    pub head_ref: String,
    /// The target branch's commit when the payload names it (GitLab's does not).
    pub base_sha: Option<String>,
    /// The target branch, without `refs/heads/`.
    pub base_ref: String,
    /// Where the head can be fetched from (the fork's URL for a PR from a fork).
    pub head_clone_url: Option<String>,
}

impl PullRequest {
    fn key(&self) -> String {
        format!("{}#{}", self.repo, self.number)
    }
}

/// Whether the event header names a pull-request (merge-request) event.
pub fn is_pull_request(forge: Forge, event: &str) -> bool {
    match forge {
        Forge::GitHub => event == "pull_request",
        // Gitea sends `pull_request` in X-Gitea-Event for every PR event; its
        // X-Gitea-Event-Type (and some versions' X-Gitea-Event) says `pull_request_sync`.
        Forge::Gitea => event == "pull_request" || event == "pull_request_sync",
        Forge::GitLab => event == "Merge Request Hook",
    }
}

#[derive(Deserialize)]
struct HubEvent {
    action: String,
    pull_request: HubPull,
    repository: HubRepo,
    #[serde(default)]
    changes: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct HubPull {
    number: u64,
    head: HubRef,
    base: HubRef,
}

#[derive(Deserialize)]
struct HubRef {
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    /// Null when the fork was deleted.
    #[serde(default)]
    repo: Option<HubRepo>,
}

#[derive(Deserialize)]
struct HubRepo {
    full_name: String,
    #[serde(default)]
    clone_url: Option<String>,
}

#[derive(Deserialize)]
struct LabEvent {
    object_kind: String,
    project: LabProject,
    object_attributes: LabAttributes,
    #[serde(default)]
    changes: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LabProject {
    id: u64,
}

#[derive(Deserialize)]
struct LabAttributes {
    iid: u64,
    source_branch: String,
    target_branch: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    oldrev: Option<String>,
    last_commit: LabCommit,
    #[serde(default)]
    source: Option<LabSource>,
}

#[derive(Deserialize)]
struct LabCommit {
    id: String,
}

#[derive(Deserialize)]
struct LabSource {
    #[serde(default)]
    git_http_url: Option<String>,
}

fn is_commit_id(sha: &str) -> bool {
    (sha.len() == 40 || sha.len() == 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

fn branch(name: &str) -> String {
    name.strip_prefix("refs/heads/").unwrap_or(name).to_owned()
}

/// A pull-request payload that is not what the forge sends.
#[derive(Debug, thiserror::Error)]
pub enum PullRequestPayloadError {
    #[error("the {event} payload is not what {forge} sends: {source}")]
    Shape {
        event: String,
        forge: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the {event} payload has object_kind `{kind}`, not `merge_request`")]
    NotAMergeRequest { event: String, kind: String },
    /// `which` is `head` or `base`; `value` is cut to 80 characters.
    #[error("the {event} payload's {which} commit `{value}` is not a commit id")]
    NotACommitId {
        event: String,
        which: &'static str,
        value: String,
    },
    /// `value` is cut to 200 characters.
    #[error("the {event} payload's repository `{value}` is not `owner/name`")]
    NotOwnerName { event: String, value: String },
}

/// What a pull-request webhook asks for: `Ok(Some(pr))` when the head needs validating
/// and feedback, `Ok(None)` for other events and actions (closed, labeled, approved, a
/// title edit, …), `Err` naming what is wrong for a payload that is not what the forge
/// sends. The steps: is it a pull-request event; read the forge's payload (and whether
/// its action needs an answer); check the ids it carries.
pub fn pull_request(
    forge: Forge,
    event_header: &str,
    body: &[u8],
) -> Result<Option<PullRequest>, PullRequestPayloadError> {
    if !is_pull_request(forge, event_header) {
        return Ok(None);
    }
    let pr = match forge {
        Forge::GitHub | Forge::Gitea => from_hub(forge, event_header, body)?,
        Forge::GitLab => from_lab(event_header, body)?,
    };
    let Some(pr) = pr else { return Ok(None) };
    check_ids(forge, event_header, &pr)?;
    Ok(Some(pr))
}

fn shape(forge: Forge, event: &str) -> impl Fn(serde_json::Error) -> PullRequestPayloadError + '_ {
    let forge = match forge {
        Forge::GitHub => "GitHub",
        Forge::Gitea => "Gitea",
        Forge::GitLab => "GitLab",
    };
    move |source| PullRequestPayloadError::Shape {
        event: event.to_owned(),
        forge,
        source,
    }
}

/// A GitHub or Gitea `pull_request` payload; `None` for an action that needs no answer.
fn from_hub(
    forge: Forge,
    event: &str,
    body: &[u8],
) -> Result<Option<PullRequest>, PullRequestPayloadError> {
    let hub: HubEvent = serde_json::from_slice(body).map_err(shape(forge, event))?;
    let wanted = match hub.action.as_str() {
        "opened" | "reopened" | "synchronize" | "synchronized" => true,
        // A retargeted pull request: the diff is against another base now.
        "edited" => hub
            .changes
            .as_ref()
            .is_some_and(|c| c.get("base").is_some()),
        _ => false,
    };
    if !wanted {
        return Ok(None);
    }
    let p = hub.pull_request;
    Ok(Some(PullRequest {
        repo: hub.repository.full_name,
        number: p.number,
        head_sha: p.head.sha,
        head_ref: branch(&p.head.git_ref),
        base_sha: Some(p.base.sha).filter(|s| !s.is_empty()),
        base_ref: branch(&p.base.git_ref),
        head_clone_url: p.head.repo.and_then(|r| r.clone_url),
    }))
}

/// A GitLab merge-request hook; `None` for an action that needs no answer.
fn from_lab(event: &str, body: &[u8]) -> Result<Option<PullRequest>, PullRequestPayloadError> {
    let lab: LabEvent = serde_json::from_slice(body).map_err(shape(Forge::GitLab, event))?;
    if lab.object_kind != "merge_request" {
        return Err(PullRequestPayloadError::NotAMergeRequest {
            event: event.to_owned(),
            kind: lab.object_kind,
        });
    }
    let a = lab.object_attributes;
    let wanted = match a.action.as_deref() {
        Some("open") | Some("reopen") => true,
        // `oldrev` is there when the update brought new commits; a new target
        // branch shows in `changes`. Title, label or assignee updates have neither.
        Some("update") => {
            a.oldrev.as_deref().is_some_and(|r| !r.is_empty())
                || lab
                    .changes
                    .as_ref()
                    .is_some_and(|c| c.get("target_branch").is_some())
        }
        Some(_) => false,
        // Very old GitLab sends no action: answer while the request is open.
        None => a.state.as_deref() == Some("opened"),
    };
    if !wanted {
        return Ok(None);
    }
    Ok(Some(PullRequest {
        repo: lab.project.id.to_string(),
        number: a.iid,
        head_sha: a.last_commit.id,
        head_ref: branch(&a.source_branch),
        base_sha: None,
        base_ref: branch(&a.target_branch),
        head_clone_url: a.source.and_then(|s| s.git_http_url),
    }))
}

/// The head and base are commit ids (they end up in URLs and git commands), and a
/// GitHub or Gitea repository is `owner/name`.
fn check_ids(forge: Forge, event: &str, pr: &PullRequest) -> Result<(), PullRequestPayloadError> {
    let not_an_id = |which, value: &str| PullRequestPayloadError::NotACommitId {
        event: event.to_owned(),
        which,
        value: value.chars().take(80).collect(),
    };
    if !is_commit_id(&pr.head_sha) {
        return Err(not_an_id("head", &pr.head_sha));
    }
    if let Some(base) = pr.base_sha.as_deref().filter(|b| !is_commit_id(b)) {
        return Err(not_an_id("base", base));
    }
    if matches!(forge, Forge::GitHub | Forge::Gitea) && split_repo(&pr.repo).is_none() {
        return Err(PullRequestPayloadError::NotOwnerName {
            event: event.to_owned(),
            value: pr.repo.chars().take(200).collect(),
        });
    }
    Ok(())
}

fn split_repo(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    (!owner.is_empty() && !name.is_empty() && !name.contains('/')).then_some((owner, name))
}

// ---------------------------------------------------------------------------------------
// The comment

/// What the check concluded about a pull request's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid; no cluster changes.
    NoChanges,
    /// Valid; changes, `risks` of them flagged.
    Changes { risks: usize },
    /// The head does not validate.
    Invalid,
    /// cacheflow could not check the head (the repository or live state unreadable).
    Error,
}

impl Verdict {
    /// The commit status this verdict gives.
    pub fn state(self) -> StatusState {
        match self {
            Verdict::NoChanges | Verdict::Changes { .. } => StatusState::Success,
            Verdict::Invalid => StatusState::Failure,
            Verdict::Error => StatusState::Error,
        }
    }

    /// A one-line status description.
    pub fn description(self) -> String {
        match self {
            Verdict::NoChanges => "valid, no cluster changes".to_owned(),
            Verdict::Changes { risks: 0 } => "valid, cluster changes without risk flags".to_owned(),
            Verdict::Changes { risks } => format!(
                "valid, {risks} risk{} flagged: review the plan",
                if risks == 1 { "" } else { "s" }
            ),
            Verdict::Invalid => "the configuration does not validate".to_owned(),
            Verdict::Error => "cacheflow could not check this commit".to_owned(),
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Verdict::NoChanges => "✅ valid, no cluster changes",
            Verdict::Changes { risks: 0 } => "✅ valid",
            Verdict::Changes { .. } => "⚠️ valid, with risks",
            Verdict::Invalid => "❌ invalid",
            Verdict::Error => "❗ not checked",
        }
    }
}

/// The comment body: [`MARKER`], a heading naming the verdict and the commit, then
/// `body_markdown`, cut to [`MAX_COMMENT_BYTES`] on a line boundary with a note.
pub fn comment(head_sha: &str, verdict: Verdict, body_markdown: &str) -> String {
    let short = crate::pure::render::short_id(head_sha);
    let mut out = format!(
        "{MARKER}\n## cacheflow: {} at {}\n\n",
        verdict.heading(),
        crate::pure::render::code(short)
    );
    let note = "\n\n…cut here: the full report is longer than a comment may be. Run \
                `cacheflow diff --format markdown` and `cacheflow plan --format markdown` \
                on this commit for all of it.\n";
    let room = MAX_COMMENT_BYTES.saturating_sub(out.len());
    if body_markdown.len() <= room {
        out.push_str(body_markdown);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        return out;
    }
    let mut cut = room.saturating_sub(note.len());
    while !body_markdown.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &body_markdown[..cut];
    // End on a whole line so no table row or code span is left half open.
    let head = match head.rfind('\n') {
        Some(i) => &head[..i],
        None => head,
    };
    out.push_str(head);
    out.push_str(note);
    out
}

/// The Markdown of a PR check: the change list, then the rollout plan against live state
/// (folded) when there is one.
pub fn pr_markdown(changes: &ChangeSet, plan: Option<&Plan>) -> String {
    let mut out = crate::pure::render::diff_markdown(changes);
    if let Some(plan) = plan {
        let _ = write!(
            out,
            "\n<details><summary>Rollout plan against live state</summary>\n\n{}\n</details>\n",
            crate::pure::render::plan_markdown(plan).trim_end()
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// The client

/// A commit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    fn word(self, forge: Forge) -> &'static str {
        match (self, forge) {
            (StatusState::Pending, _) => "pending",
            (StatusState::Success, _) => "success",
            (StatusState::Failure, Forge::GitLab) | (StatusState::Error, Forge::GitLab) => "failed",
            (StatusState::Failure, _) => "failure",
            (StatusState::Error, _) => "error",
        }
    }
}

/// What [`ForgeClient::upsert_comment`] did, with the comment's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommentAction {
    Created(u64),
    Edited(u64),
}

impl CommentAction {
    pub fn id(self) -> u64 {
        match self {
            CommentAction::Created(id) | CommentAction::Edited(id) => id,
        }
    }
}

/// A failed forge request. No variant holds the token.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    #[error("{forge} {method} {path}: HTTP {status}{hint}: {excerpt}")]
    Status {
        forge: &'static str,
        method: Method,
        /// The request path below the base URL (no query).
        path: String,
        status: u16,
        /// A hint for 401/403, empty otherwise.
        hint: &'static str,
        /// The start of the forge's answer, on one line.
        excerpt: String,
    },
    #[error("{forge} {method} {path}: {message}")]
    Transport {
        forge: &'static str,
        method: Method,
        path: String,
        message: String,
    },
    #[error("{forge} {method} {path}: unexpected answer: {message}")]
    Answer {
        forge: &'static str,
        method: Method,
        path: String,
        message: String,
    },
    #[error("forge client: {0}")]
    Config(String),
}

impl ForgeError {
    /// No answer, a server error or a rate limit may go away; any other answer or a
    /// client that cannot be made will not.
    pub fn kind(&self) -> crate::edges::source::FailureKind {
        use crate::edges::source::FailureKind;
        match self {
            ForgeError::Transport { .. } => FailureKind::Transient,
            ForgeError::Status { status, .. } if *status >= 500 || *status == 429 => {
                FailureKind::Transient
            }
            _ => FailureKind::Refusal,
        }
    }

    /// The HTTP status the forge answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ForgeError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Talks to one forge's REST API with one token. Cheap to share (`Arc`); requests may run
/// concurrently, comment upserts run one at a time so two pushes never both create.
pub struct ForgeClient {
    forge: Forge,
    base: String,
    http: reqwest::Client,
    /// Kept only to mask it should a forge echo it back.
    token: String,
    /// Pull request key → id of the comment carrying the marker.
    comments: tokio::sync::Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for ForgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForgeClient")
            .field("forge", &self.forge.name())
            .field("base", &self.base)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct Comment {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

/// Percent-encode one path segment (everything but RFC 3986 unreserved characters).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn one_line(text: &str, max_chars: usize) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() > max_chars {
        collapsed.chars().take(max_chars).collect::<String>() + "…"
    } else {
        collapsed
    }
}

impl ForgeClient {
    /// A client for `forge` at `base_url` (the API root, e.g. `https://api.github.com`,
    /// `https://gitea.example.com/api/v1`, `https://gitlab.example.com/api/v4`) with
    /// `token`, [`CONNECT_TIMEOUT`] and [`REQUEST_TIMEOUT`].
    pub fn new(forge: Forge, base_url: &str, token: &str) -> Result<Self, ForgeError> {
        Self::with_timeouts(forge, base_url, token, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    pub fn with_timeouts(
        forge: Forge,
        base_url: &str,
        token: &str,
        connect: Duration,
        total: Duration,
    ) -> Result<Self, ForgeError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ForgeError::Config(format!(
                "the {} API URL `{}` is not http(s)://",
                forge.name(),
                crate::edges::redact::redact_url(&base)
            )));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(ForgeError::Config(format!(
                "the {} token is empty",
                forge.name()
            )));
        }
        let (name, value) = match forge {
            Forge::GitHub => (reqwest::header::AUTHORIZATION, format!("Bearer {token}")),
            Forge::Gitea => (reqwest::header::AUTHORIZATION, format!("token {token}")),
            Forge::GitLab => (HeaderName::from_static("private-token"), token.to_owned()),
        };
        let mut auth = HeaderValue::from_str(&value).map_err(|_| {
            ForgeError::Config(format!(
                "the {} token holds characters a header cannot carry",
                forge.name()
            ))
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(name, auth);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static(match forge {
                Forge::GitHub => "application/vnd.github+json",
                _ => "application/json",
            }),
        );
        if forge == Forge::GitHub {
            headers.insert(
                HeaderName::from_static("x-github-api-version"),
                HeaderValue::from_static("2022-11-28"),
            );
        }
        let http = reqwest::Client::builder()
            .connect_timeout(connect)
            .timeout(total)
            .user_agent(format!("cacheflow/{}", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()
            .map_err(|e| ForgeError::Config(crate::edges::http_error::describe(&e)))?;
        Ok(ForgeClient {
            forge,
            base,
            http,
            token: token.to_owned(),
            comments: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    pub fn forge(&self) -> Forge {
        self.forge
    }

    /// The repository part of a path: `/repos/{o}/{r}` or `/projects/{id}`.
    fn repo_path(&self, pr: &PullRequest) -> Result<String, ForgeError> {
        match self.forge {
            Forge::GitHub | Forge::Gitea => {
                let (owner, name) = split_repo(&pr.repo).ok_or_else(|| {
                    ForgeError::Config(format!("repository `{}` is not `owner/name`", pr.repo))
                })?;
                Ok(format!("/repos/{}/{}", segment(owner), segment(name)))
            }
            Forge::GitLab => Ok(format!("/projects/{}", segment(&pr.repo))),
        }
    }

    fn comments_path(&self, pr: &PullRequest) -> Result<String, ForgeError> {
        let repo = self.repo_path(pr)?;
        Ok(match self.forge {
            Forge::GitHub | Forge::Gitea => format!("{repo}/issues/{}/comments", pr.number),
            Forge::GitLab => format!("{repo}/merge_requests/{}/notes", pr.number),
        })
    }

    fn comment_path(&self, pr: &PullRequest, id: u64) -> Result<String, ForgeError> {
        let repo = self.repo_path(pr)?;
        Ok(match self.forge {
            Forge::GitHub | Forge::Gitea => format!("{repo}/issues/comments/{id}"),
            Forge::GitLab => format!("{repo}/merge_requests/{}/notes/{id}", pr.number),
        })
    }

    /// Send one request; `Ok` with the body text on a 2xx answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<String, ForgeError> {
        let url = if query.is_empty() {
            format!("{}{path}", self.base)
        } else {
            format!("{}{path}?{query}", self.base)
        };
        let mut request = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let transport = |e: reqwest::Error| ForgeError::Transport {
            forge: self.forge.name(),
            method: method.clone(),
            path: path.to_owned(),
            message: self.mask(&crate::edges::redact::redact_url(
                &crate::edges::http_error::describe(&e),
            )),
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let text = response.text().await.map_err(transport)?;
        if status.is_success() {
            return Ok(text);
        }
        Err(ForgeError::Status {
            forge: self.forge.name(),
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            hint: match status {
                StatusCode::UNAUTHORIZED => " (the forge token was not accepted)",
                StatusCode::FORBIDDEN => {
                    " (the forge token may not write statuses or comments here)"
                }
                _ => "",
            },
            excerpt: self.mask(&one_line(&text, 200)),
        })
    }

    fn mask(&self, text: &str) -> String {
        if self.token.len() >= 4 && text.contains(&self.token) {
            text.replace(&self.token, "<redacted>")
        } else {
            text.to_owned()
        }
    }

    fn answer_error(&self, method: Method, path: &str, message: String) -> ForgeError {
        ForgeError::Answer {
            forge: self.forge.name(),
            method,
            path: path.to_owned(),
            message: self.mask(&message),
        }
    }

    /// Set the commit status `cacheflow` on the pull request's head.
    pub async fn set_status(
        &self,
        pr: &PullRequest,
        state: StatusState,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let description = one_line(description, MAX_DESCRIPTION_CHARS - 1);
        let mut body = serde_json::json!({
            "state": state.word(self.forge),
            "description": description,
        });
        let name_key = match self.forge {
            Forge::GitHub | Forge::Gitea => "context",
            Forge::GitLab => "name",
        };
        body[name_key] = CONTEXT.into();
        if self.forge == Forge::GitLab {
            // Without a ref GitLab looks for a branch of the target project holding the
            // commit, which a merge request from a fork does not have.
            body["ref"] = pr.head_ref.clone().into();
        }
        if let Some(url) = target_url {
            body["target_url"] = url.into();
        }
        let path = format!("{}/statuses/{}", self.repo_path(pr)?, segment(&pr.head_sha));
        match self.send(Method::POST, &path, "", Some(&body)).await {
            // GitLab refuses a status the commit already has (`pending` twice, as a
            // redelivered webhook asks): what was asked for is true already.
            Err(ForgeError::Status {
                status: 400,
                excerpt,
                ..
            }) if self.forge == Forge::GitLab
                && excerpt.contains("Cannot transition status")
                && excerpt.contains(&format!("from :{}", state.word(self.forge))) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// Create or edit the pull request's cacheflow comment so that it reads `markdown`
    /// (which should come from [`comment`]; [`MARKER`] is put first if missing).
    pub async fn upsert_comment(
        &self,
        pr: &PullRequest,
        markdown: &str,
    ) -> Result<CommentAction, ForgeError> {
        let body = if markdown.starts_with(MARKER) {
            markdown.to_owned()
        } else {
            format!("{MARKER}\n{markdown}")
        };
        let key = pr.key();
        // Held to the end: two pushes to one PR at once must not both create a comment.
        let mut known = self.comments.lock().await;
        if let Some(id) = known.get(&key).copied() {
            match self.edit_comment(pr, id, &body).await {
                Ok(()) => return Ok(CommentAction::Edited(id)),
                Err(e) if e.status() == Some(404) => {
                    known.remove(&key);
                }
                Err(e) => return Err(e),
            }
        }
        let action = match self.find_comment(pr).await? {
            Some(id) => match self.edit_comment(pr, id, &body).await {
                Ok(()) => CommentAction::Edited(id),
                // Deleted between the listing and the edit.
                Err(e) if e.status() == Some(404) => {
                    CommentAction::Created(self.create_comment(pr, &body).await?)
                }
                Err(e) => return Err(e),
            },
            None => CommentAction::Created(self.create_comment(pr, &body).await?),
        };
        if known.len() >= MAX_REMEMBERED {
            known.clear();
        }
        known.insert(key, action.id());
        Ok(action)
    }

    /// The oldest comment of the pull request that starts with the marker.
    async fn find_comment(&self, pr: &PullRequest) -> Result<Option<u64>, ForgeError> {
        let path = self.comments_path(pr)?;
        let size = match self.forge {
            Forge::Gitea => GITEA_PAGE_SIZE,
            _ => PAGE_SIZE,
        };
        let mut seen = std::collections::HashSet::new();
        for page in 1..=MAX_PAGES {
            let query = match self.forge {
                Forge::GitHub => format!("per_page={size}&page={page}"),
                Forge::Gitea => format!("limit={size}&page={page}"),
                // GitLab lists notes newest first unless asked.
                Forge::GitLab => {
                    format!("sort=asc&order_by=created_at&per_page={size}&page={page}")
                }
            };
            let text = self.send(Method::GET, &path, &query, None).await?;
            let comments: Vec<Comment> = serde_json::from_str(&text).map_err(|e| {
                self.answer_error(Method::GET, &path, format!("not a list of comments: {e}"))
            })?;
            let count = comments.len();
            let mut fresh = false;
            let mut found: Option<u64> = None;
            for c in comments {
                fresh |= seen.insert(c.id);
                let ours = c
                    .body
                    .as_deref()
                    .is_some_and(|b| b.trim_start().starts_with(MARKER));
                if ours {
                    found = Some(found.map_or(c.id, |f| f.min(c.id)));
                }
            }
            if found.is_some() {
                return Ok(found);
            }
            // The last page is short; a forge that ignores paging repeats itself.
            if count < size || !fresh {
                break;
            }
        }
        Ok(None)
    }

    async fn create_comment(&self, pr: &PullRequest, body: &str) -> Result<u64, ForgeError> {
        let path = self.comments_path(pr)?;
        let text = self
            .send(
                Method::POST,
                &path,
                "",
                Some(&serde_json::json!({ "body": body })),
            )
            .await?;
        let created: Comment = serde_json::from_str(&text)
            .map_err(|e| self.answer_error(Method::POST, &path, format!("no comment id: {e}")))?;
        Ok(created.id)
    }

    async fn edit_comment(&self, pr: &PullRequest, id: u64, body: &str) -> Result<(), ForgeError> {
        let path = self.comment_path(pr, id)?;
        let method = match self.forge {
            Forge::GitHub | Forge::Gitea => Method::PATCH,
            Forge::GitLab => Method::PUT,
        };
        self.send(
            method,
            &path,
            "",
            Some(&serde_json::json!({ "body": body })),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The payload checks, with their errors as the words the webhook answers.
    fn pull_request(
        forge: Forge,
        event_header: &str,
        body: &[u8],
    ) -> Result<Option<PullRequest>, String> {
        super::pull_request(forge, event_header, body).map_err(|e| e.to_string())
    }

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap as AxHeaders, Method as AxMethod, StatusCode as AxStatus, Uri};
    use axum::response::{IntoResponse, Response};
    use serde_json::{json, Value};

    const TOKEN: &str = "tok-3f9a1c77e2d84b5b";
    const SHA1: &str = "1111111111111111111111111111111111111111";
    const SHA2: &str = "2222222222222222222222222222222222222222";
    const BASE_SHA: &str = "0000000000000000000000000000000000000abc";

    // -----------------------------------------------------------------------------------
    // A fake forge: the three APIs' endpoints in memory, every request recorded.

    #[derive(Debug, Clone)]
    struct Recorded {
        method: String,
        path: String,
        query: String,
        authorization: Option<String>,
        private_token: Option<String>,
        accept: Option<String>,
        user_agent: Option<String>,
        content_type: Option<String>,
        body: Value,
    }

    impl Recorded {
        fn line(&self) -> String {
            if self.query.is_empty() {
                format!("{} {}", self.method, self.path)
            } else {
                format!("{} {}?{}", self.method, self.path, self.query)
            }
        }
    }

    #[derive(Default)]
    struct Fake {
        requests: Vec<Recorded>,
        /// Thread (`o/r#n` or `project!iid`) → comments, oldest first.
        threads: HashMap<String, Vec<(u64, String)>>,
        next_id: u64,
        /// Answer every request with this status and body.
        fail: Option<(u16, String)>,
        /// Answer every listing with the whole thread, as if paging were unknown.
        ignore_paging: bool,
        /// GitLab: each commit's status, to refuse a repeat as GitLab does.
        gitlab_states: HashMap<String, String>,
        /// How many statuses were refused as repeats.
        refused: usize,
    }

    type Shared = Arc<Mutex<Fake>>;

    fn decode(segment: &str) -> String {
        let bytes = segment.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let hex = segment.get(i + 1..i + 3);
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(b) if bytes[i] == b'%' => {
                    out.push(b);
                    i += 3;
                }
                _ => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).unwrap()
    }

    fn param(query: &str, name: &str) -> Option<usize> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse().ok())
    }

    async fn fake_forge(
        State(fake): State<Shared>,
        method: AxMethod,
        uri: Uri,
        headers: AxHeaders,
        body: Bytes,
    ) -> Response {
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()))
        };
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or("").to_owned();
        let mut f = fake.lock().unwrap();
        f.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            authorization: header("authorization"),
            private_token: header("private-token"),
            accept: header("accept"),
            user_agent: header("user-agent"),
            content_type: header("content-type"),
            body: body.clone(),
        });
        if let Some((code, text)) = &f.fail {
            return (AxStatus::from_u16(*code).unwrap(), text.clone()).into_response();
        }
        let gitlab = path.starts_with("/api/v4/");
        let rest = path
            .strip_prefix("/api/v1")
            .or_else(|| path.strip_prefix("/api/v4"))
            .unwrap_or(&path);
        let segs: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let text = |v: &Value| v["body"].as_str().unwrap_or_default().to_owned();
        let answer = |id: u64, body: &str| {
            if gitlab {
                json!({"id": id, "body": body, "system": false, "author": {"username": "bot"}})
            } else {
                json!({"id": id, "body": body, "user": {"login": "bot"}})
            }
        };
        let thread = match segs.as_slice() {
            ["repos", o, r, "issues", n, "comments"] if *n != "comments" => {
                Some(format!("{o}/{r}#{n}"))
            }
            ["projects", p, "merge_requests", iid, "notes"] => Some(format!("{}!{iid}", decode(p))),
            _ => None,
        };
        match (method.as_str(), segs.as_slice(), thread) {
            ("POST", ["projects", _, "statuses", sha], _)
                if f.gitlab_states.get(*sha)
                    == body["state"].as_str().map(str::to_owned).as_ref() =>
            {
                f.refused += 1;
                let (from, via) = match body["state"].as_str().unwrap() {
                    "pending" => ("pending", "enqueue"),
                    other => (other, other),
                };
                let message = format!(
                    "Cannot transition status via :{via} from :{from} (Reason(s): Status cannot transition via \\\"{via}\\\")"
                );
                (
                    AxStatus::BAD_REQUEST,
                    axum::Json(json!({ "message": message })),
                )
                    .into_response()
            }
            ("POST", ["repos", _, _, "statuses", _], _)
            | ("POST", ["projects", _, "statuses", _], _) => {
                if let ["projects", _, "statuses", sha] = segs.as_slice() {
                    let state = body["state"].as_str().unwrap_or_default().to_owned();
                    f.gitlab_states.insert(sha.to_string(), state);
                }
                f.next_id += 1;
                (AxStatus::CREATED, axum::Json(json!({"id": f.next_id}))).into_response()
            }
            ("GET", _, Some(thread)) => {
                let mut all: Vec<Value> = f
                    .threads
                    .get(&thread)
                    .map(|t| t.iter().map(|(id, b)| answer(*id, b)).collect())
                    .unwrap_or_default();
                // GitLab lists newest first unless told otherwise.
                if gitlab && !query.contains("sort=asc") {
                    all.reverse();
                }
                let page: Vec<Value> = if f.ignore_paging {
                    all
                } else {
                    let size = param(&query, "per_page")
                        .or_else(|| param(&query, "limit"))
                        .unwrap_or(30);
                    let n = param(&query, "page").unwrap_or(1).max(1);
                    all.into_iter().skip((n - 1) * size).take(size).collect()
                };
                axum::Json(Value::Array(page)).into_response()
            }
            ("POST", _, Some(thread)) => {
                f.next_id += 1;
                let id = f.next_id;
                let b = text(&body);
                f.threads.entry(thread).or_default().push((id, b.clone()));
                (AxStatus::CREATED, axum::Json(answer(id, &b))).into_response()
            }
            ("PATCH", ["repos", _, _, "issues", "comments", id], _)
            | ("PUT", ["projects", _, "merge_requests", _, "notes", id], _) => {
                let id: u64 = id.parse().unwrap_or(0);
                let b = text(&body);
                match f
                    .threads
                    .values_mut()
                    .flat_map(|t| t.iter_mut())
                    .find(|(i, _)| *i == id)
                {
                    Some(c) => {
                        c.1 = b.clone();
                        axum::Json(answer(id, &b)).into_response()
                    }
                    None => (
                        AxStatus::NOT_FOUND,
                        axum::Json(json!({"message": "Not Found"})),
                    )
                        .into_response(),
                }
            }
            _ => (
                AxStatus::NOT_FOUND,
                axum::Json(json!({"message": "no such endpoint"})),
            )
                .into_response(),
        }
    }

    /// The fake's root URL and state.
    async fn serve() -> (String, Shared) {
        let fake = Shared::default();
        fake.lock().unwrap().next_id = 1000;
        let app = axum::Router::new()
            .fallback(fake_forge)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (root, fake)
    }

    fn base(forge: Forge, root: &str) -> String {
        match forge {
            Forge::GitHub => root.to_owned(),
            Forge::Gitea => format!("{root}/api/v1/"),
            Forge::GitLab => format!("{root}/api/v4"),
        }
    }

    fn pr(forge: Forge, sha: &str) -> PullRequest {
        PullRequest {
            repo: match forge {
                Forge::GitLab => "42".to_owned(),
                _ => "acme/cache-config".to_owned(),
            },
            number: 7,
            head_sha: sha.to_owned(),
            head_ref: "raise-maxmemory".to_owned(),
            base_sha: None,
            base_ref: "main".to_owned(),
            head_clone_url: None,
        }
    }

    fn thread(forge: Forge) -> &'static str {
        match forge {
            Forge::GitLab => "42!7",
            _ => "acme/cache-config#7",
        }
    }

    fn lines(fake: &Shared) -> Vec<String> {
        fake.lock()
            .unwrap()
            .requests
            .iter()
            .map(Recorded::line)
            .collect()
    }

    /// The paths the client should use, below the fake's root.
    struct Paths {
        status1: String,
        status2: String,
        list: String,
        create: String,
        edit: String,
        edit_method: &'static str,
    }

    fn paths(forge: Forge, id: u64) -> Paths {
        match forge {
            Forge::GitHub | Forge::Gitea => {
                let p = if forge == Forge::Gitea { "/api/v1" } else { "" };
                let r = format!("{p}/repos/acme/cache-config");
                let size = if forge == Forge::Gitea {
                    "limit=50"
                } else {
                    "per_page=100"
                };
                Paths {
                    status1: format!("POST {r}/statuses/{SHA1}"),
                    status2: format!("POST {r}/statuses/{SHA2}"),
                    list: format!("GET {r}/issues/7/comments?{size}&page=1"),
                    create: format!("POST {r}/issues/7/comments"),
                    edit: format!("PATCH {r}/issues/comments/{id}"),
                    edit_method: "PATCH",
                }
            }
            Forge::GitLab => {
                let r = "/api/v4/projects/42";
                Paths {
                    status1: format!("POST {r}/statuses/{SHA1}"),
                    status2: format!("POST {r}/statuses/{SHA2}"),
                    list: format!(
                        "GET {r}/merge_requests/7/notes?sort=asc&order_by=created_at&per_page=100&page=1"
                    ),
                    create: format!("POST {r}/merge_requests/7/notes"),
                    edit: format!("PUT {r}/merge_requests/7/notes/{id}"),
                    edit_method: "PUT",
                }
            }
        }
    }

    /// First push: a pending then a final status and the comment created once. Second
    /// push: statuses for the new head and the same comment edited. A restarted server
    /// (a fresh client) finds the comment by listing and edits it too.
    async fn two_pushes(forge: Forge) {
        let (root, fake) = serve().await;
        let client = ForgeClient::new(forge, &base(forge, &root), TOKEN).unwrap();
        let first_pr = pr(forge, SHA1);
        client
            .set_status(&first_pr, StatusState::Pending, "checking", None)
            .await
            .unwrap();
        let first = client
            .upsert_comment(
                &first_pr,
                &comment(SHA1, Verdict::Changes { risks: 1 }, "### first push\n"),
            )
            .await
            .unwrap();
        let id = match first {
            CommentAction::Created(id) => id,
            other => panic!("{}: first push gave {other:?}", forge.name()),
        };
        client
            .set_status(
                &first_pr,
                StatusState::Success,
                &Verdict::Changes { risks: 1 }.description(),
                Some("https://cacheflow.example/pr/7"),
            )
            .await
            .unwrap();

        let second_pr = pr(forge, SHA2);
        client
            .set_status(&second_pr, StatusState::Pending, "checking", None)
            .await
            .unwrap();
        let second = client
            .upsert_comment(
                &second_pr,
                &comment(SHA2, Verdict::Invalid, "### second push\n"),
            )
            .await
            .unwrap();
        assert_eq!(second, CommentAction::Edited(id), "{}", forge.name());
        client
            .set_status(&second_pr, StatusState::Failure, "invalid", None)
            .await
            .unwrap();

        let restarted = ForgeClient::new(forge, &base(forge, &root), TOKEN).unwrap();
        let third = restarted
            .upsert_comment(&second_pr, &comment(SHA2, Verdict::Error, "### again\n"))
            .await
            .unwrap();
        assert_eq!(third, CommentAction::Edited(id), "{}", forge.name());

        let p = paths(forge, id);
        assert_eq!(
            lines(&fake),
            vec![
                p.status1.clone(),
                p.list.clone(),
                p.create.clone(),
                p.status1.clone(),
                p.status2.clone(),
                p.edit.clone(), // remembered: no listing
                p.status2.clone(),
                p.list.clone(), // a fresh client lists once
                p.edit.clone(),
            ],
            "{}",
            forge.name()
        );

        let f = fake.lock().unwrap();
        // One comment, reading the last push.
        let comments = &f.threads[thread(forge)];
        assert_eq!(comments.len(), 1, "{}", forge.name());
        assert_eq!(comments[0].0, id);
        assert!(comments[0].1.starts_with(MARKER));
        assert!(comments[0].1.contains("### again"));
        assert!(comments[0].1.contains("`222222222222`"));

        // The statuses' bodies.
        let statuses: Vec<&Value> = f
            .requests
            .iter()
            .filter(|r| r.path.contains("/statuses/"))
            .map(|r| &r.body)
            .collect();
        let states: Vec<&str> = statuses
            .iter()
            .map(|b| b["state"].as_str().unwrap())
            .collect();
        let failed = if forge == Forge::GitLab {
            "failed"
        } else {
            "failure"
        };
        assert_eq!(states, ["pending", "success", "pending", failed]);
        let name_key = if forge == Forge::GitLab {
            "name"
        } else {
            "context"
        };
        for b in &statuses {
            assert_eq!(b[name_key], "cacheflow", "{}: {b}", forge.name());
            if forge == Forge::GitLab {
                assert_eq!(b["ref"], "raise-maxmemory");
                assert!(b.get("context").is_none());
            }
        }
        assert_eq!(statuses[1]["target_url"], "https://cacheflow.example/pr/7");
        assert_eq!(
            statuses[1]["description"],
            "valid, 1 risk flagged: review the plan"
        );
        assert!(statuses[0].get("target_url").is_none());

        // The comment writes carry {"body": …} with the marker.
        for r in f
            .requests
            .iter()
            .filter(|r| r.method == "POST" && !r.path.contains("/statuses/"))
            .chain(f.requests.iter().filter(|r| r.method == p.edit_method))
        {
            assert!(r.body["body"].as_str().unwrap().starts_with(MARKER));
        }

        // Every request authenticates the forge's way and names itself.
        for r in &f.requests {
            match forge {
                Forge::GitHub => {
                    assert_eq!(
                        r.authorization.as_deref(),
                        Some(&*format!("Bearer {TOKEN}"))
                    );
                    assert_eq!(r.accept.as_deref(), Some("application/vnd.github+json"));
                    assert_eq!(r.private_token, None);
                }
                Forge::Gitea => {
                    assert_eq!(r.authorization.as_deref(), Some(&*format!("token {TOKEN}")));
                    assert_eq!(r.private_token, None);
                }
                Forge::GitLab => {
                    assert_eq!(r.private_token.as_deref(), Some(TOKEN));
                    assert_eq!(r.authorization, None);
                }
            }
            assert!(r
                .user_agent
                .as_deref()
                .is_some_and(|u| u.starts_with("cacheflow/")));
            if r.method != "GET" {
                assert_eq!(r.content_type.as_deref(), Some("application/json"));
            }
        }
    }

    #[tokio::test]
    async fn forge_github_two_pushes_one_comment() {
        two_pushes(Forge::GitHub).await;
    }

    #[tokio::test]
    async fn forge_gitea_two_pushes_one_comment() {
        two_pushes(Forge::Gitea).await;
    }

    #[tokio::test]
    async fn forge_gitlab_two_pushes_one_comment() {
        two_pushes(Forge::GitLab).await;
    }

    fn seed(fake: &Shared, forge: Forge, count: usize, ours_at: &[usize]) -> Vec<u64> {
        let mut f = fake.lock().unwrap();
        let mut ids = Vec::new();
        for i in 0..count {
            let id = 10 + i as u64;
            let body = if ours_at.contains(&i) {
                format!("{MARKER}\n## cacheflow: an old report {i}")
            } else if i % 7 == 0 {
                // Quoting the marker does not make a comment ours.
                format!("> {MARKER}\n> quoted by someone {i}")
            } else {
                format!("looks good {i}")
            };
            f.threads
                .entry(thread(forge).to_owned())
                .or_default()
                .push((id, body));
            ids.push(id);
        }
        ids
    }

    fn list_pages(fake: &Shared) -> Vec<usize> {
        fake.lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.method == "GET")
            .map(|r| param(&r.query, "page").unwrap())
            .collect()
    }

    /// The listing follows pages until it finds the oldest comment of ours, or to the
    /// last (short) page.
    async fn pagination(forge: Forge) {
        let size = if forge == Forge::Gitea { 50 } else { 100 };
        // Ours at 180 and 220: page 2 (100 a page) or page 4 (50 a page) has the older.
        let (root, fake) = serve().await;
        let ids = seed(&fake, forge, 250, &[180, 220]);
        let client = ForgeClient::new(forge, &base(forge, &root), TOKEN).unwrap();
        let got = client
            .upsert_comment(&pr(forge, SHA1), &comment(SHA1, Verdict::NoChanges, "x"))
            .await
            .unwrap();
        assert_eq!(got, CommentAction::Edited(ids[180]), "{}", forge.name());
        let want: Vec<usize> = (1..=180 / size + 1).collect();
        assert_eq!(list_pages(&fake), want, "{}", forge.name());
        let l = lines(&fake);
        assert_eq!(l.last().unwrap(), &paths(forge, ids[180]).edit);
        assert!(fake
            .lock()
            .unwrap()
            .requests
            .iter()
            .all(|r| r.method != "POST"));

        // None of ours: every page to the short last one, then one POST.
        let (root, fake) = serve().await;
        seed(&fake, forge, 250, &[]);
        let client = ForgeClient::new(forge, &base(forge, &root), TOKEN).unwrap();
        let got = client
            .upsert_comment(&pr(forge, SHA1), &comment(SHA1, Verdict::NoChanges, "x"))
            .await
            .unwrap();
        assert!(matches!(got, CommentAction::Created(_)));
        // Full pages, then a short (here: for 50 a page, an empty) one.
        let want: Vec<usize> = (1..=250 / size + 1).collect();
        assert_eq!(list_pages(&fake), want, "{}", forge.name());
        assert_eq!(lines(&fake).last().unwrap(), &paths(forge, 0).create);
    }

    #[tokio::test]
    async fn forge_github_comment_listing_pages() {
        pagination(Forge::GitHub).await;
    }

    #[tokio::test]
    async fn forge_gitea_comment_listing_pages() {
        pagination(Forge::Gitea).await;
    }

    #[tokio::test]
    async fn forge_gitlab_comment_listing_pages() {
        pagination(Forge::GitLab).await;
    }

    #[tokio::test]
    async fn forge_listing_stops_when_the_forge_ignores_paging() {
        let (root, fake) = serve().await;
        seed(&fake, Forge::Gitea, 120, &[]);
        fake.lock().unwrap().ignore_paging = true;
        let client = ForgeClient::new(Forge::Gitea, &base(Forge::Gitea, &root), TOKEN).unwrap();
        let got = client
            .upsert_comment(&pr(Forge::Gitea, SHA1), "no marker yet")
            .await
            .unwrap();
        assert!(matches!(got, CommentAction::Created(_)));
        // Page 2 repeated page 1: no page 3.
        assert_eq!(list_pages(&fake), [1, 2]);
        // The marker is put first when missing.
        let f = fake.lock().unwrap();
        let ours = f.threads["acme/cache-config#7"].last().unwrap();
        assert_eq!(ours.1, format!("{MARKER}\nno marker yet"));
    }

    #[tokio::test]
    async fn forge_a_deleted_comment_is_listed_for_then_created_again() {
        let (root, fake) = serve().await;
        let client = ForgeClient::new(Forge::GitHub, &root, TOKEN).unwrap();
        let p = pr(Forge::GitHub, SHA1);
        let first = client.upsert_comment(&p, "one").await.unwrap();
        // Someone deletes it.
        fake.lock().unwrap().threads.clear();
        let second = client.upsert_comment(&p, "two").await.unwrap();
        let CommentAction::Created(new) = second else {
            panic!("{second:?}");
        };
        assert_ne!(new, first.id());
        let d = paths(Forge::GitHub, first.id());
        assert_eq!(
            lines(&fake),
            [
                d.list.clone(),
                d.create.clone(),
                d.edit, // 404
                d.list,
                d.create
            ]
        );
        // And the new one is remembered.
        let third = client.upsert_comment(&p, "three").await.unwrap();
        assert_eq!(third, CommentAction::Edited(new));
    }

    #[tokio::test]
    async fn forge_errors_name_the_status_never_the_token() {
        for forge in [Forge::GitHub, Forge::Gitea, Forge::GitLab] {
            let (root, fake) = serve().await;
            let client = ForgeClient::new(forge, &base(forge, &root), TOKEN).unwrap();
            assert!(!format!("{client:?}").contains(TOKEN));
            let p = pr(forge, SHA1);

            fake.lock().unwrap().fail =
                Some((500, "<html>\n  upstream   exploded\n</html>".into()));
            let e = client
                .set_status(&p, StatusState::Pending, "checking", None)
                .await
                .unwrap_err();
            assert_eq!(e.status(), Some(500));
            let text = e.to_string();
            assert!(text.contains("HTTP 500"), "{text}");
            assert!(text.contains("upstream exploded"), "{text}");
            assert!(text.contains(&format!("/statuses/{SHA1}")), "{text}");
            assert!(!text.contains(TOKEN), "{text}");

            // A forge that echoes the credentials back.
            fake.lock().unwrap().fail =
                Some((401, format!(r#"{{"message":"Bad credentials: {TOKEN}"}}"#)));
            let e = client.upsert_comment(&p, "x").await.unwrap_err();
            assert_eq!(e.status(), Some(401));
            let text = e.to_string();
            assert!(text.contains("HTTP 401"), "{text}");
            assert!(text.contains("token was not accepted"), "{text}");
            assert!(text.contains("Bad credentials: <redacted>"), "{text}");
            assert!(!text.contains(TOKEN), "{text}");
            assert!(!format!("{e:?}").contains(TOKEN));
        }
    }

    #[tokio::test]
    async fn forge_an_unreachable_forge_is_a_transport_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let root = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = ForgeClient::with_timeouts(
            Forge::GitHub,
            &root,
            TOKEN,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
        .unwrap();
        let e = client
            .set_status(&pr(Forge::GitHub, SHA1), StatusState::Pending, "x", None)
            .await
            .unwrap_err();
        assert!(matches!(e, ForgeError::Transport { .. }), "{e:?}");
        assert_eq!(e.status(), None);
        assert!(!e.to_string().contains(TOKEN));
    }

    #[test]
    fn forge_client_settings_are_checked() {
        let e = ForgeClient::new(Forge::GitHub, "api.github.com", TOKEN).unwrap_err();
        assert!(e.to_string().contains("not http(s)://"), "{e}");
        let e = ForgeClient::new(Forge::GitHub, "https://u:pw@api.github.com", "  ").unwrap_err();
        assert!(e.to_string().contains("token is empty"), "{e}");
        let e = ForgeClient::new(Forge::GitLab, "https://gl.example/api/v4", "a\nb").unwrap_err();
        assert!(e.to_string().contains("cannot carry"), "{e}");
        assert!(!e.to_string().contains("a\nb"));
    }

    #[tokio::test]
    async fn forge_gitlab_project_paths_and_long_descriptions() {
        let (root, fake) = serve().await;
        let client = ForgeClient::new(Forge::GitLab, &base(Forge::GitLab, &root), TOKEN).unwrap();
        let mut p = pr(Forge::GitLab, SHA1);
        p.repo = "acme/infra/cache config".to_owned();
        let long = "é".repeat(300);
        client
            .set_status(&p, StatusState::Error, &long, None)
            .await
            .unwrap();
        client.upsert_comment(&p, "x").await.unwrap();
        let f = fake.lock().unwrap();
        assert_eq!(
            f.requests[0].path,
            format!("/api/v4/projects/acme%2Finfra%2Fcache%20config/statuses/{SHA1}")
        );
        assert_eq!(f.requests[0].body["state"], "failed");
        let d = f.requests[0].body["description"].as_str().unwrap();
        assert_eq!(d.chars().count(), MAX_DESCRIPTION_CHARS);
        assert!(d.ends_with('…'));
        assert!(f.threads.contains_key("acme/infra/cache config!7"));
    }

    #[tokio::test]
    async fn forge_gitlab_repeated_status_is_not_an_error() {
        let (root, fake) = serve().await;
        let client = ForgeClient::new(Forge::GitLab, &base(Forge::GitLab, &root), TOKEN).unwrap();
        let p = pr(Forge::GitLab, SHA1);
        for _ in 0..2 {
            client
                .set_status(&p, StatusState::Pending, "checking", None)
                .await
                .unwrap();
        }
        // A refusal for another reason still is an error.
        fake.lock().unwrap().fail = Some((
            400,
            r#"{"message":"Cannot transition status via :run from :success"}"#.into(),
        ));
        let e = client
            .set_status(&p, StatusState::Pending, "checking", None)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400));
        let f = fake.lock().unwrap();
        assert_eq!(f.requests.len(), 3);
        assert_eq!(f.refused, 1);
        assert_eq!(f.gitlab_states[SHA1], "pending");
    }

    #[test]
    fn forge_comment_has_the_marker_and_fits() {
        let c = comment(SHA1, Verdict::Changes { risks: 2 }, "### body\n\n| a |\n");
        assert!(c.starts_with(&format!(
            "{MARKER}\n## cacheflow: ⚠️ valid, with risks at `111111111111`\n\n### body"
        )));
        assert!(c.ends_with("| a |\n"));

        let row = "| `node-1` | `maxmemory` | `1gb` → `2gb` |\n";
        let huge = row.repeat(5_000);
        let c = comment(SHA1, Verdict::NoChanges, &huge);
        assert!(c.len() <= MAX_COMMENT_BYTES, "{}", c.len());
        assert!(c.starts_with(MARKER));
        assert!(c.contains("cut here"));
        // Cut on a whole row.
        let before_note = c.split("\n\n…cut here").next().unwrap();
        assert!(
            before_note.ends_with("`2gb` |"),
            "{}",
            &before_note[before_note.len() - 40..]
        );

        assert_eq!(Verdict::Invalid.state(), StatusState::Failure);
        assert_eq!(Verdict::Error.state(), StatusState::Error);
        assert_eq!(Verdict::Changes { risks: 3 }.state(), StatusState::Success);
        assert!(Verdict::Changes { risks: 1 }.description().len() < MAX_DESCRIPTION_CHARS);
    }

    #[test]
    fn forge_pr_markdown_folds_the_plan() {
        let cs = ChangeSet {
            base: Some(BASE_SHA.to_owned()),
            head: Some(SHA1.to_owned()),
            clusters: Vec::new(),
        };
        let plan = Plan {
            commit: Some(SHA1.to_owned()),
            clusters: Vec::new(),
            undeclared: Vec::new(),
        };
        let md = pr_markdown(&cs, Some(&plan));
        assert!(md.starts_with("### cacheflow: no cluster changes"), "{md}");
        assert!(md.contains("<details><summary>Rollout plan against live state</summary>\n\n### cacheflow plan for `111111111111`: converged\n</details>\n"), "{md}");
        assert!(!pr_markdown(&cs, None).contains("<details>"));
    }

    // -----------------------------------------------------------------------------------
    // Webhook payloads (trimmed from real deliveries).

    fn github_payload(action: &str, extra: &str) -> Vec<u8> {
        format!(
            r#"{{
  "action": "{action}",
  "number": 7,{extra}
  "pull_request": {{
    "url": "https://api.github.com/repos/acme/cache-config/pulls/7",
    "id": 1794061394,
    "number": 7,
    "state": "open",
    "title": "Raise maxmemory on sessions",
    "user": {{"login": "alice", "id": 17}},
    "head": {{
      "label": "alice:raise-maxmemory",
      "ref": "raise-maxmemory",
      "sha": "{SHA1}",
      "repo": {{"id": 5, "name": "cache-config", "full_name": "alice/cache-config",
                "clone_url": "https://github.com/alice/cache-config.git"}}
    }},
    "base": {{
      "label": "acme:main",
      "ref": "main",
      "sha": "{BASE_SHA}",
      "repo": {{"id": 3, "name": "cache-config", "full_name": "acme/cache-config",
                "clone_url": "https://github.com/acme/cache-config.git"}}
    }},
    "merged": false
  }},
  "repository": {{"id": 3, "name": "cache-config", "full_name": "acme/cache-config",
                  "clone_url": "https://github.com/acme/cache-config.git"}},
  "sender": {{"login": "alice", "id": 17}}
}}"#
        )
        .into_bytes()
    }

    #[test]
    fn forge_parses_github_and_gitea_pull_requests() {
        let want = PullRequest {
            repo: "acme/cache-config".to_owned(),
            number: 7,
            head_sha: SHA1.to_owned(),
            head_ref: "raise-maxmemory".to_owned(),
            base_sha: Some(BASE_SHA.to_owned()),
            base_ref: "main".to_owned(),
            head_clone_url: Some("https://github.com/alice/cache-config.git".to_owned()),
        };
        for (forge, actions) in [
            (Forge::GitHub, ["opened", "synchronize", "reopened"]),
            (Forge::Gitea, ["opened", "synchronized", "reopened"]),
        ] {
            for action in actions {
                let got = pull_request(forge, "pull_request", &github_payload(action, ""));
                assert_eq!(got, Ok(Some(want.clone())), "{} {action}", forge.name());
            }
            for action in [
                "closed",
                "labeled",
                "label_updated",
                "assigned",
                "review_requested",
            ] {
                let got = pull_request(forge, "pull_request", &github_payload(action, ""));
                assert_eq!(got, Ok(None), "{} {action}", forge.name());
            }
            // A title edit needs nothing; a new base does.
            let title = r#" "changes": {"title": {"from": "old"}},"#;
            assert_eq!(
                pull_request(forge, "pull_request", &github_payload("edited", title)),
                Ok(None)
            );
            let base =
                r#" "changes": {"base": {"ref": {"from": "develop"}, "sha": {"from": "x"}}},"#;
            assert_eq!(
                pull_request(forge, "pull_request", &github_payload("edited", base)),
                Ok(Some(want.clone()))
            );
            // Not a pull-request event at all.
            assert_eq!(
                pull_request(forge, "push", &github_payload("opened", "")),
                Ok(None)
            );
            // Garbage and wrong shapes say what is wrong.
            let e = pull_request(forge, "pull_request", b"{not json").unwrap_err();
            assert!(e.contains("is not what"), "{e}");
            let e = pull_request(forge, "pull_request", br#"{"action":"opened"}"#).unwrap_err();
            assert!(e.contains("missing field"), "{e}");
            let bad_sha = String::from_utf8(github_payload("opened", ""))
                .unwrap()
                .replace(SHA1, "../../etc/passwd");
            let e = pull_request(forge, "pull_request", bad_sha.as_bytes()).unwrap_err();
            assert!(e.contains("is not a commit id"), "{e}");
        }
        assert!(is_pull_request(Forge::Gitea, "pull_request_sync"));
        assert!(!is_pull_request(Forge::GitHub, "pull_request_review"));

        // A PR from a deleted fork: the head repository is null.
        let gone = String::from_utf8(github_payload("synchronize", ""))
            .unwrap()
            .replace(
                r#"{"id": 5, "name": "cache-config", "full_name": "alice/cache-config",
                "clone_url": "https://github.com/alice/cache-config.git"}"#,
                "null",
            );
        let got = pull_request(Forge::GitHub, "pull_request", gone.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(got.head_clone_url, None);
    }

    fn gitlab_payload(action: &str, oldrev: bool, changes: &str) -> Vec<u8> {
        let oldrev = if oldrev {
            format!(r#""oldrev": "{BASE_SHA}","#)
        } else {
            String::new()
        };
        format!(
            r#"{{
  "object_kind": "merge_request",
  "event_type": "merge_request",
  "user": {{"id": 1, "name": "Alice", "username": "alice"}},
  "project": {{
    "id": 42,
    "name": "cache-config",
    "path_with_namespace": "acme/cache-config",
    "git_http_url": "https://gitlab.example.com/acme/cache-config.git",
    "default_branch": "main"
  }},
  "object_attributes": {{
    "id": 99,
    "iid": 5,
    "title": "Raise maxmemory on sessions",
    "source_branch": "raise-maxmemory",
    "target_branch": "main",
    "source_project_id": 42,
    "target_project_id": 42,
    "state": "opened",
    "merge_status": "unchecked",
    {oldrev}
    "action": "{action}",
    "last_commit": {{"id": "{SHA1}", "message": "Raise maxmemory\n", "author": {{"name": "Alice"}}}},
    "source": {{"git_http_url": "https://gitlab.example.com/acme/cache-config.git"}},
    "target": {{"git_http_url": "https://gitlab.example.com/acme/cache-config.git"}}
  }},
  "changes": {changes}
}}"#
        )
        .into_bytes()
    }

    #[test]
    fn forge_parses_gitlab_merge_requests() {
        let want = PullRequest {
            repo: "42".to_owned(),
            number: 5,
            head_sha: SHA1.to_owned(),
            head_ref: "raise-maxmemory".to_owned(),
            base_sha: None,
            base_ref: "main".to_owned(),
            head_clone_url: Some("https://gitlab.example.com/acme/cache-config.git".to_owned()),
        };
        let hook = "Merge Request Hook";
        let none = "{}";
        for (action, oldrev, changes) in [
            ("open", false, none),
            ("reopen", false, none),
            ("update", true, none),
            (
                "update",
                false,
                r#"{"target_branch": {"previous": "develop", "current": "main"}}"#,
            ),
        ] {
            assert_eq!(
                pull_request(
                    Forge::GitLab,
                    hook,
                    &gitlab_payload(action, oldrev, changes)
                ),
                Ok(Some(want.clone())),
                "{action} {oldrev} {changes}"
            );
        }
        for (action, oldrev, changes) in [
            (
                "update",
                false,
                r#"{"title": {"previous": "a", "current": "b"}}"#,
            ),
            ("close", false, none),
            ("merge", false, none),
            ("approved", false, none),
            ("unapproved", false, none),
        ] {
            assert_eq!(
                pull_request(
                    Forge::GitLab,
                    hook,
                    &gitlab_payload(action, oldrev, changes)
                ),
                Ok(None),
                "{action}"
            );
        }
        assert_eq!(
            pull_request(
                Forge::GitLab,
                "Push Hook",
                &gitlab_payload("open", false, none)
            ),
            Ok(None)
        );
        let issue = String::from_utf8(gitlab_payload("open", false, none))
            .unwrap()
            .replacen(
                r#""object_kind": "merge_request""#,
                r#""object_kind": "issue""#,
                1,
            );
        let e = pull_request(Forge::GitLab, hook, issue.as_bytes()).unwrap_err();
        assert!(e.contains("not `merge_request`"), "{e}");
        let e =
            pull_request(Forge::GitLab, hook, br#"{"object_kind":"merge_request"}"#).unwrap_err();
        assert!(e.contains("GitLab"), "{e}");
    }
}
