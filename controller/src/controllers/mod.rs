//! Controllers: level-triggered loops that move the cluster towards what its objects ask for.
//! Each pass looks at the whole state of its resources; a pass runs when a store event touches
//! what it watches (`Interest`), and every few seconds. Events of resources no loop watches (a
//! stream of ConfigMap writes, say) wake nothing, so the cost of a write does not grow with the
//! number of objects stored.

pub mod apiservice;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod event_ttl;
pub mod gc;
pub mod job;
pub mod kubernetes_service;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod replicaset;
pub mod servicelb;
pub mod statefulset;
pub mod storage;
pub mod taint_eviction;

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Objects, resources};
use crate::reconcile::{Interest, Wake, wait_for_change};
use crate::store::state::Event;

/// Runs the workload controllers (deployments, replicasets, statefulsets, daemonsets, jobs,
/// cronjobs, endpoints, storage, taint eviction, disruption budgets) and the garbage collector until cancelled: each
/// pass on a change to what it watches, and every few seconds (the collector, which reads everything, less often). One loop keeps their writes
/// ordered and a chain (deployment → replicaset → pods → endpoints) converges within a few
/// passes.
pub async fn run(objects: Objects, cancel: CancellationToken) {
    const PASSES: [(&str, Interest); 13] = [
        ("garbage collector", Interest::Ownership),
        (
            "deployment",
            Interest::Resources(&["deployments", "replicasets", "pods"]),
        ),
        (
            "replicaset",
            Interest::Resources(&["replicasets", "replicationcontrollers", "pods"]),
        ),
        (
            "daemonset",
            Interest::Resources(&["daemonsets", "pods", "nodes"]),
        ),
        ("job", Interest::Resources(&["jobs", "pods"])),
        (
            "endpoints",
            Interest::Resources(&["services", "pods", "endpoints", "endpointslices"]),
        ),
        (
            "statefulset",
            Interest::Resources(&[
                "statefulsets",
                "pods",
                "controllerrevisions",
                "persistentvolumeclaims",
            ]),
        ),
        ("cronjob", Interest::Resources(&["cronjobs", "jobs"])),
        (
            "storage",
            Interest::Resources(&[
                "persistentvolumeclaims",
                "persistentvolumes",
                "storageclasses",
                "pods",
                "nodes",
            ]),
        ),
        ("taint eviction", Interest::Resources(&["nodes", "pods"])),
        (
            "disruption",
            Interest::Resources(&[
                "poddisruptionbudgets",
                "pods",
                "replicasets",
                "deployments",
                "statefulsets",
            ]),
        ),
        (
            "apiservice",
            Interest::Resources(&["apiservices", "services", "endpointslices"]),
        ),
        ("servicelb", Interest::Resources(&["services", "nodes"])),
    ];
    let mut due = [true; PASSES.len()];
    let mut quiet_wakes = 0u32;
    loop {
        let after = objects.store.revision();
        let started = std::time::Instant::now();
        for (i, (name, _)) in PASSES.iter().enumerate() {
            if !due[i] {
                continue;
            }
            let r = match i {
                0 => gc::reconcile(&objects).await,
                1 => deployment::reconcile(&objects).await,
                2 => replicaset::reconcile(&objects).await,
                3 => daemonset::reconcile(&objects).await,
                4 => job::reconcile(&objects).await,
                5 => endpoints::reconcile(&objects).await,
                6 => statefulset::reconcile(&objects).await,
                7 => cronjob::reconcile(&objects).await,
                8 => storage::reconcile(&objects).await,
                9 => taint_eviction::reconcile(&objects).await,
                10 => disruption::reconcile(&objects).await,
                11 => apiservice::reconcile(&objects).await,
                _ => servicelb::reconcile(&objects).await,
            };
            if let Err(e) = r {
                tracing::warn!(controller = name, error = %e, "pass failed");
            }
        }
        // The passes list what they look at: on a large cluster under a stream of pod writes
        // they would take every core. Resting as long as the pass took keeps them to half of
        // one, so the API server and the scheduler keep theirs.
        let took = started.elapsed();
        if took > Duration::from_millis(20) {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(took) => {}
            }
        }
        let any = |e: &Event| PASSES.iter().any(|(_, i)| i.matches(e));
        match wait_for_change(&objects.store, after, Duration::from_secs(5), &cancel, any).await {
            Wake::Cancelled => return,
            Wake::Events(evs) => {
                for (i, (_, interest)) in PASSES.iter().enumerate() {
                    due[i] = evs.iter().any(|e| interest.matches(e));
                }
            }
            Wake::Everything => {
                due = [true; PASSES.len()];
            }
            Wake::Quiet => {
                // The collector lists every object: on a quiet cluster, once a minute.
                quiet_wakes += 1;
                due = [true; PASSES.len()];
                due[0] = quiet_wakes.is_multiple_of(12);
            }
        }
    }
}

/// The `metadata.uid` of an object.
pub(crate) fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn name(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn namespace(obj: &Value) -> &str {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub(crate) fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

/// Whether `obj`'s controller ownerReference is the object with `owner_uid`.
pub(crate) fn controlled_by(obj: &Value, owner_uid: &str) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r["uid"] == owner_uid && r["controller"].as_bool() == Some(true))
        })
}

/// The ownerReference a controller puts on what it creates.
pub(crate) fn controller_ref(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// Whether the pod is Ready (its Ready condition is True).
pub(crate) fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Running, Ready, not being deleted, and Ready for at least `min_ready` seconds: what
/// Kubernetes counts as available.
pub(crate) fn pod_available(pod: &Value, min_ready: i64) -> bool {
    let running = pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    if deleting(pod) || !running || !pod_ready(pod) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    let since = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    since.is_some_and(|t| {
        jiff::Timestamp::now().duration_since(t) >= jiff::SignedDuration::from_secs(min_ready)
    })
}

/// Whether the pod has finished (Succeeded or Failed).
pub(crate) fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod counts as one of its controller's replicas: not finished, not being deleted.
pub(crate) fn pod_active(pod: &Value) -> bool {
    !pod_terminal(pod) && !deleting(pod)
}

/// A new pod from a workload's template, owned by `owner`.
pub(crate) fn pod_from_template(owner: &Value, template: &Value, prefix: &str) -> Value {
    let mut meta = template.get("metadata").cloned().unwrap_or(json!({}));
    if !meta.is_object() {
        meta = json!({});
    }
    meta["generateName"] = json!(format!("{prefix}-"));
    meta["namespace"] = json!(namespace(owner));
    meta["ownerReferences"] = json!([controller_ref(owner)]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
        m.remove("creationTimestamp");
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    })
}

/// Writes `status` as the object's status if it differs; no write when nothing changed, so a
/// pass over a settled cluster writes nothing (and does not wake itself up).
pub(crate) async fn write_status(
    objects: &Objects,
    res: &resources::Resource,
    obj: &Value,
    status: Value,
) -> Result<(), ApiError> {
    if obj.get("status") == Some(&status) {
        return Ok(());
    }
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    ignore_missing(
        objects
            .modify(res, ns, name(obj), crate::api::Part::Status, |o| {
                o["status"] = status.clone();
                Ok(())
            })
            .await,
    )
}

/// An object that is already gone is what a delete or status write wanted anyway.
pub(crate) fn ignore_missing<T>(r: Result<T, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) | Err(ApiError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes a pod gracefully; one already gone counts as deleted.
pub(crate) async fn delete_pod(objects: &Objects, pod: &Value) -> Result<(), ApiError> {
    let opts = crate::api::DeleteOptions::default();
    ignore_missing(
        objects
            .delete(resources::pods(), Some(namespace(pod)), name(pod), &opts)
            .await,
    )
}

/// A condition as Kubernetes writes it, keeping `lastTransitionTime` (and `lastUpdateTime`)
/// from the previous one when its status (and reason and message) did not change.
pub(crate) fn condition(
    old: &Value,
    ty: &str,
    status: bool,
    reason: &str,
    message: &str,
    with_update_time: bool,
) -> Value {
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let st = if status { "True" } else { "False" };
    let now = crate::api::objects::now();
    let transition = match prev {
        Some(p) if p["status"] == st => p["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c = json!({"type": ty, "status": st, "reason": reason, "message": message, "lastTransitionTime": transition});
    if with_update_time {
        c["lastUpdateTime"] = match prev {
            Some(p) if p["status"] == st && p["reason"] == reason && p["message"] == message => {
                p["lastUpdateTime"].clone()
            }
            _ => json!(now),
        };
    }
    c
}

#[cfg(test)]
pub(crate) mod tests;
