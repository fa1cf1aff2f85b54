//! skiff's node agent (the kubelet's role): registers the Node, renews its Lease, watches the
//! pods bound to it and drives a CRI runtime to run them, reports their status, and serves
//! container logs over HTTP.

mod backoff;
pub mod cri;
mod error;
pub mod quantity;

pub use error::AgentError;
mod registry;
mod spec;
mod status;
mod worker;
