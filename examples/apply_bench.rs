//! Times `RedisDriver::apply` of five parameters against one node, for `bench/apply.sh`.
//!
//!     cargo run --release --example apply_bench -- 127.0.0.1:6379 [APPLIES]
//!
//! Alternates between two sets of values so that every apply really changes all five
//! parameters (an apply of values already in force is a no-op and would flatter the
//! figure), and puts the node's original values back at the end. Prints one line:
//! `applies=N median_us=.. p90_us=.. mean_us=.. min_us=.. persisted=true|false
//! config_set_median_us=.. config_set_p90_us=..`, the last two the floor measured from
//! this process: one `CONFIG SET` round trip with the same client library and runtime.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cacheflow::edges::nodes::redis::RedisDriver;
use cacheflow::edges::nodes::NodeDriver;

const NAMES: [&str; 5] = [
    "hz",
    "maxmemory-samples",
    "timeout",
    "lfu-log-factor",
    "slowlog-max-len",
];
const A: [&str; 5] = ["11", "6", "301", "11", "129"];
const B: [&str; 5] = ["12", "7", "302", "12", "130"];

fn set(values: &[&str; 5]) -> BTreeMap<String, String> {
    NAMES
        .iter()
        .zip(values)
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let address = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: apply_bench HOST:PORT [APPLIES]"))?;
    let applies: usize = match args.next() {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let driver = RedisDriver::connect(&address, None, Duration::from_secs(5)).await?;
    let original: BTreeMap<String, String> = {
        let live = driver.read().await?;
        NAMES
            .iter()
            .map(|n| (n.to_string(), live.parameters[*n].clone()))
            .collect()
    };
    let (a, b) = (set(&A), set(&B));

    // Warm up: connection, the config-file lookup, allocator.
    for i in 0..50 {
        driver.apply(if i % 2 == 0 { &a } else { &b }).await?;
    }
    let mut times = Vec::with_capacity(applies);
    let mut persisted = false;
    for i in 0..applies {
        let want = if i % 2 == 0 { &a } else { &b };
        let started = Instant::now();
        let applied = driver.apply(want).await?;
        times.push(started.elapsed());
        anyhow::ensure!(
            applied.changed.len() == NAMES.len(),
            "apply {i} changed {} parameters, not {}",
            applied.changed.len(),
            NAMES.len()
        );
        persisted = applied.persisted;
    }
    driver.apply(&original).await?;

    // The same floor as redis-benchmark's, from this process with the same client library
    // and runtime: one CONFIG SET round trip on a connection of its own.
    let client = redis::Client::open(format!("redis://{address}/"))?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let hz = &original["hz"];
    let mut floor = Vec::with_capacity(applies);
    for i in 0..applies + 50 {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET").arg("hz").arg(hz);
        let started = Instant::now();
        let _: () = cmd.query_async(&mut con).await?;
        if i >= 50 {
            floor.push(started.elapsed());
        }
    }
    floor.sort();

    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / times.len().max(1) as f64;
    let at = |t: &[Duration], q: f64| us(t[((t.len() - 1) as f64 * q).round() as usize]);
    println!(
        "applies={} median_us={:.1} p90_us={:.1} mean_us={:.1} min_us={:.1} persisted={} \
         config_set_median_us={:.1} config_set_p90_us={:.1}",
        times.len(),
        at(&times, 0.5),
        at(&times, 0.9),
        mean,
        us(times[0]),
        persisted,
        at(&floor, 0.5),
        at(&floor, 0.9),
    );
    Ok(())
}
