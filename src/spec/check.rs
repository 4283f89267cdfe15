//! Semantic checks a schema cannot express, and the building of the validated model:
//! kinds in their directories, names matching files, profiles that resolve, engine
//! parameters that exist and fit, unique node ids and addresses, one primary per shard,
//! stages that grow to 100%, durations that parse, and the repository's policies.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

use super::model::{
    Cluster, Desired, Gates, Managed, Millis, Node, Param, Profile, Role, RolloutPolicy, Settings,
    Stage,
};
use super::raw::{self, Kind, RawStage};
use super::{diagnostic, file_level, schema, Diagnostic, Parsed};
use crate::catalog::{self, Engine};

/// A compiled repository policy.
pub(super) struct Policy {
    path: String,
    title: String,
    validator: jsonschema::Validator,
}

/// Compile `policies/*.schema.json`; a broken policy is an error of its file.
pub(super) fn compile_policies(
    files: &[(&String, &String)],
    diags: &mut Vec<Diagnostic>,
) -> Vec<Policy> {
    let mut out = Vec::new();
    for (path, text) in files {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                let (line, column, message) = crate::spec::json_error_position(text, &e);
                diags.push(Diagnostic {
                    file: path.to_string(),
                    line,
                    column,
                    message: format!("not valid JSON: {message}"),
                    pointer: String::new(),
                });
                continue;
            }
        };
        match schema::compile_policy(&value) {
            Ok(validator) => {
                let title = value
                    .get("title")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .unwrap_or_else(|| path.to_string());
                out.push(Policy {
                    path: path.to_string(),
                    title,
                    validator,
                });
            }
            Err(e) => diags.push(file_level(path, format!("not a valid JSON Schema: {e}"))),
        }
    }
    out
}

struct Ctx<'a> {
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn at(&mut self, p: &Parsed, pointer: &str, message: impl Into<String>) {
        self.diags
            .push(diagnostic(&p.path, &p.located, pointer, false, message));
    }
    fn at_key(&mut self, p: &Parsed, pointer: &str, message: impl Into<String>) {
        self.diags
            .push(diagnostic(&p.path, &p.located, pointer, true, message));
    }
}

fn expected_kind(path: &str) -> Kind {
    if path.starts_with("profiles/") {
        Kind::Profile
    } else if path.starts_with("clusters/") {
        Kind::Cluster
    } else {
        Kind::Settings
    }
}

fn stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .unwrap_or(file)
}

fn spec_of<T: for<'de> Deserialize<'de>>(ctx: &mut Ctx, p: &Parsed) -> Option<T> {
    match T::deserialize(&p.doc.spec) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.at(p, "/spec", format!("unexpected spec shape: {e}"));
            None
        }
    }
}

/// Run every check and build the model. Errors go to `diags`; the returned value is only
/// meaningful when `diags` stays empty.
pub(super) fn build(
    commit: Option<String>,
    parsed: Vec<Parsed>,
    failed: &HashSet<String>,
    policies: &[Policy],
    diags: &mut Vec<Diagnostic>,
) -> Desired {
    let mut ctx = Ctx { diags };
    let mut settings_doc: Option<&Parsed> = None;
    let mut profile_docs: Vec<&Parsed> = Vec::new();
    let mut cluster_docs: Vec<&Parsed> = Vec::new();

    for p in &parsed {
        let expected = expected_kind(&p.path);
        if p.doc.kind != expected {
            let place = match expected {
                Kind::Settings => "cacheflow.yaml holds the Settings",
                Kind::Profile => "files under profiles/ hold Profiles",
                Kind::Cluster => "files under clusters/ hold Clusters",
            };
            ctx.at(
                p,
                "/kind",
                format!("kind `{}` in the wrong place: {place}", p.doc.kind.as_str()),
            );
            continue;
        }
        if expected == Kind::Profile && p.path.matches('/').count() > 1 {
            ctx.at(
                p,
                "/metadata/name",
                format!(
                    "profiles live directly in profiles/: move this file to profiles/{}.yaml",
                    stem(&p.path)
                ),
            );
            continue;
        }
        if expected != Kind::Settings && p.doc.metadata.name != stem(&p.path) {
            ctx.at(
                p,
                "/metadata/name",
                format!(
                    "name `{}` must match the file name `{}`",
                    p.doc.metadata.name,
                    stem(&p.path)
                ),
            );
            continue;
        }
        match expected {
            Kind::Settings => settings_doc = Some(p),
            Kind::Profile => profile_docs.push(p),
            Kind::Cluster => cluster_docs.push(p),
        }
    }

    let settings = settings_doc
        .map(|p| settings(&mut ctx, p))
        .unwrap_or_default();

    let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
    // The parameters of each profile as written, for policies (which see YAML types).
    let mut profile_raw: HashMap<String, BTreeMap<String, Value>> = HashMap::new();
    let mut profile_files: HashMap<String, String> = HashMap::new();
    for p in profile_docs {
        let name = p.doc.metadata.name.clone();
        if let Some(first) = profile_files.get(&name) {
            ctx.at(
                p,
                "/metadata/name",
                format!("profile `{name}` is also defined in {first}"),
            );
            continue;
        }
        profile_files.insert(name.clone(), p.path.clone());
        let Some(spec) = spec_of::<raw::ProfileSpec>(&mut ctx, p) else {
            continue;
        };
        let parameters = parameters(&mut ctx, p, spec.engine, &spec.parameters, Some(&name));
        profile_raw.insert(name.clone(), spec.parameters.clone());
        profiles.insert(
            name.clone(),
            Profile {
                name,
                file: p.path.clone(),
                engine: spec.engine,
                parameters,
            },
        );
    }

    let mut clusters: BTreeMap<String, Cluster> = BTreeMap::new();
    let mut cluster_files: HashMap<String, String> = HashMap::new();
    // node id / address → (file, line) of the first use, for uniqueness across clusters.
    let mut ids: HashMap<String, (String, usize)> = HashMap::new();
    let mut addresses: HashMap<String, (String, usize)> = HashMap::new();
    let mut effective: Vec<(&Parsed, Value)> = Vec::new();

    for p in cluster_docs {
        let name = p.doc.metadata.name.clone();
        if let Some(first) = cluster_files.get(&name) {
            ctx.at(
                p,
                "/metadata/name",
                format!("cluster `{name}` is also defined in {first}"),
            );
            continue;
        }
        cluster_files.insert(name.clone(), p.path.clone());
        let Some(spec) = spec_of::<raw::ClusterSpec>(&mut ctx, p) else {
            continue;
        };

        // Profile first, cluster overrides on top.
        let mut params: BTreeMap<String, Param> = BTreeMap::new();
        let mut raw_params: serde_json::Map<String, Value> = serde_json::Map::new();
        // A cluster whose profile is broken is not held to policies: its parameters are
        // unknown, and the profile's own errors say what to fix.
        let mut profile_broken = false;
        if let Some(profile_name) = &spec.profile {
            match profiles.get(profile_name) {
                Some(profile) if profile.engine != spec.engine => ctx.at(
                    p,
                    "/spec/profile",
                    format!(
                        "profile `{profile_name}` is for {}, this cluster runs {}",
                        profile.engine, spec.engine
                    ),
                ),
                Some(profile) => {
                    params.extend(profile.parameters.clone());
                    if let Some(raw) = profile_raw.get(profile_name) {
                        raw_params.extend(raw.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                None if profile_files.contains_key(profile_name)
                    || failed.contains(&format!("profiles/{profile_name}.yaml"))
                    || failed.contains(&format!("profiles/{profile_name}.yml")) =>
                {
                    // The profile exists but is itself invalid; its own errors say why.
                    profile_broken = true;
                }
                None => ctx.at(
                    p,
                    "/spec/profile",
                    format!("profile `{profile_name}` not found (expected profiles/{profile_name}.yaml)"),
                ),
            }
        }
        params.extend(parameters(&mut ctx, p, spec.engine, &spec.parameters, None));
        for (k, v) in &spec.parameters {
            raw_params.insert(k.clone(), v.clone());
        }

        let nodes = nodes(&mut ctx, p, &spec, &mut ids, &mut addresses);
        let rollout = rollout(
            &mut ctx,
            p,
            "/spec/rollout",
            &settings.rollout_defaults,
            spec.rollout.as_ref(),
        );

        if !policies.is_empty() && !profile_broken {
            let mut doc = p.located.value.clone();
            if let Some(spec_obj) = doc.get_mut("spec").and_then(Value::as_object_mut) {
                spec_obj.insert("parameters".into(), Value::Object(raw_params));
            }
            effective.push((p, doc));
        }

        clusters.insert(
            name.clone(),
            Cluster {
                name,
                file: p.path.clone(),
                labels: p.doc.metadata.labels.clone(),
                engine: spec.engine,
                version: spec.version.clone(),
                profile: spec.profile.clone(),
                parameters: params,
                auth: spec.auth.clone(),
                nodes,
                rollout,
            },
        );
    }

    for policy in policies {
        for (p, doc) in &effective {
            for f in schema::findings(&policy.validator, doc) {
                let inherited = f
                    .pointer
                    .strip_prefix("/spec/parameters/")
                    .map(|rest| rest.split('/').next().unwrap_or(rest))
                    .filter(|param| {
                        p.doc
                            .spec
                            .get("parameters")
                            .and_then(|m| m.get(*param))
                            .is_none()
                    })
                    .and_then(|_| p.doc.spec.get("profile").and_then(Value::as_str));
                let name = if policy.title == policy.path {
                    format!("`{}`", policy.path)
                } else {
                    format!("`{}` ({})", policy.title, policy.path)
                };
                let message = format!(
                    "violates policy {name}: {}{}",
                    f.message,
                    inherited
                        .map(|prof| format!(" (inherited from profile `{prof}`)"))
                        .unwrap_or_default()
                );
                if inherited.is_some() {
                    ctx.diags.push(Diagnostic {
                        pointer: f.pointer.clone(),
                        ..diagnostic(&p.path, &p.located, "/spec/profile", false, message)
                    });
                } else if f.at_key {
                    ctx.at_key(p, &f.pointer, message);
                } else {
                    ctx.at(p, &f.pointer, message);
                }
            }
        }
    }

    Desired {
        commit,
        settings,
        profiles,
        clusters,
    }
}

fn settings(ctx: &mut Ctx, p: &Parsed) -> Settings {
    let Some(spec) = spec_of::<raw::SettingsSpec>(ctx, p) else {
        return Settings::default();
    };
    let rollout_defaults = rollout(
        ctx,
        p,
        "/spec/rolloutDefaults",
        &RolloutPolicy::default(),
        spec.rollout_defaults.as_ref(),
    );
    for (i, w) in spec.windows.iter().enumerate() {
        let base = format!("/spec/windows/{i}");
        check_cron(ctx, p, &format!("{base}/schedule"), &w.schedule, &[5]);
        match catalog::parse_duration_micros(&w.duration) {
            Some(0) => ctx.at(
                p,
                &format!("{base}/duration"),
                "a window must last longer than 0s",
            ),
            Some(_) => {}
            None => ctx.at(
                p,
                &format!("{base}/duration"),
                format!("`{}` is not a duration", w.duration),
            ),
        }
    }
    if let Some(schedule) = &spec.drift.schedule {
        check_cron(ctx, p, "/spec/drift/schedule", schedule, &[5, 6]);
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, n) in spec.notifications.iter().enumerate() {
        if names.insert(&n.name, i).is_some() {
            ctx.at(
                p,
                &format!("/spec/notifications/{i}/name"),
                format!("notification `{}` is defined twice", n.name),
            );
        }
    }
    for (i, target) in spec.drift.notify.iter().enumerate() {
        if !names.contains_key(target.as_str()) {
            ctx.at(
                p,
                &format!("/spec/drift/notify/{i}"),
                format!("no notification named `{target}` in spec.notifications"),
            );
        }
    }
    Settings {
        file: Some(p.path.clone()),
        rollout_defaults,
        windows: spec.windows,
        drift: spec.drift,
        notifications: spec.notifications,
        trust: spec.trust,
    }
}

/// A crontab expression has the right number of fields; the scheduler parses it fully.
fn check_cron(ctx: &mut Ctx, p: &Parsed, pointer: &str, expr: &str, fields: &[usize]) {
    const MACROS: [&str; 6] = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@hourly",
    ];
    if MACROS.contains(&expr.trim()) {
        return;
    }
    let n = expr.split_whitespace().count();
    if !fields.contains(&n) {
        let want = fields
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        ctx.at(
            p,
            pointer,
            format!(
                "`{expr}` has {n} field{}; a crontab expression here has {want} (or @hourly, @daily, ...)",
                if n == 1 { "" } else { "s" }
            ),
        );
    }
}

fn parameters(
    ctx: &mut Ctx,
    p: &Parsed,
    engine: Engine,
    raw: &BTreeMap<String, Value>,
    profile: Option<&str>,
) -> BTreeMap<String, Param> {
    let cat = catalog::catalog(engine);
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let pointer = format!("/spec/parameters/{}", super::yaml::escape_token(name));
        match cat.normalize(name, value) {
            Ok(normalized) => {
                let written = match value {
                    Value::String(s) => s.clone(),
                    Value::Array(items) => items
                        .iter()
                        .map(|v| {
                            v.as_str()
                                .map(str::to_owned)
                                .unwrap_or_else(|| v.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                out.insert(
                    name.clone(),
                    Param {
                        value: normalized,
                        written,
                        profile: profile.map(str::to_owned),
                    },
                );
            }
            Err(e @ catalog::ValueError::Unknown { .. }) => ctx.at_key(p, &pointer, e.to_string()),
            Err(e) => ctx.at(p, &pointer, e.to_string()),
        }
    }
    out
}

fn nodes(
    ctx: &mut Ctx,
    p: &Parsed,
    spec: &raw::ClusterSpec,
    ids: &mut HashMap<String, (String, usize)>,
    addresses: &mut HashMap<String, (String, usize)>,
) -> Vec<Node> {
    let mut out = Vec::with_capacity(spec.nodes.len());
    let mut primaries: HashMap<&str, &str> = HashMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let base = format!("/spec/nodes/{i}");
        let line = p.located.value_pos(&format!("{base}/id")).line;
        let address_line = p.located.value_pos(&format!("{base}/address")).line;
        if let Some((file, first_line)) = ids.get(&n.id) {
            ctx.at(
                p,
                &format!("{base}/id"),
                format!("node id `{}` is already used at {file}:{first_line}", n.id),
            );
        } else {
            ids.insert(n.id.clone(), (p.path.clone(), line));
        }
        let address = n.address.to_ascii_lowercase();
        let port_ok = address
            .rsplit(':')
            .next()
            .and_then(|port| port.parse::<u32>().ok())
            .is_some_and(|port| (1..=65535).contains(&port));
        if !port_ok {
            ctx.at(
                p,
                &format!("{base}/address"),
                format!("`{}`: the port must be between 1 and 65535", n.address),
            );
        }
        if let Some((file, first_line)) = addresses.get(&address) {
            ctx.at(
                p,
                &format!("{base}/address"),
                format!(
                    "address `{}` is already used at {file}:{first_line}",
                    n.address
                ),
            );
        } else {
            addresses.insert(address, (p.path.clone(), address_line));
        }
        let role = n.role.unwrap_or(Role::Primary);
        let shard = n.shard.clone().unwrap_or_else(|| n.id.clone());
        if spec.engine == Engine::Memcached && role == Role::Replica {
            ctx.at(
                p,
                &format!("{base}/role"),
                "memcached has no replication: every node is a primary of its own",
            );
        }
        if role == Role::Primary {
            let shard_key = n.shard.as_deref().unwrap_or(&n.id);
            if let Some(first) = primaries.get(shard_key) {
                let pointer = if n.role.is_some() {
                    format!("{base}/role")
                } else {
                    format!("{base}/id")
                };
                let implicit = if n.role.is_none() {
                    " (a node without `role` is a primary)"
                } else {
                    ""
                };
                ctx.at(
                    p,
                    &pointer,
                    format!("shard `{shard_key}` has more than one primary: `{first}` is already its primary{implicit}"),
                );
            } else {
                primaries.insert(shard_key, &n.id);
            }
        }
        out.push(Node {
            id: n.id.clone(),
            address: n.address.clone(),
            shard,
            role,
            managed: n.managed.unwrap_or(Managed::Direct),
            labels: n.labels.clone(),
        });
    }
    // A shard of replicas without a primary cannot be rolled out safely.
    let mut reported: Vec<&str> = Vec::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let shard = n.shard.as_deref().unwrap_or(&n.id);
        if n.role == Some(Role::Replica)
            && !primaries.contains_key(shard)
            && !reported.contains(&shard)
        {
            reported.push(shard);
            ctx.at(
                p,
                &format!("/spec/nodes/{i}/shard"),
                format!("shard `{shard}` has replicas but no primary"),
            );
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

fn duration_ms(ctx: &mut Ctx, p: &Parsed, pointer: &str, text: &str) -> Option<Millis> {
    match catalog::parse_duration_micros(text) {
        Some(us) if us % 1000 == 0 => Some(Millis(us / 1000)),
        Some(_) => {
            ctx.at(p, pointer, format!("`{text}` is finer than a millisecond"));
            None
        }
        None => {
            ctx.at(
                p,
                pointer,
                format!("`{text}` is not a duration such as 30s or 5m"),
            );
            None
        }
    }
}

/// Lay `raw` over `base`, field by field, checking durations and stages.
fn rollout(
    ctx: &mut Ctx,
    p: &Parsed,
    at: &str,
    base: &RolloutPolicy,
    raw: Option<&raw::Rollout>,
) -> RolloutPolicy {
    let mut out = base.clone();
    let Some(raw) = raw else {
        return out;
    };
    if let Some(stages) = &raw.stages {
        if let Some(s) = stages_of(ctx, p, &format!("{at}/stages"), stages) {
            out.stages = s;
        }
    }
    for (field, value, slot) in [
        ("bake", &raw.bake, &mut out.bake),
        ("applyTimeout", &raw.apply_timeout, &mut out.apply_timeout),
        ("warmup", &raw.warmup, &mut out.warmup),
    ] {
        if let Some(text) = value {
            if let Some(ms) = duration_ms(ctx, p, &format!("{at}/{field}"), text) {
                *slot = ms;
            }
        }
    }
    if field_is_zero(&raw.apply_timeout) {
        ctx.at(
            p,
            &format!("{at}/applyTimeout"),
            "applyTimeout must be longer than 0s",
        );
    }
    if let Some(n) = raw.max_unavailable_per_shard {
        out.max_unavailable_per_shard = n;
    }
    if let Some(f) = raw.on_failure {
        out.on_failure = f;
    }
    if let Some(g) = &raw.gates {
        out.gates = gates(&out.gates, g);
    }
    out
}

fn field_is_zero(text: &Option<String>) -> bool {
    text.as_deref()
        .and_then(catalog::parse_duration_micros)
        .is_some_and(|us| us == 0)
}

fn gates(base: &Gates, g: &raw::Gates) -> Gates {
    Gates {
        max_hit_ratio_drop: g.max_hit_ratio_drop.unwrap_or(base.max_hit_ratio_drop),
        max_evictions_per_sec: g.max_evictions_per_sec.or(base.max_evictions_per_sec),
        max_latency_ms: g.max_latency_ms.or(base.max_latency_ms),
        max_latency_increase_ms: g.max_latency_increase_ms.or(base.max_latency_increase_ms),
        max_memory_ratio: g.max_memory_ratio.unwrap_or(base.max_memory_ratio),
        require_up: g.require_up.unwrap_or(base.require_up),
        require_replication_link: g
            .require_replication_link
            .unwrap_or(base.require_replication_link),
        min_ops_per_sec: g.min_ops_per_sec.unwrap_or(base.min_ops_per_sec),
    }
}

/// Stages are cumulative: node counts first, then percentages, each strictly growing,
/// ending at 100%. A count after a percentage is refused because for a large cluster it
/// would be a step backwards.
fn stages_of(ctx: &mut Ctx, p: &Parsed, at: &str, raw: &[RawStage]) -> Option<Vec<Stage>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut ok = true;
    for (i, s) in raw.iter().enumerate() {
        let pointer = format!("{at}/{i}");
        let stage = match s {
            RawStage::Count(n) => match n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .and_then(|n| u32::try_from(n).ok())
            {
                Some(n) if n >= 1 => Stage::Count(n),
                _ => {
                    ctx.at(
                        p,
                        &pointer,
                        format!("{n} is not a node count between 1 and 4294967295"),
                    );
                    ok = false;
                    continue;
                }
            },
            RawStage::Percent(t) => match t.strip_suffix('%').and_then(|n| n.parse::<u8>().ok()) {
                Some(n) if (1..=100).contains(&n) => Stage::Percent(n),
                _ => {
                    ctx.at(
                        p,
                        &pointer,
                        format!("`{t}` is not a percentage between 1% and 100%"),
                    );
                    ok = false;
                    continue;
                }
            },
        };
        if let Some(prev) = out.last() {
            let grows = match (prev, &stage) {
                (Stage::Count(a), Stage::Count(b)) => b > a,
                (Stage::Percent(a), Stage::Percent(b)) => b > a,
                (Stage::Count(_), Stage::Percent(_)) => true,
                (Stage::Percent(_), Stage::Count(_)) => {
                    ctx.at(
                        p,
                        &pointer,
                        format!("stage {stage} is a node count after the percentage {prev}: put counts first"),
                    );
                    ok = false;
                    out.push(stage);
                    continue;
                }
            };
            if !grows {
                ctx.at(
                    p,
                    &pointer,
                    format!("stages must grow: {stage} does not exceed the previous stage {prev}"),
                );
                ok = false;
            }
        }
        out.push(stage);
    }
    if ok && out.last() != Some(&Stage::Percent(100)) {
        let last = raw.len().saturating_sub(1);
        ctx.at(
            p,
            &format!("{at}/{last}"),
            "the last stage must be \"100%\" so that a rollout reaches every node",
        );
        ok = false;
    }
    ok.then_some(out)
}
