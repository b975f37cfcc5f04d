//! `rkube bench api`: a real `rkube server` process, measured through the Rust `kube` client.
//! There is no upstream API server on this machine to run beside it, so the figures are judged
//! against the targets of issue 3. The objects are pods, as upstream's own density tests use.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use serde::Serialize;

use super::{ServerProcess, percentile_ms, proc_field};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds the create phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Watchers open during the fan-out phase.
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
}

#[derive(Serialize, Default)]
struct Figures {
    /// Pod creates per second with 64 concurrent clients.
    creates_per_s: f64,
    create_p50_ms: f64,
    create_p99_ms: f64,
    /// One unpaginated list of 10,000 pods, to the last byte of the response, median of 5.
    list_10k_ms: f64,
    /// The same list decoded into typed `Pod`s by the kube client, as a controller sees it.
    list_10k_typed_ms: f64,
    /// The same list read from the store rather than the watch cache
    /// (`resourceVersionMatch=Exact`), side by side.
    list_10k_store_ms: f64,
    /// One pod picked out of the 10,000 by a field selector, from the cache and from the store.
    list_selective_ms: f64,
    list_selective_store_ms: f64,
    /// With every watcher open, the delay from a write to its event at each watcher.
    watch_fanout_p50_ms: f64,
    watch_fanout_p99_ms: f64,
    /// From process start to serving (its "listening" line), on a fresh data directory.
    cold_start_ms: f64,
    /// Resident memory of the idle API server (`--no-controllers`), just started.
    idle_rss_mb: f64,
    /// The same for the whole control plane: the API server with its scheduler and
    /// controllers, as `rkube server --no-agent` runs.
    idle_rss_control_plane_mb: f64,
    /// Resident memory after this benchmark's load (of the API server without its loops).
    loaded_rss_mb: f64,
}

const CLIENTS: usize = 64;
const LIST_OBJECTS: usize = 10_000;
/// Watch streams per client connection, under the server's HTTP/2 stream limit.
const WATCHERS_PER_CONNECTION: usize = 100;
const FANOUT_WRITES: usize = 20;

pub async fn run(args: Args) -> anyhow::Result<()> {
    // Start-up and idle memory of the whole control plane (API server, scheduler and
    // controllers), as `rkube server` runs.
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let mut server = ServerProcess::start(dir.path())?;
    let mut f = Figures { cold_start_ms: started.elapsed().as_secs_f64() * 1000.0, ..Default::default() };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.idle_rss_control_plane_mb = proc_field(server.child.id(), "status", "VmRSS").unwrap_or(0) as f64 / 1024.0;
    server.stop();

    // The API server alone, idle and then under load: with the scheduler running and no
    // nodes, every pod created would also get a FailedScheduling status write and an event,
    // three writes for one.
    let dir = tempfile::tempdir()?;
    let mut server = ServerProcess::start_with(dir.path(), &["--no-controllers"])?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.idle_rss_mb = proc_field(server.child.id(), "status", "VmRSS").unwrap_or(0) as f64 / 1024.0;
    let client = server.client().await?;
    (f.creates_per_s, f.create_p50_ms, f.create_p99_ms) = creates(&client, Duration::from_secs(args.seconds)).await?;
    [f.list_10k_ms, f.list_10k_typed_ms, f.list_10k_store_ms, f.list_selective_ms, f.list_selective_store_ms] =
        list_10k(&client).await?;
    (f.watch_fanout_p50_ms, f.watch_fanout_p99_ms) = fanout(&server, args.watchers).await?;
    f.loaded_rss_mb = proc_field(server.child.id(), "status", "VmRSS").unwrap_or(0) as f64 / 1024.0;
    server.stop();

    if args.json {
        println!("{}", serde_json::to_string(&f)?);
    } else {
        let rows = [
            ("pod creates/s, 64 clients", f.creates_per_s, ">= 5000"),
            ("  create p50 ms", f.create_p50_ms, ""),
            ("  create p99 ms", f.create_p99_ms, "< 50"),
            ("list 10k pods ms", f.list_10k_ms, "< 200"),
            ("  and typed by the client ms", f.list_10k_typed_ms, ""),
            ("  from the store, not the cache ms", f.list_10k_store_ms, ""),
            ("1 of 10k by field selector ms", f.list_selective_ms, ""),
            ("  from the store, not the cache ms", f.list_selective_store_ms, ""),
            ("watch fan-out p50 ms", f.watch_fanout_p50_ms, ""),
            ("watch fan-out p99 ms", f.watch_fanout_p99_ms, "< 100"),
            ("cold start ms", f.cold_start_ms, "< 200"),
            ("idle RSS MiB, API server", f.idle_rss_mb, "< 40"),
            ("  with scheduler and controllers MiB", f.idle_rss_control_plane_mb, ""),
            ("RSS after the load MiB", f.loaded_rss_mb, ""),
        ];
        println!("{:<34} {:>12} {:>10}", "", "rkube", "target");
        for (name, value, target) in rows {
            println!("{name:<34} {value:>12.2} {target:>10}");
        }
    }
    Ok(())
}
/// A pod as a Deployment would make one: labels, an owner, one container with a port,
/// resources and a probe. Defaulting adds the rest, as upstream's would.
fn pod(name: String) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench", "pod-template-hash": "5d8f7c9b4"}},
        "spec": {"containers": [{
            "name": "app", "image": "registry.local/app:1.0",
            "ports": [{"containerPort": 8080}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
        }]},
    }))
    .expect("a valid pod")
}

async fn namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await?;
    Ok(())
}

async fn creates(client: &kube::Client, phase: Duration) -> anyhow::Result<(f64, f64, f64)> {
    namespace(client, "bench-creates").await?;
    let deadline = Instant::now() + phase;
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api: Api<Pod> = Api::namespaced(client.clone(), "bench-creates");
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    api.create(&PostParams::default(), &pod(format!("c{c}-{}", latencies.len()))).await?;
                    latencies.push(t.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort();
    Ok((rate, percentile_ms(&all, 50.0), percentile_ms(&all, 99.0)))
}

/// Returns median list times: to the last byte from the watch cache, typed by the client,
/// from the store, and one pod by field selector from the cache and from the store.
async fn list_10k(client: &kube::Client) -> anyhow::Result<[f64; 5]> {
    namespace(client, "bench-list").await?;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api: Api<Pod> = Api::namespaced(client.clone(), "bench-list");
            tokio::spawn(async move {
                for i in (c..LIST_OBJECTS).step_by(CLIENTS) {
                    api.create(&PostParams::default(), &pod(format!("l{i:05}"))).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench-list");
    let revision = api.list(&ListParams::default().limit(1)).await?.metadata.resource_version.unwrap_or_default();
    let exact = format!("resourceVersion={revision}&resourceVersionMatch=Exact");
    let path = "/api/v1/namespaces/bench-list/pods";
    let selective = "fieldSelector=metadata.name%3Dl00042";
    let timed_raw = |query: String, at_least: usize| async move {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let request = http::Request::get(format!("{path}?{query}")).body(Vec::new())?;
            let text = client.request_text(request).await?;
            anyhow::ensure!(text.len() >= at_least, "a short list: {} bytes", text.len());
            times.push(t.elapsed());
        }
        times.sort();
        anyhow::Ok(percentile_ms(&times, 50.0))
    };
    let from_cache = timed_raw(String::new(), LIST_OBJECTS * 100).await?;
    let from_store = timed_raw(exact.clone(), LIST_OBJECTS * 100).await?;
    let selective_cache = timed_raw(selective.to_owned(), 500).await?;
    let selective_store = timed_raw(format!("{selective}&{exact}"), 500).await?;
    let mut typed = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        anyhow::ensure!(list.items.len() == LIST_OBJECTS, "listed {} objects", list.items.len());
        typed.push(t.elapsed());
    }
    typed.sort();
    Ok([from_cache, percentile_ms(&typed, 50.0), from_store, selective_cache, selective_store])
}

/// Opens `watchers` watches, then writes one object at a time; every watcher notes when each
/// event arrives. Returns the p50 and p99 delay over all (watcher, event) pairs.
async fn fanout(server: &ServerProcess, watchers: usize) -> anyhow::Result<(f64, f64)> {
    let client = server.client().await?;
    namespace(&client, "bench-watch").await?;
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench-watch");
    let version = api.list(&ListParams::default()).await?.metadata.resource_version.unwrap_or_default();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers.max(1));
    let mut handles = Vec::new();
    let mut connection = client.clone();
    for w in 0..watchers {
        if w % WATCHERS_PER_CONNECTION == 0 {
            connection = server.client().await?;
        }
        let api: Api<Pod> = Api::namespaced(connection.clone(), "bench-watch");
        let (version, ready) = (version.clone(), ready_tx.clone());
        handles.push(tokio::spawn(async move {
            let mut stream = api.watch(&WatchParams::default().timeout(120), &version).await?.boxed();
            ready.send(()).await.ok();
            let mut arrivals = Vec::with_capacity(FANOUT_WRITES);
            while arrivals.len() < FANOUT_WRITES {
                match stream.next().await {
                    Some(Ok(WatchEvent::Added(_))) => arrivals.push(Instant::now()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("a watch ended early"),
                }
            }
            anyhow::Ok(arrivals)
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await;
    }
    let mut sent = Vec::with_capacity(FANOUT_WRITES);
    for i in 0..FANOUT_WRITES {
        sent.push(Instant::now());
        api.create(&PostParams::default(), &pod(format!("w{i}"))).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut delays = Vec::with_capacity(watchers * FANOUT_WRITES);
    for handle in handles {
        for (arrival, sent) in handle.await??.into_iter().zip(&sent) {
            delays.push(arrival.saturating_duration_since(*sent));
        }
    }
    delays.sort();
    Ok((percentile_ms(&delays, 50.0), percentile_ms(&delays, 99.0)))
}
