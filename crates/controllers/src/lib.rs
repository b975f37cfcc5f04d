//! The controller manager: control loops that drive the cluster toward what its objects ask
//! for. They talk to the cluster only through the API server, with a `kube` client, as
//! upstream's kube-controller-manager does; they never touch the store, and know nothing of
//! HTTP serving.
//!
//! Each controller is a level-triggered `reconcile` over one object, run by kube-runtime's
//! `Controller`, which deduplicates keys, never reconciles one key twice at once, and retries
//! with backoff.

pub mod namespace;

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

/// The running controllers; dropping it stops them.
pub struct Controllers {
    tasks: JoinSet<()>,
}

impl Controllers {
    /// Starts every controller against the API server `client` talks to.
    pub fn start(client: kube::Client) -> Controllers {
        let mut tasks = JoinSet::new();
        tasks.spawn(namespace::run(client));
        Controllers { tasks }
    }

    /// Waits until every controller stops (they stop only when dropped).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
