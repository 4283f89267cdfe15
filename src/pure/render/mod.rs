//! Output for people and programs: validation results, diffs and plans as text, JSON or
//! Markdown (a pull-request comment). JSON is the serde form of the model types, which are
//! sorted, so it is stable byte for byte. Nothing here prints a secret: the model holds
//! only secret references.

use std::fmt::Write as _;

use serde::Serialize;

use crate::pure::catalog::{self, Product};
use crate::pure::diff::{ChangeSet, ClusterDiff, ClusterStatus, ParamChange, Risk};
use crate::pure::plan::Plan;
use crate::pure::rollout::Phase;
use crate::pure::spec::model::Role;
use crate::pure::spec::{Diagnostic, Summary};

mod decor;
pub use decor::{Decor, Mark};

/// A short commit id for people.
pub fn short(commit: Option<&str>) -> String {
    match commit {
        Some(c) => short_id(c).to_owned(),
        None => "the working tree".to_owned(),
    }
}

/// The first 12 characters of a commit id (or all of a shorter one): how every output
/// shows a revision.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(12) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// The word for a rollout's phase, as the status API and `sync`'s summary say it.
pub fn phase_word(phase: &Phase) -> &'static str {
    match phase {
        Phase::Pending => "pending",
        Phase::FailingOver { .. } => "failing-over",
        Phase::Applying { .. } => "applying",
        Phase::Baking { .. } => "baking",
        Phase::Judging { .. } => "judging",
        Phase::Waiting { .. } => "waiting",
        Phase::Paused { .. } => "paused",
        Phase::RollingBack { .. } => "rolling-back",
        Phase::Completed => "completed",
        Phase::RolledBack { .. } => "rolled-back",
        Phase::Superseded { .. } => "superseded",
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

pub fn json<T: Serialize>(value: &T) -> String {
    // Serialising our own plain data types cannot fail; fall back to an error object anyway.
    serde_json::to_string_pretty(value)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render JSON: {e}\"}}"))
        + "\n"
}

// ---------------------------------------------------------------------------------------
// validate

#[derive(Serialize)]
struct ValidateJson<'a> {
    valid: bool,
    commit: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    errors: &'a [Diagnostic],
}

pub fn validate_text(commit: Option<&str>, result: &Result<Summary, Vec<Diagnostic>>) -> String {
    match result {
        Ok(s) => {
            format!(
                "valid: {} cluster{}, {} profile{}, {} node{} at {}\n",
                s.clusters,
                plural(s.clusters),
                s.profiles,
                plural(s.profiles),
                s.nodes,
                plural(s.nodes),
                short(commit)
            )
        }
        Err(diags) => {
            let mut out = String::new();
            for d in diags {
                let _ = writeln!(out, "{d}");
            }
            let mut files: Vec<&str> = diags.iter().map(|d| d.file.as_str()).collect();
            files.dedup();
            let _ = writeln!(
                out,
                "invalid: {} error{} in {} file{} at {}",
                diags.len(),
                plural(diags.len()),
                files.len(),
                plural(files.len()),
                short(commit)
            );
            out
        }
    }
}

pub fn validate_json(commit: Option<&str>, result: &Result<Summary, Vec<Diagnostic>>) -> String {
    let (summary, errors): (Option<Summary>, &[Diagnostic]) = match result {
        Ok(s) => (Some(*s), &[]),
        Err(e) => (None, e),
    };
    json(&ValidateJson {
        valid: result.is_ok(),
        commit,
        summary,
        errors,
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

// ---------------------------------------------------------------------------------------
// diff

fn value(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(unset)")
}

fn applied(c: &ParamChange) -> &'static str {
    match (&c.new, c.restart, c.unchecked) {
        (None, _, _) => "no longer managed: nodes keep their value",
        (_, _, true) => "run time, unchecked",
        (_, true, _) => "restart",
        (_, false, _) => "run time",
    }
}

/// A plan's value as people write it (`8gb`, not `8589934592`; `5m`, not `300`), through
/// the engine's catalog ([`catalog::Catalog::human`]); unchecked parameters as the engine
/// reports them. The JSON keeps the engine's numbers.
fn shown(engine: Product, ch: &ParamChange, v: &Option<String>) -> String {
    match v {
        Some(v) if !ch.unchecked => catalog::catalog(engine.engine()).human(&ch.name, v),
        _ => value(v).to_owned(),
    }
}

/// What a plan line adds after a change: start-only, or sent unchecked.
fn change_note(ch: &ParamChange) -> &'static str {
    if ch.unchecked {
        " (unchecked)"
    } else if ch.restart {
        " (restart)"
    } else {
        ""
    }
}

fn status_word(s: ClusterStatus) -> &'static str {
    match s {
        ClusterStatus::Added => "added",
        ClusterStatus::Removed => "removed",
        ClusterStatus::Modified => "modified",
    }
}

fn risk_line(r: &Risk) -> String {
    let kind = serde_json::to_value(r.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if r.nodes.is_empty() {
        format!("{kind}: {}", r.message)
    } else {
        format!("{kind}: {} [{}]", r.message, r.nodes.join(", "))
    }
}

pub fn diff_text(cs: &ChangeSet) -> String {
    diff_text_with(cs, Decor::PLAIN)
}

/// What a parameter change does to the value: set anew, no longer managed, changed.
fn param_mark(p: &ParamChange) -> Mark {
    match (&p.old, &p.new) {
        (None, _) => Mark::Add,
        (_, None) => Mark::Remove,
        _ => Mark::Change,
    }
}

/// [`diff_text`] decorated for a terminal.
pub fn diff_text_with(cs: &ChangeSet, decor: Decor) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "diff {} → {}",
        short(cs.base.as_deref()),
        short(cs.head.as_deref())
    );
    if cs.is_empty() {
        out.push_str("no cluster changes\n");
        return out;
    }
    for c in &cs.clusters {
        out.push('\n');
        let heading = format!(
            "cluster {} ({}, {}): {}",
            c.cluster,
            c.engine,
            c.file,
            status_word(c.status)
        );
        decor.line(&mut out, "", Mark::Heading, &heading);
        if !c.parameters.is_empty() {
            out.push_str("  parameters:\n");
            for p in &c.parameters {
                let body = format!(
                    "{}: {} → {} ({})",
                    p.name,
                    value(&p.old),
                    value(&p.new),
                    applied(p)
                );
                decor.line(&mut out, "    ", param_mark(p), &body);
            }
        }
        for (label, list, mark) in [
            ("nodes added", &c.nodes_added, Mark::Add),
            ("nodes removed", &c.nodes_removed, Mark::Remove),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "  {label}:");
                for n in list.iter() {
                    let body = format!(
                        "{} ({}, shard {}, {})",
                        n.id,
                        n.address,
                        n.shard,
                        Role::declared_text(n.role)
                    );
                    decor.line(&mut out, "    ", mark, &body);
                }
            }
        }
        for (label, list) in [
            ("cluster", &c.cluster_fields),
            ("node changes", &c.nodes_changed),
            ("rollout", &c.rollout),
        ] {
            if !list.is_empty() {
                let _ = writeln!(out, "  {label}:");
                for f in list.iter() {
                    let body = format!("{}: {} → {}", f.field, f.old, f.new);
                    decor.line(&mut out, "    ", Mark::Change, &body);
                }
            }
        }
        if !c.risks.is_empty() {
            out.push_str("  risks:\n");
            for r in &c.risks {
                decor.line(&mut out, "    ", Mark::Risk, &risk_line(r));
            }
        }
    }
    let risks: usize = cs.clusters.iter().map(|c| c.risks.len()).sum();
    let _ = writeln!(
        out,
        "\n{} cluster{} change{}, {} risk{} flagged",
        cs.clusters.len(),
        plural(cs.clusters.len()),
        if cs.clusters.len() == 1 { "s" } else { "" },
        risks,
        plural(risks)
    );
    out
}

/// Markdown-safe inline code.
pub(crate) fn code(s: &str) -> String {
    format!("`{}`", s.replace('`', "'").replace('|', "\\|"))
}

pub(crate) fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn diff_markdown(cs: &ChangeSet) -> String {
    let mut out = String::new();
    let risks: usize = cs.clusters.iter().map(|c| c.risks.len()).sum();
    if cs.is_empty() {
        let _ = writeln!(
            out,
            "### cacheflow: no cluster changes\n\n{} → {}",
            code(&short(cs.base.as_deref())),
            code(&short(cs.head.as_deref()))
        );
        return out;
    }
    let _ = writeln!(
        out,
        "### cacheflow: {} cluster{} change{}{}\n",
        cs.clusters.len(),
        plural(cs.clusters.len()),
        if cs.clusters.len() == 1 { "s" } else { "" },
        if risks > 0 {
            format!(", ⚠️ {risks} risk{}", plural(risks))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "{} → {}\n",
        code(&short(cs.base.as_deref())),
        code(&short(cs.head.as_deref()))
    );
    out.push_str("| cluster | status | parameters | nodes | rollout | risks |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for c in &cs.clusters {
        let restarts = c.parameters.iter().filter(|p| p.restart).count();
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | +{} −{} | {} | {} |",
            code(&c.cluster),
            status_word(c.status),
            c.parameters.len(),
            if restarts > 0 {
                format!(" ({restarts} restart)")
            } else {
                String::new()
            },
            c.nodes_added.len(),
            c.nodes_removed.len(),
            c.rollout.len(),
            if c.risks.is_empty() {
                "—".to_owned()
            } else {
                format!("⚠️ {}", c.risks.len())
            }
        );
    }
    for c in &cs.clusters {
        cluster_markdown(&mut out, c);
    }
    out
}

fn cluster_markdown(out: &mut String, c: &ClusterDiff) {
    let _ = writeln!(
        out,
        "\n#### {} — {} ({}, {})\n",
        code(&c.cluster),
        status_word(c.status),
        c.engine,
        code(&c.file)
    );
    if !c.risks.is_empty() {
        for r in &c.risks {
            let _ = writeln!(out, "- ⚠️ **{}**", md_cell(&risk_line(r)));
        }
        out.push('\n');
    }
    if !c.parameters.is_empty() {
        out.push_str("| parameter | old | new | applied |\n|---|---|---|---|\n");
        for p in &c.parameters {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                code(&p.name),
                code(value(&p.old)),
                code(value(&p.new)),
                applied(p)
            );
        }
        out.push('\n');
    }
    if !c.nodes_added.is_empty() || !c.nodes_removed.is_empty() {
        out.push_str("| node | change | address | shard | role |\n|---|---|---|---|---|\n");
        for (sign, list) in [("added", &c.nodes_added), ("removed", &c.nodes_removed)] {
            for n in list.iter() {
                let _ = writeln!(
                    out,
                    "| {} | {sign} | {} | {} | {} |",
                    code(&n.id),
                    code(&n.address),
                    code(&n.shard),
                    Role::declared_text(n.role)
                );
            }
        }
        out.push('\n');
    }
    if !c.nodes_changed.is_empty() || !c.rollout.is_empty() || !c.cluster_fields.is_empty() {
        out.push_str("| field | old | new |\n|---|---|---|\n");
        for f in c
            .cluster_fields
            .iter()
            .chain(&c.nodes_changed)
            .chain(&c.rollout)
        {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                code(&f.field),
                code(&f.old),
                code(&f.new)
            );
        }
        out.push('\n');
    }
}

// ---------------------------------------------------------------------------------------
// plan

pub fn plan_text(p: &Plan) -> String {
    plan_text_with(p, Decor::PLAIN)
}

/// [`plan_text`] decorated for a terminal.
pub fn plan_text_with(p: &Plan, decor: Decor) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "plan for {}", short(p.commit.as_deref()));
    for c in &p.clusters {
        out.push('\n');
        let heading = format!(
            "cluster {} ({}): {} to change, {} in sync, {} unreachable",
            c.cluster,
            c.engine,
            c.nodes.len(),
            c.in_sync.len(),
            c.unreachable.len()
        );
        decor.line(&mut out, "", Mark::Heading, &heading);
        for n in &c.nodes {
            let changes: Vec<String> = n
                .changes
                .iter()
                .map(|ch| {
                    format!(
                        "{} {} → {}{}",
                        ch.name,
                        shown(c.engine, ch, &ch.old),
                        shown(c.engine, ch, &ch.new),
                        change_note(ch)
                    )
                })
                .collect();
            let body = format!(
                "{} (shard {}, {}): {}",
                n.id,
                n.shard,
                n.role,
                changes.join("; ")
            );
            decor.line(&mut out, "  ", Mark::Change, &body);
        }
        for u in &c.unreachable {
            let _ = writeln!(out, "  {}: unreachable: {}", u.id, u.reason);
        }
        for t in &c.topology {
            let body = format!("{}: {}", t.node, t.text);
            decor.line(&mut out, "  ", Mark::Live, &body);
        }
        for r in &c.risks {
            decor.line(&mut out, "  ", Mark::Risk, &risk_line(r));
        }
        for s in &c.stages {
            let _ = writeln!(
                out,
                "  stage {} ({}, {} node{} in all):",
                s.index,
                s.stage,
                s.target,
                plural(s.target)
            );
            for (j, b) in s.batches.iter().enumerate() {
                let _ = writeln!(out, "    batch {}: {}", j + 1, b.join(", "));
            }
        }
    }
    if !p.undeclared.is_empty() {
        let _ = writeln!(
            out,
            "\nnodes in the snapshot that no cluster declares: {}",
            p.undeclared.join(", ")
        );
    }
    let changing: usize = p.clusters.iter().map(|c| c.nodes.len()).sum();
    let unreachable: usize = p.clusters.iter().map(|c| c.unreachable.len()).sum();
    let _ = writeln!(
        out,
        "\n{}",
        if p.converged() {
            "converged: every node matches".to_owned()
        } else {
            format!(
                "{changing} node{} to change, {unreachable} unreachable",
                plural(changing)
            )
        }
    );
    out
}

pub fn plan_markdown(p: &Plan) -> String {
    let mut out = String::new();
    let changing: usize = p.clusters.iter().map(|c| c.nodes.len()).sum();
    let _ = writeln!(
        out,
        "### cacheflow plan for {}: {}\n",
        code(&short(p.commit.as_deref())),
        if p.converged() {
            "converged".to_owned()
        } else {
            format!("{changing} node{} to change", plural(changing))
        }
    );
    for c in p
        .clusters
        .iter()
        .filter(|c| !c.nodes.is_empty() || !c.unreachable.is_empty())
    {
        let _ = writeln!(
            out,
            "#### {} ({}): {} to change, {} in sync, {} unreachable\n",
            code(&c.cluster),
            c.engine,
            c.nodes.len(),
            c.in_sync.len(),
            c.unreachable.len()
        );
        for r in &c.risks {
            let _ = writeln!(out, "- ⚠️ **{}**", md_cell(&risk_line(r)));
        }
        for t in &c.topology {
            let _ = writeln!(out, "- {}: {}", code(&t.node), md_cell(&t.text));
        }
        if !c.risks.is_empty() || !c.topology.is_empty() {
            out.push('\n');
        }
        if !c.nodes.is_empty() {
            out.push_str("| node | shard | role | changes |\n|---|---|---|---|\n");
            for n in &c.nodes {
                let changes: Vec<String> = n
                    .changes
                    .iter()
                    .map(|ch| {
                        format!(
                            "{} {} → {}{}",
                            code(&ch.name),
                            code(&shown(c.engine, ch, &ch.old)),
                            code(&shown(c.engine, ch, &ch.new)),
                            change_note(ch)
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    code(&n.id),
                    code(&n.shard),
                    n.role,
                    changes.join("<br>")
                );
            }
            out.push('\n');
        }
        if !c.stages.is_empty() {
            out.push_str("| stage | batches |\n|---|---|\n");
            for s in &c.stages {
                let batches: Vec<String> = s
                    .batches
                    .iter()
                    .map(|b| b.iter().map(|id| code(id)).collect::<Vec<_>>().join(", "))
                    .collect();
                let _ = writeln!(out, "| {} | {} |", code(&s.stage), batches.join(" → "));
            }
            out.push('\n');
        }
        for u in &c.unreachable {
            let _ = writeln!(out, "- {} unreachable: {}", code(&u.id), md_cell(&u.reason));
        }
    }
    if !p.undeclared.is_empty() {
        let ids: Vec<String> = p.undeclared.iter().map(|id| code(id)).collect();
        let _ = writeln!(
            out,
            "\nNodes in the snapshot that no cluster declares: {}",
            ids.join(", ")
        );
    }
    out
}

// ---------------------------------------------------------------------------------------
// snapshot

/// A line per node: reachable or why not, version, memory and hit ratio.
pub fn snapshot_text(state: &crate::pure::live::LiveState) -> String {
    let mut out = String::new();
    let mut down = 0;
    for (id, n) in &state.nodes {
        let cluster = n.cluster.as_deref().unwrap_or("-");
        if !n.reachable {
            down += 1;
            let _ = writeln!(
                out,
                "{id} ({cluster}): unreachable: {}",
                n.error.as_deref().unwrap_or("no reason given")
            );
            continue;
        }
        let h = n.health.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "{id} ({cluster}): {} {}, {} parameters, memory {}/{}, hit ratio {}, ping {}",
            n.engine.map(|e| e.as_str()).unwrap_or("?"),
            n.version.as_deref().unwrap_or("?"),
            n.parameters.len(),
            h.used_memory
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            h.max_memory
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            h.hit_ratio
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into()),
            h.latency_ms
                .map(|v| format!("{v:.2} ms"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    let _ = writeln!(
        out,
        "{} node{}, {} unreachable",
        state.nodes.len(),
        plural(state.nodes.len()),
        down
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_since_the_epoch_read_as_rfc3339_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn a_short_id_is_twelve_characters_and_never_cuts_a_short_or_odd_one() {
        assert_eq!(
            short_id("1111111111111111111111111111111111111111"),
            "111111111111"
        );
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(short_id("ééééééééééééé"), "éééééééééééé");
        assert_eq!(short(None), "the working tree");
    }

    #[test]
    fn every_phase_has_one_word() {
        assert_eq!(
            phase_word(&Phase::RollingBack {
                reason: String::new()
            }),
            "rolling-back"
        );
        assert_eq!(
            phase_word(&Phase::RolledBack {
                reason: String::new()
            }),
            "rolled-back"
        );
        assert_eq!(phase_word(&Phase::Baking { batch: 0 }), "baking");
    }
}
