//! The drift report over a fleet of simulated nodes (target: 10,000 nodes, computing the
//! report and rendering all three formats under 1 s, the HTML page under 1 MB).
//!
//!     cargo run --release --example drift_bench -- [NODES] [--drift-percent P] [--runs N]
//!
//! 1. writes the desired state as YAML into a `FileSet` and loads it with
//!    `cacheflow::pure::spec::load`, as `cacheflow validate` does: clusters of 100 nodes (the
//!    last one smaller when NODES is not a multiple), four in five Redis (shards of a
//!    primary and two replicas, 16 parameters each), one in five Memcached (10
//!    parameters); a Settings file (not timed);
//! 2. makes one `SimulatedNode` per declared node running what its cluster declares,
//!    then, chosen by a fixed pseudo-random sequence (the same fleet every run):
//!    P% of the nodes (5 by default) changed by hand on 1 to 3 of their parameters
//!    (`set_by_hand`), 1% down (`Fault::Down`: silent), and 10 more nodes of a
//!    decommissioned cluster still reporting (undeclared). It reads them with
//!    `cacheflow::edges::nodes::fleet::snapshot`, keeping the declared parameters as
//!    `drift --direct` does (not timed). Every Redis node is given the config file's
//!    view a real Redis reports (its declared values); on 1% of the Redis nodes the file
//!    holds a different value, or lacks one (not persisted);
//! 3. times, RUNS times (15 by default), `drift::compute`, then each renderer on its
//!    result: `drift::text`, `drift::markdown`, the JSON the CLI writes
//!    (`render::json`, serde_json) and `drift::html` with a history of 48 earlier runs;
//! 4. prints the median, min and max of each step in ms and of their sum per run
//!    (`total`), the size of each output, and the counts found, which it checks against
//!    what was injected (exit 1 if they differ).
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
use cacheflow::pure::drift::{self, DriftKind};
use cacheflow::pure::spec::model::Role;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_CLUSTER: usize = 100;
const UNDECLARED: usize = 10;
const HISTORY: usize = 48;

/// (name, value as written in the repository, a value someone might set by hand).
const REDIS: [(&str, &str, &str); 16] = [
    ("maxmemory", "4gb", "2gb"),
    ("maxmemory-policy", "allkeys-lru", "noeviction"),
    ("maxmemory-samples", "5", "10"),
    ("hz", "10", "50"),
    ("timeout", "300", "0"),
    ("tcp-keepalive", "300", "60"),
    ("maxclients", "10000", "20000"),
    ("slowlog-log-slower-than", "10000", "1000"),
    ("slowlog-max-len", "128", "1024"),
    ("latency-monitor-threshold", "100", "0"),
    ("lazyfree-lazy-eviction", "true", "false"),
    ("activerehashing", "true", "false"),
    ("repl-backlog-size", "64mb", "1mb"),
    ("notify-keyspace-events", "Ex", "KEA"),
    ("active-expire-effort", "1", "5"),
    ("lfu-log-factor", "10", "20"),
];

const MEMCACHED: [(&str, &str, &str); 10] = [
    ("maxbytes", "1gb", "2gb"),
    ("hot_lru_pct", "20", "30"),
    ("warm_lru_pct", "40", "30"),
    ("lru_crawler", "true", "false"),
    ("lru_segmented", "true", "false"),
    ("slab_automove", "1", "2"),
    ("temporary_ttl", "61", "0"),
    ("verbosity", "0", "1"),
    ("track_sizes", "false", "true"),
    ("lru_crawler_sleep", "100", "1000"),
];

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

/// A fixed pseudo-random sequence (splitmix64), so every run builds the same fleet.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn memcached(c: usize) -> bool {
    c % 5 == 4
}

fn params(c: usize) -> &'static [(&'static str, &'static str, &'static str)] {
    if memcached(c) {
        &MEMCACHED
    } else {
        &REDIS
    }
}

fn cluster_name(c: usize) -> String {
    let team = ["checkout", "catalog", "sessions", "search", "ads"][c % 5];
    format!("{team}-prod-{c:03}")
}

/// The YAML of cluster `c` with `n` nodes (node `k` of the fleet is `10.x.y.z:port`).
fn cluster_yaml(c: usize, first: usize, n: usize) -> String {
    let mut y = String::with_capacity(8 * 1024);
    let _ = write!(
        y,
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n  name: {}\n  labels:\n    env: prod\n    team: t{}\nspec:\n  engine: {}\n  parameters:\n",
        cluster_name(c),
        c % 17,
        if memcached(c) { "memcached" } else { "redis" }
    );
    for (name, value, _) in params(c) {
        let _ = writeln!(y, "    {name}: \"{value}\"");
    }
    y.push_str("  nodes:\n");
    for j in 0..n {
        let k = first + j;
        let (shard, role) = match (memcached(c), j % 3) {
            (true, _) => (j, "primary"),
            (false, 0) => (j / 3, "primary"),
            (false, _) => (j / 3, "replica"),
        };
        let port = if memcached(c) { 11211 } else { 6379 };
        let _ = writeln!(
            y,
            "    - {{ id: {}-{j:03}, address: \"10.{}.{}.{}:{port}\", shard: s{}, role: {role} }}",
            cluster_name(c),
            k >> 16,
            (k >> 8) & 0xff,
            k & 0xff,
            shard + 1
        );
    }
    y
}

/// What was injected, to check the report against.
#[derive(Debug, Default, PartialEq)]
struct Counts {
    drifted_nodes: usize,
    differs: usize,
    not_persisted: usize,
    silent: usize,
    undeclared: usize,
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

fn stats(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (median, samples[0], samples[n - 1])
}

fn run() -> anyhow::Result<()> {
    let mut nodes_wanted = 10_000usize;
    let mut drift_percent = 5usize;
    let mut runs = 15usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--drift-percent" => {
                drift_percent = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--drift-percent needs a value"))?
                    .parse()?
            }
            "--runs" => {
                runs = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--runs needs a value"))?
                    .parse::<usize>()?
                    .max(1)
            }
            n => nodes_wanted = n.parse()?,
        }
    }
    anyhow::ensure!(drift_percent <= 98, "--drift-percent is at most 98");

    // 1. The desired state, through the loader.
    let mut files = FileSet::default();
    files
        .files
        .insert("cacheflow.yaml".to_owned(), SETTINGS.to_owned());
    let (mut first, mut c) = (0, 0);
    while first < nodes_wanted {
        let n = PER_CLUSTER.min(nodes_wanted - first);
        files.files.insert(
            format!("clusters/{}.yaml", cluster_name(c)),
            cluster_yaml(c, first, n),
        );
        first += n;
        c += 1;
    }
    let mut desired = cacheflow::pure::spec::load(&files).map_err(|diags| {
        for d in diags.iter().take(5) {
            eprintln!("{d}");
        }
        anyhow::anyhow!(
            "the generated desired state is invalid ({} errors)",
            diags.len()
        )
    })?;
    desired.commit = Some("5f3c1d9a8e7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d".to_owned());
    drop(files);

    // 2. The simulated fleet and its reading.
    let mut rng = Rng(1);
    let mut expect = Counts::default();
    let mut targets = Vec::new();
    // Nodes whose config file disagrees: id -> (parameter, what the file holds).
    let mut file_drift: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut redis_nodes = BTreeSet::new();
    for cluster in desired.clusters.values() {
        let cat = catalog::catalog(cluster.engine);
        let c: usize = cluster.name.rsplit('-').next().unwrap_or("0").parse()?;
        let table = params(c);
        let base: Arc<BTreeMap<String, String>> = Arc::new(
            cluster
                .parameters
                .iter()
                .map(|(n, p)| (n.clone(), p.value.clone()))
                .collect(),
        );
        let keep: Arc<BTreeSet<String>> = Arc::new(cluster.parameters.keys().cloned().collect());
        for node in &cluster.nodes {
            let sim = Arc::new(SimulatedNode::new(
                node.address.clone(),
                cluster.engine,
                node.role
                    .unwrap_or(cacheflow::pure::spec::model::Role::Primary),
                base.clone(),
                3 << 30,
                1000.0,
            ));
            let roll = rng.below(100);
            if roll < drift_percent {
                // 1 to 3 distinct parameters changed by hand.
                let changed = 1 + rng.below(3);
                let start = rng.below(table.len());
                for i in 0..changed {
                    let (name, _, by_hand) = table[(start + i * 3) % table.len()];
                    let value = cat
                        .normalize(name, &serde_json::Value::String(by_hand.to_owned()))
                        .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
                    sim.set_by_hand(name, &value);
                }
                expect.drifted_nodes += 1;
                expect.differs += changed;
            } else if roll == 99 {
                sim.inject(Fault::Down);
                expect.silent += 1;
            } else if roll == 98 && cluster.engine == Engine::Redis {
                // Put back live, but the config file kept the hand-made value (or, one
                // time in three, the file does not set it at all).
                let (name, _, by_hand) = table[rng.below(table.len())];
                let in_file = (rng.below(3) != 0).then(|| by_hand.to_owned());
                file_drift.insert(node.id.clone(), (name.to_owned(), in_file));
                expect.drifted_nodes += 1;
                expect.not_persisted += 1;
            }
            if cluster.engine == Engine::Redis {
                redis_nodes.insert(node.id.clone());
            }
            targets.push(Target {
                keep: Some(keep.clone()),
                ..Target::new(node.id.clone(), cluster.name.clone(), sim)
            });
        }
    }
    // A decommissioned cluster whose nodes still run and report.
    for i in 0..UNDECLARED {
        let sim = Arc::new(SimulatedNode::new(
            format!("10.250.0.{i}:6379"),
            Engine::Redis,
            Role::Primary,
            BTreeMap::from([("maxmemory".to_owned(), "1073741824".to_owned())]),
            1 << 30,
            10.0,
        ));
        targets.push(Target::new(
            format!("legacy-sessions-{i:02}"),
            "legacy-sessions",
            sim,
        ));
        expect.undeclared += 1;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut live = runtime.block_on(fleet::snapshot(targets, SnapshotOptions::default()));
    drop(runtime);
    live.taken_at = Some("2026-11-21T03:00:00Z".to_owned());
    // The config file's view, as the Redis driver reads it next to a node.
    for (id, reading) in live.nodes.iter_mut() {
        if !reading.reachable || !redis_nodes.contains(id) {
            continue;
        }
        let mut file = reading.parameters.clone();
        if let Some((name, in_file)) = file_drift.get(id) {
            let cat = catalog::catalog(Engine::Redis);
            match in_file {
                Some(v) => {
                    let v = cat
                        .normalize(name, &serde_json::Value::String(v.clone()))
                        .map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
                    file.insert(name.clone(), v);
                }
                None => {
                    file.remove(name);
                }
            }
        }
        reading.persisted = Some(file);
    }
    let history: Vec<(String, usize)> = (0..HISTORY)
        .map(|i| {
            // Every 30 minutes over the last day: mostly a handful, one bad hour.
            let n = if (20..22).contains(&i) {
                1500 + i * 10
            } else {
                (i * 37) % 120
            };
            (
                format!("2026-11-20T{:02}:{:02}:00Z", 3 + i / 2, (i % 2) * 30),
                n,
            )
        })
        .collect();

    // 3. The timed part.
    let names = ["compute", "text", "markdown", "json", "html", "total"];
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); names.len()];
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let mut sizes = [0usize; 4];
    let mut last = None;
    for _ in 0..runs {
        let all = Instant::now();
        let t = Instant::now();
        let report = drift::compute(&desired, &live, "2026-11-21T03:00:00Z");
        samples[0].push(ms(t));
        let t = Instant::now();
        let text = drift::text(&report);
        samples[1].push(ms(t));
        let t = Instant::now();
        let md = drift::markdown(&report);
        samples[2].push(ms(t));
        let t = Instant::now();
        let json = cacheflow::pure::render::json(&report);
        samples[3].push(ms(t));
        let t = Instant::now();
        let html = drift::html(&report, &history);
        samples[4].push(ms(t));
        samples[5].push(ms(all));
        sizes = [text.len(), md.len(), json.len(), html.len()];
        last = Some(report);
    }
    let report = last.expect("at least one run");

    // 4. Print and check.
    let found = Counts {
        drifted_nodes: report.clusters.iter().map(|c| c.drifted.len()).sum(),
        differs: report
            .clusters
            .iter()
            .flat_map(|c| &c.drifted)
            .flat_map(|n| &n.parameters)
            .filter(|p| p.kind == DriftKind::Differs)
            .count(),
        not_persisted: report
            .clusters
            .iter()
            .flat_map(|c| &c.drifted)
            .flat_map(|n| &n.parameters)
            .filter(|p| p.kind == DriftKind::NotPersisted)
            .count(),
        silent: report.clusters.iter().map(|c| c.silent.len()).sum(),
        undeclared: report.undeclared.len(),
    };
    println!(
        "nodes={} clusters={} runs={runs} drift_percent={drift_percent} drifted_nodes={} differs={} not_persisted={} silent={} undeclared={}",
        desired.clusters.values().map(|c| c.nodes.len()).sum::<usize>(),
        desired.clusters.len(),
        found.drifted_nodes,
        found.differs,
        found.not_persisted,
        found.silent,
        found.undeclared,
    );
    for (name, s) in names.iter().zip(samples.iter_mut()) {
        let (median, min, max) = stats(s);
        println!("{name:<9} median_ms={median:8.2} min_ms={min:8.2} max_ms={max:8.2}");
    }
    println!(
        "bytes text={} markdown={} json={} html={}",
        sizes[0], sizes[1], sizes[2], sizes[3]
    );
    if found != expect {
        anyhow::bail!(
            "the report does not show what was injected: expected {expect:?}, found {found:?}"
        );
    }
    Ok(())
}
