//! The engine config files an agent writes for start-only parameters, edited so that
//! what a person wrote there stays as it was.
//!
//! - **Redis** (`redis.conf`): each directive the agent sets replaces the lines of that
//!   directive in place (the first one keeps its position, repeats are dropped) or is
//!   appended, as `CONFIG REWRITE` itself does. Comments and other lines are untouched.
//! - **Memcached** has no config file of its own; packages start it from an options file
//!   (Debian's `/etc/memcached.conf`: one command-line option per line, `#` comments).
//!   The agent owns one block in it, between `# BEGIN cacheflow` and `# END cacheflow`,
//!   placed last so that its options win over earlier ones, and writes there the
//!   start flags of every parameter it was assigned (memcached forgets run-time changes
//!   when it restarts, so they belong in the file too).
//!
//! Files are replaced atomically: written to a temporary file beside the target, synced,
//! then renamed over it, so a crash leaves the old file or the new one, never half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::pure::catalog::{catalog, Engine, ParamSpec, ParamType};

/// The first and last line of the block the agent owns in a memcached options file.
pub const BLOCK_BEGIN: &str =
    "# BEGIN cacheflow (managed by the cacheflow agent; edits inside are replaced)";
pub const BLOCK_END: &str = "# END cacheflow";

/// Set Redis directives in the text of a `redis.conf`.
pub fn redis_set(text: &str, params: &BTreeMap<String, String>) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for (name, value) in params {
        let line = format!("{name} {}", redis_value(name, value));
        let mut first = None;
        let mut i = 0;
        while i < lines.len() {
            if directive(&lines[i]).is_some_and(|d| d.eq_ignore_ascii_case(name)) {
                if first.is_none() {
                    lines[i] = line.clone();
                    first = Some(i);
                    i += 1;
                } else {
                    lines.remove(i);
                }
            } else {
                i += 1;
            }
        }
        if first.is_none() {
            lines.push(line);
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The directive name of a config line, if it is one.
fn directive(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split_whitespace().next()
}

/// A value as a redis.conf argument list: lists and `replicaof` are several words;
/// other values are one argument, double-quoted when empty or when they hold a space, a
/// quote or a backslash.
fn redis_value(name: &str, value: &str) -> String {
    let spec = catalog(Engine::Redis).get(name);
    let several_words = matches!(spec.map(|s| &s.ty), Some(ParamType::List { .. }))
        || matches!(name, "replicaof" | "slaveof" | "save");
    if several_words && !value.is_empty() {
        return value.to_owned();
    }
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c.is_control());
    if plain {
        return value.to_owned();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Why a memcached options file cannot be written for an assignment.
#[derive(Debug, thiserror::Error)]
pub enum ConffileError {
    #[error("the cacheflow block has no `{BLOCK_END}` line; mend the file by hand")]
    UnclosedBlock,
    #[error("unknown memcached parameter `{0}`")]
    UnknownParameter(String),
    #[error("`{0}` has no start flag")]
    NoStartFlag(String),
    #[error("unclosed `{{` in the flag of `{0}`")]
    UnclosedFlag(String),
    #[error("`{name}` is set at start together with `{other}`, which is not assigned")]
    NotAssigned { name: String, other: String },
    #[error(transparent)]
    Unit(#[from] crate::edges::nodes::memcached::UnitError),
}

/// Replace (or add, last) the cacheflow block of a memcached options file. A block
/// whose end line is missing is an error: what follows its start may be a person's own
/// options, and guessing would drop them.
pub fn memcached_block(text: &str, options: &[String]) -> Result<String, ConffileError> {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim() == BLOCK_BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if line.trim() == BLOCK_END {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if inside {
        return Err(ConffileError::UnclosedBlock);
    }
    out.push_str(BLOCK_BEGIN);
    out.push('\n');
    for o in options {
        out.push_str(o);
        out.push('\n');
    }
    out.push_str(BLOCK_END);
    out.push('\n');
    Ok(out)
}

/// The options of a memcached options file outside comments, one per line, as the
/// Debian wrapper passes them to memcached.
pub fn memcached_options(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// What a memcached options file makes memcached run with: the parameters its options
/// set, normalised as `stats settings` prints them, later options winning (memcached
/// reads its command line in order). `-o a=1,b` lists are split; options the catalog
/// does not know (`-u`, `-P`, `-d`, ...) are skipped.
pub fn memcached_persisted(text: &str) -> BTreeMap<String, String> {
    let cat = catalog(Engine::Memcached);
    let words: Vec<String> = memcached_options(text)
        .iter()
        .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let mut out = BTreeMap::new();
    let mut set = |name: &str, spec: &ParamSpec, raw: &str| {
        out.insert(name.to_owned(), from_flag_value(name, spec, raw));
    };
    let mut i = 0;
    while i < words.len() {
        let word = words[i].as_str();
        if word == "-o" {
            if let Some(list) = words.get(i + 1) {
                for item in list.split(',') {
                    let (key, value) = match item.split_once('=') {
                        Some((k, v)) => (k, Some(v)),
                        None => (item, None),
                    };
                    for (name, spec) in &cat.parameters {
                        match value {
                            Some(v) if spec.flag.as_deref() == Some(&format!("-o {key}={{}}")) => {
                                set(name, spec, v)
                            }
                            None => {
                                if let Some(word) = bool_word(spec, &format!("-o {key}")) {
                                    set(name, spec, &word);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            i += 2;
            continue;
        }
        let mut took_value = false;
        for (name, spec) in &cat.parameters {
            if spec.flag.as_deref() == Some(word) {
                if let Some(v) = words.get(i + 1) {
                    set(name, spec, v);
                    took_value = true;
                }
            } else if let Some(w) = bool_word(spec, word) {
                set(name, spec, &w);
            }
        }
        i += if took_value { 2 } else { 1 };
    }
    out
}

/// The boolean word an option sets, when `option` is the parameter's true or false flag.
fn bool_word(spec: &ParamSpec, option: &str) -> Option<String> {
    let ParamType::Bool {
        true_word,
        false_word,
    } = &spec.ty
    else {
        return None;
    };
    if spec.flag_true.as_deref() == Some(option) {
        Some(true_word.clone())
    } else if spec.flag_false.as_deref() == Some(option) {
        Some(false_word.clone())
    } else {
        None
    }
}

/// A value as written after its flag, back to what `stats settings` prints (`-m 64` →
/// `67108864`, `-B auto` → `auto-negotiate`).
fn from_flag_value(name: &str, spec: &ParamSpec, raw: &str) -> String {
    let raw = spec
        .flag_values
        .as_ref()
        .and_then(|m| {
            m.iter()
                .find(|(_, v)| v.as_str() == raw)
                .map(|(k, _)| k.clone())
        })
        .unwrap_or_else(|| raw.to_owned());
    if let (Some(unit), Ok(n)) = (spec.flag_unit.filter(|u| *u > 1), raw.parse::<u64>()) {
        return n.saturating_mul(unit).to_string();
    }
    catalog(Engine::Memcached)
        .normalize(name, &serde_json::Value::String(raw.clone()))
        .unwrap_or(raw)
}

/// The memcached start options for an assignment (normalised values): one line per
/// parameter that has a flag, skipping booleans at their default (they have no flag) and
/// the few run-time parameters memcached has no start flag for (`verbosity`): those
/// cannot be persisted and are lost when memcached restarts.
pub fn memcached_start_options(
    params: &BTreeMap<String, String>,
) -> Result<Vec<String>, ConffileError> {
    let cat = catalog(Engine::Memcached);
    let mut out = Vec::new();
    for (name, value) in params {
        let spec = cat
            .get(name)
            .ok_or_else(|| ConffileError::UnknownParameter(name.clone()))?;
        let has_flag = spec.flag.is_some() || spec.flag_true.is_some() || spec.flag_false.is_some();
        if !has_flag {
            continue;
        }
        if let Some(words) = start_words(name, spec, value, params)? {
            out.push(words);
        }
    }
    Ok(out)
}

/// The command-line words that start memcached with `name` = `value`; `None` when the
/// value is the default of a flag-less boolean.
pub fn start_words(
    name: &str,
    spec: &ParamSpec,
    value: &str,
    all: &BTreeMap<String, String>,
) -> Result<Option<String>, ConffileError> {
    let template = match &spec.ty {
        ParamType::Bool { true_word, .. } => {
            let flag = if value == true_word {
                &spec.flag_true
            } else {
                &spec.flag_false
            };
            match flag {
                Some(f) => f.clone(),
                None => return Ok(None),
            }
        }
        _ => {
            let Some(flag) = &spec.flag else {
                return Err(ConffileError::NoStartFlag(name.to_owned()));
            };
            let v = flag_value(spec, value)?;
            if flag.contains("{}") {
                flag.replace("{}", &v)
            } else {
                format!("{flag} {v}")
            }
        }
    };
    // `{other}`: the value of another parameter the same flag carries.
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| c + open)
            .ok_or_else(|| ConffileError::UnclosedFlag(name.to_owned()))?;
        let other = &rest[open + 1..close];
        let v = all.get(other).ok_or_else(|| ConffileError::NotAssigned {
            name: name.to_owned(),
            other: other.to_owned(),
        })?;
        let other_spec = catalog(Engine::Memcached)
            .get(other)
            .ok_or_else(|| ConffileError::UnknownParameter(other.to_owned()))?;
        out.push_str(&flag_value(other_spec, v)?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// A normalised value in the unit and spelling of its flag (`67108864` → `64` for `-m`).
fn flag_value(spec: &ParamSpec, value: &str) -> Result<String, ConffileError> {
    if spec.flag_unit.is_some_and(|u| u > 1) {
        return Ok(crate::edges::nodes::memcached::in_command_unit(
            spec, value,
        )?);
    }
    Ok(spec
        .flag_values
        .as_ref()
        .and_then(|m| m.get(value).cloned())
        .unwrap_or_else(|| value.to_owned()))
}

/// Replace `path` with `text` atomically (temporary file, fsync, rename), keeping the
/// old file's permissions.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".to_owned());
    let tmp = dir.join(format!(".{name}.cacheflow-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        if let Ok(meta) = std::fs::metadata(path) {
            std::fs::set_permissions(&tmp, meta.permissions())?;
            // Keep the owner too (an agent running as root must not leave redis.conf
            // owned by root); only root may give a file away, so a refusal is fine.
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
            }
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn redis_directives_are_replaced_in_place_or_appended() {
        let text = "# my redis\nport 6379\ndatabases 16\n# keep me\nDatabases 8\nsave 60 1\n";
        let out = redis_set(
            text,
            &map(&[
                ("databases", "32"),
                ("logfile", ""),
                ("replicaof", "10.0.0.1 6379"),
            ]),
        );
        assert_eq!(
            out,
            "# my redis\nport 6379\ndatabases 32\n# keep me\nsave 60 1\nlogfile \"\"\nreplicaof 10.0.0.1 6379\n"
        );
        // What Redis reads back is what was set.
        let parsed = crate::edges::nodes::redis::parse_config_file(&out);
        assert_eq!(parsed["databases"], "32");
        assert_eq!(parsed["logfile"], "");
        assert_eq!(parsed["replicaof"], "10.0.0.1 6379");
        let odd = redis_set("", &map(&[("syslog-ident", "a \"b\"\\c")]));
        assert_eq!(
            crate::edges::nodes::redis::parse_config_file(&odd)["syslog-ident"],
            "a \"b\"\\c"
        );
    }

    #[test]
    fn the_memcached_block_is_replaced_and_stays_last() {
        let text = "# Debian\n-m 64\n-p 11211\n";
        let once = memcached_block(text, &["-m 128".into(), "-c 2048".into()]).unwrap();
        assert_eq!(
            once,
            format!("# Debian\n-m 64\n-p 11211\n{BLOCK_BEGIN}\n-m 128\n-c 2048\n{BLOCK_END}\n")
        );
        let twice = memcached_block(&once, &["-m 256".into()]).unwrap();
        assert_eq!(
            twice,
            format!("# Debian\n-m 64\n-p 11211\n{BLOCK_BEGIN}\n-m 256\n{BLOCK_END}\n")
        );
        let open = format!("-m 64\n{BLOCK_BEGIN}\n-m 128\n# mine\n-t 8\n");
        assert!(memcached_block(&open, &[])
            .unwrap_err()
            .to_string()
            .contains("no `# END cacheflow` line"));
        assert_eq!(
            memcached_options(&twice),
            vec!["-m 64", "-p 11211", "-m 256"]
        );
    }

    #[test]
    fn a_memcached_options_file_reads_back_as_parameters() {
        let text = "# Debian\n-m 64\n-c 1024\n-u memcache\n-o hot_lru_pct=30,no_lru_crawler\n\
                    -B auto\n-M\n-m 128\n";
        let p = memcached_persisted(text);
        assert_eq!(p["maxbytes"], "134217728", "the later -m wins");
        assert_eq!(p["maxconns"], "1024");
        assert_eq!(p["hot_lru_pct"], "30");
        assert_eq!(p["lru_crawler"], "no");
        assert_eq!(p["binding_protocol"], "auto-negotiate");
        assert_eq!(p["evictions"], "off");
        assert_eq!(p.len(), 6, "{p:?}");
        // What the agent writes reads back as what it was given.
        let given = map(&[
            ("maxbytes", "268435456"),
            ("maxconns", "4096"),
            ("evictions", "off"),
        ]);
        let file = memcached_block("", &memcached_start_options(&given).unwrap()).unwrap();
        assert_eq!(memcached_persisted(&file), given);
    }

    #[test]
    fn memcached_start_options_follow_the_catalog() {
        let opts = memcached_start_options(&map(&[
            ("maxbytes", "134217728"),
            ("maxconns", "2048"),
            ("evictions", "off"),
            ("cas_enabled", "yes"),
            ("binding_protocol", "auto-negotiate"),
            ("hot_lru_pct", "20"),
        ]))
        .unwrap();
        assert_eq!(
            opts,
            vec!["-B auto", "-M", "-o hot_lru_pct=20", "-m 128", "-c 2048"]
        );
        // verbosity has no start flag: not in the file.
        assert_eq!(
            memcached_start_options(&map(&[("verbosity", "1"), ("maxconns", "10")])).unwrap(),
            vec!["-c 10"]
        );
        let e = memcached_start_options(&map(&[("maxbytes", "1000")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a whole number"), "{e}");
        let e = memcached_start_options(&map(&[("nope", "1")]))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown memcached parameter `nope`");
    }
}
