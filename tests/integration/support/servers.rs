//! Real cache servers for integration tests: `RedisServer` and `MemcachedServer` start the
//! installed `redis-server` / `memcached` on a free loopback port, in a temporary
//! directory that also holds their stdout and stderr, wait until they answer, and kill
//! them on drop. A missing binary or a server that does not come up is a test failure
//! (a panic that says what to install or shows the server's log), never a skip.
//!
//! `RedisClient` and `MemcachedClient` are tiny synchronous clients over
//! `std::net::TcpStream`, enough for tests to talk to those servers without a client crate.

// Each test file uses only part of the harness.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer after it was spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a port collision (another process took the port between our probe and the
/// server's bind) is retried with a new port.
const PORT_ATTEMPTS: usize = 5;
/// Read and write timeout of the test clients.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, release it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of the probe socket")
        .port()
}

/// Spawn `binary` with `args`, stdout and stderr going to files in `dir`; a missing
/// binary panics with `install_hint`.
fn spawn(binary: &str, args: &[String], dir: &Path, install_hint: &str) -> Child {
    let stdout = File::create(dir.join("stdout.log")).expect("create stdout.log");
    let stderr = File::create(dir.join("stderr.log")).expect("create stderr.log");
    match Command::new(binary)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("{binary} not found on PATH: install it ({install_hint})")
        }
        Err(e) => panic!("cannot start {binary}: {e}"),
    }
}

fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["stdout.log", "stderr.log"] {
        let text = fs::read_to_string(dir.join(name)).unwrap_or_default();
        if !text.trim().is_empty() {
            let _ = write!(out, "--- {name} ---\n{}\n", text.trim_end());
        }
    }
    out
}

fn port_collision(log: &str) -> bool {
    let l = log.to_ascii_lowercase();
    l.contains("address already in use") || l.contains("failed to listen")
}

pub fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// What a started server answered when probed (with the last failure for the message).
enum Probe {
    Up,
    Exited(String),
    TimedOut(String),
}

/// Wait until `ping` succeeds against `port` or the child exits or the timeout passes.
fn wait_until_up(child: &mut Child, port: u16, ping: fn(u16) -> Result<(), String>) -> Probe {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Probe::Exited(format!("exited with {status}"));
        }
        let last = match ping(port) {
            Ok(()) => return Probe::Up,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Probe::TimedOut(last);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ------------------------------------------------------------------------------------
// Redis
// ------------------------------------------------------------------------------------

/// How to start a `RedisServer`.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    config: Vec<(String, String)>,
    requirepass: Option<String>,
    acl_user: Option<(String, String, String)>,
}

impl RedisOptions {
    pub fn new() -> RedisOptions {
        RedisOptions::default()
    }

    /// A `name value` line of the config file written into the server's temp dir (the
    /// value is written as given, so quote it yourself when it has spaces: `"\"\""`).
    pub fn config(mut self, name: &str, value: &str) -> RedisOptions {
        self.config.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Require this password of the default user.
    pub fn requirepass(mut self, password: &str) -> RedisOptions {
        self.requirepass = Some(password.to_owned());
        self
    }

    /// An ACL user with this password and these rules (e.g. `~* &* +@all`).
    pub fn acl_user(mut self, name: &str, password: &str, rules: &str) -> RedisOptions {
        self.acl_user = Some((name.to_owned(), password.to_owned(), rules.to_owned()));
        self
    }
}

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    options: RedisOptions,
    // Dropped after `child` was killed (see `Drop`), so the server never outlives its dir.
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// A redis-server with default settings (no persistence) on a free loopback port.
    pub fn start() -> RedisServer {
        RedisServer::start_with(RedisOptions::new())
    }

    pub fn start_with(options: RedisOptions) -> RedisServer {
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("cacheflow-redis-")
                .tempdir()
                .expect("create a temporary directory for redis-server");
            let port = free_port();
            let conf = dir.path().join("redis.conf");
            fs::write(&conf, redis_config(&options, port, dir.path())).expect("write redis.conf");
            let mut child = spawn(
                "redis-server",
                &[conf.display().to_string()],
                dir.path(),
                "apt-get install redis-server",
            );
            match wait_until_up(&mut child, port, redis_ping) {
                Probe::Up => {
                    return RedisServer {
                        child,
                        port,
                        options,
                        dir,
                    }
                }
                Probe::Exited(why) | Probe::TimedOut(why) => {
                    kill(&mut child);
                    let logs = read_logs(dir.path());
                    if port_collision(&logs) {
                        failures.push(format!("port {port} was taken"));
                        continue;
                    }
                    panic!("redis-server did not start on port {port}: {why}\n{logs}");
                }
            }
        }
        panic!("redis-server did not start: {}", failures.join("; "));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id (to stop and continue it with signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The temporary directory: config file, logs, and the server's `dir`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("redis.conf")
    }

    /// What the server wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    /// A client, authenticated with `requirepass` when the server has one.
    pub fn client(&self) -> RedisClient {
        let mut c = RedisClient::connect(self.port);
        if let Some(pass) = &self.options.requirepass {
            c.auth(None, pass);
        }
        c
    }

    /// A client authenticated as the ACL user of the options.
    pub fn acl_client(&self) -> RedisClient {
        let (user, pass, _) = self
            .options
            .acl_user
            .as_ref()
            .expect("acl_client() needs RedisOptions::acl_user");
        let mut c = RedisClient::connect(self.port);
        c.auth(Some(user), pass);
        c
    }

    /// A client that has not authenticated.
    pub fn anonymous_client(&self) -> RedisClient {
        RedisClient::connect(self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn redis_config(options: &RedisOptions, port: u16, dir: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "port {port}");
    c.push_str("bind 127.0.0.1\n");
    let _ = writeln!(c, "dir \"{}\"", dir.display());
    c.push_str("save \"\"\nappendonly no\ndaemonize no\nlogfile \"\"\n");
    if let Some(pass) = &options.requirepass {
        let _ = writeln!(c, "requirepass \"{pass}\"");
    }
    if let Some((user, pass, rules)) = &options.acl_user {
        let _ = writeln!(c, "user {user} on >{pass} {rules}");
    }
    for (name, value) in &options.config {
        let _ = writeln!(c, "{name} {value}");
    }
    c
}

fn redis_ping(port: u16) -> Result<(), String> {
    let mut c = RedisClient::try_connect(port).map_err(|e| e.to_string())?;
    match c.try_cmd(&["PING"]).map_err(|e| e.to_string())? {
        Reply::Simple(s) if s == "PONG" => Ok(()),
        // Password-protected servers answer, which is all we wait for.
        Reply::Error(e) if e.starts_with("NOAUTH") => Ok(()),
        other => Err(format!("PING answered {other:?}")),
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None` is the nil bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None` is the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a simple or bulk string.
    pub fn as_str(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }
}

/// A synchronous RESP2 client for tests.
pub struct RedisClient {
    reader: BufReader<TcpStream>,
}

impl RedisClient {
    pub fn connect(port: u16) -> RedisClient {
        RedisClient::try_connect(port)
            .unwrap_or_else(|e| panic!("connect to redis on 127.0.0.1:{port}: {e}"))
    }

    pub fn try_connect(port: u16) -> io::Result<RedisClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RedisClient {
            reader: BufReader::new(stream),
        })
    }

    /// `AUTH [user] password`, panicking unless it answers OK.
    pub fn auth(&mut self, user: Option<&str>, password: &str) {
        let reply = match user {
            Some(u) => self.cmd(&["AUTH", u, password]),
            None => self.cmd(&["AUTH", password]),
        };
        assert!(reply.is_ok(), "AUTH failed: {reply:?}");
    }

    /// Send one command as a RESP array of bulk strings and read its reply; I/O errors
    /// panic (an error *reply* is returned as `Reply::Error`).
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis command {args:?}: {e}"))
    }

    pub fn try_cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.reader.get_mut().write_all(&out)?;
        read_reply(&mut self.reader)
    }

    /// `CONFIG GET pattern` as a map.
    pub fn config_get(&mut self, pattern: &str) -> BTreeMap<String, String> {
        match self.cmd(&["CONFIG", "GET", pattern]) {
            Reply::Array(Some(items)) => items
                .chunks(2)
                .map(|kv| {
                    let k = kv[0].as_str().expect("CONFIG GET name");
                    let v = kv.get(1).and_then(Reply::as_str).unwrap_or_default();
                    (k, v)
                })
                .collect(),
            other => panic!("CONFIG GET {pattern} answered {other:?}"),
        }
    }
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Parse one RESP2 reply (nested arrays included).
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    let int = |s: &str| -> io::Result<i64> {
        s.parse()
            .map_err(|_| bad(format!("bad RESP integer in `{line}`")))
    };
    match kind {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Int(int(rest)?)),
        "$" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            Ok(Reply::Bulk(Some(buf)))
        }
        "*" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Reply::Array(None));
            }
            let items = (0..n)
                .map(|_| read_reply(r))
                .collect::<io::Result<Vec<_>>>()?;
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(bad(format!("unexpected RESP line `{line}`"))),
    }
}

// ------------------------------------------------------------------------------------
// Memcached
// ------------------------------------------------------------------------------------

/// A running `memcached`, killed on drop.
pub struct MemcachedServer {
    child: Child,
    port: u16,
    args: Vec<String>,
    dir: tempfile::TempDir,
}

impl MemcachedServer {
    /// A memcached with default settings on a free loopback port (UDP off).
    pub fn start() -> MemcachedServer {
        MemcachedServer::start_with_args::<&str>(&[])
    }

    /// A memcached with extra command-line arguments (e.g. `["-m", "128", "-M"]`).
    pub fn start_with_args<S: AsRef<str>>(extra: &[S]) -> MemcachedServer {
        match MemcachedServer::try_start_with_args(extra) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like `start_with_args`, but a server that refuses its arguments is an `Err` with
    /// its log rather than a panic (a missing binary still panics).
    pub fn try_start_with_args<S: AsRef<str>>(extra: &[S]) -> Result<MemcachedServer, String> {
        let extra: Vec<String> = extra.iter().map(|s| s.as_ref().to_owned()).collect();
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("cacheflow-memcached-")
                .tempdir()
                .expect("create a temporary directory for memcached");
            let port = free_port();
            let mut args: Vec<String> = vec![
                "-p".into(),
                port.to_string(),
                "-U".into(),
                "0".into(),
                "-l".into(),
                "127.0.0.1".into(),
            ];
            if running_as_root() {
                // memcached refuses to run as root without -u.
                args.extend(["-u".to_owned(), "root".to_owned()]);
            }
            args.extend(extra.iter().cloned());
            let mut child = spawn("memcached", &args, dir.path(), "apt-get install memcached");
            match wait_until_up(&mut child, port, memcached_ping) {
                Probe::Up => {
                    return Ok(MemcachedServer {
                        child,
                        port,
                        args,
                        dir,
                    })
                }
                Probe::Exited(why) | Probe::TimedOut(why) => {
                    kill(&mut child);
                    let logs = read_logs(dir.path());
                    if port_collision(&logs) {
                        failures.push(format!("port {port} was taken"));
                        continue;
                    }
                    return Err(format!(
                        "memcached {} did not start: {why}\n{logs}",
                        args.join(" ")
                    ));
                }
            }
        }
        Err(format!("memcached did not start: {}", failures.join("; ")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The full command line the server was started with (after the binary).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }

    pub fn client(&self) -> MemcachedClient {
        MemcachedClient::connect(self.port)
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn memcached_ping(port: u16) -> Result<(), String> {
    let mut c = MemcachedClient::try_connect(port).map_err(|e| e.to_string())?;
    let lines = c.try_command("version").map_err(|e| e.to_string())?;
    match lines.first() {
        Some(l) if l.starts_with("VERSION ") => Ok(()),
        other => Err(format!("version answered {other:?}")),
    }
}

/// A synchronous memcached text-protocol client for tests.
pub struct MemcachedClient {
    reader: BufReader<TcpStream>,
}

impl MemcachedClient {
    pub fn connect(port: u16) -> MemcachedClient {
        MemcachedClient::try_connect(port)
            .unwrap_or_else(|e| panic!("connect to memcached on 127.0.0.1:{port}: {e}"))
    }

    pub fn try_connect(port: u16) -> io::Result<MemcachedClient> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(MemcachedClient {
            reader: BufReader::new(stream),
        })
    }

    /// Send one text line and return the reply lines (without `\r\n`), up to and
    /// including the terminator (`END`, `OK`, `ERROR`, `CLIENT_ERROR ...`, ...).
    ///
    /// Not every reply has a terminator: `stats sizes_enable` answers a single `STAT`
    /// line and no `END`. So the line is followed by the meta no-op `mn`, and the reply
    /// is everything before its `MN`: exact for every command, with no timeout guessing.
    pub fn command(&mut self, line: &str) -> Vec<String> {
        self.try_command(line)
            .unwrap_or_else(|e| panic!("memcached command `{line}`: {e}"))
    }

    pub fn try_command(&mut self, line: &str) -> io::Result<Vec<String>> {
        assert!(!line.contains(['\r', '\n']), "one line at a time: {line:?}");
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\nmn\r\n").as_bytes())?;
        let mut lines = Vec::new();
        loop {
            let l = read_line(&mut self.reader)?;
            if l == "MN" {
                return Ok(lines);
            }
            lines.push(l);
        }
    }

    /// `stats` or `stats <kind>` as a map of `STAT name value` lines.
    pub fn stats(&mut self, kind: &str) -> BTreeMap<String, String> {
        let line = if kind.is_empty() {
            "stats".to_owned()
        } else {
            format!("stats {kind}")
        };
        let lines = self.command(&line);
        assert_eq!(
            lines.last().map(String::as_str),
            Some("END"),
            "{line}: {lines:?}"
        );
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("STAT "))
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap_or((l, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    /// `stats settings`.
    pub fn settings(&mut self) -> BTreeMap<String, String> {
        self.stats("settings")
    }
}

/// Whether memcached reply lines report an error.
pub fn memcached_error(lines: &[String]) -> Option<&str> {
    lines.iter().map(String::as_str).find(|l| {
        *l == "ERROR"
            || l.starts_with("CLIENT_ERROR")
            || l.starts_with("SERVER_ERROR")
            || l.contains("TOO_SMALL")
    })
}

// ------------------------------------------------------------------------------------
// Redis Sentinel
// ------------------------------------------------------------------------------------

/// A `redis-sentinel` on a free loopback port, from a `sentinel.conf` it may rewrite (a
/// Sentinel keeps what it learns there), watching `master_name` at `127.0.0.1:<primary>`.
/// Killed on drop. A missing `redis-sentinel` fails the test with what to install.
pub struct SentinelServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl SentinelServer {
    /// Watch `master_name` at `primary` with `quorum`; the primary is judged down after
    /// `down_after_ms` without an answer.
    pub fn start(
        master_name: &str,
        primary: u16,
        quorum: u32,
        down_after_ms: u64,
    ) -> SentinelServer {
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = tempfile::Builder::new()
                .prefix("cacheflow-sentinel-")
                .tempdir()
                .expect("create a temporary directory for redis-sentinel");
            let port = free_port();
            let conf = dir.path().join("sentinel.conf");
            let mut c = String::new();
            let _ = writeln!(c, "port {port}\nbind 127.0.0.1\ndaemonize no\nlogfile \"\"");
            let _ = writeln!(c, "dir \"{}\"", dir.path().display());
            let _ = writeln!(
                c,
                "sentinel monitor {master_name} 127.0.0.1 {primary} {quorum}"
            );
            let _ = writeln!(
                c,
                "sentinel down-after-milliseconds {master_name} {down_after_ms}"
            );
            let _ = writeln!(c, "sentinel failover-timeout {master_name} 60000");
            let _ = writeln!(c, "sentinel parallel-syncs {master_name} 1");
            fs::write(&conf, c).expect("write sentinel.conf");
            let mut child = spawn(
                "redis-sentinel",
                &[conf.display().to_string()],
                dir.path(),
                "apt-get install redis-sentinel",
            );
            match wait_until_up(&mut child, port, redis_ping) {
                Probe::Up => {
                    return SentinelServer {
                        child: Some(child),
                        port,
                        dir,
                    }
                }
                Probe::Exited(why) | Probe::TimedOut(why) => {
                    kill(&mut child);
                    let logs = read_logs(dir.path());
                    if port_collision(&logs) {
                        failures.push(format!("port {port} was taken"));
                        continue;
                    }
                    panic!("redis-sentinel did not start on port {port}: {why}\n{logs}");
                }
            }
        }
        panic!("redis-sentinel did not start: {}", failures.join("; "));
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> RedisClient {
        RedisClient::connect(self.port)
    }

    /// The primary it names for `master_name` (`host:port`), if it answers.
    pub fn primary(&self, master_name: &str) -> Option<String> {
        let mut c = RedisClient::try_connect(self.port).ok()?;
        match c
            .try_cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name])
            .ok()?
        {
            Reply::Array(Some(items)) if items.len() == 2 => {
                Some(format!("{}:{}", items[0].as_str()?, items[1].as_str()?))
            }
            _ => None,
        }
    }

    /// Stop it now (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }

    pub fn logs(&self) -> String {
        read_logs(self.dir.path())
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        self.stop();
    }
}
