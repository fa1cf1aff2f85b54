//! Taint-based eviction, as Kubernetes' taint-eviction-controller does it: a pod on a node with
//! a NoExecute taint it does not tolerate is deleted at once; one it tolerates for
//! `tolerationSeconds` is deleted when that time has passed since the taint was added. The pod
//! gets the DisruptionTarget condition (DeletionByTaintManager) first, so its owner and users
//! see why it went.

use serde_json::Value;

use super::{deleting, name, namespace, pod_terminal};
use crate::api::kinds::pod::mark_disruption_target;
use crate::api::{ApiError, DeleteOptions, Objects, resources};
use crate::reconcile::events::{EventType, record};
use crate::scheduler::nodes::{tolerates, tolerations};

const COMPONENT: &str = "taint-eviction-controller";

/// When (if ever) a pod must go from a node with these NoExecute taints: `Some(None)` now,
/// `Some(Some(t))` at `t`, `None` never.
pub fn deadline(pod: &Value, taints: &[&Value]) -> Option<Option<jiff::Timestamp>> {
    let tols = tolerations(pod.get("spec").unwrap_or(&Value::Null));
    let mut at: Option<jiff::Timestamp> = None;
    for taint in taints {
        let matching: Vec<&Value> = tols.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(None);
        }
        // Tolerated for the shortest tolerationSeconds of the matching tolerations; forever if
        // one of them gives no limit.
        let secs = matching
            .iter()
            .map(|t| t["tolerationSeconds"].as_i64())
            .try_fold(i64::MAX, |m, s| s.map(|s| m.min(s.max(0))));
        if let Some(secs) = secs {
            let added = taint["timeAdded"]
                .as_str()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .unwrap_or_else(jiff::Timestamp::now);
            let t = added + jiff::SignedDuration::from_secs(secs);
            at = Some(at.map_or(t, |a| a.min(t)));
        }
    }
    at.map(Some)
}

/// One pass over the pods of nodes with NoExecute taints.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let nodes = objects.list_containing(resources::nodes(), None, b"NoExecute")?;
    let tainted: Vec<(&str, Vec<&Value>)> = nodes
        .iter()
        .map(|n| {
            let t: Vec<&Value> = n
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|t| t["effect"] == "NoExecute")
                .collect();
            (name(n), t)
        })
        .filter(|(_, t)| !t.is_empty())
        .collect();
    if tainted.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    let now_ts = jiff::Timestamp::now();
    for pod in &pods {
        if deleting(pod) || pod_terminal(pod) {
            continue;
        }
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
        let Some((_, taints)) = tainted.iter().find(|(n, _)| Some(*n) == node) else {
            continue;
        };
        match deadline(pod, taints) {
            Some(None) => evict(objects, pod).await?,
            Some(Some(t)) if t <= now_ts => evict(objects, pod).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn evict(objects: &Objects, pod: &Value) -> Result<(), ApiError> {
    let ns = namespace(pod);
    let pod_name = name(pod);
    tracing::info!(pod = %format!("{ns}/{pod_name}"), "evicting for a NoExecute taint");
    mark_disruption_target(
        objects,
        Some(ns),
        pod_name,
        "DeletionByTaintManager",
        "Taint manager: deleting due to NoExecute taint",
    )
    .await?;
    record(
        objects,
        pod,
        EventType::Normal,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{pod_name}"),
        COMPONENT,
    )
    .await;
    let r = objects
        .delete(
            resources::pods(),
            Some(ns),
            pod_name,
            &DeleteOptions::default(),
        )
        .await;
    super::ignore_missing(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn untolerated_now_tolerated_for_a_while_or_forever() {
        let taint = json!({"key": "maintenance", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"});
        let pod = |tols: Value| json!({"spec": {"tolerations": tols}});
        assert_eq!(deadline(&pod(json!([])), &[&taint]), Some(None));
        assert_eq!(
            deadline(
                &pod(
                    json!([{"key": "maintenance", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}])
                ),
                &[&taint]
            ),
            Some(Some("2026-01-01T00:01:00Z".parse().unwrap()))
        );
        assert_eq!(
            deadline(
                &pod(json!([{"key": "maintenance", "operator": "Exists"}])),
                &[&taint]
            ),
            None
        );
    }
}
