//! `cacheflow demo`: the whole loop on an embedded simulated fleet, with no setup, in
//! about 20 seconds. Nothing in it is staged: the reconciler is the one `serve` and
//! `sync` run (rollout state machine, gates, journal and notes in the repository's git),
//! the nodes are [`SimulatedNode`]s driven by in-process agents, and every value shown
//! is read back from the nodes or from git.
//!
//! ```text
//! example-repo/ (embedded) ─► a new git repository: "the fleet as it runs today", then
//!   the demo's own commit (bakes of seconds, no rollout windows)
//! ─► one simulated node per declared node, running HEAD, serving traffic
//! ─► the reconciler, its journal in the repository, an in-process agent per node
//! 1. the repository   2. a change: canary, batches, gates, live
//! 3. a change whose canary fails its gates: rolled back (values read back), reverted
//! 4. a hand-made CONFIG SET: the drift report   5. `cacheflow history`   what next
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::edges::audit::Journal;
use crate::edges::nodes::fleet::{self, SnapshotOptions, Target};
use crate::edges::nodes::simulated::{Replication, SimulatedNode};
use crate::edges::nodes::NodeDriver;
use crate::edges::source::ConfigRepo;
use crate::flow::agent::ApplyOptions;
use crate::flow::pipeline::intake::{self, Outcome, Refusal};
use crate::flow::pipeline::{self, Revision};
use crate::flow::runtime::{DirectOptions, Handle, Host, HostOptions};
use crate::pure::catalog::Engine;
use crate::pure::live::LiveState;
use crate::pure::render::short_id;
use crate::pure::rollout::Phase;
use crate::pure::spec::model::{Desired, Role};

/// The example repository, built into the binary so the demo runs from anywhere.
const EXAMPLE_REPO: &[(&str, &str)] = &[
    (
        "cacheflow.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/cacheflow.yaml"
        )),
    ),
    (
        "clusters/catalog-staging.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/clusters/catalog-staging.yaml"
        )),
    ),
    (
        "clusters/page-cache.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/clusters/page-cache.yaml"
        )),
    ),
    (
        "clusters/sessions-eu.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/clusters/sessions-eu.yaml"
        )),
    ),
    (
        "clusters/sessions-us.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/clusters/sessions-us.yaml"
        )),
    ),
    (
        "policies/no-noeviction-in-prod.schema.json",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/policies/no-noeviction-in-prod.schema.json"
        )),
    ),
    (
        "policies/prod-sets-a-memory-limit.schema.json",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/policies/prod-sets-a-memory-limit.schema.json"
        )),
    ),
    (
        "profiles/memcached-default.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/profiles/memcached-default.yaml"
        )),
    ),
    (
        "profiles/redis-cache.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/profiles/redis-cache.yaml"
        )),
    ),
    (
        "profiles/redis-sessions.yaml",
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/example-repo/profiles/redis-sessions.yaml"
        )),
    ),
];

/// The demo's rollout timings, written into the repository by its own commit.
const BAKE: &str = "3s";
const WARMUP: &str = "1s";
const APPLY_TIMEOUT: &str = "10s";

/// The cluster the changes are made to, and what they change.
const CLUSTER: &str = "sessions-eu";
const CLUSTER_FILE: &str = "clusters/sessions-eu.yaml";
const MEMORY_LINE: &str = "    maxmemory: 6gb\n";
const GOOD_MEMORY: &str = "8gb";
const BAD_MEMORY: &str = "3gb";
/// The node changed by hand, and how.
const DRIFT_NODE: &str = "sessions-eu-2a";
const DRIFT_PARAM: &str = "maxmemory-policy";
const DRIFT_VALUE: &str = "allkeys-lru";

/// Step 5: a small cluster whose two nodes run as services (a config file, a restart
/// command), and a start-only change that restarts its primary.
const CARTS: &str = "carts";
const CARTS_FILE: &str = "clusters/carts.yaml";
const CARTS_NODES: [(&str, &str, Role); 2] = [
    ("carts-1a", "10.70.1.11:6379", Role::Primary),
    ("carts-1b", "10.70.1.12:6379", Role::Replica),
];

/// The carts cluster with `databases` set to `databases`.
fn carts_file(databases: u32) -> String {
    format!(
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n  name: {CARTS}\nspec:\n  \
         engine: redis\n  parameters:\n    databases: {databases}\n  nodes:\n    \
         - {{ id: carts-1a, address: \"10.70.1.11:6379\", shard: c1, role: primary, managed: agent }}\n    \
         - {{ id: carts-1b, address: \"10.70.1.12:6379\", shard: c1, role: replica, managed: agent }}\n  \
         rollout:\n    stages: [1, \"100%\"]\n    bake: 2s\n    warmup: 0s\n    \
         applyTimeout: {APPLY_TIMEOUT}\n    gates: {{ minOpsPerSec: 0, maxHitRatioDrop: 1 }}\n"
    )
}

/// What stopped the demo (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{} is not empty: --keep takes a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot make a temporary directory in {}", .0.display())]
    NoTemporaryDirectory(PathBuf),
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git init {}: {}", path.display(), source.message())]
    GitInit {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("git commit: {}", .0.message())]
    GitCommit(#[source] git2::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Repository(#[from] crate::edges::source::SourceError),
    #[error(transparent)]
    Diff(#[from] crate::flow::pipeline::PipelineError),
    #[error(transparent)]
    Journal(#[from] crate::edges::audit::AuditError),
    #[error(transparent)]
    Host(#[from] crate::flow::runtime::HostError),
    #[error("the reconciler stopped; see its journal")]
    Stopped(#[from] crate::flow::runtime::Stopped),
    #[error("the demo's repository does not validate:\n{0}")]
    Invalid(String),
    #[error("the demo's head is refused: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Intake(#[from] intake::IntakeError),
    #[error("{0}: nothing to take")]
    Unchanged(String),
    /// The example repository is not what the demo's story changes.
    #[error("{0}")]
    Example(String),
    /// The story did not go as the demo tells it.
    #[error("{0}")]
    Story(String),
    #[error("the rollout of {revision} did not end within {seconds} s")]
    TooLong { revision: String, seconds: u64 },
    #[error("interrupted")]
    Interrupted,
    /// The console of `--serve` could not start.
    #[error("the console: {0}")]
    Serve(String),
}

/// How long any one rollout of the demo may take before the demo gives up.
const ROLLOUT_LIMIT: Duration = Duration::from_secs(60);

pub struct DemoOptions {
    /// Keep the repository in this directory (new or empty) instead of a temporary one
    /// removed at the end.
    pub keep: Option<PathBuf>,
    /// Serve the web console here while the demo runs (and after, until Ctrl-C).
    pub serve: Option<std::net::SocketAddr>,
}

/// With `--serve`: how long the demo waits for a browser before its story starts.
const SERVE_HEAD_START: Duration = Duration::from_secs(5);

/// Run the demo, printing as it goes. `Err` says what went wrong (exit code 1).
pub fn run(options: DemoOptions) -> Result<(), DemoError> {
    let started = Instant::now();
    let work = WorkDir::new(options.keep.as_deref())?;
    let git = Git::init(&work.path)?;
    let mut out = Out::new();
    out.line(
        "cacheflow demo: the whole loop (a config change in git, a staged rollout behind health\n\
         gates, a rollback, drift, history) on a simulated fleet. It ends by itself in well\n\
         under a minute.",
    );
    let (desired, speeds) = repository(&mut out, &git, &work)?;
    let fleet = Fleet::build(&desired);
    // A minute of traffic before the demo starts: every node has a hit ratio to compare.
    for n in fleet.nodes.values() {
        n.node.advance(60.0);
    }
    out.line(&format!(
        "{} simulated nodes run this configuration and serve traffic; the reconciler (the one\n\
         `cacheflow serve` runs) starts with its journal in the repository:",
        fleet.nodes.len()
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DemoError::Runtime)?;
    runtime.block_on(live(
        &mut out,
        &git,
        &fleet,
        desired,
        &speeds,
        options.serve,
    ))?;
    history(&mut out, &work, &git)?;
    what_next(&mut out, started, &options, &work);
    Ok(())
}

/// Step 1, the repository: the example as the fleet runs it today, then the demo's
/// speeds. Returns the validated head and the demo's commit.
fn repository(out: &mut Out, git: &Git, work: &WorkDir) -> Result<(Desired, String), DemoError> {
    out.section("1. The repository");
    let files: Vec<(&str, &str)> = EXAMPLE_REPO.to_vec();
    let today = git.commit(ALICE, "The fleet as it runs today", &files)?;
    let sped: Vec<(&str, String)> = files
        .iter()
        .filter_map(|(p, t)| {
            let fast = speed_up(t);
            (fast != *t).then_some((*p, fast))
        })
        .collect();
    let speeds_message = format!(
        "Demo speeds: bake {BAKE}, warm-up {WARMUP}, apply timeout {APPLY_TIMEOUT}, no rollout windows"
    );
    let speeds = git.commit(
        DEMO,
        &speeds_message,
        &sped
            .iter()
            .map(|(p, t)| (*p, t.as_str()))
            .collect::<Vec<_>>(),
    )?;
    let desired = desired(&open(&work.path)?, None)?;
    out.line(&format!(
        "A copy of example-repo/ in a new git repository ({}):",
        work.path.display()
    ));
    for c in desired.clusters.values() {
        out.line(&format!(
            "  {:<16} {:<10} {} node(s), stages {}",
            c.name,
            c.engine.to_string(),
            c.nodes.len(),
            c.rollout
                .stages
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" → ")
        ));
    }
    out.commit(&today, ALICE.0, "The fleet as it runs today");
    out.commit(&speeds, DEMO.0, &speeds_message);
    out.line(
        "    (the example bakes each stage for minutes: the demo's own commit makes it seconds)",
    );
    Ok((desired, speeds))
}

/// Steps 2 to 4 with the reconciler and an in-process agent per node running ([`Host`]),
/// the journal in the demo's repository.
async fn live(
    out: &mut Out,
    git: &Git,
    fleet: &Fleet,
    desired: Desired,
    speeds: &str,
    serve: Option<std::net::SocketAddr>,
) -> Result<(), DemoError> {
    let traffic = fleet.drive_traffic();
    let journal = Journal::open(git.repo.path())?;
    let host = Host::start(journal, HostOptions::default())?;
    let handle = host.handle().clone();
    let mut events = handle.events.subscribe();
    let live = fleet.snapshot().await;
    handle.revision(desired, Some(live)).await?;
    let console = match serve {
        Some(addr) => Some(console(out, git, &handle, addr).await?),
        None => None,
    };
    for (id, n) in &fleet.nodes {
        let options = DirectOptions {
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            first_reading: None,
            declared: None,
            apply: None,
        };
        host.drive(id, n.node.clone() as Arc<dyn NodeDriver>, options);
    }
    out.drain(&mut events, None);
    let drift_dir = console.as_ref().map(|c| c.drift_dir.clone());
    let result = story(
        out,
        git,
        fleet,
        (&host, &handle),
        &mut events,
        speeds,
        drift_dir,
    )
    .await;
    if let Some(c) = console {
        c.until_interrupted(out).await;
    }
    drop(handle);
    let stopped = host.stop().await;
    traffic.abort();
    result?;
    Ok(stopped?)
}

/// The console a `--serve` demo runs beside its story.
struct DemoConsole {
    addr: std::net::SocketAddr,
    drift_dir: PathBuf,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Start the console on `addr` (read-only: no admin buttons), say where, and give the
/// reader a head start to open it.
async fn console(
    out: &mut Out,
    git: &Git,
    handle: &Handle,
    addr: std::net::SocketAddr,
) -> Result<DemoConsole, DemoError> {
    use crate::entry::server::console::{self, Console, ConsoleOptions};
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DemoError::Serve(format!("cannot listen on {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| DemoError::Serve(e.to_string()))?;
    let drift_dir = git.repo.path().join("cacheflow-drift");
    let options = ConsoleOptions {
        repo: git.dir.display().to_string(),
        rev: "HEAD".into(),
        drift_dir: Some(drift_dir.clone()),
        ..ConsoleOptions::default()
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let console = Arc::new(Console::new(handle.clone(), options, stopped));
    let task = tokio::spawn(console::serve(listener, console));
    out.line(&format!(
        "The web console: http://{addr}/ (live: a cell per node, coloured as the rollout moves).\n\
         The story starts in {} s.",
        SERVE_HEAD_START.as_secs()
    ));
    tokio::time::sleep(SERVE_HEAD_START).await;
    Ok(DemoConsole {
        addr,
        drift_dir,
        stop,
        task,
    })
}

impl DemoConsole {
    /// Keep serving after the story until Ctrl-C (or the end of stdin's process).
    async fn until_interrupted(self, out: &mut Out) {
        out.line(&format!(
            "\nThe console stays up at http://{}/ (the fleet, each cluster's rollouts, gates and\n\
             commits, the drift report): Ctrl-C to go on.",
            self.addr
        ));
        let _ = tokio::signal::ctrl_c().await;
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// 6. History: `cacheflow history` and the journal's length.
fn history(out: &mut Out, work: &WorkDir, git: &Git) -> Result<(), DemoError> {
    out.section("6. History: `cacheflow history`");
    out.line("Each config commit beside what the reconciler noted on it (refs/notes/cacheflow):");
    let repo = open(&work.path)?;
    let entries = crate::flow::history::history(
        &repo,
        &crate::flow::history::HistoryOptions {
            rev: "HEAD".into(),
            cluster: None,
            param: None,
            limit: 50,
        },
    )?;
    out.block(&crate::flow::history::text(&entries));
    let journal = Journal::open(git.repo.path())?;
    let entries = journal.entries()?;
    out.line(&format!(
        "The journal holds {} entries on refs/cacheflow/journal: every event above, with the\n\
         reconciler's state as its tree (what a restarted server resumes from).",
        entries.len()
    ));
    Ok(())
}

/// The time taken, and the same commands against real nodes.
fn what_next(out: &mut Out, started: Instant, options: &DemoOptions, work: &WorkDir) {
    out.line(&format!(
        "\nDone in {:.1} s.",
        started.elapsed().as_secs_f64()
    ));
    out.section("What next: the same commands against real Redis and Memcached");
    out.block(WHAT_NEXT);
    if options.keep.is_some() {
        let dir = work.path.display();
        out.line(&format!(
            "The demo's repository is kept in {dir}:\n  \
             cacheflow history --repo {dir}\n  \
             git -C {dir} log --notes=cacheflow --oneline\n  \
             git -C {dir} log --oneline refs/cacheflow/journal"
        ));
    }
}

const WHAT_NEXT: &str = "\
Copy example-repo/ into a repository of your own and point the nodes' addresses at your
servers (docs/config.md describes every field), then:
  cacheflow validate --repo .                          every error at once, as file:line:col
  cacheflow diff --repo . --base origin/main           what a pull request changes, with risks
  cacheflow plan --repo . --direct                     the staged rollout, against the live nodes
  cacheflow sync --repo . --yes                        one rollout in the foreground, as above
  cacheflow drift --repo . --direct --output-dir out/  the drift report (Markdown, JSON, HTML)
  cacheflow history --repo .                           each change beside what became of it
  cacheflow serve --repo URL --state-dir DIR           the reconciler as a server (docs/server.md)
How this demo works: docs/demo.md.
";

/// Steps 2 to 4, with the reconciler running.
async fn story(
    out: &mut Out,
    git: &Git,
    fleet: &Fleet,
    (host, handle): (&Host, &Handle),
    events: &mut broadcast::Receiver<String>,
    base: &str,
    drift_dir: Option<PathBuf>,
) -> Result<(), DemoError> {
    let file = EXAMPLE_REPO
        .iter()
        .find(|(p, _)| *p == CLUSTER_FILE)
        .map(|(_, t)| speed_up(t))
        .ok_or_else(|| {
            DemoError::Example("the example repository has no sessions-eu cluster".into())
        })?;
    let with_memory = |value: &str| file.replace(MEMORY_LINE, &format!("    maxmemory: {value}\n"));
    let good_file = with_memory(GOOD_MEMORY);
    let bad_file = with_memory(BAD_MEMORY);
    if good_file == file {
        return Err(DemoError::Example(format!(
            "{CLUSTER_FILE} no longer sets `maxmemory: 6gb`"
        )));
    }
    let mut live = Live {
        out,
        git,
        fleet,
        host,
        handle,
        events,
        drift_dir,
    };
    let good = live.good_change(base, &good_file).await?;
    live.bad_change(&good, &good_file, &bad_file).await?;
    live.drift().await?;
    live.failover().await
}

/// What steps 2 to 4 work with.
struct Live<'a> {
    out: &'a mut Out,
    git: &'a Git,
    fleet: &'a Fleet,
    host: &'a Host,
    handle: &'a Handle,
    events: &'a mut broadcast::Receiver<String>,
    /// Where the drift report is written for the console (`--serve`).
    drift_dir: Option<PathBuf>,
}

impl Live<'_> {
    /// Hand the repository's head to the reconciler and follow its rollout.
    async fn take(&mut self, revision: &str) -> Result<Phase, DemoError> {
        take(
            self.out,
            self.git,
            self.handle,
            self.events,
            (CLUSTER, None),
            revision,
        )
        .await
    }

    /// 2. A change rolls out; its commit.
    async fn good_change(&mut self, base: &str, good_file: &str) -> Result<String, DemoError> {
        let (git, fleet) = (self.git, self.fleet);
        let members = fleet.members(CLUSTER);
        let out = &mut *self.out;
        out.section("2. A change rolls out: a canary, then larger batches, each behind its gates");
        let message = format!("More memory for EU sessions: maxmemory 6gb → {GOOD_MEMORY}");
        let good = git.commit(BOB, &message, &[(CLUSTER_FILE, good_file)])?;
        out.commit(&good, BOB.0, &message);
        show_diff(out, git, base, &good)?;
        out.line(&format!(
            "The reconciler takes the new head and rolls it out by the stages of {CLUSTER_FILE},\n\
             never more than one node of a shard at a time (so a stage may take two batches). Each\n\
             batch bakes {BAKE}, then its gates judge its nodes against their own baseline and the\n\
             untouched nodes. Live, from the reconciler's journal:"
        ));
        let phase = self.take(&good).await?;
        let out = &mut *self.out;
        if !matches!(phase, Phase::Completed) {
            return Err(DemoError::Story(format!(
                "the first change did not complete: {phase:?}"
            )));
        }
        let values = fleet.values(&members, "maxmemory").await;
        out.line(&format!(
            "Read back from the nodes: maxmemory is {} on {}.",
            summarize(&values),
            if values.len() == members.len() {
                format!("all {} nodes of {CLUSTER}", members.len())
            } else {
                format!("{} of {} nodes", values.len(), members.len())
            }
        ));
        Ok(good)
    }

    /// 3. A bad change: rolled back, then reverted.
    async fn bad_change(
        &mut self,
        good: &str,
        good_file: &str,
        bad_file: &str,
    ) -> Result<(), DemoError> {
        let (git, fleet, handle) = (self.git, self.fleet, self.handle);
        let members = fleet.members(CLUSTER);
        self.out
            .section("3. A bad change: the canary fails its gates and is rolled back");
        let message = format!("Save memory: EU sessions down to {BAD_MEMORY}");
        let bad = git.commit(CAROL, &message, &[(CLUSTER_FILE, bad_file)])?;
        self.out.commit(&bad, CAROL.0, &message);
        show_diff(self.out, git, good, &bad)?;
        self.out.line(&format!(
            "Each session node holds about 4gb of live keys: on {BAD_MEMORY} the canary is full and\n\
             evicts, which its gates should catch (maxMemoryRatio 95%, maxHitRatioDrop 2%):"
        ));
        let phase = self.take(&bad).await?;
        let Phase::RolledBack { reason } = &phase else {
            return Err(DemoError::Story(format!(
                "the bad change was not rolled back: {phase:?}"
            )));
        };
        let status = handle.status()?;
        let touched: Vec<String> = status
            .clusters
            .get(CLUSTER)
            .and_then(|c| c.rollout.as_ref())
            .map(|r| r.touched.iter().cloned().collect())
            .unwrap_or_default();
        if !reason.starts_with("gates failed: ") {
            return Err(DemoError::Story(format!(
                "the bad change was rolled back for another reason: {reason}"
            )));
        }
        for id in &touched {
            let v = fleet.values(std::slice::from_ref(id), "maxmemory").await;
            self.out.line(&format!(
                "Read back from {id}: maxmemory is {} again.",
                summarize(&v)
            ));
        }
        let untouched = members.iter().filter(|m| !touched.contains(m)).count();
        self.out.line(&format!(
            "The other {untouched} nodes were never touched. The outcome is a git note on carol's\n\
             commit (see the history below), and this content stays refused until it changes."
        ));
        self.out.line(
            "Git stays the source of truth: carol reverts her commit. Every node already runs what\n\
             the revert declares, so nothing moves:",
        );
        let message = format!("Revert \"Save memory: EU sessions down to {BAD_MEMORY}\"");
        let revert = git.commit(CAROL, &message, &[(CLUSTER_FILE, good_file)])?;
        self.out.commit(&revert, CAROL.0, &message);
        self.take(&revert).await?;
        Ok(())
    }

    /// 4. A hand-made CONFIG SET: the drift report.
    async fn drift(&mut self) -> Result<(), DemoError> {
        let (out, git, fleet) = (&mut *self.out, self.git, self.fleet);
        out.section("4. Someone ran CONFIG SET by hand: the drift report");
        let node = fleet
            .nodes
            .get(DRIFT_NODE)
            .ok_or_else(|| DemoError::Example(format!("no node {DRIFT_NODE} in the example")))?;
        out.line(&format!(
            "At 3 a.m. someone ran `redis-cli -h {} CONFIG SET {DRIFT_PARAM} {DRIFT_VALUE}`\n\
             (on the simulated {DRIFT_NODE}). `cacheflow drift --direct` reads every node:",
            node.address.split(':').next().unwrap_or(&node.address)
        ));
        node.node.set_by_hand(DRIFT_PARAM, DRIFT_VALUE);
        let repo = open(&git.dir)?;
        let desired = desired(&repo, None)?;
        let live = fleet.snapshot().await;
        let at = live
            .taken_at
            .clone()
            .unwrap_or_else(crate::edges::nodes::fleet::now_rfc3339);
        let report = crate::pure::drift::compute(&desired, &live, &at);
        out.block(&crate::pure::drift::text(&report));
        if let Some(dir) = &self.drift_dir {
            crate::entry::server::drift::write_report(dir, &report)
                .map_err(|e| DemoError::Serve(e.to_string()))?;
            out.line("The console's drift page shows this report: /drift.");
        }
        out.line(
            "`cacheflow serve` runs this report on `drift.schedule` (Markdown, JSON and an HTML page\n\
             with a chart, sent to `drift.notify`); with `drift.mode: correct` it rolls the declared\n\
             values out again through the same staged path. `cacheflow sync` does that now.",
        );
        Ok(())
    }
}

impl Live<'_> {
    /// 5. A start-only change reaches a primary: its role moves to its replica first.
    async fn failover(&mut self) -> Result<(), DemoError> {
        let (git, host, handle) = (self.git, self.host, self.handle);
        self.out
            .section("5. A restart-only change of a primary: its role moves to a replica first");
        let nodes = carts_nodes(git)?;
        self.out.line(&format!(
            "Two more simulated nodes, {CARTS}-1a (primary) and {CARTS}-1b (its replica), run as\n\
             services: each starts from its config file, and an agent beside it restarts it with a\n\
             command. {CARTS_FILE} declares them as they run:"
        ));
        let message = "Carts: two nodes, as they run";
        let first = git.commit(ALICE, message, &[(CARTS_FILE, &carts_file(16))])?;
        self.out.commit(&first, ALICE.0, message);
        // The reconciler takes the revision with a reading of the new nodes, then their
        // agents start.
        let targets = nodes
            .iter()
            .map(|(id, n, _)| {
                Target::new(
                    id.clone(),
                    CARTS.to_owned(),
                    Arc::clone(n) as Arc<dyn NodeDriver>,
                )
            })
            .collect();
        let options = SnapshotOptions {
            concurrency: 2,
            timeout: Duration::from_secs(2),
        };
        let live = fleet::snapshot(targets, options).await;
        let events = &mut *self.events;
        take(self.out, git, handle, events, (CARTS, Some(live)), &first).await?;
        for (id, node, options) in &nodes {
            host.drive(id, node.clone() as Arc<dyn NodeDriver>, options.clone());
        }
        let message = "Carts: 32 databases (start-only: each engine restarts)";
        let change = git.commit(BOB, message, &[(CARTS_FILE, &carts_file(32))])?;
        self.out.commit(&change, BOB.0, message);
        self.out.line(
            "`databases` takes effect at start only: every node restarts. A primary restarted in\n\
             place takes no writes until it is back, so the replica restarts first, then the\n\
             primary role moves to it (`FAILOVER TO`, or `CLUSTER FAILOVER` in cluster mode), then\n\
             the old primary restarts as its replica:",
        );
        let phase = take(self.out, git, handle, self.events, (CARTS, None), &change).await?;
        if !matches!(phase, Phase::Completed) {
            return Err(DemoError::Story(format!(
                "the restart-only change did not complete: {phase:?}"
            )));
        }
        for (id, node, _) in &nodes {
            let live = node.read().await.ok();
            let role = live
                .as_ref()
                .and_then(|l| l.health.as_ref())
                .and_then(|h| h.role)
                .map(|r| r.to_string())
                .unwrap_or_else(|| "unknown".into());
            let databases = live
                .as_ref()
                .and_then(|l| l.parameters.get("databases").cloned())
                .unwrap_or_else(|| "unknown".into());
            self.out.line(&format!(
                "Read back from {id}: databases {databases}, runs as a {role}."
            ));
        }
        Ok(())
    }
}

/// The carts nodes: simulated, replicating each other, each run as a service from a
/// config file in the demo's git directory (restarted by `touch MARKER`), with the
/// options of the in-process agent that drives it (it may restart it).
type Carts = Vec<(String, Arc<SimulatedNode>, DirectOptions)>;

fn carts_nodes(git: &Git) -> Result<Carts, DemoError> {
    let dir = git.repo.path().join("demo-services");
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::File {
        path: dir.clone(),
        source,
    })?;
    let params: Arc<BTreeMap<String, String>> =
        Arc::new([("databases".to_owned(), "16".to_owned())].into());
    let replication = Arc::new(Replication::default());
    let mut out = Vec::new();
    for (id, address, role) in CARTS_NODES {
        let node = Arc::new(SimulatedNode::new(
            address,
            Engine::Redis,
            role,
            Arc::clone(&params),
            1 << 20,
            1000.0,
        ));
        if role == Role::Replica {
            node.replicate_from(Some(CARTS_NODES[0].1.to_owned()));
        }
        replication.join(&node);
        let file = dir.join(format!("{id}.conf"));
        std::fs::write(&file, "databases 16\n").map_err(|source| DemoError::File {
            path: file.clone(),
            source,
        })?;
        let marker = dir.join(format!("{id}.restart"));
        node.run_as_service(file.clone(), marker.clone());
        let options = DirectOptions {
            interval: Duration::from_millis(250),
            timeout: Duration::from_secs(2),
            first_reading: None,
            declared: None,
            apply: Some(ApplyOptions {
                config_file: Some(file),
                restart_command: Some(format!("touch '{}'", marker.display())),
                restart_timeout: Duration::from_secs(10),
                warmup: Duration::ZERO,
                ..ApplyOptions::default()
            }),
        };
        out.push((id.to_owned(), node, options));
    }
    Ok(out)
}

/// `cacheflow diff` of a change, indented.
fn show_diff(out: &mut Out, git: &Git, base: &str, head: &str) -> Result<(), DemoError> {
    let repo = open(&git.dir)?;
    let changes = pipeline::diff(&repo, base, &Revision::Rev(head.to_owned()))?;
    out.line("`cacheflow diff` (what a pull request review shows):");
    out.block(&crate::pure::render::diff_text(&changes));
    Ok(())
}

/// Hand the repository's head to the reconciler and print its journal lines until the
/// rollout of that revision ends (or, when nothing needed to change, at once). Returns
/// how the rollout ended (`Completed` when nothing was rolled out).
async fn take(
    out: &mut Out,
    git: &Git,
    handle: &Handle,
    events: &mut broadcast::Receiver<String>,
    (cluster, live): (&str, Option<LiveState>),
    revision: &str,
) -> Result<Phase, DemoError> {
    let repo = open(&git.dir)?;
    let good = handle.head().await?;
    let desired = desired(&repo, good.as_deref())?;
    let began = Instant::now();
    handle.revision(desired, live).await?;
    loop {
        out.drain(events, Some(began));
        let status = handle.status()?;
        let phase = status
            .clusters
            .get(cluster)
            .filter(|c| c.rollout.as_ref().is_some_and(|r| r.revision == revision))
            .and_then(|c| c.progress.as_ref())
            .map(|p| &p.phase);
        match phase {
            None => {
                out.drain(events, Some(began));
                return Ok(Phase::Completed);
            }
            // Paused or waiting: nobody will resume it in the demo.
            Some(phase)
                if phase.is_final()
                    || matches!(phase, Phase::Paused { .. } | Phase::Waiting { .. }) =>
            {
                out.drain(events, Some(began));
                return Ok(phase.clone());
            }
            Some(_) if began.elapsed() > ROLLOUT_LIMIT => {
                return Err(DemoError::TooLong {
                    revision: short_id(revision).to_owned(),
                    seconds: ROLLOUT_LIMIT.as_secs(),
                })
            }
            Some(_) => {}
        }
        tokio::select! {
            line = events.recv() => {
                if let Ok(line) = line {
                    out.event(&line, Some(began));
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            // Stop cleanly (the temporary repository is removed) rather than die.
            _ = tokio::signal::ctrl_c() => return Err(DemoError::Interrupted),
        }
    }
}

/// Who makes the commits: a name and an address.
type Person = (&'static str, &'static str);
const ALICE: Person = ("alice", "alice@example.com");
const BOB: Person = ("bob", "bob@example.com");
const CAROL: Person = ("carol", "carol@example.com");
const DEMO: Person = ("cacheflow demo", "demo@example.com");

/// Standard output, flushed line by line (the demo is watched live).
struct Out {
    stdout: std::io::Stdout,
}

impl Out {
    fn new() -> Out {
        Out {
            stdout: std::io::stdout(),
        }
    }

    fn line(&mut self, text: &str) {
        let mut lock = self.stdout.lock();
        let _ = writeln!(lock, "{text}");
        let _ = lock.flush();
    }

    fn section(&mut self, title: &str) {
        self.line(&format!("\n== {title}\n"));
    }

    /// Output of another command, indented.
    fn block(&mut self, text: &str) {
        for l in text.trim_end().lines() {
            self.line(&format!("    {l}"));
        }
    }

    fn commit(&mut self, id: &str, author: &str, message: &str) {
        self.line(&format!("  commit {} by {author}: {message}", short_id(id)));
    }

    /// One journal message, a line per event (the figures the gates judged are left to
    /// the journal), with the seconds since `began`.
    fn event(&mut self, message: &str, began: Option<Instant>) {
        for l in message
            .lines()
            .filter(|l| !l.starts_with("figures: ") && !l.starts_with("replication: "))
        {
            let at = began
                .map(|b| format!("{:>5.1}s", b.elapsed().as_secs_f64()))
                .unwrap_or_else(|| "      ".to_owned());
            self.line(&format!("  {at}  {}", shorten_hashes(l)));
        }
    }

    /// Print the journal messages already there.
    fn drain(&mut self, events: &mut broadcast::Receiver<String>, began: Option<Instant>) {
        loop {
            match events.try_recv() {
                Ok(m) => self.event(&m, began),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.line(&format!("  ({n} journal lines skipped)"))
                }
                Err(_) => break,
            }
        }
    }
}

/// Where the repository lives; a temporary one is removed when the demo ends.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn new(keep: Option<&Path>) -> Result<WorkDir, DemoError> {
        if let Some(dir) = keep {
            let used = std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some());
            if used {
                return Err(DemoError::NotEmpty(dir.to_path_buf()));
            }
            let file = |source| DemoError::File {
                path: dir.to_path_buf(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(file)?;
            let path = dir.canonicalize().map_err(file)?;
            return Ok(WorkDir {
                path,
                remove: false,
            });
        }
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        for attempt in 0..100u32 {
            let path = base.join(format!(
                "cacheflow-demo-{}-{}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(WorkDir { path, remove: true }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(DemoError::File { path, source }),
            }
        }
        Err(DemoError::NoTemporaryDirectory(base))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The demo's git repository: files written into its work tree and committed.
struct Git {
    repo: git2::Repository,
    dir: PathBuf,
}

impl Git {
    fn init(dir: &Path) -> Result<Git, DemoError> {
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo =
            git2::Repository::init_opts(dir, &opts).map_err(|source| DemoError::GitInit {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Git {
            repo,
            dir: dir.to_path_buf(),
        })
    }

    /// Write `files` and commit them on the current branch; the new commit's id.
    fn commit(
        &self,
        who: Person,
        message: &str,
        files: &[(&str, &str)],
    ) -> Result<String, DemoError> {
        let err = DemoError::GitCommit;
        for (path, text) in files {
            let full = self.dir.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).map_err(|source| DemoError::File {
                    path: parent.to_path_buf(),
                    source,
                })?;
            }
            std::fs::write(&full, text).map_err(|source| DemoError::File {
                path: full.clone(),
                source,
            })?;
        }
        let mut index = self.repo.index().map_err(err)?;
        for (path, _) in files {
            index.add_path(Path::new(path)).map_err(err)?;
        }
        index.write().map_err(err)?;
        let tree = self
            .repo
            .find_tree(index.write_tree().map_err(err)?)
            .map_err(err)?;
        let sig = git2::Signature::now(who.0, who.1).map_err(err)?;
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let oid = self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .map_err(err)?;
        Ok(oid.to_string())
    }
}

fn open(dir: &Path) -> Result<ConfigRepo, DemoError> {
    Ok(ConfigRepo::open(&dir.display().to_string(), None)?)
}

/// The head of the demo's repository through the one intake (`good`: the reconciler's
/// last good revision); a refusal is the demo's error.
fn desired(repo: &ConfigRepo, good: Option<&str>) -> Result<Desired, DemoError> {
    match intake::take(repo, "HEAD", good, None) {
        Outcome::Valid(taken) => Ok(*taken.desired),
        Outcome::Refused(Refusal::Invalid { diagnostics, .. }) => Err(DemoError::Invalid(
            diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )),
        Outcome::Refused(r) => Err(DemoError::Refused(r)),
        Outcome::FetchFailed(e) => Err(e.into()),
        Outcome::Unchanged { head } => Err(DemoError::Unchanged(head)),
    }
}

struct SimNode {
    cluster: String,
    address: String,
    node: Arc<SimulatedNode>,
}

/// One simulated node per declared node, running what the repository declares.
struct Fleet {
    nodes: BTreeMap<String, SimNode>,
}

impl Fleet {
    fn build(desired: &Desired) -> Fleet {
        let mut nodes = BTreeMap::new();
        for c in desired.clusters.values() {
            let params: Arc<BTreeMap<String, String>> = Arc::new(
                c.parameters
                    .iter()
                    .map(|(k, p)| (k.clone(), p.value.clone()))
                    .collect(),
            );
            // The live keys fill two thirds of the memory limit: room to spare, and a
            // cut to half of it shows in the hit ratio.
            let limit = params
                .get(c.engine.memory_limit_parameter())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1 << 30);
            let working_set = limit / 3 * 2;
            let ops = match c.engine {
                Engine::Redis => 2000.0,
                Engine::Memcached => 5000.0,
            };
            for n in &c.nodes {
                let node = SimulatedNode::new(
                    n.address.clone(),
                    c.engine,
                    n.role.unwrap_or(Role::Primary),
                    Arc::clone(&params),
                    working_set,
                    ops,
                );
                // A declared replica follows its shard's declared primary.
                if n.role == Some(Role::Replica) {
                    node.replicate_from(
                        c.nodes
                            .iter()
                            .find(|p| p.shard == n.shard && p.role == Some(Role::Primary))
                            .map(|p| p.address.clone()),
                    );
                }
                nodes.insert(
                    n.id.clone(),
                    SimNode {
                        cluster: c.name.clone(),
                        address: n.address.clone(),
                        node: Arc::new(node),
                    },
                );
            }
        }
        Fleet { nodes }
    }

    /// Traffic on every node, as time passes, until the task is aborted.
    fn drive_traffic(&self) -> tokio::task::JoinHandle<()> {
        let nodes: Vec<Arc<SimulatedNode>> =
            self.nodes.values().map(|n| Arc::clone(&n.node)).collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last = Instant::now();
            loop {
                tick.tick().await;
                let seconds = last.elapsed().as_secs_f64();
                last = Instant::now();
                for n in &nodes {
                    n.advance(seconds);
                }
            }
        })
    }

    /// A reading of every node, as `cacheflow snapshot` takes it.
    async fn snapshot(&self) -> LiveState {
        let targets = self
            .nodes
            .iter()
            .map(|(id, n)| {
                Target::new(
                    id.clone(),
                    n.cluster.clone(),
                    Arc::clone(&n.node) as Arc<dyn NodeDriver>,
                )
            })
            .collect();
        fleet::snapshot(
            targets,
            SnapshotOptions {
                concurrency: 64,
                timeout: Duration::from_secs(2),
            },
        )
        .await
    }

    fn members(&self, cluster: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.cluster == cluster)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// `param` as each of `ids` reports it now.
    async fn values(&self, ids: &[String], param: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for id in ids {
            if let Some(n) = self.nodes.get(id) {
                if let Ok(live) = n.node.read().await {
                    if let Some(v) = live.parameters.get(param) {
                        out.insert(id.clone(), v.clone());
                    }
                }
            }
        }
        out
    }
}

/// The demo's own commit: every bake, warm-up and apply timeout of the repository made
/// seconds, and the rollout windows left out (a demo on a Friday afternoon would wait).
fn speed_up(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_windows = false;
    for line in text.split_inclusive('\n') {
        let indent = line.len() - line.trim_start().len();
        let key = line.trim_start();
        if in_windows {
            // The block ends at the next key of the same depth.
            if indent <= 2 && !key.trim().is_empty() && !key.starts_with('#') {
                in_windows = false;
            } else {
                continue;
            }
        }
        if indent == 2 && key.starts_with("windows:") {
            in_windows = true;
            continue;
        }
        let timing = [
            ("bake:", BAKE),
            ("warmup:", WARMUP),
            ("applyTimeout:", APPLY_TIMEOUT),
        ]
        .into_iter()
        .find(|(k, _)| key.starts_with(k));
        match timing {
            Some((k, value)) => {
                out.push_str(&line[..indent]);
                out.push_str(&format!("{k} {value}\n"));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Commit ids (40 hex digits) in a journal line, shortened to 12.
fn shorten_hashes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        if end == 40 && rest[..end].chars().all(|c| !c.is_ascii_uppercase()) {
            out.push_str(short_id(&rest[..end]));
        } else {
            out.push_str(&rest[..end]);
        }
        rest = &rest[end..];
        let skip = rest
            .find(|c: char| c.is_ascii_hexdigit())
            .unwrap_or(rest.len());
        out.push_str(&rest[..skip]);
        rest = &rest[skip..];
    }
    out
}

/// Bytes as people write them in the repository (`8gb`), when they divide evenly.
fn human(value: &str) -> String {
    let Ok(n) = value.parse::<u64>() else {
        return value.to_owned();
    };
    for (unit, size) in [("gb", 1u64 << 30), ("mb", 1 << 20)] {
        if n >= size && n % size == 0 {
            return format!("{}{unit}", n / size);
        }
    }
    value.to_owned()
}

/// Values read from several nodes: the one value they share, or each node's.
fn summarize(values: &BTreeMap<String, String>) -> String {
    let mut distinct: Vec<&String> = values.values().collect();
    distinct.sort();
    distinct.dedup();
    match distinct.as_slice() {
        [] => "(not reported)".to_owned(),
        [one] => format!("{} ({one} bytes)", human(one)),
        _ => values
            .iter()
            .map(|(id, v)| format!("{id}: {}", human(v)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_example_is_the_whole_example_repo() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    let rel = p
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .replace('\\', "/");
                    on_disk.push(rel);
                }
            }
        }
        on_disk.sort();
        let embedded: Vec<String> = EXAMPLE_REPO.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn speeding_up_makes_every_bake_seconds_and_drops_the_windows() {
        for (path, text) in EXAMPLE_REPO {
            let fast = speed_up(text);
            for line in fast.lines().map(str::trim_start) {
                for key in ["bake:", "warmup:", "applyTimeout:"] {
                    if let Some(value) = line.strip_prefix(key) {
                        assert!(
                            [BAKE, WARMUP, APPLY_TIMEOUT].contains(&value.trim()),
                            "{path}: {line}"
                        );
                    }
                }
            }
            assert!(!fast.contains("windows:"), "{path}");
            assert!(!fast.contains("no-friday-afternoon"), "{path}");
        }
        let settings = speed_up(EXAMPLE_REPO[0].1);
        assert!(settings.contains("\n  drift:\n"), "{settings}");
        assert!(settings.contains("    bake: 3s\n"), "{settings}");
        // The change the demo makes is there to make.
        let eu = EXAMPLE_REPO
            .iter()
            .find(|(p, _)| *p == CLUSTER_FILE)
            .unwrap()
            .1;
        assert!(eu.contains(MEMORY_LINE));
    }

    #[test]
    fn journal_lines_show_short_commit_ids() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            shorten_hashes(&format!("sessions-eu: rolled back to {id}; before-{id}.")),
            "sessions-eu: rolled back to 0123456789ab; before-0123456789ab."
        );
        assert_eq!(
            shorten_hashes("batch 1 of 3 assigned"),
            "batch 1 of 3 assigned"
        );
        assert_eq!(shorten_hashes("deadbeef"), "deadbeef");
        assert_eq!(human("8589934592"), "8gb");
        assert_eq!(human("3221225472"), "3gb");
        assert_eq!(human("1000"), "1000");
    }
}
