//! The watch handle every backend returns, and the idle timer behind progress events.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Result, WatchEvent};

/// Events in revision order. Ends after an error (such as [`crate::StoreError::Compacted`] when a
/// slow watcher fell behind compaction) or when the store closes. Dropping it stops the watch.
pub struct Watch {
    events: mpsc::Receiver<Result<WatchEvent>>,
    progress: mpsc::UnboundedSender<()>,
    task: JoinHandle<()>,
}

/// How many undelivered events a watch buffers before its producer waits.
pub(crate) const WATCH_BUFFER: usize = 1024;

impl Watch {
    /// Wraps a producer task: it sends events on `events` and answers each `()` on its progress
    /// receiver with a [`WatchEvent::Progress`] once it has delivered everything committed.
    pub(crate) fn new(
        events: mpsc::Receiver<Result<WatchEvent>>,
        progress: mpsc::UnboundedSender<()>,
        task: JoinHandle<()>,
    ) -> Watch {
        Watch { events, progress, task }
    }

    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        self.events.recv().await
    }

    /// Asks for a [`WatchEvent::Progress`] as soon as every committed event has been delivered.
    pub fn request_progress(&self) {
        let _ = self.progress.send(());
    }

    /// A handle that asks for progress from elsewhere, while this watch is being read.
    pub fn progress_requester(&self) -> ProgressRequester {
        ProgressRequester(self.progress.clone())
    }
}

/// Asks a [`Watch`] for a [`WatchEvent::Progress`]; does nothing once the watch is gone.
#[derive(Clone)]
pub struct ProgressRequester(mpsc::UnboundedSender<()>);

impl ProgressRequester {
    pub fn request(&self) {
        let _ = self.0.send(());
    }
}

impl Stream for Watch {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Fires once a watch has been idle for its progress interval; never fires without one.
pub(crate) struct IdleTimer {
    interval: Option<Duration>,
    deadline: Instant,
}

impl IdleTimer {
    pub(crate) fn new(interval: Option<Duration>) -> IdleTimer {
        let mut timer = IdleTimer { interval, deadline: Instant::now() };
        timer.reset();
        timer
    }

    pub(crate) fn reset(&mut self) {
        if let Some(interval) = self.interval {
            self.deadline = Instant::now() + interval;
        }
    }

    pub(crate) async fn fired(&self) {
        match self.interval {
            Some(_) => tokio::time::sleep_until(self.deadline).await,
            None => std::future::pending().await,
        }
    }
}
