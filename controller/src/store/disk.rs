//! The on-disk half of a member: one redb file holding the raft log, hard state, snapshot point
//! and the applied state machine, so a restarted member resumes from its last applied index.

use std::path::Path;
use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::{Entry, HardState, SnapshotMetadata};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;
use super::state::{KvState, Record};
use super::storage::{Backend, LogState};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

const HARD_STATE: &str = "hard_state";
const SNAPSHOT_META: &str = "snapshot_meta";
const APPLIED: &str = "applied_index";
const REVISION: &str = "revision";
const COMPACTED: &str = "compacted_revision";

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

/// A member's redb file.
pub struct DiskStore {
    db: Database,
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
    /// Opens (or creates) the store and loads the log and the state machine from it.
    pub fn open(path: &Path) -> Result<(Arc<Self>, LogState, KvState), StoreError> {
        let db = Database::create(path)?;
        {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?;
            txn.open_table(META)?;
            txn.open_table(KV)?;
            txn.commit()?;
        }
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        let mut log = LogState::default();
        if let Some(v) = meta.get(HARD_STATE)? {
            log.hard_state = HardState::parse_from_bytes(v.value())?;
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
        let table = txn.open_table(LOG)?;
        for row in table.range((log.snapshot_meta.index + 1)..)? {
            let (_, v) = row?;
            log.entries.push(Entry::parse_from_bytes(v.value())?);
        }
        let kv = txn.open_table(KV)?;
        let mut state = KvState::new(applied, revision, compacted);
        for row in kv.iter()? {
            let (k, v) = row?;
            let rec = Record::decode(v.value())
                .ok_or_else(|| StoreError::Disk(format!("corrupt record for key {}", k.value())))?;
            state.load(k.value().to_string(), rec);
        }
        drop((meta, table, kv, txn));
        Ok((Arc::new(Self { db }), log, state))
    }

    /// Writes the effect of applied entries: changed keys, applied index and revision, in one
    /// transaction. Not fsynced by itself: the next durable log write makes it durable, and until
    /// then a restart replays the same entries from the durable applied index.
    pub fn save_applied(
        &self,
        changes: &[(String, Option<Record>)],
        applied: u64,
        revision: u64,
        compacted: u64,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::None)?;
        {
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
            let mut meta = txn.open_table(META)?;
            meta.insert(APPLIED, u64_bytes(applied).as_slice())?;
            meta.insert(REVISION, u64_bytes(revision).as_slice())?;
            meta.insert(COMPACTED, u64_bytes(compacted).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces the whole state machine with a snapshot's.
    pub fn save_snapshot_state(&self, state: &KvState) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            txn.delete_table(KV)?;
            let mut kv = txn.open_table(KV)?;
            for (k, r) in state.iter() {
                kv.insert(k.as_str(), r.encode().as_slice())?;
            }
            let mut meta = txn.open_table(META)?;
            meta.insert(APPLIED, u64_bytes(state.applied_index()).as_slice())?;
            meta.insert(REVISION, u64_bytes(state.revision()).as_slice())?;
            meta.insert(COMPACTED, u64_bytes(state.compacted()).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn durable_write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        f(&txn)?;
        txn.commit()?;
        Ok(())
    }
}

impl Backend for DiskStore {
    fn append(&self, entries: &[Entry], truncate_after: u64) -> Result<(), StoreError> {
        self.durable_write(|txn| {
            let mut log = txn.open_table(LOG)?;
            log.retain_in(truncate_after.., |_, _| false)?;
            for e in entries {
                log.insert(e.index, e.write_to_bytes()?.as_slice())?;
            }
            Ok(())
        })
    }

    fn set_hard_state(&self, hs: &HardState) -> Result<(), StoreError> {
        self.durable_write(|txn| {
            txn.open_table(META)?
                .insert(HARD_STATE, hs.write_to_bytes()?.as_slice())?;
            Ok(())
        })
    }

    fn set_snapshot_meta(&self, meta: &SnapshotMetadata) -> Result<(), StoreError> {
        self.durable_write(|txn| {
            txn.open_table(META)?
                .insert(SNAPSHOT_META, meta.write_to_bytes()?.as_slice())?;
            txn.open_table(LOG)?
                .retain_in(..=meta.index, |_, _| false)?;
            Ok(())
        })
    }
}
