//! A real browser for the tests: headless Chromium driven by chromedriver over the W3C
//! WebDriver protocol (JSON over HTTP on loopback, spoken here with a plain socket: no
//! client crate, no second TLS stack). The binaries are Debian's `chromium` and
//! `chromium-driver` (`scripts/setup.sh --test`), or `$CACHEFLOW_BROWSER` and
//! `$CACHEFLOW_CHROMEDRIVER`. A test that cannot start them fails saying so.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::servers::free_port;

/// The W3C key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `name` on PATH (the first directory that has it).
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn from_env_or_path(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        return Some(v.into());
    }
    names.iter().find_map(|n| on_path(n))
}

/// One browser session; chromedriver and the browser end with it.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver and a headless Chromium with a fresh profile.
    pub fn start() -> Browser {
        let chromium = from_env_or_path(
            "CACHEFLOW_BROWSER",
            &[
                "chromium",
                "chromium-browser",
                "google-chrome",
                "google-chrome-stable",
            ],
        )
        .unwrap_or_else(|| {
            panic!(
                "no browser found (the console tests drive headless Chromium): looked for \
                 $CACHEFLOW_BROWSER, chromium, chromium-browser, google-chrome; run \
                 scripts/setup.sh --test (Debian: apt-get install chromium chromium-driver)"
            )
        });
        let chromedriver = from_env_or_path(
            "CACHEFLOW_CHROMEDRIVER",
            &["chromedriver", "chromium.chromedriver"],
        )
        .or_else(|| Some(PathBuf::from("/usr/lib/chromium/chromedriver")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "no chromedriver found (the console tests drive Chromium over WebDriver): \
                     looked for $CACHEFLOW_CHROMEDRIVER and chromedriver on PATH; run \
                     scripts/setup.sh --test (Debian: apt-get install chromium-driver)"
            )
        });
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let profile = tempfile::Builder::new()
            .prefix("cacheflow-chromium-")
            .tempdir()
            .unwrap();
        let mut browser = Browser {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        browser.wait_driver();
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args}
        }}});
        let answer = browser.call("POST", "/session", Some(caps));
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session from chromedriver: {answer}"))
            .to_owned();
        browser
    }

    fn wait_driver(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.http("GET", "/status", None) {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// One request to chromedriver: its status and JSON body.
    fn http(&self, method: &str, path: &str, body: Option<Value>) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        s.write_all(request.as_bytes())?;
        // chromedriver may keep the connection open: read the head, then the body by its
        // length (or its chunks).
        let mut out = Vec::new();
        let mut buf = [0u8; 64 << 10];
        let head_end = loop {
            if let Some(i) = find(&out, b"\r\n\r\n") {
                break i;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other("closed before the head ended"));
            }
            out.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
        let length: Option<usize> = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok());
        let chunked = head.contains("transfer-encoding: chunked");
        let mut rest = out[head_end + 4..].to_vec();
        loop {
            let done = match length {
                Some(n) => rest.len() >= n,
                None if chunked => {
                    find(&rest, b"0\r\n\r\n").is_some_and(|i| i == 0 || rest[i - 2..i] == *b"\r\n")
                }
                None => false,
            };
            if done {
                break;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        let rest = String::from_utf8_lossy(&rest).into_owned();
        let body = if chunked { dechunk(&rest) } else { rest };
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// A WebDriver command that must succeed: its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self
            .http(method, path, body)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {answer}");
        answer["value"].clone()
    }

    fn session_path(&self, tail: &str) -> String {
        format!("/session/{}{tail}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({ "url": url })),
        );
    }

    /// Run a script in the page; its return value.
    pub fn script(&self, source: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": source, "args": []})),
        )
    }

    /// The element `css` selects, if any.
    pub fn find(&self, css: &str) -> Option<Element<'_>> {
        let (status, answer) = self
            .http(
                "POST",
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .unwrap_or_else(|e| panic!("WebDriver find {css}: {e}"));
        (status == 200).then(|| Element {
            browser: self,
            css: css.to_owned(),
            id: std::cell::RefCell::new(
                answer["value"][ELEMENT]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| panic!("no element reference for {css} in {answer}"))
                    .to_owned(),
            ),
        })
    }

    /// Wait until `css` selects an element.
    pub fn wait_for(&self, css: &str, within: Duration) -> Element<'_> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {css} within {within:?} in:\n{}",
                self.source()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn source(&self) -> String {
        self.call("GET", &self.session_path("/source"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// A PNG of the window, written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.session_path("/screenshot"), None);
        let png = base64_decode(b64.as_str().unwrap_or_default());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.http("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// An element of the page. The console redraws parts of its pages as events arrive, so
/// an element found a moment ago may be replaced before it is read ("stale element
/// reference"): it is then found again by its selector and the command repeated.
pub struct Element<'a> {
    browser: &'a Browser,
    css: String,
    id: std::cell::RefCell<String>,
}

impl Element<'_> {
    /// A command on this element that must succeed: its `value`.
    fn call(&self, method: &str, tail: &str, body: Option<Value>) -> Value {
        for _ in 0..20 {
            let path = self
                .browser
                .session_path(&format!("/element/{}{tail}", self.id.borrow()));
            let (status, answer) = self
                .browser
                .http(method, &path, body.clone())
                .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
            if status == 200 {
                return answer["value"].clone();
            }
            let stale = answer["value"]["error"] == "stale element reference";
            assert!(stale, "WebDriver {method} {path}: {answer}");
            std::thread::sleep(Duration::from_millis(50));
            if let Some(again) = self.browser.find(&self.css) {
                *self.id.borrow_mut() = again.id.into_inner();
            }
        }
        panic!("{} stayed stale for 20 tries", self.css)
    }

    pub fn text(&self) -> String {
        self.call("GET", "/text", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn attribute(&self, name: &str) -> Option<String> {
        self.call("GET", &format!("/attribute/{name}"), None)
            .as_str()
            .map(str::to_owned)
    }

    pub fn click(&self) {
        self.call("POST", "/click", Some(json!({})));
    }

    pub fn send_keys(&self, text: &str) {
        self.call("POST", "/value", Some(json!({ "text": text })));
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
