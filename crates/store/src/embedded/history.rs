//! Watches on the embedded store.
//!
//! A watcher subscribes to the committer's broadcast before it reads anything, then reads the
//! `revs` table for the revisions it missed, then follows the broadcast, skipping what it already
//! delivered. A watcher that falls more than the broadcast's capacity behind goes back to the table,
//! so a slow consumer costs disk reads, never other watchers' memory.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::ReadableDatabase;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};

use super::index::Version;
use super::layout::{REVS, RevRow, VALUES, corrupt};
use super::{Batch, Shared};
use crate::watch::{IdleTimer, WATCH_BUFFER};
use crate::{KeyValue, Result, StoreError, Watch, WatchEvent, WatchOptions};

/// Log rows read per blocking history read.
const HISTORY_CHUNK: usize = 512;

pub(super) fn start_watch(
    shared: Arc<Shared>,
    events_sender: &broadcast::Sender<Arc<Batch>>,
    options: WatchOptions,
) -> Result<Watch> {
    let batches = events_sender.subscribe();
    // `committed` is stored before a batch is sent: every revision after it arrives on
    // `batches`, and anything up to it that does not is read from disk.
    let committed = shared.committed.load(Ordering::Acquire);
    let compacted = shared.compacted.load(Ordering::Acquire);
    let next = match options.start_revision {
        0 => committed + 1,
        start if (start as u64) < compacted => {
            return Err(StoreError::Compacted { requested: start, compacted: compacted as i64 });
        }
        start => start as u64,
    };
    let (events, rx) = mpsc::channel(WATCH_BUFFER);
    let (progress, progress_rx) = mpsc::unbounded_channel();
    let watcher = Watcher {
        shared,
        prefix: options.prefix,
        next,
        seen: committed.min(next - 1),
        behind: next <= committed,
        events,
    };
    let task = tokio::spawn(watcher.run(batches, progress_rx, IdleTimer::new(options.progress_interval)));
    Ok(Watch::new(rx, progress, task))
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: String,
    /// The first revision not yet delivered.
    next: u64,
    /// The highest committed revision this watcher has passed over.
    seen: u64,
    /// Revisions before what the broadcast holds are missing: read the log.
    behind: bool,
    events: mpsc::Sender<Result<WatchEvent>>,
}

/// The consumer dropped the watch.
struct Gone;

impl Watcher {
    async fn run(
        mut self,
        mut batches: broadcast::Receiver<Arc<Batch>>,
        mut progress: mpsc::UnboundedReceiver<()>,
        mut idle: IdleTimer,
    ) {
        let _ = self.follow(&mut batches, &mut progress, &mut idle).await;
    }

    async fn follow(
        &mut self,
        batches: &mut broadcast::Receiver<Arc<Batch>>,
        progress: &mut mpsc::UnboundedReceiver<()>,
        idle: &mut IdleTimer,
    ) -> std::result::Result<(), Gone> {
        loop {
            if self.behind {
                self.catch_up().await?;
            }
            tokio::select! {
                received = batches.recv() => match received {
                    Ok(batch) => {
                        if self.deliver(&batch).await? {
                            idle.reset();
                        }
                    }
                    Err(RecvError::Lagged(_)) => self.behind = true,
                    Err(RecvError::Closed) => return Err(Gone),
                },
                Some(()) = progress.recv() => {
                    self.report_progress(batches).await?;
                    idle.reset();
                }
                () = idle.fired() => {
                    self.report_progress(batches).await?;
                    idle.reset();
                }
                () = self.events.closed() => return Err(Gone),
            }
        }
    }

    /// Delivers a batch's matching events that were not delivered yet. Returns whether any were.
    async fn deliver(&mut self, batch: &Batch) -> std::result::Result<bool, Gone> {
        // Batches cover every revision in order, so a batch starting past `next` means some
        // were missed (a lag, or a batch sent while this watch subscribed): read them first.
        if batch.events.first().is_some_and(|e| e.revision() as u64 > self.next) {
            self.catch_up().await?;
        }
        let mut sent = false;
        for event in &batch.events {
            let revision = event.revision() as u64;
            if revision >= self.next && event_key(event).starts_with(&self.prefix) {
                self.send(Ok(event.clone())).await?;
                sent = true;
            }
        }
        self.next = self.next.max(batch.last_revision + 1);
        self.seen = self.seen.max(batch.last_revision);
        Ok(sent)
    }

    /// Reports progress at a revision up to which everything has been delivered: what was
    /// committed when the report began, after draining the batches already sent and reading
    /// from disk whatever of it did not arrive.
    async fn report_progress(
        &mut self,
        batches: &mut broadcast::Receiver<Arc<Batch>>,
    ) -> std::result::Result<(), Gone> {
        let committed = self.shared.committed.load(Ordering::Acquire);
        loop {
            match batches.try_recv() {
                Ok(batch) => {
                    self.deliver(&batch).await?;
                }
                Err(TryRecvError::Lagged(_)) => self.catch_up().await?,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return Err(Gone),
            }
        }
        if self.next <= committed {
            self.catch_up().await?;
        }
        let revision = committed.max(self.seen);
        self.send(Ok(WatchEvent::Progress { revision: revision as i64 })).await
    }

    /// Reads history from `next` until it holds nothing newer.
    async fn catch_up(&mut self) -> std::result::Result<(), Gone> {
        loop {
            let shared = self.shared.clone();
            let (prefix, from) = (self.prefix.clone(), self.next);
            let chunk = tokio::task::spawn_blocking(move || read_history(&shared, &prefix, from))
                .await
                .map_err(|e| StoreError::Engine(e.to_string()))
                .and_then(|r| r);
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = self.send(Err(e)).await;
                    return Err(Gone);
                }
            };
            for event in chunk.events {
                self.send(Ok(event)).await?;
            }
            self.next = chunk.next;
            self.seen = self.seen.max(chunk.next - 1);
            if chunk.caught_up {
                self.behind = false;
                return Ok(());
            }
        }
    }

    async fn send(&self, event: Result<WatchEvent>) -> std::result::Result<(), Gone> {
        self.events.send(event).await.map_err(|_| Gone)
    }
}

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put { kv, .. } => &kv.key,
        WatchEvent::Delete { key, .. } => key,
        WatchEvent::Progress { .. } => "",
    }
}

struct HistoryChunk {
    events: Vec<WatchEvent>,
    /// The first revision after this chunk.
    next: u64,
    /// The chunk reached the store's current revision.
    caught_up: bool,
}

/// Reads up to a chunk of events from `from` on, in one snapshot.
fn read_history(shared: &Shared, prefix: &str, from: u64) -> Result<HistoryChunk> {
    // Only revisions the index fully describes: their previous versions are findable.
    let current = shared.committed.load(Ordering::Acquire);
    let txn = shared.db.begin_read()?;
    // Checked after the snapshot began: compaction publishes its target before removing rows.
    let compacted = shared.compacted.load(Ordering::Acquire);
    if from < compacted {
        return Err(StoreError::Compacted { requested: from as i64, compacted: compacted as i64 });
    }
    let revs = txn.open_table(REVS)?;
    let values = txn.open_table(VALUES)?;
    let value_of = |key: &str, rev: u64| -> Result<Option<KeyValue>> {
        let Some(version) = shared.index.read().expect("index lock").version_before(key, rev) else {
            return Ok(None);
        };
        if !version.live {
            return Ok(None);
        }
        // Missing only if compaction took it: a previous value may be compacted, as in etcd.
        Ok(values.get(version.revision)?.map(|value| version.to_kv(key, bytes::Bytes::copy_from_slice(value.value()))))
    };
    // A watch may start past the current revision: never move it back.
    let mut chunk = HistoryChunk { events: Vec::new(), next: from.max(current + 1), caught_up: true };
    for (n, row) in revs.range(from..=current)?.enumerate() {
        let (rev, raw) = row?;
        let rev = rev.value();
        if n == HISTORY_CHUNK {
            chunk.next = rev;
            chunk.caught_up = false;
            break;
        }
        let row = RevRow::decode(raw.value())?;
        if !row.key.starts_with(prefix) {
            continue;
        }
        let prev = value_of(row.key, rev - 1)?;
        chunk.events.push(if row.live {
            let value = values.get(rev)?.ok_or_else(|| corrupt(&format!("revision {rev} has no value")))?;
            let version =
                Version { revision: rev, create_revision: row.create_revision, version: row.version, live: true };
            WatchEvent::Put { kv: version.to_kv(row.key, bytes::Bytes::copy_from_slice(value.value())), prev }
        } else {
            WatchEvent::Delete { key: row.key.to_owned(), revision: rev as i64, prev }
        });
    }
    Ok(chunk)
}
