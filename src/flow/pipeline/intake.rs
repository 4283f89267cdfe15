//! The one intake of a new head, shared by `serve` (the tracked branch), `sync` (its
//! `--rev`), `demo` (the demo repository's `HEAD`) and pull-request feedback (the
//! pull request's head, loaded only):
//!
//! ```text
//! resolve ─► descends from the last good revision ─► load ─► trust ─► Valid
//!    │                 │                               │        │
//!  FetchFailed     Refused(Rewritten)        Refused(Invalid)  Refused(Untrusted)
//! ```
//!
//! Each step is a [`Step`]: it looks at the [`Candidate`] so far, adds what it learnt, or
//! stops the intake with the [`Refusal`] it documents (the head is wrong: wait for a new
//! commit) or a [`IntakeError`] (git could not be read: try again later). A refusal
//! goes to the reconciler's [`refuse`](crate::flow::runtime::Handle::refuse) input,
//! which journals and notifies it in the same words for every caller.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::edges::source::{ConfigRepo, SourceError};
use crate::edges::trust::{self, Signed};
use crate::flow::pipeline::{self, Revision};
use crate::pure::render::short;
use crate::pure::spec::{model::Desired, Diagnostic};

/// Why a head is not taken. The head itself is wrong: nothing changes until a new commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The head does not descend from the last good revision, or that revision is gone:
    /// history was rewritten.
    Rewritten { head: String, good: String },
    /// The head does not validate.
    Invalid {
        head: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// The head is not signed as the trust policy of the last good revision asks.
    /// `reason`: the trust error's words, as journaled (the refusal is compared and cloned).
    Untrusted { head: String, reason: String },
}

impl Refusal {
    /// The refused commit.
    pub fn head(&self) -> &str {
        match self {
            Refusal::Rewritten { head, .. }
            | Refusal::Invalid { head, .. }
            | Refusal::Untrusted { head, .. } => head,
        }
    }

    /// The label of `cacheflow_revisions_total{result}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Rewritten { .. } => "rewritten",
            Refusal::Invalid { .. } => "invalid",
            Refusal::Untrusted { .. } => "untrusted",
        }
    }

    /// The reason the reconciler journals and notifies.
    pub fn reason(&self) -> String {
        match self {
            Refusal::Rewritten { head, good } => format!(
                "history rewritten: {} does not descend from the last good revision {}",
                short(Some(head)),
                short(Some(good))
            ),
            Refusal::Invalid { diagnostics, .. } => {
                let first = diagnostics
                    .first()
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                format!("invalid ({} error(s)); first: {first}", diagnostics.len())
            }
            Refusal::Untrusted { reason, .. } => reason.clone(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason())
    }
}

/// Git could not be read: the head is not judged; try again later.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The remote could not be fetched into the mirror.
    #[error("{0}")]
    Fetch(String),
    /// The revision (the tracked branch, `--rev`) does not resolve to a commit.
    #[error("{rev}: {source}")]
    Resolve {
        rev: String,
        #[source]
        source: SourceError,
    },
    /// The head's files could not be read.
    #[error(transparent)]
    Read(#[from] SourceError),
    /// A step that needs the loaded head ran before [`load`] (a wrong order of steps).
    #[error("{0} was not loaded")]
    NotLoaded(String),
}

/// Where heads come from: a repository (a path or a URL), mirrored into `mirror` when
/// it is a URL. Opening it fetches.
#[derive(Debug, Clone)]
pub struct Origin {
    pub url: String,
    pub mirror: PathBuf,
    /// The config root inside the repository (`--path`; `""`: its root).
    pub path: String,
}

impl Origin {
    /// Open the repository, fetching the mirror (a [`SourceError`] shows the URL with its
    /// credentials redacted).
    pub fn open(&self) -> Result<ConfigRepo, SourceError> {
        ConfigRepo::open(&self.url, Some(&self.mirror)).and_then(|repo| repo.with_root(&self.path))
    }
}

/// What the intake of a head ends with.
#[derive(Debug)]
pub enum Outcome {
    /// The head is the one seen last time: nothing to do.
    Unchanged { head: String },
    /// The head is taken: hand it to the reconciler.
    Valid(Taken),
    /// The head is refused: hand the refusal to the reconciler.
    Refused(Refusal),
    /// Git could not be read; the last good revision stays.
    FetchFailed(IntakeError),
}

/// A head that passed every step.
#[derive(Debug)]
pub struct Taken {
    pub head: String,
    pub desired: Box<Desired>,
    /// Who signed it, when the policy asks for signatures.
    pub signed: Option<Signed>,
}

/// What the intake knows of a head so far.
#[derive(Debug, Default)]
pub struct Candidate {
    /// What was asked for: a branch, a tag, a sha.
    pub rev: String,
    /// The last good revision (the reconciler's head), if there is one.
    pub good: Option<String>,
    /// The commit `rev` resolves to (set by [`resolve`]).
    pub head: String,
    /// The validated head (set by [`load`]).
    pub desired: Option<Desired>,
    /// Its signer (set by [`trust`]).
    pub signed: Option<Signed>,
}

/// Why a step stopped the intake.
#[derive(Debug)]
pub enum Stop {
    Refused(Refusal),
    Failed(IntakeError),
}

/// One step of the intake.
pub type Step = fn(&ConfigRepo, &mut Candidate) -> Result<(), Stop>;

/// The steps after [`resolve`], in order.
pub const STEPS: [Step; 3] = [descends, load, trust];

/// Resolve `rev` to a commit. Refuses nothing: a revision that does not resolve is
/// [`IntakeError::Resolve`].
pub fn resolve(repo: &ConfigRepo, c: &mut Candidate) -> Result<(), Stop> {
    c.head = repo.resolve(&c.rev).map_err(|source| {
        Stop::Failed(IntakeError::Resolve {
            rev: c.rev.clone(),
            source,
        })
    })?;
    Ok(())
}

/// The head descends from the last good revision (or is it). Refuses with
/// [`Refusal::Rewritten`] when it does not, or when the good one is gone.
pub fn descends(repo: &ConfigRepo, c: &mut Candidate) -> Result<(), Stop> {
    let Some(good) = c.good.as_deref().filter(|g| *g != c.head) else {
        return Ok(());
    };
    let r = repo.repository();
    let descends = match (git2::Oid::from_str(&c.head), git2::Oid::from_str(good)) {
        (Ok(h), Ok(g)) => r.graph_descendant_of(h, g).unwrap_or(false),
        _ => false,
    };
    if descends {
        return Ok(());
    }
    Err(Stop::Refused(Refusal::Rewritten {
        head: c.head.clone(),
        good: good.to_owned(),
    }))
}

/// Read and validate the head. Refuses with [`Refusal::Invalid`] (every diagnostic);
/// files that cannot be read are [`IntakeError::Read`].
pub fn load(repo: &ConfigRepo, c: &mut Candidate) -> Result<(), Stop> {
    let validation = validated(repo, &c.head).map_err(|e| Stop::Failed(e.into()))?;
    match validation {
        Ok(desired) => {
            c.desired = Some(desired);
            Ok(())
        }
        Err(diagnostics) => Err(Stop::Refused(Refusal::Invalid {
            head: c.head.clone(),
            diagnostics,
        })),
    }
}

/// Whether [`validated`] keeps the last head's validation for the next caller.
static SHARE: AtomicBool = AtomicBool::new(false);
/// The last commit validated, and its validation, while [`SHARE`] is on.
type Shared = Option<(String, Result<Desired, Vec<Diagnostic>>)>;
static LAST: Mutex<Shared> = Mutex::new(None);

/// Share validations in this process from now on: a replica leading several shards
/// (`serve --shards`) takes each head in once per shard led, plus once to place the
/// nodes on their shards, all at about the same time. One validation serves them all
/// (the others wait for it and get a copy), rather than one each of the whole fleet.
/// Off otherwise: the copy kept would cost one more fleet in memory for nothing.
pub fn share_validations() {
    SHARE.store(true, Ordering::Relaxed);
}

/// The validation of `commit`: from the last one when it was this commit and sharing
/// is on. A validation depends on the commit's content alone.
pub fn validated(
    repo: &ConfigRepo,
    commit: &str,
) -> Result<Result<Desired, Vec<Diagnostic>>, SourceError> {
    let rev = Revision::Rev(commit.to_owned());
    if !SHARE.load(Ordering::Relaxed) {
        return pipeline::validate(repo, &rev).map(|(_, v)| v);
    }
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((c, validation)) = last.as_ref().filter(|(c, _)| c == commit) {
        tracing::debug!(commit = %c, "validation shared");
        return Ok(validation.clone());
    }
    let (_, validation) = pipeline::validate(repo, &rev)?;
    *last = Some((commit.to_owned(), validation.clone()));
    Ok(validation)
}

/// The head is signed as the trust policy of the last good revision asks (the head's
/// own for the first revision). Refuses with [`Refusal::Untrusted`].
pub fn trust(repo: &ConfigRepo, c: &mut Candidate) -> Result<(), Stop> {
    let Some(desired) = &c.desired else {
        return Ok(());
    };
    let previous = previous(repo, c.good.as_deref(), desired);
    let policy = trust::policy(previous.as_ref(), desired);
    match trust::check(repo.repository(), &c.head, &policy) {
        Ok(signed) => {
            c.signed = signed;
            Ok(())
        }
        Err(reason) => Err(Stop::Refused(Refusal::Untrusted {
            head: c.head.clone(),
            reason: reason.to_string(),
        })),
    }
}

/// The last good revision's validated state, when it is not the head; `None` (with a
/// warning) when it cannot be read any more.
fn previous(repo: &ConfigRepo, good: Option<&str>, head: &Desired) -> Option<Desired> {
    let good = good.filter(|g| Some(*g) != head.commit.as_deref())?;
    match pipeline::desired(repo, &Revision::Rev(good.to_owned())) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!("cannot read the trust policy of {good}: {e}; using the head's");
            None
        }
    }
}

/// Take `rev` in: resolve it, then run [`STEPS`]. `seen` is the head looked at last
/// time (`serve`), so an unchanged branch costs one resolve.
pub fn take(repo: &ConfigRepo, rev: &str, good: Option<&str>, seen: Option<&str>) -> Outcome {
    let mut c = Candidate {
        rev: rev.to_owned(),
        good: good.map(str::to_owned),
        ..Candidate::default()
    };
    if let Err(stop) = resolve(repo, &mut c) {
        return stopped(stop);
    }
    if seen == Some(c.head.as_str()) {
        return Outcome::Unchanged { head: c.head };
    }
    for step in STEPS {
        if let Err(stop) = step(repo, &mut c) {
            return stopped(stop);
        }
    }
    match c.desired {
        Some(desired) => Outcome::Valid(Taken {
            head: c.head,
            desired: Box::new(desired),
            signed: c.signed,
        }),
        // `load` sets it or stops.
        None => Outcome::FetchFailed(IntakeError::NotLoaded(c.head)),
    }
}

fn stopped(stop: Stop) -> Outcome {
    match stop {
        Stop::Refused(r) => Outcome::Refused(r),
        Stop::Failed(e) => Outcome::FetchFailed(e),
    }
}
