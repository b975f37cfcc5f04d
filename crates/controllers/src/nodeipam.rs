//! The node IPAM controller: gives each node without one a podCIDR, a /24 out of the cluster
//! CIDR (upstream's range allocator), which its agent turns into the CNI bridge's subnet.
//! Nodes that bring their own podCIDR (simulated nodes do) keep it, and their range is never
//! handed out again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::json;

/// An IPv4 range split into /24s: `10.42.0.0/16` holds 256 of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterCidr {
    base: u32,
    prefix: u8,
}

impl std::str::FromStr for ClusterCidr {
    type Err = String;

    fn from_str(s: &str) -> Result<ClusterCidr, String> {
        let (ip, prefix) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not an IPv4 CIDR such as 10.42.0.0/16"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| format!("{ip:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| format!("{prefix:?} is not a prefix length"))?;
        if !(8..=24).contains(&prefix) {
            return Err(format!("/{prefix} must be between /8 and /24: each node takes a /24"));
        }
        let mask = u32::MAX << (32 - prefix);
        if u32::from(ip) & !mask != 0 {
            return Err(format!(
                "{s} has host bits set; did you mean {}/{prefix}?",
                Ipv4Addr::from(u32::from(ip) & mask)
            ));
        }
        Ok(ClusterCidr { base: u32::from(ip), prefix })
    }
}

impl Default for ClusterCidr {
    fn default() -> ClusterCidr {
        "10.42.0.0/16".parse().expect("valid default")
    }
}

impl std::fmt::Display for ClusterCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

impl ClusterCidr {
    fn blocks(&self) -> u32 {
        1 << (24 - self.prefix)
    }

    fn block(&self, index: u32) -> String {
        format!("{}/24", Ipv4Addr::from(self.base + (index << 8)))
    }

    /// The block index of a `/24` inside this range, if it is one.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let (ip, prefix) = cidr.split_once('/')?;
        let ip = u32::from(ip.parse::<Ipv4Addr>().ok()?);
        let inside = ip.wrapping_sub(self.base) >> 8;
        (prefix == "24" && ip >= self.base && inside < self.blocks()).then_some(inside)
    }
}

/// Allocation state: which node holds which block.
#[derive(Default)]
struct Allocator {
    by_node: BTreeMap<String, u32>,
    used: BTreeSet<u32>,
}

impl Allocator {
    fn observe(&mut self, cidr: ClusterCidr, node: &str, pod_cidr: Option<&str>) {
        if let Some(index) = pod_cidr.and_then(|c| cidr.index_of(c)) {
            self.release(node);
            self.by_node.insert(node.to_owned(), index);
            self.used.insert(index);
        }
    }

    fn release(&mut self, node: &str) {
        if let Some(index) = self.by_node.remove(node) {
            self.used.remove(&index);
        }
    }

    fn allocate(&mut self, cidr: ClusterCidr, node: &str) -> Option<u32> {
        let index = (0..cidr.blocks()).find(|i| !self.used.contains(i))?;
        self.by_node.insert(node.to_owned(), index);
        self.used.insert(index);
        Some(index)
    }
}

pub async fn run(client: Client, cidr: ClusterCidr) {
    let api: Api<Node> = Api::all(client);
    let mut allocator = Allocator::default();
    // Nodes seen without a podCIDR before the initial list ended wait for it, so that a
    // restart never hands out a block an unlisted node already holds.
    let mut pending: Vec<Node> = Vec::new();
    let mut listed = false;
    let mut events = std::pin::pin!(watcher::watcher(api.clone(), watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let nodes = match event {
            Ok(Event::Init) => {
                allocator = Allocator::default();
                listed = false;
                continue;
            }
            Ok(Event::InitApply(node)) => {
                observe(&mut allocator, cidr, &node, &mut pending);
                continue;
            }
            Ok(Event::InitDone) => {
                listed = true;
                std::mem::take(&mut pending)
            }
            Ok(Event::Apply(node)) => {
                observe(&mut allocator, cidr, &node, &mut pending);
                std::mem::take(&mut pending)
            }
            Ok(Event::Delete(node)) => {
                allocator.release(&node.name_any());
                continue;
            }
            Err(e) => {
                tracing::debug!("node ipam: {e}");
                continue;
            }
        };
        if !listed {
            pending = nodes;
            continue;
        }
        for node in nodes {
            assign(&api, &mut allocator, cidr, &node.name_any()).await;
        }
    }
}

fn observe(allocator: &mut Allocator, cidr: ClusterCidr, node: &Node, pending: &mut Vec<Node>) {
    let name = node.name_any();
    match node.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) {
        Some(pod_cidr) => allocator.observe(cidr, &name, Some(pod_cidr)),
        None if !allocator.by_node.contains_key(&name) => pending.push(node.clone()),
        None => {}
    }
}

async fn assign(api: &Api<Node>, allocator: &mut Allocator, cidr: ClusterCidr, name: &str) {
    if allocator.by_node.contains_key(name) {
        return;
    }
    let Some(index) = allocator.allocate(cidr, name) else {
        tracing::warn!("node {name}: the cluster CIDR {cidr} has no free /24 left");
        return;
    };
    let block = cidr.block(index);
    let patch = json!({"spec": {"podCIDR": block, "podCIDRs": [block]}});
    for attempt in 0..5 {
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => break,
            Err(e) => {
                tracing::debug!("node {name}: cannot set podCIDR {block}: {e}");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
    }
    allocator.release(name);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_bad_ranges() {
        let cidr: ClusterCidr = "10.42.0.0/16".parse().unwrap();
        assert_eq!(cidr.blocks(), 256);
        assert_eq!(cidr.block(0), "10.42.0.0/24");
        assert_eq!(cidr.block(255), "10.42.255.0/24");
        assert_eq!(cidr.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(cidr.index_of("10.43.0.0/24"), None);
        assert_eq!(cidr.index_of("10.64.0.0/24"), None);
        assert_eq!(cidr.index_of("10.42.7.0/25"), None);
        assert!("10.42.1.0/16".parse::<ClusterCidr>().unwrap_err().contains("10.42.0.0/16"));
        assert!("10.42.0.0/26".parse::<ClusterCidr>().is_err());
        assert!("nonsense".parse::<ClusterCidr>().is_err());
        assert_eq!("10.100.0.0/24".parse::<ClusterCidr>().unwrap().blocks(), 1);
    }

    #[test]
    fn allocator_skips_blocks_in_use_and_reuses_released_ones() {
        let cidr: ClusterCidr = "10.42.0.0/22".parse().unwrap();
        let mut a = Allocator::default();
        a.observe(cidr, "existing", Some("10.42.0.0/24"));
        a.observe(cidr, "simulated", Some("10.64.0.0/24"));
        assert_eq!(a.allocate(cidr, "n1"), Some(1));
        assert_eq!(a.allocate(cidr, "n2"), Some(2));
        a.release("n1");
        assert_eq!(a.allocate(cidr, "n3"), Some(1));
        assert_eq!(a.allocate(cidr, "n4"), Some(3));
        assert_eq!(a.allocate(cidr, "n5"), None);
    }
}
