//! The disruption controller, as Kubernetes': each PodDisruptionBudget's status says how many of
//! its pods are expected (the scale of their controllers when the budget is a percentage or a
//! maxUnavailable), how many must stay healthy, how many are (Ready, not being deleted, not just
//! evicted), and so how many disruptions the eviction subresource may allow now. Evictions the
//! pods have not yet answered by going away are remembered for two minutes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{name, namespace, uid, write_status};
use crate::api::kinds::poddisruptionbudget::{pod_healthy, scaled};
use crate::api::selectors::selector_matches;
use crate::api::{ApiError, Objects, resources};

/// How long an eviction is remembered if its pod does not go.
const DELETION_TIMEOUT: jiff::SignedDuration = jiff::SignedDuration::from_secs(120);

/// One pass over every budget.
pub async fn reconcile(objects: &Objects) -> Result<(), ApiError> {
    let (budgets, _) = objects.list(resources::pod_disruption_budgets(), None)?;
    if budgets.is_empty() {
        return Ok(());
    }
    let (pods, _) = objects.list(resources::pods(), None)?;
    let world = World {
        pods: &pods,
        replica_sets: &objects.list(resources::replica_sets(), None)?.0,
        deployments: &objects.list(resources::deployments(), None)?.0,
        stateful_sets: &objects.list(resources::stateful_sets(), None)?.0,
    };
    let now = jiff::Timestamp::now();
    for b in &budgets {
        let status = world.status(b, now);
        let mut merged = b.get("status").cloned().unwrap_or_else(|| json!({}));
        if let (Some(m), Some(s)) = (merged.as_object_mut(), status.as_object()) {
            for (k, v) in s {
                m.insert(k.clone(), v.clone());
            }
            if status.get("disruptedPods").is_none() {
                m.remove("disruptedPods");
            }
        }
        let merged = keep_transition_times(b, merged);
        if b.get("status") != Some(&merged)
            && let Err(e) =
                write_status(objects, resources::pod_disruption_budgets(), b, merged).await
        {
            tracing::debug!(budget = %name(b), error = %e, "status not written; next pass retries");
        }
    }
    Ok(())
}

/// A condition whose status did not change keeps its lastTransitionTime.
fn keep_transition_times(budget: &Value, mut status: Value) -> Value {
    let old = budget
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(cs) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(o) = old
                .iter()
                .find(|o| o["type"] == c["type"] && o["status"] == c["status"])
            {
                c["lastTransitionTime"] = o["lastTransitionTime"].clone();
            }
        }
    }
    status
}

struct World<'a> {
    pods: &'a [Value],
    replica_sets: &'a [Value],
    deployments: &'a [Value],
    stateful_sets: &'a [Value],
}

fn replicas(obj: &Value) -> i64 {
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn controller_of(obj: &Value) -> Option<&Value> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|r| r["controller"] == true)
}

impl World<'_> {
    /// The scale of the controller of `pod` (a Deployment through its ReplicaSet, a
    /// ReplicaSet, a StatefulSet) with its uid, or why there is none.
    fn scale_of(&self, pod: &Value) -> Result<(String, i64), String> {
        let who = format!("{}/{}", namespace(pod), name(pod));
        let owner = controller_of(pod).ok_or_else(|| format!("pod {who} has no controller"))?;
        let find = |list: &[Value], uid_: &str| {
            list.iter()
                .find(|o| uid(o) == uid_)
                .cloned()
                .ok_or_else(|| format!("the controller of pod {who} is not found"))
        };
        let owner_uid = owner["uid"].as_str().unwrap_or("");
        match owner["kind"].as_str().unwrap_or("") {
            "ReplicaSet" => {
                let rs = find(self.replica_sets, owner_uid)?;
                match controller_of(&rs).filter(|o| o["kind"] == "Deployment") {
                    Some(d) => {
                        let d = find(self.deployments, d["uid"].as_str().unwrap_or(""))?;
                        Ok((uid(&d).to_string(), replicas(&d)))
                    }
                    None => Ok((uid(&rs).to_string(), replicas(&rs))),
                }
            }
            "StatefulSet" => {
                let s = find(self.stateful_sets, owner_uid)?;
                Ok((uid(&s).to_string(), replicas(&s)))
            }
            kind => Err(format!(
                "the controller of pod {who} is a {kind}, which has no scale to take percentages or maxUnavailable of"
            )),
        }
    }

    /// The budget's status now.
    fn status(&self, budget: &Value, now: jiff::Timestamp) -> Value {
        let ns = namespace(budget);
        let selector = budget.pointer("/spec/selector").unwrap_or(&Value::Null);
        let pods: Vec<&Value> = self
            .pods
            .iter()
            .filter(|p| {
                namespace(p) == ns
                    && selector_matches(
                        selector,
                        p.pointer("/metadata/labels").unwrap_or(&Value::Null),
                    )
            })
            .collect();
        // Evictions still expected to take effect.
        let mut disrupted: BTreeMap<String, Value> = BTreeMap::new();
        if let Some(m) = budget
            .pointer("/status/disruptedPods")
            .and_then(Value::as_object)
        {
            for (pod_name, at) in m {
                let live = pods.iter().any(|p| {
                    name(p) == pod_name
                        && p.pointer("/metadata/deletionTimestamp")
                            .is_none_or(Value::is_null)
                });
                let fresh = at
                    .as_str()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .is_some_and(|t| t + DELETION_TIMEOUT > now);
                if live && fresh {
                    disrupted.insert(pod_name.clone(), at.clone());
                }
            }
        }
        let healthy = i64::try_from(
            pods.iter()
                .filter(|p| pod_healthy(p) && !disrupted.contains_key(name(p)))
                .count(),
        )
        .unwrap_or(i64::MAX);
        let spec = budget.get("spec").unwrap_or(&Value::Null);
        let min = spec.get("minAvailable").filter(|v| !v.is_null());
        let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
        let counted = i64::try_from(pods.len()).unwrap_or(i64::MAX);
        // A plain minAvailable count needs no scale: the pods are what is expected.
        let expected = match (min, max) {
            (Some(Value::Number(_)), _) | (None, None) => Ok(counted),
            _ => {
                let mut scales: BTreeMap<String, i64> = BTreeMap::new();
                let mut err = None;
                for p in &pods {
                    match self.scale_of(p) {
                        Ok((u, n)) => {
                            scales.insert(u, n);
                        }
                        Err(e) => err = Some(e),
                    }
                }
                match err {
                    Some(e) => Err(e),
                    None => Ok(scales.values().sum()),
                }
            }
        };
        let generation = budget
            .pointer("/metadata/generation")
            .cloned()
            .unwrap_or(json!(1));
        let condition = |status: &str, reason: &str, message: &str| {
            json!([{"type": "DisruptionAllowed", "status": status, "reason": reason,
                "message": message, "observedGeneration": generation,
                "lastTransitionTime": crate::api::objects::now()}])
        };
        let expected = match expected {
            Ok(n) => n,
            Err(e) => {
                return json!({
                    "observedGeneration": generation, "disruptionsAllowed": 0,
                    "currentHealthy": healthy, "desiredHealthy": 0, "expectedPods": counted,
                    "conditions": condition("False", "SyncFailed", &e),
                });
            }
        };
        let desired = match (min, max) {
            (Some(m), _) => scaled(m, expected).unwrap_or(0),
            (None, Some(m)) => (expected - scaled(m, expected).unwrap_or(0)).max(0),
            (None, None) => 0,
        };
        let allowed = if expected <= 0 {
            0
        } else {
            (healthy - desired).max(0)
        };
        let mut status = json!({
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": if allowed > 0 {
                condition("True", "SufficientPods", "")
            } else {
                condition("False", "InsufficientPods", "")
            },
        });
        if !disrupted.is_empty() {
            status["disruptedPods"] = json!(disrupted);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, owner: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"},
            "ownerReferences": [{"kind": "ReplicaSet", "uid": owner, "controller": true}]},
          "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
    }

    fn budget(spec: Value) -> Value {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": "web"}});
        json!({"metadata": {"name": "b", "namespace": "default", "generation": 1}, "spec": spec})
    }

    #[test]
    fn allowed_disruptions_follow_the_budget() {
        let pods = [
            pod("a", true, "rs1"),
            pod("b", true, "rs1"),
            pod("c", false, "rs1"),
        ];
        let rss = [json!({"metadata": {"uid": "rs1", "ownerReferences": [
            {"kind": "Deployment", "uid": "d1", "controller": true}]}, "spec": {"replicas": 3}})];
        let ds = [json!({"metadata": {"uid": "d1"}, "spec": {"replicas": 4}})];
        let w = World {
            pods: &pods,
            replica_sets: &rss,
            deployments: &ds,
            stateful_sets: &[],
        };
        let now = jiff::Timestamp::now();
        let s = w.status(&budget(json!({"minAvailable": 1})), now);
        assert_eq!(
            (
                s["expectedPods"].as_i64(),
                s["currentHealthy"].as_i64(),
                s["disruptionsAllowed"].as_i64()
            ),
            (Some(3), Some(2), Some(1))
        );
        assert_eq!(s["conditions"][0]["reason"], "SufficientPods");
        // maxUnavailable counts from the Deployment's scale.
        let s = w.status(&budget(json!({"maxUnavailable": 1})), now);
        assert_eq!(
            (
                s["expectedPods"].as_i64(),
                s["desiredHealthy"].as_i64(),
                s["disruptionsAllowed"].as_i64()
            ),
            (Some(4), Some(3), Some(0))
        );
        assert_eq!(s["conditions"][0]["reason"], "InsufficientPods");
        let s = w.status(&budget(json!({"minAvailable": "50%"})), now);
        assert_eq!(s["desiredHealthy"], 2);
        // A pod just evicted is not counted healthy.
        let mut b = budget(json!({"minAvailable": 1}));
        b["status"] = json!({"disruptedPods": {"a": crate::api::objects::now()}});
        let s = w.status(&b, now);
        assert_eq!(
            (
                s["currentHealthy"].as_i64(),
                s["disruptionsAllowed"].as_i64()
            ),
            (Some(1), Some(0))
        );
        assert!(s["disruptedPods"]["a"].is_string());
        // ... for two minutes.
        let s = w.status(&b, now + jiff::SignedDuration::from_secs(121));
        assert!(s.get("disruptedPods").is_none());
    }

    #[test]
    fn pods_without_a_scale_fail_the_sync_with_a_reason() {
        let mut p = pod("a", true, "x");
        p["metadata"]["ownerReferences"][0]["kind"] = json!("DaemonSet");
        let pods = [p];
        let w = World {
            pods: &pods,
            replica_sets: &[],
            deployments: &[],
            stateful_sets: &[],
        };
        let s = w.status(
            &budget(json!({"maxUnavailable": "10%"})),
            jiff::Timestamp::now(),
        );
        assert_eq!(s["conditions"][0]["reason"], "SyncFailed");
        assert!(
            s["conditions"][0]["message"]
                .as_str()
                .unwrap()
                .contains("DaemonSet")
        );
        assert_eq!(s["disruptionsAllowed"], 0);
    }
}
