//! ControllerRevisions (apps/v1): the immutable snapshots of a StatefulSet's (or DaemonSet's)
//! pod template that rollouts and `kubectl rollout history|undo` work from. Only metadata may
//! change after creation (the controller bumps `revision` on a rollback, as Kubernetes does).

use serde_json::{Value, json};

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct ControllerRevisionStrategy;

impl Strategy for ControllerRevisionStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::apps::v1::ControllerRevision>()
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if obj
            .get("revision")
            .and_then(Value::as_i64)
            .is_none_or(|r| r < 0)
        {
            errs.push(FieldError::invalid(
                "revision",
                obj.get("revision").unwrap_or(&Value::Null),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(old) = old
            && old.get("data") != obj.get("data")
        {
            errs.push(FieldError::invalid(
                "data",
                &json!("<data>"),
                "field is immutable",
            ));
        }
        errs
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Controller", "string", 0, "Controller of the object."),
            Column::new(
                "Revision",
                "integer",
                0,
                "Revision of the ControllerRevision.",
            ),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let controller = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
            .map(|r| {
                let kind = str_at(r, "/kind").to_lowercase();
                let group = str_at(r, "/apiVersion")
                    .split_once('/')
                    .map(|(g, _)| format!(".{g}"))
                    .unwrap_or_default();
                format!("{kind}{group}/{}", str_at(r, "/name"))
            })
            .unwrap_or_else(|| "<none>".into());
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(controller),
            json!(obj.get("revision").and_then(Value::as_i64).unwrap_or(0)),
            age_cell(obj),
        ]
    }
}
