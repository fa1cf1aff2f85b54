//! What the pod workers tell the HTTP server: which pods this node runs (namespace/name → uid)
//! and which of their containers are running, so `containerLogs` finds the right log
//! directory and knows when a `follow` stream is over. One writer per pod (its worker), many
//! cheap readers.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// One pod as its worker last saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodEntry {
    pub uid: String,
    /// Names of containers (init or regular) running now.
    pub running: BTreeSet<String>,
}

/// Shared map of the node's pods; clones share the same map.
#[derive(Debug, Clone, Default)]
pub struct PodRegistry {
    inner: Arc<RwLock<HashMap<(String, String), PodEntry>>>,
}

impl PodRegistry {
    pub fn set(&self, namespace: &str, name: &str, entry: PodEntry) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        map.insert((namespace.to_owned(), name.to_owned()), entry);
    }

    /// Removes the pod if the entry still belongs to `uid` (a newer pod may reuse the name).
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        let mut map = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let key = (namespace.to_owned(), name.to_owned());
        if map.get(&key).is_some_and(|e| e.uid == uid) {
            map.remove(&key);
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<PodEntry> {
        let map = self.inner.read().unwrap_or_else(|e| e.into_inner());
        map.get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}
