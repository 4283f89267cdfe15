//! The engine catalogs (`schemas/engines/*.json`) held against real servers: every
//! parameter exists, the `runtime` flags are true both ways (run-time ones are accepted,
//! start-only ones refused), and `Catalog::normalize` produces exactly the text the
//! engine itself reports for the value sent.

use std::collections::BTreeMap;

use cacheflow::pure::catalog::{
    catalog, normalize_value, DurationUnit, Engine, ParamSpec, ParamType,
};
use serde_json::Value;

use crate::support::servers::{memcached_error, MemcachedServer, RedisOptions, RedisServer, Reply};

// ------------------------------------------------------------------------------------
// Value choice, from the catalog type and the current value
// ------------------------------------------------------------------------------------

/// An integer in `[min, max]` different from `current` when possible: one below (the
/// safe side for limits such as maxclients), else one above.
fn nudge(current: i64, min: Option<i64>, max: Option<i64>) -> i64 {
    let min = min.unwrap_or(i64::MIN);
    let max = max.unwrap_or(i64::MAX);
    if current > min && current - 1 <= max {
        current - 1
    } else if current < max {
        (current + 1).max(min)
    } else {
        current
    }
}

/// A size spelled the way a person would (`128mb`, `2kb`) so that sending it also
/// exercises the unit parsing.
fn spell_size(bytes: u64) -> String {
    if bytes != 0 && bytes.is_multiple_of(1 << 20) {
        format!("{}mb", bytes >> 20)
    } else if bytes != 0 && bytes.is_multiple_of(1024) {
        format!("{}kb", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

fn spell_duration(n: i64, unit: DurationUnit) -> String {
    match unit {
        DurationUnit::Us => format!("{n}us"),
        DurationUnit::Ms if n != 0 && n % 1000 == 0 => format!("{}s", n / 1000),
        DurationUnit::Ms => format!("{n}ms"),
        DurationUnit::S => format!("{n}s"),
        DurationUnit::Min => format!("{n}m"),
    }
}

/// A valid value for `spec`, different from `current` where the type allows it.
fn other_value(spec: &ParamSpec, current: &str) -> String {
    match &spec.ty {
        ParamType::Bool {
            true_word,
            false_word,
        } => if current == true_word {
            false_word
        } else {
            true_word
        }
        .clone(),
        ParamType::Enum { values } => values
            .iter()
            .find(|v| !v.eq_ignore_ascii_case(current))
            .unwrap_or(&values[0])
            .clone(),
        ParamType::Int { min, max } => {
            nudge(current.parse().expect("integer"), *min, *max).to_string()
        }
        ParamType::Duration { unit, min, max } => {
            spell_duration(nudge(current.parse().expect("integer"), *min, *max), *unit)
        }
        ParamType::Size { min, max, percent } => {
            if *percent {
                return if current == "50%" { "40%" } else { "50%" }.to_owned();
            }
            let cur: u64 = current.parse().expect("size in bytes");
            let unit = spec.flag_unit.unwrap_or(1024);
            let doubled = if cur == 0 {
                unit
            } else {
                cur.saturating_mul(2)
            };
            let v = if max.is_none_or(|m| doubled <= m) {
                doubled
            } else {
                (cur / 2).max(min.unwrap_or(0))
            };
            spell_size(v)
        }
        ParamType::Float { min, max } => {
            let cur: f64 = current.parse().expect("number");
            let v = match max {
                Some(m) => (cur + m) / 2.0,
                None => cur * 2.0,
            };
            let v = (v * 100.0).round() / 100.0;
            let v = min.map_or(v, |m| v.max(m));
            format!("{v}")
        }
        ParamType::List { .. } | ParamType::String { .. } => current.to_owned(),
    }
}

// ------------------------------------------------------------------------------------
// Redis
// ------------------------------------------------------------------------------------

/// Parameters the test sets to their current value instead of a new one, which still
/// proves the engine takes them at run time:
/// - dangerous to change in a test: where the server listens and writes, who may log
///   in, whom it replicates;
/// - TLS switches, which need certificates the test server does not have;
/// - `activedefrag`, which only builds with Redis's own jemalloc can turn on (Debian's
///   redis-server answers "Active defragmentation cannot be enabled").
const REDIS_SET_BACK: &[&str] = &[
    "port",
    "bind",
    "dir",
    "dbfilename",
    "logfile",
    "unixsocket",
    "requirepass",
    "masterauth",
    "masteruser",
    "replicaof",
    "slaveof",
    "tls-port",
    "tls-cluster",
    "tls-replication",
    "activedefrag",
];

fn redis_server() -> RedisServer {
    // Protected configs (dir, dbfilename) are refused by CONFIG SET unless this allows
    // them; the refusal itself is tested separately on a default server.
    RedisServer::start_with(RedisOptions::new().config("enable-protected-configs", "yes"))
}

#[test]
fn every_redis_catalog_parameter_exists_in_config_get_of_a_real_redis_7() {
    let server = RedisServer::start();
    let live = server.client().config_get("*");
    let cat = catalog(Engine::Redis);
    let missing: Vec<&String> = cat
        .parameters
        .keys()
        .filter(|name| !live.contains_key(*name))
        .collect();
    assert!(missing.is_empty(), "not in CONFIG GET *: {missing:?}");
    let unknown: Vec<&String> = live.keys().filter(|name| cat.get(name).is_none()).collect();
    assert!(
        unknown.is_empty(),
        "CONFIG GET * has parameters the catalog lacks: {unknown:?}"
    );
}

/// The parameters the test servers' configuration sets (support/servers.rs), so their
/// reported value is not the engine's default.
const SET_BY_THE_TEST_SERVER: &[&str] = &[
    "port",
    "bind",
    "dir",
    "save",
    "appendonly",
    "daemonize",
    "logfile",
    "tcpport",
    "udpport",
    "inter",
];

/// The parameters whose catalog default is not what a running server reports.
fn defaults_unlike(
    cat: &cacheflow::pure::catalog::Catalog,
    live: &BTreeMap<String, String>,
) -> Vec<String> {
    cat.parameters
        .iter()
        .filter(|(name, _)| !SET_BY_THE_TEST_SERVER.contains(&name.as_str()))
        .filter_map(|(name, spec)| {
            let default = spec.default.as_ref()?;
            let reported = live.get(name).cloned().unwrap_or_default();
            let n = |v: &str| cat.normalize(name, &Value::String(v.to_owned()));
            match (n(&reported), n(default)) {
                (Ok(a), Ok(b)) if a == b => None,
                _ => Some(format!("{name}: catalog `{default}`, server `{reported}`")),
            }
        })
        .collect()
}

#[test]
fn every_redis_catalog_default_is_what_a_default_redis_7_reports() {
    let server = RedisServer::start();
    let live = server.client().config_get("*");
    let cat = catalog(Engine::Redis);
    let with_default = cat
        .parameters
        .values()
        .filter(|s| s.default.is_some())
        .count();
    assert!(with_default > 150, "only {with_default} defaults");
    let unlike = defaults_unlike(cat, &live);
    assert!(
        unlike.is_empty(),
        "defaults unlike the server's: {unlike:#?}"
    );
    // Drift counts a declared value the config file leaves out as persisted when it is
    // the default: the defaults behind macros or special configs must be there too.
    for name in [
        "hz",
        "notify-keyspace-events",
        "client-output-buffer-limit",
        "oom-score-adj-values",
        "latency-tracking-info-percentiles",
    ] {
        assert!(
            cat.get(name).and_then(|p| p.default.as_ref()).is_some(),
            "{name} has no default"
        );
    }
}

#[test]
fn every_memcached_catalog_default_is_what_a_default_memcached_1_6_reports() {
    let server = MemcachedServer::start();
    let settings = server.client().settings();
    let cat = catalog(Engine::Memcached);
    let with_default = cat
        .parameters
        .values()
        .filter(|s| s.default.is_some())
        .count();
    assert!(with_default >= 50, "only {with_default} defaults");
    let unlike = defaults_unlike(cat, &settings);
    assert!(
        unlike.is_empty(),
        "defaults unlike the server's: {unlike:#?}"
    );
}

#[test]
fn every_redis_runtime_parameter_is_accepted_by_config_set_and_reads_back_normalised() {
    let server = redis_server();
    let mut c = server.client();
    let cat = catalog(Engine::Redis);
    let live = c.config_get("*");
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, spec) in cat.parameters.iter().filter(|(_, s)| s.runtime) {
        let current = &live[name];
        // By the parameter's type: `Catalog::normalize` refuses credentials (a config
        // never sets them), but their catalog types are held against Redis all the same.
        let normalize = |text: &str| normalize_value(&spec.ty, &Value::String(text.to_owned()));
        let value = if REDIS_SET_BACK.contains(&name.as_str()) {
            // See REDIS_SET_BACK: set the current value back.
            normalize(current)
                .unwrap_or_else(|e| panic!("live value of {name} does not normalise: {e}"))
        } else {
            other_value(spec, current)
        };
        let expected = match normalize(&value) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!(
                    "{name}: chosen value `{value}` refused by catalog: {e}"
                ));
                continue;
            }
        };
        // Sizes go to Redis as written (`2kb`), so that its own unit parsing is held
        // against ours; Redis has no duration syntax, so durations go as the normalised
        // integer, as the driver sends them.
        let sent = match spec.ty {
            ParamType::Duration { .. } => expected.clone(),
            _ => value.clone(),
        };
        let reply = c.cmd(&["CONFIG", "SET", name, &sent]);
        if !reply.is_ok() {
            failures.push(format!("{name}: CONFIG SET `{sent}` answered {reply:?}"));
            continue;
        }
        let got = c.config_get(name).remove(name).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{name}: sent `{value}`, Redis reports `{got}`, catalog normalises to `{expected}`"
            ));
        }
        // Put the original back so one parameter does not disturb the next.
        let restore = c.cmd(&["CONFIG", "SET", name, current]);
        assert!(
            restore.is_ok(),
            "{name}: restoring `{current}`: {restore:?}"
        );
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 140, "only {checked} runtime parameters checked");
}

#[test]
fn every_redis_start_only_parameter_is_refused_by_config_set() {
    let server = redis_server();
    let mut c = server.client();
    let cat = catalog(Engine::Redis);
    let live = c.config_get("*");
    let mut failures = Vec::new();
    for (name, _) in cat.parameters.iter().filter(|(_, s)| !s.runtime) {
        // The current value: a start-only parameter must be refused even when unchanged.
        match c.cmd(&["CONFIG", "SET", name, &live[name]]) {
            Reply::Error(e) if e.contains("immutable") => {}
            other => failures.push(format!(
                "{name}: expected an immutable-config error, got {other:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn redis_protected_parameters_are_refused_unless_enable_protected_configs_allows_them() {
    let server = RedisServer::start();
    let mut c = server.client();
    let cat = catalog(Engine::Redis);
    let protected: Vec<&String> = cat
        .parameters
        .iter()
        .filter(|(_, s)| s.protected)
        .map(|(n, _)| n)
        .collect();
    assert!(protected.len() >= 2, "{protected:?}");
    let live = c.config_get("*");
    for name in protected {
        match c.cmd(&["CONFIG", "SET", name, &live[name]]) {
            Reply::Error(e) if e.contains("protected") => {}
            other => panic!("{name}: expected a protected-config error, got {other:?}"),
        }
    }
}

// ------------------------------------------------------------------------------------
// Memcached
// ------------------------------------------------------------------------------------

/// The value of `name` in the unit of its flag/command (`64mb` → `64` for `-m`).
fn in_flag_unit(spec: &ParamSpec, normalised: &str) -> String {
    match (spec.flag_unit, normalised.parse::<u64>()) {
        (Some(unit), Ok(n)) => {
            assert_eq!(n % unit, 0, "{normalised} is not a whole number of {unit}");
            (n / unit).to_string()
        }
        _ => spec
            .flag_values
            .as_ref()
            .and_then(|m| m.get(normalised).cloned())
            .unwrap_or_else(|| normalised.to_owned()),
    }
}

/// Fill `{}` with `value` and `{other}` with the value of parameter `other` in
/// `settings` (the server's current values).
fn fill(template: &str, value: &str, settings: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').expect("unclosed {") + open;
        let name = &rest[open + 1..close];
        if name.is_empty() {
            out.push_str(value);
        } else {
            out.push_str(
                settings
                    .get(name)
                    .unwrap_or_else(|| panic!("{template}: no setting {name}")),
            );
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Compare `reported` with `expected` after normalising both (memcached prints floats
/// with fixed decimals: `0.80`).
fn same_setting(name: &str, reported: &str, expected: &str) -> bool {
    let cat = catalog(Engine::Memcached);
    let n = |v: &str| cat.normalize(name, &Value::String(v.to_owned()));
    matches!((n(reported), n(expected)), (Ok(a), Ok(b)) if a == b)
}

#[test]
fn every_memcached_catalog_parameter_exists_in_stats_settings_of_a_real_memcached_1_6() {
    let server = MemcachedServer::start();
    let settings = server.client().settings();
    let cat = catalog(Engine::Memcached);
    let missing: Vec<&String> = cat
        .parameters
        .keys()
        .filter(|n| !settings.contains_key(*n))
        .collect();
    assert!(missing.is_empty(), "not in stats settings: {missing:?}");
    // Every reported value must also be one the catalog accepts.
    let bad: Vec<String> = cat
        .parameters
        .keys()
        .filter_map(|n| {
            cat.normalize(n, &Value::String(settings[n].clone()))
                .err()
                .map(|e| format!("{e}"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "default values the catalog refuses: {bad:?}"
    );
}

#[test]
fn every_memcached_runtime_parameter_changes_through_its_command() {
    let server = MemcachedServer::start();
    let mut c = server.client();
    let cat = catalog(Engine::Memcached);
    let mut failures = Vec::new();
    for (name, spec) in cat.parameters.iter().filter(|(_, s)| s.runtime) {
        let settings = c.settings();
        let current = &settings[name];
        let value = other_value(spec, current);
        let normalised = cat
            .normalize(name, &Value::String(value.clone()))
            .unwrap_or_else(|e| panic!("chosen value for {name} refused: {e}"));
        let command = match &spec.ty {
            ParamType::Bool { true_word, .. } => {
                let which = if normalised == *true_word {
                    &spec.command_true
                } else {
                    &spec.command_false
                };
                which
                    .clone()
                    .unwrap_or_else(|| panic!("{name}: no command to make it {normalised}"))
            }
            _ => fill(
                spec.command
                    .as_deref()
                    .expect("runtime parameter without command"),
                &in_flag_unit(spec, &normalised),
                &settings,
            ),
        };
        let reply = c.command(&command);
        if let Some(err) = memcached_error(&reply) {
            failures.push(format!("{name}: `{command}` answered {err}"));
            continue;
        }
        // Some changes land asynchronously (`lru_crawler disable` waits for the crawler
        // thread to stop), so the setting is polled for up to two seconds.
        let mut got = c.settings()[name].clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !same_setting(name, &got, &normalised) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            got = c.settings()[name].clone();
        }
        if !same_setting(name, &got, &normalised) {
            failures.push(format!(
                "{name}: `{command}` (value `{value}`) left stats settings at `{got}`, expected `{normalised}`"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Parameters the harness itself sets on the command line (port, listen address, UDP
/// off) or that would take the server off the network: not restarted with other values.
const MEMCACHED_HARNESS_OWNED: &[&str] = &["tcpport", "udpport", "inter", "domain_socket"];

/// Start-only values the type alone does not make valid: memcached refuses
/// `hashpower` outside 12..32 and a `tail_repair_time` between 1 and 9 s, though 0 is
/// their default.
const MEMCACHED_START_VALUES: &[(&str, &str)] =
    &[("hashpower_init", "16"), ("tail_repair_time", "30s")];

#[test]
fn every_memcached_start_only_parameter_takes_its_flag_at_start() {
    let defaults = MemcachedServer::start().client().settings();
    let cat = catalog(Engine::Memcached);
    let mut failures = Vec::new();
    let mut started = 0;
    for (name, spec) in cat.parameters.iter().filter(|(_, s)| !s.runtime) {
        assert!(
            spec.flag.is_some() || spec.flag_true.is_some() || spec.flag_false.is_some(),
            "start-only {name} has no flag"
        );
        if MEMCACHED_HARNESS_OWNED.contains(&name.as_str()) {
            continue;
        }
        let current = &defaults[name];
        let value = MEMCACHED_START_VALUES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| other_value(spec, current));
        let normalised = cat
            .normalize(name, &Value::String(value.clone()))
            .unwrap_or_else(|e| panic!("chosen value for {name} refused: {e}"));
        // The words the agent writes into a memcached options file.
        let words =
            cacheflow::flow::agent::conffile::start_words(name, spec, &normalised, &defaults)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .unwrap_or_else(|| panic!("{name}: no flag to make it {normalised}"));
        let args: Vec<&str> = words.split_whitespace().collect();
        let server = match MemcachedServer::try_start_with_args(&args) {
            Ok(s) => s,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        started += 1;
        let got = server.client().settings()[name].clone();
        if !same_setting(name, &got, &normalised) {
            failures.push(format!(
                "{name}: started with `{words}`, stats settings says `{got}`, expected `{normalised}` (default `{current}`)"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        started >= 20,
        "only {started} start-only parameters started"
    );
}

#[test]
fn memcached_dash_m_turns_evictions_off_and_nothing_else() {
    let spec = catalog(Engine::Memcached).get("evictions").unwrap();
    assert_eq!(spec.flag_false.as_deref(), Some("-M"));
    assert_eq!(spec.flag_true, None, "on is the default and has no flag");
    let plain = MemcachedServer::start().client().settings();
    let with_m = MemcachedServer::start_with_args(&["-M"])
        .client()
        .settings();
    assert_eq!(plain["evictions"], "on");
    assert_eq!(with_m["evictions"], "off");
    let changed: Vec<&String> = plain
        .keys()
        .filter(|k| !matches!(k.as_str(), "tcpport") && plain[*k] != with_m[*k])
        .collect();
    assert_eq!(changed, vec!["evictions"]);
}
