//! The reconciler's journal in etcd, under the leader's fence: every entry is one
//! transaction that writes the state a new leader resumes from (`journal/top`, one
//! `journal/clusters/<name>` per cluster the entry changed), the entry's message
//! (`journal/log/<seq>`) and its number (`journal/seq`), only if the shard's leader key
//! still has the create revision this replica won it with. A deposed leader's entry is
//! refused whole; nothing of it is kept.
//!
//! The Git journal stays the complete audit log: the leader writes each entry there too
//! (after etcd) and pushes it to the remote in batches; a new leader replays into Git
//! the entries of `journal/log/` the remote does not hold yet, and entries the remote
//! holds are pruned from etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{Compare, EtcdClient, EtcdError, Op};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The leader key is gone or belongs to another replica now.
    #[error(
        "refused by the fence: {key} no longer has create revision {token} (another replica leads)"
    )]
    Fenced { key: String, token: i64 },
    #[error("the journal in etcd under {prefix} is not readable: {message}")]
    Bad { prefix: String, message: String },
}

/// What the journal in etcd holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The state without its clusters (`state.json` of the Git journal).
    pub top: Vec<u8>,
    /// Each cluster's file.
    pub clusters: BTreeMap<String, Vec<u8>>,
    /// The number of the last entry.
    pub seq: u64,
    /// The messages of the entries not pruned yet, oldest first.
    pub log: Vec<(u64, String)>,
}

/// Writes conditional on the leader key's create revision.
#[derive(Debug, Clone)]
pub struct Fence {
    client: Arc<EtcdClient>,
    /// `<prefix>/shard/<i>`.
    shard: String,
    leader_key: String,
    token: i64,
}

impl Fence {
    pub fn new(client: Arc<EtcdClient>, shard: String, leader_key: String, token: i64) -> Fence {
        Fence {
            client,
            shard,
            leader_key,
            token,
        }
    }

    /// Forget the messages of entries up to `upto`: the remote's Git journal holds them.
    pub async fn prune(&self, upto: u64) -> Result<(), JournalError> {
        let ops = [Op::DeleteRange {
            key: log_key(&self.shard, 0),
            end: log_key(&self.shard, upto + 1),
        }];
        self.txn(&ops).await
    }

    async fn txn(&self, ops: &[Op]) -> Result<(), JournalError> {
        let outcome = self
            .client
            .txn(
                &[Compare::CreateRevision {
                    key: self.leader_key.clone(),
                    revision: self.token,
                }],
                ops,
            )
            .await?;
        if outcome.succeeded {
            Ok(())
        } else {
            Err(JournalError::Fenced {
                key: self.leader_key.clone(),
                token: self.token,
            })
        }
    }
}

/// The leader's writer of one shard's journal.
#[derive(Debug)]
pub struct FencedJournal {
    fence: Fence,
    /// The last entry written.
    seq: u64,
    /// The clusters that have a key now.
    known: BTreeSet<String>,
}

fn log_key(shard: &str, seq: u64) -> String {
    format!("{shard}/journal/log/{seq:020}")
}

impl FencedJournal {
    /// The writer of the shard under `shard` (`<prefix>/shard/<i>`) for the leader that
    /// holds `leader_key` at create revision `token`, continuing from `stored`.
    pub fn new(fence: Fence, stored: Option<&Stored>) -> FencedJournal {
        FencedJournal {
            fence,
            seq: stored.map_or(0, |s| s.seq),
            known: stored
                .map(|s| s.clusters.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Read the shard's journal (one range: every key at one revision).
    pub async fn load(client: &EtcdClient, shard: &str) -> Result<Option<Stored>, JournalError> {
        let prefix = format!("{shard}/journal/");
        let kvs = client.get_prefix(&prefix).await?;
        if kvs.is_empty() {
            return Ok(None);
        }
        let bad = |message: String| JournalError::Bad {
            prefix: prefix.clone(),
            message,
        };
        let mut stored = Stored::default();
        for kv in kvs {
            let rest = &kv.key[prefix.len()..];
            if rest == "top" {
                stored.top = kv.value;
            } else if rest == "seq" {
                stored.seq = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .map_err(|e| bad(format!("seq: {e}")))?;
            } else if let Some(name) = rest.strip_prefix("clusters/") {
                stored.clusters.insert(name.to_owned(), kv.value);
            } else if let Some(n) = rest.strip_prefix("log/") {
                let n = n.parse().map_err(|e| bad(format!("log/{n}: {e}")))?;
                stored
                    .log
                    .push((n, String::from_utf8_lossy(&kv.value).into_owned()));
            }
        }
        if stored.top.is_empty() {
            return Err(bad("no journal/top".to_owned()));
        }
        stored.log.sort_by_key(|(n, _)| *n);
        Ok(Some(stored))
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The number of the last entry written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Write one entry under the fence: `clusters` holds every cluster of the state,
    /// with its file when it changed (`None`: the key holds it already). Its number.
    pub async fn write(
        &mut self,
        message: &str,
        top: &[u8],
        clusters: &BTreeMap<String, Option<Vec<u8>>>,
    ) -> Result<u64, JournalError> {
        let seq = self.seq + 1;
        let mut ops = vec![Op::Put {
            key: format!("{}/journal/top", self.fence.shard),
            value: top.to_vec(),
            lease: 0,
        }];
        for (name, file) in clusters {
            if let Some(json) = file {
                ops.push(Op::Put {
                    key: format!("{}/journal/clusters/{name}", self.fence.shard),
                    value: json.clone(),
                    lease: 0,
                });
            }
        }
        for gone in self.known.iter().filter(|n| !clusters.contains_key(*n)) {
            ops.push(Op::Delete {
                key: format!("{}/journal/clusters/{gone}", self.fence.shard),
            });
        }
        ops.push(Op::Put {
            key: log_key(&self.fence.shard, seq),
            value: message.as_bytes().to_vec(),
            lease: 0,
        });
        ops.push(Op::Put {
            key: format!("{}/journal/seq", self.fence.shard),
            value: seq.to_string().into_bytes(),
            lease: 0,
        });
        self.fence.txn(&ops).await?;
        self.seq = seq;
        self.known = clusters.keys().cloned().collect();
        Ok(seq)
    }
}
