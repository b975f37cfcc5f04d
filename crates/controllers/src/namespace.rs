//! The namespace controller: a namespace being deleted is emptied, then its `kubernetes`
//! finalizer is removed through `/finalize`, which lets the API server delete it.
//!
//! Objects that take time to go (pods stopping gracefully, objects with finalizers of their
//! own) keep the namespace Terminating; it is checked again every few seconds until they have.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::Error;

/// The finalizer the namespace controller owns (`spec.finalizers`).
const FINALIZER: &str = "kubernetes";
/// How soon a namespace whose contents are still going is looked at again.
const RECHECK: Duration = Duration::from_secs(2);

struct Context {
    client: Client,
}

pub async fn run(client: Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!("namespace controller: {e}");
            }
        })
        .await;
}

async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ours =
        namespace.spec.as_ref().and_then(|s| s.finalizers.as_ref()).is_some_and(|f| f.iter().any(|f| f == FINALIZER));
    if namespace.metadata.deletion_timestamp.is_none() || !ours {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    if !empty(&ctx.client, &name).await? {
        return Ok(Action::requeue(RECHECK));
    }
    let mut finalized = (*namespace).clone();
    if let Some(spec) = finalized.spec.as_mut() {
        spec.finalizers.get_or_insert_with(Vec::new).retain(|f| f != FINALIZER);
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    match namespaces.replace_subresource("finalize", &name, &PostParams::default(), &finalized).await {
        Ok(_) => Ok(Action::await_change()),
        // Gone already: another pass finished it.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes everything in the namespace, in every namespaced resource the server serves (its
/// preferred version of each); true once nothing is left.
async fn empty(client: &Client, namespace: &str) -> Result<bool, Error> {
    let discovery = Discovery::new(client.clone()).run().await.map_err(|e| Error::Discovery(e.to_string()))?;
    let mut left = false;
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if capabilities.scope != Scope::Namespaced || !capabilities.supports_operation(verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
            if capabilities.supports_operation(verbs::DELETE_COLLECTION) {
                api.delete_collection(&DeleteParams::background(), &ListParams::default()).await?;
            }
            left |= !api.list(&ListParams::default().limit(1)).await?.items.is_empty();
        }
    }
    Ok(!left)
}

fn error_policy(_: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!("namespace controller: {error}");
    Action::requeue(Duration::from_secs(5))
}
