//! Recording core/v1 Events about objects, as the scheduler and controllers of Kubernetes do,
//! so `kubectl describe` and `kubectl get events` show what happened. Events are best effort:
//! a failure to record one is logged and never fails the caller.

use serde_json::{Value, json};

use crate::api::{Objects, objects::now, resources};

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
        "count": 1,
        "type": match ty { EventType::Normal => "Normal", EventType::Warning => "Warning" },
        "reportingComponent": component,
        "reportingInstance": "",
    });
    if let Err(e) = objects
        .create(resources::events(), Some(ns), ev, false)
        .await
    {
        tracing::debug!(object = %name, reason, error = %e, "event not recorded");
    }
}
