//! The shipped deployment files: the three-replica Kubernetes manifests
//! (deploy/kubernetes/replicas/) parse, hang together (selectors, ports, the
//! PodDisruptionBudget, the etcd Secret's keys and mounts), probe paths a real `cacheflow
//! serve` answers, and spread the shards over every replica; the systemd replica unit
//! points at the files its comments tell the operator to create.

use std::path::PathBuf;

use serde_json::Value;

use cacheflow::pure::shards::{Balance, Leaders};

use crate::serve::{Remote, Server};
use crate::support::git::TestRepo;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn yaml(path: &str) -> Value {
    let file = deploy(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    cacheflow::pure::spec::yaml::parse_value(&text)
        .unwrap_or_else(|e| panic!("{}: {e:?}", file.display()))
}

fn replicas(path: &str) -> Value {
    yaml(&format!("kubernetes/replicas/{path}"))
}

/// The server container of the StatefulSet.
fn container(set: &Value) -> &Value {
    let containers = set["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    &containers[0]
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("an argument is a string").to_string())
        .collect()
}

/// The value of `--flag=VALUE` among the arguments.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("{name}=")))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the container's env"))
}

#[test]
fn the_replica_manifests_hang_together_three_replicas_two_always_up() {
    let set = replicas("statefulset.yaml");
    assert_eq!(set["kind"], "StatefulSet");
    assert_eq!(set["spec"]["replicas"], 3);
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&set["spec"]["selector"]["matchLabels"], labels);

    // The PodDisruptionBudget keeps two of the three, and selects exactly these pods.
    let pdb = replicas("poddisruptionbudget.yaml");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");

    // The governing headless Service exists and lists standbys; the agents' Service
    // selects the same pods.
    let peers = replicas("service-replicas.yaml");
    assert_eq!(set["spec"]["serviceName"], peers["metadata"]["name"]);
    assert_eq!(peers["spec"]["clusterIP"], "None");
    assert_eq!(peers["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(&peers["spec"]["selector"], labels);
    let service = replicas("service.yaml");
    assert_eq!(&service["spec"]["selector"], labels);

    // The kustomization lists every manifest of the directory but the example Secret.
    let kustomization = replicas("kustomization.yaml");
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| r.as_str().expect("a path"))
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(deploy("kubernetes/replicas"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "kustomization.yaml" && !f.ends_with(".example.yaml"))
        .collect();
    files.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, files);

    // The copies of the single-server base stay the same files.
    for shared in ["namespace.yaml", "serviceaccount.yaml", "service.yaml"] {
        assert_eq!(
            replicas(shared),
            yaml(&format!("kubernetes/{shared}")),
            "replicas/{shared} differs from the base's"
        );
    }
}

#[test]
fn the_replicas_reach_etcd_through_the_secret_s_keys_mounted_as_files() {
    let set = replicas("statefulset.yaml");
    let c = container(&set);
    let args = args(c);
    let endpoints = env(c, "CACHEFLOW_ETCD_ENDPOINTS");
    assert_eq!(
        endpoints["valueFrom"]["secretKeyRef"]["name"],
        "cacheflow-etcd"
    );
    let secret = replicas("etcd-secret.example.yaml");
    assert_eq!(secret["metadata"]["name"], "cacheflow-etcd");
    let keys = secret["stringData"].as_object().expect("stringData");
    let key = endpoints["valueFrom"]["secretKeyRef"]["key"]
        .as_str()
        .unwrap();
    assert!(keys.contains_key(key), "{key}");

    // Each file flag names a file of the etcd volume, and each item is a Secret key.
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "etcd")
        .expect("the etcd volume mounted");
    assert_eq!(mount["readOnly"], true);
    let dir = mount["mountPath"].as_str().unwrap();
    let volume = set["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "etcd")
        .expect("the etcd volume");
    assert_eq!(volume["secret"]["secretName"], "cacheflow-etcd");
    let items = volume["secret"]["items"].as_array().unwrap();
    for item in items {
        assert!(keys.contains_key(item["key"].as_str().unwrap()), "{item}");
    }
    for name in [
        "--etcd-ca-file",
        "--etcd-cert-file",
        "--etcd-key-file",
        "--etcd-password-file",
    ] {
        let path = flag(&args, name).unwrap_or_else(|| panic!("no {name}"));
        let file = path
            .strip_prefix(&format!("{dir}/"))
            .unwrap_or_else(|| panic!("{name}={path} is not under {dir}"));
        assert!(
            items.iter().any(|i| i["path"] == file),
            "{name}={path}: no such item in the etcd volume"
        );
    }

    // The advertised URL is the pod's own address, on the container's port.
    let port = c["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(
        flag(&args, "--advertise-url"),
        Some(format!("http://$(POD_IP):{port}").as_str())
    );
    assert_eq!(
        env(c, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(flag(&args, "--lease-ttl"), Some("15s"));
}

/// The PodDisruptionBudget's two ready replicas need every replica to lead something
/// (a standby is not ready): the manifest's `--shards` over the StatefulSet's pod names
/// (the replica ids) gives each of the three some shards.
#[test]
fn the_shipped_shard_count_gives_every_replica_shards_to_lead() {
    let set = replicas("statefulset.yaml");
    let args = args(container(&set));
    let shards: u32 = flag(&args, "--shards").expect("--shards").parse().unwrap();
    let name = set["metadata"]["name"].as_str().unwrap();
    let count = set["spec"]["replicas"].as_u64().unwrap();
    let ids: Vec<String> = (0..count).map(|k| format!("{name}-{k}")).collect();
    let leaders = Leaders::place(shards, &ids, &Balance::default()).unwrap();
    for id in &ids {
        assert!(!leaders.preferred(id).is_empty(), "{id} would lead nothing");
    }
    // And the same over any two of them (one replica drained).
    for gone in &ids {
        let rest: Vec<&String> = ids.iter().filter(|r| *r != gone).collect();
        let two = Leaders::place(shards, &rest, &Balance::default()).unwrap();
        for id in &rest {
            assert!(!two.preferred(id).is_empty(), "{id} would lead nothing");
        }
    }
}

#[test]
fn the_probes_ask_paths_a_real_server_answers_on_the_container_s_port() {
    let set = replicas("statefulset.yaml");
    let c = container(&set);
    let port = &c["ports"][0];
    assert_eq!(port["name"], "http");
    let listen = env(c, "CACHEFLOW_LISTEN")["value"].as_str().unwrap();
    assert_eq!(
        listen,
        format!("0.0.0.0:{}", port["containerPort"].as_u64().unwrap())
    );
    let probes = [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ];
    for (probe, path) in probes {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    // The single server's Deployment probes the same paths.
    let single = yaml("kubernetes/deployment.yaml");
    let single = container(&single);
    for (probe, path) in probes {
        assert_eq!(single[probe]["httpGet"]["path"], path, "{probe}");
    }

    // A real server answers both with 200 once it has read its repository.
    let remote = Remote::new();
    let work = TestRepo::new();
    work.write("clusters/.keep", "");
    work.commit("empty fleet");
    remote.push(&work, false);
    let state = tempfile::tempdir().unwrap();
    let server = Server::start(&remote, state.path());
    for (probe, path) in probes {
        let (code, body) = server.http("GET", path, &[], b"");
        assert_eq!(code, 200, "{probe} {path}: {body}");
    }
    let (code, _) = server.http("GET", "/no-such-probe", &[], b"");
    assert_eq!(code, 404);
}

#[test]
fn the_systemd_replica_unit_reads_the_etcd_settings_its_comments_name() {
    let unit = std::fs::read_to_string(deploy("systemd/cacheflow-serve-replica.service"))
        .expect("the replica unit");
    let env = std::fs::read_to_string(deploy("systemd/serve-replica.env.example"))
        .expect("the replica env example");
    assert!(unit.contains("EnvironmentFile=/etc/cacheflow/serve.env"));
    assert!(unit.contains("EnvironmentFile=/etc/cacheflow/replica.env"));
    for credential in ["etcd-ca.pem", "etcd-client.pem", "etcd-client-key.pem"] {
        assert!(
            unit.contains(&format!("/etc/cacheflow/credentials/{credential}")),
            "{credential}"
        );
    }
    for line in [
        "CACHEFLOW_ETCD_ENDPOINTS=",
        "REPLICA_ARGS=",
        "--shards",
        "--lease-ttl",
        "--advertise-url",
    ] {
        assert!(env.contains(line), "{line} missing from the env example");
    }
    assert!(unit.contains("$REPLICA_ARGS"));
}
