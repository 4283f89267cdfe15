//! Git as the audit log. Every reconciler input that changed something (or burst of
//! inputs taken together) is one commit on `refs/cacheflow/journal`
//! whose tree holds the reconciler's state (what it resumes from after a crash):
//!
//! ```text
//! refs/cacheflow/journal ── commit "cache-main: batch 1 of 3 assigned 1a2b3c…: r1"
//!                             tree: state.json           head revision, generation
//!                                   clusters/<name>.json one per cluster: rollout,
//!                                                        assignments, refusal
//! refs/notes/cacheflow   ── a note per config commit, one line per cluster:
//!                             "cache-main: completed 2026-11-21T14:02:11Z: reached 6 node(s): …"
//! ```
//!
//! A commit and its ref update are one step: the ref moves only if it still points at
//! the entry this process wrote last (compare and swap), so two reconcilers on one
//! state directory cannot interleave, and a crash leaves the journal at the last whole
//! entry. `git log refs/cacheflow/journal` reads the events; `git log --notes=cacheflow`
//! shows each config change with what became of it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use git2::{Oid, Repository, Signature};

use crate::reconciler::{ClusterState, State};

pub const JOURNAL_REF: &str = "refs/cacheflow/journal";
pub const NOTES_REF: &str = "refs/notes/cacheflow";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log in {path}: {source}")]
    Git {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("journal entry {commit}: {what} is not a readable state: {message}")]
    BadState {
        commit: String,
        what: String,
        message: String,
    },
    #[error("the journal moved under this reconciler (now at {found}, expected {expected}): is another cacheflow serving the same state directory?")]
    Moved { expected: String, found: String },
}

/// One journal entry, for `history` and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub commit: String,
    pub time: i64,
    pub author: String,
    pub message: String,
}

pub struct Journal {
    repo: Repository,
    /// The entry this process wrote or read last.
    head: Option<Oid>,
    who: String,
    /// The blob last written per cluster file: most entries change one cluster, and
    /// writing every cluster's blob again (zlib, a loose object file each) made each
    /// entry cost as much as the whole fleet.
    written: std::collections::HashMap<String, Oid>,
}

impl Journal {
    /// Open the journal of the repository at `path` (bare or not).
    pub fn open(path: &Path) -> Result<Journal, AuditError> {
        let repo = Repository::open(path).map_err(|source| AuditError::Git {
            path: path.display().to_string(),
            source,
        })?;
        let head = repo.refname_to_id(JOURNAL_REF).ok();
        Ok(Journal {
            written: std::collections::HashMap::new(),
            repo,
            head,
            who: "cacheflow".to_owned(),
        })
    }

    fn git(&self, source: git2::Error) -> AuditError {
        AuditError::Git {
            path: self.repo.path().display().to_string(),
            source,
        }
    }

    /// The state of the last entry, or `None` for an empty journal.
    pub fn load(&self) -> Result<Option<State>, AuditError> {
        let Some(head) = self.head else {
            return Ok(None);
        };
        let commit = self.repo.find_commit(head).map_err(|e| self.git(e))?;
        let tree = commit.tree().map_err(|e| self.git(e))?;
        let bad = |what: &str, message: String| AuditError::BadState {
            commit: head.to_string(),
            what: what.to_owned(),
            message,
        };
        let read = |path: &str| -> Result<Vec<u8>, AuditError> {
            let entry = tree
                .get_path(Path::new(path))
                .map_err(|e| bad(path, e.message().to_owned()))?;
            let blob = self
                .repo
                .find_blob(entry.id())
                .map_err(|e| bad(path, e.message().to_owned()))?;
            Ok(blob.content().to_vec())
        };
        let mut state: State = serde_json::from_slice(&read("state.json")?)
            .map_err(|e| bad("state.json", e.to_string()))?;
        if let Ok(entry) = tree.get_path(Path::new("clusters")) {
            let sub = self
                .repo
                .find_tree(entry.id())
                .map_err(|e| bad("clusters", e.message().to_owned()))?;
            for e in sub.iter() {
                let Ok(file) = e.name() else { continue };
                let Some(name) = file.strip_suffix(".json") else {
                    continue;
                };
                let path = format!("clusters/{file}");
                let cs: ClusterState = serde_json::from_slice(&read(&path)?)
                    .map_err(|err| bad(&path, err.to_string()))?;
                state.clusters.insert(name.to_owned(), cs);
            }
        }
        Ok(Some(state))
    }

    /// Append one entry: `message` with `state` as its tree. Returns the entry's id.
    pub fn append(&mut self, message: &str, state: &State) -> Result<Oid, AuditError> {
        self.append_changed(message, state, None)
    }

    /// [`append`](Journal::append), serialising only the clusters in `changed` (all when
    /// `None`); the others keep the file this journal wrote for them last. The caller
    /// must name every cluster it changed since its previous entry.
    pub fn append_changed(
        &mut self,
        message: &str,
        state: &State,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<Oid, AuditError> {
        let repo = &self.repo;
        let git = |e| AuditError::Git {
            path: repo.path().display().to_string(),
            source: e,
        };
        // The top file without the clusters (not a clone of the whole state).
        let top = State {
            version: state.version,
            head: state.head.clone(),
            generation: state.generation,
            clusters: BTreeMap::new(),
            windows: state.windows.clone(),
        };
        let top_blob = repo.blob(&to_json(&top)).map_err(git)?;
        let mut clusters = repo.treebuilder(None).map_err(git)?;
        for (name, cs) in &state.clusters {
            let unchanged = changed.is_some_and(|c| !c.contains(name));
            if let (true, Some(&blob)) = (unchanged, self.written.get(name)) {
                // Tests run debug builds: a change the caller did not name fails there.
                debug_assert_eq!(
                    Oid::hash_object(git2::ObjectType::Blob, &to_json(cs)).ok(),
                    Some(blob),
                    "cluster {name} changed but was not named as changed"
                );
                clusters
                    .insert(format!("{name}.json"), blob, 0o100644)
                    .map_err(git)?;
                continue;
            }
            // Named as changed (or not known yet): git skips writing a blob it has.
            let blob = repo.blob(&to_json(cs)).map_err(git)?;
            self.written.insert(name.clone(), blob);
            clusters
                .insert(format!("{name}.json"), blob, 0o100644)
                .map_err(git)?;
        }
        let clusters = clusters.write().map_err(git)?;
        let mut root = repo.treebuilder(None).map_err(git)?;
        root.insert("state.json", top_blob, 0o100644).map_err(git)?;
        root.insert("clusters", clusters, 0o040000).map_err(git)?;
        let tree = repo.find_tree(root.write().map_err(git)?).map_err(git)?;
        let sig = Signature::now(&self.who, "cacheflow@localhost").map_err(git)?;
        let parent = match self.head {
            Some(h) => Some(repo.find_commit(h).map_err(git)?),
            None => None,
        };
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let message = if message.ends_with('\n') {
            message.to_owned()
        } else {
            format!("{message}\n")
        };
        let oid = repo
            .commit(None, &sig, &sig, &message, &tree, &parents)
            .map_err(git)?;
        // Compare and swap: only from the entry this process knows.
        let result = match self.head {
            Some(old) => repo.reference_matching(JOURNAL_REF, oid, true, old, "cacheflow journal"),
            None => repo.reference(JOURNAL_REF, oid, false, "cacheflow journal"),
        };
        if let Err(e) = result {
            let found = repo
                .refname_to_id(JOURNAL_REF)
                .map(|o| o.to_string())
                .unwrap_or_else(|_| "nothing".into());
            if found != oid.to_string() {
                return Err(AuditError::Moved {
                    expected: self
                        .head
                        .map(|o| o.to_string())
                        .unwrap_or_else(|| "nothing".into()),
                    found: format!("{found} ({})", e.message()),
                });
            }
        }
        self.head = Some(oid);
        Ok(oid)
    }

    /// Set `cluster`'s line of the note on config commit `revision`.
    pub fn note(&self, revision: &str, cluster: &str, text: &str) -> Result<(), AuditError> {
        let repo = &self.repo;
        let git = |e| AuditError::Git {
            path: repo.path().display().to_string(),
            source: e,
        };
        let Ok(oid) = Oid::from_str(revision) else {
            return Ok(()); // a working tree or a label: nothing to note on
        };
        if repo.find_commit(oid).is_err() {
            return Ok(());
        }
        let old = repo
            .find_note(Some(NOTES_REF), oid)
            .ok()
            .and_then(|n| n.message().ok().map(str::to_owned))
            .unwrap_or_default();
        let prefix = format!("{cluster}: ");
        let mut lines: Vec<String> = old
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{prefix}{text}"));
        lines.sort();
        let sig = Signature::now(&self.who, "cacheflow@localhost").map_err(git)?;
        repo.note(&sig, &sig, Some(NOTES_REF), oid, &lines.join("\n"), true)
            .map_err(git)?;
        Ok(())
    }

    /// The note on a config commit, if any.
    pub fn read_note(&self, revision: &str) -> Option<String> {
        let oid = Oid::from_str(revision).ok()?;
        let note = self.repo.find_note(Some(NOTES_REF), oid).ok()?;
        note.message().ok().map(str::to_owned)
    }

    /// Every entry, newest first.
    pub fn entries(&self) -> Result<Vec<Entry>, AuditError> {
        let Some(head) = self.head else {
            return Ok(Vec::new());
        };
        let mut walk = self.repo.revwalk().map_err(|e| self.git(e))?;
        walk.push(head).map_err(|e| self.git(e))?;
        let mut out = Vec::new();
        for oid in walk {
            let oid = oid.map_err(|e| self.git(e))?;
            let c = self.repo.find_commit(oid).map_err(|e| self.git(e))?;
            out.push(Entry {
                commit: oid.to_string(),
                time: c.time().seconds(),
                author: c.author().name().unwrap_or("").to_owned(),
                message: c.message().unwrap_or("").trim_end().to_owned(),
            });
        }
        Ok(out)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconciler::Target;

    #[test]
    fn entries_chain_and_the_state_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.load().unwrap(), None);
        let mut state = State {
            version: 1,
            head: Some("abc".into()),
            generation: 7,
            ..State::default()
        };
        state.clusters.insert(
            "cache-main".into(),
            ClusterState {
                target: Some(Target {
                    revision: "abc".into(),
                    digest: "d".into(),
                    parameters: BTreeMap::from([("hz".into(), "20".into())]),
                }),
                ..ClusterState::default()
            },
        );
        j.append("first", &state).unwrap();
        state.generation = 8;
        j.append("second\nwith a body", &state).unwrap();
        let again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(state));
        let entries: Vec<String> = again
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(entries, vec!["second\nwith a body", "first"]);
    }

    #[test]
    fn a_journal_moved_by_someone_else_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut a = Journal::open(dir.path()).unwrap();
        a.append("a1", &State::default()).unwrap();
        let mut b = Journal::open(dir.path()).unwrap();
        b.append("b1", &State::default()).unwrap();
        let err = a.append("a2", &State::default()).unwrap_err();
        assert!(matches!(err, AuditError::Moved { .. }), "{err}");
    }
}
