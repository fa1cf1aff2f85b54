//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes' strategic
//! merge patch for the built-in types (lists merged by their merge keys).

use serde_json::{Map, Value};

use super::error::ApiError;

/// The patch types of `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        Some(match base {
            "application/json-patch+json" => PatchType::Json,
            "application/merge-patch+json" => PatchType::Merge,
            "application/strategic-merge-patch+json" => PatchType::StrategicMerge,
            "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
            _ => return None,
        })
    }
}

/// Applies a JSON, merge or strategic merge patch to `target` (apply patches go through
/// `api::apply`, which needs field ownership).
pub fn apply_patch(kind: PatchType, target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match kind {
        PatchType::Json => json_patch(target, patch),
        PatchType::Merge => {
            require_object(patch)?;
            merge_patch(target, patch);
            Ok(())
        }
        PatchType::StrategicMerge => {
            require_object(patch)?;
            strategic_merge_patch(target, patch);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::UnsupportedMediaType(
            "application/apply-patch+yaml is served by server-side apply".into(),
        )),
    }
}

fn require_object(patch: &Value) -> Result<(), ApiError> {
    if patch.is_object() {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "the patch must be a JSON object".into(),
        ))
    }
}

/// RFC 7386: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn unescape(tok: &str) -> String {
    tok.replace("~1", "/").replace("~0", "~")
}

fn split_pointer(path: &str) -> Result<(String, String), ApiError> {
    if path.is_empty() {
        return Err(ApiError::BadRequest(
            "json patch: the whole document cannot be replaced".into(),
        ));
    }
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| ApiError::BadRequest(format!("json patch: invalid path {path:?}")))?;
    Ok((parent.to_string(), unescape(last)))
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), ApiError> {
    let (parent, last) = split_pointer(path)?;
    let target = doc
        .pointer_mut(&parent)
        .ok_or_else(|| ApiError::BadRequest(format!("json patch: path {parent:?} not found")))?;
    match target {
        Value::Object(m) => {
            if replace && !m.contains_key(&last) {
                return Err(ApiError::BadRequest(format!(
                    "json patch: replace of missing path {path:?}"
                )));
            }
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
            } else {
                let i: usize = last.parse().map_err(|_| {
                    ApiError::BadRequest(format!("json patch: invalid array index in {path:?}"))
                })?;
                if replace {
                    let slot = a.get_mut(i).ok_or_else(|| {
                        ApiError::BadRequest(format!("json patch: index out of range in {path:?}"))
                    })?;
                    *slot = value;
                } else {
                    if i > a.len() {
                        return Err(ApiError::BadRequest(format!(
                            "json patch: index out of range in {path:?}"
                        )));
                    }
                    a.insert(i, value);
                }
            }
        }
        _ => {
            return Err(ApiError::BadRequest(format!(
                "json patch: {parent:?} is not an object or array"
            )));
        }
    }
    Ok(())
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, last) = split_pointer(path)?;
    let missing = || ApiError::BadRequest(format!("json patch: path {path:?} not found"));
    match doc.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(missing())
            }
        }
        _ => Err(missing()),
    }
}

/// RFC 6902 operations applied in order; any failure leaves `doc` unusable (callers patch a copy).
pub fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("json patch: the body must be an array".into()))?;
    for (i, op) in ops.iter().enumerate() {
        let field = |name: &str| -> Result<&str, ApiError> {
            op.get(name).and_then(Value::as_str).ok_or_else(|| {
                ApiError::BadRequest(format!("json patch: operation {i} has no \"{name}\""))
            })
        };
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::BadRequest(format!("json patch: operation {i} has no \"value\""))
            })
        };
        let path = field("path")?;
        match field("op")? {
            "add" => add_at(doc, path, value()?, false)?,
            "replace" => add_at(doc, path, value()?, true)?,
            "remove" => {
                remove_at(doc, path)?;
            }
            "move" => {
                let v = remove_at(doc, field("from")?)?;
                add_at(doc, path, v, false)?;
            }
            "copy" => {
                let from = field("from")?;
                let v = doc.pointer(from).cloned().ok_or_else(|| {
                    ApiError::BadRequest(format!("json patch: path {from:?} not found"))
                })?;
                add_at(doc, path, v, false)?;
            }
            "test" => {
                if doc.pointer(path) != Some(&value()?) {
                    tracing::debug!(operation = i, path, "json patch test failed");
                    return Err(ApiError::PatchTestFailed);
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "json patch: unknown operation {other:?}"
                )));
            }
        }
    }
    Ok(())
}

/// The merge key of a list field of the built-in types, by field name.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "ports_by_name" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "addresses" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// The merge key that the OpenAPI schema of type `type_name` (`io.k8s.api.core.v1.PodSpec`)
/// declares for its list `field`: kubectl computes `apply` patches from these. Narrower than
/// `merge_key`, which goes by field name alone: Kubernetes declares keys only on these types.
pub fn declared_merge_key(type_name: &str, field: &str) -> Option<&'static str> {
    let ty = type_name.rsplit('.').next().unwrap_or("");
    match (ty, field) {
        ("ServiceSpec", "ports") => Some("port"),
        ("PodSpec" | "Container" | "EphemeralContainer" | "ObjectMeta", _)
        | ("NodeStatus", "addresses") => merge_key(field),
        (_, "conditions") if ty.ends_with("Status") => merge_key(field),
        _ => None,
    }
}

/// The merge key of list `field` of an object that is itself the value (or a list item) of
/// field `owner`, given the list's items: `ports` of a container merge by `containerPort`,
/// `ports` of a Service's spec by `port`, and any other `ports` (an EndpointSlice's, a
/// NetworkPolicy rule's) are atomic, as Kubernetes declares them; `addresses` merge by `type`
/// only in a status (a Node's), not in an EndpointSlice's or Endpoints' lists.
pub fn list_merge_key(owner: &str, field: &str, items: &Value) -> Option<&'static str> {
    match field {
        "ports" => match owner {
            "containers" | "initContainers" | "ephemeralContainers" => Some("containerPort"),
            "spec" => items
                .as_array()
                .is_some_and(|a| {
                    a.iter()
                        .any(|i| i.get("port").is_some() && i.get("containerPort").is_none())
                })
                .then_some("port"),
            _ => None,
        },
        "addresses" => (owner == "status").then_some("type"),
        _ => merge_key(field),
    }
}

/// Kubernetes strategic merge patch over JSON, with the merge keys of the built-in types and the
/// `$patch` directives `delete`, `replace` and `merge`. Lists without a merge key are replaced.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    merge_object(target, patch, "");
}

/// [`strategic_merge_patch`] of the object that is the value (or a list item) of field `name`.
fn merge_object(target: &mut Value, patch: &Value, name: &str) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let _ = field;
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (v, list_merge_key(name, k, v)) {
            (Value::Array(items), Some(key)) if t.get(k).is_some_and(Value::is_array) => {
                let Some(Value::Array(existing)) = t.get_mut(k) else {
                    continue;
                };
                for item in items {
                    let id = item.get(key).cloned();
                    let directive = item.get("$patch").and_then(Value::as_str);
                    let pos = id
                        .as_ref()
                        .and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
                    match (directive, pos) {
                        (Some("delete"), Some(i)) => {
                            existing.remove(i);
                        }
                        (Some("delete"), None) => {}
                        (_, Some(i)) => merge_object(&mut existing[i], item, k),
                        (_, None) => {
                            let mut fresh = Value::Null;
                            merge_object(&mut fresh, item, k);
                            existing.push(fresh);
                        }
                    }
                }
            }
            (Value::Array(items), _) => {
                t.insert(
                    k.clone(),
                    Value::Array(
                        items
                            .iter()
                            .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                            .cloned()
                            .collect(),
                    ),
                );
            }
            (Value::Object(_), _) => {
                merge_object(t.entry(k.clone()).or_insert(Value::Null), v, k);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        let mut t = json!({"a": [{"b": "c"}]});
        merge_patch(&mut t, &json!({"a": [1]}));
        assert_eq!(t, json!({"a": [1]}));
    }

    #[test]
    fn json_patch_operations() {
        let mut d = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "x"},
                {"op": "remove", "path": "/list/0"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "test", "path": "/list", "value": [2, 3]},
                {"op": "copy", "from": "/metadata/labels/a", "path": "/c"},
                {"op": "move", "from": "/c", "path": "/d"}
            ]),
        )
        .unwrap();
        assert_eq!(
            d,
            json!({"metadata": {"labels": {"a": "x", "b": "2"}}, "list": [2, 3], "d": "x"})
        );
        let mut d = json!({"a": 1});
        assert!(
            json_patch(
                &mut d,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut d, &json!([{"op": "test", "path": "/a", "value": 2}])).is_err());
        assert!(json_patch(&mut d, &json!({"op": "add"})).is_err());
    }

    #[test]
    fn strategic_merge_by_name_and_delete_directive() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y:1"}
        ], "tolerations": [{"key": "k"}]}});
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [
                {"name": "a", "image": "x:2", "env": [{"name": "B", "value": "2"}]},
                {"name": "b", "$patch": "delete"},
                {"name": "c", "image": "z:1"}
            ], "tolerations": [{"key": "j"}]}}),
        );
        assert_eq!(
            pod,
            json!({"spec": {"containers": [
                {"name": "a", "image": "x:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "c", "image": "z:1"}
            ], "tolerations": [{"key": "j"}]}})
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let mut svc =
            json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]}});
        strategic_merge_patch(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
        );
        assert_eq!(
            svc,
            json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80, "name": "http"}]}})
        );
    }

    #[test]
    fn other_ports_and_addresses_lists_are_atomic() {
        // An EndpointSlice's ports and addresses, and a NetworkPolicy rule's ports, are
        // replaced whole, as Kubernetes declares them.
        let mut slice = json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}]});
        strategic_merge_patch(
            &mut slice,
            &json!({"ports": [{"name": "dns", "port": 5353, "protocol": "UDP"}]}),
        );
        assert_eq!(
            slice["ports"],
            json!([{"name": "dns", "port": 5353, "protocol": "UDP"}])
        );
        let mut policy = json!({"spec": {"ingress": [{"ports": [{"port": 80}]}]}});
        strategic_merge_patch(
            &mut policy,
            &json!({"spec": {"ingress": [{"ports": [{"port": 443}]}]}}),
        );
        assert_eq!(
            policy["spec"]["ingress"],
            json!([{"ports": [{"port": 443}]}])
        );
        // A container's ports still merge by containerPort, a Node's addresses by type.
        let mut pod =
            json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]}});
        strategic_merge_patch(
            &mut pod,
            &json!({"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 81}]}]}}),
        );
        assert_eq!(
            pod["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 80}, {"containerPort": 81}])
        );
        let mut node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "a"}]}});
        strategic_merge_patch(
            &mut node,
            &json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}]}}),
        );
        assert_eq!(
            node["status"]["addresses"].as_array().map(Vec::len),
            Some(2)
        );
    }
}
