//! `rkube bench store`: the same workload, through the same `Store` API the API server uses,
//! against the embedded store and a real etcd started here, in one run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rkube_store::etcd_process::EtcdProcess;
use rkube_store::{Backend, EmbeddedConfig, ListOptions, Store, WatchEvent, WatchOptions};
use serde::Serialize;

use super::{percentile_ms, proc_field};

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Seconds each timed phase runs.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Where the stores keep their data (a temporary directory inside it). Both backends use the
    /// same disk, so both pay the same fsync.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seconds of idleness over which disk writes are counted.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
}

/// Kubernetes objects are typically one to a few KiB.
const VALUE_BYTES: usize = 1024;
const LIST_KEYS: usize = 10_000;
const WATCH_EVENTS: usize = 500;

#[derive(Serialize, Default)]
struct Figures {
    writes_per_s_1: f64,
    write_p50_ms_1: f64,
    write_p99_ms_1: f64,
    writes_per_s_64: f64,
    write_p50_ms_64: f64,
    write_p99_ms_64: f64,
    gets_per_s: f64,
    list_10k_ms: f64,
    list_10k_paged_ms: f64,
    watch_p50_ms: f64,
    watch_p99_ms: f64,
    /// One writer's latency while the history of an update-heavy phase is compacted.
    compacting_write_p99_ms: f64,
    compacting_write_max_ms: f64,
    /// Embedded: opening the store file with the benchmark's data. etcd: process start until it
    /// answers, on the same data.
    open_ms: f64,
    /// Bytes written to disk by the store's process while nobody uses it (5 s by default).
    idle_write_bytes: u64,
    /// etcd: the server's resident memory. Embedded: how much the benchmark process grew.
    rss_mb: f64,
}

#[derive(Serialize)]
struct Report {
    embedded: Figures,
    etcd: Figures,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let base = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };
    let phase = Duration::from_secs(args.seconds);
    let idle = Duration::from_secs(args.idle_seconds);
    let log = |what: &str| {
        if !args.json {
            eprintln!("{what}");
        }
    };

    log("embedded: running");
    let embedded = bench_embedded(&base.path().join("embedded"), phase, idle).await?;
    log("etcd: starting a real etcd and running");
    let etcd = bench_etcd(&base.path().join("etcd"), phase, idle).await?;
    let report = Report { embedded, etcd };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

async fn bench_embedded(dir: &Path, phase: Duration, idle: Duration) -> anyhow::Result<Figures> {
    let pid = std::process::id();
    let rss_before = proc_field(pid, "status", "VmRSS").unwrap_or(0);
    let config = EmbeddedConfig::new(dir);
    let store = Store::open(Backend::Embedded(config.clone())).await?;
    let mut figures = workload(&store, phase).await?;
    figures.rss_mb = proc_field(pid, "status", "VmRSS").unwrap_or(0).saturating_sub(rss_before) as f64 / 1024.0;
    drop(store);

    let started = Instant::now();
    let store = Store::open(Backend::Embedded(config)).await?;
    figures.open_ms = ms(started.elapsed());
    figures.idle_write_bytes = idle_writes(pid, idle).await;
    drop(store);
    Ok(figures)
}

async fn bench_etcd(dir: &Path, phase: Duration, idle: Duration) -> anyhow::Result<Figures> {
    let etcd = EtcdProcess::start(dir).await?;
    let store = Store::open(Backend::Etcd { endpoints: vec![etcd.endpoint().to_owned()] }).await?;
    let mut figures = workload(&store, phase).await?;
    figures.rss_mb = proc_field(etcd.pid(), "status", "VmRSS").unwrap_or(0) as f64 / 1024.0;
    drop(store);
    drop(etcd);

    let started = Instant::now();
    let etcd = EtcdProcess::start(dir).await?;
    figures.open_ms = ms(started.elapsed());
    figures.idle_write_bytes = idle_writes(etcd.pid(), idle).await;
    Ok(figures)
}

async fn workload(store: &Store, phase: Duration) -> anyhow::Result<Figures> {
    let mut f = Figures::default();
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);

    let (rate, mut lat) = writes(store, "/bench/w1", 1, phase, &value).await?;
    lat.sort();
    (f.writes_per_s_1, f.write_p50_ms_1, f.write_p99_ms_1) =
        (rate, percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));

    let (rate, mut lat) = writes(store, "/bench/w64", 64, phase, &value).await?;
    lat.sort();
    (f.writes_per_s_64, f.write_p50_ms_64, f.write_p99_ms_64) =
        (rate, percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));

    populate(store, &value).await?;
    f.gets_per_s = gets(store, phase).await?;
    (f.list_10k_ms, f.list_10k_paged_ms) = lists(store).await?;
    let mut lat = watch_latency(store, &value).await?;
    lat.sort();
    (f.watch_p50_ms, f.watch_p99_ms) = (percentile_ms(&lat, 50.0), percentile_ms(&lat, 99.0));
    let mut lat = compaction_latency(store, phase, &value).await?;
    lat.sort();
    (f.compacting_write_p99_ms, f.compacting_write_max_ms) = (percentile_ms(&lat, 99.0), percentile_ms(&lat, 100.0));
    Ok(f)
}

/// `writers` tasks create keys back to back for `phase`; returns writes/s and every latency.
async fn writes(
    store: &Store,
    prefix: &str,
    writers: usize,
    phase: Duration,
    value: &Bytes,
) -> anyhow::Result<(f64, Vec<Duration>)> {
    let deadline = Instant::now() + phase;
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (store, value, prefix) = (store.clone(), value.clone(), prefix.to_owned());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    store.create(&format!("{prefix}/{w}/{n}"), value.clone()).await?;
                    latencies.push(t.elapsed());
                    n += 1;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all.len() as f64 / started.elapsed().as_secs_f64(), all))
}

async fn populate(store: &Store, value: &Bytes) -> anyhow::Result<()> {
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in (w..LIST_KEYS).step_by(64) {
                    store.create(&format!("/bench/list/{i:05}"), value.clone()).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// 16 readers get random keys among the 10,000 for `phase`.
async fn gets(store: &Store, phase: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + phase;
    let started = Instant::now();
    let tasks: Vec<_> = (0..16u64)
        .map(|r| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut x = r.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("/bench/list/{:05}", x % LIST_KEYS as u64);
                    anyhow::ensure!(store.get(&key, None).await?.is_some(), "{key} is missing");
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The median of 10 full lists of the 10,000 keys, and of 10 lists in pages of 500 (as kubectl).
async fn lists(store: &Store) -> anyhow::Result<(f64, f64)> {
    let mut whole = Vec::new();
    let mut paged = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let page = store.list(&ListOptions { prefix: "/bench/list/".into(), ..Default::default() }).await?;
        anyhow::ensure!(page.items.len() == LIST_KEYS, "listed {} keys", page.items.len());
        whole.push(t.elapsed());

        let t = Instant::now();
        let mut options = ListOptions { prefix: "/bench/list/".into(), limit: Some(500), ..Default::default() };
        let mut count = 0;
        loop {
            let page = store.list(&options).await?;
            count += page.items.len();
            if !page.more {
                break;
            }
            options.revision = Some(page.revision);
            options.after = page.items.last().map(|kv| kv.key.clone());
        }
        anyhow::ensure!(count == LIST_KEYS, "paged through {count} keys");
        paged.push(t.elapsed());
    }
    whole.sort();
    paged.sort();
    Ok((percentile_ms(&whole, 50.0), percentile_ms(&paged, 50.0)))
}

/// Time from just before a write until a watcher has the event, one write at a time.
async fn watch_latency(store: &Store, value: &Bytes) -> anyhow::Result<Vec<Duration>> {
    let mut watch = store.watch(WatchOptions { prefix: "/bench/watch/".into(), ..Default::default() }).await?;
    let mut latencies = Vec::with_capacity(WATCH_EVENTS);
    for i in 0..WATCH_EVENTS {
        let sent_at = Instant::now();
        let key = format!("/bench/watch/{i}");
        let write = store.create(&key, value.clone());
        let receive = async {
            loop {
                match watch.next().await {
                    Some(Ok(WatchEvent::Put { .. })) => return anyhow::Ok(Instant::now()),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the watch ended"),
                }
            }
        };
        let (written, received) = tokio::join!(write, receive);
        written?;
        latencies.push(received? - sent_at);
    }
    Ok(latencies)
}

/// 16 writers update 1,024 keys over and over for `phase`, building history; then that history
/// is compacted while one writer goes on writing. Returns that writer's latencies.
async fn compaction_latency(store: &Store, phase: Duration, value: &Bytes) -> anyhow::Result<Vec<Duration>> {
    let deadline = Instant::now() + phase;
    let churners: Vec<_> = (0..16)
        .map(|w| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                let mut revisions = Vec::new();
                for k in 0..64 {
                    revisions.push(store.create(&format!("/bench/churn/{w}/{k}"), value.clone()).await?.mod_revision);
                }
                let mut k = 0;
                while Instant::now() < deadline {
                    let key = format!("/bench/churn/{w}/{k}");
                    revisions[k] = store.update(&key, value.clone(), revisions[k]).await?.mod_revision;
                    k = (k + 1) % revisions.len();
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for c in churners {
        c.await??;
    }
    let target = store.current_revision().await?;
    let writer = {
        let (store, value) = (store.clone(), value.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + phase;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                store.create(&format!("/bench/during/{}", latencies.len()), value.clone()).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.compact(target).await?;
    writer.await?
}

/// Bytes the process writes over `idle` once it is idle: first it may finish background work
/// (compaction catching up), until it writes under 64 KiB in a second or a minute has passed.
async fn idle_writes(pid: u32, idle: Duration) -> u64 {
    let written = || proc_field(pid, "io", "write_bytes").unwrap_or(0);
    let settle_by = Instant::now() + Duration::from_secs(60);
    let mut last = written();
    while Instant::now() < settle_by {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written();
        if now - last < 64 << 10 {
            break;
        }
        last = now;
    }
    let before = written();
    tokio::time::sleep(idle).await;
    written().saturating_sub(before)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(r: &Report) {
    let rows: [(&str, f64, f64, bool); 16] = [
        ("durable writes/s, 1 writer", r.embedded.writes_per_s_1, r.etcd.writes_per_s_1, true),
        ("  write p50 ms, 1 writer", r.embedded.write_p50_ms_1, r.etcd.write_p50_ms_1, false),
        ("  write p99 ms, 1 writer", r.embedded.write_p99_ms_1, r.etcd.write_p99_ms_1, false),
        ("durable writes/s, 64 writers", r.embedded.writes_per_s_64, r.etcd.writes_per_s_64, true),
        ("  write p50 ms, 64 writers", r.embedded.write_p50_ms_64, r.etcd.write_p50_ms_64, false),
        ("  write p99 ms, 64 writers", r.embedded.write_p99_ms_64, r.etcd.write_p99_ms_64, false),
        ("gets/s (16 readers, 10k keys)", r.embedded.gets_per_s, r.etcd.gets_per_s, true),
        ("list 10k keys ms", r.embedded.list_10k_ms, r.etcd.list_10k_ms, false),
        ("list 10k keys in pages of 500 ms", r.embedded.list_10k_paged_ms, r.etcd.list_10k_paged_ms, false),
        ("watch delivery p50 ms", r.embedded.watch_p50_ms, r.etcd.watch_p50_ms, false),
        ("watch delivery p99 ms", r.embedded.watch_p99_ms, r.etcd.watch_p99_ms, false),
        ("write p99 ms while compacting", r.embedded.compacting_write_p99_ms, r.etcd.compacting_write_p99_ms, false),
        ("write max ms while compacting", r.embedded.compacting_write_max_ms, r.etcd.compacting_write_max_ms, false),
        ("open / start ms", r.embedded.open_ms, r.etcd.open_ms, false),
        ("idle disk writes, bytes", r.embedded.idle_write_bytes as f64, r.etcd.idle_write_bytes as f64, false),
        ("memory MiB", r.embedded.rss_mb, r.etcd.rss_mb, false),
    ];
    println!("{:<36} {:>12} {:>12} {:>10}", "", "embedded", "etcd", "better by");
    for (name, embedded, etcd, higher_is_better) in rows {
        let ratio = match (higher_is_better, embedded, etcd) {
            (true, e, c) if c > 0.0 => format!("{:.1}x", e / c),
            (false, e, c) if e > 0.0 => format!("{:.1}x", c / e),
            _ => "-".into(),
        };
        println!("{name:<36} {embedded:>12.2} {etcd:>12.2} {ratio:>10}");
    }
}
