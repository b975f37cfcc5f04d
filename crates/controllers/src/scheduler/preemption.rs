//! Preemption, as upstream's DefaultPreemption PostFilter, pure: for a pod that fits no node,
//! find the node where evicting pods of lower priority lets it fit, evicting as few and as
//! unimportant pods as possible. The caller nominates the node and deletes the victims.
//!
//! Filters are run with the PreFilter state of the whole snapshot, so a victim that only
//! blocked the pod through pod (anti-)affinity or topology spread is not seen as removable
//! (upstream updates that state per victim); such nodes are passed over, never wrongly
//! chosen. PodDisruptionBudgets are not weighed.

use std::sync::Arc;

use super::cycle::Profile;
use super::framework::{Code, CycleState, NodeInfo, PodInfo, Snapshot, Status};

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
    pub fn preempt(&self, pod: &PodInfo, snapshot: &Snapshot<'_>) -> Option<Preemption> {
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
        let mut best: Option<((i32, i64, usize), Preemption)> = None;
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
            // priority, then the longer running), as upstream's reprieve does.
            lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| started(a).cmp(&started(b))));
            let mut victims = Vec::new();
            for candidate in lower {
                trial.add_pod(candidate.clone());
                if !check(&trial).is_success() {
                    trial.remove_pod(&candidate.uid);
                    victims.push(candidate);
                }
            }
            // Upstream's order: the lowest highest-priority victim, then the lowest sum of
            // priorities, then the fewest victims.
            let rank = (
                victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
                victims.iter().map(|v| i64::from(v.priority)).sum(),
                victims.len(),
            );
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, Preemption { node: node.name.clone(), victims }));
            }
        }
        best.map(|(_, p)| p)
    }
}

/// When a pod started, for ordering; a pod not started yet sorts last.
fn started(pod: &PodInfo) -> String {
    pod.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.to_string()).unwrap_or_else(|| "~".into())
}
