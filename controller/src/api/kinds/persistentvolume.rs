//! PersistentVolumes (core/v1, cluster-scoped): defaults (Retain for volumes made by hand,
//! Filesystem), the `kubernetes.io/pv-protection` finalizer, phase Pending until the binder
//! looks at it, validation (capacity, access modes, one volume source), and the columns of
//! `kubectl get pv`.

use serde_json::{Value, json};

use super::persistentvolumeclaim::access_modes;
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};

#[derive(Debug)]
pub struct PersistentVolumeStrategy;

/// The finalizer that keeps a volume while it is bound.
pub const PROTECTION: &str = "kubernetes.io/pv-protection";

impl Strategy for PersistentVolumeStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::PersistentVolume>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
    }

    fn prepare_create(&self, obj: &mut Value) {
        let meta = obj_mut(obj, "metadata");
        let fins = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(f) = fins.as_array_mut()
            && !f.iter().any(|x| x == PROTECTION)
        {
            f.push(json!(PROTECTION));
        }
        obj["status"] = json!({"phase": "Pending"});
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj.pointer("/spec/capacity/storage").is_none() {
            errs.push(FieldError::required("spec.capacity"));
        }
        if obj
            .pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .is_none_or(|m| m.is_empty())
        {
            errs.push(FieldError::required("spec.accessModes"));
        }
        let policy = str_at(obj, "/spec/persistentVolumeReclaimPolicy");
        if !["Retain", "Delete", "Recycle", ""].contains(&policy) {
            errs.push(FieldError::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                &json!(policy),
                &["Delete", "Recycle", "Retain"],
            ));
        }
        let sources = obj
            .get("spec")
            .and_then(Value::as_object)
            .map(|s| {
                s.keys()
                    .filter(|k| {
                        ![
                            "accessModes",
                            "capacity",
                            "claimRef",
                            "mountOptions",
                            "nodeAffinity",
                            "persistentVolumeReclaimPolicy",
                            "storageClassName",
                            "volumeMode",
                            "volumeAttributesClassName",
                        ]
                        .contains(&k.as_str())
                    })
                    .count()
            })
            .unwrap_or(0);
        if sources == 0 {
            errs.push(FieldError::required_because(
                "spec",
                "must specify a volume type",
            ));
        } else if sources > 1 {
            errs.push(FieldError::forbidden(
                "spec",
                "may not specify more than 1 volume type",
            ));
        }
        errs
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Capacity", "string", 0, "The size of the volume."),
            Column::new("Access Modes", "string", 0, "What claims may do."),
            Column::new("Reclaim Policy", "string", 0, "What happens when released."),
            Column::new("Status", "string", 0, "The phase of the volume."),
            Column::new("Claim", "string", 0, "The claim bound to the volume."),
            Column::new("StorageClass", "string", 0, "The class of the volume."),
            Column::new("VolumeAttributesClass", "string", 0, "Unused."),
            Column::new("Reason", "string", 0, "Why the volume is in its phase."),
            AGE,
            Column::new("VolumeMode", "string", 1, "Filesystem or Block."),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let claim = match (
            str_at(obj, "/spec/claimRef/namespace"),
            str_at(obj, "/spec/claimRef/name"),
        ) {
            (_, "") => String::new(),
            (ns, n) => format!("{ns}/{n}"),
        };
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/spec/capacity/storage")),
            json!(access_modes(obj.pointer("/spec/accessModes"))),
            json!(str_at(obj, "/spec/persistentVolumeReclaimPolicy")),
            json!(str_at(obj, "/status/phase")),
            json!(claim),
            json!(str_at(obj, "/spec/storageClassName")),
            json!("<unset>"),
            json!(str_at(obj, "/status/reason")),
            age_cell(obj),
            json!(str_at(obj, "/spec/volumeMode")),
        ]
    }
}
