//! The command line people use, through the real binary: completions and manual pages
//! written from the arguments, `--version` with the commit and build date, colour and
//! `+ - ~` marks only on a terminal or when asked (`NO_COLOR` honoured; a terminal is a
//! real pseudo-terminal from `script`), what `history` says of a commit without a note,
//! `sync --cluster` on real redis-server nodes, and `rollout wait` against a real
//! `cacheflow serve` rolling out to real redis-server nodes (exit 0 completed, 1 rolled
//! back or timed out).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::{Remote, Server};
use crate::support::fleet::Fleet;
use crate::support::git::TestRepo;
use crate::support::servers::RedisServer;

const TOKEN: &str = "admin-token-0123456789";

/// `cacheflow ARGS` in `dir` with `env`: exit code, stdout, stderr.
fn run(dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cacheflow"));
    cmd.args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .envs(env.iter().copied());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output().expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cacheflow ARGS` on a pseudo-terminal (util-linux `script`): exit code and what the
/// terminal showed (`\r\n` read back as `\n`).
fn on_terminal(dir: &Path, args: &str, env: &[(&str, &str)]) -> (i32, String) {
    let line = format!("{} {args}", env!("CARGO_BIN_EXE_cacheflow"));
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script` runs (it gives the command a terminal)");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n"),
    )
}

#[test]
fn completions_name_every_command_for_bash_zsh_and_fish() {
    let (code, bash, err) = run(None, &["completions", "bash"], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(bash.starts_with("_cacheflow() {\n"), "{bash}");
    assert!(
        bash.contains("complete -F _cacheflow -o nosort -o bashdefault -o default cacheflow\n")
            || bash.contains("complete -F _cacheflow -o bashdefault -o default cacheflow\n"),
        "{bash}"
    );
    for command in [
        "validate",
        "diff",
        "plan",
        "drift",
        "snapshot",
        "import",
        "sync",
        "serve",
        "rollout",
        "history",
        "agent",
        "demo",
        "agent-token",
        "completions",
        "man",
    ] {
        assert!(
            bash.contains(&format!("cacheflow,{command})")),
            "bash completes {command}"
        );
    }
    for action in [
        "status", "pause", "resume", "promote", "abort", "override", "retry", "wait",
    ] {
        assert!(
            bash.contains(&format!("cacheflow__subcmd__rollout,{action})\n")),
            "bash completes rollout {action}"
        );
    }
    let (code, zsh, _) = run(None, &["completions", "zsh"], &[]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef cacheflow\n"), "{zsh}");
    assert!(zsh.contains("'wait:Wait until the cluster"), "{zsh}");
    let (code, fish, _) = run(None, &["completions", "fish"], &[]);
    assert_eq!(code, 0);
    assert!(
        fish.contains("complete -c cacheflow -n \"__fish_cacheflow_using_subcommand rollout; and not __fish_seen_subcommand_from status pause resume promote abort override retry wait help\" -f -a \"wait\""),
        "{fish}"
    );
    // An unknown shell is a usage error (exit 1, as every usage error).
    let (code, out, err) = run(None, &["completions", "tcsh"], &[]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}

#[test]
fn man_prints_a_roff_page_and_writes_one_page_per_command() {
    let (code, page, err) = run(None, &["man"], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    let lines: Vec<&str> = page.lines().collect();
    assert_eq!(
        &lines[..5],
        &[
            ".ie \\n(.g .ds Aq \\(aq",
            ".el .ds Aq '",
            &format!(
                ".TH cacheflow 1  \"cacheflow {}\" ",
                version_words()
            ),
            ".SH NAME",
            "cacheflow \\- GitOps for cache fleets: validate, diff and plan Redis and Memcached configuration kept in Git",
        ]
    );
    for section in [
        ".SH SYNOPSIS",
        ".SH OPTIONS",
        ".SH SUBCOMMANDS",
        ".SH EXTRA",
    ] {
        assert!(lines.contains(&section), "{section} in {page}");
    }
    for command in ["sync", "rollout", "history", "completions", "man"] {
        assert!(
            page.contains(&format!("cacheflow\\-{command}(1)")),
            "{command} in {page}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    let (code, out, err) = run(
        None,
        &["man", "--output-dir", out_dir.to_str().unwrap()],
        &[],
    );
    assert_eq!(
        (code, out, err.as_str()),
        (
            0,
            format!("wrote the manual pages into {}\n", out_dir.display()),
            ""
        )
    );
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    for page in [
        "cacheflow.1",
        "cacheflow-sync.1",
        "cacheflow-rollout.1",
        "cacheflow-rollout-wait.1",
        "cacheflow-rollout-retry.1",
        "cacheflow-completions.1",
    ] {
        assert!(files.iter().any(|f| f == page), "{page} in {files:?}");
    }
    assert_eq!(files.len(), 24, "{files:?}");
    let wait = std::fs::read_to_string(out_dir.join("cacheflow-rollout-wait.1")).unwrap();
    assert!(
        wait.contains(".SH NAME\ncacheflow\\-rollout\\-wait \\- Wait until the cluster"),
        "{wait}"
    );
    assert!(wait.contains("\\fB\\-\\-timeout\\fR"), "{wait}");
}

/// `0.1.0 (commit 0123456789ab, built 2026-12-06)` with this checkout's commit.
fn version_words() -> String {
    let (_, out, _) = run(None, &["--version"], &[]);
    out.trim_end().trim_start_matches("cacheflow ").to_owned()
}

#[test]
fn version_says_the_commit_and_the_build_date() {
    let (code, out, err) = run(None, &["--version"], &[]);
    assert_eq!((code, err.as_str()), (0, ""));
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let prefix = format!(
        "cacheflow {} (commit {commit}, built ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(out.starts_with(&prefix), "{out:?} starts with {prefix:?}");
    let date = out[prefix.len()..].trim_end_matches(")\n");
    assert_eq!(date.len(), 10, "{out:?}");
    assert!(
        date.chars().enumerate().all(|(i, c)| if i == 4 || i == 7 {
            c == '-'
        } else {
            c.is_ascii_digit()
        }),
        "{out:?}"
    );
    assert!(out.ends_with(")\n"), "{out:?}");
    // Every command says the same.
    let (_, sub, _) = run(None, &["rollout", "--version"], &[]);
    assert_eq!(sub, out.replacen("cacheflow", "cacheflow-rollout", 1));
}

fn cluster(params: &str, nodes: &[(&str, u16)]) -> String {
    let nodes: String = nodes
        .iter()
        .map(|(id, port)| format!("    - {{id: {id}, address: '127.0.0.1:{port}'}}\n"))
        .collect();
    format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  engine: redis\n  parameters:\n{params}\n  nodes:\n{nodes}"
    )
}

/// A change that adds, removes and changes a parameter and a node.
fn changed_repo() -> (TestRepo, String, String) {
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        &cluster(
            "    hz: 20\n    timeout: 300",
            &[("n1", 6390), ("n2", 6391)],
        ),
    );
    let base = repo.commit("one");
    repo.write(
        "clusters/cache.yaml",
        &cluster(
            "    hz: 25\n    maxmemory: 64mb",
            &[("n1", 6390), ("n3", 6392)],
        ),
    );
    let head = repo.commit("two");
    (repo, base[..12].to_owned(), head[..12].to_owned())
}

const ESC: &str = "\x1b[";

#[test]
fn diff_is_coloured_with_marks_only_on_a_terminal_or_when_asked_and_never_under_no_color() {
    let (repo, base, head) = changed_repo();
    let dir = Some(repo.path());
    let plain = format!(
        "diff {base} → {head}

cluster cache (redis, clusters/cache.yaml): modified
  parameters:
    hz: 20 → 25 (run time)
    maxmemory: (unset) → 64mb (run time)
    timeout: 300 → (unset) (no longer managed: nodes keep their value)
  nodes added:
    n3 (127.0.0.1:6392, shard n3, live role)
  nodes removed:
    n2 (127.0.0.1:6391, shard n2, live role)

1 cluster changes, 0 risks flagged
"
    );
    let marked = format!(
        "diff {base} → {head}

cluster cache (redis, clusters/cache.yaml): modified
  parameters:
    ~ hz: 20 → 25 (run time)
    + maxmemory: (unset) → 64mb (run time)
    - timeout: 300 → (unset) (no longer managed: nodes keep their value)
  nodes added:
    + n3 (127.0.0.1:6392, shard n3, live role)
  nodes removed:
    - n2 (127.0.0.1:6391, shard n2, live role)

1 cluster changes, 0 risks flagged
"
    );
    let coloured = format!(
        "diff {base} → {head}

\x1b[1mcluster cache (redis, clusters/cache.yaml): modified\x1b[0m
  parameters:
    \x1b[33m~ hz: 20 → 25 (run time)\x1b[0m
    \x1b[32m+ maxmemory: (unset) → 64mb (run time)\x1b[0m
    \x1b[31m- timeout: 300 → (unset) (no longer managed: nodes keep their value)\x1b[0m
  nodes added:
    \x1b[32m+ n3 (127.0.0.1:6392, shard n3, live role)\x1b[0m
  nodes removed:
    \x1b[31m- n2 (127.0.0.1:6391, shard n2, live role)\x1b[0m

1 cluster changes, 0 risks flagged
"
    );
    let diff = ["diff", "--base", "HEAD~1"];
    // Into a pipe: plain, whatever NO_COLOR says.
    assert_eq!(run(dir, &diff, &[]), (2, plain.clone(), String::new()));
    assert_eq!(
        run(dir, &diff, &[("NO_COLOR", "1")]),
        (2, plain.clone(), String::new())
    );
    // Forced: --color always or CLICOLOR_FORCE.
    let always = ["diff", "--base", "HEAD~1", "--color", "always"];
    assert_eq!(run(dir, &always, &[]), (2, coloured.clone(), String::new()));
    assert_eq!(
        run(dir, &always, &[("NO_COLOR", "1")]),
        (2, coloured.clone(), String::new()),
        "an explicit --color always wins over NO_COLOR"
    );
    assert_eq!(
        run(dir, &diff, &[("CLICOLOR_FORCE", "1")]),
        (2, coloured.clone(), String::new())
    );
    // NO_COLOR wins over CLICOLOR_FORCE; --color never over both.
    assert_eq!(
        run(dir, &diff, &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]),
        (2, plain.clone(), String::new())
    );
    let never = ["diff", "--base", "HEAD~1", "--color", "never"];
    assert_eq!(
        run(dir, &never, &[("CLICOLOR_FORCE", "1")]),
        (2, plain.clone(), String::new())
    );
    // JSON is never decorated.
    let (_, json, _) = run(
        dir,
        &[
            "diff", "--base", "HEAD~1", "--format", "json", "--color", "always",
        ],
        &[],
    );
    assert!(!json.contains(ESC), "{json}");

    // On a terminal: marks and colours; NO_COLOR or --color never: marks, no escape code.
    let path = repo.path();
    assert_eq!(on_terminal(path, "diff --base HEAD~1", &[]), (2, coloured));
    assert_eq!(
        on_terminal(path, "diff --base HEAD~1", &[("NO_COLOR", "1")]),
        (2, marked.clone())
    );
    assert_eq!(
        on_terminal(path, "diff --base HEAD~1 --color never", &[]),
        (2, marked)
    );
}

/// `cacheflow history` in `repo`, with the commit ids replaced by their names.
fn history(repo: &TestRepo, names: &[(&str, &str)]) -> String {
    let (code, out, err) = run(
        None,
        &["history", "--repo", repo.path().to_str().unwrap()],
        &[],
    );
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    names.iter().fold(out, |text, (name, id)| {
        text.replace(&id[..12], &format!("<{name}>"))
    })
}

#[test]
fn history_says_what_happened_to_a_commit_that_changed_nothing_on_the_nodes() {
    let repo = TestRepo::new();
    let two = |params: &str, other: &str, nodes: &[(&str, u16)]| {
        repo.write("clusters/cache.yaml", &cluster(params, nodes));
        repo.write(
            "clusters/other.yaml",
            &cluster(other, &[("o1", 6400)]).replace("name: cache", "name: other"),
        );
    };
    two("    hz: 20", "    hz: 20", &[("n1", 6390)]);
    let first = repo.commit("both: hz 20");
    // A comment: no parameter, no node.
    repo.write(
        "clusters/cache.yaml",
        &format!(
            "# owned by the cache team\n{}",
            cluster("    hz: 20", &[("n1", 6390)])
        ),
    );
    let comment = repo.commit("cache: a comment");
    // A node added, noted by nobody.
    repo.write(
        "clusters/cache.yaml",
        &format!(
            "# owned by the cache team\n{}",
            cluster("    hz: 20", &[("n1", 6390), ("n2", 6391)])
        ),
    );
    let scale = repo.commit("cache: add n2");
    // Both clusters changed; the note speaks of one.
    two("    hz: 30", "    hz: 30", &[("n1", 6390), ("n2", 6391)]);
    let both = repo.commit("both: hz 30");
    let git = repo.repository();
    let sig = git2::Signature::now("cacheflow", "cacheflow@localhost").unwrap();
    git.note(
        &sig,
        &sig,
        Some("refs/notes/cacheflow"),
        git2::Oid::from_str(&both).unwrap(),
        "cache: completed 2024-01-01T00:05:00Z: reached 2 node(s): n1, n2",
        false,
    )
    .unwrap();
    let names = [
        ("first", first.as_str()),
        ("comment", comment.as_str()),
        ("scale", scale.as_str()),
        ("both", both.as_str()),
    ];
    assert_eq!(
        history(&repo, &names),
        "\
<both> 2024-01-01T00:03:00Z cacheflow tests: both: hz 30
  cache: hz 20 → 30
  other: hz 20 → 30
  ⇒ cache: completed 2024-01-01T00:05:00Z: reached 2 node(s): n1, n2
  outcome: other: not rolled out (no note)
<scale> 2024-01-01T00:02:00Z cacheflow tests: cache: add n2
  cache: nodes or rollout policy changed
  outcome: changed no parameter, only the nodes or rollout policy of cache: no rollout noted
<comment> 2024-01-01T00:01:00Z cacheflow tests: cache: a comment
  outcome: changed no cluster's parameters or nodes: nothing to roll out
<first> 2024-01-01T00:00:00Z cacheflow tests: both: hz 20
  cache: hz (unset) → 20
  other: hz (unset) → 20
  outcome: changed cache, other: not rolled out (no note: no cacheflow took this commit, or a later one replaced it first)
"
    );
}

/// Two clusters of one real redis-server node each, `a` and `b`, at hz 20.
fn two_clusters(a: &RedisServer, b: &RedisServer) -> TestRepo {
    let repo = TestRepo::new();
    for (name, node, server) in [("a", "a1", a), ("b", "b1", b)] {
        repo.write(
            &format!("clusters/{name}.yaml"),
            &format!(
                "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  engine: redis\n  parameters:\n    hz: 20\n  nodes:\n    - {{id: {node}, address: '{}'}}\n  rollout:\n    stages: ['100%']\n    bake: 0s\n    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}\n",
                server.addr()
            ),
        );
    }
    repo
}

fn hz(server: &RedisServer) -> String {
    server.client().config_get("hz")["hz"].clone()
}

#[test]
fn sync_with_cluster_rolls_out_only_that_cluster_and_the_next_sync_the_rest() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let repo = two_clusters(&a, &b);
    let commit = repo.commit("a and b: hz 20");
    let rev = &commit[..12];
    let path = repo.path().to_str().unwrap();
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", "--repo", path, "--yes", "--interval", "200ms"];
        args.extend_from_slice(extra);
        run(None, &args, &[])
    };

    let (code, out, err) = sync(&["--cluster", "nope"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            "",
            format!("error: no cluster `nope` in revision {rev}\n").as_str()
        )
    );

    let (code, out, err) = sync(&["--cluster", "a", "--format", "json"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        summary["clusters"],
        serde_json::json!([{"cluster": "a", "outcome": "completed", "nodes": ["a1"]}])
    );
    assert_eq!((hz(&a), hz(&b)), ("20".to_owned(), "10".to_owned()));

    // Text: only `a`'s plan is shown.
    let (code, out, _) = sync(&["--cluster", "a"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        format!("plan for {rev}\n\ncluster a (redis): 0 to change, 1 in sync, 0 unreachable\n\nconverged: every node matches\nNothing to do.\n")
    );

    // Without --cluster, `b` follows.
    let (code, out, err) = sync(&["--format", "json"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let outcomes: Vec<(&str, &str)> = summary["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["cluster"].as_str().unwrap(),
                c["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(outcomes, [("a", "completed"), ("b", "completed")]);
    assert_eq!((hz(&a), hz(&b)), ("20".to_owned(), "20".to_owned()));
}

#[test]
fn sync_on_a_terminal_draws_a_line_per_cluster_and_a_pipe_gets_the_journal_lines() {
    let (a, b) = (RedisServer::start(), RedisServer::start());
    let repo = two_clusters(&a, &b);
    for name in ["a", "b"] {
        let file = repo.path().join(format!("clusters/{name}.yaml"));
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, text.replace("bake: 0s", "bake: 2s")).unwrap();
    }
    repo.commit("a and b: hz 20");
    let args = format!(
        "sync --repo {} --yes --interval 200ms --color never",
        repo.path().display()
    );
    let (code, screen) = on_terminal(repo.path(), &args, &[]);
    assert_eq!(code, 0, "{screen}");
    // While a batch bakes (2s here), its line counts down the time left.
    assert!(
        screen.contains("baking batch 1 of 1, 2s left")
            || screen.contains("baking batch 1 of 1, 1s left"),
        "{screen:?}"
    );
    // Each drawing ends with one line per cluster, redrawn in place.
    assert!(screen.contains("\x1b[2F\x1b[J"), "{screen:?}");
    let last: Vec<&str> = screen
        .rsplit("\x1b[2F\x1b[J")
        .next()
        .unwrap()
        .lines()
        .collect();
    let completed = |name: &str| {
        last.iter().any(|l| {
            l.starts_with(&format!("+ {name}  [####################] 1/1 nodes "))
                && l.ends_with(" completed")
        })
    };
    assert!(completed("a") && completed("b"), "{last:#?}");
    assert_eq!((hz(&a), hz(&b)), ("20".to_owned(), "20".to_owned()));
}

/// `cacheflow rollout ARGS --server URL` with the admin token.
fn rollout(server: &Server, args: &[&str]) -> (i32, String, String) {
    let url = server.url();
    let mut all = vec!["rollout"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--server", &url]);
    run(None, &all, &[("CACHEFLOW_ADMIN_TOKEN", TOKEN)])
}

#[test]
fn rollout_wait_exits_0_when_the_rollout_completes() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    let commit = work.commit("cache: hz 20");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());

    let (code, out, err) = rollout(
        &server,
        &[
            "wait",
            "cache",
            "--revision",
            &commit,
            "--timeout",
            "60s",
            "--interval",
            "200ms",
        ],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, format!("cache: {} completed\n", &commit[..12]).as_str()),
        "{err}"
    );
    assert!(fleet.config("hz").iter().all(|(_, v)| v == "20"));
    // Once more: it is over, so at once; JSON for programs.
    let (code, out, _) = rollout(&server, &["wait", "cache", "--format", "json"]);
    assert_eq!(code, 0);
    let end: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            end["outcome"].as_str(),
            end["rollout"]["rollout"]["phase"].as_str()
        ),
        (Some("completed"), Some("completed"))
    );
    // A cluster the server does not know, and a prefix too short to mean a commit.
    assert_eq!(
        rollout(&server, &["wait", "nope"]),
        (
            1,
            String::new(),
            "error: the server has no cluster `nope`\n".into()
        )
    );
    assert_eq!(
        rollout(&server, &["wait", "cache", "--revision", "abc"]),
        (
            1,
            String::new(),
            "error: --revision takes a commit id or a prefix of at least 7 characters\n".into()
        )
    );
}

#[test]
fn rollout_wait_exits_1_on_timeout_and_when_the_rollout_is_rolled_back() {
    let fleet = Fleet::start();
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml_with("    hz: 20", "stages: [1, '50%', '100%']\n    bake: 1h"),
    );
    let commit = work.commit("cache: hz 20, bake 1h");
    let rev = &commit[..12];
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());

    // The canary bakes for an hour: a short wait times out.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = rollout(&server, &["status", "cache"]);
        if out.starts_with(&format!("cache: {rev} baking")) {
            break;
        }
        assert!(Instant::now() < deadline, "never baking: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out, err) = rollout(
        &server,
        &["wait", "cache", "--timeout", "1s", "--interval", "200ms"],
    );
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            1,
            format!("cache: timed out after 1s: {rev} baking, batch 1 of 4\n").as_str(),
            format!("cache: {rev} baking, batch 1 of 4\n").as_str()
        )
    );

    // A wait in the background; the rollout is aborted: it exits 1 with the reason.
    let waiting = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args([
            "rollout",
            "wait",
            "cache",
            "--revision",
            &commit,
            "--interval",
            "200ms",
            "--timeout",
            "60s",
            "--server",
            &server.url(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = rollout(&server, &["abort", "cache"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (
            Some(1),
            format!("cache: {rev} rolled-back: aborted by alice\n  refused: aborted by alice\n")
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn plan_marks_each_node_to_change_and_colours_risks_only_when_asked() {
    let (repo, _) = crate::example_repo::example_repo();
    let live = crate::example_repo::crate_dir().join("tests/fixtures/plan/drifted/live.json");
    let args = |colour: &'static str| {
        vec![
            "plan".to_owned(),
            "--repo".to_owned(),
            repo.path().display().to_string(),
            "--live".to_owned(),
            live.display().to_string(),
            "--color".to_owned(),
            colour.to_owned(),
        ]
    };
    let plan = |colour| {
        let args = args(colour);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(None, &args, &[])
    };
    let (code, plain, err) = plan("never");
    assert_eq!((code, err.as_str()), (2, ""));
    assert!(!plain.contains(ESC), "{plain}");
    let (code, coloured, _) = plan("always");
    assert_eq!(code, 2);
    for line in [
        "\x1b[1mcluster page-cache (memcached): 1 to change, 3 in sync, 0 unreachable\x1b[0m",
        "  \x1b[33m~ page-cache-2 (shard page-cache-2, primary): maxconns 1024 → 4096 (restart)\x1b[0m",
        "  \x1b[31m! primary-restart: 1 primary will restart for start-only parameters [page-cache-2]\x1b[0m",
        "    batch 1: page-cache-2",
    ] {
        assert!(coloured.lines().any(|l| l == line), "{line:?} in {coloured}");
    }
    // Without the escapes and the `~ ` marks, the same text as in a pipe.
    let stripped = coloured
        .replace("\x1b[1m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[33m~ ", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
}
