//! The reconciler and a cluster's Sentinels (`spec.sentinel`): their latest answers,
//! what they add up to (`topology::sentinel_view`), and what a rollout does with it.
//!
//! - A cluster whose Sentinels are not settled (too few answer, they disagree, one is
//!   failing over, or they name a node the cluster does not declare) starts no batch:
//!   the reason is the rollout's hold, so the batch waits (journaled once, in the
//!   status), and nothing is assigned or failed over on a split view.
//! - Gates due while they are unsettled wait too, and are judged once the Sentinels
//!   agree again and every node of the batch has reported since, so they judge the
//!   roles the nodes run now.
//! - A primary the Sentinels moved by themselves during a rollout (not the failover
//!   step's own) is journaled and noted in the status; the rollout is not fought: the
//!   new primary, if it still has to restart, moves its role first like any primary,
//!   and the old one restarts as a replica: without a failover once the Sentinels have
//!   turned it into one, else it follows their primary first (through the failover
//!   step). Nothing is assigned twice: the batches stay as they were.
//! - A batch starts on answers asked after it was due: the step that would start it
//!   (the rollout's begin, gates passed, a window opened, a resume) is held, the
//!   Sentinels are asked at once ([`super::Effect::AskSentinels`]), and the step goes on
//!   when they answer, judged on that answer. The periodic answers (twice a second)
//!   never decide a batch: a Sentinel that went down since would not be counted yet.

use crate::pure::gates::Sample;
use crate::pure::live::SentinelAnswer;
use crate::pure::rollout::{self, Event, Phase};
use crate::pure::spec::model::Cluster;
use crate::pure::topology::{self, SentinelView};

use super::{Reconciler, Record};

/// What a cluster's Sentinels said last.
#[derive(Debug, Clone)]
pub(super) struct SentinelSeen {
    pub answers: Vec<SentinelAnswer>,
    /// When the ask that brought these answers began (ms, the reconciler's clock).
    pub asked_ms: u64,
    pub view: SentinelView,
    /// The primary they last agreed on (kept while they are unsettled).
    pub primary: Option<String>,
    /// Since when they agree (ms, the reconciler's clock).
    pub agreed_since_ms: Option<u64>,
}

/// How long after the Sentinels agree a node's report counts as one of the new roles: a
/// Sentinel drops the clients of a node it reconfigures (`CLIENT KILL`), and a reading
/// made before that may arrive after they agree.
const SETTLE_MS: u64 = 2_000;

/// Steps that would have started a batch while the Sentinels' answers were older than
/// them: `events`, fed again (in order) once they answer an ask begun at `asked_from_ms`
/// or later. A step no longer due then is ignored by the rollout, as any event out of
/// its phase is.
#[derive(Debug, Clone)]
pub(super) struct Deferred {
    pub events: Vec<Event>,
    pub asked_from_ms: u64,
}

/// Gates of a batch that were due while the Sentinels were unsettled.
#[derive(Debug, Clone)]
pub(super) struct GatesWaiting {
    pub batch: usize,
    pub nodes: Vec<String>,
}

impl Reconciler {
    /// The latest answers of `cluster`'s Sentinels, from an ask begun at `asked_ms`.
    /// Journals what changes a rollout in flight: the Sentinels unsettled, settled again,
    /// or a primary they moved; starts a batch that waited for answers this fresh.
    pub fn sentinel(
        &mut self,
        cluster: &str,
        answers: Vec<SentinelAnswer>,
        asked_ms: u64,
        now_ms: u64,
    ) -> Vec<super::Effect> {
        let Some(c) = self.cluster_of_name(cluster) else {
            return Vec::new();
        };
        let Some(s) = c.sentinel.as_ref() else {
            return Vec::new();
        };
        let view = topology::sentinel_view(&c, s, &answers);
        let master = s.master_name.clone();
        let before = self.sentinels.get(cluster).cloned();
        let was = before.as_ref().and_then(|b| b.primary.clone());
        let was_settled = before
            .as_ref()
            .is_some_and(|b| matches!(b.view, SentinelView::Agreed { .. }));
        let primary = view.primary().map(str::to_owned).or(was.clone());
        let agreed_since_ms = match (&view, was_settled) {
            (SentinelView::Agreed { .. }, true) if was == primary => {
                before.as_ref().and_then(|b| b.agreed_since_ms)
            }
            (SentinelView::Agreed { .. }, _) => Some(now_ms),
            _ => None,
        };
        self.sentinels.insert(
            cluster.to_owned(),
            SentinelSeen {
                answers,
                asked_ms,
                view: view.clone(),
                primary: primary.clone(),
                agreed_since_ms,
            },
        );
        self.take_deferred(cluster, asked_ms, now_ms);
        let active = self
            .state
            .clusters
            .get(cluster)
            .and_then(|cs| cs.rollout.as_ref())
            .filter(|r| !r.rollout.phase.is_final())
            .map(|r| r.rollout.clone());
        let Some(r) = active else {
            return self.finish();
        };
        match (&view, was_settled) {
            // The failover step's own failover unsettles them for a while: not news.
            (SentinelView::Unsettled { reason }, true)
                if !matches!(r.phase, Phase::FailingOver { .. }) =>
            {
                self.sentinel_line(
                    cluster,
                    &r,
                    format!("{reason}: the rollout waits for them to agree"),
                );
            }
            (SentinelView::Agreed { primary: now, .. }, _) => {
                let moved = was.as_ref().filter(|w| *w != now).cloned();
                if let Some(from) = moved {
                    let ours = matches!(r.phase, Phase::FailingOver { .. })
                        || r.failed_over.contains(&from);
                    if !ours {
                        self.primary_moved(cluster, &c, &master, &from, now);
                    }
                } else if before.is_some() && !was_settled {
                    self.sentinel_line(
                        cluster,
                        &r,
                        format!("the Sentinels of {master} agree again: {now} is the primary"),
                    );
                }
                if matches!(r.phase, Phase::Waiting { .. }) && self.hold(now_ms).is_none() {
                    self.feed(cluster, Event::WindowOpened, now_ms);
                }
                self.judge_waiting(cluster, now_ms);
            }
            _ => {}
        }
        self.finish()
    }

    /// Why `cluster`'s batches may not start now, from its Sentinels (`None`: it names
    /// none, or they agree).
    pub(super) fn sentinel_hold(&self, cluster: &str) -> Option<String> {
        let s = self
            .desired
            .as_ref()?
            .clusters
            .get(cluster)?
            .sentinel
            .as_ref()?;
        match self.sentinels.get(cluster).map(|seen| &seen.view) {
            Some(SentinelView::Agreed { .. }) => None,
            Some(SentinelView::Unsettled { reason }) => Some(reason.clone()),
            None => Some(format!(
                "the Sentinels of {} have not been asked yet",
                s.master_name
            )),
        }
    }

    /// True when a batch of `cluster` may start on what its Sentinels said last: it
    /// names none, or they answered an ask begun after the step that starts it was due.
    pub(super) fn sentinels_fresh(&self, cluster: &str) -> bool {
        let names = self
            .desired
            .as_ref()
            .and_then(|d| d.clusters.get(cluster))
            .is_some_and(|c| c.sentinel.is_some());
        if !names {
            return true;
        }
        match (self.deferred.get(cluster), self.sentinels.get(cluster)) {
            (Some(d), Some(seen)) => seen.asked_ms >= d.asked_from_ms,
            _ => false,
        }
    }

    /// Hold `event` (which would start a batch) and have the Sentinels asked now. The
    /// same step held again (a tick finding a window still open) keeps its ask; another
    /// step is due later, so the answers must be later too.
    pub(super) fn defer_for_sentinels(&mut self, cluster: &str, event: Event, now_ms: u64) {
        let d = self
            .deferred
            .entry(cluster.to_owned())
            .or_insert_with(|| Deferred {
                events: Vec::new(),
                asked_from_ms: now_ms,
            });
        if d.events.contains(&event) {
            return;
        }
        if !d.events.is_empty() {
            d.asked_from_ms = now_ms;
        }
        d.events.push(event);
        self.effects.push(super::Effect::AskSentinels {
            cluster: cluster.to_owned(),
        });
    }

    /// A batch of `cluster` started on the answers it had: the next one needs another
    /// ask (steps still held, if any, are held again from now).
    pub(super) fn sentinels_used(&mut self, cluster: &str, now_ms: u64) {
        let Some(d) = self.deferred.remove(cluster) else {
            return;
        };
        for event in d.events {
            self.defer_for_sentinels(cluster, event, now_ms);
        }
    }

    /// Answers from an ask begun at `asked_ms` came: the steps held for them go on, on
    /// these answers.
    fn take_deferred(&mut self, cluster: &str, asked_ms: u64, now_ms: u64) {
        let Some(d) = self
            .deferred
            .get_mut(cluster)
            .filter(|d| asked_ms >= d.asked_from_ms)
        else {
            return;
        };
        let events = std::mem::take(&mut d.events);
        for event in events {
            self.feed(cluster, event, now_ms);
        }
        if self
            .deferred
            .get(cluster)
            .is_some_and(|d| d.events.is_empty())
        {
            self.deferred.remove(cluster);
        }
    }

    /// The Sentinels' latest answers, of `only` one cluster or of all (what plans and
    /// drift reports read with the nodes' readings).
    pub(super) fn sentinel_answers(
        &self,
        only: Option<&str>,
    ) -> std::collections::BTreeMap<String, Vec<SentinelAnswer>> {
        self.sentinels
            .iter()
            .filter(|(name, _)| only.is_none_or(|o| o == name.as_str()))
            .map(|(name, seen)| (name.clone(), seen.answers.clone()))
            .collect()
    }

    /// The primary `cluster`'s Sentinels agree on now, if it names them.
    pub(super) fn sentinel_primary(&self, cluster: &str) -> Option<&str> {
        self.sentinels.get(cluster)?.view.primary()
    }

    /// The failover choice under Sentinels: none when they name another primary
    /// already; no replica when they are unsettled (no failover on a split view).
    pub(super) fn sentinel_choice(
        &self,
        cluster: &str,
        from: &str,
    ) -> Option<rollout::FailoverChoice> {
        let c = self.desired.as_ref()?.clusters.get(cluster)?;
        let s = c.sentinel.as_ref()?;
        match self.sentinels.get(cluster).map(|seen| &seen.view) {
            Some(SentinelView::Agreed { primary, address }) if primary != from => {
                // They may not have turned `from` into a replica yet (they do it seconds
                // later): then it follows their primary first, through the failover
                // step, so it does not restart as a second primary.
                let follows = self
                    .live
                    .get(from)
                    .and_then(|s| s.node.health.as_ref())
                    .filter(|h| h.role == Some(crate::pure::spec::model::Role::Replica))
                    .and_then(|h| h.topology.as_ref()?.primary.as_deref())
                    .is_some_and(|p| crate::pure::live::same_address(p, address));
                Some(match follows {
                    true => rollout::FailoverChoice::NotNeeded {
                        why: format!(
                            "the Sentinels of {} name {primary} the primary: {from} runs as its replica",
                            s.master_name
                        ),
                    },
                    false => rollout::FailoverChoice::To {
                        node: primary.clone(),
                    },
                })
            }
            Some(SentinelView::Agreed { .. }) => None,
            Some(SentinelView::Unsettled { reason }) => {
                Some(rollout::FailoverChoice::NoHealthyReplica {
                    why: reason.clone(),
                })
            }
            None => Some(rollout::FailoverChoice::NoHealthyReplica {
                why: format!("the Sentinels of {} have not been asked yet", s.master_name),
            }),
        }
    }

    /// Gates of `batch` are due while the Sentinels are unsettled (`reason`): say why
    /// they wait; [`Reconciler::judge_waiting`] judges them later.
    pub(super) fn gates_wait(
        &mut self,
        name: &str,
        batch: usize,
        nodes: Vec<String>,
        reason: String,
    ) {
        let revision = self
            .state
            .clusters
            .get(name)
            .and_then(|cs| cs.rollout.as_ref())
            .map(|r| r.rollout.spec.revision.clone())
            .unwrap_or_default();
        self.lines.push(
            Record::new(
                "gates_waiting",
                format!("{name}: gates of batch {} wait: {reason}", batch + 1),
            )
            .cluster(name)
            .revision(&revision)
            .batch(Some(batch + 1)),
        );
        self.gates_waiting
            .insert(name.to_owned(), GatesWaiting { batch, nodes });
    }

    /// Judge gates that waited for the Sentinels, once they agree and every node of the
    /// batch reported [`SETTLE_MS`] after.
    pub(super) fn judge_waiting(&mut self, name: &str, now_ms: u64) {
        let Some(w) = self.gates_waiting.get(name).cloned() else {
            return;
        };
        let judging = self
            .state
            .clusters
            .get(name)
            .and_then(|cs| cs.rollout.as_ref())
            .is_some_and(|r| r.rollout.phase == Phase::Judging { batch: w.batch });
        if !judging {
            self.gates_waiting.remove(name);
            return;
        }
        let Some(since) = self.sentinels.get(name).and_then(|s| s.agreed_since_ms) else {
            return;
        };
        let settled = since.saturating_add(SETTLE_MS);
        let fresh = |id: &String| {
            self.live
                .get(id)
                .is_some_and(|s: &Sample| s.at_ms > settled)
        };
        if !w.nodes.iter().all(fresh) {
            return;
        }
        self.gates_waiting.remove(name);
        let event = self.judge(name, w.batch, &w.nodes);
        self.feed(name, event, now_ms);
    }

    /// The Sentinels moved `cluster`'s primary from `from` to `to` by themselves during
    /// a rollout: journal and note it; a new primary that still restarts moves its role
    /// first (its shard's failover plan), like the primary the rollout began with.
    fn primary_moved(&mut self, cluster: &str, c: &Cluster, master: &str, from: &str, to: &str) {
        let topo = topology::resolve_with(c, |id| self.live.get(id).map(|s| &s.node), Some(to));
        let rec = self.rec_mut(cluster);
        let r = &mut rec.rollout;
        let batch = match r.phase {
            Phase::Applying { batch }
            | Phase::Baking { batch }
            | Phase::Judging { batch }
            | Phase::Waiting { batch, .. }
            | Phase::Paused { batch, .. }
            | Phase::FailingOver { batch, .. } => Some(batch + 1),
            _ => None,
        };
        let shard = topo.shard(to).to_owned();
        let restarts_later = r.spec.restarting.contains(to) && !r.touched.contains(to);
        if restarts_later && !r.spec.failovers.contains_key(to) {
            let replicas: Vec<String> = c
                .nodes
                .iter()
                .filter(|d| d.id != to && topo.shard(&d.id) == shard)
                .map(|d| d.id.clone())
                .collect();
            if !replicas.is_empty() {
                r.spec.failovers.insert(
                    to.to_owned(),
                    rollout::FailoverPlan {
                        shard: shard.clone(),
                        replicas,
                    },
                );
            }
        }
        let during = batch
            .map(|b| format!(" during batch {b}"))
            .unwrap_or_default();
        let then = if restarts_later {
            format!(
                "{to} moves its role to a replica before it restarts; {from} restarts as a replica"
            )
        } else {
            "the rollout goes on against the new roles".to_owned()
        };
        let note = format!(
            "the Sentinels of {master} failed the primary of shard {shard} over from {from} to {to}{during}, a failover cacheflow did not start: {then}"
        );
        rec.sentinel = Some(note.clone());
        let r = rec.rollout.clone();
        self.sentinel_line(cluster, &r, note);
    }

    fn sentinel_line(&mut self, cluster: &str, r: &rollout::Rollout, text: String) {
        self.lines.push(
            Record::new("sentinel", format!("{cluster}: {text}"))
                .cluster(cluster)
                .revision(&r.spec.revision)
                .warn(),
        );
        self.touch(cluster);
    }

    fn cluster_of_name(&self, name: &str) -> Option<Cluster> {
        self.desired.as_ref()?.clusters.get(name).cloned()
    }
}
