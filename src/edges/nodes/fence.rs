//! The fence on node writes of a leader replica: nothing reaches a node once the
//! replica may no longer act (its lease ran out, or etcd refused a fenced write).
//!
//! A node cannot check a fencing token (`CONFIG SET` has no compare), so the check is
//! made here, in the replica, before every write a driver sends: [`Fenced`] wraps the
//! drivers of a leader's in-process agents and failovers, and runs each of their writes
//! inside a task-local scope that the drivers consult with [`check`] right before each
//! command that changes a node (`CONFIG SET`, `CONFIG REWRITE`, a put-back, a failover).
//! A leader frozen (SIGSTOP, a paused VM) in the middle of an apply wakes with its lease
//! gone by the monotonic clock, and its next write is refused before it is sent. What
//! remains is the instant between a check and its send; docs/server.md says so.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{Applied, BoxFuture, NodeDriver, NodeError};
use crate::pure::catalog::Engine;
use crate::pure::live::NodeLive;

/// May the writes go out? (A leader replica's election.)
pub trait Fence: Send + Sync {
    fn holds(&self) -> bool;
}

tokio::task_local! {
    static FENCE: Arc<dyn Fence>;
}

/// Before a write to the node at `address`: `Err(Fenced)` when the write runs under a
/// fence that no longer holds. Outside any [`Fenced`] scope (a single process, `sync`,
/// the agent), always `Ok`.
pub fn check(address: &str) -> Result<(), NodeError> {
    let holds = FENCE.try_with(|f| f.holds()).unwrap_or(true);
    match holds {
        true => Ok(()),
        false => Err(NodeError::Fenced {
            address: address.to_owned(),
        }),
    }
}

/// A driver whose writes go out only while `fence` holds; reads pass through.
pub struct Fenced {
    inner: Arc<dyn NodeDriver>,
    fence: Arc<dyn Fence>,
}

impl Fenced {
    pub fn new(inner: Arc<dyn NodeDriver>, fence: Arc<dyn Fence>) -> Fenced {
        Fenced { inner, fence }
    }

    /// Run `write` inside the fence's scope, once the fence is checked.
    fn guarded<'a, T: Send + 'a>(
        &'a self,
        write: BoxFuture<'a, Result<T, NodeError>>,
    ) -> BoxFuture<'a, Result<T, NodeError>> {
        let fence = self.fence.clone();
        Box::pin(FENCE.scope(fence, async move {
            check(self.inner.address())?;
            write.await
        }))
    }
}

impl NodeDriver for Fenced {
    fn engine(&self) -> Engine {
        self.inner.engine()
    }

    fn address(&self) -> &str {
        self.inner.address()
    }

    fn read(&self) -> BoxFuture<'_, Result<NodeLive, NodeError>> {
        self.inner.read()
    }

    fn read_declared<'a>(
        &'a self,
        names: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<NodeLive, NodeError>> {
        self.inner.read_declared(names)
    }

    fn read_parameters<'a>(
        &'a self,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, NodeError>> {
        self.inner.read_parameters(names)
    }

    fn apply<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Applied, NodeError>> {
        self.guarded(self.inner.apply(params))
    }

    fn apply_seen<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
        seen: &'a BTreeMap<String, String>,
    ) -> Option<BoxFuture<'a, Result<Applied, NodeError>>> {
        let write = self.inner.apply_seen(params, seen)?;
        Some(self.guarded(write))
    }

    fn failover<'a>(
        &'a self,
        to: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        self.guarded(self.inner.failover(to, timeout))
    }

    fn failover_through_sentinel<'a>(
        &'a self,
        sentinel: &'a crate::pure::spec::model::Sentinel,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, NodeError>> {
        self.guarded(self.inner.failover_through_sentinel(sentinel, timeout))
    }

    fn cluster_failover<'a>(
        &'a self,
        to: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        self.guarded(self.inner.cluster_failover(to, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edges::nodes::simulated::SimulatedNode;
    use std::sync::atomic::{AtomicBool, Ordering};

    struct Switch(AtomicBool);

    impl Fence for Switch {
        fn holds(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn a_fence_that_no_longer_holds_stops_the_write_and_lets_reads_through() {
        let node = Arc::new(SimulatedNode::new(
            "10.0.0.1:6379",
            Engine::Redis,
            crate::pure::spec::model::Role::Primary,
            params(&[("hz", "10")]),
            1 << 20,
            100.0,
        ));
        let switch = Arc::new(Switch(AtomicBool::new(true)));
        let fenced = Fenced::new(node.clone(), switch.clone());

        fenced.apply(&params(&[("hz", "20")])).await.unwrap();
        assert_eq!(fenced.read().await.unwrap().parameters["hz"], "20");

        switch.0.store(false, Ordering::SeqCst);
        let e = fenced.apply(&params(&[("hz", "30")])).await.unwrap_err();
        assert_eq!(
            e,
            NodeError::Fenced {
                address: "10.0.0.1:6379".to_owned()
            }
        );
        assert_eq!(e.to_string(), "10.0.0.1:6379: stopped: this replica no longer leads, nothing more is sent to the node");
        assert_eq!(node.read().await.unwrap().parameters["hz"], "20");
        let e = fenced
            .failover("10.0.0.2:6379", Duration::from_secs(1))
            .await;
        assert!(matches!(e, Err(NodeError::Fenced { .. })), "{e:?}");
    }

    #[test]
    fn outside_a_fence_every_write_may_go_out() {
        assert_eq!(check("10.0.0.1:6379"), Ok(()));
    }
}
