//! Routes between nodes, as flannel's host-gw backend does it: every other node's podCIDR is
//! reached through that node's InternalIP, so pods on different hosts talk without NAT or
//! tunnels (the nodes must share a link). Pod traffic to other pods is exempt from the CNI
//! bridge's masquerade, so the far pod sees the near pod's IP.
//!
//! Our routes carry protocol number 211, so they are recognised and removed when their node
//! goes; the NAT exemptions live in one chain, rebuilt on each change.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

/// `ip route ... proto 211`: routes this agent owns.
pub const ROUTE_PROTO: &str = "211";
/// The nat chain whose rules exempt pod-to-pod traffic from masquerade.
pub const NAT_CHAIN: &str = "RKUBE-POD-NO-MASQ";

/// Keeps routes to other nodes' podCIDRs, until the task is dropped.
pub async fn run(client: Client, node_name: String, node_ip: String) {
    let nodes: Api<Node> = Api::all(client);
    let mut known: BTreeMap<String, Node> = BTreeMap::new();
    let mut applied: Option<Desired> = None;
    let mut events = watcher(nodes, watcher::Config::default()).boxed();
    let mut init: Option<BTreeMap<String, Node>> = None;
    // Routes someone removed come back within a minute, however busy the node watch is.
    let mut resync = tokio::time::interval(Duration::from_secs(60));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = resync.tick() => { applied = None; None }
        };
        match event {
            Some(Ok(watcher::Event::Apply(n))) => {
                known.insert(n.name_any(), n);
            }
            Some(Ok(watcher::Event::Delete(n))) => {
                known.remove(&n.name_any());
            }
            Some(Ok(watcher::Event::Init)) => init = Some(BTreeMap::new()),
            Some(Ok(watcher::Event::InitApply(n))) => {
                init.get_or_insert_with(BTreeMap::new).insert(n.name_any(), n);
            }
            Some(Ok(watcher::Event::InitDone)) => known = init.take().unwrap_or_default(),
            Some(Err(e)) => {
                tracing::debug!("node watch for routes: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            None => {}
        }
        let desired = desired(&known, &node_name, &node_ip);
        if applied.as_ref() != Some(&desired) {
            match apply(&desired).await {
                Ok(()) => applied = Some(desired),
                Err(e) => tracing::warn!("routes to other nodes: {e}"),
            }
        }
    }
}

/// What this node should have: (podCIDR → next hop) for other nodes, and its own podCIDR.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Desired {
    pub own_cidr: Option<String>,
    pub routes: BTreeMap<String, String>,
}

/// Pure: the routes `known` nodes call for. A node on this host (same InternalIP) needs no
/// route; its bridge is local. (`apply` also skips podCIDRs this host already reaches
/// directly, and loopback next hops: agents sharing a host with different node IPs.)
pub fn desired(known: &BTreeMap<String, Node>, me: &str, my_ip: &str) -> Desired {
    let cidr = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).filter(|c| !c.is_empty());
    let internal_ip = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
    };
    let mut routes = BTreeMap::new();
    for (name, node) in known {
        if name == me {
            continue;
        }
        match (cidr(node), internal_ip(node)) {
            (Some(c), Some(ip)) if ip != my_ip => {
                routes.insert(c, ip);
            }
            _ => {}
        }
    }
    Desired { own_cidr: known.get(me).and_then(cidr), routes }
}

async fn command(program: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(program).args(args).output().await.map_err(|e| {
        format!("{program}: {e} (is {} installed?)", if program == "ip" { "iproute2" } else { program })
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Applies `desired`; one route that cannot be made (say, a next hop off this link) is
/// reported and the rest still go in.
async fn apply(desired: &Desired) -> Result<(), String> {
    // Routes: add or change what is wanted, remove ours that are not.
    let mut failed = Vec::new();
    let addresses = command("ip", &["-o", "addr", "show"]).await?;
    let own = |ip: &str| ip.starts_with("127.") || ip == "::1" || addresses.contains(&format!(" {ip}/"));
    for (cidr, via) in &desired.routes {
        // A podCIDR this host already reaches directly (another agent's bridge here) keeps
        // its route, and a next hop that is one of this host's addresses is this host.
        let existing = command("ip", &["route", "show", "exact", cidr]).await?;
        let local = existing.lines().any(|l| !l.contains(&format!("proto {ROUTE_PROTO}")));
        if local || own(via) {
            if existing.contains(&format!("proto {ROUTE_PROTO}")) {
                command("ip", &["route", "del", cidr, "proto", ROUTE_PROTO]).await?;
            }
            continue;
        }
        if let Err(e) = command("ip", &["route", "replace", cidr, "via", via, "proto", ROUTE_PROTO]).await {
            failed.push(e);
        }
    }
    let ours = command("ip", &["route", "show", "proto", ROUTE_PROTO]).await?;
    for line in ours.lines() {
        let Some(cidr) = line.split_whitespace().next() else { continue };
        if !desired.routes.contains_key(cidr) {
            command("ip", &["route", "del", cidr, "proto", ROUTE_PROTO]).await?;
        }
    }
    // NAT exemptions: pods to other nodes' pods keep their source address.
    if command("iptables", &["-t", "nat", "-S", NAT_CHAIN]).await.is_err() {
        command("iptables", &["-t", "nat", "-N", NAT_CHAIN]).await?;
    }
    if command("iptables", &["-t", "nat", "-C", "POSTROUTING", "-j", NAT_CHAIN]).await.is_err() {
        command("iptables", &["-t", "nat", "-I", "POSTROUTING", "1", "-j", NAT_CHAIN]).await?;
    }
    command("iptables", &["-t", "nat", "-F", NAT_CHAIN]).await?;
    if let Some(own) = &desired.own_cidr {
        for cidr in desired.routes.keys() {
            command("iptables", &["-t", "nat", "-A", NAT_CHAIN, "-s", own, "-d", cidr, "-j", "ACCEPT"]).await?;
        }
    }
    if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
}

/// Removes this agent's routes and NAT chain (`rkube killall`).
pub async fn remove_all() {
    let _ = command("ip", &["route", "flush", "proto", ROUTE_PROTO]).await;
    let _ = command("iptables", &["-t", "nat", "-D", "POSTROUTING", "-j", NAT_CHAIN]).await;
    let _ = command("iptables", &["-t", "nat", "-F", NAT_CHAIN]).await;
    let _ = command("iptables", &["-t", "nat", "-X", NAT_CHAIN]).await;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> (String, Node) {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.spec = Some(NodeSpec { pod_cidr: cidr.map(Into::into), ..Default::default() });
        n.status = Some(NodeStatus {
            addresses: Some(vec![NodeAddress { type_: "InternalIP".into(), address: ip.into() }]),
            ..Default::default()
        });
        (name.into(), n)
    }

    #[test]
    fn routes_go_to_other_hosts_podcidrs_only() {
        let known = BTreeMap::from([
            node("me", Some("10.42.0.0/24"), "192.168.1.10"),
            node("b", Some("10.42.1.0/24"), "192.168.1.11"),
            node("same-host", Some("10.42.2.0/24"), "192.168.1.10"),
            node("no-cidr-yet", None, "192.168.1.12"),
        ]);
        let d = desired(&known, "me", "192.168.1.10");
        assert_eq!(d.own_cidr.as_deref(), Some("10.42.0.0/24"));
        assert_eq!(d.routes, BTreeMap::from([("10.42.1.0/24".to_owned(), "192.168.1.11".to_owned())]));
    }
}
