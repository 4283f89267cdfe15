//! `TestRepo`: a git repository in a temporary directory, made with git2, whose commits
//! have a fixed author, committer and clock so that their ids are the same on every run.
//! Tests write files into its work tree, commit them, and point the binary or the
//! `source` layer at `path()` (or `url()` for the clone-a-remote path).

// Each test file uses only part of the helper.
#![allow(dead_code)]

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Repository, RepositoryInitOptions, Signature, Time};

/// Seconds since the epoch of the first commit (2024-01-01T00:00:00Z); each later commit
/// is one minute after the one before, so `git log` orders them as they were made.
const FIRST_COMMIT_TIME: i64 = 1_704_067_200;

pub struct TestRepo {
    // Declared before `dir` so the repository is closed before the directory goes.
    repo: Repository,
    dir: tempfile::TempDir,
    commits: Cell<i64>,
}

impl TestRepo {
    /// An empty repository (branch `main`, no commit yet) in a new temporary directory.
    pub fn new() -> TestRepo {
        let dir = tempfile::Builder::new()
            .prefix("cacheflow-test-repo-")
            .tempdir()
            .expect("create a temporary directory");
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = Repository::init_opts(dir.path(), &opts).expect("git init");
        TestRepo {
            repo,
            dir,
            commits: Cell::new(0),
        }
    }

    /// The work tree.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `file://` URL of the repository, for code that clones remotes.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// The git2 handle, for assertions the helpers do not cover.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Write `contents` to `path` (relative to the work tree, `/`-separated), creating
    /// the directories on the way. Not committed until `commit`.
    pub fn write(&self, path: &str, contents: &str) {
        let full = self.full(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        fs::write(&full, contents).unwrap_or_else(|e| panic!("write {}: {e}", full.display()));
    }

    /// The current text of a work-tree file.
    pub fn read(&self, path: &str) -> String {
        let full = self.full(path);
        fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
    }

    /// Delete a file from the work tree (the next `commit` records the deletion).
    pub fn remove(&self, path: &str) {
        let full = self.full(path);
        fs::remove_file(&full).unwrap_or_else(|e| panic!("remove {}: {e}", full.display()));
    }

    /// Copy every file under `src` into the work tree under `dest_prefix` (`""` for the
    /// root), keeping the relative layout.
    pub fn copy_dir(&self, src: &Path, dest_prefix: &str) {
        let mut stack: Vec<PathBuf> = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries =
                fs::read_dir(&dir).unwrap_or_else(|e| panic!("read dir {}: {e}", dir.display()));
            for entry in entries {
                let entry = entry.expect("read a directory entry");
                let path = entry.path();
                let kind = entry.file_type().expect("file type");
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                let rel = path
                    .strip_prefix(src)
                    .expect("entry under src")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let dest = if dest_prefix.is_empty() {
                    rel
                } else {
                    format!("{}/{rel}", dest_prefix.trim_end_matches('/'))
                };
                let text = fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                self.write(&dest, &text);
            }
        }
    }

    /// Stage every change of the work tree (new, modified and deleted files) and commit
    /// it on `main`; returns the full commit id. Author and committer are fixed, and the
    /// clock advances one minute per commit, so the same files and messages give the same
    /// ids on every run and machine.
    pub fn commit(&self, message: &str) -> String {
        let mut index = self.repo.index().expect("open the index");
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .expect("git add");
        index.update_all(["*"], None).expect("git add -u");
        index.write().expect("write the index");
        let tree_id = index.write_tree().expect("write the tree");
        let tree = self.repo.find_tree(tree_id).expect("find the tree");

        let n = self.commits.get();
        self.commits.set(n + 1);
        let time = Time::new(FIRST_COMMIT_TIME + 60 * n, 0);
        let sig =
            Signature::new("cacheflow tests", "tests@cacheflow.invalid", &time).expect("signature");
        let parent = match self.repo.head() {
            Ok(head) => Some(head.peel_to_commit().expect("HEAD is a commit")),
            Err(_) => None,
        };
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit");
        id.to_string()
    }

    fn full(&self, path: &str) -> PathBuf {
        assert!(
            !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
            "TestRepo paths are relative and stay inside the repository: {path}"
        );
        self.path().join(path)
    }
}

/// The messages of `refs/cacheflow/journal`, oldest first (empty without a journal).
pub fn journal_messages(r: &Repository) -> Vec<String> {
    let Ok(head) = r.refname_to_id("refs/cacheflow/journal") else {
        return Vec::new();
    };
    let mut walk = r.revwalk().unwrap();
    walk.push(head).unwrap();
    let mut out: Vec<String> = walk
        .map(|oid| {
            r.find_commit(oid.unwrap())
                .unwrap()
                .message()
                .unwrap()
                .to_owned()
        })
        .collect();
    out.reverse();
    out
}

/// The `refs/notes/cacheflow` note on `commit` (empty without one).
pub fn cacheflow_note(r: &Repository, commit: &str) -> String {
    r.find_note(
        Some("refs/notes/cacheflow"),
        git2::Oid::from_str(commit).unwrap(),
    )
    .map(|n| n.message().unwrap().to_owned())
    .unwrap_or_default()
}
