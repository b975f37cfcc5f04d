//! The node: registered with capacity read from the machine, its health in the Ready
//! condition, its heartbeat in a Lease renewed every 10 s. Status is written only when it
//! changes (or every 5 minutes, upstream's nodeStatusReportFrequency), so an idle node writes
//! almost nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

use crate::Error;

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
pub const LEASE_SECONDS: i32 = 40;
pub const HEARTBEAT: Duration = Duration::from_secs(10);
const REPORT_EVERY: Duration = Duration::from_secs(300);
/// Pods per node, upstream's default --max-pods.
pub const MAX_PODS: &str = "110";

/// What the machine is, read once at start.
#[derive(Clone, Debug)]
pub struct Machine {
    pub cpus: usize,
    pub memory_kib: u64,
    pub storage_bytes: u64,
    pub kernel: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub hostname: String,
}

impl Machine {
    pub fn read(data_dir: &std::path::Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_owned()).unwrap_or_default();
        let meminfo = read("/proc/meminfo");
        let memory_kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let storage_bytes = rustix::fs::statvfs(data_dir).map(|s| s.f_blocks.saturating_mul(s.f_frsize)).unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_else(|| "Linux".into());
        let uname = rustix::system::uname();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
            storage_bytes,
            kernel: uname.release().to_string_lossy().into_owned(),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            hostname: uname.nodename().to_string_lossy().into_owned(),
        }
    }
}

/// The first IPv4 address a packet toward the outside would leave from; loopback on a
/// machine without a route.
pub fn default_ip() -> String {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect("192.0.2.1:9")?;
        s.local_addr()
    });
    probe.map(|a| a.ip().to_string()).unwrap_or_else(|_| "127.0.0.1".into())
}

pub struct Registration<'a> {
    pub name: &'a str,
    pub labels: BTreeMap<String, String>,
}

pub async fn register(client: &Client, reg: &Registration<'_>) -> Result<Node, Error> {
    let api: Api<Node> = Api::all(client.clone());
    if api.get_opt(reg.name).await?.is_some() {
        let patch = json!({"metadata": {"labels": reg.labels}});
        return Ok(api.patch(reg.name, &PatchParams::default(), &Patch::Merge(&patch)).await?);
    }
    let node = Node {
        metadata: ObjectMeta {
            name: Some(reg.name.to_owned()),
            labels: Some(reg.labels.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(node) => Ok(node),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(reg.name).await?),
        Err(e) => Err(e.into()),
    }
}

/// The node's health as the agent sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// None when ready; otherwise the Ready condition's message.
    pub not_ready: Option<String>,
    pub runtime_version: String,
    /// Where the node API listens; 0 when it does not.
    pub node_api_port: u16,
}

/// The status the node should have; heartbeat times are filled in when it is written.
pub fn status(machine: &Machine, ip: &str, health: &Health, old: &NodeStatus, now: Timestamp) -> NodeStatus {
    let q = |s: String| Quantity(s);
    let capacity = BTreeMap::from([
        ("cpu".to_owned(), q(machine.cpus.to_string())),
        ("memory".to_owned(), q(format!("{}Ki", machine.memory_kib))),
        ("pods".to_owned(), q(MAX_PODS.into())),
        ("ephemeral-storage".to_owned(), q(machine.storage_bytes.to_string())),
    ]);
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = old
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: Some(since),
            last_heartbeat_time: Some(Time(now)),
        }
    };
    let ready = match &health.not_ready {
        None => condition("Ready", true, "KubeletReady", "kubelet is posting ready status".into()),
        Some(why) => condition("Ready", false, "KubeletNotReady", why.clone()),
    };
    NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available".into(),
            ),
            condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure".into()),
            condition("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available".into()),
            ready,
        ]),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: ip.to_owned() },
            NodeAddress { type_: "Hostname".into(), address: machine.hostname.clone() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: health.runtime_version.clone(),
            kernel_version: machine.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: crate::KUBELET_VERSION.into(),
            machine_id: machine.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: machine.os_image.clone(),
            system_uuid: machine.machine_id.clone(),
            ..Default::default()
        }),
        daemon_endpoints: Some(k8s_openapi::api::core::v1::NodeDaemonEndpoints {
            kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                port: i32::from(health.node_api_port),
            }),
        }),
        ..old.clone()
    }
}

/// The status without its heartbeat times: what decides whether a write is needed.
fn without_heartbeats(status: &NodeStatus) -> NodeStatus {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
    }
    s.images = None;
    s
}

/// Writes node status when it changed, or when the last report is old.
#[derive(Default)]
pub struct Reporter {
    last: Option<(NodeStatus, Instant)>,
}

impl Reporter {
    pub async fn report(&mut self, client: &Client, name: &str, status: NodeStatus) -> Result<bool, Error> {
        let bare = without_heartbeats(&status);
        if let Some((last, at)) = &self.last
            && *last == bare
            && at.elapsed() < REPORT_EVERY
        {
            return Ok(false);
        }
        let api: Api<Node> = Api::all(client.clone());
        let patch = json!({"status": status});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        self.last = Some((bare, Instant::now()));
        Ok(true)
    }
}

/// Creates or renews the node's Lease.
pub async fn renew_lease(client: &Client, node: &Node) -> Result<(), Error> {
    let name = node.metadata.name.clone().unwrap_or_default();
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {"renewTime": now, "holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS}});
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let owner = OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.clone(),
        uid: node.meta().uid.clone().unwrap_or_default(),
        ..Default::default()
    };
    let lease = Lease {
        metadata: ObjectMeta { name: Some(name.clone()), owner_references: Some(vec![owner]), ..Default::default() },
        spec: Some(LeaseSpec {
            holder_identity: Some(name),
            lease_duration_seconds: Some(LEASE_SECONDS),
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cpus: 2,
            memory_kib: 1024,
            storage_bytes: 1 << 30,
            kernel: "6.1".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            machine_id: "m".into(),
            boot_id: "b".into(),
            hostname: "h".into(),
        }
    }

    #[test]
    fn status_reports_capacity_and_keeps_transition_times() {
        let healthy = Health { not_ready: None, runtime_version: "containerd://1.6.20".into(), node_api_port: 10250 };
        let t0 = Timestamp::from_second(1000).unwrap();
        let first = status(&machine(), "192.0.2.7", &healthy, &NodeStatus::default(), t0);
        assert_eq!(first.capacity.as_ref().unwrap()["memory"].0, "1024Ki");
        assert_eq!(first.capacity.as_ref().unwrap()["pods"].0, "110");
        let ready = first.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));

        let t1 = Timestamp::from_second(2000).unwrap();
        let again = status(&machine(), "192.0.2.7", &healthy, &first, t1);
        assert_eq!(without_heartbeats(&again), without_heartbeats(&first), "nothing changed, nothing to write");

        let down = Health { not_ready: Some("container runtime is down".into()), ..healthy };
        let later = status(&machine(), "192.0.2.7", &down, &again, t1);
        let ready = later.conditions.as_ref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.last_transition_time, Some(Time(t1)));
        assert_eq!(ready.message.as_deref(), Some("container runtime is down"));
    }
}
