//! The Memcached driver: reads and changes a memcached 1.6 node over its text protocol.
//!
//! `read` asks `version` (its round trip is the latency), `stats` (health) and
//! `stats settings` (the parameters, as memcached prints them). `apply` turns each
//! run-time parameter into the protocol command the catalog records for it
//! (`cache_memlimit 64`, `lru tune 20 40 0.5 2`, `lru_crawler disable`, ...), checks the
//! reply, then checks with `stats settings` that the value took, and puts back what it
//! changed when a later parameter is refused.
//!
//! Every command is followed by the meta no-op `mn` and the reply is everything before
//! its `MN`: not every memcached reply has a terminator (`stats sizes_enable` answers one
//! `STAT` line and no `END`), and this way no reply needs a timeout to end.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::tls::NodeStream;
use super::{Applied, BoxFuture, NodeDriver, NodeError};
use crate::edges::secret;
use crate::pure::catalog::{catalog, Catalog, Engine, ParamSpec, ParamType, ValueError};
use crate::pure::live::{Health, NodeLive};
use crate::pure::spec::model::{Auth, Role, Tls};

/// Default bound of one network step (connect, one command) and of a whole `read`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time a change may take to show in `stats settings` (`lru_crawler disable`
/// lands when the crawler thread stops).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// How often `stats settings` is asked while a change settles.
const SETTLE_POLL: Duration = Duration::from_millis(20);
/// Longest reply line accepted. memcached's own lines are under 300 bytes (`stats`
/// values, error messages); a longer one is not memcached.
const MAX_LINE: usize = 4096;
/// Largest reply accepted (`stats settings` is about 3 KiB, `stats` about 4 KiB).
const MAX_REPLY: usize = 256 * 1024;

/// memcached's answer to a command before `-Y` authentication.
const UNAUTHENTICATED: &str = "CLIENT_ERROR unauthenticated";

/// A memcached node reached directly over TCP, or over TLS (`memcached -Z`).
#[derive(Debug)]
pub struct MemcachedDriver {
    address: String,
    /// `-Y` authentication, sent first on every connection.
    auth: Option<Auth>,
    /// Reach the node over TLS (and never in plaintext) when set.
    tls: Option<Tls>,
    timeout: Duration,
    settle: Duration,
    /// The previous `stats` sample, so that a later `read` can turn counters into rates.
    last: Mutex<Option<Sample>>,
}

/// Counters of one `stats` answer, for rates between two reads.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// `uptime`: a restart in between resets the counters, which must not become a
    /// negative rate.
    uptime: u64,
    ops: u64,
    evictions: u64,
}

impl MemcachedDriver {
    /// A driver for the memcached at `address` (`host:port`) with the default timeouts.
    pub fn new(address: impl Into<String>) -> MemcachedDriver {
        MemcachedDriver {
            address: address.into(),
            auth: None,
            tls: None,
            timeout: DEFAULT_TIMEOUT,
            settle: DEFAULT_SETTLE,
            last: Mutex::new(None),
        }
    }

    /// Bound each network step (connect, one command) and each whole `read` by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> MemcachedDriver {
        self.timeout = timeout;
        self
    }

    /// Authenticate every connection with `auth` (memcached `-Y`: a user and a password
    /// reference, resolved at each connect).
    pub fn with_auth(mut self, auth: Option<Auth>) -> MemcachedDriver {
        self.auth = auth;
        self
    }

    /// Reach the node over TLS as `tls` says (a cluster's `spec.tls`), or in plaintext
    /// with `None`.
    pub fn with_tls(mut self, tls: Option<Tls>) -> MemcachedDriver {
        self.tls = tls;
        self
    }

    /// How long an accepted change may take to show in `stats settings`.
    pub fn with_settle_time(mut self, settle: Duration) -> MemcachedDriver {
        self.settle = settle;
        self
    }

    fn timed_out(&self) -> NodeError {
        NodeError::TimedOut {
            address: self.address.clone(),
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn protocol(&self, message: impl Into<String>) -> NodeError {
        NodeError::Protocol {
            address: self.address.clone(),
            message: message.into(),
        }
    }

    fn refused(&self, parameter: &str, message: impl Into<String>) -> NodeError {
        NodeError::Refused {
            address: self.address.clone(),
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }

    async fn connect(&self) -> Result<Conn, NodeError> {
        // Resolve before connecting: a missing secret is not the node's fault.
        let credentials = match &self.auth {
            Some(auth) => Some(self.credentials(auth)?),
            None => None,
        };
        let stream: Box<dyn NodeStream> = match &self.tls {
            Some(tls) => Box::new(super::tls::connect(&self.address, tls, self.timeout).await?),
            None => {
                let connecting = TcpStream::connect(self.address.as_str());
                match tokio::time::timeout(self.timeout, connecting).await {
                    Err(_) => return Err(self.timed_out()),
                    Ok(Err(e)) => {
                        return Err(NodeError::Unreachable {
                            address: self.address.clone(),
                            message: e.to_string(),
                        })
                    }
                    Ok(Ok(stream)) => {
                        // Commands are small and answered one at a time: no Nagle delay.
                        let _ = stream.set_nodelay(true);
                        Box::new(stream)
                    }
                }
            }
        };
        let mut conn = Conn {
            stream: BufReader::new(stream),
            answered: false,
        };
        if let Some(credentials) = credentials {
            self.authenticate(&mut conn, &credentials).await?;
        }
        Ok(conn)
    }

    /// `user password`, the token `-Y` authentication sends; refused when it cannot be
    /// sent as one line.
    fn credentials(&self, auth: &Auth) -> Result<String, NodeError> {
        let failed = |message: &str| NodeError::AuthFailed {
            address: self.address.clone(),
            message: message.to_owned(),
        };
        let user = auth
            .username
            .as_deref()
            .ok_or_else(|| failed("memcached authentication needs a user name"))?;
        if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(failed("the user name must be one word"));
        }
        let password = secret::resolve(&auth.password)?;
        if password.contains(['\r', '\n', '\0']) {
            return Err(failed(&format!(
                "the password of {} holds a line break: memcached cannot take it",
                auth.password
            )));
        }
        Ok(format!("{user} {password}"))
    }

    /// memcached's text authentication (`-Y`): the token as the value of a `set`. The key
    /// is ignored by an authenticating memcached; one without `-Y` stores it, so it is
    /// sent already expired (exptime -1) and nothing lingers readable.
    async fn authenticate(&self, conn: &mut Conn, token: &str) -> Result<(), NodeError> {
        let request = format!("set cacheflow-auth 0 -1 {}\r\n{token}\r\n", token.len());
        let reply = match tokio::time::timeout(self.timeout, conn.send_line(&request)).await {
            Err(_) => return Err(self.timed_out()),
            Ok(Ok(line)) => line,
            Ok(Err(WireError::Io(e))) => {
                return Err(NodeError::Unreachable {
                    address: self.address.clone(),
                    message: format!("connection lost during authentication: {e}"),
                })
            }
            Ok(Err(WireError::Closed)) => {
                return Err(NodeError::AuthFailed {
                    address: self.address.clone(),
                    message: format!("the node closed the connection{}", self.hung_up_hint(conn)),
                })
            }
            Ok(Err(WireError::Garbage(why))) => {
                return Err(self.protocol(format!("reply to authentication: {why}")))
            }
        };
        match reply.as_str() {
            "STORED" => Ok(()),
            // `CLIENT_ERROR authentication failure`: memcached's own words, which never
            // repeat the token.
            other if other.starts_with("CLIENT_ERROR") || other.starts_with("ERROR") => {
                Err(NodeError::AuthFailed {
                    address: self.address.clone(),
                    message: clip(other).to_string(),
                })
            }
            other => Err(self.protocol(format!("authentication answered `{}`", clip(other)))),
        }
    }

    /// Words for a node that hung up before it answered anything on this connection: a
    /// TLS port hangs up on a plaintext client, a node that wants a client certificate
    /// on a TLS client without one.
    fn hung_up_hint(&self, conn: &Conn) -> &'static str {
        match (&self.tls, conn.answered) {
            (_, true) => "",
            (None, false) => " (a TLS port? a cluster whose nodes speak TLS needs `tls:`)",
            (Some(_), false) => " (does the node want a client certificate, tls.cert and tls.key?)",
        }
    }

    /// One command under the step timeout, its reply lines, or a `NodeError`.
    async fn command(&self, conn: &mut Conn, line: &str) -> Result<Vec<String>, NodeError> {
        let unauthenticated = || NodeError::AuthFailed {
            address: self.address.clone(),
            message: "the node asks for authentication (memcached -Y): give the cluster \
                      `auth:` with a username and a password"
                .to_owned(),
        };
        match tokio::time::timeout(self.timeout, conn.command(line)).await {
            Err(_) => Err(self.timed_out()),
            Ok(Ok(lines)) if lines.first().map(String::as_str) == Some(UNAUTHENTICATED) => {
                Err(unauthenticated())
            }
            Ok(Err(WireError::Garbage(why))) if why.contains(UNAUTHENTICATED) => {
                Err(unauthenticated())
            }
            Ok(Ok(lines)) => {
                conn.answered = true;
                Ok(lines)
            }
            Ok(Err(WireError::Io(e))) => Err(NodeError::Unreachable {
                address: self.address.clone(),
                message: format!(
                    "connection lost during `{line}`: {e}{}",
                    match e.kind() {
                        io::ErrorKind::ConnectionReset => self.hung_up_hint(conn),
                        _ => "",
                    }
                ),
            }),
            Ok(Err(WireError::Closed)) => Err(NodeError::Unreachable {
                address: self.address.clone(),
                message: format!(
                    "the node closed the connection during `{line}`{}",
                    self.hung_up_hint(conn)
                ),
            }),
            Ok(Err(WireError::Garbage(why))) => {
                Err(self.protocol(format!("reply to `{line}`: {why}")))
            }
        }
    }

    /// `stats` or `stats settings` as a map, in memcached's own text.
    async fn stats(
        &self,
        conn: &mut Conn,
        line: &str,
    ) -> Result<BTreeMap<String, String>, NodeError> {
        let lines = self.command(conn, line).await?;
        parse_stats(&lines).map_err(|why| self.protocol(format!("reply to `{line}`: {why}")))
    }

    async fn read_live(&self) -> Result<NodeLive, NodeError> {
        let mut conn = self.connect().await?;
        let started = Instant::now();
        let reply = self.command(&mut conn, "version").await?;
        let latency = started.elapsed();
        let version = match reply.as_slice() {
            [line] => line.strip_prefix("VERSION ").map(str::to_owned),
            _ => None,
        }
        .ok_or_else(|| self.protocol(format!("`version` answered {}", shown(&reply))))?;
        let stats = self.stats(&mut conn, "stats").await?;
        let parameters = self.stats(&mut conn, "stats settings").await?;
        let health = self.health(&stats, latency)?;
        Ok(NodeLive {
            engine: Some(Engine::Memcached),
            address: Some(self.address.clone()),
            version: Some(version),
            reachable: true,
            parameters,
            // memcached has no config file of its own; what a service manager starts it
            // with (/etc/memcached.conf) is the agent's business.
            persisted: None,
            health: Some(health),
            ..NodeLive::default()
        })
    }

    fn health(
        &self,
        stats: &BTreeMap<String, String>,
        latency: Duration,
    ) -> Result<Health, NodeError> {
        let number = |name: &str| -> Result<Option<u64>, NodeError> {
            match stats.get(name) {
                None => Ok(None),
                Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                    self.protocol(format!("`stats` {name} is `{}`, not a counter", clip(v)))
                }),
            }
        };
        let hits = number("get_hits")?;
        let misses = number("get_misses")?;
        let evictions = number("evictions")?;
        let hit_ratio = match (hits, misses) {
            (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
            _ => None,
        };
        // Rates need two samples: the previous `read` of this driver, if any, and this
        // one. The first read of a node has none (an agent reads every interval, so its
        // reports have them from the second on). Taking a second sample inside one read
        // would add a sleep to every snapshot.
        let now = match (
            number("uptime")?,
            number("cmd_get")?,
            number("cmd_set")?,
            evictions,
        ) {
            (Some(uptime), Some(get), Some(set), Some(evictions)) => Some(Sample {
                at: Instant::now(),
                uptime,
                ops: get + set,
                evictions,
            }),
            _ => None,
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let (ops_per_sec, evictions_per_sec) = match (*last, now) {
            (Some(a), Some(b)) => rates(a, b),
            _ => (None, None),
        };
        if now.is_some() {
            *last = now;
        }
        Ok(Health {
            used_memory: number("bytes")?,
            max_memory: number("limit_maxbytes")?,
            keyspace_hits: hits,
            keyspace_misses: misses,
            hit_ratio,
            evicted_keys: evictions,
            evictions_per_sec,
            // Includes this connection of the driver.
            connected_clients: number("curr_connections")?,
            ops_per_sec,
            latency_ms: Some(latency.as_secs_f64() * 1000.0),
            role: Some(Role::Primary),
            replication_link: None,
            keys: number("curr_items")?,
            uptime_seconds: number("uptime")?,
            topology: None,
        })
    }

    async fn apply_all(&self, params: &BTreeMap<String, String>) -> Result<Applied, NodeError> {
        let cat = catalog(Engine::Memcached);
        // Everything that can be refused without asking the node is refused first, so
        // that a set with a start-only or malformed parameter changes nothing.
        let mut targets = BTreeMap::new();
        for (name, value) in params {
            let spec = cat.get(name).ok_or_else(|| {
                self.refused(name, format!("unknown memcached parameter `{name}`"))
            })?;
            if !spec.runtime {
                return Err(NodeError::NeedsRestart {
                    address: self.address.clone(),
                    parameter: name.clone(),
                });
            }
            let target =
                normalize(cat, name, value).map_err(|e| self.refused(name, e.to_string()))?;
            targets.insert(name.clone(), (spec, target));
        }

        let mut conn = self.connect().await?;
        let before = self.stats(&mut conn, "stats settings").await?;
        // Values before, normalised; the commands that set the targets (other parameters
        // of a shared command take their target when they are part of this set, so that
        // `hot_lru_pct` 20→50 with `warm_lru_pct` 40→20 is one valid `lru tune 50 20 ..`
        // rather than a refused 50+40) and the commands that put the old values back.
        let mut old = BTreeMap::new();
        for name in targets.keys() {
            let text = before.get(name).ok_or_else(|| {
                self.refused(
                    name,
                    "this memcached does not report it in `stats settings`",
                )
            })?;
            let value = normalize(cat, name, text).map_err(|e| {
                self.protocol(format!("`stats settings` {name} is `{}`: {e}", clip(text)))
            })?;
            old.insert(name.clone(), value);
        }
        let mut fill_new = BTreeMap::new();
        for (name, text) in &before {
            let value = match targets.get(name) {
                Some((_, target)) => target.clone(),
                None => normalize(cat, name, text).unwrap_or_else(|_| text.clone()),
            };
            fill_new.insert(name.clone(), value);
        }
        let mut fill_old = fill_new.clone();
        fill_old.extend(old.clone());

        let mut steps = Vec::new();
        for (name, (spec, target)) in &targets {
            if old[name] == *target {
                continue;
            }
            let forward = command_for(cat, spec, target, &fill_new)
                .map_err(|e| self.refused(name, e.to_string()))?;
            let back = command_for(cat, spec, &old[name], &fill_old)
                .map_err(|e| self.refused(name, format!("cannot be put back afterwards: {e}")))?;
            steps.push(Step {
                name: name.clone(),
                target: target.clone(),
                old: old[name].clone(),
                old_text: before[name].clone(),
                forward,
                back,
            });
        }

        let mut done: Vec<&Step> = Vec::new();
        for step in &steps {
            super::fence::check(&self.address)?;
            match self
                .run(&mut conn, &step.name, &step.forward, &step.target)
                .await
            {
                Ok(()) => done.push(step),
                Err(failure) => {
                    // The refused parameter itself is put back too unless memcached said
                    // no outright: an `OK` that did not show, or a lost reply, may have
                    // changed it.
                    if !failure.untouched {
                        done.push(step);
                    }
                    return Err(self.roll_back(conn, failure, &step.name, &done).await);
                }
            }
        }
        Ok(Applied {
            changed: steps
                .iter()
                .map(|s| (s.name.clone(), Some(s.old_text.clone())))
                .collect(),
            persisted: false,
        })
    }

    /// Send one change, check memcached's answer, wait until `stats settings` shows it.
    async fn run(
        &self,
        conn: &mut Conn,
        name: &str,
        command: &str,
        target: &str,
    ) -> Result<(), Failure> {
        let reply = self
            .command(conn, command)
            .await
            .map_err(Failure::transport)?;
        if !accepted(&reply) {
            // memcached's own words: `ERROR hot and warm pcts must not exceed 80`.
            return Err(Failure {
                message: said(&reply),
                transport: None,
                untouched: true,
            });
        }
        let deadline = Instant::now() + self.settle;
        loop {
            let settings = self
                .stats(conn, "stats settings")
                .await
                .map_err(Failure::transport)?;
            let now = settings.get(name).map(String::as_str).unwrap_or("");
            if normalize(catalog(Engine::Memcached), name, now).as_deref() == Ok(target) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure {
                    message: format!(
                        "`{command}` answered {} but `stats settings` still says {name} {}",
                        shown(&reply),
                        clip(now)
                    ),
                    transport: None,
                    untouched: false,
                });
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }

    /// Put back `done` (newest first) after `failure` of `parameter`, and say what
    /// happened: the refusal when everything is back, `RollbackFailed` otherwise.
    async fn roll_back(
        &self,
        conn: Conn,
        failure: Failure,
        parameter: &str,
        done: &[&Step],
    ) -> NodeError {
        if done.is_empty() {
            return failure.into_error(self, parameter);
        }
        // After a lost reply the connection may still deliver it later: start afresh.
        let mut conn = match failure.transport {
            Some(_) => match self.connect().await {
                Ok(c) => c,
                Err(e) => return self.rollback_failed(failure, parameter, done, e.to_string()),
            },
            None => conn,
        };
        // A value goes back only where the node still holds what this apply set: one
        // that holds another since (a person, the next leader) is newer and stays.
        let now = self.stats(&mut conn, "stats settings").await.ok();
        let newer = |step: &Step| {
            let Some(text) = now.as_ref().and_then(|n| n.get(&step.name)) else {
                return false;
            };
            let have = normalize(catalog(Engine::Memcached), &step.name, text);
            have.is_ok_and(|h| h != step.target && h != step.old)
        };
        // What could not be put back, and why. A refused step does not stop the others
        // (each command stands alone); a lost connection does.
        let mut left: Vec<&Step> = Vec::new();
        let mut errors = Vec::new();
        let mut lost = false;
        for step in done.iter().rev().copied() {
            if lost {
                left.push(step);
                continue;
            }
            // The failed step itself may show neither value yet (an `OK` that did not
            // show): it goes back as before.
            if step.name != parameter && newer(step) {
                continue;
            }
            if let Err(e) = super::fence::check(&self.address) {
                errors.push(e.to_string());
                left.push(step);
                continue;
            }
            // Some commands refuse while an earlier change is still landing (`lru_crawler
            // enable` right after `lru_crawler disable` answers "failed to start lru
            // crawler thread" until the old thread is gone): a rollback tries again
            // within the settle time.
            let deadline = Instant::now() + self.settle;
            loop {
                match self.run(&mut conn, &step.name, &step.back, &step.old).await {
                    Ok(()) => break,
                    Err(f) if f.untouched && Instant::now() < deadline => {
                        tokio::time::sleep(SETTLE_POLL).await;
                    }
                    Err(f) => {
                        lost = f.transport.is_some();
                        errors.push(format!("{}: {}", step.name, f.message));
                        left.push(step);
                        break;
                    }
                }
            }
        }
        if left.is_empty() {
            failure.into_error(self, parameter)
        } else {
            left.reverse();
            self.rollback_failed(failure, parameter, &left, errors.join("; "))
        }
    }

    /// `left`: the changes still in force, in the order they were made.
    fn rollback_failed(
        &self,
        failure: Failure,
        parameter: &str,
        done: &[&Step],
        restore_error: String,
    ) -> NodeError {
        NodeError::RollbackFailed {
            address: self.address.clone(),
            parameter: parameter.to_owned(),
            message: failure.message,
            restore: done
                .iter()
                .map(|s| format!("{} {}", s.name, s.old_text))
                .collect::<Vec<_>>()
                .join(", "),
            restore_error,
        }
    }
}

impl NodeDriver for MemcachedDriver {
    fn engine(&self) -> Engine {
        Engine::Memcached
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn read(&self) -> BoxFuture<'_, Result<NodeLive, NodeError>> {
        Box::pin(async move {
            tokio::time::timeout(self.timeout, self.read_live())
                .await
                .unwrap_or_else(|_| Err(self.timed_out()))
        })
    }

    /// Each network step is bounded by the timeout, not the whole apply: cutting an
    /// apply off in the middle would leave the node half applied, where a failed step
    /// still gets its rollback.
    fn apply<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Applied, NodeError>> {
        Box::pin(self.apply_all(params))
    }
}

/// One parameter change of an apply.
#[derive(Debug)]
struct Step {
    name: String,
    /// Normalised target and old value, as compared with `stats settings`.
    target: String,
    old: String,
    /// The old value as memcached printed it, for `Applied::changed`.
    old_text: String,
    forward: String,
    back: String,
}

/// Why one change did not take.
#[derive(Debug)]
struct Failure {
    /// memcached's own reply, or what went wrong.
    message: String,
    /// A timeout, a lost connection or garbage: the error to return once put back.
    transport: Option<NodeError>,
    /// memcached refused outright, so the parameter itself was not changed.
    untouched: bool,
}

impl Failure {
    fn transport(error: NodeError) -> Failure {
        Failure {
            message: error.to_string(),
            transport: Some(error),
            untouched: false,
        }
    }

    fn into_error(self, driver: &MemcachedDriver, parameter: &str) -> NodeError {
        match self.transport {
            Some(e) => e,
            None => driver.refused(parameter, self.message),
        }
    }
}

/// Normalise a value the way the catalog does, as text.
fn normalize(cat: &Catalog, name: &str, value: &str) -> Result<String, ValueError> {
    cat.normalize(name, &serde_json::Value::String(value.to_owned()))
}

/// Why no command sets a parameter to a value.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error("memcached has no command that makes it {0}")]
    NoCommandFor(String),
    #[error("memcached has no command that changes it")]
    NoCommand,
    #[error("`{template}` needs {other}, which this memcached does not report")]
    Unreported { template: String, other: String },
    #[error("unclosed `{{` in `{0}`")]
    Unclosed(String),
    #[error(transparent)]
    Unit(#[from] UnitError),
}

/// A value that is not a whole number of the unit its command takes.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("`{0}` is not a whole number of bytes")]
    NotBytes(String),
    #[error("{bytes} bytes is not a whole number of {unit}; memcached takes it in those")]
    NotWhole { bytes: u64, unit: String },
}

/// The protocol command that sets `name` to the normalised `value`; `fill` holds the
/// values that `{other}` placeholders stand for.
fn command_for(
    cat: &Catalog,
    spec: &ParamSpec,
    value: &str,
    fill: &BTreeMap<String, String>,
) -> Result<String, CommandError> {
    if let ParamType::Bool { true_word, .. } = &spec.ty {
        let command = if value == true_word {
            &spec.command_true
        } else {
            &spec.command_false
        };
        return command
            .clone()
            .ok_or_else(|| CommandError::NoCommandFor(value.to_owned()));
    }
    let template = spec.command.as_deref().ok_or(CommandError::NoCommand)?;
    fill_template(template, &|other| {
        if other.is_empty() {
            return Ok(in_command_unit(spec, value)?);
        }
        let v = fill.get(other).ok_or_else(|| CommandError::Unreported {
            template: template.to_owned(),
            other: other.to_owned(),
        })?;
        match cat.get(other) {
            Some(s) => Ok(in_command_unit(s, v)?),
            None => Ok(v.clone()),
        }
    })
}

/// `{}` and `{name}` in `template`, replaced by `value_of("")` / `value_of("name")`.
fn fill_template(
    template: &str,
    value_of: &dyn Fn(&str) -> Result<String, CommandError>,
) -> Result<String, CommandError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| c + open)
            .ok_or_else(|| CommandError::Unclosed(template.to_owned()))?;
        out.push_str(&value_of(&rest[open + 1..close])?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A normalised value in the unit its command and its flag take (`maxbytes` bytes →
/// megabytes).
pub(crate) fn in_command_unit(spec: &ParamSpec, value: &str) -> Result<String, UnitError> {
    let Some(unit) = spec.flag_unit.filter(|u| *u > 1) else {
        return Ok(value.to_owned());
    };
    let n: u64 = value
        .parse()
        .map_err(|_| UnitError::NotBytes(value.to_owned()))?;
    if !n.is_multiple_of(unit) {
        return Err(UnitError::NotWhole {
            bytes: n,
            unit: unit_name(unit),
        });
    }
    Ok((n / unit).to_string())
}

fn unit_name(unit: u64) -> String {
    match unit {
        1024 => "kilobytes (1024 bytes)".to_owned(),
        1_048_576 => "megabytes (1048576 bytes)".to_owned(),
        n => format!("units of {n} bytes"),
    }
}

/// Whether memcached took a change: `OK`, or the `STAT sizes_status` line of
/// `stats sizes_enable` / `stats sizes_disable`. Anything else (`ERROR ...`,
/// `CLIENT_ERROR ...`, `SERVER_ERROR ...`, `MEMLIMIT_TOO_SMALL ...`,
/// `STAT sizes_status error`) is a refusal.
fn accepted(reply: &[String]) -> bool {
    match reply {
        [line] => {
            line == "OK"
                || line == "STAT sizes_status enabled"
                || line == "STAT sizes_status disabled"
        }
        _ => false,
    }
}

/// A reply that is not a stats reply; the lines shown are clipped.
#[derive(Debug, thiserror::Error)]
enum StatsError {
    #[error("empty reply")]
    Empty,
    #[error("expected STAT lines and END, got {0}")]
    NoEnd(String),
    #[error("expected a STAT line, got `{0}`")]
    NotAStat(String),
}

/// `STAT name value` lines up to `END` as a map; anything else is not a stats reply.
fn parse_stats(lines: &[String]) -> Result<BTreeMap<String, String>, StatsError> {
    let Some((last, stats)) = lines.split_last() else {
        return Err(StatsError::Empty);
    };
    if last != "END" {
        return Err(StatsError::NoEnd(shown(lines)));
    }
    let mut out = BTreeMap::new();
    for line in stats {
        let (name, value) = line
            .strip_prefix("STAT ")
            .and_then(|rest| rest.split_once(' ').or(Some((rest, ""))))
            .filter(|(name, _)| !name.is_empty())
            .ok_or_else(|| StatsError::NotAStat(clip(line)))?;
        out.insert(name.to_owned(), value.to_owned());
    }
    Ok(out)
}

fn rates(a: Sample, b: Sample) -> (Option<f64>, Option<f64>) {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    // Under a millisecond apart the quotient is noise; a smaller uptime is a restart.
    if secs < 0.001 || b.uptime < a.uptime || b.ops < a.ops || b.evictions < a.evictions {
        return (None, None);
    }
    (
        Some((b.ops - a.ops) as f64 / secs),
        Some((b.evictions - a.evictions) as f64 / secs),
    )
}

/// A refusal as memcached said it: its lines, clipped, joined by `; `.
fn said(lines: &[String]) -> String {
    if lines.is_empty() {
        return "an empty reply".to_owned();
    }
    let mut parts: Vec<String> = lines.iter().take(3).map(|l| clip(l)).collect();
    if lines.len() > 3 {
        parts.push(format!("and {} more lines", lines.len() - 3));
    }
    parts.join("; ")
}

/// Reply lines for a message: at most a few, each clipped.
fn shown(lines: &[String]) -> String {
    if lines.is_empty() {
        return "nothing".to_owned();
    }
    let mut parts: Vec<String> = lines
        .iter()
        .take(3)
        .map(|l| format!("`{}`", clip(l)))
        .collect();
    if lines.len() > 3 {
        parts.push(format!("and {} more lines", lines.len() - 3));
    }
    parts.join(", ")
}

/// At most 120 characters of a line from the node.
fn clip(s: &str) -> String {
    const MAX: usize = 120;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

/// One connection speaking the text protocol.
struct Conn {
    stream: BufReader<Box<dyn NodeStream>>,
    /// The node answered a command on this connection (so a hang-up is not a TLS
    /// mismatch).
    answered: bool,
}

#[derive(Debug)]
enum WireError {
    Io(io::Error),
    /// The node closed the connection before any byte of the reply.
    Closed,
    /// Bytes that are not a memcached reply.
    Garbage(String),
}

impl Conn {
    /// Send `line` and `mn`, return the reply lines before `MN`.
    async fn command(&mut self, line: &str) -> Result<Vec<String>, WireError> {
        if line.contains(['\r', '\n']) {
            return Err(WireError::Garbage("a command must be one line".to_owned()));
        }
        let request = format!("{line}\r\nmn\r\n");
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(WireError::Io)?;
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            let line = match self.read_line().await {
                Ok(line) => line,
                Err(WireError::Closed) if total > 0 => {
                    return Err(WireError::Garbage(format!(
                        "the connection closed in the middle of the reply after {}",
                        shown(&lines)
                    )))
                }
                Err(e) => return Err(e),
            };
            total += line.len() + 2;
            if line == "MN" {
                return Ok(lines);
            }
            // A `-Y` memcached answers this to the first command before authentication
            // and drops the rest of what was sent, `mn` included.
            if line == UNAUTHENTICATED && lines.is_empty() {
                lines.push(line);
                return Ok(lines);
            }
            if total > MAX_REPLY {
                return Err(WireError::Garbage(format!(
                    "the reply exceeds {MAX_REPLY} bytes without ending"
                )));
            }
            lines.push(line);
        }
    }

    /// Send `request` as it is and return the one line that answers it.
    async fn send_line(&mut self, request: &str) -> Result<String, WireError> {
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(WireError::Io)?;
        self.read_line().await
    }

    /// One `\n`-terminated line without its `\r\n`, at most `MAX_LINE` bytes, UTF-8.
    async fn read_line(&mut self) -> Result<String, WireError> {
        let mut bytes = Vec::new();
        loop {
            let buf = self.stream.fill_buf().await.map_err(WireError::Io)?;
            if buf.is_empty() {
                return Err(if bytes.is_empty() {
                    WireError::Closed
                } else {
                    WireError::Garbage("the connection closed in the middle of a line".to_owned())
                });
            }
            let (take, end) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            bytes.extend_from_slice(&buf[..take]);
            self.stream.consume(take);
            if bytes.len() > MAX_LINE + 2 {
                return Err(WireError::Garbage(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
            if end {
                break;
            }
        }
        bytes.pop();
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        String::from_utf8(bytes).map_err(|e| {
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            WireError::Garbage(format!("a reply line that is not UTF-8: `{}`", clip(&text)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn stats_replies_parse_and_anything_else_is_refused() {
        let m = parse_stats(&lines(&[
            "STAT pid 12",
            "STAT inter NULL",
            "STAT odd",
            "END",
        ]))
        .unwrap();
        assert_eq!(m["pid"], "12");
        assert_eq!(m["inter"], "NULL");
        assert_eq!(m["odd"], "");
        assert!(parse_stats(&lines(&["STAT pid 1"])).is_err());
        assert!(parse_stats(&lines(&["hello", "END"])).is_err());
        assert!(parse_stats(&[]).is_err());
    }

    #[test]
    fn only_ok_and_a_sizes_status_count_as_accepted() {
        assert!(accepted(&lines(&["OK"])));
        assert!(accepted(&lines(&["STAT sizes_status enabled"])));
        assert!(!accepted(&lines(&[
            "STAT sizes_status error",
            "STAT sizes_error no_memory"
        ])));
        assert!(!accepted(&lines(&[
            "MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m"
        ])));
        assert!(!accepted(&lines(&["ERROR"])));
        assert!(!accepted(&[]));
    }

    #[test]
    fn commands_are_filled_in_the_unit_memcached_takes() {
        let cat = catalog(Engine::Memcached);
        let fill: BTreeMap<String, String> = [
            ("hot_lru_pct", "20"),
            ("warm_lru_pct", "40"),
            ("hot_max_factor", "0.5"),
            ("warm_max_factor", "2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = |name: &str, value: &str| command_for(cat, cat.get(name).unwrap(), value, &fill);
        assert_eq!(c("maxbytes", "33554432").unwrap(), "cache_memlimit 32");
        assert!(c("maxbytes", "33554433")
            .unwrap_err()
            .to_string()
            .contains("megabytes"));
        assert_eq!(c("warm_lru_pct", "30").unwrap(), "lru tune 20 30 0.5 2");
        assert_eq!(c("lru_crawler", "no").unwrap(), "lru_crawler disable");
        assert_eq!(c("track_sizes", "yes").unwrap(), "stats sizes_enable");
        assert_eq!(
            c("lru_crawler_sleep", "100").unwrap(),
            "lru_crawler sleep 100"
        );
    }

    #[test]
    fn rates_need_two_samples_of_one_server_life() {
        let t = Instant::now();
        let a = Sample {
            at: t,
            uptime: 10,
            ops: 100,
            evictions: 5,
        };
        let b = Sample {
            at: t + Duration::from_secs(2),
            uptime: 12,
            ops: 300,
            evictions: 9,
        };
        assert_eq!(rates(a, b), (Some(100.0), Some(2.0)));
        let restarted = Sample {
            uptime: 1,
            ops: 3,
            ..b
        };
        assert_eq!(rates(a, restarted), (None, None));
    }

    #[test]
    fn long_lines_from_a_node_are_clipped_in_messages() {
        let s = "é".repeat(500);
        assert_eq!(clip(&s).chars().count(), 123);
    }
}
