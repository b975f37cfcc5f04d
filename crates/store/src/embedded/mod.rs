//! The embedded backend: MVCC over redb, with group commit and in-process watch fan-out.
//!
//! Writes go to one committer thread, which applies every pending write in one redb transaction
//! and one fsync (group commit), then acknowledges them and broadcasts their events. Reads find
//! the revision they need in the in-memory index and read its value with a redb read
//! transaction on the caller's task. Watchers follow the broadcast and fall back to reading the
//! `revs` table when they start in the past or fall behind.

mod committer;
mod history;
mod index;
mod layout;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase};
use tokio::sync::{broadcast, oneshot};

use crate::{
    KeyValue, ListOptions, ListPage, Result, StoreBackend, StoreError, Watch, WatchEvent, WatchOptions, Write, Written,
};
use committer::Command;
use index::{Index, Version};
use layout::{META, REVS, VALUES};

/// The file the embedded store keeps in its data directory.
pub const DATA_FILE: &str = "store.redb";

#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    pub data_dir: PathBuf,
    /// redb's page cache.
    pub cache_bytes: usize,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig { data_dir: data_dir.into(), cache_bytes: 64 << 20 }
    }
}

/// State shared by the store handle, the committer thread and the watchers.
struct Shared {
    db: Database,
    /// Every version of every key at or before `committed` (and, briefly, a batch more).
    index: RwLock<Index>,
    /// The last durably committed revision that the index fully describes: reads happen here.
    committed: AtomicU64,
    /// Reads and watches before this revision fail with `Compacted`.
    compacted: AtomicU64,
}

struct Batch {
    events: Vec<WatchEvent>,
    last_revision: u64,
}

/// How many committed batches a watcher may fall behind before it reads from disk instead.
const BROADCAST_BATCHES: usize = 4096;

pub(crate) struct Embedded {
    shared: Arc<Shared>,
    /// Each committed batch's events, in revision order. Only this handle and the committer
    /// hold senders, so watches end when the store closes (watchers hold `Shared`, not this).
    events: broadcast::Sender<Arc<Batch>>,
    commands: std_mpsc::Sender<Command>,
    committer: Option<std::thread::JoinHandle<()>>,
}

impl Embedded {
    pub(crate) async fn open(config: EmbeddedConfig) -> Result<Embedded> {
        let db = tokio::task::spawn_blocking(move || open_file(&config))
            .await
            .map_err(|e| StoreError::Engine(e.to_string()))??;
        Embedded::start(db)
    }

    pub(crate) fn in_memory() -> Result<Embedded> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Engine(e.to_string()))?;
        create_tables(&db).map_err(StoreError::Engine)?;
        Embedded::start(db)
    }

    fn start(db: Database) -> Result<Embedded> {
        let mut index = Index::default();
        let state = committer::State::load(&db, &mut index)?;
        let shared = Arc::new(Shared {
            db,
            index: RwLock::new(index),
            committed: AtomicU64::new(state.revision),
            compacted: AtomicU64::new(state.compacted),
        });
        let (commands, rx) = std_mpsc::channel();
        let events = broadcast::channel(BROADCAST_BATCHES).0;
        let (thread_shared, thread_events) = (shared.clone(), events.clone());
        let committer = std::thread::Builder::new()
            .name("store-committer".into())
            .spawn(move || committer::run(thread_shared, thread_events, state, rx))
            .map_err(|e| StoreError::Engine(format!("cannot start the committer thread: {e}")))?;
        Ok(Embedded { shared, events, commands, committer: Some(committer) })
    }

    async fn command<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Closing the channel stops the committer after its current batch; joining it means the
        // file lock is released when the last handle goes.
        let (closed, _) = std_mpsc::channel();
        drop(std::mem::replace(&mut self.commands, closed));
        if let Some(thread) = self.committer.take() {
            let _ = thread.join();
        }
    }
}

/// Opens the data file, creating it atomically if it does not exist. A file that exists but
/// cannot be opened is reported, never replaced.
fn open_file(config: &EmbeddedConfig) -> Result<Database> {
    let dir = &config.data_dir;
    let path = dir.join(DATA_FILE);
    let file_error = |message: String| StoreError::DataFile { path: path.clone(), message };
    std::fs::create_dir_all(dir).map_err(|e| StoreError::DataFile {
        path: dir.clone(),
        message: format!("cannot create the data directory: {e}"),
    })?;
    let mut builder = Database::builder();
    builder.set_cache_size(config.cache_bytes);
    // Verify page checksums: a damaged file then fails to open with an error instead of
    // panicking later.
    builder.set_check_integrity_on_open(true);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.len() == 0 => {
            return Err(file_error("the file is empty; it was not created by rkube".into()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_file(dir, &path).map_err(file_error)?,
        Err(e) => return Err(file_error(format!("cannot read: {e}"))),
    }
    builder.open(&path).map_err(|e| file_error(describe_open_error(e)))
}

fn describe_open_error(e: redb::DatabaseError) -> String {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => "already open in another process".into(),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => format!("corrupt: {what}"),
        other => format!("cannot open: {other}"),
    }
}

/// Initialises a new store under a temporary name, then renames it into place, so a crash during
/// creation never leaves a half-made file at the real path.
fn create_file(dir: &Path, path: &Path) -> std::result::Result<(), String> {
    let tmp = dir.join(format!("{DATA_FILE}.creating"));
    let _ = std::fs::remove_file(&tmp);
    let db = Database::create(&tmp).map_err(|e| format!("cannot create: {e}"))?;
    create_tables(&db)?;
    drop(db);
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot move the new file into place: {e}"))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("cannot sync the data directory: {e}"))
}

fn create_tables(db: &Database) -> std::result::Result<(), String> {
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    txn.open_table(META).map_err(|e| e.to_string())?;
    txn.open_table(REVS).map_err(|e| e.to_string())?;
    txn.open_table(VALUES).map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())
}

/// Resolves a requested read revision against a snapshot's current and compacted revisions.
fn read_revision(requested: Option<i64>, current: u64, compacted: u64) -> Result<u64> {
    match requested {
        None | Some(0) => Ok(current),
        Some(r) if r < 0 => Err(StoreError::InvalidRevision(r)),
        Some(r) if (r as u64) < compacted => Err(StoreError::Compacted { requested: r, compacted: compacted as i64 }),
        Some(r) if r as u64 > current => Err(StoreError::FutureRevision { requested: r, current: current as i64 }),
        Some(r) => Ok(r as u64),
    }
}

impl Embedded {
    fn read_at(&self, requested: Option<i64>) -> Result<u64> {
        read_revision(
            requested,
            self.shared.committed.load(Ordering::Acquire),
            self.shared.compacted.load(Ordering::Acquire),
        )
    }

    /// Fails if a read at `at` may have lost versions to a compaction that began meanwhile.
    fn still_readable(&self, at: u64) -> Result<()> {
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if at < compacted {
            return Err(StoreError::Compacted { requested: at as i64, compacted: compacted as i64 });
        }
        Ok(())
    }

    /// Reads the values of versions picked from the index for a read at `at`.
    fn values(&self, at: u64, picked: Vec<(String, Version)>) -> Result<Vec<KeyValue>> {
        // Compaction publishes its target before it trims the index or the disk, so checking
        // after the pick and after the snapshot began proves both saw everything `at` needs.
        self.still_readable(at)?;
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.shared.db.begin_read()?;
        self.still_readable(at)?;
        let values = txn.open_table(VALUES)?;
        picked
            .into_iter()
            .map(|(key, v)| {
                let value = values
                    .get(v.revision)?
                    .ok_or_else(|| layout::corrupt(&format!("revision {} of {key:?} has no value", v.revision)))?;
                Ok(v.to_kv(key, bytes::Bytes::copy_from_slice(value.value())))
            })
            .collect()
    }
}

#[async_trait]
impl StoreBackend for Embedded {
    async fn get(&self, key: &str, revision: Option<i64>) -> Result<Option<KeyValue>> {
        let at = self.read_at(revision)?;
        let picked = self.shared.index.read().expect("index lock").live_at(key, at);
        Ok(self.values(at, picked.map(|v| (key.to_owned(), v)).into_iter().collect())?.pop())
    }

    async fn list(&self, options: &ListOptions) -> Result<ListPage> {
        let at = self.read_at(options.revision)?;
        let limit = options.limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let mut picked = self.shared.index.read().expect("index lock").live_range(
            &options.prefix,
            options.after.as_deref(),
            at,
            limit.saturating_add(1),
        );
        let more = picked.len() > limit;
        picked.truncate(limit);
        Ok(ListPage { items: self.values(at, picked)?, revision: at as i64, more })
    }

    async fn write(&self, write: Write) -> Result<Written> {
        self.command(|reply| Command::Write { write, reply }).await
    }

    async fn watch(&self, options: WatchOptions) -> Result<Watch> {
        history::start_watch(self.shared.clone(), &self.events, options)
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.committed.load(Ordering::Acquire) as i64)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        if revision <= 0 {
            return Err(StoreError::InvalidRevision(revision));
        }
        self.command(|reply| Command::Compact { revision: revision as u64, reply }).await
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.shared.compacted.load(Ordering::Acquire) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_revisions_are_resolved_against_the_snapshot() {
        assert_eq!(read_revision(None, 10, 3).unwrap(), 10);
        assert_eq!(read_revision(Some(0), 10, 3).unwrap(), 10);
        assert_eq!(read_revision(Some(3), 10, 3).unwrap(), 3);
        assert!(matches!(read_revision(Some(2), 10, 3), Err(StoreError::Compacted { requested: 2, compacted: 3 })));
        assert!(matches!(read_revision(Some(11), 10, 3), Err(StoreError::FutureRevision { .. })));
        assert!(matches!(read_revision(Some(-1), 10, 3), Err(StoreError::InvalidRevision(-1))));
    }
}
