//! The layout as a test: the four layers of `src/lib.rs` and the rules between them.
//!
//! Every `crate::` path in the library's code (test modules left out: a test may reach
//! for anything) is read as an arrow from its file's room to the room it names. A room is
//! a module directly under a layer (`pure::spec`, `edges::nodes`, `flow::runtime`...).
//! The rules: an arrow points down or sideways, never up (`pure` ← `edges` ← `flow` ←
//! `entry`); no two rooms import each other, directly or round a loop; and the pure core
//! names no crate that does I/O or reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const LAYERS: [&str; 4] = ["pure", "edges", "flow", "entry"];

/// What the pure core must not name: the async runtime, git, HTTP, the file system,
/// processes and the clock belong to the edges.
const IO_IN_PURE: [&str; 9] = [
    "tokio::",
    "git2::",
    "reqwest::",
    "axum::",
    "std::fs",
    "std::process",
    "std::net",
    "SystemTime::now",
    "Utc::now",
];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The library code of a file: test modules (`#[cfg(test)]` to the end, and files named
/// `tests.rs`) are left out.
fn library_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = fs::read_to_string(path).expect("a source file is readable");
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// `src/pure/spec/check.rs` → `pure::spec`; `src/lib.rs` → None.
fn room_of_file(src: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.len() < 2 || !LAYERS.contains(&parts[0].as_str()) {
        return None;
    }
    Some(format!("{}::{}", parts[0], parts[1]))
}

/// Every `crate::layer::room` a piece of code names (comments included: a doc link
/// that names a room higher up is an arrow up for a reader too).
fn rooms_named(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut segs = path.split("::");
        if let (Some(layer), Some(room)) = (segs.next(), segs.next()) {
            if LAYERS.contains(&layer) && !room.is_empty() {
                out.insert(format!("{layer}::{room}"));
            }
        }
    }
    out
}

fn layer(room: &str) -> usize {
    let name = room.split("::").next().unwrap_or_default();
    LAYERS
        .iter()
        .position(|l| *l == name)
        .expect("a known layer")
}

struct House {
    arrows: BTreeMap<String, BTreeSet<String>>,
    code: BTreeMap<PathBuf, String>,
}

fn house() -> House {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut code = BTreeMap::new();
    for path in all {
        let text = library_code(&path);
        if let Some(room) = room_of_file(&src, &path) {
            let named = rooms_named(&text);
            let entry = arrows.entry(room.clone()).or_default();
            entry.extend(named.into_iter().filter(|r| *r != room));
        }
        code.insert(path, text);
    }
    House { arrows, code }
}

#[test]
fn no_arrow_runs_back_up() {
    let house = house();
    let up: Vec<String> = house
        .arrows
        .iter()
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| layer(t) > layer(from))
                .map(move |t| format!("{from} → {t}"))
        })
        .collect();
    assert_eq!(
        up,
        Vec::<String>::new(),
        "imports from a lower layer to a higher one"
    );
}

#[test]
fn no_two_rooms_import_each_other() {
    let house = house();
    // Depth-first search for a loop; each loop is reported once, from its smallest room.
    let mut loops = BTreeSet::new();
    for start in house.arrows.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in house.arrows.get(&at).into_iter().flatten() {
                if next == start {
                    let smallest = path.iter().min().expect("a path has a room");
                    if smallest == start {
                        loops.insert(format!("{} → {start}", path.join(" → ")));
                    }
                } else if !path.contains(next) && path.len() < 12 {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert_eq!(
        loops,
        BTreeSet::<String>::new(),
        "rooms that import each other"
    );
}

#[test]
fn the_pure_core_does_no_io_and_reads_no_clock() {
    let house = house();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join("pure");
    let mut found = Vec::new();
    for (path, code) in &house.code {
        if !path.starts_with(&src) {
            continue;
        }
        for word in IO_IN_PURE {
            if code.contains(word) {
                found.push(format!("{}: {word}", path.display()));
            }
        }
    }
    assert_eq!(
        found,
        Vec::<String>::new(),
        "I/O or a clock in the pure core"
    );
}
