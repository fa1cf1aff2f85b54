//! ServiceAccounts (core/v1): the columns of `kubectl get serviceaccounts`.

use serde_json::{Value, json};

use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct ServiceAccountStrategy;

impl Strategy for ServiceAccountStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::ServiceAccount>()
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Secrets", "string", 0, "Number of secrets."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let secrets = obj
            .get("secrets")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(secrets),
            age_cell(obj),
        ]
    }
}
