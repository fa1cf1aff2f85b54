//! Endpoints (core/v1): the ENDPOINTS column, at most three addresses and a count of the rest.

use serde_json::{Value, json};

use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};
use crate::api::table::{first_three, int};

#[derive(Debug)]
pub struct EndpointsStrategy;

impl Strategy for EndpointsStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Endpoints>()
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Endpoints", "string", 0, "The addresses of the endpoints."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut all = Vec::new();
        for subset in obj
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ports: Vec<i64> = subset
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| int(p, "/port"))
                .collect();
            for a in subset
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if ports.is_empty() {
                    all.push(str_at(a, "/ip").to_string());
                }
                for p in &ports {
                    all.push(format!("{}:{p}", str_at(a, "/ip")));
                }
            }
        }
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(first_three(all)),
            age_cell(obj),
        ]
    }
}
