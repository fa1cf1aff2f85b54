//! Deployments (apps/v1): Kubernetes' defaults (replicas, history limit, progress deadline,
//! RollingUpdate 25%/25%), the workload validation, and the columns of `kubectl get
//! deployments`.

use serde_json::{Value, json};

use super::workload::{self, WIDE_COLUMNS, default_template, wide_cells};
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::api::table::int;

#[derive(Debug)]
pub struct DeploymentStrategy;

impl Strategy for DeploymentStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::apps::v1::Deployment>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
        if let Some(st) = strategy.as_object_mut() {
            set_default(st, "type", json!("RollingUpdate"));
            if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                if let Some(ru) = ru.as_object_mut() {
                    set_default(ru, "maxUnavailable", json!("25%"));
                    set_default(ru, "maxSurge", json!("25%"));
                }
            }
        }
        default_template(spec);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        workload::validate("Deployment", obj, old, true, &["Always"])
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::warnings(obj)
    }

    fn columns(&self) -> &'static [Column] {
        const C: [Column; 8] = [
            NAME,
            Column::new("Ready", "string", 0, "Number of ready pods out of desired."),
            Column::new("Up-to-date", "integer", 0, "Number of updated replicas."),
            Column::new("Available", "integer", 0, "Number of available replicas."),
            AGE,
            WIDE_COLUMNS[0],
            WIDE_COLUMNS[1],
            WIDE_COLUMNS[2],
        ];
        &C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let mut v = vec![
            json!(str_at(obj, "/metadata/name")),
            json!(format!(
                "{}/{}",
                int(obj, "/status/readyReplicas"),
                int(obj, "/spec/replicas")
            )),
            json!(int(obj, "/status/updatedReplicas")),
            json!(int(obj, "/status/availableReplicas")),
            age_cell(obj),
        ];
        v.extend(wide_cells(obj));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_defaults_like_kubernetes() {
        let mut d = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"app": "w"}},
            "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}});
        let s = DeploymentStrategy;
        s.default(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(s.validate(&d, None, Part::Main).is_empty());
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("x");
        let errs = s.validate(&d, None, Part::Main);
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        d["spec"]["selector"] = Value::Null;
        assert_eq!(s.validate(&d, None, Part::Main)[0].field, "spec.selector");
    }

    #[test]
    fn deployment_row() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let cells = DeploymentStrategy.cells(&d);
        assert_eq!(
            cells,
            vec![
                json!("d"),
                json!("2/3"),
                json!(3),
                json!(2),
                cells[4].clone(),
                json!("c"),
                json!("busybox"),
                json!("app=w")
            ]
        );
        assert_eq!(DeploymentStrategy.columns().len(), 8);
    }
}
