//! APIServices (apiregistration.k8s.io/v1): one per group-version the server serves itself
//! ("Local", made at start by [`local_api_services`]), and those that name a Service, whose
//! group-version the aggregator passes to that Service. Validation as the kube-aggregator's
//! (the name is `<version>.<group>`, priorities in range, TLS settings only with a Service) and
//! the columns of `kubectl get apiservices`. The `Available` condition is the apiservice
//! controller's (`controllers::apiservice`).

use serde_json::{Value, json};

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::resources;
use crate::api::strategy::{AGE, Column, NAME, Strategy, TypeOps, age_cell, str_at};

#[derive(Debug)]
pub struct ApiServiceStrategy;

/// The kube-apiserver's priorities of its own groups (`apiVersionPriorities`): discovery
/// lists groups by `groupPriorityMinimum`, highest first.
fn priorities(group: &str) -> (i64, i64) {
    let group_priority = match group {
        "" => 18000,
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "autoscaling" => 17500,
        "batch" => 17400,
        "policy" => 17100,
        "rbac.authorization.k8s.io" => 17000,
        "storage.k8s.io" => 16800,
        "coordination.k8s.io" => 16500,
        "discovery.k8s.io" => 16200,
        "apiregistration.k8s.io" => 18000,
        _ => 16000,
    };
    (group_priority, if group.is_empty() { 1 } else { 15 })
}

/// The name of the APIService of a group-version: `v1.apps`, and `v1.` for the core group.
pub fn name_of(group: &str, version: &str) -> String {
    format!("{version}.{group}")
}

/// The APIServices of what this server serves itself, one per group-version of the resource
/// table, as the kube-apiserver registers its own.
pub fn local_api_services() -> Vec<Value> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for r in resources::all() {
        let gv = (r.group, r.version);
        if !seen.contains(&gv) {
            seen.push(gv);
        }
    }
    seen.into_iter()
        .map(|(group, version)| {
            let (g, v) = priorities(group);
            json!({
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": name_of(group, version), "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
                "spec": {"group": group, "version": version, "groupPriorityMinimum": g, "versionPriority": v},
            })
        })
        .collect()
}

/// An APIService's `Available` condition, once the availability controller has set it.
pub fn available_condition(obj: &Value) -> Option<&Value> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Available")
}

impl Strategy for ApiServiceStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService>()
    }

    fn name_problem(&self, _name: &str) -> Option<String> {
        // The name must be `<version>.<group>`, which validation checks (`v1.` has a dot at the
        // end, which no DNS name has).
        None
    }

    fn default(&self, obj: &mut Value) {
        if let Some(s) = obj
            .pointer_mut("/spec/service")
            .and_then(Value::as_object_mut)
        {
            s.entry("port").or_insert(json!(443));
        }
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let group = str_at(spec, "/group");
        let version = str_at(spec, "/version");
        let want = name_of(group, version);
        let name = str_at(obj, "/metadata/name");
        if name != want {
            errs.push(FieldError::invalid(
                "metadata.name",
                &json!(name),
                format!("must be `spec.version+\".\"+spec.group`: {want:?}"),
            ));
        }
        if group.is_empty() && version != "v1" {
            errs.push(FieldError::required_because(
                "spec.group",
                "only v1 may have an empty group and it better be legacy kube",
            ));
        }
        if version.is_empty() {
            errs.push(FieldError::required("spec.version"));
        }
        let in_range = |field: &str, max: i64| {
            let v = spec.get(field).and_then(Value::as_i64).unwrap_or(0);
            (v <= 0 || v > max).then(|| {
                FieldError::invalid(
                    format!("spec.{field}"),
                    &json!(v),
                    format!("must be positive and less than {max}"),
                )
            })
        };
        errs.extend(in_range("groupPriorityMinimum", 20000));
        errs.extend(in_range("versionPriority", 1000));
        let skip_tls = spec
            .get("insecureSkipTLSVerify")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ca = str_at(spec, "/caBundle");
        match spec.get("service").filter(|s| !s.is_null()) {
            None => {
                if !ca.is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.caBundle",
                        &json!(ca),
                        "local APIServices may not have a caBundle",
                    ));
                }
                if skip_tls {
                    errs.push(FieldError::invalid(
                        "spec.insecureSkipTLSVerify",
                        &json!(true),
                        "local APIServices may not have insecureSkipTLSVerify",
                    ));
                }
            }
            Some(service) => {
                for f in ["namespace", "name"] {
                    if str_at(service, &format!("/{f}")).is_empty() {
                        errs.push(FieldError::required(format!("spec.service.{f}")));
                    }
                }
                let port = service.get("port").and_then(Value::as_i64).unwrap_or(443);
                if !(1..=65535).contains(&port) {
                    errs.push(FieldError::invalid(
                        "spec.service.port",
                        &json!(port),
                        "port is not valid: must be between 1 and 65535, inclusive",
                    ));
                }
                if skip_tls && !ca.is_empty() {
                    errs.push(FieldError::invalid(
                        "spec.insecureSkipTLSVerify",
                        &json!(true),
                        "may not be true if caBundle is present",
                    ));
                }
            }
        }
        errs
    }

    fn columns(&self) -> &'static [Column] {
        const C: &[Column] = &[
            NAME,
            Column::new(
                "Service",
                "string",
                0,
                "The service that serves this group-version.",
            ),
            Column::new(
                "Available",
                "string",
                0,
                "Whether this service is available.",
            ),
            AGE,
        ];
        C
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        let service = match obj.pointer("/spec/service").filter(|s| !s.is_null()) {
            Some(s) => format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name")),
            None => "Local".into(),
        };
        let available = available_condition(obj)
            .map(|c| match str_at(c, "/status") {
                "True" => "True".to_owned(),
                s => format!("{s} ({})", str_at(c, "/reason")),
            })
            .unwrap_or_else(|| "Unknown".into());
        vec![
            json!(str_at(obj, "/metadata/name")),
            json!(service),
            json!(available),
            age_cell(obj),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(errs: &[FieldError]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn the_name_is_version_dot_group_and_priorities_are_in_range() {
        let mut ok = json!({
            "metadata": {"name": "v1alpha1.wardle.k8s.io"},
            "spec": {"group": "wardle.k8s.io", "version": "v1alpha1", "insecureSkipTLSVerify": true,
                     "groupPriorityMinimum": 1000, "versionPriority": 15,
                     "service": {"namespace": "wardle", "name": "api"}},
        });
        ApiServiceStrategy.default(&mut ok);
        assert_eq!(ok["spec"]["service"]["port"], 443);
        assert!(
            ApiServiceStrategy
                .validate(&ok, None, Part::Main)
                .is_empty()
        );
        let bad = json!({
            "metadata": {"name": "wardle"},
            "spec": {"group": "wardle.k8s.io", "version": "v1alpha1", "caBundle": "Zm9v",
                     "insecureSkipTLSVerify": true, "groupPriorityMinimum": 0, "versionPriority": 1001},
        });
        assert_eq!(
            fields(&ApiServiceStrategy.validate(&bad, None, Part::Main)),
            [
                "metadata.name",
                "spec.groupPriorityMinimum",
                "spec.versionPriority",
                "spec.caBundle",
                "spec.insecureSkipTLSVerify"
            ]
        );
    }

    #[test]
    fn every_served_group_version_is_a_local_api_service() {
        let local = local_api_services();
        let names: Vec<&str> = local.iter().map(|a| str_at(a, "/metadata/name")).collect();
        for want in [
            "v1.",
            "v1.apps",
            "v1.batch",
            "v1.apiregistration.k8s.io",
            "v1.rbac.authorization.k8s.io",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for a in &local {
            assert!(
                ApiServiceStrategy.validate(a, None, Part::Main).is_empty(),
                "{a}"
            );
        }
    }
}
