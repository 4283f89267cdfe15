//! cacheflow: GitOps for cache fleets.
//!
//! The crate is four layers; an arrow only ever points down or sideways within a layer.
//!
//! ```text
//! entry   cli ── server ── sync ── demo            the commands and the HTTP server
//!         (and output: printing that never panics)
//!           │       │        │       │
//! flow    pipeline (read-only commands, intake of a new head) ── runtime (the
//!         reconciler's task, journal writer, Host) ── agent ── history
//!           │                    │                     │
//! edges   source (git) · audit (journal, notes) · trust (signatures) · nodes (Redis,
//!         Memcached, simulated) · secret · forge · notify · metrics      one system each
//!         (and their small utilities: redact · clock · http_error)
//!           │
//! pure    spec ─► diff ─► plan ─► rollout ◄─ gates     owned data in, owned data out:
//!         catalog · live · protocol · drift · schedule  no tokio, git2, reqwest or clock
//!         windows · identity · reconciler (the core) · render
//! ```
//!
//! - [`pure`]: the decisions. `spec` turns a file set into a validated
//!   [`pure::spec::model::Desired`] or every error at once; `diff`, `plan`, `drift` compare;
//!   `rollout` is the staged rollout's state machine; `reconciler` is the core that turns
//!   revisions and reports into rollouts and assignments; `render` is every output.
//! - [`edges`]: one external system per module.
//! - [`flow`]: the one place that knows the order of each job.
//! - [`entry`]: what a user or a forge calls.
#![forbid(unsafe_code)]

pub mod pure {
    //! The pure core: owned data in, owned data out, tested without servers.
    pub mod catalog;
    pub mod console;
    pub mod diff;
    pub mod drift;
    pub mod gates;
    pub mod identity;
    pub mod live;
    pub mod plan;
    pub mod protocol;
    pub mod reconciler;
    pub mod render;
    pub mod rollout;
    pub mod schedule;
    pub mod shards;
    pub mod spec;
    pub mod topology;
    pub mod windows;
}

pub mod edges {
    //! The edges: each module talks to one external system.
    pub mod api;
    pub mod audit;
    pub mod clock;
    pub mod etcd;
    pub mod forge;
    pub mod http_error;
    pub mod live_file;
    pub mod metrics;
    pub mod nodes;
    pub mod notify;
    pub mod process;
    pub mod redact;
    pub mod secret;
    pub mod source;
    pub mod trust;
}

pub mod flow {
    //! Orchestration: the one place that knows the order of the steps of each job.
    pub mod agent;
    pub mod backoff;
    pub mod history;
    pub mod pipeline;
    pub mod runtime;
}

pub mod entry {
    //! The entry points: the command line, the server, and the jobs they start.
    pub mod cli;
    pub mod demo;
    pub mod output;
    pub mod server;
    pub mod sync;
}
