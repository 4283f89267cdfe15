//! The agent ↔ server protocol, version 1: the report an agent posts about its node and
//! the assignment the server answers with. Both are JSON, described by
//! `schemas/node-protocol.schema.json` and `docs/node-protocol.md`.
//!
//! ```text
//! agent ── POST /api/v1/nodes/{id}/report  (Authorization: Bearer cf1.…, a Report) ──► server
//! agent ◄── 200 application/json (an Assignment) ─────────────────────────────────── server
//! ```
//!
//! Both sides check the other's payload against the schema before using it, and refuse a
//! `version` they do not know, so a payload of another version is an error, never
//! half-understood.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::pure::catalog::Engine;
use crate::pure::live::NodeLive;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// The schema of reports and assignments (embedded; also on disk for editors).
pub const PROTOCOL_SCHEMA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/node-protocol.schema.json"
));
/// Largest report or assignment accepted (a Redis node's full parameter set is ~10 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// The response header by which a server names the optional report fields it reads
/// (beyond those of protocol version 1 as first published); an agent sends such a field
/// only to a server that named it, so that an older server, whose schema is closed,
/// never sees one. Its value: names separated by commas.
pub const READS_HEADER: &str = "cacheflow-reads";
/// The live topology in a report's `node.health.topology`.
pub const READS_TOPOLOGY: &str = "topology";
/// A Redis Cluster member's view in a report's `node.health.topology.cluster`.
pub const READS_CLUSTER: &str = "cluster";
/// The engine's uptime in a report's `node.health.uptimeSeconds`.
pub const READS_UPTIME: &str = "uptime";
/// Every optional field this build's server reads, as its `cacheflow-reads` header says.
pub const READS_ALL: &str = "topology, cluster, uptime";
/// The optional assignment field an agent reads, named by the agent in the
/// `cacheflow-reads` header of its report (the same header, the other way): the server
/// sends `confirmedAt` only to an agent that named it.
pub const READS_CONFIRMED: &str = "confirmed";

/// Whether a `cacheflow-reads` header value names `field`.
pub fn reads_names(header: &str, field: &str) -> bool {
    header.split(',').any(|f| f.trim() == field)
}

/// What an agent says about its node, every interval and at once after an apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub version: u32,
    pub node_id: String,
    /// `cacheflow/0.1.0`: which agent build sent it.
    pub agent: String,
    /// When the report was made, RFC 3339 UTC.
    pub sent_at: String,
    /// The node as the agent read it just now, in the live-state format. `revision` in
    /// it is the config revision the node last applied in full, when the agent knows it.
    pub node: NodeLive,
    /// The last assignment the agent tried to apply and what came of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_apply: Option<ApplyResult>,
}

/// The outcome of applying one assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    pub revision: String,
    pub generation: u64,
    pub outcome: Outcome,
    /// Parameters whose value changed (empty when the node already ran the assignment).
    #[serde(default)]
    pub changed: Vec<String>,
    /// True when the engine was restarted for start-only parameters.
    #[serde(default)]
    pub restarted: bool,
    /// Why it failed, with the engine's own words; absent when applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the apply ended, RFC 3339 UTC.
    pub finished_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every parameter of the assignment is in force (and persisted where the node can).
    Applied,
    /// Nothing was applied: the node runs what it ran before.
    Failed,
    /// The apply failed and putting the node back failed too: a person must look at it.
    Inconsistent,
}

/// What the server wants the node to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    pub version: u32,
    pub node_id: String,
    /// The config revision the parameters come from; absent when the server has nothing
    /// for the node yet (it then only collects reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Raised by the server each time it wants the assignment applied again, even at
    /// the same revision (to retry after a failure, or to correct drift). An agent
    /// applies an assignment once per (revision, generation).
    #[serde(default)]
    pub generation: u64,
    /// Engine parameters, as the engine spells them, with normalised values.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// Whether the agent may restart the engine for start-only parameters now. The
    /// rollout grants it only to the nodes of the batch in progress.
    #[serde(default)]
    pub restart_allowed: bool,
    /// When to report next, in seconds; the agent's own interval when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_interval_secs: Option<u64>,
    /// The cluster's catalog version (`spec.version`, major.minor) the agent checks the
    /// values against; absent (an older server): the engine's default catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<String>,
    /// The cluster's product when it is not the protocol's own (`valkey`); absent: the
    /// protocol's (`redis`, `memcached`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Parameters set under `uncheckedParameters`: applied as written, checked by the
    /// engine alone (credentials are still refused).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchecked: Vec<String>,
    /// When this node reported this (revision, generation) applied (its own
    /// `finishedAt`): an agent that restarted does not apply it again to an engine running
    /// since before then (a difference is drift). Sent only to an agent that names
    /// `confirmed` in its `cacheflow-reads` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
}

/// Why a payload was refused; says where (a JSON pointer) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("{what} is {size} bytes; the limit is {MAX_PAYLOAD_BYTES}")]
    TooLarge { what: &'static str, size: usize },
    #[error("{what} is not JSON: line {line}, column {column}: {message}")]
    NotJson {
        what: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{what} has protocol version {found}; this cacheflow speaks version {PROTOCOL_VERSION}"
    )]
    UnsupportedVersion { what: &'static str, found: String },
    #[error("{what} does not match schemas/node-protocol.schema.json:\n{}", .problems.join("\n"))]
    Invalid {
        what: &'static str,
        problems: Vec<String>,
    },
}

impl Report {
    /// Parse and check a report (the server side).
    pub fn parse(bytes: &[u8]) -> Result<Report, PayloadError> {
        let mut report: Report = parse(bytes, "report", "report")?;
        let mut problems = Vec::new();
        let mut time = |pointer: &str, text: &str| {
            if chrono::DateTime::parse_from_rfc3339(text).is_err() {
                problems.push(format!(
                    "  {pointer}: `{}` is not an RFC 3339 time such as 2026-01-01T00:00:00Z",
                    text.chars().take(64).collect::<String>()
                ));
            }
        };
        time("/sentAt", &report.sent_at);
        if let Some(a) = &report.last_apply {
            time("/lastApply/finishedAt", &a.finished_at);
        }
        if !problems.is_empty() {
            return Err(PayloadError::Invalid {
                what: "report",
                problems,
            });
        }
        // Credentials a node holds never enter the server's state (an agent of this
        // build leaves them out; one of another build may not).
        if let Some(engine) = report.node.engine {
            // Any version's credentials: the server does not know the node's version.
            let secret = |name: &str| crate::pure::catalog::is_credential(engine, name);
            report.node.parameters.retain(|name, _| !secret(name));
            if let Some(persisted) = &mut report.node.persisted {
                persisted.retain(|name, _| !secret(name));
            }
        }
        Ok(report)
    }

    pub fn engine(&self) -> Option<Engine> {
        self.node.engine
    }
}

impl Assignment {
    /// Parse and check an assignment (the agent side).
    pub fn parse(bytes: &[u8]) -> Result<Assignment, PayloadError> {
        parse(bytes, "assignment", "assignment")
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    def: &str,
) -> Result<T, PayloadError> {
    if bytes.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge {
            what,
            size: bytes.len(),
        });
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(bytes);
        let (line, column, message) = crate::pure::spec::json_error_position(&text, &e);
        PayloadError::NotJson {
            what,
            line,
            column,
            message,
        }
    })?;
    if let Some(v) = value.get("version") {
        if v.as_u64() != Some(PROTOCOL_VERSION as u64) {
            return Err(PayloadError::UnsupportedVersion {
                what,
                found: v.to_string(),
            });
        }
    }
    let invalid = |problems| PayloadError::Invalid { what, problems };
    let validator = validator(def).map_err(|e| invalid(vec![e.to_string()]))?;
    let problems = crate::pure::spec::schema::problem_lines(validator, &value);
    if !problems.is_empty() {
        return Err(invalid(problems));
    }
    serde_json::from_value(value).map_err(|e| invalid(vec![format!("  {e}")]))
}

/// The embedded protocol schema does not compile (the unit tests make sure it does). A
/// text, not the cause: it is kept for every later call, so it must be `Clone`, and
/// jsonschema's error borrows the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("embedded schemas/node-protocol.schema.json: {0}")]
pub struct EmbeddedSchemaError(String);

/// The validator of `$defs/{def}` of the protocol schema. The schema refers to the
/// live-state schema for the node; that reference is served from the embedded copy,
/// never fetched.
fn validator(def: &str) -> Result<&'static jsonschema::Validator, EmbeddedSchemaError> {
    type Cell = OnceLock<Result<jsonschema::Validator, EmbeddedSchemaError>>;
    static REPORT: Cell = OnceLock::new();
    static ASSIGNMENT: Cell = OnceLock::new();
    let cell = if def == "report" {
        &REPORT
    } else {
        &ASSIGNMENT
    };
    cell.get_or_init(|| {
        let mut schema: serde_json::Value = serde_json::from_str(PROTOCOL_SCHEMA)
            .map_err(|e| EmbeddedSchemaError(e.to_string()))?;
        // Validate against one definition: the root of the file says "a report or an
        // assignment", and each side accepts only the one it expects.
        schema["$ref"] = serde_json::Value::String(format!("#/$defs/{def}"));
        if let Some(o) = schema.as_object_mut() {
            o.remove("oneOf");
        }
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_retriever(EmbeddedSchemas)
            .build(&schema)
            .map_err(|e| EmbeddedSchemaError(e.to_string()))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Serves `live-state.schema.json` (the relative reference in the protocol schema) from
/// the binary; any other reference is an error.
struct EmbeddedSchemas;

impl jsonschema::Retrieve for EmbeddedSchemas {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.as_str().ends_with("/live-state.schema.json") {
            Ok(serde_json::from_str(
                crate::pure::spec::schema::LIVE_STATE_SCHEMA,
            )?)
        } else {
            Err(format!("{} is not an embedded schema", uri.as_str()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_assignment_round_trips() {
        let text = br#"{"version":1,"nodeId":"n1","revision":"abc","generation":3,
            "parameters":{"maxmemory":"100"},"restartAllowed":true}"#;
        let a = Assignment::parse(text).unwrap();
        assert_eq!(a.parameters["maxmemory"], "100");
        assert_eq!(a.generation, 3);
        assert!(a.restart_allowed);
        let again = Assignment::parse(serde_json::to_string(&a).unwrap().as_bytes()).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn a_report_round_trips_with_its_node() {
        let r = Report {
            version: 1,
            node_id: "n1".into(),
            agent: "cacheflow/0.1.0".into(),
            sent_at: "2026-01-01T00:00:00Z".into(),
            node: NodeLive {
                reachable: true,
                engine: Some(Engine::Redis),
                parameters: [("maxmemory".to_owned(), "100".to_owned())].into(),
                ..Default::default()
            },
            last_apply: Some(ApplyResult {
                revision: "abc".into(),
                generation: 1,
                outcome: Outcome::Failed,
                changed: vec![],
                restarted: false,
                error: Some("refused".into()),
                finished_at: "2026-01-01T00:00:00Z".into(),
            }),
        };
        let text = serde_json::to_vec(&r).unwrap();
        assert_eq!(Report::parse(&text).unwrap(), r);
        // Credentials a node holds are dropped on the server's side too.
        let mut with = r.clone();
        for name in ["requirepass", "masteruser", "tls-key-file-pass"] {
            with.node.parameters.insert(name.into(), "s3cret".into());
        }
        with.node.persisted = Some([("masterauth".to_owned(), "s3cret".to_owned())].into());
        let parsed = Report::parse(&serde_json::to_vec(&with).unwrap()).unwrap();
        assert_eq!(parsed.node.parameters, r.node.parameters);
        assert_eq!(parsed.node.persisted, Some(BTreeMap::new()));
    }

    #[test]
    fn bad_payloads_say_where_and_why() {
        let e = Assignment::parse(b"{\"version\": 1,\n \"nodeId\": ").unwrap_err();
        assert!(
            e.to_string().starts_with("assignment is not JSON: line 2"),
            "{e}"
        );
        let e = Assignment::parse(br#"{"version": 2, "nodeId": "n1"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "assignment has protocol version 2; this cacheflow speaks version 1"
        );
        let e =
            Assignment::parse(br#"{"version": 1, "nodeId": "n1", "parameters": {"maxmemory": 5}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("/parameters/maxmemory"), "{e}");
        let e = Report::parse(br#"{"version": 1, "nodeId": "n1", "agent": "x", "sentAt": "t", "node": {"reachable": "yes"}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("/node/reachable"), "{e}");
        // Times are RFC 3339; the value is quoted (a time is no secret), cut at 64 chars.
        let e = Report::parse(
            br#"{"version": 1, "nodeId": "n1", "agent": "x", "sentAt": "yesterday", "node": {"reachable": true}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "report does not match schemas/node-protocol.schema.json:\n  /sentAt: `yesterday` is not an RFC 3339 time such as 2026-01-01T00:00:00Z"
        );
        // A report is not an assignment.
        let e =
            Assignment::parse(br#"{"version": 1, "nodeId": "n1", "node": {"reachable": true}}"#)
                .unwrap_err();
        assert!(e.to_string().contains("unknown field `node`"), "{e}");
    }
}
