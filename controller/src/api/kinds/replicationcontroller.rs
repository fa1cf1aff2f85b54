//! ReplicationControllers (core/v1), the oldest workload kind: a ReplicaSet whose selector is a
//! plain label map. Defaulting as Kubernetes does it (one replica; the selector and the
//! object's labels from the template's labels when left out), the workload validation with the
//! map read as `matchLabels`, and the columns of `kubectl get rc`. The replicaset controller
//! runs them (`controllers::replicaset`), as the kube-controller-manager does.

use serde_json::{Map, Value, json};

use super::workload::{self, REPLICA_COLUMNS, default_template, replica_cells};
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{Column, Strategy, TypeOps, obj_mut, set_default};

#[derive(Debug)]
pub struct ReplicationControllerStrategy;

/// The template's labels, if it has any.
fn template_labels(obj: &Value) -> Option<Map<String, Value>> {
    obj.pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .filter(|l| !l.is_empty())
        .cloned()
}

fn is_empty_map(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_none_or(Map::is_empty)
}

/// The object with its selector map as a `LabelSelector`, for what workloads share.
fn as_label_selector(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(sel) = obj.pointer("/spec/selector").filter(|s| !s.is_null()) {
        o["spec"]["selector"] = json!({"matchLabels": sel});
    }
    o
}

impl Strategy for ReplicationControllerStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::ReplicationController>()
    }

    fn default(&self, obj: &mut Value) {
        let labels = template_labels(obj);
        if let Some(labels) = labels {
            if is_empty_map(obj.pointer("/spec/selector")) {
                obj_mut(obj, "spec").insert("selector".into(), Value::Object(labels.clone()));
            }
            if is_empty_map(obj.pointer("/metadata/labels")) {
                obj_mut(obj, "metadata").insert("labels".into(), Value::Object(labels));
            }
        }
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        if spec.get("template").is_some_and(Value::is_object) {
            default_template(spec);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj.pointer("/spec/template").is_none_or(Value::is_null) {
            errs.push(FieldError::required("spec.template"));
        }
        if is_empty_map(obj.pointer("/spec/selector")) {
            errs.push(FieldError::required("spec.selector"));
            return errs;
        }
        if !errs.is_empty() {
            return errs;
        }
        let old = old.map(as_label_selector);
        workload::validate(
            "ReplicationController",
            &as_label_selector(obj),
            old.as_ref(),
            false,
            &["Always"],
        )
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "status.replicas").then_some("/status/replicas")
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::warnings(obj)
    }

    fn label_selector(&self, obj: &Value) -> Value {
        match obj.pointer("/spec/selector") {
            Some(sel) if !sel.is_null() => json!({"matchLabels": sel}),
            _ => Value::Null,
        }
    }

    fn columns(&self) -> &'static [Column] {
        &REPLICA_COLUMNS
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        replica_cells(obj, &self.label_selector(obj))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "web"}, "spec": spec})
    }

    const TEMPLATE: &str = r#"{"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}"#;

    #[test]
    fn selector_and_labels_default_to_the_templates() {
        let mut obj = rc(json!({"template": serde_json::from_str::<Value>(TEMPLATE).unwrap()}));
        ReplicationControllerStrategy.default(&mut obj);
        assert_eq!(obj["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(obj["spec"]["replicas"], 1);
        assert!(
            ReplicationControllerStrategy
                .validate(&obj, None, Part::Main)
                .is_empty()
        );
        assert_eq!(
            ReplicationControllerStrategy.label_selector(&obj),
            json!({"matchLabels": {"app": "web"}})
        );
    }

    #[test]
    fn a_selector_the_template_does_not_match_is_invalid() {
        let mut obj = rc(json!({
            "selector": {"app": "other"},
            "template": serde_json::from_str::<Value>(TEMPLATE).unwrap(),
        }));
        ReplicationControllerStrategy.default(&mut obj);
        let errs = ReplicationControllerStrategy.validate(&obj, None, Part::Main);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        let errs = ReplicationControllerStrategy.validate(&rc(json!({})), None, Part::Main);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["spec.template", "spec.selector"]);
    }
}
