//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount, made
//! again if it is deleted.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::Error;

struct Context {
    client: Client,
}

pub async fn run(client: Client) {
    let accounts = watcher::Config::default().fields("metadata.name=default");
    Controller::new(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .watches(Api::<ServiceAccount>::all(client.clone()), accounts, |sa| {
            sa.namespace().map(|ns| ObjectRef::new(&ns))
        })
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {})
        .await;
}

fn error_policy(ns: Arc<Namespace>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("serviceaccounts in {}: {error}", ns.name_any());
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if ns.metadata.deletion_timestamp.is_some() || terminating {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ns.name_any());
    if api.get_opt("default").await?.is_some() {
        return Ok(Action::await_change());
    }
    let account = ServiceAccount {
        metadata: ObjectMeta { name: Some("default".into()), ..Default::default() },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => Ok(Action::await_change()),
        // Made meanwhile, or the namespace began terminating: both fine.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}
