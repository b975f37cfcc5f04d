//! One scheduling cycle, pure: PreFilter, Filter across nodes in parallel, PreScore, Score,
//! then Reserve and Permit on the chosen node. No IO; the caller binds. Plugins whose
//! PreFilter or PreScore says Skip are left out of the pod's Filter or Score.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use super::framework::{Code, CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};
use super::plugins;

/// The enabled plugins, in order.
pub struct Profile {
    plugins: Vec<Arc<dyn Plugin>>,
    /// Where the next cycle starts looking, so that sampled searches cover every node in turn.
    next_start: AtomicUsize,
}

/// Nodes per round from which filtering and scoring are split across cores. Waking the
/// pool costs more than it saves on small rounds: at 5,000 nodes (rounds of 500) on 2 cores,
/// sequential rounds bound 40-100% more pods per second than parallel ones and switched
/// contexts 7 times less, since the API server and the store share the cores. Large clusters'
/// rounds (5% of 50,000 nodes) still go parallel.
const PARALLEL_FROM: usize = 2048;

/// Upstream's adaptive `percentageOfNodesToScore`: every node up to 100, then a share falling
/// from 50% by one point per 125 nodes to at least 5%, and never fewer than 100 nodes.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * percent / 100).max(100)
}

/// Why a pod fits no node: each node's status, summed up as upstream prints it.
#[derive(Debug)]
pub struct FitError {
    pub nodes: usize,
    /// Reason → number of nodes it ruled out.
    pub reasons: BTreeMap<String, usize>,
    /// Whether preempting lower-priority pods could help on some node.
    pub resolvable: bool,
}

impl FitError {
    /// Upstream's message, e.g. `0/3 nodes are available: 3 Insufficient cpu.`
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self.reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        parts.sort();
        let mut message = format!("0/{} nodes are available", self.nodes);
        if !parts.is_empty() {
            message.push_str(": ");
            message.push_str(&parts.join(", "));
        }
        message.push('.');
        message
    }
}

impl Profile {
    /// The default profile.
    pub fn default_profile() -> Profile {
        Profile::with(&plugins::DEFAULT_PROFILE).expect("the default plugins are registered")
    }

    /// A profile of the named plugins; None names one that is not registered.
    pub fn with(names: &[&str]) -> Option<Profile> {
        let registry = plugins::registry();
        let plugins = names
            .iter()
            .map(|name| registry.iter().find(|(n, _)| n == name).map(|(_, make)| make()))
            .collect::<Option<Vec<_>>>()?;
        Some(Profile { plugins, next_start: AtomicUsize::new(0) })
    }

    /// Picks a node for the pod, or says why none fits. Ties are broken by `tie_break`, which
    /// returns an index below its argument (the number of tied nodes).
    ///
    /// As upstream, a large cluster is not searched whole: filtering stops once
    /// `feasible_nodes_to_find` nodes fit, starting each cycle where the last one stopped, so
    /// every node gets its turn. A pod that fits nowhere is checked against every node.
    pub fn schedule(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
        tie_break: impl Fn(usize) -> usize,
    ) -> Result<String, FitError> {
        let all = snapshot.nodes.len();
        let mut state = CycleState::default();
        let mut skipped_filters = Vec::new();
        for (i, p) in self.plugins.iter().enumerate() {
            if let Some(pre) = p.pre_filter() {
                let status = pre.pre_filter(&mut state, pod, snapshot);
                match status.code {
                    Code::Success => {}
                    Code::Skip => skipped_filters.push(i),
                    _ => return Err(fit_error(all, std::iter::repeat_n(&status, all))),
                }
            }
        }
        let filters: Vec<_> = self
            .plugins
            .iter()
            .enumerate()
            .filter(|(i, _)| !skipped_filters.contains(i))
            .filter_map(|(_, p)| p.filter())
            .collect();
        let run_filters = |node: &&NodeInfo| -> Status {
            for f in &filters {
                let status = f.filter(&state, pod, node);
                if !status.is_success() {
                    return status;
                }
            }
            Status::success()
        };
        let wanted = feasible_nodes_to_find(all);
        let start = if all == 0 { 0 } else { self.next_start.load(Ordering::Relaxed) % all };
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut statuses: Vec<Status> = Vec::new();
        let mut examined = 0;
        // Rounds of `wanted` nodes, each filtered in parallel, until enough fit.
        while examined < all && feasible.len() < wanted {
            let round: Vec<&NodeInfo> =
                (examined..(examined + wanted.max(256)).min(all)).map(|i| snapshot.nodes[(start + i) % all]).collect();
            examined += round.len();
            let results: Vec<Status> = if round.len() >= PARALLEL_FROM {
                round.par_iter().map(run_filters).collect()
            } else {
                round.iter().map(run_filters).collect()
            };
            for (node, status) in round.into_iter().zip(results) {
                if status.is_success() {
                    if feasible.len() < wanted {
                        feasible.push(node);
                    }
                } else {
                    statuses.push(status);
                }
            }
        }
        self.next_start.store((start + examined) % all.max(1), Ordering::Relaxed);
        if feasible.is_empty() {
            return Err(fit_error(all, statuses.iter()));
        }
        if feasible.len() == 1 {
            return self.reserve(&state, pod, feasible[0]);
        }
        let mut skipped_scores = Vec::new();
        for (i, p) in self.plugins.iter().enumerate() {
            if let Some(pre) = p.pre_score()
                && pre.pre_score(&mut state, pod, &feasible, snapshot).code == Code::Skip
            {
                skipped_scores.push(i);
            }
        }
        let mut totals = vec![0i64; feasible.len()];
        let scorers =
            self.plugins.iter().enumerate().filter(|(i, _)| !skipped_scores.contains(i)).filter_map(|(_, p)| p.score());
        for score in scorers {
            let mut scores: Vec<i64> = if feasible.len() >= PARALLEL_FROM {
                feasible.par_iter().map(|n| score.score(&state, pod, n)).collect()
            } else {
                feasible.iter().map(|n| score.score(&state, pod, n)).collect()
            };
            score.normalize(&mut scores);
            for (total, s) in totals.iter_mut().zip(scores) {
                *total += s * score.weight();
            }
        }
        let best = totals.iter().copied().max().unwrap_or(0);
        let tied: Vec<usize> = (0..totals.len()).filter(|i| totals[*i] == best).collect();
        let chosen = feasible[tied[tie_break(tied.len()).min(tied.len() - 1)]];
        self.reserve(&state, pod, chosen)
    }

    /// The enabled plugins, in order.
    pub(super) fn plugins(&self) -> &[Arc<dyn Plugin>] {
        &self.plugins
    }

    fn reserve(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<String, FitError> {
        for p in &self.plugins {
            let vetoes = [
                p.reserve().map(|r| r.reserve(state, pod, &node.name)),
                p.permit().map(|r| r.permit(state, pod, &node.name)),
            ];
            if let Some(status) = vetoes.into_iter().flatten().find(|s| !s.is_success()) {
                return Err(fit_error(1, std::iter::once(&status)));
            }
        }
        Ok(node.name.clone())
    }
}

fn fit_error<'a>(nodes: usize, statuses: impl Iterator<Item = &'a Status>) -> FitError {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut resolvable = false;
    for status in statuses {
        resolvable |= status.code == Code::Unschedulable;
        for reason in &status.reasons {
            *reasons.entry(reason.clone()).or_default() += 1;
        }
    }
    FitError { nodes, reasons, resolvable }
}
