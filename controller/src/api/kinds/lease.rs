//! Leases (coordination.k8s.io/v1): the HOLDER column.

use serde_json::{Value, json};

use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct LeaseStrategy;

impl Strategy for LeaseStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::coordination::v1::Lease>()
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Holder", "string", 0, "The holder of the lease."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/spec/holderIdentity")),
            age_cell(obj),
        ]
    }
}
