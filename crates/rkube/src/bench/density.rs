//! `rkube bench density`: Kubernetes' published limits in one server. 150,000 pods are created
//! on 5,000 simulated nodes, and the run waits until every one is Running. It reports the
//! total time, scheduling latency (create to bound) and pod startup latency (create to
//! Running), the p99 of the mutating API calls it made, and the server's peak memory.
//!
//! Latencies are measured by the client, from its create call returning to the watch event
//! showing the change, so they include the watch's delivery. No upstream control plane runs
//! on this machine; the figures are judged against upstream's SLOs (API p99 under 1 s, pod
//! startup p99 under 5 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde::Serialize;
use serde_json::json;

use super::{ServerProcess, percentile_ms, proc_field};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Simulated nodes.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods to run.
    #[arg(long, default_value_t = 150_000)]
    pods: usize,
    /// Concurrent create calls.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Pods created per second; 0 creates them as fast as the server takes them, which
    /// measures the backlog more than the latency of a cluster keeping up.
    #[arg(long, default_value_t = 0)]
    qps: u32,
}

#[derive(Serialize, Default)]
struct Figures {
    nodes: usize,
    pods: usize,
    /// The creation rate asked for (0: as fast as possible).
    qps: u32,
    /// Pods seen Running by the end.
    pods_running: usize,
    /// From the first create to the last pod Running.
    total_s: f64,
    /// Seconds until every simulated node was registered and Ready.
    nodes_ready_s: f64,
    sched_p50_ms: f64,
    sched_p99_ms: f64,
    startup_p50_ms: f64,
    startup_p99_ms: f64,
    /// The pod creates' latency as the client saw it.
    api_p50_ms: f64,
    api_p99_ms: f64,
    peak_rss_mb: f64,
}

fn lock(s: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes when a pod was first seen bound and first seen Running.
fn record(seen: &Mutex<Seen>, pod: &Pod, now: Instant) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut s = lock(seen);
    if pod.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
        s.bound.entry(name.clone()).or_insert(now);
    }
    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
        s.running.entry(name).or_insert(now);
    }
}

#[derive(Default)]
struct Seen {
    created: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nodes = args.nodes.to_string();
    let mut server = ServerProcess::start_with(dir.path(), &["--simulated-nodes", &nodes])?;
    let client = server.client().await?;
    let mut f = Figures { nodes: args.nodes, pods: args.pods, qps: args.qps, ..Default::default() };

    let started = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    loop {
        let list = node_api.list(&ListParams::default()).await?;
        if list.items.iter().filter(|n| ready(n)).count() >= args.nodes {
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(600), "nodes not ready after 10 minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    f.nodes_ready_s = started.elapsed().as_secs_f64();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "density"}}))?)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "density");
    let seen = Arc::new(Mutex::new(Seen::default()));

    // The watch first, so nothing is missed. A watcher that falls too far behind is dropped
    // by the server (410), as upstream's are; it then lists again and carries on, and what it
    // learns from that list counts as seen at that moment.
    let watcher = {
        let (pods, seen, total) = (pods.clone(), seen.clone(), args.pods);
        tokio::spawn(async move {
            loop {
                let mut version = String::new();
                let mut page = ListParams::default().limit(5000);
                loop {
                    let list = pods.list(&page).await?;
                    let now = Instant::now();
                    for pod in &list.items {
                        record(&seen, pod, now);
                    }
                    version = list.metadata.resource_version.clone().unwrap_or(version);
                    match list.metadata.continue_.filter(|c| !c.is_empty()) {
                        Some(token) => page = page.continue_token(&token),
                        None => break,
                    }
                }
                'watch: loop {
                    if lock(&seen).running.len() >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let mut events = pods.watch(&WatchParams::default().timeout(290), &version).await?.boxed();
                    while let Some(event) = events.try_next().await? {
                        let pod = match event {
                            WatchEvent::Added(p) | WatchEvent::Modified(p) => p,
                            WatchEvent::Bookmark(b) => {
                                version = b.metadata.resource_version;
                                continue;
                            }
                            WatchEvent::Deleted(_) => continue,
                            WatchEvent::Error(e) if e.code == 410 => break 'watch,
                            WatchEvent::Error(e) => anyhow::bail!("watch: {e}"),
                        };
                        version = pod.metadata.resource_version.clone().unwrap_or(version);
                        record(&seen, &pod, Instant::now());
                        if lock(&seen).running.len() >= total {
                            return Ok(());
                        }
                    }
                }
            }
        })
    };

    let first = Instant::now();
    let paced_start = tokio::time::Instant::now();
    let mut create_latencies: Vec<Duration> = futures::stream::iter(0..args.pods)
        .map(|i| {
            let (pods, seen) = (pods.clone(), seen.clone());
            let due = (args.qps > 0).then(|| paced_start + Duration::from_secs_f64(i as f64 / f64::from(args.qps)));
            async move {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                let name = format!("pod-{i}");
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"app": "density", "group": format!("g{}", i % 100)}},
                    "spec": {"containers": [{"name": "c", "image": "registry.local/pause:3.10",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                }))?;
                let t = Instant::now();
                pods.create(&PostParams::default(), &pod).await?;
                let took = t.elapsed();
                lock(&seen).created.insert(name, t);
                Ok::<_, anyhow::Error>(took)
            }
        })
        .buffer_unordered(args.clients)
        .try_collect()
        .await?;
    let wait = tokio::time::timeout(Duration::from_secs(1800), watcher).await;
    f.total_s = first.elapsed().as_secs_f64();
    match wait {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => eprintln!("not every pod was Running within 30 minutes"),
    }
    f.peak_rss_mb = proc_field(server.child.id(), "status", "VmHWM").unwrap_or(0) as f64 / 1024.0;
    server.stop();

    let s = lock(&seen);
    f.pods_running = s.running.len();
    let latencies = |to: &HashMap<String, Instant>| {
        let mut all: Vec<Duration> =
            to.iter().filter_map(|(name, at)| Some(at.saturating_duration_since(*s.created.get(name)?))).collect();
        all.sort();
        all
    };
    let (sched, startup) = (latencies(&s.bound), latencies(&s.running));
    (f.sched_p50_ms, f.sched_p99_ms) = (percentile_ms(&sched, 50.0), percentile_ms(&sched, 99.0));
    (f.startup_p50_ms, f.startup_p99_ms) = (percentile_ms(&startup, 50.0), percentile_ms(&startup, 99.0));
    create_latencies.sort();
    (f.api_p50_ms, f.api_p99_ms) = (percentile_ms(&create_latencies, 50.0), percentile_ms(&create_latencies, 99.0));
    drop(s);

    if args.json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        let rows = [
            ("pods Running", f.pods_running as f64, format!("{}", f.pods)),
            ("total s", f.total_s, String::new()),
            ("nodes registered and Ready s", f.nodes_ready_s, String::new()),
            ("scheduling latency p50 ms", f.sched_p50_ms, String::new()),
            ("scheduling latency p99 ms", f.sched_p99_ms, String::new()),
            ("pod startup p50 ms", f.startup_p50_ms, String::new()),
            ("pod startup p99 ms", f.startup_p99_ms, "< 5000".into()),
            ("create call p50 ms", f.api_p50_ms, String::new()),
            ("create call p99 ms", f.api_p99_ms, "< 1000".into()),
            ("peak RSS MiB", f.peak_rss_mb, "< 4096".into()),
        ];
        println!("{:<32} {:>12} {:>10}", format!("{} pods, {} nodes", f.pods, f.nodes), "rkube", "target");
        for (name, value, target) in rows {
            println!("{name:<32} {value:>12.1} {target:>10}");
        }
    }
    Ok(())
}
