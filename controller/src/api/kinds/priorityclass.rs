//! PriorityClasses (scheduling.k8s.io/v1, cluster-scoped): the two system classes every
//! cluster has, the value limits and reserved `system-` names, what may not change, a single
//! global default, and the Priority admission that gives each new pod its class's `priority`
//! and `preemptionPolicy` (the scheduler orders and preempts by them).

use serde_json::{Value, json};

use crate::api::error::{ApiError, FieldError};
use crate::api::objects::{DeleteOptions, Objects, Part};
use crate::api::resources;
use crate::api::strategy::{
    AGE, Allocation, Column, Deletion, Hook, NAME, Strategy, TypeOps, age_cell, being_deleted,
    has_finalizers, mark_deleted, set_default, str_at,
};

#[derive(Debug)]
pub struct PriorityClassStrategy;

/// The highest value a class that is not a system class may have.
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;
const PREEMPT: &str = "PreemptLowerPriority";
const POLICIES: &[&str] = &[PREEMPT, "Never"];

/// The classes Kubernetes reserves for its own components, as every cluster has them.
pub fn system_classes() -> [Value; 2] {
    let class = |name: &str, value: i64, description: &str| {
        json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
            "preemptionPolicy": PREEMPT,
        })
    };
    [
        class(
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        class(
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
        ),
    ]
}

fn system_value(name: &str) -> Option<i64> {
    system_classes()
        .iter()
        .find(|c| str_at(c, "/metadata/name") == name)
        .and_then(|c| c["value"].as_i64())
}

impl Strategy for PriorityClassStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::scheduling::v1::PriorityClass>()
    }

    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "preemptionPolicy", json!(PREEMPT));
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let name = str_at(obj, "/metadata/name");
        let value = obj["value"].as_i64().unwrap_or(0);
        if name.starts_with("system-") {
            if system_value(name) != Some(value) {
                errs.push(FieldError::forbidden(
                    "metadata.name",
                    "priority class names with 'system-' prefix are reserved",
                ));
            }
        } else if value > HIGHEST_USER_DEFINABLE {
            errs.push(FieldError::forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
                ),
            ));
        }
        let policy = str_at(obj, "/preemptionPolicy");
        if !POLICIES.contains(&policy) {
            errs.push(FieldError::not_supported(
                "preemptionPolicy",
                &json!(policy),
                POLICIES,
            ));
        }
        if let Some(old) = old {
            for f in ["value", "preemptionPolicy"] {
                if old.get(f) != obj.get(f) {
                    errs.push(FieldError::invalid(f, &obj[f], "field is immutable"));
                }
            }
        }
        errs
    }

    /// Only one class may be the global default.
    fn admit<'a>(
        &'a self,
        objects: &'a Objects,
        obj: &'a mut Value,
        _old: Option<&'a Value>,
        _key: &'a str,
    ) -> Hook<'a, Allocation> {
        Box::pin(async move {
            if obj["globalDefault"].as_bool() == Some(true) {
                let name = str_at(obj, "/metadata/name");
                let (classes, _) = objects.list(resources::priority_classes(), None)?;
                if let Some(other) = classes.iter().find(|c| {
                    c["globalDefault"].as_bool() == Some(true)
                        && str_at(c, "/metadata/name") != name
                }) {
                    return Err(ApiError::ForbiddenObject {
                        resource: "priorityclasses.scheduling.k8s.io".into(),
                        name: name.to_string(),
                        detail: format!(
                            "PriorityClass {} is already marked as default. Only one default can exist",
                            str_at(other, "/metadata/name")
                        ),
                    });
                }
            }
            Ok(Vec::new())
        })
    }

    fn delete(
        &self,
        name: &str,
        obj: &mut Value,
        _opts: &DeleteOptions,
    ) -> Result<Deletion, ApiError> {
        if system_value(name).is_some() {
            return Err(ApiError::ForbiddenObject {
                resource: "priorityclasses.scheduling.k8s.io".into(),
                name: name.to_string(),
                detail: "this is a system priority class and cannot be deleted".into(),
            });
        }
        if !has_finalizers(obj) {
            return Ok(Deletion::Remove);
        }
        if being_deleted(obj) {
            return Ok(Deletion::Unchanged);
        }
        mark_deleted(obj, &crate::api::objects::now(), 0);
        Ok(Deletion::Mark)
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new(
                "Value",
                "integer",
                0,
                "The priority pods of this class get.",
            ),
            Column::new(
                "Global-Default",
                "boolean",
                0,
                "Whether pods without a class get this one.",
            ),
            AGE,
            Column::new(
                "PreemptionPolicy",
                "string",
                0,
                "Whether pods of this class preempt lower-priority pods.",
            ),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(obj["value"].as_i64().unwrap_or(0)),
            json!(obj["globalDefault"].as_bool().unwrap_or(false)),
            age_cell(obj),
            json!(str_at(obj, "/preemptionPolicy")),
        ]
    }
}

/// The Priority admission for a new pod: its `priorityClassName` (or the global default class)
/// gives its `priority` and `preemptionPolicy`; values the pod sets itself must agree.
pub async fn admit_pod(objects: &Objects, pod: &mut Value) -> Result<(), ApiError> {
    let pod_name = str_at(pod, "/metadata/name").to_string();
    let forbidden = |detail: String| ApiError::ForbiddenObject {
        resource: "pods".into(),
        name: pod_name.clone(),
        detail,
    };
    let class_name = str_at(pod, "/spec/priorityClassName").to_string();
    let (name, value, policy) = if class_name.is_empty() {
        let (classes, _) = objects.list(resources::priority_classes(), None)?;
        match classes
            .iter()
            .filter(|c| c["globalDefault"].as_bool() == Some(true))
            .min_by_key(|c| c["value"].as_i64().unwrap_or(0))
        {
            Some(c) => (
                str_at(c, "/metadata/name").to_string(),
                c["value"].as_i64().unwrap_or(0),
                str_at(c, "/preemptionPolicy").to_string(),
            ),
            None => (String::new(), 0, PREEMPT.to_string()),
        }
    } else {
        match objects.get(resources::priority_classes(), None, &class_name) {
            Ok(c) => (
                class_name.clone(),
                c["value"].as_i64().unwrap_or(0),
                str_at(&c, "/preemptionPolicy").to_string(),
            ),
            Err(ApiError::NotFound { .. }) => {
                return Err(forbidden(format!(
                    "no PriorityClass with name {class_name} was found"
                )));
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != value
    {
        return Err(forbidden(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
        )));
    }
    let policy = if policy.is_empty() {
        PREEMPT.to_string()
    } else {
        policy
    };
    let given = str_at(pod, "/spec/preemptionPolicy");
    if !given.is_empty() && given != policy {
        return Err(forbidden(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        if !name.is_empty() {
            spec.insert("priorityClassName".into(), json!(name));
        }
        spec.insert("priority".into(), json!(value));
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}
