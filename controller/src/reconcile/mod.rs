//! What the scheduler and the controllers share: waking a level-triggered loop only for the
//! store events it depends on (`Interest`, `Wake`, `wait_for_change`), and recording Events
//! (`events`).

pub mod events;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::store::state::Event;

/// Which store events a loop's pass depends on.
#[derive(Debug, Clone, Copy)]
pub enum Interest {
    /// Objects of these resources (plural names, any group).
    Resources(&'static [&'static str]),
    /// What the garbage collector acts on: any deletion (an owner may be gone), and objects that
    /// carry owner references or are being deleted.
    Ownership,
    /// Any deletion, and these resources.
    DeletionsAnd(&'static [&'static str]),
}

/// The plural resource name in a store key `/registry/<group>/<plural>/...`.
fn key_resource(key: &str) -> &str {
    key.strip_prefix("/registry/")
        .and_then(|k| k.split('/').nth(1))
        .unwrap_or("")
}

/// Whether the object before or after the event contains `needle`. The watch hub runs this as
/// it publishes, on the raft thread, so a large object must not cost a byte-by-byte scan.
fn mentions(e: &Event, needle: &[u8]) -> bool {
    [&e.record, &e.prev]
        .into_iter()
        .flatten()
        .any(|r| memchr::memmem::find(&r.value, needle).is_some())
}

impl Interest {
    pub fn matches(&self, e: &Event) -> bool {
        let res = key_resource(&e.key);
        match self {
            Interest::Resources(rs) => rs.contains(&res),
            Interest::DeletionsAnd(rs) => e.record.is_none() || rs.contains(&res),
            Interest::Ownership => {
                !res.is_empty()
                    && (e.record.is_none()
                        || mentions(e, b"\"ownerReferences\"")
                        || mentions(e, b"\"deletionTimestamp\""))
            }
        }
    }
}

/// Why a loop woke up.
pub enum Wake {
    Cancelled,
    /// The events it is interested in.
    Events(Vec<std::sync::Arc<Event>>),
    /// Events may have been missed (the history moved on, or the loop fell behind): look at
    /// everything.
    Everything,
    /// Nothing it is interested in happened for a period.
    Quiet,
}

/// Waits until the store changes after `after` in a way the loop is `interested` in, `period`
/// passes, or `cancel` fires. The store applies the filter as it publishes, so the loop's task
/// is not woken for other events (a flood of ConfigMap writes while it waits costs it nothing).
pub async fn wait_for_change(
    store: &Store,
    after: u64,
    period: Duration,
    cancel: &CancellationToken,
    interested: impl Fn(&Event) -> bool + Send + Sync + 'static,
) -> Wake {
    let Ok(mut sub) = store.watch_filtered(after, Box::new(interested)) else {
        return Wake::Everything;
    };
    let mut seen: Vec<std::sync::Arc<Event>> = std::mem::take(&mut sub.backlog);
    if seen.is_empty() {
        tokio::select! {
            _ = cancel.cancelled() => return Wake::Cancelled,
            _ = sub.changed() => {}
            _ = tokio::time::sleep(period) => return Wake::Quiet,
        }
    }
    // Let a burst of changes settle into one pass.
    tokio::time::sleep(Duration::from_millis(20)).await;
    if cancel.is_cancelled() {
        return Wake::Cancelled;
    }
    match sub.take() {
        Ok(more) => seen.extend(more),
        Err(_) => return Wake::Everything,
    }
    Wake::Events(seen)
}
