//! Cluster-wide indexes over placed pods, for the InterPodAffinity plugin: placed pods by
//! label, and existing pods' required anti-affinity terms grouped by content. The cache keeps
//! them as pods come and go, so a cycle looks only at the pods and terms that could match,
//! not at every pod in the cluster. Pure.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PodAffinityTerm;

use super::framework::PodInfo;

/// Identical required anti-affinity terms of existing pods, and where those pods are.
pub struct TermGroup {
    pub namespace: String,
    pub term: PodAffinityTerm,
    /// Node → pods carrying the term there.
    pub nodes: HashMap<String, usize>,
}

/// Pod uid → (node, pod).
type Placed = HashMap<String, (String, Arc<PodInfo>)>;

#[derive(Default)]
pub struct AffinityIndex {
    /// Placed pods by (label key, value).
    by_label: HashMap<(String, String), Placed>,
    groups: HashMap<String, TermGroup>,
    /// Groups whose selector requires a label pair, by that pair; the rest in `unindexed`.
    groups_by_label: HashMap<(String, String), HashSet<String>>,
    unindexed: HashSet<String>,
    /// Placed pods with preferred pod affinity or anti-affinity terms.
    pub preferred_pods: usize,
}

/// A label pair every pod the term selects must carry, if its selector names one.
fn required_pair(term: &PodAffinityTerm) -> Option<(String, String)> {
    let selector = term.label_selector.as_ref()?;
    if let Some((k, v)) = selector.match_labels.as_ref().and_then(|m| m.iter().next()) {
        return Some((k.clone(), v.clone()));
    }
    let e = selector
        .match_expressions
        .as_ref()?
        .iter()
        .find(|e| e.operator == "In" && e.values.as_ref().is_some_and(|v| v.len() == 1))?;
    Some((e.key.clone(), e.values.as_ref()?[0].clone()))
}

fn group_key(namespace: &str, term: &PodAffinityTerm) -> String {
    format!("{namespace}\n{}", serde_json::to_string(term).unwrap_or_default())
}

fn required_anti(pod: &PodInfo) -> &[PodAffinityTerm] {
    let a = pod.spec().affinity.as_ref().and_then(|a| a.pod_anti_affinity.as_ref());
    a.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_deref()).unwrap_or_default()
}

fn has_preferred(pod: &PodInfo) -> bool {
    let a = pod.spec().affinity.as_ref();
    let pa = a
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref());
    let anti = a
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref());
    pa.is_some_and(|p| !p.is_empty()) || anti.is_some_and(|p| !p.is_empty())
}

impl AffinityIndex {
    pub fn add(&mut self, pod: &Arc<PodInfo>, node: &str) {
        for (k, v) in &pod.labels {
            self.by_label
                .entry((k.clone(), v.clone()))
                .or_default()
                .insert(pod.uid.clone(), (node.to_owned(), pod.clone()));
        }
        for term in required_anti(pod) {
            let key = group_key(&pod.namespace, term);
            let group = self.groups.entry(key.clone()).or_insert_with(|| TermGroup {
                namespace: pod.namespace.clone(),
                term: term.clone(),
                nodes: HashMap::new(),
            });
            *group.nodes.entry(node.to_owned()).or_default() += 1;
            match required_pair(term) {
                Some(pair) => self.groups_by_label.entry(pair).or_default().insert(key),
                None => self.unindexed.insert(key),
            };
        }
        self.preferred_pods += usize::from(has_preferred(pod));
    }

    /// Points the label index at a newer version of a placed pod with the same labels and
    /// node, so the old version is not kept alive.
    pub fn refresh(&mut self, pod: &Arc<PodInfo>) {
        for (k, v) in &pod.labels {
            if let Some((_, at)) = self.by_label.get_mut(&(k.clone(), v.clone())).and_then(|p| p.get_mut(&pod.uid)) {
                *at = pod.clone();
            }
        }
    }

    pub fn remove(&mut self, pod: &PodInfo, node: &str) {
        for (k, v) in &pod.labels {
            let pair = (k.clone(), v.clone());
            if let Some(pods) = self.by_label.get_mut(&pair) {
                pods.remove(&pod.uid);
                if pods.is_empty() {
                    self.by_label.remove(&pair);
                }
            }
        }
        for term in required_anti(pod) {
            let key = group_key(&pod.namespace, term);
            let Some(group) = self.groups.get_mut(&key) else { continue };
            if let Some(n) = group.nodes.get_mut(node) {
                *n -= 1;
                if *n == 0 {
                    group.nodes.remove(node);
                }
            }
            if group.nodes.is_empty() {
                self.groups.remove(&key);
                match required_pair(term) {
                    Some(pair) => {
                        if let Some(keys) = self.groups_by_label.get_mut(&pair) {
                            keys.remove(&key);
                            if keys.is_empty() {
                                self.groups_by_label.remove(&pair);
                            }
                        }
                    }
                    None => {
                        self.unindexed.remove(&key);
                    }
                }
            }
        }
        self.preferred_pods -= usize::from(has_preferred(pod));
    }

    /// The anti-affinity term groups that could select `pod`: those keyed by one of its labels,
    /// and those no label pair narrows.
    pub fn groups_for<'a>(&'a self, pod: &'a PodInfo) -> impl Iterator<Item = &'a TermGroup> + 'a {
        let mut keys: HashSet<&String> = self.unindexed.iter().collect();
        for (k, v) in &pod.labels {
            if let Some(group_keys) = self.groups_by_label.get(&(k.clone(), v.clone())) {
                keys.extend(group_keys);
            }
        }
        keys.into_iter().filter_map(|k| self.groups.get(k))
    }

    /// Placed pods the term could select, with their nodes, or None when its selector names no
    /// label pair (then every pod must be looked at).
    pub fn candidates(&self, term: &PodAffinityTerm) -> Option<Vec<(&str, &Arc<PodInfo>)>> {
        let pair = required_pair(term)?;
        Some(
            self.by_label
                .get(&pair)
                .map(|pods| pods.values().map(|(n, p)| (n.as_str(), p)).collect())
                .unwrap_or_default(),
        )
    }

    pub fn has_anti_terms(&self) -> bool {
        !self.groups.is_empty()
    }
}
