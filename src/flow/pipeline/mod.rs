//! The one place that knows the order of the steps behind each command: read the files
//! (source), load and validate them (spec), compare (diff) or plan against live state
//! (plan). The CLI parses arguments and renders; everything in between happens here.
//! [`intake`] is the one way a new head is taken in (resolve, descends, load, trust).

pub mod import;
pub mod intake;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::edges::nodes::fleet::{self, SnapshotOptions, Target};
use crate::edges::nodes::memcached::MemcachedDriver;
use crate::edges::nodes::redis::RedisDriver;
use crate::edges::nodes::NodeDriver;
use crate::pure::catalog::Engine;
use crate::pure::spec::model::{Cluster, Node, Sentinel};

use crate::edges::source::{ConfigRepo, FileSet, SourceError};
use crate::pure::diff::{self, ChangeSet};
use crate::pure::live::{LiveError, LiveState};
use crate::pure::plan::{self, Plan};
use crate::pure::spec::{self, model::Desired, Diagnostic, FileItem, Summary};

/// Which files to read: a revision from the object database, or the working tree.
#[derive(Debug, Clone)]
pub enum Revision {
    Rev(String),
    Worktree,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Live(#[from] LiveError),
    /// The revision does not validate; nothing is computed from it.
    #[error("no cluster named `{0}` in this revision")]
    UnknownCluster(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Secret references that give no value: a configuration error of the machine
    /// cacheflow runs on, said once per reference rather than once per node.
    #[error("{}", MissingSecret::list(.0))]
    MissingSecrets(Vec<MissingSecret>),
    #[error("{revision} is invalid ({} error{})", .diagnostics.len(), if .diagnostics.len() == 1 { "" } else { "s" })]
    Invalid {
        revision: String,
        diagnostics: Vec<Diagnostic>,
    },
}

/// A secret reference (a cluster's `auth.password`) that gives no value where cacheflow
/// runs, and the clusters that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingSecret {
    /// The reference as written (`env:NAME`, `file:PATH`): never a value.
    pub reference: String,
    /// Why it gives none (names the reference, never a value).
    pub problem: String,
    pub clusters: Vec<String>,
}

impl std::fmt::Display for MissingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "secret reference {}: {}; used by cluster{} {}: set it where cacheflow runs (its nodes cannot be read without it)",
            self.reference,
            self.problem,
            if self.clusters.len() == 1 { "" } else { "s" },
            self.clusters.join(", ")
        )
    }
}

impl MissingSecret {
    fn list(missing: &[MissingSecret]) -> String {
        missing
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The secret references of the clusters in `clusters` (those with nodes to read;
/// `direct_only`: only those with directly managed nodes) that give no value, one entry
/// per reference. Resolved here once, so that a missing one is one configuration error
/// rather than an "unreachable" per node.
pub fn missing_secrets<'a>(
    clusters: impl IntoIterator<Item = &'a Cluster>,
    direct_only: bool,
) -> Vec<MissingSecret> {
    let mut missing: std::collections::BTreeMap<String, MissingSecret> = Default::default();
    for c in clusters {
        let reads = c
            .nodes
            .iter()
            .any(|n| !direct_only || n.managed == crate::pure::spec::model::Managed::Direct);
        let Some(auth) = c
            .auth
            .as_ref()
            .filter(|_| reads && c.engine == Engine::Redis)
        else {
            continue;
        };
        if let Err(e) = crate::edges::secret::resolve(&auth.password) {
            missing
                .entry(e.reference.clone())
                .or_insert_with(|| MissingSecret {
                    reference: e.reference.clone(),
                    problem: e.problem.to_string(),
                    clusters: Vec::new(),
                })
                .clusters
                .push(c.name.clone());
        }
    }
    missing.into_values().collect()
}

/// Read every cacheflow file of a revision.
pub fn read(repo: &ConfigRepo, rev: &Revision) -> Result<FileSet, SourceError> {
    match rev {
        Revision::Rev(r) => repo.read_rev(r),
        Revision::Worktree => repo.read_worktree(),
    }
}

/// The commit read (`None` for a working tree) and the validated state or every error.
pub type Validation = (Option<String>, Result<Desired, Vec<Diagnostic>>);

/// Read a revision and load it: the validated state, for plans and rollouts.
///
/// A revision is read on this thread while another loads the files as they arrive, so
/// reading from git overlaps with parsing (git2 handles stay on the thread that opened
/// them). The working tree is read first, then loaded.
pub fn validate(repo: &ConfigRepo, rev: &Revision) -> Result<Validation, SourceError> {
    let Revision::Rev(rev) = rev else {
        let files = read(repo, rev)?;
        let found = has_config(&files);
        let result = spec::load(&files);
        return Ok((None, at_config_root(repo, None, found, result)));
    };
    streamed(repo, rev, spec::load_stream)
}

/// The commit read and the summary of a valid revision, or every error.
pub type Check = (Option<String>, Result<Summary, Vec<Diagnostic>>);

/// `cacheflow validate`: every check of [`validate`], keeping no model (memory stays flat
/// in the number of clusters), and the revision in numbers.
pub fn check(repo: &ConfigRepo, rev: &Revision) -> Result<Check, SourceError> {
    let Revision::Rev(rev) = rev else {
        let files = read(repo, rev)?;
        let found = has_config(&files);
        let result = spec::load(&files).map(|d| Summary::of(&d));
        return Ok((None, at_config_root(repo, None, found, result)));
    };
    streamed(repo, rev, spec::check_stream)
}

/// Files sent back to the loader: path and text.
type Reread = Vec<(String, String)>;

/// A loader of a stream of files: [`spec::load_stream`] or [`spec::check_stream`].
type Loader<T> = fn(
    Option<String>,
    std::sync::mpsc::Receiver<FileItem>,
    spec::Reread<'_>,
) -> Result<T, Vec<Diagnostic>>;

/// The commit read and what the loader made of it.
type Loaded<T> = (Option<String>, Result<T, Vec<Diagnostic>>);

/// Stream revision `rev` into `load` on another thread while this one reads it from git;
/// once read, this thread also serves the loader's re-reads (the few files an error
/// across files names), since the repository's handles stay here.
fn streamed<T: Send>(
    repo: &ConfigRepo,
    rev: &str,
    load: Loader<T>,
) -> Result<Loaded<T>, SourceError> {
    let started = std::time::Instant::now();
    let commit = repo.resolve(rev)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1024);
    let (ask, asked) = std::sync::mpsc::channel::<(Vec<String>, std::sync::mpsc::Sender<Reread>)>();
    let mut found = false;
    let (read, result) = std::thread::scope(|s| {
        let loader = s.spawn({
            let commit = commit.clone();
            move || {
                let mut reread = |paths: &[String]| {
                    let (reply, answer) = std::sync::mpsc::channel();
                    if ask.send((paths.to_vec(), reply)).is_err() {
                        return Vec::new();
                    }
                    answer.recv().unwrap_or_default()
                };
                load(Some(commit), rx, &mut reread)
            }
        });
        let read = repo.stream_rev(&commit, &mut |item| {
            found = true;
            // The loader only stops early by panicking, which join re-raises below.
            let _ = tx.send(item);
        });
        drop(tx);
        // Until the loader is done (and drops `ask`).
        for (paths, reply) in asked.iter() {
            let texts = match repo.read_paths(&commit, &paths) {
                Ok(set) => set.files.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "reading files again for their positions");
                    Vec::new()
                }
            };
            let _ = reply.send(texts);
        }
        let result = loader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (read, result)
    });
    read?;
    tracing::debug!(elapsed_ms = started.elapsed().as_millis(), "validated");
    let result = at_config_root(repo, Some(&commit), found, result);
    Ok((Some(commit), result))
}

/// The Settings file (optional: defaults when absent).
const SETTINGS: &str = "cacheflow.yaml";

/// Whether a config root holds any cacheflow file (`cacheflow.yaml`, or anything under
/// `clusters/`, `profiles/`, `policies/`): one with none is not a config (not the config
/// repository, or `--path` missing or wrong), never an empty, valid fleet.
fn has_config(files: &FileSet) -> bool {
    !files.files.is_empty() || !files.problems.is_empty()
}

/// A load's result as the user sees it: diagnostics name files relative to the
/// repository's root (with `--path`, `deploy/caches/clusters/x.yaml`, so that editors
/// and CI annotations find them), and a revision without `cacheflow.yaml` at the config
/// root and no other cacheflow file is an error, never an empty, valid fleet.
fn at_config_root<T>(
    repo: &ConfigRepo,
    commit: Option<&str>,
    found: bool,
    result: Result<T, Vec<Diagnostic>>,
) -> Result<T, Vec<Diagnostic>> {
    let mut diagnostics = match result {
        Ok(desired) if found => return Ok(desired),
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics,
    };
    for d in &mut diagnostics {
        d.file = repo.shown(&d.file);
    }
    if !found {
        diagnostics.insert(0, no_settings(repo, commit));
    }
    Err(diagnostics)
}

/// What was looked for, where, and what to do.
fn no_settings(repo: &ConfigRepo, commit: Option<&str>) -> Diagnostic {
    let revision = match commit {
        Some(c) => format!("revision {}", crate::pure::render::short(Some(c))),
        None => "the working tree".to_owned(),
    };
    let root = match repo.root() {
        "" => "the root of".to_owned(),
        dir => format!("{dir}/ in"),
    };
    Diagnostic {
        file: repo.shown(SETTINGS),
        line: 1,
        column: 1,
        message: format!(
            "no {SETTINGS}, clusters/, profiles/ or policies/ at {root} {} ({revision}): this is not a cacheflow config; run cacheflow in the config repository (--repo DIR), or give --path DIR if the config lives in a subdirectory",
            repo.name()
        ),
        pointer: String::new(),
    }
}

/// Load `files`; `base`: the side a change starts from, which may be from before the
/// config existed (a pull request that adds it), so it may lack `cacheflow.yaml`.
fn load_or_invalid(
    repo: &ConfigRepo,
    files: &FileSet,
    label: &str,
    base: bool,
) -> Result<Desired, PipelineError> {
    at_config_root(
        repo,
        files.commit.as_deref(),
        base || has_config(files),
        spec::load(files),
    )
    .map_err(|diagnostics| PipelineError::Invalid {
        revision: label.to_owned(),
        diagnostics,
    })
}

fn cluster_paths(paths: &[String]) -> Vec<String> {
    paths
        .iter()
        .filter(|p| p.starts_with("clusters/"))
        .cloned()
        .collect()
}

/// Read just the files a diff needs at `rev`: the changed clusters, Settings (rollout
/// defaults), the profiles the changed clusters name, and the policies (few and small,
/// and a change that breaks one must not pass as a mere diff).
fn read_for_diff(
    repo: &ConfigRepo,
    rev: &str,
    clusters: &[String],
) -> Result<FileSet, SourceError> {
    let mut paths = clusters.to_vec();
    paths.push("cacheflow.yaml".to_owned());
    let mut files = repo.read_paths(rev, &paths)?;
    let policies = repo.read_areas(rev, &["policies"])?;
    files.files.extend(policies.files);
    files.problems.extend(policies.problems);
    let mut profiles: BTreeSet<String> = BTreeSet::new();
    for (path, text) in &files.files {
        if !path.starts_with("clusters/") {
            continue;
        }
        // A cheap look for `spec.profile`; a file that does not parse is reported by the
        // full load below.
        if let Ok(doc) = spec::yaml::parse(text) {
            if let Some(name) = doc.value.pointer("/spec/profile").and_then(|v| v.as_str()) {
                profiles.insert(name.to_owned());
            }
        }
    }
    if !profiles.is_empty() {
        let wanted: Vec<String> = profiles
            .iter()
            .flat_map(|n| [format!("profiles/{n}.yaml"), format!("profiles/{n}.yml")])
            .collect();
        let extra = repo.read_paths(rev, &wanted)?;
        files.files.extend(extra.files);
        files.problems.extend(extra.problems);
    }
    Ok(files)
}

/// `cacheflow diff`: what the change from `base` to `head` does, per cluster. Only the
/// files that changed are parsed, with the Settings and profiles they depend on; a change
/// to Settings or to a profile can touch every cluster, so then both sides are read whole.
pub fn diff(repo: &ConfigRepo, base: &str, head: &Revision) -> Result<ChangeSet, PipelineError> {
    let base_commit = repo.resolve(base)?;
    let (changed, head_commit) = match head {
        Revision::Rev(h) => {
            let head_commit = repo.resolve(h)?;
            (
                repo.changed_paths(&base_commit, &head_commit)?,
                Some(head_commit),
            )
        }
        Revision::Worktree => (repo.changed_paths_worktree(&base_commit)?, None),
    };
    if changed.is_empty() {
        // No change is "nothing to do" only in a config: not where there is none.
        let found = match &head_commit {
            Some(c) => {
                has_config(&repo.read_paths(c, &[SETTINGS.to_owned()])?)
                    || has_config(&repo.read_areas(c, &["clusters", "profiles", "policies"])?)
            }
            None => repo.repository().workdir().is_some_and(|w| {
                let root = w.join(repo.root());
                [SETTINGS, "clusters", "profiles", "policies"]
                    .iter()
                    .any(|p| root.join(p).exists())
            }),
        };
        if !found {
            return Err(PipelineError::Invalid {
                revision: head_commit
                    .as_deref()
                    .map(|c| format!("head {}", crate::pure::render::short(Some(c))))
                    .unwrap_or_else(|| "the working tree".to_owned()),
                diagnostics: vec![no_settings(repo, head_commit.as_deref())],
            });
        }
        return Ok(ChangeSet {
            base: Some(base_commit),
            head: head_commit,
            clusters: Vec::new(),
        });
    }
    let shared_changed = changed
        .iter()
        .any(|p| p == "cacheflow.yaml" || p.starts_with("profiles/"));
    let clusters = cluster_paths(&changed);
    let base_files = if shared_changed {
        repo.read_rev(&base_commit)?
    } else {
        read_for_diff(repo, &base_commit, &clusters)?
    };
    let head_files = match (head, &head_commit) {
        (Revision::Rev(_), Some(c)) if !shared_changed => read_for_diff(repo, c, &clusters)?,
        (Revision::Rev(_), Some(c)) => repo.read_rev(c)?,
        _ => repo.read_worktree()?,
    };
    let head_label = head_commit
        .as_deref()
        .map(|c| format!("head {}", crate::pure::render::short(Some(c))))
        .unwrap_or_else(|| "the working tree".to_owned());
    let head_state = load_or_invalid(repo, &head_files, &head_label, false)?;
    let base_state = load_or_invalid(
        repo,
        &base_files,
        &format!("base {}", crate::pure::render::short(Some(&base_commit))),
        true,
    )?;
    // With a partial read, only the clusters whose files changed are compared (a working
    // tree is read whole, so the filter matters there).
    let names: BTreeSet<String> = base_state
        .clusters
        .values()
        .chain(head_state.clusters.values())
        .filter(|c| shared_changed || changed.contains(&c.file))
        .map(|c| c.name.clone())
        .collect();
    Ok(diff::diff(&base_state, &head_state, Some(&names)))
}

/// Where `plan` takes the live state from.
pub enum LiveSource<'a> {
    /// A snapshot file (`--live FILE`).
    File(&'a Path),
    /// Straight from the nodes (`--direct`).
    Direct(SnapshotOptions),
}

/// Read and validate a revision; an invalid one is an error listing its diagnostics.
pub fn desired(repo: &ConfigRepo, rev: &Revision) -> Result<Desired, PipelineError> {
    let files = read(repo, rev)?;
    let label = files
        .commit
        .as_deref()
        .map(|c| format!("revision {}", crate::pure::render::short(Some(c))))
        .unwrap_or_else(|| "the working tree".to_owned());
    load_or_invalid(repo, &files, &label, false)
}

/// `cacheflow plan`: the desired state at `rev` against a snapshot file or the nodes.
pub fn plan(repo: &ConfigRepo, rev: &Revision, live: LiveSource) -> Result<Plan, PipelineError> {
    let desired = desired(repo, rev)?;
    let live = match live {
        LiveSource::File(path) => crate::edges::live_file::read(path)?,
        LiveSource::Direct(options) => read_fleet(&desired, None, options, true)?,
    };
    Ok(plan::plan(&desired, &live))
}

/// `cacheflow drift`: the declared state at `rev` against a reading of the nodes.
pub fn drift(
    repo: &ConfigRepo,
    rev: &Revision,
    live: LiveSource,
) -> Result<crate::pure::drift::DriftReport, PipelineError> {
    let desired = desired(repo, rev)?;
    let live = match live {
        LiveSource::File(path) => crate::edges::live_file::read(path)?,
        LiveSource::Direct(options) => read_fleet(&desired, None, options, true)?,
    };
    let at = live
        .taken_at
        .clone()
        .unwrap_or_else(crate::edges::nodes::fleet::now_rfc3339);
    Ok(crate::pure::drift::compute(&desired, &live, &at))
}

/// The driver that reaches `node` of `cluster` directly.
pub fn driver_for(cluster: &Cluster, node: &Node, timeout: Duration) -> Arc<dyn NodeDriver> {
    match cluster.engine {
        Engine::Redis => Arc::new(
            RedisDriver::new(&node.address, cluster.auth.as_ref(), timeout)
                .with_tls(cluster.tls.clone()),
        ),
        Engine::Memcached => Arc::new(
            MemcachedDriver::new(node.address.clone())
                .with_timeout(timeout)
                .with_auth(cluster.auth.clone())
                .with_tls(cluster.tls.clone()),
        ),
    }
}

/// `cacheflow snapshot`: read every declared node (of one cluster, or all) straight from
/// the nodes, concurrently. Unreachable nodes are in the result, marked so.
pub fn snapshot(
    desired: &Desired,
    cluster: Option<&str>,
    options: SnapshotOptions,
) -> Result<LiveState, PipelineError> {
    read_fleet(desired, cluster, options, false)
}

/// Read the declared nodes; with `declared_only`, keep of each node only the parameters
/// its cluster declares (all a plan looks at), so a plan of 10,000 real nodes does not
/// hold 190 parameters of each in memory.
fn read_fleet(
    desired: &Desired,
    cluster: Option<&str>,
    options: SnapshotOptions,
    declared_only: bool,
) -> Result<LiveState, PipelineError> {
    if let Some(name) = cluster {
        if !desired.clusters.contains_key(name) {
            return Err(PipelineError::UnknownCluster(name.to_owned()));
        }
    }
    let missing = missing_secrets(
        desired
            .clusters
            .values()
            .filter(|c| cluster.is_none_or(|name| c.name == name)),
        false,
    );
    if !missing.is_empty() {
        return Err(PipelineError::MissingSecrets(missing));
    }
    let targets: Vec<Target> = desired
        .clusters
        .values()
        .filter(|c| cluster.is_none_or(|name| c.name == name))
        .flat_map(|c| {
            let keep = declared_only.then(|| Arc::new(c.parameters.keys().cloned().collect()));
            c.nodes.iter().map(move |n| Target {
                keep: keep.clone(),
                ..Target::new(
                    n.id.clone(),
                    c.name.clone(),
                    driver_for(c, n, options.timeout),
                )
            })
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(PipelineError::Runtime)?;
    let sentinels: Vec<(String, Sentinel)> = desired
        .clusters
        .values()
        .filter(|c| cluster.is_none_or(|name| c.name == name))
        .filter_map(|c| Some((c.name.clone(), c.sentinel.clone()?)))
        .collect();
    let timeout = options.timeout;
    Ok(runtime.block_on(async move {
        let mut live = fleet::snapshot(targets, options).await;
        // The Sentinels name the primary of the clusters that have them.
        for (name, s) in sentinels {
            let answers = crate::edges::nodes::sentinel::ask(&s, timeout).await;
            live.sentinels.insert(name, answers);
        }
        live
    }))
}
