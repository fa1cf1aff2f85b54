//! Admission that is the same for every kind: type checking against the Kubernetes schema
//! (k8s-openapi types, through each kind's strategy), pruning and reporting unknown fields, and
//! the metadata rules (names, labels, annotations). What differs per kind is in `kinds/`.

use serde_json::{Value, json};

use super::error::{ApiError, FieldError};
use super::resources::Resource;

pub fn dns_label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("a lowercase RFC 1123 label must not be empty".into());
    }
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    (!ok).then(|| {
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into()
    })
}

pub fn dns_subdomain_problem(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty() && s.split('.').all(|l| dns_label_problem(l).is_none());
    (!ok).then(|| {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()
    })
}

/// The object as its Kubernetes type sees it: wrong types are a 400 naming the field.
fn typed(res: &Resource, obj: &Value) -> Result<Value, ApiError> {
    res.strategy.types().round_trip(obj, res.kind, res.version)
}

pub fn check_types(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    typed(res, obj).map(|_| ())
}

/// The paths of fields in `obj` that its Kubernetes type does not know (`spec.foo`,
/// `spec.containers[0].bar`), as strict field validation reports them.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Result<Vec<String>, ApiError> {
    let known = typed(res, obj)?;
    let mut out = Vec::new();
    diff_unknown(obj, &known, "", &mut out);
    Ok(out)
}

/// Removes the fields `unknown_fields` reports: Kubernetes drops them when it decodes a body, so
/// they are never stored.
pub fn prune_unknown(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let known = typed(res, obj)?;
    prune(obj, &known);
    Ok(())
}

fn prune(body: &mut Value, known: &Value) {
    match (body, known) {
        (Value::Object(b), Value::Object(k)) => {
            b.retain(|key, v| {
                k.contains_key(key)
                    || v.is_null()
                    || v.as_object().is_some_and(|m| m.is_empty())
                    || v.as_array().is_some_and(|a| a.is_empty())
            });
            for (key, v) in b.iter_mut() {
                if let Some(kv) = k.get(key) {
                    prune(v, kv);
                }
            }
        }
        (Value::Array(b), Value::Array(k)) => {
            for (bv, kv) in b.iter_mut().zip(k) {
                prune(bv, kv);
            }
        }
        _ => {}
    }
}

fn diff_unknown(body: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (body, known) {
        (Value::Object(b), Value::Object(k)) => {
            for (key, v) in b {
                let p = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match k.get(key) {
                    Some(kv) => diff_unknown(v, kv, &p, out),
                    // A null or empty value of a known field may be dropped by the round trip.
                    None if v.is_null() => {}
                    None if v.as_object().is_some_and(|m| m.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()) =>
                    {
                        // Empty containers of known optional fields are dropped as well; an
                        // unknown field holding `{}` is the one case this misses.
                    }
                    None => out.push(p),
                }
            }
        }
        (Value::Array(b), Value::Array(k)) => {
            for (i, (bv, kv)) in b.iter().zip(k).enumerate() {
                diff_unknown(bv, kv, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Validates metadata common to every kind.
pub fn validate_metadata(res: &Resource, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None | Some("") => errs.push(FieldError::required("metadata.name")),
        Some(n) => {
            if let Some(p) = res.strategy.name_problem(n) {
                errs.push(FieldError::invalid("metadata.name", &json!(n), p));
            }
        }
    }
    for field in ["labels", "annotations"] {
        if let Some(Value::Object(m)) = obj.pointer(&format!("/metadata/{field}")) {
            for (k, v) in m {
                if !v.is_string() {
                    errs.push(FieldError::invalid(
                        format!("metadata.{field}"),
                        v,
                        "values must be strings",
                    ));
                }
                if field == "labels" {
                    let value = v.as_str().unwrap_or("");
                    let ok = value.len() <= 63
                        && value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                    if !ok {
                        errs.push(FieldError::invalid(
                            "metadata.labels".to_string(),
                            v,
                            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                        ));
                    }
                    let _ = k;
                }
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_name_the_path() {
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        let e = check_types(super::super::resources::pods(), &p).unwrap_err();
        assert!(e.to_string().contains("spec.containers"), "{e}");
    }
}
