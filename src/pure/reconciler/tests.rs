//! The reconciler core under virtual time: inputs in, effects out.
//!
//! Agents are simulated by calling [`Reconciler::report`] with a report whose
//! `lastApply` answers the node's current assignment; timers by calling
//! [`Reconciler::timer`] with the event of the `Effect::Timer` the core asked for.

use super::*;
use crate::edges::source::FileSet;
use crate::pure::catalog::Engine;
use crate::pure::live::Health;
use crate::pure::protocol::ApplyResult;

const R1: &str = "1111111111111111111111111111111111111111";
const R2: &str = "2222222222222222222222222222222222222222";
const R3: &str = "3333333333333333333333333333333333333333";
const CLUSTER: &str = "cache";

/// Three redis nodes in two shards: a1 (primary) and a2 (replica) in `a`, b1 in `b`.
/// With stages `[1, 100%]` the batches are `[a2]`, then `[a1, b1]`.
fn cluster_yaml(parameters: &str, managed: Option<&str>, rollout: &str) -> String {
    let managed = managed
        .map(|m| format!(", managed: {m}"))
        .unwrap_or_default();
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: {CLUSTER}}}
spec:
  engine: redis
  parameters: {{{parameters}}}
  nodes:
    - {{id: a1, address: '127.0.0.1:7001', shard: a, role: primary{managed}}}
    - {{id: a2, address: '127.0.0.1:7002', shard: a, role: replica{managed}}}
    - {{id: b1, address: '127.0.0.1:7003', shard: b, role: primary{managed}}}
  rollout: {{{rollout}}}
"
    )
}

const ROLLOUT: &str = "stages: [1, '100%'], bake: 0s, applyTimeout: 10s, gates: {minOpsPerSec: 0}";

/// Load a one-cluster repository through the real loader, at revision `commit`.
fn load(commit: &str, yaml: &str) -> Desired {
    let set = FileSet {
        commit: None,
        files: [("clusters/cache.yaml".to_owned(), yaml.to_owned())].into(),
        problems: Vec::new(),
    };
    let mut desired = crate::pure::spec::load(&set).unwrap_or_else(|e| {
        let lines: Vec<String> = e.iter().map(|d| d.to_string()).collect();
        panic!("the test repository does not load:\n{}", lines.join("\n"))
    });
    desired.commit = Some(commit.to_owned());
    desired
}

fn desired(commit: &str, parameters: &str) -> Desired {
    load(commit, &cluster_yaml(parameters, None, ROLLOUT))
}

fn params(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn node(list: &[(&str, &str)]) -> NodeLive {
    NodeLive {
        reachable: true,
        engine: Some(Engine::Redis),
        parameters: params(list),
        ..NodeLive::default()
    }
}

/// Every node of the cluster running `list`.
fn live(list: &[(&str, &str)]) -> LiveState {
    LiveState {
        sentinels: Default::default(),
        version: crate::pure::live::LIVE_STATE_VERSION,
        taken_at: None,
        nodes: ["a1", "a2", "b1"]
            .iter()
            .map(|id| (id.to_string(), node(list)))
            .collect(),
    }
}

fn report(id: &str, node: NodeLive, last_apply: Option<ApplyResult>) -> Report {
    Report {
        version: PROTOCOL_VERSION,
        node_id: id.to_owned(),
        agent: "cacheflow/test".into(),
        sent_at: "2026-01-01T00:00:00Z".into(),
        node,
        last_apply,
    }
}

/// What an agent says after applying `a` with outcome `outcome`.
fn result(a: &Assignment, outcome: Outcome, error: Option<&str>) -> ApplyResult {
    ApplyResult {
        revision: a.revision.clone().expect("an assignment with a revision"),
        generation: a.generation,
        outcome,
        changed: Vec::new(),
        restarted: false,
        error: error.map(str::to_owned),
        finished_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// The agent of `id` applies its current assignment and reports that it runs it.
fn confirm(r: &mut Reconciler, id: &str, now_ms: u64) -> Vec<Effect> {
    let a = r.assignment(id);
    let pairs: Vec<(&str, &str)> = a
        .parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let rep = report(id, node(&pairs), Some(result(&a, Outcome::Applied, None)));
    let (answer, effects) = r.report(id, rep, now_ms).expect("a declared node");
    assert_eq!(
        answer,
        Assignment {
            confirmed_at: Some("2026-01-01T00:00:00Z".into()),
            ..a
        },
        "the answer to a confirmation is the same assignment, confirmed"
    );
    core(effects)
}

/// The effects this file is about (journal, notes, timers, wakes), in order; metrics
/// effects are left out.
/// Timers' run tokens are set to 0 (the tests of stale timers look at them directly).
fn core(effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .map(|e| match e {
            Effect::Timer {
                cluster,
                after_ms,
                event,
                ..
            } => Effect::Timer {
                cluster,
                after_ms,
                event,
                run: 0,
            },
            other => other,
        })
        .filter(|e| {
            matches!(
                e,
                Effect::Journal { .. }
                    | Effect::Note { .. }
                    | Effect::Timer { .. }
                    | Effect::Wake { .. }
            )
        })
        .collect()
}

fn journals(effects: &[Effect]) -> Vec<&str> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Journal { message } => Some(message.as_str()),
            _ => None,
        })
        .collect()
}

fn notes(effects: &[Effect]) -> Vec<(&str, &str)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Note { revision, text, .. } => Some((revision.as_str(), text.as_str())),
            _ => None,
        })
        .collect()
}

/// The state as the journal stores it.
fn json(state: &State) -> serde_json::Value {
    serde_json::to_value(state).expect("the state serialises")
}

/// The state as a restarted process reads it from the journal: the clusters' files and
/// each rollout's file of its own, each through JSON.
fn through_journal(state: &State) -> State {
    let mut back: State = serde_json::from_value(json(state)).expect("the state reads back");
    for (name, cs) in &state.clusters {
        let rec = back.clusters.get_mut(name).and_then(|c| c.rollout.as_mut());
        if let (Some(fixed), Some(rec)) = (cs.rollout.as_ref().map(|r| &r.fixed), rec) {
            let file = serde_json::to_value(&**fixed).expect("the rollout file serialises");
            rec.fixed =
                Arc::new(serde_json::from_value(file).expect("the rollout file reads back"));
        }
    }
    back
}

fn rollout(r: &Reconciler) -> &Rollout {
    &r.state.clusters[CLUSTER]
        .rollout
        .as_ref()
        .expect("a rollout record")
        .rollout
}

fn phase(r: &Reconciler) -> Phase {
    rollout(r).phase.clone()
}

fn timer(after_ms: u64, event: Event) -> Effect {
    Effect::Timer {
        cluster: CLUSTER.into(),
        after_ms,
        event,
        run: 0,
    }
}

/// The run token of the rollout in flight.
fn run_of(r: &Reconciler) -> u64 {
    r.state.clusters[CLUSTER]
        .rollout
        .as_ref()
        .expect("a rollout record")
        .run
}

fn wake(nodes: &[&str]) -> Effect {
    Effect::Wake {
        nodes: nodes.iter().map(|s| s.to_string()).collect(),
    }
}

fn messages(records: &[crate::pure::reconciler::Record]) -> Vec<String> {
    records.iter().map(|r| r.message.clone()).collect()
}

fn journal(lines: &[&str]) -> Effect {
    Effect::Journal {
        message: lines.join("\n"),
    }
}

fn figures(nodes: &[&str]) -> String {
    let f: Vec<String> = nodes
        .iter()
        .map(|n| format!("{{\"node\":\"{n}\",\"up\":true}}"))
        .collect();
    format!("figures: [{}]", f.join(","))
}

/// A reconciler that took R1 (`hz: 20`) over nodes running `hz 10`, and has assigned
/// the canary batch.
fn started() -> Reconciler {
    let mut r = Reconciler::new(State::default());
    r.revision(desired(R1, "hz: 20"), Some(&live(&[("hz", "10")])), 0);
    r
}

/// Drive `started()` to the point where batch 2 (`a1`, `b1`) is assigned.
fn at_batch_two() -> Reconciler {
    let mut r = started();
    confirm(&mut r, "a2", 1_000);
    r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 1_000);
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    r
}

#[test]
fn a_full_rollout_goes_canary_first_then_the_rest_to_completed() {
    let mut r = Reconciler::new(State::default());
    let effects = core(r.revision(desired(R1, "hz: 20"), Some(&live(&[("hz", "10")])), 0));
    assert_eq!(
        effects,
        vec![
            journal(&[
                &format!("cache: rollout of {R1} started, 2 batch(es)"),
                &format!("cache: batch 1 of 2 assigned {R1}: a2"),
            ]),
            wake(&["a2"]),
            timer(10_000, Event::ApplyTimedOut { batch: 0 }),
        ]
    );
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert_eq!(
        rollout(&r).spec.batches,
        vec![
            vec!["a2".to_owned()],
            vec!["a1".to_owned(), "b1".to_owned()]
        ]
    );
    assert_eq!(
        rollout(&r).spec.previous.as_deref(),
        Some(format!("before-{}", &R1[..12]).as_str())
    );

    // The canary, a replica, is the only node assigned.
    let a2 = r.assignment("a2");
    assert_eq!(a2.revision.as_deref(), Some(R1));
    assert_eq!(a2.generation, 1);
    assert_eq!(a2.parameters, params(&[("hz", "20")]));
    assert!(a2.restart_allowed);
    for id in ["a1", "b1"] {
        let a = r.assignment(id);
        assert_eq!((a.revision, a.generation), (None, 0), "{id}");
        assert!(a.parameters.is_empty());
    }

    // The canary confirms: the bake starts.
    let effects = core(confirm(&mut r, "a2", 2_000));
    assert_eq!(
        effects,
        vec![
            journal(&[&format!("cache: a2 applied {R1}")]),
            timer(0, Event::BakeElapsed { batch: 0 }),
        ]
    );
    assert_eq!(phase(&r), Phase::Baking { batch: 0 });

    // The bake ends, the gates pass, batch 2 is assigned.
    let effects = core(r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 2_000));
    assert_eq!(
        effects,
        vec![
            journal(&[
                "cache: gates of batch 1 passed",
                &figures(&["a2"]),
                "cache: batch 1 passed its gates",
                &format!("cache: batch 2 of 2 assigned {R1}: a1, b1"),
            ]),
            wake(&["a1", "b1"]),
            timer(10_000, Event::ApplyTimedOut { batch: 1 }),
        ]
    );
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    assert_eq!(r.assignment("a1").generation, 2);
    assert_eq!(r.assignment("b1").generation, 3);

    // A late apply timer of the first batch (index 0) changes nothing.
    assert!(core(r.timer(CLUSTER, Event::ApplyTimedOut { batch: 0 }, 3_000)).is_empty());

    // One confirmation is not the batch; the second is.
    let effects = confirm(&mut r, "a1", 3_000);
    assert_eq!(
        effects,
        vec![journal(&[&format!("cache: a1 applied {R1}")])]
    );
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    let effects = confirm(&mut r, "b1", 3_500);
    assert_eq!(
        effects,
        vec![
            journal(&[&format!("cache: b1 applied {R1}")]),
            timer(0, Event::BakeElapsed { batch: 1 }),
        ]
    );

    let effects = core(r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, 3_500));
    assert_eq!(
        journals(&effects),
        vec![[
            "cache: gates of batch 2 passed",
            &figures(&["a1", "b1"]),
            "cache: batch 2 passed its gates",
            &format!("cache: {R1} reached every node"),
        ]
        .join("\n")]
    );
    let n = notes(&effects);
    assert_eq!(n.len(), 1, "{effects:?}");
    assert_eq!(n[0].0, R1);
    assert!(n[0].1.starts_with("completed "), "{}", n[0].1);
    assert!(
        n[0].1.ends_with(": reached 3 node(s): a1, a2, b1"),
        "{}",
        n[0].1
    );
    assert_eq!(effects.len(), 2, "a journal entry and a note: {effects:?}");
    assert_eq!(phase(&r), Phase::Completed);

    let cs = &r.state.clusters[CLUSTER];
    assert_eq!(cs.target.as_ref().unwrap().revision, R1);
    assert!(cs.refused.is_none());
    for (id, generation) in [("a2", 1), ("a1", 2), ("b1", 3)] {
        let a = r.assignment(id);
        assert_eq!(a.revision.as_deref(), Some(R1), "{id}");
        assert_eq!(a.generation, generation, "{id}");
        assert_eq!(a.parameters, params(&[("hz", "20")]), "{id}");
        assert_eq!(cs.assignments[id].outcome, Some(Outcome::Applied), "{id}");
    }
    assert_eq!(r.state.generation, 3);
    assert_eq!(r.state.head.as_deref(), Some(R1));

    // Nothing more happens: ticks and the same revision again start nothing.
    assert!(core(r.tick(10_000)).is_empty());
    assert!(
        core(r.revision(desired(R1, "hz: 20"), Some(&live(&[("hz", "20")])), 10_000)).is_empty()
    );
    assert_eq!(
        r.command(CLUSTER, Event::Pause { by: "x".into() }, 10_000),
        Err(RefusedInput::NoRollout(CLUSTER.into()))
    );
    assert_eq!(
        r.command("nope", Event::Pause { by: "x".into() }, 10_000),
        Err(RefusedInput::UnknownCluster("nope".into()))
    );
}

#[test]
fn the_same_applied_report_twice_journals_once() {
    let mut r = started();
    let first = confirm(&mut r, "a2", 1_000);
    assert_eq!(journals(&first), vec![format!("cache: a2 applied {R1}")]);
    let state = r.state.clone();

    // The agent reports again (its interval) with the same lastApply.
    let again = confirm(&mut r, "a2", 6_000);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(r.state, state);
    assert_eq!(phase(&r), Phase::Baking { batch: 0 });

    // A report of an older generation is not an outcome either.
    let a = r.assignment("a2");
    let mut stale = result(&a, Outcome::Failed, Some("old news"));
    stale.generation -= 1;
    let (answer, effects) = r
        .report(
            "a2",
            report("a2", node(&[("hz", "20")]), Some(stale)),
            7_000,
        )
        .unwrap();
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(answer, a);
    assert_eq!(r.state, state);
}

#[test]
fn the_same_assignment_applied_again_by_a_restarted_agent_is_journaled_once() {
    let mut r = started();
    confirm(&mut r, "a2", 1_000);
    let a = r.assignment("a2");
    assert_eq!(a.confirmed_at.as_deref(), Some("2026-01-01T00:00:00Z"));

    // A restarted agent applied it again (its engine had lost hz) and says so.
    let mut again = result(&a, Outcome::Applied, None);
    again.changed = vec!["hz".into()];
    again.finished_at = "2026-01-01T01:00:00Z".into();
    let send = |r: &mut Reconciler, at: u64| {
        let rep = report("a2", node(&[("hz", "20")]), Some(again.clone()));
        core(r.report("a2", rep, at).unwrap().1)
    };
    assert_eq!(
        journals(&send(&mut r, 6_000)),
        vec![format!(
            "cache: a2 applied {} (generation {}) again after its agent restarted: changed hz",
            &R1[..12],
            a.generation
        )]
    );
    // Its next reports carry the same result: nothing more.
    assert!(send(&mut r, 7_000).is_empty());
    assert_eq!(
        r.assignment("a2").confirmed_at.as_deref(),
        Some("2026-01-01T01:00:00Z")
    );
}

#[test]
fn only_answers_from_journaled_state_skip_the_wait_for_the_entry() {
    let mut r = started();
    // The revision and the canary's assignment are not journaled yet.
    assert!(!r.assignment_is_written("a2"));
    assert_eq!(r.take_changed(), BTreeSet::from([CLUSTER.to_owned()]));
    assert!(r.assignment_is_written("a2") && r.assignment_is_written("b1"));

    // A reading alone changes nothing: still answerable at once.
    let (_, effects) = r
        .report("b1", report("b1", node(&[("hz", "10")]), None), 500)
        .unwrap();
    assert!(effects.is_empty(), "{effects:?}");
    assert!(r.assignment_is_written("b1"));

    // A confirmation changes the cluster: every node of it waits for the entry.
    confirm(&mut r, "a2", 1_000);
    assert!(!r.assignment_is_written("b1"));
    assert_eq!(r.take_changed(), BTreeSet::from([CLUSTER.to_owned()]));
    // An unknown node is never answered from the journal's state.
    assert!(!r.assignment_is_written("zz"));
}

#[test]
fn a_failed_apply_rolls_back_to_what_the_nodes_ran_and_refuses_the_revision() {
    let wanted = "hz: 20, maxmemory: 200mb, maxmemory-policy: allkeys-lru";
    let before = [
        ("hz", "10"),
        ("maxmemory", "100mb"),
        ("maxmemory-policy", "NOEVICTION"),
    ];
    let mut r = Reconciler::new(State::default());
    r.revision(desired(R1, wanted), Some(&live(&before)), 0);
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    let a2 = r.assignment("a2");
    assert_eq!(
        a2.parameters,
        params(&[
            ("hz", "20"),
            ("maxmemory", "209715200"),
            ("maxmemory-policy", "allkeys-lru"),
        ])
    );

    // The canary fails: nothing was applied, it still runs what it ran.
    let error = "ERR CONFIG SET failed (possibly related to argument 'maxmemory')";
    let (answer, effects) = r
        .report(
            "a2",
            report(
                "a2",
                node(&before),
                Some(result(&a2, Outcome::Failed, Some(error))),
            ),
            1_000,
        )
        .unwrap();
    let previous = format!("before-{}", &R1[..12]);
    let reason = format!("a2 failed to apply {R1}: {error}");
    assert_eq!(
        core(effects),
        vec![
            journal(&[&format!("cache: rolling back {R1}: {reason}")]),
            wake(&["a2"]),
            timer(10_000, Event::RollbackTimedOut),
        ]
    );
    assert_eq!(
        phase(&r),
        Phase::RollingBack {
            reason: reason.clone()
        }
    );
    // The restore assignment: the values it ran before, normalised.
    let restore = params(&[
        ("hz", "10"),
        ("maxmemory", "104857600"),
        ("maxmemory-policy", "noeviction"),
    ]);
    assert_eq!(
        answer,
        Assignment {
            version: PROTOCOL_VERSION,
            node_id: "a2".into(),
            revision: Some(previous.clone()),
            generation: 2,
            parameters: restore.clone(),
            restart_allowed: false,
            report_interval_secs: None,
            catalog_version: None,
            product: None,
            unchecked: Vec::new(),
            confirmed_at: None,
        }
    );
    // Untouched nodes were never assigned anything.
    assert_eq!(r.assignment("a1").revision, None);
    assert_eq!(r.assignment("b1").revision, None);

    // a2 confirms the rollback.
    let effects = confirm(&mut r, "a2", 2_000);
    assert_eq!(
        journals(&effects),
        vec![format!("cache: rolled back to {previous}")]
    );
    let n = notes(&effects);
    assert_eq!(n.len(), 1, "{effects:?}");
    assert_eq!(n[0].0, R1);
    assert!(n[0].1.starts_with("rolled back "), "{}", n[0].1);
    assert!(
        n[0].1
            .ends_with(&format!(": {reason}; 1 node(s) back on {previous}")),
        "{}",
        n[0].1
    );
    assert_eq!(
        phase(&r),
        Phase::RolledBack {
            reason: reason.clone()
        }
    );
    let cs = &r.state.clusters[CLUSTER];
    let refused = cs.refused.clone().expect("the revision is refused");
    assert_eq!(refused.revision, R1);
    assert_eq!(refused.reason, reason);
    assert_eq!(refused.digest, cs.target.as_ref().unwrap().digest);
    let generation = r.state.generation;

    // The same revision again (the server restarted, or a poll): nothing starts.
    let effects = core(r.revision(desired(R1, wanted), Some(&live(&before)), 3_000));
    assert!(effects.is_empty(), "{effects:?}");
    assert!(core(r.tick(4_000)).is_empty());
    assert_eq!(r.state.generation, generation);
    assert!(r.state.clusters[CLUSTER].refused.is_some());

    // A new commit with the same content is still refused; only the head moves.
    let effects = core(r.revision(desired(R2, wanted), Some(&live(&before)), 5_000));
    assert_eq!(
        effects,
        vec![journal(&[&format!(
            "revision {} taken: no cluster changed",
            &R2[..12]
        )])]
    );
    assert_eq!(r.state.generation, generation);

    // Changed content: a new rollout, starting again from the canary.
    let effects = r.revision(
        desired(
            R3,
            "hz: 20, maxmemory: 150mb, maxmemory-policy: allkeys-lru",
        ),
        Some(&live(&before)),
        6_000,
    );
    assert_eq!(
        journals(&effects),
        vec![format!(
            "cache: rollout of {R3} started, 2 batch(es)\ncache: batch 1 of 2 assigned {R3}: a2"
        )]
    );
    assert!(r.state.clusters[CLUSTER].refused.is_none());
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert_eq!(rollout(&r).spec.revision, R3);
    // a2's previous assignment is the restore one: a rollback of R3 goes back to it.
    assert_eq!(
        rollout(&r).spec.previous.as_deref(),
        Some(previous.as_str())
    );
    let a2 = r.assignment("a2");
    assert_eq!(a2.revision.as_deref(), Some(R3));
    assert_eq!(a2.generation, generation + 1);
    assert_eq!(a2.parameters["maxmemory"], "157286400");
}

#[test]
fn a_new_revision_supersedes_the_rollout_in_flight() {
    let mut r = at_batch_two();
    let effects = core(r.revision(desired(R2, "hz: 30"), None, 2_000));
    assert_eq!(
        journals(&effects),
        vec![[
            format!("cache: rollout of {R1} superseded by {R2}"),
            format!("cache: rollout of {R2} started, 2 batch(es)"),
            format!("cache: batch 1 of 2 assigned {R2}: a2"),
        ]
        .join("\n")]
    );
    let n = notes(&effects);
    assert_eq!(n.len(), 1, "{effects:?}");
    assert_eq!(n[0].0, R1);
    assert!(n[0].1.starts_with("superseded "), "{}", n[0].1);
    assert!(
        n[0].1
            .ends_with(&format!(" by {} before it reached every node", &R2[..12])),
        "{}",
        n[0].1
    );
    assert_eq!(
        &effects[2..],
        &[
            wake(&["a2"]),
            timer(10_000, Event::ApplyTimedOut { batch: 0 })
        ]
    );
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert_eq!(rollout(&r).spec.revision, R2);
    assert_eq!(
        r.state.clusters[CLUSTER].target.as_ref().unwrap().revision,
        R2
    );
    let a2 = r.assignment("a2");
    assert_eq!(a2.revision.as_deref(), Some(R2));
    assert_eq!(a2.generation, 4);
    assert_eq!(a2.parameters, params(&[("hz", "30")]));
    // a1 and b1 keep what R1 told them until R2 reaches them.
    assert_eq!(r.assignment("a1").revision.as_deref(), Some(R1));
    assert_eq!(r.assignment("b1").generation, 3);

    // A late confirmation of R1 by a1 is taken (its outcome) but moves nothing.
    let effects = confirm(&mut r, "a1", 2_500);
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });

    // R2 then completes over all three nodes.
    confirm(&mut r, "a2", 3_000);
    r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 3_000);
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    confirm(&mut r, "a1", 4_000);
    confirm(&mut r, "b1", 4_000);
    let effects = core(r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, 4_000));
    assert_eq!(phase(&r), Phase::Completed);
    assert_eq!(notes(&effects).len(), 1);
    for id in ["a1", "a2", "b1"] {
        assert_eq!(r.assignment(id).parameters, params(&[("hz", "30")]), "{id}");
        assert_eq!(r.assignment(id).revision.as_deref(), Some(R2), "{id}");
    }
}

#[test]
fn a_restart_mid_rollout_resumes_without_reassigning_or_skipping_a_batch() {
    let mut r = at_batch_two();
    confirm(&mut r, "a1", 2_000);
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    let before = r.state.clone();

    // The process dies; a new one loads the journal's state.
    let text = serde_json::to_string(&r.state).unwrap();
    drop(r);
    let state: State = serde_json::from_str(&text).unwrap();
    assert_eq!(json(&state), json(&before));
    let mut r = Reconciler::new(state);
    let effects = core(r.resume(30_000));
    assert_eq!(
        effects,
        vec![timer(30_000, Event::ApplyTimedOut { batch: 1 })]
    );
    // The new process takes the same revision again at start.
    let effects = core(r.revision(desired(R1, "hz: 20"), None, 0));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(
        json(&r.state),
        json(&before),
        "nothing reassigned, nothing skipped"
    );
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    for (id, generation) in [("a2", 1), ("a1", 2), ("b1", 3)] {
        let a = r.assignment(id);
        assert_eq!(a.revision.as_deref(), Some(R1), "{id}");
        assert_eq!(a.generation, generation, "{id}");
    }
    // A tick does not start anything either.
    assert!(core(r.tick(1_000)).is_empty());

    // a1 reports again (nothing new), b1 confirms: the batch is complete.
    assert!(confirm(&mut r, "a1", 2_000).is_empty());
    let effects = core(confirm(&mut r, "b1", 3_000));
    assert_eq!(
        effects,
        vec![
            journal(&[&format!("cache: b1 applied {R1}")]),
            timer(0, Event::BakeElapsed { batch: 1 }),
        ]
    );
    let effects = core(r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, 3_000));
    assert_eq!(phase(&r), Phase::Completed, "{effects:?}");
    assert_eq!(notes(&effects).len(), 1);
    // The timer re-armed by resume fires late and is ignored.
    assert!(core(r.timer(CLUSTER, Event::ApplyTimedOut { batch: 1 }, 30_000)).is_empty());
}

#[test]
fn a_restart_before_a_rollout_began_begins_it_after_the_grace() {
    // A rollout under Sentinels is created, and its begin waits for their answer: the
    // process dies then. The new process begins it once the nodes could report.
    let r = at_batch_two();
    let mut state = r.state.clone();
    let rec = state
        .clusters
        .get_mut(CLUSTER)
        .unwrap()
        .rollout
        .as_mut()
        .unwrap();
    rec.rollout.phase = Phase::Pending;
    let mut r = Reconciler::new(state);
    assert_eq!(core(r.resume(5_000)), vec![timer(5_000, Event::Begin)]);
}

#[test]
fn a_restart_while_baking_or_judging_bakes_again_then_judges() {
    // The process dies in the bake of batch 2, or while its gates were being judged.
    for crashed_in in [Phase::Baking { batch: 1 }, Phase::Judging { batch: 1 }] {
        let mut r = at_batch_two();
        confirm(&mut r, "a1", 2_000);
        confirm(&mut r, "b1", 2_000);
        let mut state = r.state.clone();
        state
            .clusters
            .get_mut(CLUSTER)
            .unwrap()
            .rollout
            .as_mut()
            .unwrap()
            .rollout
            .phase = crashed_in.clone();
        let state: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let mut r = Reconciler::new(state);
        assert_eq!(
            core(r.resume(5_000)),
            vec![timer(5_000, Event::BakeElapsed { batch: 1 })],
            "{crashed_in:?}"
        );
        assert_eq!(phase(&r), Phase::Baking { batch: 1 });
        assert!(core(r.revision(desired(R1, "hz: 20"), None, 0)).is_empty());
        for id in ["a1", "b1", "a2"] {
            assert!(confirm(&mut r, id, 1_000).is_empty());
        }
        let effects = core(r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, 5_000));
        assert_eq!(
            journals(&effects),
            vec![[
                "cache: gates of batch 2 passed",
                &figures(&["a1", "b1"]),
                "cache: batch 2 passed its gates",
                &format!("cache: {R1} reached every node"),
            ]
            .join("\n")]
        );
        assert_eq!(phase(&r), Phase::Completed, "{crashed_in:?}");
    }
}

#[test]
fn reports_of_unknown_or_other_nodes_are_refused() {
    let mut r = started();
    let state = r.state.clone();
    let e = r
        .report("zz", report("zz", node(&[]), None), 1_000)
        .unwrap_err();
    assert_eq!(e, RefusedInput::UnknownNode("zz".into()));
    assert_eq!(
        e.to_string(),
        "node `zz` is not declared in any cluster of the current revision"
    );
    let e = r
        .report("a1", report("a2", node(&[]), None), 1_000)
        .unwrap_err();
    assert_eq!(
        e,
        RefusedInput::WrongNode {
            expected: "a1".into(),
            found: "a2".into()
        }
    );
    assert_eq!(r.state, state);
    assert!(!r.live().contains_key("zz"));

    // Before any revision every node is unknown.
    let mut fresh = Reconciler::new(State::default());
    assert_eq!(
        fresh
            .report("a1", report("a1", node(&[]), None), 0)
            .unwrap_err(),
        RefusedInput::UnknownNode("a1".into())
    );
}

#[test]
fn a_refused_revision_is_journaled_and_the_head_kept() {
    let mut r = Reconciler::new(State::default());
    assert_eq!(
        core(r.refuse_revision(R1, "clusters/cache.yaml:3:1: unknown field", 0)),
        vec![journal(&[
            &format!(
                "revision {} refused: clusters/cache.yaml:3:1: unknown field",
                &R1[..12]
            ),
            "no revision was applied yet",
        ])]
    );

    let mut r = started();
    let state = r.state.clone();
    let effects = core(r.refuse_revision(R2, "commit is not signed by a trusted signer", 0));
    assert_eq!(
        effects,
        vec![journal(&[
            &format!(
                "revision {} refused: commit is not signed by a trusted signer",
                &R2[..12]
            ),
            &format!("keeping revision {}", &R1[..12]),
        ])]
    );
    assert_eq!(r.state, state, "nothing applied, nothing changed");
}

#[test]
fn start_only_changes_on_direct_nodes_are_refused_not_assigned() {
    let yaml = cluster_yaml("databases: 32", None, ROLLOUT);
    let mut r = Reconciler::new(State::default());
    let effects = core(r.revision(load(R1, &yaml), Some(&live(&[("databases", "16")])), 0));
    let reason =
        "start-only parameters on directly managed nodes, which cacheflow cannot restart: \
                  a1 (databases); a2 (databases); b1 (databases); \
                  manage them with an agent that has --restart-command";
    assert_eq!(
        journals(&effects),
        vec![format!("cache: revision {} refused: {reason}", &R1[..12])]
    );
    assert_eq!(
        notes(&effects),
        vec![(R1, format!("refused: {reason}").as_str())]
    );
    assert_eq!(effects.len(), 2, "{effects:?}");
    let cs = &r.state.clusters[CLUSTER];
    assert!(cs.rollout.is_none());
    assert!(cs.assignments.is_empty());
    assert_eq!(
        cs.refused,
        Some(Refused {
            revision: R1.into(),
            digest: cs.target.as_ref().unwrap().digest.clone(),
            reason: reason.into(),
        })
    );
    assert_eq!(r.state.generation, 0);
    for id in ["a1", "a2", "b1"] {
        assert_eq!(r.assignment(id).revision, None, "{id}");
    }
    // Neither a tick nor the same revision try again.
    assert!(core(r.tick(1_000)).is_empty());
    assert!(
        core(r.revision(load(R1, &yaml), Some(&live(&[("databases", "16")])), 2_000)).is_empty()
    );

    // The same change on agent-managed nodes rolls out, with restarts allowed.
    let yaml = cluster_yaml("databases: 32", Some("agent"), ROLLOUT);
    let mut r = Reconciler::new(State::default());
    r.revision(load(R1, &yaml), Some(&live(&[("databases", "16")])), 0);
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    let a2 = r.assignment("a2");
    assert_eq!(a2.parameters, params(&[("databases", "32")]));
    assert!(a2.restart_allowed);
    assert!(r.state.clusters[CLUSTER].refused.is_none());
}

#[test]
fn nodes_already_running_the_target_are_assigned_without_a_rollout() {
    let mut r = Reconciler::new(State::default());
    let effects = core(r.revision(desired(R1, "hz: 20"), Some(&live(&[("hz", "20")])), 0));
    assert_eq!(
        effects,
        vec![
            journal(&[&format!(
                "cache: 3 node(s) already run {}: a1, a2, b1",
                &R1[..12]
            )]),
            wake(&["a1", "a2", "b1"]),
            Effect::Note {
                revision: R1.into(),
                cluster: CLUSTER.into(),
                text: "in sync 1970-01-01T00:00:00Z: 3 node(s) already run it: a1, a2, b1".into(),
                outcome: None,
            },
        ]
    );
    assert!(r.state.clusters[CLUSTER].rollout.is_none());
    let a = r.assignment("b1");
    assert_eq!(a.revision.as_deref(), Some(R1));
    assert_eq!(a.generation, 3);
    assert!(!a.restart_allowed);
}

/// Health counters as redis reports them: hits and misses since the engine started.
fn traffic(hits: u64, misses: u64) -> NodeLive {
    NodeLive {
        health: Some(Health {
            keyspace_hits: Some(hits),
            keyspace_misses: Some(misses),
            hit_ratio: Some(hits as f64 / (hits + misses) as f64),
            ops_per_sec: Some(100.0),
            ..Health::default()
        }),
        ..node(&[("hz", "10")])
    }
}

const GATED: &str =
    "stages: [1, '100%'], bake: 60s, applyTimeout: 10s, gates: {minOpsPerSec: 10, maxHitRatioDrop: 0.05}";

/// The canary's hit ratio falls from 90% to 50% during its bake while the untouched
/// nodes stay at 90%. With `restart`, the process restarts right after the canary was
/// assigned and the new process's clock starts at 0, as the runtime's does
/// (`runtime::Handle::now_ms` counts from the process's start).
fn hit_ratio_collapse(restart: bool) -> Reconciler {
    let d = || load(R1, &cluster_yaml("hz: 20", None, GATED));
    let before = LiveState {
        sentinels: Default::default(),
        version: crate::pure::live::LIVE_STATE_VERSION,
        taken_at: None,
        nodes: ["a1", "a2", "b1"]
            .iter()
            .map(|id| (id.to_string(), traffic(9_000, 1_000)))
            .collect(),
    };
    // The old process has been up for ten minutes when it takes the revision.
    let t0 = 600_000;
    let mut r = Reconciler::new(State::default());
    r.revision(d(), Some(&before), t0);
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    let mut clock = t0;
    if restart {
        let state = through_journal(&r.state);
        r = Reconciler::new(state);
        r.resume(30_000);
        // The runtime's clock is the wall clock, so time goes on across the restart
        // (5 s of downtime here) and the journaled baseline stays comparable.
        clock = t0 + 5_000;
        r.revision(d(), None, clock);
    }
    let a = r.assignment("a2");
    let mut canary = traffic(9_500, 1_500);
    canary.parameters = a.parameters.clone();
    r.report(
        "a2",
        report("a2", canary, Some(result(&a, Outcome::Applied, None))),
        clock + 1_000,
    )
    .unwrap();
    assert_eq!(phase(&r), Phase::Baking { batch: 0 });
    clock += 61_000;
    for id in ["a1", "b1"] {
        r.report(id, report(id, traffic(9_900, 1_100), None), clock)
            .unwrap();
    }
    let mut canary = traffic(9_500, 1_500);
    canary.parameters = a.parameters.clone();
    r.report("a2", report("a2", canary, None), clock).unwrap();
    r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, clock);
    r
}

const COLLAPSE: &str = "gates failed: a2: hit ratio fell from 90.0% to 50.0%, \
                        untouched nodes 90.0% (more than 5.0%)";

#[test]
fn failed_gates_roll_the_batch_back() {
    let r = hit_ratio_collapse(false);
    assert_eq!(
        phase(&r),
        Phase::RollingBack {
            reason: COLLAPSE.into()
        }
    );
    let a2 = r.assignment("a2");
    assert_eq!(a2.revision, Some(format!("before-{}", &R1[..12])));
    assert_eq!(a2.parameters, params(&[("hz", "10")]));
}

#[test]
fn gates_still_judge_the_hit_ratio_after_a_restart() {
    // `RolloutRecord::baseline` keeps `Sample::at_ms` from the old process; the runtime
    // feeds the core wall-clock milliseconds (a per-process clock made the window 0 s
    // after a restart and skipped the hit-ratio gate), so the window is still right.
    let r = hit_ratio_collapse(true);
    assert_eq!(
        phase(&r),
        Phase::RollingBack {
            reason: COLLAPSE.into()
        }
    );
}

#[test]
fn a_person_retries_a_refused_content_with_a_reason_without_a_new_commit() {
    let mut r = hit_ratio_collapse(false);
    assert_eq!(
        r.retry(CLUSTER, "alice", "too early", 700_000),
        Err(RefusedInput::NothingRefused(CLUSTER.into()))
    );
    confirm(&mut r, "a2", 700_000);
    assert!(
        matches!(phase(&r), Phase::RolledBack { .. }),
        "{:?}",
        phase(&r)
    );
    assert!(r.state.clusters[CLUSTER].refused.is_some());
    assert_eq!(
        r.retry("nope", "alice", "x", 701_000),
        Err(RefusedInput::UnknownCluster("nope".into()))
    );

    let effects = core(
        r.retry(
            CLUSTER,
            "alice",
            "INC-7: a2's clients were failing over",
            701_000,
        )
        .unwrap(),
    );
    let lines = journals(&effects);
    assert_eq!(
        lines[0].lines().next(),
        Some(
            format!(
                "cache: retry of revision {} by alice: INC-7: a2's clients were failing over \
                 (it was refused: {COLLAPSE})",
                &R1[..12]
            )
            .as_str()
        ),
        "{lines:?}"
    );
    assert!(r.state.clusters[CLUSTER].refused.is_none());
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert_eq!(rollout(&r).spec.revision, R1);
    assert_eq!(r.assignment("a2").revision.as_deref(), Some(R1));
    // Nothing refused any more: a second retry is refused.
    assert_eq!(
        r.retry(CLUSTER, "alice", "again", 702_000),
        Err(RefusedInput::NothingRefused(CLUSTER.into()))
    );
}

#[test]
fn a_timer_of_a_superseded_rollout_does_not_fail_the_new_one() {
    // Timer events carry only the cluster and the batch index, and the runtime never
    // cancels a timer; R2's rollout is also in `Applying { batch: 0 }`, so R1's late
    // `ApplyTimedOut { batch: 0 }` fails R2 after 1 s: R2 is rolled back and, once the
    // rollback is confirmed, refused for the cluster.
    // R1's canary is assigned at 0 ms with a 10 s apply timeout.
    let mut r = started();
    let r1_run = run_of(&r);
    // 9 s later R2 supersedes it; R2's canary gets its own 10 s.
    let effects = core(r.revision(desired(R2, "hz: 30"), None, 9_000));
    assert!(effects.contains(&timer(10_000, Event::ApplyTimedOut { batch: 0 })));
    assert_eq!(rollout(&r).spec.revision, R2);
    assert_ne!(run_of(&r), r1_run);
    // R1's timer fires at 10 s: it was R1's, R2's canary still has 9 s.
    let effects = core(r.timer_of(CLUSTER, Event::ApplyTimedOut { batch: 0 }, r1_run, 10_000));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert!(r.state.clusters[CLUSTER].refused.is_none());
}

#[test]
fn a_resumed_batch_gets_its_full_apply_timeout() {
    // `rollout::step` on `Resume` re-runs the batch with a new assignment and a new
    // `ApplyTimedOut { batch }` timer, but the first run's timer for the same batch is
    // still pending and matches `Applying { batch }` (the same happens to a stale
    // `BakeElapsed`, cutting a re-run bake short).
    let mut r = started();
    let first_run = run_of(&r);
    core(
        r.command(CLUSTER, Event::Pause { by: "alice".into() }, 1_000)
            .unwrap(),
    );
    let effects = core(
        r.command(CLUSTER, Event::Resume { by: "alice".into() }, 9_000)
            .unwrap(),
    );
    assert!(effects.contains(&timer(10_000, Event::ApplyTimedOut { batch: 0 })));
    assert_eq!(r.assignment("a2").generation, 2);
    // The timer of the first run fires at 10 s: the resumed run has until 19 s.
    let effects = core(r.timer_of(
        CLUSTER,
        Event::ApplyTimedOut { batch: 0 },
        first_run,
        10_000,
    ));
    assert!(effects.is_empty(), "{effects:?}");
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
}

/// R1 with a deny window: Fridays from 13:00 Berlin time for 10 hours (until 23:00
/// Berlin, 22:00 UTC in November).
fn with_friday_window(commit: &str) -> Desired {
    let set = FileSet {
        commit: None,
        files: [
            (
                "clusters/cache.yaml".to_owned(),
                cluster_yaml("hz: 20", None, ROLLOUT),
            ),
            (
                "cacheflow.yaml".to_owned(),
                "apiVersion: cacheflow/v1
kind: Settings
metadata: {name: settings}
spec:
  windows:
    - {name: no-friday-afternoon, action: deny, schedule: '0 13 * * 5', duration: 10h, timezone: Europe/Berlin}
"
                .to_owned(),
            ),
        ]
        .into(),
        problems: Vec::new(),
    };
    let mut desired = crate::pure::spec::load(&set).expect("the test repository loads");
    desired.commit = Some(commit.to_owned());
    desired
}

fn epoch_ms(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("a time")
        .timestamp_millis() as u64
}

#[test]
fn outside_the_windows_a_rollout_waits_and_starts_by_itself_when_they_open() {
    let friday = epoch_ms("2026-11-27T12:30:00Z");
    let mut r = Reconciler::new(State::default());
    let effects = core(r.revision(with_friday_window(R1), Some(&live(&[("hz", "10")])), friday));
    assert_eq!(
        effects,
        vec![journal(&[
            &format!("{CLUSTER}: rollout of {R1} started, 2 batch(es)"),
            &format!("{CLUSTER}: batch 1 of 2 waits: inside deny window `no-friday-afternoon`; opens at 2026-11-27T22:00:00Z"),
        ])]
    );
    assert!(r.assignment("a2").revision.is_none(), "nothing assigned");
    // Ticks while closed change nothing and journal nothing.
    assert_eq!(r.tick(friday + 3_600_000), vec![]);
    assert_eq!(r.tick(epoch_ms("2026-11-27T21:59:59Z")), vec![]);
    // The windows and the waiting phase survive a restart through the journal's state.
    let state = through_journal(&r.state);
    assert_eq!(state, r.state);
    let mut r = Reconciler::new(state);
    let later = epoch_ms("2026-11-27T21:59:59Z");
    assert_eq!(r.revision(with_friday_window(R1), None, later), vec![]);
    assert_eq!(r.tick(later), vec![]);
    // The window closes at 23:00 Berlin: the canary batch is assigned by itself.
    let open = epoch_ms("2026-11-27T22:00:00Z");
    let effects = core(r.tick(open));
    assert_eq!(
        journals(&effects),
        vec![format!("{CLUSTER}: batch 1 of 2 assigned {R1}: a2")]
    );
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert_eq!(r.assignment("a2").revision.as_deref(), Some(R1));
}

#[test]
fn a_person_overrides_the_windows_with_a_reason_that_is_journaled() {
    let friday = epoch_ms("2026-11-27T12:30:00Z");
    let mut r = Reconciler::new(State::default());
    r.revision(with_friday_window(R1), Some(&live(&[("hz", "10")])), friday);
    assert!(matches!(phase(&r), Phase::Waiting { batch: 0, .. }));
    let effects = core(
        r.command(
            CLUSTER,
            Event::Override {
                by: "alice".into(),
                reason: "INC-42: eviction storm".into(),
            },
            friday + 1_000,
        )
        .expect("a rollout in flight"),
    );
    assert_eq!(
        journals(&effects),
        vec![[
            format!(
                "{CLUSTER}: rollout windows overridden by alice for {R1}: INC-42: eviction storm"
            ),
            format!("{CLUSTER}: batch 1 of 2 assigned {R1}: a2"),
        ]
        .join("\n")]
    );
    // Later batches of this rollout start inside the window too.
    confirm(&mut r, "a2", friday + 2_000);
    r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, friday + 2_000);
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
}

#[test]
fn readings_of_nodes_reported_before_the_revision_declared_them_start_the_rollout_at_once() {
    // The agents reported at the server's start, before the first revision was taken:
    // refused, but their readings count once the revision declares the nodes.
    let mut r = Reconciler::new(State::default());
    r.report_grace_ms = 5_000;
    for (id, at) in [("a1", 100), ("a2", 200), ("b1", 300)] {
        let early = r.report(id, report(id, node(&[("hz", "10")]), None), at);
        assert_eq!(early.unwrap_err(), RefusedInput::UnknownNode(id.into()));
    }
    let effects = core(r.revision(desired(R1, "hz: 20"), None, 1_000));
    assert_eq!(
        journals(&effects),
        vec![[
            format!("{CLUSTER}: rollout of {R1} started, 2 batch(es)"),
            format!("{CLUSTER}: batch 1 of 2 assigned {R1}: a2"),
        ]
        .join("\n")]
    );
    assert_eq!(r.assignment("a2").revision.as_deref(), Some(R1));
    assert_eq!(r.live()["a1"].at_ms, 100, "the reading keeps its time");

    // A reading older than the grace is not a sign of life: the rollout waits as after
    // any start.
    let mut r = Reconciler::new(State::default());
    r.report_grace_ms = 5_000;
    for id in ["a1", "a2"] {
        let _ = r.report(id, report(id, node(&[("hz", "10")]), None), 100);
    }
    let _ = r.report("b1", report("b1", node(&[("hz", "10")]), None), 9_000);
    r.revision(desired(R1, "hz: 20"), None, 10_000);
    assert_eq!(r.assignment("a2").revision, None);
    assert!(!r.live().contains_key("a1"));
    assert!(r.live().contains_key("b1"));
    // Their next reports: the last one starts the rollout, and the canary's own answer
    // carries its assignment.
    let _ = r.report("a1", report("a1", node(&[("hz", "10")]), None), 10_100);
    let (a, _) = r
        .report("a2", report("a2", node(&[("hz", "10")]), None), 10_200)
        .expect("a declared node");
    assert_eq!(a.revision.as_deref(), Some(R1));
}

#[test]
fn after_a_start_the_first_rollout_waits_for_every_node_to_report_within_the_grace() {
    let mut r = Reconciler::new(State::default());
    r.report_grace_ms = 5_000;
    r.revision(desired(R1, "hz: 20"), None, 0);
    let hello = |r: &mut Reconciler, id: &str, now: u64| {
        r.report(id, report(id, node(&[("hz", "10")]), None), now)
            .expect("a declared node")
    };
    hello(&mut r, "a1", 100);
    assert_eq!(r.tick(200), vec![], "a2 and b1 were not heard from yet");
    hello(&mut r, "a2", 300);
    // The last node's first report starts the rollout, without waiting for a tick.
    let (_, effects) = hello(&mut r, "b1", 400);
    let effects = core(effects);
    assert_eq!(core(r.tick(500)), vec![]);
    assert_eq!(
        journals(&effects),
        vec![[
            format!("{CLUSTER}: rollout of {R1} started, 2 batch(es)"),
            format!("{CLUSTER}: batch 1 of 2 assigned {R1}: a2"),
        ]
        .join("\n")]
    );
    assert_eq!(
        rollout(&r).spec.batches,
        vec![
            vec!["a2".to_owned()],
            vec!["a1".to_owned(), "b1".to_owned()]
        ]
    );

    // A node that stays silent holds the rollout only for the grace.
    let mut r = Reconciler::new(State::default());
    r.report_grace_ms = 5_000;
    r.revision(desired(R1, "hz: 20"), None, 0);
    hello(&mut r, "a1", 100);
    hello(&mut r, "a2", 100);
    assert_eq!(r.tick(4_999), vec![]);
    r.tick(5_000);
    assert_eq!(
        rollout(&r).spec.batches.concat(),
        vec!["a2".to_owned(), "a1".to_owned()]
    );
}

/// The notices of effects: (event, summary, targets).
fn notices(effects: &[Effect]) -> Vec<(&'static str, String, Vec<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { notice, targets } => Some((
                notice.event.as_str(),
                notice.summary.clone(),
                targets.iter().map(|t| t.name.clone()).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn notices_go_to_the_targets_subscribed_to_them_after_the_event() {
    let settings = "apiVersion: cacheflow/v1
kind: Settings
metadata: {name: settings}
spec:
  notifications:
    - {name: all, type: webhook, url: 'env:ALL'}
    - {name: pager, type: slack, url: 'env:PAGER', events: [paused, revision-refused]}
";
    let set = FileSet {
        commit: None,
        files: [
            ("cacheflow.yaml".to_owned(), settings.to_owned()),
            (
                "clusters/cache.yaml".to_owned(),
                cluster_yaml("hz: 20", None, ROLLOUT),
            ),
        ]
        .into(),
        problems: Vec::new(),
    };
    let mut d = crate::pure::spec::load(&set).expect("loads");
    d.commit = Some(R1.to_owned());
    let mut r = Reconciler::new(State::default());
    let started = r.revision(d, Some(&live(&[("hz", "10")])), 0);
    assert_eq!(
        notices(&started),
        [(
            "rollout-started",
            "cache: rolling out 111111111111 to 3 node(s) in batches of 1, 2".to_owned(),
            vec!["all".to_owned()]
        )]
    );
    let paused = r
        .command(CLUSTER, Event::Pause { by: "alice".into() }, 1_000)
        .unwrap();
    assert_eq!(
        notices(&paused),
        [(
            "paused",
            "cache: rollout of 111111111111 paused at batch 1: a person decides (resume, rollback)"
                .to_owned(),
            vec!["all".to_owned(), "pager".to_owned()]
        )]
    );
    // Pausing again is refused, saying why: no new pause, no notice, nothing journaled.
    let again = r.command(CLUSTER, Event::Pause { by: "bob".into() }, 2_000);
    assert_eq!(
        again.map_err(|e| e.to_string()),
        Err("cluster `cache`: cannot pause the rollout of 111111111111: it is paused at batch 1 of 2 (paused by alice); pause takes a rollout that is applying, baking, judging or waiting".to_owned())
    );
    let refused = r.refuse_revision(R2, "invalid (1 error(s))", 2_000);
    assert_eq!(
        notices(&refused),
        [(
            "revision-refused",
            "revision 222222222222 refused: nothing applied".to_owned(),
            vec!["all".to_owned(), "pager".to_owned()]
        )]
    );
    // Each notice comes after the journal entry of the same input.
    let journal_at = refused
        .iter()
        .position(|e| matches!(e, Effect::Journal { .. }))
        .unwrap();
    let notice_at = refused
        .iter()
        .position(|e| matches!(e, Effect::Notify { .. }))
        .unwrap();
    assert!(journal_at < notice_at);
}

/// Drive the rollout in flight through both batches (a2, then a1 and b1) to completed.
fn complete(r: &mut Reconciler, at: u64) -> Vec<Effect> {
    let mut effects = confirm(r, "a2", at);
    effects.extend(core(r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, at)));
    effects.extend(confirm(r, "a1", at));
    effects.extend(confirm(r, "b1", at));
    effects.extend(core(r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, at)));
    assert_eq!(phase(r), Phase::Completed);
    effects
}

/// The one-cluster repository with a fourth node, `c1` (a primary of shard `c`).
fn with_c1(commit: &str, parameters: &str) -> Desired {
    let yaml = cluster_yaml(parameters, None, ROLLOUT).replace(
        "  rollout:",
        "    - {id: c1, address: '127.0.0.1:7004', shard: c, role: primary}\n  rollout:",
    );
    load(commit, &yaml)
}

#[test]
fn a_node_added_by_a_commit_is_rolled_out_under_that_commit_and_noted_on_it() {
    let mut r = started();
    let effects = complete(&mut r, 1_000);
    assert_eq!(
        notes(&effects),
        vec![(
            R1,
            "completed 1970-01-01T00:00:01Z: reached 3 node(s): a1, a2, b1"
        )]
    );

    // R2 adds c1 and changes no parameter: c1 gets the content under R2.
    let mut nodes = live(&[("hz", "20")]);
    nodes.nodes.insert("c1".into(), node(&[("hz", "10")]));
    let effects = core(r.revision(with_c1(R2, "hz: 20"), Some(&nodes), 2_000));
    assert_eq!(
        journals(&effects),
        vec![[
            format!("cache: rollout of {R2} started, 1 batch(es)"),
            format!("cache: batch 1 of 1 assigned {R2}: c1"),
        ]
        .join("\n")]
    );
    let cs = &r.state.clusters[CLUSTER];
    assert_eq!(cs.target.as_ref().map(|t| t.revision.as_str()), Some(R2));
    assert_eq!(
        cs.assignments["a1"].revision, R1,
        "a1 keeps what it was given"
    );
    assert_eq!(r.assignment("c1").revision.as_deref(), Some(R2));
    assert!(!r.state.clusters[CLUSTER]
        .rollout
        .as_ref()
        .is_some_and(|x| x.correction));

    let mut effects = confirm(&mut r, "c1", 3_000);
    effects.extend(core(r.timer(
        CLUSTER,
        Event::BakeElapsed { batch: 0 },
        3_000,
    )));
    assert_eq!(
        notes(&effects),
        vec![(R2, "completed 1970-01-01T00:00:03Z: reached 1 node(s): c1")],
        "noted on the commit that added c1, not over R1's note"
    );

    // A later commit that adds no node and changes nothing starts nothing.
    let effects = core(r.revision(with_c1(R3, "hz: 20"), None, 4_000));
    assert_eq!(
        effects,
        vec![journal(&[&format!(
            "revision {} taken: no cluster changed",
            &R3[..12]
        )])]
    );
    assert_eq!(
        r.state.clusters[CLUSTER].target.as_ref().unwrap().revision,
        R2
    );
}

#[test]
fn a_drift_correction_is_journaled_and_noted_on_no_commit() {
    let mut r = started();
    complete(&mut r, 1_000);
    // Someone changes a2 by hand.
    let (_, _) = r
        .report("a2", report("a2", node(&[("hz", "11")]), None), 2_000)
        .expect("a declared node");
    let effects = r.correct(&[CLUSTER.to_owned()], 2_000);
    assert_eq!(
        journals(&effects),
        vec![[
            "cache: correcting drift".to_owned(),
            format!("cache: rollout of {R1} started, 1 batch(es)"),
            format!("cache: batch 1 of 1 assigned {R1}: a2"),
        ]
        .join("\n")]
    );
    assert!(rollout_record(&r).correction);
    let mut effects = r
        .report(
            "a2",
            report(
                "a2",
                node(&[("hz", "20")]),
                Some(result(&r.assignment("a2"), Outcome::Applied, None)),
            ),
            3_000,
        )
        .expect("a declared node")
        .1;
    effects.extend(r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 3_000));
    assert_eq!(
        notes(&effects),
        vec![],
        "a correction is no commit's outcome"
    );
    assert!(effects.contains(&Effect::Corrected {
        cluster: CLUSTER.into(),
        outcome: "completed",
    }));
    let lines: Vec<&str> = journals(&effects)
        .into_iter()
        .flat_map(str::lines)
        .collect();
    assert!(
        lines.contains(
            &"cache: drift correction completed 1970-01-01T00:00:03Z: reached 1 node(s): a2"
        ),
        "{lines:#?}"
    );
}

fn rollout_record(r: &Reconciler) -> &RolloutRecord {
    r.state.clusters[CLUSTER]
        .rollout
        .as_ref()
        .expect("a rollout record")
}

#[test]
fn the_first_revision_says_what_it_leaves_to_roll_out_not_that_nothing_changed() {
    let mut r = Reconciler::new(State::default());
    r.report_grace_ms = 5_000;
    let effects = core(r.revision(desired(R1, "hz: 20"), None, 0));
    assert_eq!(
        effects,
        vec![journal(&[&format!(
            "revision {} (the first revision) taken: 1 cluster(s) to roll out as their nodes report: cache",
            &R1[..12]
        )])]
    );
    // A later head with new content, before the nodes reported: no "(the first ...)".
    let effects = core(r.revision(desired(R2, "hz: 21"), None, 100));
    assert_eq!(
        effects,
        vec![journal(&[&format!(
            "revision {} taken: 1 cluster(s) to roll out as their nodes report: cache",
            &R2[..12]
        )])]
    );
}

#[test]
fn after_a_restart_the_rollouts_resumed_are_described_for_the_log() {
    let r = at_batch_two();
    let state = r.state.clone();
    let again = Reconciler::new(state);
    assert_eq!(
        messages(&again.resuming(5_000)),
        vec![format!(
            "cache: rollout of {} resumed after a restart: batch 2 of 2, waiting up to 10s for its nodes to confirm",
            &R1[..12]
        )]
    );
    let mut r = started();
    confirm(&mut r, "a2", 1_000);
    let again = Reconciler::new(r.state.clone());
    assert_eq!(
        messages(&again.resuming(5_000)),
        vec![format!(
            "cache: rollout of {} resumed after a restart: batch 1 of 2, baking again for 5s before its gates are judged",
            &R1[..12]
        )]
    );
    complete(&mut r, 2_000);
    assert_eq!(
        messages(&Reconciler::new(r.state.clone()).resuming(5_000)),
        Vec::<String>::new()
    );
}

/// The one-cluster repository at `commit` (`hz: 20`) without node `b1`.
fn without_b1(commit: &str) -> Desired {
    let yaml = cluster_yaml("hz: 20", None, ROLLOUT).replace(
        "    - {id: b1, address: '127.0.0.1:7003', shard: b, role: primary}\n",
        "",
    );
    load(commit, &yaml)
}

fn assigned(r: &Reconciler) -> Vec<&str> {
    r.state.clusters[CLUSTER]
        .assignments
        .keys()
        .map(String::as_str)
        .collect()
}

fn records(effects: &[Effect]) -> Vec<crate::pure::reconciler::Record> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Log { records } => Some(records.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

#[test]
fn a_node_a_commit_removes_leaves_the_state_when_the_commit_is_taken() {
    let mut r = at_batch_two();
    confirm(&mut r, "a1", 2_000);
    confirm(&mut r, "b1", 2_000);
    r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, 2_000);
    assert_eq!(phase(&r), Phase::Completed);
    assert_eq!(assigned(&r), ["a1", "a2", "b1"]);

    let effects = core(r.revision(without_b1(R2), None, 3_000));
    assert_eq!(
        journals(&effects),
        ["cache: b1 no longer declared in the cluster: assignment dropped"]
    );
    assert_eq!(assigned(&r), ["a1", "a2"]);
    let status = status::Status::of(&r.state);
    assert_eq!(status.nodes(), BTreeMap::from([("applied", 2)]));
    // What the journal stores agrees: a restart from it holds the same two.
    let back = through_journal(&r.state);
    let again = Reconciler::new(back);
    assert_eq!(assigned(&again), ["a1", "a2"]);
    // The completed rollout is the record of R1: it keeps the nodes it reached.
    assert_eq!(phase(&r), Phase::Completed);
}

#[test]
fn a_node_removed_during_a_rollout_leaves_it_and_the_rollout_goes_on() {
    let mut r = at_batch_two();
    confirm(&mut r, "a1", 2_000);
    // b1 never confirms: it is removed while its batch applies.
    let effects = core(r.revision(without_b1(R2), None, 3_000));
    assert_eq!(
        journals(&effects),
        [[
            "cache: b1 no longer declared in the cluster: assignment dropped",
            &format!("cache: b1 left the rollout of {R1}: no longer declared in the cluster"),
        ]
        .join("\n")]
    );
    assert_eq!(phase(&r), Phase::Baking { batch: 1 });
    assert_eq!(
        rollout(&r).spec.batches,
        [vec!["a2".to_owned()], vec!["a1".to_owned()]]
    );
    assert_eq!(assigned(&r), ["a1", "a2"]);
    let effects = core(r.timer(CLUSTER, Event::BakeElapsed { batch: 1 }, 3_000));
    assert_eq!(phase(&r), Phase::Completed);
    assert_eq!(
        notes(&effects),
        [(
            R1,
            "completed 1970-01-01T00:00:03Z: reached 2 node(s): a1, a2"
        )]
    );
}

#[test]
fn a_rollback_does_not_wait_for_a_node_that_left_the_cluster() {
    let mut r = at_batch_two();
    r.command(CLUSTER, Event::Abort { by: "alice".into() }, 2_000)
        .unwrap();
    confirm(&mut r, "a1", 2_000);
    confirm(&mut r, "a2", 2_000);
    assert!(matches!(phase(&r), Phase::RollingBack { .. }));
    // b1, still to confirm the rollback, is removed: the rollback is over.
    r.revision(without_b1(R2), None, 3_000);
    assert_eq!(
        phase(&r),
        Phase::RolledBack {
            reason: "aborted by alice".into()
        }
    );
    assert_eq!(assigned(&r), ["a1", "a2"]);
}

#[test]
fn a_rollout_whose_cluster_a_commit_removes_is_superseded_and_its_nodes_dropped() {
    let mut r = at_batch_two();
    // The same nodes, now declared in another cluster: `cache` is gone.
    let yaml = cluster_yaml("hz: 20", None, ROLLOUT).replace("{name: cache}", "{name: other}");
    let set = FileSet {
        commit: None,
        files: [("clusters/other.yaml".to_owned(), yaml)].into(),
        problems: Vec::new(),
    };
    let mut d = crate::pure::spec::load(&set).expect("loads");
    d.commit = Some(R2.to_owned());
    let effects = core(r.revision(d, None, 3_000));
    let lines = journals(&effects).join("\n");
    assert!(
        lines.starts_with(&format!(
            "cache: a1, a2, b1 no longer declared in the cluster: assignment dropped\ncache: rollout of {R1} superseded by {R2}"
        )),
        "{lines}"
    );
    assert_eq!(phase(&r), Phase::Superseded { by: R2.into() });
    assert!(assigned(&r).is_empty());
}

#[test]
fn every_journal_line_is_one_log_record_with_its_fields() {
    type Fields<'a> = (
        &'static str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
        Option<usize>,
        bool,
    );
    fn fields(logged: &[crate::pure::reconciler::Record]) -> Vec<Fields<'_>> {
        logged
            .iter()
            .map(|l| {
                let (c, r, n) = (
                    l.cluster.as_deref(),
                    l.revision.as_deref(),
                    l.node.as_deref(),
                );
                (l.event, c, r, n, l.batch, l.warn)
            })
            .collect()
    }
    let mut r = Reconciler::new(State::default());
    let effects = r.revision(desired(R1, "hz: 20"), Some(&live(&[("hz", "10")])), 0);
    let logged = records(&effects);
    // One record per journal line, in order, with the line's text.
    assert_eq!(messages(&logged).join("\n"), journals(&effects).join("\n"));
    let c = Some(CLUSTER);
    let rev = Some(R1);
    assert_eq!(
        fields(&logged),
        vec![
            ("rollout_started", c, rev, None, None, false),
            ("batch_assigned", c, rev, None, Some(1), false),
        ]
    );
    let a = r.assignment("a2");
    let pairs: Vec<(&str, &str)> = a
        .parameters
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let rep = report("a2", node(&pairs), Some(result(&a, Outcome::Applied, None)));
    let (_, effects) = r.report("a2", rep, 1_000).expect("a declared node");
    let logged = records(&effects);
    assert_eq!(messages(&logged).join("\n"), journals(&effects).join("\n"));
    assert_eq!(
        fields(&logged),
        vec![("node_applied", c, rev, Some("a2"), Some(1), false)]
    );
    let effects = r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 1_000);
    let logged = records(&effects);
    assert_eq!(messages(&logged).join("\n"), journals(&effects).join("\n"));
    assert_eq!(
        fields(&logged),
        vec![
            ("gates_judged", c, rev, None, Some(1), false),
            ("batch_passed", c, rev, None, Some(1), false),
            ("batch_assigned", c, rev, None, Some(2), false),
        ]
    );
    // A person's abort: the rollback is a warning.
    let effects = r
        .command(CLUSTER, Event::Abort { by: "alice".into() }, 2_000)
        .unwrap();
    assert_eq!(
        fields(&records(&effects)),
        vec![("rolling_back", c, rev, None, None, true)]
    );
}

/// R1 (`hz: 20`) reached every node; R2 (`hz: 30`) failed on the canary and was rolled
/// back (noted on R2), so its content is refused.
fn r2_rolled_back() -> Reconciler {
    let mut r = started();
    complete(&mut r, 1_000);
    r.revision(desired(R2, "hz: 30"), Some(&live(&[("hz", "20")])), 2_000);
    let a = r.assignment("a2");
    let failed = Some(result(&a, Outcome::Failed, Some("ERR no")));
    r.report("a2", report("a2", node(&[("hz", "20")]), failed), 3_000)
        .expect("a declared node");
    let effects = confirm(&mut r, "a2", 4_000);
    assert_eq!(
        notes(&effects),
        vec![(
            R2,
            "rolled back 1970-01-01T00:00:04Z: a2 failed to apply \
             2222222222222222222222222222222222222222: ERR no; 1 node(s) back on \
             1111111111111111111111111111111111111111"
        )]
    );
    r
}

#[test]
fn a_retry_is_noted_on_the_commit_whose_content_it_rolls_out_not_on_the_head() {
    let mut r = r2_rolled_back();
    // R3 changes nothing of the cluster: the head moves, the content stays R2's.
    r.revision(desired(R3, "hz: 30"), None, 5_000);
    let mut effects = core(r.retry(CLUSTER, "alice", "INC-9", 6_000).unwrap());
    assert_eq!(rollout(&r).spec.revision, R2);
    effects.extend(complete(&mut r, 7_000));
    assert_eq!(
        notes(&effects),
        vec![(
            R2,
            "completed 1970-01-01T00:00:07Z: reached 3 node(s): a1, a2, b1"
        )],
        "added to R2's note, after its rolled-back line; R3 changed nothing"
    );
}

#[test]
fn a_revert_after_a_rollback_is_noted_in_sync_on_the_revert_and_a_fix_on_the_fix() {
    let mut r = r2_rolled_back();
    // R3 reverts to R1's content, which every node runs again since the rollback.
    let generation = r.state.generation;
    let effects = core(r.revision(desired(R3, "hz: 20"), None, 5_000));
    assert_eq!(
        effects,
        vec![
            journal(&["cache: 3 node(s) already run 333333333333: a1, a2, b1"]),
            Effect::Note {
                revision: R3.into(),
                cluster: CLUSTER.into(),
                text: "in sync 1970-01-01T00:00:05Z: 3 node(s) already run it: a1, a2, b1".into(),
                outcome: None,
            },
        ],
        "never `no cluster changed`, never left without a note"
    );
    assert_eq!(r.state.generation, generation, "nothing assigned again");
    assert!(r.state.clusters[CLUSTER].refused.is_none());

    // A fix with new content is a rollout of its own, noted on the fix.
    const R4: &str = "4444444444444444444444444444444444444444";
    let effects = core(r.revision(desired(R4, "hz: 25"), None, 6_000));
    assert_eq!(
        journals(&effects)[0].lines().next(),
        Some(format!("cache: rollout of {R4} started, 2 batch(es)").as_str())
    );
    let effects = complete(&mut r, 7_000);
    assert_eq!(
        notes(&effects),
        vec![(
            R4,
            "completed 1970-01-01T00:00:07Z: reached 3 node(s): a1, a2, b1"
        )]
    );
}

#[test]
fn nodes_found_running_the_content_as_they_report_note_it_once_when_the_last_is_assigned() {
    let mut r = Reconciler::new(State::default());
    r.report_grace_ms = 1_000;
    // Taken at a start: no node has reported yet.
    let effects = core(r.revision(desired(R1, "hz: 20"), None, 0));
    assert_eq!(notes(&effects), vec![]);
    for id in ["a1", "a2"] {
        r.report(id, report(id, node(&[("hz", "20")]), None), 100)
            .expect("a declared node");
    }
    // The grace passes without b1: a1 and a2 are assigned, nothing is noted yet.
    let effects = core(r.tick(1_500));
    assert_eq!(
        journals(&effects),
        vec!["cache: 2 node(s) already run 111111111111: a1, a2"]
    );
    assert_eq!(notes(&effects), vec![]);
    // b1 reports later: the last one assigned, the commit is noted once.
    let (_, mut effects) = r
        .report("b1", report("b1", node(&[("hz", "20")]), None), 2_000)
        .expect("a declared node");
    effects.extend(r.tick(2_000));
    let effects = core(effects);
    assert_eq!(
        notes(&effects),
        vec![(
            R1,
            "in sync 1970-01-01T00:00:02Z: 3 node(s) already run it: a1, a2, b1"
        )]
    );
    assert_eq!(
        journals(&effects),
        vec!["cache: 1 node(s) already run 111111111111: b1"]
    );
    assert!(core(r.tick(3_000)).is_empty());
}

/// A node running `databases` as `role` (a replica follows a1 at 127.0.0.1:7001 with its
/// link up, caught up).
fn replicated(databases: &str, role: crate::pure::spec::model::Role) -> NodeLive {
    use crate::pure::live::{LinkState, Topology};
    use crate::pure::spec::model::Role;
    NodeLive {
        health: Some(Health {
            role: Some(role),
            replication_link: (role == Role::Replica).then_some(LinkState::Up),
            topology: Some(Topology {
                primary: (role == Role::Replica).then(|| "127.0.0.1:7001".to_owned()),
                offset: Some(100),
                ..Topology::default()
            }),
            ..Health::default()
        }),
        ..node(&[("databases", databases)])
    }
}

#[test]
fn a_restart_of_a_live_primary_with_a_replica_fails_over_to_it_first() {
    use crate::pure::rollout::FailoverPlan;
    use crate::pure::spec::model::Role;
    let yaml =
        |databases: &str| cluster_yaml(&format!("databases: {databases}"), Some("agent"), ROLLOUT);
    let mut before = LiveState {
        sentinels: Default::default(),
        version: crate::pure::live::LIVE_STATE_VERSION,
        taken_at: None,
        nodes: BTreeMap::new(),
    };
    before
        .nodes
        .insert("a1".into(), replicated("16", Role::Primary));
    before
        .nodes
        .insert("a2".into(), replicated("16", Role::Replica));
    before
        .nodes
        .insert("b1".into(), replicated("16", Role::Primary));
    let mut r = Reconciler::new(State::default());
    r.revision(load(R1, &yaml("32")), Some(&before), 0);
    // a1 (shard a, replica a2) fails over; b1, alone in its shard, restarts in place.
    assert_eq!(
        rollout(&r).spec.failovers,
        [(
            "a1".to_owned(),
            FailoverPlan {
                shard: "a".into(),
                replicas: vec!["a2".into()]
            }
        )]
        .into_iter()
        .collect()
    );
    // The replica applies and reports, still following a1 with its link up.
    let a = r.assignment("a2");
    let rep = report(
        "a2",
        replicated("32", Role::Replica),
        Some(result(&a, Outcome::Applied, None)),
    );
    r.report("a2", rep, 1_000).unwrap();
    // Unfiltered: `core` keeps only journal, note, timer and wake effects.
    let effects = r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 2_000);
    assert!(
        journals(&effects)
            .iter()
            .any(|j| j.contains("cache: failover of shard a: a1 → a2 (a1 restarts as a replica)")),
        "{effects:#?}"
    );
    let run = run_of(&r);
    assert!(effects.contains(&Effect::Failover {
        cluster: CLUSTER.into(),
        batch: 1,
        shard: "a".into(),
        from: "a1".into(),
        to: "a2".into(),
        to_address: "127.0.0.1:7002".into(),
        timeout_ms: 10_000,
        run,
        sentinel: None,
        method: crate::pure::topology::FailoverMethod::Replication,
    }));
    assert_eq!(
        phase(&r),
        Phase::FailingOver {
            batch: 1,
            from: "a1".into(),
            to: Some("a2".into())
        }
    );
    // Not assigned before the failover completes.
    assert_eq!(r.assignment("a1").revision, None);
    let effects = core(r.timer_of(
        CLUSTER,
        Event::FailedOver {
            batch: 1,
            from: "a1".into(),
            to: "a2".into(),
        },
        run,
        3_000,
    ));
    assert!(journals(&effects).iter().any(
        |j| j.starts_with("cache: failover of shard a done: a2 is the primary, a1 its replica")
    ));
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    assert_eq!(r.assignment("a1").revision.as_deref(), Some(R1));
    assert_eq!(r.assignment("b1").revision.as_deref(), Some(R1));
}

/// The cluster of `cluster_yaml` (databases 32) under three Sentinels, and its nodes as
/// they run before (databases 16): a1 the primary of shard a, a2 its replica, b1.
fn under_sentinels() -> (String, LiveState) {
    use crate::pure::spec::model::Role;
    let yaml = cluster_yaml("databases: 32", Some("agent"), ROLLOUT).replace(
        "  nodes:\n",
        "  sentinel: {masterName: main, addresses: ['127.0.0.1:26380', '127.0.0.1:26381', '127.0.0.1:26382']}\n  nodes:\n",
    );
    let mut before = LiveState {
        sentinels: Default::default(),
        version: crate::pure::live::LIVE_STATE_VERSION,
        taken_at: None,
        nodes: BTreeMap::new(),
    };
    for (id, role) in [
        ("a1", Role::Primary),
        ("a2", Role::Replica),
        ("b1", Role::Primary),
    ] {
        before.nodes.insert(id.into(), replicated("16", role));
    }
    (yaml, before)
}

#[test]
fn a_batch_held_for_the_sentinels_answer_stays_unassigned_when_paused_meanwhile() {
    use crate::pure::spec::model::Role;
    let (yaml, before) = under_sentinels();
    let a1 = sentinels_say([Some("127.0.0.1:7001"), Some("127.0.0.1:7001"), None]);
    let mut r = Reconciler::new(State::default());
    r.revision(load(R1, &yaml), Some(&before), 0);
    // The answer that settles them makes batch 1 due; it starts on the next answer.
    r.sentinel(CLUSTER, a1.clone(), 0, 10);
    r.sentinel(CLUSTER, a1.clone(), 10, 20);
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    let a = r.assignment("a2");
    let rep = report(
        "a2",
        replicated("32", Role::Replica),
        Some(result(&a, Outcome::Applied, None)),
    );
    r.report("a2", rep, 100).unwrap();
    // Batch 2 is due after the bake and held for an answer; a person pauses meanwhile.
    let effects = r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 1_000);
    assert!(effects.contains(&Effect::AskSentinels {
        cluster: CLUSTER.into()
    }));
    r.command(CLUSTER, Event::Pause { by: "alice".into() }, 1_005)
        .unwrap();
    assert!(matches!(phase(&r), Phase::Paused { batch: 0, .. }));
    // The answer comes: the held step is no longer due, nothing starts.
    let effects = r.sentinel(CLUSTER, a1.clone(), 1_000, 1_010);
    assert!(matches!(phase(&r), Phase::Paused { batch: 0, .. }));
    assert_eq!(r.assignment("a1").revision, None);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::AskSentinels { .. })));
    // Resumed: the batch is due again and waits for an answer asked after that.
    let effects = r
        .command(CLUSTER, Event::Resume { by: "alice".into() }, 2_000)
        .unwrap();
    assert!(effects.contains(&Effect::AskSentinels {
        cluster: CLUSTER.into()
    }));
    r.sentinel(CLUSTER, a1.clone(), 1_990, 2_005);
    assert!(matches!(phase(&r), Phase::Paused { batch: 0, .. }));
    r.sentinel(CLUSTER, a1, 2_000, 2_010);
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
}

/// Three Sentinels' answers: each names `primary` (`None`: unreachable).
fn sentinels_say(primaries: [Option<&str>; 3]) -> Vec<crate::pure::live::SentinelAnswer> {
    primaries
        .iter()
        .enumerate()
        .map(|(i, p)| crate::pure::live::SentinelAnswer {
            address: format!("127.0.0.1:2638{i}"),
            primary: p.map(str::to_owned),
            failing_over: false,
            error: p
                .is_none()
                .then(|| "unreachable: connection refused".to_owned()),
        })
        .collect()
}

#[test]
fn under_sentinel_batches_wait_for_a_quorum_and_a_failover_they_make_is_noticed_not_fought() {
    use crate::pure::spec::model::Role;
    let (yaml, before) = under_sentinels();
    let mut r = Reconciler::new(State::default());
    // Not asked yet: batch 1 waits, nothing assigned.
    let effects = r.revision(load(R1, &yaml), Some(&before), 0);
    assert!(
        journals(&effects).iter().any(|j| j
            .contains("cache: batch 1 of 2 waits: the Sentinels of main have not been asked yet")),
        "{effects:#?}"
    );
    assert_eq!(r.assignment("a2").revision, None);
    // A split view: still waiting, nothing assigned.
    let split = sentinels_say([Some("127.0.0.1:7001"), Some("127.0.0.1:7002"), None]);
    r.sentinel(CLUSTER, split, 490, 500);
    assert!(matches!(phase(&r), Phase::Waiting { batch: 0, .. }));
    assert_eq!(r.assignment("a2").revision, None);
    // A quorum agrees on a1: the batch is due, and waits for an answer asked after
    // that (the Sentinels are asked at once).
    let a1 = sentinels_say([Some("127.0.0.1:7001"), Some("127.0.0.1:7001"), None]);
    let effects = r.sentinel(CLUSTER, a1.clone(), 990, 1_000);
    assert!(effects.contains(&Effect::AskSentinels {
        cluster: CLUSTER.into()
    }));
    assert_eq!(r.assignment("a2").revision, None);
    // A periodic answer asked before it was due does not start it either.
    let effects = r.sentinel(CLUSTER, a1.clone(), 995, 1_005);
    assert!(!effects
        .iter()
        .any(|e| matches!(e, Effect::AskSentinels { .. })));
    assert_eq!(r.assignment("a2").revision, None);
    // The answer to the ask: the batch starts by itself.
    r.sentinel(CLUSTER, a1, 1_000, 1_010);
    assert_eq!(phase(&r), Phase::Applying { batch: 0 });
    assert_eq!(r.assignment("a2").revision.as_deref(), Some(R1));
    let a = r.assignment("a2");
    let rep = report(
        "a2",
        replicated("32", Role::Replica),
        Some(result(&a, Outcome::Applied, None)),
    );
    r.report("a2", rep, 1_200).unwrap();
    assert_eq!(phase(&r), Phase::Baking { batch: 0 });
    // The Sentinels fail a1 over to a2 by themselves while batch 1 bakes.
    let a2 = sentinels_say([
        Some("127.0.0.1:7002"),
        Some("127.0.0.1:7002"),
        Some("127.0.0.1:7002"),
    ]);
    let effects = r.sentinel(CLUSTER, a2.clone(), 1_490, 1_500);
    let noticed = "cache: the Sentinels of main failed the primary of shard a over from a1 to a2 during batch 1, a failover cacheflow did not start: the rollout goes on against the new roles";
    assert!(
        journals(&effects).iter().any(|j| j.contains(noticed)),
        "{effects:#?}"
    );
    let status = status::RolloutStatus::of(r.state.clusters[CLUSTER].rollout.as_ref().unwrap());
    assert_eq!(status.sentinel.as_deref(), noticed.strip_prefix("cache: "));
    // a1 runs as a2's replica now (the Sentinels turned it into one): its batch needs
    // no failover, and no node is assigned twice.
    let mut a1_replica = replicated("16", Role::Replica);
    if let Some(t) = a1_replica.health.as_mut().and_then(|h| h.topology.as_mut()) {
        t.primary = Some("127.0.0.1:7002".into());
    }
    r.report("a1", report("a1", a1_replica, None), 1_800)
        .unwrap();
    let a2_generation = r.assignment("a2").generation;
    // The bake ends and the gates pass: batch 2 waits for the Sentinels' answer.
    let effects = r.timer(CLUSTER, Event::BakeElapsed { batch: 0 }, 2_000);
    assert!(effects.contains(&Effect::AskSentinels {
        cluster: CLUSTER.into()
    }));
    assert_eq!(phase(&r), Phase::Judging { batch: 0 });
    assert_eq!(r.assignment("a1").revision, None);
    // Two Sentinels went down since their last periodic answer: the fresh answer has
    // no quorum, and batch 2 waits instead of starting on the answers of before.
    let down = sentinels_say([Some("127.0.0.1:7002"), None, None]);
    let effects = r.sentinel(CLUSTER, down, 2_000, 2_010);
    assert!(
        journals(&effects)
            .iter()
            .any(|j| j.contains("cache: batch 2 of 2 waits: ")),
        "{effects:#?}"
    );
    assert!(matches!(phase(&r), Phase::Waiting { batch: 1, .. }));
    assert_eq!(r.assignment("a1").revision, None);
    // They are back and agree: the batch is due again, and starts on the answer to
    // the ask made then.
    r.sentinel(CLUSTER, a2.clone(), 2_400, 2_500);
    assert!(matches!(phase(&r), Phase::Waiting { batch: 1, .. }));
    assert_eq!(r.assignment("a1").revision, None);
    let effects = r.sentinel(CLUSTER, a2, 2_500, 2_510);
    assert!(
        journals(&effects).iter().any(|j| j.contains(
            "cache: no failover of shard a: the Sentinels of main name a2 the primary: a1 runs as its replica"
        )),
        "{effects:#?}"
    );
    assert!(!effects.iter().any(|e| matches!(e, Effect::Failover { .. })));
    assert_eq!(phase(&r), Phase::Applying { batch: 1 });
    assert_eq!(r.assignment("a1").revision.as_deref(), Some(R1));
    assert_eq!(r.assignment("a2").generation, a2_generation);
}
