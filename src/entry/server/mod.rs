//! `cacheflow serve`: the long-running reconciler behind HTTP. Thin: it turns requests
//! into reconciler inputs and answers with what the reconciler says. This file starts
//! and follows; the routes are `app.rs` (the router), `hooks.rs` (webhooks), `api.rs`
//! (reports, status, admin, metrics, health), `console.rs` (the web console at `/`),
//! `error.rs` (the one error answer) and `body.rs` (the bounds of request bodies).
//!
//! ```text
//! POST /hooks/{github,gitlab,gitea}  signature ─► tracked branch? new delivery? ─► wake the follower
//! follower: fetch the mirror (a burst of pushes is one fetch) ─► head moved? descends from
//!           the last good one? valid? ─► reconciler.revision / refuse
//! POST /api/v1/nodes/{id}/report     node token ─► reconciler.report ─► the assignment
//! GET  /api/v1/clusters, /api/v1/rollouts;  POST /api/v1/rollouts/{cluster}/{action} (admin)
//! GET  /metrics, /healthz, /readyz
//! GET  /, /clusters/{name}, /drift, /console/events (server-sent events)   the console
//! ```

mod access;
mod api;
mod app;
mod body;
pub mod console;
pub mod drift;
pub mod error;
mod front;
mod hooks;
mod http;
pub use http::ServerTls;
pub mod pr;
pub mod replica;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::edges::audit::{Journal, JournalRefs};
use crate::edges::forge::webhook::Deliveries;
use crate::edges::metrics::Metrics;
use crate::edges::nodes::fence::{Fence, Fenced};
use crate::edges::nodes::NodeDriver;
use crate::edges::redact::redact_url;
use crate::edges::source::{self, ConfigRepo, SourceError};
use crate::entry::output::outln;
use crate::flow::pipeline::intake::{self, IntakeError, Origin, Outcome};
use crate::flow::pipeline::{self};
use crate::flow::runtime::{DirectOptions, Handle, Host, HostOptions};
use crate::pure::spec::model::{Cluster, Managed, Node};

/// Held by whatever fetches into or pushes from the mirror (see `fetch_repo`).
static MIRROR: Mutex<()> = Mutex::new(());

/// Largest webhook body accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The config repository: a URL (mirrored into the state directory) or a local path.
    pub repo: String,
    /// The config root inside the repository (`--path`; `""`: its root).
    pub path: String,
    pub branch: String,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub poll_interval: Duration,
    /// Shared secret of the forges' webhooks (HMAC key; GitLab's token).
    pub webhook_secret: Option<Vec<u8>>,
    /// The secret node tokens are derived from (`cacheflow agent-token`).
    pub node_token_secret: Option<Vec<u8>>,
    /// Admin tokens: name → token.
    pub admin_tokens: BTreeMap<String, String>,
    /// Read tokens (`--read-tokens-file`): name → token. Empty: the console and the
    /// status routes are open to anyone who reaches the server.
    pub read_tokens: BTreeMap<String, String>,
    /// Push the journal and the notes to the remote after each change.
    pub push_audit: bool,
    /// How often in-process agents read directly managed nodes.
    pub direct_interval: Duration,
    pub node_timeout: Duration,
    /// After a restart, how long before a rollout in flight judges its gates or times
    /// out: the time every node needs to report again (agents report every 30 s by
    /// default).
    pub resume_grace: Duration,
    /// A node whose last report is older than this is silent in drift reports.
    pub silent_after: Duration,
    /// The forge's REST API for pull-request feedback (GitHub's public API by default).
    pub forge_api_url: Option<String>,
    /// The token pull-request feedback posts with.
    pub forge_token: Option<String>,
    /// Terminate TLS here (`--tls-cert-file`, `--tls-key-file`).
    pub tls: Option<http::ServerTls>,
    /// Run as one of several replicas, electing a leader on etcd (`--etcd-endpoints`);
    /// `None`: the single process.
    pub replication: Option<replica::ReplicaOptions>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Audit(#[from] crate::edges::audit::AuditError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct App {
    handle: Handle,
    feedback: pr::Feedback,
    drift: drift::DriftRunner,
    options: ServeOptions,
    metrics: Arc<Metrics>,
    deliveries: Mutex<Deliveries>,
    wake_follower: Notify,
    ready: AtomicBool,
    /// How long a report of a node no revision declares yet is held for the revision
    /// that declares it ([`api::REPORT_HOLD`]).
    report_hold: Duration,
    /// Whether the remote answers; `/readyz` and the log say when it does not.
    remote: Mutex<RemoteHealth>,
    /// A leader replica's election: no node write goes out once it is lost.
    fence: Option<Arc<dyn Fence>>,
}

impl App {
    /// The driver of `node`: fenced by the election on a leader replica.
    fn driver_for(&self, cluster: &Cluster, node: &Node) -> Arc<dyn NodeDriver> {
        let driver = pipeline::driver_for(cluster, node, self.options.node_timeout);
        match &self.fence {
            Some(fence) => Arc::new(Fenced::new(driver, fence.clone())),
            None => driver,
        }
    }
}

/// The remote as the follower last found it.
#[derive(Debug, Default, Clone)]
struct RemoteHealth {
    /// Failed fetches in a row (0: the last one succeeded).
    failures: u32,
    /// When the first of them failed (RFC 3339).
    since: Option<String>,
    /// Why the last one failed.
    error: String,
}

impl RemoteHealth {
    /// A fetch failed: the wait before the next one.
    fn failed(&mut self, error: String) -> Duration {
        self.failures = self.failures.saturating_add(1);
        if self.since.is_none() {
            self.since = Some(crate::edges::clock::now_rfc3339());
        }
        self.error = error;
        crate::flow::backoff::backoff_with_jitter(self.failures)
    }
}

type Shared = Arc<App>;

/// Where the server's heads come from: the remote, mirrored into the state directory.
pub(crate) fn origin(options: &ServeOptions) -> Origin {
    Origin {
        url: options.repo.clone(),
        mirror: options.state_dir.join("mirror"),
        path: options.path.clone(),
    }
}

/// Fetch the mirror (or open the local repository); the typed error, to tell a remote
/// that is away from one that refuses.
fn fetch_repo(options: &ServeOptions) -> Result<ConfigRepo, SourceError> {
    // One fetch at a time into the mirror: the shards a replica leads (front.rs) each
    // follow the branch, and two fetches at once fight over git's ref locks.
    let _one = MIRROR.lock().unwrap_or_else(|p| p.into_inner());
    let origin = origin(options);
    ConfigRepo::open(&origin.url, Some(&origin.mirror))
}

/// The mirror as it is, without fetching, when it holds the tracked branch.
fn cached_repo(options: &ServeOptions) -> Option<ConfigRepo> {
    if !source::is_url(&options.repo) {
        return None;
    }
    let repo = source::open_cached(&options.repo, &origin(options).mirror).ok()?;
    repo.resolve(&format!("refs/heads/{}", options.branch))
        .is_ok()
        .then_some(repo)
}

/// Run the server until SIGTERM / Ctrl-C (`stop` turns true). A reconciler that stops
/// (its journal could not be written) stops the server at once with its error:
/// answering without it would hide the failure; the supervisor restarts the process.
pub async fn serve(options: ServeOptions, stop: watch::Receiver<bool>) -> Result<(), ServeError> {
    let lock = lock_state_dir(&options)?;
    let (git_dir, fetch_error) = mirror(&options).await?;
    let listener = listen(options.listen, options.tls.is_some())?;
    let result = match options.replication.clone() {
        None => lead(
            &options,
            &git_dir,
            fetch_error,
            Door::Socket(&listener),
            stop,
            None,
        )
        .await
        .map(|_| ()),
        Some(replication) if replication.shards > 1 => {
            front::run(&options, &replication, &git_dir, &listener, stop).await
        }
        Some(replication) => replica::run(&options, &replication, &git_dir, &listener, stop).await,
    };
    drop(lock);
    result
}

/// How a term of the reconciler ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// `stop` turned true.
    Stopped,
    /// A replica lost its leadership: back to standing by.
    Deposed,
}

/// Where a term answers: the process's socket (one reconciler per process), or its
/// shard's slot behind the sharded front (`front.rs`, `--shards` above 1).
#[derive(Clone, Copy)]
enum Door<'a> {
    Socket(&'a std::net::TcpListener),
    Slot(&'a front::Slot),
}

/// Reconcile and answer until `stop` (or, for a replica, until it no longer leads).
async fn lead(
    options: &ServeOptions,
    git_dir: &std::path::Path,
    fetch_error: Option<String>,
    door: Door<'_>,
    mut stop: watch::Receiver<bool>,
    replica: Option<crate::flow::runtime::Replica>,
) -> Result<Term, ServeError> {
    let options = options.clone();
    let git_dir = git_dir.to_path_buf();
    let metrics = Arc::new(Metrics::default());
    let mut remote = RemoteHealth::default();
    match fetch_error {
        None => {
            metrics.remote_reachable.set(1);
        }
        Some(e) => {
            metrics.fetch_failures.inc();
            remote.failed(e);
        }
    }
    let leadership = replica.as_ref().map(|r| r.leadership.clone());
    let fence = replica.as_ref().map(|r| r.journal.fence().clone());
    // Notices of rollouts and drift runs to the revision's `notifications:` targets.
    let notifier = crate::edges::notify::Notifier::new(
        crate::edges::notify::NotifyOptions::default(),
        Some(metrics.clone()),
    );
    let host = Arc::new(start_host(
        &options,
        &git_dir,
        &metrics,
        notifier.clone(),
        replica,
    )?);
    let handle = host.handle().clone();
    let app = Arc::new(App {
        handle: handle.clone(),
        feedback: pr::Feedback::new(options.forge_api_url.clone(), options.forge_token.clone()),
        drift: drift::DriftRunner {
            handle: handle.clone(),
            dir: drift_dir(&options),
            metrics: metrics.clone(),
            notifier,
            silent_after: options.silent_after,
            revision_taken: Arc::new(Notify::new()),
            notices: Arc::default(),
        },
        options: options.clone(),
        metrics,
        deliveries: Mutex::new(Deliveries::default()),
        wake_follower: Notify::new(),
        ready: AtomicBool::new(false),
        report_hold: api::REPORT_HOLD,
        remote: Mutex::new(remote),
        fence: leadership.clone().map(|l| l as Arc<dyn Fence>),
    });
    // The term's end (a stop, or the reconciler gone) ends the console's streams too.
    let (term_tx, term) = watch::channel(false);
    {
        let (mut stop, mut ended) = (stop.clone(), host.ended());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = ended.wait_for(|d| *d) => {}
            }
            let _ = term_tx.send(true);
        });
    }
    let router = app::app_stopping(app.clone(), term);
    let listener = match door {
        Door::Socket(l) => Some(tokio_listener(l, options.listen)?),
        Door::Slot(_) => None,
    };
    let background = Background::spawn(&app, &host, git_dir.clone(), &stop);
    let pushed_dir = git_dir.clone();
    let pusher = fence.map(|f| {
        tokio::spawn(replica::push_audit_log(
            options.clone(),
            git_dir,
            f,
            stop.clone(),
        ))
    });
    let mut ended = host.ended();
    let mut stop_http = stop.clone();
    let term_over = async move {
        tokio::select! {
            _ = stop_http.wait_for(|s| *s) => {}
            _ = ended.wait_for(|d| *d) => {}
        }
    };
    match (door, listener) {
        (Door::Slot(slot), _) => {
            slot.open(router, app.clone());
            term_over.await;
            slot.close();
        }
        (Door::Socket(_), Some(listener)) => {
            http::serve(listener, router, options.tls.clone(), term_over).await;
        }
        (Door::Socket(_), None) => unreachable!("a socket door has its listener"),
    }
    if let Some(p) = &pusher {
        p.abort();
    }
    if *host.ended().borrow() {
        background.abort();
        let failure = match host.stop().await {
            Err(crate::flow::runtime::HostError::Journal(e)) => e.to_string(),
            _ => "the reconciler stopped".to_owned(),
        };
        if let Some(l) = leadership.as_ref().filter(|l| !l.valid()) {
            tracing::warn!(
                event = "deposed",
                "this replica no longer leads: {failure}; standing by"
            );
            // Best effort: a lease etcd still holds (its quorum just came back) would
            // keep the others waiting for its TTL; refused when it has expired already.
            let _ = tokio::time::timeout(Duration::from_secs(2), l.resign()).await;
            return Ok(Term::Deposed);
        }
        tracing::error!("the reconciler stopped: {failure}");
        return Err(ServeError::Source(format!(
            "the reconciler stopped: {failure}"
        )));
    }
    let _ = stop.wait_for(|s| *s).await;
    background.join().await;
    let _ = host.stop().await;
    if let Some(l) = &leadership {
        // The last entry and the notes written after it reach the remote before the
        // next leader fetches it (a stop or a hand-over, not a crash), then the next
        // leader need not wait for the lease.
        let (opts, dir) = (options.clone(), pushed_dir);
        let pushed = tokio::task::spawn_blocking(move || push_audit(&opts, &dir)).await;
        if let Ok(Err(e)) = pushed {
            tracing::warn!("cannot push the audit log before stepping down: {e}");
        }
        l.resign().await;
    }
    Ok(Term::Stopped)
}

/// One server per state directory: the lock is held for the life of the process (the
/// OS drops it when the process dies, even by SIGKILL), which makes it safe to clear the
/// lock files a killed predecessor left in the mirror.
fn lock_state_dir(options: &ServeOptions) -> Result<std::fs::File, ServeError> {
    std::fs::create_dir_all(&options.state_dir).map_err(|e| {
        ServeError::Source(format!(
            "cannot create the state directory {}: {e}",
            options.state_dir.display()
        ))
    })?;
    let lock_path = options.state_dir.join("cacheflow.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| ServeError::Source(format!("cannot open {}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(ServeError::Source(format!(
            "another cacheflow serve uses the state directory {} (it holds {})",
            options.state_dir.display(),
            lock_path.display()
        )));
    }
    remove_stale_git_locks(&options.state_dir.join("mirror"));
    Ok(lock)
}

/// Open (clone or fetch) the mirror; its git directory, and why the fetch failed when
/// the server starts from the mirror as it is: a remote that cannot be reached does not
/// keep a server whose mirror holds the branch (and whose journal holds the rollouts in
/// flight) from starting. With no such mirror it is an error.
async fn mirror(options: &ServeOptions) -> Result<(PathBuf, Option<String>), ServeError> {
    let opts = options.clone();
    tokio::task::spawn_blocking(move || {
        let failed = match fetch_repo(&opts) {
            Ok(repo) => return Ok((repo.repository().path().to_path_buf(), None)),
            Err(e) => e,
        };
        let why = redact_url(&failed.to_string());
        match cached_repo(&opts).filter(|_| failed.is_transient()) {
            Some(repo) => {
                tracing::warn!(
                    "{why}; starting from the mirror in {} and fetching again with backoff",
                    opts.state_dir.join("mirror").display()
                );
                Ok((repo.repository().path().to_path_buf(), Some(why)))
            }
            None if source::is_url(&opts.repo) && failed.is_transient() => {
                Err(ServeError::Source(format!(
                    "{why}; and {} holds no mirror of the branch `{}` to start from: \
                     the first start needs the remote",
                    opts.state_dir.join("mirror").display(),
                    opts.branch
                )))
            }
            None => Err(ServeError::Source(why)),
        }
    })
    .await
    .map_err(|e| ServeError::Source(e.to_string()))?
}

/// The reconciler, its journal in the mirror, with the in-process agents to come.
fn start_host(
    options: &ServeOptions,
    git_dir: &std::path::Path,
    metrics: &Arc<Metrics>,
    notifier: crate::edges::notify::Notifier,
    replica: Option<crate::flow::runtime::Replica>,
) -> Result<Host, ServeError> {
    let journal = Journal::open_at(git_dir, journal_refs(options))?;
    let grace = options
        .resume_grace
        .max(options.direct_interval * 2)
        .as_millis() as u64;
    Ok(Host::start(
        journal,
        HostOptions {
            grace_ms: grace,
            metrics: Some(metrics.clone()),
            correct_drift: false,
            notifier: Some(notifier),
            replica,
        },
    )?)
}

/// Where this process's reconciler keeps its journal and notes (one shard's pair under
/// `--shards` above 1).
fn journal_refs(options: &ServeOptions) -> JournalRefs {
    options
        .replication
        .as_ref()
        .map_or_else(JournalRefs::default, |r| r.refs())
}

/// Where the drift runs' reports go (one directory per shard under `--shards`).
fn drift_dir(options: &ServeOptions) -> PathBuf {
    match options.replication.as_ref().filter(|r| r.shards > 1) {
        Some(r) => options
            .state_dir
            .join("shards")
            .join(r.shard.to_string())
            .join("drift"),
        None => options.state_dir.join("drift"),
    }
}

/// Under `--shards N`: keep only the clusters of this term's shard (the others are
/// their own shards' leaders' to reconcile).
fn keep_own_shard(options: &ServeOptions, desired: &mut crate::pure::spec::model::Desired) {
    let Some(r) = options.replication.as_ref().filter(|r| r.shards > 1) else {
        return;
    };
    let balance = crate::pure::shards::Balance::default();
    match crate::pure::shards::ShardMap::assign(desired.clusters.keys(), r.shards, &balance) {
        Ok(map) => desired
            .clusters
            .retain(|name, _| map.shard_of(name) == Some(r.shard)),
        Err(e) => {
            tracing::error!("cannot place the clusters on {} shards: {e}", r.shards);
            desired.clusters.clear();
        }
    }
}

/// Bind the listening socket once: a replica answers on it as a standby, then as the
/// leader, each term on a copy of it.
fn listen(addr: SocketAddr, tls: bool) -> Result<std::net::TcpListener, ServeError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServeError::Listen { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServeError::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Listen { addr, source })?;
    tracing::info!("listening on {local}");
    let scheme = if tls { "https" } else { "http" };
    outln!("cacheflow serve: listening on {scheme}://{local}");
    Ok(listener)
}

/// The listening socket for one term's accept loop.
fn tokio_listener(
    listener: &std::net::TcpListener,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, ServeError> {
    listener
        .try_clone()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(|source| ServeError::Listen { addr, source })
}

/// The server's own tasks beside HTTP: the follower, scheduled drift runs, the ticker.
struct Background {
    follower: tokio::task::JoinHandle<()>,
    drifts: tokio::task::JoinHandle<()>,
    ticker: tokio::task::JoinHandle<()>,
}

impl Background {
    fn spawn(
        app: &Shared,
        host: &Arc<Host>,
        git_dir: PathBuf,
        stop: &watch::Receiver<bool>,
    ) -> Background {
        let follower = tokio::spawn(follow(app.clone(), host.clone(), git_dir, stop.clone()));
        // Scheduled drift runs (`drift.schedule` of the current revision).
        let drifts = tokio::spawn(app.drift.clone().run(stop.clone()));
        // Nodes heard from after their cluster's revision was taken get it through a
        // rollout of their own; the reconciler looks once a second.
        let handle = app.handle.clone();
        let mut stop = stop.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                if handle.tick().await.is_err() {
                    return;
                }
            }
        });
        Background {
            follower,
            drifts,
            ticker,
        }
    }

    /// After `stop`: each finishes its step.
    async fn join(self) {
        let _ = self.drifts.await;
        let _ = self.follower.await;
        let _ = self.ticker.await;
    }

    /// The reconciler is gone: nothing they would do can be journaled.
    fn abort(self) {
        self.drifts.abort();
        self.follower.abort();
        self.ticker.abort();
    }
}

/// Delete the `*.lock` files git leaves behind when a process is killed in the middle of
/// a ref update or a fetch; with them in place every later fetch fails.
fn remove_stale_git_locks(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            remove_stale_git_locks(&path);
        } else if path.extension().is_some_and(|e| e == "lock") {
            tracing::warn!("removing the stale git lock {}", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Fetch, check and hand new heads of the tracked branch to the reconciler.
async fn follow(app: Shared, host: Arc<Host>, git_dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut last_seen: Option<String> = None;
    let mut first = true;
    // After a failed fetch, the backoff's wait in place of the poll interval.
    let mut wait = app.options.poll_interval;
    loop {
        if !first {
            tokio::select! {
                _ = app.wake_follower.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        first = false;
        if *stop.borrow() {
            break;
        }
        let options = app.options.clone();
        let seen = last_seen.clone();
        // Only the head: a copy of the whole state would stall reports on a large fleet.
        let Ok(good) = app.handle.head().await else {
            break;
        };
        let step = tokio::task::spawn_blocking(move || check_head(&options, seen, good)).await;
        let taken = match step {
            Ok((outcome, fetch_error)) => {
                wait = remote_health(&app, fetch_error, &outcome);
                take(&app, &host, outcome, &mut last_seen).await
            }
            Err(e) => {
                tracing::error!("the follower failed: {e}");
                Ok(())
            }
        };
        if taken.is_err() {
            break;
        }
        app.ready.store(true, Ordering::Relaxed);
        if app.handle.tick().await.is_err() {
            break;
        }
        if app.options.push_audit {
            let options = app.options.clone();
            let dir = git_dir.clone();
            if let Ok(Err(e)) =
                tokio::task::spawn_blocking(move || push_audit(&options, &dir)).await
            {
                tracing::warn!("cannot push the audit log: {e}");
            }
        }
    }
}

/// Record how the fetch went (metrics, log, `/readyz`); the wait before the next one:
/// the poll interval, or after a failed fetch the backoff with jitter.
fn remote_health(app: &Shared, fetch_error: Option<SourceError>, outcome: &Outcome) -> Duration {
    let Ok(mut remote) = app.remote.lock() else {
        return app.options.poll_interval;
    };
    match fetch_error {
        None => {
            // At the level of the warnings it ends, so that the default log shows both.
            if remote.failures > 0 {
                tracing::warn!(
                    event = "remote_reachable",
                    "the remote {} answers again after {} failed fetches",
                    redact_url(&app.options.repo),
                    remote.failures
                );
            }
            *remote = RemoteHealth::default();
            let _ = app.metrics.remote_reachable.set(1);
            app.options.poll_interval
        }
        Some(e) => {
            let why = redact_url(&e.to_string());
            app.metrics.fetch_failures.inc();
            let _ = app.metrics.remote_reachable.set(0);
            // A failure the intake did not see is counted here, once, as before.
            if !matches!(outcome, Outcome::FetchFailed(_)) {
                Metrics::count(&app.metrics.revisions, "fetch_failed");
            }
            let wait = remote.failed(why.clone());
            tracing::warn!(
                event = "fetch_failed",
                "{why}; serving the mirror's revision, fetching again in {:.1} s (failure {})",
                wait.as_secs_f64(),
                remote.failures
            );
            wait
        }
    }
}

/// Hand the intake's outcome to the reconciler; `Err`: the reconciler has stopped.
async fn take(
    app: &Shared,
    host: &Host,
    outcome: Outcome,
    last_seen: &mut Option<String>,
) -> Result<(), crate::flow::runtime::Stopped> {
    match outcome {
        Outcome::Unchanged { .. } => {}
        Outcome::Refused(refusal) => {
            Metrics::count(&app.metrics.revisions, refusal.kind());
            *last_seen = Some(refusal.head().to_owned());
            let _ = app.handle.refuse(refusal.head(), &refusal.reason()).await;
        }
        Outcome::Valid(mut taken) => {
            keep_own_shard(&app.options, &mut taken.desired);
            Metrics::count(&app.metrics.revisions, "taken");
            app.metrics.notification_targets(
                taken
                    .desired
                    .settings
                    .notifications
                    .iter()
                    .map(|n| n.name.as_str()),
            );
            if let Some(s) = &taken.signed {
                tracing::info!(event = "signed_head", revision = %taken.head, signer = %s.signer, kind = s.kind, "signed head");
            }
            *last_seen = Some(taken.head);
            // A secret the directly managed nodes need and this process cannot read: one
            // error per reference now, rather than each node reported unreachable.
            for missing in pipeline::missing_secrets(taken.desired.clusters.values(), true) {
                tracing::error!("{missing}");
            }
            // Agent-managed nodes: the server sends FAILOVER to a primary itself when a
            // restart moves its role (docs/server.md, "The failover step").
            for c in taken.desired.clusters.values() {
                for n in c.nodes.iter().filter(|n| n.managed == Managed::Agent) {
                    app.handle.reach(&n.id, app.driver_for(c, n));
                }
            }
            let direct: Vec<(String, Arc<dyn NodeDriver>)> = taken
                .desired
                .clusters
                .values()
                .flat_map(|c| {
                    c.nodes
                        .iter()
                        .filter(|n| n.managed == Managed::Direct)
                        .map(|n| (n.id.clone(), app.driver_for(c, n)))
                })
                .collect();
            // The reconciler takes the revision before any new in-process agent starts:
            // an agent's first report, made before the revision declared its node, was
            // refused and left the node unheard of until its next interval, and with it
            // the rollout (the webhook's first push once waited 1.6 s for it).
            app.handle.revision(*taken.desired, None).await?;
            // In-process agents for directly managed nodes not driven yet.
            for (id, driver) in direct {
                host.drive(
                    &id,
                    driver,
                    DirectOptions {
                        interval: app.options.direct_interval,
                        timeout: app.options.node_timeout,
                        first_reading: None,
                        declared: None,
                        apply: None,
                    },
                );
            }
            app.drift.revision_taken.notify_one();
        }
        Outcome::FetchFailed(e) => {
            Metrics::count(&app.metrics.revisions, "fetch_failed");
            let why = match &e {
                IntakeError::Resolve { .. } => format!("the tracked branch {e}"),
                _ => e.to_string(),
            };
            tracing::warn!(
                event = "fetch_failed",
                "{why}; keeping the last good revision"
            );
        }
    }
    Ok(())
}

/// Fetch the mirror and take the tracked branch's head in (blocking: git). When the
/// remote cannot be reached (a transient failure), the head the mirror holds is taken
/// in instead, and the failure comes back beside the outcome.
fn check_head(
    options: &ServeOptions,
    seen: Option<String>,
    good: Option<String>,
) -> (Outcome, Option<SourceError>) {
    let branch = format!("refs/heads/{}", options.branch);
    let take = |repo: &ConfigRepo| intake::take(repo, &branch, good.as_deref(), seen.as_deref());
    let failed = |e: &SourceError| {
        Outcome::FetchFailed(IntakeError::Fetch(format!(
            "cannot fetch {}: {}",
            redact_url(&options.repo),
            redact_url(&e.to_string())
        )))
    };
    match fetch_repo(options) {
        Ok(repo) => (take(&repo), None),
        Err(e) if e.is_transient() => match cached_repo(options) {
            Some(repo) => (take(&repo), Some(e)),
            None => (failed(&e), Some(e)),
        },
        // A refusal (a missing branch, a bad spec): the poll interval, not the backoff.
        Err(e) => (failed(&e), None),
    }
}

/// Push the journal and the notes to the remote. The error is git's message with any
/// credential of the URL redacted: text, as `SourceError` keeps it, and only logged.
pub(crate) fn push_audit(options: &ServeOptions, git_dir: &std::path::Path) -> Result<(), String> {
    let _one = MIRROR.lock().unwrap_or_else(|p| p.into_inner());
    let refs = journal_refs(options);
    let repo = git2::Repository::open(git_dir).map_err(|e| e.to_string())?;
    let mut remote = repo
        .remote_anonymous(&options.repo)
        .map_err(|e| e.to_string())?;
    let mut specs = Vec::new();
    for r in [refs.journal.as_str(), refs.notes.as_str()] {
        if repo.refname_to_id(r).is_ok() {
            specs.push(format!("{r}:{r}"));
        }
    }
    if specs.is_empty() {
        return Ok(());
    }
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    remote
        .push(&specs, None)
        .map_err(|e| redact_url(e.message()))
}
