//! scripts/setup.sh as a fresh machine meets it: it names what is missing and how to get
//! it (cargo older than the crate's rust-version, a browser on Ubuntu), finds the browser
//! under any of its names, and does not need one for the main job. Run with a PATH of
//! links to the tools it may use, so nothing is installed: a script that tried would not
//! find apt-get and fail with another message.

use std::path::Path;
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh");

/// A directory of links to the commands the script runs, without any browser, apt-get
/// or snap; `extra` are (name, script body) stubs written there too.
fn bin(dir: &Path, extra: &[(&str, &str)]) {
    for tool in [
        "bash",
        "sed",
        "awk",
        "sort",
        "head",
        "dirname",
        "id",
        "cat",
        "cargo",
        "rustc",
        "cc",
        "gcc",
        "pkg-config",
        "git",
        "redis-server",
        "redis-sentinel",
        "redis-cli",
        "memcached",
        "etcd",
        "gpg",
        "ssh-keygen",
        "openssl",
        "curl",
        "promtool",
    ] {
        let Ok(out) = Command::new("bash")
            .args(["-c", &format!("command -v {tool}")])
            .output()
        else {
            continue;
        };
        let found = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !found.is_empty() {
            std::os::unix::fs::symlink(found, dir.join(tool)).unwrap();
        }
    }
    for (name, body) in extra {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(&path)
            .status()
            .unwrap();
    }
}

fn setup(dir: &Path, args: &[&str], os_release: &str) -> Output {
    let os = dir.join("os-release");
    std::fs::write(&os, os_release).unwrap();
    Command::new(dir.join("bin/bash"))
        .arg(SCRIPT)
        .args(args)
        .env("PATH", dir.join("bin"))
        .env("CACHEFLOW_OS_RELEASE", &os)
        .env_remove("CACHEFLOW_BROWSER")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DEBIAN: &str = "ID=debian\nVERSION_ID=\"12\"\n";
const UBUNTU: &str = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n";

fn machine(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    bin(&dir.path().join("bin"), extra);
    dir
}

#[test]
fn a_cargo_older_than_the_rust_version_is_named_with_how_to_get_a_new_one() {
    let want = include_str!("../../Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let dir = machine(&[("cargo", "echo 'cargo 1.63.0'")]);
    let out = setup(dir.path(), &[], DEBIAN);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "is cargo 1.63.0; cacheflow needs Rust {want} or newer"
        )),
        "{t}"
    );
    assert!(t.contains("https://rustup.rs"), "{t}");

    let dir = machine(&[]);
    std::fs::remove_file(dir.path().join("bin/cargo")).unwrap();
    let out = setup(dir.path(), &["--test"], DEBIAN);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.starts_with(&format!(
            "setup: cargo is not installed: cacheflow needs Rust {want} or newer."
        )),
        "{t}"
    );
}

#[test]
fn the_browser_is_found_under_its_other_names_and_only_the_tests_need_one() {
    // No browser: the main job's set-up does not ask for one.
    let dir = machine(&[]);
    let out = setup(dir.path(), &[], UBUNTU);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Google's package, under its name, with its chromedriver.
    let dir = machine(&[
        ("google-chrome", "echo 'Google Chrome 140.0'"),
        ("chromedriver", "echo 'ChromeDriver 140.0'"),
    ]);
    let out = setup(dir.path(), &["--test"], DEBIAN);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(text(&out), "");
}

#[test]
fn the_console_tests_chromedriver_is_installed_beside_the_browser_on_debian() {
    // A browser and no chromedriver: Debian's chromium-driver is what is missing (and,
    // with no apt-get here, named with how to install it).
    let dir = machine(&[("chromium", "echo 'Chromium 140.0'")]);
    let out = setup(dir.path(), &["--test"], DEBIAN);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        text(&out),
        "setup: missing: chromium-driver (Debian package names), and there is no apt-get here: install them with this system's package manager.\n"
    );
    // Elsewhere: said, with how.
    let out = setup(dir.path(), &["--test"], "ID=fedora\n");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.starts_with("setup: the console's tests need chromedriver (they drive the browser over WebDriver) and none was found\n"),
        "{t}"
    );
    assert!(t.contains("CACHEFLOW_CHROMEDRIVER"), "{t}");
}

#[test]
fn on_ubuntu_without_a_browser_or_snap_the_test_set_up_says_what_to_do() {
    // Ubuntu's chromium-browser: a stub that only asks for the snap.
    let stub = "echo \"Command '/usr/bin/chromium-browser' requires the chromium snap to be installed.\" >&2; exit 1";
    let dir = machine(&[("chromium-browser", stub)]);
    let out = setup(dir.path(), &["--test"], UBUNTU);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.starts_with("setup: the tests need a headless browser (the drift report's HTML page) and none was found\n"),
        "{t}"
    );
    assert!(t.contains("Ubuntu packages Chromium only as a snap"), "{t}");
    assert!(t.contains("snap install chromium"), "{t}");
    assert!(t.contains("Google Chrome"), "{t}");
    assert!(t.contains("CACHEFLOW_BROWSER"), "{t}");
}

#[test]
fn the_replicas_tests_etcd_is_installed_from_debians_etcd_server() {
    // Everything else present, no etcd: Debian's etcd-server is what is missing.
    let dir = machine(&[
        ("chromium", "echo 'Chromium 140.0'"),
        ("chromedriver", "echo 'ChromeDriver 140.0'"),
    ]);
    let _ = std::fs::remove_file(dir.path().join("bin/etcd"));
    let out = setup(dir.path(), &["--test"], DEBIAN);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        text(&out),
        "setup: missing: etcd-server (Debian package names), and there is no apt-get here: install them with this system's package manager.\n"
    );
    // The main job does not need it.
    let out = setup(dir.path(), &[], DEBIAN);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}
