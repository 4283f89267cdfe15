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
//! | replication link | a replica's link to its primary is down, and was up in its baseline (`requireReplicationLink`) |
//! | memory | used memory / maxmemory above `maxMemoryRatio` |
//! | hit ratio | the hit ratio during the bake fell more than `maxHitRatioDrop` below the node's baseline *and* below the untouched nodes' median |
//! | evictions | evictions per second during the bake above `maxEvictionsPerSec` |
//! | latency | latency above `maxLatencyMs`, or more than `maxLatencyIncreaseMs` above the baseline |
//!
//! Rates are measured over the span the counters cover: since the baseline, or since the
//! engine restarted (its uptime) when it restarted in between.
//!
//! The replication gates ([`judge_replication`], beside [`judge`]) read the live topology:
//!
//! | gate | fails when |
//! | --- | --- |
//! | replica lag | a replica of the batch (or one a primary of the batch lists, read or not) is more than `maxReplicaLagBytes` behind its primary, or last acknowledged it more than `maxReplicaLagSeconds` ago (the primary's figures) |
//! | full resync | the primary of a shard the batch touches served more than `maxFullResyncs` full resyncs since the rollout began (its `sync_full` counter) |
//!
//! In cluster mode ([`judge_cluster`]) every node of the cluster that answers must see the
//! cluster whole after a batch:
//!
//! | gate | fails when |
//! | --- | --- |
//! | cluster state | a member reports `cluster_state` other than `ok`, or slots failing (`cluster_slots_fail`) or possibly failing (`cluster_slots_pfail`) |
//!
//! The traffic gates (hit ratio) need traffic: a node that served fewer than
//! `minOpsPerSec` requests per second during the bake cannot be judged on them, and the
//! verdict is *inconclusive* (a person decides) unless another gate failed. With
//! `minOpsPerSec: 0` an idle node is judged on the other gates only.
//!
//! A gate judges what the change did: a replica whose link was already down in its
//! baseline, and a node that had no traffic in its baseline (new in a scale-out), are
//! noted in the judgement rather than failed or left inconclusive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pure::catalog;
use crate::pure::live::{Health, LinkState, NodeLive};
use crate::pure::rollout::Verdict;
use crate::pure::spec::model::{Cluster, Gates, Role};
use crate::pure::topology;

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
    /// What was seen but not held against the change: a condition that was already there
    /// before the rollout, a gate not applied to a node and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// What happened on a node between two readings.
struct Window {
    ops_per_sec: Option<f64>,
    hit_ratio: Option<f64>,
    evictions_per_sec: Option<f64>,
}

/// How far two readings of a node's counters can be compared: over how many seconds,
/// and whether the engine restarted in between (its counters then count from zero).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    secs: f64,
    restarted: bool,
}

/// Slack, in seconds, for an uptime read in whole seconds by readings taken a report's
/// delay after the engine answered.
const UPTIME_SLACK_SECS: u64 = 2;

/// The span the counters of `now` cover since `before`. Without a restart, the time
/// between the two readings. An engine that restarted in between (its uptime is shorter
/// than the time since `before` says it should be, or a counter went down) counts from
/// zero since the restart: the span is its uptime (a whole number of seconds, so half a
/// second is added), never longer than the time between the readings.
fn span(before: &Sample, now: &Sample) -> Span {
    let elapsed_ms = now.at_ms.saturating_sub(before.at_ms);
    let elapsed = elapsed_ms as f64 / 1000.0;
    let h0 = before.node.health.as_ref();
    let h1 = now.node.health.as_ref();
    let uptime0 = h0.and_then(|h| h.uptime_seconds);
    let uptime1 = h1.and_then(|h| h.uptime_seconds);
    let uptime_went_back = match (uptime0, uptime1) {
        (Some(a), Some(b)) => {
            b.saturating_add(UPTIME_SLACK_SECS) < a.saturating_add(elapsed_ms / 1000)
        }
        _ => false,
    };
    let counter_went_down = [
        |h: &Health| h.keyspace_hits,
        |h: &Health| h.keyspace_misses,
        |h: &Health| h.evicted_keys,
    ]
    .iter()
    .any(|f| matches!((h0.and_then(f), h1.and_then(f)), (Some(a), Some(b)) if b < a));
    let restarted = uptime_went_back || counter_went_down;
    let secs = match (restarted, uptime1) {
        (true, Some(up)) => (up as f64 + 0.5).min(elapsed),
        _ => elapsed,
    };
    Span { secs, restarted }
}

fn window(before: Option<&Sample>, now: &Sample) -> Window {
    let h1 = now.node.health.as_ref();
    let h0 = before.and_then(|b| b.node.health.as_ref());
    let span = before.map(|b| span(b, now));
    let secs = span.map_or(0.0, |s| s.secs);
    let restarted = span.is_some_and(|s| s.restarted);
    let delta = |f: fn(&Health) -> Option<u64>| match (h0.and_then(f), h1.and_then(f)) {
        // A restarted engine counts from zero.
        (Some(_), Some(b)) if restarted => Some(b),
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
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

/// Whether a node's baseline shows traffic: a reading taken before the rollout whose
/// read counters are not zero (an engine that reports no counters: whose own rate is not
/// zero). A node without one (new in a scale-out, never read) is not judged on
/// `minOpsPerSec`.
fn had_traffic(before: Option<&Sample>) -> bool {
    let Some(h) = before.and_then(|b| b.node.health.as_ref()) else {
        return false;
    };
    match (h.keyspace_hits, h.keyspace_misses) {
        (Some(hits), Some(misses)) => hits.saturating_add(misses) > 0,
        _ => h.ops_per_sec.is_none_or(|ops| ops > 0.0),
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
    let mut notes = Vec::new();
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
        let mut judged = Judged {
            failures: &mut failures,
            idle: &mut idle,
            notes: &mut notes,
        };
        judge_health(gates, id, before, sample, &mut f, &mut judged);
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
        notes,
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
/// A replica whose link was already down in its baseline is noted, not failed: the
/// gate judges what the change did.
fn judge_health(
    gates: &Gates,
    id: &str,
    before: Option<&Sample>,
    sample: &Sample,
    f: &mut NodeFigures,
    judged: &mut Judged<'_>,
) {
    let failures = &mut *judged.failures;
    let health = sample.node.health.clone().unwrap_or_default();
    let before_health = before.and_then(|b| b.node.health.clone());
    f.replication_link = health.replication_link;
    if gates.require_replication_link
        && health.role == Some(Role::Replica)
        && health.replication_link == Some(LinkState::Down)
    {
        let was_down = before_health
            .as_ref()
            .is_some_and(|h| h.replication_link == Some(LinkState::Down));
        if was_down {
            judged.notes.push(format!(
                "{id}: replication link to its primary was already down before the rollout \
                 (not held against the change)"
            ));
        } else {
            failures.push(format!("{id}: replication link to its primary is down"));
        }
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

/// Where a node's findings go: failures, too little traffic to judge, or notes.
struct Judged<'a> {
    failures: &'a mut Vec<String>,
    idle: &'a mut Vec<String>,
    notes: &'a mut Vec<String>,
}

/// A node's traffic gates over its bake: evictions per second, and a hit ratio that
/// fell by more than the allowed drop both against its own and its untouched peers'.
/// A node that had no traffic in its baseline is not held to `minOpsPerSec` (noted).
fn judge_traffic(
    gates: &Gates,
    id: &str,
    before: Option<&Sample>,
    sample: &Sample,
    untouched_hit_ratio: Option<f64>,
    f: &mut NodeFigures,
    judged: Judged<'_>,
) {
    let Judged {
        failures,
        idle,
        notes,
    } = judged;
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
        if gates.min_ops_per_sec > 0.0 && had_traffic(before) {
            idle.push(format!(
                "{id} served {ops:.1} ops/s (fewer than {})",
                gates.min_ops_per_sec
            ));
        } else if gates.min_ops_per_sec > 0.0 {
            notes.push(format!(
                "{id} had no traffic before the rollout and served {ops:.1} ops/s: \
                 judged without minOpsPerSec and the hit ratio"
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

/// The replication figures a judgement was made on: one per replica checked for lag,
/// one per primary checked for full resyncs (journaled with the verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationFigures {
    pub node: String,
    /// The primary a replica follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
    /// A primary's `sync_full` before the rollout and now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_syncs_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_syncs: Option<u64>,
}

/// What the replication gates found: failures (empty when they pass) and figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationJudgement {
    pub failures: Vec<String>,
    pub figures: Vec<ReplicationFigures>,
}

/// Judge the replication of the shards `batch` touches, by the live topology of `now`
/// (every node of the cluster): the lag of each replica in the batch and of each replica
/// a primary of the batch lists, and the full resyncs each of those shards' primaries
/// served since `baseline`. Gates left off are not judged; figures a node did not report
/// are not judged either (a replica whose link is down is the replication-link gate's).
pub fn judge_replication(
    gates: &Gates,
    cluster: &Cluster,
    batch: &[String],
    baseline: &BTreeMap<String, Sample>,
    now: &BTreeMap<String, Sample>,
) -> ReplicationJudgement {
    let mut out = ReplicationJudgement::default();
    let lag_on = gates.max_replica_lag_bytes.is_some() || gates.max_replica_lag_seconds.is_some();
    if !lag_on && gates.max_full_resyncs.is_none() {
        return out;
    }
    let topo = topology::resolve(cluster, |id| now.get(id).map(|s| &s.node));
    // The primaries of the batch, and the primary each replica of the batch follows.
    let batch_primaries: Vec<&str> = batch
        .iter()
        .filter(|id| {
            topo.nodes
                .get(*id)
                .is_some_and(|p| p.live == Some(Role::Primary))
        })
        .map(String::as_str)
        .collect();
    let mut primaries = batch_primaries.clone();
    let address = |id: &str| cluster.node(id).map(|n| n.address.clone());
    // Replicas to check: (name, address, primary).
    let mut replicas: Vec<(String, String, &str)> = Vec::new();
    for id in batch {
        let followed = topo.nodes.get(id).and_then(|p| p.follows.as_deref());
        if let (Some(primary), Some(at)) = (
            followed.filter(|f| topo.nodes.contains_key(*f)),
            address(id),
        ) {
            replicas.push((id.clone(), at, primary));
            primaries.push(primary);
        }
    }
    // Every replica a primary of the batch feeds, as it lists them: one too far behind
    // to answer a reading is still in its primary's list.
    for primary in batch_primaries {
        for link in fed(now, primary) {
            let name = cluster
                .nodes
                .iter()
                .find(|n| crate::pure::live::same_address(&n.address, &link.address))
                .map(|n| n.id.clone())
                .unwrap_or_else(|| link.address.clone());
            if !replicas.iter().any(|(n, _, _)| *n == name) {
                replicas.push((name, link.address.clone(), primary));
            }
        }
    }
    primaries.sort_unstable();
    primaries.dedup();
    if lag_on {
        for (name, at, primary) in &replicas {
            let f = replica_lag(gates, name, at, primary, now, &mut out.failures);
            out.figures.push(f);
        }
    }
    if let Some(max) = gates.max_full_resyncs {
        for id in primaries {
            let syncs = |m: &BTreeMap<String, Sample>| {
                m.get(id)
                    .and_then(|s| s.node.health.as_ref())
                    .and_then(|h| h.topology.as_ref())
                    .and_then(|t| t.full_syncs)
            };
            let (before, after) = (syncs(baseline), syncs(now));
            if let (Some(before), Some(after)) = (before, after) {
                // A counter that went down means the primary restarted: count from zero.
                let served = if after >= before {
                    after - before
                } else {
                    after
                };
                if served > max {
                    out.failures.push(format!(
                        "{id}: {served} full resync{} of its replicas since the rollout began (sync_full {before} → {after}; at most {max})",
                        if served == 1 { "" } else { "s" },
                    ));
                }
            }
            out.figures.push(ReplicationFigures {
                node: id.to_owned(),
                full_syncs_before: before,
                full_syncs: after,
                ..ReplicationFigures::default()
            });
        }
    }
    out
}

/// The replicas a primary lists in its latest reading.
fn fed<'a>(
    now: &'a BTreeMap<String, Sample>,
    primary: &str,
) -> &'a [crate::pure::live::ReplicaLink] {
    now.get(primary)
        .filter(|s| s.node.reachable)
        .and_then(|s| s.node.health.as_ref())
        .and_then(|h| h.topology.as_ref())
        .map(|t| t.replicas.as_slice())
        .unwrap_or_default()
}

/// One replica's lag by its primary's figures (its offset, the replica's acknowledged
/// one and the seconds since), against the limits. `id` names the replica (a declared
/// node, or its address), `address` is where its primary sees it.
fn replica_lag(
    gates: &Gates,
    id: &str,
    address: &str,
    primary: &str,
    now: &BTreeMap<String, Sample>,
    failures: &mut Vec<String>,
) -> ReplicationFigures {
    let seen = now
        .get(primary)
        .filter(|s| s.node.reachable)
        .and_then(|s| s.node.health.as_ref())
        .and_then(|h| h.topology.as_ref());
    let lag_bytes = seen.and_then(|t| t.replica_lag_bytes(address));
    let lag_seconds = seen
        .and_then(|t| t.replica(address))
        .and_then(|r| r.lag_seconds);
    if let (Some(max), Some(lag)) = (gates.max_replica_lag_bytes, lag_bytes) {
        if lag > max {
            failures.push(format!(
                "{id}: {lag} bytes behind its primary {primary} (more than {max})"
            ));
        }
    }
    if let (Some(max), Some(lag)) = (gates.max_replica_lag_seconds, lag_seconds) {
        if lag > max {
            failures.push(format!(
                "{id}: last acknowledged its primary {primary} {lag} s ago (more than {max} s)"
            ));
        }
    }
    ReplicationFigures {
        node: id.to_owned(),
        primary: Some(primary.to_owned()),
        lag_bytes,
        lag_seconds,
        ..ReplicationFigures::default()
    }
}

/// One cluster-mode node's view of the cluster after a batch (journaled with the verdict).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFigures {
    pub node: String,
    pub state: String,
    pub slots_assigned: u64,
    pub slots_pfail: u64,
    pub slots_fail: u64,
}

/// The cluster-state gate's verdict: failures (each with its figures) and the figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterJudgement {
    pub failures: Vec<String>,
    pub figures: Vec<ClusterFigures>,
}

/// Judge a cluster-mode cluster after a batch by every node's latest reading (`now`):
/// each member that answers must report `cluster_state:ok` and no failing or possibly
/// failing slots. A node that does not answer is the up gate's (for the batch) or the
/// cluster's own figures' (the others see its slots fail). Nothing for other modes.
pub fn judge_cluster(cluster: &Cluster, now: &BTreeMap<String, Sample>) -> ClusterJudgement {
    let mut out = ClusterJudgement::default();
    if cluster.mode != crate::pure::spec::model::ClusterMode::Cluster {
        return out;
    }
    for n in &cluster.nodes {
        let Some(view) = now
            .get(&n.id)
            .filter(|s| s.node.reachable)
            .and_then(|s| s.node.health.as_ref())
            .and_then(|h| h.topology.as_ref())
            .and_then(|t| t.cluster.as_ref())
        else {
            continue;
        };
        let mut wrong = Vec::new();
        if view.state != "ok" {
            wrong.push(format!("cluster_state:{}", view.state));
        }
        if view.slots_fail > 0 {
            wrong.push(format!(
                "{} slots failing (cluster_slots_fail)",
                view.slots_fail
            ));
        }
        if view.slots_pfail > 0 {
            wrong.push(format!(
                "{} slots possibly failing (cluster_slots_pfail)",
                view.slots_pfail
            ));
        }
        if view.slots_assigned < crate::pure::live::CLUSTER_SLOTS {
            wrong.push(format!(
                "{} of {} slots assigned",
                view.slots_assigned,
                crate::pure::live::CLUSTER_SLOTS
            ));
        }
        if !wrong.is_empty() {
            out.failures.push(format!(
                "{}: the cluster is not whole: {}",
                n.id,
                wrong.join(", ")
            ));
        }
        out.figures.push(ClusterFigures {
            node: n.id.clone(),
            state: view.state.clone(),
            slots_assigned: view.slots_assigned,
            slots_pfail: view.slots_pfail,
            slots_fail: view.slots_fail,
        });
    }
    out
}

/// A verdict with the replication gates' failures added: any failure fails the batch.
pub fn with_replication(verdict: Verdict, failures: &[String]) -> Verdict {
    if failures.is_empty() {
        return verdict;
    }
    let mut reasons = match verdict {
        Verdict::Fail { reason } => vec![reason],
        _ => Vec::new(),
    };
    reasons.extend(failures.iter().cloned());
    Verdict::Fail {
        reason: reasons.join("; "),
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

    fn replicated(nodes: &[(&str, Option<Role>)]) -> Cluster {
        Cluster {
            name: "c".into(),
            file: "clusters/c.yaml".into(),
            labels: BTreeMap::new(),
            engine: crate::pure::catalog::Engine::Redis,
            product: crate::pure::catalog::Product::Redis,
            version: None,
            catalog: crate::pure::catalog::CatalogId::default_for(
                crate::pure::catalog::Engine::Redis,
            ),
            profile: None,
            parameters: BTreeMap::new(),
            auth: None,
            tls: None,
            sentinel: None,
            mode: Default::default(),
            nodes: nodes
                .iter()
                .map(|(id, role)| crate::pure::spec::model::Node {
                    id: id.to_string(),
                    address: format!("10.0.0.{}:6379", &id[1..]),
                    shard: "a".into(),
                    role: *role,
                    managed: crate::pure::spec::model::Managed::Direct,
                    labels: BTreeMap::new(),
                })
                .collect(),
            rollout: Default::default(),
        }
    }

    fn topo(at_ms: u64, role: Role, t: crate::pure::live::Topology) -> Sample {
        sample(at_ms, 0, 0, |h| {
            h.role = Some(role);
            h.topology = Some(t);
        })
    }

    fn link(address: &str, offset: u64, lag: u64) -> crate::pure::live::ReplicaLink {
        crate::pure::live::ReplicaLink {
            address: address.into(),
            state: Some("online".into()),
            offset: Some(offset),
            lag_seconds: Some(lag),
        }
    }

    #[test]
    fn replica_lag_and_full_resyncs_fail_with_their_figures() {
        use crate::pure::live::Topology;
        let c = replicated(&[
            ("a1", Some(Role::Primary)),
            ("a2", Some(Role::Replica)),
            ("a3", None),
        ]);
        let replica = |at| {
            topo(
                at,
                Role::Replica,
                Topology {
                    primary: Some("10.0.0.1:6379".into()),
                    ..Topology::default()
                },
            )
        };
        let primary = |at, syncs, links| {
            topo(
                at,
                Role::Primary,
                Topology {
                    offset: Some(5000),
                    full_syncs: Some(syncs),
                    replicas: links,
                    ..Topology::default()
                },
            )
        };
        let base = map(vec![
            ("a1", primary(0, 2, vec![])),
            ("a2", replica(0)),
            ("a3", replica(0)),
        ]);
        let now = map(vec![
            (
                "a1",
                primary(
                    10_000,
                    3,
                    vec![
                        link("10.0.0.2:6379", 5000, 0),
                        link("10.0.0.3:6379", 1000, 7),
                    ],
                ),
            ),
            ("a2", replica(10_000)),
            ("a3", replica(10_000)),
        ]);
        let gates = Gates {
            max_replica_lag_bytes: Some(1000),
            max_replica_lag_seconds: Some(5),
            max_full_resyncs: Some(0),
            ..Gates::default()
        };
        let r = judge_replication(&gates, &c, &ids(&["a3"]), &base, &now);
        assert_eq!(
            r.failures,
            vec![
                "a3: 4000 bytes behind its primary a1 (more than 1000)",
                "a3: last acknowledged its primary a1 7 s ago (more than 5 s)",
                "a1: 1 full resync of its replicas since the rollout began (sync_full 2 → 3; at most 0)",
            ]
        );
        assert_eq!(
            r.figures[0],
            ReplicationFigures {
                node: "a3".into(),
                primary: Some("a1".into()),
                lag_bytes: Some(4000),
                lag_seconds: Some(7),
                ..ReplicationFigures::default()
            }
        );
        // a2 is caught up: a batch of a2 fails only on the shard's full resync.
        let r = judge_replication(&gates, &c, &ids(&["a2"]), &base, &now);
        assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
        // The batch of the primary checks every replica that follows it.
        let r = judge_replication(&gates, &c, &ids(&["a1"]), &base, &now);
        assert_eq!(r.failures.len(), 3, "{:?}", r.failures);
        // Even a replica too far gone to answer: its primary still lists it.
        let mut gone = now.clone();
        gone.get_mut("a3").unwrap().node.reachable = false;
        let r = judge_replication(&gates, &c, &ids(&["a1"]), &base, &gone);
        assert_eq!(
            r.failures[..2],
            [
                "a3: 4000 bytes behind its primary a1 (more than 1000)",
                "a3: last acknowledged its primary a1 7 s ago (more than 5 s)",
            ]
        );
        // Off by default: nothing judged.
        let r = judge_replication(&Gates::default(), &c, &ids(&["a3"]), &base, &now);
        assert_eq!(r, ReplicationJudgement::default());
        assert_eq!(
            with_replication(Verdict::Pass, &["x".to_owned()]),
            Verdict::Fail { reason: "x".into() }
        );
        assert_eq!(
            with_replication(Verdict::Fail { reason: "a".into() }, &["b".to_owned()]),
            Verdict::Fail {
                reason: "a; b".into()
            }
        );
    }

    #[test]
    fn the_cluster_state_gate_fails_on_a_failing_cluster_with_its_figures() {
        let mut c = replicated(&[("a1", Some(Role::Primary)), ("a2", Some(Role::Replica))]);
        let seen = |state: &str, pfail: u64, fail: u64| {
            let view = crate::pure::live::ClusterView {
                id: "x".into(),
                state: state.into(),
                slots_assigned: 16384,
                slots_pfail: pfail,
                slots_fail: fail,
                nodes: Vec::new(),
            };
            topo(
                1_000,
                Role::Primary,
                crate::pure::live::Topology {
                    cluster: Some(view),
                    ..Default::default()
                },
            )
        };
        let now = map(vec![
            ("a1", seen("ok", 0, 0)),
            ("a2", seen("fail", 2, 5461)),
        ]);
        // Not in cluster mode: not judged.
        assert_eq!(judge_cluster(&c, &now), ClusterJudgement::default());
        c.mode = crate::pure::spec::model::ClusterMode::Cluster;
        let j = judge_cluster(&c, &now);
        assert_eq!(
            j.failures,
            vec!["a2: the cluster is not whole: cluster_state:fail, 5461 slots failing (cluster_slots_fail), 2 slots possibly failing (cluster_slots_pfail)"]
        );
        assert_eq!(j.figures.len(), 2);
        assert_eq!(j.figures[1].slots_fail, 5461);
    }

    #[test]
    fn a_restarted_engine_counts_its_counters_from_zero() {
        let base = map(vec![("a", sample(0, 100_000, 10_000, |_| {}))]);
        let now = map(vec![("a", sample(10_000, 900, 100, |_| {}))]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.figures[0].ops_per_sec, Some(100.0));
        assert_eq!(j.verdict, Verdict::Pass);
    }
    #[test]
    fn a_restarted_engine_is_measured_over_its_uptime_not_the_whole_rollout() {
        // 25 reads/s; the rollout began 60 s ago, the engine restarted 10 s ago.
        let base = map(vec![(
            "a",
            sample(0, 100_000, 10_000, |h| {
                h.uptime_seconds = Some(3600);
                h.evicted_keys = Some(5000);
            }),
        )]);
        let now = map(vec![(
            "a",
            sample(60_000, 250, 0, |h| {
                h.uptime_seconds = Some(10);
                h.evicted_keys = Some(21);
            }),
        )]);
        let gates = Gates {
            max_evictions_per_sec: Some(1.0),
            ..Gates::default()
        };
        let j = judge(&gates, &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.figures[0].ops_per_sec, Some(250.0 / 10.5));
        assert_eq!(j.figures[0].evictions_per_sec, Some(21.0 / 10.5));
        assert_eq!(
            j.verdict,
            Verdict::Fail {
                reason: "a: 2.0 evictions/s is above 1".into()
            }
        );
    }

    #[test]
    fn a_restart_is_seen_by_the_uptime_even_when_no_counter_went_down() {
        // A young engine at the baseline (5 s up, 100 reads); 60 s later it reads 20 s
        // up and 600 reads: it restarted 20 s ago and served 30 reads/s since.
        let base = map(vec![(
            "a",
            sample(0, 100, 0, |h| h.uptime_seconds = Some(5)),
        )]);
        let now = map(vec![(
            "a",
            sample(60_000, 600, 0, |h| h.uptime_seconds = Some(20)),
        )]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.figures[0].ops_per_sec, Some(600.0 / 20.5));
        assert_eq!(j.verdict, Verdict::Pass);
        // Not restarted: 65 s up after 60 s, the counters' difference over 60 s.
        let now = map(vec![(
            "a",
            sample(60_000, 700, 0, |h| h.uptime_seconds = Some(65)),
        )]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.figures[0].ops_per_sec, Some(10.0));
        // A restart without an uptime (counters went down): from zero, over the readings.
        let base = map(vec![("a", sample(0, 1000, 0, |_| {}))]);
        let now = map(vec![("a", sample(10_000, 200, 0, |_| {}))]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.figures[0].ops_per_sec, Some(20.0));
    }

    #[test]
    fn a_replication_link_already_down_before_the_rollout_is_noted_not_failed() {
        let replica = |up: bool| {
            move |h: &mut Health| {
                h.role = Some(Role::Replica);
                h.replication_link = Some(if up { LinkState::Up } else { LinkState::Down });
            }
        };
        let base = map(vec![
            ("a", sample(0, 900, 100, replica(false))),
            ("b", sample(0, 900, 100, replica(true))),
        ]);
        let now = map(vec![
            ("a", sample(10_000, 1800, 200, replica(false))),
            ("b", sample(10_000, 1800, 200, replica(true))),
        ]);
        let j = judge(&Gates::default(), &ids(&["a"]), &[], &base, &now);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(
            j.notes,
            [
                "a: replication link to its primary was already down before the rollout \
              (not held against the change)"
            ]
        );
        // Up before, down after: the change did it.
        let now = map(vec![("b", sample(10_000, 1800, 200, replica(false)))]);
        let j = judge(&Gates::default(), &ids(&["b"]), &[], &base, &now);
        assert_eq!(
            j.verdict,
            Verdict::Fail {
                reason: "b: replication link to its primary is down".into()
            }
        );
        assert!(j.notes.is_empty());
        // No baseline to compare with: down fails.
        let j = judge(&Gates::default(), &ids(&["b"]), &[], &BTreeMap::new(), &now);
        assert!(matches!(j.verdict, Verdict::Fail { .. }), "{:?}", j.verdict);
    }

    #[test]
    fn a_node_without_traffic_in_its_baseline_is_not_held_to_min_ops_per_sec() {
        // `new` never served a read before the rollout (a scale-out); `old` did.
        let base = map(vec![
            ("new", sample(0, 0, 0, |_| {})),
            ("old", sample(0, 10, 0, |_| {})),
        ]);
        let now = map(vec![
            ("new", sample(10_000, 0, 0, |_| {})),
            ("old", sample(10_000, 10, 0, |_| {})),
            ("unread", sample(10_000, 0, 0, |_| {})),
        ]);
        let j = judge(
            &Gates::default(),
            &ids(&["new", "unread"]),
            &[],
            &base,
            &now,
        );
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(
            j.notes,
            [
                "new had no traffic before the rollout and served 0.0 ops/s: \
                 judged without minOpsPerSec and the hit ratio",
                "unread had no traffic before the rollout and served 0.0 ops/s: \
                 judged without minOpsPerSec and the hit ratio"
            ]
        );
        // Its other gates still apply.
        let mut full = now.clone();
        if let Some(h) = full.get_mut("new").and_then(|s| s.node.health.as_mut()) {
            h.max_memory = Some(1000);
            h.used_memory = Some(999);
        }
        let j = judge(&Gates::default(), &ids(&["new"]), &[], &base, &full);
        assert!(matches!(j.verdict, Verdict::Fail { .. }), "{:?}", j.verdict);
        // A node that had traffic and lost it still leaves the batch inconclusive.
        let j = judge(&Gates::default(), &ids(&["old"]), &[], &base, &now);
        assert_eq!(
            j.verdict,
            Verdict::Inconclusive {
                reason: "too little traffic to judge: old served 0.0 ops/s (fewer than 10)".into()
            }
        );
    }
}
