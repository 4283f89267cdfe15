//! The reconciler's journal in etcd, under the leader's fence: every entry is one
//! transaction that writes the state a new leader resumes from (`journal/top`, and
//! `journal/index`: each cluster's name and the SHA-256 of its file), the entry's
//! message (`journal/log/<seq>`) and its number (`journal/seq`), only if the shard's
//! leader key still has the create revision this replica won it with. A deposed
//! leader's entry is refused whole; nothing of it is kept.
//!
//! The clusters' files go first, each zlib-compressed under `journal/blobs/<sha256>`
//! (the hash of the file itself), in fenced
//! transactions of at most 1 MiB and 64 files: unreferenced until the entry's own
//! transaction names them, so an entry stays atomic however many clusters it changed.
//! (The files used to go inside the entry's transaction, `journal/clusters/<name>`,
//! which etcd refused above 1.5 MiB, about 18 clusters of 100 nodes: a revision that
//! changed a 10,000-node fleet at once could never be written, and the leader retried
//! it for ever. That format is still read, and rewritten at the next entry.) A file no
//! cluster names any more is deleted by the next entries, up to 32 at a time.
//!
//! The Git journal stays the complete audit log: the leader writes each entry there too
//! (after etcd) and pushes it to the remote in batches; a new leader replays into Git
//! the entries of `journal/log/` the remote does not hold yet, and entries the remote
//! holds are pruned from etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::group::{op_bytes, GroupCommit};
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
    /// The hashes of the files under `journal/blobs/` (some no longer named).
    pub blobs: BTreeSet<String>,
    /// Read from a key per cluster (`journal/clusters/<name>`, the older format).
    pub old_format: bool,
}

/// Writes conditional on the leader key's create revision.
#[derive(Debug, Clone)]
pub struct Fence {
    client: Arc<EtcdClient>,
    /// The replica's group commit, when it leads several shards.
    group: Option<GroupCommit>,
    /// `<prefix>/shard/<i>`.
    shard: String,
    leader_key: String,
    token: i64,
}

impl Fence {
    pub fn new(client: Arc<EtcdClient>, shard: String, leader_key: String, token: i64) -> Fence {
        Fence {
            client,
            group: None,
            shard,
            leader_key,
            token,
        }
    }

    /// Send the writes through `group`, with those of the replica's other shards.
    pub fn grouped(mut self, group: Option<GroupCommit>) -> Fence {
        self.group = group;
        self
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
        let compare = [Compare::CreateRevision {
            key: self.leader_key.clone(),
            revision: self.token,
        }];
        let outcome = match &self.group {
            Some(group) => group.txn(&compare, ops).await?,
            None => self.client.txn(&compare, ops).await?,
        };
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
    /// Each cluster of the last entry and the hash of its file.
    index: BTreeMap<String, String>,
    /// The files in `journal/blobs/` now, by hash.
    blobs: BTreeSet<String>,
    /// Files the index names that are not blobs yet (read in the older format).
    unwritten: BTreeMap<String, Vec<u8>>,
    /// Whether `journal/clusters/` (the older format) may still hold keys.
    old_keys: bool,
}

/// The most bytes of files in one transaction (etcd refuses requests above 1.5 MiB;
/// base64 in the JSON gateway adds a third).
const BLOB_TXN_BYTES: usize = 1 << 20;
/// The most files in one transaction (etcd's `--max-txn-ops` is 128 by default).
const BLOB_TXN_FILES: usize = 64;
/// The most stale files an entry deletes.
const DELETES_PER_ENTRY: usize = 32;

fn hash_of(file: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file as it is kept under `journal/blobs/`: zlib at its fastest level, about a
/// tenth of the JSON for a 100-node cluster (fewer bytes through etcd's log and its
/// fsyncs, which is what an entry waits for).
fn pack(file: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(file);
    z.finish().unwrap_or_default()
}

/// A file back from `journal/blobs/`.
fn unpack(blob: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut file = Vec::new();
    flate2::read::ZlibDecoder::new(blob)
        .read_to_end(&mut file)
        .map_err(|e| e.to_string())?;
    Ok(file)
}

fn blob_key(shard: &str, hash: &str) -> String {
    format!("{shard}/journal/blobs/{hash}")
}

fn log_key(shard: &str, seq: u64) -> String {
    format!("{shard}/journal/log/{seq:020}")
}

impl FencedJournal {
    /// The writer of the shard under `shard` (`<prefix>/shard/<i>`) for the leader that
    /// holds `leader_key` at create revision `token`, continuing from `stored`.
    pub fn new(fence: Fence, stored: Option<&Stored>) -> FencedJournal {
        let mut journal = FencedJournal {
            fence,
            seq: stored.map_or(0, |s| s.seq),
            index: BTreeMap::new(),
            blobs: stored.map(|s| s.blobs.clone()).unwrap_or_default(),
            unwritten: BTreeMap::new(),
            old_keys: stored.is_some_and(|s| s.old_format),
        };
        for (name, file) in stored.map(|s| &s.clusters).into_iter().flatten() {
            let hash = hash_of(file);
            if !journal.blobs.contains(&hash) {
                journal.unwritten.insert(hash.clone(), file.clone());
            }
            journal.index.insert(name.clone(), hash);
        }
        journal
    }

    /// Read the shard's journal (one range: every key at one revision), in either
    /// format (the index and its files, or a key per cluster).
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
        let mut index: Option<BTreeMap<String, String>> = None;
        let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for kv in kvs {
            let rest = &kv.key[prefix.len()..];
            if rest == "top" {
                stored.top = kv.value;
            } else if rest == "seq" {
                stored.seq = String::from_utf8_lossy(&kv.value)
                    .parse()
                    .map_err(|e| bad(format!("seq: {e}")))?;
            } else if rest == "index" {
                index = Some(
                    serde_json::from_slice(&kv.value).map_err(|e| bad(format!("index: {e}")))?,
                );
            } else if let Some(hash) = rest.strip_prefix("blobs/") {
                blobs.insert(hash.to_owned(), kv.value);
            } else if let Some(name) = rest.strip_prefix("clusters/") {
                stored.old_format = true;
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
        if let Some(index) = index {
            // The index is the state; keys of the older format left beside it are not.
            stored.clusters.clear();
            for (name, hash) in index {
                let blob = blobs
                    .get(&hash)
                    .ok_or_else(|| bad(format!("index: {name}'s file {hash} is missing")))?;
                let file = unpack(blob).map_err(|e| bad(format!("blobs/{hash}: {e}")))?;
                stored.clusters.insert(name, file);
            }
        }
        stored.blobs = blobs.into_keys().collect();
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
        let shard = self.fence.shard.clone();
        // The entry's index, and the files it names that are not blobs yet.
        let mut index = BTreeMap::new();
        let mut new: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (name, file) in clusters {
            let hash = match file {
                Some(file) => {
                    let hash = hash_of(file);
                    if !self.blobs.contains(&hash) {
                        new.insert(hash.clone(), file.clone());
                    }
                    hash
                }
                None => match self.index.get(name) {
                    Some(hash) => {
                        if let Some(file) = self.unwritten.get(hash) {
                            new.insert(hash.clone(), file.clone());
                        }
                        hash.clone()
                    }
                    None => {
                        return Err(JournalError::Bad {
                            prefix: shard,
                            message: format!("no file for cluster {name} to reuse"),
                        })
                    }
                },
            };
            index.insert(name.clone(), hash);
        }
        // The new files, packed; written before the entry unless they fit in its own
        // transaction (the common case: one etcd round trip, one fsync, per entry).
        let packed: Vec<(String, Vec<u8>)> = new.into_iter().map(|(h, f)| (h, pack(&f))).collect();
        // The entry: its state, its message, its number; and files no longer named.
        let seq = self.seq + 1;
        let index_json = serde_json::to_vec(&index).map_err(|e| JournalError::Bad {
            prefix: shard.clone(),
            message: e.to_string(),
        })?;
        let mut ops = vec![
            Op::Put {
                key: format!("{shard}/journal/top"),
                value: top.to_vec(),
                lease: 0,
            },
            Op::Put {
                key: format!("{shard}/journal/index"),
                value: index_json,
                lease: 0,
            },
            Op::Put {
                key: log_key(&shard, seq),
                value: message.as_bytes().to_vec(),
                lease: 0,
            },
            Op::Put {
                key: format!("{shard}/journal/seq"),
                value: seq.to_string().into_bytes(),
                lease: 0,
            },
        ];
        if self.old_keys {
            ops.push(Op::DeleteRange {
                key: format!("{shard}/journal/clusters/"),
                end: super::prefix_end(&format!("{shard}/journal/clusters/")),
            });
        }
        let named: BTreeSet<&String> = index.values().collect();
        let stale: Vec<String> = self
            .blobs
            .iter()
            .filter(|h| !named.contains(h))
            .take(DELETES_PER_ENTRY)
            .cloned()
            .collect();
        ops.extend(stale.iter().map(|h| Op::Delete {
            key: blob_key(&shard, h),
        }));
        let entry_bytes: usize = ops.iter().map(op_bytes).sum();
        let blob_bytes: usize = packed.iter().map(|(_, b)| b.len()).sum();
        let together = packed.len() <= BLOB_TXN_FILES && entry_bytes + blob_bytes <= BLOB_TXN_BYTES;
        if together {
            let blobs: Vec<Op> = packed
                .iter()
                .map(|(hash, blob)| Op::Put {
                    key: blob_key(&shard, hash),
                    value: blob.clone(),
                    lease: 0,
                })
                .collect();
            ops.splice(0..0, blobs);
        } else {
            self.write_blobs(&packed).await?;
        }
        self.fence.txn(&ops).await?;
        if together {
            self.blobs.extend(packed.into_iter().map(|(h, _)| h));
        }
        self.seq = seq;
        self.old_keys = false;
        for h in &stale {
            self.blobs.remove(h);
        }
        self.unwritten.clear();
        self.index = index;
        Ok(seq)
    }

    /// Put `files` under `journal/blobs/`, in fenced transactions of at most
    /// `BLOB_TXN_BYTES` and `BLOB_TXN_FILES` each.
    async fn write_blobs(&mut self, packed: &[(String, Vec<u8>)]) -> Result<(), JournalError> {
        let shard = self.fence.shard.clone();
        let mut batch: Vec<Op> = Vec::new();
        let mut hashes: Vec<&String> = Vec::new();
        let mut bytes = 0;
        let mut files = packed.iter().peekable();
        while let Some((hash, blob)) = files.next() {
            bytes += blob.len();
            batch.push(Op::Put {
                key: blob_key(&shard, hash),
                value: blob.clone(),
                lease: 0,
            });
            hashes.push(hash);
            let full = files.peek().is_none_or(|(_, next)| {
                bytes + next.len() > BLOB_TXN_BYTES || batch.len() >= BLOB_TXN_FILES
            });
            if full {
                self.fence.txn(&batch).await?;
                self.blobs.extend(hashes.drain(..).cloned());
                batch.clear();
                bytes = 0;
            }
        }
        Ok(())
    }
}
