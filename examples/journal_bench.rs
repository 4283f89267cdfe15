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

    // Git only: the single process's journal.
    let dir = tempfile::tempdir()?;
    git2::Repository::init_bare(dir.path())?;
    let mut s = state(clusters);
    let mut journal = Journal::open(dir.path())?;
    journal.append("start", &s)?;
    let mut maker = EntryMaker::loaded(&s);
    let mut times = Vec::with_capacity(entries);
    let began = Instant::now();
    for k in 0..entries {
        let changed = change(&mut s, k);
        let t = Instant::now();
        let entry = maker.prepare(&format!("cache: entry {k}"), &s, &changed);
        journal.write(&entry)?;
        times.push(t.elapsed());
    }
    summary("git", times, began.elapsed());

    // etcd under the fence, then Git: the replicated leader's journal.
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
    let dir = tempfile::tempdir()?;
    git2::Repository::init_bare(dir.path())?;
    let mut s = state(clusters);
    let mut journal = Journal::open(dir.path())?;
    journal.append("start", &s)?;
    let mut maker = EntryMaker::loaded(&s);
    let fence = Fence::new(
        client.clone(),
        shard_key(&prefix, 0),
        leadership.key.clone(),
        leadership.token,
    );
    let mut fenced = FencedJournal::new(fence, None);
    let first = cacheflow::edges::audit::Prepared::full("start", &s);
    fenced
        .write(first.message(), first.top(), first.clusters())
        .await?;
    let (mut times, mut etcd_times) = (Vec::with_capacity(entries), Vec::with_capacity(entries));
    let began = Instant::now();
    for k in 0..entries {
        let changed = change(&mut s, k);
        let t = Instant::now();
        let mut entry = maker.prepare(&format!("cache: entry {k}"), &s, &changed);
        let seq = fenced
            .write(entry.message(), entry.top(), entry.clusters())
            .await?;
        etcd_times.push(t.elapsed());
        entry.add_trailer(&format!("{ENTRY_TRAILER}{seq}"));
        journal.write(&entry)?;
        times.push(t.elapsed());
    }
    let wall = began.elapsed();
    summary("etcd-part", etcd_times, wall);
    summary("etcd+git", times, wall);
    leadership.resign().await;
    Ok(())
}
