//! Property tests: no input makes the YAML reader or the loader panic, and every error
//! they report says where, sensibly: line and column from 1, inside the text, a message,
//! and a file that was part of the input.
//!
//! Three kinds of input: arbitrary strings, a soup of YAML tokens (far more likely than
//! random text to reach the parser's deeper states: anchors, tags, flow collections,
//! block scalars), and mutations of valid documents (bytes inserted, deleted or replaced;
//! lines duplicated, dropped, swapped or re-indented), which reach the schema and the
//! semantic checks with almost-valid input. Case counts keep the whole module well
//! under 20 s in a debug build on two cores.

use std::collections::BTreeMap;

use cacheflow::edges::source::{FileProblem, FileSet};
use cacheflow::pure::spec::{self, yaml, Diagnostic};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

const CLUSTER: &str = r#"apiVersion: cacheflow/v1
kind: Cluster
metadata:
  name: web
  labels: {team: checkout, tier: "1"}
spec:
  engine: redis
  version: "7.2"
  profile: base
  parameters:
    maxmemory: 4gb
    maxmemory-policy: allkeys-lru
    hz: 20
  auth:
    username: app
    password: env:REDIS_PASSWORD
  nodes:
    - id: web-1
      address: 10.0.0.1:6379
      shard: s1
      role: primary
    - {id: web-2, address: "10.0.0.2:6379", shard: s1, role: replica, managed: agent}
  rollout:
    stages: [1, "25%", "100%"]
    bake: 5m
    maxUnavailablePerShard: 1
    onFailure: rollback
    gates:
      maxHitRatioDrop: 0.05
      requireUp: true
"#;

const PROFILE: &str = "apiVersion: cacheflow/v1
kind: Profile
metadata:
  name: base
spec:
  engine: redis
  parameters:
    timeout: 300
    appendonly: no
";

const SETTINGS: &str = "apiVersion: cacheflow/v1
kind: Settings
metadata:
  name: settings
spec:
  rolloutDefaults:
    stages: [1, \"100%\"]
    bake: 2m
  drift:
    schedule: \"0 * * * *\"
    notify: [ops]
  notifications:
    - name: ops
      type: webhook
      url: env:OPS_HOOK
";

const POLICY: &str = r#"{"title": "lru only", "properties": {"spec": {"properties": {"parameters": {"properties": {"maxmemory-policy": {"enum": ["allkeys-lru", "volatile-lru"]}}}}}}}"#;

const TOKENS: &[&str] = &[
    "\n",
    "\n",
    "\n",
    " ",
    " ",
    "  ",
    "    ",
    "\t",
    "-",
    "- ",
    ":",
    ": ",
    "?",
    "? ",
    ",",
    "[",
    "]",
    "{",
    "}",
    "&a ",
    "&b ",
    "*a",
    "*b",
    "!!str ",
    "!!int ",
    "!!map ",
    "!x ",
    "!<tag:x> ",
    "|",
    "|-",
    ">",
    "#",
    "# c",
    "'",
    "\"",
    "\\",
    "---",
    "...",
    "%YAML 1.2",
    "%TAG ! !x",
    "key",
    "spec",
    "nodes",
    "id",
    "é",
    "\u{feff}",
    "\r",
    "\r\n",
    "1",
    "-1",
    "1.5",
    "0x1F",
    "~",
    "null",
    "true",
    "yes",
    "apiVersion: cacheflow/v1\n",
    "kind: Cluster\n",
    "metadata:\n  name: web\n",
    "spec:\n",
    "  engine: redis\n",
    "  nodes:\n",
    "    - id: n1\n",
    "      address: 10.0.0.1:6379\n",
    "\u{0}",
    "\u{85}",
    "\u{2028}",
];

/// The lines of `text` as YAML (and editors) count them: breaks at `\r\n`, `\r`, `\n`.
fn lines_of(text: &str) -> Vec<String> {
    text.replace("\r\n", "\n")
        .split(['\n', '\r'])
        .map(str::to_owned)
        .collect()
}

/// Every error says where, within the text it was given: line and column from 1, the
/// line at most one past the last (where an unexpected end of input is reported), the
/// column, counted in characters, on that line or just past its end.
fn check_position(
    lines: &[String],
    line: usize,
    column: usize,
    what: &str,
) -> Result<(), TestCaseError> {
    prop_assert!(line >= 1, "{what}: line {line} < 1");
    prop_assert!(column >= 1, "{what}: column {column} < 1");
    let n = lines.len();
    prop_assert!(line <= n + 1, "{what}: line {line} beyond the {n} lines");
    if let Some(text_line) = lines.get(line - 1) {
        let width = text_line.chars().count();
        prop_assert!(
            column <= width + 1,
            "{what}: column {column} beyond the {width} characters of line {line}"
        );
    }
    Ok(())
}

fn check_parse(text: &str) -> Result<(), TestCaseError> {
    let lines = lines_of(text);
    match yaml::parse(text) {
        Ok(doc) => {
            let mut pointers = Vec::new();
            collect_pointers(&doc.value, String::new(), &mut pointers);
            for p in &pointers {
                let v = doc.value_pos(p);
                check_position(&lines, v.line, v.column, &format!("value at `{p}`"))?;
                let k = doc.key_pos(p);
                check_position(&lines, k.line, k.column, &format!("key at `{p}`"))?;
            }
        }
        Err(e) => {
            prop_assert!(!e.message.trim().is_empty(), "empty message: {e:?}");
            check_position(&lines, e.pos.line, e.pos.column, &e.message)?;
            prop_assert!(e.pointer.is_empty() || e.pointer.starts_with('/'), "{e:?}");
        }
    }
    Ok(())
}

fn collect_pointers(value: &Value, at: String, out: &mut Vec<String>) {
    if out.len() > 2_000 {
        return;
    }
    match value {
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_pointers(v, format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                collect_pointers(v, format!("{at}/{}", yaml::escape_token(k)), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

fn file_set(files: &[(&str, String)]) -> FileSet {
    FileSet {
        commit: None,
        files: files
            .iter()
            .map(|(p, t)| (p.to_string(), t.clone()))
            .collect::<BTreeMap<_, _>>(),
        problems: Vec::new(),
    }
}

fn check_load(set: &FileSet) -> Result<(), TestCaseError> {
    let Err(diags) = spec::load(set) else {
        return Ok(());
    };
    prop_assert!(!diags.is_empty(), "an error result without diagnostics");
    let mut sorted = diags.clone();
    sorted.sort();
    prop_assert_eq!(&sorted, &diags, "diagnostics are not sorted");
    for d in &diags {
        check_diagnostic(set, d)?;
    }
    Ok(())
}

fn check_diagnostic(set: &FileSet, d: &Diagnostic) -> Result<(), TestCaseError> {
    prop_assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
    prop_assert!(
        d.pointer.is_empty() || d.pointer.starts_with('/'),
        "pointer {:?} is not a JSON pointer",
        d.pointer
    );
    let text = set.files.get(&d.file);
    let is_problem = set.problems.iter().any(|p| p.path == d.file);
    prop_assert!(
        text.is_some() || is_problem,
        "diagnostic names a file that was not in the input: {d:?}"
    );
    match text {
        // KNOWN BUG: policy (JSON) errors carry serde_json's column, which counts bytes,
        // not characters; see `a_policy_json_error_column_counts_characters`. Until it is
        // fixed, hold JSON files to the byte width of the line.
        Some(text) if d.file.ends_with(".json") => {
            let bytes: Vec<String> = lines_of(text).iter().map(|l| "x".repeat(l.len())).collect();
            check_position(&bytes, d.line, d.column, &d.to_string())?
        }
        Some(text) => check_position(&lines_of(text), d.line, d.column, &d.to_string())?,
        None => prop_assert!(d.line >= 1 && d.column >= 1, "{d:?}"),
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
    DuplicateLine(usize),
    DropLine(usize),
    SwapLines(usize, usize),
    Indent(usize, bool),
}

/// Bytes that matter to YAML, and now and then any byte at all.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"-:?,[]{}&*!|>#'\"% \n\t0123456789.abcsz~%".to_vec()),
        1 => any::<u8>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<prop::sample::Index>();
    prop_oneof![
        3 => (at.clone(), interesting_byte()).prop_map(|(i, b)| Edit::Insert(i.index(usize::MAX), b)),
        3 => at.clone().prop_map(|i| Edit::Delete(i.index(usize::MAX))),
        3 => (at.clone(), interesting_byte()).prop_map(|(i, b)| Edit::Replace(i.index(usize::MAX), b)),
        1 => at.clone().prop_map(|i| Edit::DuplicateLine(i.index(usize::MAX))),
        1 => at.clone().prop_map(|i| Edit::DropLine(i.index(usize::MAX))),
        1 => (at.clone(), at.clone()).prop_map(|(i, j)| Edit::SwapLines(i.index(usize::MAX), j.index(usize::MAX))),
        1 => (at, any::<bool>()).prop_map(|(i, deeper)| Edit::Indent(i.index(usize::MAX), deeper)),
    ]
}

/// Apply `edits` to `text`; byte edits may break UTF-8, which the loader never sees
/// (the source layer refuses such files), so the result is made valid again lossily.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        let n = bytes.len();
        match *e {
            Edit::Insert(i, b) => bytes.insert(i % (n + 1), b),
            Edit::Delete(i) if n > 0 => {
                bytes.remove(i % n);
            }
            Edit::Replace(i, b) if n > 0 => bytes[i % n] = b,
            Edit::Delete(_) | Edit::Replace(..) => {}
            Edit::DuplicateLine(i)
            | Edit::DropLine(i)
            | Edit::SwapLines(i, _)
            | Edit::Indent(i, _) => {
                let mut lines: Vec<Vec<u8>> =
                    bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                let k = lines.len();
                let a = i % k;
                match *e {
                    Edit::DuplicateLine(_) => {
                        let line = lines[a].clone();
                        lines.insert(a, line);
                    }
                    Edit::DropLine(_) => {
                        lines.remove(a);
                    }
                    Edit::SwapLines(_, j) => lines.swap(a, j % k),
                    Edit::Indent(_, true) => {
                        lines[a].splice(0..0, *b"  ");
                    }
                    Edit::Indent(_, false) => {
                        let strip = lines[a].iter().take(2).take_while(|&&b| b == b' ').count();
                        lines[a].drain(..strip);
                    }
                    _ => unreachable!(),
                }
                bytes = lines.join(&b'\n');
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `cases`, times `CACHEFLOW_FUZZ_SCALE` when set (for a longer hunt by hand).
fn config(cases: u32) -> Config {
    let scale: u32 = std::env::var("CACHEFLOW_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Config {
        cases: cases.saturating_mul(scale),
        failure_persistence: None,
        ..Config::default()
    }
}

/// BUG (src/spec/check.rs `compile_policies`, `column: e.column()`): serde_json counts
/// columns in bytes, YAML positions count characters; a policy with non-ASCII text
/// before the error is reported too far right. Un-ignore once fixed.
#[test]
fn a_policy_json_error_column_counts_characters() {
    let set = file_set(&[(
        "policies/a.schema.json",
        r#"{"title": "é é é", "x": ,}"#.to_owned(),
    )]);
    let diags = spec::load(&set).unwrap_err();
    // The stray `,` is the 25th character (28th byte).
    assert_eq!((diags[0].line, diags[0].column), (1, 25), "{}", diags[0]);
}

#[test]
fn the_valid_seed_documents_load() {
    // The mutation tests start from valid input; make sure it is.
    let set = file_set(&[
        ("cacheflow.yaml", SETTINGS.to_owned()),
        ("profiles/base.yaml", PROFILE.to_owned()),
        ("clusters/web.yaml", CLUSTER.to_owned()),
        ("policies/lru.schema.json", POLICY.to_owned()),
    ]);
    if let Err(diags) = spec::load(&set) {
        panic!("{diags:#?}");
    }
}

proptest! {
    #![proptest_config(config(6000))]

    #[test]
    fn yaml_parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_parse(&text)?;
    }

    #[test]
    fn yaml_parse_never_panics_on_printable_text(text in "[ -~\n\t]{0,300}") {
        check_parse(&text)?;
    }

    #[test]
    fn yaml_parse_never_panics_on_token_soup(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)
    ) {
        check_parse(&tokens.concat())?;
    }
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn load_never_panics_on_token_soup_in_every_kind_of_file(
        tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80),
        path in prop::sample::select(vec![
            "cacheflow.yaml", "clusters/web.yaml", "profiles/base.yaml", "clusters/a/b.yml",
        ]),
    ) {
        let set = file_set(&[(path, tokens.concat())]);
        check_load(&set)?;
    }

    #[test]
    fn load_never_panics_on_a_mutated_cluster(
        edits in prop::collection::vec(edit(), 1..8)
    ) {
        let text = mutate(CLUSTER, &edits);
        check_parse(&text)?;
        let set = file_set(&[
            ("cacheflow.yaml", SETTINGS.to_owned()),
            ("profiles/base.yaml", PROFILE.to_owned()),
            ("clusters/web.yaml", text),
            ("policies/lru.schema.json", POLICY.to_owned()),
        ]);
        check_load(&set)?;
    }

    #[test]
    fn load_never_panics_on_mutated_settings_profile_and_policy(
        settings in prop::collection::vec(edit(), 0..4),
        profile in prop::collection::vec(edit(), 0..4),
        policy in prop::collection::vec(edit(), 0..3),
    ) {
        let mut set = file_set(&[
            ("cacheflow.yaml", mutate(SETTINGS, &settings)),
            ("profiles/base.yaml", mutate(PROFILE, &profile)),
            ("clusters/web.yaml", CLUSTER.to_owned()),
            ("clusters/api.yaml", CLUSTER.replace("name: web", "name: api").replace("web-", "api-")),
            ("policies/lru.schema.json", mutate(POLICY, &policy)),
        ]);
        // A file the source layer could not read travels beside the others.
        set.problems.push(FileProblem {
            path: "clusters/huge.yaml".to_owned(),
            message: "file is 1.5 MiB; cacheflow reads files up to 1 MiB".to_owned(),
        });
        check_load(&set)?;
    }
}

/// Values of every JSON type, nested a little, biased towards the words cacheflow reads.
fn random_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e20f64..1e20).prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "1.0",
            "-1",
            "0%",
            "50%",
            "100%",
            "101%",
            "5m",
            "0s",
            "1500us",
            "1h30m",
            "soon",
            "env:X",
            "file:/x",
            "primary",
            "replica",
            "direct",
            "agent",
            "redis",
            "memcached",
            "4gb",
            "lots",
            "yes",
            "allkeys-lru",
            "web-1",
            "s1",
            "base",
            "10.0.0.1:6379",
            "[::1]:0",
            "Web_1",
            "rollback",
        ])
        .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z%/~-]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CLUSTER_POINTERS: &[&str] = &[
    "",
    "/spec",
    "/metadata",
    "/metadata/name",
    "/metadata/labels",
    "/spec/engine",
    "/spec/profile",
    "/spec/version",
    "/spec/parameters",
    "/spec/parameters/maxmemory",
    "/spec/parameters/hz",
    "/spec/parameters/timeout",
    "/spec/parameters/appendonly",
    "/spec/parameters/maxmemory-policy",
    "/spec/auth",
    "/spec/nodes",
    "/spec/nodes/0",
    "/spec/nodes/0/id",
    "/spec/nodes/0/address",
    "/spec/nodes/1/shard",
    "/spec/nodes/1/role",
    "/spec/nodes/1/managed",
    "/spec/rollout",
    "/spec/rollout/stages",
    "/spec/rollout/stages/1",
    "/spec/rollout/bake",
    "/spec/rollout/applyTimeout",
    "/spec/rollout/maxUnavailablePerShard",
    "/spec/rollout/onFailure",
    "/spec/rollout/gates",
    "/spec/rollout/gates/maxHitRatioDrop",
];

/// Put `value` at `pointer` (creating the last step of an object, replacing the root).
fn set_at(doc: &mut Value, pointer: &str, value: Value) {
    if pointer.is_empty() {
        *doc = value;
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(last.to_owned(), value);
        }
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => items[i] = value,
            _ => items.push(value),
        },
        _ => {}
    }
}

/// The parsed seed document, re-rendered as JSON (which is YAML) after an edit.
fn cluster_with(edits: &[(&str, Value)]) -> String {
    let mut doc = yaml::parse(CLUSTER).expect("the seed parses").value;
    for (pointer, value) in edits {
        set_at(&mut doc, pointer, value.clone());
    }
    serde_json::to_string_pretty(&doc).expect("JSON")
}

proptest! {
    #![proptest_config(config(1500))]

    #[test]
    fn load_never_panics_on_random_values_in_a_valid_cluster(
        edits in prop::collection::vec(
            (prop::sample::select(CLUSTER_POINTERS), random_value()), 1..4)
    ) {
        let set = file_set(&[
            ("cacheflow.yaml", SETTINGS.to_owned()),
            ("profiles/base.yaml", PROFILE.to_owned()),
            ("clusters/web.yaml", cluster_with(&edits)),
            ("policies/lru.schema.json", POLICY.to_owned()),
        ]);
        check_load(&set)?;
    }

    #[test]
    fn a_secret_written_in_place_of_a_reference_never_reaches_a_message(
        secret in prop_oneof![
            "S3CRET[A-Za-z0-9+/=:@.-]{4,24}".prop_map(Value::from),
            (10_000_000_000u64..u64::MAX).prop_map(Value::from),
            "S3CRET[a-z]{4,8}".prop_map(|s| Value::Array(vec![Value::from(s)])),
        ],
        in_settings in any::<bool>(),
    ) {
        let shown = match &secret {
            Value::Array(items) => items[0].as_str().unwrap_or_default().to_owned(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let (cluster, settings) = if in_settings {
            let mut doc = yaml::parse(SETTINGS).expect("settings parse").value;
            set_at(&mut doc, "/spec/notifications/0/url", secret);
            (CLUSTER.to_owned(), serde_json::to_string(&doc).expect("JSON"))
        } else {
            (cluster_with(&[("/spec/auth/password", secret)]), SETTINGS.to_owned())
        };
        let set = file_set(&[
            ("cacheflow.yaml", settings),
            ("profiles/base.yaml", PROFILE.to_owned()),
            ("clusters/web.yaml", cluster),
        ]);
        let diags = spec::load(&set).err().unwrap_or_default();
        prop_assert!(!diags.is_empty(), "a literal secret was accepted");
        for d in &diags {
            prop_assert!(!d.to_string().contains(&shown), "secret echoed: {d}");
        }
    }
}
