//! The HTTP/1.1 accept loop of `cacheflow serve` (in place of `axum::serve`).
//!
//! Ten thousand agents keep ten thousand keep-alive connections open, so what one idle
//! connection holds is the server's memory. `axum::serve` gives each connection hyper's
//! version-sniffing auto builder and a fresh copy of the route table, and hyper's read
//! buffer grows from 8 to 16 KiB on the second request of a connection; here every
//! connection shares one resolved router and hyper is told to keep its read buffer at
//! 8 KiB (a request head larger than that is refused, as most proxies do), which took
//! the server from about 40 to about 25 KiB per idle connection (BENCHMARKS.md, "The
//! server under 10,000 agents"). Also: `TCP_NODELAY` on every connection, a 30 s
//! limit on reading a request head (a client that trickles one in is dropped), and on
//! shutdown the listener closes, each connection finishes the request it is answering,
//! and the loop returns when the last one has.
//!
//! With a certificate (`serve --tls-cert-file --tls-key-file`, for deployments without a
//! proxy in front) every accepted connection is a TLS one: the handshake runs in the
//! connection's own task, bounded by the same 30 s, so a slow or plaintext client never
//! holds up the accept loop. native-tls (OpenSSL), the stack the rest of the binary uses.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
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
                    connection(&builder, stream, router, stop, peer).await;
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
