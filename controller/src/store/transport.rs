//! How raft messages and forwarded proposals leave a member. The node loop hands every outgoing
//! batch to a `Transport`; incoming messages arrive on the member's inbox channel. A member that
//! is not the leader forwards proposals to the leader through `Transport::forward`, and learns
//! other members' peer addresses through `Transport::set_peer` as membership changes apply.

use std::future::Future;
use std::pin::Pin;

use raft::prelude::{ConfChangeV2, Message};

use super::StoreError;
use super::state::{Applied, Command};

/// A boxed future, as `forward` returns one (the trait must stay object-safe).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a member asks the leader to propose.
#[derive(Debug, Clone)]
pub enum Forward {
    /// A write to the state machine.
    Write(Command),
    /// A membership change (its `context` carries the `MemberInfo` of an added member).
    Conf(ConfChangeV2),
}

/// The leader's answer to a forwarded proposal: the outcome and the log index it was applied at,
/// so the forwarding member can wait until it has applied that index too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub index: u64,
    pub applied: Applied,
}

/// Sends raft messages to other members. Delivery may fail silently: raft retries.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, messages: Vec<Message>);

    /// Asks member `to` (believed to be the leader) to propose `req` and answer once it applied.
    fn forward(&self, to: u64, req: Forward) -> BoxFuture<Result<Forwarded, StoreError>> {
        let _ = req;
        Box::pin(async move { Err(StoreError::Unreachable { id: to }) })
    }

    /// Learns (or forgets, with `None`) where member `id` listens for peers.
    fn set_peer(&self, id: u64, addr: Option<String>) {
        let _ = (id, addr);
    }
}

/// The transport of a one-member cluster: there is nobody to send to.
#[derive(Debug, Default)]
pub struct LocalOnly;

impl Transport for LocalOnly {
    fn send(&self, messages: Vec<Message>) {
        if !messages.is_empty() {
            tracing::debug!(count = messages.len(), "dropping raft messages: no peers");
        }
    }
}
