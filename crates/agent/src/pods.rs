//! Running the pods bound to this node. One manager watches them and relists the runtime
//! (every second, and at once when a worker asks); one worker per pod plans its next steps
//! (`sync::plan`), carries them out through CRI, and writes the pod's status when it changes.
//! Deleting a pod stops its containers within its grace period, removes its sandbox, and
//! then confirms the deletion to the API server, as the kubelet does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_cri::v1::{
    CreateContainerRequest, ImageSpec, ImageStatusRequest, PullImageRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};
use k8s_openapi::api::core::v1::{ConfigMap, Container as SpecContainer, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use rkube_controllers::events::{Recorder, Type};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::cri::{Cri, Relist, rpc};
use crate::spec;
use crate::sync::{self, Observed, State, Step};

pub struct Context {
    pub client: Client,
    pub cri: Cri,
    pub node_name: String,
    pub node_ip: String,
    pub pod_logs: std::path::PathBuf,
    /// Pods' volumes, `DIR/UID/NAME`.
    pub volumes: std::path::PathBuf,
    pub recorder: Recorder,
    /// Asks the manager to relist now.
    pub kick: Notify,
    pub cluster_dns: spec::ClusterDns,
    /// Static pod manifests, `DATA/agent/manifests`.
    pub static_pods: std::path::PathBuf,
}

/// What a worker is told about its pod.
#[derive(Clone)]
enum Desired {
    Pod(Arc<Pod>),
    /// Removed from the API without the agent's confirmation (a forced delete).
    Gone,
}

struct Worker {
    desired: watch::Sender<Desired>,
    /// None until the first relist after the worker started.
    observed: watch::Sender<Option<Observed>>,
}

/// Runs until dropped: watches this node's pods and keeps one worker per pod.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.node_name);
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default().fields(&selector)).default_backoff());
    let mut workers: HashMap<String, Worker> = HashMap::new();
    let mut tasks: JoinSet<String> = JoinSet::new();
    let mut relist = Relist::default();
    let mut listed = false;
    let mut listing: HashSet<String> = HashSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Static pods are known before anything is decided, so their running containers are
    // adopted, not taken for orphans.
    let mut source = crate::static_pods::Source::new(ctx.static_pods.clone(), &ctx.node_name);
    let mut statics: BTreeMap<String, Pod> = source.changed().unwrap_or_default();
    let mut mirrors: HashMap<String, Pod> = HashMap::new();
    for pod in statics.values() {
        apply(&ctx, &mut workers, &mut tasks, pod.clone());
    }
    let (mirror_tx, mirror_rx) = watch::channel(statics.clone());
    let _mirrors = crate::AbortOnDrop(tokio::spawn(mirror_loop(ctx.client.clone(), ctx.node_name.clone(), mirror_rx)));
    let mut static_tick = tokio::time::interval(Duration::from_secs(5));
    // Static pods on their way out, and successors waiting for them (by the old uid).
    let mut stopping: HashSet<String> = HashSet::new();
    let mut deferred: HashMap<String, Pod> = HashMap::new();
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return };
                let event = match event {
                    // A mirror pod stands for a static pod: its status and version go to that
                    // pod's worker, which writes status to it.
                    Ok(Event::InitApply(pod) | Event::Apply(pod)) if crate::static_pods::is_mirror(&pod) => {
                        let hash = pod.annotations().get(crate::static_pods::MIRROR).cloned().unwrap_or_default();
                        if pod.metadata.deletion_timestamp.is_none() {
                            mirrors.insert(hash.clone(), pod);
                        }
                        if let Some(s) = statics.get(&hash) {
                            apply(&ctx, &mut workers, &mut tasks, with_mirror(s, mirrors.get(&hash)));
                        }
                        continue;
                    }
                    Ok(Event::Delete(pod)) if crate::static_pods::is_mirror(&pod) => {
                        mirrors.remove(pod.annotations().get(crate::static_pods::MIRROR).map_or("", String::as_str));
                        mirror_tx.send_modify(|_| {});
                        continue;
                    }
                    other => other,
                };
                match event {
                    Ok(Event::Init) => listing.clear(),
                    Ok(Event::InitApply(pod)) => {
                        listing.insert(pod.uid().unwrap_or_default());
                        apply(&ctx, &mut workers, &mut tasks, pod);
                    }
                    Ok(Event::InitDone) => {
                        listed = true;
                        for (uid, worker) in &workers {
                            if !listing.contains(uid) && !statics.contains_key(uid) && !stopping.contains(uid) {
                                worker.desired.send_replace(Desired::Gone);
                            }
                        }
                        ctx.kick.notify_one();
                    }
                    Ok(Event::Apply(pod)) => apply(&ctx, &mut workers, &mut tasks, pod),
                    Ok(Event::Delete(pod)) => {
                        if let Some(worker) = workers.get(&pod.uid().unwrap_or_default()) {
                            worker.desired.send_replace(Desired::Gone);
                        }
                    }
                    Err(e) => tracing::debug!("pods on {}: {e}", ctx.node_name),
                }
            }
            _ = static_tick.tick() => {
                if let Some(set) = source.changed() {
                    // A removed (or edited) static pod stops gracefully, preStop hooks and all;
                    // its successor of the same name starts only once it has stopped.
                    let mut stopping_names = HashMap::new();
                    for (uid, old) in statics.iter().filter(|(uid, _)| !set.contains_key(*uid)) {
                        if workers.contains_key(uid) {
                            apply(&ctx, &mut workers, &mut tasks, terminating(old));
                            stopping.insert(uid.clone());
                            stopping_names.insert(old.name_any(), uid.clone());
                        }
                    }
                    for (uid, pod) in &set {
                        match stopping_names.get(&pod.name_any()) {
                            Some(old) if !workers.contains_key(uid) => {
                                deferred.insert(old.clone(), pod.clone());
                            }
                            _ => apply(&ctx, &mut workers, &mut tasks, with_mirror(pod, mirrors.get(uid))),
                        }
                    }
                    statics = set;
                    mirror_tx.send_replace(statics.clone());
                }
            }
            _ = tick.tick() => observe(&ctx, &mut relist, &workers, &mut tasks, listed).await,
            () = ctx.kick.notified() => observe(&ctx, &mut relist, &workers, &mut tasks, listed).await,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(uid) = done {
                    workers.remove(&uid);
                    stopping.remove(&uid);
                    if let Some(next) = deferred.remove(&uid) {
                        let uid = next.uid().unwrap_or_default();
                        if statics.contains_key(&uid) {
                            apply(&ctx, &mut workers, &mut tasks, with_mirror(&next, mirrors.get(&uid)));
                        }
                    }
                }
            }
        }
    }
}

/// A static pod whose manifest went: deleted, as far as its worker is concerned, with the
/// pod's own grace period. (The worker's confirming delete carries the static uid, which no
/// API object has, so it deletes nothing.)
fn terminating(pod: &Pod) -> Pod {
    let mut pod = pod.clone();
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()));
    pod.metadata.deletion_grace_period_seconds =
        Some(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30));
    pod
}

/// A static pod as its worker sees it: with its mirror's status and version, so that a
/// new mirror gets the status written again.
fn with_mirror(pod: &Pod, mirror: Option<&Pod>) -> Pod {
    let mut pod = pod.clone();
    if let Some(m) = mirror {
        pod.status = m.status.clone();
        pod.metadata.resource_version = m.metadata.resource_version.clone();
    }
    pod
}

/// Keeps the API's mirror pods in line with the static pods: on each change, and every 10 s
/// while there are any (a deleted mirror comes back).
async fn mirror_loop(client: kube::Client, node: String, mut statics: watch::Receiver<BTreeMap<String, Pod>>) {
    let mut had_any = true;
    loop {
        let set = statics.borrow_and_update().clone();
        let synced = if had_any || !set.is_empty() {
            crate::static_pods::sync_mirrors(&client, &node, &set).await
        } else {
            Ok(())
        };
        if let Err(e) = synced {
            tracing::debug!("mirror pods: {e}");
        }
        had_any = !set.is_empty();
        tokio::select! {
            changed = statics.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

fn apply(ctx: &Arc<Context>, workers: &mut HashMap<String, Worker>, tasks: &mut JoinSet<String>, pod: Pod) {
    let Some(uid) = pod.uid() else { return };
    let pod = Arc::new(pod);
    if let Some(worker) = workers.get(&uid) {
        worker.desired.send_replace(Desired::Pod(pod));
        return;
    }
    let (desired, desired_rx) = watch::channel(Desired::Pod(pod));
    let (observed, observed_rx) = watch::channel(None);
    let ctx = ctx.clone();
    let id = uid.clone();
    tasks.spawn(async move {
        work(ctx, desired_rx, observed_rx).await;
        id
    });
    workers.insert(uid, Worker { desired, observed });
}

async fn observe(
    ctx: &Arc<Context>,
    relist: &mut Relist,
    workers: &HashMap<String, Worker>,
    tasks: &mut JoinSet<String>,
    listed: bool,
) {
    let pods = match relist.observe(&ctx.cri).await {
        Ok(pods) => pods,
        Err(e) => {
            tracing::debug!("relist: {e}");
            return;
        }
    };
    for (uid, worker) in workers {
        let seen = pods.get(uid).cloned().unwrap_or_default();
        worker.observed.send_if_modified(|old| {
            let changed = old.as_ref() != Some(&seen);
            *old = Some(seen);
            changed
        });
    }
    // Sandboxes of pods the API no longer has (deleted while the agent was down) are removed.
    if listed {
        for (uid, observed) in pods {
            if !workers.contains_key(&uid) && !observed.sandboxes.is_empty() {
                let (cri, volumes) = (ctx.cri.clone(), ctx.volumes.clone());
                tasks.spawn(async move {
                    if remove_all(&cri, &observed, 0).await {
                        crate::volumes::remove(&volumes, &uid);
                    }
                    String::new()
                });
            }
        }
    }
}

/// Per-worker state that outlives one pass.
#[derive(Default)]
struct Memory {
    waiting: sync::Waiting,
    /// Image pull failures per container: how many, and when the last one was.
    pull_failures: BTreeMap<String, (u32, Instant)>,
    /// What the worker made and the relist has not shown yet: sandbox attempts and
    /// (container, attempt) pairs; planning waits for them, for at most `EXPECT_FOR`.
    expect: Vec<(Option<String>, u32, Instant)>,
    /// The last status written, and the pod's resourceVersion when it was.
    last_status: Option<(Option<String>, serde_json::Value)>,
    uid: Option<String>,
    /// When configMap and secret volumes were last refreshed.
    volumes_synced: Option<Instant>,
    /// Probe tasks by container id, with what they found.
    probes: HashMap<String, (ProbeTask, String, watch::Receiver<crate::probe::Found>)>,
    /// Woken by a probe result.
    wake: Arc<Notify>,
}

/// A probe task, stopped when its container stops or the worker ends.
struct ProbeTask(tokio::task::JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const EXPECT_FOR: Duration = Duration::from_secs(10);
/// Act-and-look rounds in one pass: sandbox, init containers, containers.
const MAX_ROUNDS: usize = 8;

/// Removes what the pod no longer needs: sandboxes older than the newest that are not
/// ready (with their containers), and exited containers older than the one before the
/// newest of each name, which `lastState` and `logs --previous` read.
async fn collect_garbage(cri: &Cri, seen: &Observed) {
    let newest = seen.sandbox().map(|s| s.id.clone());
    let mut rt = cri.runtime.clone();
    for s in seen.sandboxes.iter().filter(|s| !s.ready && Some(&s.id) != newest.as_ref()) {
        let _ = rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
    }
    for c in &seen.containers {
        let latest = seen.latest(&c.name).map_or(0, |l| l.attempt);
        if c.state == State::Exited && c.attempt + 1 < latest {
            let _ = rt.remove_container(k8s_cri::v1::RemoveContainerRequest { container_id: c.id.clone() }).await;
        }
    }
}

impl Memory {
    fn settled(&mut self, observed: &Observed) -> bool {
        self.expect.retain(|(name, attempt, at)| {
            let seen = match name {
                None => observed.sandboxes.iter().any(|s| s.attempt == *attempt),
                Some(n) => observed.containers.iter().any(|c| &c.name == n && c.attempt == *attempt),
            };
            !seen && at.elapsed() < EXPECT_FOR
        });
        self.expect.is_empty()
    }
}

async fn work(
    ctx: Arc<Context>,
    mut desired: watch::Receiver<Desired>,
    mut observed: watch::Receiver<Option<Observed>>,
) {
    let mut memory = Memory::default();
    loop {
        let current = desired.borrow_and_update().clone();
        let seen = observed.borrow_and_update().clone();
        let pod = match current {
            Desired::Gone => {
                let Some(seen) = seen else { return };
                if seen.sandboxes.is_empty() || remove_all(&ctx.cri, &seen, 0).await {
                    if let Some(uid) = memory.uid.as_deref() {
                        crate::volumes::remove(&ctx.volumes, uid);
                    }
                    return;
                }
                ctx.kick.notify_one();
                let _ = tokio::time::timeout(Duration::from_secs(2), observed.changed()).await;
                continue;
            }
            Desired::Pod(pod) => {
                memory.uid = pod.uid();
                pod
            }
        };
        // Nothing is decided before the runtime has been asked about this pod: it may already
        // run (the agent restarted), and its containers are adopted, not started again.
        let seen = match seen {
            Some(seen) => seen,
            None => match crate::cri::observe_pod(&ctx.cri, &pod.uid().unwrap_or_default()).await {
                Ok(seen) => seen,
                Err(e) => {
                    tracing::debug!("{}: {e}", pod.name_any());
                    let _ = tokio::time::timeout(Duration::from_secs(1), observed.changed()).await;
                    continue;
                }
            },
        };
        if pod.metadata.deletion_timestamp.is_some() {
            if terminate(&ctx, &pod, &seen).await {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut wake = Duration::from_secs(30);
        let mut seen = seen;
        if memory.settled(&seen) {
            // Act, look at this pod alone, and act again, until nothing is left to do: a pod
            // goes from nothing to running without waiting for a relist of the whole node.
            let mut looked = false;
            for _ in 0..MAX_ROUNDS {
                let now = now_nanos();
                let due = |name: &str| match seen.latest(name) {
                    Some(c) if c.state == State::Exited => {
                        now >= c.finished_at.saturating_add(restart_delay(c).as_nanos() as i64)
                    }
                    _ => true,
                };
                let steps = sync::plan(&pod, &seen, due);
                if steps.is_empty() {
                    break;
                }
                for step in steps {
                    execute(&ctx, &pod, &seen, &mut memory, step).await;
                }
                match crate::cri::observe_pod(&ctx.cri, &pod.uid().unwrap_or_default()).await {
                    Ok(fresh) => {
                        seen = fresh;
                        looked = true;
                    }
                    Err(e) => {
                        tracing::debug!("{}: {e}", pod.name_any());
                        break;
                    }
                }
            }
            // The status comes from a look at this pod now, never from the node relist alone:
            // a relist taken between this worker's create and start of a container shows it
            // only created, and reporting that would take a running container back to
            // ContainerCreating.
            if !looked && let Ok(fresh) = crate::cri::observe_pod(&ctx.cri, &pod.uid().unwrap_or_default()).await {
                seen = fresh;
            }
            collect_garbage(&ctx.cri, &seen).await;
        } else {
            // A relist older than what this worker made and saw: nothing in it is news, and
            // reporting from it would take the status backwards.
            tokio::select! {
                _ = desired.changed() => {}
                _ = observed.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        // Containers in their restart delay: report it, and wake when it ends.
        let mut backing_off = BTreeMap::new();
        let now = now_nanos();
        for c in pod_containers(&pod) {
            if let Some(latest) = seen.latest(&c.name).filter(|l| l.state == State::Exited) {
                let delay = restart_delay(latest);
                let until = latest.finished_at.saturating_add(delay.as_nanos() as i64);
                if until > now && restarts(&pod, latest.exit_code) {
                    backing_off.insert(c.name.clone(), delay);
                    wake = wake.min(Duration::from_nanos((until - now) as u64));
                }
            }
        }
        if refresh_volumes(&ctx, &pod, &seen, &mut memory).await {
            wake = wake.min(VOLUME_REFRESH);
        }
        sync_probes(&ctx, &pod, &seen, &mut memory);
        write_status(&ctx, &pod, &seen, &mut memory, &backing_off).await;
        let probed = memory.wake.clone();
        tokio::select! {
            _ = desired.changed() => {}
            _ = observed.changed() => {}
            () = probed.notified() => {}
            () = tokio::time::sleep(wake) => {}
        }
    }
}

/// Updated ConfigMaps and Secrets reach running pods' volumes within a minute, as upstream's.
const VOLUME_REFRESH: Duration = Duration::from_secs(15);

/// True while the pod has volumes to keep fresh.
async fn refresh_volumes(ctx: &Context, pod: &Pod, seen: &Observed, memory: &mut Memory) -> bool {
    let projected = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .any(|v| v.config_map.is_some() || v.secret.is_some() || v.projected.is_some() || v.downward_api.is_some());
    let running = seen.containers.iter().any(|c| c.state == State::Running);
    if !projected || !running {
        return false;
    }
    if memory.volumes_synced.is_some_and(|t| t.elapsed() < VOLUME_REFRESH) {
        return true;
    }
    memory.volumes_synced = Some(Instant::now());
    if let Err(e) = crate::volumes::prepare(&ctx.client, &ctx.volumes, pod, &ctx.node_name, &ctx.node_ip).await {
        tracing::debug!("{}/{}: {e}", pod.namespace().unwrap_or_default(), pod.name_any());
    }
    true
}

/// One probe task per running container of the current sandbox that has probes.
fn sync_probes(ctx: &Context, pod: &Pod, seen: &Observed, memory: &mut Memory) {
    let sandbox = seen.sandbox().filter(|s| s.ready);
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    let ip = if host_network { Some(ctx.node_ip.clone()) } else { sandbox.and_then(|s| s.ip.clone()) };
    let running: HashMap<&str, &sync::Container> = seen
        .containers
        .iter()
        .filter(|c| c.state == State::Running && sandbox.is_some_and(|s| s.id == c.sandbox_id))
        .map(|c| (c.id.as_str(), c))
        .collect();
    memory.probes.retain(|id, _| running.contains_key(id.as_str()));
    let spec = pod.spec.clone().unwrap_or_default();
    for c in spec.containers.iter().filter(|c| crate::probe::has_probes(c)) {
        let Some(container) = running.values().find(|r| r.name == c.name) else { continue };
        if memory.probes.contains_key(&container.id) {
            continue;
        }
        let (tx, rx) = watch::channel(crate::probe::initial(c));
        let target = crate::probe::Target {
            cri: ctx.cri.clone(),
            recorder: ctx.recorder.clone(),
            pod: pod.clone(),
            container: c.clone(),
            container_id: container.id.clone(),
            ip: ip.clone().unwrap_or_default(),
            started_at: container.started_at,
        };
        let task = ProbeTask(tokio::spawn(crate::probe::run(target, tx, memory.wake.clone())));
        memory.probes.insert(container.id.clone(), (task, c.name.clone(), rx));
    }
}

fn restarts(pod: &Pod, exit_code: i32) -> bool {
    match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
        Some("Never") => false,
        Some("OnFailure") => exit_code != 0,
        _ => true,
    }
}

/// How long a container that exited waits before its next run: nothing for the first crash,
/// then doubling; a run of 10 minutes resets it.
fn restart_delay(c: &sync::Container) -> Duration {
    let ran = Duration::from_nanos(c.finished_at.saturating_sub(c.started_at).max(0) as u64);
    if ran >= sync::BACKOFF_RESET { Duration::ZERO } else { sync::backoff(c.attempt) }
}

fn now_nanos() -> i64 {
    Timestamp::now().as_nanosecond() as i64
}

fn pod_containers(pod: &Pod) -> Vec<SpecContainer> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.init_containers.unwrap_or_default().into_iter().chain(spec.containers).collect()
}

/// Milliseconds since the pod was created, for start-up tracing.
fn age_ms(pod: &Pod) -> i64 {
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond()).unwrap_or(0);
    Timestamp::now().as_millisecond() - created
}

async fn execute(ctx: &Context, pod: &Pod, seen: &Observed, memory: &mut Memory, step: Step) {
    tracing::debug!(target: "rkube_agent::timing", "{} +{}ms {step:?} begins", pod.name_any(), age_ms(pod));
    execute_step(ctx, pod, seen, memory, step).await;
    tracing::debug!(target: "rkube_agent::timing", "{} +{}ms step done", pod.name_any(), age_ms(pod));
}

async fn execute_step(ctx: &Context, pod: &Pod, seen: &Observed, memory: &mut Memory, step: Step) {
    let mut rt = ctx.cri.runtime.clone();
    match step {
        Step::StopContainer { id } => {
            let timeout = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
            if let Err(e) = rt.stop_container(StopContainerRequest { container_id: id.clone(), timeout }).await {
                tracing::debug!("stop container {id}: {}", e.message());
            }
        }
        Step::StopSandbox { id } => {
            if let Err(e) = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await {
                tracing::debug!("stop sandbox {id}: {}", e.message());
            }
        }
        Step::CreateSandbox { attempt } => {
            let mut config = spec::sandbox_config(pod, attempt, &ctx.pod_logs);
            let (dns, missing) = spec::dns_config(pod, &ctx.cluster_dns, &spec::host_resolv_conf());
            config.dns_config = Some(dns);
            if missing {
                let message = "kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" \
                               policy. Falling back to \"Default\" policy.";
                ctx.recorder.record(pod, Type::Warning, "MissingClusterDNS", "Syncing", message.into());
            }
            let dir = std::path::Path::new(&config.log_directory);
            let _ = std::fs::create_dir_all(dir);
            let request = RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() };
            match rt.run_pod_sandbox(request).await {
                Ok(_) => memory.expect.push((None, attempt, Instant::now())),
                Err(e) => {
                    let message = format!("Failed to create pod sandbox: {}", e.message());
                    tracing::warn!("{}/{}: {message}", pod.namespace().unwrap_or_default(), pod.name_any());
                    ctx.recorder.record(pod, Type::Warning, "FailedCreatePodSandBox", "Syncing", message);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
        Step::Start { name, init: _ } => {
            let Some(container) = pod_containers(pod).into_iter().find(|c| c.name == name) else { return };
            let attempt = seen.next_attempt(&name);
            match start(ctx, pod, seen, memory, &container, attempt).await {
                Ok(()) => {
                    memory.waiting.remove(&name);
                    memory.expect.push((Some(name), attempt, Instant::now()));
                }
                Err((reason, message)) => {
                    memory.waiting.insert(name, (reason, message));
                }
            }
        }
    }
}

/// Pulls the image if the policy says so, then creates and starts the container. An error
/// is the waiting reason and message the status shows.
async fn start(
    ctx: &Context,
    pod: &Pod,
    seen: &Observed,
    memory: &mut Memory,
    c: &SpecContainer,
    attempt: u32,
) -> Result<(), (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    ensure_image(ctx, pod, memory, c, &image).await?;
    let env = environment(ctx, pod, c).await.map_err(|m| {
        ctx.recorder.record(pod, Type::Warning, "Failed", "Syncing", format!("Error: {m}"));
        ("CreateContainerConfigError".to_owned(), m)
    })?;
    let sandbox = seen.sandbox().filter(|s| s.ready).ok_or(("ContainerCreating".to_owned(), String::new()))?;
    let volumes =
        crate::volumes::prepare(&ctx.client, &ctx.volumes, pod, &ctx.node_name, &ctx.node_ip).await.map_err(|m| {
            ctx.recorder.record(pod, Type::Warning, "FailedMount", "Mounting", m.clone());
            ("ContainerCreating".to_owned(), m)
        })?;
    let mounts = spec::mounts(c, &volumes).map_err(|m| ("CreateContainerConfigError".to_owned(), m))?;
    let mut rt = ctx.cri.runtime.clone();
    let config = spec::container_config(pod, c, attempt, env, mounts);
    let request = CreateContainerRequest {
        pod_sandbox_id: sandbox.id.clone(),
        config: Some(config),
        sandbox_config: Some(spec::sandbox_config(pod, sandbox.attempt, &ctx.pod_logs)),
    };
    let failed = |reason: &str, e: tonic::Status| {
        let message = e.message().to_owned();
        ctx.recorder.record(pod, Type::Warning, "Failed", "Syncing", format!("Error: {message}"));
        (reason.to_owned(), message)
    };
    let id =
        rt.create_container(request).await.map_err(|e| failed("CreateContainerError", e))?.into_inner().container_id;
    ctx.recorder.record(pod, Type::Normal, "Created", "Syncing", format!("Created container {}", c.name));
    rt.start_container(StartContainerRequest { container_id: id.clone() })
        .await
        .map_err(|e| failed("RunContainerError", e))?;
    ctx.recorder.record(pod, Type::Normal, "Started", "Syncing", format!("Started container {}", c.name));
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        let grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        let ip = sandbox.ip.clone().unwrap_or_default();
        let timeout = Duration::from_secs(grace.max(1) as u64);
        if let Err(e) = crate::hooks::run(&ctx.cri, c, &id, &ip, hook, timeout).await {
            // As upstream: the event does not carry the hook's output, which may hold secrets.
            tracing::info!(
                "{}/{}: postStart hook of {}: {e}",
                pod.namespace().unwrap_or_default(),
                pod.name_any(),
                c.name
            );
            ctx.recorder.record(pod, Type::Warning, "FailedPostStartHook", "Syncing", "PostStartHook failed".into());
            let _ = rt.stop_container(StopContainerRequest { container_id: id, timeout: grace }).await;
        }
    }
    Ok(())
}

async fn ensure_image(
    ctx: &Context,
    pod: &Pod,
    memory: &mut Memory,
    c: &SpecContainer,
    image: &str,
) -> Result<(), (String, String)> {
    let mut images = ctx.cri.images.clone();
    let spec = || ImageSpec { image: image.to_owned(), ..Default::default() };
    let present = images
        .image_status(ImageStatusRequest { image: Some(spec()), verbose: false })
        .await
        .map(|r| r.into_inner().image.is_some())
        .unwrap_or(false);
    let policy = c.image_pull_policy.as_deref().unwrap_or("IfNotPresent");
    if policy == "Never" {
        if present {
            return Ok(());
        }
        let message = format!("Container image \"{image}\" is not present with pull policy of Never");
        ctx.recorder.record(pod, Type::Warning, "ErrImageNeverPull", "Syncing", message.clone());
        return Err(("ErrImageNeverPull".into(), message));
    }
    if present && policy == "IfNotPresent" {
        ctx.recorder.record(
            pod,
            Type::Normal,
            "Pulled",
            "Syncing",
            format!("Container image \"{image}\" already present on machine"),
        );
        return Ok(());
    }
    if let Some((failures, at)) = memory.pull_failures.get(&c.name)
        && at.elapsed() < sync::backoff(*failures)
    {
        return Err(("ImagePullBackOff".into(), format!("Back-off pulling image \"{image}\"")));
    }
    ctx.recorder.record(pod, Type::Normal, "Pulling", "Syncing", format!("Pulling image \"{image}\""));
    let began = Instant::now();
    let request = PullImageRequest { image: Some(spec()), auth: None, sandbox_config: None };
    match images.pull_image(request).await {
        Ok(_) => {
            memory.pull_failures.remove(&c.name);
            let message = format!("Successfully pulled image \"{image}\" in {:.3}s", began.elapsed().as_secs_f64());
            ctx.recorder.record(pod, Type::Normal, "Pulled", "Syncing", message);
            Ok(())
        }
        Err(e) => {
            let entry = memory.pull_failures.entry(c.name.clone()).or_insert((0, Instant::now()));
            *entry = (entry.0 + 1, Instant::now());
            let message = format!("Failed to pull image \"{image}\": {}", e.message());
            ctx.recorder.record(pod, Type::Warning, "Failed", "Syncing", message.clone());
            Err(("ErrImagePull".into(), message))
        }
    }
}

/// The container's environment: `env` (with valueFrom) over `envFrom`, as upstream orders
/// them. A missing ConfigMap, Secret or key that is not optional is an error naming it.
async fn environment(ctx: &Context, pod: &Pod, c: &SpecContainer) -> Result<Vec<(String, String)>, String> {
    let namespace = pod.namespace().unwrap_or_default();
    let configmaps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    // Service variables first, so the container's own override them and `$(VAR)` sees them:
    // the `kubernetes` service everywhere, the namespace's services unless links are off.
    let mut services: Vec<Service> = Vec::new();
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    if links {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), &namespace);
        services = api.list(&Default::default()).await.map_err(|e| e.to_string())?.items;
    }
    if namespace != "default" || !links {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), "default");
        let named = services.iter().any(|s| s.metadata.name.as_deref() == Some("kubernetes"));
        if let Some(k) = api.get_opt("kubernetes").await.map_err(|e| e.to_string())?.filter(|_| !named) {
            services.push(k);
        }
    }
    let mut env: Vec<(String, String)> = spec::service_env(&services);
    let set = |env: &mut Vec<(String, String)>, key: String, value: String| {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    };
    let text = |b: &k8s_openapi::ByteString| String::from_utf8_lossy(&b.0).into_owned();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match configmaps.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(cm) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(&mut env, format!("{prefix}{k}"), text(&v));
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for var in c.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            let value = expand(var.value.as_deref().unwrap_or_default(), &env);
            set(&mut env, var.name.clone(), value);
            continue;
        };
        let value = if let Some(f) = &from.field_ref {
            spec::field_value(pod, &f.field_path, &ctx.node_name, &ctx.node_ip)
                .ok_or_else(|| format!("unsupported fieldPath: {}", f.field_path))?
        } else if let Some(r) = &from.config_map_key_ref {
            let optional = r.optional == Some(true);
            match configmaps.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(cm) => match cm.data.and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => v,
                    None if optional => continue,
                    None => return Err(format!("couldn't find key {} in ConfigMap {namespace}/{}", r.key, r.name)),
                },
                None if optional => continue,
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        } else if let Some(r) = &from.secret_key_ref {
            let optional = r.optional == Some(true);
            match secrets.get_opt(&r.name).await.map_err(|e| e.to_string())? {
                Some(s) => match s.data.and_then(|d| d.get(&r.key).map(text)) {
                    Some(v) => v,
                    None if optional => continue,
                    None => return Err(format!("couldn't find key {} in Secret {namespace}/{}", r.key, r.name)),
                },
                None if optional => continue,
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        } else if let Some(r) = &from.resource_field_ref {
            resource_value(c, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))
                .ok_or_else(|| format!("unsupported resource: {}", r.resource))?
        } else {
            continue;
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// `$(VAR)` references to earlier variables, as upstream expands them; `$$` escapes.
fn expand(value: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(name) = tail.strip_prefix("$(").and_then(|t| t.split_once(')')) {
            match env.iter().rev().find(|(k, _)| k == name.0) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..name.0.len() + 3]),
            }
            rest = name.1;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// `limits.cpu`, `requests.memory` and so on, divided by the divisor (default 1), rounded up.
fn resource_value(c: &SpecContainer, resource: &str, divisor: Option<&str>) -> Option<String> {
    let (kind, name) = resource.split_once('.')?;
    let res = c.resources.clone().unwrap_or_default();
    let map = if kind == "limits" { res.limits } else { res.requests };
    let quantity = map.and_then(|m| m.get(name).cloned()).map(|q| q.0).unwrap_or_else(|| "0".into());
    let milli = rkube_core::quantity::milli(&quantity)?;
    let divisor = rkube_core::quantity::milli(divisor.unwrap_or("1")).filter(|d| *d > 0)?;
    Some(((milli + divisor - 1) / divisor).to_string())
}

async fn write_status(
    ctx: &Context,
    pod: &Pod,
    seen: &Observed,
    memory: &mut Memory,
    backing_off: &BTreeMap<String, Duration>,
) {
    let probes: BTreeMap<String, crate::probe::Found> =
        memory.probes.values().map(|(_, name, found)| (name.clone(), *found.borrow())).collect();
    let facts = sync::Facts {
        node_ip: &ctx.node_ip,
        waiting: &memory.waiting,
        backing_off,
        probes: &probes,
        now: Timestamp::now(),
    };
    let status = sync::pod_status(pod, seen, &facts);
    if pod.status.as_ref() == Some(&status) {
        memory.last_status = None;
        return;
    }
    let body = json!({"status": status});
    let version = pod.metadata.resource_version.clone();
    if memory.last_status.as_ref().is_some_and(|(v, b)| *v == version && *b == body) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    match api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&body)).await {
        Ok(_) => {
            tracing::debug!(target: "rkube_agent::timing", "{} +{}ms status {:?}", pod.name_any(), age_ms(pod), status.phase);
            memory.last_status = Some((version, body))
        }
        Err(e) => tracing::debug!("status of {}/{}: {e}", pod.namespace().unwrap_or_default(), pod.name_any()),
    }
}

/// Stops every container within the pod's grace period, removes its sandboxes, and confirms
/// the deletion; true once the pod is gone.
async fn terminate(ctx: &Context, pod: &Pod, seen: &Observed) -> bool {
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0);
    let running: Vec<&sync::Container> =
        seen.containers.iter().filter(|c| matches!(c.state, State::Running | State::Created)).collect();
    for c in &running {
        ctx.recorder.record(pod, Type::Normal, "Killing", "Killing", format!("Stopping container {}", c.name));
    }
    // preStop hooks run first, all at once; stopping gets what is left of the grace period.
    let specs = pod_containers(pod);
    let ip = seen.sandbox().and_then(|s| s.ip.clone()).unwrap_or_default();
    let hooks = running.iter().filter_map(|c| {
        let spec =
            specs.iter().find(|s| s.name == c.name && s.lifecycle.as_ref().is_some_and(|l| l.pre_stop.is_some()))?;
        Some(crate::hooks::pre_stop(&ctx.cri, spec, &c.id, &ip, grace))
    });
    let mut left = grace;
    for (remaining, failed) in futures::future::join_all(hooks).await {
        left = left.min(remaining);
        if let Some(e) = failed {
            tracing::info!("{}/{}: preStop hook: {e}", pod.namespace().unwrap_or_default(), pod.name_any());
            ctx.recorder.record(pod, Type::Warning, "FailedPreStopHook", "Killing", "PreStopHook failed".into());
        }
    }
    if !remove_all(&ctx.cri, seen, left).await {
        return false;
    }
    crate::volumes::remove(&ctx.volumes, &pod.uid().unwrap_or_default());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => true,
        Err(e) => {
            tracing::debug!("confirming deletion of {}: {e}", pod.name_any());
            false
        }
    }
}

/// Stops a pod's containers (SIGTERM, then SIGKILL after `grace` seconds) and removes its
/// sandboxes; true when all of it went.
async fn remove_all(cri: &Cri, seen: &Observed, grace: i64) -> bool {
    let stops = seen.containers.iter().filter(|c| matches!(c.state, State::Running | State::Created)).map(|c| {
        let mut rt = cri.runtime.clone();
        let id = c.id.clone();
        async move { rt.stop_container(StopContainerRequest { container_id: id, timeout: grace }).await }
    });
    futures::future::join_all(stops).await;
    let mut ok = true;
    for s in &seen.sandboxes {
        let mut rt = cri.runtime.clone();
        let id = s.id.clone();
        let stopped = rt
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
            .map_err(rpc("stop sandbox"));
        let removed =
            rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id }).await.map_err(rpc("remove sandbox"));
        if let Err(e) = stopped.and(removed) {
            tracing::debug!("{e}");
            ok = false;
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_earlier_variables_like_upstream() {
        let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())];
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$(MISSING)", &env), "$(MISSING)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn resource_field_refs_divide_and_round_up() {
        let c: SpecContainer = serde_json::from_value(json!({
            "name": "c", "resources": {"limits": {"cpu": "1500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}},
        }))
        .unwrap();
        assert_eq!(resource_value(&c, "limits.cpu", None).as_deref(), Some("2"));
        assert_eq!(resource_value(&c, "limits.cpu", Some("1m")).as_deref(), Some("1500"));
        assert_eq!(resource_value(&c, "limits.memory", Some("1Mi")).as_deref(), Some("64"));
        assert_eq!(resource_value(&c, "requests.cpu", Some("1m")).as_deref(), Some("250"));
        assert_eq!(resource_value(&c, "bogus", None), None);
    }
}
