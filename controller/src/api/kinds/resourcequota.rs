//! ResourceQuotas (core/v1), validated as Kubernetes does (known scopes, quantities that are
//! not negative), with the columns of `kubectl get quota`. skiff does not count usage or
//! refuse writes against them yet: a write says so in a `Warning`.

use serde_json::{Value, json};

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};
use crate::quantity::parse_milli;

#[derive(Debug)]
pub struct ResourceQuotaStrategy;

const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
    "VolumeAttributesClass",
];

/// `kubectl get quota`'s cells: `name: used/hard` for requests and for limits.
fn usage(obj: &Value, limits: bool) -> String {
    let hard = obj.pointer("/spec/hard").and_then(Value::as_object);
    hard.into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("limits.") == limits)
        .map(|(k, h)| {
            let used = obj
                .pointer(&format!("/status/used/{}", k.replace('/', "~1")))
                .and_then(Value::as_str)
                .unwrap_or("0");
            format!("{k}: {used}/{}", h.as_str().unwrap_or_default())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Strategy for ResourceQuotaStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::ResourceQuota>()
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let hard = obj.pointer("/spec/hard").and_then(Value::as_object);
        for (k, v) in hard.into_iter().flatten() {
            match v.as_str().and_then(parse_milli) {
                Some(n) if n < 0 => errs.push(FieldError::invalid(
                    format!("spec.hard[{k}]"),
                    v,
                    "must be greater than or equal to 0",
                )),
                None => errs.push(FieldError::invalid(
                    format!("spec.hard[{k}]"),
                    v,
                    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                )),
                _ => {}
            }
        }
        let scopes = obj.pointer("/spec/scopes").and_then(Value::as_array);
        for (i, s) in scopes.into_iter().flatten().enumerate() {
            if !SCOPES.contains(&s.as_str().unwrap_or_default()) {
                errs.push(FieldError::not_supported(
                    format!("spec.scopes[{i}]"),
                    s,
                    SCOPES,
                ));
            }
        }
        errs
    }

    fn warnings(&self, _obj: &Value) -> Vec<String> {
        vec!["skiff does not enforce ResourceQuotas yet: this object is stored, but usage is not counted and no write is refused against it".into()]
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            AGE,
            Column::new("Request", "string", 0, "Used and hard requests."),
            Column::new("Limit", "string", 0, "Used and hard limits."),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            age_cell(obj),
            json!(usage(obj, false)),
            json!(usage(obj, true)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_scopes_are_checked() {
        let ok = json!({"spec": {"hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi"}, "scopes": ["NotBestEffort"]}});
        assert!(
            ResourceQuotaStrategy
                .validate(&ok, None, Part::Main)
                .is_empty()
        );
        assert_eq!(
            ResourceQuotaStrategy.cells(&ok)[2..],
            [
                json!("pods: 0/10, requests.cpu: 0/2"),
                json!("limits.memory: 0/4Gi")
            ]
        );
        let bad = json!({"spec": {"hard": {"pods": "-1", "cpu": "lots"}, "scopes": ["Sometimes"]}});
        let errs = ResourceQuotaStrategy.validate(&bad, None, Part::Main);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.hard[cpu]", "spec.hard[pods]", "spec.scopes[0]"]
        );
    }
}
