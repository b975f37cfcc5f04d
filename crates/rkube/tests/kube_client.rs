//! `rkube server` driven by the Rust `kube` crate, a client nobody here wrote: its kubeconfig
//! loading and TLS, typed CRUD, paginated lists, label selectors, watches that resume from a
//! resourceVersion, and the patch types this slice serves.

mod common;

use std::collections::BTreeMap;

use common::ServerProcess;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn client(server: &ServerProcess) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("read the admin kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A client that takes a 429, 503 or 504 as the answer: kube retries those for minutes by
/// default, as it should, but a test of the answer itself needs it once.
async fn client_without_retries(server: &ServerProcess) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("read the admin kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

fn configmap(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_owned());
    cm.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    cm.data = Some(BTreeMap::from([("key".to_owned(), "v".to_owned())]));
    cm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_crud_pagination_and_selectors() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut team = Namespace::default();
    team.metadata.name = Some("team".into());
    namespaces.create(&PostParams::default(), &team).await.unwrap();
    assert_eq!(namespaces.get("team").await.unwrap().status.unwrap().phase.as_deref(), Some("Active"));

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    for i in 0..25 {
        let tier = if i % 5 == 0 { "front" } else { "back" };
        cms.create(&PostParams::default(), &configmap(&format!("cm-{i:02}"), &[("tier", tier)])).await.unwrap();
    }
    let duplicate = cms.create(&PostParams::default(), &configmap("cm-00", &[])).await.unwrap_err();
    assert!(matches!(&duplicate, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"), "{duplicate:?}");

    // Pages of 10, each carrying the first page's resourceVersion in its continue token.
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(10);
    loop {
        let page = cms.list(&params).await.unwrap();
        assert!(page.items.len() <= 10);
        names.extend(page.items.into_iter().map(|cm| cm.metadata.name.unwrap()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(names, (0..25).map(|i| format!("cm-{i:02}")).collect::<Vec<_>>());
    // At resourceVersion 0 the watch cache answers whole, ignoring the limit, as upstream's
    // does: client-go's informers list so (kube-rs leaves the resourceVersion out when it
    // pages, so the request is made by hand).
    let request =
        http::Request::get("/api/v1/namespaces/team/configmaps?limit=10&resourceVersion=0").body(Vec::new()).unwrap();
    let any: kube::core::ObjectList<ConfigMap> = client.request(request).await.unwrap();
    assert_eq!(any.items.len(), 25);
    assert!(any.metadata.continue_.is_none_or(|c| c.is_empty()));

    let front = cms.list(&ListParams::default().labels("tier=front")).await.unwrap();
    assert_eq!(front.items.len(), 5);
    // resourceVersion with Exact reads the collection as it was then; one from the future
    // is a 504, as upstream answers.
    let then = front.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &configmap("late", &[("tier", "front")])).await.unwrap();
    let exact = ListParams::default().labels("tier=front").at(&then).matching(kube::api::VersionMatch::Exact);
    assert_eq!(cms.list(&exact).await.unwrap().items.len(), 5);
    assert_eq!(cms.list(&ListParams::default().labels("tier=front")).await.unwrap().items.len(), 6);
    cms.delete("late", &DeleteParams::default()).await.unwrap();
    let future = ListParams::default().at("999999999").matching(kube::api::VersionMatch::NotOlderThan);
    let once: Api<ConfigMap> = Api::namespaced(client_without_retries(&server).await, "team");
    let error = once.list(&future).await.unwrap_err();
    assert!(matches!(&error, kube::Error::Api(s) if s.code == 504), "{error:?}");
    // The limit counts selected objects: full pages of matches, however sparse they are.
    let page = cms.list(&ListParams::default().labels("tier=front").limit(2)).await.unwrap();
    let names: Vec<_> = page.items.iter().map(|cm| cm.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["cm-00", "cm-05"]);
    let token = page.metadata.continue_.unwrap();
    let rest = cms.list(&ListParams::default().labels("tier=front").limit(10).continue_token(&token)).await.unwrap();
    let names: Vec<_> = rest.items.iter().map(|cm| cm.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, ["cm-10", "cm-15", "cm-20"]);
    assert!(rest.metadata.continue_.is_none_or(|c| c.is_empty()));
    let by_name = cms.list(&ListParams::default().fields("metadata.name=cm-07")).await.unwrap();
    assert_eq!(by_name.items.len(), 1);

    let missing = cms.get("nope").await.unwrap_err();
    assert!(matches!(&missing, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"), "{missing:?}");

    // A stale resourceVersion is a conflict.
    let mut stale = cms.get("cm-01").await.unwrap();
    cms.replace("cm-01", &PostParams::default(), &stale).await.unwrap();
    stale.data = Some(BTreeMap::from([("key".to_owned(), "late".to_owned())]));
    let conflict = cms.replace("cm-01", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(&conflict, kube::Error::Api(s) if s.code == 409 && s.reason == "Conflict"), "{conflict:?}");

    cms.delete("cm-02", &DeleteParams::default()).await.unwrap();
    assert!(cms.get_opt("cm-02").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_and_patches_apply() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");

    let start = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &configmap("w", &[])).await.unwrap();
    let merge = serde_json::json!({"data": {"key": "merged"}, "metadata": {"labels": {"patched": "yes"}}});
    cms.patch("w", &PatchParams::default(), &Patch::Merge(&merge)).await.unwrap();
    let ops: json_patch::Patch =
        serde_json::from_value(serde_json::json!([{"op": "replace", "path": "/data/key", "value": "json"}])).unwrap();
    let patched = cms.patch("w", &PatchParams::default(), &Patch::Json::<()>(ops)).await.unwrap();
    assert_eq!(patched.data.unwrap()["key"], "json");
    assert_eq!(patched.metadata.labels.unwrap()["patched"], "yes");
    let strategic = serde_json::json!({"metadata": {"finalizers": ["a/b"]}, "data": {"other": "s"}});
    let patched = cms.patch("w", &PatchParams::default(), &Patch::Strategic(&strategic)).await.unwrap();
    assert_eq!(patched.metadata.finalizers.unwrap(), ["a/b"]);
    assert_eq!(patched.data.as_ref().unwrap()["other"], "s");
    let unset = serde_json::json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/b"]}});
    let patched = cms.patch("w", &PatchParams::default(), &Patch::Strategic(&unset)).await.unwrap();
    assert!(patched.metadata.finalizers.unwrap_or_default().is_empty());
    // Strict field validation refuses a patch that adds an unknown field, as upstream: 422 on
    // the field `patch`.
    let strict = PatchParams { field_validation: Some(kube::api::ValidationDirective::Strict), ..Default::default() };
    let unknown = serde_json::json!({"spec": {"replicas": 2}});
    let refused = cms.patch("w", &strict, &Patch::Merge(&unknown)).await.unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 422 && s.message.contains(r#"strict decoding error: unknown field "spec""#)),
        "{refused:?}"
    );
    cms.delete("w", &DeleteParams::default()).await.unwrap();

    // A watch resumed from before all that replays it in order.
    let events: Vec<_> =
        cms.watch(&WatchParams::default().timeout(3), &start).await.unwrap().take(6).try_collect().await.unwrap();
    let seen: Vec<(String, Option<String>)> = events
        .into_iter()
        .filter_map(|event| match event {
            WatchEvent::Added(cm) => Some(("ADDED".into(), cm.data.and_then(|d| d.get("key").cloned()))),
            WatchEvent::Modified(cm) => Some(("MODIFIED".into(), cm.data.and_then(|d| d.get("key").cloned()))),
            WatchEvent::Deleted(cm) => Some(("DELETED".into(), cm.data.and_then(|d| d.get("key").cloned()))),
            _ => None,
        })
        .collect();
    let expected = [
        ("ADDED", "v"),
        ("MODIFIED", "merged"),
        ("MODIFIED", "json"),
        ("MODIFIED", "json"),
        ("MODIFIED", "json"),
        ("DELETED", "json"),
    ];
    assert_eq!(seen, expected.map(|(t, v)| (t.to_owned(), Some(v.to_owned()))));
}

fn pod(name: &str, labels: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    }))
    .unwrap()
}

/// What the scheduler and controllers will do through the API: bind pods, write status, scale,
/// and evict under a disruption budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_status_scale_and_eviction() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Bound by hand: the server's scheduler is told to leave it alone, as a pod for another
    // scheduler (it would otherwise race the binding below with its "0/0 nodes" condition).
    let mut p = pod("p", &[("app", "a")]);
    p.spec.as_mut().unwrap().scheduler_name = Some("by-hand".into());
    let created = pods.create(&PostParams::default(), &p).await.unwrap();
    assert_eq!(created.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(created.spec.as_ref().unwrap().service_account_name.as_deref(), Some("default"));
    // A binding made for another pod of that name (by uid) is refused, as upstream's UID
    // precondition refuses it.
    let other = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "uid": "not-p"},
                                   "target": {"kind": "Node", "name": "node-1"}});
    let refused = pods
        .create_subresource::<_, kube::core::Status>("binding", "p", &PostParams::default(), &other)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409 && s.message.contains("Precondition failed: UID in precondition: not-p")),
        "{refused:?}"
    );
    let uid = created.metadata.uid.clone().unwrap();
    let binding = serde_json::json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p", "uid": uid},
                                     "target": {"kind": "Node", "name": "node-1"}});
    let bound: kube::core::Status =
        pods.create_subresource("binding", "p", &PostParams::default(), &binding).await.unwrap();
    assert_eq!(bound.code, 201);
    let p = pods.get("p").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("node-1"));
    let scheduled = p.status.unwrap().conditions.unwrap();
    assert!(scheduled.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"), "{scheduled:?}");
    let again = pods
        .create_subresource::<_, kube::core::Status>("binding", "p", &PostParams::default(), &binding)
        .await
        .unwrap_err();
    assert!(
        matches!(&again, kube::Error::Api(s) if s.code == 409 && s.message.contains("already assigned to node \"node-1\"")),
        "{again:?}"
    );

    // Status goes through /status only; the main resource keeps it.
    let status = serde_json::json!({"status": {"phase": "Running", "podIP": "10.42.0.5"}});
    pods.patch_status("p", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let ignored = serde_json::json!({"status": {"phase": "Failed"}, "metadata": {"labels": {"x": "y"}}});
    let p = pods.patch("p", &PatchParams::default(), &Patch::Merge(&ignored)).await.unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(p.metadata.labels.as_ref().unwrap()["x"], "y");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
                 "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &deployment).await.unwrap();
    let scale = deployments.get_scale("d").await.unwrap();
    assert_eq!((scale.spec.unwrap().replicas, scale.status.unwrap().selector.as_deref()), (Some(1), Some("app=d")));
    deployments
        .patch_scale("d", &PatchParams::default(), &Patch::Merge(serde_json::json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    let d = deployments.get("d").await.unwrap();
    assert_eq!((d.spec.unwrap().replicas, d.metadata.generation), (Some(4), Some(2)));

    // A budget that allows no disruption refuses the eviction with 429; without it, it deletes.
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), "default");
    let budget: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "keep-a"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "a"}}},
    }))
    .unwrap();
    budgets.create(&PostParams::default(), &budget).await.unwrap();
    let once: Api<Pod> = Api::namespaced(client_without_retries(&server).await, "default");
    let refused = once.evict("p", &Default::default()).await.unwrap_err();
    assert!(matches!(&refused, kube::Error::Api(s) if s.code == 429), "{refused:?}");
    budgets.delete("keep-a", &DeleteParams::default()).await.unwrap();
    pods.evict("p", &Default::default()).await.unwrap();
    // Bound to a node, the pod is stopping gracefully rather than gone.
    let stopping = pods.get("p").await.unwrap();
    assert!(stopping.metadata.deletion_timestamp.is_some());
}

/// Many watches of one kind share the server's watch cache: each sees exactly its events, in
/// order, and a watch resumed from a recent resourceVersion replays what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_see_their_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let start = cms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut watchers = Vec::new();
    for i in 0..40 {
        let selector = if i % 2 == 0 { "tier=front" } else { "tier=back" };
        let params = WatchParams::default().labels(selector).timeout(10);
        watchers.push((i % 2 == 0, cms.watch(&params, &start).await.unwrap().boxed()));
    }
    for i in 0..10 {
        let tier = if i % 2 == 0 { "front" } else { "back" };
        cms.create(&PostParams::default(), &configmap(&format!("w{i}"), &[("tier", tier)])).await.unwrap();
    }
    let mut resume_from = None;
    for (front, mut stream) in watchers {
        let mut names = Vec::new();
        while names.len() < 5 {
            match stream.try_next().await.unwrap().unwrap() {
                WatchEvent::Added(cm) => {
                    if names.len() == 2 {
                        resume_from = cm.metadata.resource_version.clone();
                    }
                    names.push(cm.metadata.name.unwrap());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let expected: Vec<String> = (0..10).filter(|i| (i % 2 == 0) == front).map(|i| format!("w{i}")).collect();
        assert_eq!(names, expected);
    }
    // The last watcher watched the back tier; its third object was w5. Resuming from there
    // replays every later write, from the cache's window.
    let resumed: Vec<_> = cms
        .watch(&WatchParams::default().timeout(2), &resume_from.unwrap())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let names: Vec<String> = resumed
        .into_iter()
        .map(|e| match e {
            WatchEvent::Added(cm) => cm.metadata.name.unwrap(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(names, ["w6", "w7", "w8", "w9"]);
}

/// Fuzzes the server's request decoding and patching over real HTTP: mutated and truncated
/// bodies, in every content type, to create, replace and patch. No answer may be a 500, and
/// the server must still answer at the end. `RKUBE_FUZZ_SCALE=n` runs n times as many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_client_errors_never_500s() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;
    let valid = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "target", "labels": {"a": "b"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                                      "env": [{"name": "X", "value": "1"}]}]}}},
    })
    .to_string()
    .into_bytes();
    let create = http::Request::post("/apis/apps/v1/namespaces/default/deployments")
        .header("content-type", "application/json")
        .body(valid.clone())
        .unwrap();
    client.request_text(create).await.unwrap();

    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let scale: usize = std::env::var("RKUBE_FUZZ_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let types = [
        "application/json",
        "application/yaml",
        "application/vnd.kubernetes.protobuf",
        "application/merge-patch+json",
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ];
    let mut codes = std::collections::BTreeMap::new();
    for round in 0..600 * scale {
        let mut body = valid.clone();
        match next() % 4 {
            0 => body.truncate((next() as usize) % body.len()),
            1 => {
                for _ in 0..1 + next() % 8 {
                    let at = (next() as usize) % body.len();
                    body[at] = next() as u8;
                }
            }
            2 => {
                // A structurally valid document with a field of the wrong type or shape.
                let mut object: serde_json::Value = serde_json::from_slice(&valid).unwrap();
                let wrong = [
                    serde_json::json!(null),
                    serde_json::json!(7),
                    serde_json::json!("x"),
                    serde_json::json!([]),
                    serde_json::json!({"$patch": "delete"}),
                ];
                let paths = [
                    "/spec",
                    "/spec/replicas",
                    "/metadata",
                    "/metadata/name",
                    "/spec/template/spec/containers",
                    "/spec/template/spec/containers/0/ports/0",
                ];
                *object.pointer_mut(paths[(next() as usize) % paths.len()]).unwrap() =
                    wrong[(next() as usize) % wrong.len()].clone();
                body = object.to_string().into_bytes();
            }
            _ => body = (0..next() % 64).map(|_| next() as u8).collect(),
        }
        let content_type = types[(next() as usize) % types.len()];
        let (method, path) = match round % 3 {
            0 => ("POST", "/apis/apps/v1/namespaces/default/deployments"),
            1 => ("PUT", "/apis/apps/v1/namespaces/default/deployments/target"),
            _ => ("PATCH", "/apis/apps/v1/namespaces/default/deployments/target"),
        };
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.clone())
            .unwrap();
        let code = match client.send(request.map(kube::client::Body::from)).await {
            Ok(response) => response.status().as_u16(),
            Err(e) => panic!("no answer to {method} {content_type} {:?}: {e}", String::from_utf8_lossy(&body)),
        };
        assert!(code < 500, "{method} {content_type} {:?} got {code}", String::from_utf8_lossy(&body));
        *codes.entry(code).or_insert(0) += 1;
    }
    eprintln!("answers by code: {codes:?}");
    assert!(codes.keys().any(|c| *c >= 400), "the fuzzer never hit an error: {codes:?}");
    let health = client.request_text(http::Request::get("/readyz").body(Vec::new()).unwrap()).await.unwrap();
    assert_eq!(health, "ok");
}

/// Lists are served from the watch cache, as upstream's consistent reads from cache are: a
/// list without a resourceVersion sees every write made before it, even when the last write
/// was to another kind (the cache asks the store for progress rather than waiting for its
/// next event), pages continue from the store at the first page's revision, and exact reads
/// go to the store. Checked against both stores, with the cache's events held back 200 ms
/// (`RKUBE_WATCH_CACHE_LAG_MS`), so a list that did not wait for the cache would miss writes.
async fn lists_from_the_cache(server: &ServerProcess) {
    let client = client(server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "default");
    for i in 0..8 {
        let created =
            cms.create(&PostParams::default(), &configmap(&format!("c{i}"), &[("n", &i.to_string())])).await.unwrap();
        let created_at: i64 = created.metadata.resource_version.unwrap().parse().unwrap();
        let started = std::time::Instant::now();
        let list = cms.list(&ListParams::default()).await.unwrap();
        assert!(list.items.iter().any(|c| c.metadata.name.as_deref() == Some(&*format!("c{i}"))), "c{i} not listed");
        assert!(list.metadata.resource_version.unwrap().parse::<i64>().unwrap() >= created_at);
        // A write to another kind moves the store past the configmaps' last event.
        let mut secret = k8s_openapi::api::core::v1::Secret::default();
        secret.metadata.name = Some(format!("s{i}"));
        secrets.create(&PostParams::default(), &secret).await.unwrap();
        let list = cms.list(&ListParams::default()).await.unwrap();
        assert_eq!(
            list.items.iter().filter(|c| c.metadata.name.as_deref().is_some_and(|n| n.starts_with('c'))).count(),
            i + 1
        );
        let secrets_listed = secrets.list(&ListParams::default().labels("")).await.unwrap();
        assert!(secrets_listed.items.iter().any(|s| s.metadata.name.as_deref() == Some(&*format!("s{i}"))));
        // Two lists waited out the lag; none waited for the 3 s fallback.
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "fresh lists waited {:?}", started.elapsed());
    }

    // Pages: the first from the cache, the rest from the store at the first page's revision,
    // so a write between pages is not seen.
    let first = cms.list(&ListParams::default().limit(3)).await.unwrap();
    let revision = first.metadata.resource_version.clone().unwrap();
    let mut names: Vec<String> = first.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    cms.create(&PostParams::default(), &configmap("z-late", &[])).await.unwrap();
    let mut token = first.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = cms.list(&ListParams::default().limit(3).continue_token(&t)).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(revision.as_str()));
        names.extend(page.items.iter().map(|c| c.metadata.name.clone().unwrap()));
        token = page.metadata.continue_;
    }
    let expected: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
    let mine: Vec<String> = names.iter().filter(|n| n.starts_with('c') && n.len() == 2).cloned().collect();
    assert_eq!(mine, expected, "pages: {names:?}");
    assert!(!names.contains(&"z-late".to_owned()));

    // Selectors count towards the limit from the cache as from the store.
    let odd = cms.list(&ListParams::default().labels("n in (1,3,5,7)").limit(2)).await.unwrap();
    let odd_names: Vec<_> = odd.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    assert_eq!(odd_names, ["c1", "c3"]);
    let rest = cms
        .list(
            &ListParams::default().labels("n in (1,3,5,7)").continue_token(odd.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    let rest_names: Vec<_> = rest.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect();
    assert_eq!(rest_names, ["c5", "c7"]);
    let by_field = cms.list(&ListParams::default().fields("metadata.name=c4")).await.unwrap();
    assert_eq!(by_field.items.len(), 1);

    // resourceVersion 0 takes the cache as it is; a given one is a lower bound; Exact reads
    // the store at that revision, where a later write is not yet.
    assert!(cms.list(&ListParams::default().match_any()).await.unwrap().items.len() >= 9);
    let not_older =
        cms.list(&ListParams::default().at(&revision).matching(kube::api::VersionMatch::NotOlderThan)).await.unwrap();
    assert!(not_older.metadata.resource_version.unwrap().parse::<i64>().unwrap() >= revision.parse::<i64>().unwrap());
    assert!(not_older.items.iter().any(|c| c.metadata.name.as_deref() == Some("z-late")));
    let exact = cms.list(&ListParams::default().at(&revision).matching(kube::api::VersionMatch::Exact)).await.unwrap();
    assert_eq!(exact.metadata.resource_version.as_deref(), Some(revision.as_str()));
    assert!(!exact.items.iter().any(|c| c.metadata.name.as_deref() == Some("z-late")));
    // The legacy exact read: a resourceVersion with a limit, and no resourceVersionMatch.
    let request =
        http::Request::get(format!("/api/v1/namespaces/default/configmaps?resourceVersion={revision}&limit=100"))
            .body(Vec::new())
            .unwrap();
    let legacy: serde_json::Value = serde_json::from_str(&client.request_text(request).await.unwrap()).unwrap();
    assert_eq!(legacy["metadata"]["resourceVersion"].as_str(), Some(revision.as_str()), "{legacy}");
    assert!(!legacy["items"].as_array().unwrap().iter().any(|c| c["metadata"]["name"] == "z-late"), "{legacy}");

    // A deletion leaves the cache too.
    cms.delete("c0", &DeleteParams::default()).await.unwrap();
    assert!(
        !cms.list(&ListParams::default()).await.unwrap().items.iter().any(|c| c.metadata.name.as_deref() == Some("c0"))
    );

    // The metrics say which reads the cache served and which went to the store.
    let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let metrics = client.request_text(request).await.unwrap();
    let count = |line: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line).and_then(|v| v.trim().parse::<u64>().ok()))
            .unwrap_or_else(|| panic!("no {line} in {metrics}"))
    };
    assert!(count("apiserver_cache_list_total{resource_prefix=\"/configmaps\"}") >= 20);
    // The continued pages and the exact read.
    assert!(count("apiserver_storage_list_total{resource=\"configmaps\"}") >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_served_from_the_watch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_with_env(dir.path(), &[], &[("RKUBE_WATCH_CACHE_LAG_MS", "200")]);
    lists_from_the_cache(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_served_from_the_watch_cache_over_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = rkube_store::etcd_process::EtcdProcess::start(&dir.path().join("etcd")).await.expect("start etcd");
    let data = dir.path().join("server");
    let flags = ["--store", "etcd", "--etcd-endpoints", etcd.endpoint()];
    let server = ServerProcess::start_with_env(&data, &flags, &[("RKUBE_WATCH_CACHE_LAG_MS", "200")]);
    lists_from_the_cache(&server).await;
}

/// Metadata-only reads (`as=PartialObjectMetadata`), as metadata informers and the garbage
/// collector use them: gets, lists (from the cache and from the store) and watches answer
/// with metadata alone, and the kube crate's `PartialObjectMeta` API reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_reads() {
    use kube::core::PartialObjectMeta;
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(&PostParams::default(), &configmap("m1", &[("tier", "front")])).await.unwrap();
    cms.create(&PostParams::default(), &configmap("m2", &[("tier", "back")])).await.unwrap();

    let metas: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(client.clone(), "default");
    let one = metas.get("m1").await.unwrap();
    assert_eq!(one.types.as_ref().unwrap().kind, "PartialObjectMetadata");
    assert_eq!(one.metadata.labels.as_ref().unwrap()["tier"], "front");
    let list = metas.list(&ListParams::default().labels("tier=back")).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m2"));
    assert_eq!(list.types.kind, "PartialObjectMetadataList");

    // The raw answers carry no data, from the cache and from the store (an exact revision).
    let revision = list.metadata.resource_version.clone().unwrap();
    for query in [String::new(), format!("?resourceVersion={revision}&resourceVersionMatch=Exact")] {
        let request = http::Request::get(format!("/api/v1/namespaces/default/configmaps{query}"))
            .header("Accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
            .body(Vec::new())
            .unwrap();
        let text = client.request_text(request).await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["kind"], "PartialObjectMetadataList", "{text}");
        let items = body["items"].as_array().unwrap();
        assert!(items.iter().any(|i| i["metadata"]["name"] == "m1"), "{text}");
        assert!(items.iter().all(|i| i["kind"] == "PartialObjectMetadata" && i.get("data").is_none()), "{text}");
    }

    // A watch: the initial state and later changes, metadata only.
    let mut events = metas.watch(&WatchParams::default().timeout(5), "0").await.unwrap().boxed();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        if let WatchEvent::Added(m) = events.try_next().await.unwrap().unwrap() {
            seen.push(m.metadata.name.unwrap());
        }
    }
    cms.create(&PostParams::default(), &configmap("m3", &[])).await.unwrap();
    loop {
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(m) if m.metadata.name.as_deref() == Some("m3") => {
                assert_eq!(m.types.unwrap().kind, "PartialObjectMetadata");
                break;
            }
            _ => {}
        }
    }
}

/// Creates racing for a quota's last units: exactly the quota's worth get in, the rest get
/// upstream's 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_never_exceed_a_quota() {
    use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let client = client(&server).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "default");
    let quota: ResourceQuota =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "five"}, "spec": {"hard": {"pods": "5"}}}))
            .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let creates = (0..40).map(|i| {
        let pods = pods.clone();
        async move {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("racer-{i}")},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await
        }
    });
    let results = futures::future::join_all(creates).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 5, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(
            matches!(refused, kube::Error::Api(s) if s.code == 403 && s.message.contains("exceeded quota: five")),
            "{refused:?}"
        );
    }
}
