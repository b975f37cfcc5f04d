//! Each plugin on fixtures, and whole cycles through the default profile.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::scheduler::cycle::Profile;
use crate::scheduler::framework::{Code, CycleState, NodeInfo, PodInfo, Snapshot};
use crate::scheduler::preemption::Budget;

fn pod(name: &str, spec: Value) -> PodInfo {
    pod_labelled(name, json!({}), spec)
}

fn pod_labelled(name: &str, labels: Value, mut spec: Value) -> PodInfo {
    if spec.get("containers").is_none() {
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
    }
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
        "spec": spec,
    }))
    .unwrap();
    PodInfo::new(Arc::new(pod))
}

fn requesting(name: &str, cpu: &str, memory: &str) -> PodInfo {
    pod(
        name,
        json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}),
    )
}

fn node(name: &str, labels: Value, spec: Value) -> NodeInfo {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3"}},
    }))
    .unwrap();
    NodeInfo::new(Arc::new(node))
}

/// The reasons a single plugin gives for the pod on the node (empty: it fits).
fn filter(plugin: &str, pod: &PodInfo, node: &NodeInfo, all: &[&NodeInfo]) -> (Code, Vec<String>) {
    let profile = crate::scheduler::plugins::registry();
    let plugin = profile.iter().find(|(n, _)| *n == plugin).unwrap().1();
    let mut state = CycleState::default();
    let snapshot = Snapshot::new(all.to_vec());
    if let Some(pre) = plugin.pre_filter() {
        let status = pre.pre_filter(&mut state, pod, &snapshot);
        if status.code == Code::Skip {
            return (Code::Success, Vec::new());
        }
        assert!(status.is_success());
    }
    let status = plugin.filter().unwrap().filter(&state, pod, node);
    (status.code, status.reasons)
}

fn fits(plugin: &str, pod: &PodInfo, node: &NodeInfo) -> bool {
    filter(plugin, pod, node, &[node]).0 == Code::Success
}

#[test]
fn node_name_and_unschedulable() {
    let n1 = node("n1", json!({}), json!({}));
    assert!(fits("NodeName", &pod("p", json!({"nodeName": "n1"})), &n1));
    assert_eq!(
        filter("NodeName", &pod("p", json!({"nodeName": "n2"})), &n1, &[&n1]),
        (Code::UnschedulableAndUnresolvable, vec!["node(s) didn't match the requested node name".to_owned()])
    );
    let cordoned = node("n1", json!({}), json!({"unschedulable": true}));
    assert!(!fits("NodeUnschedulable", &pod("p", json!({})), &cordoned));
    let tolerant = pod(
        "p",
        json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
    );
    assert!(fits("NodeUnschedulable", &tolerant, &cordoned));
}

#[test]
fn resources_fit_counts_requests_and_pods() {
    let mut n = node("n1", json!({}), json!({}));
    assert!(fits("NodeResourcesFit", &requesting("a", "1500m", "1Gi"), &n));
    n.add_pod(Arc::new(requesting("a", "1500m", "1Gi")));
    assert_eq!(
        filter("NodeResourcesFit", &requesting("b", "1", "4Gi"), &n, &[&n]).1,
        vec!["Insufficient cpu", "Insufficient memory"]
    );
    assert!(fits("NodeResourcesFit", &requesting("b", "500m", "3Gi"), &n));
    n.add_pod(Arc::new(pod("c", json!({}))));
    n.add_pod(Arc::new(pod("d", json!({}))));
    assert_eq!(filter("NodeResourcesFit", &pod("e", json!({})), &n, &[&n]).1, vec!["Too many pods"]);
    assert!(n.remove_pod("uid-d").is_some());
    assert!(fits("NodeResourcesFit", &pod("e", json!({})), &n));
    // Init containers count at their peak, not summed with the app containers.
    let init = pod(
        "i",
        json!({
            "initContainers": [{"name": "i", "image": "i", "resources": {"requests": {"cpu": "2"}}}],
            "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
        }),
    );
    assert_eq!(init.requests.milli_cpu, 2000);
}

#[test]
fn affinity_selector_and_taints() {
    let n = node(
        "n1",
        json!({"disk": "ssd", "zone": "a"}),
        json!({"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}),
    );
    assert!(fits("NodeAffinity", &pod("p", json!({"nodeSelector": {"disk": "ssd"}})), &n));
    assert!(!fits("NodeAffinity", &pod("p", json!({"nodeSelector": {"disk": "hdd"}})), &n));
    let affinity = |op: &str| {
        pod(
            "p",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": op, "values": ["a"]}]}]}}}}),
        )
    };
    assert!(fits("NodeAffinity", &affinity("In"), &n));
    assert!(!fits("NodeAffinity", &affinity("NotIn"), &n));
    assert_eq!(
        filter("TaintToleration", &pod("p", json!({})), &n, &[&n]).1,
        vec!["node(s) had untolerated taint {gpu: yes}"]
    );
    let tolerate = |t: Value| pod("p", json!({"tolerations": [t]}));
    assert!(fits("TaintToleration", &tolerate(json!({"key": "gpu", "value": "yes", "effect": "NoSchedule"})), &n));
    assert!(fits("TaintToleration", &tolerate(json!({"key": "gpu", "operator": "Exists"})), &n));
    assert!(fits("TaintToleration", &tolerate(json!({"operator": "Exists"})), &n));
    assert!(!fits("TaintToleration", &tolerate(json!({"key": "gpu", "value": "no"})), &n));
    assert!(!fits(
        "TaintToleration",
        &tolerate(json!({"key": "gpu", "operator": "Exists", "effect": "NoExecute"})),
        &n
    ));
}

#[test]
fn host_ports_clash() {
    let mut n = node("n1", json!({}), json!({}));
    let web = |name: &str, ip: &str| {
        pod(
            name,
            json!({"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080, "hostIP": ip}]}]}),
        )
    };
    n.add_pod(Arc::new(web("a", "10.0.0.1")));
    assert!(!fits("NodePorts", &web("b", ""), &n));
    assert!(!fits("NodePorts", &web("b", "10.0.0.1"), &n));
    assert!(fits("NodePorts", &web("b", "10.0.0.2"), &n));
}

fn anti(name: &str, app: &str) -> PodInfo {
    pod_labelled(
        name,
        json!({"app": app}),
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
    )
}

#[test]
fn inter_pod_anti_affinity_both_ways() {
    let mut n1 = node("n1", json!({"kubernetes.io/hostname": "n1"}), json!({}));
    let n2 = node("n2", json!({"kubernetes.io/hostname": "n2"}), json!({}));
    n1.add_pod(Arc::new(anti("a", "web")));
    let (code, reasons) = filter("InterPodAffinity", &anti("b", "web"), &n1, &[&n1, &n2]);
    assert_eq!(code, Code::Unschedulable);
    // Its own term is checked before the existing pod's, as upstream orders them.
    assert_eq!(reasons, vec!["node(s) didn't match pod anti-affinity rules"]);
    assert_eq!(filter("InterPodAffinity", &anti("b", "web"), &n2, &[&n1, &n2]).0, Code::Success);
    // A plain pod with the label is refused by the existing pod's anti-affinity.
    let plain = pod_labelled("c", json!({"app": "web"}), json!({}));
    assert_eq!(
        filter("InterPodAffinity", &plain, &n1, &[&n1, &n2]).1,
        vec!["node(s) didn't satisfy existing pods anti-affinity rules"]
    );
    // Another app is welcome.
    assert_eq!(filter("InterPodAffinity", &anti("d", "db"), &n1, &[&n1, &n2]).0, Code::Success);
}

#[test]
fn inter_pod_affinity_follows_its_group() {
    let with_cache = |name: &str| {
        pod_labelled(
            name,
            json!({"app": "web"}),
            json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "zone"}]}}}),
        )
    };
    let mut a = node("n1", json!({"zone": "a"}), json!({}));
    let b = node("n2", json!({"zone": "b"}), json!({}));
    // No cache pod anywhere, and the pod does not select itself: nowhere fits.
    assert_eq!(filter("InterPodAffinity", &with_cache("w"), &a, &[&a, &b]).0, Code::UnschedulableAndUnresolvable);
    a.add_pod(Arc::new(pod_labelled("cache", json!({"app": "cache"}), json!({}))));
    assert_eq!(filter("InterPodAffinity", &with_cache("w"), &a, &[&a, &b]).0, Code::Success);
    assert_eq!(filter("InterPodAffinity", &with_cache("w"), &b, &[&a, &b]).0, Code::UnschedulableAndUnresolvable);
}

#[test]
fn topology_spread_keeps_skew() {
    let spread = |name: &str| {
        pod_labelled(
            name,
            json!({"app": "web"}),
            json!({"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        )
    };
    let mut a = node("n1", json!({"zone": "a"}), json!({}));
    let b = node("n2", json!({"zone": "b"}), json!({}));
    let bare = node("n3", json!({}), json!({}));
    a.add_pod(Arc::new(spread("x")));
    let nodes = [&a, &b, &bare];
    assert_eq!(filter("PodTopologySpread", &spread("y"), &a, &nodes).0, Code::Unschedulable);
    assert_eq!(filter("PodTopologySpread", &spread("y"), &b, &nodes).0, Code::Success);
    assert_eq!(
        filter("PodTopologySpread", &spread("y"), &bare, &nodes),
        (
            Code::UnschedulableAndUnresolvable,
            vec!["node(s) didn't match pod topology spread constraints (missing required label)".to_owned()]
        )
    );
}

#[test]
fn a_cycle_picks_the_emptiest_fitting_node_or_explains() {
    let mut busy = node("busy", json!({}), json!({}));
    busy.add_pod(Arc::new(requesting("a", "1", "1Gi")));
    let idle = node("idle", json!({}), json!({}));
    let tainted = node("tainted", json!({}), json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}));
    let profile = Profile::default_profile();
    let snapshot = Snapshot::new(vec![&busy, &idle, &tainted]);
    assert_eq!(profile.schedule(&requesting("p", "500m", "1Gi"), &snapshot, |_| 0).unwrap(), "idle");
    let error = profile.schedule(&requesting("p", "3", "1Gi"), &snapshot, |_| 0).unwrap_err();
    assert_eq!(error.message(), "0/3 nodes are available: 1 node(s) had untolerated taint {k: }, 2 Insufficient cpu.");
    assert!(error.resolvable);
    assert!(Profile::with(&["NoSuchPlugin"]).is_none());
}

#[test]
fn large_clusters_are_sampled_as_upstream() {
    use crate::scheduler::cycle::feasible_nodes_to_find;
    assert_eq!(feasible_nodes_to_find(50), 50);
    // 50% of 100 is raised to the floor of 100.
    assert_eq!(feasible_nodes_to_find(100), 100);
    assert_eq!(feasible_nodes_to_find(1000), 420);
    assert_eq!(feasible_nodes_to_find(5000), 500);
    assert_eq!(feasible_nodes_to_find(50_000), 2500);
    // Successive cycles start where the last stopped: every node gets placements.
    let nodes: Vec<NodeInfo> = (0..300).map(|i| node(&format!("n{i}"), json!({}), json!({}))).collect();
    let profile = Profile::default_profile();
    let snapshot = Snapshot::new(nodes.iter().collect());
    let mut chosen = std::collections::HashSet::new();
    for i in 0..10 {
        chosen.insert(profile.schedule(&pod(&format!("p{i}"), json!({})), &snapshot, |_| 0).unwrap());
    }
    assert!(chosen.len() > 1, "{chosen:?}");
}

fn prioritized(name: &str, cpu: &str, priority: i32, extra: Value) -> PodInfo {
    let mut spec = json!({"priority": priority,
        "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    pod(name, spec)
}

#[test]
fn preemption_evicts_the_fewest_least_important_pods() {
    // Two 2-CPU nodes, full. The pod needs 1 CPU at priority 100.
    let mut a = node("a", json!({}), json!({}));
    a.add_pod(Arc::new(prioritized("a-low", "1", 10, json!({}))));
    a.add_pod(Arc::new(prioritized("a-mid", "1", 50, json!({}))));
    let mut b = node("b", json!({}), json!({}));
    b.add_pod(Arc::new(prioritized("b-high", "1", 1000, json!({}))));
    b.add_pod(Arc::new(prioritized("b-low", "1", 5, json!({}))));
    let incoming = prioritized("new", "1", 100, json!({}));
    let profile = Profile::default_profile();
    let snapshot = Snapshot::new(vec![&a, &b]);
    let error = profile.schedule(&incoming, &snapshot, |_| 0).unwrap_err();
    assert!(error.resolvable, "{error:?}");
    // On a, evicting a-low (10) suffices and a-mid is reprieved; on b, b-low (5) suffices.
    // The lowest highest-priority victim wins: b-low.
    let chosen = profile.preempt(&incoming, &snapshot, &[]).unwrap();
    assert_eq!(chosen.node, "b");
    assert_eq!(chosen.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["b-low"]);

    // Needing 2 CPUs, only a can be emptied (b-high outranks the pod): both go.
    let big = prioritized("big", "2", 100, json!({}));
    let chosen = profile.preempt(&big, &snapshot, &[]).unwrap();
    assert_eq!(chosen.node, "a");
    let mut names: Vec<_> = chosen.victims.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["a-low", "a-mid"]);

    // Nothing of lower priority to evict, `Never`, or a node that cannot fit anyway: none.
    assert!(profile.preempt(&prioritized("humble", "1", 1, json!({})), &snapshot, &[]).is_none());
    assert!(
        profile
            .preempt(&prioritized("polite", "1", 100, json!({"preemptionPolicy": "Never"})), &snapshot, &[])
            .is_none()
    );
    assert!(profile.preempt(&prioritized("huge", "3", 100, json!({})), &snapshot, &[]).is_none());
    // A tainted node full of evictable pods: evicting them would not help.
    let mut tainted = node("t", json!({}), json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}));
    tainted.add_pod(Arc::new(prioritized("t-low", "2", 1, json!({}))));
    let only_tainted = Snapshot::new(vec![&tainted]);
    assert!(profile.preempt(&incoming, &only_tainted, &[]).is_none());
}

#[test]
fn a_pod_waiting_for_its_victims_does_not_preempt_again() {
    let mut a = node("a", json!({}), json!({}));
    let mut leaving: Pod = serde_json::from_value(json!({
        "metadata": {"name": "going", "namespace": "default", "uid": "uid-going", "deletionTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"priority": 1, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]},
    }))
    .unwrap();
    a.add_pod(Arc::new(PodInfo::new(Arc::new(leaving.clone()))));
    a.add_pod(Arc::new(prioritized("stays", "1", 1, json!({}))));
    let mut waiting: Pod = (*prioritized("new", "1", 100, json!({})).pod).clone();
    waiting.status = Some(serde_json::from_value(json!({"nominatedNodeName": "a"})).unwrap());
    let waiting = PodInfo::new(Arc::new(waiting));
    let snapshot = Snapshot::new(vec![&a]);
    assert!(profile_preempts(&waiting, &snapshot).is_none());
    // Once the victim is gone, it may preempt again if it must.
    leaving.metadata.deletion_timestamp = None;
    let mut b = node("a", json!({}), json!({}));
    b.add_pod(Arc::new(PodInfo::new(Arc::new(leaving))));
    b.add_pod(Arc::new(prioritized("stays", "1", 1, json!({}))));
    assert!(profile_preempts(&waiting, &Snapshot::new(vec![&b])).is_some());
}

fn profile_preempts(pod: &PodInfo, snapshot: &Snapshot<'_>) -> Option<crate::scheduler::preemption::Preemption> {
    Profile::default_profile().preempt(pod, snapshot, &[])
}

/// A pod of `priority` asking for `cpu`, with labels and, if given, the time it started.
fn victim(name: &str, cpu: &str, priority: i32, labels: Value, started: Option<&str>) -> Arc<PodInfo> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"priority": priority, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]},
        "status": {"startTime": started},
    }))
    .unwrap();
    Arc::new(PodInfo::new(Arc::new(pod)))
}

fn budget(namespace: &str, selector: Value, allowed: i32, disrupted: &[&str]) -> Budget {
    let disrupted: serde_json::Map<String, Value> =
        disrupted.iter().map(|p| (p.to_string(), json!("2026-01-01T00:00:00Z"))).collect();
    let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "b", "namespace": namespace},
        "spec": {"selector": selector, "minAvailable": 1},
        "status": {"disruptionsAllowed": allowed, "disruptedPods": disrupted,
                   "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0},
    }))
    .unwrap();
    Budget::new(&pdb)
}

#[test]
fn preemption_spares_pods_a_disruption_budget_protects() {
    // a holds two mid pods; b two low ones, which a budget may protect.
    let guarded = json!({"guard": "yes"});
    let mut a = node("a", json!({}), json!({}));
    a.add_pod(victim("a-mid-1", "1", 50, json!({}), None));
    a.add_pod(victim("a-mid-2", "1", 50, json!({}), None));
    let mut b = node("b", json!({}), json!({}));
    b.add_pod(victim("b-low-1", "1", 10, guarded.clone(), None));
    b.add_pod(victim("b-low-2", "1", 10, guarded.clone(), None));
    let snapshot = Snapshot::new(vec![&a, &b]);
    let incoming = prioritized("new", "1", 100, json!({}));
    let profile = Profile::default_profile();
    let chosen = |budgets: &[&Budget]| profile.preempt(&incoming, &snapshot, budgets).unwrap();
    let selector = json!({"matchLabels": {"guard": "yes"}});

    // Unprotected, the low pods matter least.
    assert_eq!(chosen(&[]).node, "b");
    // A budget with no disruption left sends the preemption to the mid pods instead.
    let full = budget("default", selector.clone(), 0, &[]);
    let picked = chosen(&[&full]);
    assert_eq!((picked.node.as_str(), picked.victims.len()), ("a", 1));
    // One disruption allowed: one low pod may go, and one is all it takes.
    let one = budget("default", selector.clone(), 1, &[]);
    let picked = chosen(&[&one]);
    assert_eq!((picked.node.as_str(), picked.victims.len()), ("b", 1));
    // A pod already counted as disrupted does not charge the budget again.
    let counted = budget("default", selector.clone(), 0, &["b-low-1", "b-low-2"]);
    assert_eq!(chosen(&[&counted]).node, "b");
    // Budgets of another namespace, or with an empty selector, cover nothing.
    let elsewhere = budget("other", selector, 0, &[]);
    let empty = budget("default", json!({}), 0, &[]);
    assert_eq!(chosen(&[&elsewhere, &empty]).node, "b");
}

#[test]
fn preemption_prefers_fewer_victims_of_negative_priority_and_evicts_the_newest() {
    // Sums of negative priorities: two victims must never beat one by summing lower.
    let mut a = node("a", json!({}), json!({}));
    a.add_pod(victim("a-one", "2", -5, json!({}), None));
    let mut b = node("b", json!({}), json!({}));
    b.add_pod(victim("b-one", "1", -5, json!({}), None));
    b.add_pod(victim("b-two", "1", -5, json!({}), None));
    let snapshot = Snapshot::new(vec![&b, &a]);
    let incoming = prioritized("new", "2", 0, json!({}));
    let picked = Profile::default_profile().preempt(&incoming, &snapshot, &[]).unwrap();
    assert_eq!((picked.node.as_str(), picked.victims.len()), ("a", 1));

    // Everything else equal, the node whose victim started last is chosen.
    let mut old = node("old", json!({}), json!({}));
    old.add_pod(victim("long-running", "2", 10, json!({}), Some("2026-01-01T00:00:00Z")));
    let mut new = node("new", json!({}), json!({}));
    new.add_pod(victim("recent", "2", 10, json!({}), Some("2026-06-01T00:00:00Z")));
    let snapshot = Snapshot::new(vec![&old, &new]);
    let incoming = prioritized("p", "2", 100, json!({}));
    assert_eq!(Profile::default_profile().preempt(&incoming, &snapshot, &[]).unwrap().node, "new");
}
