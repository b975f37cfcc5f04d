//! Plugins that read one node's own fields: NodeName, NodeUnschedulable, NodeAffinity (with
//! nodeSelector), TaintToleration and NodePorts.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::labels;
use crate::scheduler::framework::{
    CycleState, Filter, NodeInfo, Plugin, PodInfo, PreScore, Score, Snapshot, Status, default_normalize,
};

pub struct NodeName;

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodeName {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.spec().node_name.as_deref() {
            Some(wanted) if !wanted.is_empty() && wanted != node.name => {
                Status::unresolvable("node(s) didn't match the requested node name")
            }
            _ => Status::success(),
        }
    }
}

pub struct NodeUnschedulable;

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodeUnschedulable {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.unschedulable {
            return Status::success();
        }
        // A pod that tolerates the taint cordoning stands for may still go there.
        let cordon =
            Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
        if pod.spec().tolerations.iter().flatten().any(|t| tolerates(t, &cordon)) {
            return Status::success();
        }
        Status::unresolvable("node(s) were unschedulable")
    }
}

pub struct NodeAffinity;

impl Plugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
    fn pre_score(&self) -> Option<&dyn PreScore> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl PreScore for NodeAffinity {
    /// Nothing to rank without preferred terms.
    fn pre_score(&self, _: &mut CycleState, pod: &PodInfo, _: &[&NodeInfo], _: &Snapshot<'_>) -> Status {
        let preferred = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref());
        if preferred.is_none_or(|p| p.is_empty()) { Status::skip() } else { Status::success() }
    }
}

/// Whether the node satisfies the pod's nodeSelector and required node affinity.
pub fn node_fits_pod(pod: &PodInfo, node: &NodeInfo) -> bool {
    let spec = pod.spec();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| node.labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    selector_ok && required.is_none_or(|r| labels::node_matches_any(&r.node_selector_terms, &node.labels, &node.name))
}

impl Filter for NodeAffinity {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if node_fits_pod(pod, node) {
            Status::success()
        } else {
            Status::unresolvable("node(s) didn't match Pod's node affinity/selector")
        }
    }
}

impl Score for NodeAffinity {
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let preferred = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref());
        preferred
            .into_iter()
            .flatten()
            .filter(|term| labels::node_matches(&term.preference, &node.labels, &node.name))
            .map(|term| i64::from(term.weight))
            .sum()
    }
    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
    fn weight(&self) -> i64 {
        2
    }
}

/// Whether a toleration matches a taint, as upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "Equal" => toleration.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
        _ => false,
    }
}

pub struct TaintToleration;

impl Plugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl Filter for TaintToleration {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tolerations = pod.spec().tolerations.as_deref().unwrap_or_default();
        let untolerated = node.taints.iter().find(|taint| {
            matches!(taint.effect.as_str(), "NoSchedule" | "NoExecute")
                && !tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            Some(taint) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or_default()
            )),
            None => Status::success(),
        }
    }
}

impl Score for TaintToleration {
    /// The number of PreferNoSchedule taints the pod does not tolerate: fewer is better.
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tolerations = pod.spec().tolerations.as_deref().unwrap_or_default();
        let prefer: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule"))
            .collect();
        node.taints
            .iter()
            .filter(|taint| taint.effect == "PreferNoSchedule" && !prefer.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }
    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
    fn weight(&self) -> i64 {
        3
    }
}

pub struct NodePorts;

impl Plugin for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
}

impl Filter for NodePorts {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let clash = pod.host_ports.iter().any(|want| node.used_ports.iter().any(|used| used.conflicts(want)));
        if clash {
            Status::unschedulable("node(s) didn't have free ports for the requested pod ports")
        } else {
            Status::success()
        }
    }
}
