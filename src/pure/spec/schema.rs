//! The embedded JSON Schemas (draft 2020-12), compiled once, and the conversion of
//! `jsonschema` errors into owned findings with people-friendly messages. Errors are
//! converted at once because they borrow the instance.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::Validator;
use serde_json::Value;

/// The schema of every config document, dispatching on `kind`.
pub const DOCUMENT_SCHEMA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/cacheflow.schema.json"
));
/// The schema of a live-state snapshot (`plan --live`).
pub const LIVE_STATE_SCHEMA: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/schemas/live-state.schema.json"
));

/// One schema violation, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// JSON pointer of the offending value.
    pub pointer: String,
    /// True when the position to report is the key at `pointer` rather than its value.
    pub at_key: bool,
    pub message: String,
}

/// A JSON Schema that does not compile. The cause is kept as text: jsonschema's error
/// borrows the schema, and an embedded schema's error is kept (`Clone`) for every later
/// call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(String);

fn compile(text: &str, name: &str) -> Result<Validator, SchemaError> {
    let broken = |e: &dyn std::fmt::Display| SchemaError(format!("embedded {name}: {e}"));
    let schema: Value = serde_json::from_str(text).map_err(|e| broken(&e))?;
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .map_err(|e| broken(&e))
}

/// The compiled document validator. The embedded schema is checked by a unit test.
pub fn document_validator() -> Result<&'static Validator, SchemaError> {
    static V: OnceLock<Result<Validator, SchemaError>> = OnceLock::new();
    V.get_or_init(|| compile(DOCUMENT_SCHEMA, "schemas/cacheflow.schema.json"))
        .as_ref()
        .map_err(Clone::clone)
}

/// The compiled live-state validator.
pub fn live_state_validator() -> Result<&'static Validator, SchemaError> {
    static V: OnceLock<Result<Validator, SchemaError>> = OnceLock::new();
    V.get_or_init(|| compile(LIVE_STATE_SCHEMA, "schemas/live-state.schema.json"))
        .as_ref()
        .map_err(Clone::clone)
}

/// Compile a user-supplied schema (a repository's `policies/*.schema.json`). Draft
/// 2020-12 unless the schema names another in `$schema`. No remote references are
/// fetched: the crate is built without HTTP resolving.
pub fn compile_policy(schema: &Value) -> Result<Validator, SchemaError> {
    jsonschema::validator_for(schema).map_err(|e| SchemaError(e.to_string()))
}

/// Every violation as an indented line `  /pointer: message`, for errors about a whole
/// JSON payload (a live-state file, a report, an assignment).
pub fn problem_lines(validator: &Validator, instance: &Value) -> Vec<String> {
    findings(validator, instance)
        .into_iter()
        .map(|f| {
            let at = if f.pointer.is_empty() {
                "/"
            } else {
                &f.pointer
            };
            format!("  {at}: {}", f.message)
        })
        .collect()
}

/// Validate `instance`, returning every violation with a readable message. Values under
/// a secret reference are never echoed.
pub fn findings(validator: &Validator, instance: &Value) -> Vec<Finding> {
    // Most documents are valid: the yes-or-no check is several times cheaper than
    // collecting errors, which only a document that fails it pays for.
    if validator.is_valid(instance) {
        return Vec::new();
    }
    let mut out: Vec<Finding> = Vec::new();
    for error in validator.iter_errors(instance) {
        error_findings(&error, &mut out);
    }
    out.sort_by(|a, b| a.pointer.cmp(&b.pointer).then(a.message.cmp(&b.message)));
    out.dedup();
    out
}

/// One validation error as findings (an unknown-fields error is one per field).
fn error_findings(error: &jsonschema::ValidationError<'_>, out: &mut Vec<Finding>) {
    let pointer = error.instance_path().as_str().to_owned();
    let keyword_location = error
        .absolute_keyword_location()
        .map(|u| u.as_str().to_owned())
        .unwrap_or_default();
    let schema_path = error.schema_path().as_str().to_owned();
    let location = format!("{keyword_location} {schema_path}");
    let is = |def: &str| location.contains(&format!("/$defs/{def}/"));
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                out.push(Finding {
                    pointer: format!("{pointer}/{}", super::yaml::escape_token(name)),
                    at_key: true,
                    message: format!("unknown field `{name}`{}", suggestion(&pointer)),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(Finding {
                pointer: pointer.clone(),
                at_key: false,
                message: format!("missing required field `{name}`"),
            });
        }
        _ if is("secretRef") => out.push(Finding {
            pointer,
            at_key: false,
            message: "must be a secret reference (env:NAME or file:PATH); the secret itself never belongs in the repository (value redacted)".to_owned(),
        }),
        _ if is("duration") => out.push(Finding {
            message: format!(
                "{} is not a duration such as 30s, 5m, 1h30m or 250ms",
                error.instance()
            ),
            pointer,
            at_key: false,
        }),
        _ if is("stage") => out.push(Finding {
            message: format!(
                "{} is not a stage: use a node count (1) or a percentage (\"25%\")",
                error.instance()
            ),
            pointer,
            at_key: false,
        }),
        _ if is("name") && matches!(error.kind(), ValidationErrorKind::Pattern { .. }) => {
            out.push(Finding {
                message: format!(
                    "{} is not a valid name: use lower-case letters, digits and dashes",
                    error.instance()
                ),
                pointer,
                at_key: false,
            })
        }
        // The validator's own text for `not` prints the schema; say it plainly.
        ValidationErrorKind::Not { .. } => out.push(Finding {
            message: format!("{} is not allowed here", error.instance()),
            pointer,
            at_key: false,
        }),
        // Type and size errors never print the value: it may be a secret written
        // where a reference belongs, or a whole document.
        ValidationErrorKind::Type { kind } => out.push(Finding {
            message: type_message(kind, error.instance(), &pointer),
            pointer,
            at_key: false,
        }),
        ValidationErrorKind::MinItems { limit } => out.push(Finding {
            message: format!(
                "needs at least {limit} item{}",
                if *limit == 1 { "" } else { "s" }
            ),
            pointer,
            at_key: false,
        }),
        _ if is_secret_path(&pointer) => out.push(Finding {
            message: error.masked().to_string(),
            pointer,
            at_key: false,
        }),
        ValidationErrorKind::Enum { options } => out.push(Finding {
            message: format!("{} is not one of {}", error.instance(), one_of(options)),
            pointer,
            at_key: false,
        }),
        _ => out.push(Finding {
            message: error.to_string(),
            pointer,
            at_key: false,
        }),
    }
}

/// "expected a string, found an integer: 3". Type errors never print a long value or
/// one under a secret: it may be a secret written where a reference belongs, or a whole
/// document.
fn type_message(kind: &TypeKind, instance: &Value, pointer: &str) -> String {
    let expected: Vec<String> = match kind {
        TypeKind::Single(t) => vec![a_type(&t.to_string())],
        TypeKind::Multiple(set) => set.iter().map(|t| a_type(&t.to_string())).collect(),
    };
    let mut found = a_type(&jsonschema::JsonType::from(instance).to_string());
    // Show a short scalar, unless it may be a secret.
    if !is_secret_path(pointer)
        && !instance.is_object()
        && !instance.is_array()
        && instance.to_string().len() <= 40
    {
        found = format!("{found}: {instance}");
    }
    format!("expected {}, found {found}", expected.join(" or "))
}

/// An enum's options, comma-separated.
fn one_of(options: &Value) -> String {
    options
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| options.to_string())
}

/// "a string", "an object" — for messages.
fn a_type(t: &str) -> String {
    let t = match t {
        "object" => "mapping",
        "array" => "list",
        other => other,
    };
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {t}")
    } else {
        format!("a {t}")
    }
}

/// Values under these pointers may hold a secret someone wrote by mistake.
fn is_secret_path(pointer: &str) -> bool {
    pointer.starts_with("/spec/auth")
        || pointer == "/spec/tls/key"
        || (pointer.starts_with("/spec/notifications/") && pointer.ends_with("/url"))
}

/// A hint for the common misplacements.
fn suggestion(pointer: &str) -> &'static str {
    if pointer.is_empty() {
        " (a document has apiVersion, kind, metadata and spec)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_schemas_compile() {
        assert!(document_validator().is_ok());
        assert!(live_state_validator().is_ok());
    }

    #[test]
    fn a_literal_password_is_refused_without_echoing_it() {
        let doc = json!({
            "apiVersion": "cacheflow/v1", "kind": "Cluster", "metadata": {"name": "a"},
            "spec": {"engine": "redis", "auth": {"password": "hunter2"},
                     "nodes": [{"id": "n1", "address": "127.0.0.1:6379"}]}
        });
        let f = findings(document_validator().unwrap(), &doc);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].pointer, "/spec/auth/password");
        assert!(!f[0].message.contains("hunter2"));
        assert!(f[0].message.contains("secret reference"));
    }

    #[test]
    fn tls_takes_a_file_ca_and_a_client_certificate_only_with_its_key() {
        let doc = |tls: serde_json::Value| {
            json!({
                "apiVersion": "cacheflow/v1", "kind": "Cluster", "metadata": {"name": "a"},
                "spec": {"engine": "redis", "tls": tls,
                         "nodes": [{"id": "n1", "address": "127.0.0.1:6380"}]}
            })
        };
        let v = document_validator().unwrap();
        let ok = doc(json!({"ca": "file:/ca.pem", "cert": "file:/c.pem",
                            "key": "env:KEY", "serverName": "cache.internal"}));
        assert_eq!(findings(v, &ok), vec![]);
        let lonely = findings(
            v,
            &doc(json!({"ca": "file:/ca.pem", "cert": "file:/c.pem"})),
        );
        assert_eq!(lonely.len(), 1, "{lonely:?}");
        assert_eq!(lonely[0].pointer, "/spec/tls");
        assert_eq!(findings(v, &doc(json!({"ca": "env:CA"}))).len(), 1);
        let literal = findings(
            v,
            &doc(json!({"ca": "file:/ca.pem", "cert": "file:/c.pem",
                        "key": "-----BEGIN PRIVATE KEY-----"})),
        );
        assert_eq!(literal.len(), 1, "{literal:?}");
        assert!(!literal[0].message.contains("PRIVATE"), "{literal:?}");
    }

    #[test]
    fn unknown_fields_point_at_their_key() {
        let doc = json!({
            "apiVersion": "cacheflow/v1", "kind": "Profile", "metadata": {"name": "a"},
            "spec": {"engine": "redis", "parameters": {}, "paramters": {}}
        });
        let f = findings(document_validator().unwrap(), &doc);
        assert_eq!(
            f,
            vec![Finding {
                pointer: "/spec/paramters".into(),
                at_key: true,
                message: "unknown field `paramters`".into()
            }]
        );
    }
}
