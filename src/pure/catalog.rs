//! Engine parameter catalogs: which parameters each version of Redis, Valkey and
//! Memcached has, their types and units, and whether the engine takes them at run time or
//! only at start; which catalog a cluster's `engine` and `version` select.
//!
//! The catalogs are data (`schemas/engines/*.json`, embedded in the binary; the Redis and
//! Valkey ones generated from the engines' config tables by `scripts/gen-catalogs.py`) so
//! that a test can hold them against a real server. This module parses each one once, the
//! first time a cluster of that version needs it, and normalises values, so that `4gb` and
//! `4294967296` compare equal.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// A cache engine cacheflow manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Redis,
    Memcached,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Memcached => "memcached",
        }
    }

    /// The parameter whose change switches how the engine evicts keys.
    pub fn eviction_parameters(self) -> &'static [&'static str] {
        match self {
            Engine::Redis => &["maxmemory-policy"],
            Engine::Memcached => &["evictions"],
        }
    }

    /// The parameter that caps the engine's memory, in bytes once normalised.
    pub fn memory_limit_parameter(self) -> &'static str {
        match self {
            Engine::Redis => "maxmemory",
            Engine::Memcached => "maxbytes",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a cluster's `spec.engine` names. Valkey speaks the Redis protocol (its nodes are
/// driven as [`Engine::Redis`]) but has catalogs of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    Redis,
    Valkey,
    Memcached,
}

impl Product {
    /// The protocol its nodes speak.
    pub fn engine(self) -> Engine {
        match self {
            Product::Redis | Product::Valkey => Engine::Redis,
            Product::Memcached => Engine::Memcached,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Product::Redis => "redis",
            Product::Valkey => "valkey",
            Product::Memcached => "memcached",
        }
    }

    /// The name in prose ("needs Redis 7.2 or later").
    pub fn title(self) -> &'static str {
        match self {
            Product::Redis => "Redis",
            Product::Valkey => "Valkey",
            Product::Memcached => "Memcached",
        }
    }

    /// The catalog version of a cluster that names none: the one cacheflow checked every
    /// cluster against before catalogs were per version (Redis 7.0, Memcached 1.6), so
    /// that a repository written then means what it meant; Valkey's oldest (7.2).
    pub fn default_version(self) -> &'static str {
        match self {
            Product::Redis => "7.0",
            Product::Valkey => "7.2",
            Product::Memcached => "1.6",
        }
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Engine> for Product {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Redis => Product::Redis,
            Engine::Memcached => Product::Memcached,
        }
    }
}

/// The value type of one parameter.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ParamType {
    /// An integer, optionally bounded.
    Int {
        #[serde(default)]
        min: Option<i64>,
        #[serde(default)]
        max: Option<i64>,
    },
    /// A floating point number, optionally bounded.
    Float {
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
    },
    /// A size in bytes; accepts `4gb`, `100mb`, `512k`, plain byte counts. With
    /// `percent`, also a percentage such as `5%` (Redis `maxmemory-clients`), kept as is.
    Size {
        #[serde(default)]
        min: Option<u64>,
        #[serde(default)]
        max: Option<u64>,
        #[serde(default, skip_serializing_if = "is_false")]
        percent: bool,
    },
    /// A duration stored by the engine as an integer count of `unit`; accepts that
    /// integer or a string such as `30s`, `5m`, `250ms`.
    Duration {
        unit: DurationUnit,
        #[serde(default)]
        min: Option<i64>,
        #[serde(default)]
        max: Option<i64>,
    },
    /// A boolean; the engine spells it `yes`/`no` (Redis) or as `true_word`/`false_word`.
    Bool {
        #[serde(default = "yes")]
        true_word: String,
        #[serde(default = "no")]
        false_word: String,
    },
    /// One of a fixed set of words (compared case-insensitively).
    Enum { values: Vec<String> },
    /// A space separated list; `ordered: false` when the engine ignores the order.
    List {
        #[serde(default)]
        ordered: bool,
        #[serde(default)]
        values: Option<Vec<String>>,
    },
    /// Free text, compared exactly.
    String {
        #[serde(default)]
        pattern: Option<String>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn yes() -> String {
    "yes".to_owned()
}
fn no() -> String {
    "no".to_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DurationUnit {
    Us,
    Ms,
    S,
    /// Minutes (Redis `lfu-decay-time`).
    Min,
}

impl DurationUnit {
    fn micros(self) -> u64 {
        match self {
            DurationUnit::Us => 1,
            DurationUnit::Ms => 1_000,
            DurationUnit::S => 1_000_000,
            DurationUnit::Min => 60_000_000,
        }
    }
}

/// One parameter of an engine.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ParamSpec {
    #[serde(flatten)]
    pub ty: ParamType,
    /// True when the engine accepts a change at run time (`CONFIG SET` for Redis, a
    /// protocol command for Memcached); false when it needs a restart.
    pub runtime: bool,
    #[serde(default)]
    pub description: String,
    /// The engine's default as its config table writes it (generated catalogs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Redis: the engine refuses `CONFIG SET` of this parameter unless
    /// `enable-protected-configs` allows it (`dir`, `dbfilename`); `runtime` then says
    /// what the engine can do once allowed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
    /// A credential (`requirepass`, `masterauth`, `masteruser`, the TLS key passphrases):
    /// refused in `parameters` (credentials are secret references under `auth:`), never
    /// normalised, and never read from a node (the drivers drop it from every reading).
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
    /// Memcached: the command-line words that set it at start. `{}` stands for the value
    /// (in `flag_unit`, spelled through `flag_values`); without `{}` the value follows as
    /// the next argument (`-m` → `-m 64`, `-o hot_lru_pct={}` → `-o hot_lru_pct=20`).
    /// `{other_parameter}` stands for the value of another parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag: Option<String>,
    /// Memcached booleans: the command-line words that make it true / false. A missing one
    /// means that value is the engine's default and needs no flag (`evictions`: `-M` is
    /// `flag_false`, on needs nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_true: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_false: Option<String>,
    /// Memcached: values spelled differently on the command line (`auto-negotiate` → `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_values: Option<BTreeMap<String, String>>,
    /// Memcached: the protocol command that changes it at run time, `{}` standing for
    /// the value in the flag's unit (`cache_memlimit {}`) and `{other_parameter}` for the
    /// value of another parameter the same command sets (`lru tune {} {warm_lru_pct} ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Memcached booleans: the protocol commands that make it true / false at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_true: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_false: Option<String>,
    /// Memcached: the multiplier from bytes to the unit of `flag`/`command` (1048576 for `-m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flag_unit: Option<u64>,
}

/// The catalog of one engine version.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Catalog {
    /// What the catalog is for (`valkey` for Valkey; [`Catalog::engine`] is the protocol).
    #[serde(rename = "engine")]
    pub product: Product,
    /// major.minor.
    pub version: String,
    /// Where a generated catalog was read from (the upstream tag and commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    pub parameters: BTreeMap<String, ParamSpec>,
}

/// The upstream source a generated catalog was read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Source {
    pub repository: String,
    pub tag: String,
    pub commit: String,
    pub file: String,
    pub generator: String,
}

/// Why a value does not fit its parameter. The message never repeats a value of a
/// credential parameter (`Secret`): those are refused by name, the value unread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("unknown {engine} parameter `{name}`")]
    Unknown { engine: Product, name: String },
    #[error("`{name}`: {reason}")]
    Invalid {
        name: String,
        #[source]
        reason: BadValue,
    },
    #[error("`{name}` is a credential: it never belongs in `parameters` (value redacted); give the cluster `auth:` with a secret reference (env:NAME or file:PATH) instead")]
    Secret { name: String },
}

/// Why a value does not fit its type (the parameter's name is the caller's to add).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("a value is required")]
    Required,
    #[error("a list may hold only plain values")]
    NestedList,
    #[error("expected a plain value, found a mapping")]
    Mapping,
    #[error("expected a single value, found a list")]
    List,
    #[error("expected an integer, found `{0}`")]
    NotAnInteger(String),
    #[error("expected a number, found `{0}`")]
    NotANumber(String),
    #[error("expected a percentage such as 5%, found `{0}`")]
    NotAPercentage(String),
    #[error("expected yes or no, found `{0}`")]
    NotABool(String),
    #[error("expected one of {allowed}, found `{text}`")]
    NotOneOf { text: String, allowed: String },
    #[error("`{item}` is not one of {allowed}")]
    ItemNotOneOf { item: String, allowed: String },
    #[error("`{text}` does not match the expected format {pattern}")]
    Format { text: String, pattern: String },
    /// Both numbers as shown to the user.
    #[error("{value} is below the minimum {min}")]
    BelowMinimum { value: String, min: String },
    #[error("{value} is above the maximum {max}")]
    AboveMaximum { value: String, max: String },
    #[error("expected a size such as 4gb or 1048576, found `{0}`")]
    NotASize(String),
    #[error("unknown size unit in `{0}` (use b, k, kb, m, mb, g or gb)")]
    SizeUnit(String),
    #[error("size `{0}` is too large")]
    SizeTooLarge(String),
    #[error("expected a duration such as 30s, 5m or 250ms, found `{0}`")]
    NotADuration(String),
    /// `unit` in words: `minutes`, `seconds`, …
    #[error("`{text}` is not a whole number of {unit}")]
    NotWhole { text: String, unit: &'static str },
    #[error("duration `{0}` is too large")]
    DurationTooLarge(String),
}

/// Why a cluster's `version` selects no catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("`{text}` is not a version: write major.minor, such as {example}")]
    NotAVersion { text: String, example: &'static str },
    #[error("{} {version} has no catalog; known {engine} versions: {known}", .engine.title())]
    Unknown {
        engine: Product,
        version: String,
        known: String,
    },
}

/// One embedded catalog: parsed the first time a cluster of its version needs it.
struct Embedded {
    product: Product,
    version: &'static str,
    file: &'static str,
    text: &'static str,
}

macro_rules! embedded {
    ($product:ident, $version:literal, $file:literal) => {
        Embedded {
            product: Product::$product,
            version: $version,
            file: $file,
            text: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/schemas/engines/",
                $file
            )),
        }
    };
}

/// Every catalog, oldest version first within a product.
static EMBEDDED: [Embedded; 8] = [
    embedded!(Redis, "6.2", "redis-6.2.json"),
    embedded!(Redis, "7.0", "redis-7.0.json"),
    embedded!(Redis, "7.2", "redis-7.2.json"),
    embedded!(Redis, "7.4", "redis-7.4.json"),
    embedded!(Redis, "8.0", "redis-8.0.json"),
    embedded!(Valkey, "7.2", "valkey-7.2.json"),
    embedded!(Valkey, "8.0", "valkey-8.0.json"),
    embedded!(Memcached, "1.6", "memcached-1.6.json"),
];

static PARSED: [OnceLock<Catalog>; 8] = [const { OnceLock::new() }; 8];

fn parsed(i: usize) -> &'static Catalog {
    let e = &EMBEDDED[i];
    PARSED[i].get_or_init(|| {
        serde_json::from_str(e.text).unwrap_or_else(|_| Catalog {
            product: e.product,
            version: e.version.to_owned(),
            source: None,
            parameters: BTreeMap::new(),
        })
    })
}

/// Which catalog a cluster uses: its product and catalog version. Small and `Copy`, so a
/// cluster carries it; [`CatalogId::get`] gives the (lazily parsed) catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CatalogId {
    index: usize,
}

impl CatalogId {
    /// The catalog of `product` at `version` (major.minor, a patch level is ignored:
    /// `7.2.4` is 7.2); `None` selects the product's default version.
    pub fn select(product: Product, version: Option<&str>) -> Result<Self, VersionError> {
        let wanted = match version {
            None => product.default_version().to_owned(),
            Some(text) => major_minor(text).ok_or_else(|| VersionError::NotAVersion {
                text: text.to_owned(),
                example: product.default_version(),
            })?,
        };
        EMBEDDED
            .iter()
            .position(|e| e.product == product && e.version == wanted)
            .map(|index| CatalogId { index })
            .ok_or_else(|| VersionError::Unknown {
                engine: product,
                version: wanted,
                known: known_versions(product).join(", "),
            })
    }

    /// The default catalog of a protocol (Redis 7.0, Memcached 1.6): what code that knows
    /// only the protocol (a node driver, the agent) checks against.
    pub fn default_for(engine: Engine) -> Self {
        let product = Product::from(engine);
        let index = EMBEDDED
            .iter()
            .position(|e| e.product == product && e.version == product.default_version())
            .unwrap_or(0);
        CatalogId { index }
    }

    pub fn get(self) -> &'static Catalog {
        parsed(self.index)
    }

    pub fn product(self) -> Product {
        EMBEDDED[self.index].product
    }

    pub fn version(self) -> &'static str {
        EMBEDDED[self.index].version
    }
}

/// `7.2`, `7.2.4` → `7.2`; anything else is not a version.
fn major_minor(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit());
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(numeric) {
        return None;
    }
    let n = |p: &str| p.parse::<u32>().ok();
    Some(format!("{}.{}", n(parts[0])?, n(parts[1])?))
}

/// The catalog versions cacheflow knows for `product`, oldest first.
pub fn known_versions(product: Product) -> Vec<&'static str> {
    EMBEDDED
        .iter()
        .filter(|e| e.product == product)
        .map(|e| e.version)
        .collect()
}

/// Where a parameter unknown to `id`'s version exists in other versions of the same
/// product, in words: "needs Redis 7.2 or later", "was removed after Redis 7.0", "exists
/// only in Redis 6.2, 7.4". `None` when no version knows it. Parses the other catalogs of
/// the product, which only an error needs.
pub fn elsewhere(id: CatalogId, name: &str) -> Option<String> {
    let product = id.product();
    let mine = version_key(id.version());
    let having: Vec<&'static str> = EMBEDDED
        .iter()
        .enumerate()
        .filter(|(_, e)| e.product == product)
        .filter(|(i, _)| parsed(*i).parameters.contains_key(name))
        .map(|(_, e)| e.version)
        .collect();
    let (first, last) = (*having.first()?, *having.last()?);
    let title = product.title();
    Some(if having.iter().all(|v| version_key(v) > mine) {
        format!("needs {title} {first} or later")
    } else if having.iter().all(|v| version_key(v) < mine) {
        format!("was removed after {title} {last}")
    } else {
        format!("exists only in {title} {}", having.join(", "))
    })
}

/// The newest catalog of `product` that has parameter `name` (what a profile, which names
/// no version, is checked against).
pub fn newest_with(product: Product, name: &str) -> Option<CatalogId> {
    EMBEDDED
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, e)| e.product == product)
        .find(|(i, _)| parsed(*i).parameters.contains_key(name))
        .map(|(index, _)| CatalogId { index })
}

/// Whether `name` is a credential for nodes speaking `engine`: marked `secret` in any
/// catalog of that protocol (Valkey's `primaryauth` is one on a Redis 7.0 cluster too), or
/// named like one (`…pass…`: module passwords and passphrases). Used for
/// `uncheckedParameters`, which no catalog checks.
pub fn is_credential(engine: Engine, name: &str) -> bool {
    name.to_ascii_lowercase().contains("pass")
        || catalogs_of(engine).iter().any(|c| c.is_secret(name))
}

/// Every catalog of the engines speaking `engine`'s protocol (Redis and Valkey for
/// [`Engine::Redis`]), parsing those not parsed yet.
pub fn catalogs_of(engine: Engine) -> Vec<&'static Catalog> {
    EMBEDDED
        .iter()
        .enumerate()
        .filter(|(_, e)| e.product.engine() == engine)
        .map(|(i, _)| parsed(i))
        .collect()
}

fn version_key(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The default catalog of `engine` (Redis 7.0, Memcached 1.6), parsed once. For code that
/// knows a node's protocol but not its cluster's version (node drivers, the agent); a
/// cluster's own catalog is `Cluster::catalog()`. The embedded data is checked by unit
/// tests, so a broken catalog fails the build's tests rather than a user's run; should it
/// still fail to parse, this returns an empty catalog and `catalog_errors` says why.
pub fn catalog(engine: Engine) -> &'static Catalog {
    CatalogId::default_for(engine).get()
}

/// Parse errors of the embedded catalogs (empty when all are well formed).
pub fn catalog_errors() -> Vec<String> {
    let mut out = Vec::new();
    for e in &EMBEDDED {
        match serde_json::from_str::<Catalog>(e.text) {
            Err(err) => out.push(format!("schemas/engines/{}: {err}", e.file)),
            Ok(c) if c.product != e.product || c.version != e.version => out.push(format!(
                "schemas/engines/{}: says {} {}",
                e.file, c.product, c.version
            )),
            Ok(_) => {}
        }
    }
    out
}

impl Catalog {
    /// The protocol of the engine the catalog is for.
    pub fn engine(&self) -> Engine {
        self.product.engine()
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.parameters.get(name)
    }

    /// Normalise `value` for parameter `name` into the canonical text the engine itself
    /// reports (`CONFIG GET`, `stats settings`): sizes and durations as integers in the
    /// engine's unit, booleans as the engine's words, enums lower-case, unordered lists
    /// sorted.
    pub fn normalize(&self, name: &str, value: &serde_json::Value) -> Result<String, ValueError> {
        let spec = self.get(name).ok_or_else(|| ValueError::Unknown {
            engine: self.product,
            name: name.to_owned(),
        })?;
        if spec.secret {
            return Err(ValueError::Secret {
                name: name.to_owned(),
            });
        }
        normalize_value(&spec.ty, value).map_err(|reason| ValueError::Invalid {
            name: name.to_owned(),
            reason,
        })
    }

    /// Whether the engine's text `have` already is the normalised value `want` (`4gb`
    /// and `4294967296`, `YES` and `yes`).
    pub fn same(&self, name: &str, have: &str, want: &str) -> bool {
        have == want
            || self
                .normalize(name, &serde_json::Value::String(have.to_owned()))
                .is_ok_and(|n| n == want)
    }

    /// `value` (the engine's own text, or a normalised one) as people write it: sizes
    /// and durations in their largest exact unit (`8589934592` is `8gb`, `lfu-decay-time
    /// 5` minutes `5m`), anything else as it is. Negative or sentinel values (`-1`:
    /// disabled) and values that do not parse are shown unchanged.
    pub fn human(&self, name: &str, value: &str) -> String {
        let text = value.trim();
        match self.get(name).map(|p| &p.ty) {
            Some(ParamType::Size { .. }) => match text.parse::<u64>() {
                Ok(n) => human_size(n),
                Err(_) => value.to_owned(),
            },
            Some(ParamType::Duration { unit, .. }) => match text.parse::<u64>() {
                // `0` often means "disabled" (`timeout 0`): shown as the engine says it.
                Ok(0) => value.to_owned(),
                Ok(n) => n
                    .checked_mul(unit.micros())
                    .map(human_duration_micros)
                    .unwrap_or_else(|| value.to_owned()),
                Err(_) => value.to_owned(),
            },
            _ => value.to_owned(),
        }
    }

    /// Whether `name` is a credential parameter (`ParamSpec::secret`).
    pub fn is_secret(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| p.secret)
    }

    /// Whether a change of `name` needs a restart (unknown parameters are treated as
    /// needing one: the safe side).
    pub fn needs_restart(&self, name: &str) -> bool {
        self.get(name).map(|p| !p.runtime).unwrap_or(true)
    }
}

fn scalar_text(value: &serde_json::Value) -> Result<String, BadValue> {
    match value {
        serde_json::Value::String(s) => Ok(s.trim().to_owned()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(if *b { "yes" } else { "no" }.to_owned()),
        serde_json::Value::Null => Err(BadValue::Required),
        serde_json::Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                        return Err(BadValue::NestedList)
                    }
                    other => parts.push(scalar_text(other)?),
                }
            }
            Ok(parts.join(" "))
        }
        serde_json::Value::Object(_) => Err(BadValue::Mapping),
    }
}

/// Normalise one value against its type; the error is a reason without the name.
pub fn normalize_value(ty: &ParamType, value: &serde_json::Value) -> Result<String, BadValue> {
    if let (ParamType::String { .. } | ParamType::List { .. }, serde_json::Value::Array(_)) =
        (ty, value)
    {
        // lists may be written as YAML sequences; handled by scalar_text below
    } else if value.is_array() {
        return Err(BadValue::List);
    }
    let text = scalar_text(value)?;
    match ty {
        ParamType::Int { min, max } => {
            let n: i64 = text
                .parse()
                .map_err(|_| BadValue::NotAnInteger(text.clone()))?;
            check_range(n as f64, min.map(|m| m as f64), max.map(|m| m as f64))?;
            Ok(n.to_string())
        }
        ParamType::Float { min, max } => {
            let n: f64 = text
                .parse()
                .ok()
                .filter(|n: &f64| n.is_finite())
                .ok_or_else(|| BadValue::NotANumber(text.clone()))?;
            check_range(n, *min, *max)?;
            Ok(format_float(n))
        }
        ParamType::Size { min, max, percent } => {
            if let Some(digits) = text.strip_suffix('%').filter(|_| *percent) {
                let n: u64 = digits
                    .trim()
                    .parse()
                    .map_err(|_| BadValue::NotAPercentage(text.clone()))?;
                check_range(n as f64, Some(0.0), Some(100.0))?;
                return Ok(format!("{n}%"));
            }
            let n = parse_size(&text)?;
            check_range(n as f64, min.map(|m| m as f64), max.map(|m| m as f64))?;
            Ok(n.to_string())
        }
        ParamType::Duration { unit, min, max } => {
            let n = parse_duration_in(&text, *unit)?;
            check_range(n as f64, min.map(|m| m as f64), max.map(|m| m as f64))?;
            Ok(n.to_string())
        }
        ParamType::Bool {
            true_word,
            false_word,
        } => match text.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(true_word.clone()),
            "no" | "false" | "off" | "0" => Ok(false_word.clone()),
            w if w == true_word => Ok(true_word.clone()),
            w if w == false_word => Ok(false_word.clone()),
            _ => Err(BadValue::NotABool(text.clone())),
        },
        ParamType::Enum { values } => {
            let lower = text.to_ascii_lowercase();
            values
                .iter()
                .find(|v| v.to_ascii_lowercase() == lower)
                .cloned()
                .ok_or_else(|| BadValue::NotOneOf {
                    text: text.clone(),
                    allowed: values.join(", "),
                })
        }
        ParamType::List { ordered, values } => normalize_list(&text, *ordered, values.as_deref()),
        ParamType::String { pattern } => {
            if let Some(p) = pattern {
                let ok = regex_lite_match(p, &text);
                if !ok {
                    return Err(BadValue::Format {
                        text,
                        pattern: p.clone(),
                    });
                }
            }
            Ok(text)
        }
    }
}

/// A list of words: each one of `allowed` (in its spelling) if given; sorted and without
/// repeats unless `ordered`.
fn normalize_list(
    text: &str,
    ordered: bool,
    allowed: Option<&[String]>,
) -> Result<String, BadValue> {
    let mut items: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    if let Some(allowed) = allowed {
        for item in &mut items {
            let lower = item.to_ascii_lowercase();
            match allowed.iter().find(|v| v.to_ascii_lowercase() == lower) {
                Some(v) => *item = v.clone(),
                None => {
                    return Err(BadValue::ItemNotOneOf {
                        item: item.clone(),
                        allowed: allowed.join(", "),
                    })
                }
            }
        }
    }
    if !ordered {
        items.sort();
        items.dedup();
    }
    Ok(items.join(" "))
}

/// Catalog patterns are simple anchored character-class checks; we validate them through
/// the JSON Schema engine's regex support rather than carrying a second regex crate.
/// Each thread compiles a pattern once (there are a handful) and keeps it.
fn regex_lite_match(pattern: &str, text: &str) -> bool {
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Option<jsonschema::Validator>>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    COMPILED.with(|cell| {
        let mut cache = cell.borrow_mut();
        let validator = cache.entry(pattern.to_owned()).or_insert_with(|| {
            let schema = serde_json::json!({ "type": "string", "pattern": pattern });
            jsonschema::validator_for(&schema).ok()
        });
        match validator {
            Some(v) => v.is_valid(&serde_json::Value::String(text.to_owned())),
            None => true,
        }
    })
}

fn check_range(n: f64, min: Option<f64>, max: Option<f64>) -> Result<(), BadValue> {
    if let Some(min) = min {
        if n < min {
            return Err(BadValue::BelowMinimum {
                value: format_float(n),
                min: format_float(min),
            });
        }
    }
    if let Some(max) = max {
        if n > max {
            return Err(BadValue::AboveMaximum {
                value: format_float(n),
                max: format_float(max),
            });
        }
    }
    Ok(())
}

fn format_float(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A byte count as people write it: the largest binary unit that divides it exactly
/// (`8gb`, `512mb`, `64kb`), else the plain count (`1000`, `0`). What `parse_size` reads
/// back to the same number: the one formatter of sizes for every output people read.
pub fn human_size(bytes: u64) -> String {
    for (mult, unit) in [(1u64 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")] {
        if bytes > 0 && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    bytes.to_string()
}

/// A duration as people write it, in whole units from days down (`5m`, `1h30m`, `30s`,
/// `250ms`, `1500us`); zero is `0s`. What `parse_duration_micros` reads back. The one
/// formatter of durations: `spec::model::Millis` (what `diff` shows) prints through it.
pub fn human_duration_micros(micros: u64) -> String {
    if micros == 0 {
        return "0s".to_owned();
    }
    if !micros.is_multiple_of(1_000) {
        return format!("{micros}us");
    }
    let ms = micros / 1_000;
    if !ms.is_multiple_of(1_000) {
        return format!("{ms}ms");
    }
    let mut s = ms / 1_000;
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

/// A duration in milliseconds as people write it (`human_duration_micros`).
pub fn human_ms(ms: u64) -> String {
    human_duration_micros(ms.saturating_mul(1_000))
}

/// A measured byte count (memory used, data evicted), rounded for reading: `900mb`,
/// `1.5gb`, `12.3kb`, `512 bytes`. For values that are not written back anywhere; a
/// configured value is shown exactly by [`human_size`].
pub fn approx_size(bytes: u64) -> String {
    for (mult, unit) in [(1u64 << 30, "gb"), (1 << 20, "mb"), (1 << 10, "kb")] {
        if bytes >= mult {
            let x = bytes as f64 / mult as f64;
            let tenths = (x * 10.0).round() / 10.0;
            return if tenths.fract() == 0.0 {
                format!("{}{unit}", tenths as u64)
            } else {
                format!("{tenths:.1}{unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// Parse a size the way Redis does: `k`=1000, `kb`=1024, `m`, `mb`, `g`, `gb`, case
/// insensitive; a plain integer is bytes.
pub fn parse_size(text: &str) -> Result<u64, BadValue> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(BadValue::NotASize(text.to_owned()));
    }
    let mult: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return Err(BadValue::SizeUnit(text.to_owned())),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| BadValue::SizeTooLarge(text.to_owned()))
}

/// Parse a duration (`250ms`, `30s`, `5m`, `2h`, `1d`, or a plain integer of `unit`)
/// into an integer count of `unit`, refusing values that do not divide evenly.
pub fn parse_duration_in(text: &str, unit: DurationUnit) -> Result<i64, BadValue> {
    let t = text.trim().to_ascii_lowercase();
    if let Ok(n) = t.parse::<i64>() {
        return Ok(n);
    }
    let micros =
        parse_duration_micros(&t).ok_or_else(|| BadValue::NotADuration(text.to_owned()))?;
    if micros % unit.micros() != 0 {
        return Err(BadValue::NotWhole {
            text: text.to_owned(),
            unit: match unit {
                DurationUnit::Us => "microseconds",
                DurationUnit::Ms => "milliseconds",
                DurationUnit::S => "seconds",
                DurationUnit::Min => "minutes",
            },
        });
    }
    i64::try_from(micros / unit.micros()).map_err(|_| BadValue::DurationTooLarge(text.to_owned()))
}

/// `1h30m`, `250ms`, `10s` into microseconds; `None` when it does not parse.
pub fn parse_duration_micros(text: &str) -> Option<u64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits_end == 0 {
            return None;
        }
        let n: u64 = rest[..digits_end].parse().ok()?;
        let after = &rest[digits_end..];
        let unit_end = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let mult: u64 = match &after[..unit_end] {
            "us" => 1,
            "ms" => 1_000,
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
        rest = &after[unit_end..];
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_parameters_carry_the_engines_own_classes() {
        // As every Redis and Valkey config.c declares them: MODIFIABLE_CONFIG ones are set
        // at run time, IMMUTABLE_CONFIG ones at start only.
        let runtime = [
            "cluster-node-timeout",
            "cluster-require-full-coverage",
            "cluster-allow-reads-when-down",
            "cluster-replica-validity-factor",
            "cluster-migration-barrier",
            "cluster-allow-replica-migration",
            "cluster-replica-no-failover",
            "cluster-announce-ip",
        ];
        let start_only = ["cluster-enabled", "cluster-config-file", "cluster-port"];
        for cat in catalogs_of(Engine::Redis) {
            for name in runtime {
                let p = cat
                    .get(name)
                    .unwrap_or_else(|| panic!("{name} in {}", cat.version));
                assert!(p.runtime, "{name} in {} is run-time", cat.version);
            }
            for name in start_only {
                // cluster-port is new in Redis 7.0; 6.2 read cluster-config-file outside its
                // config table, so its catalog does not know it.
                let Some(p) = cat.get(name) else {
                    assert_eq!(cat.version, "6.2", "{name}");
                    assert_ne!(name, "cluster-enabled");
                    continue;
                };
                assert!(!p.runtime, "{name} in {} is start-only", cat.version);
            }
        }
    }

    #[test]
    fn embedded_catalogs_parse() {
        assert_eq!(catalog_errors(), Vec::<String>::new());
        assert!(catalog(Engine::Redis).get("maxmemory").is_some());
        assert!(catalog(Engine::Memcached).get("maxbytes").is_some());
    }

    #[test]
    fn sizes_and_durations_read_as_people_write_them_and_parse_back() {
        assert_eq!(human_size(8 << 30), "8gb");
        assert_eq!(human_size(512 << 20), "512mb");
        assert_eq!(human_size(64 << 10), "64kb");
        assert_eq!(human_size(1000), "1000");
        assert_eq!(human_size(0), "0");
        assert_eq!(human_ms(300_000), "5m");
        assert_eq!(human_ms(90_000), "1m30s");
        assert_eq!(human_ms(250), "250ms");
        assert_eq!(human_ms(7_200_000), "2h");
        assert_eq!(human_ms(0), "0s");
        assert_eq!(human_duration_micros(1_500), "1500us");
        assert_eq!(approx_size(943_718_400), "900mb");
        assert_eq!(approx_size(1_610_612_736), "1.5gb");
        assert_eq!(approx_size(12_595), "12.3kb");
        assert_eq!(approx_size(512), "512 bytes");
        for n in [8u64 << 30, 512 << 20, 1000, 3 << 10] {
            assert_eq!(parse_size(&human_size(n)).unwrap(), n);
        }
        for us in [300_000_000u64, 250_000, 1_500, 86_400_000_000] {
            assert_eq!(parse_duration_micros(&human_duration_micros(us)), Some(us));
        }
        let redis = catalog(Engine::Redis);
        assert_eq!(redis.human("maxmemory", "8589934592"), "8gb");
        assert_eq!(redis.human("maxmemory", "5%"), "5%");
        assert_eq!(redis.human("lfu-decay-time", "5"), "5m");
        assert_eq!(redis.human("timeout", "300"), "5m");
        assert_eq!(redis.human("timeout", "0"), "0");
        assert_eq!(
            redis.human("latency-tracking-info-percentiles", "50 99"),
            "50 99"
        );
        assert_eq!(
            redis.human("maxmemory-policy", "allkeys-lru"),
            "allkeys-lru"
        );
        assert_eq!(redis.human("no-such-parameter", "1024"), "1024");
    }

    #[test]
    fn sizes_in_every_spelling_compare_equal() {
        let c = catalog(Engine::Redis);
        let a = c.normalize("maxmemory", &json!("4gb")).unwrap();
        let b = c.normalize("maxmemory", &json!(4294967296u64)).unwrap();
        let d = c.normalize("maxmemory", &json!("4GB")).unwrap();
        assert_eq!(a, "4294967296");
        assert_eq!(a, b);
        assert_eq!(a, d);
        assert_eq!(parse_size("1k").unwrap(), 1000);
        assert!(parse_size("4 parsecs").is_err());
    }

    #[test]
    fn durations_parse_into_the_engine_unit() {
        assert_eq!(parse_duration_in("5m", DurationUnit::S).unwrap(), 300);
        assert_eq!(parse_duration_in("250ms", DurationUnit::Ms).unwrap(), 250);
        assert_eq!(parse_duration_in("1h30m", DurationUnit::S).unwrap(), 5400);
        assert!(parse_duration_in("250ms", DurationUnit::S).is_err());
        assert!(parse_duration_in("soon", DurationUnit::S).is_err());
    }

    #[test]
    fn booleans_and_enums_normalise() {
        let ty = ParamType::Bool {
            true_word: yes(),
            false_word: no(),
        };
        assert_eq!(normalize_value(&ty, &json!(true)).unwrap(), "yes");
        assert_eq!(normalize_value(&ty, &json!("NO")).unwrap(), "no");
        let ty = ParamType::Enum {
            values: vec!["allkeys-lru".into(), "noeviction".into()],
        };
        assert_eq!(
            normalize_value(&ty, &json!("AllKeys-LRU")).unwrap(),
            "allkeys-lru"
        );
        assert!(normalize_value(&ty, &json!("lru")).is_err());
    }

    #[test]
    fn unordered_lists_compare_equal_in_any_order() {
        let ty = ParamType::List {
            ordered: false,
            values: None,
        };
        assert_eq!(
            normalize_value(&ty, &json!("b a")).unwrap(),
            normalize_value(&ty, &json!(["a", "b"])).unwrap()
        );
    }

    #[test]
    fn percent_sizes_and_minutes_normalise() {
        let c = catalog(Engine::Redis);
        assert_eq!(
            c.normalize("maxmemory-clients", &json!("5%")).unwrap(),
            "5%"
        );
        assert_eq!(
            c.normalize("maxmemory-clients", &json!("1kb")).unwrap(),
            "1024"
        );
        assert!(c.normalize("maxmemory", &json!("5%")).is_err());
        assert!(c.normalize("maxmemory-clients", &json!("101%")).is_err());
        assert_eq!(c.normalize("lfu-decay-time", &json!("2h")).unwrap(), "120");
        let err = parse_duration_in("90s", DurationUnit::Min)
            .unwrap_err()
            .to_string();
        assert!(err.contains("minutes"), "{err}");
    }

    #[test]
    fn catalogs_are_complete_enough_and_consistent() {
        let redis = catalog(Engine::Redis);
        assert!(redis.parameters.len() >= 180, "{}", redis.parameters.len());
        assert!(redis.needs_restart("databases"));
        assert!(!redis.needs_restart("maxmemory"));
        assert!(redis.get("dir").unwrap().protected);
        let mc = catalog(Engine::Memcached);
        for (name, p) in &mc.parameters {
            let settable_at_start =
                p.flag.is_some() || p.flag_true.is_some() || p.flag_false.is_some();
            assert!(
                p.runtime || settable_at_start,
                "{name}: start-only without a flag"
            );
            if p.runtime {
                let cmd = p.command.is_some() || p.command_true.is_some();
                assert!(cmd, "{name}: runtime without a command");
            }
        }
        // Memcached has no credential parameter (SASL and `-Y auth_file` are not in its
        // catalog, so they are refused as unknown).
        assert!(mc.parameters.values().all(|p| !p.secret));
        let secrets: Vec<&str> = redis
            .parameters
            .iter()
            .filter(|(_, p)| p.secret)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(
            secrets,
            [
                "masterauth",
                "masteruser",
                "requirepass",
                "tls-client-key-file-pass",
                "tls-key-file-pass"
            ]
        );
        let refused = redis
            .normalize("requirepass", &json!("hunter2"))
            .unwrap_err();
        assert!(matches!(refused, ValueError::Secret { .. }));
        assert!(!refused.to_string().contains("hunter2"));
        let ev = mc.get("evictions").unwrap();
        assert_eq!(ev.flag_false.as_deref(), Some("-M"));
        assert_eq!(mc.normalize("evictions", &json!(false)).unwrap(), "off");
    }

    #[test]
    fn embedded_catalogs_conform_to_the_catalog_schema() {
        let schema: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/engines/catalog.schema.json"
        )))
        .unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert_eq!(EMBEDDED.len(), PARSED.len());
        for e in &EMBEDDED {
            let doc: serde_json::Value = serde_json::from_str(e.text).unwrap();
            let errors: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", e.file);
        }
    }

    #[test]
    fn a_version_selects_its_catalog_and_omitted_means_the_old_default() {
        let id = |p, v| CatalogId::select(p, v).unwrap();
        assert_eq!(id(Product::Redis, None).version(), "7.0");
        assert_eq!(id(Product::Memcached, None).version(), "1.6");
        assert_eq!(id(Product::Valkey, None).version(), "7.2");
        assert_eq!(id(Product::Redis, Some("7.2.4")).version(), "7.2");
        assert_eq!(id(Product::Memcached, Some("1.6.21")).version(), "1.6");
        assert_eq!(
            id(Product::Redis, None),
            CatalogId::default_for(Engine::Redis)
        );
        assert_eq!(
            id(Product::Valkey, Some("8.0")).get().product,
            Product::Valkey
        );
        assert_eq!(
            id(Product::Valkey, Some("8.0")).get().engine(),
            Engine::Redis
        );
        assert!(id(Product::Redis, Some("7.2"))
            .get()
            .get("locale-collate")
            .is_some());
        assert!(id(Product::Redis, Some("7.0"))
            .get()
            .get("locale-collate")
            .is_none());
        for p in [Product::Redis, Product::Valkey, Product::Memcached] {
            for v in known_versions(p) {
                let c = id(p, Some(v)).get();
                assert_eq!((c.product, c.version.as_str()), (p, v));
                assert!(c.parameters.len() > 10, "{p} {v}");
            }
        }
    }

    #[test]
    fn an_unknown_or_malformed_version_is_an_error_listing_the_known_ones() {
        let e = CatalogId::select(Product::Redis, Some("5.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Redis 5.0 has no catalog; known redis versions: 6.2, 7.0, 7.2, 7.4, 8.0"
        );
        let e = CatalogId::select(Product::Valkey, Some("7.0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Valkey 7.0 has no catalog; known valkey versions: 7.2, 8.0"
        );
        for bad in ["seven", "7", "7.x", "7.2.4.1", "", "-1.0"] {
            let e = CatalogId::select(Product::Redis, Some(bad)).unwrap_err();
            assert!(matches!(e, VersionError::NotAVersion { .. }), "{bad}: {e}");
        }
        assert_eq!(
            CatalogId::select(Product::Redis, Some("7"))
                .unwrap_err()
                .to_string(),
            "`7` is not a version: write major.minor, such as 7.0"
        );
    }

    #[test]
    fn a_parameter_of_another_version_says_which() {
        let r70 = CatalogId::select(Product::Redis, Some("7.0")).unwrap();
        let r72 = CatalogId::select(Product::Redis, Some("7.2")).unwrap();
        let r62 = CatalogId::select(Product::Redis, Some("6.2")).unwrap();
        assert_eq!(
            elsewhere(r70, "locale-collate").as_deref(),
            Some("needs Redis 7.2 or later")
        );
        assert_eq!(
            elsewhere(r72, "aof-disable-auto-gc").as_deref(),
            Some("was removed after Redis 7.0")
        );
        assert_eq!(
            elsewhere(r62, "hide-user-data-from-log").as_deref(),
            Some("needs Redis 7.4 or later")
        );
        assert_eq!(elsewhere(r70, "no-such-thing"), None);
        assert_eq!(
            newest_with(Product::Redis, "aof-disable-auto-gc").map(CatalogId::version),
            Some("7.0")
        );
    }

    #[test]
    fn generated_catalogs_record_their_upstream_and_keep_the_curated_marks() {
        for e in EMBEDDED.iter().filter(|e| e.product != Product::Memcached) {
            let c: Catalog = serde_json::from_str(e.text).unwrap();
            let src = c.source.as_ref().expect(e.file);
            assert_eq!(src.commit.len(), 40, "{}", e.file);
            assert!(src.tag.starts_with(e.version), "{}: {}", e.file, src.tag);
            assert_eq!(src.file, "src/config.c");
            for name in [
                "requirepass",
                "masterauth",
                "masteruser",
                "tls-key-file-pass",
            ] {
                assert!(c.is_secret(name), "{}: {name}", e.file);
            }
            // Read from the source: start-only, protected, an enum's words, a size.
            assert!(c.needs_restart("databases"), "{}", e.file);
            assert!(!c.needs_restart("maxmemory"), "{}", e.file);
            assert!(
                c.get("dir").unwrap().protected || e.version == "6.2",
                "{}",
                e.file
            );
            assert!(matches!(
                c.get("maxmemory").unwrap().ty,
                ParamType::Size { .. }
            ));
            // Kept from the curated notes: a duration's unit and a description.
            assert!(matches!(
                c.get("timeout").unwrap().ty,
                ParamType::Duration {
                    unit: DurationUnit::S,
                    ..
                }
            ));
            assert!(!c.get("maxmemory").unwrap().description.is_empty());
        }
        let v8 = CatalogId::select(Product::Valkey, Some("8.0"))
            .unwrap()
            .get();
        assert!(v8.is_secret("primaryauth") && v8.is_secret("primaryuser"));
        assert!(is_credential(Engine::Redis, "primaryauth"));
        assert!(is_credential(Engine::Redis, "search-password"));
        assert!(!is_credential(Engine::Redis, "search-timeout"));
    }
}
