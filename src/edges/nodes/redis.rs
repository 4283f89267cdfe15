//! The Redis driver: reads a node over RESP (`CONFIG GET *`, `INFO`, `PING`, its config
//! file) and applies a parameter set as one unit: `CONFIG GET` (the values before),
//! `CONFIG SET` of all that differ, `CONFIG GET` (the read back), pipelined in one round
//! trip, then `CONFIG REWRITE` when the server runs from a config file.
//!
//! All or nothing: Redis 7 applies a multi-parameter `CONFIG SET` atomically (one refused
//! value and none is changed; checked against the real server by the integration tests).
//! The driver still re-reads and puts back after an error reply, because an older or
//! patched server may not, and because a failed `CONFIG REWRITE` comes after the live
//! change and has to be undone by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use redis::{AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, RedisConnectionInfo};
use tokio::sync::Mutex;

use crate::edges::nodes::{fence, Applied, BoxFuture, NodeDriver, NodeError};
use crate::edges::secret;
use crate::pure::catalog::{self, Engine};
use crate::pure::live::{
    ClusterMember, ClusterView, Health, LinkState, NodeLive, ReplicaLink, Topology,
};
use crate::pure::spec::model::{Auth, Role, Tls};

/// Largest config file read for the persisted view.
const MAX_CONFIG_FILE_BYTES: u64 = 4 << 20;

/// Parameters whose values are credentials (`secret` in any Redis or Valkey catalog;
/// `primaryauth`/`primaryuser` are Valkey 8's names): never reported, neither live nor
/// persisted, so no snapshot, plan, drift report or journal carries them.
pub const SECRET_PARAMETERS: &[&str] = &[
    "requirepass",
    "masterauth",
    "masteruser",
    "primaryauth",
    "primaryuser",
    "tls-key-file-pass",
    "tls-client-key-file-pass",
];

/// A Redis node over RESP. Connects on first use and keeps one multiplexed connection;
/// a connection that failed at the transport level is dropped and made again next time.
pub struct RedisDriver {
    address: String,
    host: String,
    port: u16,
    auth: Option<Auth>,
    /// Reach the node over TLS (and never in plaintext) when set.
    tls: Option<Tls>,
    timeout: Duration,
    session: Mutex<Option<Session>>,
    /// One apply at a time per node: two interleaved applies would read each other's
    /// half-way values as "the value before".
    apply_lock: Mutex<()>,
}

#[derive(Clone)]
struct Session {
    con: MultiplexedConnection,
    /// `INFO server` `config_file` once known: empty when the server runs without one.
    /// It cannot change while the server runs, so it is learnt once per connection.
    config_file: Option<String>,
}

/// What a call gave back when it did not fail at the transport level: a value, or the
/// engine's error reply as it wrote it (`ERR CONFIG SET failed ...`).
pub(super) type Reply = Result<Value, String>;

/// The replies of one [`RedisDriver::get_set_get`] round trip.
struct GetSetGet {
    /// The values before the `CONFIG SET` (of the names the node knows).
    before: BTreeMap<String, String>,
    /// The `CONFIG SET`: `Err` with the engine's words when it was refused.
    set: Result<(), String>,
    /// The values after it (`before` when nothing was set).
    after: BTreeMap<String, String>,
}

/// Name and value pairs as a `CONFIG SET` takes them.
fn pairs(values: &[(String, String)]) -> Vec<(&str, &str)> {
    values
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

impl RedisDriver {
    /// A driver for `address` (`host:port`, `[v6]:port`; port 6379 when omitted) that
    /// connects on first use. Secret references in `auth` are resolved at each connect,
    /// so a rotated secret is picked up on the next connection. Every network call is
    /// bounded by `timeout`.
    pub fn new(address: &str, auth: Option<&Auth>, timeout: Duration) -> RedisDriver {
        let (host, port) = split_address(address);
        RedisDriver {
            address: address.to_owned(),
            host,
            port,
            auth: auth.cloned(),
            tls: None,
            timeout,
            session: Mutex::new(None),
            apply_lock: Mutex::new(()),
        }
    }

    /// Reach the node over TLS as `tls` says (a cluster's `spec.tls`), or in plaintext
    /// with `None`.
    pub fn with_tls(mut self, tls: Option<Tls>) -> RedisDriver {
        self.tls = tls;
        self
    }

    /// Like [`RedisDriver::new`], but connects and authenticates now, so that a wrong
    /// address or password shows at once.
    pub async fn connect(
        address: &str,
        auth: Option<&Auth>,
        timeout: Duration,
    ) -> Result<RedisDriver, NodeError> {
        let driver = RedisDriver::new(address, auth, timeout);
        driver.session().await?;
        Ok(driver)
    }

    fn timed_out(&self) -> NodeError {
        NodeError::TimedOut {
            address: self.address.clone(),
            timeout_ms: self.timeout.as_millis().min(u64::MAX as u128) as u64,
        }
    }

    pub(super) fn protocol(&self, message: impl Into<String>) -> NodeError {
        NodeError::Protocol {
            address: self.address.clone(),
            message: message.into(),
        }
    }

    pub(super) fn refused(&self, parameter: &str, message: String) -> NodeError {
        NodeError::Refused {
            address: self.address.clone(),
            parameter: parameter.to_owned(),
            message,
        }
    }

    /// The current connection, or a new one (connected, authenticated).
    async fn session(&self) -> Result<Session, NodeError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let s = self.open().await?;
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn forget_session(&self) {
        *self.session.lock().await = None;
    }

    async fn remember_config_file(&self, file: &str) {
        if let Some(s) = self.session.lock().await.as_mut() {
            s.config_file = Some(file.to_owned());
        }
    }

    async fn open(&self) -> Result<Session, NodeError> {
        // Resolve before connecting: a missing secret is not the node's fault.
        let credentials = match &self.auth {
            Some(a) => Some((a.username.clone(), secret::resolve(&a.password)?)),
            None => None,
        };
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(self.host.clone(), self.port),
            // No credentials here: AUTH is sent below, so that its error reply is the
            // engine's own words rather than the client library's summary.
            redis: RedisConnectionInfo::default(),
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let mut con = match &self.tls {
            // The handshake is ours (tls.rs): the redis crate's own native-tls support
            // takes neither a private CA nor a client certificate. It gets the stream.
            Some(tls) => {
                let target = match self.host.contains(':') {
                    true => format!("[{}]:{}", self.host, self.port),
                    false => format!("{}:{}", self.host, self.port),
                };
                let stream = super::tls::connect(&target, tls, self.timeout)
                    .await
                    .map_err(|e| readdress(e, &self.address))?;
                // With TLS 1.3 a node that wants a client certificate refuses it after
                // the client finished its handshake, by hanging up: a PING tells it
                // here, in words that say so (the client library sends nothing at
                // connect: no `CLIENT SETINFO`, see Cargo.toml).
                let hung_up = |e: &redis::RedisError| {
                    (e.kind() == redis::ErrorKind::IoError || e.is_connection_dropped()).then(
                        || NodeError::Tls {
                            address: self.address.clone(),
                            message: format!(
                                "the node hung up right after the handshake (does it want a \
                                 client certificate, tls.cert and tls.key?) ({e})"
                            ),
                        },
                    )
                };
                let (con, driver) = tokio::time::timeout(
                    self.timeout,
                    MultiplexedConnection::new_with_config(&info.redis, stream, config),
                )
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|e| hung_up(&e).unwrap_or_else(|| self.transport_error(e, None)))?;
                tokio::spawn(driver);
                let mut con = con;
                tokio::time::timeout(self.timeout, con.send_packed_command(&redis::cmd("PING")))
                    .await
                    .map_err(|_| self.timed_out())?
                    .map_err(|e| hung_up(&e).unwrap_or_else(|| self.transport_error(e, None)))?;
                con
            }
            None => {
                let client = redis::Client::open(info).map_err(|e| self.protocol(e.to_string()))?;
                tokio::time::timeout(
                    self.timeout,
                    client.get_multiplexed_async_connection_with_config(&config),
                )
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|e| self.transport_error(e, None))?
            }
        };
        if let Some((user, password)) = credentials {
            let mut cmd = redis::cmd("AUTH");
            if let Some(user) = &user {
                cmd.arg(user);
            }
            cmd.arg(&password);
            let reply = tokio::time::timeout(self.timeout, con.send_packed_command(&cmd))
                .await
                .map_err(|_| self.timed_out())?
                .map_err(|e| self.transport_error(e, Some(&password)))?;
            match reply {
                Value::Okay => {}
                Value::ServerError(e) => {
                    return Err(NodeError::AuthFailed {
                        address: self.address.clone(),
                        message: scrub(&engine_message(e.code(), e.details()), &password),
                    })
                }
                other => return Err(self.protocol(format!("AUTH answered {}", describe(&other)))),
            }
        }
        Ok(Session {
            con,
            config_file: None,
        })
    }

    /// A transport-level failure of the client library as a `NodeError`. `secret` is
    /// scrubbed from the message should the library ever quote it.
    fn transport_error(&self, e: redis::RedisError, secret: Option<&str>) -> NodeError {
        let message = match secret {
            Some(s) => scrub(&e.to_string(), s),
            None => e.to_string(),
        };
        if e.is_timeout() {
            return self.timed_out();
        }
        if self.tls.is_some() {
            if let Some(message) = super::tls::after_handshake(&message) {
                return NodeError::Tls {
                    address: self.address.clone(),
                    message,
                };
            }
        }
        match e.kind() {
            redis::ErrorKind::IoError => NodeError::Unreachable {
                address: self.address.clone(),
                message: match self.tls {
                    None if hung_up(&message) => format!(
                        "{message} (a TLS port? a cluster whose nodes speak TLS needs `tls:`)"
                    ),
                    _ => message,
                },
            },
            redis::ErrorKind::AuthenticationFailed => NodeError::AuthFailed {
                address: self.address.clone(),
                message,
            },
            // "parse error - ParseError: Parse error at 1" says it three times.
            redis::ErrorKind::ParseError => self.protocol(format!(
                "not a RESP reply ({})",
                e.detail().unwrap_or("unparseable")
            )),
            _ => self.protocol(message),
        }
    }

    /// One command on this node's connection (made when needed): its value, or the
    /// engine's error reply as `Err` inside `Ok`.
    pub(super) async fn command(&self, cmd: &Cmd) -> Result<Reply, NodeError> {
        let mut s = self.session().await?;
        self.call(&mut s, cmd).await
    }

    pub(super) fn address_text(&self) -> &str {
        &self.address
    }

    pub(super) fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }

    pub(super) fn tls(&self) -> Option<Tls> {
        self.tls.clone()
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send one command; an error reply is returned as `Err` inside `Ok`, so the caller
    /// decides what a refusal means. Transport failures drop the connection.
    async fn call(&self, s: &mut Session, cmd: &Cmd) -> Result<Reply, NodeError> {
        let mut replies = self.call_many(s, std::slice::from_ref(cmd)).await?;
        replies.pop().ok_or_else(|| self.protocol("no reply"))
    }

    /// Send several commands in one round trip and read one reply each.
    async fn call_many(&self, s: &mut Session, cmds: &[Cmd]) -> Result<Vec<Reply>, NodeError> {
        let outcome = if let [cmd] = cmds {
            tokio::time::timeout(self.timeout, s.con.send_packed_command(cmd))
                .await
                .map(|r| r.map(|v| vec![v]))
        } else {
            let mut pipe = redis::pipe();
            for cmd in cmds {
                pipe.add_command(cmd.clone());
            }
            tokio::time::timeout(
                self.timeout,
                s.con.send_packed_commands(&pipe, 0, cmds.len()),
            )
            .await
        };
        let values = match outcome {
            Err(_) => {
                // The reply may still come; the connection is no longer in step.
                self.forget_session().await;
                return Err(self.timed_out());
            }
            Ok(Err(e)) => {
                self.forget_session().await;
                return Err(self.transport_error(e, None));
            }
            Ok(Ok(values)) => values,
        };
        if values.len() != cmds.len() {
            self.forget_session().await;
            return Err(self.protocol(format!(
                "{} replies to {} commands",
                values.len(),
                cmds.len()
            )));
        }
        let mut out = Vec::with_capacity(values.len());
        for v in values {
            match v {
                Value::ServerError(e) => {
                    let message = engine_message(e.code(), e.details());
                    if is_auth_error(e.code()) {
                        return Err(NodeError::AuthFailed {
                            address: self.address.clone(),
                            message,
                        });
                    }
                    out.push(Err(message));
                }
                v => out.push(Ok(v)),
            }
        }
        Ok(out)
    }

    /// `CONFIG GET` of several names in one call (Redis 7), as a map of those it knows.
    async fn config_get(
        &self,
        s: &mut Session,
        names: &[&str],
    ) -> Result<BTreeMap<String, String>, NodeError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(names);
        let reply = self.call(s, &cmd).await?;
        let value = reply.map_err(|e| self.refused("CONFIG GET", e))?;
        config_map(&value).map_err(|m| self.protocol(format!("CONFIG GET answered {m}")))
    }

    /// `CONFIG SET` of `values` in one call: `Ok(Err(message))` when the engine refused.
    async fn config_set(
        &self,
        s: &mut Session,
        values: &[(&str, &str)],
    ) -> Result<Result<(), String>, NodeError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("SET");
        for (name, value) in values {
            cmd.arg(*name).arg(*value);
        }
        match self.call(s, &cmd).await? {
            Ok(Value::Okay) => Ok(Ok(())),
            Ok(other) => Err(self.protocol(format!("CONFIG SET answered {}", describe(&other)))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// The server's config file path (empty without one), learnt once per connection.
    async fn config_file(&self, s: &mut Session) -> Result<String, NodeError> {
        if let Some(f) = &s.config_file {
            return Ok(f.clone());
        }
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        let reply = self.call(s, &cmd).await?;
        let value = reply.map_err(|e| self.refused("INFO", e))?;
        let text = value_text(&value)
            .ok_or_else(|| self.protocol(format!("INFO server answered {}", describe(&value))))?;
        let file = parse_info(&text)
            .get("config_file")
            .cloned()
            .unwrap_or_default();
        s.config_file = Some(file.clone());
        self.remember_config_file(&file).await;
        Ok(file)
    }

    /// The fields of `INFO server` and `INFO replication` (`import` reads the engine,
    /// its version and the replication topology from them). Two commands: Redis 6.2
    /// takes one section per `INFO`.
    pub async fn server_and_replication(&self) -> Result<BTreeMap<String, String>, NodeError> {
        let mut s = self.session().await?;
        let mut fields = BTreeMap::new();
        for section in ["server", "replication"] {
            let mut cmd = redis::cmd("INFO");
            cmd.arg(section);
            let value = self
                .call(&mut s, &cmd)
                .await?
                .map_err(|e| self.refused("INFO", e))?;
            let text = value_text(&value).ok_or_else(|| {
                self.protocol(format!("INFO {section} answered {}", describe(&value)))
            })?;
            fields.extend(parse_info(&text));
        }
        Ok(fields)
    }

    /// A full reading; with `only`, of those parameters alone (one `CONFIG GET` of their
    /// names instead of `CONFIG GET *`).
    async fn read_node(&self, only: Option<&BTreeSet<String>>) -> Result<NodeLive, NodeError> {
        let mut s = self.session().await?;

        // Latency: the shorter of two round trips, a PING and the reading's own
        // CONFIG GET with INFO below. One sample measures this process's scheduling as
        // much as the node (a rollout reads many nodes at once on a busy host), and the
        // latency gate must not fail a change for that; a third round trip only for a
        // sample cost every reading of a fleet more than it told.
        let started = Instant::now();
        match self.call(&mut s, &redis::cmd("PING")).await? {
            Ok(Value::SimpleString(p)) if p == "PONG" => {}
            Ok(other) => {
                // Not a Redis, or out of step: whatever follows on it is not to be read.
                self.forget_session().await;
                return Err(self.protocol(format!("PING answered {}", describe(&other))));
            }
            Err(e) => return Err(self.refused("PING", e)),
        }
        let mut latency_ms = started.elapsed().as_secs_f64() * 1000.0;

        let mut config = redis::cmd("CONFIG");
        config.arg("GET");
        match only {
            // CONFIG GET takes glob patterns: only plain names are asked for by name.
            Some(names) if names.iter().all(|n| plain_name(n)) => {
                if names.is_empty() {
                    // No name: a pattern that matches no parameter.
                    config.arg("\u{1}");
                }
                for n in names {
                    config.arg(n);
                }
            }
            _ => {
                config.arg("*");
            }
        }
        let mut info = redis::cmd("INFO");
        info.arg(
            &[
                "server",
                "memory",
                "stats",
                "clients",
                "replication",
                "keyspace",
                "cluster",
            ][..],
        );
        let started = Instant::now();
        let mut replies = self.call_many(&mut s, &[config, info]).await?.into_iter();
        latency_ms = latency_ms.min(started.elapsed().as_secs_f64() * 1000.0);
        let (Some(config), Some(info)) = (replies.next(), replies.next()) else {
            return Err(self.protocol("missing replies to CONFIG GET and INFO"));
        };
        let config = config.map_err(|e| self.refused("CONFIG GET", e))?;
        let mut parameters =
            config_map(&config).map_err(|m| self.protocol(format!("CONFIG GET answered {m}")))?;
        for name in SECRET_PARAMETERS {
            parameters.remove(*name);
        }
        let info = info.map_err(|e| self.refused("INFO", e))?;
        let info = value_text(&info)
            .ok_or_else(|| self.protocol(format!("INFO answered {}", describe(&info))))?;
        let info = parse_info(&info);

        let config_file = info.get("config_file").cloned().unwrap_or_default();
        self.remember_config_file(&config_file).await;
        let persisted = if !config_file.is_empty() && is_loopback(&self.host) {
            self.read_config_file(&config_file).await
        } else {
            None
        };
        let mut live = NodeLive {
            parameters,
            persisted,
            ..NodeLive::default()
        };
        if let Some(names) = only {
            live.keep_only(names);
        }

        let mut health = health_from_info(&info);
        health.latency_ms = Some(latency_ms);
        if info.get("cluster_enabled").map(|v| v.trim()) == Some("1") {
            let view = self.cluster_view(&mut s).await?;
            if let Some(t) = health.topology.as_mut() {
                t.cluster = Some(view);
            }
        }
        Ok(NodeLive {
            engine: Some(Engine::Redis),
            address: Some(self.address.clone()),
            version: engine_version(&info),
            reachable: true,
            parameters: live.parameters,
            persisted: live.persisted,
            health: Some(health),
            ..NodeLive::default()
        })
    }

    /// The parameters the config file sets, or `None` when it cannot be read (the view
    /// is then unknown rather than empty; the live view still stands).
    async fn read_config_file(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let read = async {
            let meta = tokio::fs::metadata(path).await?;
            if meta.len() > MAX_CONFIG_FILE_BYTES {
                return Err(std::io::Error::other("config file too large"));
            }
            tokio::fs::read(path).await
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(bytes)) => {
                let mut map = parse_config_file(&String::from_utf8_lossy(&bytes));
                for name in SECRET_PARAMETERS {
                    map.remove(*name);
                }
                Some(map)
            }
            Ok(Err(e)) => {
                tracing::warn!(address = %self.address, path, error = %e, "cannot read the node's config file");
                None
            }
            Err(_) => {
                tracing::warn!(address = %self.address, path, "reading the node's config file timed out");
                None
            }
        }
    }

    /// Apply `params` as one unit. With `seen` (what the node reported for these names
    /// moments ago), the values that differ from it are set in the round trip that reads
    /// the values before and reads them back: `CONFIG GET`, `CONFIG SET`, `CONFIG GET`,
    /// pipelined. What `seen` got wrong (the node changed since) is set in a second one;
    /// without `seen` the values are read first. Then, only once every value reads back
    /// as assigned, `CONFIG REWRITE` (a rewrite must not persist a refused or half-done
    /// change, so it cannot go in the first round trip).
    async fn apply_params(
        &self,
        params: &BTreeMap<String, String>,
        seen: Option<&BTreeMap<String, String>>,
    ) -> Result<Applied, NodeError> {
        if params.is_empty() {
            return Ok(Applied::default());
        }
        self.applicable(params)?;
        let cat = catalog::catalog(Engine::Redis);
        let differing = |values: &BTreeMap<String, String>| -> Vec<(String, String)> {
            params
                .iter()
                .filter(|(name, want)| match values.get(name.as_str()) {
                    Some(have) => !cat.same(name, have, want),
                    None => true,
                })
                .map(|(n, v)| (n.clone(), v.clone()))
                .collect()
        };

        let _one_at_a_time = self.apply_lock.lock().await;
        let mut s = self.session().await?;
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        let guess = seen.map(differing).unwrap_or_default();
        let first = self.get_set_get(&mut s, &names, &guess).await?;
        let before = first.before;
        // Every value that differed from what the node ran, with the value before.
        let mut changed: BTreeMap<String, Option<String>> = differing(&before)
            .into_iter()
            .map(|(name, _)| {
                let old = before.get(&name).cloned();
                (name, old)
            })
            .collect();
        if let Err(message) = first.set {
            let sent: Vec<(&str, &str)> = pairs(&guess);
            let parameter = refused_parameter(&message, &sent);
            return Err(self
                .put_back(&mut s, &changed, params, &first.after, &parameter, message)
                .await);
        }
        let still = differing(&first.after);
        if !still.is_empty() {
            for (name, _) in &still {
                changed
                    .entry(name.clone())
                    .or_insert_with(|| before.get(name).cloned());
            }
            let again = self.get_set_get(&mut s, &names, &still).await?;
            if let Err(message) = again.set {
                let parameter = refused_parameter(&message, &pairs(&still));
                return Err(self
                    .put_back(&mut s, &changed, params, &again.after, &parameter, message)
                    .await);
            }
            // Taken, yet not what was set: the engine holds another value (it rounded
            // it, or something set it again at once). Put back rather than claim it.
            if let Some((name, want)) = differing(&again.after).into_iter().next() {
                let got = again.after.get(&name).cloned().unwrap_or_default();
                let message = format!("set to `{want}`, it reads back `{got}`");
                return Err(self
                    .put_back(&mut s, &changed, params, &again.after, &name, message)
                    .await);
            }
        }
        if changed.is_empty() {
            return Ok(Applied::default());
        }

        let config_file = self.config_file(&mut s).await?;
        if config_file.is_empty() {
            return Ok(Applied {
                changed,
                persisted: false,
            });
        }
        let rewrite = {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("REWRITE");
            fence::check(&self.address)?;
            self.call(&mut s, &cmd).await
        };
        let message = match rewrite {
            Ok(Ok(Value::Okay)) => {
                return Ok(Applied {
                    changed,
                    persisted: true,
                })
            }
            Ok(Ok(other)) => format!("CONFIG REWRITE answered {}", describe(&other)),
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        };
        // The file was not rewritten, so the live change must not stay either.
        let mut s = self.session().await?;
        Err(self
            .put_back(&mut s, &changed, params, params, "CONFIG REWRITE", message)
            .await)
    }

    /// What a driver cannot apply, refused before anything is sent: start-only
    /// parameters, and names with glob characters (`CONFIG GET` would read others).
    fn applicable(&self, params: &BTreeMap<String, String>) -> Result<(), NodeError> {
        let cat = catalog::catalog(Engine::Redis);
        for name in params.keys() {
            // Parameters the catalog does not know go to the engine, which refuses them
            // in its own words if it does not know them either.
            if cat.get(name).is_some_and(|p| !p.runtime) {
                return Err(NodeError::NeedsRestart {
                    address: self.address.clone(),
                    parameter: name.clone(),
                });
            }
            if !plain_name(name) {
                return Err(self.refused(name, "not a parameter name".to_owned()));
            }
        }
        Ok(())
    }

    /// One round trip: `CONFIG GET names` (the values before), `CONFIG SET` of `set`,
    /// `CONFIG GET names` again (the values after), each part left out when it has
    /// nothing to do.
    async fn get_set_get(
        &self,
        s: &mut Session,
        names: &[&str],
        set: &[(String, String)],
    ) -> Result<GetSetGet, NodeError> {
        let mut cmds = Vec::with_capacity(4);
        let get = || {
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("GET").arg(names);
            cmd
        };
        if !names.is_empty() {
            cmds.push(get());
        }
        if !set.is_empty() {
            fence::check(&self.address)?;
            let mut cmd = redis::cmd("CONFIG");
            cmd.arg("SET");
            for (name, value) in set {
                cmd.arg(name).arg(value);
            }
            cmds.push(cmd);
            if !names.is_empty() {
                cmds.push(get());
            }
        }
        let mut replies = self.call_many(s, &cmds).await?.into_iter();
        let map = |reply: Option<Reply>| -> Result<BTreeMap<String, String>, NodeError> {
            let value = reply
                .ok_or_else(|| self.protocol("missing reply to CONFIG GET"))?
                .map_err(|e| self.refused("CONFIG GET", e))?;
            config_map(&value).map_err(|m| self.protocol(format!("CONFIG GET answered {m}")))
        };
        let before = match names.is_empty() {
            true => BTreeMap::new(),
            false => map(replies.next())?,
        };
        let (set, after) = match set.is_empty() {
            true => (Ok(()), before.clone()),
            false => {
                let set = match replies.next() {
                    Some(Ok(Value::Okay)) => Ok(()),
                    Some(Err(e)) => Err(e),
                    Some(Ok(other)) => {
                        return Err(
                            self.protocol(format!("CONFIG SET answered {}", describe(&other)))
                        )
                    }
                    None => return Err(self.protocol("missing reply to CONFIG SET")),
                };
                let after = match names.is_empty() {
                    true => BTreeMap::new(),
                    false => map(replies.next())?,
                };
                (set, after)
            }
        };
        Ok(GetSetGet { before, set, after })
    }

    /// After `parameter` failed with `message`: put back what this apply changed, and
    /// say so (`Refused`), or say what could not be put back (`RollbackFailed`).
    /// `changed`: each value the apply set (`params`), with the one before; `after`:
    /// what the node read back right after the apply's `CONFIG SET` (a value it rounded
    /// is the apply's too). A value goes back only where the node still holds what the
    /// apply left: one that holds another since (a person's `CONFIG SET`, the next
    /// leader's apply) is newer than this apply and stays, and the error says so. The values go back in one atomic `CONFIG
    /// SET`, one by one where that is refused (engines before Redis 7).
    async fn put_back(
        &self,
        s: &mut Session,
        changed: &BTreeMap<String, Option<String>>,
        params: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
        parameter: &str,
        message: String,
    ) -> NodeError {
        let failed = |restore: &str, restore_error: String| NodeError::RollbackFailed {
            address: self.address.clone(),
            parameter: parameter.to_owned(),
            message: message.clone(),
            restore: restore.to_owned(),
            restore_error,
        };
        let names: Vec<&str> = changed.keys().map(String::as_str).collect();
        if names.is_empty() {
            return self.refused(parameter, message);
        }
        let now = match self.config_get(s, &names).await {
            Ok(now) => now,
            Err(e) => return failed(&names.join(", "), e.to_string()),
        };
        let cat = catalog::catalog(Engine::Redis);
        let mut back: Vec<(&str, &str)> = Vec::new();
        let mut newer: Vec<String> = Vec::new();
        for (name, old) in changed {
            let (Some(old), Some(have)) = (old, now.get(name)) else {
                continue;
            };
            let set = params.get(name).map(String::as_str).unwrap_or_default();
            if cat.same(name, have, old) {
                continue;
            }
            let ours = cat.same(name, have, set) || after.get(name).is_some_and(|a| a == have);
            match ours {
                true => back.push((name, old)),
                false => newer.push(format!("`{name}` holds `{have}`")),
            }
        }
        if let Err(e) = fence::check(&self.address) {
            return match back.is_empty() {
                true => self.refused(parameter, message),
                false => failed(&render_pairs(&back), e.to_string()),
            };
        }
        let atomic = match back.len() {
            0 => true,
            1 => false,
            _ => matches!(self.config_set(s, &back).await, Ok(Ok(()))),
        };
        if !atomic {
            for (name, old) in &back {
                match self.config_set(s, &[(name, old)]).await {
                    Ok(Ok(())) => {}
                    Ok(Err(m)) => return failed(name, m),
                    Err(e) => return failed(name, e.to_string()),
                }
            }
        }
        match newer.is_empty() {
            true => self.refused(parameter, message),
            false => self.refused(
                parameter,
                format!(
                    "{message} (left as set since by another writer: {})",
                    newer.join(", ")
                ),
            ),
        }
    }
}

/// `name value, name value`, for a message.
fn render_pairs(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl RedisDriver {
    /// A cluster-mode node's view of its cluster: `CLUSTER INFO` (state, slot counts) and
    /// `CLUSTER NODES` (every member: id, address, role, primary, slots) in one round trip.
    /// `CLUSTER NODES` rather than `CLUSTER SHARDS`: one text line per member, the same
    /// from Redis 3 to 8 and Valkey, with the `fail?`/`fail` flags the checks need.
    async fn cluster_view(&self, s: &mut Session) -> Result<ClusterView, NodeError> {
        let mut info = redis::cmd("CLUSTER");
        info.arg("INFO");
        let mut nodes = redis::cmd("CLUSTER");
        nodes.arg("NODES");
        let mut replies = self.call_many(s, &[info, nodes]).await?.into_iter();
        let (Some(info), Some(nodes)) = (replies.next(), replies.next()) else {
            return Err(self.protocol("missing replies to CLUSTER INFO and CLUSTER NODES"));
        };
        let text = |r: Reply, what: &str| {
            let v = r.map_err(|e| self.refused(what, e))?;
            value_text(&v).ok_or_else(|| self.protocol(format!("{what} answered {}", describe(&v))))
        };
        let info = parse_info(&text(info, "CLUSTER INFO")?);
        let nodes = text(nodes, "CLUSTER NODES")?;
        Ok(cluster_view_from(&info, &nodes))
    }

    /// `CLUSTER FAILOVER` sent to `to` (a replica of this node, a cluster-mode primary),
    /// then wait, at most `timeout`, until `to` reports role master and this node follows
    /// it with its link up, both in their own replication and in `to`'s cluster view.
    /// The cluster rewrites each node's `nodes.conf` itself: nothing to persist.
    async fn cluster_failover_to(&self, to: &str, timeout: Duration) -> Result<(), NodeError> {
        let target =
            RedisDriver::new(to, self.auth.as_ref(), self.timeout).with_tls(self.tls.clone());
        let mut t = target.session().await?;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        fence::check(&self.address)?;
        if let Err(e) = target.call(&mut t, &cmd).await? {
            return Err(target.refused("CLUSTER FAILOVER", e));
        }
        let (_, port) = split_address(to);
        let deadline = tokio::time::Instant::now() + timeout + self.timeout;
        loop {
            let mine = self.replication().await;
            let theirs = target.replication().await;
            let follows = mine.as_ref().is_ok_and(|i| {
                i.get("role").map(String::as_str) == Some("slave")
                    && i.get("master_port").map(String::as_str) == Some(port.to_string().as_str())
                    && i.get("master_link_status").map(String::as_str) == Some("up")
            });
            let leads = theirs
                .as_ref()
                .is_ok_and(|i| i.get("role").map(String::as_str) == Some("master"));
            // The cluster agrees: in `to`'s view it is a primary and this node its replica.
            let agreed = match (follows && leads, target.session().await) {
                (true, Ok(mut t)) => target.cluster_view(&mut t).await.is_ok_and(|v| {
                    let me = v
                        .at(&self.address)
                        .map(|m| (m.primary.clone(), m.has_flag("slave")));
                    me == Some((Some(v.id.clone()), true))
                        && v.member(&v.id).is_some_and(|m| m.has_flag("master"))
                }),
                _ => false,
            };
            if agreed {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let role = |r: &Result<BTreeMap<String, String>, NodeError>| match r {
                    Ok(i) => format!(
                        "role {}",
                        i.get("role").map(String::as_str).unwrap_or("unknown")
                    ),
                    Err(e) => e.to_string(),
                };
                return Err(self.protocol(format!(
                    "CLUSTER FAILOVER on {to} did not complete within {} ms: {} is {}, {to} is {}",
                    timeout.as_millis(),
                    self.address,
                    role(&mine),
                    role(&theirs)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The fields of `INFO replication`.
    pub(super) async fn replication(&self) -> Result<BTreeMap<String, String>, NodeError> {
        let mut s = self.session().await?;
        let mut cmd = redis::cmd("INFO");
        cmd.arg("replication");
        let value = self
            .call(&mut s, &cmd)
            .await?
            .map_err(|e| self.refused("INFO", e))?;
        let text = value_text(&value).ok_or_else(|| {
            self.protocol(format!("INFO replication answered {}", describe(&value)))
        })?;
        Ok(parse_info(&text))
    }

    /// `CONFIG REWRITE`, so that the role the node runs now survives its restart (a
    /// failover changes roles at run time only); a node without a config file has
    /// nothing to rewrite.
    async fn persist_role(&self) -> Result<(), NodeError> {
        let mut s = self.session().await?;
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("REWRITE");
        match self.call(&mut s, &cmd).await? {
            Ok(_) => Ok(()),
            Err(e) if e.contains("without a config file") => Ok(()),
            Err(e) => Err(self.refused("CONFIG REWRITE", e)),
        }
    }

    /// `FAILOVER TO host port TIMEOUT ms` sent to this node (the primary), then wait
    /// until it is done: this node a replica of `to` with its link up, and `to` reporting
    /// role master. Both rewrite their config files. Redis 6.2 or later.
    async fn failover_to(&self, to: &str, timeout: Duration) -> Result<(), NodeError> {
        let (host, port) = split_address(to);
        let mut s = self.session().await?;
        fence::check(&self.address)?;
        let mut cmd = redis::cmd("FAILOVER");
        cmd.arg("TO")
            .arg(&host)
            .arg(port)
            .arg("TIMEOUT")
            .arg(timeout.as_millis().min(u64::MAX as u128) as u64);
        match self.call(&mut s, &cmd).await? {
            Ok(_) => {}
            Err(e) => return Err(self.refused("FAILOVER", e)),
        }
        let target =
            RedisDriver::new(to, self.auth.as_ref(), self.timeout).with_tls(self.tls.clone());
        let deadline = tokio::time::Instant::now() + timeout + self.timeout;
        loop {
            let mine = self.replication().await;
            let theirs = target.replication().await;
            let follows = mine.as_ref().is_ok_and(|i| {
                i.get("role").map(String::as_str) == Some("slave")
                    && i.get("master_port").map(String::as_str) == Some(port.to_string().as_str())
                    && i.get("master_link_status").map(String::as_str) == Some("up")
            });
            let leads = theirs
                .as_ref()
                .is_ok_and(|i| i.get("role").map(String::as_str) == Some("master"));
            if follows && leads {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let state = |r: &Result<BTreeMap<String, String>, NodeError>| match r {
                    Ok(i) => format!(
                        "role {}{}",
                        i.get("role").map(String::as_str).unwrap_or("unknown"),
                        i.get("master_failover_state")
                            .map(|f| format!(", failover state {f}"))
                            .unwrap_or_default()
                    ),
                    Err(e) => e.to_string(),
                };
                return Err(self.protocol(format!(
                    "FAILOVER to {to} did not complete within {} ms: {} is {}, {to} is {}",
                    timeout.as_millis(),
                    self.address,
                    state(&mine),
                    state(&theirs)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        target.persist_role().await?;
        self.persist_role().await?;
        // FAILOVER promotes one replica; the others still follow this node, a replica
        // now, and would lose their link when it restarts. They follow the new primary.
        if let Ok(info) = self.replication().await {
            for other in sub_replicas(&info) {
                if other == to || split_address(&other) == split_address(to) {
                    continue;
                }
                let r = RedisDriver::new(&other, self.auth.as_ref(), self.timeout)
                    .with_tls(self.tls.clone());
                if let Err(e) = r.follow(&host, port).await {
                    tracing::warn!(
                        "after the failover to {to}: {other} still follows {}: {e}",
                        self.address
                    );
                }
            }
        }
        Ok(())
    }

    /// `REPLICAOF host port`, then `CONFIG REWRITE`.
    pub(super) async fn follow(&self, host: &str, port: u16) -> Result<(), NodeError> {
        let mut s = self.session().await?;
        fence::check(&self.address)?;
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg(host).arg(port);
        if let Err(e) = self.call(&mut s, &cmd).await? {
            return Err(self.refused("REPLICAOF", e));
        }
        self.persist_role().await
    }
}

impl NodeDriver for RedisDriver {
    fn engine(&self) -> Engine {
        Engine::Redis
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn read(&self) -> BoxFuture<'_, Result<NodeLive, NodeError>> {
        Box::pin(self.read_node(None))
    }

    fn read_declared<'a>(
        &'a self,
        names: &'a BTreeSet<String>,
    ) -> BoxFuture<'a, Result<NodeLive, NodeError>> {
        Box::pin(self.read_node(Some(names)))
    }

    fn read_parameters<'a>(
        &'a self,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<BTreeMap<String, String>, NodeError>> {
        Box::pin(async move {
            if names.is_empty() {
                return Ok(BTreeMap::new());
            }
            // CONFIG GET takes glob patterns: a name with one would read other parameters.
            if let Some(bad) = names.iter().find(|n| !plain_name(n)) {
                return Err(self.refused(bad, "not a parameter name".to_owned()));
            }
            let mut s = self.session().await?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut values = self.config_get(&mut s, &names).await?;
            for name in SECRET_PARAMETERS {
                values.remove(*name);
            }
            Ok(values)
        })
    }

    fn apply<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Applied, NodeError>> {
        Box::pin(self.apply_params(params, None))
    }

    fn apply_seen<'a>(
        &'a self,
        params: &'a BTreeMap<String, String>,
        seen: &'a BTreeMap<String, String>,
    ) -> Option<BoxFuture<'a, Result<Applied, NodeError>>> {
        Some(Box::pin(self.apply_params(params, Some(seen))))
    }

    fn failover<'a>(
        &'a self,
        to: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(self.failover_to(to, timeout))
    }

    fn failover_through_sentinel<'a>(
        &'a self,
        sentinel: &'a crate::pure::spec::model::Sentinel,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<String, NodeError>> {
        Box::pin(super::sentinel::failover(self, sentinel, timeout))
    }
    fn cluster_failover<'a>(
        &'a self,
        to: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<(), NodeError>> {
        Box::pin(self.cluster_failover_to(to, timeout))
    }
}

/// A cluster member's view from its `CLUSTER INFO` fields and `CLUSTER NODES` text:
/// `<id> <ip:port@cport[,hostname]> <flags> <primary|-> <ping> <pong> <epoch> <link>
/// <slot> <slot>...`, one line per member; slots `0-5460`, `42`, or `[..]` while one
/// migrates (skipped).
pub fn cluster_view_from(info: &BTreeMap<String, String>, nodes: &str) -> ClusterView {
    let num = |k: &str| {
        info.get(k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut view = ClusterView {
        state: info
            .get("cluster_state")
            .map(|v| v.trim().to_owned())
            .unwrap_or_default(),
        slots_assigned: num("cluster_slots_assigned"),
        slots_pfail: num("cluster_slots_pfail"),
        slots_fail: num("cluster_slots_fail"),
        ..ClusterView::default()
    };
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, address, flags, primary, ..] = fields[..] else {
            continue;
        };
        let address = address.split(['@', ',']).next().unwrap_or_default();
        let flags: Vec<String> = flags.split(',').map(str::to_owned).collect();
        if flags.iter().any(|f| f == "myself") {
            view.id = id.to_owned();
        }
        let slots = fields
            .iter()
            .skip(8)
            .filter_map(|r| {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some([a.parse().ok()?, b.parse().ok()?])
            })
            .collect();
        view.nodes.push(ClusterMember {
            id: id.to_owned(),
            address: address.to_owned(),
            primary: (primary != "-").then(|| primary.to_owned()),
            flags,
            slots,
        });
    }
    view.nodes.sort_by(|a, b| a.id.cmp(&b.id));
    view
}

/// The replicas `INFO replication` lists (`slave0:ip=…,port=…,…`), as `host:port`.
pub(super) fn sub_replicas(info: &BTreeMap<String, String>) -> Vec<String> {
    info.iter()
        .filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit()))
        .filter_map(|(_, v)| {
            let field = |name: &str| {
                v.split(',')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            Some(format!("{}:{}", field("ip")?, field("port")?))
        })
        .collect()
}

/// `host:port` → (host, port); `[::1]:6379` → (`::1`, 6379); no port → 6379.
/// Whether the library's words say the node hung up: what a TLS port does to a
/// plaintext client.
/// The version of the engine a node runs: Valkey's own (`valkey_version`; its
/// `redis_version` is the Redis it is compatible with, 7.2.4 for every Valkey 8), else
/// `redis_version`. Drift reads the engine's defaults at this version.
pub fn engine_version(info: &BTreeMap<String, String>) -> Option<String> {
    info.get("valkey_version")
        .or_else(|| info.get("redis_version"))
        .cloned()
}

fn hung_up(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "reset by peer",
        "broken pipe",
        "connection closed",
        "terminated",
        "eof",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// `e` about `address` as written (the TLS connection is made to `host:port` with the
/// default port filled in).
fn readdress(e: NodeError, address: &str) -> NodeError {
    match e {
        NodeError::Unreachable { message, .. } => NodeError::Unreachable {
            address: address.to_owned(),
            message,
        },
        NodeError::TimedOut { timeout_ms, .. } => NodeError::TimedOut {
            address: address.to_owned(),
            timeout_ms,
        },
        NodeError::Tls { message, .. } => NodeError::Tls {
            address: address.to_owned(),
            message,
        },
        other => other,
    }
}

pub(super) fn split_address(address: &str) -> (String, u16) {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(6379);
            return (host.to_owned(), port);
        }
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            (host.to_owned(), port.parse().unwrap_or(6379))
        }
        _ => (address.to_owned(), 6379),
    }
}

/// Whether the node runs on this host, so that its config file path is ours to read.
/// A parameter name `CONFIG GET` reads as itself (it takes glob patterns).
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['*', '?', '[', ']', '\\', ' '])
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The engine's error reply as it wrote it: `ERR CONFIG SET failed ...`.
fn engine_message(code: &str, details: Option<&str>) -> String {
    match details {
        Some(d) => format!("{code} {d}"),
        None => code.to_owned(),
    }
}

fn is_auth_error(code: &str) -> bool {
    matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
}

fn scrub(message: &str, secret: &str) -> String {
    if secret.is_empty() {
        message.to_owned()
    } else {
        message.replace(secret, "***")
    }
}

/// A short description of an unexpected reply, for protocol errors.
fn describe(v: &Value) -> String {
    let text = format!("{v:?}");
    let mut short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

pub(super) fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A `CONFIG GET` reply that is not names and values (what it was, described).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConfigReplyError {
    #[error("an array of {0} items")]
    OddArray(usize),
    #[error("{0} as a name and value")]
    NotAPair(String),
    #[error("{0}")]
    Unexpected(String),
}

/// A `CONFIG GET` reply (a flat array in RESP2, a map in RESP3) as a map.
pub(super) fn config_map(v: &Value) -> Result<BTreeMap<String, String>, ConfigReplyError> {
    let mut out = BTreeMap::new();
    match v {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(ConfigReplyError::OddArray(items.len()));
            }
            for pair in items.chunks(2) {
                let (Some(k), Some(v)) = (value_text(&pair[0]), value_text(&pair[1])) else {
                    return Err(ConfigReplyError::NotAPair(describe(&pair[0])));
                };
                out.insert(k, v);
            }
        }
        Value::Map(pairs) => {
            for (k, v) in pairs {
                let (Some(k), Some(v)) = (value_text(k), value_text(v)) else {
                    return Err(ConfigReplyError::NotAPair(describe(k)));
                };
                out.insert(k, v);
            }
        }
        other => return Err(ConfigReplyError::Unexpected(describe(other))),
    }
    Ok(out)
}

/// `INFO` text as `field → value` (section headers and blank lines skipped).
pub fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Health from parsed `INFO` fields; fields the server does not report stay `None`.
pub fn health_from_info(info: &BTreeMap<String, String>) -> Health {
    let num = |k: &str| info.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let hits = num("keyspace_hits");
    let misses = num("keyspace_misses");
    let hit_ratio = match (hits, misses) {
        (Some(h), Some(m)) if h + m > 0 => Some(h as f64 / (h + m) as f64),
        _ => None,
    };
    let role = match info.get("role").map(String::as_str) {
        Some("master") => Some(Role::Primary),
        Some("slave") => Some(Role::Replica),
        _ => None,
    };
    let replication_link = if role == Some(Role::Replica) {
        match info.get("master_link_status").map(String::as_str) {
            Some("up") => Some(LinkState::Up),
            Some(_) => Some(LinkState::Down),
            None => None,
        }
    } else {
        None
    };
    // `db0:keys=3,expires=0,avg_ttl=0`, one line per database that has keys.
    let keys = info
        .iter()
        .filter(|(k, _)| {
            k.strip_prefix("db")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(_, v)| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("keys="))
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum::<u64>();
    Health {
        used_memory: num("used_memory"),
        max_memory: num("maxmemory"),
        keyspace_hits: hits,
        keyspace_misses: misses,
        hit_ratio,
        evicted_keys: num("evicted_keys"),
        evictions_per_sec: None,
        connected_clients: num("connected_clients"),
        ops_per_sec: info
            .get("instantaneous_ops_per_sec")
            .and_then(|v| v.trim().parse::<f64>().ok()),
        latency_ms: None,
        role,
        replication_link,
        keys: Some(keys),
        uptime_seconds: num("uptime_in_seconds"),
        topology: topology_from_info(info, role),
    }
}

/// Replication from parsed `INFO replication` and `INFO stats` fields: the primary a
/// replica follows, offsets, the replicas a primary feeds (`slaveN` lines), full and
/// partial resyncs served. `None` when the server reports no role.
pub fn topology_from_info(info: &BTreeMap<String, String>, role: Option<Role>) -> Option<Topology> {
    let role = role?;
    let num = |k: &str| info.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let mut topology = Topology {
        full_syncs: num("sync_full"),
        partial_syncs: num("sync_partial_ok"),
        ..Topology::default()
    };
    match role {
        Role::Replica => {
            topology.primary = match (info.get("master_host"), info.get("master_port")) {
                (Some(host), Some(port)) => Some(format!("{}:{}", host.trim(), port.trim())),
                _ => None,
            };
            // -1 while the link is down: no figure.
            topology.last_io_seconds_ago = num("master_last_io_seconds_ago");
            topology.sync_in_progress =
                info.get("master_sync_in_progress").map(|v| v.trim() == "1");
            topology.offset = num("slave_repl_offset").or_else(|| num("master_repl_offset"));
        }
        Role::Primary => topology.offset = num("master_repl_offset"),
    }
    // `slave0:ip=10.0.0.2,port=6379,state=online,offset=1234,lag=0`, in order.
    let mut n = 0;
    while let Some(line) = info.get(&format!("slave{n}")) {
        let field = |name: &str| {
            line.split(',')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::trim)
        };
        if let (Some(ip), Some(port)) = (field("ip"), field("port")) {
            topology.replicas.push(ReplicaLink {
                address: format!("{ip}:{port}"),
                state: field("state").map(str::to_owned),
                offset: field("offset").and_then(|v| v.parse().ok()),
                lag_seconds: field("lag").and_then(|v| v.parse().ok()),
            });
        }
        n += 1;
    }
    Some(topology)
}

/// Which parameter a `CONFIG SET` error names: Redis 7 says `(possibly related to argument
/// 'x')` or `... CONFIG SET - 'x'`; otherwise every parameter sent.
fn refused_parameter(message: &str, sent: &[(&str, &str)]) -> String {
    let quoted = message
        .split_once("argument '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(name, _)| name)
        .or_else(|| {
            let rest = message.strip_suffix('\'')?;
            rest.rsplit_once('\'').map(|(_, name)| name)
        });
    match quoted {
        Some(name) if sent.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) => {
            name.to_ascii_lowercase()
        }
        _ => sent.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
    }
}

/// Directives of a config file that are not parameters (`CONFIG GET` does not know them).
const NOT_PARAMETERS: &[&str] = &["include", "user", "loadmodule", "rename-command"];
/// Directives whose repeated lines add up rather than replace each other.
const ACCUMULATING: &[&str] = &["save", "client-output-buffer-limit"];

/// The parameters a Redis config file sets, with Redis's own syntax: one directive per
/// line, `name arg...`, arguments split like `sdssplitargs` (double quotes with escapes,
/// single quotes), comments from `#` at the start of a line. Names are lower-cased; a
/// multi-word value is its words joined by one space; `save` lines add up (`save ""`
/// clears), other repeated directives keep the last. `include`d files are not followed.
pub fn parse_config_file(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(words) = split_args(line) else {
            continue;
        };
        let Some((name, args)) = words.split_first() else {
            continue;
        };
        let name = name.to_ascii_lowercase();
        if NOT_PARAMETERS.contains(&name.as_str()) {
            continue;
        }
        let value = args.join(" ");
        if ACCUMULATING.contains(&name.as_str()) {
            let slot = out.entry(name).or_default();
            if value.is_empty() {
                slot.clear();
            } else if slot.is_empty() {
                *slot = value;
            } else {
                slot.push(' ');
                slot.push_str(&value);
            }
        } else {
            out.insert(name, value);
        }
    }
    out
}

/// Split one config line into arguments as Redis's `sdssplitargs` does; `None` for
/// unbalanced quotes (Redis refuses such a file).
fn split_args(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Some(out);
        };
        let mut word = String::new();
        match first {
            '"' => {
                chars.next();
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            'n' => word.push('\n'),
                            'r' => word.push('\r'),
                            't' => word.push('\t'),
                            'b' => word.push('\u{8}'),
                            'a' => word.push('\u{7}'),
                            'x' => {
                                let hex: String = chars.by_ref().take(2).collect();
                                match u8::from_str_radix(&hex, 16) {
                                    Ok(b) if hex.len() == 2 => word.push(char::from(b)),
                                    _ => {
                                        word.push('x');
                                        word.push_str(&hex);
                                    }
                                }
                            }
                            c => word.push(c),
                        },
                        c => word.push(c),
                    }
                }
                // A closing quote must be followed by a space or the end.
                if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                    return None;
                }
            }
            '\'' => {
                chars.next();
                loop {
                    match chars.next()? {
                        '\'' => break,
                        '\\' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            word.push('\'');
                        }
                        c => word.push(c),
                    }
                }
                if chars.peek().is_some_and(|c| !c.is_whitespace()) {
                    return None;
                }
            }
            _ => {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
            }
        }
        out.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_view_is_read_from_cluster_info_and_cluster_nodes() {
        let info = parse_info(
            "cluster_state:fail\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:10923\r\n\
             cluster_slots_pfail:0\r\ncluster_slots_fail:5461\r\n",
        );
        let nodes = "\
b0 127.0.0.1:7002@17002 master - 0 1 2 connected 5461-10922\n\
a0 127.0.0.1:7001@17001,host.example myself,master - 0 0 1 connected 0-5460 [5461->-b0]\n\
c1 127.0.0.1:7004@17004 slave,fail c0 0 1 3 disconnected\n\
c0 127.0.0.1:7003@17003 master,fail - 0 1 3 disconnected 10923-16382 16383\n";
        let view = cluster_view_from(&info, nodes);
        assert_eq!(view.id, "a0");
        assert_eq!(view.state, "fail");
        assert_eq!(
            (view.slots_assigned, view.slots_pfail, view.slots_fail),
            (16384, 0, 5461)
        );
        let ids: Vec<&str> = view.nodes.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a0", "b0", "c0", "c1"]);
        let a0 = view.member("a0").unwrap();
        assert_eq!(a0.address, "127.0.0.1:7001");
        assert_eq!(a0.slots, vec![[0, 5460]]);
        assert_eq!(view.member("c0").unwrap().slots_text(), "10923-16382 16383");
        let c1 = view.at("127.0.0.1:7004").unwrap();
        assert_eq!(c1.primary.as_deref(), Some("c0"));
        assert!(c1.has_flag("fail"));
        assert_eq!(view.shard_of("c1"), "c0");
    }

    #[test]
    fn the_secret_parameters_are_the_catalog_s_credentials() {
        let mut from_catalog: Vec<&str> = crate::pure::catalog::catalogs_of(Engine::Redis)
            .into_iter()
            .flat_map(|cat| cat.parameters.iter())
            .filter(|(_, p)| p.secret)
            .map(|(n, _)| n.as_str())
            .collect();
        let mut here = SECRET_PARAMETERS.to_vec();
        from_catalog.sort_unstable();
        from_catalog.dedup();
        here.sort_unstable();
        assert_eq!(here, from_catalog);
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("127.0.0.1:7000"), ("127.0.0.1".into(), 7000));
        assert_eq!(split_address("[::1]:7001"), ("::1".into(), 7001));
        assert_eq!(split_address("cache-1"), ("cache-1".into(), 6379));
        assert!(is_loopback("127.0.0.1"));
        assert!(is_loopback("::1"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn config_files_parse_as_redis_reads_them() {
        let text = "# a comment\n\
            port 7000\n\
            dir \"/tmp/with space\"\n\
            save 3600 1\n\
            save 300 100\n\
            MaxMemory 100mb\n\
            maxmemory-policy allkeys-lru\n\
            maxmemory-policy allkeys-lfu\n\
            logfile \"\"\n\
            requirepass \"hunter2\"\n\
            user app on >pw ~* +@all\n\
            notify-keyspace-events 'K\\'x'\n\
            client-output-buffer-limit normal 0 0 0\n\
            client-output-buffer-limit pubsub 32mb 8mb 60\n\
            broken \"unbalanced\n";
        let mut map = parse_config_file(text);
        // The driver drops secret parameters after parsing.
        assert_eq!(map.remove("requirepass").as_deref(), Some("hunter2"));
        let expected: BTreeMap<String, String> = [
            ("port", "7000"),
            ("dir", "/tmp/with space"),
            ("save", "3600 1 300 100"),
            ("maxmemory", "100mb"),
            ("maxmemory-policy", "allkeys-lfu"),
            ("logfile", ""),
            ("notify-keyspace-events", "K'x"),
            (
                "client-output-buffer-limit",
                "normal 0 0 0 pubsub 32mb 8mb 60",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(map, expected);
    }

    #[test]
    fn an_empty_save_line_clears_the_snapshot_points() {
        let map = parse_config_file("save 60 1\nsave \"\"\n");
        assert_eq!(map["save"], "");
        let map = parse_config_file("save \"\"\nsave 60 1\n");
        assert_eq!(map["save"], "60 1");
    }

    #[test]
    fn escapes_in_double_quotes_are_decoded() {
        assert_eq!(
            split_args(r#"a "b\x41\n\"c" 'd'"#).unwrap(),
            vec!["a", "bA\n\"c", "d"]
        );
        assert_eq!(split_args(r#"a "b"c"#), None);
    }

    #[test]
    fn health_comes_from_info_fields() {
        let info = parse_info(
            "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\n\r\n# Memory\r\nused_memory:1000\r\n\
             maxmemory:2000\r\n# Stats\r\nkeyspace_hits:3\r\nkeyspace_misses:1\r\n\
             evicted_keys:7\r\ninstantaneous_ops_per_sec:12\r\n# Clients\r\n\
             connected_clients:2\r\n# Replication\r\nrole:slave\r\nmaster_link_status:down\r\n\
             # Keyspace\r\ndb0:keys=5,expires=0,avg_ttl=0\r\ndb3:keys=2,expires=1,avg_ttl=9\r\n",
        );
        let h = health_from_info(&info);
        assert_eq!(h.used_memory, Some(1000));
        assert_eq!(h.max_memory, Some(2000));
        assert_eq!(h.keyspace_hits, Some(3));
        assert_eq!(h.keyspace_misses, Some(1));
        assert_eq!(h.hit_ratio, Some(0.75));
        assert_eq!(h.evicted_keys, Some(7));
        assert_eq!(h.ops_per_sec, Some(12.0));
        assert_eq!(h.connected_clients, Some(2));
        assert_eq!(h.role, Some(Role::Replica));
        assert_eq!(h.replication_link, Some(LinkState::Down));
        assert_eq!(h.keys, Some(7));
        assert_eq!(h.uptime_seconds, Some(42));
    }

    #[test]
    fn valkey_reports_its_own_version_not_the_redis_it_is_compatible_with() {
        let redis = parse_info("# Server\r\nredis_version:7.0.15\r\n");
        assert_eq!(engine_version(&redis).as_deref(), Some("7.0.15"));
        let valkey = parse_info(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n",
        );
        assert_eq!(engine_version(&valkey).as_deref(), Some("8.0.1"));
    }

    #[test]
    fn topology_comes_from_info_replication() {
        // A primary feeding two replicas, one of them behind.
        let info = parse_info(
            "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
             slave0:ip=127.0.0.1,port=7002,state=online,offset=1000,lag=0\r\n\
             slave1:ip=127.0.0.1,port=7003,state=wait_bgsave,offset=0,lag=3\r\n\
             master_repl_offset:1500\r\n# Stats\r\nsync_full:2\r\nsync_partial_ok:1\r\n",
        );
        let t = health_from_info(&info).topology.unwrap();
        assert_eq!(t.primary, None);
        assert_eq!(t.offset, Some(1500));
        assert_eq!(t.full_syncs, Some(2));
        assert_eq!(t.partial_syncs, Some(1));
        assert_eq!(
            t.replicas,
            vec![
                ReplicaLink {
                    address: "127.0.0.1:7002".into(),
                    state: Some("online".into()),
                    offset: Some(1000),
                    lag_seconds: Some(0),
                },
                ReplicaLink {
                    address: "127.0.0.1:7003".into(),
                    state: Some("wait_bgsave".into()),
                    offset: Some(0),
                    lag_seconds: Some(3),
                },
            ]
        );
        assert_eq!(t.replica_lag_bytes("127.0.0.1:7002"), Some(500));
        assert_eq!(t.replica_lag_bytes("127.0.0.1:7009"), None);

        // A replica: whom it follows, its link's figures; -1 (link down) is no figure.
        let info = parse_info(
            "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\n\
             master_link_status:up\r\nmaster_last_io_seconds_ago:-1\r\n\
             master_sync_in_progress:0\r\nslave_repl_offset:1400\r\nmaster_repl_offset:1400\r\n",
        );
        let t = health_from_info(&info).topology.unwrap();
        assert_eq!(t.primary.as_deref(), Some("10.0.0.1:6379"));
        assert_eq!(t.last_io_seconds_ago, None);
        assert_eq!(t.sync_in_progress, Some(false));
        assert_eq!(t.offset, Some(1400));
        assert!(t.replicas.is_empty());
        // No role: no topology.
        assert_eq!(
            health_from_info(&parse_info("used_memory:1\r\n")).topology,
            None
        );
    }

    #[test]
    fn no_hits_and_no_misses_give_no_hit_ratio() {
        let h = health_from_info(&parse_info(
            "keyspace_hits:0\r\nkeyspace_misses:0\r\nrole:master\r\n",
        ));
        assert_eq!(h.hit_ratio, None);
        assert_eq!(h.role, Some(Role::Primary));
        assert_eq!(h.replication_link, None);
        assert_eq!(h.keys, Some(0));
    }

    #[test]
    fn the_refused_parameter_is_read_from_the_engine_message() {
        let sent = [("hz", "20"), ("maxmemory-policy", "bogus")];
        assert_eq!(
            refused_parameter(
                "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - argument(s) must be one of the following: ...",
                &sent
            ),
            "maxmemory-policy"
        );
        assert_eq!(
            refused_parameter(
                "ERR Unknown option or number of arguments for CONFIG SET - 'hz'",
                &sent
            ),
            "hz"
        );
        assert_eq!(
            refused_parameter("ERR something else", &sent),
            "hz, maxmemory-policy"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        assert_eq!(scrub("bad pw hunter2 here", "hunter2"), "bad pw *** here");
    }
}
