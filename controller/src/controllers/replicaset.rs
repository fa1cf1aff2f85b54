//! The replicaset controller: keeps `spec.replicas` active pods for each ReplicaSet and each
//! ReplicationController (pods it controls through an ownerReference with `controller: true`),
//! creating them from the template and deleting the least useful extras first, and reports the
//! counts in its status. The two kinds differ only in how their selector is written, which
//! this controller does not read (it goes by ownership), so one loop runs both, as the
//! kube-controller-manager's replication manager is its replicaset controller.

use serde_json::{Value, json};

use super::{
    controlled_by, deleting, name, namespace, pod_active, pod_available, pod_from_template,
    pod_ready, uid, write_status,
};
use crate::api::resources::Resource;
use crate::api::{ApiError, DeleteOptions, Objects, resources};
use crate::reconcile::events::{EventType, record};

/// At most this many pods are created or deleted per replicaset per pass.
const BURST: usize = 100;

/// One pass over every replicaset and replication controller.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let kinds = [
        (resources::replica_sets(), "replicaset-controller"),
        (
            resources::replication_controllers(),
            "replication-controller",
        ),
    ];
    let mut pods = None;
    for (res, component) in kinds {
        let (sets, _) = objects.list(res, None)?;
        if sets.is_empty() {
            continue;
        }
        if pods.is_none() {
            pods = Some(objects.list(resources::pods(), None)?.0);
        }
        let pods = pods.as_deref().unwrap_or_default();
        for rs in sets {
            if let Err(e) = sync(objects, res, component, &rs, pods).await {
                tracing::debug!(kind = res.kind, name = %name(&rs), error = %e, "sync failed; next pass retries");
            }
        }
    }
    Ok(())
}

/// Orders pods for deletion: unscheduled, then not ready, then newest first.
fn deletion_rank(pod: &Value) -> (u8, u8, std::cmp::Reverse<String>) {
    let scheduled = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    (
        u8::from(scheduled),
        u8::from(pod_ready(pod)),
        std::cmp::Reverse(
            pod.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ),
    )
}

async fn sync(
    objects: &Objects,
    res: &Resource,
    component: &str,
    rs: &Value,
    pods: &[Value],
) -> Result<(), ApiError> {
    let ns = namespace(rs);
    let owned: Vec<&Value> = pods
        .iter()
        .filter(|p| namespace(p) == ns && controlled_by(p, uid(rs)))
        .collect();
    let mut active: Vec<&Value> = owned.iter().copied().filter(|p| pod_active(p)).collect();
    let want = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize;
    let mut created = 0;
    if !deleting(rs) {
        if active.len() < want {
            let template = rs.pointer("/spec/template").cloned().unwrap_or(json!({}));
            for _ in 0..(want - active.len()).min(BURST) {
                let pod = pod_from_template(rs, &template, name(rs));
                match objects
                    .create(resources::pods(), Some(ns), pod, false)
                    .await
                {
                    Ok(p) => {
                        created += 1;
                        let msg = format!("Created pod: {}", name(&p));
                        record(
                            objects,
                            rs,
                            EventType::Normal,
                            "SuccessfulCreate",
                            &msg,
                            component,
                        )
                        .await;
                    }
                    Err(e) => {
                        let msg = format!("Error creating: {e}");
                        record(
                            objects,
                            rs,
                            EventType::Warning,
                            "FailedCreate",
                            &msg,
                            component,
                        )
                        .await;
                        break;
                    }
                }
            }
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            let extra = active.len() - want;
            for p in active.drain(..extra.min(BURST)) {
                match objects
                    .delete(
                        resources::pods(),
                        Some(ns),
                        name(p),
                        &DeleteOptions::default(),
                    )
                    .await
                {
                    Ok(_) | Err(ApiError::NotFound { .. }) => {
                        let msg = format!("Deleted pod: {}", name(p));
                        record(
                            objects,
                            rs,
                            EventType::Normal,
                            "SuccessfulDelete",
                            &msg,
                            component,
                        )
                        .await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let ready = active.iter().filter(|p| pod_ready(p)).count();
    let min_ready = rs
        .pointer("/spec/minReadySeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let available = active
        .iter()
        .filter(|p| pod_available(p, min_ready))
        .count();
    let labels = rs
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    let fully = active
        .iter()
        .filter(|p| {
            labels.is_none_or(|l| {
                l.iter()
                    .all(|(k, v)| p.pointer("/metadata/labels").and_then(|x| x.get(k)) == Some(v))
            })
        })
        .count();
    let mut status = json!({
        "replicas": active.len() + created,
        "fullyLabeledReplicas": fully + created,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    if let Some(conds) = rs.pointer("/status/conditions") {
        status["conditions"] = conds.clone();
    }
    write_status(objects, res, rs, status).await
}
