//! `/stats/summary` on the node API: the kubelet's Summary API (`stats/v1alpha1`), which
//! metrics-server and `kubectl get --raw .../proxy/stats/summary` read. The node's figures
//! come from /proc and statvfs, the pods' from CRI ListContainerStats (containerd computes
//! each container's `usageNanoCores`; the node's is the rate since the previous request).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use k8s_cri::v1::{
    ContainerFilter, ContainerStateValue, ListContainerStatsRequest, ListContainersRequest, ListPodSandboxRequest,
};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::cri::{CONTAINER_NAME, Cri, POD_UID};

/// Nanoseconds per USER_HZ tick (100 Hz on Linux).
const NANOS_PER_TICK: u64 = 10_000_000;

pub struct Stats {
    pub node_name: String,
    /// The data directory: its filesystem is the node's `fs`.
    pub data_dir: PathBuf,
    /// containerd's root: its filesystem is the image filesystem.
    pub image_dir: PathBuf,
    last_cpu: Mutex<Option<(Instant, u64)>>,
}

impl Stats {
    pub fn new(node_name: String, data_dir: PathBuf, image_dir: PathBuf) -> Stats {
        Stats { node_name, data_dir, image_dir, last_cpu: Mutex::new(None) }
    }

    pub async fn summary(&self, cri: &Cri) -> Result<Value, String> {
        let now = Timestamp::now().to_string();
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let cpu_nanos = cpu_busy_ticks(&stat) * NANOS_PER_TICK;
        let nano_cores = {
            let mut last = self.last_cpu.lock().unwrap_or_else(|e| e.into_inner());
            let rate = last.and_then(|(at, before)| {
                let elapsed = at.elapsed().as_nanos() as u64;
                (elapsed > 0)
                    .then(|| (cpu_nanos.saturating_sub(before) as u128 * 1_000_000_000 / elapsed as u128) as u64)
            });
            *last = Some((Instant::now(), cpu_nanos));
            rate
        };
        let kib = |key: &str| meminfo_kib(&meminfo, key) * 1024;
        let (total, available, free) = (kib("MemTotal:"), kib("MemAvailable:"), kib("MemFree:"));
        let boot = stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|s| s.trim().parse::<i64>().ok());
        let start = boot.and_then(|s| Timestamp::from_second(s).ok()).map(|t| t.to_string());
        let mut cpu = json!({"time": now, "usageCoreNanoSeconds": cpu_nanos});
        if let Some(rate) = nano_cores {
            cpu["usageNanoCores"] = json!(rate);
        }
        let node = json!({
            "nodeName": self.node_name,
            "startTime": start,
            "cpu": cpu,
            "memory": {
                "time": now,
                "availableBytes": available,
                "usageBytes": total.saturating_sub(free),
                "workingSetBytes": total.saturating_sub(available),
            },
            "fs": filesystem(&self.data_dir, &now),
            "runtime": {"imageFs": filesystem(&self.image_dir, &now)},
        });
        Ok(json!({"node": node, "pods": pods(cri, &now).await?}))
    }
}

/// Busy ticks (all but idle and iowait) from /proc/stat's first line.
fn cpu_busy_ticks(stat: &str) -> u64 {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else { return 0 };
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: u64 = fields.iter().take(8).sum();
    all.saturating_sub(fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0))
}

fn meminfo_kib(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn filesystem(path: &std::path::Path, now: &str) -> Value {
    match rustix::fs::statvfs(path) {
        Ok(s) => json!({
            "time": now,
            "availableBytes": s.f_bavail.saturating_mul(s.f_frsize),
            "capacityBytes": s.f_blocks.saturating_mul(s.f_frsize),
            "usedBytes": s.f_blocks.saturating_sub(s.f_bfree).saturating_mul(s.f_frsize),
            "inodesFree": s.f_ffree,
            "inodes": s.f_files,
            "inodesUsed": s.f_files.saturating_sub(s.f_ffree),
        }),
        Err(_) => json!({"time": now}),
    }
}

async fn pods(cri: &Cri, now: &str) -> Result<Vec<Value>, String> {
    let mut rt = cri.runtime.clone();
    let sandboxes = rt
        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
        .await
        .map_err(|e| format!("listing sandboxes: {}", e.message()))?
        .into_inner()
        .items;
    let stats = rt
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .map_err(|e| format!("container stats: {}", e.message()))?
        .into_inner()
        .stats;
    // Only running containers count, as upstream drops terminated ones from the summary.
    let running: std::collections::HashSet<String> = rt
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter { state: Some(ContainerStateValue { state: 1 }), ..Default::default() }),
        })
        .await
        .map_err(|e| format!("listing containers: {}", e.message()))?
        .into_inner()
        .containers
        .into_iter()
        .map(|c| c.id)
        .collect();
    let mut by_pod: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut totals: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for s in stats {
        let attributes = s.attributes.unwrap_or_default();
        if !running.contains(&attributes.id) {
            continue;
        }
        let Some(uid) = attributes.labels.get(POD_UID).cloned() else { continue };
        let name = attributes.labels.get(CONTAINER_NAME).cloned().unwrap_or_default();
        let cpu = s.cpu.unwrap_or_default();
        let memory = s.memory.unwrap_or_default();
        let value = |v: Option<k8s_cri::v1::UInt64Value>| v.map(|v| v.value).unwrap_or(0);
        let (core_ns, nano_cores, working_set) =
            (value(cpu.usage_core_nano_seconds), value(cpu.usage_nano_cores), value(memory.working_set_bytes));
        let total = totals.entry(uid.clone()).or_default();
        total.0 += core_ns;
        total.1 += nano_cores;
        total.2 += working_set;
        by_pod.entry(uid).or_default().push(json!({
            "name": name,
            "cpu": {"time": now, "usageCoreNanoSeconds": core_ns, "usageNanoCores": nano_cores},
            "memory": {
                "time": now,
                "workingSetBytes": working_set,
                "usageBytes": value(memory.usage_bytes),
                "rssBytes": value(memory.rss_bytes),
                "pageFaults": value(memory.page_faults),
                "majorPageFaults": value(memory.major_page_faults),
            },
            "rootfs": {"time": now, "usedBytes": value(s.writable_layer.and_then(|w| w.used_bytes))},
        }));
    }
    let mut pods = Vec::new();
    for sandbox in sandboxes.into_iter().filter(|s| s.state == 0) {
        let meta = sandbox.metadata.unwrap_or_default();
        let containers = by_pod.remove(&meta.uid).unwrap_or_default();
        let (core_ns, nano_cores, working_set) = totals.get(&meta.uid).copied().unwrap_or_default();
        let start = Timestamp::from_nanosecond(i128::from(sandbox.created_at)).map(|t| t.to_string()).ok();
        pods.push(json!({
            "podRef": {"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
            "startTime": start,
            "containers": containers,
            "cpu": {"time": now, "usageCoreNanoSeconds": core_ns, "usageNanoCores": nano_cores},
            "memory": {"time": now, "workingSetBytes": working_set},
        }));
    }
    Ok(pods)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_parse() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\nbtime 1700000000\n";
        assert_eq!(cpu_busy_ticks(stat), 100 + 5 + 50 + 1 + 2 + 3);
        let meminfo = "MemTotal:        2048 kB\nMemFree:          512 kB\nMemAvailable:    1024 kB\n";
        assert_eq!(meminfo_kib(meminfo, "MemAvailable:"), 1024);
        assert_eq!(meminfo_kib(meminfo, "Missing:"), 0);
    }
}
