//! Fetching a remote through the real binary: a host that never answers is named within
//! the connect bound, and the token of `CACHEFLOW_GIT_TOKEN_FILE` is sent as HTTP basic
//! credentials and never printed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run `cacheflow validate --repo url` with `env`; (exit code, stdout + stderr, time).
fn validate(url: &str, env: &[(&str, &str)], within: Duration) -> (Option<i32>, String, Duration) {
    let cache = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (o, e) = (out.path().join("out"), out.path().join("err"));
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["validate", "--repo", url])
        .env("CACHEFLOW_CACHE_DIR", cache.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", cache.path())
        .envs(env.iter().copied())
        .stdout(Stdio::from(std::fs::File::create(&o).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&e).unwrap()))
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cacheflow validate {url} was still running after {} s",
                within.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&o).unwrap() + &std::fs::read_to_string(&e).unwrap();
    (status.code(), text, start.elapsed())
}

#[test]
fn a_host_that_never_answers_is_named_within_the_connect_bound() {
    // A listener with a backlog of one, filled: the kernel drops every later handshake,
    // as a firewall that drops packets does.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let port = listener.local_addr().unwrap().port();
    let _fill = TcpStream::connect(("127.0.0.1", port)).unwrap();

    let url = format!("http://127.0.0.1:{port}/team/config.git");
    let (code, text, took) = validate(
        &url,
        &[("CACHEFLOW_GIT_CONNECT_TIMEOUT", "1.5")],
        Duration::from_secs(20),
    );
    eprintln!("gave up after {} ms: {text}", took.as_millis());
    assert_eq!(code, Some(1), "{text}");
    assert!(took < Duration::from_secs(6), "{} ms", took.as_millis());
    assert!(
        text.contains(&format!(
            "cannot reach 127.0.0.1:{port}: no answer within 1.5 s"
        )),
        "{text}"
    );
}

/// An HTTP server that asks for basic credentials and keeps what it was sent.
fn asks_for_credentials() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line == "\r\n" {
                    break;
                }
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    keep.lock().unwrap().push(line.trim().to_owned());
                }
                line.clear();
            }
            let mut stream = stream;
            let _ = stream.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (port, seen)
}

#[test]
fn the_token_file_is_sent_as_basic_credentials_and_never_printed() {
    let (port, seen) = asks_for_credentials();
    let dir = tempfile::tempdir().unwrap();
    let token = "glpat-Zq8token-never-shown";
    let file = dir.path().join("git-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let url = format!("http://127.0.0.1:{port}/team/config.git");
    let (code, text, _) = validate(
        &url,
        &[("CACHEFLOW_GIT_TOKEN_FILE", file.to_str().unwrap())],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains(token), "{text}");
    assert!(text.contains("authentication failed"), "{text}");
    // `x-access-token:<token>` in base64, as HTTP basic authentication sends it.
    let want = format!("Basic {}", base64(&format!("x-access-token:{token}")));
    let sent = seen.lock().unwrap().clone();
    assert!(
        sent.iter().any(|h| h.ends_with(&want)),
        "the token was not sent: {sent:?}"
    );
}

fn base64(text: &str) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
