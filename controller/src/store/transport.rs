//! How raft messages leave a member. The node loop hands every outgoing batch to a `Transport`;
//! incoming messages arrive on the member's inbox channel.

use raft::prelude::Message;

/// Sends raft messages to other members. Delivery may fail silently: raft retries.
pub trait Transport: Send + Sync + 'static {
    fn send(&self, messages: Vec<Message>);
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
