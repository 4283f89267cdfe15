//! The web console's pages, rendered from the typed status: a pure function of the
//! [`Status`] the runtime published, the latest drift report and the clock reading the
//! caller passes in. Templates are compiled in (askama, `templates/console/`), and every
//! value is HTML-escaped unless a template says `|safe` (only for fragments rendered
//! here or by the drift report, which escape their own values).
//!
//! ```text
//! Status + DriftReport ─► node_state per node ─► fleet (a row per cluster, a cell per node)
//!                                            ─► cluster (batches × nodes, gates, drift)
//! the event stream: the rows (fleet) or the live section (cluster) of what changed
//! ```
//!
//! A node's state, first match wins: silent (the last drift run), rolled back (touched
//! by a rollout that rolled back), failed, assigned (no outcome yet), baking (applied,
//! its batch baking or judged), drifted (the last drift run), refused (the cluster
//! refused a revision), in sync (applied), waiting (no assignment yet).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use askama::Template;

use crate::pure::drift::{ClusterDrift, DriftReport};
use crate::pure::gates::NodeFigures;
use crate::pure::protocol::Outcome;
use crate::pure::reconciler::status::{ClusterStatus, Status};
use crate::pure::render::short_id;
use crate::pure::rollout::{Phase, Verdict};

/// Why a page could not be rendered (a template error: a bug, said as such).
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("the console page could not be rendered: {0}")]
    Template(#[from] askama::Error),
}

/// What a node's cell says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    InSync,
    Assigned,
    Baking,
    Failed,
    RolledBack,
    Drifted,
    Silent,
    Refused,
    Waiting,
}

impl NodeState {
    pub const ALL: [NodeState; 9] = [
        NodeState::InSync,
        NodeState::Assigned,
        NodeState::Baking,
        NodeState::Failed,
        NodeState::RolledBack,
        NodeState::Drifted,
        NodeState::Silent,
        NodeState::Refused,
        NodeState::Waiting,
    ];

    /// The CSS class suffix (`s-in-sync`) and the word people read.
    pub fn class(&self) -> &'static str {
        match self {
            NodeState::InSync => "in-sync",
            NodeState::Assigned => "assigned",
            NodeState::Baking => "baking",
            NodeState::Failed => "failed",
            NodeState::RolledBack => "rolled-back",
            NodeState::Drifted => "drifted",
            NodeState::Silent => "silent",
            NodeState::Refused => "refused",
            NodeState::Waiting => "waiting",
        }
    }

    pub fn word(&self) -> &'static str {
        match self {
            NodeState::InSync => "in sync",
            NodeState::RolledBack => "rolled back",
            other => other.class(),
        }
    }
}

/// The state of `node` of a cluster (see the module's list).
pub fn node_state(cs: &ClusterStatus, node: &str, drift: Option<&ClusterDrift>) -> NodeState {
    if drift.is_some_and(|d| d.silent.iter().any(|s| s.node == node)) {
        return NodeState::Silent;
    }
    let touched = cs
        .rollout
        .as_ref()
        .is_some_and(|r| r.touched.contains(node));
    let phase = cs.progress.as_ref().map(|p| &p.phase);
    if touched
        && matches!(
            phase,
            Some(Phase::RollingBack { .. } | Phase::RolledBack { .. })
        )
    {
        return NodeState::RolledBack;
    }
    let outcome = cs.assignments.get(node).map(|a| a.outcome);
    match outcome {
        Some(Some(Outcome::Failed | Outcome::Inconsistent)) => return NodeState::Failed,
        Some(None) => return NodeState::Assigned,
        _ => {}
    }
    let baking = match (phase, cs.progress.as_ref()) {
        (Some(Phase::Baking { batch } | Phase::Judging { batch }), Some(p)) => p
            .batches
            .get(*batch)
            .is_some_and(|b| b.iter().any(|n| n == node)),
        _ => false,
    };
    if baking {
        return NodeState::Baking;
    }
    if drift.is_some_and(|d| d.drifted.iter().any(|n| n.node == node)) {
        return NodeState::Drifted;
    }
    if cs.refused.is_some() {
        return NodeState::Refused;
    }
    match outcome {
        Some(Some(Outcome::Applied)) => NodeState::InSync,
        _ => NodeState::Waiting,
    }
}

/// The nodes of a cluster in the order the console draws them: the declared ones, then
/// any its rollout or assignments name that the revision no longer declares.
fn nodes_of(cs: &ClusterStatus) -> Vec<&str> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    let batches = cs.progress.iter().flat_map(|p| p.batches.iter().flatten());
    for id in cs
        .declared
        .iter()
        .chain(batches)
        .chain(cs.assignments.keys())
    {
        if seen.insert(id.as_str()) {
            out.push(id.as_str());
        }
    }
    out
}

/// `applying, batch 2 of 3` or `no rollout`.
fn phase_text(cs: &ClusterStatus) -> String {
    match &cs.rollout {
        None => "no rollout".to_owned(),
        Some(r) => match r.batch {
            Some(b) => format!("{}, batch {b} of {}", r.phase, r.batches),
            None => r.phase.clone(),
        },
    }
}

fn revision_of(cs: &ClusterStatus) -> String {
    cs.rollout
        .as_ref()
        .map(|r| r.revision.as_str())
        .or(cs.target.as_ref().map(|t| t.revision.as_str()))
        .map(|r| short_id(r).to_owned())
        .unwrap_or_else(|| "none".to_owned())
}

fn drift_of<'a>(drift: Option<&'a DriftReport>, cluster: &str) -> Option<&'a ClusterDrift> {
    drift?.clusters.iter().find(|c| c.cluster == cluster)
}

/// One cluster's row of the fleet page.
pub struct Row<'a> {
    pub name: &'a str,
    pub revision: String,
    pub phase: String,
    pub cells: Vec<(&'a str, NodeState)>,
}

#[derive(Template)]
#[template(path = "console/row.html")]
struct RowPage<'a> {
    r: Row<'a>,
}

#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage<'a> {
    events: &'a str,
    seq: u64,
    head: String,
    nodes: usize,
    drift_at: String,
    states: [NodeState; 9],
    rows: Vec<String>,
}

/// One cluster's row of the fleet page, as HTML (`<tr id="row-NAME">`): the page draws
/// it and the event stream sends it again when the cluster changes.
pub fn fleet_row(
    name: &str,
    cs: &ClusterStatus,
    drift: Option<&DriftReport>,
) -> Result<String, ConsoleError> {
    let d = drift_of(drift, name);
    let cells = nodes_of(cs)
        .into_iter()
        .map(|n| (n, node_state(cs, n, d)))
        .collect();
    let row = Row {
        name,
        revision: revision_of(cs),
        phase: phase_text(cs),
        cells,
    };
    Ok(RowPage { r: row }.render()?)
}

/// The fleet page: every cluster a row of node cells.
pub fn fleet(status: &Status, drift: Option<&DriftReport>) -> Result<String, ConsoleError> {
    let mut rows = Vec::with_capacity(status.clusters.len());
    let mut nodes = 0;
    for (name, cs) in &status.clusters {
        nodes += nodes_of(cs).len();
        rows.push(fleet_row(name, cs, drift)?);
    }
    let page = FleetPage {
        events: "/console/events",
        seq: status.seq,
        head: status
            .head
            .as_deref()
            .map(|h| short_id(h).to_owned())
            .unwrap_or_else(|| "none taken yet".to_owned()),
        nodes,
        drift_at: drift_time(drift),
        states: NodeState::ALL,
        rows,
    };
    Ok(page.render()?)
}

fn drift_time(drift: Option<&DriftReport>) -> String {
    drift
        .map(|d| format!("the run of {}", d.generated_at))
        .unwrap_or_else(|| "no drift run yet".to_owned())
}

/// One commit of the cluster's history, as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub commit: String,
    pub time: String,
    pub author: String,
    pub subject: String,
    /// The cluster's parameter changes, in words.
    pub changes: String,
    /// The reconciler's note for the cluster (what the commit became).
    pub note: String,
}

/// The gate figures of the batch last judged.
struct Gates {
    batch: usize,
    passed: bool,
    verdict: String,
    untouched: String,
    rows: Vec<FigureRow>,
}

struct FigureRow {
    node: String,
    up: &'static str,
    ops: String,
    hit_before: String,
    hit_during: String,
    latency_before: String,
    latency: String,
    evictions: String,
    memory: String,
    /// An SVG: baseline, during, and the untouched nodes' median.
    bars: String,
}

/// The cluster page's live part.
struct Live<'a> {
    revision: String,
    phase: String,
    /// The batch in progress, from 1 (0: none).
    current: usize,
    reason: Option<String>,
    bake_until_ms: Option<u64>,
    refused: Option<(String, String)>,
    batches: Vec<Vec<(&'a str, NodeState)>>,
    others: Vec<(&'a str, NodeState)>,
    gates: Option<Gates>,
    /// (node, parameter, expected, found)
    drift: Vec<(String, String, String, String)>,
    drift_note: String,
}

#[derive(Template)]
#[template(path = "console/live.html")]
struct LivePage<'a> {
    v: Live<'a>,
    states: [NodeState; 9],
}

#[derive(Template)]
#[template(path = "console/cluster.html")]
struct ClusterPage<'a> {
    events: String,
    seq: u64,
    name: &'a str,
    live: String,
    history: &'a [HistoryRow],
    history_note: &'a str,
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1}%", v * 100.0))
        .unwrap_or_else(|| "–".to_owned())
}

fn num(x: Option<f64>, unit: &str) -> String {
    x.map(|v| format!("{v:.1}{unit}"))
        .unwrap_or_else(|| "–".to_owned())
}

/// Three bars on a 0–100% scale: before (grey), during (blue, or red when below
/// before), and the untouched median as a vertical black line.
fn bars(f: &NodeFigures, untouched: Option<f64>) -> String {
    let w = 120.0;
    let x = |v: f64| (v.clamp(0.0, 1.0) * w).round() as i64;
    let mut out = format!(
        "<svg class=\"bars\" width=\"{}\" height=\"22\" role=\"img\" aria-label=\"hit ratio: baseline, during the bake, untouched nodes\">",
        w as i64 + 2
    );
    if let Some(b) = f.hit_ratio_before {
        let _ = write!(
            out,
            "<rect class=\"before\" x=\"0\" y=\"2\" width=\"{}\" height=\"8\" fill=\"#9e9e9e\"/>",
            x(b)
        );
    }
    if let Some(d) = f.hit_ratio_during {
        let fell = f.hit_ratio_before.is_some_and(|b| d < b);
        let _ = write!(
            out,
            "<rect class=\"during\" x=\"0\" y=\"12\" width=\"{}\" height=\"8\" fill=\"{}\"/>",
            x(d),
            if fell { "#c62828" } else { "#1e88e5" }
        );
    }
    if let Some(u) = untouched {
        let _ = write!(
            out,
            "<line class=\"untouched\" x1=\"{0}\" x2=\"{0}\" y1=\"0\" y2=\"22\" stroke=\"#000\" stroke-width=\"2\"/>",
            x(u)
        );
    }
    out.push_str("</svg>");
    out
}

fn gates_of(cs: &ClusterStatus) -> Option<Gates> {
    let (batch, j) = cs.progress.as_ref()?.judged.as_ref()?;
    let (passed, verdict) = match &j.verdict {
        Verdict::Pass => (true, "passed".to_owned()),
        Verdict::Fail { reason } => (false, format!("failed: {reason}")),
        Verdict::Inconclusive { reason } => (false, format!("inconclusive: {reason}")),
    };
    let rows = j
        .figures
        .iter()
        .map(|f| FigureRow {
            node: f.node.clone(),
            up: if f.up { "yes" } else { "no" },
            ops: num(f.ops_per_sec, ""),
            hit_before: pct(f.hit_ratio_before),
            hit_during: pct(f.hit_ratio_during),
            latency_before: num(f.latency_ms_before, " ms"),
            latency: num(f.latency_ms, " ms"),
            evictions: num(f.evictions_per_sec, ""),
            memory: pct(f.memory_ratio),
            bars: bars(f, j.untouched_hit_ratio),
        })
        .collect();
    Some(Gates {
        batch: batch + 1,
        passed,
        verdict,
        untouched: pct(j.untouched_hit_ratio),
        rows,
    })
}

/// The cluster page's live section (`<section id="cluster-live">`): the event stream
/// sends it again when the cluster changes.
pub fn cluster_live(
    name: &str,
    cs: &ClusterStatus,
    drift: Option<&DriftReport>,
) -> Result<String, ConsoleError> {
    let d = drift_of(drift, name);
    let state = |n: &'_ str| node_state(cs, n, d);
    let batches: Vec<Vec<(&str, NodeState)>> = cs
        .progress
        .iter()
        .flat_map(|p| p.batches.iter())
        .map(|b| b.iter().map(|n| (n.as_str(), state(n))).collect())
        .collect();
    let in_batches: BTreeSet<&str> = batches.iter().flatten().map(|c| c.0).collect();
    let others = nodes_of(cs)
        .into_iter()
        .filter(|n| !in_batches.contains(n))
        .map(|n| (n, state(n)))
        .collect();
    let drift_rows = d
        .map(|c| {
            c.drifted
                .iter()
                .flat_map(|n| {
                    n.parameters.iter().map(|p| {
                        (
                            n.node.clone(),
                            p.name.clone(),
                            p.expected.clone(),
                            p.found.clone().unwrap_or_else(|| "(not set)".to_owned()),
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let baking = matches!(
        cs.progress.as_ref().map(|p| &p.phase),
        Some(Phase::Baking { .. })
    );
    let v = Live {
        revision: revision_of(cs),
        phase: phase_text(cs),
        current: cs.rollout.as_ref().and_then(|r| r.batch).unwrap_or(0),
        reason: cs.rollout.as_ref().and_then(|r| r.reason.clone()),
        bake_until_ms: cs
            .progress
            .as_ref()
            .and_then(|p| p.bake_until_ms)
            .filter(|_| baking),
        refused: cs
            .refused
            .as_ref()
            .map(|r| (short_id(&r.revision).to_owned(), r.reason.clone())),
        batches,
        others,
        gates: gates_of(cs),
        drift: drift_rows,
        drift_note: match (drift, d) {
            (None, _) => "No drift run yet.".to_owned(),
            (Some(r), Some(c)) if !c.silent.is_empty() => format!(
                "No parameter drifted at {}; silent: {}.",
                r.generated_at,
                c.silent
                    .iter()
                    .map(|s| s.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (Some(r), _) => format!("No drift at {}.", r.generated_at),
        },
    };
    Ok(LivePage {
        v,
        states: NodeState::ALL,
    }
    .render()?)
}

/// The cluster page: its live section, the admin actions and its commits.
pub fn cluster(
    status: &Status,
    name: &str,
    cs: &ClusterStatus,
    drift: Option<&DriftReport>,
    history: &[HistoryRow],
    history_note: &str,
) -> Result<String, ConsoleError> {
    let live = cluster_live(name, cs, drift)?;
    let page = ClusterPage {
        events: format!("/console/events?cluster={}", url_part(name)),
        seq: status.seq,
        name,
        live,
        history,
        history_note,
    };
    Ok(page.render()?)
}

#[derive(Template)]
#[template(path = "console/page.html")]
struct Page<'a> {
    events: &'a str,
    seq: u64,
    title: &'a str,
    inner: &'a str,
}

/// The drift page: the latest report and the chart, inside the console. `body` is the
/// drift report's own HTML (it escapes its values).
pub fn drift_page(seq: u64, body: &str) -> Result<String, ConsoleError> {
    Ok(Page {
        events: "/console/events?cluster=",
        seq,
        title: "drift",
        inner: body,
    }
    .render()?)
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct Login;

/// The page a reader without a token gets: type a token, sent once to set the cookie.
pub fn login() -> Result<String, ConsoleError> {
    Ok(Login.render()?)
}

/// A cluster name as a URL query value (names are letters, digits, `-`, `_`, `.`; anything
/// else is percent-encoded).
fn url_part(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The clusters of `now` whose status is not the one in `before` (compared by the shared
/// pointer: the runtime makes a cluster's status again only when it changed), and the
/// clusters gone.
pub fn changed<'a>(before: &Status, now: &'a Status) -> (Vec<&'a str>, Vec<String>) {
    let changed = now
        .clusters
        .iter()
        .filter(|(name, cs)| {
            before
                .clusters
                .get(*name)
                .is_none_or(|b| !std::sync::Arc::ptr_eq(b, cs))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let gone = before
        .clusters
        .keys()
        .filter(|name| !now.clusters.contains_key(*name))
        .cloned()
        .collect();
    (changed, gone)
}

/// Count of nodes per state in a cluster (for tests and summaries).
pub fn counts(cs: &ClusterStatus, drift: Option<&ClusterDrift>) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for n in nodes_of(cs) {
        *out.entry(node_state(cs, n, drift).class()).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pure::drift::{NodeDrift, ParamDrift, Silent};
    use crate::pure::gates::Judgement;
    use crate::pure::reconciler::status::{AssignmentStatus, RolloutProgress, RolloutStatus};

    fn assigned(outcome: Option<Outcome>) -> AssignmentStatus {
        AssignmentStatus {
            generation: 1,
            outcome,
            revision: "r2".into(),
        }
    }

    /// A cluster of 5 nodes in 2 batches, batch 1 (a1, a2) baking: a1 applied, a2 not
    /// yet; a3 applied earlier; a4 never assigned; a5 failed.
    fn baking() -> ClusterStatus {
        let batches = vec![
            vec!["a1".to_owned(), "a2".to_owned()],
            vec!["a3".to_owned(), "a4".to_owned(), "a5".to_owned()],
        ];
        ClusterStatus {
            target: None,
            refused: None,
            rollout: Some(RolloutStatus {
                batch: Some(1),
                batches: 2,
                confirmed: BTreeSet::new(),
                phase: "baking".into(),
                reason: None,
                revision: "0123456789abcdef".into(),
                sentinel: None,
                started_at: "2026-12-06T00:00:00Z".into(),
                touched: ["a1", "a2"].into_iter().map(String::from).collect(),
            }),
            progress: Some(RolloutProgress {
                phase: Phase::Baking { batch: 0 },
                nodes: 5,
                batches: Arc::new(batches),
                bake_until_ms: Some(1_000_000),
                judged: None,
            }),
            assignments: BTreeMap::from([
                ("a1".into(), assigned(Some(Outcome::Applied))),
                ("a2".into(), assigned(None)),
                ("a3".into(), assigned(Some(Outcome::Applied))),
                ("a5".into(), assigned(Some(Outcome::Failed))),
            ]),
            declared: Arc::new(
                ["a1", "a2", "a3", "a4", "a5"]
                    .into_iter()
                    .map(String::from)
                    .collect(),
            ),
        }
    }

    fn drift(cluster: &str) -> DriftReport {
        DriftReport {
            generated_at: "2026-12-06T00:00:00Z".into(),
            revision: None,
            clusters: vec![ClusterDrift {
                cluster: cluster.into(),
                engine: None,
                topology: Vec::new(),
                nodes: 5,
                drifted: vec![NodeDrift {
                    node: "a3".into(),
                    parameters: vec![ParamDrift {
                        name: "hz".into(),
                        kind: crate::pure::drift::DriftKind::Differs,
                        expected: "10".into(),
                        found: Some("<b>50</b>".into()),
                    }],
                }],
                silent: vec![Silent {
                    node: "a4".into(),
                    reason: "refused".into(),
                }],
            }],
            undeclared: Vec::new(),
            not_compared: Vec::new(),
        }
    }

    #[test]
    fn each_node_gets_the_state_that_explains_it() {
        let cs = baking();
        let states: Vec<&str> = ["a1", "a2", "a3", "a4", "a5"]
            .iter()
            .map(|n| node_state(&cs, n, None).word())
            .collect();
        assert_eq!(
            states,
            ["baking", "assigned", "in sync", "waiting", "failed"]
        );
        let report = drift("cache");
        let d = report.clusters.first();
        let states: Vec<&str> = ["a1", "a3", "a4"]
            .iter()
            .map(|n| node_state(&cs, n, d).word())
            .collect();
        assert_eq!(states, ["baking", "drifted", "silent"]);
        // Rolled back: the touched nodes say so; the others, that the cluster refused.
        let mut cs = baking();
        cs.progress.as_mut().unwrap().phase = Phase::RolledBack {
            reason: "gates".into(),
        };
        cs.refused = Some(crate::pure::reconciler::Refused {
            revision: "r2".into(),
            digest: "d".into(),
            reason: "rolled back".into(),
        });
        cs.assignments
            .insert("a2".into(), assigned(Some(Outcome::Applied)));
        let states: Vec<&str> = ["a1", "a2", "a3"]
            .iter()
            .map(|n| node_state(&cs, n, None).word())
            .collect();
        assert_eq!(states, ["rolled back", "rolled back", "refused"]);
    }

    #[test]
    fn the_fleet_row_and_the_cluster_page_escape_what_nodes_and_reports_say() {
        let mut cs = baking();
        Arc::make_mut(&mut cs.declared).push("<script>x</script>".into());
        let report = drift("cache");
        let row = fleet_row("cache", &cs, Some(&report)).unwrap();
        assert!(
            row.starts_with("<tr id=\"row-cache\" data-into=\"rows\">"),
            "{row}"
        );
        assert!(
            row.contains("<i class=\"n s-baking\" data-node=\"a1\" title=\"a1: baking\"></i>"),
            "{row}"
        );
        assert!(
            row.contains("<td class=\"phase\">baking, batch 1 of 2</td>"),
            "{row}"
        );
        assert!(row.contains("<code>0123456789ab</code>"), "{row}");
        assert!(!row.contains("<script>"), "{row}");
        assert!(
            row.contains("&#60;script&#62;") || row.contains("&lt;script&gt;"),
            "{row}"
        );
        let status = Status {
            head: Some("0123456789abcdef".into()),
            clusters: BTreeMap::from([("cache".to_owned(), Arc::new(cs.clone()))]),
            seq: 7,
        };
        let page = cluster(&status, "cache", &cs, Some(&report), &[], "no commits").unwrap();
        assert!(
            page.contains("data-events=\"/console/events?cluster=cache\" data-seq=\"7\""),
            "{page}"
        );
        assert!(
            page.contains("<b id=\"bake\" data-until=\"1000000\"></b>"),
            "{page}"
        );
        assert!(!page.contains("<b>50</b>"), "{page}");
        assert!(
            !page.contains("src=") && !page.contains("href=\"http"),
            "self-contained"
        );
        let fleet_page = fleet(&status, Some(&report)).unwrap();
        assert!(
            fleet_page.contains(&row),
            "the page draws the row the stream sends"
        );
    }

    #[test]
    fn the_gates_are_drawn_against_the_baseline_and_the_untouched_nodes() {
        let mut cs = baking();
        cs.progress.as_mut().unwrap().judged = Some((
            0,
            Judgement {
                verdict: Verdict::Fail {
                    reason: "a1: hit ratio fell".into(),
                },
                notes: Vec::new(),
                figures: vec![NodeFigures {
                    node: "a1".into(),
                    up: true,
                    ops_per_sec: Some(200.0),
                    hit_ratio_before: Some(0.9),
                    hit_ratio_during: Some(0.3),
                    ..NodeFigures::default()
                }],
                untouched_hit_ratio: Some(0.85),
            },
        ));
        let live = cluster_live("cache", &cs, None).unwrap();
        assert!(
            live.contains(
                "<p id=\"verdict\" class=\"bad\">Batch 1: failed: a1: hit ratio fell</p>"
            ),
            "{live}"
        );
        assert!(live.contains("<td class=\"before\">90.0%</td><td class=\"during\">30.0%</td><td class=\"untouched\">85.0%</td>"), "{live}");
        assert!(
            live.contains("<rect class=\"before\" x=\"0\" y=\"2\" width=\"108\""),
            "{live}"
        );
        assert!(live.contains("<rect class=\"during\" x=\"0\" y=\"12\" width=\"36\" height=\"8\" fill=\"#c62828\"/>"), "{live}");
        assert!(
            live.contains("<line class=\"untouched\" x1=\"102\""),
            "{live}"
        );
    }

    #[test]
    fn changed_clusters_are_told_by_their_shared_status() {
        let a = Arc::new(baking());
        let before = Status {
            head: None,
            clusters: BTreeMap::from([("a".to_owned(), a.clone()), ("b".to_owned(), a.clone())]),
            seq: 1,
        };
        let now = Status {
            head: None,
            clusters: BTreeMap::from([
                ("a".to_owned(), a.clone()),
                ("c".to_owned(), Arc::new(baking())),
            ]),
            seq: 2,
        };
        assert_eq!(changed(&before, &now), (vec!["c"], vec!["b".to_owned()]));
    }

    #[test]
    fn a_fleet_of_ten_thousand_nodes_is_one_page_under_two_megabytes() {
        let mut clusters = BTreeMap::new();
        for c in 0..100 {
            let mut cs = baking();
            // 95 more nodes beside the 5 of the rollout.
            cs.declared = Arc::new(
                (0..95)
                    .map(|n| format!("cache-{c:03}-node-{n:03}"))
                    .collect(),
            );
            clusters.insert(format!("cache-{c:03}"), Arc::new(cs));
        }
        let status = Status {
            head: Some("0123456789abcdef".into()),
            clusters,
            seq: 1,
        };
        let began = std::time::Instant::now();
        let page = fleet(&status, None).unwrap();
        let took = began.elapsed();
        println!("fleet page, 10,000 nodes: {} bytes in {took:?}", page.len());
        assert!(page.len() < 2 << 20, "{} bytes", page.len());
        assert_eq!(
            page.matches("<i class=\"n s-").count(),
            100 * 100 + NodeState::ALL.len()
        );
        // Unoptimised test builds are several times slower than the release build.
        assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    }
}
