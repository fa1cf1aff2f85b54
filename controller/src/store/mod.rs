//! The store: raft-replicated, revisioned key-value state with watches. `Store` is the handle
//! the API server and controllers use; the node loop (`node`) owns raft and applies writes.

mod disk;
mod node;
pub mod state;
pub mod storage;
pub mod transport;
pub mod watch;

use std::path::PathBuf;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use state::{Applied, Command, Event, KvState, Precondition, Record};
pub use watch::{Subscription, TooOld};

use storage::{LogState, LogStore, MemoryBackend};
use transport::Transport;
use watch::WatchHub;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk: {0}")]
    Disk(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no leader is known yet; retry")]
    NoLeader,
    #[error("the store is shutting down")]
    Stopped,
    #[error("precondition failed for key {key}")]
    PreconditionFailed { key: String, actual: Option<Record> },
    #[error("resource version {requested} is too old; the oldest available is {oldest}")]
    TooOld { requested: u64, oldest: u64 },
}

/// How to start a member.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This member's raft id (non-zero).
    pub id: u64,
    /// Every voter of the initial cluster, this member included.
    pub voters: Vec<u64>,
    /// Where the redb file lives; `None` keeps everything in memory (tests).
    pub data_dir: Option<PathBuf>,
    /// How many events the watch cache keeps.
    pub watch_history: usize,
    /// Applied entries kept in the raft log before it is compacted behind a snapshot.
    pub log_keep: u64,
}

impl StoreConfig {
    pub fn single(data_dir: Option<PathBuf>) -> Self {
        Self {
            id: 1,
            voters: vec![1],
            data_dir,
            watch_history: 20_000,
            log_keep: 10_000,
        }
    }
}

/// A started member: its handle, the inbox for raft messages from peers, and the node loop task
/// (which ends after the cancellation token fires and the store file is closed).
pub struct Started {
    pub store: Store,
    pub inbox: mpsc::Sender<raft::prelude::Message>,
    pub task: tokio::task::JoinHandle<()>,
}

pub(crate) struct Proposal {
    cmd: Command,
    reply: oneshot::Sender<Result<Applied, StoreError>>,
}

struct Inner {
    state: RwLock<KvState>,
    hub: WatchHub,
    proposals: mpsc::Sender<Proposal>,
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the member's storage and starts its node loop on the current tokio runtime.
    /// Returns the handle and the sender for raft messages arriving from peers.
    pub fn start(
        config: StoreConfig,
        transport: Arc<dyn Transport>,
        cancel: CancellationToken,
    ) -> Result<Started, StoreError> {
        let (log, state, disk) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Disk(format!("cannot create {}: {e}", dir.display()))
                })?;
                let (disk, log_state, kv) = disk::DiskStore::open(&dir.join("store.redb"))?;
                let backend: Arc<dyn storage::Backend> = disk.clone();
                (LogStore::new(log_state, backend), kv, Some(disk))
            }
            None => (
                LogStore::new(LogState::default(), Arc::new(MemoryBackend)),
                KvState::default(),
                None,
            ),
        };
        if log.is_empty() {
            log.bootstrap(config.voters.clone())?;
        }
        let (ptx, prx) = mpsc::channel(4096);
        let (mtx, mrx) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            hub: WatchHub::new(state.revision(), config.watch_history),
            state: RwLock::new(state),
            proposals: ptx,
        });
        let node = node::Node::new(&config, log, disk, inner.clone(), transport)?;
        let task = tokio::spawn(node.run(prx, mrx, cancel));
        Ok(Started {
            store: Self { inner },
            inbox: mtx,
            task,
        })
    }

    fn state(&self) -> RwLockReadGuard<'_, KvState> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's current revision.
    pub fn revision(&self) -> u64 {
        self.state().revision()
    }

    pub fn get(&self, key: &str) -> Option<Record> {
        self.state().get(key).cloned()
    }

    /// Every key under `prefix` and the revision the listing reflects.
    pub fn list(&self, prefix: &str) -> (Vec<(String, Record)>, u64) {
        let s = self.state();
        let items = s
            .range_prefix(prefix)
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect();
        (items, s.revision())
    }

    /// Counts keys under `prefix` without copying them.
    pub fn count(&self, prefix: &str) -> usize {
        self.state().range_prefix(prefix).count()
    }

    /// Proposes a command and waits until it is applied on this member.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { cmd, reply: tx })
            .await
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    /// Writes `value` at `key` if `precondition` holds; returns the stored record and the previous one.
    pub async fn put(
        &self,
        key: &str,
        value: Vec<u8>,
        precondition: Precondition,
    ) -> Result<(Record, Option<Record>), StoreError> {
        let applied = self
            .propose(Command::Put {
                key: key.to_string(),
                value,
                precondition,
            })
            .await?;
        match applied {
            Applied::Done {
                record: Some(r),
                prev,
                ..
            } => Ok((r, prev)),
            Applied::Done { record: None, .. } => Err(StoreError::Raft(format!(
                "put of {key} applied without a record"
            ))),
            Applied::PreconditionFailed { actual } => Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                actual,
            }),
        }
    }

    /// Deletes `key` if `precondition` holds; returns the deleted record and the delete revision.
    pub async fn delete(
        &self,
        key: &str,
        precondition: Precondition,
    ) -> Result<(Record, u64), StoreError> {
        let applied = self
            .propose(Command::Delete {
                key: key.to_string(),
                precondition,
            })
            .await?;
        match applied {
            Applied::Done {
                prev: Some(p),
                revision,
                ..
            } => Ok((p, revision)),
            Applied::Done { prev: None, .. } => Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                actual: None,
            }),
            Applied::PreconditionFailed { actual } => Err(StoreError::PreconditionFailed {
                key: key.to_string(),
                actual,
            }),
        }
    }

    /// Subscribes to every event after revision `after`.
    pub fn watch(&self, after: u64) -> Result<Subscription, StoreError> {
        self.inner
            .hub
            .subscribe(after)
            .map_err(|TooOld { oldest }| StoreError::TooOld {
                requested: after,
                oldest,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn single_member_put_get_watch_and_restart() {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let cfg = StoreConfig::single(Some(dir.path().to_path_buf()));
        let started =
            Store::start(cfg.clone(), Arc::new(transport::LocalOnly), cancel.clone()).unwrap();
        let store = started.store;
        let mut sub = store.watch(0).unwrap();
        let (r, prev) = store
            .put("/a", b"one".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        assert!(prev.is_none());
        assert_eq!(r.mod_revision, 1);
        let err = store
            .put("/a", b"two".to_vec(), Precondition::ModRevision(99))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::PreconditionFailed { .. }));
        store
            .put("/a", b"two".to_vec(), Precondition::ModRevision(1))
            .await
            .unwrap();
        store
            .put("/b", b"x".to_vec(), Precondition::None)
            .await
            .unwrap();
        store.delete("/b", Precondition::None).await.unwrap();
        let ev = sub.live.recv().await.unwrap();
        assert_eq!((ev.key.as_str(), ev.revision), ("/a", 1));
        assert_eq!(store.revision(), 4);
        cancel.cancel();
        started.task.await.unwrap();

        let cancel = CancellationToken::new();
        let store = Store::start(cfg, Arc::new(transport::LocalOnly), cancel.clone())
            .unwrap()
            .store;
        assert_eq!(store.revision(), 4);
        assert_eq!(&*store.get("/a").unwrap().value, b"two");
        assert!(store.get("/b").is_none());
        store
            .put("/c", b"y".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        assert_eq!(store.revision(), 5);
        cancel.cancel();
    }
}
