//! Git as the audit log. Every reconciler input that changed something (or burst of
//! inputs taken together) is one commit on `refs/cacheflow/journal`
//! whose tree holds the reconciler's state (what it resumes from after a crash):
//!
//! ```text
//! refs/cacheflow/journal ── commit "cache-main: batch 1 of 3 assigned 1a2b3c…: r1"
//!                             tree: state.json           head revision, generation
//!                                   clusters/<name>.json one per cluster: rollout,
//!                                                        assignments, refusal
//! refs/notes/cacheflow   ── a note per config commit, one line per outcome, added
//!                             in order and never replaced:
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

use crate::pure::reconciler::state::{
    ClusterState, RolloutFixed, State, ROLLOUT_FILE_SUFFIX, STATE_VERSION,
};

pub const JOURNAL_REF: &str = "refs/cacheflow/journal";
pub const NOTES_REF: &str = "refs/notes/cacheflow";

/// Where one reconciler keeps its journal and its notes: the refs above for a single
/// reconciler (one `serve`, or `--shards 1`), a pair per shard under `--shards N`, so
/// the shards' leaders (in different processes) never write the same ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRefs {
    pub journal: String,
    pub notes: String,
}

impl Default for JournalRefs {
    fn default() -> JournalRefs {
        JournalRefs {
            journal: JOURNAL_REF.to_owned(),
            notes: NOTES_REF.to_owned(),
        }
    }
}

impl JournalRefs {
    /// Shard `shard` of `shards`: `refs/cacheflow/shards/<shard>/journal` and
    /// `refs/notes/cacheflow-shard-<shard>`; the default pair when `shards` is 1.
    pub fn shard(shard: u32, shards: u32) -> JournalRefs {
        if shards <= 1 {
            return JournalRefs::default();
        }
        JournalRefs {
            journal: format!("refs/cacheflow/shards/{shard}/journal"),
            notes: format!("{NOTES_REF}-shard-{shard}"),
        }
    }
}

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
    /// A journal written by a newer cacheflow: reading it as this build's format would
    /// drop what the newer one recorded, and the next entry would overwrite it.
    #[error("journal entry {commit}: state format version {found} is newer than this build reads (version {reads}): upgrade cacheflow")]
    NewerFormat {
        commit: String,
        found: u32,
        reads: u32,
    },
    /// The replicated journal (etcd) did not take the entry: this replica no longer
    /// leads, or etcd cannot be reached. Nothing of the entry went to Git either.
    #[error("the replicated journal did not take the entry: {0}")]
    Replicated(String),
    #[error("cannot start the journal writer: {0}")]
    Writer(String),
    #[error("the journal moved under this reconciler (now at {found}, expected {expected}): is another cacheflow serving the same state directory?")]
    Moved { expected: String, found: String },
    /// The journal's ref could not be updated though it is where this process left it
    /// (its lock file cannot be created: a full or read-only disk, a stale lock).
    #[error("cannot write the journal's ref {reference} (it is where this reconciler left it): {source}")]
    RefNotWritten {
        reference: String,
        #[source]
        source: git2::Error,
    },
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
    refs: JournalRefs,
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
        Journal::open_at(path, JournalRefs::default())
    }

    /// Open the journal kept at `refs` (one shard's) in the repository at `path`.
    pub fn open_at(path: &Path, refs: JournalRefs) -> Result<Journal, AuditError> {
        let repo = Repository::open(path).map_err(|source| AuditError::Git {
            path: path.display().to_string(),
            source,
        })?;
        let head = repo.refname_to_id(&refs.journal).ok();
        Ok(Journal {
            written: std::collections::HashMap::new(),
            repo,
            refs,
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

    /// The state of the last entry, or `None` for an empty journal. The clusters' files
    /// are remembered: a later entry that leaves a cluster unchanged reuses its file.
    pub fn load(&mut self) -> Result<Option<State>, AuditError> {
        let mut written = std::collections::HashMap::new();
        let state = self.load_into(&mut written)?;
        self.written = written;
        Ok(state)
    }

    fn load_into(
        &self,
        written: &mut std::collections::HashMap<String, Oid>,
    ) -> Result<Option<State>, AuditError> {
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
        let top = read("state.json")?;
        let mut files = BTreeMap::new();
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
                files.insert(name.to_owned(), read(&format!("clusters/{file}"))?);
                written.insert(name.to_owned(), e.id());
            }
        }
        state_from_files(&head.to_string(), &top, &files).map(Some)
    }

    /// Append one entry: `message` with the whole of `state` as its tree. Returns the
    /// entry's id.
    pub fn append(&mut self, message: &str, state: &State) -> Result<Oid, AuditError> {
        self.write(&Prepared::full(message, state))
    }

    /// Write a prepared entry (see [`EntryMaker`]): the clusters it carries get new
    /// files, the others keep the file this journal wrote or read for them last.
    pub fn write(&mut self, entry: &Prepared) -> Result<Oid, AuditError> {
        let repo = &self.repo;
        let git = |e| AuditError::Git {
            path: repo.path().display().to_string(),
            source: e,
        };
        let top_blob = repo.blob(&entry.top).map_err(git)?;
        let mut clusters = repo.treebuilder(None).map_err(git)?;
        for (name, file) in &entry.clusters {
            let blob = match file {
                // git skips writing a blob it already has.
                Some(json) => {
                    let blob = repo.blob(json).map_err(git)?;
                    self.written.insert(name.clone(), blob);
                    blob
                }
                None => *self.written.get(name).ok_or_else(|| AuditError::BadState {
                    commit: "(entry being written)".to_owned(),
                    what: format!("clusters/{name}.json"),
                    message: "named unchanged, but this journal never wrote or read it".to_owned(),
                })?,
            };
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
        let oid = repo
            .commit(None, &sig, &sig, &entry.message, &tree, &parents)
            .map_err(git)?;
        // Compare and swap: only from the entry this process knows.
        let result = match self.head {
            Some(old) => {
                repo.reference_matching(&self.refs.journal, oid, true, old, "cacheflow journal")
            }
            None => repo.reference(&self.refs.journal, oid, false, "cacheflow journal"),
        };
        if let Err(e) = result {
            let found = repo.refname_to_id(&self.refs.journal).ok();
            if found == self.head {
                return Err(AuditError::RefNotWritten {
                    reference: self.refs.journal.clone(),
                    source: e,
                });
            }
            if found != Some(oid) {
                let name = |o: Option<Oid>| o.map_or_else(|| "nothing".into(), |o| o.to_string());
                return Err(AuditError::Moved {
                    expected: name(self.head),
                    found: format!("{} ({})", name(found), e.message()),
                });
            }
        }
        self.head = Some(oid);
        Ok(oid)
    }

    /// Add `cluster`'s line `text` to the note on config commit `revision`. Lines are
    /// only added, never replaced: a second outcome of one commit (a node that joined
    /// later) goes after the first; the same line twice is written once.
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
            .find_note(Some(&self.refs.notes), oid)
            .ok()
            .and_then(|n| n.message().ok().map(str::to_owned))
            .unwrap_or_default();
        let line = format!("{cluster}: {text}");
        let mut lines: Vec<&str> = old.lines().filter(|l| !l.is_empty()).collect();
        if lines.contains(&line.as_str()) {
            return Ok(());
        }
        lines.push(&line);
        let sig = Signature::now(&self.who, "cacheflow@localhost").map_err(git)?;
        repo.note(
            &sig,
            &sig,
            Some(&self.refs.notes),
            oid,
            &lines.join("\n"),
            true,
        )
        .map_err(git)?;
        Ok(())
    }

    /// The note on a config commit, if any: this journal's own notes, then every
    /// shard's (`refs/notes/cacheflow-shard-*`, in shard order), so `history` shows each
    /// outcome whichever leader wrote it.
    pub fn read_note(&self, revision: &str) -> Option<String> {
        let oid = Oid::from_str(revision).ok()?;
        let mut refs = vec![self.refs.notes.clone()];
        let mut shards: Vec<(u32, String)> = self
            .repo
            .references_glob(&format!("{NOTES_REF}-shard-*"))
            .ok()?
            .flatten()
            .filter_map(|r| {
                let name = r.name().ok()?.to_owned();
                let n = name.rsplit('-').next()?.parse().ok()?;
                Some((n, name))
            })
            .collect();
        shards.sort();
        refs.extend(shards.into_iter().map(|(_, name)| name));
        refs.dedup();
        let text: Vec<String> = refs
            .iter()
            .filter_map(|r| self.repo.find_note(Some(r), oid).ok())
            .filter_map(|n| n.message().ok().map(|m| m.trim_end().to_owned()))
            .filter(|m| !m.is_empty())
            .collect();
        (!text.is_empty()).then(|| text.join("\n"))
    }

    /// The message of the last entry, if any.
    pub fn head_message(&self) -> Option<String> {
        let head = self.head?;
        let commit = self.repo.find_commit(head).ok()?;
        commit.message().ok().map(str::to_owned)
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

/// One journal entry, serialised on the reconciler's side and written by
/// [`Journal::write`] (possibly on another thread, possibly merged with the entries
/// made while the previous write was in progress).
#[derive(Debug, Clone)]
pub struct Prepared {
    message: String,
    /// `state.json`: the state without its clusters.
    top: Vec<u8>,
    /// Every cluster of the state, with its file when it changed since the previous
    /// entry (`None`: the file written or read for it last still holds).
    clusters: BTreeMap<String, Option<Vec<u8>>>,
}

impl Prepared {
    /// An entry carrying every cluster's file.
    pub fn full(message: &str, state: &State) -> Prepared {
        Prepared {
            message: with_newline(message),
            top: top_json(state),
            clusters: state
                .clusters
                .iter()
                .flat_map(|(name, cs)| {
                    let fixed = cs
                        .rollout
                        .as_ref()
                        .map(|r| (rollout_file(name), Some(entry_json(&*r.fixed))));
                    std::iter::once((name.clone(), Some(entry_json(cs)))).chain(fixed)
                })
                .collect(),
        }
    }

    /// Fold `later` (made after `self`) into one entry: both messages, `later`'s
    /// state; a cluster `later` left unchanged keeps the file `self` carried for it.
    pub fn merge(&mut self, later: Prepared) {
        self.message.push_str(&later.message);
        self.top = later.top;
        let mut earlier = std::mem::take(&mut self.clusters);
        self.clusters = later
            .clusters
            .into_iter()
            .map(|(name, file)| {
                let file = file.or_else(|| earlier.remove(&name).flatten());
                (name, file)
            })
            .collect();
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// `state.json`'s bytes.
    pub fn top(&self) -> &[u8] {
        &self.top
    }

    /// Every cluster, with its file when it changed.
    pub fn clusters(&self) -> &BTreeMap<String, Option<Vec<u8>>> {
        &self.clusters
    }

    /// End the message with a trailer line (`Cacheflow-Entry: 12`).
    pub fn add_trailer(&mut self, line: &str) {
        self.message.push('\n');
        self.message.push_str(line);
        self.message.push('\n');
    }
}

/// The trailer naming an entry's number in the replicated journal.
pub const ENTRY_TRAILER: &str = "Cacheflow-Entry: ";

/// The number of the replicated journal's entry a Git journal message carries, if any.
pub fn entry_number(message: &str) -> Option<u64> {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(ENTRY_TRAILER))
        .and_then(|n| n.trim().parse().ok())
}

/// A state from its files (`state.json` and the files of `clusters/`, by name without
/// `.json`), as the Git and the replicated journals keep them; `what` names where they
/// came from in errors.
pub fn state_from_files(
    what: &str,
    top: &[u8],
    clusters: &BTreeMap<String, Vec<u8>>,
) -> Result<State, AuditError> {
    let bad = |file: &str, message: String| AuditError::BadState {
        commit: what.to_owned(),
        what: file.to_owned(),
        message,
    };
    // The version first: a newer format need not parse as this one.
    let version = files_version(top);
    if version > STATE_VERSION {
        return Err(AuditError::NewerFormat {
            commit: what.to_owned(),
            found: version,
            reads: STATE_VERSION,
        });
    }
    let mut state: State =
        serde_json::from_slice(top).map_err(|e| bad("state.json", e.to_string()))?;
    let mut fixed = BTreeMap::new();
    for (name, json) in clusters {
        parse_file(&mut state, &mut fixed, name, json)
            .map_err(|e| bad(&format!("clusters/{name}.json"), e.to_string()))?;
    }
    attach_fixed(&mut state, fixed);
    Ok(state)
}

/// The format version `state.json` names (0 when it names none).
pub fn files_version(top: &[u8]) -> u32 {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        version: u32,
    }
    serde_json::from_slice::<Version>(top).map_or(0, |v| v.version)
}

/// The key of a cluster's rollout file among the cluster files (`<name>.rollout`).
pub fn rollout_file(cluster: &str) -> String {
    format!("{cluster}{ROLLOUT_FILE_SUFFIX}")
}

/// One file of `clusters/`: a cluster's state into `state`, or a rollout's fixed part
/// into `fixed`, by cluster.
fn parse_file(
    state: &mut State,
    fixed: &mut BTreeMap<String, RolloutFixed>,
    name: &str,
    json: &[u8],
) -> Result<(), serde_json::Error> {
    match name.strip_suffix(ROLLOUT_FILE_SUFFIX) {
        Some(cluster) => {
            fixed.insert(cluster.to_owned(), serde_json::from_slice(json)?);
        }
        None => {
            let cs: ClusterState = serde_json::from_slice(json)?;
            state.clusters.insert(name.to_owned(), cs);
        }
    }
    Ok(())
}

/// Each rollout's fixed part into its record (one read from a version 1 cluster file,
/// which held it inline, has no file of its own).
fn attach_fixed(state: &mut State, fixed: BTreeMap<String, RolloutFixed>) {
    for (cluster, f) in fixed {
        if let Some(rec) = state
            .clusters
            .get_mut(&cluster)
            .and_then(|c| c.rollout.as_mut())
        {
            rec.fixed = std::sync::Arc::new(f);
        }
    }
}

/// Serialises the reconciler's state into [`Prepared`] entries: only the clusters the
/// reconciler names as changed since the previous entry, plus any it never serialised
/// (entries otherwise cost as much as the whole fleet: a 100-node cluster's file is
/// about 80 KB of compact JSON). Debug builds check that every other cluster really is
/// unchanged.
#[derive(Debug, Default)]
pub struct EntryMaker {
    /// Clusters serialised (or loaded) before, with the id of that file in debug builds.
    known: std::collections::HashMap<String, Option<Oid>>,
    /// Each rollout's fixed part as its file was last written (or loaded): a record
    /// holding another (a new rollout) gets its file written again.
    fixed: std::collections::HashMap<String, std::sync::Arc<RolloutFixed>>,
}

impl EntryMaker {
    /// After [`Journal::load`] of `state`: its clusters' files are in the journal.
    pub fn loaded(state: &State) -> EntryMaker {
        // Before version 2 the fixed parts were inside the cluster files: none has a
        // file of its own yet.
        let files = state.version >= 2;
        EntryMaker {
            known: state
                .clusters
                .iter()
                .map(|(name, cs)| (name.clone(), debug_id(cs)))
                .collect(),
            fixed: state
                .clusters
                .iter()
                .filter(|_| files)
                .filter_map(|(name, cs)| Some((name.clone(), cs.rollout.as_ref()?.fixed.clone())))
                .collect(),
        }
    }

    pub fn prepare(
        &mut self,
        message: &str,
        state: &State,
        changed: &BTreeSet<String>,
    ) -> Prepared {
        let mut clusters = BTreeMap::new();
        for (name, cs) in &state.clusters {
            let file = match self.known.get(name) {
                Some(id) if !changed.contains(name) => {
                    // Tests run debug builds: a change the caller did not name fails there.
                    debug_assert_eq!(
                        *id,
                        debug_id(cs),
                        "cluster {name} changed but was not named as changed"
                    );
                    None
                }
                _ => {
                    let json = entry_json(cs);
                    let id = if cfg!(debug_assertions) {
                        Oid::hash_object(git2::ObjectType::Blob, &json).ok()
                    } else {
                        None
                    };
                    self.known.insert(name.clone(), id);
                    Some(json)
                }
            };
            clusters.insert(name.clone(), file);
            match &cs.rollout {
                Some(rec) => {
                    let same = self
                        .fixed
                        .get(name)
                        .is_some_and(|f| std::sync::Arc::ptr_eq(f, &rec.fixed));
                    let file = match same {
                        true => None,
                        false => {
                            self.fixed.insert(name.clone(), rec.fixed.clone());
                            Some(entry_json(&*rec.fixed))
                        }
                    };
                    clusters.insert(rollout_file(name), file);
                }
                None => {
                    self.fixed.remove(name);
                }
            }
        }
        self.known
            .retain(|name, _| state.clusters.contains_key(name));
        self.fixed
            .retain(|name, _| state.clusters.contains_key(name));
        Prepared {
            message: with_newline(message),
            top: top_json(state),
            clusters,
        }
    }
}

/// The id of a cluster's file, computed in debug builds only (for the check above).
fn debug_id(cs: &ClusterState) -> Option<Oid> {
    if cfg!(debug_assertions) {
        Oid::hash_object(git2::ObjectType::Blob, &entry_json(cs)).ok()
    } else {
        None
    }
}

/// The top file without the clusters (not a clone of the whole state).
fn top_json(state: &State) -> Vec<u8> {
    entry_json(&State {
        version: state.version,
        head: state.head.clone(),
        generation: state.generation,
        clusters: BTreeMap::new(),
        windows: state.windows.clone(),
    })
}

fn with_newline(message: &str) -> String {
    if message.ends_with('\n') {
        message.to_owned()
    } else {
        format!("{message}\n")
    }
}

/// The encoding of every file of an entry's tree, in one place: compact JSON (no
/// indentation; a 100-node cluster's file is about half the size indented, and its
/// hashing and compression are paid on every entry that changes the cluster). Entries
/// written indented by earlier versions read the same (`load` parses either).
pub fn entry_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Plain data with string keys: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod replicated_tests {
    use super::*;

    #[test]
    fn the_entry_number_is_the_last_trailer_of_a_message() {
        let mut e = Prepared::full("cache: batch 1 of 4 assigned", &State::default());
        assert_eq!(entry_number(e.message()), None);
        e.add_trailer(&format!("{ENTRY_TRAILER}17"));
        assert_eq!(entry_number(e.message()), Some(17));
        assert!(e.message().starts_with("cache: batch 1 of 4 assigned\n"));
    }

    #[test]
    fn a_state_read_back_from_its_files_is_the_state_written() {
        let mut state = State {
            head: Some("abc".into()),
            generation: 3,
            ..State::default()
        };
        state.clusters.insert(
            "cache".into(),
            ClusterState {
                declared: vec!["n1".into()],
                ..ClusterState::default()
            },
        );
        let e = Prepared::full("x", &state);
        let files: BTreeMap<String, Vec<u8>> = e
            .clusters()
            .iter()
            .map(|(n, f)| (n.clone(), f.clone().unwrap_or_default()))
            .collect();
        assert_eq!(state_from_files("etcd", e.top(), &files).unwrap(), state);
        let newer = br#"{"version": 99}"#;
        assert!(matches!(
            state_from_files("etcd", newer, &BTreeMap::new()),
            Err(AuditError::NewerFormat { found: 99, .. })
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::reconciler::state::Target;

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
        let mut again = Journal::open(dir.path()).unwrap();
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
    fn a_journal_in_a_newer_format_is_refused_not_read_as_this_one() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let state = State {
            version: 99,
            generation: 3,
            ..State::default()
        };
        j.append("from the future", &state).unwrap();
        let err = Journal::open(dir.path()).unwrap().load().unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::NewerFormat {
                    found: 99,
                    reads: STATE_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("version 99"), "{text}");
        assert!(text.contains(&format!("version {STATE_VERSION}")), "{text}");
        assert!(text.contains("upgrade cacheflow"), "{text}");

        // This build's version and older ones still load.
        for version in [0, STATE_VERSION] {
            let dir = tempfile::tempdir().unwrap();
            Repository::init_bare(dir.path()).unwrap();
            let state = State {
                version,
                ..State::default()
            };
            Journal::open(dir.path())
                .unwrap()
                .append("now", &state)
                .unwrap();
            let loaded = Journal::open(dir.path()).unwrap().load().unwrap();
            assert_eq!(loaded, Some(state));
        }
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

    #[test]
    fn entries_are_compact_json_and_indented_ones_still_read() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut state = State {
            version: STATE_VERSION,
            head: Some("abc".into()),
            generation: 2,
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
                declared: vec!["a1".into()],
                ..ClusterState::default()
            },
        );
        // An entry as earlier versions wrote it: indented.
        let indented = Prepared {
            message: "indented\n".into(),
            top: serde_json::to_vec_pretty(&State {
                clusters: BTreeMap::new(),
                ..state.clone()
            })
            .unwrap(),
            clusters: state
                .clusters
                .iter()
                .map(|(n, cs)| (n.clone(), Some(serde_json::to_vec_pretty(cs).unwrap())))
                .collect(),
        };
        let mut j = Journal::open(dir.path()).unwrap();
        j.write(&indented).unwrap();
        let mut again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(state.clone()));

        // The next entry is compact, and reads back the same.
        state.generation = 3;
        again.append("compact", &state).unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        let tree = repo
            .find_commit(repo.refname_to_id(JOURNAL_REF).unwrap())
            .unwrap()
            .tree()
            .unwrap();
        for path in ["state.json", "clusters/cache-main.json"] {
            let id = tree.get_path(Path::new(path)).unwrap().id();
            let blob = repo.find_blob(id).unwrap();
            let text = std::str::from_utf8(blob.content()).unwrap();
            assert!(
                !text.contains('\n') && !text.contains("  "),
                "{path}: {text}"
            );
        }
        assert_eq!(
            Journal::open(dir.path()).unwrap().load().unwrap(),
            Some(state)
        );
    }

    #[test]
    fn a_journal_ref_that_cannot_be_locked_is_not_reported_as_moved() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut a = Journal::open(dir.path()).unwrap();
        a.append("a1", &State::default()).unwrap();
        let lock = dir.path().join("refs/cacheflow/journal.lock");
        std::fs::create_dir_all(&lock).unwrap();
        let err = a.append("a2", &State::default()).unwrap_err();
        assert!(matches!(err, AuditError::RefNotWritten { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("journal.lock"), "{text}");
        assert!(!text.contains("moved"), "{text}");
        // Released, the next entry goes on from where this one left it.
        std::fs::remove_dir(&lock).unwrap();
        a.append("a2", &State::default()).unwrap();
    }

    #[test]
    fn a_note_is_only_added_to_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let sig = Signature::now("t", "t@example.com").unwrap();
        let tree = repo.find_tree(repo.treebuilder(None).unwrap().write().unwrap());
        let commit = repo
            .commit(None, &sig, &sig, "config", &tree.unwrap(), &[])
            .unwrap()
            .to_string();
        let j = Journal::open(dir.path()).unwrap();
        j.note(
            &commit,
            "cache",
            "completed T1: reached 3 node(s): a1, a2, b1",
        )
        .unwrap();
        j.note(&commit, "cache", "completed T2: reached 1 node(s): c1")
            .unwrap();
        j.note(&commit, "other", "completed T2: reached 1 node(s): o1")
            .unwrap();
        // The same line again (an effect carried out twice) is written once.
        j.note(&commit, "cache", "completed T2: reached 1 node(s): c1")
            .unwrap();
        assert_eq!(
            j.read_note(&commit).unwrap(),
            "cache: completed T1: reached 3 node(s): a1, a2, b1\n\
             cache: completed T2: reached 1 node(s): c1\n\
             other: completed T2: reached 1 node(s): o1"
        );
    }

    fn cluster(hz: &str) -> ClusterState {
        ClusterState {
            target: Some(Target {
                revision: "abc".into(),
                digest: "d".into(),
                parameters: BTreeMap::from([("hz".into(), hz.into())]),
            }),
            ..ClusterState::default()
        }
    }

    /// A cluster rolling out `revision`, its fixed part naming `node`.
    fn rolling_out(revision: &str, node: &str) -> ClusterState {
        use crate::pure::reconciler::state::RolloutRecord;
        use crate::pure::rollout::{Rollout, RolloutSpec};
        use crate::pure::spec::model::OnFailure;
        let spec = RolloutSpec {
            cluster: "c".into(),
            revision: revision.into(),
            previous: None,
            batches: vec![vec![node.to_owned()]],
            bake_ms: 0,
            apply_timeout_ms: 1000,
            on_failure: OnFailure::Rollback,
            restarting: Default::default(),
            warmup_ms: 0,
            failovers: Default::default(),
            on_primary_restart: Default::default(),
            failover_timeout_ms: 0,
        };
        let restore = BTreeMap::from([(
            node.to_owned(),
            BTreeMap::from([("hz".to_owned(), "10".to_owned())]),
        )]);
        ClusterState {
            rollout: Some(RolloutRecord {
                rollout: Rollout::new(spec),
                started_at: "2026-12-06T10:00:00Z".into(),
                fixed: std::sync::Arc::new(RolloutFixed {
                    baseline: BTreeMap::new(),
                    restore,
                }),
                batch_started_ms: None,
                bake_until_ms: None,
                judged: None,
                run: 1,
                correction: false,
                sentinel: None,
            }),
            ..cluster("20")
        }
    }

    #[test]
    fn a_rollouts_fixed_part_is_written_once_in_a_file_of_its_own_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let mut state = State {
            version: STATE_VERSION,
            ..State::default()
        };
        state.clusters.insert("c".into(), rolling_out("r1", "n1"));
        let mut maker = EntryMaker::default();
        let c = BTreeSet::from(["c".to_owned()]);
        let first = maker.prepare("started", &state, &c);
        let fixed = first.clusters["c.rollout"]
            .clone()
            .expect("the rollout's file");
        assert_eq!(
            String::from_utf8(fixed).unwrap(),
            r#"{"baseline":{},"restore":{"n1":{"hz":"10"}}}"#
        );
        let own = String::from_utf8(first.clusters["c"].clone().unwrap()).unwrap();
        assert!(
            !own.contains("restore") && !own.contains("baseline"),
            "{own}"
        );
        j.write(&first).unwrap();

        // The same rollout moves on: its cluster's file again, the fixed part not.
        state
            .clusters
            .get_mut("c")
            .unwrap()
            .rollout
            .as_mut()
            .unwrap()
            .run = 2;
        let second = maker.prepare("batch 1", &state, &c);
        assert!(second.clusters["c"].is_some());
        assert_eq!(second.clusters["c.rollout"], None);
        j.write(&second).unwrap();
        let mut again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(state.clone()));

        // After a restart the loaded file is reused; a new rollout writes its own; a
        // cluster with no rollout has no file.
        let mut maker = EntryMaker::loaded(&state);
        assert_eq!(maker.prepare("x", &state, &c).clusters["c.rollout"], None);
        state.clusters.insert("c".into(), rolling_out("r2", "n2"));
        let third = maker.prepare("r2 started", &state, &c);
        let file = String::from_utf8(third.clusters["c.rollout"].clone().unwrap()).unwrap();
        assert!(file.contains("n2"), "{file}");
        again.write(&third).unwrap();
        state.clusters.insert("c".into(), cluster("20"));
        let fourth = maker.prepare("done", &state, &c);
        assert!(!fourth.clusters.contains_key("c.rollout"));
        again.write(&fourth).unwrap();
        let mut last = Journal::open(dir.path()).unwrap();
        assert_eq!(last.load().unwrap(), Some(state));
    }

    #[test]
    fn a_version_1_cluster_file_with_its_fixed_part_inline_still_reads_and_is_split_at_the_next_entry(
    ) {
        let state = {
            let mut s = State {
                version: 1,
                ..State::default()
            };
            s.clusters.insert("c".into(), rolling_out("r1", "n1"));
            s
        };
        // Version 1 wrote the record whole, fixed part inline.
        let mut inline = serde_json::to_value(&state.clusters["c"]).unwrap();
        let rec = state.clusters["c"].rollout.as_ref().unwrap();
        inline["rollout"]["baseline"] = serde_json::to_value(&rec.fixed.baseline).unwrap();
        inline["rollout"]["restore"] = serde_json::to_value(&rec.fixed.restore).unwrap();
        let files = BTreeMap::from([("c".to_owned(), serde_json::to_vec(&inline).unwrap())]);
        let top = br#"{"version":1,"generation":0,"clusters":{}}"#;
        let read = state_from_files("etcd", top, &files).unwrap();
        assert_eq!(read, state);
        assert_eq!(files_version(top), 1);
        // Loaded from version 1: the next entry writes the fixed part's file.
        let mut maker = EntryMaker::loaded(&read);
        let next = maker.prepare("next", &read, &BTreeSet::new());
        assert!(next.clusters["c.rollout"].is_some());
    }

    #[test]
    fn entries_made_while_a_write_was_in_progress_are_written_as_one() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        let mut state = State::default();
        state.clusters.insert("a".into(), cluster("10"));
        state.clusters.insert("b".into(), cluster("10"));
        let mut maker = EntryMaker::default();
        let all = BTreeSet::from(["a".to_owned(), "b".to_owned()]);
        j.write(&maker.prepare("start", &state, &all)).unwrap();

        // Three entries made before any is written: a changes, then b, then a again and
        // c appears; b's file must survive the merge although the last entry left b alone.
        state.clusters.insert("a".into(), cluster("11"));
        let mut merged = maker.prepare("a to 11", &state, &BTreeSet::from(["a".to_owned()]));
        state.clusters.insert("b".into(), cluster("12"));
        let second = maker.prepare("b to 12", &state, &BTreeSet::from(["b".to_owned()]));
        state.clusters.insert("a".into(), cluster("13"));
        state.clusters.insert("c".into(), cluster("1"));
        let third = maker.prepare("a to 13", &state, &BTreeSet::from(["a".to_owned()]));
        assert!(
            third.clusters["c"].is_some(),
            "a cluster never serialised is carried"
        );
        assert!(third.clusters["b"].is_none());
        merged.merge(second);
        merged.merge(third);
        assert_eq!(merged.message(), "a to 11\nb to 12\na to 13\n");
        j.write(&merged).unwrap();

        let mut again = Journal::open(dir.path()).unwrap();
        assert_eq!(again.load().unwrap(), Some(state.clone()));
        let entries: Vec<String> = again
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(entries, vec!["a to 11\nb to 12\na to 13", "start"]);

        // After a restart the loaded files are reused: only b's is written anew.
        let mut maker = EntryMaker::loaded(&state);
        state.clusters.insert("b".into(), cluster("14"));
        let entry = maker.prepare("b to 14", &state, &BTreeSet::from(["b".to_owned()]));
        assert_eq!(
            entry.clusters.iter().filter(|(_, f)| f.is_some()).count(),
            1
        );
        again.write(&entry).unwrap();
        assert_eq!(
            Journal::open(dir.path()).unwrap().load().unwrap(),
            Some(state)
        );
    }

    #[test]
    fn an_unchanged_cluster_this_journal_never_wrote_is_an_error_not_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        let mut state = State::default();
        state.clusters.insert("a".into(), cluster("10"));
        // A maker that believes `a` was written, a journal that never saw it.
        let mut maker = EntryMaker::loaded(&state);
        let entry = maker.prepare("x", &state, &BTreeSet::new());
        let err = Journal::open(dir.path())
            .unwrap()
            .write(&entry)
            .unwrap_err();
        assert!(err.to_string().contains("clusters/a.json"), "{err}");
    }
}
