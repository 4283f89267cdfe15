//! Cache nodes: drivers that read what a node runs (parameters, version, health, what is
//! persisted in its config file) and apply a parameter set to it as one unit.
//!
//! One trait, [`NodeDriver`], three implementations: Redis over RESP, Memcached over its
//! text protocol, and a simulated node for the demo and for scale tests. Values read from
//! a node are the engine's own text; `catalog::Catalog::normalize` makes them comparable.

pub mod fence;
pub mod fleet;
pub mod memcached;
pub mod redis;
pub mod sentinel;
pub mod simulated;
pub mod tls;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use crate::pure::catalog::Engine;
use crate::pure::live::NodeLive;

/// A boxed future, so that drivers can be held as `dyn NodeDriver`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applied {
    /// Parameters changed at run time, with the value before.
    pub changed: BTreeMap<String, Option<String>>,
    /// True when the change was also written to the node's config file (`CONFIG REWRITE`).
    pub persisted: bool,
}

/// Why a node could not be read or changed. Messages carry the engine's own words and
/// never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("{address}: unreachable: {message}")]
    Unreachable { address: String, message: String },
    #[error("{address}: no answer within {timeout_ms} ms")]
    TimedOut { address: String, timeout_ms: u64 },
    #[error("{address}: authentication failed: {message}")]
    AuthFailed { address: String, message: String },
    /// The engine refused a parameter; everything applied before it was put back.
    #[error("{address}: `{parameter}` refused: {message}; nothing was changed")]
    Refused {
        address: String,
        parameter: String,
        message: String,
    },
    /// A start-only parameter cannot be applied by a driver; an agent that can restart
    /// the engine has to.
    #[error("{address}: `{parameter}` only takes effect at start")]
    NeedsRestart { address: String, parameter: String },
    /// The rollback after a refusal failed too: the node may be half applied. The only
    /// error after which a person must look at the node.
    #[error("{address}: `{parameter}` refused ({message}) and putting back {restore} failed: {restore_error}")]
    RollbackFailed {
        address: String,
        parameter: String,
        message: String,
        restore: String,
        restore_error: String,
    },
    #[error("{address}: protocol error: {message}")]
    Protocol { address: String, message: String },
    /// The TLS configuration could not be used, or the handshake failed: says what
    /// (not PEM, unknown CA, expired, another name, no TLS on the port). Never followed
    /// by a plaintext attempt.
    #[error("{address}: TLS: {message}")]
    Tls { address: String, message: String },
    /// A leader replica's fence no longer held: this write and those after it were not
    /// sent (see [`fence`]); the next leader owns the node.
    #[error("{address}: stopped: this replica no longer leads, nothing more is sent to the node")]
    Fenced { address: String },
    #[error("secret {reference}: {message}")]
    Secret { reference: String, message: String },
}

impl NodeError {
    /// A node that did not answer may answer later: back off with jitter and try again.
    /// So may a node whose certificate failed (it is renewed on the node, not in Git).
    /// The rest (a refusal, a failed login, a missing secret) stays as it is until the
    /// assignment or the configuration changes.
    pub fn kind(&self) -> crate::edges::source::FailureKind {
        use crate::edges::source::FailureKind;
        match self {
            NodeError::Unreachable { .. } | NodeError::TimedOut { .. } | NodeError::Tls { .. } => {
                FailureKind::Transient
            }
            _ => FailureKind::Refusal,
        }
    }
}

/// One cache node as cacheflow sees it.
pub trait NodeDriver: Send + Sync {
    fn engine(&self) -> Engine;
    /// `host:port`, for messages.
    fn address(&self) -> &str;
    /// What the node runs now: parameters (engine text), version, health, and, when it
    /// runs from a config file, what the file holds. `reachable` is always true in an
    /// `Ok`: an unreachable node is an `Err`.
    fn read(&self) -> BoxFuture<'_, Result<NodeLive, NodeError>>;
    /// [`read`], with only the parameters in `names` (live and persisted): what a plan of
    /// declared parameters needs, at a fraction of the engine's and the parser's work
    /// (a Redis reports about 190). The default reads everything and filters.
    ///
    /// [`read`]: NodeDriver::read
    fn read_declared<'a>(
        &'a self,
        names: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<NodeLive, NodeError>> {
        Box::pin(async move {
            let mut live = self.read().await?;
            live.keep_only(names);
            Ok(live)
        })
    }
    /// Only the live values of `names` (those the node knows): what an apply compares
    /// against, without the health, version and config-file parts of a full [`read`].
    /// The default reads everything and keeps `names`.
    ///
    /// [`read`]: NodeDriver::read
    fn read_parameters<'a>(
        &'a self,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, NodeError>> {
        Box::pin(async move {
            let mut live = self.read().await?;
            live.parameters.retain(|n, _| names.contains(n));
            Ok(live.parameters)
        })
    }
    /// Apply `params` (normalised values, as the catalog gives them) as one unit: either
    /// all of them are in force afterwards, or none is (what was changed before a refusal
    /// is put back, and the error carries the engine's message).
    fn apply<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Applied, NodeError>>;
    /// [`apply`] in fewer round trips, for a caller that knows what the node ran moments
    /// ago (`seen`: its last reading of these names, possibly out of date): the driver
    /// sets what differs from `seen` in the same round trip as it reads the values
    /// before, checks that guess against them, and sets what it got wrong. Same
    /// contract and result as [`apply`]. `None`: the driver has no such way (the caller
    /// reads the node, then applies what differs).
    ///
    /// [`apply`]: NodeDriver::apply
    fn apply_seen<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
        seen: &'a BTreeMap<String, String>,
    ) -> Option<BoxFuture<'a, Result<Applied, NodeError>>> {
        let _ = (params, seen);
        None
    }
    /// Move the primary role from this node to its replica at `to` (`host:port`) and
    /// wait, at most `timeout`, until it is done: `to` reports role master and this node
    /// follows it. The default (engines without replication): refused.
    fn failover<'a>(
        &'a self,
        to: &'a str,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        let _ = (to, timeout);
        Box::pin(async move {
            Err(NodeError::Protocol {
                address: self.address().to_owned(),
                message: "this engine has no failover".to_owned(),
            })
        })
    }
    /// Move the primary role away from this node through the Sentinels that watch it
    /// (`SENTINEL FAILOVER`; they choose the replica) and wait, at most `timeout`, until
    /// a quorum of them names the new primary and it runs as one; its address. The
    /// default (engines without Sentinel): refused.
    fn failover_through_sentinel<'a>(
        &'a self,
        sentinel: &'a crate::pure::spec::model::Sentinel,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<String, NodeError>> {
        let _ = (sentinel, timeout);
        Box::pin(async move {
            Err(NodeError::Protocol {
                address: self.address().to_owned(),
                message: "this engine has no Sentinel".to_owned(),
            })
        })
    }

    /// Redis Cluster: move the primary role from this node to its replica at `to` by
    /// `CLUSTER FAILOVER` run on `to`, and wait, at most `timeout`, until `to` reports
    /// role master, this node follows it and the cluster's view agrees. The default
    /// (engines without cluster mode): refused.
    fn cluster_failover<'a>(
        &'a self,
        to: &'a str,
        timeout: std::time::Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        let _ = (to, timeout);
        Box::pin(async move {
            Err(NodeError::Protocol {
                address: self.address().to_owned(),
                message: "this engine has no cluster mode".to_owned(),
            })
        })
    }
}

/// A driver reports a secret that gave no value as a `NodeError` (plain data, compared
/// in tests and sent in reports).
impl From<crate::edges::secret::SecretError> for NodeError {
    fn from(e: crate::edges::secret::SecretError) -> NodeError {
        NodeError::Secret {
            reference: e.reference,
            message: e.problem.to_string(),
        }
    }
}
