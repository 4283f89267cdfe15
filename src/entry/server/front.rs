//! `cacheflow serve --etcd-endpoints … --shards N`: one replica leading any number of
//! shards. The clusters are hashed to N shards (`pure::shards::ShardMap`); each shard
//! has its own election, fenced journal in etcd, Git journal ref and reconciler, and
//! a replica runs one term loop per shard behind one front door:
//!
//! ```text
//! front (the socket, for the process's life)
//!   /api/v1/nodes/{id}/report ─► the node's shard (its cluster's, in the head the
//!                                 mirror holds; an unknown node: shard 0)
//!   /shards/{s}/…             ─► shard s, the prefix taken off
//!   /hooks/…                  ─► the lowest shard led here; a push it takes wakes every
//!                                 shard led here, and the others through <prefix>/wake
//!   anything else             ─► shard 0 (its console, API and metrics)
//!   a shard led here: its router, in process; led elsewhere: 307 to its leader;
//!   no leader yet: 503 with Retry-After
//! per shard s: wait until it may campaign ─► win <prefix>/shard/s/leader ─► takeover
//!              (replica.rs) ─► lead (mod.rs) with its router in the shard's slot ─►
//!              deposed, or handed to its preferred replica ─► wait again
//! ```
//!
//! Who campaigns when: the live replicas (their membership keys) give each shard a
//! preferred leader (`pure::shards::Leaders`, bounded-load consistent hashing). The
//! preferred replica campaigns for a vacant shard at once; any other only after the
//! shard stayed vacant for a lease TTL (its preferred replica is gone). A replica that
//! leads a shard whose preferred replica is live and is another hands it over: it ends
//! the term (its last entry written) and revokes its lease, so shards return to their
//! place after a restart. The etcd election (and its fencing token) stays the only
//! authority on who leads; the preference only orders the campaigns.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use tower::ServiceExt;

use super::replica::{self, takeover, ReplicaError, ReplicaOptions};
use super::{lead, Door, ServeError, ServeOptions, Shared, Term};
use crate::edges::etcd::election::{leader_key, Election};
use crate::edges::etcd::group::GroupCommit;
use crate::edges::etcd::{members, Compare, EtcdClient, Op};
use crate::flow::pipeline::intake;
use crate::flow::runtime::Replica;
use crate::pure::shards::{Balance, Leaders, ShardMap};

/// How often the preferred replica of a shard led elsewhere reads its leader key.
const QUICK: Duration = Duration::from_millis(250);

/// Where a shard's term puts its router while it leads (empty otherwise).
#[derive(Default)]
pub(super) struct Slot {
    open: RwLock<Option<(Router, Shared)>>,
}

impl Slot {
    /// The term leads: requests for its shard go to `router`.
    pub(super) fn open(&self, router: Router, app: Shared) {
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = Some((router, app));
    }

    /// The term is over: its shard's requests go to whoever leads it next.
    pub(super) fn close(&self) {
        *self.open.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn get(&self) -> Option<(Router, Shared)> {
        self.open.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What every shard's term and the front share: the slots, who leads each shard, who
/// should, and which shard each node belongs to.
struct Front {
    me: String,
    own_url: String,
    ttl: Duration,
    slots: Vec<Slot>,
    view: RwLock<View>,
    /// The journal writes of the shards led here, grouped into shared etcd transactions.
    group: Option<GroupCommit>,
}

/// Who leads a shard, as the watcher last read it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leader {
    /// etcd could not be read: nothing is known to be vacant (no campaign), and a shard
    /// led here ends its term by itself when its lease runs out.
    Unknown,
    Vacant,
    /// The leader's advertised URL.
    At(String),
}

/// What the watcher last read from etcd and the mirror.
#[derive(Default)]
struct View {
    /// Per shard: who leads it, and since when it has had no leader.
    leaders: Vec<Leader>,
    vacant_since: Vec<Option<Instant>>,
    /// Per shard: the live replica that should lead it.
    preferred: Vec<Option<String>>,
    /// Node id → shard, from the head the mirror holds.
    nodes: BTreeMap<String, u32>,
    head: Option<String>,
}

impl Front {
    fn shards(&self) -> u32 {
        self.slots.len() as u32
    }

    /// May this replica campaign for `shard` now? At once when it is the preferred
    /// leader (or none is known), else once the shard has been vacant for a TTL.
    fn may_campaign(&self, shard: u32) -> bool {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        let s = shard as usize;
        if view.leaders.get(s) != Some(&Leader::Vacant) {
            return false;
        }
        match view.preferred.get(s).cloned().flatten() {
            Some(p) if p != self.me => view
                .vacant_since
                .get(s)
                .copied()
                .flatten()
                .is_some_and(|t| t.elapsed() >= self.ttl),
            _ => true,
        }
    }

    /// Is this replica the one that should lead `shard` (or is none known yet)?
    fn preferred_here(&self, shard: u32) -> bool {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.preferred
            .get(shard as usize)
            .cloned()
            .flatten()
            .is_some_and(|p| p == self.me)
    }

    /// The live replica that should lead `shard`, when it is another than this one.
    fn preferred_elsewhere(&self, shard: u32) -> Option<String> {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.preferred
            .get(shard as usize)
            .cloned()
            .flatten()
            .filter(|p| *p != self.me)
    }

    fn leader_url(&self, shard: u32) -> Option<String> {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        match view.leaders.get(shard as usize) {
            Some(Leader::At(url)) => Some(url.clone()),
            _ => None,
        }
    }

    fn shard_of_node(&self, id: &str) -> u32 {
        let view = self.view.read().unwrap_or_else(|p| p.into_inner());
        view.nodes.get(id).copied().unwrap_or(0)
    }

    /// The shards led here, ascending.
    fn led(&self) -> Vec<u32> {
        (0..self.shards())
            .filter(|s| self.slots[*s as usize].get().is_some())
            .collect()
    }
}

/// Run the replica's shards until `stop`.
pub(super) async fn run(
    options: &ServeOptions,
    replication: &ReplicaOptions,
    git_dir: &std::path::Path,
    listener: &std::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let client = Arc::new(EtcdClient::new(&replication.etcd).map_err(ReplicaError::from)?);
    agree_on_shards(&client, replication).await?;
    // Each head is validated once for all the shards led here.
    intake::share_validations();
    let front = Arc::new(Front {
        me: replication.replica_id.clone(),
        own_url: replication.advertise_url.clone(),
        ttl: replication.lease_ttl,
        slots: (0..replication.shards).map(|_| Slot::default()).collect(),
        view: RwLock::new(View::default()),
        group: Some(GroupCommit::start(client.clone())),
    });
    // The shards' own stop: the process's, or one shard's reconciler stopping (its
    // journal cannot be written), which stops the whole process as in a single serve.
    let (all_tx, all) = watch::channel(false);
    let all_tx = Arc::new(all_tx);
    {
        let (mut stop, all_tx) = (stop.clone(), all_tx.clone());
        tokio::spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            all_tx.send_replace(true);
        });
    }
    let membership = replica::keep_membership(&client, replication, all.clone());
    let tcp = super::tokio_listener(listener, options.listen)?;
    let mut http_stop = all.clone();
    let http = tokio::spawn(super::http::serve(
        tcp,
        Router::new().fallback(dispatch).with_state(FrontState {
            front: front.clone(),
            client: client.clone(),
            wake: wake_key(&replication.prefix),
        }),
        options.tls.clone(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));
    let watcher = tokio::spawn(watch_fleet(
        front.clone(),
        client.clone(),
        options.clone(),
        replication.clone(),
        all.clone(),
    ));
    let mut terms = Vec::new();
    for shard in 0..replication.shards {
        let (options, replication) = (options.clone(), replication.for_shard(shard));
        let (client, front, git_dir, stop, all_tx) = (
            client.clone(),
            front.clone(),
            git_dir.to_path_buf(),
            all.clone(),
            all_tx.clone(),
        );
        terms.push(tokio::spawn(async move {
            let ended = shard_terms(options, replication, client, front, git_dir, stop).await;
            if ended.is_err() {
                all_tx.send_replace(true);
            }
            ended
        }));
    }
    let mut result = Ok(());
    for t in terms {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(ServeError::Source(format!("a shard's term failed: {e}"))),
        }
    }
    watcher.abort();
    let _ = http.await;
    let _ = membership.await;
    result
}

/// Every replica of a prefix must hash the clusters to the same number of shards: the
/// first one writes `<prefix>/shards`, the others must agree with it.
async fn agree_on_shards(
    client: &EtcdClient,
    replication: &ReplicaOptions,
) -> Result<(), ServeError> {
    let key = format!("{}/shards", replication.prefix.trim_end_matches('/'));
    let wanted = replication.shards.to_string();
    let outcome = client
        .txn(
            &[Compare::CreateRevision {
                key: key.clone(),
                revision: 0,
            }],
            &[Op::Put {
                key: key.clone(),
                value: wanted.clone().into_bytes(),
                lease: 0,
            }],
        )
        .await
        .map_err(ReplicaError::from)?;
    if outcome.succeeded {
        return Ok(());
    }
    let found = client
        .get(&key)
        .await
        .map_err(ReplicaError::from)?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default();
    if found == wanted {
        Ok(())
    } else {
        Err(ServeError::Source(format!(
            "--shards {wanted}: the replicas under {} use {found} shards ({key}); every replica must be given the same number (changing it means stopping them all and deleting that key)",
            replication.prefix
        )))
    }
}

fn wake_key(prefix: &str) -> String {
    format!("{}/wake", prefix.trim_end_matches('/'))
}

/// One shard's terms: wait until it may campaign, win, take over, lead, and again.
async fn shard_terms(
    options: ServeOptions,
    replication: ReplicaOptions,
    client: Arc<EtcdClient>,
    front: Arc<Front>,
    git_dir: std::path::PathBuf,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let shard = replication.shard;
    let options = ServeOptions {
        replication: Some(replication.clone()),
        ..options
    };
    let election = Election {
        client: client.clone(),
        key: leader_key(&replication.prefix, shard),
        ttl: replication.lease_ttl,
        value: replication.advertise_url.clone(),
    };
    let poll =
        (replication.lease_ttl / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
    // A shard handed over that no other replica took (its preferred one cannot lead)
    // comes back here after a TTL; it is not handed over again for ten TTLs, so it
    // does not bounce.
    let mut handed: Option<Instant> = None;
    loop {
        let leadership = loop {
            if *stop.borrow() {
                return Ok(());
            }
            // Another replica took the shard since it was handed over: the hand-over
            // held, and the next one may come as soon as it is due.
            if front.leader_url(shard).is_some_and(|u| u != front.own_url) {
                handed = None;
            }
            // The preferred replica reads the leader key itself, four times a second, so
            // a shard handed over to it is taken within a fraction of a second; any
            // other campaigns on the front's view (read every poll).
            let mine = front.preferred_here(shard);
            let vacant = if mine {
                matches!(client.get(&election.key).await, Ok(None))
            } else {
                front.may_campaign(shard)
            };
            if vacant {
                match election.try_once().await {
                    Ok(Some(l)) => break l,
                    Ok(None) => {}
                    Err(e) => tracing::warn!("cannot campaign for shard {shard}: {e}"),
                }
            }
            let wait = if mine { poll.min(QUICK) } else { poll };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        };
        let leadership = Arc::new(leadership);
        tracing::info!(
            event = "leading",
            shard,
            token = leadership.token,
            "this replica leads shard {shard} (fencing token {})",
            leadership.token
        );
        let journal = match takeover(
            &options,
            &replication,
            &client,
            front.group.clone(),
            &git_dir,
            &leadership,
        )
        .await
        {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot take over shard {shard}: {e}; standing by again");
                leadership.resign().await;
                continue;
            }
        };
        // The term ends on `stop`, or when the shard's preferred replica is live and
        // another than this one (hand-over).
        let (term_tx, term_stop) = watch::channel(false);
        let hand_over = {
            let (front, mut stop) = (front.clone(), stop.clone());
            let may_hand = handed.is_none_or(|t| t.elapsed() >= replication.lease_ttl * 10);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(poll) => {}
                        _ = stop.wait_for(|s| *s) => { let _ = term_tx.send(true); return false; }
                    }
                    if may_hand {
                        if let Some(to) = front.preferred_elsewhere(shard) {
                            tracing::info!(
                                event = "handing_over",
                                shard,
                                "shard {shard} belongs to replica {to}, live again: handing it over"
                            );
                            let _ = term_tx.send(true);
                            return true;
                        }
                    }
                }
            })
        };
        let replica = Replica {
            journal,
            leadership: leadership.clone(),
        };
        let slot = &front.slots[shard as usize];
        let term = lead(
            &options,
            &git_dir,
            None,
            Door::Slot(slot),
            term_stop,
            Some(replica),
        )
        .await;
        slot.close();
        hand_over.abort();
        let handed_over = !*stop.borrow() && matches!(term, Ok(Term::Stopped));
        match term? {
            Term::Stopped if *stop.borrow() => return Ok(()),
            Term::Stopped if handed_over => handed = Some(Instant::now()),
            Term::Stopped | Term::Deposed => {}
        }
    }
}

/// Every poll: who leads each shard, the live replicas and so who should, the wake
/// key; every poll interval (and on a wake), the mirror's head and its nodes' shards.
async fn watch_fleet(
    front: Arc<Front>,
    client: Arc<EtcdClient>,
    options: ServeOptions,
    replication: ReplicaOptions,
    mut stop: watch::Receiver<bool>,
) {
    let every =
        (replication.lease_ttl / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
    let shards = replication.shards;
    let wake = wake_key(&replication.prefix);
    let mut woken: Option<i64> = None;
    let mut placed: Option<Instant> = None;
    loop {
        let mut leaders = Vec::with_capacity(shards as usize);
        let mut read = true;
        for s in 0..shards {
            match client.get(&leader_key(&replication.prefix, s)).await {
                Ok(kv) => leaders.push(match kv {
                    Some(kv) => Leader::At(String::from_utf8_lossy(&kv.value).into_owned()),
                    None => Leader::Vacant,
                }),
                Err(_) => {
                    read = false;
                    break;
                }
            }
        }
        let live = members::live(&client, &replication.prefix).await.ok();
        if read {
            let mut view = front.view.write().unwrap_or_else(|p| p.into_inner());
            view.vacant_since.resize(shards as usize, None);
            for (s, l) in leaders.iter().enumerate() {
                view.vacant_since[s] = match l {
                    Leader::Vacant => view.vacant_since[s].or(Some(Instant::now())),
                    _ => None,
                };
            }
            view.leaders = leaders;
            if let Some(live) = &live {
                let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
                view.preferred = match Leaders::place(shards, &ids, &Balance::default()) {
                    Ok(place) => (0..shards)
                        .map(|s| place.leader_of(s).map(str::to_owned))
                        .collect(),
                    Err(_) => vec![None; shards as usize],
                };
            }
        } else {
            let mut view = front.view.write().unwrap_or_else(|p| p.into_inner());
            view.leaders = vec![Leader::Unknown; shards as usize];
            view.vacant_since = vec![None; shards as usize];
        }
        // A push taken by any replica: the shards led here fetch at once.
        if let Ok(Some(kv)) = client.get(&wake).await {
            if woken.is_some_and(|w| w != kv.mod_revision) {
                for s in front.led() {
                    if let Some((_, app)) = front.slots[s as usize].get() {
                        app.wake_follower.notify_one();
                    }
                }
                placed = None;
            }
            woken = Some(kv.mod_revision);
        } else if woken.is_none() {
            woken = Some(0);
        }
        if placed.is_none_or(|t| t.elapsed() >= options.poll_interval) {
            placed = Some(Instant::now());
            place_nodes(&front, &options, shards).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Read the head the mirror holds (fetching it first when no shard is led here: the
/// leaders' followers fetch otherwise) and map each of its nodes to its shard.
async fn place_nodes(front: &Front, options: &ServeOptions, shards: u32) {
    let fetch = front.led().is_empty();
    let known = front
        .view
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .head
        .clone();
    let opts = options.clone();
    let placed = tokio::task::spawn_blocking(move || -> Option<(String, BTreeMap<String, u32>)> {
        let repo = if fetch {
            super::fetch_repo(&opts)
                .ok()
                .or_else(|| super::cached_repo(&opts))?
        } else {
            super::cached_repo(&opts)?
        };
        let head = repo.resolve(&format!("refs/heads/{}", opts.branch)).ok()?;
        if known.as_deref() == Some(head.as_str()) {
            return None;
        }
        let desired = intake::validated(&repo, &head).ok()?.ok()?;
        let map = ShardMap::assign(desired.clusters.keys(), shards, &Balance::default()).ok()?;
        let mut nodes = BTreeMap::new();
        for (name, cluster) in &desired.clusters {
            if let Some(s) = map.shard_of(name) {
                for n in &cluster.nodes {
                    nodes.insert(n.id.clone(), s);
                }
            }
        }
        Some((head, nodes))
    })
    .await
    .ok()
    .flatten();
    if let Some((head, nodes)) = placed {
        let mut view = front.view.write().unwrap_or_else(|p| p.into_inner());
        view.head = Some(head);
        view.nodes = nodes;
    }
}

/// The front's state: the shards, etcd for the wake key.
#[derive(Clone)]
struct FrontState {
    front: Arc<Front>,
    client: Arc<EtcdClient>,
    wake: String,
}

/// Every request: find its shard, answer in process when the shard is led here, else
/// send it to the shard's leader.
async fn dispatch(State(door): State<FrontState>, request: Request) -> Response {
    let front = &door.front;
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/healthz" => return super::api::healthz().await.into_response(),
        "/readyz" => return readyz(front),
        _ => {}
    }
    if let Some((shard, rest)) = shard_prefix(&path, front.shards()) {
        let mut request = request;
        let query = request
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        if let Ok(uri) = format!("{rest}{query}").parse::<Uri>() {
            *request.uri_mut() = uri;
        }
        return to_shard(front, shard, request, &path).await;
    }
    if let Some(id) = path
        .strip_prefix("/api/v1/nodes/")
        .and_then(|p| p.strip_suffix("/report"))
    {
        let shard = front.shard_of_node(id);
        return to_shard(front, shard, request, &path).await;
    }
    if path.starts_with("/hooks/") {
        if let Some(first) = front.led().first().copied() {
            let answer = to_shard(front, first, request, &path).await;
            if answer.status().is_success() {
                wake_all(&door, first).await;
            }
            return answer;
        }
    }
    to_shard(front, 0, request, &path).await
}

/// A push taken by shard `taken`'s router: wake the other shards led here, and the
/// other replicas through the wake key.
async fn wake_all(door: &FrontState, taken: u32) {
    for s in door.front.led().into_iter().filter(|s| *s != taken) {
        if let Some((_, app)) = door.front.slots[s as usize].get() {
            app.wake_follower.notify_one();
        }
    }
    let put = door
        .client
        .txn(
            &[],
            &[Op::Put {
                key: door.wake.clone(),
                value: Vec::new(),
                lease: 0,
            }],
        )
        .await;
    if let Err(e) = put {
        tracing::warn!("cannot tell the other replicas of the push: {e}");
    }
}

/// `/shards/{s}/rest` → (s, "/rest").
fn shard_prefix(path: &str, shards: u32) -> Option<(u32, String)> {
    let rest = path.strip_prefix("/shards/")?;
    let (n, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let shard: u32 = n.parse().ok().filter(|s| *s < shards)?;
    Some((shard, format!("/{rest}")))
}

/// Answer in process when `shard` is led here; else 307 to its leader (the original
/// path: the leader's front routes it the same way), or 503 while it has none.
async fn to_shard(front: &Front, shard: u32, request: Request, path: &str) -> Response {
    if let Some((router, _)) = front.slots[shard as usize].get() {
        let request = request.map(Body::new);
        return match router.oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
    }
    match front.leader_url(shard).filter(|u| *u != front.own_url) {
        Some(url) => {
            let query = request
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let location = format!("{}{path}{query}", url.trim_end_matches('/'));
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, location)],
                format!("shard {shard}'s leader answers this\n"),
            )
                .into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("shard {shard} has no leader yet\n"),
        )
            .into_response(),
    }
}

/// Ready (agent traffic welcome) while this replica leads at least one shard.
fn readyz(front: &Front) -> Response {
    let led = front.led();
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    if led.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: standby replica; leads none of the {} shards\n",
                front.shards()
            ),
        )
            .into_response()
    } else {
        (
            StatusCode::OK,
            format!(
                "ready: leads shard(s) {} of {}\n",
                list(&led),
                front.shards()
            ),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn front(leaders: Vec<Option<&str>>, vacant_for: Duration, preferred: &[&str]) -> Front {
        let since = Instant::now().checked_sub(vacant_for);
        Front {
            me: "me".into(),
            own_url: "http://me".into(),
            ttl: Duration::from_secs(3),
            slots: leaders.iter().map(|_| Slot::default()).collect(),
            view: RwLock::new(View {
                vacant_since: leaders
                    .iter()
                    .map(|l| l.is_none().then_some(since).flatten())
                    .collect(),
                leaders: leaders
                    .iter()
                    .map(|l| match l {
                        Some(url) => Leader::At(url.to_string()),
                        None => Leader::Vacant,
                    })
                    .collect(),
                preferred: preferred.iter().map(|p| Some(p.to_string())).collect(),
                ..View::default()
            }),
            group: None,
        }
    }

    #[test]
    fn the_preferred_replica_campaigns_for_a_vacant_shard_at_once_the_others_after_a_ttl() {
        let f = front(vec![None, None], Duration::ZERO, &["me", "other"]);
        assert!(f.may_campaign(0));
        assert!(!f.may_campaign(1), "another's shard, vacant only just now");
        let f = front(vec![None, None], Duration::from_secs(4), &["me", "other"]);
        assert!(
            f.may_campaign(1),
            "another's shard, vacant for more than a TTL"
        );
        // A shard with a leader: nobody campaigns; an unread view: neither.
        let f = front(
            vec![Some("http://other"), None],
            Duration::from_secs(9),
            &["me", "me"],
        );
        assert!(!f.may_campaign(0));
        assert!(f.may_campaign(1));
        let f = front(vec![], Duration::ZERO, &[]);
        assert!(!f.may_campaign(0));
    }

    #[test]
    fn a_shard_is_handed_over_only_to_another_live_preferred_replica() {
        let f = front(
            vec![Some("http://me"), Some("http://me")],
            Duration::ZERO,
            &["me", "other"],
        );
        assert_eq!(f.preferred_elsewhere(0), None);
        assert_eq!(f.preferred_elsewhere(1).as_deref(), Some("other"));
    }

    #[test]
    fn a_shard_prefix_names_a_shard_below_the_count_and_keeps_the_rest_of_the_path() {
        assert_eq!(
            shard_prefix("/shards/1/api/v1/rollouts", 2),
            Some((1, "/api/v1/rollouts".to_owned()))
        );
        assert_eq!(shard_prefix("/shards/0", 2), Some((0, "/".to_owned())));
        assert_eq!(shard_prefix("/shards/2/metrics", 2), None);
        assert_eq!(shard_prefix("/shards/x/metrics", 2), None);
        assert_eq!(shard_prefix("/api/v1/rollouts", 2), None);
    }
}
