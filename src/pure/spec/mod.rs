//! The desired state: load the files of one revision into a validated [`model::Desired`],
//! or report every error at once.
//!
//! Loading runs in three passes. Each file is parsed (YAML with positions) and checked
//! against the embedded JSON Schema on its own, in parallel; then the semantic checks a
//! schema cannot express run over all documents together (references, uniqueness,
//! engine parameters, stage growth); then the repository's own `policies/*.schema.json`
//! are applied to every cluster. Errors are sorted, so the output is deterministic.

pub mod files;
pub mod model;
pub mod raw;
pub mod schema;
pub mod signers;
pub mod yaml;

mod check;
mod engine_rules;

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

pub use files::{FileItem, FileProblem, FileSet};
use model::Desired;
use yaml::Located;

/// One validation error: where (file, line, column, JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// JSON pointer of the offending node inside the document (empty: the whole file).
    pub pointer: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if !self.pointer.is_empty() {
            write!(f, " (at {})", self.pointer)?;
        }
        Ok(())
    }
}

/// The 1-based line and character column of a serde_json error (serde counts bytes),
/// and its message without the position serde appends.
pub fn json_error_position(text: &str, e: &serde_json::Error) -> (usize, usize, String) {
    // serde_json counts lines by `\n` and columns in bytes; editors (and YAML) also break
    // lines at a lone `\r`. Find the byte serde_json means, then count as editors do.
    let line = e.line().max(1);
    let mut start = 0;
    for _ in 1..line {
        match text[start..].find('\n') {
            Some(i) => start += i + 1,
            None => {
                start = text.len();
                break;
            }
        }
    }
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let mut offset = (start + e.column()).min(line_end);
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let mut line = 1;
    let mut line_start = 0;
    let bytes = before.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        let is_break = *b == b'\n' || (*b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
        if is_break {
            line += 1;
            line_start = i + 1;
        }
    }
    let column = before[line_start..].chars().count().max(1);
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full,
    };
    (line, column, message)
}

/// One file's path and text, with its node positions computed only when a diagnostic
/// needs them: a valid file is parsed once, without positions; an error re-parses its
/// file with positions to say `line:col`.
pub(crate) struct Source<'a> {
    path: Cow<'a, str>,
    text: Cow<'a, str>,
    positions: OnceCell<Located>,
}

impl<'a> Source<'a> {
    pub fn new(path: Cow<'a, str>, text: Cow<'a, str>) -> Self {
        Source {
            path,
            text,
            positions: OnceCell::new(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn located(&self) -> &Located {
        self.positions
            .get_or_init(|| yaml::parse(&self.text).unwrap_or_default())
    }

    /// A diagnostic at the value (or with `at_key`, the key) at `pointer`.
    pub fn diag(&self, pointer: &str, at_key: bool, message: impl Into<String>) -> Diagnostic {
        diagnostic(&self.path, self.located(), pointer, at_key, message)
    }

    /// The line of the value at `pointer`.
    pub fn line_of(&self, pointer: &str) -> usize {
        self.located().value_pos(pointer).line
    }
}

/// A document that parsed and passed the schema.
pub(crate) struct Parsed<'a> {
    pub src: Source<'a>,
    pub value: serde_json::Value,
    pub kind: raw::Kind,
    pub metadata: raw::Metadata,
}

/// Where a diagnostic points inside a parsed file.
pub(crate) fn diagnostic(
    path: &str,
    located: &Located,
    pointer: &str,
    at_key: bool,
    message: impl Into<String>,
) -> Diagnostic {
    let pos = if at_key {
        located.key_pos(pointer)
    } else {
        located.value_pos(pointer)
    };
    Diagnostic {
        file: path.to_owned(),
        line: pos.line,
        column: pos.column,
        message: message.into(),
        pointer: pointer.to_owned(),
    }
}

fn file_level(path: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic {
        file: path.to_owned(),
        line: 1,
        column: 1,
        message: message.into(),
        pointer: String::new(),
    }
}

/// Is `path` a YAML document cacheflow reads (as opposed to a policy schema)?
fn is_document(path: &str) -> bool {
    path == "cacheflow.yaml"
        || ((path.starts_with("profiles/") || path.starts_with("clusters/"))
            && (path.ends_with(".yaml") || path.ends_with(".yml")))
}

fn is_policy(path: &str) -> bool {
    path.starts_with("policies/") && path.ends_with(".schema.json")
}

/// Parse one file and check it against the document schema.
pub(crate) fn parse_file<'a>(
    path: Cow<'a, str>,
    text: Cow<'a, str>,
) -> Result<Parsed<'a>, Vec<Diagnostic>> {
    let value = yaml::parse_value(&text).map_err(|e| {
        vec![Diagnostic {
            file: path.to_string(),
            line: e.pos.line,
            column: e.pos.column,
            message: e.message,
            pointer: e.pointer,
        }]
    })?;
    let src = Source::new(path, text);
    let path = src.path();
    let validator =
        schema::document_validator().map_err(|e| vec![file_level(path, e.to_string())])?;
    let findings = schema::findings(validator, &value);
    if !findings.is_empty() {
        return Err(findings
            .into_iter()
            .map(|f| src.diag(&f.pointer, f.at_key, f.message))
            .collect());
    }
    let header = <raw::Header as serde::Deserialize>::deserialize(&value)
        .map_err(|e| vec![file_level(path, format!("unexpected document shape: {e}"))])?;
    Ok(Parsed {
        src,
        value,
        kind: header.kind,
        metadata: header.metadata,
    })
}

/// Run `work` over `items`, spreading them over the machine's cores in contiguous
/// slices, so results come back in input order.
fn parallel_map<T: Sync, R: Send>(items: &[T], work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    // Below a few hundred files a thread costs more than it saves.
    if workers <= 1 || items.len() < 256 {
        return items.iter().map(&work).collect();
    }
    let chunk = items.len().div_ceil(workers);
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(work).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                // A worker cannot panic on input (the fuzz tests hold this); should it
                // anyway, re-raise rather than report a partial result as complete.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// The first phase: Settings, profiles and policies, which every cluster depends on.
struct Prelude {
    diags: Vec<Diagnostic>,
    shared: check::Shared,
    policies: Vec<check::Policy>,
}

fn prelude(
    problems: &[FileProblem],
    shared_files: Vec<(Cow<'_, str>, Cow<'_, str>)>,
    policy_files: &[(&String, &String)],
) -> Prelude {
    let mut diags: Vec<Diagnostic> = problems
        .iter()
        .map(|p| file_level(&p.path, &p.message))
        .collect();
    let mut parsed = Vec::new();
    let mut broken = Vec::new();
    for (path, text) in shared_files {
        let shown = path.to_string();
        match parse_file(path, text) {
            Ok(p) => parsed.push(p),
            Err(d) => {
                broken.push(shown);
                diags.extend(d);
            }
        }
    }
    let mut failed: HashSet<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    failed.extend(broken.iter().map(String::as_str));
    let policies = check::compile_policies(policy_files, &mut diags);
    let shared = check::shared(parsed, &failed, &mut diags);
    Prelude {
        diags,
        shared,
        policies,
    }
}

/// A revision's clusters in numbers: what `cacheflow validate` says of a valid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    pub clusters: usize,
    pub profiles: usize,
    pub nodes: usize,
}

impl Summary {
    pub fn of(d: &Desired) -> Summary {
        Summary {
            clusters: d.clusters.len(),
            profiles: d.profiles.len(),
            nodes: d.clusters.values().map(|c| c.nodes.len()).sum(),
        }
    }
}

/// Re-reads files by path (path → text; a file it cannot read is left out): the checks
/// across files read again only the files their errors name.
pub type Reread<'r> = &'r mut dyn FnMut(&[String]) -> Vec<(String, String)>;

fn finish(
    commit: Option<String>,
    mut diags: Vec<Diagnostic>,
    shared: check::Shared,
    outs: Vec<check::ClusterOut>,
    reread: Reread<'_>,
) -> Result<(Desired, Summary), Vec<Diagnostic>> {
    let across = check::across_files(outs, &mut diags, reread);
    if diags.is_empty() {
        let summary = Summary {
            clusters: across.cluster_count,
            profiles: shared.profiles.len(),
            nodes: across.node_count,
        };
        let desired = Desired {
            commit,
            settings: shared.settings,
            profiles: shared.profiles,
            clusters: across.clusters,
        };
        Ok((desired, summary))
    } else {
        diags.sort();
        diags.dedup();
        Err(diags)
    }
}

/// Load the desired state from the files of one revision. Every error is returned at
/// once, sorted by file, line and column.
///
/// Settings and profiles (few files) are read first; then every cluster file is parsed,
/// checked and merged with its profile on its own, in parallel, its YAML tree dropped as
/// soon as its model is built; last come the checks across files (unique names, node
/// ids and addresses).
pub fn load(files: &FileSet) -> Result<Desired, Vec<Diagnostic>> {
    let mut shared_files = Vec::new();
    let mut clusters: Vec<(&str, &str)> = Vec::new();
    let mut policies: Vec<(&String, &String)> = Vec::new();
    for (path, text) in &files.files {
        if is_policy(path) {
            policies.push((path, text));
        } else if !is_document(path) {
            continue;
        } else if path.starts_with("clusters/") {
            clusters.push((path, text));
        } else {
            shared_files.push((Cow::Borrowed(path.as_str()), Cow::Borrowed(text.as_str())));
        }
    }
    let Prelude {
        diags,
        shared,
        policies,
    } = prelude(&files.problems, shared_files, &policies);
    let outs = parallel_map(&clusters, |(path, text)| {
        check::cluster_file(
            Cow::Borrowed(path),
            Cow::Borrowed(text),
            &shared,
            &policies,
            check::Keep::Model,
        )
    });
    let mut reread = |paths: &[String]| {
        paths
            .iter()
            .filter_map(|p| files.files.get(p).map(|t| (p.clone(), t.clone())))
            .collect()
    };
    finish(files.commit.clone(), diags, shared, outs, &mut reread).map(|(d, _)| d)
}

/// Load while the files are still being read: `items` arrive in the reader's order
/// (Settings, profiles, policies, then clusters), and the cluster files are checked by
/// worker threads as they come, so reading from git overlaps with parsing. Gives the
/// same result as [`load`] on the same files. No file's text is kept: `reread` gives
/// back the few files an error across files names.
pub fn load_stream(
    commit: Option<String>,
    items: std::sync::mpsc::Receiver<FileItem>,
    reread: Reread<'_>,
) -> Result<Desired, Vec<Diagnostic>> {
    stream(commit, items, check::Keep::Model, reread).map(|(d, _)| d)
}

/// What [`load_stream`] checks, keeping no model: each cluster is dropped once checked,
/// and only its name, node ids and addresses stay for the checks across files, so memory
/// does not grow with the size of the files. What `cacheflow validate` runs.
pub fn check_stream(
    commit: Option<String>,
    items: std::sync::mpsc::Receiver<FileItem>,
    reread: Reread<'_>,
) -> Result<Summary, Vec<Diagnostic>> {
    stream(commit, items, check::Keep::Keys, reread).map(|(_, s)| s)
}

fn stream(
    commit: Option<String>,
    items: std::sync::mpsc::Receiver<FileItem>,
    keep: check::Keep,
    reread: Reread<'_>,
) -> Result<(Desired, Summary), Vec<Diagnostic>> {
    let mut problems = Vec::new();
    let mut shared_files = Vec::new();
    let mut policy_files: Vec<(String, String)> = Vec::new();
    let mut first_cluster = None;
    for item in items.iter() {
        match item {
            FileItem::Problem(p) => problems.push(p),
            FileItem::File { path, text } if path.starts_with("clusters/") => {
                first_cluster = Some(FileItem::File { path, text });
                break;
            }
            FileItem::File { path, text } if is_policy(&path) => policy_files.push((path, text)),
            FileItem::File { path, text } if is_document(&path) => {
                shared_files.push((Cow::Owned(path), Cow::Owned(text)))
            }
            FileItem::File { .. } => {}
        }
    }
    let policy_refs: Vec<(&String, &String)> = policy_files.iter().map(|(p, t)| (p, t)).collect();
    let Prelude {
        mut diags,
        shared,
        policies,
    } = prelude(&problems, shared_files, &policy_refs);

    let queue = std::sync::Mutex::new((first_cluster, items));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    let (mut outs, late_problems): (Vec<check::ClusterOut>, Vec<FileProblem>) =
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut outs = Vec::new();
                        let mut problems = Vec::new();
                        loop {
                            let next = match queue.lock() {
                                Ok(mut q) => q.0.take().or_else(|| q.1.recv().ok()),
                                Err(_) => None,
                            };
                            match next {
                                None => break,
                                Some(FileItem::Problem(p)) => problems.push(p),
                                Some(FileItem::File { path, text }) if is_document(&path) => outs
                                    .push(check::cluster_file(
                                        Cow::Owned(path),
                                        Cow::Owned(text),
                                        &shared,
                                        &policies,
                                        keep,
                                    )),
                                Some(FileItem::File { .. }) => {}
                            }
                        }
                        (outs, problems)
                    })
                })
                .collect();
            let mut outs = Vec::new();
            let mut problems = Vec::new();
            for h in handles {
                match h.join() {
                    Ok((o, p)) => {
                        outs.extend(o);
                        problems.extend(p);
                    }
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            (outs, problems)
        });
    diags.extend(
        late_problems
            .iter()
            .map(|p| file_level(&p.path, &p.message)),
    );
    // Workers finish in any order; the checks across files go in path order.
    outs.sort_by(|a, b| a.path().cmp(b.path()));
    finish(commit, diags, shared, outs, reread)
}

#[cfg(test)]
mod tests {

    #[test]
    fn json_positions_count_a_lone_carriage_return_as_a_line_break() {
        let text = "{\"a\": 1,\r\"b\" 2}";
        let e = serde_json::from_str::<serde_json::Value>(text).unwrap_err();
        let (line, column, message) = json_error_position(text, &e);
        assert_eq!((line, column), (2, 5), "{message}");
        assert_eq!(message, "expected `:`");
        let text = "{\r\n\"a\" 1}";
        let e = serde_json::from_str::<serde_json::Value>(text).unwrap_err();
        assert_eq!(json_error_position(text, &e).0, 2);
    }

    use super::*;
    use crate::pure::render;

    fn files(list: &[(&str, &str)]) -> FileSet {
        FileSet {
            commit: None,
            files: list
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
            problems: Vec::new(),
        }
    }

    const CLUSTER: &str = "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n  name: c1\nspec:\n  engine: redis\n  parameters:\n    maxmemory: 1gb\n  nodes:\n    - {id: n1, address: '10.0.0.1:6379', shard: s1, role: primary}\n    - {id: n2, address: '10.0.0.2:6379', shard: s1, role: replica}\n";

    #[test]
    fn a_minimal_repository_loads_with_defaults() {
        let d = load(&files(&[("clusters/c1.yaml", CLUSTER)])).unwrap();
        let c = &d.clusters["c1"];
        assert_eq!(c.parameters["maxmemory"].value, "1073741824");
        assert_eq!(c.parameters["maxmemory"].written, "1gb");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.rollout, model::RolloutPolicy::default());
    }

    #[test]
    fn loading_a_stream_gives_what_loading_the_set_gives() {
        let profile = "apiVersion: cacheflow/v1\nkind: Profile\nmetadata: {name: p}\nspec:\n  engine: redis\n  parameters: {hz: 20}\n";
        let with_profile = CLUSTER
            .replace("c1", "c2")
            .replace("10.0.0.", "10.0.1.")
            .replace("n1", "m1")
            .replace("n2", "m2")
            .replace("  engine: redis\n", "  engine: redis\n  profile: p\n");
        let dup = CLUSTER.replace("c1", "c3");
        let mut set = files(&[
            ("profiles/p.yaml", profile),
            ("clusters/c1.yaml", CLUSTER),
            ("clusters/c2.yaml", &with_profile),
        ]);
        let run = |set: &FileSet| {
            let (tx, rx) = std::sync::mpsc::channel();
            let (tx_again, rx_again) = std::sync::mpsc::channel();
            // The reader's order: profiles before clusters.
            for (path, text) in set.files.iter().rev() {
                for tx in [&tx, &tx_again] {
                    tx.send(FileItem::File {
                        path: path.clone(),
                        text: text.clone(),
                    })
                    .unwrap();
                }
            }
            drop((tx, tx_again));
            let mut reread = |paths: &[String]| {
                paths
                    .iter()
                    .filter_map(|p| set.files.get(p).map(|t| (p.clone(), t.clone())))
                    .collect()
            };
            (
                load_stream(None, rx, &mut reread),
                check_stream(None, rx_again, &mut reread),
            )
        };
        let a = load(&set).unwrap();
        let (b, summary) = run(&set);
        let b = b.unwrap();
        assert_eq!(render::json(&a), render::json(&b));
        assert_eq!(b.clusters["c2"].parameters["hz"].value, "20");
        let summary = summary.unwrap();
        assert_eq!(
            summary,
            Summary {
                clusters: 2,
                profiles: 1,
                nodes: 4
            }
        );
        assert_eq!(summary, Summary::of(&a));
        // Errors too, across files: the files they name are read again for positions.
        set.files.insert("clusters/c3.yaml".into(), dup);
        let (b, summary) = run(&set);
        let errors = load(&set).unwrap_err();
        assert_eq!(
            errors.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            vec![
                "clusters/c3.yaml:10:12: node id `n1` is already used at clusters/c1.yaml:10 (at /spec/nodes/0/id)",
                "clusters/c3.yaml:10:25: address `10.0.0.1:6379` is already used at clusters/c1.yaml:10 (at /spec/nodes/0/address)",
                "clusters/c3.yaml:11:12: node id `n2` is already used at clusters/c1.yaml:11 (at /spec/nodes/1/id)",
                "clusters/c3.yaml:11:25: address `10.0.0.2:6379` is already used at clusters/c1.yaml:11 (at /spec/nodes/1/address)",
            ]
        );
        assert_eq!(errors, b.unwrap_err());
        assert_eq!(errors, summary.unwrap_err());
    }

    #[test]
    fn a_redis_node_without_role_is_whatever_it_runs_as() {
        // Two nodes of one shard and no role: valid, neither declared.
        let open = CLUSTER
            .replace(", role: primary}", "}")
            .replace(", role: replica}", "}");
        let d = load(&files(&[("clusters/c1.yaml", &open)])).unwrap();
        let roles: Vec<Option<model::Role>> =
            d.clusters["c1"].nodes.iter().map(|n| n.role).collect();
        assert_eq!(roles, vec![None, None]);
        // A declared replica beside a node without role: that node may be its primary.
        let half = CLUSTER.replace(", role: primary}", "}");
        assert!(load(&files(&[("clusters/c1.yaml", &half)])).is_ok());
        // Only declared replicas: no node can be the primary.
        let none = CLUSTER.replace("role: primary", "role: replica");
        let errs = load(&files(&[("clusters/c1.yaml", &none)])).unwrap_err();
        assert_eq!(
            errs.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            vec!["clusters/c1.yaml:10:49: shard `s1` has replicas but no primary (at /spec/nodes/0/shard)"]
        );
        // Memcached nodes are primaries, declared or not.
        let mc = "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n  name: m\nspec:\n  engine: memcached\n  nodes:\n    - {id: m1, address: '10.0.0.9:11211'}\n";
        let d = load(&files(&[("clusters/m.yaml", mc)])).unwrap();
        assert_eq!(d.clusters["m"].nodes[0].role, Some(model::Role::Primary));
    }

    #[test]
    fn cluster_mode_keeps_cluster_enabled_on_and_each_nodes_own_config_file() {
        let cluster = CLUSTER.replace("  engine: redis\n", "  engine: redis\n  mode: cluster\n");
        let d = load(&files(&[("clusters/c1.yaml", &cluster)])).unwrap();
        assert_eq!(d.clusters["c1"].mode, model::ClusterMode::Cluster);
        let messages = |text: &str| -> Vec<String> {
            load(&files(&[("clusters/c1.yaml", text)]))
                .unwrap_err()
                .iter()
                .map(|d| d.message.clone())
                .collect()
        };
        let off = cluster.replace(
            "maxmemory: 1gb",
            "maxmemory: 1gb\n    cluster-enabled: 'no'\n    cluster-config-file: n.conf",
        );
        assert_eq!(
            messages(&off),
            vec![
                "a `mode: cluster` cluster runs with `cluster-enabled yes`: turning it off takes the node out of the cluster (start-only, refused)",
                "`cluster-config-file` is each node's own state (its id, epoch and peers): a node restarted with another file starts as a new, empty member the cluster does not know; set it where the node is installed, not here",
            ]
        );
        let on = CLUSTER.replace(
            "maxmemory: 1gb",
            "maxmemory: 1gb\n    cluster-enabled: 'yes'",
        );
        assert_eq!(
            messages(&on),
            vec!["`cluster-enabled yes` makes the nodes Redis Cluster members: declare `mode: cluster` so that shards, gates and failovers follow the cluster's own view"]
        );
    }

    #[test]
    fn a_cluster_names_its_sentinels_by_reference_and_each_once() {
        let with = |block: &str| CLUSTER.replace("  nodes:\n", &format!("{block}  nodes:\n"));
        let ok = with("  sentinel:\n    masterName: main\n    addresses: ['10.0.1.1:26379', '10.0.1.2:26379', '10.0.1.3:26379']\n    auth: {password: env:SENTINEL_PASSWORD}\n");
        let d = load(&files(&[("clusters/c1.yaml", &ok)])).unwrap();
        let s = d.clusters["c1"].sentinel.clone().unwrap();
        assert_eq!((s.master_name.as_str(), s.quorum()), ("main", 2));
        let messages = |text: &str| -> Vec<String> {
            load(&files(&[("clusters/c1.yaml", text)]))
                .unwrap_err()
                .iter()
                .map(|d| d.message.clone())
                .collect()
        };
        let twice = with("  sentinel:\n    masterName: main\n    addresses: ['10.0.1.1:26379', '10.0.1.1:26379', '10.0.0.2:6379']\n");
        assert_eq!(
            messages(&twice),
            vec![
                "Sentinel 10.0.1.1:26379 is named twice",
                "10.0.0.2:6379 is a node of the cluster, not a Sentinel",
            ]
        );
        let literal = with("  sentinel:\n    masterName: main\n    addresses: ['10.0.1.1:26379']\n    auth: {password: hunter2}\n");
        assert!(!messages(&literal).is_empty());
        let cluster_mode = with("  mode: cluster\n  sentinel:\n    masterName: main\n    addresses: ['10.0.1.1:26379']\n");
        assert!(messages(&cluster_mode)
            .iter()
            .any(|m| m.contains("fails over by itself, not through Sentinels")));
    }

    #[test]
    fn errors_are_reported_all_at_once_and_sorted() {
        let bad = CLUSTER
            .replace("maxmemory: 1gb", "maxmemory: lots\n    maxmemroy: 1gb")
            .replace("role: replica", "role: primary");
        let errs = load(&files(&[("clusters/c1.yaml", &bad)])).unwrap_err();
        let lines: Vec<String> = errs.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            vec![
                "clusters/c1.yaml:8:16: `maxmemory`: expected a size such as 4gb or 1048576, found `lots` (at /spec/parameters/maxmemory)",
                "clusters/c1.yaml:9:5: unknown redis parameter `maxmemroy` (at /spec/parameters/maxmemroy)",
                "clusters/c1.yaml:12:59: shard `s1` has more than one primary: `n1` is already its primary (at /spec/nodes/1/role)",
            ]
        );
    }
}
