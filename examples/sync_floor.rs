//! The floor `cacheflow sync` is measured against (`bench/sync.sh`): one process, one
//! open client per node, every node at once, each sent one pipelined round trip
//! (`CONFIG GET` of the names, `CONFIG SET` of all of them, `CONFIG REWRITE`, `CONFIG GET`
//! again to read them back), and nothing else: no repository, no plan, no journal, no
//! gates.
//!
//!     cargo run --release --example sync_floor -- PORTS_FILE hz=20 maxmemory=64mb ...
//!
//! `PORTS_FILE` holds the nodes' ports on 127.0.0.1, separated by white space. Prints the
//! nodes set and the wall time; exits 1 when a node could not be reached, refused a
//! value or did not read back what was set.

use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::Value;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((ports_file, pairs)) = args.split_first() else {
        eprintln!("usage: sync_floor PORTS_FILE NAME=VALUE...");
        return std::process::ExitCode::from(1);
    };
    let ports: Vec<u16> = match std::fs::read_to_string(ports_file) {
        Ok(text) => text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
        Err(e) => {
            eprintln!("sync_floor: {ports_file}: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let params: Vec<(String, String)> = pairs
        .iter()
        .filter_map(|p| p.split_once('='))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sync_floor: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let failures = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for port in ports.iter().copied() {
            let params = params.clone();
            tasks.spawn(async move { set_node(port, &params).await.map_err(|e| (port, e)) });
        }
        let mut failures = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err((port, e))) => failures.push(format!("127.0.0.1:{port}: {e}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        failures
    });
    for f in &failures {
        eprintln!("sync_floor: {f}");
    }
    println!(
        "{} node(s) set, {} failed, {:.1} ms",
        ports.len() - failures.len(),
        failures.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    if failures.is_empty() && !ports.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// One node: connect, then one pipelined round trip; checks every reply.
async fn set_node(port: u16, params: &[(String, String)]) -> Result<(), String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut con: MultiplexedConnection = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let mut pipe = redis::pipe();
    pipe.cmd("CONFIG").arg("GET").arg(&names);
    let set = pipe.cmd("CONFIG").arg("SET");
    for (n, v) in params {
        set.arg(n).arg(v);
    }
    pipe.cmd("CONFIG").arg("REWRITE");
    pipe.cmd("CONFIG").arg("GET").arg(&names);
    let replies: Vec<Value> = con
        .send_packed_commands(&pipe, 0, 4)
        .await
        .map_err(|e| e.to_string())?;
    for (what, reply) in ["CONFIG GET", "CONFIG SET", "CONFIG REWRITE", "CONFIG GET"]
        .iter()
        .zip(&replies)
    {
        if let Value::ServerError(e) = reply {
            return Err(format!("{what}: {e:?}"));
        }
    }
    // The read-back holds every name (values in the engine's own text).
    let read_back = match replies.get(3) {
        Some(Value::Map(pairs)) => pairs.len(),
        Some(Value::Array(items)) => items.len() / 2,
        other => return Err(format!("CONFIG GET answered {other:?}")),
    };
    if read_back != params.len() {
        return Err(format!(
            "read back {read_back} of {} parameters",
            params.len()
        ));
    }
    Ok(())
}
