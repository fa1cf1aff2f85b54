//! The namespace controller: a namespace being deleted (`deletionTimestamp` set, phase
//! Terminating) has everything in it deleted — pods gracefully, through their nodes — and is
//! removed once it is empty, as Kubernetes' namespace lifecycle does.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::api::resources::{self, RESOURCES};
use crate::api::{ApiError, DeleteOptions, Objects};
use crate::store::Precondition;

/// One pass: returns how many namespaces were removed.
pub async fn reconcile(objects: &Objects) -> Result<usize, ApiError> {
    let (namespaces, _) = objects.list(resources::namespaces(), None)?;
    let mut removed = 0;
    for ns in namespaces {
        if ns.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = ns["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut left = 0;
        for res in RESOURCES.iter().filter(|r| r.namespaced) {
            let (items, _) = objects.list(res, Some(&name))?;
            left += items.len();
            for item in items {
                if item.pointer("/metadata/deletionTimestamp").is_some() {
                    continue;
                }
                let obj = item["metadata"]["name"].as_str().unwrap_or("");
                match objects
                    .delete(res, Some(&name), obj, &DeleteOptions::default())
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {}
                    Err(e) => {
                        tracing::warn!(namespace = %name, object = %obj, error = %e, "cannot delete")
                    }
                }
            }
        }
        if left == 0 {
            let key = resources::namespaces().key(None, &name);
            let rv = ns["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            match objects
                .store
                .delete(&key, Precondition::ModRevision(rv))
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %name, "namespace removed");
                    removed += 1;
                }
                Err(e) => tracing::debug!(namespace = %name, error = %e, "retry next pass"),
            }
        }
    }
    Ok(removed)
}

/// Runs until cancelled.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    loop {
        let after = objects.store.revision();
        if let Err(e) = reconcile(&objects).await {
            tracing::warn!(error = %e, "namespace pass failed");
        }
        // A terminating namespace waits for its objects to go.
        let interest = crate::reconcile::Interest::DeletionsAnd(&["namespaces"]);
        let period = Duration::from_secs(5);
        let wake = super::wait_for_change(&objects.store, after, period, &cancel, move |e| {
            interest.matches(e)
        });
        if matches!(wake.await, crate::reconcile::Wake::Cancelled) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::store::{Store, StoreConfig, transport::LocalOnly};

    #[tokio::test]
    async fn deleting_a_namespace_empties_then_removes_it() {
        let store = Store::start(
            StoreConfig::single(None),
            Arc::new(LocalOnly),
            CancellationToken::new(),
        )
        .unwrap()
        .store;
        let objects = Objects::new(store);
        let ns = resources::namespaces();
        for _ in 0..100 {
            if objects.ensure_system_objects(None).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        objects
            .create(ns, None, json!({"metadata": {"name": "team"}}), false)
            .await
            .unwrap();
        let cm = resources::find("", "v1", "configmaps").unwrap();
        objects
            .create(
                cm,
                Some("team"),
                json!({"metadata": {"name": "c"}, "data": {"a": "b"}}),
                false,
            )
            .await
            .unwrap();
        let deleted = objects
            .delete(ns, None, "team", &DeleteOptions::default())
            .await
            .unwrap();
        assert_eq!(deleted["status"]["phase"], "Terminating");
        assert!(deleted["metadata"]["deletionTimestamp"].is_string());
        // New content is refused while it terminates.
        let err = objects
            .create(cm, Some("team"), json!({"metadata": {"name": "d"}}), false)
            .await
            .unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err}");
        assert_eq!(
            reconcile(&objects).await.unwrap(),
            0,
            "content is deleted first"
        );
        assert_eq!(reconcile(&objects).await.unwrap(), 1);
        assert!(objects.get(ns, None, "team").is_err());
    }
}
