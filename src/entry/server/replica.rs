//! `cacheflow serve --etcd-endpoints`: one of several replicas. Each stands by until it
//! wins its shard's election on etcd, then leads until it loses it, then stands by again:
//!
//! ```text
//! standby: campaign on <prefix>/shard/<i>/leader (a lease of --lease-ttl) ─► keep the
//!          mirror fetched ─► answer agents with 307 to the leader's --advertise-url,
//!          /readyz 503 (no agent traffic here)
//! takeover: fetch the remote's journal and notes ─► read the journal in etcd ─► one Git
//!          entry holding etcd's state and the entries the remote lacked
//! lead:    the reconciler, its entries written to etcd under the fence before Git and
//!          before any answer; the Git journal pushed to the remote in batches, the
//!          entries the remote holds pruned from etcd
//! ```
//!
//! A leader that loses its lease (paused past it, cut off from etcd) answers nothing
//! from then on, its entries are refused by the fence, and it goes back to standing by.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use super::{lead, Door, ServeError, ServeOptions, Term};
use crate::edges::audit::{
    entry_number, files_version, state_from_files, Journal, JournalRefs, Prepared, ENTRY_TRAILER,
};
use crate::edges::etcd::election::{leader_key, leader_url, shard_key, Election, Leadership};
use crate::edges::etcd::group::GroupCommit;
use crate::edges::etcd::journal::{Fence, FencedJournal};
use crate::edges::etcd::members;
use crate::edges::etcd::{EtcdClient, EtcdOptions};
use crate::edges::redact::redact_url;
use crate::flow::runtime::Replica;
use crate::pure::reconciler::state::STATE_VERSION;

/// How a replica finds etcd and the others.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    pub etcd: EtcdOptions,
    /// The prefix of every key (`--etcd-prefix`).
    pub prefix: String,
    /// The leader lease's time to live (`--lease-ttl`).
    pub lease_ttl: Duration,
    /// Where the other replicas send agents while this one leads (`--advertise-url`).
    pub advertise_url: String,
    /// The shard this term leads or campaigns for (0 when `shards` is 1).
    pub shard: u32,
    /// `--shards N`: the clusters are hashed to `shards` shards, each with its own
    /// election, journal and reconciler (front.rs); 1: one election for the fleet.
    pub shards: u32,
    /// This replica's id among the live ones (`--replica-id`, the hostname by default):
    /// its membership key `<prefix>/replicas/<id>`.
    pub replica_id: String,
}

impl ReplicaOptions {
    /// The same replica, for shard `shard`'s term.
    pub fn for_shard(&self, shard: u32) -> ReplicaOptions {
        ReplicaOptions {
            shard,
            ..self.clone()
        }
    }

    /// Where this term's reconciler keeps its Git journal and notes.
    pub fn refs(&self) -> JournalRefs {
        JournalRefs::shard(self.shard, self.shards)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Etcd(#[from] crate::edges::etcd::EtcdError),
    #[error(transparent)]
    Journal(#[from] crate::edges::etcd::journal::JournalError),
    #[error(transparent)]
    Audit(#[from] crate::edges::audit::AuditError),
    #[error("{0}")]
    Git(String),
}

impl From<ReplicaError> for ServeError {
    fn from(e: ReplicaError) -> ServeError {
        ServeError::Source(e.to_string())
    }
}

/// This replica's membership key `<prefix>/replicas/<id>`, kept for as long as the
/// process runs (revoked once `stop` turns true).
pub(super) fn keep_membership(
    client: &Arc<EtcdClient>,
    replication: &ReplicaOptions,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(members::keep_membership(
        client.clone(),
        members::member_key(&replication.prefix, &replication.replica_id),
        replication.advertise_url.clone(),
        replication.lease_ttl,
        stop,
    ))
}

/// Keep this replica's membership key, and stand by, lead, stand by again, until `stop`.
pub(super) async fn run(
    options: &ServeOptions,
    replication: &ReplicaOptions,
    git_dir: &std::path::Path,
    listener: &std::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let client = Arc::new(EtcdClient::new(&replication.etcd).map_err(ReplicaError::from)?);
    let election = Election {
        client: client.clone(),
        key: leader_key(&replication.prefix, replication.shard),
        ttl: replication.lease_ttl,
        value: replication.advertise_url.clone(),
    };
    let membership = keep_membership(&client, replication, stop.clone());
    let result = terms(
        options,
        replication,
        &client,
        &election,
        git_dir,
        listener,
        stop,
    )
    .await;
    if result.is_err() {
        membership.abort();
    }
    let _ = membership.await;
    result
}

/// Stand by, lead, stand by again, until `stop`.
async fn terms(
    options: &ServeOptions,
    replication: &ReplicaOptions,
    client: &Arc<EtcdClient>,
    election: &Election,
    git_dir: &std::path::Path,
    listener: &std::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    loop {
        let Some(leadership) = standby(options, election, listener, &mut stop).await? else {
            return Ok(());
        };
        let leadership = Arc::new(leadership);
        tracing::info!(
            event = "leading",
            shard = replication.shard,
            token = leadership.token,
            "this replica leads shard {} (fencing token {})",
            replication.shard,
            leadership.token
        );
        let journal = match takeover(options, replication, client, None, git_dir, &leadership).await
        {
            Ok(j) => j,
            Err(e) => {
                // Nothing was answered yet: give the shard up and campaign again.
                tracing::error!("cannot take over: {e}; standing by again");
                leadership.resign().await;
                continue;
            }
        };
        let replica = Replica {
            journal,
            leadership: leadership.clone(),
        };
        match lead(
            options,
            git_dir,
            None,
            Door::Socket(listener),
            stop.clone(),
            Some(replica),
        )
        .await?
        {
            Term::Stopped => return Ok(()),
            Term::Deposed => continue,
        }
    }
}

/// What a standby answers with: the leader's URL as last read from etcd.
#[derive(Clone)]
struct Standby {
    leader: watch::Receiver<Option<String>>,
    own: String,
}

/// Campaign while answering as a standby and keeping the mirror fetched; the
/// leadership once won (`None`: `stop` came first).
async fn standby(
    options: &ServeOptions,
    election: &Election,
    listener: &std::net::TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<Leadership>, ServeError> {
    let (leader_tx, leader) = watch::channel(None);
    let (done_tx, done) = watch::channel(false);
    let router = Router::new()
        .route("/healthz", get(super::api::healthz))
        .route("/readyz", get(standby_readyz))
        .fallback(to_leader)
        .with_state(Standby {
            leader,
            own: election.value.clone(),
        });
    let tcp = super::tokio_listener(listener, options.listen)?;
    let mut http_done = done.clone();
    let server = tokio::spawn(super::http::serve(
        tcp,
        router,
        options.tls.clone(),
        async move {
            let _ = http_done.wait_for(|d| *d).await;
        },
    ));
    let watcher = tokio::spawn(watch_leader(
        election.clone(),
        options.clone(),
        leader_tx,
        done.clone(),
    ));
    let won = election.campaign(stop).await;
    let _ = done_tx.send(true);
    let _ = watcher.await;
    let _ = server.await;
    Ok(won)
}

/// While standing by: who leads (for the redirects), and the mirror fetched every poll
/// interval so a takeover starts from a recent revision.
async fn watch_leader(
    election: Election,
    options: ServeOptions,
    leader: watch::Sender<Option<String>>,
    mut done: watch::Receiver<bool>,
) {
    let every = (election.ttl / 5).clamp(Duration::from_millis(200), Duration::from_secs(2));
    let mut fetched = tokio::time::Instant::now();
    loop {
        let url = leader_url(&election.client, &election.key)
            .await
            .ok()
            .flatten();
        leader.send_replace(url);
        if fetched.elapsed() >= options.poll_interval {
            fetched = tokio::time::Instant::now();
            let opts = options.clone();
            let _ = tokio::task::spawn_blocking(move || super::fetch_repo(&opts).map(|_| ())).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = done.wait_for(|d| *d) => return,
        }
    }
}

/// A standby is alive but takes no agent traffic: `/readyz` says 503 and who leads.
async fn standby_readyz(State(s): State<Standby>) -> Response {
    let leader = s.leader.borrow().clone();
    let body = match leader {
        Some(url) if url != s.own => format!("not ready: standby replica; the leader is {url}\n"),
        _ => "not ready: standby replica; no leader elected\n".to_owned(),
    };
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// Every other request goes to the leader: 307 keeps the method and the body, so an
/// agent's report reaches the leader whichever replica it called.
async fn to_leader(State(s): State<Standby>, request: Request) -> Response {
    let leader = s.leader.borrow().clone();
    match leader {
        Some(url) if url != s.own => {
            let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let location = format!("{}{path}", url.trim_end_matches('/'));
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                "the leader answers this\n",
            )
                .into_response()
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "no leader elected yet\n",
        )
            .into_response(),
    }
}

/// Fetch the remote's journal and notes of this term's shard into the mirror (forced: a
/// replica that led before and did not push everything has those entries in etcd,
/// replayed below). Only this shard's refs: the other shards this replica leads have
/// entries the remote does not hold yet, and a fetch of theirs would move their
/// journals under their reconcilers.
fn fetch_journal(options: &ServeOptions, git_dir: &std::path::Path) -> Result<(), String> {
    if !crate::edges::source::is_url(&options.repo) {
        return Ok(());
    }
    let refs = super::journal_refs(options);
    let _one = super::MIRROR.lock().unwrap_or_else(|p| p.into_inner());
    let repo = git2::Repository::open(git_dir).map_err(|e| e.to_string())?;
    let mut remote = repo
        .remote_anonymous(&options.repo)
        .map_err(|e| e.to_string())?;
    // A ref the remote does not have yet (a shard's first leader) is left out.
    remote
        .connect(git2::Direction::Fetch)
        .map_err(|e| redact_url(e.message()))?;
    let specs: Vec<String> = remote
        .list()
        .map_err(|e| redact_url(e.message()))?
        .iter()
        .map(|head| head.name())
        .filter(|name| *name == refs.journal || *name == refs.notes)
        .map(|name| format!("+{name}:{name}"))
        .collect();
    let _ = remote.disconnect();
    if specs.is_empty() {
        return Ok(());
    }
    remote
        .fetch(&specs, None, None)
        .map_err(|e| redact_url(e.message()))
}

/// Make this replica's Git journal the durable state: the remote's journal, then one
/// entry holding the state in etcd and the messages of the entries the remote lacks.
/// The first leader of a shard with nothing in etcd starts etcd from Git's last entry.
pub(super) async fn takeover(
    options: &ServeOptions,
    replication: &ReplicaOptions,
    client: &Arc<EtcdClient>,
    group: Option<GroupCommit>,
    git_dir: &std::path::Path,
    leadership: &Arc<Leadership>,
) -> Result<FencedJournal, ReplicaError> {
    {
        let (opts, dir) = (options.clone(), git_dir.to_path_buf());
        let fetched = tokio::task::spawn_blocking(move || fetch_journal(&opts, &dir))
            .await
            .map_err(|e| ReplicaError::Git(e.to_string()))?;
        if let Err(e) = fetched {
            tracing::warn!("cannot fetch the remote's journal: {e}; resuming from etcd");
        }
    }
    let shard = shard_key(&replication.prefix, replication.shard);
    let fence = Fence::new(
        client.clone(),
        shard.clone(),
        leadership.key.clone(),
        leadership.token,
    )
    .grouped(group);
    let stored = FencedJournal::load(client, &shard).await?;
    let mut git = Journal::open_at(git_dir, replication.refs())?;
    let git_state = git.load()?;
    let who = &replication.advertise_url;
    let token = leadership.token;
    match stored {
        None => {
            let mut state = git_state.unwrap_or_default();
            state.version = STATE_VERSION;
            let mut journal = FencedJournal::new(fence, None);
            let line = format!(
                "replica {who} leads shard {} (fencing token {token}): the journal in etcd starts from Git's last entry",
                replication.shard
            );
            let mut entry = Prepared::full(&line, &state);
            let seq = journal
                .write(entry.message(), entry.top(), entry.clusters())
                .await?;
            entry.add_trailer(&format!("{ENTRY_TRAILER}{seq}"));
            write_git(git, entry).await?;
            Ok(journal)
        }
        Some(stored) => {
            let mut state =
                state_from_files(&format!("etcd {shard}"), &stored.top, &stored.clusters)?;
            // The takeover's entry is written in this version's layout.
            state.version = STATE_VERSION;
            let in_git = git
                .head_message()
                .as_deref()
                .and_then(entry_number)
                .unwrap_or(0);
            let mut message = format!(
                "replica {who} leads shard {} (fencing token {token}): resumed from etcd entry {}",
                replication.shard, stored.seq
            );
            for (n, text) in stored.log.iter().filter(|(n, _)| *n > in_git) {
                tracing::info!("replaying etcd entry {n} into the Git journal");
                message.push('\n');
                message.push_str(text.trim_end());
            }
            let mut entry = Prepared::full(&message, &state);
            let mut journal = FencedJournal::new(fence, Some(&stored));
            // Written by an older version, in an older layout: the takeover's entry
            // goes to etcd too, so that its files there are this version's (the next
            // entries name them unchanged).
            let seq = match files_version(&stored.top) < STATE_VERSION {
                true => {
                    journal
                        .write(entry.message(), entry.top(), entry.clusters())
                        .await?
                }
                false => stored.seq,
            };
            entry.add_trailer(&format!("{ENTRY_TRAILER}{seq}"));
            write_git(git, entry).await?;
            Ok(journal)
        }
    }
}

async fn write_git(mut git: Journal, entry: Prepared) -> Result<(), ReplicaError> {
    tokio::task::spawn_blocking(move || git.write(&entry).map(|_| ()))
        .await
        .map_err(|e| ReplicaError::Git(e.to_string()))??;
    Ok(())
}

/// The leader's Git journal and notes pushed to the remote every couple of seconds when
/// either moved; then the entries the remote holds are pruned from etcd (fenced: a
/// deposed leader prunes nothing).
pub(super) async fn push_audit_log(
    options: ServeOptions,
    git_dir: std::path::PathBuf,
    fence: Fence,
    mut stop: watch::Receiver<bool>,
) {
    // The journal's head and the notes' head last pushed: notes are written after
    // their entry, so a push is due when either moved.
    let mut pushed: (Option<git2::Oid>, Option<git2::Oid>) = (None, None);
    let refs = super::journal_refs(&options);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (opts, dir) = (options.clone(), git_dir.clone());
        let last = pushed;
        let refs = refs.clone();
        type Pushed = ((Option<git2::Oid>, Option<git2::Oid>), Option<u64>);
        let outcome = tokio::task::spawn_blocking(move || -> Result<Option<Pushed>, String> {
            let repo = git2::Repository::open(&dir).map_err(|e| e.to_string())?;
            let Ok(head) = repo.refname_to_id(&refs.journal) else {
                return Ok(None);
            };
            let heads = (Some(head), repo.refname_to_id(&refs.notes).ok());
            if heads == last {
                return Ok(None);
            }
            super::push_audit(&opts, &dir)?;
            let seq = repo
                .find_commit(head)
                .ok()
                .and_then(|c| c.message().ok().and_then(entry_number));
            Ok(Some((heads, seq)))
        })
        .await;
        match outcome {
            Ok(Ok(Some((heads, seq)))) => {
                pushed = heads;
                if let Some(seq) = seq {
                    if let Err(e) = fence.prune(seq).await {
                        tracing::warn!("cannot prune the journal in etcd: {e}");
                    }
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!("cannot push the audit log: {e}"),
            Err(e) => tracing::warn!("cannot push the audit log: {e}"),
        }
    }
}
