//! TLS to the nodes (`spec.tls` of a cluster, the agent's `--node-ca-file`): a TCP
//! connection, then a TLS handshake that checks the node's certificate against the CAs
//! of `tls.ca` only and, when given, presents a client certificate. Both drivers take the
//! encrypted stream from here, so Redis and Memcached say the same words for the same
//! failure.
//!
//! One TLS stack: native-tls, which is OpenSSL on Linux, the library git2 and reqwest
//! already link. There is no fallback to plaintext: a handshake that fails is the node's
//! error, with what failed (unknown CA, expired, another name, no TLS on that port).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use native_tls::{Certificate, Identity, TlsConnector};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_native_tls::TlsStream;

use crate::edges::nodes::NodeError;
use crate::edges::secret;
use crate::pure::spec::model::{SecretRef, Tls};

/// Largest PEM file read: a CA bundle with a few hundred certificates.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A byte stream to a node, plaintext or TLS.
pub trait NodeStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> NodeStream for T {}

/// Connectors already built, by configuration, with the size and modification time of
/// each of its files when it was built. A snapshot of 100 nodes of one cluster builds
/// one connector, not 100 (reading and parsing the CA bundle, making an OpenSSL
/// context); a file that changed since is read again.
type Stamps = Vec<(u64, Option<std::time::SystemTime>)>;
static CONNECTORS: Mutex<Option<HashMap<Tls, (Stamps, TlsConnector)>>> = Mutex::new(None);
/// More distinct configurations than this in one process empties the cache.
const MAX_CACHED: usize = 64;

/// The size and modification time of every file `tls` names; `None` when a part is not
/// a file (a key in an environment variable is read each time).
fn stamps(tls: &Tls) -> Option<Stamps> {
    [Some(&tls.ca), tls.cert.as_ref(), tls.key.as_ref()]
        .into_iter()
        .flatten()
        .map(|r| {
            let meta = std::fs::metadata(r.0.strip_prefix("file:")?).ok()?;
            Some((meta.len(), meta.modified().ok()))
        })
        .collect()
}

/// The TLS connector `tls` describes: the one built before while its files are
/// unchanged, or a new one read from them now, so a renewed certificate is picked up by
/// the next connection. An error here is the configuration's, not the node's;
/// `address` only says which node needed it.
pub fn connector(address: &str, tls: &Tls) -> Result<TlsConnector, NodeError> {
    let stamps = stamps(tls);
    let mut cache = CONNECTORS.lock().unwrap_or_else(|p| p.into_inner());
    if let (Some(now), Some((then, connector))) = (&stamps, cache.as_ref().and_then(|c| c.get(tls)))
    {
        if now == then {
            return Ok(connector.clone());
        }
    }
    let connector = build(address, tls)?;
    if let Some(stamps) = stamps {
        let map = cache.get_or_insert_with(HashMap::new);
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(tls.clone(), (stamps, connector.clone()));
    }
    Ok(connector)
}

fn build(address: &str, tls: &Tls) -> Result<TlsConnector, NodeError> {
    let fail = |message: String| NodeError::Tls {
        address: address.to_owned(),
        message,
    };
    let ca = read_pem(&tls.ca)?;
    let roots = certificates(&ca).map_err(|why| fail(format!("tls.ca {}: {why}", tls.ca)))?;
    let mut builder = TlsConnector::builder();
    // Only the cluster's CAs vouch for its nodes: a node with a certificate from a
    // public CA for the same name is not one of them.
    builder.disable_built_in_roots(true);
    for root in roots {
        builder.add_root_certificate(root);
    }
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let cert_pem = read_pem(cert)?;
            certificates(&cert_pem).map_err(|why| fail(format!("tls.cert {cert}: {why}")))?;
            let key_pem = read_pem(key)?;
            let identity = Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| {
                fail(format!(
                    "tls.cert {cert} and tls.key {key} do not make a client certificate \
                     (the key must be PKCS#8 PEM, `-----BEGIN PRIVATE KEY-----`; \
                     `openssl pkcs8 -topk8 -nocrypt` converts one): {e}"
                ))
            })?;
            builder.identity(identity);
        }
        (None, None) => {}
        _ => {
            return Err(fail(
                "tls.cert and tls.key go together: give both or neither".to_owned(),
            ))
        }
    }
    builder
        .build()
        .map_err(|e| fail(format!("cannot set up TLS: {e}")))
}

/// A TCP connection to `address` (`host:port`, `[v6]:port`) and a TLS handshake over
/// it, each bounded by `timeout`. The certificate must be for the host unless
/// `tls.serverName` names another.
pub async fn connect(
    address: &str,
    tls: &Tls,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, NodeError> {
    let host = host_of(address);
    let connector = tokio_native_tls::TlsConnector::from(connector(address, tls)?);
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let tcp = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => {
            return Err(NodeError::TimedOut {
                address: address.to_owned(),
                timeout_ms,
            })
        }
        Ok(Err(e)) => {
            return Err(NodeError::Unreachable {
                address: address.to_owned(),
                message: e.to_string(),
            })
        }
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    let name = tls.server_name.as_deref().unwrap_or(host);
    // A plaintext node reads the ClientHello as the start of a command and waits for its
    // end. The handshake gets four fifths of the node's time, so that its silence is
    // told as such before the caller's bound of the whole reading cuts in.
    let budget = timeout.mul_f64(0.8);
    match tokio::time::timeout(budget, connector.connect(name, tcp)).await {
        Err(_) => Err(NodeError::Tls {
            address: address.to_owned(),
            message: format!(
                "no TLS handshake within {} ms: the port does not seem to speak TLS \
                 (a plaintext port?)",
                budget.as_millis()
            ),
        }),
        Ok(Err(e)) => Err(NodeError::Tls {
            address: address.to_owned(),
            message: handshake_failure(&e.to_string(), name),
        }),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// The host of `address` (`host:port`, `[v6]:port`), as a certificate names it.
pub fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// What OpenSSL's words about a failed handshake mean for the person reading them,
/// followed by the words themselves.
pub fn handshake_failure(openssl: &str, name: &str) -> String {
    let lower = openssl.to_ascii_lowercase();
    let why = if lower.contains("certificate has expired") {
        "the node's certificate has expired".to_owned()
    } else if lower.contains("certificate is not yet valid") {
        "the node's certificate is not valid yet".to_owned()
    } else if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        format!(
            "the node's certificate is not for `{name}` (tls.serverName names the host the \
             certificates are for)"
        )
    } else if lower.contains("unable to get local issuer certificate")
        || lower.contains("self-signed certificate")
        || lower.contains("self signed certificate")
        || lower.contains("unable to verify the first certificate")
        || lower.contains("unable to get issuer certificate")
    {
        "the node's certificate is not signed by a CA of tls.ca".to_owned()
    } else if lower.contains("certificate verify failed") {
        "the node's certificate was refused".to_owned()
    } else if lower.contains("wrong version number")
        || lower.contains("packet length too long")
        || lower.contains("record layer failure")
        || lower.contains("http request")
    {
        "the node does not speak TLS on this port (a plaintext port?)".to_owned()
    } else if lower.contains("certificate required") || lower.contains("handshake failure") {
        "the node refused the handshake (does it want a client certificate, tls.cert and \
         tls.key?)"
            .to_owned()
    } else if lower.contains("unexpected eof") || lower.contains("connection reset") {
        "the node closed the connection during the TLS handshake (a plaintext port, or a \
         node that wants a client certificate, tls.cert and tls.key?)"
            .to_owned()
    } else {
        "TLS handshake failed".to_owned()
    };
    format!("{why} ({})", openssl.trim())
}

/// A transport error after the handshake, when the node closed the connection: with TLS
/// 1.3 a node that wants a client certificate says so only then.
pub fn after_handshake(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    (lower.contains("certificate required") || lower.contains("alert"))
        .then(|| format!("the node refused the connection after the handshake (does it want a client certificate, tls.cert and tls.key?) ({message})"))
}

/// The PEM text behind a reference: `file:PATH` (up to 1 MiB, a CA bundle) or any
/// secret reference (a key in an environment variable).
fn read_pem(reference: &SecretRef) -> Result<Vec<u8>, NodeError> {
    let Some(path) = reference.0.strip_prefix("file:") else {
        return Ok(secret::resolve(reference)?.into_bytes());
    };
    let fail = |message: String| NodeError::Secret {
        reference: reference.0.clone(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open {path}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read {path}: {e}")))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(fail(format!(
            "{path} is larger than {MAX_PEM_BYTES} bytes; not a PEM bundle"
        )));
    }
    Ok(bytes)
}

/// The certificates of a PEM bundle; an error when it holds none.
fn certificates(pem: &[u8]) -> Result<Vec<Certificate>, String> {
    let marker = b"-----BEGIN CERTIFICATE-----";
    if !pem.windows(marker.len()).any(|w| w == marker) {
        return Err("not PEM: no `-----BEGIN CERTIFICATE-----` block".to_owned());
    }
    match Certificate::stack_from_pem(pem) {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err("not PEM: no certificate could be read".to_owned()),
        Err(e) => Err(format!("not a PEM certificate: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_of_an_address_is_what_a_certificate_names() {
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("cache-1.internal:6380"), "cache-1.internal");
        assert_eq!(host_of("[::1]:6379"), "::1");
    }

    #[test]
    fn handshake_failures_say_what_failed() {
        let expired = "error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:1889: (certificate has expired)";
        assert!(handshake_failure(expired, "a").starts_with("the node's certificate has expired ("));
        let other = "error:0A000086:SSL routines::certificate verify failed (Hostname mismatch)";
        assert!(handshake_failure(other, "cache-1").contains("is not for `cache-1`"));
        let ca = "certificate verify failed (unable to get local issuer certificate)";
        assert!(handshake_failure(ca, "a").contains("not signed by a CA of tls.ca"));
        let plain = "error:0A00010B:SSL routines:ssl3_get_record:wrong version number";
        assert!(handshake_failure(plain, "a").contains("does not speak TLS"));
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "hello\n").unwrap();
        let tls = Tls {
            ca: SecretRef(format!("file:{}", path.display())),
            cert: None,
            key: None,
            server_name: None,
        };
        let e = connector("n:1", &tls).unwrap_err().to_string();
        assert!(e.contains("not PEM"), "{e}");
        assert!(e.starts_with("n:1: TLS: tls.ca file:"), "{e}");
    }
}
