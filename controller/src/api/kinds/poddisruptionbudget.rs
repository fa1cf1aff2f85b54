//! PodDisruptionBudgets (policy/v1): validation (minAvailable or maxUnavailable, each a count or
//! a percentage, not both; the unhealthy-pod policy), a fresh status on create, the columns of
//! `kubectl get pdb`, and what the eviction subresource asks of a budget before a pod may go
//! ([`take_disruption`]: Kubernetes' checks, with the 429 that `kubectl drain` retries on).

use serde_json::{Value, json};

use crate::api::error::{ApiError, FieldError};
use crate::api::objects::{Objects, Part, now};
use crate::api::resources;
use crate::api::selectors::selector_matches;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct PodDisruptionBudgetStrategy;

/// The most evicted-but-not-yet-gone pods a budget records, as Kubernetes caps it.
const MAX_DISRUPTED_PODS: usize = 2000;

/// `minAvailable`/`maxUnavailable`: an int, or a percentage `"N%"` with N in 0..=100.
fn int_or_percent_problem(v: &Value) -> Option<&'static str> {
    match v {
        Value::Number(n) if n.as_i64().is_some_and(|n| n >= 0) => None,
        Value::Number(_) => Some("must be greater than or equal to 0"),
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(p)) if (0..=100).contains(&p) => None,
            Some(Ok(_)) => Some("must not be greater than 100%"),
            _ => Some(
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ),
        },
        _ => Some("must be an integer or percentage (e.g '5%')"),
    }
}

/// The number `v` (an int or `"N%"` of `total`, rounded up) stands for.
pub fn scaled(v: &Value, total: i64) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let p: i64 = s.strip_suffix('%')?.parse().ok()?;
            Some((p * total + 99) / 100)
        }
        _ => None,
    }
}

impl Strategy for PodDisruptionBudgetStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::policy::v1::PodDisruptionBudget>()
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["status"] = json!({
            "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0,
        });
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if part == Part::Status {
            return errs;
        }
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let min = spec.get("minAvailable").filter(|v| !v.is_null());
        let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
        if min.is_some() && max.is_some() {
            errs.push(FieldError::invalid(
                "spec",
                spec,
                "minAvailable and maxUnavailable cannot be both set",
            ));
        }
        for (field, v) in [("minAvailable", min), ("maxUnavailable", max)] {
            if let Some(v) = v
                && let Some(problem) = int_or_percent_problem(v)
            {
                errs.push(FieldError::invalid(format!("spec.{field}"), v, problem));
            }
        }
        let policy = str_at(obj, "/spec/unhealthyPodEvictionPolicy");
        if !["", "IfHealthyBudget", "AlwaysAllow"].contains(&policy) {
            errs.push(FieldError::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                &json!(policy),
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
        errs
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new(
                "Min Available",
                "string",
                0,
                "The minimum number or percentage of available pods this budget requires.",
            ),
            Column::new(
                "Max Unavailable",
                "string",
                0,
                "The maximum number or percentage of unavailable pods this budget requires.",
            ),
            Column::new(
                "Allowed Disruptions",
                "integer",
                0,
                "The number of pods that may be evicted now.",
            ),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let show = |ptr: &str| match obj.pointer(ptr) {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => "N/A".to_string(),
        };
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(show("/spec/minAvailable")),
            json!(show("/spec/maxUnavailable")),
            json!(
                obj.pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            ),
            age_cell(obj),
        ]
    }
}

/// Whether the pod is Ready (the condition the budget counts as healthy).
pub fn pod_healthy(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp")
        .is_none_or(Value::is_null)
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

/// The 429 Kubernetes answers when an eviction would break a budget.
fn refused(message: String) -> ApiError {
    ApiError::DisruptionBudget {
        message,
        retry_after: 0,
    }
}

/// Before `pod` is evicted: the budget that covers it must allow one more disruption, which is
/// then taken (recorded in the budget's `disruptedPods` so the disruption controller does not
/// count the pod as healthy while it goes). A pod no budget covers, or one that is not running,
/// may always go; more than one budget is an error, as in Kubernetes.
pub async fn take_disruption(
    objects: &Objects,
    pod: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let phase = str_at(pod, "/status/phase");
    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    if deleting || matches!(phase, "Succeeded" | "Failed" | "Pending" | "") {
        return Ok(());
    }
    let ns = str_at(pod, "/metadata/namespace");
    let (budgets, _) = objects.list(resources::pod_disruption_budgets(), Some(ns))?;
    let labels = pod.pointer("/metadata/labels").unwrap_or(&Value::Null);
    let covering: Vec<&Value> = budgets
        .iter()
        .filter(|b| selector_matches(b.pointer("/spec/selector").unwrap_or(&Value::Null), labels))
        .collect();
    let budget = match covering.as_slice() {
        [] => return Ok(()),
        [b] => *b,
        _ => {
            return Err(ApiError::Internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            ));
        }
    };
    let name = str_at(budget, "/metadata/name").to_string();
    let status = |k: &str| {
        budget
            .pointer(&format!("/status/{k}"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let (current, desired) = (status("currentHealthy"), status("desiredHealthy"));
    if !pod_healthy(pod) {
        let always = str_at(budget, "/spec/unhealthyPodEvictionPolicy") == "AlwaysAllow";
        if always || (current >= desired && desired > 0) {
            // An unready pod adds nothing to the budget's health: it may go.
            return Ok(());
        }
    }
    let generation = budget
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if status("observedGeneration") < generation {
        // As Kubernetes: come back in 10 s, when the controller will have caught up.
        return Err(ApiError::DisruptionBudget {
            message: format!(
                "The disruption budget {name} is still being processed by the server."
            ),
            retry_after: 10,
        });
    }
    let forbidden = |detail: &str| ApiError::ForbiddenObject {
        resource: "poddisruptionbudget.policy".into(),
        name: name.to_string(),
        detail: detail.into(),
    };
    let allowed = status("disruptionsAllowed");
    if allowed < 0 {
        return Err(forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = budget
        .pointer("/status/disruptedPods")
        .and_then(Value::as_object)
        .map_or(0, serde_json::Map::len);
    if disrupted > MAX_DISRUPTED_PODS {
        return Err(forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(refused(format!(
            "The disruption budget {name} needs {desired} healthy pods and has {current} currently"
        )));
    }
    if dry_run {
        return Ok(());
    }
    let pod_name = str_at(pod, "/metadata/name").to_string();
    let rv = str_at(budget, "/metadata/resourceVersion").to_string();
    let mut next = budget.clone();
    next["status"]["disruptionsAllowed"] = json!(allowed - 1);
    if !next["status"]["disruptedPods"].is_object() {
        next["status"]["disruptedPods"] = json!({});
    }
    next["status"]["disruptedPods"][&pod_name] = json!(now());
    next["metadata"]["resourceVersion"] = json!(rv);
    // The resourceVersion makes a concurrent eviction's update conflict rather than both taking
    // the last allowed disruption; the client retries.
    objects
        .update(
            resources::pod_disruption_budgets(),
            Some(ns),
            &name,
            next,
            Part::Status,
            false,
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_percentages() {
        let s = PodDisruptionBudgetStrategy;
        let pdb = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});
        assert!(
            s.validate(&pdb(json!({"minAvailable": 1})), None, Part::Main)
                .is_empty()
        );
        assert!(
            s.validate(&pdb(json!({"maxUnavailable": "25%"})), None, Part::Main)
                .is_empty()
        );
        let both = s.validate(
            &pdb(json!({"minAvailable": 1, "maxUnavailable": 1})),
            None,
            Part::Main,
        );
        assert_eq!(both[0].field, "spec");
        let bad = s.validate(&pdb(json!({"minAvailable": "lots"})), None, Part::Main);
        assert_eq!(bad[0].field, "spec.minAvailable");
        let over = s.validate(&pdb(json!({"maxUnavailable": "150%"})), None, Part::Main);
        assert_eq!(over[0].field, "spec.maxUnavailable");
        assert_eq!(scaled(&json!("50%"), 3), Some(2));
        assert_eq!(scaled(&json!(2), 3), Some(2));
        assert_eq!(
            s.cells(&pdb(json!({"minAvailable": "50%"})))[1..3],
            [json!("50%"), json!("N/A")]
        );
    }
}
