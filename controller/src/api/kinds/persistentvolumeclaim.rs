//! PersistentVolumeClaims (core/v1): Kubernetes' admission for claims (the default
//! StorageClass when none is named, the `kubernetes.io/pvc-protection` finalizer, phase
//! Pending), validation (access modes and a storage request; the spec fixed once created but
//! for the binding and a larger request), and the columns of `kubectl get pvc`.

use serde_json::{Value, json};

use crate::api::error::{ApiError, FieldError};
use crate::api::objects::{Objects, Part};
use crate::api::strategy::{
    AGE, Allocation, Column, Hook, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::quantity;

#[derive(Debug)]
pub struct PersistentVolumeClaimStrategy;

/// The finalizer that keeps a claim while a pod uses it.
pub const PROTECTION: &str = "kubernetes.io/pvc-protection";
const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

/// `["ReadWriteOnce"]` → `RWO`, as kubectl prints access modes.
pub fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The name of the default StorageClass (`storageclass.kubernetes.io/is-default-class`), the
/// newest if there are several.
pub fn default_class(objects: &Objects) -> Option<String> {
    let (classes, _) = objects
        .list(crate::api::resources::storage_classes(), None)
        .ok()?;
    classes
        .iter()
        .filter(|c| {
            c.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by_key(|c| {
            (
                str_at(c, "/metadata/creationTimestamp").to_string(),
                str_at(c, "/metadata/name").to_string(),
            )
        })
        .map(|c| str_at(c, "/metadata/name").to_string())
}

impl Strategy for PersistentVolumeClaimStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::PersistentVolumeClaim>()
    }

    fn default(&self, obj: &mut Value) {
        set_default(obj_mut(obj, "spec"), "volumeMode", json!("Filesystem"));
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

    /// The DefaultStorageClass admission: a claim that names no class gets the default one.
    fn admit<'a>(
        &'a self,
        objects: &'a Objects,
        obj: &'a mut Value,
        old: Option<&'a Value>,
        _key: &'a str,
    ) -> Hook<'a, Allocation> {
        Box::pin(async move {
            let unset = obj
                .pointer("/spec/storageClassName")
                .is_none_or(Value::is_null);
            if old.is_none()
                && unset
                && let Some(class) = default_class(objects)
            {
                obj["spec"]["storageClassName"] = json!(class);
            }
            Ok::<_, ApiError>(Vec::new())
        })
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let modes = obj.pointer("/spec/accessModes").and_then(Value::as_array);
        if modes.is_none_or(|m| m.is_empty()) {
            errs.push(FieldError::required_because(
                "spec.accessModes",
                "at least 1 access mode is required",
            ));
        }
        for m in modes.into_iter().flatten() {
            if !m.as_str().is_some_and(|m| ACCESS_MODES.contains(&m)) {
                errs.push(FieldError::not_supported(
                    "spec.accessModes",
                    m,
                    ACCESS_MODES,
                ));
            }
        }
        match obj.pointer("/spec/resources/requests/storage") {
            None => errs.push(FieldError::required("spec.resources[storage]")),
            Some(q) => {
                if q.as_str()
                    .and_then(quantity::parse_units)
                    .is_none_or(|v| v <= 0)
                {
                    errs.push(FieldError::invalid(
                        "spec.resources[storage]",
                        q,
                        "must be greater than zero",
                    ));
                }
            }
        }
        if let Some(old) = old
            && part == Part::Main
        {
            let strip = |v: &Value, binding: bool| {
                let mut s = v.get("spec").cloned().unwrap_or(json!({}));
                if let Some(m) = s.as_object_mut() {
                    m.remove("resources");
                    if binding {
                        m.remove("volumeName");
                    }
                }
                s
            };
            // The binder sets volumeName once; otherwise only the request may change.
            let binding = str_at(old, "/spec/volumeName").is_empty();
            if strip(old, binding) != strip(obj, binding) {
                errs.push(FieldError::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
                ));
            }
        }
        errs
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Status", "string", 0, "The phase of the claim."),
            Column::new("Volume", "string", 0, "The volume bound to the claim."),
            Column::new("Capacity", "string", 0, "The capacity of the bound volume."),
            Column::new("Access Modes", "string", 0, "What the claim may do."),
            Column::new("StorageClass", "string", 0, "The class of the claim."),
            Column::new("VolumeAttributesClass", "string", 0, "Unused."),
            AGE,
            Column::new("VolumeMode", "string", 1, "Filesystem or Block."),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let or_unset = |s: &str| {
            if s.is_empty() {
                "<unset>".to_string()
            } else {
                s.to_string()
            }
        };
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/status/phase")),
            json!(str_at(obj, "/spec/volumeName")),
            json!(str_at(obj, "/status/capacity/storage")),
            json!(access_modes(obj.pointer("/status/accessModes"))),
            json!(str_at(obj, "/spec/storageClassName")),
            json!(or_unset(str_at(obj, "/spec/volumeAttributesClassName"))),
            age_cell(obj),
            json!(str_at(obj, "/spec/volumeMode")),
        ]
    }
}
