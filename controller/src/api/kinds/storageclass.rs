//! StorageClasses (storage.k8s.io/v1, cluster-scoped): defaults (reclaim Delete, Immediate
//! binding), what may not change (provisioner, parameters, reclaim policy, binding mode), and
//! the columns of `kubectl get storageclass` (the default class marked `(default)`).

use serde_json::{Value, json};

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, set_default, str_at};

#[derive(Debug)]
pub struct StorageClassStrategy;

/// The annotation that marks the default class.
pub const DEFAULT_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// skiff's provisioner: a directory on the node that runs the claim's pod.
pub const LOCAL_PATH: &str = "skiff.io/local-path";

/// The StorageClass every cluster starts with (as k3s ships one): skiff's local-path, the
/// default, binding on first use so the directory is made on the node the pod runs on.
pub fn bootstrap_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "local-path", "annotations": {DEFAULT_ANNOTATION: "true"}},
        "provisioner": LOCAL_PATH,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    })
}

impl Strategy for StorageClassStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::storage::v1::StorageClass>()
    }

    fn default(&self, obj: &mut Value) {
        if let Some(o) = obj.as_object_mut() {
            set_default(o, "reclaimPolicy", json!("Delete"));
            set_default(o, "volumeBindingMode", json!("Immediate"));
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if str_at(obj, "/provisioner").is_empty() {
            errs.push(FieldError::required("provisioner"));
        }
        let mode = str_at(obj, "/volumeBindingMode");
        if !["Immediate", "WaitForFirstConsumer", ""].contains(&mode) {
            errs.push(FieldError::not_supported(
                "volumeBindingMode",
                &json!(mode),
                &["Immediate", "WaitForFirstConsumer"],
            ));
        }
        let policy = str_at(obj, "/reclaimPolicy");
        if !["Delete", "Retain", ""].contains(&policy) {
            errs.push(FieldError::not_supported(
                "reclaimPolicy",
                &json!(policy),
                &["Delete", "Retain"],
            ));
        }
        if let Some(old) = old {
            for f in [
                "provisioner",
                "parameters",
                "reclaimPolicy",
                "volumeBindingMode",
            ] {
                if old.get(f) != obj.get(f) {
                    errs.push(FieldError::forbidden(
                        f,
                        "updates to this field are forbidden",
                    ));
                }
            }
        }
        errs
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Provisioner", "string", 0, "Who makes the volumes."),
            Column::new(
                "ReclaimPolicy",
                "string",
                0,
                "What happens to released volumes.",
            ),
            Column::new("VolumeBindingMode", "string", 0, "When claims are bound."),
            Column::new(
                "AllowVolumeExpansion",
                "string",
                0,
                "Whether claims may grow.",
            ),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut n = str_at(obj, "/metadata/name").to_string();
        if obj
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DEFAULT_ANNOTATION))
            .and_then(Value::as_str)
            == Some("true")
        {
            n.push_str(" (default)");
        }
        vec![
            json!(n),
            json!(str_at(obj, "/provisioner")),
            json!(str_at(obj, "/reclaimPolicy")),
            json!(str_at(obj, "/volumeBindingMode")),
            json!(
                obj.get("allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            age_cell(obj),
        ]
    }
}
