//! Test support: real servers, git repositories, a control plane for the agent.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

pub mod control;
pub mod etcd;
pub mod fleet;
pub mod git;
pub mod receiver;
pub mod servers;
pub mod service;
pub mod webdriver;

/// A parameter map from pairs: `params(&[("hz", "10")])`.
pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `cacheflow sync --repo REPO --interval 200ms EXTRA...` through the real binary, with
/// `env` added: the exit code and stdout followed by stderr.
pub fn cacheflow_sync(repo: &Path, extra: &[&str], env: &[(&str, &Path)]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["sync", "--repo"])
        .arg(repo)
        .args(["--interval", "200ms"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .expect("the cacheflow binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Deterministic pseudo-random bytes (xorshift), for garbage, and bytes zlib cannot shrink.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
