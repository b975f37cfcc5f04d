//! Patches as kubectl, kubelet and controllers send them, applied with the
//! built-in table to realistic objects.

use crate::common::*;
use rkube_core::smp::apply_for_kind;
use serde_json::{Value, json};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "default", "resourceVersion": "7",
            "labels": {"app": "web", "tier": "frontend"},
            "annotations": {"deployment.kubernetes.io/revision": "1"}
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": "nginx:1.24", "imagePullPolicy": "IfNotPresent",
                         "ports": [{"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "resources": {}, "terminationMessagePath": "/dev/termination-log"},
                        {"name": "sidecar", "image": "busybox:1.36", "args": ["sleep", "infinity"]}
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "a", "operator": "Exists"}],
                    "restartPolicy": "Always"
                }
            }
        },
        "status": {"observedGeneration": 1, "conditions": [
            {"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]}
    })
}

/// `deployment()` with `f` applied to `spec.template.spec`.
fn deployment_with(f: impl FnOnce(&mut Value)) -> Value {
    let mut d = deployment();
    f(&mut d["spec"]["template"]["spec"]);
    d
}

#[test]
fn kubectl_set_image() {
    let patch = json!({"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.25"}]}}}});
    let expected = deployment_with(|s| s["containers"][0]["image"] = json!("nginx:1.25"));
    check_kind("Deployment", "set image", deployment(), patch, expected);
}

#[test]
fn kubectl_set_image_on_cronjob() {
    let cj = json!({"kind": "CronJob", "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}], "restartPolicy": "Never"}}}}}});
    let patch =
        json!({"spec":{"jobTemplate":{"spec":{"template":{"spec":{"containers":[{"name":"b","image":"b:2"}]}}}}}});
    let mut expected = cj.clone();
    expected["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][1]["image"] = json!("b:2");
    check_kind("CronJob", "set image on cronjob", cj, patch, expected);
}

#[test]
fn kubectl_rollout_restart() {
    let patch = json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2024-05-01T12:00:00Z"}}}}});
    let mut expected = deployment();
    expected["spec"]["template"]["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/restartedAt": "2024-05-01T12:00:00Z"});
    check_kind("Deployment", "rollout restart", deployment(), patch.clone(), expected.clone());

    // A second restart replaces the timestamp and keeps other annotations.
    let mut live = expected;
    live["spec"]["template"]["metadata"]["annotations"]["other"] = json!("x");
    let again = json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2024-05-02T00:00:00Z"}}}}});
    let mut expected = live.clone();
    expected["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
        json!("2024-05-02T00:00:00Z");
    check_kind("Deployment", "second rollout restart", live, again, expected);
}

#[test]
fn kubectl_apply_second_time() {
    // What client-side `kubectl apply` sends once the object exists: the three-way
    // diff against the last-applied annotation. The user changed the image,
    // added env C, removed the sidecar and the `tier` label, set replicas.
    let last_applied = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"labels":{"app":"web"},"name":"web","namespace":"default"},"spec":{"replicas":3}}"#;
    let patch = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{last_applied}\n")},
                     "labels": {"tier": null}},
        "spec": {"replicas": 3, "template": {"spec": {
            "$setElementOrder/containers": [{"name": "nginx"}],
            "containers": [
                {"$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
                 "env": [{"name": "C", "value": "3"}], "image": "nginx:1.25", "name": "nginx"},
                {"$patch": "delete", "name": "sidecar"}
            ]}}}
    });
    let mut expected = deployment_with(|s| {
        let nginx = &mut s["containers"][0];
        nginx["image"] = json!("nginx:1.25");
        nginx["env"] = json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}, {"name": "C", "value": "3"}]);
        s["containers"] = json!([nginx.clone()]);
    });
    expected["spec"]["replicas"] = json!(3);
    expected["metadata"]["labels"] = json!({"app": "web"});
    expected["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
        json!(format!("{last_applied}\n"));
    check_kind("Deployment", "apply", deployment(), patch, expected);
}

#[test]
fn kubectl_apply_reorders_env_and_keeps_server_added_entries() {
    // The live env has an entry added by a webhook (Z); the user's order is B, A.
    let live = deployment_with(|s| {
        s["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}, {"name": "Z", "value": "w"}, {"name": "B", "value": "2"}]);
    });
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
        "containers": [{"$setElementOrder/env": [{"name": "B"}, {"name": "A"}], "name": "nginx"}]}}}});
    let expected = deployment_with(|s| {
        // Z came before B live, so it stays ahead of B (upstream's interleave).
        s["containers"][0]["env"] =
            json!([{"name": "Z", "value": "w"}, {"name": "B", "value": "2"}, {"name": "A", "value": "1"}]);
    });
    check_kind("Deployment", "apply reorder env", live, patch, expected);
}

#[test]
fn kubectl_edit_deletes_env_entry_and_port() {
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
        "containers": [{"$setElementOrder/env": [{"name": "A"}], "name": "nginx", "env": [{"$patch": "delete", "name": "B"}],
                        "ports": [{"$patch": "delete", "containerPort": 80}]}]}}}});
    let expected = deployment_with(|s| {
        s["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
        s["containers"][0]["ports"] = json!([]);
    });
    check_kind("Deployment", "edit", deployment(), patch, expected);
}

#[test]
fn kubectl_patch_adds_container_and_env_first() {
    // Without $setElementOrder upstream puts new merge-list elements before the
    // live ones; `kubectl patch` users see exactly this.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "logger", "image": "fluent-bit:3"},
        {"name": "nginx", "env": [{"name": "NEW", "value": "x"}]}]}}}});
    let result = apply_for_kind(&deployment(), &patch, "Deployment").unwrap();
    let containers = &result["spec"]["template"]["spec"]["containers"];
    let names: Vec<&str> = containers.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["logger", "nginx", "sidecar"]);
    assert_eq!(
        containers[1]["env"],
        json!([{"name": "NEW", "value": "x"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
    assert_eq!(containers[1]["image"], "nginx:1.24");
}

#[test]
fn container_ports_merge_by_container_port() {
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "ports": [
        {"containerPort": 80, "name": "http"}, {"containerPort": 443, "protocol": "TCP"}]}]}}}});
    let expected = deployment_with(|s| {
        s["containers"][0]["ports"] = json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443, "protocol": "TCP"}]);
    });
    check_kind("Deployment", "ports", deployment(), patch, expected);

    // Upstream's known limitation, kept for compatibility: containerPort is the
    // only key, so UDP 53 merges into TCP 53.
    let pod = json!({"spec": {"containers": [{"name": "dns", "ports": [{"containerPort": 53, "protocol": "TCP"}]}]}});
    let patch = json!({"spec": {"containers": [{"name": "dns", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}});
    let expected =
        json!({"spec": {"containers": [{"name": "dns", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]}});
    check_kind("Pod", "same containerPort, other protocol", pod, patch, expected);
}

#[test]
fn lists_without_tags_are_replaced() {
    let patch = json!({"spec": {"template": {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}],
        "containers": [{"name": "sidecar", "args": ["sleep", "10"]}]}}}});
    let expected = deployment_with(|s| {
        s["tolerations"] = json!([{"key": "b", "operator": "Exists"}]);
        s["containers"][1]["args"] = json!(["sleep", "10"]);
    });
    check_kind("Deployment", "tolerations and args", deployment(), patch, expected);
}

#[test]
fn volumes_with_retain_keys() {
    // kubectl apply switching a volume's source: $retainKeys clears emptyDir.
    let patch = json!({"spec": {"template": {"spec": {
        "$setElementOrder/volumes": [{"name": "data"}],
        "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}, "name": "data"}]}}}});
    let expected = deployment_with(|s| s["volumes"] = json!([{"name": "data", "configMap": {"name": "cm"}}]));
    check_kind("Deployment", "volume source switch", deployment(), patch, expected);

    let patch =
        json!({"spec": {"template": {"spec": {"volumes": [{"name": "cache", "emptyDir": {"medium": "Memory"}}]}}}});
    let expected = deployment_with(|s| {
        s["volumes"] = json!([{"name": "cache", "emptyDir": {"medium": "Memory"}}, {"name": "data", "emptyDir": {}}]);
    });
    check_kind("Deployment", "add volume", deployment(), patch, expected);
}

#[test]
fn deployment_strategy_switch() {
    // kubectl apply: strategy has the retainKeys strategy, so the patch lists what stays.
    let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
    let mut expected = deployment();
    expected["spec"]["strategy"] = json!({"type": "Recreate"});
    check_kind("Deployment", "strategy via $retainKeys", deployment(), patch, expected.clone());
    // What the docs tell `kubectl patch` users to send.
    let patch = json!({"spec": {"strategy": {"rollingUpdate": null, "type": "Recreate"}}});
    check_kind("Deployment", "strategy via null", deployment(), patch, expected);
}

#[test]
fn labels_annotations_finalizers_owner_references() {
    let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1", "b": "2"},
        "finalizers": ["x.io/one", "x.io/two"], "ownerReferences": [{"uid": "u1", "name": "o1", "kind": "Foo"}]},
        "data": {"k": "v"}});
    check_kind(
        "ConfigMap",
        "kubectl label",
        cm.clone(),
        json!({"metadata": {"labels": {"b": null, "c": "3"}}}),
        json!({"kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1", "c": "3"},
            "finalizers": ["x.io/one", "x.io/two"], "ownerReferences": [{"uid": "u1", "name": "o1", "kind": "Foo"}]}, "data": {"k": "v"}}),
    );
    let mut expected = cm.clone();
    expected["metadata"]["finalizers"] = json!(["x.io/three", "x.io/one", "x.io/two"]);
    check_kind(
        "ConfigMap",
        "add finalizer",
        cm.clone(),
        json!({"metadata": {"finalizers": ["x.io/three", "x.io/one"]}}),
        expected,
    );

    let mut expected = cm.clone();
    expected["metadata"]["finalizers"] = json!(["x.io/two"]);
    check_kind(
        "ConfigMap",
        "remove finalizer",
        cm.clone(),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x.io/one"]}}),
        expected,
    );

    let mut expected = cm.clone();
    expected["metadata"].as_object_mut().unwrap().remove("finalizers");
    check_kind("ConfigMap", "clear finalizers", cm.clone(), json!({"metadata": {"finalizers": null}}), expected);

    let mut expected = cm.clone();
    expected["metadata"]["ownerReferences"] = json!([{"uid": "u2", "name": "o2", "kind": "Foo"}, {"uid": "u1", "name": "o1", "kind": "Foo", "controller": true}]);
    check_kind(
        "ConfigMap",
        "owner references merge by uid",
        cm.clone(),
        json!({"metadata": {"ownerReferences": [{"uid": "u2", "name": "o2", "kind": "Foo"}, {"uid": "u1", "controller": true}]}}),
        expected,
    );

    let mut expected = cm.clone();
    expected["data"] = json!({"k": "v", "k2": "v2"});
    check_kind("ConfigMap", "data merges as a map", cm, json!({"data": {"k2": "v2"}}), expected);
}

#[test]
fn kubelet_node_status() {
    let node = json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {"podCIDR": "10.0.0.0/24", "podCIDRs": ["10.0.0.0/24"],
        "taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t0"},
            {"type": "Ready", "status": "False", "lastHeartbeatTime": "t0", "reason": "KubeletNotReady"}],
          "addresses": [{"type": "InternalIP", "address": "10.1.1.1"}, {"type": "Hostname", "address": "n1"}]}});
    let patch = json!({"status": {
        "$setElementOrder/conditions": [{"type": "MemoryPressure"}, {"type": "Ready"}],
        "conditions": [{"type": "MemoryPressure", "lastHeartbeatTime": "t1"},
                       {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1", "reason": "KubeletReady"}],
        "addresses": [{"type": "InternalIP", "address": "10.1.1.2"}]}});
    let mut expected = node.clone();
    expected["status"]["conditions"] = json!([
        {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "t1"},
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "t1", "reason": "KubeletReady"}]);
    expected["status"]["addresses"] =
        json!([{"type": "InternalIP", "address": "10.1.1.2"}, {"type": "Hostname", "address": "n1"}]);
    check_kind("Node", "kubelet heartbeat", node.clone(), patch, expected);

    // Taints carry no strategy: replaced. podCIDRs is a set.
    let patch = json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}], "podCIDRs": ["fd00::/64"]}});
    let mut expected = node.clone();
    expected["spec"]["taints"] = json!([{"key": "b", "effect": "NoExecute"}]);
    expected["spec"]["podCIDRs"] = json!(["fd00::/64", "10.0.0.0/24"]);
    check_kind("Node", "taints and podCIDRs", node, patch, expected);
}

#[test]
fn kubelet_pod_status() {
    let pod = json!({"kind": "Pod", "metadata": {"uid": "u"}, "spec": {"containers": [{"name": "c"}]},
        "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}],
                   "podIPs": [{"ip": "10.0.0.5"}]}});
    let patch = json!({"metadata": {"uid": "u"}, "status": {
        "$setElementOrder/conditions": [{"type": "Initialized"}, {"type": "Ready"}, {"type": "PodScheduled"}],
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "c", "ready": true, "volumeMounts": [{"mountPath": "/a", "name": "v"}]}],
        "phase": "Running"}});
    let mut expected = pod.clone();
    expected["status"] = json!({"phase": "Running",
        "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "c", "ready": true, "volumeMounts": [{"mountPath": "/a", "name": "v"}]}],
        "podIPs": [{"ip": "10.0.0.5"}]});
    check_kind("Pod", "kubelet status", pod, patch, expected);
}

#[test]
fn service_ports_merge_by_port() {
    let svc = json!({"kind": "Service", "spec": {"type": "NodePort", "selector": {"app": "a"},
        "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}});
    let patch = json!({"spec": {"ports": [{"port": 80, "nodePort": 30081}, {"name": "https", "port": 443, "targetPort": 8443}]}});
    let mut expected = svc.clone();
    expected["spec"]["ports"] = json!([{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30081},
        {"name": "https", "port": 443, "targetPort": 8443}]);
    check_kind("Service", "service ports", svc, patch, expected);
}

#[test]
fn other_built_in_rules() {
    let pdb = json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}, "matchExpressions": [{"key": "k", "operator": "Exists"}]}}});
    check_kind(
        "PodDisruptionBudget",
        "pdb selector is replaced",
        pdb,
        json!({"spec": {"selector": {"matchLabels": {"app": "b"}}}}),
        json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "b"}}}}),
    );
    let pod = json!({"spec": {"imagePullSecrets": [{"name": "a"}], "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["x"]}],
        "initContainers": [{"name": "init", "image": "i:1"}], "ephemeralContainers": [{"name": "debug", "image": "d:1"}]}});
    check_kind(
        "Pod",
        "pod spec merge lists",
        pod,
        json!({"spec": {"imagePullSecrets": [{"name": "b"}], "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["y"]}],
            "initContainers": [{"name": "init", "image": "i:2"}], "ephemeralContainers": [{"name": "debug2", "image": "d:2"}]}}),
        json!({"spec": {"imagePullSecrets": [{"name": "b"}, {"name": "a"}], "hostAliases": [{"ip": "1.1.1.1", "hostnames": ["y"]}],
            "initContainers": [{"name": "init", "image": "i:2"}],
            "ephemeralContainers": [{"name": "debug2", "image": "d:2"}, {"name": "debug", "image": "d:1"}]}}),
    );
    let wh = json!({"webhooks": [{"name": "w1", "matchConditions": [{"name": "m", "expression": "true"}]}]});
    check_kind(
        "ValidatingWebhookConfiguration",
        "webhooks and match conditions merge by name",
        wh,
        json!({"webhooks": [{"name": "w1", "matchConditions": [{"name": "m2", "expression": "false"}]}]}),
        json!({"webhooks": [{"name": "w1", "matchConditions": [{"name": "m2", "expression": "false"}, {"name": "m", "expression": "true"}]}]}),
    );
    // A kind without a table (e.g. a custom resource): lists are replaced.
    check_kind(
        "Widget",
        "unknown kinds replace lists",
        json!({"spec": {"containers": [{"name": "a"}]}}),
        json!({"spec": {"containers": [{"name": "b"}]}}),
        json!({"spec": {"containers": [{"name": "b"}]}}),
    );
}
