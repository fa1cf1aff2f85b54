//! Events expire: the control plane deletes an Event once it has not been seen again for the
//! TTL (kube-apiserver's `--event-ttl`, 1 hour by default, which etcd leases enforce there),
//! so a long-lived cluster's event list does not grow without end.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, DeleteOptions, Objects, resources};

/// When the event was last seen: `lastTimestamp`, else `eventTime`, else its creation.
fn last_seen(ev: &Value) -> Option<jiff::Timestamp> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| ev.pointer(p).and_then(Value::as_str))
    .find(|s| !s.is_empty())
    .and_then(|s| s.parse().ok())
}

/// One pass: deletes the events older than `ttl`; returns how many.
pub async fn reconcile(objects: &Objects, ttl: Duration) -> Result<usize, ApiError> {
    let (events, _) = objects.list(resources::events(), None)?;
    let now = jiff::Timestamp::now();
    let mut deleted = 0;
    for ev in events {
        let old = last_seen(&ev).is_some_and(|t| {
            now.duration_since(t)
                .try_into()
                .is_ok_and(|age: Duration| age >= ttl)
        });
        if !old {
            continue;
        }
        let name = ev
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ns = ev.pointer("/metadata/namespace").and_then(Value::as_str);
        match objects
            .delete(resources::events(), ns, name, &DeleteOptions::default())
            .await
        {
            Ok(_) | Err(ApiError::NotFound { .. }) => deleted += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Expires events every minute (or every tenth of a shorter TTL) until cancelled.
pub async fn run(objects: Objects, ttl: Duration, cancel: CancellationToken) {
    let period = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        match reconcile(&objects, ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "expired events deleted"),
            Err(e) => tracing::warn!(error = %e, "event expiry failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
    }
}
