//! ConfigMaps (core/v1): the `DATA` column counts `data` and `binaryData` entries.

use serde_json::{Value, json};

use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct ConfigMapStrategy;

/// Entries in `data` and `binaryData`, as kubectl counts them.
pub fn data_count(obj: &Value) -> usize {
    ["data", "binaryData"]
        .iter()
        .filter_map(|k| obj.get(*k).and_then(Value::as_object))
        .map(|m| m.len())
        .sum()
}

impl Strategy for ConfigMapStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::ConfigMap>()
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Data", "string", 0, "Number of data items."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(data_count(obj)),
            age_cell(obj),
        ]
    }
}
