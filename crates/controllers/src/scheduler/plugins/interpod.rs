//! InterPodAffinity: required and preferred pod affinity and anti-affinity, in both
//! directions (the incoming pod's terms, and existing pods' anti-affinity against it).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PodAffinityTerm, WeightedPodAffinityTerm};

use crate::labels;
use crate::scheduler::framework::{
    CycleState, Filter, MAX_NODE_SCORE, NodeInfo, NodeLookup, Plugin, PodInfo, PreFilter, PreScore, Score, Snapshot,
    Status,
};
use crate::scheduler::index::AffinityIndex;

pub struct InterPodAffinity;

const KEY: &str = "InterPodAffinity";

/// Matching pods counted per topology pair: topology key → the node's value for it → count.
/// Keyed by topology key first, so a node is checked once per key, without allocating.
type Counts = HashMap<String, HashMap<String, i64>>;

#[derive(Default)]
struct FilterState {
    /// Pairs where an existing pod's required anti-affinity matches the incoming pod.
    existing_anti: Counts,
    /// Pairs holding pods that match all of the incoming pod's required affinity terms.
    affinity: Counts,
    /// Pairs holding pods that match one of the incoming pod's required anti-affinity terms.
    anti: Counts,
}

#[derive(Default)]
struct ScoreState {
    by_pair: Counts,
}

fn required_affinity(pod: &PodInfo) -> &[PodAffinityTerm] {
    let a = pod.spec().affinity.as_ref().and_then(|a| a.pod_affinity.as_ref());
    a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default()
}

fn required_anti(pod: &PodInfo) -> &[PodAffinityTerm] {
    let a = pod.spec().affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref());
    a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default()
}

fn preferred(pod: &PodInfo) -> (&[WeightedPodAffinityTerm], &[WeightedPodAffinityTerm]) {
    let affinity = pod.spec().affinity.as_ref();
    let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
    let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    (
        pa.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
        anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default(),
    )
}

/// Whether `term`, written in a pod of `owner_namespace`, selects `pod`. Namespaces come from
/// the term's list, or all of them for an empty namespaceSelector, or the owner's own. A
/// namespaceSelector with requirements needs namespace labels the scheduler does not keep, so
/// it adds no namespaces (the explicit list still counts).
pub fn term_matches(term: &PodAffinityTerm, owner_namespace: &str, pod: &PodInfo) -> bool {
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let in_namespace = match &term.namespace_selector {
        Some(s)
            if s.match_labels.as_ref().is_none_or(|m| m.is_empty())
                && s.match_expressions.as_ref().is_none_or(|m| m.is_empty()) =>
        {
            true
        }
        Some(_) => listed.contains(&pod.namespace),
        None if listed.is_empty() => pod.namespace == owner_namespace,
        None => listed.contains(&pod.namespace),
    };
    in_namespace && term.label_selector.as_ref().is_some_and(|s| labels::matches(s, &pod.labels))
}

/// Adds `n` to the pair of `node`'s value for `key`; nodes without the key count nowhere.
fn count(counts: &mut Counts, key: &str, node: &NodeInfo, n: i64) {
    if let Some(value) = node.labels.get(key) {
        *counts.entry(key.to_owned()).or_default().entry(value.clone()).or_default() += n;
    }
}

fn has_pair(counts: &Counts, key: &str, node: &NodeInfo) -> bool {
    node.labels.get(key).is_some_and(|v| counts.get(key).and_then(|values| values.get(v)).is_some_and(|c| *c > 0))
}

impl Plugin for InterPodAffinity {
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

impl PreFilter for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot<'_>) -> Status {
        let (affinity, anti) = (required_affinity(pod), required_anti(pod));
        if affinity.is_empty() && anti.is_empty() && snapshot.required_anti_affinity_pods == 0 {
            return Status::skip();
        }
        let mut s = FilterState::default();
        match snapshot.index {
            Some((index, lookup)) => {
                if affinity.is_empty() && anti.is_empty() && !index.has_anti_terms() {
                    return Status::skip();
                }
                indexed_counts(&mut s, pod, affinity, anti, index, lookup, snapshot)
            }
            None => scanned_counts(&mut s, pod, affinity, anti, snapshot),
        }
        state.write(KEY, s);
        Status::success()
    }
}

/// The counts from the cache's indexes: only term groups and pods that could match.
fn indexed_counts(
    s: &mut FilterState,
    pod: &PodInfo,
    affinity: &[PodAffinityTerm],
    anti: &[PodAffinityTerm],
    index: &AffinityIndex,
    lookup: &NodeLookup<'_>,
    snapshot: &Snapshot<'_>,
) {
    for group in index.groups_for(pod) {
        if term_matches(&group.term, &group.namespace, pod) {
            for (node, n) in &group.nodes {
                if let Some(node) = lookup(node) {
                    count(&mut s.existing_anti, &group.term.topology_key, node, *n as i64);
                }
            }
        }
    }
    for term in anti {
        match index.candidates(term) {
            Some(candidates) => {
                for (node, existing) in candidates {
                    if term_matches(term, &pod.namespace, existing)
                        && let Some(node) = lookup(node)
                    {
                        count(&mut s.anti, &term.topology_key, node, 1);
                    }
                }
            }
            None => scanned_counts(s, pod, &[], std::slice::from_ref(term), snapshot),
        }
    }
    if let Some(first) = affinity.first() {
        match index.candidates(first) {
            Some(candidates) => {
                for (node, existing) in candidates {
                    if affinity.iter().all(|t| term_matches(t, &pod.namespace, existing))
                        && let Some(node) = lookup(node)
                    {
                        for term in affinity {
                            count(&mut s.affinity, &term.topology_key, node, 1);
                        }
                    }
                }
            }
            None => scanned_counts(s, pod, affinity, &[], snapshot),
        }
    }
}

/// The counts by looking at every placed pod (no index, or a selector no label narrows).
fn scanned_counts(
    s: &mut FilterState,
    pod: &PodInfo,
    affinity: &[PodAffinityTerm],
    anti: &[PodAffinityTerm],
    snapshot: &Snapshot<'_>,
) {
    let existing_too = snapshot.index.is_none();
    for node in &snapshot.nodes {
        // Existing pods' anti-affinity: only pods with terms can have any.
        if existing_too {
            for existing in &node.affinity_pods {
                for term in required_anti(existing) {
                    if term_matches(term, &existing.namespace, pod) {
                        count(&mut s.existing_anti, &term.topology_key, node, 1);
                    }
                }
            }
        }
        if affinity.is_empty() && anti.is_empty() {
            continue;
        }
        // The incoming pod's own terms select any pod, with terms or without.
        for existing in &node.pods {
            if !affinity.is_empty() && affinity.iter().all(|t| term_matches(t, &pod.namespace, existing)) {
                for term in affinity {
                    count(&mut s.affinity, &term.topology_key, node, 1);
                }
            }
            for term in anti {
                if term_matches(term, &pod.namespace, existing) {
                    count(&mut s.anti, &term.topology_key, node, 1);
                }
            }
        }
    }
}

impl Filter for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(KEY) else { return Status::success() };
        let affinity = required_affinity(pod);
        if !affinity.is_empty() {
            let placed = affinity.iter().all(|t| has_pair(&s.affinity, &t.topology_key, node));
            // The first pod of a group that selects itself may go anywhere with the keys.
            let first = s.affinity.is_empty()
                && affinity
                    .iter()
                    .all(|t| term_matches(t, &pod.namespace, pod) && node.labels.contains_key(&t.topology_key));
            if !placed && !first {
                return Status::unresolvable("node(s) didn't match pod affinity rules");
            }
        }
        if required_anti(pod).iter().any(|t| has_pair(&s.anti, &t.topology_key, node)) {
            return Status::unschedulable("node(s) didn't match pod anti-affinity rules");
        }
        // Checked last, as upstream orders the three.
        if s.existing_anti.keys().any(|key| has_pair(&s.existing_anti, key, node)) {
            return Status::unschedulable("node(s) didn't satisfy existing pods anti-affinity rules");
        }
        Status::success()
    }
}

impl PreScore for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, _: &[&NodeInfo], snapshot: &Snapshot<'_>) -> Status {
        let (want, avoid) = preferred(pod);
        // Existing pods count only through preferred terms of their own.
        let existing_preferences = match snapshot.index {
            Some((index, _)) => index.preferred_pods > 0,
            None => snapshot.affinity_pods > 0,
        };
        if want.is_empty() && avoid.is_empty() && !existing_preferences {
            return Status::skip();
        }
        let mut s = ScoreState::default();
        for node in &snapshot.nodes {
            // Pods without terms matter only to the incoming pod's own preferences.
            let pods = if want.is_empty() && avoid.is_empty() { &node.affinity_pods } else { &node.pods };
            for existing in pods {
                let (their_want, their_avoid) = preferred(existing);
                let mut add =
                    |term: &PodAffinityTerm, weight: i64| count(&mut s.by_pair, &term.topology_key, node, weight);
                for w in want {
                    if term_matches(&w.pod_affinity_term, &pod.namespace, existing) {
                        add(&w.pod_affinity_term, i64::from(w.weight));
                    }
                }
                for w in avoid {
                    if term_matches(&w.pod_affinity_term, &pod.namespace, existing) {
                        add(&w.pod_affinity_term, -i64::from(w.weight));
                    }
                }
                for w in their_want {
                    if term_matches(&w.pod_affinity_term, &existing.namespace, pod) {
                        add(&w.pod_affinity_term, i64::from(w.weight));
                    }
                }
                for w in their_avoid {
                    if term_matches(&w.pod_affinity_term, &existing.namespace, pod) {
                        add(&w.pod_affinity_term, -i64::from(w.weight));
                    }
                }
            }
        }
        state.write("InterPodAffinity/score", s);
        Status::success()
    }
}

impl Score for InterPodAffinity {
    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ScoreState>("InterPodAffinity/score") else { return 0 };
        s.by_pair.iter().filter_map(|(key, values)| node.labels.get(key).and_then(|v| values.get(v))).sum()
    }
    fn normalize(&self, scores: &mut [i64]) {
        let (min, max) = (scores.iter().copied().min().unwrap_or(0), scores.iter().copied().max().unwrap_or(0));
        for s in scores.iter_mut() {
            *s = if max == min { 0 } else { (*s - min) * MAX_NODE_SCORE / (max - min) };
        }
    }
    fn weight(&self) -> i64 {
        2
    }
}
