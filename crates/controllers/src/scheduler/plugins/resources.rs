//! NodeResourcesFit (requests against allocatable, with LeastAllocated scoring) and
//! NodeResourcesBalancedAllocation.

use crate::scheduler::framework::{CycleState, Filter, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, Score, Status};

pub struct NodeResourcesFit;

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }
    fn filter(&self) -> Option<&dyn Filter> {
        Some(self)
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

/// Every reason the pod does not fit the node's free resources, in upstream's words.
pub fn insufficient(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    let (want, free) = (&pod.requests, |have: i64, used: i64| have - used);
    let (alloc, used) = (&node.allocatable, &node.requested);
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > alloc.pods {
        reasons.push("Too many pods".to_owned());
    }
    let checks = [
        ("cpu", want.milli_cpu, free(alloc.milli_cpu, used.milli_cpu)),
        ("memory", want.memory, free(alloc.memory, used.memory)),
        ("ephemeral-storage", want.ephemeral_storage, free(alloc.ephemeral_storage, used.ephemeral_storage)),
    ];
    for (name, want, free) in checks {
        if want > 0 && want > free {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    for (name, want) in &want.scalar {
        let have = alloc.scalar.get(name).copied().unwrap_or(0) - used.scalar.get(name).copied().unwrap_or(0);
        if *want > 0 && *want > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

impl Filter for NodeResourcesFit {
    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let reasons = insufficient(pod, node);
        if reasons.is_empty() {
            Status::success()
        } else {
            Status { code: crate::scheduler::framework::Code::Unschedulable, reasons }
        }
    }
}

/// (requested, allocatable) for CPU and memory once the pod is placed, with upstream's
/// defaults for containers that request nothing.
fn after_placing(pod: &PodInfo, node: &NodeInfo) -> [(i64, i64); 2] {
    [
        (node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu, node.allocatable.milli_cpu),
        (node.non_zero_requested.memory + pod.non_zero.memory, node.allocatable.memory),
    ]
}

impl Score for NodeResourcesFit {
    /// LeastAllocated: the share of CPU and memory left free, averaged.
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let free = |(requested, allocatable): (i64, i64)| {
            if allocatable <= 0 || requested > allocatable {
                0
            } else {
                (allocatable - requested) * MAX_NODE_SCORE / allocatable
            }
        };
        let [cpu, memory] = after_placing(pod, node);
        (free(cpu) + free(memory)) / 2
    }
}

pub struct BalancedAllocation;

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }
    fn score(&self) -> Option<&dyn Score> {
        Some(self)
    }
}

impl Score for BalancedAllocation {
    /// Nodes whose CPU and memory fill evenly score higher: 100 × (1 − standard deviation of
    /// the two fractions).
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let fraction = |(requested, allocatable): (i64, i64)| {
            if allocatable <= 0 { 1.0 } else { (requested as f64 / allocatable as f64).min(1.0) }
        };
        let [cpu, memory] = after_placing(pod, node);
        let deviation = (fraction(cpu) - fraction(memory)).abs() / 2.0;
        ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
    }
}
