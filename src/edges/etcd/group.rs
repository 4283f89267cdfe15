//! Group commit across the shards a replica leads: the fenced transactions that arrive
//! while one is in flight go to etcd together, as one transaction holding every compare
//! and every operation.
//!
//! Each shard's journal writer already groups its own entries; with several shards led
//! by one replica, their writers each sent their own transaction, and etcd took them one
//! raft proposal and one fsync at a time on a shared disk. Together they cost one. The
//! combined transaction holds only if every shard's compare holds; when one does not
//! (a shard deposed), nothing of it was applied, and each request is sent again alone
//! so that only the deposed shard's is refused.
//!
//! ```text
//! shard writers ─► requests ─► [ first, + every other waiting that fits ] ─► one txn
//!                                                                     └─► answers each
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{Compare, EtcdClient, EtcdError, Op, TxnOutcome};

/// The most operations in one grouped transaction (etcd's `--max-txn-ops` is 128 by
/// default).
const MAX_OPS: usize = 128;
/// The most bytes of keys and values in one grouped transaction (etcd refuses requests
/// above 1.5 MiB; base64 in the JSON gateway adds a third).
const MAX_BYTES: usize = 1 << 20;

struct Request {
    compare: Vec<Compare>,
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<TxnOutcome, EtcdError>>,
}

impl Request {
    fn bytes(&self) -> usize {
        self.ops.iter().map(op_bytes).sum()
    }

    /// Keys this request writes; `None` when it deletes a range (it goes alone: etcd
    /// refuses a transaction whose ranges and keys overlap).
    fn keys(&self) -> Option<BTreeSet<&str>> {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Put { key, .. } | Op::Delete { key } => Some(key.as_str()),
                Op::DeleteRange { .. } => None,
            })
            .collect()
    }
}

/// The bytes an operation puts in a transaction (keys and values).
pub(crate) fn op_bytes(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len(),
        Op::Delete { key } => key.len(),
        Op::DeleteRange { key, end } => key.len() + end.len(),
    }
}

/// The grouping of one replica's fenced transactions (its task ends with the last
/// handle).
#[derive(Debug, Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("ops", &self.ops.len())
            .finish()
    }
}

impl GroupCommit {
    /// Start the grouping task (inside a tokio runtime).
    pub fn start(client: Arc<EtcdClient>) -> GroupCommit {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        GroupCommit { requests }
    }

    /// [`EtcdClient::txn`], grouped with the others waiting.
    pub async fn txn(&self, compare: &[Compare], ops: &[Op]) -> Result<TxnOutcome, EtcdError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            compare: compare.to_vec(),
            ops: ops.to_vec(),
            reply,
        };
        let gone = || EtcdError::Setup("the group commit task has ended".to_owned());
        self.requests.send(request).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn run(client: Arc<EtcdClient>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut group = vec![first];
        if let Some(keys) = group[0].keys() {
            let mut keys: BTreeSet<String> = keys.into_iter().map(str::to_owned).collect();
            let (mut ops, mut bytes) = (group[0].ops.len(), group[0].bytes());
            while let Ok(next) = rx.try_recv() {
                let fits = next
                    .keys()
                    .is_some_and(|k| k.iter().all(|k| !keys.contains(*k)))
                    && ops + next.ops.len() <= MAX_OPS
                    && bytes + next.bytes() <= MAX_BYTES;
                if !fits {
                    carried = Some(next);
                    break;
                }
                keys.extend(next.keys().into_iter().flatten().map(str::to_owned));
                ops += next.ops.len();
                bytes += next.bytes();
                group.push(next);
            }
        }
        commit(&client, group).await;
    }
}

/// One transaction for the whole group; each request alone when a compare failed.
async fn commit(client: &EtcdClient, mut group: Vec<Request>) {
    if group.len() == 1 {
        let r = group.remove(0);
        let outcome = client.txn(&r.compare, &r.ops).await;
        let _ = r.reply.send(outcome);
        return;
    }
    let compare: Vec<Compare> = group.iter().flat_map(|r| r.compare.clone()).collect();
    let ops: Vec<Op> = group.iter().flat_map(|r| r.ops.clone()).collect();
    match client.txn(&compare, &ops).await {
        Ok(outcome) if outcome.succeeded => {
            for r in group {
                let _ = r.reply.send(Ok(outcome));
            }
        }
        Ok(_) => {
            for r in group {
                let outcome = client.txn(&r.compare, &r.ops).await;
                let _ = r.reply.send(outcome);
            }
        }
        Err(e) => {
            for r in group {
                let _ = r.reply.send(Err(e.clone()));
            }
        }
    }
}
