//! `cacheflow serve`: the long-running reconciler behind HTTP. Thin: it turns requests
//! into reconciler inputs and answers with what the reconciler says. This file starts
//! and follows; the routes are `app.rs` (the router), `hooks.rs` (webhooks), `api.rs`
//! (reports, status, admin, metrics, health), `error.rs` (the one error answer) and
//! `body.rs` (the bounds of request bodies).
//!
//! ```text
//! POST /hooks/{github,gitlab,gitea}  signature ─► tracked branch? new delivery? ─► wake the follower
//! follower: fetch the mirror (a burst of pushes is one fetch) ─► head moved? descends from
//!           the last good one? valid? ─► reconciler.revision / refuse
//! POST /api/v1/nodes/{id}/report     node token ─► reconciler.report ─► the assignment
//! GET  /api/v1/clusters, /api/v1/rollouts;  POST /api/v1/rollouts/{cluster}/{action} (admin)
//! GET  /metrics, /healthz, /readyz
//! ```

mod api;
mod app;
mod body;
pub mod drift;
pub mod error;
mod hooks;
mod http;
pub mod pr;

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::edges::audit::{Journal, JOURNAL_REF, NOTES_REF};
use crate::edges::forge::webhook::Deliveries;
use crate::edges::metrics::Metrics;
use crate::edges::source::{redact_url, ConfigRepo};
use crate::flow::pipeline::{self, PipelineError, Revision};
use crate::flow::runtime::{self, DirectOptions, Handle};
use crate::pure::spec::model::Managed;

/// Largest webhook body accepted (GitHub caps payloads at 25 MB; pushes are far smaller).
pub const MAX_WEBHOOK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The config repository: a URL (mirrored into the state directory) or a local path.
    pub repo: String,
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
}

type Shared = Arc<App>;

pub(crate) fn open_repo(options: &ServeOptions) -> Result<ConfigRepo, ServeError> {
    ConfigRepo::open(&options.repo, Some(&options.state_dir.join("mirror")))
        .map_err(|e| ServeError::Source(redact_url(&e.to_string())))
}

/// Run the server until SIGTERM / Ctrl-C (`stop` turns true).
pub async fn serve(
    options: ServeOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    std::fs::create_dir_all(&options.state_dir).map_err(|e| {
        ServeError::Source(format!(
            "cannot create the state directory {}: {e}",
            options.state_dir.display()
        ))
    })?;
    // One server per state directory: the lock is held for the life of the process
    // (the OS drops it when the process dies, even by SIGKILL), which makes it safe to
    // clear the lock files a killed predecessor left in the mirror.
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
    let opts = options.clone();
    let repo = tokio::task::spawn_blocking(move || open_repo(&opts))
        .await
        .map_err(|e| ServeError::Source(e.to_string()))??;
    let git_dir = repo.repository().path().to_path_buf();
    drop(repo);
    let metrics = Arc::new(Metrics::default());
    let journal = Journal::open(&git_dir)?;
    let grace = options
        .resume_grace
        .max(options.direct_interval * 2)
        .as_millis() as u64;
    let (handle, task) = runtime::start(journal, grace, Some(metrics.clone()), false)?;
    // Notices of rollouts and drift runs to the revision's `notifications:` targets.
    let notifier = crate::edges::notify::Notifier::new(
        crate::edges::notify::NotifyOptions::default(),
        Some(metrics.clone()),
    );
    handle.set_notifier(notifier.clone());
    let app = Arc::new(App {
        handle: handle.clone(),
        feedback: pr::Feedback::new(options.forge_api_url.clone(), options.forge_token.clone()),
        drift: drift::DriftRunner {
            handle: handle.clone(),
            dir: options.state_dir.join("drift"),
            metrics: metrics.clone(),
            notifier,
            silent_after: options.silent_after,
            revision_taken: Arc::new(Notify::new()),
        },
        options: options.clone(),
        metrics,
        deliveries: Mutex::new(Deliveries::default()),
        wake_follower: Notify::new(),
        ready: AtomicBool::new(false),
    });

    let router = app::app(app.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: options.listen,
        source,
    })?;
    tracing::info!("listening on {local}");
    println!("cacheflow serve: listening on http://{local}");

    let follower = tokio::spawn(follow(app.clone(), git_dir.clone(), stop.clone()));
    // Scheduled drift runs (`drift.schedule` of the current revision).
    let drifts = tokio::spawn(app.drift.clone().run(stop.clone()));
    // Nodes heard from after their cluster's revision was taken get it through a
    // rollout of their own; the reconciler looks once a second.
    let ticker = {
        let handle = handle.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                if handle.tick().await.is_err() {
                    return;
                }
            }
        })
    };
    // A reconciler that stopped (its journal could not be written) stops the server:
    // answering without it would hide the failure; the supervisor restarts the process.
    let (dead_tx, dead_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let result = task.await;
        let _ = dead_tx.send(true);
        result
    });
    let mut stop_http = stop.clone();
    let mut dead = dead_rx.clone();
    let server = http::serve(listener, router, async move {
        tokio::select! {
            _ = stop_http.wait_for(|s| *s) => {}
            _ = dead.wait_for(|d| *d) => {}
        }
    });
    server.await;
    if *dead_rx.borrow() {
        drifts.abort();
        let _ = follower.await;
        let _ = ticker.await;
        drop(handle);
        let failure = match task.await {
            Ok(Ok(Err(e))) => e.to_string(),
            _ => "the reconciler stopped".to_owned(),
        };
        tracing::error!("{failure}");
        return Err(ServeError::Source(format!(
            "the reconciler stopped: {failure}"
        )));
    }
    let _ = stop.wait_for(|s| *s).await;
    let _ = drifts.await;
    let _ = follower.await;
    let _ = ticker.await;
    handle.stop().await;
    drop(handle);
    let _ = task.await;
    drop(lock);
    Ok(())
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
async fn follow(app: Shared, git_dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let (agents_stop_tx, agents_stop) = watch::channel(false);
    let mut driven: HashSet<String> = HashSet::new();
    let mut last_seen: Option<String> = None;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = app.wake_follower.notified() => {}
                _ = tokio::time::sleep(app.options.poll_interval) => {}
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
        let good = match app.handle.head().await {
            Ok(h) => h,
            Err(_) => break,
        };
        let step = tokio::task::spawn_blocking(move || check_head(&options, seen, good)).await;
        match step {
            Ok(Ok(Head::Unchanged)) => {}
            Ok(Ok(Head::Refused { head, reason, kind })) => {
                Metrics::count(&app.metrics.revisions, kind);
                last_seen = Some(head.clone());
                let _ = app.handle.refuse(&head, &reason).await;
            }
            Ok(Ok(Head::Valid { head, desired })) => {
                Metrics::count(&app.metrics.revisions, "taken");
                last_seen = Some(head);
                // In-process agents for directly managed nodes not driven yet.
                for c in desired.clusters.values() {
                    for n in c.nodes.iter().filter(|n| n.managed == Managed::Direct) {
                        if driven.insert(n.id.clone()) {
                            app.handle.spawn_direct_agent(
                                n.id.clone(),
                                pipeline::driver_for(c, n, app.options.node_timeout),
                                DirectOptions {
                                    interval: app.options.direct_interval,
                                    timeout: app.options.node_timeout,
                                    first_reading: None,
                                    declared: None,
                                },
                                agents_stop.clone(),
                            );
                        }
                    }
                }
                if app.handle.revision(*desired, None).await.is_err() {
                    break;
                }
                app.drift.revision_taken.notify_one();
            }
            Ok(Err(message)) => {
                Metrics::count(&app.metrics.revisions, "fetch_failed");
                tracing::warn!("{message}; keeping the last good revision");
            }
            Err(e) => tracing::error!("the follower failed: {e}"),
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
    let _ = agents_stop_tx.send(true);
}

enum Head {
    Unchanged,
    Refused {
        head: String,
        reason: String,
        kind: &'static str,
    },
    Valid {
        head: String,
        desired: Box<crate::pure::spec::model::Desired>,
    },
}

/// Fetch and look at the tracked branch's head (blocking: git).
fn check_head(
    options: &ServeOptions,
    seen: Option<String>,
    good: Option<String>,
) -> Result<Head, String> {
    let repo = open_repo(options)
        .map_err(|e| format!("cannot fetch {}: {e}", redact_url(&options.repo)))?;
    let branch = format!("refs/heads/{}", options.branch);
    let head = repo
        .resolve(&branch)
        .map_err(|e| format!("the tracked branch {branch}: {e}"))?;
    if seen.as_deref() == Some(head.as_str()) {
        return Ok(Head::Unchanged);
    }
    if let Some(good) = good.as_deref().filter(|g| *g != head) {
        let r = repo.repository();
        let descends = match (git2::Oid::from_str(&head), git2::Oid::from_str(good)) {
            (Ok(h), Ok(g)) => r.graph_descendant_of(h, g).unwrap_or(false),
            _ => false,
        };
        // A good head that is no longer in the repository, or a head that does not
        // descend from it: history was rewritten.
        if !descends {
            return Ok(Head::Refused {
                reason: format!(
                    "history rewritten: {} does not descend from the last good revision {}",
                    &head[..12],
                    &good[..good.len().min(12)]
                ),
                head,
                kind: "rewritten",
            });
        }
    }
    match pipeline::desired(&repo, &Revision::Rev(head.clone())) {
        Ok(desired) => {
            let policy = crate::edges::trust::policy(&repo, good.as_deref(), &desired);
            match crate::edges::trust::check(repo.repository(), &head, &policy) {
                Ok(signed) => {
                    if let Some(s) = signed {
                        tracing::info!(head = %head, signer = %s.signer, kind = s.kind, "signed head");
                    }
                    Ok(Head::Valid {
                        head,
                        desired: Box::new(desired),
                    })
                }
                Err(reason) => Ok(Head::Refused {
                    head,
                    reason,
                    kind: "untrusted",
                }),
            }
        }
        Err(PipelineError::Invalid { diagnostics, .. }) => {
            let first = diagnostics
                .first()
                .map(|d| d.to_string())
                .unwrap_or_default();
            Ok(Head::Refused {
                reason: format!("invalid ({} error(s)); first: {first}", diagnostics.len()),
                head,
                kind: "invalid",
            })
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Push the journal and the notes to the remote.
fn push_audit(options: &ServeOptions, git_dir: &std::path::Path) -> Result<(), String> {
    let repo = git2::Repository::open(git_dir).map_err(|e| e.to_string())?;
    let mut remote = repo
        .remote_anonymous(&options.repo)
        .map_err(|e| e.to_string())?;
    let mut specs = Vec::new();
    for r in [JOURNAL_REF, NOTES_REF] {
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
