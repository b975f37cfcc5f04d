//! Preemption, as upstream's DefaultPreemption PostFilter, pure: for a pod that fits no node,
//! find the node where evicting pods of lower priority lets it fit, evicting as few and as
//! unimportant pods as possible. The caller nominates the node and deletes the victims.
//!
//! PodDisruptionBudgets are weighed as upstream weighs them: a node whose eviction would take
//! a budget below zero is chosen only if every node would, and on a node, pods whose eviction
//! would break a budget are given back first.
//!
//! Filters are run with the PreFilter state of the whole snapshot, so a victim that only
//! blocked the pod through pod (anti-)affinity or topology spread is not seen as removable
//! (upstream updates that state per victim); such nodes are passed over, never wrongly
//! chosen.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::cycle::Profile;
use super::framework::{Code, CycleState, NodeInfo, PodInfo, Snapshot, Status};

/// What preemption reads of a PodDisruptionBudget.
#[derive(Debug, Clone)]
pub struct Budget {
    namespace: String,
    selector: Option<LabelSelector>,
    /// `status.disruptionsAllowed`: 0 until the disruption controller has counted.
    allowed: i32,
    /// `status.disruptedPods`: evictions already counted against the budget.
    disrupted: HashSet<String>,
}

impl Budget {
    pub fn new(pdb: &PodDisruptionBudget) -> Budget {
        let status = pdb.status.as_ref();
        Budget {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector: pdb.spec.as_ref().and_then(|s| s.selector.clone()),
            allowed: status.map_or(0, |s| s.disruptions_allowed),
            disrupted: status
                .and_then(|s| s.disrupted_pods.as_ref())
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default(),
        }
    }

    /// Whether the budget covers the pod. An absent or empty selector covers nothing, as
    /// upstream's preemption reads it; a pod without labels is covered by none.
    fn covers(&self, pod: &PodInfo) -> bool {
        let Some(selector) = &self.selector else { return false };
        let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector.match_expressions.as_ref().is_none_or(|m| m.is_empty());
        !empty
            && !pod.labels.is_empty()
            && self.namespace == pod.namespace
            && crate::labels::matches(selector, &pod.labels)
    }
}

/// Splits would-be victims into those whose eviction would take a budget below zero and the
/// rest, keeping their order (upstream's `filterPodsWithPDBViolation`). Each budget is
/// charged once per covered pod, unless the pod's eviction was already counted.
fn split_by_budgets(pods: Vec<Arc<PodInfo>>, budgets: &[&Budget]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i32> = budgets.iter().map(|b| b.allowed).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        for (budget, left) in budgets.iter().zip(allowed.iter_mut()) {
            if budget.covers(&pod) && !budget.disrupted.contains(&pod.name) {
                *left -= 1;
                violates |= *left < 0;
            }
        }
        if violates { violating.push(pod) } else { fine.push(pod) }
    }
    (violating, fine)
}

/// A node to nominate and the pods to evict from it.
#[derive(Debug)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
}

/// Whether the pod may preempt at all: not with `preemptionPolicy: Never`, and not while
/// pods it already preempted on its nominated node are still terminating (upstream's
/// `PodEligibleToPreemptOthers`), so one pod does not evict pod after pod.
pub fn eligible(pod: &PodInfo, snapshot: &Snapshot<'_>) -> bool {
    if pod.spec().preemption_policy.as_deref() == Some("Never") {
        return false;
    }
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
    let Some(nominated) = nominated else { return true };
    let Some(node) = snapshot.nodes.iter().find(|n| n.name == nominated) else { return true };
    !node.pods.iter().any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some())
}

impl Profile {
    /// The best node to preempt on, or None if evicting lower-priority pods helps nowhere.
    /// `budgets` are the cluster's PodDisruptionBudgets.
    pub fn preempt(&self, pod: &PodInfo, snapshot: &Snapshot<'_>, budgets: &[&Budget]) -> Option<Preemption> {
        if !eligible(pod, snapshot) {
            return None;
        }
        let mut state = CycleState::default();
        let mut skipped = Vec::new();
        for (i, p) in self.plugins().iter().enumerate() {
            if let Some(pre) = p.pre_filter() {
                match pre.pre_filter(&mut state, pod, snapshot).code {
                    Code::Success => {}
                    Code::Skip => skipped.push(i),
                    _ => return None,
                }
            }
        }
        let filters: Vec<_> = self
            .plugins()
            .iter()
            .enumerate()
            .filter(|(i, _)| !skipped.contains(i))
            .filter_map(|(_, p)| p.filter())
            .collect();
        let check = |node: &NodeInfo| -> Status {
            filters
                .iter()
                .map(|f| f.filter(&state, pod, node))
                .find(|s| !s.is_success())
                .unwrap_or_else(Status::success)
        };
        let mut best: Option<(Rank, Preemption)> = None;
        for node in &snapshot.nodes {
            // Fits already (the cluster changed), or can never fit: nothing to preempt here.
            if check(node).code != Code::Unschedulable {
                continue;
            }
            let mut lower: Vec<Arc<PodInfo>> =
                node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
            if lower.is_empty() {
                continue;
            }
            let mut trial = (*node).clone();
            for victim in &lower {
                trial.remove_pod(&victim.uid);
            }
            if !check(&trial).is_success() {
                continue;
            }
            // Give back as many as still lets the pod fit, the most important first (higher
            // priority, then the longer running), as upstream's reprieve does: first those
            // whose eviction would break a budget, then the rest.
            lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| started(a).cmp(&started(b))));
            let (violating, fine) = split_by_budgets(lower, budgets);
            let mut victims = Vec::new();
            let mut violations = 0;
            for (candidate, breaks_budget) in
                violating.into_iter().map(|p| (p, true)).chain(fine.into_iter().map(|p| (p, false)))
            {
                trial.add_pod(candidate.clone());
                if !check(&trial).is_success() {
                    trial.remove_pod(&candidate.uid);
                    violations += usize::from(breaks_budget);
                    victims.push(candidate);
                }
            }
            let rank = Rank::of(violations, &victims);
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, Preemption { node: node.name.clone(), victims }));
            }
        }
        best.map(|(_, p)| p)
    }
}

/// How good a node is to preempt on, in upstream's order (`pickOneNodeForPreemption`); the
/// least wins, and the first node among equals.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    /// Budgets broken.
    violations: usize,
    /// The highest victim priority.
    top_priority: i32,
    /// The sum of victim priorities, each raised by 2^31 so that every victim adds to it: a
    /// node with more victims never wins on a smaller sum of negative priorities.
    sum: i64,
    victims: usize,
    /// The earliest start among the highest-priority victims, the latest preferred: pods
    /// that have run longer are kept.
    earliest_start: std::cmp::Reverse<(bool, Option<k8s_openapi::jiff::Timestamp>)>,
}

impl Rank {
    fn of(violations: usize, victims: &[Arc<PodInfo>]) -> Rank {
        let top_priority = victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN);
        let earliest_start =
            victims.iter().filter(|v| v.priority == top_priority).map(|v| started(v)).min().unwrap_or((true, None));
        Rank {
            violations,
            top_priority,
            sum: victims.iter().map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1).sum(),
            victims: victims.len(),
            earliest_start: std::cmp::Reverse(earliest_start),
        }
    }
}

/// When a pod started, for ordering: a pod not started yet sorts last, as upstream takes the
/// present time for it.
fn started(pod: &PodInfo) -> (bool, Option<k8s_openapi::jiff::Timestamp>) {
    let at = pod.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    (at.is_none(), at)
}
