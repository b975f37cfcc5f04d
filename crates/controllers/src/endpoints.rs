//! The Endpoints and EndpointSlice controllers, in one loop: for each Service with a
//! selector, the matching pods with IPs become its Endpoints (ready ones as `addresses`, the
//! rest as `notReadyAddresses`) and one EndpointSlice (`ready`, `serving`, `terminating`),
//! with target ports resolved by number or by container port name.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::informer::Informer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use crate::Error;
use crate::replicaset::{owner_reference, ready_since};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

struct Context {
    client: Client,
}

/// `pods` is the shared pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    // Services by namespace, to map a pod event to the services selecting it.
    let (services, writer) = reflector::store::<Service>();
    let service_watch = watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    let selecting = move |pod: Arc<Pod>| {
        let (namespace, pod_labels) = (pod.namespace().unwrap_or_default(), pod.labels().clone());
        services
            .state()
            .into_iter()
            .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()))
            .filter(|s| {
                let selector = s.spec.as_ref().and_then(|s| s.selector.as_ref());
                selector.is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)))
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect::<Vec<_>>()
    };
    let controller = Controller::new(Api::<Service>::all(client.clone()), watcher::Config::default())
        .watches_shared_stream(pods.touched(), selecting)
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {});
    tokio::join!(service_watch, controller);
}

fn error_policy(svc: Arc<Service>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!("endpoints for {}: {error}", svc.name_any());
    Action::requeue(Duration::from_secs(2))
}

/// The pod port a service port targets: a number, or a container port's name.
pub fn target_port(port: &ServicePort, pod: &Pod) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            let containers = &pod.spec.as_ref()?.containers;
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    // Services without selectors have endpoints their owners manage.
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else { return Ok(Action::await_change()) };
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let query = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let pods =
        Api::<Pod>::namespaced(ctx.client.clone(), &namespace).list(&ListParams::default().labels(&query)).await?.items;
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let ports = spec.ports.clone().unwrap_or_default();

    // Endpoints: one subset per distinct set of resolved ports.
    let mut subsets: BTreeMap<Vec<(String, i32, String)>, EndpointSubset> = BTreeMap::new();
    let mut endpoints = Vec::new();
    for pod in &pods {
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()) else { continue };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
            continue;
        }
        let ready = ready_since(pod).is_some() && !terminating;
        let resolved: Vec<(String, i32, String)> = ports
            .iter()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    target_port(p, pod)?,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let address = EndpointAddress {
            ip: ip.clone(),
            hostname: pod
                .spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .filter(|_| spec.cluster_ip.as_deref() == Some("None")),
            node_name: node_name.clone(),
            target_ref: Some(pod_ref(pod)),
        };
        if !terminating || publish_not_ready {
            let subset = subsets.entry(resolved.clone()).or_insert_with(|| EndpointSubset {
                ports: Some(
                    resolved
                        .iter()
                        .map(|(n, port, proto)| EndpointPort {
                            name: (!n.is_empty()).then(|| n.clone()),
                            port: *port,
                            protocol: Some(proto.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
                ..Default::default()
            });
            if ready || publish_not_ready {
                subset.addresses.get_or_insert_with(Vec::new).push(address);
            } else {
                subset.not_ready_addresses.get_or_insert_with(Vec::new).push(address);
            }
        }
        endpoints.push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready || (publish_not_ready && !terminating)),
                serving: Some(ready_since(pod).is_some()),
                terminating: Some(terminating),
            }),
            node_name,
            target_ref: Some(pod_ref(pod)),
            hostname: None,
            zone: None,
            hints: None,
            deprecated_topology: None,
        });
    }
    for subset in subsets.values_mut() {
        for list in [subset.addresses.as_mut(), subset.not_ready_addresses.as_mut()].into_iter().flatten() {
            list.sort_by(|a, b| a.ip.cmp(&b.ip));
        }
    }
    let mut labels = svc.labels().clone();
    labels.insert("endpoints.kubernetes.io/managed-by".into(), "endpoint-controller".into());
    let wanted = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then(|| subsets.into_values().collect()),
    };
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.get_opt(&name).await? {
        None => {
            if let Err(e) = api.create(&PostParams::default(), &wanted).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 409 || s.code == 403)
            {
                return Err(e.into());
            }
        }
        Some(current) if current.subsets != wanted.subsets || current.metadata.labels != wanted.metadata.labels => {
            let mut next = wanted.clone();
            next.metadata.resource_version = current.resource_version();
            api.replace(&name, &PostParams::default(), &next).await?;
        }
        Some(_) => {}
    }
    sync_slice(&ctx, &svc, &namespace, &name, &ports, endpoints, &pods).await?;
    Ok(Action::await_change())
}

/// One EndpointSlice per service (rkube does not split large ones yet).
async fn sync_slice(
    ctx: &Context,
    svc: &Service,
    namespace: &str,
    name: &str,
    ports: &[ServicePort],
    mut endpoints: Vec<Endpoint>,
    pods: &[Pod],
) -> Result<(), Error> {
    endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    let slice_ports: Vec<k8s_openapi::api::discovery::v1::EndpointPort> = ports
        .iter()
        .map(|p| k8s_openapi::api::discovery::v1::EndpointPort {
            name: Some(p.name.clone().unwrap_or_default()),
            port: pods.iter().find_map(|pod| target_port(p, pod)),
            protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}");
    let mut existing = api.list(&ListParams::default().labels(&selector)).await?.items;
    let mut labels = svc.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.to_owned());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let wanted = EndpointSlice {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            owner_references: Some(vec![owner_reference(svc)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(slice_ports),
    };
    // Extra slices (from an earlier split or a race) go.
    for extra in existing.iter().skip(1) {
        let _ = api.delete(&extra.name_any(), &DeleteParams::default()).await;
    }
    match existing.drain(..).next() {
        None => {
            if let Err(e) = api.create(&PostParams::default(), &wanted).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 403)
            {
                return Err(e.into());
            }
        }
        Some(current) if current.endpoints != wanted.endpoints || current.ports != wanted.ports => {
            let mut next = wanted;
            next.metadata.generate_name = None;
            next.metadata.name = current.metadata.name.clone();
            next.metadata.resource_version = current.resource_version();
            api.replace(&current.name_any(), &PostParams::default(), &next).await?;
        }
        Some(_) => {}
    }
    Ok(())
}
