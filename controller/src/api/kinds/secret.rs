//! Secrets (core/v1): `type` is selectable; the columns of `kubectl get secrets`.

use serde_json::{Value, json};

use super::configmap::data_count;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Secret>()
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "type").then_some("/type")
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Type", "string", 0, "The type of the secret."),
            Column::new("Data", "string", 0, "Number of data items."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/type")),
            json!(data_count(obj)),
            age_cell(obj),
        ]
    }
}
