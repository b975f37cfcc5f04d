//! The ReplicaSet controller, which also runs ReplicationControllers (the same logic over a
//! map selector): keeps `spec.replicas` pods that match the selector, adopting
//! orphans that match, creating from the template in slow-start batches, deleting the least
//! valuable first, and reporting counts in status.
//!
//! Pods are read from the API on each pass (a consistent read), so a pass always sees the
//! pods the previous one created; upstream's "expectations" are not needed.

use std::sync::Arc;
use std::time::Duration;

use crate::informer::Informer;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::events::{Recorder, Type};
use crate::labels;

/// Upstream's cap on pods created or deleted in one pass.
const BURST: usize = 500;

struct Context {
    client: Client,
    recorder: Recorder,
}

/// `pods` is the shared pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    tokio::join!(
        run_for::<ReplicaSet>(client.clone(), &pods, "replicaset-controller"),
        run_for::<ReplicationController>(client, &pods, "replication-controller"),
    );
}

async fn run_for<K: Replicated>(client: Client, pods: &Informer<Pod>, component: &'static str) {
    let context = Arc::new(Context { recorder: Recorder::start(client.clone(), component), client: client.clone() });
    Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .owns_shared_stream(pods.touched())
        .run(reconcile::<K>, error_policy::<K>, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy<K: Replicated>(owner: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("{} {}: {error}", K::kind(&()), owner.name_any());
    Action::requeue(Duration::from_secs(2))
}

/// A pod counts toward replicas while it is neither finished nor being deleted.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// When the pod's Ready condition last turned true, if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0).unwrap_or_else(Timestamp::now))
}

/// Ready for at least `min_ready` seconds by `now`.
pub fn is_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    ready_since(pod).is_some_and(|since| {
        min_ready <= 0 || since + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_ready)) <= now
    })
}

/// The controller reference (`controller: true`) of an object, if it has one.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|r| r.controller == Some(true))
}

/// A controller reference to `owner`, as the objects it creates carry.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Orders pods so the ones to delete first come first, as upstream's `ActivePods` ranking:
/// unscheduled before scheduled, pending before running, not ready before ready, ready for
/// less time before longer, more restarts before fewer, newer before older.
pub fn deletion_order(pods: &mut [Pod]) {
    let rank = |pod: &Pod| {
        let scheduled = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
        let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Running") => 2,
            _ => 1,
        };
        let ready = ready_since(pod);
        let restarts: i32 = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
        (
            scheduled,
            phase,
            ready.is_some(),
            std::cmp::Reverse(ready),
            std::cmp::Reverse(restarts),
            std::cmp::Reverse(created),
        )
    };
    pods.sort_by_cached_key(rank);
}

/// Lists the objects `api` serves that match `selector`, adopts orphans among them for
/// `owner`, and returns the ones it controls, as upstream's ControllerRefManager does. Objects
/// another controller owns, and orphans being deleted, are left alone.
pub async fn claim<K>(api: &Api<K>, selector: &LabelSelector, owner: &OwnerReference) -> Result<Vec<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let listed = api.list(&ListParams::default().labels(&labels::to_query(selector))).await?;
    let mut owned = Vec::new();
    for object in listed.items {
        match controller_of(object.meta()) {
            Some(r) if r.uid == owner.uid => owned.push(object),
            Some(_) => {}
            None if object.meta().deletion_timestamp.is_none() => {
                let mut references = object.owner_references().to_vec();
                references.push(owner.clone());
                // The uid makes the adoption a no-op on an object recreated under the name.
                let patch = json!({"metadata": {"ownerReferences": references, "uid": object.uid()}});
                match api.patch(&object.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
                    Ok(adopted) => owned.push(adopted),
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 || s.code == 422 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            None => {}
        }
    }
    Ok(owned)
}

/// [`claim`] for the pods of a namespace.
pub async fn claim_pods(
    client: &Client,
    namespace: &str,
    selector: &LabelSelector,
    owner: &OwnerReference,
) -> Result<Vec<Pod>, Error> {
    claim(&Api::namespaced(client.clone(), namespace), selector, owner).await
}

/// A pod from a template, named after and owned by its controller.
pub fn pod_from_template(template: &PodTemplateSpec, owner: &OwnerReference, namespace: &str) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", owner.name)),
            namespace: Some(namespace.to_owned()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// Creates `count` pods in slow-start batches (1, 2, 4, ...), stopping at the first batch
/// with a failure. Returns how many were created.
pub async fn create_pods(
    client: &Client,
    namespace: &str,
    pod: &Pod,
    count: usize,
    recorder: &Recorder,
    about: &impl Resource<DynamicType = ()>,
) -> Result<usize, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (mut created, mut batch) = (0, 1);
    let post = PostParams::default();
    while created < count {
        let n = batch.min(count - created);
        let results = futures::future::join_all((0..n).map(|_| pods.create(&post, pod))).await;
        let mut failure = None;
        for result in results {
            match result {
                Ok(p) => {
                    created += 1;
                    recorder.record(
                        about,
                        Type::Normal,
                        "SuccessfulCreate",
                        "Create",
                        format!("Created pod: {}", p.name_any()),
                    );
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            recorder.record(about, Type::Warning, "FailedCreate", "Create", format!("Error creating: {e}"));
            return Err(e.into());
        }
        batch *= 2;
    }
    Ok(created)
}

/// What the replica logic needs of its owner, a ReplicaSet or a ReplicationController.
pub trait Replicated:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + k8s_openapi::serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    /// (selector, replicas, template, minReadySeconds).
    fn desired(&self) -> (LabelSelector, i32, PodTemplateSpec, i32);
    /// The current status, as JSON.
    fn status(&self) -> serde_json::Value;
}

impl Replicated for ReplicaSet {
    fn desired(&self) -> (LabelSelector, i32, PodTemplateSpec, i32) {
        let spec = self.spec.clone().unwrap_or_default();
        (
            spec.selector,
            spec.replicas.unwrap_or(1),
            spec.template.unwrap_or_default(),
            spec.min_ready_seconds.unwrap_or(0),
        )
    }
    fn status(&self) -> serde_json::Value {
        json!(self.status)
    }
}

impl Replicated for ReplicationController {
    fn desired(&self) -> (LabelSelector, i32, PodTemplateSpec, i32) {
        let spec = self.spec.clone().unwrap_or_default();
        // An RC's selector is a plain map; upstream defaults it to the template's labels.
        let template = spec.template.unwrap_or_default();
        let labels = spec.selector.or_else(|| template.metadata.as_ref().and_then(|m| m.labels.clone()));
        let selector = LabelSelector { match_labels: labels, match_expressions: None };
        (selector, spec.replicas.unwrap_or(1), template, spec.min_ready_seconds.unwrap_or(0))
    }
    fn status(&self) -> serde_json::Value {
        json!(self.status)
    }
}

async fn reconcile<K: Replicated>(owner_object: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    if owner_object.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = owner_object.namespace().unwrap_or_default();
    let (selector, replicas, template, min_ready) = owner_object.desired();
    // An empty selector would claim every pod in the namespace; validation refuses it, and
    // so does this loop.
    if selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    {
        return Ok(Action::await_change());
    }
    let owner = owner_reference(owner_object.as_ref());
    let pods = claim_pods(&ctx.client, &namespace, &selector, &owner).await?;
    let mut active: Vec<Pod> = pods.iter().filter(|p| is_active(p)).cloned().collect();
    let want = replicas.max(0) as usize;
    let mut failure = None;
    if active.len() < want {
        let pod = pod_from_template(&template, &owner, &namespace);
        let missing = (want - active.len()).min(BURST);
        if let Err(e) = create_pods(&ctx.client, &namespace, &pod, missing, &ctx.recorder, owner_object.as_ref()).await
        {
            failure = Some(e);
        }
    } else if active.len() > want {
        deletion_order(&mut active);
        let surplus: Vec<Pod> = active.drain(..(active.len() - want).min(BURST)).collect();
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let params = DeleteParams::default();
        let deletes = surplus.iter().map(|p| api.delete(p.metadata.name.as_deref().unwrap_or_default(), &params));
        for (pod, result) in surplus.iter().zip(futures::future::join_all(deletes).await) {
            match result {
                Ok(_) => ctx.recorder.record(
                    owner_object.as_ref(),
                    Type::Normal,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {}", pod.name_any()),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => failure = Some(e.into()),
            }
        }
    }
    let now = Timestamp::now();
    let counted: Vec<&Pod> = pods.iter().filter(|p| is_active(p)).collect();
    let template_labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    let current = owner_object.status();
    let status = json!({
        "replicas": counted.len(),
        "fullyLabeledReplicas": counted.iter().filter(|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count(),
        "readyReplicas": counted.iter().filter(|p| ready_since(p).is_some()).count(),
        "availableReplicas": counted.iter().filter(|p| is_available(p, min_ready, now)).count(),
        "observedGeneration": owner_object.meta().generation,
        "conditions": current["conditions"],
    });
    if crate::deployment::semantic(current) != crate::deployment::semantic(status.clone()) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({"status": status});
        api.patch_status(&owner_object.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    // Pods ready but not yet available for minReadySeconds become so without any event.
    let pending_available = counted.iter().any(|p| ready_since(p).is_some() && !is_available(p, min_ready, now));
    Ok(if pending_available { Action::requeue(Duration::from_secs(1)) } else { Action::await_change() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [], "nodeName": node},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn deletes_the_least_valuable_pods_first() {
        let mut pods = vec![
            pod("running-ready-old", Some("n"), "Running", true, "2026-01-01T00:00:00Z"),
            pod("unscheduled", None, "Pending", false, "2026-01-01T00:00:00Z"),
            pod("running-not-ready", Some("n"), "Running", false, "2026-01-01T00:00:00Z"),
            pod("pending", Some("n"), "Pending", false, "2026-01-01T00:00:00Z"),
            pod("running-ready-new", Some("n"), "Running", true, "2026-02-01T00:00:00Z"),
        ];
        deletion_order(&mut pods);
        let order: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(order, ["unscheduled", "pending", "running-not-ready", "running-ready-new", "running-ready-old"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let mut p = pod("p", Some("n"), "Running", true, "2026-01-01T00:00:00Z");
        let since: Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
        p.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(since));
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert!(is_available(&p, 0, at("2026-01-01T00:00:10Z")));
        assert!(!is_available(&p, 5, at("2026-01-01T00:00:14Z")));
        assert!(is_available(&p, 5, at("2026-01-01T00:00:15Z")));
        assert!(is_active(&p));
    }
}
