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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::diff::ChangeSet;
use crate::plan::Plan;
pub use crate::server::webhook::Forge;

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

/// What a pull-request webhook asks for: `Ok(Some(pr))` when the head needs validating
/// and feedback, `Ok(None)` for other events and actions (closed, labeled, approved, a
/// title edit, …), `Err` naming what is wrong for a payload that is not what the forge
/// sends.
pub fn pull_request(
    forge: Forge,
    event_header: &str,
    body: &[u8],
) -> Result<Option<PullRequest>, String> {
    if !is_pull_request(forge, event_header) {
        return Ok(None);
    }
    let forge_name = match forge {
        Forge::GitHub => "GitHub",
        Forge::Gitea => "Gitea",
        Forge::GitLab => "GitLab",
    };
    let bad = |e: serde_json::Error| format!("the {event_header} payload is not what {forge_name} sends: {e}");
    let pr = match forge {
        Forge::GitHub | Forge::Gitea => {
            let event: HubEvent = serde_json::from_slice(body).map_err(bad)?;
            let wanted = match event.action.as_str() {
                "opened" | "reopened" | "synchronize" | "synchronized" => true,
                // A retargeted pull request: the diff is against another base now.
                "edited" => event
                    .changes
                    .as_ref()
                    .is_some_and(|c| c.get("base").is_some()),
                _ => false,
            };
            if !wanted {
                return Ok(None);
            }
            let p = event.pull_request;
            PullRequest {
                repo: event.repository.full_name,
                number: p.number,
                head_sha: p.head.sha,
                head_ref: branch(&p.head.git_ref),
                base_sha: Some(p.base.sha).filter(|s| !s.is_empty()),
                base_ref: branch(&p.base.git_ref),
                head_clone_url: p.head.repo.and_then(|r| r.clone_url),
            }
        }
        Forge::GitLab => {
            let event: LabEvent = serde_json::from_slice(body).map_err(bad)?;
            if event.object_kind != "merge_request" {
                return Err(format!(
                    "the {event_header} payload has object_kind `{}`, not `merge_request`",
                    event.object_kind
                ));
            }
            let a = event.object_attributes;
            let wanted = match a.action.as_deref() {
                Some("open") | Some("reopen") => true,
                // `oldrev` is there when the update brought new commits; a new target
                // branch shows in `changes`. Title, label or assignee updates have neither.
                Some("update") => {
                    a.oldrev.as_deref().is_some_and(|r| !r.is_empty())
                        || event
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
            PullRequest {
                repo: event.project.id.to_string(),
                number: a.iid,
                head_sha: a.last_commit.id,
                head_ref: branch(&a.source_branch),
                base_sha: None,
                base_ref: branch(&a.target_branch),
                head_clone_url: a.source.and_then(|s| s.git_http_url),
            }
        }
    };
    if !is_commit_id(&pr.head_sha) {
        return Err(format!(
            "the {event_header} payload's head commit `{}` is not a commit id",
            pr.head_sha.chars().take(80).collect::<String>()
        ));
    }
    if let Some(base) = &pr.base_sha {
        if !is_commit_id(base) {
            return Err(format!(
                "the {event_header} payload's base commit `{}` is not a commit id",
                base.chars().take(80).collect::<String>()
            ));
        }
    }
    if matches!(forge, Forge::GitHub | Forge::Gitea) && split_repo(&pr.repo).is_none() {
        return Err(format!(
            "the {event_header} payload's repository `{}` is not `owner/name`",
            pr.repo.chars().take(200).collect::<String>()
        ));
    }
    Ok(Some(pr))
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
    let short: String = head_sha.chars().take(12).collect();
    let mut out = format!(
        "{MARKER}\n## cacheflow: {} at {}\n\n",
        verdict.heading(),
        crate::render::code(&short)
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
    let mut out = crate::render::diff_markdown(changes);
    if let Some(plan) = plan {
        let _ = write!(
            out,
            "\n<details><summary>Rollout plan against live state</summary>\n\n{}\n</details>\n",
            crate::render::plan_markdown(plan).trim_end()
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

/// A reqwest error with its causes, without any header.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        format!("timed out: {e}")
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
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
                crate::source::redact_url(&base)
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
            Forge::GitHub => (
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}"),
            ),
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
            .map_err(|e| ForgeError::Config(describe(&e)))?;
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
            message: self.mask(&crate::source::redact_url(&describe(&e))),
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
        let path = format!(
            "{}/statuses/{}",
            self.repo_path(pr)?,
            segment(&pr.head_sha)
        );
        self.send(Method::POST, &path, "", Some(&body)).await?;
        Ok(())
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
        let created: Comment = serde_json::from_str(&text).map_err(|e| {
            self.answer_error(Method::POST, &path, format!("no comment id: {e}"))
        })?;
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
