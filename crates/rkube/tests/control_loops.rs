//! The scheduler and the controller manager on simulated nodes, driven by the real kubectl
//! binaries against a real `rkube server --simulated-nodes 3`: Deployments roll out, scale,
//! roll back and are garbage-collected; pods are placed by resources, taints, cordons and
//! anti-affinity, and ones that fit nowhere say why.

mod common;

use std::time::{Duration, Instant};

use common::ServerProcess;
use serde_json::Value;

const KUBECTL_OLD: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

fn server(dir: &std::path::Path) -> ServerProcess {
    ServerProcess::start_with(dir, &["--simulated-nodes", "3", "--simulated-node-capacity", "cpu=4,memory=8Gi,pods=20"])
}

fn apply(server: &ServerProcess, dir: &std::path::Path, name: &str, manifest: &str) -> String {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    server.ok(KUBECTL, &["apply", "-f", file.to_str().unwrap()])
}

fn json(server: &ServerProcess, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&server.ok(KUBECTL, &args)).unwrap()
}

/// Polls until `check` holds, failing with the last value after `timeout`.
fn eventually<T: std::fmt::Debug>(timeout: Duration, mut probe: impl FnMut() -> T, check: impl Fn(&T) -> bool) -> T {
    let start = Instant::now();
    loop {
        let value = probe();
        if check(&value) {
            return value;
        }
        assert!(start.elapsed() < timeout, "still not there after {timeout:?}: {value:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// (phase, node) of every pod matching the selector.
fn pods(server: &ServerProcess, selector: &str) -> Vec<(String, String)> {
    let list = json(server, &["get", "pods", "-l", selector]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (p["status"]["phase"].as_str().unwrap_or("").to_owned(), p["spec"]["nodeName"].as_str().unwrap_or("").to_owned())
        })
        .collect()
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  strategy:
    rollingUpdate: {maxSurge: 3, maxUnavailable: 2}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"#;

#[test]
fn a_deployment_runs_scales_rolls_back_and_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    let nodes = server.ok(KUBECTL, &["get", "nodes", "-l", "rkube.io/simulated=true"]);
    assert_eq!(nodes.lines().filter(|l| l.contains(" Ready ")).count(), 3, "{nodes}");
    let statuses = server.ok(KUBECTL, &["get", "componentstatuses"]);
    assert_eq!(statuses.matches("Healthy").count(), 3, "{statuses}");

    apply(&server, dir.path(), "web", WEB);
    let rolled = server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=30s"]);
    assert!(rolled.contains("successfully rolled out"), "{rolled}");
    let placed = pods(&server, "app=web");
    assert_eq!(placed.len(), 3);
    assert!(placed.iter().all(|(phase, node)| phase == "Running" && node.starts_with("rkube-sim-")), "{placed:?}");

    server.ok(KUBECTL_OLD, &["scale", "deployment", "web", "--replicas=10"]);
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=30s"]);
    let ready = server.ok(KUBECTL, &["get", "deployment", "web"]);
    assert!(ready.contains("10/10"), "{ready}");

    // A new image: at least 10 - maxUnavailable (2) pods stay available, and no more than
    // 10 + maxSurge (3) exist, at every moment we look.
    server.ok(KUBECTL, &["set", "image", "deployment/web", "nginx=nginx:1.26"]);
    let start = Instant::now();
    loop {
        let d = json(&server, &["get", "deployment", "web"]);
        let status = &d["status"];
        let available = status["availableReplicas"].as_i64().unwrap_or(0);
        let total = status["replicas"].as_i64().unwrap_or(0);
        assert!(available >= 8, "maxUnavailable broken: {status}");
        assert!(total <= 13, "maxSurge broken: {status}");
        let done = d["metadata"]["generation"] == status["observedGeneration"]
            && status["updatedReplicas"] == 10
            && total == 10
            && available == 10;
        if done {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "rollout did not finish: {status}");
    }
    let history = server.ok(KUBECTL, &["rollout", "history", "deployment/web"]);
    assert!(history.contains("1 ") && history.contains("2 "), "{history}");
    let sets_before = json(&server, &["get", "replicasets", "-l", "app=web"])["items"].as_array().unwrap().len();
    assert_eq!(sets_before, 2);

    server.ok(KUBECTL, &["rollout", "undo", "deployment/web"]);
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=30s"]);
    let d = json(&server, &["get", "deployment", "web"]);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.25");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
    // The first ReplicaSet came back; no third one was made.
    let sets = json(&server, &["get", "replicasets", "-l", "app=web"]);
    assert_eq!(sets["items"].as_array().unwrap().len(), 2, "{sets}");

    server.ok(KUBECTL_OLD, &["delete", "deployment", "web"]);
    eventually(Duration::from_secs(20), || pods(&server, "app=web").len(), |n| *n == 0);
    let left = server.ok(KUBECTL, &["get", "replicasets", "-l", "app=web", "-o", "name"]);
    assert!(left.trim().is_empty(), "{left}");
}

#[test]
fn pods_are_placed_by_resources_taints_cordons_and_anti_affinity() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    eventually(Duration::from_secs(10), || server.ok(KUBECTL, &["get", "nodes", "-o", "name"]).lines().count(), |n| *n == 3);

    // Too big for any node: the pod says why, in upstream's words.
    server.ok(KUBECTL, &["run", "big", "--image=busybox", "--overrides",
        r#"{"spec":{"containers":[{"name":"big","image":"busybox","resources":{"requests":{"cpu":"5"}}}]}}"#]);
    let message = eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "pod", "big", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}"]),
        |m| !m.is_empty(),
    );
    assert_eq!(message, "0/3 nodes are available: 3 Insufficient cpu.");
    let events = eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "events", "--field-selector", "involvedObject.name=big,reason=FailedScheduling"]),
        |e| e.contains("Insufficient cpu"),
    );
    assert!(events.contains("Warning"), "{events}");

    // Anti-affinity spreads three replicas over three nodes; a fourth fits nowhere.
    apply(&server, dir.path(), "spread", r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 4
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: spread}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: busybox}]
"#);
    let placed = eventually(
        Duration::from_secs(20),
        || pods(&server, "app=spread"),
        |p| p.len() == 4 && p.iter().filter(|(phase, _)| phase == "Running").count() == 3,
    );
    let mut nodes: Vec<&String> = placed.iter().map(|(_, n)| n).filter(|n| !n.is_empty()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "{placed:?}");
    let pending = json(&server, &["get", "pods", "-l", "app=spread", "--field-selector", "status.phase=Pending"]);
    let message = eventually(
        Duration::from_secs(10),
        || {
            let name = pending["items"][0]["metadata"]["name"].as_str().unwrap().to_owned();
            server.ok(KUBECTL, &["get", "pod", &name, "-o", "jsonpath={.status.conditions[0].message}"])
        },
        |m| !m.is_empty(),
    );
    assert_eq!(message, "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.");
    server.ok(KUBECTL, &["delete", "deployment", "spread"]);

    // Cordon two nodes and taint the third: only a tolerating pod lands, on the third.
    server.ok(KUBECTL_OLD, &["cordon", "rkube-sim-0"]);
    server.ok(KUBECTL, &["cordon", "rkube-sim-1"]);
    server.ok(KUBECTL, &["taint", "nodes", "rkube-sim-2", "dedicated=db:NoSchedule"]);
    server.ok(KUBECTL, &["run", "plain", "--image=busybox"]);
    let message = eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "pod", "plain", "-o", "jsonpath={.status.conditions[0].message}"]),
        |m| !m.is_empty(),
    );
    assert_eq!(message, "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 node(s) were unschedulable.");
    server.ok(KUBECTL, &["run", "tolerant", "--image=busybox", "--overrides",
        r#"{"spec":{"tolerations":[{"key":"dedicated","operator":"Equal","value":"db","effect":"NoSchedule"}]}}"#]);
    eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "pod", "tolerant", "-o", "jsonpath={.status.phase}/{.spec.nodeName}"]),
        |s| s == "Running/rkube-sim-2",
    );
    // Uncordoning lets the waiting pod in, without anyone touching it.
    server.ok(KUBECTL, &["uncordon", "rkube-sim-0"]);
    eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "pod", "plain", "-o", "jsonpath={.status.phase}/{.spec.nodeName}"]),
        |s| s == "Running/rkube-sim-0",
    );

    // Drain evicts what a ReplicaSet owns, which comes back elsewhere.
    server.ok(KUBECTL, &["uncordon", "rkube-sim-1"]);
    server.ok(KUBECTL, &["delete", "pod", "plain", "tolerant", "big"]);
    apply(&server, dir.path(), "drained", &WEB.replace("name: web", "name: drained").replace("app: web", "app: drained"));
    server.ok(KUBECTL, &["rollout", "status", "deployment/drained", "--timeout=30s"]);
    server.ok(KUBECTL, &["drain", "rkube-sim-0", "--ignore-daemonsets", "--timeout=30s"]);
    let placed = eventually(
        Duration::from_secs(20),
        || pods(&server, "app=drained"),
        |p| p.len() == 3 && p.iter().all(|(phase, node)| phase == "Running" && node != "rkube-sim-0"),
    );
    assert_eq!(placed.len(), 3);
}
