//! The cost of one journal entry, single process (Git only) and replicated (etcd under
//! the leader's fence, then Git), in one run, for `bench/replicas.sh`.
//!
//!     cargo run --example journal_bench -- ENDPOINTS [ENTRIES] [CLUSTERS]
//!
//! A state of CLUSTERS clusters of 6 nodes (each cluster's file about 2 KB, as a
//! six-node cluster's is), ENTRIES entries each changing one cluster (most entries do:
//! a batch assigned, a node confirmed), written one after the other with no group
//! commit (every entry pays the whole cost; under load the runtime folds the entries
//! that wait into one). Prints one line per mode:
//! `mode=git entries=N median_us=.. p90_us=.. p99_us=.. max_us=.. per_s=..`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cacheflow::edges::audit::{EntryMaker, Journal, ENTRY_TRAILER};
use cacheflow::edges::etcd::election::{leader_key, shard_key, Election};
use cacheflow::edges::etcd::journal::{Fence, FencedJournal};
use cacheflow::edges::etcd::{EtcdClient, EtcdOptions};
use cacheflow::pure::reconciler::state::{ClusterState, NodeAssignment, State};

fn state(clusters: usize) -> State {
    let mut s = State::default();
    for c in 0..clusters {
        let mut cs = ClusterState::default();
        for n in 0..6 {
            let id = format!("cache-{c}-{n}");
            cs.declared.push(id.clone());
            cs.assignments.insert(
                id,
                NodeAssignment {
                    revision: "0".repeat(40),
                    digest: "d".repeat(64),
                    generation: 1,
                    parameters: [
                        ("maxmemory", "4294967296"),
                        ("hz", "10"),
                        ("timeout", "300"),
                    ]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                    restart_allowed: false,
                    outcome: None,
                    reported_at: None,
                },
            );
        }
        s.clusters.insert(format!("cache-{c:05}"), cs);
    }
    s
}

fn summary(mode: &str, mut times: Vec<Duration>, wall: Duration) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)].as_micros();
    println!(
        "mode={mode} entries={} median_us={} p90_us={} p99_us={} max_us={} per_s={:.0}",
        times.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        times.last().map_or(0, |d| d.as_micros()),
        times.len() as f64 / wall.as_secs_f64()
    );
}

/// Change one cluster (a node's generation), as an assignment does.
fn change(state: &mut State, k: usize) -> BTreeSet<String> {
    let name = format!("cache-{:05}", k % state.clusters.len());
    if let Some(cs) = state.clusters.get_mut(&name) {
        if let Some(a) = cs.assignments.values_mut().next() {
            a.generation += 1;
        }
    }
    BTreeSet::from([name])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let endpoints = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: journal_bench ENDPOINTS [ENTRIES] [CLUSTERS]"))?;
    let entries: usize = args.next().map_or(Ok(500), |a| a.parse())?;
    let clusters: usize = args.next().map_or(Ok(100), |a| a.parse())?;

    // The replicated leader's side: a leadership on a fresh prefix.
    let client = Arc::new(EtcdClient::new(&EtcdOptions {
        endpoints: endpoints.split(',').map(str::to_owned).collect(),
        timeout: Duration::from_secs(5),
        ..EtcdOptions::default()
    })?);
    let prefix = format!("/cacheflow-bench/{}", std::process::id());
    let election = Election {
        client: client.clone(),
        key: leader_key(&prefix, 0),
        ttl: Duration::from_secs(15),
        value: "bench".to_owned(),
    };
    let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let leadership = election
        .campaign(&mut stop)
        .await
        .ok_or_else(|| anyhow::anyhow!("no leadership"))?;
    let fence = Fence::new(
        client.clone(),
        shard_key(&prefix, 0),
        leadership.key.clone(),
        leadership.token,
    );
    let mut fenced = FencedJournal::new(fence, None);

    // Two journals of the same state, written in turns (one entry each, then the
    // next), so that the machine's noise falls on both alike.
    let (single_dir, replica_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    git2::Repository::init_bare(single_dir.path())?;
    git2::Repository::init_bare(replica_dir.path())?;
    let mut s = state(clusters);
    let mut single = Journal::open(single_dir.path())?;
    let mut replica = Journal::open(replica_dir.path())?;
    single.append("start", &s)?;
    let first = cacheflow::edges::audit::Prepared::full("start", &s);
    let seq = fenced
        .write(first.message(), first.top(), first.clusters())
        .await?;
    let mut first = first;
    first.add_trailer(&format!("{ENTRY_TRAILER}{seq}"));
    replica.write(&first)?;
    let (mut single_maker, mut replica_maker) = (EntryMaker::loaded(&s), EntryMaker::loaded(&s));
    let (mut git_times, mut etcd_times, mut both_times) = (Vec::new(), Vec::new(), Vec::new());
    let (mut git_wall, mut both_wall) = (Duration::ZERO, Duration::ZERO);
    for k in 0..entries {
        let changed = change(&mut s, k);
        let message = format!("cache: entry {k}");

        let t = Instant::now();
        let entry = single_maker.prepare(&message, &s, &changed);
        single.write(&entry)?;
        git_times.push(t.elapsed());
        git_wall += t.elapsed();

        let t = Instant::now();
        let mut entry = replica_maker.prepare(&message, &s, &changed);
        let seq = fenced
            .write(entry.message(), entry.top(), entry.clusters())
            .await?;
        etcd_times.push(t.elapsed());
        entry.add_trailer(&format!("{ENTRY_TRAILER}{seq}"));
        replica.write(&entry)?;
        both_times.push(t.elapsed());
        both_wall += t.elapsed();
    }
    summary("git", git_times, git_wall);
    summary("etcd-part", etcd_times, both_wall);
    summary("etcd+git", both_times, both_wall);
    leadership.resign().await;
    Ok(())
}
