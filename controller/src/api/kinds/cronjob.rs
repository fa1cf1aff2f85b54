//! CronJobs (batch/v1): Kubernetes' defaults (Allow, not suspended, history limits 3 and 1),
//! validation (the schedule parsed as the controller parses it, `TZ=` refused in favour of
//! `timeZone`, a known time zone, names short enough for the Jobs' minute suffix, the job
//! template), and the columns of `kubectl get cronjobs`.

use serde_json::{Value, json};

use super::workload::{WIDE_COLUMNS, default_template};
use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{
    AGE, Column, NAME, Strategy, TypeOps, non_negative, obj_mut, set_default, str_at,
};
use crate::api::table::age;

#[derive(Debug)]
pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::batch::v1::CronJob>()
    }

    fn default(&self, obj: &mut Value) {
        let spec = obj_mut(obj, "spec");
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
        let jt = spec.entry("jobTemplate").or_insert_with(|| json!({}));
        if jt.is_object() {
            let js = obj_mut(jt, "spec");
            set_default(js, "backoffLimit", json!(6));
            set_default(js, "completionMode", json!("NonIndexed"));
            set_default(js, "suspend", json!(false));
            default_template(js);
        }
    }

    fn validate(&self, obj: &Value, old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let schedule = str_at(obj, "/spec/schedule");
        if schedule.is_empty() {
            errs.push(FieldError::required("spec.schedule"));
        } else if schedule.contains("TZ") {
            let had_tz = old.is_some_and(|o| str_at(o, "/spec/schedule").contains("TZ"));
            let detail = if had_tz && obj.pointer("/spec/timeZone").is_some_and(|t| !t.is_null()) {
                "cannot use both timeZone field and TZ or CRON_TZ in schedule"
            } else if had_tz {
                ""
            } else {
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
            };
            if !detail.is_empty() {
                errs.push(FieldError::invalid(
                    "spec.schedule",
                    &json!(schedule),
                    detail,
                ));
            }
        } else if let Err(e) = crate::cron::parse(schedule) {
            errs.push(FieldError::invalid("spec.schedule", &json!(schedule), e));
        }
        if let Some(tz) = obj.pointer("/spec/timeZone").filter(|t| !t.is_null()) {
            let t = tz.as_str().unwrap_or("");
            let problem = if t.is_empty() {
                Some("timeZone must be nil or non-empty string".to_owned())
            } else if t.eq_ignore_ascii_case("local") {
                Some("timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones".to_owned())
            } else {
                jiff::tz::TimeZone::get(t)
                    .err()
                    .map(|_| format!("unknown time zone {t}"))
            };
            if let Some(p) = problem {
                errs.push(FieldError::invalid("spec.timeZone", tz, p));
            }
        }
        let policy = str_at(obj, "/spec/concurrencyPolicy");
        if !["Allow", "Forbid", "Replace"].contains(&policy) {
            errs.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                &json!(policy),
                &["Allow", "Forbid", "Replace"],
            ));
        }
        non_negative(
            &mut errs,
            obj,
            "/spec/startingDeadlineSeconds",
            "spec.startingDeadlineSeconds",
        );
        non_negative(
            &mut errs,
            obj,
            "/spec/successfulJobsHistoryLimit",
            "spec.successfulJobsHistoryLimit",
        );
        non_negative(
            &mut errs,
            obj,
            "/spec/failedJobsHistoryLimit",
            "spec.failedJobsHistoryLimit",
        );
        if old.is_none() {
            let n = str_at(obj, "/metadata/name");
            if n.len() > 52 {
                errs.push(FieldError::invalid(
                    "metadata.name",
                    &json!(n),
                    "must be no more than 52 characters",
                ));
            }
        }
        if obj
            .pointer("/spec/jobTemplate/spec/selector")
            .is_some_and(|s| !s.is_null())
        {
            errs.push(FieldError::invalid(
                "spec.jobTemplate.spec.selector",
                &obj["spec"]["jobTemplate"]["spec"]["selector"],
                "`selector` will be auto-generated",
            ));
        }
        match obj.pointer("/spec/jobTemplate/spec/template/spec") {
            None => errs.push(FieldError::required(
                "spec.jobTemplate.spec.template.spec.containers",
            )),
            Some(t) => {
                for mut e in super::pod::validate_pod(&json!({"spec": t})) {
                    e.field = format!("spec.jobTemplate.spec.template.{}", e.field);
                    errs.push(e);
                }
                if let Some(p) = t.get("restartPolicy").and_then(Value::as_str)
                    && p != "OnFailure"
                    && p != "Never"
                {
                    errs.push(FieldError::not_supported(
                        "spec.jobTemplate.spec.template.spec.restartPolicy",
                        &json!(p),
                        &["OnFailure", "Never"],
                    ));
                }
            }
        }
        errs
    }

    fn warnings(&self, obj: &Value) -> Vec<String> {
        obj.pointer("/spec/jobTemplate/spec/template/spec")
            .map(|s| super::podspec::unsupported(s, "spec.jobTemplate.spec.template.spec"))
            .unwrap_or_default()
    }

    fn columns(&self) -> &'static [Column] {
        const C: [Column; 10] = [
            NAME,
            Column::new("Schedule", "string", 0, "The schedule of the jobs."),
            Column::new("Timezone", "string", 0, "The time zone of the schedule."),
            Column::new("Suspend", "boolean", 0, "Whether new jobs are held back."),
            Column::new("Active", "integer", 0, "Jobs running now."),
            Column::new(
                "Last Schedule",
                "string",
                0,
                "When a job was last scheduled.",
            ),
            AGE,
            WIDE_COLUMNS[0],
            WIDE_COLUMNS[1],
            Column::new("Selector", "string", 1, "The label selector of the jobs."),
        ];
        &C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let cs = obj
            .pointer("/spec/jobTemplate/spec/template/spec/containers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let names: Vec<&str> = cs.iter().map(|c| str_at(c, "/name")).collect();
        let images: Vec<&str> = cs.iter().map(|c| str_at(c, "/image")).collect();
        let last = match str_at(obj, "/status/lastScheduleTime") {
            "" => "<none>".to_owned(),
            t => age(t),
        };
        let tz = match str_at(obj, "/spec/timeZone") {
            "" => "<none>",
            t => t,
        };
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(str_at(obj, "/spec/schedule")),
            json!(tz),
            json!(
                obj.pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            json!(
                obj.pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(last),
            json!(age(str_at(obj, "/metadata/creationTimestamp"))),
            json!(names.join(",")),
            json!(images.join(",")),
            json!("<none>"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cj(schedule: &str) -> Value {
        json!({"metadata": {"name": "hello"}, "spec": {"schedule": schedule, "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
    }

    #[test]
    fn schedules_are_checked_as_the_controller_reads_them() {
        let s = CronJobStrategy;
        let mut ok = cj("*/5 * * * *");
        s.default(&mut ok);
        assert!(s.validate(&ok, None, Part::Main).is_empty());
        let mut bad = cj("every minute");
        s.default(&mut bad);
        let e = s.validate(&bad, None, Part::Main);
        assert_eq!(e[0].field, "spec.schedule");
        assert!(
            e[0].message.contains("expected exactly 5 fields, found 2"),
            "{}",
            e[0].message
        );
        let mut tz = cj("TZ=UTC * * * * *");
        s.default(&mut tz);
        assert!(
            s.validate(&tz, None, Part::Main)[0]
                .message
                .contains("use timeZone field instead")
        );
        let mut zone = cj("@daily");
        zone["spec"]["timeZone"] = json!("Mars/Olympus");
        s.default(&mut zone);
        assert_eq!(
            s.validate(&zone, None, Part::Main)[0].field,
            "spec.timeZone"
        );
    }
}
