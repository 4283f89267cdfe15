//! `cacheflow history`: one timeline of the config repository's commits (author, message,
//! the parameters each changed per cluster) beside what the reconciler noted on them
//! (`refs/notes/cacheflow`: completed, rolled back and why, refused).
//!
//! Reads the first-parent history of a revision; commits that touch no cacheflow file
//! are left out. A commit whose own tree is invalid is shown as such (it was never
//! applied); a valid commit after an invalid one shows what it changed since the last
//! valid commit before it (what was running when it came).

use serde::Serialize;

use crate::edges::audit::Journal;
use crate::edges::source::{ConfigRepo, SourceError};
use crate::flow::pipeline::{self, PipelineError, Revision};
use crate::pure::diff::{ChangeSet, ParamChange};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub commit: String,
    pub author: String,
    pub time: String,
    pub summary: String,
    /// Per cluster the commit changed: its parameter changes.
    pub clusters: Vec<ClusterChange>,
    /// Set when the commit does not validate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    /// When the parent does not validate: the last valid commit before this one, which
    /// `clusters` is measured from (absent: the parent; or no valid commit before it, and
    /// everything counts as new).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<String>,
    /// True when the parent does not validate (`compared_with` says from what).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_invalid: bool,
    /// The reconciler's note, one line per cluster.
    pub outcomes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterChange {
    pub cluster: String,
    pub parameters: Vec<ParamChange>,
}

pub struct HistoryOptions {
    pub rev: String,
    pub cluster: Option<String>,
    pub param: Option<String>,
    pub limit: usize,
}

/// The timeline, newest first.
pub fn history(
    repo: &ConfigRepo,
    options: &HistoryOptions,
) -> Result<Vec<HistoryEntry>, SourceError> {
    let git = repo.repository();
    let journal = Journal::open(git.path()).ok();
    let start = repo.resolve(&options.rev)?;
    let err = |e: git2::Error| SourceError::git(repo.name(), &e);
    let mut walk = git.revwalk().map_err(err)?;
    let oid = git2::Oid::from_str(&start).map_err(err)?;
    walk.simplify_first_parent().map_err(err)?;
    walk.push(oid).map_err(err)?;
    let mut out = Vec::new();
    for oid in walk {
        if out.len() >= options.limit {
            break;
        }
        let Ok(oid) = oid else { continue };
        let commit = oid.to_string();
        let Ok(c) = git.find_commit(oid) else {
            continue;
        };
        let parent = c.parent_id(0).ok().map(|p| p.to_string());
        let paths = match &parent {
            Some(p) => repo.changed_paths(p, &commit)?,
            // The first commit: everything in it is new.
            None => vec![String::new()],
        };
        if paths.is_empty() {
            continue;
        }
        let info = repo.commit_info(&commit)?;
        let mut entry = HistoryEntry {
            commit: commit.clone(),
            author: info.author_name,
            time: info.time,
            summary: info.summary,
            clusters: Vec::new(),
            invalid: None,
            compared_with: None,
            after_invalid: false,
            outcomes: journal
                .as_ref()
                .and_then(|j| j.read_note(&commit))
                .map(|n| n.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        let changes = match &parent {
            Some(p) => pipeline::diff(repo, p, &Revision::Rev(commit.clone())),
            None => from_nothing(repo, &commit),
        };
        let changes = match (changes, &parent) {
            // The parent does not validate but this commit does: what it changed is
            // measured from the last valid commit before it (what was running).
            (Err(e), Some(p)) => match pipeline::desired(repo, &Revision::Rev(commit.clone())) {
                Ok(_) => since_last_valid(repo, p, &commit).map(|(base, cs)| {
                    entry.after_invalid = true;
                    entry.compared_with = base;
                    cs
                }),
                Err(_) => Err(e),
            },
            (changes, _) => changes,
        };
        match changes {
            Ok(cs) => {
                entry.clusters = cs
                    .clusters
                    .into_iter()
                    .map(|c| ClusterChange {
                        cluster: c.cluster,
                        parameters: c.parameters,
                    })
                    .collect();
            }
            Err(e) => entry.invalid = Some(e.to_string()),
        }
        if let Some(name) = &options.cluster {
            entry.clusters.retain(|c| &c.cluster == name);
            entry
                .outcomes
                .retain(|l| l.starts_with(&format!("{name}: ")));
            if entry.clusters.is_empty() && entry.invalid.is_none() {
                continue;
            }
        }
        if let Some(param) = &options.param {
            for c in &mut entry.clusters {
                c.parameters.retain(|p| &p.name == param);
            }
            entry.clusters.retain(|c| !c.parameters.is_empty());
            if entry.clusters.is_empty() {
                continue;
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// Everything in `commit` as new (the first commit, or one with no valid commit
/// before it).
fn from_nothing(repo: &ConfigRepo, commit: &str) -> Result<ChangeSet, PipelineError> {
    pipeline::desired(repo, &Revision::Rev(commit.to_owned())).map(|d| {
        crate::pure::diff::diff(
            &crate::pure::spec::model::Desired {
                clusters: Default::default(),
                profiles: Default::default(),
                ..d.clone()
            },
            &d,
            None,
        )
    })
}

/// A valid `commit` whose parent is invalid: its changes since the last valid
/// first-parent ancestor (from nothing when there is none), and that ancestor.
fn since_last_valid(
    repo: &ConfigRepo,
    parent: &str,
    commit: &str,
) -> Result<(Option<String>, ChangeSet), PipelineError> {
    let git = repo.repository();
    let mut at = git2::Oid::from_str(parent).ok();
    while let Some(oid) = at {
        let id = oid.to_string();
        if pipeline::desired(repo, &Revision::Rev(id.clone())).is_ok() {
            let cs = pipeline::diff(repo, &id, &Revision::Rev(commit.to_owned()))?;
            return Ok((Some(id), cs));
        }
        at = git.find_commit(oid).ok().and_then(|c| c.parent_id(0).ok());
    }
    Ok((None, from_nothing(repo, commit)?))
}

/// What happened to a commit the notes say nothing (or not everything) of: invalid,
/// nothing to roll out (no parameter or node of any cluster changed, or only nodes and
/// rollout policy), or not rolled out (no cacheflow took it, or a later commit replaced
/// it before it started). `None` when every cluster it changed has a note line.
fn unnoted(e: &HistoryEntry) -> Option<String> {
    let noted = |cluster: &str| {
        e.outcomes
            .iter()
            .any(|o| o.starts_with(&format!("{cluster}: ")))
    };
    let changed: Vec<&str> = e
        .clusters
        .iter()
        .filter(|c| !c.parameters.is_empty())
        .map(|c| c.cluster.as_str())
        .collect();
    if !e.outcomes.is_empty() {
        // Noted for some clusters: say which of the others it changed got nothing.
        let missing: Vec<&str> = changed.into_iter().filter(|c| !noted(c)).collect();
        return (!missing.is_empty())
            .then(|| format!("{}: not rolled out (no note)", missing.join(", ")));
    }
    if e.invalid.is_some() {
        return Some("nothing rolled out: the commit does not validate".into());
    }
    if e.clusters.is_empty() {
        return Some("changed no cluster's parameters or nodes: nothing to roll out".into());
    }
    if changed.is_empty() {
        let names: Vec<&str> = e.clusters.iter().map(|c| c.cluster.as_str()).collect();
        return Some(format!(
            "changed no parameter, only the nodes or rollout policy of {}: no rollout noted",
            names.join(", ")
        ));
    }
    Some(format!(
        "changed {}: not rolled out (no note: no cacheflow took this commit, or a later one replaced it first)",
        changed.join(", ")
    ))
}

/// The timeline as text, one block per commit.
pub fn text(entries: &[HistoryEntry]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no config change in this history\n");
    }
    for e in entries {
        out.push_str(&format!(
            "{} {} {}: {}\n",
            crate::pure::render::short_id(&e.commit),
            e.time,
            e.author,
            e.summary
        ));
        if let Some(why) = &e.invalid {
            // A commit with an outcome was applied (by a cacheflow that took it): it
            // does not validate now, but "never applied" would be false.
            let what = if e.outcomes.is_empty() {
                "invalid, never applied"
            } else {
                "invalid now"
            };
            out.push_str(&format!("  {what}: {}\n", why.lines().next().unwrap_or("")));
        }
        if e.after_invalid {
            match &e.compared_with {
                Some(base) => out.push_str(&format!(
                    "  changes since {}, the last valid commit before it\n",
                    crate::pure::render::short_id(base)
                )),
                None => out.push_str("  no valid commit before it: everything is new\n"),
            }
        }
        for c in &e.clusters {
            let params: Vec<String> = c
                .parameters
                .iter()
                .map(|p| {
                    format!(
                        "{} {} → {}",
                        p.name,
                        p.old.as_deref().unwrap_or("(unset)"),
                        p.new.as_deref().unwrap_or("(unset)")
                    )
                })
                .collect();
            if params.is_empty() {
                out.push_str(&format!(
                    "  {}: nodes or rollout policy changed\n",
                    c.cluster
                ));
            } else {
                out.push_str(&format!("  {}: {}\n", c.cluster, params.join(", ")));
            }
        }
        for o in &e.outcomes {
            out.push_str(&format!("  ⇒ {o}\n"));
        }
        if let Some(what) = unnoted(e) {
            out.push_str(&format!("  outcome: {what}\n"));
        }
    }
    out
}
