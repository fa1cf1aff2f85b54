//! Server-side apply (`PATCH` with `application/apply-patch+yaml`): field ownership kept in
//! `metadata.managedFields`, conflicts, `force`, and create-on-apply.
//!
//! The ownership model is a simplified but honest form of Kubernetes' structured-merge-diff:
//! each manager owns the set of leaf paths its last applied configuration set (lists with merge
//! keys are addressed by key, as `k:{"name":"c"}`, other lists as a whole). Applying merges the
//! configuration into the live object (strategic merge), removes fields this manager owned
//! before and no longer applies (unless another manager owns them too), and fails with 409
//! naming each field and manager when another manager owns a field with a different value,
//! unless `force` moves ownership to the applier.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::objects::{Objects, Part, now};
use super::patch::strategic_merge_patch;
use super::resources::Resource;

/// A field path: object keys and list items by merge key (`k:{"name":"c"}`).
type FieldPath = Vec<String>;

/// The leaf paths a configuration sets (metadata bookkeeping excluded). `v` is the value (or a
/// list item) of field `name` of an object that is the value of field `owner`.
fn leaf_paths(
    v: &Value,
    prefix: &mut FieldPath,
    (name, owner): (&str, &str),
    out: &mut Vec<FieldPath>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                if prefix.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                if prefix.len() == 1
                    && prefix[0] == "f:metadata"
                    && matches!(
                        k.as_str(),
                        "name" | "namespace" | "resourceVersion" | "managedFields" | "uid"
                    )
                {
                    continue;
                }
                prefix.push(format!("f:{k}"));
                leaf_paths(child, prefix, (k, name), out);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            match super::patch::list_merge_key(owner, name, v) {
                Some(key) if items.iter().all(|i| i.get(key).is_some()) => {
                    for item in items {
                        let id = json!({key: item[key]}).to_string();
                        prefix.push(format!("k:{id}"));
                        leaf_paths(item, prefix, (name, owner), out);
                        prefix.pop();
                    }
                }
                _ => out.push(prefix.clone()),
            }
        }
        _ => out.push(prefix.clone()),
    }
}

/// The value at `path` in `obj`.
fn at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Value = serde_json::from_str(k).ok()?;
            let (key, want) = id.as_object()?.iter().next()?;
            cur = cur.as_array()?.iter().find(|i| i.get(key) == Some(want))?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the value at `path` from `obj`, if present.
fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for seg in parents {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(id) = serde_json::from_str::<Value>(k) else {
                return;
            };
            let Some((key, want)) = id.as_object().and_then(|o| o.iter().next()) else {
                return;
            };
            let (key, want) = (key.clone(), want.clone());
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| i.get(&key) == Some(&want)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:")
        && let Ok(id) = serde_json::from_str::<Value>(k)
        && let Some((key, want)) = id.as_object().and_then(|o| o.iter().next())
        && let Some(a) = cur.as_array_mut()
    {
        a.retain(|i| i.get(key) != Some(want));
    }
}

/// Encodes a set of paths as a `fieldsV1` tree (`{"f:spec":{"f:replicas":{}}}`).
fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for p in paths {
        insert_path(&mut root, p);
    }
    strip_dots(&mut root);
    Value::Object(root)
}

fn insert_path(m: &mut Map<String, Value>, p: &[String]) {
    match p.split_first() {
        None => {
            m.insert(".".into(), json!({}));
        }
        Some((seg, rest)) => {
            let child = m.entry(seg.clone()).or_insert_with(|| json!({}));
            if let Some(c) = child.as_object_mut() {
                insert_path(c, rest);
            }
        }
    }
}

/// `.` marks a path that ends at a node; it is needed only where the node also has children
/// (a list item both set as a whole and addressed inside), so it is dropped elsewhere.
fn strip_dots(m: &mut Map<String, Value>) {
    if m.keys().any(|k| k != ".") {
        m.remove(".");
    }
    for (_, v) in m.iter_mut() {
        if let Some(c) = v.as_object_mut() {
            strip_dots(c);
            if c.len() == 1 && c.contains_key(".") {
                c.clear();
            }
        }
    }
}

/// Decodes a `fieldsV1` tree back to leaf paths.
fn from_fields_v1(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(m) = v.as_object() else { return };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, c) in children {
        prefix.push(k.clone());
        from_fields_v1(c, prefix, out);
        prefix.pop();
    }
}

fn display_path(p: &FieldPath) -> String {
    let mut s = String::new();
    for seg in p {
        if let Some(f) = seg.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            s.push('[');
            s.push_str(k);
            s.push(']');
        }
    }
    s
}

/// Each manager's owned paths, from `metadata.managedFields` (Apply and Update entries).
fn ownership(obj: &Value) -> BTreeMap<(String, String), BTreeSet<FieldPath>> {
    let mut out = BTreeMap::new();
    for e in obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let manager = e["manager"].as_str().unwrap_or("").to_string();
        let op = e["operation"].as_str().unwrap_or("Update").to_string();
        let mut set = BTreeSet::new();
        from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut set);
        out.insert((manager, op), set);
    }
    out
}

fn write_ownership(
    obj: &mut Value,
    owners: &BTreeMap<(String, String), BTreeSet<FieldPath>>,
    api_version: &str,
    subresource: Option<&str>,
) {
    let entries: Vec<Value> = owners
        .iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|((manager, op), paths)| {
            let mut e = json!({
                "manager": manager,
                "operation": op,
                "apiVersion": api_version,
                "time": now(),
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(paths),
            });
            if let Some(s) = subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(entries);
}

/// Applies `config` as `manager`. Returns the object and whether it was created.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    objects: &Objects,
    res: &Resource,
    ns: Option<&str>,
    name: &str,
    config: &Value,
    manager: &str,
    force: bool,
    part: Part,
    dry_run: bool,
) -> Result<(Value, bool), ApiError> {
    if !config.is_object() {
        return Err(ApiError::BadRequest(
            "an apply configuration must be an object".into(),
        ));
    }
    for field in ["apiVersion", "kind"] {
        if config
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ApiError::BadRequest(format!(
                "error decoding the apply configuration: {field} must be set"
            )));
        }
    }
    let cfg_name = config
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or(name);
    if cfg_name != name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({cfg_name}) does not match the name on the URL ({name})"
        )));
    }
    let mut applied = Vec::new();
    leaf_paths(config, &mut Vec::new(), ("", ""), &mut applied);
    let applied: BTreeSet<FieldPath> = applied.into_iter().collect();
    for attempt in 0..8 {
        let cur = match objects.get(res, ns, name) {
            Ok(c) => Some(c),
            Err(ApiError::NotFound { .. }) if part == Part::Main => None,
            Err(e) => return Err(e),
        };
        let Some(cur) = cur else {
            let mut obj = config.clone();
            obj["metadata"]["name"] = json!(name);
            let mut owners = BTreeMap::new();
            owners.insert((manager.to_string(), "Apply".to_string()), applied.clone());
            write_ownership(&mut obj, &owners, &res.api_version(), None);
            match objects.create(res, ns, obj, dry_run).await {
                Ok(v) => return Ok((v, true)),
                Err(ApiError::AlreadyExists { .. }) if attempt < 7 => continue,
                Err(e) => return Err(e),
            }
        };
        let mut owners = ownership(&cur);
        let me = (manager.to_string(), "Apply".to_string());
        // Conflicts: another manager owns a path this config sets, with a different value.
        let mut conflicts = Vec::new();
        for ((m, op), paths) in &owners {
            if (m, op) == (&me.0, &me.1) {
                continue;
            }
            for p in paths.intersection(&applied) {
                if at(&cur, p) != at(config, p) {
                    conflicts.push((m.clone(), p.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(ApiError::ApplyConflict {
                resource: res.qualified(),
                name: name.to_string(),
                conflicts: conflicts
                    .iter()
                    .map(|(m, p)| (m.clone(), display_path(p)))
                    .collect(),
                api_version: res.api_version(),
            });
        }
        let mut next = cur.clone();
        // Fields this manager applied before and leaves out now are removed, unless another
        // manager owns them too.
        let before = owners.get(&me).cloned().unwrap_or_default();
        for p in before.difference(&applied) {
            let shared = owners
                .iter()
                .any(|(k, paths)| *k != me && paths.contains(p));
            if !shared {
                remove_at(&mut next, p);
            }
        }
        let mut patch = config.clone();
        if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
            m.remove("resourceVersion");
        }
        strategic_merge_patch(&mut next, &patch);
        // Forced fields move to the applier; fields applied with the value another manager
        // already set stay shared.
        for (m, p) in &conflicts {
            for ((owner, _), paths) in owners.iter_mut() {
                if owner == m {
                    paths.remove(p);
                }
            }
        }
        owners.insert(me.clone(), applied.clone());
        write_ownership(&mut next, &owners, &res.api_version(), None);
        next["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        match objects.update(res, ns, name, next, part, dry_run).await {
            Err(ApiError::Conflict { .. }) if attempt < 7 => continue,
            Ok(v) => return Ok((v, false)),
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::modified(&res.qualified(), name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_fields_v1() {
        let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"a": "1"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let mut paths = Vec::new();
        leaf_paths(&cfg, &mut Vec::new(), ("", ""), &mut paths);
        let set: BTreeSet<FieldPath> = paths.into_iter().collect();
        let fv1 = to_fields_v1(&set);
        assert!(fv1["f:spec"]["f:replicas"].is_object(), "{fv1}");
        assert!(
            fv1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"]
                .is_object(),
            "{fv1}"
        );
        let mut back = BTreeSet::new();
        from_fields_v1(&fv1, &mut Vec::new(), &mut back);
        assert_eq!(back, set);
        let p: FieldPath = vec!["f:spec".into(), "f:replicas".into()];
        assert_eq!(at(&cfg, &p), Some(&json!(2)));
        assert_eq!(display_path(&p), ".spec.replicas");
    }
}
