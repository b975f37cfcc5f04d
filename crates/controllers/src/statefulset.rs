//! The StatefulSet controller: pods with stable ordinal names (`web-0`, `web-1`, ...), each
//! with its PersistentVolumeClaims from `volumeClaimTemplates`, created in order and only once
//! their predecessors are Running and Ready (OrderedReady) or all at once (Parallel), removed
//! from the highest ordinal down, and updated from the highest ordinal down to the
//! `partition`. Each template revision is stored as a ControllerRevision, as upstream does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::informer::Informer;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::deployment::{semantic, template_hash};
use crate::events::{Recorder, Type};
use crate::labels;
use crate::replicaset::{claim, controller_of, is_available, owner_reference, pod_from_template, ready_since};

pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

struct Context {
    client: Client,
    recorder: Recorder,
}

/// `pods` is the shared pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    let context = Arc::new(Context {
        recorder: Recorder::start(client.clone(), "statefulset-controller"),
        client: client.clone(),
    });
    Controller::new(Api::<StatefulSet>::all(client.clone()), watcher::Config::default())
        .owns_shared_stream(pods.touched())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

fn error_policy(sts: Arc<StatefulSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("statefulset {}: {error}", sts.name_any());
    Action::requeue(Duration::from_secs(2))
}

/// The ordinal of a pod named `{set}-{n}`.
pub fn ordinal(set: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(set)?.strip_prefix('-')?.parse().ok().filter(|n: &i32| *n >= 0)
}

fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && ready_since(pod).is_some()
}

/// Ensures a ControllerRevision for the template exists; returns its name (the revision hash).
async fn revision(ctx: &Context, sts: &StatefulSet, namespace: &str) -> Result<String, Error> {
    let spec = sts.spec.clone().unwrap_or_default();
    let collisions = sts.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(&spec.template, collisions);
    let name = format!("{}-{hash}", sts.name_any());
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), namespace);
    let existing = api.list(&ListParams::default().labels(&labels::to_query(&spec.selector))).await?.items;
    let ours: Vec<&ControllerRevision> = existing
        .iter()
        .filter(|r| controller_of(&r.metadata).is_some_and(|o| Some(&o.uid) == sts.metadata.uid.as_ref()))
        .collect();
    if ours.iter().any(|r| r.name_any() == name) {
        return Ok(hash);
    }
    let number = ours.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    let mut labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(sts)]),
            ..Default::default()
        },
        // Upstream stores a patch that replaces the template; `rollout history` reads it.
        data: Some(RawExtension(json!({"spec": {"template": spec.template, "$patch": "replace"}}))),
        revision: number,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => Ok(hash),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(hash),
        Err(e) => Err(e.into()),
    }
}

/// The pod for an ordinal, with its claims' volumes.
fn pod_for(sts: &StatefulSet, namespace: &str, ordinal: i32, revision: &str) -> Pod {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = sts.name_any();
    let name = format!("{set}-{ordinal}");
    let mut pod = pod_from_template(&spec.template, &owner_reference(sts), namespace);
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_owned());
    if let Some(pod_spec) = pod.spec.as_mut() {
        pod_spec.hostname = Some(name.clone());
        pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        for claim in spec.volume_claim_templates.iter().flatten() {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            volumes.retain(|v| v.name != claim_name);
            volumes.push(Volume {
                name: claim_name.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("{claim_name}-{name}"),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
    }
    pod
}

/// Creates the ordinal's claims that do not exist yet.
async fn ensure_claims(ctx: &Context, sts: &StatefulSet, namespace: &str, ordinal: i32) -> Result<(), Error> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let spec = sts.spec.clone().unwrap_or_default();
    for template in spec.volume_claim_templates.iter().flatten() {
        let name = format!("{}-{}-{ordinal}", template.metadata.name.clone().unwrap_or_default(), sts.name_any());
        let mut claim = template.clone();
        claim.metadata = ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: spec.selector.match_labels.clone(),
            ..Default::default()
        };
        claim.status = None;
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => ctx.recorder.record(
                sts,
                Type::Normal,
                "SuccessfulCreate",
                "Create",
                format!("create Claim {name} in StatefulSet {} success", sts.name_any()),
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, Error> {
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = sts.namespace().unwrap_or_default();
    let set = sts.name_any();
    let spec = sts.spec.clone().unwrap_or_default();
    let update_revision = revision(&ctx, &sts, &namespace).await?;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let claimed = claim(&pods_api, &spec.selector, &owner_reference(sts.as_ref())).await?;
    let mut pods: BTreeMap<i32, Pod> =
        claimed.into_iter().filter_map(|p| Some((ordinal(&set, &p.name_any())?, p))).collect();
    let want = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let partition =
        spec.update_strategy.as_ref().and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
    let rolling =
        spec.update_strategy.as_ref().and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let revision_of = |p: &Pod| p.labels().get(REVISION_LABEL).cloned().unwrap_or_default();

    // Finished or failed pods are replaced, as upstream does.
    for (_, pod) in pods
        .iter()
        .filter(|(_, p)| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed" | "Succeeded")))
    {
        if pod.metadata.deletion_timestamp.is_none() {
            pods_api.delete(&pod.name_any(), &DeleteParams::default()).await?;
        }
    }
    let mut waiting = false;
    // Scale up, in order.
    for i in 0..want {
        match pods.get(&i) {
            Some(pod) => {
                let settled = running_and_ready(pod) && pod.metadata.deletion_timestamp.is_none();
                if !parallel && !settled {
                    waiting = true;
                    break;
                }
            }
            None => {
                ensure_claims(&ctx, &sts, &namespace, i).await?;
                let revision = if rolling && i < partition {
                    // Below the partition, new pods keep the current revision's template.
                    sts.status
                        .as_ref()
                        .and_then(|s| s.current_revision.clone())
                        .unwrap_or_else(|| update_revision.clone())
                } else {
                    update_revision.clone()
                };
                let pod = pod_for(&sts, &namespace, i, &revision);
                match pods_api.create(&PostParams::default(), &pod).await {
                    Ok(created) => {
                        ctx.recorder.record(
                            sts.as_ref(),
                            Type::Normal,
                            "SuccessfulCreate",
                            "Create",
                            format!("create Pod {} in StatefulSet {set} successful", created.name_any()),
                        );
                        pods.insert(i, created);
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                if !parallel {
                    waiting = true;
                    break;
                }
            }
        }
    }
    // Scale down, from the highest ordinal, one at a time unless Parallel.
    let all_healthy = (0..want).all(|i| pods.get(&i).is_some_and(running_and_ready));
    let surplus: Vec<i32> = pods.keys().copied().filter(|i| *i >= want).rev().collect();
    for i in surplus {
        let pod = &pods[&i];
        if pod.metadata.deletion_timestamp.is_some() {
            if !parallel {
                break;
            }
            continue;
        }
        if !parallel && !all_healthy {
            break;
        }
        pods_api.delete(&pod.name_any(), &DeleteParams::default()).await?;
        ctx.recorder.record(
            sts.as_ref(),
            Type::Normal,
            "SuccessfulDelete",
            "Delete",
            format!("delete Pod {} in StatefulSet {set} successful", pod.name_any()),
        );
        if !parallel {
            break;
        }
    }
    // Rolling update: from the highest ordinal down to the partition, one at a time.
    if rolling && !waiting && all_healthy {
        let stale = (partition..want).rev().find(|i| pods.get(i).is_some_and(|p| revision_of(p) != update_revision));
        if let Some(i) = stale {
            let pod = &pods[&i];
            if pod.metadata.deletion_timestamp.is_none() {
                pods_api.delete(&pod.name_any(), &DeleteParams::default()).await?;
            }
        }
    }

    let now = Timestamp::now();
    let live: Vec<&Pod> = pods.values().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let updated = live.iter().filter(|p| revision_of(p) == update_revision).count() as i32;
    let old = sts.status.clone().unwrap_or_default();
    let current_revision = if updated == want && live.len() as i32 == want {
        update_revision.clone()
    } else {
        old.current_revision.clone().unwrap_or_else(|| update_revision.clone())
    };
    let current = live.iter().filter(|p| revision_of(p) == current_revision).count() as i32;
    let status = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas: live.len() as i32,
        ready_replicas: Some(live.iter().filter(|p| running_and_ready(p)).count() as i32),
        available_replicas: Some(
            live.iter().filter(|p| is_available(p, spec.min_ready_seconds.unwrap_or(0), now)).count() as i32,
        ),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update_revision),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if semantic(json!(old)) != semantic(json!(status)) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(&set, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_names() {
        assert_eq!(ordinal("web", "web-0"), Some(0));
        assert_eq!(ordinal("web", "web-12"), Some(12));
        assert_eq!(ordinal("web", "web-x"), None);
        assert_eq!(ordinal("web", "webby-1"), None);
        assert_eq!(ordinal("web", "web--1"), None);
    }
}
