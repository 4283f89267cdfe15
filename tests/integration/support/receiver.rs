//! A local HTTP receiver for notifications and forge calls: records every request
//! (method, path, headers, body) and answers 200 `{}`, what a handler says (a fake
//! forge), or never (`hang`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// Status and JSON body for a request.
type Handler = Arc<dyn Fn(&Request) -> (u16, String) + Send + Sync>;

pub struct Receiver {
    pub url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Receiver {
    /// Answers every request with 200 `{}`.
    pub fn start() -> Receiver {
        Receiver::start_with(false, Arc::new(|_| (200, "{}".to_owned())))
    }

    /// Reads every request and never answers.
    pub fn hanging() -> Receiver {
        Receiver::start_with(true, Arc::new(|_| (200, "{}".to_owned())))
    }

    /// Answers with `handler`.
    pub fn answering(
        handler: impl Fn(&Request) -> (u16, String) + Send + Sync + 'static,
    ) -> Receiver {
        Receiver::start_with(false, Arc::new(handler))
    }

    fn start_with(hang: bool, handler: Handler) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a receiver");
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = recorded.clone();
                let handler = handler.clone();
                std::thread::spawn(move || serve(stream, &recorded, hang, &handler));
            }
        });
        Receiver { url, requests }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Wait until `n` requests arrived.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<Request> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} request(s), not {n}: {got:#?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(stream: TcpStream, recorded: &Mutex<Vec<Request>>, hang: bool, handler: &Handler) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut headers = Vec::new();
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Request {
            method,
            path,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let (status, body) = handler(&request);
        recorded.lock().unwrap().push(request);
        if hang {
            std::thread::sleep(Duration::from_secs(3600));
            return;
        }
        let mut w = &stream;
        let answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if w.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
