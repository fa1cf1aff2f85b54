//! The on-disk half of a member: the raft log and hard state in a write-ahead log (`wal.rs`),
//! and a redb file holding the snapshot point, the membership and the applied state machine.
//!
//! The state machine is checkpointed by a background thread that commits what was applied in
//! batches, durably, at most every `CHECKPOINT_EVERY`: the log already holds every applied entry
//! durably, so the hot path never waits for redb. A restarted member loads the last checkpoint
//! and replays the log after it; the log is never compacted past the checkpoint.
//!
//! The log's `fdatasync` runs on a thread of its own (`persist_flushing`): the raft thread
//! awaits it instead of blocking in it, so it goes on polling its connections and is not put
//! to sleep and woken again by the disk, which on a VM costs a halted vCPU's wake-up and lets
//! the scheduler move the thread onto the CPU that takes the disk's interrupts.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{Entry, HardState, SnapshotMetadata};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use super::state::{KvState, Record};
use super::storage::{Backend, Durable, LogState, already_durable};
use super::wal::{SEGMENT_SIZE, Wal};

/// Where versions before the write-ahead log kept the raft log; moved to the WAL on open.
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

const HARD_STATE: &str = "hard_state";
const SNAPSHOT_META: &str = "snapshot_meta";
const APPLIED: &str = "applied_index";
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted_revision";

const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// redb's page cache; the state machine itself lives in memory, so redb is written far more
/// than it is read.
const REDB_CACHE: usize = 8 << 20;

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Disk(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Disk(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    protobuf::ProtobufError
);

/// Work for the checkpoint thread, in apply order.
enum Checkpoint {
    Applied {
        changes: Vec<(String, Option<Record>)>,
        applied: u64,
        revision: u64,
        compacted: u64,
    },
    /// A snapshot replaced the state machine; answered once it is durable.
    Replace {
        records: Vec<(String, Record)>,
        applied: u64,
        revision: u64,
        compacted: u64,
        done: SyncSender<Result<(), StoreError>>,
    },
}

/// What waits for the checkpoint thread. The thread is woken only when work arrives on an empty
/// queue (or a snapshot must be made durable, or the store closes), not once per applied batch:
/// on a busy member that would be a wake-up and a context switch per write.
#[derive(Default)]
struct CheckpointQueue {
    work: Mutex<Queued>,
    arrived: Condvar,
}

#[derive(Default)]
struct Queued {
    items: Vec<Checkpoint>,
    closed: bool,
}

impl CheckpointQueue {
    fn lock(&self) -> MutexGuard<'_, Queued> {
        // Items are pushed and taken whole, so a poisoned queue is still consistent.
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, c: Checkpoint) -> Result<(), StoreError> {
        let urgent = matches!(c, Checkpoint::Replace { .. });
        let mut q = self.lock();
        if q.closed {
            return Err(StoreError::Stopped);
        }
        let was_empty = q.items.is_empty();
        q.items.push(c);
        drop(q);
        if was_empty || urgent {
            self.arrived.notify_one();
        }
        Ok(())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_one();
    }

    /// The next batch: waits for work, then lets more gather for up to `CHECKPOINT_EVERY`
    /// unless a snapshot is waiting or the store is closing. `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Checkpoint>> {
        let mut q = self.lock();
        while q.items.is_empty() {
            if q.closed {
                return None;
            }
            q = self.arrived.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        let deadline = Instant::now() + CHECKPOINT_EVERY;
        loop {
            let urgent = q
                .items
                .iter()
                .any(|c| matches!(c, Checkpoint::Replace { .. }));
            let left = deadline.saturating_duration_since(Instant::now());
            if urgent || q.closed || left.is_zero() {
                return Some(std::mem::take(&mut q.items));
            }
            q = self
                .arrived
                .wait_timeout(q, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A flush for the sync thread: the file to `fdatasync`, and whom to tell.
type Flush = (
    Arc<File>,
    tokio::sync::oneshot::Sender<Result<(), StoreError>>,
);

/// The thread that flushes the write-ahead log, one flush at a time, in order.
struct Syncer {
    jobs: Mutex<Option<Sender<Flush>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    fn start(what: String) -> Result<Self, StoreError> {
        let (jobs, queue) = std::sync::mpsc::channel::<Flush>();
        let thread = std::thread::Builder::new()
            .name("skiff-wal-sync".into())
            .spawn(move || {
                for (file, done) in queue {
                    let r = file
                        .sync_data()
                        .map_err(|e| StoreError::Disk(format!("fdatasync of {what}: {e}")));
                    let _ = done.send(r);
                }
            })
            .map_err(|e| StoreError::Disk(format!("cannot start the WAL sync thread: {e}")))?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `write` (which returns the file to flush) and queues its flush; refuses without
    /// writing once the thread has stopped.
    fn write_and_flush(
        &self,
        write: impl FnOnce() -> Result<Arc<File>, StoreError>,
    ) -> Result<Durable, StoreError> {
        let stopped = || StoreError::Disk("the WAL sync thread has stopped".into());
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let jobs = jobs.as_ref().ok_or_else(stopped)?;
        let file = write()?;
        let (done, durable) = tokio::sync::oneshot::channel();
        jobs.send((file, done)).map_err(|_| stopped())?;
        Ok(durable)
    }

    /// Ends the thread once the flushes queued so far are done.
    fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// A member's files.
pub struct DiskStore {
    db: Arc<Database>,
    wal: Mutex<Wal>,
    /// Where the log is flushed, if not on the caller's thread.
    syncer: Option<Syncer>,
    queue: Arc<CheckpointQueue>,
    checkpoint: Mutex<Option<JoinHandle<()>>>,
    /// The applied index of the last durable checkpoint.
    durable_applied: Arc<AtomicU64>,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskStore")
    }
}

fn u64_bytes(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

fn bytes_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

impl DiskStore {
    /// Opens (or creates) a member's files in `dir` and loads the log and the state machine.
    pub fn open(
        dir: &Path,
        sync_thread: bool,
    ) -> Result<(Arc<Self>, LogState, KvState), StoreError> {
        let db = Database::builder()
            .set_cache_size(REDB_CACHE)
            .create(dir.join("store.redb"))?;
        {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?;
            txn.open_table(META)?;
            txn.open_table(KV)?;
            txn.commit()?;
        }
        let wal_dir = dir.join("wal");
        let fresh_wal = !wal_dir.exists();
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let mut log = LogState::default();
        let mut old_hard_state = None;
        if let Some(v) = meta.get(HARD_STATE)? {
            old_hard_state = Some(HardState::parse_from_bytes(v.value())?);
        }
        if let Some(v) = meta.get(SNAPSHOT_META)? {
            log.snapshot_meta = SnapshotMetadata::parse_from_bytes(v.value())?;
        }
        let get_u64 = |k: &str| -> Result<u64, StoreError> {
            Ok(meta.get(k)?.map_or(0, |v| bytes_u64(v.value())))
        };
        let applied = get_u64(APPLIED)?;
        let revision = get_u64(REVISION)?;
        let compacted = get_u64(COMPACTED)?;
        let mut old_entries = Vec::new();
        if fresh_wal {
            let table = txn.open_table(LOG)?;
            for row in table.range((log.snapshot_meta.index + 1)..)? {
                let (_, v) = row?;
                old_entries.push(Entry::parse_from_bytes(v.value())?);
            }
        }
        let kv = txn.open_table(KV)?;
        let mut state = KvState::new(applied, revision, compacted);
        for row in kv.iter()? {
            let (k, v) = row?;
            let rec = Record::decode(v.value())
                .ok_or_else(|| StoreError::Disk(format!("corrupt record for key {}", k.value())))?;
            state.load(k.value().to_string(), rec);
        }
        drop((meta, kv, txn));
        let (mut wal, replayed) = Wal::open(&wal_dir, SEGMENT_SIZE, log.snapshot_meta.index)?;
        if fresh_wal && (old_hard_state.is_some() || !old_entries.is_empty()) {
            // A data dir from before the write-ahead log: move its log over, then drop it.
            wal.write(&old_entries, old_hard_state.as_ref(), true)?;
            log.entries = old_entries;
            log.hard_state = old_hard_state.unwrap_or_default();
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.delete_table(LOG)?;
            txn.open_table(META)?.remove(HARD_STATE)?;
            txn.commit()?;
        } else {
            log.entries = replayed.entries;
            log.hard_state = replayed.hard_state.unwrap_or_default();
        }
        let db = Arc::new(db);
        let durable_applied = Arc::new(AtomicU64::new(applied));
        let queue = Arc::new(CheckpointQueue::default());
        let thread = {
            let (db, durable, queue) = (db.clone(), durable_applied.clone(), queue.clone());
            std::thread::Builder::new()
                .name("skiff-checkpoint".into())
                .spawn(move || checkpointer(&db, &queue, &durable))
                .map_err(|e| StoreError::Disk(format!("cannot start the checkpoint thread: {e}")))?
        };
        let disk = Self {
            db,
            wal: Mutex::new(wal),
            syncer: if sync_thread {
                Some(Syncer::start(format!(
                    "the write-ahead log in {}",
                    wal_dir.display()
                ))?)
            } else {
                None
            },
            queue,
            checkpoint: Mutex::new(Some(thread)),
            durable_applied,
        };
        Ok((Arc::new(disk), log, state))
    }

    fn wal(&self) -> std::sync::MutexGuard<'_, Wal> {
        self.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues the effect of applied entries for the next checkpoint.
    pub fn save_applied(
        &self,
        changes: Vec<(String, Option<Record>)>,
        applied: u64,
        revision: u64,
        compacted: u64,
    ) -> Result<(), StoreError> {
        self.queue.push(Checkpoint::Applied {
            changes,
            applied,
            revision,
            compacted,
        })
    }

    /// Replaces the whole state machine with a snapshot's; durable when it returns, since the
    /// log that follows starts after the snapshot.
    pub fn save_snapshot_state(&self, state: &KvState) -> Result<(), StoreError> {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        self.queue.push(Checkpoint::Replace {
            records: state.iter().map(|(k, r)| (k.clone(), r.clone())).collect(),
            applied: state.applied_index(),
            revision: state.revision(),
            compacted: state.compacted(),
            done,
        })?;
        answer
            .recv()
            .map_err(|_| StoreError::Disk("the checkpoint thread stopped".into()))?
    }

    /// The applied index of the last durable checkpoint: the log must be kept after it.
    pub fn durable_applied(&self) -> u64 {
        self.durable_applied.load(Ordering::Acquire)
    }

    /// The same index, shared, for status reports.
    pub fn durable_applied_handle(&self) -> Arc<AtomicU64> {
        self.durable_applied.clone()
    }

    /// Writes the last checkpoint and stops its thread (the node loop ends).
    pub fn close(&self) {
        if let Some(s) = &self.syncer {
            s.stop();
        }
        let taken = self
            .checkpoint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = taken {
            self.queue.close();
            let _ = thread.join();
        }
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn checkpointer(db: &Database, queue: &CheckpointQueue, durable: &AtomicU64) {
    while let Some(batch) = queue.next_batch() {
        let result = commit_batch(db, &batch);
        match &result {
            Ok(applied) => durable.store(*applied, Ordering::Release),
            // The log keeps everything after the last good checkpoint; nothing is lost.
            Err(e) => tracing::error!(error = %e, "state machine checkpoint failed"),
        }
        for c in batch {
            if let Checkpoint::Replace { done, .. } = c {
                let _ = done.send(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| StoreError::Disk(e.to_string())),
                );
            }
        }
    }
}

/// Writes a batch in one durable transaction; returns the applied index it reflects.
fn commit_batch(db: &Database, batch: &[Checkpoint]) -> Result<u64, StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    let mut last = (0, 0, 0);
    for c in batch {
        match c {
            Checkpoint::Applied {
                changes,
                applied,
                revision,
                compacted,
            } => {
                let mut kv = txn.open_table(KV)?;
                for (k, rec) in changes {
                    match rec {
                        Some(r) => {
                            kv.insert(k.as_str(), r.encode().as_slice())?;
                        }
                        None => {
                            kv.remove(k.as_str())?;
                        }
                    }
                }
                last = (*applied, *revision, *compacted);
            }
            Checkpoint::Replace {
                records,
                applied,
                revision,
                compacted,
                ..
            } => {
                txn.delete_table(KV)?;
                let mut kv = txn.open_table(KV)?;
                for (k, r) in records {
                    kv.insert(k.as_str(), r.encode().as_slice())?;
                }
                last = (*applied, *revision, *compacted);
            }
        }
    }
    {
        let mut meta = txn.open_table(META)?;
        meta.insert(APPLIED, u64_bytes(last.0).as_slice())?;
        meta.insert(REVISION, u64_bytes(last.1).as_slice())?;
        meta.insert(COMPACTED, u64_bytes(last.2).as_slice())?;
    }
    txn.commit()?;
    Ok(last.0)
}

impl Backend for DiskStore {
    fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError> {
        self.wal().write(entries, hs, sync)
    }

    fn persist_flushing(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<Durable, StoreError> {
        let Some(syncer) = &self.syncer else {
            self.persist(entries, hs, true)?;
            return Ok(already_durable());
        };
        syncer.write_and_flush(|| {
            let mut wal = self.wal();
            wal.write(entries, hs, false)?;
            Ok(wal.sync_handle())
        })
    }

    fn reset_log(&self, hs: &HardState) -> Result<(), StoreError> {
        self.wal().reset(hs)
    }

    fn set_snapshot_meta(&self, meta: &SnapshotMetadata) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(META)?
            .insert(SNAPSHOT_META, meta.write_to_bytes()?.as_slice())?;
        txn.commit()?;
        self.wal().purge(meta.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            index,
            term: 1,
            data: vec![index as u8; 10].into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_write_flushed_on_the_sync_thread_is_there_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, log, _) = DiskStore::open(dir.path(), true).unwrap();
        assert!(log.entries.is_empty());
        let hs = HardState {
            term: 1,
            vote: 1,
            ..Default::default()
        };
        let durable = disk
            .persist_flushing(&[entry(1), entry(2)], Some(&hs))
            .unwrap();
        durable.await.unwrap().unwrap();
        disk.persist_flushing(&[entry(3)], None)
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        disk.close();
        // Once closed, a flush is refused and says why; it never hangs.
        let err = disk.persist_flushing(&[entry(4)], None).unwrap_err();
        assert!(err.to_string().contains("sync thread"), "{err}");
        drop(disk);

        let (_, log, _) = DiskStore::open(dir.path(), true).unwrap();
        let indexes: Vec<u64> = log.entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 2, 3]);
        assert_eq!(log.hard_state, hs);
    }
}
