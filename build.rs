//! Embeds the commit the binary is built from (`cacheflow_build_info{commit}` and
//! `--version`): `CACHEFLOW_COMMIT` when set (a build from a tarball or in a container
//! without `.git`), else `git rev-parse HEAD` when git and a repository are there, else
//! `unknown`. Nothing but git's own command: no build dependency.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CACHEFLOW_COMMIT");
    let commit = std::env::var("CACHEFLOW_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]));
    // Build again when HEAD moves: HEAD itself (a checkout) and the ref it names (a
    // commit). Only files that exist are named: a missing one would make cargo run this
    // script on every build.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &head_ref]));
        watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watch.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!(
        "cargo:rustc-env=CACHEFLOW_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
}
