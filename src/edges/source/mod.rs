//! The config repository as files: read a tree at a revision from the git object
//! database (or, with `--worktree`, the uncommitted files), clone or fetch a remote into
//! a cache directory, and list the paths that changed between two revisions.
//!
//! Only the files cacheflow reads are returned: `cacheflow.yaml`, `profiles/**.y(a)ml`,
//! `clusters/**.y(a)ml` and `policies/*.schema.json`. A file that cannot be used (over
//! 1 MiB, not UTF-8, a symlink leaving the tree) becomes a `FileProblem` reported beside
//! the validation errors, not a fatal error.
//!
//! Choices, and why:
//!
//! - **Object database, not checkout.** A revision is read from the tree objects and
//!   blobs, never from a working directory, so what is validated is exactly what was
//!   committed and a remote needs only a bare mirror. Only the four cacheflow areas are
//!   walked; the rest of the repository costs nothing.
//! - **Size before content.** A blob's size comes from the odb header, so a 2 GiB blob
//!   is reported without being inflated into memory.
//! - **One reader thread.** Reading 10,000 small packed blobs takes ~36 ms (release,
//!   2 cores); splitting them over two threads, each with its own `git2::Repository`,
//!   measured slower (~55 ms): libgit2 shares one pack file between handles and guards
//!   its mmap windows with a process-wide mutex, so the second thread mostly waits.
//!   The odb header read (the size check) is about a third of that time; it stays.
//! - **Blobs in pack order.** The blobs are read in the order they sit in the pack files
//!   ([`pack_order`], from the pack indexes), not in tree order: libgit2 caches the delta
//!   bases it inflates in 16 MiB and empties that cache whole when it is full, so in tree
//!   order a `clusters/` of more than about 15 MB inflates every delta chain again and
//!   the read grows faster than the tree (30,000 clusters: 3.7 s). In pack order each base
//!   was read just before its deltas.
//! - **Symlinks are resolved by hand, inside the repository's own namespace**, the same
//!   way for a commit (mode `120000` blobs) and for a working tree (`lstat`): one
//!   component at a time, `..` may not climb above the root, absolute targets and
//!   `.git` are outside, at most [`MAX_SYMLINK_HOPS`] links per path, and a directory
//!   link back to an enclosing directory is a loop. So a commit can never make cacheflow
//!   read `/etc/passwd`, and a link inside the tree behaves as it would on disk.
//! - **Diffs are tree diffs.** `changed_paths` asks git2 which entries differ (equal
//!   subtrees are skipped by id) and reads no blob. A file reached through a symlink is
//!   also reported when the link or its target changed, so the diff of a revision never
//!   misses a file whose content changed.
//! - **A remote is a bare mirror** (`refs/heads/*` and `refs/tags/*`, forced, pruned) in
//!   the cache directory, cloned into a temporary directory and renamed into place, so
//!   an interrupted clone never leaves a half repository behind. Fetches use an
//!   anonymous remote so credentials in the URL are never written to the mirror's
//!   config. Every URL shown in an error goes through [`redact_url`]. Credentials come
//!   from [`credentials`] (a token file, helpers, ssh keys), and the host is reached
//!   within a bound first ([`reach`]). [`open_cached`] opens a mirror without fetching,
//!   for a server whose remote is away.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use git2::{ErrorCode, ObjectType, Oid, Repository};

pub mod credentials;
pub mod pack_order;
pub mod reach;

use crate::pure::render::rfc3339_utc;
// Re-exported for callers not yet moved to `edges::redact`.
pub use crate::edges::redact::redact_url;
pub use crate::pure::spec::files::{FileItem, FileProblem, FileSet};

/// Largest file cacheflow reads.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Most symlinks followed while resolving one path (the kernel allows 40; a config
/// repository needs far fewer, and a small bound keeps a hostile tree cheap).
pub const MAX_SYMLINK_HOPS: usize = 8;

/// Longest symlink target read (Linux `PATH_MAX`).
const MAX_LINK_BYTES: usize = 4096;

/// Who made a commit, when, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommitInfo {
    /// Full commit id (hex).
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    /// Author time, RFC 3339 in UTC (`2024-05-01T12:00:00Z`).
    pub time: String,
    /// First line of the message.
    pub summary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{path}: not a git repository")]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("revision `{rev}` does not exist in {repo}")]
    RevisionNotFound { rev: String, repo: String },
    #[error("revision `{rev}` in {repo} is not a commit")]
    NotACommit { rev: String, repo: String },
    /// The cause is kept as its redacted text and its code, not as the `git2::Error`:
    /// libgit2's message may quote the URL with its credentials.
    #[error("cannot clone or fetch {url}: {message}")]
    FetchFailed {
        url: String,
        message: String,
        code: git2::ErrorCode,
    },
    #[error("{repo} has no working tree (a bare repository): --worktree needs one")]
    NoWorktree { repo: String },
    /// As for `FetchFailed`, the cause is its redacted text and its code.
    #[error("git error in {repo}: {message}")]
    Git {
        repo: String,
        message: String,
        code: git2::ErrorCode,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--path` is not a relative directory inside the repository.
    #[error("--path {root}: {reason}")]
    BadRoot { root: String, reason: &'static str },
}

/// What a failure asks of whoever follows a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Stalled: the same input fails the same way again (an invalid revision, an
    /// untrusted signature, rewritten history, a missing branch). Wait for a new commit.
    Refusal,
    /// The input may be fine and the world was not (the remote unreachable, a git lock,
    /// a disk error): try again after a backoff with jitter.
    Transient,
}

impl SourceError {
    /// Whether trying the same thing again later may succeed.
    pub fn kind(&self) -> FailureKind {
        match self {
            SourceError::RevisionNotFound { .. }
            | SourceError::NotACommit { .. }
            | SourceError::NoWorktree { .. }
            | SourceError::BadRoot { .. } => FailureKind::Refusal,
            // A path that is not a repository may be one being cloned or restored.
            SourceError::NotARepository { .. }
            | SourceError::FetchFailed { .. }
            | SourceError::Io { .. } => FailureKind::Transient,
            SourceError::Git { code, .. } => match code {
                git2::ErrorCode::NotFound
                | git2::ErrorCode::InvalidSpec
                | git2::ErrorCode::Invalid
                | git2::ErrorCode::UnbornBranch
                | git2::ErrorCode::Ambiguous => FailureKind::Refusal,
                // Locked, a failed read of the object database, and the rest.
                _ => FailureKind::Transient,
            },
        }
    }

    /// `kind() == Transient`: back off with jitter and try again.
    pub fn is_transient(&self) -> bool {
        self.kind() == FailureKind::Transient
    }

    /// A git error in `repo`, its text redacted (it may quote a URL).
    pub fn git(repo: &str, e: &git2::Error) -> SourceError {
        SourceError::Git {
            repo: repo.to_owned(),
            message: redact_url(e.message()),
            code: e.code(),
        }
    }
}

/// A config repository: a local work tree or bare repository, or the cached mirror of
/// a remote.
pub struct ConfigRepo {
    repo: Repository,
    /// What errors call the repository: its path, or the redacted URL.
    name: String,
    /// The config root inside the repository (`--path`): `` for the repository's root,
    /// else a relative directory such as `deploy/caches`, no trailing slash.
    root: String,
}

impl fmt::Debug for ConfigRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigRepo")
            .field("name", &self.name)
            .field("git_dir", &self.repo.path())
            .field("root", &self.root)
            .finish()
    }
}

impl ConfigRepo {
    /// `location` is a local path (a work tree or a bare repository: that directory
    /// itself, never one that encloses it, so a mistyped `--repo` is an error rather
    /// than the enclosing project) or a URL (`https://`, `ssh://`, `git@host:path`, `file://`). A URL is
    /// cloned as a bare mirror into `cache_dir/<name>-<hash of url>` (default cache dir:
    /// `$CACHEFLOW_CACHE_DIR`, else `$XDG_CACHE_HOME/cacheflow/repos`, else
    /// `~/.cache/cacheflow/repos`), and fetched if already there.
    pub fn open(location: &str, cache_dir: Option<&Path>) -> Result<ConfigRepo, SourceError> {
        // libgit2 hashes every object it reads to check it against its id; git itself
        // does not on reads (fsck does), and it costs a tenth of reading 10,000 files.
        static RELAXED: std::sync::Once = std::sync::Once::new();
        RELAXED.call_once(|| git2::opts::strict_hash_verification(false));
        if is_url(location) && !Path::new(location).exists() {
            let cache = match cache_dir {
                Some(dir) => dir.to_path_buf(),
                None => default_cache_dir()?,
            };
            return open_mirror(location, &cache);
        }
        let path = Path::new(location);
        let repo = Repository::open_ext(
            path,
            git2::RepositoryOpenFlags::NO_SEARCH,
            &[] as &[&std::ffi::OsStr],
        )
        .map_err(|source| SourceError::NotARepository {
            path: path.to_path_buf(),
            source,
        })?;
        let name = repo
            .workdir()
            .unwrap_or_else(|| repo.path())
            .display()
            .to_string();
        Ok(ConfigRepo {
            repo,
            name,
            root: String::new(),
        })
    }

    /// Read the config from `root`, a directory inside the repository (`--path`, for a
    /// monorepo), instead of the repository's root. `""` and `.` are the root itself.
    pub fn with_root(mut self, root: &str) -> Result<ConfigRepo, SourceError> {
        let bad = |reason| SourceError::BadRoot {
            root: root.to_owned(),
            reason,
        };
        if root.starts_with('/') || root.starts_with('\\') {
            return Err(bad("give a directory relative to the repository's root"));
        }
        let mut parts = Vec::new();
        for part in root.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(bad("must stay inside the repository (no `..`)")),
                p => parts.push(p),
            }
        }
        self.root = parts.join("/");
        Ok(self)
    }

    /// The config root inside the repository (`""`: the repository's root).
    pub fn root(&self) -> &str {
        &self.root
    }

    /// A path relative to the config root as a path relative to the repository's root
    /// (what diagnostics show, so editors and CI annotations find the file).
    pub fn shown(&self, path: &str) -> String {
        if self.root.is_empty() {
            path.to_owned()
        } else {
            format!("{}/{path}", self.root)
        }
    }

    /// Paths relative to the repository's root, kept when under the config root and
    /// made relative to it.
    fn under_root(&self, paths: BTreeSet<String>) -> BTreeSet<String> {
        if self.root.is_empty() {
            return paths;
        }
        let prefix = format!("{}/", self.root);
        paths
            .into_iter()
            .filter_map(|p| p.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// The repository's name in messages: its path, or the redacted URL of a remote.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying repository (for modules that write to it, such as the audit log).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Resolve any revision git understands (`HEAD`, a branch, a tag, a sha, `main~2`;
    /// `origin/main` also works in a mirror, where branches are plain `refs/heads/*`)
    /// to a full commit id.
    pub fn resolve(&self, rev: &str) -> Result<String, SourceError> {
        self.find_commit(rev).map(|c| c.id().to_string())
    }

    /// The cacheflow files of the tree at `rev`, read from the object database.
    pub fn read_rev(&self, rev: &str) -> Result<FileSet, SourceError> {
        let commit = self.find_commit(rev)?;
        let tree = commit.tree().map_err(|e| self.git_err(e))?;
        let src = GitTree::new(&self.repo, tree, &self.name, &self.root);
        let found = walk_areas(&src)?;
        let mut set = self.read_found(found)?;
        set.commit = Some(commit.id().to_string());
        Ok(set)
    }

    /// Read the cacheflow files at `rev` and hand each to `sink` as soon as it is read:
    /// Settings, profiles and policies first, then the clusters, so that a consumer on
    /// another thread can start on them while the rest is still being read. Returns the
    /// commit id.
    pub fn stream_rev(
        &self,
        rev: &str,
        sink: &mut dyn FnMut(FileItem),
    ) -> Result<String, SourceError> {
        let commit = self.find_commit(rev)?;
        let tree = commit.tree().map_err(|e| self.git_err(e))?;
        let src = GitTree::new(&self.repo, tree, &self.name, &self.root);
        let found = self.in_pack_order(walk_areas(&src)?);
        let odb = self.repo.odb().map_err(|e| self.git_err(e))?;
        for f in found {
            let item = match f.what {
                What::Read(oid) => match read_blob(&odb, oid).map_err(|e| self.git_err(e))? {
                    Ok(text) => FileItem::File {
                        path: f.shown,
                        text,
                    },
                    Err(problem) => FileItem::Problem(FileProblem {
                        path: f.shown,
                        message: problem.to_string(),
                    }),
                },
                What::Problem(message) => FileItem::Problem(FileProblem {
                    path: f.shown,
                    message,
                }),
            };
            sink(item);
        }
        Ok(commit.id().to_string())
    }

    /// Only `paths` at `rev` (a diff parses only the changed files). Paths that do not
    /// exist, or are directories, are simply absent; symlinks are resolved as in
    /// [`ConfigRepo::read_rev`].
    pub fn read_paths(&self, rev: &str, paths: &[String]) -> Result<FileSet, SourceError> {
        let commit = self.find_commit(rev)?;
        let tree = commit.tree().map_err(|e| self.git_err(e))?;
        let src = GitTree::new(&self.repo, tree, &self.name, &self.root);
        let mut found = Vec::new();
        for path in paths {
            found_at_path(&src, path, &mut found)?;
        }
        let mut set = self.read_found(found)?;
        set.commit = Some(commit.id().to_string());
        Ok(set)
    }

    /// The cacheflow files under some of the top-level areas (`policies`, `profiles`,
    /// `clusters`, `cacheflow.yaml`) at `rev`: a diff reads the policies whole.
    pub fn read_areas(&self, rev: &str, areas: &[&str]) -> Result<FileSet, SourceError> {
        let commit = self.find_commit(rev)?;
        let tree = commit.tree().map_err(|e| self.git_err(e))?;
        let src = GitTree::new(&self.repo, tree, &self.name, &self.root);
        let areas: Vec<&str> = areas
            .iter()
            .copied()
            .filter(|a| AREAS.contains(a))
            .collect();
        let found = walk(&src, false, &areas)?;
        let mut set = self.read_found(found)?;
        set.commit = Some(commit.id().to_string());
        Ok(set)
    }

    /// The cacheflow files of the working tree as they are on disk: uncommitted and
    /// untracked files included, `.gitignore` not honoured, `.git` skipped.
    pub fn read_worktree(&self) -> Result<FileSet, SourceError> {
        let src = self.worktree()?;
        let found = walk_areas(&src)?;
        let mut set = FileSet::default();
        for f in found {
            match f.what {
                What::Read(path) => match read_disk_file(&path) {
                    Ok(text) => {
                        set.files.insert(f.shown, text);
                    }
                    Err(problem) => set.problems.push(FileProblem {
                        path: f.shown,
                        message: problem.to_string(),
                    }),
                },
                What::Problem(message) => set.problems.push(FileProblem {
                    path: f.shown,
                    message,
                }),
            }
        }
        finish(&mut set);
        Ok(set)
    }

    /// Paths of cacheflow files that differ between two revisions (added, modified,
    /// deleted; a rename counts as both of its sides), sorted.
    pub fn changed_paths(&self, base: &str, head: &str) -> Result<Vec<String>, SourceError> {
        let base_tree = self
            .find_commit(base)?
            .tree()
            .map_err(|e| self.git_err(e))?;
        let head_tree = self
            .find_commit(head)?
            .tree()
            .map_err(|e| self.git_err(e))?;
        let mut opts = git2::DiffOptions::new();
        opts.include_typechange(true);
        let diff = self
            .repo
            .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), Some(&mut opts))
            .map_err(|e| self.git_err(e))?;
        let changed = self.under_root(delta_paths(&diff));
        if changed.is_empty() {
            return Ok(Vec::new());
        }
        let base_src = GitTree::new(&self.repo, base_tree, &self.name, &self.root);
        let head_src = GitTree::new(&self.repo, head_tree, &self.name, &self.root);
        let mut found: Vec<Linked> = linked(walk_links(&base_src)?).collect();
        found.extend(linked(walk_links(&head_src)?));
        Ok(changed_cacheflow_paths(&changed, &found))
    }

    /// Paths of cacheflow files that differ between `base` and the working tree
    /// (staged, unstaged and untracked changes, ignored files included), sorted.
    pub fn changed_paths_worktree(&self, base: &str) -> Result<Vec<String>, SourceError> {
        let base_tree = self
            .find_commit(base)?
            .tree()
            .map_err(|e| self.git_err(e))?;
        let disk = self.worktree()?;
        let base_src = GitTree::new(&self.repo, base_tree, &self.name, &self.root);
        let mut found: Vec<Linked> = linked(walk_links(&base_src)?).collect();
        found.extend(linked(walk_links(&disk)?));

        // Ignored files count (read_worktree reads them), so the diff must recurse into
        // ignored directories; a pathspec keeps that to the cacheflow areas and to the
        // places symlinks there point at, instead of every `target/` in the tree.
        let mut spec: BTreeSet<String> = ["cacheflow.yaml", "profiles", "clusters", "policies"]
            .into_iter()
            .map(String::from)
            .collect();
        for (_, deps) in &found {
            spec.extend(deps.iter().cloned());
        }
        // The pathspec is relative to the repository's root; the walks, to the config root.
        let spec: BTreeSet<String> = spec.iter().map(|p| self.shown(p)).collect();
        let mut opts = git2::DiffOptions::new();
        opts.include_typechange(true)
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(true)
            .recurse_ignored_dirs(true)
            // Literal paths: a `*` in a file name is not a glob.
            .disable_pathspec_match(true);
        for s in &spec {
            opts.pathspec(s);
        }
        let diff = self
            .repo
            .diff_tree_to_workdir_with_index(Some(&base_src.root), Some(&mut opts))
            .map_err(|e| self.git_err(e))?;
        let changed = self.under_root(delta_paths(&diff));
        Ok(changed_cacheflow_paths(&changed, &found))
    }

    /// Commit metadata: id, author, author time (RFC 3339, UTC), summary.
    pub fn commit_info(&self, rev: &str) -> Result<CommitInfo, SourceError> {
        let commit = self.find_commit(rev)?;
        let author = commit.author();
        Ok(CommitInfo {
            id: commit.id().to_string(),
            author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            time: rfc3339_utc(author.when().seconds()),
            summary: commit
                .summary_bytes()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default(),
        })
    }

    fn find_commit(&self, rev: &str) -> Result<git2::Commit<'_>, SourceError> {
        let obj = match self.repo.revparse_single(rev) {
            Ok(obj) => obj,
            // A mirror keeps the remote's branches as `refs/heads/*`, so the
            // `origin/main` a user types from habit is just `main` here.
            Err(e) if is_not_found(&e) => match rev.strip_prefix("origin/") {
                Some(short) if self.repo.is_bare() => {
                    self.repo.revparse_single(short).map_err(|e| {
                        if is_not_found(&e) {
                            self.not_found(rev)
                        } else {
                            self.git_err(e)
                        }
                    })?
                }
                _ => return Err(self.not_found(rev)),
            },
            Err(e) => return Err(self.git_err(e)),
        };
        obj.peel_to_commit().map_err(|_| SourceError::NotACommit {
            rev: rev.to_string(),
            repo: self.name.clone(),
        })
    }

    fn worktree(&self) -> Result<DiskTree, SourceError> {
        match self.repo.workdir() {
            Some(root) => Ok(DiskTree {
                root: root.join(&self.root),
            }),
            None => Err(SourceError::NoWorktree {
                repo: self.name.clone(),
            }),
        }
    }

    /// `found` in the order to read it: the files before the first cluster (Settings,
    /// profiles, policies: what a stream hands over first) as walked, then the rest by
    /// their place in the pack files ([`pack_order`]), so libgit2's cache of delta bases
    /// holds each base when its deltas are read.
    fn in_pack_order(&self, mut found: Vec<Found<Oid>>) -> Vec<Found<Oid>> {
        let first_cluster = found
            .iter()
            .position(|f| f.shown.starts_with("clusters/"))
            .unwrap_or(found.len());
        let mut rest = found.split_off(first_cluster);
        if rest.len() < 2 {
            found.append(&mut rest);
            return found;
        }
        let oids: Vec<Oid> = rest
            .iter()
            .map(|f| match f.what {
                What::Read(oid) => oid,
                What::Problem(_) => Oid::ZERO_SHA1,
            })
            .collect();
        let objects = self.repo.commondir().join("objects");
        let positions = pack_order::positions(&objects, &oids);
        let mut slots: Vec<Option<Found<Oid>>> = rest.into_iter().map(Some).collect();
        found.extend(
            pack_order::reading_order(&positions)
                .into_iter()
                .filter_map(|i| slots[i].take()),
        );
        found
    }

    /// Read the blobs of `found`, on this thread (see the module doc for why not two).
    fn read_found(&self, found: Vec<Found<Oid>>) -> Result<FileSet, SourceError> {
        let mut set = FileSet::default();
        let mut blobs = Vec::with_capacity(found.len());
        for f in self.in_pack_order(found) {
            match f.what {
                What::Read(oid) => blobs.push((f.shown, oid)),
                What::Problem(message) => set.problems.push(FileProblem {
                    path: f.shown,
                    message,
                }),
            }
        }
        let odb = self.repo.odb().map_err(|e| self.git_err(e))?;
        let results = read_blobs(&odb, blobs).map_err(|e| self.git_err(e))?;
        for (path, result) in results {
            match result {
                Ok(text) => {
                    set.files.insert(path, text);
                }
                Err(problem) => set.problems.push(FileProblem {
                    path,
                    message: problem.to_string(),
                }),
            }
        }
        finish(&mut set);
        Ok(set)
    }

    fn not_found(&self, rev: &str) -> SourceError {
        SourceError::RevisionNotFound {
            rev: rev.to_string(),
            repo: self.name.clone(),
        }
    }

    fn git_err(&self, e: git2::Error) -> SourceError {
        SourceError::git(&self.name, &e)
    }
}

fn is_not_found(e: &git2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::NotFound | ErrorCode::InvalidSpec | ErrorCode::UnbornBranch
    )
}

type Blobs = Vec<(String, Result<String, Unreadable>)>;

/// Why a file that exists cannot be used (shown as a [`FileProblem`]).
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("file is {}; cacheflow reads files up to 1 MiB", shown_size(.0))]
    TooBig(u64),
    #[error("not valid UTF-8 at byte {0}")]
    NotUtf8(usize),
}

/// Read blobs: size from the header first, so an oversized blob is never inflated.
fn read_blobs(odb: &git2::Odb<'_>, blobs: Vec<(String, Oid)>) -> Result<Blobs, git2::Error> {
    let mut out = Vec::with_capacity(blobs.len());
    for (path, oid) in blobs {
        out.push((path, read_blob(odb, oid)?));
    }
    Ok(out)
}

/// One blob as text, or why it cannot be used (too large, not UTF-8).
fn read_blob(odb: &git2::Odb<'_>, oid: Oid) -> Result<Result<String, Unreadable>, git2::Error> {
    let (size, _) = odb.read_header(oid)?;
    if size > MAX_FILE_BYTES {
        return Ok(Err(Unreadable::TooBig(size as u64)));
    }
    let obj = odb.read(oid)?;
    Ok(utf8(obj.data()))
}

fn read_disk_file(path: &Path) -> Result<String, Unreadable> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > MAX_FILE_BYTES as u64 {
        return Err(Unreadable::TooBig(len));
    }
    // `take` guards against a file that grows between the size check and the read.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(Unreadable::TooBig(bytes.len() as u64));
    }
    utf8(&bytes)
}

fn utf8(bytes: &[u8]) -> Result<String, Unreadable> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        Err(e) => Err(Unreadable::NotUtf8(e.valid_up_to())),
    }
}

fn shown_size(size: &u64) -> String {
    let size = *size;
    let mib = size as f64 / (1u64 << 20) as f64;
    // "1.0 MiB; ... up to 1 MiB" would read as a contradiction: show bytes then.
    if mib < 1.05 {
        format!("{size} bytes")
    } else {
        format!("{mib:.1} MiB")
    }
}

fn finish(set: &mut FileSet) {
    set.problems.sort_by(|a, b| a.path.cmp(&b.path));
    set.problems.dedup();
}

// ---------------------------------------------------------------------------------
// Which paths are cacheflow's.

/// `cacheflow.yaml`, `profiles/**/*.y(a)ml`, `clusters/**/*.y(a)ml`,
/// `policies/*.schema.json`.
pub fn is_cacheflow_path(path: &str) -> bool {
    if path == "cacheflow.yaml" {
        return true;
    }
    let yaml_under = |rest: &str| {
        !rest.is_empty()
            && rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
            && (rest.ends_with(".yaml") || rest.ends_with(".yml"))
    };
    if let Some(rest) = path.strip_prefix("profiles/") {
        return yaml_under(rest);
    }
    if let Some(rest) = path.strip_prefix("clusters/") {
        return yaml_under(rest);
    }
    if let Some(rest) = path.strip_prefix("policies/") {
        return !rest.contains('/')
            && rest.len() > ".schema.json".len()
            && rest.ends_with(".schema.json");
    }
    false
}

/// Directories that may hold cacheflow files (walked recursively).
fn may_hold_files(path: &str) -> bool {
    matches!(path, "profiles" | "clusters" | "policies")
        || path.starts_with("profiles/")
        || path.starts_with("clusters/")
}

// ---------------------------------------------------------------------------------
// One walker, one symlink resolver, over two kinds of tree: a git tree and a disk.

/// What a path is, without following a symlink.
enum Node<F> {
    File(F),
    Dir,
    Link(String),
    Submodule,
    Missing,
    /// Exists but cannot be used, with the reason.
    Unusable(String),
}

/// A directory's entries: name and what it is.
type Entries<F> = Vec<(String, Node<F>)>;

trait Tree {
    type File: Clone;
    /// `path` is repository-relative with `/`; `""` is the root.
    fn lookup(&self, path: &str) -> Result<Node<Self::File>, SourceError>;
    /// The entries of the directory at `path`; regular files only if `files`.
    fn list(&self, path: &str, files: bool) -> Result<Entries<Self::File>, SourceError>;
}

enum What<F> {
    Read(F),
    Problem(String),
}

/// A cacheflow path found by a walk.
struct Found<F> {
    /// The path as the user sees it (through any symlinked directory).
    shown: String,
    what: What<F>,
    /// When symlinks were followed: the real paths the content depends on (each link,
    /// then the target). Empty when the file is its own path.
    deps: Vec<String>,
}

struct Resolved<F> {
    real: String,
    node: Node<F>,
    links: Vec<String>,
}

/// Follow `path` one component at a time, expanding symlinks, in the repository's own
/// namespace. `Err` is a problem message (the path leaves the repository, or loops).
fn resolve<T: Tree>(
    tree: &T,
    path: &str,
) -> Result<Result<Resolved<T::File>, String>, SourceError> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: VecDeque<String> = path.split('/').map(String::from).collect();
    let mut links = Vec::new();
    let mut last_target: Option<String> = None;
    let mut node: Node<T::File> = Node::Dir;
    let outside = |target: &Option<String>| match target {
        Some(t) => format!("symlink points outside the repository: {t}"),
        None => format!("path leaves the repository: {path}"),
    };
    while let Some(c) = todo.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if !matches!(node, Node::Dir) {
            // A component under a file: like ENOTDIR, nothing there.
            return Ok(Ok(Resolved {
                real: done.join("/"),
                node: Node::Missing,
                links,
            }));
        }
        if c == ".." {
            if done.pop().is_none() {
                return Ok(Err(outside(&last_target)));
            }
            continue;
        }
        if c.eq_ignore_ascii_case(".git") {
            return Ok(Err(match &last_target {
                Some(t) => format!("symlink points into .git: {t}"),
                None => format!("path is inside .git: {path}"),
            }));
        }
        done.push(c);
        let here = done.join("/");
        node = tree.lookup(&here)?;
        if let Node::Link(target) = &node {
            if links.len() >= MAX_SYMLINK_HOPS {
                return Ok(Err(format!(
                    "too many levels of symbolic links (more than {MAX_SYMLINK_HOPS}): {path}"
                )));
            }
            if target.starts_with('/') {
                return Ok(Err(outside(&Some(target.clone()))));
            }
            for part in target.rsplit('/') {
                todo.push_front(part.to_string());
            }
            last_target = Some(target.clone());
            links.push(here);
            done.pop();
            node = Node::Dir;
        }
    }
    Ok(Ok(Resolved {
        real: done.join("/"),
        node,
        links,
    }))
}

struct Walker<'a, T: Tree> {
    tree: &'a T,
    links_only: bool,
    found: Vec<Found<T::File>>,
    /// Real paths of the directories being walked, to catch a link to an ancestor.
    stack: Vec<String>,
}

/// Every cacheflow path in `tree`, with what to read or why it cannot be read.
/// The areas cacheflow reads, in the order a stream hands them over: everything a
/// cluster depends on (Settings, profiles, policies) before the clusters.
const AREAS: [&str; 4] = ["cacheflow.yaml", "profiles", "policies", "clusters"];

fn walk_areas<T: Tree>(tree: &T) -> Result<Vec<Found<T::File>>, SourceError> {
    walk(tree, false, &AREAS)
}

/// Only the paths reached through symlinks (what a diff needs besides its own list).
fn walk_links<T: Tree>(tree: &T) -> Result<Vec<Found<T::File>>, SourceError> {
    walk(tree, true, &AREAS)
}

fn walk<T: Tree>(
    tree: &T,
    links_only: bool,
    areas: &[&str],
) -> Result<Vec<Found<T::File>>, SourceError> {
    let mut w = Walker {
        tree,
        links_only,
        found: Vec::new(),
        // Everything is under the root: a link to it is a loop too.
        stack: vec![String::new()],
    };
    for top in areas {
        let node = tree.lookup(top)?;
        w.visit(top.to_string(), top.to_string(), node, Vec::new())?;
    }
    Ok(w.found)
}

/// What exactly `path` is in `tree` (following symlinks), added to `out` when it is a
/// file or a problem.
fn found_at_path<T: Tree>(
    tree: &T,
    path: &str,
    out: &mut Vec<Found<T::File>>,
) -> Result<(), SourceError> {
    let shown = path.trim_matches('/').to_string();
    let (what, deps) = match resolve(tree, &shown)? {
        Err(message) => (What::Problem(message), Vec::new()),
        Ok(r) => {
            let mut deps = r.links;
            if !deps.is_empty() {
                deps.push(r.real);
            }
            match r.node {
                Node::File(f) => (What::Read(f), deps),
                Node::Submodule => (What::Problem(SUBMODULE.to_string()), deps),
                Node::Unusable(m) => (What::Problem(m), deps),
                Node::Missing | Node::Dir | Node::Link(_) => return Ok(()),
            }
        }
    };
    out.push(Found { shown, what, deps });
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

const SUBMODULE: &str = "is a submodule (or nested repository), not a file";

impl<T: Tree> Walker<'_, T> {
    /// `links`: the real paths of the symlinks followed to get here (empty when `shown`
    /// is its own real path).
    fn visit(
        &mut self,
        shown: String,
        real: String,
        node: Node<T::File>,
        links: Vec<String>,
    ) -> Result<(), SourceError> {
        let is_file = is_cacheflow_path(&shown);
        match node {
            Node::File(f) if is_file => self.push(shown, real, What::Read(f), links),
            Node::Dir if may_hold_files(&shown) => {
                if self.stack.contains(&real) {
                    let message =
                        format!("symlink loop: points to an enclosing directory ({real})");
                    self.push(shown, real, What::Problem(message), links);
                    return Ok(());
                }
                let recurse = shown != "policies";
                self.stack.push(real.clone());
                // A diff needs only what is reached through links: skipping plain files
                // here spares 10,000 allocations in a large `clusters/`.
                let files = !self.links_only || !links.is_empty();
                for (name, child) in self.tree.list(&real, files)? {
                    let child_shown = format!("{shown}/{name}");
                    let wanted = match child {
                        Node::Dir => recurse,
                        _ => {
                            is_cacheflow_path(&child_shown)
                                || (recurse && may_hold_files(&child_shown))
                        }
                    };
                    if wanted {
                        let child_real = join(&real, &name);
                        self.visit(child_shown, child_real, child, links.clone())?;
                    }
                }
                self.stack.pop();
            }
            Node::Link(_) if is_file || may_hold_files(&shown) => {
                match resolve(self.tree, &real)? {
                    Err(message) if is_file => {
                        let mut links = links;
                        links.push(real.clone());
                        self.push(shown, real, What::Problem(message), links);
                    }
                    Err(_) => {}
                    Ok(r) => {
                        let mut links = links;
                        links.extend(r.links);
                        if matches!(r.node, Node::Missing) {
                            if is_file {
                                let target = match self.tree.lookup(&real)? {
                                    Node::Link(t) => t,
                                    _ => real,
                                };
                                let message = format!("symlink target does not exist: {target}");
                                self.push(shown, r.real, What::Problem(message), links);
                            }
                        } else {
                            self.visit(shown, r.real, r.node, links)?;
                        }
                    }
                }
            }
            Node::Submodule if is_file => {
                self.push(shown, real, What::Problem(SUBMODULE.into()), links)
            }
            Node::Unusable(message) if is_file => {
                self.push(shown, real, What::Problem(message), links)
            }
            _ => {}
        }
        Ok(())
    }

    fn push(&mut self, shown: String, real: String, what: What<T::File>, links: Vec<String>) {
        if self.links_only && links.is_empty() {
            return;
        }
        let mut deps = links;
        if !deps.is_empty() {
            deps.push(real);
        }
        self.found.push(Found { shown, what, deps });
    }
}

/// The cacheflow paths touched by a set of changed real paths: those changed
/// themselves, and those reached through a symlink whose link or target changed.
fn changed_cacheflow_paths(changed: &BTreeSet<String>, linked: &[Linked]) -> Vec<String> {
    let mut out: BTreeSet<String> = changed
        .iter()
        .filter(|p| is_cacheflow_path(p))
        .cloned()
        .collect();
    for (shown, deps) in linked {
        if deps.iter().any(|d| changed.contains(d)) {
            out.insert(shown.clone());
        }
    }
    out.into_iter().collect()
}

/// A path reached through symlinks, with the real paths it depends on.
type Linked = (String, Vec<String>);

fn linked<F>(found: Vec<Found<F>>) -> impl Iterator<Item = Linked> {
    found
        .into_iter()
        .filter(|f| !f.deps.is_empty())
        .map(|f| (f.shown, f.deps))
}

fn delta_paths(diff: &git2::Diff<'_>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for delta in diff.deltas() {
        for file in [delta.old_file(), delta.new_file()] {
            if let Some(p) = file.path_bytes() {
                out.insert(String::from_utf8_lossy(p).into_owned());
            }
        }
    }
    out
}

/// A tree at one revision.
struct GitTree<'r> {
    repo: &'r Repository,
    /// The commit's whole tree.
    root: git2::Tree<'r>,
    name: &'r str,
    /// The config root inside it (`--path`): the paths this tree is asked about are
    /// relative to it.
    prefix: &'r str,
    /// Subtrees by path. libgit2 does not cache trees over 4 KiB, and a `clusters/`
    /// of 10,000 entries is 400 KiB: without this, every lookup re-parses it.
    trees: RefCell<HashMap<String, git2::Tree<'r>>>,
}

impl<'r> GitTree<'r> {
    fn new(
        repo: &'r Repository,
        root: git2::Tree<'r>,
        name: &'r str,
        prefix: &'r str,
    ) -> GitTree<'r> {
        GitTree {
            repo,
            root,
            name,
            prefix,
            trees: RefCell::new(HashMap::new()),
        }
    }

    /// The tree at directory `dir` under the config root (no symlinks followed), if
    /// there is one.
    fn tree_at(&self, dir: &str) -> Result<Option<git2::Tree<'r>>, SourceError> {
        match (self.prefix.is_empty(), dir.is_empty()) {
            (true, _) => self.full_tree_at(dir),
            (false, true) => self.full_tree_at(self.prefix),
            (false, false) => self.full_tree_at(&format!("{}/{dir}", self.prefix)),
        }
    }

    /// The tree at directory `dir` of the commit's whole tree.
    fn full_tree_at(&self, dir: &str) -> Result<Option<git2::Tree<'r>>, SourceError> {
        if dir.is_empty() {
            return Ok(Some(self.root.clone()));
        }
        if let Some(tree) = self.trees.borrow().get(dir) {
            return Ok(Some(tree.clone()));
        }
        let (parent, name) = split_last(dir);
        let Some(parent) = self.full_tree_at(parent)? else {
            return Ok(None);
        };
        let id = match parent.get_name(name) {
            Some(e) if e.kind() == Some(ObjectType::Tree) => e.id(),
            _ => return Ok(None),
        };
        let tree = self.repo.find_tree(id).map_err(|e| self.err(e))?;
        self.trees
            .borrow_mut()
            .insert(dir.to_string(), tree.clone());
        Ok(Some(tree))
    }

    fn err(&self, e: git2::Error) -> SourceError {
        SourceError::git(self.name, &e)
    }

    fn node(&self, mode: i32, kind: Option<ObjectType>, id: Oid) -> Result<Node<Oid>, SourceError> {
        Ok(match (mode, kind) {
            (0o120000, _) => self.link_target(id)?,
            (0o160000, _) | (_, Some(ObjectType::Commit)) => Node::Submodule,
            (_, Some(ObjectType::Tree)) => Node::Dir,
            (_, Some(ObjectType::Blob)) => Node::File(id),
            _ => Node::Unusable("not a file".to_string()),
        })
    }

    fn link_target(&self, id: Oid) -> Result<Node<Oid>, SourceError> {
        let odb = self.repo.odb().map_err(|e| self.err(e))?;
        let (size, _) = odb.read_header(id).map_err(|e| self.err(e))?;
        if size > MAX_LINK_BYTES {
            return Ok(Node::Unusable(format!(
                "symlink target is {size} bytes long; cacheflow follows targets up to {MAX_LINK_BYTES}"
            )));
        }
        let obj = odb.read(id).map_err(|e| self.err(e))?;
        Ok(match std::str::from_utf8(obj.data()) {
            Ok(t) => Node::Link(t.to_string()),
            Err(_) => Node::Unusable("symlink target is not valid UTF-8".to_string()),
        })
    }
}

impl Tree for GitTree<'_> {
    type File = Oid;

    fn lookup(&self, path: &str) -> Result<Node<Oid>, SourceError> {
        if path.is_empty() {
            return Ok(Node::Dir);
        }
        let (dir, name) = split_last(path);
        let Some(tree) = self.tree_at(dir)? else {
            return Ok(Node::Missing);
        };
        let found = match tree.get_name(name) {
            Some(e) => self.node(e.filemode(), e.kind(), e.id()),
            None => Ok(Node::Missing),
        };
        found
    }

    fn list(&self, path: &str, files: bool) -> Result<Entries<Oid>, SourceError> {
        let Some(tree) = self.tree_at(path)? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(if files { tree.len() } else { 0 });
        for entry in tree.iter() {
            if !files && matches!(entry.filemode(), 0o100644 | 0o100755) {
                continue;
            }
            let node = self.node(entry.filemode(), entry.kind(), entry.id())?;
            match std::str::from_utf8(entry.name_bytes()) {
                Ok(name) => out.push((name.to_string(), node)),
                Err(_) => out.push((
                    String::from_utf8_lossy(entry.name_bytes()).into_owned(),
                    Node::Unusable("file name is not valid UTF-8".to_string()),
                )),
            }
        }
        Ok(out)
    }
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split_last(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// The working tree on disk.
struct DiskTree {
    root: PathBuf,
}

impl DiskTree {
    fn node(&self, full: &Path, meta: std::io::Result<std::fs::Metadata>) -> Node<PathBuf> {
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Node::Missing,
            Err(e) => return Node::Unusable(format!("cannot read: {e}")),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            match std::fs::read_link(full) {
                Ok(t) => match t.to_str() {
                    Some(t) => Node::Link(t.to_string()),
                    None => Node::Unusable("symlink target is not valid UTF-8".to_string()),
                },
                Err(e) => Node::Unusable(format!("cannot read symlink: {e}")),
            }
        } else if ft.is_dir() {
            // A nested repository is not part of this one's tree, as in a commit.
            if full.join(".git").symlink_metadata().is_ok() {
                Node::Submodule
            } else {
                Node::Dir
            }
        } else if ft.is_file() {
            Node::File(full.to_path_buf())
        } else {
            Node::Unusable("not a regular file".to_string())
        }
    }
}

impl Tree for DiskTree {
    type File = PathBuf;

    fn lookup(&self, path: &str) -> Result<Node<PathBuf>, SourceError> {
        if path.is_empty() {
            return Ok(Node::Dir);
        }
        let full = self.root.join(path);
        let meta = full.symlink_metadata();
        Ok(self.node(&full, meta))
    }

    fn list(&self, path: &str, files: bool) -> Result<Entries<PathBuf>, SourceError> {
        let dir = self.root.join(path);
        let io = |source| SourceError::Io {
            path: dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            if name == ".git" || (!files && entry.file_type().is_ok_and(|t| t.is_file())) {
                continue;
            }
            let full = entry.path();
            let node = self.node(&full, full.symlink_metadata());
            match name.to_str() {
                Some(n) => out.push((n.to_string(), node)),
                None => out.push((
                    name.to_string_lossy().into_owned(),
                    Node::Unusable("file name is not valid UTF-8".to_string()),
                )),
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------
// Remotes.

/// A URL rather than a path: `scheme://...` or scp-like `user@host:path`.
/// libgit2 built with HTTPS loads the system's whole CA bundle as it starts (OpenSSL's
/// default verify paths, every certificate parsed): about 35 ms, more than the rest of
/// `cacheflow validate` on a small repository. A command that reads a local repository
/// and opens no TLS connection does not need them: the binary calls this first thing,
/// before any thread exists, for those commands only (`serve`, `agent`, `rollout` and
/// anything given a URL keep the system's roots).
pub fn skip_tls_roots() {
    // No certificate file or directory: OpenSSL starts with an empty store.
    std::env::set_var("SSL_CERT_FILE", "/dev/null");
    std::env::set_var("SSL_CERT_DIR", "/dev/null");
}

pub fn is_url(location: &str) -> bool {
    if location.contains("://") {
        return true;
    }
    match (location.find('@'), location.find(':')) {
        (Some(at), Some(colon)) => at < colon && !location[..colon].contains('/'),
        _ => false,
    }
}

fn default_cache_dir() -> Result<PathBuf, SourceError> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("CACHEFLOW_CACHE_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("cacheflow/repos"));
    }
    if let Some(home) = var("HOME") {
        return Ok(PathBuf::from(home).join(".cache/cacheflow/repos"));
    }
    Err(SourceError::Io {
        path: PathBuf::from("~/.cache/cacheflow/repos"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no cache directory: set CACHEFLOW_CACHE_DIR, XDG_CACHE_HOME or HOME",
        ),
    })
}

/// `<last path segment, sanitised>-<12 hex of SHA-1 of the redacted URL>`: readable,
/// unique per URL, and the same when only the credentials in the URL change.
fn mirror_dir_name(url: &str) -> String {
    let clean = redact_url(url);
    let last = clean
        .trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git");
    let mut name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name.trim_start_matches('.').chars().take(48).collect();
    if name.is_empty() {
        name = "repo".to_string();
    }
    let hash = Oid::hash_object(ObjectType::Blob, clean.as_bytes())
        .map(|o| o.to_string())
        .unwrap_or_default();
    format!("{name}-{}", crate::pure::render::short_id(&hash))
}

fn open_mirror(url: &str, cache: &Path) -> Result<ConfigRepo, SourceError> {
    let shown = redact_url(url);
    let dir = cache.join(mirror_dir_name(url));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SourceError::Io { path, source }
    };
    let failed = |e: git2::Error| SourceError::FetchFailed {
        url: shown.clone(),
        message: redact_url(e.message()),
        code: e.code(),
    };

    // A host that does not answer is named within a bound, not after the kernel's 130 s.
    if let Err(unreached) = reach::check(url, reach::connect_timeout()) {
        return Err(SourceError::FetchFailed {
            url: shown.clone(),
            message: unreached.to_string(),
            code: ErrorCode::GenericError,
        });
    }
    if dir.exists() {
        match Repository::open_bare(&dir) {
            Ok(repo) => {
                fetch_mirror(&repo, url).map_err(failed)?;
                return Ok(ConfigRepo {
                    repo,
                    name: shown,
                    root: String::new(),
                });
            }
            // Not a repository any more (an interrupted delete, a disk error): the
            // directory is ours by its name, so start it over.
            Err(_) => std::fs::remove_dir_all(&dir).map_err(io(&dir))?,
        }
    }

    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let tmp = cache.join(format!(
        ".{}.tmp-{}",
        mirror_dir_name(url),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    let cloned = Repository::init_bare(&tmp).and_then(|repo| fetch_mirror(&repo, url));
    if let Err(e) = cloned {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(failed(e));
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another process won the race and put its mirror there: use that one.
        if !dir.exists() {
            return Err(io(&dir)(e));
        }
    }
    let repo = Repository::open_bare(&dir).map_err(|source| SourceError::NotARepository {
        path: dir.clone(),
        source,
    })?;
    Ok(ConfigRepo {
        repo,
        name: shown,
        root: String::new(),
    })
}

/// The mirror of `url` in `cache` as it is, without fetching: what a server starts from
/// while the remote cannot be reached. `NotARepository` when there is none.
pub fn open_cached(url: &str, cache: &Path) -> Result<ConfigRepo, SourceError> {
    let dir = cache.join(mirror_dir_name(url));
    let repo = Repository::open_bare(&dir)
        .map_err(|source| SourceError::NotARepository { path: dir, source })?;
    Ok(ConfigRepo {
        repo,
        name: redact_url(url),
        root: String::new(),
    })
}

/// Fetch every branch and tag, forced and pruned, then point `HEAD` at the remote's
/// default branch.
fn fetch_mirror(repo: &Repository, url: &str) -> Result<(), git2::Error> {
    let mut remote = repo.remote_anonymous(url)?;
    let mut opts = git2::FetchOptions::new();
    opts.remote_callbacks(credentials::callbacks())
        .prune(git2::FetchPrune::On)
        .download_tags(git2::AutotagOption::None);
    remote.fetch(
        &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
        Some(&mut opts),
        None,
    )?;
    let head = remote
        .default_branch()
        .ok()
        .and_then(|b| b.as_str().ok().map(String::from));
    let head = head.filter(|h| repo.find_reference(h).is_ok()).or_else(|| {
        ["refs/heads/main", "refs/heads/master"]
            .into_iter()
            .find(|r| repo.find_reference(r).is_ok())
            .map(String::from)
    });
    if let Some(head) = head {
        repo.set_head(&head)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A work tree with a real git repository, committed with git2.
    struct TestRepo {
        dir: tempfile::TempDir,
        repo: Repository,
    }

    impl TestRepo {
        fn new() -> TestRepo {
            let dir = tempfile::tempdir().unwrap();
            let repo = Repository::init(dir.path()).unwrap();
            TestRepo { dir, repo }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
            let full = self.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, content).unwrap();
            self
        }

        #[cfg(unix)]
        fn symlink(&self, path: &str, target: &str) -> &Self {
            let full = self.path().join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, full).unwrap();
            self
        }

        fn remove(&self, path: &str) -> &Self {
            fs::remove_file(self.path().join(path)).unwrap();
            self
        }

        /// Stage everything (additions, changes, deletions) and commit.
        fn commit(&self, message: &str) -> String {
            let mut index = self.repo.index().unwrap();
            index
                .add_all(["*"], git2::IndexAddOption::FORCE, None)
                .unwrap();
            index.update_all(["*"], None).unwrap();
            index.write().unwrap();
            let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
            let sig = git2::Signature::new(
                "Ada Lovelace",
                "ada@example.com",
                &git2::Time::new(1_714_564_800, 120),
            )
            .unwrap();
            let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
            let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
            self.repo
                .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
                .unwrap()
                .to_string()
        }

        fn open(&self) -> ConfigRepo {
            ConfigRepo::open(self.path().to_str().unwrap(), None).unwrap()
        }
    }

    fn problem(set: &FileSet, path: &str) -> String {
        set.problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap_or_else(|| panic!("no problem for {path} in {:?}", set.problems))
    }

    #[test]
    fn cacheflow_paths_are_the_settings_profiles_clusters_and_policies() {
        for yes in [
            "cacheflow.yaml",
            "profiles/small.yaml",
            "profiles/team/a.yml",
            "clusters/eu/west/sessions.yaml",
            "policies/limits.schema.json",
        ] {
            assert!(is_cacheflow_path(yes), "{yes}");
        }
        for no in [
            "cacheflow.yml",
            "README.md",
            "clusters/notes.txt",
            "clusters/.yaml/x",
            "policies/sub/x.schema.json",
            "policies/x.json",
            "policies/.schema.json",
            "other/clusters/a.yaml",
            "clusters//a.yaml",
        ] {
            assert!(!is_cacheflow_path(no), "{no}");
        }
    }

    #[test]
    fn read_rev_reads_the_commit_not_the_working_tree() {
        let t = TestRepo::new();
        t.write("cacheflow.yaml", "v: 1\n")
            .write("clusters/a.yaml", "a: 1\n");
        let first = t.commit("first");
        t.write("clusters/a.yaml", "a: 2\n")
            .write("clusters/b.yaml", "b: 1\n");
        let second = t.commit("second");
        t.write("clusters/a.yaml", "a: uncommitted\n");

        let repo = t.open();
        let head = repo.read_rev("HEAD").unwrap();
        assert_eq!(head.commit.as_deref(), Some(second.as_str()));
        assert_eq!(head.files["clusters/a.yaml"], "a: 2\n");
        assert_eq!(head.files.len(), 3);

        let old = repo.read_rev(&first).unwrap();
        assert_eq!(old.files["clusters/a.yaml"], "a: 1\n");
        assert!(!old.files.contains_key("clusters/b.yaml"));
        assert_eq!(repo.read_rev("HEAD~1").unwrap().files, old.files);
        assert!(old.problems.is_empty());
    }

    #[test]
    fn files_outside_the_cacheflow_areas_are_ignored() {
        let t = TestRepo::new();
        t.write("README.md", "hi")
            .write("clusters/notes.txt", "x")
            .write("docs/clusters/a.yaml", "x")
            .write("policies/nested/x.schema.json", "{}")
            .write("policies/ok.schema.json", "{}")
            .write("profiles/deep/er/p.yml", "p: 1\n")
            .write("clusters/bad.yaml", [0xff, 0xfe]);
        t.commit("mixed");
        let set = t.open().read_rev("HEAD").unwrap();
        let paths: Vec<&str> = set.files.keys().map(String::as_str).collect();
        assert_eq!(paths, ["policies/ok.schema.json", "profiles/deep/er/p.yml"]);
        assert_eq!(set.problems.len(), 1);
    }

    #[test]
    fn read_paths_reads_only_the_paths_asked_for() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a")
            .write("clusters/b.yaml", "b")
            .write("clusters/c.yaml", "c");
        t.commit("three");
        let asked = [
            "clusters/b.yaml".to_string(),
            "clusters/gone.yaml".to_string(),
        ];
        let set = t.open().read_paths("HEAD", &asked).unwrap();
        assert_eq!(set.files.len(), 1);
        assert_eq!(set.files["clusters/b.yaml"], "b");
        assert!(set.problems.is_empty());
    }

    #[test]
    fn the_worktree_includes_uncommitted_and_untracked_files() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a: 1\n")
            .write("clusters/gone.yaml", "x")
            .write(".gitignore", "clusters/ignored.yaml\n");
        t.commit("first");
        t.write("clusters/a.yaml", "a: edited\n")
            .write("clusters/new.yaml", "n: 1\n")
            .write("clusters/ignored.yaml", "i: 1\n")
            .remove("clusters/gone.yaml");
        let repo = t.open();
        let set = repo.read_worktree().unwrap();
        assert_eq!(set.commit, None);
        assert_eq!(set.files["clusters/a.yaml"], "a: edited\n");
        assert_eq!(set.files["clusters/new.yaml"], "n: 1\n");
        assert_eq!(set.files["clusters/ignored.yaml"], "i: 1\n");
        assert!(!set.files.contains_key("clusters/gone.yaml"));

        let changed = repo.changed_paths_worktree("HEAD").unwrap();
        assert_eq!(
            changed,
            [
                "clusters/a.yaml",
                "clusters/gone.yaml",
                "clusters/ignored.yaml",
                "clusters/new.yaml"
            ]
        );
    }

    #[test]
    fn a_subdirectory_is_not_taken_for_its_repository() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a");
        t.commit("one");
        let sub = t.path().join("clusters");
        let err = ConfigRepo::open(sub.to_str().unwrap(), None).unwrap_err();
        assert!(matches!(err, SourceError::NotARepository { .. }), "{err}");
        // `--path` is the way to a config root inside a repository.
        t.write("deploy/caches/clusters/b.yaml", "b");
        t.commit("two");
        let repo = ConfigRepo::open(t.path().to_str().unwrap(), None)
            .unwrap()
            .with_root("./deploy/caches/")
            .unwrap();
        assert_eq!(repo.root(), "deploy/caches");
        let set = repo.read_rev("HEAD").unwrap();
        assert_eq!(set.files.keys().collect::<Vec<_>>(), ["clusters/b.yaml"]);
        let set = repo.read_worktree().unwrap();
        assert_eq!(set.files.keys().collect::<Vec<_>>(), ["clusters/b.yaml"]);
        assert_eq!(
            repo.shown("clusters/b.yaml"),
            "deploy/caches/clusters/b.yaml"
        );
    }

    #[test]
    fn a_path_that_is_not_a_repository_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain");
        fs::create_dir(&path).unwrap();
        // Keep discovery from climbing into a repository that encloses the temp dir.
        let err = Repository::open_ext(
            &path,
            git2::RepositoryOpenFlags::NO_SEARCH,
            &[] as &[&std::ffi::OsStr],
        );
        assert!(err.is_err());
        match ConfigRepo::open(path.to_str().unwrap(), None) {
            Err(SourceError::NotARepository { path: p, .. }) => assert_eq!(p, path),
            Err(e) => panic!("unexpected error {e}"),
            // Only if the temp dir itself sits inside a repository.
            Ok(r) => assert!(!r.name().starts_with(path.to_str().unwrap())),
        }
        let missing = dir.path().join("does-not-exist");
        let err = ConfigRepo::open(missing.to_str().unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("does-not-exist"), "{err}");
    }

    #[test]
    fn a_missing_revision_is_revision_not_found() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a");
        t.commit("one");
        let repo = t.open();
        for rev in [
            "nope",
            "HEAD~5",
            "0123456789abcdef0123456789abcdef01234567",
            "main@{",
        ] {
            match repo.read_rev(rev) {
                Err(e @ SourceError::RevisionNotFound { .. }) => {
                    assert!(matches!(&e, SourceError::RevisionNotFound { rev: r, .. } if r == rev));
                    // Fetching again will not bring it: wait for a new commit.
                    assert_eq!(e.kind(), FailureKind::Refusal);
                }
                other => panic!("{rev}: {other:?}"),
            }
        }
        assert!(matches!(
            repo.resolve("HEAD^{tree}"),
            Err(SourceError::NotACommit { .. })
        ));
    }

    #[test]
    fn a_packed_repository_reads_the_same_files_in_pack_order_shared_files_first() {
        let t = TestRepo::new();
        t.write("cacheflow.yaml", "kind: Settings\n")
            .write("profiles/p.yaml", "kind: Profile\n")
            .write("policies/a.schema.json", "{}");
        for round in 0..3 {
            for i in 0..60 {
                // Alike and growing with the name: `git gc` makes the largest the delta
                // base and writes it first, so the pack's order is not the tree's.
                let body: String = (0..20 + i)
                    .map(|l| format!("shared line {l} of every cluster file\n"))
                    .chain([format!("round {round}\n")])
                    .collect();
                t.write(&format!("clusters/c{i:02}.yaml"), body);
            }
            t.commit(&format!("round {round}"));
        }
        let repo = t.open();
        let loose = repo.read_rev("HEAD").unwrap();
        let gc = std::process::Command::new("git")
            .args(["gc", "-q", "--aggressive"])
            .current_dir(t.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .status()
            .expect("git is installed");
        assert!(gc.success());
        let objects = t.path().join(".git/objects");
        assert!(
            fs::read_dir(objects.join("pack")).unwrap().count() >= 2,
            "git gc wrote a pack and its index"
        );
        let repo = t.open();
        let packed = repo.read_rev("HEAD").unwrap();
        assert_eq!(packed.files, loose.files);
        assert_eq!(packed.files.len(), 63);

        let mut streamed = Vec::new();
        repo.stream_rev("HEAD", &mut |item| match item {
            FileItem::File { path, text } => {
                assert_eq!(loose.files[&path], text);
                streamed.push(path);
            }
            FileItem::Problem(p) => panic!("{p:?}"),
        })
        .unwrap();
        assert_eq!(
            streamed[..3],
            [
                "cacheflow.yaml",
                "profiles/p.yaml",
                "policies/a.schema.json"
            ]
        );
        let clusters = &streamed[3..];
        let mut sorted = clusters.to_vec();
        sorted.sort();
        let expected: Vec<&String> = loose
            .files
            .keys()
            .filter(|p| p.starts_with("clusters/"))
            .collect();
        assert_eq!(sorted.iter().collect::<Vec<_>>(), expected);
        // The clusters come in the order of their offsets in the pack.
        let oids: Vec<Oid> = clusters
            .iter()
            .map(|p| t.repo.revparse_single(&format!("HEAD:{p}")).unwrap().id())
            .collect();
        let offsets: Vec<u64> = pack_order::positions(&objects, &oids)
            .into_iter()
            .map(|p| p.expect("every blob is in the pack").1)
            .collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        // In tree order (how they were read before) they would not be.
        let tree_order: Vec<Oid> = sorted
            .iter()
            .map(|p| t.repo.revparse_single(&format!("HEAD:{p}")).unwrap().id())
            .collect();
        let tree_offsets: Vec<u64> = pack_order::positions(&objects, &tree_order)
            .into_iter()
            .map(|p| p.expect("every blob is in the pack").1)
            .collect();
        assert!(
            tree_offsets.windows(2).any(|w| w[0] > w[1]),
            "{tree_offsets:?}"
        );
    }

    #[test]
    fn an_empty_repository_has_no_head_revision() {
        let t = TestRepo::new();
        assert!(matches!(
            t.open().resolve("HEAD"),
            Err(SourceError::RevisionNotFound { .. })
        ));
    }

    #[test]
    fn resolve_understands_branches_tags_and_relative_revisions() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "1");
        let first = t.commit("first");
        t.write("clusters/a.yaml", "2");
        let second = t.commit("second");
        let head = t.repo.find_commit(Oid::from_str(&first).unwrap()).unwrap();
        t.repo
            .tag_lightweight("v1", head.as_object(), false)
            .unwrap();
        let repo = t.open();
        assert_eq!(repo.resolve("HEAD").unwrap(), second);
        assert_eq!(repo.resolve("HEAD~1").unwrap(), first);
        assert_eq!(repo.resolve("v1").unwrap(), first);
        assert_eq!(repo.resolve(&second[..8]).unwrap(), second);
    }

    #[test]
    fn commit_info_has_author_time_in_utc_and_summary() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a");
        let id = t.commit("Raise maxmemory\n\nBecause the hit ratio fell.");
        let info = t.open().commit_info("HEAD").unwrap();
        assert_eq!(
            info,
            CommitInfo {
                id,
                author_name: "Ada Lovelace".into(),
                author_email: "ada@example.com".into(),
                time: "2024-05-01T12:00:00Z".into(),
                summary: "Raise maxmemory".into(),
            }
        );
    }

    #[test]
    fn an_over_size_file_is_a_file_problem() {
        let t = TestRepo::new();
        t.write("clusters/huge.yaml", vec![b'a'; MAX_FILE_BYTES * 6 / 5 + 1])
            .write("clusters/edge.yaml", vec![b'a'; MAX_FILE_BYTES])
            .write("clusters/just-over.yaml", vec![b'a'; MAX_FILE_BYTES + 1]);
        t.commit("big");
        let repo = t.open();
        for set in [
            repo.read_rev("HEAD").unwrap(),
            repo.read_worktree().unwrap(),
        ] {
            assert_eq!(
                problem(&set, "clusters/huge.yaml"),
                "file is 1.2 MiB; cacheflow reads files up to 1 MiB"
            );
            assert_eq!(
                problem(&set, "clusters/just-over.yaml"),
                "file is 1048577 bytes; cacheflow reads files up to 1 MiB"
            );
            assert_eq!(set.files["clusters/edge.yaml"].len(), MAX_FILE_BYTES);
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_is_a_file_problem() {
        let t = TestRepo::new();
        t.write("clusters/latin1.yaml", b"name: caf\xe9\n");
        t.commit("latin1");
        let repo = t.open();
        for set in [
            repo.read_rev("HEAD").unwrap(),
            repo.read_worktree().unwrap(),
        ] {
            assert_eq!(
                problem(&set, "clusters/latin1.yaml"),
                "not valid UTF-8 at byte 9"
            );
            assert!(set.files.is_empty());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_leaving_the_tree_is_a_file_problem() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a")
            .symlink("clusters/passwd.yaml", "../../etc/passwd")
            .symlink("clusters/abs.yaml", "/etc/passwd")
            .symlink("clusters/git.yaml", "../.git/config");
        t.commit("escape");
        let repo = t.open();
        for set in [
            repo.read_rev("HEAD").unwrap(),
            repo.read_worktree().unwrap(),
        ] {
            assert_eq!(
                problem(&set, "clusters/passwd.yaml"),
                "symlink points outside the repository: ../../etc/passwd"
            );
            assert_eq!(
                problem(&set, "clusters/abs.yaml"),
                "symlink points outside the repository: /etc/passwd"
            );
            assert_eq!(
                problem(&set, "clusters/git.yaml"),
                "symlink points into .git: ../.git/config"
            );
            assert_eq!(set.files.len(), 1, "{:?}", set.files.keys());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_inside_the_tree_is_followed() {
        let t = TestRepo::new();
        t.write("shared/base.yaml", "base: 1\n")
            .write("shared/dir/x.yaml", "x: 1\n")
            .symlink("clusters/a.yaml", "../shared/base.yaml")
            .symlink("clusters/b.yaml", "a.yaml")
            .symlink("clusters/linked", "../shared/dir")
            .symlink("clusters/dangling.yaml", "nothing.yaml");
        t.commit("links");
        let repo = t.open();
        for set in [
            repo.read_rev("HEAD").unwrap(),
            repo.read_worktree().unwrap(),
        ] {
            assert_eq!(set.files["clusters/a.yaml"], "base: 1\n");
            assert_eq!(set.files["clusters/b.yaml"], "base: 1\n");
            assert_eq!(set.files["clusters/linked/x.yaml"], "x: 1\n");
            assert_eq!(
                problem(&set, "clusters/dangling.yaml"),
                "symlink target does not exist: nothing.yaml"
            );
        }
        let asked = ["clusters/linked/x.yaml".to_string()];
        let set = repo.read_paths("HEAD", &asked).unwrap();
        assert_eq!(set.files["clusters/linked/x.yaml"], "x: 1\n");
    }

    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_file_problems_not_hangs() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a")
            .symlink("clusters/ping.yaml", "pong.yaml")
            .symlink("clusters/pong.yaml", "ping.yaml")
            .symlink("clusters/self", ".")
            .symlink("clusters/up", "..");
        t.commit("loops");
        let repo = t.open();
        for set in [
            repo.read_rev("HEAD").unwrap(),
            repo.read_worktree().unwrap(),
        ] {
            assert!(problem(&set, "clusters/ping.yaml").starts_with("too many levels"));
            assert!(problem(&set, "clusters/self").starts_with("symlink loop"));
            assert!(problem(&set, "clusters/up").starts_with("symlink loop"));
            assert_eq!(set.files.len(), 1, "{:?}", set.files.keys());
        }
    }

    #[test]
    fn a_submodule_where_a_file_is_expected_is_a_file_problem() {
        let t = TestRepo::new();
        let blob = t.repo.blob(b"a").unwrap();
        let some_commit = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let mut clusters = t.repo.treebuilder(None).unwrap();
        clusters.insert("a.yaml", blob, 0o100644).unwrap();
        clusters.insert("sub.yaml", some_commit, 0o160000).unwrap();
        let clusters = clusters.write().unwrap();
        let mut root = t.repo.treebuilder(None).unwrap();
        root.insert("clusters", clusters, 0o040000).unwrap();
        let tree = t.repo.find_tree(root.write().unwrap()).unwrap();
        let sig = git2::Signature::now("T", "t@example.com").unwrap();
        t.repo
            .commit(Some("HEAD"), &sig, &sig, "sub", &tree, &[])
            .unwrap();
        let set = t.open().read_rev("HEAD").unwrap();
        assert_eq!(set.files.len(), 1);
        assert!(problem(&set, "clusters/sub.yaml").contains("submodule"));
    }

    #[test]
    fn changed_paths_lists_added_modified_deleted_and_renamed_files() {
        let t = TestRepo::new();
        t.write("clusters/keep.yaml", "k")
            .write("clusters/edit.yaml", "1")
            .write("clusters/drop.yaml", "d")
            .write("clusters/old-name.yaml", "same content")
            .write("README.md", "1");
        let base = t.commit("base");
        t.write("clusters/edit.yaml", "2")
            .write("clusters/add.yaml", "a")
            .remove("clusters/drop.yaml")
            .remove("clusters/old-name.yaml")
            .write("clusters/new-name.yaml", "same content")
            .write("README.md", "2");
        let head = t.commit("head");
        let repo = t.open();
        assert_eq!(
            repo.changed_paths(&base, &head).unwrap(),
            [
                "clusters/add.yaml",
                "clusters/drop.yaml",
                "clusters/edit.yaml",
                "clusters/new-name.yaml",
                "clusters/old-name.yaml"
            ]
        );
        assert!(repo.changed_paths(&head, &head).unwrap().is_empty());
        assert!(repo.changed_paths_worktree("HEAD").unwrap().is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn a_change_behind_a_symlink_changes_the_linked_path() {
        let t = TestRepo::new();
        t.write("shared/base.yaml", "1")
            .write("shared/dir/x.yaml", "1")
            .symlink("clusters/a.yaml", "../shared/base.yaml")
            .symlink("clusters/linked", "../shared/dir");
        let base = t.commit("base");
        t.write("shared/base.yaml", "2")
            .write("shared/dir/x.yaml", "2");
        let repo = t.open();
        let expected = ["clusters/a.yaml", "clusters/linked/x.yaml"];
        assert_eq!(repo.changed_paths_worktree(&base).unwrap(), expected);
        let head = t.commit("head");
        assert_eq!(repo.changed_paths(&base, &head).unwrap(), expected);
    }

    fn file_url(path: &Path) -> String {
        format!("file://{}", path.display())
    }

    #[test]
    fn a_file_url_is_mirrored_into_the_cache_and_fetched_again() {
        let t = TestRepo::new();
        t.write("clusters/a.yaml", "a: 1\n");
        let first = t.commit("first");
        // A bare remote, as a forge would hold it.
        let remote_dir = tempfile::tempdir().unwrap();
        let bare = Repository::init_bare(remote_dir.path()).unwrap();
        let push = |refspec: &str| {
            let mut r = t
                .repo
                .remote_anonymous(&file_url(remote_dir.path()))
                .unwrap();
            r.push(&[refspec], None).unwrap();
        };
        push("+HEAD:refs/heads/main");
        bare.set_head("refs/heads/main").unwrap();
        push("+HEAD:refs/heads/old-branch");

        let cache = tempfile::tempdir().unwrap();
        let url = file_url(remote_dir.path());
        let repo = ConfigRepo::open(&url, Some(cache.path())).unwrap();
        assert_eq!(repo.resolve("main").unwrap(), first);
        assert_eq!(repo.resolve("origin/main").unwrap(), first);
        assert_eq!(repo.resolve("HEAD").unwrap(), first);
        assert!(matches!(
            repo.read_worktree(),
            Err(SourceError::NoWorktree { .. })
        ));
        let entries: Vec<_> = fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(entries[0].starts_with(&format!(
            "{}-",
            remote_dir
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .trim_start_matches('.')
        )));

        t.write("clusters/a.yaml", "a: 2\n");
        let second = t.commit("second");
        push("+HEAD:refs/heads/main");
        bare.find_reference("refs/heads/old-branch")
            .unwrap()
            .delete()
            .unwrap();

        let again = ConfigRepo::open(&url, Some(cache.path())).unwrap();
        let local_bare = ConfigRepo::open(remote_dir.path().to_str().unwrap(), None).unwrap();
        assert_eq!(local_bare.resolve("HEAD").unwrap(), second);
        assert_eq!(again.resolve("main").unwrap(), second);
        assert_eq!(
            again.read_rev("main").unwrap().files["clusters/a.yaml"],
            "a: 2\n"
        );
        assert!(
            matches!(
                again.resolve("old-branch"),
                Err(SourceError::RevisionNotFound { .. })
            ),
            "a branch deleted on the remote is pruned from the mirror"
        );
        assert_eq!(
            again.changed_paths(&first, "main").unwrap(),
            ["clusters/a.yaml"]
        );
    }

    #[test]
    fn a_git_lock_is_transient_and_a_bad_spec_a_refusal() {
        let locked = git2::Error::new(
            git2::ErrorCode::Locked,
            git2::ErrorClass::Reference,
            "failed to lock file 'refs/heads/main.lock' for writing",
        );
        assert_eq!(
            SourceError::git("repo", &locked).kind(),
            FailureKind::Transient
        );
        let spec = git2::Error::new(
            git2::ErrorCode::InvalidSpec,
            git2::ErrorClass::Reference,
            "not a valid reference",
        );
        assert_eq!(SourceError::git("repo", &spec).kind(), FailureKind::Refusal);
    }

    #[test]
    fn credentials_never_appear_in_errors() {
        let cache = tempfile::tempdir().unwrap();
        // Port 1 on loopback refuses at once.
        let url = "https://deploy:s3cr3t-token@127.0.0.1:1/team/config.git";
        let err = ConfigRepo::open(url, Some(cache.path())).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(matches!(err, SourceError::FetchFailed { .. }), "{text}");
        assert!(err.is_transient(), "a failed fetch is tried again: {text}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.contains("https://127.0.0.1:1/team/config.git"),
            "{text}"
        );
        assert_eq!(
            fs::read_dir(cache.path()).unwrap().count(),
            0,
            "no half clone left"
        );
    }

    #[test]
    fn urls_and_paths_are_told_apart() {
        assert!(is_url("https://github.com/o/r.git"));
        assert!(is_url("file:///srv/git/r.git"));
        assert!(is_url("git@github.com:o/r.git"));
        assert!(!is_url("./config"));
        assert!(!is_url("/srv/git/r.git"));
        assert!(!is_url("dir/a@b:c"));
        let a = mirror_dir_name("https://u:p@github.com/team/Config.git");
        let b = mirror_dir_name("https://other:x@github.com/team/Config.git");
        assert_eq!(a, b, "credentials do not change the cache directory");
        assert!(a.starts_with("Config-"), "{a}");
        assert_ne!(a, mirror_dir_name("https://github.com/other/Config.git"));
    }
}
