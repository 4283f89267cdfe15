//! Usage errors through the real binary: exit 1, never 2 (the code `diff`, `plan` and
//! `drift` give for "changes", which CI scripts accept); `--help` and `--version` exit 0.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .output()
        .expect("the cacheflow binary runs")
}

#[test]
fn a_usage_error_exits_1_with_clap_s_message_on_standard_error() {
    for args in [
        &["dif", "--base", "HEAD"][..],
        &["diff"][..],
        &["diff", "--base", "HEAD", "--formt", "markdown"][..],
        &["plan", "--direct", "--format", "yaml"][..],
        &["drift", "--direct", "--bogus"][..],
        &[][..],
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        // clap's message: an error, or the help when no command is given.
        assert!(
            stderr.starts_with("error: ") || stderr.contains("Usage: cacheflow"),
            "{args:?}: {stderr}"
        );
    }
    let stderr = String::from_utf8_lossy(&run(&["dif"]).stderr).into_owned();
    assert!(
        stderr.starts_with("error: unrecognized subcommand 'dif'"),
        "{stderr}"
    );
}

#[test]
fn help_and_version_exit_0_on_standard_output() {
    for args in [&["--help"][..], &["diff", "--help"][..], &["--version"][..]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
        assert!(out.stderr.is_empty(), "{args:?}");
    }
}

/// The block scalars (`run: |`, `- |`) of a YAML file, dedented.
fn blocks(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.trim_end().ends_with('|') || line.trim_start().starts_with('#') {
            continue;
        }
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
            .copied()
            .collect();
        let cut = body
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| indent(l))
            .min()
            .unwrap_or(0);
        let text: Vec<&str> = body.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
        out.push(text.join("\n") + "\n");
    }
    out
}

/// Run the workflow's diff step with a stand-in `cacheflow` that prints `stdout` and
/// exits `code`: (the step's exit code, diff.md).
fn diff_step(script: &str, code: i32, stdout: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("cacheflow");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\nprintf '%s' '{stdout}'\nexit {code}\n"),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&fake).status().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-e", "-c", script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
        .output()
        .unwrap();
    let md = std::fs::read_to_string(dir.path().join("diff.md")).unwrap_or_default();
    (out.status.code(), md)
}

#[test]
fn the_shipped_ci_workflows_fail_on_anything_but_no_change_or_changes() {
    for file in ["deploy/ci/github-actions-pr.yml", "deploy/ci/gitlab-ci.yml"] {
        let yaml =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let script = blocks(&yaml)
            .into_iter()
            .find(|b| b.contains("cacheflow diff --repo"))
            .unwrap_or_else(|| panic!("{file}: no diff step"));
        let (code, md) = diff_step(&script, 2, "| cluster | change |");
        assert_eq!(code, Some(0), "{file}: changes");
        assert!(md.ends_with("| cluster | change |"), "{file}: {md}");
        assert!(md.starts_with("<!-- cacheflow:diff -->\n"), "{file}: {md}");
        assert_eq!(diff_step(&script, 0, "").0, Some(0), "{file}: no change");
        // An error or a usage error fails the job, and so does a 2 with nothing to show
        // (a cacheflow from before usage errors exited 1).
        assert_ne!(diff_step(&script, 1, "").0, Some(0), "{file}: an error");
        assert_ne!(diff_step(&script, 2, "").0, Some(0), "{file}: 2, no output");
    }
}
