//! The node agent (the kubelet's part): it registers its node, keeps the node's Lease and
//! status fresh, and runs the pods bound to it in real containers through a CRI runtime
//! (its own containerd by default), with CNI networking from the node's podCIDR.
//!
//! It talks to the cluster only through the API server, with a `kube` client, and to the
//! runtime only through CRI (plus `ctr` to import image tarballs). It knows nothing of the
//! store or of HTTP serving. Pod decisions are pure (`sync`, `spec`) and tested on fixtures;
//! `pods` carries them out.

pub mod cni;
pub mod containerd;
pub mod cri;
pub mod hooks;
pub mod image;
pub mod logs;
pub mod node;
pub mod nodeapi;
pub mod pods;
pub mod probe;
pub mod routes;
pub mod spdy;
pub mod spec;
pub mod static_pods;
pub mod stats;
pub mod stream;
pub mod sync;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::Api;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use containerd::{Health as RuntimeHealth, Paths};

/// The version the node reports, beside the API server's.
pub const KUBELET_VERSION: &str = concat!("v1.33.0-rkube.", env!("CARGO_PKG_VERSION"));

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Runtime(String),
    #[error("{path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, #[source] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    /// Defaults to the host name, lowercased.
    pub node_name: Option<String>,
    /// The node's InternalIP; defaults to the address of the default route.
    pub node_ip: Option<String>,
    /// An existing CRI socket to use instead of starting containerd.
    pub runtime_endpoint: Option<PathBuf>,
    /// Labels beyond the standard ones (`node-role.kubernetes.io/control-plane` on a server).
    pub labels: BTreeMap<String, String>,
    /// The node API (logs); None runs without one.
    pub node_api: Option<NodeApi>,
    /// The cluster's DNS servers and domain; with none, `ClusterFirst` pods use the node's.
    pub cluster_dns: spec::ClusterDns,
}

#[derive(Clone)]
pub struct NodeApi {
    /// 10250 by default, as the kubelet's; 0 picks a free port.
    pub port: u16,
    pub tls: nodeapi::Tls,
}

impl std::fmt::Debug for NodeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeApi").field("port", &self.port).finish_non_exhaustive()
    }
}

/// The node's name and InternalIP: configured, or the host name and the default route's
/// address.
pub fn identity(config: &Config) -> (String, String) {
    let name =
        config.node_name.clone().unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().to_lowercase());
    let ip = config.node_ip.clone().unwrap_or_else(node::default_ip);
    (name, ip)
}

/// The running agent; dropping it stops the agent and its containerd, but not the pods'
/// containers, which a restarted agent adopts.
pub struct Agent {
    tasks: JoinSet<()>,
}

impl Agent {
    pub fn start(client: Client, config: Config) -> Agent {
        let paths = Paths::new(&config.data_dir);
        let (health_tx, health) = watch::channel(RuntimeHealth::Starting);
        let mut tasks = JoinSet::new();
        let socket = match &config.runtime_endpoint {
            Some(socket) => {
                health_tx.send_replace(RuntimeHealth::Up);
                socket.clone()
            }
            None => {
                if let Some(missing) = containerd::missing_prerequisites() {
                    health_tx.send_replace(RuntimeHealth::Down(missing));
                } else {
                    tasks.spawn(containerd::supervise(paths.clone(), health_tx.clone()));
                }
                paths.socket()
            }
        };
        // The sender lives as long as the agent, so `health.changed()` never ends early.
        tasks.spawn(async move {
            let _keep = health_tx;
            std::future::pending::<()>().await
        });
        tasks.spawn(run(client, config, paths, socket, health));
        Agent { tasks }
    }

    /// Stops the agent, waiting for its containerd to exit.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
        // The supervisor's SIGTERM is on its way; give containerd a moment to exit cleanly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn run(
    client: Client,
    config: Config,
    paths: Paths,
    socket: PathBuf,
    mut health: watch::Receiver<RuntimeHealth>,
) {
    let machine = node::Machine::read(&config.data_dir);
    let (name, ip) = identity(&config);
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), name.clone()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "kubernetes.io/arch".to_owned(),
            std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        ),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        (
            "beta.kubernetes.io/arch".to_owned(),
            std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        ),
    ]);
    labels.extend(config.labels.clone());
    let registration = node::Registration { name: &name, labels };
    let mut node = loop {
        match node::register(&client, &registration).await {
            Ok(node) => break node,
            Err(e) => {
                tracing::warn!("registering node {name}: {e}");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let _routes = AbortOnDrop(tokio::spawn(routes::run(client.clone(), name.clone(), ip.clone())));
    let cri = cri::connect(&socket);
    let mut node_api_port = 0;
    let mut node_api_task = None;
    if let Some(api) = &config.node_api {
        let bind = std::net::SocketAddr::new(ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()), api.port);
        let stats = stats::Stats::new(name.clone(), config.data_dir.clone(), paths.containerd());
        match nodeapi::start(bind, &api.tls, cri.clone(), paths.pod_logs(), stats).await {
            Ok((addr, serve)) => {
                node_api_port = addr.port();
                node_api_task = Some(AbortOnDrop(tokio::spawn(serve)));
            }
            Err(e) => tracing::warn!("node {name}: {e}; logs cannot be served"),
        }
    }
    let _node_api = node_api_task;
    let ctx = Arc::new(pods::Context {
        client: client.clone(),
        cri: cri.clone(),
        node_name: name.clone(),
        node_ip: ip.clone(),
        pod_logs: paths.pod_logs(),
        volumes: paths.root.join("volumes"),
        static_pods: paths.root.join("manifests"),
        recorder: rkube_controllers::events::Recorder::start(client.clone(), "kubelet"),
        kick: Notify::new(),
        cluster_dns: config.cluster_dns.clone(),
    });
    let mut pod_manager: Option<tokio::task::JoinHandle<()>> = None;
    let mut images_ready: Option<Result<(), String>> = None;
    let mut reporter = node::Reporter::default();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(node::HEARTBEAT);
    loop {
        let runtime = health.borrow_and_update().clone();
        let mut not_ready = match &runtime {
            RuntimeHealth::Up => None,
            RuntimeHealth::Starting => Some("container runtime is starting".to_owned()),
            RuntimeHealth::Down(why) => Some(format!("container runtime is down: {why}")),
        };
        let mut runtime_version = String::new();
        if not_ready.is_none() {
            match cri.version().await {
                Ok(v) => runtime_version = v,
                Err(e) => not_ready = Some(format!("container runtime is down: {e}")),
            }
        }
        if not_ready.is_none() && !matches!(images_ready, Some(Ok(()))) {
            images_ready = Some(prepare_images(&cri, &socket, &paths, config.runtime_endpoint.is_none()).await);
        }
        if not_ready.is_none()
            && let Some(Err(why)) = &images_ready
        {
            not_ready = Some(why.clone());
        }
        // The CNI network follows the podCIDR the control plane assigns.
        if let Ok(Some(current)) = nodes.get_opt(&name).await {
            node = current;
        }
        let pod_cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        match &pod_cidr {
            Some(cidr) if config.runtime_endpoint.is_none() => {
                if let Err(e) = cni::install(&paths.cni_conf_dir(), cidr) {
                    not_ready = Some(format!("cannot write the CNI config: {e}"));
                }
            }
            Some(_) => {}
            None => not_ready = not_ready.or(Some("waiting for a podCIDR from the control plane".to_owned())),
        }
        if not_ready.is_none() {
            match cri.not_ready().await {
                Ok(why) => not_ready = why,
                Err(e) => not_ready = Some(format!("container runtime is down: {e}")),
            }
        }
        if not_ready.is_none() && pod_manager.is_none() {
            pod_manager = Some(tokio::spawn(pods::run(ctx.clone())));
        }
        if let Err(e) = node::renew_lease(&client, &node).await {
            tracing::debug!("lease of node {name}: {e}");
        }
        let old = node.status.clone().unwrap_or_default();
        let h = node::Health { not_ready, runtime_version, node_api_port };
        let status = node::status(&machine, &ip, &h, &old, k8s_openapi::jiff::Timestamp::now());
        if let Err(e) = reporter.report(&client, &name, status).await {
            tracing::debug!("status of node {name}: {e}");
        }
        // Until the node is ready, look again soon.
        let wait = if h.not_ready.is_some() { Duration::from_secs(1) } else { node::HEARTBEAT };
        tokio::select! {
            _ = health.changed() => {}
            _ = tick.tick(), if wait == node::HEARTBEAT => {}
            () = tokio::time::sleep(wait), if wait != node::HEARTBEAT => {}
        }
    }
}

pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pause image (built from busybox-static when missing) and the tarballs in
/// `DATA/agent/images/`; an error is the node's NotReady message.
async fn prepare_images(
    cri: &cri::Cri,
    socket: &std::path::Path,
    paths: &Paths,
    own_runtime: bool,
) -> Result<(), String> {
    if own_runtime {
        let mut images = cri.images.clone();
        let spec = k8s_cri::v1::ImageSpec { image: containerd::PAUSE_IMAGE.into(), ..Default::default() };
        let present = images
            .image_status(k8s_cri::v1::ImageStatusRequest { image: Some(spec), verbose: false })
            .await
            .map(|r| r.into_inner().image.is_some())
            .map_err(|e| format!("container runtime is down: {}", e.message()))?;
        if !present {
            let archive = paths.containerd().join("pause.tar");
            let spec = image::Spec {
                reference: containerd::PAUSE_IMAGE,
                entrypoint: &["/bin/sleep", "2147483647"],
                cmd: &[],
                env: &[],
            };
            image::write_busybox_archive(&spec, &archive).map_err(|e| e.to_string())?;
            image::import(socket, &archive).await.map_err(|e| e.to_string())?;
        }
    }
    for (archive, result) in image::import_dir(socket, &paths.images()).await {
        match result {
            Ok(true) => tracing::info!("imported {}", archive.display()),
            Ok(false) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    Ok(())
}
