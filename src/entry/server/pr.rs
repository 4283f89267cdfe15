//! Pull-request feedback of `cacheflow serve`: a `pull_request` (GitHub, Gitea) or
//! `Merge Request Hook` (GitLab) webhook ─► fetch the head ─► validate it (the intake's
//! load step) ─► diff against
//! the base and plan against the nodes' latest reports ─► a commit status and one
//! Markdown comment, edited on every new push (see [`crate::edges::forge`]).
//!
//! Nothing from a pull request is applied: its head is only read. The head is fetched
//! from the forge's pull-request ref (`refs/pull/N/head`, GitLab's
//! `refs/merge-requests/N/head`), so pull requests from forks work, into
//! `refs/cacheflow/pull/N` of the mirror.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::edges::forge::webhook::Forge;
use crate::edges::forge::{self, ForgeClient, PullRequest, StatusState, Verdict};
use crate::edges::metrics::Metrics;
use crate::edges::redact::redact_url;
use crate::flow::pipeline::intake::{self, Candidate, Origin, Refusal, Stop};
use crate::flow::pipeline::{self, Revision};
use crate::pure::live::LiveState;
use crate::pure::render::short_id;

/// Where pull-request feedback goes: the forges' API (one client per forge, which keeps
/// the comment of each pull request known).
pub struct Feedback {
    api_url: Option<String>,
    token: Option<String>,
    clients: Mutex<HashMap<&'static str, Arc<ForgeClient>>>,
}

impl Feedback {
    pub fn new(api_url: Option<String>, token: Option<String>) -> Feedback {
        Feedback {
            api_url,
            token,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `forge`, or why there is none.
    pub fn client(&self, forge: Forge) -> Result<Arc<ForgeClient>, PrError> {
        let Some(token) = &self.token else {
            return Err(PrError::NoToken);
        };
        let base = match (&self.api_url, forge) {
            (Some(url), _) => url.clone(),
            (None, Forge::GitHub) => "https://api.github.com".to_owned(),
            (None, _) => return Err(PrError::NoApiUrl(forge.name())),
        };
        // A panic while the map was held left it whole (an insert is the only write).
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(forge.name()) {
            return Ok(c.clone());
        }
        let client = Arc::new(ForgeClient::new(forge, &base, token).map_err(PrError::Client)?);
        clients.insert(forge.name(), client.clone());
        Ok(client)
    }
}

/// Validate, diff and plan `pr`, then post the status and the comment.
pub async fn answer(
    origin: Origin,
    client: Arc<ForgeClient>,
    metrics: Arc<Metrics>,
    pr: PullRequest,
    live: LiveState,
) {
    let forge = client.forge();
    let tag = format!("{} #{} at {}", pr.repo, pr.number, short_id(&pr.head_sha));
    if let Err(e) = client
        .set_status(
            &pr,
            StatusState::Pending,
            "cacheflow is checking this change",
            None,
        )
        .await
    {
        tracing::warn!("pull request {tag}: cannot set the pending status: {e}");
    }
    let p = pr.clone();
    let evaluated = tokio::task::spawn_blocking(move || evaluate(&origin, forge, &p, &live)).await;
    let (verdict, markdown) = match evaluated {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => (
            Verdict::Error,
            format!("cacheflow could not check this head:\n\n```\n{e}\n```\n"),
        ),
        Err(e) => (
            Verdict::Error,
            format!("cacheflow could not check this head: {e}\n"),
        ),
    };
    let body = forge::comment(&pr.head_sha, verdict, &markdown);
    let posted = async {
        let action = client.upsert_comment(&pr, &body).await?;
        client
            .set_status(&pr, verdict.state(), &verdict.description(), None)
            .await?;
        Ok::<_, forge::ForgeError>(action)
    }
    .await;
    match posted {
        Ok(action) => {
            tracing::info!("pull request {tag}: {} ({action:?})", verdict.description());
            Metrics::count(&metrics.pr_feedback, "posted");
        }
        Err(e) => {
            tracing::warn!("pull request {tag}: feedback not posted: {e}");
            Metrics::count(&metrics.pr_feedback, "failed");
        }
    }
}

/// Why a pull request gets no feedback, or why its head could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    #[error("no forge token (CACHEFLOW_FORGE_TOKEN_FILE): pull requests get no feedback")]
    NoToken,
    #[error("no forge API URL (--forge-api-url) for {0}: pull requests get no feedback")]
    NoApiUrl(&'static str),
    #[error(transparent)]
    Client(forge::ForgeError),
    #[error(transparent)]
    Open(#[from] crate::edges::source::SourceError),
    /// The git remote of the origin could not be made (its words redacted).
    #[error("{0}")]
    Remote(String),
    #[error("cannot fetch the head {head}: {errors}")]
    HeadNotFetched { head: String, errors: String },
    #[error("{0} was not loaded")]
    NotLoaded(String),
    /// The head is refused for another reason than its diagnostics.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Load(intake::IntakeError),
    #[error("the base branch {branch}: {source}")]
    Base {
        branch: String,
        #[source]
        source: crate::edges::source::SourceError,
    },
    #[error(transparent)]
    Diff(#[from] pipeline::PipelineError),
}

/// The pull-request ref a forge keeps for `pr`.
fn pull_ref(forge: Forge, pr: &PullRequest) -> String {
    match forge {
        Forge::GitLab => format!("refs/merge-requests/{}/head", pr.number),
        Forge::GitHub | Forge::Gitea => format!("refs/pull/{}/head", pr.number),
    }
}

/// Fetch the head, validate it, diff it against the base, plan it against `live`.
fn evaluate(
    origin: &Origin,
    forge: Forge,
    pr: &PullRequest,
    live: &LiveState,
) -> Result<(Verdict, String), PrError> {
    let repo = origin.open()?;
    let local = format!("refs/cacheflow/pull/{}", pr.number);
    let git = repo.repository();
    let have = |sha: &str| {
        git2::Oid::from_str(sha)
            .ok()
            .and_then(|oid| git.find_commit(oid).ok())
            .is_some()
    };
    if !have(&pr.head_sha) {
        let mut remote = git
            .remote_anonymous(&origin.url)
            .map_err(|e| PrError::Remote(redact_url(e.message())))?;
        let mut errors = Vec::new();
        for spec in [
            format!("+{}:{local}", pull_ref(forge, pr)),
            format!("+refs/heads/{}:{local}", pr.head_ref),
        ] {
            match remote.fetch(&[spec.as_str()], None, None) {
                Ok(()) if have(&pr.head_sha) => break,
                Ok(()) => errors.push(format!("{spec}: the head is not there")),
                Err(e) => errors.push(format!("{spec}: {}", redact_url(e.message()))),
            }
        }
        if !have(&pr.head_sha) {
            return Err(PrError::HeadNotFetched {
                head: pr.head_sha.clone(),
                errors: errors.join("; "),
            });
        }
    }
    let head = Revision::Rev(pr.head_sha.clone());
    // The intake's load step: nothing from a pull request is taken, only judged.
    let mut candidate = Candidate {
        rev: pr.head_sha.clone(),
        head: pr.head_sha.clone(),
        ..Candidate::default()
    };
    let desired = match intake::load(&repo, &mut candidate) {
        Ok(()) => candidate
            .desired
            .ok_or_else(|| PrError::NotLoaded(pr.head_sha.clone()))?,
        Err(Stop::Refused(Refusal::Invalid { diagnostics, .. })) => {
            return Ok((Verdict::Invalid, invalid_markdown(&diagnostics)))
        }
        Err(Stop::Refused(other)) => return Err(PrError::Refused(other.reason())),
        Err(Stop::Failed(e)) => return Err(PrError::Load(e)),
    };
    let base = match &pr.base_sha {
        Some(sha) if have(sha) => sha.clone(),
        _ => repo
            .resolve(&format!("refs/heads/{}", pr.base_ref))
            .map_err(|source| PrError::Base {
                branch: pr.base_ref.clone(),
                source,
            })?,
    };
    let changes = pipeline::diff(&repo, &base, &head)?;
    let plan = crate::pure::plan::plan(&desired, live);
    let verdict = if changes.is_empty() {
        Verdict::NoChanges
    } else {
        Verdict::Changes {
            risks: changes.clusters.iter().map(|c| c.risks.len()).sum(),
        }
    };
    Ok((verdict, forge::pr_markdown(&changes, Some(&plan))))
}

/// The comment of an invalid head: its diagnostics (the first 50).
fn invalid_markdown(diagnostics: &[crate::pure::spec::Diagnostic]) -> String {
    let mut md = format!(
        "**Invalid**: {} error(s); nothing from this head can be rolled out.\n\n",
        diagnostics.len()
    );
    for d in diagnostics.iter().take(50) {
        let _ = writeln!(md, "- {}", crate::pure::render::code(&d.to_string()));
    }
    if diagnostics.len() > 50 {
        let _ = writeln!(md, "- … and {} more", diagnostics.len() - 50);
    }
    md
}
