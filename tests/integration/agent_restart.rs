//! A restart of `cacheflow agent` (the process, through the real binary, beside a real
//! redis-server run as a service, reporting to a real `cacheflow serve`): a value set by
//! hand on the node since the apply stays and is reported as drift; an engine restarted
//! since from its old config file gets the assignment again, and the journal says so.
//! And an agent leaves `health.uptimeSeconds` out of its reports to a server that does
//! not name `uptime` in `cacheflow-reads`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::serve::{Remote, Server, NODE_SECRET};
use crate::support::control::ControlPlane;
use crate::support::git::TestRepo;
use crate::support::service::Service;

const SETTINGS: &str = "apiVersion: cacheflow/v1
kind: Settings
metadata: {name: settings}
spec:
  drift: {mode: report}
";

/// The cluster `cache`: one redis node `n1` behind an agent, `hz: 20`.
fn cache(service: &Service) -> String {
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: cache}}
spec:
  engine: redis
  parameters:
    hz: 20
  nodes:
    - {{id: n1, address: '{}', managed: agent}}
  rollout:
    stages: ['100%']
    bake: 0s
    applyTimeout: 10s
    gates: {{minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}}
",
        service.addr()
    )
}

/// `cacheflow agent` for `n1`, reporting every 300 ms (killed when dropped); its log
/// goes to `log`.
struct Agent(Child);

impl Agent {
    fn start(url: &str, service: &Service, log: &Path) -> Agent {
        let token = cacheflow::pure::identity::node_token(NODE_SECRET.as_bytes(), "n1").unwrap();
        let token_file = service.dir().join("agent-token");
        std::fs::write(&token_file, format!("{token}\n")).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["agent", "--node-id", "n1", "--server", url])
            .arg("--token-file")
            .arg(&token_file)
            .args(["--redis", &service.addr(), "--config-file"])
            .arg(service.config_path())
            .args(["--restart-command", &service.restart_command()])
            .args(["--interval", "300ms", "--warmup", "0s"])
            .env("CACHEFLOW_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start cacheflow agent");
        Agent(child)
    }

    /// SIGKILL, as a crash or a host going down would.
    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hz(service: &Service) -> String {
    service.redis_client().config_get("hz")["hz"].clone()
}

/// `n1`'s (revision, outcome) in `GET /api/v1/clusters`.
fn n1(server: &Server) -> (String, String) {
    let (code, body) = server.http("GET", "/api/v1/clusters", &[], b"");
    assert_eq!(code, 200, "{body}");
    let all: serde_json::Value = serde_json::from_str(&body).unwrap();
    let a = all["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["cluster"] == "cache"))
        .map(|c| c["assignments"]["n1"].clone())
        .unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    (text(&a["revision"]), text(&a["outcome"]))
}

/// Start a server on `service`'s cluster and an agent; wait until `n1` applied it.
fn applied(service: &Service, dir: &Path) -> (Remote, Server, Agent, String) {
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("cacheflow.yaml", SETTINGS);
    work.write("clusters/cache.yaml", &cache(service));
    let commit = work.commit("cache: hz 20");
    remote.push(&work, false);
    let server = Server::start(&remote, &dir.join("state"));
    let agent = Agent::start(&server.url(), service, &dir.join("agent.log"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while n1(&server) != (commit.clone(), "applied".to_owned()) || hz(service) != "20" {
        assert!(
            Instant::now() < deadline,
            "{:?}, hz {}\n{:#?}\n{}",
            n1(&server),
            hz(service),
            server.journal(),
            std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (remote, server, agent, commit)
}

/// `hz` stays `want` for `during`.
fn keeps(service: &Service, want: &str, during: Duration) {
    let until = Instant::now() + during;
    while Instant::now() < until {
        assert_eq!(hz(service), want, "the agent changed the node");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cacheflow drift --server` against the server: (exit code, stdout).
fn drift(server: &Server) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["drift", "--server", &server.url(), "--format", "text"])
        .env("CACHEFLOW_ADMIN_TOKEN", "admin-token-0123456789")
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Reports of the agent's new process reach the server: wait until its log says it
/// took the assignment (applied or kept), or `within` passes.
fn agent_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default()
}

#[test]
fn a_restarted_agent_keeps_a_hand_made_change_and_the_server_reports_it_as_drift() {
    let service = Service::redis("");
    let dir = tempfile::tempdir().unwrap();
    let (_remote, server, agent, _commit) = applied(&service, dir.path());

    // Someone runs CONFIG SET by hand at 3 am.
    assert!(service
        .redis_client()
        .cmd(&["CONFIG", "SET", "hz", "50"])
        .is_ok());
    keeps(&service, "50", Duration::from_millis(900));
    let journal = server.journal();

    // The agent process dies and is started again (a deploy, a crash, a reboot of the
    // agent's container): its new process reports several times.
    agent.kill();
    let log_before = agent_log(dir.path()).len();
    let _agent = Agent::start(&server.url(), &service, &dir.path().join("agent.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !agent_log(dir.path())[log_before..].contains("not applied again") {
        assert!(Instant::now() < deadline, "{}", agent_log(dir.path()));
        assert_eq!(
            hz(&service),
            "50",
            "the restarted agent undid the hand change"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    keeps(&service, "50", Duration::from_secs(2));
    assert_eq!(
        server.journal(),
        journal,
        "the agent's restart journaled something"
    );

    // The confirmation goes only to an agent that names `confirmed` (an older agent's
    // closed schema would refuse the field); reports with and without the uptime are read.
    let token = cacheflow::pure::identity::node_token(NODE_SECRET.as_bytes(), "n1").unwrap();
    let post = |reads: Option<&str>, health: &str| {
        let mut headers = vec![
            ("Authorization", format!("Bearer {token}")),
            ("Content-Type", "application/json".to_owned()),
        ];
        if let Some(r) = reads {
            headers.push(("cacheflow-reads", r.to_owned()));
        }
        let body = format!(
            r#"{{"version":1,"nodeId":"n1","agent":"t","sentAt":"2026-11-21T00:00:00Z","node":{{"reachable":true,"engine":"redis","parameters":{{"hz":"50"}}{health}}}}}"#
        );
        let (code, text) =
            server.http("POST", "/api/v1/nodes/n1/report", &headers, body.as_bytes());
        assert_eq!(code, 200, "{text}");
        let a: serde_json::Value = serde_json::from_str(&text).unwrap();
        a.get("confirmedAt").is_some()
    };
    assert!(!post(None, ""));
    assert!(!post(Some("topology"), r#","health":{"uptimeSeconds":5}"#));
    assert!(post(Some("confirmed"), r#","health":{"uptimeSeconds":5}"#));

    // The hand change is drift, for a person to see (and correct through a rollout).
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = (
        2,
        "cache: 1 node(s), 1 drifted, 0 silent\n  \
         n1 hz: expected 20, found 50 (live value differs)\n\
         1 node(s) drifted or silent\n"
            .to_owned(),
    );
    loop {
        let got = drift(&server);
        if got == want {
            break;
        }
        assert!(Instant::now() < deadline, "{got:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_engine_restarted_from_its_old_config_file_gets_the_assignment_again_and_it_is_journaled() {
    let service = Service::redis("");
    let old_config = std::fs::read_to_string(service.config_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_remote, server, agent, commit) = applied(&service, dir.path());
    // The apply persisted hz (CONFIG REWRITE).
    let rewritten = std::fs::read_to_string(service.config_path()).unwrap();
    assert!(rewritten.lines().any(|l| l == "hz 20"), "{rewritten}");

    // The host reboots: the agent goes down, the engine comes back from an old copy
    // of its config file (a restored image), so hz is back to the default.
    agent.kill();
    // Engines count uptime in whole seconds: a restart right after the apply would be
    // within the comparison's slack.
    std::thread::sleep(Duration::from_secs(4));
    std::fs::write(service.config_path(), &old_config).unwrap();
    let out = Command::new("sh")
        .arg(service.dir().join("restart.sh"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while crate::support::servers::RedisClient::try_connect(
        service.addr().rsplit(':').next().unwrap().parse().unwrap(),
    )
    .and_then(|mut c| c.try_cmd(&["PING"]))
    .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "redis did not come back: {}",
            service.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(hz(&service), "10");
    let journal = server.journal();

    // The agent starts again: the engine started after the apply, so it applies again.
    let _agent = Agent::start(&server.url(), &service, &dir.path().join("agent.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while hz(&service) != "20" {
        assert!(Instant::now() < deadline, "{}", agent_log(dir.path()));
        std::thread::sleep(Duration::from_millis(100));
    }
    // And the journal says so, once.
    let line = format!(
        "cache: n1 applied {} (generation 1) again after its agent restarted: changed hz\n",
        &commit[..12]
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = server.journal();
        let new: Vec<&String> = now[journal.len()..].iter().collect();
        if !new.is_empty() {
            keeps(&service, "20", Duration::from_secs(1));
            let now = server.journal();
            let new: Vec<&String> = now[journal.len()..].iter().collect();
            assert_eq!(new, vec![&line], "{now:#?}");
            break;
        }
        assert!(Instant::now() < deadline, "{now:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(n1(&server), (commit, "applied".to_owned()));
}

/// `cacheflow agent --once` beside `service`, against `control`: its exit code.
fn agent_once(control: &ControlPlane, service: &Service) -> i32 {
    let token_file = service.dir().join("control-token");
    std::fs::write(&token_file, ControlPlane::token("n1")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["agent", "--node-id", "n1", "--server", &control.url])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--redis", &service.addr(), "--once", "--warmup", "0s"])
        .output()
        .expect("the cacheflow binary runs");
    assert!(out.status.success(), "{out:?}");
    out.status.code().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sends_the_uptime_only_to_a_server_that_names_it() {
    let service = Service::redis("");
    let assignment = |generation| cacheflow::pure::protocol::Assignment {
        version: 1,
        node_id: "n1".into(),
        revision: Some("r1".into()),
        generation,
        parameters: crate::support::params(&[("hz", "20")]),
        restart_allowed: false,
        report_interval_secs: None,
        catalog_version: None,
        product: None,
        unchecked: Vec::new(),
        confirmed_at: None,
    };
    let uptimes = |control: &ControlPlane| -> Vec<Option<u64>> {
        control
            .reports()
            .iter()
            .map(|r| r.node.health.as_ref().and_then(|h| h.uptime_seconds))
            .collect()
    };

    // A server of before the field: it names the topology, not the uptime.
    let old = ControlPlane::start().await;
    old.reads("topology, cluster");
    old.assign(assignment(0));
    let s = &service;
    let code = tokio::task::block_in_place(|| agent_once(&old, s));
    assert_eq!(code, 0);
    assert_eq!(uptimes(&old), vec![None, None]);

    // A server that names it gets it from the second report on.
    let new = ControlPlane::start().await;
    new.reads("topology, cluster, uptime");
    new.assign(assignment(1));
    let code = tokio::task::block_in_place(|| agent_once(&new, s));
    assert_eq!(code, 0);
    let got = uptimes(&new);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], None);
    assert!(got[1].is_some(), "{got:?}");
}
