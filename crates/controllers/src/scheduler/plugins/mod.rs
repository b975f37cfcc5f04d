//! The in-tree plugins, registered by name, and the default profile that enables them.

pub mod interpod;
pub mod node;
pub mod resources;
pub mod spread;

use std::sync::Arc;

use super::framework::Plugin;

/// Makes a plugin.
pub type Factory = fn() -> Arc<dyn Plugin>;

/// Every plugin by its upstream name.
pub fn registry() -> Vec<(&'static str, Factory)> {
    vec![
        ("NodeName", || Arc::new(node::NodeName)),
        ("NodeUnschedulable", || Arc::new(node::NodeUnschedulable)),
        ("TaintToleration", || Arc::new(node::TaintToleration)),
        ("NodeAffinity", || Arc::new(node::NodeAffinity)),
        ("NodePorts", || Arc::new(node::NodePorts)),
        ("NodeResourcesFit", || Arc::new(resources::NodeResourcesFit)),
        ("PodTopologySpread", || Arc::new(spread::PodTopologySpread)),
        ("InterPodAffinity", || Arc::new(interpod::InterPodAffinity)),
        ("NodeResourcesBalancedAllocation", || Arc::new(resources::BalancedAllocation)),
    ]
}

/// The plugins of upstream's default profile that rkube has, in upstream's order.
pub const DEFAULT_PROFILE: [&str; 9] = [
    "NodeName",
    "NodeUnschedulable",
    "TaintToleration",
    "NodeAffinity",
    "NodePorts",
    "NodeResourcesFit",
    "PodTopologySpread",
    "InterPodAffinity",
    "NodeResourcesBalancedAllocation",
];

#[cfg(test)]
mod tests;
