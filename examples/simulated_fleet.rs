//! Snapshot and plan of a fleet of simulated nodes, for `bench/simulated.sh`
//! (target: 10,000 nodes, snapshot plus plan under 1 s, peak memory under 300 MB).
//!
//!     cargo run --release --example simulated_fleet -- 10000 [--full-config]
//!
//! 1. writes the desired state as YAML files into a `FileSet` (a Settings file and one
//!    file per cluster of 6 nodes: Redis shards of a primary and two replicas; one
//!    cluster in five is Memcached, six primaries) and loads it with `cacheflow::pure::spec::load`, so the model is built
//!    and validated exactly as `cacheflow validate` does (not timed in the figure);
//! 2. makes one `SimulatedNode` per declared node, running what its cluster declares
//!    (the normalised values the engine would report), except: one node in ten has a
//!    drifted memory limit, one in twenty-five a drifted eviction parameter, and one in
//!    two hundred is down (`Fault::Down`). With `--full-config` every node also reports
//!    every parameter of its engine's catalog (192 for Redis, 58 for Memcached, short
//!    placeholder values), as a real `CONFIG GET *` would, instead of only the declared
//!    ones;
//! 3. times `cacheflow::edges::nodes::fleet::snapshot` (default options: concurrency 64, 2 s
//!    timeout, on a 2-worker multi-thread runtime built inside the timed part, as
//!    `pipeline::snapshot` does) and then `cacheflow::pure::plan::plan`;
//! 4. prints one line: `nodes= clusters= full_config= load_ms= snapshot_ms= plan_ms=
//!    snapshot_plan_ms= plan_clusters_ms= changed= in_sync= unreachable=` and checks the
//!    counts against what was injected (exit 1 if they differ). `snapshot_plan_ms` is the
//!    figure; `plan_clusters_ms`, measured after it, is `plan::plan_cluster` over every
//!    cluster alone, i.e. `plan` without its search for undeclared nodes.
//!    `fleet_rss_mib` is the resident memory once the model and the simulated nodes are
//!    built (the nodes' own state would live in the nodes in a real fleet),
//!    `peak_rss_mib` the process's peak after snapshot and plan.
//!
//! The global allocator is mimalloc, as in the `cacheflow` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use cacheflow::edges::nodes::fleet::{self, SnapshotOptions, Target};
use cacheflow::edges::nodes::simulated::{Fault, SimulatedNode};
use cacheflow::edges::source::FileSet;
use cacheflow::pure::catalog::{self, Engine};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_CLUSTER: usize = 6;

/// Resident memory of this process now and at its peak so far, in MiB (`VmRSS`, `VmHWM`
/// of /proc/self/status; 0 where there is none).
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

const SETTINGS: &str = "apiVersion: cacheflow/v1
kind: Settings
metadata:
  name: settings
spec:
  rolloutDefaults:
    stages: [1, \"25%\", \"100%\"]
    maxUnavailablePerShard: 1
    onFailure: rollback
";

/// The YAML of cluster `c` with `n` nodes (node `k` of the fleet is `10.x.y.z:port`).
fn cluster_yaml(c: usize, first: usize, n: usize) -> String {
    let memcached = c % 5 == 4;
    let mut y = String::with_capacity(1024);
    let _ = write!(
        y,
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n  name: sim-{c:05}\n  labels:\n    env: prod\n    team: t{}\nspec:\n",
        c % 17
    );
    if memcached {
        y.push_str("  engine: memcached\n  parameters:\n    maxbytes: 1gb\n    hot_lru_pct: 20\n    evictions: true\n");
    } else {
        y.push_str("  engine: redis\n  parameters:\n    maxmemory: 4gb\n    maxmemory-policy: allkeys-lru\n    hz: 10\n    timeout: 300\n");
    }
    y.push_str("  nodes:\n");
    for j in 0..n {
        let k = first + j;
        // Redis: shards of a primary and two replicas; Memcached does not replicate, so
        // every node is a primary in a shard of its own.
        let (shard, role) = match (memcached, j % 3) {
            (true, _) => (j, "primary"),
            (false, 0) => (j / 3, "primary"),
            (false, _) => (j / 3, "replica"),
        };
        let port = if memcached { 11211 } else { 6379 };
        let _ = writeln!(
            y,
            "    - {{ id: sim-{c:05}-{j}, address: \"10.{}.{}.{}:{port}\", shard: s{}, role: {role} }}",
            k >> 16,
            (k >> 8) & 0xff,
            k & 0xff,
            shard + 1
        );
    }
    y
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut nodes_wanted = 10_000usize;
    let mut full_config = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--full-config" => full_config = true,
            n => nodes_wanted = n.parse()?,
        }
    }

    // 1. The desired state, through the loader.
    let started = Instant::now();
    let mut files = FileSet::default();
    files
        .files
        .insert("cacheflow.yaml".to_owned(), SETTINGS.to_owned());
    let mut first = 0;
    let mut c = 0;
    while first < nodes_wanted {
        let n = PER_CLUSTER.min(nodes_wanted - first);
        files.files.insert(
            format!("clusters/sim-{c:05}.yaml"),
            cluster_yaml(c, first, n),
        );
        first += n;
        c += 1;
    }
    let desired = cacheflow::pure::spec::load(&files).map_err(|diags| {
        for d in diags.iter().take(5) {
            eprintln!("{d}");
        }
        anyhow::anyhow!(
            "the generated desired state is invalid ({} errors)",
            diags.len()
        )
    })?;
    drop(files);
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;

    // 2. The simulated fleet.
    let mut expect_changed = 0usize;
    let mut expect_down = 0usize;
    type FleetNode = (String, String, Arc<SimulatedNode>, Arc<BTreeSet<String>>);
    let mut fleet_nodes: Vec<FleetNode> = Vec::new();
    let mut k = 0usize;
    for cluster in desired.clusters.values() {
        let cat = catalog::catalog(cluster.engine);
        // What every node of the cluster runs; nodes share it until one drifts, as a
        // thousand identical real nodes would each hold their own copy in their own
        // memory, not in cacheflow's.
        let mut base: BTreeMap<String, String> = BTreeMap::new();
        if full_config {
            for name in cat.parameters.keys() {
                base.insert(name.clone(), "0".to_owned());
            }
        }
        for (name, p) in &cluster.parameters {
            base.insert(name.clone(), p.value.clone());
        }
        let base = Arc::new(base);
        let declared: Arc<BTreeSet<String>> =
            Arc::new(cluster.parameters.keys().cloned().collect());
        for node in &cluster.nodes {
            let mut params = base.clone();
            let mem = cluster.engine.memory_limit_parameter();
            let mut drifted = false;
            if k % 10 == 3 {
                Arc::make_mut(&mut params).insert(mem.to_owned(), "2147483648".to_owned());
                drifted = true;
            }
            if k % 25 == 7 {
                let p = Arc::make_mut(&mut params);
                match cluster.engine {
                    Engine::Redis => p.insert("maxmemory-policy".into(), "noeviction".into()),
                    Engine::Memcached => p.insert("evictions".into(), "off".into()),
                };
                drifted = true;
            }
            let sim = Arc::new(SimulatedNode::new(
                node.address.clone(),
                cluster.engine,
                node.role
                    .unwrap_or(cacheflow::pure::spec::model::Role::Primary),
                params,
                3 << 30,
                1000.0 + (k % 100) as f64,
            ));
            sim.advance(60.0);
            if k % 200 == 11 {
                sim.inject(Fault::Down);
                expect_down += 1;
            } else if drifted {
                expect_changed += 1;
            }
            fleet_nodes.push((node.id.clone(), cluster.name.clone(), sim, declared.clone()));
            k += 1;
        }
    }
    let total = k;
    // What the simulated nodes themselves hold (with the model): in a real fleet that
    // memory is in the nodes, not in cacheflow.
    let (fleet_rss_mib, _) = rss_mib();

    // 3. Snapshot, then plan: the timed part.
    let started = Instant::now();
    let targets: Vec<Target> = fleet_nodes
        .iter()
        .map(|(id, cluster, sim, declared)| Target {
            // As `plan --direct` does: keep what the plan looks at.
            keep: Some(declared.clone()),
            ..Target::new(id.clone(), cluster.clone(), sim.clone())
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let live = runtime.block_on(fleet::snapshot(targets, SnapshotOptions::default()));
    drop(runtime);
    let snapshot_ms = started.elapsed().as_secs_f64() * 1000.0;
    let plan_started = Instant::now();
    let plan = cacheflow::pure::plan::plan(&desired, &live);
    let plan_ms = plan_started.elapsed().as_secs_f64() * 1000.0;
    let snapshot_plan_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Not part of the figure: the per-cluster part of `plan` alone (what `plan` costs
    // without its search for undeclared nodes), to show where plan's time goes.
    let per_cluster_started = Instant::now();
    let per_cluster: Vec<_> = desired
        .clusters
        .values()
        .map(|c| cacheflow::pure::plan::plan_cluster(c, &live))
        .collect();
    let plan_clusters_ms = per_cluster_started.elapsed().as_secs_f64() * 1000.0;
    std::mem::forget(per_cluster);
    let (_, peak_rss_mib) = rss_mib();

    // 4. Report and check.
    let changed: usize = plan.clusters.iter().map(|c| c.nodes.len()).sum();
    let in_sync: usize = plan.clusters.iter().map(|c| c.in_sync.len()).sum();
    let unreachable: usize = plan.clusters.iter().map(|c| c.unreachable.len()).sum();
    println!(
        "nodes={total} clusters={} full_config={full_config} load_ms={load_ms:.1} snapshot_ms={snapshot_ms:.1} plan_ms={plan_ms:.1} snapshot_plan_ms={snapshot_plan_ms:.1} plan_clusters_ms={plan_clusters_ms:.1} fleet_rss_mib={fleet_rss_mib:.0} peak_rss_mib={peak_rss_mib:.0} changed={changed} in_sync={in_sync} unreachable={unreachable}",
        desired.clusters.len(),
    );
    let ok = live.nodes.len() == total
        && changed == expect_changed
        && unreachable == expect_down
        && changed + in_sync + unreachable == total
        && plan.undeclared.is_empty();
    if !ok {
        anyhow::bail!(
            "unexpected counts: snapshot {} nodes; expected changed={expect_changed} unreachable={expect_down}",
            live.nodes.len()
        );
    }
    // Exit without freeing the fleet, the model and the plan, as the CLI does.
    std::mem::forget((fleet_nodes, live, plan, desired));
    Ok(())
}
