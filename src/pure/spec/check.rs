//! Semantic checks a schema cannot express, and the building of the validated model:
//! kinds in their directories, names matching files, profiles that resolve, engine
//! parameters that exist and fit, combinations the engine starts with (`engine_rules`),
//! unique node ids and addresses, one primary per shard, stages that grow to 100%,
//! durations that parse, and the repository's policies.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;

use hashbrown::hash_table::{Entry, HashTable};

use serde::Deserialize;
use serde_json::Value;

use super::model::{
    Cluster, ClusterMode, Gates, Managed, Millis, Node, Param, Profile, Role, RolloutPolicy,
    Settings, Stage,
};
use super::raw::{self, Kind, RawStage};
use super::{file_level, schema, Diagnostic, Parsed, Reread, Source};
use crate::pure::catalog::{self, CatalogId, Engine, Product};

/// A compiled repository policy.
pub(crate) struct Policy {
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
                let (line, column, message) = crate::pure::spec::json_error_position(text, &e);
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

/// The diagnostics of one pass.
#[derive(Default)]
struct Ctx {
    diags: Vec<Diagnostic>,
}

impl Ctx {
    fn at(&mut self, p: &Parsed, pointer: &str, message: impl Into<String>) {
        self.diags.push(p.src.diag(pointer, false, message));
    }
    fn at_key(&mut self, p: &Parsed, pointer: &str, message: impl Into<String>) {
        self.diags.push(p.src.diag(pointer, true, message));
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
    match T::deserialize(p.value.get("spec").unwrap_or(&Value::Null)) {
        Ok(v) => Some(v),
        Err(e) => {
            ctx.at(p, "/spec", format!("unexpected spec shape: {e}"));
            None
        }
    }
}

/// Settings and profiles: what every cluster depends on.
pub(crate) struct Shared {
    pub settings: Settings,
    pub profiles: BTreeMap<String, Profile>,
    /// The parameters of each profile as written, for policies (which see YAML types).
    profile_raw: HashMap<String, BTreeMap<String, Value>>,
    /// Profiles that exist but are broken: a cluster naming one is not told "not found".
    broken_profiles: HashSet<String>,
}

/// Is `kind` the one `p`'s directory holds? Reports the error when not.
fn in_its_place(ctx: &mut Ctx, p: &Parsed) -> bool {
    let expected = expected_kind(p.src.path());
    if p.kind != expected {
        let place = match expected {
            Kind::Settings => "cacheflow.yaml holds the Settings",
            Kind::Profile => "files under profiles/ hold Profiles",
            Kind::Cluster => "files under clusters/ hold Clusters",
        };
        ctx.at(
            p,
            "/kind",
            format!("kind `{}` in the wrong place: {place}", p.kind.as_str()),
        );
        return false;
    }
    if expected == Kind::Profile && p.src.path().matches('/').count() > 1 {
        ctx.at(
            p,
            "/metadata/name",
            format!(
                "profiles live directly in profiles/: move this file to profiles/{}.yaml",
                stem(p.src.path())
            ),
        );
        return false;
    }
    if expected != Kind::Settings && p.metadata.name != stem(p.src.path()) {
        ctx.at(
            p,
            "/metadata/name",
            format!(
                "name `{}` must match the file name `{}`",
                p.metadata.name,
                stem(p.src.path())
            ),
        );
        return false;
    }
    true
}

/// Check Settings and profiles; `failed` holds the paths that did not parse.
pub(super) fn shared(
    parsed: Vec<Parsed>,
    failed: &HashSet<&str>,
    diags: &mut Vec<Diagnostic>,
) -> Shared {
    let mut ctx = Ctx::default();
    let mut out = Shared {
        settings: Settings::default(),
        profiles: BTreeMap::new(),
        profile_raw: HashMap::new(),
        broken_profiles: HashSet::new(),
    };
    for path in failed {
        if let Some(rest) = path.strip_prefix("profiles/") {
            out.broken_profiles.insert(stem(rest).to_owned());
        }
    }
    let mut profile_files: HashMap<String, String> = HashMap::new();
    for p in &parsed {
        if !in_its_place(&mut ctx, p) {
            if p.src.path().starts_with("profiles/") {
                out.broken_profiles.insert(stem(p.src.path()).to_owned());
            }
            continue;
        }
        if p.kind == Kind::Settings {
            out.settings = settings(&mut ctx, p);
            continue;
        }
        let name = p.metadata.name.clone();
        if let Some(first) = profile_files.get(&name) {
            ctx.at(
                p,
                "/metadata/name",
                format!("profile `{name}` is also defined in {first}"),
            );
            continue;
        }
        profile_files.insert(name.clone(), p.src.path().to_owned());
        let Some(spec) = spec_of::<raw::ProfileSpec>(&mut ctx, p) else {
            out.broken_profiles.insert(name);
            continue;
        };
        let parameters = profile_parameters(&mut ctx, p, spec.engine, &spec.parameters, &name);
        out.profile_raw.insert(name.clone(), spec.parameters);
        out.profiles.insert(
            name.clone(),
            Profile {
                name,
                file: p.src.path().to_owned(),
                engine: spec.engine,
                parameters,
            },
        );
    }
    diags.extend(ctx.diags);
    out
}

/// One cluster file, checked on its own: what `across_files` needs next. The file's text
/// and tree are not kept: a diagnostic found across files re-reads the files it names.
pub(crate) struct ClusterOut {
    path: String,
    /// The model, when the load keeps models ([`Keep::Model`]); boxed, so that a load
    /// that keeps none holds a pointer per cluster, not the model's size.
    cluster: Option<Box<Cluster>>,
    /// The cluster's name and its nodes' ids and addresses, when it built.
    keys: Option<Keys>,
    diags: Vec<Diagnostic>,
}

impl ClusterOut {
    pub(super) fn path(&self) -> &str {
        &self.path
    }
}

/// What a load keeps of each cluster that checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The model ([`Cluster`]): what plans and rollouts need.
    Model,
    /// Only what the checks across files and the counts of a summary need.
    Keys,
}

/// A cluster's name, then each node's id and address (as written, in file order), in one
/// string: the compact index the checks across files run over.
pub(crate) struct Keys {
    text: String,
    /// Where each part ends in `text`: the name, then id and address of each node.
    ends: Vec<u32>,
}

impl Keys {
    /// The keys of cluster `name` whose nodes have these (id, address), each string and
    /// list allocated at its exact size: 100,000 clusters keep theirs until the checks
    /// across files, and grown by doubling they took half as much again.
    fn new<'a>(name: &'a str, nodes: impl Iterator<Item = (&'a str, &'a str)> + Clone) -> Keys {
        let (mut bytes, mut parts) = (name.len(), 1);
        for (id, address) in nodes.clone() {
            bytes += id.len() + address.len();
            parts += 2;
        }
        let mut k = Keys {
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(parts),
        };
        k.push(name);
        for (id, address) in nodes {
            k.push(id);
            k.push(address);
        }
        k
    }

    fn push(&mut self, part: &str) {
        self.text.push_str(part);
        self.ends
            .push(u32::try_from(self.text.len()).unwrap_or(u32::MAX));
    }

    fn part(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        self.text
            .get(start..self.ends[i] as usize)
            .unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.part(0)
    }

    fn node_count(&self) -> usize {
        self.ends.len() / 2
    }

    /// (id, address) of node `k`.
    fn node(&self, k: usize) -> (&str, &str) {
        (self.part(1 + 2 * k), self.part(2 + 2 * k))
    }
}

/// Parse, check and build one cluster: schema, its profile, parameters, nodes, rollout
/// policy and the repository's policies. Runs in parallel with the other cluster files.
pub(super) fn cluster_file(
    path: Cow<'_, str>,
    text: Cow<'_, str>,
    shared: &Shared,
    policies: &[Policy],
    keep: Keep,
) -> ClusterOut {
    let shown = path.to_string();
    let mut p = match super::parse_file(path, text) {
        Ok(p) => p,
        Err(diags) => {
            return ClusterOut {
                path: shown,
                cluster: None,
                keys: None,
                diags,
            }
        }
    };
    let mut ctx = Ctx::default();
    let cluster = build_cluster(&mut ctx, &mut p, shared, policies);
    let keys = cluster.as_ref().map(|c| {
        let nodes = p.value.pointer("/spec/nodes").and_then(Value::as_array);
        fn field<'a>(n: &'a Value, k: &str) -> &'a str {
            n.get(k).and_then(Value::as_str).unwrap_or_default()
        }
        let nodes = nodes.into_iter().flatten();
        Keys::new(
            &c.name,
            nodes.map(move |n| (field(n, "id"), field(n, "address"))),
        )
    });
    ClusterOut {
        path: shown,
        cluster: cluster.filter(|_| keep == Keep::Model).map(Box::new),
        keys,
        diags: ctx.diags,
    }
}

fn build_cluster(
    ctx: &mut Ctx,
    p: &mut Parsed,
    shared: &Shared,
    policies: &[Policy],
) -> Option<Cluster> {
    if !in_its_place(ctx, p) {
        return None;
    }
    let name = p.metadata.name.clone();
    let spec = spec_of::<raw::ClusterSpec>(ctx, p)?;
    let (declared, selected) = select_catalog(ctx, p, &spec);
    // Profile first, cluster overrides on top.
    let mut params: BTreeMap<String, Param> = BTreeMap::new();
    let mut raw_params: serde_json::Map<String, Value> = serde_json::Map::new();
    let profile_broken = merge_profile(
        ctx,
        p,
        shared,
        &spec,
        (declared, selected),
        &mut params,
        &mut raw_params,
    );
    if selected {
        params.extend(parameters(ctx, p, declared, &spec.parameters));
        params.extend(unchecked_parameters(ctx, p, declared, &spec));
    }
    for (k, v) in &spec.parameters {
        raw_params.insert(k.clone(), v.clone());
    }
    check_memcached_auth(ctx, p, &spec);
    check_sentinel(ctx, p, &spec);
    let nodes = nodes(ctx, p, &spec);
    let rollout = rollout(
        ctx,
        p,
        "/spec/rollout",
        &shared.settings.rollout_defaults,
        spec.rollout.as_ref(),
    );
    // A cluster whose profile is broken is not held to policies: its parameters are
    // unknown, and the profile's own errors say what to fix.
    check_mode(ctx, p, &spec, &params);
    if !profile_broken {
        if selected {
            engine_rules(ctx, p, declared.id, &params, spec.auth.is_some());
        }
        apply_policies(ctx, p, &spec, policies, raw_params);
    }
    Some(Cluster {
        name,
        file: p.src.path().to_owned(),
        labels: p.metadata.labels.clone(),
        engine: spec.engine.engine(),
        product: spec.engine,
        version: spec.version.clone(),
        catalog: declared.id,
        profile: spec.profile.clone(),
        parameters: params,
        auth: spec.auth.clone(),
        tls: spec.tls.clone(),
        sentinel: spec.sentinel.clone(),
        mode: spec.mode.unwrap_or_default(),
        nodes,
        rollout,
    })
}

/// The catalog the cluster's engine and version select, and whether they select one.
/// With a version that selects none, the parameters are not checked (against which
/// version?): the version's error says why.
fn select_catalog(ctx: &mut Ctx, p: &Parsed, spec: &raw::ClusterSpec) -> (Declared, bool) {
    let selected = CatalogId::select(spec.engine, spec.version.as_deref());
    let id = match &selected {
        Ok(id) => *id,
        Err(e) => {
            ctx.at(p, "/spec/version", e.to_string());
            CatalogId::default_for(spec.engine.engine())
        }
    };
    let declared = Declared {
        id,
        written: spec.version.is_some(),
    };
    (declared, selected.is_ok())
}

/// The profile's parameters under the cluster's (each must exist in the cluster's
/// version: a profile names none). True when the profile itself is broken.
fn merge_profile(
    ctx: &mut Ctx,
    p: &Parsed,
    shared: &Shared,
    spec: &raw::ClusterSpec,
    (declared, selected): (Declared, bool),
    params: &mut BTreeMap<String, Param>,
    raw_params: &mut serde_json::Map<String, Value>,
) -> bool {
    let Some(profile_name) = &spec.profile else {
        return false;
    };
    match shared.profiles.get(profile_name) {
        Some(profile) if profile.engine != spec.engine => ctx.at(
            p,
            "/spec/profile",
            format!(
                "profile `{profile_name}` is for {}, this cluster runs {}",
                profile.engine, spec.engine
            ),
        ),
        Some(profile) => {
            for name in profile.parameters.keys() {
                if declared.id.get().get(name).is_none() && selected {
                    let why = catalog::elsewhere(declared.id, name)
                        .unwrap_or_else(|| "is unknown".to_owned());
                    ctx.at(
                        p,
                        "/spec/profile",
                        format!(
                            "`{name}` (from profile `{profile_name}`) {why}; {}",
                            declared.clause()
                        ),
                    );
                }
            }
            params.extend(profile.parameters.clone());
            if let Some(raw) = shared.profile_raw.get(profile_name) {
                raw_params.extend(raw.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        None if shared.broken_profiles.contains(profile_name) => return true,
        None => ctx.at(
            p,
            "/spec/profile",
            format!("profile `{profile_name}` not found (expected profiles/{profile_name}.yaml)"),
        ),
    }
    false
}

/// Combinations of parameters the engine refuses to start with (`engine_rules`), each
/// at the parameter it names, or at `profile` when the profile sets it.
fn engine_rules(
    ctx: &mut Ctx,
    p: &Parsed,
    catalog: CatalogId,
    params: &BTreeMap<String, Param>,
    auth: bool,
) {
    for refusal in super::engine_rules::check(catalog, params, auth) {
        match params.get(refusal.param).and_then(|x| x.profile.as_ref()) {
            Some(profile) => ctx.at(
                p,
                "/spec/profile",
                format!(
                    "{} (`{}` from profile `{profile}`)",
                    refusal.message, refusal.param
                ),
            ),
            None => {
                let pointer = format!(
                    "/spec/parameters/{}",
                    super::yaml::escape_token(refusal.param)
                );
                ctx.at(p, &pointer, refusal.message)
            }
        }
    }
}

/// `spec.mode` against the parameters that make a node a Redis Cluster member: a
/// `cluster-enabled yes` node belongs in `mode: cluster`; in cluster mode `cluster-enabled`
/// stays yes and `cluster-config-file` is not declared (each node keeps its own: a node
/// restarted with another file starts as a new, empty member the cluster does not know).
fn check_mode(
    ctx: &mut Ctx,
    p: &Parsed,
    spec: &raw::ClusterSpec,
    params: &BTreeMap<String, Param>,
) {
    let mode = spec.mode.unwrap_or_default();
    let at = |name: &str| format!("/spec/parameters/{}", super::yaml::escape_token(name));
    let enabled = params.get("cluster-enabled").map(|v| v.value.as_str());
    match mode {
        ClusterMode::Cluster if spec.engine.engine() == Engine::Memcached => ctx.at(
            p,
            "/spec/mode",
            "memcached has no cluster mode: `mode: cluster` is for Redis and Valkey",
        ),
        ClusterMode::Cluster => {
            if enabled.is_some_and(|v| v != "yes") {
                ctx.at(
                    p,
                    &at("cluster-enabled"),
                    "a `mode: cluster` cluster runs with `cluster-enabled yes`: turning it off \
                     takes the node out of the cluster (start-only, refused)",
                );
            }
            if params.contains_key("cluster-config-file") {
                ctx.at(
                    p,
                    &at("cluster-config-file"),
                    "`cluster-config-file` is each node's own state (its id, epoch and peers): a \
                     node restarted with another file starts as a new, empty member the cluster \
                     does not know; set it where the node is installed, not here",
                );
            }
        }
        ClusterMode::Replication if enabled == Some("yes") => ctx.at(
            p,
            &at("cluster-enabled"),
            "`cluster-enabled yes` makes the nodes Redis Cluster members: declare `mode: cluster` \
             so that shards, gates and failovers follow the cluster's own view",
        ),
        ClusterMode::Replication => {}
    }
}

/// Memcached's `-Y` authentication takes a user and a password.
fn check_memcached_auth(ctx: &mut Ctx, p: &Parsed, spec: &raw::ClusterSpec) {
    if spec.engine.engine() != Engine::Memcached {
        return;
    }
    if spec.auth.as_ref().is_some_and(|a| a.username.is_none()) {
        ctx.at(
            p,
            "/spec/auth",
            "memcached authentication (`-Y`) takes a user and a password: add `username`",
        );
    }
}

/// Sentinels watch Redis and Valkey primaries: not memcached; each named once, none of
/// them one of the cluster's nodes.
fn check_sentinel(ctx: &mut Ctx, p: &Parsed, spec: &raw::ClusterSpec) {
    let Some(s) = &spec.sentinel else { return };
    if spec.engine.engine() == Engine::Memcached {
        ctx.at(
            p,
            "/spec/sentinel",
            "memcached has no replication for Sentinels to watch: remove `sentinel`",
        );
        return;
    }
    if spec.mode == Some(crate::pure::spec::model::ClusterMode::Cluster) {
        ctx.at(
            p,
            "/spec/sentinel",
            "a Redis Cluster (`mode: cluster`) fails over by itself, not through Sentinels: remove `sentinel`",
        );
        return;
    }
    for (i, address) in s.addresses.iter().enumerate() {
        let pointer = format!("/spec/sentinel/addresses/{i}");
        // host:port, the host compared without case.
        let same = |a: &str| a.eq_ignore_ascii_case(address);
        if s.addresses[..i].iter().any(|a| same(a)) {
            ctx.at(p, &pointer, format!("Sentinel {address} is named twice"));
        } else if spec.nodes.iter().any(|n| same(&n.address)) {
            ctx.at(
                p,
                &pointer,
                format!("{address} is a node of the cluster, not a Sentinel"),
            );
        }
    }
}

/// The repository's policies, applied to the cluster with its profile merged in. The
/// tree is ours and read for nothing else, so the parameters are replaced in place.
fn apply_policies(
    ctx: &mut Ctx,
    p: &mut Parsed,
    spec: &raw::ClusterSpec,
    policies: &[Policy],
    raw_params: serde_json::Map<String, Value>,
) {
    if policies.is_empty() {
        return;
    }
    let mut doc = std::mem::take(&mut p.value);
    if let Some(spec_obj) = doc.get_mut("spec").and_then(Value::as_object_mut) {
        spec_obj.insert("parameters".into(), Value::Object(raw_params));
    }
    for policy in policies {
        for f in schema::findings(&policy.validator, &doc) {
            apply_policy_finding(ctx, p, spec, policy, f);
        }
    }
    p.value = doc;
}

fn apply_policy_finding(
    ctx: &mut Ctx,
    p: &Parsed,
    spec: &raw::ClusterSpec,
    policy: &Policy,
    f: schema::Finding,
) {
    let inherited = f
        .pointer
        .strip_prefix("/spec/parameters/")
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .filter(|param| !spec.parameters.contains_key(*param))
        .and(spec.profile.as_deref());
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
            ..p.src.diag("/spec/profile", false, message)
        });
    } else if f.at_key {
        ctx.at_key(p, &f.pointer, message);
    } else {
        ctx.at(p, &f.pointer, message);
    }
}

/// What the checks across files leave: the models kept (first definitions only) and
/// what a summary counts.
pub(super) struct AcrossFiles {
    pub clusters: BTreeMap<String, Cluster>,
    pub cluster_count: usize,
    pub node_count: usize,
}

/// A name, node id or address used again: where (file, node), and where first.
#[derive(Debug, PartialEq, Eq)]
enum Again {
    Name {
        at: usize,
        first: usize,
    },
    Id {
        at: (usize, usize),
        first: (usize, usize),
    },
    Address {
        at: (usize, usize),
        first: (usize, usize),
    },
}

/// The checks across files, in path order (`outs` is sorted by path): cluster names, node
/// ids and addresses are unique in the repository. The first use wins; later ones are
/// errors. They run over each file's [`Keys`]; only the files an error names are read
/// again (`reread`: path → text), for the line and column it points at.
pub(super) fn across_files(
    outs: Vec<ClusterOut>,
    diags: &mut Vec<Diagnostic>,
    reread: Reread<'_>,
) -> AcrossFiles {
    let mut outs = outs;
    for out in &mut outs {
        diags.append(&mut out.diags);
    }
    let (again, first_definitions) = find_again(&outs);
    report_again(&outs, &again, diags, reread);
    let mut done = AcrossFiles {
        clusters: BTreeMap::new(),
        cluster_count: 0,
        node_count: 0,
    };
    for (out, first) in outs.into_iter().zip(first_definitions) {
        if !first {
            continue;
        }
        done.cluster_count += 1;
        done.node_count += out.keys.as_ref().map_or(0, Keys::node_count);
        if let Some(c) = out.cluster {
            done.clusters.insert(c.name.clone(), *c);
        }
    }
    done
}

/// Every name, id and address used again, and which files hold a first definition of
/// their cluster's name.
///
/// The ids and addresses seen are kept as (file, node) indices in tables hashed by the
/// strings those indices lead to, an entry of 8 bytes: maps keyed by the strings themselves
/// took 78 MB for the 537,758 nodes of 100,000 clusters, half the peak of `validate`.
fn find_again(outs: &[ClusterOut]) -> (Vec<Again>, Vec<bool>) {
    find_again_hashed(outs, &std::hash::RandomState::new())
}

fn find_again_hashed(outs: &[ClusterOut], state: &impl BuildHasher) -> (Vec<Again>, Vec<bool>) {
    let nodes: usize = outs
        .iter()
        .filter_map(|o| o.keys.as_ref())
        .map(Keys::node_count)
        .sum();
    let node = |(i, k): Seen| {
        outs[i as usize]
            .keys
            .as_ref()
            .map_or(("", ""), |keys| keys.node(k as usize))
    };
    let hash_id = |id: &str| state.hash_one(id);
    // Addresses are compared without regard to ASCII case.
    let hash_address = |address: &str| {
        if address.bytes().any(|b| b.is_ascii_uppercase()) {
            state.hash_one(address.to_ascii_lowercase())
        } else {
            state.hash_one(address)
        }
    };
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(outs.len());
    let mut ids: HashTable<Seen> = HashTable::with_capacity(nodes);
    let mut addresses: HashTable<Seen> = HashTable::with_capacity(nodes);
    let mut again = Vec::new();
    let mut first_definitions = vec![false; outs.len()];
    for (i, out) in outs.iter().enumerate() {
        let Some(keys) = &out.keys else { continue };
        if let Some(&first) = names.get(keys.name()) {
            again.push(Again::Name { at: i, first });
            continue;
        }
        names.insert(keys.name(), i);
        first_definitions[i] = true;
        for k in 0..keys.node_count() {
            let (id, address) = keys.node(k);
            let here = seen(i, k);
            let same_id = |s: &Seen| node(*s).0 == id;
            let rehash = |s: &Seen| hash_id(node(*s).0);
            if let Some(first) = first_or_insert(&mut ids, hash_id(id), same_id, rehash, here) {
                again.push(Again::Id { at: (i, k), first });
            }
            let same_address = |s: &Seen| node(*s).1.eq_ignore_ascii_case(address);
            let rehash = |s: &Seen| hash_address(node(*s).1);
            let hash = hash_address(address);
            if let Some(first) = first_or_insert(&mut addresses, hash, same_address, rehash, here) {
                again.push(Again::Address { at: (i, k), first });
            }
        }
    }
    (again, first_definitions)
}

/// A node seen by [`find_again`]: (index of its file in `outs`, index in its file).
type Seen = (u32, u32);

fn seen(file: usize, node: usize) -> Seen {
    // A repository of 4 billion files or a file of 4 billion nodes is not read to here.
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    (narrow(file), narrow(node))
}

/// Where the same string was seen first, or `None` after recording `here` as its first.
fn first_or_insert(
    table: &mut HashTable<Seen>,
    hash: u64,
    same: impl FnMut(&Seen) -> bool,
    rehash: impl Fn(&Seen) -> u64,
    here: Seen,
) -> Option<(usize, usize)> {
    match table.entry(hash, same, rehash) {
        Entry::Occupied(first) => {
            let (file, node) = *first.get();
            Some((file as usize, node as usize))
        }
        Entry::Vacant(slot) => {
            slot.insert(here);
            None
        }
    }
}

/// The diagnostics of names, ids and addresses used again, from the texts of the files
/// they name (read again: the load keeps no text).
fn report_again(
    outs: &[ClusterOut],
    again: &[Again],
    diags: &mut Vec<Diagnostic>,
    reread: Reread<'_>,
) {
    if again.is_empty() {
        return;
    }
    let mut wanted: Vec<String> = again
        .iter()
        .flat_map(|a| match a {
            Again::Name { at, first } => [*at, *first],
            Again::Id { at, first } | Again::Address { at, first } => [at.0, first.0],
        })
        .map(|i| outs[i].path.clone())
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut sources: HashMap<String, Source<'static>> = reread(&wanted)
        .into_iter()
        .map(|(path, text)| {
            let src = Source::new(Cow::Owned(path.clone()), Cow::Owned(text));
            (path, src)
        })
        .collect();
    // A file that could not be read again is still named, at its first line.
    for path in wanted {
        sources
            .entry(path.clone())
            .or_insert_with(|| Source::new(Cow::Owned(path), Cow::Borrowed("")));
    }
    let src = |i: usize| &sources[&outs[i].path];
    let keys = |i: usize| outs[i].keys.as_ref();
    let first_at = |(j, n): (usize, usize), field: &str| {
        format!(
            "{}:{}",
            outs[j].path,
            src(j).line_of(&format!("/spec/nodes/{n}/{field}"))
        )
    };
    for a in again {
        match *a {
            Again::Name { at, first } => {
                let name = keys(at).map(Keys::name).unwrap_or_default();
                diags.push(src(at).diag(
                    "/metadata/name",
                    false,
                    format!("cluster `{name}` is also defined in {}", outs[first].path),
                ));
            }
            Again::Id { at, first } => {
                let id = keys(at.0).map(|k| k.node(at.1).0).unwrap_or_default();
                diags.push(src(at.0).diag(
                    &format!("/spec/nodes/{}/id", at.1),
                    false,
                    format!(
                        "node id `{id}` is already used at {}",
                        first_at(first, "id")
                    ),
                ));
            }
            Again::Address { at, first } => {
                let address = keys(at.0).map(|k| k.node(at.1).1).unwrap_or_default();
                diags.push(src(at.0).diag(
                    &format!("/spec/nodes/{}/address", at.1),
                    false,
                    format!(
                        "address `{address}` is already used at {}",
                        first_at(first, "address")
                    ),
                ));
            }
        }
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
        if let Err(e) = crate::pure::schedule::parse_zone(w.timezone.as_deref()) {
            ctx.at(p, &format!("{base}/timezone"), e.to_string());
        }
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
    if let Err(e) = crate::pure::schedule::parse_zone(spec.drift.timezone.as_deref()) {
        ctx.at(p, "/spec/drift/timezone", e.to_string());
    }
    if let Some(repeat) = &spec.drift.repeat {
        match catalog::parse_duration_micros(repeat) {
            Some(0) => ctx.at(
                p,
                "/spec/drift/repeat",
                "drift.repeat must be longer than 0s (it is how long unchanged drift waits before it is notified again)",
            ),
            Some(_) => {}
            None => ctx.at(
                p,
                "/spec/drift/repeat",
                format!("`{repeat}` is not a duration such as 30m or 4h"),
            ),
        }
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
    if spec.trust.require_signed_head && spec.trust.signers.is_empty() {
        ctx.at(
            p,
            "/spec/trust/requireSignedHead",
            "requireSignedHead needs at least one entry in trust.signers",
        );
    }
    for (i, s) in spec.trust.signers.iter().enumerate() {
        for (field, message) in
            super::signers::check_signer_keys(s.ssh.as_deref(), s.openpgp.as_deref())
        {
            ctx.at(p, &format!("/spec/trust/signers/{i}/{field}"), message);
        }
    }
    Settings {
        file: Some(p.src.path().to_owned()),
        rollout_defaults,
        windows: spec.windows,
        drift: spec.drift,
        notifications: spec.notifications,
        trust: spec.trust,
    }
}

/// A crontab expression the scheduler can run (`schedule::Crontab`, which says why not).
fn check_cron(ctx: &mut Ctx, p: &Parsed, pointer: &str, expr: &str, fields: &[usize]) {
    if let Err(e) = crate::pure::schedule::Crontab::parse(expr, fields) {
        ctx.at(p, pointer, e.to_string());
    }
}

/// The catalog a cluster uses and whether its file names the version (for messages).
#[derive(Clone, Copy)]
struct Declared {
    id: CatalogId,
    written: bool,
}

impl Declared {
    /// "this cluster declares 7.0" / "… declares no version, which means Redis 7.0".
    fn clause(self) -> String {
        if self.written {
            format!("this cluster declares {}", self.id.version())
        } else {
            format!(
                "this cluster declares no version, which means {} {}",
                self.id.product().title(),
                self.id.version()
            )
        }
    }
}

/// The value as written, for people (a YAML list joined with spaces).
fn written_text(value: &Value) -> String {
    match value {
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
    }
}

/// A cluster's `parameters`, against the catalog of its engine and version. A parameter
/// that only other versions have says which.
fn parameters(
    ctx: &mut Ctx,
    p: &Parsed,
    declared: Declared,
    raw: &BTreeMap<String, Value>,
) -> BTreeMap<String, Param> {
    let cat = declared.id.get();
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let pointer = format!("/spec/parameters/{}", super::yaml::escape_token(name));
        match cat.normalize(name, value) {
            Ok(normalized) => {
                out.insert(
                    name.clone(),
                    Param {
                        value: normalized,
                        written: written_text(value),
                        profile: None,
                        unchecked: false,
                    },
                );
            }
            Err(catalog::ValueError::Unknown { .. })
                if catalog::elsewhere(declared.id, name).is_some() =>
            {
                let why = catalog::elsewhere(declared.id, name).unwrap_or_default();
                ctx.at_key(
                    p,
                    &pointer,
                    format!("`{name}` {why}; {}", declared.clause()),
                )
            }
            Err(e @ (catalog::ValueError::Unknown { .. } | catalog::ValueError::Secret { .. })) => {
                ctx.at_key(p, &pointer, e.to_string())
            }
            Err(e) => ctx.at(p, &pointer, e.to_string()),
        }
    }
    out
}

/// A profile's parameters. A profile names no version, so each is checked against the
/// newest catalog of its engine that has it; a cluster using the profile then checks that
/// its own version has them.
fn profile_parameters(
    ctx: &mut Ctx,
    p: &Parsed,
    product: Product,
    raw: &BTreeMap<String, Value>,
    profile: &str,
) -> BTreeMap<String, Param> {
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let pointer = format!("/spec/parameters/{}", super::yaml::escape_token(name));
        let id = catalog::newest_with(product, name)
            .unwrap_or_else(|| CatalogId::default_for(product.engine()));
        match id.get().normalize(name, value) {
            Ok(normalized) => {
                out.insert(
                    name.clone(),
                    Param {
                        value: normalized,
                        written: written_text(value),
                        profile: Some(profile.to_owned()),
                        unchecked: false,
                    },
                );
            }
            Err(e @ (catalog::ValueError::Unknown { .. } | catalog::ValueError::Secret { .. })) => {
                ctx.at_key(p, &pointer, e.to_string())
            }
            Err(e) => ctx.at(p, &pointer, e.to_string()),
        }
    }
    out
}

/// `uncheckedParameters`: what no catalog knows (a module's parameters), kept as written
/// and sent as written. Refused there: a parameter the cluster's catalog knows (it belongs
/// under `parameters`, where it is checked), a credential (the same rule as in
/// `parameters`), and any on Memcached, which has no generic run-time setting.
fn unchecked_parameters(
    ctx: &mut Ctx,
    p: &Parsed,
    declared: Declared,
    spec: &raw::ClusterSpec,
) -> BTreeMap<String, Param> {
    let mut out = BTreeMap::new();
    if spec.unchecked_parameters.is_empty() {
        return out;
    }
    if spec.engine.engine() == Engine::Memcached {
        ctx.at_key(
            p,
            "/spec/uncheckedParameters",
            "`uncheckedParameters` is for Redis and Valkey clusters: Memcached has no run-time command that sets an arbitrary parameter",
        );
        return out;
    }
    let cat = declared.id.get();
    for (name, value) in &spec.unchecked_parameters {
        let pointer = format!(
            "/spec/uncheckedParameters/{}",
            super::yaml::escape_token(name)
        );
        if catalog::is_credential(spec.engine.engine(), name) {
            let e = catalog::ValueError::Secret { name: name.clone() };
            ctx.at_key(p, &pointer, e.to_string());
            continue;
        }
        if cat.get(name).is_some() {
            ctx.at_key(
                p,
                &pointer,
                format!(
                    "`{name}` is a {} {} parameter: set it under `parameters`, where its value is checked",
                    declared.id.product().title(),
                    declared.id.version()
                ),
            );
            continue;
        }
        if spec.parameters.contains_key(name) {
            continue; // reported as unknown under `parameters`
        }
        let text = match value {
            Value::Null => Err(catalog::BadValue::Required),
            Value::Object(_) => Err(catalog::BadValue::Mapping),
            Value::Array(items) if items.iter().any(|v| v.is_array() || v.is_object()) => {
                Err(catalog::BadValue::NestedList)
            }
            other => Ok(written_text(other).trim().to_owned()),
        };
        match text {
            Ok(text) => {
                out.insert(
                    name.clone(),
                    Param {
                        value: text.clone(),
                        written: text,
                        profile: None,
                        unchecked: true,
                    },
                );
            }
            Err(reason) => ctx.at(p, &pointer, format!("`{name}`: {reason}")),
        }
    }
    out
}

fn nodes(ctx: &mut Ctx, p: &Parsed, spec: &raw::ClusterSpec) -> Vec<Node> {
    let mut out = Vec::with_capacity(spec.nodes.len());
    let mut primaries: HashMap<&str, &str> = HashMap::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let base = format!("/spec/nodes/{i}");
        let port_ok = n
            .address
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
        let shard = n.shard.clone().unwrap_or_else(|| n.id.clone());
        // Memcached nodes are primaries of their own; a Redis or Valkey node without
        // `role` is whatever it runs as (its live role).
        let role = match spec.engine {
            Product::Memcached => Some(n.role.unwrap_or(Role::Primary)),
            _ => n.role,
        };
        if spec.engine == Product::Memcached && n.role == Some(Role::Replica) {
            ctx.at(
                p,
                &format!("{base}/role"),
                "memcached has no replication: every node is a primary of its own",
            );
        }
        if n.role == Some(Role::Primary) {
            let shard_key = n.shard.as_deref().unwrap_or(&n.id);
            if let Some(first) = primaries.get(shard_key) {
                ctx.at(
                    p,
                    &format!("{base}/role"),
                    format!("shard `{shard_key}` has more than one primary: `{first}` is already its primary"),
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
    // A shard of replicas without a primary cannot be rolled out safely (a node without
    // `role` may be its primary).
    let open: std::collections::HashSet<&str> = spec
        .nodes
        .iter()
        .filter(|n| n.role.is_none())
        .map(|n| n.shard.as_deref().unwrap_or(&n.id))
        .collect();
    let mut reported: Vec<&str> = Vec::new();
    for (i, n) in spec.nodes.iter().enumerate() {
        let shard = n.shard.as_deref().unwrap_or(&n.id);
        if n.role == Some(Role::Replica)
            && !primaries.contains_key(shard)
            && !open.contains(shard)
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
    if let Some(f) = raw.on_primary_restart {
        out.on_primary_restart = f;
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
        max_replica_lag_bytes: g.max_replica_lag_bytes.or(base.max_replica_lag_bytes),
        max_replica_lag_seconds: g.max_replica_lag_seconds.or(base.max_replica_lag_seconds),
        max_full_resyncs: g.max_full_resyncs.or(base.max_full_resyncs),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string hashes alike: each lookup meets every entry of the table.
    struct Colliding;

    struct Zero;

    impl std::hash::Hasher for Zero {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, _: &[u8]) {}
    }

    impl BuildHasher for Colliding {
        type Hasher = Zero;
        fn build_hasher(&self) -> Zero {
            Zero
        }
    }

    fn out(name: &str, nodes: &[(&str, &str)]) -> ClusterOut {
        ClusterOut {
            path: format!("clusters/{name}.yaml"),
            cluster: None,
            keys: Some(Keys::new(name, nodes.iter().copied())),
            diags: Vec::new(),
        }
    }

    #[test]
    fn names_ids_and_addresses_used_again_are_found_whatever_their_strings_hash_to() {
        let outs = vec![
            out(
                "a",
                &[("n1", "10.0.0.1:6379"), ("n2", "Cache.Example.com:6379")],
            ),
            out("b", &[("n3", "10.0.0.2:6379"), ("n1", "10.0.0.3:6379")]),
            // A name used again: its nodes are not compared.
            out("a", &[("n9", "10.0.0.1:6379")]),
            out(
                "c",
                &[("n4", "cache.example.COM:6379"), ("n5", "10.0.0.2:6379")],
            ),
            // A cluster that did not build has no keys.
            ClusterOut {
                keys: None,
                ..out("d", &[])
            },
            out("e", &[("n6", "10.0.0.6:6379"), ("n6", "10.0.0.6:6379")]),
        ];
        let expected = vec![
            Again::Id {
                at: (1, 1),
                first: (0, 0),
            },
            Again::Name { at: 2, first: 0 },
            Again::Address {
                at: (3, 0),
                first: (0, 1),
            },
            Again::Address {
                at: (3, 1),
                first: (1, 0),
            },
            Again::Id {
                at: (5, 1),
                first: (5, 0),
            },
            Again::Address {
                at: (5, 1),
                first: (5, 0),
            },
        ];
        let firsts = vec![true, true, false, true, false, true];
        assert_eq!(find_again(&outs), (expected, firsts.clone()));
        let (again, first) = find_again_hashed(&outs, &Colliding);
        assert_eq!(first, firsts);
        assert_eq!(again.len(), 6, "{again:?}");
        assert_eq!(again, find_again(&outs).0);
    }

    #[test]
    fn keys_hold_the_name_then_each_nodes_id_and_address_at_their_exact_size() {
        let keys = Keys::new("web", [("n1", "10.0.0.1:6379"), ("n2", "h:1")].into_iter());
        assert_eq!(keys.name(), "web");
        assert_eq!(keys.node_count(), 2);
        assert_eq!(keys.node(0), ("n1", "10.0.0.1:6379"));
        assert_eq!(keys.node(1), ("n2", "h:1"));
        assert_eq!(keys.text.capacity(), "webn110.0.0.1:6379n2h:1".len());
        assert_eq!(keys.ends.capacity(), 5);
    }
}
