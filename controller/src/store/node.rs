//! The raft node loop: ticks, steps peer messages, proposes writes and handles `Ready` in the
//! order raft-rs documents (send, snapshot, apply committed, persist entries and hard state,
//! send persisted messages, advance, then the light ready). It is the only writer of the state
//! machine and the only publisher of watch events.
//!
//! Proposals are remembered by the log index and term they were appended at, and answered only
//! when that index is applied: with the outcome if the applied entry has the same term (it is
//! ours), or `ProposalDropped` if another leader's entry replaced it. A deposed leader therefore
//! never acknowledges a write that did not commit, and a restarted member (whose pending map is
//! empty) never mistakes an old entry for a new proposal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::disk::DiskStore;
use super::state::{Applied, Command, KvState};
use super::storage::LogStore;
use super::transport::{Forward, Forwarded, Transport};
use super::{
    Inner, Leadership, MEMBERS_PREFIX, MemberInfo, Precondition, ProposeReply, Request,
    StoreConfig, StoreError,
};

const TICK: Duration = Duration::from_millis(100);
/// A read barrier re-asks the leader this often (raft drops a ReadIndex while no leader is known
/// or before the leader committed in its term) ...
const READ_RETRY_TICKS: u64 = 3;
/// ... and gives up after this long.
const READ_TIMEOUT_TICKS: u64 = 50;

/// A proposal waiting for its entry to apply.
struct Pending {
    term: u64,
    conf: bool,
    reply: ProposeReply,
}

/// A read barrier waiting for the leader's commit index.
struct PendingRead {
    ctx: Vec<u8>,
    asked_at: u64,
    since: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

pub(super) struct Node {
    id: u64,
    raw: RawNode<LogStore>,
    log: LogStore,
    disk: Option<Arc<DiskStore>>,
    inner: Arc<Inner>,
    transport: Arc<dyn Transport>,
    /// Proposals by log index.
    pending: BTreeMap<u64, Pending>,
    /// Read barriers not yet answered by the leader, by request sequence number.
    reads: HashMap<u64, PendingRead>,
    /// Read barriers with a known read index, waiting for this member to apply it.
    ready_reads: Vec<(u64, oneshot::Sender<Result<(), StoreError>>)>,
    next_read: u64,
    ticks: u64,
    log_keep: u64,
    seen: Leadership,
}

fn raft_err(e: raft::Error) -> StoreError {
    StoreError::Raft(e.to_string())
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

impl Node {
    pub(super) fn new(
        config: &StoreConfig,
        log: LogStore,
        disk: Option<Arc<DiskStore>>,
        inner: Arc<Inner>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, StoreError> {
        let applied = inner
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .applied_index();
        // The commit index is kept in memory between fsyncs of the log; what was applied was
        // committed, so a restart may start from there.
        let mut hs = log.hard_state();
        if hs.commit < applied {
            hs.commit = applied;
            log.persist(&[], Some(&hs))?;
        }
        let cfg = raft::Config {
            id: config.id,
            applied,
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        cfg.validate().map_err(raft_err)?;
        let raw = RawNode::new(&cfg, log.clone(), &logger()).map_err(raft_err)?;
        Ok(Self {
            id: config.id,
            raw,
            log,
            disk,
            inner,
            transport,
            pending: BTreeMap::new(),
            reads: HashMap::new(),
            ready_reads: Vec::new(),
            next_read: 1,
            ticks: 0,
            log_keep: config.log_keep,
            seen: Leadership::default(),
        })
    }

    pub(super) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut inbox: mpsc::Receiver<Message>,
        cancel: CancellationToken,
    ) {
        // A lone voter need not wait an election timeout to lead.
        if self.log.conf_state().voters == [self.id]
            && let Err(e) = self.raw.campaign()
        {
            tracing::warn!(error = %e, "campaign failed");
        }
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.ticks += 1;
                    self.retry_reads();
                }
                Some(r) = requests.recv() => {
                    super::thread::busy();
                    self.request(r);
                    // Batch whatever else is waiting into the same Ready.
                    while let Ok(r) = requests.try_recv() {
                        self.request(r);
                    }
                }
                Some(m) = inbox.recv() => {
                    let mut replicating = self.step(m);
                    while let Ok(m) = inbox.try_recv() {
                        replicating |= self.step(m);
                    }
                    if replicating {
                        super::thread::busy();
                    }
                }
            }
            if self.raw.has_ready()
                && let Err(e) = self.handle_ready().await
            {
                tracing::error!(error = %e, "raft ready failed; the store stops");
                break;
            }
            self.publish_leadership();
        }
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(StoreError::Stopped));
        }
        if let Some(disk) = &self.disk {
            disk.close();
        }
        for (_, r) in self.reads.drain() {
            let _ = r.reply.send(Err(StoreError::Stopped));
        }
        for (_, reply) in self.ready_reads.drain(..) {
            let _ = reply.send(Err(StoreError::Stopped));
        }
        self.inner.is_leader.send_replace(false);
    }

    /// Steps a peer's message; true unless it was a heartbeat (an idle cluster's only traffic).
    fn step(&mut self, m: Message) -> bool {
        let heartbeat = matches!(
            m.get_msg_type(),
            MessageType::MsgHeartbeat | MessageType::MsgHeartbeatResponse
        );
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "dropped raft message");
        }
        !heartbeat
    }

    fn request(&mut self, r: Request) {
        match r {
            Request::Propose { req, reply } => self.propose(req, reply),
            Request::Read { reply } => {
                let seq = self.next_read;
                self.next_read += 1;
                let mut ctx = Vec::with_capacity(16);
                ctx.extend_from_slice(&self.id.to_le_bytes());
                ctx.extend_from_slice(&seq.to_le_bytes());
                self.raw.read_index(ctx.clone());
                self.reads.insert(
                    seq,
                    PendingRead {
                        ctx,
                        asked_at: self.ticks,
                        since: self.ticks,
                        reply,
                    },
                );
            }
        }
    }

    fn retry_reads(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| now - r.since > READ_TIMEOUT_TICKS)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            if let Some(r) = self.reads.remove(&seq) {
                let _ = r.reply.send(Err(StoreError::Timeout));
            }
        }
        let mut again = Vec::new();
        for r in self.reads.values_mut() {
            if now - r.asked_at >= READ_RETRY_TICKS {
                r.asked_at = now;
                again.push(r.ctx.clone());
            }
        }
        for ctx in again {
            self.raw.read_index(ctx);
        }
    }

    fn read_state(&mut self, rs: ReadState) {
        if rs.request_ctx.len() != 16 || rs.request_ctx[0..8] != self.id.to_le_bytes() {
            return;
        }
        let Ok(seq) = <[u8; 8]>::try_from(&rs.request_ctx[8..16]).map(u64::from_le_bytes) else {
            return;
        };
        if let Some(r) = self.reads.remove(&seq) {
            self.ready_reads.push((rs.index, r.reply));
        }
    }

    /// Answers the read barriers whose read index this member has applied.
    fn release_reads(&mut self, applied: u64) {
        if self.ready_reads.is_empty() {
            return;
        }
        let (done, wait): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.ready_reads = wait;
        for (_, reply) in done {
            let _ = reply.send(Ok(()));
        }
    }

    fn propose(&mut self, req: Forward, reply: ProposeReply) {
        if self.raw.raft.state != StateRole::Leader {
            let leader = Some(self.raw.raft.leader_id).filter(|l| *l != raft::INVALID_ID);
            let _ = reply.send(Err(StoreError::NotLeader { leader }));
            return;
        }
        let term = self.raw.raft.term;
        // The context names the proposer and its term, for logs and debugging; answers are
        // matched by index and term.
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.id.to_le_bytes());
        ctx.extend_from_slice(&term.to_le_bytes());
        let (conf, res) = match req {
            Forward::Write(cmd) => (false, self.raw.propose(ctx, cmd.encode())),
            Forward::Conf(cc) => (true, self.raw.propose_conf_change(ctx, cc)),
        };
        match res {
            Ok(()) => {
                let index = self.raw.raft.raft_log.last_index();
                if let Some(old) = self.pending.insert(index, Pending { term, conf, reply }) {
                    let _ = old.reply.send(Err(StoreError::ProposalDropped));
                }
            }
            Err(raft::Error::ProposalDropped) => {
                let _ = reply.send(Err(StoreError::ProposalDropped));
            }
            Err(e) => {
                let _ = reply.send(Err(raft_err(e)));
            }
        }
    }

    fn send(&self, messages: Vec<Message>, snapshots_to: &mut Vec<u64>) {
        if messages.is_empty() {
            return;
        }
        snapshots_to.extend(
            messages
                .iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to),
        );
        self.transport.send(messages);
    }

    async fn handle_ready(&mut self) -> Result<(), StoreError> {
        let mut snapshots_to = Vec::new();
        let mut rd = self.raw.ready();
        let sending = !rd.messages().is_empty();
        self.send(rd.take_messages(), &mut snapshots_to);
        if sending && !rd.entries().is_empty() {
            // A leader's appends go out before it writes them itself: the connection tasks run
            // now, and the followers write to disk while the leader does.
            tokio::task::yield_now().await;
        }
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        for rs in rd.take_read_states() {
            self.read_state(rs);
        }
        self.apply(rd.take_committed_entries())?;
        if let Some(durable) = self.log.persist_async(rd.entries(), rd.hs())? {
            // The flush runs on the disk's sync thread; this thread polls meanwhile (its
            // readers and senders go on) rather than sleeping in it, and nothing below happens
            // before the write is durable.
            super::thread::busy();
            durable
                .await
                .map_err(|_| StoreError::Disk("the WAL sync thread stopped".into()))??;
        }
        self.send(rd.take_persisted_messages(), &mut snapshots_to);
        let mut light = self.raw.advance(rd);
        self.send(light.take_messages(), &mut snapshots_to);
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        // Snapshots are built from the live state and handed to the transport whole; telling
        // raft it finished lets the leader probe again, and if it was lost the follower's
        // rejection brings another one.
        for to in snapshots_to {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        let applied = *self.inner.applied.borrow();
        self.release_reads(applied);
        self.maybe_compact()?;
        Ok(())
    }

    fn publish_leadership(&mut self) {
        let r = &self.raw.raft;
        let now = Leadership {
            leader: Some(r.leader_id).filter(|l| *l != raft::INVALID_ID),
            term: r.term,
            is_leader: r.state == StateRole::Leader,
        };
        if now == self.seen {
            return;
        }
        if now.leader != self.seen.leader || now.is_leader != self.seen.is_leader {
            tracing::info!(
                member = self.id,
                leader = ?now.leader,
                term = now.term,
                is_leader = now.is_leader,
                "raft leadership changed"
            );
        }
        self.seen = now;
        self.inner.leadership.send_replace(now);
        self.inner.is_leader.send_if_modified(|v| {
            let changed = *v != now.is_leader;
            *v = now.is_leader;
            changed
        });
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        let index = snap.get_metadata().index;
        let state = KvState::from_snapshot_bytes(snap.get_data(), index)
            .ok_or_else(|| StoreError::Raft(format!("undecodable snapshot at index {index}")))?;
        if let Some(disk) = &self.disk {
            disk.save_snapshot_state(&state)?;
        }
        self.log.apply_snapshot(&snap)?;
        let cs = snap.get_metadata().get_conf_state();
        *self.inner.conf.lock().unwrap_or_else(|e| e.into_inner()) =
            (cs.voters.clone(), cs.learners.clone());
        let revision = state.revision();
        let members: Vec<MemberInfo> = state
            .range_prefix(MEMBERS_PREFIX)
            .filter_map(|(_, r)| serde_json::from_slice(&r.value).ok())
            .collect();
        *self.inner.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        self.inner.hub.reset(revision);
        self.inner.applied.send_replace(index);
        for m in members {
            self.transport.set_peer(m.id, Some(m.peer_addr));
        }
        // Proposals behind the snapshot were decided elsewhere; this member cannot tell how.
        let rest = self.pending.split_off(&(index + 1));
        for (_, p) in std::mem::replace(&mut self.pending, rest) {
            let _ = p.reply.send(Err(StoreError::Timeout));
        }
        self.inner
            .snapshots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(member = self.id, index, revision, "installed a snapshot");
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut peers = Vec::new();
        let inner = self.inner.clone();
        let (applied, revision, compacted) = {
            let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
            for e in entries {
                state.set_applied_index(e.index);
                let pending = self.pending.remove(&e.index);
                let ours = pending.as_ref().is_some_and(|p| p.term == e.term);
                let outcome = match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        if e.data.is_empty() {
                            // A new leader's empty entry, or a conf change raft refused.
                            Err(StoreError::ProposalDropped)
                        } else {
                            match Command::decode(&e.data) {
                                Some(cmd) => {
                                    let (outcome, ev) = state.apply(cmd);
                                    if let Some(ev) = ev {
                                        changes.push((ev.key.clone(), ev.record.clone()));
                                        events.push(ev);
                                    }
                                    Ok(outcome)
                                }
                                None => Err(StoreError::Raft(format!(
                                    "undecodable command at index {}",
                                    e.index
                                ))),
                            }
                        }
                    }
                    EntryType::EntryConfChange => {
                        let cc = ConfChange::parse_from_bytes(&e.data)
                            .map_err(|err| StoreError::Raft(err.to_string()))?;
                        let cs = self.raw.apply_conf_change(&cc).map_err(raft_err)?;
                        *inner.conf.lock().unwrap_or_else(|e| e.into_inner()) =
                            (cs.voters.clone(), cs.learners.clone());
                        self.log.set_conf_state(cs)?;
                        Ok(Applied::Done {
                            revision: state.revision(),
                            record: None,
                            prev: None,
                        })
                    }
                    EntryType::EntryConfChangeV2 => {
                        let cc = ConfChangeV2::parse_from_bytes(&e.data)
                            .map_err(|err| StoreError::Raft(err.to_string()))?;
                        let cs = self.raw.apply_conf_change(&cc).map_err(raft_err)?;
                        *inner.conf.lock().unwrap_or_else(|e| e.into_inner()) =
                            (cs.voters.clone(), cs.learners.clone());
                        self.log.set_conf_state(cs)?;
                        // Record added members' addresses in the state machine, in log order
                        // on every member, so restarts and snapshots carry them.
                        let info: Option<MemberInfo> = serde_json::from_slice(&cc.context).ok();
                        for ch in cc.get_changes() {
                            let key = format!("{MEMBERS_PREFIX}{}", ch.node_id);
                            let cmd = match ch.get_change_type() {
                                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                                    let Some(m) = info.as_ref().filter(|m| m.id == ch.node_id)
                                    else {
                                        continue;
                                    };
                                    peers.push((m.id, Some(m.peer_addr.clone())));
                                    Command::Put {
                                        key,
                                        value: serde_json::to_vec(m).unwrap_or_default(),
                                        precondition: Precondition::None,
                                    }
                                }
                                ConfChangeType::RemoveNode => {
                                    peers.push((ch.node_id, None));
                                    Command::Delete {
                                        key,
                                        precondition: Precondition::Present,
                                    }
                                }
                            };
                            if let (_, Some(ev)) = state.apply(cmd) {
                                changes.push((ev.key.clone(), ev.record.clone()));
                                events.push(ev);
                            }
                        }
                        Ok(Applied::Done {
                            revision: state.revision(),
                            record: None,
                            prev: None,
                        })
                    }
                };
                if let Some(p) = pending {
                    let is_conf = e.get_entry_type() != EntryType::EntryNormal;
                    let answer = if !ours || p.conf != is_conf {
                        Err(StoreError::ProposalDropped)
                    } else {
                        outcome.map(|applied| Forwarded {
                            index: e.index,
                            applied,
                        })
                    };
                    replies.push((p.reply, answer));
                }
            }
            (state.applied_index(), state.revision(), state.compacted())
        };
        if let Some(disk) = &self.disk {
            disk.save_applied(changes, applied, revision, compacted)?;
        }
        self.inner.hub.publish(events);
        self.inner.applied.send_replace(applied);
        for (id, addr) in peers {
            if id != self.id {
                self.transport.set_peer(id, addr);
            }
        }
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        self.release_reads(applied);
        Ok(())
    }

    /// Keeps the raft log short: once more than `log_keep` applied entries pile up, the log is
    /// cut behind the applied index; a member that needs what was cut gets a snapshot of the
    /// state machine instead (`LogStore::snapshot` makes it on demand).
    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        if self.log.len() as u64 <= self.log_keep * 2 {
            return Ok(());
        }
        let mut applied = *self.inner.applied.borrow();
        if let Some(disk) = &self.disk {
            // A restart replays the log from the last checkpoint: keep it from there.
            applied = applied.min(disk.durable_applied());
        }
        self.log.compact(applied.saturating_sub(self.log_keep))?;
        Ok(())
    }
}
