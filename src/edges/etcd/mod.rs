//! etcd through its v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`, `/v3/auth/authenticate`)
//! over the reqwest client the rest of cacheflow uses: one TLS stack (native-tls) and one
//! runtime (tokio), no gRPC stack of its own (docs/architecture.md says why). Keys and
//! values travel base64-encoded, 64-bit integers as strings, as the gateway speaks them.
//!
//! A list of endpoints is tried in turn: a member that does not answer (refused,
//! timed out, a 5xx) sends the request to the next one, and the client stays on the
//! member that answered last. With a user, the token from `/v3/auth/authenticate` goes
//! with every request and is fetched again when etcd says it expired. The password is
//! never printed: errors carry etcd's message, never the request.
//!
//! [`election`] campaigns for one shard's leader key bound to a lease; [`journal`] keeps
//! the reconciler's state and entries under that key's fence; [`members`] keeps each
//! replica's membership key, the list of live replicas.

pub mod election;
pub mod group;
pub mod journal;
pub mod members;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::edges::redact::redact_url;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered (every one refused, timed out or failed with a 5xx).
    #[error("no etcd endpoint answered {path} ({tried})")]
    Unreachable { path: String, tried: String },
    /// etcd answered with an error of its own (a 4xx: a bad request, a missing lease).
    #[error("etcd refused {path}: {message}")]
    Refused { path: String, message: String },
    #[error("etcd authentication failed for user {user}: {message}")]
    Auth { user: String, message: String },
    #[error("etcd answered {path} with something unexpected: {message}")]
    BadAnswer { path: String, message: String },
    #[error("etcd client setup: {0}")]
    Setup(String),
}

/// What an etcd client needs: the members, TLS, a user.
#[derive(Clone, Default)]
pub struct EtcdOptions {
    /// `http(s)://host:port` of each member.
    pub endpoints: Vec<String>,
    /// The CA that signed the members' certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) and its PKCS#8 key, for members that ask for one.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// A user and password for etcd's own authentication.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Bound of one request (a lease keepalive must answer well within the TTL).
    pub timeout: Duration,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "(redacted)"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One key as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub lease: i64,
}

/// One operation of a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: String,
    },
    /// Every key from `key` up to (not including) `end`.
    DeleteRange {
        key: String,
        end: String,
    },
}

/// One compare of a transaction.
#[derive(Debug, Clone)]
pub enum Compare {
    /// The key's create revision is this (0: the key does not exist).
    CreateRevision { key: String, revision: i64 },
}

/// A transaction's outcome: whether the compares held, and the revision it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnOutcome {
    pub succeeded: bool,
    pub revision: i64,
}

pub struct EtcdClient {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint that answered last.
    current: AtomicUsize,
    user: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// An int64 of the gateway's JSON: a string (or a number from older gateways).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The key after every key that starts with `prefix` (etcd's range end of a prefix).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    "\0".to_owned()
}

impl EtcdClient {
    pub fn new(options: &EtcdOptions) -> Result<EtcdClient, EtcdError> {
        if options.endpoints.is_empty() {
            return Err(EtcdError::Setup("no etcd endpoint given".to_owned()));
        }
        let read = |p: &PathBuf| {
            std::fs::read(p)
                .map_err(|e| EtcdError::Setup(format!("cannot read {}: {e}", p.display())))
        };
        let timeout = if options.timeout.is_zero() {
            Duration::from_secs(5)
        } else {
            options.timeout
        };
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &options.ca_file {
            let cert = reqwest::Certificate::from_pem(&read(ca)?)
                .map_err(|e| EtcdError::Setup(format!("{}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        if let (Some(cert), Some(key)) = (&options.cert_file, &options.key_file) {
            let identity =
                reqwest::Identity::from_pkcs8_pem(&read(cert)?, &read(key)?).map_err(|e| {
                    EtcdError::Setup(format!(
                        "{} and {} (a PEM certificate and its PKCS#8 key): {e}",
                        cert.display(),
                        key.display()
                    ))
                })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| EtcdError::Setup(e.to_string()))?;
        Ok(EtcdClient {
            http,
            endpoints: options
                .endpoints
                .iter()
                .map(|e| e.trim_end_matches('/').to_owned())
                .collect(),
            current: AtomicUsize::new(0),
            user: match (&options.user, &options.password) {
                (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                _ => None,
            },
            token: Mutex::new(None),
        })
    }

    /// POST `body` to `path` on the first member that answers, starting with the one
    /// that answered last. A 4xx is etcd's answer (not a reason to try another member).
    pub async fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        match self.call_once(path, body).await {
            Err(EtcdError::Refused { message, .. })
                if self.user.is_some() && token_expired(&message) =>
            {
                self.token_clear();
                self.call_once(path, body).await
            }
            other => other,
        }
    }

    fn token_clear(&self) {
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
    }

    /// Endpoint `at` failed: the next call starts with the one after it (a member that
    /// hangs must not take every call's whole time again).
    fn skip(&self, at: usize) {
        let _ = self.current.compare_exchange(
            at,
            (at + 1) % self.endpoints.len(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    async fn call_once(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let token = self.token().await?;
        let n = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut tried = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let url = format!("{}{path}", self.endpoints[at]);
            let mut request = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            if let Some(t) = &token {
                request = request.header("Authorization", t);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    tried.push(format!(
                        "{}: {}",
                        redact_url(&self.endpoints[at]),
                        crate::edges::http_error::describe(&e)
                    ));
                    self.skip(at);
                    continue;
                }
            };
            let status = response.status();
            let text = match response.text().await {
                Ok(t) => t,
                Err(e) => {
                    tried.push(format!(
                        "{}: {}",
                        redact_url(&self.endpoints[at]),
                        crate::edges::http_error::describe(&e)
                    ));
                    self.skip(at);
                    continue;
                }
            };
            if status.is_server_error() {
                tried.push(format!(
                    "{}: {status} {}",
                    redact_url(&self.endpoints[at]),
                    message_of(&text)
                ));
                self.skip(at);
                continue;
            }
            self.current.store(at, Ordering::Relaxed);
            if !status.is_success() {
                return Err(EtcdError::Refused {
                    path: path.to_owned(),
                    message: format!("{status} {}", message_of(&text)),
                });
            }
            // A streaming answer (`/v3/lease/keepalive`) is one JSON object per line.
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("{}");
            let value: Value = serde_json::from_str(first).map_err(|e| EtcdError::BadAnswer {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            if let Some(error) = value.get("error") {
                return Err(EtcdError::Refused {
                    path: path.to_owned(),
                    message: message_of(&error.to_string()),
                });
            }
            return Ok(value);
        }
        Err(EtcdError::Unreachable {
            path: path.to_owned(),
            tried: tried.join("; "),
        })
    }

    /// The authentication token, fetched once per expiry.
    async fn token(&self) -> Result<Option<String>, EtcdError> {
        let Some((user, password)) = &self.user else {
            return Ok(None);
        };
        if let Some(t) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Ok(Some(t));
        }
        let n = self.endpoints.len();
        let mut tried = Vec::new();
        for at in 0..n {
            let url = format!("{}/v3/auth/authenticate", self.endpoints[at]);
            let body = json!({"name": user, "password": password});
            let request = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    tried.push(crate::edges::http_error::describe(&e));
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_server_error() {
                tried.push(format!("{status}"));
                continue;
            }
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let Some(token) = value.get("token").and_then(Value::as_str) else {
                return Err(EtcdError::Auth {
                    user: user.clone(),
                    message: message_of(&text),
                });
            };
            if let Ok(mut t) = self.token.lock() {
                *t = Some(token.to_owned());
            }
            return Ok(Some(token.to_owned()));
        }
        Err(EtcdError::Unreachable {
            path: "/v3/auth/authenticate".to_owned(),
            tried: tried.join("; "),
        })
    }

    /// A lease of `ttl` seconds: its id.
    pub async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self
            .call("/v3/lease/grant", &json!({"TTL": ttl.as_secs().max(1)}))
            .await?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::BadAnswer {
                path: "/v3/lease/grant".to_owned(),
                message: "no lease id".to_owned(),
            });
        }
        Ok(id)
    }

    /// Renew a lease: the seconds it has left (0: it has expired).
    pub async fn keepalive(&self, lease: i64) -> Result<i64, EtcdError> {
        let v = self
            .call("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
            .await?;
        Ok(int(&v["result"]["TTL"]))
    }

    pub async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .await
            .map(|_| ())
    }

    /// One key, if it exists.
    pub async fn get(&self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let v = self
            .call("/v3/kv/range", &json!({"key": b64(key.as_bytes())}))
            .await?;
        Ok(kvs(&v).into_iter().next())
    }

    /// Every key that starts with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<Kv>, EtcdError> {
        let v = self
            .call(
                "/v3/kv/range",
                &json!({"key": b64(prefix.as_bytes()), "range_end": b64(prefix_end(prefix).as_bytes())}),
            )
            .await?;
        Ok(kvs(&v))
    }

    /// If every compare holds, do `then`; all at one revision or nothing.
    pub async fn txn(&self, compare: &[Compare], then: &[Op]) -> Result<TxnOutcome, EtcdError> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|c| match c {
                Compare::CreateRevision { key, revision } => json!({
                    "key": b64(key.as_bytes()),
                    "target": "CREATE",
                    "result": "EQUAL",
                    "create_revision": revision.to_string(),
                }),
            })
            .collect();
        let success: Vec<Value> = then
            .iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    let mut put = json!({"key": b64(key.as_bytes()), "value": b64(value)});
                    if *lease != 0 {
                        put["lease"] = json!(lease.to_string());
                    }
                    json!({"request_put": put})
                }
                Op::Delete { key } => json!({"request_delete_range": {"key": b64(key.as_bytes())}}),
                Op::DeleteRange { key, end } => json!({"request_delete_range": {
                    "key": b64(key.as_bytes()), "range_end": b64(end.as_bytes())}}),
            })
            .collect();
        let v = self
            .call(
                "/v3/kv/txn",
                &json!({"compare": compare, "success": success}),
            )
            .await?;
        Ok(TxnOutcome {
            succeeded: v["succeeded"].as_bool().unwrap_or(false),
            revision: int(&v["header"]["revision"]),
        })
    }
}

/// The keys of a range answer.
fn kvs(v: &Value) -> Vec<Kv> {
    let Some(list) = v["kvs"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|kv| {
            let key = unb64(kv["key"].as_str()?)?;
            Some(Kv {
                key: String::from_utf8_lossy(&key).into_owned(),
                value: kv["value"].as_str().and_then(unb64).unwrap_or_default(),
                create_revision: int(&kv["create_revision"]),
                mod_revision: int(&kv["mod_revision"]),
                lease: int(&kv["lease"]),
            })
        })
        .collect()
}

/// etcd's own words from an error body (`{"error": "...", "message": "..."}`), bounded.
fn message_of(text: &str) -> String {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = value
        .get("message")
        .or_else(|| value.get("error"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| text.trim().to_owned());
    message.chars().take(300).collect()
}

fn token_expired(message: &str) -> bool {
    message.contains("invalid auth token")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_range_end_of_a_prefix_is_the_next_key_after_all_of_it() {
        assert_eq!(prefix_end("/cacheflow/shard/0/"), "/cacheflow/shard/00");
        assert_eq!(prefix_end("a"), "b");
    }

    #[test]
    fn the_password_is_not_in_the_options_debug_text() {
        let o = EtcdOptions {
            user: Some("root".into()),
            password: Some("hunter2-secret".into()),
            ..EtcdOptions::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }

    #[test]
    fn a_range_answer_reads_as_keys_with_their_revisions() {
        let v = json!({"kvs": [{"key": b64(b"/k"), "value": b64(b"v"),
            "create_revision": "7", "mod_revision": "9", "lease": "42"}]});
        assert_eq!(
            kvs(&v),
            vec![Kv {
                key: "/k".into(),
                value: b"v".to_vec(),
                create_revision: 7,
                mod_revision: 9,
                lease: 42
            }]
        );
    }
}
