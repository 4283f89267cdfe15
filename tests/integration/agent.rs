//! The node agent against real servers: a real `redis-server` or `memcached` run as a
//! service (daemonized, from a config file, with a restart script), and a control plane
//! over real HTTP on loopback. Every test reads the node back with its own client after
//! the agent is done (`CONFIG GET`, `stats settings`), so "nothing changed" is checked,
//! not assumed.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cacheflow::edges::nodes::memcached::MemcachedDriver;
use cacheflow::edges::nodes::redis::{parse_config_file, RedisDriver};
use cacheflow::edges::nodes::NodeDriver;
use cacheflow::flow::agent::{self, AgentError, AgentOptions, ApplyOptions};
use cacheflow::pure::protocol::{Assignment, Outcome};
use tokio::sync::watch;

use crate::support::control::{Answer, ControlPlane};
use crate::support::params;
use crate::support::servers::{RedisOptions, RedisServer};
use crate::support::service::Service;

const NODE: &str = "cache-eu-1";

fn assignment(revision: &str, generation: u64, pairs: &[(&str, &str)]) -> Assignment {
    Assignment {
        version: 1,
        node_id: NODE.into(),
        revision: Some(revision.into()),
        generation,
        parameters: params(pairs),
        restart_allowed: false,
        report_interval_secs: None,
        catalog_version: None,
        product: None,
        unchecked: Vec::new(),
        confirmed_at: None,
    }
}

fn redis_driver(addr: &str) -> Arc<dyn NodeDriver> {
    Arc::new(RedisDriver::new(addr, None, Duration::from_secs(2)))
}

fn options(control: &ControlPlane) -> AgentOptions {
    let mut o = AgentOptions::new(NODE, &control.url, &ControlPlane::token(NODE));
    o.interval = Duration::from_secs(30);
    o.once = true;
    o.apply = ApplyOptions {
        warmup: Duration::ZERO,
        poll: Duration::from_millis(50),
        restart_timeout: Duration::from_secs(20),
        ..ApplyOptions::default()
    };
    o
}

/// One exchange (`once`): report, apply, report the result.
async fn once(
    driver: Arc<dyn NodeDriver>,
    options: AgentOptions,
) -> Result<agent::AgentState, AgentError> {
    let (_stop, rx) = watch::channel(false);
    agent::run(driver, options, rx).await
}

fn redis_get(service: &Service, names: &[&str]) -> BTreeMap<String, String> {
    let mut c = service.redis_client();
    names
        .iter()
        .map(|n| (n.to_string(), c.config_get(n)[*n].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_applies_its_assignment_and_reports_the_result_at_once() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    control.assign(assignment(
        "r1",
        0,
        &[
            ("maxmemory", "64mb"),
            ("maxmemory-policy", "ALLKEYS-LRU"),
            ("hz", "10"),
        ],
    ));

    let state = once(redis_driver(&service.addr()), options(&control))
        .await
        .unwrap();

    assert_eq!(state.applied_revision.as_deref(), Some("r1"));
    assert_eq!(
        redis_get(&service, &["maxmemory", "maxmemory-policy", "hz"]),
        params(&[
            ("maxmemory", "67108864"),
            ("maxmemory-policy", "allkeys-lru"),
            ("hz", "10")
        ])
    );
    // Persisted with CONFIG REWRITE: the server runs from a config file.
    let file = parse_config_file(&std::fs::read_to_string(service.config_path()).unwrap());
    assert_eq!(file["maxmemory"], "64mb");
    assert_eq!(file["maxmemory-policy"], "allkeys-lru");

    // Two reports: before (no revision) and straight after the apply (interval is 30 s).
    let reports = control.reports();
    assert_eq!(reports.len(), 2, "{reports:#?}");
    assert_eq!(reports[0].node.revision, None);
    assert_eq!(reports[0].last_apply, None);
    assert_eq!(reports[0].node.parameters["maxmemory"], "0");
    assert_eq!(
        reports[0]
            .node
            .version
            .as_deref()
            .map(|v| v.starts_with("7.")),
        Some(true)
    );
    assert!(reports[0].node.health.is_some());
    let after = &reports[1];
    assert_eq!(after.node.revision.as_deref(), Some("r1"));
    assert_eq!(after.node.parameters["maxmemory"], "67108864");
    let result = after.last_apply.as_ref().unwrap();
    assert_eq!(result.outcome, Outcome::Applied);
    assert_eq!((result.revision.as_str(), result.generation), ("r1", 0));
    // hz was already 10: not a change.
    assert_eq!(result.changed, vec!["maxmemory", "maxmemory-policy"]);
    assert!(!result.restarted);
    assert_eq!(result.error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_agent_applies_each_revision_and_generation_once() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    let mut o = options(&control);
    o.once = false;
    o.interval = Duration::from_millis(50);
    control.assign(assignment("r1", 0, &[("maxmemory-samples", "7")]));
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent::run(redis_driver(&service.addr()), o, rx));

    control
        .wait_for(10, |r| r.node.revision.as_deref() == Some("r1"))
        .await;
    // Someone changes the node by hand: the agent reports the drift, it does not undo it.
    service
        .redis_client()
        .cmd(&["CONFIG", "SET", "maxmemory-samples", "3"]);
    control
        .wait_for(10, |r| r.node.parameters["maxmemory-samples"] == "3")
        .await;
    let applies_before = control
        .reports()
        .iter()
        .filter(|r| r.last_apply.is_some())
        .count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        redis_get(&service, &["maxmemory-samples"])["maxmemory-samples"],
        "3"
    );

    // The server raises the generation to have it corrected.
    control.assign(assignment("r1", 1, &[("maxmemory-samples", "7")]));
    let fixed = control
        .wait_for(10, |r| {
            r.last_apply.as_ref().is_some_and(|a| a.generation == 1)
        })
        .await;
    assert_eq!(fixed.last_apply.unwrap().changed, vec!["maxmemory-samples"]);
    assert_eq!(
        redis_get(&service, &["maxmemory-samples"])["maxmemory-samples"],
        "7"
    );
    assert!(applies_before >= 1);

    stop.send(true).unwrap();
    let state = tokio::time::timeout(Duration::from_secs(5), agent)
        .await
        .expect("the agent stops when told")
        .unwrap()
        .unwrap();
    assert_eq!(state.last_tried, Some(("r1".to_owned(), 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_value_in_the_middle_leaves_the_node_as_it_was() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    let file_before = std::fs::read_to_string(service.config_path()).unwrap();
    // `dir` passes the catalog but Redis refuses it at run time (a protected config).
    control.assign(assignment(
        "r2",
        0,
        &[("hz", "25"), ("dir", "/tmp"), ("maxmemory", "100mb")],
    ));

    let e = once(redis_driver(&service.addr()), options(&control))
        .await
        .unwrap_err();

    let AgentError::ApplyFailed { revision, message } = e else {
        panic!("{e}")
    };
    assert_eq!(revision, "r2");
    assert!(
        message.contains("`dir` refused: ERR CONFIG SET failed"),
        "{message}"
    );
    assert!(message.contains("protected"), "{message}");
    assert_eq!(
        redis_get(&service, &["hz", "maxmemory"]),
        params(&[("hz", "10"), ("maxmemory", "0")])
    );
    assert_eq!(
        std::fs::read_to_string(service.config_path()).unwrap(),
        file_before
    );
    let last = control.reports().pop().unwrap();
    assert_eq!(last.node.revision, None, "the revision was not applied");
    assert_eq!(last.last_apply.unwrap().outcome, Outcome::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_parameters_and_bad_values_refuse_the_whole_assignment() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    control.assign(assignment(
        "r3",
        0,
        &[
            ("hz", "25"),
            ("maxmemory-polcy", "allkeys-lru"),
            ("maxmemory", "lots"),
            ("requirepass", "hunter2"),
        ],
    ));
    let e = once(redis_driver(&service.addr()), options(&control))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "applying revision r3 failed: the assignment is refused, nothing was changed: \
         `maxmemory`: expected a size such as 4gb or 1048576, found `lots`; \
         unknown redis parameter `maxmemory-polcy`; `requirepass` is a credential: set it \
         with a secret reference in the cluster, not through an assignment"
    );
    assert_eq!(redis_get(&service, &["hz"])["hz"], "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_only_parameters_are_written_to_the_file_and_the_engine_restarted() {
    let control = ControlPlane::start().await;
    let service = Service::redis("databases 16\n");
    let pid_before = service.pid().unwrap();
    let mut a = assignment("r4", 0, &[("databases", "32"), ("maxmemory", "32mb")]);
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some(service.restart_command());

    let state = once(redis_driver(&service.addr()), o).await.unwrap();

    assert_eq!(state.applied_revision.as_deref(), Some("r4"));
    assert_ne!(
        service.pid().unwrap(),
        pid_before,
        "the engine was restarted"
    );
    assert_eq!(
        redis_get(&service, &["databases", "maxmemory"]),
        params(&[("databases", "32"), ("maxmemory", "33554432")])
    );
    let text = std::fs::read_to_string(service.config_path()).unwrap();
    assert!(
        text.starts_with("# written by the test harness\n"),
        "{text}"
    );
    let file = parse_config_file(&text);
    assert_eq!(file["databases"], "32");
    assert_eq!(file["maxmemory"], "32mb");
    let result = control.reports().pop().unwrap().last_apply.unwrap();
    assert_eq!(result.outcome, Outcome::Applied);
    assert!(result.restarted);
    assert_eq!(result.changed, vec!["databases", "maxmemory"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_refused_unless_allowed_and_possible() {
    let control = ControlPlane::start().await;
    let service = Service::redis("databases 16\n");
    let file_before = std::fs::read_to_string(service.config_path()).unwrap();
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some(service.restart_command());

    // The rollout has not granted a restart to this node.
    control.assign(assignment("r5", 0, &[("databases", "8"), ("hz", "20")]));
    let e = once(redis_driver(&service.addr()), o.clone())
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "applying revision r5 failed: databases only take effect at start and the server \
         has not allowed a restart now; nothing was changed"
    );

    // Allowed, but the agent has no way to restart.
    let mut a = assignment("r5", 1, &[("databases", "8"), ("hz", "20")]);
    a.restart_allowed = true;
    control.assign(a);
    o.apply.restart_command = None;
    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("run the agent with --config-file and --restart-command"),
        "{e}"
    );

    assert_eq!(
        redis_get(&service, &["databases", "hz"]),
        params(&[("databases", "16"), ("hz", "10")])
    );
    assert_eq!(
        std::fs::read_to_string(service.config_path()).unwrap(),
        file_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_restart_command_puts_the_file_and_the_values_back() {
    let control = ControlPlane::start().await;
    let service = Service::redis("databases 16\n");
    let pid = service.pid().unwrap();
    let mut a = assignment("r6", 0, &[("databases", "32"), ("maxmemory", "48mb")]);
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command =
        Some("echo 'Failed to restart redis-server.service: Access denied' >&2; exit 4".into());

    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();

    assert_eq!(
        e.to_string(),
        "applying revision r6 failed: the restart command failed with exit code 4: \
         Failed to restart redis-server.service: Access denied; the old config file was \
         put back and the run-time change undone"
    );
    assert_eq!(service.pid(), Some(pid), "not restarted");
    assert_eq!(
        redis_get(&service, &["databases", "maxmemory"]),
        params(&[("databases", "16"), ("maxmemory", "0")])
    );
    let file = parse_config_file(&std::fs::read_to_string(service.config_path()).unwrap());
    assert_eq!(file["databases"], "16");
    assert_eq!(
        file.get("maxmemory").map(String::as_str).unwrap_or("0"),
        "0"
    );
    assert_eq!(
        control.reports().pop().unwrap().last_apply.unwrap().outcome,
        Outcome::Failed
    );

    // Start-only alone: no CONFIG REWRITE runs afterwards, so only the agent's own
    // putting back restores the file, byte for byte.
    let file_before = std::fs::read_to_string(service.config_path()).unwrap();
    let mut a = assignment("r6", 1, &[("databases", "32")]);
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some("exit 4".into());
    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();
    assert!(
        e.to_string()
            .ends_with("the old config file was put back and the engine runs as before"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(service.config_path()).unwrap(),
        file_before
    );
    assert_eq!(redis_get(&service, &["databases"])["databases"], "16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_ignores_the_file_is_caught_and_undone() {
    let control = ControlPlane::start().await;
    let service = Service::redis("databases 16\n");
    // A restart command that restarts the engine from a copy of the old file, as a unit
    // pointing at another file would.
    let copy = service.dir().join("other.conf");
    std::fs::copy(service.config_path(), &copy).unwrap();
    let restart = service.restart_command();
    let script = std::fs::read_to_string(service.dir().join("restart.sh")).unwrap();
    std::fs::write(
        service.dir().join("restart-other.sh"),
        script.replace("redis.conf", "other.conf"),
    )
    .unwrap();
    let mut a = assignment("r7", 0, &[("databases", "32")]);
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some(restart.replace("restart.sh", "restart-other.sh"));

    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();

    let text = e.to_string();
    assert!(
        text.contains("after the restart `databases` is `16`, not `32` (does the restart command start the engine from"),
        "{text}"
    );
    // It came back with the old values, so putting the file back is all that is left.
    assert!(
        text.ends_with("the old config file was put back and the engine runs as before"),
        "{text}"
    );
    assert_eq!(redis_get(&service, &["databases"])["databases"], "16");
    assert_eq!(
        parse_config_file(&std::fs::read_to_string(service.config_path()).unwrap())["databases"],
        "16"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_the_agent_cannot_write_undoes_the_run_time_change() {
    let control = ControlPlane::start().await;
    let service = Service::redis("databases 16\n");
    let mut a = assignment(
        "r8",
        0,
        &[("databases", "32"), ("maxmemory", "48mb"), ("hz", "30")],
    );
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some(service.restart_command());
    // Make the file unwritable for the agent. Tests may run as root, which ignores
    // permission bits, so block the path of the agent's temporary file (written beside
    // the target, then renamed over it) with a directory: creating it fails for anyone.
    let blocker = service
        .dir()
        .join(format!(".redis.conf.cacheflow-{}.tmp", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    let pid = service.pid();

    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();

    let text = e.to_string();
    assert!(
        text.contains(&format!("cannot write {}", service.config_path().display())),
        "{text}"
    );
    assert!(
        text.ends_with("; the run-time change was put back"),
        "{text}"
    );
    assert_eq!(service.pid(), pid, "not restarted");
    assert_eq!(
        redis_get(&service, &["databases", "maxmemory", "hz"]),
        params(&[("databases", "16"), ("maxmemory", "0"), ("hz", "10")])
    );
    let file = parse_config_file(&std::fs::read_to_string(service.config_path()).unwrap());
    assert_eq!(file["databases"], "16");
    assert_eq!(file.get("hz").map(String::as_str).unwrap_or("10"), "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_start_flags_go_to_the_options_file_and_take_effect_after_the_restart() {
    let control = ControlPlane::start().await;
    let service = Service::memcached("-c 1024\n");
    let pid = service.pid().unwrap();
    let mut a = assignment(
        "m1",
        0,
        &[
            ("maxbytes", "128mb"),
            ("maxconns", "2048"),
            ("evictions", "off"),
        ],
    );
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some(service.restart_command());
    let driver: Arc<dyn NodeDriver> = Arc::new(MemcachedDriver::new(service.addr()));

    let state = once(driver, o).await.unwrap();

    assert_eq!(state.applied_revision.as_deref(), Some("m1"));
    assert_ne!(service.pid(), Some(pid));
    let settings = service.memcached_client().settings();
    assert_eq!(settings["maxbytes"], "134217728");
    assert_eq!(settings["maxconns"], "2048");
    assert_eq!(settings["evictions"], "off");
    assert_eq!(
        std::fs::read_to_string(service.config_path()).unwrap(),
        format!(
            "# memcached options, one per line\n-c 1024\n{}\n-M\n-m 128\n-c 2048\n{}\n",
            cacheflow::flow::agent::conffile::BLOCK_BEGIN,
            cacheflow::flow::agent::conffile::BLOCK_END
        )
    );
    let last = control.reports().pop().unwrap();
    // The three-way view: what the options file will start memcached with.
    assert_eq!(
        last.node.persisted,
        Some(params(&[
            ("evictions", "off"),
            ("maxbytes", "134217728"),
            ("maxconns", "2048")
        ]))
    );
    let result = last.last_apply.unwrap();
    assert!(result.restarted);
    assert_eq!(result.changed, vec!["evictions", "maxbytes", "maxconns"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_run_time_changes_need_no_restart_and_are_kept_in_the_file() {
    let control = ControlPlane::start().await;
    let service = Service::memcached("");
    let pid = service.pid();
    control.assign(assignment("m2", 0, &[("maxbytes", "96mb")]));
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    let driver: Arc<dyn NodeDriver> = Arc::new(MemcachedDriver::new(service.addr()));

    once(driver, o).await.unwrap();

    assert_eq!(service.pid(), pid, "not restarted");
    assert_eq!(
        service.memcached_client().settings()["maxbytes"],
        "100663296"
    );
    // The next restart (by anyone) keeps it.
    let text = std::fs::read_to_string(service.config_path()).unwrap();
    assert!(text.contains("\n-m 96\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_and_nothing_is_applied() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    control.assign(assignment("r9", 0, &[("hz", "40")]));
    let mut o = options(&control);
    // The token of another node: a node cannot report as another.
    o.token = ControlPlane::token("cache-eu-2");

    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();

    assert_eq!(
        e.to_string(),
        format!(
            "{}/api/v1/nodes/{NODE}/report: the server answered 401 Unauthorized (is the token \
             the one `cacheflow agent-token` prints for this node?): bad node token",
            control.url
        )
    );
    assert!(control.reports().is_empty());
    assert_eq!(redis_get(&service, &["hz"])["hz"], "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_assignments_are_refused_with_where_and_why() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    let cases = [
        (
            r#"{"version": 1, "nodeId": "cache-eu-1", "revision": "r", "parameters": {"hz": 40}}"#,
            "assignment does not match schemas/node-protocol.schema.json:\n  /parameters/hz:",
        ),
        (
            r#"{"version": 2, "nodeId": "cache-eu-1"}"#,
            "assignment has protocol version 2; this cacheflow speaks version 1",
        ),
        (
            "<html>502 Bad Gateway</html>",
            "assignment is not JSON: line 1, column 1",
        ),
        (
            r#"{"version": 1, "nodeId": "cache-eu-9", "revision": "r", "parameters": {"hz": "40"}}"#,
            "the assignment is for node `cache-eu-9`, not `cache-eu-1`; ignored",
        ),
    ];
    for (body, expected) in cases {
        control.answer(Answer::Raw(body.to_owned()));
        let e = once(redis_driver(&service.addr()), options(&control))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(expected), "{body}: {e}");
    }
    assert_eq!(redis_get(&service, &["hz"])["hz"], "10");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_means_backing_off_with_jitter_and_leaving_the_node_alone() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    control.assign(assignment("r10", 0, &[("hz", "50")]));
    control.answer(Answer::Status(503, 4));
    let mut o = options(&control);
    o.once = false;
    o.interval = Duration::from_millis(100);
    o.max_backoff = Duration::from_secs(2);
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent::run(redis_driver(&service.addr()), o, rx));

    control
        .wait_for(15, |r| r.node.revision.as_deref() == Some("r10"))
        .await;
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();

    // Four refused attempts, then success: the pauses after failures 1..4 are drawn from
    // the upper half of 100, 200, 400, 800 ms.
    let hits = control.hits();
    assert!(hits.len() >= 5, "{} requests", hits.len());
    let floors = [50u128, 100, 200, 400];
    for (i, floor) in floors.iter().enumerate() {
        let gap = (hits[i + 1] - hits[i]).as_millis();
        assert!(gap >= *floor, "pause {} was {gap} ms, below {floor}", i + 1);
    }
    // While the server refused, the node was not touched: the first report the agent
    // got through with still shows hz 10.
    assert_eq!(control.reports()[0].node.parameters["hz"], "10");
    assert_eq!(redis_get(&service, &["hz"])["hz"], "50");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_down_is_reported_down_and_nothing_is_tried() {
    let control = ControlPlane::start().await;
    control.assign(assignment("r11", 0, &[("hz", "50")]));
    let port = crate::support::servers::free_port();
    let e = once(
        redis_driver(&format!("127.0.0.1:{port}")),
        options(&control),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "revision r11 not applied: the node does not answer (127.0.0.1:{port}: unreachable:"
        )),
        "{text}"
    );
    let report = control.reports().pop().unwrap();
    assert!(!report.node.reachable);
    assert!(
        report
            .node
            .error
            .as_deref()
            .unwrap()
            .contains("unreachable"),
        "{:?}",
        report.node.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_authenticates_to_redis_with_a_password_reference() {
    let control = ControlPlane::start().await;
    let server = RedisServer::start_with(RedisOptions::new().acl_user(
        "agent",
        "s3cret-agent",
        "~* &* +@all",
    ));
    std::env::set_var("CACHEFLOW_TEST_AGENT_PASSWORD", "s3cret-agent");
    let auth = cacheflow::pure::spec::model::Auth {
        username: Some("agent".into()),
        password: cacheflow::pure::spec::model::SecretRef(
            "env:CACHEFLOW_TEST_AGENT_PASSWORD".into(),
        ),
    };
    let driver: Arc<dyn NodeDriver> = Arc::new(RedisDriver::new(
        &server.addr(),
        Some(&auth),
        Duration::from_secs(2),
    ));
    control.assign(assignment("r12", 0, &[("hz", "33")]));
    once(driver, options(&control)).await.unwrap();
    assert_eq!(server.acl_client().config_get("hz")["hz"], "33");
    // Wrong password: reported as unreachable for that reason, nothing tried.
    std::env::set_var("CACHEFLOW_TEST_AGENT_PASSWORD", "wrong");
    let driver: Arc<dyn NodeDriver> = Arc::new(RedisDriver::new(
        &server.addr(),
        Some(&auth),
        Duration::from_secs(2),
    ));
    control.assign(assignment("r12", 1, &[("hz", "44")]));
    let e = once(driver, options(&control)).await.unwrap_err();
    assert!(!e.to_string().contains("wrong"), "{e}");
    let report = control.reports().pop().unwrap();
    assert!(!report.node.reachable);
    let error = report.node.error.unwrap();
    assert!(error.contains("authentication failed"), "{error}");
    assert!(!error.contains("wrong"), "{error}");
    assert_eq!(server.acl_client().config_get("hz")["hz"], "33");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_command_line_does_one_exchange_with_once() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    control.assign(assignment("r13", 0, &[("maxmemory", "20mb")]));
    let token_file = service.dir().join("token");
    std::fs::write(&token_file, format!("{}\n", ControlPlane::token(NODE))).unwrap();
    let bin = env!("CARGO_BIN_EXE_cacheflow");
    let args = vec![
        "agent".to_owned(),
        "--node-id".into(),
        NODE.into(),
        "--server".into(),
        control.url.clone(),
        "--token-file".into(),
        token_file.display().to_string(),
        "--redis".into(),
        service.addr(),
        "--once".into(),
    ];
    // Blocking waits run off the runtime that serves the control plane.
    let out = tokio::task::spawn_blocking(move || Command::new(bin).args(&args).output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(redis_get(&service, &["maxmemory"])["maxmemory"], "20971520");

    // A start-only parameter without a restart command: exit 1 and why.
    let mut a = assignment("r14", 0, &[("databases", "4")]);
    a.restart_allowed = true;
    control.assign(a);
    let token = token_file.clone();
    let url = control.url.clone();
    let addr = service.addr();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["agent", "--node-id", NODE, "--server", &url, "--token-file"])
            .arg(&token)
            .args(["--redis", &addr, "--once"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: applying revision r14 failed: databases only take effect at start; run the agent with --config-file and --restart-command"),
        "{stderr}"
    );

    // Bad flags: said at once, exit 1 or 2 (clap's usage errors).
    let out = Command::new(bin)
        .args([
            "agent",
            "--node-id",
            NODE,
            "--server",
            "ftp://x",
            "--token-file",
        ])
        .arg(&token_file)
        .args(["--memcached", "127.0.0.1:1", "--once"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: the server URL `ftp://x` must start with http:// or https://"
    );
    let out = Command::new(bin)
        .args([
            "agent",
            "--node-id",
            NODE,
            "--server",
            "http://127.0.0.1:1",
            "--token-file",
            "/nonexistent/token",
            "--redis",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("error: cannot read the token file /nonexistent/token:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin)
        .args([
            "agent",
            "--node-id",
            NODE,
            "--server",
            "http://127.0.0.1:1",
            "--token-file",
        ])
        .arg(&token_file)
        .args(["--redis", "127.0.0.1:1", "--redis-password", "hunter2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--redis-password takes a reference"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_will_not_start_with_the_new_file_is_restarted_with_the_old_one() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    let pid = service.pid().unwrap();
    let old_log = redis_get(&service, &["logfile"])["logfile"].clone();
    // The catalog takes any path; redis-server refuses to start when it cannot open it.
    let mut a = assignment(
        "r15",
        0,
        &[
            ("logfile", "/nonexistent-cacheflow-dir/redis.log"),
            ("maxmemory", "48mb"),
        ],
    );
    a.restart_allowed = true;
    control.assign(a);
    let mut o = options(&control);
    o.apply.config_file = Some(service.config_path());
    o.apply.restart_command = Some(service.restart_command());

    let e = once(redis_driver(&service.addr()), o).await.unwrap_err();

    let text = e.to_string();
    assert!(
        text.starts_with(
            "applying revision r15 failed: the restart command failed with exit code 1: "
        ),
        "{text}"
    );
    assert!(
        text.contains("Can't open the log file: No such file or directory"),
        "{text}"
    );
    assert!(
        text.ends_with("; the old config file was put back and the engine restarted with it"),
        "{text}"
    );
    assert_ne!(
        service.pid(),
        Some(pid),
        "stopped by the failed restart, started again"
    );
    assert_eq!(
        redis_get(&service, &["logfile", "maxmemory"]),
        params(&[("logfile", old_log.as_str()), ("maxmemory", "0")])
    );
    let file = parse_config_file(&std::fs::read_to_string(service.config_path()).unwrap());
    assert_eq!(file["logfile"], old_log);
}

/// The assignment names the cluster's catalog (7.2 here) and its `uncheckedParameters`:
/// the agent checks against that catalog and passes the unchecked names as written.
/// (The local redis-server is 7.0: it knows no 7.2-only parameter, so the unchecked path
/// is what is tested against it: `aof-disable-auto-gc`, which the 7.2 catalog does not
/// know and redis-server 7.0 accepts.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_checks_against_the_cluster_s_catalog_and_passes_unchecked_names() {
    let control = ControlPlane::start().await;
    let service = Service::redis("");
    let pairs = [
        ("aof-disable-auto-gc", "yes"),
        ("maxmemory-policy", "allkeys-lru"),
    ];

    // Against the 7.2 catalog and not marked unchecked: refused, nothing changed.
    control.assign(Assignment {
        catalog_version: Some("7.2".into()),
        ..assignment("r0", 0, &pairs)
    });
    let state = once(redis_driver(&service.addr()), options(&control)).await;
    assert_ne!(
        state.ok().and_then(|s| s.applied_revision).as_deref(),
        Some("r0")
    );
    assert_eq!(
        redis_get(&service, &["aof-disable-auto-gc", "maxmemory-policy"]),
        params(&[
            ("aof-disable-auto-gc", "no"),
            ("maxmemory-policy", "noeviction")
        ])
    );

    // Marked unchecked: applied as written, at run time.
    control.assign(Assignment {
        catalog_version: Some("7.2".into()),
        unchecked: vec!["aof-disable-auto-gc".into()],
        confirmed_at: None,
        ..assignment("r1", 0, &pairs)
    });
    let state = once(redis_driver(&service.addr()), options(&control))
        .await
        .unwrap();
    assert_eq!(state.applied_revision.as_deref(), Some("r1"));
    assert_eq!(
        redis_get(&service, &["aof-disable-auto-gc", "maxmemory-policy"]),
        params(&[
            ("aof-disable-auto-gc", "yes"),
            ("maxmemory-policy", "allkeys-lru")
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_the_topology_only_to_a_server_that_reads_it() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    let port = primary.port().to_string();
    assert!(replica
        .client()
        .cmd(&["REPLICAOF", "127.0.0.1", &port])
        .is_ok());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !replica
        .client()
        .cmd(&["INFO", "replication"])
        .as_str()
        .unwrap_or_default()
        .contains("master_link_status:up")
    {
        assert!(std::time::Instant::now() < deadline, "link not up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let control = ControlPlane::start().await;
    let mut o = options(&control);
    o.once = false;
    o.interval = Duration::from_millis(100);
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent::run(redis_driver(&replica.addr()), o, rx));

    // A server that does not name the field (one of before it): never sent, since its
    // closed schema would refuse the report. The role is reported as ever.
    control.wait_for(10, |_| control.reports().len() >= 3).await;
    for r in control.reports() {
        let h = r.node.health.expect("health");
        assert_eq!(h.role, Some(cacheflow::pure::spec::model::Role::Replica));
        assert_eq!(h.topology, None);
    }
    // A server that names it: the next reports carry who the replica follows.
    control.reads("topology");
    let r = control
        .wait_for(10, |r| {
            r.node.health.as_ref().is_some_and(|h| h.topology.is_some())
        })
        .await;
    let t = r.node.health.unwrap().topology.unwrap();
    assert_eq!(t.primary, Some(primary.addr()));
    assert!(t.offset.is_some(), "{t:?}");
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_reports_a_cluster_members_view_only_to_a_server_that_reads_cluster() {
    // A Redis Cluster member (alone: it serves no slots yet), its bus on a port of its own.
    let bus = crate::support::servers::free_port().to_string();
    let node = RedisServer::start_with(
        RedisOptions::new()
            .config("cluster-enabled", "yes")
            .config("cluster-port", &bus),
    );
    let id = node
        .client()
        .cmd(&["CLUSTER", "MYID"])
        .as_str()
        .expect("CLUSTER MYID");
    let control = ControlPlane::start().await;
    let mut o = options(&control);
    o.once = false;
    o.interval = Duration::from_millis(100);
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent::run(redis_driver(&node.addr()), o, rx));

    // A server that reads the topology but not the cluster's view: the topology alone.
    control.reads("topology");
    let r = control
        .wait_for(10, |r| {
            r.node.health.as_ref().is_some_and(|h| h.topology.is_some())
        })
        .await;
    assert_eq!(r.node.health.unwrap().topology.unwrap().cluster, None);
    // One that names `cluster` too: the member's view, as CLUSTER INFO and NODES say.
    control.reads("topology, cluster");
    let r = control
        .wait_for(10, |r| {
            r.node
                .health
                .as_ref()
                .and_then(|h| h.topology.as_ref())
                .is_some_and(|t| t.cluster.is_some())
        })
        .await;
    let view = r.node.health.unwrap().topology.unwrap().cluster.unwrap();
    assert_eq!(view.id, id);
    assert_eq!(view.state, "fail");
    assert_eq!(view.slots_assigned, 0);
    assert_eq!(view.nodes.len(), 1);
    // A member that has met no other does not know its own host yet: `:port`.
    assert_eq!(view.nodes[0].address, format!(":{}", node.port()));
    assert!(view.nodes[0].has_flag("myself"), "{view:?}");
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
}

/// A standby replica: every request answered with a 307 to `leader` (the same path),
/// counted.
async fn standby_redirecting_to(
    leader: &str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::http::{header, StatusCode, Uri};
    use axum::response::IntoResponse;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (leader, counted) = (leader.to_owned(), hits.clone());
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let (leader, counted) = (leader.clone(), counted.clone());
        async move {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("{leader}{}", uri.path()))],
                "the leader answers this",
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_replicas_redirect_is_followed_with_the_token_and_the_leader_kept_for_the_next_report(
) {
    let control = ControlPlane::start().await;
    let (standby, hits) = standby_redirecting_to(&control.url).await;
    let service = Service::redis("");
    control.assign(assignment("r1", 0, &[("hz", "17")]));
    let mut o = options(&control);
    o.server = standby.clone();

    let state = once(redis_driver(&service.addr()), o).await.unwrap();

    assert_eq!(state.applied_revision.as_deref(), Some("r1"));
    assert_eq!(redis_get(&service, &["hz"]), params(&[("hz", "17")]));
    // Both reports reached the leader with the node's token (it checks it); only the
    // first went through the standby.
    let reports = control.reports();
    assert_eq!(reports.len(), 2, "{reports:#?}");
    assert_eq!(reports[1].node.revision.as_deref(), Some("r1"));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}
