//! The one thread that writes: group commit, then acknowledgement, then broadcast.
//!
//! Invariant: a write is acknowledged only after the transaction holding it has been committed
//! with `Durability::Immediate` (fsync), and its events are broadcast before the acknowledgement,
//! so a watch started after an acknowledged write never misses it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};

use redb::{Database, Durability, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::layout::{
    INITIAL_REVISION, KV, Kind, LOG, META, META_COMPACT_DONE, META_COMPACTED, META_REVISION, Record, read_meta,
    version_at, version_key, versions_through,
};
use super::{Batch, Shared};
use crate::{Deleted, KeyValue, Result, StoreError, WatchEvent, Write, Written};

pub(super) enum Command {
    Write { write: Write, reply: oneshot::Sender<Result<Written>> },
    Compact { revision: u64, reply: oneshot::Sender<Result<()>> },
}

/// The most commands folded into one transaction.
const MAX_BATCH: usize = 4096;
/// Log rows one compaction step handles, so a step holds the write lock for about a millisecond.
const COMPACT_STEP: usize = 256;

pub(super) struct State {
    pub revision: u64,
    pub compacted: u64,
    /// Physical compaction has removed what it can below this revision.
    compact_done: u64,
}

impl State {
    pub(super) fn load(db: &Database) -> Result<State> {
        let txn = db.begin_write()?;
        let state = {
            let meta = txn.open_table(META)?;
            // Creating the other tables here lets readers open them unconditionally.
            txn.open_table(KV)?;
            txn.open_table(LOG)?;
            let compacted = read_meta(&meta, META_COMPACTED, 0)?;
            State {
                revision: read_meta(&meta, META_REVISION, INITIAL_REVISION)?,
                compacted,
                compact_done: read_meta(&meta, META_COMPACT_DONE, compacted)?,
            }
        };
        txn.commit()?;
        Ok(state)
    }
}

pub(super) fn run(shared: Arc<Shared>, mut state: State, commands: Receiver<Command>) {
    loop {
        let first = if state.compact_done < state.compacted {
            // Compaction work is pending: do it only while no writes wait.
            match commands.try_recv() {
                Ok(cmd) => cmd,
                Err(TryRecvError::Empty) => {
                    if let Err(e) = compact_step(&shared.db, &mut state) {
                        tracing::error!("store compaction step failed: {e}");
                        state.compact_done = state.compacted;
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => return,
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
        commit_batch(&shared, &mut state, batch);
    }
}

type WriteReply = (oneshot::Sender<Result<Written>>, Result<Written>);
type CompactReply = (oneshot::Sender<Result<()>>, Result<()>);

fn commit_batch(shared: &Shared, state: &mut State, batch: Vec<Command>) {
    let mut writes: Vec<WriteReply> = Vec::with_capacity(batch.len());
    let mut compacts: Vec<CompactReply> = Vec::new();
    let mut events = Vec::new();
    let mut revision = state.revision;
    let mut compacted = state.compacted;

    let outcome = (|| -> Result<()> {
        let mut txn = shared.db.begin_write()?;
        txn.set_durability(Durability::Immediate).map_err(|e| StoreError::Engine(e.to_string()))?;
        {
            let mut kv = txn.open_table(KV)?;
            let mut log = txn.open_table(LOG)?;
            for command in batch {
                match command {
                    Command::Write { write, reply } => match apply(&mut kv, &mut log, write, revision + 1)? {
                        Ok((written, event)) => {
                            revision += 1;
                            events.push(event);
                            writes.push((reply, Ok(written)));
                        }
                        Err(rejected) => writes.push((reply, Err(rejected))),
                    },
                    Command::Compact { revision: target, reply } => {
                        let result = if target > revision {
                            Err(StoreError::FutureRevision { requested: target as i64, current: revision as i64 })
                        } else if target <= compacted {
                            Err(StoreError::Compacted { requested: target as i64, compacted: compacted as i64 })
                        } else {
                            compacted = target;
                            Ok(())
                        };
                        compacts.push((reply, result));
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(META_REVISION, revision)?;
            meta.insert(META_COMPACTED, compacted)?;
        }
        commit(txn)
    })();

    match outcome {
        Ok(()) => {
            state.revision = revision;
            state.compacted = compacted;
            shared.compacted.store(compacted, Ordering::Release);
            if !events.is_empty() {
                let _ = shared.events.send(Arc::new(Batch { events, last_revision: revision }));
                shared.published.store(revision, Ordering::Release);
            }
            for (reply, result) in writes {
                let _ = reply.send(result);
            }
            for (reply, result) in compacts {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!("store commit failed: {e}");
            let failed = || StoreError::Engine(format!("commit failed: {e}"));
            for (reply, result) in writes {
                let _ = reply.send(result.and_then(|_| Err(failed())));
            }
            for (reply, _) in compacts {
                let _ = reply.send(Err(failed()));
            }
        }
    }
}

fn commit(txn: WriteTransaction) -> Result<()> {
    Ok(txn.commit()?)
}

type Applied = std::result::Result<(Written, WatchEvent), StoreError>;

/// Applies one write at `revision`. The outer error is the engine's (it fails the whole batch);
/// the inner one rejects only this write.
fn apply(
    kv: &mut Table<&'static [u8], &'static [u8]>,
    log: &mut Table<u64, &'static str>,
    write: Write,
    revision: u64,
) -> Result<Applied> {
    let (key, expected) = match &write {
        Write::Create { key, .. } => (key, None),
        Write::Update { key, expected_mod_revision, .. } => (key, Some(*expected_mod_revision)),
        Write::Delete { key, expected_mod_revision } => (key, *expected_mod_revision),
    };
    let current: Option<KeyValue> = version_at(kv, key.as_bytes(), u64::MAX)?.and_then(|(_, live)| live);
    if let Write::Create { .. } = write {
        if current.is_some() {
            return Ok(Err(StoreError::AlreadyExists { key: key.clone() }));
        }
    } else {
        let Some(current) = &current else {
            return Ok(Err(StoreError::NotFound { key: key.clone() }));
        };
        if let Some(expected) = expected.filter(|&e| e != current.mod_revision) {
            return Ok(Err(StoreError::Conflict {
                key: key.clone(),
                expected,
                current: Some(Box::new(current.clone())),
            }));
        }
    }
    log.insert(revision, key.as_str())?;
    let vkey = version_key(key.as_bytes(), revision);
    Ok(Ok(match write {
        Write::Create { key, value } | Write::Update { key, value, .. } => {
            let (create_revision, version) = match &current {
                Some(c) => (c.create_revision as u64, c.version as u64 + 1),
                None => (revision, 1),
            };
            kv.insert(vkey.as_slice(), Record::encode(Kind::Put, create_revision, version, &value).as_slice())?;
            let new = KeyValue {
                key,
                value,
                create_revision: create_revision as i64,
                mod_revision: revision as i64,
                version: version as i64,
            };
            (Written::Put(new.clone()), WatchEvent::Put { kv: new, prev: current })
        }
        Write::Delete { key, .. } => {
            kv.insert(vkey.as_slice(), Record::encode(Kind::Tombstone, 0, 0, &[]).as_slice())?;
            let prev = current.expect("checked above");
            let event = WatchEvent::Delete { key, revision: revision as i64, prev: Some(prev.clone()) };
            (Written::Deleted(Deleted { prev, revision: revision as i64 }), event)
        }
    }))
}

/// Removes a bounded slice of history below the compacted revision. For each logged revision
/// `r` in `[compact_done, compacted]`, older versions of its key are removed: `r` supersedes them
/// at every readable revision. Tombstones and log rows below `compacted` go too. The log row at
/// `compacted` stays: a watch may still start there.
fn compact_step(db: &Database, state: &mut State) -> Result<()> {
    let target = state.compacted;
    let mut txn = db.begin_write()?;
    // Losing a step in a crash only means redoing it, so it need not wait for the disk; the next
    // durable commit carries it.
    txn.set_durability(Durability::None).map_err(|e| StoreError::Engine(e.to_string()))?;
    let done;
    {
        let mut kv = txn.open_table(KV)?;
        let mut log = txn.open_table(LOG)?;
        let rows: Vec<(u64, String)> = log
            .range(state.compact_done..=target)?
            .take(COMPACT_STEP)
            .map(|row| row.map(|(r, k)| (r.value(), k.value().to_owned())))
            .collect::<std::result::Result<_, _>>()?;
        let finished = rows.len() < COMPACT_STEP;
        for (rev, key) in &rows {
            let (lo, hi) = versions_through(key.as_bytes(), rev - 1);
            let older: Vec<Vec<u8>> = kv
                .range(lo.as_slice()..=hi.as_slice())?
                .map(|row| row.map(|(k, _)| k.value().to_vec()))
                .collect::<std::result::Result<_, _>>()?;
            for old in older {
                kv.remove(old.as_slice())?;
            }
            if *rev < target {
                let vkey = version_key(key.as_bytes(), *rev);
                let tombstone = match kv.get(vkey.as_slice())? {
                    Some(v) => Record::decode(v.value())?.kind == Kind::Tombstone,
                    None => false,
                };
                if tombstone {
                    kv.remove(vkey.as_slice())?;
                }
                log.remove(*rev)?;
            }
        }
        done = if finished { target } else { rows.last().map_or(target, |(r, _)| r + 1) };
        txn.open_table(META)?.insert(META_COMPACT_DONE, done)?;
    }
    commit(txn)?;
    state.compact_done = done;
    Ok(())
}
