//! The workload, service and lifecycle kinds, driven by the real kubectl binaries (1.27 and
//! 1.33) against a real `rkube server`: defaults, columns, the scale and status subresources,
//! service IP and port allocation, finalizers, graceful pod deletion and terminating namespaces.

mod common;

use common::ServerProcess;
use serde_json::Value;

const KUBECTLS: [&str; 2] =
    ["/usr/lib/google-cloud-sdk/bin/kubectl.1.27", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"];

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
        ports: [{containerPort: 80}]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: once
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: busybox}]
"#;

/// `kubectl apply` of a manifest into the default namespace, or another with `-n`.
fn apply(server: &ServerProcess, kubectl: &str, dir: &std::path::Path, name: &str, manifest: &str) -> String {
    apply_in(server, kubectl, dir, "default", name, manifest)
}

fn apply_in(
    server: &ServerProcess,
    kubectl: &str,
    dir: &std::path::Path,
    ns: &str,
    name: &str,
    manifest: &str,
) -> String {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, manifest).unwrap();
    server.ok(kubectl, &["-n", ns, "apply", "-f", path.to_str().unwrap()])
}

/// `kubectl apply` of a namespace. (kubectl 1.33's `create namespace` would do too; apply
/// works the same with both kubectls.)
fn namespace(server: &ServerProcess, kubectl: &str, dir: &std::path::Path, name: &str) {
    apply(
        server,
        kubectl,
        dir,
        &format!("ns-{name}"),
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
    );
}

fn json(server: &ServerProcess, kubectl: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&server.ok(kubectl, &args)).unwrap()
}

#[test]
fn workloads_get_defaults_columns_and_scale() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for (n, kubectl) in KUBECTLS.iter().enumerate() {
        let ns = format!("apps-{n}");
        namespace(&server, kubectl, dir.path(), &ns);
        let applied = apply_in(&server, kubectl, dir.path(), &ns, &ns, APP);
        assert!(applied.contains("deployment.apps/web created"), "{kubectl}: {applied}");

        let deployment = json(&server, kubectl, &["-n", &ns, "get", "deployment", "web"]);
        assert_eq!(deployment["metadata"]["generation"], 1);
        assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert_eq!(container["ports"][0]["protocol"], "TCP");
        assert!(container.get("env").is_none(), "no nulls where nothing was given: {container}");

        let wide = server.ok(kubectl, &["-n", &ns, "get", "deployments", "-o", "wide"]);
        let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
        assert!(wide.lines().nth(1).unwrap().contains("0/3"), "{wide}");
        assert!(wide.contains("nginx:1.25") && wide.contains("app=web"), "{wide}");

        // kubectl scale goes through the scale subresource; the spec change bumps the generation.
        server.ok(kubectl, &["-n", &ns, "scale", "deployment", "web", "--replicas=5"]);
        let deployment = json(&server, kubectl, &["-n", &ns, "get", "deployment", "web"]);
        assert_eq!(
            (deployment["spec"]["replicas"].as_i64(), deployment["metadata"]["generation"].as_i64()),
            (Some(5), Some(2))
        );

        // The job's pods are tied to it by uid.
        let job = json(&server, kubectl, &["-n", &ns, "get", "job", "once"]);
        let uid = job["metadata"]["uid"].as_str().unwrap();
        assert_eq!(job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
        assert_eq!(job["spec"]["template"]["metadata"]["labels"]["job-name"], "once");
        assert_eq!(job["spec"]["backoffLimit"], 6);

        let all = server.ok(kubectl, &["-n", &ns, "get", "all"]);
        for shown in ["service/web", "deployment.apps/web", "job.batch/once"] {
            assert!(all.contains(shown), "{kubectl}: get all lacks {shown}: {all}");
        }
        let resources = server.ok(kubectl, &["api-resources", "--api-group=apps", "--no-headers"]);
        assert!(resources.lines().any(|l| l.starts_with("deployments ") && l.contains("deploy")), "{resources}");
    }
    // Every request above was counted, by verb, resource and code.
    let metrics = server.ok(KUBECTLS[1], &["get", "--raw", "/metrics"]);
    let created = metrics
        .lines()
        .find(|l| l.starts_with(r#"apiserver_request_total{code="201""#) && l.contains(r#"resource="deployments""#))
        .unwrap_or_else(|| panic!("no deployment creates counted: {metrics}"));
    assert!(created.contains(r#"verb="POST""#) && created.ends_with(" 2"), "{created}");
    assert!(
        metrics.contains(r#"resource="deployments",scope="resource",subresource="scale",verb="PATCH""#),
        "{metrics}"
    );
}

#[test]
fn invalid_workloads_get_upstream_422s() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  selector: {matchLabels: {app: a}}\n  \
         template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
    )
    .unwrap();
    let error = server.fails(kubectl, &["create", "-f", path.to_str().unwrap()]);
    assert!(
        error.contains(r#"Deployment "bad" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"b"}: `selector` does not match template `labels`"#),
        "{error}"
    );
    std::fs::write(&path, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n").unwrap();
    let error = server.fails(kubectl, &["create", "-f", path.to_str().unwrap()]);
    assert!(error.contains(r#"Pod "p" is invalid: spec.containers[0].image: Required value"#), "{error}");
}

#[test]
fn services_get_unique_cluster_ips_and_node_ports() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[0];
    let kubernetes = json(&server, kubectl, &["get", "service", "kubernetes"]);
    assert_eq!(kubernetes["spec"]["clusterIP"], "10.43.0.1");
    let service = |name: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  ports: [{{port: 80}}]\n{extra}")
    };
    apply(&server, kubectl, dir.path(), "a", &service("a", "  type: NodePort\n"));
    apply(&server, kubectl, dir.path(), "b", &service("b", "  clusterIP: 10.43.9.9\n"));
    let a = json(&server, kubectl, &["get", "service", "a"]);
    let ip = a["spec"]["clusterIP"].as_str().unwrap();
    assert!(ip.starts_with("10.43.") && ip != "10.43.0.1", "{ip}");
    assert_eq!(a["spec"]["clusterIPs"][0], ip);
    let node_port = a["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    assert_eq!(a["spec"]["ports"][0]["targetPort"], 80);

    // A taken IP is refused with upstream's message; deleting its holder frees it.
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, service("c", "  clusterIP: 10.43.9.9\n")).unwrap();
    let error = server.fails(kubectl, &["create", "-f", path.to_str().unwrap()]);
    assert!(error.contains("failed to allocate IP 10.43.9.9: provided IP is already allocated"), "{error}");
    server.ok(kubectl, &["delete", "service", "b"]);
    server.ok(kubectl, &["create", "-f", path.to_str().unwrap()]);
    let outside = dir.path().join("d.yaml");
    std::fs::write(&outside, service("d", "  clusterIP: 10.99.0.1\n")).unwrap();
    let error = server.fails(kubectl, &["create", "-f", outside.to_str().unwrap()]);
    assert!(error.contains("is not in the valid range"), "{error}");

    // One port number over two protocols shares one node port, as upstream.
    apply(
        &server,
        kubectl,
        dir.path(),
        "dns",
        "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  type: NodePort\n  \
         ports: [{name: udp, port: 53, protocol: UDP}, {name: tcp, port: 53, protocol: TCP}]\n",
    );
    let dns = json(&server, kubectl, &["get", "service", "dns"]);
    assert_eq!(dns["spec"]["ports"][0]["nodePort"], dns["spec"]["ports"][1]["nodePort"], "{dns}");
    server.ok(kubectl, &["delete", "service", "dns"]);

    let listed = server.ok(kubectl, &["get", "services"]);
    let row = listed.lines().find(|l| l.starts_with("a ")).unwrap();
    assert!(row.contains("NodePort") && row.contains(&format!("80:{node_port}/TCP")), "{listed}");
}

#[test]
fn finalizers_graceful_pods_and_terminating_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    // A finalizer holds an object: delete marks it, removing the finalizer ends it.
    apply(
        &server,
        kubectl,
        dir.path(),
        "held",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n",
    );
    server.ok(kubectl, &["delete", "configmap", "held", "--wait=false"]);
    let held = json(&server, kubectl, &["get", "configmap", "held"]);
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    let error = server.fails(
        kubectl,
        &[
            "patch",
            "configmap",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["example.com/hold","example.com/new"]}}"#,
        ],
    );
    assert!(error.contains("no new finalizers can be added if the object is being deleted"), "{error}");
    server.ok(kubectl, &["patch", "configmap", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    let gone = server.fails(kubectl, &["get", "configmap", "held"]);
    assert!(gone.contains(r#"configmaps "held" not found"#), "{gone}");

    // A pod on a node stops gracefully: it shows Terminating until forced.
    apply(
        &server,
        kubectl,
        dir.path(),
        "pod",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n",
    );
    server.ok(kubectl, &["delete", "pod", "p", "--wait=false"]);
    let pod = json(&server, kubectl, &["get", "pod", "p"]);
    assert_eq!(pod["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(server.ok(kubectl, &["get", "pod", "p"]).contains("Terminating"));
    server.ok(kubectl, &["delete", "pod", "p", "--grace-period=0", "--force"]);
    assert!(server.fails(kubectl, &["get", "pod", "p"]).contains("not found"));

    // A terminating namespace refuses new content. The namespace controller empties it: the
    // configmap goes at once, a pod on a node stops gracefully, and the namespace goes last.
    namespace(&server, kubectl, dir.path(), "going");
    apply_in(
        &server,
        kubectl,
        dir.path(),
        "going",
        "stays",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stays}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n",
    );
    apply_in(&server, kubectl, dir.path(), "going", "cm", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n");
    server.ok(kubectl, &["delete", "namespace", "going", "--wait=false"]);
    let phase = server.ok(kubectl, &["get", "namespace", "going", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Terminating");
    let held = dir.path().join("held.yaml");
    let error = server.fails(kubectl, &["-n", "going", "create", "-f", held.to_str().unwrap()]);
    assert!(
        error.contains("unable to create new content in namespace going because it is being terminated"),
        "{error}"
    );
    server.ok(kubectl, &["-n", "going", "wait", "--for=delete", "configmap/cm", "--timeout=20s"]);
    let stopping = json(&server, kubectl, &["-n", "going", "get", "pod", "stays"]);
    assert!(stopping["metadata"]["deletionTimestamp"].is_string(), "{stopping}");
    server.ok(kubectl, &["-n", "going", "delete", "pod", "stays", "--grace-period=0", "--force"]);
    server.ok(kubectl, &["wait", "--for=delete", "namespace/going", "--timeout=30s"]);
    let error = server.fails(kubectl, &["delete", "namespace", "kube-system"]);
    assert!(error.contains(r#"namespaces "kube-system" is forbidden: this namespace may not be deleted"#), "{error}");
}

/// kubectl 1.33's typed commands send protobuf bodies; its edits, `set image`, `rollout
/// restart` and second `apply` send strategic merge patches.
#[test]
fn typed_commands_and_strategic_merge_patches() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    for args in [
        &["create", "namespace", "demo"][..],
        &["-n", "demo", "create", "deployment", "web", "--image=nginx:1.24", "--replicas=2"],
        &["-n", "demo", "run", "solo", "--image=busybox:1.36", "--", "sleep", "3600"],
        &["-n", "demo", "expose", "deployment", "web", "--port=80"],
        &["-n", "demo", "create", "configmap", "c", "--from-literal=a=b"],
        &["-n", "demo", "create", "secret", "generic", "s", "--from-literal=p=q"],
        &["-n", "demo", "create", "job", "j", "--image=busybox"],
        &["-n", "demo", "create", "cronjob", "cj", "--image=busybox", "--schedule=*/5 * * * *"],
    ] {
        server.ok(kubectl, args);
    }
    let pod = json(&server, kubectl, &["-n", "demo", "get", "pod", "solo"]);
    assert_eq!(pod["spec"]["containers"][0]["args"], serde_json::json!(["sleep", "3600"]));
    assert!(pod["metadata"].get("generateName").is_none(), "empty protobuf strings are not fields: {pod}");
    let secret = json(&server, kubectl, &["-n", "demo", "get", "secret", "s"]);
    assert_eq!(secret["data"]["p"], "cQ==");
    let service = json(&server, kubectl, &["-n", "demo", "get", "service", "web"]);
    assert_eq!(service["spec"]["selector"]["app"], "web");

    server.ok(kubectl, &["-n", "demo", "set", "image", "deployment/web", "nginx=nginx:1.25"]);
    server.ok(kubectl, &["-n", "demo", "rollout", "restart", "deployment", "web"]);
    // A strategic merge patch merges containers by name: the env entry joins the container.
    let patch =
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","env":[{"name":"MODE","value":"fast"}]}]}}}}"#;
    server.ok(kubectl, &["-n", "demo", "patch", "deployment", "web", "-p", patch]);
    let deployment = json(&server, kubectl, &["-n", "demo", "get", "deployment", "web"]);
    let template = &deployment["spec"]["template"];
    assert_eq!(template["spec"]["containers"][0]["image"], "nginx:1.25");
    assert_eq!(template["spec"]["containers"][0]["env"][0]["value"], "fast");
    assert_eq!(template["spec"]["containers"].as_array().unwrap().len(), 1);
    assert!(template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());

    // A second apply sends a three-way strategic patch.
    let first = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  replicas: 2\n  \
                 selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      \
                 containers: [{name: a, image: 'api:1'}, {name: b, image: 'side:1'}]\n";
    apply_in(&server, kubectl, dir.path(), "demo", "api", first);
    let second = first
        .replace("replicas: 2", "replicas: 3")
        .replace("api:1", "api:2")
        .replace(", {name: b, image: 'side:1'}", "");
    let out = apply_in(&server, kubectl, dir.path(), "demo", "api", &second);
    assert!(out.contains("deployment.apps/api configured"), "{out}");
    let api = json(&server, kubectl, &["-n", "demo", "get", "deployment", "api"]);
    let containers = api["spec"]["template"]["spec"]["containers"].as_array().unwrap();
    assert_eq!((api["spec"]["replicas"].as_i64(), containers.len()), (Some(3), 1), "{api}");
    assert_eq!(containers[0]["image"], "api:2");
}

/// `fieldValidation`: Strict refuses fields the kind does not have, Warn (the default) writes
/// and warns, Ignore stays silent.
#[test]
fn unknown_fields_are_refused_or_warned() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    let body = |name: &str| {
        let path = dir.path().join(format!("{name}.json"));
        let object = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "colour": "red"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
                     "spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "x"}]}}}});
        std::fs::write(&path, object.to_string()).unwrap();
        path.display().to_string()
    };
    let url = |mode: &str| format!("/apis/apps/v1/namespaces/default/deployments?fieldValidation={mode}");
    let error = server.fails(kubectl, &["create", "--raw", &url("Strict"), "-f", &body("strict")]);
    assert!(
        error.contains(r#"strict decoding error: unknown field "metadata.colour", unknown field "spec.template.spec.containers[0].imagePolicy""#),
        "{error}"
    );
    let out = server.kubectl(kubectl, &["create", "--raw", &url("Warn"), "-f", &body("warned")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains(r#"Warning: unknown field "metadata.colour""#), "{stderr}");
    let out = server.kubectl(kubectl, &["create", "--raw", &url("Ignore"), "-f", &body("ignored")]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let error = server.fails(kubectl, &["create", "--raw", &url("Loose"), "-f", &body("loose")]);
    assert!(error.contains("fieldValidation parameter unsupported"), "{error}");
}

/// With OpenAPI v3 served, kubectl's defaults work: `apply` validates (on the server, once it
/// sees PATCH takes `fieldValidation`), `explain` reads the schemas, `edit` validates its edit.
#[test]
fn openapi_lets_kubectl_validate_explain_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let manifest = dir.path().join("app.yaml");
    std::fs::write(&manifest, APP).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: w}\ndata: {a: b}\nextra: 1\n").unwrap();
    // kubectl 1.27 and 1.28 also fetch /openapi/v2 (protobuf) first.
    for (n, kubectl) in KUBECTLS.iter().enumerate() {
        let out = server.ok(kubectl, &["apply", "-f", manifest.to_str().unwrap()]);
        assert!(out.contains("deployment.apps/web"), "{kubectl}: {out}");
        let error = server.fails(kubectl, &["apply", "-f", bad.to_str().unwrap()]);
        assert!(error.contains(r#"strict decoding error: unknown field "extra""#), "{kubectl}: {error}");

        let explained = server.ok(kubectl, &["explain", "deployment.spec.strategy"]);
        assert!(explained.contains("rollingUpdate\t<RollingUpdateDeployment>"), "{kubectl}: {explained}");
        let explained = server.ok(kubectl, &["explain", "pods.spec.containers.ports"]);
        assert!(explained.contains("containerPort\t<integer> -required-"), "{kubectl}: {explained}");

        let image = format!("nginx:1.{}", 26 + n);
        let edited = std::process::Command::new(kubectl)
            .args(["--kubeconfig", server.kubeconfig().to_str().unwrap(), "edit", "deployment", "web"])
            .env("KUBE_EDITOR", format!("sed -i -E s/nginx:1.2[0-9]+/{image}/"))
            .output()
            .unwrap();
        assert!(edited.status.success(), "{kubectl}: {}", String::from_utf8_lossy(&edited.stderr));
        let now = server
            .ok(kubectl, &["get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
        assert_eq!(now, image, "{kubectl}");
    }
}

/// `kubectl apply --server-side` creates, then updates (a later slice tracks managedFields to
/// also remove fields an applier stopped setting). YAML bodies parse; bad YAML is a 400.
#[test]
fn server_side_apply_and_yaml_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let first = dir.path().join("first.yaml");
    std::fs::write(&first, APP).unwrap();
    let second = dir.path().join("second.yaml");
    std::fs::write(&second, APP.replace("replicas: 3", "replicas: 4").replace("nginx:1.25", "nginx:1.26")).unwrap();
    for kubectl in KUBECTLS {
        let out = server.ok(kubectl, &["apply", "--server-side", "-f", first.to_str().unwrap()]);
        assert!(out.contains("deployment.apps/web serverside-applied"), "{kubectl}: {out}");
        server.ok(kubectl, &["apply", "--server-side", "-f", second.to_str().unwrap()]);
        let d = json(&server, kubectl, &["get", "deployment", "web"]);
        assert_eq!(d["spec"]["replicas"], 4, "{kubectl}");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.26", "{kubectl}");
        assert_eq!(d["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        server.ok(kubectl, &["delete", "-f", first.to_str().unwrap()]);
    }

    // YAML bodies, with curl as the admin.
    let post_yaml = |body: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-sk",
                "-w",
                "\n%{http_code}",
                "-XPOST",
                "-H",
                "Content-Type: application/yaml",
                "--data-binary",
                body,
            ])
            .arg("--cert")
            .arg(dir.path().join("pki/admin.crt"))
            .arg("--key")
            .arg(dir.path().join("pki/admin.key"))
            .arg(format!("{}/api/v1/namespaces/default/configmaps", server.url))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let created = post_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: \"1\"\n");
    assert!(created.ends_with("\n201") && created.contains(r#""data":{"a":"1"}"#), "{created}");
    let refused = post_yaml("a: [1\nb: }\n");
    assert!(refused.ends_with("\n400") && refused.contains("not valid YAML"), "{refused}");
}

/// Writes that upstream refuses or handles specially, each once a defect here.
#[test]
fn edge_writes_are_refused_or_kept_safe() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    let cm = dir.path().join("cm.json");
    std::fs::write(&cm, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#).unwrap();
    // A namespaced kind is written only within a namespace.
    let error = server.fails(kubectl, &["create", "--raw", "/api/v1/configmaps", "-f", cm.to_str().unwrap()]);
    assert!(error.contains("MethodNotAllowed") || error.contains("not allow"), "{error}");
    let error = server.fails(kubectl, &["delete", "--raw", "/api/v1/configmaps"]);
    assert!(error.contains("MethodNotAllowed") || error.contains("not allow"), "{error}");

    // Foreground and orphan deletes finish (there is no garbage collector to wait for yet).
    apply(&server, kubectl, dir.path(), "f", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: f}\n");
    server.ok(kubectl, &["delete", "configmap", "f", "--cascade=foreground", "--timeout=10s"]);
    apply(&server, kubectl, dir.path(), "o", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: o}\n");
    server.ok(kubectl, &["delete", "configmap", "o", "--cascade=orphan", "--timeout=10s"]);

    // A replace that leaves out the cluster IP and node port keeps them.
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  type: NodePort\n  ports: [{port: 80}]\n";
    apply(&server, kubectl, dir.path(), "s", svc);
    let before = json(&server, kubectl, &["get", "service", "s"]);
    let path = dir.path().join("s2.yaml");
    std::fs::write(&path, svc.replace("[{port: 80}]", "[{port: 80, name: web}]")).unwrap();
    server.ok(kubectl, &["replace", "-f", path.to_str().unwrap()]);
    let after = json(&server, kubectl, &["get", "service", "s"]);
    assert_eq!(after["spec"]["clusterIP"], before["spec"]["clusterIP"]);
    assert_eq!(after["spec"]["ports"][0]["nodePort"], before["spec"]["ports"][0]["nodePort"]);

    // A huge grace period is capped, not a crash.
    apply(
        &server,
        kubectl,
        dir.path(),
        "p",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: busybox}]\n",
    );
    server.ok(kubectl, &["delete", "pod", "p", "--grace-period=9000000000000", "--wait=false"]);
    assert!(server.ok(kubectl, &["get", "pod", "p"]).contains("Terminating"));

    // A JSON patch that doubles the object with each copy is stopped.
    let mut ops = vec![serde_json::json!({"op": "add", "path": "/data", "value": {"k": "x".repeat(1000)}})];
    for i in 0..40 {
        ops.push(serde_json::json!({"op": "copy", "from": "/data", "path": format!("/data/c{i}")}));
    }
    apply(&server, kubectl, dir.path(), "big", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\n");
    let patch = serde_json::Value::Array(ops).to_string();
    let error = server.fails(kubectl, &["patch", "configmap", "big", "--type=json", "-p", &patch]);
    assert!(error.contains("copies more than"), "{error}");
}

/// The rest of the kinds print upstream's columns too.
#[test]
fn rbac_autoscaling_policy_and_scheduling_kinds_print_upstream_columns() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    apply(&server, kubectl, dir.path(), "app", APP);
    for args in [
        &["create", "role", "r", "--verb=get", "--resource=pods"][..],
        &["create", "rolebinding", "rb", "--role=r", "--user=alice", "--serviceaccount=default:sa"],
        &["autoscale", "deployment", "web", "--max=5", "--cpu-percent=80"],
        &["create", "pdb", "p", "--selector=app=web", "--min-available=1"],
        &["create", "priorityclass", "high", "--value=1000"],
    ] {
        server.ok(kubectl, args);
    }
    let header = |resource: &str| {
        let out = server.ok(kubectl, &["get", resource, "-o", "wide"]);
        (out.lines().next().unwrap().split_whitespace().map(str::to_owned).collect::<Vec<_>>(), out)
    };
    assert_eq!(header("roles").0, ["NAME", "CREATED", "AT"]);
    let (columns, out) = header("rolebindings");
    assert_eq!(columns, ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]);
    assert!(out.contains("Role/r") && out.contains("alice") && out.contains("default:sa"), "{out}");
    let (columns, out) = header("hpa");
    assert_eq!(columns, ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]);
    assert!(out.contains("Deployment/web") && out.contains("cpu: <unknown>/80%"), "{out}");
    let (columns, _) = header("pdb");
    assert_eq!(columns, ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]);
    let (columns, out) = header("priorityclasses");
    assert_eq!(columns, ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]);
    assert!(out.contains("PreemptLowerPriority"), "{out}");
}

/// A kind served in two versions is one object: kubectl 1.27's `autoscale` writes
/// autoscaling/v1, which reads back as v2; an events.k8s.io/v1 Event is a core Event.
#[test]
fn versions_of_one_kind_are_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let (old, new) = (KUBECTLS[0], KUBECTLS[1]);
    apply(&server, new, dir.path(), "app", APP);
    server.ok(old, &["autoscale", "deployment", "web", "--max=5", "--cpu-percent=70"]);
    let v2 = json(&server, new, &["get", "hpa.v2.autoscaling", "web"]);
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70, "{v2}");
    assert!(v2["metadata"].get("annotations").is_none(), "{v2}");
    server.ok(old, &["patch", "hpa", "web", "-p", r#"{"spec":{"maxReplicas":7}}"#]);
    let v1 = server.ok(new, &["get", "--raw", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web"]);
    let v1: Value = serde_json::from_str(&v1).unwrap();
    assert_eq!(
        (v1["spec"]["maxReplicas"].as_i64(), v1["spec"]["targetCPUUtilizationPercentage"].as_i64()),
        (Some(7), Some(70))
    );
    let listed = server.ok(new, &["get", "hpa"]);
    assert!(listed.contains("cpu: <unknown>/70%"), "{listed}");

    let event = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: e1}\neventTime: \"2026-11-22T08:00:00.000000Z\"\n\
                 reportingController: me\nreportingInstance: me-1\naction: Test\nreason: Testing\ntype: Normal\nnote: hello\n\
                 regarding: {kind: Pod, name: solo, namespace: default}\n";
    apply(&server, new, dir.path(), "event", event);
    let core = json(&server, new, &["get", "events.v1.", "e1"]);
    assert_eq!(
        (core["message"].as_str(), core["involvedObject"]["name"].as_str()),
        (Some("hello"), Some("solo")),
        "{core}"
    );
    let shown = server.ok(new, &["get", "events"]);
    assert!(shown.contains("pod/solo") && shown.contains("hello"), "{shown}");
}

/// The rest of kubectl's everyday reading and waiting: describe, the output forms,
/// componentstatuses, and `wait` for a condition (the Deployment controller's, with a
/// simulated node to run the pods) and for deletion.
#[test]
fn describe_output_forms_and_wait() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with(dir.path(), &["--simulated-nodes", "1"]);
    for (n, kubectl) in KUBECTLS.iter().enumerate() {
        let ns = format!("w{n}");
        namespace(&server, kubectl, dir.path(), &ns);
        apply_in(&server, kubectl, dir.path(), &ns, "app", APP);
        let described = server.ok(kubectl, &["-n", &ns, "describe", "deployment", "web"]);
        assert!(described.contains("Replicas:") && described.contains("nginx:1.25"), "{kubectl}: {described}");
        assert!(described.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"), "{described}");
        let columns = server.ok(
            kubectl,
            &[
                "-n",
                &ns,
                "get",
                "deploy",
                "-o",
                "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[0].image",
            ],
        );
        assert_eq!(columns.lines().nth(1).unwrap().split_whitespace().collect::<Vec<_>>(), ["web", "nginx:1.25"]);
        let labels = server.ok(kubectl, &["get", "namespaces", "--show-labels"]);
        assert!(labels.contains(&format!("kubernetes.io/metadata.name={ns}")), "{labels}");
        let everywhere = server.ok(kubectl, &["get", "services", "-A"]);
        assert!(everywhere.contains(&format!("{ns} ")) && everywhere.contains("kubernetes"), "{everywhere}");
        let yaml = server.ok(kubectl, &["-n", &ns, "get", "job", "once", "-o", "yaml"]);
        assert!(yaml.contains("kind: Job") && yaml.contains("backoffLimit: 6"), "{yaml}");

        let waited =
            server.ok(kubectl, &["-n", &ns, "wait", "--for=condition=Available", "deployment/web", "--timeout=10s"]);
        assert!(waited.contains("condition met"), "{kubectl}: {waited}");
        server.ok(kubectl, &["-n", &ns, "delete", "job", "once", "--wait=false"]);
        server.ok(kubectl, &["-n", &ns, "wait", "--for=delete", "job/once", "--timeout=10s"]);
    }
    let statuses = server.ok(KUBECTLS[1], &["get", "componentstatuses"]);
    for component in ["etcd-0", "scheduler", "controller-manager"] {
        assert!(statuses.lines().any(|l| l.split_whitespace().take(2).eq([component, "Healthy"])), "{statuses}");
    }
}
