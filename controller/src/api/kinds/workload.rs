//! What the workload kinds share (Deployment, ReplicaSet, DaemonSet, Job): their pod template's
//! defaulting, the selector rules (required, matching the template, immutable), the template's
//! validation as a pod's, and the wide columns (containers, images, selector).

use serde_json::{Map, Value, json};

use super::pod::{default_pod_spec, validate_pod};
use crate::api::error::FieldError;
use crate::api::selectors::{selector_matches, selector_string};
use crate::api::strategy::{AGE, Column, NAME, age_cell, non_negative, obj_mut, str_at};
use crate::api::table::{int, none_if_empty};

/// Defaults the pod template of a workload (`spec.template`).
pub fn default_template(spec: &mut Map<String, Value>) {
    let t = spec.entry("template").or_insert_with(|| json!({}));
    if !t.is_object() {
        return;
    }
    default_pod_spec(obj_mut(t, "spec"));
    obj_mut(t, "metadata").remove("creationTimestamp");
}

/// Validation every workload gets: the selector, counts that may not be negative, and the
/// template as a pod whose restartPolicy is one of `restart_policies`.
pub fn validate(
    kind: &str,
    obj: &Value,
    old: Option<&Value>,
    selector_immutable: bool,
    restart_policies: &[&str],
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sel = obj.pointer("/spec/selector").unwrap_or(&Value::Null);
    if sel.is_null() {
        errs.push(FieldError::required("spec.selector"));
    } else if sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty())
        && sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .is_none_or(|e| e.is_empty())
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            sel,
            format!("empty selector is invalid for {}", kind.to_lowercase()),
        ));
    } else {
        let labels = obj
            .pointer("/spec/template/metadata/labels")
            .unwrap_or(&Value::Null);
        if !selector_matches(sel, labels) {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
    if let Some(old) = old
        && selector_immutable
        && old.pointer("/spec/selector") != obj.pointer("/spec/selector")
    {
        errs.push(FieldError::invalid(
            "spec.selector",
            sel,
            "field is immutable",
        ));
    }
    for f in [
        "replicas",
        "completions",
        "parallelism",
        "backoffLimit",
        "minReadySeconds",
    ] {
        non_negative(&mut errs, obj, &format!("/spec/{f}"), &format!("spec.{f}"));
    }
    match obj.pointer("/spec/template/spec") {
        None => errs.push(FieldError::required("spec.template.spec.containers")),
        Some(t) => {
            // A StatefulSet's claim templates are volumes its containers may mount.
            let mut t = t.clone();
            let claims = obj
                .pointer("/spec/volumeClaimTemplates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.pointer("/metadata/name").and_then(Value::as_str));
            for name in claims {
                if !t.get("volumes").is_some_and(Value::is_array) && t.is_object() {
                    t["volumes"] = json!([]);
                }
                if let Some(vols) = t.get_mut("volumes").and_then(Value::as_array_mut)
                    && !vols.iter().any(|v| v["name"] == name)
                {
                    vols.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
                }
            }
            for mut e in validate_pod(&json!({"spec": t})) {
                e.field = format!("spec.template.{}", e.field);
                errs.push(e);
            }
            if let Some(p) = t.get("restartPolicy").and_then(Value::as_str)
                && !restart_policies.contains(&p)
            {
                errs.push(FieldError::not_supported(
                    "spec.template.spec.restartPolicy",
                    &json!(p),
                    restart_policies,
                ));
            }
        }
    }
    errs
}

/// What the workload's pod template asks for that skiff does not do (see `podspec`).
pub fn warnings(obj: &Value) -> Vec<String> {
    obj.pointer("/spec/template/spec")
        .map(|s| super::podspec::unsupported(s, "spec.template.spec"))
        .unwrap_or_default()
}

/// The columns `-o wide` adds to every workload's table.
pub const WIDE_COLUMNS: [Column; 3] = [
    Column::new("Containers", "string", 1, "Names of the containers."),
    Column::new("Images", "string", 1, "Images of the containers."),
    Column::new("Selector", "string", 1, "The label selector of the pods."),
];

/// The columns of `kubectl get replicasets` and `kubectl get rc`.
pub const REPLICA_COLUMNS: [Column; 8] = [
    NAME,
    Column::new("Desired", "integer", 0, "Number of desired replicas."),
    Column::new("Current", "integer", 0, "Number of current replicas."),
    Column::new("Ready", "integer", 0, "Number of ready replicas."),
    AGE,
    WIDE_COLUMNS[0],
    WIDE_COLUMNS[1],
    WIDE_COLUMNS[2],
];

/// The cells of [`REPLICA_COLUMNS`], with the pods' selector as a `LabelSelector`.
pub fn replica_cells(obj: &Value, sel: &Value) -> Vec<Value> {
    let mut v = vec![
        json!(str_at(obj, "/metadata/name")),
        json!(int(obj, "/spec/replicas")),
        json!(int(obj, "/status/replicas")),
        json!(int(obj, "/status/readyReplicas")),
        age_cell(obj),
    ];
    v.extend(wide_cells_with(obj, sel));
    v
}

/// The cells of [`WIDE_COLUMNS`].
pub fn wide_cells(obj: &Value) -> Vec<Value> {
    wide_cells_with(obj, obj.pointer("/spec/selector").unwrap_or(&Value::Null))
}

/// The cells of [`WIDE_COLUMNS`] with the selector as a `LabelSelector` given apart.
pub fn wide_cells_with(obj: &Value, sel: &Value) -> Vec<Value> {
    let cs = obj
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| str_at(c, "/image")).collect();
    vec![
        json!(names.join(",")),
        json!(images.join(",")),
        json!(none_if_empty(selector_string(sel))),
    ]
}
