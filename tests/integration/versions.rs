//! Engine versions, Valkey and `uncheckedParameters` through the real binary: a
//! repository declaring a Redis 7.0 and a Valkey 8.0 cluster on real redis-server
//! processes validates, and `plan --direct` flags the unchecked parameters.

use std::process::Command;

use serde_json::Value;

use crate::support::git::TestRepo;
use crate::support::servers::RedisServer;

fn cacheflow(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .output()
        .expect("the cacheflow binary runs")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `key-load-delay` is a real parameter of redis-server that no catalog lists (a debugging
/// knob, HIDDEN_CONFIG in later versions): the stand-in for a module's parameter.
fn repo(redis: &RedisServer, valkey_like: &RedisServer) -> TestRepo {
    let repo = TestRepo::new();
    repo.write(
        "clusters/search.yaml",
        &format!(
            "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: search}}
spec:
  engine: redis
  version: \"7.0.15\"
  parameters:
    maxmemory: 64mb
  uncheckedParameters:
    key-load-delay: 5
  nodes:
    - {{id: r-1, address: '{}'}}
",
            redis.addr()
        ),
    );
    repo.write(
        "clusters/vk.yaml",
        &format!(
            "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: vk}}
spec:
  engine: valkey
  version: \"8.0\"
  parameters:
    maxmemory-policy: allkeys-lru
  uncheckedParameters:
    search-timeout: \"500\"
  nodes:
    - {{id: v-1, address: '{}'}}
",
            valkey_like.addr()
        ),
    );
    repo.commit("versions and unchecked parameters");
    repo
}

#[test]
fn clusters_of_several_versions_validate_and_plan_their_unchecked_parameters_flagged() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    let repo = repo(&a, &b);
    let path = repo.path().to_str().unwrap();

    let out = cacheflow(&["validate", "--repo", path]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));

    let out = cacheflow(&["plan", "--repo", path, "--direct", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let changes = |cluster: &str| -> Vec<Value> {
        let c = plan["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cluster"] == cluster)
            .unwrap_or_else(|| panic!("no {cluster} in {plan}"));
        c["nodes"][0]["changes"].as_array().unwrap().clone()
    };
    let search = changes("search");
    let delay = search
        .iter()
        .find(|c| c["name"] == "key-load-delay")
        .expect("the unchecked parameter is planned");
    assert_eq!(delay["unchecked"], true);
    assert_eq!(delay["restart"], false, "applied at run time, as written");
    assert_eq!(delay["new"], "5");
    let maxmemory = search.iter().find(|c| c["name"] == "maxmemory").unwrap();
    assert!(maxmemory.get("unchecked").is_none(), "{maxmemory}");
    let vk = changes("vk");
    let timeout = vk.iter().find(|c| c["name"] == "search-timeout").unwrap();
    assert_eq!(timeout["unchecked"], true);

    let text = stdout(&cacheflow(&["plan", "--repo", path, "--direct"]));
    assert!(text.contains("cluster vk (valkey): "), "{text}");
    assert!(text.contains("key-load-delay 0 → 5 (unchecked)"), "{text}");

    // Once the node holds the value as written, the parameter is in sync.
    assert!(a
        .client()
        .cmd(&["CONFIG", "SET", "key-load-delay", "5", "maxmemory", "64mb"])
        .is_ok());
    let out = cacheflow(&["plan", "--repo", path, "--direct", "--format", "json"]);
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let search = plan["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == "search")
        .unwrap();
    assert_eq!(search["inSync"], serde_json::json!(["r-1"]), "{search}");
}
