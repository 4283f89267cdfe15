//! The cacheflow server's HTTP API as the command line calls it (`rollout`, `drift
//! --server`): a failed request said in words a person can act on, naming which step
//! failed: the host name did not resolve (DNS), nothing accepted the connection, or the
//! server did not answer in time.

use std::error::Error;
use std::time::Duration;

/// `server` (already redacted of credentials) and why `e` failed; `timeout` is the
/// request's whole time limit.
pub fn request_error(server: &str, e: &reqwest::Error, timeout: Duration) -> String {
    let mut causes: Vec<String> = Vec::new();
    let mut kinds: Vec<std::io::ErrorKind> = Vec::new();
    let mut next: Option<&(dyn Error + 'static)> = e.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            kinds.push(io.kind());
        }
        next = cause.source();
    }
    // reqwest's own message names the URL, credentials and all: only its causes are shown.
    let root = causes
        .last()
        .cloned()
        .unwrap_or_else(|| crate::edges::source::redact_url(&e.to_string()));
    let host = e
        .url()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let port = e.url().and_then(|u| u.port_or_known_default());
    let at = match port {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    if causes.iter().any(|c| c == "dns error") {
        format!("{server}: DNS: cannot resolve the host name `{host}`: {root}")
    } else if e.is_timeout() || kinds.contains(&std::io::ErrorKind::TimedOut) {
        format!(
            "{server}: timed out: no answer within {} s (connected, or still connecting, to {at})",
            timeout.as_secs()
        )
    } else if kinds.contains(&std::io::ErrorKind::ConnectionRefused) {
        format!("{server}: connection refused: nothing listens at {at} (is the server running?)")
    } else if e.is_connect() {
        format!("{server}: cannot connect to {at}: {root}")
    } else {
        format!("{server}: {root}")
    }
}
