//! The ResourceQuota controller: each quota's `status.hard` and `status.used`, counted from
//! the namespace's objects (object counts, and pods' requests and limits), recomputed when the
//! quota changes and every 10 seconds. Enforcement at admission is the API server's, and is
//! not built yet.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota, Service};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use rkube_core::quantity;
use serde_json::json;

use crate::Error;

const RESYNC: Duration = Duration::from_secs(10);

struct Context {
    client: Client,
}

pub async fn run(client: Client) {
    Controller::new(Api::<ResourceQuota>::all(client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {})
        .await;
}

fn error_policy(q: Arc<ResourceQuota>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("resourcequota {}: {error}", q.name_any());
    Action::requeue(RESYNC)
}

/// Millicores as upstream prints them: `2`, `500m`.
pub fn format_milli(milli: i64) -> String {
    if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") }
}

/// Bytes in the largest binary unit that divides them exactly: `128Mi`, `1Gi`, `1500`.
pub fn format_bytes(bytes: i64) -> String {
    for (unit, size) in
        [("Ei", 1i64 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)]
    {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}

fn sum_containers(pods: &[&Pod], what: &str, resource: &str) -> i64 {
    let read =
        |q: &Quantity| if resource == "cpu" { quantity::milli(&q.0) } else { quantity::value(&q.0) }.unwrap_or(0);
    pods.iter()
        .flat_map(|p| p.spec.iter().flat_map(|s| s.containers.iter()))
        .filter_map(|c| {
            let r = c.resources.as_ref()?;
            let list = if what == "limits" { r.limits.as_ref() } else { r.requests.as_ref() };
            list?.get(resource).map(read)
        })
        .sum()
}

async fn count(client: &Client, namespace: &str, key: &str) -> Result<Option<i64>, Error> {
    // `count/deployments.apps` or a legacy name such as `configmaps`.
    let resource = key.strip_prefix("count/").unwrap_or(key);
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    let (kind, version) = match (plural, group) {
        ("configmaps", "") => ("ConfigMap", "v1"),
        ("secrets", "") => ("Secret", "v1"),
        ("replicationcontrollers", "") => ("ReplicationController", "v1"),
        ("resourcequotas", "") => ("ResourceQuota", "v1"),
        ("services", "") => ("Service", "v1"),
        ("persistentvolumeclaims", "") => ("PersistentVolumeClaim", "v1"),
        ("deployments" | "replicasets" | "statefulsets" | "daemonsets", "apps") => ("", "v1"),
        ("jobs" | "cronjobs", "batch") => ("", "v1"),
        _ => return Ok(None),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let resource = ApiResource { plural: plural.to_owned(), ..ApiResource::from_gvk(&gvk) };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    Ok(Some(api.list_metadata(&ListParams::default()).await?.items.len() as i64))
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = q.namespace().unwrap_or_default();
    let hard = q.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
    let all_pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace).list(&ListParams::default()).await?.items;
    // Finished and deleting pods use nothing, as upstream counts them.
    let pods: Vec<&Pod> = all_pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        .collect();
    let mut used: BTreeMap<String, Quantity> = BTreeMap::new();
    for key in hard.keys() {
        let value = match key.as_str() {
            "pods" | "count/pods" => Some(pods.len().to_string()),
            "cpu" | "requests.cpu" => Some(format_milli(sum_containers(&pods, "requests", "cpu"))),
            "limits.cpu" => Some(format_milli(sum_containers(&pods, "limits", "cpu"))),
            "memory" | "requests.memory" => Some(format_bytes(sum_containers(&pods, "requests", "memory"))),
            "limits.memory" => Some(format_bytes(sum_containers(&pods, "limits", "memory"))),
            "requests.ephemeral-storage" | "ephemeral-storage" => {
                Some(format_bytes(sum_containers(&pods, "requests", "ephemeral-storage")))
            }
            "services.nodeports" | "services.loadbalancers" => {
                let services = Api::<Service>::namespaced(ctx.client.clone(), &namespace)
                    .list(&ListParams::default())
                    .await?
                    .items;
                let wanted = if key == "services.nodeports" {
                    ["NodePort", "LoadBalancer"].as_slice()
                } else {
                    ["LoadBalancer"].as_slice()
                };
                let n = services
                    .iter()
                    .filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()).is_some_and(|t| wanted.contains(&t)))
                    .count();
                Some(n.to_string())
            }
            "requests.storage" => {
                let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace)
                    .list(&ListParams::default())
                    .await?
                    .items;
                let bytes: i64 = claims
                    .iter()
                    .filter_map(|c| {
                        c.spec
                            .as_ref()?
                            .resources
                            .as_ref()?
                            .requests
                            .as_ref()?
                            .get("storage")
                            .and_then(|q| quantity::value(&q.0))
                    })
                    .sum();
                Some(format_bytes(bytes))
            }
            other => count(&ctx.client, &namespace, other).await?.map(|n| n.to_string()),
        };
        if let Some(value) = value {
            used.insert(key.clone(), Quantity(value));
        }
    }
    let status = q.status.clone().unwrap_or_default();
    if status.hard.as_ref() != Some(&hard) || status.used.as_ref() != Some(&used) {
        let patch = json!({"status": {"hard": hard, "used": used}});
        Api::<ResourceQuota>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(&q.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_print_as_upstream() {
        assert_eq!(format_milli(2000), "2");
        assert_eq!(format_milli(2500), "2500m");
        assert_eq!(format_bytes(128 << 20), "128Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(1500), "1500");
        assert_eq!(format_bytes(0), "0");
    }
}
