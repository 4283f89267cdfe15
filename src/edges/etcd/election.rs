//! One shard's leader election: a key `<prefix>/shard/<i>/leader` created only when it
//! does not exist (a transaction comparing its create revision with 0), bound to a
//! lease this replica keeps alive every TTL/3. The key's create revision is the
//! fencing token: every write of the leader compares it (see [`super::journal`]), so a
//! leader whose lease expired while it was paused finds its writes refused.
//!
//! A replica also knows, without asking etcd, how long it may still act: the time it
//! sent its last answered keepalive plus the TTL etcd granted. Past that instant it
//! answers nothing (etcd may already have given the key to another replica), even
//! before a write is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Compare, EtcdClient, EtcdError, Op};

/// The key prefix of shard `shard`: its leader key and its journal live under it.
pub fn shard_key(prefix: &str, shard: u32) -> String {
    format!("{}/shard/{shard}", prefix.trim_end_matches('/'))
}

/// The leader key of a shard.
pub fn leader_key(prefix: &str, shard: u32) -> String {
    format!("{}/leader", shard_key(prefix, shard))
}

/// A campaign for one shard.
#[derive(Debug, Clone)]
pub struct Election {
    pub client: Arc<EtcdClient>,
    /// The leader key.
    pub key: String,
    pub ttl: Duration,
    /// What the leader key holds while this replica leads: its advertised URL.
    pub value: String,
}

/// This replica leads the shard, until [`Leadership::valid`] says otherwise.
#[derive(Debug)]
pub struct Leadership {
    /// The leader key's create revision.
    pub token: i64,
    pub lease: i64,
    pub key: String,
    client: Arc<EtcdClient>,
    /// Turns true once: the lease expired, etcd said it is gone, or a write was fenced.
    lost: watch::Sender<bool>,
    /// Until when this replica may act (from its last answered keepalive).
    until: Arc<std::sync::Mutex<Instant>>,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

impl Leadership {
    /// May this replica still act as leader?
    pub fn valid(&self) -> bool {
        !*self.lost.borrow() && self.until.lock().is_ok_and(|u| Instant::now() < *u)
    }

    /// Turns true when the leadership is lost.
    pub fn lost(&self) -> watch::Receiver<bool> {
        self.lost.subscribe()
    }

    /// Mark the leadership lost (a fenced write was refused).
    pub fn deposed(&self) {
        self.lost.send_replace(true);
    }

    /// Give the shard up at once (a clean shutdown): the lease and its key go.
    pub async fn resign(&self) {
        self.deposed();
        if let Err(e) = self.client.revoke(self.lease).await {
            tracing::warn!("cannot revoke the leader lease: {e}");
        }
    }
}

/// The fence on node writes: a leader's in-process agents and failovers send nothing
/// once [`Leadership::valid`] turns false.
impl crate::edges::nodes::fence::Fence for Leadership {
    fn holds(&self) -> bool {
        self.valid()
    }
}

impl Election {
    /// Wait until this replica leads (`None`: `stop` turned true first). Failures of
    /// etcd are logged and retried: a replica that cannot reach etcd does not lead.
    pub async fn campaign(&self, stop: &mut watch::Receiver<bool>) -> Option<Leadership> {
        let mut lease: Option<(i64, Instant)> = None;
        let poll = (self.ttl / 5).clamp(Duration::from_millis(100), Duration::from_secs(2));
        let mut warned = false;
        loop {
            if *stop.borrow() {
                if let Some((id, _)) = lease {
                    let _ = self.client.revoke(id).await;
                }
                return None;
            }
            match self.attempt(&mut lease).await {
                Ok(Some(leadership)) => return Some(leadership),
                Ok(None) => warned = false,
                Err(e) => {
                    if !warned {
                        tracing::warn!(
                            event = "campaign_failed",
                            "cannot campaign for {}: {e}; trying again",
                            self.key
                        );
                    }
                    warned = true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    /// One attempt with a fresh lease, revoked again when another holds the key: for a
    /// campaign that only runs while the key is vacant (the sharded front decides when).
    pub async fn try_once(&self) -> Result<Option<Leadership>, EtcdError> {
        let mut lease = None;
        let won = self.attempt(&mut lease).await;
        if !matches!(won, Ok(Some(_))) {
            if let Some((id, _)) = lease {
                let _ = self.client.revoke(id).await;
            }
        }
        won
    }

    /// One try: keep (or get) a lease, then create the leader key if it does not exist.
    async fn attempt(
        &self,
        lease: &mut Option<(i64, Instant)>,
    ) -> Result<Option<Leadership>, EtcdError> {
        let (id, renewed) = match *lease {
            Some((id, _)) => {
                let sent = Instant::now();
                match self.client.keepalive(id).await? {
                    0 => {
                        *lease = None;
                        return Ok(None);
                    }
                    _ => (id, sent),
                }
            }
            None => {
                let sent = Instant::now();
                (self.client.grant(self.ttl).await?, sent)
            }
        };
        *lease = Some((id, renewed));
        let outcome = self
            .client
            .txn(
                &[Compare::CreateRevision {
                    key: self.key.clone(),
                    revision: 0,
                }],
                &[Op::Put {
                    key: self.key.clone(),
                    value: self.value.as_bytes().to_vec(),
                    lease: id,
                }],
            )
            .await?;
        let token = if outcome.succeeded {
            outcome.revision
        } else {
            // An earlier try whose answer was lost may have created the key with this
            // lease: then this replica leads (else nobody would, the lease kept alive).
            match self.client.get(&self.key).await? {
                Some(kv) if kv.lease == id => kv.create_revision,
                _ => return Ok(None),
            }
        };
        let (lost, _) = watch::channel(false);
        let until = Arc::new(std::sync::Mutex::new(renewed + self.ttl));
        let keepalive = tokio::spawn(keep_alive(
            self.client.clone(),
            id,
            self.ttl,
            until.clone(),
            lost.clone(),
        ));
        Ok(Some(Leadership {
            token,
            lease: id,
            key: self.key.clone(),
            client: self.client.clone(),
            lost,
            until,
            keepalive,
        }))
    }
}

/// The leader's lease kept alive every TTL/3; the leadership lost when etcd says the
/// lease is gone or when the time it was granted for passes without an answer.
async fn keep_alive(
    client: Arc<EtcdClient>,
    lease: i64,
    ttl: Duration,
    until: Arc<std::sync::Mutex<Instant>>,
    lost: watch::Sender<bool>,
) {
    let every = (ttl / 3).max(Duration::from_millis(100));
    loop {
        let deadline = until.lock().map(|u| *u).unwrap_or_else(|_| Instant::now());
        let wait = every.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        let sent = Instant::now();
        let expired = until.lock().map(|u| sent >= *u).unwrap_or(true);
        if expired {
            tracing::warn!(
                event = "lease_expired",
                "the leader lease {lease:x} expired before etcd renewed it: stepping down"
            );
            lost.send_replace(true);
            return;
        }
        // Until the lease runs out: time enough to try every endpoint.
        let left = until
            .lock()
            .map(|u| u.saturating_duration_since(sent))
            .unwrap_or_default();
        match tokio::time::timeout(left, client.keepalive(lease)).await {
            Ok(Ok(left)) if left > 0 => {
                if let Ok(mut u) = until.lock() {
                    *u = sent + Duration::from_secs(left as u64);
                }
            }
            Ok(Ok(_)) => {
                tracing::warn!(
                    event = "lease_expired",
                    "etcd says the leader lease {lease:x} has expired: stepping down"
                );
                lost.send_replace(true);
                return;
            }
            Ok(Err(e)) => tracing::warn!("cannot renew the leader lease {lease:x}: {e}"),
            Err(_) => tracing::warn!("renewing the leader lease {lease:x} timed out"),
        }
    }
}

/// The advertised URL of the shard's leader, if one leads.
pub async fn leader_url(client: &EtcdClient, key: &str) -> Result<Option<String>, EtcdError> {
    Ok(client
        .get(key)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}
