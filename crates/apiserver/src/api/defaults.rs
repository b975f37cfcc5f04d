//! Upstream's defaulting: the fields the API server fills in when a client leaves them out
//! (`pkg/apis/*/v1/defaults.go`, plus the admission plugins every cluster runs:
//! ServiceAccount, DefaultTolerationSeconds, Priority). Each function is idempotent, because
//! it runs on every create and update.

use serde_json::{Value, json};

/// Sets `object[field]` to `value` unless it holds something already.
fn or(object: &mut Value, field: &str, value: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object[field] = value;
    }
}

/// Applies `f` to each item of the list `object[field]`, if there is one. (Indexing with
/// `object[field]` would insert a null where the field is absent.)
fn each(object: &mut Value, field: &str, f: impl Fn(&mut Value)) {
    if let Some(items) = object.get_mut(field).and_then(Value::as_array_mut) {
        items.iter_mut().for_each(f);
    }
}

pub(super) fn namespace(object: &mut Value) {
    let name = object["metadata"]["name"].clone();
    object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
    or(&mut object["spec"], "finalizers", json!(["kubernetes"]));
    or(&mut object["status"], "phase", json!("Active"));
}

pub(super) fn secret(object: &mut Value) {
    if object["type"].as_str().is_none_or(str::is_empty) {
        object["type"] = json!("Opaque");
    }
}

/// A pod: the pod spec's defaults, what admission adds, and the status a new pod starts with.
pub(super) fn pod(object: &mut Value) {
    let spec = &mut object["spec"];
    pod_spec(spec);
    or(spec, "enableServiceLinks", json!(true));
    // A limit without a request is also the request (SetDefaults_Pod).
    for list in ["initContainers", "containers"] {
        each(spec, list, |c| {
            let limits = c["resources"]["limits"].clone();
            for (resource, limit) in limits.as_object().into_iter().flatten() {
                or(&mut c["resources"]["requests"], resource, limit.clone());
            }
        });
    }
    or(spec, "serviceAccountName", json!("default"));
    // The deprecated field mirrors the current one, as v1 conversion does.
    spec["serviceAccount"] = spec["serviceAccountName"].clone();
    or(spec, "priority", json!(0));
    or(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    default_tolerations(spec);
    let status = &mut object["status"];
    or(status, "phase", json!("Pending"));
    let qos = qos_class(&object["spec"]);
    or(&mut object["status"], "qosClass", json!(qos));
}

/// DefaultTolerationSeconds: a pod rides out a not-ready or unreachable node for five minutes.
fn default_tolerations(spec: &mut Value) {
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        let tolerations = spec["tolerations"].as_array_mut().expect("made an array above");
        let covered = tolerations.iter().any(|t| {
            let effect = t["effect"].as_str().unwrap_or("");
            (t["key"] == key || t["key"].is_null() && t["operator"] == "Exists")
                && (effect.is_empty() || effect == "NoExecute")
        });
        if !covered {
            tolerations.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300
            }));
        }
    }
}

/// Upstream's QoS class: Guaranteed when every container limits and requests cpu and memory
/// equally, BestEffort when none asks for anything, Burstable otherwise.
pub(super) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> =
        ["initContainers", "containers"].iter().filter_map(|f| spec[f].as_array()).flatten().collect();
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        let requests = &container["resources"]["requests"];
        let limits = &container["resources"]["limits"];
        for resource in ["cpu", "memory"] {
            let (request, limit) = (&requests[resource], &limits[resource]);
            any |= !request.is_null() || !limit.is_null();
            // Requests default to limits, so a limit alone is enough for Guaranteed.
            if limit.is_null() || (!request.is_null() && request != limit) {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed && !containers.is_empty()) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// SetDefaults_PodSpec and its containers and volumes: what a pod template gets too.
pub(super) fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    or(spec, "restartPolicy", json!("Always"));
    or(spec, "dnsPolicy", json!("ClusterFirst"));
    or(spec, "terminationGracePeriodSeconds", json!(30));
    or(spec, "securityContext", json!({}));
    or(spec, "schedulerName", json!("default-scheduler"));
    for field in ["initContainers", "containers", "ephemeralContainers"] {
        each(spec, field, container);
    }
    each(spec, "volumes", volume);
}

fn container(c: &mut Value) {
    or(c, "terminationMessagePath", json!("/dev/termination-log"));
    or(c, "terminationMessagePolicy", json!("File"));
    or(c, "resources", json!({}));
    let image = c["image"].as_str().unwrap_or_default();
    or(c, "imagePullPolicy", json!(pull_policy(image)));
    each(c, "ports", |p| or(p, "protocol", json!("TCP")));
    each(c, "env", |e| {
        if e["valueFrom"]["fieldRef"].is_object() {
            or(&mut e["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c[probe].is_object() {
            let p = &mut c[probe];
            or(p, "timeoutSeconds", json!(1));
            or(p, "periodSeconds", json!(10));
            or(p, "successThreshold", json!(1));
            or(p, "failureThreshold", json!(3));
            if p["httpGet"].is_object() {
                or(&mut p["httpGet"], "path", json!("/"));
                or(&mut p["httpGet"], "scheme", json!("HTTP"));
            }
        }
    }
}

/// `Always` for `:latest` or an untagged image, else `IfNotPresent`.
pub(super) fn pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn volume(v: &mut Value) {
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if v[source].is_object() {
            or(&mut v[source], "defaultMode", json!(420));
        }
    }
    if v["hostPath"].is_object() {
        or(&mut v["hostPath"], "type", json!(""));
    }
    if v["emptyDir"].is_null() && only_name(v) {
        // A volume with no source is an emptyDir, as upstream defaults it.
        v["emptyDir"] = json!({});
    }
}

fn only_name(v: &Value) -> bool {
    v.as_object().is_some_and(|m| m.keys().all(|k| k == "name"))
}

/// Defaults the pod template at JSON pointer `at` (such as `/spec/template`), if present.
fn template(object: &mut Value, at: &str) {
    if let Some(spec) = object.pointer_mut(&format!("{at}/spec")) {
        pod_spec(spec);
    }
}

pub(super) fn pod_template(object: &mut Value) {
    template(object, "/template");
}

pub(super) fn replication_controller(object: &mut Value) {
    let spec = &mut object["spec"];
    or(spec, "replicas", json!(1));
    let labels = spec["template"]["metadata"]["labels"].clone();
    if labels.is_object() {
        or(spec, "selector", labels.clone());
        or(&mut object["metadata"], "labels", labels);
    }
    template(object, "/spec/template");
}

pub(super) fn deployment(object: &mut Value) {
    let spec = &mut object["spec"];
    or(spec, "replicas", json!(1));
    or(spec, "revisionHistoryLimit", json!(10));
    or(spec, "progressDeadlineSeconds", json!(600));
    or(&mut spec["strategy"], "type", json!("RollingUpdate"));
    if spec["strategy"]["type"] == "RollingUpdate" {
        let rolling = &mut spec["strategy"]["rollingUpdate"];
        or(rolling, "maxUnavailable", json!("25%"));
        or(rolling, "maxSurge", json!("25%"));
    }
    template(object, "/spec/template");
}

pub(super) fn replica_set(object: &mut Value) {
    or(&mut object["spec"], "replicas", json!(1));
    template(object, "/spec/template");
}

pub(super) fn stateful_set(object: &mut Value) {
    let spec = &mut object["spec"];
    or(spec, "replicas", json!(1));
    or(spec, "podManagementPolicy", json!("OrderedReady"));
    or(spec, "revisionHistoryLimit", json!(10));
    or(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        or(&mut spec["updateStrategy"]["rollingUpdate"], "partition", json!(0));
    }
    let retention = &mut spec["persistentVolumeClaimRetentionPolicy"];
    or(retention, "whenDeleted", json!("Retain"));
    or(retention, "whenScaled", json!("Retain"));
    each(spec, "volumeClaimTemplates", |claim| {
        or(&mut claim["spec"], "volumeMode", json!("Filesystem"));
        or(&mut claim["status"], "phase", json!("Pending"));
    });
    template(object, "/spec/template");
}

pub(super) fn daemon_set(object: &mut Value) {
    // The v1 face of the internal template generation, which upstream still sets.
    or(&mut object["metadata"]["annotations"], "deprecated.daemonset.template.generation", json!("1"));
    let spec = &mut object["spec"];
    or(spec, "revisionHistoryLimit", json!(10));
    or(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
    if spec["updateStrategy"]["type"] == "RollingUpdate" {
        let rolling = &mut spec["updateStrategy"]["rollingUpdate"];
        or(rolling, "maxUnavailable", json!(1));
        or(rolling, "maxSurge", json!(0));
    }
    template(object, "/spec/template");
}

/// A job: defaults, and the selector and labels that tie its pods to it (by uid, so a
/// re-created job of the same name never adopts the old one's pods).
pub(super) fn job(object: &mut Value) {
    let uid = object["metadata"]["uid"].clone();
    let name = object["metadata"]["name"].clone();
    job_spec(&mut object["spec"]);
    or(&mut object["spec"], "manualSelector", json!(false));
    let spec = &mut object["spec"];
    if spec["manualSelector"] != json!(true) && uid.is_string() {
        let labels = &mut spec["template"]["metadata"]["labels"];
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            or(labels, key, value.clone());
        }
        or(spec, "selector", json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
    }
    // A job without labels of its own shows its pods' labels.
    if object["metadata"]["labels"].as_object().is_none_or(|l| l.is_empty()) {
        let labels = object["spec"]["template"]["metadata"]["labels"].clone();
        if labels.is_object() {
            object["metadata"]["labels"] = labels;
        }
    }
}

fn job_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    if spec["completions"].is_null() && spec["parallelism"].is_null() {
        spec["completions"] = json!(1);
    }
    or(spec, "parallelism", json!(1));
    or(spec, "backoffLimit", json!(6));
    or(spec, "completionMode", json!("NonIndexed"));
    or(spec, "suspend", json!(false));
    or(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    template(spec, "/template");
}

pub(super) fn cron_job(object: &mut Value) {
    let spec = &mut object["spec"];
    or(spec, "concurrencyPolicy", json!("Allow"));
    or(spec, "suspend", json!(false));
    or(spec, "successfulJobsHistoryLimit", json!(3));
    or(spec, "failedJobsHistoryLimit", json!(1));
    template(object, "/spec/jobTemplate/spec/template");
}

pub(super) fn service(object: &mut Value) {
    let spec = &mut object["spec"];
    or(spec, "type", json!("ClusterIP"));
    or(spec, "sessionAffinity", json!("None"));
    let kind = spec["type"].as_str().unwrap_or_default().to_owned();
    each(spec, "ports", |p| {
        or(p, "protocol", json!("TCP"));
        if p["targetPort"].is_null() || p["targetPort"] == json!(0) || p["targetPort"] == json!("") {
            p["targetPort"] = p["port"].clone();
        }
    });
    if kind != "ExternalName" {
        or(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        or(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        or(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec["sessionAffinity"] == "ClientIP" {
        or(&mut spec["sessionAffinityConfig"]["clientIP"], "timeoutSeconds", json!(10800));
    }
    or(&mut object["status"], "loadBalancer", json!({}));
}

pub(super) fn persistent_volume(object: &mut Value) {
    or(&mut object["spec"], "persistentVolumeReclaimPolicy", json!("Retain"));
    or(&mut object["spec"], "volumeMode", json!("Filesystem"));
    or(&mut object["status"], "phase", json!("Pending"));
}

pub(super) fn persistent_volume_claim(object: &mut Value) {
    or(&mut object["spec"], "volumeMode", json!("Filesystem"));
    or(&mut object["status"], "phase", json!("Pending"));
}

pub(super) fn horizontal_pod_autoscaler(object: &mut Value) {
    or(&mut object["spec"], "minReplicas", json!(1));
}

pub(super) fn priority_class(object: &mut Value) {
    or(object, "preemptionPolicy", json!("PreemptLowerPriority"));
}

pub(super) fn storage_class(object: &mut Value) {
    or(object, "reclaimPolicy", json!("Delete"));
    or(object, "volumeBindingMode", json!("Immediate"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        for (image, policy) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("registry:5000/app", "Always"),
            ("registry:5000/app:v2", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), policy, "{image}");
        }
    }

    #[test]
    fn a_pod_gets_upstream_defaults_once() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}}}
        ]}});
        super::pod(&mut pod);
        let again = {
            let mut p = pod.clone();
            super::pod(&mut p);
            p
        };
        assert_eq!(pod, again, "defaulting is idempotent");
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
    }

    #[test]
    fn qos_classes() {
        let with = |resources: Value| json!({"containers": [{"resources": resources}]});
        assert_eq!(qos_class(&with(json!({}))), "BestEffort");
        assert_eq!(qos_class(&with(json!({"requests": {"cpu": "1"}}))), "Burstable");
        let equal = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        assert_eq!(qos_class(&with(equal)), "Guaranteed");
    }

    #[test]
    fn a_deployment_gets_rolling_update_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
        deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        assert!(d["spec"]["template"]["spec"].get("serviceAccountName").is_none(), "admission is for pods only");
    }
}
