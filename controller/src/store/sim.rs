//! Whole clusters in one test process: members on a simulated network that drops, delays,
//! duplicates and partitions raft messages and forwarded proposals (the shape of raft-rs's
//! `harness/src/network.rs`), each member on its own redb file in a tempdir so a restart is a
//! real one. Tests run under paused tokio time: ticks and timeouts are virtual and fast.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::prelude::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::transport::{BoxFuture, Forward, Forwarded, Transport};
use super::{
    Applied, Command, LEADER_WAIT, MemberInfo, Precondition, Store, StoreConfig, StoreError,
};

/// Faults applied to every message, in percent and milliseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub drop_pct: u64,
    pub dup_pct: u64,
    pub max_delay_ms: u64,
}

struct NetState {
    inboxes: HashMap<u64, mpsc::Sender<Message>>,
    stores: HashMap<u64, Store>,
    /// Directed pairs that cannot talk.
    cut: HashSet<(u64, u64)>,
    faults: Faults,
    rng: u64,
}

impl NetState {
    /// xorshift64*: deterministic for a seed, no dependency.
    fn rand(&mut self, below: u64) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        if below == 0 {
            0
        } else {
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
        }
    }

    fn blocked(&self, a: u64, b: u64) -> bool {
        self.cut.contains(&(a, b))
    }
}

/// The simulated network.
pub struct Net {
    state: Mutex<NetState>,
}

impl Net {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(NetState {
                inboxes: HashMap::new(),
                stores: HashMap::new(),
                cut: HashSet::new(),
                faults: Faults::default(),
                rng: seed | 1,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn rand(&self, below: u64) -> u64 {
        self.lock().rand(below)
    }

    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    /// Cuts every link between different groups.
    pub fn partition(&self, groups: &[&[u64]]) {
        let mut s = self.lock();
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if i != j {
                    for a in *g {
                        for b in *h {
                            s.cut.insert((*a, *b));
                        }
                    }
                }
            }
        }
    }

    /// Cuts messages from `from` to `to` only: what `to` sends still arrives.
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    fn attach(&self, id: u64, inbox: mpsc::Sender<Message>, store: Store) {
        let mut s = self.lock();
        s.inboxes.insert(id, inbox);
        s.stores.insert(id, store);
    }

    fn detach(&self, id: u64) {
        let mut s = self.lock();
        s.inboxes.remove(&id);
        s.stores.remove(&id);
    }

    fn deliver(&self, from: u64, messages: Vec<Message>) {
        let mut s = self.lock();
        for m in messages {
            let to = m.to;
            if s.blocked(from, to) {
                continue;
            }
            let Some(inbox) = s.inboxes.get(&to).cloned() else {
                continue;
            };
            let f = s.faults;
            if s.rand(100) < f.drop_pct {
                continue;
            }
            let copies = if s.rand(100) < f.dup_pct { 2 } else { 1 };
            for _ in 0..copies {
                let delay = s.rand(f.max_delay_ms + 1);
                let m = m.clone();
                if delay == 0 {
                    let _ = inbox.try_send(m);
                } else {
                    let inbox = inbox.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        let _ = inbox.try_send(m);
                    });
                }
            }
        }
    }
}

/// One member's view of the simulated network.
pub struct SimTransport {
    id: u64,
    net: Arc<Net>,
}

impl Transport for SimTransport {
    fn send(&self, messages: Vec<Message>) {
        self.net.deliver(self.id, messages);
    }

    fn forward(&self, to: u64, req: Forward) -> BoxFuture<Result<Forwarded, StoreError>> {
        let net = self.net.clone();
        let from = self.id;
        Box::pin(async move {
            let store = {
                let mut s = net.lock();
                let drop_pct = s.faults.drop_pct;
                if s.blocked(from, to) || s.rand(100) < drop_pct {
                    return Err(StoreError::Unreachable { id: to });
                }
                s.stores.get(&to).cloned()
            };
            let Some(store) = store else {
                return Err(StoreError::Unreachable { id: to });
            };
            let r = store.propose_here(req).await;
            // The answer travels back over the same network: a lost answer leaves the
            // proposer not knowing, as a real broken connection does.
            if net.lock().blocked(to, from) {
                return Err(StoreError::NoAnswer { id: to });
            }
            r
        })
    }
}

struct Running {
    store: Store,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// A cluster of members on one `Net`.
pub struct Cluster {
    pub net: Arc<Net>,
    dir: tempfile::TempDir,
    voters: Vec<u64>,
    log_keep: u64,
    running: BTreeMap<u64, Running>,
}

impl Cluster {
    pub fn new(n: u64, log_keep: u64, seed: u64) -> Self {
        let mut c = Self {
            net: Net::new(seed),
            dir: tempfile::tempdir().expect("tempdir"),
            voters: (1..=n).collect(),
            log_keep,
            running: BTreeMap::new(),
        };
        for id in 1..=n {
            c.start(id, false);
        }
        c
    }

    pub fn start(&mut self, id: u64, join: bool) {
        let mut cfg = StoreConfig::member(
            id,
            self.voters.clone(),
            Some(self.dir.path().join(id.to_string())),
        );
        cfg.log_keep = self.log_keep;
        cfg.join = join;
        // The clock is paused: a flush on another thread would let it run ahead meanwhile.
        cfg.sync_thread = false;
        let cancel = CancellationToken::new();
        let t = Arc::new(SimTransport {
            id,
            net: self.net.clone(),
        });
        let started = Store::start(cfg, t, cancel.clone()).expect("start member");
        self.net
            .attach(id, started.inbox.clone(), started.store.clone());
        self.running.insert(
            id,
            Running {
                store: started.store,
                cancel,
                task: started.task,
            },
        );
    }

    pub async fn stop(&mut self, id: u64) {
        self.net.detach(id);
        if let Some(r) = self.running.remove(&id) {
            r.cancel.cancel();
            let _ = r.task.await;
        }
    }

    pub async fn restart(&mut self, id: u64) {
        self.stop(id).await;
        self.start(id, false);
    }

    pub fn store(&self, id: u64) -> Store {
        self.running[&id].store.clone()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    /// Waits until one of `among` leads and the others among them follow it.
    pub async fn leader(&self, among: &[u64]) -> u64 {
        for _ in 0..400 {
            let views: Vec<_> = among.iter().map(|id| self.store(*id).leader()).collect();
            if let Some(l) = views.iter().find(|v| v.is_leader)
                && let Some(id) = l.leader
                && views.iter().all(|v| v.leader == Some(id))
            {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no leader among {among:?}");
    }

    /// Waits until every running member has applied as far as the furthest one.
    pub async fn converge(&self) {
        for _ in 0..600 {
            let applied: Vec<_> = self
                .ids()
                .iter()
                .map(|id| self.store(*id).status().applied)
                .collect();
            let revs: Vec<_> = self
                .ids()
                .iter()
                .map(|id| self.store(*id).revision())
                .collect();
            if applied.windows(2).all(|w| w[0] == w[1]) && revs.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("members did not converge");
    }

    pub async fn shutdown(mut self) {
        for id in self.ids() {
            self.stop(id).await;
        }
    }
}

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        precondition: Precondition::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test(start_paused = true)]
    async fn three_members_elect_replicate_and_forward() {
        let c = Cluster::new(3, 1000, 1);
        let leader = c.leader(&[1, 2, 3]).await;
        let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
        c.store(leader)
            .put("/a", b"1".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        // Through a follower: forwarded, and visible on that follower when it returns.
        let (rec, _) = c
            .store(follower)
            .put("/b", b"2".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        assert_eq!(c.store(follower).get("/b").unwrap(), rec);
        // A read barrier on every member sees both writes.
        for id in c.ids() {
            c.store(id).read_barrier().await.unwrap();
            assert_eq!(&*c.store(id).get("/a").unwrap().value, b"1");
            assert_eq!(
                c.store(id).get("/b").unwrap().mod_revision,
                rec.mod_revision
            );
        }
        let leaders: Vec<u64> = c
            .ids()
            .into_iter()
            .filter(|i| c.store(*i).is_leader())
            .collect();
        assert_eq!(leaders, [leader]);
        assert!(*c.store(leader).leadership().borrow());
        assert!(!*c.store(follower).leadership().borrow());
        c.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn partitioned_minority_cannot_commit_and_majority_moves_on() {
        let c = Cluster::new(3, 1000, 2);
        let old = c.leader(&[1, 2, 3]).await;
        c.store(old)
            .put("/before", b"x".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        let rest: Vec<u64> = c.ids().into_iter().filter(|i| *i != old).collect();
        c.net.partition(&[&[old], &rest]);
        // The deposed leader accepts the proposal but can never commit it.
        let s = c.store(old);
        let lost = tokio::spawn(async move { s.propose(put("/lost", "no")).await });
        let new = c.leader(&rest).await;
        assert_ne!(new, old);
        c.store(rest[0])
            .put("/after", b"y".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!lost.is_finished(), "a minority write was answered");
        assert!(
            !c.store(old).is_leader(),
            "check_quorum deposes the old leader"
        );
        c.net.heal();
        let outcome = lost.await.unwrap();
        c.converge().await;
        // The entry the old leader appended never commits. Once the new leader's log replaces
        // it, the proposal is known to be dropped, and `submit` may propose it again through
        // the new leader (if still within its leader wait): then it is acknowledged only once
        // that new entry has committed, and is on every member.
        let acked = match outcome {
            Ok(Applied::Done {
                record: Some(r), ..
            }) => Some(r.mod_revision),
            Err(StoreError::ProposalDropped | StoreError::Timeout) => None,
            other => panic!("{other:?}"),
        };
        for id in c.ids() {
            let s = c.store(id);
            assert_eq!(s.get("/lost").map(|r| r.mod_revision), acked, "member {id}");
            assert!(s.get("/after").is_some() && s.get("/before").is_some());
        }
        c.shutdown().await;
    }

    /// A write sent to a follower just after the leader died used to fail at once (the forward
    /// could not be delivered); it now waits for the next leader, as a client would.
    #[tokio::test(start_paused = true)]
    async fn a_write_through_a_follower_rides_over_the_election() {
        let mut c = Cluster::new(3, 1000, 6);
        let old = c.leader(&[1, 2, 3]).await;
        let follower = c.ids().into_iter().find(|i| *i != old).unwrap();
        c.stop(old).await;
        assert_eq!(c.store(follower).leader().leader, Some(old));
        let (rec, _) = c
            .store(follower)
            .put("/failover", b"v".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        let new = c.leader(&c.ids()).await;
        assert_ne!(new, old);
        c.converge().await;
        assert_eq!(c.store(new).get("/failover").unwrap(), rec);
        c.shutdown().await;
    }

    /// The wait for a leader is bounded: a member cut off from the others gives up with an
    /// error that says nothing was proposed, and indeed nothing was.
    #[tokio::test(start_paused = true)]
    async fn a_write_through_a_cut_off_member_gives_up_after_the_leader_wait() {
        let c = Cluster::new(3, 1000, 7);
        let leader = c.leader(&[1, 2, 3]).await;
        let lone = c.ids().into_iter().find(|i| *i != leader).unwrap();
        let rest: Vec<u64> = c.ids().into_iter().filter(|i| *i != lone).collect();
        c.net.partition(&[&[lone], &rest]);
        let start = tokio::time::Instant::now();
        let r = c
            .store(lone)
            .put("/cut", b"v".to_vec(), Precondition::Absent)
            .await;
        let took = start.elapsed();
        assert!(
            matches!(
                r,
                Err(StoreError::NoLeader | StoreError::Unreachable { .. })
            ),
            "{r:?}"
        );
        assert!(
            took >= LEADER_WAIT && took < LEADER_WAIT + Duration::from_secs(1),
            "{took:?}"
        );
        c.net.heal();
        c.store(leader).propose(Command::Noop).await.unwrap();
        c.converge().await;
        for id in c.ids() {
            assert!(c.store(id).get("/cut").is_none(), "member {id} has /cut");
        }
        c.shutdown().await;
    }

    /// A forward that reached the leader but whose answer was lost may have been applied:
    /// retrying it could apply a write twice, so the caller is told the outcome is unknown.
    #[tokio::test(start_paused = true)]
    async fn a_forward_whose_answer_is_lost_is_not_retried() {
        let c = Cluster::new(3, 1000, 8);
        let leader = c.leader(&[1, 2, 3]).await;
        let follower = c.ids().into_iter().find(|i| *i != leader).unwrap();
        let before = c.store(leader).revision();
        c.net.cut_one_way(leader, follower);
        let r = c.store(follower).propose(put("/once", "v")).await;
        assert!(
            matches!(r, Err(StoreError::NoAnswer { id }) if id == leader),
            "{r:?}"
        );
        // Applied once on the leader: a retry would have made a second revision.
        assert_eq!(c.store(leader).revision(), before + 1);
        assert_eq!(
            c.store(leader).get("/once").unwrap().mod_revision,
            before + 1
        );
        c.net.heal();
        c.converge().await;
        assert_eq!(c.store(follower).revision(), before + 1);
        c.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn lagging_member_catches_up_by_snapshot_after_compaction() {
        let c = Cluster::new(3, 5, 3);
        let leader = c.leader(&[1, 2, 3]).await;
        let lagging = c.ids().into_iter().find(|i| *i != leader).unwrap();
        let others: Vec<u64> = c.ids().into_iter().filter(|i| *i != lagging).collect();
        c.net.partition(&[&[lagging], &others]);
        for i in 0..40 {
            c.store(leader)
                .put(&format!("/k/{i}"), b"v".to_vec(), Precondition::Absent)
                .await
                .unwrap();
        }
        assert!(c.store(lagging).get("/k/0").is_none());
        // The log is compacted only behind the state machine's durable checkpoint, which a
        // thread writes in real time: wait for it, then one more write lets the leader compact.
        for _ in 0..500 {
            let st = c.store(leader).status();
            if st.checkpointed >= st.applied {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        c.store(leader)
            .put("/k/40", b"v".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        assert!(c.store(lagging).get("/k/0").is_none());
        c.net.heal();
        c.converge().await;
        assert_eq!(c.store(lagging).count("/k/"), 41);
        assert!(c.store(lagging).snapshots_installed() > 0);
        c.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn restarted_member_replays_from_its_applied_index() {
        let mut c = Cluster::new(3, 1000, 4);
        let leader = c.leader(&[1, 2, 3]).await;
        let other = c.ids().into_iter().find(|i| *i != leader).unwrap();
        for i in 0..10 {
            c.store(leader)
                .put(&format!("/r/{i}"), b"v".to_vec(), Precondition::Absent)
                .await
                .unwrap();
        }
        c.converge().await;
        let applied = c.store(other).status().applied;
        c.stop(other).await;
        c.store(leader)
            .put("/r/while-down", b"v".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        c.start(other, false);
        // What it had applied is there at once, from its own disk.
        assert!(c.store(other).status().applied >= applied);
        assert_eq!(c.store(other).count("/r/"), 10);
        c.converge().await;
        assert!(c.store(other).get("/r/while-down").is_some());
        // The whole cluster restarts and keeps its data.
        for id in c.ids() {
            c.restart(id).await;
        }
        let l = c.leader(&[1, 2, 3]).await;
        c.store(l)
            .put("/r/after", b"v".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        c.converge().await;
        for id in c.ids() {
            assert_eq!(c.store(id).count("/r/"), 12);
        }
        c.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_joining_member_is_caught_up_and_a_member_can_be_removed() {
        let mut c = Cluster::new(3, 5, 5);
        let leader = c.leader(&[1, 2, 3]).await;
        for i in 0..20 {
            c.store(leader)
                .put(&format!("/j/{i}"), b"v".to_vec(), Precondition::Absent)
                .await
                .unwrap();
        }
        c.start(4, true);
        let follower = c
            .ids()
            .into_iter()
            .find(|i| *i != leader && *i != 4)
            .unwrap();
        c.store(follower)
            .add_member(MemberInfo {
                id: 4,
                name: "four".into(),
                peer_addr: "sim:4".into(),
            })
            .await
            .unwrap();
        c.converge().await;
        assert_eq!(c.store(4).count("/j/"), 20);
        assert_eq!(c.store(4).status().voters.len(), 4);
        assert_eq!(c.store(1).added_members()[0].name, "four");
        c.store(leader).remove_member(4).await.unwrap();
        c.stop(4).await;
        c.store(leader)
            .put("/j/after", b"v".to_vec(), Precondition::Absent)
            .await
            .unwrap();
        assert_eq!(c.store(leader).status().voters.len(), 3);
        c.shutdown().await;
    }

    /// Concurrent writers and readers against a cluster under seeded random drops, delays,
    /// duplicates, partitions and restarts; every acknowledged write must survive on every
    /// member, every member must have applied the same key and value at each revision, and
    /// reads must be linearizable: a read (read barrier, then the local state) that starts after
    /// a write was acknowledged, through whichever member, sees that write.
    #[tokio::test(start_paused = true)]
    async fn history_holds_under_random_faults() {
        let mut c = Cluster::new(3, 20, 0x5eed);
        c.leader(&[1, 2, 3]).await;
        c.net.set_faults(Faults {
            drop_pct: 10,
            dup_pct: 5,
            max_delay_ms: 30,
        });
        // Every member's applied events, by revision, across restarts.
        type Seen = Arc<Mutex<HashMap<u64, BTreeMap<u64, (String, Vec<u8>)>>>>;
        let seen: Seen = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = |store: Store, seen: &Seen, errors: &Arc<Mutex<Vec<String>>>| {
            let id = store.id();
            let mut sub = store.watch(store.revision()).unwrap();
            let (seen, errors) = (seen.clone(), errors.clone());
            tokio::spawn(async move {
                let mut last = 0;
                while let Ok(ev) = sub.live.recv().await {
                    if ev.revision <= last {
                        errors.lock().unwrap().push(format!(
                            "member {id}: revision {} after {last}",
                            ev.revision
                        ));
                    }
                    last = ev.revision;
                    let v = ev
                        .record
                        .as_ref()
                        .map(|r| r.value.to_vec())
                        .unwrap_or_default();
                    let kv = (ev.key.clone(), v);
                    let mut s = seen.lock().unwrap();
                    if let Some(p) = s.entry(id).or_default().insert(ev.revision, kv.clone())
                        && p != kv
                    {
                        errors.lock().unwrap().push(format!(
                            "member {id}: revision {} applied twice differently",
                            ev.revision
                        ));
                    }
                }
            })
        };
        for id in c.ids() {
            record(c.store(id), &seen, &errors);
        }
        let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        // The members' current handles: a restart replaces one.
        let handles: Arc<Mutex<Vec<Store>>> =
            Arc::new(Mutex::new(c.ids().iter().map(|i| c.store(*i)).collect()));
        let mut writers = Vec::new();
        for w in 0..4u64 {
            let (handles, acked) = (handles.clone(), acked.clone());
            writers.push(tokio::spawn(async move {
                for n in 0..30 {
                    let key = format!("/h/{w}/{n}");
                    // Writers go through any member, as API clients would.
                    let s = handles.lock().unwrap()[((w + n) % 3) as usize].clone();
                    let put = s.put(&key, key.as_bytes().to_vec(), Precondition::Absent);
                    if let Ok((rec, _)) = put.await {
                        acked.lock().unwrap().push((key, rec.mod_revision));
                    }
                }
            }));
        }
        let reads_done = Arc::new(AtomicU64::new(0));
        let mut readers = Vec::new();
        for r in 0..2u64 {
            let (handles, acked, errors) = (handles.clone(), acked.clone(), errors.clone());
            let reads_done = reads_done.clone();
            readers.push(tokio::spawn(async move {
                for n in 0..80u64 {
                    // Everything acknowledged before the read starts.
                    let before = acked.lock().unwrap().clone();
                    let s = handles.lock().unwrap()[((r + n) % 3) as usize].clone();
                    // A member cut off or stopped cannot serve the read; that is no violation.
                    if s.read_barrier().await.is_ok() {
                        reads_done.fetch_add(1, Ordering::Relaxed);
                        let floor = before.iter().map(|(_, rev)| *rev).max().unwrap_or(0);
                        let rev = s.revision();
                        if rev < floor {
                            errors.lock().unwrap().push(format!(
                                "member {}: a read saw revision {rev} after revision {floor} \
                                 was acknowledged",
                                s.id()
                            ));
                        }
                        for (key, wrote) in before.iter().rev().take(3) {
                            let got = s.get(key).map(|rec| rec.mod_revision);
                            if got != Some(*wrote) {
                                errors.lock().unwrap().push(format!(
                                    "member {}: a read of acknowledged {key} (revision \
                                     {wrote}) saw {got:?}",
                                    s.id()
                                ));
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        // The chaos monkey: partitions and restarts while the writers run.
        for round in 0..6 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let victim = 1 + c.net.rand(3);
            match round % 3 {
                0 => {
                    let rest: Vec<u64> = c.ids().into_iter().filter(|i| *i != victim).collect();
                    c.net.partition(&[&[victim], &rest]);
                }
                1 => c.net.heal(),
                _ => {
                    c.restart(victim).await;
                    record(c.store(victim), &seen, &errors);
                    handles.lock().unwrap()[(victim - 1) as usize] = c.store(victim);
                }
            }
        }
        c.net.heal();
        for w in writers.into_iter().chain(readers) {
            w.await.unwrap();
        }
        assert!(
            reads_done.load(Ordering::Relaxed) > 20,
            "too few reads got through: {}",
            reads_done.load(Ordering::Relaxed)
        );
        c.net.set_faults(Faults::default());
        let l = c.leader(&[1, 2, 3]).await;
        c.store(l).propose(Command::Noop).await.unwrap();
        c.converge().await;
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() > 20,
            "too few writes got through: {}",
            acked.len()
        );
        for id in c.ids() {
            let s = c.store(id);
            for (key, rev) in &acked {
                let rec = s
                    .get(key)
                    .unwrap_or_else(|| panic!("member {id} lost {key}"));
                assert_eq!(rec.mod_revision, *rev, "member {id}: {key}");
                assert_eq!(&*rec.value, key.as_bytes());
            }
        }
        let errors = errors.lock().unwrap().clone();
        assert!(errors.is_empty(), "{errors:#?}");
        // Same key and value at the same revision on every member that saw it.
        let seen = seen.lock().unwrap().clone();
        let mut by_rev: BTreeMap<u64, (String, Vec<u8>)> = BTreeMap::new();
        for events in seen.values() {
            for (rev, kv) in events {
                if let Some(other) = by_rev.insert(*rev, kv.clone()) {
                    assert_eq!(&other, kv, "members disagree at revision {rev}");
                }
            }
        }
        c.shutdown().await;
    }
}
