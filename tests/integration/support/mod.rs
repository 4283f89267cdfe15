//! Test support: real servers, git repositories, a control plane for the agent.

use std::collections::BTreeMap;

pub mod control;
pub mod fleet;
pub mod git;
pub mod servers;
pub mod service;

/// A parameter map from pairs: `params(&[("hz", "10")])`.
pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
