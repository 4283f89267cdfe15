//! Health gates: judge a batch after its bake. A pure function of two readings of every
//! node of the cluster (one taken before the rollout began, one now), so it runs the same
//! under virtual time in tests.
//!
//! Each node of the batch is compared with its own baseline and, for the traffic figures,
//! with the nodes of the cluster the rollout has not touched (if the whole cluster's hit
//! ratio fell, the traffic changed, not the config):
//!
//! | gate | fails when |
//! | --- | --- |
//! | up | the node does not answer (`requireUp`) |
//! | replication link | a replica's link to its primary is down (`requireReplicationLink`) |
//! | memory | used memory / maxmemory above `maxMemoryRatio` |
//! | hit ratio | the hit ratio during the bake fell more than `maxHitRatioDrop` below the node's baseline *and* below the untouched nodes' median |
//! | evictions | evictions per second during the bake above `maxEvictionsPerSec` |
//! | latency | latency above `maxLatencyMs`, or more than `maxLatencyIncreaseMs` above the baseline |
//!
//! The traffic gates (hit ratio) need traffic: a node that served fewer than
//! `minOpsPerSec` requests per second during the bake cannot be judged on them, and the
//! verdict is *inconclusive* (a person decides) unless another gate failed. With
//! `minOpsPerSec: 0` an idle node is judged on the other gates only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pure::catalog;
use crate::pure::live::{LinkState, NodeLive};
use crate::pure::rollout::Verdict;
use crate::pure::spec::model::{Gates, Role};

/// One reading of a node and when it was taken (milliseconds on any monotonic clock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub at_ms: u64,
    pub node: NodeLive,
}

/// The figures a judgement was made on, per node of the batch (journaled with the verdict).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeFigures {
    pub node: String,
    pub up: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio_during: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evictions_per_sec: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms_before: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_link: Option<LinkState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    pub verdict: Verdict,
    pub figures: Vec<NodeFigures>,
    /// The untouched nodes' median hit ratio during the bake, when they had traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untouched_hit_ratio: Option<f64>,
}

/// What happened on a node between two readings.
struct Window {
    ops_per_sec: Option<f64>,
    hit_ratio: Option<f64>,
    evictions_per_sec: Option<f64>,
}

fn window(before: Option<&Sample>, now: &Sample) -> Window {
    let h1 = now.node.health.as_ref();
    let h0 = before.and_then(|b| b.node.health.as_ref());
    let secs = before
        .map(|b| now.at_ms.saturating_sub(b.at_ms) as f64 / 1000.0)
        .unwrap_or(0.0);
    let delta =
        |f: fn(&crate::pure::live::Health) -> Option<u64>| match (h0.and_then(f), h1.and_then(f)) {
            // A counter that went down means the engine restarted: count from zero.
            (Some(a), Some(b)) => Some(if b >= a { b - a } else { b }),
            _ => None,
        };
    let hits = delta(|h| h.keyspace_hits);
    let misses = delta(|h| h.keyspace_misses);
    let (ops_per_sec, hit_ratio) = match (hits, misses) {
        (Some(h), Some(m)) if secs > 0.0 => {
            let ratio = (h + m > 0).then(|| h as f64 / (h + m) as f64);
            (Some((h + m) as f64 / secs), ratio)
        }
        // No window to measure over: the engine's own instantaneous figure.
        _ => (h1.and_then(|h| h.ops_per_sec), None),
    };
    let evictions_per_sec = match delta(|h| h.evicted_keys) {
        Some(e) if secs > 0.0 => Some(e as f64 / secs),
        _ => h1.and_then(|h| h.evictions_per_sec),
    };
    Window {
        ops_per_sec,
        hit_ratio,
        evictions_per_sec,
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Judge `batch` after its bake. `baseline` holds the readings taken before the rollout
/// began, `now` the latest ones; `untouched` are the cluster's nodes the rollout has not
/// assigned yet. Each node of the batch is judged on its health (up, replication link,
/// memory, latency) and its traffic (evictions, hit ratio against its own and its
/// untouched peers' figures); a failure fails the batch, too little traffic leaves it
/// inconclusive.
pub fn judge(
    gates: &Gates,
    batch: &[String],
    untouched: &[String],
    baseline: &BTreeMap<String, Sample>,
    now: &BTreeMap<String, Sample>,
) -> Judgement {
    let untouched_hit_ratio = peer_hit_ratio(gates, untouched, baseline, now);
    let mut failures = Vec::new();
    let mut idle = Vec::new();
    let mut figures = Vec::new();
    for id in batch {
        let mut f = NodeFigures {
            node: id.clone(),
            ..NodeFigures::default()
        };
        let before = baseline.get(id);
        let Some(sample) = now.get(id).filter(|s| s.node.reachable) else {
            if gates.require_up {
                let why = now
                    .get(id)
                    .and_then(|s| s.node.error.clone())
                    .unwrap_or_else(|| "no report".to_owned());
                failures.push(format!("{id} is down ({why})"));
            }
            figures.push(f);
            continue;
        };
        f.up = true;
        judge_health(gates, id, before, sample, &mut f, &mut failures);
        let judged = Judged {
            failures: &mut failures,
            idle: &mut idle,
        };
        judge_traffic(
            gates,
            id,
            before,
            sample,
            untouched_hit_ratio,
            &mut f,
            judged,
        );
        figures.push(f);
    }
    let verdict = if !failures.is_empty() {
        Verdict::Fail {
            reason: failures.join("; "),
        }
    } else if !idle.is_empty() {
        Verdict::Inconclusive {
            reason: format!("too little traffic to judge: {}", idle.join("; ")),
        }
    } else {
        Verdict::Pass
    };
    Judgement {
        verdict,
        figures,
        untouched_hit_ratio,
    }
}

/// The median hit ratio of the untouched nodes that serve enough traffic to count.
fn peer_hit_ratio(
    gates: &Gates,
    untouched: &[String],
    baseline: &BTreeMap<String, Sample>,
    now: &BTreeMap<String, Sample>,
) -> Option<f64> {
    let peers: Vec<f64> = untouched
        .iter()
        .filter_map(|id| {
            let s = now.get(id).filter(|s| s.node.reachable)?;
            let w = window(baseline.get(id), s);
            if w.ops_per_sec.unwrap_or(0.0) < gates.min_ops_per_sec.max(f64::MIN_POSITIVE) {
                return None;
            }
            w.hit_ratio
        })
        .collect();
    median(peers)
}

/// A node's health gates: replication link, memory, latency (absolute and its rise).
fn judge_health(
    gates: &Gates,
    id: &str,
    before: Option<&Sample>,
    sample: &Sample,
    f: &mut NodeFigures,
    failures: &mut Vec<String>,
) {
    let health = sample.node.health.clone().unwrap_or_default();
    let before_health = before.and_then(|b| b.node.health.clone());
    f.replication_link = health.replication_link;
    if gates.require_replication_link
        && health.role == Some(Role::Replica)
        && health.replication_link == Some(LinkState::Down)
    {
        failures.push(format!("{id}: replication link to its primary is down"));
    }

    if let (Some(used), Some(max)) = (health.used_memory, health.max_memory) {
        if max > 0 {
            let ratio = used as f64 / max as f64;
            f.memory_ratio = Some(ratio);
            if ratio > gates.max_memory_ratio {
                failures.push(format!(
                    "{id}: memory {} of {} ({}) is above {}",
                    catalog::approx_size(used),
                    catalog::approx_size(max),
                    pct(ratio),
                    pct(gates.max_memory_ratio)
                ));
            }
        }
    }

    f.latency_ms = health.latency_ms;
    f.latency_ms_before = before_health.as_ref().and_then(|h| h.latency_ms);
    if let Some(lat) = health.latency_ms {
        if let Some(max) = gates.max_latency_ms {
            if lat > max {
                failures.push(format!("{id}: latency {lat:.2} ms is above {max} ms"));
            }
        }
        if let (Some(inc), Some(was)) = (gates.max_latency_increase_ms, f.latency_ms_before) {
            if lat - was > inc {
                failures.push(format!(
                    "{id}: latency rose from {was:.2} ms to {lat:.2} ms (more than {inc} ms)"
                ));
            }
        }
    }
}

/// Where a node's traffic findings go: failures, or too little traffic to judge.
struct Judged<'a> {
    failures: &'a mut Vec<String>,
    idle: &'a mut Vec<String>,
}

/// A node's traffic gates over its bake: evictions per second, and a hit ratio that
/// fell by more than the allowed drop both against its own and its untouched peers'.
fn judge_traffic(
    gates: &Gates,
    id: &str,
    before: Option<&Sample>,
    sample: &Sample,
    untouched_hit_ratio: Option<f64>,
    f: &mut NodeFigures,
    judged: Judged<'_>,
) {
    let Judged { failures, idle } = judged;
    let before_health = before.and_then(|b| b.node.health.as_ref());
    let w = window(before, sample);
    f.ops_per_sec = w.ops_per_sec;
    f.evictions_per_sec = w.evictions_per_sec;
    if let (Some(max), Some(eps)) = (gates.max_evictions_per_sec, w.evictions_per_sec) {
        if eps > max {
            failures.push(format!("{id}: {eps:.1} evictions/s is above {max}"));
        }
    }

    f.hit_ratio_before = before_health.and_then(|h| h.hit_ratio);
    f.hit_ratio_during = w.hit_ratio;
    let ops = w.ops_per_sec.unwrap_or(0.0);
    let judged = ops > 0.0 && ops >= gates.min_ops_per_sec;
    if !judged {
        if gates.min_ops_per_sec > 0.0 {
            idle.push(format!(
                "{id} served {ops:.1} ops/s (fewer than {})",
                gates.min_ops_per_sec
            ));
        }
    } else if let (Some(during), Some(was)) = (f.hit_ratio_during, f.hit_ratio_before) {
        let own = was - during > gates.max_hit_ratio_drop;
        let peers = untouched_hit_ratio.is_none_or(|p| p - during > gates.max_hit_ratio_drop);
        if own && peers {
            let vs = untouched_hit_ratio
                .map(|p| format!(", untouched nodes {}", pct(p)))
                .unwrap_or_default();
            failures.push(format!(
                "{id}: hit ratio fell from {} to {}{vs} (more than {})",
                pct(was),
                pct(during),
                pct(gates.max_hit_ratio_drop)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pure::live::Health;

    fn sample(at_ms: u64, hits: u64, misses: u64, f: impl FnOnce(&mut Health)) -> Sample {
        let mut h = Health {
            keyspace_hits: Some(hits),
            keyspace_misses: Some(misses),
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
            evicted_keys: Some(0),
            used_memory: Some(1000),
            max_memory: Some(0),
            latency_ms: Some(0.2),
            ..Health::default()
        };
        f(&mut h);
        Sample {
            at_ms,
            node: NodeLive {
                reachable: true,
                health: Some(h),
                ..NodeLive::default()
            },
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn map(v: Vec<(&str, Sample)>) -> BTreeMap<String, Sample> {
        v.into_iter().map(|(k, s)| (k.to_owned(), s)).collect()
    }

    #[test]
    fn a_steady_node_passes() {
        let base = map(vec![("a", sample(0, 900, 100, |_| {}))]);
        let now = map(vec![("a", sample(10_000, 1800, 200, |_| {}))]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.figures[0].ops_per_sec, Some(100.0));
        assert_eq!(j.figures[0].hit_ratio_during, Some(0.9));
    }

    #[test]
    fn a_hit_ratio_drop_fails_unless_the_untouched_nodes_dropped_too() {
        // a: 90% before, 50% during the bake.
        let base = map(vec![
            ("a", sample(0, 900, 100, |_| {})),
            ("b", sample(0, 900, 100, |_| {})),
        ]);
        let now = map(vec![
            ("a", sample(10_000, 1400, 600, |_| {})),
            ("b", sample(10_000, 1800, 200, |_| {})),
        ]);
        let j = judge(&Gates::default(), &ids(&["a"]), &ids(&["b"]), &base, &now);
        assert_eq!(
            j.verdict,
            Verdict::Fail {
                reason:
                    "a: hit ratio fell from 90.0% to 50.0%, untouched nodes 90.0% (more than 5.0%)"
                        .into()
            }
        );
        // b fell the same way: the traffic changed, the config did not do it.
        let now = map(vec![
            ("a", sample(10_000, 1400, 600, |_| {})),
            ("b", sample(10_000, 1400, 600, |_| {})),
        ]);
        let j = judge(&Gates::default(), &ids(&["a"]), &ids(&["b"]), &base, &now);
        assert_eq!(j.verdict, Verdict::Pass);
    }

    #[test]
    fn too_little_traffic_is_inconclusive_never_pass() {
        let base = map(vec![("a", sample(0, 10, 0, |_| {}))]);
        let now = map(vec![("a", sample(10_000, 20, 0, |_| {}))]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(
            j.verdict,
            Verdict::Inconclusive {
                reason: "too little traffic to judge: a served 1.0 ops/s (fewer than 10)".into()
            }
        );
        // With minOpsPerSec 0 an idle node is judged on the other gates.
        let gates = Gates {
            min_ops_per_sec: 0.0,
            ..Gates::default()
        };
        assert_eq!(
            judge(&gates, &ids(&["a"]), &[], &base, &now).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn a_down_node_fails_even_without_traffic() {
        let base = map(vec![("a", sample(0, 0, 0, |_| {}))]);
        let mut down = sample(10_000, 0, 0, |_| {});
        down.node.reachable = false;
        down.node.error = Some("connection refused".into());
        let j = judge(
            &Gates::default(),
            &ids(&["a"]),
            &[],
            &base,
            &map(vec![("a", down)]),
        );
        assert_eq!(
            j.verdict,
            Verdict::Fail {
                reason: "a is down (connection refused)".into()
            }
        );
        assert!(!j.figures[0].up);
    }

    #[test]
    fn memory_evictions_latency_and_replication_gates() {
        let gates = Gates {
            max_evictions_per_sec: Some(5.0),
            max_latency_ms: Some(50.0),
            max_latency_increase_ms: Some(5.0),
            min_ops_per_sec: 0.0,
            ..Gates::default()
        };
        let base = map(vec![("a", sample(0, 0, 0, |_| {}))]);
        let now = map(vec![(
            "a",
            sample(10_000, 0, 0, |h| {
                h.used_memory = Some(990);
                h.max_memory = Some(1000);
                h.evicted_keys = Some(100);
                h.latency_ms = Some(80.0);
                h.role = Some(Role::Replica);
                h.replication_link = Some(LinkState::Down);
            }),
        )]);
        let j = judge(&gates, &ids(&["a"]), &[], &base, &now);
        let Verdict::Fail { reason } = j.verdict else {
            panic!("expected a failure, got {:?}", j.verdict)
        };
        assert_eq!(
            reason,
            "a: replication link to its primary is down; \
             a: memory 990 bytes of 1000 bytes (99.0%) is above 98.0%; \
             a: latency 80.00 ms is above 50 ms; \
             a: latency rose from 0.20 ms to 80.00 ms (more than 5 ms); \
             a: 10.0 evictions/s is above 5"
        );
    }

    #[test]
    fn a_restarted_engine_counts_its_counters_from_zero() {
        let base = map(vec![("a", sample(0, 100_000, 10_000, |_| {}))]);
        let now = map(vec![("a", sample(10_000, 900, 100, |_| {}))]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.figures[0].ops_per_sec, Some(100.0));
        assert_eq!(j.verdict, Verdict::Pass);
    }
}
