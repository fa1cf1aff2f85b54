//! The store: raft-replicated, revisioned key-value state with watches. `Store` is the handle
//! the API server and controllers use; the node loop (`node`) owns raft and applies writes.
//!
//! Any member accepts writes: a member that is not the leader forwards the proposal to the
//! leader (`Transport::forward`) and answers once it has applied the entry itself, so a caller
//! always reads its own write on the member it wrote through. `read_barrier` makes a read
//! linearizable (raft's ReadIndex), and `leadership` tells leader-only loops when to run.

mod disk;
mod node;
pub mod state;
pub mod storage;
mod thread;
pub mod transport;
mod wal;
pub mod watch;

#[cfg(test)]
mod sim;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch as twatch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use state::{Applied, Command, Event, KvState, Precondition, Record};
pub use thread::RaftThread;
pub use transport::{Forward, Forwarded};
pub use watch::{EventFilter, FilteredSubscription, Lagged, Subscription, TooOld};

use storage::{LogState, LogStore, MemoryBackend};
use transport::Transport;
use watch::WatchHub;

/// How long a write may wait for a leader that is known and reachable before it fails with
/// `NoLeader` or `Unreachable`: after a leader is lost, the others notice within an election
/// timeout (1 to 2 s) and elect a new one in a few round trips; a cut connection takes the
/// transport up to a few seconds more to give up on.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// The first pause between attempts while no leader is reachable; it doubles up to `MAX_PAUSE`,
/// and a change of leader ends it at once.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_millis(500);
/// How long a proposal (or a read barrier) may take in all before it fails with `Timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("disk: {0}")]
    Disk(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("no leader is known yet; retry")]
    NoLeader,
    /// Only the leader proposes; `leader` is who this member believes leads (forward there).
    #[error("this member is not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// The leader lost its term before the entry committed; it was not applied: safe to retry.
    #[error("the proposal was dropped by a change of leader; retry")]
    ProposalDropped,
    /// A forwarded proposal could not be delivered to the leader (no connection could be made):
    /// nothing was proposed, so it is safe to retry.
    #[error("member {id} cannot be reached")]
    Unreachable { id: u64 },
    /// A forwarded proposal was sent but its answer was lost with the connection: it may or may
    /// not have been applied, so it must not be retried blindly.
    #[error(
        "member {id} did not answer a forwarded proposal; the write may or may not have been applied"
    )]
    NoAnswer { id: u64 },
    /// No answer in time; a write may or may not have been applied.
    #[error("timed out waiting for the cluster; the write may or may not have been applied")]
    Timeout,
    #[error("the store is shutting down")]
    Stopped,
    #[error("cannot start the raft thread: {0}")]
    Thread(String),
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
    /// True for a member added to a running cluster: it starts with an empty log and no
    /// membership, and waits for the leader's snapshot instead of bootstrapping `voters`.
    pub join: bool,
    /// Where the redb file lives; `None` keeps everything in memory (tests).
    pub data_dir: Option<PathBuf>,
    /// How many events the watch cache keeps.
    pub watch_history: usize,
    /// Applied entries kept in the raft log before it is compacted behind a snapshot.
    pub log_keep: u64,
    /// Whether the log's `fdatasync` runs on a thread of its own, awaited by the node loop, or
    /// on the node loop's thread. Tests on a paused tokio clock keep it on the loop's thread:
    /// while the runtime waited on another thread, its clock would jump ahead.
    pub sync_thread: bool,
}

impl StoreConfig {
    pub fn single(data_dir: Option<PathBuf>) -> Self {
        Self::member(1, vec![1], data_dir)
    }

    /// A member of a cluster whose initial voters are `voters`.
    pub fn member(id: u64, voters: Vec<u64>, data_dir: Option<PathBuf>) -> Self {
        Self {
            id,
            voters,
            join: false,
            data_dir,
            watch_history: 20_000,
            log_keep: 10_000,
            sync_thread: true,
        }
    }
}

/// Where a member listens for its peers, as recorded in the store when it is added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub peer_addr: String,
}

/// The store keys under which added members are recorded (not visible through the API, whose
/// keys all start with `/registry/`).
pub const MEMBERS_PREFIX: &str = "/skiff/members/";

/// A member's raft id, derived from its name (FNV-1a, 64 bits, never 0): every member computes
/// the same ids from the same names, whatever order they are listed in.
pub fn member_id(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if h == 0 { 1 } else { h }
}

/// Who leads, as this member last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leadership {
    /// The leader's id, if one is known.
    pub leader: Option<u64>,
    pub term: u64,
    /// True while this member is the leader.
    pub is_leader: bool,
}

/// A member's view of raft, for status endpoints and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RaftStatus {
    pub id: u64,
    pub leader: Option<u64>,
    pub term: u64,
    pub is_leader: bool,
    pub applied: u64,
    /// Applied entries up to here are in the on-disk state machine; a restart replays the log
    /// after it.
    pub checkpointed: u64,
    pub revision: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

/// A started member: its handle, the inbox for raft messages from peers, and the node loop task
/// (which ends after the cancellation token fires and the store file is closed).
pub struct Started {
    pub store: Store,
    pub inbox: mpsc::Sender<raft::prelude::Message>,
    pub task: tokio::task::JoinHandle<()>,
}

type ProposeReply = oneshot::Sender<Result<Forwarded, StoreError>>;

/// What callers ask of the node loop.
pub(crate) enum Request {
    /// Propose on this member, which must be the leader.
    Propose { req: Forward, reply: ProposeReply },
    /// Answer once this member has applied everything committed when the request was made.
    Read {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

struct Inner {
    id: u64,
    state: RwLock<KvState>,
    hub: WatchHub,
    requests: mpsc::Sender<Request>,
    transport: Arc<dyn Transport>,
    /// The applied index, for callers waiting to see a forwarded write.
    applied: twatch::Sender<u64>,
    leadership: twatch::Sender<Leadership>,
    is_leader: twatch::Sender<bool>,
    /// Voters and learners as of the last applied membership change.
    conf: Mutex<(Vec<u64>, Vec<u64>)>,
    /// How many snapshots from the leader this member installed since it started.
    snapshots: AtomicU64,
    /// The applied index of the last durable state machine checkpoint (`None`: in memory).
    checkpointed: Option<Arc<AtomicU64>>,
}

/// A cheap, cloneable handle to the store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
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
        Self::start_on(
            &tokio::runtime::Handle::current(),
            config,
            transport,
            cancel,
        )
    }

    /// As [`Store::start`], with the node loop on `runtime` (a [`RaftThread`]'s).
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        config: StoreConfig,
        transport: Arc<dyn Transport>,
        cancel: CancellationToken,
    ) -> Result<Started, StoreError> {
        let (log, mut state, disk) = match &config.data_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Disk(format!("cannot create {}: {e}", dir.display()))
                })?;
                let (disk, log_state, kv) = disk::DiskStore::open(dir, config.sync_thread)?;
                let backend: Arc<dyn storage::Backend> = disk.clone();
                (LogStore::new(log_state, backend), kv, Some(disk))
            }
            None => (
                LogStore::new(LogState::default(), Arc::new(MemoryBackend)),
                KvState::default(),
                None,
            ),
        };
        if log.is_empty() && !config.join {
            log.bootstrap(config.voters.clone())?;
        }
        // What the log starts after was applied (a snapshot or the bootstrap point).
        if state.applied_index() < log.snapshot_index() {
            state.set_applied_index(log.snapshot_index());
        }
        let cs = log.conf_state();
        let (ptx, prx) = mpsc::channel(4096);
        let (mtx, mrx) = mpsc::channel(4096);
        let inner = Arc::new(Inner {
            id: config.id,
            hub: WatchHub::new(state.revision(), config.watch_history),
            applied: twatch::Sender::new(state.applied_index()),
            state: RwLock::new(state),
            requests: ptx,
            transport: transport.clone(),
            leadership: twatch::Sender::new(Leadership::default()),
            is_leader: twatch::Sender::new(false),
            conf: Mutex::new((cs.voters.clone(), cs.learners.clone())),
            snapshots: AtomicU64::new(0),
            checkpointed: disk.as_ref().map(|d| d.durable_applied_handle()),
        });
        // Peers added while this member was down are recorded in the state machine.
        for (_, rec) in inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range_prefix(MEMBERS_PREFIX)
        {
            if let Ok(m) = serde_json::from_slice::<MemberInfo>(&rec.value) {
                transport.set_peer(m.id, Some(m.peer_addr));
            }
        }
        let weak = Arc::downgrade(&inner);
        log.set_snapshot_source(Arc::new(move || match weak.upgrade() {
            Some(inner) => {
                let s = inner.state.read().unwrap_or_else(|e| e.into_inner());
                (s.to_snapshot_bytes(), s.applied_index())
            }
            None => (Vec::new(), 0),
        }));
        let node = node::Node::new(&config, log, disk, inner.clone(), transport)?;
        let task = runtime.spawn(node.run(prx, mrx, cancel));
        Ok(Started {
            store: Self { inner },
            inbox: mtx,
            task,
        })
    }

    fn state(&self) -> RwLockReadGuard<'_, KvState> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// This member's raft id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The store's current revision.
    pub fn revision(&self) -> u64 {
        self.state().revision()
    }

    /// The last log index this member applied.
    pub fn applied_index(&self) -> u64 {
        *self.inner.applied.borrow()
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

    /// The keys under `prefix` whose records `keep` selects; the others are not copied.
    pub fn list_where(
        &self,
        prefix: &str,
        keep: impl Fn(&Record) -> bool,
    ) -> Vec<(String, Record)> {
        self.state()
            .range_prefix(prefix)
            .filter(|(_, r)| keep(r))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect()
    }

    /// Counts keys under `prefix` without copying them.
    pub fn count(&self, prefix: &str) -> usize {
        self.state().range_prefix(prefix).count()
    }

    /// True while this member leads. Leader-only loops should follow `leadership()` instead of
    /// polling this.
    pub fn is_leader(&self) -> bool {
        *self.inner.is_leader.borrow()
    }

    /// Changes to whether this member leads: the scheduler and controllers run while it is
    /// `true` and stop when it turns `false` (a deposed leader's own writes no longer commit,
    /// and its loops must not act on a state that others may have moved on).
    pub fn leadership(&self) -> twatch::Receiver<bool> {
        self.inner.is_leader.subscribe()
    }

    /// Who leads, and in which term, as this member last saw it.
    pub fn leader(&self) -> Leadership {
        *self.inner.leadership.borrow()
    }

    /// How many snapshots from the leader this member installed since it started.
    pub fn snapshots_installed(&self) -> u64 {
        self.inner.snapshots.load(Ordering::Relaxed)
    }

    /// A snapshot of this member's raft view.
    pub fn status(&self) -> RaftStatus {
        let l = self.leader();
        let (voters, learners) = self
            .inner
            .conf
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        RaftStatus {
            id: self.inner.id,
            leader: l.leader,
            term: l.term,
            is_leader: l.is_leader,
            applied: self.applied_index(),
            checkpointed: self.inner.checkpointed.as_ref().map_or_else(
                || self.applied_index(),
                |c| c.load(std::sync::atomic::Ordering::Acquire),
            ),
            revision: self.revision(),
            voters,
            learners,
        }
    }

    /// Proposes a command and waits until it is applied on this member. A member that is not
    /// the leader forwards it to the leader and then waits to apply the entry itself.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, StoreError> {
        Ok(self.submit(Forward::Write(cmd)).await?.applied)
    }

    /// Proposes on this member only, which must be the leader: what a peer's forwarded
    /// proposal calls. Answers with the outcome and the log index once applied here.
    pub async fn propose_here(&self, req: Forward) -> Result<Forwarded, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Propose { req, reply: tx })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(r) => r.map_err(|_| StoreError::Stopped)?,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Proposes here if this member leads, else forwards to the leader. While no leader is
    /// known, or the proposal certainly was not made (not the leader, dropped by a change of
    /// leader, the leader could not be connected to), it waits for a leader and tries again, for
    /// up to `LEADER_WAIT`: that is what a client would do, and a write through a follower then
    /// rides over an election. An outcome that is not known (`NoAnswer`, `Timeout`) is returned
    /// at once: retrying a create or an update there could apply it twice.
    async fn submit(&self, req: Forward) -> Result<Forwarded, StoreError> {
        let deadline = Instant::now() + LEADER_WAIT;
        let mut leadership = self.inner.leadership.subscribe();
        let mut pause = FIRST_PAUSE;
        loop {
            // A change of leader from here on ends the pause below early.
            let known = *leadership.borrow_and_update();
            let r = match known.leader {
                // A follower that knows its leader forwards at once, without first asking its
                // own node loop (a round trip to the raft thread): if the leader changed
                // meanwhile, the old one says so and the next attempt asks here.
                Some(leader) if !known.is_leader && leader != self.inner.id => {
                    self.forward(leader, req.clone()).await
                }
                _ => match self.propose_here(req.clone()).await {
                    Err(StoreError::NotLeader {
                        leader: Some(leader),
                    }) if leader != self.inner.id => self.forward(leader, req.clone()).await,
                    r => r,
                },
            };
            let e = match r {
                Err(
                    e @ (StoreError::NotLeader { .. }
                    | StoreError::NoLeader
                    | StoreError::ProposalDropped
                    | StoreError::Unreachable { .. }),
                ) => e,
                r => return r,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(match e {
                    StoreError::NotLeader { .. } => StoreError::NoLeader,
                    e => e,
                });
            }
            tracing::debug!(error = %e, "no leader took the proposal; waiting for one");
            let wait = pause.min(deadline - now);
            if let Ok(Err(_)) = tokio::time::timeout(wait, leadership.changed()).await {
                // The store is going away; the next attempt says so.
                tokio::time::sleep(wait).await;
            }
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    async fn forward(&self, leader: u64, req: Forward) -> Result<Forwarded, StoreError> {
        let f =
            match tokio::time::timeout(REQUEST_TIMEOUT, self.inner.transport.forward(leader, req))
                .await
            {
                Ok(r) => r?,
                Err(_) => return Err(StoreError::Timeout),
            };
        self.wait_applied(f.index).await?;
        Ok(f)
    }

    /// Waits until this member has applied log index `index`.
    pub async fn wait_applied(&self, index: u64) -> Result<(), StoreError> {
        let mut rx = self.inner.applied.subscribe();
        match tokio::time::timeout(REQUEST_TIMEOUT, rx.wait_for(|a| *a >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Stopped),
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Returns once this member has applied everything the leader had committed when it was
    /// called (raft's ReadIndex): a read after it sees every write acknowledged before it, on
    /// any member. Call it before a get or list that must be current (no resourceVersion).
    pub async fn read_barrier(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .requests
            .send(Request::Read { reply: tx })
            .await
            .map_err(|_| StoreError::Stopped)?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(r) => r.map_err(|_| StoreError::Stopped)?,
            Err(_) => Err(StoreError::Timeout),
        }
    }

    /// Adds a voting member through a raft membership change; it should then start with
    /// `join` set and is caught up by a snapshot. Any member may be asked: it forwards.
    pub async fn add_member(&self, member: MemberInfo) -> Result<(), StoreError> {
        let context = serde_json::to_vec(&member).map_err(|e| StoreError::Raft(e.to_string()))?;
        self.change_members(member.id, ConfChangeType::AddNode, context)
            .await
    }

    /// Removes a member through a raft membership change.
    pub async fn remove_member(&self, id: u64) -> Result<(), StoreError> {
        self.change_members(id, ConfChangeType::RemoveNode, Vec::new())
            .await
    }

    async fn change_members(
        &self,
        id: u64,
        ty: ConfChangeType,
        context: Vec<u8>,
    ) -> Result<(), StoreError> {
        let mut single = ConfChangeSingle {
            node_id: id,
            ..Default::default()
        };
        single.set_change_type(ty);
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.context = context.into();
        self.submit(Forward::Conf(cc)).await.map(|_| ())
    }

    /// Members recorded by `add_member` (initial members are known from configuration).
    pub fn added_members(&self) -> Vec<MemberInfo> {
        self.state()
            .range_prefix(MEMBERS_PREFIX)
            .filter_map(|(_, r)| serde_json::from_slice(&r.value).ok())
            .collect()
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

    /// Watches the events after `after` that `filter` accepts, woken only for those.
    pub fn watch_filtered(
        &self,
        after: u64,
        filter: EventFilter,
    ) -> Result<FilteredSubscription, StoreError> {
        self.inner
            .hub
            .subscribe_filtered(after, filter)
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
