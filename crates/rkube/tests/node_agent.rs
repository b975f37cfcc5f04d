//! The node agent end to end: `rkube server` with its own node runs pods in real containers
//! through its own containerd, and stock kubectl sees what it would see on Kubernetes.
//! Images come from busybox-static (no registry is reachable), dropped into
//! `DATA/agent/images/` before the server starts, which the agent imports.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ServerProcess;

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const IMAGE: &str = "busybox:1.35";

/// A data dir with the busybox test image waiting to be imported.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("agent/images");
    std::fs::create_dir_all(&images).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rkube"))
        .args(["images", "build-busybox"])
        .arg(images.join("busybox.tar"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn node_ready(server: &ServerProcess) {
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "node", "--all", "--timeout=60s"]);
}

fn apply(server: &ServerProcess, dir: &Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    server.ok(KUBECTL, &["apply", "-f", path.to_str().unwrap()]);
}

fn jsonpath(server: &ServerProcess, what: &[&str], path: &str) -> String {
    let arg = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend(what);
    args.extend(["-o", &arg]);
    server.ok(KUBECTL, &args)
}

/// Polls until `check` holds, failing with the last value seen.
fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(last) if start.elapsed() > timeout => panic!("{what}: still {last} after {timeout:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn log_of(dir: &Path, pod: &str, container: &str) -> String {
    let pods = dir.join("agent/pods");
    let entry = std::fs::read_dir(&pods)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(&format!("default_{pod}_")))
        .expect("pod log directory");
    std::fs::read_to_string(entry.path().join(container).join("0.log")).unwrap_or_default()
}

#[test]
fn pods_run_in_real_containers_with_networking_env_and_exit_codes() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let node = jsonpath(&server, &["nodes"], "{.items[0].status.nodeInfo.containerRuntimeVersion}");
    assert!(node.starts_with("containerd://"), "{node}");
    let capacity = jsonpath(&server, &["nodes"], "{.items[0].status.capacity.pods}");
    assert_eq!(capacity, "110");
    // The server's own node runs under a node identity of its own, not the admin's.
    let node = jsonpath(&server, &["nodes"], "{.items[0].metadata.name}");
    assert!(dir.path().join(format!("pki/node-client-{node}.crt")).exists());

    apply(
        &server,
        dir.path(),
        "config",
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {greeting: hello, colour: blue}
"#,
    );
    apply(
        &server,
        dir.path(),
        "done",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: done, labels: {{app: demo}}}}
spec:
  restartPolicy: Never
  initContainers:
  - name: first
    image: {IMAGE}
    command: ["sh", "-c", "echo init ran"]
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c"]
    args: ["echo $GREETING from $POD_NAME app=$APP ip=$POD_IP colour=$CFG_colour; ip -4 addr show eth0"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - name: APP
      valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    envFrom:
    - prefix: CFG_
      configMapRef: {{name: settings}}
"#
        ),
    );
    server.ok(KUBECTL, &["wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/done", "--timeout=60s"]);
    let ip = jsonpath(&server, &["pod", "done"], "{.status.podIP}");
    let cidr = jsonpath(&server, &["nodes"], "{.items[0].spec.podCIDR}");
    let prefix = cidr.rsplit_once('.').unwrap().0.to_owned();
    assert!(ip.starts_with(&prefix), "pod IP {ip} is outside the node's podCIDR {cidr}");
    let raw = log_of(dir.path(), "done", "main");
    assert!(raw.contains(" stdout F hello from done"), "the agent keeps CRI log files: {raw}");
    // kubectl logs goes through the API server to the node API.
    let log = server.ok(KUBECTL, &["logs", "done", "-c", "main"]);
    assert!(log.starts_with("hello from done app=demo"), "{log}");
    assert!(log.contains("colour=blue"), "{log}");
    assert!(log.contains(&format!("inet {ip}/24")), "{log}");
    assert_eq!(server.ok(KUBECTL, &["logs", "done", "-c", "first"]), "init ran\n");
    let tail = server.ok(KUBECTL, &["logs", "done", "-c", "main", "--tail=1", "--timestamps"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    assert!(tail.starts_with("20") && tail.contains("Z "), "{tail}");
    let err = server.fails(KUBECTL, &["logs", "done", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod done"), "{err}");
    let reason = jsonpath(&server, &["pod", "done"], "{.status.containerStatuses[0].state.terminated.reason}");
    assert_eq!(reason, "Completed");
    let init = jsonpath(&server, &["pod", "done"], "{.status.initContainerStatuses[0].state.terminated.exitCode}");
    assert_eq!(init, "0");

    // A failing container fails a Never pod with its exit code.
    apply(
        &server,
        dir.path(),
        "fails",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: fails}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: c, image: \"{IMAGE}\", command: [sh, -c, 'exit 3']}}\n"
        ),
    );
    server.ok(KUBECTL, &["wait", "--for=jsonpath={.status.phase}=Failed", "pod/fails", "--timeout=60s"]);
    let terminated = jsonpath(
        &server,
        &["pod", "fails"],
        "{.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}",
    );
    assert_eq!(terminated, "3 Error");

    // A missing ConfigMap is a CreateContainerConfigError naming it.
    apply(
        &server,
        dir.path(),
        "noconfig",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: noconfig}}\nspec:\n  containers:\n  - name: c\n    image: \"{IMAGE}\"\n    envFrom: [{{configMapRef: {{name: absent}}}}]\n"
        ),
    );
    eventually("CreateContainerConfigError", Duration::from_secs(30), || {
        let waiting = jsonpath(
            &server,
            &["pod", "noconfig"],
            "{.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
        );
        (waiting == "CreateContainerConfigError: configmap \"absent\" not found").then_some(()).ok_or(waiting)
    });
    let get = server.ok(KUBECTL, &["get", "pod", "noconfig"]);
    assert!(get.contains("CreateContainerConfigError"), "{get}");
}

#[test]
fn deployments_serve_on_pod_ips_restart_crashes_and_stop_gracefully() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    server.ok(
        KUBECTL,
        &[
            "create",
            "deployment",
            "web",
            &format!("--image={IMAGE}"),
            "--replicas=2",
            "--",
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            "/etc",
        ],
    );
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    let ips = jsonpath(&server, &["pods", "-l", "app=web"], "{.items[*].status.podIP}");
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1]);
    for ip in &ips {
        // Each pod answers on its own IP, from the host, without NAT.
        let mut stream =
            std::net::TcpStream::connect_timeout(&format!("{ip}:8080").parse().unwrap(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("pod {ip}:8080: {e}"));
        use std::io::{Read, Write};
        stream.write_all(b"GET /passwd HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        assert!(body.contains("root:x:0:0"), "{body}");
    }

    // A crashing container is restarted, then backs off.
    server.ok(KUBECTL, &["run", "crash", &format!("--image={IMAGE}"), "--", "sh", "-c", "exit 1"]);
    eventually("CrashLoopBackOff", Duration::from_secs(40), || {
        let state = jsonpath(
            &server,
            &["pod", "crash"],
            "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.waiting.reason}",
        );
        state.ends_with("CrashLoopBackOff").then_some(()).ok_or(state)
    });
    let last = jsonpath(&server, &["pod", "crash"], "{.status.containerStatuses[0].lastState.terminated.exitCode}");
    assert_eq!(last, "1");
    let err = server.fails(KUBECTL, &["logs", "nopull-not-there"]);
    assert!(err.contains("not found"), "{err}");

    // `kubectl logs -f` streams until the container ends.
    server.ok(
        KUBECTL,
        &[
            "run",
            "counter",
            &format!("--image={IMAGE}"),
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line $i; sleep 0.4; done",
        ],
    );
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/counter", "--timeout=60s"]);
    let followed = server.ok(KUBECTL, &["logs", "-f", "counter"]);
    assert_eq!(followed, "line 1\nline 2\nline 3\nline 4\nline 5\n");

    // An image that cannot be pulled says so.
    server.ok(KUBECTL, &["run", "nopull", "--image=rkube.invalid/none:1"]);
    eventually("image pull errors", Duration::from_secs(40), || {
        let reason = jsonpath(&server, &["pod", "nopull"], "{.status.containerStatuses[0].state.waiting.reason}");
        (reason == "ErrImagePull" || reason == "ImagePullBackOff").then_some(()).ok_or(reason)
    });

    // Deleting a pod whose process ignores SIGTERM takes its grace period, then it is gone.
    let pod = server.ok(KUBECTL, &["get", "pods", "-l", "app=web", "-o", "name"]);
    let pod = pod.lines().next().unwrap();
    let start = Instant::now();
    server.ok(KUBECTL, &["delete", pod, "--grace-period=3"]);
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(20), "deletion took {took:?}");
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    let events = server.ok(KUBECTL, &["get", "events", "--field-selector", "reason=Killing", "-o", "name"]);
    assert!(!events.is_empty(), "a Killing event is recorded");
}

#[test]
fn a_restarted_server_adopts_running_containers() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    server.ok(KUBECTL, &["run", "steady", &format!("--image={IMAGE}"), "--", "sleep", "3600"]);
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/steady", "--timeout=60s"]);
    let before = jsonpath(&server, &["pod", "steady"], "{.status.containerStatuses[0].containerID}");
    let lease = server.crash();
    let server = ServerProcess::restart_node(dir.path(), lease.expect("a node server"));
    node_ready(&server);
    std::thread::sleep(Duration::from_secs(3));
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/steady", "--timeout=60s"]);
    let after = jsonpath(
        &server,
        &["pod", "steady"],
        "{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}",
    );
    assert_eq!(after, format!("{before} 0"), "the same container runs on, not restarted");
}

#[test]
fn a_node_without_a_runtime_is_not_ready_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.sock");
    let server = ServerProcess::start_node(dir.path(), &["--container-runtime-endpoint", socket.to_str().unwrap()]);
    eventually("NotReady with a reason", Duration::from_secs(30), || {
        let ready = jsonpath(&server, &["nodes"], "{.items[0].status.conditions[?(@.type==\"Ready\")].message}");
        ready.contains("container runtime is down").then_some(()).ok_or(ready)
    });
    let nodes = server.ok(KUBECTL, &["get", "nodes"]);
    assert!(nodes.contains("NotReady"), "{nodes}");
}

#[test]
fn volumes_hold_configmaps_secrets_and_shared_dirs_and_follow_updates() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    server.ok(KUBECTL, &["create", "configmap", "app-config", "--from-literal=greeting=hello"]);
    server.ok(KUBECTL, &["create", "secret", "generic", "app-secret", "--from-literal=password=s3cret"]);
    apply(
        &server,
        dir.path(),
        "vols",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: vols}}
spec:
  volumes:
  - {{name: config, configMap: {{name: app-config}}}}
  - {{name: secret, secret: {{secretName: app-secret, defaultMode: 0400}}}}
  - {{name: shared, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory}}}}
  - name: info
    downwardAPI:
      items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]
  initContainers:
  - name: writer
    image: {IMAGE}
    command: [sh, -c, "echo from-init > /shared/note"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: {IMAGE}
    command: [sh, -c]
    args:
    - |
      cat /shared/note /etc/secret/password; echo; cat /etc/info/name; echo
      stat -c %a /etc/secret/..data/password
      grep " /mem " /proc/mounts | cut -d' ' -f3
      grep " /etc/secret " /proc/mounts | cut -d' ' -f3
      while true; do echo "greeting=$(cat /etc/config/greeting)"; sleep 1; done
    volumeMounts:
    - {{name: config, mountPath: /etc/config}}
    - {{name: secret, mountPath: /etc/secret}}
    - {{name: shared, mountPath: /shared}}
    - {{name: mem, mountPath: /mem}}
    - {{name: info, mountPath: /etc/info}}
"#
        ),
    );
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/vols", "--timeout=60s"]);
    eventually("volume contents", Duration::from_secs(20), || {
        let log = server.ok(KUBECTL, &["logs", "vols", "-c", "main"]);
        let expected = "from-init\ns3cret\nvols\n400\ntmpfs\ntmpfs\ngreeting=hello\n";
        log.starts_with(expected).then_some(()).ok_or(log)
    });
    // An updated ConfigMap reaches the running container.
    server.ok(KUBECTL, &["patch", "configmap", "app-config", "-p", r#"{"data":{"greeting":"bonjour"}}"#]);
    eventually("the update", Duration::from_secs(60), || {
        let log = server.ok(KUBECTL, &["logs", "vols", "-c", "main", "--tail=1"]);
        (log == "greeting=bonjour\n").then_some(()).ok_or(log)
    });

    // A volume whose ConfigMap is missing holds the pod in ContainerCreating with FailedMount.
    apply(
        &server,
        dir.path(),
        "nomount",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: nomount}}\nspec:\n  volumes: [{{name: c, configMap: {{name: absent}}}}]\n  containers:\n  - {{name: c, image: \"{IMAGE}\", command: [sleep, \"60\"], volumeMounts: [{{name: c, mountPath: /c}}]}}\n"
        ),
    );
    eventually("FailedMount", Duration::from_secs(30), || {
        let events = server.ok(
            KUBECTL,
            &[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=nomount,reason=FailedMount",
                "-o",
                "jsonpath={.items[*].message}",
            ],
        );
        events
            .contains("MountVolume.SetUp failed for volume \"c\" : configmap \"absent\" not found")
            .then_some(())
            .ok_or(events)
    });
    let get = server.ok(KUBECTL, &["get", "pod", "nomount"]);
    assert!(get.contains("ContainerCreating"), "{get}");
    server.ok(KUBECTL, &["delete", "pod", "vols", "--grace-period=1"]);
    let volumes = dir.path().join("agent/volumes");
    let left: Vec<_> =
        std::fs::read_dir(&volumes).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.len() <= 1, "only the pending pod's volumes remain: {left:?}");
}

#[test]
fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    apply(
        &server,
        dir.path(),
        "probes",
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  containers:
  - name: web
    image: {IMAGE}
    command: [httpd, -f, -p, "8080", -h, /etc]
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe: {{httpGet: {{path: /passwd, port: http}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: never-ready}}
spec:
  containers:
  - name: c
    image: {IMAGE}
    command: [sleep, "3600"]
    readinessProbe: {{tcpSocket: {{port: 9999}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: unhealthy}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {IMAGE}
    command: [sh, -c, "touch /tmp/healthy; sleep 3; rm /tmp/healthy; sleep 3600"]
    livenessProbe: {{exec: {{command: [test, -f, /tmp/healthy]}}, periodSeconds: 1, failureThreshold: 2}}
"#
        ),
    );
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);
    eventually("never-ready runs but is not Ready", Duration::from_secs(30), || {
        let state = jsonpath(
            &server,
            &["pod", "never-ready"],
            "{.status.phase} {.status.containerStatuses[0].ready} {.status.conditions[?(@.type==\"Ready\")].reason}",
        );
        (state == "Running false ContainersNotReady").then_some(()).ok_or(state)
    });
    eventually("a liveness restart", Duration::from_secs(60), || {
        let restarts = jsonpath(&server, &["pod", "unhealthy"], "{.status.containerStatuses[0].restartCount}");
        (restarts.parse::<u32>().unwrap_or(0) >= 1).then_some(()).ok_or(restarts)
    });
    let events = server.ok(
        KUBECTL,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=unhealthy",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    assert!(events.contains("Unhealthy: Liveness probe failed"), "{events}");
    assert!(events.contains("Killing: Container c failed liveness probe, will be restarted"), "{events}");
}

/// kubectl with the server's kubeconfig and `stdin` fed to it.
fn kubectl_with_stdin(server: &ServerProcess, binary: &str, args: &[&str], stdin: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(binary)
        .arg(format!("--kubeconfig={}", server.kubeconfig().display()))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Fed from another thread: the output is read while the input is still going in.
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// Starts `kubectl port-forward` to the pod's port 8080 on a free local port; returns the
/// process and that port.
fn port_forward(server: &ServerProcess, binary: &str, pod: &str) -> (std::process::Child, u16) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(binary)
        .arg(format!("--kubeconfig={}", server.kubeconfig().display()))
        .args(["port-forward", pod, ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // "Forwarding from 127.0.0.1:PORT -> 8080"
    let line = lines.next().expect("port-forward output").unwrap();
    let port = line.split("127.0.0.1:").nth(1).and_then(|r| r.split(' ').next()).and_then(|p| p.parse().ok());
    std::thread::spawn(move || lines.for_each(drop));
    (child, port.unwrap_or_else(|| panic!("no port in {line:?}")))
}

fn http_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn exec_cp_and_port_forward_work_with_old_and_new_kubectl_and_the_python_client() {
    const OLD: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.27";
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let script = "mkdir -p /www && echo hello-from-pod > /www/index.html && exec httpd -f -p 8080 -h /www";
    server.ok(KUBECTL, &["run", "web", &format!("--image={IMAGE}"), "--", "sh", "-c", script]);
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/web", "--timeout=60s"]);

    // kubectl 1.33 speaks WebSocket v5; 1.27 speaks SPDY. Both see output and exit codes.
    for kubectl in [KUBECTL, OLD] {
        let out = server.ok(kubectl, &["exec", "web", "--", "sh", "-c", "echo out; echo err >&2"]);
        assert_eq!(out, "out\n", "{kubectl}");
        let failed = server.kubectl(kubectl, &["exec", "web", "--", "sh", "-c", "exit 3"]);
        assert_eq!(failed.status.code(), Some(3), "{kubectl}: {}", String::from_utf8_lossy(&failed.stderr));
        // stdin reaches the command, and its end ends the command.
        let piped =
            kubectl_with_stdin(&server, kubectl, &["exec", "-i", "web", "--", "sh", "-c", "cat; echo done"], b"line\n");
        assert!(piped.status.success(), "{kubectl}: {}", String::from_utf8_lossy(&piped.stderr));
        assert_eq!(String::from_utf8_lossy(&piped.stdout), "line\ndone\n", "{kubectl}");
        // Volume in both directions at once: 4 MiB through stdin, echoed back through stdout.
        let big: Vec<u8> = (0..4u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let echoed = kubectl_with_stdin(&server, kubectl, &["exec", "-i", "web", "--", "cat"], &big);
        assert!(echoed.status.success(), "{kubectl}: {}", String::from_utf8_lossy(&echoed.stderr));
        assert!(echoed.stdout == big, "{kubectl}: {} bytes came back of {}", echoed.stdout.len(), big.len());
        // Errors before the upgrade are upstream's.
        let err = server.fails(kubectl, &["exec", "web", "-c", "nope", "--", "true"]);
        assert!(err.contains("container nope is not valid for pod web"), "{kubectl}: {err}");
    }

    // Service variables, as upstream sets them.
    let ip = jsonpath(&server, &["service", "kubernetes"], "{.spec.clusterIP}");
    let env = server.ok(KUBECTL, &["exec", "web", "--", "sh", "-c", "echo $KUBERNETES_SERVICE_HOST $KUBERNETES_PORT"]);
    assert_eq!(env, format!("{ip} tcp://{ip}:443\n"));

    // DNS: without cluster DNS, ClusterFirst falls back to the node's resolver and says so;
    // dnsPolicy None takes dnsConfig alone.
    let resolv = server.ok(KUBECTL, &["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for server_line in host.lines().filter(|l| l.starts_with("nameserver")).take(3) {
        assert!(resolv.contains(server_line), "{resolv}");
    }
    let events =
        server.ok(KUBECTL, &["get", "events", "--field-selector", "involvedObject.name=web,reason=MissingClusterDNS"]);
    assert!(events.contains("Falling back to \"Default\" policy"), "{events}");
    apply(
        &server,
        dir.path(),
        "dnsnone",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: dnsnone}}\nspec:\n  dnsPolicy: None\n  dnsConfig: {{nameservers: [192.0.2.53], searches: [a.example], options: [{{name: ndots, value: \"2\"}}]}}\n  containers:\n  - {{name: c, image: \"{IMAGE}\", command: [sleep, \"3600\"]}}\n"
        ),
    );
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/dnsnone", "--timeout=60s"]);
    let resolv = server.ok(KUBECTL, &["exec", "dnsnone", "--", "cat", "/etc/resolv.conf"]);
    for line in ["nameserver 192.0.2.53", "search a.example", "options ndots:2"] {
        assert!(resolv.contains(line), "{resolv}");
    }

    // attach: stdin into the container's main process, its output back.
    apply(
        &server,
        dir.path(),
        "echoer",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: echoer}}\nspec:\n  containers:\n  - name: c\n    image: \"{IMAGE}\"\n    stdin: true\n    command: [sh, -c, 'while read l; do echo got-$l; done']\n"
        ),
    );
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/echoer", "--timeout=60s"]);
    for kubectl in [KUBECTL, OLD] {
        // Input typed a moment after attaching, then a moment for the answer, as a person would.
        let script = format!(
            "(sleep 1; echo one; sleep 2) | {kubectl} --kubeconfig={} attach -i echoer -c c",
            server.kubeconfig().display()
        );
        let out = std::process::Command::new("sh").args(["-c", &script]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("got-one"), "{kubectl}: {text} {}", String::from_utf8_lossy(&out.stderr));
    }

    // The node's Summary API through nodes/proxy, as metrics-server reads it.
    let node = jsonpath(&server, &["nodes"], "{.items[0].metadata.name}");
    let raw = server.ok(KUBECTL, &["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/stats/summary")]);
    let summary: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(summary["node"]["nodeName"], node.as_str());
    assert!(summary["node"]["memory"]["workingSetBytes"].as_u64().unwrap() > 0, "{raw}");
    let web =
        summary["pods"].as_array().unwrap().iter().find(|p| p["podRef"]["name"] == "web").expect("web in summary");
    assert!(web["containers"][0]["memory"]["workingSetBytes"].as_u64().unwrap() > 0, "{web}");
    assert!(web["containers"][0]["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap() > 0, "{web}");
    assert_eq!(server.ok(KUBECTL, &["get", "--raw", &format!("/api/v1/nodes/{node}/proxy/healthz")]), "ok");

    // kubectl cp, both ways (tar through exec's stdin and stdout).
    let local = dir.path().join("note.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    server.ok(KUBECTL, &["cp", local.to_str().unwrap(), "web:/tmp/note.txt"]);
    assert_eq!(server.ok(KUBECTL, &["exec", "web", "--", "cat", "/tmp/note.txt"]), "copied in\n");
    let back = dir.path().join("back.txt");
    server.ok(KUBECTL, &["cp", "web:/www/index.html", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "hello-from-pod\n");

    // port-forward: tunnelled SPDY over WebSocket (1.33) and plain SPDY (1.27).
    for kubectl in [KUBECTL, OLD] {
        let (mut child, port) = port_forward(&server, kubectl, "pod/web");
        for _ in 0..2 {
            let body = http_get(port);
            assert!(body.starts_with("HTTP/1.") && body.contains("hello-from-pod"), "{kubectl}: {body}");
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // The official Python client: WebSocket v4 exec and port-forward.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/stream_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(server.kubeconfig())
        .args(["default", "web"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python exec/port-forward:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rkube agent` joining a server, on this host or in a network namespace; stopped and
/// cleaned up (`rkube killall`, in the same namespace) on drop.
struct AgentProcess {
    child: std::process::Child,
    data_dir: tempfile::TempDir,
    netns: Option<String>,
}

impl AgentProcess {
    fn start(server: &ServerProcess, token: &str, name: &str) -> AgentProcess {
        AgentProcess::start_in(None, &server.url, token, name, "127.0.0.1", "0")
    }

    fn start_in(netns: Option<&str>, url: &str, token: &str, name: &str, ip: &str, port: &str) -> AgentProcess {
        let data_dir = data_dir();
        let child = AgentProcess::command(netns)
            .args(["agent", "--server", url, "--data-dir"])
            .arg(data_dir.path())
            .args(["--node-name", name, "--node-ip", ip, "--node-api-port", port])
            .env("RKUBE_TOKEN", token)
            .spawn()
            .unwrap();
        AgentProcess { child, data_dir, netns: netns.map(str::to_owned) }
    }

    /// `rkube`, inside `netns` if given. nsenter enters the network namespace only: `ip netns
    /// exec` would also mount a fresh /sys, hiding the cgroup mounts runc needs.
    fn command(netns: Option<&str>) -> std::process::Command {
        match netns {
            Some(ns) => {
                let mut c = std::process::Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).args(["--", env!("CARGO_BIN_EXE_rkube")]);
                c
            }
            None => std::process::Command::new(env!("CARGO_BIN_EXE_rkube")),
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        let _ = AgentProcess::command(self.netns.as_deref())
            .args(["killall", "--data-dir"])
            .arg(self.data_dir.path())
            .output();
    }
}

/// Hosts on this machine: network namespaces on one bridge (a shared link, like machines on
/// one switch), removed on drop after their agents.
struct Hosts {
    bridge: &'static str,
    names: Vec<String>,
}

impl Hosts {
    const SUBNET: &'static str = "172.31.77";

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip").args(args).output().unwrap();
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn make(count: usize) -> Hosts {
        let hosts = Hosts { bridge: "rkt-br", names: (1..=count).map(|i| format!("rkt-h{i}")).collect() };
        hosts.remove(); // what a killed earlier run left
        let gateway = format!("{}.1/24", Hosts::SUBNET);
        Hosts::ip(&["link", "add", hosts.bridge, "type", "bridge"]);
        Hosts::ip(&["addr", "add", &gateway, "dev", hosts.bridge]);
        Hosts::ip(&["link", "set", hosts.bridge, "up"]);
        // Machines on a switch are out of this host's firewall; with br_netfilter loaded,
        // bridged frames would otherwise meet this host's NAT rules (a pod sandbox left by an
        // earlier run masqueraded its old IP, which a new pod here can have).
        Hosts::iptables("-I");
        for (i, ns) in hosts.names.iter().enumerate() {
            let veth = format!("rkt-v{}", i + 1);
            let addr = format!("{}.{}/24", Hosts::SUBNET, i + 2);
            Hosts::ip(&["netns", "add", ns]);
            Hosts::ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
            Hosts::ip(&["link", "set", &veth, "master", hosts.bridge, "up"]);
            Hosts::ip(&["-n", ns, "addr", "add", &addr, "dev", "eth0"]);
            Hosts::ip(&["-n", ns, "link", "set", "eth0", "up"]);
            Hosts::ip(&["-n", ns, "link", "set", "lo", "up"]);
            Hosts::ip(&["-n", ns, "route", "add", "default", "via", &format!("{}.1", Hosts::SUBNET)]);
        }
        hosts
    }

    fn iptables(action: &str) -> bool {
        let rule = [
            "-t",
            "nat",
            action,
            "POSTROUTING",
            "-o",
            "rkt-br",
            "-m",
            "comment",
            "--comment",
            "rkube test hosts",
            "-j",
            "ACCEPT",
        ];
        std::process::Command::new("iptables").args(rule).output().is_ok_and(|o| o.status.success())
    }

    fn remove(&self) {
        while Hosts::iptables("-D") {}
        for ns in &self.names {
            let _ = std::process::Command::new("ip").args(["netns", "del", ns]).output();
        }
        for i in 1..=self.names.len() {
            let _ = std::process::Command::new("ip").args(["link", "del", &format!("rkt-v{i}")]).output();
        }
        let _ = std::process::Command::new("ip").args(["link", "del", self.bridge]).output();
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.remove();
    }
}

#[test]
fn an_agent_joins_with_the_servers_token_under_its_own_identity() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let rkube = env!("CARGO_BIN_EXE_rkube");
    let out = std::process::Command::new(rkube).args(["token", "--data-dir"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let secret = token.rsplit("::").next().unwrap().to_owned();

    // A token for another cluster's CA is refused before anything is sent.
    let wrong = format!("rk1::{}::{secret}", "0".repeat(64));
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(rkube)
        .args(["agent", "--server", &server.url, "--token", &wrong, "--data-dir"])
        .arg(elsewhere.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not have the CA this token names"), "{err}");
    // The token's secret joins nodes and does nothing else.
    let curl = |path: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-H", &format!("Authorization: Bearer {secret}")])
            .arg(format!("{}{path}", server.url))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(curl("/api/v1/secrets"), "403");

    let agent = AgentProcess::start(&server, &token, "node2");
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "node/node2", "--timeout=60s"]);
    let kubeconfig = std::fs::read_to_string(agent.data_dir.path().join("agent/kubeconfig")).unwrap();
    assert!(kubeconfig.contains("system:node:node2"), "{kubeconfig}");
    let admin = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    let admin_cert = admin.lines().find(|l| l.contains("client-certificate-data")).unwrap().trim().to_owned();
    assert!(!kubeconfig.contains(&admin_cert), "the agent must not hold the admin's certificate");
    let cidrs = jsonpath(&server, &["nodes"], "{.items[*].spec.podCIDR}");
    assert_eq!(cidrs.split_whitespace().count(), 2, "{cidrs}");

    // A pod on each node; the server's node reaches the agent's pod by its IP.
    let here =
        jsonpath(&server, &["nodes", "-l", "node-role.kubernetes.io/control-plane"], "{.items[0].metadata.name}");
    for (pod, node) in [("far", "node2"), ("near", here.as_str())] {
        let overrides = format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#);
        let script =
            format!("mkdir -p /www && echo {pod}-on-{node} > /www/index.html && exec httpd -f -p 8080 -h /www");
        server.ok(
            KUBECTL,
            &["run", pod, &format!("--image={IMAGE}"), &format!("--overrides={overrides}"), "--", "sh", "-c", &script],
        );
    }
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/far", "pod/near", "--timeout=60s"]);
    let far_ip = jsonpath(&server, &["pod", "far"], "{.status.podIP}");
    let got = server.ok(KUBECTL, &["exec", "near", "--", "wget", "-qO-", &format!("http://{far_ip}:8080/")]);
    assert_eq!(got, "far-on-node2\n");
    // Both nodes' bridges are on this host: neither agent routes the other's podCIDR away.
    let routes = std::process::Command::new("ip").args(["route", "show", "proto", "211"]).output().unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    for cidr in cidrs.split_whitespace() {
        assert!(!routes.contains(cidr), "{routes}");
    }
    // Logs and exec on the joined node go through its own node API.
    assert_eq!(server.ok(KUBECTL, &["exec", "far", "--", "cat", "/www/index.html"]), "far-on-node2\n");
    drop(agent);
}

#[test]
fn pods_on_two_hosts_reach_each_other_by_ip_without_nat() {
    let hosts = Hosts::make(2);
    let dir = tempfile::tempdir().unwrap();
    let lease = common::CidrLease::take();
    let bind = format!("{}.1:0", Hosts::SUBNET);
    let server = ServerProcess::start_at(dir.path(), &bind, &["--no-agent", "--cluster-cidr", &lease.cidr]);
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap().trim().to_owned();
    let agents: Vec<AgentProcess> = hosts
        .names
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            let ip = format!("{}.{}", Hosts::SUBNET, i + 2);
            AgentProcess::start_in(Some(ns), &server.url, &token, ns, &ip, "10250")
        })
        .collect();
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "node/rkt-h1", "node/rkt-h2", "--timeout=90s"]);
    // The far pod answers with the address its client came from.
    let cgi = "mkdir -p /www/cgi-bin && { echo '#!/bin/sh'; echo 'echo Content-Type: text/plain'; echo echo; \
               echo 'echo $REMOTE_ADDR'; } > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip && exec httpd -f -p 8080 -h /www";
    for (pod, node) in [("far", "rkt-h2"), ("near", "rkt-h1")] {
        let overrides = format!(r#"{{"spec":{{"nodeName":"{node}"}}}}"#);
        server.ok(
            KUBECTL,
            &["run", pod, &format!("--image={IMAGE}"), &format!("--overrides={overrides}"), "--", "sh", "-c", cgi],
        );
    }
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/far", "pod/near", "--timeout=90s"]);
    let far_ip = jsonpath(&server, &["pod", "far"], "{.status.podIP}");
    let near_ip = jsonpath(&server, &["pod", "near"], "{.status.podIP}");
    let url = format!("http://{far_ip}:8080/cgi-bin/ip");
    // Routes appear as the agents see each other's nodes.
    eventually("near reaches far", Duration::from_secs(30), || {
        let out = server.kubectl(KUBECTL, &["exec", "near", "--", "timeout", "5", "wget", "-qO-", &url]);
        // busybox httpd writes an IPv4 client as "[::ffff:A.B.C.D]".
        let got =
            String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("[::ffff:").trim_end_matches(']').to_owned();
        if got == near_ip { Ok(()) } else { Err(format!("{got:?} {}", String::from_utf8_lossy(&out.stderr))) }
    });
    // Logs come from the far host's node API.
    let logs = server.ok(KUBECTL, &["logs", "far"]);
    assert!(!logs.contains("error"), "{logs}");
    drop(agents);
    drop(hosts);
}

#[test]
fn the_readme_example_serves_its_configmap_on_pod_ips() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/web.yaml");
    server.ok(KUBECTL, &["apply", "-f", example]);
    server.ok(KUBECTL, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    let ips = jsonpath(&server, &["pods", "-l", "app=web"], "{.items[*].status.podIP}");
    assert_eq!(ips.split_whitespace().count(), 2, "{ips}");
    for ip in ips.split_whitespace() {
        let out =
            std::process::Command::new("curl").args(["-s", "-m", "5", &format!("http://{ip}:8080/")]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from rkube\n", "pod {ip}");
    }
}

#[test]
fn lifecycle_hooks_run_and_https_probes_pass() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let port = server.url.rsplit(':').next().unwrap();
    // Ready only through an HTTPS readiness probe against the API server's /readyz (a
    // certificate the agent does not verify, as the kubelet does not).
    let yaml = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: app
    image: {IMAGE}
    command: ["sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "mkdir -p /www && echo post-start > /www/post"]
      preStop:
        exec:
          command: ["sh", "-c", "echo pre-stop > /hooks/pre"]
    readinessProbe:
      periodSeconds: 1
      httpGet:
        scheme: HTTPS
        host: 127.0.0.1
        port: {port}
        path: /readyz
    volumeMounts:
    - name: hooks
      mountPath: /hooks
  volumes:
  - name: hooks
    hostPath:
      path: {hooks}
---
apiVersion: v1
kind: Pod
metadata:
  name: badhook
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {IMAGE}
    command: ["sleep", "3600"]
    lifecycle:
      postStart:
        exec:
          command: ["sh", "-c", "exit 7"]
"#,
        hooks = hooks.display()
    );
    apply(&server, dir.path(), "hooks", &yaml);
    server.ok(KUBECTL, &["wait", "--for=condition=Ready", "pod/hooked", "--timeout=60s"]);
    assert_eq!(server.ok(KUBECTL, &["exec", "hooked", "--", "cat", "/www/post"]), "post-start\n");

    // A failing postStart hook kills the container, which the restart policy restarts.
    eventually("FailedPostStartHook and a restart", Duration::from_secs(60), || {
        let events = server.ok(KUBECTL, &["get", "events", "--field-selector", "involvedObject.name=badhook"]);
        let restarts = jsonpath(&server, &["pod", "badhook"], "{.status.containerStatuses[0].restartCount}");
        let restarted = restarts.parse::<u32>().unwrap_or(0) >= 1;
        if events.contains("FailedPostStartHook") && restarted { Ok(()) } else { Err(format!("{restarts} {events}")) }
    });

    // Deleting runs preStop before the container is stopped.
    server.ok(KUBECTL, &["delete", "pod", "hooked", "--wait=true", "--timeout=60s"]);
    assert_eq!(std::fs::read_to_string(hooks.join("pre")).unwrap_or_default(), "pre-stop\n");
}

#[test]
fn static_pods_run_from_manifests_and_show_as_mirror_pods() {
    let dir = data_dir();
    let manifests = dir.path().join("agent/manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let hooks = dir.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: static-web}}\nspec:\n  terminationGracePeriodSeconds: 5\n  volumes: [{{name: h, hostPath: {{path: {}}}}}]\n  containers:\n  - name: web\n    image: {IMAGE}\n    command: [sh, -c, 'echo static > /tmp/index.html && exec httpd -f -p 8080 -h /tmp']\n    volumeMounts: [{{name: h, mountPath: /hooks}}]\n    lifecycle: {{preStop: {{exec: {{command: [sh, -c, 'echo bye > /hooks/static']}}}}}}\n",
        hooks.display()
    );
    std::fs::write(manifests.join("web.yaml"), &manifest).unwrap();
    std::fs::write(manifests.join("broken.yaml"), "kind: Pod\nmetadata: {name: [not a name]}\n").unwrap();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let node = jsonpath(&server, &["nodes"], "{.items[0].metadata.name}");
    let name = format!("static-web-{node}");
    let running = |server: &ServerProcess| {
        let out = server.kubectl(KUBECTL, &["get", "pod", &name, "-o", "jsonpath={.status.containerStatuses[0].ready} {.status.containerStatuses[0].containerID} {.status.podIP}"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        match text.split_whitespace().collect::<Vec<_>>()[..] {
            ["true", id, ip] => Ok((id.to_owned(), ip.to_owned())),
            _ => Err(format!("{text} {}", String::from_utf8_lossy(&out.stderr))),
        }
    };
    let mut first = None;
    eventually("the mirror pod runs", Duration::from_secs(60), || {
        first = Some(running(&server)?);
        Ok(())
    });
    let (container, ip) = first.unwrap();
    let mirror = jsonpath(&server, &["pod", &name], "{.metadata.annotations.kubernetes\\.io/config\\.mirror}");
    assert_eq!(mirror.len(), 32, "{mirror}");
    assert_eq!(jsonpath(&server, &["pod", &name], "{.metadata.ownerReferences[0].kind}"), "Node");
    let body = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://{ip}:8080/index.html")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&body.stdout), "static\n");

    // Deleting the mirror does not stop the pod; the mirror comes back with the same container.
    server.ok(KUBECTL, &["delete", "pod", &name, "--wait=false"]);
    eventually("the mirror comes back", Duration::from_secs(60), || {
        let (again, _) = running(&server)?;
        (again == container).then_some(()).ok_or(format!("container {again}, was {container}"))
    });

    // Removing the manifest stops the pod and removes the mirror.
    std::fs::remove_file(manifests.join("web.yaml")).unwrap();
    eventually("the mirror goes", Duration::from_secs(60), || {
        let out = server.kubectl(KUBECTL, &["get", "pod", &name]);
        (!out.status.success()).then_some(()).ok_or(String::from_utf8_lossy(&out.stdout).into_owned())
    });
    eventually("the container stops", Duration::from_secs(30), || {
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "2", &format!("http://{ip}:8080/index.html")])
            .output()
            .unwrap();
        (!out.status.success()).then_some(()).ok_or("still serving".into())
    });
    // It stopped gracefully: its preStop hook ran.
    assert_eq!(std::fs::read_to_string(hooks.join("static")).unwrap_or_default(), "bye\n");
}

#[test]
fn claims_bind_to_host_path_volumes_and_pods_write_to_them() {
    let dir = data_dir();
    let server = ServerProcess::start_node(dir.path(), &[]);
    node_ready(&server);
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let yaml = format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata: {{name: small}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  hostPath: {{path: "{disk}"}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {{requests: {{storage: 500Mi}}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: toobig}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  resources: {{requests: {{storage: 5Gi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: writer}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {IMAGE}
    command: [sh, -c, "echo kept > /data/file"]
    volumeMounts: [{{name: d, mountPath: /data}}]
  volumes:
  - name: d
    persistentVolumeClaim: {{claimName: data}}
"#,
        disk = disk.display()
    );
    apply(&server, dir.path(), "claims", &yaml);
    server.ok(KUBECTL, &["wait", "--for=jsonpath={.status.phase}=Bound", "pvc/data", "--timeout=30s"]);
    assert_eq!(jsonpath(&server, &["pvc", "data"], "{.spec.volumeName}"), "small");
    assert_eq!(jsonpath(&server, &["pv", "small"], "{.status.phase} {.spec.claimRef.name}"), "Bound data");
    server.ok(KUBECTL, &["wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/writer", "--timeout=60s"]);
    assert_eq!(std::fs::read_to_string(disk.join("file")).unwrap(), "kept\n");
    // A claim nothing fits stays Pending and says why.
    assert_eq!(jsonpath(&server, &["pvc", "toobig"], "{.status.phase}"), "Pending");
    let events = server.ok(KUBECTL, &["get", "events", "--field-selector", "involvedObject.name=toobig"]);
    assert!(events.contains("no persistent volumes available for this claim"), "{events}");
    // Deleting the claim releases the volume.
    server.ok(KUBECTL, &["delete", "pod", "writer"]);
    server.ok(KUBECTL, &["delete", "pvc", "data"]);
    server.ok(KUBECTL, &["wait", "--for=jsonpath={.status.phase}=Released", "pv/small", "--timeout=30s"]);
}
