//! DaemonSets (apps/v1): Kubernetes' defaults (history limit, RollingUpdate 1/0), the
//! workload validation, and the columns of `kubectl get daemonsets`.

use serde_json::{Value, json};

use super::workload::{self, WIDE_COLUMNS, default_template, wide_cells};
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::api::table::{int, none_if_empty};

#[derive(Debug)]
pub struct DaemonSetStrategy;

impl Strategy for DaemonSetStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::apps::v1::DaemonSet>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "revisionHistoryLimit", json!(10));
        let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
        if let Some(st) = strategy.as_object_mut() {
            set_default(st, "type", json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "maxUnavailable", json!(1));
                    set_default(ru, "maxSurge", json!(0));
                }
            }
        }
        default_template(spec);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        workload::validate("DaemonSet", obj, old, true, &["Always"])
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::warnings(obj)
    }

    fn columns(&self) -> &'static [Column] {
        const C: [Column; 11] = [
            NAME,
            Column::new(
                "Desired",
                "integer",
                0,
                "Number of nodes that should run the pod.",
            ),
            Column::new("Current", "integer", 0, "Number of nodes running the pod."),
            Column::new("Ready", "integer", 0, "Number of ready pods."),
            Column::new("Up-to-date", "integer", 0, "Number of updated pods."),
            Column::new("Available", "integer", 0, "Number of available pods."),
            Column::new(
                "Node Selector",
                "string",
                0,
                "The node selector of the pods.",
            ),
            AGE,
            WIDE_COLUMNS[0],
            WIDE_COLUMNS[1],
            WIDE_COLUMNS[2],
        ];
        &C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut ns: Vec<String> = obj
            .pointer("/spec/template/spec/nodeSelector")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        ns.sort();
        let mut v = vec![
            json!(str_at(obj, "/metadata/name")),
            json!(int(obj, "/status/desiredNumberScheduled")),
            json!(int(obj, "/status/currentNumberScheduled")),
            json!(int(obj, "/status/numberReady")),
            json!(int(obj, "/status/updatedNumberScheduled")),
            json!(int(obj, "/status/numberAvailable")),
            json!(none_if_empty(ns.join(","))),
            age_cell(obj),
        ];
        v.extend(wide_cells(obj));
        v
    }
}
