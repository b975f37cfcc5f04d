//! The scheduler: it watches pods that have no node and nodes, keeps a cache of what is
//! placed where, and places each pending pod with a framework profile, then binds it through
//! the `pods/binding` subresource like upstream's kube-scheduler.
//!
//! One thread runs scheduling cycles one pod at a time against the cache (filtering and
//! scoring spread over cores); bindings run concurrently on the runtime, so the next pod is
//! placed while earlier ones are still being written. A placed pod is "assumed" in the cache
//! at once, so the next cycle sees its resources taken.

pub mod cycle;
pub mod framework;
pub mod index;
pub mod plugins;
pub mod preemption;
pub mod queue;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{Recorder, Type};
use crate::informer::Informer;
use cycle::Profile;
use framework::{NodeInfo, PodInfo, Snapshot};
use queue::Queue;

/// The scheduler name pods select with `spec.schedulerName` (empty means this one).
pub const NAME: &str = "default-scheduler";
/// Bindings written at once.
const BINDERS: usize = 512;

/// What is placed where: every node, and the node of every pod the scheduler knows is on one.
#[derive(Default)]
struct Cache {
    /// The nodes that exist, contiguous so a cycle's snapshot is a list of references made
    /// without looking at them (a removed node's place goes to the last one).
    nodes: Vec<NodeInfo>,
    by_name: HashMap<String, usize>,
    /// The pods on nodes the scheduler has not seen (yet, or any more), by node name.
    orphans: HashMap<String, NodeInfo>,
    /// Pod uid → node, for pods bound or assumed.
    placed: HashMap<String, String>,
    /// Placed pods with pod (anti-)affinity terms, and with required anti-affinity ones, kept
    /// as counts so a cycle need not sum them over every node.
    affinity_pods: usize,
    required_anti_affinity_pods: usize,
    /// Pending pods that preempted others, by uid, with the node they wait for. Their
    /// requests count on that node for pods of no higher priority, so the room freed for
    /// them is not taken (upstream's nominated pods).
    nominated: HashMap<String, (String, Arc<PodInfo>)>,
    /// Preemptors by uid, with their victims' uids: a pod does not preempt again while any of
    /// its victims is still on its node.
    preempting: HashMap<String, Vec<String>>,
    index: index::AffinityIndex,
}

impl Cache {
    /// The node, if it exists.
    fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.by_name.get(name).map(|&i| &self.nodes[i])
    }

    /// Where a pod on `node` is kept: the node, or its orphans.
    fn slot(&mut self, node: &str) -> &mut NodeInfo {
        match self.by_name.get(node) {
            Some(&i) => &mut self.nodes[i],
            None => self.orphans.entry(node.to_owned()).or_insert_with(|| {
                let mut placeholder = Node::default();
                placeholder.metadata.name = Some(node.to_owned());
                NodeInfo::new(Arc::new(placeholder))
            }),
        }
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.nominated.remove(&pod.uid);
        self.preempting.remove(&pod.uid);
        // Most events are of pods already here (the binding of an assumed pod, a status
        // change): the newer version takes the old one's place, nothing is counted again.
        if self.placed.get(&pod.uid).is_some_and(|n| n == node) && self.slot(node).replace_pod(&pod) {
            self.index.refresh(&pod);
            return;
        }
        self.forget(&pod.uid);
        self.placed.insert(pod.uid.clone(), node.to_owned());
        self.index.add(&pod, node);
        self.affinity_pods += pod.has_pod_affinity as usize;
        self.required_anti_affinity_pods += pod.has_required_anti_affinity as usize;
        self.slot(node).add_pod(pod);
    }

    /// Removes a pod from its node; true if it was placed.
    fn forget(&mut self, uid: &str) -> bool {
        let Some(node) = self.placed.remove(uid) else { return false };
        let removed = match self.by_name.get(&node) {
            Some(&i) => self.nodes[i].remove_pod(uid),
            None => {
                let removed = self.orphans.get_mut(&node).and_then(|o| o.remove_pod(uid));
                if self.orphans.get(&node).is_some_and(|o| o.pods.is_empty()) {
                    self.orphans.remove(&node);
                }
                removed
            }
        };
        if let Some(pod) = removed {
            self.index.remove(&pod, &node);
            self.affinity_pods = self.affinity_pods.saturating_sub(pod.has_pod_affinity as usize);
            self.required_anti_affinity_pods =
                self.required_anti_affinity_pods.saturating_sub(pod.has_required_anti_affinity as usize);
        }
        true
    }

    /// Stores the node; true if it changed in a way that could let a pod fit.
    fn apply_node(&mut self, node: Node) -> bool {
        let name = node.name_any();
        let node = Arc::new(node);
        let Some(&i) = self.by_name.get(&name) else {
            let info = match self.orphans.remove(&name) {
                Some(mut orphans) => {
                    orphans.set_node(node);
                    orphans
                }
                None => NodeInfo::new(node),
            };
            self.by_name.insert(name, self.nodes.len());
            self.nodes.push(info);
            return true;
        };
        let info = &mut self.nodes[i];
        let before = (info.allocatable.clone(), info.labels.clone(), info.taints.clone(), info.unschedulable);
        info.set_node(node);
        before != (info.allocatable.clone(), info.labels.clone(), info.taints.clone(), info.unschedulable)
    }

    /// Forgets the node; its pods stay, as orphans, until their own events say otherwise.
    fn remove_node(&mut self, name: &str) {
        let Some(i) = self.by_name.remove(name) else { return };
        let info = self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.by_name.insert(moved.name.clone(), i);
        }
        if !info.pods.is_empty() {
            self.orphans.insert(name.to_owned(), info);
        }
    }
}

#[derive(Default)]
struct Shared {
    cache: Mutex<Cache>,
    queue: Mutex<Queue>,
    /// Signalled when the active queue may have work.
    work: Condvar,
    /// Whether the first full list of nodes, and of pods, is in the cache. No pod is placed
    /// before both are, as upstream's scheduler waits for its informers to sync: a node not
    /// seen yet could be the best one, and pods bound but not seen yet would be overlooked.
    nodes_synced: std::sync::atomic::AtomicBool,
    pods_synced: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Wakes the cycle thread, which has nothing to do before the caches are synced.
    fn wake(&self) {
        if self.synced() {
            self.work.notify_one();
        }
    }

    fn synced(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        self.nodes_synced.load(Acquire) && self.pods_synced.load(Acquire)
    }
}

fn ours(pod: &Pod) -> bool {
    let name = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or_default();
    name.is_empty() || name == NAME
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty())
}

fn terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Runs the scheduler until its task is dropped. It follows pods through `pods`, the shared
/// pod informer.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>) {
    let shared = Arc::new(Shared::default());
    let recorder = Recorder::start(client.clone(), NAME);
    let runtime = tokio::runtime::Handle::current();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (budgets, budget_writer) = reflector::store::<PodDisruptionBudget>();
    let cycles = {
        let (shared, client, stop) = (shared.clone(), client.clone(), stop.clone());
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || schedule_loop(&shared, &client, &recorder, &budgets, &runtime, &stop))
            .expect("a thread for scheduling cycles")
    };
    // Stops the cycle thread when this task is dropped or returns.
    struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>, Arc<Shared>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            self.1.work.notify_all();
        }
    }
    let _stop = StopOnDrop(stop, shared.clone());
    let flush = {
        let shared = shared.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if lock(&shared.queue).flush(Instant::now()) {
                    shared.wake();
                }
            }
        }
    };
    // The PodDisruptionBudgets that preemption weighs, kept by a reflector as the disruption
    // controller keeps them.
    let budget_watch = watcher::watcher(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(budget_writer)
        .for_each(|_| async {});
    tokio::join!(watch_nodes(&client, &shared), watch_pods(&pods, &shared), budget_watch, flush);
    drop(cycles);
}

async fn watch_nodes(client: &Client, shared: &Shared) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut seen: Option<HashSet<String>> = None;
    let mut events = watcher::watcher(nodes, watcher::Config::default()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::debug!("scheduler node watch: {e}");
                continue;
            }
        };
        let changed = {
            let mut cache = lock(&shared.cache);
            match event {
                Event::Init => {
                    seen = Some(HashSet::new());
                    false
                }
                Event::InitApply(node) | Event::Apply(node) => {
                    if let Some(seen) = seen.as_mut() {
                        seen.insert(node.name_any());
                    }
                    cache.apply_node(node)
                }
                Event::Delete(node) => {
                    cache.remove_node(&node.name_any());
                    false
                }
                Event::InitDone => {
                    let keep = seen.take().unwrap_or_default();
                    let gone: Vec<String> = cache.by_name.keys().filter(|n| !keep.contains(*n)).cloned().collect();
                    gone.iter().for_each(|n| cache.remove_node(n));
                    shared.nodes_synced.store(true, std::sync::atomic::Ordering::Release);
                    true
                }
            }
        };
        if changed {
            lock(&shared.queue).cluster_changed();
            shared.wake();
        }
    }
}

async fn watch_pods(pods: &Informer<Pod>, shared: &Shared) {
    let mut seen: Option<HashSet<String>> = None;
    let mut events = pods.events().boxed();
    while let Some(event) = events.next().await {
        let (mut cache, mut queue) = (lock(&shared.cache), lock(&shared.queue));
        let freed = match event {
            Event::Init => {
                seen = Some(HashSet::new());
                false
            }
            Event::InitApply(pod) | Event::Apply(pod) => {
                if let Some(seen) = seen.as_mut() {
                    seen.insert(pod.uid().unwrap_or_default());
                }
                apply_pod(&mut cache, &mut queue, pod)
            }
            Event::Delete(pod) => {
                queue.remove(&format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()));
                let uid = pod.uid().unwrap_or_default();
                cache.nominated.remove(&uid);
                cache.preempting.remove(&uid);
                cache.forget(&uid)
            }
            Event::InitDone => {
                // Pods deleted while the watch was down.
                let keep = seen.take().unwrap_or_default();
                let gone: Vec<String> = cache.placed.keys().filter(|uid| !keep.contains(*uid)).cloned().collect();
                gone.iter().for_each(|uid| {
                    cache.forget(uid);
                });
                cache.nominated.retain(|uid, _| keep.contains(uid));
                cache.preempting.retain(|uid, _| keep.contains(uid));
                shared.pods_synced.store(true, std::sync::atomic::Ordering::Release);
                true
            }
        };
        if freed {
            queue.cluster_changed();
        }
        drop((cache, queue));
        shared.wake();
    }
}

/// Files the pod: placed on its node, or queued for one. True when resources were freed.
fn apply_pod(cache: &mut Cache, queue: &mut Queue, pod: Arc<Pod>) -> bool {
    let info = Arc::new(PodInfo::new(pod));
    let key = info.key();
    let pod = &info.pod;
    if let Some(node) = node_name(pod).map(str::to_owned) {
        queue.remove(&key);
        // Finished pods hold no resources.
        if terminal(pod) {
            return cache.forget(&info.uid);
        }
        cache.place(info, &node);
        return false;
    }
    // An unbound pod the scheduler already placed is a late event from before its binding.
    if pod.metadata.deletion_timestamp.is_some() || !ours(pod) || cache.placed.contains_key(&info.uid) {
        queue.remove(&key);
        cache.nominated.remove(&info.uid);
        return false;
    }
    match pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty()) {
        Some(node) => cache.nominated.insert(info.uid.clone(), (node.to_owned(), info.clone())),
        None => cache.nominated.remove(&info.uid),
    };
    queue.add_or_update(info);
    false
}

fn schedule_loop(
    shared: &Arc<Shared>,
    client: &Client,
    recorder: &Recorder,
    budgets: &reflector::Store<PodDisruptionBudget>,
    runtime: &tokio::runtime::Handle,
    stop: &std::sync::atomic::AtomicBool,
) {
    let profile = Profile::default_profile();
    let binders = Arc::new(tokio::sync::Semaphore::new(BINDERS));
    loop {
        let pod = {
            let mut queue = lock(&shared.queue);
            loop {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if shared.synced()
                    && let Some(pod) = queue.pop()
                {
                    break pod;
                }
                queue = shared
                    .work
                    .wait_timeout(queue, Duration::from_secs(1))
                    .map(|(q, _)| q)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        };
        let (result, preemption, stale_nomination) = {
            let cache = lock(&shared.cache);
            let overlays = nominated_overlays(&cache, &pod);
            let lookup = |name: &str| cache.node(name).map(|n| with_nominated(&overlays, n));
            let nodes = if overlays.is_empty() {
                cache.nodes.iter().collect()
            } else {
                cache.nodes.iter().map(|n| with_nominated(&overlays, n)).collect()
            };
            let snapshot = Snapshot::with_counts(nodes, cache.affinity_pods, cache.required_anti_affinity_pods)
                .with_index(&cache.index, &lookup);
            let result = profile.schedule(&pod, &snapshot, |n| rand::random_range(0..n));
            // A pod whose victims are still on their node waits for them.
            let waiting = cache
                .preempting
                .get(&pod.uid)
                .is_some_and(|victims| victims.iter().any(|v| cache.placed.contains_key(v)));
            let preemption = match &result {
                Err(error) if error.resolvable && !waiting => {
                    let budgets: Vec<preemption::Budget> =
                        budgets.state().iter().map(|b| preemption::Budget::new(b)).collect();
                    profile.preempt(&pod, &snapshot, &budgets.iter().collect::<Vec<_>>())
                }
                _ => None,
            };
            // Nominated earlier, but preempting no longer helps: the node is not held for it.
            let stale = result.is_err() && !waiting && preemption.is_none() && cache.nominated.contains_key(&pod.uid);
            (result, preemption, stale)
        };
        match result {
            Ok(node) => {
                lock(&shared.cache).place(pod.clone(), &node);
                let permit = match runtime.block_on(binders.clone().acquire_owned()) {
                    Ok(permit) => permit,
                    Err(_) => return,
                };
                let (shared, client, recorder) = (shared.clone(), client.clone(), recorder.clone());
                runtime.spawn(async move {
                    bind(&shared, &client, &recorder, &pod, &node).await;
                    drop(permit);
                });
            }
            Err(error) => {
                if let Some(preemption) = preemption {
                    let mut cache = lock(&shared.cache);
                    cache.nominated.insert(pod.uid.clone(), (preemption.node.clone(), pod.clone()));
                    let victims = preemption.victims.iter().map(|v| v.uid.clone()).collect();
                    cache.preempting.insert(pod.uid.clone(), victims);
                    drop(cache);
                    let (client, recorder, pod) = (client.clone(), recorder.clone(), pod.clone());
                    runtime.spawn(async move { preempt(&client, &recorder, &pod, preemption).await });
                } else if stale_nomination {
                    let mut cache = lock(&shared.cache);
                    cache.nominated.remove(&pod.uid);
                    cache.preempting.remove(&pod.uid);
                    drop(cache);
                    let (client, pod) = (client.clone(), pod.clone());
                    runtime.spawn(async move { nominate(&client, &pod, None).await });
                }
                let message = error.message();
                let news = lock(&shared.queue).unschedulable(&pod.key(), &message, Instant::now());
                if news {
                    let (client, recorder) = (client.clone(), recorder.clone());
                    runtime.spawn(async move { report_unschedulable(&client, &recorder, &pod, message).await });
                }
            }
        }
    }
}

async fn bind(shared: &Shared, client: &Client, recorder: &Recorder, pod: &PodInfo, node: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let result =
        pods.create_subresource::<_, serde_json::Value>("binding", &pod.name, &PostParams::default(), &binding).await;
    let key = pod.key();
    match result {
        Ok(_) => {
            lock(&shared.queue).done(&key);
            recorder.record(
                pod.pod.as_ref(),
                Type::Normal,
                "Scheduled",
                "Binding",
                format!("Successfully assigned {key} to {node}"),
            );
        }
        // Gone, or bound by someone else: its own events will tell the cache.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => lock(&shared.queue).done(&key),
        Err(e) => {
            tracing::debug!("binding {key} to {node}: {e}");
            lock(&shared.cache).forget(&pod.uid);
            let mut queue = lock(&shared.queue);
            queue.retry_later(&key, Instant::now());
            queue.cluster_changed();
        }
    }
}

/// The nodes that pods nominated there weigh on for `pod`: each node with a nominated pod of
/// at least `pod`'s priority (other than `pod`), with those pods added.
fn nominated_overlays<'a>(cache: &'a Cache, pod: &PodInfo) -> HashMap<&'a str, NodeInfo> {
    let mut overlays: HashMap<&str, NodeInfo> = HashMap::new();
    for (uid, (node, nominee)) in &cache.nominated {
        if *uid == pod.uid || nominee.priority < pod.priority {
            continue;
        }
        let Some(info) = cache.node(node) else { continue };
        overlays.entry(info.name.as_str()).or_insert_with(|| info.clone()).add_pod(nominee.clone());
    }
    overlays
}

/// The node as a cycle sees it: with the pods nominated to it, if they count.
fn with_nominated<'a>(overlays: &'a HashMap<&str, NodeInfo>, node: &'a NodeInfo) -> &'a NodeInfo {
    overlays.get(node.name.as_str()).unwrap_or(node)
}

/// Writes (or with None clears) the pod's `status.nominatedNodeName`.
async fn nominate(client: &Client, pod: &PodInfo, node: Option<&str>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let patch = json!({"status": {"nominatedNodeName": node}});
    if let Err(e) = pods.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(patch)).await {
        tracing::debug!("pod {}: nomination not written: {e}", pod.key());
    }
}

/// Evicts the victims as upstream does (each gets a DisruptionTarget condition, a `Preempted`
/// event, and a graceful delete), then nominates the node for the pod.
async fn preempt(client: &Client, recorder: &Recorder, pod: &PodInfo, preemption: preemption::Preemption) {
    for victim in &preemption.victims {
        let victims: Api<Pod> = Api::namespaced(client.clone(), &victim.namespace);
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
            "message": format!("{NAME}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": now,
        }]}});
        if let Err(e) = victims.patch_status(&victim.name, &PatchParams::default(), &Patch::Strategic(condition)).await
        {
            tracing::debug!("victim {}: condition not written: {e}", victim.key());
        }
        recorder.record(
            victim.pod.as_ref(),
            Type::Normal,
            "Preempted",
            "Preempting",
            format!("Preempted by pod {} on node {}", pod.uid, preemption.node),
        );
        match victims.delete(&victim.name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::debug!("victim {}: not deleted: {e}", victim.key()),
        }
    }
    nominate(client, pod, Some(&preemption.node)).await;
}

/// Writes the PodScheduled=False condition and a FailedScheduling event.
async fn report_unschedulable(client: &Client, recorder: &Recorder, pod: &PodInfo, message: String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastProbeTime": null, "lastTransitionTime": now,
    }]}});
    if let Err(e) = pods.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(patch)).await {
        tracing::debug!("pod {}: condition not written: {e}", pod.key());
    }
    recorder.record(pod.pod.as_ref(), Type::Warning, "FailedScheduling", "Scheduling", message);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2", "pods": "10"}}}),
        )
        .unwrap()
    }

    fn pod(name: &str, anti_affinity: bool) -> Arc<PodInfo> {
        let mut spec = json!({"containers": [{"name": "c", "image": "i"}]});
        if anti_affinity {
            spec["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": "kubernetes.io/hostname"}]}});
        }
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")}, "spec": spec}),
        )
        .unwrap();
        Arc::new(PodInfo::new(Arc::new(pod)))
    }

    fn with_labels(pod: &Arc<PodInfo>, labels: serde_json::Value) -> Arc<PodInfo> {
        let mut newer = (*pod.pod).clone();
        newer.metadata.labels = serde_json::from_value(labels).unwrap();
        Arc::new(PodInfo::new(Arc::new(newer)))
    }

    #[test]
    fn a_newer_version_of_a_placed_pod_takes_its_place() {
        let mut cache = Cache::default();
        cache.apply_node(node("a"));
        let assumed = pod("p", true);
        cache.place(assumed.clone(), "a");
        let requested = cache.node("a").unwrap().requested.clone();
        // The bound version of an assumed pod: counted once, and only the newer one is kept.
        let bound = pod("p", true);
        cache.place(bound.clone(), "a");
        let a = cache.node("a").unwrap();
        assert_eq!((a.pods.len(), a.affinity_pods.len(), a.required_anti_affinity_pods), (1, 1, 1));
        assert_eq!(a.requested, requested);
        assert!(Arc::ptr_eq(&a.pods[0], &bound) && Arc::ptr_eq(&a.affinity_pods[0], &bound));
        assert_eq!((cache.affinity_pods, cache.required_anti_affinity_pods), (1, 1));
        assert_eq!(Arc::strong_count(&assumed), 1, "nothing keeps the older version");

        // New labels are indexed again: the pod is found by them, and not by the old ones.
        let term: k8s_openapi::api::core::v1::PodAffinityTerm = serde_json::from_value(
            json!({"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}),
        )
        .unwrap();
        let labelled = with_labels(&bound, json!({"app": "x"}));
        cache.place(labelled.clone(), "a");
        assert_eq!(cache.index.candidates(&term).unwrap().len(), 1);
        cache.place(with_labels(&labelled, json!({"app": "y"})), "a");
        assert!(cache.index.candidates(&term).unwrap().is_empty());
        let a = cache.node("a").unwrap();
        assert_eq!((a.pods.len(), a.required_anti_affinity_pods), (1, 1));
        assert_eq!(a.requested, requested);
        assert_eq!((cache.affinity_pods, cache.required_anti_affinity_pods), (1, 1));
        // Still one pod to forget.
        assert!(cache.forget("uid-p"));
        assert!(cache.node("a").unwrap().pods.is_empty());
    }

    fn names(cache: &Cache) -> Vec<&str> {
        let mut names: Vec<&str> = cache.nodes.iter().map(|n| n.name.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_cache_keeps_nodes_contiguous_and_pods_of_unknown_nodes_aside() {
        let mut cache = Cache::default();
        // A pod bound to a node not seen yet waits as an orphan, then joins its node.
        cache.place(pod("early", true), "b");
        assert!(cache.node("b").is_none());
        assert!(cache.apply_node(node("a")));
        assert!(cache.apply_node(node("b")));
        assert!(cache.apply_node(node("c")));
        assert!(cache.orphans.is_empty());
        assert_eq!(cache.node("b").unwrap().pods.len(), 1);
        assert_eq!((cache.affinity_pods, cache.required_anti_affinity_pods), (1, 1));
        // The same node again changes nothing a pod could use.
        assert!(!cache.apply_node(node("a")));

        // Removing a node moves the last one into its place; its pods stay, aside.
        cache.place(pod("p", false), "a");
        cache.remove_node("a");
        assert_eq!(names(&cache), ["b", "c"]);
        for (i, n) in cache.nodes.iter().enumerate() {
            assert_eq!(cache.by_name[&n.name], i);
        }
        assert_eq!(cache.orphans["a"].pods.len(), 1);
        assert!(cache.forget("uid-p"));
        assert!(cache.orphans.is_empty());
        assert!(!cache.forget("uid-p"));

        // Counts follow pods in and out.
        cache.place(pod("late", true), "c");
        assert_eq!(cache.required_anti_affinity_pods, 2);
        cache.forget("uid-early");
        cache.forget("uid-late");
        assert_eq!((cache.affinity_pods, cache.required_anti_affinity_pods), (0, 0));
        cache.remove_node("c");
        cache.remove_node("b");
        assert!(cache.nodes.is_empty() && cache.by_name.is_empty() && cache.orphans.is_empty());
    }
}
