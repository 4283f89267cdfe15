//! Thousands of simulated agents reporting to a running `cacheflow serve`, for
//! `bench/agents.sh` (target: 10,000 agents every 2 s, report p99 under 20 ms).
//!
//!     cargo run --release --example agent_swarm -- \
//!         --server http://127.0.0.1:8080 --secret-file SECRET \
//!         --clusters 100 --per-cluster 100 --interval 2s --duration 60s --warmup 15s
//!
//! Each agent is what `cacheflow agent` is on the wire: its own keep-alive HTTP/1.1
//! connection, `POST /api/v1/nodes/{id}/report` with its node token every interval
//! (starts spread evenly over the first interval), a report of the parameters it runs;
//! when the answer assigns a new (revision, generation) it "applies" it at once (takes
//! the assigned parameters) and reports the result immediately, as the real agent does.
//! Node ids are `c{cluster:03}-n{node:03}`, matching `bench/gen-agent-fleet.py`.
//!
//! Every report's latency (request written → answer read) after the warm-up is kept;
//! the output is one line of `key=value`: reports, errors, rate, p50/p90/p99/max in ms,
//! `applied` (assignments taken during the run) and `redirects`.
//!
//! Replicas (`--server URL,URL,…`, `bench/agents-sharded.sh`): agent k starts with the
//! k-th URL modulo their number, as a Service spreads connections; a `307` is followed
//! as `cacheflow agent` follows it (the same report sent to the `Location`, on a new
//! connection kept for the next reports, until one fails: then the agent's own URL
//! again). A report's latency is that of the exchange that answered it; the redirect
//! itself is counted, not timed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use cacheflow::pure::live::NodeLive;
use cacheflow::pure::protocol::{ApplyResult, Assignment, Outcome, Report, PROTOCOL_VERSION};

struct Args {
    server: String,
    secret: Vec<u8>,
    clusters: usize,
    per_cluster: usize,
    interval: Duration,
    duration: Duration,
    warmup: Duration,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        server: String::new(),
        secret: Vec::new(),
        clusters: 100,
        per_cluster: 100,
        interval: Duration::from_secs(2),
        duration: Duration::from_secs(60),
        warmup: Duration::from_secs(15),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = value()?,
            "--secret-file" => {
                let path = value()?;
                a.secret = std::fs::read(&path)
                    .map_err(|e| format!("{path}: {e}"))?
                    .trim_ascii()
                    .to_vec();
            }
            "--clusters" => a.clusters = value()?.parse().map_err(|e| format!("{e}"))?,
            "--per-cluster" => a.per_cluster = value()?.parse().map_err(|e| format!("{e}"))?,
            "--interval" => a.interval = secs(&value()?)?,
            "--duration" => a.duration = secs(&value()?)?,
            "--warmup" => a.warmup = secs(&value()?)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.server.is_empty() || a.secret.is_empty() {
        return Err("give --server URL and --secret-file FILE".into());
    }
    Ok(a)
}

fn secs(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|e| format!("`{s}`: {e}"))?;
    Ok(Duration::from_secs_f64(n))
}

#[derive(Default)]
struct Totals {
    latencies_us: Mutex<Vec<u32>>,
    errors: AtomicU64,
    applied: AtomicU64,
    redirects: AtomicU64,
    /// Each kind of error (its first 60 characters) and how often: on stderr at the end.
    kinds: Mutex<BTreeMap<String, u64>>,
}

impl Totals {
    fn error(&self, what: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let kind: String = what.chars().take(60).collect();
        *self.kinds.lock().unwrap().entry(kind).or_default() += 1;
    }
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agent_swarm: {e}");
            std::process::exit(2);
        }
    };
    // One thread: the swarm must not take the server's second core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let addrs: Vec<String> = args
        .server
        .split(',')
        .map(|s| {
            s.trim()
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .collect();
    let totals = Arc::new(Totals::default());
    let n = args.clusters * args.per_cluster;
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = start + args.warmup + args.duration;
    let mut tasks = Vec::with_capacity(n);
    for c in 0..args.clusters {
        for i in 0..args.per_cluster {
            let id = format!("c{c:03}-n{i:03}");
            let token = cacheflow::pure::identity::node_token(&args.secret, &id).expect("a token");
            let k = c * args.per_cluster + i;
            let offset = args.interval.mul_f64(k as f64 / n as f64);
            let home = addrs[k % addrs.len()].clone();
            let agent = Agent {
                id,
                token,
                addr: home.clone(),
                home,
                interval: args.interval,
                params: BTreeMap::from([
                    ("hz".to_owned(), "10".to_owned()),
                    ("maxmemory-policy".to_owned(), "allkeys-lru".to_owned()),
                ]),
                applied: None,
            };
            let totals = Arc::clone(&totals);
            tasks.push(tokio::spawn(agent.run(
                start + offset,
                measure_from,
                end,
                totals,
            )));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    for (kind, n) in totals.kinds.lock().unwrap().iter() {
        eprintln!("agent_swarm: {n} error(s): {kind}");
    }
    let mut l = std::mem::take(&mut *totals.latencies_us.lock().unwrap());
    l.sort_unstable();
    let q = |p: f64| -> f64 {
        if l.is_empty() {
            return f64::NAN;
        }
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l[i] as f64 / 1000.0
    };
    println!(
        "agents={n} interval_s={} measured_s={} reports={} rate_per_s={:.0} errors={} applied={} redirects={} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        args.interval.as_secs_f64(),
        args.duration.as_secs_f64(),
        l.len(),
        l.len() as f64 / args.duration.as_secs_f64(),
        totals.errors.load(Ordering::Relaxed),
        totals.applied.load(Ordering::Relaxed),
        totals.redirects.load(Ordering::Relaxed),
        q(0.50),
        q(0.90),
        q(0.99),
        l.last().map(|v| *v as f64 / 1000.0).unwrap_or(f64::NAN),
    );
}

/// What one exchange got: an assignment, or a replica's redirect to `host:port`.
enum Answer {
    Assigned(Assignment),
    Redirect(String),
}

struct Agent {
    id: String,
    token: String,
    /// Where the reports go: `home`, or the leader a redirect named.
    addr: String,
    home: String,
    interval: Duration,
    params: BTreeMap<String, String>,
    /// The last assignment applied: (revision, generation).
    applied: Option<ApplyResult>,
}

impl Agent {
    async fn run(
        mut self,
        first: Instant,
        measure_from: Instant,
        end: Instant,
        totals: Arc<Totals>,
    ) {
        tokio::time::sleep_until(first.into()).await;
        let mut sender: Option<http1::SendRequest<Full<Bytes>>> = None;
        let mut next = first;
        let mut mine = Vec::new();
        while Instant::now() < end {
            if sender.as_ref().is_none_or(|s| s.is_closed()) {
                match self.connect().await {
                    Ok(s) => sender = Some(s),
                    Err(e) => {
                        totals.error(&format!("connect: {e}"));
                        next += self.interval;
                        tokio::time::sleep_until(next.into()).await;
                        continue;
                    }
                }
            }
            let s = sender.as_mut().expect("connected above");
            let began = Instant::now();
            match self.exchange(s).await {
                Ok(Answer::Redirect(to)) => {
                    totals.redirects.fetch_add(1, Ordering::Relaxed);
                    self.addr = to;
                    sender = None;
                    continue;
                }
                Ok(Answer::Assigned(assignment)) => {
                    if began >= measure_from {
                        mine.push(began.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    if self.take(assignment) {
                        totals.applied.fetch_add(1, Ordering::Relaxed);
                        // Report the result at once, as the agent does.
                        continue;
                    }
                }
                Err(e) => {
                    totals.error(&e);
                    sender = None;
                    self.addr = self.home.clone();
                }
            }
            next += self.interval;
            tokio::time::sleep_until(next.into()).await;
        }
        totals.latencies_us.lock().unwrap().extend(mine);
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, String> {
        let stream = tokio::net::TcpStream::connect(&self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn exchange(
        &self,
        sender: &mut http1::SendRequest<Full<Bytes>>,
    ) -> Result<Answer, String> {
        let report = Report {
            version: PROTOCOL_VERSION,
            node_id: self.id.clone(),
            agent: "agent_swarm".into(),
            sent_at: "2026-01-01T00:00:00Z".into(),
            node: NodeLive {
                reachable: true,
                engine: Some(cacheflow::pure::catalog::Engine::Redis),
                version: Some("7.2.4".into()),
                parameters: self.params.clone(),
                ..NodeLive::default()
            },
            last_apply: self.applied.clone(),
        };
        let body = serde_json::to_vec(&report).map_err(|e| e.to_string())?;
        let request = hyper::Request::post(format!("/api/v1/nodes/{}/report", self.id))
            .header("host", &self.addr)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        if status == hyper::StatusCode::TEMPORARY_REDIRECT {
            let to = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| l.strip_prefix("http://"))
                .and_then(|l| l.split('/').next())
                .ok_or("a redirect without an http Location")?;
            return Ok(Answer::Redirect(to.to_owned()));
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes)
            .map(Answer::Assigned)
            .map_err(|e| e.to_string())
    }

    /// Apply a new assignment at once; true when there was one.
    fn take(&mut self, a: Assignment) -> bool {
        let Some(revision) = a.revision else {
            return false;
        };
        if self
            .applied
            .as_ref()
            .is_some_and(|r| r.revision == revision && r.generation == a.generation)
        {
            return false;
        }
        let changed: Vec<String> = a
            .parameters
            .iter()
            .filter(|(k, v)| self.params.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        self.params.extend(a.parameters);
        self.applied = Some(ApplyResult {
            revision,
            generation: a.generation,
            outcome: Outcome::Applied,
            changed,
            restarted: false,
            error: None,
            finished_at: "2026-01-01T00:00:00Z".into(),
        });
        true
    }
}
