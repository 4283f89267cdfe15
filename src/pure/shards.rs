//! Sharding: which shard each cluster belongs to, and which replica should lead which
//! shard. Both are the same placement, consistent hashing with bounded loads
//! (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads", 2018;
//! Argo CD shards its application controller with it):
//!
//! - every bin (a shard, a replica) puts [`Balance::points`] virtual points on a ring of
//!   64-bit positions; every item (a cluster, a shard) hashes to a position;
//! - items are taken in the order of their positions, and each goes to the first bin
//!   clockwise from it that holds fewer than `ceil(c · items / bins)` items, `c` being
//!   the load factor (1.25 by default): no bin ever carries more than `c` times the
//!   average (rounded up);
//! - positions are SHA-256 of the names (never std's randomised hasher), and the result
//!   depends on the *set* of names only, not on their order: every replica, every
//!   process, every version that keeps this module's hashes computes the same placement.
//!
//! Clusters → shards ([`ShardMap`]): `--shards N` fixes the bins, so a cluster changes
//! shard only when the set of clusters in the revision changes (and then few do).
//! Shards → replicas ([`Leaders`]): the live replica ids are the bins, so when a replica
//! joins or leaves, only the shards whose place changes move: about `1/n` of them on a
//! join into `n` replicas, about the leaver's share on a leave ([`moves`] measures it
//! against that ideal; examples/shard_moves.rs reports it, see BENCHMARKS.md).
//!
//! The placement of leaders is a *preference*, not the election: each replica campaigns
//! at once for its [`Leaders::preferred`] shards and only after a delay for the others,
//! so every shard gets a leader even when its preferred replica is gone, and the etcd
//! election (with its fencing revision) stays the one authority on who leads.
//!
//! How `serve --shards N` uses it (every replica the same way):
//!
//! 1. at each revision taken: `ShardMap::assign(cluster names, N, &Balance::default())`;
//!    the leader of shard `s` reconciles [`ShardMap::clusters_of`]`(s)`, and a report
//!    for cluster `c` belongs to the leader of [`ShardMap::shard_of`]`(c)` (another
//!    replica sends it there);
//! 2. at each change of the live replicas (their ids under live etcd leases):
//!    `Leaders::place(N, &live, &Balance::default())`, then campaign at once for
//!    [`Leaders::preferred`]`(me)` and, after a delay (a lease TTL), for every other
//!    shard, as a standby;
//! 3. a replica leading a shard that is no longer among its preferred ones resigns it
//!    once the preferred replica is live (after its in-flight write), so shards return
//!    to their place after a restart;
//! 4. [`moves`]`(before, after, |s| loads[s])` says what a membership change moved (a
//!    log line), against the ideal.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

/// The default load factor `c`, in thousandths: no bin holds more than 1.25 times the
/// average number of items (rounded up). Argo CD's default too.
pub const DEFAULT_LOAD_PERMILLE: u32 = 1250;
/// Virtual points per bin on the ring. A bin's share of the ring varies by about
/// `1/sqrt(points)` of the mean (6 % here), so before the cap most shards are within
/// 15 % of the average; 1,000 clusters over 8 shards spread from 0.92 to 1.12 times the
/// average (from 0.72 to 1.18 with 100 points). The ring costs `bins · points` hashes
/// once per placement (64 shards: 16,384).
pub const DEFAULT_POINTS: u32 = 256;

/// The most shards `--shards` takes: each one is an election on etcd and `points`
/// entries of the cluster ring; 1,024 is far beyond the 8 per replica the docs advise.
pub const MAX_SHARDS: u32 = 1024;

/// Domain separation: the cluster ring and the replica ring hash differently, so a
/// cluster's shard and its shard's leader are independent draws.
const SHARD_RING: &[u8] = b"cacheflow shards v1\0";
const REPLICA_RING: &[u8] = b"cacheflow leaders v1\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardsError {
    #[error("the number of shards must be at least 1")]
    NoShards,
    #[error("{0} shards is more than the {MAX_SHARDS} cacheflow takes")]
    TooManyShards(u32),
    #[error("the load factor must be at least 1 (1000 thousandths), got {0} thousandths")]
    LoadFactorBelowOne(u32),
    #[error("every bin needs at least one point on the ring")]
    NoPoints,
    #[error("no live replica to place the shards on")]
    NoReplicas,
    #[error("the placements cover different numbers of shards ({before} and {after})")]
    ShardCountDiffers { before: u32, after: u32 },
}

/// The two knobs of the placement: the load factor `c` (in thousandths) and the virtual
/// points per bin. Every replica must use the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    load_permille: u32,
    points: u32,
}

impl Default for Balance {
    fn default() -> Self {
        Balance {
            load_permille: DEFAULT_LOAD_PERMILLE,
            points: DEFAULT_POINTS,
        }
    }
}

impl Balance {
    /// A load factor of `load_permille / 1000` (at least 1: below it some item would
    /// find every bin full) with `points` virtual points per bin.
    pub fn new(load_permille: u32, points: u32) -> Result<Self, ShardsError> {
        if load_permille < 1000 {
            return Err(ShardsError::LoadFactorBelowOne(load_permille));
        }
        if points == 0 {
            return Err(ShardsError::NoPoints);
        }
        Ok(Balance {
            load_permille,
            points,
        })
    }

    pub fn load_permille(&self) -> u32 {
        self.load_permille
    }

    pub fn points(&self) -> u32 {
        self.points
    }

    /// The most items one bin may hold: `ceil(c · items / bins)`, where `bins` counts
    /// at most as many bins as there are items. With `c ≥ 1`, `cap · bins ≥ items`, so
    /// every item finds a bin.
    ///
    /// Why the `min`: with more replicas than shards, the plain formula gives a cap of 1
    /// or 2 that flips with every join and leave (8 shards: 2 over 9 replicas, 1 over
    /// 10), and a flip of the cap reshuffles shards although no leader left; measured,
    /// a leave out of 10 replicas with 8 shards moved 43 % of the clusters on average
    /// (ideal 10 %), a replica that led nothing included. With
    /// the `min`, the cap stays `ceil(c)` once replicas outnumber shards, and a replica
    /// that leads nothing moves nothing when it leaves.
    pub fn cap(&self, items: usize, bins: usize) -> usize {
        let bins = bins.min(items);
        if bins == 0 {
            return 0;
        }
        let num = items as u128 * u128::from(self.load_permille);
        let den = bins as u128 * 1000;
        num.div_ceil(den) as usize
    }
}

/// Clusters assigned to shards. Built from the whole set of cluster names of a revision
/// (bounded loads make one cluster's shard depend on the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    shards: u32,
    of: BTreeMap<String, u32>,
}

impl ShardMap {
    /// Assigns every cluster of `clusters` (duplicates count once) to one of `shards`.
    pub fn assign<I, S>(clusters: I, shards: u32, balance: &Balance) -> Result<Self, ShardsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        check_shards(shards)?;
        let names: BTreeSet<String> = clusters
            .into_iter()
            .map(|c| c.as_ref().to_string())
            .collect();
        let items: Vec<u64> = names
            .iter()
            .map(|n| position(SHARD_RING, n.as_bytes()))
            .collect();
        let bins: Vec<String> = (0..shards).map(|s| format!("shard-{s}")).collect();
        let placed = place(&items, &bins, SHARD_RING, balance);
        let of = names
            .into_iter()
            .zip(placed)
            .map(|(name, bin)| (name, bin as u32))
            .collect();
        Ok(ShardMap { shards, of })
    }

    /// The number of shards (`--shards`).
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The shard of `cluster`, if the map was built with it.
    pub fn shard_of(&self, cluster: &str) -> Option<u32> {
        self.of.get(cluster).copied()
    }

    /// The clusters of `shard`, by name.
    pub fn clusters_of(&self, shard: u32) -> impl Iterator<Item = &str> {
        self.of
            .iter()
            .filter(move |(_, s)| **s == shard)
            .map(|(c, _)| c.as_str())
    }

    /// How many clusters each shard holds, indexed by shard.
    pub fn loads(&self) -> Vec<u64> {
        let mut loads = vec![0u64; self.shards as usize];
        for s in self.of.values() {
            loads[*s as usize] += 1;
        }
        loads
    }

    /// The number of clusters.
    pub fn len(&self) -> usize {
        self.of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.of.is_empty()
    }

    /// How many clusters present in both maps are in another shard in `after`.
    pub fn changed(&self, after: &ShardMap) -> usize {
        self.of
            .iter()
            .filter(|(c, s)| after.of.get(*c).is_some_and(|t| t != *s))
            .count()
    }
}

/// Which replica should lead each shard, over the replicas that are live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaders {
    /// Indexed by shard.
    leader: Vec<String>,
    /// The live replicas, sorted (some may lead nothing).
    replicas: Vec<String>,
}

impl Leaders {
    /// Places `shards` shards over the live `replicas` (stable ids, duplicates count
    /// once: a StatefulSet pod's name, a host name; not an address that changes on a
    /// restart, or every restart moves shards).
    pub fn place<S: AsRef<str>>(
        shards: u32,
        replicas: &[S],
        balance: &Balance,
    ) -> Result<Self, ShardsError> {
        check_shards(shards)?;
        let bins: Vec<String> = replicas
            .iter()
            .map(|r| r.as_ref().to_string())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if bins.is_empty() {
            return Err(ShardsError::NoReplicas);
        }
        let items: Vec<u64> = (0..shards)
            .map(|s| position(REPLICA_RING, format!("shard-{s}").as_bytes()))
            .collect();
        let placed = place(&items, &bins, REPLICA_RING, balance);
        let leader = placed.into_iter().map(|b| bins[b].clone()).collect();
        Ok(Leaders {
            leader,
            replicas: bins,
        })
    }

    pub fn shards(&self) -> u32 {
        self.leader.len() as u32
    }

    /// The replica that should lead `shard`.
    pub fn leader_of(&self, shard: u32) -> Option<&str> {
        self.leader.get(shard as usize).map(String::as_str)
    }

    /// The shards `me` should lead, ascending (empty for a replica that is not among
    /// the live ones, or that the cap leaves without a shard: a pure standby).
    pub fn preferred(&self, me: &str) -> Vec<u32> {
        self.leader
            .iter()
            .enumerate()
            .filter(|(_, r)| r.as_str() == me)
            .map(|(s, _)| s as u32)
            .collect()
    }

    /// The live replicas the shards were placed over, sorted.
    pub fn replicas(&self) -> &[String] {
        &self.replicas
    }

    /// How many shards each live replica should lead (0 for a pure standby).
    pub fn loads(&self) -> BTreeMap<&str, u64> {
        let mut loads: BTreeMap<&str, u64> =
            self.replicas.iter().map(|r| (r.as_str(), 0)).collect();
        for r in &self.leader {
            *loads.entry(r.as_str()).or_insert(0) += 1;
        }
        loads
    }
}

/// The shards `me` should campaign for first, given the live replicas: what serve asks
/// each time the set of live replicas changes.
pub fn preferred<S: AsRef<str>>(
    shards: u32,
    replicas: &[S],
    me: &str,
    balance: &Balance,
) -> Result<Vec<u32>, ShardsError> {
    Ok(Leaders::place(shards, replicas, balance)?.preferred(me))
}

/// What moved between two placements of the same shards, in units of `weight` (clusters
/// per shard: the fraction of clusters that changed leader; 1 per shard: the fraction of
/// shards).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Moves {
    /// The weight of the shards whose leader changed.
    pub moved: u64,
    /// The weight of all shards.
    pub total: u64,
    /// The fraction that had to move: the replicas that joined get their fair share
    /// (`joined / replicas after`: `1/n` for one join into `n`), and the shards of the
    /// replicas that left must move (their share of the weight before). Both added,
    /// capped at 1.
    pub ideal: f64,
}

impl Moves {
    /// The fraction of the weight that moved.
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.moved as f64 / self.total as f64
        }
    }

    /// How many times the ideal moved (1.0 is optimal; 0 when nothing had to move and
    /// nothing did).
    pub fn over_ideal(&self) -> f64 {
        if self.ideal > 0.0 {
            self.fraction() / self.ideal
        } else if self.moved == 0 {
            0.0
        } else {
            f64::INFINITY
        }
    }
}

/// The moves from `before` to `after`, each shard counted with `weight(shard)`.
pub fn moves(
    before: &Leaders,
    after: &Leaders,
    weight: impl Fn(u32) -> u64,
) -> Result<Moves, ShardsError> {
    if before.shards() != after.shards() {
        return Err(ShardsError::ShardCountDiffers {
            before: before.shards(),
            after: after.shards(),
        });
    }
    let (mut moved, mut total, mut left) = (0u64, 0u64, 0u64);
    for (s, (was, is)) in before.leader.iter().zip(&after.leader).enumerate() {
        let w = weight(s as u32);
        total += w;
        if was != is {
            moved += w;
        }
        if after.replicas.binary_search(was).is_err() {
            left += w;
        }
    }
    let joined = after
        .replicas
        .iter()
        .filter(|r| before.replicas.binary_search(r).is_err())
        .count();
    let join_share = joined as f64 / after.replicas.len() as f64;
    let leave_share = if total == 0 {
        0.0
    } else {
        left as f64 / total as f64
    };
    Ok(Moves {
        moved,
        total,
        ideal: (join_share + leave_share).min(1.0),
    })
}

fn check_shards(shards: u32) -> Result<(), ShardsError> {
    match shards {
        0 => Err(ShardsError::NoShards),
        n if n > MAX_SHARDS => Err(ShardsError::TooManyShards(n)),
        _ => Ok(()),
    }
}

/// A name's position on a ring: the first 8 bytes of SHA-256(domain ‖ name).
fn position(domain: &[u8], name: &[u8]) -> u64 {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(name);
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The bounded-load placement: for each item (its ring position), the index of its bin.
/// `bins` are distinct and sorted (so ties on the ring break the same way everywhere).
fn place(items: &[u64], bins: &[String], domain: &[u8], balance: &Balance) -> Vec<usize> {
    let ring = ring(bins, domain, balance.points);
    let cap = balance.cap(items.len(), bins.len());
    let mut load = vec![0usize; bins.len()];
    let mut out = vec![0usize; items.len()];
    // Clockwise from the top of the ring: the order depends on the items, not on how
    // the caller listed them (ties: the caller's sorted order).
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| (items[i], i));
    for i in order {
        let start = ring.partition_point(|&(p, _)| p < items[i]);
        let free = (0..ring.len())
            .map(|k| ring[(start + k) % ring.len()].1)
            .find(|&b| load[b] < cap);
        // cap · bins ≥ items, so some bin always has room; the fallback only keeps this
        // total without an unwrap.
        let bin = free.unwrap_or_else(|| least_loaded(&load));
        load[bin] += 1;
        out[i] = bin;
    }
    out
}

/// Every bin's virtual points, sorted by position (then by bin).
fn ring(bins: &[String], domain: &[u8], points: u32) -> Vec<(u64, usize)> {
    let mut ring: Vec<(u64, usize)> = bins
        .iter()
        .enumerate()
        .flat_map(|(b, name)| {
            (0..points).map(move |k| (position(domain, format!("{name}#{k}").as_bytes()), b))
        })
        .collect();
    ring.sort_unstable();
    ring
}

fn least_loaded(load: &[usize]) -> usize {
    load.iter()
        .enumerate()
        .min_by_key(|(b, l)| (**l, *b))
        .map_or(0, |(b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cluster-{i:05}")).collect()
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|k| format!("cacheflow-{k}")).collect()
    }

    #[test]
    fn the_cap_is_c_times_the_average_rounded_up() {
        let b = Balance::default();
        assert_eq!(b.cap(8, 3), 4); // 1.25 · 8 / 3 = 3.33
        assert_eq!(b.cap(100_000, 64), 1954); // 1953.125
        assert_eq!(b.cap(2, 2), 2); // 1.25
        assert_eq!(b.cap(0, 5), 0);
        assert_eq!(b.cap(5, 0), 0);
        // More bins than items: as if there were as many bins as items.
        assert_eq!(b.cap(8, 10), 2);
        assert_eq!(b.cap(8, 9), 2);
        assert_eq!(Balance::new(1000, 10).map(|b| b.cap(10, 4)), Ok(3));
    }

    #[test]
    fn a_load_factor_below_one_or_no_points_is_refused() {
        assert_eq!(
            Balance::new(999, 100),
            Err(ShardsError::LoadFactorBelowOne(999))
        );
        assert_eq!(Balance::new(1000, 0), Err(ShardsError::NoPoints));
        let none: [&str; 0] = [];
        assert_eq!(
            Leaders::place(4, &none, &Balance::default()),
            Err(ShardsError::NoReplicas)
        );
        assert_eq!(
            ShardMap::assign(["a"], 0, &Balance::default()),
            Err(ShardsError::NoShards)
        );
        assert_eq!(
            Leaders::place(MAX_SHARDS + 1, &["a"], &Balance::default()),
            Err(ShardsError::TooManyShards(1025))
        );
        assert!(ShardMap::assign(["a"], MAX_SHARDS, &Balance::default()).is_ok());
    }

    /// The placement is part of the wire between replicas of different versions: these
    /// values may only change with a new ring domain (`… v2`) and a note in the upgrade
    /// docs, since replicas that disagree would campaign for the same shards.
    #[test]
    fn the_placement_is_pinned_across_processes_and_versions() {
        let map = ShardMap::assign(names(1000), 8, &Balance::default()).unwrap();
        let first: Vec<u32> = (0..8)
            .map(|i| map.shard_of(&format!("cluster-{i:05}")).unwrap())
            .collect();
        let leaders = Leaders::place(16, &ids(3), &Balance::default()).unwrap();
        assert_eq!(
            (first, map.loads(), leaders.preferred("cacheflow-0")),
            (
                PINNED_SHARDS.to_vec(),
                PINNED_LOADS.to_vec(),
                PINNED_PREFERRED.to_vec()
            )
        );
    }
    const PINNED_SHARDS: [u32; 8] = [4, 7, 2, 6, 7, 0, 0, 7];
    const PINNED_LOADS: [u64; 8] = [115, 129, 118, 133, 122, 123, 120, 140];
    const PINNED_PREFERRED: [u32; 6] = [1, 5, 7, 8, 9, 15];

    #[test]
    fn every_cluster_gets_a_shard_and_no_shard_exceeds_its_cap() {
        let balance = Balance::default();
        let map = ShardMap::assign(names(10_000), 16, &balance).unwrap();
        assert_eq!(map.len(), 10_000);
        let loads = map.loads();
        assert_eq!(loads.iter().sum::<u64>(), 10_000);
        assert!(loads.iter().all(|l| *l <= 782), "{loads:?}"); // ceil(1.25 · 625)
        assert_eq!(map.clusters_of(3).count() as u64, loads[3]);
        assert_eq!(map.shard_of("no-such-cluster"), None);
    }

    #[test]
    fn the_order_and_repetition_of_names_do_not_matter() {
        let b = Balance::default();
        let mut shuffled = names(500);
        shuffled.reverse();
        shuffled.push("cluster-00007".into());
        assert_eq!(
            ShardMap::assign(&shuffled, 8, &b),
            ShardMap::assign(names(500), 8, &b)
        );
        let r = ["c", "a", "b", "a"];
        assert_eq!(
            Leaders::place(8, &r, &b),
            Leaders::place(8, &["a", "b", "c"], &b)
        );
    }

    #[test]
    fn each_replica_prefers_its_own_shards_and_together_they_cover_all() {
        let b = Balance::default();
        let replicas = ids(3);
        let mut all: Vec<u32> = replicas
            .iter()
            .flat_map(|me| preferred(16, &replicas, me, &b).unwrap())
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..16).collect::<Vec<_>>());
        assert_eq!(preferred(16, &replicas, "cacheflow-9", &b), Ok(vec![]));
        let leaders = Leaders::place(16, &replicas, &b).unwrap();
        for s in 0..16 {
            let who = leaders.leader_of(s).unwrap();
            assert!(leaders.preferred(who).contains(&s));
        }
        assert_eq!(leaders.leader_of(16), None);
        assert!(leaders.loads().values().all(|l| *l <= 7)); // ceil(1.25 · 16 / 3)
    }

    #[test]
    fn a_replica_that_leaves_hands_over_its_shards_and_the_moves_are_counted() {
        let b = Balance::default();
        let before = Leaders::place(64, &ids(4), &b).unwrap();
        let after = Leaders::place(64, &ids(3), &b).unwrap();
        let gone = before.preferred("cacheflow-3");
        // Every shard of the leaver moved, to a live replica.
        for s in &gone {
            assert_ne!(after.leader_of(*s), Some("cacheflow-3"));
        }
        let m = moves(&before, &after, |_| 1).unwrap();
        assert_eq!(m.total, 64);
        assert!(m.moved >= gone.len() as u64);
        assert!((m.ideal - gone.len() as f64 / 64.0).abs() < 1e-9);
        // Weighted: the ideal is the leaver's share of the weight.
        let w = |s: u32| u64::from(s) + 1;
        let m = moves(&before, &after, w).unwrap();
        let share: u64 = gone.iter().map(|s| w(*s)).sum();
        assert!((m.ideal - share as f64 / m.total as f64).abs() < 1e-9);
    }

    #[test]
    fn a_join_into_n_replicas_ideally_moves_one_nth() {
        let b = Balance::default();
        let before = Leaders::place(64, &ids(4), &b).unwrap();
        let after = Leaders::place(64, &ids(5), &b).unwrap();
        let m = moves(&before, &after, |_| 1).unwrap();
        assert!((m.ideal - 0.2).abs() < 1e-9);
        assert_eq!(
            m.moved,
            (0..64)
                .filter(|s| before.leader_of(*s) != after.leader_of(*s))
                .count() as u64
        );
        let same = moves(&before, &before, |_| 1).unwrap();
        assert_eq!((same.moved, same.ideal, same.over_ideal()), (0, 0.0, 0.0));
        let other = Leaders::place(8, &ids(4), &b).unwrap();
        assert_eq!(
            moves(&before, &other, |_| 1),
            Err(ShardsError::ShardCountDiffers {
                before: 64,
                after: 8
            })
        );
    }

    #[test]
    fn adding_or_removing_a_cluster_moves_few_others() {
        let b = Balance::default();
        let mut names = names(2000);
        let mut before = ShardMap::assign(&names, 16, &b).unwrap();
        let mut most = 0;
        for i in 0..50 {
            names.push(format!("new-cluster-{i}"));
            let after = ShardMap::assign(&names, 16, &b).unwrap();
            assert!(after.shard_of(&format!("new-cluster-{i}")).is_some());
            most = most.max(before.changed(&after));
            before = after;
        }
        for _ in 0..50 {
            names.swap_remove(0);
            let after = ShardMap::assign(&names, 16, &b).unwrap();
            most = most.max(before.changed(&after));
            before = after;
        }
        // Measured: at most one other cluster changed shard at any step.
        assert!(most <= 2, "{most}");
    }

    fn cluster_names() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec("[a-z][a-z0-9-]{0,20}", 0..300)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn no_shard_ever_exceeds_its_cap(clusters in cluster_names(), shards in 1u32..40, permille in 1000u32..2000) {
            let b = Balance::new(permille, 20).unwrap();
            let map = ShardMap::assign(&clusters, shards, &b).unwrap();
            let cap = b.cap(map.len(), shards as usize) as u64;
            let loads = map.loads();
            prop_assert!(loads.iter().all(|l| *l <= cap), "{:?} cap {}", loads, cap);
            prop_assert_eq!(loads.iter().sum::<u64>(), map.len() as u64);
            for c in &clusters {
                prop_assert!(map.shard_of(c).is_some_and(|s| s < shards));
            }
        }

        #[test]
        fn no_replica_ever_leads_more_than_its_cap(shards in 1u32..200, n in 1usize..20, permille in 1000u32..2000) {
            let b = Balance::new(permille, 50).unwrap();
            let leaders = Leaders::place(shards, &ids(n), &b).unwrap();
            let cap = b.cap(shards as usize, n) as u64;
            prop_assert!(leaders.loads().values().all(|l| *l <= cap));
            prop_assert_eq!(leaders.loads().values().sum::<u64>(), u64::from(shards));
        }

        #[test]
        fn the_placement_depends_on_the_set_of_names_only(mut clusters in cluster_names(), shards in 1u32..40, seed in any::<u64>()) {
            let b = Balance::default();
            let first = ShardMap::assign(&clusters, shards, &b).unwrap();
            // Another process lists the clusters in another order.
            let len = clusters.len().max(1);
            clusters.rotate_left((seed as usize) % len);
            clusters.reverse();
            prop_assert_eq!(&first, &ShardMap::assign(&clusters, shards, &b).unwrap());
            let mut replicas = ids((seed % 9) as usize + 1);
            let leaders = Leaders::place(shards, &replicas, &b).unwrap();
            replicas.reverse();
            prop_assert_eq!(leaders, Leaders::place(shards, &replicas, &b).unwrap());
        }

        /// The stated bound: a join or a leave moves at most twice the shards it must,
        /// plus six (the cap `ceil(c · shards / replicas)` changes with the number of
        /// replicas, and a changed cap lets a few shards spill, or stop spilling, to the
        /// next replica on the ring). Measured over 8..128 shards and 2..12 replicas, the
        /// worst excess over twice the ideal was 4.0 shards (a leave) and 2.8 (a join);
        /// then a random case moved 5 of 16 shards when a replica that led none left 10
        /// (the cap went from 2 to 3; `proptest-regressions/pure/shards.txt` keeps it).
        #[test]
        fn a_join_or_a_leave_moves_at_most_twice_the_ideal_plus_six_shards(
            shards in 8u32..128,
            replicas in proptest::collection::btree_set("[a-z][a-z0-9-]{0,15}", 3..13),
            leaver in any::<usize>(),
        ) {
            let b = Balance::default();
            let all: Vec<String> = replicas.into_iter().collect();
            let n = all.len() - 1;
            let base = Leaders::place(shards, &all[..n], &b).unwrap();
            let joined = Leaders::place(shards, &all, &b).unwrap();
            let join = moves(&base, &joined, |_| 1).unwrap();
            prop_assert!(join.moved as f64 <= 2.0 * join.ideal * f64::from(shards) + 6.0,
                "join moved {} of {} shards, ideal {}", join.moved, shards, join.ideal);
            let gone = &all[leaver % n];
            let rest: Vec<&String> = all[..n].iter().filter(|r| *r != gone).collect();
            let left = Leaders::place(shards, &rest, &b).unwrap();
            let leave = moves(&base, &left, |_| 1).unwrap();
            prop_assert!(leave.moved as f64 <= 2.0 * leave.ideal * f64::from(shards) + 6.0,
                "leave moved {} of {} shards, ideal {}", leave.moved, shards, leave.ideal);
            // The leaver's shards all went to live replicas.
            for s in base.preferred(gone) {
                prop_assert!(left.leader_of(s).is_some_and(|r| r != gone.as_str()));
            }
        }

        /// A replica that leads nothing (more replicas than shards) moves nothing when
        /// it leaves: the cap stays `ceil(c)` once replicas outnumber shards.
        #[test]
        fn a_standby_that_leaves_moves_nothing_when_replicas_outnumber_shards(
            shards in 1u32..8,
            extra in 1usize..6,
        ) {
            let b = Balance::default();
            let all = ids(shards as usize + extra + 1);
            let base = Leaders::place(shards, &all, &b).unwrap();
            for idle in all.iter().filter(|r| base.preferred(r).is_empty()) {
                let rest: Vec<&String> = all.iter().filter(|r| *r != idle).collect();
                let after = Leaders::place(shards, &rest, &b).unwrap();
                prop_assert_eq!(moves(&base, &after, |_| 1).unwrap().moved, 0);
            }
        }
    }
}
