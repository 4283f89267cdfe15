//! Drift: where the live fleet has moved away from what the repository declares, and
//! the report on-call reads (Markdown, JSON, and a self-contained HTML page).
//!
//! Four kinds, per node:
//!
//! | kind | what | seen as |
//! | --- | --- | --- |
//! | `differs` | a live value is not the declared one (someone ran `CONFIG SET` by hand) | the plan's change for the node |
//! | `not-persisted` | the live value is right but the config file says otherwise: lost on restart | the node's config file (Redis on loopback or through an agent) |
//! | `silent` | a declared node that did not answer | unreachable in the reading |
//! | `undeclared` | a node that reports but no cluster declares | in the reading, not in the repository |
//!
//! A pure function of the desired state and a reading; the same inputs give the same
//! report byte for byte (the time it was made is passed in).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::pure::catalog::{self, Engine};
use crate::pure::diff;
use crate::pure::live::LiveState;
use crate::pure::render::{code, md_cell, short};
use crate::pure::spec::model::Desired;

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
                // Only what the file can hold: start-only parameters are in it by nature.
                parameters.extend(
                    diff::node_changes(cluster.catalog(), &cluster.parameters, file)
                        .into_iter()
                        .filter(|c| !live_wrong.contains(&c.name))
                        .filter_map(|c| {
                            Some(ParamDrift {
                                expected: c.new?,
                                name: c.name,
                                kind: DriftKind::NotPersisted,
                                found: c.old,
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
        .filter(|c| !c.drifted.is_empty() || !c.silent.is_empty())
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

/// One self-contained HTML page: no script, no external resource. `history` is the
/// drift over time (time, nodes drifted or silent), oldest first, drawn as an SVG bar
/// chart; the report itself is its last point.
pub fn html(r: &DriftReport, history: &[(String, usize)]) -> String {
    let mut out = String::new();
    let status = r.status();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cacheflow drift report {}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}\
         th{{background:#f4f4f4}}.bad{{color:#b00020}}.ok{{color:#1b5e20}}code{{background:#f6f6f6;padding:0 .2em}}\
         </style></head><body>\n<h1>cacheflow drift report</h1>\n\
         <p>{} against <code>{}</code>: <strong id=\"status\" class=\"{}\">{}</strong></p>\n",
        esc(&r.generated_at),
        esc(&r.generated_at),
        esc(&short(r.revision.as_deref())),
        if r.clean() { "ok" } else { "bad" },
        esc(&status)
    );
    let mut points: Vec<(String, usize)> = history.to_vec();
    points.push((r.generated_at.clone(), r.drifted_nodes()));
    out.push_str(&chart(&points));
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
    out.push_str("</body></html>\n");
    out
}

/// An SVG bar chart of drifted nodes per run (the last 60 runs).
fn chart(points: &[(String, usize)]) -> String {
    let points = &points[points.len().saturating_sub(60)..];
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let (w, h, bar) = (640usize, 120usize, 640 / points.len().max(1));
    let mut out = format!(
        "<h2>Drift over time</h2>\n<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" role=\"img\" aria-label=\"nodes drifted per run\">\n",
        h + 20
    );
    for (i, (at, n)) in points.iter().enumerate() {
        let height = n * h / max;
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{height}\" fill=\"{}\"><title>{}: {n}</title></rect>",
            i * bar,
            h - height,
            bar.saturating_sub(2).max(1),
            if *n == 0 { "#1b5e20" } else { "#b00020" },
            esc(at)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"0\" y=\"{}\" font-size=\"11\">max {max} node(s); {} run(s)</text>\n</svg>",
        h + 15,
        points.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(md.contains("- stray"), "{md}");
        let page = html(&r, &[("2026-11-20T03:00:00Z".into(), 0)]);
        assert!(page.contains("<code>K|&lt;b&gt;</code>"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        // Two runs in the chart: the history's clean one and this one.
        assert_eq!(page.matches("<rect ").count(), 2, "{page}");
        assert!(
            page.contains("<title>2026-11-20T03:00:00Z: 0</title>"),
            "{page}"
        );
    }
}
