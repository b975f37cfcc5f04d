//! Automatic compaction, as the Kubernetes API server does it: every interval, compact to the
//! revision seen one interval earlier, so between one and two intervals of history stay
//! watchable. An idle store is never compacted twice to the same revision, so it writes nothing.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::{Store, StoreError};

#[derive(Clone, Copy, Debug)]
pub struct CompactorConfig {
    pub interval: Duration,
}

impl Default for CompactorConfig {
    /// Five minutes, the API server's `--etcd-compaction-interval`.
    fn default() -> Self {
        CompactorConfig { interval: Duration::from_secs(300) }
    }
}

/// Runs until dropped.
pub struct Compactor {
    task: JoinHandle<()>,
}

impl Compactor {
    pub(crate) fn start(store: Store, config: CompactorConfig) -> Compactor {
        Compactor { task: tokio::spawn(run(store, config)) }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(store: Store, config: CompactorConfig) {
    let mut previous: Option<i64> = None;
    let mut compacted_to = 0;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + config.interval, config.interval);
    loop {
        ticks.tick().await;
        let current = match store.current_revision().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("compactor cannot read the current revision: {e}");
                continue;
            }
        };
        if let Some(target) = previous.filter(|&t| t > compacted_to) {
            match store.compact(target).await {
                Ok(()) | Err(StoreError::Compacted { .. }) => compacted_to = target,
                Err(e) => tracing::warn!("compaction to revision {target} failed: {e}"),
            }
        }
        previous = Some(current);
    }
}
