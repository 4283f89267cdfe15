//! `cacheflow import`: read running nodes and write the cluster file that describes
//! them (engine, version, the parameters that differ from that version's catalog
//! defaults, nodes with roles and shards from replication, auth as a secret reference,
//! `tls` as the references it was reached with).
//! Every node is read before anything is written: a node that is down or refuses the
//! credentials given fails the import with nothing written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::edges::nodes::fleet::{self, SnapshotOptions, Target};
use crate::edges::nodes::memcached::MemcachedDriver;
use crate::edges::nodes::redis::RedisDriver;
use crate::edges::nodes::NodeDriver;
use crate::pure::catalog::{known_versions, CatalogId, Engine, Product};
use crate::pure::live::NodeLive;
use crate::pure::spec::model::{Auth, Tls};

/// What to import.
pub struct ImportRequest {
    pub cluster: String,
    pub engine: Engine,
    pub addresses: Vec<String>,
    /// `--engine-version`: the catalog version to use instead of the node's.
    pub version: Option<String>,
    pub auth: Option<Auth>,
    /// Reach the nodes over TLS with these references, and write them as `spec.tls`.
    pub tls: Option<Tls>,
    pub output: PathBuf,
    pub timeout: Duration,
}

/// What an import wrote, and the notes it has for the operator (stderr).
pub struct Imported {
    pub files: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// One node as read.
struct Read {
    address: String,
    live: NodeLive,
    /// Redis: `INFO server` and `INFO replication` fields.
    info: BTreeMap<String, String>,
}

pub fn import(req: &ImportRequest) -> Result<Imported, String> {
    if !valid_name(&req.cluster) {
        return Err(format!(
            "`{}` is not a cluster name: lower-case letters, digits and dashes, at most 63 characters",
            req.cluster
        ));
    }
    if req.addresses.is_empty() {
        return Err("give at least one node address".to_owned());
    }
    let cluster_file = req
        .output
        .join("clusters")
        .join(format!("{}.yaml", req.cluster));
    if cluster_file.exists() {
        return Err(format!(
            "{} already exists: import adds a cluster and never overwrites one",
            cluster_file.display()
        ));
    }
    let reads = read_nodes(req)?;
    let (text, notes) = compose(req, &reads)?;

    let mut files = Vec::new();
    let settings = req.output.join("cacheflow.yaml");
    std::fs::create_dir_all(req.output.join("clusters")).map_err(|e| {
        format!(
            "cannot create {}: {e}",
            req.output.join("clusters").display()
        )
    })?;
    if !settings.exists() {
        write_new(&settings, SETTINGS)?;
        files.push(settings);
    }
    write_new(&cluster_file, &text)?;
    files.push(cluster_file);
    Ok(Imported { files, notes })
}

const SETTINGS: &str =
    "apiVersion: cacheflow/v1\nkind: Settings\nmetadata:\n  name: settings\nspec: {}\n";

fn write_new(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_nodes(req: &ImportRequest) -> Result<Vec<Read>, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let mut targets = Vec::new();
        let mut redis = Vec::new();
        for (i, address) in req.addresses.iter().enumerate() {
            let driver: Arc<dyn NodeDriver> = match req.engine {
                Engine::Redis => {
                    let d = Arc::new(
                        RedisDriver::new(address, req.auth.as_ref(), req.timeout)
                            .with_tls(req.tls.clone()),
                    );
                    redis.push(d.clone());
                    d
                }
                Engine::Memcached => Arc::new(
                    MemcachedDriver::new(address.clone())
                        .with_timeout(req.timeout)
                        .with_auth(req.auth.clone())
                        .with_tls(req.tls.clone()),
                ),
            };
            targets.push(Target::new(format!("{i:06}"), req.cluster.clone(), driver));
        }
        let state = fleet::snapshot(
            targets,
            SnapshotOptions {
                concurrency: 64,
                timeout: req.timeout,
            },
        )
        .await;
        let mut reads = Vec::new();
        let mut errors = Vec::new();
        for (i, address) in req.addresses.iter().enumerate() {
            let live = state
                .nodes
                .get(&format!("{i:06}"))
                .cloned()
                .unwrap_or_default();
            if !live.reachable {
                errors.push(live.error.unwrap_or_else(|| format!("{address}: not read")));
                continue;
            }
            let info = match redis.get(i) {
                Some(d) => match d.server_and_replication().await {
                    Ok(info) => info,
                    Err(e) => {
                        errors.push(e.to_string());
                        continue;
                    }
                },
                None => BTreeMap::new(),
            };
            reads.push(Read {
                address: address.clone(),
                live,
                info,
            });
        }
        if errors.is_empty() {
            Ok(reads)
        } else {
            Err(format!(
                "cannot read every node; nothing written:\n  {}",
                errors.join("\n  ")
            ))
        }
    })
}

/// The cluster file for `reads`, and the notes for the operator.
fn compose(req: &ImportRequest, reads: &[Read]) -> Result<(String, Vec<String>), String> {
    let mut notes = Vec::new();
    let first = &reads[0];
    let product = match req.engine {
        Engine::Memcached => Product::Memcached,
        Engine::Redis => {
            let valkey = |r: &Read| {
                r.info.contains_key("valkey_version")
                    || r.info.get("server_name").is_some_and(|n| n == "valkey")
            };
            if reads.iter().all(valkey) {
                Product::Valkey
            } else if reads.iter().any(valkey) {
                return Err(
                    "the nodes mix Redis and Valkey: import them as two clusters".to_owned(),
                );
            } else {
                Product::Redis
            }
        }
    };
    let node_version = |r: &Read| {
        r.info
            .get("valkey_version")
            .cloned()
            .or_else(|| r.live.version.clone())
            .unwrap_or_default()
    };
    let catalog = match &req.version {
        Some(v) => CatalogId::select(product, Some(v)).map_err(|e| e.to_string())?,
        None => {
            let v = node_version(first);
            let wanted = parse_mm(&v).ok_or_else(|| {
                format!("{}: reports version `{v}`, not a version", first.address)
            })?;
            let known: Vec<(u32, u32, &str)> = known_versions(product)
                .into_iter()
                .filter_map(|k| parse_mm(k).map(|(a, b)| (a, b, k)))
                .collect();
            let pick = known
                .iter()
                .filter(|(a, b, _)| (*a, *b) <= wanted)
                .max()
                .or_else(|| known.iter().min())
                .map(|(_, _, k)| *k)
                .ok_or_else(|| format!("no catalog for {product}"))?;
            let id = CatalogId::select(product, Some(pick)).map_err(|e| e.to_string())?;
            if (wanted.0, wanted.1) != parse_mm(pick).unwrap_or_default() {
                notes.push(format!(
                    "{} {v} has no catalog; using the nearest lower known one, {pick} (known: {})",
                    product.title(),
                    known_versions(product).join(", ")
                ));
            }
            id
        }
    };
    let others: Vec<&str> = reads
        .iter()
        .filter(|r| parse_mm(&node_version(r)) != parse_mm(&node_version(first)))
        .map(|r| r.address.as_str())
        .collect();
    if !others.is_empty() {
        notes.push(format!(
            "{} report(s) another version than {}: {}",
            others.join(", "),
            first.address,
            node_version(first)
        ));
    }

    // Parameters: those every node reports alike and that differ from the catalog's
    // default. Those that differ between nodes (port, replicaof, ...) are per node and
    // have no place in a cluster's parameters.
    let cat = catalog.get();
    let mut parameters = BTreeMap::new();
    let (mut per_node, mut no_default) = (Vec::new(), 0usize);
    for (name, value) in &first.live.parameters {
        let Some(spec) = cat.get(name) else { continue };
        if spec.secret || PER_NODE.contains(&name.as_str()) {
            continue;
        }
        if !reads.iter().all(|r| {
            r.live
                .parameters
                .get(name)
                .is_some_and(|v| cat.same(name, v, &normal(cat, name, value)))
        }) {
            per_node.push(name.clone());
            continue;
        }
        let Some(default) = &spec.default else {
            no_default += 1;
            continue;
        };
        if cat.same(name, value, &normal(cat, name, default)) {
            continue;
        }
        // Only a value the catalog takes back (what validate will check).
        if cat
            .normalize(name, &serde_json::Value::String(value.clone()))
            .is_ok()
        {
            parameters.insert(name.clone(), value.clone());
        }
    }
    if !per_node.is_empty() {
        notes.push(format!(
            "left out, as they differ between the nodes: {}",
            per_node.join(", ")
        ));
    }
    if no_default > 0 {
        notes.push(format!(
            "left out {no_default} parameter(s) the {} {} catalog records no default for",
            product.title(),
            catalog.version()
        ));
    }

    // Nodes, and shards from replication: a replica belongs to its primary's shard.
    let ids: Vec<String> = reads
        .iter()
        .map(|r| node_id(&req.cluster, &r.address))
        .collect();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n  name: {}",
        req.cluster
    );
    let _ = writeln!(
        text,
        "spec:\n  engine: {}\n  version: \"{}\"",
        product.as_str(),
        catalog.version()
    );
    if !parameters.is_empty() {
        text.push_str("  parameters:\n");
        for (name, value) in &parameters {
            let _ = writeln!(text, "    {name}: {}", quoted(value));
        }
    }
    if let Some(auth) = &req.auth {
        text.push_str("  auth:\n");
        if let Some(user) = &auth.username {
            let _ = writeln!(text, "    username: {}", quoted(user));
        }
        let _ = writeln!(text, "    password: {}", quoted(&auth.password.0));
    }
    if let Some(tls) = &req.tls {
        text.push_str("  tls:\n");
        let _ = writeln!(text, "    ca: {}", quoted(&tls.ca.0));
        if let Some(cert) = &tls.cert {
            let _ = writeln!(text, "    cert: {}", quoted(&cert.0));
        }
        if let Some(key) = &tls.key {
            let _ = writeln!(text, "    key: {}", quoted(&key.0));
        }
        if let Some(name) = &tls.server_name {
            let _ = writeln!(text, "    serverName: {}", quoted(name));
        }
    }
    text.push_str("  nodes:\n");
    for (i, r) in reads.iter().enumerate() {
        let id = &ids[i];
        if req.engine == Engine::Memcached {
            let _ = writeln!(
                text,
                "    - {{ id: {id}, address: {} }}",
                quoted(&r.address)
            );
            continue;
        }
        let replica = r.info.get("role").is_some_and(|x| x == "slave");
        let shard = if replica {
            let host = r.info.get("master_host").cloned().unwrap_or_default();
            let port = r.info.get("master_port").cloned().unwrap_or_default();
            let primary = reads
                .iter()
                .position(|p| same_address(&p.address, &host, &port))
                .ok_or_else(|| {
                    format!(
                        "{} replicates {host}:{port}, which is not among the addresses given; import its primary with it",
                        r.address
                    )
                })?;
            ids[primary].clone()
        } else {
            id.clone()
        };
        let role = if replica { "replica" } else { "primary" };
        let _ = writeln!(
            text,
            "    - {{ id: {id}, address: {}, shard: {shard}, role: {role} }}",
            quoted(&r.address)
        );
    }
    Ok((text, notes))
}

/// Parameters that say where one node listens: its own, even when a single node is
/// imported, so never a cluster's.
const PER_NODE: &[&str] = &[
    "port",
    "tls-port",
    "bind",
    "unixsocket",
    "replicaof",
    "slaveof",
    "tcpport",
    "udpport",
    "inter",
    "domain_socket",
];

fn normal(cat: &crate::pure::catalog::Catalog, name: &str, value: &str) -> String {
    cat.normalize(name, &serde_json::Value::String(value.to_owned()))
        .unwrap_or_else(|_| value.to_owned())
}

/// A YAML double-quoted scalar (JSON's string syntax is YAML's).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn parse_mm(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether `address` (as given) is `host:port` as a replica names its primary.
fn same_address(address: &str, host: &str, port: &str) -> bool {
    let Some((h, p)) = address.rsplit_once(':') else {
        return false;
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    p == port && (h.eq_ignore_ascii_case(host) || (is_local(h) && is_local(host)))
}

fn is_local(h: &str) -> bool {
    matches!(h, "127.0.0.1" | "localhost" | "::1")
}

/// A node id from the cluster name and the address: `cache-10-0-0-1-6379`.
pub fn node_id(cluster: &str, address: &str) -> String {
    let mut id = format!("{cluster}-");
    for c in address.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            id.push(c);
        } else if !id.ends_with('-') {
            id.push('-');
        }
    }
    let mut id: String = id.chars().take(63).collect();
    while id.ends_with('-') {
        id.pop();
    }
    id
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_come_from_the_address() {
        assert_eq!(node_id("cache", "10.0.0.1:6379"), "cache-10-0-0-1-6379");
        assert_eq!(node_id("c", "[::1]:7000"), "c-1-7000");
        assert!(same_address("127.0.0.1:7000", "localhost", "7000"));
        assert!(!same_address("127.0.0.1:7000", "127.0.0.1", "7001"));
        assert_eq!(parse_mm("7.0.15"), Some((7, 0)));
    }
}
