//! The raft node loop: ticks, steps peer messages, proposes writes and handles `Ready` in the
//! order raft-rs documents (send, snapshot, apply committed, persist entries and hard state,
//! send persisted messages, advance, then the light ready). It is the only writer of the state
//! machine and the only publisher of watch events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeV2, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, StateRole};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::disk::DiskStore;
use super::state::{Applied, Command, KvState};
use super::storage::LogStore;
use super::transport::Transport;
use super::{Inner, Proposal, StoreConfig, StoreError};

const TICK: Duration = Duration::from_millis(100);

type Reply = oneshot::Sender<Result<Applied, StoreError>>;

pub(super) struct Node {
    id: u64,
    raw: RawNode<LogStore>,
    log: LogStore,
    disk: Option<Arc<DiskStore>>,
    inner: Arc<Inner>,
    transport: Arc<dyn Transport>,
    pending: HashMap<u64, Reply>,
    next_seq: u64,
    log_keep: u64,
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
            log.set_hard_state(&hs)?;
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
            pending: HashMap::new(),
            next_seq: 1,
            log_keep: config.log_keep,
        })
    }

    pub(super) async fn run(
        mut self,
        mut proposals: mpsc::Receiver<Proposal>,
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
                _ = ticker.tick() => { self.raw.tick(); }
                Some(p) = proposals.recv() => {
                    self.propose(p);
                    // Batch whatever else is waiting into the same Ready.
                    while let Ok(p) = proposals.try_recv() {
                        self.propose(p);
                    }
                }
                Some(m) = inbox.recv() => {
                    self.step(m);
                    while let Ok(m) = inbox.try_recv() {
                        self.step(m);
                    }
                }
            }
            if self.raw.has_ready()
                && let Err(e) = self.handle_ready()
            {
                tracing::error!(error = %e, "raft ready failed; the store stops");
                break;
            }
        }
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(StoreError::Stopped));
        }
    }

    fn step(&mut self, m: Message) {
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "dropped raft message");
        }
    }

    fn propose(&mut self, p: Proposal) {
        if self.raw.raft.state != StateRole::Leader {
            let _ = p.reply.send(Err(StoreError::NoLeader));
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut ctx = Vec::with_capacity(16);
        ctx.extend_from_slice(&self.id.to_le_bytes());
        ctx.extend_from_slice(&seq.to_le_bytes());
        match self.raw.propose(ctx, p.cmd.encode()) {
            Ok(()) => {
                self.pending.insert(seq, p.reply);
            }
            Err(e) => {
                let _ = p.reply.send(Err(raft_err(e)));
            }
        }
    }

    fn handle_ready(&mut self) -> Result<(), StoreError> {
        let mut rd = self.raw.ready();
        if !rd.messages().is_empty() {
            self.transport.send(rd.take_messages());
        }
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        self.apply(rd.take_committed_entries())?;
        if !rd.entries().is_empty() {
            self.log.append(rd.entries())?;
        }
        if let Some(hs) = rd.hs() {
            self.log.set_hard_state(hs)?;
        }
        if !rd.persisted_messages().is_empty() {
            self.transport.send(rd.take_persisted_messages());
        }
        let mut light = self.raw.advance(rd);
        self.transport.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.raw.advance_apply();
        self.maybe_compact()?;
        Ok(())
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), StoreError> {
        let index = snap.get_metadata().index;
        let state = KvState::from_snapshot_bytes(snap.get_data(), index)
            .ok_or_else(|| StoreError::Raft(format!("undecodable snapshot at index {index}")))?;
        if let Some(disk) = &self.disk {
            disk.save_snapshot_state(&state)?;
        }
        self.log.apply_snapshot(&snap)?;
        let revision = state.revision();
        *self.inner.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        self.inner.hub.reset(revision);
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let inner = self.inner.clone();
        let (applied, revision, compacted) = {
            let mut state = inner.state.write().unwrap_or_else(|e| e.into_inner());
            for e in entries {
                state.set_applied_index(e.index);
                match e.get_entry_type() {
                    EntryType::EntryNormal => {
                        if e.data.is_empty() {
                            continue;
                        }
                        let outcome = match Command::decode(&e.data) {
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
                        };
                        if let Some(reply) = self.take_pending(&e.context) {
                            replies.push((reply, outcome));
                        }
                    }
                    EntryType::EntryConfChange => {
                        let cc = ConfChange::parse_from_bytes(&e.data)
                            .map_err(|err| StoreError::Raft(err.to_string()))?;
                        let cs = self.raw.apply_conf_change(&cc).map_err(raft_err)?;
                        self.log.set_conf_state(cs)?;
                    }
                    EntryType::EntryConfChangeV2 => {
                        let cc = ConfChangeV2::parse_from_bytes(&e.data)
                            .map_err(|err| StoreError::Raft(err.to_string()))?;
                        let cs = self.raw.apply_conf_change(&cc).map_err(raft_err)?;
                        self.log.set_conf_state(cs)?;
                    }
                }
            }
            (state.applied_index(), state.revision(), state.compacted())
        };
        if let Some(disk) = &self.disk {
            disk.save_applied(&changes, applied, revision, compacted)?;
        }
        self.inner.hub.publish(events);
        for (reply, outcome) in replies {
            let _ = reply.send(outcome);
        }
        Ok(())
    }

    fn take_pending(&mut self, ctx: &[u8]) -> Option<Reply> {
        if ctx.len() != 16 {
            return None;
        }
        let id = u64::from_le_bytes(ctx[0..8].try_into().ok()?);
        if id != self.id {
            return None;
        }
        let seq = u64::from_le_bytes(ctx[8..16].try_into().ok()?);
        self.pending.remove(&seq)
    }

    /// Keeps the raft log short: once more than `log_keep` applied entries pile up, the state
    /// machine image becomes the snapshot a lagging member is sent and the log is cut behind it.
    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        if self.log.len() as u64 <= self.log_keep * 2 {
            return Ok(());
        }
        let state = self.inner.state.read().unwrap_or_else(|e| e.into_inner());
        let applied = state.applied_index();
        let mut snap = Snapshot::default();
        snap.set_data(state.to_snapshot_bytes().into());
        drop(state);
        let meta = snap.mut_metadata();
        meta.index = applied;
        meta.term = raft::Storage::term(&self.log, applied).map_err(raft_err)?;
        meta.set_conf_state(self.log.conf_state());
        self.log.set_snapshot_data(snap);
        self.log.compact(applied.saturating_sub(self.log_keep))?;
        Ok(())
    }
}
