//! ReplicaSets (apps/v1): one replica by default, the workload validation, and the columns of
//! `kubectl get replicasets`; `status.replicas` is selectable.

use serde_json::{Value, json};

use super::workload::{self, REPLICA_COLUMNS, default_template, replica_cells};
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{Column, Strategy, TypeOps, obj_mut, set_default};

#[derive(Debug)]
pub struct ReplicaSetStrategy;

impl Strategy for ReplicaSetStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::apps::v1::ReplicaSet>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        default_template(spec);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        workload::validate("ReplicaSet", obj, old, true, &["Always"])
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "status.replicas").then_some("/status/replicas")
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::warnings(obj)
    }

    fn columns(&self) -> &'static [Column] {
        &REPLICA_COLUMNS
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        replica_cells(obj, obj.pointer("/spec/selector").unwrap_or(&Value::Null))
    }
}
