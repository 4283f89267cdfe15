//! The Redis driver against real `redis-server` processes: what `read` reports (checked
//! with `CONFIG GET` and `INFO` from the harness's own client), what `apply` changes,
//! refusals that leave every parameter as it was, the config file's view, credentials,
//! and faults: a node that is down, one slower than the timeout, one that answers garbage.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use std::sync::Arc;

use cacheflow::edges::nodes::fence::{Fence, Fenced};
use cacheflow::edges::nodes::redis::RedisDriver;
use cacheflow::edges::nodes::{Applied, NodeDriver, NodeError};
use cacheflow::pure::catalog::Engine;
use cacheflow::pure::spec::model::{Auth, Role, SecretRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::params;
use crate::support::servers::{free_port, RedisClient, RedisOptions, RedisServer, Reply};

const TIMEOUT: Duration = Duration::from_secs(2);

fn changed(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

/// The named parameters as `CONFIG GET` reports them.
fn config_of(client: &mut RedisClient, names: &[&str]) -> BTreeMap<String, String> {
    names
        .iter()
        .map(|n| {
            let all = client.config_get(n);
            (n.to_string(), all.get(*n).cloned().unwrap_or_default())
        })
        .collect()
}

fn ok(reply: Reply) {
    assert!(reply.is_ok(), "{reply:?}");
}

/// A password held in an environment variable unique to the test, as an `env:` reference.
fn env_secret(test: &str, value: &str) -> SecretRef {
    let name = format!("CACHEFLOW_TEST_REDIS_{test}");
    std::env::set_var(&name, value);
    SecretRef(format!("env:{name}"))
}

/// Five run-time parameters and the values a default server has for them.
const FIVE: [&str; 5] = [
    "hz",
    "maxmemory",
    "maxmemory-policy",
    "maxmemory-samples",
    "timeout",
];
const DEFAULTS: [(&str, &str); 5] = [
    ("hz", "10"),
    ("maxmemory", "0"),
    ("maxmemory-policy", "noeviction"),
    ("maxmemory-samples", "5"),
    ("timeout", "0"),
];

#[tokio::test]
async fn read_reports_what_config_get_reports_and_a_healthy_primary() {
    let server = RedisServer::start();
    let mut client = server.client();
    ok(client.cmd(&["SET", "a", "1"]));
    ok(client.cmd(&["SET", "b", "2"]));
    ok(client.cmd(&["SELECT", "3"]));
    ok(client.cmd(&["SET", "c", "3"]));
    ok(client.cmd(&["SELECT", "0"]));
    assert_eq!(client.cmd(&["GET", "a"]), Reply::Bulk(Some(b"1".to_vec())));
    assert_eq!(client.cmd(&["GET", "missing"]), Reply::Bulk(None));

    let driver = RedisDriver::connect(&server.addr(), None, TIMEOUT)
        .await
        .unwrap();
    let live = driver.read().await.unwrap();

    let mut expected = client.config_get("*");
    // An empty password is still a credential parameter: never reported.
    for name in [
        "requirepass",
        "masterauth",
        "masteruser",
        "tls-key-file-pass",
        "tls-client-key-file-pass",
    ] {
        assert_eq!(expected.remove(name).as_deref(), Some(""), "{name}");
    }
    assert_eq!(live.parameters, expected);
    assert_eq!(live.engine, Some(Engine::Redis));
    assert_eq!(live.address.as_deref(), Some(server.addr().as_str()));
    assert!(live.reachable);
    let info = client.cmd(&["INFO", "server"]).as_str().unwrap();
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .unwrap()
        .trim();
    assert_eq!(live.version.as_deref(), Some(version));

    let health = live.health.unwrap();
    assert!(health.used_memory.unwrap() > 0, "{health:?}");
    assert_eq!(health.max_memory, Some(0));
    assert_eq!(health.role, Some(Role::Primary));
    assert_eq!(health.replication_link, None);
    assert_eq!(health.keyspace_hits, Some(1));
    assert_eq!(health.keyspace_misses, Some(1));
    assert_eq!(health.hit_ratio, Some(0.5));
    assert_eq!(health.evicted_keys, Some(0));
    assert_eq!(health.keys, Some(3));
    // The test's client and the driver's connection.
    assert!(health.connected_clients.unwrap() >= 2, "{health:?}");
    assert!(health.ops_per_sec.unwrap() >= 0.0);
    let latency = health.latency_ms.unwrap();
    assert!((0.0..2000.0).contains(&latency), "{latency}");
}

#[tokio::test]
async fn five_parameters_are_applied_and_config_get_shows_each() {
    let server = RedisServer::start();
    let mut client = server.client();
    assert_eq!(config_of(&mut client, &FIVE), params(&DEFAULTS));
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let want = params(&[
        ("hz", "20"),
        ("maxmemory", "104857600"),
        ("maxmemory-policy", "allkeys-lru"),
        ("maxmemory-samples", "7"),
        ("timeout", "300"),
    ]);
    let applied = driver.apply(&want).await.unwrap();

    assert_eq!(
        applied,
        Applied {
            changed: changed(&DEFAULTS),
            persisted: true,
        }
    );
    assert_eq!(config_of(&mut client, &FIVE), want);
    assert_eq!(
        driver.read().await.unwrap().health.unwrap().max_memory,
        Some(104857600)
    );

    // Applying the same set again changes nothing; so does an empty set.
    assert_eq!(driver.apply(&want).await.unwrap(), Applied::default());
    assert_eq!(
        driver.apply(&BTreeMap::new()).await.unwrap(),
        Applied::default()
    );
}

#[tokio::test]
async fn only_parameters_whose_value_differs_are_sent() {
    let server = RedisServer::start();
    let mut client = server.client();
    ok(client.cmd(&["CONFIG", "SET", "maxmemory", "4gb"]));
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let applied = driver
        .apply(&params(&[("maxmemory", "4294967296"), ("hz", "25")]))
        .await
        .unwrap();

    assert_eq!(applied.changed, changed(&[("hz", "10")]));
    assert_eq!(
        config_of(&mut client, &["maxmemory", "hz"]),
        params(&[("maxmemory", "4294967296"), ("hz", "25")])
    );
}

#[tokio::test]
async fn a_refused_parameter_in_the_middle_of_five_leaves_all_five_as_they_were() {
    let server = RedisServer::start();
    let mut client = server.client();
    let file_before = std::fs::read_to_string(server.config_path()).unwrap();
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    // In name order the third of five.
    let e = driver
        .apply(&params(&[
            ("hz", "20"),
            ("maxmemory", "104857600"),
            ("maxmemory-policy", "most-recently-loved"),
            ("maxmemory-samples", "7"),
            ("timeout", "300"),
        ]))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        NodeError::Refused {
            address: server.addr(),
            parameter: "maxmemory-policy".into(),
            message: "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - \
                      argument(s) must be one of the following: volatile-lru, volatile-lfu, \
                      volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, \
                      noeviction"
                .into(),
        }
    );
    assert_eq!(config_of(&mut client, &FIVE), params(&DEFAULTS));
    assert_eq!(
        std::fs::read_to_string(server.config_path()).unwrap(),
        file_before
    );
}

/// What the driver's all-or-nothing rests on, held against the engine itself: Redis 7
/// refuses a multi-parameter `CONFIG SET` as a whole. (The driver's put-back path is the
/// second line of defence, for servers where this does not hold.)
#[test]
fn redis_refuses_a_multi_parameter_config_set_as_a_whole() {
    let server = RedisServer::start();
    let mut client = server.client();

    let reply = client.cmd(&[
        "CONFIG",
        "SET",
        "hz",
        "20",
        "maxmemory",
        "104857600",
        "maxmemory-policy",
        "most-recently-loved",
        "maxmemory-samples",
        "7",
        "timeout",
        "300",
    ]);

    assert!(reply.is_error(), "{reply:?}");
    assert_eq!(config_of(&mut client, &FIVE), params(&DEFAULTS));
}

#[tokio::test]
async fn an_out_of_range_value_leaves_the_others_as_they_were() {
    let server = RedisServer::start();
    let mut client = server.client();
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let e = driver
        .apply(&params(&[
            ("hz", "20"),
            ("maxmemory", "104857600"),
            ("maxmemory-clients", "200%"),
            ("maxmemory-samples", "7"),
            ("timeout", "300"),
        ]))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        NodeError::Refused {
            address: server.addr(),
            parameter: "maxmemory-clients".into(),
            message: "ERR CONFIG SET failed (possibly related to argument 'maxmemory-clients') - \
                      percentage argument must be less or equal to 100"
                .into(),
        }
    );
    let mut names = FIVE.to_vec();
    names.push("maxmemory-clients");
    let mut expected = params(&DEFAULTS);
    expected.insert("maxmemory-clients".into(), "0".into());
    assert_eq!(config_of(&mut client, &names), expected);
}

#[tokio::test]
async fn a_parameter_the_engine_does_not_know_is_refused_in_its_words() {
    let server = RedisServer::start();
    let mut client = server.client();
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let e = driver
        .apply(&params(&[("hz", "20"), ("no-such-parameter", "1")]))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        NodeError::Refused {
            address: server.addr(),
            parameter: "no-such-parameter".into(),
            message: "ERR Unknown option or number of arguments for CONFIG SET - \
                      'no-such-parameter'"
                .into(),
        }
    );
    assert_eq!(config_of(&mut client, &["hz"]), params(&[("hz", "10")]));
}

#[tokio::test]
async fn a_start_only_parameter_is_refused_before_anything_changes() {
    let server = RedisServer::start();
    let mut client = server.client();
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let e = driver
        .apply(&params(&[("daemonize", "yes"), ("hz", "20")]))
        .await
        .unwrap_err();

    assert_eq!(
        e,
        NodeError::NeedsRestart {
            address: server.addr(),
            parameter: "daemonize".into(),
        }
    );
    assert_eq!(
        config_of(&mut client, &["daemonize", "hz"]),
        params(&[("daemonize", "no"), ("hz", "10")])
    );
}

#[tokio::test]
async fn an_apply_is_persisted_to_the_config_file_and_read_back_as_persisted() {
    let server = RedisServer::start();
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);
    let before = driver.read().await.unwrap().persisted.unwrap();
    assert_eq!(before.get("port"), Some(&server.port().to_string()));
    assert_eq!(before.get("maxmemory-policy"), None);

    let applied = driver
        .apply(&params(&[
            ("maxmemory", "104857600"),
            ("maxmemory-policy", "allkeys-lru"),
            ("hz", "20"),
        ]))
        .await
        .unwrap();
    assert!(applied.persisted);

    let file = std::fs::read_to_string(server.config_path()).unwrap();
    let lines: Vec<&str> = file.lines().collect();
    for line in ["maxmemory 100mb", "maxmemory-policy allkeys-lru", "hz 20"] {
        assert!(lines.contains(&line), "{line} not in\n{file}");
    }
    let persisted = driver.read().await.unwrap().persisted.unwrap();
    assert_eq!(
        persisted.get("maxmemory-policy").map(String::as_str),
        Some("allkeys-lru")
    );
    // The file keeps Redis's own spelling; the catalog makes it comparable.
    assert_eq!(
        persisted.get("maxmemory").map(String::as_str),
        Some("100mb")
    );
    assert_eq!(persisted.get("hz").map(String::as_str), Some("20"));
    assert_eq!(persisted.get("save").map(String::as_str), Some(""));
}

#[tokio::test]
async fn a_reading_of_declared_parameters_asks_for_those_alone() {
    let server = RedisServer::start();
    let mut client = server.client();
    ok(client.cmd(&["CONFIG", "SET", "hz", "15"]));
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);
    let names =
        |list: &[&str]| -> BTreeSet<String> { list.iter().map(|n| n.to_string()).collect() };

    // Live values as CONFIG GET gives them; the file's view of the same names; an
    // unknown name is absent and a credential is never reported.
    let live = driver
        .read_declared(&names(&[
            "hz",
            "maxmemory",
            "port",
            "requirepass",
            "no-such-thing",
        ]))
        .await
        .unwrap();
    assert_eq!(
        live.parameters,
        params(&[
            ("hz", "15"),
            ("maxmemory", "0"),
            ("port", &server.port().to_string())
        ])
    );
    assert_eq!(
        live.persisted,
        Some(params(&[("port", &server.port().to_string())]))
    );
    // Health and version are those of a full reading.
    assert!(live.reachable);
    assert!(live.version.is_some());
    assert!(live.health.as_ref().unwrap().used_memory.unwrap() > 0);
    assert!(live.health.unwrap().latency_ms.is_some());

    // A name with a glob character is not sent as a pattern: it matches nothing.
    let glob = driver.read_declared(&names(&["h*", "hz"])).await.unwrap();
    assert_eq!(glob.parameters, params(&[("hz", "15")]));
    // No declared parameter: no parameter, still a reading.
    let none = driver.read_declared(&BTreeSet::new()).await.unwrap();
    assert!(none.parameters.is_empty() && none.health.is_some());
}

#[tokio::test]
async fn a_value_set_live_by_hand_shows_live_but_not_persisted() {
    let server = RedisServer::start();
    let mut client = server.client();
    ok(client.cmd(&["CONFIG", "SET", "maxmemory-samples", "9"]));
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let live = driver.read().await.unwrap();

    assert_eq!(live.parameters["maxmemory-samples"], "9");
    let persisted = live.persisted.unwrap();
    assert_eq!(persisted.get("maxmemory-samples"), None);
    // And the other way round: in the file, but not what runs.
    let mut file = std::fs::read_to_string(server.config_path()).unwrap();
    file.push_str("hz 33\n");
    std::fs::write(server.config_path(), file).unwrap();
    let live = driver.read().await.unwrap();
    assert_eq!(live.parameters["hz"], "10");
    assert_eq!(live.persisted.unwrap()["hz"], "33");
}

/// A directory where the server's config file was: Redis cannot rewrite it.
fn unwritable_config(server: &RedisServer) {
    std::fs::remove_file(server.config_path()).unwrap();
    std::fs::create_dir(server.config_path()).unwrap();
}

/// The parameter and the message of a refusal (anything else fails the test).
fn refused(e: &NodeError) -> (&str, &str) {
    let NodeError::Refused {
        parameter, message, ..
    } = e
    else {
        panic!("{e:?}");
    };
    (parameter, message)
}

/// The engine's message of a refused `CONFIG REWRITE` (anything else fails the test).
fn refused_rewrite(e: &NodeError) -> &str {
    let (parameter, message) = refused(e);
    assert_eq!(parameter, "CONFIG REWRITE");
    message
}

/// A fresh redis-server, a client of the harness's own, and a driver of it.
async fn redis_node() -> (RedisServer, RedisClient, RedisDriver) {
    let server = RedisServer::start();
    let client = server.client();
    let driver = RedisDriver::connect(&server.addr(), None, TIMEOUT)
        .await
        .unwrap();
    (server, client, driver)
}

#[tokio::test]
async fn a_failed_config_rewrite_puts_the_live_values_back() {
    let (server, mut client, driver) = redis_node().await;
    unwritable_config(&server);

    let e = driver
        .apply(&params(&[("hz", "20"), ("maxmemory-samples", "7")]))
        .await
        .unwrap_err();

    let message = refused_rewrite(&e);
    assert!(
        message.starts_with("ERR Rewriting config file: "),
        "{message}"
    );
    assert_eq!(
        config_of(&mut client, &["hz", "maxmemory-samples"]),
        params(&[("hz", "10"), ("maxmemory-samples", "5")])
    );
}

/// A fence that always holds, and on each check sets `hz` to 40 from another client the
/// first time it finds the apply's own `hz` (20) on the node: another writer (a person,
/// the next leader) in the middle of an apply.
struct AnotherWriter {
    client: std::sync::Mutex<RedisClient>,
    done: std::sync::atomic::AtomicBool,
}

impl Fence for AnotherWriter {
    fn holds(&self) -> bool {
        use std::sync::atomic::Ordering;
        let mut client = self.client.lock().unwrap();
        if !self.done.load(Ordering::SeqCst) && client.config_get("hz")["hz"] == "20" {
            ok(client.cmd(&["CONFIG", "SET", "hz", "40"]));
            self.done.store(true, Ordering::SeqCst);
        }
        true
    }
}

#[tokio::test]
async fn a_failed_config_rewrite_puts_back_only_what_no_other_writer_changed_since() {
    let (server, mut client, driver) = redis_node().await;
    unwritable_config(&server);
    let writer = Arc::new(AnotherWriter {
        client: std::sync::Mutex::new(server.client()),
        done: Default::default(),
    });
    let fenced = Fenced::new(Arc::new(driver), writer.clone());

    let e = fenced
        .apply(&params(&[("hz", "20"), ("maxmemory-samples", "7")]))
        .await
        .unwrap_err();

    assert!(writer.done.load(std::sync::atomic::Ordering::SeqCst));
    let message = refused_rewrite(&e);
    assert!(
        message.ends_with("(left as set since by another writer: `hz` holds `40`)"),
        "{message}"
    );
    // The other writer's hz stays; the apply's own maxmemory-samples went back.
    assert_eq!(
        config_of(&mut client, &["hz", "maxmemory-samples"]),
        params(&[("hz", "40"), ("maxmemory-samples", "5")])
    );
}

#[tokio::test]
async fn a_value_the_engine_holds_otherwise_than_set_is_put_back_as_the_applys_own() {
    let (_server, mut client, driver) = redis_node().await;

    // Redis takes `hz 1000` and runs 500, its most: the apply's own value, rounded.
    let e = driver
        .apply(&params(&[("hz", "1000"), ("maxmemory-samples", "7")]))
        .await
        .unwrap_err();

    assert_eq!(refused(&e), ("hz", "set to `1000`, it reads back `500`"));
    assert_eq!(
        config_of(&mut client, &["hz", "maxmemory-samples"]),
        params(&[("hz", "10"), ("maxmemory-samples", "5")])
    );
}

/// A fence that has stopped holding.
struct Lost;

impl Fence for Lost {
    fn holds(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_fence_that_no_longer_holds_sends_the_node_nothing() {
    let (server, mut client, driver) = redis_node().await;
    let fenced = Fenced::new(Arc::new(driver), Arc::new(Lost));
    ok(client.cmd(&["CONFIG", "RESETSTAT"]));

    let e = fenced.apply(&params(&[("hz", "20")])).await.unwrap_err();
    assert_eq!(
        e,
        NodeError::Fenced {
            address: server.addr()
        }
    );
    let e = fenced
        .failover("127.0.0.1:1", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::Fenced { .. }), "{e:?}");
    // Nothing at all reached the node; reads still go through.
    assert_eq!(commands(&mut client), BTreeMap::new());
    assert_eq!(fenced.read().await.unwrap().parameters["hz"], "10");
    assert_eq!(config_of(&mut client, &["hz"]), params(&[("hz", "10")]));
}

#[tokio::test]
async fn the_right_password_from_an_env_reference_opens_a_requirepass_server() {
    let server = RedisServer::start_with(RedisOptions::new().requirepass("s3cret-pw"));
    let auth = Auth {
        username: None,
        password: env_secret("RIGHT", "s3cret-pw"),
    };
    let driver = RedisDriver::connect(&server.addr(), Some(&auth), TIMEOUT)
        .await
        .unwrap();

    let live = driver.read().await.unwrap();
    assert!(!live.parameters.contains_key("requirepass"));
    let persisted = live.persisted.unwrap();
    assert!(!persisted.contains_key("requirepass"));
    assert!(!serde_json::to_string(&persisted)
        .unwrap()
        .contains("s3cret-pw"));
    assert!(!serde_json::to_string(&live.parameters)
        .unwrap()
        .contains("s3cret-pw"));

    driver.apply(&params(&[("hz", "20")])).await.unwrap();
    assert_eq!(
        config_of(&mut server.client(), &["hz"]),
        params(&[("hz", "20")])
    );
}

#[tokio::test]
async fn a_wrong_password_is_auth_failed_without_the_password_in_the_message() {
    let server = RedisServer::start_with(RedisOptions::new().requirepass("s3cret-pw"));
    let auth = Auth {
        username: None,
        password: env_secret("WRONG", "not-the-pw-1234"),
    };

    let e = RedisDriver::connect(&server.addr(), Some(&auth), TIMEOUT)
        .await
        .err()
        .unwrap();

    assert_eq!(
        e,
        NodeError::AuthFailed {
            address: server.addr(),
            message: "WRONGPASS invalid username-password pair or user is disabled.".into(),
        }
    );
    assert!(!e.to_string().contains("not-the-pw-1234"));
    assert!(!e.to_string().contains("s3cret-pw"));
}

#[tokio::test]
async fn no_password_on_a_requirepass_server_is_auth_failed() {
    let server = RedisServer::start_with(RedisOptions::new().requirepass("s3cret-pw"));
    let driver = RedisDriver::new(&server.addr(), None, TIMEOUT);

    let e = driver.read().await.unwrap_err();

    assert_eq!(
        e,
        NodeError::AuthFailed {
            address: server.addr(),
            message: "NOAUTH Authentication required.".into(),
        }
    );
    let e = driver.apply(&params(&[("hz", "20")])).await.unwrap_err();
    assert!(matches!(e, NodeError::AuthFailed { .. }), "{e:?}");
}

#[tokio::test]
async fn a_missing_secret_is_named_and_nothing_is_sent() {
    let server = RedisServer::start_with(RedisOptions::new().requirepass("s3cret-pw"));
    let auth = Auth {
        username: None,
        password: SecretRef("env:CACHEFLOW_TEST_REDIS_NEVER_SET".into()),
    };
    let driver = RedisDriver::new(&server.addr(), Some(&auth), TIMEOUT);

    let e = driver.read().await.unwrap_err();

    assert_eq!(
        e,
        NodeError::Secret {
            reference: "env:CACHEFLOW_TEST_REDIS_NEVER_SET".into(),
            message: "environment variable CACHEFLOW_TEST_REDIS_NEVER_SET is not set".into(),
        }
    );
}

#[tokio::test]
async fn an_acl_user_authenticates_with_its_own_password_from_a_file() {
    let server = RedisServer::start_with(RedisOptions::new().acl_user(
        "deployer",
        "deployer-pw",
        "~* &* +@all",
    ));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "deployer-pw\n").unwrap();
    let auth = Auth {
        username: Some("deployer".into()),
        password: SecretRef(format!("file:{}", file.display())),
    };
    let driver = RedisDriver::connect(&server.addr(), Some(&auth), TIMEOUT)
        .await
        .unwrap();

    driver
        .apply(&params(&[("maxmemory-samples", "8")]))
        .await
        .unwrap();
    assert_eq!(
        config_of(&mut server.acl_client(), &["maxmemory-samples"]),
        params(&[("maxmemory-samples", "8")])
    );
    let who = server.acl_client().cmd(&["CLIENT", "LIST"]);
    assert!(who.as_str().unwrap().contains("user=deployer"));

    let wrong = Auth {
        username: Some("deployer".into()),
        password: env_secret("ACL_WRONG", "guess-9876"),
    };
    let e = RedisDriver::connect(&server.addr(), Some(&wrong), TIMEOUT)
        .await
        .err()
        .unwrap();
    assert_eq!(
        e,
        NodeError::AuthFailed {
            address: server.addr(),
            message: "WRONGPASS invalid username-password pair or user is disabled.".into(),
        }
    );
}

#[tokio::test]
async fn an_acl_user_without_config_rights_is_auth_failed_in_the_engines_words() {
    let server = RedisServer::start_with(RedisOptions::new().acl_user(
        "reader",
        "reader-pw",
        "~* &* +@all -config",
    ));
    let auth = Auth {
        username: Some("reader".into()),
        password: env_secret("ACL_READER", "reader-pw"),
    };
    let driver = RedisDriver::connect(&server.addr(), Some(&auth), TIMEOUT)
        .await
        .unwrap();

    let e = driver.apply(&params(&[("hz", "20")])).await.unwrap_err();

    assert_eq!(
        e,
        NodeError::AuthFailed {
            address: server.addr(),
            message: "NOPERM this user has no permissions to run the 'config|get' command".into(),
        }
    );
}

#[tokio::test]
async fn a_node_that_is_down_is_unreachable_quickly() {
    let address = format!("127.0.0.1:{}", free_port());
    let driver = RedisDriver::new(&address, None, TIMEOUT);

    let started = Instant::now();
    let e = driver.read().await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let NodeError::Unreachable {
        address: a,
        message,
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!(a, &address);
    assert!(message.contains("refused"), "{message}");
    let e = driver.apply(&params(&[("hz", "20")])).await.unwrap_err();
    assert!(matches!(e, NodeError::Unreachable { .. }), "{e:?}");
}

/// Block the server for `seconds` with `DEBUG SLEEP` from a connection of its own;
/// returns once the server is asleep (its PING no longer answers at once).
fn put_to_sleep(server: &RedisServer, seconds: &str) -> std::thread::JoinHandle<()> {
    let mut sleeper = server.client();
    let seconds = seconds.to_owned();
    let handle = std::thread::spawn(move || {
        ok(sleeper.cmd(&["DEBUG", "SLEEP", &seconds]));
    });
    // Long enough for DEBUG SLEEP to reach the server before the driver's command.
    std::thread::sleep(Duration::from_millis(200));
    handle
}

#[tokio::test]
async fn a_node_slower_than_the_timeout_times_out() {
    let server =
        RedisServer::start_with(RedisOptions::new().config("enable-debug-command", "local"));
    let mut client = server.client();
    let timeout = Duration::from_millis(300);
    let connected = RedisDriver::connect(&server.addr(), None, timeout)
        .await
        .unwrap();
    let fresh = RedisDriver::new(&server.addr(), None, timeout);

    let sleeping = put_to_sleep(&server, "2");
    let started = Instant::now();
    let read = connected.read().await.unwrap_err();
    let apply = connected.apply(&params(&[("hz", "20")])).await.unwrap_err();
    let connect = fresh.read().await.unwrap_err();
    let waited = started.elapsed();
    sleeping.join().unwrap();

    let timed_out = NodeError::TimedOut {
        address: server.addr(),
        timeout_ms: 300,
    };
    assert_eq!(read, timed_out);
    assert_eq!(apply, timed_out);
    assert_eq!(connect, timed_out);
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    // The apply timed out before CONFIG SET was sent: nothing changed once it woke up.
    assert_eq!(config_of(&mut client, &["hz"]), params(&[("hz", "10")]));
    // And the driver recovers on its own.
    assert_eq!(connected.read().await.unwrap().parameters["hz"], "10");
}

/// A TCP server that answers every read with `reply` and keeps the connection open.
async fn garbage_server(reply: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if socket.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn garbage_on_the_socket_is_a_protocol_error_and_no_panic() {
    let replies: [&'static [u8]; 4] = [
        b"+OK\r\n$garbage\r\n",
        b"\x00\xff\x13\x37\xde\xad\xbe\xef\r\n",
        b"HTTP/1.1 400 Bad Request\r\n\r\n",
        b"*-x\r\n",
    ];
    for reply in replies {
        let address = garbage_server(reply).await;
        let driver = RedisDriver::new(&address, None, Duration::from_millis(500));
        let e = driver.read().await.unwrap_err();
        assert!(
            matches!(&e, NodeError::Protocol { address: a, .. } if *a == address),
            "{reply:?}: {e:?}"
        );
        let e = driver.apply(&params(&[("hz", "20")])).await.unwrap_err();
        assert!(matches!(&e, NodeError::Protocol { .. }), "{reply:?}: {e:?}");
    }
}

/// `INFO commandstats` as `command calls` pairs (`config|get 2`), without the harness's
/// own `CONFIG RESETSTAT` and `INFO`.
fn commands(client: &mut RedisClient) -> BTreeMap<String, u64> {
    let text = client.cmd(&["INFO", "commandstats"]).as_str().unwrap();
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "config|resetstat" && name != "info")
        .collect()
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn an_apply_from_a_reading_sends_one_set_reads_back_and_rewrites_once() {
    let server = RedisServer::start();
    let mut client = server.client();
    let driver = RedisDriver::connect(&server.addr(), None, TIMEOUT)
        .await
        .unwrap();
    let names: BTreeSet<String> = FIVE.iter().map(|n| n.to_string()).collect();
    let seen = driver.read_declared(&names).await.unwrap().parameters;
    ok(client.cmd(&["CONFIG", "RESETSTAT"]));

    let want = params(&[
        ("hz", "20"),
        ("maxmemory", "104857600"),
        ("maxmemory-policy", "allkeys-lru"),
        ("maxmemory-samples", "5"),
        ("timeout", "300"),
    ]);
    let applied = driver.apply_seen(&want, &seen).unwrap().await.unwrap();

    // Every value that differed, with its value before; `maxmemory-samples` already held.
    assert_eq!(
        applied,
        Applied {
            changed: changed(&[
                ("hz", "10"),
                ("maxmemory", "0"),
                ("maxmemory-policy", "noeviction"),
                ("timeout", "0"),
            ]),
            persisted: true,
        }
    );
    // The values before, one CONFIG SET, the read back; then the rewrite. Nothing else.
    assert_eq!(
        commands(&mut client),
        counts(&[("config|get", 2), ("config|set", 1), ("config|rewrite", 1)])
    );
    assert_eq!(config_of(&mut client, &FIVE), want);
    let file = std::fs::read_to_string(server.config_path()).unwrap();
    assert!(file.lines().any(|l| l == "hz 20"), "{file}");

    // Applied again from a reading that shows it: nothing to set, nothing rewritten.
    let seen = driver.read_declared(&names).await.unwrap().parameters;
    ok(client.cmd(&["CONFIG", "RESETSTAT"]));
    let again = driver.apply_seen(&want, &seen).unwrap().await.unwrap();
    assert_eq!(again, Applied::default());
    assert_eq!(commands(&mut client), counts(&[("config|get", 1)]));
}

#[tokio::test]
async fn a_value_refused_in_the_batch_changes_nothing_and_nothing_is_rewritten() {
    let server = RedisServer::start();
    let mut client = server.client();
    let file_before = std::fs::read_to_string(server.config_path()).unwrap();
    let driver = RedisDriver::connect(&server.addr(), None, TIMEOUT)
        .await
        .unwrap();
    let names: BTreeSet<String> = FIVE.iter().map(|n| n.to_string()).collect();
    let seen = driver.read_declared(&names).await.unwrap().parameters;
    ok(client.cmd(&["CONFIG", "RESETSTAT"]));

    let e = driver
        .apply_seen(
            &params(&[
                ("hz", "20"),
                ("maxmemory", "104857600"),
                ("maxmemory-policy", "most-recently-loved"),
                ("maxmemory-samples", "7"),
                ("timeout", "300"),
            ]),
            &seen,
        )
        .unwrap()
        .await
        .unwrap_err();

    assert_eq!(
        e,
        NodeError::Refused {
            address: server.addr(),
            parameter: "maxmemory-policy".into(),
            message: "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - \
                      argument(s) must be one of the following: volatile-lru, volatile-lfu, \
                      volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, \
                      noeviction"
                .into(),
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "{}: `maxmemory-policy` refused: ERR CONFIG SET failed (possibly related to \
             argument 'maxmemory-policy') - argument(s) must be one of the following: \
             volatile-lru, volatile-lfu, volatile-random, volatile-ttl, allkeys-lru, \
             allkeys-lfu, allkeys-random, noeviction; nothing was changed",
            server.addr()
        )
    );
    // The refused CONFIG SET is the only one: no rewrite ran.
    let ran = commands(&mut client);
    assert_eq!(ran.get("config|set"), Some(&1), "{ran:?}");
    assert_eq!(ran.get("config|rewrite"), None, "{ran:?}");
    assert_eq!(config_of(&mut client, &FIVE), params(&DEFAULTS));
    assert_eq!(
        std::fs::read_to_string(server.config_path()).unwrap(),
        file_before
    );
}

#[tokio::test]
async fn a_reading_gone_stale_is_caught_by_the_values_before_and_set_as_well() {
    let server = RedisServer::start();
    let mut client = server.client();
    let driver = RedisDriver::connect(&server.addr(), None, TIMEOUT)
        .await
        .unwrap();
    // The reading says hz and timeout already hold what is wanted; since then someone
    // set timeout back by hand.
    ok(client.cmd(&["CONFIG", "SET", "hz", "20", "timeout", "300"]));
    let names: BTreeSet<String> = ["hz", "timeout", "maxmemory-samples"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    let seen = driver.read_declared(&names).await.unwrap().parameters;
    ok(client.cmd(&["CONFIG", "SET", "timeout", "0"]));

    let want = params(&[("hz", "20"), ("maxmemory-samples", "7"), ("timeout", "300")]);
    let applied = driver.apply_seen(&want, &seen).unwrap().await.unwrap();

    assert_eq!(
        applied.changed,
        changed(&[("maxmemory-samples", "5"), ("timeout", "0")])
    );
    assert!(applied.persisted);
    assert_eq!(
        config_of(&mut client, &["hz", "maxmemory-samples", "timeout"]),
        want
    );
}

/// `kill -SIG pid`, asserted.
fn signal(sig: &str, pid: u32) {
    let sent = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill {sig} {pid}: {sent}");
}

/// A field of `INFO replication`, as the harness's own client reads it.
fn replication_field(server: &RedisServer, field: &str) -> String {
    let info = server
        .client()
        .cmd(&["INFO", "replication"])
        .as_str()
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_primary_killed_during_its_failover_fails_it_in_bounded_time_and_promotes_no_one() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    let port = primary.port().to_string();
    ok(replica.client().cmd(&["REPLICAOF", "127.0.0.1", &port]));
    let deadline = Instant::now() + Duration::from_secs(15);
    // The primary counts a replica online only after its first acknowledgement (sent
    // every second), and FAILOVER refuses one that is not.
    while replication_field(&replica, "master_link_status") != "up"
        || !replication_field(&primary, "slave0").contains("state=online")
    {
        assert!(
            Instant::now() < deadline,
            "the replication link did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A write the replica has not acknowledged: FAILOVER waits for the replica to catch
    // up, and a frozen replica never does, so the failover is still in flight when its
    // primary dies.
    signal("-STOP", replica.pid());
    ok(primary.client().cmd(&["SET", "k", "v"]));
    let driver = RedisDriver::new(&primary.addr(), None, TIMEOUT);
    let to = replica.addr();
    let started = Instant::now();
    let failover = driver.failover(&to, Duration::from_secs(3));
    let killer = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal("-KILL", primary.pid());
    };
    let (result, ()) = tokio::join!(failover, killer);
    let took = started.elapsed();
    signal("-CONT", replica.pid());
    let err = result.expect_err("a failover whose primary died must fail");
    let message = err.to_string();
    assert!(
        message.contains(&format!("FAILOVER to {to} did not complete within 3000 ms")),
        "{message}"
    );
    assert!(message.contains(&primary.addr()), "{message}");
    // Bounded: the failover's timeout and one driver timeout, and the last poll's (a
    // frozen replica answers no reading before the driver's timeout).
    assert!(took < Duration::from_secs(3) + 3 * TIMEOUT, "{took:?}");
    // No one was promoted: the replica still runs as a replica of the dead primary.
    assert_eq!(replication_field(&replica, "role"), "slave");
    assert_eq!(replication_field(&replica, "master_port"), port);
}
