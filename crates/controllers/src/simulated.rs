//! Simulated nodes, like kwok: a test and scale tool, not a node agent. `rkube server
//! --simulated-nodes N` registers N nodes labelled `rkube.io/simulated=true`, keeps their
//! Leases fresh in batches (one loop for all of them, never a timer per node), and plays the
//! kubelet's part for pods bound to them: Running and Ready with an IP from the node's
//! podCIDR, Succeeded or Failed after the duration a pod's annotation sets, and deletion
//! confirmed at once. A node annotated `rkube.io/simulated-stopped=true` stops: no heartbeats,
//! no pod updates, as if its machine were switched off.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The label every simulated node carries.
pub const LABEL: &str = "rkube.io/simulated";
/// Set to "true" on a simulated node to stop it.
pub const STOPPED: &str = "rkube.io/simulated-stopped";
/// On a pod: how long its containers run before exiting (`30s`, `500ms`, `2m`).
pub const DURATION: &str = "rkube.io/simulated-duration";
/// On a pod: the exit code its containers end with (default 0).
pub const EXIT_CODE: &str = "rkube.io/simulated-exit-code";

/// Upstream's node lease namespace and duration.
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
/// Writes in flight at once, for registration and heartbeats.
const CONCURRENCY: usize = 32;

#[derive(Clone, Debug)]
pub struct Config {
    pub count: usize,
    /// Names are `{prefix}{index}`.
    pub prefix: String,
    /// Each node's capacity (and allocatable): cpu, memory, pods, ephemeral-storage.
    pub capacity: BTreeMap<String, String>,
    /// How often Leases are renewed (the kubelet's default is 10 s).
    pub heartbeat: Duration,
}

impl Config {
    pub fn new(count: usize) -> Config {
        let capacity = [("cpu", "32"), ("memory", "256Gi"), ("pods", "110"), ("ephemeral-storage", "1Ti")];
        Config {
            count,
            prefix: "rkube-sim-".into(),
            capacity: capacity.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            heartbeat: Duration::from_secs(10),
        }
    }

    /// Parses `cpu=8,memory=16Gi,pods=50` over the defaults; names an unknown or bad entry.
    pub fn set_capacity(&mut self, spec: &str) -> Result<(), String> {
        for entry in spec.split(',').filter(|e| !e.is_empty()) {
            let (name, value) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not name=quantity"))?;
            if !["cpu", "memory", "pods", "ephemeral-storage"].contains(&name) && !name.contains('/') {
                return Err(format!(
                    "{name:?} is not a resource a node offers (cpu, memory, pods, ephemeral-storage or an extended resource)"
                ));
            }
            if rkube_core::quantity::milli(value).is_none_or(|v| v < 0) {
                return Err(format!("{value:?} is not a quantity for {name}"));
            }
            self.capacity.insert(name.to_owned(), value.to_owned());
        }
        Ok(())
    }
}

/// One simulated node's state.
struct NodeState {
    index: usize,
    stopped: bool,
    /// Pod uid → last octet of its IP in the node's /24.
    ips: HashMap<String, u8>,
    next_ip: u8,
}

impl NodeState {
    fn pod_cidr(&self) -> String {
        format!("10.{}.{}.0/24", 64 + self.index / 256, self.index % 256)
    }

    fn address(&self) -> String {
        format!("100.64.{}.{}", self.index / 254, self.index % 254 + 1)
    }

    /// An IP for the pod from the node's /24, reusing freed ones; None when all 253 are used.
    fn assign_ip(&mut self, uid: &str) -> Option<String> {
        let octet = match self.ips.get(uid) {
            Some(o) => *o,
            None => {
                let used: std::collections::HashSet<u8> = self.ips.values().copied().collect();
                let free =
                    (0..253u16).map(|i| ((u16::from(self.next_ip) + i) % 253 + 2) as u8).find(|o| !used.contains(o))?;
                self.next_ip = free.wrapping_sub(1);
                self.ips.insert(uid.to_owned(), free);
                free
            }
        };
        Some(format!("10.{}.{}.{octet}", 64 + self.index / 256, self.index % 256))
    }
}

type Nodes = Arc<Mutex<HashMap<String, NodeState>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Registers the nodes and runs them until the task is dropped.
pub async fn run(client: Client, config: Config) {
    let nodes: Nodes = Arc::new(Mutex::new(
        (0..config.count)
            .map(|i| {
                (
                    format!("{}{i}", config.prefix),
                    NodeState { index: i, stopped: false, ips: HashMap::new(), next_ip: 0 },
                )
            })
            .collect(),
    ));
    let names: Vec<String> = lock(&nodes).keys().cloned().collect();
    futures::stream::iter(names)
        .for_each_concurrent(CONCURRENCY, |name| {
            let (client, nodes, config) = (client.clone(), nodes.clone(), &config);
            async move {
                while let Err(e) = register(&client, &nodes, config, &name).await {
                    tracing::warn!("simulated node {name}: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        })
        .await;
    tracing::info!("{} simulated nodes registered", config.count);
    tokio::join!(
        heartbeats(&client, &nodes, &config),
        watch_nodes(&client, &nodes, &config),
        run_pods(&client, &nodes)
    );
}

async fn register(client: &Client, nodes: &Nodes, config: &Config, name: &str) -> kube::Result<()> {
    let (cidr, address) = {
        let nodes = lock(nodes);
        let state = &nodes[name];
        (state.pod_cidr(), state.address())
    };
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            LABEL: "true", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "rkube-simulated",
        }},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
    }))
    .expect("a node");
    let node = match api.create(&PostParams::default(), &node).await {
        Ok(node) => node,
        Err(kube::Error::Api(s)) if s.code == 409 => api.get(name).await?,
        Err(e) => return Err(e),
    };
    let capacity: BTreeMap<String, Quantity> =
        config.capacity.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect();
    let now = Timestamp::now().to_string();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "simulated node is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "simulated",
            "osImage": "rkube simulated node", "containerRuntimeVersion": "simulated://1.0",
            "kubeletVersion": "v1.33.0-rkube-simulated", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(status)).await?;
    let stopped = node.annotations().get(STOPPED).is_some_and(|v| v == "true");
    if let Some(state) = lock(nodes).get_mut(name) {
        state.stopped = stopped;
    }
    renew(client, &node, true).await
}

/// Creates or renews the node's Lease.
async fn renew(client: &Client, node: &Node, create: bool) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let name = node.name_any();
    let now = MicroTime(Timestamp::now());
    if !create {
        let patch = json!({"spec": {"renewTime": now}});
        return leases.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await.map(|_| ());
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.clone(),
                uid: node.uid().unwrap_or_default(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Box::pin(renew(client, node, false)).await,
        other => other.map(|_| ()),
    }
}

/// One loop renews every running node's Lease each heartbeat period.
async fn heartbeats(client: &Client, nodes: &Nodes, config: &Config) {
    let mut tick = tokio::time::interval(config.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let running: Vec<String> = lock(nodes).iter().filter(|(_, s)| !s.stopped).map(|(n, _)| n.clone()).collect();
        futures::stream::iter(running)
            .for_each_concurrent(CONCURRENCY, |name| async move {
                let mut node = Node::default();
                node.metadata.name = Some(name.clone());
                if let Err(e) = renew(client, &node, false).await {
                    tracing::debug!("simulated node {name}: lease not renewed: {e}");
                }
            })
            .await;
    }
}

/// Follows the nodes' stop annotation. A node started again reports Ready, and catches up
/// with what happened to its pods meanwhile.
async fn watch_nodes(client: &Client, nodes: &Nodes, config: &Config) {
    let api: Api<Node> = Api::all(client.clone());
    let watch = watcher::Config::default().labels(&format!("{LABEL}=true"));
    let mut events = watcher::watcher(api, watch).default_backoff().boxed();
    while let Some(event) = events.next().await {
        if let Ok(Event::Apply(node) | Event::InitApply(node)) = event {
            let stopped = node.annotations().get(STOPPED).is_some_and(|v| v == "true");
            let name = node.name_any();
            let restarted = {
                let mut nodes = lock(nodes);
                let Some(state) = nodes.get_mut(&name) else { continue };
                let restarted = state.stopped && !stopped;
                state.stopped = stopped;
                restarted
            };
            // A running node marked otherwise (by the node lifecycle controller, after a
            // missed heartbeat) says it is Ready again, as a kubelet's next status post does.
            let ready = node
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !stopped && !ready && !restarted {
                let (client, nodes, config) = (client.clone(), nodes.clone(), config.clone());
                tokio::spawn(async move {
                    if let Err(e) = register(&client, &nodes, &config, &name).await {
                        tracing::debug!("simulated node {name}: {e}");
                    }
                });
                continue;
            }
            if restarted {
                tracing::info!("simulated node {name} started again");
                let (client, nodes, config) = (client.clone(), nodes.clone(), config.clone());
                tokio::spawn(async move {
                    if let Err(e) = register(&client, &nodes, &config, &name).await {
                        tracing::warn!("simulated node {name}: {e}");
                    }
                    let pods: Api<Pod> = Api::all(client.clone());
                    let on_node = kube::api::ListParams::default().fields(&format!("spec.nodeName={name}"));
                    for pod in pods.list(&on_node).await.map(|l| l.items).unwrap_or_default() {
                        if pod.metadata.deletion_timestamp.is_some() {
                            confirm_deletion(&client, &pod).await;
                        }
                    }
                });
            }
        }
    }
}

/// What the simulated kubelet does next for a pod.
enum Step {
    Nothing,
    /// Running, but marked not ready by someone else: say Ready again.
    Ready,
    /// Confirm a graceful deletion.
    Delete,
    /// Start it: Running, Ready, with this IP.
    Start {
        ip: String,
        host_ip: String,
    },
}

async fn run_pods(client: &Client, nodes: &Nodes) {
    let api: Api<Pod> = Api::all(client.clone());
    let mut events = watcher::watcher(api, watcher::Config::default()).default_backoff().boxed();
    let started: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            Ok(Event::Delete(pod)) => {
                let uid = pod.uid().unwrap_or_default();
                if let Some(node) = pod_node(&pod)
                    && let Some(state) = lock(nodes).get_mut(node)
                {
                    state.ips.remove(&uid);
                }
                lock(&started).remove(&uid);
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("simulated nodes: pod watch: {e}");
                continue;
            }
        };
        let step = {
            let mut nodes = lock(nodes);
            let Some(state) = pod_node(&pod).and_then(|n| nodes.get_mut(n)) else { continue };
            if state.stopped {
                Step::Nothing
            } else if pod.metadata.deletion_timestamp.is_some() {
                Step::Delete
            } else if phase(&pod) == "Pending" && lock(&started).insert(pod.uid().unwrap_or_default()) {
                match state.assign_ip(&pod.uid().unwrap_or_default()) {
                    Some(ip) => Step::Start { ip, host_ip: state.address() },
                    None => Step::Nothing,
                }
            } else if phase(&pod) == "Running" {
                // Pods found running after a restart keep their IPs.
                let uid = pod.uid().unwrap_or_default();
                if let Some(octet) = pod_ip_octet(&pod) {
                    state.ips.entry(uid.clone()).or_insert(octet);
                }
                lock(&started).insert(uid);
                let running = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some())));
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if running && !ready { Step::Ready } else { Step::Nothing }
            } else {
                Step::Nothing
            }
        };
        let (client, started) = (client.clone(), started.clone());
        match step {
            Step::Nothing => {}
            Step::Ready => {
                tokio::spawn(async move {
                    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                    let patch = json!({"status": {"conditions": conditions(true, None)}});
                    if let Err(e) =
                        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await
                    {
                        tracing::debug!("simulated pod {}: {e}", pod.name_any());
                    }
                    drop(started);
                });
            }
            Step::Delete => {
                tokio::spawn(async move { confirm_deletion(&client, &pod).await });
            }
            Step::Start { ip, host_ip } => {
                tokio::spawn(async move {
                    if let Err(e) = start(&client, &pod, &ip, &host_ip).await {
                        tracing::debug!("simulated pod {}: {e}", pod.name_any());
                        lock(&started).remove(&pod.uid().unwrap_or_default());
                    }
                });
            }
        }
    }
}

fn pod_node(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn pod_ip_octet(pod: &Pod) -> Option<u8> {
    pod.status.as_ref()?.pod_ip.as_deref()?.rsplit('.').next()?.parse().ok()
}

async fn confirm_deletion(client: &Client, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => tracing::debug!("simulated pod {}: deletion not confirmed: {e}", pod.name_any()),
    }
}

/// Parses `90s`, `500ms`, `2m`, `1h`; plain digits are seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds.min(1e9)))
}

fn statuses(pod: &Pod, state: &Value, ready: bool) -> (Vec<Value>, Vec<Value>) {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = |c: &k8s_openapi::api::core::v1::Container, state: Value, ready: bool| {
        json!({
            "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
            "containerID": format!("simulated://{}-{}", pod.uid().unwrap_or_default(), c.name),
            "ready": ready, "started": state.get("running").is_some(), "restartCount": 0, "state": state,
        })
    };
    let now = Timestamp::now().to_string();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let done =
                json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}});
            container(c, done, true)
        })
        .collect();
    let main = spec.containers.iter().map(|c| container(c, state.clone(), ready)).collect();
    (init, main)
}

fn conditions(ready: bool, reason: Option<&str>) -> Value {
    let now = Timestamp::now().to_string();
    let condition = |kind: &str, status: bool, reason: Option<&str>| {
        let mut c = json!({"type": kind, "status": if status { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": now});
        if let Some(reason) = reason {
            c["reason"] = json!(reason);
        }
        c
    };
    json!([
        condition("PodReadyToStartContainers", ready, None),
        condition("Initialized", true, None),
        condition("Ready", ready, reason),
        condition("ContainersReady", ready, reason),
        condition("PodScheduled", true, None),
    ])
}

async fn start(client: &Client, pod: &Pod, ip: &str, host_ip: &str) -> kube::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let started_at = Timestamp::now().to_string();
    let running = json!({"running": {"startedAt": started_at}});
    let (init, main) = statuses(pod, &running, true);
    let patch = json!({"status": {
        "phase": "Running", "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": started_at, "conditions": conditions(true, None),
        "initContainerStatuses": init, "containerStatuses": main,
    }});
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await?;
    let Some(duration) = pod.annotations().get(DURATION).and_then(|d| parse_duration(d)) else { return Ok(()) };
    let exit_code: i32 = pod.annotations().get(EXIT_CODE).and_then(|c| c.parse().ok()).unwrap_or(0);
    let restart = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let mut restarts = 0;
    loop {
        tokio::time::sleep(duration).await;
        let finished_at = Timestamp::now().to_string();
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        let terminated = json!({"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at}});
        let ends = restart == "Never" || (restart == "OnFailure" && exit_code == 0);
        if ends {
            let (init, main) = statuses(pod, &terminated, false);
            let patch = json!({"status": {
                "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
                "conditions": conditions(false, Some("PodCompleted")),
                "initContainerStatuses": init, "containerStatuses": main,
            }});
            return api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await.map(|_| ());
        }
        // The kubelet restarts the containers: count it, and run them again.
        restarts += 1;
        let (init, mut main) = statuses(pod, &running, true);
        for status in &mut main {
            status["restartCount"] = json!(restarts);
            status["lastState"] = terminated.clone();
        }
        let patch = json!({"status": {"initContainerStatuses": init, "containerStatuses": main}});
        match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(patch)).await {
            Ok(p) if p.metadata.deletion_timestamp.is_none() => {}
            _ => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_and_durations() {
        let mut config = Config::new(3);
        config.set_capacity("cpu=4,memory=8Gi").unwrap();
        assert_eq!(config.capacity["cpu"], "4");
        assert_eq!(config.capacity["pods"], "110");
        assert!(config.set_capacity("gpus=1").unwrap_err().contains("gpus"));
        assert!(config.set_capacity("cpu=lots").unwrap_err().contains("lots"));
        assert!(config.set_capacity("cpu").is_err());
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn pod_ips_come_from_the_node_range_and_are_reused() {
        let mut node = NodeState { index: 257, stopped: false, ips: HashMap::new(), next_ip: 0 };
        assert_eq!(node.pod_cidr(), "10.65.1.0/24");
        let first = node.assign_ip("a").unwrap();
        assert_eq!(first, "10.65.1.2");
        assert_eq!(node.assign_ip("a").unwrap(), first);
        let ips: std::collections::HashSet<String> =
            (0..252).map(|i| node.assign_ip(&format!("p{i}")).unwrap()).collect();
        assert_eq!(ips.len(), 252);
        assert!(!ips.contains(&first));
        assert!(node.assign_ip("full").is_none());
        node.ips.remove("a");
        assert_eq!(node.assign_ip("b").unwrap(), first);
    }
}
