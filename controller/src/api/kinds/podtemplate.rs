//! PodTemplates (core/v1): a pod template stored on its own, defaulted and validated as a
//! workload's template, and the columns of `kubectl get podtemplates`.

use serde_json::{Value, json};

use super::pod::validate_pod;
use super::workload::default_template;
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{Column, NAME, Strategy, TypeOps, str_at};
use crate::api::table::none_if_empty;

#[derive(Debug)]
pub struct PodTemplateStrategy;

impl Strategy for PodTemplateStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::PodTemplate>()
    }

    fn default(&self, obj: &mut Value) {
        // `default_template` works on the map holding `template`: here the object itself.
        if let Some(m) = obj.as_object_mut() {
            default_template(m);
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let spec = obj.pointer("/template/spec").cloned().unwrap_or(json!({}));
        validate_pod(&json!({ "spec": spec }))
            .into_iter()
            .map(|mut e| {
                e.field = format!("template.{}", e.field);
                e
            })
            .collect()
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new("Containers", "string", 0, "Names of the containers."),
            Column::new("Images", "string", 0, "Images of the containers."),
            Column::new("Pod Labels", "string", 0, "Labels of the pods."),
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let cs: Vec<&Value> = obj
            .pointer("/template/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let names: Vec<&str> = cs.iter().map(|c| str_at(c, "/name")).collect();
        let images: Vec<&str> = cs.iter().map(|c| str_at(c, "/image")).collect();
        let labels: Vec<String> = obj
            .pointer("/template/metadata/labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(names.join(",")),
            json!(images.join(",")),
            json!(none_if_empty(labels.join(","))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_defaulted_and_validated_as_a_pods() {
        let mut t = json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}});
        PodTemplateStrategy.default(&mut t);
        assert_eq!(t["template"]["spec"]["restartPolicy"], "Always");
        assert!(
            PodTemplateStrategy
                .validate(&t, None, Part::Main)
                .is_empty()
        );
        assert_eq!(
            PodTemplateStrategy.cells(&t)[1..],
            [json!("c"), json!("busybox"), json!("a=b")]
        );
        let bad = json!({"template": {"spec": {"containers": [{"name": "c"}]}}});
        let errs = PodTemplateStrategy.validate(&bad, None, Part::Main);
        assert!(
            errs.iter()
                .any(|e| e.field == "template.spec.containers[0].image"),
            "{errs:?}"
        );
    }
}
