//! PodTopologySpread: `DoNotSchedule` constraints filter, `ScheduleAnyway` ones score.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::node::node_fits_pod;
use crate::labels;
use crate::scheduler::framework::{
    CycleState, Filter, NodeInfo, Plugin, PodInfo, PreFilter, PreScore, Score, Snapshot, Status, default_normalize,
};

pub struct PodTopologySpread;

const KEY: &str = "PodTopologySpread";
const SCORE_KEY: &str = "PodTopologySpread/score";

/// One constraint's matching pods per domain (the node label's value).
struct Spread {
    key: String,
    max_skew: i64,
    counts: HashMap<String, i64>,
    min: i64,
    self_match: i64,
}

fn constraints<'a>(pod: &'a PodInfo, when: &'a str) -> impl Iterator<Item = &'a TopologySpreadConstraint> {
    pod.spec().topology_spread_constraints.iter().flatten().filter(move |c| c.when_unsatisfiable == when)
}

/// Counts pods matching the constraint in each domain of the eligible nodes.
fn count(c: &TopologySpreadConstraint, pod: &PodInfo, nodes: &[&NodeInfo]) -> Spread {
    let honour_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
    let matches = |p: &PodInfo| {
        p.namespace == pod.namespace
            && p.pod.metadata.deletion_timestamp.is_none()
            && c.label_selector.as_ref().is_some_and(|s| labels::matches(s, &p.labels))
    };
    let mut counts: HashMap<String, i64> = HashMap::new();
    for node in nodes {
        let Some(domain) = node.labels.get(&c.topology_key) else { continue };
        if honour_affinity && !node_fits_pod(pod, node) {
            continue;
        }
        *counts.entry(domain.clone()).or_default() += node.pods.iter().filter(|p| matches(p)).count() as i64;
    }
    let too_few_domains = c.min_domains.is_some_and(|m| (counts.len() as i64) < i64::from(m));
    let min = if too_few_domains { 0 } else { counts.values().copied().min().unwrap_or(0) };
    Spread {
        key: c.topology_key.clone(),
        max_skew: i64::from(c.max_skew),
        min,
        self_match: i64::from(matches(pod)),
        counts,
    }
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        KEY
    }
    fn pre_filter(&self) -> Option<&dyn PreFilter> {
        Some(self)
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

impl PreFilter for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot<'_>) -> Status {
        let spreads: Vec<Spread> = constraints(pod, "DoNotSchedule").map(|c| count(c, pod, &snapshot.nodes)).collect();
        if spreads.is_empty() {
            return Status::skip();
        }
        state.write(KEY, spreads);
        Status::success()
    }
}

impl Filter for PodTopologySpread {
    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Status {
        for spread in state.read::<Vec<Spread>>(KEY).into_iter().flatten() {
            let Some(domain) = node.labels.get(&spread.key) else {
                return Status::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
            let skew = spread.counts.get(domain).copied().unwrap_or(0) + spread.self_match - spread.min;
            if skew > spread.max_skew {
                return Status::unschedulable("node(s) didn't match pod topology spread constraints");
            }
        }
        Status::success()
    }
}

impl PreScore for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, feasible: &[&NodeInfo], _: &Snapshot<'_>) -> Status {
        let spreads: Vec<Spread> = constraints(pod, "ScheduleAnyway").map(|c| count(c, pod, feasible)).collect();
        if spreads.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, spreads);
        Status::success()
    }
}

impl Score for PodTopologySpread {
    /// Matching pods already in the node's domains: fewer is better.
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let spreads = state.read::<Vec<Spread>>(SCORE_KEY).map(Vec::as_slice).unwrap_or_default();
        spreads.iter().map(|s| node.labels.get(&s.key).and_then(|d| s.counts.get(d)).copied().unwrap_or(0)).sum()
    }
    fn normalize(&self, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
    fn weight(&self) -> i64 {
        2
    }
}
