//! The daemonset controller: one pod per eligible node (Ready, admitted by the template's
//! `nodeSelector` and node affinity, taints tolerated with the daemon tolerations added), bound directly with `spec.nodeName` as Kubernetes' daemon pods are pinned to
//! their node; pods on ineligible nodes, duplicates and failed pods are deleted; pods of an
//! older template are replaced one unavailable pod at a time (RollingUpdate, maxUnavailable).

use serde_json::{Value, json};

use super::deployment::template_hash;
use super::{
    controlled_by, deleting, name, namespace, pod_active, pod_from_template, pod_ready, uid,
    write_status,
};
use crate::api::{ApiError, Objects, resources};
use crate::reconcile::events::{EventType, record};
use crate::scheduler::nodes;

const HASH_LABEL: &str = "controller-revision-hash";

/// One pass over every daemonset.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (sets, _) = objects.list(resources::daemon_sets(), None)?;
    if sets.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    let (nodes, _) = objects.list(resources::nodes(), None)?;
    for ds in sets {
        if let Err(e) = sync(objects, &ds, &pods, &nodes).await {
            tracing::debug!(daemonset = %name(&ds), error = %e, "sync failed; next pass retries");
        }
    }
    Ok(())
}

/// The tolerations Kubernetes' daemonset controller adds to every daemon pod, so daemons keep
/// running on cordoned and pressured nodes.
fn daemon_tolerations() -> Vec<Value> {
    let t = |key: &str, effect: &str| json!({"key": format!("node.kubernetes.io/{key}"), "operator": "Exists", "effect": effect});
    vec![
        t("not-ready", "NoExecute"),
        t("unreachable", "NoExecute"),
        t("disk-pressure", "NoSchedule"),
        t("memory-pressure", "NoSchedule"),
        t("pid-pressure", "NoSchedule"),
        t("unschedulable", "NoSchedule"),
    ]
}

/// The template's tolerations with the daemon ones added.
fn with_daemon_tolerations(spec: &Value) -> Vec<Value> {
    let mut tols = nodes::tolerations(spec).to_vec();
    for t in daemon_tolerations() {
        if !tols.contains(&t) {
            tols.push(t);
        }
    }
    tols
}

/// A Ready node that the template's `nodeSelector` and node affinity admit and whose
/// NoSchedule/NoExecute taints the daemon tolerates.
fn eligible(ds: &Value, node: &Value) -> bool {
    let spec = ds.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    crate::scheduler::node_ready(node)
        && nodes::affinity_matches(spec, node)
        && nodes::untolerated_taint(
            &with_daemon_tolerations(spec),
            node,
            &["NoSchedule", "NoExecute"],
        )
        .is_none()
}

fn node_of(pod: &Value) -> &str {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

async fn sync(
    objects: &Objects,
    ds: &Value,
    pods: &[Value],
    nodes: &[Value],
) -> Result<(), ApiError> {
    let ns = namespace(ds);
    let owned: Vec<&Value> = pods
        .iter()
        .filter(|p| namespace(p) == ns && controlled_by(p, uid(ds)))
        .collect();
    let template = ds.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let hash = template_hash(&template);
    let is_current = |p: &Value| {
        p.pointer(&format!("/metadata/labels/{HASH_LABEL}"))
            .and_then(Value::as_str)
            == Some(hash.as_str())
    };
    let targets: Vec<&Value> = nodes.iter().filter(|n| eligible(ds, n)).collect();
    let mut unavailable = 0;
    let mut outdated = Vec::new();
    let (mut ready, mut updated, mut current, mut misscheduled) = (0, 0, 0, 0);
    let active = !deleting(ds);
    for node in &targets {
        let node_name = name(node);
        let mut here: Vec<&Value> = owned
            .iter()
            .copied()
            .filter(|p| node_of(p) == node_name && !deleting(p))
            .collect();
        // A failed daemon pod is deleted and replaced.
        for p in here.iter().filter(|p| !pod_active(p)) {
            if active {
                super::delete_pod(objects, p).await?;
            }
        }
        here.retain(|p| pod_active(p));
        here.sort_by_key(|p| {
            p.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        });
        if here.len() > 1 && active {
            for p in &here[1..] {
                super::delete_pod(objects, p).await?;
            }
        }
        match here.first() {
            None => {
                unavailable += 1;
                if active {
                    let mut t = template.clone();
                    t["metadata"]["labels"][HASH_LABEL] = json!(hash);
                    let mut pod = pod_from_template(ds, &t, name(ds));
                    pod["spec"]["nodeName"] = json!(node_name);
                    pod["spec"]["tolerations"] = json!(with_daemon_tolerations(&template["spec"]));
                    match objects
                        .create(resources::pods(), Some(ns), pod, false)
                        .await
                    {
                        Ok(p) => {
                            let msg = format!("Created pod: {}", name(&p));
                            record(
                                objects,
                                ds,
                                EventType::Normal,
                                "SuccessfulCreate",
                                &msg,
                                "daemonset-controller",
                            )
                            .await;
                        }
                        Err(e) => {
                            tracing::debug!(daemonset = %name(ds), node = %node_name, error = %e, "cannot create pod")
                        }
                    }
                }
            }
            Some(p) => {
                current += 1;
                if pod_ready(p) {
                    ready += 1;
                } else {
                    unavailable += 1;
                }
                if is_current(p) {
                    updated += 1;
                } else {
                    outdated.push(*p);
                }
            }
        }
    }
    // Pods on nodes that should not run one.
    for p in owned.iter().filter(|p| pod_active(p)) {
        if !targets.iter().any(|n| name(n) == node_of(p)) {
            misscheduled += 1;
            if active {
                super::delete_pod(objects, p).await?;
            }
        }
    }
    // Rolling update: replace outdated pods while fewer than maxUnavailable are down.
    let on_delete = ds
        .pointer("/spec/updateStrategy/type")
        .and_then(Value::as_str)
        == Some("OnDelete");
    let max_unavailable = super::deployment::int_or_percent(
        ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"),
        targets.len() as i64,
        false,
        1,
    )
    .max(1);
    if active && !on_delete {
        let mut room = (max_unavailable - unavailable).max(0);
        // Not-ready outdated pods go first: replacing them costs no availability.
        outdated.sort_by_key(|p| pod_ready(p));
        for p in outdated {
            if !pod_ready(p) {
                super::delete_pod(objects, p).await?;
            } else if room > 0 {
                room -= 1;
                super::delete_pod(objects, p).await?;
            }
        }
    }
    let status = json!({
        "desiredNumberScheduled": targets.len(),
        "currentNumberScheduled": current,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": targets.len() as i64 - ready as i64,
        "numberMisscheduled": misscheduled,
        "updatedNumberScheduled": updated,
        "observedGeneration": ds.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
    });
    write_status(objects, resources::daemon_sets(), ds, status).await
}
