//! What a revision hands to the loader: every config file's text by path, and the files
//! that could not be read (plain data; `edges::source` fills it from git or the disk).

use std::collections::BTreeMap;

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

/// A file as a stream hands it over: its text, or why it cannot be read.
#[derive(Debug)]
pub enum FileItem {
    File { path: String, text: String },
    Problem(FileProblem),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub path: String,
    pub message: String,
}
