//! `rkube server` driven by the real kubectl binaries (1.27 and 1.33) and curl: each test
//! starts its own server process on a free loopback port with its own data and cache dirs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ServerProcess;

const KUBECTLS: [&str; 2] =
    ["/usr/lib/google-cloud-sdk/bin/kubectl.1.27", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"];

fn write_manifest(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(format!("{name}-{value}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\ndata:\n  key: {value}\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn version_discovery_and_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    // The control plane alone, as `--no-agent` asks.
    let server = ServerProcess::start_with(dir.path(), &["--no-agent"]);
    for kubectl in KUBECTLS {
        let version: serde_json::Value = serde_json::from_str(&server.ok(kubectl, &["version", "-o", "json"])).unwrap();
        assert_eq!(version["serverVersion"]["minor"], "33", "{kubectl}");
        let resources = server.ok(kubectl, &["api-resources", "--no-headers"]);
        assert!(
            resources
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["configmaps", "cm", "v1", "true", "ConfigMap"]),
            "{kubectl}: {resources}"
        );
        let namespaces = server.ok(kubectl, &["get", "namespaces", "-o", "name"]);
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            assert!(namespaces.contains(&format!("namespace/{ns}\n")), "{kubectl}: {namespaces}");
        }
        let phase = server.ok(kubectl, &["get", "namespace", "default", "-o", "jsonpath={.status.phase}"]);
        assert_eq!(phase, "Active");
    }
}

#[test]
fn configmap_lifecycle_with_both_kubectls() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for (n, kubectl) in KUBECTLS.iter().enumerate() {
        let name = format!("app-{n}");
        let first = write_manifest(dir.path(), &name, "one");
        assert_eq!(server.ok(kubectl, &["create", "-f", &first]), format!("configmap/{name} created\n"));
        let stderr = server.fails(kubectl, &["create", "-f", &first]);
        assert!(stderr.contains(&format!("configmaps \"{name}\" already exists")), "{stderr}");

        let object: serde_json::Value =
            serde_json::from_str(&server.ok(kubectl, &["get", "cm", &name, "-o", "json"])).unwrap();
        assert_eq!(object["data"]["key"], "one");
        assert!(object["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
        let rv = object["metadata"]["resourceVersion"].as_str().unwrap().to_owned();

        let second = write_manifest(dir.path(), &name, "two");
        server.ok(kubectl, &["replace", "-f", &second]);
        let after: serde_json::Value =
            serde_json::from_str(&server.ok(kubectl, &["get", "cm", &name, "-o", "json"])).unwrap();
        assert_eq!(after["data"]["key"], "two");
        assert_eq!(after["metadata"]["uid"], object["metadata"]["uid"], "the uid survives an update");
        assert_ne!(after["metadata"]["resourceVersion"].as_str().unwrap(), rv);

        assert_eq!(server.ok(kubectl, &["get", "cm", &name, "-o", "jsonpath={.data.key}"]), "two");
        assert!(server.ok(kubectl, &["get", "cm", "-A", "-o", "name"]).contains(&format!("configmap/{name}\n")));
        server.ok(kubectl, &["delete", "cm", &name]);
        let stderr = server.fails(kubectl, &["get", "cm", &name]);
        assert!(stderr.contains(&format!("Error from server (NotFound): configmaps \"{name}\" not found")), "{stderr}");
    }
}

#[test]
fn bad_requests_get_upstream_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    let missing_ns = dir.path().join("missing-ns.yaml");
    std::fs::write(&missing_ns, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: nope\n").unwrap();
    let stderr = server.fails(kubectl, &["create", "-f", missing_ns.to_str().unwrap()]);
    assert!(stderr.contains("namespaces \"nope\" not found"), "{stderr}");

    let bad_name = dir.path().join("bad-name.yaml");
    std::fs::write(&bad_name, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n").unwrap();
    let stderr = server.fails(kubectl, &["create", "-f", bad_name.to_str().unwrap()]);
    assert!(stderr.contains("ConfigMap \"Not_Valid\" is invalid: metadata.name: Invalid value"), "{stderr}");

    // Neither a client certificate nor a known token: 401.
    let out = Command::new(kubectl)
        .args(["--kubeconfig=/dev/null", "--insecure-skip-tls-verify", "--token=wrong", "--server", &server.url])
        .args(["get", "configmaps"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized")
            || String::from_utf8_lossy(&out.stderr).contains("provide credentials")
    );

    let curl = |path: &str| {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("{}{path}", server.url))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    // As the admin, with curl: bodies a client got wrong get a Status with upstream's code.
    let pki = dir.path().join("pki");
    let post = |body: &Path, http1: bool| {
        let mut curl = Command::new("curl");
        curl.args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-XPOST", "-H", "Content-Type: application/json"])
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg("--data-binary")
            .arg(format!("@{}", body.display()))
            .arg(format!("{}/api/v1/namespaces/default/configmaps", server.url));
        if http1 {
            curl.arg("--http1.1");
        }
        String::from_utf8(curl.output().unwrap().stdout).unwrap()
    };
    let file = |name: &str, content: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let huge =
        file("huge.json", format!(r#"{{"metadata":{{"name":"huge"}},"data":{{"k":"{}"}}}}"#, "x".repeat(4 << 20)));
    assert_eq!(post(&huge, false), "413", "over 3 MiB, HTTP/2");
    assert_eq!(post(&huge, true), "413", "over 3 MiB, HTTP/1.1");
    let big = file("big.json", format!(r#"{{"metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#, "x".repeat(2 << 20)));
    assert_eq!(post(&big, false), "413", "over the store's 1.5 MiB value limit");
    assert_eq!(post(&file("torn.json", r#"{"metadata":"#.into()), false), "400");
    assert_eq!(post(&file("kind.json", r#"{"kind":"Secret","metadata":{"name":"a"}}"#.into()), false), "400");
    assert_eq!(post(&file("type.json", r#"{"metadata":{"name":"a"},"data":{"k":5}}"#.into()), false), "400");

    assert_eq!(curl("/readyz"), "200", "health needs no credentials");
    assert_eq!(curl("/version"), "200");
    assert_eq!(curl("/api/v1/configmaps"), "401");
}

#[test]
fn a_watch_sees_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    let watch = Command::new(kubectl)
        .arg(format!("--kubeconfig={}", dir.path().join("kubeconfig").display()))
        .arg(format!("--cache-dir={}", dir.path().join("watch-cache").display()))
        .args(["get", "configmaps", "--watch", "--output-watch-events", "-o", "json", "--request-timeout=6s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    server.ok(kubectl, &["create", "-f", &write_manifest(dir.path(), "watched", "one")]);
    server.ok(kubectl, &["replace", "-f", &write_manifest(dir.path(), "watched", "two")]);
    server.ok(kubectl, &["delete", "configmap", "watched"]);
    let output = watch.wait_with_output().unwrap();
    let events: Vec<String> = serde_json::Deserializer::from_slice(&output.stdout)
        .into_iter::<serde_json::Value>()
        .map(|event| {
            let event = event.expect("watch output is JSON events");
            format!(
                "{} {}={}",
                event["type"].as_str().unwrap(),
                event["object"]["metadata"]["name"].as_str().unwrap(),
                event["object"]["data"]["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(events, ["ADDED watched=one", "MODIFIED watched=two", "DELETED watched=two"]);
}

#[test]
fn objects_and_credentials_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let kubectl = KUBECTLS[1];
    let server = ServerProcess::start(dir.path());
    server.ok(kubectl, &["create", "-f", &write_manifest(dir.path(), "durable", "kept")]);
    let kubeconfig = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    server.kill9();

    let server = ServerProcess::start(dir.path());
    assert_eq!(server.ok(kubectl, &["get", "cm", "durable", "-o", "jsonpath={.data.key}"]), "kept");
    let again = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    let ca = |k: &str| k.lines().find(|l| l.contains("certificate-authority-data")).unwrap().to_owned();
    assert_eq!(ca(&kubeconfig), ca(&again), "a restart reuses the cluster CA");
}

#[test]
fn labels_annotations_patches_and_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    for (n, kubectl) in KUBECTLS.iter().enumerate() {
        let (front, back) = (format!("front-{n}"), format!("back-{n}"));
        for name in [&front, &back] {
            server.ok(kubectl, &["create", "-f", &write_manifest(dir.path(), name, "v")]);
        }
        server.ok(kubectl, &["label", "cm", &front, "tier=front", &format!("kubectl={n}")]);
        server.ok(kubectl, &["label", "cm", &back, "tier=back", &format!("kubectl={n}")]);
        server.ok(kubectl, &["annotate", "cm", &front, "note=hello"]);
        let select =
            |selector: &str| server.ok(kubectl, &["get", "cm", "-l", &format!("kubectl={n},{selector}"), "-o", "name"]);
        assert_eq!(select("tier=front"), format!("configmap/{front}\n"));
        assert_eq!(select("tier!=front"), format!("configmap/{back}\n"));
        assert_eq!(select("tier in (front,back)"), format!("configmap/{back}\nconfigmap/{front}\n"));
        assert_eq!(select("tier notin (front)"), format!("configmap/{back}\n"));
        assert_eq!(select("!tier"), "");

        server.ok(kubectl, &["patch", "cm", &front, "--type=merge", "-p", r#"{"data":{"key":"merged"}}"#]);
        assert_eq!(server.ok(kubectl, &["get", "cm", &front, "-o", "jsonpath={.data.key}"]), "merged");
        server.ok(
            kubectl,
            &["patch", "cm", &front, "--type=json", "-p", r#"[{"op":"replace","path":"/data/key","value":"json"}]"#],
        );
        let patched =
            server.ok(kubectl, &["get", "cm", &front, "-o", "jsonpath={.data.key} {.metadata.annotations.note}"]);
        assert_eq!(patched, "json hello");
        let stderr = server.fails(
            kubectl,
            &["patch", "cm", &front, "--type=json", "-p", r#"[{"op":"test","path":"/data/key","value":"nope"}]"#],
        );
        assert!(stderr.contains("is invalid"), "{stderr}");

        server.ok(kubectl, &["label", "cm", &front, "tier-"]);
        assert_eq!(select("tier"), format!("configmap/{back}\n"));
        let stderr = server.fails(kubectl, &["get", "cm", "-l", "tier in (front"]);
        assert!(stderr.contains("unable to parse requirement"), "{stderr}");
    }
}

#[test]
fn get_prints_upstream_columns() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    server.ok(KUBECTLS[1], &["create", "-f", &write_manifest(dir.path(), "shown", "v")]);
    server.ok(KUBECTLS[1], &["label", "cm", "shown", "tier=front"]);
    fn words(text: &str) -> Vec<Vec<String>> {
        text.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
    }
    for kubectl in KUBECTLS {
        let namespaces = words(&server.ok(kubectl, &["get", "namespaces"]));
        assert_eq!(namespaces[0], ["NAME", "STATUS", "AGE"], "{kubectl}");
        assert!(namespaces.iter().any(|row| row[..2] == ["default", "Active"]), "{kubectl}: {namespaces:?}");

        let configmaps = words(&server.ok(kubectl, &["get", "configmaps"]));
        assert_eq!(configmaps[0], ["NAME", "DATA", "AGE"]);
        assert_eq!(configmaps[1][..2], ["shown", "1"]);
        assert_eq!(words(&server.ok(kubectl, &["get", "configmap", "shown"]))[1][..2], ["shown", "1"]);

        let all = words(&server.ok(kubectl, &["get", "configmaps", "-A", "--show-labels"]));
        assert_eq!(all[0], ["NAMESPACE", "NAME", "DATA", "AGE", "LABELS"]);
        assert_eq!(all[1][..3], ["default", "shown", "1"]);
        assert_eq!(all[1][4], "tier=front");
    }
}

#[test]
fn secrets_fold_string_data_and_service_accounts_list() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let manifest = dir.path().join("secret.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  user: admin\ndata:\n  pass: c2VjcmV0\n\
         ---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: robot\n",
    )
    .unwrap();
    for kubectl in KUBECTLS {
        server.ok(kubectl, &["create", "-f", manifest.to_str().unwrap()]);
        // stringData is write-only: stored base64-encoded in data, never read back.
        let secret: serde_json::Value =
            serde_json::from_str(&server.ok(kubectl, &["get", "secret", "creds", "-o", "json"])).unwrap();
        assert_eq!(secret["type"], "Opaque");
        assert_eq!(secret["data"], serde_json::json!({"user": "YWRtaW4=", "pass": "c2VjcmV0"}));
        assert!(secret.get("stringData").is_none());
        let row: Vec<String> = server
            .ok(kubectl, &["get", "secret", "creds", "--no-headers"])
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(row[..3], ["creds", "Opaque", "2"]);
        server.ok(kubectl, &["patch", "secret", "creds", "--type=merge", "-p", r#"{"stringData":{"user":"root"}}"#]);
        assert_eq!(server.ok(kubectl, &["get", "secret", "creds", "-o", "jsonpath={.data.user}"]), "cm9vdA==");
        let sa = server.ok(kubectl, &["get", "sa", "robot", "--no-headers"]);
        assert_eq!(sa.split_whitespace().take(2).collect::<Vec<_>>(), ["robot", "0"]);
        // A Secret's type never changes; frozen data stays frozen, though metadata may change.
        let stderr = server.fails(kubectl, &["patch", "secret", "creds", "--type=merge", "-p", r#"{"type":"Other"}"#]);
        assert!(stderr.contains("type: Invalid value") && stderr.contains("field is immutable"), "{stderr}");
        server.ok(kubectl, &["patch", "secret", "creds", "--type=merge", "-p", r#"{"immutable":true}"#]);
        let stderr = server
            .fails(kubectl, &["patch", "secret", "creds", "--type=merge", "-p", r#"{"stringData":{"user":"x"}}"#]);
        assert!(stderr.contains("data: Forbidden: field is immutable when `immutable` is set"), "{stderr}");
        server.ok(kubectl, &["label", "secret", "creds", "frozen=yes"]);
        server.ok(kubectl, &["delete", "-f", manifest.to_str().unwrap()]);
    }
}

#[test]
fn dry_runs_and_hostile_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let kubectl = KUBECTLS[1];
    let manifest = write_manifest(dir.path(), "dry", "v");
    let out = server.ok(kubectl, &["create", "--dry-run=server", "-f", &manifest]);
    assert_eq!(out, "configmap/dry created (server dry run)\n");
    assert!(server.fails(kubectl, &["get", "cm", "dry"]).contains("not found"), "a dry run stores nothing");
    server.ok(kubectl, &["create", "-f", &manifest]);
    server.ok(kubectl, &["delete", "cm", "dry", "--dry-run=server"]);
    server.ok(kubectl, &["get", "cm", "dry"]);

    let pki = dir.path().join("pki");
    let get = |path: &str| {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "2", "-w", "\n%{http_code}"])
            .arg("--cert")
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("{}{path}", server.url))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (body.to_owned(), code.to_owned())
    };
    let collection = "/api/v1/namespaces/default/configmaps";
    // Values that would overflow a deadline or a revision are refused or clamped, never a crash.
    assert_eq!(get(&format!("{collection}?watch=1&timeoutSeconds=18446744073709551615")).1, "200");
    assert_eq!(get(&format!("{collection}?watch=1&resourceVersion=9223372036854775807")).1, "400");
    let (body, code) = get(&format!("{collection}?limit=many"));
    assert_eq!(code, "400");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["kind"], "Status");
    // A continue token belongs to the collection it came from.
    server.ok(kubectl, &["create", "-f", &write_manifest(dir.path(), "second", "v")]);
    let (page, _) = get(&format!("{collection}?limit=1"));
    let token =
        serde_json::from_str::<serde_json::Value>(&page).unwrap()["metadata"]["continue"].as_str().unwrap().to_owned();
    assert_eq!(get(&format!("{collection}?limit=1&continue={token}")).1, "200");
    assert_eq!(get(&format!("/api/v1/namespaces/default/secrets?limit=1&continue={token}")).1, "400");
    // The server is still there.
    server.ok(kubectl, &["get", "cm", "dry"]);
}
