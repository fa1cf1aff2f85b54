//! The raft log, hard state and conf state: raft-rs's `Storage` over an in-memory cache that is
//! written through to a `Backend` (redb on disk, or nothing in unit tests).
//!
//! raft-rs reads the log through `Storage` and never writes it; the node loop writes it with
//! `persist` (a `Ready`'s entries and hard state in one write), `apply_snapshot` and `compact`.
//! Each is durable when it returns, except a hard state that only moved the commit index: raft
//! re-learns the commit index from the leader, so it is written but not synced (etcd's rule).
//! `persist_async` is `persist` whose flush, if one is needed, runs on the backend's own thread:
//! the node loop awaits it, and the raft thread goes on serving its connections meanwhile.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::StoreError;

/// A write on its way to disk: answers once it is durable (or why it could not be made so).
pub type Durable = tokio::sync::oneshot::Receiver<Result<(), StoreError>>;

/// A `Durable` for a write that already is.
pub fn already_durable() -> Durable {
    let (done, durable) = tokio::sync::oneshot::channel();
    let _ = done.send(Ok(()));
    durable
}

/// Where the raft log is made durable.
pub trait Backend: Send + Sync + 'static {
    /// Appends log entries (overwriting from `entries[0].index` on, dropping any later ones),
    /// then the hard state (term, vote, commit); durable when it returns if `sync`.
    fn persist(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        sync: bool,
    ) -> Result<(), StoreError>;
    /// Voids the whole log (a snapshot replaced it) and records `hs`, durably.
    fn reset_log(&self, hs: &HardState) -> Result<(), StoreError>;
    /// Records the membership and the snapshot point after a snapshot or compaction, durably;
    /// log entries up to and including `meta.index` are no longer needed.
    fn set_snapshot_meta(&self, meta: &SnapshotMetadata) -> Result<(), StoreError>;
    /// `persist` with `sync`, except that the flush may run off the caller's thread: the write
    /// is durable once what this returns answers. By default it is flushed before returning.
    fn persist_flushing(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<Durable, StoreError> {
        self.persist(entries, hs, true)?;
        Ok(already_durable())
    }
}

/// A backend that keeps nothing: for in-memory clusters in tests.
#[derive(Debug, Default)]
pub struct MemoryBackend;

impl Backend for MemoryBackend {
    fn persist(&self, _: &[Entry], _: Option<&HardState>, _: bool) -> Result<(), StoreError> {
        Ok(())
    }
    fn reset_log(&self, _: &HardState) -> Result<(), StoreError> {
        Ok(())
    }
    fn set_snapshot_meta(&self, _: &SnapshotMetadata) -> Result<(), StoreError> {
        Ok(())
    }
}

/// What a member's log looks like when it starts: loaded from the backend.
#[derive(Debug, Default, Clone)]
pub struct LogState {
    pub hard_state: HardState,
    pub snapshot_meta: SnapshotMetadata,
    pub entries: Vec<Entry>,
}

/// Makes the state machine's image for a snapshot: its bytes and the index it reflects.
pub type SnapshotSource = Arc<dyn Fn() -> (Vec<u8>, u64) + Send + Sync>;

#[derive(Default)]
struct Core {
    hard_state: HardState,
    snapshot_meta: SnapshotMetadata,
    entries: Vec<Entry>,
    /// Where a snapshot for a lagging or new member comes from: made on demand, at the applied
    /// index, so it always carries the current membership.
    snapshot_source: Option<SnapshotSource>,
}

impl Core {
    fn first_index(&self) -> u64 {
        self.entries
            .first()
            .map_or(self.snapshot_meta.index + 1, |e| e.index)
    }
    fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot_meta.index, |e| e.index)
    }
}

/// raft-rs `Storage` for one member. Cheap to clone: the node loop and raft share it.
#[derive(Clone)]
pub struct LogStore {
    core: Arc<RwLock<Core>>,
    backend: Arc<dyn Backend>,
}

impl LogStore {
    /// Opens a log from what the backend had stored.
    pub fn new(state: LogState, backend: Arc<dyn Backend>) -> Self {
        let core = Core {
            hard_state: state.hard_state,
            snapshot_meta: state.snapshot_meta,
            entries: state.entries,
            snapshot_source: None,
        };
        Self {
            core: Arc::new(RwLock::new(core)),
            backend,
        }
    }

    fn rl(&self) -> RwLockReadGuard<'_, Core> {
        self.core.read().unwrap_or_else(|e| e.into_inner())
    }
    fn wl(&self) -> RwLockWriteGuard<'_, Core> {
        self.core.write().unwrap_or_else(|e| e.into_inner())
    }

    /// True when this member has never been part of a cluster (no conf state yet).
    pub fn is_empty(&self) -> bool {
        let c = self.rl();
        c.snapshot_meta.get_conf_state().voters.is_empty() && c.entries.is_empty()
    }

    /// Seeds a brand-new member of a brand-new cluster with the initial membership, as a
    /// snapshot at index 1, term 1 would (every initial member does the same, so they agree).
    /// The log then starts at index 2: a member that joins later with an empty log is always
    /// sent a snapshot, which carries the membership, rather than entries that do not.
    pub fn bootstrap(&self, voters: Vec<u64>) -> Result<(), StoreError> {
        let mut meta = SnapshotMetadata {
            index: 1,
            term: 1,
            ..Default::default()
        };
        meta.mut_conf_state().voters = voters;
        let hs = HardState {
            term: 1,
            commit: 1,
            ..Default::default()
        };
        self.backend.set_snapshot_meta(&meta)?;
        self.backend.persist(&[], Some(&hs), true)?;
        let mut core = self.wl();
        core.snapshot_meta = meta;
        core.hard_state = hs;
        Ok(())
    }

    /// Sets where snapshots for other members come from.
    pub fn set_snapshot_source(&self, source: SnapshotSource) {
        self.wl().snapshot_source = Some(source);
    }

    /// The index the log starts after (the last snapshot or compaction point).
    pub fn snapshot_index(&self) -> u64 {
        self.rl().snapshot_meta.index
    }

    /// Persists a `Ready`'s entries (replacing any conflicting suffix) and hard state in one
    /// write, synced unless all that changed is the commit index.
    pub fn persist(&self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), StoreError> {
        self.write(entries, hs, false).map(|_| ())
    }

    /// `persist`, except that a write that must be synced is flushed on the backend's thread:
    /// it is durable once what this returns (if anything) answers. raft may read the entries
    /// meanwhile; nothing that depends on their durability may happen until then.
    pub fn persist_async(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<Option<Durable>, StoreError> {
        self.write(entries, hs, true)
    }

    fn write(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
        flush_elsewhere: bool,
    ) -> Result<Option<Durable>, StoreError> {
        if entries.is_empty() && hs.is_none() {
            return Ok(None);
        }
        let mut core = self.wl();
        if let Some(first) = entries.first()
            && first.index < core.first_index()
        {
            return Err(StoreError::Raft(format!(
                "append at index {} is below the first index {}",
                first.index,
                core.first_index()
            )));
        }
        let sync = !entries.is_empty()
            || hs.is_some_and(|h| h.term != core.hard_state.term || h.vote != core.hard_state.vote);
        let durable = if sync && flush_elsewhere {
            Some(self.backend.persist_flushing(entries, hs)?)
        } else {
            self.backend.persist(entries, hs, sync)?;
            None
        };
        if let Some(first) = entries.first() {
            let keep = (first.index - core.first_index()) as usize;
            core.entries.truncate(keep);
            core.entries.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            core.hard_state = hs.clone();
        }
        Ok(durable)
    }

    pub fn hard_state(&self) -> HardState {
        self.rl().hard_state.clone()
    }

    pub fn set_conf_state(&self, cs: ConfState) -> Result<(), StoreError> {
        let mut core = self.wl();
        let mut meta = core.snapshot_meta.clone();
        meta.set_conf_state(cs);
        self.backend.set_snapshot_meta(&meta)?;
        core.snapshot_meta = meta;
        Ok(())
    }

    pub fn conf_state(&self) -> ConfState {
        self.rl().snapshot_meta.get_conf_state().clone()
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> Result<(), StoreError> {
        let meta = snap.get_metadata().clone();
        let mut core = self.wl();
        self.backend.set_snapshot_meta(&meta)?;
        core.hard_state.term = core.hard_state.term.max(meta.term);
        core.hard_state.commit = core.hard_state.commit.max(meta.index);
        self.backend.reset_log(&core.hard_state)?;
        core.entries.clear();
        core.snapshot_meta = meta;
        Ok(())
    }

    /// Drops the log up to and including `index`, which must already be applied.
    pub fn compact(&self, index: u64) -> Result<(), StoreError> {
        let mut core = self.wl();
        if index < core.first_index() || index > core.last_index() {
            return Ok(());
        }
        let term = core.entries[(index - core.first_index()) as usize].term;
        let mut meta = core.snapshot_meta.clone();
        meta.index = index;
        meta.term = term;
        self.backend.set_snapshot_meta(&meta)?;
        let drop = (index + 1 - core.first_index()) as usize;
        core.entries.drain(..drop);
        core.snapshot_meta = meta;
        Ok(())
    }

    /// Number of entries kept in the log.
    pub fn len(&self) -> usize {
        self.rl().entries.len()
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let c = self.rl();
        Ok(RaftState::new(
            c.hard_state.clone(),
            c.snapshot_meta.get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let c = self.rl();
        if low < c.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > c.last_index() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let offset = c.first_index();
        let mut out = Vec::new();
        let mut size = 0u64;
        let max = max_size.into().unwrap_or(u64::MAX);
        for e in &c.entries[(low - offset) as usize..(high - offset) as usize] {
            size += u64::from(e.compute_size());
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let c = self.rl();
        if idx == c.snapshot_meta.index {
            return Ok(c.snapshot_meta.term);
        }
        if idx < c.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > c.last_index() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(c.entries[(idx - c.first_index()) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.rl().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.rl().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable);
        // The source takes the state machine's lock: call it without holding ours.
        let source = self.rl().snapshot_source.clone().ok_or_else(unavailable)?;
        let (data, index) = source();
        if index < request_index {
            return Err(unavailable());
        }
        let term = self.term(index)?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn append_replaces_conflicting_suffix_and_compact_keeps_term() {
        let s = LogStore::new(LogState::default(), Arc::new(MemoryBackend));
        s.persist(&[entry(1, 1), entry(2, 1), entry(3, 1)], None)
            .unwrap();
        s.persist(&[entry(3, 2), entry(4, 2)], None).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        s.compact(2).unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert!(matches!(
            s.entries(1, 3, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let got = s
            .entries(3, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(got.len(), 2);
    }
}
