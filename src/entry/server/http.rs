//! The HTTP/1.1 accept loop of `cacheflow serve` (in place of `axum::serve`).
//!
//! Ten thousand agents keep ten thousand keep-alive connections open, so what one idle
//! connection holds is the server's memory. `axum::serve` gives each connection hyper's
//! version-sniffing auto builder and a fresh copy of the route table, and hyper's read
//! buffer grows from 8 to 16 KiB on the second request of a connection; here every
//! connection shares one resolved router and hyper is told to keep its read buffer at 8
//! KiB (a request head larger than that is refused, as most proxies do), which took the
//! server from about 40 to about 25 KiB per idle connection (BENCHMARKS.md, "The server
//! under 10,000 agents"). A plain connection between two requests now holds no buffer
//! at all: it waits for the next request's first byte on the socket alone, and each
//! request is served by a hyper connection of its own, ended without a word to the
//! client once its answer is written (keep-alive turned off when the answer is made,
//! the socket handed back, bytes of a pipelined request kept); hyper's read and write
//! buffers (8 KiB each) live only while a request is in hand. Also: `TCP_NODELAY` on
//! every connection, a 30 s limit on reading a request head (a client that trickles one
//! in is dropped), and on shutdown the listener closes, each connection finishes the
//! request it is answering, and the loop returns when the last one has.
//!
//! With a certificate (`serve --tls-cert-file --tls-key-file`, for deployments without a
//! proxy in front) every accepted connection is a TLS one: the handshake runs in the
//! connection's own task, bounded by the same 30 s, so a slow or plaintext client never
//! holds up the accept loop. native-tls (OpenSSL), the stack the rest of the binary uses.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// hyper's smallest read buffer; also the largest request head accepted.
const READ_BUFFER_BYTES: usize = 8192;
/// A request head must arrive within this once its first byte has.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The server's certificate and key: connections are TLS when the server has one.
#[derive(Clone)]
pub struct ServerTls(tokio_native_tls::TlsAcceptor);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// The certificate chain (PEM) and its PKCS#8 PEM key, read and checked now, so a
    /// wrong file stops `serve` before it listens.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!(
                "{} is not a PEM certificate (no `-----BEGIN CERTIFICATE-----`)",
                cert.display()
            ));
        }
        let identity = native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| {
            format!(
                "{} and {} do not make a server certificate (the key must be PKCS#8 PEM, \
                 `-----BEGIN PRIVATE KEY-----`; `openssl pkcs8 -topk8 -nocrypt` converts \
                 one): {e}",
                cert.display(),
                key.display()
            )
        })?;
        let acceptor = native_tls::TlsAcceptor::new(identity)
            .map_err(|e| format!("cannot set up TLS with {}: {e}", cert.display()))?;
        Ok(ServerTls(acceptor.into()))
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains the open
/// connections gracefully. With `tls`, every connection is TLS.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .max_buf_size(READ_BUFFER_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    // Each connection holds a receiver; the loop waits for all of them to be dropped.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (closed_tx, closed_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        let closed = closed_rx.clone();
        match &tls {
            None => {
                tokio::spawn(async move {
                    plain_connection(&builder, stream, router, stop, peer).await;
                    drop(closed);
                });
            }
            Some(tls) => {
                let acceptor = tls.0.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream));
                    let accepted = tokio::select! {
                        accepted = handshake => accepted,
                        () = async { drop(stop.wait_for(|s| *s).await) } => return,
                    };
                    match accepted {
                        Ok(Ok(stream)) => connection(&builder, stream, router, stop, peer).await,
                        Ok(Err(e)) => tracing::debug!("TLS handshake with {peer}: {e}"),
                        Err(_) => tracing::debug!("TLS handshake with {peer}: timed out"),
                    }
                    drop(closed);
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(closed_rx);
    closed_tx.closed().await;
}

/// Serve one plain connection until the client closes it, or until `stop`, after which
/// the request in progress is finished. Between requests it holds no buffer: it waits
/// for the next request's first byte on the socket alone, and each request gets a hyper
/// connection of its own, handed back (its buffers freed) once its answer is written.
/// That connection and its state live in a box of their own, so the task of an idle
/// connection is only as large as what waiting needs (a task is as large as its largest
/// state: over 1 KiB with the hyper connection inline, 10,000 times over).
async fn plain_connection(
    builder: &http1::Builder,
    stream: TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) {
    let answered = Arc::new(AtomicBool::new(false));
    let mut io = Prefixed {
        read: Bytes::new(),
        stream,
    };
    loop {
        if io.read.is_empty() {
            tokio::select! {
                ready = io.stream.readable() => if ready.is_err() { return },
                () = async { drop(stop.wait_for(|s| *s).await) } => return,
            }
        }
        let request = one_request(builder, io, &router, &answered, &mut stop, peer);
        match Box::pin(request).await {
            Some(next) => io = next,
            None => return,
        }
    }
}

/// Serve the one request whose first byte has arrived on `io`, with a hyper connection
/// of its own. Gives the socket back (with the bytes of a pipelined next request read
/// with this one) when the answer is written and the connection may carry another.
async fn one_request(
    builder: &http1::Builder,
    io: Prefixed,
    router: &Router,
    answered: &Arc<AtomicBool>,
    stop: &mut watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) -> Option<Prefixed> {
    let service = Noted {
        inner: TowerToHyperService::new(router.clone()),
        answered: answered.clone(),
    };
    let mut conn = builder.serve_connection(TokioIo::new(io), service);
    let (mut served, mut stopping) = (false, false);
    let finished = loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| one_answer(&mut conn, answered, &mut served, cx)) => break done,
            () = async { drop(stop.wait_for(|s| *s).await) }, if !stopping => {
                stopping = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    if let Err(e) = finished {
        tracing::trace!("connection from {peer}: {e}");
        return None;
    }
    // Closed by the client, or a request refused before it was answered; or stopping.
    if !served || stopping {
        return None;
    }
    let parts = conn.into_parts();
    let mut io = parts.io.into_inner();
    io.read = carried_over(parts.read_buf);
    Some(io)
}

/// The bytes of a next request read with this one (pipelining), in an allocation of
/// their own. hyper hands back its whole read buffer, and after a request it is usually
/// empty but still holds its 8 KiB: kept as it is, every idle connection would keep
/// 8 KiB until its next request (78 MiB over 10,000 agents' connections, found with
/// heaptrack), which is what handing the connection back was for.
fn carried_over(read_buf: Bytes) -> Bytes {
    if read_buf.is_empty() {
        Bytes::new()
    } else {
        Bytes::copy_from_slice(&read_buf)
    }
}

/// Drive `conn` until its one request is answered and written: once the answer is made
/// (the head is written in the same poll), keep-alive is turned off, so the connection
/// ends when it is idle, without `Connection: close` and without shutting the socket.
fn one_answer<S>(
    conn: &mut http1::Connection<TokioIo<Prefixed>, S>,
    answered: &AtomicBool,
    served: &mut bool,
    cx: &mut std::task::Context<'_>,
) -> std::task::Poll<hyper::Result<()>>
where
    S: hyper::service::HttpService<hyper::body::Incoming> + Unpin,
    S::Future: Unpin,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if conn.poll_without_shutdown(cx)?.is_ready() {
        return std::task::Poll::Ready(Ok(()));
    }
    if answered.swap(false, Ordering::AcqRel) {
        *served = true;
        Pin::new(&mut *conn).graceful_shutdown();
        return conn.poll_without_shutdown(cx);
    }
    std::task::Poll::Pending
}

/// The router as hyper calls it, noting when an answer is made.
struct Noted<S> {
    inner: S,
    answered: Arc<AtomicBool>,
}

impl<S> hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Noted<S>
where
    S: hyper::service::Service<hyper::Request<hyper::body::Incoming>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let answered = self.answered.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            answered.store(true, Ordering::Release);
            answer
        })
    }
}

/// A socket with the bytes already read from it ahead of it (a pipelined request).
struct Prefixed {
    read: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            let head = self.read.split_to(n);
            buf.put_slice(&head);
            return std::task::Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serve one connection until the client closes it, or until `stop`, after which the
/// request in progress is finished.
async fn connection<S>(
    builder: &http1::Builder,
    stream: S,
    router: Router,
    mut stop: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::trace!("connection from {peer}: {e}");
            }
        }
        () = async { drop(stop.wait_for(|s| *s).await) } => {
            connection.as_mut().graceful_shutdown();
            if let Err(e) = connection.await {
                tracing::trace!("connection from {peer}: {e}");
            }
        }
    }
}

/// A failed accept: the peer gave up before we took its connection (go on at once), or
/// the process is out of descriptors or memory (wait a moment for some to be freed
/// rather than spin).
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!("accepting a connection: {e}; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Read from `s` until `n` answers (`HTTP/1.1 200`) with their bodies have arrived.
    async fn answers(s: &mut tokio::net::TcpStream, n: usize) -> String {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.matches("HTTP/1.1 200").count() < n || !text.ends_with("pong") {
            let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("an answer within 10 s")
                .expect("read");
            assert!(read > 0, "closed after {text:?}");
            text.push_str(&String::from_utf8_lossy(&buf[..read]));
        }
        text
    }

    #[test]
    fn what_a_connection_carries_to_its_next_request_holds_none_of_hypers_buffer() {
        let buffer = |text: &[u8]| {
            let mut b = bytes::BytesMut::with_capacity(READ_BUFFER_BYTES);
            b.extend_from_slice(text);
            let start = b.as_ptr() as usize;
            (b, move |b: &Bytes| {
                (start..start + READ_BUFFER_BYTES).contains(&(b.as_ptr() as usize))
            })
        };
        // Nothing read past the request: hyper hands back its empty buffer, which still
        // holds the whole allocation.
        let (empty, within) = buffer(b"");
        let handed_back = empty.freeze();
        assert!(handed_back.is_empty() && within(&handed_back));
        let carried = carried_over(handed_back);
        assert!(carried.is_empty() && !within(&carried));
        // A pipelined next request begun: its bytes are carried in a copy of their own.
        let (mut read, within) = buffer(b"GET /ping HTTP/1.1\r\n\r\nGET /pi");
        let head = read.split_to(22).freeze();
        let rest = read.freeze();
        let carried = carried_over(rest.clone());
        assert_eq!(&carried[..], b"GET /pi");
        assert!(within(&rest) && !within(&carried));
        drop(head);
    }

    #[tokio::test]
    async fn a_kept_alive_connection_answers_one_request_after_another_and_pipelined_ones() {
        let router = Router::new().route("/ping", axum::routing::get(|| async { "pong" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let mut stopped = stopped;
        let server = tokio::spawn(serve(listener, router, None, async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let get = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n";
        // One request, an idle pause, another on the same connection.
        s.write_all(get).await.unwrap();
        let first = answers(&mut s, 1).await;
        assert!(
            !first.to_ascii_lowercase().contains("connection: close"),
            "{first}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(get).await.unwrap();
        answers(&mut s, 1).await;
        // Three in one write: every one answered, in order, on the same connection.
        let three = [&get[..], &get[..], &get[..]].concat();
        s.write_all(&three).await.unwrap();
        let text = answers(&mut s, 3).await;
        assert_eq!(text.matches("pong").count(), 3, "{text}");
        // A request sent in two parts is read whole.
        s.write_all(b"GET /ping HTTP/1.1\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(b"Host: x\r\n\r\n").await.unwrap();
        answers(&mut s, 1).await;
        // On stop, an idle connection is closed and the server returns.
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server returns once stopped")
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0))), "{read:?} {rest:?}");
    }

    #[tokio::test]
    async fn an_idle_connections_task_holds_no_hyper_connection() {
        // 10,000 agents keep 10,000 of these tasks waiting: the hyper connection and
        // its request's state (about 1 KiB) are boxed, made only when a request comes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let (_stop, stopped) = watch::channel(false);
        let builder = http1::Builder::new();
        let waiting = plain_connection(&builder, stream, Router::new(), stopped, peer);
        let size = std::mem::size_of_val(&waiting);
        assert!(size < 768, "an idle connection's task is {size} bytes");
    }
}
