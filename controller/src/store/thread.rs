//! The raft thread: a single-threaded tokio runtime on an OS thread of its own, where a
//! member's node loop and its raft connections run. Raft's work never waits behind the API's,
//! nor the API's behind raft's; the loop awaits the log's `fdatasync` (run on the disk store's
//! sync thread) while the connections go on; and a message between the loop and a peer
//! connection is a wake-up on the same thread instead of a hand-off between threads.
//!
//! While a write is in flight the thread polls instead of sleeping ([`busy`]): for
//! [`POLL_WINDOW`] after the last proposal, read or replication message it checks its sockets
//! without blocking and offers the CPU to any other runnable thread (`sched_yield`) in between.
//! On a virtual machine a thread woken from sleep costs tens of microseconds (the idle vCPU
//! halted and must be woken by the host), and a write crosses several such wake-ups on its way
//! through the members; a polling thread picks the next message up at once. Offering the CPU
//! each round keeps the poll from taking time any other thread could use, and an idle member
//! (ticks and heartbeats only) never polls.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

use super::StoreError;

/// The running raft thread. Stop it with [`RaftThread::stop`] once the node loop has ended;
/// tasks still on it then are dropped.
pub struct RaftThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RaftThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaftThread")
    }
}

impl RaftThread {
    pub fn start() -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("skiff-raft".into())
            .spawn(move || {
                // Spawned tasks run while `block_on` drives the runtime.
                let activity = Rc::new(Notify::new());
                BUSY.with(|b| *b.borrow_mut() = Some(activity.clone()));
                rt.block_on(async {
                    tokio::select! {
                        _ = stopped => {}
                        _ = poll_while_busy(&activity) => {}
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| StoreError::Thread(e.to_string()))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where to spawn the node loop and the raft connections.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Tells the runtime to end (once).
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Ends the runtime and waits for the thread.
    pub async fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// How long the raft thread keeps polling after the last sign of a write in flight: longer than
/// a write's round through the members, so a steady stream of writes never sleeps between them.
pub const POLL_WINDOW: Duration = Duration::from_millis(1);

thread_local! {
    /// Set on a raft thread only: what [`busy`] signals.
    static BUSY: RefCell<Option<Rc<Notify>>> = const { RefCell::new(None) };
}

/// Tells the raft thread, if this is one, that a write or read is in flight: it polls for the
/// next [`POLL_WINDOW`] instead of sleeping. Elsewhere (tests) it does nothing.
pub fn busy() {
    BUSY.with(|b| {
        if let Some(n) = &*b.borrow() {
            n.notify_one();
        }
    });
}

/// Whether [`busy`] was called since the last look, taking the signal.
fn signalled(activity: &Notify) -> bool {
    use std::future::Future as _;
    let notified = std::pin::pin!(activity.notified());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    notified.poll(&mut cx).is_ready()
}

async fn poll_while_busy(activity: &Notify) {
    loop {
        activity.notified().await;
        let mut until = Instant::now() + POLL_WINDOW;
        while Instant::now() < until {
            // The runtime checks its sockets without blocking and runs what they woke ...
            tokio::task::yield_now().await;
            // ... and the CPU goes to any other thread that is ready to run.
            std::thread::yield_now();
            if signalled(activity) {
                until = Instant::now() + POLL_WINDOW;
            }
        }
    }
}

impl Drop for RaftThread {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_raft_thread_until_it_stops() {
        let raft = RaftThread::start().unwrap();
        let name = raft
            .handle()
            .spawn(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                std::thread::current().name().map(str::to_string)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("skiff-raft"));
        // Busy: the thread polls for a while and then sleeps again, still serving its tasks.
        raft.handle().spawn(async { busy() }).await.unwrap();
        tokio::time::sleep(POLL_WINDOW * 2).await;
        let late = raft.handle().spawn(async { 7 }).await.unwrap();
        assert_eq!(late, 7);
        let parked = raft.handle().spawn(std::future::pending::<()>());
        raft.stop().await;
        assert!(parked.await.unwrap_err().is_cancelled());
    }
}
