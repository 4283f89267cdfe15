//! `rollout` and `drift --server` through the real binary, against a server that cannot
//! be reached: the message says which step failed (DNS, the connection, the answer's
//! time limit), never only "error sending request".

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::servers::free_port;

fn cacheflow(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(args)
        .env("CACHEFLOW_ADMIN_TOKEN", "admin-token-0123456789")
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_server_is_named_as_dns_refused_or_timed_out() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let (code, err) = cacheflow(&["rollout", "status", "--server", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        err,
        format!("error: {url}: connection refused: nothing listens at 127.0.0.1:{port} (is the server running?)\n")
    );
    let (code, err) = cacheflow(&["drift", "--server", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(": connection refused: nothing listens at"),
        "{err}"
    );

    // `.invalid` never resolves (RFC 2606); no DNS server at all fails as DNS too.
    let (code, err) = cacheflow(&[
        "drift",
        "--server",
        "http://user:pa55@cacheflow.invalid:8080",
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with("error: http://cacheflow.invalid:8080: DNS: cannot resolve the host name `cacheflow.invalid`: "),
        "{err}"
    );
    assert!(!err.contains("pa55"), "{err}");

    // Accepts the connection, never answers: the request's 30 s limit.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let started = Instant::now();
    let (code, err) = cacheflow(&["rollout", "status", "--server", &url]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.starts_with(&format!("error: {url}: timed out: no answer within 30 s")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(listener);
}
