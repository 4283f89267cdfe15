//! cacheflow: GitOps for cache fleets.
//!
//! ```text
//! source ──► spec ──► diff ◄── live ◄── nodes
//!  (git)   (load,      │
//!          validate)   ▼
//!                    plan ──► rollout ──► nodes
//! ```
//!
//! `nodes` reads and changes cache nodes (Redis, Memcached, simulated) and snapshots a
//! fleet. `source` reads the config repository from git; `spec` turns its files into a validated
//! [`spec::model::Desired`] or every error at once; `catalog` knows each engine's parameters;
//! `live` is what nodes report; `diff`, `plan` and `drift` are pure functions over those; `rollout`
//! is the pure state machine of one staged rollout; `render`
//! prints them as text, JSON or Markdown; `notify` sends what happened to chat and webhook
//! targets; `forge` reads pull-request webhooks and answers them with a commit status and one
//! edited comment through GitHub's, Gitea's or GitLab's REST API; `demo` runs the whole loop
//! on a simulated fleet; `cli` is the command line.
#![forbid(unsafe_code)]

pub mod audit;
pub mod catalog;
pub mod cli;
pub mod demo;
pub mod diff;
pub mod drift;
pub mod forge;
pub mod gates;
pub mod history;
pub mod identity;
pub mod live;
pub mod metrics;
pub mod nodes;
pub mod notify;
pub mod pipeline;
pub mod plan;
pub mod reconciler;
pub mod render;
pub mod rollout;
pub mod schedule;
pub mod server;
pub mod source;
pub mod spec;
pub mod sync;
pub mod trust;
pub mod windows;
