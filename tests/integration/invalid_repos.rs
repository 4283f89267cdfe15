//! Bad input gets a clear error, never a panic: golden tests over invalid config
//! repositories, run through the real binary, plus the command line's own bad inputs
//! (revisions, paths, live snapshots).
//!
//! Each `tests/fixtures/invalid/<case>/` holds `repo/` (the files of one commit) and
//! `expected.txt`, the exact stdout of `cacheflow validate`. The commit id in the
//! summary line is written `<commit>` in `expected.txt`: the test substitutes the real
//! short id before comparing. (The helper also commits with a fixed author, committer
//! and time, so ids are reproducible, but an id still changes with every edit of a
//! fixture; the placeholder keeps `expected.txt` stable and reviewable.) An optional
//! `never-shown.txt` lists strings (secrets) that must appear in no output at all.
//!
//! To regenerate every `expected.txt` after a deliberate change of messages, run with
//! `CACHEFLOW_BLESS=1` and review the diff before committing it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use git2::{IndexAddOption, Repository, Signature, Time};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_cacheflow");

// ---------------------------------------------------------------------------------------
// helpers

/// A work tree with a git repository, committed to with a fixed identity and time.
/// (A local helper: `support/git.rs` is another engineer's, not yet there.)
struct TestRepo {
    dir: TempDir,
    repo: Repository,
    commits: i64,
}

impl TestRepo {
    fn new() -> TestRepo {
        let dir = TempDir::new().expect("temp dir");
        let repo = Repository::init(dir.path()).expect("git init");
        TestRepo {
            dir,
            repo,
            commits: 0,
        }
    }

    /// A repository holding a copy of `src` (files and symlinks), not yet committed.
    fn from_dir(src: &Path) -> TestRepo {
        let t = TestRepo::new();
        copy_tree(src, t.path());
        t
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn arg(&self) -> String {
        self.path().display().to_string()
    }

    fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> &Self {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
        self
    }

    #[cfg(unix)]
    fn symlink(&self, rel: &str, target: &str) -> &Self {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, path).expect("symlink");
        self
    }

    fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path().join(rel)).expect("remove");
        self
    }

    /// Commit the whole work tree (additions, changes and deletions); the full id.
    fn commit(&mut self, message: &str) -> String {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"], IndexAddOption::DEFAULT | IndexAddOption::FORCE, None)
            .expect("add");
        index.update_all(["*"], None).expect("update");
        index.write().expect("write index");
        let tree_id = index.write_tree().expect("write tree");
        let tree = self.repo.find_tree(tree_id).expect("tree");
        // Fixed identity and clock: the same files always give the same commit id.
        let when = Time::new(1_700_000_000 + self.commits * 60, 0);
        let sig =
            Signature::new("cacheflow tests", "tests@cacheflow.invalid", &when).expect("signature");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit");
        self.commits += 1;
        id.to_string()
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    for entry in std::fs::read_dir(src).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let to = dst.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
            copy_tree(&entry.path(), &to);
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).expect("link"), &to)
                .expect("symlink");
        } else {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

/// Run the real binary with no `CACHEFLOW_*` settings leaking in from the environment.
fn cacheflow(args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CACHEFLOW_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args).output().expect("run cacheflow")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("stderr is UTF-8")
}

fn short(id: &str) -> &str {
    &id[..12]
}

/// `cacheflow validate --repo <repo>` must fail with exactly `expected` on stdout
/// (`<commit>` standing for the short id), nothing on stderr, and a JSON rendering that
/// agrees. Returns the text output.
fn assert_invalid(t: &TestRepo, commit: &str, expected: &str) -> String {
    let out = cacheflow(&["validate", "--repo", &t.arg()]);
    let text = stdout(&out).replace(short(commit), "<commit>");
    assert_eq!(text, expected, "stdout of validate");
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code; stderr: {}",
        stderr(&out)
    );
    assert_eq!(stderr(&out), "", "stderr of validate");
    text
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid")
}

// ---------------------------------------------------------------------------------------
// golden fixtures

struct CaseResult {
    name: String,
    problems: Vec<String>,
}

fn run_fixture(case: &Path, bless: bool) -> CaseResult {
    let name = case.file_name().unwrap().to_string_lossy().into_owned();
    let mut problems = Vec::new();
    let mut t = TestRepo::from_dir(&case.join("repo"));
    let commit = t.commit(&format!("fixture {name}"));

    let out = cacheflow(&["validate", "--repo", &t.arg()]);
    let text = stdout(&out).replace(short(&commit), "<commit>");
    let err = stderr(&out);
    let expected_path = case.join("expected.txt");
    if bless {
        std::fs::write(&expected_path, &text).expect("write expected.txt");
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if text != expected {
        problems.push(format!(
            "stdout differs\n--- expected\n{expected}--- actual\n{text}---"
        ));
    }
    if out.status.code() != Some(1) {
        problems.push(format!("exit code {:?}, expected 1", out.status.code()));
    }
    if !err.is_empty() {
        problems.push(format!("unexpected stderr: {err}"));
    }
    let lines: Vec<&str> = text.lines().collect();
    match lines.last() {
        Some(last) if last.starts_with("invalid: ") && last.ends_with(" at <commit>") => {}
        other => problems.push(format!("summary line missing: {other:?}")),
    }
    let error_lines = lines.len().saturating_sub(1);

    let json_out = cacheflow(&["validate", "--repo", &t.arg(), "--format", "json"]);
    let json_text = stdout(&json_out);
    if json_out.status.code() != Some(1) {
        problems.push(format!(
            "--format json: exit code {:?}",
            json_out.status.code()
        ));
    }
    match serde_json::from_str::<serde_json::Value>(&json_text) {
        Ok(v) => {
            if v["valid"] != serde_json::Value::Bool(false) {
                problems.push(format!("--format json: valid is {}", v["valid"]));
            }
            if v["commit"].as_str() != Some(commit.as_str()) {
                problems.push(format!("--format json: commit is {}", v["commit"]));
            }
            let n = v["errors"].as_array().map(Vec::len);
            if n != Some(error_lines) {
                problems.push(format!(
                    "--format json: {n:?} errors, the text output has {error_lines}"
                ));
            }
            for e in v["errors"].as_array().into_iter().flatten() {
                let ok = e["line"].as_u64().is_some_and(|l| l >= 1)
                    && e["column"].as_u64().is_some_and(|c| c >= 1)
                    && e["message"].as_str().is_some_and(|m| !m.is_empty())
                    && e["file"].as_str().is_some();
                if !ok {
                    problems.push(format!("--format json: malformed error {e}"));
                }
            }
        }
        Err(e) => problems.push(format!("--format json is not JSON ({e}): {json_text}")),
    }

    if let Ok(secrets) = std::fs::read_to_string(case.join("never-shown.txt")) {
        let everything = format!("{text}{err}{json_text}{}", stderr(&json_out));
        for secret in secrets.lines().filter(|s| !s.is_empty()) {
            if everything.contains(secret) {
                problems.push(format!("the secret `{secret}` appears in the output"));
            }
        }
    }
    CaseResult { name, problems }
}

#[test]
fn every_invalid_fixture_repository_gets_exactly_its_expected_errors() {
    let bless = std::env::var_os("CACHEFLOW_BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures/invalid")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("repo").is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 30, "only {} fixtures found", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .map(|c| run_fixture(c, bless))
        .filter(|r| !r.problems.is_empty())
        .map(|r| format!("== {}\n{}", r.name, r.problems.join("\n")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed (CACHEFLOW_BLESS=1 regenerates expected.txt):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// files that cannot be committed as fixtures

const CLUSTER: &str = "apiVersion: cacheflow/v1
kind: Cluster
metadata:
  name: web
spec:
  engine: redis
  nodes:
    - id: web-1
      address: 10.0.0.1:6379
";

#[test]
fn a_file_over_one_mebibyte_is_reported_and_not_parsed() {
    let mut t = TestRepo::new();
    // Valid YAML all the way, so only the size can be the reason.
    let mut huge = String::from(CLUSTER);
    while huge.len() < 3 << 19 {
        huge.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    t.write("clusters/web.yaml", &huge);
    let commit = t.commit("huge");
    assert_invalid(
        &t,
        &commit,
        "clusters/web.yaml:1:1: file is 1.5 MiB; cacheflow reads files up to 1 MiB\n\
         invalid: 1 error in 1 file at <commit>\n",
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported_with_the_byte() {
    let mut t = TestRepo::new();
    // A Latin-1 `é` in an otherwise valid document.
    let mut bytes = CLUSTER
        .replace("name: web", "name: web\n  description: caf")
        .into_bytes();
    let at = bytes.windows(3).position(|w| w == b"caf").unwrap() + 3;
    bytes.insert(at, 0xe9);
    t.write("clusters/web.yaml", &bytes);
    let commit = t.commit("latin1");
    assert_invalid(
        &t,
        &commit,
        &format!(
            "clusters/web.yaml:1:1: not valid UTF-8 at byte {at}\n\
             invalid: 1 error in 1 file at <commit>\n"
        ),
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_leaving_the_tree_is_refused_and_one_inside_it_is_followed() {
    let mut t = TestRepo::new();
    t.write("shared/web.yaml", CLUSTER)
        .symlink("clusters/web.yaml", "../shared/web.yaml")
        .symlink("clusters/passwd.yaml", "../../../../../../etc/passwd")
        .symlink("clusters/abs.yaml", "/etc/passwd");
    let commit = t.commit("links");
    let text = assert_invalid(
        &t,
        &commit,
        "clusters/abs.yaml:1:1: symlink points outside the repository: /etc/passwd\n\
         clusters/passwd.yaml:1:1: symlink points outside the repository: ../../../../../../etc/passwd\n\
         invalid: 2 errors in 2 files at <commit>\n",
    );
    assert!(
        !text.contains("root:"),
        "the target's content leaked: {text}"
    );

    // Without the escaping links, the link inside the tree is read like the file.
    t.remove("clusters/passwd.yaml").remove("clusters/abs.yaml");
    let commit = t.commit("inside only");
    let out = cacheflow(&["validate", "--repo", &t.arg()]);
    assert_eq!(
        stdout(&out),
        format!(
            "valid: 1 cluster, 0 profiles, 1 node at {}\n",
            short(&commit)
        )
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// BUG (src/spec/schema.rs `findings`, fallback arm): a type error echoes the instance,
/// so `auth: <the password>` prints the password. Un-ignore once fixed.
#[test]
fn a_password_written_as_the_whole_auth_value_is_never_echoed() {
    let mut t = TestRepo::new();
    t.write(
        "clusters/web.yaml",
        CLUSTER.replace("  nodes:", "  auth: hunter2-s3cret\n  nodes:"),
    );
    t.commit("leak");
    for format in ["text", "json"] {
        let out = cacheflow(&["validate", "--repo", &t.arg(), "--format", format]);
        assert_eq!(out.status.code(), Some(1));
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!all.contains("hunter2-s3cret"), "{all}");
    }
}

// ---------------------------------------------------------------------------------------
// bad command-line input

/// A valid one-cluster repository with one commit.
fn valid_repo() -> (TestRepo, String) {
    let mut t = TestRepo::new();
    t.write("clusters/web.yaml", CLUSTER);
    let commit = t.commit("valid");
    (t, commit)
}

/// How the binary names a work tree in messages (git2's workdir, with its slash).
fn repo_name(t: &TestRepo) -> String {
    format!("{}/", t.path().display())
}

#[test]
fn a_revision_that_does_not_exist_is_an_error_naming_it() {
    let (t, _) = valid_repo();
    let out = cacheflow(&["validate", "--repo", &t.arg(), "--rev", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "error: revision `no-such-branch` does not exist in {}\n",
            repo_name(&t)
        )
    );
}

#[test]
fn a_path_that_is_not_a_git_repository_is_an_error() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("cacheflow.yaml"), "x: 1\n").unwrap();
    let out = cacheflow(&["validate", "--repo", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("error: {}: not a git repository\n", dir.path().display())
    );
    let missing = dir.path().join("nowhere");
    let out = cacheflow(&["validate", "--repo", &missing.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("error: {}: not a git repository\n", missing.display())
    );
}

/// `plan --live FILE` with a bad FILE: exit 1, nothing on stdout, the reason on stderr.
fn plan_with_live(t: &TestRepo, live: &Path) -> (i32, String, String) {
    let out = cacheflow(&[
        "plan",
        "--repo",
        &t.arg(),
        "--live",
        &live.display().to_string(),
    ]);
    (out.status.code().unwrap_or(-1), stdout(&out), stderr(&out))
}

#[test]
fn a_missing_live_snapshot_is_an_error() {
    let (t, _) = valid_repo();
    let live = t.path().join("missing.json");
    let (code, out, err) = plan_with_live(&t, &live);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "error: cannot read live state {}: No such file or directory (os error 2)\n",
            live.display()
        )
    );
}

#[test]
fn an_unreadable_live_snapshot_is_an_error() {
    // A directory: readable metadata, unreadable content, even for root.
    let (t, _) = valid_repo();
    let live = t.path().join("clusters");
    let (code, out, err) = plan_with_live(&t, &live);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "error: cannot read live state {}: Is a directory (os error 21)\n",
            live.display()
        )
    );
}

#[test]
fn a_malformed_live_snapshot_says_where() {
    let (t, _) = valid_repo();
    let live = t.path().join("live.json");
    std::fs::write(&live, "{\"version\": 1,\n \"nodes\": {").unwrap();
    let (code, out, err) = plan_with_live(&t, &live);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "error: live state {}:2:11: not valid JSON: EOF while parsing an object\n",
            live.display()
        )
    );
    std::fs::write(&live, [0xff, 0xfe, 0x00]).unwrap();
    let (code, out, err) = plan_with_live(&t, &live);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(
        err.starts_with(&format!(
            "error: live state {}:1:1: not valid JSON",
            live.display()
        )),
        "{err}"
    );
}

#[test]
fn a_live_snapshot_of_another_version_is_refused() {
    let (t, _) = valid_repo();
    let live = t.path().join("live.json");
    std::fs::write(&live, r#"{"version": 2, "nodes": {}}"#).unwrap();
    let (code, out, err) = plan_with_live(&t, &live);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "error: live state {}: format version 2 is not supported (this cacheflow reads version 1)\n",
            live.display()
        )
    );
}

#[test]
fn a_live_snapshot_that_breaks_its_schema_lists_every_problem() {
    let (t, _) = valid_repo();
    let live = t.path().join("live.json");
    std::fs::write(
        &live,
        r#"{"version": 1, "nodes": {"web-1": {"reachable": "yes", "extra": 1}}}"#,
    )
    .unwrap();
    let (code, out, err) = plan_with_live(&t, &live);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "error: live state {} does not match schemas/live-state.schema.json:\n  \
             /nodes/web-1/extra: unknown field `extra`\n  \
             /nodes/web-1/reachable: expected a boolean, found a string: \"yes\"\n",
            live.display()
        )
    );
}

#[test]
fn diff_from_a_base_that_does_not_exist_is_an_error() {
    let (t, _) = valid_repo();
    let out = cacheflow(&["diff", "--repo", &t.arg(), "--base", "no-such-base"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "error: revision `no-such-base` does not exist in {}\n",
            repo_name(&t)
        )
    );
}

#[test]
fn diff_to_an_invalid_head_computes_nothing_and_shows_the_errors() {
    let (mut t, _) = valid_repo();
    t.write(
        "clusters/web.yaml",
        CLUSTER.replace("  nodes:", "  parameters:\n    maxmemory: lots\n  nodes:"),
    );
    let head = t.commit("break it");
    let error = "clusters/web.yaml:8:16: `maxmemory`: expected a size such as 4gb or 1048576, found `lots` (at /spec/parameters/maxmemory)";

    for format in ["text", "markdown"] {
        let out = cacheflow(&[
            "diff",
            "--repo",
            &t.arg(),
            "--base",
            "HEAD~1",
            "--format",
            format,
        ]);
        assert_eq!(out.status.code(), Some(1), "{format}");
        assert_eq!(stdout(&out), format!("{error}\n"), "{format}");
        assert_eq!(
            stderr(&out),
            format!("error: head {} is invalid (1 error)\n", short(&head)),
            "{format}"
        );
    }

    let out = cacheflow(&[
        "diff",
        "--repo",
        &t.arg(),
        "--base",
        "HEAD~1",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(v["error"], format!("head {} is invalid", short(&head)));
    assert_eq!(v["errors"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["errors"][0]["line"], 8);
    assert_eq!(v["errors"][0]["pointer"], "/spec/parameters/maxmemory");

    // The same with the roles swapped: an invalid base is refused too.
    let out = cacheflow(&[
        "diff",
        "--repo",
        &t.arg(),
        "--base",
        "HEAD",
        "--head",
        "HEAD~1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), format!("{error}\n"));
    assert_eq!(
        stderr(&out),
        format!("error: base {} is invalid (1 error)\n", short(&head))
    );
}

/// `diff` parses only the changed files (and Settings, the profiles they name, and the
/// policies): repository-wide checks that involve an unchanged file, such as a node id
/// taken by another cluster, are `validate`'s job, which CI runs beside it. A policy a
/// changed cluster breaks does fail the diff.
#[test]
fn diff_leaves_repository_wide_checks_to_validate_but_applies_policies() {
    let (mut t, _) = valid_repo();
    t.write(
        "clusters/api.yaml",
        CLUSTER
            .replace("name: web", "name: api")
            .replace("id: web-1", "id: api-1")
            .replace("10.0.0.1", "10.0.0.2"),
    );
    t.commit("second cluster");
    // web now takes api's node id: a duplicate across clusters; api.yaml is unchanged.
    t.write(
        "clusters/web.yaml",
        CLUSTER.replace("id: web-1", "id: api-1"),
    );
    t.commit("duplicate id");
    let validate = cacheflow(&["validate", "--repo", &t.arg()]);
    assert_eq!(validate.status.code(), Some(1), "{}", stdout(&validate));
    assert!(
        stdout(&validate).contains("node id `api-1` is already used at clusters/api.yaml"),
        "{}",
        stdout(&validate)
    );
    let out = cacheflow(&["diff", "--repo", &t.arg(), "--base", "HEAD~1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));

    // A policy in the repository, broken by the changed cluster: the diff refuses it.
    t.write(
        "policies/no-noeviction.schema.json",
        r#"{"title": "no noeviction", "properties": {"spec": {"properties": {"parameters": {"properties": {"maxmemory-policy": {"not": {"const": "noeviction"}}}}}}}}"#,
    );
    t.commit("policy");
    t.write(
        "clusters/api.yaml",
        CLUSTER
            .replace("name: web", "name: api")
            .replace("id: web-1", "id: api-1")
            .replace("10.0.0.1", "10.0.0.2")
            .replace(
                "  engine: redis\n",
                "  engine: redis\n  parameters:\n    maxmemory-policy: noeviction\n",
            ),
    );
    t.commit("noeviction");
    let out = cacheflow(&["diff", "--repo", &t.arg(), "--base", "HEAD~1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("violates policy `no noeviction`"),
        "{}",
        stdout(&out)
    );
}
