//! The raft thread: a single-threaded tokio runtime on an OS thread of its own, where a
//! member's node loop and its raft connections run. The loop blocks on the log's `fdatasync`;
//! here that stalls only raft's own work, never the API's workers, and a message between the
//! loop and a peer connection is a wake-up on the same thread instead of a hand-off between
//! threads.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

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
                rt.block_on(async {
                    let _ = stopped.await;
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

    /// Ends the runtime and waits for the thread.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for RaftThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
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
        let parked = raft.handle().spawn(std::future::pending::<()>());
        raft.stop().await;
        assert!(parked.await.unwrap_err().is_cancelled());
    }
}
