//! Build facts, with nothing but git's own command (no build dependency):
//! - `CACHEFLOW_COMMIT`, the commit the binary is built from (`cacheflow_build_info{commit}`):
//!   the `CACHEFLOW_COMMIT` variable when set (a build from a tarball or in a container
//!   without `.git`), else `git rev-parse HEAD`, else `unknown`; and
//!   `CACHEFLOW_COMMIT_SHORT`, its first 12 characters (`--version`);
//! - `CACHEFLOW_BUILD_DATE`, the day it was built (UTC, `YYYY-MM-DD`): from
//!   `SOURCE_DATE_EPOCH` when set, so a reproducible build gives the same binary, else the
//!   time of the build.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CACHEFLOW_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let commit = std::env::var("CACHEFLOW_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let short: String = commit.chars().take(12).collect();
    println!("cargo:rustc-env=CACHEFLOW_COMMIT={commit}");
    println!("cargo:rustc-env=CACHEFLOW_COMMIT_SHORT={short}");
    println!("cargo:rustc-env=CACHEFLOW_BUILD_DATE={}", build_date());
    // Build again when HEAD moves: HEAD itself (a checkout) and the ref it names (a
    // commit). Only files that exist are named: a missing one would make cargo run this
    // script on every build.
    let mut watch = vec![git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "HEAD",
    ])];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            &head_ref,
        ]));
        watch.push(git(&[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            "packed-refs",
        ]));
    }
    for path in watch.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// One line of git's answer, when git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    // Howard Hinnant's civil-from-days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
