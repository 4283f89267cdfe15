//! A bounded look at a remote's host before git talks to it. libgit2 waits for the
//! kernel to give up on a host that does not answer (about 130 s on Linux, with nothing
//! said meanwhile) and its own connect timeout is a process-wide C setting reached only
//! through `unsafe`; a TCP connect with a deadline says the same thing in
//! [`connect_timeout`], naming the host.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The default bound of [`check`]; `CACHEFLOW_GIT_CONNECT_TIMEOUT` (seconds) changes it.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`check`] waits for a host: `CACHEFLOW_GIT_CONNECT_TIMEOUT` in seconds (a
/// fraction allowed), else [`DEFAULT_CONNECT_TIMEOUT`].
pub fn connect_timeout() -> Duration {
    std::env::var("CACHEFLOW_GIT_CONNECT_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)))
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT)
}

/// The host and port git would connect to for `url`; `None` for a local URL
/// (`file://`) or one this does not understand (git then says what is wrong).
pub fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        // scp-like `user@host:path`.
        None => {
            let (authority, _) = url.split_once(':')?;
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            return (!host.is_empty()).then(|| (host.to_owned(), 22));
        }
    };
    let default = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        "ssh" | "git+ssh" | "ssh+git" => 22,
        "git" => 9418,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => default,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// Why a host could not be reached, in words for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreached {
    /// `host:port`.
    pub host: String,
    /// What failed: the name lookup, a refusal, no answer in time.
    pub reason: String,
}

impl std::fmt::Display for Unreached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach {}: {}", self.host, self.reason)
    }
}

/// Connect to `url`'s host within `timeout` (name lookup included), then close. `Ok` for
/// a URL with no host to reach.
pub fn check(url: &str, timeout: Duration) -> Result<(), Unreached> {
    let Some((host, port)) = host_port(url) else {
        return Ok(());
    };
    let shown = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let start = Instant::now();
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    // The lookup blocks with no timeout of its own: it runs on a thread of its own.
    let (tx, rx) = mpsc::channel();
    let name = (host.clone(), port);
    std::thread::spawn(move || {
        let _ = tx.send(
            name.to_socket_addrs()
                .map(|a| a.collect::<Vec<SocketAddr>>()),
        );
    });
    let addrs = match rx.recv_timeout(timeout) {
        Ok(Ok(a)) if !a.is_empty() => a,
        Ok(Ok(_)) => {
            return Err(Unreached {
                host: shown,
                reason: format!("the name {host} has no address"),
            })
        }
        Ok(Err(e)) => {
            return Err(Unreached {
                host: shown,
                reason: format!("the name {host} could not be looked up ({e})"),
            })
        }
        Err(_) => {
            return Err(Unreached {
                host: shown,
                reason: format!("the name {host} was not looked up within {}", secs(timeout)),
            })
        }
    };
    let mut last = String::new();
    for addr in addrs {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => last = String::new(),
            Err(e) => last = format!("{e} (after {})", secs(start.elapsed())),
        }
    }
    Err(Unreached {
        host: shown,
        reason: if last.is_empty() {
            format!("no answer within {}", secs(timeout))
        } else {
            last
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_and_port_of_each_kind_of_url() {
        let hp = |u: &str| host_port(u).map(|(h, p)| format!("{h}:{p}"));
        assert_eq!(
            hp("https://github.com/o/r.git").as_deref(),
            Some("github.com:443")
        );
        assert_eq!(
            hp("https://u:p@git.example:8443/o/r").as_deref(),
            Some("git.example:8443")
        );
        assert_eq!(hp("http://10.0.0.1/r").as_deref(), Some("10.0.0.1:80"));
        assert_eq!(hp("ssh://git@h:2222/r").as_deref(), Some("h:2222"));
        assert_eq!(
            hp("git@github.com:o/r.git").as_deref(),
            Some("github.com:22")
        );
        assert_eq!(hp("git://h/r").as_deref(), Some("h:9418"));
        assert_eq!(hp("https://[::1]:3000/r").as_deref(), Some("::1:3000"));
        assert_eq!(hp("file:///srv/r.git"), None);
    }

    #[test]
    fn a_host_that_never_answers_is_given_up_within_the_bound() {
        // A listener with a backlog of one, filled: the kernel drops further handshakes.
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
        let start = Instant::now();
        let err = check(
            &format!("http://127.0.0.1:{port}/r.git"),
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3), "{err}");
        assert_eq!(
            err.to_string(),
            format!("cannot reach 127.0.0.1:{port}: no answer within 0.5 s")
        );
    }
}
