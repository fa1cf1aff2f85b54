//! Recording core/v1 Events about objects, as the scheduler and controllers of Kubernetes do,
//! so `kubectl describe` and `kubectl get events` show what happened. Events are best effort:
//! a failure to record one is logged and never fails the caller.
//!
//! Controllers look at every object again on each pass, so the same event recurs; as client-go's
//! correlator does, a recurrence bumps the first event's `count` and `lastTimestamp` instead of
//! adding an event, and at most once per [`AGGREGATE_WINDOW`] so a busy loop does not turn into
//! store writes.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::api::{ApiError, Objects, Part, objects::now, resources};

/// How often a recurring event is written back with its new count.
pub const AGGREGATE_WINDOW: Duration = Duration::from_secs(30);
/// Past this many remembered events, the ones not seen for a window are forgotten.
const MAX_REMEMBERED: usize = 4096;
/// Past this many even after that (a burst of distinct events within one window), all are
/// forgotten: a forgotten event's next occurrence is written as a new event, nothing worse.
const HARD_LIMIT: usize = 65_536;

/// What makes two events the same one: the object, and what is said about it by whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: String,
    reason: String,
    message: String,
    warning: bool,
    component: String,
}

#[derive(Debug)]
struct Seen {
    namespace: String,
    name: String,
    /// Occurrences written to the event so far.
    written: u64,
    /// Occurrences since.
    pending: u64,
    at: Instant,
}

/// The events recorded lately, and the size past which they are next swept.
#[derive(Default)]
struct Memory {
    seen: HashMap<Key, Seen>,
    sweep_at: usize,
}

static SEEN: LazyLock<Mutex<Memory>> = LazyLock::new(Default::default);

/// What [`record`] should do for an occurrence.
enum Plan {
    Create,
    Skip,
    Bump {
        namespace: String,
        name: String,
        count: u64,
    },
}

fn plan(key: &Key, now: Instant) -> Plan {
    let mut memory = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Swept when it has doubled since the last sweep, not on every event past the limit: a
    // burst of thousands of distinct events a second (a scheduler binding a large cluster)
    // would otherwise walk the whole map for each one.
    if memory.seen.len() > memory.sweep_at.max(MAX_REMEMBERED) {
        memory
            .seen
            .retain(|_, s| now.duration_since(s.at) < AGGREGATE_WINDOW);
        if memory.seen.len() > HARD_LIMIT {
            memory.seen.clear();
        }
        memory.sweep_at = memory.seen.len() * 2;
    }
    let Some(s) = memory.seen.get_mut(key) else {
        return Plan::Create;
    };
    s.pending += 1;
    if now.duration_since(s.at) < AGGREGATE_WINDOW {
        return Plan::Skip;
    }
    s.written += s.pending;
    s.pending = 0;
    s.at = now;
    Plan::Bump {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        count: s.written,
    }
}

fn remember(key: Key, namespace: &str, name: &str, count: u64) {
    let mut memory = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    memory.seen.insert(
        key,
        Seen {
            namespace: namespace.to_string(),
            name: name.to_string(),
            written: count,
            pending: 0,
            at: Instant::now(),
        },
    );
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Records one event about `involved` from `component`.
pub async fn record(
    objects: &Objects,
    involved: &Value,
    ty: EventType,
    reason: &str,
    message: &str,
    component: &str,
) {
    let meta = &involved["metadata"];
    let name = meta["name"].as_str().unwrap_or("");
    let ns = meta["namespace"].as_str().unwrap_or("default");
    let key = Key {
        object: format!(
            "{}/{}/{ns}/{name}/{}",
            involved["apiVersion"].as_str().unwrap_or(""),
            involved["kind"].as_str().unwrap_or(""),
            meta["uid"].as_str().unwrap_or("")
        ),
        reason: reason.to_string(),
        message: message.to_string(),
        warning: ty == EventType::Warning,
        component: component.to_string(),
    };
    let mut count = 1;
    match plan(&key, Instant::now()) {
        Plan::Skip => return,
        Plan::Create => {}
        Plan::Bump {
            namespace,
            name: event,
            count: n,
        } => {
            let ts = now();
            let r = objects
                .modify(
                    resources::events(),
                    Some(&namespace),
                    &event,
                    Part::Main,
                    |e| {
                        e["count"] = json!(n);
                        e["lastTimestamp"] = json!(ts);
                        Ok(())
                    },
                )
                .await;
            match r {
                Ok(_) => return,
                // Expired (--event-ttl) or deleted: a new one carries the count on.
                Err(ApiError::NotFound { .. }) => count = n,
                Err(e) => {
                    tracing::debug!(object = %name, reason, error = %e, "event not updated");
                    return;
                }
            }
        }
    }
    let nanos = jiff::Timestamp::now().as_nanosecond();
    let ts = now();
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{name}.{:x}", nanos), "namespace": ns},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": name,
            "namespace": meta.get("namespace").cloned().unwrap_or(Value::Null),
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": count,
        "type": match ty { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "reportingComponent": component,
        "reportingInstance": "",
    });
    let event = ev["metadata"]["name"].as_str().unwrap_or("").to_string();
    match objects
        .create(resources::events(), Some(ns), ev, false)
        .await
    {
        Ok(_) => remember(key, ns, &event, count),
        Err(e) => tracing::debug!(object = %name, reason, error = %e, "event not recorded"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        Key {
            object: format!("v1/Pod/default/p/{reason}-uid"),
            reason: reason.into(),
            message: "m".into(),
            warning: false,
            component: "c".into(),
        }
    }

    #[test]
    fn recurrences_are_counted_and_written_once_per_window() {
        let k = key("Recurring");
        let t0 = Instant::now();
        assert!(matches!(plan(&k, t0), Plan::Create));
        remember(k.clone(), "default", "p.1", 1);
        assert!(matches!(plan(&k, Instant::now()), Plan::Skip));
        assert!(matches!(plan(&k, Instant::now()), Plan::Skip));
        let later = Instant::now() + AGGREGATE_WINDOW;
        match plan(&k, later) {
            Plan::Bump { name, count, .. } => {
                assert_eq!(name, "p.1");
                assert_eq!(count, 4, "the first write and three recurrences");
            }
            _ => panic!("expected a bump"),
        }
        assert!(matches!(plan(&k, later), Plan::Skip));
    }

    #[test]
    fn a_different_message_is_a_different_event() {
        let k = key("Differs");
        remember(k.clone(), "default", "p.2", 1);
        let mut other = k.clone();
        other.message = "n".into();
        assert!(matches!(plan(&other, Instant::now()), Plan::Create));
    }
}
