//! Admission that is the same for every kind: type checking against the kind's schema
//! (`shape`), pruning and reporting unknown fields, and
//! the metadata rules (names, labels, annotations). What differs per kind is in `kinds/`.

use serde_json::{Value, json};

use super::error::{ApiError, FieldError};
use super::resources::Resource;
use super::shape::Shape;

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

/// Checks the types of `obj`'s fields against its kind's schema: a wrong one is a 400 in the
/// words of Kubernetes' decoder.
pub fn check_types(res: &Resource, obj: &Value) -> Result<(), ApiError> {
    Shape::of(res).check(obj).map_err(|e| {
        ApiError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
            kind = res.kind,
            version = res.version
        ))
    })
}

/// The paths of fields in `obj` that its kind does not know (`spec.foo`,
/// `spec.containers[0].bar`), as strict field validation reports them.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Result<Vec<String>, ApiError> {
    check_types(res, obj)?;
    Ok(Shape::of(res).unknown_fields(obj))
}

/// Removes the fields `unknown_fields` reports: Kubernetes drops them when it decodes a body, so
/// they are never stored.
pub fn prune_unknown(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    check_types(res, obj)?;
    Shape::of(res).prune(obj);
    Ok(())
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
