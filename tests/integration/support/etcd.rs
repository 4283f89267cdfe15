//! A real three-member etcd cluster on loopback: each member with its own data
//! directory and free client and peer ports, killed on drop. A member can be killed and
//! started again on its data directory (quorum kept, quorum lost, quorum back). `etcd`
//! that cannot start is a test failure that says what to install, never a skip.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::servers::free_port;

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    child: Option<Child>,
}

pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
}

impl EtcdCluster {
    /// Three members, up and with a leader.
    pub fn start() -> EtcdCluster {
        let dir = tempfile::Builder::new()
            .prefix("cacheflow-etcd-")
            .tempdir()
            .unwrap();
        // Six distinct ports: a free port asked for twice can come back twice, and etcd
        // refuses an initial cluster with a duplicate URL.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let members: Vec<Member> = (0..3)
            .map(|i| Member {
                name: format!("m{i}"),
                client: ports[2 * i],
                peer: ports[2 * i + 1],
                data: dir.path().join(format!("m{i}")),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            dir,
            members,
            initial,
        };
        for i in 0..3 {
            cluster.start_member(i);
        }
        for i in 0..3 {
            cluster.wait_healthy(i, Duration::from_secs(30));
        }
        cluster
    }

    /// Start member `i` (again, on its data directory).
    pub fn start_member(&mut self, i: usize) {
        let m = &self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", m.name)))
            .unwrap();
        let args = [
            format!("--name={}", m.name),
            format!("--data-dir={}", m.data.display()),
            format!("--listen-client-urls=http://127.0.0.1:{}", m.client),
            format!("--advertise-client-urls=http://127.0.0.1:{}", m.client),
            format!("--listen-peer-urls=http://127.0.0.1:{}", m.peer),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{}", m.peer),
            format!("--initial-cluster={}", self.initial),
            "--initial-cluster-state=new".to_owned(),
            "--initial-cluster-token=cacheflow-test".to_owned(),
            // A busy test machine: generous heartbeats, no spurious elections.
            "--heartbeat-interval=100".to_owned(),
            "--election-timeout=1000".to_owned(),
        ];
        let child = Command::new("etcd")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start etcd ({e}): install it (Debian: apt-get install etcd-server, \
                     or scripts/setup.sh --test)"
                )
            });
        self.members[i].child = Some(child);
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait until member `i` says it is healthy (it has a leader and quorum).
    pub fn wait_healthy(&mut self, i: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self.healthy(i) {
                return;
            }
            if let Some(c) = self.members[i].child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("etcd member {i} exited ({status}):\n{}", self.log(i));
                }
            }
            assert!(
                Instant::now() < deadline,
                "etcd member {i} not healthy within {within:?}:\n{}",
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn healthy(&self, i: usize) -> bool {
        http_get(self.members[i].client, "/health")
            .is_some_and(|(code, body)| code == 200 && body.contains("\"true\""))
    }

    pub fn log(&self, i: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join(format!("m{i}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Every member's client URL, comma-separated (`--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member that is etcd's raft leader now, if one answers.
    pub fn raft_leader(&self) -> Option<usize> {
        for (i, m) in self.members.iter().enumerate() {
            let Some((200, text)) = http_post(m.client, "/v3/maintenance/status", "{}") else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            if v["header"]["member_id"] == v["leader"] {
                return Some(i);
            }
        }
        None
    }

    /// A key's value and create revision, read from the first member that answers.
    pub fn get(&self, key: &str) -> Option<(String, i64)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = format!("{{\"key\":\"{}\"}}", b64.encode(key));
        for m in &self.members {
            let Some((200, text)) = http_post(m.client, "/v3/kv/range", &body) else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let kv = v["kvs"].as_array()?.first()?.clone();
            let value = b64.decode(kv["value"].as_str()?).ok()?;
            let rev = kv["create_revision"].as_str()?.parse().ok()?;
            return Some((String::from_utf8_lossy(&value).into_owned(), rev));
        }
        None
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

fn http(port: u16, request: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((code, body))
}

/// The body of a chunked response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

fn http_post(port: u16, path: &str, body: &str) -> Option<(u16, String)> {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}
