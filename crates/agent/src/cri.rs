//! The CRI v1 client: a gRPC channel over the runtime's unix socket, and the relist that turns
//! the runtime's sandboxes and containers into each pod's `Observed` (upstream's PLEG). The
//! details that never change once seen (a sandbox's IP, an exited container's exit code) are
//! asked for once and remembered.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerStatusRequest, ListContainersRequest, ListPodSandboxRequest, PodSandboxStatusRequest, StatusRequest,
    VersionRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::Error;
use crate::sync::{Container, Observed, Sandbox, State};

/// Labels on sandboxes and containers that tie them to their pod, as the kubelet sets them.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";

#[derive(Clone)]
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// A client for the CRI socket at `socket`; it connects on first use and again after the
/// runtime restarts.
pub fn connect(socket: &Path) -> Cri {
    let socket: PathBuf = socket.to_owned();
    let channel =
        Endpoint::from_static("http://[::]:50051").connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }));
    // Image lists and container statuses can be large.
    let limit = 64 << 20;
    Cri {
        runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(limit),
        images: ImageServiceClient::new(channel).max_decoding_message_size(limit),
    }
}

pub fn rpc(what: &str) -> impl Fn(tonic::Status) -> Error + '_ {
    move |s| Error::Runtime(format!("{what}: {}", s.message()))
}

impl Cri {
    /// `containerd://1.6.20`, as nodeInfo.containerRuntimeVersion reads.
    pub async fn version(&self) -> Result<String, Error> {
        let v = self.runtime.clone().version(VersionRequest::default()).await.map_err(rpc("version"))?.into_inner();
        Ok(format!("{}://{}", v.runtime_name, v.runtime_version.trim_start_matches('v')))
    }

    /// None when the runtime and its network are ready; otherwise why not, in the kubelet's
    /// words.
    pub async fn not_ready(&self) -> Result<Option<String>, Error> {
        let status = self.runtime.clone().status(StatusRequest { verbose: false }).await.map_err(rpc("status"))?;
        let conditions = status.into_inner().status.map(|s| s.conditions).unwrap_or_default();
        let failing: Vec<String> = conditions
            .iter()
            .filter(|c| !c.status)
            .map(|c| format!("{}=false reason:{} message:{}", c.r#type, c.reason, c.message))
            .collect();
        if failing.is_empty() {
            return Ok(None);
        }
        let network = failing.iter().all(|f| f.starts_with("NetworkReady"));
        let what = if network { "container runtime network not ready" } else { "container runtime not ready" };
        Ok(Some(format!("{what}: {}", failing.join(", "))))
    }
}

/// One pod's sandboxes and containers, asked for by its uid label: what a worker looks at
/// right after acting.
pub async fn observe_pod(cri: &Cri, uid: &str) -> Result<Observed, Error> {
    let mut rt = cri.runtime.clone();
    let labels: HashMap<String, String> = HashMap::from([(POD_UID.to_owned(), uid.to_owned())]);
    let sandboxes = rt
        .list_pod_sandbox(ListPodSandboxRequest {
            filter: Some(k8s_cri::v1::PodSandboxFilter { label_selector: labels.clone(), ..Default::default() }),
        })
        .await
        .map_err(rpc("list sandboxes"))?
        .into_inner()
        .items;
    let containers = rt
        .list_containers(ListContainersRequest {
            filter: Some(k8s_cri::v1::ContainerFilter { label_selector: labels, ..Default::default() }),
        })
        .await
        .map_err(rpc("list containers"))?
        .into_inner()
        .containers;
    let mut observed = Observed::default();
    for s in sandboxes {
        let ready = s.state == 0;
        let ip = sandbox_ip(&mut rt, &s.id).await?;
        observed.sandboxes.push(Sandbox { id: s.id, attempt: s.metadata.map_or(0, |m| m.attempt), ready, ip });
    }
    for c in containers {
        observed.containers.push(describe(&mut rt, &c).await?);
    }
    Ok(observed)
}

/// A sandbox's pod IP, from its status.
async fn sandbox_ip(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> Result<Option<String>, Error> {
    let status = rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.to_owned(), verbose: false })
        .await
        .map_err(rpc("sandbox status"))?
        .into_inner()
        .status;
    Ok(status.and_then(|st| st.network).map(|n| n.ip).filter(|ip| !ip.is_empty()))
}

/// A listed container with the details only its status has.
async fn describe(rt: &mut RuntimeServiceClient<Channel>, c: &k8s_cri::v1::Container) -> Result<Container, Error> {
    let status = rt
        .container_status(ContainerStatusRequest { container_id: c.id.clone(), verbose: false })
        .await
        .map_err(rpc("container status"))?
        .into_inner()
        .status
        .unwrap_or_default();
    let metadata = c.metadata.clone().unwrap_or_default();
    Ok(Container {
        id: c.id.clone(),
        name: c.labels.get(CONTAINER_NAME).cloned().unwrap_or(metadata.name),
        attempt: metadata.attempt,
        sandbox_id: c.pod_sandbox_id.clone(),
        state: match status.state {
            0 => State::Created,
            1 => State::Running,
            2 => State::Exited,
            _ => State::Unknown,
        },
        started_at: status.started_at,
        finished_at: status.finished_at,
        exit_code: status.exit_code,
        reason: status.reason,
        message: status.message,
        image_ref: status.image_ref,
    })
}

/// What a sandbox or container looked like when its details were fetched.
#[derive(Default)]
pub struct Relist {
    sandbox_ips: HashMap<String, Option<String>>,
    containers: HashMap<(String, i32), Container>,
}

impl Relist {
    /// Every pod's sandboxes and containers, by pod uid.
    pub async fn observe(&mut self, cri: &Cri) -> Result<HashMap<String, Observed>, Error> {
        let mut rt = cri.runtime.clone();
        let sandboxes = rt
            .list_pod_sandbox(ListPodSandboxRequest::default())
            .await
            .map_err(rpc("list sandboxes"))?
            .into_inner()
            .items;
        let containers = rt
            .list_containers(ListContainersRequest::default())
            .await
            .map_err(rpc("list containers"))?
            .into_inner()
            .containers;
        let mut pods: HashMap<String, Observed> = HashMap::new();
        let mut live_sandboxes = std::collections::HashSet::new();
        let mut sandbox_pod: HashMap<String, String> = HashMap::new();
        for s in sandboxes {
            let Some(uid) = s.labels.get(POD_UID).cloned() else { continue };
            live_sandboxes.insert(s.id.clone());
            let ready = s.state == 0;
            let ip = match self.sandbox_ips.get(&s.id) {
                Some(ip) if ip.is_some() || !ready => ip.clone(),
                _ => {
                    let ip = sandbox_ip(&mut rt, &s.id).await?;
                    self.sandbox_ips.insert(s.id.clone(), ip.clone());
                    ip
                }
            };
            sandbox_pod.insert(s.id.clone(), uid.clone());
            let attempt = s.metadata.map_or(0, |m| m.attempt);
            pods.entry(uid).or_default().sandboxes.push(Sandbox { id: s.id, attempt, ready, ip });
        }
        let mut live_containers = std::collections::HashSet::new();
        for c in containers {
            let uid = c.labels.get(POD_UID).cloned().or_else(|| sandbox_pod.get(&c.pod_sandbox_id).cloned());
            let Some(uid) = uid else { continue };
            let key = (c.id.clone(), c.state);
            live_containers.insert(key.clone());
            let container = match self.containers.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let container = describe(&mut rt, &c).await?;
                    // A container whose state moved on since the list is described again next time.
                    if container.state as i32 == c.state {
                        self.containers.insert(key, container.clone());
                    }
                    container
                }
            };
            pods.entry(uid).or_default().containers.push(container);
        }
        self.sandbox_ips.retain(|id, _| live_sandboxes.contains(id));
        self.containers.retain(|key, _| live_containers.contains(key));
        Ok(pods)
    }
}
