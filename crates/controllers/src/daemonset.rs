//! The DaemonSet controller: one pod on every node the template may run on (its node
//! selector and affinity, and taints it tolerates, with the tolerations upstream gives every
//! daemon pod), pinned to the node by node affinity for the scheduler to bind, and replaced
//! revision by revision within `maxUnavailable` on a rolling update.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::informer::Informer;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::deployment::{resolve, semantic, template_hash};
use crate::events::{Recorder, Type};
use crate::labels;
use crate::replicaset::{claim, is_available, owner_reference, pod_from_template, ready_since};
use crate::scheduler::plugins::node::tolerates;
use crate::statefulset::REVISION_LABEL;

struct Context {
    client: Client,
    recorder: Recorder,
}

/// `pods` is the shared pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    let context =
        Arc::new(Context { recorder: Recorder::start(client.clone(), "daemonset-controller"), client: client.clone() });
    // Any node change may change where daemons belong: look at every DaemonSet again.
    let nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    Controller::new(Api::<DaemonSet>::all(client.clone()), watcher::Config::default())
        .owns_shared_stream(pods.touched())
        .reconcile_all_on(nodes)
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(ds: Arc<DaemonSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("daemonset {}: {error}", ds.name_any());
    Action::requeue(Duration::from_secs(2))
}

/// The tolerations upstream adds to every daemon pod, so daemons stay through node trouble.
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let toleration = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut all = vec![
        toleration("node.kubernetes.io/not-ready", "NoExecute"),
        toleration("node.kubernetes.io/unreachable", "NoExecute"),
        toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
        toleration("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        all.push(toleration("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    all
}

/// Whether a daemon pod from this template belongs on the node.
pub fn should_run(pod: &Pod, node: &Node) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    let node_labels = node.labels();
    let name = node.name_any();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| node_labels.get(k) == Some(v));
    let affinity = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
    let required = affinity.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| labels::node_matches_any(&r.node_selector_terms, node_labels, &name));
    let tolerations = spec.tolerations.unwrap_or_default();
    let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let taints_ok = taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)));
    selector_ok && affinity_ok && taints_ok
}

/// The node a daemon pod is for: the one it runs on or the one its affinity pins.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(node.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name")?
        .values
        .as_ref()?
        .first()
        .cloned()
}

/// The template's pod for one node: pinned there by required node affinity on its name.
fn pod_for(ds: &DaemonSet, namespace: &str, node: &str, revision: &str) -> Pod {
    let spec = ds.spec.clone().unwrap_or_default();
    let mut pod = pod_from_template(&spec.template, &owner_reference(ds), namespace);
    pod.metadata.labels.get_or_insert_with(BTreeMap::new).insert(REVISION_LABEL.into(), revision.to_owned());
    if let Some(pod_spec) = pod.spec.as_mut() {
        let term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_owned()]),
            }]),
        };
        let affinity = pod_spec.affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
        node_affinity.required_during_scheduling_ignored_during_execution =
            Some(NodeSelector { node_selector_terms: vec![term] });
        let tolerations = pod_spec.tolerations.get_or_insert_with(Vec::new);
        for t in daemon_tolerations(pod_spec.host_network.unwrap_or(false)) {
            if !tolerations.iter().any(|have| have.key == t.key && have.effect == t.effect) {
                tolerations.push(t);
            }
        }
    }
    pod
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_default();
    let spec = ds.spec.clone().unwrap_or_default();
    let revision = template_hash(&spec.template, ds.status.as_ref().and_then(|s| s.collision_count));
    let nodes = Api::<Node>::all(ctx.client.clone()).list(&ListParams::default()).await?.items;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pods = claim(&pods_api, &spec.selector, &owner_reference(ds.as_ref())).await?;
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in &pods {
        if let Some(node) = node_of(pod) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    // The template with the daemon tolerations, not yet pinned to a node.
    let mut probe = pod_from_template(&spec.template, &owner_reference(ds.as_ref()), &namespace);
    if let Some(pod_spec) = probe.spec.as_mut() {
        let tolerations = pod_spec.tolerations.get_or_insert_with(Vec::new);
        tolerations.extend(daemon_tolerations(pod_spec.host_network.unwrap_or(false)));
    }
    let (mut desired, mut misscheduled, mut scheduled) = (0, 0, 0);
    let mut deletes: Vec<&Pod> = Vec::new();
    for node in &nodes {
        let name = node.name_any();
        let here: Vec<&Pod> = by_node.get(&name).cloned().unwrap_or_default();
        let live: Vec<&Pod> = here.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        if should_run(&probe, node) {
            desired += 1;
            // A failed daemon pod is replaced, as upstream does.
            let failed: Vec<&Pod> = live
                .iter()
                .copied()
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"))
                .collect();
            deletes.extend(failed.iter().copied());
            let healthy: Vec<&Pod> =
                live.iter().copied().filter(|p| !failed.iter().any(|f| f.name_any() == p.name_any())).collect();
            if healthy.is_empty() {
                if here.iter().all(|p| p.metadata.deletion_timestamp.is_none()) {
                    let pod = pod_for(&ds, &namespace, &name, &revision);
                    match pods_api.create(&PostParams::default(), &pod).await {
                        Ok(p) => ctx.recorder.record(
                            ds.as_ref(),
                            Type::Normal,
                            "SuccessfulCreate",
                            "Create",
                            format!("Created pod: {}", p.name_any()),
                        ),
                        Err(e) => ctx.recorder.record(
                            ds.as_ref(),
                            Type::Warning,
                            "FailedCreate",
                            "Create",
                            format!("Error creating: {e}"),
                        ),
                    }
                }
            } else {
                scheduled += 1;
                // Duplicates go, oldest kept.
                deletes.extend(healthy.iter().skip(1).copied());
            }
        } else if !live.is_empty() {
            misscheduled += 1;
            deletes.extend(live.iter().copied());
        }
    }
    // Pods for nodes that no longer exist.
    for (node, here) in &by_node {
        if !nodes.iter().any(|n| &n.name_any() == node) {
            deletes.extend(here.iter().copied().filter(|p| p.metadata.deletion_timestamp.is_none()));
        }
    }
    // Rolling update: replace old-revision pods while at most maxUnavailable are unavailable.
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let live: Vec<&Pod> = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let rolling =
        spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling {
        // Upstream's default is one pod, not one percent.
        let one = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1);
        let max_unavailable = resolve(
            Some(
                spec.update_strategy
                    .as_ref()
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.as_ref())
                    .unwrap_or(&one),
            ),
            "1",
            desired,
            true,
        )
        .max(1);
        let unavailable = desired - live.iter().filter(|p| is_available(p, min_ready, now)).count() as i32;
        let mut budget = max_unavailable - unavailable.max(0);
        // Old pods that are not available anyway go first, then available ones within budget.
        let mut old: Vec<&Pod> =
            live.iter().copied().filter(|p| p.labels().get(REVISION_LABEL) != Some(&revision)).collect();
        old.sort_by_key(|p| is_available(p, min_ready, now));
        for pod in old {
            if !is_available(pod, min_ready, now) {
                deletes.push(pod);
            } else if budget > 0 {
                budget -= 1;
                deletes.push(pod);
            }
        }
    }
    deletes.sort_by_key(|p| p.name_any());
    deletes.dedup_by_key(|p| p.name_any());
    for pod in &deletes {
        match pods_api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => ctx.recorder.record(
                ds.as_ref(),
                Type::Normal,
                "SuccessfulDelete",
                "Delete",
                format!("Deleted pod: {}", pod.name_any()),
            ),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let current: Vec<&Pod> =
        live.iter().copied().filter(|p| !deletes.iter().any(|d| d.name_any() == p.name_any())).collect();
    let ready = current.iter().filter(|p| ready_since(p).is_some()).count() as i32;
    let available = current.iter().filter(|p| is_available(p, min_ready, now)).count() as i32;
    let updated = current.iter().filter(|p| p.labels().get(REVISION_LABEL) == Some(&revision)).count() as i32;
    let old = ds.status.clone().unwrap_or_default();
    let status = DaemonSetStatus {
        current_number_scheduled: scheduled,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some((desired - available).max(0)),
        updated_number_scheduled: Some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if semantic(json!(old)) != semantic(json!(status)) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    // Pods ready but not yet available for minReadySeconds become so without any event.
    let pending = current.iter().any(|p| ready_since(p).is_some() && !is_available(p, min_ready, now));
    Ok(if pending { Action::requeue(Duration::from_secs(1)) } else { Action::await_change() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}}))
            .unwrap()
    }

    #[test]
    fn daemons_go_where_their_template_fits() {
        let ds: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "uid": "u"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [], "nodeSelector": {"role": "edge"}}}},
        }))
        .unwrap();
        assert_eq!(node_of(&pod_for(&ds, "ns", "n1", "rev")).as_deref(), Some("n1"));
        let mut pod = pod_from_template(&ds.spec.clone().unwrap().template, &owner_reference(&ds), "ns");
        pod.spec.as_mut().unwrap().tolerations = Some(daemon_tolerations(false));
        assert!(should_run(&pod, &node(json!({"role": "edge"}), json!([]))));
        assert!(!should_run(&pod, &node(json!({"role": "core"}), json!([]))));
        // Daemons ride out cordons and unreachable nodes, not arbitrary taints.
        let cordoned = json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                              {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]);
        assert!(should_run(&pod, &node(json!({"role": "edge"}), cordoned)));
        assert!(!should_run(&pod, &node(json!({"role": "edge"}), json!([{"key": "gpu", "effect": "NoSchedule"}]))));
    }
}
