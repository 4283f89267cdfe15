//! The config repository as files: read a tree at a revision from the git object
//! database (or, with `--worktree`, the uncommitted files), clone or fetch a remote into
//! a cache directory, and list the paths that changed between two revisions.
//!
//! Only the files cacheflow reads are returned: `cacheflow.yaml`, `profiles/**.y(a)ml`,
//! `clusters/**.y(a)ml` and `policies/*.schema.json`. A file that cannot be used (over
//! 1 MiB, not UTF-8, a symlink leaving the tree) becomes a `FileProblem` reported beside
//! the validation errors, not a fatal error.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Largest file cacheflow reads.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// The files of one revision (or of the working tree).
#[derive(Debug, Clone, Default)]
pub struct FileSet {
    /// The commit id the files were read from; `None` for the working tree.
    pub commit: Option<String>,
    /// Repository-relative path (with `/`) → UTF-8 text.
    pub files: BTreeMap<String, String>,
    /// Files that exist but cannot be read, with the reason.
    pub problems: Vec<FileProblem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub path: String,
    pub message: String,
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
    #[error("cannot clone or fetch {url}: {message}")]
    FetchFailed { url: String, message: String },
    #[error("{repo} has no working tree (a bare repository): --worktree needs one")]
    NoWorktree { repo: String },
    #[error("git error in {repo}: {message}")]
    Git { repo: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
