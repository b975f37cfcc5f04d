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
            (
                p["status"]["phase"].as_str().unwrap_or("").to_owned(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
            )
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
    eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "nodes", "-o", "name"]).lines().count(),
        |n| *n == 3,
    );

    // Too big for any node: the pod says why, in upstream's words.
    server.ok(
        KUBECTL,
        &[
            "run",
            "big",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"containers":[{"name":"big","image":"busybox","resources":{"requests":{"cpu":"5"}}}]}}"#,
        ],
    );
    let message = eventually(
        Duration::from_secs(10),
        || {
            server.ok(
                KUBECTL,
                &["get", "pod", "big", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}"],
            )
        },
        |m| !m.is_empty(),
    );
    assert_eq!(message, "0/3 nodes are available: 3 Insufficient cpu.");
    let events = eventually(
        Duration::from_secs(10),
        || {
            server
                .ok(KUBECTL, &["get", "events", "--field-selector", "involvedObject.name=big,reason=FailedScheduling"])
        },
        |e| e.contains("Insufficient cpu"),
    );
    assert!(events.contains("Warning"), "{events}");

    // Anti-affinity spreads three replicas over three nodes; a fourth fits nowhere.
    apply(
        &server,
        dir.path(),
        "spread",
        r#"
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
"#,
    );
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
    assert_eq!(
        message,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 2 node(s) were unschedulable."
    );
    server.ok(
        KUBECTL,
        &[
            "run",
            "tolerant",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"tolerations":[{"key":"dedicated","operator":"Equal","value":"db","effect":"NoSchedule"}]}}"#,
        ],
    );
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
    apply(
        &server,
        dir.path(),
        "drained",
        &WEB.replace("name: web", "name: drained").replace("app: web", "app: drained"),
    );
    server.ok(KUBECTL, &["rollout", "status", "deployment/drained", "--timeout=30s"]);
    server.ok(KUBECTL, &["drain", "rkube-sim-0", "--ignore-daemonsets", "--timeout=30s"]);
    let placed = eventually(
        Duration::from_secs(20),
        || pods(&server, "app=drained"),
        |p| p.len() == 3 && p.iter().all(|(phase, node)| phase == "Running" && node != "rkube-sim-0"),
    );
    assert_eq!(placed.len(), 3);
}

#[test]
fn jobs_statefulsets_daemonsets_and_service_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    apply(
        &server,
        dir.path(),
        "work",
        r#"
apiVersion: batch/v1
kind: Job
metadata: {name: indexed}
spec:
  completions: 3
  parallelism: 2
  completionMode: Indexed
  template:
    metadata: {annotations: {rkube.io/simulated-duration: 500ms}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 0
  template:
    metadata: {annotations: {rkube.io/simulated-duration: 200ms, rkube.io/simulated-exit-code: "3"}}
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, image: busybox, ports: [{name: sql, containerPort: 5432}]}]}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  selector: {app: db}
  ports: [{port: 5432, targetPort: sql}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 2
  selector: {app: legacy}
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: db}}
"#,
    );
    // The StatefulSet comes up in order: a pod exists only once every lower ordinal is
    // Running and Ready.
    let start = Instant::now();
    loop {
        let list = json(&server, &["get", "pods", "-l", "app=db"]);
        let pods = list["items"].as_array().unwrap();
        let ready = |p: &Value| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        };
        let mut ordinals: Vec<(i64, bool)> =
            pods.iter().map(|p| (p["metadata"]["name"].as_str().unwrap()[3..].parse().unwrap(), ready(p))).collect();
        ordinals.sort();
        for (i, (ordinal, _)) in ordinals.iter().enumerate() {
            assert_eq!(*ordinal, i as i64, "ordinals must be a prefix: {ordinals:?}");
            if i > 0 {
                assert!(ordinals[i - 1].1, "db-{i} exists before db-{} is ready: {ordinals:?}", i - 1);
            }
        }
        if ordinals.len() == 3 && ordinals.iter().all(|(_, r)| *r) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{ordinals:?}");
    }
    server.ok(KUBECTL_OLD, &["rollout", "status", "statefulset/db", "--timeout=30s"]);
    let claims = server.ok(KUBECTL, &["get", "pvc", "-o", "name"]);
    for i in 0..3 {
        assert!(claims.contains(&format!("persistentvolumeclaim/data-db-{i}")), "{claims}");
    }
    // The service's endpoints are the pods, at the named target port.
    let endpoints = eventually(
        Duration::from_secs(10),
        || json(&server, &["get", "endpoints", "db"]),
        |e| e["subsets"][0]["addresses"].as_array().is_some_and(|a| a.len() == 3),
    );
    assert_eq!(endpoints["subsets"][0]["ports"][0]["port"], 5432);
    let slices = server.ok(KUBECTL, &["get", "endpointslices", "-l", "kubernetes.io/service-name=db"]);
    assert!(slices.contains("5432"), "{slices}");
    let budget = eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "pdb", "db", "-o", "jsonpath={.status.disruptionsAllowed}"]),
        |a| a == "1",
    );
    assert_eq!(budget, "1");

    // One daemon per node.
    server.ok(KUBECTL, &["rollout", "status", "daemonset/agent", "--timeout=30s"]);
    let mut nodes: Vec<String> = pods(&server, "app=agent").into_iter().map(|(_, node)| node).collect();
    nodes.sort();
    assert_eq!(nodes, ["rkube-sim-0", "rkube-sim-1", "rkube-sim-2"]);

    // Jobs: an Indexed one completes every index, a failing one stops at its backoff limit.
    server.ok(KUBECTL_OLD, &["wait", "--for=condition=complete", "job/indexed", "--timeout=30s"]);
    let job = json(&server, &["get", "job", "indexed"]);
    assert_eq!(
        (job["status"]["succeeded"].as_i64(), job["status"]["completedIndexes"].as_str()),
        (Some(3), Some("0-2"))
    );
    server.ok(KUBECTL, &["wait", "--for=condition=failed", "job/failing", "--timeout=30s"]);
    let failed = json(&server, &["get", "job", "failing"]);
    let reasons: Vec<&str> =
        failed["status"]["conditions"].as_array().unwrap().iter().filter_map(|c| c["reason"].as_str()).collect();
    assert!(reasons.contains(&"BackoffLimitExceeded"), "{failed}");

    // A ReplicationController keeps its count, as a ReplicaSet does.
    eventually(
        Duration::from_secs(20),
        || pods(&server, "app=legacy"),
        |p| p.len() == 2 && p.iter().all(|(phase, _)| phase == "Running"),
    );
    server.ok(KUBECTL_OLD, &["scale", "rc", "legacy", "--replicas=1"]);
    eventually(Duration::from_secs(20), || pods(&server, "app=legacy").len(), |n| *n == 1);
    let rc = json(&server, &["get", "rc", "legacy"]);
    assert_eq!(rc["status"]["readyReplicas"], 1, "{rc}");

    // Every new namespace gets a default service account.
    server.ok(KUBECTL, &["create", "namespace", "fresh"]);
    eventually(
        Duration::from_secs(10),
        || server.kubectl(KUBECTL, &["-n", "fresh", "get", "serviceaccount", "default"]).status.success(),
        |ok| *ok,
    );
}

#[test]
fn a_cronjob_fires_on_its_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    server.ok(KUBECTL, &["create", "cronjob", "tick", "--image=busybox", "--schedule=* * * * *"]);
    // The first minute boundary comes within a minute.
    let jobs = eventually(
        Duration::from_secs(75),
        || json(&server, &["get", "jobs"]),
        |j| j["items"].as_array().is_some_and(|items| !items.is_empty()),
    );
    let job = &jobs["items"][0];
    assert!(job["metadata"]["name"].as_str().unwrap().starts_with("tick-"), "{job}");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let cron = json(&server, &["get", "cronjob", "tick"]);
    assert!(cron["status"]["lastScheduleTime"].is_string(), "{cron}");
    // Deleting the CronJob takes its Jobs along.
    server.ok(KUBECTL, &["delete", "cronjob", "tick"]);
    eventually(
        Duration::from_secs(20),
        || server.ok(KUBECTL, &["get", "jobs", "-o", "name"]),
        |out| out.trim().is_empty(),
    );
}

#[test]
fn a_stopped_node_loses_its_pods_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--simulated-nodes", "3", "--node-monitor-grace-period", "3"]);
    apply(
        &server,
        dir.path(),
        "web",
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]
      containers: [{name: c, image: busybox}]
"#,
    );
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=30s"]);
    let victim = pods(&server, "app=web")[0].1.clone();
    server.ok(KUBECTL, &["annotate", "node", &victim, "rkube.io/simulated-stopped=true"]);
    // The node goes NotReady and is tainted; its pod is evicted and replaced elsewhere.
    eventually(
        Duration::from_secs(20),
        || server.ok(KUBECTL, &["get", "node", &victim, "--no-headers"]),
        |line| line.split_whitespace().nth(1) == Some("NotReady"),
    );
    eventually(
        Duration::from_secs(10),
        || server.ok(KUBECTL, &["get", "node", &victim, "-o", "jsonpath={.spec.taints[*].key}"]),
        |taints| taints.contains("node.kubernetes.io/unreachable"),
    );
    eventually(
        Duration::from_secs(30),
        || {
            let list = json(&server, &["get", "pods", "-l", "app=web"]);
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
                .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        },
        |running| running.len() == 3 && !running.contains(&victim),
    );
    // Back again: Ready, untainted, and the pods it held are gone for good.
    server.ok(KUBECTL, &["annotate", "node", &victim, "rkube.io/simulated-stopped-"]);
    eventually(
        Duration::from_secs(20),
        || server.ok(KUBECTL, &["get", "node", &victim, "--no-headers"]),
        |line| line.split_whitespace().nth(1) == Some("Ready"),
    );
    eventually(Duration::from_secs(20), || pods(&server, "app=web").len(), |n| *n == 3);
    eventually(
        Duration::from_secs(20),
        || server.ok(KUBECTL, &["get", "node", &victim, "-o", "jsonpath={.spec.taints}"]),
        |t| t.is_empty() || t == "[]",
    );
}

/// SIGTERM stops a server whose loops are busy, promptly: its own watches failing as the API
/// server goes must not keep it alive (they once spun without backing off).
#[test]
fn sigterm_stops_a_busy_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server(dir.path());
    server.ok(KUBECTL, &["create", "deployment", "busy", "--image=busybox", "--replicas=40"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.terminate(Duration::from_secs(10)), "the server was still running 10 s after SIGTERM");
}

#[test]
fn rkube_simulate_joins_nodes_to_a_running_server_and_they_go_not_ready_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--node-monitor-grace-period", "4"]);
    // Killed when the test ends, whichever way it ends.
    struct Simulate(std::process::Child);
    impl Drop for Simulate {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut simulate = Simulate(
        std::process::Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args(["simulate", "--nodes", "2", "--prefix", "joined-", "--capacity", "cpu=2", "--kubeconfig"])
            .arg(server.kubeconfig())
            .spawn()
            .unwrap(),
    );
    let ready = |server: &ServerProcess| {
        let nodes = json(server, &["get", "nodes", "-l", "rkube.io/simulated=true"]);
        nodes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let ready = n["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
                (
                    n["metadata"]["name"].as_str().unwrap().to_owned(),
                    ready.map_or(String::new(), |c| c["status"].to_string()),
                )
            })
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(30),
        || ready(&server),
        |nodes| nodes.len() == 2 && nodes.iter().all(|(name, r)| name.starts_with("joined-") && r == "\"True\""),
    );
    assert_eq!(server.ok(KUBECTL, &["get", "node", "joined-0", "-o", "jsonpath={.status.capacity.cpu}"]), "2");
    server.ok(KUBECTL, &["create", "deployment", "web", "--image=busybox", "--replicas=2"]);
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=30s"]);
    // The nodes stop with the command, and the server notices.
    let _ = std::process::Command::new("kill").args(["-TERM", &simulate.0.id().to_string()]).status();
    let _ = simulate.0.wait();
    eventually(Duration::from_secs(30), || ready(&server), |nodes| nodes.iter().all(|(_, r)| r == "\"Unknown\""));
    // A bad kubeconfig is a clear error, not a hang.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["simulate", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kubeconfig"), "{out:?}");
}

#[test]
fn resource_quotas_refuse_what_would_exceed_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path());
    server.ok(KUBECTL, &["create", "namespace", "q"]);
    server.ok(KUBECTL, &["-n", "q", "create", "quota", "count", "--hard=pods=2"]);
    server.ok(KUBECTL, &["-n", "q", "create", "quota", "compute", "--hard=requests.cpu=1,requests.memory=1Gi"]);
    let pod = |name: &str, cpu: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: q}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: {cpu}, memory: 64Mi}}}}\n"
        )
    };
    apply(&server, dir.path(), "p1", &pod("p1", "500m"));
    // Over the CPU quota: the message is upstream's arithmetic.
    let file = dir.path().join("p2.yaml");
    std::fs::write(&file, pod("p2", "800m")).unwrap();
    let err = server.fails(KUBECTL, &["apply", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains(r#"pods "p2" is forbidden: exceeded quota: compute, requested: requests.cpu=800m, used: requests.cpu=500m, limited: requests.cpu=1"#),
        "{err}"
    );
    apply(&server, dir.path(), "p2", &pod("p2", "250m"));
    let file = dir.path().join("p3.yaml");
    std::fs::write(&file, pod("p3", "100m")).unwrap();
    for kubectl in [KUBECTL, KUBECTL_OLD] {
        let err = server.fails(kubectl, &["apply", "-f", file.to_str().unwrap()]);
        assert!(err.contains("exceeded quota: count, requested: pods=1, used: pods=2, limited: pods=2"), "{err}");
    }
    // Deleting a pod frees its share.
    server.ok(KUBECTL, &["-n", "q", "delete", "pod", "p1", "--grace-period=0", "--force"]);
    eventually(
        Duration::from_secs(20),
        || server.kubectl(KUBECTL, &["apply", "-f", file.to_str().unwrap()]).status.success(),
        |ok| *ok,
    );
}

/// PriorityClasses set pods' priorities at admission, and a pod that fits nowhere preempts
/// lower-priority pods: the fewest needed, on the node where they matter least. The victims
/// get upstream's condition and event, the preemptor is nominated to their node and runs
/// there once they are gone, and a pod of no higher priority does not take its place.
#[test]
fn higher_priority_pods_preempt_lower_ones() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(
        dir.path(),
        &["--simulated-nodes", "2", "--simulated-node-capacity", "cpu=2,memory=8Gi,pods=20"],
    );
    // The built-in classes exist; a made-up one is refused; a number given by hand is refused.
    let classes = server.ok(KUBECTL, &["get", "priorityclasses"]);
    assert!(classes.contains("system-node-critical") && classes.contains("2000001000"), "{classes}");
    let manifest = |name: &str, class: &str, cpu: &str| {
        let class = if class.is_empty() { String::new() } else { format!("  priorityClassName: {class}\n") };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{test: preempt}}}}\nspec:\n{class}  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: {cpu}}}}}\n"
        )
    };
    let file = dir.path().join("nope.yaml");
    std::fs::write(&file, manifest("nope", "made-up", "1")).unwrap();
    let err = server.fails(KUBECTL, &["apply", "-f", file.to_str().unwrap()]);
    assert!(err.contains(r#"pods "nope" is forbidden: no PriorityClass with name made-up was found"#), "{err}");
    std::fs::write(&file, manifest("nope", "", "1").replace("spec:\n", "spec:\n  priority: 7\n")).unwrap();
    let err = server.fails(KUBECTL, &["apply", "-f", file.to_str().unwrap()]);
    assert!(err.contains("the integer value of priority (7) must not be provided in pod spec"), "{err}");

    server.ok(KUBECTL, &["create", "priorityclass", "low", "--value=10"]);
    server.ok(KUBECTL, &["create", "priorityclass", "mid", "--value=50"]);
    server.ok(KUBECTL, &["create", "priorityclass", "high", "--value=1000"]);
    server.ok(KUBECTL, &["create", "priorityclass", "high-polite", "--value=1000", "--preemption-policy=Never"]);
    // Fill both 2-CPU nodes: one with low and mid pods, the other with mid pods.
    for (name, class) in [("low-1", "low"), ("mid-1", "mid"), ("mid-2", "mid"), ("mid-3", "mid")] {
        apply(&server, dir.path(), name, &manifest(name, class, "1"));
        eventually(
            Duration::from_secs(20),
            || pods(&server, "test=preempt"),
            |p| p.iter().all(|(phase, _)| phase == "Running"),
        );
    }
    let low_1 = json(&server, &["get", "pod", "low-1"]);
    assert_eq!(low_1["spec"]["priority"], 10);
    assert_eq!(low_1["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let low_node = low_1["spec"]["nodeName"].as_str().unwrap().to_owned();

    // `Never` waits rather than preempting.
    apply(&server, dir.path(), "polite", &manifest("polite", "high-polite", "1"));
    std::thread::sleep(Duration::from_secs(2));
    let polite = json(&server, &["get", "pod", "polite"]);
    assert!(polite["spec"]["nodeName"].is_null(), "{polite}");
    assert!(polite["status"]["nominatedNodeName"].is_null(), "{polite}");
    server.ok(KUBECTL, &["delete", "pod", "polite"]);

    // The high pod takes low-1's place: one victim, the least important.
    apply(&server, dir.path(), "high", &manifest("high", "high", "1"));
    let placed = eventually(
        Duration::from_secs(30),
        || json(&server, &["get", "pod", "high"]),
        |p| p["status"]["phase"] == "Running",
    );
    assert_eq!(placed["spec"]["nodeName"].as_str(), Some(low_node.as_str()), "{placed}");
    assert!(server.kubectl(KUBECTL, &["get", "pod", "low-1"]).stderr.starts_with(b"Error from server (NotFound)"));
    let survivors: Vec<String> = json(&server, &["get", "pods"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(survivors, ["high", "mid-1", "mid-2", "mid-3"]);
    let events = server.ok(KUBECTL, &["get", "events", "--field-selector", "reason=Preempted"]);
    assert!(events.contains("pod/low-1") && events.contains(&format!("on node {low_node}")), "{events}");
    // One preemption, not one per retry of the preemptor.
    let preempted = json(&server, &["get", "events", "--field-selector", "reason=Preempted"]);
    assert_eq!(preempted["items"].as_array().unwrap().len(), 1, "{preempted}");

    // A PodDisruptionBudget weighs more than priority: the other node is emptied and refilled
    // with low pods under a budget that allows no disruption, so the next preemption evicts
    // the mid pod beside `high` rather than a low pod the budget protects.
    let on = |node: &str| -> Vec<String> {
        json(&server, &["get", "pods"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let other = json(&server, &["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_owned())
        .find(|n| *n != low_node)
        .unwrap();
    let beside_high: Vec<String> = on(&low_node).into_iter().filter(|n| n != "high").collect();
    assert_eq!(beside_high.len(), 1, "{beside_high:?}");
    for name in on(&other) {
        server.ok(KUBECTL, &["delete", "pod", &name]);
    }
    for name in ["guarded-1", "guarded-2"] {
        let labelled = manifest(name, "low", "1").replace("test: preempt}", "test: preempt, guard: \"yes\"}");
        apply(&server, dir.path(), name, &labelled);
    }
    eventually(
        Duration::from_secs(20),
        || pods(&server, "guard=yes"),
        |p| p.len() == 2 && p.iter().all(|(phase, node)| phase == "Running" && *node == other),
    );
    server.ok(KUBECTL, &["create", "poddisruptionbudget", "guard", "--selector=guard=yes", "--min-available=2"]);
    eventually(
        Duration::from_secs(20),
        || json(&server, &["get", "pdb", "guard"]),
        |b| b["status"]["currentHealthy"] == 2 && b["status"]["disruptionsAllowed"] == 0,
    );
    apply(&server, dir.path(), "top", &manifest("top", "high", "1"));
    let placed = eventually(
        Duration::from_secs(30),
        || json(&server, &["get", "pod", "top"]),
        |p| p["status"]["phase"] == "Running",
    );
    assert_eq!(placed["spec"]["nodeName"].as_str(), Some(low_node.as_str()), "{placed}");
    let mut survivors: Vec<String> = on(&low_node).into_iter().chain(on(&other)).collect();
    survivors.sort();
    assert_eq!(survivors, ["guarded-1", "guarded-2", "high", "top"]);
}
