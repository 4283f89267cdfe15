//! Reading a fleet: every node at once, within a concurrency bound and a per-node
//! timeout. An unreachable or slow node is reported as such in the snapshot; it never
//! fails the snapshot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{NodeDriver, NodeError};
// Kept at its old path for callers not yet moved to `edges::clock`.
pub use crate::edges::clock::now_rfc3339;
use crate::pure::live::{LiveState, NodeLive, LIVE_STATE_VERSION};

/// One node to read: its id, its cluster, and the driver that reaches it.
pub struct Target {
    pub id: String,
    pub cluster: String,
    pub driver: Arc<dyn NodeDriver>,
    /// Keep only these parameters of what the node reports (live and persisted); all
    /// when `None`. A plan needs only the declared parameters, and a real Redis reports
    /// about 190: keeping them all for 10,000 nodes costs about 240 MiB.
    pub keep: Option<Arc<BTreeSet<String>>>,
}

impl Target {
    pub fn new(
        id: impl Into<String>,
        cluster: impl Into<String>,
        driver: Arc<dyn NodeDriver>,
    ) -> Target {
        Target {
            id: id.into(),
            cluster: cluster.into(),
            driver,
            keep: None,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SnapshotOptions {
    /// Nodes read at the same time.
    pub concurrency: usize,
    /// How long one node may take to answer.
    pub timeout: Duration,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            concurrency: 64,
            timeout: Duration::from_secs(2),
        }
    }
}

/// Read every target; the result is sorted by node id (a `BTreeMap`).
pub async fn snapshot(targets: Vec<Target>, options: SnapshotOptions) -> LiveState {
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for t in targets {
        let permits = permits.clone();
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = permits.acquire_owned().await.ok();
            let reading = async {
                match &t.keep {
                    Some(keep) => t.driver.read_declared(keep).await,
                    None => t.driver.read().await,
                }
            };
            let read = tokio::time::timeout(options.timeout, reading).await;
            let mut live = match read {
                Ok(Ok(live)) => live,
                Ok(Err(e)) => unreachable(t.driver.as_ref(), e.to_string()),
                Err(_) => unreachable(
                    t.driver.as_ref(),
                    NodeError::TimedOut {
                        address: t.driver.address().to_owned(),
                        timeout_ms: options.timeout.as_millis() as u64,
                    }
                    .to_string(),
                ),
            };
            live.cluster = Some(t.cluster);
            live.engine = Some(t.driver.engine());
            live.address = Some(t.driver.address().to_owned());
            (t.id, live)
        });
    }
    let mut state = LiveState {
        sentinels: Default::default(),
        version: LIVE_STATE_VERSION,
        taken_at: Some(now_rfc3339()),
        nodes: Default::default(),
    };
    while let Some(joined) = tasks.join_next().await {
        if let Ok((id, live)) = joined {
            state.nodes.insert(id, live);
        }
    }
    state
}

fn unreachable(driver: &dyn NodeDriver, error: String) -> NodeLive {
    NodeLive {
        engine: Some(driver.engine()),
        address: Some(driver.address().to_owned()),
        reachable: false,
        error: Some(error),
        ..NodeLive::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::edges::nodes::simulated::{Fault, SimulatedNode};
    use crate::pure::catalog::Engine;
    use crate::pure::spec::model::Role;

    fn sim(i: usize) -> Arc<SimulatedNode> {
        let params: BTreeMap<String, String> = [("maxmemory".to_owned(), "1gb".to_owned())]
            .into_iter()
            .collect();
        Arc::new(SimulatedNode::new(
            format!("10.0.0.{i}:6379"),
            Engine::Redis,
            Role::Primary,
            params,
            1 << 20,
            10.0,
        ))
    }

    #[tokio::test]
    async fn unreachable_and_slow_nodes_are_reported_not_fatal() {
        let up = sim(1);
        let down = sim(2);
        down.inject(Fault::Down);
        let slow = sim(3);
        slow.inject(Fault::Slow(Duration::from_secs(60)));
        let targets = vec![
            Target::new("a", "c", up),
            Target::new("b", "c", down),
            Target::new("s", "c", slow),
        ];
        let state = snapshot(
            targets,
            SnapshotOptions {
                concurrency: 2,
                timeout: Duration::from_millis(200),
            },
        )
        .await;
        assert_eq!(state.nodes.len(), 3);
        assert!(state.nodes["a"].reachable);
        assert_eq!(state.nodes["a"].parameters["maxmemory"], "1gb");
        assert_eq!(state.nodes["a"].cluster.as_deref(), Some("c"));
        assert!(!state.nodes["b"].reachable);
        assert_eq!(
            state.nodes["b"].error.as_deref(),
            Some("10.0.0.2:6379: unreachable: connection refused (simulated)")
        );
        assert_eq!(
            state.nodes["s"].error.as_deref(),
            Some("10.0.0.3:6379: no answer within 200 ms")
        );
    }

    #[tokio::test]
    async fn a_target_keeps_only_the_parameters_asked_for() {
        let node = sim(1);
        node.set_by_hand("hz", "10");
        let keep: Arc<BTreeSet<String>> = Arc::new(["maxmemory".to_owned()].into());
        let all = snapshot(
            vec![Target::new("a", "c", node.clone())],
            SnapshotOptions::default(),
        )
        .await;
        let some = snapshot(
            vec![Target {
                keep: Some(keep),
                ..Target::new("a", "c", node)
            }],
            SnapshotOptions::default(),
        )
        .await;
        assert_eq!(
            all.nodes["a"].parameters.keys().collect::<Vec<_>>(),
            vec!["hz", "maxmemory"]
        );
        assert_eq!(
            some.nodes["a"].parameters.keys().collect::<Vec<_>>(),
            vec!["maxmemory"]
        );
    }
}
