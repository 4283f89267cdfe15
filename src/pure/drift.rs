//! Drift: where the live fleet has moved away from what the repository declares, and
//! the report on-call reads (Markdown, JSON, and a self-contained HTML page).
//!
//! Four kinds, per node:
//!
//! | kind | what | seen as |
//! | --- | --- | --- |
//! | `differs` | a live value is not the declared one (someone ran `CONFIG SET` by hand) | the plan's change for the node |
//! | `not-persisted` | the live value is right but the node would start with another: lost on restart | the node's config file (Redis on loopback or through an agent); a value the file leaves out starts at the default of the engine version the node runs |
//! | `silent` | a declared node that did not answer | unreachable in the reading |
//! | `undeclared` | a node that reports but no cluster declares | in the reading, not in the repository |
//!
//! Beside them, `topology` notes: a node whose live role or shard is not the declared one
//! ("declared primary, runs as a replica of b2", after a failover). Reported, not counted
//! as drift: a failover is the fleet doing its job, and the plan follows the live roles.
//!
//! A pure function of the desired state and a reading; the same inputs give the same
//! report byte for byte (the time it was made is passed in).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::pure::catalog::{self, parse_size, Catalog, CatalogId, Engine};
use crate::pure::diff;
use crate::pure::live::LiveState;
use crate::pure::render::{code, md_cell, short};
use crate::pure::spec::model::{Cluster, Desired, Param};
use crate::pure::topology::{self, TopologyNote};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    /// When the reading was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The commit the declared state was read from.
    pub revision: Option<String>,
    pub clusters: Vec<ClusterDrift>,
    /// Nodes in the reading that no cluster declares.
    pub undeclared: Vec<String>,
    /// Clusters left out, with why (the server's runs: a rollout in flight changes
    /// nodes on purpose; a rolled-back revision leaves them on the previous one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_compared: Vec<NotCompared>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotCompared {
    pub cluster: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDrift {
    pub cluster: String,
    /// The cluster's engine: how its values read for people (`8gb`, `5m`). Absent in
    /// reports written before it was recorded (their values are shown as the engine
    /// reports them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
    pub nodes: usize,
    /// Nodes with at least one drifted parameter.
    pub drifted: Vec<NodeDrift>,
    /// Declared nodes that did not answer, with why.
    pub silent: Vec<Silent>,
    /// Nodes whose live role or shard is not the declared one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology: Vec<TopologyNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeDrift {
    pub node: String,
    pub parameters: Vec<ParamDrift>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamDrift {
    pub name: String,
    pub kind: DriftKind,
    pub expected: String,
    /// The live value (`differs`) or the config file's (`not-persisted`; `None`: the file
    /// does not set it, so a restart brings the default back).
    pub found: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    Differs,
    NotPersisted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silent {
    pub node: String,
    pub reason: String,
}

impl DriftReport {
    /// True when nothing drifted, no declared node is silent and none is undeclared.
    pub fn clean(&self) -> bool {
        self.undeclared.is_empty()
            && self
                .clusters
                .iter()
                .all(|c| c.drifted.is_empty() && c.silent.is_empty())
    }

    /// One line for a heading: "no drift" or how many nodes drifted.
    pub fn status(&self) -> String {
        if self.clean() {
            "no drift".to_owned()
        } else {
            format!("{} node(s) drifted or silent", self.drifted_nodes())
        }
    }

    /// Nodes drifted or silent, over the fleet (the `/metrics` gauge, the chart's point).
    pub fn drifted_nodes(&self) -> usize {
        self.clusters
            .iter()
            .map(|c| c.drifted.len() + c.silent.len())
            .sum::<usize>()
            + self.undeclared.len()
    }

    /// Nodes drifted (changed by hand, not persisted) or undeclared: silent ones left out.
    pub fn drifted_only(&self) -> usize {
        self.clusters.iter().map(|c| c.drifted.len()).sum::<usize>() + self.undeclared.len()
    }

    /// Declared nodes that did not answer.
    pub fn silent_nodes(&self) -> usize {
        self.clusters.iter().map(|c| c.silent.len()).sum()
    }
}

/// Compare every declared node of `desired` with its reading in `live`.
pub fn compute(desired: &Desired, live: &LiveState, generated_at: &str) -> DriftReport {
    let mut declared = std::collections::HashSet::new();
    let mut clusters = Vec::new();
    for (name, cluster) in &desired.clusters {
        let mut drifted = Vec::new();
        let mut silent = Vec::new();
        for node in &cluster.nodes {
            declared.insert(node.id.as_str());
            let Some(reading) = live.nodes.get(&node.id).filter(|r| r.reachable) else {
                let reason = live
                    .nodes
                    .get(&node.id)
                    .and_then(|r| r.error.clone())
                    .unwrap_or_else(|| "not in the reading".to_owned());
                silent.push(Silent {
                    node: node.id.clone(),
                    reason,
                });
                continue;
            };
            let mut parameters: Vec<ParamDrift> =
                diff::node_changes(cluster.catalog(), &cluster.parameters, &reading.parameters)
                    .into_iter()
                    .filter_map(|c| {
                        Some(ParamDrift {
                            expected: c.new?,
                            name: c.name,
                            kind: DriftKind::Differs,
                            found: c.old,
                        })
                    })
                    .collect();
            if let Some(file) = &reading.persisted {
                let live_wrong: std::collections::HashSet<String> =
                    parameters.iter().map(|p| p.name.clone()).collect();
                let runs = node_catalog(cluster, reading.version.as_deref());
                let starts_with = start_values(runs, &cluster.parameters, file);
                // Only what the file can hold: start-only parameters are in it by nature.
                parameters.extend(
                    diff::node_changes(cluster.catalog(), &cluster.parameters, &starts_with)
                        .into_iter()
                        .filter(|c| !live_wrong.contains(&c.name))
                        .filter_map(|c| {
                            Some(ParamDrift {
                                expected: c.new?,
                                // What the file says; `None` when it says nothing.
                                found: file.get(&c.name).cloned(),
                                name: c.name,
                                kind: DriftKind::NotPersisted,
                            })
                        }),
                );
            }
            if !parameters.is_empty() {
                parameters.sort_by(|a, b| a.name.cmp(&b.name).then(a.kind.cmp(&b.kind)));
                drifted.push(NodeDrift {
                    node: node.id.clone(),
                    parameters,
                });
            }
        }
        clusters.push(ClusterDrift {
            cluster: name.clone(),
            engine: Some(cluster.engine),
            nodes: cluster.nodes.len(),
            drifted,
            silent,
            topology: topology::resolve_live(cluster, live).notes,
        });
    }
    let undeclared = live
        .nodes
        .keys()
        .filter(|id| !declared.contains(id.as_str()))
        .cloned()
        .collect();
    DriftReport {
        generated_at: generated_at.to_owned(),
        revision: desired.commit.clone(),
        clusters,
        undeclared,
        not_compared: Vec::new(),
    }
}

/// The catalog of the engine version a node runs: its cluster's product at the version the
/// node reports (major.minor). `None` when the node names no version, or one cacheflow has
/// no catalog for: then no default is assumed.
pub fn node_catalog(cluster: &Cluster, version: Option<&str>) -> Option<&'static Catalog> {
    CatalogId::select(cluster.product, Some(version?))
        .ok()
        .map(CatalogId::get)
}

/// What a node starts with, for each declared parameter, given the parameters its config
/// file sets (`file`): the file's value, else the default of the engine version it runs
/// (`runs`; `CONFIG REWRITE` leaves out every value equal to its default, so a declared
/// default is persisted by its absence). A parameter neither in the file nor with a known
/// default is left out: a restart brings back something cacheflow cannot name.
/// `client-output-buffer-limit`, written by `CONFIG REWRITE` one class per line and only
/// for the classes off their default, is the file's classes laid over the default's.
pub fn start_values(
    runs: Option<&Catalog>,
    declared: &BTreeMap<String, Param>,
    file: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let default = |name: &str| {
        runs.and_then(|c| c.get(name))
            .filter(|spec| !spec.secret)
            .and_then(|spec| spec.default.clone())
    };
    declared
        .keys()
        .filter_map(|name| {
            let value = match (file.get(name), default(name)) {
                (Some(v), Some(d)) if name == "client-output-buffer-limit" => {
                    buffer_limits_over(&d, v).unwrap_or_else(|| v.clone())
                }
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d,
                (None, None) => return None,
            };
            Some((name.clone(), value))
        })
        .collect()
}

/// `client-output-buffer-limit` classes of `file` over those of `default`, as the engine
/// reports them: `normal`, `slave`, `pubsub`, sizes in bytes. `None` when either does not
/// read as `<class> <hard> <soft> <seconds>` groups.
fn buffer_limits_over(default: &str, file: &str) -> Option<String> {
    let classes = |text: &str| -> Option<Vec<(String, [String; 3])>> {
        let words: Vec<&str> = text.split_whitespace().collect();
        if !words.len().is_multiple_of(4) {
            return None;
        }
        words
            .chunks(4)
            .map(|w| {
                let class = match w[0].to_ascii_lowercase().as_str() {
                    "replica" | "slave" => "slave".to_owned(),
                    c @ ("normal" | "pubsub") => c.to_owned(),
                    _ => return None,
                };
                let size = |t: &str| parse_size(t).ok().map(|n| n.to_string());
                Some((
                    class,
                    [
                        size(w[1])?,
                        size(w[2])?,
                        w[3].parse::<u64>().ok()?.to_string(),
                    ],
                ))
            })
            .collect()
    };
    let mut merged = classes(default)?;
    for (class, limits) in classes(file)? {
        match merged.iter_mut().find(|(c, _)| *c == class) {
            Some(slot) => slot.1 = limits,
            None => merged.push((class, limits)),
        }
    }
    Some(
        merged
            .iter()
            .map(|(c, [hard, soft, secs])| format!("{c} {hard} {soft} {secs}"))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A drifted value as people write it (`8gb`, `5m`: [`catalog::Catalog::human`]).
fn human(c: &ClusterDrift, p: &ParamDrift, value: &str) -> String {
    match c.engine {
        Some(engine) => catalog::catalog(engine).human(&p.name, value),
        None => value.to_owned(),
    }
}

fn expected(c: &ClusterDrift, p: &ParamDrift) -> String {
    human(c, p, &p.expected)
}

fn found(c: &ClusterDrift, p: &ParamDrift) -> String {
    match (&p.found, p.kind) {
        (Some(v), _) => human(c, p, v),
        (None, DriftKind::Differs) => "(not reported)".to_owned(),
        (None, DriftKind::NotPersisted) => "(not in the config file)".to_owned(),
    }
}

/// The value a node reported, as the engine wrote it (the findings a notice compares).
fn reported(p: &ParamDrift) -> &str {
    match (&p.found, p.kind) {
        (Some(v), _) => v,
        (None, DriftKind::Differs) => "(not reported)",
        (None, DriftKind::NotPersisted) => "(not in the config file)",
    }
}

fn kind_text(kind: DriftKind) -> &'static str {
    match kind {
        DriftKind::Differs => "live value differs",
        DriftKind::NotPersisted => "not persisted (lost on restart)",
    }
}

/// Markdown for a chat message, a pull request or a file.
pub fn markdown(r: &DriftReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## cacheflow drift report\n");
    let _ = writeln!(
        out,
        "{} against {}: **{}**\n",
        r.generated_at,
        code(&short(r.revision.as_deref())),
        r.status()
    );
    let _ = writeln!(out, "| cluster | nodes | drifted | silent |");
    let _ = writeln!(out, "| --- | ---: | ---: | ---: |");
    for c in &r.clusters {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            md_cell(&c.cluster),
            c.nodes,
            c.drifted.len(),
            c.silent.len()
        );
    }
    for c in r
        .clusters
        .iter()
        .filter(|c| !c.drifted.is_empty() || !c.silent.is_empty() || !c.topology.is_empty())
    {
        let _ = writeln!(out, "\n### {}\n", c.cluster);
        if !c.drifted.is_empty() {
            let _ = writeln!(out, "| node | parameter | expected | found | drift |");
            let _ = writeln!(out, "| --- | --- | --- | --- | --- |");
            for n in &c.drifted {
                for p in &n.parameters {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} |",
                        md_cell(&n.node),
                        code(&p.name),
                        code(&expected(c, p)),
                        code(&found(c, p)),
                        kind_text(p.kind)
                    );
                }
            }
        }
        for s in &c.silent {
            let _ = writeln!(out, "- **{}** is silent: {}", s.node, md_cell(&s.reason));
        }
        for t in &c.topology {
            let _ = writeln!(out, "- **{}**: {}", md_cell(&t.node), md_cell(&t.text));
        }
    }
    if !r.not_compared.is_empty() {
        let _ = writeln!(out, "\n### Not compared\n");
        for n in &r.not_compared {
            let _ = writeln!(out, "- **{}**: {}", md_cell(&n.cluster), md_cell(&n.reason));
        }
    }
    if !r.undeclared.is_empty() {
        let _ = writeln!(
            out,
            "\n### Undeclared nodes\n\n{}",
            r.undeclared
                .iter()
                .map(|n| format!("- {n}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    out
}

/// Plain text for a terminal.
pub fn text(r: &DriftReport) -> String {
    let mut out = String::new();
    for c in &r.clusters {
        let _ = writeln!(
            out,
            "{}: {} node(s), {} drifted, {} silent",
            c.cluster,
            c.nodes,
            c.drifted.len(),
            c.silent.len()
        );
        for n in &c.drifted {
            for p in &n.parameters {
                let _ = writeln!(
                    out,
                    "  {} {}: expected {}, found {} ({})",
                    n.node,
                    p.name,
                    expected(c, p),
                    found(c, p),
                    kind_text(p.kind)
                );
            }
        }
        for s in &c.silent {
            let _ = writeln!(out, "  {} silent: {}", s.node, s.reason);
        }
        for t in &c.topology {
            let _ = writeln!(out, "  {}: {}", t.node, t.text);
        }
    }
    for n in &r.not_compared {
        let _ = writeln!(out, "{}: not compared: {}", n.cluster, n.reason);
    }
    for n in &r.undeclared {
        let _ = writeln!(out, "undeclared node reporting: {n}");
    }
    let _ = writeln!(out, "{}", r.status());
    out
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One self-contained HTML page: no script, no external resource. `earlier` are the runs
/// before this one, oldest first; the chart draws them and this report as its last run.
pub fn html(r: &DriftReport, earlier: &[Run]) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cacheflow drift report {}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         th{{background:#f4f4f4}}.bad{{color:#b00020}}.ok{{color:#1b5e20}}code{{background:#f6f6f6;padding:0 .2em}}\
         </style></head><body>\n",
        esc(&r.generated_at),
    );
    out.push_str(&html_body(r, earlier));
    out.push_str("</body></html>\n");
    out
}

/// The page's body without its frame: the heading, the chart and the tables (the
/// console serves it inside its own page).
pub fn html_body(r: &DriftReport, earlier: &[Run]) -> String {
    let mut out = String::new();
    let status = r.status();
    let _ = write!(
        out,
        "<h1>cacheflow drift report</h1>\n\
         <p>{} against <code>{}</code>: <strong id=\"status\" class=\"{}\">{}</strong></p>\n",
        esc(&r.generated_at),
        esc(&short(r.revision.as_deref())),
        if r.clean() { "ok" } else { "bad" },
        esc(&status)
    );
    let mut runs = earlier.to_vec();
    runs.push(Run::of(r));
    out.push_str(&chart(&runs));
    out.push_str("<h2>Clusters</h2>\n<table id=\"summary\"><tr><th>cluster</th><th>nodes</th><th>drifted</th><th>silent</th></tr>\n");
    for c in &r.clusters {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.cluster),
            c.nodes,
            c.drifted.len(),
            c.silent.len()
        );
    }
    out.push_str("</table>\n");
    let drifted: Vec<_> = r
        .clusters
        .iter()
        .flat_map(|c| c.drifted.iter().map(move |n| (c, n)))
        .collect();
    if !drifted.is_empty() {
        out.push_str("<h2>Drifted parameters</h2>\n<table id=\"drifted\"><tr><th>cluster</th><th>node</th><th>parameter</th><th>expected</th><th>found</th><th>drift</th></tr>\n");
        for (c, n) in drifted {
            for p in &n.parameters {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td class=\"bad\"><code>{}</code></td><td>{}</td></tr>",
                    esc(&c.cluster),
                    esc(&n.node),
                    esc(&p.name),
                    esc(&expected(c, p)),
                    esc(&found(c, p)),
                    kind_text(p.kind)
                );
            }
        }
        out.push_str("</table>\n");
    }
    let silent: Vec<_> = r
        .clusters
        .iter()
        .flat_map(|c| c.silent.iter().map(move |s| (c, s)))
        .collect();
    if !silent.is_empty() {
        out.push_str("<h2>Silent nodes</h2>\n<ul id=\"silent\">\n");
        for (c, s) in silent {
            let _ = writeln!(
                out,
                "<li>{} / {}: {}</li>",
                esc(&c.cluster),
                esc(&s.node),
                esc(&s.reason)
            );
        }
        out.push_str("</ul>\n");
    }
    let notes: Vec<_> = r
        .clusters
        .iter()
        .flat_map(|c| c.topology.iter().map(move |t| (c, t)))
        .collect();
    if !notes.is_empty() {
        out.push_str("<h2>Topology</h2>\n<ul id=\"topology\">\n");
        for (c, t) in notes {
            let _ = writeln!(
                out,
                "<li>{} / {}: {}</li>",
                esc(&c.cluster),
                esc(&t.node),
                esc(&t.text)
            );
        }
        out.push_str("</ul>\n");
    }
    if !r.not_compared.is_empty() {
        out.push_str("<h2>Not compared</h2>\n<ul id=\"not-compared\">\n");
        for n in &r.not_compared {
            let _ = writeln!(
                out,
                "<li><b>{}</b>: {}</li>",
                esc(&n.cluster),
                esc(&n.reason)
            );
        }
        out.push_str("</ul>\n");
    }
    if !r.undeclared.is_empty() {
        out.push_str("<h2>Undeclared nodes</h2>\n<ul id=\"undeclared\">\n");
        for n in &r.undeclared {
            let _ = writeln!(out, "<li>{}</li>", esc(n));
        }
        out.push_str("</ul>\n");
    }
    out
}

/// One drift run on the chart: when, and how many nodes were drifted (changed by hand,
/// not persisted, or undeclared) and how many silent. Silent nodes are not drift: they
/// are drawn apart, stacked on top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub at: String,
    pub drifted: usize,
    pub silent: usize,
}

impl Run {
    /// This report as a point of the chart.
    pub fn of(r: &DriftReport) -> Run {
        Run {
            at: r.generated_at.clone(),
            drifted: r.drifted_only(),
            silent: r.silent_nodes(),
        }
    }
}

/// Runs drawn at most.
pub const CHART_RUNS: usize = 60;

/// An SVG chart of the last [`CHART_RUNS`] runs, oldest first: one bar per run, placed on
/// a time axis, drifted nodes (red) with silent nodes (grey) stacked on top, a clean run
/// as a green mark on the zero line; a node-count axis with its ticks. Each run is one
/// `<g class="run">` whose `<title>` says its figures.
pub fn chart(runs: &[Run]) -> String {
    const W: i64 = 640;
    const H: i64 = 180;
    const LEFT: i64 = 40;
    const RIGHT: i64 = 12;
    const TOP: i64 = 10;
    const BOTTOM: i64 = 36;
    let runs = &runs[runs.len().saturating_sub(CHART_RUNS)..];
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let max = runs
        .iter()
        .map(|r| r.drifted + r.silent)
        .max()
        .unwrap_or(0)
        .max(1) as i64;
    let y = |n: i64| TOP + plot_h - n * plot_h / max;
    let xs = positions(runs, plot_w);
    let bar = (plot_w / (runs.len().max(1) as i64) - 2).clamp(2, 16);
    let mut out = format!(
        "<h2>Drift over time</h2>\n<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"nodes drifted and silent per run, over time\" font-size=\"11\">\n"
    );
    // The count axis: 0, the middle and the top, with grid lines.
    let mut ticks = vec![0, max];
    if max >= 2 {
        ticks.insert(1, max / 2);
    }
    for t in ticks {
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{yt}\" y2=\"{yt}\" stroke=\"#ddd\"/><text class=\"ytick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{t}</text>",
            W - RIGHT,
            LEFT - 4,
            y(t) + 4,
            yt = y(t),
        );
    }
    let _ = writeln!(
        out,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{}\" stroke=\"#555\"/><line x1=\"{LEFT}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"#555\"/>",
        TOP + plot_h,
        W - RIGHT,
        TOP + plot_h,
        TOP + plot_h
    );
    for (run, x) in runs.iter().zip(&xs) {
        let x = LEFT + x - bar / 2;
        let (d, s) = (run.drifted as i64, run.silent as i64);
        let _ = write!(
            out,
            "<g class=\"run\"><title>{}: {d} drifted, {s} silent</title>",
            esc(&run.at)
        );
        if d + s == 0 {
            let _ = write!(
                out,
                "<rect class=\"zero\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"3\" fill=\"#1b5e20\"/>",
                y(0) - 3
            );
        }
        if d > 0 {
            let _ = write!(
                out,
                "<rect class=\"drifted\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{}\" fill=\"#b00020\"/>",
                y(d),
                y(0) - y(d)
            );
        }
        if s > 0 {
            let _ = write!(
                out,
                "<rect class=\"silent\" x=\"{x}\" y=\"{}\" width=\"{bar}\" height=\"{}\" fill=\"#8d8d8d\"/>",
                y(d + s),
                y(d) - y(d + s)
            );
        }
        out.push_str("</g>\n");
    }
    // The time axis: the first and the last run's time (and the middle one's), in UTC.
    let mut labelled: Vec<usize> = vec![0, runs.len() / 2, runs.len().saturating_sub(1)];
    labelled.dedup();
    for i in labelled.into_iter().filter(|&i| i < runs.len()) {
        let anchor = if i == 0 {
            "start"
        } else if i + 1 == runs.len() {
            "end"
        } else {
            "middle"
        };
        let _ = writeln!(
            out,
            "<text class=\"xtick\" x=\"{}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
            LEFT + xs[i],
            TOP + plot_h + 14,
            esc(&time_label(&runs[i].at))
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{LEFT}\" y=\"{}\">time (UTC), {} run(s); nodes: <tspan fill=\"#b00020\">■ drifted</tspan> <tspan fill=\"#8d8d8d\">■ silent</tspan> <tspan fill=\"#1b5e20\">▁ none</tspan></text>\n</svg>",
        H - 4,
        runs.len()
    );
    out
}

/// One finding of a report, as far as a notice is concerned: which node, and what (the
/// parameter, its kind, the expected and found values; `silent`; `undeclared`). A silent
/// node's reason is left out: "timed out" then "refused" is the same finding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Empty for an undeclared node.
    pub cluster: String,
    pub node: String,
    pub what: String,
}

/// What the drift runner remembers of the last notice it sent, so that the same drift is
/// not notified on every run (kept in `<state-dir>/drift/notified.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notified {
    /// The findings last notified, sorted; empty after a `drift-cleared` notice.
    pub findings: Vec<Finding>,
    /// When that notice was sent (RFC 3339, UTC).
    pub at: String,
    /// When these findings were first notified (reminders keep it).
    #[serde(default)]
    pub since: String,
}

impl Notified {
    /// The memory after a run that decided `decision` at `now` (RFC 3339) on `findings`;
    /// `None` when nothing was sent (the memory stays as it was).
    pub fn after(
        last: Option<&Notified>,
        decision: NoticeDecision,
        findings: Vec<Finding>,
        now: &str,
    ) -> Option<Notified> {
        let since = match (decision, last) {
            (NoticeDecision::Quiet, _) => return None,
            (NoticeDecision::Reminder, Some(l)) if !l.since.is_empty() => l.since.clone(),
            _ => now.to_owned(),
        };
        Some(Notified {
            findings,
            at: now.to_owned(),
            since,
        })
    }
}

/// Whether a drift run tells its targets, and what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeDecision {
    /// Nothing new: no notice.
    Quiet,
    /// Drift where the last notice said none (or nothing was ever notified): `drift-found`.
    Appeared,
    /// Other findings than the last notice's (a node, a parameter or a value more, fewer
    /// or different): `drift-found`.
    Changed,
    /// The same findings as the last notice, `drift.repeat` or longer ago: `drift-found`
    /// again, as a reminder.
    Reminder,
    /// No finding left after a notice of some: `drift-cleared`.
    Cleared,
}

impl NoticeDecision {
    /// One word for logs and the `cacheflow_drift_notices_total` metric.
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeDecision::Quiet => "unchanged",
            NoticeDecision::Appeared => "appeared",
            NoticeDecision::Changed => "changed",
            NoticeDecision::Reminder => "reminder",
            NoticeDecision::Cleared => "cleared",
        }
    }
}

/// The findings of `report`, sorted. A cluster left out of this run (`not_compared`: a
/// rollout in flight) keeps the findings `last` notified for it: it was not looked at, so
/// nothing about it changed or cleared.
pub fn findings(report: &DriftReport, last: Option<&Notified>) -> Vec<Finding> {
    let mut out = Vec::new();
    for c in &report.clusters {
        for n in &c.drifted {
            for p in &n.parameters {
                out.push(Finding {
                    cluster: c.cluster.clone(),
                    node: n.node.clone(),
                    what: format!(
                        "{} {}: expected {}, found {}",
                        p.name,
                        match p.kind {
                            DriftKind::Differs => "differs",
                            DriftKind::NotPersisted => "not-persisted",
                        },
                        p.expected,
                        reported(p)
                    ),
                });
            }
        }
        for s in &c.silent {
            out.push(Finding {
                cluster: c.cluster.clone(),
                node: s.node.clone(),
                what: "silent".to_owned(),
            });
        }
    }
    for n in &report.undeclared {
        out.push(Finding {
            cluster: String::new(),
            node: n.clone(),
            what: "undeclared".to_owned(),
        });
    }
    if let Some(last) = last {
        out.extend(
            last.findings
                .iter()
                .filter(|f| report.not_compared.iter().any(|n| n.cluster == f.cluster))
                .cloned(),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a run whose findings are `now_findings` (see [`findings`]) notifies, given
/// the last notice (`None`: never one, or its memory was lost), the time of the run and
/// `drift.repeat`. Drift is notified when it appears, when its findings change, when it
/// clears (after a notice of it), and again every `repeat` while it stays the same.
pub fn notice_decision(
    last: Option<&Notified>,
    now_findings: &[Finding],
    now: DateTime<Utc>,
    repeat: Duration,
) -> NoticeDecision {
    let last_findings = last.map(|l| l.findings.as_slice()).unwrap_or_default();
    match (last_findings.is_empty(), now_findings.is_empty()) {
        (true, true) => NoticeDecision::Quiet,
        (true, false) => NoticeDecision::Appeared,
        (false, true) => NoticeDecision::Cleared,
        (false, false) if last_findings != now_findings => NoticeDecision::Changed,
        (false, false) => {
            // A time that does not parse counts as long ago: one reminder too many
            // rather than none.
            let due = last
                .and_then(|l| DateTime::parse_from_rfc3339(&l.at).ok())
                .map(|at| now.signed_duration_since(at.with_timezone(&Utc)))
                .is_none_or(|since| since.to_std().is_ok_and(|s| s >= repeat));
            if due {
                NoticeDecision::Reminder
            } else {
                NoticeDecision::Quiet
            }
        }
    }
}

/// The summary line and the details of the notice `decision` sends for `report`, `last`
/// being the memory of the notice before.
pub fn notice_text(
    decision: NoticeDecision,
    report: &DriftReport,
    last: Option<&Notified>,
) -> (String, String) {
    let clusters: Vec<&str> = report
        .clusters
        .iter()
        .filter(|c| !c.drifted.is_empty() || !c.silent.is_empty())
        .map(|c| c.cluster.as_str())
        .collect();
    let which = if clusters.is_empty() {
        "undeclared nodes".to_owned()
    } else {
        clusters.join(", ")
    };
    let n = report.drifted_nodes();
    let since = last
        .map(|l| l.since.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("the last notice");
    let summary = match decision {
        NoticeDecision::Cleared => {
            return (
                format!(
                "drift cleared: no node drifted or silent any more (drift notified since {since})"
            ),
                last.map(|l| {
                    let mut out = String::from("gone since the last notice:\n");
                    for f in &l.findings {
                        let at = if f.cluster.is_empty() {
                            f.node.clone()
                        } else {
                            format!("{}/{}", f.cluster, f.node)
                        };
                        let _ = writeln!(out, "  {at} {}", f.what);
                    }
                    out
                })
                .unwrap_or_default(),
            )
        }
        NoticeDecision::Changed => {
            format!("drift changed: {n} node(s) drifted or silent ({which})")
        }
        NoticeDecision::Reminder => {
            format!("drift unchanged since {since}: {n} node(s) drifted or silent ({which})")
        }
        NoticeDecision::Appeared | NoticeDecision::Quiet => {
            format!("drift: {n} node(s) drifted or silent ({which})")
        }
    };
    (summary, text(report))
}

/// Where each run goes on the time axis, from 0 to `width`: by its time when every
/// time reads as RFC 3339 and they span some time, else evenly.
fn positions(runs: &[Run], width: i64) -> Vec<i64> {
    let pad = 10.min(width / 4);
    let inner = width - 2 * pad;
    let times: Option<Vec<i64>> = runs
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(&r.at)
                .ok()
                .map(|t| t.timestamp())
        })
        .collect();
    match times {
        Some(t) if t.len() > 1 && t[t.len() - 1] > t[0] => {
            let (first, span) = (t[0], t[t.len() - 1] - t[0]);
            t.iter()
                .map(|&s| pad + (s - first).clamp(0, span) * inner / span)
                .collect()
        }
        _ if runs.len() > 1 => (0..runs.len() as i64)
            .map(|i| pad + i * inner / (runs.len() as i64 - 1))
            .collect(),
        _ => vec![width / 2; runs.len()],
    }
}

/// `2026-11-21 03:00` for an RFC 3339 time (the text itself when it does not parse).
fn time_label(at: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(at)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| at.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::pure::live::NodeLive;
    use crate::pure::spec::files::FileSet;

    /// A one-cluster repository (nodes n1 and n2) through the real loader.
    fn desired(engine: &str, parameters: &str) -> Desired {
        let yaml = format!(
            "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {{name: cache}}\nspec:\n  engine: {engine}\n  parameters:\n{parameters}\n  nodes:\n    - {{id: n1, address: '127.0.0.1:7001'}}\n    - {{id: n2, address: '127.0.0.1:7002'}}\n"
        );
        let set = FileSet {
            commit: None,
            files: [("clusters/cache.yaml".to_owned(), yaml)].into(),
            problems: Vec::new(),
        };
        crate::pure::spec::load(&set).unwrap_or_else(|e| {
            panic!(
                "{}",
                e.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
    }

    fn pairs(list: &[(&str, &str)]) -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Both nodes running `live` at `version`, started from a file setting `file`.
    fn reading(version: Option<&str>, live: &[(&str, &str)], file: &[(&str, &str)]) -> LiveState {
        let node = NodeLive {
            reachable: true,
            version: version.map(str::to_owned),
            parameters: pairs(live),
            persisted: Some(pairs(file)),
            ..NodeLive::default()
        };
        LiveState {
            sentinels: Default::default(),
            version: crate::pure::live::LIVE_STATE_VERSION,
            taken_at: None,
            nodes: [("n1".to_owned(), node.clone()), ("n2".to_owned(), node)].into(),
        }
    }

    /// `node param kind found` of every drifted parameter.
    fn drifted(r: &DriftReport) -> Vec<String> {
        r.clusters
            .iter()
            .flat_map(|c| &c.drifted)
            .flat_map(|n| {
                n.parameters
                    .iter()
                    .map(move |p| format!("{} {} {:?} {}", n.node, p.name, p.kind, reported(p)))
            })
            .collect()
    }

    const DEFAULTS_LIVE: &[(&str, &str)] = &[
        ("hz", "10"),
        ("timeout", "0"),
        ("maxmemory", "0"),
        ("maxmemory-policy", "noeviction"),
        ("notify-keyspace-events", ""),
        ("tcp-keepalive", "300"),
        (
            "client-output-buffer-limit",
            "normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 1048576 60",
        ),
    ];

    #[test]
    fn declared_defaults_the_config_file_leaves_out_are_persisted() {
        // What CONFIG REWRITE writes after cacheflow set these: nothing for the
        // defaults, one line for the one class off its default (in its own units).
        let d = desired(
            "redis",
            "    hz: 10\n    timeout: 0\n    maxmemory: 0b\n    maxmemory-policy: NOEVICTION\n    notify-keyspace-events: ''\n    tcp-keepalive: 5m\n    client-output-buffer-limit: normal 0 0 0 slave 268435456 67108864 60 pubsub 1048576 1048576 60",
        );
        let file = [
            ("client-output-buffer-limit", "pubsub 1mb 1mb 60"),
            ("save", ""),
        ];
        let r = compute(&d, &reading(Some("7.0.15"), DEFAULTS_LIVE, &file), "t");
        assert_eq!(drifted(&r), Vec::<String>::new());
        assert!(r.clean());
        assert_eq!(r.drifted_nodes(), 0);
    }

    #[test]
    fn a_file_that_says_otherwise_or_a_default_nobody_knows_is_still_drift() {
        let d = desired("redis", "    hz: 10\n    maxmemory-policy: allkeys-lru");
        let live = [("hz", "10"), ("maxmemory-policy", "allkeys-lru")];
        // Someone wrote `hz 50` into the file by hand (the live value was put back to
        // the default): a restart brings 50. A declared value that is not the default
        // and is missing from the file: a restart brings the default.
        let r = compute(&d, &reading(Some("7.0.15"), &live, &[("hz", "50")]), "t");
        assert_eq!(
            drifted(&r),
            [
                "n1 hz NotPersisted 50",
                "n1 maxmemory-policy NotPersisted (not in the config file)",
                "n2 hz NotPersisted 50",
                "n2 maxmemory-policy NotPersisted (not in the config file)",
            ]
        );
        // A hand-made CONFIG SET to the default while the repository declares another
        // value: the live value differs, whatever the file says.
        let d = desired("redis", "    hz: 50");
        let r = compute(
            &d,
            &reading(Some("7.0.15"), &[("hz", "10")], &[("hz", "50")]),
            "t",
        );
        assert_eq!(drifted(&r), ["n1 hz Differs 10", "n2 hz Differs 10"]);
        // A node that names no version, or one without a catalog: no default assumed.
        let d = desired("redis", "    hz: 10");
        for version in [None, Some("5.0.7")] {
            let r = compute(&d, &reading(version, &[("hz", "10")], &[]), "t");
            assert_eq!(
                drifted(&r),
                [
                    "n1 hz NotPersisted (not in the config file)",
                    "n2 hz NotPersisted (not in the config file)"
                ],
                "{version:?}"
            );
        }
    }

    #[test]
    fn the_default_is_the_one_of_the_version_the_node_runs() {
        // Valkey 8.0 frees evicted keys lazily by default; Valkey 7.2 did not. A cluster
        // that declares `no`: persisted by absence on 7.2, lost on restart on 8.0.
        let d = desired("valkey", "    lazyfree-lazy-eviction: 'no'");
        let live = [("lazyfree-lazy-eviction", "no")];
        let r = compute(&d, &reading(Some("7.2.4"), &live, &[]), "t");
        assert!(r.clean(), "{:?}", drifted(&r));
        let r = compute(&d, &reading(Some("8.0.1"), &live, &[]), "t");
        assert_eq!(
            drifted(&r),
            [
                "n1 lazyfree-lazy-eviction NotPersisted (not in the config file)",
                "n2 lazyfree-lazy-eviction NotPersisted (not in the config file)"
            ]
        );
    }

    #[test]
    fn buffer_limit_classes_lie_over_the_default() {
        let d = "normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60";
        assert_eq!(
            buffer_limits_over(d, "replica 512mb 128mb 120 pubsub 1mb 1mb 0").as_deref(),
            Some("normal 0 0 0 slave 536870912 134217728 120 pubsub 1048576 1048576 0")
        );
        assert_eq!(buffer_limits_over(d, "pubsub 1mb"), None);
        assert_eq!(buffer_limits_over(d, "other 1 1 1"), None);
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn finding(node: &str, what: &str) -> Finding {
        Finding {
            cluster: "cache".into(),
            node: node.into(),
            what: what.into(),
        }
    }

    #[test]
    fn drift_is_notified_when_it_appears_changes_or_clears_and_every_repeat_while_it_stays() {
        let four_hours = Duration::from_secs(4 * 3600);
        let a = vec![finding("a2", "hz differs: expected 20, found 50")];
        let b = vec![
            finding("a2", "hz differs: expected 20, found 50"),
            finding("b1", "silent"),
        ];
        let at = |findings: &[Finding], t: &str| Notified {
            findings: findings.to_vec(),
            at: t.into(),
            since: "2026-11-20T01:00:00Z".into(),
        };
        let now = utc("2026-11-21T03:00:00Z");
        let decide =
            |last: Option<&Notified>, f: &[Finding]| notice_decision(last, f, now, four_hours);
        // Nothing ever notified.
        assert_eq!(decide(None, &[]), NoticeDecision::Quiet);
        assert_eq!(decide(None, &a), NoticeDecision::Appeared);
        // The same drift, a minute after its notice, and 3 h 59 min after: quiet.
        assert_eq!(
            decide(Some(&at(&a, "2026-11-21T02:59:00Z")), &a),
            NoticeDecision::Quiet
        );
        assert_eq!(
            decide(Some(&at(&a, "2026-11-20T23:01:00Z")), &a),
            NoticeDecision::Quiet
        );
        // Four hours after: a reminder; a torn time: a reminder rather than silence.
        assert_eq!(
            decide(Some(&at(&a, "2026-11-20T23:00:00Z")), &a),
            NoticeDecision::Reminder
        );
        assert_eq!(
            decide(Some(&at(&a, "yesterday")), &a),
            NoticeDecision::Reminder
        );
        // A node more, or fewer: changed, however recent the last notice.
        assert_eq!(
            decide(Some(&at(&a, "2026-11-21T02:59:00Z")), &b),
            NoticeDecision::Changed
        );
        assert_eq!(
            decide(Some(&at(&b, "2026-11-21T02:59:00Z")), &a),
            NoticeDecision::Changed
        );
        // The value found changes: another hand-made change.
        let c = vec![finding("a2", "hz differs: expected 20, found 51")];
        assert_eq!(
            decide(Some(&at(&a, "2026-11-21T02:59:00Z")), &c),
            NoticeDecision::Changed
        );
        // Clean after a notice: cleared, once; then quiet.
        assert_eq!(
            decide(Some(&at(&a, "2026-11-21T02:59:00Z")), &[]),
            NoticeDecision::Cleared
        );
        assert_eq!(
            decide(Some(&at(&[], "2026-11-21T02:59:00Z")), &[]),
            NoticeDecision::Quiet
        );
        assert_eq!(
            decide(Some(&at(&[], "2026-11-21T02:59:00Z")), &a),
            NoticeDecision::Appeared
        );
    }

    #[test]
    fn a_cluster_not_compared_keeps_its_last_findings() {
        let mut r = report();
        let last = Notified {
            findings: vec![
                finding(
                    "a1",
                    "notify-keyspace-events differs: expected Ex, found K|<b>",
                ),
                Finding {
                    cluster: "other".into(),
                    node: "o1".into(),
                    what: "silent".into(),
                },
            ],
            at: "2026-11-21T02:00:00Z".into(),
            since: "2026-11-21T02:00:00Z".into(),
        };
        // `other` is compared and clean: its finding is gone.
        let now = findings(&r, Some(&last));
        assert_eq!(
            now.iter()
                .map(|f| format!("{}/{} {}", f.cluster, f.node, f.what))
                .collect::<Vec<_>>(),
            [
                "/stray undeclared",
                "cache/a1 notify-keyspace-events differs: expected Ex, found K|<b>",
                "cache/a2 silent",
            ]
        );
        // `other` has a rollout in flight: what was notified of it stands.
        r.not_compared.push(NotCompared {
            cluster: "other".into(),
            reason: "a rollout is in flight".into(),
        });
        assert_eq!(findings(&r, Some(&last)).len(), 4);
        assert!(findings(&r, Some(&last)).contains(&last.findings[1]));
    }

    fn report() -> DriftReport {
        DriftReport {
            generated_at: "2026-11-21T03:00:00Z".into(),
            revision: Some("0123456789abcdef".into()),
            clusters: vec![ClusterDrift {
                cluster: "cache".into(),
                engine: None,
                nodes: 3,
                drifted: vec![NodeDrift {
                    node: "a1".into(),
                    parameters: vec![ParamDrift {
                        name: "notify-keyspace-events".into(),
                        kind: DriftKind::Differs,
                        expected: "Ex".into(),
                        found: Some("K|<b>".into()),
                    }],
                }],
                silent: vec![Silent {
                    node: "a2".into(),
                    reason: "refused | reset".into(),
                }],
                topology: vec![TopologyNote {
                    node: "a3".into(),
                    text: "declared primary, runs as a replica of a1".into(),
                }],
            }],
            undeclared: vec!["stray".into()],
            not_compared: Vec::new(),
        }
    }

    #[test]
    fn drifted_sizes_and_durations_read_as_people_write_them() {
        let mut r = report();
        r.clusters[0].engine = Some(Engine::Redis);
        r.clusters[0].drifted[0].parameters = vec![
            ParamDrift {
                name: "maxmemory".into(),
                kind: DriftKind::Differs,
                expected: "8589934592".into(),
                found: Some("4294967296".into()),
            },
            ParamDrift {
                name: "timeout".into(),
                kind: DriftKind::NotPersisted,
                expected: "300".into(),
                found: None,
            },
        ];
        assert_eq!(
            text(&r),
            "cache: 3 node(s), 1 drifted, 1 silent\n\
             \x20 a1 maxmemory: expected 8gb, found 4gb (live value differs)\n\
             \x20 a1 timeout: expected 5m, found (not in the config file) (not persisted (lost on restart))\n\
             \x20 a2 silent: refused | reset\n\
             \x20 a3: declared primary, runs as a replica of a1\n\
             undeclared node reporting: stray\n\
             3 node(s) drifted or silent\n"
        );
        assert!(markdown(&r).contains("| a1 | `maxmemory` | `8gb` | `4gb` | live value differs |"));
        assert!(html(&r, &[])
            .contains("<td><code>8gb</code></td><td class=\"bad\"><code>4gb</code></td>"));
        // The JSON keeps the engine's numbers.
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains(r#""expected":"8589934592""#));
    }

    #[test]
    fn markdown_and_html_escape_what_the_nodes_said() {
        let r = report();
        assert_eq!(r.drifted_nodes(), 3);
        let md = markdown(&r);
        assert!(
            md.contains("against `0123456789ab`: **3 node(s) drifted or silent**"),
            "{md}"
        );
        assert!(
            md.contains(
                "| a1 | `notify-keyspace-events` | `Ex` | `K\\|<b>` | live value differs |"
            ),
            "{md}"
        );
        assert!(md.contains("- **a2** is silent: refused \\| reset"), "{md}");
        assert!(
            md.contains("- **a3**: declared primary, runs as a replica of a1"),
            "{md}"
        );
        assert!(
            text(&r).contains("  a3: declared primary, runs as a replica of a1\n"),
            "{}",
            text(&r)
        );
        assert!(md.contains("- stray"), "{md}");
        let clean = Run {
            at: "2026-11-20T03:00:00Z".into(),
            drifted: 0,
            silent: 0,
        };
        let page = html(&r, &[clean]);
        assert!(page.contains("<code>K|&lt;b&gt;</code>"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        // Two runs in the chart, each once: the history's clean one and this one.
        assert_eq!(page.matches("<g class=\"run\">").count(), 2, "{page}");
        assert!(
            page.contains("<title>2026-11-20T03:00:00Z: 0 drifted, 0 silent</title>"),
            "{page}"
        );
        assert!(
            page.contains("<title>2026-11-21T03:00:00Z: 2 drifted, 1 silent</title>"),
            "{page}"
        );
    }

    fn run(at: &str, drifted: usize, silent: usize) -> Run {
        Run {
            at: at.into(),
            drifted,
            silent,
        }
    }

    /// The `<g class="run">` groups of a chart, one per line.
    fn groups(svg: &str) -> Vec<&str> {
        svg.lines()
            .filter(|l| l.starts_with("<g class=\"run\">"))
            .collect()
    }

    #[test]
    fn the_chart_draws_each_run_once_with_the_report_as_its_last() {
        // The report's own run is drawn once, after the earlier ones (it was drawn twice:
        // once from the history file, once again from the report).
        let r = report();
        let earlier = [run("2026-11-21T01:00:00Z", 1, 0)];
        let page = html(&r, &earlier);
        let svg = &page[page.find("<svg").unwrap()..page.find("</svg>").unwrap()];
        let runs = groups(svg);
        assert_eq!(runs.len(), 2, "{svg}");
        assert!(runs[0].contains("<title>2026-11-21T01:00:00Z: 1 drifted, 0 silent</title>"));
        assert!(runs[1].contains("<title>2026-11-21T03:00:00Z: 2 drifted, 1 silent</title>"));
        assert!(svg.contains("2 run(s)"), "{svg}");
    }

    #[test]
    fn a_clean_run_is_drawn_at_zero_and_silent_nodes_are_stacked_apart_from_drift() {
        let svg = chart(&[
            run("2026-11-21T00:00:00Z", 0, 0),
            run("2026-11-21T01:00:00Z", 2, 2),
            run("2026-11-21T02:00:00Z", 0, 4),
        ]);
        let runs = groups(&svg);
        assert_eq!(runs.len(), 3, "{svg}");
        // Plot: 134 px high from y=10 to the zero line at y=144, 4 nodes at most.
        // A clean run: a green mark on the zero line, nothing else.
        assert_eq!(
            runs[0],
            "<g class=\"run\"><title>2026-11-21T00:00:00Z: 0 drifted, 0 silent</title>\
             <rect class=\"zero\" x=\"42\" y=\"141\" width=\"16\" height=\"3\" fill=\"#1b5e20\"/></g>"
        );
        // 2 drifted from the zero line up to half, 2 silent stacked on top of them.
        assert_eq!(
            runs[1],
            "<g class=\"run\"><title>2026-11-21T01:00:00Z: 2 drifted, 2 silent</title>\
             <rect class=\"drifted\" x=\"326\" y=\"77\" width=\"16\" height=\"67\" fill=\"#b00020\"/>\
             <rect class=\"silent\" x=\"326\" y=\"10\" width=\"16\" height=\"67\" fill=\"#8d8d8d\"/></g>"
        );
        // Only silent nodes: no drift drawn, the silent bar the whole height.
        assert!(!runs[2].contains("class=\"drifted\""), "{}", runs[2]);
        assert!(
            runs[2]
                .contains("<rect class=\"silent\" x=\"610\" y=\"10\" width=\"16\" height=\"134\""),
            "{}",
            runs[2]
        );
        // The count axis says 0, 2 and 4.
        for tick in [">0</text>", ">2</text>", ">4</text>"] {
            assert!(
                svg.contains("class=\"ytick\"") && svg.contains(tick),
                "{tick} in {svg}"
            );
        }
    }

    #[test]
    fn the_time_axis_places_runs_by_their_time_and_labels_it() {
        // Two runs an hour apart, then one 3 hours later: the gap shows.
        let svg = chart(&[
            run("2026-11-21T00:00:00Z", 1, 0),
            run("2026-11-21T01:00:00Z", 1, 0),
            run("2026-11-21T04:00:00Z", 1, 0),
        ]);
        let x = |line: &str| -> i64 {
            let at = line.find(" x=\"").unwrap() + 4;
            line[at..at + line[at..].find('"').unwrap()]
                .parse()
                .unwrap()
        };
        let xs: Vec<i64> = groups(&svg)
            .iter()
            .map(|g| x(g.split("<rect").nth(1).unwrap()))
            .collect();
        assert_eq!(xs, [42, 184, 610]);
        assert_eq!(xs[1] - xs[0], (xs[2] - xs[1]) / 3, "an hour is an hour");
        for label in [
            "text-anchor=\"start\">2026-11-21 00:00</text>",
            "text-anchor=\"middle\">2026-11-21 01:00</text>",
            "text-anchor=\"end\">2026-11-21 04:00</text>",
        ] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
        assert!(svg.contains("time (UTC), 3 run(s)"), "{svg}");
        // One run: in the middle, labelled; nothing at all: an empty chart, no panic.
        let one = chart(&[run("2026-11-21T00:00:00Z", 0, 0)]);
        assert_eq!(groups(&one).len(), 1);
        assert!(one.contains(">2026-11-21 00:00</text>"), "{one}");
        assert_eq!(groups(&chart(&[])).len(), 0);
    }

    #[test]
    fn the_chart_keeps_the_last_runs() {
        let runs: Vec<Run> = (0..CHART_RUNS + 5)
            .map(|i| run(&format!("2026-11-21T00:{:02}:00Z", i % 60), i, 0))
            .collect();
        let svg = chart(&runs);
        let drawn = groups(&svg);
        assert_eq!(drawn.len(), CHART_RUNS);
        assert!(drawn[0].contains(": 5 drifted"), "{}", drawn[0]);
    }
}
