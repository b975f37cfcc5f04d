//! The control plane's loops: the scheduler and the controller manager's controllers, which
//! drive the cluster toward what its objects ask for, and the simulated nodes that stand in
//! for node agents in tests and at scale. They talk to the cluster only through the API
//! server, with a `kube` client, as upstream's components do; they never touch the store, and
//! know nothing of HTTP serving.
//!
//! Each controller is a level-triggered `reconcile` over one object, run by kube-runtime's
//! `Controller`, which deduplicates keys, never reconciles one key twice at once, and retries
//! with backoff. Scheduler plugins are pure over (pod, node info, cycle state).

pub mod cron;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod informer;
pub mod job;
pub mod labels;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod quota;
pub mod replicaset;
pub mod scheduler;
pub mod serviceaccount;
pub mod simulated;
pub mod statefulset;
pub mod volumebinding;
pub mod workqueue;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
}

/// The lease names upstream's components elect with; `componentstatuses` reads them.
pub const SCHEDULER_LEASE: &str = "kube-scheduler";
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";

/// What runs.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub election: leader::Config,
    pub node_lifecycle: nodelifecycle::Config,
    /// Where nodes' podCIDRs come from.
    pub cluster_cidr: nodeipam::ClusterCidr,
}

/// The running loops; dropping it stops them.
pub struct Controllers {
    tasks: JoinSet<()>,
}

impl Controllers {
    /// Starts the scheduler and every controller against the API server `client` talks to,
    /// each under its leader election.
    pub fn start(client: kube::Client, config: Config) -> Controllers {
        let mut tasks = JoinSet::new();
        // One pod watch for the scheduler and every controller that follows pods.
        let pods = Arc::new(informer::Informer::<Pod>::new(kube::Api::all(client.clone())));
        let (c, p) = (client.clone(), pods.clone());
        tasks.spawn(leader::run_elected(client.clone(), SCHEDULER_LEASE, config.election.clone(), move || {
            scheduler::run(c.clone(), p.clone())
        }));
        let c = client.clone();
        let lifecycle = config.node_lifecycle.clone();
        let cluster_cidr = config.cluster_cidr;
        tasks.spawn(leader::run_elected(client, CONTROLLER_MANAGER_LEASE, config.election, move || {
            let (c, lifecycle, pods) = (c.clone(), lifecycle.clone(), pods.clone());
            async move {
                tokio::join!(
                    namespace::run(c.clone()),
                    gc::run(c.clone()),
                    replicaset::run(c.clone(), pods.clone()),
                    deployment::run(c.clone()),
                    nodelifecycle::run(c.clone(), lifecycle),
                    nodeipam::run(c.clone(), cluster_cidr),
                    job::run(c.clone(), pods.clone()),
                    cronjob::run(c.clone()),
                    statefulset::run(c.clone(), pods.clone()),
                    daemonset::run(c.clone(), pods.clone()),
                    serviceaccount::run(c.clone()),
                    endpoints::run(c.clone(), pods.clone()),
                    disruption::run(c.clone(), pods),
                    quota::run(c.clone()),
                    volumebinding::run(c.clone()),
                );
            }
        }));
        Controllers { tasks }
    }

    /// Waits until every loop stops (they stop only when dropped).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
