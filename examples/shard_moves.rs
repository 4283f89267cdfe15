//! How clusters spread over shards and shards over replicas, and how many clusters change
//! leader when a replica joins or leaves (issue: replicas and shards, item 5).
//!
//!     cargo run --release --example shard_moves -- [--replica-load PERMILLE] [--quick]
//!
//! For 1,000, 10,000 and 100,000 clusters (`cluster-000000`…) and 8, 16 and 64 shards:
//!
//! 1. assigns the clusters to the shards with `cacheflow::pure::shards::ShardMap`
//!    (c = 1.25) and reports the largest shard against the average, and the time the
//!    assignment took (what every replica pays per revision);
//! 2. for each number n of replicas from 2 to 10 (`cacheflow-0`…, as a StatefulSet
//!    names its pods), places the shards with `Leaders::place` (c = PERMILLE/1000, 1.25
//!    by default) and reports the busiest replica's clusters against the average;
//! 3. **join**: `cacheflow-n` joins the n replicas: the fraction of clusters whose shard
//!    changed leader, against the ideal `1/(n+1)`;
//! 4. **leave**: each of the n replicas leaves in turn: the mean and the worst fraction
//!    of clusters that changed leader, against the ideal (the leaver's share of the
//!    clusters), as the mean and the worst of `moved / ideal` over the leavers that led
//!    a shard; a leaver that led none (a standby: more replicas than the cap needs) had
//!    nothing to move, and the summary's `standby` column shows the most that moved
//!    anyway.
//!
//! Prints one row per (clusters, shards, n) and, per (clusters, shards), a summary over
//! n. Exit 1 if any placement exceeds its cap (never expected). `--quick` measures 1,000
//! clusters only.

use std::time::Instant;

use cacheflow::pure::shards::{moves, Balance, Leaders, ShardMap};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let replica_load = args
        .iter()
        .position(|a| a == "--replica-load")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(cacheflow::pure::shards::DEFAULT_LOAD_PERMILLE);
    let quick = args.iter().any(|a| a == "--quick");
    let cluster_balance = Balance::default();
    let Ok(replica_balance) = Balance::new(replica_load, cacheflow::pure::shards::DEFAULT_POINTS)
    else {
        eprintln!("--replica-load must be at least 1000");
        return std::process::ExitCode::FAILURE;
    };
    let sizes: &[usize] = if quick {
        &[1_000]
    } else {
        &[1_000, 10_000, 100_000]
    };
    println!(
        "clusters→shards c = 1.25, shards→replicas c = {:.3}",
        f64::from(replica_load) / 1000.0
    );
    println!(
        "{:>8} {:>6} {:>3} | {:>9} | {:>8} {:>6} {:>6} | {:>8} {:>8} {:>6} {:>6} | {:>8}",
        "clusters",
        "shards",
        "n",
        "shard max",
        "join",
        "ideal",
        "×ideal",
        "leave",
        "worst",
        "×mean",
        "×worst",
        "rep. max"
    );
    let mut ok = true;
    let mut summary = Vec::new();
    for &clusters in sizes {
        let names: Vec<String> = (0..clusters).map(|i| format!("cluster-{i:06}")).collect();
        for shards in [8u32, 16, 64] {
            let started = Instant::now();
            let Ok(map) = ShardMap::assign(&names, shards, &cluster_balance) else {
                return std::process::ExitCode::FAILURE;
            };
            let assign_ms = started.elapsed().as_secs_f64() * 1000.0;
            let loads = map.loads();
            let shard_max = loads.iter().copied().max().unwrap_or(0);
            let shard_avg = clusters as f64 / f64::from(shards);
            ok &= shard_max as usize <= cluster_balance.cap(clusters, shards as usize);
            let weight = |s: u32| loads[s as usize];
            let mut row = Row::default();
            for n in 2..=10usize {
                let ids: Vec<String> = (0..=n).map(|k| format!("cacheflow-{k}")).collect();
                let (Ok(base), Ok(joined)) = (
                    Leaders::place(shards, &ids[..n], &replica_balance),
                    Leaders::place(shards, &ids[..=n], &replica_balance),
                ) else {
                    return std::process::ExitCode::FAILURE;
                };
                ok &= placement_within_cap(&base, &replica_balance);
                let rep_max = base
                    .loads()
                    .keys()
                    .map(|r| {
                        base.preferred(r)
                            .iter()
                            .map(|s| loads[*s as usize])
                            .sum::<u64>()
                    })
                    .max()
                    .unwrap_or(0);
                let rep_ratio = rep_max as f64 / (clusters as f64 / n as f64);
                let Ok(join) = moves(&base, &joined, weight) else {
                    return std::process::ExitCode::FAILURE;
                };
                let (mut leave_sum, mut leave_worst) = (0.0f64, 0.0f64);
                let (mut over_sum, mut over_worst) = (0.0f64, 0.0f64);
                let mut leaders = 0usize;
                for gone in 0..n {
                    let rest: Vec<&String> = ids[..n].iter().filter(|r| **r != ids[gone]).collect();
                    let Ok(after) = Leaders::place(shards, &rest, &replica_balance) else {
                        return std::process::ExitCode::FAILURE;
                    };
                    ok &= placement_within_cap(&after, &replica_balance);
                    let Ok(leave) = moves(&base, &after, weight) else {
                        return std::process::ExitCode::FAILURE;
                    };
                    leave_sum += leave.fraction();
                    leave_worst = leave_worst.max(leave.fraction());
                    if leave.ideal > 0.0 {
                        over_sum += leave.over_ideal();
                        over_worst = over_worst.max(leave.over_ideal());
                        leaders += 1;
                    } else {
                        // A standby left: nothing had to move.
                        row.standby_moved = row.standby_moved.max(leave.fraction());
                    }
                }
                let leave_mean = leave_sum / n as f64;
                let over_mean = over_sum / leaders.max(1) as f64;
                println!(
                    "{:>8} {:>6} {:>3} | {:>9.2} | {:>8.3} {:>6.3} {:>6.2} | {:>8.3} {:>8.3} {:>6.2} {:>6.2} | {:>8.2}",
                    clusters,
                    shards,
                    n,
                    shard_max as f64 / shard_avg,
                    join.fraction(),
                    join.ideal,
                    join.over_ideal(),
                    leave_mean,
                    leave_worst,
                    over_mean,
                    over_worst,
                    rep_ratio
                );
                row.add(join.over_ideal(), over_mean, over_worst, rep_ratio);
            }
            summary.push((
                clusters,
                shards,
                shard_max as f64 / shard_avg,
                assign_ms,
                row,
            ));
        }
    }
    println!();
    println!("summary over n = 2..10 (×ideal: moved fraction / ideal fraction; max/avg: busiest / average)");
    println!(
        "{:>8} {:>6} | {:>13} {:>9} | {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>12} {:>12} | {:>7}",
        "clusters",
        "shards",
        "shard max/avg",
        "assign ms",
        "join mean",
        "join worst",
        "leave mean",
        "leave max",
        "(one leaver)",
        "replica mean",
        "replica worst",
        "standby"
    );
    for (clusters, shards, shard_ratio, assign_ms, row) in &summary {
        let k = row.count as f64;
        println!(
            "{:>8} {:>6} | {:>13.2} {:>9.1} | {:>10.2} {:>10.2} | {:>10.2} {:>10.2} {:>10.2} | {:>12.2} {:>12.2} | {:>7.3}",
            clusters,
            shards,
            shard_ratio,
            assign_ms,
            row.join_sum / k,
            row.join_worst,
            row.leave_mean_sum / k,
            row.leave_mean_worst,
            row.leave_worst,
            row.rep_sum / k,
            row.rep_worst,
            row.standby_moved
        );
    }
    if ok {
        std::process::ExitCode::SUCCESS
    } else {
        eprintln!("a placement exceeded its cap");
        std::process::ExitCode::FAILURE
    }
}

fn placement_within_cap(leaders: &Leaders, balance: &Balance) -> bool {
    let cap = balance.cap(leaders.shards() as usize, leaders.replicas().len()) as u64;
    leaders.loads().values().all(|l| *l <= cap)
}

/// The ratios of one (clusters, shards) over n = 2..10.
#[derive(Default)]
struct Row {
    count: usize,
    join_sum: f64,
    join_worst: f64,
    leave_mean_sum: f64,
    leave_mean_worst: f64,
    leave_worst: f64,
    rep_sum: f64,
    rep_worst: f64,
    /// The most clusters that changed leader when a replica that led nothing left.
    standby_moved: f64,
}

impl Row {
    fn add(&mut self, join: f64, leave_mean: f64, leave_worst: f64, rep: f64) {
        self.count += 1;
        self.join_sum += join;
        self.join_worst = self.join_worst.max(join);
        self.leave_mean_sum += leave_mean;
        self.leave_mean_worst = self.leave_mean_worst.max(leave_mean);
        self.leave_worst = self.leave_worst.max(leave_worst);
        self.rep_sum += rep;
        self.rep_worst = self.rep_worst.max(rep);
    }
}
