//! Lifecycle events of containers and sandboxes, for CRI's GetContainerEvents (the kubelet's
//! evented PLEG) and for the runtime's own waits (StopContainer learns of an exit without
//! polling). The runtime sends what happened to which id; each open stream turns it into a
//! `ContainerEventResponse` with the statuses at the time it is delivered.

use cri_api::v1 as cri;
use tokio::sync::broadcast;

/// Events kept for a stream that falls behind; a stream that loses more is told so in the log
/// and goes on (a kubelet relists from time to time anyway).
const BACKLOG: usize = 1024;

#[derive(Debug, Clone)]
pub struct Event {
    /// The container's id, or the sandbox's for an event of the sandbox itself.
    pub id: String,
    pub sandbox_id: String,
    pub kind: cri::ContainerEventType,
    /// Nanoseconds since the epoch.
    pub at: i64,
}

/// The broadcast every stream and waiter subscribes to; clones send on the same one.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Events {
    /// Sends an event now; nobody listening is not an error.
    pub fn send(&self, id: &str, sandbox_id: &str, kind: cri::ContainerEventType) {
        let _ = self.tx.send(Event {
            id: id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            kind,
            at: crate::state::now_ns(),
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// Waits until `rx` carries a stop of `id`, or the channel lagged or closed (the caller checks
/// the state itself in those cases).
pub async fn stopped(rx: &mut broadcast::Receiver<Event>, id: &str) {
    loop {
        match rx.recv().await {
            Ok(ev) if ev.id == id && ev.kind == cri::ContainerEventType::ContainerStoppedEvent => {
                return;
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            // The runtime holds the sender as long as it lives: nothing more will come.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}
