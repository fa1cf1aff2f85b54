//! Namespaces (core/v1): the `kubernetes` finalizer, phase and name label every namespace gets,
//! DNS-label names, and deletion in two steps (Terminating, then the namespace controller
//! removes it once it is empty); the system namespaces may not be deleted.

use serde_json::{Value, json};

use crate::api::admission::dns_label_problem;
use crate::api::error::ApiError;
use crate::api::objects::{DeleteOptions, SYSTEM_NAMESPACES, now};
use crate::api::strategy::{
    AGE, Column, Deletion, NAME, Strategy, TypeOps, age_cell, being_deleted, mark_deleted, obj_mut,
    str_at,
};

#[derive(Debug)]
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::Namespace>()
    }

    fn prepare_create(&self, obj: &mut Value) {
        obj["spec"] = json!({"finalizers": ["kubernetes"]});
        obj["status"] = json!({"phase": "Active"});
        let name = str_at(obj, "/metadata/name").to_string();
        let meta = obj_mut(obj, "metadata");
        if let Some(l) = meta
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            l.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        dns_label_problem(name)
    }

    fn owns_deletion(&self) -> bool {
        true
    }

    fn delete(
        &self,
        name: &str,
        obj: &mut Value,
        _opts: &DeleteOptions,
    ) -> Result<Deletion, ApiError> {
        if SYSTEM_NAMESPACES.contains(&name) {
            return Err(ApiError::Forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        if being_deleted(obj) {
            return Ok(Deletion::Unchanged);
        }
        mark_deleted(obj, &now(), 0);
        obj["status"]["phase"] = json!("Terminating");
        Ok(Deletion::Mark)
    }

    fn delete_collection(&self) -> bool {
        false
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "status.phase").then_some("/status/phase")
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Status", "string", 0, "The status of the namespace."),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/status/phase")),
            age_cell(obj),
        ]
    }
}
