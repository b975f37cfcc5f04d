//! The disruption controller: each PodDisruptionBudget's status (expected and healthy pods,
//! `disruptionsAllowed`, the DisruptionAllowed condition), which the API server's eviction
//! spends.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::informer::Informer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::labels;
use crate::replicaset::{controller_of, ready_since};

struct Context {
    client: Client,
}

/// `pods` is the shared pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    let (budgets, writer) = reflector::store::<PodDisruptionBudget>();
    let budget_watch = watcher(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    let covering = move |pod: Arc<Pod>| {
        let namespace = pod.namespace();
        budgets
            .state()
            .into_iter()
            .filter(|b| b.namespace() == namespace)
            .filter(|b| {
                b.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| labels::matches(s, pod.labels()))
            })
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect::<Vec<_>>()
    };
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default())
        .watches_shared_stream(pods.touched(), covering)
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {});
    tokio::join!(budget_watch, controller);
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("poddisruptionbudget {}: {error}", pdb.name_any());
    Action::requeue(Duration::from_secs(5))
}

/// A number or a percentage of `total`, rounded up as upstream does for budgets.
fn scaled(value: &IntOrString, total: i32) -> i32 {
    match value {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(0);
            ((p * i64::from(total) + 99) / 100) as i32
        }
    }
}

/// How many pods must stay healthy, out of `expected`.
pub fn desired(min_available: Option<&IntOrString>, max_unavailable: Option<&IntOrString>, expected: i32) -> i32 {
    match (min_available, max_unavailable) {
        (Some(min), _) => scaled(min, expected),
        (None, Some(max)) => (expected - scaled(max, expected)).max(0),
        (None, None) => expected,
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let pods: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().labels(&labels::to_query(&selector)))
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let healthy = pods
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && ready_since(p).is_some())
        .count() as i32;
    // Percentages and maxUnavailable count against the controllers' desired scale.
    let scale_based = spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)));
    let expected = if scale_based {
        controllers_scale(&ctx.client, &namespace, &pods).await?.unwrap_or(pods.len() as i32)
    } else {
        pods.len() as i32
    };
    let desired_healthy = desired(spec.min_available.as_ref(), spec.max_unavailable.as_ref(), expected);
    let allowed = (healthy - desired_healthy).max(0);
    let old = pdb.status.clone().unwrap_or_default();
    let now = Time(Timestamp::now());
    let (status, reason, message) =
        if allowed > 0 { ("True", "SufficientPods", "") } else { ("False", "InsufficientPods", "") };
    let mut conditions = old.conditions.clone().unwrap_or_default();
    match conditions.iter_mut().find(|c| c.type_ == "DisruptionAllowed") {
        Some(c) if c.status == status => {}
        Some(c) => {
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
            c.last_transition_time = now.clone();
            c.observed_generation = pdb.metadata.generation;
        }
        None => conditions.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: pdb.metadata.generation,
        }),
    }
    let changed = old.current_healthy != healthy
        || old.desired_healthy != desired_healthy
        || old.expected_pods != expected
        || old.disruptions_allowed != allowed
        || old.observed_generation != pdb.metadata.generation
        || old.conditions.as_ref() != Some(&conditions);
    if changed {
        let patch = json!({"status": {
            "currentHealthy": healthy, "desiredHealthy": desired_healthy, "expectedPods": expected,
            "disruptionsAllowed": allowed, "observedGeneration": pdb.metadata.generation, "conditions": conditions,
        }});
        Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(&pdb.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(Action::requeue(Duration::from_secs(30)))
}

/// The summed `spec.replicas` of the pods' controllers (Deployments through their
/// ReplicaSets count once per ReplicaSet), or None if a pod has none.
async fn controllers_scale(client: &Client, namespace: &str, pods: &[Pod]) -> Result<Option<i32>, Error> {
    let mut owners: BTreeSet<(String, String, String)> = BTreeSet::new();
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else { return Ok(None) };
        owners.insert((owner.api_version.clone(), owner.kind.clone(), owner.name.clone()));
    }
    let mut total = 0;
    let mut cache: BTreeMap<(String, String), ApiResource> = BTreeMap::new();
    for (api_version, kind, name) in owners {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", &api_version));
        let resource = cache
            .entry((api_version.clone(), kind.clone()))
            .or_insert_with(|| ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind)))
            .clone();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        match api.get_opt(&name).await? {
            Some(owner) => total += owner.data["spec"]["replicas"].as_i64().unwrap_or(1) as i32,
            None => return Ok(None),
        }
    }
    Ok(Some(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_round_up() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(desired(Some(&IntOrString::Int(2)), None, 5), 2);
        assert_eq!(desired(Some(&pct("50%")), None, 5), 3);
        assert_eq!(desired(None, Some(&IntOrString::Int(1)), 5), 4);
        assert_eq!(desired(None, Some(&pct("30%")), 5), 3);
        assert_eq!(desired(None, None, 5), 5);
    }
}
