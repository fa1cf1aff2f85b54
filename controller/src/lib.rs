//! skiff's control plane: the raft-replicated store, the Kubernetes API server, the scheduler
//! and the controllers. `run` starts them all for one member.

pub mod store;
