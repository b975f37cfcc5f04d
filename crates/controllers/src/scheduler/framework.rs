//! The scheduling framework, shaped like upstream's `pkg/scheduler/framework`: one trait per
//! extension point, a `Status` with a code, a `CycleState` shared by one pod's cycle, and the
//! pod and node views (`PodInfo`, `NodeInfo`) plugins read.
//!
//! Plugins are pure over (pod, node info, cycle state): they do no IO, so each is tested on
//! fixtures. The binding itself is the scheduler's, through the API.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, Taint};
use rkube_core::quantity;

use crate::labels::Labels;

/// What a plugin decided, as upstream's `framework.Code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Success,
    /// The node does not fit now; it might after preemption or a change.
    Unschedulable,
    /// The node can never fit, and preempting pods on it would not help.
    UnschedulableAndUnresolvable,
    Error,
    /// From PreFilter or PreScore: the plugin has nothing to say about this pod, so its
    /// Filter or Score is not run for it (upstream's `Skip`).
    Skip,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    /// Upstream's reason strings, counted per node in `0/3 nodes are available: ...`.
    pub reasons: Vec<String>,
}

impl Status {
    pub fn success() -> Status {
        Status { code: Code::Success, reasons: Vec::new() }
    }

    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status { code: Code::Unschedulable, reasons: vec![reason.into()] }
    }

    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status { code: Code::UnschedulableAndUnresolvable, reasons: vec![reason.into()] }
    }

    pub fn skip() -> Status {
        Status { code: Code::Skip, reasons: Vec::new() }
    }

    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// Data one plugin computes in PreFilter or PreScore for its later points, keyed by plugin.
/// A handful of entries, read once per node: a short list beats hashing.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    pub fn write<T: Any + Send + Sync>(&mut self, key: &'static str, value: T) {
        self.data.retain(|(k, _)| *k != key);
        self.data.push((key, Box::new(value)));
    }

    pub fn read<T: Any + Send + Sync>(&self, key: &'static str) -> Option<&T> {
        self.data.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.downcast_ref())
    }
}

/// CPU in millicores, memory and ephemeral storage in bytes, a pod count, and extended
/// resources by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `ResourceList` (capacity, allocatable, requests).
    pub fn from_list(
        list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    ) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list.into_iter().flatten() {
            match name.as_str() {
                "cpu" => r.milli_cpu = quantity::milli(&q.0).unwrap_or(0),
                "memory" => r.memory = quantity::value(&q.0).unwrap_or(0),
                "ephemeral-storage" => r.ephemeral_storage = quantity::value(&q.0).unwrap_or(0),
                "pods" => r.pods = quantity::value(&q.0).unwrap_or(0),
                // Hugepages and extended resources are counted as upstream's scalar resources.
                other if other.contains('/') || other.starts_with("hugepages-") => {
                    r.scalar.insert(other.to_owned(), quantity::value(&q.0).unwrap_or(0));
                }
                _ => {}
            }
        }
        r
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(other.ephemeral_storage);
        self.pods = self.pods.saturating_add(other.pods);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (k, v) in &other.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// A host port a pod asks for: (protocol, host IP, port).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Two host ports clash when protocol and port match and either IP is a wildcard or both
    /// are the same.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let wildcard = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == other.port
            && self.protocol == other.protocol
            && (wildcard(&self.ip) || wildcard(&other.ip) || self.ip == other.ip)
    }
}

/// What the scheduler needs of a pod, read once when it is seen.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: Labels,
    pub requests: Resources,
    /// Requests with upstream's defaults for containers that set none (100m CPU, 200Mi), used
    /// for scoring so that request-less pods still spread.
    pub non_zero: Resources,
    pub host_ports: Vec<HostPort>,
    pub priority: i32,
    /// Whether the pod has any pod affinity or anti-affinity terms, and required
    /// anti-affinity ones: nodes keep such pods apart so the InterPodAffinity plugin looks
    /// only at them.
    pub has_pod_affinity: bool,
    pub has_required_anti_affinity: bool,
}

/// Upstream's `DefaultMilliCPURequest` and `DefaultMemoryRequest`.
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

fn empty_spec() -> &'static k8s_openapi::api::core::v1::PodSpec {
    static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Default::default)
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref().unwrap_or_else(|| empty_spec());
        let (mut requests, mut non_zero) = (Resources::default(), Resources::default());
        let container_requests =
            |c: &Container| Resources::from_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        let with_defaults = |mut r: Resources| {
            if r.milli_cpu == 0 {
                r.milli_cpu = DEFAULT_MILLI_CPU;
            }
            if r.memory == 0 {
                r.memory = DEFAULT_MEMORY;
            }
            r
        };
        for c in &spec.containers {
            let r = container_requests(c);
            non_zero.add(&with_defaults(r.clone()));
            requests.add(&r);
        }
        // Init containers run before the others: a pod needs the largest of them, plus any
        // sidecars (restartable init containers) started before it, which keep running.
        let mut sidecars = Resources::default();
        let (mut init_peak, mut init_peak_non_zero) = (Resources::default(), Resources::default());
        for c in spec.init_containers.iter().flatten() {
            let r = container_requests(c);
            if c.restart_policy.as_deref() == Some("Always") {
                sidecars.add(&r);
                requests.add(&r);
                non_zero.add(&r);
            } else {
                let mut during = r.clone();
                during.add(&sidecars);
                init_peak.max(&during);
                init_peak_non_zero.max(&with_defaults(during));
            }
        }
        requests.max(&init_peak);
        non_zero.max(&init_peak_non_zero);
        let overhead = Resources::from_list(spec.overhead.as_ref());
        requests.add(&overhead);
        non_zero.add(&overhead);
        requests.pods = 1;
        non_zero.pods = 1;
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.host_port.is_some_and(|p| p > 0))
            .map(|p| HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p.host_ip.clone().unwrap_or_default(),
                port: p.host_port.unwrap_or_default(),
            })
            .collect();
        let affinity = spec.affinity.as_ref();
        let has_pod_affinity = affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        let has_required_anti_affinity = affinity
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
            .is_some_and(|terms| !terms.is_empty());
        PodInfo {
            has_pod_affinity,
            has_required_anti_affinity,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests,
            non_zero,
            host_ports,
            pod,
        }
    }

    pub fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.as_ref().unwrap_or_else(|| empty_spec())
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A node and what is placed on it, including pods assumed but not yet bound.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    pub labels: Labels,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    /// The pods here with pod affinity or anti-affinity terms (also in `pods`).
    pub affinity_pods: Vec<Arc<PodInfo>>,
    pub required_anti_affinity_pods: usize,
    pub used_ports: Vec<HostPort>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo {
            node: node.clone(),
            name: String::new(),
            labels: Labels::new(),
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
            affinity_pods: Vec::new(),
            required_anti_affinity_pods: 0,
            used_ports: Vec::new(),
            taints: Vec::new(),
            unschedulable: false,
        };
        info.set_node(node);
        info
    }

    /// Replaces the node object, keeping the pods placed on it.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let status = node.status.as_ref();
        self.allocatable = Resources::from_list(status.and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref())));
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        self.node = node;
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero);
        self.used_ports.extend(pod.host_ports.iter().cloned());
        if pod.has_pod_affinity {
            self.required_anti_affinity_pods += usize::from(pod.has_required_anti_affinity);
            self.affinity_pods.push(pod.clone());
        }
        self.pods.push(pod);
    }

    /// Puts a newer version of a pod here in the old one's place, if nothing the node counts
    /// changed (labels, requests, host ports; the affinity terms cannot change). False if
    /// the pod is not here or it did change.
    pub fn replace_pod(&mut self, pod: &Arc<PodInfo>) -> bool {
        let Some(at) = self.pods.iter().position(|p| p.uid == pod.uid) else { return false };
        let old = &self.pods[at];
        let same = old.labels == pod.labels
            && old.requests == pod.requests
            && old.non_zero == pod.non_zero
            && old.host_ports == pod.host_ports
            && old.has_pod_affinity == pod.has_pod_affinity
            && old.has_required_anti_affinity == pod.has_required_anti_affinity;
        if !same {
            return false;
        }
        self.pods[at] = pod.clone();
        if let Some(p) = self.affinity_pods.iter_mut().find(|p| p.uid == pod.uid) {
            *p = pod.clone();
        }
        true
    }

    /// Removes the pod with this uid, returning it if it was here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let at = self.pods.iter().position(|p| p.uid == uid)?;
        let pod = self.pods.swap_remove(at);
        if let Some(i) = self.affinity_pods.iter().position(|p| p.uid == uid) {
            self.affinity_pods.swap_remove(i);
            self.required_anti_affinity_pods -= usize::from(pod.has_required_anti_affinity);
        }
        self.requested.sub(&pod.requests);
        self.non_zero_requested.sub(&pod.non_zero);
        for port in &pod.host_ports {
            if let Some(i) = self.used_ports.iter().position(|p| p == port) {
                self.used_ports.swap_remove(i);
            }
        }
        Some(pod)
    }
}

/// Finds a node of the snapshot by name.
pub type NodeLookup<'a> = dyn Fn(&str) -> Option<&'a NodeInfo> + Sync + 'a;

/// Every node, as one scheduling cycle sees them.
pub struct Snapshot<'a> {
    pub nodes: Vec<&'a NodeInfo>,
    /// The cache's cluster-wide pod indexes and a node lookup, when the caller keeps them;
    /// plugins fall back to looking at every pod without them.
    pub index: Option<(&'a super::index::AffinityIndex, &'a NodeLookup<'a>)>,
    /// Pods with pod affinity or anti-affinity terms anywhere, and with required
    /// anti-affinity: when there are none, the InterPodAffinity plugin has nothing to check.
    pub affinity_pods: usize,
    pub required_anti_affinity_pods: usize,
}

impl<'a> Snapshot<'a> {
    pub fn new(nodes: Vec<&'a NodeInfo>) -> Snapshot<'a> {
        let affinity_pods = nodes.iter().map(|n| n.affinity_pods.len()).sum();
        let required_anti_affinity_pods = nodes.iter().map(|n| n.required_anti_affinity_pods).sum();
        Snapshot::with_counts(nodes, affinity_pods, required_anti_affinity_pods)
    }

    /// A snapshot whose pod counts the caller keeps (summing them is a pass over every node).
    pub fn with_counts(
        nodes: Vec<&'a NodeInfo>,
        affinity_pods: usize,
        required_anti_affinity_pods: usize,
    ) -> Snapshot<'a> {
        Snapshot { nodes, index: None, affinity_pods, required_anti_affinity_pods }
    }

    pub fn with_index(mut self, index: &'a super::index::AffinityIndex, lookup: &'a NodeLookup<'a>) -> Snapshot<'a> {
        self.index = Some((index, lookup));
        self
    }
}

/// A plugin, registered by name; it answers for each extension point it implements.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_filter(&self) -> Option<&dyn PreFilter> {
        None
    }
    fn filter(&self) -> Option<&dyn Filter> {
        None
    }
    fn pre_score(&self) -> Option<&dyn PreScore> {
        None
    }
    fn score(&self) -> Option<&dyn Score> {
        None
    }
    fn reserve(&self) -> Option<&dyn Reserve> {
        None
    }
    fn permit(&self) -> Option<&dyn Permit> {
        None
    }
}

/// Once per pod, before filtering: computes what Filter will need (across all nodes), or
/// returns `Status::skip()` when its Filter has nothing to check for this pod.
pub trait PreFilter: Send + Sync {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot<'_>) -> Status;
}

/// Whether the pod may run on the node.
pub trait Filter: Send + Sync {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Once per pod, before scoring, over the feasible nodes.
pub trait PreScore: Send + Sync {
    /// Returns `Status::skip()` when the plugin's Score has nothing to rank for this pod.
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        feasible: &[&NodeInfo],
        snapshot: &Snapshot<'_>,
    ) -> Status;
}

/// Ranks a feasible node, 0 to `MAX_NODE_SCORE` after `normalize`.
pub trait Score: Send + Sync {
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Rescales the raw scores of all feasible nodes (in order) into 0..=MAX_NODE_SCORE.
    fn normalize(&self, _scores: &mut [i64]) {}
    fn weight(&self) -> i64 {
        1
    }
}

/// Once a node is chosen: the plugin may veto the placement before binding.
pub trait Reserve: Send + Sync {
    fn reserve(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

/// The last say before binding: allow or deny (upstream's Wait is not offered).
pub trait Permit: Send + Sync {
    fn permit(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
}

pub const MAX_NODE_SCORE: i64 = 100;

/// Scales scores so the highest becomes `MAX_NODE_SCORE`; `reverse` makes the lowest best.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}
