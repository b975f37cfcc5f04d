//! `rkube bench pods`: pod start-up on one real node. It creates pods (busybox, `sleep`) and
//! measures create-to-Running as a client sees it through a watch, p50 and p99. Side by side
//! in the same run, on the same containerd, it starts the same container straight through
//! CRI (sandbox, create, start) as the physical floor. Both keep the same number in flight.
//!
//! It also measures, in idle windows of equal length, a server with its node agent and one
//! without (`--no-agent`): the difference in RSS is the in-process agent's share (before any
//! pod, and again after the pods are gone), and the difference in write requests is what one
//! idle node writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig, PodSandboxConfig,
    PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Notify;

use super::{ServerProcess, percentile_ms, proc_field};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Pods to start (and raw containers to start beside them).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Starts in flight at once, for both.
    #[arg(long, default_value_t = 5)]
    parallel: usize,
    /// Seconds of each idle window, for memory and writes.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
}

#[derive(Serialize, Default)]
struct Figures {
    pods: usize,
    parallel: usize,
    pods_running: usize,
    pod_start_p50_ms: f64,
    pod_start_p99_ms: f64,
    raw_start_p50_ms: f64,
    raw_start_p99_ms: f64,
    /// pod_start_p99_ms / raw_start_p99_ms.
    ratio_p99: f64,
    /// RSS of the server with its agent (idle, before any pod) minus the server without one.
    agent_idle_rss_mb: f64,
    server_idle_rss_mb: f64,
    /// The same difference once the pods have come and gone.
    agent_rss_after_load_mb: f64,
    /// Write requests (POST, PUT, PATCH, DELETE) per 10 s that the idle node adds.
    node_idle_writes_per_10s: f64,
    idle_secs: u64,
}

const IMAGE: &str = "docker.io/library/busybox:1.35";

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.pods > 0 && args.parallel > 0, "--pods and --parallel must be at least 1");
    let mut f = Figures { pods: args.pods, parallel: args.parallel, idle_secs: args.idle_secs, ..Default::default() };

    // The control plane alone, idle: the baseline for memory and writes.
    let base_dir = tempfile::tempdir()?;
    let (base_rss, base_writes) = {
        let server = ServerProcess::start(base_dir.path())?;
        let client = server.client().await?;
        idle(&server, &client, args.idle_secs).await?
    };

    let dir = tempfile::tempdir()?;
    let images = dir.path().join("agent/images");
    std::fs::create_dir_all(&images)?;
    let spec = rkube_agent::image::Spec { reference: IMAGE, entrypoint: &[], cmd: &["sh"], env: &[] };
    rkube_agent::image::write_busybox_archive(&spec, &images.join("busybox.tar"))?;
    let server = ServerProcess::start_node(dir.path())?;
    let client = server.client().await?;
    wait_ready(&client).await?;
    let (rss, writes) = idle(&server, &client, args.idle_secs).await?;
    f.server_idle_rss_mb = rss;
    f.agent_idle_rss_mb = (rss - base_rss).max(0.0);
    f.node_idle_writes_per_10s = (writes - base_writes).max(0.0) * 10.0 / args.idle_secs.max(1) as f64;

    // The floor: the same container through CRI, on the agent's containerd.
    let cri = rkube_agent::cri::connect(&rkube_agent::containerd::Paths::new(dir.path()).socket());
    let logs = dir.path().join("raw-logs");
    std::fs::create_dir_all(&logs)?;
    let mut raw: Vec<Duration> = futures::stream::iter(0..args.pods)
        .map(|i| start_raw(cri.clone(), i, logs.clone()))
        .buffer_unordered(args.parallel)
        .try_collect()
        .await?;
    raw.sort();
    remove_raw(&cri).await;
    f.raw_start_p50_ms = percentile_ms(&raw, 50.0);
    f.raw_start_p99_ms = percentile_ms(&raw, 99.0);

    // Pods through the API, each seen Running through a watch.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let changed = Arc::new(Notify::new());
    let version = pods.list(&ListParams::default()).await?.metadata.resource_version.unwrap_or_default();
    let watch = {
        let (pods, running, changed) = (pods.clone(), running.clone(), changed.clone());
        tokio::spawn(async move {
            let mut events = pods.watch(&WatchParams::default().timeout(290), &version).await?.boxed();
            while let Some(event) = events.try_next().await? {
                if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                {
                    let name = p.metadata.name.unwrap_or_default();
                    running.lock().unwrap_or_else(|e| e.into_inner()).entry(name).or_insert_with(Instant::now);
                    changed.notify_waiters();
                }
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    let mut starts: Vec<Duration> = futures::stream::iter(0..args.pods)
        .map(|i| {
            let (pods, running, changed) = (pods.clone(), running.clone(), changed.clone());
            async move {
                let name = format!("bench-{i}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"terminationGracePeriodSeconds": 0,
                        "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}]},
                }))?;
                let t = Instant::now();
                pods.create(&PostParams::default(), &pod).await?;
                let deadline = t + Duration::from_secs(120);
                loop {
                    let notified = changed.notified();
                    if let Some(at) = running.lock().unwrap_or_else(|e| e.into_inner()).get(&name) {
                        return Ok::<_, anyhow::Error>(at.saturating_duration_since(t));
                    }
                    anyhow::ensure!(Instant::now() < deadline, "pod {name} not Running after 120 s");
                    let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                }
            }
        })
        .buffer_unordered(args.parallel)
        .try_collect()
        .await?;
    watch.abort();
    starts.sort();
    f.pods_running = starts.len();
    f.pod_start_p50_ms = percentile_ms(&starts, 50.0);
    f.pod_start_p99_ms = percentile_ms(&starts, 99.0);
    f.ratio_p99 = if f.raw_start_p99_ms > 0.0 { f.pod_start_p99_ms / f.raw_start_p99_ms } else { 0.0 };

    // Back to an idle node, then the same idle window as the baseline.
    pods.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "pods not gone after 120 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (rss, _) = idle(&server, &client, args.idle_secs).await?;
    f.agent_rss_after_load_mb = (rss - base_rss).max(0.0);
    drop(server);

    if args.json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        println!("pod start-up on one node: {} pods, {} in flight", f.pods, f.parallel);
        println!("{:<28} {:>10} {:>10}", "", "p50 ms", "p99 ms");
        println!("{:<28} {:>10.1} {:>10.1}", "rkube (create to Running)", f.pod_start_p50_ms, f.pod_start_p99_ms);
        println!("{:<28} {:>10.1} {:>10.1}", "raw CRI (sandbox+start)", f.raw_start_p50_ms, f.raw_start_p99_ms);
        println!(
            "p99 ratio {:.2}; agent idle RSS {:.1} MB (server {:.1} MB); idle node writes {:.1} per 10 s",
            f.ratio_p99, f.agent_idle_rss_mb, f.server_idle_rss_mb, f.node_idle_writes_per_10s
        );
    }
    Ok(())
}

async fn wait_ready(client: &kube::Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = nodes.list(&ListParams::default()).await?.items.iter().any(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the node is not Ready after 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits out an idle window; returns the server's RSS in MB at its end and the write
/// requests made during it.
async fn idle(server: &ServerProcess, client: &kube::Client, secs: u64) -> anyhow::Result<(f64, f64)> {
    // Start-up work (leases created, the node registered) settles first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = writes(client).await?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = writes(client).await?;
    let rss = proc_field(server.child.id(), "status", "VmRSS").unwrap_or(0) as f64 / 1024.0;
    Ok((rss, after - before))
}

/// Write requests the server has answered, from its `/metrics`.
async fn writes(client: &kube::Client) -> anyhow::Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| ["POST", "PUT", "PATCH", "DELETE"].iter().any(|v| l.contains(&format!("verb=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn sandbox_config(i: usize, logs: &std::path::Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("raw-{i}"),
            uid: format!("raw-{i}"),
            namespace: "rkube-bench".into(),
            attempt: 0,
        }),
        hostname: format!("raw-{i}"),
        log_directory: logs.join(format!("raw-{i}")).to_string_lossy().into_owned(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

/// One container started straight through CRI; the time from the sandbox request to the
/// started container.
async fn start_raw(cri: rkube_agent::cri::Cri, i: usize, logs: std::path::PathBuf) -> anyhow::Result<Duration> {
    let mut rt = cri.runtime.clone();
    let config = sandbox_config(i, &logs);
    let t = Instant::now();
    let sandbox = rt
        .run_pod_sandbox(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata { name: "c".into(), attempt: 0 }),
        image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
        command: vec!["sleep".into(), "3600".into()],
        log_path: "c/0.log".into(),
        ..Default::default()
    };
    let id = rt
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox,
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await?
        .into_inner()
        .container_id;
    rt.start_container(StartContainerRequest { container_id: id }).await?;
    Ok(t.elapsed())
}

async fn remove_raw(cri: &rkube_agent::cri::Cri) {
    let mut rt = cri.runtime.clone();
    let Ok(list) = rt.list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest::default()).await else { return };
    for s in list
        .into_inner()
        .items
        .into_iter()
        .filter(|s| s.metadata.as_ref().is_some_and(|m| m.namespace == "rkube-bench"))
    {
        let _ = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: s.id.clone() }).await;
        let _ = rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: s.id }).await;
    }
}
