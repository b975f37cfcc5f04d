//! One scheduling cycle, pure: PreFilter, Filter across nodes in parallel, PreScore, Score,
//! then Reserve and Permit on the chosen node. No IO; the caller binds.

use std::collections::BTreeMap;
use std::sync::Arc;

use rayon::prelude::*;

use super::framework::{Code, CycleState, NodeInfo, Plugin, PodInfo, Snapshot, Status};
use super::plugins;

/// The enabled plugins, in order.
pub struct Profile {
    plugins: Vec<Arc<dyn Plugin>>,
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
        Some(Profile { plugins })
    }

    /// Picks a node for the pod, or says why none fits. Ties are broken by `tie_break`, which
    /// returns an index below its argument (the number of tied nodes).
    pub fn schedule(
        &self,
        pod: &PodInfo,
        snapshot: &Snapshot<'_>,
        tie_break: impl Fn(usize) -> usize,
    ) -> Result<String, FitError> {
        let all = snapshot.nodes.len();
        let mut state = CycleState::default();
        for p in &self.plugins {
            if let Some(pre) = p.pre_filter() {
                let status = pre.pre_filter(&mut state, pod, snapshot);
                if !status.is_success() {
                    return Err(fit_error(all, std::iter::repeat_n(&status, all)));
                }
            }
        }
        let filters: Vec<_> = self.plugins.iter().filter_map(|p| p.filter()).collect();
        let run_filters = |node: &&NodeInfo| -> Status {
            for f in &filters {
                let status = f.filter(&state, pod, node);
                if !status.is_success() {
                    return status;
                }
            }
            Status::success()
        };
        // Filtering is the hot loop: split across cores once there are enough nodes to pay.
        let statuses: Vec<Status> = if all >= 256 {
            snapshot.nodes.par_iter().map(run_filters).collect()
        } else {
            snapshot.nodes.iter().map(run_filters).collect()
        };
        let feasible: Vec<&NodeInfo> =
            snapshot.nodes.iter().zip(&statuses).filter(|(_, s)| s.is_success()).map(|(n, _)| *n).collect();
        if feasible.is_empty() {
            return Err(fit_error(all, statuses.iter()));
        }
        if feasible.len() == 1 {
            return self.reserve(&state, pod, feasible[0]);
        }
        for p in &self.plugins {
            if let Some(pre) = p.pre_score() {
                pre.pre_score(&mut state, pod, &feasible, snapshot);
            }
        }
        let mut totals = vec![0i64; feasible.len()];
        for score in self.plugins.iter().filter_map(|p| p.score()) {
            let mut scores: Vec<i64> = if feasible.len() >= 256 {
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

    fn reserve(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<String, FitError> {
        for p in &self.plugins {
            let vetoes = [p.reserve().map(|r| r.reserve(state, pod, &node.name)), p.permit().map(|r| r.permit(state, pod, &node.name))];
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
