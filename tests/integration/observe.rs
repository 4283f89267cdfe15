//! What operators watch: the alerting rules (checked and unit-tested with Prometheus's
//! own `promtool`), the PrometheusRule that ships them to Kubernetes, the Grafana
//! dashboard's and the rules' metric names against the `/metrics` of a real `cacheflow
//! serve`, and that server's JSON logs through a rollout on real redis-server nodes.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::fleet::Fleet;
use crate::support::git::TestRepo;
use crate::support::servers::free_port;

const ADMIN: &str = "alice:admin-token-0123456789";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// `promtool` with `args`, or a failure saying how to install it.
fn promtool(args: &[&str]) -> std::process::Output {
    match Command::new("promtool").args(args).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "promtool cannot be run ({e}): install it with `apt-get install prometheus` \
             (Debian's package provides /usr/bin/promtool; scripts/setup.sh --test does it)"
        ),
    }
}

#[test]
fn the_alerting_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = deploy("prometheus/cacheflow.rules.yml");
    let out = promtool(&["check", "rules", rules.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS: 21 rules found"), "{said}");

    let tests = deploy("prometheus/cacheflow.rules.test.yml");
    let out = promtool(&["test", "rules", tests.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_query_of_the_dashboard_is_valid_promql() {
    // Each panel's query, with Grafana's variables given values, as a recording rule:
    // `promtool check rules` parses them with Prometheus's own PromQL parser.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/cacheflow-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            queries.push(t["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let q = q
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$cluster", ".*");
        assert!(!q.contains('$'), "a variable left in {q}");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&q).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}\n{rules}");
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{said}"
    );
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    cacheflow::pure::spec::yaml::parse_value(&text)
        .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// Every alert of the rules file, as (name, severity, runbook).
fn alerts(groups: &Value) -> Vec<(String, String, String)> {
    groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&r["alert"]),
                text(&r["labels"]["severity"]),
                text(&r["annotations"]["runbook"]),
            )
        })
        .collect()
}

#[test]
fn the_prometheus_rule_ships_the_same_alerts_each_with_a_severity_and_a_runbook() {
    let rules = yaml(&deploy("prometheus/cacheflow.rules.yml"));
    let crd = yaml(&deploy("kubernetes/prometheusrule.yaml"));
    assert_eq!(crd["kind"], "PrometheusRule");
    assert_eq!(crd["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(crd["spec"]["groups"], rules["groups"]);
    let all = alerts(&rules["groups"]);
    assert_eq!(all.len(), 21);
    for (name, severity, runbook) in &all {
        assert!(name.starts_with("Cacheflow"), "{name}");
        assert!(
            ["critical", "warning", "info"].contains(&severity.as_str()),
            "{name}: severity {severity:?}"
        );
        assert!(runbook.len() > 20, "{name}: runbook {runbook:?}");
    }
    let monitor = yaml(&deploy("kubernetes/servicemonitor.yaml"));
    assert_eq!(monitor["kind"], "ServiceMonitor");
    let service = yaml(&deploy("kubernetes/service.yaml"));
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        service["metadata"]["labels"]["app.kubernetes.io/name"]
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
}

/// The metric names a PromQL expression reads: identifiers that start `cacheflow_` or
/// `process_` (label values and strings are skipped).
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let mut in_string = false;
    let mut word = String::new();
    let mut flush = |word: &mut String| {
        if word.starts_with("cacheflow_") || word.starts_with("process_") {
            into.insert(word.clone());
        }
        word.clear();
    };
    for c in expr.chars() {
        if c == '"' {
            in_string = !in_string;
            flush(&mut word);
            continue;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
        } else {
            flush(&mut word);
        }
    }
    flush(&mut word);
}

/// Every `expr` string anywhere in a JSON document (the dashboard's panel targets).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::Object(q)) => {
                        if let Some(Value::String(s)) = q.get("query") {
                            out.push(s.clone());
                        }
                    }
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Names a scrape exports: each sample's name, and each `# TYPE` family with the
/// suffixes its samples take (`_total`, `_bucket`, `_sum`, `_count`, `_info`).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    /// `cacheflow serve --log-format json` on `remote`, its stderr in `state/serve.log`.
    fn start(remote: &Path, state: &Path) -> Serve {
        let port = free_port();
        let log = state.join("serve.log");
        let admin = state.join("admin-tokens");
        std::fs::write(&admin, format!("{ADMIN}\n")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
            .args(["--log-format", "json", "serve", "--repo"])
            .arg(format!("file://{}", remote.display()))
            .arg("--state-dir")
            .arg(state.join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--poll-interval", "1h", "--direct-interval", "200ms"])
            .args(["--resume-grace", "1s", "--silent-after", "2s"])
            .arg("--admin-tokens-file")
            .arg(&admin)
            .env("CACHEFLOW_LOG", "info")
            .env("CACHEFLOW_WEBHOOK_SECRET", "webhook-secret-for-tests")
            .env("CACHEFLOW_NODE_TOKEN_SECRET", "node-token-secret-for-tests")
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start cacheflow serve");
        let mut s = Serve { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while s.get("/readyz").0 != 200 {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("cacheflow serve exited: {status}\n{}", s.stderr());
            }
            assert!(Instant::now() < deadline, "not ready\n{}", s.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, "")
    }

    fn request(&self, method: &str, path: &str, headers: &str) -> (u16, String) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n{headers}\r\n"
        );
        if s.write_all(req.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
        (code, body.to_owned())
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_server_rolling_out_on_real_redis_logs_json_records_and_exports_what_the_dashboard_and_alerts_read(
) {
    let fleet = Fleet::start();
    let remote = tempfile::tempdir().unwrap();
    git2::Repository::init_bare(remote.path()).unwrap();
    let work = TestRepo::new();
    // A notification target, so its series exist (at 0).
    work.write(
        "cacheflow.yaml",
        "apiVersion: cacheflow/v1\nkind: Settings\nmetadata:\n  name: settings\nspec:\n  notifications:\n    - name: oncall\n      type: webhook\n      url: env:ONCALL_HOOK\n",
    );
    work.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 64mb\n    hz: 20"),
    );
    let commit = work.commit("cache: 64mb, hz 20");
    work.repository()
        .remote_anonymous(&remote.path().display().to_string())
        .unwrap()
        .push(&["refs/heads/main:refs/heads/main"], None)
        .expect("git push");
    let state = tempfile::tempdir().unwrap();
    let server = Serve::start(remote.path(), state.path());

    // The head at start is rolled out: wait until it completed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = server.get("/api/v1/rollouts");
        if body.contains(r#""phase":"completed""#) {
            break;
        }
        assert!(Instant::now() < deadline, "{body}\n{}", server.stderr());
        std::thread::sleep(Duration::from_millis(100));
    }

    // A hand-made change, and a drift run that finds it.
    let reply = fleet.get("a2").client().cmd(&["CONFIG", "SET", "hz", "30"]);
    assert!(reply.is_ok(), "{reply:?}");
    std::thread::sleep(Duration::from_secs(1));
    let token = ADMIN.split_once(':').unwrap().1;
    let (code, body) = server.request(
        "POST",
        "/api/v1/drift/run",
        &format!("Authorization: Bearer {token}\r\n"),
    );
    assert_eq!(code, 200, "{body}");

    // Logs: one JSON object per line, none coloured; the rollout's steps as records
    // with their fields at the top level.
    let text = server.stderr();
    let records: Vec<Value> = text
        .lines()
        .map(|l| {
            assert!(!l.contains('\u{1b}'), "a colour code in {l}");
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .collect();
    let of = |event: &str| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["event"] == event && r["target"] == "cacheflow::journal")
            .collect()
    };
    let started = of("rollout_started");
    assert_eq!(started.len(), 1, "{text}");
    assert_eq!(started[0]["cluster"], "cache");
    assert_eq!(started[0]["revision"], commit.as_str());
    assert_eq!(started[0]["level"], "INFO");
    assert_eq!(
        started[0]["message"],
        format!("cache: rollout of {commit} started, 4 batch(es)")
    );
    let assigned: Vec<(u64, String)> = of("batch_assigned")
        .iter()
        .map(|r| {
            assert_eq!(r["cluster"], "cache");
            assert_eq!(r["revision"], commit.as_str());
            let m = r["message"].as_str().unwrap().to_owned();
            (r["batch"].as_u64().unwrap(), m)
        })
        .collect();
    assert_eq!(
        assigned.iter().map(|(b, _)| *b).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{text}"
    );
    assert!(assigned[0].1.starts_with("cache: batch 1 of 4 assigned "));
    let applied = of("node_applied");
    let mut nodes: Vec<&str> = applied
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec!["a1", "a2", "a3", "b1", "b2", "b3"], "{text}");
    for r in &applied {
        let node = r["node"].as_str().unwrap();
        assert_eq!(r["message"], format!("cache: {node} applied {commit}"));
        assert!(r["batch"].as_u64().is_some_and(|b| (1..=4).contains(&b)));
    }
    let gates = of("gates_judged");
    assert_eq!(gates.len(), 4, "{text}");
    assert_eq!(gates[0]["batch"], 1);
    let completed = of("rollout_completed");
    assert_eq!(completed.len(), 1, "{text}");
    assert_eq!(completed[0]["cluster"], "cache");
    assert_eq!(
        completed[0]["message"],
        format!("cache: {commit} reached every node")
    );
    let drifted: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "node_drifted")
        .collect();
    assert_eq!(drifted.len(), 1, "{text}");
    assert_eq!(drifted[0]["level"], "WARN");
    assert_eq!(drifted[0]["cluster"], "cache");
    assert_eq!(drifted[0]["node"], "a2");
    assert_eq!(drifted[0]["revision"], commit.as_str());
    assert_eq!(drifted[0]["parameters"], "hz");
    assert_eq!(drifted[0]["message"], "cache: a2 drifted: hz");
    // The access log: one record per request, the route as matched, never a token.
    let access: Vec<(&str, &str, u64)> = records
        .iter()
        .filter(|r| r["target"] == "cacheflow::access")
        .map(|r| {
            assert_eq!(r["event"], "http_request");
            assert!(r["ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{r}");
            (
                r["method"].as_str().unwrap(),
                r["route"].as_str().unwrap(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(access.contains(&("GET", "/readyz", 200)), "{access:?}");
    assert!(
        access.contains(&("GET", "/api/v1/rollouts", 200)),
        "{access:?}"
    );
    assert_eq!(
        access
            .iter()
            .filter(|a| **a == ("POST", "/api/v1/drift/run", 200))
            .count(),
        1,
        "{access:?}"
    );
    assert!(!text.contains(token), "a token in the log:\n{text}");
    let taken = of("revision_taken");
    assert!(
        taken.iter().all(|r| r["revision"] == commit.as_str()),
        "{text}"
    );

    // Metrics: the cluster's gauges, the build and the process.
    let (code, scrape) = server.get("/metrics");
    assert_eq!(code, 200);
    for phase in cacheflow::edges::metrics::PHASES {
        let want = if phase == "completed" { 1.0 } else { 0.0 };
        let series = format!(r#"cacheflow_cluster_phase{{cluster="cache",phase="{phase}"}}"#);
        assert_eq!(sample(&scrape, &series), Some(want), "{series}\n{scrape}");
    }
    let info = format!(r#"cacheflow_cluster_info{{cluster="cache",revision="{commit}"}}"#);
    assert_eq!(sample(&scrape, &info), Some(1.0), "{scrape}");
    for (state, n) in [("applied", 6.0), ("failed", 0.0), ("pending", 0.0)] {
        let series = format!(r#"cacheflow_cluster_nodes{{cluster="cache",state="{state}"}}"#);
        assert_eq!(sample(&scrape, &series), Some(n), "{series}\n{scrape}");
    }
    let differs = r#"cacheflow_drift_nodes{cluster="cache",kind="differs"}"#;
    assert_eq!(sample(&scrape, differs), Some(1.0), "{scrape}");
    let cluster = r#"{cluster="cache"}"#;
    assert_eq!(
        sample(
            &scrape,
            &format!("cacheflow_cluster_rollout_batch{cluster}")
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &scrape,
            &format!("cacheflow_cluster_rollout_batches{cluster}")
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&scrape, &format!("cacheflow_cluster_refused{cluster}")),
        Some(0.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let done = sample(
        &scrape,
        &format!("cacheflow_cluster_last_completed_timestamp_seconds{cluster}"),
    )
    .expect("a completion time");
    assert!(now - 60.0 < done && done <= now + 1.0, "{done} vs {now}");

    let build_commit = cacheflow::edges::metrics::BUILD_COMMIT;
    let git_head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if let (Some(head), None) = (&git_head, std::env::var_os("CACHEFLOW_COMMIT")) {
        assert_eq!(
            build_commit, head,
            "the binary names the commit it was built from"
        );
    }
    let build = format!(
        r#"cacheflow_build_info{{version="{}",commit="{build_commit}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&scrape, &build), Some(1.0), "{scrape}");

    let rss = sample(&scrape, "process_resident_memory_bytes").expect("rss");
    assert!(rss > 1_000_000.0, "{rss}");
    assert!(sample(&scrape, "process_open_fds").expect("fds") > 3.0);
    assert!(sample(&scrape, "process_cpu_seconds_total").expect("cpu") > 0.0);
    let started_at = sample(&scrape, "process_start_time_seconds").expect("start");
    assert!(
        now - 120.0 < started_at && started_at <= now,
        "{started_at}"
    );

    // Every metric the dashboard and the rules read is exported by this server.
    let names = exported(&scrape);
    let mut used = BTreeSet::new();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/cacheflow-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut dash_exprs = Vec::new();
    exprs(&dashboard, &mut dash_exprs);
    assert!(dash_exprs.len() > 20, "{dash_exprs:?}");
    for e in &dash_exprs {
        metric_names(e, &mut used);
    }
    let rules = yaml(&deploy("prometheus/cacheflow.rules.yml"));
    for g in rules["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            metric_names(r["expr"].as_str().unwrap(), &mut used);
        }
    }
    assert!(used.len() > 25, "{used:?}");
    let missing: Vec<&String> = used.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "read by the dashboard or the rules, not exported: {missing:?}\n{scrape}"
    );
}
