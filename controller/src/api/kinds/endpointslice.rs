//! EndpointSlices (discovery.k8s.io/v1): the columns of `kubectl get endpointslices`.

use serde_json::{Value, json};

use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};
use crate::api::table::{first_three, int, none_if_empty};

#[derive(Debug)]
pub struct EndpointSliceStrategy;

impl Strategy for EndpointSliceStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::discovery::v1::EndpointSlice>()
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("AddressType", "string", 0, "The type of the addresses."),
            Column::new("Ports", "string", 0, "The ports of the slice."),
            Column::new("Endpoints", "string", 0, "The addresses in the slice."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let ports: Vec<String> = obj
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| int(p, "/port").to_string())
            .collect();
        let addrs: Vec<String> = obj
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|e| {
                e.get("addresses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/addressType")),
            json!(none_if_empty(ports.join(","))),
            json!(first_three(addrs)),
            age_cell(obj),
        ]
    }
}
