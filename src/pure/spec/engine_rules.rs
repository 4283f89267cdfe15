//! Rules the engines enforce across parameters: combinations a server refuses to start
//! with although each value is in its range, checked at `validate` so they never reach
//! a rollout. Each rule is the engine's own startup check, quoted in its message:
//!
//! - memcached 1.6 (`memcached.c`, `main()` after the options are parsed; the same from
//!   1.6.0 to 1.6.45): `item_size_max` at most half of `maxbytes`; `slab_chunk_max` at
//!   most `item_size_max` and dividing it and the 1 MiB slab page; `hot_lru_pct +
//!   warm_lru_pct` at most 80; `temporary_ttl` (the TEMP LRU) only with the LRU
//!   maintainer; with authentication (`-Y`), the ASCII protocol only and no UDP.
//! - Redis 6.2 to 8.0 and Valkey 7.2 and 8.0: no `replicaof` with `cluster-enabled`
//!   (`config.c`, the sanity checks after a config file is read); some listener among
//!   `port`, `tls-port` and `unixsocket` (`server.c`, `initListeners`: "Configured to
//!   not listen anywhere"); `shutdown-on-sigint`/`-sigterm` not both `save` and
//!   `nosave` (`config.c`, `isValidShutdownOnSigFlags`, 7.0 on).
//!
//! A parameter the cluster does not declare counts with the engine's default (the
//! catalog's for Redis and Valkey, `memcached.c`'s `settings_init` for memcached), and
//! the message says so: declaring it is the way to say the nodes run another value.
//! Memcached's extstore rules need `ext_path`, which no catalog holds: not checked.

use std::collections::BTreeMap;

use super::model::Param;
use crate::pure::catalog::{CatalogId, Engine};

/// A combination the engine refuses: the parameter the error points at, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub param: &'static str,
    pub message: String,
}

/// memcached's defaults (`memcached.c`, `settings_init`).
const MC_MAXBYTES: u64 = 64 * 1024 * 1024;
const MC_ITEM_SIZE_MAX: u64 = 1024 * 1024;
const MC_SLAB_PAGE_SIZE: u64 = 1024 * 1024;
const MC_SLAB_CHUNK_MAX: u64 = MC_SLAB_PAGE_SIZE / 2;
const MC_HOT_LRU_PCT: u64 = 20;
const MC_WARM_LRU_PCT: u64 = 40;

/// The combinations of `params` (normalised values) the cluster's engine refuses to
/// start with. `auth`: the cluster declares authentication.
pub(super) fn check(
    catalog: CatalogId,
    params: &BTreeMap<String, Param>,
    auth: bool,
) -> Vec<Refusal> {
    let values = Values { catalog, params };
    match catalog.product().engine() {
        Engine::Memcached => memcached(&values, auth),
        Engine::Redis => redis(&values),
    }
}

/// The values the engine would run: declared, or its default.
struct Values<'a> {
    catalog: CatalogId,
    params: &'a BTreeMap<String, Param>,
}

impl Values<'_> {
    fn declared(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .filter(|p| !p.unchecked)
            .map(|p| p.value.as_str())
    }

    /// A number, declared or the default given: the value and how the message shows it.
    fn number(&self, name: &str, default: u64) -> Option<(u64, String)> {
        match self.declared(name) {
            Some(v) => Some((v.parse().ok()?, format!("`{name}` ({v})"))),
            None => Some((default, format!("`{name}` ({default}, the default)"))),
        }
    }

    /// A text value, declared or the catalog's default.
    fn text(&self, name: &str) -> Option<(String, String)> {
        match self.declared(name) {
            Some(v) => Some((v.to_owned(), format!("`{name}` ({v})"))),
            None => {
                let d = self.catalog.get().get(name)?.default.clone()?;
                let shown = format!("`{name}` ({}, the default)", quoted(&d));
                Some((d, shown))
            }
        }
    }
}

fn quoted(v: &str) -> String {
    if v.is_empty() {
        "\"\"".to_owned()
    } else {
        v.to_owned()
    }
}

fn refuse(param: &'static str, what: String, engine: &str, says: &str) -> Refusal {
    Refusal {
        param,
        message: format!("{what}: {engine} refuses to start with this (\"{says}\")"),
    }
}

fn memcached(v: &Values, auth: bool) -> Vec<Refusal> {
    let mut out = Vec::new();
    const MC: &str = "memcached";
    let item = v.number("item_size_max", MC_ITEM_SIZE_MAX);
    let maxbytes = v.number("maxbytes", MC_MAXBYTES);
    if let (Some((item, item_shown)), Some((max, max_shown))) = (&item, &maxbytes) {
        if *item > max / 2 {
            out.push(refuse(
                "item_size_max",
                format!("{item_shown} is more than half of {max_shown}"),
                MC,
                "Cannot set item size limit higher than 1/2 of memory max.",
            ));
        }
    }
    let chunk = v.number("slab_chunk_max", MC_SLAB_CHUNK_MAX);
    if let (Some((item, item_shown)), Some((chunk, chunk_shown))) = (&item, &chunk) {
        let at = if v.declared("slab_chunk_max").is_some() {
            "slab_chunk_max"
        } else {
            "item_size_max"
        };
        if chunk > item {
            out.push(refuse(
                at,
                format!("{chunk_shown} is larger than {item_shown}"),
                MC,
                &format!(
                    "slab_chunk_max (bytes: {chunk}) cannot be larger than -I (item_size_max {item})"
                ),
            ));
        } else if !item.is_multiple_of(*chunk) {
            out.push(refuse(
                at,
                format!("{item_shown} is not a multiple of {chunk_shown}"),
                MC,
                &format!(
                    "-I (item_size_max: {item}) must be evenly divisible by slab_chunk_max (bytes: {chunk})"
                ),
            ));
        }
        if !MC_SLAB_PAGE_SIZE.is_multiple_of(*chunk) {
            out.push(refuse(
                "slab_chunk_max",
                format!("{chunk_shown} does not divide the slab page size ({MC_SLAB_PAGE_SIZE})"),
                MC,
                &format!(
                    "slab_chunk_max (bytes: {chunk}) must divide evenly into {MC_SLAB_PAGE_SIZE} (slab_page_size)"
                ),
            ));
        }
    }
    let hot = v.number("hot_lru_pct", MC_HOT_LRU_PCT);
    let warm = v.number("warm_lru_pct", MC_WARM_LRU_PCT);
    if let (Some((hot, hot_shown)), Some((warm, warm_shown))) = (hot, warm) {
        if hot + warm > 80 {
            let at = if v.declared("hot_lru_pct").is_some() {
                "hot_lru_pct"
            } else {
                "warm_lru_pct"
            };
            out.push(refuse(
                at,
                format!("{hot_shown} + {warm_shown} is more than 80"),
                MC,
                "hot_lru_pct + warm_lru_pct cannot be more than 80% combined",
            ));
        }
    }
    let temp_lru = v.declared("temporary_ttl").is_some() || v.declared("temp_lru") == Some("yes");
    if temp_lru && v.declared("lru_maintainer_thread") == Some("no") {
        let by = if v.declared("temporary_ttl").is_some() {
            "`temporary_ttl` (which turns the TEMP LRU on)"
        } else {
            "`temp_lru` (yes)"
        };
        out.push(refuse(
            "lru_maintainer_thread",
            format!("{by} needs `lru_maintainer_thread`, declared no"),
            MC,
            "temporary_ttl requires lru_maintainer to be enabled",
        ));
    }
    if auth {
        if let Some(protocol) = v.declared("binding_protocol").filter(|p| *p != "ascii") {
            out.push(refuse(
                "binding_protocol",
                format!("`binding_protocol` ({protocol}) with `auth` (memcached's -Y takes the ASCII protocol only)"),
                MC,
                "ERROR: You cannot allow the BINARY protocol while using ascii authentication tokens.",
            ));
        }
        if let Some(port) = v.declared("udpport").filter(|p| *p != "0") {
            out.push(refuse(
                "udpport",
                format!("`udpport` ({port}) with `auth`"),
                MC,
                "Cannot use UDP with ascii authentication enabled (-U 0 to disable)",
            ));
        }
    }
    out
}

fn redis(v: &Values) -> Vec<Refusal> {
    let mut out = Vec::new();
    let engine = v.catalog.product().title();
    if v.declared("cluster-enabled") == Some("yes") {
        for name in ["replicaof", "slaveof"] {
            if let Some(primary) = v.declared(name).filter(|p| !p.is_empty()) {
                out.push(refuse(
                    name,
                    format!("`{name}` ({primary}) with `cluster-enabled` (yes): a cluster node's replication is set by CLUSTER REPLICATE"),
                    engine,
                    "replicaof directive not allowed in cluster mode",
                ));
            }
        }
    }
    if let (Some((port, port_shown)), Some((tls, tls_shown)), Some((sock, sock_shown))) =
        (v.text("port"), v.text("tls-port"), v.text("unixsocket"))
    {
        if port == "0" && tls == "0" && sock.is_empty() && v.declared("port").is_some() {
            out.push(refuse(
                "port",
                format!("{port_shown}, {tls_shown} and {sock_shown} leave no listener"),
                engine,
                "Configured to not listen anywhere, exiting.",
            ));
        }
    }
    for name in ["shutdown-on-sigint", "shutdown-on-sigterm"] {
        let Some(flags) = v.declared(name) else {
            continue;
        };
        let words: Vec<&str> = flags.split_whitespace().collect();
        if words.contains(&"save") && words.contains(&"nosave") {
            out.push(refuse(
                name,
                format!("`{name}` ({flags}) holds both save and nosave"),
                engine,
                "shutdown options SAVE and NOSAVE can't be used simultaneously",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::pure::spec::files::FileSet;

    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        let set = FileSet {
            commit: None,
            files: files
                .iter()
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
            problems: Vec::new(),
        };
        match crate::pure::spec::load(&set) {
            Ok(_) => Vec::new(),
            Err(diags) => diags.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn cluster(engine: &str, extra: &str, params: &str) -> String {
        format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: c}}\nspec:\n  engine: {engine}\n{extra}  parameters: {{{params}}}\n  nodes:\n    - {{id: n1, address: '10.0.0.1:6379', shard: s1}}\n"
        )
    }

    #[test]
    fn a_value_inherited_from_a_profile_is_reported_at_the_profile() {
        let profile = "apiVersion: cacheflow/v1\nkind: Profile\nmetadata: {name: big}\nspec:\n  engine: memcached\n  parameters: {item_size_max: 64mb}\n";
        let c = cluster("memcached", "  profile: big\n", "maxbytes: 64mb");
        assert_eq!(
            errors(&[("profiles/big.yaml", profile), ("clusters/c.yaml", &c)]),
            ["clusters/c.yaml:6:12: `item_size_max` (67108864) is more than half of `maxbytes` (67108864): memcached refuses to start with this (\"Cannot set item size limit higher than 1/2 of memory max.\") (`item_size_max` from profile `big`) (at /spec/profile)"]
        );
    }

    #[test]
    fn valkey_is_named_as_itself_and_values_inside_the_rules_pass() {
        let c = cluster(
            "valkey",
            "  version: '8.0'\n  mode: cluster\n",
            "cluster-enabled: yes, replicaof: '10.0.0.9 6379'",
        );
        assert_eq!(
            errors(&[("clusters/c.yaml", &c)]),
            ["clusters/c.yaml:8:49: `replicaof` (10.0.0.9 6379) with `cluster-enabled` (yes): a cluster node's replication is set by CLUSTER REPLICATE: Valkey refuses to start with this (\"replicaof directive not allowed in cluster mode\") (at /spec/parameters/replicaof)"]
        );
        for (engine, params) in [
            (
                "memcached",
                "maxbytes: 2gb, item_size_max: 1gb, slab_chunk_max: 512kb",
            ),
            (
                "memcached",
                "item_size_max: 512kb, hot_lru_pct: 30, warm_lru_pct: 50",
            ),
            ("memcached", "temporary_ttl: 60, lru_maintainer_thread: yes"),
            ("redis", "cluster-enabled: yes, replicaof: ''"),
            ("redis", "port: 0, tls-port: 6380"),
            ("redis", "shutdown-on-sigint: save now force"),
        ] {
            let mode = match params.starts_with("cluster-enabled") {
                true => "  mode: cluster\n",
                false => "",
            };
            let c = cluster(engine, mode, params);
            assert_eq!(
                errors(&[("clusters/c.yaml", &c)]),
                Vec::<String>::new(),
                "{params}"
            );
        }
    }
}
