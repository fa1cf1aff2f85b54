//! Jobs (batch/v1): Kubernetes' defaults (completions, parallelism, backoffLimit, the
//! generated `controller-uid` selector and labels), the workload validation with restartPolicy
//! OnFailure or Never, deletion that orphans pods by default (with Kubernetes' warning), and the
//! columns of `kubectl get jobs`.

use serde_json::{Map, Value, json};

use super::workload::{self, WIDE_COLUMNS, default_template, wide_cells};
use crate::api::error::FieldError;
use crate::api::objects::{Part, Propagation};
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, age_cell, obj_mut, set_default, str_at,
};
use crate::api::table::{human_duration, int};

#[derive(Debug)]
pub struct JobStrategy;

/// The labels the job controller puts on a job's pods (and selects them by).
pub fn job_labels(uid: &str, name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
    m.insert("batch.kubernetes.io/job-name".into(), json!(name));
    m.insert("controller-uid".into(), json!(uid));
    m.insert("job-name".into(), json!(name));
    m
}

impl Strategy for JobStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::batch::v1::Job>()
    }

    fn default(&self, obj: &mut Value) {
        let uid = str_at(obj, "/metadata/uid").to_string();
        let name = str_at(obj, "/metadata/name").to_string();
        let spec = obj_mut(obj, "spec");
        if spec.get("completions").is_none_or(Value::is_null)
            && spec.get("parallelism").is_none_or(Value::is_null)
        {
            spec.insert("completions".into(), json!(1));
        }
        set_default(spec, "parallelism", json!(1));
        set_default(spec, "backoffLimit", json!(6));
        set_default(spec, "completionMode", json!("NonIndexed"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
        let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
        if !manual && !uid.is_empty() && spec.get("selector").is_none_or(Value::is_null) {
            spec.insert(
                "selector".into(),
                json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
            );
            let t = spec.entry("template").or_insert_with(|| json!({}));
            if t.is_object() {
                let labels = obj_mut(t, "metadata")
                    .entry("labels")
                    .or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    for (k, v) in job_labels(&uid, &name) {
                        l.insert(k, v);
                    }
                }
            }
        }
        default_template(spec);
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        workload::validate("Job", obj, old, false, &["OnFailure", "Never"])
    }

    fn default_propagation(&self) -> Propagation {
        Propagation::Orphan
    }

    fn delete_warning(&self) -> Option<&'static str> {
        Some(
            "child pods are preserved by default when jobs are deleted; set propagationPolicy=Background to remove them or set propagationPolicy=Orphan to suppress this warning",
        )
    }

    fn selectable_field(&self, field: &str) -> Option<&'static str> {
        (field == "status.successful").then_some("/status/succeeded")
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        workload::warnings(obj)
    }

    fn columns(&self) -> &'static [Column] {
        const C: [Column; 8] = [
            NAME,
            Column::new("Status", "string", 0, "Status of the job."),
            Column::new(
                "Completions",
                "string",
                0,
                "Desired and successful completions.",
            ),
            Column::new("Duration", "string", 0, "Time the job took to finish."),
            AGE,
            WIDE_COLUMNS[0],
            WIDE_COLUMNS[1],
            WIDE_COLUMNS[2],
        ];
        &C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let conds = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let has = |t: &str| {
            conds
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True")
        };
        let status = if has("Complete") {
            "Complete"
        } else if has("Failed") {
            "Failed"
        } else if has("FailureTarget") {
            "FailureTarget"
        } else if obj.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
            "Suspended"
        } else {
            "Running"
        };
        let completions = match obj.pointer("/spec/completions").and_then(Value::as_i64) {
            Some(c) => format!("{}/{c}", int(obj, "/status/succeeded")),
            None => format!(
                "{}/1 of {}",
                int(obj, "/status/succeeded"),
                int(obj, "/spec/parallelism")
            ),
        };
        let start = str_at(obj, "/status/startTime")
            .parse::<jiff::Timestamp>()
            .ok();
        let end = str_at(obj, "/status/completionTime")
            .parse::<jiff::Timestamp>()
            .ok()
            .unwrap_or_else(jiff::Timestamp::now);
        let duration = match start {
            Some(st) => human_duration(end.duration_since(st).as_secs().max(0)),
            None => String::new(),
        };
        let mut v = vec![
            json!(str_at(obj, "/metadata/name")),
            json!(status),
            json!(completions),
            json!(duration),
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
    fn job_defaults_generate_selector_and_labels() {
        let mut j = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
        let s = JobStrategy;
        s.default(&mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert!(s.validate(&j, None, Part::Main).is_empty());
        j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        assert_eq!(
            s.validate(&j, None, Part::Main)[0].field,
            "spec.template.spec.restartPolicy"
        );
    }
}
