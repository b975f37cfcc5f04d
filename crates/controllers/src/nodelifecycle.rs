//! Node lifecycle, as upstream's node lifecycle controller and taint manager: a node's
//! heartbeat is its Lease (or its Ready condition's heartbeat). A node not heard from for the
//! grace period has its conditions set to Unknown; Ready=False and Unknown nodes get the
//! `not-ready` and `unreachable` taints (NoSchedule and NoExecute), cordoned ones the
//! `unschedulable` taint; and pods on a NoExecute-tainted node are evicted once their
//! tolerations run out (`tolerationSeconds`: 300 s by default, from admission).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{Recorder, Type};
use crate::scheduler::plugins::node::tolerates;

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

#[derive(Clone, Debug)]
pub struct Config {
    /// How long a node may go without a heartbeat before it is Unknown (upstream: 40 s).
    pub grace_period: Duration,
    /// How often nodes are checked (upstream: 5 s).
    pub monitor_period: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config { grace_period: Duration::from_secs(40), monitor_period: Duration::from_secs(5) }
    }
}

pub async fn run(client: Client, config: Config) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let node_watch = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .for_each(|_| async {});
    let lease_watch = watcher(Api::<Lease>::namespaced(client.clone(), "kube-node-lease"), watcher::Config::default())
        .default_backoff()
        .reflect(lease_writer)
        .for_each(|_| async {});
    let recorder = Recorder::start(client.clone(), "node-controller");
    let monitor = async {
        let _ = nodes.wait_until_ready().await;
        let _ = leases.wait_until_ready().await;
        let mut tick = tokio::time::interval(config.monitor_period.min(Duration::from_secs(1)));
        let mut last_monitor = tokio::time::Instant::now() - config.monitor_period;
        loop {
            tick.tick().await;
            // Health every monitor period; evictions every second, so short tolerations hold.
            if last_monitor.elapsed() >= config.monitor_period {
                last_monitor = tokio::time::Instant::now();
                monitor_health(&client, &nodes, &leases, &config, &recorder).await;
            }
            evict(&client, &nodes, &recorder).await;
        }
    };
    tokio::join!(node_watch, lease_watch, monitor);
}

fn ready_condition(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")
}

/// The last time the node was heard from: its Lease's renew time or its Ready heartbeat.
fn last_heard(node: &Node, leases: &Store<Lease>) -> Option<Timestamp> {
    let lease = leases.get(&reflector::ObjectRef::new(&node.name_any()).within("kube-node-lease"));
    let renewed = lease.and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let posted = ready_condition(node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    renewed.into_iter().chain(posted).max()
}

/// The taints the node's conditions call for.
fn wanted_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut taints = Vec::new();
    match ready_condition(node).map(|c| c.status.as_str()) {
        Some("False") => taints.extend([(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]),
        Some("Unknown") | None => taints.extend([(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]),
        _ => {}
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        taints.push((UNSCHEDULABLE, "NoSchedule"));
    }
    taints
}

async fn monitor_health(
    client: &Client,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    config: &Config,
    recorder: &Recorder,
) {
    let api: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let grace = SignedDuration::try_from(config.grace_period).unwrap_or(SignedDuration::from_secs(40));
    for node in nodes.state() {
        let name = node.name_any();
        let heard = last_heard(&node, leases).or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let silent = heard.is_some_and(|h| h + grace < now);
        let unknown = ready_condition(&node).is_some_and(|c| c.status == "Unknown");
        if silent && !unknown {
            // Upstream's words, on every condition the kubelet owns.
            let conditions: Vec<serde_json::Value> = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]
                .iter()
                .map(|kind| {
                    json!({"type": kind, "status": "Unknown", "reason": "NodeStatusUnknown",
                           "message": "Kubelet stopped posting node status.", "lastTransitionTime": Time(now)})
                })
                .collect();
            let patch = json!({"status": {"conditions": conditions}});
            match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch)).await {
                Ok(updated) => {
                    recorder.record(
                        node.as_ref(),
                        Type::Normal,
                        "NodeNotReady",
                        "NodeNotReady",
                        format!("Node {name} status is now: NodeNotReady"),
                    );
                    sync_taints(&api, &updated, now).await;
                }
                Err(e) => tracing::debug!("node {name}: {e}"),
            }
            mark_pods_not_ready(client, &name).await;
            continue;
        }
        sync_taints(&api, &node, now).await;
    }
}

/// Sets the node's condition taints, keeping every other taint as it is.
async fn sync_taints(api: &Api<Node>, node: &Node, now: Timestamp) {
    let managed = [NOT_READY, UNREACHABLE, UNSCHEDULABLE];
    let current: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let wanted = wanted_taints(node);
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !managed.contains(&t.key.as_str()) || wanted.contains(&(t.key.as_str(), t.effect.as_str())))
        .cloned()
        .collect();
    for (key, effect) in &wanted {
        if !taints.iter().any(|t| t.key == *key && t.effect == *effect) {
            let time_added = (*effect == "NoExecute").then_some(Time(now));
            taints.push(Taint { key: (*key).into(), effect: (*effect).into(), value: None, time_added });
        }
    }
    if taints == current {
        return;
    }
    // The resourceVersion makes a concurrent change (a user's taint) a conflict, not a loss.
    let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": taints}});
    if let Err(e) = api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
        tracing::debug!("node {}: taints not updated: {e}", node.name_any());
    }
}

async fn pods_on(client: &Client, node: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::all(client.clone());
    match api.list(&ListParams::default().fields(&format!("spec.nodeName={node}"))).await {
        Ok(list) => list.items,
        Err(e) => {
            tracing::debug!("pods on node {node}: {e}");
            Vec::new()
        }
    }
}

/// Pods on a node that stopped reporting are not ready any more, as upstream marks them.
async fn mark_pods_not_ready(client: &Client, node: &str) {
    for pod in pods_on(client, node).await {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": Time(Timestamp::now())}]}});
        if let Err(e) = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Strategic(patch)).await {
            tracing::debug!("pod {}: {e}", pod.name_any());
        }
    }
}

/// When the pod must leave a node with these NoExecute taints: now, at a time, or never.
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Timestamp> {
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let Some(toleration) = tolerations.iter().find(|t| tolerates(t, taint)) else { return Some(now) };
        if let Some(seconds) = toleration.toleration_seconds {
            let added = taint.time_added.as_ref().map(|t| t.0).unwrap_or(now);
            let due = added + SignedDuration::from_secs(seconds.max(0));
            at = Some(at.map_or(due, |a| a.min(due)));
        }
    }
    at
}

async fn evict(client: &Client, nodes: &Store<Node>, recorder: &Recorder) {
    let now = Timestamp::now();
    let mut evictions: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for node in nodes.state() {
        let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
        if !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        for pod in pods_on(client, &node.name_any()).await {
            let due = eviction_time(&pod, &taints, now).is_some_and(|at| at <= now);
            if due && pod.metadata.deletion_timestamp.is_none() {
                evictions.entry(node.name_any()).or_default().push(pod);
            }
        }
    }
    for (node, pods) in evictions {
        for pod in pods {
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => recorder.record(
                    &pod,
                    Type::Normal,
                    "TaintManagerEviction",
                    "Deleting",
                    format!(
                        "Marking for deletion Pod {}/{} (tainted node {node})",
                        pod.namespace().unwrap_or_default(),
                        pod.name_any()
                    ),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => tracing::debug!("evicting {}: {e}", pod.name_any()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_decide_when_pods_leave() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let added: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let taint =
            Taint { key: UNREACHABLE.into(), effect: "NoExecute".into(), value: None, time_added: Some(Time(added)) };
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}}),
            )
            .unwrap()
        };
        assert_eq!(eviction_time(&pod(json!([])), std::slice::from_ref(&taint), now), Some(now));
        let timed =
            pod(json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]));
        assert_eq!(
            eviction_time(&timed, std::slice::from_ref(&taint), now),
            Some(added + SignedDuration::from_secs(300))
        );
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_time(&forever, std::slice::from_ref(&taint), now), None);
    }

    #[test]
    fn conditions_call_for_taints() {
        let node = |ready: &str, cordoned: bool| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": "n"}, "spec": {"unschedulable": cordoned},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap()
        };
        assert!(wanted_taints(&node("True", false)).is_empty());
        assert_eq!(wanted_taints(&node("False", false)), [(NOT_READY, "NoSchedule"), (NOT_READY, "NoExecute")]);
        assert_eq!(
            wanted_taints(&node("Unknown", true)),
            [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute"), (UNSCHEDULABLE, "NoSchedule")]
        );
    }
}
