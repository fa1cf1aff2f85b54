//! LimitRanges (core/v1), validated as Kubernetes does (each limit's type, and min <= default
//! request <= default <= max for every resource). skiff does not apply them yet (no defaults
//! for containers, no admission against them): a write says so in a `Warning`.

use serde_json::Value;

use crate::api::error::FieldError;
use crate::api::objects::Part;
use crate::api::strategy::{CREATED_AT, Column, NAME, Strategy, TypeOps, created_at_cells, str_at};
use crate::quantity::parse_milli;

#[derive(Debug)]
pub struct LimitRangeStrategy;

const TYPES: &[&str] = &["Pod", "Container", "PersistentVolumeClaim"];

/// A quantity of `limit.<field>.<resource>` in thousandths, comparable across suffixes.
fn quantity(limit: &Value, field: &str, resource: &str) -> Option<i128> {
    limit
        .get(field)?
        .get(resource)?
        .as_str()
        .and_then(parse_milli)
}

impl Strategy for LimitRangeStrategy {
    fn types(&self) -> TypeOps {
        TypeOps::of::<k8s_openapi::api::core::v1::LimitRange>()
    }

    fn validate(&self, obj: &Value, _old: Option<&Value>, _part: Part) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let limits = obj.pointer("/spec/limits").and_then(Value::as_array);
        for (i, l) in limits.into_iter().flatten().enumerate() {
            let ty = str_at(l, "/type");
            if !TYPES.contains(&ty) {
                errs.push(FieldError::not_supported(
                    format!("spec.limits[{i}].type"),
                    &l["type"],
                    TYPES,
                ));
            }
            let mut names: Vec<&str> = Vec::new();
            for f in ["min", "max", "default", "defaultRequest"] {
                for k in l
                    .get(f)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                {
                    if !names.contains(&k.as_str()) {
                        names.push(k);
                    }
                }
            }
            // Kubernetes' order: min <= defaultRequest <= default <= max.
            let order = [
                ("min", "defaultRequest"),
                ("defaultRequest", "default"),
                ("default", "max"),
                ("min", "max"),
            ];
            for r in names {
                for (lo, hi) in order {
                    if let (Some(a), Some(b)) = (quantity(l, lo, r), quantity(l, hi, r))
                        && a > b
                    {
                        errs.push(FieldError::invalid(
                            format!("spec.limits[{i}].{hi}[{r}]"),
                            &l[hi][r],
                            format!(
                                "{lo} value {} is greater than {hi} value {}",
                                l[lo][r].as_str().unwrap_or_default(),
                                l[hi][r].as_str().unwrap_or_default()
                            ),
                        ));
                    }
                }
            }
        }
        errs
    }

    fn warnings(&self, _obj: &Value) -> Vec<String> {
        vec!["skiff does not apply LimitRanges yet: this object is stored, but containers get no defaults from it and nothing is checked against it".into()]
    }

    fn columns(&self) -> &'static [Column] {
        &[NAME, CREATED_AT]
    }

    fn cells(&self, obj: &Value) -> Vec<Value> {
        created_at_cells(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn limits_need_a_known_type_and_ordered_bounds() {
        let ok = json!({"spec": {"limits": [{"type": "Container", "min": {"cpu": "100m"}, "defaultRequest": {"cpu": "200m"}, "default": {"cpu": "500m"}, "max": {"cpu": "1"}}]}});
        assert!(
            LimitRangeStrategy
                .validate(&ok, None, Part::Main)
                .is_empty()
        );
        let bad = json!({"spec": {"limits": [{"type": "Node", "min": {"memory": "2Gi"}, "max": {"memory": "1Gi"}}]}});
        let errs = LimitRangeStrategy.validate(&bad, None, Part::Main);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.limits[0].type", "spec.limits[0].max[memory]"]
        );
    }
}
