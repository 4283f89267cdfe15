//! The Memcached driver against real `memcached` processes: what `read` reports, what
//! `apply` changes (checked with `stats settings` from a separate client), refusals that
//! leave nothing half applied, and faults: a node that is down, one that never answers,
//! one that answers garbage, one whose connection is cut in the middle of an apply.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cacheflow::edges::nodes::memcached::MemcachedDriver;
use cacheflow::edges::nodes::{Applied, NodeDriver, NodeError};
use cacheflow::pure::catalog::Engine;
use cacheflow::pure::spec::model::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::servers::{free_port, MemcachedClient, MemcachedServer};
use crate::support::{noise, params};

fn changed(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Some(v.to_string())))
        .collect()
}

/// The named settings of `stats settings`, in memcached's text.
fn settings_of(client: &mut MemcachedClient, names: &[&str]) -> BTreeMap<String, String> {
    let all = client.settings();
    names
        .iter()
        .map(|n| (n.to_string(), all[*n].clone()))
        .collect()
}

/// `set` each item on a connection of its own (the harness client sends one line per
/// command, a `set` is two), each answered `STORED`.
fn set_raw(port: u16, items: impl Iterator<Item = (String, String)>) {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut count = 0;
    for (key, value) in items {
        write!(writer, "set {key} 0 0 {}\r\n{value}\r\n", value.len()).expect("write");
        count += 1;
    }
    for _ in 0..count {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        assert_eq!(line, "STORED\r\n");
    }
}

#[tokio::test]
async fn reading_a_memcached_reports_stats_settings_verbatim_and_its_health() {
    let server = MemcachedServer::start_with_args(&["-m", "32"]);
    let mut client = server.client();
    set_raw(
        server.port(),
        ["a", "b", "c"]
            .iter()
            .map(|k| (k.to_string(), format!("value of {k}"))),
    );
    for key in ["a", "b", "nope"] {
        client.command(&format!("get {key}"));
    }
    // Wait until memcached has seen the `set` connection close, so that the connection
    // count below is exact.
    let deadline = Instant::now() + Duration::from_secs(2);
    while client.stats("")["curr_connections"] != "1" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let driver = MemcachedDriver::new(server.addr());
    assert_eq!(driver.engine(), Engine::Memcached);
    assert_eq!(driver.address(), server.addr());

    let live = driver.read().await.expect("read");

    assert_eq!(live.parameters, client.settings());
    assert_eq!(live.parameters["maxbytes"], "33554432");
    let version = client.command("version")[0]
        .strip_prefix("VERSION ")
        .unwrap()
        .to_owned();
    assert_eq!(live.version.as_deref(), Some(version.as_str()));
    assert_eq!(live.engine, Some(Engine::Memcached));
    assert_eq!(live.address.as_deref(), Some(server.addr().as_str()));
    assert!(live.reachable);
    assert_eq!(live.persisted, None);
    let health = live.health.expect("health");
    let stats = client.stats("");
    assert_eq!(health.max_memory, Some(32 * 1024 * 1024));
    assert_eq!(health.used_memory, Some(stats["bytes"].parse().unwrap()));
    assert!(health.used_memory.unwrap() > 0);
    assert_eq!(health.keys, Some(3));
    assert_eq!(health.keyspace_hits, Some(2));
    assert_eq!(health.keyspace_misses, Some(1));
    assert_eq!(health.hit_ratio, Some(2.0 / 3.0));
    assert_eq!(health.evicted_keys, Some(0));
    // The engine's own uptime, so the gates can tell a restart from a quiet spell (read
    // apart from the test's stats, so it may have ticked once).
    let uptime: u64 = stats["uptime"].parse().unwrap();
    let read = health.uptime_seconds.expect("uptime");
    assert!(read == uptime || read + 1 == uptime, "{read} {stats:?}");
    assert_eq!(health.role, Some(Role::Primary));
    assert_eq!(health.replication_link, None);
    // The test's client and the driver's own connection.
    assert_eq!(health.connected_clients, Some(2));
    let latency = health.latency_ms.expect("latency");
    assert!(latency > 0.0 && latency < 1000.0, "{latency}");
    // Rates need a second read.
    assert_eq!(health.ops_per_sec, None);
    assert_eq!(health.evictions_per_sec, None);

    for key in ["a", "b", "c", "d"] {
        client.command(&format!("get {key}"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let health = driver.read().await.expect("second read").health.unwrap();
    let ops = health.ops_per_sec.expect("ops/s from two samples");
    // 4 gets in at most ~1 s between the two samples.
    assert!(ops > 3.0 && ops <= 4.0 / 0.05, "{ops}");
    assert_eq!(health.evictions_per_sec, Some(0.0));
    assert_eq!(health.keyspace_hits, Some(5));
    assert_eq!(health.keyspace_misses, Some(2));
}

#[tokio::test]
async fn applying_run_time_parameters_changes_each_of_them_and_reports_the_old_values() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let names = [
        "hot_lru_pct",
        "lru_crawler",
        "lru_crawler_sleep",
        "maxbytes",
        "slab_automove",
        "slab_automove_ratio",
        "track_sizes",
        "verbosity",
        "warm_lru_pct",
    ];
    assert_eq!(
        settings_of(&mut client, &names),
        params(&[
            ("hot_lru_pct", "20"),
            ("lru_crawler", "yes"),
            ("lru_crawler_sleep", "100"),
            ("maxbytes", "67108864"),
            ("slab_automove", "1"),
            ("slab_automove_ratio", "0.80"),
            ("track_sizes", "no"),
            ("verbosity", "0"),
            ("warm_lru_pct", "40"),
        ])
    );
    let driver = MemcachedDriver::new(server.addr());
    let wanted = params(&[
        ("hot_lru_pct", "25"),
        ("lru_crawler", "no"),
        ("lru_crawler_sleep", "250"),
        ("maxbytes", "33554432"),
        ("slab_automove", "0"),
        ("slab_automove_ratio", "0.5"),
        ("track_sizes", "yes"),
        ("verbosity", "1"),
        ("warm_lru_pct", "30"),
    ]);

    let applied = driver.apply(&wanted).await.expect("apply");

    assert_eq!(
        applied,
        Applied {
            changed: changed(&[
                ("hot_lru_pct", "20"),
                ("lru_crawler", "yes"),
                ("lru_crawler_sleep", "100"),
                ("maxbytes", "67108864"),
                ("slab_automove", "1"),
                ("slab_automove_ratio", "0.80"),
                ("track_sizes", "no"),
                ("verbosity", "0"),
                ("warm_lru_pct", "40"),
            ]),
            persisted: false,
        }
    );
    assert_eq!(
        settings_of(&mut client, &names),
        params(&[
            ("hot_lru_pct", "25"),
            ("lru_crawler", "no"),
            ("lru_crawler_sleep", "250"),
            ("maxbytes", "33554432"),
            ("slab_automove", "0"),
            ("slab_automove_ratio", "0.50"),
            ("track_sizes", "yes"),
            ("verbosity", "1"),
            ("warm_lru_pct", "30"),
        ])
    );
    assert_eq!(client.stats("")["limit_maxbytes"], "33554432");

    // The same set again changes nothing.
    let again = driver.apply(&wanted).await.expect("apply again");
    assert_eq!(again, Applied::default());
}

#[tokio::test]
async fn values_are_compared_normalised_so_sizes_and_words_in_other_spellings_apply() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let driver = MemcachedDriver::new(server.addr());

    let applied = driver
        .apply(&params(&[("maxbytes", "16mb"), ("lru_crawler", "off")]))
        .await
        .expect("apply");

    assert_eq!(
        applied.changed,
        changed(&[("lru_crawler", "yes"), ("maxbytes", "67108864")])
    );
    assert_eq!(
        settings_of(&mut client, &["lru_crawler", "maxbytes"]),
        params(&[("lru_crawler", "no"), ("maxbytes", "16777216")])
    );
    // `64mb` is what it was before: only lru_crawler changes back.
    let applied = driver
        .apply(&params(&[
            ("maxbytes", "16777216"),
            ("lru_crawler", "true"),
        ]))
        .await
        .expect("apply back");
    assert_eq!(applied.changed, changed(&[("lru_crawler", "no")]));
    assert_eq!(client.settings()["lru_crawler"], "yes");
}

#[tokio::test]
async fn parameters_sharing_one_command_are_set_with_each_others_targets() {
    // hot 20 -> 50 with warm 40 -> 20: one at a time, `lru tune 50 40 ..` would exceed
    // memcached's 80 percent and be refused.
    let server = MemcachedServer::start();
    let mut client = server.client();
    let driver = MemcachedDriver::new(server.addr());

    let applied = driver
        .apply(&params(&[("hot_lru_pct", "50"), ("warm_lru_pct", "20")]))
        .await
        .expect("apply");

    assert_eq!(
        applied.changed,
        changed(&[("hot_lru_pct", "20"), ("warm_lru_pct", "40")])
    );
    assert_eq!(
        settings_of(
            &mut client,
            &[
                "hot_lru_pct",
                "warm_lru_pct",
                "hot_max_factor",
                "warm_max_factor"
            ]
        ),
        params(&[
            ("hot_lru_pct", "50"),
            ("warm_lru_pct", "20"),
            ("hot_max_factor", "0.20"),
            ("warm_max_factor", "2.00"),
        ])
    );
}

#[tokio::test]
async fn a_refusal_in_the_middle_puts_back_every_parameter_changed_before_it() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let before = client.settings();
    let driver = MemcachedDriver::new(server.addr());
    // Applied in name order; warm_lru_pct comes last and memcached refuses 20 + 70 > 80,
    // which the catalog cannot see (each is within 1..79).
    let wanted = params(&[
        ("lru_crawler", "no"),
        ("lru_crawler_sleep", "250"),
        ("maxbytes", "33554432"),
        ("slab_automove", "0"),
        ("warm_lru_pct", "70"),
    ]);

    let error = driver.apply(&wanted).await.expect_err("refused");

    assert_eq!(
        error,
        NodeError::Refused {
            address: server.addr(),
            parameter: "warm_lru_pct".into(),
            message: "ERROR hot and warm pcts must not exceed 80".into(),
        }
    );
    assert_eq!(client.settings(), before);
    assert_eq!(client.stats("")["limit_maxbytes"], "67108864");
}

#[tokio::test]
async fn a_refusal_of_the_first_parameter_changes_nothing_and_carries_memcacheds_words() {
    let server = MemcachedServer::start_with_args(&["-o", "warm_lru_pct=60"]);
    let mut client = server.client();
    let before = client.settings();
    let driver = MemcachedDriver::new(server.addr());

    let error = driver
        .apply(&params(&[("hot_lru_pct", "30"), ("slab_automove", "2")]))
        .await
        .expect_err("refused");

    assert_eq!(
        error,
        NodeError::Refused {
            address: server.addr(),
            parameter: "hot_lru_pct".into(),
            message: "ERROR hot and warm pcts must not exceed 80".into(),
        }
    );
    assert_eq!(client.settings(), before);
}

#[tokio::test]
async fn a_start_only_parameter_is_refused_before_anything_changes() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let before = client.settings();
    let driver = MemcachedDriver::new(server.addr());

    let error = driver
        .apply(&params(&[
            ("maxbytes", "33554432"),
            ("maxconns", "2048"),
            ("slab_automove", "0"),
        ]))
        .await
        .expect_err("needs a restart");

    assert_eq!(
        error,
        NodeError::NeedsRestart {
            address: server.addr(),
            parameter: "maxconns".into(),
        }
    );
    assert_eq!(client.settings(), before);
}

#[tokio::test]
async fn unknown_parameters_and_values_out_of_the_catalog_are_refused_before_anything_changes() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let before = client.settings();
    let driver = MemcachedDriver::new(server.addr());

    let unknown = driver
        .apply(&params(&[("maxbytes", "33554432"), ("no_such_thing", "1")]))
        .await
        .expect_err("unknown");
    let too_long = driver
        .apply(&params(&[
            ("lru_crawler_sleep", "2s"),
            ("maxbytes", "33554432"),
        ]))
        .await
        .expect_err("above the maximum");
    let not_whole_megabytes = driver
        .apply(&params(&[("maxbytes", "33554433"), ("slab_automove", "0")]))
        .await
        .expect_err("not whole megabytes");

    assert_eq!(
        unknown,
        NodeError::Refused {
            address: server.addr(),
            parameter: "no_such_thing".into(),
            message: "unknown memcached parameter `no_such_thing`".into(),
        }
    );
    assert_eq!(
        too_long,
        NodeError::Refused {
            address: server.addr(),
            parameter: "lru_crawler_sleep".into(),
            message: "`lru_crawler_sleep`: 2000000 is above the maximum 1000000".into(),
        }
    );
    assert_eq!(
        not_whole_megabytes,
        NodeError::Refused {
            address: server.addr(),
            parameter: "maxbytes".into(),
            message: "33554433 bytes is not a whole number of megabytes (1048576 bytes); memcached takes it in those".into(),
        }
    );
    assert_eq!(client.settings(), before);
}

#[tokio::test]
async fn shrinking_maxbytes_below_the_stored_data_evicts_on_the_next_writes() {
    // memcached does not free memory when cache_memlimit goes down: the items stay until
    // writes need room, and then those writes evict. So the assertion is on the writes
    // after the change, not on the change itself.
    let server = MemcachedServer::start();
    let mut client = server.client();
    let value = "x".repeat(10_000);
    set_raw(
        server.port(),
        (0..3000).map(|i| (format!("k{i}"), value.clone())),
    );
    let driver = MemcachedDriver::new(server.addr());
    let full = driver.read().await.unwrap().health.unwrap();
    assert_eq!(full.keys, Some(3000));
    assert_eq!(full.evicted_keys, Some(0));
    assert!(full.used_memory.unwrap() > 30_000_000, "{full:?}");

    driver
        .apply(&params(&[("maxbytes", "8388608")]))
        .await
        .expect("apply");

    let shrunk = driver.read().await.unwrap().health.unwrap();
    assert_eq!(shrunk.max_memory, Some(8_388_608));
    assert_eq!(
        shrunk.keys,
        Some(3000),
        "nothing is evicted by the change itself"
    );
    assert_eq!(shrunk.evicted_keys, Some(0));
    set_raw(
        server.port(),
        (3000..3100).map(|i| (format!("k{i}"), value.clone())),
    );
    let evictions: u64 = client.stats("")["evictions"].parse().unwrap();
    assert!(
        evictions > 0,
        "100 writes over the new limit evicted nothing"
    );
    let after = driver.read().await.unwrap().health.unwrap();
    assert_eq!(after.evicted_keys, Some(evictions));
    assert!(after.evictions_per_sec.unwrap() > 0.0, "{after:?}");
}

#[tokio::test]
async fn a_node_that_is_down_is_unreachable_for_read_and_apply() {
    let addr = format!("127.0.0.1:{}", free_port());
    let driver = MemcachedDriver::new(addr.clone());

    let read = driver.read().await.expect_err("down");
    let apply = driver
        .apply(&params(&[("slab_automove", "0")]))
        .await
        .expect_err("down");

    for error in [read, apply] {
        match error {
            NodeError::Unreachable { address, message } => {
                assert_eq!(address, addr);
                assert!(message.contains("refused"), "{message}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}

/// A listener on a free loopback port; each connection is handed to `serve`.
async fn fake_node<F, Fut>(serve: F) -> String
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(socket));
        }
    });
    addr
}

#[tokio::test]
async fn a_node_slower_than_the_timeout_times_out_for_read_and_apply() {
    // Accepts, reads what it is sent, never answers.
    let addr = fake_node(|mut socket| async move {
        let mut buf = [0u8; 1024];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
    let driver = MemcachedDriver::new(addr.clone()).with_timeout(Duration::from_millis(200));

    let started = Instant::now();
    let read = driver.read().await.expect_err("times out");
    let apply = driver
        .apply(&params(&[("slab_automove", "0")]))
        .await
        .expect_err("times out");
    let took = started.elapsed();

    let timed_out = NodeError::TimedOut {
        address: addr,
        timeout_ms: 200,
    };
    assert_eq!(read, timed_out);
    assert_eq!(apply, timed_out);
    assert!(took < Duration::from_secs(2), "{took:?}");
}

async fn protocol_error(addr: &str) -> Vec<String> {
    let driver = MemcachedDriver::new(addr.to_owned()).with_timeout(Duration::from_secs(5));
    let read = driver.read().await.expect_err("garbage");
    let apply = driver
        .apply(&params(&[("slab_automove", "0")]))
        .await
        .expect_err("garbage");
    [read, apply]
        .into_iter()
        .map(|e| match e {
            NodeError::Protocol { address, message } => {
                assert_eq!(address, addr);
                message
            }
            other => panic!("expected a protocol error, got {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn an_endless_line_of_random_bytes_is_a_protocol_error() {
    let addr = fake_node(|mut socket| async move {
        let mut seed = 7;
        loop {
            let chunk: Vec<u8> = noise(seed, 8192)
                .into_iter()
                .filter(|b| *b != b'\n')
                .collect();
            seed += 1;
            if socket.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
    .await;

    for message in protocol_error(&addr).await {
        assert!(message.contains("longer than 4096 bytes"), "{message}");
    }
}

#[tokio::test]
async fn endless_short_lines_are_a_protocol_error() {
    let addr =
        fake_node(
            |mut socket| async move { while socket.write_all(b"STAT x y\r\n").await.is_ok() {} },
        )
        .await;

    for message in protocol_error(&addr).await {
        assert!(message.contains("exceeds 262144 bytes"), "{message}");
    }
}

#[tokio::test]
async fn random_bytes_with_line_breaks_then_a_close_are_a_protocol_error() {
    let addr = fake_node(|mut socket| async move {
        let mut buf = [0u8; 64];
        let _ = socket.read(&mut buf).await;
        let _ = socket.write_all(&noise(42, 3000)).await;
        let _ = socket.write_all(b"\r\nMN\r\n").await;
    })
    .await;

    for message in protocol_error(&addr).await {
        assert!(
            message.contains("not UTF-8")
                || message.contains("expected")
                || message.contains("answered"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_reply_that_is_not_stats_is_a_protocol_error() {
    // Answers every command like memcached answers `version`.
    let addr = fake_node(|mut socket| async move {
        let mut buf = [0u8; 1024];
        while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
            if socket.write_all(b"VERSION 1.6.18\r\nMN\r\n").await.is_err() {
                return;
            }
        }
    })
    .await;

    let messages = protocol_error(&addr).await;

    assert_eq!(
        messages,
        vec![
            "reply to `stats`: expected STAT lines and END, got `VERSION 1.6.18`".to_owned(),
            "reply to `stats settings`: expected STAT lines and END, got `VERSION 1.6.18`"
                .to_owned(),
        ]
    );
}

#[tokio::test]
async fn a_node_that_closes_at_once_is_unreachable() {
    let addr = fake_node(|socket| async move { drop(socket) }).await;
    let driver = MemcachedDriver::new(addr.clone());

    let error = driver.read().await.expect_err("closed");

    assert!(
        matches!(&error, NodeError::Unreachable { address, .. } if *address == addr),
        "{error:?}"
    );
}

/// A line-by-line proxy in front of a real memcached that cuts the connection when it
/// sees `trigger`, after memcached has carried it out and before the driver gets the
/// answer: the reply is lost, the change is made. With `then_dead`, every later
/// connection is closed as soon as it is accepted.
async fn cutting_proxy(upstream: String, trigger: &'static str, then_dead: bool) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncBufReadExt, BufReader};

    let fired = Arc::new(AtomicBool::new(false));
    fake_node(move |client| {
        let upstream = upstream.clone();
        let fired = fired.clone();
        async move {
            if then_dead && fired.load(Ordering::SeqCst) {
                return;
            }
            let server = TcpStream::connect(&upstream).await.expect("upstream");
            let (server_read, mut server_write) = server.into_split();
            let mut server_lines = BufReader::new(server_read).lines();
            let (client_read, mut client_write) = client.into_split();
            let mut client_lines = BufReader::new(client_read).lines();
            while let Ok(Some(line)) = client_lines.next_line().await {
                let cut = line == trigger && !fired.swap(true, Ordering::SeqCst);
                let sent = if cut {
                    format!("{line}\r\nmn\r\n")
                } else {
                    format!("{line}\r\n")
                };
                server_write
                    .write_all(sent.as_bytes())
                    .await
                    .expect("upstream write");
                if cut || line == "mn" {
                    let mut reply = String::new();
                    while let Ok(Some(l)) = server_lines.next_line().await {
                        reply.push_str(&l);
                        reply.push_str("\r\n");
                        if l == "MN" {
                            break;
                        }
                    }
                    if cut {
                        return;
                    }
                    if client_write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_connection_cut_in_the_middle_of_an_apply_is_put_back_over_a_new_one() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let before = client.settings();
    let proxy = cutting_proxy(server.addr(), "slabs automove 0", false).await;
    let driver = MemcachedDriver::new(proxy.clone());

    let error = driver
        .apply(&params(&[
            ("lru_crawler_sleep", "250"),
            ("maxbytes", "33554432"),
            ("slab_automove", "0"),
            ("verbosity", "1"),
        ]))
        .await
        .expect_err("cut");

    assert_eq!(
        error,
        NodeError::Unreachable {
            address: proxy,
            message: "the node closed the connection during `slabs automove 0`".into(),
        }
    );
    // slab_automove itself went through before the cut, and was put back too.
    assert_eq!(client.settings(), before);
}

#[tokio::test]
async fn a_rollback_that_cannot_reach_the_node_says_what_is_left_to_put_back() {
    let server = MemcachedServer::start();
    let mut client = server.client();
    let proxy = cutting_proxy(server.addr(), "slabs automove 0", true).await;
    let driver = MemcachedDriver::new(proxy.clone());

    let error = driver
        .apply(&params(&[
            ("lru_crawler_sleep", "250"),
            ("maxbytes", "33554432"),
            ("slab_automove", "0"),
            ("verbosity", "1"),
        ]))
        .await
        .expect_err("cut, then unreachable");

    match error {
        NodeError::RollbackFailed {
            address,
            parameter,
            message,
            restore,
            restore_error,
        } => {
            assert_eq!(address, proxy);
            assert_eq!(parameter, "slab_automove");
            assert_eq!(
                message,
                format!("{proxy}: unreachable: the node closed the connection during `slabs automove 0`")
            );
            assert_eq!(
                restore,
                "lru_crawler_sleep 100, maxbytes 67108864, slab_automove 1"
            );
            // The first put-back command goes to a connection the proxy drops at once
            // (closed or reset, as the kernel has it); the others are not tried on it.
            assert!(
                restore_error.starts_with(&format!("slab_automove: {proxy}: unreachable: "))
                    && !restore_error.contains("maxbytes"),
                "{restore_error}"
            );
        }
        other => panic!("expected RollbackFailed, got {other:?}"),
    }
    // The error is the truth about the node: these are what it says is left.
    assert_eq!(
        settings_of(
            &mut client,
            &[
                "lru_crawler_sleep",
                "maxbytes",
                "slab_automove",
                "verbosity"
            ]
        ),
        params(&[
            ("lru_crawler_sleep", "250"),
            ("maxbytes", "33554432"),
            ("slab_automove", "0"),
            ("verbosity", "0"),
        ])
    );
}
