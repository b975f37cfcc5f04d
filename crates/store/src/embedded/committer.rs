//! The one thread that writes: group commit, then the index, then broadcast, then replies.
//!
//! Invariants:
//! - a write is acknowledged only after the transaction holding it was committed with
//!   `Durability::Immediate` (fsync);
//! - the index learns a version only after it is durable, and `committed` moves only after the
//!   index has every version up to it, so readers never see a write that could still be lost;
//! - events are broadcast before the acknowledgement, so a watch started after an acknowledged
//!   write never misses it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table};
use tokio::sync::{broadcast, oneshot};

use super::index::{Index, Version};
use super::layout::{INITIAL_REVISION, META, META_COMPACT_DONE, META_COMPACTED, REVS, RevRow, VALUES, corrupt};
use super::{Batch, Shared};
use crate::{Deleted, KeyValue, Result, StoreError, WatchEvent, Write, Written};

pub(super) enum Command {
    Write { write: Write, reply: oneshot::Sender<Result<Written>> },
    Compact { revision: u64, reply: oneshot::Sender<Result<()>> },
}

/// The most commands folded into one transaction.
const MAX_BATCH: usize = 4096;
/// Versions one compaction step removes at most. (Bounded by rows alone, a step reaching a key
/// with thousands of updates removed them all at once and stalled writes for 30 ms.)
const COMPACT_REMOVALS: usize = 128;
/// Rows one compaction step reads at most: reading is cheap, dirtying pages is not.
const COMPACT_ROWS: usize = 256;
/// At most one compaction step per this long, as etcd sleeps between compaction batches, so a
/// write waits behind at most one step (about a millisecond, its fsync included). This still
/// removes up to 32,000 old versions and walks up to 64,000 rows a second.
const COMPACT_PACE: Duration = Duration::from_millis(4);

pub(super) struct State {
    pub revision: u64,
    pub compacted: u64,
    /// Physical compaction has removed what it can below this revision.
    compact_done: u64,
}

impl State {
    /// Reads the store's state and rebuilds the key index from the `revs` table.
    pub(super) fn load(db: &Database, index: &mut Index) -> Result<State> {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let revs = txn.open_table(REVS)?;
        let mut revision = INITIAL_REVISION;
        for row in revs.iter()? {
            let (rev, raw) = row?;
            let row = RevRow::decode(raw.value())?;
            revision = rev.value();
            index.push(
                row.key,
                Version { revision, create_revision: row.create_revision, version: row.version, live: row.live },
            );
        }
        let read = |name| -> Result<u64> { Ok(meta.get(name)?.map(|v| v.value()).unwrap_or(0)) };
        let compacted = read(META_COMPACTED)?;
        Ok(State { revision: revision.max(compacted), compacted, compact_done: read(META_COMPACT_DONE)? })
    }
}

pub(super) fn run(
    shared: Arc<Shared>,
    events: broadcast::Sender<Arc<Batch>>,
    mut state: State,
    commands: Receiver<Command>,
) {
    let mut last_step = Instant::now();
    loop {
        let first = if compaction_pending(&state) {
            match commands.recv_timeout(COMPACT_PACE.saturating_sub(last_step.elapsed())) {
                Ok(cmd) => cmd,
                Err(RecvTimeoutError::Timeout) => {
                    compact(&shared, &mut state);
                    last_step = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match commands.recv() {
                Ok(cmd) => cmd,
                Err(_) => return,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match commands.try_recv() {
                Ok(cmd) => batch.push(cmd),
                Err(_) => break,
            }
        }
        commit_batch(&shared, &events, &mut state, batch);
        // Under load the wait above never times out; steps then come between batches.
        if compaction_pending(&state) && last_step.elapsed() >= COMPACT_PACE {
            compact(&shared, &mut state);
            last_step = Instant::now();
        }
    }
}

fn compaction_pending(state: &State) -> bool {
    state.compact_done < state.compacted
}

fn compact(shared: &Shared, state: &mut State) {
    if let Err(e) = compact_step(shared, state) {
        tracing::error!("store compaction step failed: {e}");
        // Give up on this target. The index already forgot what this step took, but the rows
        // stay on disk until the next start, which indexes them again and resumes from the
        // saved cursor.
        state.compact_done = state.compacted;
    }
}

type WriteReply = (oneshot::Sender<Result<Written>>, Result<Written>);
type CompactReply = (oneshot::Sender<Result<()>>, Result<()>);

/// What one batch changed, to publish once it is durable.
#[derive(Default)]
struct Applied {
    writes: Vec<WriteReply>,
    compacts: Vec<CompactReply>,
    events: Vec<WatchEvent>,
    versions: Vec<(String, Version)>,
}

fn commit_batch(shared: &Shared, events: &broadcast::Sender<Arc<Batch>>, state: &mut State, batch: Vec<Command>) {
    let mut applied = Applied::default();
    let mut revision = state.revision;
    let mut compacted = state.compacted;

    let outcome = (|| -> Result<()> {
        let mut txn = shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Engine(e.to_string()))?;
        {
            let index = shared.index.read().expect("index lock");
            let mut tables = Tables { revs: txn.open_table(REVS)?, values: txn.open_table(VALUES)? };
            // The latest version of each key this batch wrote, which the index does not have yet.
            let mut pending: HashMap<String, Version> = HashMap::new();
            for command in batch {
                match command {
                    Command::Write { write, reply } => {
                        match tables.apply(&index, &mut pending, write, revision + 1)? {
                            Ok((written, event, key, version)) => {
                                revision += 1;
                                applied.events.push(event);
                                applied.versions.push((key, version));
                                applied.writes.push((reply, Ok(written)));
                            }
                            Err(rejected) => applied.writes.push((reply, Err(rejected))),
                        }
                    }
                    Command::Compact { revision: target, reply } => {
                        let result = if target > revision {
                            Err(StoreError::FutureRevision { requested: target as i64, current: revision as i64 })
                        } else if target <= compacted {
                            Err(StoreError::Compacted { requested: target as i64, compacted: compacted as i64 })
                        } else {
                            compacted = target;
                            Ok(())
                        };
                        applied.compacts.push((reply, result));
                    }
                }
            }
            if compacted != state.compacted {
                txn.open_table(META)?.insert(META_COMPACTED, compacted)?;
            }
        }
        // Nothing accepted (every write rejected): no fsync for an empty transaction.
        if applied.events.is_empty() && compacted == state.compacted {
            return Ok(txn.abort()?);
        }
        Ok(txn.commit()?)
    })();

    match outcome {
        Ok(()) => publish(shared, events, state, applied, revision, compacted),
        Err(e) => {
            tracing::error!("store commit failed: {e}");
            let failed = || StoreError::Engine(format!("commit failed: {e}"));
            for (reply, result) in applied.writes {
                let _ = reply.send(result.and_then(|_| Err(failed())));
            }
            for (reply, _) in applied.compacts {
                let _ = reply.send(Err(failed()));
            }
        }
    }
}

/// Makes a durable batch visible: index, then revision, then events, then replies.
fn publish(
    shared: &Shared,
    events: &broadcast::Sender<Arc<Batch>>,
    state: &mut State,
    applied: Applied,
    revision: u64,
    compacted: u64,
) {
    {
        let mut index = shared.index.write().expect("index lock");
        for (key, version) in &applied.versions {
            index.push(key, *version);
        }
    }
    state.revision = revision;
    state.compacted = compacted;
    // The revision first: a read at the old one must not see a compaction past it.
    shared.committed.store(revision, Ordering::Release);
    shared.compacted.store(compacted, Ordering::Release);
    if !applied.events.is_empty() {
        let _ = events.send(Arc::new(Batch { events: applied.events, last_revision: revision }));
    }
    for (reply, result) in applied.writes {
        let _ = reply.send(result);
    }
    for (reply, result) in applied.compacts {
        let _ = reply.send(result);
    }
}

struct Tables<'txn> {
    revs: Table<'txn, u64, &'static [u8]>,
    values: Table<'txn, u64, &'static [u8]>,
}

/// A write's outcome: accepted (with what to publish) or rejected (an error for its caller only).
type Outcome = std::result::Result<(Written, WatchEvent, String, Version), StoreError>;

impl Tables<'_> {
    /// The key's live value as this batch sees it, reading the value only if asked.
    fn current(
        &self,
        index: &Index,
        pending: &HashMap<String, Version>,
        key: &str,
    ) -> Result<Option<(Version, KeyValue)>> {
        let latest = match pending.get(key) {
            Some(v) => Some(*v),
            None => index.version_before(key, u64::MAX),
        };
        let Some(v) = latest.filter(|v| v.live) else { return Ok(None) };
        let value = self
            .values
            .get(v.revision)?
            .ok_or_else(|| corrupt(&format!("revision {} of {key:?} has no value", v.revision)))?;
        Ok(Some((v, v.to_kv(key, bytes::Bytes::copy_from_slice(value.value())))))
    }

    /// Applies one write at `revision`. The outer error is the engine's (it fails the whole
    /// batch); the inner one rejects only this write.
    fn apply(
        &mut self,
        index: &Index,
        pending: &mut HashMap<String, Version>,
        write: Write,
        revision: u64,
    ) -> Result<Outcome> {
        let (key, expected) = match &write {
            Write::Create { key, .. } => (key.clone(), None),
            Write::Update { key, expected_mod_revision, .. } => (key.clone(), Some(*expected_mod_revision)),
            Write::Delete { key, expected_mod_revision } => (key.clone(), *expected_mod_revision),
        };
        let current = if let Write::Create { .. } = write {
            // A create needs only to know the key is absent: no value read.
            let latest = pending.get(&key).copied().or_else(|| index.version_before(&key, u64::MAX));
            if latest.is_some_and(|v| v.live) {
                return Ok(Err(StoreError::AlreadyExists { key }));
            }
            None
        } else {
            let Some((version, kv)) = self.current(index, pending, &key)? else {
                return Ok(Err(StoreError::NotFound { key }));
            };
            if let Some(expected) = expected.filter(|&e| e != kv.mod_revision) {
                return Ok(Err(StoreError::Conflict { key, expected, current: Some(Box::new(kv)) }));
            }
            Some((version, kv))
        };

        let (written, event, version) = match write {
            Write::Create { value, .. } | Write::Update { value, .. } => {
                let version = match &current {
                    Some((v, _)) => {
                        Version { revision, create_revision: v.create_revision, version: v.version + 1, live: true }
                    }
                    None => Version { revision, create_revision: revision, version: 1, live: true },
                };
                self.values.insert(revision, value.as_ref())?;
                let new = version.to_kv(key.clone(), value);
                let event = WatchEvent::Put { kv: new.clone(), prev: current.map(|(_, kv)| kv) };
                (Written::Put(new), event, version)
            }
            Write::Delete { .. } => {
                let (_, prev) = current.expect("checked above");
                let version = Version { revision, create_revision: 0, version: 0, live: false };
                let event =
                    WatchEvent::Delete { key: key.clone(), revision: revision as i64, prev: Some(prev.clone()) };
                (Written::Deleted(Deleted { prev, revision: revision as i64 }), event, version)
            }
        };
        let row = RevRow {
            live: version.live,
            create_revision: version.create_revision,
            version: version.version,
            key: &key,
        };
        self.revs.insert(revision, row.encode().as_slice())?;
        pending.insert(key.clone(), version);
        Ok(Ok((written, event, key, version)))
    }
}

/// Removes a bounded slice of history below the compacted revision: for the keys written in the
/// next rows from `compact_done` on, every version the compacted revision supersedes.
fn compact_step(shared: &Shared, state: &mut State) -> Result<()> {
    let target = state.compacted;
    let mut txn = shared.db.begin_write()?;
    // Durable, though a lost step would only be redone: a non-durable step leaves its pages for
    // the next write's commit to flush, which made that write wait, and for an idle store to
    // write out in a lump long after the work.
    txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Engine(e.to_string()))?;
    let done;
    {
        let mut revs = txn.open_table(REVS)?;
        let mut values = txn.open_table(VALUES)?;
        let rows: Vec<(u64, String)> = revs
            .range(state.compact_done..=target)?
            .take(COMPACT_ROWS)
            .map(|row| {
                let (rev, raw) = row?;
                Ok((rev.value(), RevRow::decode(raw.value())?.key.to_owned()))
            })
            .collect::<Result<_>>()?;
        // Past the last row, only a delete at the target stays; the next compaction starts at
        // the target to drop it.
        let mut next = target;
        let mut budget = COMPACT_REMOVALS;
        // Readers at or after the target never need what goes here, so the index may drop it
        // before the disk does.
        let mut index = shared.index.write().expect("index lock");
        for (rev, key) in &rows {
            let (removed, more) = index.compact_key(key, target, budget);
            for old in &removed {
                revs.remove(old)?;
                values.remove(old)?;
            }
            budget -= removed.len();
            if more {
                next = *rev; // this key is not done: come back to its row
                break;
            }
            next = (rev + 1).min(target);
            if budget == 0 {
                break;
            }
        }
        drop(index);
        if rows.len() < COMPACT_ROWS && budget > 0 {
            next = target;
        }
        done = next;
        txn.open_table(META)?.insert(META_COMPACT_DONE, done)?;
    }
    txn.commit()?;
    state.compact_done = done;
    Ok(())
}
