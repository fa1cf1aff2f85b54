//! ReplicaSets (apps/v1): one replica by default, the workload validation, and the columns of
//! `kubectl get replicasets`; `status.replicas` is selectable.

use serde_json::{Value, json};

use super::workload::{self, WIDE_COLUMNS, default_template, wide_cells};
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::api::table::int;

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
        const C: [Column; 8] = [
            NAME,
            Column::new("Desired", "integer", 0, "Number of desired replicas."),
            Column::new("Current", "integer", 0, "Number of current replicas."),
            Column::new("Ready", "integer", 0, "Number of ready replicas."),
            AGE,
            WIDE_COLUMNS[0],
            WIDE_COLUMNS[1],
            WIDE_COLUMNS[2],
        ];
        &C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut v = vec![
            json!(str_at(obj, "/metadata/name")),
            json!(int(obj, "/spec/replicas")),
            json!(int(obj, "/status/replicas")),
            json!(int(obj, "/status/readyReplicas")),
            age_cell(obj),
        ];
        v.extend(wide_cells(obj));
        v
    }
}
